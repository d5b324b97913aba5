//! The `runproof` binary: clap commands that wire the library crates together.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "runproof",
    version,
    about = "Run, scan and verify what AI coding agents do"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a workspace with no history after the task's base commit, or check one for leaks
    /// (exit 0 clean, 1 leaks found, 2 error)
    Prepare(runproof_integrity::cli::PrepareArgs),
    /// Label an agent run clean, retrieved or suspicious from its trajectory
    /// (exit 0 clean, 1 retrieved, 3 suspicious, 2 error)
    Audit(runproof_integrity::cli::AuditArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    let result = match &cli.command {
        Command::Prepare(args) => runproof_integrity::cli::run_prepare(args, &mut stdout),
        Command::Audit(args) => runproof_integrity::cli::run_audit(args, &mut stdout),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("runproof: {e}");
            ExitCode::from(2)
        }
    }
}
