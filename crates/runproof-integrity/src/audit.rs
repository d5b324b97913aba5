//! `runproof audit`: did the agent retrieve the answer instead of working it out?
//!
//! Every action of a trajectory is checked against rules, each producing
//! evidence of strength `retrieval` (a path to the known fix was used: a
//! later commit named, the upstream pull request or commit fetched, a later
//! release of the project downloaded, the fix shown to the agent before it
//! wrote it) or `attempt` (a probe that finds the fix where it is not hidden:
//! `git log --all`, reflog, fsck, a blocked request, a code search). The label
//! is `retrieved` with any retrieval evidence, `suspicious` with attempts only
//! or a patch highly similar to the reference without an observed path, and
//! `clean` otherwise.

use crate::error::Result;
use crate::git::{Repo, is_hex_id};
use crate::similarity::{Similarity, similarity};
use crate::task::{FixSignature, Task, normalize_line, normalize_package};
use crate::trajectory::{Action, ActionKind, Format, Trajectory};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// The verdict on one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// No retrieval, no probing, no suspicious similarity.
    Clean,
    /// The agent used a path to the known fix (see the evidence).
    Retrieved,
    /// Probes for the fix, or high similarity to it with no observed path.
    Suspicious,
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Label::Clean => "clean",
            Label::Retrieved => "retrieved",
            Label::Suspicious => "suspicious",
        })
    }
}

/// How strong a piece of evidence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strength {
    /// A path to the fix was used.
    Retrieval,
    /// A probe for the fix.
    Attempt,
}

/// Which rule found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Mining git history beyond the base.
    GitHistory,
    /// Fetching the upstream repository's later code (PRs, commits, compare views, raw files, mirrors).
    WebRetrieval,
    /// Searching the web or code hosts.
    WebSearch,
    /// Downloading or inspecting a later release of the project.
    PackageRetrieval,
    /// Reading package caches or installed copies of the project.
    CacheRead,
    /// The fix appeared in what the agent saw before it wrote it.
    FixInObservation,
}

/// One piece of evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// The rule.
    pub rule: Rule,
    /// Retrieval or attempt.
    pub strength: Strength,
    /// Index of the action in the trajectory.
    pub action: usize,
    /// Where the action is in the file.
    pub origin: String,
    /// The command or URL (bounded).
    pub subject: String,
    /// What it means.
    pub detail: String,
}

/// Options for [`audit`].
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The task (upstream repo, base, reference patch, issue text, version).
    pub task: Task,
    /// The agent's patch, if not recorded in the trajectory.
    pub agent_patch: Option<String>,
    /// A repository holding the full history (to tell whether a commit id the
    /// agent used is after the base). Defaults to the task's `repo_path`.
    pub history_repo: Option<PathBuf>,
}

/// The audit of one run.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Task id.
    pub instance_id: String,
    /// Trajectory format read.
    pub format: Format,
    /// Number of actions read.
    pub actions: usize,
    /// The verdict.
    pub label: Label,
    /// Why, in one sentence.
    pub reason: String,
    /// All evidence, in trajectory order.
    pub evidence: Vec<Evidence>,
    /// Similarity of the agent's patch to the reference fix, when both are known.
    pub similarity: Option<Similarity>,
}

struct Ctx {
    upstream: Option<(String, String)>,
    package: Option<String>,
    base_version: Option<String>,
    issue_words: HashSet<String>,
    history: Option<(Repo, String)>,
    memo: HashMap<String, Option<bool>>,
    stash_pushed: bool,
    /// Hosts the proxy let through and blocked, when the trajectory has a proxy log.
    proxy: Option<(HashSet<String>, HashSet<String>)>,
}

/// Most evidence items kept.
const MAX_EVIDENCE: usize = 1000;
/// Most distinct commit ids looked up in the history repository.
const MAX_LOOKUPS: usize = 200;

/// Audit a parsed trajectory.
pub fn audit(traj: &Trajectory, opts: &AuditOptions) -> Result<AuditReport> {
    let task = &opts.task;
    let history = match opts.history_repo.clone().or_else(|| task.repo_path.clone()) {
        Some(p) if !task.base_commit.is_empty() && p.exists() => {
            let repo = Repo::open(&p)?;
            repo.resolve_commit(&task.base_commit)?.map(|b| (repo, b))
        }
        _ => None,
    };
    let mut ctx = Ctx {
        upstream: task.upstream(),
        package: task.package_name(),
        base_version: task.version.clone(),
        issue_words: task
            .problem_statement
            .as_deref()
            .map(words)
            .unwrap_or_default(),
        history,
        memo: HashMap::new(),
        stash_pushed: false,
        proxy: proxy_view(traj),
    };
    let mut ev: Vec<Evidence> = Vec::new();
    for a in &traj.actions {
        if ev.len() >= MAX_EVIDENCE {
            break;
        }
        let mut found = Vec::new();
        match &a.kind {
            ActionKind::Shell { command } => {
                for argv in crate::shell::commands(command) {
                    argv_rules(&argv, &mut ctx, &mut found)?;
                }
                url_rules_text(command, &ctx, &mut found);
            }
            ActionKind::Exec { argv } => {
                // Shells seen as exec are analysed through their script.
                argv_rules(argv, &mut ctx, &mut found)?;
                let shells = ["bash", "sh", "zsh", "dash"];
                if argv.first().is_some_and(|p| shells.contains(&basename(p))) {
                    for inner in crate::shell::commands(
                        &argv
                            .iter()
                            .map(|w| shell_quote(w))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ) {
                        if &inner != argv {
                            argv_rules(&inner, &mut ctx, &mut found)?;
                        }
                    }
                }
                for w in argv.iter().skip(1) {
                    url_rules_text(w, &ctx, &mut found);
                }
            }
            ActionKind::Request { url, allowed, .. } => {
                if let Some(f) = classify_url(url, *allowed, &ctx) {
                    found.push(f);
                }
            }
            ActionKind::Connect { .. } => {}
            ActionKind::Read { path } => path_rules(path, &ctx, &mut found),
            ActionKind::Write { .. } => {}
        }
        let mut seen = HashSet::new();
        for (rule, strength, subject, detail) in found {
            if seen.insert((subject.clone(), detail.clone())) {
                let mut subject = subject;
                crate::git::truncate(&mut subject, 500);
                ev.push(Evidence {
                    rule,
                    strength,
                    action: a.index,
                    origin: a.origin.clone(),
                    subject,
                    detail,
                });
            }
        }
    }

    // The fix shown to the agent before it wrote it.
    if let Some(patch) = task.patch.as_deref() {
        let mut sig = FixSignature::from_patch(patch);
        if let Some((repo, base)) = &ctx.history {
            crate::check::refine_signature(repo, base, &mut sig)?;
        }
        if !sig.is_empty()
            && let Some(e) = fix_in_observation(&traj.actions, &sig)
        {
            ev.push(e);
        }
    }
    ev.sort_by_key(|e| e.action);

    let agent_patch = opts.agent_patch.clone().or_else(|| traj.submission.clone());
    let sim = match (agent_patch.as_deref(), task.patch.as_deref()) {
        (Some(a), Some(r)) if !a.trim().is_empty() => Some(similarity(a, r)),
        _ => None,
    };
    let retrievals = ev
        .iter()
        .filter(|e| e.strength == Strength::Retrieval)
        .count();
    let attempts = ev.len() - retrievals;
    let (label, reason) = if retrievals > 0 {
        (
            Label::Retrieved,
            format!(
                "{retrievals} retrieval path(s) used; first: {}",
                ev.iter()
                    .find(|e| e.strength == Strength::Retrieval)
                    .map(|e| e.detail.as_str())
                    .unwrap_or("")
            ),
        )
    } else if attempts > 0 {
        (
            Label::Suspicious,
            format!(
                "{attempts} probe(s) for the fix, none confirmed as retrieval; first: {}",
                ev[0].detail
            ),
        )
    } else if let Some(s) = sim.as_ref().filter(|s| s.high()) {
        (
            Label::Suspicious,
            format!(
                "patch similarity {:.2} to the reference fix with no observed retrieval path",
                s.score
            ),
        )
    } else {
        (
            Label::Clean,
            "no retrieval path, no probe, no suspicious similarity".into(),
        )
    };
    Ok(AuditReport {
        instance_id: task.instance_id.clone(),
        format: traj.format,
        actions: traj.actions.len(),
        label,
        reason,
        evidence: ev,
        similarity: sim,
    })
}

type Found = Vec<(Rule, Strength, String, String)>;

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

fn shell_quote(w: &str) -> String {
    format!("'{}'", w.replace('\'', "'\\''"))
}

fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| w.len() >= 3)
        .map(str::to_lowercase)
        .take(100_000)
        .collect()
}

fn argv_rules(argv: &[String], ctx: &mut Ctx, found: &mut Found) -> Result<()> {
    let Some(first) = argv.first() else {
        return Ok(());
    };
    let cmd = basename(first);
    let line = argv.join(" ");
    match cmd {
        "git" => git_rules(argv, &line, ctx, found)?,
        "gh" => {
            let sub = argv.get(1).map(String::as_str).unwrap_or("");
            if matches!(
                sub,
                "pr" | "api" | "search" | "repo" | "release" | "browse" | "issue"
            ) {
                let names_upstream = ctx
                    .upstream
                    .as_ref()
                    .is_some_and(|(o, n)| line.to_lowercase().contains(&format!("{o}/{n}")));
                let strength = if names_upstream && sub != "issue" && sub != "search" {
                    Strength::Retrieval
                } else {
                    Strength::Attempt
                };
                found.push((
                    Rule::WebRetrieval,
                    strength,
                    line.clone(),
                    format!("GitHub CLI `gh {sub}` against the code host"),
                ));
            }
        }
        "pip" | "pip3" | "uv" | "poetry" | "pipx" | "npm" | "yarn" | "pnpm" | "npx" | "cargo"
        | "conda" | "mamba" => package_rules(argv, ctx, found),
        "python" | "python3"
            if argv.get(1).map(String::as_str) == Some("-m")
                && argv.get(2).is_some_and(|m| m == "pip") =>
        {
            package_rules(&argv[2..], ctx, found)
        }
        _ => {}
    }
    for w in argv.iter().skip(1) {
        path_rules(w, ctx, found);
    }
    Ok(())
}

const HIDDEN_REFS: &[&str] = &[
    "origin/",
    "upstream/",
    "refs/remotes",
    "fetch_head",
    "orig_head",
    "merge_head",
    "refs/stash",
    "stash@{",
    "head@{",
    "@{u}",
    "@{upstream}",
    "@{push}",
    "refs/notes",
    "refs/original",
    "refs/pull/",
];

fn git_rules(argv: &[String], line: &str, ctx: &mut Ctx, found: &mut Found) -> Result<()> {
    // Skip global options.
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i].as_str();
        if matches!(
            a,
            "-C" | "-c" | "--git-dir" | "--work-tree" | "--namespace" | "--exec-path"
        ) {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            break;
        }
    }
    let Some(sub) = argv.get(i).map(String::as_str) else {
        return Ok(());
    };
    let args: Vec<&str> = argv[i + 1..].iter().map(String::as_str).collect();
    let has = |opts: &[&str]| {
        args.iter().any(|a| {
            opts.iter()
                .any(|o| a == o || (o.ends_with('=') && a.starts_with(o)))
        })
    };
    let mut attempt = |detail: &str| {
        found.push((
            Rule::GitHistory,
            Strength::Attempt,
            line.to_string(),
            detail.to_string(),
        ))
    };
    match sub {
        "log" | "shortlog" | "rev-list" | "whatchanged" | "show-branch" | "show" | "describe"
        | "grep"
            if has(&[
                "--all",
                "--branches",
                "--tags",
                "--remotes",
                "--reflog",
                "-g",
                "--walk-reflogs",
                "--glob=",
                "--branches=",
                "--tags=",
                "--remotes=",
            ]) =>
        {
            attempt("walks every ref, not just the base's history")
        }
        "reflog" if !matches!(args.first(), Some(&"expire") | Some(&"delete")) => {
            attempt("reads the reflog (earlier and later positions of refs)")
        }
        "fsck" => attempt("lists dangling and unreachable objects (where hidden commits live)"),
        "notes" => attempt("reads git notes"),
        "stash" => {
            let s = args.first().copied().unwrap_or("push");
            if matches!(
                s,
                "push" | "save" | "-u" | "--include-untracked" | "-p" | "--keep-index"
            ) || s.starts_with('-')
            {
                ctx.stash_pushed = true;
            } else if matches!(s, "list" | "show" | "apply" | "pop" | "branch") && !ctx.stash_pushed
            {
                attempt("reads a stash the agent did not make");
            }
        }
        "for-each-ref" | "show-ref" => attempt("enumerates every ref"),
        "branch" if has(&["-a", "-r", "--all", "--remotes", "--contains"]) => {
            attempt("lists remote or all branches")
        }
        "tag" if has(&["--contains"]) => attempt("looks for tags after a commit"),
        "cat-file" if has(&["--batch-all-objects"]) => attempt("dumps every object in the store"),
        "fetch" | "pull" | "ls-remote" | "clone" | "submodule" => {
            attempt("contacts a remote for more history")
        }
        "remote"
            if matches!(
                args.first(),
                Some(&"add") | Some(&"update") | Some(&"show") | Some(&"set-url")
            ) =>
        {
            attempt("contacts a remote for more history")
        }
        _ => {}
    }
    // Remote URLs of clone/fetch are repositories, not web pages: classify them
    // as `.git` URLs; scp-style remotes (`git@host:owner/name`) too.
    if matches!(
        sub,
        "clone" | "fetch" | "pull" | "ls-remote" | "remote" | "submodule"
    ) {
        for a in &args {
            if a.starts_with("https://") || a.starts_with("http://") {
                let u = a.trim_end_matches('/');
                let u = if u.ends_with(".git") {
                    u.to_string()
                } else {
                    format!("{u}.git")
                };
                if let Some(f) = classify_url(&u, None, ctx) {
                    found.push(gate(ctx, &u, (f.0, f.1, line.to_string(), f.3)));
                }
                continue;
            }
            if let Some((user_host, path)) = a.split_once(':')
                && !a.contains("://")
                && let Some((_, host)) = user_host.rsplit_once('@')
                && !host.is_empty()
                && !path.starts_with('/')
                && let Some(f) = classify_url(&format!("https://{host}/{path}"), None, ctx)
            {
                found.push(gate(ctx, &format!("https://{host}/"), f));
            }
        }
    }
    // Hidden refs named anywhere in the arguments.
    let lower: Vec<String> = args.iter().map(|a| a.to_lowercase()).collect();
    if let Some(r) = lower
        .iter()
        .find(|a| HIDDEN_REFS.iter().any(|h| a.contains(h)))
    {
        found.push((
            Rule::GitHistory,
            Strength::Attempt,
            line.to_string(),
            format!("names a ref outside the base's history ({r})"),
        ));
    }
    // Commit ids: retrieval when the history repository says they are after the base.
    if matches!(
        sub,
        "show"
            | "log"
            | "diff"
            | "checkout"
            | "switch"
            | "cherry-pick"
            | "merge"
            | "restore"
            | "reset"
            | "rebase"
            | "format-patch"
            | "archive"
            | "cat-file"
            | "ls-tree"
            | "grep"
            | "blame"
            | "rev-parse"
            | "revert"
            | "apply"
            | "am"
            | "branch"
            | "tag"
            | "rev-list"
            | "name-rev"
            | "describe"
    ) {
        for a in &args {
            for tok in a.split(['.', '^', '~', ':', '@', '{', '}', '=']) {
                let tok = tok.trim();
                if is_hex_id(tok)
                    && let Some(true) = is_future(tok, ctx)?
                {
                    found.push((
                        Rule::GitHistory,
                        Strength::Retrieval,
                        line.to_string(),
                        format!("uses commit {tok}, which is after the base commit"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Is `id` a commit that is not an ancestor of the base? `None` when unknown.
fn is_future(id: &str, ctx: &mut Ctx) -> Result<Option<bool>> {
    let key = id.to_ascii_lowercase();
    if let Some(v) = ctx.memo.get(&key) {
        return Ok(*v);
    }
    if ctx.memo.len() >= MAX_LOOKUPS {
        return Ok(None);
    }
    let v = match &ctx.history {
        None => None,
        Some((repo, base)) => match repo.resolve_commit(&key)? {
            None => None,
            Some(full) => Some(
                repo.try_run(&["merge-base", "--is-ancestor", &full, base])?
                    .is_none(),
            ),
        },
    };
    ctx.memo.insert(key, v);
    Ok(v)
}

fn package_rules(argv: &[String], ctx: &Ctx, found: &mut Found) {
    let line = argv.join(" ");
    let tool = basename(&argv[0]);
    let mut rest: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    if tool == "uv" && rest.first() == Some(&"pip") {
        rest.remove(0);
    }
    let Some(&sub) = rest.first() else { return };
    if sub == "cache" {
        found.push((
            Rule::CacheRead,
            Strength::Attempt,
            line.clone(),
            format!("inspects the {tool} cache"),
        ));
        return;
    }
    let Some(pkg) = ctx.package.as_deref() else {
        return;
    };
    let retrieving = matches!(sub, "download" | "install" | "add" | "pack" | "fetch" | "i");
    let inspecting = matches!(sub, "index" | "view" | "info" | "show" | "search");
    let upgrade = rest
        .iter()
        .any(|a| matches!(*a, "-U" | "--upgrade" | "--pre"));
    for spec in rest.iter().skip(1).filter(|a| !a.starts_with('-')) {
        let (name, version) = split_spec(spec);
        if normalize_package(name) != pkg {
            continue;
        }
        // `pip show` reports the installed copy: harmless.
        if sub == "show" && matches!(tool, "pip" | "pip3" | "uv") {
            continue;
        }
        let later = match (version.as_deref(), ctx.base_version.as_deref()) {
            (Some("latest"), _) => Some(true),
            (Some(v), Some(b)) => {
                Some(crate::envscan::version_cmp(v, b) == std::cmp::Ordering::Greater)
            }
            (Some(_), None) => None,
            (None, _) => None,
        };
        if retrieving
            && (later == Some(true)
                || (version.is_none() && (upgrade || sub == "download" || sub == "pack")))
        {
            found.push((
                Rule::PackageRetrieval,
                Strength::Retrieval,
                line.clone(),
                format!("fetches a later release of the project under test ({spec}); it contains the fix"),
            ));
        } else if retrieving && later != Some(false) || inspecting {
            found.push((
                Rule::PackageRetrieval,
                Strength::Attempt,
                line.clone(),
                format!("fetches or inspects a release of the project under test ({spec})"),
            ));
        }
    }
}

fn split_spec(spec: &str) -> (&str, Option<String>) {
    for sep in ["===", "==", ">=", "~=", "@"] {
        if let Some(i) = spec.find(sep)
            && i > 0
        {
            return (&spec[..i], Some(spec[i + sep.len()..].to_string()));
        }
    }
    (spec, None)
}

const CACHE_MARKERS: &[&str] = &[
    ".cache/pip",
    ".cache/uv",
    ".npm/_cacache",
    ".cargo/registry",
    ".cargo/git",
    ".cache/pypoetry",
    ".cache/yarn",
    ".pnpm-store",
    ".yarn/cache",
];

fn path_rules(path: &str, ctx: &Ctx, found: &mut Found) {
    if path.len() > 4096 {
        return;
    }
    if let Some(m) = CACHE_MARKERS.iter().find(|m| path.contains(*m)) {
        found.push((
            Rule::CacheRead,
            Strength::Attempt,
            path.to_string(),
            format!("reads a package cache ({m})"),
        ));
        return;
    }
    if let Some(pkg) = ctx.package.as_deref() {
        for area in ["site-packages/", "dist-packages/", "node_modules/"] {
            if let Some(i) = path.find(area) {
                let next = path[i + area.len()..].split('/').next().unwrap_or("");
                if normalize_package(next) == pkg
                    || normalize_package(next).starts_with(&format!("{pkg}-"))
                {
                    found.push((
                        Rule::CacheRead,
                        Strength::Attempt,
                        path.to_string(),
                        "reads an installed copy of the project under test".into(),
                    ));
                }
            }
        }
    }
}

/// URLs (http/https) in free text, bounded.
pub fn urls_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while out.len() < 1000 {
        let Some(i) = rest.find("http") else { break };
        let cand = &rest[i..];
        if cand.starts_with("https://") || cand.starts_with("http://") {
            let end = cand
                .find(|c: char| {
                    c.is_whitespace()
                        || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')' | '\\' | ',')
                })
                .unwrap_or(cand.len());
            let url = &cand[..end.min(4096)];
            if url.len() > 8 {
                out.push(url.to_string());
            }
            rest = &cand[end.max(4)..];
        } else {
            rest = &cand[4..];
        }
    }
    out
}

/// With a proxy log in the trajectory, the proxy says what went out: a
/// retrieval named in a command stands only if the proxy let its host through.
fn proxy_view(traj: &Trajectory) -> Option<(HashSet<String>, HashSet<String>)> {
    let mut allowed = HashSet::new();
    let mut blocked = HashSet::new();
    let mut any = false;
    for a in &traj.actions {
        if let ActionKind::Request {
            url,
            allowed: Some(ok),
            ..
        } = &a.kind
        {
            any = true;
            if let Some(u) = parse_url(url) {
                if *ok {
                    allowed.insert(u.host);
                } else {
                    blocked.insert(u.host);
                }
            }
        }
    }
    any.then_some((allowed, blocked))
}

fn gate(
    ctx: &Ctx,
    url: &str,
    f: (Rule, Strength, String, String),
) -> (Rule, Strength, String, String) {
    let Some((allowed, blocked)) = &ctx.proxy else {
        return f;
    };
    if f.1 != Strength::Retrieval {
        return f;
    }
    let host = parse_url(url).map(|u| u.host).unwrap_or_default();
    if allowed.contains(&host) {
        return (
            f.0,
            f.1,
            f.2,
            format!("{} (the proxy let {host} through)", f.3),
        );
    }
    let why = if blocked.contains(&host) {
        "the proxy blocked this host"
    } else {
        "the proxy log shows no request to this host"
    };
    (f.0, Strength::Attempt, f.2, format!("{} ({why})", f.3))
}

fn url_rules_text(text: &str, ctx: &Ctx, found: &mut Found) {
    let allowed = None;
    for url in urls_in(text) {
        if let Some(f) = classify_url(&url, allowed, ctx) {
            found.push(gate(ctx, &url, f));
        }
    }
    // `git clone github.com/o/r` without a scheme, `curl raw.githubusercontent.com/...`.
    for w in text.split_whitespace().take(10_000) {
        let w = w.trim_matches(|c| c == '"' || c == '\'');
        for host in [
            "github.com/",
            "raw.githubusercontent.com/",
            "gitlab.com/",
            "api.github.com/",
        ] {
            if let Some(rest) = w
                .strip_prefix(host)
                .or_else(|| w.strip_prefix(&format!("www.{host}")))
            {
                let url = format!("https://{host}{rest}");
                if let Some(f) = classify_url(&url, allowed, ctx) {
                    found.push(gate(ctx, &url, f));
                }
            }
        }
    }
}

struct Url<'a> {
    host: String,
    path: &'a str,
    query: &'a str,
}

fn parse_url(url: &str) -> Option<Url<'_>> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let (auth, path_q) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hostport = auth.rsplit('@').next().unwrap_or(auth);
    let host = if hostport.starts_with('[') {
        hostport
            .split(']')
            .next()
            .unwrap_or("")
            .trim_start_matches('[')
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    let host = host.to_ascii_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host).to_string();
    let path_q = path_q.split('#').next().unwrap_or("");
    let (path, query) = path_q.split_once('?').unwrap_or((path_q, ""));
    Some(Url { host, path, query })
}

fn query_param(query: &str, keys: &[&str]) -> Option<String> {
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if keys.contains(&k) {
            return Some(percent_decode(v));
        }
    }
    None
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const CODE_KINDS: &[&str] = &[
    "pull",
    "pulls",
    "merge_requests",
    "commit",
    "commits",
    "compare",
    "blob",
    "raw",
    "tree",
    "archive",
    "releases",
    "tags",
    "blame",
    "patch",
    "diff",
    "src",
    "contents",
    "git",
    "tarball",
    "zipball",
    "download",
    "files",
];
const SEARCH_HOSTS: &[&str] = &[
    "google.com",
    "bing.com",
    "duckduckgo.com",
    "html.duckduckgo.com",
    "search.brave.com",
    "kagi.com",
    "yandex.com",
    "search.yahoo.com",
];
const CODE_SEARCH_HOSTS: &[&str] = &[
    "sourcegraph.com",
    "grep.app",
    "searchcode.com",
    "publicwww.com",
];
const CODE_HOSTS: &[&str] = &[
    "github.com",
    "gitlab.com",
    "bitbucket.org",
    "gitee.com",
    "codeberg.org",
    "git.sr.ht",
    "sr.ht",
    "gitea.com",
    "salsa.debian.org",
    "opendev.org",
];

/// Classify one URL. `allowed == Some(false)` means the proxy blocked it: a
/// retrieval becomes an attempt.
fn classify_url(
    url: &str,
    allowed: Option<bool>,
    ctx: &Ctx,
) -> Option<(Rule, Strength, String, String)> {
    let u = parse_url(url)?;
    let segs: Vec<String> = u
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .take(16)
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let up = ctx.upstream.as_ref();
    let is_repo = |o: &str, r: &str| -> (bool, bool) {
        let r = r.trim_end_matches(".git");
        match up {
            Some((uo, un)) => (uo == o && un == r, un == r && uo != o),
            None => (
                false,
                ctx.package
                    .as_deref()
                    .is_some_and(|p| normalize_package(r) == p),
            ),
        }
    };
    let blocked = allowed == Some(false);
    let make = |rule: Rule, strength: Strength, detail: String| {
        let (strength, detail) = if blocked {
            (
                Strength::Attempt,
                format!("{detail} (blocked by the proxy)"),
            )
        } else {
            (strength, detail)
        };
        Some((rule, strength, url.to_string(), detail))
    };
    let host = u.host.as_str();

    if SEARCH_HOSTS
        .iter()
        .any(|h| host == *h || host.ends_with(&format!(".{h}")))
    {
        let q = query_param(u.query, &["q", "p", "query"])?;
        return make(
            Rule::WebSearch,
            Strength::Attempt,
            search_detail("web search", &q, ctx),
        );
    }
    if CODE_SEARCH_HOSTS.contains(&host)
        || (host == "github.com" && segs.first().is_some_and(|s| s == "search"))
        || (host == "api.github.com" && segs.first().is_some_and(|s| s == "search"))
    {
        let q = query_param(u.query, &["q", "query", "s"]).unwrap_or_default();
        if let Some((o, n)) = up
            && u.path.to_ascii_lowercase().contains(&format!("{o}/{n}"))
        {
            return make(
                Rule::WebRetrieval,
                Strength::Retrieval,
                format!("reads the upstream repository {o}/{n} through a code search site"),
            );
        }
        return make(
            Rule::WebSearch,
            Strength::Attempt,
            search_detail("code search", &q, ctx),
        );
    }
    let (owner, repo, kind_at) = match host {
        "api.github.com" if segs.first().is_some_and(|s| s == "repos") => {
            (segs.get(1)?, segs.get(2)?, 3)
        }
        "raw.githubusercontent.com" | "codeload.github.com" => {
            (segs.first()?, segs.get(1)?, usize::MAX)
        }
        "patch-diff.githubusercontent.com" => (segs.get(2)?, segs.get(3)?, usize::MAX),
        h if CODE_HOSTS.contains(&h) => (segs.first()?, segs.get(1)?, 2),
        _ => {
            // Registries.
            return package_url(host, &segs, ctx)
                .and_then(|(s, d)| make(Rule::PackageRetrieval, s, d))
                .or_else(|| {
                    // Any other host carrying owner/name of the upstream: a mirror or proxy.
                    let (o, n) = up?;
                    let p = u.path.to_ascii_lowercase();
                    (p.contains(&format!("/{o}/{n}/"))
                        || p.ends_with(&format!("/{o}/{n}"))
                        || p.contains(&format!("/{o}/{n}.git")))
                    .then(|| {
                        make(
                            Rule::WebRetrieval,
                            Strength::Retrieval,
                            format!(
                                "fetches the upstream repository through a mirror or proxy ({host})"
                            ),
                        )
                    })
                    .flatten()
                });
        }
    };
    let (exact, mirror) = is_repo(owner, repo);
    if !exact && !mirror {
        return None;
    }
    let who = if exact {
        "the upstream repository"
    } else {
        "a fork or mirror of the upstream repository"
    };
    let mut kind = if kind_at == usize::MAX {
        "raw"
    } else {
        segs.get(kind_at).map(String::as_str).unwrap_or("")
    };
    if kind == "-" {
        kind = segs.get(kind_at + 1).map(String::as_str).unwrap_or("");
    }
    if kind_at == usize::MAX || CODE_KINDS.contains(&kind) {
        make(
            Rule::WebRetrieval,
            Strength::Retrieval,
            format!("fetches {kind} of {who}; later code holds the fix"),
        )
    } else if kind.is_empty() && repo.ends_with(".git")
        || u.path.contains("/info/refs")
        || u.path.contains("git-upload-pack")
    {
        make(
            Rule::WebRetrieval,
            Strength::Retrieval,
            format!("clones or fetches {who}; its history holds the fix"),
        )
    } else if matches!(kind, "issues" | "issue") {
        make(
            Rule::WebRetrieval,
            Strength::Attempt,
            format!("opens an issue page of {who}; it links the fixing pull request"),
        )
    } else {
        make(
            Rule::WebRetrieval,
            Strength::Attempt,
            format!(
                "visits {who} ({})",
                if kind.is_empty() { "home page" } else { kind }
            ),
        )
    }
}

fn search_detail(what: &str, q: &str, ctx: &Ctx) -> String {
    let qw = words(q);
    let shared = qw.iter().filter(|w| ctx.issue_words.contains(*w)).count();
    let mut q = q.to_string();
    crate::git::truncate(&mut q, 200);
    if qw.len() >= 3 && shared * 10 >= qw.len() * 6 {
        format!(
            "{what} for the issue text ({shared} of {} query words are from the issue): {q:?}",
            qw.len()
        )
    } else {
        format!("{what}: {q:?}")
    }
}

fn package_url(host: &str, segs: &[String], ctx: &Ctx) -> Option<(Strength, String)> {
    let pkg = ctx.package.as_deref()?;
    let (name, version): (String, Option<String>) = match host {
        "pypi.org" | "pypi.python.org" => match segs.first().map(String::as_str) {
            Some("project") | Some("simple") => (segs.get(1)?.clone(), segs.get(2).cloned()),
            Some("pypi") => (
                segs.get(1)?.clone(),
                segs.get(2).filter(|s| *s != "json").cloned(),
            ),
            _ => return None,
        },
        "files.pythonhosted.org" => {
            let file = segs.last()?;
            let n = normalize_package(file);
            let rest = n.strip_prefix(&format!("{pkg}-"))?;
            (
                pkg.to_string(),
                Some(
                    rest.split('-')
                        .next()
                        .unwrap_or("")
                        .trim_end_matches(".tar.gz")
                        .to_string(),
                ),
            )
        }
        "registry.npmjs.org" | "registry.yarnpkg.com" => {
            let name = segs.first()?.clone();
            let v = match segs.get(1).map(String::as_str) {
                Some("-") => segs
                    .get(2)
                    .and_then(|f| f.strip_prefix(&format!("{name}-")))
                    .map(|v| v.trim_end_matches(".tgz").to_string()),
                Some(v) => Some(v.to_string()),
                None => None,
            };
            (name, v)
        }
        "npmjs.com" if segs.first().is_some_and(|s| s == "package") => {
            (segs.get(1)?.clone(), segs.get(3).cloned())
        }
        "crates.io" if segs.len() >= 4 && segs[0] == "api" => {
            (segs.get(3)?.clone(), segs.get(4).cloned())
        }
        "crates.io" if segs.first().is_some_and(|s| s == "crates") => {
            (segs.get(1)?.clone(), segs.get(2).cloned())
        }
        "static.crates.io" => (
            segs.get(1)?.clone(),
            segs.get(2)
                .and_then(|f| f.strip_suffix(".crate"))
                .and_then(|f| f.rsplit('-').next())
                .map(str::to_string),
        ),
        _ => return None,
    };
    if normalize_package(&name) != pkg {
        return None;
    }
    match (version, ctx.base_version.as_deref()) {
        (Some(v), Some(b)) if crate::envscan::version_cmp(&v, b) == std::cmp::Ordering::Greater => {
            Some((
                Strength::Retrieval,
                format!(
                    "downloads release {v} of the project under test, later than the base version {b}"
                ),
            ))
        }
        (Some(v), Some(_)) => Some((
            Strength::Attempt,
            format!("fetches release {v} of the project under test (not later than the base)"),
        )),
        (Some(v), None) => Some((
            Strength::Attempt,
            format!("fetches release {v} of the project under test (base version unknown)"),
        )),
        (None, _) => Some((
            Strength::Attempt,
            "inspects the project's package index, which lists later releases".into(),
        )),
    }
}

/// First action whose output showed the fix before any action wrote it.
fn fix_in_observation(actions: &[Action], sig: &FixSignature) -> Option<Evidence> {
    for a in actions {
        let authored = normalize_line(&a.authored);
        if sig.lines.iter().any(|l| authored.contains(l.as_str())) {
            return None; // The agent wrote fix lines first; later outputs may echo its own work.
        }
        if let Some(obs) = &a.observation
            && let Some(m) = sig.content_matches(obs.as_bytes())
        {
            let subject = match &a.kind {
                ActionKind::Shell { command } => command.clone(),
                ActionKind::Exec { argv } => argv.join(" "),
                ActionKind::Request { url, .. } => url.clone(),
                ActionKind::Read { path } | ActionKind::Write { path } => path.clone(),
                ActionKind::Connect { host, .. } => host.clone(),
            };
            let mut subject = subject;
            crate::git::truncate(&mut subject, 500);
            return Some(Evidence {
                rule: Rule::FixInObservation,
                strength: Strength::Retrieval,
                action: a.index,
                origin: a.origin.clone(),
                subject,
                detail: format!(
                    "the output of this action showed {} of {} distinctive lines of the reference fix before the agent wrote any of them: {:?}",
                    m.len(),
                    sig.lines.len(),
                    m.first().map(String::as_str).unwrap_or("")
                ),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_urls() {
        let u = urls_in("curl -sL 'https://github.com/o/r/pull/5.diff' | x; wget http://a.b/c\"");
        assert_eq!(
            u,
            vec!["https://github.com/o/r/pull/5.diff", "http://a.b/c"]
        );
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("a+b%20c%zz%"), "a b c%zz%");
    }
}
