//! The `runproof` binary: clap commands that wire the library crates together.

mod bench;
mod cmd_demo;
mod cmd_run;
mod cmd_scan;
mod overlay_cmd;
mod task_net;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

const EXIT_CODES: &str = "\
Exit status of `runproof run`:
  N      the command's own exit status
  124    the --timeout passed and the command was killed
  125    the sandbox could not be set up, or the pre-run scan found high or
         critical issues (see --trust); the command did not run
  126    the command was found but could not be executed
  127    the command was not found inside the sandbox
  137    the memory limit killed the command
  152    the CPU-time limit killed the command
  128+S  the command was killed by signal S
Other commands: 0 success, 1 failure found (scan, verify), 2 usage or input error.";

#[derive(Parser)]
#[command(
    name = "runproof",
    version,
    about = "Run, scan and verify what AI coding agents do",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command in a sandbox: workspace writable, secrets hidden, no network.
    #[command(after_help = EXIT_CODES)]
    Run(Box<cmd_run::RunArgs>),
    /// Report what each enforcement layer can do on this kernel.
    Doctor(cmd_run::DoctorArgs),
    /// Run a bundled hostile build script in the sandbox and show what was contained.
    Demo,
    /// Show what a `run --overlay UPPER_DIR` changed, as a git diff
    #[command(after_help = overlay_cmd::DIFF_HELP)]
    Diff(overlay_cmd::DiffArgs),
    /// Write what a `run --overlay UPPER_DIR` changed into the workspace
    #[command(after_help = overlay_cmd::APPLY_HELP)]
    Apply(overlay_cmd::ApplyArgs),
    /// Build a workspace with no history after the task's base commit, or check one for leaks
    /// (exit 0 clean, 1 leaks found, 2 error)
    Prepare(runproof_integrity::cli::PrepareArgs),
    /// Label an agent run clean, retrieved or suspicious from its trajectory
    /// (exit 0 clean, 1 retrieved, 3 suspicious, 2 error)
    Audit(runproof_integrity::cli::AuditArgs),
    /// Grade one patch against one task (exit 0 resolved, 1 not resolved, 3 infrastructure failure).
    Verify(runproof_task::cli::VerifyArgs),
    /// Grade SWE-bench predictions in parallel, resumable (exit 0 when every instance was graded).
    Eval(runproof_task::cli::EvalArgs),
    /// Run an agent over a task suite: sandboxed, verified, audited for retrieval; scoreboard and HTML report.
    #[command(after_help = bench::BENCH_HELP)]
    Bench(Box<bench::BenchArgs>),
    /// Task-set tools.
    #[command(subcommand)]
    Task(runproof_task::cli::TaskCommand),
    /// Find what in a project would run code or steer an agent before anything runs.
    ///
    /// Exit status: 0 when no finding reaches --fail-on, 1 when one does,
    /// 2 on a usage or I/O error.
    Scan(cmd_scan::ScanArgs),
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
        Command::Run(args) => cmd_run::run(*args),
        Command::Doctor(args) => cmd_run::doctor(args),
        Command::Demo => cmd_demo::demo(),
        Command::Scan(args) => cmd_scan::run(args),
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
        Command::Diff(a) => overlay_cmd::diff(a),
        Command::Apply(a) => overlay_cmd::apply(a),
        Command::Prepare(args) => integrity(runproof_integrity::cli::run_prepare(
            &args,
            &mut std::io::stdout().lock(),
        )),
        Command::Audit(args) => integrity(runproof_integrity::cli::run_audit(
            &args,
            &mut std::io::stdout().lock(),
        )),
        Command::Verify(a) => match task_runner(&a.common) {
            Ok(r) => exit(runproof_task::cli::verify(&a, r)),
            Err(c) => c,
        },
        Command::Eval(a) => match task_runner(&a.common) {
            Ok(r) => exit(runproof_task::cli::eval(&a, r)),
            Err(c) => c,
        },
        Command::Bench(a) => bench::run(*a),
        Command::Task(c) => {
            let runproof_task::cli::TaskCommand::Validate(v) = &c;
            match task_runner(&v.common) {
                Ok(r) => exit(runproof_task::cli::task(&c, r)),
                Err(code) => code,
            }
        }
    }
}

fn integrity(result: Result<u8, runproof_integrity::error::Error>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("runproof: {e}");
            ExitCode::from(2)
        }
    }
}

/// The runner for verify/eval: every setup and test command in a fresh
/// sandbox; `repo_url` fetches and setup reach out only through the egress
/// proxy, to what `--allow` lists.
fn task_runner(
    c: &runproof_task::cli::CommonArgs,
) -> Result<std::sync::Arc<dyn runproof_task::TestRunner>, ExitCode> {
    let network = if c.allow.is_empty() {
        if !c.allow_address.is_empty() {
            eprintln!(
                "runproof: --allow-address needs --allow HOST (the hosts the proxy may reach)"
            );
            return Err(ExitCode::from(2));
        }
        None
    } else {
        match task_net::ProxyAccess::new(&c.allow, &c.allow_address) {
            Ok(p) => {
                Some(std::sync::Arc::new(p) as std::sync::Arc<dyn runproof_task::NetworkAccess>)
            }
            Err(e) => {
                eprintln!("runproof: {e}");
                return Err(ExitCode::from(2));
            }
        }
    };
    Ok(std::sync::Arc::new(runproof_task::SandboxRunner {
        network,
        ..Default::default()
    }))
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
