//! Real git repositories for the tests: a base history and a future fix commit
//! that each test hides in one way.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const BASE_PY: &str = "def area(w, h):\n    return w * h\n";
pub const FIX_PY: &str = "def area(w, h):\n    # negative sizes come from flipped rectangles\n    clamped_width = max(w, 0)\n    clamped_height = max(h, 0)\n    return clamped_width * clamped_height\n";
pub const FIX_PATCH: &str = "diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,5 @@\n def area(w, h):\n-    return w * h\n+    # negative sizes come from flipped rectangles\n+    clamped_width = max(w, 0)\n+    clamped_height = max(h, 0)\n+    return clamped_width * clamped_height\n";

/// Run git in `dir` with a fixed identity and clock; panic with stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_at(dir, args, "2020-01-01T00:00:00Z")
}

pub fn git_at(dir: &Path, args: &[&str], date: &str) -> String {
    let mut cmd = Command::new("git");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "T")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "T")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_DATE", date)
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn git_stdin(dir: &Path, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with two commits on `main` (tag `v0.1` on the first) and a
/// future commit holding the fix that nothing references yet (loose objects).
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub first: String,
    pub base: String,
    pub future: String,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("src");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("m.py"), BASE_PY).unwrap();
    git(&repo, &["add", "."]);
    git_at(&repo, &["commit", "-qm", "first"], "2020-01-01T00:00:00Z");
    let first = git(&repo, &["rev-parse", "HEAD"]);
    git_at(
        &repo,
        &["tag", "-a", "v0.1", "-m", "release 0.1"],
        "2020-01-01T00:00:00Z",
    );
    std::fs::write(repo.join("README.md"), "# area\n").unwrap();
    git(&repo, &["add", "."]);
    git_at(&repo, &["commit", "-qm", "base"], "2020-02-01T00:00:00Z");
    let base = git(&repo, &["rev-parse", "HEAD"]);
    // The future fix, built with plumbing so that nothing but loose objects exist.
    let blob = git_stdin(&repo, &["hash-object", "-w", "--stdin"], FIX_PY);
    let readme = git(&repo, &["rev-parse", "HEAD:README.md"]);
    let tree = git_stdin(
        &repo,
        &["mktree"],
        &format!("100644 blob {readme}\tREADME.md\n100644 blob {blob}\tm.py\n"),
    );
    let future = git_at(
        &repo,
        &[
            "commit-tree",
            &tree,
            "-p",
            &base,
            "-m",
            "Fix negative areas",
        ],
        "2021-06-01T00:00:00Z",
    );
    Fixture {
        dir,
        repo,
        first,
        base,
        future,
    }
}

/// A snapshot of every file under `dir` (path, size, content hash), to prove a
/// directory was not modified.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, u64)> {
    use std::hash::{Hash, Hasher};
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let data = std::fs::read(e.path()).unwrap();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                data.hash(&mut h);
                out.push((e.path(), data.len() as u64, h.finish()));
            }
        }
    }
    out.sort();
    out
}
