//! Task and prediction files: SWE-bench instance and prediction fields plus
//! runproof's own (`repo_path`/`repo_url`, `setup`, `test_cmd`, `test_format`,
//! `timeout`). Loading never panics on bad input; every error names the file,
//! the line (for JSONL), the field and what to do.

use crate::parse::TestFormat;
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest task or prediction file accepted (they embed patches, so allow a lot).
pub const MAX_INPUT_FILE_BYTES: u64 = 512 * 1024 * 1024;
/// Largest single patch accepted.
pub const MAX_PATCH_BYTES: usize = 16 * 1024 * 1024;
/// Default test timeout when a task gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Where a task's repository comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RepoSource {
    /// A local git repository (absolute, or resolved against the task file's directory).
    Path(PathBuf),
    /// A URL `git clone` can fetch (through the sandbox's network policy).
    Url(String),
}

/// One task instance (SWE-bench fields plus runproof's).
#[derive(Debug, Clone, Serialize)]
pub struct Task {
    pub instance_id: String,
    /// `owner/name`, informative only.
    pub repo: Option<String>,
    pub base_commit: String,
    /// The reference fix (gold patch), if the task ships one.
    pub patch: Option<String>,
    /// The patch that adds or changes the tests; may be empty.
    pub test_patch: String,
    pub fail_to_pass: Vec<String>,
    pub pass_to_pass: Vec<String>,
    pub source: RepoSource,
    /// Shell commands (as the task author wrote them) that prepare the environment.
    pub setup: Vec<String>,
    /// Shell command that runs the tests (`sh -c`, written by the task author).
    pub test_cmd: String,
    pub test_format: TestFormat,
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
    /// Memory limit (bytes) for each setup and test command; `None`: the
    /// sandbox's default.
    pub memory: Option<u64>,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// One prediction line, as SWE-bench writes them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Prediction {
    pub instance_id: String,
    pub model_name_or_path: String,
    /// `None` when the field was null or missing (SWE-bench's `patch_is_None`).
    pub model_patch: Option<String>,
}

/// A task or prediction file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}; check that the file exists and is readable", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", InvalidDisplay(self))]
    Invalid {
        path: PathBuf,
        /// 1-based line for JSONL input.
        line: Option<usize>,
        field: Option<String>,
        msg: String,
        fix: String,
    },
}

struct InvalidDisplay<'a>(&'a LoadError);
impl fmt::Display for InvalidDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let LoadError::Invalid {
            path,
            line,
            field,
            msg,
            fix,
        } = self.0
        {
            write!(f, "{}", path.display())?;
            if let Some(l) = line {
                write!(f, ":{l}")?;
            }
            if let Some(fl) = field {
                write!(f, ": field `{fl}`")?;
            }
            write!(f, ": {msg}; fix: {fix}")?;
        }
        Ok(())
    }
}

struct Ctx<'a> {
    path: &'a Path,
    line: Option<usize>,
}

impl Ctx<'_> {
    fn err(
        &self,
        field: Option<&str>,
        msg: impl Into<String>,
        fix: impl Into<String>,
    ) -> LoadError {
        LoadError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line,
            field: field.map(str::to_string),
            msg: msg.into(),
            fix: fix.into(),
        }
    }
}

fn read_bounded(path: &Path) -> Result<String, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_INPUT_FILE_BYTES {
        return Err(Ctx { path, line: None }.err(
            None,
            format!(
                "file is {} bytes, over the {MAX_INPUT_FILE_BYTES}-byte limit",
                meta.len()
            ),
            "split it into several files",
        ));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    String::from_utf8(bytes).map_err(|e| {
        Ctx { path, line: None }.err(
            None,
            format!(
                "not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
            "save the file as UTF-8 JSON",
        )
    })
}

/// Splits a file into JSON objects: a single object, a JSON array of objects,
/// or JSONL (one object per line; blank lines allowed). Returns each object with
/// its 1-based line number when the file is JSONL.
/// A JSON object with the 1-based line it came from (JSONL only).
type Located = (Option<usize>, Map<String, Value>);

fn objects(path: &Path, text: &str) -> Result<Vec<Located>, LoadError> {
    let trimmed = text.trim_start();
    let whole: Option<Value> = if trimmed.starts_with('[') {
        Some(serde_json::from_str(text).map_err(|e| {
            Ctx {
                path,
                line: Some(e.line()),
            }
            .err(
                None,
                format!("invalid JSON: {e}"),
                "fix the JSON syntax at that line",
            )
        })?)
    } else {
        // One object spanning the file (pretty-printed JSON) or JSONL.
        serde_json::from_str::<Value>(text).ok()
    };
    let to_obj = |line: Option<usize>, v: Value| match v {
        Value::Object(m) => Ok((line, m)),
        other => Err(Ctx { path, line }.err(
            None,
            format!("expected a JSON object, found {}", json_kind(&other)),
            "write one object per task/prediction",
        )),
    };
    match whole {
        Some(Value::Array(items)) => items.into_iter().map(|v| to_obj(None, v)).collect(),
        Some(v @ Value::Object(_)) => {
            // A one-line file is JSONL with one line: keep its line number.
            let mut lines = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty());
            let line = match (lines.next(), lines.next()) {
                (Some((i, _)), None) => Some(i + 1),
                _ => None,
            };
            Ok(vec![to_obj(line, v)?])
        }
        Some(other) => Err(Ctx { path, line: None }.err(
            None,
            format!(
                "expected a JSON object, an array of objects or JSONL, found {}",
                json_kind(&other)
            ),
            "write one JSON object per line",
        )),
        None => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let ln = Some(i + 1);
                let v: Value = serde_json::from_str(line).map_err(|e| {
                    Ctx { path, line: ln }.err(
                        None,
                        format!("invalid JSON at column {}: {e}", e.column()),
                        "each line must be one complete JSON object (JSONL)",
                    )
                })?;
                out.push(to_obj(ln, v)?);
            }
            Ok(out)
        }
    }
}

/// What a JSON value is, for error messages ("found a number").
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn req_str(c: &Ctx, o: &Map<String, Value>, f: &str, fix: &str) -> Result<String, LoadError> {
    match o.get(f) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(c.err(Some(f), "is empty", fix)),
        None | Some(Value::Null) => Err(c.err(Some(f), "is missing", fix)),
        Some(v) => Err(c.err(
            Some(f),
            format!("must be a string, found {}", json_kind(v)),
            fix,
        )),
    }
}

fn opt_str(c: &Ctx, o: &Map<String, Value>, f: &str) -> Result<Option<String>, LoadError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(c.err(
            Some(f),
            format!("must be a string, found {}", json_kind(v)),
            format!("write `{f}` as a JSON string, or leave it out"),
        )),
    }
}

/// A list of test ids: a JSON list of strings, or a JSON string holding such a
/// list (as SWE-bench's datasets ship `FAIL_TO_PASS` / `PASS_TO_PASS`).
fn test_list(
    c: &Ctx,
    o: &Map<String, Value>,
    f: &str,
    required: bool,
) -> Result<Vec<String>, LoadError> {
    let fix = format!("write `{f}` as a JSON list of test ids, e.g. [\"tests/test_x.py::test_y\"]");
    let list = match o.get(f) {
        None | Some(Value::Null) if required => return Err(c.err(Some(f), "is missing", fix)),
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(a)) => a,
            _ => return Err(c.err(Some(f), "is a string that does not hold a JSON list", fix)),
        },
        Some(Value::Array(a)) => a.clone(),
        Some(v) => {
            return Err(c.err(
                Some(f),
                format!("must be a list, found {}", json_kind(v)),
                fix,
            ));
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, v) in list.into_iter().enumerate() {
        match v {
            Value::String(s) if !s.is_empty() => out.push(s),
            other => {
                return Err(c.err(
                    Some(f),
                    format!(
                        "item {i} must be a non-empty string, found {}",
                        json_kind(&other)
                    ),
                    fix,
                ));
            }
        }
    }
    Ok(out)
}

fn task_from(c: &Ctx, o: &Map<String, Value>, base_dir: &Path) -> Result<Task, LoadError> {
    let instance_id = req_str(
        c,
        o,
        "instance_id",
        "give every task a unique `instance_id` string",
    )?;
    if instance_id.len() > 256
        || instance_id.contains(['/', '\\', '\0'])
        || instance_id.starts_with('.')
    {
        return Err(c.err(
            Some("instance_id"),
            format!("`{}` cannot name a directory", truncate(&instance_id, 80)),
            "use at most 256 characters, no `/`, `\\` or leading `.`",
        ));
    }
    let base_commit = req_str(
        c,
        o,
        "base_commit",
        "set `base_commit` to the commit the patch applies to",
    )?;
    if base_commit.starts_with('-') || base_commit.len() > 256 {
        return Err(c.err(
            Some("base_commit"),
            "is not a commit name",
            "give a commit hash",
        ));
    }
    let source = match (opt_str(c, o, "repo_path")?, opt_str(c, o, "repo_url")?) {
        (Some(p), None) => {
            let p = PathBuf::from(p);
            RepoSource::Path(if p.is_absolute() { p } else { base_dir.join(p) })
        }
        (None, Some(u)) => {
            check_repo_url(&u).map_err(|why| {
                c.err(
                    Some("repo_url"),
                    format!("`{}` {why}", truncate(&u, 200)),
                    "give an http:// or https:// URL of a git repository (fetched through the sandbox's egress proxy), or a local `repo_path`",
                )
            })?;
            RepoSource::Url(u)
        }
        (Some(_), Some(_)) => {
            return Err(c.err(
                Some("repo_path"),
                "both `repo_path` and `repo_url` are set",
                "keep only one of them",
            ));
        }
        (None, None) => {
            return Err(c.err(
                Some("repo_path"),
                "neither `repo_path` nor `repo_url` is set",
                "add `repo_path` (a local git repository) or `repo_url`",
            ));
        }
    };
    let setup = match o.get("setup") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            let mut v = Vec::new();
            for item in a {
                match item {
                    Value::String(s) => v.push(s.clone()),
                    other => {
                        return Err(c.err(
                            Some("setup"),
                            format!("items must be strings, found {}", json_kind(other)),
                            "write `setup` as a list of shell commands",
                        ));
                    }
                }
            }
            v
        }
        Some(v) => {
            return Err(c.err(
                Some("setup"),
                format!("must be a string or a list, found {}", json_kind(v)),
                "write `setup` as a list of shell commands",
            ));
        }
    };
    let test_cmd = req_str(
        c,
        o,
        "test_cmd",
        "add `test_cmd`, the shell command that runs the tests, e.g. \"python -m pytest -rA\"",
    )?;
    let test_format = match opt_str(c, o, "test_format")? {
        None => TestFormat::Auto,
        Some(s) => s.parse().map_err(|_| {
            c.err(
                Some("test_format"),
                format!("unknown format `{}`", truncate(&s, 60)),
                format!("use one of: {}", TestFormat::NAMES.join(", ")),
            )
        })?,
    };
    let timeout = match o.get("timeout") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if s > 0.0 && s <= 7.0 * 86400.0 => Duration::from_secs_f64(s),
            _ => {
                return Err(c.err(
                    Some("timeout"),
                    "is out of range",
                    "give seconds between 0 and 604800",
                ));
            }
        },
        Some(v) => {
            return Err(c.err(
                Some("timeout"),
                format!("must be a number of seconds, found {}", json_kind(v)),
                "write e.g. \"timeout\": 600",
            ));
        }
    };
    let memory = match o.get("memory") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(b) if b >= 1 << 20 => Some(b),
            _ => {
                return Err(c.err(
                    Some("memory"),
                    "is out of range",
                    "give at least 1048576 bytes, or a size such as \"512M\"",
                ));
            }
        },
        Some(Value::String(s)) => match s.parse::<runproof_sandbox::policy::ByteSize>() {
            Ok(b) if b.0 >= 1 << 20 => Some(b.0),
            Ok(_) => {
                return Err(c.err(
                    Some("memory"),
                    "is under 1M",
                    "give a size such as \"512M\" or \"2G\"",
                ));
            }
            Err(e) => return Err(c.err(Some("memory"), e, "give a size such as \"512M\"")),
        },
        Some(v) => {
            return Err(c.err(
                Some("memory"),
                format!("must be a size, found {}", json_kind(v)),
                "write e.g. \"memory\": \"2G\"",
            ));
        }
    };
    let patch = opt_str(c, o, "patch")?.filter(|p| !p.is_empty());
    let test_patch = opt_str(c, o, "test_patch")?.unwrap_or_default();
    for (f, p) in [
        ("patch", patch.as_deref().unwrap_or("")),
        ("test_patch", test_patch.as_str()),
    ] {
        if p.len() > MAX_PATCH_BYTES {
            return Err(c.err(
                Some(f),
                "is over the 16 MiB patch limit",
                "shrink the patch",
            ));
        }
    }
    Ok(Task {
        instance_id,
        repo: opt_str(c, o, "repo")?,
        base_commit,
        patch,
        test_patch,
        fail_to_pass: test_list(c, o, "FAIL_TO_PASS", true)?,
        pass_to_pass: test_list(c, o, "PASS_TO_PASS", false)?,
        source,
        setup,
        test_cmd,
        test_format,
        timeout,
        memory,
    })
}

/// A `repo_url` must be something the egress proxy can carry and nothing
/// git would turn into a local read or a command: `http://` or `https://`
/// with a host, no credentials, no whitespace or control characters.
/// (`file://`, `ext::`, `ssh://`, `git://`, scp-like `host:path` and
/// anything starting with `-` are refused.)
pub fn check_repo_url(u: &str) -> Result<(), &'static str> {
    parse_repo_url(u).map(|_| ())
}

/// The host (IPv6 without brackets) and port a valid `repo_url` connects to.
pub fn parse_repo_url(u: &str) -> Result<(String, u16), &'static str> {
    if u.starts_with('-') {
        return Err("starts with `-`, which git would read as an option");
    }
    if u.len() > 2048 {
        return Err("is over 2048 bytes");
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters");
    }
    let lower = u.to_ascii_lowercase();
    let (rest, default_port) = if let Some(r) = lower.strip_prefix("https://") {
        (r, 443)
    } else if let Some(r) = lower.strip_prefix("http://") {
        (r, 80)
    } else {
        return Err(
            "is not an http:// or https:// URL (file://, ext::, ssh://, git:// and local paths are refused)",
        );
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("carries credentials (`user@`); they would end up in logs");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, after)) => (h, after.strip_prefix(':')),
            None => return Err("has an unclosed `[` in its host"),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host");
    }
    let port = match port {
        None | Some("") => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err("has a bad port"),
        },
    };
    Ok((host.to_string(), port))
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Loads tasks from a JSON object, a JSON array or JSONL. Relative `repo_path`s
/// resolve against the file's directory. Duplicate `instance_id`s are refused.
pub fn load_tasks(path: &Path) -> Result<Vec<Task>, LoadError> {
    let text = read_bounded(path)?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (line, o) in objects(path, &text)? {
        let c = Ctx { path, line };
        let t = task_from(&c, &o, &base_dir)?;
        if !seen.insert(t.instance_id.clone()) {
            return Err(c.err(
                Some("instance_id"),
                format!("`{}` appears twice", t.instance_id),
                "make instance ids unique",
            ));
        }
        out.push(t);
    }
    if out.is_empty() {
        return Err(Ctx { path, line: None }.err(
            None,
            "holds no tasks",
            "add at least one task object",
        ));
    }
    Ok(out)
}

/// Parses one task object (as one line of a tasks file holds it), for
/// callers that receive tasks over the network instead of in a file (the
/// `runproof serve` API and its workers). `origin` names the input in errors
/// (e.g. `request body`); a relative `repo_path` resolves against `base_dir`.
pub fn parse_task(
    obj: &Map<String, Value>,
    origin: &Path,
    base_dir: &Path,
) -> Result<Task, LoadError> {
    task_from(
        &Ctx {
            path: origin,
            line: None,
        },
        obj,
        base_dir,
    )
}

/// The task as a task-file object that [`parse_task`] reads back into the
/// same task (`repo_path` absolute as resolved, lists as JSON lists).
pub fn task_to_json(t: &Task) -> Map<String, Value> {
    let mut o = Map::new();
    let s = |v: &str| Value::String(v.to_string());
    o.insert("instance_id".into(), s(&t.instance_id));
    if let Some(r) = &t.repo {
        o.insert("repo".into(), s(r));
    }
    o.insert("base_commit".into(), s(&t.base_commit));
    if let Some(p) = &t.patch {
        o.insert("patch".into(), s(p));
    }
    o.insert("test_patch".into(), s(&t.test_patch));
    let list = |v: &[String]| Value::Array(v.iter().map(|x| s(x)).collect());
    o.insert("FAIL_TO_PASS".into(), list(&t.fail_to_pass));
    o.insert("PASS_TO_PASS".into(), list(&t.pass_to_pass));
    match &t.source {
        RepoSource::Path(p) => o.insert("repo_path".into(), s(&p.to_string_lossy())),
        RepoSource::Url(u) => o.insert("repo_url".into(), s(u)),
    };
    o.insert("setup".into(), list(&t.setup));
    o.insert("test_cmd".into(), s(&t.test_cmd));
    o.insert("test_format".into(), s(t.test_format.name()));
    o.insert("timeout".into(), serde_json::json!(t.timeout.as_secs_f64()));
    o
}

/// Loads predictions (JSONL, or a JSON array). A null or missing `model_patch`
/// is kept as `None`; a duplicate (instance, model) pair is refused.
pub fn load_predictions(path: &Path) -> Result<Vec<Prediction>, LoadError> {
    let text = read_bounded(path)?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (line, o) in objects(path, &text)? {
        let c = Ctx { path, line };
        let instance_id = req_str(
            &c,
            &o,
            "instance_id",
            "give each prediction the `instance_id` of its task",
        )?;
        let model = match o.get("model_name_or_path") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            None | Some(Value::Null) | Some(Value::String(_)) => "unknown".to_string(),
            Some(v) => {
                return Err(c.err(
                    Some("model_name_or_path"),
                    format!("must be a string, found {}", json_kind(v)),
                    "name the model or agent as a string",
                ));
            }
        };
        if model.len() > 256 || model.contains('\0') {
            return Err(c.err(
                Some("model_name_or_path"),
                "is too long",
                "use at most 256 characters",
            ));
        }
        let model_patch = opt_str(&c, &o, "model_patch")?;
        if model_patch
            .as_ref()
            .is_some_and(|p| p.len() > MAX_PATCH_BYTES)
        {
            return Err(c.err(
                Some("model_patch"),
                "is over the 16 MiB patch limit",
                "shrink the patch",
            ));
        }
        if !seen.insert((instance_id.clone(), model.clone())) {
            return Err(c.err(
                Some("instance_id"),
                format!("`{instance_id}` for model `{model}` appears twice"),
                "keep one prediction per instance and model",
            ));
        }
        out.push(Prediction {
            instance_id,
            model_name_or_path: model,
            model_patch,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const T: &str = r#"{"instance_id":"a__b-1","base_commit":"abc","repo_path":"repo","test_cmd":"pytest -rA","FAIL_TO_PASS":"[\"t.py::x\"]","PASS_TO_PASS":["t.py::y"]}"#;

    #[test]
    fn loads_jsonl_with_string_lists_and_relative_repo_path() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "t.jsonl",
            &format!("{T}\n\n{}\n", T.replace("a__b-1", "a__b-2")),
        );
        let ts = load_tasks(&p).unwrap();
        assert_eq!(ts.len(), 2);
        assert_eq!(ts[0].fail_to_pass, vec!["t.py::x"]);
        assert_eq!(ts[0].pass_to_pass, vec!["t.py::y"]);
        assert_eq!(ts[0].source, RepoSource::Path(d.path().join("repo")));
        assert_eq!(ts[0].timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn error_names_file_line_field_and_fix() {
        let d = tempfile::tempdir().unwrap();
        let bad = T.replace(r#""test_cmd":"pytest -rA","#, "");
        let p = write(d.path(), "t.jsonl", &format!("{T}\n{bad}\n"));
        let e = load_tasks(&p).unwrap_err().to_string();
        assert!(
            e.contains("t.jsonl:2: field `test_cmd`: is missing; fix: add `test_cmd`"),
            "{e}"
        );
        let p = write(d.path(), "u.jsonl", &format!("{T}\n{{oops\n"));
        let e = load_tasks(&p).unwrap_err().to_string();
        assert!(e.contains("u.jsonl:2: invalid JSON"), "{e}");
        let p = write(
            d.path(),
            "v.jsonl",
            &T.replace(r#""[\"t.py::x\"]""#, "\"t.py::x\""),
        );
        let e = load_tasks(&p).unwrap_err().to_string();
        assert!(
            e.contains("field `FAIL_TO_PASS`: is a string that does not hold a JSON list"),
            "{e}"
        );
        let p = write(d.path(), "w.jsonl", &format!("{T}\n{T}\n"));
        assert!(
            load_tasks(&p)
                .unwrap_err()
                .to_string()
                .contains("appears twice")
        );
        let p = write(d.path(), "x.jsonl", &T.replace("a__b-1", "../evil"));
        assert!(
            load_tasks(&p)
                .unwrap_err()
                .to_string()
                .contains("cannot name a directory")
        );
    }

    #[test]
    fn repo_urls_are_http_only_and_hostile_ones_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let with_url = |u: &str| {
            let t = T.replace(
                r#""repo_path":"repo""#,
                &format!(r#""repo_url":{}"#, serde_json::Value::from(u)),
            );
            load_tasks(&write(d.path(), "u.json", &t))
        };
        let ok = with_url("https://github.com/psf/requests.git").unwrap();
        assert_eq!(
            ok[0].source,
            RepoSource::Url("https://github.com/psf/requests.git".into())
        );
        assert_eq!(
            parse_repo_url("http://127.0.0.2:8080/r.git").unwrap(),
            ("127.0.0.2".to_string(), 8080)
        );
        assert_eq!(
            parse_repo_url("https://[::1]/r.git").unwrap(),
            ("::1".to_string(), 443)
        );
        for (url, why) in [
            ("file:///etc", "not an http:// or https:// URL"),
            ("ext::sh -c touch% /tmp/pwned", "whitespace"),
            ("ext::sh", "not an http:// or https:// URL"),
            ("--upload-pack=touch /tmp/pwned", "starts with `-`"),
            ("-uhack", "starts with `-`"),
            (
                "ssh://git@example.com/r.git",
                "not an http:// or https:// URL",
            ),
            ("git@example.com:r.git", "not an http:// or https:// URL"),
            ("/srv/repos/r.git", "not an http:// or https:// URL"),
            ("https://user:token@example.com/r.git", "credentials"),
            ("https://example.com:99999/r.git", "bad port"),
            ("https:///r.git", "no host"),
            ("https://example.com/r.git\n", "control"),
        ] {
            let e = with_url(url).unwrap_err().to_string();
            assert!(
                e.contains("field `repo_url`") && e.contains(why) && e.contains("fix:"),
                "{url}: {e}"
            );
        }
    }

    #[test]
    fn memory_is_a_size_or_bytes() {
        let d = tempfile::tempdir().unwrap();
        let with = |m: &str| {
            let t = T.replace(r#""test_cmd""#, &format!(r#""memory":{m},"test_cmd""#));
            load_tasks(&write(d.path(), "m.json", &t))
        };
        assert_eq!(with(r#""512M""#).unwrap()[0].memory, Some(512 << 20));
        assert_eq!(with("2147483648").unwrap()[0].memory, Some(2 << 30));
        assert_eq!(with("null").unwrap()[0].memory, None);
        for bad in [r#""lots""#, r#""10K""#, "12", "true"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("field `memory`"), "{bad}: {e}");
        }
    }

    #[test]
    fn parse_task_reads_back_task_to_json() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "t.jsonl", T);
        let t = &load_tasks(&p).unwrap()[0];
        let o = task_to_json(t);
        let back = parse_task(&o, Path::new("request"), Path::new("/elsewhere")).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(t).unwrap()
        );
        let mut bad = o.clone();
        bad.remove("test_cmd");
        let e = parse_task(&bad, Path::new("request body"), d.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("request body: field `test_cmd`: is missing"),
            "{e}"
        );
    }

    #[test]
    fn predictions_jsonl_and_array() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "p.jsonl",
            "{\"instance_id\":\"a\",\"model_name_or_path\":\"m\",\"model_patch\":\"diff\"}\n{\"instance_id\":\"b\",\"model_name_or_path\":\"m\",\"model_patch\":null}\n",
        );
        let ps = load_predictions(&p).unwrap();
        assert_eq!(ps[1].model_patch, None);
        let p = write(
            d.path(),
            "p.json",
            "[{\"instance_id\":\"a\",\"model_patch\":\"x\"}]",
        );
        assert_eq!(
            load_predictions(&p).unwrap()[0].model_name_or_path,
            "unknown"
        );
        let p = write(
            d.path(),
            "q.jsonl",
            "{\"instance_id\":\"a\",\"model_patch\":5}\n",
        );
        let e = load_predictions(&p).unwrap_err().to_string();
        assert!(
            e.contains("q.jsonl:1: field `model_patch`: must be a string"),
            "{e}"
        );
    }
}
