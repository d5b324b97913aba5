#![allow(dead_code)]
//! Helpers for the integration tests: real git repositories, real tasks.

use runproof_task::{EnvCache, Harness, SandboxRunner, Task, load_tasks};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Builds the example repositories (idempotent, locked).
pub fn build_examples() -> PathBuf {
    let ex = root().join("examples");
    let st = Command::new("bash")
        .arg(ex.join("build.sh"))
        .status()
        .expect("run examples/build.sh");
    assert!(st.success(), "examples/build.sh failed");
    ex
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A git repository with `files` committed; returns the commit.
pub fn repo(dir: &Path, files: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q"]);
    for (p, c) in files {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, c).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "base"]);
    git(dir, &["rev-parse", "HEAD"])
}

/// The diff that turns the repo's HEAD into HEAD + `files` (repo left unchanged).
pub fn diff(dir: &Path, files: &[(&str, &str)]) -> String {
    for (p, c) in files {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, c).unwrap();
    }
    git(dir, &["add", "-A"]);
    let d = git(dir, &["diff", "--cached", "HEAD"]) + "\n";
    git(dir, &["reset", "-q", "--hard", "HEAD"]);
    d
}

/// Writes `json` as a task file and loads it (through the real loader).
pub fn task(dir: &Path, json: serde_json::Value) -> Task {
    let p = dir.join(format!(
        "task-{}.json",
        json["instance_id"].as_str().unwrap()
    ));
    std::fs::write(&p, json.to_string()).unwrap();
    load_tasks(&p).unwrap().remove(0)
}

pub fn harness(cache: &Path) -> Harness {
    Harness {
        runner: Arc::new(SandboxRunner::default()),
        workspaces: Arc::new(EnvCache::new(cache)),
        reruns: 0,
        keep_workspaces: false,
    }
}

/// A harness whose sandbox may also write `state` (a host directory where a
/// test keeps counters that must survive between runs).
pub fn harness_writable(cache: &Path, state: &Path) -> Harness {
    std::fs::create_dir_all(state).unwrap();
    let mut runner = SandboxRunner::default();
    runner.policy.paths.write.push(state.to_path_buf());
    Harness {
        runner: Arc::new(runner),
        ..harness(cache)
    }
}
