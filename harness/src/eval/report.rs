//! The replay evaluation's table, summary and notes.

use super::miss;
use super::replay::{matched, Cell, ReplayRow};
use super::EvalOptions;

/// The sketch whose feedback replay the failure-matched and root-cause
/// columns describe: sys, else the last one evaluated.
pub(super) fn primary_sketch(a: &EvalOptions) -> &str {
    if a.sketches.iter().any(|s| s == "sys") {
        "sys"
    } else {
        a.sketches.last().map_or("sys", |s| s.as_str())
    }
}

/// The strategy of those columns: feedback, else the last one evaluated.
pub(super) fn primary_strategy(a: &EvalOptions) -> &str {
    if a.strategies.iter().any(|s| s == "feedback") {
        "feedback"
    } else {
        a.strategies.last().map_or("feedback", |s| s.as_str())
    }
}

fn median(v: &mut [u32]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m] as f64
    } else {
        (v[m - 1] + v[m]) as f64 / 2.0
    })
}

pub(super) fn print_replay_table(rows: &[ReplayRow], a: &EvalOptions, summary: &[String]) {
    let (ps, pst) = (primary_sketch(a), primary_strategy(a));
    let mut head = format!(
        "| program | kind | native % | recorded until failure ({}) |",
        a.sketches.join(" / ")
    );
    for sk in &a.sketches {
        for st in &a.strategies {
            head.push_str(&format!(" {st} {sk} |"));
        }
    }
    head.push_str(" failure matched | root cause |");
    println!("{head}");
    let cols = 4 + a.sketches.len() * a.strategies.len() + 2;
    println!("|{}", "---|".repeat(cols));
    for r in rows {
        let recorded: Vec<String> = r
            .recordings
            .iter()
            .map(|rec| match (&rec.trace, rec.frequent) {
                (Some(_), false) => rec.runs.to_string(),
                (Some(_), true) => format!("{} (f)", rec.runs),
                (None, _) => format!("none in {}", rec.runs),
            })
            .collect();
        let mut line = format!(
            "| {} | {} | {:.1}{} | {} |",
            r.name,
            r.kind,
            r.native_percent,
            if r.native_args == "frequent" {
                " (f)"
            } else {
                ""
            },
            recorded.join(" / ")
        );
        for sk in &a.sketches {
            for st in &a.strategies {
                let t = r.cell(st, sk).map(Cell::text).unwrap_or_default();
                line.push_str(&format!(" {t} |"));
            }
        }
        let p = r.cell(pst, ps);
        let (m, rc) = match p {
            Some(c) if c.expected.is_none() => ("no (no failing recording)".to_string(), "—"),
            Some(c) => (
                if matched(c) { "yes" } else { "no" }.to_string(),
                c.root_cause,
            ),
            None => ("—".to_string(), "—"),
        };
        line.push_str(&format!(
            " {m} | {} |",
            if rc.is_empty() { "—" } else { rc }
        ));
        println!("{line}");
    }
    println!();
    println!(
        "Cells: the attempt that reproduced the recorded failure (— : not within {}) and the search's time. \
         (f): the default arguments never failed (--runs {} recordings or --budget {} s), the frequent ones were used. \
         Failure matched and root cause: {pst}/{ps}. \
         A miss is *fidelity* when every attempt diverged (left the sketch, or ended before replaying all of it), \
         *search* when every attempt followed the whole sketch and did not fail as recorded (or went on at the failing thread's recorded failure, its message to stderr, instead of failing), *both* when some did each.",
        a.max_attempts, a.runs, a.budget
    );
    println!();
    for l in summary {
        println!("{l}");
    }
    // What the cells cannot say.
    let mut notes = Vec::new();
    for r in rows {
        for c in &r.cells {
            if !c.note.is_empty() && c.expected.is_some() {
                notes.push(format!(
                    "- {} ({} {}): {}",
                    r.name, c.strategy, c.sketch, c.note
                ));
            }
        }
        if let Some(c) = r.cell(pst, ps) {
            if c.expected == Some(false) {
                let rec = r.recordings.iter().find(|x| x.sketch == ps);
                notes.push(format!(
                    "- {}: the recorded failure ({}) is not the expected {}",
                    r.name,
                    rec.map_or("", |x| x.recorded.as_str()),
                    r.expected
                ));
            }
            if c.root_cause == "no" && !c.races.is_empty() {
                notes.push(format!(
                    "- {}: root cause named {}",
                    r.name,
                    c.races.join("; ")
                ));
            }
        }
    }
    if !notes.is_empty() {
        println!();
        println!("Notes:");
        for n in notes {
            println!("{n}");
        }
    }
}

/// The summary lines: each strategy × sketch against its goal.
pub(super) fn summary_lines(rows: &[ReplayRow], a: &EvalOptions) -> Vec<String> {
    let n = rows.len();
    let pct = |x: usize| {
        if n == 0 {
            0.0
        } else {
            100.0 * x as f64 / n as f64
        }
    };
    let mut out = Vec::new();
    let mut order: Vec<(&str, &str)> = Vec::new();
    for st in ["feedback", "random"] {
        for sk in ["sys", "sync"] {
            order.push((st, sk));
        }
    }
    for st in &a.strategies {
        for sk in &a.sketches {
            if !order.contains(&(st.as_str(), sk.as_str())) {
                order.push((st, sk));
            }
        }
    }
    for (st, sk) in order {
        if !a.strategies.iter().any(|s| s == st) || !a.sketches.iter().any(|s| s == sk) {
            continue;
        }
        let mut found: Vec<u32> = rows
            .iter()
            .filter_map(|r| r.cell(st, sk).and_then(|c| c.attempt))
            .collect();
        let x = found.len();
        let med = median(&mut found).map_or("—".to_string(), |m| format!("{m}"));
        let goal = match (st, sk) {
            ("feedback", "sys") => " (goal: >= 90%, median <= 3)",
            ("feedback", "sync") => " (goal >= 80%)",
            _ => "",
        };
        let misses = miss::counts(
            rows.iter()
                .filter_map(|r| r.cell(st, sk).and_then(|c| c.miss.as_ref())),
        );
        let mut ms: Vec<u32> = rows
            .iter()
            .filter_map(|r| r.cell(st, sk))
            .flat_map(|c| {
                c.query_millis
                    .iter()
                    .map(|&m| m.min(u32::MAX as u64) as u32)
            })
            .collect();
        let queries = ms.len();
        let per_query = match median(&mut ms) {
            Some(m) => format!("; solver time per query: median {m} ms over {queries} queries"),
            None => String::new(),
        };
        out.push(format!(
            "{st}, {sk}: {x}/{n} programs reproduced within {} attempts ({:.0}%), median attempts {med}{goal}{}{per_query}",
            a.max_attempts,
            pct(x),
            if misses.is_empty() { String::new() } else { format!("; {misses}") }
        ));
    }
    if a.strategies.iter().any(|s| s == "feedback") {
        let ps = primary_sketch(a);
        let cells: Vec<&Cell> = rows
            .iter()
            .filter_map(|r| r.cell("feedback", ps))
            .filter(|c| c.attempt.is_some())
            .collect();
        let y = cells.len();
        let x = cells.iter().filter(|c| c.root_cause == "yes").count();
        let by_sketch = cells.iter().filter(|c| c.root_cause == "sketch").count();
        let on_lines = cells
            .iter()
            .filter(|c| c.root_cause == "sketch" && c.ordered_on_race_lines)
            .count();
        out.push(format!(
            "root cause names the manifest's racing lines: {x} of {y} reproduced by feedback ({ps}){} (goal >= 90%){}",
            if y == 0 {
                String::new()
            } else {
                format!(", {:.0}%", 100.0 * x as f64 / y as f64)
            },
            if by_sketch > 0 {
                format!(
                    "; {by_sketch} of them need no race (the sketch's own order decides the failure; \
                     for {on_lines} of those the write and read it orders are on the racing lines)"
                )
            } else {
                String::new()
            }
        ));
    }
    out
}
