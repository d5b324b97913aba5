//! What a run reports: which layers were enforced and how the command ended.

use serde::Serialize;

/// The state of one enforcement layer on this kernel, for this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerState {
    /// Fully in force.
    Enforced,
    /// In force, with less than the policy asked for (the detail says what).
    Partial,
    /// Not available on this kernel; the run only proceeds when the policy
    /// does not require it.
    Unavailable,
    /// Not requested by the policy.
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerStatus {
    pub layer: String,
    pub state: LayerState,
    pub detail: String,
}

impl LayerStatus {
    pub fn new(layer: &str, state: LayerState, detail: impl Into<String>) -> Self {
        LayerStatus {
            layer: layer.to_string(),
            state,
            detail: detail.into(),
        }
    }
}

/// How a sandboxed command ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExitReport {
    /// The command's exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that ended the command, when one did.
    pub signal: Option<i32>,
    /// The exit status `runproof run` itself returns (see `--help`).
    pub exit_status: i32,
    pub timed_out: bool,
    /// Why the run was stopped from outside (e.g. the budget was spent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    pub oom_killed: bool,
    pub cpu_limit_exceeded: bool,
    pub wall_s: f64,
    pub user_cpu_s: f64,
    pub system_cpu_s: f64,
    pub peak_memory_bytes: Option<u64>,
    /// Where the peak memory figure came from (`cgroup v1`, `cgroup v2`,
    /// `rusage`: the largest single process).
    pub peak_memory_source: String,
    /// Protected workspace paths that the run changed and that were restored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restored: Vec<String>,
}

/// Exit statuses of `runproof run`.
pub mod exit {
    /// A limit ended the command: the wall-clock limit, or a stop from
    /// outside such as a spent budget.
    pub const TIMEOUT: i32 = 124;
    /// The sandbox could not be set up; the command did not run.
    pub const SETUP: i32 = 125;
    /// The command was found but could not be executed.
    pub const NOT_EXECUTABLE: i32 = 126;
    /// The command was not found in the sandbox.
    pub const NOT_FOUND: i32 = 127;
    /// The memory limit killed the command (128 + SIGKILL).
    pub const OOM: i32 = 137;
    /// The CPU-time limit ended the command (128 + SIGXCPU).
    pub const CPU: i32 = 152;
}
