//! `runproof prepare`: build the workspace an agent will see, with nothing in
//! it from after the base commit.
//!
//! Method: a fresh repository (`git init` with no templates, so no hooks or
//! sample files) receives exactly one pack written by `git pack-objects --revs`
//! from the source with the base commit (and tags on its ancestors) as the
//! only tips. Nothing else is copied: no refs, reflogs, stash, notes, remotes,
//! config, `packed-refs`, head files or loose objects. The base tree is then
//! checked out, optional untracked files (installed packages, virtualenvs) are
//! copied with caches and installed copies of the project stripped, and the
//! result is checked with [`crate::check::check`] before it is returned.
//! The source repository is only read.

use crate::check::{CheckOptions, CheckReport, check};
use crate::envscan::{CacheKind, ScanLimits, ScanOptions, scan_tree};
use crate::error::{Error, Result, io};
use crate::git::{Repo, base_command};
use crate::task::FixSignature;
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

/// Options for [`prepare`].
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// The source repository (never modified).
    pub repo: PathBuf,
    /// The base commit (any revision that names a commit).
    pub base: String,
    /// Where to create the workspace (must not exist, or be empty).
    pub out: PathBuf,
    /// The reference fix, for the final check and for stripping fixed code.
    pub reference_patch: Option<String>,
    /// Replace history with a single root commit holding the base tree.
    pub no_history: bool,
    /// Drop all tags (by default tags on ancestors of the base are kept, so
    /// version tools like `git describe` and setuptools-scm keep working).
    pub no_tags: bool,
    /// Branch name for the base commit.
    pub branch: String,
    /// Copy untracked and ignored files of the source work tree (virtualenvs,
    /// `node_modules`), then strip caches and installed copies of the project.
    pub copy_untracked: bool,
    /// Package name of the project under test (normalised).
    pub package: Option<String>,
    /// The project's version at the base.
    pub base_version: Option<String>,
}

impl PrepareOptions {
    /// Options with defaults for everything but the three required inputs.
    pub fn new(repo: impl Into<PathBuf>, base: impl Into<String>, out: impl Into<PathBuf>) -> Self {
        PrepareOptions {
            repo: repo.into(),
            base: base.into(),
            out: out.into(),
            reference_patch: None,
            no_history: false,
            no_tags: false,
            branch: "main".into(),
            copy_untracked: false,
            package: None,
            base_version: None,
        }
    }
}

/// Something prepare removed from the copy.
#[derive(Debug, Clone, Serialize)]
pub struct Stripped {
    /// Path relative to the workspace.
    pub path: String,
    /// Why it was removed.
    pub reason: String,
}

/// What prepare produced.
#[derive(Debug, Clone, Serialize)]
pub struct PrepareReport {
    /// The workspace created.
    pub out: PathBuf,
    /// The base commit (full id) in the source.
    pub base: String,
    /// The commit checked out in the workspace (differs from `base` with `--no-history`).
    pub head: String,
    /// Tags kept (all point into the base's history).
    pub tags_kept: Vec<String>,
    /// Objects in the workspace's single pack.
    pub objects: usize,
    /// Untracked files copied.
    pub untracked_copied: u64,
    /// What was removed from the copy.
    pub stripped: Vec<Stripped>,
    /// The check run on the result; `check.clean` is true on success.
    pub check: CheckReport,
    /// Wall time of prepare, without the final check.
    pub prepare_ms: u64,
}

/// Build a leak-free workspace. Fails (leaving the partial output for
/// inspection) if the final check still finds a leak.
pub fn prepare(opts: &PrepareOptions) -> Result<PrepareReport> {
    let start = Instant::now();
    let src = Repo::open(&opts.repo)?;
    let base = src
        .resolve_commit(&opts.base)?
        .ok_or_else(|| Error::BaseNotFound {
            base: opts.base.clone(),
            repo: opts.repo.clone(),
        })?;
    validate_branch(&opts.branch, &opts.out)?;
    ensure_empty_dir(&opts.out)?;
    let out = std::fs::canonicalize(&opts.out).map_err(io("opening", &opts.out))?;
    if let Some(wt) = &src.work_tree
        && (out.starts_with(wt) || wt.starts_with(&out))
    {
        return Err(Error::Invalid {
            what: "output directory",
            path: out,
            detail:
                "it overlaps the source work tree; choose a directory outside the source repository"
                    .into(),
        });
    }

    // Tags to keep: those whose target is an ancestor of the base.
    let mut tags: Vec<(String, String)> = Vec::new();
    if !opts.no_tags && !opts.no_history {
        let ancestors: HashSet<String> = String::from_utf8_lossy(&src.run(&["rev-list", &base])?)
            .lines()
            .map(str::to_string)
            .collect();
        let refs = src.run(&[
            "for-each-ref",
            "--format=%(refname)%00%(objectname)%00%(*objectname)",
            "refs/tags",
        ])?;
        for line in String::from_utf8_lossy(&refs).lines() {
            let mut f = line.split('\0');
            let (name, oid, peeled) = (
                f.next().unwrap_or(""),
                f.next().unwrap_or(""),
                f.next().unwrap_or(""),
            );
            let target = if peeled.is_empty() { oid } else { peeled };
            if ancestors.contains(target) && check_ref_format(name) {
                tags.push((name.to_string(), oid.to_string()));
            }
        }
    }

    // Fresh repository.
    let init = base_command()
        .args(["init", "-q", "--template="])
        .arg(&out)
        .output()
        .map_err(|source| Error::GitMissing { source })?;
    if !init.status.success() {
        return Err(Error::Git {
            args: "init".into(),
            repo: out.clone(),
            stderr: String::from_utf8_lossy(&init.stderr).into_owned(),
        });
    }
    let dst = Repo::from_parts(out.join(".git"), Some(out.clone()));

    // One pack with exactly the objects reachable from the tips.
    let tips: Vec<String> = if opts.no_history {
        vec![
            String::from_utf8_lossy(&src.run(&["rev-parse", &format!("{base}^{{tree}}")])?)
                .trim()
                .to_string(),
        ]
    } else {
        std::iter::once(base.clone())
            .chain(tags.iter().map(|t| t.1.clone()))
            .collect()
    };
    // A shallow source has no parents past its boundary: carry the boundary
    // commits that are in the base's history, or the copy would look corrupt.
    let shallow = src.common_dir.join("shallow");
    if !opts.no_history && shallow.is_file() {
        let text = std::fs::read_to_string(&shallow).map_err(io("reading", &shallow))?;
        let ancestors: HashSet<String> = String::from_utf8_lossy(&src.run(&["rev-list", &base])?)
            .lines()
            .map(str::to_string)
            .collect();
        let keep: String = text
            .lines()
            .filter(|l| ancestors.contains(l.trim()))
            .map(|l| format!("{}\n", l.trim()))
            .collect();
        if !keep.is_empty() {
            let p = dst.git_dir.join("shallow");
            std::fs::write(&p, keep).map_err(io("writing", &p))?;
        }
    }
    let objects = transfer_pack(&src, &dst, &tips)?;

    // Head commit.
    let head = if opts.no_history {
        let date = String::from_utf8_lossy(&src.run(&["show", "-s", "--format=%cI", &base])?)
            .trim()
            .to_string();
        let msg = format!(
            "Base of the task (history removed by runproof prepare; source commit {base})\n"
        );
        let mut cmd = dst.command();
        cmd.args(["commit-tree", &tips[0], "-F", "-"])
            .env("GIT_AUTHOR_NAME", "runproof")
            .env("GIT_AUTHOR_EMAIL", "runproof@localhost")
            .env("GIT_COMMITTER_NAME", "runproof")
            .env("GIT_COMMITTER_EMAIL", "runproof@localhost")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| Error::GitMissing { source })?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("piped");
            stdin
                .write_all(msg.as_bytes())
                .map_err(io("writing to git commit-tree in", &out))?;
        }
        let o = child
            .wait_with_output()
            .map_err(|source| Error::GitMissing { source })?;
        if !o.status.success() {
            return Err(Error::Git {
                args: "commit-tree".into(),
                repo: out.clone(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            });
        }
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    } else {
        base.clone()
    };

    // Refs: one branch, the kept tags. No reflogs (core.logAllRefUpdates=false).
    let branch_ref = format!("refs/heads/{}", opts.branch);
    let mut input = format!("create {branch_ref} {head}\n");
    for (name, oid) in &tags {
        input.push_str(&format!("create {name} {oid}\n"));
    }
    dst.run_with_input(&["update-ref", "--stdin"], input.into_bytes())?;
    dst.run(&["symbolic-ref", "HEAD", &branch_ref])?;
    dst.run(&["read-tree", "-u", "--reset", "HEAD"])?;

    // Untracked files, caches, installed copies.
    let mut stripped = Vec::new();
    let mut copied = 0;
    if opts.copy_untracked {
        copied = copy_untracked(&src, &out)?;
        let sig = opts
            .reference_patch
            .as_deref()
            .map(FixSignature::from_patch)
            .filter(|s| !s.is_empty());
        let scan = scan_tree(
            &out,
            &ScanOptions {
                signature: sig.as_ref(),
                package: opts.package.as_deref(),
                base_version: opts.base_version.as_deref(),
                limits: ScanLimits::default(),
                skip_root_git: true,
            },
        );
        let tracked: HashSet<String> = String::from_utf8_lossy(&dst.run(&["ls-files", "-z"])?)
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let mut remove: Vec<(PathBuf, String)> = Vec::new();
        for (p, kind) in scan.caches {
            remove.push((p, format!("{} package cache", cache_name(kind))));
        }
        for p in scan.installed {
            remove.push((p, "installed copy of the project under test".into()));
        }
        for p in scan.fixed_files {
            let rel = p
                .strip_prefix(&out)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if !tracked.contains(&rel) {
                remove.push((p, "holds the reference fix".into()));
            }
        }
        remove.sort();
        for (p, reason) in remove {
            if !p.starts_with(&out) || p.starts_with(out.join(".git")) {
                continue;
            }
            let meta = match std::fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(_) => continue, // already removed with a parent
            };
            if meta.is_dir() {
                std::fs::remove_dir_all(&p).map_err(io("removing", &p))?;
            } else {
                std::fs::remove_file(&p).map_err(io("removing", &p))?;
            }
            stripped.push(Stripped {
                path: p.strip_prefix(&out).unwrap_or(&p).display().to_string(),
                reason,
            });
        }
    }
    let prepare_ms = start.elapsed().as_millis() as u64;

    let report = check(&CheckOptions {
        dir: out.clone(),
        base: Some(head.clone()),
        reference_patch: opts.reference_patch.clone(),
        package: opts.package.clone(),
        base_version: opts.base_version.clone(),
        scan_dirs: Vec::new(),
        git_only: false,
    })?;
    Ok(PrepareReport {
        out,
        base,
        head,
        tags_kept: tags.into_iter().map(|t| t.0).collect(),
        objects,
        untracked_copied: copied,
        stripped,
        check: report,
        prepare_ms,
    })
}

fn cache_name(k: CacheKind) -> &'static str {
    match k {
        CacheKind::Pip => "pip",
        CacheKind::Uv => "uv",
        CacheKind::Npm => "npm",
        CacheKind::Yarn => "yarn",
        CacheKind::Pnpm => "pnpm",
        CacheKind::Cargo => "cargo",
        CacheKind::Poetry => "poetry",
    }
}

fn validate_branch(branch: &str, out: &Path) -> Result<()> {
    if check_ref_format(&format!("refs/heads/{branch}")) {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: "branch name",
            path: out.to_path_buf(),
            detail: format!(
                "{branch:?} is not a valid branch name; use letters, digits, '-', '_', '/' or '.'"
            ),
        })
    }
}

/// A conservative ref-name check (stricter than git's).
fn check_ref_format(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains("..")
        && !name.contains("//")
        && !name.ends_with('/')
        && !name.ends_with(".lock")
        && !name.split('/').any(|c| c.is_empty() || c.starts_with('.'))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_/.+".contains(&b))
}

fn ensure_empty_dir(p: &Path) -> Result<()> {
    match std::fs::read_dir(p) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::OutputNotEmpty {
                    path: p.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(p).map_err(io("creating", p))
        }
        Err(e) => Err(Error::Io {
            action: "opening",
            path: p.to_path_buf(),
            source: e,
        }),
    }
}

/// Stream `pack-objects --revs` from `src` into `index-pack --stdin` in `dst`.
/// Returns the number of objects in the new pack.
fn transfer_pack(src: &Repo, dst: &Repo, tips: &[String]) -> Result<usize> {
    let mut producer = src
        .command()
        .args([
            "pack-objects",
            "--revs",
            "--stdout",
            "--delta-base-offset",
            "-q",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::GitMissing { source })?;
    let pack = producer.stdout.take().expect("piped");
    let consumer = dst
        .command()
        .args(["index-pack", "--stdin"])
        .stdin(Stdio::from(pack))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::GitMissing { source })?;
    {
        use std::io::Write;
        let mut stdin = producer.stdin.take().expect("piped");
        let mut input = String::new();
        for t in tips {
            input.push_str(t);
            input.push('\n');
        }
        stdin
            .write_all(input.as_bytes())
            .map_err(io("writing to git pack-objects in", &src.git_dir))?;
    }
    let p = producer
        .wait_with_output()
        .map_err(|source| Error::GitMissing { source })?;
    let c = consumer
        .wait_with_output()
        .map_err(|source| Error::GitMissing { source })?;
    if !p.status.success() {
        return Err(Error::Git {
            args: "pack-objects --revs".into(),
            repo: src.git_dir.clone(),
            stderr: String::from_utf8_lossy(&p.stderr).into_owned(),
        });
    }
    if !c.status.success() {
        return Err(Error::Git {
            args: "index-pack --stdin".into(),
            repo: dst.git_dir.clone(),
            stderr: String::from_utf8_lossy(&c.stderr).into_owned(),
        });
    }
    let hex_len = dst.hex_len()?;
    let inv = crate::objects::Inventory::read(&dst.git_dir.join("objects"), hex_len, &dst.git_dir)?;
    Ok(inv.objects.len())
}

/// Copy untracked and ignored files (never `.git`), preserving symlinks as
/// symlinks. Paths come from `git ls-files -z` and are checked to stay inside.
fn copy_untracked(src: &Repo, out: &Path) -> Result<u64> {
    let Some(wt) = &src.work_tree else {
        return Ok(0);
    };
    let listing = src.run(&[
        "ls-files",
        "-z",
        "--others",
        "--directory",
        "--no-empty-directory",
    ])?;
    let mut n = 0;
    for raw in listing.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let rel = PathBuf::from(String::from_utf8_lossy(raw).trim_end_matches('/'));
        if !safe_relative(&rel) || rel.components().any(|c| c.as_os_str() == ".git") {
            continue;
        }
        n += copy_tree(&wt.join(&rel), &out.join(&rel))?;
    }
    Ok(n)
}

fn safe_relative(p: &Path) -> bool {
    !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

fn copy_tree(from: &Path, to: &Path) -> Result<u64> {
    let meta = std::fs::symlink_metadata(from).map_err(io("reading", from))?;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from).map_err(io("reading link", from))?;
        std::os::unix::fs::symlink(&target, to).map_err(io("creating link", to))?;
        return Ok(1);
    }
    if meta.is_dir() {
        if from.file_name().is_some_and(|n| n == ".git") {
            return Ok(0);
        }
        std::fs::create_dir_all(to).map_err(io("creating", to))?;
        let mut n = 0;
        let rd = std::fs::read_dir(from).map_err(io("reading", from))?;
        for e in rd {
            let e = e.map_err(io("reading", from))?;
            n += copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        return Ok(n);
    }
    if meta.is_file() {
        std::fs::copy(from, to).map_err(io("copying", from))?;
        return Ok(1);
    }
    Ok(0)
}
