//! `reprise bench solver`: how long one solver query takes as the observed
//! run grows (1k, 10k, 100k accesses), on synthetic runs: four threads
//! whose accesses to 64 shared locations fall between their sketch
//! events, one event in four a thread's, the last thread failing.

use std::time::Instant;

use anyhow::Result;
use reprise_solver::query::{class_of, Access, AccessId, Limits, Query};
use reprise_solver::{solve, Answer};

const THREADS: u32 = 4;
const LOCATIONS: u64 = 64;
/// Accesses a thread makes between two of its events.
const STRETCH: usize = 16;
/// The goal: one query at 10k accesses.
const GOAL_MS: u64 = 1_000;

/// splitmix64.
fn next(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A run of `n` accesses: thread t's k-th stretch lies between global
/// events 4k+t and 4(k+1)+t (the threads take turns logging events), so
/// each stretch overlaps two of every other thread's: their accesses
/// race; farther ones are ordered.
pub fn synthetic_run(n: usize, seed: u64) -> Vec<Access> {
    let mut rng = seed;
    let mut memory = [0u64; LOCATIONS as usize];
    let mut count = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(n);
    let mut stretch = 0u64;
    while out.len() < n {
        let thread = (stretch % THREADS as u64) as u32 + 1;
        let k = stretch / THREADS as u64;
        let (after, before) = (4 * k + thread as u64, 4 * (k + 1) + thread as u64);
        for _ in 0..STRETCH.min(n - out.len()) {
            let loc = next(&mut rng) % LOCATIONS;
            let write = next(&mut rng) % 3 == 0;
            let pc = 0x1000 + loc * 16 + write as u64 * 8;
            let n = count.entry((thread, pc)).or_insert(0u32);
            *n += 1;
            let before_value = memory[loc as usize];
            let value = if write {
                next(&mut rng) % 1000
            } else {
                before_value
            };
            memory[loc as usize] = value;
            out.push(Access {
                id: AccessId { thread, pc, n: *n },
                location: 0x5000 + loc * 8,
                write,
                value,
                before: before_value,
                after_event: after,
                before_event: before,
            });
        }
        stretch += 1;
    }
    out
}

/// One query on a synthetic run of `n` accesses: the last thread's last
/// reads, the run's own class tried.
pub fn query(n: usize) -> Query {
    let accesses = synthetic_run(n, 0x5eed ^ n as u64);
    let last = accesses.last().map_or(0, |a| a.before_event);
    Query {
        tried: vec![class_of(&accesses)],
        locations: Vec::new(),
        focus_pos: last,
        focus_thread: accesses.last().map(|a| a.id.thread),
        accesses,
        limits: Limits::default(),
    }
}

pub(super) fn run_solver(quick: bool) -> Result<u8> {
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    println!("solver query time: synthetic runs of {THREADS} threads, {LOCATIONS} shared locations, {STRETCH} accesses per stretch between events");
    println!(
        "{:>9} {:>7} {:>6} {:>8} {:>5} {:>9} {:>9}  answer",
        "accesses", "window", "focus", "choices", "soft", "query ms", "total ms"
    );
    let mut at_10k = None;
    for &n in sizes {
        let q = query(n);
        let started = Instant::now();
        let (answer, stats) = solve(&q);
        let total = started.elapsed().as_millis() as u64;
        let what = match &answer {
            Answer::Order { flips, .. } => format!("{} flip(s)", flips.len()),
            Answer::Exhausted { classes } => format!("exhausted ({classes} classes)"),
            Answer::Unknown => "unknown".into(),
        };
        println!(
            "{:>9} {:>7} {:>6} {:>8} {:>5} {:>9} {:>9}  {what}",
            n, stats.window, stats.focus_reads, stats.choices, stats.soft, stats.millis, total
        );
        if n == 10_000 {
            at_10k = Some(total);
        }
    }
    if let Some(ms) = at_10k {
        println!(
            "one query at 10k accesses: {ms} ms, goal <= {GOAL_MS} ms, met {}",
            if ms <= GOAL_MS { "yes" } else { "no" }
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthetic_query_has_an_answer() {
        let (answer, stats) = solve(&query(1_000));
        assert!(stats.window > 0 && stats.focus_reads > 0, "{stats:?}");
        assert!(matches!(answer, Answer::Order { .. }), "{answer:?}");
    }
}
