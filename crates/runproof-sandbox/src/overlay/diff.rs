//! The upper layer as a unified git diff that `git apply` applies to the
//! workspace: `diff --git` headers with full blob ids, new/deleted/changed
//! modes, symlinks as mode 120000 with the target as content, text hunks with
//! three lines of context, `GIT binary patch` literals for binary files.
//!
//! Renames are shown as a deletion and an addition. Directories are not
//! tracked by git, so empty ones do not appear. `.git` directories are never
//! part of the diff (git refuses patches that touch them); fifos, sockets and
//! devices cannot be expressed and are listed in [`DiffStats::warnings`].

use super::walk::{Event, Node, read_listed, walk};
use super::{Limits, OverlayError, git_quote};
use crate::protected;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use similar::{Algorithm, DiffTag};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

/// Options for [`diff()`].
#[derive(Debug, Clone)]
pub struct DiffOptions {
    pub limits: Limits,
    /// Lines of context around each hunk (git's default is 3).
    pub context: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            limits: Limits::default(),
            context: 3,
        }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Added,
    Deleted,
    Modified,
    /// Only the mode (the executable bit) changed.
    ModeChanged,
}

/// One file of the diff.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileStat {
    /// The path, git-quoted when it holds unusual bytes (always ASCII).
    pub path: String,
    pub status: FileStatus,
    pub insertions: u64,
    pub deletions: u64,
    pub binary: bool,
    /// `runproof apply` will refuse this path (see [`crate::protected`]).
    pub protected: bool,
}

/// How many files, excluded `.git` entries and warnings [`DiffStats`] lists
/// one by one; the counters go on past it.
pub const MAX_LISTED: usize = 100_000;

/// What [`diff()`] wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiffStats {
    /// Files in the diff.
    pub files_changed: u64,
    /// Per-file figures, the first [`MAX_LISTED`] files only.
    pub files: Vec<FileStat>,
    pub insertions: u64,
    pub deletions: u64,
    /// `.git` entries changed in the sandbox and left out of the diff.
    pub excluded_git: Vec<String>,
    /// Entries that a git diff cannot express (fifos, sockets, devices).
    pub warnings: Vec<String>,
    pub bytes_written: u64,
}

/// Write the change that the upper layer `upper` makes to `workspace` as a
/// unified git diff to `out`. Returns what was written. The output is bytes,
/// not text: file contents need not be UTF-8.
pub fn diff(
    upper: &Path,
    workspace: &Path,
    out: &mut dyn Write,
    opts: &DiffOptions,
) -> Result<DiffStats, OverlayError> {
    let mut w = DiffWriter {
        out: Capped {
            inner: out,
            written: 0,
            limit: opts.limits.max_output_bytes,
        },
        opts,
        stats: DiffStats::default(),
    };
    walk(upper, workspace, &opts.limits, false, &mut |ev| w.event(ev))?;
    w.stats.bytes_written = w.out.written;
    w.out
        .flush()
        .map_err(out_err(opts.limits.max_output_bytes))?;
    Ok(w.stats)
}

/// [`diff()`] into memory.
pub fn diff_to_vec(
    upper: &Path,
    workspace: &Path,
    opts: &DiffOptions,
) -> Result<(Vec<u8>, DiffStats), OverlayError> {
    let mut buf = Vec::new();
    let stats = diff(upper, workspace, &mut buf, opts)?;
    Ok((buf, stats))
}

/// Writer that refuses to go past a byte limit.
struct Capped<'a> {
    inner: &'a mut dyn Write,
    written: u64,
    limit: u64,
}

impl Write for Capped<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "diff output limit",
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn out_err(limit: u64) -> impl Fn(io::Error) -> OverlayError {
    move |e| {
        if e.kind() == io::ErrorKind::FileTooLarge {
            OverlayError::OutputTooLarge { limit }
        } else {
            OverlayError::Output(e)
        }
    }
}

/// One side of a file change, as git sees it.
struct Blob {
    /// 0o100644, 0o100755 or 0o120000.
    mode: u32,
    data: Vec<u8>,
}

impl Blob {
    fn oid(&self) -> String {
        blob_oid(&self.data)
    }
}

/// Git's object id of a blob with this content (SHA-1 repositories).
pub(crate) fn blob_oid(data: &[u8]) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    h.digest().to_string()
}

const NULL_OID: &str = "0000000000000000000000000000000000000000";

/// Git's file mode for a node: only the executable bit survives.
fn git_mode(node: &Node) -> Option<u32> {
    match node {
        Node::File { mode, .. } if mode & 0o111 != 0 => Some(0o100755),
        Node::File { .. } => Some(0o100644),
        Node::Symlink { .. } => Some(0o120000),
        Node::Special { .. } => None,
    }
}

struct DiffWriter<'a> {
    out: Capped<'a>,
    opts: &'a DiffOptions,
    stats: DiffStats,
}

impl DiffWriter<'_> {
    fn event(&mut self, ev: Event<'_>) -> Result<(), OverlayError> {
        match ev {
            Event::Delete { rel, old } => self.change(rel, Some(old), None),
            Event::Write { rel, old, new } => {
                if let Node::Special { what } = new {
                    self.warn(rel, what);
                    return Ok(());
                }
                if let Some(Node::Special { what }) = old {
                    self.warn(rel, what);
                }
                let old = old.filter(|o| !matches!(o, Node::Special { .. }));
                if let Node::Symlink { target } = new
                    && let Some(why) = super::apply::symlink_refusal(rel, target)
                    && self.stats.warnings.len() < MAX_LISTED
                {
                    self.stats.warnings.push(format!(
                        "{}: {why}; `runproof apply` refuses it",
                        super::display_rel(rel)
                    ));
                }
                match (old.and_then(git_mode), git_mode(new)) {
                    // A type change (file <-> symlink) is a deletion and an
                    // addition, as git writes it.
                    (Some(a), Some(b)) if (a == 0o120000) != (b == 0o120000) => {
                        self.change(rel, old, None)?;
                        self.change(rel, None, Some(new))
                    }
                    _ => self.change(rel, old, Some(new)),
                }
            }
            Event::ExcludedGit { rel } => {
                if self.stats.excluded_git.len() < MAX_LISTED {
                    self.stats.excluded_git.push(super::display_rel(rel));
                }
                Ok(())
            }
            Event::MakeDir { .. } | Event::RemoveDir { .. } => Ok(()),
        }
    }

    fn warn(&mut self, rel: &Path, what: &str) {
        if self.stats.warnings.len() < MAX_LISTED {
            self.stats.warnings.push(format!(
                "{}: a {what} cannot be expressed in a git diff; left out",
                super::display_rel(rel)
            ));
        }
    }

    fn change(
        &mut self,
        rel: &Path,
        old: Option<&Node>,
        new: Option<&Node>,
    ) -> Result<(), OverlayError> {
        let old = old.filter(|n| !matches!(n, Node::Special { .. }));
        if let Some(Node::Special { what }) = old {
            self.warn(rel, what);
        }
        let limit = self.opts.limits.max_file_bytes;
        let old = match old {
            Some(n) => Some(Blob {
                mode: git_mode(n).unwrap_or(0o100644),
                data: read_listed(n, limit)?,
            }),
            None => None,
        };
        let new = match new {
            Some(n) => Some(Blob {
                mode: git_mode(n).unwrap_or(0o100644),
                data: read_listed(n, limit)?,
            }),
            None => None,
        };
        let path = rel.as_os_str().as_bytes();
        let max_out = self.opts.limits.max_output_bytes;
        let stat = self
            .write_file(path, old.as_ref(), new.as_ref())
            .map_err(out_err(max_out))?;
        if let Some(mut stat) = stat {
            stat.protected = protected::is_protected(rel);
            self.stats.files_changed += 1;
            self.stats.insertions += stat.insertions;
            self.stats.deletions += stat.deletions;
            if self.stats.files.len() < MAX_LISTED {
                self.stats.files.push(stat);
            }
        }
        Ok(())
    }

    /// One `diff --git` section; `None` when nothing changed.
    fn write_file(
        &mut self,
        path: &[u8],
        old: Option<&Blob>,
        new: Option<&Blob>,
    ) -> io::Result<Option<FileStat>> {
        let same_data = match (old, new) {
            (Some(o), Some(n)) => o.data == n.data,
            _ => false,
        };
        if same_data && old.map(|b| b.mode) == new.map(|b| b.mode) {
            return Ok(None);
        }
        let a = git_quote("a/", path);
        let b = git_quote("b/", path);
        let out = &mut self.out;
        writeln!(out, "diff --git {a} {b}")?;
        let status = match (old, new) {
            (None, Some(n)) => {
                writeln!(out, "new file mode {:o}", n.mode)?;
                writeln!(out, "index {NULL_OID}..{}", n.oid())?;
                FileStatus::Added
            }
            (Some(o), None) => {
                writeln!(out, "deleted file mode {:o}", o.mode)?;
                writeln!(out, "index {}..{NULL_OID}", o.oid())?;
                FileStatus::Deleted
            }
            (Some(o), Some(n)) => {
                if o.mode != n.mode {
                    writeln!(out, "old mode {:o}", o.mode)?;
                    writeln!(out, "new mode {:o}", n.mode)?;
                    if !same_data {
                        writeln!(out, "index {}..{}", o.oid(), n.oid())?;
                    }
                } else {
                    writeln!(out, "index {}..{} {:o}", o.oid(), n.oid(), n.mode)?;
                }
                if same_data {
                    FileStatus::ModeChanged
                } else {
                    FileStatus::Modified
                }
            }
            (None, None) => unreachable!("a change has at least one side"),
        };
        let old_data: &[u8] = old.map(|b| b.data.as_slice()).unwrap_or_default();
        let new_data: &[u8] = new.map(|b| b.data.as_slice()).unwrap_or_default();
        let mut stat = FileStat {
            path: git_quote("", path),
            status,
            insertions: 0,
            deletions: 0,
            binary: false,
            protected: false,
        };
        if same_data || (old_data.is_empty() && new_data.is_empty()) {
            return Ok(Some(stat));
        }
        let text_limit = self.opts.limits.max_text_bytes;
        let binary = is_binary(old_data)
            || is_binary(new_data)
            || old_data.len() as u64 > text_limit
            || new_data.len() as u64 > text_limit;
        if binary {
            stat.binary = true;
            writeln!(out, "GIT binary patch")?;
            write_literal(out, new_data)?;
            writeln!(out)?;
            return Ok(Some(stat));
        }
        if old.is_some() {
            writeln!(out, "--- {a}")?;
        } else {
            writeln!(out, "--- /dev/null")?;
        }
        if new.is_some() {
            writeln!(out, "+++ {b}")?;
        } else {
            writeln!(out, "+++ /dev/null")?;
        }
        let deadline = Instant::now() + self.opts.limits.text_diff_timeout;
        let (ins, del) = write_hunks(out, old_data, new_data, self.opts.context, deadline)?;
        stat.insertions = ins;
        stat.deletions = del;
        Ok(Some(stat))
    }
}

/// Git's test: a NUL byte in the first 8000 bytes makes a file binary.
fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(8000)].contains(&0)
}

/// Lines including their `\n`; the last may lack one.
fn split_lines(data: &[u8]) -> Vec<&[u8]> {
    data.split_inclusive(|&b| b == b'\n').collect()
}

/// Write the hunks of a line diff; returns (insertions, deletions).
pub(crate) fn write_hunks(
    out: &mut dyn Write,
    old: &[u8],
    new: &[u8],
    context: usize,
    deadline: Instant,
) -> io::Result<(u64, u64)> {
    let a = split_lines(old);
    let b = split_lines(new);
    let ops = similar::capture_diff_slices_deadline(Algorithm::Myers, &a, &b, Some(deadline));
    let (mut ins, mut del) = (0u64, 0u64);
    for group in similar::group_diff_ops(ops, context) {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            continue;
        };
        let (os, oe) = (first.old_range().start, last.old_range().end);
        let (ns, ne) = (first.new_range().start, last.new_range().end);
        writeln!(out, "@@ -{} +{} @@", range(os, oe - os), range(ns, ne - ns))?;
        for op in &group {
            let (tag, or, nr) = op.as_tag_tuple();
            match tag {
                DiffTag::Equal => {
                    for l in &a[or] {
                        line(out, b' ', l)?;
                    }
                }
                DiffTag::Delete | DiffTag::Insert | DiffTag::Replace => {
                    for l in &a[or] {
                        line(out, b'-', l)?;
                        del += 1;
                    }
                    for l in &b[nr] {
                        line(out, b'+', l)?;
                        ins += 1;
                    }
                }
            }
        }
    }
    Ok((ins, del))
}

/// A hunk range: `start,len`, `start` alone when len is 1; for an empty
/// range, the line before it.
fn range(start: usize, len: usize) -> String {
    match len {
        0 => format!("{start},0"),
        1 => format!("{}", start + 1),
        n => format!("{},{n}", start + 1),
    }
}

fn line(out: &mut dyn Write, mark: u8, l: &[u8]) -> io::Result<()> {
    out.write_all(&[mark])?;
    out.write_all(l)?;
    if !l.ends_with(b"\n") {
        out.write_all(b"\n\\ No newline at end of file\n")?;
    }
    Ok(())
}

/// `literal N` followed by the zlib-deflated data in git's base85 lines.
fn write_literal(out: &mut dyn Write, data: &[u8]) -> io::Result<()> {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(data)?;
    let deflated = z.finish()?;
    writeln!(out, "literal {}", data.len())?;
    for chunk in deflated.chunks(52) {
        let n = chunk.len() as u8;
        let len_char = if n <= 26 { b'A' + n - 1 } else { b'a' + n - 27 };
        let mut line = Vec::with_capacity(67);
        line.push(len_char);
        base85_into(chunk, &mut line);
        line.push(b'\n');
        out.write_all(&line)?;
    }
    Ok(())
}

const B85: &[u8; 85] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";

/// Git's base85: each group of 4 bytes (zero-padded) as a big-endian number
/// written in 5 digits, most significant first.
fn base85_into(data: &[u8], out: &mut Vec<u8>) {
    for group in data.chunks(4) {
        let mut word = [0u8; 4];
        word[..group.len()].copy_from_slice(group);
        let mut acc = u32::from_be_bytes(word);
        let mut digits = [0u8; 5];
        for d in digits.iter_mut().rev() {
            *d = B85[(acc % 85) as usize];
            acc /= 85;
        }
        out.extend_from_slice(&digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn hunks(a: &str, b: &str) -> String {
        let mut out = Vec::new();
        write_hunks(
            &mut out,
            a.as_bytes(),
            b.as_bytes(),
            3,
            Instant::now() + std::time::Duration::from_secs(5),
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hunk_headers_follow_the_unified_format() {
        assert_eq!(hunks("", "a\nb\n"), "@@ -0,0 +1,2 @@\n+a\n+b\n");
        assert_eq!(hunks("a\n", ""), "@@ -1 +0,0 @@\n-a\n");
        assert_eq!(
            hunks("1\n2\n3\n4\n5\n6\n7\n8\n", "1\n2\n3\n4\nX\n6\n7\n8\n"),
            "@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+X\n 6\n 7\n 8\n"
        );
    }

    #[test]
    fn missing_newline_is_marked() {
        assert_eq!(
            hunks("a\nb", "a\nb\n"),
            "@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n"
        );
    }

    #[test]
    fn base85_matches_gits_alphabet_and_order() {
        let mut v = Vec::new();
        base85_into(&[0, 0, 0, 0], &mut v);
        assert_eq!(v, b"00000");
        v.clear();
        base85_into(&[0xff, 0xff, 0xff, 0xff], &mut v);
        // 2^32-1 = 82*85^4 + 23*85^3 + 54*85^2 + 12*85 + 0
        assert_eq!(v, b"|NsC0");
        v.clear();
        base85_into(&[0, 0, 0, 85], &mut v);
        assert_eq!(v, b"00010");
    }

    /// Decode one base85 line of a binary patch (the inverse of git's encoder).
    fn decode_line(line: &str) -> Vec<u8> {
        let bytes = line.as_bytes();
        let n = match bytes[0] {
            c @ b'A'..=b'Z' => (c - b'A' + 1) as usize,
            c => (c - b'a' + 27) as usize,
        };
        let mut out = Vec::new();
        for group in bytes[1..].chunks(5) {
            let mut v: u32 = 0;
            for &c in group {
                let d = B85.iter().position(|&x| x == c).unwrap() as u32;
                v = v * 85 + d;
            }
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.truncate(n);
        out
    }

    #[test]
    fn literal_round_trips_and_decodes_gits_own_output() {
        // `git diff --binary` writes this for a binary file becoming empty.
        let git = decode_line("HcmV?d00001");
        let mut empty = Vec::new();
        flate2::read::ZlibDecoder::new(&git[..])
            .read_to_end(&mut empty)
            .unwrap();
        assert!(empty.is_empty());

        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let mut out = Vec::new();
        write_literal(&mut out, &data).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("literal 5000"));
        let mut deflated = Vec::new();
        for l in lines {
            assert!(l.len() <= 66, "line too long: {l}");
            deflated.extend(decode_line(l));
        }
        let mut back = Vec::new();
        flate2::read::ZlibDecoder::new(&deflated[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn blob_ids_match_git() {
        assert_eq!(blob_oid(b""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
        assert_eq!(
            blob_oid(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
