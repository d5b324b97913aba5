//! Trajectories: what an agent did, read from the formats agents and runproof
//! write, into one list of [`Action`]s.
//!
//! Formats (detected automatically, or named):
//! - `runproof`: runproof's own audit JSONL, one event per line:
//!   `{"type":"exec","pid":..,"path":..,"argv":[..],"cwd":..,"t":..}`,
//!   `{"type":"connect","addr":..,"port":..}`,
//!   `{"type":"request","host":..,"port":..,"method":..,"url":..,"allowed":bool}`.
//! - `jsonl`: the plain documented JSONL, one object per line, any of
//!   `{"type":"command","command":"git log","output":"..."}`,
//!   `{"type":"request","url":"https://...","method":"GET","allowed":true}`,
//!   `{"type":"read","path":"...","output":"..."}`,
//!   `{"type":"write","path":"...","content":"..."}`,
//!   `{"type":"patch","patch":"diff --git ..."}` (the final patch).
//!   runproof's events are accepted in the same file.
//! - `swe-agent`: a `.traj` JSON object with `trajectory: [{action, observation, ...}]`
//!   and `info.submission`.
//! - `mini-swe-agent`: a JSON object with `messages` (OpenAI chat format; commands in
//!   fenced bash blocks or `tool_calls`) and `info.submission`.
//! - `openhands`: a JSON array (or JSONL, or `{"events": [...]}`) of events with
//!   `action` + `args` (`run`, `run_ipython`, `browse`, `browse_interactive`,
//!   `read`, `write`, `edit`) and observations linked by `cause`; the newer SDK's
//!   `ActionEvent`/`ObservationEvent` shape is read too.
//!
//! Everything here is hostile input: sizes are bounded and nothing is executed.

use crate::error::{Error, Result, read_bounded};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;

/// Largest trajectory file read.
pub const MAX_TRAJECTORY_BYTES: u64 = 512 * 1024 * 1024;
/// Longest text kept per field (command, observation).
pub const MAX_TEXT: usize = 1024 * 1024;
/// Most actions kept.
pub const MAX_ACTIONS: usize = 200_000;

/// Trajectory formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Detect from content.
    Auto,
    /// runproof's audit JSONL.
    Runproof,
    /// The plain documented JSONL.
    Jsonl,
    /// SWE-agent `.traj`.
    SweAgent,
    /// mini-swe-agent trajectory JSON.
    MiniSweAgent,
    /// OpenHands event JSON.
    Openhands,
}

/// What one step did.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionKind {
    /// A shell command line (or a tool command, for SWE-agent).
    Shell {
        /// The command text.
        command: String,
    },
    /// A process execution seen by the sandbox.
    Exec {
        /// The argument vector.
        argv: Vec<String>,
    },
    /// An HTTP(S) request (proxy log, browser, or a URL fetched by a tool).
    Request {
        /// The URL.
        url: String,
        /// HTTP method, if known.
        method: Option<String>,
        /// Whether the proxy let it through (`None` when not known).
        allowed: Option<bool>,
    },
    /// A network connection.
    Connect {
        /// Host or address.
        host: String,
        /// Port.
        port: Option<u16>,
    },
    /// A file read by a tool.
    Read {
        /// The path.
        path: String,
    },
    /// A file written by a tool.
    Write {
        /// The path.
        path: String,
    },
}

/// One step of a trajectory.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    /// Position in the trajectory (0-based, in this list).
    pub index: usize,
    /// Where it came from, e.g. `line 12` or `trajectory[3]`.
    pub origin: String,
    /// What it did.
    pub kind: ActionKind,
    /// What the agent saw back, if recorded.
    #[serde(skip)]
    pub observation: Option<String>,
    /// Text the agent wrote in this step (command, edit content).
    #[serde(skip)]
    pub authored: String,
}

/// A parsed trajectory.
#[derive(Debug, Clone, Serialize)]
pub struct Trajectory {
    /// Detected or given format.
    pub format: Format,
    /// Steps, in order.
    pub actions: Vec<Action>,
    /// The final patch, if the trajectory records it.
    #[serde(skip)]
    pub submission: Option<String>,
}

/// Read a trajectory file.
pub fn load(path: &Path, format: Format) -> Result<Trajectory> {
    let bytes = read_bounded(path, "trajectory", MAX_TRAJECTORY_BYTES)?;
    let text = String::from_utf8_lossy(&bytes);
    parse(&text, format).map_err(|detail| Error::Invalid {
        what: "trajectory",
        path: path.to_path_buf(),
        detail,
    })
}

/// Parse trajectory text. The error says what was expected.
pub fn parse(text: &str, format: Format) -> std::result::Result<Trajectory, String> {
    let whole: Option<Value> = serde_json::from_str(text).ok();
    let format = match format {
        Format::Auto => detect(whole.as_ref(), text)?,
        f => f,
    };
    let mut b = Builder {
        actions: Vec::new(),
        submission: None,
    };
    match format {
        Format::Runproof | Format::Jsonl => parse_jsonl(text, &mut b)?,
        Format::SweAgent => parse_swe_agent(
            whole
                .as_ref()
                .ok_or("SWE-agent .traj must be one JSON object")?,
            &mut b,
        )?,
        Format::MiniSweAgent => parse_mini(
            whole
                .as_ref()
                .ok_or("mini-swe-agent trajectory must be one JSON object")?,
            &mut b,
        )?,
        Format::Openhands => {
            let events: Vec<Value> = match &whole {
                Some(Value::Array(a)) => a.clone(),
                Some(Value::Object(o)) => match o.get("events") {
                    Some(Value::Array(a)) => a.clone(),
                    _ => vec![Value::Object(o.clone())],
                },
                _ => jsonl_values(text)?,
            };
            parse_openhands(&events, &mut b);
        }
        Format::Auto => unreachable!("detected above"),
    }
    Ok(Trajectory {
        format,
        actions: b.actions,
        submission: b.submission,
    })
}

fn detect(whole: Option<&Value>, text: &str) -> std::result::Result<Format, String> {
    match whole {
        Some(Value::Object(o)) if o.get("trajectory").is_some_and(Value::is_array) => {
            Ok(Format::SweAgent)
        }
        Some(Value::Object(o)) if o.get("messages").is_some_and(Value::is_array) => {
            Ok(Format::MiniSweAgent)
        }
        Some(Value::Object(o)) if o.get("events").is_some_and(Value::is_array) => {
            Ok(Format::Openhands)
        }
        Some(Value::Array(a)) => {
            if a.iter().any(|e| {
                e.get("action").is_some()
                    || e.get("observation").is_some()
                    || e.get("kind").is_some()
            }) {
                Ok(Format::Openhands)
            } else {
                Ok(Format::Jsonl)
            }
        }
        Some(Value::Object(o)) if o.get("type").is_some() || o.get("event").is_some() => {
            Ok(Format::Jsonl)
        }
        Some(Value::Object(o)) if o.get("action").is_some() => Ok(Format::Openhands),
        _ => {
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .ok_or("the file is empty")?;
            let v: Value = serde_json::from_str(first).map_err(|e| {
                format!("not JSON or JSONL ({e}); expected a SWE-agent .traj, mini-swe-agent or OpenHands JSON, or JSONL events")
            })?;
            if v.get("type").is_some() || v.get("event").is_some() {
                let kind = v
                    .get("type")
                    .or_else(|| v.get("event"))
                    .and_then(Value::as_str);
                Ok(if matches!(kind, Some("exec") | Some("start")) {
                    Format::Runproof
                } else {
                    Format::Jsonl
                })
            } else if v.get("action").is_some()
                || v.get("observation").is_some()
                || v.get("kind").is_some()
            {
                Ok(Format::Openhands)
            } else {
                Err("unrecognised JSONL: events need a \"type\" field (see the plain JSONL format in the docs)".into())
            }
        }
    }
}

struct Builder {
    actions: Vec<Action>,
    submission: Option<String>,
}

impl Builder {
    fn push(
        &mut self,
        origin: String,
        kind: ActionKind,
        authored: String,
        observation: Option<String>,
    ) {
        if self.actions.len() >= MAX_ACTIONS {
            return;
        }
        let index = self.actions.len();
        self.actions.push(Action {
            index,
            origin,
            kind,
            observation: observation.map(bound),
            authored: bound(authored),
        });
    }

    fn shell(&mut self, origin: String, command: &str, observation: Option<String>) {
        let command = bound(command.to_string());
        self.push(
            origin,
            ActionKind::Shell {
                command: command.clone(),
            },
            command,
            observation,
        );
    }
}

fn bound(mut s: String) -> String {
    crate::git::truncate(&mut s, MAX_TEXT);
    s
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn jsonl_values(text: &str) -> std::result::Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(v) => out.push(v),
            Err(e) => return Err(format!("line {}: {e}", i + 1)),
        }
        if out.len() >= MAX_ACTIONS {
            break;
        }
    }
    Ok(out)
}

fn parse_jsonl(text: &str, b: &mut Builder) -> std::result::Result<(), String> {
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| format!("line {}: {e}; each line must be one JSON object", i + 1))?;
        let origin = format!("line {}", i + 1);
        let output = s(&v, "output").or_else(|| s(&v, "observation"));
        // runproof's own audit log names the kind `event`; the plain JSONL `type`.
        let kind = v
            .get("type")
            .or_else(|| v.get("event"))
            .and_then(Value::as_str)
            .unwrap_or("");
        match kind {
            // An exec attempt on a path that does not exist (PATH search).
            "exec" if v.get("found").and_then(Value::as_bool) == Some(false) => {}
            "exec" => {
                let argv: Vec<String> = v
                    .get("argv")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .take(4096)
                            .map(|x| bound(x.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let authored = argv.join(" ");
                b.push(origin, ActionKind::Exec { argv }, authored, output);
            }
            "command" | "cmd" | "shell" => {
                let c = s(&v, "command")
                    .or_else(|| s(&v, "cmd"))
                    .unwrap_or_default();
                b.shell(origin, &c, output);
            }
            "request" | "http" => {
                let url = s(&v, "url").unwrap_or_else(|| {
                    let host = s(&v, "host").unwrap_or_default();
                    let port = v.get("port").and_then(Value::as_u64).unwrap_or(443);
                    format!("{}://{host}/", if port == 80 { "http" } else { "https" })
                });
                let url = if url.starts_with('/') {
                    // Proxy logs of plain HTTP may hold only the path.
                    format!("http://{}{url}", s(&v, "host").unwrap_or_default())
                } else if !url.contains("://") {
                    // CONNECT and SOCKS requests name only `host:port`.
                    let port = v.get("port").and_then(Value::as_u64).unwrap_or(443);
                    format!("{}://{url}/", if port == 80 { "http" } else { "https" })
                } else {
                    url
                };
                b.push(
                    origin,
                    ActionKind::Request {
                        url: bound(url),
                        method: s(&v, "method"),
                        allowed: v.get("allowed").and_then(Value::as_bool).or_else(|| {
                            // The egress proxy's events say `decision`.
                            v.get("decision")
                                .and_then(Value::as_str)
                                .map(|d| d == "allowed")
                        }),
                    },
                    String::new(),
                    output,
                );
            }
            "connect" => {
                let host = s(&v, "host")
                    .or_else(|| s(&v, "addr"))
                    .or_else(|| s(&v, "address"))
                    .unwrap_or_default();
                let port = v
                    .get("port")
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok());
                b.push(
                    origin,
                    ActionKind::Connect {
                        host: bound(host),
                        port,
                    },
                    String::new(),
                    None,
                );
            }
            "read" => {
                let path = s(&v, "path").unwrap_or_default();
                b.push(
                    origin,
                    ActionKind::Read { path: bound(path) },
                    String::new(),
                    output,
                );
            }
            "write" | "edit" => {
                let path = s(&v, "path").unwrap_or_default();
                let content = s(&v, "content").unwrap_or_default();
                b.push(
                    origin,
                    ActionKind::Write { path: bound(path) },
                    content,
                    output,
                );
            }
            "patch" | "submission" => b.submission = s(&v, "patch").or_else(|| s(&v, "submission")),
            _ => {} // Unknown event types are ignored: the format grows.
        }
    }
    Ok(())
}

fn parse_swe_agent(v: &Value, b: &mut Builder) -> std::result::Result<(), String> {
    let steps = v
        .get("trajectory")
        .and_then(Value::as_array)
        .ok_or("SWE-agent .traj needs a \"trajectory\" array")?;
    for (i, step) in steps.iter().enumerate() {
        let action = s(step, "action").unwrap_or_default();
        if action.trim().is_empty() {
            continue;
        }
        b.shell(format!("trajectory[{i}]"), &action, s(step, "observation"));
    }
    b.submission = v.get("info").and_then(|i| s(i, "submission"));
    Ok(())
}

/// Commands in fenced code blocks of an assistant message.
fn fenced_commands(content: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = content;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let lang_end = after.find('\n').unwrap_or(after.len());
        let lang = after[..lang_end].trim();
        let body = &after[(lang_end + 1).min(after.len())..];
        let Some(end) = body.find("```") else { break };
        if matches!(
            lang,
            "bash" | "sh" | "shell" | "console" | "mswea_bash_command" | ""
        ) {
            out.push(body[..end].to_string());
        }
        rest = &body[end + 3..];
    }
    out
}

fn message_text(m: &Value) -> String {
    match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn parse_mini(v: &Value, b: &mut Builder) -> std::result::Result<(), String> {
    let msgs = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("mini-swe-agent trajectory needs a \"messages\" array")?;
    let mut i = 0;
    while i < msgs.len() {
        let m = &msgs[i];
        if m.get("role").and_then(Value::as_str) != Some("assistant") {
            i += 1;
            continue;
        }
        let mut cmds: Vec<String> = Vec::new();
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            for c in calls {
                let args = c.get("function").and_then(|f| f.get("arguments"));
                let parsed: Option<Value> = match args {
                    Some(Value::String(s)) => serde_json::from_str(s).ok(),
                    Some(o @ Value::Object(_)) => Some(o.clone()),
                    _ => None,
                };
                if let Some(cmd) = parsed
                    .as_ref()
                    .and_then(|p| s(p, "command").or_else(|| s(p, "cmd")))
                {
                    cmds.push(cmd);
                }
            }
        }
        if let Some(actions) = m
            .get("extra")
            .and_then(|e| e.get("actions"))
            .and_then(Value::as_array)
            && cmds.is_empty()
        {
            cmds.extend(actions.iter().filter_map(|a| s(a, "command")));
        }
        if cmds.is_empty() {
            cmds = fenced_commands(&message_text(m));
        }
        // The observation is the next non-assistant message(s).
        let mut obs = String::new();
        let mut j = i + 1;
        while j < msgs.len() && msgs[j].get("role").and_then(Value::as_str) != Some("assistant") {
            obs.push_str(&message_text(&msgs[j]));
            obs.push('\n');
            j += 1;
        }
        for c in cmds {
            b.shell(format!("messages[{i}]"), &c, Some(obs.clone()));
        }
        i = j;
    }
    b.submission = v.get("info").and_then(|i| s(i, "submission"));
    Ok(())
}

fn parse_openhands(events: &[Value], b: &mut Builder) {
    use std::collections::HashMap;
    // Observations by the id of the action that caused them.
    let mut obs: HashMap<String, String> = HashMap::new();
    for e in events {
        let cause = e
            .get("cause")
            .or_else(|| e.get("action_id"))
            .or_else(|| e.get("tool_call_id"));
        let Some(cause) = cause.map(|c| c.to_string().trim_matches('"').to_string()) else {
            continue;
        };
        let content = s(e, "content")
            .or_else(|| {
                e.get("observation")
                    .and_then(|o| s(o, "content").or_else(|| s(o, "output")))
            })
            .unwrap_or_default();
        obs.entry(cause).or_default().push_str(&content);
    }
    for (i, e) in events.iter().enumerate() {
        let origin = format!("events[{i}]");
        let id = e
            .get("id")
            .map(|c| c.to_string().trim_matches('"').to_string())
            .unwrap_or_default();
        let seen = obs.get(&id).cloned();
        // Classic events: "action": "run", "args": {...}
        if let Some(kind) = e.get("action").and_then(Value::as_str) {
            let args = e.get("args").cloned().unwrap_or(Value::Null);
            match kind {
                "run" => b.shell(origin, &s(&args, "command").unwrap_or_default(), seen),
                "run_ipython" => {
                    let code = s(&args, "code").unwrap_or_default();
                    // `!cmd` lines in IPython run shell commands.
                    let shell: Vec<&str> = code
                        .lines()
                        .filter_map(|l| l.trim_start().strip_prefix('!'))
                        .collect();
                    for c in &shell {
                        b.shell(origin.clone(), c, seen.clone());
                    }
                    push_urls(b, &origin, &code, None);
                    if shell.is_empty() {
                        b.push(
                            origin,
                            ActionKind::Shell {
                                command: String::new(),
                            },
                            code,
                            seen,
                        );
                    }
                }
                "browse" => {
                    let url = s(&args, "url").unwrap_or_default();
                    b.push(
                        origin,
                        ActionKind::Request {
                            url: bound(url),
                            method: Some("GET".into()),
                            allowed: None,
                        },
                        String::new(),
                        seen,
                    );
                }
                "browse_interactive" => {
                    let acts = s(&args, "browser_actions").unwrap_or_default();
                    push_urls(b, &origin, &acts, seen);
                }
                "read" => b.push(
                    origin,
                    ActionKind::Read {
                        path: bound(s(&args, "path").unwrap_or_default()),
                    },
                    String::new(),
                    seen,
                ),
                "write" | "edit" => {
                    let content = [
                        s(&args, "content"),
                        s(&args, "new_str"),
                        s(&args, "file_text"),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("\n");
                    b.push(
                        origin,
                        ActionKind::Write {
                            path: bound(s(&args, "path").unwrap_or_default()),
                        },
                        content,
                        seen,
                    );
                }
                _ => {}
            }
            continue;
        }
        // SDK events: {"kind":"ActionEvent","action":{"kind":"ExecuteBashAction","command":..}}
        if let Some(action) = e.get("action").filter(|a| a.is_object()) {
            if let Some(cmd) = s(action, "command") {
                b.shell(origin, &cmd, seen);
            } else if let Some(url) = s(action, "url") {
                b.push(
                    origin,
                    ActionKind::Request {
                        url: bound(url),
                        method: Some("GET".into()),
                        allowed: None,
                    },
                    String::new(),
                    seen,
                );
            } else if let Some(path) = s(action, "path") {
                let content = [s(action, "file_text"), s(action, "new_str")]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("\n");
                if content.is_empty() {
                    b.push(
                        origin,
                        ActionKind::Read { path: bound(path) },
                        String::new(),
                        seen,
                    );
                } else {
                    b.push(
                        origin,
                        ActionKind::Write { path: bound(path) },
                        content,
                        seen,
                    );
                }
            }
        }
    }
}

/// Add a request for every URL in free text (code, browser action scripts).
fn push_urls(b: &mut Builder, origin: &str, text: &str, seen: Option<String>) {
    for url in crate::audit::urls_in(text).into_iter().take(100) {
        b.push(
            origin.to_string(),
            ActionKind::Request {
                url,
                method: None,
                allowed: None,
            },
            String::new(),
            seen.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_blocks() {
        let c =
            fenced_commands("THOUGHT: look\n\n```bash\ngit log --all\n```\nand ```python\nx\n```");
        assert_eq!(c, vec!["git log --all\n"]);
    }

    #[test]
    fn rejects_garbage_with_a_useful_message() {
        let e = parse("not json at all", Format::Auto).unwrap_err();
        assert!(e.contains("JSONL"), "{e}");
        let e = parse("{\"foo\":1}\n", Format::Auto).unwrap_err();
        assert!(e.contains("type"), "{e}");
    }
}
