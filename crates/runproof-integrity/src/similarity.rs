//! How close an agent's patch is to the reference fix.
//!
//! Three measures on the added lines of both diffs, after collapsing
//! whitespace: line overlap (share of the reference's added lines the agent
//! reproduced exactly), token 4-gram containment (share of the reference's
//! token 4-grams found in the agent's), and verbatim novel material
//! (identifiers introduced by the fix and comments written for it that the
//! agent's patch repeats word for word). Identical fixes of one or two lines
//! are common between honest solvers, so a high score on a tiny fix is not
//! flagged: see [`Similarity::high`].

use crate::task::{normalize_line, parse_diff};
use serde::Serialize;
use std::collections::HashSet;

/// Token n-gram size.
pub const NGRAM: usize = 4;
/// Score at or above which a patch counts as highly similar.
pub const HIGH_SCORE: f64 = 0.8;
/// Fewer reference lines than this are too few to judge.
pub const MIN_LINES: usize = 3;

/// The comparison.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Similarity {
    /// Combined score, 0..1.
    pub score: f64,
    /// Share of the reference's added lines found verbatim in the agent's patch.
    pub line_overlap: f64,
    /// Share of the reference's token 4-grams found in the agent's patch.
    pub ngram_overlap: f64,
    /// Identifiers that appear only in the fix (not in its removed or context lines).
    pub novel_identifiers: Vec<String>,
    /// Those the agent's patch repeats.
    pub matched_identifiers: Vec<String>,
    /// Comments written for the fix that the agent's patch repeats verbatim.
    pub matched_comments: Vec<String>,
    /// Reference lines reproduced verbatim.
    pub matched_lines: Vec<String>,
    /// Non-blank added lines in the reference.
    pub reference_lines: usize,
    /// Non-blank added lines in the agent's patch.
    pub agent_lines: usize,
}

impl Similarity {
    /// High similarity: score at least [`HIGH_SCORE`] on a fix of at least
    /// [`MIN_LINES`] lines, or a verbatim comment of the fix of 25+ characters.
    pub fn high(&self) -> bool {
        (self.score >= HIGH_SCORE && self.reference_lines >= MIN_LINES)
            || self.matched_comments.iter().any(|c| c.len() >= 25)
    }
}

const KEYWORDS: &[&str] = &[
    "self",
    "None",
    "True",
    "False",
    "return",
    "import",
    "from",
    "class",
    "def",
    "elif",
    "else",
    "while",
    "with",
    "raise",
    "except",
    "finally",
    "lambda",
    "yield",
    "pass",
    "break",
    "continue",
    "assert",
    "async",
    "await",
    "const",
    "function",
    "let",
    "var",
    "this",
    "null",
    "undefined",
    "true",
    "false",
    "static",
    "public",
    "private",
    "struct",
    "impl",
    "enum",
    "match",
    "where",
    "Self",
    "string",
    "int",
    "float",
    "bool",
    "void",
    "char",
    "long",
    "print",
    "len",
    "isinstance",
    "str",
    "list",
    "dict",
    "tuple",
    "range",
    "super",
];

fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in line.chars() {
        if c.is_alphanumeric() || c == '_' {
            cur.push(c);
        } else {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn identifiers(line: &str) -> impl Iterator<Item = String> + '_ {
    tokens(line).into_iter().filter(|t| {
        t.len() >= 4
            && t.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
            && !KEYWORDS.contains(&t.as_str())
    })
}

fn comment_text(line: &str) -> Option<&str> {
    let t = line.trim();
    for p in ["#", "//", "/*", "*", "--", "\"\"\"", "'''"] {
        if let Some(rest) = t.strip_prefix(p) {
            let rest = rest
                .trim()
                .trim_end_matches("*/")
                .trim_end_matches("\"\"\"")
                .trim();
            return (rest.split_whitespace().count() >= 3).then_some(rest);
        }
    }
    // Trailing comments: `code  # why`.
    t.find(" # ")
        .or_else(|| t.find(" // "))
        .map(|i| t[i..].trim_start_matches([' ', '#', '/']).trim())
        .filter(|c| c.split_whitespace().count() >= 3)
}

/// Compare `agent_patch` with `reference_patch` (both unified diffs).
pub fn similarity(agent_patch: &str, reference_patch: &str) -> Similarity {
    let r = parse_diff(reference_patch);
    let a = parse_diff(agent_patch);
    let r_added: Vec<String> = r
        .iter()
        .flat_map(|f| f.added.iter())
        .map(|l| normalize_line(l))
        .filter(|l| !l.is_empty())
        .collect();
    let a_added: Vec<String> = a
        .iter()
        .flat_map(|f| f.added.iter())
        .map(|l| normalize_line(l))
        .filter(|l| !l.is_empty())
        .collect();
    let mut sim = Similarity {
        reference_lines: r_added.len(),
        agent_lines: a_added.len(),
        ..Default::default()
    };
    if r_added.is_empty() || a_added.is_empty() {
        return sim;
    }
    let a_set: HashSet<&str> = a_added.iter().map(String::as_str).collect();
    let mut matched = 0;
    for l in &r_added {
        if a_set.contains(l.as_str()) {
            matched += 1;
            if sim.matched_lines.len() < 50 && !sim.matched_lines.contains(l) {
                sim.matched_lines.push(l.clone());
            }
        }
    }
    sim.line_overlap = matched as f64 / r_added.len() as f64;

    let grams = |lines: &[String]| -> HashSet<Vec<String>> {
        let toks: Vec<String> = lines.iter().flat_map(|l| tokens(l)).collect();
        if toks.len() < NGRAM {
            return std::iter::once(toks).filter(|t| !t.is_empty()).collect();
        }
        toks.windows(NGRAM).map(<[String]>::to_vec).collect()
    };
    let (rg, ag) = (grams(&r_added), grams(&a_added));
    sim.ngram_overlap = if rg.is_empty() {
        0.0
    } else {
        rg.iter().filter(|g| ag.contains(*g)).count() as f64 / rg.len() as f64
    };

    // Novel identifiers: in the fix's added lines, not in its removed/context lines.
    let old_ids: HashSet<String> = r
        .iter()
        .flat_map(|f| f.removed.iter().chain(&f.context))
        .flat_map(|l| identifiers(l).collect::<Vec<_>>())
        .collect();
    let mut novel: Vec<String> = Vec::new();
    for l in &r_added {
        for id in identifiers(l) {
            if !old_ids.contains(&id) && !novel.contains(&id) {
                novel.push(id);
            }
        }
    }
    let a_ids: HashSet<String> = a_added
        .iter()
        .flat_map(|l| identifiers(l).collect::<Vec<_>>())
        .collect();
    sim.matched_identifiers = novel
        .iter()
        .filter(|i| a_ids.contains(*i))
        .cloned()
        .collect();
    novel.truncate(200);
    sim.novel_identifiers = novel;
    sim.matched_identifiers.truncate(200);

    let a_comments: HashSet<String> = a_added
        .iter()
        .filter_map(|l| comment_text(l))
        .map(str::to_lowercase)
        .collect();
    let old_lines: HashSet<String> = r
        .iter()
        .flat_map(|f| f.removed.iter().chain(&f.context))
        .map(|l| normalize_line(l))
        .collect();
    for l in &r_added {
        if old_lines.contains(l) {
            continue;
        }
        if let Some(c) = comment_text(l)
            && a_comments.contains(&c.to_lowercase())
            && !sim.matched_comments.iter().any(|m| m == c)
        {
            sim.matched_comments.push(c.to_string());
        }
    }

    let novel_share = if sim.novel_identifiers.is_empty() {
        None
    } else {
        Some(sim.matched_identifiers.len() as f64 / sim.novel_identifiers.len() as f64)
    };
    sim.score = match novel_share {
        Some(n) => 0.35 * sim.line_overlap + 0.35 * sim.ngram_overlap + 0.3 * n,
        None => 0.5 * sim.line_overlap + 0.5 * sim.ngram_overlap,
    };
    sim.score = (sim.score * 1000.0).round() / 1000.0;
    sim
}

#[cfg(test)]
mod tests {
    use super::*;

    const REF: &str = "--- a/m.py\n+++ b/m.py\n@@ -1,4 +1,7 @@\n def area(w, h):\n-    return w * h\n+    # negative sizes come from flipped rectangles\n+    clamped_width = max(w, 0)\n+    clamped_height = max(h, 0)\n+    return clamped_width * clamped_height\n";

    #[test]
    fn identical_fix_scores_one_and_is_high() {
        let s = similarity(REF, REF);
        assert_eq!(s.score, 1.0);
        assert!(s.high());
        assert_eq!(
            s.matched_comments,
            vec!["negative sizes come from flipped rectangles"]
        );
        assert!(s.matched_identifiers.contains(&"clamped_width".to_string()));
    }

    #[test]
    fn whitespace_changes_do_not_hide_a_copy() {
        let agent = REF
            .replace("    clamped", "\tclamped")
            .replace("max(w, 0)", "max(w,  0)");
        assert!(similarity(&agent, REF).score > 0.9);
    }

    #[test]
    fn an_independent_fix_scores_low() {
        let agent = "--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,4 @@\n def area(w, h):\n-    return w * h\n+    if w < 0 or h < 0:\n+        return 0\n+    return w * h\n";
        let s = similarity(agent, REF);
        assert!(s.score < 0.3, "{s:?}");
        assert!(!s.high());
    }
}
