//! Writing an upper layer's change into the workspace, as a hostile layer
//! would want it not to be written:
//!
//! - every directory is opened from the workspace root with `openat2`
//!   (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`), so no
//!   symlink in the workspace, old or planted, is followed; on kernels without
//!   `openat2` (before 5.6, or where seccomp hides it) each component is
//!   opened with `O_NOFOLLOW | O_DIRECTORY` instead, and the report says so;
//! - [`crate::protected`] paths are never written, deleted or replaced: they
//!   are skipped and listed;
//! - permission bits are kept (including +x) but setuid, setgid and sticky
//!   bits are dropped; fifos, sockets and devices are never created; symlinks
//!   whose target leaves the workspace or names a protected path are refused;
//! - each file is written to a temporary file beside it and renamed over the
//!   old one, so a file is either the old or the new content, and an existing
//!   hard link to something outside is never written through;
//! - `.git` is left alone unless asked (the agent's commits are not applied:
//!   review the diff and commit yourself).
//!
//! Before anything is written, the whole layer is walked once to check it is
//! within [`Limits`] and readable, so a bad layer fails without a half apply.

use super::walk::{Event, Node, open_listed, walk};
use super::{Limits, OverlayError, display_rel};
use crate::protected::{self, is_protected};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// Options for [`apply()`].
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    pub limits: Limits,
    /// Also apply changes under `.git` directories (objects, refs, index of
    /// commits made in the sandbox). Protected git paths (hooks, config, ...)
    /// stay refused either way.
    pub include_git_metadata: bool,
    /// Use the `O_NOFOLLOW` per-component resolver even when `openat2` works.
    /// For tests of the fallback path.
    pub force_fallback_resolver: bool,
}

/// How paths inside the workspace were resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolver {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`.
    Openat2,
    /// `openat` with `O_NOFOLLOW` one component at a time (`openat2` missing).
    OpenatNofollow,
}

/// What was done to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    WroteFile,
    WroteSymlink,
    Deleted,
    MadeDir,
    RemovedDir,
}

/// A change written into the workspace.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AppliedEntry {
    /// Git-quoted relative path (always ASCII).
    pub path: String,
    pub action: Action,
    /// E.g. "setuid/setgid/sticky bits dropped".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A change not written because the path is protected.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SkippedEntry {
    pub path: String,
    /// The protected path that matched (see [`crate::protected`]).
    pub protected_by: &'static str,
    pub why: &'static str,
}

/// A change not written for any other reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RefusedEntry {
    pub path: String,
    pub reason: String,
}

/// What [`apply()`] did, entry by entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplyReport {
    pub resolver: Resolver,
    pub applied: Vec<AppliedEntry>,
    /// Entries already as the upper layer has them.
    pub unchanged: u64,
    pub skipped: Vec<SkippedEntry>,
    pub refused: Vec<RefusedEntry>,
    /// `.git` entries left alone (without `include_git_metadata`).
    pub excluded_git: Vec<String>,
}

impl ApplyReport {
    /// True when every change of the layer is now in the workspace.
    pub fn is_complete(&self) -> bool {
        self.skipped.is_empty() && self.refused.is_empty() && self.excluded_git.is_empty()
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "applied {}, unchanged {}, skipped {} (protected), refused {}",
            self.applied.len(),
            self.unchanged,
            self.skipped.len(),
            self.refused.len()
        )?;
        if self.resolver == Resolver::OpenatNofollow {
            writeln!(
                f,
                "note: openat2 is not available on this kernel; paths were resolved one component at a time with O_NOFOLLOW"
            )?;
        }
        for s in &self.skipped {
            writeln!(
                f,
                " skipped {}: protected ({}): {}",
                s.path, s.protected_by, s.why
            )?;
        }
        for r in &self.refused {
            writeln!(f, " refused {}: {}", r.path, r.reason)?;
        }
        for g in &self.excluded_git {
            writeln!(
                f,
                " not applied {g}: git metadata (review the diff and commit yourself, or pass --include-git)"
            )?;
        }
        Ok(())
    }
}

/// Write the change that the upper layer `upper` makes into `workspace`.
///
/// Returns `Err` only when the layer as a whole cannot be read (then nothing
/// has been written); per-entry refusals are in the report.
pub fn apply(
    upper: &Path,
    workspace: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyReport, OverlayError> {
    // Pre-flight: limits, unsupported layer features, unreadable directories.
    walk(
        upper,
        workspace,
        &opts.limits,
        opts.include_git_metadata,
        &mut |_| Ok(()),
    )?;

    let root: OwnedFd = File::open(workspace)
        .map_err(|e| OverlayError::io(workspace, e))?
        .into();
    let resolver = if opts.force_fallback_resolver {
        Resolver::OpenatNofollow
    } else {
        match rustix::fs::openat2(
            &root,
            ".",
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            beneath(),
        ) {
            Ok(_) => Resolver::Openat2,
            Err(Errno::NOSYS) | Err(Errno::PERM) => Resolver::OpenatNofollow,
            Err(e) => return Err(OverlayError::io(workspace, e.into())),
        }
    };
    let mut a = Applier {
        root,
        max_file_bytes: opts.limits.max_file_bytes,
        resolver,
        tmp_counter: 0,
        report: ApplyReport {
            resolver,
            applied: Vec::new(),
            unchanged: 0,
            skipped: Vec::new(),
            refused: Vec::new(),
            excluded_git: Vec::new(),
        },
    };
    walk(
        upper,
        workspace,
        &opts.limits,
        opts.include_git_metadata,
        &mut |ev| {
            a.event(ev);
            Ok(())
        },
    )?;
    Ok(a.report)
}

fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// Why a write step failed, for the report.
type Step<T> = Result<T, String>;

fn explain(what: &str, e: Errno) -> String {
    match e {
        Errno::LOOP | Errno::XDEV | Errno::NOTDIR => format!(
            "{what}: a component of the path is a symlink or not a directory; symlinks are not followed ({e})"
        ),
        e => format!("{what}: {e}"),
    }
}

struct Applier {
    root: OwnedFd,
    max_file_bytes: u64,
    resolver: Resolver,
    tmp_counter: u64,
    report: ApplyReport,
}

impl Applier {
    fn event(&mut self, ev: Event<'_>) {
        let (rel, is_dir) = match &ev {
            Event::ExcludedGit { rel } => {
                self.report.excluded_git.push(display_rel(rel));
                return;
            }
            Event::MakeDir { rel, .. } | Event::RemoveDir { rel } => (*rel, true),
            Event::Delete { rel, .. } | Event::Write { rel, .. } => (*rel, false),
        };
        if let Some(p) = protected::protection(rel, is_dir) {
            self.report.skipped.push(SkippedEntry {
                path: display_rel(rel),
                protected_by: p.path,
                why: p.why,
            });
            return;
        }
        let result = match ev {
            Event::MakeDir { rel, mode } => self.make_dir(rel, mode),
            Event::RemoveDir { rel } => self.remove(rel, true),
            Event::Delete { rel, .. } => self.remove(rel, false),
            Event::Write { rel, old, new } => self.write(rel, old, new),
            Event::ExcludedGit { .. } => Ok(None),
        };
        match result {
            Ok(Some((action, note))) => self.report.applied.push(AppliedEntry {
                path: display_rel(rel),
                action,
                note,
            }),
            Ok(None) => self.report.unchanged += 1,
            Err(reason) => self.report.refused.push(RefusedEntry {
                path: display_rel(rel),
                reason,
            }),
        }
    }

    /// Open a directory of the workspace by relative path, never following a
    /// symlink and never leaving the workspace.
    fn open_dir(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        if rel.as_os_str().is_empty() {
            return rustix::fs::openat(&self.root, ".", flags, Mode::empty());
        }
        match self.resolver {
            Resolver::Openat2 => {
                let mut tries = 0;
                loop {
                    match rustix::fs::openat2(&self.root, rel, flags, Mode::empty(), beneath()) {
                        // A concurrent rename somewhere: the kernel asks to retry.
                        Err(Errno::AGAIN) if tries < 8 => tries += 1,
                        r => return r,
                    }
                }
            }
            Resolver::OpenatNofollow => {
                let mut fd = rustix::fs::openat(&self.root, ".", flags, Mode::empty())?;
                for c in rel.components() {
                    let Component::Normal(name) = c else {
                        return Err(Errno::XDEV);
                    };
                    fd = rustix::fs::openat(&fd, name, flags, Mode::empty())?;
                }
                Ok(fd)
            }
        }
    }

    /// The directory holding `rel`, opened safely, and `rel`'s last name.
    fn parent<'p>(&self, rel: &'p Path) -> Step<(OwnedFd, &'p std::ffi::OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| "not a plain relative path".to_string())?;
        let dir = rel.parent().unwrap_or(Path::new(""));
        let fd = self
            .open_dir(dir)
            .map_err(|e| explain("cannot open its directory", e))?;
        Ok((fd, name))
    }

    fn make_dir(&mut self, rel: &Path, mode: u32) -> Step<Option<(Action, Option<String>)>> {
        let (dir, name) = self.parent(rel)?;
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let st = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| explain("cannot inspect it", e))?;
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::Directory
                {
                    return Ok(None);
                }
                return Err("a non-directory is in the way".to_string());
            }
            Err(e) => return Err(explain("cannot create the directory", e)),
        }
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| explain("cannot open the new directory", e))?;
        // Owner keeps rwx so the content can be written; no setgid/sticky.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode((mode & 0o777) | 0o700))
            .map_err(|e| explain("cannot set its mode", e))?;
        Ok(Some((Action::MadeDir, strip_note(mode))))
    }

    fn remove(&mut self, rel: &Path, is_dir: bool) -> Step<Option<(Action, Option<String>)>> {
        let (dir, name) = self.parent(rel)?;
        let flags = if is_dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        match rustix::fs::unlinkat(&dir, name, flags) {
            Ok(()) => Ok(Some((
                if is_dir {
                    Action::RemovedDir
                } else {
                    Action::Deleted
                },
                None,
            ))),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => Err(
                "not removed: the directory is not empty (entries in it were skipped or refused, or appeared since)"
                    .to_string(),
            ),
            Err(Errno::ISDIR) => {
                Err("not removed: it is a directory now, not the file the layer deleted".into())
            }
            Err(e) => Err(explain("cannot remove it", e)),
        }
    }

    fn write(
        &mut self,
        rel: &Path,
        old: Option<&Node>,
        new: &Node,
    ) -> Step<Option<(Action, Option<String>)>> {
        match new {
            Node::Special { what } => Err(format!(
                "a {what}: apply never creates device nodes, fifos or sockets"
            )),
            Node::Symlink { target } => {
                if let Some(why) = symlink_refusal(rel, target) {
                    return Err(why);
                }
                if let Some(Node::Symlink { target: t }) = old
                    && t == target
                {
                    return Ok(None);
                }
                let (dir, name) = self.parent(rel)?;
                let tmp = self.tmp_name();
                rustix::fs::symlinkat(std::ffi::OsStr::from_bytes(target), &dir, &tmp)
                    .map_err(|e| explain("cannot create the symlink", e))?;
                self.rename_into(&dir, &tmp, name)?;
                Ok(Some((Action::WroteSymlink, None)))
            }
            Node::File {
                path,
                mode,
                size,
                dev,
                ino,
            } => {
                if *size > self.max_file_bytes {
                    return Err(format!(
                        "{size} bytes, over the {}-byte limit for one file (raise it with --max-file-size if the file is genuine)",
                        self.max_file_bytes
                    ));
                }
                let mut src = open_listed(path, *dev, *ino).map_err(|e| e.to_string())?;
                let (dir, name) = self.parent(rel)?;
                let perm = mode & 0o777;
                if matches!(old, Some(Node::File { .. }))
                    && same_file(dir.as_fd(), name, &mut src, perm).unwrap_or(false)
                {
                    return Ok(None);
                }
                let mut src = open_listed(path, *dev, *ino).map_err(|e| e.to_string())?;
                let tmp = self.tmp_name();
                let fd = rustix::fs::openat(
                    &dir,
                    &tmp,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| explain("cannot create a temporary file beside it", e))?;
                let mut out = File::from(fd);
                let limit = self.max_file_bytes;
                let filled = io::copy(&mut (&mut src).take(limit + 1), &mut out)
                    .map_err(|e| format!("cannot copy the content: {e}"))
                    .and_then(|n| {
                        if n > limit {
                            return Err(format!("grew past the {limit}-byte limit while copied"));
                        }
                        rustix::fs::fchmod(&out, Mode::from_raw_mode(perm))
                            .map_err(|e| explain("cannot set its mode", e))
                    });
                drop(out);
                if let Err(e) = filled {
                    let _ = rustix::fs::unlinkat(&dir, &tmp, AtFlags::empty());
                    return Err(e);
                }
                self.rename_into(&dir, &tmp, name)?;
                Ok(Some((Action::WroteFile, strip_note(*mode))))
            }
        }
    }

    fn rename_into(&self, dir: &OwnedFd, tmp: &str, name: &std::ffi::OsStr) -> Step<()> {
        rustix::fs::renameat(dir, tmp, dir, name).map_err(|e| {
            let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
            match e {
                Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => {
                    "a directory is in the way (entries in it were skipped or refused)".to_string()
                }
                e => explain("cannot move the new content into place", e),
            }
        })
    }

    fn tmp_name(&mut self) -> String {
        self.tmp_counter += 1;
        format!(
            ".runproof-apply-{}-{}",
            std::process::id(),
            self.tmp_counter
        )
    }
}

fn strip_note(mode: u32) -> Option<String> {
    (mode & 0o7000 != 0).then(|| format!("setuid/setgid/sticky bits dropped (mode was {mode:o})"))
}

/// True when `name` in `dir` is a regular file with permission bits `perm`
/// and the same content as `src`.
fn same_file(
    dir: BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    src: &mut File,
    perm: u32,
) -> io::Result<bool> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    let src_len = src.metadata()?.len();
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
        || st.st_mode & 0o7777 != perm
        || st.st_size as u64 != src_len
    {
        return Ok(false);
    }
    let mut dst = File::from(fd);
    let (mut a, mut b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(src, &mut a)?;
        let m = read_full(&mut dst, &mut b)?;
        if n != m || a[..n] != b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Why a symlink at `rel` pointing at `target` must not be created: a target
/// that is absolute, climbs out of the workspace, or names a protected path
/// (a host tool writing through the link would write there). Checked
/// lexically; a target that passes through a symlink the workspace already
/// had reaches no further than that symlink does.
pub(crate) fn symlink_refusal(rel: &Path, target: &[u8]) -> Option<String> {
    let shown = super::git_quote("", target);
    if target.is_empty() {
        return Some("symlink with an empty target".into());
    }
    if target.starts_with(b"/") {
        return Some(format!(
            "symlink to the absolute path {shown}: links may only point inside the workspace, relatively"
        ));
    }
    let mut stack: Vec<&[u8]> = rel
        .parent()
        .into_iter()
        .flat_map(|p| p.components())
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes()),
            _ => None,
        })
        .collect();
    for comp in target.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if stack.pop().is_none() {
                    return Some(format!("symlink to {shown} leaves the workspace"));
                }
            }
            c => stack.push(c),
        }
    }
    let resolved: std::path::PathBuf = stack
        .iter()
        .map(|c| std::ffi::OsStr::from_bytes(c))
        .collect();
    if is_protected(&resolved) {
        return Some(format!(
            "symlink to {shown} points at a protected path ({})",
            display_rel(&resolved)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets() {
        let r = |rel: &str, t: &str| symlink_refusal(Path::new(rel), t.as_bytes());
        assert!(r("a", "b").is_none());
        assert!(r("d/a", "../b").is_none());
        assert!(r("d/e/a", "../../x/y").is_none());
        assert!(r("a", "/etc/passwd").is_some());
        assert!(r("a", "../outside").is_some());
        assert!(r("d/a", "../../outside").is_some());
        assert!(r("d/a", "x/../../..").is_some());
        assert!(r("a", "").is_some());
        assert!(r("a", ".git/hooks/pre-commit").is_some());
        assert!(r("d/a", "../.vscode/tasks.json").is_some());
        assert!(r("a", ".bashrc").is_some());
    }
}
