//! `runproof demo`: a hostile build script, bundled in the binary, run in the
//! sandbox against a throw-away workspace and a fake home directory full of
//! planted secrets. The host then checks every attack for itself and prints
//! what was contained. Nothing of the user's is read or touched.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

const ATTACK: &str = include_str!("demo_attack.sh");

/// (attack, what the sandbox must have made of it, what it means)
const EXPECTED: &[(&str, &str, &str)] = &[
    ("ssh-key", "blocked", "read ~/.ssh/id_ed25519"),
    ("aws-credentials", "blocked", "read ~/.aws/credentials"),
    ("env-token", "blocked", "read a token from the environment"),
    ("etc-shadow", "blocked", "read /etc/shadow"),
    ("home-bashrc", "blocked", "append to the real ~/.bashrc"),
    ("git-hook", "blocked", "plant .git/hooks/post-checkout"),
    ("system-file", "blocked", "write under /usr/local/bin"),
    (
        "exfiltrate-tcp",
        "blocked",
        "connect to an internet address",
    ),
    (
        "host-loopback",
        "blocked",
        "connect to the host's 127.0.0.1:22",
    ),
    ("dns-lookup", "blocked", "resolve a name (DNS as a channel)"),
    ("nested-userns", "blocked", "create a user namespace"),
    ("ptrace-init", "blocked", "ptrace the sandbox's init"),
    ("fork-flood", "capped", "fork 400 processes (--pids 128)"),
    ("memory-bomb", "capped", "allocate 1 GiB (--memory 512M)"),
];

fn write(p: &Path, s: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(p.parent().unwrap())?;
    std::fs::write(p, s)
}

pub fn demo() -> ExitCode {
    match demo_inner() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("runproof demo: {e}");
            ExitCode::from(2)
        }
    }
}

fn demo_inner() -> std::io::Result<bool> {
    let root = tempdir()?;
    let ws = root.join("cloned-project");
    let home = root.join("home");
    std::fs::create_dir_all(&ws)?;
    write(&ws.join("build.sh"), ATTACK)?;
    write(
        &ws.join("README.md"),
        "A project that looks harmless. Run ./build.sh to build it.\n",
    )?;
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&ws)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    git(&["init", "-q"])?;
    write(
        &home.join(".ssh/id_ed25519"),
        "-----DEMO-PRIVATE-KEY-----\n",
    )?;
    write(
        &home.join(".aws/credentials"),
        "[default]\naws_secret_access_key = DEMO-AWS-SECRET\n",
    )?;
    write(
        &home.join(".bashrc"),
        "# the user's real shell start-up file\n",
    )?;
    let audit = root.join("audit.jsonl");
    let bashrc_before = std::fs::read_to_string(home.join(".bashrc"))?;

    println!("runproof demo: a cloned project's build script tries to break out.");
    println!(
        "  workspace {}  (fake home {})",
        ws.display(),
        home.display()
    );
    println!(
        "  $ runproof run --pids 128 --memory 512M --timeout 120 --audit audit.jsonl -- sh build.sh\n"
    );
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "run",
        "--pids",
        "128",
        "--memory",
        "512M",
        "--timeout",
        "120",
        "--env",
        "DEMO_GITHUB_TOKEN",
        "--audit",
    ])
    .arg(&audit)
    .arg("--workspace")
    .arg(&ws)
    .args(["--", "sh", "build.sh"])
    .env("HOME", &home)
    .env("DEMO_GITHUB_TOKEN", "ghp_DEMO-TOKEN")
    .env("DEMO_HOST_HOME", &home)
    .stdin(Stdio::null());
    // A real toolchain home outside the fake home keeps python3 and friends
    // visible, as they would be for a real user.
    for var in ["PYENV_ROOT", "CARGO_HOME", "RUSTUP_HOME", "NVM_DIR"] {
        if std::env::var_os(var).is_none() {
            if let Some(h) = std::env::var_os("HOME") {
                let dir = Path::new(&h).join(match var {
                    "PYENV_ROOT" => ".pyenv",
                    "CARGO_HOME" => ".cargo",
                    "RUSTUP_HOME" => ".rustup",
                    _ => ".nvm",
                });
                if dir.is_dir() {
                    cmd.env(var, dir);
                }
            }
        }
    }
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);

    let mut all_ok = true;
    println!("  {:<16} {:<9} what it tried", "attack", "result");
    for (name, want, what) in EXPECTED {
        let got = stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("ATTACK ")
                    .and_then(|r| r.strip_prefix(name))
                    .and_then(|r| r.strip_prefix(' '))
            })
            .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_else(|| "missing".into());
        let good = &got == want;
        all_ok &= good;
        println!(
            "  {:<16} {:<9} {}{}",
            name,
            got,
            what,
            if good { "" } else { "   <-- NOT CONTAINED" }
        );
    }
    // The host's own checks.
    let host = [
        (
            "home .bashrc unchanged",
            std::fs::read_to_string(home.join(".bashrc"))? == bashrc_before,
        ),
        (
            "no git hook planted",
            !ws.join(".git/hooks/post-checkout").exists(),
        ),
        (
            "no .vscode/tasks.json or .mcp.json left",
            !ws.join(".vscode").exists() && !ws.join(".mcp.json").exists(),
        ),
        (
            "nothing written to /usr/local/bin",
            !Path::new("/usr/local/bin/runproof-demo-planted").exists(),
        ),
        ("no daemon outlived the run", !daemon_alive("600.4242")),
        (
            "build finished inside the sandbox",
            stdout.contains("build finished"),
        ),
    ];
    println!();
    for (what, good) in &host {
        all_ok &= *good;
        println!(
            "  host check: {:<42} {}",
            what,
            if *good { "ok" } else { "FAILED" }
        );
    }
    let events = std::fs::read_to_string(&audit).unwrap_or_default();
    let count = |kind: &str| {
        events
            .lines()
            .filter(|l| l.contains(&format!("\"event\":\"{kind}\"")))
            .count()
    };
    println!(
        "\n  audit log: {} execs, {} connects, {} denials recorded ({} lines)",
        count("exec"),
        count("connect"),
        count("denied"),
        events.lines().count()
    );
    for l in stderr.lines().filter(|l| l.starts_with("runproof:")) {
        println!("  {l}");
    }
    println!(
        "\n{}",
        if all_ok {
            "Every attack was contained."
        } else {
            "SOME ATTACKS WERE NOT CONTAINED: see the lines marked above."
        }
    );
    let _ = std::fs::remove_dir_all(&root);
    Ok(all_ok)
}

fn daemon_alive(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
}

fn tempdir() -> std::io::Result<std::path::PathBuf> {
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let p = base.join(format!("runproof-demo-{}-{i}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(std::io::Error::other("cannot create a temporary directory"))
}
