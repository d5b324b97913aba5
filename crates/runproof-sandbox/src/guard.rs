//! Protected workspace paths in direct (non-overlay) mode.
//!
//! The workspace is writable, but some of its paths are run by the host
//! later (git hooks and config, shell start-up files, agent and editor
//! configuration). Two mechanisms keep them safe:
//!
//! 1. paths that exist when the run starts are bind-mounted read-only inside
//!    the sandbox, so writes to them fail with EROFS;
//! 2. a path that does not exist yet cannot carry a mount without creating it
//!    on the host, and a directory holding a protected path could be renamed
//!    away and re-created. So every protected path is snapshotted before the
//!    run and compared after it: whatever the run created or changed there is
//!    moved to a quarantine directory (nothing is lost) and the original is
//!    put back. The run report lists each restored path.
//!
//! The snapshot is bounded ([`MAX_BYTES`], [`MAX_ENTRIES`]); a protected tree
//! larger than that is still mounted read-only but only its first entries are
//! compared, and the report says so.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const MAX_BYTES: u64 = 16 << 20;
pub const MAX_ENTRIES: usize = 20_000;

/// Protected paths relative to the workspace root, as checked by the guard.
pub fn root_paths() -> Vec<PathBuf> {
    crate::protected::protected_paths()
        .iter()
        .filter(|p| !p.path.contains('*'))
        .map(|p| PathBuf::from(p.path))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File {
        mode: u32,
        data: Vec<u8>,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: PathBuf,
    },
    /// Something we do not restore (device, fifo, socket) or too large.
    Other {
        size: u64,
    },
}

/// What protected paths held before a run.
#[derive(Debug, Default)]
pub struct Snapshot {
    root: PathBuf,
    entries: BTreeMap<PathBuf, Entry>,
    pub truncated: bool,
}

fn read_entry(path: &Path, budget: &mut u64) -> io::Result<Entry> {
    let md = fs::symlink_metadata(path)?;
    let ft = md.file_type();
    Ok(if ft.is_symlink() {
        Entry::Symlink {
            target: fs::read_link(path)?,
        }
    } else if ft.is_dir() {
        Entry::Dir {
            mode: md.mode() & 0o7777,
        }
    } else if ft.is_file() && md.len() <= *budget {
        *budget -= md.len();
        Entry::File {
            mode: md.mode() & 0o7777,
            data: fs::read(path)?,
        }
    } else {
        Entry::Other { size: md.len() }
    })
}

fn walk(
    root: &Path,
    rel: &Path,
    out: &mut BTreeMap<PathBuf, Entry>,
    budget: &mut u64,
    truncated: &mut bool,
) {
    if out.len() >= MAX_ENTRIES {
        *truncated = true;
        return;
    }
    let full = root.join(rel);
    let Ok(e) = read_entry(&full, budget) else {
        return;
    };
    let is_dir = matches!(e, Entry::Dir { .. });
    out.insert(rel.to_path_buf(), e);
    // `.git` itself is protected only against becoming a file or symlink;
    // its protected contents are listed on their own.
    if is_dir && rel != Path::new(".git") {
        if let Ok(rd) = fs::read_dir(&full) {
            let mut names: Vec<_> = rd.filter_map(|d| d.ok().map(|d| d.file_name())).collect();
            names.sort();
            for n in names {
                walk(root, &rel.join(n), out, budget, truncated);
            }
        }
    }
}

impl Snapshot {
    /// Record every protected path below `root` (the host workspace).
    pub fn take(root: &Path, rels: &[PathBuf]) -> Snapshot {
        let mut s = Snapshot {
            root: root.to_path_buf(),
            ..Default::default()
        };
        let mut budget = MAX_BYTES;
        for rel in rels {
            // A protected path below a symlinked parent is not ours to follow.
            if rel.parent().is_some_and(|p| {
                !p.as_os_str().is_empty()
                    && fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.file_type().is_symlink())
            }) {
                continue;
            }
            walk(root, rel, &mut s.entries, &mut budget, &mut s.truncated);
        }
        s
    }

    /// Existing protected directories and files that can be mounted
    /// read-only (not symlinks: a mount would follow them).
    pub fn existing_mountable(&self, rels: &[PathBuf]) -> Vec<PathBuf> {
        rels.iter()
            // `.git` is guarded only against turning into a file or link;
            // git must write inside it.
            .filter(|r| r.as_path() != Path::new(".git"))
            .filter(|r| {
                matches!(
                    self.entries.get(*r),
                    Some(Entry::Dir { .. } | Entry::File { .. } | Entry::Other { .. })
                )
            })
            .cloned()
            .collect()
    }

    /// Compare with the workspace after the run; restore what changed.
    /// Returns the relative paths restored.
    pub fn restore(&self, rels: &[PathBuf], quarantine: &Path) -> io::Result<Vec<String>> {
        let after = Snapshot::take(&self.root, rels);
        let mut changed: Vec<&PathBuf> = Vec::new();
        for (k, v) in &after.entries {
            if self.entries.get(k) != Some(v) {
                changed.push(k);
            }
        }
        for k in self.entries.keys() {
            if !after.entries.contains_key(k) {
                changed.push(k);
            }
        }
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        // Work on the top-most changed protected roots: move each away whole
        // and rebuild it from the snapshot.
        let mut roots: Vec<PathBuf> = Vec::new();
        for c in &changed {
            let top = rels
                .iter()
                .find(|r| c.starts_with(r))
                .cloned()
                .unwrap_or_else(|| (*c).clone());
            if !roots.contains(&top) {
                roots.push(top);
            }
        }
        let mut restored = Vec::new();
        for rel in roots {
            let full = self.root.join(&rel);
            // Anything between the workspace and the protected path that the
            // run turned into a symlink or file is moved away too.
            let mut anchor = self.root.clone();
            for comp in rel.parent().into_iter().flat_map(|p| p.components()) {
                anchor.push(comp);
                if let Ok(m) = fs::symlink_metadata(&anchor) {
                    if !m.is_dir() {
                        quarantine_move(&anchor, &self.root, quarantine)?;
                    }
                }
            }
            if fs::symlink_metadata(&full).is_ok() {
                quarantine_move(&full, &self.root, quarantine)?;
            }
            for (k, e) in self.entries.range(rel.clone()..) {
                if !k.starts_with(&rel) {
                    break;
                }
                recreate(&self.root.join(k), e)?;
            }
            restored.push(rel.display().to_string());
        }
        Ok(restored)
    }
}

fn quarantine_move(path: &Path, root: &Path, quarantine: &Path) -> io::Result<()> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let dest = quarantine.join(rel);
    if let Some(p) = dest.parent() {
        fs::create_dir_all(p)?;
    }
    if fs::rename(path, &dest).is_err() {
        // Different file system: fall back to removal; the copy is best
        // effort for files, since the content is the run's own.
        if fs::symlink_metadata(path)?.is_dir() {
            fs::remove_dir_all(path)?;
        } else {
            let _ = fs::copy(path, &dest);
            fs::remove_file(path)?;
        }
    }
    Ok(())
}

fn recreate(path: &Path, e: &Entry) -> io::Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    match e {
        Entry::Dir { mode } => {
            fs::create_dir_all(path)?;
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
        }
        Entry::File { mode, data } => {
            fs::write(path, data)?;
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
        }
        Entry::Symlink { target } => std::os::unix::fs::symlink(target, path),
        Entry::Other { .. } => Ok(()),
    }
}
