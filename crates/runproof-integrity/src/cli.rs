//! Command-line front ends for `runproof prepare` and `runproof audit`: clap
//! argument structs and `run_*` functions that print text or JSON and return
//! the process exit code. Text output escapes control characters, because
//! file names, commit subjects and URLs come from hostile repositories and
//! trajectories.
//!
//! Exit codes: `prepare` 0 = workspace clean; `prepare --check` 0 = no leak,
//! 1 = leaks found; `audit` 0 = clean, 1 = retrieved, 3 = suspicious.
//! Errors are returned to the caller (the binary prints them and exits 2).

use crate::audit::{AuditOptions, AuditReport, Label, audit};
use crate::check::{CheckOptions, CheckReport, Severity, check};
use crate::error::{Error, Result, read_bounded};
use crate::prepare::{PrepareOptions, PrepareReport, prepare};
use crate::task::{Task, normalize_package};
use crate::trajectory::{self, Format};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// One JSON document.
    Json,
}

/// `runproof prepare`: build a workspace with no history after the base, or check one.
#[derive(Debug, Clone, clap::Args)]
pub struct PrepareArgs {
    /// Task JSON (SWE-bench style: instance_id, repo, repo_path, base_commit, patch, version; extra fields ignored)
    #[arg(long, value_name = "FILE")]
    pub task: Option<PathBuf>,
    /// Source repository (overrides the task's repo_path); it is only read
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Base commit (overrides the task's base_commit; with --check defaults to HEAD)
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// Reference fix as a unified diff file (overrides the task's patch)
    #[arg(long, value_name = "FILE")]
    pub patch: Option<PathBuf>,
    /// Where to create the workspace (must not exist or be empty)
    #[arg(long, short, value_name = "DIR", required_unless_present = "check")]
    pub out: Option<PathBuf>,
    /// Do not prepare: scan an existing workspace and report every leak
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub check: Option<PathBuf>,
    /// Replace history with one root commit holding the base tree
    #[arg(long)]
    pub no_history: bool,
    /// Drop all tags (default: keep tags on ancestors of the base)
    #[arg(long)]
    pub no_tags: bool,
    /// Branch name for the base commit
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Also copy untracked and ignored files (virtualenvs, node_modules), stripping caches and installed copies of the project
    #[arg(long)]
    pub copy_untracked: bool,
    /// With --check: also scan this directory for caches and installed packages (repeatable)
    #[arg(long = "scan-dir", value_name = "DIR")]
    pub scan_dirs: Vec<PathBuf>,
    /// Package name of the project under test (default: the task's repo name)
    #[arg(long, value_name = "NAME")]
    pub package: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
}

/// `runproof audit`: label a run clean, retrieved or suspicious.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Trajectory file: runproof audit JSONL, plain JSONL, SWE-agent .traj, mini-swe-agent or OpenHands JSON
    #[arg(long, short, value_name = "FILE")]
    pub trajectory: PathBuf,
    /// Trajectory format
    #[arg(long, value_enum, default_value = "auto")]
    pub trajectory_format: Format,
    /// Task JSON (upstream repo, base_commit, reference patch, problem_statement, version)
    #[arg(long, value_name = "FILE")]
    pub task: PathBuf,
    /// The agent's patch (default: the submission recorded in the trajectory)
    #[arg(long, value_name = "FILE")]
    pub patch: Option<PathBuf>,
    /// Repository with full history, to tell whether commit ids the agent used are after the base (default: the task's repo_path)
    #[arg(long, value_name = "DIR")]
    pub history_repo: Option<PathBuf>,
    /// Package name of the project under test (default: the task's repo name)
    #[arg(long, value_name = "NAME")]
    pub package: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
}

const MAX_PATCH_BYTES: u64 = 64 * 1024 * 1024;

fn read_text(path: &Path, what: &'static str) -> Result<String> {
    Ok(String::from_utf8_lossy(&read_bounded(path, what, MAX_PATCH_BYTES)?).into_owned())
}

fn load_task(path: Option<&Path>) -> Result<Task> {
    path.map(Task::load)
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Run `runproof prepare` (or `--check`); print the report; return the exit code.
pub fn run_prepare(args: &PrepareArgs, out: &mut dyn Write) -> Result<u8> {
    let task = load_task(args.task.as_deref())?;
    let patch = match &args.patch {
        Some(p) => Some(read_text(p, "reference patch")?),
        None => task.patch.clone(),
    };
    let package = args
        .package
        .as_deref()
        .map(normalize_package)
        .or_else(|| task.package_name());
    if let Some(dir) = &args.check {
        let base = args
            .base
            .clone()
            .or_else(|| (!task.base_commit.is_empty()).then(|| task.base_commit.clone()));
        let report = check(&CheckOptions {
            dir: dir.clone(),
            base,
            reference_patch: patch,
            package,
            base_version: task.version.clone(),
            scan_dirs: args.scan_dirs.clone(),
            git_only: false,
        })?;
        emit(out, args.format, &report, |o| print_check(o, &report))?;
        return Ok(if report.clean { 0 } else { 1 });
    }
    let repo = args
        .repo
        .clone()
        .or(task.repo_path.clone())
        .ok_or_else(|| Error::Invalid {
            what: "arguments",
            path: args.task.clone().unwrap_or_default(),
            detail: "no source repository: pass --repo DIR or a task with repo_path".into(),
        })?;
    let base = args
        .base
        .clone()
        .or_else(|| (!task.base_commit.is_empty()).then(|| task.base_commit.clone()))
        .ok_or_else(|| Error::Invalid {
            what: "arguments",
            path: args.task.clone().unwrap_or_default(),
            detail: "no base commit: pass --base REV or a task with base_commit".into(),
        })?;
    let mut opts = PrepareOptions::new(repo, base, args.out.clone().unwrap_or_default());
    opts.reference_patch = patch;
    opts.no_history = args.no_history;
    opts.no_tags = args.no_tags;
    opts.branch = args.branch.clone();
    opts.copy_untracked = args.copy_untracked;
    opts.package = package;
    opts.base_version = task.version.clone();
    let report = prepare(&opts)?;
    emit(out, args.format, &report, |o| print_prepare(o, &report))?;
    Ok(if report.check.clean { 0 } else { 1 })
}

/// Run `runproof audit`; print the report; return the exit code.
pub fn run_audit(args: &AuditArgs, out: &mut dyn Write) -> Result<u8> {
    let mut task = Task::load(&args.task)?;
    if let Some(p) = &args.package {
        task.package = Some(p.clone());
    }
    let traj = trajectory::load(&args.trajectory, args.trajectory_format)?;
    let agent_patch = args
        .patch
        .as_deref()
        .map(|p| read_text(p, "agent patch"))
        .transpose()?;
    let report = audit(
        &traj,
        &AuditOptions {
            task,
            agent_patch,
            history_repo: args.history_repo.clone(),
        },
    )?;
    emit(out, args.format, &report, |o| print_audit(o, &report))?;
    Ok(match report.label {
        Label::Clean => 0,
        Label::Retrieved => 1,
        Label::Suspicious => 3,
    })
}

fn emit<T: serde::Serialize>(
    out: &mut dyn Write,
    format: OutputFormat,
    value: &T,
    text: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let r = match format {
        OutputFormat::Json => serde_json::to_writer_pretty(&mut *out, value)
            .map_err(std::io::Error::other)
            .and_then(|_| writeln!(out)),
        OutputFormat::Text => text(out),
    };
    r.map_err(crate::error::io("writing output to", "stdout"))
}

/// Replace control characters so hostile text cannot drive the terminal.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn short(oid: &str) -> &str {
    &oid[..oid.len().min(12)]
}

fn print_check(o: &mut dyn Write, r: &CheckReport) -> std::io::Result<()> {
    writeln!(o, "workspace  {}", clean(&r.dir.display().to_string()))?;
    if let Some(b) = &r.base {
        writeln!(o, "base       {b}")?;
        writeln!(
            o,
            "objects    {} total, {} reachable from the base, {} outside it ({} commits)",
            r.objects_total, r.objects_reachable, r.objects_foreign, r.future_commits
        )?;
    } else {
        writeln!(o, "base       (not a git repository; files only)")?;
    }
    if r.fix_lines > 0 {
        writeln!(
            o,
            "fix lines  {} distinctive lines of the reference fix searched for",
            r.fix_lines
        )?;
    }
    writeln!(o, "files      {} scanned", r.files_scanned)?;
    for l in &r.leaks {
        let sev = if l.severity == Severity::Leak {
            "LEAK"
        } else {
            "warn"
        };
        let kind = serde_json::to_value(l.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let obj = l
            .object
            .as_deref()
            .map(|x| format!(" [{}]", short(x)))
            .unwrap_or_default();
        writeln!(o, "{sev} {kind:<18} {}{obj}", clean(&l.location))?;
        writeln!(o, "     {}", clean(&l.detail))?;
        for f in l.fragments.iter().take(3) {
            writeln!(o, "       | {}", clean(f))?;
        }
    }
    let warnings = r.leaks.len() - r.leak_count();
    writeln!(
        o,
        "{}: {} leak(s), {} warning(s) in {} ms",
        if r.clean { "clean" } else { "LEAKS FOUND" },
        r.leak_count(),
        warnings,
        r.elapsed_ms
    )
}

fn print_prepare(o: &mut dyn Write, r: &PrepareReport) -> std::io::Result<()> {
    writeln!(o, "prepared   {}", clean(&r.out.display().to_string()))?;
    writeln!(o, "base       {}", r.base)?;
    if r.head != r.base {
        writeln!(
            o,
            "head       {} (single root commit, history removed)",
            r.head
        )?;
    }
    writeln!(
        o,
        "objects    {} in one pack; tags kept: {}",
        r.objects,
        r.tags_kept.len()
    )?;
    if r.untracked_copied > 0 {
        writeln!(o, "untracked  {} file(s) copied", r.untracked_copied)?;
    }
    for s in &r.stripped {
        writeln!(o, "stripped   {} ({})", clean(&s.path), clean(&s.reason))?;
    }
    writeln!(o, "prepare    {} ms", r.prepare_ms)?;
    writeln!(o, "-- check of the result --")?;
    print_check(o, &r.check)
}

fn print_audit(o: &mut dyn Write, r: &AuditReport) -> std::io::Result<()> {
    writeln!(o, "task       {}", clean(&r.instance_id))?;
    let fmt = serde_json::to_value(r.format)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    writeln!(o, "trajectory {} actions ({fmt})", r.actions)?;
    for e in &r.evidence {
        let strength = serde_json::to_value(e.strength)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let rule = serde_json::to_value(e.rule)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        writeln!(
            o,
            "{strength:<9} {rule:<18} action {} ({})",
            e.action,
            clean(&e.origin)
        )?;
        writeln!(o, "     $ {}", clean(&e.subject))?;
        writeln!(o, "     {}", clean(&e.detail))?;
    }
    if let Some(s) = &r.similarity {
        writeln!(
            o,
            "similarity {:.3} (lines {:.2}, 4-grams {:.2}, novel identifiers {}/{}, verbatim comments {})",
            s.score,
            s.line_overlap,
            s.ngram_overlap,
            s.matched_identifiers.len(),
            s.novel_identifiers.len(),
            s.matched_comments.len()
        )?;
        for c in s.matched_comments.iter().take(3) {
            writeln!(o, "     comment | {}", clean(c))?;
        }
        for l in s.matched_lines.iter().take(5) {
            writeln!(o, "     line    | {}", clean(l))?;
        }
    }
    writeln!(o, "label      {}: {}", r.label, clean(&r.reason))
}
