//! The exec gate (`RunSpec::gate`, the pre-run scan's seam): the command
//! starts only after the gate has returned Ok, and never when it refuses.

use runproof_sandbox::policy::Seconds;
use runproof_sandbox::{Policy, RunSpec, SandboxError, Stdio};

mod overlay_support;

fn spec(ws: &std::path::Path, script: &str) -> RunSpec {
    let mut policy = Policy {
        workspace: Some(ws.to_path_buf()),
        ..Policy::default()
    };
    policy.limits.timeout = Some(Seconds(30.0));
    let mut spec = RunSpec::new(policy, vec!["/bin/sh".into(), "-c".into(), script.into()]);
    let null = || Some(std::fs::File::open("/dev/null").unwrap().into());
    spec.stdio = Stdio::Fds {
        stdin: null(),
        stdout: null(),
        stderr: null(),
    };
    spec
}

#[test]
fn the_command_waits_for_the_gate_and_never_runs_when_it_refuses() {
    let ws = overlay_support::TempDir::new("gate");
    let done = ws.path().join("gate-done");
    let ordered = ws.path().join("ordered");
    // The gate takes a while (a scan of a large project) and marks its end;
    // the command records whether it saw that mark when it started.
    let mut s = spec(
        ws.path(),
        "if [ -e gate-done ]; then touch ordered; else touch early; fi",
    );
    let d = done.clone();
    s.gate = Some(Box::new(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        std::fs::write(&d, "").map_err(|e| e.to_string())
    }));
    let out = runproof_sandbox::run(s).expect("the sandbox runs");
    assert_eq!(out.exit.exit_status, 0, "{:?}", out.exit);
    assert!(
        ordered.exists() && !ws.path().join("early").exists(),
        "the command started before the gate passed"
    );

    let marker = ws.path().join("ran");
    let mut s = spec(ws.path(), "touch ran");
    s.gate = Some(Box::new(|| Err("the scan said no".into())));
    match runproof_sandbox::run(s) {
        Err(SandboxError::Refused(why)) => assert_eq!(why, "the scan said no"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        !marker.exists(),
        "the command ran although the gate refused"
    );
}
