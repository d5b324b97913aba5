//! Caches and installed packages: found by check, stripped by prepare, and
//! the command-line front end's output and exit codes.

mod common;

use common::*;
use runproof_integrity::check::{CheckOptions, LeakKind, Severity, check};
use runproof_integrity::cli::{AuditArgs, OutputFormat, PrepareArgs, run_audit, run_prepare};
use runproof_integrity::prepare::{PrepareOptions, prepare};
use std::path::Path;

/// Untracked environment inside the source work tree: a virtualenv with a
/// later release of the project (holding the fix), an unrelated package, a pip
/// cache, a cargo registry, and node_modules with the project.
fn add_environment(root: &Path) {
    let sp = root.join(".venv/lib/python3.11/site-packages");
    std::fs::create_dir_all(sp.join("area-2.0.dist-info")).unwrap();
    std::fs::write(
        sp.join("area-2.0.dist-info/METADATA"),
        "Metadata-Version: 2.1\nName: area\nVersion: 2.0\n",
    )
    .unwrap();
    std::fs::create_dir_all(sp.join("area")).unwrap();
    std::fs::write(sp.join("area/m.py"), FIX_PY).unwrap();
    std::fs::create_dir_all(sp.join("numpy")).unwrap();
    std::fs::write(sp.join("numpy/__init__.py"), "version = '1.26'\n").unwrap();
    std::fs::create_dir_all(root.join("home/.cache/pip/http/a/b")).unwrap();
    std::fs::write(root.join("home/.cache/pip/http/a/b/blob"), [0u8, 1, 2, 3]).unwrap();
    std::fs::create_dir_all(root.join("home/.cargo/registry/cache/index/area-9.9.9")).unwrap();
    std::fs::write(
        root.join("home/.cargo/registry/cache/index/area-9.9.9/lib.rs"),
        "fn main() {}\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("node_modules/area")).unwrap();
    std::fs::write(
        root.join("node_modules/area/package.json"),
        "{\"name\":\"area\",\"version\":\"0.9.0\"}",
    )
    .unwrap();
    std::fs::write(root.join(".gitignore"), ".venv/\nhome/\nnode_modules/\n").unwrap();
}

#[test]
fn check_reports_caches_installed_project_and_fixed_files() {
    let f = fixture();
    git(&f.repo, &["prune", "--expire=now"]);
    add_environment(&f.repo);
    let r = check(&CheckOptions {
        dir: f.repo.clone(),
        base: Some(f.base.clone()),
        reference_patch: Some(FIX_PATCH.into()),
        package: Some("area".into()),
        base_version: Some("1.0".into()),
        ..Default::default()
    })
    .unwrap();
    let find = |kind: LeakKind, loc: &str| {
        r.leaks
            .iter()
            .find(|l| l.kind == kind && l.location.contains(loc))
            .unwrap_or_else(|| panic!("no {kind:?} at {loc}: {:#?}", r.leaks))
    };
    assert_eq!(
        find(LeakKind::InstalledProject, "area-2.0.dist-info").severity,
        Severity::Leak,
        "2.0 is later than 1.0"
    );
    let fixed = find(LeakKind::FixedCodeFile, "site-packages/area/m.py");
    assert!(fixed.detail.contains("installed packages"));
    assert_eq!(
        find(LeakKind::Cache, "home/.cache/pip").severity,
        Severity::Warning
    );
    assert_eq!(
        find(LeakKind::Cache, "home/.cargo/registry").severity,
        Severity::Leak,
        "holds a crate named after the project"
    );
    assert_eq!(
        find(LeakKind::InstalledProject, "node_modules/area").severity,
        Severity::Warning,
        "version 0.9 is not later"
    );
    assert!(!r.leaks.iter().any(|l| l.location.contains("numpy")));
    assert!(!r.clean);
}

#[test]
fn prepare_copies_the_environment_and_strips_what_leaks() {
    let f = fixture();
    add_environment(&f.repo);
    let out = f.dir.path().join("ws");
    let mut o = PrepareOptions::new(&f.repo, &f.base, &out);
    o.copy_untracked = true;
    o.reference_patch = Some(FIX_PATCH.into());
    o.package = Some("area".into());
    o.base_version = Some("1.0".into());
    let rep = prepare(&o).unwrap();
    assert!(rep.check.clean, "{:#?}", rep.check.leaks);
    assert!(rep.untracked_copied >= 7);
    let stripped: Vec<&str> = rep.stripped.iter().map(|s| s.path.as_str()).collect();
    for gone in [
        "home/.cache/pip",
        "home/.cargo/registry",
        ".venv/lib/python3.11/site-packages/area-2.0.dist-info",
        ".venv/lib/python3.11/site-packages/area/m.py",
        "node_modules/area",
    ] {
        assert!(
            stripped.contains(&gone),
            "{gone} not stripped: {stripped:?}"
        );
        assert!(!out.join(gone).exists(), "{gone} still there");
    }
    assert!(
        out.join(".venv/lib/python3.11/site-packages/numpy/__init__.py")
            .is_file(),
        "unrelated packages are kept"
    );
    assert_eq!(std::fs::read_to_string(out.join("m.py")).unwrap(), BASE_PY);
    // The source still has everything.
    assert!(
        f.repo
            .join(".venv/lib/python3.11/site-packages/area/m.py")
            .is_file()
    );
}

#[test]
fn cli_check_json_and_exit_codes() {
    let f = fixture();
    git(&f.repo, &["branch", "future", &f.future]);
    let task = f.dir.path().join("task.json");
    let t = serde_json::json!({
        "instance_id": "o__area-12", "repo": "o/area", "repo_path": "src", "base_commit": f.base,
        "patch": FIX_PATCH, "version": "1.0", "FAIL_TO_PASS": ["test_area"], "created_at": "2021-01-01"
    });
    std::fs::write(&task, t.to_string()).unwrap();
    let args = PrepareArgs {
        task: Some(task.clone()),
        repo: None,
        base: None,
        patch: None,
        out: None,
        check: Some(f.repo.clone()),
        no_history: false,
        no_tags: false,
        branch: "main".into(),
        copy_untracked: false,
        scan_dirs: vec![],
        package: None,
        format: OutputFormat::Json,
    };
    let mut buf = Vec::new();
    assert_eq!(run_prepare(&args, &mut buf).unwrap(), 1, "leaks exit 1");
    let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    assert_eq!(v["clean"], false);
    assert!(v["leaks"].as_array().unwrap().iter().any(|l| {
        l["kind"] == "ref"
            && l["location"]
                .as_str()
                .unwrap()
                .contains("refs/heads/future")
    }));

    // Prepare through the task file (relative repo_path), then check the result: exit 0.
    let out = f.dir.path().join("ws");
    let mut p = args.clone();
    p.check = None;
    p.out = Some(out.clone());
    p.format = OutputFormat::Text;
    let mut buf = Vec::new();
    assert_eq!(run_prepare(&p, &mut buf).unwrap(), 0);
    let text = String::from_utf8(buf).unwrap();
    assert!(text.contains("clean: 0 leak(s)"), "{text}");

    // Audit through the CLI: exit 1 for retrieved.
    let traj = f.dir.path().join("t.jsonl");
    std::fs::write(&traj, "{\"type\":\"request\",\"url\":\"https://api.github.com/repos/o/area/pulls/12/files\",\"allowed\":true}\n").unwrap();
    let a = AuditArgs {
        trajectory: traj,
        trajectory_format: runproof_integrity::trajectory::Format::Auto,
        task,
        patch: None,
        history_repo: None,
        package: None,
        format: OutputFormat::Text,
    };
    let mut buf = Vec::new();
    assert_eq!(run_audit(&a, &mut buf).unwrap(), 1);
    let text = String::from_utf8(buf).unwrap();
    assert!(text.contains("label      retrieved"), "{text}");
}

#[test]
fn bad_task_file_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("task.json");
    std::fs::write(&p, "[1, 2]").unwrap();
    let err = runproof_integrity::task::Task::load(&p)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("task JSON") && err.contains("task.json") && err.contains("base_commit"),
        "{err}"
    );
    let err = check(&CheckOptions {
        dir: dir.path().join("missing"),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn fix_lines_already_in_the_base_elsewhere_are_not_a_leak() {
    let f = fixture();
    git(&f.repo, &["prune", "--expire=now"]);
    // Same history shape, but the base already carries the fixed code in another file.
    std::fs::create_dir_all(f.repo.join("legacy")).unwrap();
    std::fs::write(f.repo.join("legacy/area_fixed.py"), FIX_PY).unwrap();
    git(&f.repo, &["add", "."]);
    git(&f.repo, &["commit", "-qm", "vendored copy"]);
    let base = git(&f.repo, &["rev-parse", "HEAD"]);
    let r = check(&CheckOptions {
        dir: f.repo.clone(),
        base: Some(base),
        reference_patch: Some(FIX_PATCH.into()),
        ..Default::default()
    })
    .unwrap();
    let l = r
        .leaks
        .iter()
        .find(|l| l.location == "legacy/area_fixed.py")
        .expect("still reported");
    assert_eq!(l.severity, Severity::Warning);
    assert!(r.clean, "{:#?}", r.leaks);
    // Edit it so it differs from the base: now it is a leak in the workspace.
    std::fs::write(
        f.repo.join("legacy/area_fixed.py"),
        format!("{FIX_PY}# local\n"),
    )
    .unwrap();
    let r = check(&CheckOptions {
        dir: f.repo.clone(),
        base: Some("HEAD".into()),
        reference_patch: Some(FIX_PATCH.into()),
        ..Default::default()
    })
    .unwrap();
    assert!(!r.clean);
}
