//! runproof-task owns the task and prediction model (SWE-bench compatible),
//! patch validation and application, test-report parsers and the
//! FAIL_TO_PASS / PASS_TO_PASS verdict.
//!
//! It must never trust anything the graded patch produced: reports and logs
//! from inside a sandbox are hostile input, parsed outside it, bounded in size.

pub mod model;
pub mod parse;

pub use model::{LoadError, Prediction, RepoSource, Task, load_predictions, load_tasks};
pub use parse::{Status, TestFormat, TestResults};
pub mod gaming;
pub mod patch;
pub mod runner;

pub use runner::{DirectRunner, RunRequest, RunResult, RunnerError, TestRunner};
