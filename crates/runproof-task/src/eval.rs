//! `verify`, `eval` and `task validate`: drive [`Harness::grade`] over tasks
//! and predictions, in parallel, resumable, and write the run summary (JSON),
//! JUnit XML and a text table.

use crate::grade::{Harness, InstanceReport, Outcome, PatchChoice};
use crate::model::{Prediction, Task};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Directory-safe form of a model name.
pub fn safe_name(s: &str) -> String {
    let mut o: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    if o.is_empty() || o.starts_with('.') {
        o.insert(0, '_');
    }
    o
}

/// One unit of work for `eval`.
pub struct Job<'a> {
    pub task: &'a Task,
    pub prediction: &'a Prediction,
    pub out: PathBuf,
}

/// Summary of an `eval` run, shaped like SWE-bench's run report plus counts
/// per runproof outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub total_instances: usize,
    pub submitted_instances: usize,
    pub completed_instances: usize,
    pub resolved_instances: usize,
    pub unresolved_instances: usize,
    pub empty_patch_instances: usize,
    pub error_instances: usize,
    /// The tests ran and the verdict stands (resolved, unresolved, inconsistent).
    pub completed_ids: Vec<String>,
    pub resolved_ids: Vec<String>,
    /// The tests ran and some target test did not pass (or the run's exit
    /// status contradicted its results). Never an instance whose tests did
    /// not run.
    pub unresolved_ids: Vec<String>,
    pub empty_patch_ids: Vec<String>,
    /// No test verdict, as SWE-bench counts errors: the patch did not apply
    /// or was refused, or the harness failed (`infrastructure_ids`).
    pub error_ids: Vec<String>,
    /// Setup failed, timeout, out of memory, the task's test patch did not
    /// apply, or the harness itself failed: retried on resume, and the
    /// reason `eval` exits 1.
    pub infrastructure_ids: Vec<String>,
    /// Predictions whose instance is not in the task file.
    pub unknown_ids: Vec<String>,
    pub by_outcome: BTreeMap<String, usize>,
    /// Instances taken from an earlier run's report.
    pub resumed: usize,
    /// Every instance got a final grade (the CLI's exit status).
    pub all_graded: bool,
    pub runner: String,
    pub sandboxed: bool,
}

/// Options for [`run_eval`].
pub struct EvalRun<'a> {
    pub harness: &'a Harness,
    pub tasks: &'a [Task],
    pub predictions: &'a [Prediction],
    pub out: &'a Path,
    pub jobs: usize,
    pub progress: bool,
}

fn bar(n: usize, show: bool) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    if !show {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(s) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
    {
        pb.set_style(s);
    }
    pb
}

/// Reads a finished report from an earlier run, if it is a final grade.
fn resume(out: &Path) -> Option<InstanceReport> {
    let text = std::fs::read(out.join("report.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    InstanceReport::from_swebench(&v).filter(|r| r.status.is_graded())
}

/// Runs every prediction that has a task, `jobs` at a time. Instances whose
/// directory already holds a final grade are not run again.
pub fn run_eval(o: &EvalRun<'_>) -> (Summary, Vec<InstanceReport>) {
    let by_id: HashMap<&str, &Task> = o
        .tasks
        .iter()
        .map(|t| (t.instance_id.as_str(), t))
        .collect();
    let mut unknown = Vec::new();
    let mut jobs = Vec::new();
    for p in o.predictions {
        match by_id.get(p.instance_id.as_str()) {
            Some(t) => jobs.push(Job {
                task: t,
                prediction: p,
                out: o
                    .out
                    .join(safe_name(&p.model_name_or_path))
                    .join(&p.instance_id),
            }),
            None => unknown.push(p.instance_id.clone()),
        }
    }
    let pb = bar(jobs.len(), o.progress);
    let next = AtomicUsize::new(0);
    let resumed = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, InstanceReport)>> = Mutex::new(Vec::new());
    let workers = o.jobs.clamp(1, 64).min(jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(j) = jobs.get(i) else { break };
                    pb.set_message(j.task.instance_id.clone());
                    let rep = match resume(&j.out) {
                        Some(r) => {
                            resumed.fetch_add(1, Ordering::SeqCst);
                            r
                        }
                        None => o.harness.grade(
                            j.task,
                            &j.prediction.model_name_or_path,
                            PatchChoice::Model(j.prediction.model_patch.as_deref()),
                            &j.out,
                        ),
                    };
                    pb.inc(1);
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((i, rep));
                }
            });
        }
    });
    pb.finish_and_clear();
    let mut reps = results.into_inner().unwrap_or_else(|p| p.into_inner());
    reps.sort_by_key(|(i, _)| *i);
    let reps: Vec<InstanceReport> = reps.into_iter().map(|(_, r)| r).collect();
    let summary = summarise(
        o.tasks.len(),
        o.predictions.len(),
        &reps,
        unknown,
        resumed.into_inner(),
        o.harness,
    );
    (summary, reps)
}

fn summarise(
    total: usize,
    submitted: usize,
    reps: &[InstanceReport],
    unknown_ids: Vec<String>,
    resumed: usize,
    h: &Harness,
) -> Summary {
    let ids = |f: &dyn Fn(&InstanceReport) -> bool| -> Vec<String> {
        let s: BTreeSet<String> = reps
            .iter()
            .filter(|r| f(r))
            .map(|r| r.instance_id.clone())
            .collect();
        s.into_iter().collect()
    };
    let tests_ran = |o: Outcome| {
        matches!(
            o,
            Outcome::Resolved | Outcome::Unresolved | Outcome::Inconsistent
        )
    };
    let completed_ids = ids(&|r| tests_ran(r.status));
    let resolved_ids = ids(&|r| r.status == Outcome::Resolved);
    let unresolved_ids = ids(&|r| tests_ran(r.status) && r.status != Outcome::Resolved);
    let empty_patch_ids = ids(&|r| r.status == Outcome::EmptyPatch);
    let error_ids = ids(&|r| !tests_ran(r.status) && r.status != Outcome::EmptyPatch);
    let infrastructure_ids = ids(&|r| r.status.is_infrastructure());
    let mut by_outcome = BTreeMap::new();
    for r in reps {
        *by_outcome.entry(r.status.name().to_string()).or_insert(0) += 1;
    }
    Summary {
        total_instances: total,
        submitted_instances: submitted,
        completed_instances: completed_ids.len(),
        resolved_instances: resolved_ids.len(),
        unresolved_instances: unresolved_ids.len(),
        empty_patch_instances: empty_patch_ids.len(),
        error_instances: error_ids.len(),
        all_graded: infrastructure_ids.is_empty() && unknown_ids.is_empty(),
        completed_ids,
        resolved_ids,
        unresolved_ids,
        empty_patch_ids,
        error_ids,
        infrastructure_ids,
        unknown_ids,
        by_outcome,
        resumed,
        runner: h.runner.name().to_string(),
        sandboxed: h.runner.sandboxed(),
    }
}

/// Escapes text for XML attributes and content; drops characters XML 1.0 forbids.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// One JUnit test case per instance: resolved passes, unresolved fails,
/// infrastructure outcomes are errors, empty patches are skipped.
pub fn junit_xml(reps: &[InstanceReport]) -> String {
    let fails = reps
        .iter()
        .filter(|r| r.status.is_graded() && !r.resolved && r.status != Outcome::EmptyPatch)
        .count();
    let errors = reps.iter().filter(|r| r.status.is_infrastructure()).count();
    let skipped = reps
        .iter()
        .filter(|r| r.status == Outcome::EmptyPatch)
        .count();
    let time: f64 = reps
        .iter()
        .map(|r| r.timings_ms.total as f64 / 1000.0)
        .sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"runproof\" tests=\"{}\" failures=\"{fails}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.3}\">",
        reps.len()
    );
    let mut by_model: BTreeMap<&str, Vec<&InstanceReport>> = BTreeMap::new();
    for r in reps {
        by_model.entry(&r.model_name_or_path).or_default().push(r);
    }
    for (model, rs) in by_model {
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\">",
            xml_escape(model),
            rs.len()
        );
        for r in rs {
            let _ = write!(
                x,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                xml_escape(model),
                xml_escape(&r.instance_id),
                r.timings_ms.total as f64 / 1000.0
            );
            let msg = xml_escape(r.detail.as_deref().unwrap_or(""));
            let mut body = String::new();
            for f in &r.neutralised {
                let _ = writeln!(body, "neutralised {}: {}", f.path, f.reason);
            }
            for t in &r.fail_to_pass.failure {
                let _ = writeln!(body, "FAIL_TO_PASS failed: {t}");
            }
            for t in &r.pass_to_pass.failure {
                let _ = writeln!(body, "PASS_TO_PASS failed: {t}");
            }
            let body = xml_escape(&body);
            match r.status {
                Outcome::Resolved => x.push_str("/>\n"),
                Outcome::EmptyPatch => {
                    let _ = writeln!(x, "><skipped message=\"{msg}\"/></testcase>");
                }
                s if s.is_graded() => {
                    let _ = writeln!(
                        x,
                        "><failure type=\"{}\" message=\"{msg}\">{body}</failure></testcase>",
                        s.name()
                    );
                }
                s => {
                    let _ = writeln!(
                        x,
                        "><error type=\"{}\" message=\"{msg}\">{body}</error></testcase>",
                        s.name()
                    );
                }
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// Cuts and cleans a value for one table cell: no control characters.
fn cell(s: &str, w: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= w {
        clean
    } else {
        let mut o: String = clean.chars().take(w.saturating_sub(1)).collect();
        o.push('…');
        o
    }
}

/// The text table people read.
pub fn text_table(reps: &[InstanceReport]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<28} {:<16} {:<20} {:>7} {:>7}  notes",
        "instance", "model", "status", "F2P", "P2P"
    );
    for r in reps {
        let frac = |s: &crate::grade::Split| {
            let n = s.success.len() + s.failure.len();
            if n == 0 {
                "-".to_string()
            } else {
                format!("{}/{}", s.success.len(), n)
            }
        };
        let mut notes = Vec::new();
        if !r.neutralised.is_empty() {
            let ps: Vec<&str> = r.neutralised.iter().map(|f| f.path.as_str()).collect();
            notes.push(format!("neutralised {}", ps.join(", ")));
        }
        if !r.flaky.is_empty() {
            notes.push(format!("{} flaky", r.flaky.len()));
        }
        if !r.warnings.is_empty() {
            notes.push(format!("{} warnings", r.warnings.len()));
        }
        if r.status != Outcome::Resolved
            && r.status != Outcome::Unresolved
            && let Some(d) = &r.detail
        {
            notes.push(d.clone());
        }
        let _ = writeln!(
            o,
            "{:<28} {:<16} {:<20} {:>7} {:>7}  {}",
            cell(&r.instance_id, 28),
            cell(&r.model_name_or_path, 16),
            r.status.name(),
            frac(&r.fail_to_pass),
            frac(&r.pass_to_pass),
            cell(&notes.join("; "), 120)
        );
    }
    let resolved = reps.iter().filter(|r| r.resolved).count();
    let infra = reps.iter().filter(|r| r.status.is_infrastructure()).count();
    let _ = writeln!(
        o,
        "\n{resolved} of {} resolved, {infra} infrastructure failures",
        reps.len()
    );
    o
}

/// Writes `summary.json`, `junit.xml` and `summary.txt` into `out`.
pub fn write_outputs(
    out: &Path,
    summary: &Summary,
    reps: &[InstanceReport],
) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_vec_pretty(summary).unwrap_or_default(),
    )?;
    std::fs::write(out.join("junit.xml"), junit_xml(reps))?;
    std::fs::write(out.join("summary.txt"), text_table(reps))?;
    Ok(())
}

/// Validation verdict for one task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskValidation {
    pub instance_id: String,
    /// `ok`, `flaky` or `broken`.
    pub verdict: &'static str,
    pub reasons: Vec<String>,
    pub flaky_tests: Vec<String>,
    pub gold_outcomes: Vec<String>,
    pub base_outcomes: Vec<String>,
}

/// `task validate`: runs the gold patch and the base `runs` times each, and
/// labels the task broken (gold does not resolve, FAIL_TO_PASS passes at the
/// base, PASS_TO_PASS fails with the gold patch, infrastructure failures) or
/// flaky (a test's result differs between runs of the same patch).
pub fn validate_task(h: &Harness, task: &Task, runs: u32, out: &Path) -> TaskValidation {
    let runs = runs.max(1);
    let mut gold = Vec::new();
    let mut base = Vec::new();
    // No reruns during validation: flakiness is what we want to see.
    let h = Harness {
        reruns: 0,
        ..h.clone()
    };
    for i in 0..runs {
        gold.push(h.grade(
            task,
            "gold",
            PatchChoice::Gold,
            &out.join(format!("gold-{i}")),
        ));
        base.push(h.grade(
            task,
            "base",
            PatchChoice::Empty,
            &out.join(format!("base-{i}")),
        ));
    }
    let mut reasons = Vec::new();
    let mut flaky = BTreeSet::new();
    for (label, reps) in [("gold", &gold), ("base", &base)] {
        if let Some(r) = reps
            .iter()
            .find(|r| r.status.is_infrastructure() || r.status == Outcome::Inconsistent)
        {
            reasons.push(format!(
                "{label} run: {} ({})",
                r.status.name(),
                r.detail.as_deref().unwrap_or("")
            ));
        }
    }
    let status_of = |r: &InstanceReport, id: &str| -> Option<bool> {
        if !matches!(r.status, Outcome::Resolved | Outcome::Unresolved) {
            return None;
        }
        Some(
            r.fail_to_pass
                .success
                .iter()
                .chain(&r.pass_to_pass.success)
                .any(|s| s == id),
        )
    };
    let all_ids: Vec<&String> = task.fail_to_pass.iter().chain(&task.pass_to_pass).collect();
    for id in &all_ids {
        for reps in [&gold, &base] {
            let seen: BTreeSet<bool> = reps.iter().filter_map(|r| status_of(r, id)).collect();
            if seen.len() > 1 {
                flaky.insert(id.to_string());
            }
        }
    }
    let gold_ok: Vec<bool> = gold.iter().map(|r| r.resolved).collect();
    if !gold_ok.iter().any(|x| *x) && reasons.is_empty() {
        let r = &gold[0];
        reasons.push(format!(
            "gold patch does not resolve: FAIL_TO_PASS failing {:?}, PASS_TO_PASS failing {:?}",
            r.fail_to_pass.failure, r.pass_to_pass.failure
        ));
    }
    for id in &task.fail_to_pass {
        if !flaky.contains(id) && base.iter().all(|r| status_of(r, id) == Some(true)) {
            reasons.push(format!("FAIL_TO_PASS test passes at the base: {id}"));
        }
    }
    for id in &task.pass_to_pass {
        if !flaky.contains(id) && base.iter().all(|r| status_of(r, id) == Some(false)) {
            reasons.push(format!("PASS_TO_PASS test fails at the base: {id}"));
        }
    }
    let verdict = if !reasons.is_empty() {
        "broken"
    } else if !flaky.is_empty() {
        "flaky"
    } else {
        "ok"
    };
    TaskValidation {
        instance_id: task.instance_id.clone(),
        verdict,
        reasons,
        flaky_tests: flaky.into_iter().collect(),
        gold_outcomes: gold.iter().map(|r| r.status.name().to_string()).collect(),
        base_outcomes: base.iter().map(|r| r.status.name().to_string()).collect(),
    }
}
