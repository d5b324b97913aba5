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
    /// Report model and compute cost from the ledger
    Cost(runproof_ledger::cli::CostArgs),
    /// Run the egress proxy on loopback (HTTP CONNECT, plain HTTP, SOCKS5)
    Proxy(runproof_net::cli::ProxyArgs),
    /// Run the metered LLM gateway on loopback
    Gateway(runproof_net::cli::GatewayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Cost(a) => match runproof_ledger::cli::run_cost(&a) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("runproof cost: {e}");
                ExitCode::from(2)
            }
        },
        Command::Proxy(a) => match runproof_net::cli::run_proxy(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("runproof proxy: {e}");
                ExitCode::from(2)
            }
        },
        Command::Gateway(a) => match runproof_net::cli::run_gateway(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("runproof gateway: {e}");
                ExitCode::from(2)
            }
        },
    }
}
