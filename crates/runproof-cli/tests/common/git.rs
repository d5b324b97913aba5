//! A small Python repository with a passing test and a test patch, and a
//! dumb-HTTP git server for it on 127.0.0.2: what the `repo_url` tests of
//! `verify` and `serve` clone through the egress proxy.

use super::Group;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

pub fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub const CODE: &str = "def double(x):\n    return x + x\n";
pub const TEST: &str = "from m import double\n\ndef test_double():\n    assert double(3) == 6\n";
pub const FIXED_TEST: &str = "from m import double\n\ndef test_double():\n    assert double(3) == 6\n\ndef test_neg():\n    assert double(-2) == -4\n";

/// A repository with a passing test, and a test patch adding another.
pub struct Repo {
    pub dir: PathBuf,
    pub base: String,
    pub test_patch: String,
}

/// A patch that fixes [`repo`]'s code for its test patch's new test.
pub const FIX: &str = "--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,2 @@\n def double(x):\n-    return x + x\n+    return 2 * x\n";

/// The task for [`repo`] as a tasks-file object, with `repo_path`.
pub fn task(r: &Repo, id: &str) -> serde_json::Value {
    serde_json::json!({
        "instance_id": id,
        "base_commit": r.base,
        "repo_path": r.dir,
        "test_patch": r.test_patch,
        "test_cmd": "python3 -m pytest -rA -p no:cacheprovider",
        "test_format": "pytest",
        "timeout": 60,
        "FAIL_TO_PASS": ["test_m.py::test_neg"],
        "PASS_TO_PASS": ["test_m.py::test_double"],
    })
}

pub fn repo(root: &Path) -> Repo {
    let dir = root.join("src-repo");
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("m.py"), CODE).unwrap();
    std::fs::write(dir.join("test_m.py"), TEST).unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "base"]);
    let base = git(&dir, &["rev-parse", "HEAD"]);
    std::fs::write(dir.join("test_m.py"), FIXED_TEST).unwrap();
    let test_patch = git(&dir, &["diff"]) + "\n";
    git(&dir, &["checkout", "-q", "--", "."]);
    Repo {
        dir,
        base,
        test_patch,
    }
}

/// A dumb-HTTP git server: a bare clone with `git update-server-info`
/// served by `python3 -m http.server` on 127.0.0.2 (not in the sandbox's
/// NO_PROXY, and unreachable from inside a sandbox except through the
/// proxy). Returns the port and the request log.
pub struct GitServer {
    pub port: u16,
    pub log: Arc<Mutex<Vec<String>>>,
    _server: Group,
}

pub fn git_server(root: &Path, src: &Path) -> GitServer {
    let served = root.join("served");
    std::fs::create_dir_all(&served).unwrap();
    git(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            served.join("r.git").to_str().unwrap(),
        ],
    );
    git(&served.join("r.git"), &["update-server-info"]);
    let mut c = Command::new("python3");
    c.args(["-u", "-m", "http.server", "--bind", "127.0.0.2", "0"])
        .current_dir(&served)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut g = Group(c.spawn().unwrap());
    let out = g.0.stdout.take().unwrap();
    let mut first = String::new();
    BufReader::new(out).read_line(&mut first).unwrap();
    // "Serving HTTP on 127.0.0.2 port 40123 (http://127.0.0.2:40123/) ..."
    let port: u16 = first
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {first:?}"));
    let log = Arc::new(Mutex::new(Vec::new()));
    let err = g.0.stderr.take().unwrap();
    let l = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    GitServer {
        port,
        log,
        _server: g,
    }
}
