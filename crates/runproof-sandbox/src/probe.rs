//! `runproof doctor`: what each enforcement layer can do on this kernel.
//!
//! Every check runs the real mechanism (a forked child unshares namespaces,
//! mounts an overlay, installs a filter) rather than reading version numbers,
//! so the answer holds for this machine, its sysctls and its LSMs.

use std::ffi::CString;

use crate::cgroup;
use crate::landlock_layer;
use crate::report::{LayerState, LayerStatus};

/// Run `f` in a forked child; true when it returns true. The child is killed
/// if it takes more than two seconds.
fn in_child(f: impl FnOnce() -> bool) -> bool {
    // SAFETY: fork; the child only runs `f` and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return false;
    }
    if pid == 0 {
        let ok = f();
        // SAFETY: leave the forked child without unwinding.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    for _ in 0..200 {
        // SAFETY: polling our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: kill and reap a stuck child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
    false
}

fn userns_and_map() -> bool {
    // SAFETY: getuid/getgid/unshare in a single-threaded child.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } < 0 {
        return false;
    }
    let _ = std::fs::write("/proc/self/setgroups", "deny");
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1\n")).is_ok()
        && std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1\n")).is_ok()
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn overlay_in_userns() -> bool {
    if !userns_and_map() {
        return false;
    }
    // SAFETY: mount calls with valid C strings, in our private namespace.
    unsafe {
        let none = c("");
        if libc::mount(
            std::ptr::null(),
            c("/").as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) < 0
        {
            return false;
        }
        if libc::mount(
            c("tmpfs").as_ptr(),
            c("/tmp").as_ptr(),
            c("tmpfs").as_ptr(),
            0,
            std::ptr::null(),
        ) < 0
        {
            return false;
        }
        for d in ["/tmp/l", "/tmp/u", "/tmp/w", "/tmp/m"] {
            libc::mkdir(c(d).as_ptr(), 0o755);
        }
        let _ = none;
        let data = c("lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w,userxattr");
        libc::mount(
            c("overlay").as_ptr(),
            c("/tmp/m").as_ptr(),
            c("overlay").as_ptr(),
            0,
            data.as_ptr().cast(),
        ) == 0
    }
}

fn all_namespaces() -> bool {
    if !userns_and_map() {
        return false;
    }
    // SAFETY: unshare in a single-threaded child.
    unsafe {
        libc::unshare(
            libc::CLONE_NEWPID
                | libc::CLONE_NEWNET
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWCGROUP,
        ) == 0
    }
}

/// Run `/bin/true` in a full sandbox with memory and process limits on an
/// empty workspace; the cgroup layer's report (placement and how the
/// cgroups were entered) on success.
fn limited_run() -> Result<String, String> {
    let ws = std::env::temp_dir().join(format!("runproof-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&ws).map_err(|e| format!("{}: {e}", ws.display()))?;
    let mut policy = crate::Policy {
        workspace: Some(ws.clone()),
        ..crate::Policy::default()
    };
    policy.limits.memory = Some(crate::policy::ByteSize(256 << 20));
    policy.limits.pids = Some(64);
    policy.limits.require_cgroup = Some(true);
    let mut spec = crate::RunSpec::new(policy, vec!["/bin/true".into()]);
    spec.stdio = crate::Stdio::Fds {
        stdin: None,
        stdout: std::fs::File::create("/dev/null").ok().map(Into::into),
        stderr: None,
    };
    let out = crate::run(spec);
    let _ = std::fs::remove_dir_all(&ws);
    let out = out.map_err(|e| e.to_string())?;
    if out.exit.exit_status != 0 {
        return Err(format!("/bin/true exited {}", out.exit.exit_status));
    }
    out.layers
        .into_iter()
        .find(|l| l.layer == "cgroup" && l.state == LayerState::Enforced)
        .map(|l| l.detail)
        .ok_or_else(|| "the run reported no enforced cgroup layer".to_string())
}

/// Check every layer. Cheap enough to run before each sandbox, but meant
/// for `runproof doctor`.
pub fn doctor() -> Vec<LayerStatus> {
    let mut out = Vec::new();
    let userns = in_child(userns_and_map);
    out.push(if userns {
        LayerStatus::new(
            "user namespace",
            LayerState::Enforced,
            "unprivileged user namespaces work; the sandbox maps your own uid and gid only",
        )
    } else {
        LayerStatus::new(
            "user namespace",
            LayerState::Unavailable,
            format!(
                "cannot create a user namespace: {}",
                crate::run::userns_hint()
            ),
        )
    });
    let ns = userns && in_child(all_namespaces);
    out.push(LayerStatus::new(
        "namespaces",
        if ns {
            LayerState::Enforced
        } else {
            LayerState::Unavailable
        },
        if ns {
            "mount, pid, network (loopback only), ipc, uts and cgroup namespaces"
        } else {
            "cannot create mount/pid/network/ipc/uts/cgroup namespaces"
        },
    ));
    let ov = userns && in_child(overlay_in_userns);
    out.push(LayerStatus::new(
        "overlayfs",
        if ov { LayerState::Enforced } else { LayerState::Unavailable },
        if ov { "overlayfs mounts in a user namespace: `--overlay` works" } else { "overlayfs in a user namespace is not available (needs Linux 5.11): `--overlay` will refuse to run" },
    ));
    let abi = landlock_layer::kernel_abi();
    out.push(if abi > 0 {
        LayerStatus::new("landlock", LayerState::Enforced, format!("ABI {abi}: file-system rules{}{}", if abi >= 5 { ", device ioctls" } else { "" }, if abi >= 6 { ", abstract unix socket and signal scoping" } else { "" }))
    } else {
        LayerStatus::new("landlock", LayerState::Unavailable, "no Landlock: enable CONFIG_SECURITY_LANDLOCK and add `landlock` to the lsm= boot parameter; mounts still confine the file system")
    });
    let seccomp_ok = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").is_ok();
    let notif = crate::run::notify_supported();
    out.push(LayerStatus::new(
        "seccomp",
        if seccomp_ok {
            LayerState::Enforced
        } else {
            LayerState::Unavailable
        },
        format!(
            "{} syscalls refused{}",
            crate::seccomp::deny_rules().count(),
            if notif {
                "; user notification available: --audit logs every exec and connect"
            } else {
                "; no user notification: --audit is refused"
            }
        ),
    ));
    let cg = cgroup::detect();
    let limits = cg.memory().is_some() && cg.pids().is_some();
    let status = if !limits {
        LayerStatus::new(
            "cgroup",
            if cg.memory().is_some() || cg.pids().is_some() || cg.cpu().is_some() {
                LayerState::Partial
            } else {
                LayerState::Unavailable
            },
            format!(
                "{} ({}): missing limits fall back to rlimits, and --memory/--pids refuse to run without their controller",
                cg.placement(),
                cg.describe()
            ),
        )
    } else if !(userns && ns) {
        LayerStatus::new(
            "cgroup",
            LayerState::Unavailable,
            format!("{} (not tried: no sandbox can start)", cg.placement()),
        )
    } else {
        // The real thing: a sandbox with limits, entered as every run is.
        match limited_run() {
            Ok(detail) => LayerStatus::new(
                "cgroup",
                LayerState::Enforced,
                format!("{detail} ({})", cg.describe()),
            ),
            Err(e) => LayerStatus::new(
                "cgroup",
                LayerState::Unavailable,
                format!(
                    "{} looked usable, but a sandbox with limits failed: {e}",
                    cg.placement()
                ),
            ),
        }
    };
    out.push(status);
    out
}
