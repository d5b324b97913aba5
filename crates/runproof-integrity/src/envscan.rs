//! Scan a directory tree (a workspace, a home directory, a virtualenv) for
//! package caches, installed copies of the project under test, and files
//! holding the reference fix. Symlinks are never followed; sizes and counts
//! are bounded; nothing found is executed.

use crate::check::{Leak, LeakKind, Severity};
use crate::task::FixSignature;
use std::path::{Path, PathBuf};

/// Bounds for one scan.
#[derive(Debug, Clone)]
pub struct ScanLimits {
    /// Files visited at most.
    pub max_files: u64,
    /// Files larger than this are not read.
    pub max_file_bytes: u64,
    /// Total bytes read at most.
    pub max_total_bytes: u64,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            max_files: 2_000_000,
            max_file_bytes: 4 << 20,
            max_total_bytes: 4 << 30,
        }
    }
}

/// What kind of package cache a directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheKind {
    /// pip's cache (`~/.cache/pip`).
    Pip,
    /// uv's cache (`~/.cache/uv`).
    Uv,
    /// npm's content cache (`~/.npm/_cacache`).
    Npm,
    /// yarn's cache.
    Yarn,
    /// pnpm's store.
    Pnpm,
    /// cargo's registry or git checkouts (`~/.cargo/registry`, `~/.cargo/git`).
    Cargo,
    /// poetry's cache.
    Poetry,
}

/// Classify a directory by its name and its parent's name.
pub fn cache_kind(parent: &str, name: &str) -> Option<CacheKind> {
    match (parent, name) {
        (".cache", "pip") => Some(CacheKind::Pip),
        (".cache", "uv") => Some(CacheKind::Uv),
        (".npm", "_cacache") => Some(CacheKind::Npm),
        (".cache", "yarn") | (".yarn", "cache") => Some(CacheKind::Yarn),
        (_, ".pnpm-store") => Some(CacheKind::Pnpm),
        (".cargo", "registry") | (".cargo", "git") => Some(CacheKind::Cargo),
        (".cache", "pypoetry") => Some(CacheKind::Poetry),
        _ => None,
    }
}

/// What a scan found, plus the paths a sanitiser should remove.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// Findings.
    pub leaks: Vec<Leak>,
    /// Cache directories found (to strip).
    pub caches: Vec<(PathBuf, CacheKind)>,
    /// Installed copies of the project under test that are not editable installs (to strip).
    pub installed: Vec<PathBuf>,
    /// Files holding the fixed code outside the tracked tree (to strip).
    pub fixed_files: Vec<PathBuf>,
    /// Files visited.
    pub files: u64,
    /// Whether a bound stopped the scan early.
    pub truncated: bool,
}

/// Options for [`scan_tree`].
pub struct ScanOptions<'a> {
    /// The reference fix's distinctive lines, if known.
    pub signature: Option<&'a FixSignature>,
    /// Normalised package name of the project under test.
    pub package: Option<&'a str>,
    /// The project's version at the base, if known.
    pub base_version: Option<&'a str>,
    /// Files that are tracked at the base and may legitimately contain anything
    /// (relative to the root); they are still matched, but reported as the
    /// workspace holding the fix.
    pub limits: ScanLimits,
    /// Skip a top-level `.git` (it is checked separately).
    pub skip_root_git: bool,
}

/// Walk `root` and report caches, installed project copies and fix content.
pub fn scan_tree(root: &Path, opts: &ScanOptions<'_>) -> ScanResult {
    let mut res = ScanResult::default();
    let mut bytes_read = 0u64;
    // Stack of (dir, in_package_area, in_cache)
    let mut stack: Vec<(PathBuf, bool, bool)> = vec![(root.to_path_buf(), false, false)];
    while let Some((dir, in_pkg, in_cache)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        let parent_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for e in entries {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            if ft.is_dir() {
                if name == ".git" {
                    if !(opts.skip_root_git && dir == root) {
                        res.leaks.push(Leak::new(
                            LeakKind::NestedRepository,
                            Severity::Warning,
                            rel,
                            "a git directory inside the workspace; its history is not checked: remove it or check it separately".into(),
                        ));
                    }
                    continue;
                }
                let mut cache = in_cache;
                if !in_cache && let Some(kind) = cache_kind(&parent_name, &name) {
                    cache = true;
                    let holds = opts.package.is_some_and(|p| dir_mentions_package(&path, p));
                    res.caches.push((path.clone(), kind));
                    let (sev, detail) = if holds {
                        (
                            Severity::Leak,
                            format!(
                                "{kind:?} package cache holding files named after the project under test"
                            ),
                        )
                    } else {
                        (
                            Severity::Warning,
                            format!(
                                "{kind:?} package cache; it can hold later versions of dependencies or the project"
                            ),
                        )
                    };
                    res.leaks
                        .push(Leak::new(LeakKind::Cache, sev, rel.clone(), detail));
                }
                let pkg_area = in_pkg
                    || matches!(
                        name.as_str(),
                        "site-packages" | "dist-packages" | "node_modules"
                    );
                if let Some(p) = opts.package
                    && in_pkg
                    && matches!(
                        parent_name.as_str(),
                        "site-packages" | "dist-packages" | "node_modules"
                    )
                {
                    check_installed(&path, &name, p, opts.base_version, &rel, &mut res);
                }
                stack.push((path, pkg_area, cache));
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            res.files += 1;
            if res.files > opts.limits.max_files || bytes_read > opts.limits.max_total_bytes {
                res.truncated = true;
                return res;
            }
            let Some(sig) = opts.signature else { continue };
            let Ok(meta) = e.metadata() else { continue };
            if meta.len() > opts.limits.max_file_bytes
                || meta.len() < crate::task::MIN_SIGNATURE_LEN as u64
            {
                continue;
            }
            let Ok(content) = std::fs::read(&path) else {
                continue;
            };
            bytes_read += content.len() as u64;
            if content.iter().take(8000).any(|&b| b == 0) {
                continue;
            }
            if let Some(m) = sig.content_matches(&content) {
                let area = if in_cache {
                    "a package cache"
                } else if in_pkg {
                    "installed packages"
                } else {
                    "the workspace"
                };
                res.fixed_files.push(path.clone());
                res.leaks.push(
                    Leak::new(
                        LeakKind::FixedCodeFile,
                        Severity::Leak,
                        rel,
                        format!(
                            "file in {area} holds {} of {} distinctive lines of the reference fix",
                            m.len(),
                            sig.lines.len()
                        ),
                    )
                    .with_fragments(m),
                );
            }
        }
    }
    res
}

fn dir_mentions_package(dir: &Path, package: &str) -> bool {
    // Bounded walk over names only.
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    let mut seen = 0usize;
    while let Some((d, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            seen += 1;
            if seen > 200_000 {
                return false;
            }
            let n = crate::task::normalize_package(&e.file_name().to_string_lossy());
            if n == package || n.starts_with(&format!("{package}-")) {
                return true;
            }
            if depth < 8 && e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    false
}

fn check_installed(
    path: &Path,
    name: &str,
    package: &str,
    base_version: Option<&str>,
    rel: &str,
    res: &mut ScanResult,
) {
    let norm = crate::task::normalize_package(name);
    let meta_dir = name.ends_with(".dist-info") || name.ends_with(".egg-info");
    let is_project = if meta_dir {
        norm.strip_prefix(package)
            .is_some_and(|r| r.starts_with('-'))
    } else {
        norm == package && path.join("package.json").is_file()
    };
    if !is_project {
        return;
    }
    let version = if meta_dir {
        ["METADATA", "PKG-INFO"].iter().find_map(|f| {
            let t = read_small(&path.join(f))?;
            t.lines()
                .find_map(|l| l.strip_prefix("Version:").map(|v| v.trim().to_string()))
        })
    } else {
        read_small(&path.join("package.json")).and_then(|t| {
            serde_json::from_str::<serde_json::Value>(&t)
                .ok()?
                .get("version")?
                .as_str()
                .map(str::to_string)
        })
    };
    let editable = meta_dir
        && read_small(&path.join("direct_url.json"))
            .is_some_and(|t| t.contains("\"editable\": true") || t.contains("\"editable\":true"));
    if editable {
        return;
    }
    let newer = match (&version, base_version) {
        (Some(v), Some(b)) => version_cmp(v, b) == std::cmp::Ordering::Greater,
        _ => false,
    };
    let v = version.as_deref().unwrap_or("unknown");
    let (sev, detail) = if newer {
        (
            Severity::Leak,
            format!(
                "installed copy of the project under test, version {v}, later than the base version {}",
                base_version.unwrap_or("?")
            ),
        )
    } else {
        (
            Severity::Warning,
            format!(
                "installed (non-editable) copy of the project under test, version {v}; it may hold later code"
            ),
        )
    };
    res.installed.push(path.to_path_buf());
    res.leaks.push(Leak::new(
        LeakKind::InstalledProject,
        sev,
        rel.to_string(),
        detail,
    ));
}

fn read_small(p: &Path) -> Option<String> {
    let bytes = crate::error::read_bounded(p, "metadata", 1 << 20).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Compare dotted versions numerically where possible (`3.10` > `3.9`).
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |s: &str| -> Vec<u64> {
        s.trim_start_matches('v')
            .split(['.', '-', '+'])
            .map_while(|p| {
                let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
                digits.parse().ok()
            })
            .collect()
    };
    let (x, y) = (parse(a), parse(b));
    for i in 0..x.len().max(y.len()) {
        let (p, q) = (
            x.get(i).copied().unwrap_or(0),
            y.get(i).copied().unwrap_or(0),
        );
        if p != q {
            return p.cmp(&q);
        }
    }
    std::cmp::Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(version_cmp("3.10", "3.9"), Ordering::Greater);
        assert_eq!(version_cmp("v1.2.0", "1.2"), Ordering::Equal);
        assert_eq!(version_cmp("1.2.3rc1", "1.2.4"), Ordering::Less);
    }
}
