//! The walk: a small pool of threads sharing a stack of directories and
//! batches of files. It never follows a symbolic link, never consults an
//! ignore file, descends into `.git` only for `config` and `hooks/`, and
//! reads each file through a bounded buffer.
//!
//! Every directory and file is opened relative to its parent directory's
//! descriptor (`openat`) with `O_NOFOLLOW`, never by path: a directory swapped
//! for a symlink after it was listed fails to open instead of leading out of
//! the tree, and a renamed parent cannot redirect the names under it. Files
//! also get `O_NONBLOCK`, so a FIFO swapped in cannot block the scan.

use crate::checks::{self, FileCtx};
use crate::classify::{self, FileKind};
use crate::model::{Finding, Report, ScanError, ScanOptions, Stats};
use crate::payload;
use crate::sink::{self, ScriptRef, Sink};
use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Directory names skipped with `skip_vendored`.
pub const VENDORED: &[&str] = &[
    "node_modules",
    "bower_components",
    "jspm_packages",
    "vendor",
    ".venv",
    "venv",
    "site-packages",
    "__pypackages__",
    ".tox",
    ".nox",
    "target",
    ".gradle",
    "Pods",
];

/// Files handed to one job.
const BATCH: usize = 64;
/// Bytes looked at for a NUL to call a file binary.
const BINARY_PROBE: usize = 8192;

/// A directory descriptor shared by the jobs that open names inside it; it
/// closes when the last of them is done, so open descriptors stay few (about
/// one per directory with pending work, not one per queued directory).
type DirFd = Arc<OwnedFd>;

struct FileJob {
    dir: DirFd,
    name: CString,
    rel: String,
}

enum Job {
    /// A directory to open inside `parent` and list.
    Dir {
        parent: DirFd,
        name: CString,
        rel: String,
    },
    Files(Vec<FileJob>),
}

struct Queue {
    jobs: Vec<Job>,
    active: usize,
}

struct Shared<'a> {
    q: Mutex<Queue>,
    cv: Condvar,
    opts: &'a ScanOptions,
}

#[derive(Default)]
struct Worker {
    sink: Sink,
    stats: Stats,
    files: Vec<String>,
    buf: Vec<u8>,
}

fn rel_join(base: &str, name: &OsStr) -> String {
    let n = name.to_string_lossy();
    if base.is_empty() {
        n.into_owned()
    } else {
        format!("{base}/{n}")
    }
}

fn cvt(fd: libc::c_int) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: a fresh descriptor returned by the kernel, owned by no one else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Opens the directory `name` inside `parent` without following a symlink.
fn open_dir_at(parent: RawFd, name: &CStr) -> std::io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; `parent` is a live descriptor.
    cvt(unsafe {
        libc::openat(
            parent,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// Opens `name` inside `parent` for reading: no symlink, no blocking on a
/// FIFO, no controlling terminal.
fn open_file_at(parent: RawFd, name: &CStr) -> std::io::Result<fs::File> {
    // SAFETY: as above.
    let fd = cvt(unsafe {
        libc::openat(
            parent,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    })?;
    Ok(fs::File::from(fd))
}

/// The type of `name` inside `dir` as `lstat` sees it (`DT_*`).
fn type_at(dir: RawFd, name: &CStr) -> u8 {
    // SAFETY: zeroed stat is a valid out-parameter; `name` is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return libc::DT_UNKNOWN;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => libc::DT_DIR,
        libc::S_IFREG => libc::DT_REG,
        libc::S_IFLNK => libc::DT_LNK,
        _ => libc::DT_UNKNOWN,
    }
}

/// The entries of an open directory (without `.` and `..`), with their
/// types; entries whose type the file system does not give are `lstat`ed
/// relative to the directory. The flag is set when reading stopped on an
/// error after some entries (the caller counts it as unreadable).
fn list_dir(dir: &OwnedFd) -> std::io::Result<(Vec<(CString, u8)>, bool)> {
    // fdopendir takes ownership of the descriptor it is given: hand it a
    // duplicate so `dir` stays valid for the openat calls that follow.
    let dup = cvt(unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    let raw = dup.as_raw_fd();
    // SAFETY: `raw` is a directory descriptor we own; on success the DIR
    // owns it (so forget our OwnedFd), and closedir below releases it.
    let d = unsafe { libc::fdopendir(raw) };
    if d.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    std::mem::forget(dup);
    // The duplicate shares the file offset with `dir`: start from the top
    // even if the directory was listed through another duplicate before.
    // SAFETY: `d` is a live DIR.
    unsafe { libc::rewinddir(d) };
    let mut out = Vec::new();
    let mut err = None;
    loop {
        // SAFETY: errno is thread-local; `d` is a live DIR used by this
        // thread only; the entry is valid until the next readdir.
        unsafe { *libc::__errno_location() = 0 };
        let e = unsafe { libc::readdir(d) };
        if e.is_null() {
            let errno = std::io::Error::last_os_error();
            if errno.raw_os_error().unwrap_or(0) != 0 {
                err = Some(errno);
            }
            break;
        }
        let (name, ty) = unsafe { (CStr::from_ptr((*e).d_name.as_ptr()), (*e).d_type) };
        let b = name.to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        let name = name.to_owned();
        let ty = if ty == libc::DT_UNKNOWN {
            type_at(dir.as_raw_fd(), &name)
        } else {
            ty
        };
        out.push((name, ty));
    }
    // SAFETY: `d` came from fdopendir and is closed once.
    unsafe { libc::closedir(d) };
    match err {
        Some(e) if out.is_empty() => Err(e),
        e => Ok((out, e.is_some())),
    }
}

/// Reads at most `limit` bytes of an open file into `buf`, refusing
/// anything but a regular file. Returns (bytes read, file was longer).
fn read_open(f: &fs::File, limit: usize, buf: &mut Vec<u8>) -> std::io::Result<(usize, bool)> {
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    // Read exactly what fstat promised, up to the limit: one read call for
    // most files, no EOF probe. The buffer only grows (no zeroing per file).
    let len = meta.len();
    let want = usize::try_from(len).unwrap_or(usize::MAX).min(limit);
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let mut n = 0;
    while n < want {
        match (&*f).read(&mut buf[n..want]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((n, len > limit as u64))
}

/// Opens `rel` (a `/`-separated path inside the tree) below `root`, one
/// component at a time with `O_NOFOLLOW`, so no symlink anywhere on the
/// path, even one swapped in after the walk, is followed.
fn open_beneath(root: &OwnedFd, rel: &str) -> std::io::Result<fs::File> {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Err(std::io::Error::other("empty path"));
    };
    let cs = |p: &str| {
        if p == ".." || p == "." {
            return Err(std::io::Error::other("dot component"));
        }
        CString::new(p).map_err(std::io::Error::other)
    };
    let mut held: Option<OwnedFd> = None;
    for d in dirs {
        let at = held.as_ref().map_or(root.as_raw_fd(), AsRawFd::as_raw_fd);
        held = Some(open_dir_at(at, &cs(d)?)?);
    }
    let at = held.as_ref().map_or(root.as_raw_fd(), AsRawFd::as_raw_fd);
    open_file_at(at, &cs(last)?)
}

/// A file that opens with a UTF-16 byte-order mark (FF FE little-endian,
/// FE FF big-endian), decoded to UTF-8 without the mark; `None` for anything
/// else. Windows tools write PowerShell scripts and text this way, and the
/// NUL bytes of UTF-16 would otherwise make the file look binary. Unpaired
/// surrogates become U+FFFD; a trailing odd byte is dropped. The output is
/// at most 1.5 times the input.
pub(crate) fn decode_utf16_bom(b: &[u8]) -> Option<Vec<u8>> {
    let le = match b {
        [0xFF, 0xFE, ..] => true,
        [0xFE, 0xFF, ..] => false,
        _ => return None,
    };
    let units = b[2..].chunks_exact(2).map(|c| {
        if le {
            u16::from_le_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], c[1]])
        }
    });
    let mut out = Vec::with_capacity(b.len() / 2 * 3 / 2 + 4);
    let mut tmp = [0u8; 4];
    for c in char::decode_utf16(units) {
        let c = c.unwrap_or(char::REPLACEMENT_CHARACTER);
        out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
    }
    Some(out)
}

impl Worker {
    fn file(&mut self, opts: &ScanOptions, job: &FileJob) {
        let opened = open_file_at(job.dir.as_raw_fd(), &job.name);
        self.file_opened(opts, &job.rel, opened);
    }

    fn file_opened(&mut self, opts: &ScanOptions, rel: &str, opened: std::io::Result<fs::File>) {
        self.stats.files += 1;
        self.files.push(rel.to_owned());
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let kind = classify::classify(rel, name);
        if kind == FileKind::Other && classify::is_binary_name(name) {
            self.stats.binary_skipped += 1;
            return;
        }
        let limit = if kind.is_config() {
            opts.max_config_bytes
        } else {
            opts.max_file_bytes
        };
        let mut buf = std::mem::take(&mut self.buf);
        match opened.and_then(|f| read_open(&f, limit, &mut buf)) {
            Ok((n, longer)) => {
                let decoded = decode_utf16_bom(&buf[..n]);
                let text: &[u8] = decoded.as_deref().unwrap_or(&buf[..n]);
                let probe = &text[..text.len().min(BINARY_PROBE)];
                if memchr::memchr(0, probe).is_some() {
                    self.stats.binary_skipped += 1;
                } else {
                    self.stats.files_scanned += 1;
                    self.stats.bytes_scanned += n as u64;
                    if longer {
                        self.stats.truncated += 1;
                        if kind.is_config() {
                            self.sink.add(
                                "scan-truncated",
                                rel,
                                1,
                                format!("only the first {limit} bytes were scanned; the rest runs unreviewed"),
                                String::new(),
                            );
                        }
                    }
                    let ctx = FileCtx {
                        rel,
                        name,
                        text,
                        kind,
                    };
                    checks::check(&ctx, &mut self.sink);
                }
            }
            Err(_) => self.stats.unreadable += 1,
        }
        // Keep the buffer for the next file unless one huge file grew it.
        if buf.capacity() <= 4 << 20 {
            self.buf = buf;
        }
    }

    /// Lists an open directory; returns the jobs it produces.
    fn dir(&mut self, opts: &ScanOptions, fd: DirFd, rel: &str, out: &mut Vec<Job>) {
        let entries = match list_dir(&fd) {
            Ok((e, partial)) => {
                self.stats.unreadable += u64::from(partial);
                e
            }
            Err(_) => {
                self.stats.unreadable += 1;
                return;
            }
        };
        let mut files = Vec::new();
        for (name, ty) in entries {
            let os = OsStr::from_bytes(name.to_bytes());
            let child_rel = rel_join(rel, os);
            match ty {
                libc::DT_LNK => self.stats.symlinks_skipped += 1,
                libc::DT_DIR => {
                    if os == ".git" {
                        self.git_dir(&fd, &child_rel, &mut files);
                    } else if opts.skip_vendored && VENDORED.iter().any(|v| OsStr::new(v) == os) {
                        self.stats.vendored_dirs_skipped += 1;
                    } else {
                        out.push(Job::Dir {
                            parent: fd.clone(),
                            name,
                            rel: child_rel,
                        });
                    }
                }
                libc::DT_REG => {
                    files.push(FileJob {
                        dir: fd.clone(),
                        name,
                        rel: child_rel,
                    });
                    if files.len() == BATCH {
                        out.push(Job::Files(std::mem::take(&mut files)));
                    }
                }
                libc::DT_UNKNOWN => self.stats.unreadable += 1,
                _ => {} // FIFOs, sockets, devices: never read
            }
        }
        if !files.is_empty() {
            out.push(Job::Files(files));
        }
    }

    /// From `.git`, only `config` and `hooks/*` matter: they make git run
    /// commands. Objects, refs and logs are never read.
    fn git_dir(&mut self, parent: &DirFd, rel: &str, files: &mut Vec<FileJob>) {
        let Ok(git) = open_dir_at(parent.as_raw_fd(), c".git") else {
            self.stats.unreadable += 1;
            return;
        };
        let git: DirFd = Arc::new(git);
        if type_at(git.as_raw_fd(), c"config") == libc::DT_REG {
            files.push(FileJob {
                dir: git.clone(),
                name: c"config".to_owned(),
                rel: format!("{rel}/config"),
            });
        }
        if type_at(git.as_raw_fd(), c"hooks") != libc::DT_DIR {
            return;
        }
        let Ok(hooks) = open_dir_at(git.as_raw_fd(), c"hooks") else {
            return;
        };
        let hooks: DirFd = Arc::new(hooks);
        let Ok((entries, _)) = list_dir(&hooks) else {
            return;
        };
        for (name, ty) in entries {
            let shown = String::from_utf8_lossy(name.to_bytes()).into_owned();
            if shown.ends_with(".sample") {
                continue; // inert: git only runs hooks without the suffix
            }
            match ty {
                libc::DT_REG => files.push(FileJob {
                    dir: hooks.clone(),
                    name,
                    rel: format!("{rel}/hooks/{shown}"),
                }),
                libc::DT_LNK => self.stats.symlinks_skipped += 1,
                _ => {}
            }
        }
    }
}

fn run_worker(shared: &Shared) -> Worker {
    let mut w = Worker::default();
    let mut produced = Vec::new();
    loop {
        let job = {
            let mut q = shared.q.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(j) = q.jobs.pop() {
                    q.active += 1;
                    break Some(j);
                }
                if q.active == 0 {
                    break None;
                }
                q = shared.cv.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let Some(job) = job else {
            shared.cv.notify_all();
            return w;
        };
        match job {
            Job::Dir { parent, name, rel } => match open_dir_at(parent.as_raw_fd(), &name) {
                Ok(fd) => w.dir(shared.opts, Arc::new(fd), &rel, &mut produced),
                // Gone, or swapped for a symlink or a file since it was listed.
                Err(_) => w.stats.unreadable += 1,
            },
            Job::Files(fs) => fs.iter().for_each(|f| w.file(shared.opts, f)),
        }
        let mut q = shared.q.lock().unwrap_or_else(|e| e.into_inner());
        let n = produced.len();
        q.jobs.append(&mut produced);
        q.active -= 1;
        let done = q.active == 0 && q.jobs.is_empty();
        drop(q);
        if done {
            shared.cv.notify_all();
        } else {
            for _ in 0..n.min(8) {
                shared.cv.notify_one();
            }
        }
    }
}

fn merge(into: &mut Stats, s: &Stats) {
    into.files += s.files;
    into.files_scanned += s.files_scanned;
    into.bytes_scanned += s.bytes_scanned;
    into.binary_skipped += s.binary_skipped;
    into.truncated += s.truncated;
    into.unreadable += s.unreadable;
    into.symlinks_skipped += s.symlinks_skipped;
    into.vendored_dirs_skipped += s.vendored_dirs_skipped;
}

pub fn scan(root: &Path, opts: &ScanOptions) -> Result<Report, ScanError> {
    let t0 = Instant::now();
    let meta = fs::symlink_metadata(root).map_err(|e| ScanError::Root {
        path: root.to_path_buf(),
        source: e,
    })?;
    if meta.file_type().is_symlink() {
        return Err(ScanError::RootIsSymlink {
            path: root.to_path_buf(),
        });
    }
    let mut sink = Sink::default();
    let mut stats = Stats::default();
    let mut files: HashSet<String> = HashSet::new();
    let base_dir: DirFd;
    // The root directory must not be a symlink (checked above, and again by
    // O_NOFOLLOW here); the parent of a single-file root is the user's own
    // path and is resolved normally.
    let open_root = |p: &Path, nofollow: libc::c_int| -> Result<OwnedFd, ScanError> {
        let err = |e| ScanError::Root {
            path: root.to_path_buf(),
            source: e,
        };
        let c =
            CString::new(p.as_os_str().as_bytes()).map_err(|e| err(std::io::Error::other(e)))?;
        // SAFETY: `c` is NUL-terminated.
        cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | nofollow | libc::O_CLOEXEC,
            )
        })
        .map_err(err)
    };
    if meta.is_dir() {
        let fd: DirFd = Arc::new(open_root(root, libc::O_NOFOLLOW)?);
        list_dir(&fd).map_err(|e| ScanError::Root {
            path: root.to_path_buf(),
            source: e,
        })?;
        // The root on this thread first: a small tree (a pre-run scan of a
        // fresh workspace) then costs no thread start-up at all.
        let mut first = Worker::default();
        let mut jobs = Vec::new();
        first.dir(opts, fd.clone(), "", &mut jobs);
        let shared = Shared {
            q: Mutex::new(Queue { jobs, active: 0 }),
            cv: Condvar::new(),
            opts,
        };
        // (available_parallelism reads the cgroup's CPU quota: only when
        // there is more than one directory to share out.)
        let extra = if shared.q.lock().map_or(0, |q| q.jobs.len()) > 1 {
            let threads = if opts.threads == 0 {
                std::thread::available_parallelism().map_or(2, |n| n.get())
            } else {
                opts.threads
            };
            threads.max(1) - 1
        } else {
            0
        };
        let mut workers: Vec<Worker> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..extra)
                .map(|_| sc.spawn(|| run_worker(&shared)))
                .collect();
            let mine = run_worker(&shared);
            std::iter::once(mine)
                .chain(
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
                )
                .collect()
        });
        workers.push(first);
        for w in workers {
            merge(&mut stats, &w.stats);
            sink.findings.extend(w.sink.findings);
            sink.refs.extend(w.sink.refs);
            files.extend(w.files);
        }
        base_dir = fd;
    } else if meta.is_file() {
        let name = root
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let parent = match root.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        base_dir = Arc::new(open_root(parent, 0)?);
        let mut w = Worker::default();
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(root);
        w.file_opened(opts, &name, opened);
        merge(&mut stats, &w.stats);
        sink.findings.extend(w.sink.findings);
        sink.refs.extend(w.sink.refs);
        files.extend(w.files);
    } else {
        return Err(ScanError::Root {
            path: root.to_path_buf(),
            source: std::io::Error::other("not a regular file or directory"),
        });
    }

    scan_refs(
        &base_dir,
        opts,
        &files,
        std::mem::take(&mut sink.refs),
        &mut sink,
    );
    let mut findings = sink.findings;
    tidy(&mut findings);
    stats.elapsed_ms = t0.elapsed().as_millis() as u64;
    Ok(Report { findings, stats })
}

/// Scans each file a hook or script runs, as code that runs.
fn scan_refs(
    base: &OwnedFd,
    opts: &ScanOptions,
    files: &HashSet<String>,
    mut refs: Vec<ScriptRef>,
    sink: &mut Sink,
) {
    refs.sort_by(|a, b| (&a.path, a.rule).cmp(&(&b.path, b.rule)));
    refs.dedup_by(|a, b| a.path == b.path && a.rule == b.rule);
    let mut buf = Vec::new();
    for r in refs.iter().take(10_000) {
        if !files.contains(&r.path) {
            continue;
        }
        // Opened component by component, never following a link, so a
        // directory swapped for a symlink since the walk cannot redirect it.
        let Ok((n, _)) = open_beneath(base, &r.path)
            .and_then(|f| read_open(&f, opts.max_config_bytes, &mut buf))
        else {
            continue;
        };
        let decoded = decode_utf16_bom(&buf[..n]);
        let text: &[u8] = decoded.as_deref().unwrap_or(&buf[..n]);
        if memchr::memchr(0, &text[..text.len().min(BINARY_PROBE)]).is_some() {
            continue;
        }
        let mut lines = sink::LineCounter::default();
        for h in payload::detect(text, r.mode) {
            sink.add(
                r.rule,
                &r.path,
                lines.at(text, h.start),
                format!("run by the {}; it {}", r.origin, h.kind.describe()),
                sink::evidence_at(text, h.start),
            );
        }
    }
}

/// Generic text rules that a specific finding on the same line supersedes.
const GENERIC: &[&str] = &[
    "payload-shape",
    "fetch-exec-mention",
    "doc-run-remote-exec",
    "known-installer",
];

/// Sort (path, line, worst first), drop exact duplicates and generic findings shadowed by a specific
/// one on the same line.
fn tidy(findings: &mut Vec<Finding>) {
    findings.sort_by(|a, b| {
        let (ra, rb) = (std::cmp::Reverse(a.severity), std::cmp::Reverse(b.severity));
        (&a.path, a.line, ra, &a.rule, &a.evidence, &a.message).cmp(&(
            &b.path,
            b.line,
            rb,
            &b.rule,
            &b.evidence,
            &b.message,
        ))
    });
    findings.dedup_by(|a, b| {
        a.path == b.path && a.line == b.line && a.rule == b.rule && a.evidence == b.evidence
    });
    let specific: HashSet<(String, usize)> = findings
        .iter()
        .filter(|f| f.rule.ends_with("-payload"))
        .map(|f| (f.path.clone(), f.line))
        .collect();
    findings.retain(|f| {
        !(GENERIC.contains(&f.rule.as_str()) && specific.contains(&(f.path.clone(), f.line)))
    });
}

#[cfg(test)]
mod tests {
    use super::decode_utf16_bom;

    fn enc(s: &str, le: bool) -> Vec<u8> {
        let mut v = if le {
            vec![0xFF, 0xFE]
        } else {
            vec![0xFE, 0xFF]
        };
        for u in s.encode_utf16() {
            v.extend_from_slice(&if le { u.to_le_bytes() } else { u.to_be_bytes() });
        }
        v
    }

    #[test]
    fn utf16_both_orders_decode() {
        let s = "iex (iwr x)\n\u{1F600} é";
        assert_eq!(decode_utf16_bom(&enc(s, true)).unwrap(), s.as_bytes());
        assert_eq!(decode_utf16_bom(&enc(s, false)).unwrap(), s.as_bytes());
        assert_eq!(decode_utf16_bom(b"plain"), None);
        assert_eq!(decode_utf16_bom(&[0xEF, 0xBB, 0xBF, b'a']), None);
    }

    #[test]
    fn utf16_damage_is_replaced_not_fatal() {
        // Unpaired high surrogate, then an odd trailing byte.
        let b = [0xFF, 0xFE, 0x00, 0xD8, b'a', 0, b'b'];
        assert_eq!(decode_utf16_bom(&b).unwrap(), "\u{FFFD}a".as_bytes());
    }
}
