//! `reprise report`: one self-contained HTML file that draws a trace's
//! reproduced interleaving — a lane per thread (and per process), the
//! sketch events along time in their recorded global order, the saved
//! schedule's flips as arrows between the two accesses, the root cause's
//! racing accesses, and the failure at the end.
//!
//! The page needs no network: its style, its script and its data (a
//! compact JSON array of the events) are inline; the script draws the
//! lanes as SVG, only what is visible, aggregating runs of a lane's events
//! into bars when zoomed out (a 100k-event trace stays usable).
//!
//! - [`replay_saved`] replays a saved schedule once, observed, and builds
//!   its root cause as `reprise replay` does ([`Analysis`]).
//! - [`Analysis::from_search`] takes a search that already ran (`reprise
//!   replay --report`).
//! - [`render`] builds the page; [`write`] writes it to a file.

mod html;
mod model;

use std::path::{Path, PathBuf};

use reprise_feedback::rootcause::{explain, Report};
use reprise_feedback::search::{search, SearchOptions, SearchResult};
use reprise_replayer::observe::Observation;
use reprise_replayer::{AttemptOptions, Replay, ReplayError, Schedule};
use reprise_schema::{TraceError, TraceReader};

pub use model::Picture;

/// Why a report cannot be made. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("cannot encode the page's data: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write {}: {}", .0.display(), .1)]
    Write(PathBuf, std::io::Error),
}

/// What a run of the reproducing schedule showed, to draw over the sketch.
#[derive(Clone, Debug, Default)]
pub struct Analysis {
    /// The reproducing schedule (its flips become arrows).
    pub schedule: Option<Schedule>,
    /// The attempts it took to find (0: not known).
    pub found_in: u32,
    /// How the run of the schedule ended (one line); None: not run.
    pub outcome: Option<String>,
    /// The run reproduced the recorded outcome.
    pub reproduced: bool,
    /// The failing run, observed: where the racing accesses happened
    /// between the sketch events.
    pub observation: Option<Observation>,
    /// The root-cause report (`Err`: why there is none).
    pub report: Option<Result<Report, String>>,
    /// A line for the page about where the picture comes from.
    pub note: Option<String>,
}

impl Analysis {
    /// What a finished search found (`reprise replay --report`): its
    /// schedule, its reproducing run and the root cause's failing run.
    pub fn from_search(result: &SearchResult, report: Option<Result<Report, String>>) -> Analysis {
        let run = result.reproducing().or(result.runs.last());
        Analysis {
            schedule: result.schedule.clone(),
            found_in: result.reproducing().map_or(0, |r| r.attempt),
            outcome: run.map(|r| r.result.summary()),
            reproduced: result.found.is_some(),
            observation: result.root_cause.as_ref().map(|rc| rc.failing.clone()),
            report,
            note: None,
        }
    }

    /// The page without a schedule: the recorded sketch alone, and why.
    pub fn sketch_only(note: impl Into<String>) -> Analysis {
        Analysis {
            note: Some(note.into()),
            ..Analysis::default()
        }
    }
}

/// Replays `schedule` once (the saved schedule first, as `reprise replay`
/// tries it: observed when it has flips, which then are explained) and
/// builds its root cause. `found_in`: the attempts it took to find.
pub fn replay_saved(
    replay: &Replay,
    schedule: &Schedule,
    found_in: u32,
    base: AttemptOptions,
) -> Result<Analysis, ReplayError> {
    let opts = SearchOptions {
        strategy: schedule.strategy,
        max_attempts: 1,
        seed: schedule.seed,
        jobs: 1,
        base,
        saved: Some(schedule.clone()),
        max_depth: 4,
    };
    let result = search(replay, &opts, &|_| {})?;
    let report = result
        .root_cause
        .as_ref()
        .map(|rc| explain(replay, rc).map_err(|e| e.to_string()));
    let mut a = Analysis::from_search(&result, report);
    a.found_in = found_in;
    if a.schedule.is_none() {
        a.schedule = Some(schedule.clone());
    }
    if !a.reproduced {
        a.note = Some(format!(
            "the saved schedule did not reproduce the recorded outcome this time ({}); the flips are drawn as saved",
            a.outcome.as_deref().unwrap_or("no run")
        ));
    }
    Ok(a)
}

/// The page for trace `dir`. `replay` (the trace prepared for replay)
/// places the observed accesses between the sketch events; without it
/// the accesses are not drawn.
pub fn render(
    dir: &Path,
    replay: Option<&Replay>,
    analysis: &Analysis,
) -> Result<String, ReportError> {
    let reader = TraceReader::open(dir)?;
    let picture = Picture::build(&reader, replay, analysis)?;
    html::page(&reader, analysis, &picture)
}

/// Renders the page of trace `dir` into `out`.
pub fn write(
    dir: &Path,
    replay: Option<&Replay>,
    analysis: &Analysis,
    out: &Path,
) -> Result<(), ReportError> {
    let page = render(dir, replay, analysis)?;
    std::fs::write(out, page).map_err(|e| ReportError::Write(out.to_path_buf(), e))
}
