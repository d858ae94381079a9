//! `race`: the root-cause report of the reproduction, as `reprise
//! replay` prints it: the saved schedule replayed once, observed, and
//! its flipped races explained.

use std::time::Duration;

use serde_json::json;

use super::{Answer, CmdResult, Debugger};
use reprise_feedback::rootcause::explain;
use reprise_feedback::search::{search, SearchOptions};
use reprise_replayer::AttemptOptions;

pub(super) fn race(d: &mut Debugger, args: &str) -> CmdResult {
    super::moves::no_args(args, "race")?;
    if let Some(a) = &d.race {
        return Ok(a.clone());
    }
    if !d.target.reproducing {
        return Err(format!(
            "{} has no saved reproducing schedule: `reprise replay` finds one, and the race behind the failure with it",
            d.trace.display()
        ));
    }
    let replay = d.target.replay();
    let schedule = d.target.schedule.clone();
    let mut base = AttemptOptions::new(schedule.seed);
    base.timeout = Duration::from_secs(60);
    let opts = SearchOptions {
        strategy: schedule.strategy,
        max_attempts: 1,
        seed: schedule.seed,
        jobs: 1,
        base,
        saved: Some(schedule.clone()),
        max_depth: 1,
    };
    let result = search(replay, &opts, &|_| {}).map_err(|e| e.to_string())?;
    let answer = match (&result.found, &result.root_cause) {
        (Some(_), Some(rc)) => {
            let report = explain(replay, rc).map_err(|e| e.to_string())?;
            let value = serde_json::to_value(&report).map_err(|e| e.to_string())?;
            Answer::new(report.render(), json!({ "root_cause": value }))
        }
        (Some(_), None) => Answer::new(
            "root cause: the sketch's own order decides this failure (the saved schedule flips no race)",
            json!({ "root_cause": null }),
        ),
        (None, _) => {
            let got = result
                .runs
                .first()
                .map_or_else(String::new, |r| r.result.summary());
            return Err(format!(
                "the saved schedule did not reproduce the failure this time ({got}): no root cause to report"
            ));
        }
    };
    d.race = Some(answer.clone());
    Ok(answer)
}
