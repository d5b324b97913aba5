//! Calls the gateway cannot serve (no upstream configured for the API) still
//! pass through its runaway-loop detector: an agent retrying them forever is
//! stopped like one repeating a served call.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use common::*;
use runproof_ledger::{Budget, Ledger, LedgerWriter};
use runproof_net::MemoryAudit;
use runproof_net::gateway::{Gateway, GatewayConfig, LoopPolicy, StopReason};

/// A gateway with no upstream at all, serving on loopback.
struct Unserved {
    addr: SocketAddr,
    stops: Arc<Mutex<Vec<StopReason>>>,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn unserved(stop: bool) -> Unserved {
    let dir = tempfile::tempdir().unwrap();
    let writer = LedgerWriter::spawn(Ledger::open(&dir.path().join("ledger.db")).unwrap());
    let stops = Arc::new(Mutex::new(Vec::new()));
    let s2 = stops.clone();
    let g = Gateway::new(GatewayConfig {
        prices: Arc::new(test_prices()),
        budget: Budget::new(None),
        audit: Arc::new(MemoryAudit::default()),
        loops: LoopPolicy {
            window: 10,
            threshold: 3,
            stop,
            max_usd_without_change: None,
        },
        on_stop: Some(Arc::new(move |r| s2.lock().unwrap().push(r))),
        ..GatewayConfig::new(writer)
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    rt.spawn(async move { g.serve(l).await });
    Unserved {
        addr,
        stops,
        _rt: rt,
        _dir: dir,
    }
}

const SAME: &str = r#"{"model":"gpt-test","messages":[{"role":"user","content":"think harder"}]}"#;

#[test]
fn repeated_unservable_calls_are_a_runaway_loop() {
    let g = unserved(true);
    for _ in 0..2 {
        let r = post(g.addr, "/v1/chat/completions", &[], SAME);
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.text().contains("no openai upstream"), "{}", r.text());
    }
    assert!(g.stops.lock().unwrap().is_empty());
    let third = post(g.addr, "/v1/chat/completions", &[], SAME);
    assert_eq!(third.status, 429, "{}", third.text());
    assert_eq!(third.json()["error"]["code"], "runaway_loop");
    assert_eq!(
        g.stops.lock().unwrap().as_slice(),
        &[StopReason::RunawayLoop]
    );
    // Stopped: a different call is refused as part of the loop too.
    let other = post(
        g.addr,
        "/v1/messages",
        &[],
        r#"{"model":"claude-test","messages":[{"role":"user","content":"x"}]}"#,
    );
    assert_eq!(other.status, 429, "{}", other.text());
}

#[test]
fn without_stop_the_caller_is_told_once_and_calls_stay_unavailable() {
    let g = unserved(false);
    for _ in 0..5 {
        assert_eq!(post(g.addr, "/v1/chat/completions", &[], SAME).status, 503);
    }
    assert_eq!(
        g.stops.lock().unwrap().as_slice(),
        &[StopReason::RunawayLoop]
    );
}

#[test]
fn varied_unservable_calls_are_not_a_loop() {
    let g = unserved(true);
    for w in ["alpha", "beta", "gamma", "delta", "epsilon"] {
        let body =
            format!(r#"{{"model":"gpt-test","messages":[{{"role":"user","content":"{w}"}}]}}"#);
        assert_eq!(post(g.addr, "/v1/chat/completions", &[], &body).status, 503);
    }
    assert!(g.stops.lock().unwrap().is_empty());
}
