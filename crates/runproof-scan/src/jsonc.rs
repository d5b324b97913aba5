//! JSON with comments and trailing commas (JSONC), as VS Code, devcontainer
//! and several agents accept. We blank out `//` and `/* */` comments and
//! trailing commas with spaces (so byte offsets and line numbers stay true)
//! and hand the result to `serde_json`.

use serde_json::Value;

/// Comments and trailing commas replaced by spaces; newlines kept.
pub fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    // Index of the last comma outside strings that has only whitespace and
    // comments after it so far.
    let mut pending_comma: Option<usize> = None;
    while i < b.len() {
        match b[i] {
            b'"' => {
                pending_comma = None;
                i += 1;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                out[i] = b' ';
                out[i + 1] = b' ';
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    if b[i] != b'\n' {
                        out[i] = b' ';
                    }
                    i += 1;
                }
                let close = (i + 2).min(b.len());
                out[i..close].fill(b' ');
                i += 2;
            }
            b',' => {
                pending_comma = Some(i);
                i += 1;
            }
            b'}' | b']' => {
                if let Some(c) = pending_comma.take() {
                    out[c] = b' ';
                }
                i += 1;
            }
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            _ => {
                pending_comma = None;
                i += 1;
            }
        }
    }
    // Only ASCII bytes outside strings were replaced by ASCII spaces, and
    // multi-byte sequences inside comments were blanked byte by byte, so the
    // result is valid UTF-8; fall back to lossy conversion defensively.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Parses strict JSON first, then JSONC.
pub fn parse(src: &str) -> Result<Value, serde_json::Error> {
    let src = src.strip_prefix('\u{FEFF}').unwrap_or(src);
    match serde_json::from_str(src) {
        Ok(v) => Ok(v),
        Err(e) => serde_json::from_str(&strip(src)).map_err(|_| e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_trailing_commas() {
        let src = "{\n  // a comment with \"quotes\"\n  \"a\": \"x // not a comment\", /* block\n */ \"b\": [1, 2,],\n}\n";
        let v = parse(src).unwrap();
        assert_eq!(v["a"], "x // not a comment");
        assert_eq!(v["b"], serde_json::json!([1, 2]));
        // Line structure is kept.
        assert_eq!(strip(src).lines().count(), src.lines().count());
    }

    #[test]
    fn escaped_quotes_in_strings() {
        let v = parse(r#"{"a": "he said \"//hi\"", /* c */ "b": 1,}"#).unwrap();
        assert_eq!(v["a"], "he said \"//hi\"");
        assert_eq!(v["b"], 1);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for s in ["{", "/*", "\"", "{\"a\":,}", ",]", "//", "/", "\u{FEFF}"] {
            let _ = parse(s);
            let _ = strip(s);
        }
        assert!(parse("{\"a\": }").is_err());
    }

    #[test]
    fn unicode_in_comments() {
        let v = parse("{ /* ünïcödé 😀 */ \"a\": 1 // ☃\n }").unwrap();
        assert_eq!(v["a"], 1);
    }
}
