//! `runproof scan`: the pre-execution scanner's command line.

use runproof_scan::{Baseline, ScanOptions, Severity, render};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Sarif,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 nothing reaches --fail-on; 1 something does; 2 usage or I/O error.\n\
Baselines: write one with `runproof scan --format json > scan-baseline.json`, then pass --baseline scan-baseline.json so only new findings count."
)]
pub struct ScanArgs {
    /// Directory (or single file) to scan.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Exit 1 when a finding is at or above this severity (info, low, medium, high, critical).
    #[arg(long, default_value = "high", value_parser = parse_severity)]
    pub fail_on: Severity,
    /// Only print findings at or above this severity (the exit status still counts all).
    #[arg(long, default_value = "info", value_parser = parse_severity)]
    pub min_severity: Severity,
    /// Suppress findings listed in this earlier JSON (or SARIF) report.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// List every rule with its id, severity, what it looks for and why it matters, then exit.
    #[arg(long)]
    pub rules: bool,
    /// Skip node_modules, vendor, .venv, target and similar vendored trees.
    #[arg(long)]
    pub skip_vendored: bool,
    /// Read at most this many bytes of an ordinary file.
    #[arg(long, default_value_t = ScanOptions::default().max_file_bytes, value_name = "BYTES")]
    pub max_file_bytes: usize,
    /// Worker threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse()
        .map_err(|e: runproof_scan::ParseSeverityError| e.to_string())
}

fn color_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(s: &str) -> Result<(), std::io::Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

pub fn run(args: ScanArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("runproof scan: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_inner(args: ScanArgs) -> anyhow::Result<ExitCode> {
    if args.rules {
        let text = match args.format {
            Format::Json | Format::Sarif => render::rules_json(),
            Format::Text => render::rules_text(color_wanted()),
        };
        emit(&text)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.max_file_bytes == 0 {
        anyhow::bail!("--max-file-bytes must be at least 1");
    }
    // Load the baseline before scanning so a bad path fails fast.
    let baseline = args.baseline.as_deref().map(Baseline::load).transpose()?;
    let opts = ScanOptions {
        skip_vendored: args.skip_vendored,
        max_file_bytes: args.max_file_bytes,
        max_config_bytes: ScanOptions::default()
            .max_config_bytes
            .max(args.max_file_bytes),
        threads: args.threads,
    };
    let mut report = runproof_scan::scan(&args.path, &opts)?;
    if let Some(b) = &baseline {
        b.apply(&mut report);
        if let Some(file) = &args.baseline {
            runproof_scan::baseline::suppress_file(&mut report, &args.path, file);
        }
    }
    let failed = report.worst().is_some_and(|w| w >= args.fail_on);
    let mut shown = report.clone();
    shown.findings.retain(|f| f.severity >= args.min_severity);
    let text = match args.format {
        Format::Text => render::text(&shown, color_wanted()),
        Format::Json => render::json(&shown),
        Format::Sarif => render::sarif(&shown, env!("CARGO_PKG_VERSION")),
    };
    emit(&text)?;
    if failed && args.format == Format::Text {
        eprintln!(
            "runproof scan: findings at or above {} (--fail-on); review them, or record accepted ones with --format json > FILE and pass --baseline FILE",
            args.fail_on
        );
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
