//! Resource limits and accounting through cgroups, one controller at a time:
//! each of memory, pids and CPU accounting goes through cgroup v2 when the
//! controller is available and delegated to us there, and through cgroup v1
//! otherwise (hybrid hosts often keep `memory` and `pids` on v1 and use v2
//! only to track processes). A writable v2 hierarchy is used even without
//! controllers: it gives `cgroup.kill`, `cpu.stat` and process tracking.
//! With neither, the caller falls back to rlimits and says so.
//!
//! A sandbox gets its own child cgroup `runproof-<pid>-<n>` below the cgroup
//! runproof itself runs in, in every hierarchy it uses; they are removed
//! when the [`Cgroup`] is dropped.
//!
//! # Entering without a migration
//!
//! Moving a process into a cgroup by writing its PID to `cgroup.procs`
//! takes the kernel's global `cgroup_threadgroup_rwsem` for writing, which
//! waits for an RCU grace period (milliseconds) unless another migration
//! happened just before. The sandbox's processes avoid that path:
//!
//! - **v2**: the init is created inside its cgroup by
//!   `clone3(CLONE_INTO_CGROUP)`, so it is never migrated. Where `clone3` is
//!   refused (some container seccomp profiles answer ENOSYS), stage A
//!   writes `0` (itself) to `cgroup.procs` instead, the slow path.
//! - **v1**: stage A, single-threaded, writes `0` to the v1 `tasks` file:
//!   moving the calling thread only needs no thread-group lock, and for a
//!   single-threaded process the thread is the process.
//!
//! The files and directories are opened by the supervisor, whose
//! credentials the kernel checks for a write through them, and sent to
//! stage A over the control socket. The supervisor makes the cgroups while
//! stage A builds its namespaces (the two take about as long, and the
//! machine has a second core); stage A waits for them before it forks, so
//! every process of the sandbox starts inside. It closes the descriptors
//! before anything else runs.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Which cgroup hierarchy a controller of a sandbox went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

impl std::fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "cgroup v1",
            CgroupVersion::V2 => "cgroup v2",
        })
    }
}

/// What the running kernel and our place in the hierarchy offer.
#[derive(Debug, Clone, Default)]
pub struct Support {
    /// Our own cgroup v2 directory, when a v2 hierarchy is mounted.
    pub v2_dir: Option<PathBuf>,
    /// v2 controllers available in our cgroup (`cgroup.controllers`).
    pub v2_controllers: Vec<String>,
    /// Whether we may create child cgroups in `v2_dir` (tracking, kill and
    /// CPU accounting need nothing more).
    pub v2_writable: bool,
    /// Why the v2 memory and pids controllers cannot be used, when they
    /// cannot.
    pub v2_problem: Option<String>,
    /// Our own v1 directories per controller, when writable.
    pub v1_memory: Option<PathBuf>,
    pub v1_pids: Option<PathBuf>,
    pub v1_cpuacct: Option<PathBuf>,
}

impl Support {
    fn v2_has(&self, controller: &str) -> bool {
        self.v2_writable && self.v2_controllers.iter().any(|c| c == controller)
    }

    /// Where a memory limit would go.
    pub fn memory(&self) -> Option<CgroupVersion> {
        if self.v2_has("memory") {
            Some(CgroupVersion::V2)
        } else {
            self.v1_memory.as_ref().map(|_| CgroupVersion::V1)
        }
    }

    /// Where a process-count limit would go.
    pub fn pids(&self) -> Option<CgroupVersion> {
        if self.v2_has("pids") {
            Some(CgroupVersion::V2)
        } else {
            self.v1_pids.as_ref().map(|_| CgroupVersion::V1)
        }
    }

    /// Where CPU time would be read from (v2 has `cpu.stat` in every
    /// cgroup, with or without the cpu controller).
    pub fn cpu(&self) -> Option<CgroupVersion> {
        if self.v2_writable {
            Some(CgroupVersion::V2)
        } else {
            self.v1_cpuacct.as_ref().map(|_| CgroupVersion::V1)
        }
    }

    /// Which hierarchy serves each controller, e.g. `memory cgroup v1, pids
    /// cgroup v1, cpu and kill cgroup v2`.
    pub fn placement(&self) -> String {
        let mut s = placement_text(self.memory(), self.pids(), self.cpu());
        if self.v2_writable {
            s.push_str(", cgroup.kill v2");
        }
        s
    }

    /// One line for `runproof doctor`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match &self.v2_dir {
            Some(d) => parts.push(format!(
                "v2 at {}{}, controllers: {}{}",
                d.display(),
                if self.v2_writable { "" } else { " (read-only)" },
                if self.v2_controllers.is_empty() {
                    "none".to_string()
                } else {
                    self.v2_controllers.join(" ")
                },
                self.v2_problem
                    .as_ref()
                    .map_or(String::new(), |p| format!("; {p}"))
            )),
            None => parts.push("no v2 hierarchy".into()),
        }
        let v1: Vec<&str> = [
            ("memory", &self.v1_memory),
            ("pids", &self.v1_pids),
            ("cpuacct", &self.v1_cpuacct),
        ]
        .iter()
        .filter(|(_, d)| d.is_some())
        .map(|(n, _)| *n)
        .collect();
        if v1.is_empty() {
            parts.push("no writable v1 controllers".into());
        } else {
            parts.push(format!("v1 {}", v1.join(" ")));
        }
        parts.join("; ")
    }
}

/// `memory cgroup v1, pids cgroup v1, cpu accounting cgroup v2`.
fn placement_text(
    memory: Option<CgroupVersion>,
    pids: Option<CgroupVersion>,
    cpu: Option<CgroupVersion>,
) -> String {
    let name = |v: Option<CgroupVersion>| v.map_or("none".to_string(), |v| v.to_string());
    format!(
        "memory {}, pids {}, cpu accounting {}",
        name(memory),
        name(pids),
        name(cpu)
    )
}

struct MountInfo {
    root: String,
    mount_point: PathBuf,
    fstype: String,
    super_opts: String,
}

fn mountinfo() -> Vec<MountInfo> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(MountInfo {
                root: unescape_mount(l.get(3)?),
                mount_point: PathBuf::from(unescape_mount(l.get(4)?)),
                fstype: r.first()?.to_string(),
                super_opts: r.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub(crate) fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn own_cgroups() -> Vec<(String, String)> {
    // (controllers, path) per line of /proc/self/cgroup.
    fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

fn join_cgroup(mount: &MountInfo, path: &str) -> PathBuf {
    // The mount shows the hierarchy from `root`; strip it from our path.
    let rel = path
        .strip_prefix(mount.root.trim_end_matches('/'))
        .unwrap_or(path);
    mount.mount_point.join(rel.trim_start_matches('/'))
}

fn writable(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Look at what this process may use. Cheap: reads a few /proc and /sys files.
pub fn detect() -> Support {
    let mounts = mountinfo();
    let own = own_cgroups();
    let mut s = Support::default();

    if let (Some(m), Some((_, path))) = (
        mounts.iter().find(|m| m.fstype == "cgroup2"),
        own.iter().find(|(c, _)| c.is_empty()),
    ) {
        let dir = join_cgroup(m, path);
        s.v2_controllers = fs::read_to_string(dir.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        s.v2_writable = writable(&dir);
        let has = |c: &str| s.v2_controllers.iter().any(|x| x == c);
        if !(has("memory") && has("pids")) {
            s.v2_problem = Some(
                "memory and pids are not offered there (they may be bound to cgroup v1)".into(),
            );
        } else if !s.v2_writable {
            s.v2_problem = Some(
                "not delegated to this user; run under `systemd-run --user --scope -p Delegate=yes`"
                    .into(),
            );
        }
        s.v2_dir = Some(dir);
    }

    for (ctrl, slot) in [
        ("memory", &mut s.v1_memory),
        ("pids", &mut s.v1_pids),
        ("cpuacct", &mut s.v1_cpuacct),
    ] {
        let Some(m) = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.super_opts.split(',').any(|o| o == ctrl))
        else {
            continue;
        };
        let Some((_, path)) = own.iter().find(|(c, _)| c.split(',').any(|x| x == ctrl)) else {
            continue;
        };
        let dir = join_cgroup(m, path);
        if writable(&dir) {
            *slot = Some(dir);
        }
    }
    s
}

/// Limits to put on a new cgroup.
#[derive(Debug, Clone, Copy, Default)]
pub struct CgroupLimits {
    pub memory: Option<u64>,
    pub pids: Option<u64>,
}

/// Measurements read back from a sandbox's cgroup.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub peak_memory: Option<u64>,
    pub oom_kills: u64,
    pub cpu_ns: Option<u64>,
}

/// A sandbox's cgroups, one per hierarchy used. Removed on drop.
#[derive(Debug)]
pub struct Cgroup {
    /// The sandbox's v2 cgroup, when a writable v2 hierarchy exists.
    v2: Option<PathBuf>,
    /// The sandbox's v1 cgroups (memory, pids, cpuacct as available).
    v1: Vec<PathBuf>,
    memory: Option<(CgroupVersion, PathBuf)>,
    pids: Option<(CgroupVersion, PathBuf)>,
    cpu: Option<(CgroupVersion, PathBuf)>,
}

/// Descriptors a sandbox's stage A uses to enter its cgroups (see the
/// module documentation). Opened by the supervisor, which sends them to
/// stage A over the control socket.
#[derive(Debug, Default)]
pub struct Entry {
    /// v1 `tasks` files: stage A writes `0` to each.
    pub v1_tasks: Vec<OwnedFd>,
    /// The v2 cgroup directory, for `clone3(CLONE_INTO_CGROUP)`.
    pub v2_dir: Option<OwnedFd>,
    /// The v2 `cgroup.procs`, for when `clone3` is refused.
    pub v2_procs: Option<OwnedFd>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn open(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = fs::OpenOptions::new();
    if flags & libc::O_DIRECTORY == 0 {
        o.write(true);
    } else {
        o.read(true);
    }
    o.custom_flags(flags | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl Cgroup {
    /// Create the cgroups for one sandbox with the given limits. Fails when
    /// a requested limit has no controller to go through.
    pub fn create(support: &Support, limits: CgroupLimits) -> io::Result<Cgroup> {
        let missing: Vec<&str> = [
            (
                "memory",
                limits.memory.is_some() && support.memory().is_none(),
            ),
            ("pids", limits.pids.is_some() && support.pids().is_none()),
        ]
        .iter()
        .filter(|(_, m)| *m)
        .map(|(n, _)| *n)
        .collect();
        if !missing.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "no usable cgroup hierarchy with the {} controller",
                    missing.join(" and ")
                ),
            ));
        }
        // Leftovers of killed runproof processes: once per process is enough
        // (an eval creates hundreds of sandboxes).
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(|| {
            for base in [
                &support.v2_dir,
                &support.v1_memory,
                &support.v1_pids,
                &support.v1_cpuacct,
            ]
            .into_iter()
            .flatten()
            {
                remove_stale(base);
            }
        });
        let name = format!(
            "runproof-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = Cgroup {
            v2: None,
            v1: Vec::new(),
            memory: None,
            pids: None,
            cpu: None,
        };
        // From here on, a failure drops `cg`, which removes what exists.
        let v2_limits = support.memory() == Some(CgroupVersion::V2)
            || support.pids() == Some(CgroupVersion::V2);
        if support.v2_writable {
            let own = support
                .v2_dir
                .as_ref()
                .expect("writable v2 has a directory");
            if v2_limits {
                enable_v2_controllers(own)?;
            }
            let d = own.join(&name);
            fs::create_dir(&d)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
            cg.v2 = Some(d.clone());
            cg.cpu = Some((CgroupVersion::V2, d));
        }
        let mut v1 = |base: &Option<PathBuf>| -> io::Result<Option<PathBuf>> {
            let Some(base) = base else { return Ok(None) };
            let d = base.join(&name);
            fs::create_dir(&d)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
            cg.v1.push(d.clone());
            Ok(Some(d))
        };
        let v2_dir = cg.v2.clone();
        cg.memory = match support.memory() {
            Some(CgroupVersion::V2) => v2_dir.clone().map(|d| (CgroupVersion::V2, d)),
            Some(CgroupVersion::V1) => v1(&support.v1_memory)?.map(|d| (CgroupVersion::V1, d)),
            None => None,
        };
        cg.pids = match support.pids() {
            Some(CgroupVersion::V2) => v2_dir.clone().map(|d| (CgroupVersion::V2, d)),
            Some(CgroupVersion::V1) => v1(&support.v1_pids)?.map(|d| (CgroupVersion::V1, d)),
            None => None,
        };
        if cg.cpu.is_none() {
            cg.cpu = v1(&support.v1_cpuacct)?.map(|d| (CgroupVersion::V1, d));
        }
        cg.apply(limits)?;
        Ok(cg)
    }

    /// Which hierarchy each controller went through, for the run report.
    pub fn placement(&self) -> String {
        let v = |c: &Option<(CgroupVersion, PathBuf)>| c.as_ref().map(|(v, _)| *v);
        placement_text(v(&self.memory), v(&self.pids), v(&self.cpu))
    }

    /// Whether CPU time can be read (v2 `cpu.stat` or v1 `cpuacct`).
    pub fn accounts_cpu(&self) -> bool {
        self.cpu.is_some()
    }

    /// The version that holds the memory controller (peak memory's source).
    pub fn memory_version(&self) -> Option<CgroupVersion> {
        self.memory.as_ref().map(|(v, _)| *v)
    }

    /// Open what stage A needs to enter these cgroups.
    pub fn entry(&self) -> io::Result<Entry> {
        let mut e = Entry::default();
        for d in &self.v1 {
            e.v1_tasks.push(open(&d.join("tasks"), libc::O_WRONLY)?);
        }
        if let Some(d) = &self.v2 {
            e.v2_dir = Some(open(d, libc::O_RDONLY | libc::O_DIRECTORY)?);
            e.v2_procs = Some(open(&d.join("cgroup.procs"), libc::O_WRONLY)?);
        }
        Ok(e)
    }

    fn apply(&self, limits: CgroupLimits) -> io::Result<()> {
        if let (Some(m), Some((v, dir))) = (limits.memory, &self.memory) {
            match v {
                CgroupVersion::V2 => {
                    write(&dir.join("memory.max"), &m.to_string())?;
                    // No swap: a memory limit that spills to swap is no limit.
                    let _ = write(&dir.join("memory.swap.max"), "0");
                }
                CgroupVersion::V1 => {
                    write(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        let _ = write(&memsw, &m.to_string());
                    }
                    let _ = write(&dir.join("memory.swappiness"), "0");
                }
            }
        }
        if let (Some(p), Some((_, dir))) = (limits.pids, &self.pids) {
            // Same file name and format in both versions.
            write(&dir.join("pids.max"), &p.to_string())?;
        }
        Ok(())
    }

    pub fn stats(&self) -> Stats {
        let read = |p: PathBuf| fs::read_to_string(p).ok();
        let field = |text: &str, key: &str| -> Option<u64> {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        };
        let mut st = Stats::default();
        match &self.memory {
            Some((CgroupVersion::V2, d)) => {
                st.peak_memory = read(d.join("memory.peak")).and_then(|s| s.trim().parse().ok());
                st.oom_kills = read(d.join("memory.events"))
                    .and_then(|t| field(&t, "oom_kill"))
                    .unwrap_or(0);
            }
            Some((CgroupVersion::V1, d)) => {
                st.peak_memory =
                    read(d.join("memory.max_usage_in_bytes")).and_then(|s| s.trim().parse().ok());
                st.oom_kills = read(d.join("memory.oom_control"))
                    .and_then(|t| field(&t, "oom_kill"))
                    .unwrap_or(0);
            }
            None => {}
        }
        st.cpu_ns = match &self.cpu {
            Some((CgroupVersion::V2, d)) => read(d.join("cpu.stat"))
                .and_then(|t| field(&t, "usage_usec"))
                .map(|us| us * 1000),
            Some((CgroupVersion::V1, d)) => {
                read(d.join("cpuacct.usage")).and_then(|s| s.trim().parse().ok())
            }
            None => None,
        };
        st
    }

    /// Processes still in the sandbox's cgroups.
    pub fn procs(&self) -> Vec<i32> {
        let mut all: Vec<i32> = self
            .v2
            .iter()
            .chain(&self.v1)
            .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// SIGKILL everything in the cgroups.
    pub fn kill_all(&self) {
        if let Some(d) = &self.v2 {
            // cgroup.kill (Linux 5.14) kills the whole subtree atomically.
            let _ = write(&d.join("cgroup.kill"), "1");
        }
        for _ in 0..50 {
            let procs = self.procs();
            if procs.is_empty() {
                return;
            }
            for p in procs {
                // SAFETY: plain kill(2) on a PID read from our own cgroup.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// Enable memory and pids (and cpu, when offered) for children of our own
/// v2 cgroup.
fn enable_v2_controllers(own: &Path) -> io::Result<()> {
    let enable = |dir: &Path| -> io::Result<()> {
        let ctl = dir.join("cgroup.subtree_control");
        let cur = fs::read_to_string(&ctl).unwrap_or_default();
        for c in ["memory", "pids", "cpu"] {
            if !cur.split_whitespace().any(|x| x == c) {
                let r = write(&ctl, &format!("+{c}"));
                if c != "cpu" {
                    r?;
                }
            }
        }
        Ok(())
    };
    let Err(e) = enable(own) else { return Ok(()) };
    // "No internal processes": a cgroup with member processes cannot enable
    // controllers for children. If we are alone in it, move ourselves into
    // a leaf and try again.
    let procs = fs::read_to_string(own.join("cgroup.procs")).unwrap_or_default();
    let me = std::process::id().to_string();
    if e.raw_os_error() == Some(libc::EBUSY) && procs.split_whitespace().all(|p| p == me) {
        let leaf = own.join(format!("runproof-supervisor-{me}"));
        let _ = fs::create_dir(&leaf);
        write(&leaf.join("cgroup.procs"), &me)?;
        enable(own)
    } else {
        Err(io::Error::new(
            e.kind(),
            format!(
                "cannot enable memory and pids controllers below {} ({e}); run runproof in a cgroup of its own, e.g. `systemd-run --user --scope -p Delegate=yes runproof ...`",
                own.display()
            ),
        ))
    }
}

/// Remove empty cgroups left by runproof processes that were killed before
/// they could clean up (their PID is no longer alive).
fn remove_stale(base: &Path) {
    let Ok(rd) = fs::read_dir(base) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // runproof-<pid>-<n> (a sandbox) or runproof-supervisor-<pid> (the
        // leaf a supervisor moved itself into on v2).
        let Some(pid) = name
            .strip_prefix("runproof-supervisor-")
            .or_else(|| name.strip_prefix("runproof-"))
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir(e.path());
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for d in self.v1.iter().rev().chain(self.v2.iter()) {
            for _ in 0..200 {
                match fs::remove_dir(d) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(version: CgroupVersion, d: &Path) -> Cgroup {
        Cgroup {
            v2: None,
            v1: vec![],
            memory: Some((version, d.to_path_buf())),
            pids: Some((version, d.to_path_buf())),
            cpu: Some((version, d.to_path_buf())),
        }
    }

    /// The v2 and v1 file formats, on a directory laid out as cgroupfs would
    /// be (this host has no v2 memory or pids controller, so those writes
    /// are exercised against the kernel through v1 only; the v2 cpu.stat,
    /// cgroup.kill and clone3 path run for real in the attack tests).
    #[test]
    fn v2_and_v1_limits_and_stats_use_the_kernel_file_formats() {
        let d = std::env::temp_dir().join(format!("rp-cg-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        let v2 = fake(CgroupVersion::V2, &d);
        v2.apply(CgroupLimits {
            memory: Some(1 << 30),
            pids: Some(99),
        })
        .unwrap();
        assert_eq!(
            fs::read_to_string(d.join("memory.max")).unwrap(),
            "1073741824"
        );
        assert_eq!(fs::read_to_string(d.join("memory.swap.max")).unwrap(), "0");
        assert_eq!(fs::read_to_string(d.join("pids.max")).unwrap(), "99");
        fs::write(d.join("memory.peak"), "5000\n").unwrap();
        fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n",
        )
        .unwrap();
        fs::write(d.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        let st = v2.stats();
        assert_eq!(
            (st.peak_memory, st.oom_kills, st.cpu_ns),
            (Some(5000), 2, Some(1_500_000))
        );

        let v1 = fake(CgroupVersion::V1, &d);
        fs::write(d.join("memory.memsw.limit_in_bytes"), "").unwrap();
        v1.apply(CgroupLimits {
            memory: Some(4096),
            pids: None,
        })
        .unwrap();
        assert_eq!(
            fs::read_to_string(d.join("memory.limit_in_bytes")).unwrap(),
            "4096"
        );
        assert_eq!(
            fs::read_to_string(d.join("memory.memsw.limit_in_bytes")).unwrap(),
            "4096"
        );
        fs::write(d.join("memory.max_usage_in_bytes"), "777\n").unwrap();
        fs::write(
            d.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        fs::write(d.join("cpuacct.usage"), "42\n").unwrap();
        let st = v1.stats();
        assert_eq!(
            (st.peak_memory, st.oom_kills, st.cpu_ns),
            (Some(777), 1, Some(42))
        );
        fs::remove_dir_all(&d).unwrap();
    }

    /// Each controller goes where it is available: v2 when delegated there,
    /// v1 otherwise, and CPU accounting through any writable v2.
    #[test]
    fn controllers_are_placed_one_by_one() {
        let hybrid = Support {
            v2_dir: Some("/sys/fs/cgroup/unified".into()),
            v2_controllers: vec!["hugetlb".into()],
            v2_writable: true,
            v1_memory: Some("/m".into()),
            v1_pids: Some("/p".into()),
            ..Support::default()
        };
        assert_eq!(hybrid.memory(), Some(CgroupVersion::V1));
        assert_eq!(hybrid.pids(), Some(CgroupVersion::V1));
        assert_eq!(hybrid.cpu(), Some(CgroupVersion::V2));
        let pure = Support {
            v2_dir: Some("/sys/fs/cgroup".into()),
            v2_controllers: vec!["memory".into(), "pids".into(), "cpu".into()],
            v2_writable: true,
            ..Support::default()
        };
        assert_eq!(
            (pure.memory(), pure.pids(), pure.cpu()),
            (
                Some(CgroupVersion::V2),
                Some(CgroupVersion::V2),
                Some(CgroupVersion::V2)
            )
        );
        let undelegated = Support {
            v2_writable: false,
            ..pure.clone()
        };
        assert_eq!(
            (undelegated.memory(), undelegated.pids(), undelegated.cpu()),
            (None, None, None)
        );
        let err = Cgroup::create(
            &undelegated,
            CgroupLimits {
                memory: Some(1 << 20),
                pids: Some(5),
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("memory and pids controller"),
            "{err}"
        );
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mount(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount(r"/tab\011x\134"), "/tab\tx\\");
        assert_eq!(unescape_mount(r"/plain"), "/plain");
    }
}
