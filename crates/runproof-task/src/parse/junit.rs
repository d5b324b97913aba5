//! JUnit XML (generic, cargo-nextest, pytest `--junitxml`), read with quick-xml
//! as a stream: no DTDs, no entity expansion beyond the XML built-ins, bounded
//! nesting.

use super::{Status, TestFormat, TestResults};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use std::collections::HashSet;

const MAX_DEPTH: usize = 256;

struct Case {
    name: String,
    classname: String,
    file: String,
    status: Status,
}

fn attrs(e: &BytesStart<'_>) -> (String, String, String) {
    let (mut name, mut classname, mut file) = (String::new(), String::new(), String::new());
    for a in e.attributes().with_checks(false).flatten() {
        let v = match a.unescape_value() {
            Ok(v) => v.into_owned(),
            Err(_) => String::from_utf8_lossy(&a.value).into_owned(),
        };
        match a.key.as_ref() {
            b"name" => name = v,
            b"classname" => classname = v,
            b"file" => file = v,
            _ => {}
        }
    }
    (name, classname, file)
}

fn child_status(e: &BytesStart<'_>) -> Option<Status> {
    match e.local_name().as_ref() {
        b"failure" => Some(Status::Failed),
        b"error" => Some(Status::Error),
        b"skipped" => {
            // pytest marks xfail as <skipped type="pytest.xfail">.
            let xfail = e
                .attributes()
                .with_checks(false)
                .flatten()
                .any(|a| a.key.as_ref() == b"type" && a.value.as_ref() == b"pytest.xfail");
            Some(if xfail {
                Status::Xfail
            } else {
                Status::Skipped
            })
        }
        _ => None,
    }
}

fn worse(a: Status, b: Status) -> Status {
    if b.badness() > a.badness() { b } else { a }
}

pub(super) fn junit(
    text: &str,
    format: TestFormat,
    known: Option<&HashSet<String>>,
    r: &mut TestResults,
) {
    let mut rd = Reader::from_str(text);
    rd.config_mut().check_end_names = false;
    let mut depth = 0usize;
    let mut case: Option<(Case, usize)> = None;
    while let Ok(ev) = rd.read_event() {
        match ev {
            Event::Eof => break,
            Event::Start(e) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    r.truncated = true;
                    break;
                }
                if e.local_name().as_ref() == b"testcase" {
                    let (name, classname, file) = attrs(&e);
                    case = Some((
                        Case {
                            name,
                            classname,
                            file,
                            status: Status::Passed,
                        },
                        depth,
                    ));
                } else if let (Some((c, _)), Some(st)) = (case.as_mut(), child_status(&e)) {
                    c.status = worse(c.status, st);
                }
            }
            Event::Empty(e) => {
                if e.local_name().as_ref() == b"testcase" {
                    let (name, classname, file) = attrs(&e);
                    emit(
                        &Case {
                            name,
                            classname,
                            file,
                            status: Status::Passed,
                        },
                        format,
                        known,
                        r,
                    );
                } else if let (Some((c, _)), Some(st)) = (case.as_mut(), child_status(&e)) {
                    c.status = worse(c.status, st);
                }
            }
            Event::End(_) => {
                if let Some((c, d)) = &case
                    && *d == depth
                {
                    emit(c, format, known, r);
                    case = None;
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
    // An unterminated testcase (truncated file) still counts, as it was reported.
    if let Some((c, _)) = case {
        emit(&c, format, known, r);
    }
}

fn emit(c: &Case, format: TestFormat, known: Option<&HashSet<String>>, r: &mut TestResults) {
    if c.name.is_empty() {
        return;
    }
    let id = match format {
        TestFormat::NextestJunit => c.name.clone(),
        TestFormat::PytestJunit => pytest_id(c, known),
        _ if c.classname.is_empty() => c.name.clone(),
        _ => format!("{}::{}", c.classname, c.name),
    };
    r.add(&id, c.status);
}

/// Turns pytest's `classname="tests.test_x.TestC"` + `name="test_y[p]"` back
/// into the node id `tests/test_x.py::TestC::test_y[p]`. The `file` attribute
/// (junit_family=xunit1) settles where the module ends; otherwise the longest
/// dotted prefix that is a known repository file does; otherwise the first
/// segment starting with `Test` is taken as the class.
fn pytest_id(c: &Case, known: Option<&HashSet<String>>) -> String {
    let parts: Vec<&str> = c.classname.split('.').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return c.name.clone();
    }
    let mut split = None;
    if !c.file.is_empty() && c.file.ends_with(".py") {
        let file = c.file.trim_start_matches("./");
        let module_parts = file.trim_end_matches(".py").split('/').count();
        if module_parts <= parts.len() {
            let rest = parts[module_parts..].join("::");
            return join_id(file, &rest, &c.name);
        }
    }
    if let Some(k) = known {
        for n in (1..=parts.len()).rev() {
            let p = format!("{}.py", parts[..n].join("/"));
            if k.contains(&p) {
                split = Some(n);
                break;
            }
        }
    }
    let n = split.unwrap_or_else(|| {
        parts
            .iter()
            .position(|p| p.starts_with("Test"))
            .filter(|&i| i > 0)
            .unwrap_or(parts.len())
    });
    let file = format!("{}.py", parts[..n].join("/"));
    join_id(&file, &parts[n..].join("::"), &c.name)
}

fn join_id(file: &str, class: &str, name: &str) -> String {
    if class.is_empty() {
        format!("{file}::{name}")
    } else {
        format!("{file}::{class}::{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Status, TestFormat, parse_text};
    use std::collections::HashSet;

    const PYTEST_XML: &str = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4">
<testcase classname="tests.unit.test_x" name="test_a" time="0.001" />
<testcase classname="tests.unit.test_x.TestC" name="test_b[a-&lt;b&gt;]" time="0.001"><failure message="assert 0">assert 0</failure></testcase>
<testcase classname="tests.unit.test_x" name="test_c"><skipped type="pytest.xfail" message="x" /></testcase>
<testcase classname="tests.unit.test_x" name="test_d"><skipped type="pytest.skip" message="x" /></testcase>
</testsuite></testsuites>"#;

    #[test]
    fn pytest_junit_ids_match_node_ids() {
        let known: HashSet<String> = ["tests/unit/test_x.py".to_string()].into();
        let r = parse_text(TestFormat::PytestJunit, PYTEST_XML, Some(&known)).tests;
        assert_eq!(r["tests/unit/test_x.py::test_a"], Status::Passed);
        assert_eq!(
            r["tests/unit/test_x.py::TestC::test_b[a-<b>]"],
            Status::Failed
        );
        assert_eq!(r["tests/unit/test_x.py::test_c"], Status::Xfail);
        assert_eq!(r["tests/unit/test_x.py::test_d"], Status::Skipped);
        // Without the file list, the `Test` heuristic finds the class.
        let r = parse_text(TestFormat::PytestJunit, PYTEST_XML, None).tests;
        assert!(
            r.contains_key("tests/unit/test_x.py::TestC::test_b[a-<b>]"),
            "{r:?}"
        );
        // xunit1 `file` attribute wins.
        let x = r#"<testsuite><testcase classname="pkg.test_m.TestK" name="t" file="pkg/test_m.py" line="3"/></testsuite>"#;
        let r = parse_text(TestFormat::PytestJunit, x, None).tests;
        assert!(r.contains_key("pkg/test_m.py::TestK::t"), "{r:?}");
    }

    #[test]
    fn generic_and_nextest_junit() {
        let x = r#"<testsuites><testsuite name="my-crate::tests"><testcase name="m::a" classname="my-crate::tests"/><testcase name="m::b" classname="my-crate::tests"><error type="panic"/></testcase></testsuite></testsuites>"#;
        let r = parse_text(TestFormat::NextestJunit, x, None).tests;
        assert_eq!(r["m::a"], Status::Passed);
        assert_eq!(r["m::b"], Status::Error);
        let r = parse_text(TestFormat::Junit, x, None).tests;
        assert_eq!(r["my-crate::tests::m::b"], Status::Error);
        // Broken XML: what was read before the break counts, nothing panics.
        let r = parse_text(
            TestFormat::Junit,
            "<testsuite><testcase name=\"a\"/><testcase name=",
            None,
        )
        .tests;
        assert_eq!(r.len(), 1);
    }
}
