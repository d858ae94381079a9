//! `bisect`: the binary search over the run for the first event before
//! which an expression no longer holds (checkpoints on the way), then a
//! watch between the two adjacent events for the write that broke it.

use std::fmt;
use std::time::{Duration, Instant};

use super::*;

/// What `bisect` found.
#[derive(Clone, Debug)]
pub struct Bisection {
    pub expression: String,
    /// The expression holds before event `last_true` and not before event
    /// `first_false` (= `last_true + 1`).
    pub last_true: usize,
    pub first_false: usize,
    /// The write between the two after which the expression is false;
    /// None when no watched write was caught (a system call may have
    /// written the memory: the kernel's writes do not fire watchpoints).
    pub write: Option<Change>,
    /// Evaluations of the expression at pauses (the two ends included).
    pub probes: u32,
    /// Runs started: new replays from the start plus checkpoint resumes.
    pub replays: u64,
    pub fresh_replays: u64,
    pub resumes: u64,
    /// Checkpoints taken by the search.
    pub checkpoints: usize,
    pub elapsed: Duration,
}

impl fmt::Display for Bisection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the invariant broke between event {} and event {}: ",
            self.last_true, self.first_false
        )?;
        match &self.write {
            Some(c) => write!(f, "{} wrote at {} ({})", c.thread, c.place(), c.values())?,
            None => write!(
                f,
                "no write to its memory was caught between them (a system call may have written it)"
            )?,
        }
        write!(
            f,
            "; {} probes, {} replays, {} checkpoint resumes, {:.1} s",
            self.probes,
            self.fresh_replays,
            self.resumes,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Binary search over the run for the moment `text` stopped holding: it
/// must hold before event `from` (default 0) and not before event `to`
/// (default: the last pause, `event_count() - 1`). Then down to the
/// instruction: the write between the two events after which it is
/// false. The run is left paused before `first_false`.
pub fn bisect(
    target: &mut Target,
    program: &Program,
    text: &str,
    from: Option<usize>,
    to: Option<usize>,
) -> Result<Bisection, DebugError> {
    let started = Instant::now();
    let (replays0, resumes0) = (target.replays, target.resumes);
    let parsed = parse(text)?;
    let last = last_pause(target)?;
    let from = from.unwrap_or(0);
    let to = to.unwrap_or(last);
    if to > last {
        return Err(search_err(format!(
            "--to {to} is past the last event the run can pause before ({last})"
        )));
    }
    if from >= to {
        return Err(search_err(format!(
            "bisect needs --from before --to (from event {from}, to event {to})"
        )));
    }
    let mut boundary = Boundary {
        program,
        parsed: &parsed,
        text,
        probes: 0,
        taken: 0,
    };
    let (mut lo, mut hi) = boundary.search(target, from, to, true)?;
    let (mut write, mut broke) = watch_boundary(target, program, &parsed, lo, hi)?;
    if !broke {
        // The watch between the two events saw the expression hold all
        // along: a copy resumed from a checkpoint answered a probe unlike
        // the run. Search again with replays from the start only.
        for (id, _, _) in target.checkpoints() {
            target.delete_checkpoint(id)?;
        }
        (lo, hi) = boundary.search(target, from, to, false)?;
        (write, broke) = watch_boundary(target, program, &parsed, lo, hi)?;
    }
    let write = if broke { write } else { None };
    let fresh = target.replays - replays0;
    let resumes = target.resumes - resumes0;
    Ok(Bisection {
        expression: text.to_string(),
        last_true: lo,
        first_false: hi,
        write,
        probes: boundary.probes,
        replays: fresh + resumes,
        fresh_replays: fresh,
        resumes,
        checkpoints: boundary.taken,
        elapsed: started.elapsed(),
    })
}

/// The binary search of [`bisect`]: its probes and checkpoints.
struct Boundary<'p> {
    program: &'p Program,
    parsed: &'p Expr,
    text: &'p str,
    probes: u32,
    taken: usize,
}

impl Boundary<'_> {
    /// The expression's value paused before event `at`.
    fn probe(
        &mut self,
        target: &mut Target,
        at: usize,
    ) -> Result<Result<Value, String>, DebugError> {
        if std::env::var_os("REPRISE_SEARCH_DEBUG").is_some() {
            eprintln!("search: probe {at} from {:?}", target.position());
        }
        goto_paused(target, at)?;
        self.probes += 1;
        let mem = target.memory()?;
        Ok(eval_now(self.program, self.parsed, &mem).0)
    }

    /// A checkpoint here, if the agent can take one (a thread blocked in
    /// the kernel outside the schedule prevents it: later seeks are then
    /// only dearer).
    fn checkpoint_here(&mut self, target: &mut Target, at: usize) {
        if target.checkpoints().iter().any(|c| c.1 == at) {
            return;
        }
        match target.checkpoint() {
            Ok(_) => self.taken += 1,
            Err(e) => {
                if std::env::var_os("REPRISE_SEARCH_DEBUG").is_some() {
                    eprintln!("search: no checkpoint at {:?}: {e}", target.position());
                }
            }
        }
    }

    /// (last event before which it holds, first before which it does not),
    /// adjacent. `checkpoints`: take them on the way (seeks back resume
    /// the nearest) or not (seeks back replay from the start).
    fn search(
        &mut self,
        target: &mut Target,
        from: usize,
        to: usize,
        checkpoints: bool,
    ) -> Result<(usize, usize), DebugError> {
        let text = self.text;
        // The `from` end must hold.
        let v = self.probe(target, from)?;
        if truth(&v) != Some(true) {
            return Err(search_err(format!(
                "`{text}` does not hold at the start (before event {from}): it is {}; bisect needs it true there and false at the end",
                shown(&v)
            )));
        }
        if checkpoints {
            self.checkpoint_here(target, from);
        }
        // First pass: forward in strides, a checkpoint at each while it holds.
        let stride = ((to - from) / BISECT_STRIDES).max(1);
        let mut lo = from;
        let mut hi = None;
        let mut at = from + stride;
        while at < to && hi.is_none() {
            let v = self.probe(target, at)?;
            match truth(&v) {
                Some(true) => {
                    lo = at;
                    if checkpoints {
                        self.checkpoint_here(target, at);
                    }
                }
                _ => hi = Some(at),
            }
            at += stride;
        }
        // The `to` end must not hold.
        let v = self.probe(target, to)?;
        if truth(&v) != Some(false) {
            return Err(search_err(format!(
                "`{text}` still holds at the end (before event {to}): it is {}; bisect needs it false there (give --to an event where it is)",
                shown(&v)
            )));
        }
        let mut hi = hi.unwrap_or(to);
        // Binary search: holds before `lo`, not before `hi`.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let v = self.probe(target, mid)?;
            if truth(&v) == Some(true) {
                lo = mid;
                if checkpoints && hi - lo > CHECKPOINT_INTERVAL_MIN {
                    self.checkpoint_here(target, mid);
                }
            } else {
                hi = mid;
            }
        }
        Ok((lo, hi))
    }
}

/// Down to the instruction: watches from `lo` to `hi`; returns the change
/// that made the expression false, and whether it became false at all.
fn watch_boundary(
    target: &mut Target,
    program: &Program,
    parsed: &Expr,
    lo: usize,
    hi: usize,
) -> Result<(Option<Change>, bool), DebugError> {
    goto_paused(target, lo)?;
    let parts = parts_of(parsed);
    let mut broke = false;
    let watched = watch_run(target, program, parsed, &parts, hi, &mut |v| {
        broke = truth(v) != Some(true);
        broke
    });
    let mut changes = match watched {
        Ok(c) => c,
        // A copy resumed from a checkpoint may hold a zombie thread (its
        // restorer) that ptrace refuses: replay from the start instead.
        Err(DebugError::Search(m)) if m.contains("zombies") => {
            target.restart()?;
            goto_paused(target, lo)?;
            watch_run(target, program, parsed, &parts, hi, &mut |v| {
                broke = truth(v) != Some(true);
                broke
            })?
        }
        Err(e) => return Err(e),
    };
    // Watching stops at the change that made it false: the last one.
    Ok((if broke { changes.pop() } else { None }, broke))
}
