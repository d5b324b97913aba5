//! Standalone `runproof proxy` and `runproof gateway` commands (for testing
//! and for running the gate outside a sandbox). Both listen on loopback only.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use runproof_ledger::{Budget, Ledger, LedgerWriter, PriceTable};

use crate::audit::{AuditSink, JsonlAudit, NoAudit};
use crate::gateway::{Gateway, GatewayConfig, LoopPolicy, Upstream};
use crate::policy::EgressPolicy;

#[derive(Debug, thiserror::Error)]
pub enum NetCliError {
    #[error(
        "--listen {0}: only loopback addresses are served (an egress proxy or gateway on a public address would be open to anyone)"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--allow: {0}")]
    Rule(#[from] crate::policy::RuleError),
    #[error("cannot open audit log {path}: {source}")]
    Audit {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Gateway(#[from] crate::gateway::GatewayError),
    #[error(transparent)]
    Ledger(#[from] runproof_ledger::LedgerError),
    #[error(transparent)]
    Prices(#[from] runproof_ledger::PriceError),
    #[error(
        "no upstream configured: pass --openai-base and/or --anthropic-base, with the key in the environment variable named by --openai-key-env / --anthropic-key-env"
    )]
    NoUpstream,
    #[error("environment variable {0} (the API key for {1}) is not set or empty")]
    MissingKey(String, String),
    #[error("{0}")]
    KeyFile(String),
    #[error("--budget {0}: must be a positive number of USD")]
    BadBudget(f64),
    #[error("runtime: {0}")]
    Io(#[from] std::io::Error),
}

/// Run an egress proxy on loopback until interrupted.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:3128")]
    pub listen: SocketAddr,
    /// Allow rule: example.com, *.example.com, example.com:443, @pypi, @npm,
    /// @crates, @debian, @goproxy, @github; prefix with ! to deny.
    #[arg(long = "allow", value_name = "RULE")]
    pub allow: Vec<String>,
    /// Append audit events (JSON lines) to this file; stderr summary otherwise.
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
}

/// Run the metered LLM gateway on loopback until interrupted.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:4000")]
    pub listen: SocketAddr,
    /// OpenAI-compatible upstream, e.g. https://api.openai.com
    #[arg(long, value_name = "URL")]
    pub openai_base: Option<String>,
    /// Environment variable holding the OpenAI key (never pass keys as
    /// flags). Default: the config's openai.key_env, else OPENAI_API_KEY.
    #[arg(long, value_name = "VAR")]
    pub openai_key_env: Option<String>,
    /// File holding only the OpenAI key, instead of a variable.
    #[arg(long, value_name = "FILE", conflicts_with = "openai_key_env")]
    pub openai_key_file: Option<PathBuf>,
    /// Anthropic upstream, e.g. https://api.anthropic.com
    #[arg(long, value_name = "URL")]
    pub anthropic_base: Option<String>,
    /// Environment variable holding the Anthropic key. Default: the
    /// config's anthropic.key_env, else ANTHROPIC_API_KEY.
    #[arg(long, value_name = "VAR")]
    pub anthropic_key_env: Option<String>,
    /// File holding only the Anthropic key, instead of a variable.
    #[arg(long, value_name = "FILE", conflicts_with = "anthropic_key_env")]
    pub anthropic_key_file: Option<PathBuf>,
    /// Spending limit in USD for this gateway's run.
    #[arg(long, value_name = "USD")]
    pub budget: Option<f64>,
    /// Extra prices in LiteLLM model_prices_and_context_window.json format.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Ledger database (default: ~/.local/share/runproof/ledger.db).
    #[arg(long, value_name = "PATH")]
    pub ledger: Option<PathBuf>,
    /// Run id recorded with each request.
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// Append audit events (JSON lines) to this file.
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    /// Refuse traffic once near-identical requests repeat (runaway loop).
    #[arg(long)]
    pub stop_on_loop: bool,
    /// Loop detection window and threshold (from the config file).
    #[arg(skip)]
    pub loop_policy: LoopPolicy,
    /// Extra CA certificates (PEM) to trust for upstream TLS.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

fn bind_loopback(addr: SocketAddr) -> Result<TcpListener, NetCliError> {
    if !addr.ip().is_loopback() {
        return Err(NetCliError::NotLoopback(addr));
    }
    TcpListener::bind(addr).map_err(|source| NetCliError::Bind { addr, source })
}

fn audit_sink(path: &Option<PathBuf>) -> Result<Arc<dyn AuditSink>, NetCliError> {
    Ok(match path {
        Some(p) => Arc::new(JsonlAudit::create(p).map_err(|source| NetCliError::Audit {
            path: p.display().to_string(),
            source,
        })?),
        None => Arc::new(NoAudit),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, NetCliError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `runproof proxy`: blocks until Ctrl-C.
pub fn run_proxy(args: &ProxyArgs) -> Result<(), NetCliError> {
    let policy = EgressPolicy::from_rules(&args.allow)?;
    let listener = bind_loopback(args.listen)?;
    let audit = audit_sink(&args.audit)?;
    eprintln!(
        "runproof proxy listening on {} (HTTP CONNECT, plain HTTP, SOCKS5); {} allow rule(s)",
        args.listen,
        args.allow.len()
    );
    runtime()?.block_on(async move {
        tokio::select! {
            r = crate::proxy::serve(listener, Arc::new(policy), audit) => r.map_err(NetCliError::from),
            _ = interrupted() => Ok(()),
        }
    })
}

/// Ctrl-C (SIGINT) or SIGTERM: stop serving, then flush the ledger.
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn key(
    var: Option<&str>,
    file: Option<&std::path::Path>,
    default_var: &str,
    what: &str,
) -> Result<String, NetCliError> {
    if let Some(f) = file {
        return crate::gateway::read_key_file(f).map_err(NetCliError::KeyFile);
    }
    let var = var.unwrap_or(default_var);
    std::env::var(var)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| NetCliError::MissingKey(var.to_string(), what.to_string()))
}

/// `runproof gateway`: blocks until Ctrl-C.
pub fn run_gateway(args: &GatewayArgs) -> Result<(), NetCliError> {
    if args.openai_base.is_none() && args.anthropic_base.is_none() {
        return Err(NetCliError::NoUpstream);
    }
    if let Some(b) = args.budget
        && !(b.is_finite() && b > 0.0)
    {
        return Err(NetCliError::BadBudget(b));
    }
    let openai = match &args.openai_base {
        Some(u) => Some(Upstream {
            base_url: u.clone(),
            api_key: key(
                args.openai_key_env.as_deref(),
                args.openai_key_file.as_deref(),
                "OPENAI_API_KEY",
                u,
            )?,
        }),
        None => None,
    };
    let anthropic = match &args.anthropic_base {
        Some(u) => Some(Upstream {
            base_url: u.clone(),
            api_key: key(
                args.anthropic_key_env.as_deref(),
                args.anthropic_key_file.as_deref(),
                "ANTHROPIC_API_KEY",
                u,
            )?,
        }),
        None => None,
    };
    let prices = PriceTable::bundled_with_file(args.prices.as_deref())?;
    let ledger_path = match &args.ledger {
        Some(p) => p.clone(),
        None => runproof_ledger::default_path()?,
    };
    let ledger = Ledger::open(&ledger_path)?;
    if let Some(id) = &args.run_id {
        ledger.start_run(&runproof_ledger::RunRecord {
            id: id.clone(),
            task: None,
            agent: None,
            started_ms: runproof_ledger::time::unix_ms(),
            budget_usd: args.budget,
        })?;
    }
    let writer = LedgerWriter::spawn(ledger);
    let listener = bind_loopback(args.listen)?;
    let rt = runtime()?;
    let gateway = {
        let _guard = rt.enter();
        Gateway::new(GatewayConfig {
            openai,
            anthropic,
            run_id: args.run_id.clone(),
            prices: Arc::new(prices),
            budget: Budget::new(args.budget),
            ledger: writer.clone(),
            audit: audit_sink(&args.audit)?,
            loops: LoopPolicy {
                stop: args.stop_on_loop,
                ..args.loop_policy
            },
            max_body_bytes: 32 << 20,
            on_stop: None,
            extra_root_certs: match &args.ca_file {
                Some(p) => crate::gateway::load_pem_certs(p)?,
                None => Vec::new(),
            },
        })?
    };
    eprintln!(
        "runproof gateway listening on http://{} ; ledger {}",
        args.listen,
        ledger_path.display()
    );
    let r = rt.block_on(async move {
        tokio::select! {
            r = gateway.serve(listener) => r.map_err(NetCliError::from),
            _ = interrupted() => Ok(()),
        }
    });
    writer.flush()?;
    r
}
