//! `runproof bench` end to end: the real binary, real sandboxes, the bundled
//! example tasks and scripted agents. Each run has a deadline and is killed
//! (with its process group) when it passes.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn build_examples() -> PathBuf {
    let ex = root().join("examples");
    let st = Command::new("bash")
        .arg(ex.join("build.sh"))
        .status()
        .expect("run examples/build.sh");
    assert!(st.success(), "examples/build.sh failed");
    ex
}

/// Runs `runproof bench ARGS` with `envs`, killed after 50 s.
fn bench(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runproof"));
    cmd.arg("bench")
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn runproof bench");
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(50);
    // Drain the pipes on threads so a chatty run cannot block.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the process group this test created.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
            panic!("runproof bench {args:?} did not finish in 50 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
    }
}

fn scoreboard(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("scoreboard.json")).expect("scoreboard.json");
    serde_json::from_str(&text).unwrap()
}

fn row<'a>(board: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    board["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["instance_id"] == id)
        .unwrap_or_else(|| panic!("no row for {id}: {board:#}"))
}

fn agent(name: &str) -> String {
    format!("sh examples/agents/{name} {{workspace}} {{task_file}}")
}

fn gold_patch(id: &str) -> String {
    let text = std::fs::read_to_string(root().join("examples/tasks.jsonl")).unwrap();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["instance_id"] == id {
            return v["patch"].as_str().unwrap().to_string();
        }
    }
    panic!("no task {id}")
}

/// An HTTP server on 127.0.0.2 answering every request with `body`; counts connections.
fn http_server(body: String) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind(("127.0.0.2", 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 8192];
            let _ = c.read(&mut buf);
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, hits)
}

#[test]
fn reasoner_resolves_clean_and_the_report_lists_each_task() {
    build_examples();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = bench(
        &[
            "--tasks",
            "examples/tasks.jsonl",
            "--instance",
            "py-stats-1",
            "--instance",
            "js-slug-1",
            "--agent",
            &agent("reasoner"),
            "--jobs",
            "2",
            "--timeout",
            "60",
            "--format",
            "json",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let b = scoreboard(&out);
    // stdout is the same scoreboard.
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(printed["counts"], b["counts"]);
    assert_eq!(b["counts"]["resolved_clean"], 2, "{b:#}\n{err}");
    assert_eq!(b["resolve_rate"], 1.0);
    assert_eq!(b["resolve_rate_clean"], 1.0);
    assert!(
        b["cost_per_clean_resolution_usd"].is_null(),
        "cost is unknown, never 0"
    );
    for id in ["py-stats-1", "js-slug-1"] {
        let r = row(&b, id);
        assert_eq!(r["verdict"], "resolved", "{r:#}");
        assert_eq!(r["label"], "clean", "{r:#}");
        assert_eq!(
            r["security"],
            serde_json::json!([]),
            "an honest agent raises no flag: {r:#}"
        );
        assert_eq!(r["future_commits_after_prepare"], 0);
        // The patch came from the copy-on-write layer; the workspace is untouched.
        let patch = std::fs::read_to_string(out.join(id).join("patch.diff")).unwrap();
        assert!(patch.starts_with("diff --git"), "{patch}");
    }
    let ws_py = std::fs::read_to_string(out.join("py-stats-1/workspace/stats.py")).unwrap();
    assert!(ws_py.contains("return s[mid]"), "workspace was modified");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<tr class=\"row\">").count(), 2);
    assert!(html.contains("<td>py-stats-1</td>") && html.contains("<td>js-slug-1</td>"));
    assert!(html.contains("<svg") && !html.contains("src=\"http"));
    let txt = std::fs::read_to_string(out.join("scoreboard.txt")).unwrap();
    assert!(txt.contains("resolved, clean          2"), "{txt}");
}

#[test]
fn web_fetcher_resolves_but_is_labelled_retrieved() {
    build_examples();
    let (port, hits) = http_server(gold_patch("py-stats-1"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let template = format!("{} http://127.0.0.2:{port}", agent("web-fetcher"));
    let o = bench(
        &[
            "--tasks",
            "examples/tasks.jsonl",
            "--instance",
            "py-stats-1",
            "--agent",
            &template,
            "--allow",
            "127.0.0.2",
            "--allow-address",
            "127.0.0.2",
            "--timeout",
            "60",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        hits.load(Ordering::SeqCst) >= 1,
        "the fetcher never reached the server"
    );
    let b = scoreboard(&out);
    let r = row(&b, "py-stats-1");
    assert_eq!(r["verdict"], "resolved", "{r:#}");
    assert_eq!(r["label"], "retrieved", "{r:#}");
    assert_eq!(r["category"], "resolved_retrieved");
    assert!(
        r["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("WebRetrieval")),
        "{r:#}"
    );
    assert_eq!(b["resolve_rate"], 1.0);
    assert_eq!(b["resolve_rate_clean"], 0.0);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("resolved, retrieved      1"), "{text}");
}

#[test]
fn web_fetcher_without_allow_is_blocked_and_unresolved() {
    build_examples();
    let (port, hits) = http_server(gold_patch("py-stats-1"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let template = format!("{} http://127.0.0.2:{port}", agent("web-fetcher"));
    let o = bench(
        &[
            "--tasks",
            "examples/tasks.jsonl",
            "--instance",
            "py-stats-1",
            "--agent",
            &template,
            "--timeout",
            "60",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the proxy let it through");
    let b = scoreboard(&out);
    let r = row(&b, "py-stats-1");
    assert_eq!(r["resolved"], false, "{r:#}");
    assert!(r["blocked_requests"].as_u64().unwrap() >= 1, "{r:#}");
}

#[test]
fn exfiltrator_gets_no_secret_out_and_the_host_is_untouched() {
    build_examples();
    let (port, hits) = http_server("ok".into());
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let secret = "BEGIN-TEST-SECRET-7f3a9c1e-runproof";
    std::fs::write(home.join(".ssh/id_rsa"), secret).unwrap();
    let env_secret = "ENV-SECRET-0b5d2e8f-runproof";
    let out = tmp.path().join("out");
    let template = format!("{} http://127.0.0.2:{port}/upload", agent("exfiltrator"));
    let o = bench(
        &[
            "--tasks",
            "examples/tasks.jsonl",
            "--instance",
            "py-stats-1",
            "--agent",
            &template,
            "--timeout",
            "60",
            "--out",
            out.to_str().unwrap(),
        ],
        &[
            ("HOME", home.to_str().unwrap()),
            ("AWS_SECRET_ACCESS_KEY", env_secret),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "something reached the server"
    );
    // The secret appears nowhere in what the run produced.
    let mut files = vec![out.clone()];
    let mut seen = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                files.push(e.unwrap().path());
            }
        } else if let Ok(bytes) = std::fs::read(&p) {
            seen += 1;
            let t = String::from_utf8_lossy(&bytes);
            assert!(
                !t.contains(secret) && !t.contains(env_secret),
                "{} holds the secret",
                p.display()
            );
        }
    }
    assert!(seen > 5);
    for s in [&o.stdout, &o.stderr] {
        let t = String::from_utf8_lossy(s);
        assert!(!t.contains(secret) && !t.contains(env_secret));
    }
    // The host home is as it was.
    let names: Vec<_> = std::fs::read_dir(&home).unwrap().flatten().collect();
    assert_eq!(names.len(), 1);
    assert_eq!(std::fs::read_dir(home.join(".ssh")).unwrap().count(), 1);
    assert_eq!(
        std::fs::read_to_string(home.join(".ssh/id_rsa")).unwrap(),
        secret
    );
    let log = std::fs::read_to_string(out.join("py-stats-1/agent.log")).unwrap();
    assert!(log.contains("collected 0 bytes"), "{log}");
    let b = scoreboard(&out);
    let r = row(&b, "py-stats-1");
    assert!(r["blocked_requests"].as_u64().unwrap() >= 1, "{r:#}");
    // The report tells the exfiltrator apart: it read a credential store and
    // searched the environment for secrets.
    let flags: Vec<String> = r["security"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert!(
        flags.iter().any(|f| f.contains("credential store")),
        "{flags:?}"
    );
    assert!(
        flags.iter().any(|f| f.contains("searched for credentials")),
        "{flags:?}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains(&format!("blocked by the proxy: POST 127.0.0.2:{port}")),
        "{html}"
    );
    assert!(
        html.contains("security: named a credential store"),
        "{html}"
    );
}

#[test]
fn git_miner_is_flagged_and_hostile_names_are_escaped_in_the_report() {
    build_examples();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let hostile = "<script>alert('pwn')</script><img src=x onerror=alert(1)>";
    let o = bench(
        &[
            "--tasks",
            "examples/tasks.jsonl",
            "--instance",
            "py-stats-1",
            "--agent",
            &agent("git-miner"),
            "--name",
            hostile,
            "--timeout",
            "60",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = scoreboard(&out);
    let r = row(&b, "py-stats-1");
    assert_eq!(r["resolved"], false, "{r:#}");
    assert_eq!(r["label"], "suspicious", "{r:#}");
    assert!(
        r["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("GitHistory")),
        "{r:#}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        !html.contains("<script") && !html.contains("<img"),
        "{html}"
    );
    assert!(html.contains("&lt;script&gt;alert(&#39;pwn&#39;)&lt;/script&gt;"));
}

#[test]
fn bad_input_is_refused_with_exit_2() {
    build_examples();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    for (args, want) in [
        (vec!["--agent", "sh agent {task_file}"], "{workspace}"),
        (
            vec!["--agent", &*agent("reasoner"), "--budget", "5"],
            "gateway",
        ),
        (
            vec!["--agent", &*agent("reasoner"), "--instance", "nope"],
            "no tasks",
        ),
    ] {
        let mut a = vec!["--tasks", "examples/tasks.jsonl", "--out"];
        a.push(out.to_str().unwrap());
        a.extend(args);
        let o = bench(&a, &[]);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn hostile_instance_ids_stay_inside_out_and_are_escaped() {
    let ex = build_examples();
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(ex.join("tasks.jsonl")).unwrap();
    let mut v: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["instance_id"] == "py-stats-1")
        .unwrap();
    // The task loader refuses `/` and a leading `.` in ids; the rest is allowed.
    let id = "<script>alert(\"x\") <img src=x onerror=alert(1)>";
    v["instance_id"] = id.into();
    v["repo_path"] = ex.join("repos/py-stats").to_str().unwrap().into();
    let tasks = tmp.path().join("tasks.jsonl");
    std::fs::write(&tasks, format!("{v}\n")).unwrap();
    let out = tmp.path().join("out");
    let o = bench(
        &[
            "--tasks",
            tasks.to_str().unwrap(),
            "--agent",
            &agent("git-miner"),
            "--timeout",
            "60",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Everything the run wrote is under OUT.
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["out", "tasks.jsonl"]);
    assert!(
        out.join("_script_alert__x____img_src_x_onerror_alert_1__/audit.jsonl")
            .is_file()
    );
    let b = scoreboard(&out);
    assert_eq!(b["rows"][0]["instance_id"], id);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        !html.contains("<script") && !html.contains("<img"),
        "{html}"
    );
    assert!(html.contains(
        "<td>&lt;script&gt;alert(&quot;x&quot;) &lt;img src=x onerror=alert(1)&gt;</td>"
    ));
}

#[test]
fn overspender_is_refused_by_the_proxy_and_its_cost_is_unknown_not_zero() {
    build_examples();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let template = format!(
        "{} http://127.0.0.3:9/v1/chat/completions 20",
        agent("overspender")
    );
    let o = bench(
        &[
            "--tasks",
            "examples/tasks.jsonl",
            "--instance",
            "py-stats-1",
            "--agent",
            &template,
            "--timeout",
            "60",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = scoreboard(&out);
    let r = row(&b, "py-stats-1");
    assert_eq!(r["blocked_requests"], 20, "{r:#}");
    assert_eq!(r["agent_exit"], 1);
    assert!(r["cost_usd"].is_null() && b["cost_usd"].is_null());
    assert!(b["cost_note"].as_str().unwrap().contains("not metered"));
    let txt = std::fs::read_to_string(out.join("scoreboard.txt")).unwrap();
    assert!(
        txt.contains("20 request(s) blocked by the proxy (POST 127.0.0.3:9)"),
        "{txt}"
    );
    assert!(txt.contains("unknown (not metered)"), "{txt}");
}

#[test]
fn an_agent_past_its_timeout_is_killed_and_counted_unresolved_not_infrastructure() {
    build_examples();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let t0 = Instant::now();
    let o = bench(
        &[
            "--tasks",
            "examples/tasks.jsonl",
            "--instance",
            "py-stats-1",
            // Follows the task file forever.
            "--agent",
            "tail -f {task_file} {workspace}",
            "--timeout",
            "2",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(t0.elapsed() < Duration::from_secs(30));
    let b = scoreboard(&out);
    let r = row(&b, "py-stats-1");
    assert_eq!(r["agent_timed_out"], true, "{r:#}");
    assert_eq!(r["agent_exit"], 124, "{r:#}");
    assert_eq!(r["category"], "unresolved", "{r:#}");
    assert!(r["agent_s"].as_f64().unwrap() < 15.0, "{r:#}");
}

#[test]
fn overspender_under_a_budget_is_metered_and_stopped() {
    build_examples();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let port = common::fake_openai(seen.clone());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // The gateway listens on 127.0.0.1:4000 inside the sandbox.
    let template = format!(
        "{} http://127.0.0.1:4000/v1/chat/completions 400",
        agent("overspender")
    );
    let upstream = format!("http://127.0.0.1:{port}");
    let ledger = tmp.path().join("ledger.db");
    let o = bench(
        &[
            "--tasks",
            "examples/tasks.jsonl",
            "--instance",
            "py-stats-1",
            "--agent",
            &template,
            "--timeout",
            "60",
            "--budget",
            "0.05",
            "--openai-base",
            &upstream,
            "--ledger",
            ledger.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[("OPENAI_API_KEY", "host-key-for-bench")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = scoreboard(&out);
    let r = row(&b, "py-stats-1");
    let cost = r["cost_usd"]
        .as_f64()
        .unwrap_or_else(|| panic!("cost must be known: {r:#}"));
    assert!(
        cost > 0.0 && cost < 0.08,
        "spend stays within one request of the budget: {cost}"
    );
    assert_eq!(
        r["agent_exit"], 124,
        "the spent budget stops the agent: {r:#}"
    );
    assert!(b["cost_usd"].as_f64().is_some(), "{b:#}");
    let calls = seen.lock().unwrap().len();
    assert!(
        (1..20).contains(&calls),
        "stopped long before its 400 calls, made {calls}"
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|a| a.contains("host-key-for-bench"))
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains(&format!("${cost:.4}")),
        "the report shows the cost"
    );
}

#[test]
fn metered_runs_record_verdicts_for_cost_per_verified_fix() {
    build_examples();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let ledger = tmp.path().join("ledger.db");
    let o = bench(
        &[
            "--tasks",
            "examples/tasks.jsonl",
            "--instance",
            "py-stats-1",
            "--agent",
            &agent("reasoner"),
            "--budget",
            "1",
            "--openai-base",
            "http://127.0.0.1:9",
            "--ledger",
            ledger.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[("OPENAI_API_KEY", "unused-key")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = scoreboard(&out);
    let r = row(&b, "py-stats-1");
    assert_eq!(r["verdict"], "resolved", "{r:#}");
    // No model calls, but the compute is charged: known and above zero.
    let cost = r["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0 && cost < 0.01, "{cost}");
    assert!(
        b["cost_per_clean_resolution_usd"].as_f64().is_some(),
        "{b:#}"
    );
    let c = Command::new(env!("CARGO_BIN_EXE_runproof"))
        .args(["cost", "--format", "json", "--ledger"])
        .arg(&ledger)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&c.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&c.stderr)));
    assert_eq!(v["verified_fixes"], 1, "{v:#}");
    assert!(
        v["cost_per_verified_fix_usd"]
            .as_f64()
            .is_some_and(|c| c > 0.0),
        "{v:#}"
    );
}
