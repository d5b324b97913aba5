//! The production runner: every setup and test command runs in a fresh
//! runproof sandbox (private root, no network, no credentials, limits), so
//! nothing the graded patch does can reach the host or the grader's files.
//! Output is captured through pipes and parsed outside the sandbox.
//!
//! A copy-on-write request ([`RunRequest::cow`]) runs with the cached
//! environment as the sandbox's overlay lower layer and the instance's upper
//! directory taking every write. Network, when a request asks for it (the
//! clone of a `repo_url`, the task's `setup`), comes only from a
//! [`NetworkAccess`]: the binary's is runproof's egress proxy with the
//! user's allowlist. Without one, such commands get no network at all.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use runproof_sandbox::policy::{ByteSize, Seconds};
use runproof_sandbox::{LayerState, Policy, RunSpec, Stdio};

use crate::runner::{
    REPORT_DIR_ENV, RunRequest, RunResult, RunnerError, TestRunner, collect_streams, spawn_reader,
};

/// Network for sandboxed commands that need it, through a policy.
pub trait NetworkAccess: Send + Sync + std::fmt::Debug {
    /// Refuses `url` (a task's `repo_url`) before anything runs, with the
    /// reason and the fix, when the policy would not let a fetch reach it.
    fn check_url(&self, url: &str) -> Result<(), String>;
    /// Routes `spec`'s network through the policy. The returned value lives
    /// as long as the run and is dropped after it (stopping what it started).
    fn attach(&self, spec: &mut RunSpec) -> Result<Box<dyn std::any::Any + Send>, String>;
}

/// Runs each request with `runproof_sandbox::run`, starting from `policy`.
#[derive(Debug, Clone, Default)]
pub struct SandboxRunner {
    pub policy: Policy,
    /// Network for requests that ask for it; `None`: they get none.
    pub network: Option<Arc<dyn NetworkAccess>>,
}

/// `sh -c 'cd DIR && exec CMD...'`: the sandbox starts commands in the
/// workspace root, and an overlay's root is the environment directory.
fn in_dir(dir: &std::path::Path, argv: &[String]) -> Vec<String> {
    let mut v = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        "cd \"$1\" || exit 125; shift; exec \"$@\"".into(),
        "runproof-cd".into(),
        dir.to_string_lossy().into_owned(),
    ];
    v.extend(argv.iter().cloned());
    v
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RunnerError> {
    let mut p = [0; 2];
    // SAFETY: p is a valid out-array for two descriptors.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(RunnerError::Other(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

impl TestRunner for SandboxRunner {
    fn name(&self) -> &str {
        "runproof sandbox"
    }

    fn sandboxed(&self) -> bool {
        true
    }

    fn check_fetch(&self, url: &str) -> Result<(), String> {
        match &self.network {
            Some(n) => n.check_url(url),
            None => Err(format!(
                "fetching {url} needs network, and this run has no network policy; allow the host with `--allow HOST` (the fetch goes through runproof's egress proxy), or use a local `repo_path`"
            )),
        }
    }

    fn run(&self, req: &RunRequest) -> Result<RunResult, RunnerError> {
        if req.argv.is_empty() {
            return Err(RunnerError::EmptyArgv);
        }
        let mut policy = self.policy.clone();
        let argv = match &req.cow {
            Some(c) => {
                policy.workspace = Some(c.lower.clone());
                if req.workdir == c.lower {
                    req.argv.clone()
                } else {
                    in_dir(&req.workdir, &req.argv)
                }
            }
            None => {
                policy.workspace = Some(req.workdir.clone());
                req.argv.clone()
            }
        };
        policy.limits.timeout = Some(Seconds(req.timeout.as_secs_f64().max(0.001)));
        if let Some(m) = req.memory {
            // Asked for by the task: enforced by a cgroup or not run at all.
            policy.limits.memory = Some(ByteSize(m));
            policy.limits.require_cgroup = Some(true);
        }
        policy.paths.write.extend(req.writable.iter().cloned());
        let mut spec = RunSpec::new(policy, argv.iter().map(Into::into).collect());
        spec.overlay = req.cow.as_ref().map(|c| c.upper.clone());
        // Each instance's upper layer is fresh and deleted after grading.
        spec.overlay_volatile = req.cow.is_some();
        spec.stop = req.stop.clone();
        // The harness builds the environment from an allowlist; credentials
        // are refused here as well, whatever the harness passed.
        for (k, v) in &req.env {
            if !runproof_sandbox::env::looks_secret(k, v) {
                spec.extra_env.insert(k.clone(), v.clone());
            }
        }
        if let Some(d) = &req.report_dir {
            spec.policy.paths.write.push(d.clone());
            spec.extra_env
                .insert(REPORT_DIR_ENV.into(), d.display().to_string());
        }
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let devnull = std::fs::File::open("/dev/null")
            .map_err(|e| RunnerError::Other(format!("/dev/null: {e}")))?;
        spec.stdio = Stdio::Fds {
            stdin: Some(devnull.into()),
            stdout: Some(out_w),
            stderr: Some(err_w),
        };
        let (tx, rx) = mpsc::channel();
        spawn_reader(std::fs::File::from(out_r), req.max_output, 0, tx.clone());
        spawn_reader(std::fs::File::from(err_r), req.max_output, 1, tx);

        let mut unenforced = Vec::new();
        let net_guard = match (&self.network, req.network) {
            (Some(n), true) => Some(
                n.attach(&mut spec)
                    .map_err(|e| RunnerError::Other(format!("network: {e}")))?,
            ),
            (None, true) => {
                unenforced.push(
                    "network requested but not granted: no network policy was given (see --allow)"
                        .to_string(),
                );
                None
            }
            (_, false) => None,
        };

        let start = Instant::now();
        let result = runproof_sandbox::run(spec);
        let wall = start.elapsed();
        drop(net_guard);
        let outcome = result.map_err(|e| RunnerError::Other(format!("sandbox: {e}")))?;
        let command_wall = outcome
            .phases
            .iter()
            .find(|(name, _)| *name == "command")
            .map(|(_, d)| *d);
        let (stdout, stderr, truncated) = collect_streams(&rx);
        unenforced.extend(
            outcome
                .layers
                .iter()
                .filter(|l| matches!(l.state, LayerState::Unavailable | LayerState::Partial))
                .map(|l| format!("{}: {}", l.layer, l.detail)),
        );
        let x = &outcome.exit;
        Ok(RunResult {
            exit_code: x.code,
            signal: x.signal,
            timed_out: x.timed_out,
            stopped: x.stopped.clone(),
            oom: x.oom_killed,
            stdout,
            stderr,
            output_truncated: truncated,
            wall,
            command_wall,
            unenforced,
        })
    }
}
