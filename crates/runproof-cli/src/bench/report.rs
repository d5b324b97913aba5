//! The bench scoreboard: one row per (agent, task) run, the per-agent
//! comparison, the task × agent matrix, and the text, JSON and HTML views.
//!
//! Every string in a row comes from a task, an agent or a log and is hostile:
//! rows hold bounded copies, and the HTML view escapes every one of them.

use serde_json::{Value, json};

/// One run: one agent on one task.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub instance_id: String,
    pub agent: String,
    /// The grader's outcome (`resolved`, `unresolved`, `empty_patch`, ...) or `infrastructure`.
    pub verdict: String,
    pub resolved: bool,
    pub infrastructure: bool,
    /// `clean`, `retrieved`, `suspicious`; `None` when the run was not audited.
    pub label: Option<String>,
    pub reason: String,
    pub evidence: Vec<String>,
    pub evidence_total: usize,
    pub similarity: Option<f64>,
    /// Requests the egress proxy refused.
    pub blocked_requests: usize,
    /// The first few distinct requests the proxy refused (`METHOD host:port`).
    pub blocked: Vec<String>,
    /// Retrieval attempts (web, search, package) the proxy refused.
    pub retrieval_refused: Vec<String>,
    /// Model calls through the gateway, and how many it refused (with the
    /// first few distinct reasons).
    pub model_calls: usize,
    pub model_calls_refused: usize,
    pub model_refusals: Vec<String>,
    /// Why the gateway stopped the run (`runaway_loop`,
    /// `spend_without_change`, `budget_exhausted`).
    pub stopped: Option<String>,
    /// What the spend-without-change check watched (the run's upper
    /// layer) and how completely: the `change detection` layer's state and detail.
    pub change_detection: Option<String>,
    /// Changes the verifier neutralised as grader gaming (`path: why`).
    pub gaming: Vec<String>,
    /// The network the run had.
    pub network: String,
    pub leaks_after_prepare: Option<usize>,
    pub agent_exit: Option<i32>,
    pub agent_timed_out: bool,
    pub agent_output_bytes: u64,
    pub agent_log_tail: String,
    pub patch_lines: usize,
    pub error: Option<String>,
    pub agent_s: f64,
    /// CPU seconds (user + system) the agent's sandbox used.
    pub agent_cpu_s: f64,
    pub wall_s: f64,
    /// Hostile behaviour seen in the audit log (connections around the
    /// proxy, credential stores named, secret searches).
    pub security: Vec<String>,
    /// What the run spent (model calls through the gateway plus compute);
    /// `None` when it was not metered.
    pub cost_usd: Option<f64>,
    /// The run's directory under `--out`, relative to it.
    pub dir: String,
}

impl Row {
    pub fn new(id: &str, agent: &str) -> Row {
        Row {
            instance_id: bound(id, 200),
            agent: bound(agent, 200),
            verdict: "not_run".into(),
            ..Row::default()
        }
    }

    /// The scoreboard bucket. A resolution counts as clean only when the
    /// audit found no retrieval or probe and the run neither gamed the
    /// grader nor raised a security flag.
    pub fn category(&self) -> &'static str {
        if self.infrastructure {
            "infrastructure"
        } else if !self.resolved {
            "unresolved"
        } else {
            match self.label.as_deref() {
                Some("retrieved") => "resolved_retrieved",
                Some("clean") if self.gaming.is_empty() && self.security.is_empty() => {
                    "resolved_clean"
                }
                _ => "resolved_suspicious",
            }
        }
    }

    /// What tells this run apart, in a few words: the outcome, then the
    /// audit label and what the run did that matters.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = vec![
            match self.verdict.as_str() {
                _ if self.infrastructure => "infrastructure failure",
                "empty_patch" => "no patch",
                "patch_did_not_apply" => "patch did not apply",
                "patch_refused" => "patch refused",
                v => v,
            }
            .to_string(),
        ];
        match self.label.as_deref() {
            Some("clean") if self.category() == "resolved_clean" => parts.push("clean".into()),
            Some(l @ ("retrieved" | "suspicious")) => parts.push(l.into()),
            _ => {}
        }
        if !self.gaming.is_empty() {
            parts.push("GAMING".into());
        }
        if !self.security.is_empty() {
            parts.push("SECURITY".into());
        }
        if !self.retrieval_refused.is_empty() {
            parts.push("retrieval refused".into());
        }
        match self.stopped.as_deref() {
            Some("runaway_loop") => parts.push("stopped: runaway loop".into()),
            Some("spend_without_change") => parts.push("stopped: spending without changes".into()),
            Some("budget_exhausted") => parts.push("stopped: budget spent".into()),
            Some(other) => parts.push(format!("stopped: {}", bound(other, 40))),
            None if self.agent_timed_out => parts.push("timed out".into()),
            None => {}
        }
        parts.join(", ")
    }

    /// The most telling line of evidence for the text table.
    fn headline(&self) -> String {
        let mut ev = Vec::new();
        if let Some(f) = self.security.first() {
            ev.push(format!("security: {f}"));
        }
        if let Some(g) = self.gaming.first() {
            ev.push(format!("neutralised {g}"));
        }
        if let Some(s) = &self.stopped {
            ev.push(format!(
                "gateway stopped the run ({s}) after {} model call(s), {} refused",
                self.model_calls, self.model_calls_refused
            ));
        }
        if self.blocked_requests > 0 {
            ev.push(format!(
                "{} request(s) blocked by the proxy ({})",
                self.blocked_requests,
                self.blocked.join(", ")
            ));
        }
        if let Some(e) = self.evidence.first() {
            ev.push(e.clone());
        } else if let Some(e) = &self.error {
            ev.push(e.clone());
        } else if ev.is_empty() {
            ev.push(self.reason.clone());
        }
        ev.join("; ")
    }

    fn to_json(&self) -> Value {
        json!({
            "instance_id": self.instance_id,
            "agent": self.agent,
            "category": self.category(),
            "summary": self.summary(),
            "verdict": self.verdict,
            "resolved": self.resolved,
            "label": self.label,
            "reason": self.reason,
            "evidence": self.evidence,
            "evidence_total": self.evidence_total,
            "similarity": self.similarity,
            "gaming": self.gaming,
            "security": self.security,
            "network": self.network,
            "blocked_requests": self.blocked_requests,
            "blocked": self.blocked,
            "retrieval_refused": self.retrieval_refused,
            "model_calls": self.model_calls,
            "model_calls_refused": self.model_calls_refused,
            "model_refusals": self.model_refusals,
            "stopped": self.stopped,
            "change_detection": self.change_detection,
            "future_commits_after_prepare": self.leaks_after_prepare,
            "agent_exit": self.agent_exit,
            "agent_timed_out": self.agent_timed_out,
            "agent_output_bytes": self.agent_output_bytes,
            "patch_lines": self.patch_lines,
            "error": self.error,
            "agent_s": self.agent_s,
            "agent_cpu_s": self.agent_cpu_s,
            "wall_s": self.wall_s,
            "cost_usd": self.cost_usd,
            "cost_note": if self.cost_usd.is_none() { COST_NOTE } else { METERED_NOTE },
            "dir": self.dir,
        })
    }
}

const COST_NOTE: &str = "unknown: the run was not metered";
const METERED_NOTE: &str = "model calls through the metered gateway plus compute";

/// `$1.2345`; `$0.000123` below a cent and `<$0.000001` below that, so
/// small is not shown as zero; or `unknown`.
fn money(c: Option<f64>) -> String {
    match c {
        None => "unknown".to_string(),
        Some(c) if c > 0.0 && c < 0.000_001 => "<$0.000001".to_string(),
        Some(c) if c > 0.0 && c < 0.01 => format!("${c:.6}"),
        Some(c) => format!("${c:.4}"),
    }
}

/// Cost per clean fix: `n/a` without one.
fn per_clean(s: &Summary) -> String {
    if s.count("resolved_clean") == 0 {
        "n/a".into()
    } else {
        money(s.cost_per_clean())
    }
}

/// Cut `s` to at most `max` characters, marking the cut.
pub fn bound(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// The last `max` characters of `s`.
pub fn tail(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        s.to_string()
    } else {
        let t: String = s.chars().skip(n - max).collect();
        format!("…{t}")
    }
}

/// Escape for HTML text and attribute values (the dashboard's escaper;
/// sizes are bounded where the report's data is collected).
pub fn esc(s: &str) -> String {
    runproof_server::dashboard::esc(s, usize::MAX)
}

/// An agent as the report shows it.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub name: String,
    pub command: String,
    pub description: Option<String>,
    pub network: String,
}

pub struct Scoreboard {
    agents: Vec<AgentInfo>,
    tasks: Vec<String>,
    rows: Vec<Row>,
    wall_s: f64,
    /// The network every run gets unless widened.
    default_network: String,
}

const CATEGORIES: [(&str, &str, &str); 5] = [
    ("resolved_clean", "resolved, clean", "#2e7d32"),
    ("resolved_retrieved", "resolved, retrieved", "#c62828"),
    ("resolved_suspicious", "resolved, suspicious", "#ef6c00"),
    ("unresolved", "unresolved", "#9e9e9e"),
    ("infrastructure", "infrastructure failure", "#5e35b1"),
];

/// One agent's numbers.
struct Summary<'a> {
    info: &'a AgentInfo,
    rows: Vec<&'a Row>,
}

impl Summary<'_> {
    fn count(&self, cat: &str) -> usize {
        self.rows.iter().filter(|r| r.category() == cat).count()
    }
    fn runs_where(&self, f: impl Fn(&Row) -> bool) -> usize {
        self.rows.iter().filter(|r| f(r)).count()
    }
    /// Runs that reached a verdict (infrastructure failures do not count against the agent).
    fn graded(&self) -> usize {
        self.rows.len() - self.count("infrastructure")
    }
    /// (all resolutions, clean resolutions only) over graded runs.
    fn rates(&self) -> (Option<f64>, Option<f64>) {
        let g = self.graded();
        if g == 0 {
            return (None, None);
        }
        let all = self.runs_where(|r| r.resolved && !r.infrastructure);
        (
            Some(all as f64 / g as f64),
            Some(self.count("resolved_clean") as f64 / g as f64),
        )
    }
    /// Total cost, when every run was metered.
    fn cost(&self) -> Option<f64> {
        if self.rows.is_empty() {
            return None;
        }
        self.rows.iter().map(|r| r.cost_usd).sum()
    }
    fn cost_per_clean(&self) -> Option<f64> {
        let clean = self.count("resolved_clean");
        self.cost().filter(|_| clean > 0).map(|c| c / clean as f64)
    }
    fn agent_s(&self) -> f64 {
        self.rows.iter().map(|r| r.wall_s).sum()
    }
    fn gaming(&self) -> usize {
        self.runs_where(|r| !r.gaming.is_empty())
    }
    fn security(&self) -> usize {
        self.runs_where(|r| !r.security.is_empty())
    }
    fn stopped(&self) -> usize {
        self.runs_where(|r| r.stopped.is_some())
    }
    fn retrieval_refused(&self) -> usize {
        self.runs_where(|r| !r.retrieval_refused.is_empty())
    }
    fn suspicious(&self) -> usize {
        self.runs_where(|r| r.label.as_deref() == Some("suspicious"))
    }

    fn to_json(&self) -> Value {
        let (all, clean) = self.rates();
        let counts: serde_json::Map<String, Value> = CATEGORIES
            .iter()
            .map(|(k, _, _)| (k.to_string(), json!(self.count(k))))
            .collect();
        let cost = self.cost();
        json!({
            "name": self.info.name,
            "command": self.info.command,
            "description": self.info.description,
            "network": self.info.network,
            "runs": self.rows.len(),
            "counts": counts,
            "resolve_rate": all,
            "resolve_rate_clean": clean,
            "runs_labelled_suspicious": self.suspicious(),
            "runs_gaming": self.gaming(),
            "runs_with_security_flags": self.security(),
            "runs_stopped_by_gateway": self.stopped(),
            "runs_with_retrieval_refused": self.retrieval_refused(),
            "proxy_requests_refused": self.rows.iter().map(|r| r.blocked_requests).sum::<usize>(),
            "model_calls": self.rows.iter().map(|r| r.model_calls).sum::<usize>(),
            "model_calls_refused": self.rows.iter().map(|r| r.model_calls_refused).sum::<usize>(),
            "cost_usd": cost,
            "cost_per_clean_resolution_usd": self.cost_per_clean(),
            "cost_note": if cost.is_none() { COST_NOTE } else { METERED_NOTE },
            "agent_wall_s": self.agent_s(),
        })
    }
}

impl Scoreboard {
    pub fn new(
        agents: Vec<AgentInfo>,
        tasks: Vec<String>,
        rows: Vec<Row>,
        wall_s: f64,
        default_network: &str,
    ) -> Scoreboard {
        Scoreboard {
            agents,
            tasks: tasks.iter().map(|t| bound(t, 200)).collect(),
            rows,
            wall_s,
            default_network: default_network.to_string(),
        }
    }

    fn summaries(&self) -> Vec<Summary<'_>> {
        self.agents
            .iter()
            .map(|a| Summary {
                info: a,
                rows: self.rows.iter().filter(|r| r.agent == a.name).collect(),
            })
            .collect()
    }

    fn cell(&self, task: &str, agent: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.instance_id == task && r.agent == agent)
    }

    pub fn infrastructure(&self) -> usize {
        self.rows.iter().filter(|r| r.infrastructure).count()
    }

    pub fn to_json(&self) -> Value {
        let matrix: Vec<Value> = self
            .tasks
            .iter()
            .map(|t| {
                let cells: Vec<Value> = self
                    .agents
                    .iter()
                    .map(|a| match self.cell(t, &a.name) {
                        Some(r) => json!({"agent": a.name, "category": r.category(), "summary": r.summary()}),
                        None => json!({"agent": a.name, "category": null, "summary": "not run"}),
                    })
                    .collect();
                json!({"instance_id": t, "cells": cells})
            })
            .collect();
        json!({
            "tasks": self.tasks,
            "runs": self.rows.len(),
            "wall_s": self.wall_s,
            "default_network": self.default_network,
            "agents": self.summaries().iter().map(Summary::to_json).collect::<Vec<_>>(),
            "matrix": matrix,
            "rows": self.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        })
    }

    pub fn to_text(&self) -> String {
        let mut o = String::new();
        o.push_str(&format!(
            "runproof bench: {} agent(s) × {} task(s), {} run(s) in {:.1}s\nnetwork: {}\n\n",
            self.agents.len(),
            self.tasks.len(),
            self.rows.len(),
            self.wall_s,
            self.default_network
        ));
        let w = self
            .agents
            .iter()
            .map(|a| one_line(&a.name, 24).chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        o.push_str(&format!(
            "{:<w$}  {:>5} {:>9} {:>10} {:>10} {:>5}  {:>6} {:>6}  {:>6} {:>8} {:>7} {:>9}  {:>10} {:>10} {:>8}\n",
            "agent",
            "clean",
            "retrieved",
            "suspicious",
            "unresolved",
            "infra",
            "rate",
            "clean%",
            "gaming",
            "security",
            "stopped",
            "refused",
            "cost",
            "per clean",
            "time"
        ));
        for s in self.summaries() {
            let (all, clean) = s.rates();
            o.push_str(&format!(
                "{:<w$}  {:>5} {:>9} {:>10} {:>10} {:>5}  {:>6} {:>6}  {:>6} {:>8} {:>7} {:>9}  {:>10} {:>10} {:>7.1}s\n",
                one_line(&s.info.name, 24),
                s.count("resolved_clean"),
                s.count("resolved_retrieved"),
                s.count("resolved_suspicious"),
                s.count("unresolved"),
                s.count("infrastructure"),
                pct(all),
                pct(clean),
                s.gaming(),
                s.security(),
                s.stopped(),
                s.retrieval_refused(),
                money(s.cost()),
                per_clean(&s),
                s.agent_s()
            ));
        }
        o.push_str(
            "(clean%: resolved without retrieval, probes, gaming or security flags; \
             refused: runs whose retrieval attempt the proxy refused; time: the agent's runs added up)\n\n",
        );
        let tw = self
            .tasks
            .iter()
            .map(|t| one_line(t, 24).chars().count())
            .max()
            .unwrap_or(4)
            .max(4);
        o.push_str(&format!(
            "{:<tw$}  {:<w$}  {:<40} {:>7}  evidence\n",
            "task", "agent", "outcome", "wall s"
        ));
        for t in &self.tasks {
            for a in &self.agents {
                let Some(r) = self.cell(t, &a.name) else {
                    continue;
                };
                o.push_str(&format!(
                    "{:<tw$}  {:<w$}  {:<40} {:>7.1}  {}\n",
                    one_line(&r.instance_id, 24),
                    one_line(&r.agent, 24),
                    one_line(&r.summary(), 40),
                    r.wall_s,
                    one_line(&r.headline(), 160)
                ));
            }
        }
        o
    }

    pub fn to_html(&self) -> String {
        let sums = self.summaries();
        let mut h = String::new();
        h.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
        h.push_str(&format!(
            "<title>runproof bench: {}</title>\n",
            esc(&self
                .agents
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", "))
        ));
        h.push_str(
            "<style>body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
             .sec{color:#a00;font-weight:600}.gam{color:#a00;font-weight:600}\
             table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 6px;\
             text-align:left;vertical-align:top}th{background:#f3f3f3}td.n{text-align:right}\
             td.ev{font-size:12px;max-width:40em;overflow-wrap:anywhere}\
             td.resolved_clean{background:#e8f5e9}td.resolved_retrieved{background:#ffebee}\
             td.resolved_suspicious{background:#fff3e0}td.unresolved{background:#f5f5f5}\
             td.infrastructure{background:#ede7f6}td.flag{outline:2px solid #c62828}\
             .clean{color:#2e7d32}.retrieved{color:#c62828;font-weight:bold}\
             .suspicious{color:#ef6c00;font-weight:bold}code{font-size:12px}\
             .legend span{display:inline-block;margin-right:1em}\
             .sw{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}</style>\n",
        );
        h.push_str("</head><body>\n<h1>runproof bench</h1>\n");
        h.push_str(&format!(
            "<p>{} agent(s) × {} task(s), {} run(s), {:.1}s wall time. Network unless widened: {}.</p>\n",
            self.agents.len(),
            self.tasks.len(),
            self.rows.len(),
            self.wall_s,
            esc(&self.default_network)
        ));

        // The comparison table.
        h.push_str(
            "<h2>Agents</h2>\n<table id=\"agents\">\n<tr><th>agent</th><th>runs</th>\
             <th>resolved, clean</th><th>resolved, retrieved</th><th>resolved, suspicious</th>\
             <th>unresolved</th><th>infrastructure</th><th>resolve rate</th><th>clean rate</th>\
             <th>gaming</th><th>security</th><th>stopped by gateway</th><th>retrieval refused</th>\
             <th>cost</th><th>per clean fix</th><th>run time (sum)</th><th>network</th></tr>\n",
        );
        for s in &sums {
            let (all, clean) = s.rates();
            let desc = s
                .info
                .description
                .as_deref()
                .map(|d| format!("<br><small>{}</small>", esc(d)))
                .unwrap_or_default();
            h.push_str(&format!(
                "<tr class=\"agent\"><td><b>{}</b>{desc}<br><code>{}</code></td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n{}\">{}</td><td class=\"n{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}s</td><td>{}</td></tr>\n",
                esc(&s.info.name),
                esc(&s.info.command),
                s.rows.len(),
                s.count("resolved_clean"),
                s.count("resolved_retrieved"),
                s.count("resolved_suspicious"),
                s.count("unresolved"),
                s.count("infrastructure"),
                pct(all),
                pct(clean),
                if s.gaming() > 0 { " gam" } else { "" },
                s.gaming(),
                if s.security() > 0 { " sec" } else { "" },
                s.security(),
                s.stopped(),
                s.retrieval_refused(),
                esc(&money(s.cost())),
                esc(&per_clean(s)),
                s.agent_s(),
                esc(&s.info.network)
            ));
        }
        h.push_str("</table>\n");
        h.push_str(&format!(
            "<p><small>Clean rate counts resolutions with no retrieval, no probe for the fix, \
             no grader gaming and no security flag. Cost: {}.</small></p>\n",
            esc(METERED_NOTE)
        ));

        // Charts.
        h.push_str("<h2>Outcomes</h2>\n");
        h.push_str(&self.outcome_chart(&sums));
        h.push_str("<h2>Resolve rate</h2>\n");
        h.push_str(&rate_chart(&sums));
        h.push_str("<h2>Cost</h2>\n");
        h.push_str(&cost_chart(&sums));

        // Task × agent.
        h.push_str("<h2>Task × agent</h2>\n<table id=\"matrix\">\n<tr><th>task</th>");
        for a in &self.agents {
            h.push_str(&format!("<th>{}</th>", esc(&a.name)));
        }
        h.push_str("</tr>\n");
        for t in &self.tasks {
            h.push_str(&format!("<tr class=\"task\"><td>{}</td>", esc(t)));
            for a in &self.agents {
                match self.cell(t, &a.name) {
                    Some(r) => {
                        let flag = if r.gaming.is_empty() && r.security.is_empty() {
                            ""
                        } else {
                            " flag"
                        };
                        h.push_str(&format!(
                            "<td class=\"{}{flag}\" title=\"{}\">{}</td>",
                            r.category(),
                            esc(&r.headline()),
                            esc(&r.summary())
                        ));
                    }
                    None => h.push_str("<td>not run</td>"),
                }
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");

        // Every run.
        h.push_str(
            "<h2>Runs</h2>\n<table id=\"runs\">\n<tr><th>task</th><th>agent</th><th>verdict</th><th>audit</th>\
             <th>evidence</th><th>network</th><th>wall s</th><th>agent CPU s</th><th>cost</th></tr>\n",
        );
        for r in &self.rows {
            let label = r.label.as_deref().unwrap_or("not audited");
            h.push_str(&format!(
                "<tr class=\"row\"><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td>\
                 <td class=\"ev\">{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{}</td></tr>\n",
                esc(&r.instance_id),
                esc(&r.agent),
                esc(&r.verdict),
                esc(label),
                esc(label),
                evidence_html(r),
                esc(&r.network),
                r.wall_s,
                r.agent_cpu_s,
                esc(&money(r.cost_usd))
            ));
        }
        h.push_str("</table>\n</body></html>\n");
        h
    }

    /// One stacked bar per agent: its runs by category.
    fn outcome_chart(&self, sums: &[Summary]) -> String {
        let bar_h = 24;
        let label_w = 190;
        let width = 420;
        let most = sums.iter().map(|s| s.rows.len()).max().unwrap_or(0).max(1);
        let mut h = format!(
            "<svg width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"outcomes per agent\">\n",
            label_w + width + 60,
            sums.len() * bar_h + 10
        );
        for (i, s) in sums.iter().enumerate() {
            let y = i * bar_h + 5;
            h.push_str(&format!(
                "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text>",
                y + 14,
                esc(&bound(&s.info.name, 24))
            ));
            let mut x = label_w;
            for (k, label, color) in CATEGORIES {
                let n = s.count(k);
                if n == 0 {
                    continue;
                }
                let w = n * width / most;
                h.push_str(&format!(
                    "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"18\" fill=\"{color}\"><title>{label}: {n}</title></rect>"
                ));
                x += w;
            }
            h.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>\n",
                x + 4,
                y + 14,
                s.rows.len()
            ));
        }
        h.push_str("</svg>\n<p class=\"legend\">");
        for (_, label, color) in CATEGORIES {
            h.push_str(&format!(
                "<span><i class=\"sw\" style=\"background:{color}\"></i>{label}</span>"
            ));
        }
        h.push_str("</p>\n");
        h
    }
}

/// Resolve rate and clean rate per agent, side by side.
fn rate_chart(sums: &[Summary]) -> String {
    let row_h = 40;
    let label_w = 190;
    let width = 400;
    let mut h = format!(
        "<svg width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"resolve rates per agent\">\n",
        label_w + width + 70,
        sums.len() * row_h + 10
    );
    for (i, s) in sums.iter().enumerate() {
        let y = i * row_h + 5;
        let (all, clean) = s.rates();
        h.push_str(&format!(
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text>",
            y + 20,
            esc(&bound(&s.info.name, 24))
        ));
        for (j, (rate, color, what)) in [(all, "#90a4ae", "all"), (clean, "#2e7d32", "clean")]
            .into_iter()
            .enumerate()
        {
            let yy = y + j * 16;
            let w = (rate.unwrap_or(0.0) * width as f64).round() as usize;
            h.push_str(&format!(
                "<rect x=\"{label_w}\" y=\"{yy}\" width=\"{w}\" height=\"14\" fill=\"{color}\"/>\
                 <text x=\"{}\" y=\"{}\" font-size=\"11\">{what} {}</text>",
                label_w + w + 4,
                yy + 11,
                pct(rate)
            ));
        }
        h.push('\n');
    }
    h.push_str("</svg>\n");
    h
}

/// Total cost per agent.
fn cost_chart(sums: &[Summary]) -> String {
    let bar_h = 24;
    let label_w = 190;
    let width = 400;
    let most = sums.iter().filter_map(Summary::cost).fold(0.0f64, f64::max);
    let mut h = format!(
        "<svg width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"cost per agent\">\n",
        label_w + width + 160,
        sums.len() * bar_h + 10
    );
    for (i, s) in sums.iter().enumerate() {
        let y = i * bar_h + 5;
        let c = s.cost();
        let w = match c {
            Some(c) if most > 0.0 => (c / most * width as f64).round() as usize,
            _ => 0,
        };
        h.push_str(&format!(
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text>\
             <rect x=\"{label_w}\" y=\"{y}\" width=\"{w}\" height=\"18\" fill=\"#1565c0\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\">{} (per clean fix {})</text>\n",
            y + 14,
            esc(&bound(&s.info.name, 24)),
            label_w + w + 4,
            y + 14,
            esc(&money(c)),
            esc(&per_clean(s))
        ));
    }
    h.push_str("</svg>\n");
    h
}

fn evidence_html(r: &Row) -> String {
    let mut ev = String::new();
    ev.push_str(&format!("<div><b>{}</b></div>", esc(&r.summary())));
    if !r.reason.is_empty() {
        ev.push_str(&format!("<div>{}</div>", esc(&r.reason)));
    }
    if !r.evidence.is_empty() {
        ev.push_str("<ul>");
        for e in &r.evidence {
            ev.push_str(&format!("<li>{}</li>", esc(e)));
        }
        if r.evidence_total > r.evidence.len() {
            ev.push_str(&format!(
                "<li>and {} more</li>",
                r.evidence_total - r.evidence.len()
            ));
        }
        ev.push_str("</ul>");
    }
    for g in &r.gaming {
        ev.push_str(&format!(
            "<div class=\"gam\">gaming, neutralised by the verifier: {}</div>",
            esc(g)
        ));
    }
    for f in &r.security {
        ev.push_str(&format!("<div class=\"sec\">security: {}</div>", esc(f)));
    }
    for f in &r.retrieval_refused {
        ev.push_str(&format!(
            "<div>retrieval attempt refused by the proxy: {}</div>",
            esc(f)
        ));
    }
    if r.blocked_requests > 0 {
        ev.push_str(&format!(
            "<div>{} request(s) blocked by the proxy: {}</div>",
            r.blocked_requests,
            esc(&r.blocked.join(", "))
        ));
    }
    if r.model_calls > 0 {
        ev.push_str(&format!(
            "<div>{} model call(s) through the gateway, {} refused{}</div>",
            r.model_calls,
            r.model_calls_refused,
            if r.model_refusals.is_empty() {
                String::new()
            } else {
                format!(": {}", esc(&r.model_refusals.join("; ")))
            }
        ));
    }
    if let Some(s) = &r.stopped {
        ev.push_str(&format!(
            "<div class=\"sec\">the gateway stopped the run: {}</div>",
            esc(s)
        ));
    }
    if let Some(c) = r
        .change_detection
        .as_deref()
        .filter(|c| !c.starts_with("enforced"))
    {
        ev.push_str(&format!("<div>change detection {}</div>", esc(c)));
    }
    if let Some(e) = &r.error {
        ev.push_str(&format!("<div>{}</div>", esc(e)));
    }
    if r.agent_timed_out {
        ev.push_str("<div>the agent timed out</div>");
    }
    if !r.agent_log_tail.is_empty() {
        ev.push_str(&format!(
            "<details><summary>agent output (last lines)</summary><pre>{}</pre></details>",
            esc(&r.agent_log_tail)
        ));
    }
    ev
}

fn pct(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{:.1}%", r * 100.0))
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    bound(&flat, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, agent: &str, resolved: bool, label: &str) -> Row {
        let mut r = Row::new(id, agent);
        r.resolved = resolved;
        r.verdict = if resolved { "resolved" } else { "unresolved" }.into();
        r.label = Some(label.into());
        r
    }

    fn info(name: &str) -> AgentInfo {
        AgentInfo {
            name: name.into(),
            command: format!("{name} {{workspace}}"),
            description: None,
            network: "default".into(),
        }
    }

    #[test]
    fn counts_and_rates_are_per_agent_and_separate_retrieved_runs() {
        let mut infra = Row::new("d", "a");
        infra.infrastructure = true;
        let mut gamed = row("a", "b", true, "clean");
        gamed.gaming = vec!["conftest.py: hook".into()];
        let b = Scoreboard::new(
            vec![info("a"), info("b")],
            vec!["a".into(), "b".into(), "c".into(), "d".into()],
            vec![
                row("a", "a", true, "clean"),
                row("b", "a", true, "retrieved"),
                row("c", "a", false, "clean"),
                infra,
                gamed,
            ],
            1.0,
            "default",
        );
        let j = b.to_json();
        let a = &j["agents"][0];
        assert_eq!(a["name"], "a");
        assert_eq!(a["counts"]["resolved_clean"], 1);
        assert_eq!(a["counts"]["resolved_retrieved"], 1);
        assert_eq!(a["counts"]["unresolved"], 1);
        assert_eq!(a["counts"]["infrastructure"], 1);
        let all = a["resolve_rate"].as_f64().unwrap();
        let clean = a["resolve_rate_clean"].as_f64().unwrap();
        assert!((all - 2.0 / 3.0).abs() < 1e-9);
        assert!((clean - 1.0 / 3.0).abs() < 1e-9);
        assert!(a["cost_per_clean_resolution_usd"].is_null());
        // A resolution that gamed the grader is never clean.
        let bb = &j["agents"][1];
        assert_eq!(bb["counts"]["resolved_clean"], 0);
        assert_eq!(bb["counts"]["resolved_suspicious"], 1);
        assert_eq!(bb["runs_gaming"], 1);
        assert_eq!(j["matrix"][0]["cells"][1]["summary"], "resolved, GAMING");
        assert_eq!(j["matrix"][1]["cells"][1]["summary"], "not run");
    }

    #[test]
    fn summaries_tell_runs_apart() {
        let mut r = row("t", "a", false, "suspicious");
        r.verdict = "empty_patch".into();
        r.retrieval_refused = vec!["https://github.com/o/r/pull/1.diff".into()];
        assert_eq!(r.summary(), "no patch, suspicious, retrieval refused");
        r.retrieval_refused.clear();
        r.label = Some("clean".into());
        r.stopped = Some("runaway_loop".into());
        assert_eq!(r.summary(), "no patch, stopped: runaway loop");
        r.stopped = None;
        r.security = vec!["x".into()];
        assert_eq!(r.summary(), "no patch, SECURITY");
    }

    #[test]
    fn money_never_shows_a_small_cost_as_zero() {
        assert_eq!(money(None), "unknown");
        assert_eq!(money(Some(0.0)), "$0.0000");
        assert_eq!(money(Some(0.0000004)), "<$0.000001");
        assert_eq!(money(Some(0.000123)), "$0.000123");
        assert_eq!(money(Some(1.5)), "$1.5000");
    }

    #[test]
    fn html_escapes_hostile_strings() {
        let mut r = row(
            "<script>alert(1)</script>",
            "\"><img src=x onerror=alert(1)>",
            false,
            "clean",
        );
        r.agent_log_tail = "</pre><script>x</script>".into();
        r.gaming = vec!["<svg onload=x>".into()];
        let mut a = info("\"><img src=x onerror=alert(1)>");
        a.description = Some("<iframe>".into());
        let h = Scoreboard::new(
            vec![a],
            vec![r.instance_id.clone()],
            vec![r],
            0.0,
            "<u onmouseover=x>",
        )
        .to_html();
        for bad in ["<script", "<img", "<iframe", "<svg onload", "<u "] {
            assert!(!h.contains(bad), "{bad} in {h}");
        }
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn bound_cuts_long_strings() {
        assert_eq!(bound("abc", 5), "abc");
        assert_eq!(bound("abcdef", 3), "abc…");
        assert_eq!(tail("abcdef", 2), "…ef");
    }
}
