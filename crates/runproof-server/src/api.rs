//! Request bodies of the HTTP API, read by hand so that every refusal names
//! the field and the fix: malformed JSON, unknown fields, wrong types,
//! unknown tasks, oversized patches. Nothing here trusts the client.

use crate::job::JobSpec;
use runproof_task::model::{LoadError, MAX_PATCH_BYTES, parse_task};
use runproof_task::{RepoSource, Task, TestRunner};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most predictions in one eval batch.
pub const MAX_BATCH: usize = 10_000;
/// Most reruns a job may ask for.
pub const MAX_RERUNS: u32 = 10;

/// An API error: HTTP status plus a JSON body
/// `{"error": {"code", "message", "field", "fix"}}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub fix: String,
}

impl ApiError {
    pub fn new(
        status: u16,
        code: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            fix: fix.into(),
        }
    }
    pub fn field(mut self, f: impl Into<String>) -> Self {
        self.field = Some(f.into());
        self
    }
    pub fn bad(field: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        ApiError::new(400, "invalid_field", message, fix).field(field)
    }
    pub fn body(&self) -> Value {
        serde_json::json!({ "error": self })
    }
}

/// The tasks this server grades by instance id, and where inline tasks'
/// repositories may live.
#[derive(Default, Clone)]
pub struct Catalog {
    pub tasks: BTreeMap<String, Task>,
    /// Inline tasks' `repo_path` must resolve inside one of these (absolute,
    /// canonical). The first is the base for relative paths.
    pub repo_roots: Vec<PathBuf>,
    /// The runner that grades here: a `repo_url` its network policy would
    /// not reach is refused when the job is submitted, not when it runs.
    /// `None`: URLs are not checked here (the runner still refuses them).
    pub runner: Option<Arc<dyn TestRunner>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("tasks", &self.tasks.len())
            .field("repo_roots", &self.repo_roots)
            .field("runner", &self.runner.as_ref().map(|r| r.name()))
            .finish()
    }
}

impl Catalog {
    /// Loads task files (each with `runproof_task::load_tasks`); their
    /// directories become repository roots, after `extra_roots`.
    pub fn load(files: &[PathBuf], extra_roots: &[PathBuf]) -> Result<Catalog, String> {
        let mut c = Catalog::default();
        for r in extra_roots {
            let canon = r.canonicalize().map_err(|e| {
                format!(
                    "--repo-root {}: {e}; give an existing directory",
                    r.display()
                )
            })?;
            c.repo_roots.push(canon);
        }
        for f in files {
            let abs = std::path::absolute(f).unwrap_or_else(|_| f.clone());
            let tasks = runproof_task::load_tasks(&abs).map_err(|e| e.to_string())?;
            if let Some(dir) = abs.parent().and_then(|d| d.canonicalize().ok())
                && !c.repo_roots.contains(&dir)
            {
                c.repo_roots.push(dir);
            }
            for t in tasks {
                if c.tasks.contains_key(&t.instance_id) {
                    return Err(format!(
                        "{}: instance `{}` is also in an earlier --tasks file; keep instance ids unique across the files",
                        f.display(),
                        t.instance_id
                    ));
                }
                c.tasks.insert(t.instance_id.clone(), t);
            }
        }
        Ok(c)
    }

    /// Every `repo_url` of the loaded task files must be fetchable by
    /// `runner`: a server that could never grade a task says so at start.
    pub fn check_fetches(&self) -> Result<(), String> {
        let Some(r) = &self.runner else { return Ok(()) };
        for t in self.tasks.values() {
            if let RepoSource::Url(u) = &t.source {
                r.check_fetch(u)
                    .map_err(|e| format!("--tasks: instance `{}`: {e}", t.instance_id))?;
            }
        }
        Ok(())
    }

    fn get(&self, field: &str, id: &str) -> Result<&Task, ApiError> {
        self.tasks.get(id).ok_or_else(|| {
            let known: Vec<&str> = self.tasks.keys().take(10).map(String::as_str).collect();
            ApiError::new(
                404,
                "unknown_task",
                format!(
                    "no task `{}` on this server (it has {}{})",
                    clip(id, 120),
                    self.tasks.len(),
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", known.join(", "))
                    }
                ),
                "use an instance_id from GET /api/tasks, or send the task object in `task`",
            )
            .field(field)
        })
    }

    /// An inline task object, with its repository confined to the roots.
    fn inline(&self, v: &Value) -> Result<Task, ApiError> {
        let Value::Object(o) = v else {
            return Err(ApiError::bad(
                "task",
                format!(
                    "must be an object, found {}",
                    runproof_task::model::json_kind(v)
                ),
                "send a SWE-bench task object (instance_id, base_commit, repo_path, test_cmd, FAIL_TO_PASS, ...)",
            ));
        };
        let base = self
            .repo_roots
            .first()
            .cloned()
            .unwrap_or_else(|| PathBuf::from("/nonexistent"));
        let t = parse_task(o, Path::new("request body `task`"), &base).map_err(|e| match e {
            LoadError::Invalid {
                field, msg, fix, ..
            } => ApiError::bad(
                &format!("task.{}", field.as_deref().unwrap_or("")),
                msg,
                fix,
            ),
            other => ApiError::bad("task", other.to_string(), "fix the task object"),
        })?;
        if let (RepoSource::Url(u), Some(r)) = (&t.source, &self.runner) {
            r.check_fetch(u).map_err(|e| {
                ApiError::new(
                    422,
                    "repo_url_not_allowed",
                    clip(&e, 500),
                    "start the server with --allow HOST (and --allow-address IP for a private address) so the clone can go through runproof's egress proxy, or use a repo_path under a --repo-root",
                )
                .field("task.repo_url")
            })?;
        }
        if let RepoSource::Path(p) = &t.source {
            let inside = p
                .canonicalize()
                .ok()
                .filter(|c| self.repo_roots.iter().any(|r| c.starts_with(r)));
            if inside.is_none() {
                return Err(ApiError::new(
                    422,
                    "repo_not_allowed",
                    format!(
                        "repo_path `{}` is not a directory inside the ones this server grades from",
                        clip(&p.to_string_lossy(), 200)
                    ),
                    "put the repository under a --tasks file's directory or a --repo-root of `runproof serve`, or use repo_url",
                )
                .field("task.repo_path"));
            }
        }
        Ok(t)
    }
}

pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut o: String = s.chars().take(max).collect();
    o.push('…');
    o
}

/// Parses a body as one JSON object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "malformed_json",
            format!(
                "request body is not valid JSON (line {}, column {}): {e}",
                e.line(),
                e.column()
            ),
            "send one JSON object with Content-Type: application/json",
        )
    })?;
    match v {
        Value::Object(o) => Ok(o),
        other => Err(ApiError::new(
            400,
            "malformed_json",
            format!(
                "request body must be a JSON object, found {}",
                runproof_task::model::json_kind(&other)
            ),
            "send one JSON object",
        )),
    }
}

fn no_unknown(o: &Map<String, Value>, prefix: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad(
            &format!("{prefix}{}", clip(k, 80)),
            "unknown field",
            format!("remove it; the fields are: {}", allowed.join(", ")),
        ));
    }
    Ok(())
}

fn opt_string(o: &Map<String, Value>, prefix: &str, f: &str) -> Result<Option<String>, ApiError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(ApiError::bad(
            &format!("{prefix}{f}"),
            format!(
                "must be a string, found {}",
                runproof_task::model::json_kind(v)
            ),
            format!("send `{f}` as a JSON string"),
        )),
    }
}

fn model_name(o: &Map<String, Value>, prefix: &str, default: &str) -> Result<String, ApiError> {
    let m = opt_string(o, prefix, "model_name_or_path")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string());
    if m.len() > 256 || m.contains('\0') {
        return Err(ApiError::bad(
            &format!("{prefix}model_name_or_path"),
            "is longer than 256 bytes or holds a NUL",
            "use a short agent or model name",
        ));
    }
    Ok(m)
}

/// `model_patch`: the key must be there; null means no patch.
fn patch(o: &Map<String, Value>, prefix: &str, required: bool) -> Result<Option<String>, ApiError> {
    let f = format!("{prefix}model_patch");
    if required && !o.contains_key("model_patch") {
        return Err(ApiError::bad(
            &f,
            "is missing",
            "send the patch to grade as a unified diff string in `model_patch` (null for a prediction with no patch)",
        ));
    }
    let p = opt_string(o, prefix, "model_patch")?;
    if p.as_ref().is_some_and(|p| p.len() > MAX_PATCH_BYTES) {
        return Err(ApiError::new(
            413,
            "patch_too_large",
            format!("is over the {MAX_PATCH_BYTES}-byte patch limit"),
            "shrink the patch",
        )
        .field(f));
    }
    Ok(p)
}

fn reruns(o: &Map<String, Value>) -> Result<u32, ApiError> {
    match o.get("reruns") {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= MAX_RERUNS as u64) => {
            Ok(n.as_u64().unwrap_or(0) as u32)
        }
        Some(v) => Err(ApiError::bad(
            "reruns",
            format!("must be a whole number from 0 to {MAX_RERUNS}, found {v}"),
            format!("send e.g. \"reruns\": 1 (at most {MAX_RERUNS})"),
        )),
    }
}

const VERIFY_FIELDS: &[&str] = &[
    "instance_id",
    "task",
    "prediction",
    "model_patch",
    "model_name_or_path",
    "reruns",
];
const PREDICTION_FIELDS: &[&str] = &["instance_id", "model_name_or_path", "model_patch"];

/// `POST /api/jobs`: one prediction for one task.
///
/// The task is `instance_id` (one of the server's tasks) or `task` (an inline
/// SWE-bench task object); the patch is `model_patch` (with an optional
/// `model_name_or_path`), or `prediction`, a SWE-bench prediction line whose
/// `instance_id` names the task.
pub fn verify_request(body: &[u8], cat: &Catalog) -> Result<JobSpec, ApiError> {
    let o = object(body)?;
    no_unknown(&o, "", VERIFY_FIELDS)?;
    let reruns = reruns(&o)?;
    let (pred_id, model, patch) = match o.get("prediction") {
        Some(Value::Object(p)) => {
            for f in ["model_patch", "model_name_or_path", "instance_id"] {
                if o.contains_key(f) {
                    return Err(ApiError::bad(
                        f,
                        "is given both here and in `prediction`",
                        "send the prediction's fields inside `prediction` only",
                    ));
                }
            }
            no_unknown(p, "prediction.", PREDICTION_FIELDS)?;
            let id = opt_string(p, "prediction.", "instance_id")?.ok_or_else(|| {
                ApiError::bad(
                    "prediction.instance_id",
                    "is missing",
                    "name the prediction's task in `instance_id`",
                )
            })?;
            (
                Some(id),
                model_name(p, "prediction.", "unknown")?,
                patch(p, "prediction.", false)?,
            )
        }
        Some(v) => {
            return Err(ApiError::bad(
                "prediction",
                format!(
                    "must be an object, found {}",
                    runproof_task::model::json_kind(v)
                ),
                "send a SWE-bench prediction {instance_id, model_name_or_path, model_patch}",
            ));
        }
        None => (None, model_name(&o, "", "patch")?, patch(&o, "", true)?),
    };
    let id_field = if o.contains_key("prediction") {
        "prediction.instance_id"
    } else {
        "instance_id"
    };
    let id = match (opt_string(&o, "", "instance_id")?, pred_id) {
        (Some(a), None) | (None, Some(a)) => Some(a),
        _ => None,
    };
    let task = match (o.get("task"), id) {
        (Some(v), id) => {
            let t = cat.inline(v)?;
            if let Some(id) = id.filter(|id| *id != t.instance_id) {
                return Err(ApiError::bad(
                    id_field,
                    format!(
                        "is `{}` but the task's instance_id is `{}`",
                        clip(&id, 120),
                        clip(&t.instance_id, 120)
                    ),
                    "make them the same",
                ));
            }
            t
        }
        (None, Some(id)) => cat.get("instance_id", &id)?.clone(),
        (None, None) => {
            return Err(ApiError::bad(
                "instance_id",
                "no task given",
                "send `instance_id` (a task of this server, see GET /api/tasks) or `task` (a task object)",
            ));
        }
    };
    Ok(JobSpec::new(&task, &model, patch, reruns))
}

/// `POST /api/evals`: a batch of SWE-bench predictions for the server's tasks.
pub fn eval_request(body: &[u8], cat: &Catalog) -> Result<Vec<JobSpec>, ApiError> {
    let o = object(body)?;
    no_unknown(&o, "", &["predictions", "reruns"])?;
    let reruns = reruns(&o)?;
    let preds = match o.get("predictions") {
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_BATCH => a,
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(ApiError::bad(
                "predictions",
                "is empty",
                "send at least one prediction",
            ));
        }
        Some(Value::Array(a)) => {
            return Err(ApiError::new(
                413,
                "batch_too_large",
                format!("holds {} predictions, over {MAX_BATCH}", a.len()),
                "split the batch",
            )
            .field("predictions"));
        }
        None => {
            return Err(ApiError::bad(
                "predictions",
                "is missing",
                "send `predictions`: a list of {instance_id, model_name_or_path, model_patch}",
            ));
        }
        Some(v) => {
            return Err(ApiError::bad(
                "predictions",
                format!(
                    "must be a list, found {}",
                    runproof_task::model::json_kind(v)
                ),
                "send a JSON list of predictions",
            ));
        }
    };
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(preds.len());
    for (k, p) in preds.iter().enumerate() {
        let pre = format!("predictions[{k}].");
        let Value::Object(p) = p else {
            return Err(ApiError::bad(
                &format!("predictions[{k}]"),
                format!(
                    "must be an object, found {}",
                    runproof_task::model::json_kind(p)
                ),
                "send each prediction as {instance_id, model_name_or_path, model_patch}",
            ));
        };
        no_unknown(p, &pre, PREDICTION_FIELDS)?;
        let id = opt_string(p, &pre, "instance_id")?.ok_or_else(|| {
            ApiError::bad(
                &format!("{pre}instance_id"),
                "is missing",
                "name the prediction's task",
            )
        })?;
        let task = cat.get(&format!("{pre}instance_id"), &id)?;
        let model = model_name(p, &pre, "unknown")?;
        if !seen.insert((id.clone(), model.clone())) {
            return Err(ApiError::bad(
                &format!("{pre}instance_id"),
                format!(
                    "`{}` for model `{}` appears twice",
                    clip(&id, 120),
                    clip(&model, 120)
                ),
                "keep one prediction per instance and model",
            ));
        }
        out.push(JobSpec::new(task, &model, patch(p, &pre, false)?, reruns));
    }
    Ok(out)
}
