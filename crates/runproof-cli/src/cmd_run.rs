//! `runproof run` and `runproof doctor`.

use crate::config::{Config, KeySource, Provider, UsdLimit};
use clap::{Args, ValueEnum};
use runproof_sandbox::audit::{AuditLog, Event};
use runproof_sandbox::policy::NetworkMode;
use runproof_sandbox::policy::{ByteSize, Seconds};
use runproof_sandbox::{LayerState, Policy, RunSpec, SandboxError};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum NetArg {
    None,
    Proxy,
}

/// Port of the egress proxy inside the sandbox (on its own loopback).
pub const PROXY_PORT: u16 = 3128;
/// Port of the LLM gateway inside the sandbox.
pub const GATEWAY_PORT: u16 = 4000;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Directory mounted read-write at its own path; the command starts there.
    #[arg(long, short = 'w', value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// TOML policy file; flags override it.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Wall-clock limit (90, 90s, 10m, 1h); exit status 124 when it passes.
    #[arg(long, value_name = "SECS")]
    timeout: Option<Seconds>,
    /// Memory limit for the whole sandbox (512M, 2G). Refuses to run if no cgroup can enforce it.
    #[arg(long, value_name = "SIZE")]
    memory: Option<ByteSize>,
    /// Maximum processes and threads at once. Refuses to run if no cgroup can enforce it.
    #[arg(long, value_name = "N")]
    pids: Option<u64>,
    /// CPU-time limit for the whole sandbox (all processes).
    #[arg(long, value_name = "SECS")]
    cpu: Option<Seconds>,
    /// Size of the private /tmp and home directory.
    #[arg(long, value_name = "SIZE")]
    tmp_size: Option<ByteSize>,
    /// Pass a variable: NAME takes the host's value, NAME=VALUE sets it. Credentials never pass unless the policy allows them.
    #[arg(long = "env", short = 'e', value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Make a host path visible read-only.
    #[arg(long = "ro", value_name = "PATH")]
    ro: Vec<PathBuf>,
    /// Make a host path visible read-write.
    #[arg(long = "rw", value_name = "PATH")]
    rw: Vec<PathBuf>,
    /// Hide a host path.
    #[arg(long = "deny", value_name = "PATH")]
    deny: Vec<PathBuf>,
    /// Write audit events (JSON lines) to FILE: start, every exec and connect, denials, exit.
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
    /// Copy-on-write workspace: changes go to UPPER_DIR, the workspace stays untouched.
    #[arg(long, value_name = "UPPER_DIR")]
    overlay: Option<PathBuf>,
    /// Network: `none` (loopback only, the default) or `proxy` (egress only
    /// through runproof's proxy, to the domains given with --allow).
    #[arg(long, value_enum)]
    net: Option<NetArg>,
    /// With --net proxy: allow a domain (example.com, *.example.com,
    /// example.com:443) or a preset (@pypi, @npm, @crates, @debian, @goproxy,
    /// @github). Prefix with ! to deny; deny wins.
    #[arg(long = "allow", value_name = "RULE")]
    allow: Vec<String>,
    /// With --net proxy: let the proxy connect to this loopback or private
    /// address (a local registry mirror or test server). Every other private,
    /// loopback, link-local and metadata address stays refused.
    #[arg(long = "allow-address", value_name = "IP")]
    allow_address: Vec<std::net::IpAddr>,
    /// Serve the metered LLM gateway inside the sandbox: OPENAI_BASE_URL and
    /// ANTHROPIC_BASE_URL point at it, and it adds the API keys on the host
    /// side (from runproof's own OPENAI_API_KEY / ANTHROPIC_API_KEY, or the
    /// key_env / key_file of the config). The config's budget_usd applies.
    #[arg(long)]
    gateway: bool,
    /// Upstream for OpenAI-compatible calls through the gateway (default:
    /// openai.base_url from the config, else https://api.openai.com).
    #[arg(long, value_name = "URL")]
    openai_base: Option<String>,
    /// Upstream for Anthropic calls through the gateway (default:
    /// anthropic.base_url from the config, else https://api.anthropic.com).
    #[arg(long, value_name = "URL")]
    anthropic_base: Option<String>,
    /// Budget in USD for the run (implies --gateway): model calls through the
    /// gateway plus the run's compute (CPU-seconds and memory, metered live
    /// at the config's [compute] prices). The run is stopped when it is
    /// spent (exit 124), also when it makes no model call.
    #[arg(long, value_name = "USD")]
    budget: Option<f64>,
    /// With the gateway: flag the run as a runaway loop once its model calls
    /// spend more than USD without any change in the workspace (with
    /// --overlay: in the upper layer), watched from the host; `off` turns
    /// the check off. Default: loop.max_usd_without_change from the config,
    /// else 2.00. The run is stopped only with loop.stop = true. Changes in
    /// build output, dependencies, caches and version control (node_modules,
    /// target, .git, .venv, __pycache__, ...) do not count; --verbose shows
    /// what was watched.
    #[arg(long, value_name = "USD|off")]
    max_usd_without_change: Option<UsdLimit>,
    /// Model prices in LiteLLM's model_prices_and_context_window.json format,
    /// on top of the bundled table (default: prices from the config).
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    /// Ledger database (default: ledger from the config, else
    /// ~/.local/share/runproof/ledger.db).
    #[arg(long, value_name = "FILE")]
    ledger: Option<PathBuf>,
    /// Record this metered run in the ledger as an attempt at task ID (a
    /// SWE-bench instance_id), so `runproof cost --by task` and the verdicts
    /// of `runproof eval` are joined to it.
    #[arg(long, value_name = "ID")]
    task: Option<String>,
    /// Record this metered run in the ledger as agent NAME (the
    /// model_name_or_path its predictions carry), so `runproof eval`'s
    /// verdicts on NAME's patch for --task are joined to it.
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Summary format printed on stderr when the run ends (json: the exit event).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Print which layers were enforced and how long each phase took.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Run even when the pre-run scan of the workspace finds something of
    /// high or critical severity (the findings are still printed).
    #[arg(long)]
    trust: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

fn policy_from(args: &RunArgs) -> Result<Policy, SandboxError> {
    let mut p = match &args.policy {
        Some(f) => Policy::load(f)?,
        None => Policy::default(),
    };
    if let Some(w) = &args.workspace {
        p.workspace = Some(w.clone());
    }
    if args.timeout.is_some() {
        p.limits.timeout = args.timeout;
    }
    if args.memory.is_some() || args.pids.is_some() {
        // Asked for explicitly: enforce it or do not run.
        p.limits.require_cgroup.get_or_insert(true);
    }
    if args.memory.is_some() {
        p.limits.memory = args.memory;
    }
    if args.pids.is_some() {
        p.limits.pids = args.pids;
    }
    if args.cpu.is_some() {
        p.limits.cpu = args.cpu;
    }
    if let Some(t) = args.tmp_size {
        p.limits.tmp_size = t;
    }
    if let Some(n) = args.net {
        p.network.mode = match n {
            NetArg::None => NetworkMode::None,
            NetArg::Proxy => NetworkMode::Proxy,
        };
    }
    for rule in &args.allow {
        match rule.strip_prefix('!') {
            Some(d) => p.network.deny.push(d.to_string()),
            None => p.network.allow.push(rule.clone()),
        }
    }
    p.env.pass.extend(args.env.iter().cloned());
    p.paths.read.extend(args.ro.iter().cloned());
    p.paths.write.extend(args.rw.iter().cloned());
    p.paths.deny.extend(args.deny.iter().cloned());
    Ok(p)
}

pub fn run(args: RunArgs, config: Option<&Path>) -> ExitCode {
    let policy = match policy_from(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("runproof: {e}");
            return ExitCode::from(2);
        }
    };
    let metered = args.gateway || args.budget.is_some();
    if !metered && (args.task.is_some() || args.agent.is_some()) {
        eprintln!(
            "runproof: --task and --agent label a metered run in the ledger; add --gateway or --budget USD"
        );
        return ExitCode::from(2);
    }
    if !metered && args.max_usd_without_change.is_some() {
        eprintln!(
            "runproof: --max-usd-without-change limits the model spend of a metered run; add --gateway or --budget USD"
        );
        return ExitCode::from(2);
    }
    let gateway = if metered {
        let setup = Config::load(config).and_then(|cfg| {
            GatewaySetup::resolve(
                &cfg,
                &GatewayFlags {
                    openai_base: args.openai_base.as_deref(),
                    anthropic_base: args.anthropic_base.as_deref(),
                    budget: args.budget,
                    prices: args.prices.as_deref(),
                    ledger: args.ledger.as_deref(),
                    max_usd_without_change: args.max_usd_without_change,
                },
            )
        });
        match setup {
            Ok(mut g) => {
                g.task = args.task.clone();
                g.agent = args.agent.clone();
                Some(g)
            }
            Err(e) => {
                eprintln!("runproof: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let gate_policy = policy.clone();
    let trust = args.trust;
    let mut spec = RunSpec::new(policy, args.command.clone());
    // The scan runs while the sandbox sets itself up; the command waits for
    // its verdict just before execve.
    spec.gate = Some(Box::new(move || prerun_scan(&gate_policy, trust)));
    spec.audit = args.audit.clone();
    spec.overlay = args.overlay.clone();
    let gate: Arc<Mutex<Option<runproof_net::Gate>>> = Arc::default();
    let proxy = spec.policy.network.mode == NetworkMode::Proxy;
    if !proxy && !args.allow.is_empty() {
        eprintln!("runproof: --allow needs --net proxy (the default network is loopback only)");
        return ExitCode::from(2);
    }
    let setup = NetSetup {
        audit: args.audit.as_deref(),
        allow_address: &args.allow_address,
        gateway,
    };
    let metering = match attach_network(&mut spec, &setup, gate.clone()) {
        Ok(m) => m,
        Err(msg) => {
            eprintln!("runproof: {msg}");
            eprintln!("runproof: the command did not run");
            return ExitCode::from(125);
        }
    };
    let before_sandbox = crate::STARTED.get().map(|t| t.elapsed());
    let mut result = runproof_sandbox::run(spec);
    if let Some(g) = gate.lock().ok().and_then(|mut g| g.take()) {
        g.shutdown();
    }
    if let (Some(m), Err(_)) = (&metering, &result) {
        m.not_run();
    }
    if let (Some(m), Ok(out)) = (&metering, &mut result) {
        eprintln!("runproof: {}", m.finish(out));
        if let Some(l) = m.change_detection() {
            // Incomplete coverage is said without --verbose too.
            if l.state == LayerState::Partial && !args.verbose {
                eprintln!("runproof: change detection: {}", l.detail);
            }
            out.layers.push(l);
        }
    }
    match result {
        Ok(out) => {
            for name in &out.refused_env {
                eprintln!(
                    "runproof: not passing {name}: it looks like a credential (allow it with env.allow_secrets in a policy file)"
                );
            }
            for p in &out.exit.restored {
                eprintln!(
                    "runproof: the command changed protected path {p}; the original was restored and the change moved to {}",
                    out.quarantine
                        .as_ref()
                        .map(|q| q.display().to_string())
                        .unwrap_or_default()
                );
            }
            if args.verbose {
                let phases: Vec<String> = out
                    .phases
                    .iter()
                    .map(|(n, d)| format!("{n} {:.1}ms", d.as_secs_f64() * 1e3))
                    .collect();
                eprintln!(
                    "runproof: timing: {}{}",
                    before_sandbox.map_or(String::new(), |d| format!(
                        "arguments and config {:.1}ms, ",
                        d.as_secs_f64() * 1e3
                    )),
                    phases.join(", ")
                );
                for l in &out.layers {
                    eprintln!(
                        "runproof: {:<16} {:<11} {}",
                        l.layer,
                        format!("{:?}", l.state).to_lowercase(),
                        l.detail
                    );
                }
            }
            if let Some(why) = &out.exit.stopped {
                eprintln!("runproof: stopped: {why}; the sandbox was killed");
            } else if out.exit.timed_out {
                eprintln!(
                    "runproof: timed out after {:.1}s; the sandbox was killed",
                    out.exit.wall_s
                );
            } else if out.exit.oom_killed {
                eprintln!("runproof: the memory limit was reached; the sandbox was killed");
            } else if out.exit.cpu_limit_exceeded {
                eprintln!("runproof: the CPU-time limit was reached; the sandbox was killed");
            }
            match args.format {
                Some(Format::Json) => {
                    let v = serde_json::json!({ "exit": out.exit, "layers": out.layers });
                    eprintln!("{v}");
                }
                Some(Format::Text) => eprintln!(
                    "runproof: exit {} in {:.2}s (user {:.2}s, system {:.2}s, peak memory {} via {})",
                    out.exit.exit_status,
                    out.exit.wall_s,
                    out.exit.user_cpu_s,
                    out.exit.system_cpu_s,
                    out.exit.peak_memory_bytes.map_or("?".into(), human),
                    out.exit.peak_memory_source
                ),
                None => {}
            }
            ExitCode::from(out.exit.exit_status.clamp(0, 255) as u8)
        }
        Err(e) => {
            eprintln!("runproof: {e}");
            eprintln!("runproof: the command did not run");
            ExitCode::from(125)
        }
    }
}

/// A label from the command line or a task file, safe to print on a
/// terminal: control characters dropped, at most `max` characters.
pub(crate) fn printable(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn human(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

pub fn doctor(args: DoctorArgs, config: Option<&Path>) -> ExitCode {
    let layers = runproof_sandbox::doctor();
    let cfg = Config::load(config);
    let ok = !layers.iter().any(|l| {
        l.state == LayerState::Unavailable
            && (l.layer == "user namespace" || l.layer == "namespaces")
    });
    if args.format == Format::Json {
        let c = match &cfg {
            Ok(c) => serde_json::json!({
                "file": c.file.as_ref().map(|f| f.0.display().to_string()),
                "detail": c.describe_file(),
            }),
            Err(e) => serde_json::json!({ "error": e }),
        };
        println!(
            "{}",
            serde_json::json!({ "layers": layers, "sandbox_usable": ok, "config": c })
        );
    } else {
        for l in &layers {
            let mark = match l.state {
                LayerState::Enforced => "ok  ",
                LayerState::Partial => "part",
                LayerState::Unavailable => "NO  ",
                LayerState::Off => "off ",
            };
            println!("[{mark}] {:<15} {}", l.layer, l.detail);
        }
        match &cfg {
            Ok(c) => println!(
                "[{}] {:<15} {} (`runproof config` shows every setting)",
                if c.file.is_some() { "ok  " } else { "off " },
                "config",
                c.describe_file()
            ),
            Err(e) => println!("[NO  ] {:<15} {e}", "config"),
        }
        println!(
            "{}",
            if ok {
                "runproof run will work on this machine."
            } else {
                "runproof run cannot work here: see the lines marked NO."
            }
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The pre-run scan of the workspace: `Err` (with the reason) refuses the
/// command. High and critical findings are printed either way.
fn prerun_scan(policy: &Policy, trust: bool) -> Result<(), String> {
    use runproof_scan::{ScanOptions, Severity};
    // Check the workspace before reading it (never scan `/` or a home).
    let ws = runproof_sandbox::resolve_workspace(policy).map_err(|e| e.to_string())?;
    let report = runproof_scan::scan(&ws, &ScanOptions::default())
        .map_err(|e| format!("pre-run scan failed: {e}"))?;
    let serious: Vec<_> = report.at_least(Severity::High).collect();
    if serious.is_empty() {
        return Ok(());
    }
    for f in &serious {
        eprintln!(
            "runproof: scan: {} {} {}:{}: {}",
            f.severity, f.rule, f.path, f.line, f.message
        );
        eprintln!("runproof: scan:     {}", f.evidence);
    }
    if trust {
        eprintln!(
            "runproof: {} high or critical scan findings in {}; running anyway (--trust)",
            serious.len(),
            ws.display()
        );
        return Ok(());
    }
    Err(format!(
        "refusing to run: the pre-run scan found {} high or critical findings in {} (above); review them, then pass --trust to run anyway",
        serious.len(),
        ws.display()
    ))
}

/// Forwards the proxy's events into the run's audit log.
struct ProxyAudit(AuditLog);

impl runproof_net::AuditSink for ProxyAudit {
    fn record(&self, event: &runproof_net::AuditEvent) {
        if let Ok(v) = serde_json::to_value(event) {
            self.0.record(&Event::Request(v));
        }
    }
}

/// Ends a metered run, whoever decides it (the gateway, the compute meter):
/// the message goes to the sandbox (`exit.stopped` in the audit log, the
/// `stopped:` line on stderr) and the reason's name ([`stop_reason`]) is
/// kept for the caller (bench's `stopped`). The first stop wins for both.
struct RunStop {
    signal: Arc<runproof_sandbox::StopSignal>,
    name: Mutex<Option<&'static str>>,
}

impl RunStop {
    fn stop(&self, reason: &runproof_net::StopReason, message: impl Into<String>) {
        let mut name = self.name.lock().unwrap_or_else(|e| e.into_inner());
        if name.is_none() {
            *name = Some(stop_reason(reason));
            self.signal.stop(message);
        }
    }
}

/// Compute of one run, charged against its budget as it accrues.
struct ComputeMeter {
    price: runproof_ledger::ComputePrice,
    budget: Arc<runproof_ledger::Budget>,
    stop: Arc<RunStop>,
    last: Option<std::time::Instant>,
    /// CPU-seconds so far (from the cgroup).
    cpu_s: f64,
    /// GiB-seconds so far: the memory high-water mark, per second.
    gib_s: f64,
    /// USD already charged to the budget.
    charged: f64,
    /// True once the cgroup gave a figure (the run is metered live).
    live: bool,
}

impl ComputeMeter {
    /// One supervisor tick: accrue, charge the difference, stop the run when
    /// tokens and compute together have spent the budget.
    fn tick(&mut self, stats: &runproof_sandbox::cgroup::Stats) {
        let now = std::time::Instant::now();
        let dt = self.last.map_or(0.0, |l| (now - l).as_secs_f64());
        self.last = Some(now);
        if let Some(ns) = stats.cpu_ns {
            self.cpu_s = self.cpu_s.max(ns as f64 / 1e9);
            self.live = true;
        }
        if let Some(peak) = stats.peak_memory {
            self.gib_s += peak as f64 / (1u64 << 30) as f64 * dt;
            self.live = true;
        }
        self.charge_to(self.price.cost(self.cpu_s, self.gib_s));
        if self.budget.is_exhausted() {
            let st = self.budget.status();
            self.stop.stop(
                &runproof_net::StopReason::BudgetExhausted,
                format!(
                    "budget exhausted: ${:.4} of ${:.4} spent, compute ${:.4} of it ({:.1} CPU-seconds)",
                    st.spent,
                    st.limit.unwrap_or(0.0),
                    self.charged,
                    self.cpu_s
                ),
            );
        }
    }

    /// Charge up to `cost` in total (never less than already charged).
    fn charge_to(&mut self, cost: f64) {
        if cost > self.charged {
            self.budget.charge(cost - self.charged);
            self.charged = cost;
        }
    }
}

/// The gateway's bookkeeping for one run.
pub(crate) struct Metering {
    run_id: String,
    task: Option<String>,
    agent: Option<String>,
    ledger_path: PathBuf,
    writer: runproof_ledger::LedgerWriter,
    budget: Arc<runproof_ledger::Budget>,
    compute: Arc<Mutex<ComputeMeter>>,
    stop: Arc<RunStop>,
    changes: Mutex<ChangeDetection>,
}

/// The workspace watcher of a metered run (with what it watches:
/// "workspace", "overlay upper layer"), and the layer that reports it.
struct ChangeDetection {
    watcher: Option<(&'static str, runproof_sandbox::watch::Watcher)>,
    layer: Option<runproof_sandbox::LayerStatus>,
}

impl Metering {
    /// The `change detection` layer: what was watched for the
    /// spend-without-change check and how completely. Stops the watcher
    /// (call it once the run has ended).
    pub(crate) fn change_detection(&self) -> Option<runproof_sandbox::LayerStatus> {
        let mut c = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((what, w)) = c.watcher.take() {
            let mut l = w.stop().layer();
            l.detail = format!("{what}: {}", l.detail);
            c.layer = Some(l);
        }
        c.layer.clone()
    }

    /// Record whether the run's patch was verified, for `runproof cost`'s
    /// cost per verified fix.
    pub(crate) fn record_verdict(&self, task: &str, outcome: &str, verified: bool) {
        let v = runproof_ledger::VerdictRecord {
            key: format!("run:{}", self.run_id),
            run_id: Some(self.run_id.clone()),
            task: Some(task.to_string()),
            agent: self.agent.clone(),
            source: "bench".into(),
            outcome: outcome.into(),
            verified,
            ts_ms: runproof_ledger::time::unix_ms(),
        };
        let res =
            runproof_ledger::Ledger::open(&self.ledger_path).and_then(|l| l.record_verdict(&v));
        if let Err(e) = res {
            eprintln!("runproof: could not record the verdict in the ledger: {e}");
        }
    }

    /// Why the run was stopped, by name (`budget_exhausted`,
    /// `runaway_loop`), when runproof stopped it.
    pub(crate) fn stop_reason(&self) -> Option<&'static str> {
        *self.stop.name.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spent so far: model calls, plus compute once `finish` ran.
    pub(crate) fn spent_usd(&self) -> f64 {
        self.budget.status().spent
    }

    /// Charge the run's compute (what the live meter has not charged yet)
    /// and close the run in the ledger. Returns the one-line summary of what
    /// the run spent, for the caller to print or keep.
    pub(crate) fn finish(&self, out: &runproof_sandbox::RunOutcome) -> String {
        let x = &out.exit;
        let mut m = self.compute.lock().unwrap_or_else(|e| e.into_inner());
        // The live figures, or rusage and the peak when there were none (or
        // they are behind the final ones: the last tick was up to 200 ms ago).
        let cpu = m.cpu_s.max(x.user_cpu_s + x.system_cpu_s);
        let mem_gib_s = m
            .gib_s
            .max(x.peak_memory_bytes.unwrap_or(0) as f64 / (1u64 << 30) as f64 * x.wall_s);
        let price = m.price;
        m.charge_to(price.cost(cpu, mem_gib_s));
        let cost = m.charged;
        let live = m.live;
        drop(m);
        if !live && self.budget.limit().is_some() {
            eprintln!(
                "runproof: compute was charged when the run ended, not live: no cgroup CPU accounting here (see the accounting layer with --verbose)"
            );
        }
        let _ = self.writer.flush();
        let now = runproof_ledger::time::unix_ms();
        let status = if x.stopped.is_some() {
            "stopped"
        } else if x.exit_status == 0 {
            "ok"
        } else {
            "failed"
        };
        match runproof_ledger::Ledger::open(&self.ledger_path) {
            Ok(l) => {
                let rec = runproof_ledger::ComputeRecord {
                    run_id: Some(self.run_id.clone()),
                    ts_ms: now,
                    cpu_seconds: cpu,
                    mem_gib_seconds: mem_gib_s,
                    cost_usd: cost,
                };
                if let Err(e) = l
                    .record_compute(&rec)
                    .and_then(|()| l.end_run(&self.run_id, status, now))
                {
                    eprintln!("runproof: could not record the run in the ledger: {e}");
                }
            }
            Err(e) => eprintln!("runproof: could not open the ledger: {e}"),
        }
        let st = self.budget.status();
        format!(
            "run {}{} spent ${:.4} (compute ${cost:.4}, {cpu:.1} CPU-seconds){}",
            self.run_id,
            self.task
                .as_deref()
                .map(|t| format!(" (task {})", printable(t, 200)))
                .unwrap_or_default(),
            st.spent,
            st.limit.map(|l| format!(" of ${l:.2}")).unwrap_or_default()
        )
    }

    /// The command never started (the set-up failed or the pre-run scan
    /// refused it): close the run in the ledger as `not_run`, so it is not
    /// left looking as if it were still going.
    pub(crate) fn not_run(&self) {
        let _ = self.writer.flush();
        let r = runproof_ledger::Ledger::open(&self.ledger_path)
            .and_then(|l| l.end_run(&self.run_id, "not_run", runproof_ledger::time::unix_ms()));
        if let Err(e) = r {
            eprintln!("runproof: could not record the run in the ledger: {e}");
        }
    }
}

/// The name a stop is reported under ([`Metering::stop_reason`]; bench's
/// `stopped` in the scoreboard). The audit log's `exit.stopped` holds the
/// message, which says the same in words.
pub(crate) fn stop_reason(r: &runproof_net::StopReason) -> &'static str {
    match r {
        runproof_net::StopReason::BudgetExhausted => "budget_exhausted",
        runproof_net::StopReason::RunawayLoop => "runaway_loop",
        runproof_net::StopReason::SpendWithoutChange => "spend_without_change",
    }
}

/// How `attach_network` should reach out of a sandbox.
pub(crate) struct NetSetup<'a> {
    /// The run's audit log file, shared by the sandbox, proxy and gateway.
    pub audit: Option<&'a Path>,
    /// Private addresses the proxy may connect to (`--allow-address`).
    pub allow_address: &'a [std::net::IpAddr],
    /// Serve the metered gateway too.
    pub gateway: Option<GatewaySetup>,
}

/// The metered gateway's settings for one run, flags over the config file.
#[derive(Clone, Debug)]
pub(crate) struct GatewaySetup {
    /// Refuse to start without an API key on the host (`run --gateway`,
    /// the default of `resolve`). Without it the gateway serves with no
    /// upstream: every model call is refused (and still audited and
    /// loop-checked), compute is metered (`bench`).
    pub require_upstream: bool,
    pub openai_base: String,
    pub anthropic_base: String,
    pub openai_key: KeySource,
    pub anthropic_key: KeySource,
    pub budget: Option<f64>,
    pub prices: Option<PathBuf>,
    pub ledger: PathBuf,
    pub compute: runproof_ledger::ComputePrice,
    pub loops: runproof_net::LoopPolicy,
    /// Ledger labels of the run (task instance id, agent name).
    pub task: Option<String>,
    pub agent: Option<String>,
}

/// The gateway flags a command was given.
pub(crate) struct GatewayFlags<'a> {
    pub openai_base: Option<&'a str>,
    pub anthropic_base: Option<&'a str>,
    pub budget: Option<f64>,
    pub prices: Option<&'a Path>,
    pub ledger: Option<&'a Path>,
    /// `--max-usd-without-change`.
    pub max_usd_without_change: Option<UsdLimit>,
}

impl GatewaySetup {
    pub(crate) fn resolve(cfg: &Config, f: &GatewayFlags) -> Result<GatewaySetup, String> {
        if let Some(b) = f.budget
            && !(b.is_finite() && b > 0.0)
        {
            return Err(format!("--budget {b} is not a positive amount of USD"));
        }
        Ok(GatewaySetup {
            require_upstream: true,
            openai_base: cfg.base_url(Provider::OpenAi, f.openai_base).0,
            anthropic_base: cfg.base_url(Provider::Anthropic, f.anthropic_base).0,
            openai_key: cfg.key(Provider::OpenAi).0,
            anthropic_key: cfg.key(Provider::Anthropic).0,
            budget: cfg.budget(f.budget).0,
            prices: cfg.prices(f.prices).0,
            ledger: cfg.ledger(f.ledger)?.0,
            compute: cfg.compute().0,
            loops: runproof_net::LoopPolicy {
                max_usd_without_change: cfg.max_usd_without_change(f.max_usd_without_change).0,
                ..cfg.loops().0
            },
            task: None,
            agent: None,
        })
    }

    /// The upstreams, with their keys read now. An error when a configured
    /// key file cannot be read, or when there is no key at all and the
    /// setup requires an upstream (`require_upstream`); without that
    /// requirement no key means no upstream (both `None`).
    pub(crate) fn upstreams(
        &self,
    ) -> Result<
        (
            Option<runproof_net::Upstream>,
            Option<runproof_net::Upstream>,
        ),
        String,
    > {
        let up = |base: &str, key: &KeySource| -> Result<_, String> {
            Ok(key.read()?.map(|api_key| runproof_net::Upstream {
                base_url: base.to_string(),
                api_key,
            }))
        };
        let openai = up(&self.openai_base, &self.openai_key)?;
        let anthropic = up(&self.anthropic_base, &self.anthropic_key)?;
        if self.require_upstream && openai.is_none() && anthropic.is_none() {
            return Err(format!(
                "the metered gateway needs an API key: set {} or {} in runproof's environment, or key_env / key_file in the config (the keys stay on the host; the sandbox never sees them)",
                self.openai_key.name(),
                self.anthropic_key.name()
            ));
        }
        Ok((openai, anthropic))
    }
}

/// Wire the egress proxy (policy network mode `proxy`) and the metered
/// gateway to listeners bound inside the sandbox, served from here once the
/// sandbox hands them over. Their events go into the run's audit log.
pub(crate) fn attach_network(
    spec: &mut RunSpec,
    setup: &NetSetup,
    gate: Arc<Mutex<Option<runproof_net::Gate>>>,
) -> Result<Option<Metering>, String> {
    let proxy = spec.policy.network.mode == NetworkMode::Proxy;
    let want_gateway = setup.gateway.is_some();
    if !proxy && !want_gateway {
        return Ok(None);
    }
    let log = match setup.audit {
        Some(p) => AuditLog::to_file(p, std::time::Instant::now())
            .map_err(|e| format!("create audit log {}: {e}", p.display()))?,
        None => AuditLog::disabled(std::time::Instant::now()),
    };
    let sink: Arc<dyn runproof_net::AuditSink> = Arc::new(ProxyAudit(log.clone()));
    spec.audit_log = Some(log);

    let egress = if proxy {
        let net = &spec.policy.network;
        let mut rules: Vec<String> = net.allow.clone();
        rules.extend(net.deny.iter().map(|d| format!("!{d}")));
        let policy = runproof_net::EgressPolicy::from_rules(&rules)
            .map_err(|e| format!("network rule: {e}"))?
            .allow_private_addresses_for_tests(setup.allow_address);
        spec.listen_ports.push(PROXY_PORT);
        Some(Arc::new(policy))
    } else {
        None
    };

    let mut metering = None;
    let gateway = if let Some(gw) = &setup.gateway {
        let (openai, anthropic) = gw.upstreams()?;
        let prices = runproof_ledger::PriceTable::bundled_with_file(gw.prices.as_deref())
            .map_err(|e| e.to_string())?;
        let ledger_path = gw.ledger.clone();
        let ledger = runproof_ledger::Ledger::open(&ledger_path)
            .map_err(|e| format!("ledger {}: {e}", ledger_path.display()))?;
        // Unique within the process too: bench starts runs in parallel.
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run_id = format!(
            "run-{}-{}-{}",
            runproof_ledger::time::unix_ms(),
            std::process::id(),
            RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        ledger
            .start_run(&runproof_ledger::RunRecord {
                id: run_id.clone(),
                task: gw.task.clone(),
                agent: gw.agent.clone(),
                started_ms: runproof_ledger::time::unix_ms(),
                budget_usd: gw.budget,
            })
            .map_err(|e| format!("ledger {}: {e}", ledger_path.display()))?;
        let writer = runproof_ledger::LedgerWriter::spawn(ledger);
        let budget = runproof_ledger::Budget::new(gw.budget);
        let signal = Arc::new(runproof_sandbox::StopSignal::default());
        spec.stop = Some(signal.clone());
        let stop = Arc::new(RunStop {
            signal,
            name: Mutex::new(None),
        });
        let compute = Arc::new(Mutex::new(ComputeMeter {
            price: gw.compute,
            budget: budget.clone(),
            stop: stop.clone(),
            last: None,
            cpu_s: 0.0,
            gib_s: 0.0,
            charged: 0.0,
            live: false,
        }));
        let meter = compute.clone();
        spec.on_tick = Some(Box::new(move |stats| {
            meter.lock().unwrap_or_else(|e| e.into_inner()).tick(stats);
        }));
        let mut loops = gw.loops;
        let gateway_cell: Arc<std::sync::OnceLock<runproof_net::Gateway>> = Arc::default();
        let changes = if loops.max_usd_without_change.is_some() {
            let cell = gateway_cell.clone();
            let c = watch_workspace(spec, setup.audit, &ledger_path, move || {
                if let Some(g) = cell.get() {
                    g.note_workspace_change();
                }
            });
            if c.watcher.is_none() {
                // Without change reports every spend would look like no progress.
                loops.max_usd_without_change = None;
                if let Some(l) = &c.layer {
                    eprintln!("runproof: change detection unavailable: {}", l.detail);
                }
            }
            c
        } else {
            ChangeDetection {
                watcher: None,
                layer: Some(runproof_sandbox::LayerStatus::new(
                    "change detection",
                    LayerState::Off,
                    "not needed: the spend-without-change check is off (loop.max_usd_without_change = false, or --max-usd-without-change off)",
                )),
            }
        };
        let (b, stop_loops, run_stop) = (budget.clone(), loops.stop, stop.clone());
        let on_stop = move |reason: runproof_net::StopReason| match reason {
            runproof_net::StopReason::BudgetExhausted => {
                let st = b.status();
                run_stop.stop(
                    &reason,
                    format!(
                        "budget exhausted: ${:.4} of ${:.4} spent (model calls and compute)",
                        st.spent,
                        st.limit.unwrap_or(0.0)
                    ),
                );
            }
            runproof_net::StopReason::RunawayLoop if stop_loops => {
                run_stop.stop(
                    &reason,
                    "runaway loop: near-identical model requests repeated (the loop policy says stop)",
                );
            }
            runproof_net::StopReason::SpendWithoutChange if stop_loops => {
                run_stop.stop(
                    &reason,
                    format!(
                        "runaway loop: over ${:.4} spent on model calls without any change in the workspace (loop.max_usd_without_change; the loop policy says stop)",
                        loops.max_usd_without_change.unwrap_or(0.0)
                    ),
                );
            }
            runproof_net::StopReason::RunawayLoop
            | runproof_net::StopReason::SpendWithoutChange => {}
        };
        let g = runproof_net::Gateway::new(runproof_net::GatewayConfig {
            openai,
            anthropic,
            run_id: Some(run_id.clone()),
            prices: Arc::new(prices),
            budget: budget.clone(),
            audit: sink.clone(),
            loops,
            on_stop: Some(Arc::new(on_stop)),
            ..runproof_net::GatewayConfig::new(writer.clone())
        })
        .map_err(|e| format!("gateway: {e}"))?;
        let _ = gateway_cell.set(g.clone());
        spec.listen_ports.push(GATEWAY_PORT);
        metering = Some(Metering {
            run_id,
            task: gw.task.clone(),
            agent: gw.agent.clone(),
            ledger_path,
            writer,
            budget,
            compute,
            stop,
            changes: Mutex::new(changes),
        });
        Some(g)
    } else {
        None
    };
    spec.extra_env.extend(runproof_net::sandbox_env(
        proxy.then_some(PROXY_PORT),
        want_gateway.then_some(GATEWAY_PORT),
    ));
    spec.on_listeners = Some(Box::new(move |listeners| {
        let mut it = listeners.into_iter();
        let p = egress.and_then(|policy| it.next().map(|l| (l, policy, sink)));
        let g = gateway.and_then(|g| it.next().map(|l| (l, g)));
        match runproof_net::Gate::start(p, g) {
            Ok(g) => {
                if let Ok(mut slot) = gate.lock() {
                    *slot = Some(g);
                }
            }
            Err(e) => eprintln!("runproof: egress proxy or gateway failed to start: {e}"),
        }
    }));
    Ok(metering)
}

/// Start watching what the sandboxed command changes, for the gateway's
/// spend-without-change check: the overlay's upper layer when there is
/// one (every change lands there), else the workspace. The files the host
/// writes there itself (the audit log, the ledger) are not the command's.
/// Never runs anything from the tree (see `runproof_sandbox::watch`).
fn watch_workspace(
    spec: &RunSpec,
    audit: Option<&Path>,
    ledger: &Path,
    on_change: impl Fn() + Send + 'static,
) -> ChangeDetection {
    let failed = |msg: String| ChangeDetection {
        watcher: None,
        layer: Some(runproof_sandbox::LayerStatus::new(
            "change detection",
            LayerState::Unavailable,
            format!("{msg}; the spend-without-change check is off for this run"),
        )),
    };
    let (what, root) = match &spec.overlay {
        Some(upper) => {
            // The sandbox creates it too; it must exist to be watched first.
            if let Err(e) = std::fs::create_dir_all(upper) {
                return failed(format!("create overlay dir {}: {e}", upper.display()));
            }
            ("overlay upper layer", upper.clone())
        }
        None => match runproof_sandbox::resolve_workspace(&spec.policy) {
            Ok(ws) => ("workspace", ws),
            Err(e) => return failed(e.to_string()),
        },
    };
    let mut ignore: Vec<PathBuf> = audit.map(Path::to_path_buf).into_iter().collect();
    ignore.push(ledger.to_path_buf());
    for side in ["-wal", "-shm", "-journal"] {
        let mut p = ledger.as_os_str().to_os_string();
        p.push(side);
        ignore.push(PathBuf::from(p));
    }
    let opts = runproof_sandbox::watch::WatchOptions {
        ignore_files: ignore,
        ..Default::default()
    };
    match runproof_sandbox::watch::Watcher::start(&root, opts, on_change) {
        Ok(w) => ChangeDetection {
            watcher: Some((what, w)),
            layer: None,
        },
        Err(e) => failed(e.to_string()),
    }
}
