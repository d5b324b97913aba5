//! Test-report parsers. Every function here is pure: bytes in, test ids and
//! statuses out. Input is hostile (it was written by code under test), so it is
//! bounded in size, in the number of tests and in the length of each id, and no
//! parser can panic on any input (they are fuzzed, see `fuzz/`).
//!
//! Test ids follow SWE-bench's naming so that `FAIL_TO_PASS` / `PASS_TO_PASS`
//! lists match unchanged: `tests/test_x.py::TestC::test_y[p]` for pytest,
//! `test_name (module.Class)` for unittest and Django, `module::test` for
//! cargo, `TestX/sub` for go, `suite > test` for TAP and node's runner, and the
//! jest/vitest `fullName`.

mod json;
mod junit;
mod tap;
mod text;

use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

/// Bytes of one report or log the parsers look at; the rest is ignored and the
/// result says it was truncated.
pub const MAX_PARSE_BYTES: usize = 64 * 1024 * 1024;
/// Most distinct test ids kept from one report.
pub const MAX_TESTS: usize = 200_000;
/// Longest test id kept (longer ids are cut at a character boundary).
pub const MAX_ID_BYTES: usize = 4096;

/// Outcome of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Passed,
    /// Expected failure that failed (pytest `xfail`): counts as a pass, as in SWE-bench.
    Xfail,
    Skipped,
    /// Expected failure that passed.
    Xpass,
    Failed,
    Error,
}

impl Status {
    /// Whether this status counts as a pass for grading (SWE-bench: PASSED or XFAIL).
    pub fn is_pass(self) -> bool {
        matches!(self, Status::Passed | Status::Xfail)
    }
    fn badness(self) -> u8 {
        match self {
            Status::Passed => 0,
            Status::Xfail => 1,
            Status::Skipped => 2,
            Status::Xpass => 3,
            Status::Failed => 4,
            Status::Error => 5,
        }
    }
}

/// Which parser reads a task's test output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestFormat {
    /// Guess from the output: structured reports first, then the text formats.
    Auto,
    /// pytest text output (`-rA` short summary and/or `-v` lines).
    Pytest,
    /// pytest `--junitxml` (ids converted to pytest node ids).
    PytestJunit,
    /// Any JUnit XML; ids are `classname::name` (or `name` without a classname).
    Junit,
    /// cargo-nextest JUnit; ids are the libtest names (`module::test`).
    NextestJunit,
    /// unittest / Django verbose output.
    Unittest,
    /// `cargo test` text output.
    Cargo,
    /// libtest JSON (`--format json`).
    LibtestJson,
    /// `go test -json`.
    GoJson,
    /// `go test -v` text output.
    Go,
    /// jest or vitest `--json` report.
    JestJson,
    /// Test Anything Protocol, including node's `--test-reporter=tap`.
    Tap,
}

impl TestFormat {
    pub const NAMES: &'static [&'static str] = &[
        "auto",
        "pytest",
        "pytest-junit",
        "junit",
        "nextest-junit",
        "unittest",
        "cargo",
        "libtest-json",
        "go-json",
        "go",
        "jest-json",
        "tap",
    ];
    const ALL: [TestFormat; 12] = [
        TestFormat::Auto,
        TestFormat::Pytest,
        TestFormat::PytestJunit,
        TestFormat::Junit,
        TestFormat::NextestJunit,
        TestFormat::Unittest,
        TestFormat::Cargo,
        TestFormat::LibtestJson,
        TestFormat::GoJson,
        TestFormat::Go,
        TestFormat::JestJson,
        TestFormat::Tap,
    ];
    pub fn name(self) -> &'static str {
        let i = Self::ALL.iter().position(|f| *f == self).unwrap_or(0);
        Self::NAMES[i]
    }
    /// Formats whose report is a file the test command writes (into `$RUNPROOF_REPORT_DIR`)
    /// rather than its standard output. They still fall back to stdout when no file was written.
    pub fn is_structured(self) -> bool {
        matches!(
            self,
            TestFormat::PytestJunit
                | TestFormat::Junit
                | TestFormat::NextestJunit
                | TestFormat::LibtestJson
                | TestFormat::GoJson
                | TestFormat::JestJson
        )
    }
}

impl fmt::Display for TestFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TestFormat {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let s = match s {
            "vitest-json" => "jest-json",
            "node" | "node-test" => "tap",
            "django" => "unittest",
            "go-test" => "go",
            "pytest-text" => "pytest",
            "pytest-junitxml" => "pytest-junit",
            other => other,
        };
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
            .ok_or(())
    }
}

/// Everything the parsers get.
#[derive(Default)]
pub struct ParseInput<'a> {
    /// The test command's standard output and error, already joined by the caller.
    pub log: &'a [u8],
    /// Report files the command wrote, as (file name, contents).
    pub reports: Vec<(String, &'a [u8])>,
    /// Files of the repository (relative paths), used to turn pytest JUnit
    /// class names back into file paths. May be empty.
    pub known_files: Option<&'a HashSet<String>>,
}

/// Parsed test results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TestResults {
    pub tests: BTreeMap<String, Status>,
    /// The parser that produced the results (for `auto`, the one it picked).
    pub format: Option<TestFormat>,
    /// Input was cut, or too many tests: results may be incomplete.
    pub truncated: bool,
}

impl TestResults {
    /// Records a result; on duplicate ids the worse status wins (a test that
    /// failed anywhere failed).
    pub(crate) fn add(&mut self, id: &str, st: Status) {
        let id = id.trim();
        if id.is_empty() {
            return;
        }
        let id = cut(id, MAX_ID_BYTES);
        if let Some(old) = self.tests.get_mut(id) {
            if st.badness() > old.badness() {
                *old = st;
            }
            return;
        }
        if self.tests.len() >= MAX_TESTS {
            self.truncated = true;
            return;
        }
        self.tests.insert(id.to_string(), st);
    }
    pub fn failed_count(&self) -> usize {
        self.tests
            .values()
            .filter(|s| matches!(s, Status::Failed | Status::Error | Status::Xpass))
            .count()
    }
    /// Merges another run's results in, worse status winning.
    pub fn merge(&mut self, other: &TestResults) {
        for (k, v) in &other.tests {
            self.add(k, *v);
        }
        self.truncated |= other.truncated;
    }
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut e = max;
    while !s.is_char_boundary(e) {
        e -= 1;
    }
    &s[..e]
}

/// Bounds raw bytes and turns them into text (lossy UTF-8).
fn bounded(b: &[u8], truncated: &mut bool) -> String {
    let b = if b.len() > MAX_PARSE_BYTES {
        *truncated = true;
        &b[..MAX_PARSE_BYTES]
    } else {
        b
    };
    String::from_utf8_lossy(b).into_owned()
}

/// Removes ANSI escape sequences (colour codes) so text parsers see plain lines.
pub(crate) fn strip_ansi(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\x1b') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            if it.peek() == Some(&'[') {
                it.next();
                // CSI: parameters then one final byte in @..~
                for d in it.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    std::borrow::Cow::Owned(out)
}

/// Parses one text with one concrete format (never `Auto`). Pure; used by the
/// fuzz targets.
pub fn parse_text(
    format: TestFormat,
    text: &str,
    known_files: Option<&HashSet<String>>,
) -> TestResults {
    let mut r = TestResults {
        format: Some(format),
        ..Default::default()
    };
    if text.len() > MAX_PARSE_BYTES {
        r.truncated = true;
    }
    let text = cut(text, MAX_PARSE_BYTES);
    match format {
        TestFormat::Auto => {}
        TestFormat::Pytest => text::pytest(text, &mut r),
        TestFormat::Unittest => text::unittest(text, &mut r),
        TestFormat::Cargo => text::cargo(text, &mut r),
        TestFormat::Go => text::go(text, &mut r),
        TestFormat::Tap => tap::tap(text, &mut r),
        TestFormat::GoJson => json::go_json(text, &mut r),
        TestFormat::LibtestJson => json::libtest_json(text, &mut r),
        TestFormat::JestJson => json::jest_json(text, &mut r),
        TestFormat::Junit | TestFormat::NextestJunit | TestFormat::PytestJunit => {
            junit::junit(text, format, known_files, &mut r)
        }
    }
    r
}

/// Parses a test run's output. Structured formats read the report files first
/// and fall back to the log; `Auto` tries report files as JUnit, then each
/// text format, and keeps the first that finds tests.
pub fn parse(format: TestFormat, input: &ParseInput<'_>) -> TestResults {
    let mut truncated = false;
    let log = bounded(input.log, &mut truncated);
    let mut res = if format == TestFormat::Auto {
        let mut found = TestResults::default();
        for (name, data) in &input.reports {
            let t = bounded(data, &mut truncated);
            let f = if name.ends_with(".xml") {
                if t.contains("<testsuite name=\"pytest\"") {
                    TestFormat::PytestJunit
                } else {
                    TestFormat::Junit
                }
            } else if name.ends_with(".json") {
                TestFormat::JestJson
            } else {
                continue;
            };
            let r = parse_text(f, &t, input.known_files);
            found.format = r.format;
            found.merge(&r);
        }
        if found.tests.is_empty() {
            for f in [
                TestFormat::Pytest,
                TestFormat::Unittest,
                TestFormat::Cargo,
                TestFormat::Go,
                TestFormat::Tap,
                TestFormat::GoJson,
                TestFormat::LibtestJson,
                TestFormat::JestJson,
            ] {
                let r = parse_text(f, &log, input.known_files);
                if !r.tests.is_empty() {
                    found = r;
                    break;
                }
            }
        }
        found
    } else if format.is_structured() && !input.reports.is_empty() {
        let mut all = TestResults {
            format: Some(format),
            ..Default::default()
        };
        for (_, data) in &input.reports {
            let t = bounded(data, &mut truncated);
            all.merge(&parse_text(format, &t, input.known_files));
        }
        all
    } else {
        parse_text(format, &log, input.known_files)
    };
    res.truncated |= truncated;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worse_status_wins_and_ids_are_bounded() {
        let mut r = TestResults::default();
        r.add("a", Status::Passed);
        r.add("a", Status::Failed);
        r.add("a", Status::Passed);
        assert_eq!(r.tests["a"], Status::Failed);
        let long = "é".repeat(MAX_ID_BYTES);
        r.add(&long, Status::Passed);
        assert!(r.tests.keys().all(|k| k.len() <= MAX_ID_BYTES));
    }

    #[test]
    fn format_names_round_trip() {
        for n in TestFormat::NAMES {
            assert_eq!(n.parse::<TestFormat>().unwrap().name(), *n);
        }
        assert_eq!(
            "vitest-json".parse::<TestFormat>(),
            Ok(TestFormat::JestJson)
        );
        assert!("nope".parse::<TestFormat>().is_err());
    }

    #[test]
    fn strips_colour_codes() {
        assert_eq!(strip_ansi("\x1b[32mPASSED\x1b[0m x"), "PASSED x");
    }

    #[test]
    fn auto_picks_the_format_that_finds_tests() {
        let log =
            b"test a::b ... ok\ntest a::c ... FAILED\n\ntest result: FAILED. 1 passed; 1 failed";
        let r = parse(
            TestFormat::Auto,
            &ParseInput {
                log,
                ..Default::default()
            },
        );
        assert_eq!(r.format, Some(TestFormat::Cargo));
        assert_eq!(r.tests["a::c"], Status::Failed);
    }
}
