//! The supervisor's per-tick hook (`RunSpec::on_tick`): a busy loop in a real
//! sandbox, its CPU time read live from the cgroup, the run stopped from the
//! hook through a `StopSignal` long before its wall-clock limit.

use runproof_sandbox::policy::Seconds;
use runproof_sandbox::{LayerState, Policy, RunSpec, Stdio, StopSignal};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod overlay_support;

#[test]
fn tick_hook_sees_cpu_time_grow_and_can_stop_the_run() {
    let ws = overlay_support::TempDir::new("tick");
    let mut policy = Policy {
        workspace: Some(ws.path().to_path_buf()),
        ..Policy::default()
    };
    policy.limits.timeout = Some(Seconds(30.0));
    let mut spec = RunSpec::new(
        policy,
        vec!["/bin/sh".into(), "-c".into(), "while :; do :; done".into()],
    );
    let null = || Some(std::fs::File::open("/dev/null").unwrap().into());
    spec.stdio = Stdio::Fds {
        stdin: null(),
        stdout: null(),
        stderr: null(),
    };
    let stop = Arc::new(StopSignal::default());
    spec.stop = Some(stop.clone());
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let s2 = seen.clone();
    spec.on_tick = Some(Box::new(move |stats| {
        let ns = stats.cpu_ns.expect("the cgroup reports CPU time");
        s2.lock().unwrap().push(ns);
        if ns > 400_000_000 {
            stop.stop("cpu seen by the tick hook");
        }
    }));
    let t0 = Instant::now();
    let out = runproof_sandbox::run(spec).expect("the sandbox runs");
    let took = t0.elapsed();
    assert_eq!(out.exit.exit_status, 124, "{:?}", out.exit);
    assert_eq!(
        out.exit.stopped.as_deref(),
        Some("cpu seen by the tick hook")
    );
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(*seen.last().unwrap() > 400_000_000, "{seen:?}");
    let layer = out
        .layers
        .iter()
        .find(|l| l.layer == "accounting")
        .expect("an accounting layer");
    assert_eq!(layer.state, LayerState::Enforced, "{layer:?}");
}
