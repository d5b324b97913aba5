//! The `runproof` binary: clap commands that wire the library crates together.

mod bench;
mod cmd_demo;
mod cmd_run;
mod cmd_scan;
mod cmd_serve;
mod config;
mod overlay_cmd;
mod task_net;
mod verdicts;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

const EXIT_CODES: &str = "\
Exit status of `runproof run`:
  N      the command's own exit status
  2      bad flags, policy file or configuration file; the command did not run
  124    the --timeout passed, the budget was spent (tokens and compute), or a
         runaway loop was flagged with loop.stop; the command was killed
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
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(clap::Args)]
struct Globals {
    /// Settings file (gateway upstreams and keys, prices, compute prices,
    /// budget, loop policy, ledger, hourly rate). Default: $RUNPROOF_CONFIG,
    /// else ~/.config/runproof/runproof.toml; never a file in the project.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
}

/// `runproof run ...` with only the `run` subcommand built. clap builds
/// every subcommand's arguments before it parses, which was half a
/// millisecond of each sandbox's start-up. Whatever this parser does not
/// take as a run (help, version, any error) goes to the full [`Cli`],
/// which parses it again and has the last word on the message.
#[derive(Parser)]
#[command(name = "runproof")]
struct RunOnly {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: RunCommand,
}

#[derive(Subcommand)]
enum RunCommand {
    Run(Box<cmd_run::RunArgs>),
}

fn parse() -> Cli {
    if std::env::args_os().nth(1).is_some_and(|a| a == "run") {
        if let Ok(RunOnly {
            globals,
            command: RunCommand::Run(args),
        }) = RunOnly::try_parse()
        {
            return Cli {
                globals,
                command: Command::Run(args),
            };
        }
    }
    Cli::parse()
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
    #[command(after_help = verdicts::VERIFY_HELP)]
    Verify(verdicts::VerifyCmd),
    /// Grade SWE-bench predictions in parallel, resumable (exit 0 when every instance was graded).
    #[command(after_help = verdicts::EVAL_HELP)]
    Eval(verdicts::EvalCmd),
    /// Run agents over a task suite and compare them: sandboxed, verified, audited for retrieval,
    /// metered; scoreboard and HTML report.
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
    /// Report model and compute cost from the ledger, and cost per verified fix
    Cost(runproof_ledger::cli::CostArgs),
    /// Show the settings in effect, where each comes from (flag, file,
    /// default) and which configuration file applied.
    #[command(after_help = config::CONFIG_HELP)]
    Config(ConfigArgs),
    /// Run the egress proxy on loopback (HTTP CONNECT, plain HTTP, SOCKS5)
    Proxy(runproof_net::cli::ProxyArgs),
    /// Run the metered LLM gateway on loopback
    Gateway(runproof_net::cli::GatewayArgs),
    /// Serve the HTTP API and dashboard: submit, list and cancel verification jobs, graded by
    /// local workers or, with --nats, by `runproof worker` processes on any host
    #[command(after_help = runproof_server::cli::SERVE_HELP)]
    Serve(Box<runproof_server::cli::ServeArgs>),
    /// Pull jobs from the NATS JetStream work queue and grade them in local sandboxes
    #[command(after_help = runproof_server::cli::WORKER_HELP)]
    Worker(runproof_server::cli::WorkerArgs),
}

#[derive(clap::Args)]
struct ConfigArgs {
    #[arg(long, value_enum, default_value = "text")]
    format: cmd_run::Format,
}

/// When `main` began, for `run --verbose`'s start-up timing.
pub(crate) static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn main() -> ExitCode {
    STARTED.get_or_init(std::time::Instant::now);
    let cli = parse();
    let config = cli.globals.config.as_deref();
    match cli.command {
        Command::Run(args) => cmd_run::run(*args, config),
        Command::Doctor(args) => cmd_run::doctor(args, config),
        Command::Demo => cmd_demo::demo(),
        Command::Scan(args) => cmd_scan::run(args),
        Command::Config(a) => show_config(&a, config),
        Command::Cost(mut a) => match config::Config::load(config).and_then(|c| {
            a.ledger = Some(c.ledger(a.ledger.as_deref())?.0);
            a.hourly_rate = c.hourly_rate(a.hourly_rate).0;
            runproof_ledger::cli::run_cost(&a).map_err(|e| e.to_string())
        }) {
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
        Command::Gateway(mut a) => match config::Config::load(config)
            .map(|c| apply_gateway_config(&c, &mut a))
            .and_then(|()| runproof_net::cli::run_gateway(&a).map_err(|e| e.to_string()))
        {
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
        Command::Verify(a) => match task_runner(&a.grade.common) {
            Ok(r) => exit(verdicts::verify(&a, config, r)),
            Err(c) => c,
        },
        Command::Eval(a) => match task_runner(&a.grade.common) {
            Ok(r) => exit(verdicts::eval(&a, config, r)),
            Err(c) => c,
        },
        Command::Bench(a) => bench::run(*a, config),
        Command::Task(c) => {
            let runproof_task::cli::TaskCommand::Validate(v) = &c;
            match task_runner(&v.common) {
                Ok(r) => exit(runproof_task::cli::task(&c, r)),
                Err(code) => code,
            }
        }
        Command::Serve(a) => cmd_serve::serve(*a, config),
        Command::Worker(a) => cmd_serve::worker(&a),
    }
}

/// `runproof config`: every setting in effect and where it came from.
fn show_config(a: &ConfigArgs, flag: Option<&std::path::Path>) -> ExitCode {
    let cfg = match config::Config::load(flag) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runproof config: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = cfg.effective();
    if a.format == cmd_run::Format::Json {
        let rows: Vec<_> = settings
            .iter()
            .map(|(k, v, s)| serde_json::json!({ "key": k, "value": v, "source": s }))
            .collect();
        let v = serde_json::json!({
            "file": cfg.file.as_ref().map(|f| f.0.display().to_string()),
            "file_origin": cfg.file.as_ref().map(|f| f.1),
            "detail": cfg.describe_file(),
            "settings": rows,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("config file: {}", cfg.describe_file());
        println!("(a runproof.toml in a project or the current directory is never read)");
        for (k, v, s) in &settings {
            println!(
                "{k:<28} {:<8} {}",
                s.to_string(),
                cmd_run::printable(v, 300)
            );
        }
    }
    ExitCode::SUCCESS
}

/// `runproof gateway`: the config fills what the flags leave unset.
fn apply_gateway_config(c: &config::Config, a: &mut runproof_net::cli::GatewayArgs) {
    use config::{KeySource, Provider};
    for (p, base, env, file) in [
        (
            Provider::OpenAi,
            &mut a.openai_base,
            &mut a.openai_key_env,
            &mut a.openai_key_file,
        ),
        (
            Provider::Anthropic,
            &mut a.anthropic_base,
            &mut a.anthropic_key_env,
            &mut a.anthropic_key_file,
        ),
    ] {
        if base.is_none() && c.has_base_url(p) {
            *base = Some(c.base_url(p, None).0);
        }
        if env.is_none() && file.is_none() {
            match c.key(p).0 {
                KeySource::Env(v) => *env = Some(v),
                KeySource::File(f) => *file = Some(f),
            }
        }
    }
    a.budget = c.budget(a.budget).0;
    a.prices = c.prices(a.prices.as_deref()).0;
    if a.ledger.is_none() {
        a.ledger = c.ledger(None).ok().map(|l| l.0);
    }
    let (loops, _) = c.loops();
    a.stop_on_loop |= loops.stop;
    // A standalone gateway sees no workspace, so nothing reports a change:
    // spend-without-change would flag every run that spends.
    a.loop_policy = runproof_net::LoopPolicy {
        max_usd_without_change: None,
        ..loops
    };
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
    let network = task_net::network(&c.net).map_err(|e| {
        eprintln!("runproof: {e}");
        ExitCode::from(2)
    })?;
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
