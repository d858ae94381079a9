use clap::Parser;

/// reprise: record a multithreaded program's run, replay it until its failure reproduces.
#[derive(Parser)]
#[command(name = "reprise", version)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
