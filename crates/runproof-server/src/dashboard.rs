//! The HTML dashboard: one self-contained page of jobs (no scripts, no
//! external resources; the response's Content-Security-Policy forbids both)
//! and a page per job. Everything a job or its client controlled (instance
//! ids, model names, test names, logs, patches, errors) is cut to a bound
//! and HTML-escaped before it is written.

use crate::store::{Counts, JobDetail, JobRecord};
use runproof_ledger::CostReport;
use runproof_task::InstanceReport;
use std::fmt::Write as _;

/// Escapes text for HTML content and quoted attributes, after cutting it to
/// `max` characters. Control characters other than newline and tab become
/// U+FFFD.
pub fn esc(s: &str, max: usize) -> String {
    let mut o = String::with_capacity(s.len().min(max) + 16);
    for (n, c) in s.chars().enumerate() {
        if n >= max {
            o.push('…');
            break;
        }
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            '\n' | '\t' => o.push(c),
            c if c.is_control() => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// A job id is ours (`job-<hex>`), but it reaches a URL: keep only safe bytes.
fn href_id(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect()
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}.resolved{color:#060;font-weight:600}.bad{color:#a00}.muted{color:#777}
pre{background:#f7f7f7;border:1px solid #ddd;padding:.6em;overflow:auto;max-height:40em;white-space:pre-wrap;word-break:break-all}
code{background:#f4f4f4;padding:0 .2em}";

fn page(title: &str, refresh: bool, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{}<title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
        if refresh {
            "<meta http-equiv=\"refresh\" content=\"5\">"
        } else {
            ""
        },
        esc(title, 200)
    )
}

fn frac(p: Option<i64>, t: Option<i64>) -> String {
    match (p, t) {
        (Some(p), Some(t)) if t > 0 => format!("{p}/{t}"),
        _ => "-".into(),
    }
}

fn secs(j: &JobRecord) -> String {
    match (j.started_ms, j.finished_ms) {
        (Some(a), Some(b)) if b >= a => format!("{:.1}s", (b - a) as f64 / 1000.0),
        _ => "-".into(),
    }
}

fn outcome_cell(j: &JobRecord) -> String {
    match (&j.outcome, j.resolved) {
        (Some(o), Some(true)) => format!("<span class=\"resolved\">{}</span>", esc(o, 40)),
        (Some(o), _) => format!("<span class=\"bad\">{}</span>", esc(o, 40)),
        (None, _) => match &j.error {
            Some(e) => format!("<span class=\"bad\">error: {}</span>", esc(e, 200)),
            None => "<span class=\"muted\">-</span>".into(),
        },
    }
}

/// What the index page shows besides the jobs.
pub struct Overview<'a> {
    pub mode: &'a str,
    pub db: &'a str,
    pub tasks: usize,
    pub counts: &'a Counts,
    pub total: i64,
    pub costs: Option<&'a CostReport>,
    /// Why there are no costs (no ledger, unreadable ledger).
    pub costs_note: Option<String>,
}

/// `GET /`: the newest jobs, counts, and costs from the ledger.
pub fn index(o: &Overview<'_>, jobs: &[JobRecord]) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>runproof</h1><p class=\"muted\">{} · job store {} · {} tasks · {} jobs",
        esc(o.mode, 100),
        esc(o.db, 300),
        o.tasks,
        o.total
    );
    for (k, n) in &o.counts.by_state {
        let _ = write!(b, " · {} {n}", esc(k, 40));
    }
    let _ = write!(
        b,
        " · resolved {}</p><h2>Jobs</h2><table><tr><th>job</th><th>state</th><th>instance</th><th>model</th><th>verdict</th><th>F2P</th><th>P2P</th><th>attempt</th><th>worker</th><th>time</th></tr>",
        o.counts.resolved
    );
    for j in jobs {
        let id = href_id(&j.id);
        let _ = write!(
            b,
            "<tr><td><a href=\"/jobs/{id}\">{id}</a>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            j.batch
                .as_deref()
                .map(|x| format!("<br><span class=\"muted\">{}</span>", esc(x, 64)))
                .unwrap_or_default(),
            j.state.name(),
            esc(&j.instance_id, 120),
            esc(&j.model_name_or_path, 80),
            outcome_cell(j),
            frac(j.f2p_passed, j.f2p_total),
            frac(j.p2p_passed, j.p2p_total),
            j.attempt,
            esc(j.worker.as_deref().unwrap_or("-"), 80),
            secs(j),
        );
    }
    b.push_str("</table>");
    if jobs.len() as i64 != o.total {
        let _ = write!(
            b,
            "<p class=\"muted\">the newest {} of {} jobs; GET /api/jobs?offset=N lists the rest</p>",
            jobs.len(),
            o.total
        );
    }
    b.push_str("<h2>Costs</h2>");
    match o.costs {
        Some(c) => {
            b.push_str("<table><tr><th>agent</th><th>runs</th><th>cost</th><th>verdicts</th><th>verified fixes</th><th>cost per fix</th></tr>");
            for r in c.rows.iter().take(200) {
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>${:.4}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&r.key, 80),
                    r.runs,
                    r.total_cost_usd,
                    r.verdicts,
                    r.verified_fixes,
                    r.cost_per_verified_fix_usd
                        .map(|x| format!("${x:.4}"))
                        .unwrap_or_else(|| "-".into())
                );
            }
            let _ = write!(
                b,
                "</table><p>total ${:.4} · {} verified fixes · cost per verified fix {}</p>",
                c.total_cost_usd,
                c.verified_fixes,
                c.cost_per_verified_fix_usd
                    .map(|x| format!("${x:.4}"))
                    .unwrap_or_else(|| "-".into())
            );
        }
        None => {
            let _ = write!(
                b,
                "<p class=\"muted\">{}</p>",
                esc(o.costs_note.as_deref().unwrap_or("no ledger"), 400)
            );
        }
    }
    page("runproof jobs", true, &b)
}

fn list(b: &mut String, title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = write!(b, "<h3>{}</h3><ul>", esc(title, 100));
    for t in items.iter().take(500) {
        let _ = write!(b, "<li><code>{}</code></li>", esc(t, 300));
    }
    if items.len() > 500 {
        let _ = write!(b, "<li>… {} more</li>", items.len() - 500);
    }
    b.push_str("</ul>");
}

/// `GET /jobs/{id}`: one job, its verdict, failing tests, log tail and patch.
pub fn job_page(d: &JobDetail) -> String {
    let j = &d.job;
    let mut b = String::new();
    let _ = write!(
        b,
        "<p><a href=\"/\">all jobs</a></p><h1>{}</h1><table>\
         <tr><th>state</th><td>{}</td></tr><tr><th>instance</th><td>{}</td></tr>\
         <tr><th>model</th><td>{}</td></tr><tr><th>verdict</th><td>{}</td></tr>\
         <tr><th>FAIL_TO_PASS</th><td>{}</td></tr><tr><th>PASS_TO_PASS</th><td>{}</td></tr>\
         <tr><th>attempts</th><td>{}</td></tr><tr><th>duplicate results dropped</th><td>{}</td></tr></table>",
        href_id(&j.id),
        j.state.name(),
        esc(&j.instance_id, 200),
        esc(&j.model_name_or_path, 200),
        outcome_cell(j),
        frac(j.f2p_passed, j.f2p_total),
        frac(j.p2p_passed, j.p2p_total),
        d.attempts
            .iter()
            .map(|a| format!("#{} on {}", a.attempt, esc(&a.worker, 80)))
            .collect::<Vec<_>>()
            .join(", "),
        j.duplicate_results
    );
    if let Some(r) = &d.result {
        if let Some(rep) = r.report.as_ref().and_then(InstanceReport::from_swebench) {
            if let Some(detail) = &rep.detail {
                let _ = write!(b, "<p>{}</p>", esc(detail, 2000));
            }
            list(&mut b, "FAIL_TO_PASS failing", &rep.fail_to_pass.failure);
            list(&mut b, "PASS_TO_PASS failing", &rep.pass_to_pass.failure);
            let neut: Vec<String> = rep
                .neutralised
                .iter()
                .map(|f| format!("{}: {}", f.path, f.reason))
                .collect();
            list(&mut b, "neutralised (reverted before grading)", &neut);
            let warn: Vec<String> = rep
                .warnings
                .iter()
                .map(|f| format!("{}: {}", f.path, f.reason))
                .collect();
            list(&mut b, "warnings", &warn);
            list(&mut b, "layers not enforced", &rep.unenforced);
        }
        if let Some(e) = &r.error {
            let _ = write!(b, "<p class=\"bad\">{}</p>", esc(e, 2000));
        }
        let _ = write!(
            b,
            "<h3>test output (end)</h3><pre>{}</pre>",
            esc(&r.log_tail, 70_000)
        );
    }
    if let Some(p) = &d.spec.model_patch {
        let _ = write!(b, "<h3>patch</h3><pre>{}</pre>", esc(p, 100_000));
    }
    page(
        &format!("runproof job {}", href_id(&j.id)),
        !j.state.is_final(),
        &b,
    )
}
