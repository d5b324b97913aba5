//! Copy-on-write workspaces: reading what a sandboxed run changed.
//!
//! `runproof run --overlay UPPER_DIR` mounts an overlayfs whose lower layer is
//! the workspace and whose upper layer is `UPPER_DIR`; the host workspace stays
//! untouched. This module reads such an upper layer against the workspace:
//!
//! - [`diff()`] writes the change as a unified git diff that `git apply` applies
//!   (text hunks, deletions, modes, symlinks, `GIT binary patch` literals);
//! - [`summary()`] gives the short "N files changed, +A -D" status (and JSON);
//! - [`apply()`] writes the change into the workspace without following
//!   symlinks, without writing [`crate::protected`] paths, and without creating
//!   device nodes, fifos, sockets or setuid files.
//!
//! The upper layer is hostile (the sandboxed command wrote it): names may be
//! any bytes, trees may be huge, files may be huge. Every walk is bounded by
//! [`Limits`], every file is opened with `O_NOFOLLOW`, and diff output is capped.
//!
//! Overlay markers understood, in both the `user.overlay.*` (mounted in a user
//! namespace, `userxattr`) and `trusted.overlay.*` (mounted by real root)
//! namespaces: whiteouts as character devices 0/0, whiteouts as empty files (or
//! fifos) carrying the `overlay.whiteout` xattr, and opaque directories
//! (`overlay.opaque` = `y`; `x` only announces such xattr whiteouts). Layers
//! written with `redirect_dir` or `metacopy` are refused with an error that says
//! so, because their content lives partly elsewhere.

mod apply;
mod diff;
mod summary;
mod walk;

pub use apply::{
    Action, AppliedEntry, ApplyOptions, ApplyReport, RefusedEntry, Resolver, SkippedEntry, apply,
};
pub use diff::{DiffOptions, DiffStats, FileStat, FileStatus, diff, diff_to_vec};
pub use summary::{Summary, summary};

use std::path::PathBuf;
use std::time::Duration;

/// Bounds on the work done for one upper layer. The defaults fit a real
/// repository many times over; a hostile tree hits them and gets an error.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Entries (upper and lower, files and directories) visited in one walk.
    pub max_entries: u64,
    /// Directory nesting depth below the workspace root.
    pub max_depth: usize,
    /// A changed file larger than this is an error in `diff` (its content is
    /// held in memory) and is refused by `apply` (a sparse file could fill the
    /// disk), with the reason in the report.
    pub max_file_bytes: u64,
    /// Files larger than this (either side) are diffed as binary, not by line.
    pub max_text_bytes: u64,
    /// Total bytes of diff output.
    pub max_output_bytes: u64,
    /// Time given to one file's line diff before settling for a coarser one.
    pub text_diff_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1_000_000,
            max_depth: 256,
            max_file_bytes: 64 << 20,
            max_text_bytes: 4 << 20,
            max_output_bytes: 1 << 30,
            text_diff_timeout: Duration::from_secs(5),
        }
    }
}

/// Why reading or applying an upper layer failed as a whole. Per-entry
/// problems in `apply` are not errors: they are listed in [`ApplyReport`].
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the {what} {} cannot be opened: {source}; pass the overlay's upper directory (the one given to `runproof run --overlay`) and the workspace it was mounted over",
        .path.display()
    )]
    Missing {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} is not a directory; pass the overlay's upper directory (the one given to `runproof run --overlay`) and the workspace it was mounted over",
        .0.display()
    )]
    NotADirectory(PathBuf),
    #[error(
        "{} holds more than {limit} entries; refusing to walk further (raise Limits::max_entries if this tree is genuine)",
        .root.display()
    )]
    TooManyEntries { root: PathBuf, limit: u64 },
    #[error(
        "{} is nested more than {limit} directories deep; refusing to walk further",
        .path.display()
    )]
    TooDeep { path: PathBuf, limit: usize },
    #[error(
        "{} is {size} bytes, over the {limit}-byte limit for one file in a diff; inspect it directly or raise Limits::max_file_bytes",
        .path.display()
    )]
    FileTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error(
        "the diff is larger than {limit} bytes; stopped (use `runproof diff --stat` for a summary, or raise Limits::max_output_bytes)"
    )]
    OutputTooLarge { limit: u64 },
    #[error(
        "{} was written by an overlayfs with {feature} enabled (xattr {xattr}); its content lives elsewhere and cannot be read safely; mount the overlay with redirect_dir=off,metacopy=off",
        .path.display()
    )]
    UnsupportedLayer {
        path: PathBuf,
        feature: &'static str,
        xattr: String,
    },
    #[error("{} changed while it was read (it is no longer the entry that was listed); make sure nothing runs in the sandbox any more and retry", .0.display())]
    Changed(PathBuf),
    #[error("writing the diff: {0}")]
    Output(std::io::Error),
}

impl OverlayError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OverlayError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Quote a path the way git does with `core.quotePath` on (its default): a
/// name holding a control character, `"`, `\`, DEL or any byte >= 0x80 is
/// written as a C string with octal escapes. The result is always ASCII, so it
/// is also safe to print on a terminal.
pub(crate) fn git_quote(prefix: &str, path: &[u8]) -> String {
    let needs = path
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\' || b >= 0x7f);
    if !needs {
        let mut s = String::with_capacity(prefix.len() + path.len());
        s.push_str(prefix);
        // Only printable ASCII reaches here.
        s.extend(path.iter().map(|&b| b as char));
        return s;
    }
    let mut s = String::with_capacity(prefix.len() + path.len() * 2 + 2);
    s.push('"');
    s.push_str(prefix);
    for &b in path {
        match b {
            0x07 => s.push_str("\\a"),
            0x08 => s.push_str("\\b"),
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            0x0b => s.push_str("\\v"),
            0x0c => s.push_str("\\f"),
            b'\r' => s.push_str("\\r"),
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\{b:03o}")),
        }
    }
    s.push('"');
    s
}

/// A relative path for reports and terminals: git-quoted when unusual.
pub(crate) fn display_rel(rel: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    git_quote("", rel.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_git() {
        assert_eq!(git_quote("a/", b"plain name.txt"), "a/plain name.txt");
        assert_eq!(git_quote("a/", "é".as_bytes()), "\"a/\\303\\251\"");
        assert_eq!(git_quote("b/", b"x\ny\t\"\\"), "\"b/x\\ny\\t\\\"\\\\\"");
        assert_eq!(git_quote("", b"\x7f\x1b"), "\"\\177\\033\"");
        assert_eq!(git_quote("", b"\xff"), "\"\\377\"");
    }
}
