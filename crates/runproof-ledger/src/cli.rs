//! `runproof cost`: arguments and entry point, called by the CLI crate.

use std::path::PathBuf;

use crate::report::{CostOptions, GroupBy, cost_report, render_text};
use crate::store::{Ledger, LedgerError, default_path};

/// Report what model calls and compute cost, from the ledger.
#[derive(Debug, Clone, clap::Args)]
pub struct CostArgs {
    /// Ledger database (default: ledger from the config, else
    /// ~/.local/share/runproof/ledger.db).
    #[arg(long, value_name = "PATH")]
    pub ledger: Option<PathBuf>,
    /// Only count requests, compute and verdicts since this time: an age
    /// (30m, 24h, 7d, 2w) or a UTC date (2026-01-31) or date-time
    /// (2026-01-31T12:00Z).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Group rows by model, run, task or agent. Each row shows its verified
    /// fixes and cost per verified fix (verdicts from bench, verify and eval).
    #[arg(long, value_name = "KEY", default_value = "model", value_parser = ["model", "run", "task", "agent"])]
    pub by: String,
    /// Output format.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
    /// A developer's hourly rate in USD, to compare the spend and the cost
    /// per verified fix against (default: developer_hourly_rate_usd from
    /// the config).
    #[arg(long, value_name = "USD")]
    pub hourly_rate: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("--since: {0}")]
    Since(String),
    #[error("--by: {0}")]
    By(String),
    #[error("--hourly-rate {0}: must be a positive amount of USD per hour, e.g. --hourly-rate 120")]
    Rate(f64),
    #[error(
        "no ledger at {0}: nothing has been recorded yet (run something through the gateway, or pass --ledger PATH)"
    )]
    Missing(String),
}

/// Run `runproof cost` and return what to print.
pub fn run_cost(args: &CostArgs) -> Result<String, CostError> {
    let path = match &args.ledger {
        Some(p) => p.clone(),
        None => default_path()?,
    };
    if !path.exists() {
        return Err(CostError::Missing(path.display().to_string()));
    }
    let since_ms = match &args.since {
        Some(s) => {
            Some(crate::time::parse_since(s, crate::time::unix_ms()).map_err(CostError::Since)?)
        }
        None => None,
    };
    let by: GroupBy = args.by.parse().map_err(CostError::By)?;
    if let Some(r) = args.hourly_rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(CostError::Rate(r));
    }
    let ledger = Ledger::open(&path)?;
    let report = cost_report(
        &ledger,
        &CostOptions {
            ledger: Some(path),
            since_ms,
            by,
            hourly_rate_usd: args.hourly_rate,
        },
    )?;
    Ok(if args.format == "json" {
        serde_json::to_string_pretty(&report).expect("report serialises") + "\n"
    } else {
        render_text(&report)
    })
}
