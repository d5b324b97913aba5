#![allow(dead_code)]
//! Helpers: the bundled examples, an in-process `runproof serve` on a real
//! socket (its own tokio runtime, dropped with the test), JSON over HTTP.

use clap::Parser;
use runproof_server::cli::{Running, ServeArgs};
use runproof_server::testing::{HttpResponse, request, wait_for};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Builds the example repositories (idempotent, locked).
pub fn examples() -> PathBuf {
    let ex = root().join("examples");
    let st = Command::new("bash")
        .arg(ex.join("build.sh"))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run examples/build.sh");
    assert!(st.success(), "examples/build.sh failed");
    ex
}

pub fn predictions(ex: &Path, instance: &str) -> Vec<Value> {
    std::fs::read_to_string(ex.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|p| p["instance_id"] == instance)
        .collect()
}

/// The task object of an example instance, as the tasks file holds it.
pub fn task_object(ex: &Path, instance: &str) -> Value {
    std::fs::read_to_string(ex.join("tasks.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|t| t["instance_id"] == instance)
        .unwrap()
}

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    a: ServeArgs,
}

pub fn serve_args(args: &[&str]) -> ServeArgs {
    Wrap::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
        .unwrap()
        .a
}

/// A server running in this test process.
pub struct Server {
    pub rt: Option<tokio::runtime::Runtime>,
    pub run: Running,
    pub tmp: tempfile::TempDir,
}

impl Server {
    /// `runproof serve --listen 127.0.0.1:0 --db TMP/jobs.sqlite --no-ledger
    /// --cache TMP/cache --work-dir TMP/work ARGS...`
    pub fn start(args: &[&str]) -> Server {
        Self::try_start(args).unwrap()
    }
    pub fn try_start(args: &[&str]) -> Result<Server, String> {
        let tmp = tempfile::Builder::new()
            .prefix("rp-serve-")
            .tempdir()
            .unwrap();
        Self::start_in(tmp, args)
    }
    pub fn start_in(tmp: tempfile::TempDir, args: &[&str]) -> Result<Server, String> {
        let db = tmp.path().join("jobs.sqlite");
        let cache = tmp.path().join("cache");
        let work = tmp.path().join("work");
        let mut all: Vec<String> = Vec::new();
        if !args.contains(&"--listen") {
            all.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        all.extend([
            "--cache".into(),
            cache.display().to_string(),
            "--work-dir".into(),
            work.display().to_string(),
        ]);
        if !args.contains(&"--db") {
            all.extend(["--db".into(), db.display().to_string()]);
        }
        if !args.contains(&"--ledger") {
            all.push("--no-ledger".into());
        }
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let a = serve_args(&refs);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let run = rt
            .block_on(runproof_server::cli::start(&a, None, None))
            .map_err(|e| e.to_string())?;
        Ok(Server {
            rt: Some(rt),
            run,
            tmp,
        })
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        request(self.run.addr, "GET", path, &[], None).unwrap()
    }

    pub fn post(&self, path: &str, body: &Value) -> HttpResponse {
        let b = serde_json::to_vec(body).unwrap();
        request(
            self.run.addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(&b),
        )
        .unwrap()
    }

    /// Waits until the job is final; returns it.
    pub fn wait_job(&self, id: &str) -> Value {
        wait_for(&format!("job {id}"), Duration::from_secs(300), || {
            let j = self.get(&format!("/api/jobs/{id}")).json();
            matches!(j["state"].as_str(), Some("done" | "failed" | "cancelled")).then_some(j)
        })
    }

    pub fn wait_state(&self, id: &str, state: &str) -> Value {
        wait_for(
            &format!("job {id} {state}"),
            Duration::from_secs(300),
            || {
                let j = self.get(&format!("/api/jobs/{id}")).json();
                (j["state"] == state).then_some(j)
            },
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stops the server's tasks; a grader still running is left to its
        // task timeout (its sandboxes die with the test process).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// The example task with its test command slowed down by `secs` (so a test
/// can act while it runs), under a new instance id.
pub fn slow_task(ex: &Path, id: &str, secs: u32) -> Value {
    let mut t = task_object(ex, "py-stats-1");
    t["instance_id"] = json!(id);
    let cmd = t["test_cmd"].as_str().unwrap().to_string();
    t["test_cmd"] = json!(format!("sleep {secs}; {cmd}"));
    t["repo_path"] = json!(ex.join("repos/py-stats").display().to_string());
    t
}
