//! Audit events: one JSON object per line, each with `t`, the seconds since the
//! run started on a monotonic clock.
//!
//! Events carry data the sandboxed command controls (paths, argv, socket
//! addresses). They are bounded in size when they are read from the sandbox
//! (see `notify`) and always serialised as JSON strings, never interpreted.

use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::report::{ExitReport, LayerStatus};

/// One thing that happened in a sandbox.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// The sandbox is about to start the command.
    Start {
        command: Vec<String>,
        workspace: String,
        policy: serde_json::Value,
        layers: Vec<LayerStatus>,
    },
    /// A process called execve/execveat.
    Exec {
        pid: i32,
        path: String,
        argv: Vec<String>,
        cwd: String,
        /// True when argv was longer than what is logged.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
        /// False for an attempt on a path that does not exist in the
        /// sandbox (a shell searching PATH); such an exec fails.
        #[serde(skip_serializing_if = "std::clone::Clone::clone")]
        found: bool,
    },
    /// A process tried to connect a socket.
    Connect {
        pid: i32,
        family: String,
        address: String,
        allowed: bool,
    },
    /// An operation the sandbox refused.
    Denied {
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<i32>,
        operation: String,
        detail: String,
    },
    /// A request through the egress proxy or the LLM gateway, as the proxy
    /// recorded it (host, port, method, URL, bytes, decision, reason).
    Request(serde_json::Value),
    /// The run ended.
    Exit(ExitReport),
}

/// Where events go. Cheap to clone; writes are serialised by a mutex and
/// flushed per event so a killed run still leaves a readable log.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Mutex<Inner>>,
    start: Instant,
}

struct Inner {
    out: Option<BufWriter<File>>,
    failed: Option<String>,
}

#[derive(Serialize)]
struct Line<'a> {
    t: f64,
    #[serde(flatten)]
    event: &'a Event,
}

impl AuditLog {
    /// An audit log writing JSON lines to `path` (created or truncated).
    pub fn to_file(path: &Path, start: Instant) -> std::io::Result<AuditLog> {
        let f = File::create(path)?;
        Ok(AuditLog {
            inner: Arc::new(Mutex::new(Inner {
                out: Some(BufWriter::new(f)),
                failed: None,
            })),
            start,
        })
    }

    /// An audit log that records nothing (events are still produced for the
    /// run report).
    pub fn disabled(start: Instant) -> AuditLog {
        AuditLog {
            inner: Arc::new(Mutex::new(Inner {
                out: None,
                failed: None,
            })),
            start,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.lock().map(|i| i.out.is_some()).unwrap_or(false)
    }

    pub fn record(&self, event: &Event) {
        let t = self.start.elapsed().as_secs_f64();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let Some(out) = inner.out.as_mut() else {
            return;
        };
        let res = serde_json::to_writer(&mut *out, &Line { t, event })
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        if let Err(e) = res {
            inner.failed.get_or_insert_with(|| e.to_string());
        }
    }

    /// The first write error, if any write failed.
    pub fn write_error(&self) -> Option<String> {
        self.inner.lock().ok().and_then(|i| i.failed.clone())
    }
}
