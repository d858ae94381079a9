//! A node of the feedback search (see [`super`]): the races of an observed
//! run still to flip.

use std::collections::HashSet;

use reprise_abi::replay as rp;

use reprise_replayer::observe::{FlipSpec, Observation};
use reprise_replayer::{AttemptResult, Replay, Schedule};

use crate::races::{self, Focus, Occurrence, Race};

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
    /// Per race of the first `BRANCH` (same index as `races`): other
    /// instances of its write that its read could see instead, tried when
    /// the race's flip happened and the run still did not fail (see
    /// [`alternates`]).
    pub alternates: Vec<Vec<Race>>,
    pub stopped_at: u64,
    /// How that run ended (its one-line summary).
    pub end: String,
}

/// Whether `r` is the race flip `f` reversed, at a later instance: the
/// same two instructions of the same two threads, one way round.
fn recurs(r: &Race, f: &FlipSpec) -> bool {
    !r.delay
        && !r.is_move()
        && r.first.access.key == f.held
        && r.first.access.pc == f.held_pc
        && r.second.access.key == f.until
        && r.second.access.pc == f.until_pc
        && r.first.n > f.held_n
        && r.second.n > f.until_n
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
            .iter()
            .copied()
            .filter(|r| {
                let key = (r.first.access.pc, r.first.n, r.second.access.pc, r.second.n);
                // A split stretch is kept per place too: one code path
                // on two lists (a free list per size class) is two splits.
                let place = if r.span { r.first.access.addr } else { 0 };
                !path.contains(&key) && pairs.insert((r.static_pair(), r.is_move(), r.span, place))
            })
            .partition(|r| {
                parent.is_some_and(|p| {
                    !p.places.contains(&granule(r.first.access.addr))
                        && !p.places.contains(&granule(r.second.access.addr))
                })
            });
        // The race the last flip reversed, come again at a later instance:
        // a path the program decides anew in every iteration of a loop
        // (a pointer or flag read outside the lock, once per job). The
        // flip got the run further, to where the same decision went the
        // other way again: the same flip there is the likeliest next one,
        // ahead of the races the flip exposed.
        let (recurring, known): (Vec<Race>, Vec<Race>) = known
            .into_iter()
            .partition(|r| flips.last().is_some_and(|f| recurs(r, f)));
        races.splice(0..0, recurring);
        let exposed = races.len();
        races.extend(known);
        // Only the races the search can pick (the first BRANCH) need
        // them; each is a scan of every race found.
        let alternates = races
            .iter()
            .take(super::BRANCH)
            .map(|r| alternates(r, &found, focus.thread))
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
                for (w, t) in x.extra.iter().flatten() {
                    eprintln!(
                        "  with {:#x}#{} t{} held until {:#x}#{} t{}:",
                        w.access.pc,
                        w.n,
                        rp::key_thread(w.access.key),
                        t.access.pc,
                        t.n,
                        rp::key_thread(t.access.key)
                    );
                }
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
            alternates,
            stopped_at: r.stopped_at,
            end: r.summary(),
        }
    }
}

/// Other instances of the write each read of a flip could see, tried at
/// most this many.
const ALTERNATES: usize = 4;
/// Other writes racing with the read for them to count as a sequence.
const MIN_SEQUENCE: usize = 3;

/// When a thread writes one place many times while another thread's read
/// of it is unordered with all of those writes (a counter or an offset
/// advanced in a loop, checked by a thread the sketch lets run at any
/// point), the read can see any of them, and the failure often needs one
/// value in the middle (a buffer nearly full, a count at its limit). The
/// flip of `race`, when its read is the failing thread's (`failing`),
/// makes the read see the write nearest the point of interest; these are
/// the same read against other writes of the same instruction that the
/// observed run also raced with it: the one that wrote the largest value,
/// the smallest, then by position in bisection order (the middle one, the
/// quarters, ...).
pub(super) fn alternates(race: &Race, found: &[Race], failing: Option<u32>) -> Vec<Race> {
    use reprise_replayer::accesses::is_write;
    if race.is_move() {
        return Vec::new();
    }
    let (first, second) = (&race.first.access, &race.second.access);
    // The read's side stays; the write's instance varies.
    let read_first = match (is_write(first), is_write(second)) {
        (false, true) => true,
        (true, false) => false,
        _ => return Vec::new(),
    };
    let fixed = |r: &Race| if read_first { r.first } else { r.second };
    // Only the failing thread's reads: its check is the one that failed.
    if failing != Some(fixed(race).access.key) {
        return Vec::new();
    }
    let varying = |r: &Race| if read_first { r.second } else { r.first };
    let mut others: Vec<Race> = found
        .iter()
        .filter(|r| {
            !r.delay
                && !r.is_move()
                && r.static_pair() == race.static_pair()
                && r.first.access.key == first.key
                && r.second.access.key == second.key
                && fixed(r).n == fixed(race).n
                && varying(r).n != varying(race).n
        })
        .copied()
        .collect();
    others.sort_by_key(|r| varying(r).n);
    others.dedup_by_key(|r| varying(r).n);
    // Two or three writes are the nearest instances, not a sequence; and
    // values that come and go (pointers pushed and popped on a list) are
    // not a count or an offset with a value in the middle to find: there
    // the run that got as far is better explored by its own races.
    if others.len() < MIN_SEQUENCE || !advances(race, &others, varying) {
        return Vec::new();
    }
    let mut picked: Vec<Race> = Vec::new();
    // The largest and the smallest value written first: a bound checked
    // too early is crossed at an extreme (a buffer at its fullest, a
    // count at its limit or at zero).
    let value = |r: &Race| varying(r).access.after;
    let extremes = [
        others.iter().max_by_key(|r| value(r)),
        others.iter().min_by_key(|r| value(r)),
    ];
    for &r in extremes.into_iter().flatten() {
        if value(&r) != value(race) && !picked.iter().any(|p| value(p) == value(&r)) {
            picked.push(r);
        }
    }
    // Then by position, in bisection order: 1/2, 1/4, 3/4, 1/8, ...
    let mut den = 2;
    while picked.len() < ALTERNATES && den <= 2 * others.len() {
        for num in (1..den).step_by(2) {
            // num < den: always inside `others`.
            let r = others[others.len() * num / den];
            if picked.len() < ALTERNATES && !picked.iter().any(|p| varying(p).n == varying(&r).n) {
                picked.push(r);
            }
        }
        den *= 2;
    }
    picked
}

/// True if the writes of the sequence (`race`'s and `others`', in the
/// writer's order) mostly move one way: a count or an offset advanced in
/// a loop, perhaps reset now and then (a buffer flushed). At least three
/// steps in four go the main way.
fn advances(race: &Race, others: &[Race], varying: impl Fn(&Race) -> Occurrence) -> bool {
    let mut writes: Vec<(u32, u64)> = others
        .iter()
        .chain(std::iter::once(race))
        .map(|r| (varying(r).n, varying(r).access.after))
        .collect();
    writes.sort_unstable();
    let (mut up, mut down) = (0usize, 0usize);
    for w in writes.windows(2) {
        match w[1].1.cmp(&w[0].1) {
            std::cmp::Ordering::Greater => up += 1,
            std::cmp::Ordering::Less => down += 1,
            std::cmp::Ordering::Equal => {}
        }
    }
    let steps = up + down;
    steps > 0 && 4 * up.max(down) >= 3 * steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use reprise_abi::observe::{Access, ACCESS_READ, ACCESS_WRITE};

    fn occ(key: u32, pc: u64, n: u32, write: bool, value: u64) -> Occurrence {
        let flags = if write { ACCESS_WRITE } else { ACCESS_READ };
        Occurrence {
            access: Access {
                key,
                flags,
                size: 8,
                pc,
                addr: 0x1000,
                after: value,
                ..Access::default()
            },
            n,
            k: n,
            index: n as usize,
        }
    }

    fn race(first: Occurrence, second: Occurrence) -> Race {
        Race {
            first,
            second,
            distance: 0,
            score: 0,
            until_fork: 0,
            delay: false,
            standing: false,
            extra: [None; 3],
            span: false,
        }
    }

    /// Thread 1's read (instance 7) raced with thread 2's writes 1..=10,
    /// which wrote 100, 200, ..., 1000; the flip tried the last one.
    fn sequence() -> (Race, Vec<Race>) {
        let read = occ(1, 0x10, 7, false, 0);
        let all: Vec<Race> = (1..=10)
            .rev()
            .map(|n| race(read, occ(2, 0x20, n, true, 100 * n as u64)))
            .collect();
        (all[0], all)
    }

    /// The flip the node came from, at a later instance of both accesses,
    /// is that flip come again; an earlier instance, other instructions or
    /// other threads are not.
    #[test]
    fn a_race_recurs_at_a_later_instance_of_the_last_flip() {
        let r = race(occ(1, 0x10, 9, false, 0), occ(2, 0x20, 4, true, 1));
        let f = r.flip(false);
        let later = race(occ(1, 0x10, 12, false, 0), occ(2, 0x20, 6, true, 1));
        let earlier = race(occ(1, 0x10, 8, false, 0), occ(2, 0x20, 3, true, 1));
        let other_pc = race(occ(1, 0x18, 12, false, 0), occ(2, 0x20, 6, true, 1));
        let other_thread = race(occ(3, 0x10, 12, false, 0), occ(2, 0x20, 6, true, 1));
        assert!(recurs(&later, &f));
        assert!(!recurs(&r, &f));
        assert!(!recurs(&earlier, &f));
        assert!(!recurs(&other_pc, &f));
        assert!(!recurs(&other_thread, &f));
    }

    #[test]
    fn a_failing_threads_read_tries_the_extremes_then_the_middle() {
        let (tried, all) = sequence();
        let alt = alternates(&tried, &all, Some(1));
        let ns: Vec<u32> = alt.iter().map(|r| r.second.n).collect();
        // 10 (1000) was tried: the largest left is 9, the smallest 1,
        // then the middle of 1..=9 and a quarter.
        assert_eq!(ns, vec![9, 1, 5, 3]);
        assert!(alt
            .iter()
            .all(|r| r.first.n == 7 && r.first.access.key == 1));
    }

    #[test]
    fn no_alternates_when_the_values_come_and_go() {
        // A list head: thread 2 pushed and popped three objects in turn.
        let read = occ(1, 0x10, 7, false, 0);
        let heads = [0x8270, 0x82c0, 0x8270, 0x8310, 0x82c0, 0x8270];
        let all: Vec<Race> = (1..=6u32)
            .rev()
            .map(|n| race(read, occ(2, 0x20, n, true, heads[n as usize - 1])))
            .collect();
        assert!(alternates(&all[0], &all, Some(1)).is_empty());
        // An offset that grows and is reset once still counts.
        let offsets = [10, 20, 30, 0, 10, 20, 30];
        let all: Vec<Race> = (1..=7u32)
            .rev()
            .map(|n| race(read, occ(2, 0x20, n, true, offsets[n as usize - 1])))
            .collect();
        assert!(!alternates(&all[0], &all, Some(1)).is_empty());
    }

    #[test]
    fn no_alternates_for_another_threads_read_or_a_short_sequence() {
        let (tried, all) = sequence();
        assert!(alternates(&tried, &all, Some(2)).is_empty());
        assert!(alternates(&tried, &all, None).is_empty());
        assert!(alternates(&tried, &all[..3], Some(1)).is_empty());
    }
}
