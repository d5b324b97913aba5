//! runproof-sandbox owns Linux confinement: namespaces, the mount view,
//! seccomp, Landlock, cgroup limits, copy-on-write workspaces, the policy type
//! and the audit events a sandbox emits.
//!
//! It must never run a command with less confinement than the policy asks for:
//! when a required layer cannot be set up, the command does not run (fail
//! closed), and every layer reports what it could and could not enforce.

pub mod overlay;
pub mod protected;
