//! `runproof run --gateway --budget`: model calls from the sandbox go through
//! the metered gateway, which adds the host's key (the sandbox never sees it),
//! records usage in the ledger, and stops the run when the budget is spent.

mod common;
use common::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn gateway_meters_hides_the_key_and_stops_the_run_at_the_budget() {
    let ws = Ws::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = fake_openai(seen.clone());
    let prices = ws.write("prices.json", r#"{"gpt-test": {"input_cost_per_token": 0.00001, "output_cost_per_token": 0.00002, "litellm_provider": "openai", "mode": "chat"}}"#);
    let ledger = ws.path().join("ledger.db");
    let script = r#"python3 - <<'EOF'
import json, os, time, urllib.request
print("key-in-sandbox:", os.environ.get("OPENAI_API_KEY"))
for i in range(60):
    req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions",
        data=json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-from-inside"})
    try:
        urllib.request.urlopen(req, timeout=5).read()
        print("call", i, "ok", flush=True)
    except Exception as e:
        print("call", i, "refused", getattr(e, "code", e), flush=True)
    time.sleep(0.1)
print("FINISHED-ALL-CALLS")
EOF"#;
    let mut c = command(
        ws.path(),
        &[
            "--budget",
            "0.1",
            "--openai-base",
            &format!("http://127.0.0.1:{port}"),
            "--prices",
            prices.to_str().unwrap(),
            "--ledger",
            ledger.to_str().unwrap(),
        ],
        script,
    );
    c.env("OPENAI_API_KEY", "host-secret-key-123");
    let out = finish(spawn(c), Duration::from_secs(60));
    let text = stdout(&out);
    assert_eq!(
        code(&out),
        124,
        "the spent budget stops the run: {text}\n{}",
        stderr(&out)
    );
    assert!(!text.contains("FINISHED-ALL-CALLS"), "{text}");
    assert!(
        !text.contains("host-secret-key-123"),
        "the host key leaked into the sandbox: {text}"
    );
    let ok_calls = text.lines().filter(|l| l.ends_with(" ok")).count();
    // $0.03 per call against $0.10: three calls fit, the fourth cannot.
    assert!((1..=4).contains(&ok_calls), "{text}");
    let auth = seen.lock().unwrap().clone();
    assert!(
        !auth.is_empty() && auth.iter().all(|a| a.contains("host-secret-key-123")),
        "upstream saw {auth:?}"
    );
    assert!(!auth.iter().any(|a| a.contains("sk-from-inside")));
    assert!(stderr(&out).contains("spent $"), "{}", stderr(&out));
    // The ledger has the run's requests.
    let cost = std::process::Command::new(bin())
        .args(["cost", "--by", "run", "--format", "json", "--ledger"])
        .arg(&ledger)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&cost.stdout);
    assert!(cost.status.success() && report.contains("run-"), "{report}");
}

#[test]
fn gateway_without_host_keys_refuses_to_start() {
    let ws = Ws::new();
    let mut c = command(ws.path(), &["--gateway"], "true");
    c.env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY");
    let out = finish(spawn(c), Duration::from_secs(30));
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(stderr(&out).contains("OPENAI_API_KEY"), "{}", stderr(&out));
}
