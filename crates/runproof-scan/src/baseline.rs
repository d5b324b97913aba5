//! Baselines: a previous JSON report (or SARIF) whose findings are known and
//! accepted, so CI fails only on new ones. Identity is rule + path +
//! normalised evidence (not the line number), counted as a multiset so two
//! identical findings need two baseline entries.

use crate::model::{Report, ScanError};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Largest baseline file read.
const MAX_BASELINE: u64 = 64 << 20;
/// Key under SARIF `partialFingerprints`.
pub const SARIF_FINGERPRINT_KEY: &str = "runproof/v1";

/// 32 hex digits of SHA-256 over rule, path and whitespace-normalised evidence.
pub fn fingerprint(rule: &str, path: &str, evidence: &str) -> String {
    let norm: Vec<&str> = evidence.split_whitespace().collect();
    let mut h = Sha256::new();
    h.update(rule.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(norm.join(" ").as_bytes());
    let d = h.finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Known findings, by fingerprint, with multiplicity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    counts: HashMap<String, usize>,
}

impl Baseline {
    /// Reads a baseline written by `runproof scan --format json` (or
    /// `--format sarif`).
    pub fn load(path: &Path) -> Result<Baseline, ScanError> {
        let read_err = |e| ScanError::BaselineRead {
            path: path.to_path_buf(),
            source: e,
        };
        let f = std::fs::File::open(path).map_err(read_err)?;
        let mut text = String::new();
        f.take(MAX_BASELINE + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_BASELINE {
            return Err(ScanError::BaselineParse {
                path: path.to_path_buf(),
                reason: format!("larger than {MAX_BASELINE} bytes"),
            });
        }
        Baseline::from_json(&text).map_err(|reason| ScanError::BaselineParse {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses a baseline from JSON report or SARIF text.
    pub fn from_json(text: &str) -> Result<Baseline, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let mut b = Baseline::default();
        if let Some(findings) = v.get("findings").and_then(Value::as_array) {
            for (i, f) in findings.iter().enumerate() {
                let field = |k: &str| {
                    f.get(k)
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("findings[{i}] has no string field {k:?}"))
                };
                let fp = fingerprint(field("rule")?, field("path")?, field("evidence")?);
                *b.counts.entry(fp).or_default() += 1;
            }
            return Ok(b);
        }
        if let Some(runs) = v.get("runs").and_then(Value::as_array) {
            for run in runs {
                for r in run
                    .get("results")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(fp) = r
                        .get("partialFingerprints")
                        .and_then(|p| p.get(SARIF_FINGERPRINT_KEY))
                        .and_then(Value::as_str)
                    {
                        *b.counts.entry(fp.to_string()).or_default() += 1;
                    }
                }
            }
            return Ok(b);
        }
        Err("expected a top-level \"findings\" array (JSON report) or \"runs\" (SARIF)".into())
    }

    /// Number of known findings.
    pub fn len(&self) -> usize {
        self.counts.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes known findings from `report`, counting them in
    /// `stats.suppressed`.
    pub fn apply(&self, report: &mut Report) {
        let mut left = self.counts.clone();
        let before = report.findings.len();
        report
            .findings
            .retain(|f| match left.get_mut(&f.fingerprint()) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => true,
            });
        report.stats.suppressed += (before - report.findings.len()) as u64;
    }
}

/// Drops findings inside the baseline file itself when it lies in the
/// scanned tree (it quotes the evidence it accepts, so it would otherwise
/// report itself). Counted in `stats.suppressed`.
pub fn suppress_file(report: &mut Report, root: &Path, file: &Path) {
    let (Ok(root), Ok(file)) = (root.canonicalize(), file.canonicalize()) else {
        return;
    };
    let Ok(rel) = file.strip_prefix(&root) else {
        return;
    };
    let rel = rel.to_string_lossy().replace('\\', "/");
    let before = report.findings.len();
    report.findings.retain(|f| f.path != rel);
    report.stats.suppressed += (before - report.findings.len()) as u64;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Finding, Severity};

    fn f(rule: &str, line: usize, ev: &str) -> Finding {
        Finding {
            rule: rule.into(),
            severity: Severity::High,
            path: "a/b".into(),
            line,
            message: "m".into(),
            evidence: ev.into(),
        }
    }

    #[test]
    fn fingerprint_ignores_line_and_whitespace() {
        assert_eq!(
            f("r", 1, "curl x | sh").fingerprint(),
            f("r", 99, "  curl  x |\tsh ").fingerprint()
        );
        assert_ne!(
            f("r", 1, "curl x | sh").fingerprint(),
            f("r", 1, "curl y | sh").fingerprint()
        );
        assert_ne!(f("r", 1, "e").fingerprint(), f("q", 1, "e").fingerprint());
        assert_eq!(f("r", 1, "e").fingerprint().len(), 32);
    }

    #[test]
    fn suppresses_known_only_as_often_as_listed() {
        let old = Report {
            findings: vec![f("r", 3, "ev")],
            ..Default::default()
        };
        let b = Baseline::from_json(&serde_json::to_string(&old).unwrap()).unwrap();
        let mut now = Report {
            findings: vec![f("r", 10, "ev"), f("r", 11, "ev"), f("q", 1, "new")],
            ..Default::default()
        };
        b.apply(&mut now);
        assert_eq!(now.findings.len(), 2);
        assert_eq!(now.stats.suppressed, 1);
        assert_eq!(now.findings[1].rule, "q");
    }

    #[test]
    fn rejects_what_is_not_a_report() {
        assert!(Baseline::from_json("[]").is_err());
        assert!(Baseline::from_json("{\"findings\":[{\"rule\":1}]}").is_err());
        assert!(Baseline::from_json("not json").is_err());
    }
}
