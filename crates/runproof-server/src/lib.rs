//! runproof-server owns the service layer: the HTTP JSON API and dashboard
//! of `runproof serve`, the job store (SQLite embedded, PostgreSQL shared),
//! the embedded worker pool, and the NATS JetStream work queue that
//! `runproof worker` processes on other hosts pull from.
//!
//! It must never grade outside the sandbox (jobs run through the same
//! `runproof_task::Harness` and `SandboxRunner` as `runproof verify`), trust
//! what a job produced before the grader parsed it outside the sandbox,
//! store a job's result twice, or answer on a non-loopback address without a
//! token. Everything a client or a job controlled is bounded and escaped
//! before it reaches the dashboard.

pub mod api;
pub mod cli;
pub mod dashboard;
pub mod http;
pub mod job;
pub mod pool;
pub mod queue;
pub mod store;
pub mod testing;

pub use job::{JobResult, JobSpec, JobState};
pub use store::{Store, StoreError};

/// A new identifier: `PREFIX-` + 11 hex digits of Unix milliseconds + 16
/// random hex digits, so ids sort by creation time and never collide across
/// servers.
pub fn new_id(prefix: &str) -> String {
    use std::io::Read;
    let mut r = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut r))
        .is_ok();
    if !ok {
        // Still unique within this process; unlikely across processes.
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst) ^ ((std::process::id() as u64) << 32);
        r = n.to_le_bytes();
    }
    let rand: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{:011x}-{rand}", store::now_ms().max(0))
}
