//! The production runner: every setup and test command runs in a fresh
//! runproof sandbox (private root, no network, no credentials, limits), so
//! nothing the graded patch does can reach the host or the grader's files.
//! Output is captured through pipes and parsed outside the sandbox.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::Instant;

use runproof_sandbox::policy::Seconds;
use runproof_sandbox::{LayerState, Policy, RunSpec, Stdio};

use crate::runner::{
    REPORT_DIR_ENV, RunRequest, RunResult, RunnerError, TestRunner, collect_streams, spawn_reader,
};

/// Runs each request with `runproof_sandbox::run`, starting from `policy`.
#[derive(Debug, Clone, Default)]
pub struct SandboxRunner {
    pub policy: Policy,
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

    fn run(&self, req: &RunRequest) -> Result<RunResult, RunnerError> {
        if req.argv.is_empty() {
            return Err(RunnerError::EmptyArgv);
        }
        let mut policy = self.policy.clone();
        policy.workspace = Some(req.workdir.clone());
        policy.limits.timeout = Some(Seconds(req.timeout.as_secs_f64().max(0.001)));
        policy.paths.write.extend(req.writable.iter().cloned());
        let mut spec = RunSpec::new(policy, req.argv.iter().map(Into::into).collect());
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

        let start = Instant::now();
        let outcome =
            runproof_sandbox::run(spec).map_err(|e| RunnerError::Other(format!("sandbox: {e}")))?;
        let wall = start.elapsed();
        let (stdout, stderr, truncated) = collect_streams(&rx);
        let mut unenforced: Vec<String> = outcome
            .layers
            .iter()
            .filter(|l| matches!(l.state, LayerState::Unavailable | LayerState::Partial))
            .map(|l| format!("{}: {}", l.layer, l.detail))
            .collect();
        if req.network {
            unenforced.push("network requested but not granted: the egress proxy is not wired into the runner yet".into());
        }
        let x = &outcome.exit;
        Ok(RunResult {
            exit_code: x.code,
            signal: x.signal,
            timed_out: x.timed_out,
            oom: x.oom_killed,
            stdout,
            stderr,
            output_truncated: truncated,
            wall,
            unenforced,
        })
    }
}
