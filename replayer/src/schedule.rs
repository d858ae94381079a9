//! A schedule: what decides an attempt's interleaving — the strategy
//! (the agent's policy at sketch events), its seed, random preemptions at
//! memory accesses, and the flips (races forced the other way). The
//! searches make schedules, an attempt runs one, and a reproducing one is
//! saved in the trace (`ScheduleInfo`, converted here and nowhere else).

use std::path::Path;

use reprise_abi::replay as rp;
use reprise_schema::{read_schedule, write_schedule, FlipInfo, ScheduleInfo};

use crate::observe::{FlipSpec, ObservePlan};
use crate::{AttemptOptions, ReplayError, Strategy};

/// The reproducing schedule saved in the trace at `dir`, if any, and how
/// many attempts it took to find.
pub fn read_saved(dir: &Path) -> Result<Option<(Schedule, u32)>, ReplayError> {
    let Some(info) = read_schedule(dir)? else {
        return Ok(None);
    };
    match Schedule::from_info(&info) {
        Some(s) => Ok(Some((s, info.attempts))),
        None => Err(ReplayError::UnknownStrategy(info.strategy)),
    }
}

/// Saves `schedule` (found in `attempts` attempts) into the trace at `dir`.
pub fn save(dir: &Path, schedule: &Schedule, attempts: u32) -> Result<(), ReplayError> {
    Ok(write_schedule(dir, &schedule.to_info(attempts))?)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub strategy: Strategy,
    pub seed: u64,
    /// Chance of a preemption at each shared access, in 1/65536 (0: none).
    pub preempt_rate: u32,
    pub flips: Vec<FlipSpec>,
    /// Baton key of the one thread that runs against the strategy's
    /// policy: under `feedback` it runs its code as late as it can while
    /// the others run theirs as early as they can (a failing thread that
    /// checks late what others changed early); under `feedback-lazy` the
    /// other way round. 0: none.
    pub odd_thread: u32,
}

impl Schedule {
    /// The strategy's own order for a seed: no preemption, no flip.
    pub fn base(strategy: Strategy, seed: u64) -> Schedule {
        Schedule {
            strategy,
            seed,
            preempt_rate: 0,
            flips: Vec::new(),
            odd_thread: 0,
        }
    }

    /// How the schedule picks runners: the strategy's name, and the thread
    /// that runs against it (`feedback (thread 1 late)`).
    pub fn policy_name(&self) -> String {
        match self.odd_thread {
            0 => self.strategy.name().to_string(),
            k => format!(
                "{} ({} {})",
                self.strategy.name(),
                crate::key_name(k),
                self.odd_word()
            ),
        }
    }

    /// [`Schedule::policy_name`] as one word, for file names
    /// (`feedback-t1-late`).
    pub fn policy_slug(&self) -> String {
        match self.odd_thread {
            0 => self.strategy.name().to_string(),
            k => format!(
                "{}-p{}t{}-{}",
                self.strategy.name(),
                rp::key_process(k),
                rp::key_thread(k),
                self.odd_word()
            ),
        }
    }

    fn odd_word(&self) -> &'static str {
        match self.strategy {
            Strategy::FeedbackLazy => "early",
            _ => "late",
        }
    }

    /// This schedule with thread `key` running against its policy.
    pub fn with_odd_thread(mut self, key: u32) -> Schedule {
        self.odd_thread = key;
        self
    }

    pub fn with_flips(mut self, flips: Vec<FlipSpec>) -> Schedule {
        self.flips = flips;
        self
    }

    pub fn with_preemptions(mut self, rate: u32) -> Schedule {
        self.preempt_rate = rate;
        self
    }

    /// The schedule a trace saved; None if it names a strategy this
    /// version does not know.
    pub fn from_info(info: &ScheduleInfo) -> Option<Schedule> {
        Some(Schedule {
            strategy: Strategy::from_name(&info.strategy)?,
            seed: info.seed,
            preempt_rate: info.preempt_rate,
            flips: info.flips.iter().map(FlipSpec::from).collect(),
            odd_thread: info.odd_thread.map_or(0, |(p, t)| rp::key(p as u32, t)),
        })
    }

    /// The form a trace saves; `attempts`: how many it took to find.
    pub fn to_info(&self, attempts: u32) -> ScheduleInfo {
        ScheduleInfo {
            strategy: self.strategy.name().to_string(),
            seed: self.seed,
            attempts,
            decisions: Vec::new(),
            flips: self.flips.iter().map(FlipInfo::from).collect(),
            preempt_rate: self.preempt_rate,
            odd_thread: (self.odd_thread != 0).then(|| {
                (
                    rp::key_process(self.odd_thread) as u16,
                    rp::key_thread(self.odd_thread),
                )
            }),
        }
    }

    /// The options of one run of this schedule over `base` (timeouts,
    /// output); `log`: observe it (log its shared accesses).
    pub fn options(&self, base: &AttemptOptions, log: bool) -> AttemptOptions {
        let mut o = base.clone();
        o.strategy = self.strategy;
        o.seed = self.seed;
        o.odd_thread = self.odd_thread;
        o.observe = (log || !self.flips.is_empty() || self.preempt_rate > 0).then(|| ObservePlan {
            log,
            preempt_rate: self.preempt_rate,
            flips: self.flips.clone(),
        });
        o
    }
}

impl From<&FlipSpec> for FlipInfo {
    fn from(f: &FlipSpec) -> FlipInfo {
        FlipInfo {
            held_process: rp::key_process(f.held) as u16,
            held_thread: rp::key_thread(f.held),
            held_pc: f.held_pc,
            held_n: f.held_n,
            until_process: rp::key_process(f.until) as u16,
            until_thread: rp::key_thread(f.until),
            until_pc: f.until_pc,
            until_n: f.until_n,
            defer: f.defer,
            until_fork: f.until_fork,
            until_addr: f.until_addr,
            standing: f.standing,
            held_anchor: f.held_anchor,
            held_k: f.held_k,
            until_anchor: f.until_anchor,
            until_k: f.until_k,
        }
    }
}

impl From<&FlipInfo> for FlipSpec {
    fn from(f: &FlipInfo) -> FlipSpec {
        FlipSpec {
            held: rp::key(f.held_process as u32, f.held_thread),
            held_pc: f.held_pc,
            held_n: f.held_n,
            until: rp::key(f.until_process as u32, f.until_thread),
            until_pc: f.until_pc,
            until_n: f.until_n,
            defer: f.defer,
            until_fork: f.until_fork,
            until_addr: f.until_addr,
            standing: f.standing,
            held_anchor: f.held_anchor,
            held_k: f.held_k,
            until_anchor: f.until_anchor,
            until_k: f.until_k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_schedule_reads_back_the_same() {
        let flip = FlipSpec {
            held: rp::key(1, 2),
            held_pc: 0x1234,
            held_n: 3,
            until: rp::key(0, 1),
            until_pc: 0x1300,
            until_n: 7,
            defer: true,
            until_fork: 0,
            until_addr: 0x5555_0000,
            standing: true,
            held_anchor: 12,
            held_k: 2,
            until_anchor: 1,
            until_k: 1,
        };
        let s = Schedule::base(Strategy::FeedbackLazy, 42)
            .with_flips(vec![flip])
            .with_preemptions(99)
            .with_odd_thread(rp::key(0, 1));
        assert_eq!(Schedule::from_info(&s.to_info(3)), Some(s));
        let mut unknown = Schedule::base(Strategy::Feedback, 1).to_info(0);
        unknown.strategy = "dfs".into();
        assert_eq!(Schedule::from_info(&unknown), None);
    }
}
