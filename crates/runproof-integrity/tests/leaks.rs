//! Future history hidden every way git allows: each hiding place must be
//! reported by `check` with its location, and gone after `prepare`.

mod common;

use common::*;
use runproof_integrity::check::{CheckOptions, CheckReport, LeakKind, Severity, check};
use runproof_integrity::prepare::{PrepareOptions, prepare};
use std::path::Path;

fn run_check(dir: &Path, base: &str) -> CheckReport {
    check(&CheckOptions {
        dir: dir.to_path_buf(),
        base: Some(base.to_string()),
        reference_patch: Some(FIX_PATCH.to_string()),
        ..Default::default()
    })
    .expect("check runs")
}

fn assert_found(r: &CheckReport, kind: LeakKind, location_part: &str) {
    assert!(
        r.leaks.iter().any(|l| l.kind == kind
            && l.severity == Severity::Leak
            && l.location.contains(location_part)),
        "expected a {kind:?} leak at *{location_part}*, got:\n{:#?}",
        r.leaks
    );
    assert!(!r.clean);
}

/// Prepare from the leaky repository and prove the result holds nothing after the base.
fn assert_prepared_clean(f: &Fixture) {
    let before = snapshot(&f.repo);
    let out = f.dir.path().join("prepared");
    let mut opts = PrepareOptions::new(&f.repo, &f.base, &out);
    opts.reference_patch = Some(FIX_PATCH.to_string());
    let rep = prepare(&opts).expect("prepare runs");
    assert_eq!(
        snapshot(&f.repo),
        before,
        "prepare modified the source repository"
    );
    assert!(
        rep.check.clean,
        "prepared workspace still leaks: {:#?}",
        rep.check.leaks
    );
    assert_eq!(rep.head, f.base);
    assert_eq!(
        rep.tags_kept,
        vec!["refs/tags/v0.1"],
        "the tag on an ancestor is kept"
    );

    // Everything git can show is the base's history.
    let all = git(&out, &["log", "--all", "--reflog", "--format=%H"]);
    assert_eq!(
        all.lines().collect::<Vec<_>>(),
        vec![f.base.as_str(), f.first.as_str()]
    );
    let fsck = git(
        &out,
        &["fsck", "--lost-found", "--unreachable", "--no-progress"],
    );
    assert_eq!(fsck, "", "fsck finds unreachable objects");
    assert_eq!(git(&out, &["remote"]), "");
    assert_eq!(git(&out, &["stash", "list"]), "");
    assert_eq!(
        git(&out, &["for-each-ref", "--format=%(refname)"]),
        "refs/heads/main\nrefs/tags/v0.1"
    );
    for gone in [
        "logs",
        "packed-refs",
        "FETCH_HEAD",
        "ORIG_HEAD",
        "worktrees",
        "objects/info/alternates",
        "hooks",
    ] {
        assert!(
            !out.join(".git").join(gone).exists(),
            ".git/{gone} exists after prepare"
        );
    }
    let missing = std::process::Command::new("git")
        .current_dir(&out)
        .args(["cat-file", "-e", &f.future])
        .status()
        .unwrap();
    assert!(!missing.success(), "the future commit is still readable");
    // Every object is reachable from the base: count them.
    let reachable = git(&out, &["rev-list", "--objects", "--all"])
        .lines()
        .count();
    assert_eq!(rep.objects, reachable);
    assert_eq!(std::fs::read_to_string(out.join("m.py")).unwrap(), BASE_PY);
    assert_eq!(git(&out, &["status", "--porcelain"]), "");
}

#[test]
fn clean_repository_has_no_leaks() {
    let f = fixture();
    // Remove the loose future objects: a truly clean repository.
    git(&f.repo, &["prune", "--expire=now"]);
    let r = run_check(&f.repo, &f.base);
    assert!(r.clean, "{:#?}", r.leaks);
    assert_eq!(r.objects_foreign, 0);
    assert!(
        r.objects_total > 0 && r.objects_total == r.objects_reachable + 1,
        "the annotated tag is the one extra object"
    );
    assert_eq!(r.fix_lines, 4);
}

#[test]
fn dangling_loose_commit_and_fixed_blob() {
    let f = fixture();
    let r = run_check(&f.repo, &f.base);
    assert_found(
        &r,
        LeakKind::FutureCommit,
        &format!("objects/{}", &f.future[..2]),
    );
    let c = r
        .leaks
        .iter()
        .find(|l| l.object.as_deref() == Some(f.future.as_str()))
        .unwrap();
    assert!(
        c.detail.contains("dated after the base") && c.detail.contains("dangling"),
        "{}",
        c.detail
    );
    assert_found(&r, LeakKind::FixedCodeBlob, "objects/");
    let blob = r
        .leaks
        .iter()
        .find(|l| l.kind == LeakKind::FixedCodeBlob)
        .unwrap();
    assert!(
        blob.fragments
            .iter()
            .any(|l| l == "clamped_width = max(w, 0)")
    );
    assert_prepared_clean(&f);
}

#[test]
fn branch() {
    let f = fixture();
    git(&f.repo, &["update-ref", "refs/heads/future", &f.future]);
    let r = run_check(&f.repo, &f.base);
    assert_found(&r, LeakKind::Ref, "refs/heads/future");
    assert!(
        r.leaks
            .iter()
            .any(|l| l.kind == LeakKind::FutureCommit && l.detail.contains("reachable from a ref"))
    );
    assert_prepared_clean(&f);
}

#[test]
fn tags_lightweight_and_annotated() {
    let f = fixture();
    git(&f.repo, &["tag", "v2-light", &f.future]);
    git_at(
        &f.repo,
        &["tag", "-a", "v2.0", "-m", "release 2", &f.future],
        "2021-07-01T00:00:00Z",
    );
    let r = run_check(&f.repo, &f.base);
    assert_found(&r, LeakKind::Ref, "refs/tags/v2-light");
    assert_found(&r, LeakKind::Ref, "refs/tags/v2.0");
    assert_prepared_clean(&f);
}

#[test]
fn remote_tracking_ref_and_remote() {
    let f = fixture();
    git(
        &f.repo,
        &[
            "remote",
            "add",
            "origin",
            "https://example.invalid/o/area.git",
        ],
    );
    git(
        &f.repo,
        &["update-ref", "refs/remotes/origin/main", &f.future],
    );
    let r = run_check(&f.repo, &f.base);
    assert_found(&r, LeakKind::Ref, "refs/remotes/origin/main");
    assert_found(&r, LeakKind::Remote, "config");
    assert_prepared_clean(&f);
}

#[test]
fn reflog() {
    let f = fixture();
    // main moved to the fix and back: only the reflog remembers.
    git(
        &f.repo,
        &["update-ref", "-m", "oops", "refs/heads/main", &f.future],
    );
    git(
        &f.repo,
        &["update-ref", "-m", "back", "refs/heads/main", &f.base],
    );
    let r = run_check(&f.repo, &f.base);
    assert_found(&r, LeakKind::Reflog, "logs/refs/heads/main");
    assert_prepared_clean(&f);
}

#[test]
fn stash() {
    let f = fixture();
    std::fs::write(f.repo.join("m.py"), FIX_PY).unwrap();
    git(&f.repo, &["stash", "push", "-q", "-m", "wip"]);
    let r = run_check(&f.repo, &f.base);
    assert_found(&r, LeakKind::Ref, "refs/stash");
    assert_found(&r, LeakKind::FixedCodeBlob, "objects/");
    assert_prepared_clean(&f);
}

#[test]
fn notes() {
    let f = fixture();
    git(
        &f.repo,
        &[
            "notes",
            "add",
            "-m",
            "fixed upstream: clamped_width = max(w, 0)",
            &f.base,
        ],
    );
    let r = run_check(&f.repo, &f.base);
    assert_found(&r, LeakKind::Ref, "refs/notes/commits");
    assert_prepared_clean(&f);
}

#[test]
fn packed_refs() {
    let f = fixture();
    git(&f.repo, &["update-ref", "refs/heads/hidden", &f.future]);
    git(&f.repo, &["pack-refs", "--all"]);
    assert!(!f.repo.join(".git/refs/heads/hidden").exists());
    let r = run_check(&f.repo, &f.base);
    assert_found(&r, LeakKind::Ref, "packed-refs (refs/heads/hidden)");
    assert_prepared_clean(&f);
}

#[test]
fn dangling_commit_in_a_pack() {
    let f = fixture();
    git_stdin(
        &f.repo,
        &["pack-objects", "--revs", "-q", ".git/objects/pack/pack"],
        &format!("{}\n", f.future),
    );
    git(&f.repo, &["prune-packed"]);
    assert!(
        !f.repo
            .join(".git/objects")
            .join(&f.future[..2])
            .join(&f.future[2..])
            .exists()
    );
    let r = run_check(&f.repo, &f.base);
    assert_found(&r, LeakKind::FutureCommit, ".pack");
    assert_found(&r, LeakKind::FixedCodeBlob, ".pack");
    assert_prepared_clean(&f);
}

#[test]
fn fetch_head_and_orig_head() {
    let f = fixture();
    std::fs::write(
        f.repo.join(".git/FETCH_HEAD"),
        format!(
            "{}\t\tbranch 'main' of https://example.invalid/o/area\n",
            f.future
        ),
    )
    .unwrap();
    std::fs::write(f.repo.join(".git/ORIG_HEAD"), format!("{}\n", f.future)).unwrap();
    let r = run_check(&f.repo, &f.base);
    assert_found(&r, LeakKind::SpecialHead, "FETCH_HEAD");
    assert_found(&r, LeakKind::SpecialHead, "ORIG_HEAD");
    assert_prepared_clean(&f);
}

#[test]
fn linked_worktree() {
    let f = fixture();
    let wt = f.dir.path().join("wt");
    git(
        &f.repo,
        &[
            "worktree",
            "add",
            "-q",
            "--detach",
            wt.to_str().unwrap(),
            &f.future,
        ],
    );
    let r = run_check(&f.repo, &f.base);
    assert_found(&r, LeakKind::SpecialHead, "worktrees/wt/HEAD");
    // Checking from inside the linked worktree finds its own HEAD too.
    let r2 = run_check(&wt, &f.base);
    assert_found(&r2, LeakKind::HeadNotAtBase, "HEAD");
    assert_prepared_clean(&f);
}

#[test]
fn alternates() {
    let f = fixture();
    // A second repository borrows objects from the first.
    let borrower = f.dir.path().join("borrower");
    std::fs::create_dir(&borrower).unwrap();
    git(&borrower, &["init", "-q"]);
    std::fs::write(
        borrower.join(".git/objects/info/alternates"),
        format!("{}\n", f.repo.join(".git/objects").display()),
    )
    .unwrap();
    git(&borrower, &["update-ref", "refs/heads/main", &f.base]);
    git(&borrower, &["reset", "-q", "--hard", &f.base]);
    let r = run_check(&borrower, &f.base);
    assert_found(&r, LeakKind::Alternates, "alternates");
    assert_found(&r, LeakKind::FutureCommit, "src/.git/objects");
}

#[test]
fn everything_at_once_then_no_history() {
    let f = fixture();
    git(&f.repo, &["update-ref", "refs/heads/future", &f.future]);
    git(&f.repo, &["tag", "v2", &f.future]);
    git(&f.repo, &["notes", "add", "-m", "n", &f.base]);
    std::fs::write(f.repo.join(".git/ORIG_HEAD"), format!("{}\n", f.future)).unwrap();
    git(&f.repo, &["pack-refs", "--all"]);
    let out = f.dir.path().join("nohist");
    let mut opts = PrepareOptions::new(&f.repo, &f.base, &out);
    opts.no_history = true;
    opts.reference_patch = Some(FIX_PATCH.to_string());
    let rep = prepare(&opts).unwrap();
    assert!(rep.check.clean, "{:#?}", rep.check.leaks);
    assert_ne!(rep.head, f.base);
    assert_eq!(
        git(&out, &["rev-list", "--all", "--count"]),
        "1",
        "one root commit"
    );
    assert_eq!(
        git(&out, &["rev-parse", "HEAD^{tree}"]),
        git(&f.repo, &["rev-parse", &format!("{}^{{tree}}", f.base)])
    );
    assert_eq!(
        git(&out, &["for-each-ref", "--format=%(refname)"]),
        "refs/heads/main",
        "no tags with --no-history"
    );
    assert_eq!(
        git(&out, &["log", "-1", "--format=%cI"]),
        "2020-02-01T00:00:00Z",
        "the root commit carries the base's date, not today's"
    );
}

#[test]
fn prepare_refuses_bad_input_and_keeps_what_is_there() {
    let f = fixture();
    let out = f.dir.path().join("busy");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = prepare(&PrepareOptions::new(&f.repo, &f.base, &out))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
    let err = prepare(&PrepareOptions::new(
        &f.repo,
        "0123456789abcdef0123456789abcdef01234567",
        f.dir.path().join("x"),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("base commit") && err.contains("not a commit"),
        "{err}"
    );
    let mut o = PrepareOptions::new(&f.repo, &f.base, f.dir.path().join("y"));
    o.branch = "../../evil".into();
    assert!(prepare(&o).unwrap_err().to_string().contains("branch name"));
    let err = prepare(&PrepareOptions::new(
        &f.repo,
        &f.base,
        f.repo.join("inside"),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("overlaps"), "{err}");
}

#[test]
fn shallow_source_prepares_a_consistent_copy() {
    let f = fixture();
    git(&f.repo, &["update-ref", "refs/heads/future", &f.future]);
    let shallow = f.dir.path().join("shallow");
    let url = format!("file://{}", f.repo.display());
    git(
        f.dir.path(),
        &[
            "clone",
            "-q",
            "--depth=1",
            "--no-single-branch",
            &url,
            shallow.to_str().unwrap(),
        ],
    );
    let out = f.dir.path().join("from-shallow");
    let mut o = PrepareOptions::new(&shallow, &f.base, &out);
    o.no_tags = true;
    let rep = prepare(&o).unwrap();
    assert!(rep.check.clean, "{:#?}", rep.check.leaks);
    assert_eq!(git(&out, &["log", "--all", "--format=%H"]), f.base);
    git(&out, &["fsck", "--no-progress"]);
}

#[test]
fn check_and_prepare_never_run_code_from_a_hostile_repository_nor_write_to_it() {
    let f = fixture();
    let marker = f.dir.path().join("pwned");
    let script = f.dir.path().join("evil.sh");
    std::fs::write(&script, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let s = script.to_str().unwrap();
    git(&f.repo, &["config", "core.fsmonitor", s]);
    git(&f.repo, &["config", "core.pager", s]);
    git(&f.repo, &["config", "diff.external", s]);
    git(&f.repo, &["config", "filter.x.smudge", s]);
    git(&f.repo, &["config", "core.sshCommand", s]);
    std::fs::create_dir_all(f.repo.join(".git/hooks")).unwrap();
    for hook in [
        "post-checkout",
        "reference-transaction",
        "pre-auto-gc",
        "post-index-change",
    ] {
        std::fs::copy(&script, f.repo.join(".git/hooks").join(hook)).unwrap();
    }
    std::fs::write(f.repo.join(".gitattributes"), "* filter=x\n").unwrap();
    git(&f.repo, &["update-ref", "refs/heads/future", &f.future]);
    let _ = std::fs::remove_file(&marker);

    let before = snapshot(&f.repo);
    let r = run_check(&f.repo, &f.base);
    assert!(!r.clean);
    assert_eq!(snapshot(&f.repo), before, "check wrote to the workspace");
    let mut opts = PrepareOptions::new(&f.repo, &f.base, f.dir.path().join("out"));
    opts.copy_untracked = true;
    prepare(&opts).unwrap();
    assert_eq!(snapshot(&f.repo), before, "prepare wrote to the source");
    assert!(
        !marker.exists(),
        "code from the repository's config or hooks ran"
    );
}
