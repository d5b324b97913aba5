//! `runproof prepare --check`: list every way a workspace leaks the future.
//!
//! The method: the set of objects reachable from the base commit is the only
//! history an agent may see. Everything else in the object store (packed,
//! loose, or in an alternate store) is foreign and reported with the file that
//! holds it; every ref, reflog entry, special head file (`ORIG_HEAD`,
//! `FETCH_HEAD`, ...), linked worktree and remote that points outside that set
//! is reported with where it is. Foreign commits are labelled future by
//! ancestry (always) and by date (committer date after the base's). Foreign
//! blobs and files on disk are matched against the reference fix's distinctive
//! lines. Git is asked in batch mode: one `rev-list` walk, one `cat-file
//! --batch` stream, one `for-each-ref`; object locations come from reading the
//! pack indexes directly.

use crate::envscan::{ScanLimits, ScanOptions, scan_tree};
use crate::error::{Error, Result};
use crate::git::Repo;
use crate::objects::Inventory;
use crate::task::FixSignature;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The agent could retrieve later code through this.
    Leak,
    /// Worth knowing; not proof of a leak.
    Warning,
}

/// What kind of leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    /// A branch, tag, remote-tracking ref, stash, note or other ref outside the base's history.
    Ref,
    /// A reflog entry naming a commit outside the base's history.
    Reflog,
    /// `ORIG_HEAD`, `FETCH_HEAD`, `MERGE_HEAD`, a linked worktree's `HEAD`, ...
    SpecialHead,
    /// A configured remote: the agent could fetch later history.
    Remote,
    /// An alternate object store outside the workspace.
    Alternates,
    /// A commit that is not an ancestor of the base.
    FutureCommit,
    /// Other objects outside the base's history (trees, blobs, tags), per file.
    ForeignObjects,
    /// A blob in the object store holding the reference fix.
    FixedCodeBlob,
    /// A file on disk holding the reference fix.
    FixedCodeFile,
    /// A package cache.
    Cache,
    /// An installed copy of the project under test.
    InstalledProject,
    /// A git directory nested in the workspace.
    NestedRepository,
    /// The checked-out `HEAD` is not the base commit.
    HeadNotAtBase,
    /// An ancestor of the base with a committer date after the base's (clock skew or rewritten history).
    DateAnomaly,
    /// Grafts or a shallow file changing what git thinks the history is.
    HistoryRewrite,
}

/// One finding, with where it is.
#[derive(Debug, Clone, Serialize)]
pub struct Leak {
    /// What kind of leak.
    pub kind: LeakKind,
    /// Leak or warning.
    pub severity: Severity,
    /// Where: a path relative to the workspace, a ref name, a pack file.
    pub location: String,
    /// Object id involved, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// What it is and why it matters.
    pub detail: String,
    /// Matched lines of the reference fix, when the finding is content-based.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fragments: Vec<String>,
}

impl Leak {
    pub(crate) fn new(
        kind: LeakKind,
        severity: Severity,
        location: String,
        detail: String,
    ) -> Leak {
        let mut location = location;
        crate::git::truncate(&mut location, 1000);
        Leak {
            kind,
            severity,
            location,
            object: None,
            detail,
            fragments: Vec::new(),
        }
    }
    pub(crate) fn with_object(mut self, oid: &str) -> Leak {
        self.object = Some(oid.to_string());
        self
    }
    pub(crate) fn with_fragments(mut self, mut f: Vec<String>) -> Leak {
        f.truncate(20);
        for s in &mut f {
            crate::git::truncate(s, 300);
        }
        self.fragments = f;
        self
    }
}

/// Options for [`check`].
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// The workspace (a work tree or a bare git directory).
    pub dir: PathBuf,
    /// The base commit; defaults to the workspace's `HEAD`.
    pub base: Option<String>,
    /// The reference fix, for content matching.
    pub reference_patch: Option<String>,
    /// Package name of the project under test (normalised).
    pub package: Option<String>,
    /// The project's version at the base.
    pub base_version: Option<String>,
    /// More directories to scan for caches and installed packages (a home, a virtualenv).
    pub scan_dirs: Vec<PathBuf>,
    /// Skip scanning files on disk (git only).
    pub git_only: bool,
}

/// The result of a check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The workspace checked.
    pub dir: PathBuf,
    /// The base commit (full id), if the workspace is a repository.
    pub base: Option<String>,
    /// The base's committer date (Unix seconds).
    pub base_date: Option<i64>,
    /// Objects in the store.
    pub objects_total: usize,
    /// Objects reachable from the base.
    pub objects_reachable: usize,
    /// Objects outside the base's history.
    pub objects_foreign: usize,
    /// Foreign commits found.
    pub future_commits: usize,
    /// Distinctive lines of the reference fix searched for.
    pub fix_lines: usize,
    /// Files on disk scanned.
    pub files_scanned: u64,
    /// Every finding.
    pub leaks: Vec<Leak>,
    /// True when no finding has severity `leak`.
    pub clean: bool,
    /// Wall time of the check.
    pub elapsed_ms: u64,
}

impl CheckReport {
    /// Findings of severity `leak`.
    pub fn leak_count(&self) -> usize {
        self.leaks
            .iter()
            .filter(|l| l.severity == Severity::Leak)
            .count()
    }
}

/// Foreign commits listed one by one at most; the rest are counted.
pub const MAX_LISTED_COMMITS: usize = 500;
/// Largest blob read for content matching.
const MAX_BLOB: u64 = 4 << 20;

/// Check a workspace for leaks.
pub fn check(opts: &CheckOptions) -> Result<CheckReport> {
    let start = Instant::now();
    let dir = std::fs::canonicalize(&opts.dir)
        .map_err(crate::error::io("opening workspace", &opts.dir))?;
    let mut signature = opts
        .reference_patch
        .as_deref()
        .map(FixSignature::from_patch);
    let mut leaks = Vec::new();
    let mut report = CheckReport {
        dir: dir.clone(),
        base: None,
        base_date: None,
        objects_total: 0,
        objects_reachable: 0,
        objects_foreign: 0,
        future_commits: 0,
        fix_lines: 0,
        files_scanned: 0,
        leaks: Vec::new(),
        clean: true,
        elapsed_ms: 0,
    };
    let mut git_ctx: Option<(Repo, String)> = None;
    let has_git =
        dir.join(".git").exists() || dir.join("objects").is_dir() && dir.join("HEAD").is_file();
    if has_git {
        let repo = Repo::open(&dir)?;
        let base_rev = opts.base.clone().unwrap_or_else(|| "HEAD".to_string());
        let base = repo
            .resolve_commit(&base_rev)?
            .ok_or_else(|| Error::BaseNotFound {
                base: base_rev.clone(),
                repo: dir.clone(),
            })?;
        if let Some(sig) = signature.as_mut() {
            refine_signature(&repo, &base, sig)?;
        }
        check_git(
            &repo,
            &base,
            signature.as_ref(),
            &dir,
            &mut report,
            &mut leaks,
        )?;
        report.base = Some(base.clone());
        for l in &mut leaks {
            if let Some(rest) = l.location.strip_prefix(&format!("{}/", dir.display())) {
                l.location = rest.to_string();
            }
        }
        git_ctx = Some((repo, base));
    }
    if let Some(sig) = &signature {
        report.fix_lines = sig.lines.len();
    }
    if !opts.git_only {
        let scan_opts = ScanOptions {
            signature: signature.as_ref().filter(|s| !s.is_empty()),
            package: opts.package.as_deref(),
            base_version: opts.base_version.as_deref(),
            limits: ScanLimits::default(),
            skip_root_git: true,
        };
        let mut roots = vec![dir.clone()];
        roots.extend(opts.scan_dirs.iter().cloned());
        for root in roots {
            let res = scan_tree(&root, &scan_opts);
            report.files_scanned += res.files;
            let prefix = if root == dir {
                String::new()
            } else {
                format!("{}/", root.display())
            };
            for mut l in res.leaks {
                l.location = format!("{prefix}{}", l.location);
                leaks.push(l);
            }
            if res.truncated {
                leaks.push(Leak::new(
                    LeakKind::Cache,
                    Severity::Warning,
                    root.display().to_string(),
                    "scan stopped at its file-count or byte bound; the rest was not checked".into(),
                ));
            }
        }
    }
    if let Some((repo, base)) = &git_ctx {
        unchanged_from_base(repo, base, &dir, &mut leaks)?;
    }
    report.clean = !leaks.iter().any(|l| l.severity == Severity::Leak);
    report.leaks = leaks;
    report.elapsed_ms = start.elapsed().as_millis() as u64;
    Ok(report)
}

/// A work-tree file matching the fix that is byte-identical to the base's
/// version is the base's own code (duplicated elsewhere), not a leak.
fn unchanged_from_base(repo: &Repo, base: &str, dir: &Path, leaks: &mut [Leak]) -> Result<()> {
    let idx: Vec<usize> = leaks
        .iter()
        .enumerate()
        .filter(|(_, l)| l.kind == LeakKind::FixedCodeFile && l.detail.contains("in the workspace"))
        .map(|(i, _)| i)
        .collect();
    let names: Vec<String> = idx
        .iter()
        .map(|&i| format!("{base}:{}", leaks[i].location))
        .collect();
    let mut same: HashSet<String> = HashSet::new();
    repo.cat_file_batch(names, MAX_BLOB, |name, kind, content| {
        let rel = name.split_once(':').map(|x| x.1).unwrap_or("");
        if kind == "blob" && std::fs::read(dir.join(rel)).is_ok_and(|disk| disk == content) {
            same.insert(rel.to_string());
        }
    })?;
    for i in idx {
        if same.contains(&leaks[i].location) {
            leaks[i].severity = Severity::Warning;
            leaks[i]
                .detail
                .push_str(" (unchanged from the base: the base already holds these lines)");
        }
    }
    Ok(())
}

/// Drop signature lines already present in the base version of the touched files.
pub(crate) fn refine_signature(repo: &Repo, base: &str, sig: &mut FixSignature) -> Result<()> {
    let names: Vec<String> = sig
        .paths
        .iter()
        .filter(|p| !p.is_empty() && !p.contains('\n'))
        .map(|p| format!("{base}:{p}"))
        .collect();
    let mut text = Vec::new();
    repo.cat_file_batch(names, 64 << 20, |_, kind, content| {
        if kind == "blob" {
            text.extend_from_slice(content);
            text.push(b'\n');
        }
    })?;
    sig.remove_present_in(&text);
    Ok(())
}

fn loose_or_packed_ref(common: &Path, git_dir: &Path, name: &str) -> String {
    for d in [git_dir, common] {
        let p = d.join(name);
        if p.is_file() {
            return p.display().to_string();
        }
    }
    format!("{} ({name})", common.join("packed-refs").display())
}

struct Ancestry {
    /// Every object reachable from the base.
    reachable: HashSet<String>,
    /// Ancestor commits and their committer dates.
    commits: HashMap<String, i64>,
}

fn walk_base(repo: &Repo, base: &str) -> Result<Ancestry> {
    let mut reachable = HashSet::with_capacity(1 << 16);
    let mut commits = HashMap::with_capacity(1 << 14);
    repo.for_each_line(
        &[
            "rev-list",
            "--objects",
            "--no-object-names",
            "--timestamp",
            base,
        ],
        |line| {
            let s = String::from_utf8_lossy(line);
            match s.split_once(' ') {
                Some((ts, oid)) => {
                    commits.insert(oid.to_string(), ts.parse().unwrap_or(0));
                    reachable.insert(oid.to_string());
                }
                None => {
                    reachable.insert(s.into_owned());
                }
            }
        },
    )?;
    Ok(Ancestry { reachable, commits })
}

fn check_git(
    repo: &Repo,
    base: &str,
    signature: Option<&FixSignature>,
    dir: &Path,
    report: &mut CheckReport,
    leaks: &mut Vec<Leak>,
) -> Result<()> {
    let hex_len = repo.hex_len()?;
    let common = repo.common_dir.clone();
    let inv = Inventory::read(&common.join("objects"), hex_len, dir)?;
    let anc = walk_base(repo, base)?;
    let base_date = anc.commits.get(base).copied().unwrap_or(0);
    report.base_date = Some(base_date);

    // Ancestors dated after the base.
    let skewed: Vec<&String> = anc
        .commits
        .iter()
        .filter(|(_, t)| **t > base_date)
        .map(|(c, _)| c)
        .collect();
    if !skewed.is_empty() {
        leaks.push(
            Leak::new(
                LeakKind::DateAnomaly,
                Severity::Warning,
                "history of the base".into(),
                format!("{} ancestor commit(s) have a committer date after the base's; dates alone cannot tell the future here", skewed.len()),
            )
            .with_object(skewed[0]),
        );
    }

    // Allowed objects: reachable ones plus annotated tags peeling to ancestors.
    let mut allowed: HashSet<String> = HashSet::new();
    let mut pointers: Vec<String> = Vec::new(); // foreign commit-ish ids named by refs & co

    let refs = repo.run(&[
        "for-each-ref",
        "--format=%(refname)%00%(objectname)%00%(*objectname)%00%(objecttype)",
    ])?;
    for line in refs.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let s = String::from_utf8_lossy(line);
        let mut f = s.split('\0');
        let (name, oid, peeled, _ty) = (
            f.next().unwrap_or(""),
            f.next().unwrap_or(""),
            f.next().unwrap_or(""),
            f.next().unwrap_or(""),
        );
        let target = if peeled.is_empty() { oid } else { peeled };
        if anc.reachable.contains(target) {
            if !peeled.is_empty() {
                allowed.insert(oid.to_string());
            }
            if name.starts_with("refs/remotes/") {
                leaks.push(Leak::new(
                    LeakKind::Ref,
                    Severity::Warning,
                    loose_or_packed_ref(&common, &repo.git_dir, name),
                    format!("remote-tracking ref {name} (points into the base's history)"),
                ));
            }
            continue;
        }
        let what = ref_kind(name);
        pointers.push(target.to_string());
        leaks.push(
            Leak::new(
                LeakKind::Ref,
                Severity::Leak,
                loose_or_packed_ref(&common, &repo.git_dir, name),
                format!("{what} {name} points outside the base's history"),
            )
            .with_object(target),
        );
    }

    // Special head files and reflogs, in the common dir and each linked worktree.
    let mut gitdirs = vec![common.clone()];
    if repo.git_dir != common {
        gitdirs.push(repo.git_dir.clone());
    }
    if let Ok(rd) = std::fs::read_dir(common.join("worktrees")) {
        let mut wts: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        wts.sort();
        for wt in wts {
            if !gitdirs.contains(&wt) {
                gitdirs.push(wt);
            }
        }
    }
    const HEADS: &[&str] = &[
        "HEAD",
        "ORIG_HEAD",
        "FETCH_HEAD",
        "MERGE_HEAD",
        "CHERRY_PICK_HEAD",
        "REVERT_HEAD",
        "BISECT_HEAD",
        "REBASE_HEAD",
        "AUTO_MERGE",
        "rebase-merge/orig-head",
        "rebase-merge/onto",
        "rebase-apply/orig-head",
        "rebase-apply/onto",
    ];
    for gd in &gitdirs {
        let is_linked = gd.starts_with(common.join("worktrees"));
        for h in HEADS {
            let p = gd.join(h);
            let Ok(text) = read_small(&p) else { continue };
            for id in leading_ids(&text, hex_len) {
                if anc.reachable.contains(&id) || allowed.contains(&id) {
                    continue;
                }
                pointers.push(id.clone());
                let detail = if is_linked && *h == "HEAD" {
                    "linked worktree checked out outside the base's history".to_string()
                } else if *h == "HEAD" {
                    "HEAD is outside the base's history".to_string()
                } else {
                    format!("{h} names a commit outside the base's history")
                };
                leaks.push(
                    Leak::new(
                        LeakKind::SpecialHead,
                        Severity::Leak,
                        p.display().to_string(),
                        detail,
                    )
                    .with_object(&id),
                );
            }
        }
        // Reflogs.
        let logs = gd.join("logs");
        let mut files = Vec::new();
        collect_files(&logs, &mut files, 0);
        for f in files {
            let Ok(text) = read_small(&f) else { continue };
            let mut bad: Vec<String> = Vec::new();
            for line in text.lines() {
                let mut parts = line.split(' ');
                for id in [parts.next(), parts.next()].into_iter().flatten() {
                    if id.len() == hex_len
                        && !id.bytes().all(|b| b == b'0')
                        && !anc.reachable.contains(id)
                        && !allowed.contains(id)
                        && !bad.iter().any(|b| b == id)
                    {
                        bad.push(id.to_string());
                    }
                }
            }
            if !bad.is_empty() {
                pointers.extend(bad.iter().cloned());
                leaks.push(
                    Leak::new(
                        LeakKind::Reflog,
                        Severity::Leak,
                        f.display().to_string(),
                        format!(
                            "reflog names {} commit(s) outside the base's history",
                            bad.len()
                        ),
                    )
                    .with_object(&bad[0]),
                );
            }
        }
    }
    // HEAD of the checked directory.
    if let Some(head) = repo.resolve_commit("HEAD")?
        && head != base
    {
        leaks.push(
            Leak::new(
                LeakKind::HeadNotAtBase,
                if anc.reachable.contains(&head) {
                    Severity::Warning
                } else {
                    Severity::Leak
                },
                repo.git_dir.join("HEAD").display().to_string(),
                format!("HEAD is {head}, not the base {base}"),
            )
            .with_object(&head),
        );
    }

    // Remotes.
    if let Some(out) = repo.try_run(&["config", "--get-regexp", r"^remote\..*\.url$"])? {
        for line in String::from_utf8_lossy(&out).lines().take(100) {
            let (key, url) = line.split_once(' ').unwrap_or((line, ""));
            let name = key
                .strip_prefix("remote.")
                .and_then(|k| k.strip_suffix(".url"))
                .unwrap_or(key);
            let mut url = redact_userinfo(url);
            crate::git::truncate(&mut url, 300);
            leaks.push(Leak::new(
                LeakKind::Remote,
                Severity::Leak,
                format!("{} [remote \"{name}\"]", common.join("config").display()),
                format!("remote {name} -> {url}: the agent could fetch later history"),
            ));
        }
    }
    for alt in &inv.alternates {
        leaks.push(Leak::new(
            LeakKind::Alternates,
            Severity::Leak,
            common.join("objects/info/alternates").display().to_string(),
            format!(
                "borrows objects from {}; later history there is readable",
                alt.display()
            ),
        ));
    }
    for (f, what) in [("info/grafts", "grafts file"), ("shallow", "shallow file")] {
        if common.join(f).is_file() {
            leaks.push(Leak::new(
                LeakKind::HistoryRewrite,
                Severity::Warning,
                common.join(f).display().to_string(),
                format!("{what} changes which commits git considers parents"),
            ));
        }
    }

    // Foreign objects.
    let foreign: Vec<String> = inv
        .objects
        .keys()
        .filter(|o| !anc.reachable.contains(*o) && !allowed.contains(*o))
        .cloned()
        .collect();
    report.objects_total = inv.objects.len();
    report.objects_reachable = anc.reachable.len();
    report.objects_foreign = foreign.len();

    // Types of foreign objects first (cheap), then content only where needed:
    // commits (dates, subjects) and, with a reference fix, blobs.
    let mut sorted = foreign;
    sorted.sort();
    let types = repo.object_types(&sorted)?;
    let group = |exact: &str| -> String {
        // Loose objects are grouped per object directory, packs per pack file.
        if exact.ends_with(".pack") {
            exact.to_string()
        } else {
            Path::new(exact)
                .parent()
                .and_then(Path::parent)
                .map(|p| format!("{} (loose objects)", p.display()))
                .unwrap_or_else(|| exact.to_string())
        }
    };
    let match_blobs = signature.is_some_and(|s| !s.is_empty());
    let mut per_loc: HashMap<String, (usize, usize, usize, usize)> = HashMap::new(); // loc -> (trees, blobs, tags, other)
    let mut need: Vec<String> = Vec::new();
    for (oid, kind) in &types {
        let loc = group(inv.location(oid).unwrap_or("?"));
        match kind.as_str() {
            "commit" => need.push(oid.clone()),
            "blob" => {
                per_loc.entry(loc).or_default().1 += 1;
                if match_blobs {
                    need.push(oid.clone());
                }
            }
            "tree" => per_loc.entry(loc).or_default().0 += 1,
            "tag" => per_loc.entry(loc).or_default().2 += 1,
            _ => per_loc.entry(loc).or_default().3 += 1,
        }
    }
    let mut commits: Vec<(String, i64, String)> = Vec::new();
    let mut fix_blobs: Vec<Leak> = Vec::new();
    repo.cat_file_batch(need, MAX_BLOB, |oid, kind, content| match kind {
        "commit" => {
            let (date, subject) = parse_commit(content);
            commits.push((oid.to_string(), date, subject));
        }
        "blob" => {
            if let Some(sig) = signature
                && let Some(m) = sig.content_matches(content)
            {
                fix_blobs.push(
                    Leak::new(
                        LeakKind::FixedCodeBlob,
                        Severity::Leak,
                        inv.location(oid).unwrap_or("?").to_string(),
                        format!(
                            "blob holds {} of {} distinctive lines of the reference fix",
                            m.len(),
                            sig.lines.len()
                        ),
                    )
                    .with_object(oid)
                    .with_fragments(m),
                );
            }
        }
        _ => {}
    })?;

    // Which foreign commits are reachable from a ref, reflog or head file.
    let commit_ids: HashSet<&str> = commits.iter().map(|c| c.0.as_str()).collect();
    let mut starts: Vec<String> = pointers
        .iter()
        .filter(|p| commit_ids.contains(p.as_str()))
        .cloned()
        .collect();
    starts.sort();
    starts.dedup();
    let mut referenced: HashSet<String> = HashSet::new();
    if !starts.is_empty() {
        let mut input = Vec::new();
        for s in &starts {
            input.extend_from_slice(s.as_bytes());
            input.push(b'\n');
        }
        input.extend_from_slice(format!("^{base}\n").as_bytes());
        let out = repo.run_with_input(&["rev-list", "--stdin"], input)?;
        referenced = String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_string)
            .collect();
    }
    commits.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    report.future_commits = commits.len();
    for (i, (oid, date, subject)) in commits.iter().enumerate() {
        if i >= MAX_LISTED_COMMITS {
            leaks.push(Leak::new(
                LeakKind::FutureCommit,
                Severity::Leak,
                "object store".into(),
                format!(
                    "{} more commit(s) outside the base's history not listed",
                    commits.len() - MAX_LISTED_COMMITS
                ),
            ));
            break;
        }
        let by_date = *date > base_date;
        let reach = if referenced.contains(oid) {
            "reachable from a ref, reflog or head file"
        } else {
            "dangling (no ref names it)"
        };
        let when = if by_date {
            "dated after the base"
        } else {
            "dated at or before the base"
        };
        leaks.push(
            Leak::new(
                LeakKind::FutureCommit,
                Severity::Leak,
                inv.location(oid).unwrap_or("?").to_string(),
                format!("not an ancestor of the base, {when}, {reach}: {subject}"),
            )
            .with_object(oid),
        );
    }
    leaks.extend(fix_blobs);
    let mut locs: Vec<_> = per_loc.into_iter().collect();
    locs.sort();
    for (loc, (trees, blobs, tags, other)) in locs {
        leaks.push(Leak::new(
            LeakKind::ForeignObjects,
            Severity::Leak,
            loc,
            format!("{trees} tree(s), {blobs} blob(s), {tags} tag(s), {other} other object(s) outside the base's history"),
        ));
    }
    Ok(())
}

/// `https://user:token@host/x` -> `https://***@host/x`: reports must not carry credentials.
fn redact_userinfo(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let auth_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

fn ref_kind(name: &str) -> &'static str {
    if name.starts_with("refs/heads/") {
        "branch"
    } else if name.starts_with("refs/tags/") {
        "tag"
    } else if name.starts_with("refs/remotes/") {
        "remote-tracking ref"
    } else if name == "refs/stash" {
        "stash"
    } else if name.starts_with("refs/notes/") {
        "notes ref"
    } else if name.starts_with("refs/replace/") {
        "replace ref"
    } else {
        "ref"
    }
}

fn parse_commit(content: &[u8]) -> (i64, String) {
    let text = String::from_utf8_lossy(content);
    let mut date = 0;
    let mut lines = text.lines();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        if let Some(rest) = line.strip_prefix("committer ") {
            let mut it = rest.rsplitn(3, ' ');
            let _tz = it.next();
            date = it.next().and_then(|t| t.parse().ok()).unwrap_or(0);
        }
    }
    let mut subject: String = lines
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    crate::git::truncate(&mut subject, 120);
    (date, subject)
}

fn leading_ids(text: &str, hex_len: usize) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let id = l.get(..hex_len)?;
            id.bytes()
                .all(|b| b.is_ascii_hexdigit())
                .then(|| id.to_ascii_lowercase())
        })
        .take(10_000)
        .collect()
}

fn read_small(p: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let meta = std::fs::symlink_metadata(p)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a file"));
    }
    let mut s = Vec::new();
    std::fs::File::open(p)?.take(64 << 20).read_to_end(&mut s)?;
    Ok(String::from_utf8_lossy(&s).into_owned())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 16 || out.len() > 100_000 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        match e.file_type() {
            Ok(t) if t.is_dir() => collect_files(&e.path(), out, depth + 1),
            Ok(t) if t.is_file() => out.push(e.path()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_in_remote_urls_are_redacted() {
        assert_eq!(
            super::redact_userinfo("https://u:tok@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(
            super::redact_userinfo("https://github.com/a@b"),
            "https://github.com/a@b"
        );
        assert_eq!(
            super::redact_userinfo("git@github.com:o/r"),
            "git@github.com:o/r"
        );
    }
}
