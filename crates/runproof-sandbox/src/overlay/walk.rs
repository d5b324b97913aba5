//! The walk shared by diff, summary and apply: upper layer against lower
//! workspace, producing the changes of the merged view as a stream of events
//! in a fixed order (names sorted bytewise, deletions of a directory's content
//! before the directory, a directory's creation before its content).

use super::{Limits, OverlayError};
use crate::protected::is_git_name;
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A non-directory entry of one side.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    File {
        /// Absolute path to read the content from.
        path: PathBuf,
        /// Full `st_mode` permission bits (including setuid etc.).
        mode: u32,
        size: u64,
        dev: u64,
        ino: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// A fifo, socket or device: nothing git or `apply` will carry over.
    Special {
        what: &'static str,
    },
}

/// One change of the merged view, relative to the workspace root.
pub(crate) enum Event<'a> {
    /// A non-directory of the lower layer is gone.
    Delete { rel: &'a Path, old: &'a Node },
    /// A lower directory is gone (its content's events came first).
    RemoveDir { rel: &'a Path },
    /// A directory that did not exist as one in the lower layer.
    MakeDir { rel: &'a Path, mode: u32 },
    /// A non-directory of the upper layer, replacing `old` (if any).
    Write {
        rel: &'a Path,
        old: Option<&'a Node>,
        new: &'a Node,
    },
    /// A `.git` entry was left out (see `include_git`).
    ExcludedGit { rel: &'a Path },
}

enum Entry {
    Absent,
    Whiteout,
    Dir {
        path: PathBuf,
        mode: u32,
        opaque: bool,
    },
    Leaf(Node),
}

/// How the new view of a directory is made.
enum NewDir {
    /// Upper directory merged with the lower one (which is the old view).
    Merged(PathBuf),
    /// Upper directory alone (opaque, or nothing below it in the lower layer).
    Pure(PathBuf),
    /// The directory is gone.
    Gone,
}

const NS: [&str; 2] = ["user.overlay.", "trusted.overlay."];

pub(crate) struct Walker<'a> {
    limits: &'a Limits,
    include_git: bool,
    entries: u64,
    upper_root: PathBuf,
    sink: &'a mut dyn FnMut(Event<'_>) -> Result<(), OverlayError>,
}

/// Walk `upper` against `lower`, calling `sink` for every change.
pub(crate) fn walk(
    upper: &Path,
    lower: &Path,
    limits: &Limits,
    include_git: bool,
    sink: &mut dyn FnMut(Event<'_>) -> Result<(), OverlayError>,
) -> Result<(), OverlayError> {
    for (dir, what) in [(upper, "upper layer"), (lower, "workspace")] {
        let md = std::fs::metadata(dir).map_err(|source| OverlayError::Missing {
            what,
            path: dir.to_path_buf(),
            source,
        })?;
        if !md.is_dir() {
            return Err(OverlayError::NotADirectory(dir.to_path_buf()));
        }
    }
    let mut w = Walker {
        limits,
        include_git,
        entries: 0,
        upper_root: upper.to_path_buf(),
        sink,
    };
    w.compare_dir(
        Path::new(""),
        0,
        Some(lower),
        &NewDir::Merged(upper.to_path_buf()),
    )
}

impl Walker<'_> {
    fn compare_dir(
        &mut self,
        rel: &Path,
        depth: usize,
        old: Option<&Path>,
        new: &NewDir,
    ) -> Result<(), OverlayError> {
        if depth > self.limits.max_depth {
            return Err(OverlayError::TooDeep {
                path: rel.to_path_buf(),
                limit: self.limits.max_depth,
            });
        }
        let mut names = match new {
            NewDir::Merged(u) | NewDir::Pure(u) => self.list(u)?,
            NewDir::Gone => Vec::new(),
        };
        if !matches!(new, NewDir::Merged(_))
            && let Some(o) = old
        {
            names.extend(self.list(o)?);
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        names.dedup();

        for name in names {
            let child_rel = rel.join(&name);
            if !self.include_git && is_git_name(&name) {
                (self.sink)(Event::ExcludedGit { rel: &child_rel })?;
                continue;
            }
            let old_e = match old {
                Some(o) => classify_lower(&o.join(&name))?,
                None => Entry::Absent,
            };
            let new_e = match new {
                NewDir::Merged(u) | NewDir::Pure(u) => classify_upper(&u.join(&name))?,
                NewDir::Gone => Entry::Absent,
            };
            let merged = matches!(new, NewDir::Merged(_));
            self.compare_node(&child_rel, depth + 1, old_e, new_e, merged)?;
        }
        Ok(())
    }

    fn compare_node(
        &mut self,
        rel: &Path,
        depth: usize,
        old: Entry,
        new: Entry,
        parent_merged: bool,
    ) -> Result<(), OverlayError> {
        let new = match new {
            Entry::Whiteout => Entry::Absent,
            e => e,
        };
        match (old, new) {
            (
                Entry::Dir { path: o, .. },
                Entry::Dir {
                    path: n, opaque, ..
                },
            ) => {
                let mode = if parent_merged && !opaque {
                    NewDir::Merged(n)
                } else {
                    NewDir::Pure(n)
                };
                self.compare_dir(rel, depth, Some(&o), &mode)
            }
            (Entry::Dir { path: o, .. }, new) => {
                self.compare_dir(rel, depth, Some(&o), &NewDir::Gone)?;
                (self.sink)(Event::RemoveDir { rel })?;
                if let Entry::Leaf(n) = new {
                    (self.sink)(Event::Write {
                        rel,
                        old: None,
                        new: &n,
                    })?;
                }
                Ok(())
            }
            (old, Entry::Dir { path: n, mode, .. }) => {
                if let Entry::Leaf(o) = &old {
                    (self.sink)(Event::Delete { rel, old: o })?;
                }
                (self.sink)(Event::MakeDir { rel, mode })?;
                self.compare_dir(rel, depth, None, &NewDir::Pure(n))
            }
            (Entry::Leaf(o), Entry::Leaf(n)) => (self.sink)(Event::Write {
                rel,
                old: Some(&o),
                new: &n,
            }),
            (Entry::Leaf(o), _) => (self.sink)(Event::Delete { rel, old: &o }),
            (_, Entry::Leaf(n)) => (self.sink)(Event::Write {
                rel,
                old: None,
                new: &n,
            }),
            _ => Ok(()),
        }
    }

    /// Names in a directory, counted against the entry limit as they come.
    fn list(&mut self, dir: &Path) -> Result<Vec<OsString>, OverlayError> {
        let rd = std::fs::read_dir(dir).map_err(|e| OverlayError::io(dir, e))?;
        let mut names = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| OverlayError::io(dir, e))?;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(OverlayError::TooManyEntries {
                    root: self.upper_root.clone(),
                    limit: self.limits.max_entries,
                });
            }
            names.push(ent.file_name());
        }
        Ok(names)
    }
}

fn lstat(path: &Path) -> Result<Option<Metadata>, OverlayError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(OverlayError::io(path, e)),
    }
}

fn leaf(path: &Path, md: &Metadata) -> Result<Node, OverlayError> {
    let ft = md.file_type();
    Ok(if ft.is_file() {
        Node::File {
            path: path.to_path_buf(),
            mode: md.mode() & 0o7777,
            size: md.len(),
            dev: md.dev(),
            ino: md.ino(),
        }
    } else if ft.is_symlink() {
        let t = std::fs::read_link(path).map_err(|e| OverlayError::io(path, e))?;
        Node::Symlink {
            target: t.into_os_string().into_vec(),
        }
    } else {
        Node::Special {
            what: special_kind(md),
        }
    })
}

fn special_kind(md: &Metadata) -> &'static str {
    let ft = md.file_type();
    if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

fn classify_lower(path: &Path) -> Result<Entry, OverlayError> {
    let Some(md) = lstat(path)? else {
        return Ok(Entry::Absent);
    };
    if md.is_dir() {
        return Ok(Entry::Dir {
            path: path.to_path_buf(),
            mode: md.mode() & 0o7777,
            opaque: false,
        });
    }
    Ok(Entry::Leaf(leaf(path, &md)?))
}

fn classify_upper(path: &Path) -> Result<Entry, OverlayError> {
    let Some(md) = lstat(path)? else {
        return Ok(Entry::Absent);
    };
    let ft = md.file_type();
    if ft.is_char_device() && md.rdev() == 0 {
        return Ok(Entry::Whiteout);
    }
    if ft.is_dir() {
        for ns in NS {
            let name = format!("{ns}redirect");
            if xattr(path, &name)?.is_some() {
                return Err(OverlayError::UnsupportedLayer {
                    path: path.to_path_buf(),
                    feature: "redirect_dir",
                    xattr: name,
                });
            }
        }
        let mut opaque = false;
        for ns in NS {
            if xattr(path, &format!("{ns}opaque"))?.as_deref() == Some(b"y") {
                opaque = true;
            }
        }
        return Ok(Entry::Dir {
            path: path.to_path_buf(),
            mode: md.mode() & 0o7777,
            opaque,
        });
    }
    if (ft.is_file() && md.len() == 0) || ft.is_fifo() {
        for ns in NS {
            if xattr(path, &format!("{ns}whiteout"))?.is_some() {
                return Ok(Entry::Whiteout);
            }
        }
    }
    if ft.is_file() {
        for ns in NS {
            let name = format!("{ns}metacopy");
            if xattr(path, &name)?.is_some() {
                return Err(OverlayError::UnsupportedLayer {
                    path: path.to_path_buf(),
                    feature: "metacopy",
                    xattr: name,
                });
            }
        }
    }
    Ok(Entry::Leaf(leaf(path, &md)?))
}

/// An extended attribute of `path` itself (never following a symlink), or
/// `None` when it has none of that name.
fn xattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>, OverlayError> {
    let mut buf = [0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Ok(Some(buf[..n].to_vec())),
        // Present but longer than any marker value we compare against.
        Err(rustix::io::Errno::RANGE) => Ok(Some(Vec::new())),
        Err(rustix::io::Errno::NODATA)
        | Err(rustix::io::Errno::NOTSUP)
        | Err(rustix::io::Errno::PERM) => Ok(None),
        Err(e) => Err(OverlayError::io(path, e.into())),
    }
}

/// Open a file found by the walk without following a symlink, check it is
/// still the regular file that was listed, and read at most `limit` bytes.
pub(crate) fn open_listed(node_path: &Path, dev: u64, ino: u64) -> Result<File, OverlayError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(node_path)
        .map_err(|e| OverlayError::io(node_path, e))?;
    let md = f.metadata().map_err(|e| OverlayError::io(node_path, e))?;
    if !md.is_file() || md.dev() != dev || md.ino() != ino {
        return Err(OverlayError::Changed(node_path.to_path_buf()));
    }
    Ok(f)
}

/// The content of a listed file, bounded by `limit`.
pub(crate) fn read_listed(node: &Node, limit: u64) -> Result<Vec<u8>, OverlayError> {
    match node {
        Node::File {
            path,
            size,
            dev,
            ino,
            ..
        } => {
            if *size > limit {
                return Err(OverlayError::FileTooLarge {
                    path: path.clone(),
                    size: *size,
                    limit,
                });
            }
            let f = open_listed(path, *dev, *ino)?;
            let mut data = Vec::with_capacity(*size as usize);
            f.take(limit + 1)
                .read_to_end(&mut data)
                .map_err(|e| OverlayError::io(path, e))?;
            if data.len() as u64 > limit {
                return Err(OverlayError::FileTooLarge {
                    path: path.clone(),
                    size: data.len() as u64,
                    limit,
                });
            }
            Ok(data)
        }
        Node::Symlink { target } => Ok(target.clone()),
        Node::Special { .. } => Ok(Vec::new()),
    }
}
