//! runproof-sandbox owns Linux confinement: namespaces, the mount view,
//! seccomp, Landlock, cgroup limits, copy-on-write workspaces, watching a
//! workspace for changes from the host, the policy type
//! and the audit events a sandbox emits.
//!
//! It must never run a command with less confinement than the policy asks for:
//! when a required layer cannot be set up, the command does not run (fail
//! closed), and every layer reports what it could and could not enforce.
//!
//! Entry points: [`run`] runs one command; [`doctor`] reports what this
//! kernel supports. See `ARCHITECTURE.md` at the repository root for the
//! process tree and the invariants each layer keeps.

pub mod audit;
pub mod cgroup;
mod child;
pub mod env;
pub mod error;
pub mod guard;
mod ipc;
pub mod landlock_layer;
pub mod mounts;
pub mod notify;
pub mod overlay;
pub mod policy;
mod probe;
pub mod protected;
mod pty;
pub mod report;
mod run;
pub mod seccomp;
pub mod watch;

pub use error::{PolicyError, SandboxError};
pub use policy::Policy;
pub use probe::doctor;
pub use report::{ExitReport, LayerState, LayerStatus};
pub use run::{
    ExecGate, ListenerHook, RunOutcome, RunSpec, Stdio, StopSignal, TickHook, resolve_workspace,
    run,
};
