//! A bounded, never-executing reader of shell command lines: splits a command
//! string into simple commands (argument vectors) the way a POSIX shell would
//! tokenise it, well enough to recognise what an agent ran. Quotes, escapes,
//! `;`, `&&`, `||`, `|`, `&`, newlines, subshells, `$(...)`, backticks and
//! here-documents are understood; expansions are not performed.

/// Longest command text analysed; the rest is ignored.
pub const MAX_INPUT: usize = 256 * 1024;
/// Most words kept from one command text.
pub const MAX_WORDS: usize = 20_000;
/// How deep `bash -c '...'` nesting is followed.
pub const MAX_DEPTH: usize = 4;

/// Split `text` into simple commands. Wrappers such as `sudo`, `env`, `timeout`,
/// `nohup` and `bash -c '...'` are unwrapped, leading `VAR=value` words dropped.
pub fn commands(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    split(text, 0, &mut out);
    out
}

fn split(text: &str, depth: usize, out: &mut Vec<Vec<String>>) {
    let text = match text.char_indices().nth(MAX_INPUT) {
        Some((i, _)) => &text[..i],
        None => text,
    };
    let mut words_total = 0usize;
    let mut cur: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut pending_heredocs: Vec<(String, bool)> = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let flush_word =
        |word: &mut String, in_word: &mut bool, cur: &mut Vec<String>, total: &mut usize| {
            if *in_word && *total < MAX_WORDS {
                cur.push(std::mem::take(word));
                *total += 1;
            }
            word.clear();
            *in_word = false;
        };
    let flush_cmd = |cur: &mut Vec<String>, out: &mut Vec<Vec<String>>| {
        if !cur.is_empty() {
            finish(std::mem::take(cur), depth, out);
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                if let Some(&n) = chars.get(i + 1) {
                    if n != '\n' {
                        word.push(n);
                        in_word = true;
                    }
                    i += 2;
                } else {
                    i += 1;
                }
            }
            '\'' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && matches!(chars.get(i + 1), Some('"' | '\\' | '$' | '`'))
                    {
                        word.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    word.push(chars[i]);
                    i += 1;
                }
                i += 1;
            }
            '#' if !in_word => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ' ' | '\t' | '\r' => {
                flush_word(&mut word, &mut in_word, &mut cur, &mut words_total);
                i += 1;
            }
            '\n' | ';' | '&' | '|' | '(' | ')' | '`' | '{' | '}'
                if !(c == '{' || c == '}') || !in_word =>
            {
                flush_word(&mut word, &mut in_word, &mut cur, &mut words_total);
                flush_cmd(&mut cur, out);
                i += 1;
                if c == '\n' && !pending_heredocs.is_empty() {
                    // Skip here-document bodies.
                    for (delim, strip) in std::mem::take(&mut pending_heredocs) {
                        loop {
                            let start = i;
                            while i < chars.len() && chars[i] != '\n' {
                                i += 1;
                            }
                            let line: String = chars[start..i].iter().collect();
                            i += 1;
                            let line = if strip {
                                line.trim_start_matches('\t').to_string()
                            } else {
                                line
                            };
                            if line == delim || i >= chars.len() {
                                break;
                            }
                        }
                    }
                }
            }
            '$' if chars.get(i + 1) == Some(&'(') => {
                flush_word(&mut word, &mut in_word, &mut cur, &mut words_total);
                flush_cmd(&mut cur, out);
                i += 2;
            }
            '<' if chars.get(i + 1) == Some(&'<') && chars.get(i + 2) != Some(&'<') => {
                flush_word(&mut word, &mut in_word, &mut cur, &mut words_total);
                i += 2;
                let strip = chars.get(i) == Some(&'-');
                if strip {
                    i += 1;
                }
                while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
                    i += 1;
                }
                let mut delim = String::new();
                while i < chars.len()
                    && !matches!(
                        chars[i],
                        ' ' | '\t' | '\n' | ';' | '&' | '|' | ')' | '<' | '>'
                    )
                {
                    if !matches!(chars[i], '\'' | '"' | '\\') {
                        delim.push(chars[i]);
                    }
                    i += 1;
                }
                if !delim.is_empty() {
                    pending_heredocs.push((delim, strip));
                }
            }
            '>' | '<' => {
                // Redirections: drop the operator, a file-descriptor number before it, and its target.
                if in_word && !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) {
                    word.clear();
                    in_word = false;
                }
                flush_word(&mut word, &mut in_word, &mut cur, &mut words_total);
                i += 1;
                while i < chars.len() && matches!(chars[i], '>' | '&' | '<') {
                    i += 1;
                }
                while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
                    i += 1;
                }
                let mut target = String::new();
                while i < chars.len()
                    && !matches!(chars[i], ' ' | '\t' | '\n' | ';' | '&' | '|' | ')')
                {
                    target.push(chars[i]);
                    i += 1;
                }
                // Redirection targets are read paths: keep them visible as a pseudo-word.
                if !target.is_empty() && words_total < MAX_WORDS {
                    cur.push(format!("<redirect>{target}"));
                    words_total += 1;
                }
            }
            _ => {
                word.push(c);
                in_word = true;
                i += 1;
            }
        }
    }
    flush_word(&mut word, &mut in_word, &mut cur, &mut words_total);
    flush_cmd(&mut cur, out);
}

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

fn finish(mut argv: Vec<String>, depth: usize, out: &mut Vec<Vec<String>>) {
    argv.retain(|w| !w.starts_with("<redirect>"));
    loop {
        // Leading assignments.
        while argv.first().is_some_and(|w| is_assignment(w)) {
            argv.remove(0);
        }
        let Some(first) = argv.first() else { return };
        match basename(first) {
            "sudo" | "nohup" | "time" | "nice" | "exec" | "command" | "builtin" | "stdbuf"
            | "unbuffer" => {
                argv.remove(0);
                while argv.first().is_some_and(|w| w.starts_with('-')) {
                    argv.remove(0);
                }
            }
            "env" => {
                argv.remove(0);
                while argv
                    .first()
                    .is_some_and(|w| w.starts_with('-') || is_assignment(w))
                {
                    argv.remove(0);
                }
            }
            "timeout" => {
                argv.remove(0);
                while argv.first().is_some_and(|w| w.starts_with('-')) {
                    argv.remove(0);
                }
                if !argv.is_empty() {
                    argv.remove(0); // the duration
                }
            }
            "bash" | "sh" | "zsh" | "dash" => {
                if let Some(pos) = argv.iter().position(|w| {
                    w == "-c" || (w.starts_with('-') && !w.starts_with("--") && w.contains('c'))
                }) && let Some(script) = argv.get(pos + 1)
                {
                    if depth < MAX_DEPTH {
                        split(&script.clone(), depth + 1, out);
                    }
                    return;
                }
                break;
            }
            "eval" => {
                if depth < MAX_DEPTH {
                    let script = argv[1..].join(" ");
                    split(&script, depth + 1, out);
                }
                return;
            }
            _ => break,
        }
    }
    if !argv.is_empty() {
        out.push(argv);
    }
}

fn is_assignment(w: &str) -> bool {
    match w.split_once('=') {
        Some((k, _)) => {
            !k.is_empty()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !k.as_bytes()[0].is_ascii_digit()
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::commands;

    fn v(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_operators_and_quotes() {
        let c = commands("cd /repo && git log --all --oneline | head -5; echo 'a b' \"c\\\"d\"");
        assert_eq!(
            c,
            vec![
                v(&["cd", "/repo"]),
                v(&["git", "log", "--all", "--oneline"]),
                v(&["head", "-5"]),
                v(&["echo", "a b", "c\"d"])
            ]
        );
    }

    #[test]
    fn unwraps_wrappers_and_nested_shells() {
        let c = commands(
            "sudo -E env A=1 timeout 30 bash -lc 'git reflog && FOO=bar git fsck --lost-found'",
        );
        assert_eq!(
            c,
            vec![v(&["git", "reflog"]), v(&["git", "fsck", "--lost-found"])]
        );
    }

    #[test]
    fn skips_heredoc_bodies_and_redirections() {
        let c = commands("cat > notes.txt <<'EOF'\ngit log --all\nEOF\ngit status 2>/dev/null");
        assert_eq!(c, vec![v(&["cat"]), v(&["git", "status"])]);
    }

    #[test]
    fn command_substitution_is_a_separate_command() {
        let c = commands("echo $(git rev-parse origin/main)");
        assert!(c.contains(&v(&["git", "rev-parse", "origin/main"])));
    }

    #[test]
    fn hostile_input_is_bounded() {
        let big = "a ".repeat(1_000_000);
        let c = commands(&big);
        assert!(c[0].len() <= super::MAX_WORDS);
        let deep = "bash -c \"bash -c 'bash -c \\\"bash -c x\\\"'\"".repeat(10);
        let _ = commands(&deep);
        let _ = commands("'unterminated \\");
    }
}
