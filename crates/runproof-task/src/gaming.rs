//! Grader-gaming hardening: find what a model patch changes that can alter
//! test outcomes without fixing code, so it can be reported and neutralised
//! (reverted to the base) before the tests run.
//!
//! Covered: pytest hooks and configuration (`conftest.py`, `pytest.ini`,
//! `[tool:pytest]`/`[pytest]` in setup.cfg and tox.ini, `[tool.pytest.*]` in
//! pyproject.toml, `pytest11` entry points, `pytest_plugins`), interpreter
//! start-up hooks (`sitecustomize.py`, `usercustomize.py`, `*.pth`), JS test
//! runner configuration (jest/vitest/mocha/ava/babel config, `.npmrc`, the
//! test scripts and runner keys of package.json), Cargo build scripts and
//! configuration (`build.rs`, `.cargo/config*`, the `[[test]]`/`build`/
//! `harness` keys of Cargo.toml), the test command's own scripts, Makefiles
//! and tox/nox files the test command uses, and the test files the task's test
//! ids name. Changes elsewhere that look like they reach into the test runner
//! are reported as warnings (not reverted: they may be part of a real fix).
//!
//! Pure apart from reading the two versions of a file; the caller reverts.

use crate::patch::Patch;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A change that was (or would be) neutralised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Finding {
    pub path: String,
    pub reason: String,
}

/// Result of the analysis.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Analysis {
    /// Paths to revert to the base before running the tests.
    pub neutralise: Vec<Finding>,
    /// Suspicious changes that are kept (reported only).
    pub warnings: Vec<Finding>,
}

/// What the analysis needs to know about the task.
pub struct TaskView<'a> {
    pub test_cmd: &'a str,
    pub test_ids: Vec<&'a str>,
}

fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Reason a path is test-outcome-sensitive by its name alone.
fn by_name(p: &str) -> Option<&'static str> {
    let name = file_name(p);
    let lower = name.to_ascii_lowercase();
    let r = match lower.as_str() {
        "conftest.py" => "pytest conftest.py can rewrite test results with hooks",
        "pytest.ini" | ".pytest.ini" => {
            "pytest configuration changes how tests are collected and reported"
        }
        "sitecustomize.py" | "usercustomize.py" => "runs at every Python start-up",
        "build.rs" => "Cargo build script runs before the tests and can change the build",
        ".npmrc" => "npm configuration can set node options for the test script",
        ".mocharc.js" | ".mocharc.cjs" | ".mocharc.json" | ".mocharc.yml" | ".mocharc.yaml"
        | ".babelrc" => "JS test runner or transform configuration",
        _ => "",
    };
    if !r.is_empty() {
        return Some(r);
    }
    if lower.ends_with(".pth") {
        return Some("Python .pth files run code at interpreter start-up");
    }
    for pre in [
        "jest.config.",
        "vitest.config.",
        "vitest.workspace.",
        "vite.config.",
        "babel.config.",
        "ava.config.",
    ] {
        if lower.starts_with(pre) {
            return Some("JS test runner or transform configuration");
        }
    }
    if p.starts_with(".cargo/") || p.contains("/.cargo/") {
        let n = lower.as_str();
        if n == "config" || n == "config.toml" {
            return Some("Cargo configuration can replace the test runner or rustc flags");
        }
    }
    None
}

/// Files named by the test command itself (scripts it runs) and the build
/// files of the tools it invokes.
fn test_cmd_files(cmd: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let words: Vec<&str> = cmd
        .split(|c: char| c.is_whitespace() || ";&|()<>`'\"".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    for w in &words {
        let w = w
            .split_once('=')
            .map(|(k, v)| if k.starts_with('-') { v } else { w })
            .unwrap_or(w);
        let w = w.trim_start_matches("./");
        if w.contains('/') || w.contains('.') {
            if w.starts_with('-') || w.starts_with('$') || w.contains("::") || w.starts_with('/') {
                continue;
            }
            // Script-looking words only (a path with an extension, or a dir/file).
            let ext_ok = [
                ".sh", ".py", ".js", ".mjs", ".cjs", ".ts", ".pl", ".rb", ".bash",
            ]
            .iter()
            .any(|e| w.ends_with(e));
            if ext_ok {
                out.insert(w.to_string());
            }
        }
    }
    let first_tools: BTreeSet<&str> = words.iter().map(|w| file_name(w)).collect();
    if first_tools.contains("make") {
        out.insert("Makefile".into());
        out.insert("GNUmakefile".into());
        out.insert("makefile".into());
    }
    if first_tools.contains("tox") {
        out.insert("tox.ini".into());
    }
    if first_tools.contains("nox") {
        out.insert("noxfile.py".into());
    }
    out
}

/// Test files named by the task's ids: `tests/test_x.py::t` names
/// `tests/test_x.py`; `test_y (pkg.mod.Class)` names `pkg/mod.py` (and the
/// shorter module prefixes, as the split between module and class is unknown).
fn test_id_files(ids: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for id in ids {
        if let Some((file, _)) = id.split_once("::")
            && (file.ends_with(".py") || file.contains('/'))
        {
            out.insert(file.to_string());
            continue;
        }
        if let (Some(o), true) = (id.rfind(" ("), id.ends_with(')')) {
            let dotted = &id[o + 2..id.len() - 1];
            let parts: Vec<&str> = dotted.split('.').collect();
            for n in 1..parts.len() {
                out.insert(format!("{}.py", parts[..n].join("/")));
            }
        }
    }
    out
}

/// The sections of an ini file that configure pytest, as normalised text.
fn ini_pytest_sections(text: &str) -> String {
    let mut keep = false;
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            let name = t[1..t.len() - 1].trim().to_ascii_lowercase();
            keep = name == "pytest"
                || name == "tool:pytest"
                || name.starts_with("options.entry_points");
        }
        if keep {
            out.push_str(t);
            out.push('\n');
        }
    }
    out
}

/// The values at `keys` (dotted paths) of a TOML document, or `None` if it
/// does not parse (which is itself suspicious for a config file).
fn toml_keys(text: &str, keys: &[&str]) -> Option<String> {
    let v: toml::Table = toml::from_str(text).ok()?;
    let mut out = String::new();
    for k in keys {
        let mut cur: Option<&toml::Value> = None;
        let mut table = Some(&v);
        for part in k.split('.') {
            cur = table.and_then(|t| t.get(part));
            table = cur.and_then(|c| c.as_table());
        }
        out.push_str(&format!("{k}={cur:?}\n"));
    }
    Some(out)
}

fn json_keys(text: &str, keys: &[&str], script_names: &BTreeSet<String>) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let mut out = String::new();
    for k in keys {
        out.push_str(&format!("{k}={:?}\n", v.get(k)));
    }
    if let Some(s) = v.get("scripts").and_then(|s| s.as_object()) {
        for (name, val) in s {
            if name.starts_with("test")
                || name.starts_with("pretest")
                || name.starts_with("posttest")
                || script_names.contains(name)
            {
                out.push_str(&format!("scripts.{name}={val}\n"));
            }
        }
    }
    Some(out)
}

/// The configuration files whose test-relevant parts [`config_change`]
/// compares (only these are read).
fn is_config(path: &str) -> bool {
    matches!(
        file_name(path).to_ascii_lowercase().as_str(),
        "setup.cfg" | "tox.ini" | "pyproject.toml" | "cargo.toml" | "package.json"
    )
}

/// Compares the test-relevant part of a config file at base and after the
/// patch. Returns a reason when they differ.
fn config_change(
    path: &str,
    base: Option<&str>,
    new: Option<&str>,
    cmd: &str,
) -> Option<&'static str> {
    let name = file_name(path).to_ascii_lowercase();
    let differs = |f: &dyn Fn(&str) -> Option<String>| {
        let a = base.map(f);
        let b = new.map(f);
        // Unparseable after the patch while it parsed before: treat as a change.
        a != b
    };
    match name.as_str() {
        "setup.cfg" | "tox.ini" => differs(&|t| Some(ini_pytest_sections(t)))
            .then_some("pytest options changed in an ini file"),
        "pyproject.toml" => differs(&|t| {
            toml_keys(
                t,
                &[
                    "tool.pytest",
                    "project.entry-points.pytest11",
                    "tool.poetry.plugins.pytest11",
                ],
            )
        })
        .then_some("pytest options or plugins changed in pyproject.toml"),
        "cargo.toml" => differs(&|t| {
            toml_keys(
                t,
                &[
                    "test",
                    "bench",
                    "package.build",
                    "lib.harness",
                    "lib.test",
                    "profile.test",
                    "target",
                ],
            )
        })
        .then_some("test targets, harness or build script changed in Cargo.toml"),
        "package.json" => {
            let mut scripts = BTreeSet::new();
            let words: Vec<&str> = cmd.split_whitespace().collect();
            for w in words.windows(2) {
                if w[0] == "run" {
                    scripts.insert(w[1].to_string());
                }
            }
            differs(&|t| {
                json_keys(
                    t,
                    &[
                        "jest", "vitest", "mocha", "ava", "c8", "nyc", "imports", "type",
                    ],
                    &scripts,
                )
            })
            .then_some("test scripts or test runner configuration changed in package.json")
        }
        _ => None,
    }
}

/// Markers of code reaching into a test runner from outside the tests.
const SUSPICIOUS: &[(&str, &str)] = &[
    ("pytest11", "registers a pytest plugin entry point"),
    ("pytest_plugins", "loads pytest plugins"),
    ("_pytest", "reaches into pytest internals"),
    ("pytest_runtest_", "defines a pytest hook"),
    ("os._exit(", "exits the interpreter directly"),
    ("sys.exit(0)", "forces a successful exit"),
    ("atexit.register", "runs code at interpreter exit"),
    ("process.exit(0)", "forces a successful exit"),
    ("process.exitCode", "overrides the exit code"),
    ("std::process::exit(0)", "forces a successful exit"),
];

/// Analyses `patch` (the model patch). `read` returns a file's text at the
/// base (`false`) or after the patch (`true`); `None` when absent.
pub fn analyse(
    patch: &Patch,
    task: &TaskView<'_>,
    read: &dyn Fn(&str, bool) -> Option<String>,
) -> Analysis {
    let mut neutralise: BTreeMap<String, String> = BTreeMap::new();
    let mut warnings = Vec::new();
    let cmd_files = test_cmd_files(task.test_cmd);
    let id_files = test_id_files(&task.test_ids);
    for f in &patch.files {
        for p in f.paths() {
            if let Some(r) = by_name(p) {
                neutralise
                    .entry(p.to_string())
                    .or_insert_with(|| r.to_string());
            } else if cmd_files.contains(p) {
                neutralise
                    .entry(p.to_string())
                    .or_insert_with(|| "file used by the task's test command".to_string());
            } else if id_files.contains(p) {
                neutralise
                    .entry(p.to_string())
                    .or_insert_with(|| "test file named by the task's test ids".to_string());
            } else if is_config(p)
                && let Some(r) = config_change(
                    p,
                    read(p, false).as_deref(),
                    read(p, true).as_deref(),
                    task.test_cmd,
                )
            {
                neutralise
                    .entry(p.to_string())
                    .or_insert_with(|| r.to_string());
            }
        }
        if let Some(p) = f.new.as_deref().or(f.old.as_deref())
            && !neutralise.contains_key(p)
        {
            for (needle, why) in SUSPICIOUS {
                if f.added.iter().any(|l| l.contains(needle)) {
                    if matches!(*needle, "pytest11" | "pytest_plugins" | "pytest_runtest_") {
                        neutralise.insert(p.to_string(), format!("added code {why}"));
                    } else {
                        warnings.push(Finding {
                            path: p.to_string(),
                            reason: format!("added code {why} (`{needle}`); kept, check by hand"),
                        });
                    }
                    break;
                }
            }
        }
    }
    Analysis {
        neutralise: neutralise
            .into_iter()
            .map(|(path, reason)| Finding { path, reason })
            .collect(),
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::parse;

    fn diff_for(path: &str, added: &str) -> String {
        format!("--- a/{path}\n+++ b/{path}\n@@ -0,0 +1 @@\n+{added}\n")
    }

    fn paths(a: &Analysis) -> Vec<&str> {
        a.neutralise.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn flags_by_name_cmd_and_ids() {
        let mut d = String::new();
        for p in [
            "conftest.py",
            "tests/conftest.py",
            "lib/x.pth",
            "jest.config.js",
            ".cargo/config.toml",
            "build.rs",
            "run_tests.sh",
            "tests/test_m.py",
            "src/real_fix.py",
        ] {
            d.push_str(&diff_for(p, "x = 1"));
        }
        let p = parse(&d).unwrap();
        let t = TaskView {
            test_cmd: "./run_tests.sh -q && python -m pytest",
            test_ids: vec!["tests/test_m.py::test_a"],
        };
        let a = analyse(&p, &t, &|_, _| None);
        assert_eq!(
            paths(&a),
            vec![
                ".cargo/config.toml",
                "build.rs",
                "conftest.py",
                "jest.config.js",
                "lib/x.pth",
                "run_tests.sh",
                "tests/conftest.py",
                "tests/test_m.py"
            ]
        );
    }

    #[test]
    fn config_files_only_when_test_sections_change() {
        let p = parse(
            &(diff_for("setup.cfg", "x")
                + &diff_for("pyproject.toml", "x")
                + &diff_for("package.json", "x")),
        )
        .unwrap();
        let t = TaskView {
            test_cmd: "npm run unit",
            test_ids: vec![],
        };
        // Only metadata changes: nothing flagged.
        let same = |p: &str, after: bool| -> Option<String> {
            Some(match (p, after) {
                ("setup.cfg", false) => "[metadata]\nname=a\n[tool:pytest]\naddopts=-q\n".into(),
                ("setup.cfg", true) => "[metadata]\nname=b\n[tool:pytest]\naddopts=-q\n".into(),
                ("pyproject.toml", false) => "[project]\nname='a'\n".into(),
                ("pyproject.toml", true) => "[project]\nname='b'\n".into(),
                ("package.json", false) => {
                    "{\"version\":\"1\",\"scripts\":{\"unit\":\"node --test\"}}".into()
                }
                _ => "{\"version\":\"2\",\"scripts\":{\"unit\":\"node --test\"}}".into(),
            })
        };
        assert!(analyse(&p, &t, &same).neutralise.is_empty());
        let changed = |p: &str, after: bool| -> Option<String> {
            Some(match (p, after) {
                ("setup.cfg", false) => "[tool:pytest]\naddopts=-q\n".into(),
                ("setup.cfg", true) => "[tool:pytest]\naddopts=-q -p evil\n".into(),
                ("pyproject.toml", false) => "[project]\nname='a'\n".into(),
                ("pyproject.toml", true) => "[tool.pytest.ini_options]\naddopts='-x'\n".into(),
                ("package.json", false) => "{\"scripts\":{\"unit\":\"node --test\"}}".into(),
                _ => "{\"scripts\":{\"unit\":\"true\"}}".into(),
            })
        };
        assert_eq!(
            paths(&analyse(&p, &t, &changed)),
            vec!["package.json", "pyproject.toml", "setup.cfg"]
        );
    }

    #[test]
    fn only_configuration_files_are_read() {
        let p = parse(
            &(diff_for("src/a.py", "x")
                + &diff_for("lib/Cargo.toml", "x")
                + &diff_for("docs/readme.md", "x")),
        )
        .unwrap();
        let t = TaskView {
            test_cmd: "cargo test",
            test_ids: vec![],
        };
        let seen = std::cell::RefCell::new(Vec::new());
        let read = |p: &str, after: bool| -> Option<String> {
            seen.borrow_mut().push((p.to_string(), after));
            None
        };
        analyse(&p, &t, &read);
        assert_eq!(
            *seen.borrow(),
            vec![
                ("lib/Cargo.toml".to_string(), false),
                ("lib/Cargo.toml".to_string(), true)
            ]
        );
    }

    #[test]
    fn hooks_in_any_file_are_neutralised_and_exits_warned() {
        let d = diff_for(
            "src/plugin.py",
            "def pytest_runtest_makereport(item, call): pass",
        ) + &diff_for("src/m.py", "os._exit(0)");
        let p = parse(&d).unwrap();
        let t = TaskView {
            test_cmd: "pytest",
            test_ids: vec![],
        };
        let a = analyse(&p, &t, &|_, _| None);
        assert_eq!(paths(&a), vec!["src/plugin.py"]);
        assert_eq!(a.warnings.len(), 1);
        assert_eq!(a.warnings[0].path, "src/m.py");
    }

    #[test]
    fn unittest_ids_name_module_files() {
        let f = test_id_files(&["test_a (app.tests.ATest)"]);
        assert!(f.contains("app/tests.py"), "{f:?}");
    }
}
