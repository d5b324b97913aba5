//! Environments and workspaces.
//!
//! An *environment* is a repository checked out at `base_commit` with the
//! task's `setup` commands run in it. It is built once per environment key
//! (repository, base commit, setup commands), cached, and never written
//! again; each graded instance then gets a fresh *workspace* made from it.
//!
//! [`EnvCache`] makes workspaces in one of two ways ([`WorkspaceMode`]):
//!
//! - **copy-on-write** (the default where the kernel and file system allow
//!   it): the cached environment is the read-only lower layer of an overlay
//!   that the sandbox mounts for the test run; the instance's own files live
//!   in `workspace/upper`. Before the run, the harness copies up only the
//!   paths the patches touch (plus the `.gitattributes` above them), edits
//!   them there with git pointed at the environment's repository through a
//!   private index and object directory, and marks deleted paths with
//!   overlayfs whiteouts. Making a workspace costs the handful of files a
//!   patch touches, whatever the size of the environment (a Rust `target/`,
//!   a `node_modules`), and no write from the harness or the graded code can
//!   reach the cache: the lower layer is never mounted writable.
//! - **copy**: the environment directory is copied (`cp -a --reflink=auto`)
//!   into the workspace, for kernels or file systems where overlayfs in a
//!   user namespace is not available. The report says which was used and why.
//!
//! Layout of an environment directory: `repo/` (the checkout) and `home/`
//! (`$HOME` during setup, so caches that setup fills travel with it).

use crate::model::{RepoSource, truncate};
use crate::patch::check_path;
use crate::runner::{CowRoot, RunRequest, TestRunner, base_env};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// Bump when the layout of a cached environment changes.
const ENV_FORMAT: &str = "runproof-env-v1";
const READY: &str = ".runproof-ready";
/// Present when setup left every tracked file as at the base commit.
const CLEAN: &str = ".runproof-clean";
/// overlayfs' `f_type`: an upper layer cannot itself be on overlayfs.
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
/// tmpfs' `f_type`.
const TMPFS_MAGIC: i64 = 0x0102_1994;
/// Free space a scratch file system must have for a throwaway workspace.
const SCRATCH_MIN_FREE: u64 = 2 << 30;

/// What defines an environment.
#[derive(Debug, Clone)]
pub struct EnvSpec<'a> {
    pub source: &'a RepoSource,
    pub base_commit: &'a str,
    pub setup: &'a [String],
    /// Timeout for each setup command (and the clone).
    pub timeout: Duration,
    /// Memory limit for each setup command, in bytes (the task's `memory`).
    pub memory: Option<u64>,
}

impl EnvSpec<'_> {
    /// Stable key: a hash of the format version, source, base commit and setup.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(ENV_FORMAT);
        h.update([0]);
        match self.source {
            RepoSource::Path(p) => {
                let p = p.canonicalize().unwrap_or_else(|_| p.clone());
                h.update(b"path\0");
                h.update(p.as_os_str().as_encoded_bytes());
            }
            RepoSource::Url(u) => {
                h.update(b"url\0");
                h.update(u.as_bytes());
            }
        }
        h.update([0]);
        h.update(self.base_commit.as_bytes());
        for s in self.setup {
            h.update([0]);
            h.update(s.as_bytes());
        }
        let d = h.finalize();
        d.iter().take(10).map(|b| format!("{b:02x}")).collect()
    }
}

/// A ready environment.
#[derive(Debug, Clone)]
pub struct Env {
    pub key: String,
    /// Directory holding `repo/` and `home/`.
    pub dir: PathBuf,
    /// This call built it (false: it came from the cache).
    pub built: bool,
    pub elapsed: Duration,
}

impl Env {
    /// Setup left every tracked file as at the base commit.
    pub fn clean(&self) -> bool {
        self.dir.join(CLEAN).exists()
    }
}

/// How workspaces are made from a cached environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WorkspaceMode {
    /// Copy-on-write where the kernel and file system support it, else copy.
    #[default]
    Auto,
    /// Copy-on-write overlay over the cached environment; fail if unavailable.
    Overlay,
    /// A full copy of the environment per instance.
    Copy,
}

/// How one workspace was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `dir/repo` and `dir/home` are a private copy of the environment.
    Copy,
    /// Copy-on-write over `lower` (the environment directory, never
    /// written): the instance's files are in `dir/upper` (same layout as the
    /// environment), git's private index and objects in `dir/git`.
    Overlay { lower: PathBuf },
}

/// A fresh workspace for one instance. Removed on drop unless kept.
#[derive(Debug)]
pub struct Workspace {
    pub dir: PathBuf,
    pub keep: bool,
    pub layout: Layout,
    /// Why copy-on-write was not used, when it was wanted (`auto`).
    pub note: Option<String>,
    /// Where to hand the directory for removal (else it is removed in drop).
    reaper: Option<mpsc::Sender<PathBuf>>,
}

/// The repository as the harness edits it: the directory its tools write
/// (the whole repository, or an overlay's upper layer) and how git reaches
/// the repository's history.
#[derive(Debug, Clone)]
pub struct Tree {
    pub work: PathBuf,
    git_env: Vec<(&'static str, OsString)>,
}

impl Tree {
    /// A complete repository checked out at `path`.
    pub fn plain(path: impl Into<PathBuf>) -> Tree {
        Tree {
            work: path.into(),
            git_env: Vec::new(),
        }
    }

    /// git in the work directory, with no user or system configuration, no
    /// hooks, no prompts, and (for an overlay) the environment's repository as
    /// a read-only source of history.
    pub fn git(&self) -> Command {
        let mut c = git(&self.work);
        c.envs(self.git_env.iter().map(|(k, v)| (k, v)));
        c
    }
}

impl Workspace {
    /// `overlay` or `copy`, for reports.
    pub fn mode_name(&self) -> &'static str {
        match self.layout {
            Layout::Copy => "copy",
            Layout::Overlay { .. } => "overlay",
        }
    }

    /// Where the harness edits the repository.
    pub fn tree(&self) -> Tree {
        match &self.layout {
            Layout::Copy => Tree::plain(self.dir.join("repo")),
            Layout::Overlay { lower } => {
                let git = self.dir.join("git");
                let lower_git = lower.join("repo/.git");
                Tree {
                    work: self.dir.join("upper/repo"),
                    git_env: vec![
                        ("GIT_DIR", lower_git.clone().into()),
                        ("GIT_WORK_TREE", self.dir.join("upper/repo").into()),
                        ("GIT_INDEX_FILE", git.join("index").into()),
                        ("GIT_OBJECT_DIRECTORY", git.join("objects").into()),
                        (
                            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
                            lower_git.join("objects").into(),
                        ),
                    ],
                }
            }
        }
    }

    /// The directory the test command starts in (a host path; for an
    /// overlay, where the sandbox mounts the merged view).
    pub fn run_repo(&self) -> PathBuf {
        match &self.layout {
            Layout::Copy => self.dir.join("repo"),
            Layout::Overlay { lower } => lower.join("repo"),
        }
    }

    /// `$HOME` for the test command.
    pub fn run_home(&self) -> PathBuf {
        match &self.layout {
            Layout::Copy => self.dir.join("home"),
            Layout::Overlay { lower } => lower.join("home"),
        }
    }

    /// Directories the test command must be able to write besides its
    /// workspace. For an overlay there are none: `$HOME` is inside the merged
    /// view, and binding the environment's own `home/` would expose the cache.
    pub fn run_writable(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::Copy => vec![self.dir.join("home")],
            Layout::Overlay { .. } => Vec::new(),
        }
    }

    /// The copy-on-write mount the runner must use, if any.
    pub fn cow(&self) -> Option<CowRoot> {
        match &self.layout {
            Layout::Copy => None,
            Layout::Overlay { lower } => Some(CowRoot {
                lower: lower.clone(),
                upper: self.dir.join("upper"),
            }),
        }
    }

    /// Copies `paths` (repository-relative, as a patch names them) and the
    /// `.gitattributes` files above them from the environment into the
    /// upper layer, so the harness's tools see exactly what the merged view
    /// will show there. Directories are mirrored as directories, files with
    /// their mode and times, symlinks as symlinks (never followed). No-op for
    /// a copy workspace.
    pub fn materialise(&self, paths: &BTreeSet<String>) -> Result<(), EnvError> {
        let Layout::Overlay { lower } = &self.layout else {
            return Ok(());
        };
        let lower = lower.join("repo");
        let work = self.dir.join("upper/repo");
        let mut all: BTreeSet<String> = BTreeSet::new();
        for p in paths.iter().filter(|p| check_path(p).is_ok()) {
            let comps: Vec<&str> = components(p);
            for k in 0..comps.len() {
                let dir = comps[..k].join("/");
                all.insert(if dir.is_empty() {
                    ".gitattributes".into()
                } else {
                    format!("{dir}/.gitattributes")
                });
            }
            all.insert(comps.join("/"));
        }
        for p in &all {
            mirror(&lower, &work, p)?;
        }
        Ok(())
    }

    /// After the harness's edits: every path in `paths` that the edits
    /// removed from the upper layer but that exists in the environment gets
    /// an overlayfs whiteout, so the merged view shows it deleted; a
    /// directory left with nothing but whiteouts becomes one whiteout itself
    /// (as `git apply` removes directories it empties). No-op for a copy.
    pub fn seal(&self, paths: &BTreeSet<String>) -> Result<(), EnvError> {
        let Layout::Overlay { lower } = &self.layout else {
            return Ok(());
        };
        let lower = lower.join("repo");
        let work = self.dir.join("upper/repo");
        let mut parents: BTreeSet<String> = BTreeSet::new();
        for p in paths.iter().filter(|p| check_path(p).is_ok()) {
            let comps = components(p);
            if comps.is_empty() || !lower_has(&lower, &comps) {
                continue;
            }
            let target = work.join(comps.join("/"));
            if std::fs::symlink_metadata(&target).is_ok() {
                continue;
            }
            // Recreate the directories the edits emptied and removed.
            let mut cur = work.clone();
            let mut lower_cur = lower.clone();
            for c in &comps[..comps.len() - 1] {
                cur.push(c);
                lower_cur.push(c);
                match std::fs::symlink_metadata(&cur) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => break,
                    Err(_) => {
                        std::fs::create_dir(&cur)
                            .map_err(io(format!("cannot create {}", cur.display())))?;
                        copy_dir_meta(&lower_cur, &cur);
                    }
                }
            }
            whiteout(&target)?;
            for k in (1..comps.len()).rev() {
                parents.insert(comps[..k].join("/"));
            }
        }
        // Deepest first, so an emptied parent sees its emptied children.
        let mut parents: Vec<String> = parents.into_iter().collect();
        parents.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
        for d in parents {
            let (l, w) = (lower.join(&d), work.join(&d));
            if only_whiteouts(&w) && lower_all_whited(&l, &w) {
                std::fs::remove_dir_all(&w)
                    .map_err(io(format!("cannot replace {}", w.display())))?;
                whiteout(&w)?;
            }
        }
        Ok(())
    }

    /// Files of the repository as the test command will see it (tracked,
    /// and untracked but not ignored), relative paths. Read before the run.
    pub fn known_files(&self, touched: &BTreeSet<String>) -> HashSet<String> {
        let tree = self.tree();
        let mut c = tree.git();
        if let Layout::Overlay { lower } = &self.layout {
            // Untracked files come from the environment's own checkout (read only).
            c.env("GIT_WORK_TREE", lower.join("repo"))
                .current_dir(lower.join("repo"));
        }
        let mut files: HashSet<String> = c
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .output()
            .map(|o| {
                o.stdout
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if matches!(self.layout, Layout::Overlay { .. }) {
            for p in touched {
                match std::fs::symlink_metadata(tree.work.join(p)) {
                    Ok(m) if !is_whiteout(&m) => {
                        files.insert(p.clone());
                    }
                    _ => {
                        files.remove(p);
                    }
                }
            }
        }
        files
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Moved aside first, so the path is free for the next grading at once.
        static N: AtomicU64 = AtomicU64::new(0);
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let aside = self.dir.with_file_name(format!(
            ".{}.removing-{}-{}",
            name.unwrap_or_default(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        if let Some(tx) = &self.reaper
            && std::fs::rename(&self.dir, &aside).is_ok()
        {
            if let Err(mpsc::SendError(p)) = tx.send(aside) {
                remove_tree(&p);
            }
            return;
        }
        remove_tree(&self.dir);
    }
}

/// Removes finished workspaces on a thread of its own, so a grading does
/// not wait for the disk (freeing a Rust `target/` takes tens to hundreds
/// of milliseconds). Dropping it waits until everything handed over is gone.
struct Reaper {
    tx: Mutex<Option<mpsc::Sender<PathBuf>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Reaper {
    fn new() -> Reaper {
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let thread = std::thread::Builder::new()
            .name("runproof-reaper".into())
            .spawn(move || {
                for p in rx {
                    remove_tree(&p);
                }
            })
            .ok();
        Reaper {
            tx: Mutex::new(thread.is_some().then_some(tx)),
            thread: Mutex::new(thread),
        }
    }

    fn sender(&self) -> Option<mpsc::Sender<PathBuf>> {
        self.tx.lock().ok()?.clone()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

/// Removes a workspace, including the overlay work directory the kernel
/// leaves with mode 000.
fn remove_tree(dir: &Path) {
    if std::fs::remove_dir_all(dir).is_ok() {
        return;
    }
    fn open_up(d: &Path) {
        let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(dir);
    let _ = std::fs::remove_dir_all(dir);
}

fn components(p: &str) -> Vec<&str> {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    m.file_type().is_char_device() && m.rdev() == 0
}

fn whiteout(path: &Path) -> Result<(), EnvError> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| EnvError::Io {
        what: format!("cannot mark {} deleted", path.display()),
        msg: "path contains a NUL byte".into(),
    })?;
    // SAFETY: valid C string; a 0/0 character device is overlayfs' whiteout,
    // which Linux lets unprivileged users create since 5.8.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) } < 0 {
        return Err(EnvError::Io {
            what: format!("cannot mark {} deleted (overlay whiteout)", path.display()),
            msg: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok(())
}

/// Whether `comps` names an entry of the environment reached through real
/// directories only.
fn lower_has(lower: &Path, comps: &[&str]) -> bool {
    let mut cur = lower.to_path_buf();
    for (k, c) in comps.iter().enumerate() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if k + 1 == comps.len() => return !is_whiteout(&m),
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    false
}

fn only_whiteouts(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .all(|e| std::fs::symlink_metadata(e.path()).is_ok_and(|m| is_whiteout(&m))),
        Err(_) => false,
    }
}

fn lower_all_whited(lower: &Path, work: &Path) -> bool {
    match std::fs::read_dir(lower) {
        Ok(rd) => rd.flatten().all(|e| {
            std::fs::symlink_metadata(work.join(e.file_name())).is_ok_and(|m| is_whiteout(&m))
        }),
        Err(_) => false,
    }
}

fn copy_dir_meta(from: &Path, to: &Path) {
    if let Ok(m) = std::fs::symlink_metadata(from) {
        let _ = std::fs::set_permissions(to, m.permissions());
    }
}

/// Copies the entry at `rel` and the directories above it from `lower`
/// into `work`, stopping at the first entry that is missing or not a
/// directory. Entries already in `work` are left as they are.
fn mirror(lower: &Path, work: &Path, rel: &str) -> Result<(), EnvError> {
    let mut l = lower.to_path_buf();
    let mut w = work.to_path_buf();
    for c in components(rel) {
        l.push(c);
        w.push(c);
        match std::fs::symlink_metadata(&w) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => return Ok(()),
            Err(_) => {}
        }
        let Ok(m) = std::fs::symlink_metadata(&l) else {
            return Ok(());
        };
        let ft = m.file_type();
        let err = |what: &str| io(format!("cannot copy {} into {}", l.display(), what));
        if ft.is_dir() {
            std::fs::create_dir_all(&w).map_err(err("the workspace"))?;
            let _ = std::fs::set_permissions(&w, m.permissions());
        } else {
            if let Some(parent) = w.parent() {
                std::fs::create_dir_all(parent).map_err(err("the workspace"))?;
            }
            if ft.is_symlink() {
                let target = std::fs::read_link(&l).map_err(err("the workspace"))?;
                std::os::unix::fs::symlink(target, &w).map_err(err("the workspace"))?;
            } else if ft.is_file() {
                std::fs::copy(&l, &w).map_err(err("the workspace"))?;
                // Keep the times, so build tools see an unchanged file as unchanged.
                let times = std::fs::FileTimes::new()
                    .set_accessed(
                        m.accessed()
                            .unwrap_or_else(|_| std::time::SystemTime::now()),
                    )
                    .set_modified(
                        m.modified()
                            .unwrap_or_else(|_| std::time::SystemTime::now()),
                    );
                if let Ok(f) = std::fs::File::options().write(true).open(&w) {
                    let _ = f.set_times(times);
                }
            }
            return Ok(());
        }
    }
    Ok(())
}

/// Environment could not be prepared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnvError {
    #[error("cannot fetch the repository {src}: {msg}; check `repo_path`/`repo_url`")]
    Fetch { src: String, msg: String },
    #[error("base_commit `{commit}` is not in {src}: {msg}; check the task's `base_commit`")]
    BadCommit {
        commit: String,
        src: String,
        msg: String,
    },
    #[error("setup command `{cmd}` failed ({how}); its output is in {}", log.display())]
    Setup {
        cmd: String,
        how: String,
        log: PathBuf,
    },
    #[error("{what}: {msg}")]
    Io { what: String, msg: String },
}

/// The seam for environment layers.
pub trait Workspaces: Send + Sync {
    /// Returns the environment for `spec`, building it (clone, checkout,
    /// setup via `runner`) only if it is not cached yet. Concurrent callers
    /// with the same key wait for one build.
    fn environment(&self, spec: &EnvSpec<'_>, runner: &dyn TestRunner) -> Result<Env, EnvError>;
    /// Makes a fresh workspace from `env` at `dest` (cleared if it exists).
    fn workspace(&self, env: &Env, dest: &Path, keep: bool) -> Result<Workspace, EnvError>;
}

/// Environments as cached directories under `cache/envs/<key>`; workspaces
/// copy-on-write over them or copies of them (see [`WorkspaceMode`]).
pub struct EnvCache {
    cache: PathBuf,
    mode: WorkspaceMode,
    /// Put throwaway copy-on-write workspaces on the scratch tmpfs.
    scratch: bool,
    locks: Mutex<HashMap<String, Arc<Mutex<Option<EnvError>>>>>,
    reaper: Reaper,
}

impl EnvCache {
    /// Copy-on-write workspaces where possible (`WorkspaceMode::Auto`).
    pub fn new(cache: impl Into<PathBuf>) -> Self {
        Self::with_mode(cache, WorkspaceMode::Auto)
    }
    pub fn with_mode(cache: impl Into<PathBuf>, mode: WorkspaceMode) -> Self {
        EnvCache {
            cache: cache.into(),
            mode,
            scratch: true,
            locks: Mutex::new(HashMap::new()),
            reaper: Reaper::new(),
        }
    }
    /// Keep every workspace where the caller puts it, never on the scratch
    /// tmpfs (`RUNPROOF_SCRATCH=off` does the same for a whole process).
    pub fn without_scratch(mut self) -> Self {
        self.scratch = false;
        self
    }
    pub fn env_dir(&self, key: &str) -> PathBuf {
        self.cache.join("envs").join(key)
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EnvError {
    let what = what.into();
    move |e| EnvError::Io {
        what,
        msg: e.to_string(),
    }
}

/// git with no user or system configuration, no hooks, no prompts, nothing
/// that runs a helper or writes outside the index and objects.
pub(crate) fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "rerere.enabled=false",
            "-c",
            "gc.auto=0",
            "-c",
            "user.name=runproof",
            "-c",
            "user.email=runproof@localhost",
            "-c",
            "advice.detachedHead=false",
        ]);
    c
}

fn out_msg(o: &std::process::Output) -> String {
    let mut s = String::from_utf8_lossy(&o.stderr).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stdout));
    truncate(s.trim(), 1000)
}

/// Linux 5.11 or later: overlayfs mounts in a user namespace.
fn kernel_allows_overlay() -> Result<(), String> {
    static K: OnceLock<Result<(), String>> = OnceLock::new();
    K.get_or_init(|| {
        // SAFETY: uname fills the struct it is given.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        if unsafe { libc::uname(&mut u) } < 0 {
            return Err("uname failed".into());
        }
        // SAFETY: release is NUL-terminated by the kernel.
        let rel = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let mut it = rel.split(|c: char| !c.is_ascii_digit());
        let major: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let minor: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if (major, minor) >= (5, 11) {
            Ok(())
        } else {
            Err(format!(
                "Linux {rel} cannot mount overlayfs in a user namespace (needs 5.11)"
            ))
        }
    })
    .clone()
}

/// The private scratch directory for throwaway workspaces: `$RUNPROOF_SCRATCH`
/// (`off` for none), else `$XDG_RUNTIME_DIR/runproof` or
/// `/dev/shm/runproof-<uid>`, each only on tmpfs, owned by us and closed to
/// others (mode 0700). Found once per process; leftovers of dead processes
/// are removed then.
fn scratch_root() -> Option<&'static Path> {
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOT.get_or_init(|| {
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        let private_dir = |d: &Path, want_tmpfs: bool| -> bool {
            use std::os::unix::fs::{DirBuilderExt, MetadataExt};
            let _ = std::fs::DirBuilder::new().mode(0o700).create(d);
            let Ok(m) = std::fs::symlink_metadata(d) else {
                return false;
            };
            let ok = m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0;
            ok && (!want_tmpfs || fs_type(d) == Some(TMPFS_MAGIC))
        };
        let root = match std::env::var_os("RUNPROOF_SCRATCH") {
            Some(v) if v == "off" => None,
            Some(v) => Some(PathBuf::from(v)).filter(|d| d.is_absolute() && private_dir(d, false)),
            None => std::env::var_os("XDG_RUNTIME_DIR")
                .map(|r| PathBuf::from(r).join("runproof"))
                .filter(|d| d.is_absolute() && private_dir(d, true))
                .or_else(|| {
                    Some(PathBuf::from(format!("/dev/shm/runproof-{uid}")))
                        .filter(|d| private_dir(d, true))
                }),
        }?;
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| {
                    p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists()
                }) {
                    remove_tree(&e.path());
                }
            }
        }
        Some(root)
    })
    .as_deref()
}

/// A fresh directory in the scratch root, when it has room.
fn scratch_workspace() -> Option<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let root = scratch_root()?;
    let c = std::ffi::CString::new(root.as_os_str().as_bytes()).ok()?;
    // SAFETY: valid C string and an out-struct of the right type.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0
        || (st.f_bavail as u64).saturating_mul(st.f_frsize as u64) < SCRATCH_MIN_FREE
    {
        return None;
    }
    let d = root.join(format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&d).ok()?;
    Some(d)
}

fn fs_type(p: &Path) -> Option<i64> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: valid C string and an out-struct of the right type.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
}

/// Whether an overlay with `lower` and its upper and work directories in
/// `dir` (created) can be mounted by the sandbox.
fn overlay_usable(lower: &Path, dir: &Path) -> Result<(), String> {
    kernel_allows_overlay()?;
    for p in [lower, dir] {
        if p.as_os_str()
            .as_bytes()
            .iter()
            .any(|c| matches!(c, b',' | b':' | b'\\'))
        {
            return Err(format!(
                "{} contains `,`, `:` or `\\`, which overlayfs options cannot carry",
                p.display()
            ));
        }
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| "workspace path contains a NUL byte".to_string())?;
    if fs_type(dir) == Some(OVERLAYFS_SUPER_MAGIC) {
        return Err(format!(
            "{} is itself on overlayfs, which cannot hold an upper layer",
            dir.display()
        ));
    }
    let name = c"user.runproof.probe";
    // SAFETY: valid C strings and a one-byte value.
    let set = unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    if set < 0 {
        return Err(format!(
            "the file system of {} does not take user extended attributes ({}), which an unprivileged overlay needs",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: as above.
    unsafe { libc::removexattr(c.as_ptr(), name.as_ptr()) };
    Ok(())
}

impl Workspaces for EnvCache {
    fn environment(&self, spec: &EnvSpec<'_>, runner: &dyn TestRunner) -> Result<Env, EnvError> {
        let start = Instant::now();
        let key = spec.key();
        let dir = self.env_dir(&key);
        if dir.join(READY).exists() {
            return Ok(Env {
                key,
                dir,
                built: false,
                elapsed: start.elapsed(),
            });
        }
        let lock = {
            let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(key.clone()).or_default().clone()
        };
        let mut failed = lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = failed.as_ref() {
            return Err(e.clone());
        }
        if dir.join(READY).exists() {
            return Ok(Env {
                key,
                dir,
                built: false,
                elapsed: start.elapsed(),
            });
        }
        match build_env(spec, &dir, runner) {
            Ok(()) => Ok(Env {
                key,
                dir,
                built: true,
                elapsed: start.elapsed(),
            }),
            Err(e) => {
                *failed = Some(e.clone());
                Err(e)
            }
        }
    }

    fn workspace(&self, env: &Env, dest: &Path, keep: bool) -> Result<Workspace, EnvError> {
        if std::fs::symlink_metadata(dest).is_ok() {
            remove_tree(dest);
            if std::fs::symlink_metadata(dest).is_ok() {
                return Err(EnvError::Io {
                    what: format!("cannot clear old workspace {}", dest.display()),
                    msg: "it could not be removed".into(),
                });
            }
        }
        let mut note = None;
        // A throwaway copy-on-write workspace goes to a private tmpfs when
        // there is one with room: what the tests write and its removal then
        // cost no disk journal or discard (cargo's build output made removal
        // the largest part of the Rust example's overhead on ext4).
        if !keep
            && self.scratch
            && self.mode != WorkspaceMode::Copy
            && let Some(sdest) = scratch_workspace()
        {
            if overlay_usable(&env.dir, &sdest).is_ok() {
                let mut ws = overlay_workspace(env, &sdest, keep)?;
                ws.reaper = self.reaper.sender();
                return Ok(ws);
            }
            remove_tree(&sdest);
        }
        std::fs::create_dir_all(dest).map_err(io(format!("cannot create {}", dest.display())))?;
        if self.mode != WorkspaceMode::Copy {
            match overlay_usable(&env.dir, dest) {
                Ok(()) => {
                    let mut ws = overlay_workspace(env, dest, keep)?;
                    ws.reaper = self.reaper.sender();
                    return Ok(ws);
                }
                Err(why) if self.mode == WorkspaceMode::Auto => {
                    note = Some(format!("copy-on-write unavailable: {why}"));
                }
                Err(why) => {
                    return Err(EnvError::Io {
                        what: "cannot make a copy-on-write workspace".into(),
                        msg: format!("{why}; use `--workspaces copy`"),
                    });
                }
            }
        }
        let o = Command::new("cp")
            .args(["-a", "--reflink=auto", "--"])
            .arg(env.dir.join("repo"))
            .arg(env.dir.join("home"))
            .arg(dest)
            .output()
            .map_err(io("cannot run cp"))?;
        if !o.status.success() {
            return Err(EnvError::Io {
                what: format!("cannot copy environment to {}", dest.display()),
                msg: out_msg(&o),
            });
        }
        Ok(Workspace {
            dir: dest.to_path_buf(),
            keep,
            layout: Layout::Copy,
            note,
            reaper: self.reaper.sender(),
        })
    }
}

fn overlay_workspace(env: &Env, dest: &Path, keep: bool) -> Result<Workspace, EnvError> {
    let ws = Workspace {
        dir: dest.to_path_buf(),
        keep,
        layout: Layout::Overlay {
            lower: env.dir.clone(),
        },
        note: None,
        reaper: None,
    };
    for d in ["upper/repo", "upper/home", "git/objects"] {
        let p = dest.join(d);
        std::fs::create_dir_all(&p).map_err(io(format!("cannot create {}", p.display())))?;
    }
    // The upper directories take the environment's modes, as the merged view
    // shows the upper directory's attributes.
    copy_dir_meta(&env.dir, &dest.join("upper"));
    copy_dir_meta(&env.dir.join("repo"), &dest.join("upper/repo"));
    copy_dir_meta(&env.dir.join("home"), &dest.join("upper/home"));
    let index = env.dir.join("repo/.git/index");
    if index.exists() {
        std::fs::copy(&index, dest.join("git/index"))
            .map_err(io("cannot copy the environment's git index"))?;
    }
    Ok(ws)
}

fn build_env(spec: &EnvSpec<'_>, dir: &Path, runner: &dyn TestRunner) -> Result<(), EnvError> {
    let parent = dir.parent().expect("env dir has a parent");
    std::fs::create_dir_all(parent)
        .map_err(io(format!("cannot create cache {}", parent.display())))?;
    let tmp = parent.join(format!(
        ".tmp-{}-{}-{:?}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("env"),
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("home"))
        .map_err(io(format!("cannot create {}", tmp.display())))?;
    let res = populate(spec, &tmp, runner);
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::write(tmp.join(READY), spec.key()).map_err(io("cannot mark environment ready"))?;
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        // Another process finished the same environment first: use theirs.
        Err(_) if dir.join(READY).exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(io(format!(
            "cannot move environment into {}",
            dir.display()
        ))(e)),
    }
}

fn populate(spec: &EnvSpec<'_>, tmp: &Path, runner: &dyn TestRunner) -> Result<(), EnvError> {
    let repo = tmp.join("repo");
    let src_name = match spec.source {
        RepoSource::Path(p) => p.display().to_string(),
        RepoSource::Url(u) => u.clone(),
    };
    match spec.source {
        RepoSource::Path(p) => {
            if !p.join(".git").exists() && !p.join("HEAD").exists() {
                return Err(EnvError::Fetch {
                    src: src_name,
                    msg: "not a git repository (no .git); for the examples run examples/build.sh first".into(),
                });
            }
            let o = git(tmp)
                .args(["clone", "-q", "--no-checkout", "--no-hardlinks", "--"])
                .arg(p)
                .arg(&repo)
                .output()
                .map_err(io("cannot run git"))?;
            if !o.status.success() {
                return Err(EnvError::Fetch {
                    src: src_name,
                    msg: out_msg(&o),
                });
            }
        }
        RepoSource::Url(u) => {
            // Fetched inside a sandbox whose only way out is the runner's
            // network policy (the egress proxy); refused up front when the
            // policy would refuse the host.
            runner.check_fetch(u).map_err(|msg| EnvError::Fetch {
                src: src_name.clone(),
                msg,
            })?;
            let mut env = base_env(&tmp.join("home"));
            env.push(("GIT_ALLOW_PROTOCOL".into(), "http:https".into()));
            env.push(("GIT_CONFIG_NOSYSTEM".into(), "1".into()));
            env.push(("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()));
            let mut rq = RunRequest::shell(tmp.to_path_buf(), "", env, spec.timeout);
            rq.argv = [
                "git",
                "-c",
                "protocol.allow=never",
                "-c",
                "protocol.http.allow=always",
                "-c",
                "protocol.https.allow=always",
                "-c",
                "core.hooksPath=/dev/null",
                "clone",
                "-q",
                "--no-checkout",
                "--",
            ]
            .into_iter()
            .map(String::from)
            .chain([u.clone(), repo.to_string_lossy().into_owned()])
            .collect();
            rq.network = true;
            rq.memory = spec.memory;
            let r = runner.run(&rq).map_err(|e| EnvError::Fetch {
                src: src_name.clone(),
                msg: e.to_string(),
            })?;
            if !r.success() {
                let mut msg = truncate(String::from_utf8_lossy(&r.stderr).trim(), 1000);
                if msg.is_empty() {
                    msg = r.describe();
                }
                return Err(EnvError::Fetch { src: src_name, msg });
            }
        }
    }
    let o = git(&repo)
        .args(["checkout", "-q", "--detach", spec.base_commit, "--"])
        .output()
        .map_err(io("cannot run git"))?;
    if !o.status.success() {
        return Err(EnvError::BadCommit {
            commit: spec.base_commit.to_string(),
            src: src_name,
            msg: out_msg(&o),
        });
    }
    // The graded workspace must not be able to reach the source's other
    // history through a remote (the fix may be a later commit).
    let _ = git(&repo).args(["remote", "remove", "origin"]).output();
    let log_path = tmp.with_extension("setup.log");
    let mut log = Vec::new();
    for cmd in spec.setup {
        let mut rq =
            RunRequest::shell(repo.clone(), cmd, base_env(&tmp.join("home")), spec.timeout);
        rq.network = true;
        rq.memory = spec.memory;
        rq.writable.push(tmp.join("home"));
        let r = runner.run(&rq).map_err(|e| EnvError::Setup {
            cmd: truncate(cmd, 200),
            how: e.to_string(),
            log: log_path.clone(),
        })?;
        log.extend_from_slice(format!("$ {cmd}\n").as_bytes());
        log.extend_from_slice(&r.combined());
        log.extend_from_slice(format!("[{}]\n", r.describe()).as_bytes());
        if !r.success() {
            let final_log = tmp
                .parent()
                .unwrap_or(tmp)
                .join(format!("{}.setup-failed.log", spec.key()));
            let _ = std::fs::write(&final_log, &log);
            return Err(EnvError::Setup {
                cmd: truncate(cmd, 200),
                how: r.describe(),
                log: final_log,
            });
        }
    }
    std::fs::write(tmp.join("setup.log"), &log).map_err(io("cannot write setup log"))?;
    // Whether every tracked file is as at the base commit after setup: then
    // resetting a test file the model patch did not touch is a no-op the
    // harness can skip.
    let status = git(&repo)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map_err(io("cannot run git"))?;
    if status.status.success() && status.stdout.is_empty() {
        std::fs::write(tmp.join(CLEAN), "").map_err(io("cannot mark environment clean"))?;
    }
    Ok(())
}
