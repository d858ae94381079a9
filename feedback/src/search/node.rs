//! A node of the feedback search (see [`super`]): the races of an observed
//! run still to flip.

use std::collections::HashSet;

use reprise_abi::replay as rp;

use reprise_replayer::observe::{FlipSpec, Observation};
use reprise_replayer::{AttemptResult, Replay, Strategy};

use crate::races::{self, Focus, Race};

/// A node of the feedback search: a schedule that ran (without failing),
/// and its races still to try — one per pair of instructions, the
/// instance nearest the point of interest, none already flipped on the
/// way here.
pub(super) struct Node {
    /// The base schedule (`Feedback` or `FeedbackLazy`).
    pub base: Strategy,
    pub flips: Vec<FlipSpec>,
    pub races: Vec<Race>,
    pub stopped_at: u64,
}

impl Node {
    pub fn new(
        replay: &Replay,
        base: Strategy,
        flips: Vec<FlipSpec>,
        obs: &Observation,
        r: &AttemptResult,
        focus: Focus,
    ) -> Node {
        // Neither a flip already made nor its reversal (which would undo
        // it); the same instructions at other instances may come again (a
        // loop whose every iteration races).
        let path: HashSet<(u64, u32, u64, u32)> = flips
            .iter()
            .flat_map(|f| {
                [
                    (f.held_pc, f.held_n, f.until_pc, f.until_n),
                    (f.until_pc, f.until_n, f.held_pc, f.held_n),
                ]
            })
            .collect();
        let mut pairs = HashSet::new();
        let races: Vec<Race> = races::races(replay, obs, focus)
            .into_iter()
            .filter(|r| {
                let key = (r.first.access.pc, r.first.n, r.second.access.pc, r.second.n);
                !path.contains(&key) && pairs.insert(r.static_pair())
            })
            .collect();
        if let Some(path) = std::env::var_os("REPRISE_DEBUG_ACCESSES") {
            use std::io::Write;
            if let Ok(mut f) =
                std::fs::File::create(format!("{}.{}", path.to_string_lossy(), flips.len()))
            {
                for o in races::occurrences(obs) {
                    let a = o.access;
                    let _ = writeln!(
                        f,
                        "t{} {:#x}#{} {} {:#x} {:#x}->{:#x} turn {} last {}",
                        rp::key_thread(a.key),
                        a.pc,
                        o.n,
                        a.flags,
                        a.addr,
                        a.before,
                        a.after,
                        a.turn,
                        a.last_event
                    );
                }
            }
        }
        if std::env::var_os("REPRISE_DEBUG_RACES").is_some() {
            eprintln!(
                "races after {} flip(s), focus {focus:?}, stopped at {}:",
                flips.len(),
                r.stopped_at
            );
            for x in races.iter().take(12) {
                eprintln!(
                    "  {:#x}#{} t{} {:#x} -> {:#x}#{} t{} (score {}, addr {:#x})",
                    x.first.access.pc,
                    x.first.n,
                    rp::key_thread(x.first.access.key),
                    x.first.access.flags,
                    x.second.access.pc,
                    x.second.n,
                    rp::key_thread(x.second.access.key),
                    x.score,
                    x.second.access.addr
                );
            }
        }
        Node {
            base,
            flips,
            races,
            stopped_at: r.stopped_at,
        }
    }
}
