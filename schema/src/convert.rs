//! Conversions between the plain types and capnp messages.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use capnp::message::{Builder, HeapAllocator};
use reprise_abi::EventKind;

use crate::trace_capnp as tc;
use crate::types::*;

pub(crate) fn bytes_to_path(b: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(b.to_vec()))
}

fn lossy(t: capnp::text::Reader<'_>) -> String {
    String::from_utf8_lossy(t.as_bytes()).into_owned()
}

pub(crate) fn kind_to_capnp(k: EventKind) -> tc::EventKind {
    // The numbering of the two enums is the same by construction (checked
    // in a test); every abi kind exists in the schema.
    tc::EventKind::try_from(k as u16).unwrap_or(tc::EventKind::MutexLock)
}

pub(crate) fn kind_from_capnp(k: tc::EventKind) -> capnp::Result<EventKind> {
    EventKind::from_u16(k as u16).ok_or_else(|| {
        capnp::Error::failed(format!("event kind {} unknown to this reprise", k as u16))
    })
}

fn level_to_capnp(l: SketchLevel) -> tc::SketchLevel {
    match l {
        SketchLevel::Sync => tc::SketchLevel::Sync,
        SketchLevel::Sys => tc::SketchLevel::Sys,
        SketchLevel::Func => tc::SketchLevel::Func,
        SketchLevel::Bb => tc::SketchLevel::Bb,
    }
}

fn level_from_capnp(l: tc::SketchLevel) -> SketchLevel {
    match l {
        tc::SketchLevel::Sync => SketchLevel::Sync,
        tc::SketchLevel::Sys => SketchLevel::Sys,
        tc::SketchLevel::Func => SketchLevel::Func,
        tc::SketchLevel::Bb => SketchLevel::Bb,
    }
}

fn outcome_kind_to_capnp(k: OutcomeKind) -> tc::OutcomeKind {
    match k {
        OutcomeKind::Exited => tc::OutcomeKind::Exited,
        OutcomeKind::Signaled => tc::OutcomeKind::Signaled,
        OutcomeKind::Assertion => tc::OutcomeKind::Assertion,
        OutcomeKind::Deadlock => tc::OutcomeKind::Deadlock,
        OutcomeKind::Hang => tc::OutcomeKind::Hang,
        OutcomeKind::Interrupted => tc::OutcomeKind::Interrupted,
        OutcomeKind::Unknown => tc::OutcomeKind::Unknown,
        OutcomeKind::WrongOutput => tc::OutcomeKind::WrongOutput,
    }
}

fn outcome_kind_from_capnp(k: tc::OutcomeKind) -> OutcomeKind {
    match k {
        tc::OutcomeKind::Exited => OutcomeKind::Exited,
        tc::OutcomeKind::Signaled => OutcomeKind::Signaled,
        tc::OutcomeKind::Assertion => OutcomeKind::Assertion,
        tc::OutcomeKind::Deadlock => OutcomeKind::Deadlock,
        tc::OutcomeKind::Hang => OutcomeKind::Hang,
        tc::OutcomeKind::Interrupted => OutcomeKind::Interrupted,
        tc::OutcomeKind::Unknown => OutcomeKind::Unknown,
        tc::OutcomeKind::WrongOutput => OutcomeKind::WrongOutput,
    }
}

fn serialize(msg: &Builder<HeapAllocator>) -> Vec<u8> {
    capnp::serialize::write_message_to_words(msg)
}

// ---- header ---------------------------------------------------------------

pub(crate) fn header_to_bytes(h: &HeaderInfo) -> Vec<u8> {
    let mut msg = Builder::new_default();
    {
        let mut b = msg.init_root::<tc::header::Builder>();
        b.set_format_version(h.format_version);
        b.set_reprise_version(h.reprise_version.as_str());
        b.set_program_path(h.program_path.as_os_str().as_bytes());
        b.set_program_digest(&h.program_digest);
        b.set_build_id(&h.build_id);
        {
            let mut l = b.reborrow().init_argv(h.argv.len() as u32);
            for (i, a) in h.argv.iter().enumerate() {
                l.set(i as u32, a.as_bytes());
            }
        }
        {
            let mut l = b.reborrow().init_env(h.env.len() as u32);
            for (i, a) in h.env.iter().enumerate() {
                l.set(i as u32, a.as_bytes());
            }
        }
        b.set_cwd(h.cwd.as_os_str().as_bytes());
        b.set_sketch_level(level_to_capnp(h.level));
        b.set_machine(h.machine.as_str());
        b.set_kernel(h.kernel.as_str());
        b.set_cpus(h.cpus);
        b.set_start_time_unix_ns(h.start_time_unix_ns);
        b.set_recorded_events(h.recorded_events);
        b.set_block_period(h.block_period);
        b.set_chaos(h.chaos);
    }
    serialize(&msg)
}

/// The format version alone (checked before the rest is interpreted).
pub(crate) fn header_format_version(r: tc::header::Reader<'_>) -> u32 {
    r.get_format_version()
}

pub(crate) fn header_from_capnp(r: tc::header::Reader<'_>) -> capnp::Result<HeaderInfo> {
    let list = |l: capnp::data_list::Reader<'_>| -> capnp::Result<Vec<OsString>> {
        let mut v = Vec::with_capacity(l.len() as usize);
        for x in l.iter() {
            v.push(OsString::from_vec(x?.to_vec()));
        }
        Ok(v)
    };
    Ok(HeaderInfo {
        format_version: r.get_format_version(),
        reprise_version: lossy(r.get_reprise_version()?),
        program_path: bytes_to_path(r.get_program_path()?),
        program_digest: r.get_program_digest()?.to_vec(),
        build_id: r.get_build_id()?.to_vec(),
        argv: list(r.get_argv()?)?,
        env: list(r.get_env()?)?,
        cwd: bytes_to_path(r.get_cwd()?),
        // A level added by a newer writer reads as the richest we know.
        level: r
            .get_sketch_level()
            .map(level_from_capnp)
            .unwrap_or(SketchLevel::Bb),
        machine: lossy(r.get_machine()?),
        kernel: lossy(r.get_kernel()?),
        cpus: r.get_cpus(),
        start_time_unix_ns: r.get_start_time_unix_ns(),
        recorded_events: r.get_recorded_events(),
        block_period: r.get_block_period(),
        chaos: r.get_chaos(),
    })
}

// ---- outcome --------------------------------------------------------------

fn set_frames(mut l: capnp::struct_list::Builder<'_, tc::frame::Owned>, frames: &[Frame]) {
    for (i, f) in frames.iter().enumerate() {
        let mut b = l.reborrow().get(i as u32);
        b.set_pc(f.pc);
        b.set_function(f.function.as_str());
        b.set_file(f.file.as_os_str().as_bytes());
        b.set_line(f.line);
        b.set_module(f.module.as_os_str().as_bytes());
        b.set_offset(f.offset);
    }
}

fn get_frames(l: capnp::struct_list::Reader<'_, tc::frame::Owned>) -> capnp::Result<Vec<Frame>> {
    let mut v = Vec::with_capacity(l.len() as usize);
    for f in l.iter() {
        v.push(Frame {
            pc: f.get_pc(),
            function: lossy(f.get_function()?),
            file: bytes_to_path(f.get_file()?),
            line: f.get_line(),
            module: bytes_to_path(f.get_module()?),
            offset: f.get_offset(),
        });
    }
    Ok(v)
}

fn set_u64s(mut l: capnp::primitive_list::Builder<'_, u64>, v: &[u64]) {
    for (i, x) in v.iter().enumerate() {
        l.set(i as u32, *x);
    }
}

pub(crate) fn outcome_to_bytes(o: &OutcomeInfo) -> Vec<u8> {
    let mut msg = Builder::new_default();
    {
        let mut b = msg.init_root::<tc::outcome::Builder>();
        b.set_kind(outcome_kind_to_capnp(o.kind));
        b.set_exit_code(o.exit_code);
        b.set_signal(o.signal);
        b.set_signal_code(o.signal_code);
        b.set_fault_addr(o.fault_addr);
        b.set_pc(o.pc);
        set_u64s(
            b.reborrow().init_registers(o.registers.len() as u32),
            &o.registers,
        );
        b.set_process(o.process);
        b.set_thread(o.thread);
        set_frames(
            b.reborrow().init_backtrace(o.backtrace.len() as u32),
            &o.backtrace,
        );
        b.set_assertion(o.assertion.as_str());
        {
            let mut l = b.reborrow().init_threads(o.threads.len() as u32);
            for (i, t) in o.threads.iter().enumerate() {
                let mut tb = l.reborrow().get(i as u32);
                tb.set_process(t.process);
                tb.set_thread(t.thread);
                tb.set_tid(t.tid);
                tb.set_waiting_on(t.waiting_on);
                tb.set_wait_kind(kind_to_capnp(t.wait_kind));
                set_u64s(tb.reborrow().init_held(t.held.len() as u32), &t.held);
                set_frames(
                    tb.reborrow().init_backtrace(t.backtrace.len() as u32),
                    &t.backtrace,
                );
            }
        }
        set_u64s(b.reborrow().init_cycle(o.cycle.len() as u32), &o.cycle);
        {
            let mut l = b.reborrow().init_output(o.output.len() as u32);
            for (i, s) in o.output.iter().enumerate() {
                let mut sb = l.reborrow().get(i as u32);
                sb.set_fd(s.fd);
                sb.set_length(s.length);
                sb.set_digest(s.digest);
                sb.set_kept_bytes(s.kept_bytes);
            }
        }
        b.set_event_count(o.event_count);
        b.set_duration_ns(o.duration_ns);
        b.set_dropped_events(o.dropped_events);
        b.set_summary(o.summary.as_str());
        b.set_expected_output(&o.expected_output);
        b.set_output_line(o.output_line);
        b.set_output_line_start(o.output_line_start);
    }
    serialize(&msg)
}

pub(crate) fn outcome_from_capnp(r: tc::outcome::Reader<'_>) -> capnp::Result<OutcomeInfo> {
    let mut threads = Vec::new();
    for t in r.get_threads()?.iter() {
        threads.push(ThreadState {
            process: t.get_process(),
            thread: t.get_thread(),
            tid: t.get_tid(),
            waiting_on: t.get_waiting_on(),
            wait_kind: kind_from_capnp(t.get_wait_kind()?)?,
            held: t.get_held()?.iter().collect(),
            backtrace: get_frames(t.get_backtrace()?)?,
        });
    }
    let mut output = Vec::new();
    for s in r.get_output()?.iter() {
        output.push(OutputStream {
            fd: s.get_fd(),
            length: s.get_length(),
            digest: s.get_digest(),
            kept_bytes: s.get_kept_bytes(),
        });
    }
    Ok(OutcomeInfo {
        kind: r
            .get_kind()
            .map(outcome_kind_from_capnp)
            .unwrap_or(OutcomeKind::Unknown),
        exit_code: r.get_exit_code(),
        signal: r.get_signal(),
        signal_code: r.get_signal_code(),
        fault_addr: r.get_fault_addr(),
        pc: r.get_pc(),
        registers: r.get_registers()?.iter().collect(),
        process: r.get_process(),
        thread: r.get_thread(),
        backtrace: get_frames(r.get_backtrace()?)?,
        assertion: lossy(r.get_assertion()?),
        threads,
        cycle: r.get_cycle()?.iter().collect(),
        output,
        event_count: r.get_event_count(),
        duration_ns: r.get_duration_ns(),
        dropped_events: r.get_dropped_events(),
        summary: lossy(r.get_summary()?),
        expected_output: r.get_expected_output()?.to_vec(),
        output_line: r.get_output_line(),
        output_line_start: r.get_output_line_start(),
    })
}

// ---- schedule -------------------------------------------------------------

pub(crate) fn schedule_to_bytes(s: &ScheduleInfo) -> Vec<u8> {
    let mut msg = Builder::new_default();
    {
        let mut b = msg.init_root::<tc::schedule::Builder>();
        b.set_strategy(s.strategy.as_str());
        b.set_seed(s.seed);
        b.set_attempts(s.attempts);
        let mut l = b.reborrow().init_decisions(s.decisions.len() as u32);
        for (i, d) in s.decisions.iter().enumerate() {
            let mut db = l.reborrow().get(i as u32);
            db.set_before_seq(d.before_seq);
            db.set_process(d.process);
            db.set_thread(d.thread);
            db.set_pc(d.pc);
            db.set_occurrence(d.occurrence);
        }
        b.set_preempt_rate(s.preempt_rate);
        if let Some((process, thread)) = s.odd_thread {
            b.set_odd_process(process);
            b.set_odd_thread(thread + 1);
        }
        let mut l = b.init_flips(s.flips.len() as u32);
        for (i, f) in s.flips.iter().enumerate() {
            let mut fb = l.reborrow().get(i as u32);
            fb.set_held_process(f.held_process);
            fb.set_held_thread(f.held_thread);
            fb.set_held_pc(f.held_pc);
            fb.set_held_n(f.held_n);
            fb.set_until_process(f.until_process);
            fb.set_until_thread(f.until_thread);
            fb.set_until_pc(f.until_pc);
            fb.set_until_n(f.until_n);
            fb.set_defer(f.defer);
            fb.set_until_fork(f.until_fork);
            fb.set_until_addr(f.until_addr);
            fb.set_standing(f.standing);
            fb.set_held_anchor(f.held_anchor);
            fb.set_held_k(f.held_k);
            fb.set_until_anchor(f.until_anchor);
            fb.set_until_k(f.until_k);
        }
    }
    serialize(&msg)
}

pub(crate) fn schedule_from_capnp(r: tc::schedule::Reader<'_>) -> capnp::Result<ScheduleInfo> {
    Ok(ScheduleInfo {
        strategy: lossy(r.get_strategy()?),
        seed: r.get_seed(),
        attempts: r.get_attempts(),
        decisions: r
            .get_decisions()?
            .iter()
            .map(|d| Decision {
                before_seq: d.get_before_seq(),
                process: d.get_process(),
                thread: d.get_thread(),
                pc: d.get_pc(),
                occurrence: d.get_occurrence(),
            })
            .collect(),
        flips: r
            .get_flips()?
            .iter()
            .map(|f| FlipInfo {
                held_process: f.get_held_process(),
                held_thread: f.get_held_thread(),
                held_pc: f.get_held_pc(),
                held_n: f.get_held_n(),
                until_process: f.get_until_process(),
                until_thread: f.get_until_thread(),
                until_pc: f.get_until_pc(),
                until_n: f.get_until_n(),
                defer: f.get_defer(),
                until_fork: f.get_until_fork(),
                until_addr: f.get_until_addr(),
                standing: f.get_standing(),
                held_anchor: f.get_held_anchor(),
                held_k: f.get_held_k(),
                until_anchor: f.get_until_anchor(),
                until_k: f.get_until_k(),
            })
            .collect(),
        preempt_rate: r.get_preempt_rate(),
        odd_thread: match r.get_odd_thread() {
            0 => None,
            t => Some((r.get_odd_process(), t - 1)),
        },
    })
}

// ---- events ---------------------------------------------------------------

/// Appends the events of one `EventChunk` to `out`.
pub(crate) fn events_from_capnp(
    r: tc::event_chunk::Reader<'_>,
    out: &mut Vec<EventRecord>,
) -> capnp::Result<()> {
    let list = r.get_events()?;
    out.reserve(list.len() as usize);
    for e in list.iter() {
        let repeat = e.get_repeat();
        let kind = kind_from_capnp(e.get_kind()?)?;
        if repeat > 1 && matches!(kind, EventKind::FuncEntry | EventKind::Block) {
            // A run of code entries: the addresses (and call sites) in data.
            let data = e.get_data()?;
            let word = |i: usize| {
                data.get(i * 8..i * 8 + 8)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            };
            let n = repeat as usize;
            if data.len() < n * 8 {
                return Err(capnp::Error::failed(
                    "a run of code entries without their addresses".into(),
                ));
            }
            let sites = kind == EventKind::FuncEntry && data.len() >= n * 16;
            for i in 0..n {
                out.push(EventRecord {
                    seq: e.get_seq() + i as u64,
                    process: e.get_process(),
                    thread: e.get_thread(),
                    kind,
                    object: word(i),
                    arg0: if sites { word(n + i) } else { 0 },
                    arg1: 0,
                    result: 0,
                    extra: 0,
                    data: Vec::new(),
                });
            }
            continue;
        }
        if repeat > 1 {
            // A run: expand it into its events.
            let kinds = [
                kind_from_capnp(e.get_kind()?)?,
                kind_from_capnp(e.get_alt_kind()?)?,
            ];
            for i in 0..repeat {
                out.push(EventRecord {
                    seq: e.get_seq() + i,
                    process: e.get_process(),
                    thread: e.get_thread(),
                    kind: kinds[(i % 2) as usize],
                    object: e.get_object(),
                    arg0: e.get_arg0(),
                    arg1: e.get_arg1(),
                    result: 0,
                    extra: e.get_extra(),
                    data: Vec::new(),
                });
            }
            continue;
        }
        out.push(EventRecord {
            seq: e.get_seq(),
            process: e.get_process(),
            thread: e.get_thread(),
            kind: kind_from_capnp(e.get_kind()?)?,
            object: e.get_object(),
            arg0: e.get_arg0(),
            arg1: e.get_arg1(),
            result: e.get_result(),
            extra: e.get_extra(),
            data: if e.has_data() {
                e.get_data()?.to_vec()
            } else {
                Vec::new()
            },
        });
    }
    Ok(())
}
