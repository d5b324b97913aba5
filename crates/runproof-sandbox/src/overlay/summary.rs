//! The short status of an upper layer: "N files changed, +A -D", the paths
//! `apply` would refuse, and the same as JSON.

use super::diff::{DiffOptions, DiffStats, FileStatus, diff};
use super::{Limits, OverlayError};
use std::fmt;
use std::path::Path;

/// The change an upper layer makes, in figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub files_changed: u64,
    pub insertions: u64,
    pub deletions: u64,
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    pub binary: u64,
    /// Changed paths that `runproof apply` refuses to write.
    pub protected: Vec<String>,
    /// The per-file figures behind the totals.
    pub stats: DiffStats,
}

impl Summary {
    /// "3 files changed, +10 -2" (git's `--shortstat` in short).
    pub fn line(&self) -> String {
        let s = if self.files_changed == 1 { "" } else { "s" };
        format!(
            "{} file{s} changed, +{} -{}",
            self.files_changed, self.insertions, self.deletions
        )
    }

    /// The summary as a JSON value (totals, per-file figures, warnings).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.line())?;
        for st in &self.stats.files {
            let mark = match st.status {
                FileStatus::Added => "A",
                FileStatus::Deleted => "D",
                FileStatus::Modified => "M",
                FileStatus::ModeChanged => "m",
            };
            let figures = if st.binary {
                "binary".to_string()
            } else {
                format!("+{} -{}", st.insertions, st.deletions)
            };
            let prot = if st.protected {
                "  (protected: apply refuses it)"
            } else {
                ""
            };
            writeln!(f, " {mark} {}  {figures}{prot}", st.path)?;
        }
        if !self.stats.excluded_git.is_empty() {
            writeln!(
                f,
                "note: changes under {} are git metadata, not part of the diff",
                self.stats.excluded_git.join(", ")
            )?;
        }
        for w in &self.stats.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// Summarise the change that `upper` makes to `workspace`.
pub fn summary(upper: &Path, workspace: &Path, limits: &Limits) -> Result<Summary, OverlayError> {
    let mut opts = DiffOptions {
        limits: limits.clone(),
        ..DiffOptions::default()
    };
    // Nothing is kept, so the output cap does not apply.
    opts.limits.max_output_bytes = u64::MAX;
    let stats = diff(upper, workspace, &mut std::io::sink(), &opts)?;
    let count = |s: FileStatus| stats.files.iter().filter(|f| f.status == s).count() as u64;
    Ok(Summary {
        files_changed: stats.files_changed,
        insertions: stats.insertions,
        deletions: stats.deletions,
        added: count(FileStatus::Added),
        modified: count(FileStatus::Modified) + count(FileStatus::ModeChanged),
        deleted: count(FileStatus::Deleted),
        binary: stats.files.iter().filter(|f| f.binary).count() as u64,
        protected: stats
            .files
            .iter()
            .filter(|f| f.protected)
            .map(|f| f.path.clone())
            .collect(),
        stats,
    })
}
