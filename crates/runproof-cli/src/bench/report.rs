//! The bench scoreboard: rows, counts, rates, and the text, JSON and HTML views.
//!
//! Every string in a row comes from a task, an agent or a log and is hostile:
//! rows hold bounded copies, and the HTML view escapes every one of them.

use serde_json::{Value, json};

/// One task's result.
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
    pub blocked_requests: usize,
    /// The first few distinct requests the proxy refused (`METHOD host:port`).
    pub blocked: Vec<String>,
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

    /// The scoreboard bucket.
    pub fn category(&self) -> &'static str {
        if self.infrastructure {
            "infrastructure"
        } else if !self.resolved {
            "unresolved"
        } else {
            match self.label.as_deref() {
                Some("clean") => "resolved_clean",
                Some("retrieved") => "resolved_retrieved",
                _ => "resolved_suspicious",
            }
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "instance_id": self.instance_id,
            "agent": self.agent,
            "category": self.category(),
            "verdict": self.verdict,
            "resolved": self.resolved,
            "label": self.label,
            "reason": self.reason,
            "evidence": self.evidence,
            "evidence_total": self.evidence_total,
            "similarity": self.similarity,
            "blocked_requests": self.blocked_requests,
            "blocked": self.blocked,
            "security": self.security,
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
        })
    }
}

const COST_NOTE: &str = "unknown: not metered (run bench with --budget to route model calls through the metered gateway)";
const METERED_NOTE: &str = "model calls through the metered gateway plus compute";

/// `$1.2345`, or `unknown (not metered)`.
fn money(c: Option<f64>) -> String {
    c.map_or_else(
        || "unknown (not metered)".to_string(),
        |c| format!("${c:.4}"),
    )
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

/// Escape for HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

pub struct Scoreboard {
    agent: String,
    rows: Vec<Row>,
    wall_s: f64,
}

const CATEGORIES: [(&str, &str, &str); 5] = [
    ("resolved_clean", "resolved, clean", "#2e7d32"),
    ("resolved_retrieved", "resolved, retrieved", "#c62828"),
    ("resolved_suspicious", "resolved, suspicious", "#ef6c00"),
    ("unresolved", "unresolved", "#757575"),
    ("infrastructure", "infrastructure failure", "#5e35b1"),
];

impl Scoreboard {
    pub fn new(agent: &str, rows: Vec<Row>, wall_s: f64) -> Scoreboard {
        Scoreboard {
            agent: bound(agent, 200),
            rows,
            wall_s,
        }
    }

    fn count(&self, cat: &str) -> usize {
        self.rows.iter().filter(|r| r.category() == cat).count()
    }

    pub fn infrastructure(&self) -> usize {
        self.count("infrastructure")
    }

    /// Runs that reached a verdict (infrastructure failures do not count against the agent).
    fn graded(&self) -> usize {
        self.rows.len() - self.infrastructure()
    }

    /// Total cost, when every run was metered.
    fn total_cost(&self) -> Option<f64> {
        self.rows.iter().map(|r| r.cost_usd).sum()
    }

    /// Total cost over clean resolutions, when metered and there are any.
    fn cost_per_clean(&self) -> Option<f64> {
        let clean = self.count("resolved_clean");
        self.total_cost()
            .filter(|_| clean > 0)
            .map(|c| c / clean as f64)
    }

    /// (all resolutions, clean resolutions only) over graded runs.
    fn rates(&self) -> (Option<f64>, Option<f64>) {
        let g = self.graded();
        if g == 0 {
            return (None, None);
        }
        let all = self.rows.iter().filter(|r| r.resolved).count();
        (
            Some(all as f64 / g as f64),
            Some(self.count("resolved_clean") as f64 / g as f64),
        )
    }

    pub fn to_json(&self) -> Value {
        let (all, clean) = self.rates();
        let counts: serde_json::Map<String, Value> = CATEGORIES
            .iter()
            .map(|(k, _, _)| (k.to_string(), json!(self.count(k))))
            .collect();
        json!({
            "agent": self.agent,
            "tasks": self.rows.len(),
            "counts": counts,
            "resolve_rate": all,
            "resolve_rate_clean": clean,
            "cost_usd": self.total_cost(),
            "cost_per_clean_resolution_usd": self.cost_per_clean(),
            "cost_note": if self.total_cost().is_none() { COST_NOTE } else { METERED_NOTE },
            "wall_s": self.wall_s,
            "rows": self.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        })
    }

    pub fn to_text(&self) -> String {
        let mut o = String::new();
        o.push_str(&format!(
            "{:<24} {:<20} {:<22} {:<11} {:>7}  evidence\n",
            "task", "agent", "verdict", "audit", "wall s"
        ));
        for r in &self.rows {
            let mut ev = r
                .evidence
                .first()
                .cloned()
                .or_else(|| r.error.clone())
                .unwrap_or_else(|| r.reason.clone());
            if r.blocked_requests > 0 {
                ev = format!(
                    "{} request(s) blocked by the proxy ({}); {ev}",
                    r.blocked_requests,
                    r.blocked.join(", ")
                );
            }
            if r.agent_timed_out {
                ev = format!("agent timed out; {ev}");
            }
            if let Some(f) = r.security.first() {
                ev = format!("SECURITY: {f}; {ev}");
            }
            o.push_str(&format!(
                "{:<24} {:<20} {:<22} {:<11} {:>7.1}  {}\n",
                one_line(&r.instance_id, 24),
                one_line(&r.agent, 20),
                one_line(&r.verdict, 22),
                r.label.as_deref().unwrap_or("-"),
                r.wall_s,
                one_line(&ev, 120)
            ));
        }
        o.push('\n');
        for (k, label, _) in CATEGORIES {
            o.push_str(&format!("{label:<24} {}\n", self.count(k)));
        }
        let (all, clean) = self.rates();
        o.push_str(&format!(
            "resolve rate             {} (clean only: {})\n",
            pct(all),
            pct(clean)
        ));
        o.push_str(&format!(
            "cost                     {}\n",
            money(self.total_cost())
        ));
        o.push_str(&format!(
            "cost per clean fix       {}\n",
            money(self.cost_per_clean())
        ));
        o.push_str(&format!("wall time                {:.1}s\n", self.wall_s));
        o
    }

    pub fn to_html(&self) -> String {
        let (all, clean) = self.rates();
        let mut h = String::new();
        h.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
        h.push_str(&format!(
            "<title>runproof bench: {}</title>\n",
            esc(&self.agent)
        ));
        h.push_str(
            "<style>body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}.sec{color:#a00;font-weight:600}\
             table{border-collapse:collapse;width:100%}th,td{border:1px solid #ccc;padding:4px 6px;\
             text-align:left;vertical-align:top}th{background:#f3f3f3}td.ev{font-size:12px;\
             max-width:40em;overflow-wrap:anywhere}.clean{color:#2e7d32}.retrieved{color:#c62828;\
             font-weight:bold}.suspicious{color:#ef6c00;font-weight:bold}code{font-size:12px}</style>\n",
        );
        h.push_str("</head><body>\n");
        h.push_str(&format!(
            "<h1>runproof bench</h1>\n<p>agent <code>{}</code>, {} tasks, {:.1}s wall time</p>\n",
            esc(&self.agent),
            self.rows.len(),
            self.wall_s
        ));
        // Bar chart of the categories.
        let max = CATEGORIES
            .iter()
            .map(|(k, _, _)| self.count(k))
            .max()
            .unwrap_or(0)
            .max(1);
        let bar_h = 26;
        let svg_h = CATEGORIES.len() * bar_h + 10;
        h.push_str(&format!(
            "<svg width=\"620\" height=\"{svg_h}\" role=\"img\" aria-label=\"outcomes\">\n"
        ));
        for (i, (k, label, color)) in CATEGORIES.iter().enumerate() {
            let n = self.count(k);
            let w = n * 380 / max;
            let y = i * bar_h + 5;
            h.push_str(&format!(
                "<text x=\"0\" y=\"{}\" font-size=\"13\">{label}</text>\
                 <rect x=\"170\" y=\"{y}\" width=\"{w}\" height=\"18\" fill=\"{color}\"/>\
                 <text x=\"{}\" y=\"{}\" font-size=\"13\">{n}</text>\n",
                y + 14,
                175 + w,
                y + 14
            ));
        }
        h.push_str("</svg>\n");
        h.push_str(&format!(
            "<p>resolve rate <b>{}</b>; counting clean runs only <b>{}</b>. \
             Cost: <b>{}</b>; per clean resolution: <b>{}</b> ({}).</p>\n",
            pct(all),
            pct(clean),
            money(self.total_cost()),
            money(self.cost_per_clean()),
            esc(if self.total_cost().is_none() {
                COST_NOTE
            } else {
                METERED_NOTE
            })
        ));
        h.push_str(
            "<table>\n<tr><th>task</th><th>agent</th><th>verdict</th><th>audit</th>\
             <th>evidence</th><th>wall s</th><th>agent CPU s</th><th>cost</th></tr>\n",
        );
        for r in &self.rows {
            let label = r.label.as_deref().unwrap_or("not audited");
            let mut ev = String::new();
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
            if r.blocked_requests > 0 {
                ev.push_str(&format!(
                    "<div>{} request(s) blocked by the proxy: {}</div>",
                    r.blocked_requests,
                    esc(&r.blocked.join(", "))
                ));
            }
            for f in &r.security {
                ev.push_str(&format!("<div class=\"sec\">security: {}</div>", esc(f)));
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
            h.push_str(&format!(
                "<tr class=\"row\"><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td>\
                 <td class=\"ev\">{ev}</td><td>{:.1}</td><td>{:.2}</td><td>{}</td></tr>\n",
                esc(&r.instance_id),
                esc(&r.agent),
                esc(&r.verdict),
                esc(label),
                esc(label),
                r.wall_s,
                r.agent_cpu_s,
                esc(&money(r.cost_usd))
            ));
        }
        h.push_str("</table>\n</body></html>\n");
        h
    }
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

    fn row(id: &str, resolved: bool, label: &str) -> Row {
        let mut r = Row::new(id, "agent");
        r.resolved = resolved;
        r.verdict = if resolved { "resolved" } else { "unresolved" }.into();
        r.label = Some(label.into());
        r
    }

    #[test]
    fn counts_and_rates_separate_retrieved_runs() {
        let mut infra = Row::new("d", "agent");
        infra.infrastructure = true;
        let b = Scoreboard::new(
            "agent",
            vec![
                row("a", true, "clean"),
                row("b", true, "retrieved"),
                row("c", false, "clean"),
                infra,
            ],
            1.0,
        );
        let j = b.to_json();
        assert_eq!(j["counts"]["resolved_clean"], 1);
        assert_eq!(j["counts"]["resolved_retrieved"], 1);
        assert_eq!(j["counts"]["unresolved"], 1);
        assert_eq!(j["counts"]["infrastructure"], 1);
        let all = j["resolve_rate"].as_f64().unwrap();
        let clean = j["resolve_rate_clean"].as_f64().unwrap();
        assert!((all - 2.0 / 3.0).abs() < 1e-9);
        assert!((clean - 1.0 / 3.0).abs() < 1e-9);
        assert!(j["cost_per_clean_resolution_usd"].is_null());
    }

    #[test]
    fn html_escapes_hostile_strings() {
        let mut r = row("<script>alert(1)</script>", false, "clean");
        r.agent = "\"><img src=x onerror=alert(1)>".into();
        r.agent_log_tail = "</pre><script>x</script>".into();
        let h = Scoreboard::new("<b>", vec![r], 0.0).to_html();
        assert!(!h.contains("<script>"));
        assert!(!h.contains("<img"));
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn bound_cuts_long_strings() {
        assert_eq!(bound("abc", 5), "abc");
        assert_eq!(bound("abcdef", 3), "abc…");
        assert_eq!(tail("abcdef", 2), "…ef");
    }
}
