//! Workspace activity, seen from the host: a [`Watcher`] calls its caller
//! back whenever a sandboxed run changes its project, so a metered run that
//! keeps spending without changing anything can be flagged (the gateway's
//! spend-without-change check). With an overlay the caller watches the
//! upper layer, where every change lands; otherwise the workspace itself.
//!
//! The tree is hostile: the sandboxed command wrote it and keeps writing it
//! while it is watched. So:
//! - a symlink is never followed: directories are opened one name at a time
//!   relative to their parent with `O_NOFOLLOW`, and watched through
//!   `/proc/self/fd/N` of that descriptor, so a directory swapped for a
//!   symlink between listing and opening is skipped, not followed;
//! - the work is bounded: at most [`WatchOptions::max_watches`] directories
//!   (and the kernel's `fs.inotify.max_user_watches`), `max_depth` levels,
//!   `max_entries` directory entries read over the watcher's life; reaching
//!   a bound is reported in [`WatchStatus`], never silent;
//! - nothing in the tree is run, read or parsed: only directory listings;
//! - build output, dependencies, caches and version-control data
//!   ([`EXCLUDED_DIRS`]) are neither watched nor counted as progress.
//!
//! What counts as a change: a file (or symlink, or overlay whiteout)
//! created, written, deleted or renamed; a directory deleted or renamed
//! within the tree; a new directory that already holds files when it is
//! first listed. A directory that appears empty is watched but not counted
//! (overlayfs copies a directory up into the upper layer when a tool writes,
//! say, `__pycache__` beneath it), and neither are metadata changes (chmod,
//! touch) nor the files the host itself writes there
//! ([`WatchOptions::ignore_files`]: an audit log, a ledger).
//!
//! Idle cost: one thread blocked in poll(2) on the inotify descriptor.

use crate::report::{LayerState, LayerStatus};
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Directory names that are not the project: build output, installed
/// dependencies, caches and version-control data. They are not watched, and
/// what happens in them is not progress (a rebuild, an install, a test run
/// writing `__pycache__`, `git status` refreshing `.git/index`). All of
/// `.git` is excluded, not only `.git/objects`: a stuck agent running git
/// commands rewrites the index and logs without changing a line.
pub const EXCLUDED_DIRS: &[&str] = &[
    "node_modules",
    "bower_components",
    "target",
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".tox",
    ".nox",
    ".eggs",
    ".hypothesis",
    ".gradle",
    ".next",
    ".turbo",
    ".parcel-cache",
    ".cache",
];

/// True for a directory name in [`EXCLUDED_DIRS`].
pub fn is_excluded(name: &[u8]) -> bool {
    EXCLUDED_DIRS.iter().any(|d| d.as_bytes() == name)
}

/// Bounds on the work one watcher does.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Directories watched at most (each is one inotify watch).
    pub max_watches: usize,
    /// Directory nesting below the root that is still watched.
    pub max_depth: usize,
    /// Directory entries read in all (the first listing and every new
    /// directory after it), over the watcher's life.
    pub max_entries: u64,
    /// Files the host writes inside the tree (an audit log, a ledger and
    /// its `-wal`/`-shm`/`-journal`): their changes are not the run's.
    pub ignore_files: Vec<PathBuf>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            max_watches: 8192,
            max_depth: 64,
            max_entries: 4_000_000,
            ignore_files: Vec::new(),
        }
    }
}

/// Why a watcher could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {} for changes: {msg}", path.display())]
pub struct WatchError {
    pub path: PathBuf,
    pub msg: String,
}

/// What a watcher covers and has seen, for the run's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WatchStatus {
    pub root: PathBuf,
    /// Directories watched now, and at most at once.
    pub watched: usize,
    pub peak_watched: usize,
    /// Directories that got a watch over the watcher's life.
    pub watches_added: u64,
    /// Names from [`EXCLUDED_DIRS`] met in the tree (not watched).
    pub excluded: BTreeSet<String>,
    /// Symlinks met where a directory could have been (never followed).
    pub symlinks: u64,
    /// The watch limit, when it was reached (this many directories were
    /// watched then), and whether it was the kernel's.
    pub limit_reached: Option<usize>,
    pub kernel_limit: bool,
    /// Directories left unwatched because of the limit (at least: their
    /// subdirectories are not listed).
    pub unwatched: u64,
    /// Directories deeper than `max_depth`, not watched.
    pub too_deep: u64,
    /// True once `max_entries` were read: later directories are not listed.
    pub entries_exhausted: bool,
    /// Directories that could not be opened, listed or watched.
    pub unreadable: u64,
    /// Times the kernel's event queue overflowed (each counted as a change,
    /// and followed by a new listing of the tree).
    pub overflows: u64,
    /// Batches of events that counted as a change (callbacks made).
    pub changes: u64,
}

impl WatchStatus {
    /// True when every directory of the tree outside [`EXCLUDED_DIRS`] was watched.
    pub fn complete(&self) -> bool {
        self.limit_reached.is_none()
            && self.too_deep == 0
            && !self.entries_exhausted
            && self.unreadable == 0
    }

    /// One line: what is watched, what is excluded, what is missing.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(at) = self.limit_reached {
            parts.push(format!(
                "partial: {} reached at {at} directories (at least {} more not watched: changes there are missed)",
                if self.kernel_limit {
                    "the kernel's watch limit (fs.inotify.max_user_watches)"
                } else {
                    "watch limit"
                },
                self.unwatched
            ));
        }
        if self.too_deep > 0 {
            parts.push(format!(
                "partial: {} directories nested too deep not watched",
                self.too_deep
            ));
        }
        if self.entries_exhausted {
            parts.push(
                "partial: directory-entry limit reached, later directories not listed".into(),
            );
        }
        if self.unreadable > 0 {
            parts.push(format!(
                "partial: {} directories could not be read",
                self.unreadable
            ));
        }
        parts.push(format!(
            "watching {} director{} of {}",
            self.peak_watched.max(self.watched),
            if self.peak_watched.max(self.watched) == 1 {
                "y"
            } else {
                "ies"
            },
            self.root.display()
        ));
        if !self.excluded.is_empty() {
            parts.push(format!(
                "{} excluded (not progress)",
                self.excluded.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if self.symlinks > 0 {
            parts.push(format!("{} symlinks not followed", self.symlinks));
        }
        if self.overflows > 0 {
            parts.push(format!("event queue overflowed {} times", self.overflows));
        }
        parts.push(format!("{} changes seen", self.changes));
        parts.join("; ")
    }

    /// The `change detection` entry of a run's layer list.
    pub fn layer(&self) -> LayerStatus {
        LayerStatus::new(
            "change detection",
            if self.complete() {
                LayerState::Enforced
            } else {
                LayerState::Partial
            },
            self.describe(),
        )
    }
}

/// Watches a tree until stopped or dropped; calls `on_change` (from its own
/// thread) at most once per batch of events that changed the tree.
pub struct Watcher {
    status: Arc<Mutex<WatchStatus>>,
    wake: Option<UnixStream>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn mask() -> WatchFlags {
    WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::MODIFY
        | WatchFlags::MOVED_FROM
        | WatchFlags::MOVED_TO
        | WatchFlags::ONLYDIR
        | WatchFlags::EXCL_UNLINK
}

fn sysctl(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

impl Watcher {
    /// List `root` and watch it. The first listing happens here, so what
    /// the caller does after `start` returns is seen.
    pub fn start(
        root: &Path,
        opts: WatchOptions,
        on_change: impl Fn() + Send + 'static,
    ) -> Result<Watcher, WatchError> {
        let err = |msg: String| WatchError {
            path: root.to_path_buf(),
            msg,
        };
        let ino = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).map_err(|e| {
            err(match e {
                Errno::MFILE => format!(
                    "too many inotify instances for this user (fs.inotify.max_user_instances = {}); raise it with sysctl",
                    sysctl("max_user_instances")
                ),
                e => format!("inotify_init1: {e}"),
            })
        })?;
        let root_fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err(format!("open: {e}")))?;
        let canon = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        let ignore = opts
            .ignore_files
            .iter()
            .filter_map(|f| {
                let parent = f.parent()?.canonicalize().ok()?;
                let rel = parent.strip_prefix(&canon).ok()?.to_path_buf();
                Some((rel, f.file_name()?.as_bytes().to_vec()))
            })
            .collect();
        let mut tree = Tree {
            ino,
            root: root_fd,
            dirs: HashMap::new(),
            opts,
            ignore,
            entries: 0,
            last_error: None,
            st: WatchStatus {
                root: canon,
                ..WatchStatus::default()
            },
        };
        let first = tree
            .open_rel(Path::new(""))
            .map_err(|e| err(format!("open: {e}")))?;
        tree.watch_dir(first, PathBuf::new(), 0);
        if tree.dirs.is_empty() {
            return Err(err(match tree.last_error {
                Some(Errno::NOENT) => {
                    "inotify_add_watch through /proc/self/fd failed: is /proc mounted?".into()
                }
                Some(Errno::NOSPC) => format!(
                    "the kernel's inotify watch limit is reached (fs.inotify.max_user_watches = {}); raise it with sysctl",
                    sysctl("max_user_watches")
                ),
                Some(e) => format!("inotify_add_watch: {e}"),
                None => "inotify_add_watch failed".into(),
            }));
        }
        tree.st.watched = tree.dirs.len();
        tree.st.peak_watched = tree.st.watched;
        let status = Arc::new(Mutex::new(tree.st.clone()));
        let (wake, wake_rx) =
            UnixStream::pair().map_err(|e| err(format!("socket pair to stop the watcher: {e}")))?;
        let shared = status.clone();
        let thread = std::thread::Builder::new()
            .name("runproof-watch".into())
            .spawn(move || tree.serve(wake_rx, shared, on_change))
            .map_err(|e| err(format!("start the watcher thread: {e}")))?;
        Ok(Watcher {
            status,
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// What the watcher covers and has seen so far.
    pub fn status(&self) -> WatchStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stop watching; the final status.
    pub fn stop(mut self) -> WatchStatus {
        self.shutdown();
        self.status()
    }

    fn shutdown(&mut self) {
        // Closing our end wakes the thread (its end reads end-of-file).
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One event, copied out of the read buffer.
struct Ev {
    wd: i32,
    mask: ReadFlags,
    cookie: u32,
    name: Option<Vec<u8>>,
}

/// Most events handled in one batch (the rest wait for the next).
const MAX_BATCH: usize = 4096;

/// The watcher thread's state.
struct Tree {
    ino: OwnedFd,
    root: OwnedFd,
    /// Watch descriptor → directory, relative to the root ("" for the root).
    dirs: HashMap<i32, PathBuf>,
    opts: WatchOptions,
    /// (directory relative to the root, file name) the host writes.
    ignore: Vec<(PathBuf, Vec<u8>)>,
    entries: u64,
    last_error: Option<Errno>,
    st: WatchStatus,
}

impl Tree {
    /// Open a directory below the root one name at a time, never following
    /// a symlink; `..` and absolute components are refused.
    fn open_rel(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        let mut fd = rustix::fs::openat(&self.root, ".", DIR_FLAGS, Mode::empty())?;
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(Errno::INVAL);
            };
            fd = rustix::fs::openat(&fd, name, DIR_FLAGS, Mode::empty())?;
        }
        Ok(fd)
    }

    fn limit_hit(&mut self, kernel: bool) {
        if self.st.limit_reached.is_none() {
            self.st.limit_reached = Some(self.dirs.len());
            self.st.kernel_limit = kernel;
        }
        self.st.unwatched += 1;
    }

    fn ignored(&self, rel: &Path, name: &[u8]) -> bool {
        self.ignore.iter().any(|(d, n)| d == rel && n == name)
    }

    /// Watch the directory open as `fd` (at `rel`, `depth` levels down) and
    /// everything below it. True when a directory that was not watched
    /// before already held something other than directories.
    fn watch_dir(&mut self, fd: OwnedFd, rel: PathBuf, depth: usize) -> bool {
        if self.dirs.len() >= self.opts.max_watches {
            self.limit_hit(false);
            return false;
        }
        let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let wd = match inotify::add_watch(&self.ino, proc_path.as_str(), mask()) {
            Ok(wd) => wd,
            Err(Errno::NOSPC) => {
                self.last_error = Some(Errno::NOSPC);
                self.limit_hit(true);
                return false;
            }
            Err(e) => {
                self.last_error = Some(e);
                self.st.unreadable += 1;
                return false;
            }
        };
        // A directory renamed within the tree keeps its watch: only its
        // path changes.
        let fresh = self.dirs.insert(wd, rel.clone()).is_none();
        self.st.watches_added += u64::from(fresh);
        self.st.watched = self.dirs.len();
        self.st.peak_watched = self.st.peak_watched.max(self.st.watched);
        let mut dir = match Dir::read_from(&fd) {
            Ok(d) => d,
            Err(_) => {
                self.st.unreadable += 1;
                return false;
            }
        };
        let mut holds_files = false;
        while let Some(ent) = dir.read() {
            let Ok(ent) = ent else {
                self.st.unreadable += 1;
                break;
            };
            let name = ent.file_name();
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            self.entries += 1;
            if self.entries > self.opts.max_entries {
                self.st.entries_exhausted = true;
                break;
            }
            let ty = match ent.file_type() {
                FileType::Unknown => rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|s| FileType::from_raw_mode(s.st_mode))
                    .unwrap_or(FileType::Unknown),
                t => t,
            };
            match ty {
                FileType::Directory => {
                    if is_excluded(bytes) {
                        self.st
                            .excluded
                            .insert(String::from_utf8_lossy(bytes).into_owned());
                        continue;
                    }
                    if depth + 1 > self.opts.max_depth {
                        self.st.too_deep += 1;
                        continue;
                    }
                    if self.dirs.len() >= self.opts.max_watches {
                        self.limit_hit(false);
                        continue;
                    }
                    match rustix::fs::openat(&fd, name, DIR_FLAGS, Mode::empty()) {
                        Ok(child) => {
                            let child_rel = rel.join(OsStr::from_bytes(bytes));
                            holds_files |= self.watch_dir(child, child_rel, depth + 1);
                        }
                        // Swapped for a symlink (never followed) or gone.
                        Err(Errno::LOOP | Errno::NOTDIR) => self.st.symlinks += 1,
                        Err(Errno::NOENT) => {}
                        Err(_) => self.st.unreadable += 1,
                    }
                }
                FileType::Symlink => {
                    self.st.symlinks += 1;
                    holds_files |= fresh;
                }
                _ => holds_files |= fresh && !self.ignored(&rel, bytes),
            }
        }
        holds_files
    }

    /// Watch the directory at `rel` and below; see [`Tree::watch_dir`].
    fn watch_path(&mut self, rel: &Path) -> bool {
        let depth = rel.components().count();
        if depth > self.opts.max_depth {
            self.st.too_deep += 1;
            return false;
        }
        match self.open_rel(rel) {
            Ok(fd) => self.watch_dir(fd, rel.to_path_buf(), depth),
            Err(_) => false,
        }
    }

    /// Stop watching `rel` and everything below it (renamed out of the tree).
    fn unwatch_under(&mut self, rel: &Path) {
        let gone: Vec<i32> = self
            .dirs
            .iter()
            .filter(|(_, p)| p.starts_with(rel))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in gone {
            let _ = inotify::remove_watch(&self.ino, wd);
            self.dirs.remove(&wd);
        }
    }

    /// Apply one batch of events; true when it changed the tree.
    fn handle(&mut self, evs: &[Ev]) -> bool {
        let mut changed = false;
        let mut rescan_all = false;
        let mut new_dirs: Vec<PathBuf> = Vec::new();
        let mut moved_from: Vec<(u32, PathBuf)> = Vec::new();
        for e in evs {
            if e.mask.contains(ReadFlags::QUEUE_OVERFLOW) {
                // Events were lost: something changed; list the tree again.
                self.st.overflows += 1;
                changed = true;
                rescan_all = true;
                continue;
            }
            if e.mask.contains(ReadFlags::IGNORED) {
                self.dirs.remove(&e.wd);
                continue;
            }
            let (Some(rel), Some(name)) = (self.dirs.get(&e.wd), e.name.as_deref()) else {
                continue;
            };
            let is_dir = e.mask.contains(ReadFlags::ISDIR);
            if is_dir && is_excluded(name) {
                self.st
                    .excluded
                    .insert(String::from_utf8_lossy(name).into_owned());
                continue;
            }
            let child = rel.join(OsStr::from_bytes(name));
            if !is_dir {
                changed |= !self.ignored(rel, name);
            } else if e.mask.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
                // Renamed within the tree: a change. Appearing from
                // elsewhere (created, or copied up by overlayfs): only if it
                // holds files when listed.
                if e.mask.contains(ReadFlags::MOVED_TO)
                    && let Some(i) = moved_from.iter().position(|(c, _)| *c == e.cookie)
                {
                    moved_from.swap_remove(i);
                    changed = true;
                }
                new_dirs.push(child);
            } else if e.mask.contains(ReadFlags::MOVED_FROM) {
                moved_from.push((e.cookie, child));
                changed = true;
            } else if e.mask.contains(ReadFlags::DELETE) {
                changed = true;
            }
        }
        // Renamed out of the tree (no matching MOVED_TO in this batch): stop
        // watching it; if it comes back in, its MOVED_TO watches it again.
        for (_, gone) in moved_from {
            self.unwatch_under(&gone);
        }
        if rescan_all {
            new_dirs = vec![PathBuf::new()];
        }
        for rel in new_dirs {
            if self.st.entries_exhausted {
                self.st.unwatched += 1;
                continue;
            }
            changed |= self.watch_path(&rel);
        }
        self.st.watched = self.dirs.len();
        changed
    }

    fn serve(mut self, wake: UnixStream, shared: Arc<Mutex<WatchStatus>>, on_change: impl Fn()) {
        let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 * 1024];
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.ino.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfd structs, owned by this frame.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            if fds[1].revents != 0 {
                break;
            }
            if fds[0].revents & libc::POLLIN == 0 {
                if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                    break;
                }
                continue;
            }
            let mut evs = Vec::new();
            {
                let mut reader = inotify::Reader::new(&self.ino, &mut buf);
                loop {
                    match reader.next() {
                        Ok(e) => evs.push(Ev {
                            wd: e.wd(),
                            mask: e.events(),
                            cookie: e.cookie(),
                            name: e.file_name().map(|n| n.to_bytes().to_vec()),
                        }),
                        Err(Errno::INTR) => continue,
                        Err(_) => break,
                    }
                    if evs.len() >= MAX_BATCH && reader.is_buffer_empty() {
                        break;
                    }
                }
            }
            let changed = self.handle(&evs);
            if changed {
                self.st.changes += 1;
            }
            // The status first: whoever the change wakes reads it.
            *shared.lock().unwrap_or_else(|e| e.into_inner()) = self.st.clone();
            if changed {
                on_change();
            }
        }
        *shared.lock().unwrap_or_else(|e| e.into_inner()) = self.st.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// The deadline of every wait below (not a timing assertion: a broken
    /// watcher fails instead of hanging).
    const DEADLINE: Duration = Duration::from_secs(20);

    struct T {
        dir: tempfile::TempDir,
        w: Watcher,
        rx: mpsc::Receiver<()>,
        syncs: std::cell::Cell<u32>,
    }

    fn watch(dir: tempfile::TempDir, opts: WatchOptions) -> T {
        let (tx, rx) = mpsc::channel();
        let w = Watcher::start(dir.path(), opts, move || {
            let _ = tx.send(());
        })
        .unwrap();
        T {
            dir,
            w,
            rx,
            syncs: Default::default(),
        }
    }

    impl T {
        fn p(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }
        fn wait(&self, what: &str, mut f: impl FnMut(&WatchStatus) -> bool) -> WatchStatus {
            let t0 = Instant::now();
            loop {
                let s = self.w.status();
                if f(&s) {
                    return s;
                }
                assert!(t0.elapsed() < DEADLINE, "{what}: {s:#?}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        /// Make an empty directory (watched, not a change) and wait until
        /// the watcher has it: every event queued before it was handled.
        fn sync(&self, name: &str) {
            let before = self.w.status().watches_added;
            std::fs::create_dir(self.p(name)).unwrap();
            self.wait("the sync directory is watched", |s| {
                s.watches_added > before
            });
        }
        fn changes(&self) -> u64 {
            while self.rx.try_recv().is_ok() {}
            self.w.status().changes
        }
        /// Run `op` once every earlier event was handled, and expect it to
        /// be reported as a change.
        fn changed_by(&self, what: &str, op: impl FnOnce()) {
            let n = self.syncs.get() + 1;
            self.syncs.set(n);
            self.sync(&format!(".sync-{n}"));
            while self.rx.try_recv().is_ok() {}
            op();
            self.rx
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("{what} is reported as a change"));
        }
    }

    fn tree(dirs: &[&str], files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for x in dirs {
            std::fs::create_dir_all(d.path().join(x)).unwrap();
        }
        for f in files {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        d
    }

    #[test]
    fn a_new_subdirectory_is_watched_and_a_file_in_it_is_a_change() {
        let t = watch(tree(&["src"], &["src/a.py"]), WatchOptions::default());
        assert_eq!(t.w.status().watched, 2);
        // An empty directory is watched but is not progress.
        t.sync("pkg");
        std::fs::create_dir_all(t.p("pkg/deep/er")).unwrap();
        t.wait("new nested directories are watched", |s| s.watched == 5);
        assert_eq!(t.changes(), 0, "empty directories are not a change");
        t.changed_by("a file in a new directory", || {
            std::fs::write(t.p("pkg/deep/er/new.py"), "print(1)\n").unwrap()
        });
        t.changed_by("an edit", || std::fs::write(t.p("src/a.py"), "y").unwrap());
        t.changed_by("a rename", || {
            std::fs::rename(t.p("src/a.py"), t.p("src/b.py")).unwrap()
        });
        t.changed_by("a deletion", || {
            std::fs::remove_file(t.p("src/b.py")).unwrap()
        });
        t.changed_by("a directory deleted", || {
            std::fs::remove_dir(t.p(".sync-1")).unwrap()
        });
        let s = t.w.stop();
        assert!(s.complete(), "{s:#?}");
        assert_eq!(s.layer().state, LayerState::Enforced);
        // root, src, pkg, pkg/deep, pkg/deep/er and the sync directories.
        assert!(
            s.describe().starts_with("watching 10 directories of "),
            "{}",
            s.describe()
        );
    }

    #[test]
    fn a_directory_created_with_files_already_in_it_is_a_change() {
        // A directory renamed in from outside the tree arrives complete:
        // its files were never seen being written.
        let t = watch(tree(&[], &[]), WatchOptions::default());
        let outside = tree(&["made/sub"], &["made/sub/f.rs"]);
        // Same file system (both under the temp directory): a real rename.
        t.changed_by("a directory moved in with files", || {
            std::fs::rename(outside.path().join("made"), t.p("made")).unwrap()
        });
        t.wait("its directories are watched", |s| s.watched == 4);
    }

    #[test]
    fn excluded_directories_are_not_watched_and_not_progress() {
        let t = watch(
            tree(
                &[
                    "src",
                    "node_modules/left-pad",
                    "target/debug",
                    ".git/objects/ab",
                    "lib/__pycache__",
                ],
                &["src/main.rs"],
            ),
            WatchOptions::default(),
        );
        let s = t.w.status();
        assert_eq!(s.watched, 3, "root, src, lib: {s:#?}");
        for n in ["node_modules", "target", ".git", "__pycache__"] {
            assert!(s.excluded.contains(n), "{n}: {s:#?}");
        }
        assert!(s.describe().contains("excluded (not progress)"));
        // Writes inside them, and creating one, change nothing.
        std::fs::write(t.p("node_modules/left-pad/index.js"), "x").unwrap();
        std::fs::create_dir_all(t.p("target/debug/deps")).unwrap();
        std::fs::write(t.p("target/debug/deps/app"), "x").unwrap();
        std::fs::write(t.p(".git/index"), "x").unwrap();
        std::fs::create_dir_all(t.p("src/__pycache__")).unwrap();
        std::fs::write(t.p("src/__pycache__/m.pyc"), "x").unwrap();
        std::fs::create_dir_all(t.p("web/node_modules/x")).unwrap();
        t.sync("probe");
        assert_eq!(t.changes(), 0, "{:#?}", t.w.status());
        // The project itself is.
        t.changed_by("a source edit", || {
            std::fs::write(t.p("src/main.rs"), "fn main() {}").unwrap()
        });
    }

    #[test]
    fn a_symlinked_directory_is_not_followed() {
        let outside = tree(&["secret/inner"], &["secret/inner/f"]);
        let ws = tree(&["src"], &[]);
        std::os::unix::fs::symlink(outside.path().join("secret"), ws.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.path().join("src/up")).unwrap();
        let t = watch(ws, WatchOptions::default());
        let s = t.w.status();
        assert_eq!(s.watched, 2, "root and src only: {s:#?}");
        assert_eq!(s.symlinks, 2, "{s:#?}");
        assert!(s.describe().contains("2 symlinks not followed"));
        // Writes behind the links are outside the tree: not seen.
        std::fs::write(outside.path().join("secret/inner/g"), "x").unwrap();
        std::fs::create_dir(outside.path().join("secret/inner/h")).unwrap();
        t.sync("probe");
        assert_eq!(t.changes(), 0);
        assert_eq!(t.w.status().watched, 3, "root, src, probe");
        // Replacing a directory by a symlink to a tree outside: the link is
        // a change, the tree behind it is never watched.
        t.changed_by("a symlink replacing a directory", || {
            std::fs::remove_dir(t.p("probe")).unwrap();
            std::os::unix::fs::symlink(outside.path().join("secret"), t.p("probe")).unwrap();
        });
        t.sync("probe2");
        assert_eq!(t.w.status().watched, 4, "root, src, .sync-1, probe2");
    }

    #[test]
    fn the_number_of_watches_is_bounded_and_reaching_it_is_reported() {
        let dirs: Vec<String> = (0..10).map(|i| format!("d{i}/sub")).collect();
        let refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        let t = watch(
            tree(&refs, &[]),
            WatchOptions {
                max_watches: 4,
                ..WatchOptions::default()
            },
        );
        let s = t.w.status();
        assert_eq!(s.watched, 4, "{s:#?}");
        assert_eq!(s.limit_reached, Some(4));
        assert!(s.unwatched >= 7, "{s:#?}");
        assert!(!s.complete());
        let l = s.layer();
        assert_eq!(l.state, LayerState::Partial);
        assert!(
            l.detail
                .starts_with("partial: watch limit reached at 4 directories"),
            "{}",
            l.detail
        );
        // New directories past the limit are not watched either; a change
        // in a watched one is still seen.
        let before = t.w.status().unwatched;
        std::fs::create_dir(t.p("later")).unwrap();
        std::fs::write(t.p("later.txt"), "x").unwrap();
        t.rx.recv_timeout(DEADLINE)
            .expect("a file written in the root is a change");
        let s = t.w.status();
        assert_eq!(s.watched, 4);
        assert_eq!(s.unwatched, before + 1, "{s:#?}");
    }

    #[test]
    fn depth_is_bounded() {
        let t = watch(
            tree(&["a/b/c/d"], &[]),
            WatchOptions {
                max_depth: 2,
                ..WatchOptions::default()
            },
        );
        let s = t.w.status();
        assert_eq!((s.watched, s.too_deep), (3, 1), "{s:#?}");
        assert!(s.describe().contains("nested too deep"), "{}", s.describe());
    }

    #[test]
    fn files_the_host_writes_are_not_progress() {
        let d = tree(&["logs"], &["logs/audit.jsonl", "ledger.db"]);
        let ignore = vec![
            d.path().join("logs/audit.jsonl"),
            d.path().join("ledger.db"),
        ];
        let t = watch(
            d,
            WatchOptions {
                ignore_files: ignore,
                ..WatchOptions::default()
            },
        );
        std::fs::write(t.p("logs/audit.jsonl"), "{}\n").unwrap();
        std::fs::write(t.p("ledger.db"), "x").unwrap();
        t.sync("probe");
        assert_eq!(t.changes(), 0);
        t.changed_by("another file", || {
            std::fs::write(t.p("logs/other.txt"), "x").unwrap()
        });
    }

    #[test]
    fn a_renamed_directory_keeps_being_watched_at_its_new_path() {
        let t = watch(tree(&["old/inner"], &[]), WatchOptions::default());
        t.changed_by("a directory renamed", || {
            std::fs::rename(t.p("old"), t.p("new")).unwrap()
        });
        // A directory made in the renamed one is found at its new path.
        std::fs::create_dir(t.p("new/inner/made")).unwrap();
        t.wait("the new directory is watched", |s| s.watched == 5);
        t.changed_by("a file in it", || {
            std::fs::write(t.p("new/inner/made/f"), "x").unwrap()
        });
        assert!(t.w.stop().complete());
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let e = Watcher::start(
            Path::new("/nonexistent/runproof-watch"),
            WatchOptions::default(),
            || {},
        )
        .err()
        .unwrap();
        assert!(
            e.to_string()
                .starts_with("cannot watch /nonexistent/runproof-watch for changes: open:"),
            "{e}"
        );
    }
}
