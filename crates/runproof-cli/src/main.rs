//! The `runproof` binary: clap commands that wire the library crates together.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod overlay_cmd;

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
    /// Show what a `run --overlay UPPER_DIR` changed, as a git diff
    #[command(after_help = overlay_cmd::DIFF_HELP)]
    Diff(overlay_cmd::DiffArgs),
    /// Write what a `run --overlay UPPER_DIR` changed into the workspace
    #[command(after_help = overlay_cmd::APPLY_HELP)]
    Apply(overlay_cmd::ApplyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Diff(a) => overlay_cmd::diff(a),
        Command::Apply(a) => overlay_cmd::apply(a),
    }
}
