//! The walk: a small pool of threads sharing a stack of directories and
//! batches of files. It never follows a symbolic link, never consults an
//! ignore file, descends into `.git` only for `config` and `hooks/`, and
//! reads each file through a bounded buffer with `O_NOFOLLOW | O_NONBLOCK`
//! (so a FIFO or a link swapped in after listing cannot block or redirect it).

use crate::checks::{self, FileCtx};
use crate::classify::{self, FileKind};
use crate::model::{Finding, Report, ScanError, ScanOptions, Stats};
use crate::payload;
use crate::sink::{self, ScriptRef, Sink};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
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

struct FileJob {
    abs: PathBuf,
    rel: String,
}

enum Job {
    Dir(PathBuf, String),
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

/// Opens a regular file without following a final symlink and without
/// blocking on a FIFO; reads at most `limit` bytes into `buf`.
/// Returns (bytes read, file was longer than limit).
fn read_bounded(path: &Path, limit: usize, buf: &mut Vec<u8>) -> std::io::Result<(usize, bool)> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
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
        match (&f).read(&mut buf[n..want]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((n, len > limit as u64))
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
        self.stats.files += 1;
        self.files.push(job.rel.clone());
        let name = job.rel.rsplit('/').next().unwrap_or(&job.rel);
        let kind = classify::classify(&job.rel, name);
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
        match read_bounded(&job.abs, limit, &mut buf) {
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
                                &job.rel,
                                1,
                                format!("only the first {limit} bytes were scanned; the rest runs unreviewed"),
                                String::new(),
                            );
                        }
                    }
                    let ctx = FileCtx {
                        rel: &job.rel,
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

    /// Lists a directory; returns the jobs it produces.
    fn dir(&mut self, opts: &ScanOptions, abs: &Path, rel: &str, out: &mut Vec<Job>) {
        let rd = match fs::read_dir(abs) {
            Ok(rd) => rd,
            Err(_) => {
                self.stats.unreadable += 1;
                return;
            }
        };
        let mut files = Vec::new();
        for entry in rd {
            let Ok(entry) = entry else {
                self.stats.unreadable += 1;
                continue;
            };
            let Ok(ft) = entry.file_type() else {
                self.stats.unreadable += 1;
                continue;
            };
            let name = entry.file_name();
            let child_rel = rel_join(rel, &name);
            if ft.is_symlink() {
                self.stats.symlinks_skipped += 1;
            } else if ft.is_dir() {
                if name == ".git" {
                    self.git_dir(&entry.path(), &child_rel, &mut files);
                } else if opts.skip_vendored && VENDORED.iter().any(|v| OsStr::new(v) == name) {
                    self.stats.vendored_dirs_skipped += 1;
                } else {
                    out.push(Job::Dir(entry.path(), child_rel));
                }
            } else if ft.is_file() {
                files.push(FileJob {
                    abs: entry.path(),
                    rel: child_rel,
                });
                if files.len() == BATCH {
                    out.push(Job::Files(std::mem::take(&mut files)));
                }
            }
        }
        if !files.is_empty() {
            out.push(Job::Files(files));
        }
    }

    /// From `.git`, only `config` and `hooks/*` matter: they make git run
    /// commands. Objects, refs and logs are never read.
    fn git_dir(&mut self, abs: &Path, rel: &str, files: &mut Vec<FileJob>) {
        let cfg = abs.join("config");
        if fs::symlink_metadata(&cfg).is_ok_and(|m| m.is_file()) {
            files.push(FileJob {
                abs: cfg,
                rel: format!("{rel}/config"),
            });
        }
        let hooks = abs.join("hooks");
        if !fs::symlink_metadata(&hooks).is_ok_and(|m| m.is_dir()) {
            return;
        }
        if let Ok(rd) = fs::read_dir(&hooks) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".sample") {
                    continue; // inert: git only runs hooks without the suffix
                }
                match e.file_type() {
                    Ok(ft) if ft.is_file() => files.push(FileJob {
                        abs: e.path(),
                        rel: format!("{rel}/hooks/{}", e.file_name().to_string_lossy()),
                    }),
                    Ok(ft) if ft.is_symlink() => self.stats.symlinks_skipped += 1,
                    _ => {}
                }
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
            Job::Dir(abs, rel) => w.dir(shared.opts, &abs, &rel, &mut produced),
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
    let base_dir: PathBuf;
    if meta.is_dir() {
        fs::read_dir(root).map_err(|e| ScanError::Root {
            path: root.to_path_buf(),
            source: e,
        })?;
        base_dir = root.to_path_buf();
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            opts.threads
        };
        let shared = Shared {
            q: Mutex::new(Queue {
                jobs: vec![Job::Dir(root.to_path_buf(), String::new())],
                active: 0,
            }),
            cv: Condvar::new(),
            opts,
        };
        let workers: Vec<Worker> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads.max(1))
                .map(|_| sc.spawn(|| run_worker(&shared)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for w in workers {
            merge(&mut stats, &w.stats);
            sink.findings.extend(w.sink.findings);
            sink.refs.extend(w.sink.refs);
            files.extend(w.files);
        }
    } else if meta.is_file() {
        let name = root
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        base_dir = root.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut w = Worker::default();
        w.file(
            opts,
            &FileJob {
                abs: root.to_path_buf(),
                rel: name,
            },
        );
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
    base: &Path,
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
        // Walked without following links, so every component is a real
        // directory; O_NOFOLLOW guards the last one.
        let Ok((n, _)) = read_bounded(&base.join(&r.path), opts.max_config_bytes, &mut buf) else {
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
