//! `runproof bench`: run one or more agents over a task suite, each run in
//! its own sandbox on a leak-free workspace, then verify and audit what it did,
//! and compare the agents in one report.
//!
//! Per (agent, task): `prepare` (no future history) → agent in the sandbox
//! with a copy-on-write layer, network only through the egress proxy (package
//! registries by default) and the metered model gateway, one audit log for
//! the sandbox, the proxy and the gateway → the patch from the layer →
//! `Harness::grade` in fresh sandboxes → `audit` of the log → one scoreboard
//! row. Agent commands are split on whitespace ([`suite`]) and never given to
//! a host shell.

mod report;
mod suite;

use clap::{Args, ValueEnum};
use runproof_integrity::audit::{AuditOptions, Rule, Strength, audit};
use runproof_integrity::prepare::{PrepareOptions, prepare};
use runproof_integrity::trajectory;
use runproof_sandbox::overlay::{DiffOptions, diff_to_vec};
use runproof_sandbox::policy::{NetworkMode, Seconds};
use runproof_sandbox::{Policy, RunSpec, Stdio};
use runproof_task::{EnvCache, Harness, PatchChoice, SandboxRunner};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use report::Row;
use suite::Agent;

/// Most bytes of the agent's output kept (the rest is counted, not stored).
const MAX_AGENT_LOG: usize = 256 * 1024;
/// Longest line read from the tasks file.
const MAX_TASKS_BYTES: u64 = 256 * 1024 * 1024;
/// What every agent may reach through the proxy unless `--allow` widens it.
pub const DEFAULT_ALLOW: [&str; 3] = ["@pypi", "@npm", "@crates"];
/// Marks an `--out` directory as bench's, so a later run may replace it.
const MARKER: &str = ".runproof-bench";

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub const BENCH_HELP: &str = "\
Agents: --agent [NAME=]COMMAND (repeatable) and/or --agents FILE, a TOML
suite of [[agent]] tables with the keys name, command, and optionally
description, allow (network rules added for it), timeout (seconds), budget
(USD) and instances (only these tasks):

  [[agent]]
  name = \"reasoner\"
  command = \"sh reasoner {workspace} {task_file}\"

A command is split on whitespace (no shell on the host); {workspace} and
{task_file} are replaced by the prepared workspace and a JSON file with
instance_id, repo, base_commit and problem_statement (never the reference fix
or the tests). Regular files the command names (relative to the current
directory, or to the suite file's directory) are made visible read-only.

Network: each run reaches only the package registries (@pypi @npm @crates)
through the egress proxy and model APIs through the metered gateway on
127.0.0.1:4000 (OPENAI_BASE_URL, ANTHROPIC_BASE_URL). The gateway forwards
with the host's API key (runproof's own OPENAI_API_KEY / ANTHROPIC_API_KEY,
or key_env / key_file in runproof.toml, see runproof config), which stays on
the host; without one it has no upstream and refuses model calls (--gateway
refuses to start instead). --allow RULE widens the proxy for every agent
(allow in the suite for one agent; !RULE denies); the report says which
network each run had.

Runaway loops: a run that repeats the same model call (loop.threshold
near-identical calls among its last loop.window, 6 of 20 by default) is
stopped as a runaway loop, also when no upstream serves the calls; so is a
run whose model calls spend more than loop.max_usd_without_change ($2.00 by
default, --max-usd-without-change) without any change in its copy-on-write
layer (watched from the host; changes under node_modules, target, .git,
.venv, __pycache__ and other build, dependency and cache directories do not
count). Unlike runproof run, which only flags a loop unless loop.stop =
true, bench stops one unless the config sets loop.stop = false: a run that
loops is a wasted run.

Cost: every run is metered, its compute (live, at the config's [compute]
prices) and its model calls, against its budget (the suite's, else --budget,
else the config's budget_usd; none: accounted, not capped), and stopped when
that is spent. Each run is recorded in the ledger (--ledger, default the
config's, else ~/.local/share/runproof/ledger.db) labelled with its instance
id and agent name, with its verdict, so `runproof cost --by agent` or
`--by task` reports the cost per verified fix.

Writes OUT/<agent>/<instance>/{workspace,layer,audit.jsonl,agent.log,
patch.diff,verify/,audit_report.json,cost.txt}, OUT/scoreboard.json,
OUT/scoreboard.txt and OUT/report.html (self-contained: open it from disk).
An OUT written by an earlier bench run is replaced.

Exit status: 0 when every run finished (whatever the verdicts), 1 when some
run had an infrastructure failure, 2 on a usage or input error.";

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Tasks (SWE-bench JSONL or JSON array, with repo_path and base_commit).
    #[arg(long, value_name = "TASKS.jsonl")]
    tasks: PathBuf,
    /// An agent: its command, optionally named, e.g.
    /// 'reasoner=sh examples/agents/reasoner {workspace} {task_file}' (repeatable).
    #[arg(long = "agent", value_name = "[NAME=]COMMAND")]
    agents: Vec<String>,
    /// A TOML suite of agents to compare (see below).
    #[arg(long = "agents", value_name = "FILE")]
    suite: Option<PathBuf>,
    /// Name of a single --agent in the report (default: its command up to the first placeholder).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Only these instance ids (repeatable).
    #[arg(long = "instance", value_name = "ID")]
    instances: Vec<String>,
    /// Runs at once.
    #[arg(long, default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// Let every agent also reach a domain or preset through the proxy
    /// (see `run --allow`); !RULE denies.
    #[arg(long = "allow", value_name = "RULE")]
    allow: Vec<String>,
    /// Let the proxy connect to this loopback or private address (a local test server).
    #[arg(long = "allow-address", value_name = "IP")]
    allow_address: Vec<std::net::IpAddr>,
    /// Wall-clock limit for each agent run, in seconds (a suite's timeout wins).
    #[arg(long, default_value_t = 600.0, value_name = "SECS")]
    timeout: f64,
    /// Spending cap in USD for each agent run, tokens and compute (a
    /// suite's budget wins; default: the config's budget_usd): the run is
    /// stopped when the cap is spent.
    #[arg(long, value_name = "USD")]
    budget: Option<f64>,
    /// Stop a run as a runaway loop once its model calls spend more than
    /// USD without any change in its copy-on-write layer; `off` turns the
    /// check off (default: loop.max_usd_without_change from the config,
    /// else 2.00; see below).
    #[arg(long, value_name = "USD|off")]
    max_usd_without_change: Option<crate::config::UsdLimit>,
    /// Require a model upstream: refuse to start when the host has no API
    /// key (without --gateway, bench runs with no upstream then, every model
    /// call refused). Every run is metered either way.
    #[arg(long)]
    gateway: bool,
    /// Upstream for OpenAI-compatible calls through the gateway (default:
    /// from the config, else https://api.openai.com).
    #[arg(long, value_name = "URL")]
    openai_base: Option<String>,
    /// Upstream for Anthropic calls through the gateway (default: from the
    /// config, else https://api.anthropic.com).
    #[arg(long, value_name = "URL")]
    anthropic_base: Option<String>,
    /// Model prices (LiteLLM format) on top of the bundled table (default:
    /// from the config).
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    /// Ledger database (default: from the config, else
    /// ~/.local/share/runproof/ledger.db).
    #[arg(long, value_name = "FILE")]
    ledger: Option<PathBuf>,
    /// Output directory: new, empty, or written by an earlier bench run (replaced).
    #[arg(long, default_value = "runproof-bench", value_name = "DIR")]
    out: PathBuf,
    /// What to print on stdout at the end.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// One task as bench needs it: the grader's view and the auditor's view.
struct BenchTask {
    grade: runproof_task::Task,
    integrity: runproof_integrity::task::Task,
}

pub fn run(args: BenchArgs, config: Option<&Path>) -> ExitCode {
    match run_inner(&args, config) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("runproof bench: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Every agent of the command line, checked: names unique (also as directory names).
fn agents_of(args: &BenchArgs) -> Result<Vec<Agent>, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    let mut agents = suite::from_flags(&args.agents, args.name.as_deref(), &cwd)?;
    if let Some(f) = &args.suite {
        if args.name.is_some() {
            return Err(
                "--name names a single --agent; agents in an --agents file have their own names"
                    .into(),
            );
        }
        agents.extend(suite::from_file(f)?);
    }
    if agents.is_empty() {
        return Err("no agent to run: give --agent '[NAME=]COMMAND {workspace} {task_file}' or --agents FILE (see runproof bench --help)".into());
    }
    for (i, a) in agents.iter().enumerate() {
        if let Some(b) = agents[..i].iter().find(|b| b.name == a.name) {
            return Err(format!(
                "two agents are named {:?} ({} and {}); give each a distinct name",
                a.name, b.origin, a.origin
            ));
        }
        if let Some(b) = agents[..i]
            .iter()
            .find(|b| safe_name(&b.name) == safe_name(&a.name))
        {
            return Err(format!(
                "agents {:?} ({}) and {:?} ({}) would share the output directory {}; rename one",
                b.name,
                b.origin,
                a.name,
                a.origin,
                safe_name(&a.name)
            ));
        }
    }
    Ok(agents)
}

fn check_rules(rules: &[String], what: &str) -> Result<(), String> {
    runproof_net::EgressPolicy::from_rules(rules)
        .map(|_| ())
        .map_err(|e| format!("{what}: {e}"))
}

/// Empty `out` for this run: it must be new, empty, or an earlier bench's
/// output (whose results are removed; the verifier's cache is kept).
fn claim_out(out: &Path) -> Result<(), String> {
    let entries: Vec<_> = std::fs::read_dir(out)
        .map_err(|e| format!("--out {}: {e}", out.display()))?
        .flatten()
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    if !out.join(MARKER).is_file() {
        return Err(format!(
            "--out {} is not empty and was not written by runproof bench; pass a new or empty directory",
            out.display()
        ));
    }
    eprintln!(
        "runproof bench: replacing the results of an earlier run in {}",
        out.display()
    );
    for e in entries {
        let name = e.file_name();
        if name == ".cache" || name == MARKER {
            continue;
        }
        let p = e.path();
        let res = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        };
        res.map_err(|err| {
            format!(
                "cannot remove the earlier result {}: {err}; remove it or pass another --out",
                p.display()
            )
        })?;
    }
    Ok(())
}

fn run_inner(args: &BenchArgs, config: Option<&Path>) -> Result<ExitCode, String> {
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        return Err(format!(
            "--timeout {} must be a positive number of seconds",
            args.timeout
        ));
    }
    let agents = agents_of(args)?;
    check_rules(&args.allow, "--allow")?;
    for a in &agents {
        check_rules(&a.allow, &a.origin)?;
    }
    let tasks_path = args
        .tasks
        .canonicalize()
        .map_err(|e| format!("--tasks {}: {e}", args.tasks.display()))?;
    let tasks = load(&tasks_path, &args.instances)?;
    for (i, t) in tasks.iter().enumerate() {
        let id = &t.grade.instance_id;
        if let Some(o) = tasks[..i]
            .iter()
            .find(|o| safe_name(&o.grade.instance_id) == safe_name(id))
        {
            return Err(format!(
                "{}: instance ids {:?} and {:?} would share the output directory {}",
                tasks_path.display(),
                report::bound(&o.grade.instance_id, 100),
                report::bound(id, 100),
                safe_name(id)
            ));
        }
    }
    // (agent, task) pairs, task by task.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for a in &agents {
        for want in &a.instances {
            if !tasks.iter().any(|t| &t.grade.instance_id == want) {
                return Err(format!(
                    "{}: instance {want:?} is not among the tasks to run",
                    a.origin
                ));
            }
        }
    }
    for (ti, t) in tasks.iter().enumerate() {
        for (ai, a) in agents.iter().enumerate() {
            if a.instances.is_empty() || a.instances.contains(&t.grade.instance_id) {
                runs.push((ai, ti));
            }
        }
    }
    // Every run is metered; the labels and the budget are set per run.
    let cfg = crate::config::Config::load(config)?;
    let mut gateway = crate::cmd_run::GatewaySetup::resolve(
        &cfg,
        &crate::cmd_run::GatewayFlags {
            openai_base: args.openai_base.as_deref(),
            anthropic_base: args.anthropic_base.as_deref(),
            budget: args.budget,
            prices: args.prices.as_deref(),
            ledger: args.ledger.as_deref(),
            max_usd_without_change: args.max_usd_without_change,
        },
    )?;
    gateway.require_upstream = args.gateway;
    gateway.loops = runproof_net::LoopPolicy {
        max_usd_without_change: gateway.loops.max_usd_without_change,
        ..cfg.loops_with_default_stop(true).0
    };
    // Reads the keys once: a missing or unreadable one is refused now
    // rather than once per run.
    let upstream = upstream_desc(&gateway)?;
    // Open (and create) the ledger once before runs open it in parallel,
    // and find a broken one before any agent runs.
    runproof_ledger::Ledger::open(&gateway.ledger)
        .map_err(|e| format!("ledger {}: {e}", gateway.ledger.display()))?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create --out {}: {e}", args.out.display()))?;
    let out = args
        .out
        .canonicalize()
        .map_err(|e| format!("--out {}: {e}", args.out.display()))?;
    claim_out(&out)?;
    std::fs::write(
        out.join(MARKER),
        "written by runproof bench; the next bench run with this --out replaces this directory's results\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", out.join(MARKER).display()))?;
    let harness = Harness {
        runner: Arc::new(SandboxRunner::default()),
        workspaces: Arc::new(EnvCache::new(out.join(".cache"))),
        reruns: 0,
        keep_workspaces: false,
    };
    let ctx = Ctx {
        gateway,
        allow: args.allow.clone(),
        allow_address: args.allow_address.clone(),
        timeout: args.timeout,
        out: out.clone(),
        harness,
    };
    let infos: Vec<report::AgentInfo> = agents
        .iter()
        .map(|a| report::AgentInfo {
            name: a.name.clone(),
            command: report::bound(&a.command, 500),
            description: a.description.clone(),
            network: ctx.network_of(a),
        })
        .collect();
    let default_network = network_desc(&args.allow, &upstream);
    let t0 = Instant::now();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let rows: Mutex<Vec<(usize, Row)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..args.jobs.clamp(1, 64).min(runs.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&(ai, ti)) = runs.get(i) else { break };
                    let row = ctx.one(&agents[ai], &tasks[ti]);
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    eprintln!(
                        "runproof bench: [{n}/{}] {} on {}: {} ({:.1}s)",
                        runs.len(),
                        report::bound(&row.agent, 40),
                        report::bound(&row.instance_id, 60),
                        row.summary(),
                        row.wall_s
                    );
                    if let Ok(mut r) = rows.lock() {
                        r.push((i, row));
                    }
                }
            });
        }
    });
    let mut rows = rows.into_inner().unwrap_or_default();
    // Agent by agent, tasks in file order.
    rows.sort_by_key(|(i, _)| (runs[*i].0, runs[*i].1));
    let rows: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
    let board = report::Scoreboard::new(
        infos,
        tasks.iter().map(|t| t.grade.instance_id.clone()).collect(),
        rows,
        t0.elapsed().as_secs_f64(),
        &default_network,
    );
    let json = serde_json::to_string_pretty(&board.to_json()).unwrap_or_default();
    let text = board.to_text();
    for (name, body) in [
        ("scoreboard.json", json.as_str()),
        ("scoreboard.txt", text.as_str()),
        ("report.html", board.to_html().as_str()),
    ] {
        std::fs::write(out.join(name), body)
            .map_err(|e| format!("cannot write {}: {e}", out.join(name).display()))?;
    }
    match args.format {
        Format::Text => print!("{text}"),
        Format::Json => println!("{json}"),
    }
    eprintln!(
        "runproof bench: report in {}",
        out.join("report.html").display()
    );
    Ok(if board.infrastructure() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Where the gateway sends model calls, in words; an error when it needs
/// an upstream and has none, or a configured key file cannot be read.
fn upstream_desc(g: &crate::cmd_run::GatewaySetup) -> Result<String, String> {
    let (openai, anthropic) = g.upstreams()?;
    let mut ups = Vec::new();
    if let Some(u) = openai {
        ups.push(format!("OpenAI API at {}", u.base_url));
    }
    if let Some(u) = anthropic {
        ups.push(format!("Anthropic API at {}", u.base_url));
    }
    Ok(if ups.is_empty() {
        format!(
            "no upstream: no API key on the host ({} or {}), so model calls are refused",
            g.openai_key.name(),
            g.anthropic_key.name()
        )
    } else {
        ups.join(" and ")
    })
}

/// The network of a run with these rules beyond the defaults, in short:
/// what the proxy lets through, and the gateway.
fn network_of_rules(extra: &[String]) -> String {
    let mut rules: Vec<&str> = DEFAULT_ALLOW.to_vec();
    rules.extend(extra.iter().map(String::as_str));
    report::bound(&format!("{} + model gateway", rules.join(" ")), 600)
}

/// The network every run has unless widened, in words.
fn network_desc(extra: &[String], upstream: &str) -> String {
    report::bound(
        &format!(
            "the egress proxy lets through only {} (package registries{}); model calls go through the metered gateway ({upstream})",
            std::iter::once(DEFAULT_ALLOW.join(" "))
                .chain(extra.iter().cloned())
                .collect::<Vec<_>>()
                .join(" "),
            if extra.is_empty() {
                ""
            } else {
                " and what --allow adds"
            }
        ),
        800,
    )
}

/// A directory name for an agent name or instance id (hostile).
fn safe_name(id: &str) -> String {
    let s: String = id
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

fn load(path: &Path, only: &[String]) -> Result<Vec<BenchTask>, String> {
    let grade = runproof_task::load_tasks(path).map_err(|e| e.to_string())?;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_TASKS_BYTES {
        return Err(format!(
            "{} is {} bytes; the limit is {MAX_TASKS_BYTES}",
            path.display(),
            meta.len()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let values: Vec<serde_json::Value> = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Array(a)) => a,
        Ok(v @ serde_json::Value::Object(_)) => vec![v],
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for g in grade {
        if !only.is_empty() && !only.contains(&g.instance_id) {
            continue;
        }
        let v = values
            .iter()
            .find(|v| v.get("instance_id").and_then(|x| x.as_str()) == Some(&g.instance_id))
            .cloned()
            .unwrap_or_default();
        let mut it: runproof_integrity::task::Task = serde_json::from_value(v)
            .map_err(|e| format!("{}: task {}: {e}", path.display(), g.instance_id))?;
        if let Some(rp) = &it.repo_path
            && rp.is_relative()
        {
            it.repo_path = Some(dir.join(rp));
        }
        if let runproof_task::RepoSource::Path(p) = &g.source {
            it.repo_path = Some(p.clone());
        }
        out.push(BenchTask {
            grade: g,
            integrity: it,
        });
    }
    if out.is_empty() {
        return Err(format!(
            "no tasks to run in {} (check --instance)",
            path.display()
        ));
    }
    Ok(out)
}

struct Ctx {
    /// The metered gateway of every run (each run adds its labels, and an
    /// agent's own budget wins).
    gateway: crate::cmd_run::GatewaySetup,
    /// `--allow`, for every agent.
    allow: Vec<String>,
    allow_address: Vec<std::net::IpAddr>,
    timeout: f64,
    out: PathBuf,
    harness: Harness,
}

impl Ctx {
    /// Network rules for `agent`'s runs beyond the defaults.
    fn extra_rules(&self, agent: &Agent) -> Vec<String> {
        let mut r = self.allow.clone();
        for a in &agent.allow {
            if !r.contains(a) {
                r.push(a.clone());
            }
        }
        r
    }

    fn network_of(&self, agent: &Agent) -> String {
        network_of_rules(&self.extra_rules(agent))
    }

    fn one(&self, agent: &Agent, t: &BenchTask) -> Row {
        let t0 = Instant::now();
        let mut row = Row::new(&t.grade.instance_id, &agent.name);
        row.network = self.network_of(agent);
        row.dir = format!(
            "{}/{}",
            safe_name(&agent.name),
            safe_name(&t.grade.instance_id)
        );
        if let Err(e) = self.one_inner(agent, t, &mut row) {
            row.verdict = "infrastructure".into();
            row.infrastructure = true;
            row.error = Some(report::bound(&e, 2000));
        }
        row.wall_s = t0.elapsed().as_secs_f64();
        row
    }

    fn one_inner(&self, agent: &Agent, t: &BenchTask, row: &mut Row) -> Result<(), String> {
        let dir = self.out.join(&row.dir);
        let ws = dir.join("workspace");
        let layer = dir.join("layer");
        let audit_path = dir.join("audit.jsonl");
        let task_file = dir.join("task.json");
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;

        // 1. Prepare a workspace with nothing to retrieve.
        let RunproofRepo(repo) = repo_of(t)?;
        let mut po = PrepareOptions::new(repo, t.grade.base_commit.clone(), &ws);
        po.reference_patch = t.grade.patch.clone();
        po.package = t.integrity.package_name();
        let prep = prepare(&po).map_err(|e| format!("prepare: {e}"))?;
        row.leaks_after_prepare = Some(prep.check.future_commits);

        // 2. The task as the agent sees it: no reference fix, no tests.
        let visible = serde_json::json!({
            "instance_id": t.grade.instance_id,
            "repo": t.grade.repo,
            "base_commit": t.grade.base_commit,
            "problem_statement": t.integrity.problem_statement,
        });
        std::fs::write(
            &task_file,
            serde_json::to_vec_pretty(&visible).unwrap_or_default(),
        )
        .map_err(|e| format!("write {}: {e}", task_file.display()))?;

        // 3. The agent, sandboxed: registries through the proxy, models through the gateway.
        std::fs::create_dir_all(&layer).map_err(|e| format!("create {}: {e}", layer.display()))?;
        let argv = agent.argv(&ws, &task_file);
        let mut policy = Policy {
            workspace: Some(ws.clone()),
            ..Policy::default()
        };
        policy.limits.timeout = Some(Seconds(agent.timeout.unwrap_or(self.timeout)));
        policy.network.mode = NetworkMode::Proxy;
        policy
            .network
            .allow
            .extend(DEFAULT_ALLOW.iter().map(|r| r.to_string()));
        for rule in self.extra_rules(agent) {
            match rule.strip_prefix('!') {
                Some(d) => policy.network.deny.push(d.to_string()),
                None => policy.network.allow.push(rule.clone()),
            }
        }
        policy.paths.read.push(task_file.clone());
        policy.paths.read.extend(agent.read_files.iter().cloned());
        let mut spec = RunSpec::new(policy, argv);
        spec.overlay = Some(layer.clone());
        let gate: Arc<Mutex<Option<runproof_net::Gate>>> = Arc::default();
        let setup = crate::cmd_run::NetSetup {
            audit: Some(&audit_path),
            allow_address: &self.allow_address,
            gateway: Some(crate::cmd_run::GatewaySetup {
                task: Some(t.grade.instance_id.clone()),
                agent: Some(agent.name.clone()),
                budget: agent.budget.or(self.gateway.budget),
                ..self.gateway.clone()
            }),
        };
        let metering = crate::cmd_run::attach_network(&mut spec, &setup, gate.clone())?;
        // A socket pair (not a file) so the host reads and bounds what the agent writes.
        let (rd, wr) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| format!("socket pair for the agent's output: {e}"))?;
        rd.shutdown(std::net::Shutdown::Write)
            .map_err(|e| format!("socket pair: {e}"))?;
        let wr2 = wr
            .try_clone()
            .map_err(|e| format!("duplicate the output pipe: {e}"))?;
        let devnull = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        spec.stdio = Stdio::Fds {
            stdin: Some(devnull.into()),
            stdout: Some(OwnedFd::from(wr)),
            stderr: Some(OwnedFd::from(wr2)),
        };
        let reader = std::thread::spawn(move || read_bounded(rd));
        let t_agent = Instant::now();
        let result = runproof_sandbox::run(spec);
        if let Some(g) = gate.lock().ok().and_then(|mut g| g.take()) {
            g.shutdown();
        }
        let (log, total) = reader.join().unwrap_or_default();
        row.agent_s = t_agent.elapsed().as_secs_f64();
        let _ = std::fs::write(dir.join("agent.log"), &log);
        row.agent_output_bytes = total;
        let outcome = result.map_err(|e| format!("agent sandbox: {e}"))?;
        if let Some(m) = &metering {
            let _ = std::fs::write(dir.join("cost.txt"), format!("{}\n", m.finish(&outcome)));
            row.cost_usd = Some(m.spent_usd());
            row.change_detection = m
                .change_detection()
                .map(|l| format!("{}: {}", format!("{:?}", l.state).to_lowercase(), l.detail));
        }
        // Only the metering stops a bench run; it keeps the reason's name.
        row.stopped = metering
            .as_ref()
            .and_then(|m| m.stop_reason())
            .map(str::to_string);
        row.agent_exit = Some(outcome.exit.exit_status);
        row.agent_timed_out = outcome.exit.timed_out;
        row.agent_cpu_s = outcome.exit.user_cpu_s + outcome.exit.system_cpu_s;
        row.agent_log_tail = report::tail(&String::from_utf8_lossy(&log), 600);

        // 4. The patch: what the agent changed in the copy-on-write layer.
        let (patch, _stats) = diff_to_vec(&layer, &ws, &DiffOptions::default())
            .map_err(|e| format!("diff of the agent's layer: {e}"))?;
        let patch = String::from_utf8_lossy(&patch).into_owned();
        let _ = std::fs::write(dir.join("patch.diff"), &patch);
        row.patch_lines = patch.lines().count();

        // 5. Verify in fresh sandboxes.
        let choice_empty = patch.trim().is_empty();
        let choice = if choice_empty {
            PatchChoice::Model(None)
        } else {
            PatchChoice::Model(Some(&patch))
        };
        let rep = self
            .harness
            .grade(&t.grade, &agent.name, choice, &dir.join("verify"));
        row.resolved = rep.resolved;
        if let Some(m) = &metering {
            m.record_verdict(&t.grade.instance_id, rep.status.name(), rep.resolved);
        }
        row.verdict = rep.status.name().to_string();
        row.infrastructure = rep.status.is_infrastructure();
        if let Some(d) = rep.detail.as_ref().filter(|_| !choice_empty) {
            row.error = Some(report::bound(d, 600));
        }
        row.gaming = rep
            .neutralised
            .iter()
            .take(8)
            .map(|f| report::bound(&format!("{}: {}", f.path, f.reason), 300))
            .collect();

        // 6. Audit what the agent did.
        let traj = trajectory::load(&audit_path, trajectory::Format::Runproof)
            .map_err(|e| format!("read the audit log: {e}"))?;
        let ar = audit(
            &traj,
            &AuditOptions {
                task: t.integrity.clone(),
                agent_patch: Some(patch),
                history_repo: None,
            },
        )
        .map_err(|e| format!("audit: {e}"))?;
        row.label = Some(ar.label.to_string());
        row.reason = report::bound(&ar.reason, 600);
        row.evidence = ar
            .evidence
            .iter()
            .take(8)
            .map(|e| report::bound(&format!("{:?}: {} ({})", e.rule, e.detail, e.subject), 300))
            .collect();
        row.evidence_total = ar.evidence.len();
        row.similarity = ar.similarity.as_ref().map(|s| s.score);
        let net = NetLog::read(&audit_path);
        row.blocked_requests = net.proxy_refused;
        row.blocked = net.proxy_refused_first;
        row.model_calls = net.model_calls;
        row.model_calls_refused = net.model_refused;
        row.model_refusals = net.model_refusals;
        // A retrieval the proxy refused is an attempt whose host it refused.
        row.retrieval_refused = ar
            .evidence
            .iter()
            .filter(|e| {
                e.strength == Strength::Attempt
                    && matches!(
                        e.rule,
                        Rule::WebRetrieval | Rule::WebSearch | Rule::PackageRetrieval
                    )
                    && net
                        .proxy_refused_hosts
                        .iter()
                        .any(|h| e.subject.contains(h.as_str()))
            })
            .take(5)
            .map(|e| report::bound(&e.subject, 300))
            .collect();
        row.security = security_flags(&audit_path);
        let _ = std::fs::write(
            dir.join("audit_report.json"),
            serde_json::to_vec_pretty(&ar).unwrap_or_default(),
        );
        Ok(())
    }
}

struct RunproofRepo(PathBuf);

fn repo_of(t: &BenchTask) -> Result<RunproofRepo, String> {
    match &t.grade.source {
        runproof_task::RepoSource::Path(p) => Ok(RunproofRepo(p.clone())),
        runproof_task::RepoSource::Url(u) => Err(format!(
            "task {} names a repository URL ({}); bench prepares workspaces from local repositories only: clone it and set repo_path",
            t.grade.instance_id,
            report::bound(u, 200)
        )),
    }
}

/// What the proxy and the gateway recorded in a run's audit log.
#[derive(Default)]
struct NetLog {
    /// Requests the proxy refused, the first few distinct `METHOD host:port`,
    /// and the distinct hosts (bounded).
    proxy_refused: usize,
    proxy_refused_first: Vec<String>,
    proxy_refused_hosts: Vec<String>,
    /// Model calls the gateway saw, how many it refused, and the first few distinct reasons.
    model_calls: usize,
    model_refused: usize,
    model_refusals: Vec<String>,
}

impl NetLog {
    fn read(path: &Path) -> NetLog {
        let mut n = NetLog::default();
        let Ok(text) = std::fs::read_to_string(path) else {
            return n;
        };
        for v in text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        {
            if v.get("event").and_then(|e| e.as_str()) != Some("request") {
                continue;
            }
            let str_of = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("");
            let denied = str_of("decision") != "allowed";
            match str_of("component") {
                "gateway" => {
                    n.model_calls += 1;
                    if denied {
                        n.model_refused += 1;
                        let why = report::bound(str_of("reason"), 200);
                        if n.model_refusals.len() < 3 && !n.model_refusals.contains(&why) {
                            n.model_refusals.push(why);
                        }
                    }
                }
                _ if denied => {
                    n.proxy_refused += 1;
                    let host = report::bound(str_of("host"), 200);
                    let what = format!(
                        "{} {host}:{}",
                        report::bound(str_of("method"), 20),
                        v.get("port").and_then(|m| m.as_u64()).unwrap_or(0)
                    );
                    if n.proxy_refused_first.len() < 5 && !n.proxy_refused_first.contains(&what) {
                        n.proxy_refused_first.push(what);
                    }
                    if !host.is_empty()
                        && n.proxy_refused_hosts.len() < 50
                        && !n.proxy_refused_hosts.contains(&host)
                    {
                        n.proxy_refused_hosts.push(host);
                    }
                }
                _ => {}
            }
        }
        n
    }
}

/// Credential stores an agent has no business reading.
const CREDENTIAL_MARKERS: &[&str] = &[
    "/.ssh/",
    "id_rsa",
    "id_ed25519",
    "id_ecdsa",
    ".aws/credentials",
    ".netrc",
    ".git-credentials",
    ".docker/config.json",
    ".kube/config",
    "/etc/shadow",
    ".npmrc",
    ".pypirc",
    "gcloud/credentials",
];

/// What the run did that a coding agent should not, from the audit log:
/// connections tried around the proxy, credential files named in commands,
/// searches of the environment for secrets. At most 8, each bounded.
fn security_flags(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut flags: Vec<String> = Vec::new();
    let mut push = |f: String| {
        let f = report::bound(&f, 200);
        if flags.len() < 8 && !flags.contains(&f) {
            flags.push(f);
        }
    };
    for v in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let str_of = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("");
        match str_of("event") {
            "connect" if v.get("allowed").and_then(|a| a.as_bool()) == Some(false) => {
                push(format!(
                    "tried to connect around the proxy to {} (refused)",
                    str_of("address")
                ));
            }
            "exec" if v.get("found").and_then(|f| f.as_bool()) != Some(false) => {
                let argv: Vec<&str> = v
                    .get("argv")
                    .and_then(|a| a.as_array())
                    .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                    .unwrap_or_default();
                let line = argv.join(" ");
                if let Some(m) = CREDENTIAL_MARKERS.iter().find(|m| line.contains(*m)) {
                    push(format!("named a credential store ({m}): {line}"));
                }
                let lower = line.to_ascii_lowercase();
                let prog = argv
                    .first()
                    .map(|p| p.rsplit('/').next().unwrap_or(p))
                    .unwrap_or("");
                if matches!(prog, "grep" | "egrep" | "rg")
                    && ["token", "secret", "password", "api_key", "apikey"]
                        .iter()
                        .any(|w| lower.contains(w))
                {
                    push(format!("searched for credentials: {line}"));
                }
            }
            _ => {}
        }
    }
    flags
}

/// Reads everything, keeps the first [`MAX_AGENT_LOG`] bytes, returns them and the total.
fn read_bounded(mut f: std::os::unix::net::UnixStream) -> (Vec<u8>, u64) {
    let mut keep = Vec::new();
    let mut total = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n as u64;
                let room = MAX_AGENT_LOG.saturating_sub(keep.len());
                keep.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (keep, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_flags_come_from_the_audit_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        std::fs::write(
            &log,
            [
                r#"{"event":"connect","pid":3,"family":"inet","address":"192.0.2.1:443","allowed":false}"#,
                r#"{"event":"connect","pid":3,"family":"inet","address":"127.0.0.1:4000","allowed":true}"#,
                r#"{"event":"exec","pid":4,"path":"/usr/bin/cat","argv":["cat","/root/.aws/credentials"],"cwd":"/w"}"#,
                r#"{"event":"exec","pid":5,"path":"/usr/bin/cat","argv":["cat","/root/.ssh/id_rsa"],"cwd":"/w","found":false}"#,
                r#"{"event":"exec","pid":6,"path":"/usr/bin/grep","argv":["grep","-i","API_KEY"],"cwd":"/w"}"#,
                r#"{"event":"exec","pid":7,"path":"/usr/bin/python3","argv":["python3","-m","pytest"],"cwd":"/w"}"#,
                "not json",
            ]
            .join("\n"),
        )
        .unwrap();
        let f = security_flags(&log);
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(f[0].contains("around the proxy") && f[0].contains("192.0.2.1:443"));
        assert!(f[1].contains(".aws/credentials"));
        assert!(f[2].contains("searched for credentials"));
        assert!(security_flags(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn instance_ids_become_safe_directory_names() {
        assert_eq!(safe_name("py-stats-1"), "py-stats-1");
        assert_eq!(safe_name("../../etc"), "_.._.._etc");
        assert_eq!(safe_name(".."), "_..");
        assert_eq!(safe_name(""), "_");
        assert_eq!(safe_name("a/b<c>"), "a_b_c_");
    }
}
