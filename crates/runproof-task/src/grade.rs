//! Grading one patch against one task: workspace, patch, neutralisation, test
//! patch, test run, parse, verdict. The verdict is computed here, outside the
//! runner, from bounded output; nothing the tests print can set it directly.

use crate::env::{EnvError, EnvSpec, Tree, Workspaces};
use crate::gaming::{self, Finding, TaskView};
use crate::model::{Task, truncate};
use crate::parse::{self, ParseInput, Status, TestFormat, TestResults};
use crate::patch::{self, ApplyMethod, PatchError};
use crate::runner::{RunRequest, RunResult, TestRunner, base_env};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most report files read from one run, and the most bytes of each.
const MAX_REPORT_FILES: usize = 64;
const MAX_REPORT_FILE_BYTES: u64 = crate::parse::MAX_PARSE_BYTES as u64;

/// Final state of one graded instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every FAIL_TO_PASS test passes and every PASS_TO_PASS test still passes.
    Resolved,
    /// The tests ran and some FAIL_TO_PASS or PASS_TO_PASS test did not pass.
    Unresolved,
    /// The runner's exit status contradicts the parsed results; not resolved.
    Inconsistent,
    /// The prediction has no patch (not run).
    EmptyPatch,
    /// The patch was refused (not a diff, unsafe path, symlink).
    PatchRefused,
    /// The patch is a valid diff but applies to the base by no method.
    PatchDidNotApply,
    /// The task's own test patch did not apply (broken task).
    TestPatchFailed,
    /// Cloning, checkout or `setup` failed.
    SetupFailed,
    Timeout,
    OutOfMemory,
    /// The harness itself failed (runner could not start, I/O).
    HarnessError,
}

impl Outcome {
    /// A final judgement of the patch (resuming skips these). Infrastructure
    /// outcomes are retried on resume and make `eval` exit non-zero.
    pub fn is_graded(self) -> bool {
        matches!(
            self,
            Outcome::Resolved
                | Outcome::Unresolved
                | Outcome::Inconsistent
                | Outcome::EmptyPatch
                | Outcome::PatchRefused
                | Outcome::PatchDidNotApply
        )
    }
    pub fn is_infrastructure(self) -> bool {
        !self.is_graded()
    }
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Resolved => "resolved",
            Outcome::Unresolved => "unresolved",
            Outcome::Inconsistent => "inconsistent",
            Outcome::EmptyPatch => "empty_patch",
            Outcome::PatchRefused => "patch_refused",
            Outcome::PatchDidNotApply => "patch_did_not_apply",
            Outcome::TestPatchFailed => "test_patch_failed",
            Outcome::SetupFailed => "setup_failed",
            Outcome::Timeout => "timeout",
            Outcome::OutOfMemory => "out_of_memory",
            Outcome::HarnessError => "harness_error",
        }
    }
}

/// SWE-bench's `{success, failure}` pair.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Split {
    pub success: Vec<String>,
    pub failure: Vec<String>,
}

/// Milliseconds spent in each step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    pub environment: u64,
    pub workspace: u64,
    pub patch: u64,
    /// The test runs as the harness saw them, sandbox set-up included.
    pub test_run: u64,
    /// The test command itself, by the sandbox's clock (`test_run` minus the
    /// sandbox's set-up and teardown).
    pub test_command: u64,
    pub parse: u64,
    /// Handing the workspace to the remover (a background thread that the
    /// process waits for before it exits).
    pub cleanup: u64,
    pub total: u64,
}

/// Everything known about one graded instance. Serialised in SWE-bench's
/// report shape by [`InstanceReport::to_swebench`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceReport {
    pub instance_id: String,
    pub model_name_or_path: String,
    pub status: Outcome,
    pub resolved: bool,
    /// Human explanation for anything but a plain resolved/unresolved.
    pub detail: Option<String>,
    pub patch_is_none: bool,
    pub patch_exists: bool,
    pub patch_successfully_applied: bool,
    pub apply_method: Option<ApplyMethod>,
    pub fail_to_pass: Split,
    pub pass_to_pass: Split,
    /// Model-patch changes reverted to the base before grading.
    pub neutralised: Vec<Finding>,
    /// Suspicious changes kept.
    pub warnings: Vec<Finding>,
    /// Tests that failed, then passed on a rerun (counted as passed).
    pub flaky: Vec<String>,
    pub runs: u32,
    pub exit_code: Option<i32>,
    pub exit_consistent: Option<bool>,
    pub test_format: Option<TestFormat>,
    pub tests_parsed: usize,
    pub output_truncated: bool,
    pub runner: String,
    pub sandboxed: bool,
    pub unenforced: Vec<String>,
    pub env_key: Option<String>,
    pub env_built: bool,
    /// How the workspace was made: `overlay` (copy-on-write over the cached
    /// environment) or `copy`.
    #[serde(default)]
    pub workspace: Option<String>,
    /// Why copy-on-write was not used, when it was wanted.
    #[serde(default)]
    pub workspace_note: Option<String>,
    /// Where the workspace (a copy-on-write workspace's upper layer) lived:
    /// under `--out` when kept, else on the scratch tmpfs when there is one.
    #[serde(default)]
    pub workspace_dir: Option<String>,
    pub timings_ms: Timings,
}

impl InstanceReport {
    fn new(task: &Task, model: &str, runner: &dyn TestRunner) -> Self {
        InstanceReport {
            instance_id: task.instance_id.clone(),
            model_name_or_path: model.to_string(),
            status: Outcome::HarnessError,
            resolved: false,
            detail: None,
            patch_is_none: false,
            patch_exists: false,
            patch_successfully_applied: false,
            apply_method: None,
            fail_to_pass: Split::default(),
            pass_to_pass: Split::default(),
            neutralised: Vec::new(),
            warnings: Vec::new(),
            flaky: Vec::new(),
            runs: 0,
            exit_code: None,
            exit_consistent: None,
            test_format: None,
            tests_parsed: 0,
            output_truncated: false,
            runner: runner.name().to_string(),
            sandboxed: runner.sandboxed(),
            unenforced: Vec::new(),
            env_key: None,
            env_built: false,
            workspace: None,
            workspace_note: None,
            workspace_dir: None,
            timings_ms: Timings::default(),
        }
    }

    /// `{instance_id: {...}}` as SWE-bench's harness writes `report.json`,
    /// with runproof's additions under `"runproof"`.
    pub fn to_swebench(&self) -> serde_json::Value {
        let empty = Split::default();
        serde_json::json!({
            self.instance_id.clone(): {
                "patch_is_None": self.patch_is_none,
                "patch_exists": self.patch_exists,
                "patch_successfully_applied": self.patch_successfully_applied,
                "resolved": self.resolved,
                "tests_status": {
                    "FAIL_TO_PASS": self.fail_to_pass,
                    "PASS_TO_PASS": self.pass_to_pass,
                    "FAIL_TO_FAIL": empty,
                    "PASS_TO_FAIL": empty,
                },
                "runproof": self,
            }
        })
    }

    /// Reads back a report written by [`InstanceReport::to_swebench`].
    pub fn from_swebench(v: &serde_json::Value) -> Option<Self> {
        let (_, inner) = v.as_object()?.iter().next()?;
        serde_json::from_value(inner.get("runproof")?.clone()).ok()
    }
}

/// Which patch to grade.
#[derive(Debug, Clone, Copy)]
pub enum PatchChoice<'a> {
    /// A model's patch; `None` means the prediction had no patch.
    Model(Option<&'a str>),
    /// The task's reference fix.
    Gold,
    /// No patch: run the tests at the base (baseline).
    Empty,
}

/// The grading pipeline over the two seams.
#[derive(Clone)]
pub struct Harness {
    pub runner: Arc<dyn TestRunner>,
    pub workspaces: Arc<dyn Workspaces>,
    /// Reruns of the test command while FAIL_TO_PASS/PASS_TO_PASS tests fail.
    pub reruns: u32,
    /// Keep each instance's workspace after grading (for debugging).
    pub keep_workspaces: bool,
}

struct Ctx<'a> {
    task: &'a Task,
    out: &'a Path,
    rep: InstanceReport,
    t0: Instant,
}

impl Ctx<'_> {
    fn finish(mut self, status: Outcome, detail: Option<String>) -> InstanceReport {
        self.rep.status = status;
        self.rep.resolved = status == Outcome::Resolved;
        self.rep.detail = detail.map(|d| truncate(&d, 4000));
        self.rep.timings_ms.total = ms(self.t0.elapsed());
        let _ = std::fs::write(
            self.out.join("report.json"),
            serde_json::to_vec_pretty(&self.rep.to_swebench()).unwrap_or_default(),
        );
        let _ = self.task;
        self.rep
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl Harness {
    /// Grades `choice` for `task`, writing `report.json`, `patch.diff`,
    /// `applied.diff` and `test_output.txt` into `out` (created). Never returns
    /// an error: every failure is an [`Outcome`] in the report.
    pub fn grade(
        &self,
        task: &Task,
        model: &str,
        choice: PatchChoice<'_>,
        out: &Path,
    ) -> InstanceReport {
        let t0 = Instant::now();
        let mut cx = Ctx {
            task,
            out,
            rep: InstanceReport::new(task, model, self.runner.as_ref()),
            t0,
        };
        if let Err(e) = std::fs::create_dir_all(out) {
            cx.rep.detail = Some(format!("cannot create {}: {e}", out.display()));
            return cx.rep;
        }
        let _ = std::fs::remove_file(out.join("report.json"));
        let patch_text: Option<&str> = match choice {
            PatchChoice::Model(p) => {
                cx.rep.patch_is_none = p.is_none();
                p
            }
            PatchChoice::Gold => {
                match task.patch.as_deref() {
                    Some(p) => Some(p),
                    None => {
                        return cx.finish(
                        Outcome::HarnessError,
                        Some("the task has no `patch` (gold fix); add one or grade a model patch".into()),
                    );
                    }
                }
            }
            PatchChoice::Empty => None,
        };
        let patch_text = patch_text.filter(|p| !p.trim().is_empty());
        cx.rep.patch_exists = patch_text.is_some();
        if patch_text.is_none() && matches!(choice, PatchChoice::Model(_)) {
            return cx.finish(
                Outcome::EmptyPatch,
                Some("the prediction's model_patch is empty".into()),
            );
        }
        if let Some(p) = patch_text {
            let _ = std::fs::write(out.join("patch.diff"), p);
        }

        // Parse and refuse bad patches before any work.
        let parsed = match patch_text.map(patch::parse).transpose() {
            Ok(p) => p,
            Err(e) => return cx.finish(Outcome::PatchRefused, Some(e.to_string())),
        };
        if let Some(p) = &parsed
            && let Err(e) = p
                .files
                .iter()
                .flat_map(|f| f.paths())
                .try_for_each(patch::check_path)
        {
            return cx.finish(Outcome::PatchRefused, Some(e.to_string()));
        }

        // The test patch is parsed now so that its paths are known before the
        // workspace is made; its errors are reported after the model patch's.
        let test_patch =
            (!task.test_patch.trim().is_empty()).then(|| patch::parse(&task.test_patch));
        let mut touched: BTreeSet<String> = parsed.as_ref().map(|p| p.paths()).unwrap_or_default();
        if let Some(Ok(tp)) = &test_patch {
            touched.extend(tp.paths());
        }

        // Environment (cached) and a fresh workspace.
        let spec = EnvSpec {
            source: &task.source,
            base_commit: &task.base_commit,
            setup: &task.setup,
            timeout: task.timeout,
            memory: task.memory,
        };
        cx.rep.env_key = Some(spec.key());
        let t = Instant::now();
        let env = match self.workspaces.environment(&spec, self.runner.as_ref()) {
            Ok(e) => e,
            Err(e) => {
                cx.rep.timings_ms.environment = ms(t.elapsed());
                return cx.finish(Outcome::SetupFailed, Some(e.to_string()));
            }
        };
        cx.rep.env_built = env.built;
        cx.rep.timings_ms.environment = ms(t.elapsed());
        let t = Instant::now();
        let ws = match self
            .workspaces
            .workspace(&env, &out.join("workspace"), self.keep_workspaces)
            .and_then(|ws| ws.materialise(&touched).map(|()| ws))
        {
            Ok(w) => w,
            Err(e) => return cx.finish(Outcome::HarnessError, Some(e.to_string())),
        };
        cx.rep.workspace = Some(ws.mode_name().to_string());
        cx.rep.workspace_note = ws.note.clone();
        cx.rep.workspace_dir = Some(ws.dir.display().to_string());
        cx.rep.timings_ms.workspace = ms(t.elapsed());
        let tree = ws.tree();
        let repo = tree.work.clone();

        // Both patches with one `git apply` when that is the same as applying
        // them in turn: the environment is clean (no test file to reset), their
        // paths are disjoint, and neither creates a path that exists. Atomic:
        // when it fails nothing changed, and the steps below run one by one.
        let t = Instant::now();
        let mut both_applied = false;
        if let (Some(text), Some(p), Some(Ok(tp))) = (patch_text, &parsed, &test_patch)
            && env.clean()
            && p.paths().is_disjoint(&tp.paths())
            && [p, tp].iter().all(|q| {
                patch::validate(q, &repo).is_ok()
                    && q.files.iter().all(|f| {
                        f.paths().all(|x| {
                            Some(x) == f.old.as_deref()
                                || std::fs::symlink_metadata(repo.join(x)).is_err()
                        })
                    })
            })
        {
            match patch::apply_joined(
                &[(text, p), (&task.test_patch, tp)],
                &tree,
                &out.join(".both.patch"),
            ) {
                Ok(ok) => both_applied = ok,
                Err(e) => return cx.finish(Outcome::HarnessError, Some(e.to_string())),
            }
        }

        // Model patch: validate against the workspace, apply, neutralise.
        if let (Some(text), Some(p)) = (patch_text, &parsed) {
            if let Err(e) = patch::validate(p, &repo) {
                return cx.finish(Outcome::PatchRefused, Some(e.to_string()));
            }
            let applied = if both_applied {
                Ok(ApplyMethod::GitApply)
            } else {
                patch::apply(text, p, &tree, &out.join(".model.patch"))
            };
            match applied {
                Ok(m) => cx.rep.apply_method = Some(m),
                Err(e @ PatchError::DoesNotApply(_)) => {
                    return cx.finish(Outcome::PatchDidNotApply, Some(e.to_string()));
                }
                Err(e) => return cx.finish(Outcome::HarnessError, Some(e.to_string())),
            }
            if let Err(e) = patch::check_applied(&repo, p) {
                return cx.finish(Outcome::PatchRefused, Some(e.to_string()));
            }
            cx.rep.patch_successfully_applied = true;
            if matches!(choice, PatchChoice::Model(_)) {
                let view = TaskView {
                    test_cmd: &task.test_cmd,
                    test_ids: task
                        .fail_to_pass
                        .iter()
                        .chain(&task.pass_to_pass)
                        .map(String::as_str)
                        .collect(),
                };
                let read = |path: &str, after: bool| -> Option<String> {
                    if after {
                        std::fs::read_to_string(repo.join(path)).ok()
                    } else {
                        let o = tree
                            .git()
                            .args(["show", &format!("HEAD:{path}")])
                            .output()
                            .ok()?;
                        o.status
                            .success()
                            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
                    }
                };
                let a = gaming::analyse(p, &view, &read);
                let paths: BTreeSet<String> = a.neutralise.iter().map(|f| f.path.clone()).collect();
                if let Err(e) = patch::restore_paths(&tree, &paths) {
                    return cx.finish(
                        Outcome::HarnessError,
                        Some(format!("cannot neutralise: {e}")),
                    );
                }
                cx.rep.neutralised = a.neutralise;
                cx.rep.warnings = a.warnings;
            }
            let exact =
                cx.rep.apply_method == Some(ApplyMethod::GitApply) && cx.rep.neutralised.is_empty();
            write_applied_diff(&tree, p, text, exact, &out.join("applied.diff"));
        }

        // Test patch: reset the files it touches, then apply it.
        match test_patch {
            None => {}
            Some(Ok(_)) if both_applied => {}
            Some(Err(e)) => {
                return cx.finish(Outcome::TestPatchFailed, Some(format!("test_patch: {e}")));
            }
            Some(Ok(tp)) => {
                let reset = if env.clean() {
                    // Tracked files the model patch left alone are already as
                    // at the base; only its changes, and files in the way of
                    // ones the test patch creates, need resetting.
                    let model = parsed.as_ref().map(|p| p.paths()).unwrap_or_default();
                    tp.files
                        .iter()
                        .flat_map(|f| {
                            f.paths()
                                .filter(|p| {
                                    model.contains(*p)
                                        || (Some(*p) != f.old.as_deref()
                                            && std::fs::symlink_metadata(repo.join(p)).is_ok())
                                })
                                .map(str::to_string)
                                .collect::<Vec<_>>()
                        })
                        .collect()
                } else {
                    tp.paths()
                };
                let res = patch::validate(&tp, &repo)
                    .and_then(|()| patch::restore_paths(&tree, &reset))
                    .and_then(|()| {
                        patch::apply(&task.test_patch, &tp, &tree, &out.join(".test.patch"))
                    });
                if let Err(e) = res {
                    return cx.finish(Outcome::TestPatchFailed, Some(format!("test_patch: {e}")));
                }
            }
        }
        if let Err(e) = ws.seal(&touched) {
            return cx.finish(Outcome::HarnessError, Some(e.to_string()));
        }
        let known = (task.test_format == TestFormat::PytestJunit).then(|| ws.known_files(&touched));
        cx.rep.timings_ms.patch = ms(t.elapsed());

        // Run, parse, rerun.
        let report_dir = out.join("reports");
        let mut log = Vec::new();
        let mut results = TestResults::default();
        let mut first = true;
        let want: Vec<&String> = task.fail_to_pass.iter().chain(&task.pass_to_pass).collect();
        let mut failing_before: BTreeSet<String> = BTreeSet::new();
        for attempt in 0..=self.reruns {
            let _ = std::fs::remove_dir_all(&report_dir);
            if let Err(e) = std::fs::create_dir_all(&report_dir) {
                return cx.finish(
                    Outcome::HarnessError,
                    Some(format!("cannot create {}: {e}", report_dir.display())),
                );
            }
            let mut rq = RunRequest::shell(
                ws.run_repo(),
                &task.test_cmd,
                base_env(&ws.run_home()),
                task.timeout,
            );
            rq.report_dir = Some(report_dir.clone());
            rq.writable.extend(ws.run_writable());
            rq.cow = ws.cow();
            rq.memory = task.memory;
            let t = Instant::now();
            let r = match self.runner.run(&rq) {
                Ok(r) => r,
                Err(e) => return cx.finish(Outcome::HarnessError, Some(e.to_string())),
            };
            cx.rep.timings_ms.test_run += ms(t.elapsed());
            cx.rep.timings_ms.test_command += ms(r.command_wall.unwrap_or(r.wall));
            cx.rep.runs += 1;
            cx.rep.unenforced = r.unenforced.clone();
            cx.rep.output_truncated |= r.output_truncated;
            log.extend_from_slice(format!("$ {}\n", task.test_cmd).as_bytes());
            log.extend_from_slice(&r.combined());
            log.extend_from_slice(
                format!(
                    "\n[runproof: run {} ended: {}]\n",
                    attempt + 1,
                    r.describe()
                )
                .as_bytes(),
            );
            let _ = std::fs::write(out.join("test_output.txt"), &log);
            if let Some(why) = &r.stopped {
                // Ended from outside (a cancel): no verdict on the patch.
                return cx.finish(
                    Outcome::HarnessError,
                    Some(format!("test command stopped: {why}")),
                );
            }
            if r.timed_out {
                return cx.finish(
                    Outcome::Timeout,
                    Some(format!("test command {}", r.describe())),
                );
            }
            if r.oom {
                return cx.finish(
                    Outcome::OutOfMemory,
                    Some("test command ran out of memory".into()),
                );
            }
            let t = Instant::now();
            let parsed = parse_run(task.test_format, &r, &report_dir, known.as_ref());
            cx.rep.timings_ms.parse += ms(t.elapsed());
            if first {
                cx.rep.exit_code = r.exit_code;
                cx.rep.test_format = parsed.format;
                cx.rep.tests_parsed = parsed.tests.len();
                let (ok, note) = consistency(&r, &parsed);
                cx.rep.exit_consistent = Some(ok);
                results = parsed;
                if !ok {
                    let d = format!("{note}; the grade is not trusted");
                    fill_splits(&mut cx.rep, task, &results);
                    return cx.finish(Outcome::Inconsistent, Some(d));
                }
                first = false;
            } else {
                for id in &failing_before {
                    if parsed.tests.get(id).is_some_and(|s| s.is_pass()) {
                        results.tests.insert(id.clone(), Status::Passed);
                        if !cx.rep.flaky.contains(id) {
                            cx.rep.flaky.push(id.clone());
                        }
                    }
                }
            }
            failing_before = want
                .iter()
                .filter(|id| !results.tests.get(id.as_str()).is_some_and(|s| s.is_pass()))
                .map(|s| s.to_string())
                .collect();
            if failing_before.is_empty() {
                break;
            }
        }
        fill_splits(&mut cx.rep, task, &results);
        let resolved =
            cx.rep.fail_to_pass.failure.is_empty() && cx.rep.pass_to_pass.failure.is_empty();
        let detail = (!resolved).then(|| {
            format!(
                "{} of {} FAIL_TO_PASS and {} of {} PASS_TO_PASS tests did not pass",
                cx.rep.fail_to_pass.failure.len(),
                task.fail_to_pass.len(),
                cx.rep.pass_to_pass.failure.len(),
                task.pass_to_pass.len()
            )
        });
        let t = Instant::now();
        drop(ws);
        cx.rep.timings_ms.cleanup = ms(t.elapsed());
        cx.finish(
            if resolved {
                Outcome::Resolved
            } else {
                Outcome::Unresolved
            },
            detail,
        )
    }
}

fn fill_splits(rep: &mut InstanceReport, task: &Task, r: &TestResults) {
    let split = |ids: &[String]| {
        let mut s = Split::default();
        for id in ids {
            if r.tests.get(id).is_some_and(|st| st.is_pass()) {
                s.success.push(id.clone());
            } else {
                s.failure.push(id.clone());
            }
        }
        s
    };
    rep.fail_to_pass = split(&task.fail_to_pass);
    rep.pass_to_pass = split(&task.pass_to_pass);
}

/// Whether the exit status agrees with the parsed results.
fn consistency(r: &RunResult, p: &TestResults) -> (bool, String) {
    let failed = p.failed_count();
    match r.exit_code {
        Some(0) if failed > 0 => (
            false,
            format!("the test command exited 0 but {failed} tests failed in its report"),
        ),
        Some(0) if p.tests.is_empty() => (
            false,
            "the test command exited 0 but no test result was found in its output".into(),
        ),
        Some(c) if c != 0 && failed == 0 && !p.tests.is_empty() => (
            false,
            format!(
                "the test command exited {c} but every one of its {} reported tests passed",
                p.tests.len()
            ),
        ),
        None => (false, format!("the test command was {}", r.describe())),
        _ => (true, String::new()),
    }
}

fn parse_run(
    format: TestFormat,
    r: &RunResult,
    report_dir: &Path,
    known: Option<&HashSet<String>>,
) -> TestResults {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(report_dir) {
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries.into_iter().take(MAX_REPORT_FILES) {
            // Only regular files; a symlink planted by the tests is not followed.
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if !m.is_file() {
                continue;
            }
            let Ok(f) = std::fs::File::open(&p) else {
                continue;
            };
            let mut buf = Vec::new();
            use std::io::Read;
            if f.take(MAX_REPORT_FILE_BYTES).read_to_end(&mut buf).is_ok() {
                files.push((
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    buf,
                ));
            }
        }
    }
    let stdout_only = matches!(
        format,
        TestFormat::GoJson | TestFormat::LibtestJson | TestFormat::JestJson
    );
    let log = if stdout_only {
        r.stdout.clone()
    } else {
        r.combined()
    };
    let input = ParseInput {
        log: &log,
        reports: files
            .iter()
            .map(|(n, b)| (n.clone(), b.as_slice()))
            .collect(),
        known_files: known,
    };
    parse::parse(format, &input)
}

/// Writes the model patch as graded. When `git apply` took it unchanged and
/// nothing was neutralised, that is the patch itself; otherwise the diff is
/// taken from the workspace.
fn write_applied_diff(tree: &Tree, p: &patch::Patch, text: &str, exact: bool, dest: &Path) {
    if exact {
        let _ = std::fs::write(dest, text);
        return;
    }
    let paths: Vec<String> = p.paths().into_iter().collect();
    let _ = tree.git().args(["add", "-N", "--"]).args(&paths).output();
    if let Ok(o) = tree
        .git()
        .args(["diff", "HEAD", "--"])
        .args(&paths)
        .output()
    {
        let _ = std::fs::write(dest, &o.stdout);
    }
    let _ = tree.git().args(["reset", "-q", "--"]).args(&paths).output();
}

/// Groups a slice of reports by outcome (for summaries).
pub fn count_by_outcome(reports: &[InstanceReport]) -> BTreeMap<Outcome, usize> {
    let mut m = BTreeMap::new();
    for r in reports {
        *m.entry(r.status).or_insert(0) += 1;
    }
    m
}

/// Re-export for the error type of environments.
pub type EnvFailure = EnvError;
