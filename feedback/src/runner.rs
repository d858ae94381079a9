//! The one interface through which every strategy drives the replayer: a
//! schedule in, a [`Run`] out (how the attempt ended, and what it observed
//! when asked to log its accesses). The runner numbers the attempts, keeps
//! every run in order, runs independent schedules in parallel and tells
//! the caller's `on_run` as each one ends.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use reprise_replayer::{attempt, matches, AttemptResult, Replay, ReplayError, Schedule};
use reprise_schema::OutcomeInfo;

use crate::search::{Role, Run, SearchOptions};

pub struct Runner<'a> {
    pub replay: &'a Replay,
    pub opts: &'a SearchOptions,
    /// How the recorded run ended: the outcome each run is matched with.
    pub recorded: OutcomeInfo,
    on_run: &'a (dyn Fn(&Run) + Sync),
    /// Every run so far, in the order they were asked for.
    pub runs: Vec<Run>,
    /// Attempts made (runs of role [`Role::Attempt`]).
    pub attempts: u32,
    /// A lower limit than `--max-attempts` for the planner running now
    /// (the hybrid strategy gives feedback part of the budget).
    pub cap: Option<u32>,
}

impl<'a> Runner<'a> {
    pub fn new(
        replay: &'a Replay,
        opts: &'a SearchOptions,
        on_run: &'a (dyn Fn(&Run) + Sync),
    ) -> Result<Runner<'a>, ReplayError> {
        Ok(Runner {
            replay,
            opts,
            recorded: replay.outcome()?.clone(),
            on_run,
            runs: Vec::new(),
            attempts: 0,
            cap: None,
        })
    }

    /// Whether an attempt ended as the recorded run did.
    pub fn reproduced(&self, r: &AttemptResult) -> bool {
        r.outcome().is_some_and(|o| matches(&self.recorded, o))
    }

    /// The attempt count at which the running planner stops:
    /// `--max-attempts`, or the planner's share of it.
    pub fn limit(&self) -> u32 {
        match self.cap {
            Some(c) => c.min(self.opts.max_attempts),
            None => self.opts.max_attempts,
        }
    }

    /// Attempts left within [`Self::limit`].
    pub fn budget(&self) -> u32 {
        self.limit().saturating_sub(self.attempts)
    }

    /// Runs one schedule (`log`: observe its accesses); returns its index
    /// in [`Self::runs`].
    pub fn run(
        &mut self,
        schedule: Schedule,
        role: Role,
        log: bool,
        note: String,
    ) -> Result<usize, ReplayError> {
        let done = self.run_all(vec![(schedule, note)], role, log, false)?;
        Ok(done[0])
    }

    /// An earlier run of `schedule` in `role` that logged what `log` asks
    /// for. Attempts and observations are not run twice: a planner that
    /// takes over from another (hybrid's feedback after the solver)
    /// replans from the start, and its first choices are runs already
    /// made. Deliberate repeats (does a schedule fail every time?) are
    /// [`Role::Minimize`] runs and always run.
    fn earlier_run(&self, schedule: &Schedule, role: Role, log: bool) -> Option<usize> {
        if role == Role::Minimize {
            return None;
        }
        self.runs
            .iter()
            .position(|r| r.role == role && (r.observed || !log) && r.schedule == *schedule)
    }

    /// Runs `schedules`, up to `jobs` at once, and returns their indices in
    /// [`Self::runs`] (in the order given). `stop_at_reproduced`: once one
    /// reproduces, those not started yet are not run (those running end,
    /// and count). A schedule already run in this role is not run again:
    /// its earlier run's index is returned (see [`Self::earlier_run`]).
    pub fn run_all(
        &mut self,
        schedules: Vec<(Schedule, String)>,
        role: Role,
        log: bool,
        stop_at_reproduced: bool,
    ) -> Result<Vec<usize>, ReplayError> {
        let earlier: Vec<Option<usize>> = schedules
            .iter()
            .map(|(sc, _)| self.earlier_run(sc, role, log))
            .collect();
        if earlier.iter().any(Option::is_some) {
            let mut out = Vec::new();
            let mut fresh = Vec::new();
            for (k, (sc, note)) in schedules.into_iter().enumerate() {
                match earlier[k] {
                    Some(i) => {
                        // Why it was asked for again (a solver's query) stays
                        // in the attempt log, on the run that answers it.
                        if !note.is_empty() {
                            let was = &mut self.runs[i].note;
                            let again =
                                format!("{note}: the same schedule as this run, not run again");
                            *was = if was.is_empty() {
                                again
                            } else {
                                format!("{was}; {again}")
                            };
                        }
                        out.push(Some(i));
                    }
                    None => {
                        out.push(None);
                        fresh.push((sc, note));
                    }
                }
            }
            let mut ran = self
                .run_all(fresh, role, log, stop_at_reproduced)?
                .into_iter();
            // Runs not started after a reproduction are left out, as below.
            return Ok(out
                .into_iter()
                .filter_map(|i| i.or_else(|| ran.next()))
                .collect());
        }
        let counted = role == Role::Attempt;
        let first = self.attempts;
        let first_run = self.runs.len();
        // Each run's number and output directory, decided before any runs.
        let named: Vec<(u32, Schedule, String, Option<std::path::PathBuf>)> = schedules
            .into_iter()
            .enumerate()
            .map(|(k, (sc, note))| {
                let number = if counted { first + k as u32 + 1 } else { first };
                let name = match role {
                    Role::Attempt => format!("attempt-{number}"),
                    Role::Observe => format!("observe-{number}-{}", sc.policy_slug()),
                    Role::Minimize => format!("minimize-{}", first_run + k + 1),
                };
                let dir = self.opts.base.output_dir.as_ref().map(|d| d.join(name));
                (number, sc, note, dir)
            })
            .collect();
        let jobs = self.opts.jobs.clamp(1, 64).min(named.len().max(1));
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let ended: Mutex<Vec<(usize, Result<AttemptResult, ReplayError>)>> = Mutex::new(Vec::new());
        let this = &*self;
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| loop {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let k = next.fetch_add(1, Ordering::AcqRel);
                    let Some((_, sc, _, dir)) = named.get(k) else {
                        return;
                    };
                    let mut o = sc.options(&this.opts.base, log);
                    o.output_dir = dir.clone();
                    let r = attempt(this.replay, &o);
                    let halt = match &r {
                        Ok(r) => stop_at_reproduced && this.reproduced(r),
                        Err(_) => true,
                    };
                    if halt {
                        stop.store(true, Ordering::Release);
                    }
                    ended.lock().unwrap_or_else(|e| e.into_inner()).push((k, r));
                });
            }
        });
        let mut ended = ended.into_inner().unwrap_or_else(|e| e.into_inner());
        ended.sort_by_key(|(k, _)| *k);
        let mut named: Vec<Option<_>> = named.into_iter().map(Some).collect();
        let mut out = Vec::new();
        for (k, r) in ended {
            let result = r?;
            let Some((number, schedule, note, output_dir)) = named[k].take() else {
                continue;
            };
            if counted {
                self.attempts += 1;
            }
            let run = Run {
                attempt: number,
                role,
                reproduced: self.reproduced(&result),
                schedule,
                result,
                note,
                observed: log,
                output_dir,
            };
            (self.on_run)(&run);
            self.runs.push(run);
            out.push(self.runs.len() - 1);
        }
        Ok(out)
    }
}
