//! The sandbox's view of the file system.
//!
//! The supervisor computes a [`Plan`] (a list of mount operations, all paths
//! already converted to C strings) before any process is forked; the sandbox's
//! init carries it out inside its new mount namespace:
//!
//! 1. everything becomes private (no propagation back to the host);
//! 2. a small tmpfs becomes a temporary root with the host's root moved to
//!    `/oldroot` and an empty skeleton tmpfs at `/newroot`;
//! 3. each operation mounts from `/oldroot/...` into `/newroot/...`, parents
//!    before children;
//! 4. the skeleton is made read-only, `/oldroot` is detached, and `/newroot`
//!    becomes `/`.
//!
//! Nothing from the host is visible unless an operation put it there: this is
//! deny by default, and a missing rule hides rather than exposes.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::SandboxError;

pub const OLD: &str = "/oldroot";
pub const NEW: &str = "/newroot";

/// One mount operation, paths absolute inside the *sandbox*.
#[derive(Debug, Clone)]
pub enum Op {
    /// Bind `src` (a host path) at `dst`.
    Bind {
        src: PathBuf,
        dst: PathBuf,
        write: bool,
        dev: bool,
    },
    /// Re-bind a path already in the new root read-only (for protected
    /// paths inside the workspace).
    ReadOnlyInPlace {
        dst: PathBuf,
    },
    Tmpfs {
        dst: PathBuf,
        size: u64,
        mode: u32,
        read_only: bool,
    },
    Proc {
        dst: PathBuf,
    },
    Devpts {
        dst: PathBuf,
    },
    Symlink {
        target: PathBuf,
        dst: PathBuf,
    },
    /// An empty, read-only file over `dst` (hides a host file).
    MaskFile {
        dst: PathBuf,
    },
    Overlay {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
        dst: PathBuf,
        /// Mount with `volatile` (no sync at unmount, no fsync on copy-up):
        /// for an upper layer that is thrown away after one run.
        volatile: bool,
    },
}

impl Op {
    /// A host path made visible at the same path, read-only or read-write.
    pub fn same_path(p: &Path, write: bool) -> Op {
        Op::Bind {
            src: p.to_path_buf(),
            dst: p.to_path_buf(),
            write,
            dev: false,
        }
    }

    fn dst(&self) -> &Path {
        match self {
            Op::Bind { dst, .. }
            | Op::ReadOnlyInPlace { dst }
            | Op::Tmpfs { dst, .. }
            | Op::Proc { dst }
            | Op::Devpts { dst }
            | Op::Symlink { dst, .. }
            | Op::MaskFile { dst }
            | Op::Overlay { dst, .. } => dst,
        }
    }

    /// What this operation does, for the plan's description.
    pub fn describe(&self) -> String {
        match self {
            Op::Bind {
                src, dst, write, ..
            } => format!(
                "{} {}{}",
                if *write { "rw" } else { "ro" },
                dst.display(),
                if src != dst {
                    format!(" (from {})", src.display())
                } else {
                    String::new()
                }
            ),
            Op::ReadOnlyInPlace { dst } => format!("ro {} (protected)", dst.display()),
            Op::Tmpfs { dst, size, .. } => format!("tmpfs {} ({} bytes)", dst.display(), size),
            Op::Proc { dst } => format!("proc {}", dst.display()),
            Op::Devpts { dst } => format!("devpts {}", dst.display()),
            Op::Symlink { target, dst } => {
                format!("link {} -> {}", dst.display(), target.display())
            }
            Op::MaskFile { dst } => format!("hidden {}", dst.display()),
            Op::Overlay { dst, upper, .. } => {
                format!("overlay {} (changes to {})", dst.display(), upper.display())
            }
        }
    }
}

fn depth(p: &Path) -> usize {
    p.components().count()
}

/// A list of operations in the order they run.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub ops: Vec<Op>,
}

impl Plan {
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Parents before children; among equals, the order of insertion.
    pub fn sort(&mut self) {
        self.ops.sort_by_key(|op| depth(op.dst()));
    }

    pub(crate) fn compile(&self) -> Result<Vec<Compiled>, SandboxError> {
        self.ops.iter().map(compile).collect()
    }
}

fn cpath(prefix: &str, p: &Path) -> Result<CString, SandboxError> {
    let mut v = prefix.as_bytes().to_vec();
    v.extend_from_slice(p.as_os_str().as_bytes());
    CString::new(v).map_err(|_| SandboxError::Setup {
        step: "mount plan".into(),
        detail: format!("path {} contains a NUL byte", p.display()),
        hint: None,
    })
}

/// An operation with its strings ready for the syscalls.
pub(crate) struct Compiled {
    pub kind: Kind,
    pub src: CString,
    pub dst: CString,
    pub data: CString,
    /// Whether the mount point is a directory (else a file).
    pub dir: bool,
}

pub(crate) enum Kind {
    Bind { write: bool, dev: bool },
    ReadOnlyInPlace,
    Tmpfs { read_only: bool },
    Proc,
    Devpts,
    Symlink,
    MaskFile,
    Overlay,
}

fn compile(op: &Op) -> Result<Compiled, SandboxError> {
    let empty = CString::default();
    Ok(match op {
        Op::Bind {
            src,
            dst,
            write,
            dev,
        } => Compiled {
            kind: Kind::Bind {
                write: *write,
                dev: *dev,
            },
            src: cpath(OLD, src)?,
            dst: cpath(NEW, dst)?,
            data: empty,
            dir: src.is_dir(),
        },
        Op::ReadOnlyInPlace { dst } => Compiled {
            kind: Kind::ReadOnlyInPlace,
            src: cpath(NEW, dst)?,
            dst: cpath(NEW, dst)?,
            data: empty,
            dir: true,
        },
        Op::Tmpfs {
            dst,
            size,
            mode,
            read_only,
        } => Compiled {
            kind: Kind::Tmpfs {
                read_only: *read_only,
            },
            src: CString::new("tmpfs").unwrap(),
            dst: cpath(NEW, dst)?,
            data: CString::new(format!("size={size},mode={mode:o}")).unwrap(),
            dir: true,
        },
        Op::Proc { dst } => Compiled {
            kind: Kind::Proc,
            src: CString::new("proc").unwrap(),
            dst: cpath(NEW, dst)?,
            data: empty,
            dir: true,
        },
        Op::Devpts { dst } => Compiled {
            kind: Kind::Devpts,
            src: CString::new("devpts").unwrap(),
            dst: cpath(NEW, dst)?,
            data: CString::new("newinstance,ptmxmode=0666,mode=0620").unwrap(),
            dir: true,
        },
        Op::Symlink { target, dst } => Compiled {
            kind: Kind::Symlink,
            src: cpath("", target)?,
            dst: cpath(NEW, dst)?,
            data: empty,
            dir: false,
        },
        Op::MaskFile { dst } => Compiled {
            kind: Kind::MaskFile,
            src: CString::new("/.runproof-empty").unwrap(),
            dst: cpath(NEW, dst)?,
            data: empty,
            dir: false,
        },
        Op::Overlay {
            lower,
            upper,
            work,
            dst,
            volatile,
        } => {
            for p in [lower, upper, work] {
                let b = p.as_os_str().as_bytes();
                if b.iter().any(|c| matches!(c, b',' | b':' | b'\\')) {
                    return Err(SandboxError::Setup {
                        step: "overlay".into(),
                        detail: format!(
                            "{} contains `,`, `:` or `\\`, which overlayfs options cannot carry",
                            p.display()
                        ),
                        hint: Some("use a directory without those characters".into()),
                    });
                }
            }
            let opt = |p: &Path| format!("{OLD}{}", p.display());
            Compiled {
                kind: Kind::Overlay,
                src: CString::new("overlay").unwrap(),
                dst: cpath(NEW, dst)?,
                data: CString::new(format!(
                    "lowerdir={},upperdir={},workdir={},userxattr{}",
                    opt(lower),
                    opt(upper),
                    opt(work),
                    if *volatile { ",volatile" } else { "" }
                ))
                .unwrap(),
                dir: true,
            }
        }
    })
}

/// Errors carried out of the child as (step, errno).
pub(crate) type StepError = (&'static str, std::io::Error);

fn check(step: &'static str, r: libc::c_int) -> Result<(), StepError> {
    if r < 0 {
        Err((step, std::io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

fn mount(
    src: &CString,
    dst: &CString,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: &CString,
) -> libc::c_int {
    let fstype = fstype.map(|t| CString::new(t).unwrap());
    // SAFETY: all pointers are valid C strings or null.
    unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                data.as_ptr().cast()
            },
        )
    }
}

/// Create `path` and its missing parents as directories (mode 0755), or, when
/// `dir` is false, the parents and an empty file. The plan mounts parents
/// first, so the parents usually exist: the path itself is tried first and
/// the parents made only when that fails with ENOENT (one syscall per mount
/// point instead of one per path component).
fn make_mount_point(path: &CString, dir: bool) -> Result<(), StepError> {
    if create(path, dir) == Some(libc::ENOENT) {
        let bytes = path.as_bytes();
        for (i, &b) in bytes.iter().enumerate().skip(1) {
            if b == b'/' {
                let parent = CString::new(&bytes[..i]).unwrap();
                // SAFETY: valid C string.
                unsafe { libc::mkdir(parent.as_ptr(), 0o755) };
            }
        }
        create(path, dir);
    }
    // Errors other than ENOENT (EEXIST above all) surface at the mount.
    Ok(())
}

/// Make one directory or empty file; the errno when that failed.
fn create(path: &CString, dir: bool) -> Option<libc::c_int> {
    // SAFETY: valid C string; the descriptor is closed at once.
    let ok = unsafe {
        if dir {
            libc::mkdir(path.as_ptr(), 0o755) == 0
        } else {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o644,
            );
            if fd >= 0 {
                libc::close(fd);
            }
            fd >= 0
        }
    };
    (!ok).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Set flags on a mount and everything below it. Falls back to a plain
/// remount of the top mount on kernels without mount_setattr (< 5.12).
fn set_attrs(dst: &CString, set: u64) -> Result<(), StepError> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: attr is a valid struct mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(("mount_setattr", err));
    }
    // Keep the flags the kernel locked on the source, or the remount is refused.
    // SAFETY: statvfs writes into the zeroed struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statvfs(dst.as_ptr(), &mut st) };
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT;
    for (st_flag, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms;
        }
    }
    if set & MOUNT_ATTR_RDONLY != 0 {
        flags |= libc::MS_RDONLY;
    }
    if set & MOUNT_ATTR_NOSUID != 0 {
        flags |= libc::MS_NOSUID;
    }
    if set & MOUNT_ATTR_NODEV != 0 {
        flags |= libc::MS_NODEV;
    }
    if set & MOUNT_ATTR_NOEXEC != 0 {
        flags |= libc::MS_NOEXEC;
    }
    check(
        "remount",
        mount(&CString::default(), dst, None, flags, &CString::default()),
    )
}

/// Carry out the plan. Runs in the sandbox's init, in its own mount
/// namespace, before anything else happens there.
pub(crate) fn execute(ops: &[Compiled], skeleton_size: u64) -> Result<(), StepError> {
    let none = CString::default();
    let root = CString::new("/").unwrap();
    check(
        "make mounts private",
        mount(&none, &root, None, libc::MS_REC | libc::MS_PRIVATE, &none),
    )?;

    // A scratch root on /tmp (any directory would do; the host's /tmp stays
    // reachable at /oldroot/tmp after the pivot).
    let base = CString::new("/tmp").unwrap();
    let tmpfs = CString::new("tmpfs").unwrap();
    let opts = CString::new("size=1m,mode=0755").unwrap();
    check(
        "mount scratch root",
        mount(
            &tmpfs,
            &base,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            &opts,
        ),
    )?;
    // SAFETY: plain path syscalls on valid C strings.
    unsafe {
        check("chdir scratch root", libc::chdir(base.as_ptr()))?;
        let newroot = CString::new("newroot").unwrap();
        let oldroot = CString::new("oldroot").unwrap();
        libc::mkdir(newroot.as_ptr(), 0o755);
        libc::mkdir(oldroot.as_ptr(), 0o755);
        let skel = CString::new(format!("size={skeleton_size},mode=0755")).unwrap();
        check(
            "mount skeleton",
            mount(
                &tmpfs,
                &newroot,
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                &skel,
            ),
        )?;
        let dot = CString::new(".").unwrap();
        check(
            "pivot to scratch root",
            libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), oldroot.as_ptr()) as libc::c_int,
        )?;
        check("chdir /", libc::chdir(root.as_ptr()))?;
        // The empty file used to hide host files.
        let empty = CString::new("/.runproof-empty").unwrap();
        let fd = libc::open(
            empty.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o444,
        );
        if fd >= 0 {
            libc::close(fd);
        }
    }

    for op in ops {
        run_op(op).map_err(|(step, e)| {
            let at = String::from_utf8_lossy(op.dst.as_bytes());
            let at = at.strip_prefix(NEW).unwrap_or(&at).to_string();
            (step, std::io::Error::new(e.kind(), format!("{at}: {e}")))
        })?;
    }

    // Freeze the skeleton (mount points and symlinks), then drop the host.
    let newroot = CString::new(NEW).unwrap();
    check(
        "make root read-only",
        mount(
            &none,
            &newroot,
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            &none,
        ),
    )?;
    let oldroot = CString::new(OLD).unwrap();
    // SAFETY: path syscalls on valid C strings.
    unsafe {
        check(
            "detach host root",
            libc::umount2(oldroot.as_ptr(), libc::MNT_DETACH),
        )?;
        check("chdir new root", libc::chdir(newroot.as_ptr()))?;
        let dot = CString::new(".").unwrap();
        check(
            "pivot to new root",
            libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as libc::c_int,
        )?;
        check(
            "detach scratch root",
            libc::umount2(dot.as_ptr(), libc::MNT_DETACH),
        )?;
        check("chdir /", libc::chdir(root.as_ptr()))?;
    }
    Ok(())
}

fn run_op(op: &Compiled) -> Result<(), StepError> {
    let none = CString::default();
    match op.kind {
        Kind::Bind { write, dev } => {
            make_mount_point(&op.dst, op.dir)?;
            check(
                "bind mount",
                mount(&op.src, &op.dst, None, libc::MS_BIND | libc::MS_REC, &none),
            )?;
            let mut set = MOUNT_ATTR_NOSUID;
            if !dev {
                set |= MOUNT_ATTR_NODEV;
            } else {
                set |= MOUNT_ATTR_NOEXEC;
            }
            if !write {
                set |= MOUNT_ATTR_RDONLY;
            }
            set_attrs(&op.dst, set)
        }
        Kind::ReadOnlyInPlace => {
            // Optional: /proc entries differ between kernels.
            // SAFETY: access on a valid C string.
            if unsafe { libc::access(op.dst.as_ptr(), libc::F_OK) } != 0 {
                return Ok(());
            }
            check(
                "protect path",
                mount(&op.src, &op.dst, None, libc::MS_BIND | libc::MS_REC, &none),
            )?;
            set_attrs(
                &op.dst,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            )
        }
        Kind::Tmpfs { read_only } => {
            make_mount_point(&op.dst, true)?;
            let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
            if read_only {
                flags |= libc::MS_RDONLY;
            }
            check(
                "mount tmpfs",
                mount(&op.src, &op.dst, Some("tmpfs"), flags, &op.data),
            )
        }
        Kind::Proc => {
            make_mount_point(&op.dst, true)?;
            check(
                "mount /proc",
                mount(
                    &op.src,
                    &op.dst,
                    Some("proc"),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    &none,
                ),
            )
        }
        Kind::Devpts => {
            make_mount_point(&op.dst, true)?;
            check(
                "mount devpts",
                mount(
                    &op.src,
                    &op.dst,
                    Some("devpts"),
                    libc::MS_NOSUID | libc::MS_NOEXEC,
                    &op.data,
                ),
            )
        }
        Kind::Symlink => {
            make_mount_point(&parent_of(&op.dst), true)?;
            // SAFETY: valid C strings.
            let r = unsafe { libc::symlink(op.src.as_ptr(), op.dst.as_ptr()) };
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                return Err(("symlink", std::io::Error::last_os_error()));
            }
            Ok(())
        }
        Kind::MaskFile => {
            check(
                "hide file",
                mount(&op.src, &op.dst, None, libc::MS_BIND, &none),
            )?;
            set_attrs(
                &op.dst,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            )
        }
        Kind::Overlay => {
            make_mount_point(&op.dst, true)?;
            check(
                "mount overlay",
                mount(
                    &op.src,
                    &op.dst,
                    Some("overlay"),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    &op.data,
                ),
            )
        }
    }
}

fn parent_of(p: &CString) -> CString {
    let b = p.as_bytes();
    let end = b.iter().rposition(|&c| c == b'/').unwrap_or(0).max(1);
    CString::new(&b[..end]).unwrap()
}

/// `/etc` files that hold host secrets and are hidden even though `/etc` is
/// visible: password hashes, sudo rules, SSH host keys, TLS private keys,
/// Kerberos keytabs, VPN and Wi-Fi secrets, container engine credentials.
pub const ETC_SECRETS: &[&str] = &[
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "sudoers",
    "sudoers.d",
    "security/opasswd",
    "ssl/private",
    "krb5.keytab",
    "ipsec.secrets",
    "ppp/chap-secrets",
    "ppp/pap-secrets",
    "NetworkManager/system-connections",
    "wpa_supplicant",
    "docker",
    "containers/auth.json",
    "credstore",
    "credstore.encrypted",
    "libvirt/secrets",
    "ssh",
];

/// Host paths made visible read-only by the default policy.
pub const SYSTEM_RO: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// Whether a host path exists (without following a final symlink).
pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

pub fn os(p: &Path) -> &OsStr {
    p.as_os_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_sorts_parents_first_and_keeps_order_among_equals() {
        let mut plan = Plan::default();
        plan.push(Op::Bind {
            src: "/w/p".into(),
            dst: "/w/p".into(),
            write: true,
            dev: false,
        });
        plan.push(Op::Tmpfs {
            dst: "/tmp".into(),
            size: 1,
            mode: 0o1777,
            read_only: false,
        });
        plan.push(Op::Tmpfs {
            dst: "/w".into(),
            size: 1,
            mode: 0o700,
            read_only: false,
        });
        plan.push(Op::MaskFile {
            dst: "/etc/shadow".into(),
        });
        plan.push(Op::Bind {
            src: "/etc".into(),
            dst: "/etc".into(),
            write: false,
            dev: false,
        });
        plan.sort();
        let order: Vec<_> = plan.ops.iter().map(|o| o.dst().to_path_buf()).collect();
        assert_eq!(
            order,
            vec![
                PathBuf::from("/tmp"),
                "/w".into(),
                "/etc".into(),
                "/w/p".into(),
                "/etc/shadow".into()
            ]
        );
    }

    #[test]
    fn overlay_refuses_option_separators() {
        let op = Op::Overlay {
            lower: "/a,b".into(),
            upper: "/u".into(),
            work: "/w".into(),
            dst: "/a".into(),
            volatile: false,
        };
        assert!(compile(&op).is_err());
    }
}
