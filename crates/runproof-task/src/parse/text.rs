//! Text-log fallbacks: pytest, unittest/Django, cargo test, go test -v.

use super::{Status, TestResults, strip_ansi};

const PYTEST_WORDS: [(&str, Status); 6] = [
    ("PASSED", Status::Passed),
    ("FAILED", Status::Failed),
    ("ERROR", Status::Error),
    ("SKIPPED", Status::Skipped),
    ("XFAIL", Status::Xfail),
    ("XPASS", Status::Xpass),
];

/// pytest: the `-rA` short summary (`PASSED id`, `FAILED id - msg`) and the
/// `-v` progress lines (`id PASSED [ 50%]`). When a short summary section is
/// present only the text after the last one is read, so output that a test
/// printed earlier (captured output sections) cannot forge results.
pub(super) fn pytest(text: &str, r: &mut TestResults) {
    let text = strip_ansi(text);
    let mut start = 0;
    let mut summary = false;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let l = line.trim();
        if l.starts_with('=') && l.contains(" short test summary info ") {
            start = pos + line.len();
            summary = true;
        }
        pos += line.len();
    }
    let body = &text[start..];
    for line in body.lines() {
        let line = line.trim_end();
        if summary {
            summary_line(line, r);
        } else if !summary_line(line, r) {
            verbose_line(line, r);
        }
    }
}

/// `PASSED tests/x.py::t`, `FAILED tests/x.py::t[a - b] - AssertionError`.
fn summary_line(line: &str, r: &mut TestResults) -> bool {
    for (w, st) in PYTEST_WORDS {
        let Some(rest) = line.strip_prefix(w).and_then(|x| x.strip_prefix(' ')) else {
            continue;
        };
        if rest.starts_with('[') {
            // `SKIPPED [1] file:line: reason` names no test id.
            return true;
        }
        let id = pytest_id_before_message(rest);
        if id.contains("::") || st == Status::Error {
            r.add(id, st);
        }
        return true;
    }
    false
}

/// Cuts the ` - message` pytest appends, minding parameter brackets that may
/// themselves contain ` - `.
fn pytest_id_before_message(rest: &str) -> &str {
    let dash = rest.find(" - ");
    match (rest.find('['), dash) {
        (Some(b), Some(d)) if b < d => {
            if let Some(e) = rest[b..].find("] - ") {
                &rest[..b + e + 1]
            } else {
                rest
            }
        }
        (_, Some(d)) => &rest[..d],
        (_, None) => rest,
    }
}

/// `tests/x.py::t PASSED [ 50%]` or `tests/x.py::t[p] FAILED`.
fn verbose_line(line: &str, r: &mut TestResults) {
    if !line.contains("::") {
        return;
    }
    for (w, st) in PYTEST_WORDS {
        let pat = format!(" {w}");
        let mut from = line.len();
        while let Some(i) = line[..from].rfind(&pat) {
            let after = &line[i + pat.len()..];
            let t = after.trim_start();
            if after.is_empty()
                || after.starts_with(' ') && (t.starts_with('[') || t.starts_with('('))
            {
                let id = &line[..i];
                if id.contains("::") && (!id.contains(' ') || id.contains('[')) {
                    r.add(id, st);
                    return;
                }
            }
            from = i;
        }
    }
}

/// unittest / Django verbose: `test_x (pkg.mod.Class) ... ok`. Python 3.11+
/// writes `(pkg.mod.Class.test_x)`; that is normalised to SWE-bench's form.
/// Handles a docstring on the next line and output printed between the test
/// name and its result.
pub(super) fn unittest(text: &str, r: &mut TestResults) {
    let text = strip_ansi(text);
    let mut pending: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some((id, rest)) = unittest_head(line) {
            pending = None;
            match rest.and_then(unittest_status) {
                Some(st) => r.add(&id, st),
                None => pending = Some(id),
            }
            continue;
        }
        if let Some(id) = &pending {
            let st = match line.rsplit_once(" ... ") {
                Some((_, res)) => unittest_status(res),
                None => unittest_status(line),
            };
            if let Some(st) = st {
                r.add(id, st);
                pending = None;
            }
        }
    }
}

/// Returns the normalised id and what follows ` ... ` (if on the same line).
fn unittest_head(line: &str) -> Option<(String, Option<&str>)> {
    let sp = line.find(" (")?;
    let name = &line[..sp];
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    let close = line[sp..].find(')')? + sp;
    let class = &line[sp + 2..close];
    if class.is_empty()
        || class.contains(char::is_whitespace)
        || !class.contains('.') && !class.chars().all(|c| c.is_alphanumeric() || c == '_')
    {
        return None;
    }
    let after = &line[close + 1..];
    let rest = if let Some(x) = after.strip_prefix(" ... ") {
        Some(x)
    } else if after.is_empty() {
        None
    } else {
        return None;
    };
    let class = class
        .strip_suffix(name)
        .and_then(|c| c.strip_suffix('.'))
        .unwrap_or(class);
    Some((format!("{name} ({class})"), rest))
}

fn unittest_status(res: &str) -> Option<Status> {
    let res = res.trim();
    Some(match res {
        "ok" => Status::Passed,
        "FAIL" => Status::Failed,
        "ERROR" => Status::Error,
        "expected failure" => Status::Xfail,
        "unexpected success" => Status::Xpass,
        s if s.starts_with("skipped") => Status::Skipped,
        _ => return None,
    })
}

/// cargo test: `test path::name ... ok|FAILED|ignored`.
pub(super) fn cargo(text: &str, r: &mut TestResults) {
    let text = strip_ansi(text);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((id, res)) = rest.rsplit_once(" ... ") else {
            continue;
        };
        let st = match res.trim() {
            "ok" => Status::Passed,
            "FAILED" => Status::Failed,
            "ignored" => Status::Skipped,
            s if s.starts_with("ignored, ") => Status::Skipped,
            s if s.starts_with("bench:") => Status::Passed,
            _ => continue,
        };
        r.add(id, st);
    }
}

/// go test -v: `--- PASS: TestX (0.00s)`, nested subtests indented.
pub(super) fn go(text: &str, r: &mut TestResults) {
    let text = strip_ansi(text);
    for line in text.lines() {
        let l = line.trim_start();
        let Some(rest) = l.strip_prefix("--- ") else {
            continue;
        };
        let (st, rest) = if let Some(x) = rest.strip_prefix("PASS: ") {
            (Status::Passed, x)
        } else if let Some(x) = rest.strip_prefix("FAIL: ") {
            (Status::Failed, x)
        } else if let Some(x) = rest.strip_prefix("SKIP: ") {
            (Status::Skipped, x)
        } else {
            continue;
        };
        let id = match rest.rfind(" (") {
            Some(i) if rest.ends_with(')') => &rest[..i],
            _ => rest,
        };
        r.add(id, st);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Status, TestFormat, parse_text};

    fn p(f: TestFormat, s: &str) -> Vec<(String, Status)> {
        parse_text(f, s, None).tests.into_iter().collect()
    }

    #[test]
    fn pytest_short_summary_only_after_header() {
        let log = "\
tests/test_a.py::test_one PASSED [ 50%]
==== PASSES ====
---- Captured stdout call ----
PASSED tests/test_a.py::test_forged
=========================== short test summary info ============================
PASSED tests/test_a.py::test_one
FAILED tests/test_a.py::test_two[a - b] - AssertionError: x - y
ERROR tests/test_a.py::TestC::test_three - RuntimeError
XFAIL tests/test_a.py::test_four - reason
SKIPPED [1] tests/test_a.py:9: unconditional skip
======================== 1 failed, 1 passed in 0.05s =========================
";
        let r = p(TestFormat::Pytest, log);
        assert_eq!(
            r,
            vec![
                ("tests/test_a.py::TestC::test_three".into(), Status::Error),
                ("tests/test_a.py::test_four".into(), Status::Xfail),
                ("tests/test_a.py::test_one".into(), Status::Passed),
                ("tests/test_a.py::test_two[a - b]".into(), Status::Failed),
            ]
        );
    }

    #[test]
    fn pytest_verbose_lines() {
        let log = "tests/t.py::test_a PASSED                                 [ 33%]\n\
                   tests/t.py::test_b[x y] FAILED                            [ 66%]\n\
                   tests/t.py::test_c SKIPPED (nope)                         [100%]\n";
        let r = p(TestFormat::Pytest, log);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[1], ("tests/t.py::test_b[x y]".into(), Status::Failed));
        assert_eq!(r[2].1, Status::Skipped);
    }

    #[test]
    fn unittest_old_new_docstring_and_interleaved() {
        let log = "\
test_a (app.tests.ATest) ... ok
test_b (app.tests.ATest.test_b) ... FAIL
test_c (app.tests.ATest)
Docstring line ... ERROR
test_d (app.tests.ATest) ... printed junk
ok
test_e (app.tests.ATest) ... skipped 'needs db'
test_f (app.tests.ATest) ... expected failure
";
        let r = p(TestFormat::Unittest, log);
        assert_eq!(
            r,
            vec![
                ("test_a (app.tests.ATest)".into(), Status::Passed),
                ("test_b (app.tests.ATest)".into(), Status::Failed),
                ("test_c (app.tests.ATest)".into(), Status::Error),
                ("test_d (app.tests.ATest)".into(), Status::Passed),
                ("test_e (app.tests.ATest)".into(), Status::Skipped),
                ("test_f (app.tests.ATest)".into(), Status::Xfail),
            ]
        );
    }

    #[test]
    fn cargo_and_go_text() {
        let r = p(
            TestFormat::Cargo,
            "running 3 tests\ntest m::a ... ok\ntest m::b ... FAILED\ntest m::c ... ignored, slow\ntest src/lib.rs - f (line 3) ... ok\n",
        );
        assert_eq!(r.len(), 4);
        assert_eq!(r[1], ("m::b".into(), Status::Failed));
        assert_eq!(r[3], ("src/lib.rs - f (line 3)".into(), Status::Passed));
        let r = p(
            TestFormat::Go,
            "=== RUN   TestA\n--- PASS: TestA (0.00s)\n    --- FAIL: TestA/sub_1 (0.01s)\n--- SKIP: TestB (0.00s)\nFAIL\n",
        );
        assert_eq!(
            r,
            vec![
                ("TestA".into(), Status::Passed),
                ("TestA/sub_1".into(), Status::Failed),
                ("TestB".into(), Status::Skipped)
            ]
        );
    }
}
