//! The gateway's own connections to the upstream: kept alive and reused
//! once a response was read to its end, never reused when the upstream
//! closes them, and every request still metered once.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use serde_json::json;

const USAGE: &str = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":4}}"#;

fn chat_events() -> Vec<String> {
    vec![
        ev(
            None,
            &json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": null}),
        ),
        ev(
            None,
            &json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 4}}),
        ),
        "data: [DONE]\n\n".into(),
    ]
}

#[test]
fn sequential_requests_share_one_upstream_connection() {
    let up = upstream(Arc::new(|seen| {
        if seen.body["stream"] == true {
            Reply::Sse(chat_events())
        } else {
            Reply::Json(200, USAGE.into())
        }
    }));
    let h = gateway(&up, Opts::default());
    for i in 0..6 {
        let body = if i % 2 == 0 {
            r#"{"model":"gpt-test","messages":[]}"#
        } else {
            r#"{"model":"gpt-test","stream":true,"messages":[]}"#
        };
        let got = post(h.addr, "/v1/chat/completions", &[], body);
        assert_eq!(got.status, 200, "{}", got.text());
    }
    let rs = h.records(6);
    assert_eq!(rs.len(), 6);
    for r in &rs {
        assert_eq!((r.usage.input, r.usage.output, r.estimated), (10, 4, false));
    }
    assert_eq!(
        up.conns.load(Ordering::SeqCst),
        1,
        "each response was read to its end, so its connection carried the next request"
    );
    let seen = up.seen.lock().unwrap();
    assert_eq!(seen.len(), 6);
    assert!(
        seen.iter()
            .all(|s| s.request_line == "POST /v1/chat/completions HTTP/1.1"
                && s.header("host") == Some(&h_host(&up)[..]))
    );
}

fn h_host(up: &Upstream_) -> String {
    format!("127.0.0.1:{}", up.addr.port())
}

/// An upstream that answers one request per connection with
/// `Connection: close` and then closes it.
fn closing_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c2 = conns.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            c2.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let (head_end, len) = loop {
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        break (p + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{USAGE}",
                    USAGE.len()
                );
            });
        }
    });
    (addr, conns)
}

#[test]
fn a_connection_the_upstream_closes_is_not_reused() {
    let (addr, conns) = closing_upstream();
    let up = Upstream_ {
        addr,
        seen: Default::default(),
        peer_gone: Default::default(),
        conns: conns.clone(),
    };
    let h = gateway(&up, Opts::default());
    for _ in 0..4 {
        let got = post(
            h.addr,
            "/v1/chat/completions",
            &[],
            r#"{"model":"gpt-test","messages":[]}"#,
        );
        assert_eq!(got.status, 200, "{}", got.text());
    }
    let rs = h.records(4);
    assert_eq!(rs.len(), 4, "each request charged once");
    assert!(rs.iter().all(|r| r.outcome == "ok" && r.usage.input == 10));
    assert_eq!(
        conns.load(Ordering::SeqCst),
        4,
        "one connection per request"
    );
}
