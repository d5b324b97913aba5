//! Test harness: runs the real `runproof` binary as a hostile workload's
//! host would, in a process group of its own that is killed when the test
//! ends, with a hard deadline so a broken sandbox cannot hang or harm CI.

#![allow(dead_code)]

pub mod git;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_runproof")
}

/// A fresh workspace directory (a git repository) under a private temp dir.
pub struct Ws {
    pub dir: tempfile::TempDir,
}

impl Ws {
    pub fn new() -> Ws {
        let dir = tempfile::Builder::new().prefix("rp-ws-").tempdir().unwrap();
        Ws { dir }
    }
    pub fn git() -> Ws {
        let ws = Ws::new();
        let ok = Command::new("git")
            .args(["init", "-q", "-b", "main"])
            .current_dir(ws.path())
            .status()
            .unwrap()
            .success();
        assert!(ok);
        for (k, v) in [("user.email", "t@example.invalid"), ("user.name", "t")] {
            Command::new("git")
                .args(["config", k, v])
                .current_dir(ws.path())
                .status()
                .unwrap();
        }
        ws
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn write(&self, rel: &str, data: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }
}

/// Kills the whole process group on drop.
pub struct Group(pub Child);
impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.0.id() as i32;
        // SAFETY: kill our own child's process group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

pub fn command(ws: &Path, args: &[&str], script: &str) -> Command {
    let mut c = Command::new(bin());
    c.arg("run")
        .arg("--workspace")
        .arg(ws)
        .args(args)
        .arg("--")
        .arg("/bin/sh")
        .arg("-c")
        .arg(script);
    c.process_group(0);
    c
}

/// Spawn with piped output; the group dies with the returned guard.
pub fn spawn(mut c: Command) -> Group {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Group(c.spawn().unwrap())
}

/// Wait for the child with a deadline (panics, killing the group, if missed).
pub fn finish(mut g: Group, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if let Some(status) = g.0.try_wait().unwrap() {
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            g.0.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
            g.0.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
            return Output {
                status,
                stdout,
                stderr,
            };
        }
        if start.elapsed() > limit {
            panic!("runproof did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run a shell script in a sandbox on `ws`.
pub fn sandbox(ws: &Path, args: &[&str], script: &str) -> Output {
    finish(spawn(command(ws, args, script)), Duration::from_secs(120))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Assert the run succeeded, showing its output otherwise.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert_eq!(code(o), 0, "stdout:\n{}\nstderr:\n{}", stdout(o), stderr(o));
    stdout(o)
}

/// PIDs whose command line contains `marker`.
pub fn pids_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) && !cmd.contains("runproof") {
                out.push(pid);
            }
        }
    }
    out
}

pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

pub fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_u32() as u128
    )
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    u32::from_ne_bytes(b)
}

/// A minimal OpenAI-compatible upstream: every chat completion costs 1000
/// prompt and 1000 completion tokens. Records the Authorization headers.
pub fn fake_openai(seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> u16 {
    use std::io::Write;
    use std::net::TcpListener;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read headers and the (small) body.
                loop {
                    let n = c.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            for line in text[..end].lines() {
                                if line.to_ascii_lowercase().starts_with("authorization:") {
                                    seen.lock().unwrap().push(line.to_string());
                                }
                            }
                            break;
                        }
                    }
                }
                let body = r#"{"id":"x","object":"chat.completion","model":"gpt-test","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":1000,"total_tokens":2000}}"#;
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}
