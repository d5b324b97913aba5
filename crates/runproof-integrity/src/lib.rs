//! runproof-integrity owns honest scores: leak-free environments (git history
//! and cache sanitising, leak scans), retrieval detection in what an agent did,
//! and patch similarity to the known fix.
//!
//! It must never modify the user's source repository (it prepares copies), and
//! must treat trajectories and workspaces as hostile input: bounded, never run.
//! git is always called with an argument vector and with every config hook that
//! could run code from a scanned repository turned off.
//!
//! Entry points: [`prepare::prepare`] builds a workspace with nothing to retrieve,
//! [`check::check`] lists every leak in an existing one, [`audit::audit`] labels
//! a trajectory `clean`, `retrieved` or `suspicious`, and
//! [`similarity::similarity`] compares a patch with the reference fix.

pub mod audit;
pub mod check;
pub mod cli;
pub mod envscan;
pub mod error;
pub mod git;
pub mod objects;
pub mod prepare;
pub mod shell;
pub mod similarity;
pub mod task;
pub mod trajectory;

pub use error::{Error, Result};
