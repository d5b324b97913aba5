//! Jobs: what a worker runs (a [`JobSpec`]: one task object and one
//! prediction), how it runs it (the same [`Harness::grade`] as `runproof
//! verify`, every command in a fresh sandbox) and what it sends back (a
//! [`JobResult`]: the SWE-bench `report.json` and a bounded log tail).

use runproof_task::model::{parse_task, task_to_json};
use runproof_task::{
    Harness, InstanceReport, PatchChoice, RunRequest, RunResult, RunnerError, StopSignal, Task,
    TestRunner,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most bytes of the test log kept with a result (its tail).
pub const MAX_LOG_TAIL: usize = 64 * 1024;
/// Largest result accepted from a worker (report plus log tail).
pub const MAX_RESULT_BYTES: usize = 8 * 1024 * 1024;
/// Largest job message (the task object and the patch).
pub const MAX_JOB_BYTES: usize = 40 * 1024 * 1024;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Stored, waiting for a worker.
    Queued,
    /// A worker took it (see `attempt` and `worker`).
    Running,
    /// Graded: the report holds the verdict.
    Done,
    /// Could not be graded at all (the worker could not read the job).
    Failed,
    /// Cancelled before it finished; a late result is discarded.
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
    ];
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<JobState> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }
    /// Nothing more happens to a job in this state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Everything a worker needs to grade one prediction, on any host: the task
/// as a task-file object (so it travels as JSON) and the prediction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub task: Map<String, Value>,
    pub model_name_or_path: String,
    /// `None`: the prediction had no patch (graded `empty_patch`).
    pub model_patch: Option<String>,
    /// Reruns of the test command while target tests fail.
    #[serde(default)]
    pub reruns: u32,
}

impl JobSpec {
    pub fn new(task: &Task, model: &str, patch: Option<String>, reruns: u32) -> JobSpec {
        JobSpec {
            task: task_to_json(task),
            model_name_or_path: model.to_string(),
            model_patch: patch,
            reruns,
        }
    }
    pub fn instance_id(&self) -> &str {
        self.task
            .get("instance_id")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// The message a job travels in over NATS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    pub job_id: String,
    pub spec: JobSpec,
}

/// What a worker reports for one attempt at a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobResult {
    pub job_id: String,
    /// 1 for the first delivery of the job, 2 for its redelivery, ...
    pub attempt: i64,
    pub worker: String,
    /// `report.json` as `runproof verify` writes it; `None` when the job
    /// could not be graded at all (see `error`).
    pub report: Option<Value>,
    /// The end of `test_output.txt`, at most [`MAX_LOG_TAIL`] bytes.
    pub log_tail: String,
    pub error: Option<String>,
}

/// The figures the job list shows, read from a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    pub outcome: String,
    pub resolved: bool,
    pub f2p_passed: i64,
    pub f2p_total: i64,
    pub p2p_passed: i64,
    pub p2p_total: i64,
}

impl JobResult {
    /// Checks a result received from a worker: bounded, for this job, and
    /// its report is one the grader writes. Returns the verdict to list.
    pub fn verdict(&self) -> Result<Option<Verdict>, String> {
        if self.log_tail.len() > MAX_LOG_TAIL + LOG_CUT.len() {
            return Err(format!(
                "log tail is {} bytes, over {MAX_LOG_TAIL}",
                self.log_tail.len()
            ));
        }
        let Some(v) = &self.report else {
            if self.error.is_none() {
                return Err("result has neither a report nor an error".into());
            }
            return Ok(None);
        };
        let r = InstanceReport::from_swebench(v)
            .ok_or("report is not a runproof report.json (no `runproof` section)")?;
        let key_ok = v
            .as_object()
            .is_some_and(|o| o.len() == 1 && o.contains_key(&r.instance_id));
        if !key_ok {
            return Err("report must hold exactly its own instance".into());
        }
        let n = |x: usize| x as i64;
        Ok(Some(Verdict {
            outcome: r.status.name().to_string(),
            resolved: r.resolved,
            f2p_passed: n(r.fail_to_pass.success.len()),
            f2p_total: n(r.fail_to_pass.success.len() + r.fail_to_pass.failure.len()),
            p2p_passed: n(r.pass_to_pass.success.len()),
            p2p_total: n(r.pass_to_pass.success.len() + r.pass_to_pass.failure.len()),
        }))
    }
}

/// Set by a cancel request: the job's test command that is running is
/// stopped (with everything it started), and no other test command starts.
#[derive(Debug, Default, Clone)]
pub struct CancelFlag(Arc<StopSignal>);

const CANCELLED: &str = "the job was cancelled";

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.stop(CANCELLED);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.reason().is_some()
    }
}

/// The harness's runner, cancellable: a cancel stops the test run in
/// progress (the sandbox's supervisor sees it within 200 ms) and refuses
/// every later one. Environment builds (clone, `setup`) are neither stopped
/// nor refused: the environment is cached and shared with other jobs, and a
/// stopped setup command would be cached as a failed environment for all of
/// them. Test runs are the requests with a report directory.
struct Cancellable {
    inner: Arc<dyn TestRunner>,
    flag: CancelFlag,
}

impl TestRunner for Cancellable {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn sandboxed(&self) -> bool {
        self.inner.sandboxed()
    }
    fn run(&self, req: &RunRequest) -> Result<RunResult, RunnerError> {
        if req.report_dir.is_none() {
            return self.inner.run(req);
        }
        if self.flag.is_cancelled() {
            return Err(RunnerError::Other(CANCELLED.into()));
        }
        let req = RunRequest {
            stop: Some(self.flag.0.clone()),
            ..req.clone()
        };
        self.inner.run(&req)
    }
}

/// How this process grades jobs.
#[derive(Clone)]
pub struct Grader {
    pub harness: Harness,
    /// Scratch space: one directory per attempt, removed afterwards.
    pub work_dir: PathBuf,
    /// Relative `repo_path`s in a job's task resolve here (they are made
    /// absolute before a job is stored, so this is a fallback only).
    pub base_dir: PathBuf,
}

/// Reads at most `max` bytes from the end of a file, cut at a character
/// boundary, lossily decoded.
pub fn file_tail(path: &Path, max: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max as u64);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::with_capacity(max.min(len as usize));
    let _ = f.take(max as u64).read_to_end(&mut buf);
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    let mut cut = start > 0;
    if s.len() > max {
        // Invalid bytes grew into replacement characters.
        let mut from = s.len() - max;
        while !s.is_char_boundary(from) {
            from += 1;
        }
        s.drain(..from);
        cut = true;
    }
    if cut {
        s.insert_str(0, LOG_CUT);
    }
    s
}

const LOG_CUT: &str = "[runproof: earlier output left out]\n";

impl Grader {
    /// Grades one attempt at a job. Blocking (it runs sandboxes); never
    /// panics on bad input: a job that cannot be read comes back with
    /// `report: None` and the reason in `error`.
    pub fn run(
        &self,
        job_id: &str,
        attempt: i64,
        worker: &str,
        spec: &JobSpec,
        cancel: &CancelFlag,
    ) -> JobResult {
        let mut res = JobResult {
            job_id: job_id.to_string(),
            attempt,
            worker: worker.to_string(),
            report: None,
            log_tail: String::new(),
            error: None,
        };
        let task = match parse_task(&spec.task, Path::new("job task"), &self.base_dir) {
            Ok(t) => t,
            Err(e) => {
                res.error = Some(e.to_string());
                return res;
            }
        };
        let dir = self
            .work_dir
            .join(runproof_task::eval::safe_name(job_id))
            .join(format!("attempt-{attempt}"));
        let _ = std::fs::remove_dir_all(&dir);
        let harness = Harness {
            runner: Arc::new(Cancellable {
                inner: self.harness.runner.clone(),
                flag: cancel.clone(),
            }),
            reruns: spec.reruns,
            ..self.harness.clone()
        };
        let rep = harness.grade(
            &task,
            &spec.model_name_or_path,
            PatchChoice::Model(spec.model_patch.as_deref()),
            &dir,
        );
        res.log_tail = file_tail(&dir.join("test_output.txt"), MAX_LOG_TAIL);
        res.report = Some(rep.to_swebench());
        let _ = std::fs::remove_dir_all(&dir);
        res
    }
}
