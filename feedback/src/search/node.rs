//! A node of the feedback search (see [`super`]): the races of an observed
//! run still to flip.

use std::collections::HashSet;

use reprise_abi::replay as rp;

use reprise_replayer::observe::{FlipSpec, Observation};
use reprise_replayer::{AttemptResult, Replay, Schedule};

use crate::races::{self, Focus, Race};

/// A node of the feedback search: a schedule that ran (without failing),
/// and its races still to try — one per pair of instructions, the
/// instance nearest the point of interest, none already flipped on the
/// way here. The races its last flip exposed come first.
pub(super) struct Node {
    /// The base schedule the flips apply to (see `Searcher::bases`).
    pub base: Schedule,
    pub flips: Vec<FlipSpec>,
    pub races: Vec<Race>,
    /// How many of `races`, at the front, the last flip exposed: races on
    /// memory where no race was seen in the parent's run. A flip that
    /// hands one object to two threads makes their accesses to it race
    /// for the first time, and the failure is usually one of those next
    /// (PRES: feed back the races an attempt exposed).
    pub exposed: usize,
    /// The 8-byte granules that some race of this run touched.
    pub places: HashSet<u64>,
    pub stopped_at: u64,
}

impl Node {
    pub fn new(
        replay: &Replay,
        base: Schedule,
        flips: Vec<FlipSpec>,
        obs: &Observation,
        r: &AttemptResult,
        focus: Focus,
        parent: Option<&Node>,
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
        let found = races::races(replay, obs, focus);
        let granule = |a: u64| a & !7;
        let places: HashSet<u64> = found
            .iter()
            .flat_map(|r| [granule(r.first.access.addr), granule(r.second.access.addr)])
            .collect();
        let mut pairs = HashSet::new();
        let (mut races, known): (Vec<Race>, Vec<Race>) = found
            .into_iter()
            .filter(|r| {
                let key = (r.first.access.pc, r.first.n, r.second.access.pc, r.second.n);
                !path.contains(&key) && pairs.insert(r.static_pair())
            })
            .partition(|r| {
                parent.is_some_and(|p| {
                    !p.places.contains(&granule(r.first.access.addr))
                        && !p.places.contains(&granule(r.second.access.addr))
                })
            });
        let exposed = races.len();
        races.extend(known);
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
            exposed,
            places,
            stopped_at: r.stopped_at,
        }
    }
}
