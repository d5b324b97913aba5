//! `runproof eval` and `verify` record their verdicts in the ledger, joined
//! to the agent runs recorded with `runproof run --task --agent`, so
//! `runproof cost` reports cost per verified fix; a re-run records nothing
//! twice. Real sandboxes, the bundled example tasks, a local upstream.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn build_examples() {
    let st = Command::new("bash")
        .arg(root().join("examples/build.sh"))
        .status()
        .expect("run examples/build.sh");
    assert!(st.success(), "examples/build.sh failed");
}

const PRICES: &str = r#"{"gpt-test": {"input_cost_per_token": 0.00001, "output_cost_per_token": 0.00002, "litellm_provider": "openai", "mode": "chat"}}"#;

/// One chat completion (1000 + 1000 tokens at the fake upstream: $0.03).
const ONE_CALL: &str = r#"python3 - <<'EOF'
import json, os, urllib.request
req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions",
    data=json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "fix it"}]}).encode(),
    headers={"Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=10).read()
print("CALL-OK", flush=True)
EOF"#;

/// Runs a runproof command with private XDG directories, killed after 120 s.
fn runproof(xdg: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(args)
        .current_dir(root())
        .env("XDG_CONFIG_HOME", xdg.join("config"))
        .env("XDG_DATA_HOME", xdg.join("data"))
        .env("XDG_CACHE_HOME", xdg.join("cache"))
        .env_remove("RUNPROOF_CONFIG");
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    finish(spawn(c), Duration::from_secs(120))
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(o), stderr(o)))
}

fn row<'a>(v: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no row {key}: {v:#}"))
}

fn prediction(instance: &str, model: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("examples/predictions.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|p| p["instance_id"] == instance && p["model_name_or_path"] == model)
        .unwrap()
}

#[test]
fn eval_verdicts_join_agent_runs_for_cost_per_verified_fix_once() {
    build_examples();
    let xdg = tempfile::Builder::new()
        .prefix("rp-xdg-")
        .tempdir()
        .unwrap();
    let xdg = xdg.path();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = fake_openai(seen.clone());
    let prices = xdg.join("prices.json");
    std::fs::write(&prices, PRICES).unwrap();
    std::fs::create_dir_all(xdg.join("config/runproof")).unwrap();
    std::fs::write(
        xdg.join("config/runproof/runproof.toml"),
        format!(
            "prices = {prices:?}\ndeveloper_hourly_rate_usd = 60\n[openai]\nbase_url = \"http://127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();

    // Two agents attempted py-stats-1, each making one model call.
    for agent in ["resolves", "fails"] {
        let ws = Ws::new();
        let mut c = command(
            ws.path(),
            &["--budget", "1", "--task", "py-stats-1", "--agent", agent],
            ONE_CALL,
        );
        c.env("XDG_CONFIG_HOME", xdg.join("config"))
            .env("XDG_DATA_HOME", xdg.join("data"))
            .env_remove("RUNPROOF_CONFIG")
            .env("OPENAI_API_KEY", "host-key");
        let o = finish(spawn(c), Duration::from_secs(60));
        assert!(ok(&o).contains("CALL-OK"), "{}", stderr(&o));
    }
    assert_eq!(seen.lock().unwrap().len(), 2);

    // Their predictions, and a fix by "resolves" on js-slug-1 whose run
    // was never recorded.
    let preds = xdg.join("preds.jsonl");
    let lines: Vec<String> = [
        ("py-stats-1", "resolves"),
        ("py-stats-1", "fails"),
        ("js-slug-1", "resolves"),
    ]
    .iter()
    .map(|(i, m)| prediction(i, m).to_string())
    .collect();
    std::fs::write(&preds, lines.join("\n") + "\n").unwrap();
    let out = xdg.join("out");
    let eval = |out: &Path| {
        runproof(
            xdg,
            &[
                "eval",
                "--tasks",
                "examples/tasks.jsonl",
                "--predictions",
                preds.to_str().unwrap(),
                "--no-progress",
                "--out",
                out.to_str().unwrap(),
            ],
        )
    };
    let o = eval(&out);
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("3 verdict(s), 3 new"), "{}", stderr(&o));

    let cost = |by: &str| json(&runproof(xdg, &["cost", "--by", by, "--format", "json"]));
    let v = cost("task");
    let py = row(&v, "py-stats-1");
    assert_eq!(py["runs"], 2, "{v:#}");
    assert_eq!(
        (py["verdicts"].as_u64(), py["verified_fixes"].as_u64()),
        (Some(2), Some(1))
    );
    let py_total = py["total_cost_usd"].as_f64().unwrap();
    // Two calls at $0.03, plus a little compute.
    assert!((0.06..0.07).contains(&py_total), "{py:#}");
    assert_eq!(py["cost_per_verified_fix_usd"].as_f64(), Some(py_total));
    let js = row(&v, "js-slug-1");
    assert_eq!(js["verified_fixes"], 1);
    assert!(
        js["cost_per_verified_fix_usd"].is_null(),
        "no runs: unknown, not $0"
    );
    assert_eq!(v["verified_fixes"], 2);
    assert_eq!(v["unattributed_verified_fixes"], 1);
    // Everything spent (the failed attempt too) over the one costed fix.
    let per_fix = v["cost_per_verified_fix_usd"].as_f64().unwrap();
    assert!((per_fix - v["total_cost_usd"].as_f64().unwrap()).abs() < 1e-12);
    // The hourly rate from the config: minutes of a $60/h developer.
    assert!((v["developer_minutes_per_verified_fix"].as_f64().unwrap() - per_fix).abs() < 1e-9);

    let v = cost("agent");
    let good = row(&v, "resolves");
    assert_eq!(
        (good["runs"].as_u64(), good["verified_fixes"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(good["costed_fixes"], 1);
    let good_cost = good["total_cost_usd"].as_f64().unwrap();
    assert!((0.03..0.035).contains(&good_cost), "{good:#}");
    assert_eq!(good["cost_per_verified_fix_usd"].as_f64(), Some(good_cost));
    assert_eq!(row(&v, "fails")["verified_fixes"], 0);
    let text = stdout(&runproof(xdg, &["cost", "--by", "task"]));
    assert!(text.contains("verified fixes 2 of 3"), "{text}");
    assert!(
        text.contains("developer minutes per verified fix"),
        "{text}"
    );

    // A resumed eval, a fresh re-grade in a new directory, and verify of the
    // same patch by the same agent: still one verdict per attempt.
    let o = eval(&out);
    assert!(stderr(&o).contains("3 verdict(s), 0 new"), "{}", stderr(&o));
    let o = eval(&xdg.join("out2"));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("3 verdict(s), 0 new"), "{}", stderr(&o));
    let patch = xdg.join("fix.diff");
    std::fs::write(
        &patch,
        prediction("py-stats-1", "resolves")["model_patch"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let vout = xdg.join("vout");
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--task",
            "examples/tasks.jsonl",
            "--instance",
            "py-stats-1",
            "--patch",
            patch.to_str().unwrap(),
            "--out",
            vout.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        runproof(xdg, &args)
    };
    let o = verify(&["--agent", "resolves"]);
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("1 verdict(s), 0 new"), "{}", stderr(&o));
    let v = cost("task");
    assert_eq!(v["verdicts"], 3, "{v:#}");
    assert_eq!(v["verified_fixes"], 2);

    // --no-ledger grades and records nothing; --ledger FILE records there.
    let other = xdg.join("other.db");
    let o = verify(&["--agent", "someone-else", "--no-ledger"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stderr(&o).contains("verdict(s)"), "{}", stderr(&o));
    assert_eq!(cost("task")["verdicts"], 3);
    let o = verify(&[
        "--agent",
        "someone-else",
        "--ledger",
        other.to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("1 verdict(s), 1 new"), "{}", stderr(&o));
    let v = json(&runproof(
        xdg,
        &[
            "cost",
            "--format",
            "json",
            "--ledger",
            other.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        (
            v["verdicts"].as_u64(),
            v["unattributed_verified_fixes"].as_u64()
        ),
        (Some(1), Some(1))
    );
}
