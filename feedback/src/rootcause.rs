//! The root-cause report: for each race whose flip the failure needs,
//! both accesses — thread, instruction, function, source line, variable —
//! and the values they read and wrote in the failing and in the passing
//! order.

use std::fmt::Write as _;
use std::path::Path;

use reprise_abi::observe::ACCESS_WRITE;
use reprise_tracee::access_points::Disassembler;
use reprise_tracee::variables::Variables;
use serde::Serialize;

use reprise_replayer::observe::Observation;
use reprise_replayer::{key_name, Replay, ReplayError};

use crate::races;
use crate::search::RootCause;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `flips`: the failure needs these races flipped (each race's
    /// `second` access first). `reads-from`: a base schedule failed where
    /// another passed; each race is a read (`second`) that saw another
    /// write (`first`) than in the passing run. `last-writer`: no passing
    /// run was found; the failing thread's last read of another thread's
    /// write that the sketch does not order before the read (or a race of
    /// that write with another thread's write). `last-race`: a hang with
    /// no passing run found; the last race before it, in the order it
    /// happened. `no-race`: no passing run, and every value the failing
    /// thread read from another thread was written before the read in the
    /// sketch's order: the failure needs no race (`races` is empty).
    pub how: &'static str,
    pub races: Vec<RaceReport>,
    /// `no-race`: the failing thread's last read of another thread's
    /// write, and the recorded events that order the two (no race).
    pub ordered: Option<OrderedReport>,
}

/// A write and a read of another thread that the sketch orders: `after`
/// (the writer's first event after the write) comes, in the recorded
/// order every attempt follows, no later than `before` (the reader's last
/// event before the read).
#[derive(Clone, Debug, Serialize)]
pub struct OrderedReport {
    pub variable: String,
    pub write: AccessReport,
    pub read: AccessReport,
    /// `thread 1, event 5: thread_exit(0x0)`.
    pub after: String,
    pub before: String,
}

/// One race: `first` came first in the passing run; the failing run needs
/// `second` first.
#[derive(Clone, Debug, Serialize)]
pub struct RaceReport {
    pub variable: String,
    pub first: AccessReport,
    pub second: AccessReport,
}

#[derive(Clone, Debug, Serialize)]
pub struct AccessReport {
    pub thread: String,
    pub write: bool,
    /// ELF address of the instruction.
    pub pc: u64,
    pub instruction: String,
    pub function: String,
    pub file: String,
    pub line: u32,
    pub address: u64,
    /// Value before and after the access, in the failing and the passing
    /// run (None: that run did not make this access).
    pub failing: Option<Values>,
    pub passing: Option<Values>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Values {
    pub before: u64,
    pub after: u64,
}

/// Where an instruction is in the source.
struct Source {
    loader: Option<addr2line::Loader>,
}

impl Source {
    fn open(path: &Path) -> Source {
        Source {
            loader: addr2line::Loader::new(path).ok(),
        }
    }

    fn locate(&self, pc: u64) -> (String, String, u32) {
        let Some(l) = &self.loader else {
            return (String::new(), String::new(), 0);
        };
        let mut function = String::new();
        if let Ok(mut frames) = l.find_frames(pc) {
            // The innermost frame: the function the instruction is in
            // (inlined functions included).
            if let Ok(Some(f)) = frames.next() {
                if let Some(name) = f.function.as_ref().and_then(|n| n.demangle().ok()) {
                    function = name.into_owned();
                }
            }
        }
        if function.is_empty() {
            function = l.find_symbol(pc).unwrap_or_default().to_string();
        }
        let (file, line) = match l.find_location(pc) {
            Ok(Some(loc)) => (
                loc.file
                    .map(|f| {
                        Path::new(f)
                            .file_name()
                            .map_or(f.to_string(), |n| n.to_string_lossy().into_owned())
                    })
                    .unwrap_or_default(),
                loc.line.unwrap_or(0),
            ),
            _ => (String::new(), 0),
        };
        (function, file, line)
    }
}

/// What the report needs of the program: instructions, source lines,
/// variables.
struct Explainer {
    dis: Disassembler,
    vars: Option<Variables>,
    source: Source,
    /// The executable's load bias in the runs.
    bias: u64,
}

impl Explainer {
    /// Thread `key`'s `n`-th access at `pc`, with what it read or wrote in
    /// the failing run and in the passing one.
    fn access(
        &self,
        failing: &Observation,
        passing: Option<&Observation>,
        (key, pc, n): (u32, u64, u32),
    ) -> AccessReport {
        let values = |obs: &Observation| {
            races::find(obs, key, pc, n).map(|o| Values {
                before: o.access.before,
                after: o.access.after,
            })
        };
        let seen = races::find(failing, key, pc, n)
            .or_else(|| passing.and_then(|p| races::find(p, key, pc, n)))
            .map(|o| o.access);
        let (function, file, line) = self.source.locate(pc);
        AccessReport {
            thread: key_name(key),
            write: seen.is_some_and(|a| a.flags & ACCESS_WRITE != 0),
            pc,
            instruction: self.dis.text_at(pc).unwrap_or_default(),
            function,
            file,
            line,
            address: seen.map_or(0, |a| a.addr),
            failing: values(failing),
            passing: passing.and_then(values),
        }
    }

    /// A race between two accesses, named after the variable they touch.
    fn race(&self, first: AccessReport, second: AccessReport) -> RaceReport {
        let addr = if first.address != 0 {
            first.address
        } else {
            second.address
        };
        let variable = self
            .vars
            .as_ref()
            .and_then(|v| v.describe(addr.wrapping_sub(self.bias)))
            .unwrap_or_else(|| {
                // Reached through one thread's stack pointer: a local of
                // that thread that the other reaches by pointer.
                match [&first, &second]
                    .iter()
                    .find(|a| a.instruction.contains("[rsp"))
                {
                    Some(owner) => format!("{addr:#x} (on the stack of {})", owner.thread),
                    None => format!("{addr:#x} (heap)"),
                }
            });
        RaceReport {
            variable,
            first,
            second,
        }
    }
}

type AccessId = (u32, u64, u32);

fn id(o: &races::Occurrence) -> AccessId {
    (o.access.key, o.access.pc, o.n)
}

/// Builds the report of a root cause. Two accesses that the sketch's
/// happens-before orders (thread create, join, fork, a lock, or any two
/// events in their recorded order, which every attempt follows) are
/// never reported as a race.
pub fn explain(replay: &Replay, rc: &RootCause) -> Result<Report, ReplayError> {
    let program = &replay.header.program_path;
    let x = Explainer {
        dis: Disassembler::open(program).map_err(|e| ReplayError::Decode(e.to_string()))?,
        vars: Variables::load(program).ok(),
        source: Source::open(program),
        bias: rc.failing.bias,
    };
    let order = races::SketchOrder::new(replay);
    if !rc.flips.is_empty() {
        let r = x.with_flips(rc, &order);
        // Every flip the failure needed may be between accesses the sketch
        // orders (it held a thread whose access then raced with a third):
        // then the reads that changed say more than the flips.
        if !r.races.is_empty() {
            return Ok(r);
        }
    }
    Ok(x.without_flips(replay, rc, &order))
}

impl Explainer {
    /// No flip: the first read that saw another thread's write than in the
    /// passing run; without one, the last race on what the failing thread
    /// read (before a hang: the last race); without any race, none.
    fn without_flips(&self, replay: &Replay, rc: &RootCause, order: &races::SketchOrder) -> Report {
        let no_race = |ordered| Report {
            how: "no-race",
            races: Vec::new(),
            ordered,
        };
        let pair = |passing: Option<&Observation>, a: AccessId, b: AccessId| {
            self.race(
                self.access(&rc.failing, passing, a),
                self.access(&rc.failing, passing, b),
            )
        };
        if let Some((p, d)) = rc
            .passing
            .first()
            .and_then(|p| Some((p, races::first_racy_diff(replay, &rc.failing, p)?)))
        {
            return Report {
                how: "reads-from",
                races: vec![pair(Some(p), id(&d.writer), id(&d.diff.read))],
                ordered: None,
            };
        }
        if rc.hang {
            // A hang: the last race before it (a wake-up written after the
            // read that needed it).
            let end = replay.end_position();
            let focus = races::Focus {
                pos: end,
                thread: None,
            };
            let run = order.run(&rc.failing);
            return match races::races(replay, &rc.failing, focus)
                .into_iter()
                .find(|r| !r.delay && run.race(&r.first, &r.second))
            {
                Some(r) => Report {
                    how: "last-race",
                    races: vec![pair(None, id(&r.first), id(&r.second))],
                    ordered: None,
                },
                None => no_race(None),
            };
        }
        match races::last_race(replay, &rc.failing, rc.failing_thread) {
            races::LastRace::Race(a, b) => Report {
                how: "last-writer",
                races: vec![pair(None, id(&a), id(&b))],
                ordered: None,
            },
            races::LastRace::Ordered { write, read } => {
                no_race(self.ordered(replay, order, &rc.failing, &write, &read))
            }
            races::LastRace::None => no_race(None),
        }
    }

    /// A write and a read the sketch orders, with the events that do.
    fn ordered(
        &self,
        replay: &Replay,
        order: &races::SketchOrder,
        obs: &Observation,
        write: &races::Occurrence,
        read: &races::Occurrence,
    ) -> Option<OrderedReport> {
        let (after, before) = order.ordering(&write.access, &read.access)?;
        let r = self.race(
            self.access(obs, None, id(write)),
            self.access(obs, None, id(read)),
        );
        Some(OrderedReport {
            variable: r.variable,
            write: r.first,
            read: r.second,
            after: replay.describe(after),
            before: replay.describe(before),
        })
    }

    /// Each flip the failure needs: the held access and the one it waited
    /// for.
    fn with_flips(&self, rc: &RootCause, order: &races::SketchOrder) -> Report {
        let run = order.run(&rc.failing);
        let occ = races::occurrences(&rc.failing);
        let mut races = Vec::new();
        for (k, f) in rc.flips.iter().enumerate() {
            let passing = rc.passing.get(k);
            let held = (f.held, f.held_pc, f.held_n);
            // The held access never came (the thread was still held when
            // the run failed): the flip only kept that thread from running,
            // and what the others did meanwhile is the cause, not this pair.
            let Some(h) = occ.iter().find(|o| id(o) == held) else {
                continue;
            };
            // A delayed read: the other access is the write it waited for,
            // the last other thread's write there before it in the failing
            // run that the sketch does not order before it.
            let until = if f.until_addr != 0 {
                occ[..occ.partition_point(|o| o.index < h.index)]
                    .iter()
                    .rev()
                    .find(|o| {
                        o.access.key != f.held
                            && o.access.flags & ACCESS_WRITE != 0
                            && o.access.addr <= f.until_addr
                            && f.until_addr < o.access.addr + o.access.size.max(1) as u64
                            && run.race(o, h)
                    })
                    .map_or((f.until, f.until_pc, f.until_n), id)
            } else {
                (f.until, f.until_pc, f.until_n)
            };
            if let Some(u) = occ.iter().find(|o| id(o) == until) {
                if !run.race(h, u) {
                    continue;
                }
            }
            let first = self.access(&rc.failing, passing, held);
            let second = self.access(&rc.failing, passing, until);
            races.push(self.race(first, second));
        }
        Report {
            how: "flips",
            races,
            ordered: None,
        }
    }
}

/// A value as the report shows it: decimal when small, else hexadecimal
/// (an address).
pub fn value(v: u64) -> String {
    if v < 1 << 20 {
        v.to_string()
    } else {
        format!("{v:#x}")
    }
}

fn effect(a: &AccessReport, v: Option<Values>) -> String {
    match v {
        None => "did not run".to_string(),
        Some(v) if a.write => format!("wrote {} (was {})", value(v.after), value(v.before)),
        Some(v) => format!("read {}", value(v.after)),
    }
}

impl AccessReport {
    fn place(&self) -> String {
        let mut s = format!(
            "{} {}",
            self.thread,
            if self.write { "writes" } else { "reads " }
        );
        if !self.file.is_empty() {
            let _ = write!(s, " at {}:{}", self.file, self.line);
        }
        if !self.function.is_empty() {
            let _ = write!(s, " in {}", self.function);
        }
        let _ = write!(s, "  [{:#x}: {}]", self.pc, self.instruction);
        s
    }
}

impl Report {
    fn render_no_race(&self) -> String {
        let mut s =
            "  root cause: no race: the sketch's recorded order alone decides this failure \
             (every value the failing thread read from another thread was written before the read \
             in that order: thread create, join, fork, a lock, or another recorded event)"
                .to_string();
        if let Some(o) = &self.ordered {
            let _ = write!(
                s,
                "\n  the failing thread's last read of another thread's write, on {} (ordered, no race):\n    {}\n    {}\n    {} {}, then {} {}\n    ordered by: {}\n          before: {}",
                o.variable,
                o.write.place(),
                o.read.place(),
                o.write.thread,
                effect(&o.write, o.write.failing),
                o.read.thread,
                effect(&o.read, o.read.failing),
                o.after,
                o.before
            );
        }
        s
    }

    /// The report as text for a terminal.
    pub fn render(&self) -> String {
        let n = self.races.len();
        let mut s = match self.how {
            "no-race" => return self.render_no_race(),
            "last-writer" => "  root cause: no passing schedule found; the last race the sketch does not order on what the failing thread read:".to_string(),
            "last-race" => "  root cause: no passing schedule found for this hang; the last race the sketch does not order before it:".to_string(),
            "reads-from" => "  root cause: a read the sketch does not order saw another write than in a passing run:".to_string(),
            _ => format!(
                "  root cause: {n} race{} the sketch did not order; the failure needs {}:",
                if n == 1 { "" } else { "s" },
                if n == 1 { "it flipped" } else { "all of them flipped" }
            ),
        };
        if self.races.is_empty() {
            s.push_str("\n    (none found in the observed accesses)");
        }
        for (i, r) in self.races.iter().enumerate() {
            let (a, b) = (&r.first, &r.second);
            let _ = write!(s, "\n  race {} on {}", i + 1, r.variable);
            let _ = write!(s, "\n    {}\n    {}", a.place(), b.place());
            let _ = match self.how {
                "last-writer" | "last-race" => write!(
                    s,
                    "\n    failing run: {} {}, then {} {}",
                    a.thread,
                    effect(a, a.failing),
                    b.thread,
                    effect(b, b.failing)
                ),
                "reads-from" => write!(
                    s,
                    "\n    failing run: {} {}; passing run: {} {}",
                    b.thread,
                    effect(b, b.failing),
                    b.thread,
                    effect(b, b.passing)
                ),
                _ => write!(
                    s,
                    "\n    passing order: {} {}, then {} {}\n    failing order: {} {}, then {} {}",
                    a.thread,
                    effect(a, a.passing),
                    b.thread,
                    effect(b, b.passing),
                    b.thread,
                    effect(b, b.failing),
                    a.thread,
                    effect(a, a.failing)
                ),
            };
        }
        s
    }
}
