//! JSON reports: `go test -json`, libtest JSON, jest/vitest `--json`.

use super::{Status, TestResults};
use serde::Deserialize;

/// Deepest JSON nesting accepted for one line (serde_json also caps at 128).
const MAX_LINE_BYTES: usize = 1024 * 1024;

#[derive(Deserialize)]
struct GoEvent<'a> {
    #[serde(rename = "Action", borrow)]
    action: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "Test", borrow)]
    test: Option<std::borrow::Cow<'a, str>>,
}

/// `go test -json`: one event per line; non-JSON lines (build errors) are skipped.
pub(super) fn go_json(text: &str, r: &mut TestResults) {
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with('{') || line.len() > MAX_LINE_BYTES {
            continue;
        }
        let Ok(ev) = serde_json::from_str::<GoEvent>(line) else {
            continue;
        };
        let (Some(a), Some(t)) = (ev.action, ev.test) else {
            continue;
        };
        let st = match a.as_ref() {
            "pass" => Status::Passed,
            "fail" => Status::Failed,
            "skip" => Status::Skipped,
            _ => continue,
        };
        r.add(&t, st);
    }
}

#[derive(Deserialize)]
struct LibtestEvent<'a> {
    #[serde(rename = "type", borrow)]
    ty: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    event: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
}

/// libtest `--format json`: `{"type":"test","event":"ok","name":"m::t"}` per line.
pub(super) fn libtest_json(text: &str, r: &mut TestResults) {
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with('{') || line.len() > MAX_LINE_BYTES {
            continue;
        }
        let Ok(ev) = serde_json::from_str::<LibtestEvent>(line) else {
            continue;
        };
        if ev.ty.as_deref() != Some("test") {
            continue;
        }
        let (Some(e), Some(n)) = (ev.event, ev.name) else {
            continue;
        };
        let st = match e.as_ref() {
            "ok" => Status::Passed,
            "failed" | "timeout" => Status::Failed,
            "ignored" => Status::Skipped,
            _ => continue,
        };
        r.add(&n, st);
    }
}

#[derive(Deserialize)]
struct JestReport {
    #[serde(rename = "testResults", default)]
    test_results: Vec<JestFile>,
}

#[derive(Deserialize)]
struct JestFile {
    #[serde(rename = "assertionResults", default)]
    assertion_results: Vec<JestAssertion>,
}

#[derive(Deserialize)]
struct JestAssertion {
    #[serde(rename = "fullName", default)]
    full_name: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(rename = "ancestorTitles", default)]
    ancestor_titles: Vec<String>,
    #[serde(default)]
    status: String,
}

/// jest / vitest `--json`: the report may follow other output on stdout, so
/// parsing starts at the first line that opens a JSON object.
pub(super) fn jest_json(text: &str, r: &mut TestResults) {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with('{') {
            let mut de = serde_json::Deserializer::from_str(&text[offset..]);
            if let Ok(rep) = JestReport::deserialize(&mut de) {
                if rep.test_results.is_empty() {
                    offset += line.len();
                    continue;
                }
                for file in rep.test_results {
                    for a in file.assertion_results {
                        let id = match a.full_name {
                            Some(n) if !n.is_empty() => n,
                            _ => {
                                let mut parts = a.ancestor_titles;
                                parts.extend(a.title);
                                parts.join(" ")
                            }
                        };
                        let st = match a.status.as_str() {
                            "passed" => Status::Passed,
                            "failed" => Status::Failed,
                            "pending" | "skipped" | "todo" | "disabled" => Status::Skipped,
                            _ => continue,
                        };
                        r.add(&id, st);
                    }
                }
                return;
            }
        }
        offset += line.len();
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Status, TestFormat, parse_text};

    #[test]
    fn go_json_events() {
        let log = "# pkg\nbuild noise\n{\"Action\":\"run\",\"Test\":\"TestA\"}\n{\"Action\":\"pass\",\"Package\":\"p\",\"Test\":\"TestA\"}\n{\"Action\":\"fail\",\"Test\":\"TestB/x\"}\n{\"Action\":\"fail\",\"Package\":\"p\"}\n";
        let r = parse_text(TestFormat::GoJson, log, None).tests;
        assert_eq!(r.len(), 2);
        assert_eq!(r["TestB/x"], Status::Failed);
    }

    #[test]
    fn libtest_events() {
        let log = "{ \"type\": \"suite\", \"event\": \"started\", \"test_count\": 2 }\n{ \"type\": \"test\", \"event\": \"started\", \"name\": \"a::b\" }\n{ \"type\": \"test\", \"name\": \"a::b\", \"event\": \"ok\" }\n{ \"type\": \"test\", \"name\": \"a::c\", \"event\": \"failed\", \"stdout\": \"x\" }\n";
        let r = parse_text(TestFormat::LibtestJson, log, None).tests;
        assert_eq!(r["a::b"], Status::Passed);
        assert_eq!(r["a::c"], Status::Failed);
    }

    #[test]
    fn jest_report_after_noise() {
        let log = "console.log noise\n{\"numTotalTests\":2,\"testResults\":[{\"name\":\"/w/a.test.js\",\"assertionResults\":[{\"fullName\":\"math adds\",\"status\":\"passed\",\"title\":\"adds\",\"ancestorTitles\":[\"math\"]},{\"title\":\"subs\",\"ancestorTitles\":[\"math\"],\"status\":\"failed\"},{\"fullName\":\"skip me\",\"status\":\"pending\"}]}]}\n";
        let r = parse_text(TestFormat::JestJson, log, None).tests;
        assert_eq!(r["math adds"], Status::Passed);
        assert_eq!(r["math subs"], Status::Failed);
        assert_eq!(r["skip me"], Status::Skipped);
    }
}
