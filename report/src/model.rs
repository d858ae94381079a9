//! What the page's script draws, as compact JSON: the lanes, the events
//! (six numbers each), the observed accesses of the root cause placed
//! between the events, the flips between them, and the failure.

use std::collections::HashMap;

use reprise_abi::observe::{Access, ACCESS_WRITE};
use reprise_abi::{replay as rp, EventKind};
use reprise_feedback::races;
use reprise_feedback::rootcause::{value, AccessReport};
use reprise_replayer::observe::Observation;
use reprise_replayer::{key_name, Replay};
use reprise_schema::listing::{format_event, syscall_name};
use reprise_schema::{EventRecord, OutcomeKind, TraceReader};
use serde::Serialize;

use crate::{Analysis, ReportError};

/// Numbers per event in [`Picture::ev`]: seq, lane, name, object,
/// result, detail (name into `names`, object and detail into `strings`).
pub const EVENT_FIELDS: usize = 6;

/// Event categories (the colour of a mark), indexed by `cats`.
const LOCK: u8 = 0;
const UNLOCK: u8 = 1;
const SYNC: u8 = 2;
const THREAD: u8 = 3;
const PROCESS: u8 = 4;
const SYSCALL: u8 = 5;
const SIGNAL: u8 = 6;
const EXIT: u8 = 7;

#[derive(Debug, Default, Serialize)]
pub struct Picture {
    /// `p0 t1`, in order of first event (processes grouped).
    pub lanes: Vec<String>,
    /// The function a lane's racing access is in (its thread's role), or
    /// empty.
    pub lane_fns: Vec<String>,
    /// Display names of the event kinds (syscalls by name), and their
    /// categories.
    pub names: Vec<String>,
    pub cats: Vec<u8>,
    pub strings: Vec<String>,
    /// [`EVENT_FIELDS`] numbers per event, in the recorded global order.
    pub ev: Vec<i64>,
    /// Observed accesses of the root cause, placed between events.
    pub acc: Vec<AccessMark>,
    pub flips: Vec<FlipMark>,
    pub failure: Option<FailureMark>,
}

#[derive(Debug, Serialize)]
pub struct AccessMark {
    pub lane: usize,
    /// Position along the events (event `i` is at `i`; an access between
    /// events `i - 1` and `i` is strictly between).
    pub x: f64,
    pub write: bool,
    /// `R1` for race 1's accesses, empty for a flip's access that no race
    /// names.
    pub label: String,
    /// The race it belongs to (0-based), if any.
    pub race: Option<usize>,
    pub text: String,
}

/// Flip `k`: `held` (index into `acc`) waited for `until`.
#[derive(Debug, Serialize)]
pub struct FlipMark {
    pub held: usize,
    pub until: usize,
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct FailureMark {
    /// The lanes the failure is drawn in (the failing thread; a deadlock's
    /// waiting threads).
    pub lanes: Vec<usize>,
    pub short: String,
    pub summary: String,
    /// The recorded outcome is a failure (else the run ended as it
    /// should, and the mark is neutral).
    pub failed: bool,
}

/// Interns strings into a table.
#[derive(Default)]
struct Table {
    index: HashMap<String, usize>,
    items: Vec<String>,
}

impl Table {
    fn get(&mut self, s: &str) -> usize {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        self.items.push(s.to_string());
        self.index.insert(s.to_string(), self.items.len() - 1);
        self.items.len() - 1
    }
}

fn category(k: EventKind) -> u8 {
    use EventKind as K;
    match k {
        K::MutexLock
        | K::MutexTrylock
        | K::MutexTimedlock
        | K::RwRdlock
        | K::RwWrlock
        | K::RwTryrdlock
        | K::RwTrywrlock
        | K::SpinLock
        | K::SpinTrylock
        | K::SemWait
        | K::SemTrywait => LOCK,
        K::MutexUnlock | K::RwUnlock | K::SpinUnlock | K::SemPost => UNLOCK,
        K::CondWait | K::CondWake | K::CondSignal | K::CondBroadcast | K::BarrierWait | K::Once => {
            SYNC
        }
        K::ThreadCreate | K::ThreadStart | K::ThreadExit | K::ThreadJoin => THREAD,
        K::Fork | K::ProcessStart | K::Exec => PROCESS,
        K::Syscall | K::DataMore | K::FuncEntry | K::Block => SYSCALL,
        K::Signal => SIGNAL,
        K::ProcessExit => EXIT,
    }
}

fn lane_name(process: u32, thread: u32) -> String {
    format!("p{process} t{thread}")
}

impl Picture {
    pub fn build(
        reader: &TraceReader,
        replay: Option<&Replay>,
        analysis: &Analysis,
    ) -> Result<Picture, ReportError> {
        let mut p = Picture::default();
        let mut lanes: HashMap<(u16, u32), usize> = HashMap::new();
        let (mut names, mut strings) = (Table::default(), Table::default());
        let mut seqs: Vec<u64> = Vec::new();
        for ev in reader.events() {
            let ev = ev?;
            // Function and block entries (func, bb sketches) are too many
            // to draw: the lanes show the synchronisation and syscalls.
            if matches!(
                ev.kind,
                EventKind::DataMore | EventKind::FuncEntry | EventKind::Block
            ) {
                continue;
            }
            let next = lanes.len();
            let lane = *lanes.entry((ev.process, ev.thread)).or_insert(next);
            let name = if ev.kind == EventKind::Syscall {
                syscall_name(ev.object)
            } else {
                ev.kind.name().to_string()
            };
            let n = names.get(&name);
            if n == p.cats.len() {
                p.cats.push(category(ev.kind));
            }
            let object = match ev.kind {
                EventKind::Syscall => String::new(),
                EventKind::Signal => reprise_schema::listing::signal_name(ev.object as i32),
                _ if ev.object != 0 => format!("{:#x}", ev.object),
                _ => String::new(),
            };
            let obj = strings.get(&object) as i64;
            let detail = strings.get(&detail(&ev)) as i64;
            p.ev.extend([ev.seq as i64, lane as i64, n as i64, obj, ev.result, detail]);
            seqs.push(ev.seq);
        }
        p.lanes = lane_order(&lanes);
        // Renumber the lanes in display order.
        let mut rank = vec![0usize; lanes.len()];
        let by_name: HashMap<String, usize> = p
            .lanes
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i))
            .collect();
        for (&(proc_, thread), &l) in &lanes {
            rank[l] = by_name[lane_name(proc_ as u32, thread).as_str()];
        }
        for e in p.ev.chunks_mut(EVENT_FIELDS) {
            e[1] = rank[e[1] as usize] as i64;
        }
        p.names = names.items;
        p.strings = strings.items;
        if let (Some(obs), Some(replay)) = (&analysis.observation, replay) {
            let lane_of = |key: u32| {
                by_name
                    .get(lane_name(rp::key_process(key), rp::key_thread(key)).as_str())
                    .copied()
            };
            let placed = Placer {
                replay,
                obs,
                seqs: &seqs,
            };
            p.place_accesses(&placed, analysis, &lane_of);
        }
        p.failure = failure(reader, &by_name);
        Ok(p)
    }

    /// The root cause's accesses and the schedule's flips, placed.
    fn place_accesses(
        &mut self,
        placer: &Placer,
        analysis: &Analysis,
        lane_of: &dyn Fn(u32) -> Option<usize>,
    ) {
        let obs = placer.obs;
        // Log index -> (race, text) of every access to draw.
        let mut wanted: Vec<(usize, Option<usize>, &str)> = Vec::new();
        if let Some(Ok(report)) = &analysis.report {
            for (k, race) in report.races.iter().enumerate() {
                for a in [&race.first, &race.second] {
                    if let Some(j) = find_reported(obs, a) {
                        wanted.push((j, Some(k), &a.function));
                    }
                }
            }
            if let Some(o) = &report.ordered {
                for a in [&o.write, &o.read] {
                    if let Some(j) = find_reported(obs, a) {
                        wanted.push((j, None, &a.function));
                    }
                }
            }
        }
        let mut flips = Vec::new();
        for (k, f) in analysis
            .schedule
            .iter()
            .flat_map(|s| s.flips.iter())
            .enumerate()
        {
            let Some(held) = races::find(obs, f.held, f.held_pc, f.held_n) else {
                continue;
            };
            let until = if f.until_addr != 0 {
                last_write_before(obs, f.held, f.until_addr, held.index)
            } else {
                races::find(obs, f.until, f.until_pc, f.until_n).map(|o| o.index)
            };
            let Some(until) = until else { continue };
            wanted.push((held.index, None, ""));
            wanted.push((until, None, ""));
            flips.push((k, held.index, until, f.defer, f.until_addr != 0));
        }
        let xs = placer.positions(wanted.iter().map(|w| w.0));
        let mut index: HashMap<usize, usize> = HashMap::new();
        let report = analysis.report.as_ref().and_then(|r| r.as_ref().ok());
        self.lane_fns = vec![String::new(); self.lanes.len()];
        for &(j, race, function) in &wanted {
            let a = &obs.accesses[j];
            let (Some(lane), Some(&x)) = (lane_of(a.key), xs.get(&j)) else {
                continue;
            };
            if self.lane_fns[lane].is_empty() {
                self.lane_fns[lane] = function.to_string();
            }
            if let Some(&m) = index.get(&j) {
                // Already drawn (a flip's access that a race names too).
                if race.is_some() && self.acc[m].race.is_none() {
                    self.acc[m].race = race;
                    self.acc[m].label = format!("R{}", race.unwrap_or(0) + 1);
                }
                continue;
            }
            let variable = race
                .and_then(|k| report.map(|r| r.races[k].variable.clone()))
                .or_else(|| report.and_then(|r| r.ordered.as_ref().map(|o| o.variable.clone())))
                .unwrap_or_default();
            index.insert(j, self.acc.len());
            self.acc.push(AccessMark {
                lane,
                x,
                write: a.flags & ACCESS_WRITE != 0,
                label: race.map(|k| format!("R{}", k + 1)).unwrap_or_default(),
                race,
                text: access_text(a, &variable),
            });
        }
        for (k, held, until, defer, delay) in flips {
            if let (Some(&h), Some(&u)) = (index.get(&held), index.get(&until)) {
                let how = if delay {
                    "a delayed read: held until another thread wrote there"
                } else if defer {
                    "held until the other thread's stretch ended"
                } else {
                    "held until the other access was made"
                };
                self.flips.push(FlipMark {
                    held: h,
                    until: u,
                    text: format!("flip {}: {how}", k + 1),
                });
            }
        }
    }
}

/// The event's line as `reprise dump` prints it, without `#seq pN tN`.
fn detail(ev: &EventRecord) -> String {
    let s = format_event(ev);
    let prefix = format!("#{} p{} t{} ", ev.seq, ev.process, ev.thread);
    s.strip_prefix(&prefix).map(str::to_string).unwrap_or(s)
}

/// Lanes by process, then thread number.
fn lane_order(lanes: &HashMap<(u16, u32), usize>) -> Vec<String> {
    let mut keys: Vec<(u16, u32)> = lanes.keys().copied().collect();
    keys.sort_unstable();
    keys.into_iter()
        .map(|(p, t)| lane_name(p as u32, t))
        .collect()
}

/// The access of the log that the report describes (same thread,
/// instruction and address, and the same values in the failing run); the
/// last one if several.
fn find_reported(obs: &Observation, a: &AccessReport) -> Option<usize> {
    obs.accesses.iter().rposition(|x| {
        x.pc == a.pc
            && (a.address == 0 || x.addr == a.address)
            && key_name(x.key) == a.thread
            && !matches!(a.failing, Some(v) if v.before != x.before || v.after != x.after)
    })
}

/// Another thread's last write to the 8 bytes at `addr` before log entry
/// `before` (the write a delayed read waited for).
fn last_write_before(obs: &Observation, held: u32, addr: u64, before: usize) -> Option<usize> {
    obs.accesses[..before].iter().rposition(|o| {
        o.key != held
            && o.flags & ACCESS_WRITE != 0
            && o.addr <= addr
            && addr < o.addr + o.size.max(1) as u64
    })
}

fn access_text(a: &Access, variable: &str) -> String {
    let thread = key_name(a.key);
    let what = if a.flags & ACCESS_WRITE != 0 {
        format!("writes {} (was {})", value(a.after), value(a.before))
    } else {
        format!("reads {}", value(a.after))
    };
    let on = if variable.is_empty() {
        format!("{:#x}", a.addr)
    } else {
        variable.to_string()
    };
    format!("{thread} {what} on {on} at pc {:#x}", a.pc)
}

/// Where observed accesses go along the events.
struct Placer<'a> {
    replay: &'a Replay,
    obs: &'a Observation,
    /// Seq of each drawn event, in order.
    seqs: &'a [u64],
}

impl Placer<'_> {
    /// The drawn event before which each access (log index) came: the
    /// next event expected when it was made. Accesses in the same gap are
    /// spread across it in the order they were made.
    fn positions(&self, wanted: impl Iterator<Item = usize>) -> HashMap<usize, f64> {
        let positions = self.replay.positions();
        let end = self.replay.end_position();
        let mut gaps: HashMap<usize, Vec<usize>> = HashMap::new();
        for j in wanted {
            let turn = self.obs.accesses[j].turn;
            let next = if turn >= end {
                self.seqs.len()
            } else {
                let i = positions.partition_point(|&p| p < turn);
                let seq = self.replay.events().get(i).map_or(u64::MAX, |e| e.seq);
                self.seqs.partition_point(|&s| s < seq)
            };
            let g = gaps.entry(next).or_default();
            if !g.contains(&j) {
                g.push(j);
            }
        }
        let mut out = HashMap::new();
        for (next, mut js) in gaps {
            js.sort_unstable();
            let m = js.len() as f64;
            for (k, j) in js.into_iter().enumerate() {
                out.insert(j, next as f64 - 1.0 + (k as f64 + 1.0) / (m + 1.0));
            }
        }
        out
    }
}

/// The recorded outcome, drawn at the end of the failing lanes.
fn failure(reader: &TraceReader, lanes: &HashMap<String, usize>) -> Option<FailureMark> {
    let o = reader.outcome()?;
    let lane = |p: u16, t: u32| lanes.get(lane_name(p as u32, t).as_str()).copied();
    let mut marked: Vec<usize> = match o.kind {
        OutcomeKind::Deadlock | OutcomeKind::Hang => o
            .threads
            .iter()
            .filter(|t| t.waiting_on != 0 || o.kind == OutcomeKind::Hang)
            .filter_map(|t| lane(t.process, t.thread))
            .collect(),
        _ => lane(o.process, o.thread).into_iter().collect(),
    };
    marked.sort_unstable();
    marked.dedup();
    let short = match o.kind {
        OutcomeKind::Signaled => reprise_schema::listing::signal_name(o.signal),
        OutcomeKind::Exited => format!("exit {}", o.exit_code),
        k => k.as_str().to_string(),
    };
    Some(FailureMark {
        lanes: marked,
        short,
        summary: reprise_schema::listing::outcome_summary(o),
        failed: reprise_replayer::is_failure(o),
    })
}
