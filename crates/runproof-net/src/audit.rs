//! Audit events for every request through the proxy or the gateway, written as
//! JSON lines.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

/// One request as the proxy or gateway saw it. Strings that come from the
/// sandbox (host, URL, method) are cut to a bounded length before they get here.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEvent {
    /// RFC 3339 UTC time the request arrived.
    pub time: String,
    /// `proxy` or `gateway`.
    pub component: &'static str,
    /// `connect`, `http`, `socks5` (proxy) or the gateway endpoint.
    pub protocol: &'static str,
    /// Peer address of the client (inside the sandbox, usually 127.0.0.1).
    pub client: Option<String>,
    /// Host name or IP literal the client asked for.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Address actually connected to, after resolution.
    pub resolved: Option<String>,
    pub method: Option<String>,
    pub url: Option<String>,
    /// Bytes from the client towards the upstream.
    pub bytes_up: u64,
    /// Bytes from the upstream towards the client.
    pub bytes_down: u64,
    /// `allowed` or `denied`.
    pub decision: &'static str,
    /// Why denied, or what went wrong after being allowed.
    pub reason: Option<String>,
    pub duration_ms: u64,
}

/// Longest string from the sandbox kept in an audit event.
pub const MAX_FIELD: usize = 2048;

/// Cut a hostile string to `MAX_FIELD` bytes on a char boundary.
pub fn bounded(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_string();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl AuditEvent {
    pub fn new(component: &'static str, protocol: &'static str) -> Self {
        AuditEvent {
            time: runproof_ledger::time::rfc3339_ms(runproof_ledger::time::unix_ms()),
            ..AuditEvent::untimed(component, protocol)
        }
    }

    /// An event with no time stamp and nothing allocated, for a sink that
    /// discards events ([`AuditSink::enabled`] false).
    pub fn untimed(component: &'static str, protocol: &'static str) -> Self {
        AuditEvent {
            time: String::new(),
            component,
            protocol,
            client: None,
            host: None,
            port: None,
            resolved: None,
            method: None,
            url: None,
            bytes_up: 0,
            bytes_down: 0,
            decision: "denied",
            reason: None,
            duration_ms: 0,
        }
    }
}

/// Where audit events go. Implementations must not block for long: they are
/// called on the proxy's I/O threads.
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, event: &AuditEvent);
    /// False when every event is discarded ([`NoAudit`]): callers may then
    /// skip building events (their time stamps and strings) altogether.
    fn enabled(&self) -> bool {
        true
    }
}

impl<T: AuditSink + ?Sized> AuditSink for std::sync::Arc<T> {
    fn record(&self, event: &AuditEvent) {
        (**self).record(event)
    }
    fn enabled(&self) -> bool {
        (**self).enabled()
    }
}

/// Appends one JSON object per line to a file, flushed per event.
pub struct JsonlAudit {
    out: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl JsonlAudit {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(JsonlAudit {
            out: Mutex::new(std::io::BufWriter::new(f)),
        })
    }
}

impl AuditSink for JsonlAudit {
    fn record(&self, event: &AuditEvent) {
        let Ok(mut line) = serde_json::to_vec(event) else {
            return;
        };
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // An audit write failure must be visible: report on stderr.
        if let Err(e) = out.write_all(&line).and_then(|_| out.flush()) {
            eprintln!("runproof: cannot write audit event: {e}");
        }
    }
}

/// Keeps events in memory (for embedding and tests).
#[derive(Default)]
pub struct MemoryAudit {
    events: Mutex<Vec<AuditEvent>>,
}

impl MemoryAudit {
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl AuditSink for MemoryAudit {
    fn record(&self, event: &AuditEvent) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.clone());
    }
}

/// Discards events.
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn record(&self, _event: &AuditEvent) {}
    fn enabled(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_writes_one_parseable_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let sink = JsonlAudit::create(&p).unwrap();
        let mut e = AuditEvent::new("proxy", "connect");
        e.host = Some("a\nb".into());
        sink.record(&e);
        sink.record(&e);
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["host"], "a\nb");
        assert_eq!(v["decision"], "denied");
    }

    #[test]
    fn bounded_cuts_on_char_boundary() {
        let s = "é".repeat(MAX_FIELD);
        let b = bounded(&s);
        assert!(b.len() <= MAX_FIELD + 3);
        assert!(b.ends_with('…'));
    }
}
