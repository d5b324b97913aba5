//! `runproof serve` and `runproof worker` as real processes: a server
//! SIGKILLed mid-job and restarted grades the job again and stores it once;
//! a worker SIGKILLed mid-job loses nothing (JetStream redelivers the job to
//! another worker after the ack wait) while a live worker's long job is kept
//! alive by progress acks; no server starts unauthenticated off loopback.

mod common;

use runproof_server::testing::{Nats, request, wait_for};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_runproof")
}

fn examples() -> PathBuf {
    let ex = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .canonicalize()
        .unwrap();
    let st = Command::new("bash")
        .arg(ex.join("build.sh"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "examples/build.sh failed");
    ex
}

/// A process in its own group, SIGKILLed with its group on drop.
struct Proc(Child);

impl Proc {
    fn kill(&mut self) {
        // SAFETY: signals our own child's process group.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(args: &[&str]) -> Proc {
    let mut c = Command::new(bin());
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    Proc(c.spawn().unwrap())
}

/// `runproof serve --format json ...`; returns the process and its address.
fn serve(tmp: &Path, extra: &[&str]) -> (Proc, SocketAddr) {
    let db = tmp.join("jobs.sqlite").display().to_string();
    let cache = tmp.join("cache").display().to_string();
    let work = tmp.join("work-serve").display().to_string();
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--format",
        "json",
        "--no-ledger",
        "--db",
        &db,
        "--cache",
        &cache,
        "--work-dir",
        &work,
    ];
    args.extend_from_slice(extra);
    let mut p = spawn(&args);
    let out = p.0.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    (p, v["listen"].as_str().unwrap().parse().unwrap())
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let b = serde_json::to_vec(body).unwrap();
    let r = request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(&b),
    )
    .unwrap();
    assert!(r.status < 300, "{}", r.text());
    r.json()
}

fn job(addr: SocketAddr, id: &str) -> Value {
    request(addr, "GET", &format!("/api/jobs/{id}"), &[], None)
        .unwrap()
        .json()
}

fn wait_state(addr: SocketAddr, id: &str, state: &str) -> Value {
    wait_for(&format!("{id} {state}"), Duration::from_secs(300), || {
        let j = job(addr, id);
        (j["state"] == state).then_some(j)
    })
}

/// The py-stats example with a slow test command, as an inline task.
fn slow_job(ex: &Path, id: &str, secs: u32) -> Value {
    let line = std::fs::read_to_string(ex.join("tasks.jsonl")).unwrap();
    let mut t: Value = line
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|t| t["instance_id"] == "py-stats-1")
        .unwrap();
    t["instance_id"] = json!(id);
    t["test_cmd"] = json!(format!("sleep {secs}; {}", t["test_cmd"].as_str().unwrap()));
    t["repo_path"] = json!(ex.join("repos/py-stats").display().to_string());
    json!({"task": t, "model_patch": t["patch"], "model_name_or_path": "gold"})
}

#[test]
fn a_server_killed_mid_job_grades_it_again_after_restart_and_stores_it_once() {
    let ex = examples();
    let tmp = tempfile::tempdir().unwrap();
    let tasks = ex.join("tasks.jsonl").display().to_string();
    let (mut p, addr) = serve(tmp.path(), &["--tasks", &tasks, "--workers", "1"]);
    let id = post(addr, "/api/jobs", &slow_job(&ex, "slow-restart", 3))["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A second job waits behind it in the queue.
    let queued = post(
        addr,
        "/api/jobs",
        &json!({"instance_id": "py-stats-1", "model_patch": null}),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_state(addr, &id, "running");
    p.kill();
    let (_p, addr) = serve(tmp.path(), &["--tasks", &tasks, "--workers", "1"]);
    let j = wait_state(addr, &id, "done");
    assert_eq!(j["outcome"], "resolved", "{j}");
    let attempts: Vec<i64> = j["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, vec![1, 2]);
    assert_eq!(j["result"]["attempt"], 2);
    assert_eq!(j["duplicate_results"], 0);
    let q = wait_state(addr, &queued, "done");
    assert_eq!(q["outcome"], "empty_patch");
    assert_eq!(q["attempt"], 1);
    let l = request(addr, "GET", "/api/jobs", &[], None).unwrap().json();
    assert_eq!(l["total"], 2);
}

#[test]
fn a_worker_killed_mid_job_loses_nothing_and_the_job_completes_once_elsewhere() {
    let ex = examples();
    let nats = Nats::start().expect("nats-server must start for this test");
    let url = nats.url();
    let tmp = tempfile::tempdir().unwrap();
    let tasks = ex.join("tasks.jsonl").display().to_string();
    let (_s, addr) = serve(
        tmp.path(),
        &["--tasks", &tasks, "--nats", &url, "--ack-wait", "2"],
    );
    let worker = |name: &str| {
        let cache = tmp.path().join("cache").display().to_string();
        let work = tmp
            .path()
            .join(format!("work-{name}"))
            .display()
            .to_string();
        spawn(&[
            "worker",
            "--nats",
            &url,
            "--jobs",
            "1",
            "--name",
            name,
            "--cache",
            &cache,
            "--work-dir",
            &work,
        ])
    };
    let mut workers = [Some(worker("w1")), Some(worker("w2"))];

    // A job longer than the ack wait is not redelivered while its worker
    // lives: the worker reports progress.
    let long = post(addr, "/api/jobs", &slow_job(&ex, "slow-long", 5))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let j = wait_state(addr, &long, "done");
    assert_eq!(j["outcome"], "resolved");
    assert_eq!(j["attempts"].as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j["duplicate_results"], 0);

    // Its worker is SIGKILLed mid-job: the job goes to the other one.
    let id = post(addr, "/api/jobs", &slow_job(&ex, "slow-kill", 4))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let running = wait_state(addr, &id, "running");
    let first = running["worker"].as_str().unwrap().to_string();
    let k = if first == "w1" { 0 } else { 1 };
    workers[k].take().unwrap().kill();
    let j = wait_state(addr, &id, "done");
    assert_eq!(j["outcome"], "resolved", "{j}");
    let seen: Vec<(i64, String)> = j["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attempt"].as_i64().unwrap(),
                a["worker"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let other = if first == "w1" { "w2" } else { "w1" };
    assert_eq!(seen, vec![(1, first.clone()), (2, other.to_string())]);
    assert_eq!(j["result"]["worker"], other);
    assert_eq!(j["result"]["attempt"], 2);
    assert_eq!(j["duplicate_results"], 0);
    let l = request(addr, "GET", "/api/jobs?state=done", &[], None)
        .unwrap()
        .json();
    assert_eq!(l["total"], 2);
}

#[test]
fn serve_refuses_a_public_address_without_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("j.sqlite").display().to_string();
    let o = Command::new(bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--no-ledger", "--db", &db])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("refusing to listen on 0.0.0.0:0 without a token"),
        "{e}"
    );
    assert!(e.contains("--token-file"), "{e}");
    let o = Command::new(bin())
        .args(["worker", "--nats", "nats://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot connect to NATS"));
}

#[test]
fn verdicts_of_served_jobs_are_recorded_once_in_the_ledger_and_shown_as_costs() {
    let ex = examples();
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger.db");
    let ls = ledger.display().to_string();
    let db = tmp.path().join("jobs.sqlite").display().to_string();
    let cache = tmp.path().join("cache").display().to_string();
    let tasks = ex.join("tasks.jsonl").display().to_string();
    let mut p = spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--format",
        "json",
        "--ledger",
        &ls,
        "--db",
        &db,
        "--cache",
        &cache,
        "--tasks",
        &tasks,
        "--workers",
        "1",
    ]);
    let mut line = String::new();
    BufReader::new(p.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = serde_json::from_str::<Value>(&line).unwrap()["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let pred: Value = std::fs::read_to_string(ex.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|p| p["instance_id"] == "py-stats-1" && p["model_name_or_path"] == "resolves")
        .unwrap();
    // The same prediction graded twice is one graded attempt.
    for body in [json!({"prediction": pred}), json!({"predictions": [pred]})] {
        let path = if body.get("prediction").is_some() {
            "/api/jobs"
        } else {
            "/api/evals"
        };
        post(addr, path, &body);
    }
    let cost = || {
        let o = Command::new(bin())
            .args(["cost", "--ledger", &ls, "--by", "agent", "--format", "json"])
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&o.stdout).unwrap_or(Value::Null)
    };
    // A third, different attempt after them on the one worker: once its
    // verdict is in, the first two's hooks have run.
    let mut other = pred.clone();
    other["model_name_or_path"] = json!("other-agent");
    post(addr, "/api/jobs", &json!({ "prediction": other }));
    let c = wait_for("the verdicts recorded", Duration::from_secs(300), || {
        let l = request(addr, "GET", "/api/jobs?state=done", &[], None)
            .unwrap()
            .json();
        (l["total"] == 3 && ledger.exists()).then(cost).filter(|c| {
            c["rows"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["key"] == "other-agent"))
        })
    });
    assert_eq!(c["verdicts"], 2, "{c}");
    assert_eq!(c["verified_fixes"], 2, "{c}");
    let html = request(addr, "GET", "/", &[], None).unwrap().text();
    assert!(html.contains("<td>resolves</td>"), "{html}");
}

/// An inline task with a `repo_url`: refused at submission, with the rule
/// to add, by a server started without a network policy for it; cloned
/// inside the sandbox through the egress proxy and graded by one started
/// with `--allow`. A `--tasks` file such a server could never grade stops it
/// at start, and `worker` checks the same flags.
#[test]
fn repo_url_tasks_are_cloned_through_the_proxy_or_refused_when_submitted() {
    let tmp = tempfile::tempdir().unwrap();
    let r = common::git::repo(tmp.path());
    let srv = common::git::git_server(tmp.path(), &r.dir);
    let url = format!("http://127.0.0.2:{}/r.git", srv.port);
    let mut task = common::git::task(&r, "remote");
    task.as_object_mut().unwrap().remove("repo_path");
    task["repo_url"] = url.into();
    let fix = common::git::FIX;
    let body = json!({"task": task, "model_patch": fix, "model_name_or_path": "gold"});
    let bytes = serde_json::to_vec(&body).unwrap();
    let json_type = [("Content-Type", "application/json")];

    {
        let (_p, addr) = serve(tmp.path(), &["--workers", "1"]);
        let resp = request(addr, "POST", "/api/jobs", &json_type, Some(&bytes)).unwrap();
        assert_eq!(resp.status, 422, "{}", resp.text());
        let e = &resp.json()["error"];
        assert_eq!(e["code"], "repo_url_not_allowed", "{e}");
        assert_eq!(e["field"], "task.repo_url", "{e}");
        assert!(
            e["message"].as_str().unwrap().contains("--allow HOST"),
            "{e}"
        );
        let l = request(addr, "GET", "/api/jobs", &[], None).unwrap().json();
        assert_eq!(l["total"], 0, "a refused job must not be stored: {l}");
    }
    assert!(
        srv.log.lock().unwrap().is_empty(),
        "fetched without a policy"
    );

    // The same refusal for a task file, when the server starts.
    let f = tmp.path().join("remote.json");
    std::fs::write(&f, task.to_string()).unwrap();
    let o = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--no-ledger", "--tasks"])
        .arg(&f)
        .arg("--db")
        .arg(tmp.path().join("other.sqlite"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("instance `remote`") && e.contains("--allow"),
        "{e}"
    );

    let (_p, addr) = serve(
        tmp.path(),
        &[
            "--workers",
            "1",
            "--allow",
            "127.0.0.2",
            "--allow-address",
            "127.0.0.2",
        ],
    );
    let id = post(addr, "/api/jobs", &body)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let j = wait_state(addr, &id, "done");
    assert_eq!(j["outcome"], "resolved", "{j}");
    let log = srv.log.lock().unwrap().join("\n");
    assert!(log.contains("GET /r.git/info/refs"), "{log}");

    // `worker` takes the same flags and checks them before connecting.
    let o = Command::new(bin())
        .args(["worker", "--nats", "nats://127.0.0.1:1"])
        .args(["--allow-address", "127.0.0.2"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--allow-address needs --allow"), "{e}");
}
