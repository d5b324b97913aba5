//! The scanner's data model: severities, findings, statistics, options, errors.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// How bad a finding is. Ordered: `Info < Low < Medium < High < Critical`.
///
/// The policy (see the rule table): critical/high when something runs or
/// steers an agent without an explicit step *and* shows a sign of harm;
/// medium when it runs on its own without such a sign; low/info otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a severity name that is not one of the five levels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity {given:?}: expected one of info, low, medium, high, critical")]
pub struct ParseSeverityError {
    pub given: String,
}

impl FromStr for Severity {
    type Err = ParseSeverityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "info" => Ok(Severity::Info),
            "low" => Ok(Severity::Low),
            "medium" | "med" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" | "crit" => Ok(Severity::Critical),
            _ => Err(ParseSeverityError {
                given: s.chars().take(64).collect(),
            }),
        }
    }
}

/// One thing found. `path` is relative to the scanned root, `/`-separated;
/// `line` is 1-based. `evidence` is the offending text, bounded and with
/// control characters escaped, safe to print on a terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub rule: String,
    pub severity: Severity,
    pub path: String,
    pub line: usize,
    pub message: String,
    pub evidence: String,
}

impl Finding {
    /// A stable identity for baselines: rule, path and the normalised evidence,
    /// so a finding keeps its fingerprint when unrelated lines move it.
    pub fn fingerprint(&self) -> String {
        crate::baseline::fingerprint(&self.rule, &self.path, &self.evidence)
    }
}

/// What the scan covered and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Regular files found in the tree (after vendored skipping).
    pub files: u64,
    /// Files whose content was read and scanned.
    pub files_scanned: u64,
    /// Bytes read.
    pub bytes_scanned: u64,
    /// Files not read because their name or first bytes say binary.
    pub binary_skipped: u64,
    /// Files read only up to the per-file limit.
    pub truncated: u64,
    /// Files or directories that could not be read (permissions, races).
    pub unreadable: u64,
    /// Symbolic links seen and not followed.
    pub symlinks_skipped: u64,
    /// Vendored directories skipped (only with `skip_vendored`).
    pub vendored_dirs_skipped: u64,
    /// Findings suppressed by a baseline.
    pub suppressed: u64,
    /// Wall-clock time of the scan in milliseconds.
    pub elapsed_ms: u64,
}

/// The result of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub stats: Stats,
}

impl Report {
    /// The worst severity found, if any finding at all.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// Findings at or above `min`.
    pub fn at_least(&self, min: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity >= min)
    }

    /// Counts per severity, indexed like [`Severity::ALL`].
    pub fn counts(&self) -> [usize; 5] {
        let mut c = [0; 5];
        for f in &self.findings {
            c[f.severity as usize] += 1;
        }
        c
    }
}

/// Options for [`crate::scan`]. `Default` is what `runproof scan` uses.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Skip `node_modules`, `vendor`, `.venv`, `target` and similar trees.
    pub skip_vendored: bool,
    /// Read at most this many bytes of an ordinary file.
    pub max_file_bytes: usize,
    /// Read at most this many bytes of a file that runs on its own or
    /// configures something that does (package.json, build.rs, hooks...).
    pub max_config_bytes: usize,
    /// Worker threads; 0 means one per available CPU.
    pub threads: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            skip_vendored: false,
            max_file_bytes: 1 << 20,
            max_config_bytes: 16 << 20,
            threads: 0,
        }
    }
}

/// Why a scan could not run at all. Problems with single files inside the
/// tree never fail the scan; they are counted in [`Stats`].
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot scan {path}: {source}; check that the path exists and is readable")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot scan {path}: it is a symbolic link; pass the directory it points to if you trust it"
    )]
    RootIsSymlink { path: PathBuf },
    #[error("cannot read baseline {path}: {source}")]
    BaselineRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "baseline {path} is not a runproof scan JSON report ({reason}); write one with `runproof scan --format json > FILE`"
    )]
    BaselineParse { path: PathBuf, reason: String },
}
