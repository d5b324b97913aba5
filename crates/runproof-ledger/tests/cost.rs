//! The ledger end to end: concurrent writers through the batching writer,
//! then `runproof cost` output in text and JSON.

use runproof_ledger::cli::{CostArgs, run_cost};
use runproof_ledger::{Ledger, LedgerWriter, PriceTable, RequestRecord, RunRecord, Usage};

fn args(path: &std::path::Path, by: &str, format: &str) -> CostArgs {
    CostArgs {
        ledger: Some(path.to_path_buf()),
        since: None,
        by: by.into(),
        format: format.into(),
        hourly_rate: Some(120.0),
    }
}

#[test]
fn concurrent_writers_lose_nothing_and_cost_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ledger.db");
    let ledger = Ledger::open(&p).unwrap();
    for run in ["r0", "r1", "r2", "r3"] {
        ledger
            .start_run(&RunRecord {
                id: run.into(),
                task: Some(format!("task-{run}")),
                agent: None,
                started_ms: 0,
                budget_usd: Some(5.0),
            })
            .unwrap();
    }
    let w = LedgerWriter::spawn(ledger);
    let prices = PriceTable::bundled();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (w, prices) = (w.clone(), &prices);
            s.spawn(move || {
                for i in 0..250 {
                    let model = if i % 5 == 0 {
                        "not-a-real-model"
                    } else {
                        "claude-sonnet-4-5"
                    };
                    let usage = Usage {
                        input: 1000,
                        output: 100,
                        cache_read: 10,
                        cache_write: 0,
                        reasoning: 0,
                    };
                    w.submit(RequestRecord {
                        run_id: Some(format!("r{}", t % 4)),
                        ts_ms: runproof_ledger::time::unix_ms(),
                        provider: "anthropic".into(),
                        endpoint: "messages".into(),
                        model: model.into(),
                        stream: i % 2 == 0,
                        http_status: 200,
                        usage,
                        cost_usd: prices.cost(model, &usage),
                        estimated: i % 7 == 0,
                        outcome: "ok".into(),
                        duration_ms: 1,
                    });
                }
            });
        }
    });
    w.flush().unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&run_cost(&args(&p, "model", "json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    let total_requests: u64 = rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    assert_eq!(total_requests, 2000);
    let sonnet = rows
        .iter()
        .find(|r| r["key"] == "claude-sonnet-4-5")
        .unwrap();
    assert_eq!(sonnet["requests"], 1600);
    // 1000*3e-6 + 100*1.5e-5 + 10*3e-7 = 0.004503 per request
    assert!((sonnet["cost_usd"].as_f64().unwrap() - 1600.0 * 0.004503).abs() < 1e-9);
    assert_eq!(json["unpriced_requests"], 400);
    let text = run_cost(&args(&p, "task", "text")).unwrap();
    assert!(
        text.contains("task-r0") && text.contains("1.8012+?"),
        "{text}"
    );
    assert!(text.contains("WARNING: 400 request(s)"), "{text}");
    assert!(text.contains("developer minutes"), "{text}");
}

#[test]
fn cost_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = run_cost(&args(&dir.path().join("none.db"), "model", "text"))
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("none.db") && missing.contains("--ledger"),
        "{missing}"
    );
    let p = dir.path().join("l.db");
    Ledger::open(&p).unwrap();
    let mut a = args(&p, "model", "text");
    a.since = Some("last tuesday".into());
    let e = run_cost(&a).unwrap_err().to_string();
    assert!(e.contains("last tuesday") && e.contains("7d"), "{e}");
    let mut a = args(&p, "model", "text");
    a.hourly_rate = Some(-5.0);
    let e = run_cost(&a).unwrap_err().to_string();
    assert!(e.contains("--hourly-rate -5"), "{e}");
}
