//! Helpers shared by the overlay integration tests: temporary trees, overlay
//! markers made by hand, the kernel's own merged view as the oracle, and git.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "runproof-ovl-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn sub(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A test that failed mid-mount must not leave a mount behind; the
        // mounts live in private namespaces of child processes, so none do.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn write(root: &Path, rel: impl AsRef<OsStr>, data: impl AsRef<[u8]>) {
    let p = root.join(rel.as_ref());
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
}

pub fn mkdir(root: &Path, rel: impl AsRef<OsStr>) -> PathBuf {
    let p = root.join(rel.as_ref());
    std::fs::create_dir_all(&p).unwrap();
    p
}

pub fn chmod(root: &Path, rel: impl AsRef<OsStr>, mode: u32) {
    std::fs::set_permissions(
        root.join(rel.as_ref()),
        std::fs::Permissions::from_mode(mode),
    )
    .unwrap();
}

pub fn symlink(root: &Path, rel: impl AsRef<OsStr>, target: impl AsRef<OsStr>) {
    let p = root.join(rel.as_ref());
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target.as_ref(), &p).unwrap();
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn mknod(p: &Path, mode: libc::mode_t, dev: libc::dev_t) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let c = cpath(p);
    // SAFETY: a valid NUL-terminated path; mknod only reads it.
    let r = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// The kernel's whiteout: a character device 0/0 (needs root).
pub fn whiteout(root: &Path, rel: impl AsRef<OsStr>) {
    mknod(&root.join(rel.as_ref()), libc::S_IFCHR | 0o600, 0);
}

pub fn chardev(root: &Path, rel: &str, major: u32, minor: u32) {
    mknod(
        &root.join(rel),
        libc::S_IFCHR | 0o666,
        libc::makedev(major, minor),
    );
}

pub fn fifo(root: &Path, rel: &str) {
    mknod(&root.join(rel), libc::S_IFIFO | 0o644, 0);
}

pub fn set_xattr(root: &Path, rel: impl AsRef<OsStr>, name: &str, value: &[u8]) {
    let p = root.join(rel.as_ref());
    let c = cpath(&p);
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// Xattr namespace of hand-made markers: `user.` (userxattr mounts) or
/// `trusted.` (mounts by real root).
#[derive(Clone, Copy, Debug)]
pub enum Ns {
    User,
    Trusted,
}

impl Ns {
    pub fn prefix(self) -> &'static str {
        match self {
            Ns::User => "user.overlay.",
            Ns::Trusted => "trusted.overlay.",
        }
    }
    fn mount_opt(self) -> &'static str {
        match self {
            Ns::User => ",userxattr",
            Ns::Trusted => "",
        }
    }
}

pub fn opaque(root: &Path, rel: &str, ns: Ns) {
    set_xattr(root, rel, &format!("{}opaque", ns.prefix()), b"y");
}

/// A whiteout in the xattr form: an empty file with `overlay.whiteout`, in a
/// directory marked `overlay.opaque=x`.
pub fn xwhiteout(root: &Path, rel: &str, ns: Ns) {
    write(root, rel, b"");
    set_xattr(root, rel, &format!("{}whiteout", ns.prefix()), b"");
    let parent = Path::new(rel).parent().unwrap();
    if !parent.as_os_str().is_empty() {
        set_xattr(root, parent, &format!("{}opaque", ns.prefix()), b"x");
    }
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dst));
}

/// The merged view the kernel itself builds from `upper` over `lower`,
/// copied out. The upper is mounted as a second read-only lower layer, so
/// nothing in it is touched. Needs root (CI runs as root).
pub fn kernel_merged(lower: &Path, upper: &Path, ns: Ns, out: &Path) {
    let t = TempDir::new("mnt");
    let mnt = t.sub("m");
    std::fs::create_dir_all(out).unwrap();
    let script = format!(
        "mount -t overlay overlay -o ro{},lowerdir={}:{} {} && cp -a {}/. {}/",
        ns.mount_opt(),
        upper.display(),
        lower.display(),
        mnt.display(),
        mnt.display(),
        out.display()
    );
    run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(script));
}

/// Mount a writable overlay (lower + upper), run `commands` (sh) inside the
/// merged directory, and copy the merged view to `snapshot`. The kernel
/// writes the upper layer: its own whiteouts and opaque markers.
pub fn kernel_session(
    lower: &Path,
    upper: &Path,
    ns: Ns,
    extra_opts: &str,
    commands: &str,
    snapshot: &Path,
) {
    let t = TempDir::new("sess");
    let mnt = t.sub("m");
    let work = t.sub("work");
    std::fs::create_dir_all(snapshot).unwrap();
    let unshare: &[&str] = match ns {
        // userxattr is what an overlay mounted inside a user namespace uses.
        Ns::User => &["-U", "-r", "-m", "--propagation", "private"],
        Ns::Trusted => &["-m", "--propagation", "private"],
    };
    let script = format!(
        "set -e; mount -t overlay overlay -o lowerdir={},upperdir={},workdir={}{}{extra_opts} {m}; cd {m}\n{commands}\ncd /; cp -a {m}/. {}/",
        lower.display(),
        upper.display(),
        work.display(),
        ns.mount_opt(),
        snapshot.display(),
        m = mnt.display(),
    );
    run(Command::new("unshare")
        .args(unshare)
        .arg("sh")
        .arg("-c")
        .arg(script));
}

/// What git (and `apply`) can carry of a tree entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    File { exec: bool, data: Vec<u8> },
    Symlink(Vec<u8>),
    Special,
}

/// Non-directory entries of a tree, by relative path (bytes). `.git`
/// directories are left out: neither git nor `apply` carries them by default.
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Item> {
    let mut out = BTreeMap::new();
    fn rec(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Item>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_name() == ".git" {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let ft = md.file_type();
            if ft.is_dir() {
                rec(root, &p, out);
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, Item::Symlink(t.as_os_str().as_bytes().to_vec()));
            } else if ft.is_file() {
                out.insert(
                    rel,
                    Item::File {
                        exec: md.mode() & 0o111 != 0,
                        data: std::fs::read(&p).unwrap(),
                    },
                );
            } else {
                out.insert(rel, Item::Special);
            }
        }
    }
    rec(root, root, &mut out);
    out
}

pub fn without_specials(mut m: BTreeMap<Vec<u8>, Item>) -> BTreeMap<Vec<u8>, Item> {
    m.retain(|_, v| *v != Item::Special);
    m
}

/// Readable difference between two snapshots, for assertion messages.
pub fn describe(a: &BTreeMap<Vec<u8>, Item>, b: &BTreeMap<Vec<u8>, Item>) -> String {
    let mut s = String::new();
    for (k, v) in a {
        match b.get(k) {
            None => s += &format!("only left: {}\n", String::from_utf8_lossy(k)),
            Some(w) if w != v => {
                s += &format!(
                    "differs: {}: {:?} vs {:?}\n",
                    String::from_utf8_lossy(k),
                    short(v),
                    short(w)
                )
            }
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        s += &format!("only right: {}\n", String::from_utf8_lossy(k));
    }
    s
}

fn short(i: &Item) -> String {
    match i {
        Item::File { exec, data } => format!(
            "file exec={exec} {:?}",
            String::from_utf8_lossy(&data[..data.len().min(60)])
        ),
        other => format!("{other:?}"),
    }
}

/// `git apply` the patch inside `dir` (not a repository), failing loudly.
pub fn git_apply(dir: &Path, patch: &[u8]) {
    let mut child = Command::new("git")
        .args(["apply", "--whitespace=nowarn", "--verbose", "-"])
        .current_dir(dir)
        .env("GIT_CEILING_DIRECTORIES", dir.parent().unwrap())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git must be installed");
    child.stdin.take().unwrap().write_all(patch).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "git apply failed:\n{}\n--- patch ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&patch[..patch.len().min(20_000)])
    );
}

/// The core check: the diff of `upper` over `lower`, applied by real git to a
/// copy of `lower`, gives exactly the kernel's merged view (less what git
/// cannot hold); and `runproof apply` into another copy gives the same.
pub fn assert_diff_and_apply_match_kernel(lower: &Path, upper: &Path, ns: Ns) -> Vec<u8> {
    let t = TempDir::new("check");
    let merged = t.path().join("merged");
    kernel_merged(lower, upper, ns, &merged);
    assert_matches_view(lower, upper, &merged)
}

/// As above with a merged view already taken.
pub fn assert_matches_view(lower: &Path, upper: &Path, merged: &Path) -> Vec<u8> {
    let t = TempDir::new("check");
    let expected = without_specials(snapshot(merged));

    let (patch, _stats) = runproof_sandbox::overlay::diff_to_vec(
        upper,
        lower,
        &runproof_sandbox::overlay::DiffOptions::default(),
    )
    .expect("diff");
    let by_git = t.path().join("by-git");
    copy_tree(lower, &by_git);
    git_apply(&by_git, &patch);
    let got = without_specials(snapshot(&by_git));
    assert!(
        got == expected,
        "git apply of our diff differs from the kernel's merged view:\n{}--- patch ---\n{}",
        describe(&got, &expected),
        String::from_utf8_lossy(&patch)
    );

    let by_apply = t.path().join("by-apply");
    copy_tree(lower, &by_apply);
    let report = runproof_sandbox::overlay::apply(
        upper,
        &by_apply,
        &runproof_sandbox::overlay::ApplyOptions::default(),
    )
    .expect("apply");
    let got = without_specials(snapshot(&by_apply));
    assert!(
        got == expected,
        "runproof apply differs from the kernel's merged view:\n{}report: {report}",
        describe(&got, &expected)
    );
    patch
}
