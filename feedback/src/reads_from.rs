//! Reads-from between runs: which write each read saw, the reads whose
//! writer differs between a failing and a passing run (and whether that
//! writer races with the read, the sketch not ordering it first), and the
//! failing thread's last reads of other threads' writes.

use std::collections::HashMap;

use reprise_replayer::accesses::{is_write, occurrences, overlap, Occurrence};
use reprise_replayer::observe::{FlipSpec, Observation};
use reprise_replayer::order::{RunOrder, SketchOrder};
use reprise_replayer::Replay;

use crate::races::{order_flip, LATER_READS, LATER_WRITE_SCAN};

/// A read whose writer differs between two runs of the same program.
#[derive(Clone, Copy, Debug)]
pub struct ReadsFromDiff {
    pub read: Occurrence,
    /// The write it saw in the failing run (None: the initial value).
    pub writer: Option<Occurrence>,
    /// The same read in the passing run, and the write it saw there.
    pub passing_read: Option<Occurrence>,
    pub passing_writer: Option<Occurrence>,
}

/// For each read of `failing`, the last write to its granule before it.
fn writers(obs: &Observation) -> Vec<(Occurrence, Option<Occurrence>)> {
    let occ = occurrences(obs);
    let mut last: HashMap<u64, usize> = HashMap::new();
    let mut out = Vec::new();
    for (j, o) in occ.iter().enumerate() {
        let g = o.access.addr & !7;
        if is_write(&o.access) {
            last.insert(g, j);
        } else {
            out.push((*o, last.get(&g).map(|&w| occ[w])));
        }
    }
    out
}

/// The reads that saw another thread's write in the failing run than in
/// the passing one (or another value), latest first: what made the
/// failing run fail, when no single flip did.
pub fn reads_from_diff(failing: &Observation, passing: &Observation) -> Vec<ReadsFromDiff> {
    reads_from_diff_by(failing, passing, false)
}

/// [`reads_from_diff`]; with `same_writer`, also the reads that saw
/// another write of the same thread with another value (a thread that
/// overwrote a variable in a loop before the reader got to it).
fn reads_from_diff_by(
    failing: &Observation,
    passing: &Observation,
    same_writer: bool,
) -> Vec<ReadsFromDiff> {
    let id = |o: &Occurrence| (o.access.key, o.access.pc, o.n);
    let wid = |w: &Option<Occurrence>| w.map(|w| id(&w));
    let pass: HashMap<(u32, u64, u32), (Occurrence, Option<Occurrence>)> = writers(passing)
        .into_iter()
        .map(|(r, w)| (id(&r), (r, w)))
        .collect();
    let mut out: Vec<ReadsFromDiff> = writers(failing)
        .into_iter()
        .filter_map(|(r, w)| {
            let (pr, pw) = match pass.get(&id(&r)) {
                Some(&(pr, pw)) => (Some(pr), pw),
                None => (None, None),
            };
            // Another writer thread, and another value read.
            let other_thread = w.map(|w| w.access.key) != pw.map(|w| w.access.key);
            let other_value = pr.is_none_or(|pr| pr.access.after != r.access.after);
            let cross = w.is_some_and(|w| w.access.key != r.access.key)
                || pw.is_some_and(|w| w.access.key != r.access.key);
            let writers_differ = other_thread || (same_writer && w.is_some() && pw.is_some());
            (wid(&w) != wid(&pw) && writers_differ && other_value && cross).then_some(
                ReadsFromDiff {
                    read: r,
                    writer: w,
                    passing_read: pr,
                    passing_writer: pw,
                },
            )
        })
        .collect();
    out.reverse();
    out
}

/// A reads-from difference whose read races with the write it saw in one
/// of the runs: the sketch does not order that write before the read.
#[derive(Clone, Copy, Debug)]
pub struct RacyDiff {
    pub diff: ReadsFromDiff,
    /// The racing write: the failing run's writer if it races with the
    /// read, else the passing run's.
    pub writer: Occurrence,
    /// `writer` is the failing run's.
    pub in_failing: bool,
}

/// The write of `d` that races with its read (the failing run's first),
/// if any: another thread's write to the same bytes that the sketch does
/// not order before the read in that run.
fn racing_writer(d: &ReadsFromDiff, failing: &RunOrder, passing: &RunOrder) -> Option<RacyDiff> {
    let races = |w: &Occurrence, r: &Occurrence, order: &RunOrder| {
        w.access.key != r.access.key && overlap(&w.access, &r.access) && order.race(w, r)
    };
    let racy = |writer, in_failing| {
        Some(RacyDiff {
            diff: *d,
            writer,
            in_failing,
        })
    };
    match (d.writer, d.passing_writer, d.passing_read) {
        (Some(w), _, _) if races(&w, &d.read, failing) => racy(w, true),
        (_, Some(pw), Some(pr)) if races(&pw, &pr, passing) => racy(pw, false),
        _ => None,
    }
}

/// The first read of the failing run that saw another write than in the
/// passing run, made in both runs if any such, with a write it races
/// with: differences the sketch's order explains are no race.
pub fn first_racy_diff(
    replay: &Replay,
    failing: &Observation,
    passing: &Observation,
) -> Option<RacyDiff> {
    let order = SketchOrder::new(replay);
    let (fo, po) = (order.run(failing), order.run(passing));
    // Another writer thread first; else another write of the same one.
    [false, true].into_iter().find_map(|same_writer| {
        let racy: Vec<RacyDiff> = reads_from_diff_by(failing, passing, same_writer)
            .iter()
            .rev()
            .filter_map(|d| racing_writer(d, &fo, &po))
            .collect();
        racy.iter()
            .find(|r| r.diff.passing_read.is_some())
            .or_else(|| racy.first())
            .copied()
    })
}

/// The flip that keeps the failing run's side of a reads-from difference
/// (a base schedule that fails only by timing): the read before the write
/// it saw in the passing run, or after the one it saw in the failing run.
pub fn pinning_flip(d: &RacyDiff) -> FlipSpec {
    let (r, w) = (&d.diff.read, &d.writer);
    if d.in_failing {
        order_flip(w, r)
    } else {
        order_flip(r, w)
    }
}

/// What [`last_race`] found.
#[derive(Clone, Copy, Debug)]
pub enum LastRace {
    /// A race, its two accesses in the order the run made them.
    Race(Occurrence, Occurrence),
    /// No race; the failing thread's last read of another thread's write,
    /// which the sketch orders before the read.
    Ordered { write: Occurrence, read: Occurrence },
    /// No race, and no read of another thread's write.
    None,
}

/// The last race on what the failing thread (any thread, for a deadlock
/// or a hang) read, in the order the run made them: its last read of
/// another thread's write that the sketch does not order before it; or,
/// where the sketch does order that write before the read, a race of the
/// write itself with another thread's earlier write there of another
/// value (the value read was decided by that race); else its last read
/// that another thread's later write races with (the write came too
/// late). Else no race: the sketch's order decides every value it read,
/// and the failure needs none.
pub fn last_race(replay: &Replay, obs: &Observation, thread: Option<u32>) -> LastRace {
    let order = SketchOrder::new(replay);
    let run = order.run(obs);
    let occ = occurrences(obs);
    let mut ordered = None;
    for d in last_writers(obs, thread) {
        let (r, Some(w)) = (d.read, d.writer) else {
            continue;
        };
        if !overlap(&w.access, &r.access) {
            continue;
        }
        if run.race(&w, &r) {
            return LastRace::Race(w, r);
        }
        // The one nearest the failure: the latest read.
        if ordered.is_none_or(|(_, o): (Occurrence, Occurrence)| o.index < r.index) {
            ordered = Some((w, r));
        }
        let at = occ.partition_point(|o| o.index < w.index);
        let other = occ[at.saturating_sub(LATER_WRITE_SCAN)..at]
            .iter()
            .rev()
            .find(|o| {
                o.access.key != w.access.key
                    && is_write(&o.access)
                    && overlap(&o.access, &w.access)
                    && o.access.after != w.access.after
                    && run.race(o, &w)
            });
        if let Some(o) = other {
            return LastRace::Race(*o, w);
        }
    }
    // A read that saw an older value because another thread's write came
    // after it (a flag not set yet), latest read first.
    let reads = occ
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, o)| !is_write(&o.access) && thread.is_none_or(|t| o.access.key == t))
        .take(LATER_READS);
    for (i, r) in reads {
        let later = occ[i + 1..].iter().take(LATER_WRITE_SCAN).find(|o| {
            o.access.key != r.access.key
                && is_write(&o.access)
                && overlap(&o.access, &r.access)
                && o.access.after != r.access.after
                && run.race(r, o)
        });
        if let Some(w) = later {
            return LastRace::Race(*r, *w);
        }
    }
    match ordered {
        Some((write, read)) => LastRace::Ordered { write, read },
        None => LastRace::None,
    }
}

/// The failing thread's (any thread's, for a deadlock or a hang) last
/// reads of memory another thread wrote last, with that write, latest
/// first: the data the failure was computed from.
pub fn last_writers(obs: &Observation, thread: Option<u32>) -> Vec<ReadsFromDiff> {
    let mut out: Vec<ReadsFromDiff> = writers(obs)
        .into_iter()
        .filter(|(r, w)| {
            thread.is_none_or(|t| r.access.key == t)
                && w.is_some_and(|w| w.access.key != r.access.key)
        })
        .map(|(read, writer)| ReadsFromDiff {
            read,
            writer,
            passing_read: None,
            passing_writer: None,
        })
        .collect();
    out.reverse();
    // Values written once (configuration set up before the threads ran)
    // after the ones the threads keep changing.
    let writes: HashMap<(u32, u64), u32> = occurrences(obs)
        .iter()
        .filter(|o| is_write(&o.access))
        .fold(HashMap::new(), |mut m, o| {
            *m.entry((o.access.key, o.access.pc)).or_insert(0) += 1;
            m
        });
    out.sort_by_key(|d| {
        d.writer.map_or(0, |w| {
            writes
                .get(&(w.access.key, w.access.pc))
                .copied()
                .unwrap_or(0)
        }) <= 1
    });
    out
}
