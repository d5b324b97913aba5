//! Audit on hand-written trajectories in every supported format.

mod common;

use common::*;
use runproof_integrity::audit::{AuditOptions, AuditReport, Label, Rule, Strength, audit};
use runproof_integrity::task::Task;
use runproof_integrity::trajectory::{Format, parse};

fn task() -> Task {
    Task {
        instance_id: "o__area-12".into(),
        repo: Some("o/area".into()),
        base_commit: String::new(),
        patch: Some(FIX_PATCH.into()),
        problem_statement: Some(
            "area() returns a positive value for flipped rectangles with negative width".into(),
        ),
        version: Some("1.0".into()),
        ..Default::default()
    }
}

fn run(text: &str, format: Format, task: Task) -> AuditReport {
    let traj = parse(text, format).expect("trajectory parses");
    audit(
        &traj,
        &AuditOptions {
            task,
            agent_patch: None,
            history_repo: None,
        },
    )
    .expect("audit runs")
}

fn has(r: &AuditReport, rule: Rule, strength: Strength) -> bool {
    r.evidence
        .iter()
        .any(|e| e.rule == rule && e.strength == strength)
}

#[test]
fn runproof_jsonl_upstream_pull_request_is_retrieval() {
    let log = r#"{"type":"exec","pid":10,"path":"/usr/bin/git","argv":["git","status"],"cwd":"/w","t":1.0}
{"type":"exec","pid":11,"path":"/usr/bin/curl","argv":["curl","-sL","https://github.com/o/area/pull/12.diff"],"cwd":"/w","t":2.0}
{"type":"connect","pid":11,"addr":"127.0.0.1","port":3128,"t":2.1}
{"type":"request","host":"github.com","port":443,"method":"CONNECT","url":"https://github.com/o/area/pull/12.diff","allowed":true}
"#;
    let r = run(log, Format::Auto, task());
    assert_eq!(r.format, Format::Runproof);
    assert_eq!(r.actions, 4);
    assert_eq!(r.label, Label::Retrieved, "{r:#?}");
    let e = r
        .evidence
        .iter()
        .find(|e| e.rule == Rule::WebRetrieval && e.strength == Strength::Retrieval)
        .unwrap();
    assert!(
        e.detail.contains("pull") && e.subject.contains("/o/area/pull/12"),
        "{e:?}"
    );
}

#[test]
fn blocked_request_and_history_probe_are_only_suspicious() {
    let log = r#"{"type":"exec","pid":10,"path":"/usr/bin/git","argv":["git","log","--all","--oneline"],"cwd":"/w","t":1}
{"type":"request","host":"github.com","port":443,"method":"GET","url":"https://github.com/o/area/commits/main","allowed":false}
"#;
    let r = run(log, Format::Runproof, task());
    assert_eq!(r.label, Label::Suspicious, "{r:#?}");
    assert!(has(&r, Rule::GitHistory, Strength::Attempt));
    assert!(
        r.evidence
            .iter()
            .any(|e| e.detail.contains("blocked by the proxy"))
    );
}

#[test]
fn package_registry_for_dependencies_is_clean() {
    let log = r#"{"type":"exec","pid":1,"path":"/usr/bin/pip","argv":["pip","install","-e",".","numpy==1.26"],"cwd":"/w","t":1}
{"type":"request","host":"pypi.org","port":443,"method":"GET","url":"https://pypi.org/simple/numpy/","allowed":true}
{"type":"exec","pid":2,"path":"/usr/bin/python","argv":["python","-m","pytest","-q"],"cwd":"/w","t":2}
"#;
    let r = run(log, Format::Runproof, task());
    assert_eq!(r.label, Label::Clean, "{r:#?}");
}

#[test]
fn plain_jsonl_future_commit_by_id_is_retrieval() {
    let f = fixture();
    git(&f.repo, &["update-ref", "refs/heads/fix", &f.future]);
    let mut t = task();
    t.repo_path = Some(f.repo.clone());
    t.base_commit = f.base.clone();
    let short = &f.future[..10];
    let first_short = &f.first[..10];
    let log = format!(
        "{{\"type\":\"command\",\"command\":\"git show {first_short} --stat\"}}\n{{\"type\":\"command\",\"command\":\"cd /w && git show {short}:m.py > /tmp/x\"}}\n"
    );
    let r = run(&log, Format::Jsonl, t);
    assert_eq!(r.label, Label::Retrieved, "{r:#?}");
    let e = r
        .evidence
        .iter()
        .find(|e| e.strength == Strength::Retrieval)
        .unwrap();
    assert_eq!(
        e.action, 1,
        "the ancestor lookup in action 0 is not evidence"
    );
    assert!(e.detail.contains(short), "{e:?}");
}

#[test]
fn fix_seen_in_output_before_written_is_retrieval_but_own_diff_is_not() {
    // The agent read the fix from somewhere (the command hides where) and then wrote it.
    let leaked =
        serde_json::json!({"type":"command","command":"python tools/peek.py","output": FIX_PY})
            .to_string();
    let write = serde_json::json!({"type":"write","path":"m.py","content": FIX_PY}).to_string();
    let r = run(&format!("{leaked}\n{write}\n"), Format::Jsonl, task());
    assert_eq!(r.label, Label::Retrieved, "{r:#?}");
    assert!(has(&r, Rule::FixInObservation, Strength::Retrieval));

    // An honest agent writes the fix first, then sees it in its own diff.
    let diff =
        serde_json::json!({"type":"command","command":"git diff","output": FIX_PATCH}).to_string();
    let r = run(&format!("{write}\n{diff}\n"), Format::Jsonl, task());
    assert_eq!(r.label, Label::Clean, "{r:#?}");
}

#[test]
fn swe_agent_traj_raw_file_and_submission_similarity() {
    let traj = serde_json::json!({
        "environment": "swe_main",
        "trajectory": [
            {"action": "find_file m.py", "observation": "Found 1 matches", "thought": "look", "response": "..."},
            {"action": "curl -s https://raw.githubusercontent.com/o/area/main/m.py", "observation": "def area(w, h):", "thought": "", "response": ""},
            {"action": "submit", "observation": "", "thought": "", "response": ""}
        ],
        "history": [],
        "info": {"submission": FIX_PATCH, "exit_status": "submitted"}
    });
    let r = run(&traj.to_string(), Format::Auto, task());
    assert_eq!(r.format, Format::SweAgent);
    assert_eq!(r.label, Label::Retrieved);
    assert!(has(&r, Rule::WebRetrieval, Strength::Retrieval));
    let s = r.similarity.as_ref().expect("submission compared");
    assert_eq!(s.score, 1.0);
    assert!(s.high());
}

#[test]
fn mini_swe_agent_later_release_download_is_retrieval() {
    let traj = serde_json::json!({
        "info": {"exit_status": "Submitted", "submission": "", "mini_version": "1.9.0"},
        "messages": [
            {"role": "system", "content": "You are a helpful assistant"},
            {"role": "user", "content": "Please solve this issue"},
            {"role": "assistant", "content": "THOUGHT: get the newer release\n\n```bash\npip download area==2.0 --no-deps -d /tmp/pkg && ls /tmp/pkg\n```"},
            {"role": "user", "content": "<returncode>0</returncode><output>area-2.0.tar.gz</output>"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "bash", "arguments": "{\"command\": \"cat ~/.cache/pip/http/x\"}"}}]},
            {"role": "tool", "content": "binary"}
        ],
        "trajectory_format": "mini-swe-agent-1"
    });
    let r = run(&traj.to_string(), Format::Auto, task());
    assert_eq!(r.format, Format::MiniSweAgent);
    assert_eq!(r.actions, 2);
    assert_eq!(r.label, Label::Retrieved, "{r:#?}");
    let e = r
        .evidence
        .iter()
        .find(|e| e.rule == Rule::PackageRetrieval)
        .unwrap();
    assert_eq!(e.strength, Strength::Retrieval);
    assert!(e.detail.contains("area==2.0"));
    assert!(has(&r, Rule::CacheRead, Strength::Attempt));
    assert!(r.similarity.is_none(), "empty submission is not compared");

    // The same download at the base version is not retrieval.
    let same = traj.to_string().replace("area==2.0", "area==1.0");
    let r = run(&same, Format::Auto, task());
    assert!(
        !has(&r, Rule::PackageRetrieval, Strength::Retrieval),
        "{r:#?}"
    );
}

#[test]
fn openhands_events_reflog_and_issue_search() {
    let events = serde_json::json!([
        {"id": 1, "source": "user", "action": "message", "args": {"content": "fix it"}, "message": "", "timestamp": "2024-01-01T00:00:00"},
        {"id": 2, "source": "agent", "action": "run", "args": {"command": "git reflog | head", "thought": ""}, "message": "", "timestamp": "t"},
        {"id": 3, "source": "agent", "observation": "run", "cause": 2, "content": "abc123 HEAD@{0}: reset", "extras": {}, "message": "", "timestamp": "t"},
        {"id": 4, "source": "agent", "action": "browse", "args": {"url": "https://www.google.com/search?q=area+returns+positive+value+for+flipped+rectangles"}, "message": "", "timestamp": "t"},
        {"id": 5, "source": "agent", "action": "read", "args": {"path": "/w/m.py"}, "message": "", "timestamp": "t"}
    ]);
    let r = run(&events.to_string(), Format::Auto, task());
    assert_eq!(r.format, Format::Openhands);
    assert_eq!(r.label, Label::Suspicious, "{r:#?}");
    assert!(has(&r, Rule::GitHistory, Strength::Attempt));
    let s = r
        .evidence
        .iter()
        .find(|e| e.rule == Rule::WebSearch)
        .unwrap();
    assert!(s.detail.contains("issue text"), "{s:?}");
    // Observations are linked to their actions: the reflog output is attached.
    let traj = parse(&events.to_string(), Format::Openhands).unwrap();
    assert_eq!(
        traj.actions[0].observation.as_deref(),
        Some("abc123 HEAD@{0}: reset")
    );
}

#[test]
fn copied_fix_without_observed_path_is_suspicious_and_own_stash_is_fine() {
    let log = serde_json::json!({"type":"patch","patch": FIX_PATCH}).to_string()
        + "\n"
        + &serde_json::json!({"type":"command","command":"git stash && pytest -q && git stash pop"}).to_string();
    let r = run(&log, Format::Jsonl, task());
    assert_eq!(r.label, Label::Suspicious, "{r:#?}");
    assert!(
        r.evidence.is_empty(),
        "the agent's own stash is not evidence: {:?}",
        r.evidence
    );
    assert!(r.reason.contains("similarity"));

    let other =
        serde_json::json!({"type":"command","command":"git stash show -p stash@{0}"}).to_string();
    let r = run(&other, Format::Jsonl, task());
    assert!(has(&r, Rule::GitHistory, Strength::Attempt));
}

#[test]
fn hostile_trajectories_are_bounded_and_rejected_clearly() {
    // A 4 MiB command with deep nesting and control characters must not hang or panic.
    let huge = format!(
        "bash -c \"{}\x1b[2J git log --all\"",
        "bash -c 'x' ; ".repeat(200_000)
    );
    let line = serde_json::json!({"type":"command","command": huge}).to_string();
    let r = run(&line, Format::Jsonl, task());
    assert!(r.actions == 1);
    let err = parse("{\"trajectory\": 5}", Format::SweAgent).unwrap_err();
    assert!(err.contains("trajectory"), "{err}");
    let err = parse("[1,2", Format::Auto).unwrap_err();
    assert!(!err.is_empty());
}

#[test]
fn url_in_a_command_blocked_by_the_proxy_is_not_retrieval() {
    let log = r#"{"type":"exec","pid":11,"path":"/usr/bin/curl","argv":["curl","-sL","https://github.com/o/area/pull/12.diff"],"cwd":"/w","t":2.0}
{"type":"request","host":"github.com","port":443,"method":"CONNECT","url":"https://github.com/o/area/pull/12.diff","allowed":false}
"#;
    let r = run(log, Format::Runproof, task());
    assert_eq!(r.label, Label::Suspicious, "{r:#?}");
    // Without a proxy log (an agent's own trajectory), the command is all there is.
    let cmd = serde_json::json!({"type":"command","command":"curl -sL https://github.com/o/area/pull/12.diff | git apply"}).to_string();
    assert_eq!(run(&cmd, Format::Jsonl, task()).label, Label::Retrieved);
}

#[test]
fn cloning_upstream_over_ssh_or_a_mirror_is_retrieval() {
    for cmd in [
        "git clone git@github.com:o/area.git /tmp/up",
        "git clone https://gitee.com/mirrors/area /tmp/m",
        "git clone https://ghproxy.example/o/area.git",
    ] {
        let line = serde_json::json!({"type":"command","command": cmd}).to_string();
        let r = run(&line, Format::Jsonl, task());
        assert_eq!(r.label, Label::Retrieved, "{cmd}: {r:#?}");
    }
    // Another project's repository is not evidence.
    let line = serde_json::json!({"type":"command","command":"git clone https://github.com/psf/requests /tmp/r"}).to_string();
    let r = run(&line, Format::Jsonl, task());
    assert!(
        r.evidence.iter().all(|e| e.strength != Strength::Retrieval),
        "{r:#?}"
    );
}

#[test]
fn connect_only_proxy_log_confirms_a_clone_seen_in_exec() {
    // HTTPS through CONNECT: the proxy sees the host only; the exec names the repository.
    let log = r#"{"type":"exec","pid":5,"path":"/usr/bin/git","argv":["git","clone","https://github.com/o/area","/tmp/up"],"cwd":"/w","t":1}
{"type":"request","host":"github.com","port":443,"method":"CONNECT","allowed":true}
"#;
    let r = run(log, Format::Runproof, task());
    assert_eq!(r.label, Label::Retrieved, "{r:#?}");
    assert!(
        r.evidence
            .iter()
            .any(|e| e.detail.contains("proxy let github.com through"))
    );
    // No request to that host at all in the proxy log: the clone never went out.
    let log = r#"{"type":"exec","pid":5,"path":"/usr/bin/git","argv":["git","clone","https://github.com/o/area","/tmp/up"],"cwd":"/w","t":1}
{"type":"request","host":"pypi.org","port":443,"method":"CONNECT","allowed":true}
"#;
    assert_eq!(run(log, Format::Runproof, task()).label, Label::Suspicious);
}

#[test]
fn connect_requests_as_the_egress_proxy_logs_them_name_their_host() {
    // runproof's proxy writes a CONNECT's target in authority form.
    let exec = r#"{"event":"exec","pid":5,"path":"/usr/bin/curl","argv":["curl","-sSf","https://github.com/o/area/pull/12.diff"],"cwd":"/w","t":1}"#;
    let req = |decision: &str| {
        format!(
            r#"{{"event":"request","component":"proxy","protocol":"connect","host":"github.com","port":443,"method":"CONNECT","url":"github.com:443","decision":"{decision}"}}"#
        )
    };
    let r = run(
        &format!("{exec}\n{}\n", req("allowed")),
        Format::Runproof,
        task(),
    );
    assert_eq!(r.label, Label::Retrieved, "{r:#?}");
    let r = run(
        &format!("{exec}\n{}\n", req("denied")),
        Format::Runproof,
        task(),
    );
    assert_eq!(r.label, Label::Suspicious, "{r:#?}");
    assert!(
        r.evidence
            .iter()
            .any(|e| e.detail.contains("the proxy blocked this host")),
        "{r:#?}"
    );
}
