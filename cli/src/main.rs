//! The `reprise` command.

mod cmd_bench;
mod cmd_debug;
mod cmd_eval;
mod cmd_record;
mod cmd_replay;
mod cmd_report;
mod cmd_traces;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// reprise records a multithreaded program's run cheaply, as a sketch, so that
/// a concurrency failure seen once can be reproduced later.
#[derive(Parser)]
#[command(name = "reprise", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Record(cmd_record::RecordArgs),
    Replay(cmd_replay::ReplayArgs),
    Report(cmd_report::ReportArgs),
    Debug(cmd_debug::DebugArgs),
    Ls(cmd_traces::LsArgs),
    Dump(cmd_traces::DumpArgs),
    Bench(cmd_bench::BenchArgs),
    Eval(cmd_eval::EvalArgs),
}

fn main() -> ExitCode {
    // `reprise debug -ex CMD`, as gdb spells it, is `--ex CMD`.
    let cli = Cli::parse_from(cmd_debug::rewrite_ex(std::env::args_os()));
    let result = match cli.command {
        Command::Record(a) => cmd_record::run(a),
        Command::Replay(a) => cmd_replay::run(a),
        Command::Report(a) => cmd_report::run(a),
        Command::Debug(a) => cmd_debug::run(a),
        Command::Ls(a) => cmd_traces::ls(a),
        Command::Dump(a) => cmd_traces::dump(a),
        Command::Eval(a) => cmd_eval::run(a),
        Command::Bench(a) => cmd_bench::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the outermost context and its causes.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                msg.push_str(": ");
                msg.push_str(&cause.to_string());
            }
            eprintln!("reprise: error: {msg}");
            ExitCode::from(2)
        }
    }
}
