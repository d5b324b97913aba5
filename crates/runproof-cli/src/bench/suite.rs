//! Which agents one bench run compares: `--agent [NAME=]COMMAND` flags and
//! `--agents FILE`, a TOML suite of `[[agent]]` tables.
//!
//! A command is a template split on whitespace, never given to a shell. Its
//! elements may hold the placeholders `{workspace}` and `{task_file}`
//! (replaced per run); an element naming an existing regular file (relative
//! to the current directory for `--agent`, to the suite file's directory in a
//! suite) is made absolute and visible read-only inside the sandbox.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The placeholders a command may use.
pub const WORKSPACE: &str = "{workspace}";
pub const TASK_FILE: &str = "{task_file}";

/// Largest suite file read.
const MAX_SUITE_BYTES: u64 = 1 << 20;
/// Longest agent name kept.
pub const MAX_NAME: usize = 100;

/// One agent to run over the tasks.
#[derive(Debug, Clone)]
pub struct Agent {
    pub name: String,
    /// The command as written (for the report).
    pub command: String,
    /// The command's elements, files made absolute, placeholders kept.
    pub template: Vec<String>,
    /// Files named in the command, made visible read-only in the sandbox.
    pub read_files: Vec<PathBuf>,
    pub description: Option<String>,
    /// Network rules added for this agent (on top of the defaults and `--allow`).
    pub allow: Vec<String>,
    pub timeout: Option<f64>,
    pub budget: Option<f64>,
    /// Only these instances (empty: every task).
    pub instances: Vec<String>,
    /// Where the agent was defined, for messages.
    pub origin: String,
}

impl Agent {
    /// The command for one run, placeholders replaced.
    pub fn argv(&self, workspace: &Path, task_file: &Path) -> Vec<std::ffi::OsString> {
        let ws = workspace.to_string_lossy();
        let tf = task_file.to_string_lossy();
        self.template
            .iter()
            .map(|e| {
                if e == WORKSPACE {
                    workspace.as_os_str().to_owned()
                } else if e == TASK_FILE {
                    task_file.as_os_str().to_owned()
                } else {
                    e.replace(WORKSPACE, &ws).replace(TASK_FILE, &tf).into()
                }
            })
            .collect()
    }
}

/// Split a command into its template, checking its placeholders and making
/// the files it names absolute (relative ones against `base`).
pub fn parse_template(
    command: &str,
    base: &Path,
    origin: &str,
) -> Result<(Vec<String>, Vec<PathBuf>), String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    if words.is_empty() {
        return Err(format!(
            "{origin}: the agent command is empty; give one such as \
             'sh examples/agents/reasoner {WORKSPACE} {TASK_FILE}'"
        ));
    }
    for w in &words {
        if let Some(p) = unknown_placeholder(w) {
            return Err(format!(
                "{origin}: unknown placeholder {p} in {command:?}; the placeholders are {WORKSPACE} and {TASK_FILE}"
            ));
        }
    }
    if !words.iter().any(|w| w.contains(WORKSPACE)) {
        return Err(format!(
            "{origin}: {command:?} has no {WORKSPACE} placeholder; the agent must be told where to work, \
             e.g. '{} {WORKSPACE} {TASK_FILE}'",
            words.join(" ")
        ));
    }
    let mut template = Vec::new();
    let mut files = Vec::new();
    for w in words {
        let p = base.join(w);
        if !w.contains('{')
            && p.is_file()
            && let Ok(abs) = p.canonicalize()
        {
            // Relative names become absolute (the agent starts in the
            // workspace); absolute ones stay as written, so a program that
            // looks at its own name (a multi-call binary) still sees it.
            if Path::new(w).is_absolute() {
                template.push(w.to_string());
            } else {
                template.push(abs.to_string_lossy().into_owned());
            }
            if !files.contains(&abs) {
                files.push(abs);
            }
        } else {
            template.push(w.to_string());
        }
    }
    Ok((template, files))
}

/// A `{word}` in `w` that is not one of the placeholders.
fn unknown_placeholder(w: &str) -> Option<String> {
    let mut rest = w;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else { break };
        let inner = &after[..j];
        let is_word = !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let p = format!("{{{inner}}}");
        if is_word && p != WORKSPACE && p != TASK_FILE {
            return Some(p);
        }
        rest = &after[j + 1..];
    }
    None
}

/// The name an unnamed `--agent` gets: its elements up to the first
/// placeholder, files by their base name (`sh reasoner`).
pub fn default_name(template: &[String]) -> String {
    let words: Vec<String> = template
        .iter()
        .take_while(|e| !e.contains('{'))
        .map(|e| {
            Path::new(e)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| e.clone())
        })
        .collect();
    words.join(" ")
}

fn check_name(name: &str, origin: &str) -> Result<String, String> {
    let n = name.trim();
    if n.is_empty() {
        return Err(format!("{origin}: the agent name is empty"));
    }
    if n.chars().count() > MAX_NAME {
        return Err(format!(
            "{origin}: the agent name is longer than {MAX_NAME} characters"
        ));
    }
    if n.chars().any(char::is_control) {
        return Err(format!(
            "{origin}: the agent name {n:?} holds control characters"
        ));
    }
    Ok(n.to_string())
}

/// `NAME=COMMAND` when the text before the first `=` is a plain name (no
/// whitespace, `/` or `{`); otherwise the whole argument is the command.
fn split_named(arg: &str) -> (Option<&str>, &str) {
    match arg.split_once('=') {
        Some((n, c))
            if !n.is_empty()
                && !n
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch == '/' || ch == '{') =>
        {
            (Some(n), c)
        }
        _ => (None, arg),
    }
}

/// The agents of `--agent` flags (`name` is `--name`, for a single unnamed one).
pub fn from_flags(flags: &[String], name: Option<&str>, cwd: &Path) -> Result<Vec<Agent>, String> {
    let mut out = Vec::new();
    let unnamed = flags.iter().filter(|f| split_named(f).0.is_none()).count();
    if name.is_some() && (flags.len() != 1 || unnamed != 1) {
        return Err(
            "--name names a single --agent COMMAND; with several agents, name each \
             with --agent NAME=COMMAND or in an --agents file"
                .into(),
        );
    }
    for (i, f) in flags.iter().enumerate() {
        let origin = format!("--agent #{}", i + 1);
        let (n, command) = split_named(f);
        let (template, read_files) = parse_template(command, cwd, &origin)?;
        let name = match n.or(name) {
            Some(n) => check_name(n, &origin)?,
            None => check_name(&default_name(&template), &origin)?,
        };
        out.push(Agent {
            name,
            command: command.trim().to_string(),
            template,
            read_files,
            description: None,
            allow: Vec::new(),
            timeout: None,
            budget: None,
            instances: Vec::new(),
            origin,
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    #[serde(default)]
    agent: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    command: String,
    description: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    timeout: Option<f64>,
    budget: Option<f64>,
    #[serde(default)]
    instances: Vec<String>,
}

pub const SUITE_KEYS: &str = "name, command, description, allow, timeout, budget, instances";

/// The agents of an `--agents` suite file.
pub fn from_file(path: &Path) -> Result<Vec<Agent>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("--agents {shown}: {e}"))?;
    if meta.len() > MAX_SUITE_BYTES {
        return Err(format!(
            "--agents {shown} is {} bytes; a suite file is at most {MAX_SUITE_BYTES}",
            meta.len()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("--agents {shown}: {e}"))?;
    let suite: SuiteFile = toml::from_str(&text).map_err(|e| {
        format!(
            "--agents {shown}: {}\n(a suite file is a list of [[agent]] tables with the keys {SUITE_KEYS})",
            e.to_string().trim_end()
        )
    })?;
    if suite.agent.is_empty() {
        return Err(format!(
            "--agents {shown} defines no agent; add [[agent]] tables with name = \"...\" and command = \"... {WORKSPACE} {TASK_FILE}\""
        ));
    }
    let base = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let mut out = Vec::new();
    for (i, e) in suite.agent.into_iter().enumerate() {
        let origin = format!("--agents {shown}: agent #{} ({:?})", i + 1, e.name);
        let name = check_name(&e.name, &origin)?;
        let (template, read_files) = parse_template(&e.command, &base, &origin)?;
        if let Some(t) = e.timeout
            && !(t.is_finite() && t > 0.0)
        {
            return Err(format!(
                "{origin}: timeout = {t} is not a positive number of seconds"
            ));
        }
        if let Some(b) = e.budget
            && !(b.is_finite() && b > 0.0)
        {
            return Err(format!(
                "{origin}: budget = {b} is not a positive amount of USD"
            ));
        }
        out.push(Agent {
            name,
            command: e.command.trim().to_string(),
            template,
            read_files,
            description: e
                .description
                .map(|d| crate::bench::report::bound(d.trim(), 300)),
            allow: e.allow,
            timeout: e.timeout,
            budget: e.budget,
            instances: e.instances,
            origin,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_need_the_workspace_and_know_their_placeholders() {
        let cwd = Path::new("/nonexistent");
        assert!(parse_template("", cwd, "t").is_err());
        let e = parse_template("sh agent.sh {task_file}", cwd, "t").unwrap_err();
        assert!(e.contains("no {workspace}"), "{e}");
        let e = parse_template("sh a {workspace} {task}", cwd, "t").unwrap_err();
        assert!(e.contains("unknown placeholder {task}"), "{e}");
        // JSON-looking arguments are not placeholders.
        let (t, files) = parse_template(
            "sh  a.sh --ws={workspace} {task_file} {\"a\":1} 'x;y'",
            cwd,
            "t",
        )
        .unwrap();
        assert_eq!(
            t,
            [
                "sh",
                "a.sh",
                "--ws={workspace}",
                "{task_file}",
                "{\"a\":1}",
                "'x;y'"
            ]
        );
        assert!(files.is_empty());
        assert_eq!(default_name(&t), "sh a.sh");
    }

    #[test]
    fn placeholders_are_replaced_inside_elements_too() {
        let (template, _) =
            parse_template("agent --ws={workspace} {task_file}", Path::new("/"), "t").unwrap();
        let a = Agent {
            name: "a".into(),
            command: String::new(),
            template,
            read_files: Vec::new(),
            description: None,
            allow: Vec::new(),
            timeout: None,
            budget: None,
            instances: Vec::new(),
            origin: "t".into(),
        };
        let argv = a.argv(Path::new("/w s"), Path::new("/t.json"));
        assert_eq!(argv, ["agent", "--ws=/w s", "/t.json"]);
    }

    #[test]
    fn files_in_a_command_are_made_absolute_against_the_base() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.sh"), "true").unwrap();
        std::os::unix::fs::symlink("agent.sh", dir.path().join("link")).unwrap();
        let (t, files) = parse_template("sh agent.sh {workspace}", dir.path(), "t").unwrap();
        let abs = dir.path().canonicalize().unwrap().join("agent.sh");
        assert_eq!(t[1], abs.to_string_lossy());
        assert_eq!(files, std::slice::from_ref(&abs));
        // An absolute name is kept as written; its target is made visible.
        let link = dir.path().join("link");
        let cmd = format!("{} {{workspace}}", link.display());
        let (t, files) = parse_template(&cmd, Path::new("/"), "t").unwrap();
        assert_eq!(t[0], link.to_string_lossy());
        assert_eq!(files, [abs]);
    }

    #[test]
    fn named_flags_and_the_name_flag() {
        let cwd = Path::new("/nonexistent");
        let a = from_flags(
            &[
                "fast=sh a {workspace}".into(),
                "env X=1 agent {workspace}".into(),
            ],
            None,
            cwd,
        )
        .unwrap();
        assert_eq!(a[0].name, "fast");
        assert_eq!(a[0].command, "sh a {workspace}");
        // `env X=1 ...` has whitespace before its `=`: not a name.
        assert_eq!(a[1].name, "env X=1 agent");
        let e = from_flags(
            &["a=x {workspace}".into(), "y {workspace}".into()],
            Some("n"),
            cwd,
        )
        .unwrap_err();
        assert!(e.contains("--name"), "{e}");
        let one = from_flags(&["y {workspace}".into()], Some("<b>"), cwd).unwrap();
        assert_eq!(one[0].name, "<b>");
        assert!(from_flags(&["y {workspace}".into()], Some(" "), cwd).is_err());
    }

    #[test]
    fn suite_files_refuse_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("suite.toml");
        let load = |body: &str| {
            std::fs::write(&p, body).unwrap();
            from_file(&p)
        };
        let e = load("[[agent]]\nname = \"a\"\ncomand = \"x {workspace}\"\n").unwrap_err();
        assert!(e.contains("comand") && e.contains(SUITE_KEYS), "{e}");
        let e = load("").unwrap_err();
        assert!(e.contains("defines no agent"), "{e}");
        let e = load("[[agent]]\nname = \"a\"\ncommand = \"x {workspace}\"\ntimeout = -1\n")
            .unwrap_err();
        assert!(e.contains("timeout = -1"), "{e}");
        let e = load("[[agents]]\nname = \"a\"\ncommand = \"x {workspace}\"\n").unwrap_err();
        assert!(e.contains("agents"), "{e}");
        let ok = load(
            "[[agent]]\nname = \"a\"\ncommand = \"x {workspace}\"\nallow = [\"@github\"]\ntimeout = 5\n",
        )
        .unwrap();
        assert_eq!(ok[0].allow, ["@github"]);
        assert_eq!(ok[0].timeout, Some(5.0));
    }
}
