//! Command-line entry points (`runproof verify`, `eval`, `task validate`).
//! The binary passes in the runner (the sandbox runner, with its network
//! policy built from `--allow`); an unsandboxed runner gets a loud warning.
//!
//! Exit codes: `verify` 0 resolved, 1 graded but not resolved, 3
//! infrastructure failure; `eval` 0 every instance graded, 1 some were not;
//! `task validate` 0 every task ok, 1 some flaky or broken; 2 bad input for all.

use crate::env::{EnvCache, WorkspaceMode};
use crate::eval::{EvalRun, run_eval, text_table, validate_task, write_outputs};
use crate::grade::{Harness, PatchChoice};
use crate::model::{LoadError, MAX_PATCH_BYTES, load_predictions, load_tasks};
use crate::runner::TestRunner;
use clap::{Args, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// `runproof verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Task file (JSON, or JSONL with --instance).
    #[arg(long)]
    pub task: PathBuf,
    /// Which instance of a multi-task file.
    #[arg(long)]
    pub instance: Option<String>,
    /// The patch to grade (unified diff).
    #[arg(long, conflicts_with_all = ["gold", "empty"], required_unless_present_any = ["gold", "empty"])]
    pub patch: Option<PathBuf>,
    /// Grade the task's reference fix.
    #[arg(long, conflicts_with = "empty")]
    pub gold: bool,
    /// Run the tests at the base commit with no patch.
    #[arg(long)]
    pub empty: bool,
    /// Rerun the test command up to N times while target tests fail.
    #[arg(long, default_value_t = 0)]
    pub reruns: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `runproof eval`
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Tasks (JSONL or JSON array).
    #[arg(long)]
    pub tasks: PathBuf,
    /// Predictions (SWE-bench JSONL).
    #[arg(long)]
    pub predictions: PathBuf,
    /// Instances graded at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Rerun the test command up to N times while target tests fail.
    #[arg(long, default_value_t = 0)]
    pub reruns: u32,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `runproof task ...`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Run gold and base N times each; label flaky tests and broken tasks.
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[arg(long)]
    pub tasks: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Output directory (one directory per instance, summary files).
    #[arg(long, default_value = "runproof-out")]
    pub out: PathBuf,
    /// Environment cache (default: $XDG_CACHE_HOME/runproof or ~/.cache/runproof).
    #[arg(long, env = "RUNPROOF_CACHE")]
    pub cache: Option<PathBuf>,
    /// Keep each instance's workspace after grading (with copy-on-write
    /// workspaces, `workspace/upper` holds what the patches and tests changed).
    #[arg(long)]
    pub keep_workspaces: bool,
    /// How each instance's workspace is made from the cached environment:
    /// `overlay` (copy-on-write, milliseconds whatever the environment's
    /// size), `copy` (a full copy), or `auto` (overlay where the kernel and
    /// file system support it, else copy; the report says which and why).
    #[arg(long, value_enum, default_value_t = WorkspaceMode::Auto)]
    pub workspaces: WorkspaceMode,
    #[command(flatten)]
    pub net: NetArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// The network that grading may use, as flags shared by `verify`, `eval`,
/// `task validate`, `serve` and `worker`.
#[derive(Debug, Clone, Default, Args)]
pub struct NetArgs {
    /// Let `repo_url` fetches and `setup` commands reach this host through
    /// runproof's egress proxy (example.com, *.example.com, host:port, or a
    /// preset: @github, @pypi, @npm, @crates, @debian, @goproxy). Prefix
    /// with ! to deny. Without it they get no network. Tests never do.
    #[arg(long = "allow", value_name = "RULE")]
    pub allow: Vec<String>,
    /// Let the egress proxy connect to this loopback or private address (a
    /// local git server or mirror); every other private address stays refused.
    #[arg(long = "allow-address", value_name = "IP")]
    pub allow_address: Vec<std::net::IpAddr>,
}

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write {}: {source}; check the directory is writable", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn default_cache() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("runproof");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("runproof"),
        None => std::env::temp_dir().join("runproof-cache"),
    }
}

fn harness(c: &CommonArgs, reruns: u32, runner: Arc<dyn TestRunner>) -> Harness {
    if !runner.sandboxed() {
        eprintln!(
            "WARNING: UNSANDBOXED. runproof is grading with the `{}` runner: the task's setup and test \
             commands and the patch's code run directly on this machine as your user, with network. \
             Grade only patches you trust until the sandbox runner is available.",
            runner.name()
        );
    }
    let cache = c.cache.clone().unwrap_or_else(default_cache);
    let cache = std::path::absolute(&cache).unwrap_or(cache);
    Harness {
        runner,
        workspaces: Arc::new(EnvCache::with_mode(cache, c.workspaces)),
        reruns,
        keep_workspaces: c.keep_workspaces,
    }
}

fn abs(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn write(path: &Path, data: impl AsRef<[u8]>) -> Result<(), CliError> {
    std::fs::write(path, data).map_err(|source| CliError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// `runproof verify`: grades one patch; prints the verdict.
pub fn verify(a: &VerifyArgs, runner: Arc<dyn TestRunner>) -> Result<i32, CliError> {
    let tasks = load_tasks(&abs(&a.task))?;
    let task = match &a.instance {
        Some(id) => tasks.iter().find(|t| &t.instance_id == id).ok_or_else(|| {
            CliError::Usage(format!(
                "{}: no task with instance_id `{id}`; it holds: {}",
                a.task.display(),
                tasks
                    .iter()
                    .take(10)
                    .map(|t| t.instance_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
        None if tasks.len() == 1 => &tasks[0],
        None => {
            return Err(CliError::Usage(format!(
                "{} holds {} tasks; choose one with --instance ID",
                a.task.display(),
                tasks.len()
            )));
        }
    };
    let patch_text = match &a.patch {
        Some(p) => {
            let meta = std::fs::metadata(p)
                .map_err(|e| CliError::Usage(format!("cannot read patch {}: {e}", p.display())))?;
            if meta.len() > MAX_PATCH_BYTES as u64 {
                return Err(CliError::Usage(format!(
                    "{} is over the 16 MiB patch limit",
                    p.display()
                )));
            }
            let b = std::fs::read(p)
                .map_err(|e| CliError::Usage(format!("cannot read patch {}: {e}", p.display())))?;
            Some(String::from_utf8_lossy(&b).into_owned())
        }
        None => None,
    };
    let (choice, model) = if a.gold {
        (PatchChoice::Gold, "gold")
    } else if a.empty {
        (PatchChoice::Empty, "base")
    } else {
        (PatchChoice::Model(patch_text.as_deref()), "patch")
    };
    let h = harness(&a.common, a.reruns, runner);
    let out = abs(&a.common.out)
        .join(crate::eval::safe_name(model))
        .join(&task.instance_id);
    // A rerun of verify always grades afresh.
    let rep = h.grade(task, model, choice, &out);
    match a.common.format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rep.to_swebench()).unwrap_or_default()
        ),
        OutputFormat::Text => {
            print!("{}", text_table(std::slice::from_ref(&rep)));
            for f in &rep.neutralised {
                println!("neutralised {}: {}", f.path, f.reason);
            }
            for f in &rep.warnings {
                println!("warning {}: {}", f.path, f.reason);
            }
            if let Some(d) = &rep.detail {
                println!("{}: {d}", rep.status.name());
            }
            if let Some(n) = &rep.workspace_note {
                println!("workspace: copied ({n})");
            }
            println!("report: {}", out.join("report.json").display());
        }
    }
    Ok(if rep.resolved {
        0
    } else if rep.status.is_graded() {
        1
    } else {
        3
    })
}

/// `runproof eval`: grades predictions in parallel, resumable.
pub fn eval(a: &EvalArgs, runner: Arc<dyn TestRunner>) -> Result<i32, CliError> {
    let tasks = load_tasks(&abs(&a.tasks))?;
    let preds = load_predictions(&abs(&a.predictions))?;
    let h = harness(&a.common, a.reruns, runner);
    let out = abs(&a.common.out);
    let progress = !a.no_progress && std::io::stderr().is_terminal();
    let (summary, reps) = run_eval(&EvalRun {
        harness: &h,
        tasks: &tasks,
        predictions: &preds,
        out: &out,
        jobs: a.jobs,
        progress,
    });
    write_outputs(&out, &summary, &reps).map_err(|source| CliError::Write {
        path: out.clone(),
        source,
    })?;
    match a.common.format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        ),
        OutputFormat::Text => {
            print!("{}", text_table(&reps));
            if !summary.unknown_ids.is_empty() {
                println!(
                    "predictions for unknown instances: {}",
                    summary.unknown_ids.join(", ")
                );
            }
            if let Some(n) = reps.iter().find_map(|r| r.workspace_note.as_ref()) {
                println!("workspaces: copied ({n})");
            }
            if summary.resumed > 0 {
                println!(
                    "{} instances taken from the previous run in {}",
                    summary.resumed,
                    out.display()
                );
            }
            println!("summary: {}", out.join("summary.json").display());
        }
    }
    Ok(if summary.all_graded { 0 } else { 1 })
}

/// `runproof task validate`.
pub fn task(cmd: &TaskCommand, runner: Arc<dyn TestRunner>) -> Result<i32, CliError> {
    let TaskCommand::Validate(a) = cmd;
    let tasks = load_tasks(&abs(&a.tasks))?;
    let h = harness(&a.common, 0, runner);
    let out = abs(&a.common.out).join("validate");
    let mut all = Vec::new();
    for t in &tasks {
        let v = validate_task(&h, t, a.runs, &out.join(&t.instance_id));
        if a.common.format == OutputFormat::Text {
            println!(
                "{:<32} {:<7} {}",
                t.instance_id,
                v.verdict,
                v.reasons.join("; ")
            );
            if !v.flaky_tests.is_empty() {
                println!("{:<32} flaky tests: {}", "", v.flaky_tests.join(", "));
            }
        }
        all.push(v);
    }
    std::fs::create_dir_all(&out).map_err(|source| CliError::Write {
        path: out.clone(),
        source,
    })?;
    let json = serde_json::to_string_pretty(&all).unwrap_or_default();
    write(&out.join("validation.json"), &json)?;
    if a.common.format == OutputFormat::Json {
        println!("{json}");
    }
    Ok(if all.iter().all(|v| v.verdict == "ok") {
        0
    } else {
        1
    })
}
