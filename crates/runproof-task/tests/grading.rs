//! Grading edge cases against real git repositories and real processes:
//! infrastructure failures, inconsistent exit status, refused patches, the
//! fuzzy fallback, reruns and task validation.

mod common;

use runproof_task::eval::validate_task;
use runproof_task::patch::ApplyMethod;
use runproof_task::{EnvCache, Harness, Outcome, PatchChoice, WorkspaceMode};
use serde_json::json;
use std::path::Path;

const T: &str = "def test_ok():\n    assert True\n";

fn py_task(
    dir: &Path,
    id: &str,
    files: &[(&str, &str)],
    extra: serde_json::Value,
) -> runproof_task::Task {
    let repo = dir.join(format!("repo-{id}"));
    let sha = common::repo(&repo, files);
    let mut v = json!({
        "instance_id": id,
        "base_commit": sha,
        "repo_path": repo,
        "test_cmd": "python3 -m pytest -rA -p no:cacheprovider",
        "test_format": "pytest",
        "timeout": 60,
        "FAIL_TO_PASS": [],
        "PASS_TO_PASS": ["test_a.py::test_ok"],
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    common::task(dir, v)
}

/// A task on an existing repository and commit.
fn py_task_at(
    dir: &Path,
    id: &str,
    repo: &Path,
    sha: &str,
    extra: serde_json::Value,
) -> runproof_task::Task {
    let mut v = json!({
        "instance_id": id,
        "base_commit": sha,
        "repo_path": repo,
        "test_cmd": "python3 -m pytest -rA -p no:cacheprovider",
        "test_format": "pytest",
        "timeout": 60,
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    common::task(dir, v)
}

#[test]
fn timeout_is_infrastructure_not_unresolved() {
    let d = tempfile::tempdir().unwrap();
    let t = py_task(
        d.path(),
        "slow",
        &[("test_a.py", T)],
        json!({"test_cmd": "sleep 30", "timeout": 1}),
    );
    let h = common::harness(&d.path().join("c"));
    let start = std::time::Instant::now();
    let r = h.grade(&t, "m", PatchChoice::Empty, &d.path().join("o"));
    assert_eq!(r.status, Outcome::Timeout);
    assert!(!r.status.is_graded());
    assert!(start.elapsed().as_secs() < 10);
}

#[test]
fn failing_setup_runs_once_and_is_reported_as_setup_failure() {
    let d = tempfile::tempdir().unwrap();
    let counter = d.path().join("state/counter");
    let setup = format!("echo run >> '{}'; exit 7", counter.display());
    let t = py_task(
        d.path(),
        "badsetup",
        &[("test_a.py", T)],
        json!({"setup": [setup]}),
    );
    let h = common::harness_writable(&d.path().join("c"), &d.path().join("state"));
    for i in 0..3 {
        let r = h.grade(&t, "m", PatchChoice::Empty, &d.path().join(format!("o{i}")));
        assert_eq!(r.status, Outcome::SetupFailed);
        assert!(
            r.detail.as_deref().unwrap().contains("exit 7"),
            "{:?}",
            r.detail
        );
    }
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        1
    );
}

#[test]
fn setup_runs_once_per_environment_and_its_output_is_in_the_workspace() {
    let d = tempfile::tempdir().unwrap();
    let counter = d.path().join("state/counter");
    let setup = format!(
        "echo run >> '{}'; echo built > built.txt",
        counter.display()
    );
    let test = "def test_ok():\n    assert open('built.txt').read() == 'built\\n'\n";
    let t = py_task(
        d.path(),
        "setup",
        &[("test_a.py", test)],
        json!({"setup": [setup]}),
    );
    let h = common::harness_writable(&d.path().join("c"), &d.path().join("state"));
    for i in 0..3 {
        let r = h.grade(&t, "m", PatchChoice::Empty, &d.path().join(format!("o{i}")));
        assert_eq!(r.status, Outcome::Resolved, "{:?}", r.detail);
        assert_eq!(r.env_built, i == 0);
    }
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        1
    );
}

#[test]
fn exit_status_that_contradicts_the_results_is_flagged() {
    let d = tempfile::tempdir().unwrap();
    // Claims a pass in pytest's format but exits 1.
    let t = py_task(
        d.path(),
        "liar",
        &[("test_a.py", T)],
        json!({"test_cmd": "echo '=== short test summary info ==='; echo 'PASSED test_a.py::test_ok'; exit 1"}),
    );
    let h = common::harness(&d.path().join("c"));
    let r = h.grade(&t, "m", PatchChoice::Empty, &d.path().join("o"));
    assert_eq!(r.status, Outcome::Inconsistent);
    assert!(!r.resolved);
    assert_eq!(r.exit_consistent, Some(false));
    // Exit 0 with nothing parsed is also not trusted.
    let t = py_task(
        d.path(),
        "mute",
        &[("test_a.py", T)],
        json!({"test_cmd": "true"}),
    );
    let r = h.grade(&t, "m", PatchChoice::Empty, &d.path().join("o2"));
    assert_eq!(r.status, Outcome::Inconsistent);
}

#[test]
fn unsafe_and_malformed_patches_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo-sym");
    common::repo(&repo, &[("test_a.py", T)]);
    std::os::unix::fs::symlink(d.path(), repo.join("out")).unwrap();
    common::git(&repo, &["add", "out"]);
    common::git(&repo, &["commit", "-qm", "link"]);
    let sha = common::git(&repo, &["rev-parse", "HEAD"]);
    let t = common::task(
        d.path(),
        json!({"instance_id": "sym", "base_commit": sha, "repo_path": repo, "test_cmd": "python3 -m pytest -rA -p no:cacheprovider",
               "FAIL_TO_PASS": [], "PASS_TO_PASS": ["test_a.py::test_ok"]}),
    );
    let h = common::harness(&d.path().join("c"));
    let cases = [
        ("not a diff at all\n", "not a unified diff"),
        (
            "--- a/../escape.txt\n+++ b/../escape.txt\n@@ -0,0 +1 @@\n+x\n",
            "contains `..`",
        ),
        (
            "--- /dev/null\n+++ b/.git/hooks/post-checkout\n@@ -0,0 +1 @@\n+x\n",
            "inside `.git`",
        ),
        (
            "--- /dev/null\n+++ b/out/planted.txt\n@@ -0,0 +1 @@\n+x\n",
            "through the symlink `out`",
        ),
    ];
    for (i, (p, why)) in cases.iter().enumerate() {
        let r = h.grade(
            &t,
            "m",
            PatchChoice::Model(Some(p)),
            &d.path().join(format!("o{i}")),
        );
        assert_eq!(r.status, Outcome::PatchRefused, "case {i}");
        assert!(
            r.detail.as_deref().unwrap().contains(why),
            "case {i}: {:?}",
            r.detail
        );
    }
    assert!(!d.path().join("planted.txt").exists());
    assert!(!d.path().join("escape.txt").exists());
}

#[test]
fn fuzzy_fallback_applies_what_git_apply_refuses() {
    let d = tempfile::tempdir().unwrap();
    let code = "def f():\n    a = 1\n    b = 2\n    c = 3\n    return a + b + c\n";
    let test = "from m import f\n\ndef test_ok():\n    assert f() == 7\n";
    let t = py_task(
        d.path(),
        "fuzz",
        &[("m.py", code), ("test_a.py", test)],
        json!({"FAIL_TO_PASS": ["test_a.py::test_ok"], "PASS_TO_PASS": []}),
    );
    // Context line `    b = 2` is written as `    b = 20`: git apply wants exact
    // context and there is no index line for a three-way merge, so only
    // `patch --fuzz` can place the hunk.
    let p = "--- a/m.py\n+++ b/m.py\n@@ -1,5 +1,5 @@\n def f():\n     a = 1\n     b = 20\n-    c = 3\n+    c = 4\n     return a + b + c\n";
    let h = common::harness(&d.path().join("c"));
    let r = h.grade(&t, "m", PatchChoice::Model(Some(p)), &d.path().join("o"));
    assert_eq!(
        r.apply_method,
        Some(ApplyMethod::PatchFuzz),
        "{:?}",
        r.detail
    );
    assert_eq!(r.status, Outcome::Resolved, "{:?}", r.detail);
}

#[test]
fn reruns_recover_a_flaky_test_and_name_it() {
    let d = tempfile::tempdir().unwrap();
    let counter = d.path().join("state/flaky-counter");
    // Fails on runs 0 and 1 of every four, passes on runs 2 and 3.
    let test = format!(
        "import os\nP = {:?}\n\ndef test_flaky():\n    n = int(open(P).read()) if os.path.exists(P) else 0\n    open(P, 'w').write(str(n + 1))\n    assert n % 4 >= 2\n",
        counter.to_str().unwrap()
    );
    let t = py_task(
        d.path(),
        "flaky",
        &[("test_a.py", &test)],
        json!({"FAIL_TO_PASS": ["test_a.py::test_flaky"], "PASS_TO_PASS": []}),
    );
    let h = Harness {
        reruns: 2,
        ..common::harness_writable(&d.path().join("c"), &d.path().join("state"))
    };
    let r = h.grade(&t, "m", PatchChoice::Empty, &d.path().join("o"));
    assert_eq!(r.status, Outcome::Resolved, "{:?}", r.detail);
    assert_eq!(r.runs, 3);
    assert_eq!(r.flaky, vec!["test_a.py::test_flaky"]);
    // And validation labels it.
    std::fs::remove_file(&counter).unwrap();
    let gold = common::diff(&d.path().join("repo-flaky"), &[("README", "x\n")]);
    let mut t2 = t.clone();
    t2.patch = Some(gold);
    let v = validate_task(
        &common::harness_writable(&d.path().join("c"), &d.path().join("state")),
        &t2,
        2,
        &d.path().join("v"),
    );
    assert_eq!(v.verdict, "flaky", "{v:?}");
    assert_eq!(v.flaky_tests, vec!["test_a.py::test_flaky"]);
}

#[test]
fn validate_calls_a_task_broken_when_f2p_passes_at_base() {
    let d = tempfile::tempdir().unwrap();
    let mut t = py_task(
        d.path(),
        "broken",
        &[("test_a.py", T)],
        json!({"FAIL_TO_PASS": ["test_a.py::test_ok"], "PASS_TO_PASS": []}),
    );
    t.patch = Some(common::diff(
        &d.path().join("repo-broken"),
        &[("README", "x\n")],
    ));
    let v = validate_task(
        &common::harness(&d.path().join("c")),
        &t,
        1,
        &d.path().join("v"),
    );
    assert_eq!(v.verdict, "broken");
    assert!(
        v.reasons.iter().any(|r| r.contains("passes at the base")),
        "{v:?}"
    );
}

#[test]
fn model_changes_to_test_files_and_ini_options_are_reverted() {
    let d = tempfile::tempdir().unwrap();
    let code = "def f():\n    return 1\n";
    let test = "from m import f\n\ndef test_f():\n    assert f() == 2\n";
    let t = py_task(
        d.path(),
        "tamper",
        &[
            ("m.py", code),
            ("test_a.py", test),
            ("setup.cfg", "[metadata]\nname = m\n"),
        ],
        json!({"FAIL_TO_PASS": ["test_a.py::test_f"], "PASS_TO_PASS": []}),
    );
    let repo = d.path().join("repo-tamper");
    // Rewrites the test to pass, and deselects it through setup.cfg for good measure.
    let p = common::diff(
        &repo,
        &[
            (
                "test_a.py",
                "from m import f\n\ndef test_f():\n    assert f() == 1\n",
            ),
            (
                "setup.cfg",
                "[metadata]\nname = m\n[tool:pytest]\naddopts = -p no:warnings\n",
            ),
        ],
    );
    let h = common::harness(&d.path().join("c"));
    let r = h.grade(&t, "m", PatchChoice::Model(Some(&p)), &d.path().join("o"));
    let paths: Vec<&str> = r.neutralised.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["setup.cfg", "test_a.py"]);
    assert_eq!(r.status, Outcome::Unresolved);
}

/// A patch whose code, once the tests import it, attacks the grader's host:
/// writes next to the grader's output, reads a host file outside the
/// workspace, and phones home. The sandboxed runner contains all of it, and
/// the verdict comes from the parser outside the sandbox.
#[test]
fn hostile_patch_is_contained_by_the_sandboxed_runner() {
    let d = tempfile::tempdir().unwrap();
    let secret = d.path().join("host-secret.txt");
    std::fs::write(&secret, "HOST-SECRET").unwrap();
    let out = d.path().join("o");
    let payload = format!(
        "import socket\nfor p in [{out:?} + '/report.json', {planted:?}]:\n    try:\n        open(p, 'w').write('{{\"resolved\": true}}')\n    except OSError:\n        pass\ntry:\n    LEAK = open({secret:?}).read()\nexcept OSError:\n    LEAK = ''\ntry:\n    socket.create_connection(('93.184.216.34', 80), timeout=1)\n    NET = True\nexcept OSError:\n    NET = False\n",
        out = out.to_str().unwrap(),
        planted = d.path().join("planted").to_str().unwrap(),
        secret = secret.to_str().unwrap(),
    );
    let t = py_task(
        d.path(),
        "hostile",
        &[
            (
                "test_a.py",
                "import evil\n\ndef test_ok():\n    assert evil.LEAK == '' and not evil.NET\n",
            ),
            ("evil.py", "LEAK = ''\nNET = False\n"),
        ],
        json!({}),
    );
    let patch = common::diff(&d.path().join("repo-hostile"), &[("evil.py", &payload)]);
    let h = common::harness(&d.path().join("c"));
    let r = h.grade(&t, "m", PatchChoice::Model(Some(&patch)), &out);
    assert!(
        !d.path().join("planted").exists(),
        "the patch wrote outside its workspace"
    );
    // The test asserts the secret was unreadable and the network closed.
    assert_eq!(r.status, Outcome::Resolved, "{:?}", r.detail);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(
        report.to_string().contains("hostile"),
        "the grader's report was overwritten: {report}"
    );
}

/// A patch made against a later version of the file applies only with a
/// three-way merge, which needs the patch's blobs and the index: both come
/// from the cached environment's repository, in every kind of workspace.
#[test]
fn three_way_fallback_merges_a_patch_made_on_another_version() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo-3way");
    let lines: Vec<String> = (1..=12).map(|i| format!("V{i} = {i}\n")).collect();
    let code = lines.concat();
    let test = "from m import V1, V12\n\ndef test_ok():\n    assert V1 == 100 and V12 == 12\n";
    let base = common::repo(&repo, &[("m.py", &code), ("test_a.py", test)]);
    // A later commit on another branch changes a line the model's hunk
    // has as context; the model's patch is made there.
    common::git(&repo, &["checkout", "-q", "-b", "later"]);
    let later = code.replace("V4 = 4", "V4 = 4  # later");
    std::fs::write(repo.join("m.py"), &later).unwrap();
    common::git(&repo, &["commit", "-qam", "later"]);
    let patch = common::diff(&repo, &[("m.py", &later.replace("V1 = 1\n", "V1 = 100\n"))]);
    common::git(&repo, &["checkout", "-q", "main"]);
    let t = py_task_at(
        d.path(),
        "threeway",
        &repo,
        &base,
        json!({"FAIL_TO_PASS": ["test_a.py::test_ok"], "PASS_TO_PASS": []}),
    );
    for mode in [WorkspaceMode::Overlay, WorkspaceMode::Copy] {
        let h = Harness {
            workspaces: std::sync::Arc::new(EnvCache::with_mode(d.path().join("c"), mode)),
            ..common::harness(&d.path().join("c"))
        };
        let r = h.grade(
            &t,
            "m",
            PatchChoice::Model(Some(&patch)),
            &d.path().join(format!("o-{mode:?}")),
        );
        assert_eq!(
            r.apply_method,
            Some(ApplyMethod::GitApply3way),
            "{mode:?}: {:?}",
            r.detail
        );
        assert_eq!(r.status, Outcome::Resolved, "{mode:?}: {:?}", r.detail);
    }
}

/// A task's `memory` limit is enforced by a cgroup; the test command that
/// exceeds it is reported as out of memory, an infrastructure outcome, not
/// as unresolved. A setup command that exceeds it fails the setup.
#[test]
fn out_of_memory_is_infrastructure_not_unresolved() {
    let d = tempfile::tempdir().unwrap();
    let hog = "python3 -c 'x = bytearray(512 * 1024 * 1024); print(len(x))'";
    let t = py_task(
        d.path(),
        "hog",
        &[("test_a.py", T)],
        json!({"test_cmd": hog, "memory": "64M"}),
    );
    let h = common::harness(&d.path().join("c"));
    let r = h.grade(&t, "m", PatchChoice::Empty, &d.path().join("o"));
    assert_eq!(r.status, Outcome::OutOfMemory, "{:?}", r.detail);
    assert!(r.status.is_infrastructure());
    assert!(!r.resolved);
    // Under the limit the same task passes: the limit, not the command, failed it.
    let t = py_task(
        d.path(),
        "fits",
        &[("test_a.py", T)],
        json!({"memory": "256M"}),
    );
    let r = h.grade(&t, "m", PatchChoice::Empty, &d.path().join("o2"));
    assert_eq!(r.status, Outcome::Resolved, "{:?}", r.detail);
    let t = py_task(
        d.path(),
        "sethog",
        &[("test_a.py", T)],
        json!({"setup": [hog], "memory": "64M"}),
    );
    let r = h.grade(&t, "m", PatchChoice::Empty, &d.path().join("o3"));
    assert_eq!(r.status, Outcome::SetupFailed, "{:?}", r.detail);
    assert!(
        r.detail.as_deref().unwrap().contains("out of memory"),
        "{:?}",
        r.detail
    );
}
