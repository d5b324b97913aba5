//! `runproof run --net proxy`: the sandbox's only way out is runproof's egress
//! proxy, which allows listed domains only, never private addresses unless
//! named, and writes every request into the run's audit log.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;

/// A one-file HTTP server on a host loopback address other than 127.0.0.1
/// (which the sandbox's NO_PROXY keeps inside the sandbox).
fn http_server(ip: &str, body: &'static str) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn proxy_allows_listed_hosts_refuses_the_rest_and_audits_both() {
    let ws = Ws::new();
    let port = http_server("127.0.0.2", "HOST-SERVER-BODY");
    let audit = ws.path().join("audit.jsonl");
    let script = format!(
        "curl -s --max-time 10 http://127.0.0.2:{port}/ok; echo; \
         curl -s --max-time 10 -o /dev/null -w 'denied:%{{http_code}}\\n' http://127.0.0.3:{port}/no; \
         python3 -c \"import socket\ntry:\n socket.create_connection(('127.0.0.2', {port}), timeout=3); print('DIRECT-CONNECTED')\nexcept OSError: print('direct-refused')\"; \
         python3 -c \"import socket\ntry:\n socket.getaddrinfo('example.com', 443); print('DNS-RESOLVED')\nexcept OSError: print('no-dns')\""
    );
    let out = sandbox(
        ws.path(),
        &[
            "--net",
            "proxy",
            "--allow",
            "127.0.0.2",
            "--allow-address",
            "127.0.0.2",
            "--audit",
            audit.to_str().unwrap(),
        ],
        &script,
    );
    let text = ok(&out);
    assert!(text.contains("HOST-SERVER-BODY"), "{text}");
    assert!(text.contains("denied:403"), "{text}");
    assert!(
        text.contains("direct-refused") && !text.contains("DIRECT-CONNECTED"),
        "{text}"
    );
    assert!(
        text.contains("no-dns") && !text.contains("DNS-RESOLVED"),
        "{text}"
    );
    let log = std::fs::read_to_string(&audit).unwrap();
    let reqs: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "request")
        .collect();
    assert!(
        reqs.iter().any(|e| e["host"] == "127.0.0.2"
            && e["decision"] == "allowed"
            && e["bytes_down"].as_u64().unwrap() > 0),
        "{log}"
    );
    assert!(
        reqs.iter()
            .any(|e| e["host"] == "127.0.0.3" && e["decision"] == "denied"),
        "{log}"
    );
}

#[test]
fn proxy_never_reaches_private_addresses_unless_named() {
    let ws = Ws::new();
    let port = http_server("127.0.0.2", "SHOULD-NOT-SEE");
    // The name is allowed, but the address is loopback: refused.
    let out = sandbox(
        ws.path(),
        &["--net", "proxy", "--allow", "127.0.0.2"],
        &format!(
            "curl -s --max-time 10 -o /dev/null -w '%{{http_code}}\\n' http://127.0.0.2:{port}/"
        ),
    );
    let text = ok(&out);
    assert!(!text.contains("SHOULD-NOT-SEE"), "{text}");
    assert!(text.trim() == "403" || text.trim() == "502", "{text}");
}

#[test]
fn allow_without_proxy_is_a_usage_error() {
    let ws = Ws::new();
    let out = sandbox(ws.path(), &["--allow", "pypi.org"], "true");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--net proxy"));
}
