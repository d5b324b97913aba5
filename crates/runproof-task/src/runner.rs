//! The execution seam. Everything the harness runs (clone of a remote repo,
//! environment `setup`, the test command) goes through [`TestRunner`], so the
//! sandbox crate can take over by implementing one trait.
//!
//! [`DirectRunner`] runs the process directly on the host in its own process
//! group, killed on timeout. It confines nothing: it is for tests and, with a
//! loud warning, for the CLI until the sandbox runner replaces it. It says so in
//! every [`RunResult::unenforced`].

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use runproof_sandbox::StopSignal;

/// Default cap on each of stdout and stderr kept from one run.
pub const DEFAULT_MAX_OUTPUT: usize = 32 * 1024 * 1024;
/// Name of the variable that tells the command where to write report files.
pub const REPORT_DIR_ENV: &str = "RUNPROOF_REPORT_DIR";

/// What to run. `argv` is never a shell string assembled from hostile data:
/// the only shell commands are a task's own `setup` and `test_cmd`, which the
/// harness passes as `["sh", "-c", <as the task author wrote it>]`.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Working directory: the instance workspace (host path).
    pub workdir: PathBuf,
    pub argv: Vec<String>,
    /// The complete environment (the runner starts from an empty one).
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// `false`: the command must have no network at all.
    pub network: bool,
    /// A writable directory for structured reports, visible to the command at
    /// the path in `$RUNPROOF_REPORT_DIR`. The harness reads it after the run.
    pub report_dir: Option<PathBuf>,
    /// Extra directories the command may write besides `workdir` and
    /// `report_dir` (e.g. HOME for caches).
    pub writable: Vec<PathBuf>,
    /// Cap for each of stdout and stderr; beyond it the middle is dropped
    /// (head and tail kept) and the result says so.
    pub max_output: usize,
    /// Copy-on-write: the command sees `lower` (a cached environment, which
    /// must stay unchanged) with `upper` over it, and every write goes to
    /// `upper`. `workdir` lies inside `lower`.
    pub cow: Option<CowRoot>,
    /// Memory limit for the command and everything it starts, in bytes.
    pub memory: Option<u64>,
    /// Ends the command and everything it started when signalled (checked
    /// every 200 ms at most); the result then says `stopped`.
    pub stop: Option<Arc<StopSignal>>,
}

/// The two layers of a copy-on-write workspace (see [`RunRequest::cow`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CowRoot {
    pub lower: PathBuf,
    pub upper: PathBuf,
}

impl RunRequest {
    /// `sh -c <cmd>` in `workdir`, no network, default output cap.
    pub fn shell(
        workdir: PathBuf,
        cmd: &str,
        env: Vec<(String, String)>,
        timeout: Duration,
    ) -> Self {
        RunRequest {
            workdir,
            argv: vec!["sh".into(), "-c".into(), cmd.into()],
            env,
            timeout,
            network: false,
            report_dir: None,
            writable: Vec::new(),
            max_output: DEFAULT_MAX_OUTPUT,
            cow: None,
            memory: None,
            stop: None,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// Exit code when the process exited normally.
    pub exit_code: Option<i32>,
    /// Signal that ended it, if any.
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Ended through [`RunRequest::stop`], with the reason given there.
    pub stopped: Option<String>,
    /// Killed for exceeding its memory limit (runners that enforce one).
    pub oom: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Output went past `max_output` and its middle was dropped.
    pub output_truncated: bool,
    pub wall: Duration,
    /// How long the command itself ran, when the runner can tell it apart
    /// from its own start-up and teardown (a sandbox's set-up).
    pub command_wall: Option<Duration>,
    /// Protections the request implies that this runner did not enforce
    /// (e.g. "network isolation"). Empty for a runner that enforced all.
    pub unenforced: Vec<String>,
}

impl RunResult {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.oom && self.stopped.is_none()
    }
    /// stdout then stderr, for text parsers and logs.
    pub fn combined(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.stdout.len() + self.stderr.len() + 1);
        v.extend_from_slice(&self.stdout);
        if !self.stdout.ends_with(b"\n") && !self.stdout.is_empty() {
            v.push(b'\n');
        }
        v.extend_from_slice(&self.stderr);
        v
    }
    /// One line for logs and reports: `exit 1`, `signal 9`, `timed out`.
    pub fn describe(&self) -> String {
        if self.timed_out {
            format!("timed out after {:.1}s", self.wall.as_secs_f64())
        } else if let Some(why) = &self.stopped {
            format!("stopped: {why}")
        } else if self.oom {
            "killed: out of memory".into()
        } else if let Some(c) = self.exit_code {
            format!("exit {c}")
        } else if let Some(s) = self.signal {
            format!("killed by signal {s}")
        } else {
            "unknown end".into()
        }
    }
}

/// The runner could not run the command at all (not: the command failed).
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot start `{program}` in {}: {source}; check that it is installed and on PATH", workdir.display())]
    Spawn {
        program: String,
        workdir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("empty command line; give at least the program to run")]
    EmptyArgv,
    #[error("runner failure: {0}")]
    Other(String),
}

/// The seam the sandbox implements.
pub trait TestRunner: Send + Sync {
    /// Short name for reports, e.g. `direct (unsandboxed)` or `sandbox`.
    fn name(&self) -> &str;
    /// Whether this runner confines the command (reports carry it).
    fn sandboxed(&self) -> bool;
    fn run(&self, req: &RunRequest) -> Result<RunResult, RunnerError>;
    /// Refuses, before anything runs, a `repo_url` that this runner's
    /// network policy would not let a fetch reach (reason and fix).
    fn check_fetch(&self, _url: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Runs commands directly on the host: own process group, killed with the
/// whole group on timeout and after exit (no stragglers), output bounded.
/// Confines nothing.
#[derive(Debug, Default, Clone)]
pub struct DirectRunner;

impl TestRunner for DirectRunner {
    fn name(&self) -> &str {
        "direct (unsandboxed)"
    }
    fn sandboxed(&self) -> bool {
        false
    }
    fn run(&self, req: &RunRequest) -> Result<RunResult, RunnerError> {
        let (prog, args) = req.argv.split_first().ok_or(RunnerError::EmptyArgv)?;
        if req.cow.is_some() {
            return Err(RunnerError::Other(
                "the direct runner cannot mount a copy-on-write workspace; use copy workspaces"
                    .into(),
            ));
        }
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .current_dir(&req.workdir)
            .env_clear()
            .envs(req.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(d) = &req.report_dir {
            cmd.env(REPORT_DIR_ENV, d);
        }
        let start = Instant::now();
        let mut child = cmd.spawn().map_err(|source| RunnerError::Spawn {
            program: prog.clone(),
            workdir: req.workdir.clone(),
            source,
        })?;
        let pgid = child.id() as i32;
        let (tx, rx) = mpsc::channel();
        let out = child
            .stdout
            .take()
            .map(|s| spawn_reader(s, req.max_output, 0, tx.clone()));
        let err = child
            .stderr
            .take()
            .map(|s| spawn_reader(s, req.max_output, 1, tx));
        let _ = (out, err);

        let deadline = start + req.timeout;
        let mut nap = Duration::from_micros(200);
        let mut timed_out = false;
        let mut stopped = None;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) => {}
                Err(_) => break None,
            }
            if let Some(why) = req.stop.as_ref().and_then(|s| s.reason()) {
                stopped = Some(why);
                kill_group(pgid);
                break child.wait().ok();
            }
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                kill_group(pgid);
                break child.wait().ok();
            }
            std::thread::sleep(nap.min(deadline - now));
            nap = (nap * 2).min(Duration::from_millis(10));
        };
        // Whatever the command left running in its group dies with it.
        kill_group(pgid);
        let wall = start.elapsed();

        let (stdout, stderr, truncated) = collect_streams(&rx);
        let mut unenforced = vec![
            "filesystem confinement".to_string(),
            "memory limit".to_string(),
        ];
        if !req.network {
            unenforced.insert(0, "network isolation".to_string());
        }
        Ok(RunResult {
            exit_code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            timed_out,
            stopped,
            oom: false,
            stdout,
            stderr,
            output_truncated: truncated,
            wall,
            command_wall: Some(wall),
            unenforced,
        })
    }
}

/// Collect the two streams' readers; a process that left the group may hold
/// the pipes open, so give up waiting after a grace period. Returns stdout,
/// stderr, and whether anything was cut or lost.
pub(crate) fn collect_streams(rx: &mpsc::Receiver<Chunk>) -> (Vec<u8>, Vec<u8>, bool) {
    let mut streams: [Option<(Vec<u8>, bool)>; 2] = [None, None];
    let grace = Instant::now() + Duration::from_secs(2);
    let mut lost = false;
    while streams.iter().any(Option::is_none) {
        match rx.recv_timeout(grace.saturating_duration_since(Instant::now())) {
            Ok((i, data, t)) => streams[i] = Some((data, t)),
            Err(_) => {
                lost = true;
                break;
            }
        }
    }
    let [o, e] = streams;
    let (stdout, t1) = o.unwrap_or_default();
    let (stderr, t2) = e.unwrap_or_default();
    (stdout, stderr, lost || t1 || t2)
}

fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: plain syscall on a process group id we created; ESRCH when gone is fine.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

pub(crate) type Chunk = (usize, Vec<u8>, bool);

/// Reads a pipe to the end keeping at most `max` bytes: the first half and the
/// last half, with a marker where the middle was dropped.
pub(crate) fn spawn_reader<R: Read + Send + 'static>(
    mut r: R,
    max: usize,
    idx: usize,
    tx: mpsc::Sender<Chunk>,
) {
    std::thread::spawn(move || {
        let half = max / 2;
        let mut head = Vec::new();
        let mut tail: VecDeque<u8> = VecDeque::new();
        let mut dropped: u64 = 0;
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let mut chunk = &buf[..n];
            if head.len() < half {
                let take = (half - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
            }
            tail.extend(chunk);
            let keep = max - half;
            if tail.len() > keep {
                let extra = tail.len() - keep;
                tail.drain(..extra);
                dropped += extra as u64;
            }
        }
        let truncated = dropped > 0;
        if truncated {
            head.extend_from_slice(
                format!("\n[runproof: {dropped} bytes of output dropped here]\n").as_bytes(),
            );
        }
        head.extend(tail);
        let _ = tx.send((idx, head, truncated));
    });
}

/// Host variables a test run needs to find its toolchains. Credentials are
/// never passed: the list is an allowlist, not a filter.
const PASS_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "PYENV_ROOT",
    "PYENV_VERSION",
    "VIRTUAL_ENV",
    "GOROOT",
    "GOPATH",
    "GOCACHE",
    "GOFLAGS",
    "NODE_PATH",
    "JAVA_HOME",
];

/// The environment for setup and tests: allowlisted toolchain variables from
/// the host, `HOME` pointed at `home` (a per-run directory, so nothing reads the
/// user's real home through `$HOME`), and toolchain homes that default to the
/// real home made explicit. Sorted, deterministic.
pub fn base_env(home: &std::path::Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = PASS_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    if let Some(real) = std::env::var_os("HOME").map(PathBuf::from) {
        for (k, sub) in [
            ("CARGO_HOME", ".cargo"),
            ("RUSTUP_HOME", ".rustup"),
            ("PYENV_ROOT", ".pyenv"),
        ] {
            let p = real.join(sub);
            if !env.iter().any(|(n, _)| n == k) && p.is_dir() {
                env.push((k.to_string(), p.to_string_lossy().into_owned()));
            }
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    env.push(("HOME".into(), home.to_string_lossy().into_owned()));
    env.push(("CI".into(), "true".into()));
    env.push(("NO_COLOR".into(), "1".into()));
    env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    env.push(("GIT_TERMINAL_PROMPT".into(), "0".into()));
    env.sort();
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cmd: &str, timeout_ms: u64) -> RunRequest {
        let d = std::env::temp_dir();
        RunRequest::shell(
            d.clone(),
            cmd,
            base_env(&d),
            Duration::from_millis(timeout_ms),
        )
    }

    #[test]
    fn runs_and_reports_exit_and_output() {
        let r = DirectRunner
            .run(&req("echo out; echo err >&2; exit 3", 10_000))
            .unwrap();
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(r.stdout, b"out\n");
        assert_eq!(r.stderr, b"err\n");
        assert!(!r.timed_out);
        assert!(r.unenforced.contains(&"network isolation".to_string()));
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let marker = tempfile::NamedTempFile::new().unwrap();
        let p = marker.path().to_string_lossy().into_owned();
        // A grandchild that would write the marker after 1.5 s.
        let cmd = format!("(sleep 1.5; echo late > '{p}') & sleep 30");
        let t = Instant::now();
        let r = DirectRunner.run(&req(&cmd, 300)).unwrap();
        assert!(r.timed_out);
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1800));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "",
            "grandchild survived the timeout"
        );
    }

    #[test]
    fn a_stop_kills_the_whole_group_and_says_why() {
        let marker = tempfile::NamedTempFile::new().unwrap();
        let p = marker.path().to_string_lossy().into_owned();
        let cmd = format!("(sleep 1.5; echo late > '{p}') & sleep 30");
        let mut rq = req(&cmd, 60_000);
        let stop = Arc::new(StopSignal::default());
        rq.stop = Some(stop.clone());
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            stop.stop("the job was cancelled");
        });
        let t = Instant::now();
        let r = DirectRunner.run(&rq).unwrap();
        stopper.join().unwrap();
        assert_eq!(r.stopped.as_deref(), Some("the job was cancelled"));
        assert!(!r.timed_out && !r.success());
        assert_eq!(r.describe(), "stopped: the job was cancelled");
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1800));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "",
            "grandchild survived the stop"
        );
    }

    #[test]
    fn output_is_bounded_head_and_tail_kept() {
        let mut rq = req("yes abcdefgh | head -c 1000000; echo; echo THE-END", 10_000);
        rq.max_output = 1000;
        let r = DirectRunner.run(&rq).unwrap();
        assert!(r.output_truncated);
        assert!(r.stdout.len() < 1200, "{}", r.stdout.len());
        assert!(String::from_utf8_lossy(&r.stdout).ends_with("THE-END\n"));
    }

    #[test]
    fn environment_is_an_allowlist() {
        // SAFETY: test-only; this variable is read by no other test.
        unsafe { std::env::set_var("RUNPROOF_TEST_SECRET_TOKEN", "hunter2") };
        let r = DirectRunner.run(&req("env", 10_000)).unwrap();
        let out = String::from_utf8_lossy(&r.stdout);
        assert!(!out.contains("hunter2"));
        assert!(out.contains("CI=true"));
    }

    #[test]
    fn missing_program_is_a_runner_error() {
        let mut rq = req("", 1000);
        rq.argv = vec!["/nonexistent/prog".into()];
        let e = DirectRunner.run(&rq).unwrap_err().to_string();
        assert!(e.contains("cannot start `/nonexistent/prog`"), "{e}");
    }
}
