//! Unified-diff validation and application.
//!
//! A patch is hostile input. Before anything touches the workspace it is
//! parsed and refused when it is not a diff, names a path outside the
//! repository (absolute, `..`, `.git/`), writes through a symlink that exists
//! in the workspace or that the patch itself creates, or creates a symlink
//! pointing outside. Application then tries `git apply`, `git apply --3way`,
//! and finally `patch -p1 --fuzz=3` (only for plain text patches), resetting
//! the touched files between attempts.

use crate::env::Tree;
use crate::model::truncate;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// One file entry of a diff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilePatch {
    /// Path before (None for a new file).
    pub old: Option<String>,
    /// Path after (None for a deleted file).
    pub new: Option<String>,
    /// The entry creates or changes a symlink (mode 120000).
    pub symlink: bool,
    /// Target of a symlink the patch creates (from its `+` line).
    pub symlink_target: Option<String>,
    /// Binary patch or mode-only change: only `git apply` can apply it.
    pub git_only: bool,
    /// Lines added (without the leading `+`).
    pub added: Vec<String>,
}

impl FilePatch {
    /// The paths this entry touches (old and new, deduplicated).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        let o = self.old.as_deref();
        let n = self.new.as_deref().filter(|n| Some(*n) != o);
        o.into_iter().chain(n)
    }
}

/// A parsed diff.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub files: Vec<FilePatch>,
    /// The text ends inside a hunk (fewer lines than its header counts).
    pub truncated: bool,
}

impl Patch {
    pub fn paths(&self) -> BTreeSet<String> {
        self.files
            .iter()
            .flat_map(|f| f.paths().map(str::to_string))
            .collect()
    }
}

/// Why a patch was refused or could not be applied.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("not a unified diff: {0}; give the output of `git diff` or `diff -u`")]
    NotADiff(String),
    #[error("refused: path `{path}` {why}; a patch may only change files inside the repository")]
    UnsafePath { path: String, why: &'static str },
    #[error(
        "refused: `{path}` goes through the symlink `{link}`; patches may not write through symlinks"
    )]
    ThroughSymlink { path: String, link: String },
    #[error("refused: symlink `{path}` would point to `{target}`, outside the repository")]
    SymlinkEscape { path: String, target: String },
    #[error("does not apply (git apply, git apply --3way and patch --fuzz=3 all failed): {0}")]
    DoesNotApply(String),
    #[error("cannot run `{0}`: {1}; check that it is installed")]
    Tool(String, String),
}

/// How a patch was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyMethod {
    GitApply,
    GitApply3way,
    PatchFuzz,
    /// Nothing to apply (empty patch).
    Empty,
}

/// Decodes a git-quoted path (`"a/sp\303\251cial\tname"`).
fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::new();
    let b = inner.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            i += 1;
            match b[i] {
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'"' => out.push(b'"'),
                b'\\' => out.push(b'\\'),
                b'a' => out.push(7),
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'r' => out.push(b'\r'),
                b'v' => out.push(11),
                d @ b'0'..=b'7' => {
                    let mut v = u32::from(d - b'0');
                    let mut k = 1;
                    while k < 3 && i + 1 < b.len() && (b'0'..=b'7').contains(&b[i + 1]) {
                        i += 1;
                        v = v * 8 + u32::from(b[i] - b'0');
                        k += 1;
                    }
                    out.push((v & 0xff) as u8);
                }
                other => out.push(other),
            }
        } else {
            out.push(b[i]);
        }
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Path from a `---`/`+++` line: strips a tab-separated timestamp, quotes, and
/// the one leading component (`a/`, `b/`) as `-p1` does. `None` for /dev/null.
fn header_path(raw: &str) -> Option<String> {
    let raw = raw.trim_end_matches('\r');
    let p = if raw.starts_with('"') {
        unquote(raw).unwrap_or_else(|| raw.to_string())
    } else {
        raw.split('\t').next().unwrap_or(raw).trim_end().to_string()
    };
    if p == "/dev/null" {
        return None;
    }
    Some(strip_p1(&p))
}

fn strip_p1(p: &str) -> String {
    match p.split_once('/') {
        Some((_, rest)) if !p.starts_with('/') => rest.to_string(),
        _ => p.to_string(),
    }
}

/// Paths from `diff --git a/X b/Y` (used for mode-only and binary entries).
fn git_header_paths(rest: &str) -> (Option<String>, Option<String>) {
    if let Some(after) = rest.strip_prefix('"') {
        // Quoted: "a/x" "b/y"
        if let Some(end) = after.find("\" ").map(|i| i + 2) {
            let a = unquote(&rest[..end]).map(|p| strip_p1(&p));
            let b = unquote(rest[end..].trim()).map(|p| strip_p1(&p));
            return (a, b);
        }
        return (None, None);
    }
    // Unquoted: "a/x b/x" — split where the two halves are equal after p1.
    let bytes = rest.as_bytes();
    for (i, _) in rest.match_indices(" b/") {
        let (a, b) = (&rest[..i], &rest[i + 1..]);
        if strip_p1(a) == strip_p1(b) || i + 1 >= bytes.len() {
            return (Some(strip_p1(a)), Some(strip_p1(b)));
        }
    }
    match rest.split_once(' ') {
        Some((a, b)) => (Some(strip_p1(a)), Some(strip_p1(b))),
        None => (None, None),
    }
}

/// Parses a unified diff (git or plain). Refuses text that holds no file
/// entry with a hunk, a rename, a mode change or a binary patch.
pub fn parse(text: &str) -> Result<Patch, PatchError> {
    let mut files: Vec<FilePatch> = Vec::new();
    let mut cur: Option<FilePatch> = None;
    let mut has_content = false;
    let mut in_hunk = (0usize, 0usize); // remaining old, new lines
    // Whether the current entry began with `diff --git` and has seen a hunk.
    let (mut git_entry, mut hunk_seen) = (false, false);
    let lines: Vec<&str> = text.split('\n').collect();
    let mut i = 0;
    let flush = |cur: &mut Option<FilePatch>, files: &mut Vec<FilePatch>| {
        if let Some(f) = cur.take() {
            files.push(f);
        }
    };
    while i < lines.len() {
        let line = lines[i].trim_end_matches('\r');
        if in_hunk.0 > 0 || in_hunk.1 > 0 {
            let (o, n) = &mut in_hunk;
            match line.as_bytes().first() {
                Some(b'+') => {
                    *n = n.saturating_sub(1);
                    if let Some(f) = cur.as_mut() {
                        f.added.push(line[1..].to_string());
                    }
                }
                Some(b'-') => *o = o.saturating_sub(1),
                Some(b' ') | None => {
                    *o = o.saturating_sub(1);
                    *n = n.saturating_sub(1);
                }
                Some(b'\\') => {}
                _ => {
                    return Err(PatchError::NotADiff(format!(
                        "line {} inside a hunk does not start with ' ', '+' or '-': `{}`",
                        i + 1,
                        truncate(line, 60)
                    )));
                }
            }
            i += 1;
            continue;
        }
        if let Some(rest) = line.strip_prefix("diff --git ") {
            flush(&mut cur, &mut files);
            let (a, b) = git_header_paths(rest);
            git_entry = true;
            hunk_seen = false;
            cur = Some(FilePatch {
                old: a,
                new: b,
                ..Default::default()
            });
        } else if let Some(rest) = line.strip_prefix("--- ") {
            if lines.get(i + 1).is_some_and(|l| l.starts_with("+++ ")) {
                if !(git_entry && !hunk_seen && cur.is_some()) {
                    flush(&mut cur, &mut files);
                    cur = Some(FilePatch::default());
                    git_entry = false;
                    hunk_seen = false;
                }
                let f = cur.as_mut().expect("set above");
                f.old = header_path(rest);
                f.new = header_path(lines[i + 1].trim_start_matches("+++ "));
                i += 2;
                continue;
            }
        } else if line.starts_with("@@ ") {
            let f = cur.as_mut().ok_or_else(|| {
                PatchError::NotADiff(format!(
                    "hunk at line {} comes before any file header",
                    i + 1
                ))
            })?;
            let (o, n) = hunk_counts(line).ok_or_else(|| {
                PatchError::NotADiff(format!(
                    "bad hunk header at line {}: `{}`",
                    i + 1,
                    truncate(line, 60)
                ))
            })?;
            in_hunk = (o, n);
            has_content = true;
            hunk_seen = true;
            let _ = f;
        } else if let Some(f) = cur.as_mut() {
            if let Some(m) = line
                .strip_prefix("new file mode ")
                .or_else(|| line.strip_prefix("new mode "))
            {
                if m.trim() == "120000" {
                    f.symlink = true;
                }
                if line.starts_with("new file mode ") {
                    f.old = None;
                }
                if line.starts_with("new mode ") {
                    f.git_only = true;
                    has_content = true;
                }
            } else if line.starts_with("deleted file mode ") {
                has_content = true;
                f.new = None;
            } else if let Some(m) = line.strip_prefix("old mode ") {
                if m.trim() == "120000" {
                    f.symlink = true;
                }
            } else if let Some(p) = line
                .strip_prefix("rename from ")
                .or_else(|| line.strip_prefix("copy from "))
            {
                f.old = Some(unquote(p).unwrap_or_else(|| p.to_string()));
                has_content = true;
                f.git_only = true;
            } else if let Some(p) = line
                .strip_prefix("rename to ")
                .or_else(|| line.strip_prefix("copy to "))
            {
                f.new = Some(unquote(p).unwrap_or_else(|| p.to_string()));
                f.git_only = true;
            } else if line == "GIT binary patch"
                || (line.starts_with("Binary files ") && line.ends_with(" differ"))
            {
                f.git_only = true;
                has_content = true;
            }
        }
        i += 1;
    }
    flush(&mut cur, &mut files);
    files.retain(|f| f.old.is_some() || f.new.is_some());
    if !has_content || files.is_empty() {
        return Err(PatchError::NotADiff(
            "no file header with a hunk (`--- a/x`, `+++ b/x`, `@@ ... @@`) found".into(),
        ));
    }
    for f in &mut files {
        if f.symlink && f.old.is_none() {
            f.symlink_target = f.added.first().cloned();
        }
    }
    Ok(Patch {
        files,
        truncated: in_hunk != (0, 0),
    })
}

/// `@@ -a[,b] +c[,d] @@` → (b, d), counts default to 1.
fn hunk_counts(line: &str) -> Option<(usize, usize)> {
    let body = line.strip_prefix("@@ ")?;
    let end = body.find(" @@")?;
    let mut it = body[..end].split(' ');
    let o = it.next()?.strip_prefix('-')?;
    let n = it.next()?.strip_prefix('+')?;
    let count = |s: &str| -> Option<usize> {
        match s.split_once(',') {
            Some((a, b)) => {
                a.parse::<u64>().ok()?;
                b.parse().ok()
            }
            None => {
                s.parse::<u64>().ok()?;
                Some(1)
            }
        }
    };
    Some((count(o)?, count(n)?))
}

/// Checks one repository-relative path.
pub fn check_path(p: &str) -> Result<(), PatchError> {
    let bad = |why| {
        Err(PatchError::UnsafePath {
            path: truncate(p, 200),
            why,
        })
    };
    if p.is_empty() {
        return bad("is empty");
    }
    if p.contains('\0') {
        return bad("contains a NUL byte");
    }
    if p.starts_with('/') {
        return bad("is absolute");
    }
    for c in Path::new(p).components() {
        match c {
            Component::ParentDir => return bad("contains `..`"),
            Component::RootDir | Component::Prefix(_) => return bad("is absolute"),
            Component::Normal(n) if n.eq_ignore_ascii_case(".git") => {
                return bad("is inside `.git`");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Validates a parsed patch against the workspace it will be applied to.
pub fn validate(patch: &Patch, workspace: &Path) -> Result<(), PatchError> {
    let new_links: BTreeSet<&str> = patch
        .files
        .iter()
        .filter(|f| f.symlink)
        .filter_map(|f| f.new.as_deref())
        .collect();
    for f in &patch.files {
        for p in f.paths() {
            check_path(p)?;
            // Every existing ancestor (and the file itself, unless the entry is
            // about a symlink) must not be a symlink.
            let comps: Vec<&str> = p
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect();
            let mut cur = PathBuf::from(workspace);
            for (k, c) in comps.iter().enumerate() {
                cur.push(c);
                let last = k + 1 == comps.len();
                let rel = comps[..=k].join("/");
                if !last && new_links.contains(rel.as_str()) {
                    return Err(PatchError::ThroughSymlink {
                        path: p.to_string(),
                        link: rel,
                    });
                }
                match std::fs::symlink_metadata(&cur) {
                    Ok(m) if m.file_type().is_symlink() && !(last && f.symlink) => {
                        return Err(PatchError::ThroughSymlink {
                            path: p.to_string(),
                            link: rel,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        if let (Some(t), Some(n)) = (&f.symlink_target, &f.new)
            && f.symlink
        {
            let parent = Path::new(n).parent().unwrap_or(Path::new(""));
            if !stays_inside(parent, t) {
                return Err(PatchError::SymlinkEscape {
                    path: n.clone(),
                    target: truncate(t, 200),
                });
            }
        }
    }
    Ok(())
}

/// Whether `target`, resolved lexically from `dir` (repository-relative), stays inside.
fn stays_inside(dir: &Path, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth: i64 = dir.components().count() as i64;
    for c in Path::new(target).components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(n) if n.eq_ignore_ascii_case(".git") => return false,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

fn run_tool(mut c: Command, name: &str) -> Result<(bool, String), PatchError> {
    let out = c
        .output()
        .map_err(|e| PatchError::Tool(name.into(), e.to_string()))?;
    let mut msg = String::from_utf8_lossy(&out.stderr).into_owned();
    msg.push_str(&String::from_utf8_lossy(&out.stdout));
    Ok((out.status.success(), truncate(msg.trim(), 2000)))
}

/// Restores `paths` to their state at `HEAD` (the base commit): tracked files
/// are checked out, files absent at `HEAD` are removed. Untracked files the
/// environment setup created elsewhere are left alone.
pub fn restore_paths(tree: &Tree, paths: &BTreeSet<String>) -> Result<(), PatchError> {
    let ws = tree.work.as_path();
    if paths.is_empty() {
        return Ok(());
    }
    for p in paths {
        check_path(p)?;
    }
    let mut c = tree.git();
    c.args(["ls-tree", "-r", "--name-only", "-z", "HEAD", "--"])
        .args(paths);
    let out = c
        .output()
        .map_err(|e| PatchError::Tool("git ls-tree".into(), e.to_string()))?;
    let tracked: BTreeSet<String> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    for p in paths.iter().filter(|p| !tracked.contains(*p)) {
        let full = ws.join(p);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(&full);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&full);
            }
            Err(_) => {}
        }
        // Unstage anything 3-way merging put in the index.
        let mut c = tree.git();
        c.args(["rm", "--cached", "-q", "--ignore-unmatch", "--"])
            .arg(p);
        let _ = c.output();
    }
    if !tracked.is_empty() {
        let mut c = tree.git();
        c.args(["checkout", "-q", "HEAD", "--"]).args(&tracked);
        let (ok, msg) = run_tool(c, "git checkout")?;
        if !ok {
            return Err(PatchError::Tool("git checkout".into(), msg));
        }
    }
    Ok(())
}

/// Applies `text` (already parsed as `patch` and validated) in `ws`, trying
/// `git apply`, `git apply --3way`, then `patch -p1 --fuzz=3`. `patch_file` is
/// where the text is written for the tools (outside the workspace).
pub fn apply(
    text: &str,
    patch: &Patch,
    tree: &Tree,
    patch_file: &Path,
) -> Result<ApplyMethod, PatchError> {
    let ws = tree.work.as_path();
    if patch.files.is_empty() {
        return Ok(ApplyMethod::Empty);
    }
    let mut text = text.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    std::fs::write(patch_file, &text)
        .map_err(|e| PatchError::Tool("write patch file".into(), e.to_string()))?;
    let paths = patch.paths();
    let mut errors = Vec::new();

    let mut c = tree.git();
    c.args(["apply", "--whitespace=nowarn", "-v"])
        .arg(patch_file);
    let (ok, msg) = run_tool(c, "git apply")?;
    if ok {
        return Ok(ApplyMethod::GitApply);
    }
    errors.push(format!("git apply: {}", last_lines(&msg, 3)));
    restore_paths(tree, &paths)?;

    let mut c = tree.git();
    c.args(["apply", "--3way", "--whitespace=nowarn"])
        .arg(patch_file);
    let (ok, msg) = run_tool(c, "git apply --3way")?;
    if ok && !has_conflict_markers(ws, &paths) {
        // Leave the index as it was at the base; only the worktree matters.
        let mut c = tree.git();
        c.args(["reset", "-q", "--"]).args(&paths);
        let _ = c.output();
        return Ok(ApplyMethod::GitApply3way);
    }
    errors.push(format!("git apply --3way: {}", last_lines(&msg, 3)));
    restore_paths(tree, &paths)?;

    if patch.files.iter().any(|f| f.git_only || f.symlink) {
        return Err(PatchError::DoesNotApply(errors.join("; ")));
    }
    let fuzz = |dry: bool| {
        let mut c = Command::new("patch");
        c.current_dir(ws).args([
            "-p1",
            "--fuzz=3",
            "--batch",
            "--forward",
            "--no-backup-if-mismatch",
            "--reject-file=-",
            "-s",
        ]);
        if dry {
            c.arg("--dry-run");
        }
        c.arg("-i").arg(patch_file);
        run_tool(c, "patch")
    };
    let (ok, msg) = fuzz(true)?;
    if ok {
        let (ok2, msg2) = fuzz(false)?;
        if ok2 {
            return Ok(ApplyMethod::PatchFuzz);
        }
        restore_paths(tree, &paths)?;
        errors.push(format!("patch: {}", last_lines(&msg2, 3)));
    } else {
        errors.push(format!("patch --fuzz=3: {}", last_lines(&msg, 3)));
    }
    Err(PatchError::DoesNotApply(errors.join("; ")))
}

/// Applies several patches (already parsed and validated, touching disjoint
/// paths) with one `git apply`, which is atomic: `Ok(false)` when any hunk
/// does not apply, and then nothing was changed. No fallbacks. Also
/// `Ok(false)`, without running anything, unless the joined text parses to
/// exactly the patches' own entries: a patch that ends inside a hunk could
/// otherwise swallow the next one's lines.
pub fn apply_joined(
    patches: &[(&str, &Patch)],
    tree: &Tree,
    patch_file: &Path,
) -> Result<bool, PatchError> {
    let mut joined = String::new();
    for (t, _) in patches {
        joined.push_str(t);
        if !joined.ends_with('\n') {
            joined.push('\n');
        }
    }
    let want: Vec<&FilePatch> = patches.iter().flat_map(|(_, p)| &p.files).collect();
    let separate = patches.iter().all(|(_, p)| !p.truncated)
        && parse(&joined).is_ok_and(|j| !j.truncated && j.files.iter().eq(want.iter().copied()));
    if !separate {
        return Ok(false);
    }
    std::fs::write(patch_file, &joined)
        .map_err(|e| PatchError::Tool("write patch file".into(), e.to_string()))?;
    let mut c = tree.git();
    c.args(["apply", "--whitespace=nowarn"]).arg(patch_file);
    Ok(run_tool(c, "git apply")?.0)
}

fn last_lines(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    v[v.len().saturating_sub(n)..].join(" | ")
}

fn has_conflict_markers(ws: &Path, paths: &BTreeSet<String>) -> bool {
    paths.iter().any(|p| {
        std::fs::read(ws.join(p))
            .map(|b| {
                b.split(|c| *c == b'\n')
                    .any(|l| l.starts_with(b"<<<<<<< ") || l == b"<<<<<<<")
            })
            .unwrap_or(false)
    })
}

/// After application: every touched path must still resolve inside the
/// workspace (defence in depth against a tool following a link).
pub fn check_applied(ws: &Path, patch: &Patch) -> Result<(), PatchError> {
    let root = ws
        .canonicalize()
        .map_err(|e| PatchError::Tool("canonicalize workspace".into(), e.to_string()))?;
    for p in patch.paths() {
        let full = ws.join(&p);
        let parent = full.parent().unwrap_or(ws);
        if let Ok(real) = parent.canonicalize()
            && !real.starts_with(&root)
        {
            return Err(PatchError::ThroughSymlink {
                path: p.clone(),
                link: real.display().to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIT_DIFF: &str = "diff --git a/src/m.py b/src/m.py\nindex 1..2 100644\n--- a/src/m.py\n+++ b/src/m.py\n@@ -1,2 +1,2 @@\n def f():\n-    return 1\n+    return 2\n";

    #[test]
    fn parses_git_and_plain_diffs() {
        let p = parse(GIT_DIFF).unwrap();
        assert_eq!(p.files.len(), 1);
        assert_eq!(p.files[0].old.as_deref(), Some("src/m.py"));
        assert_eq!(p.files[0].added, vec!["    return 2"]);
        let plain = "--- x.orig\t2020-01-01\n+++ x\t2020-01-01\n@@ -1 +1 @@\n-a\n+b\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hello\n";
        let p = parse(plain).unwrap();
        assert_eq!(p.files.len(), 2, "{p:?}");
        assert_eq!(p.files[1].old, None);
        assert_eq!(p.files[1].new.as_deref(), Some("new.txt"));
        let del = "diff --git a/gone.txt b/gone.txt\ndeleted file mode 100644\nindex 1..0\n--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n";
        let p = parse(del).unwrap();
        assert_eq!(p.paths().into_iter().collect::<Vec<_>>(), vec!["gone.txt"]);
    }

    #[test]
    fn refuses_non_diffs_and_bad_paths() {
        assert!(matches!(
            parse("hello world\n"),
            Err(PatchError::NotADiff(_))
        ));
        assert!(matches!(parse(""), Err(PatchError::NotADiff(_))));
        assert!(matches!(
            parse("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n*b\n"),
            Err(PatchError::NotADiff(_))
        ));
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            ".git/hooks/pre-commit",
            "sub/.GIT/config",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        check_path("src/ok.py").unwrap();
        let abs = "--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n";
        let p = parse(abs).unwrap();
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            validate(&p, d.path()),
            Err(PatchError::UnsafePath { .. })
        ));
    }

    #[test]
    fn refuses_symlink_tricks() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/tmp", d.path().join("link")).unwrap();
        let p = parse("--- a/link/x\n+++ b/link/x\n@@ -0,0 +1 @@\n+pwned\n").unwrap();
        assert!(matches!(
            validate(&p, d.path()),
            Err(PatchError::ThroughSymlink { .. })
        ));
        let mk = "diff --git a/l b/l\nnew file mode 120000\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+../../etc\n\\ No newline at end of file\n";
        let p = parse(mk).unwrap();
        assert!(p.files[0].symlink);
        assert!(matches!(
            validate(&p, d.path()),
            Err(PatchError::SymlinkEscape { .. })
        ));
        let both = format!(
            "{}--- a/l/x\n+++ b/l/x\n@@ -0,0 +1 @@\n+x\n",
            mk.replace("../../etc", "sub")
        );
        let p = parse(&both).unwrap();
        assert!(
            matches!(
                validate(&p, d.path()),
                Err(PatchError::ThroughSymlink { .. })
            ),
            "{p:?}"
        );
    }

    fn git_repo(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, c) in files {
            std::fs::write(d.path().join(p), c).unwrap();
        }
        for args in [
            &["init", "-q"][..],
            &["add", "-A"],
            &["commit", "-qm", "base"],
        ] {
            let ok = crate::env::git(d.path()).args(args).status().unwrap();
            assert!(ok.success(), "git {args:?}");
        }
        d
    }

    #[test]
    fn joined_apply_is_atomic_and_refuses_a_patch_that_swallows_the_next() {
        let d = git_repo(&[("a.txt", "a\n"), ("b.txt", "b\n")]);
        let tree = Tree::plain(d.path());
        let scratch = tempfile::tempdir().unwrap();
        let pf = scratch.path().join("joined.patch");
        let pa = "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-a\n+A\n";
        let pb = "--- a/b.txt\n+++ b/b.txt\n@@ -1 +1 @@\n-b\n+B\n";
        let bad_b = "--- a/b.txt\n+++ b/b.txt\n@@ -1 +1 @@\n-nope\n+B\n";
        let read = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap();
        let (a, b, bb) = (
            parse(pa).unwrap(),
            parse(pb).unwrap(),
            parse(bad_b).unwrap(),
        );
        // One hunk fails: nothing is written.
        assert!(!apply_joined(&[(pa, &a), (bad_b, &bb)], &tree, &pf).unwrap());
        assert_eq!((read("a.txt"), read("b.txt")), ("a\n".into(), "b\n".into()));
        // A patch whose last hunk claims more lines than it has would take the
        // next patch's header as its own lines: refused before git runs.
        let short = "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1,3 @@\n-a\n+A\n";
        let s = parse(short).unwrap();
        assert!(s.truncated);
        assert!(!apply_joined(&[(short, &s), (pb, &b)], &tree, &pf).unwrap());
        assert_eq!(read("b.txt"), "b\n");
        assert!(apply_joined(&[(pa, &a), (pb, &b)], &tree, &pf).unwrap());
        assert_eq!((read("a.txt"), read("b.txt")), ("A\n".into(), "B\n".into()));
    }

    #[test]
    fn quoted_paths_decode() {
        assert_eq!(unquote("\"a/sp\\303\\251c\\tx\"").unwrap(), "a/spéc\tx");
        let (a, b) = git_header_paths("a/dir with space/f b/dir with space/f");
        assert_eq!(a.as_deref(), Some("dir with space/f"));
        assert_eq!(b.as_deref(), Some("dir with space/f"));
    }
}
