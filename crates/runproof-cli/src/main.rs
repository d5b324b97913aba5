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
    /// Grade one patch against one task (exit 0 resolved, 1 not resolved, 3 infrastructure failure).
    Verify(runproof_task::cli::VerifyArgs),
    /// Grade SWE-bench predictions in parallel, resumable (exit 0 when every instance was graded).
    Eval(runproof_task::cli::EvalArgs),
    /// Task-set tools.
    #[command(subcommand)]
    Task(runproof_task::cli::TaskCommand),
}

/// The runner for verify/eval: direct (UNSANDBOXED) until the sandbox runner lands.
fn task_runner() -> std::sync::Arc<dyn runproof_task::TestRunner> {
    std::sync::Arc::new(runproof_task::DirectRunner)
}

fn exit(r: Result<i32, runproof_task::cli::CliError>) -> ExitCode {
    match r {
        Ok(c) => ExitCode::from(c as u8),
        Err(e) => {
            eprintln!("runproof: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify(a) => exit(runproof_task::cli::verify(&a, task_runner())),
        Command::Eval(a) => exit(runproof_task::cli::eval(&a, task_runner())),
        Command::Task(c) => exit(runproof_task::cli::task(&c, task_runner())),
    }
}
