//! Test Anything Protocol (TAP 13/14), including node's `--test-reporter=tap`
//! with `# Subtest:` names and indented children. Ids of nested tests join the
//! parents with ` > `: `suite > test`.

use super::{Status, TestResults, strip_ansi};

/// Deepest subtest nesting tracked.
const MAX_DEPTH: usize = 64;

pub(super) fn tap(text: &str, r: &mut TestResults) {
    let text = strip_ansi(text);
    // names[d] = name of the open subtest at depth d (from `# Subtest:` lines).
    let mut names: Vec<String> = Vec::new();
    // Indentation of a YAML block being skipped (`---` ... `...`).
    let mut yaml_indent: Option<usize> = None;
    for raw in text.lines() {
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let line = raw.trim();
        if let Some(yi) = yaml_indent {
            if indent == yi && line == "..." {
                yaml_indent = None;
            }
            continue;
        }
        if line == "---" {
            yaml_indent = Some(indent);
            continue;
        }
        if line.starts_with("Bail out!") {
            break;
        }
        let depth = (indent / 4).min(MAX_DEPTH);
        if let Some(name) = line.strip_prefix("# Subtest: ") {
            names.truncate(depth);
            while names.len() < depth {
                names.push(String::new());
            }
            names.push(name.to_string());
            continue;
        }
        let (ok, rest) = if let Some(x) = line.strip_prefix("not ok") {
            (false, x)
        } else if let Some(x) = line.strip_prefix("ok") {
            (true, x)
        } else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with(' ')) {
            continue;
        }
        // ` 3 - description # SKIP reason`
        let rest = rest.trim_start();
        let rest = rest
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        let rest = rest.strip_prefix("- ").unwrap_or(rest);
        let (desc, directive) = split_directive(rest);
        let st = match (ok, directive.as_deref()) {
            (_, Some("SKIP")) => Status::Skipped,
            (false, Some("TODO")) => Status::Xfail,
            (true, Some("TODO")) => Status::Xpass,
            (true, _) => Status::Passed,
            (false, _) => Status::Failed,
        };
        let desc = unescape(desc.trim());
        let mut parts: Vec<&str> = names
            .iter()
            .take(depth)
            .filter(|n| !n.is_empty())
            .map(String::as_str)
            .collect();
        parts.push(&desc);
        r.add(&parts.join(" > "), st);
        names.truncate(depth);
    }
}

/// Splits `desc # SKIP why` into the description and the directive keyword
/// (upper-cased); an escaped `\#` is part of the description.
fn split_directive(s: &str) -> (&str, Option<String>) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == b'#' {
            let dir = s[i + 1..].trim_start();
            let word: String = dir
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            let w = word.to_ascii_uppercase();
            if w.starts_with("SKIP") {
                return (&s[..i], Some("SKIP".into()));
            }
            if w == "TODO" {
                return (&s[..i], Some("TODO".into()));
            }
        }
        i += 1;
    }
    (s, None)
}

fn unescape(s: &str) -> String {
    s.replace("\\#", "#").replace("\\\\", "\\")
}

#[cfg(test)]
mod tests {
    use super::super::{Status, TestFormat, parse_text};

    #[test]
    fn node_nested_tap_with_yaml() {
        let log = "TAP version 13\n# Subtest: adds\nok 1 - adds\n  ---\n  duration_ms: 1\n  ...\n# Subtest: fails\nnot ok 2 - fails\n  ---\n  error: |-\n    ok 9 - forged inside yaml\n  ...\n# Subtest: group\n    # Subtest: inner ok\n    ok 1 - inner ok\n      ---\n      duration_ms: 0.2\n      ...\n    # Subtest: sk\n    ok 2 - sk # SKIP\n    1..2\nok 3 - group\n  ---\n  type: 'suite'\n  ...\n1..3\n# pass 2\n";
        let r = parse_text(TestFormat::Tap, log, None).tests;
        assert_eq!(r["adds"], Status::Passed);
        assert_eq!(r["fails"], Status::Failed);
        assert_eq!(r["group > inner ok"], Status::Passed);
        assert_eq!(r["group > sk"], Status::Skipped);
        assert_eq!(r["group"], Status::Passed);
        assert!(!r.keys().any(|k| k.contains("forged")), "{r:?}");
    }

    #[test]
    fn plain_tap_directives() {
        let log =
            "1..4\nok 1 - a\nnot ok 2 - b # TODO later\nok 3 c \\# not a directive\nnot ok 4\n";
        let r = parse_text(TestFormat::Tap, log, None).tests;
        assert_eq!(r["a"], Status::Passed);
        assert_eq!(r["b"], Status::Xfail);
        assert_eq!(r["c # not a directive"], Status::Passed);
    }
}
