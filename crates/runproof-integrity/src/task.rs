//! The part of a task this crate needs, and what a reference patch tells us.
//!
//! A task is SWE-bench compatible JSON: `instance_id`, `repo` ("owner/name"),
//! `base_commit`, `patch` (the reference fix), `problem_statement`, `version`,
//! plus `repo_path` (where the repository is on disk). Unknown fields are ignored.

use crate::error::{Error, Result, read_bounded};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Largest task file we read.
pub const MAX_TASK_BYTES: u64 = 64 * 1024 * 1024;

/// A task, as far as integrity checks need it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Task {
    /// Task id, e.g. `astropy__astropy-12907`.
    #[serde(default)]
    pub instance_id: String,
    /// Upstream repository as `owner/name` (SWE-bench `repo`).
    #[serde(default)]
    pub repo: Option<String>,
    /// Local path of the source repository.
    #[serde(default)]
    pub repo_path: Option<PathBuf>,
    /// The commit the agent starts from.
    #[serde(default)]
    pub base_commit: String,
    /// The reference fix (unified diff), if known.
    #[serde(default)]
    pub patch: Option<String>,
    /// The issue text the agent is given.
    #[serde(default)]
    pub problem_statement: Option<String>,
    /// The project's version at the base (SWE-bench `version`).
    #[serde(default, deserialize_with = "string_or_number")]
    pub version: Option<String>,
    /// Package name of the project under test on PyPI/npm/crates.io (defaults to the repo name).
    #[serde(default)]
    pub package: Option<String>,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

impl Task {
    /// Load a task from a JSON file (one object). Relative `repo_path` is
    /// resolved against the task file's directory.
    pub fn load(path: &Path) -> Result<Task> {
        let bytes = read_bounded(path, "task file", MAX_TASK_BYTES)?;
        let mut task: Task = serde_json::from_slice(&bytes).map_err(|e| Error::Invalid {
            what: "task JSON",
            path: path.to_path_buf(),
            detail: format!("{e}; expected one JSON object with base_commit and repo_path"),
        })?;
        if let Some(rp) = &task.repo_path
            && rp.is_relative()
            && let Some(dir) = path.parent()
        {
            task.repo_path = Some(dir.join(rp));
        }
        Ok(task)
    }

    /// The package name of the project under test, normalised (lowercase, `_`/`.` as `-`).
    pub fn package_name(&self) -> Option<String> {
        let raw = self.package.clone().or_else(|| {
            self.repo
                .as_deref()
                .and_then(|r| r.rsplit('/').next())
                .map(str::to_string)
                .or_else(|| {
                    self.repo_path
                        .as_deref()
                        .and_then(|p| p.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                })
        })?;
        let n = normalize_package(&raw);
        (!n.is_empty()).then_some(n)
    }

    /// `(owner, name)` of the upstream repository, lowercase.
    pub fn upstream(&self) -> Option<(String, String)> {
        let r = self
            .repo
            .as_deref()?
            .trim()
            .trim_end_matches(".git")
            .to_ascii_lowercase();
        let mut it = r.rsplit('/');
        let name = it.next()?.to_string();
        let owner = it.next()?.to_string();
        (!owner.is_empty() && !name.is_empty()).then_some((owner, name))
    }
}

/// Normalise a package name the way PyPI does (and fold npm/crates to the same form).
pub fn normalize_package(s: &str) -> String {
    let mut out = String::new();
    for c in s.trim().chars() {
        let c = c.to_ascii_lowercase();
        if c == '_' || c == '.' || c == '-' {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c);
        }
    }
    out.trim_matches('-').to_string()
}

/// One file's part of a unified diff.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FileDiff {
    /// Path after the change (or before, for deletions).
    pub path: String,
    /// Added lines, without the leading `+`.
    pub added: Vec<String>,
    /// Removed lines, without the leading `-`.
    pub removed: Vec<String>,
    /// Context lines, without the leading space.
    pub context: Vec<String>,
}

/// Parse a unified diff (git or plain). Tolerant: unknown lines are ignored.
pub fn parse_diff(diff: &str) -> Vec<FileDiff> {
    let mut files: Vec<FileDiff> = Vec::new();
    let mut in_hunk = false;
    for line in diff.lines() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            let path = rest.rsplit(" b/").next().unwrap_or(rest).to_string();
            files.push(FileDiff {
                path,
                ..Default::default()
            });
            in_hunk = false;
            continue;
        }
        if !in_hunk {
            if let Some(rest) = line.strip_prefix("+++ ") {
                let p = rest.split('\t').next().unwrap_or(rest).trim();
                if p != "/dev/null" {
                    let p = p.strip_prefix("b/").unwrap_or(p).to_string();
                    match files.last_mut() {
                        Some(f) if f.added.is_empty() && f.removed.is_empty() => f.path = p,
                        _ => files.push(FileDiff {
                            path: p,
                            ..Default::default()
                        }),
                    }
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("--- ") {
                if files
                    .last()
                    .is_none_or(|f| !f.added.is_empty() || !f.removed.is_empty())
                {
                    let p = rest.split('\t').next().unwrap_or("").trim();
                    let p = p.strip_prefix("a/").unwrap_or(p).to_string();
                    files.push(FileDiff {
                        path: p,
                        ..Default::default()
                    });
                }
                continue;
            }
        }
        if line.starts_with("@@") {
            in_hunk = true;
            if files.is_empty() {
                files.push(FileDiff::default());
            }
            continue;
        }
        if !in_hunk {
            continue;
        }
        let Some(f) = files.last_mut() else { continue };
        match line.as_bytes().first() {
            Some(b'+') => f.added.push(line[1..].to_string()),
            Some(b'-') => f.removed.push(line[1..].to_string()),
            Some(b' ') => f.context.push(line[1..].to_string()),
            Some(b'\\') => {}
            None => f.context.push(String::new()),
            _ => in_hunk = false,
        }
    }
    files
}

/// Collapse runs of whitespace and trim: the form lines are compared in.
pub fn normalize_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for w in line.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// Shortest normalised line that counts as distinctive.
pub const MIN_SIGNATURE_LEN: usize = 12;

/// The distinctive added lines of a reference fix: what a leak looks like.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FixSignature {
    /// Normalised distinctive lines.
    pub lines: Vec<String>,
    /// Paths the fix touches.
    pub paths: Vec<String>,
    #[serde(skip)]
    set: HashSet<String>,
}

impl FixSignature {
    /// Build from a reference patch: added lines that are long enough, carry an
    /// identifier, and do not already appear among the patch's removed or
    /// context lines.
    pub fn from_patch(patch: &str) -> FixSignature {
        let files = parse_diff(patch);
        let mut old: HashSet<String> = HashSet::new();
        for f in &files {
            for l in f.removed.iter().chain(&f.context) {
                old.insert(normalize_line(l));
            }
        }
        let mut lines = Vec::new();
        let mut set = HashSet::new();
        for f in &files {
            for l in &f.added {
                let n = normalize_line(l);
                if is_distinctive(&n) && !old.contains(&n) && set.insert(n.clone()) {
                    lines.push(n);
                }
            }
        }
        FixSignature {
            lines,
            paths: files.into_iter().map(|f| f.path).collect(),
            set,
        }
    }

    /// Drop lines that already occur in `base_text` (the base version of the touched files).
    pub fn remove_present_in(&mut self, base_text: &[u8]) {
        let text = String::from_utf8_lossy(base_text);
        let present: HashSet<String> = text.lines().map(normalize_line).collect();
        self.lines.retain(|l| !present.contains(l));
        self.set = self.lines.iter().cloned().collect();
    }

    /// True when there is nothing to match.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// How many matched lines make a content match: all of them for one or two
    /// lines, otherwise at least three and at least a third.
    pub fn threshold(&self) -> usize {
        let n = self.lines.len();
        if n <= 2 { n } else { 3.max(n.div_ceil(3)) }
    }

    /// The distinctive lines that occur in `content`.
    pub fn matches(&self, content: &[u8]) -> Vec<String> {
        if self.set.is_empty() {
            return Vec::new();
        }
        let mut found: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for raw in content.split(|&b| b == b'\n') {
            if raw.len() > 4096 || raw.len() < MIN_SIGNATURE_LEN {
                continue;
            }
            let Ok(s) = std::str::from_utf8(raw) else {
                continue;
            };
            let n = normalize_line(s);
            if self.set.contains(&n) && seen.insert(n.clone()) {
                found.push(n);
            }
        }
        found
    }

    /// Do the matches in `content` reach the threshold?
    pub fn content_matches(&self, content: &[u8]) -> Option<Vec<String>> {
        if self.is_empty() {
            return None;
        }
        let m = self.matches(content);
        (m.len() >= self.threshold()).then_some(m)
    }
}

fn is_distinctive(n: &str) -> bool {
    n.len() >= MIN_SIGNATURE_LEN
        && n.bytes().filter(|b| b.is_ascii_alphabetic()).count() >= 4
        && !n.starts_with("import ")
        && !n.starts_with("from ")
        && !n.starts_with("use ")
        && !n.starts_with("#include")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATCH: &str = "diff --git a/src/m.py b/src/m.py\n--- a/src/m.py\n+++ b/src/m.py\n@@ -1,3 +1,4 @@\n def f(x):\n-    return x\n+    # guard against negative widths\n+    return max(x, 0)  \n+    pass\n";

    #[test]
    fn parses_git_diff() {
        let f = parse_diff(PATCH);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].path, "src/m.py");
        assert_eq!(f[0].added.len(), 3);
        assert_eq!(f[0].removed, vec!["    return x"]);
        assert_eq!(f[0].context, vec!["def f(x):"]);
    }

    #[test]
    fn signature_keeps_distinctive_lines_only() {
        let s = FixSignature::from_patch(PATCH);
        assert_eq!(
            s.lines,
            vec!["# guard against negative widths", "return max(x, 0)"]
        );
        assert_eq!(s.threshold(), 2);
        let hit =
            s.content_matches(b"x\n  # guard   against negative widths\n\treturn max(x, 0)\n");
        assert_eq!(hit.map(|v| v.len()), Some(2));
        assert!(s.content_matches(b"return max(x, 0)\n").is_none());
    }

    #[test]
    fn task_tolerates_extra_fields_and_numeric_version() {
        let t: Task = serde_json::from_str(
            r#"{"instance_id":"a__b-1","repo":"Owner/My_Pkg","base_commit":"abc","version":3.1,"FAIL_TO_PASS":"[]","x":{"y":1}}"#,
        )
        .unwrap();
        assert_eq!(t.version.as_deref(), Some("3.1"));
        assert_eq!(t.package_name().as_deref(), Some("my-pkg"));
        assert_eq!(t.upstream(), Some(("owner".into(), "my_pkg".into())));
    }
}
