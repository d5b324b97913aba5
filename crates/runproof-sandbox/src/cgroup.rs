//! Resource limits through cgroups: v2 where the controllers are delegated to
//! us, v1 where that is what the kernel offers (hybrid hosts often keep
//! `memory` and `pids` on v1), and nothing otherwise — in which case the caller
//! falls back to rlimits and says so.
//!
//! A sandbox gets its own child cgroup `runproof-<pid>-<n>` below the cgroup
//! runproof itself runs in; it is removed when the [`Cgroup`] is dropped.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Which cgroup hierarchy a sandbox's limits went through.
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
    /// Whether we may create children there and enable memory+pids in them.
    pub v2_usable: bool,
    /// Why v2 is not usable, when it is mounted but not usable.
    pub v2_problem: Option<String>,
    /// Our own v1 directories per controller, when writable.
    pub v1_memory: Option<PathBuf>,
    pub v1_pids: Option<PathBuf>,
    pub v1_cpuacct: Option<PathBuf>,
}

impl Support {
    /// Which version a new sandbox would use for memory and pids.
    pub fn best(&self) -> Option<CgroupVersion> {
        if self.v2_usable {
            Some(CgroupVersion::V2)
        } else if self.v1_memory.is_some() && self.v1_pids.is_some() {
            Some(CgroupVersion::V1)
        } else {
            None
        }
    }

    /// One line for `runproof doctor`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match (&self.v2_dir, self.v2_usable) {
            (Some(d), true) => parts.push(format!(
                "v2 at {} with {}",
                d.display(),
                self.v2_controllers.join(" ")
            )),
            (Some(d), false) => parts.push(format!(
                "v2 at {} not usable: {}",
                d.display(),
                self.v2_problem.as_deref().unwrap_or("no controllers")
            )),
            (None, _) => parts.push("no v2 hierarchy".into()),
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
        let has = |c: &str| s.v2_controllers.iter().any(|x| x == c);
        if !(has("memory") && has("pids")) {
            s.v2_problem = Some(format!(
                "the memory and pids controllers are not available in {} (they may be bound to cgroup v1)",
                dir.display()
            ));
        } else if !writable(&dir) {
            s.v2_problem = Some(format!(
                "{} is not delegated to this user; run under `systemd-run --user --scope -p Delegate=yes`",
                dir.display()
            ));
        } else {
            s.v2_usable = true;
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

/// A sandbox's cgroup(s). Removed on drop.
#[derive(Debug)]
pub struct Cgroup {
    pub version: CgroupVersion,
    dirs: Vec<PathBuf>,
    memory: PathBuf,
    pids: PathBuf,
    cpu: Option<PathBuf>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl Cgroup {
    /// Create a cgroup for one sandbox with the given limits.
    pub fn create(support: &Support, limits: CgroupLimits) -> io::Result<Cgroup> {
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
        let name = format!(
            "runproof-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let cg = match support.best() {
            Some(CgroupVersion::V2) => Self::create_v2(support.v2_dir.as_ref().unwrap(), &name)?,
            Some(CgroupVersion::V1) => {
                let mut dirs = Vec::new();
                let mut mk = |base: &PathBuf| -> io::Result<PathBuf> {
                    let d = base.join(&name);
                    fs::create_dir(&d)?;
                    dirs.push(d.clone());
                    Ok(d)
                };
                let memory = mk(support.v1_memory.as_ref().unwrap())?;
                let pids = mk(support.v1_pids.as_ref().unwrap())?;
                let cpu = match &support.v1_cpuacct {
                    Some(b) => mk(b).ok(),
                    None => None,
                };
                Cgroup {
                    version: CgroupVersion::V1,
                    dirs,
                    memory,
                    pids,
                    cpu,
                }
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "no usable cgroup hierarchy with memory and pids controllers",
                ));
            }
        };
        cg.apply(limits)?;
        Ok(cg)
    }

    fn create_v2(own: &Path, name: &str) -> io::Result<Cgroup> {
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
        if let Err(e) = enable(own) {
            // "No internal processes": a cgroup with member processes cannot
            // enable controllers for children. If we are alone in it, move
            // ourselves into a leaf and try again.
            let procs = fs::read_to_string(own.join("cgroup.procs")).unwrap_or_default();
            let me = std::process::id().to_string();
            if e.raw_os_error() == Some(libc::EBUSY) && procs.split_whitespace().all(|p| p == me) {
                let leaf = own.join(format!("runproof-supervisor-{me}"));
                let _ = fs::create_dir(&leaf);
                write(&leaf.join("cgroup.procs"), &me)?;
                enable(own)?;
            } else {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot enable memory and pids controllers below {} ({e}); run runproof in a cgroup of its own, e.g. `systemd-run --user --scope -p Delegate=yes runproof ...`",
                        own.display()
                    ),
                ));
            }
        }
        let dir = own.join(name);
        fs::create_dir(&dir)?;
        Ok(Cgroup {
            version: CgroupVersion::V2,
            dirs: vec![dir.clone()],
            memory: dir.clone(),
            pids: dir.clone(),
            cpu: Some(dir),
        })
    }

    fn apply(&self, limits: CgroupLimits) -> io::Result<()> {
        match self.version {
            CgroupVersion::V2 => {
                if let Some(m) = limits.memory {
                    write(&self.memory.join("memory.max"), &m.to_string())?;
                    // No swap: a memory limit that spills to swap is no limit.
                    let _ = write(&self.memory.join("memory.swap.max"), "0");
                }
                if let Some(p) = limits.pids {
                    write(&self.pids.join("pids.max"), &p.to_string())?;
                }
            }
            CgroupVersion::V1 => {
                if let Some(m) = limits.memory {
                    write(&self.memory.join("memory.limit_in_bytes"), &m.to_string())?;
                    let memsw = self.memory.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        let _ = write(&memsw, &m.to_string());
                    }
                    let _ = write(&self.memory.join("memory.swappiness"), "0");
                }
                if let Some(p) = limits.pids {
                    write(&self.pids.join("pids.max"), &p.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Put a process (a host PID) into this cgroup. Its descendants follow.
    pub fn add(&self, pid: i32) -> io::Result<()> {
        for d in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
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
        match self.version {
            CgroupVersion::V2 => Stats {
                peak_memory: read(self.memory.join("memory.peak"))
                    .and_then(|s| s.trim().parse().ok()),
                oom_kills: read(self.memory.join("memory.events"))
                    .and_then(|t| field(&t, "oom_kill"))
                    .unwrap_or(0),
                cpu_ns: read(self.memory.join("cpu.stat"))
                    .and_then(|t| field(&t, "usage_usec"))
                    .map(|us| us * 1000),
            },
            CgroupVersion::V1 => Stats {
                peak_memory: read(self.memory.join("memory.max_usage_in_bytes"))
                    .and_then(|s| s.trim().parse().ok()),
                oom_kills: read(self.memory.join("memory.oom_control"))
                    .and_then(|t| field(&t, "oom_kill"))
                    .unwrap_or(0),
                cpu_ns: self
                    .cpu
                    .as_ref()
                    .and_then(|d| read(d.join("cpuacct.usage")))
                    .and_then(|s| s.trim().parse().ok()),
            },
        }
    }

    /// Processes still in the cgroup.
    pub fn procs(&self) -> Vec<i32> {
        fs::read_to_string(self.pids.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// SIGKILL everything in the cgroup.
    pub fn kill_all(&self) {
        if self.version == CgroupVersion::V2 && write(&self.pids.join("cgroup.kill"), "1").is_ok() {
            return;
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

/// Remove empty cgroups left by runproof processes that were killed before
/// they could clean up (their PID is no longer alive).
fn remove_stale(base: &Path) {
    let Ok(rd) = fs::read_dir(base) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("runproof-")
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
        for d in self.dirs.iter().rev() {
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

    /// The v2 and v1 file formats, on a directory laid out as cgroupfs would
    /// be (this host has no v2 controllers, so the kernel path is exercised
    /// by the attack tests through v1 only).
    #[test]
    fn v2_and_v1_limits_and_stats_use_the_kernel_file_formats() {
        let d = std::env::temp_dir().join(format!("rp-cg-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        let v2 = Cgroup {
            version: CgroupVersion::V2,
            dirs: vec![],
            memory: d.clone(),
            pids: d.clone(),
            cpu: Some(d.clone()),
        };
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
        fs::write(d.join("cgroup.procs"), "12\n34\n").unwrap();
        let st = v2.stats();
        assert_eq!(
            (st.peak_memory, st.oom_kills, st.cpu_ns),
            (Some(5000), 2, Some(1_500_000))
        );
        assert_eq!(v2.procs(), vec![12, 34]);

        let v1 = Cgroup {
            version: CgroupVersion::V1,
            dirs: vec![],
            memory: d.clone(),
            pids: d.clone(),
            cpu: Some(d.clone()),
        };
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

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mount(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount(r"/tab\011x\134"), "/tab\tx\\");
        assert_eq!(unescape_mount(r"/plain"), "/plain");
    }
}
