//! The supervisor: turns a [`RunSpec`] into a running sandbox, watches it,
//! and reports how it ended.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::audit::{AuditLog, Event};
use crate::cgroup::{self, Cgroup, CgroupLimits};
use crate::child::{self, ChildSpec};
use crate::error::SandboxError;
use crate::guard::{self, Snapshot};
use crate::ipc::{self, tag};
use crate::landlock_layer;
use crate::mounts::{self, Op, Plan};
use crate::notify::{self, ConnectPolicy};
use crate::policy::{NetworkMode, Policy};
use crate::pty;
use crate::report::{ExitReport, LayerState, LayerStatus, exit};
use crate::seccomp;

/// Where the command's standard streams go.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The command shares runproof's stdin/stdout/stderr. When stdin is a
    /// terminal, the command gets a private pty relayed to it instead, so it
    /// can be interactive without access to the host's terminal.
    #[default]
    Inherit,
    /// Like `Inherit`, but never a pty.
    InheritNoPty,
    /// Explicit descriptors (`None` keeps runproof's own).
    Fds {
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
}

/// Lets another thread end a run (for example the LLM gateway when the
/// budget is spent). The supervisor checks it every 200 ms at most.
#[derive(Debug, Default)]
pub struct StopSignal {
    reason: std::sync::Mutex<Option<String>>,
}

impl StopSignal {
    /// Ask the run to stop; the first reason given is kept.
    pub fn stop(&self, reason: impl Into<String>) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason.into());
        }
    }

    pub fn reason(&self) -> Option<String> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }
}

/// Callback that receives the loopback listeners bound inside the sandbox.
pub type ListenerHook = Box<dyn FnOnce(Vec<TcpListener>) + Send>;

/// Called on every turn of the supervisor's loop (every 200 ms at most)
/// with the sandbox's cgroup accounting while the command runs: the seam for
/// live compute metering. It can end the run through a [`StopSignal`].
pub type TickHook = Box<dyn FnMut(&crate::cgroup::Stats) + Send>;

/// Decides, while the sandbox is being set up, whether its command may
/// start: the pre-run scan's seam. It runs on the supervisor's thread in
/// parallel with the namespaces and mounts; the command waits, fully
/// confined, just before `execve`. `Err(why)` ends the run without the
/// command having run ([`SandboxError::Refused`]).
pub type ExecGate = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// One sandboxed run.
pub struct RunSpec {
    pub policy: Policy,
    pub command: Vec<OsString>,
    /// JSON-lines audit log path.
    pub audit: Option<PathBuf>,
    /// An audit log the caller opened (to add its own events, e.g. the
    /// proxy's); takes precedence over `audit`.
    pub audit_log: Option<AuditLog>,
    /// Copy-on-write: the workspace is the lower layer, changes go here.
    pub overlay: Option<PathBuf>,
    /// The overlay's upper layer is used once and thrown away (the verifier's
    /// per-instance layers): mount it `volatile`, so the end of the run does
    /// not sync the upper layer's whole file system and copy-up does not
    /// fsync. The kernel refuses to mount a volatile upper a second time.
    pub overlay_volatile: bool,
    /// TCP ports to listen on at 127.0.0.1 inside the sandbox; the sockets
    /// are handed to `on_listeners` (the egress proxy's seam).
    pub listen_ports: Vec<u16>,
    pub on_listeners: Option<ListenerHook>,
    /// Ends the run when signalled (exit status 124, `stopped` says why).
    pub stop: Option<std::sync::Arc<StopSignal>>,
    /// Live accounting: asks for a cgroup (for its CPU and memory figures)
    /// even without a memory or process limit, and is called with its stats
    /// on every supervisor tick. Without a cgroup it is never called, and the
    /// `accounting` layer says so.
    pub on_tick: Option<TickHook>,
    /// Must pass before the command is exec'd (see [`ExecGate`]).
    pub gate: Option<ExecGate>,
    /// Variables set by runproof itself (e.g. proxy settings); they are not
    /// subject to the credential filter.
    pub extra_env: BTreeMap<String, String>,
    pub stdio: Stdio,
}

impl RunSpec {
    pub fn new(policy: Policy, command: Vec<OsString>) -> RunSpec {
        RunSpec {
            policy,
            command,
            audit: None,
            audit_log: None,
            overlay: None,
            overlay_volatile: false,
            listen_ports: Vec::new(),
            on_listeners: None,
            stop: None,
            on_tick: None,
            gate: None,
            extra_env: BTreeMap::new(),
            stdio: Stdio::Inherit,
        }
    }
}

/// The outcome of a run that started.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub exit: ExitReport,
    pub layers: Vec<LayerStatus>,
    /// Environment variables refused as credentials.
    pub refused_env: Vec<String>,
    /// Where quarantined protected-path changes went, when any did.
    pub quarantine: Option<PathBuf>,
    /// How long each phase of the run took, in order (for `--verbose`).
    pub phases: Vec<(&'static str, Duration)>,
}

/// Records the time at which each phase of a run ended.
struct Phases {
    last: Instant,
    list: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.list.push((name, now - self.last));
        self.last = now;
    }
}

/// Paths that may never be the workspace: they would expose the system or
/// the user's secrets read-write.
fn check_workspace(ws: &Path, home: Option<&Path>) -> Result<(), SandboxError> {
    let forbidden = [
        "/", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/opt", "/var", "/tmp", "/home",
        "/root", "/proc", "/sys", "/dev", "/run", "/boot",
    ];
    let bad =
        forbidden.iter().any(|f| ws == Path::new(f)) || home.is_some_and(|h| h.starts_with(ws));
    if bad {
        return Err(SandboxError::Unsupported {
            what: format!("workspace {}", ws.display()),
            detail: "is a system directory, or your home directory or one of its parents, which hold credentials".into(),
            hint: "run from a project directory, or pass --workspace DIR".into(),
        });
    }
    Ok(())
}

fn host_home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .filter(|h| h.is_absolute() && h != Path::new("/"))
}

fn cstring(s: impl AsRef<[u8]>, what: &str) -> Result<CString, SandboxError> {
    CString::new(s.as_ref()).map_err(|_| SandboxError::Setup {
        step: "prepare".into(),
        detail: format!("{what} contains a NUL byte"),
        hint: None,
    })
}

struct Prepared {
    plan: Plan,
    landlock: landlock_layer::Rules,
    home: PathBuf,
    protected_ro: usize,
}

fn build_plan(
    policy: &Policy,
    ws: &Path,
    overlay: Option<(&Path, &Path, bool)>,
    snapshot: Option<&Snapshot>,
    protected: &[PathBuf],
) -> Result<Prepared, SandboxError> {
    let host_home = host_home();
    let mut plan = Plan::default();
    let mut ll = landlock_layer::Rules::default();
    // Directory listings everywhere: the mount view decides what exists.
    ll.list.push("/".into());
    let tmp = policy.limits.tmp_size.0;

    for p in mounts::SYSTEM_RO {
        let p = Path::new(p);
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(p)
                    .map_err(|e| SandboxError::io(format!("read link {}", p.display()), e))?;
                plan.push(Op::Symlink {
                    target,
                    dst: p.to_path_buf(),
                });
            }
            Ok(_) => {
                plan.push(Op::same_path(p, false));
                ll.read.push(p.to_path_buf());
            }
            Err(_) => {}
        }
    }
    for s in mounts::ETC_SECRETS {
        mask(&mut plan, &Path::new("/etc").join(s));
    }
    // Private /tmp, /run, /dev/shm and home.
    plan.push(Op::Tmpfs {
        dst: "/tmp".into(),
        size: tmp,
        mode: 0o1777,
        read_only: false,
    });
    plan.push(Op::Tmpfs {
        dst: "/run".into(),
        size: 1 << 20,
        mode: 0o755,
        read_only: false,
    });
    plan.push(Op::Symlink {
        target: "../tmp".into(),
        dst: "/var/tmp".into(),
    });
    ll.write.extend(["/tmp".into(), "/run".into()]);
    let home = host_home
        .clone()
        .unwrap_or_else(|| PathBuf::from("/home/sandbox"));
    plan.push(Op::Tmpfs {
        dst: home.clone(),
        size: tmp,
        mode: 0o700,
        read_only: false,
    });
    ll.write.push(home.clone());

    // /dev and /proc.
    plan.push(Op::Tmpfs {
        dst: "/dev".into(),
        size: 64 << 10,
        mode: 0o755,
        read_only: false,
    });
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        let p = Path::new("/dev").join(d);
        if p.exists() {
            plan.push(Op::Bind {
                src: p.clone(),
                dst: p.clone(),
                write: true,
                dev: true,
            });
        }
    }
    plan.push(Op::Devpts {
        dst: "/dev/pts".into(),
    });
    plan.push(Op::Symlink {
        target: "pts/ptmx".into(),
        dst: "/dev/ptmx".into(),
    });
    plan.push(Op::Tmpfs {
        dst: "/dev/shm".into(),
        size: tmp,
        mode: 0o1777,
        read_only: false,
    });
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        plan.push(Op::Symlink {
            target: target.into(),
            dst: Path::new("/dev").join(name),
        });
    }
    ll.devices.push("/dev".into());
    ll.write.push("/dev/shm".into());
    plan.push(Op::Proc {
        dst: "/proc".into(),
    });
    for p in ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"] {
        plan.push(Op::ReadOnlyInPlace { dst: p.into() });
    }
    ll.read.push("/proc".into());

    // Toolchains from the home directory, read-only, credentials hidden.
    for tc in &policy.toolchains {
        if let Some(dir) = tc.locate(host_home.as_deref()) {
            let dir = dir.canonicalize().unwrap_or(dir);
            plan.push(Op::same_path(&dir, false));
            ll.read.push(dir.clone());
            for s in tc.secrets() {
                mask(&mut plan, &dir.join(s));
            }
        }
    }

    // The workspace.
    match overlay {
        Some((upper, work, volatile)) => plan.push(Op::Overlay {
            lower: ws.to_path_buf(),
            upper: upper.to_path_buf(),
            work: work.to_path_buf(),
            dst: ws.to_path_buf(),
            volatile,
        }),
        None => plan.push(Op::same_path(ws, true)),
    }
    ll.write.push(ws.to_path_buf());
    let mut protected_ro = 0;
    if let Some(snap) = snapshot {
        for rel in snap.existing_mountable(protected) {
            plan.push(Op::ReadOnlyInPlace { dst: ws.join(rel) });
            protected_ro += 1;
        }
    }

    // Extra rules.
    for (paths, write) in [(&policy.paths.read, false), (&policy.paths.write, true)] {
        for p in paths {
            let p = absolute(p)?;
            plan.push(Op::same_path(&p, write));
            if write {
                ll.write.push(p)
            } else {
                ll.read.push(p)
            }
        }
    }
    for p in &policy.paths.deny {
        mask(&mut plan, &absolute(p)?);
    }
    plan.sort();
    Ok(Prepared {
        plan,
        landlock: ll,
        home,
        protected_ro,
    })
}

fn absolute(p: &Path) -> Result<PathBuf, SandboxError> {
    let c = p.canonicalize().map_err(|e| SandboxError::Unsupported {
        what: format!("path rule {}", p.display()),
        detail: e.to_string(),
        hint: "path rules must name existing host paths".into(),
    })?;
    Ok(c)
}

/// Hide a host path if it exists: an empty file over a file, an empty
/// read-only tmpfs over a directory.
fn mask(plan: &mut Plan, p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => plan.push(Op::Tmpfs {
            dst: p.to_path_buf(),
            size: 4096,
            mode: 0o755,
            read_only: true,
        }),
        Ok(_) => plan.push(Op::MaskFile {
            dst: p.to_path_buf(),
        }),
        Err(_) => {}
    }
}

fn env_map() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The workspace a policy names (default: the current directory), resolved
/// and checked: an existing directory that is neither a system directory nor
/// the home directory or one of its parents.
pub fn resolve_workspace(policy: &Policy) -> Result<PathBuf, SandboxError> {
    let ws_raw = match &policy.workspace {
        Some(w) => w.clone(),
        None => std::env::current_dir().map_err(|e| SandboxError::io("current directory", e))?,
    };
    let ws = ws_raw
        .canonicalize()
        .map_err(|e| SandboxError::Unsupported {
            what: format!("workspace {}", ws_raw.display()),
            detail: e.to_string(),
            hint: "pass an existing directory with --workspace".into(),
        })?;
    if !ws.is_dir() {
        return Err(SandboxError::Unsupported {
            what: format!("workspace {}", ws.display()),
            detail: "is not a directory".into(),
            hint: "pass a directory with --workspace".into(),
        });
    }
    check_workspace(&ws, host_home().as_deref())?;
    Ok(ws)
}

/// Run a command in a sandbox. Returns when the command and everything it
/// started are gone.
pub fn run(mut spec: RunSpec) -> Result<RunOutcome, SandboxError> {
    let start = Instant::now();
    let mut phases = Phases {
        last: start,
        list: Vec::new(),
    };
    if spec.command.is_empty() {
        return Err(SandboxError::Policy(crate::error::PolicyError::Invalid(
            "no command given: put it after `--`".into(),
        )));
    }
    let policy = spec.policy.clone();
    let ws = resolve_workspace(&policy)?;

    let mut layers = Vec::new();
    // Overlay directories.
    let overlay_dirs = match &spec.overlay {
        Some(upper) => {
            std::fs::create_dir_all(upper).map_err(|e| {
                SandboxError::io(format!("create overlay dir {}", upper.display()), e)
            })?;
            let upper = upper
                .canonicalize()
                .map_err(|e| SandboxError::io("overlay dir", e))?;
            if upper.starts_with(&ws) {
                return Err(SandboxError::Unsupported {
                    what: format!("overlay dir {}", upper.display()),
                    detail: "is inside the workspace".into(),
                    hint: "put the overlay directory outside the workspace".into(),
                });
            }
            let name = upper
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let work = upper.with_file_name(format!(".{name}.runproof-work"));
            let _ = std::fs::remove_dir_all(&work);
            std::fs::create_dir_all(&work).map_err(|e| {
                SandboxError::io(format!("create overlay work dir {}", work.display()), e)
            })?;
            Some((upper, work))
        }
        None => None,
    };

    // Protected paths (direct mode only: an overlay keeps the host copy untouched).
    let protected = guard::root_paths();
    let snapshot = overlay_dirs
        .is_none()
        .then(|| Snapshot::take(&ws, &protected));

    let prepared = build_plan(
        &policy,
        &ws,
        overlay_dirs
            .as_ref()
            .map(|(u, w)| (u.as_path(), w.as_path(), spec.overlay_volatile)),
        snapshot.as_ref(),
        &protected,
    )?;
    let compiled = prepared.plan.compile()?;
    layers.push(LayerStatus::new(
        "namespaces",
        LayerState::Enforced,
        "user, mount, pid, network, ipc, uts, cgroup",
    ));
    layers.push(LayerStatus::new(
        "file system",
        LayerState::Enforced,
        format!(
            "private root ({} mounts): system read-only, home and /tmp private, workspace {} at {}",
            prepared.plan.ops.len(),
            if overlay_dirs.is_some() {
                "copy-on-write"
            } else {
                "read-write"
            },
            ws.display()
        ),
    ));
    layers.push(LayerStatus::new(
        "protected paths",
        LayerState::Enforced,
        match &snapshot {
            Some(s) => format!(
                "{} read-only; all {} checked and restored after the run{}",
                prepared.protected_ro,
                protected.len(),
                if s.truncated {
                    " (snapshot truncated)"
                } else {
                    ""
                }
            ),
            None => {
                "overlay: changes stay in the upper layer; `runproof apply` refuses protected paths"
                    .into()
            }
        },
    ));
    layers.push(LayerStatus::new(
        "network",
        LayerState::Enforced,
        match policy.network.mode {
            NetworkMode::None => "own namespace, loopback only".to_string(),
            NetworkMode::Proxy => format!(
                "own namespace, loopback only; egress through the proxy on 127.0.0.1:{:?}",
                spec.listen_ports
            ),
        },
    ));

    // Limits. The cgroups are made after the fork, while stage A builds the
    // namespaces; the rlimits must be known before it.
    phases.mark("plan");
    let mut rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)> = vec![(libc::RLIMIT_CORE, 0, 0)];
    let mut rl_desc = vec!["core 0".to_string()];
    if let Some(c) = policy.limits.cpu {
        let s = c.0.ceil() as u64;
        // SIGXCPU at the limit; SIGKILL only if it is ignored for 2 s more.
        rlimits.push((libc::RLIMIT_CPU, s, s + 2));
        rl_desc.push(format!("cpu {s}s per process"));
    }
    if let Some(f) = policy.limits.file_size {
        rlimits.push((libc::RLIMIT_FSIZE, f.0, f.0));
        rl_desc.push(format!("file size {f}"));
    }
    // Stand-ins for the cgroup's limits, set only when no cgroup is made.
    let mut fallback_rlimits = Vec::new();
    let mut fallback_desc = Vec::new();
    if let Some(m) = policy.limits.memory {
        fallback_rlimits.push((libc::RLIMIT_AS, m.0, m.0));
        fallback_desc.push(format!("address space {m} per process"));
    }
    if let Some(p) = policy.limits.pids {
        fallback_rlimits.push((libc::RLIMIT_NPROC, p, p));
        fallback_desc.push(format!(
            "processes {p} for this user (not enforced for root)"
        ));
    }

    // Environment.
    let (mut env, refused_env) = crate::env::build(&env_map(), &policy.env)?;
    env.insert("HOME".into(), prepared.home.display().to_string());
    env.insert("TMPDIR".into(), "/tmp".into());
    env.insert("PWD".into(), ws.display().to_string());
    env.insert("RUNPROOF_SANDBOX".into(), "1".into());
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/bin:/usr/bin:/bin".into());
    env.entry("TERM".into()).or_insert_with(|| "dumb".into());
    for (k, v) in &spec.extra_env {
        env.insert(k.clone(), v.clone());
    }
    let envp = env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}"), "environment"))
        .collect::<Result<Vec<_>, _>>()?;
    let argv = spec
        .command
        .iter()
        .map(|a| cstring(a.as_bytes(), "command"))
        .collect::<Result<Vec<_>, _>>()?;

    // Audit and seccomp.
    let audit = match (spec.audit_log.take(), &spec.audit) {
        (Some(log), _) => log,
        (None, Some(p)) => AuditLog::to_file(p, start)
            .map_err(|e| SandboxError::io(format!("create audit log {}", p.display()), e))?,
        (None, None) => AuditLog::disabled(start),
    };
    let notify_on = audit.is_enabled();
    if notify_on && !notify_supported() {
        return Err(SandboxError::Unsupported {
            what: "audit".into(),
            detail: "--audit needs seccomp user notification, which this kernel lacks".into(),
            hint: "use Linux 5.9 or newer, or run without --audit".into(),
        });
    }
    let filter = seccomp::build(seccomp::FilterOptions { notify: notify_on });
    // The cgroup and rlimit layers go here once the cgroups exist.
    let limits_layer_at = layers.len();
    layers.push(LayerStatus::new(
        "seccomp",
        LayerState::Enforced,
        format!(
            "{} syscalls refused, foreign ABIs killed, namespace clone flags, TIOCSTI and vsock refused{}",
            seccomp::deny_rules().count(),
            if notify_on { "; execve and connect audited by user notification" } else { "" }
        ),
    ));
    layers.push(LayerStatus::new(
        "privileges",
        LayerState::Enforced,
        "no_new_privs, every capability dropped, securebits locked, new session",
    ));

    let use_pty = matches!(spec.stdio, Stdio::Inherit) && pty::stdin_is_tty();
    let interactive = !matches!(spec.stdio, Stdio::Fds { .. });
    let stdio_fds: [Option<OwnedFd>; 3] = match std::mem::take(&mut spec.stdio) {
        Stdio::Fds {
            stdin,
            stdout,
            stderr,
        } => [stdin, stdout, stderr],
        _ => [None, None, None],
    };

    let (sup_sock, child_sock) = ipc::pair().map_err(|e| SandboxError::io("socketpair", e))?;
    let hostname = CString::new("runproof").unwrap();
    let cspec = ChildSpec {
        ctrl: child_sock.as_raw_fd(),
        // SAFETY: getuid/getgid cannot fail.
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
        mounts: compiled,
        skeleton_size: 1 << 20,
        hostname,
        listen_ports: spec.listen_ports.clone(),
        pty: use_pty,
        stdio: [
            stdio_fds[0].as_ref().map(|f| f.as_raw_fd()),
            stdio_fds[1].as_ref().map(|f| f.as_raw_fd()),
            stdio_fds[2].as_ref().map(|f| f.as_raw_fd()),
        ],
        cwd: cstring(ws.as_os_str().as_bytes(), "workspace")?,
        argv,
        envp,
        rlimits,
        fallback_rlimits,
        landlock: prepared.landlock.clone(),
        seccomp: filter,
        seccomp_listener: notify_on,
        cpus: child::cpus_to_restore(),
        gated: spec.gate.is_some(),
    };

    // SAFETY: fork; the child only runs `stage_a`, which never returns.
    let pid_a = unsafe { libc::fork() };
    if pid_a < 0 {
        return Err(SandboxError::io("fork", std::io::Error::last_os_error()));
    }
    if pid_a == 0 {
        child::stage_a(&cspec);
    }
    if let Some(cpus) = &cspec.cpus {
        child::place_apart(pid_a, cpus);
    }
    drop(child_sock);
    drop(stdio_fds);
    let guard_a = KillOnDrop(pid_a);
    // SAFETY: pidfd_open on our own child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid_a, 0) } as RawFd;
    if pidfd < 0 {
        return Err(SandboxError::io(
            "pidfd_open (needs Linux 5.3)",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a fresh descriptor we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };

    phases.mark("fork");
    // The cgroups, while stage A unshares (on the other core, given one).
    let mut limit_layers = Vec::with_capacity(2);
    let (cg, cg_layer) = limit_cgroup(&policy, spec.on_tick.is_some())?;
    limit_layers.push(cg_layer);
    if cg.is_none() {
        rl_desc.extend(fallback_desc);
    }
    limit_layers.push(LayerStatus::new(
        "rlimits",
        LayerState::Enforced,
        rl_desc.join(", "),
    ));
    layers.splice(limits_layer_at..limits_layer_at, limit_layers);
    let entry = match &cg {
        Some(c) => Some(
            c.entry()
                .map_err(|e| SandboxError::io("open the sandbox's cgroups", e))?,
        ),
        None => None,
    };
    if let Err(e) = child::send_entry(sup_sock.as_raw_fd(), entry.as_ref()) {
        // A stage A that is already gone said why; the loop below reads it.
        if e.raw_os_error() != Some(libc::EPIPE) {
            return Err(SandboxError::io("hand the cgroups to the sandbox", e));
        }
    }
    drop(entry);
    phases.mark("cgroup create");
    let mut on_tick = spec.on_tick.take();
    if on_tick.is_some() {
        let live = cg.as_ref().map(|c| (c.placement(), c.accounts_cpu()));
        layers.push(match live {
            Some((p, true)) => LayerStatus::new(
                "accounting",
                LayerState::Enforced,
                format!("CPU time and memory read live from the cgroups ({p})"),
            ),
            Some((p, false)) => LayerStatus::new(
                "accounting",
                LayerState::Partial,
                format!("memory read live from the cgroups ({p}); no CPU accounting, so CPU time is counted from rusage when the run ends"),
            ),
            None => LayerStatus::new(
                "accounting",
                LayerState::Unavailable,
                "no cgroup: CPU time and memory are counted from rusage when the run ends, not live",
            ),
        });
    }
    let mut sup = Supervisor {
        sock: sup_sock,
        pidfd,
        init_pid: None,
        audit: audit.clone(),
        connect: ConnectPolicy {
            loopback_only: true,
        },
        layers,
        started: false,
        exit_msg: None,
        setup_error: None,
        pty: None,
        on_listeners: spec.on_listeners.take(),
        notify_thread: None,
        listener: None,
        notify_stop: None,
    };
    // The gate (the pre-run scan) runs while the sandbox builds itself; the
    // command waits for GO before execve. The timeout starts after it.
    let mut timed_from = start;
    if let Some(gate) = spec.gate.take() {
        if let Err(why) = gate() {
            sup.kill_all(cg.as_ref());
            drop(guard_a);
            return Err(SandboxError::Refused(why));
        }
        if let Err(e) = ipc::send(sup.sock.as_raw_fd(), tag::GO, &[], &[]) {
            // A sandbox already gone said why; the loop below reads it.
            if e.raw_os_error() != Some(libc::EPIPE) {
                sup.kill_all(cg.as_ref());
                return Err(SandboxError::io("let the command start", e));
            }
        }
        timed_from = Instant::now();
        phases.mark("gate");
    }
    let deadline = policy.limits.timeout.map(|t| timed_from + t.duration());
    let cpu_limit_ns = policy.limits.cpu.map(|c| (c.0 * 1e9) as u64);
    let signals = interactive.then(|| pty::SignalWatch::new(use_pty));
    let sig_fd = signals.as_ref().map_or(-1, |s| s.fd());
    let mut timed_out = false;
    let mut stopped: Option<String> = None;
    let mut cpu_exceeded = false;
    let mut interrupts = 0;
    let mut forked = false;

    // Announce the start once the command is about to exec.
    let start_event = |sup: &Supervisor| Event::Start {
        command: spec
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        workspace: ws.display().to_string(),
        policy: serde_json::to_value(&policy).unwrap_or_default(),
        layers: sup.layers.clone(),
    };

    loop {
        let now = Instant::now();
        let mut wait_ms: i32 = 200;
        if let Some(d) = deadline {
            if now >= d {
                timed_out = true;
                sup.kill_all(cg.as_ref());
                break;
            }
            wait_ms = wait_ms.min(d.saturating_duration_since(now).as_millis().max(1) as i32);
        }
        let mut fds = [
            libc::pollfd {
                fd: sup.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sup.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sig_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, wait_ms) };
        if n < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            let was_started = sup.started;
            sup.read_message();
            if sup.init_pid.is_some() && !forked {
                forked = true;
                phases.mark("user namespace");
            }
            if sup.started && !was_started {
                phases.mark("mounts and confinement");
                audit.record(&start_event(&sup));
                sup.start_notify();
            }
        }
        if fds[2].revents != 0 {
            for sig in signals.as_ref().map(|s| s.read()).unwrap_or_default() {
                if sig == libc::SIGWINCH {
                    if let Some(p) = &sup.pty {
                        p.resize();
                    }
                    continue;
                }
                interrupts += 1;
                if interrupts > 1 {
                    sup.kill_all(cg.as_ref());
                } else if let Some(init) = sup.init_pid {
                    // SAFETY: signal the sandbox's init, which forwards it.
                    unsafe { libc::kill(init, sig) };
                }
            }
        }
        if fds[1].revents != 0 {
            break;
        }
        // One read of the cgroup's figures per turn, for the tick hook and
        // the CPU limit alike.
        let stats = cg
            .as_ref()
            .filter(|_| on_tick.is_some() || cpu_limit_ns.is_some())
            .map(|c| c.stats());
        if let (Some(tick), Some(st)) = (on_tick.as_mut(), &stats) {
            tick(st);
        }
        if let Some(reason) = spec.stop.as_ref().and_then(|s| s.reason()) {
            stopped = Some(reason);
            sup.kill_all(cg.as_ref());
            break;
        }
        if let (Some(limit), Some(st)) = (cpu_limit_ns, &stats) {
            if st.cpu_ns.is_some_and(|ns| ns > limit) {
                cpu_exceeded = true;
                sup.kill_all(cg.as_ref());
            }
        }
    }
    // Drain messages the sandbox sent before it ended (EXIT, late errors).
    while sup.poll_message(0) {}
    phases.mark("command");
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaping our own child.
    unsafe { libc::wait4(pid_a, &mut status, 0, &mut ru) };
    std::mem::forget(guard_a);
    let wall = start.elapsed();
    // Everything the run started is gone with its PID namespace; make sure
    // the cgroup is empty before reading the final figures and removing it.
    if let Some(cg) = &cg {
        cg.kill_all();
    }
    if let Some(p) = sup.pty.take() {
        p.finish();
    }
    if let Some(t) = sup.notify_thread.take() {
        // Every sandboxed process is gone: stop the thread.
        drop(sup.notify_stop.take());
        let _ = t.join();
    }

    if let Some((step, detail)) = sup.setup_error.clone() {
        if step != "exec" {
            return Err(setup_error(&step, &detail));
        }
    }
    if !sup.started && sup.setup_error.is_none() {
        return Err(SandboxError::Setup {
            step: "start".into(),
            detail: "the sandbox ended before the command started".into(),
            hint: None,
        });
    }

    let stats = cg.as_ref().map(|c| c.stats()).unwrap_or_default();
    let (code, signal) = match sup.exit_msg {
        Some((c, s)) => (
            if s == 0 { Some(c) } else { None },
            if s != 0 { Some(s) } else { None },
        ),
        None if libc::WIFEXITED(status) => (Some(libc::WEXITSTATUS(status)), None),
        None => (None, Some(libc::SIGKILL)),
    };
    let (code, signal) = if timed_out || cpu_exceeded || stopped.is_some() {
        (None, Some(libc::SIGKILL))
    } else {
        (code, signal)
    };
    // Any OOM kill in the sandbox counts, even when a shell reaped the
    // victim and exited on its own; a run that still succeeded keeps its 0.
    let oom_killed = stats.oom_kills > 0 && code != Some(0);
    let exit_status = if timed_out || stopped.is_some() {
        exit::TIMEOUT
    } else if cpu_exceeded || signal == Some(libc::SIGXCPU) {
        exit::CPU
    } else if oom_killed {
        exit::OOM
    } else if let Some(c) = code {
        c
    } else {
        128 + signal.unwrap_or(libc::SIGKILL)
    };
    let (peak, peak_src) = match (stats.peak_memory, &cg) {
        (Some(p), Some(cg)) => (
            Some(p),
            cg.memory_version()
                .map_or("cgroup".to_string(), |v| v.to_string()),
        ),
        _ => (
            Some(ru.ru_maxrss as u64 * 1024),
            "rusage (largest single process)".to_string(),
        ),
    };

    // Protected paths: restore what the run changed.
    let mut restored = Vec::new();
    let mut quarantine = None;
    if let Some(snap) = &snapshot {
        let q = quarantine_dir();
        match snap.restore(&protected, &q) {
            Ok(r) if !r.is_empty() => {
                for p in &r {
                    audit.record(&Event::Denied {
                        pid: None,
                        operation: "write protected path".into(),
                        detail: format!(
                            "{p}: changed by the run; restored, the run's version moved to {}",
                            q.display()
                        ),
                    });
                }
                restored = r;
                quarantine = Some(q);
            }
            Ok(_) => {}
            Err(e) => {
                return Err(SandboxError::io(
                    format!("restore protected paths in {}", ws.display()),
                    e,
                ));
            }
        }
    }
    if let Some((_, work)) = &overlay_dirs {
        let _ = std::fs::remove_dir_all(work);
    }

    // Remove the cgroups now, so the teardown phase shows what it costs.
    drop(cg);
    phases.mark("teardown");
    let report = ExitReport {
        code,
        signal,
        exit_status,
        timed_out,
        stopped,
        oom_killed,
        cpu_limit_exceeded: cpu_exceeded,
        wall_s: wall.as_secs_f64(),
        user_cpu_s: tv(ru.ru_utime),
        system_cpu_s: tv(ru.ru_stime),
        peak_memory_bytes: peak,
        peak_memory_source: peak_src,
        restored,
    };
    audit.record(&Event::Exit(report.clone()));
    if let Some(e) = audit.write_error() {
        return Err(SandboxError::io(
            "write audit log",
            std::io::Error::other(e),
        ));
    }
    if let Some((step, detail)) = sup.setup_error {
        if step == "exec" {
            eprintln!(
                "runproof: cannot execute {}: {detail}",
                spec.command[0].to_string_lossy()
            );
        }
    }
    Ok(RunOutcome {
        exit: report,
        layers: sup.layers,
        refused_env,
        quarantine,
        phases: phases.list,
    })
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

fn quarantine_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| host_home().map(|h| h.join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    base.join("runproof/quarantine")
        .join(format!("{stamp}-{}", std::process::id()))
}

pub fn notify_supported() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
        .is_ok_and(|s| s.split_whitespace().any(|a| a == "user_notif"))
}

fn setup_error(step: &str, detail: &str) -> SandboxError {
    let hint = if step.starts_with("unshare") || step.starts_with("write uid_map") {
        Some(userns_hint())
    } else if step.contains("overlay") {
        Some("overlayfs in a user namespace needs Linux 5.11; the overlay directory must be on a file system with user xattrs (ext4, xfs, btrfs, tmpfs on 6.6+)".to_string())
    } else if step == "mount /proc" {
        Some("a fresh /proc cannot be mounted when the host's /proc is partly hidden (as inside some containers); run runproof on the host or in a privileged container".to_string())
    } else {
        None
    };
    SandboxError::Setup {
        step: step.to_string(),
        detail: detail.to_string(),
        hint,
    }
}

/// Why user namespaces might be refused, read from this kernel's settings.
pub fn userns_hint() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return "AppArmor restricts unprivileged user namespaces (Ubuntu 23.10+): `sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0`, or install an AppArmor profile for runproof with `userns,`".into();
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return "unprivileged user namespaces are disabled: `sudo sysctl kernel.unprivileged_userns_clone=1`".into();
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return "user namespaces are disabled: `sudo sysctl user.max_user_namespaces=15000`".into();
    }
    "user namespaces are refused here (inside a container without CAP_SYS_ADMIN or a seccomp profile that blocks unshare?); run on the host or allow unshare(CLONE_NEWUSER)".into()
}

/// The sandbox's cgroups for the policy's memory and process limits (and
/// for live figures when `live_stats`), with the layer report. No cgroup
/// is an error only when the policy requires one.
fn limit_cgroup(
    policy: &Policy,
    live_stats: bool,
) -> Result<(Option<Cgroup>, LayerStatus), SandboxError> {
    let limits = &policy.limits;
    if limits.memory.is_none() && limits.pids.is_none() && !live_stats {
        let off = LayerStatus::new(
            "cgroup",
            LayerState::Off,
            "no memory or process limit requested",
        );
        return Ok((None, off));
    }
    let support = cgroup::detect();
    let wanted = CgroupLimits {
        memory: limits.memory.map(|m| m.0),
        pids: limits.pids,
    };
    match Cgroup::create(&support, wanted) {
        Ok(cg) => {
            let detail = format!(
                "{}; limits: memory {}, pids {}",
                cg.placement(),
                limits.memory.map_or("unlimited".into(), |m| m.to_string()),
                limits.pids.map_or("unlimited".into(), |p| p.to_string())
            );
            Ok((Some(cg), LayerStatus::new("cgroup", LayerState::Enforced, detail)))
        }
        Err(e) if limits.require_cgroup.unwrap_or(false) => Err(SandboxError::Unsupported {
            what: "cgroup limits".into(),
            detail: format!("{e} ({})", support.describe()),
            hint: "run as root, or in a delegated cgroup v2 (`systemd-run --user --scope -p Delegate=yes runproof run ...`), or drop --memory/--pids".into(),
        }),
        Err(e) => {
            let detail = format!(
                "{e}; falling back to per-process rlimits ({})",
                support.describe()
            );
            Ok((None, LayerStatus::new("cgroup", LayerState::Unavailable, detail)))
        }
    }
}

struct KillOnDrop(i32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill and reap our own child on an error path.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

struct Supervisor {
    sock: OwnedFd,
    pidfd: OwnedFd,
    init_pid: Option<i32>,
    audit: AuditLog,
    connect: ConnectPolicy,
    layers: Vec<LayerStatus>,
    started: bool,
    exit_msg: Option<(i32, i32)>,
    setup_error: Option<(String, String)>,
    pty: Option<pty::Relay>,
    on_listeners: Option<ListenerHook>,
    notify_thread: Option<std::thread::JoinHandle<()>>,
    /// The seccomp listener, held until the start event is written.
    listener: Option<OwnedFd>,
    /// Closing this ends the notification thread.
    notify_stop: Option<OwnedFd>,
}

impl Supervisor {
    fn poll_message(&mut self, timeout_ms: i32) -> bool {
        let mut fd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut fd, 1, timeout_ms) };
        if n <= 0 || fd.revents & libc::POLLIN == 0 {
            return false;
        }
        self.read_message()
    }

    fn read_message(&mut self) -> bool {
        let Ok(Some(msg)) = ipc::recv(&self.sock) else {
            return false;
        };
        match msg.tag {
            tag::INIT_PID if msg.payload.len() >= 4 => {
                self.init_pid = Some(i32::from_ne_bytes(msg.payload[..4].try_into().unwrap()));
                if let Some(pid) = self.init_pid {
                    // Keep the init out of the OOM killer's reach when we can
                    // (root only); its death would end the run.
                    let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), "-1000");
                }
            }
            tag::CGROUP => {
                let how = String::from_utf8_lossy(&msg.payload).into_owned();
                if let Some(l) = self.layers.iter_mut().find(|l| l.layer == "cgroup") {
                    l.detail = format!("{}; entered: {how}", l.detail);
                }
            }
            tag::ERROR => {
                let mut parts = msg.payload.splitn(2, |&b| b == 0);
                let step = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                let detail = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                self.setup_error.get_or_insert((step, detail));
            }
            // Sent before SECCOMP_FD/READY on the same ordered socket, so
            // the layer is listed by the time the start event is written.
            tag::LANDLOCK => {
                let l = String::from_utf8_lossy(&msg.payload).into_owned();
                let state = if l.starts_with("enforced") {
                    LayerState::Enforced
                } else if l.starts_with("partial") {
                    LayerState::Partial
                } else {
                    LayerState::Unavailable
                };
                self.layers.push(LayerStatus::new("landlock", state, l));
            }
            tag::SECCOMP_FD => {
                let mut fds = msg.fds;
                self.listener = fds.pop();
                self.mark_started();
            }
            tag::READY => self.mark_started(),
            tag::PTY => {
                if let Some(master) = msg.fds.into_iter().next() {
                    self.pty = pty::Relay::start(master).ok();
                }
            }
            tag::LISTENERS => {
                let listeners: Vec<TcpListener> =
                    msg.fds.into_iter().map(TcpListener::from).collect();
                if let Some(hook) = self.on_listeners.take() {
                    hook(listeners);
                }
            }
            tag::EXIT if msg.payload.len() >= 8 => {
                let c = i32::from_ne_bytes(msg.payload[..4].try_into().unwrap());
                let s = i32::from_ne_bytes(msg.payload[4..8].try_into().unwrap());
                self.exit_msg = Some((c, s));
            }
            _ => {}
        }
        true
    }

    fn mark_started(&mut self) {
        self.started = true;
    }

    fn start_notify(&mut self) {
        let Some(fd) = self.listener.take() else {
            return;
        };
        let audit = self.audit.clone();
        let connect = self.connect;
        let Ok((stop_r, stop_w)) = pty::pipe() else {
            return;
        };
        self.notify_stop = Some(stop_w);
        self.notify_thread = Some(std::thread::spawn(move || {
            notify::serve(fd, stop_r, audit, connect)
        }));
    }

    fn kill_all(&self, cg: Option<&Cgroup>) {
        // SAFETY: SIGKILL to the init (ends the PID namespace) and stage A.
        unsafe {
            if let Some(init) = self.init_pid {
                libc::kill(init, libc::SIGKILL);
            }
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<u8>(),
                0,
            );
        }
        if let Some(cg) = cg {
            cg.kill_all();
        }
    }
}
