//! The sandbox's audit log is a trajectory `runproof audit` reads: an agent
//! that mines git history for the future fix inside the sandbox is labelled
//! `retrieved`, one that only runs the tests is `clean`.

mod common;
use common::git::git;
use common::*;
use std::process::Command;

#[test]
fn sandbox_audit_log_feeds_retrieval_detection() {
    let ws = Ws::git();
    ws.write("calc.py", "def add(a, b):\n    return a - b\n");
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-qm", "base"]);
    let base = git(ws.path(), &["rev-parse", "HEAD"]);
    // The future fix, left on a branch as leaky task images do.
    git(ws.path(), &["checkout", "-qb", "future"]);
    ws.write("calc.py", "def add(a, b):\n    return a + b\n");
    git(ws.path(), &["commit", "-qam", "fix add"]);
    git(ws.path(), &["checkout", "-q", &base]);
    let task = ws
        .dir
        .path()
        .parent()
        .unwrap()
        .join(format!("task-{}.json", std::process::id()));
    std::fs::write(
        &task,
        serde_json::json!({"instance_id": "calc-1", "repo_path": ws.path(), "base_commit": base, "patch": "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n"}).to_string(),
    )
    .unwrap();

    let audit_of = |script: &str| {
        let log = ws.dir.path().parent().unwrap().join(format!(
            "audit-{}-{}.jsonl",
            std::process::id(),
            script.len()
        ));
        let out = sandbox(ws.path(), &["--audit", log.to_str().unwrap()], script);
        ok(&out);
        let out = Command::new(bin())
            .args(["audit", "--task"])
            .arg(&task)
            .arg("--trajectory")
            .arg(&log)
            .arg("--history-repo")
            .arg(ws.path())
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&log);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = audit_of(
        "git log --all --oneline >/dev/null; c=$(git rev-parse future); git show $c:calc.py >/dev/null",
    );
    assert_eq!(code, 1, "mining history must be labelled retrieved: {text}");
    assert!(text.to_lowercase().contains("retrieved"), "{text}");
    let (code, text) = audit_of("python3 -c 'import calc'");
    assert_eq!(code, 0, "running code is clean: {text}");
    let _ = std::fs::remove_file(&task);
}
