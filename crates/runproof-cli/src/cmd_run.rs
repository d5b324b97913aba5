//! `runproof run` and `runproof doctor`.

use clap::{Args, ValueEnum};
use runproof_sandbox::audit::{AuditLog, Event};
use runproof_sandbox::policy::NetworkMode;
use runproof_sandbox::policy::{ByteSize, Seconds};
use runproof_sandbox::{LayerState, Policy, RunSpec, SandboxError};
use std::ffi::OsString;
use std::path::PathBuf;
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

pub fn run(args: RunArgs) -> ExitCode {
    let policy = match policy_from(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("runproof: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(code) = prerun_scan(&policy, args.trust) {
        return code;
    }
    let mut spec = RunSpec::new(policy, args.command.clone());
    spec.audit = args.audit.clone();
    spec.overlay = args.overlay.clone();
    let gate: Arc<Mutex<Option<runproof_net::Gate>>> = Arc::default();
    if spec.policy.network.mode == NetworkMode::Proxy {
        if let Err(msg) = attach_proxy(&mut spec, &args, gate.clone()) {
            eprintln!("runproof: {msg}");
            eprintln!("runproof: the command did not run");
            return ExitCode::from(125);
        }
    } else if !args.allow.is_empty() {
        eprintln!("runproof: --allow needs --net proxy (the default network is loopback only)");
        return ExitCode::from(2);
    }
    let result = runproof_sandbox::run(spec);
    if let Some(g) = gate.lock().ok().and_then(|mut g| g.take()) {
        g.shutdown();
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
                eprintln!("runproof: timing: {}", phases.join(", "));
                for l in &out.layers {
                    eprintln!(
                        "runproof: {:<16} {:<11} {}",
                        l.layer,
                        format!("{:?}", l.state).to_lowercase(),
                        l.detail
                    );
                }
            }
            if out.exit.timed_out {
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

pub fn doctor(args: DoctorArgs) -> ExitCode {
    let layers = runproof_sandbox::doctor();
    let ok = !layers.iter().any(|l| {
        l.state == LayerState::Unavailable
            && (l.layer == "user namespace" || l.layer == "namespaces")
    });
    if args.format == Format::Json {
        println!(
            "{}",
            serde_json::json!({ "layers": layers, "sandbox_usable": ok })
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

/// Scan the workspace before anything runs in it. Returns the exit code when
/// the run must not start.
fn prerun_scan(policy: &Policy, trust: bool) -> Option<ExitCode> {
    use runproof_scan::{ScanOptions, Severity};
    // Check the workspace before reading it (never scan `/` or a home).
    let ws = match runproof_sandbox::resolve_workspace(policy) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("runproof: {e}");
            eprintln!("runproof: the command did not run");
            return Some(ExitCode::from(125));
        }
    };
    let report = match runproof_scan::scan(&ws, &ScanOptions::default()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runproof: pre-run scan failed: {e}");
            return Some(ExitCode::from(125));
        }
    };
    let serious: Vec<_> = report.at_least(Severity::High).collect();
    if serious.is_empty() {
        return None;
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
        return None;
    }
    eprintln!(
        "runproof: refusing to run: the pre-run scan found {} high or critical findings in {} (above); review them, then pass --trust to run anyway",
        serious.len(),
        ws.display()
    );
    Some(ExitCode::from(125))
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

/// Bind the proxy's port inside the sandbox and serve it from here once the
/// sandbox hands the listener over.
fn attach_proxy(
    spec: &mut RunSpec,
    args: &RunArgs,
    gate: Arc<Mutex<Option<runproof_net::Gate>>>,
) -> Result<(), String> {
    let net = &spec.policy.network;
    let mut rules: Vec<String> = net.allow.clone();
    rules.extend(net.deny.iter().map(|d| format!("!{d}")));
    let policy = runproof_net::EgressPolicy::from_rules(&rules)
        .map_err(|e| format!("network rule: {e}"))?
        .allow_private_addresses_for_tests(&args.allow_address);
    let policy = Arc::new(policy);
    // One audit log for the sandbox and the proxy.
    let log = match &args.audit {
        Some(p) => AuditLog::to_file(p, std::time::Instant::now())
            .map_err(|e| format!("create audit log {}: {e}", p.display()))?,
        None => AuditLog::disabled(std::time::Instant::now()),
    };
    let sink: Arc<dyn runproof_net::AuditSink> = Arc::new(ProxyAudit(log.clone()));
    spec.audit_log = Some(log);
    spec.listen_ports = vec![PROXY_PORT];
    spec.extra_env
        .extend(runproof_net::sandbox_env(Some(PROXY_PORT), None));
    spec.on_listeners = Some(Box::new(move |mut listeners| {
        let Some(l) = listeners.pop() else { return };
        match runproof_net::Gate::start(Some((l, policy, sink)), None) {
            Ok(g) => {
                if let Ok(mut slot) = gate.lock() {
                    *slot = Some(g);
                }
            }
            Err(e) => eprintln!("runproof: egress proxy failed to start: {e}"),
        }
    }));
    Ok(())
}
