//! Where objects live: an inventory of a repository's object store read
//! straight from pack indexes and loose object directories, so every object
//! can be reported with the file that holds it. Reading `.idx` files directly
//! costs microseconds per pack, where asking git would cost a process walk.

use crate::error::{Result, io};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Every object id in an object store, with an index into `locations`.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Object id (lowercase hex) to location index.
    pub objects: HashMap<String, u32>,
    /// Human-readable locations: pack files, loose object files, alternates.
    pub locations: Vec<String>,
    /// Alternate object directories found (`objects/info/alternates`).
    pub alternates: Vec<PathBuf>,
}

impl Inventory {
    /// Read the object store at `objects_dir` (and its alternates, one level deep).
    /// `hex_len` is 40 for SHA-1 repositories and 64 for SHA-256 ones.
    pub fn read(objects_dir: &Path, hex_len: usize, label: &Path) -> Result<Inventory> {
        let mut inv = Inventory::default();
        inv.add_store(objects_dir, hex_len, label, true)?;
        Ok(inv)
    }

    /// Where `oid` lives, if it is in the store.
    pub fn location(&self, oid: &str) -> Option<&str> {
        self.objects
            .get(oid)
            .map(|&i| self.locations[i as usize].as_str())
    }

    fn add_store(
        &mut self,
        dir: &Path,
        hex_len: usize,
        label: &Path,
        follow_alternates: bool,
    ) -> Result<()> {
        let raw = hex_len / 2;
        let pack_dir = dir.join("pack");
        if let Ok(rd) = std::fs::read_dir(&pack_dir) {
            let mut idxs: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "idx"))
                .collect();
            idxs.sort();
            for idx in idxs {
                let data = std::fs::read(&idx).map_err(io("reading pack index", &idx))?;
                let loc = self.push_location(display_rel(&idx.with_extension("pack"), label));
                for oid in parse_idx(&data, raw) {
                    self.objects.entry(oid).or_insert(loc);
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut fans: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit())
                })
                .map(|e| e.path())
                .collect();
            fans.sort();
            for fan in fans {
                let prefix = fan
                    .file_name()
                    .map(|n| n.to_string_lossy().to_ascii_lowercase())
                    .unwrap_or_default();
                let Ok(rd) = std::fs::read_dir(&fan) else {
                    continue;
                };
                for e in rd.filter_map(|e| e.ok()) {
                    let n = e.file_name().to_string_lossy().to_ascii_lowercase();
                    if n.len() + 2 == hex_len && n.bytes().all(|b| b.is_ascii_hexdigit()) {
                        let oid = format!("{prefix}{n}");
                        let loc = self.push_location(display_rel(&e.path(), label));
                        self.objects.entry(oid).or_insert(loc);
                    }
                }
            }
        }
        if follow_alternates {
            let alt_file = dir.join("info").join("alternates");
            if let Ok(text) = std::fs::read_to_string(&alt_file) {
                for line in text.lines().take(64) {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let p = if Path::new(line).is_absolute() {
                        PathBuf::from(line)
                    } else {
                        dir.join(line)
                    };
                    self.alternates.push(p.clone());
                    self.add_store(&p, hex_len, Path::new("/nonexistent-label"), false)?;
                }
            }
        }
        Ok(())
    }

    fn push_location(&mut self, s: String) -> u32 {
        if self.locations.last() == Some(&s) {
            return (self.locations.len() - 1) as u32;
        }
        self.locations.push(s);
        (self.locations.len() - 1) as u32
    }
}

fn display_rel(p: &Path, base: &Path) -> String {
    match p.strip_prefix(base) {
        Ok(r) => r.display().to_string(),
        Err(_) => p.display().to_string(),
    }
}

/// Object ids listed in a pack index (version 1 or 2). Malformed input yields
/// what could be read safely, never a panic.
pub fn parse_idx(data: &[u8], raw_len: usize) -> Vec<String> {
    let (count, ids_at, stride) = if data.len() >= 8 && data[..4] == [0xff, b't', b'O', b'c'] {
        let fan = 8;
        if data.len() < fan + 256 * 4 {
            return Vec::new();
        }
        let n = u32::from_be_bytes(
            data[fan + 255 * 4..fan + 256 * 4]
                .try_into()
                .unwrap_or([0; 4]),
        ) as usize;
        (n, fan + 256 * 4, raw_len)
    } else {
        if data.len() < 256 * 4 {
            return Vec::new();
        }
        let n = u32::from_be_bytes(data[255 * 4..256 * 4].try_into().unwrap_or([0; 4])) as usize;
        (n, 256 * 4 + 4, raw_len + 4)
    };
    let mut out = Vec::with_capacity(count.min(data.len() / stride.max(1)));
    for i in 0..count {
        let start = ids_at + i * stride;
        let Some(raw) = data.get(start..start + raw_len) else {
            break;
        };
        out.push(hex(raw));
    }
    out
}

fn hex(raw: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(raw.len() * 2);
    for b in raw {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_idx_yields_nothing_not_panic() {
        assert!(parse_idx(b"", 20).is_empty());
        assert!(parse_idx(&[0xff, b't', b'O', b'c', 0, 0, 0, 2], 20).is_empty());
        let mut v2 = vec![0xff, b't', b'O', b'c', 0, 0, 0, 2];
        v2.extend(std::iter::repeat_n(0xff, 1024)); // fanout claims 4 billion objects
        v2.extend([0xab; 20]);
        let ids = parse_idx(&v2, 20);
        assert_eq!(ids, vec!["ab".repeat(20)]);
    }
}
