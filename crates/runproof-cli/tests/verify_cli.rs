//! `runproof verify` and `runproof eval` on the real binary: infrastructure
//! failures (setup failed, timeout, out of memory) exit 3 and are named, a
//! patch that does not apply is its own outcome and never "unresolved", and
//! a `repo_url` is cloned through the egress proxy from a real git HTTP
//! server on loopback, or refused with the reason and the fix.

mod common;
use common::git::*;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn task_file(root: &Path, name: &str, task: serde_json::Value) -> PathBuf {
    let p = root.join(format!("{name}.json"));
    std::fs::write(&p, task.to_string()).unwrap();
    p
}

/// `runproof ARGS --cache C --out O` in its own process group, 120 s deadline.
fn runproof(root: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(args);
    // Grading records verdicts in the ledger by default; these tests are
    // about outcomes, not the host's ledger.
    if matches!(args.first(), Some(&"verify") | Some(&"eval")) {
        c.arg("--no-ledger");
    }
    c.arg("--cache")
        .arg(root.join("cache"))
        .arg("--out")
        .arg(root.join("out"))
        .env("NO_COLOR", "1")
        .process_group(0);
    finish(spawn(c), Duration::from_secs(120))
}

fn report(o: &Output, id: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(o), stderr(o)));
    v[id]["runproof"].clone()
}

#[test]
fn infrastructure_failures_exit_3_and_say_which() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(d.path());
    let cases = [
        (
            "setup",
            serde_json::json!({"setup": ["echo preparing; exit 7"]}),
            "setup_failed",
            "exit 7",
        ),
        (
            "slow",
            serde_json::json!({"test_cmd": "sleep 30", "timeout": 1}),
            "timeout",
            "timed out",
        ),
        (
            "hog",
            serde_json::json!({
                "test_cmd": "python3 -c 'x = bytearray(512 * 1024 * 1024)'",
                "memory": "64M"
            }),
            "out_of_memory",
            "out of memory",
        ),
    ];
    for (id, extra, status, why) in cases {
        let mut t = task(&r, id);
        for (k, v) in extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        let f = task_file(d.path(), id, t);
        let o = runproof(
            d.path(),
            &[
                "verify",
                "--task",
                f.to_str().unwrap(),
                "--empty",
                "--format",
                "json",
            ],
        );
        assert_eq!(code(&o), 3, "{id}: {}\n{}", stdout(&o), stderr(&o));
        let rep = report(&o, id);
        assert_eq!(rep["status"], status, "{id}: {rep}");
        assert_eq!(rep["resolved"], false);
        assert!(rep["detail"].as_str().unwrap().contains(why), "{id}: {rep}");
        // The text report names the outcome too.
        let o = runproof(
            d.path(),
            &["verify", "--task", f.to_str().unwrap(), "--empty"],
        );
        assert_eq!(code(&o), 3);
        let text = stdout(&o);
        assert!(
            text.contains(status) && !text.contains("unresolved"),
            "{text}"
        );
    }
}

#[test]
fn a_patch_that_does_not_apply_is_named_and_not_unresolved() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(d.path());
    let f = task_file(d.path(), "t", task(&r, "noapply"));
    let bad = d.path().join("bad.diff");
    std::fs::write(
        &bad,
        "--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,2 @@\n def triple(x):\n-    return x * 4\n+    return x * 3\n",
    )
    .unwrap();
    let o = runproof(
        d.path(),
        &[
            "verify",
            "--task",
            f.to_str().unwrap(),
            "--patch",
            bad.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(code(&o), 1, "{}\n{}", stdout(&o), stderr(&o));
    let rep = report(&o, "noapply");
    assert_eq!(rep["status"], "patch_did_not_apply", "{rep}");
    assert_eq!(rep["patch_successfully_applied"], false);
    assert_eq!(rep["runs"], 0, "the tests must not run: {rep}");

    // In an eval: an error as SWE-bench counts it, not unresolved, and the
    // run still counts as fully graded (exit 0). A timeout is not graded.
    let good = FIX;
    let preds = d.path().join("preds.jsonl");
    let line = |id: &str, model: &str, p: &str| {
        serde_json::json!({"instance_id": id, "model_name_or_path": model, "model_patch": p})
            .to_string()
    };
    std::fs::write(
        &preds,
        format!(
            "{}\n{}\n",
            line("noapply", "m", &std::fs::read_to_string(&bad).unwrap()),
            line("ok", "m", good)
        ),
    )
    .unwrap();
    let tasks = d.path().join("tasks.jsonl");
    std::fs::write(
        &tasks,
        format!("{}\n{}\n", task(&r, "noapply"), task(&r, "ok")),
    )
    .unwrap();
    let o = runproof(
        d.path(),
        &[
            "eval",
            "--tasks",
            tasks.to_str().unwrap(),
            "--predictions",
            preds.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["resolved_ids"], serde_json::json!(["ok"]), "{s}");
    assert_eq!(s["unresolved_ids"], serde_json::json!([]), "{s}");
    assert_eq!(s["error_ids"], serde_json::json!(["noapply"]), "{s}");
    assert_eq!(s["infrastructure_ids"], serde_json::json!([]), "{s}");
    assert_eq!(s["by_outcome"]["patch_did_not_apply"], 1, "{s}");

    let mut t = task(&r, "ok");
    t["test_cmd"] = "sleep 30".into();
    t["timeout"] = 1.into();
    std::fs::write(&tasks, format!("{t}\n")).unwrap();
    std::fs::write(&preds, format!("{}\n", line("ok", "m2", good))).unwrap();
    let o = runproof(
        d.path(),
        &[
            "eval",
            "--tasks",
            tasks.to_str().unwrap(),
            "--predictions",
            preds.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(code(&o), 1, "{}\n{}", stdout(&o), stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["infrastructure_ids"], serde_json::json!(["ok"]), "{s}");
    assert_eq!(s["unresolved_ids"], serde_json::json!([]), "{s}");
}

#[test]
fn repo_url_is_cloned_through_the_proxy_or_refused_with_the_fix() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(d.path());
    let srv = git_server(d.path(), &r.dir);
    let url = format!("http://127.0.0.2:{}/r.git", srv.port);
    let mut t = task(&r, "remote");
    t.as_object_mut().unwrap().remove("repo_path");
    t["repo_url"] = url.clone().into();
    t["patch"] = FIX.into();
    let f = task_file(d.path(), "remote", t);
    let f = f.to_str().unwrap();
    let requests = || srv.log.lock().unwrap().len();

    // No network policy: refused before anything runs, with the fix.
    let o = runproof(
        d.path(),
        &["verify", "--task", f, "--gold", "--format", "json"],
    );
    assert_eq!(code(&o), 3, "{}\n{}", stdout(&o), stderr(&o));
    let rep = report(&o, "remote");
    assert_eq!(rep["status"], "setup_failed");
    let detail = rep["detail"].as_str().unwrap();
    assert!(detail.contains("--allow HOST"), "{detail}");
    // A policy that does not list the host: refused, naming the rule to add.
    let o = runproof(
        d.path(),
        &[
            "verify",
            "--task",
            f,
            "--gold",
            "--format",
            "json",
            "--allow",
            "example.org",
        ],
    );
    assert_eq!(code(&o), 3);
    let detail = report(&o, "remote")["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("not in the allow list") && detail.contains("--allow 127.0.0.2"),
        "{detail}"
    );
    // The host is allowed but it is a loopback address: the proxy refuses it
    // unless it is named with --allow-address.
    let o = runproof(
        d.path(),
        &[
            "verify",
            "--task",
            f,
            "--gold",
            "--format",
            "json",
            "--allow",
            "127.0.0.2",
        ],
    );
    assert_eq!(code(&o), 3);
    let detail = report(&o, "remote")["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("--allow-address 127.0.0.2"), "{detail}");
    assert_eq!(requests(), 0, "{:?}", srv.log.lock().unwrap());

    // Allowed: cloned inside the sandbox and graded. Inside, 127.0.0.2 is the
    // sandbox's own loopback, where nothing listens: the only way to the
    // host's server is the egress proxy.
    let o = runproof(
        d.path(),
        &[
            "verify",
            "--task",
            f,
            "--gold",
            "--format",
            "json",
            "--allow",
            "127.0.0.2",
            "--allow-address",
            "127.0.0.2",
        ],
    );
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    let rep = report(&o, "remote");
    assert_eq!(rep["status"], "resolved", "{rep}");
    assert_eq!(rep["env_built"], true);
    let log = srv.log.lock().unwrap().join("\n");
    assert!(log.contains("GET /r.git/info/refs"), "{log}");

    // A rule that does not parse is a usage error.
    let o = runproof(
        &d.path().join("fresh"),
        &[
            "verify",
            "--task",
            f,
            "--gold",
            "--allow",
            "127.0.0.2:not-a-port",
        ],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--allow"), "{}", stderr(&o));
}

#[test]
fn hostile_repo_urls_are_refused_at_load_with_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(d.path());
    for url in [
        "file:///etc",
        "ext::sh -c touch% /tmp/runproof-pwned",
        "--upload-pack=touch /tmp/runproof-pwned",
        "ssh://git@example.com/r.git",
    ] {
        let mut t = task(&r, "hostile");
        t.as_object_mut().unwrap().remove("repo_path");
        t["repo_url"] = url.into();
        let f = task_file(d.path(), "hostile", t);
        let o = runproof(
            d.path(),
            &[
                "verify",
                "--task",
                f.to_str().unwrap(),
                "--empty",
                "--allow",
                "@github",
            ],
        );
        assert_eq!(code(&o), 2, "{url}: {}\n{}", stdout(&o), stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("field `repo_url`") && e.contains("fix:"),
            "{url}: {e}"
        );
    }
    assert!(!Path::new("/tmp/runproof-pwned").exists());
    // --allow-address alone is a usage error.
    let f = task_file(d.path(), "t", task(&r, "t"));
    let o = runproof(
        d.path(),
        &[
            "verify",
            "--task",
            f.to_str().unwrap(),
            "--empty",
            "--allow-address",
            "127.0.0.2",
        ],
    );
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("--allow-address needs --allow"),
        "{}",
        stderr(&o)
    );
}

/// Where copy-on-write workspaces cannot be made (an output path overlayfs
/// options cannot carry), verify copies the environment and says so.
#[test]
fn a_copied_workspace_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(d.path());
    let f = task_file(d.path(), "t", task(&r, "copied"));
    let root = d.path().join("odd,dir");
    let o = runproof(&root, &["verify", "--task", f.to_str().unwrap(), "--empty"]);
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("workspace: copied (copy-on-write unavailable:") && text.contains("`,`"),
        "{text}"
    );
    let o = runproof(
        &root,
        &[
            "verify",
            "--task",
            f.to_str().unwrap(),
            "--empty",
            "--workspaces",
            "overlay",
        ],
    );
    assert_eq!(code(&o), 3, "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("--workspaces copy"), "{}", stdout(&o));
}
