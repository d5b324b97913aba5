//! `Gate`: start proxy and gateway on caller-bound listeners, use both, stop.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use common::*;
use runproof_ledger::{Ledger, LedgerWriter};
use runproof_net::gateway::{Gateway, GatewayConfig, Upstream};
use runproof_net::{EgressPolicy, Gate, MemoryAudit};

#[test]
fn gate_serves_both_and_stops() {
    let up = upstream(Arc::new(|_| {
        Reply::Json(
            200,
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#.into(),
        )
    }));
    let dir = tempfile::tempdir().unwrap();
    let writer = LedgerWriter::spawn(Ledger::open(&dir.path().join("l.db")).unwrap());
    let gateway = Gateway::new(GatewayConfig {
        openai: Some(Upstream {
            base_url: format!("http://{}", up.addr),
            api_key: HOST_KEY.into(),
        }),
        prices: Arc::new(test_prices()),
        ..GatewayConfig::new(writer)
    })
    .unwrap();
    let pl = TcpListener::bind("127.0.0.1:0").unwrap();
    let gl = TcpListener::bind("127.0.0.1:0").unwrap();
    let (paddr, gaddr) = (pl.local_addr().unwrap(), gl.local_addr().unwrap());
    let policy = EgressPolicy::from_rules(&["localhost"]).unwrap();
    let audit = Arc::new(MemoryAudit::default());
    let gate = Gate::start(
        Some((pl, Arc::new(policy), audit.clone())),
        Some((gl, gateway)),
    )
    .unwrap();

    assert_eq!(
        post(
            gaddr,
            "/v1/chat/completions",
            &[],
            r#"{"model":"gpt-test","messages":[]}"#
        )
        .status,
        200
    );
    let mut s = TcpStream::connect(paddr).unwrap();
    s.write_all(b"CONNECT localhost:1 HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(
        &head, b"HTTP/1.1 403",
        "loopback refused by the default guard"
    );

    gate.shutdown();
    assert!(
        TcpStream::connect(gaddr).is_err(),
        "gateway listener closed"
    );
    assert!(TcpStream::connect(paddr).is_err(), "proxy listener closed");
}
