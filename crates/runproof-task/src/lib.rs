//! runproof-task owns the task and prediction model (SWE-bench compatible),
//! patch validation and application, test-report parsers and the
//! FAIL_TO_PASS / PASS_TO_PASS verdict.
//!
//! It must never trust anything the graded patch produced: reports and logs
//! from inside a sandbox are hostile input, parsed outside it, bounded in size.
//!
//! Execution goes through two seams so the sandbox can take over without
//! touching the grading logic: [`runner::TestRunner`] (run one command) and
//! [`env::Workspaces`] (cached environments and per-instance workspaces,
//! copy-on-write over the cache where the kernel allows it).

pub mod cli;
pub mod env;
pub mod eval;
pub mod gaming;
pub mod grade;
pub mod model;
pub mod parse;
pub mod patch;
pub mod runner;
pub mod sandbox_runner;

pub use env::{
    Env, EnvCache, EnvError, EnvSpec, Layout, Tree, Workspace, WorkspaceMode, Workspaces,
};
pub use grade::{Harness, InstanceReport, Outcome, PatchChoice};
pub use model::{LoadError, Prediction, RepoSource, Task, load_predictions, load_tasks};
pub use parse::{Status, TestFormat, TestResults};
pub use runner::{CowRoot, DirectRunner, RunRequest, RunResult, RunnerError, TestRunner};
/// What [`RunRequest::stop`] takes: a cross-thread request to end a run.
pub use runproof_sandbox::StopSignal;
pub use sandbox_runner::{NetworkAccess, SandboxRunner};
