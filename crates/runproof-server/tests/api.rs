//! `runproof serve` in embedded mode over real HTTP: jobs graded in real
//! sandboxes on the bundled examples, bad input refused with errors that
//! name the field, hostile strings escaped in the dashboard, tokens.

mod common;

use common::{Server, examples, predictions, slow_task, task_object};
use runproof_server::testing::{request, wait_for};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

#[test]
fn jobs_and_eval_batches_are_graded_in_sandboxes_like_verify() {
    let ex = examples();
    let tasks = ex.join("tasks.jsonl").display().to_string();
    let s = Server::start(&["--tasks", &tasks, "--workers", "2"]);
    // An eval batch: every prediction for py-stats-1 and js-slug-1.
    let mut preds = predictions(&ex, "py-stats-1");
    preds.extend(predictions(&ex, "js-slug-1"));
    let r = s.post("/api/evals", &json!({ "predictions": preds }));
    assert_eq!(r.status, 201, "{}", r.text());
    let batch = r.json()["batch"].as_str().unwrap().to_string();
    assert_eq!(
        r.header("location"),
        Some(format!("/api/evals/{batch}").as_str())
    );
    let ids: Vec<String> = r.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), preds.len());
    // One job by instance id with a bare patch: the task's gold fix.
    let gold = task_object(&ex, "py-stats-1")["patch"].clone();
    let r = s.post(
        "/api/jobs",
        &json!({"instance_id": "py-stats-1", "model_patch": gold, "model_name_or_path": "gold-agent"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["state"], "queued");
    let single = r.json()["id"].as_str().unwrap().to_string();

    let mut got = BTreeMap::new();
    for id in &ids {
        let j = s.wait_job(id);
        assert_eq!(j["state"], "done", "{j}");
        assert_eq!(j["attempts"].as_array().unwrap().len(), 1);
        got.insert(
            (
                j["instance_id"].as_str().unwrap().to_string(),
                j["model_name_or_path"].as_str().unwrap().to_string(),
            ),
            j["outcome"].as_str().unwrap().to_string(),
        );
    }
    let want: BTreeMap<(String, String), String> = [
        ("py-stats-1", "resolves", "resolved"),
        ("py-stats-1", "fails", "unresolved"),
        ("py-stats-1", "breaks-p2p", "unresolved"),
        ("py-stats-1", "does-not-apply", "patch_did_not_apply"),
        ("py-stats-1", "games-conftest", "unresolved"),
        ("js-slug-1", "resolves", "resolved"),
        ("js-slug-1", "breaks-p2p", "unresolved"),
    ]
    .into_iter()
    .map(|(a, b, c)| ((a.into(), b.into()), c.into()))
    .collect();
    assert_eq!(got, want);

    // The single job's report is the report.json `runproof verify` writes.
    let j = s.wait_job(&single);
    assert_eq!(j["outcome"], "resolved");
    assert_eq!(
        (j["f2p_passed"].clone(), j["f2p_total"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        (j["p2p_passed"].clone(), j["p2p_total"].clone()),
        (json!(3), json!(3))
    );
    let rep = &j["result"]["report"];
    let inner = &rep["py-stats-1"];
    assert_eq!(inner["resolved"], true);
    assert_eq!(
        inner["tests_status"]["FAIL_TO_PASS"]["success"],
        json!(["tests/test_stats.py::test_median_even"])
    );
    let parsed = runproof_task::InstanceReport::from_swebench(rep).unwrap();
    assert!(parsed.sandboxed, "graded outside the sandbox");
    assert_eq!(parsed.runner, "runproof sandbox");
    assert!(j["result"]["log_tail"].as_str().unwrap().contains("passed"));

    // The batch summary.
    let b = s.get(&format!("/api/evals/{batch}")).json();
    assert_eq!(b["complete"], true);
    assert_eq!(b["counts"]["total"], 7);
    assert_eq!(b["counts"]["resolved"], 2);
    assert_eq!(b["counts"]["by_outcome"]["unresolved"], 4);
    // Lists and filters.
    let l = s.get("/api/jobs?state=done&limit=3").json();
    assert_eq!(l["total"], 8);
    assert_eq!(l["jobs"].as_array().unwrap().len(), 3);
    let l = s.get(&format!("/api/jobs?batch={batch}")).json();
    assert_eq!(l["total"], 7);
    // The dashboard shows them.
    let d = s.get("/");
    assert_eq!(d.status, 200);
    assert!(d.header("content-type").unwrap().starts_with("text/html"));
    let html = d.text();
    assert!(html.contains("js-slug-1") && html.contains("games-conftest"));
    assert!(html.contains("patch_did_not_apply") && html.contains("1/1"));
    let page = s.get(&format!("/jobs/{}", ids[0])).text();
    assert!(page.contains("test output"));
    // Finished jobs cannot be cancelled.
    let c = s.post(&format!("/api/jobs/{single}/cancel"), &json!({}));
    assert_eq!(c.status, 409, "{}", c.text());
    assert_eq!(c.json()["error"]["code"], "already_final");
}

fn error(r: &runproof_server::testing::HttpResponse) -> Value {
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{r:?}"
    );
    r.json()["error"].clone()
}

#[test]
fn bad_requests_get_json_errors_naming_the_field_and_the_fix() {
    let ex = examples();
    let tasks = ex.join("tasks.jsonl").display().to_string();
    let s = Server::start(&["--tasks", &tasks, "--workers", "0", "--max-body", "4096"]);
    let addr = s.run.addr;
    let raw = |ct: &str, body: &[u8]| {
        request(
            addr,
            "POST",
            "/api/jobs",
            &[("Content-Type", ct)],
            Some(body),
        )
        .unwrap()
    };
    let r = raw(
        "application/json",
        b"{\"instance_id\": \"py-stats-1\",\n \"model_patch\": ",
    );
    assert_eq!(r.status, 400);
    let e = error(&r);
    assert_eq!(e["code"], "malformed_json");
    assert!(e["message"].as_str().unwrap().contains("line 2"), "{e}");
    let r = raw("text/plain", b"{}");
    assert_eq!(r.status, 415);
    assert!(
        error(&r)["fix"]
            .as_str()
            .unwrap()
            .contains("application/json")
    );
    let r = raw("application/json", &vec![b' '; 5000]);
    assert_eq!(r.status, 413);
    assert_eq!(error(&r)["code"], "body_too_large");
    let r = raw("application/json", b"[1]");
    assert_eq!(r.status, 400);

    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"instance_id": "py-stats-1", "model_patch": "x", "bogus": 1}),
            400,
            "bogus",
            "remove it",
        ),
        (
            json!({"instance_id": "py-stats-1"}),
            400,
            "model_patch",
            "unified diff",
        ),
        (
            json!({"instance_id": "no-such-task", "model_patch": "x"}),
            404,
            "instance_id",
            "GET /api/tasks",
        ),
        (json!({"model_patch": "x"}), 400, "instance_id", "`task`"),
        (
            json!({"instance_id": 5, "model_patch": "x"}),
            400,
            "instance_id",
            "string",
        ),
        (
            json!({"instance_id": "py-stats-1", "model_patch": 5}),
            400,
            "model_patch",
            "string",
        ),
        (
            json!({"instance_id": "py-stats-1", "model_patch": "x", "reruns": 99}),
            400,
            "reruns",
            "at most",
        ),
        (
            json!({"prediction": {"instance_id": "py-stats-1", "model_patch": "x", "extra": 1}}),
            400,
            "prediction.extra",
            "remove it",
        ),
        (
            json!({"prediction": {"model_patch": "x"}}),
            400,
            "prediction.instance_id",
            "instance_id",
        ),
        (
            json!({"prediction": {"instance_id": "py-stats-1"}, "model_patch": "x"}),
            400,
            "model_patch",
            "inside `prediction`",
        ),
        (
            json!({"task": {"instance_id": "t1", "base_commit": "abc", "repo_path": "/etc", "FAIL_TO_PASS": ["a"]}, "model_patch": "x"}),
            400,
            "task.test_cmd",
            "test_cmd",
        ),
        (
            json!({"task": {"instance_id": "t1", "base_commit": "abc", "repo_path": "/etc", "test_cmd": "true", "FAIL_TO_PASS": ["a"]}, "model_patch": "x"}),
            422,
            "task.repo_path",
            "--repo-root",
        ),
        (
            json!({"task": "py-stats-1", "model_patch": "x"}),
            400,
            "task",
            "object",
        ),
    ];
    for (body, status, field, fix) in cases {
        let r = s.post("/api/jobs", &body);
        assert_eq!(r.status, status, "{body}: {}", r.text());
        let e = error(&r);
        assert_eq!(e["field"], field, "{body}: {e}");
        assert!(e["fix"].as_str().unwrap().contains(fix), "{body}: {e}");
    }
    let evals: Vec<(Value, u16, &str)> = vec![
        (json!({}), 400, "predictions"),
        (json!({"predictions": []}), 400, "predictions"),
        (
            json!({"predictions": [{"instance_id": "py-stats-1", "model_patch": "x"}, {"instance_id": "nope", "model_patch": "x"}]}),
            404,
            "predictions[1].instance_id",
        ),
        (
            json!({"predictions": [{"instance_id": "py-stats-1", "model_patch": "x", "cost": 1}]}),
            400,
            "predictions[0].cost",
        ),
        (
            json!({"predictions": [{"instance_id": "py-stats-1", "model_patch": "x"}, {"instance_id": "py-stats-1", "model_patch": "y"}]}),
            400,
            "predictions[1].instance_id",
        ),
        (json!({"predictions": [1]}), 400, "predictions[0]"),
        (json!({"predictions": [], "jobs": 2}), 400, "jobs"),
    ];
    for (body, status, field) in evals {
        let r = s.post("/api/evals", &body);
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert_eq!(error(&r)["field"], field, "{body}");
    }
    // Nothing was stored by any of them.
    assert_eq!(s.get("/api/jobs").json()["total"], 0);

    assert_eq!(s.get("/api/nope").status, 404);
    assert_eq!(error(&s.get("/api/nope"))["code"], "not_found");
    assert_eq!(s.get("/api/jobs/job-123").status, 404);
    assert_eq!(s.get("/api/evals/eval-123").status, 404);
    let r = s.get("/api/jobs?state=sleeping");
    assert_eq!(
        (r.status, error(&r)["field"].clone()),
        (400, json!("state"))
    );
    let r = s.get("/api/jobs?color=red");
    assert_eq!(
        (r.status, error(&r)["field"].clone()),
        (400, json!("color"))
    );
    let r = request(addr, "DELETE", "/api/jobs", &[], None).unwrap();
    assert_eq!(r.status, 405);
    assert!(error(&r)["fix"].as_str().unwrap().contains("GET or POST"));

    // With no worker, a job stays queued and can be cancelled, once.
    let r = s.post(
        "/api/jobs",
        &json!({"instance_id": "py-stats-1", "model_patch": null}),
    );
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let c = s.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(c.status, 200, "{}", c.text());
    assert_eq!(c.json()["state"], "cancelled");
    assert_eq!(
        s.post(&format!("/api/jobs/{id}/cancel"), &json!({})).status,
        409
    );
    let t = s.get("/api/tasks").json();
    assert!(
        t["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["instance_id"] == "js-slug-1")
    );
}

#[test]
fn hostile_strings_are_escaped_and_bounded_in_the_dashboard() {
    let ex = examples();
    let tasks = ex.join("tasks.jsonl").display().to_string();
    let s = Server::start(&["--tasks", &tasks, "--workers", "1"]);
    // An instance id, a model name, test output and a patch, all hostile.
    let mut t = slow_task(&ex, "<img src=x onerror=alert(1)>", 0);
    let cmd = t["test_cmd"].as_str().unwrap().to_string();
    t["test_cmd"] = json!(format!(
        "head -c 300000 /dev/zero | tr '\\0' A; echo; echo '<script>alert(3)</script>'; printf '\\033[2J\\007'; {cmd}"
    ));
    let fails = predictions(&ex, "py-stats-1")
        .into_iter()
        .find(|p| p["model_name_or_path"] == "fails")
        .unwrap();
    let patch = format!(
        "{}\n</pre><script>alert(4)</script>",
        fails["model_patch"].as_str().unwrap()
    );
    let r = s.post(
        "/api/jobs",
        &json!({"task": t, "model_patch": patch, "model_name_or_path": "\"><script>alert(2)</script>"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let j = s.wait_job(&id);
    assert_eq!(j["state"], "done", "{j}");
    // The log tail is bounded.
    assert!(j["result"]["log_tail"].as_str().unwrap().len() <= 64 * 1024 + 64);
    for page in [s.get("/"), s.get(&format!("/jobs/{id}"))] {
        assert_eq!(page.status, 200);
        let csp = page.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        let html = page.text();
        for raw in ["<script", "<img", "onerror=alert(1)>", "\u{1b}", "\u{7}"] {
            assert!(!html.contains(raw), "unescaped {raw:?} in the page");
        }
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("&quot;&gt;&lt;script&gt;alert(2)"));
    }
    let page = s.get(&format!("/jobs/{id}")).text();
    assert!(page.contains("&lt;script&gt;alert(3)&lt;/script&gt;"));
    assert!(page.contains("&lt;/pre&gt;&lt;script&gt;alert(4)"));
    assert!(page.len() < 400_000, "{} bytes", page.len());
}

#[test]
fn a_token_is_required_when_configured_and_off_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let tf = tmp.path().join("token");
    std::fs::write(&tf, "s3cret-token-0123456789\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tfs = tf.display().to_string();
    let e = Server::try_start(&["--token-file", &tfs]).err().unwrap();
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Never without a token on a non-loopback address.
    let tmp2 = tempfile::tempdir().unwrap();
    let e = Server::start_in(tmp2, &["--listen", "0.0.0.0:0"])
        .err()
        .unwrap();
    assert!(
        e.contains("refusing to listen on 0.0.0.0:0 without a token"),
        "{e}"
    );

    let s = Server::start(&["--token-file", &tfs, "--workers", "0"]);
    let addr = s.run.addr;
    let r = request(addr, "GET", "/api/jobs", &[], None).unwrap();
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    assert_eq!(error(&r)["code"], "unauthorized");
    assert_eq!(request(addr, "GET", "/", &[], None).unwrap().status, 401);
    let bad = request(
        addr,
        "GET",
        "/api/jobs",
        &[("Authorization", "Bearer s3cret-token-0123456788")],
        None,
    )
    .unwrap();
    assert_eq!(bad.status, 401);
    let ok = request(
        addr,
        "GET",
        "/api/jobs",
        &[("Authorization", "Bearer s3cret-token-0123456789")],
        None,
    )
    .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    // HTTP Basic, any user, the token as password: base64("u:s3cret-token-0123456789").
    let basic = request(
        addr,
        "GET",
        "/",
        &[(
            "Authorization",
            "Basic dTpzM2NyZXQtdG9rZW4tMDEyMzQ1Njc4OQ==",
        )],
        None,
    )
    .unwrap();
    assert_eq!(basic.status, 200);
    // A token server answers whatever Host it is reached by.
    let other = request(
        addr,
        "GET",
        "/api/health",
        &[
            ("Host", "runproof.example"),
            ("Authorization", "Bearer s3cret-token-0123456789"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(other.status, 200);

    // Without a token, a page on another origin cannot reach the API by
    // rebinding its name to 127.0.0.1.
    let open = Server::start(&["--workers", "0"]);
    let r = request(
        open.run.addr,
        "GET",
        "/api/jobs",
        &[("Host", "attacker.example:8080")],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(error(&r)["code"], "host_not_allowed");
    for h in ["localhost:1", "127.0.0.1", "[::1]:8080"] {
        let r = request(open.run.addr, "GET", "/api/health", &[("Host", h)], None).unwrap();
        assert_eq!(r.status, 200, "{h}");
    }
}

/// Host processes whose command line is exactly `argv` (the sandbox's PID
/// namespace hides nothing from the host's /proc).
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

#[test]
fn a_cancelled_running_job_is_stopped_starts_no_more_commands_and_keeps_no_result() {
    let ex = examples();
    let tasks = ex.join("tasks.jsonl").display().to_string();
    let s = Server::start(&["--tasks", &tasks, "--workers", "1"]);
    // A prediction without a patch is graded at once, as `empty_patch`.
    let r = s.post(
        "/api/jobs",
        &json!({"task": slow_task(&ex, "slow-1", 2), "model_patch": null}),
    );
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(s.wait_job(&id)["outcome"], "empty_patch");
    // A failing patch whose test command sleeps 97 s, with reruns: the
    // cancel must stop the command that is running, not wait for it.
    let fails = predictions(&ex, "py-stats-1")
        .into_iter()
        .find(|p| p["model_name_or_path"] == "fails")
        .unwrap();
    let r = s.post(
        "/api/jobs",
        &json!({"task": slow_task(&ex, "slow-2", 97), "model_patch": fails["model_patch"], "reruns": 5}),
    );
    let id = r.json()["id"].as_str().unwrap().to_string();
    let sleeper = ["sleep", "97"];
    wait_for("the job's test command", Duration::from_secs(120), || {
        (!processes_running(&sleeper).is_empty()).then_some(())
    });
    let c = s.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(c.status, 200);
    assert_eq!(c.json()["state"], "cancelled");
    // Gone within seconds, with everything it started (not in 97 s).
    wait_for(
        "the cancelled command to be killed",
        Duration::from_secs(10),
        || processes_running(&sleeper).is_empty().then_some(()),
    );
    // The one worker is free again: the next job is graded.
    let r = s.post(
        "/api/jobs",
        &json!({"instance_id": "py-stats-1", "model_patch": fails["model_patch"]}),
    );
    let next = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(s.wait_job(&next)["outcome"], "unresolved");
    let j = s.get(&format!("/api/jobs/{id}")).json();
    assert_eq!(j["state"], "cancelled");
    assert_eq!(j["result"], Value::Null);
    assert_eq!(j["outcome"], Value::Null);
    // No rerun started after the cancel.
    assert!(processes_running(&sleeper).is_empty());
}

#[test]
fn a_postgres_job_store_serves_the_same_api() {
    let ex = examples();
    let pg =
        runproof_server::testing::Postgres::start().expect("PostgreSQL must start for this test");
    let url = pg.create_db("serve").unwrap();
    let tasks = ex.join("tasks.jsonl").display().to_string();
    let s = Server::start(&["--tasks", &tasks, "--workers", "1", "--db", &url]);
    assert!(s.run.db.starts_with("postgres://"), "{}", s.run.db);
    let preds = predictions(&ex, "py-stats-1");
    let r = s.post("/api/evals", &json!({"predictions": &preds[..2]}));
    assert_eq!(r.status, 201, "{}", r.text());
    for id in r.json()["jobs"].as_array().unwrap() {
        let j = s.wait_job(id.as_str().unwrap());
        assert_eq!(j["state"], "done", "{j}");
        assert!(j["result"]["report"]["py-stats-1"]["runproof"]["sandboxed"] == true);
    }
    let html = s.get("/").text();
    assert!(html.contains("postgres://") && html.contains("py-stats-1"));
    drop(s);
    // A second server on the same database sees the jobs.
    let s2 = Server::start(&["--tasks", &tasks, "--workers", "0", "--db", &url]);
    assert_eq!(s2.get("/api/jobs").json()["total"], 2);
}
