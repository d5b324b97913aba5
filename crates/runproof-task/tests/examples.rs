//! The bundled examples graded end to end with real git, pytest, cargo and node.

mod common;

use runproof_task::eval::{EvalRun, run_eval, validate_task};
use runproof_task::parse::{TestFormat, parse_text};
use runproof_task::{Outcome, PatchChoice, Status, load_predictions, load_tasks};
use std::collections::BTreeMap;
use std::time::Instant;

#[test]
fn examples_grade_as_designed_and_resume() {
    let ex = common::build_examples();
    let tasks = load_tasks(&ex.join("tasks.jsonl")).unwrap();
    let preds = load_predictions(&ex.join("predictions.jsonl")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let h = common::harness(&tmp.path().join("cache"));
    let out = tmp.path().join("out");
    let run = EvalRun {
        harness: &h,
        tasks: &tasks,
        predictions: &preds,
        out: &out,
        jobs: 2,
        progress: false,
    };
    let (summary, reps) = run_eval(&run);
    let got: BTreeMap<(String, String), Outcome> = reps
        .iter()
        .map(|r| {
            (
                (r.instance_id.clone(), r.model_name_or_path.clone()),
                r.status,
            )
        })
        .collect();
    let expect = |id: &str, m: &str| got[&(id.to_string(), m.to_string())];
    for id in ["py-stats-1", "py-stats-junit-1"] {
        assert_eq!(expect(id, "resolves"), Outcome::Resolved, "{id}");
        assert_eq!(expect(id, "fails"), Outcome::Unresolved, "{id}");
        assert_eq!(expect(id, "breaks-p2p"), Outcome::Unresolved, "{id}");
        assert_eq!(
            expect(id, "does-not-apply"),
            Outcome::PatchDidNotApply,
            "{id}"
        );
        assert_eq!(expect(id, "games-conftest"), Outcome::Unresolved, "{id}");
    }
    assert_eq!(expect("rs-wordcount-1", "resolves"), Outcome::Resolved);
    assert_eq!(expect("rs-wordcount-1", "fails"), Outcome::Unresolved);
    assert_eq!(expect("js-slug-1", "resolves"), Outcome::Resolved);
    assert_eq!(expect("js-slug-1", "breaks-p2p"), Outcome::Unresolved);

    let by = |id: &str, m: &str| {
        reps.iter()
            .find(|r| r.instance_id == id && r.model_name_or_path == m)
            .unwrap()
    };
    // The P2P break is reported as exactly that.
    let b = by("py-stats-1", "breaks-p2p");
    assert_eq!(
        b.pass_to_pass.failure,
        vec!["tests/test_stats.py::test_mean_empty"]
    );
    assert!(b.fail_to_pass.failure.is_empty());
    let b = by("js-slug-1", "breaks-p2p");
    assert_eq!(b.pass_to_pass.failure, vec!["keeps digits"]);
    // The conftest hook was found and neutralised, and is named in the report.
    let g = by("py-stats-1", "games-conftest");
    assert_eq!(g.neutralised.len(), 1);
    assert_eq!(g.neutralised[0].path, "conftest.py");
    assert_eq!(
        g.fail_to_pass.failure,
        vec!["tests/test_stats.py::test_median_even"]
    );
    // Structured report path: the junit task really parsed JUnit.
    assert_eq!(
        by("py-stats-junit-1", "resolves").test_format,
        Some(TestFormat::PytestJunit)
    );
    assert_eq!(
        by("rs-wordcount-1", "fails").fail_to_pass.failure,
        vec!["tabs_and_newlines"]
    );
    // Every graded run agreed with its exit status.
    assert!(
        reps.iter()
            .filter(|r| r.runs > 0)
            .all(|r| r.exit_consistent == Some(true))
    );

    assert!(summary.all_graded);
    assert_eq!(summary.resolved_instances, 4);
    // A patch that does not apply has no test verdict: an error as SWE-bench
    // counts them, not an unresolved instance, and not an infrastructure failure.
    assert!(summary.infrastructure_ids.is_empty());
    assert_eq!(summary.by_outcome["patch_did_not_apply"], 2);
    assert_eq!(summary.error_ids, vec!["py-stats-1", "py-stats-junit-1"]);
    // Every instance was graded on a copy-on-write workspace over its cache.
    assert!(
        reps.iter()
            .filter(|r| r.runs > 0)
            .all(|r| r.workspace.as_deref() == Some("overlay")),
        "{:?}",
        reps.iter()
            .map(|r| (&r.workspace, &r.workspace_note))
            .collect::<Vec<_>>()
    );
    // Environments: one per (repo, base, setup) — the two py-stats tasks share one.
    let envs = std::fs::read_dir(tmp.path().join("cache/envs"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join(".runproof-ready").exists())
        .count();
    assert_eq!(envs, 3);
    assert_eq!(
        reps.iter().filter(|r| r.env_built).count(),
        3,
        "each environment built exactly once"
    );

    // SWE-bench-shaped report on disk.
    let rj: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("resolves/py-stats-1/report.json")).unwrap(),
    )
    .unwrap();
    let inner = &rj["py-stats-1"];
    assert_eq!(inner["resolved"], true);
    assert_eq!(inner["patch_successfully_applied"], true);
    assert_eq!(
        inner["tests_status"]["FAIL_TO_PASS"]["success"][0],
        "tests/test_stats.py::test_median_even"
    );
    assert!(out.join("resolves/py-stats-1/applied.diff").exists());
    assert!(out.join("resolves/py-stats-1/test_output.txt").exists());

    // The JUnit we write parses back (with our own parser) to the same verdicts.
    let x = runproof_task::eval::junit_xml(&reps);
    let parsed = parse_text(TestFormat::Junit, &x, None).tests;
    assert_eq!(parsed["resolves::js-slug-1"], Status::Passed);
    assert_eq!(parsed["fails::rs-wordcount-1"], Status::Failed);
    assert_eq!(parsed.len(), reps.len());

    // Resume: a second run grades nothing again.
    let t = Instant::now();
    let (s2, reps2) = run_eval(&run);
    assert_eq!(s2.resumed, reps.len());
    assert_eq!(reps2.len(), reps.len());
    assert!(t.elapsed().as_secs() < 5, "resume took {:?}", t.elapsed());
}

#[test]
fn gold_resolves_base_does_not_and_validate_says_ok() {
    let ex = common::build_examples();
    let tasks = load_tasks(&ex.join("tasks.jsonl")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let h = common::harness(&tmp.path().join("cache"));
    for t in tasks.iter().filter(|t| t.instance_id != "py-stats-junit-1") {
        let g = h.grade(
            t,
            "gold",
            PatchChoice::Gold,
            &tmp.path().join("g").join(&t.instance_id),
        );
        assert_eq!(
            g.status,
            Outcome::Resolved,
            "{}: {:?}",
            t.instance_id,
            g.detail
        );
        let b = h.grade(
            t,
            "base",
            PatchChoice::Empty,
            &tmp.path().join("b").join(&t.instance_id),
        );
        assert_eq!(b.status, Outcome::Unresolved, "{}", t.instance_id);
        assert_eq!(b.fail_to_pass.failure, t.fail_to_pass, "{}", t.instance_id);
        assert!(b.pass_to_pass.failure.is_empty());
    }
    let v = validate_task(&h, &tasks[0], 2, &tmp.path().join("v"));
    assert_eq!(v.verdict, "ok", "{v:?}");
    assert_eq!(v.gold_outcomes, vec!["resolved", "resolved"]);
}

#[test]
fn conftest_hook_really_games_pytest_when_not_neutralised() {
    // Control experiment: the same hook, applied by hand with no harness,
    // makes the failing F2P test report as passed. So the Unresolved verdict
    // in the eval comes from neutralisation, not from a hook that never worked.
    let ex = common::build_examples();
    let preds = load_predictions(&ex.join("predictions.jsonl")).unwrap();
    let p = preds
        .iter()
        .find(|p| p.instance_id == "py-stats-1" && p.model_name_or_path == "games-conftest")
        .unwrap();
    let tasks = load_tasks(&ex.join("tasks.jsonl")).unwrap();
    let t = &tasks[0];
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path().join("w");
    common::git(
        tmp.path(),
        &[
            "clone",
            "-q",
            ex.join("repos/py-stats").to_str().unwrap(),
            "w",
        ],
    );
    for d in [p.model_patch.as_deref().unwrap(), t.test_patch.as_str()] {
        let f = tmp.path().join("p.diff");
        std::fs::write(&f, d).unwrap();
        common::git(&w, &["apply", f.to_str().unwrap()]);
    }
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(&t.test_cmd)
        .current_dir(&w)
        .output()
        .unwrap();
    let r = parse_text(
        TestFormat::Pytest,
        &String::from_utf8_lossy(&o.stdout),
        None,
    );
    assert_eq!(
        r.tests["tests/test_stats.py::test_median_even"],
        Status::Passed
    );
}
