//! `runproof cost`: what was spent, grouped by model, run, task or agent,
//! and what one verified fix cost.
//!
//! Verdicts (from `bench`, `verify` and `eval`) are joined to the agent runs
//! that produced the patch: through the verdict's run id when it has one,
//! otherwise through the runs recorded with the same task and agent
//! (`runproof run --task ID --agent NAME`). A fix counts in every row its
//! runs spent in (`--by model`: each model those runs called), so rows can add
//! up to more fixes than the total, which counts each fix once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use rusqlite::params;
use serde::Serialize;

use crate::store::{Ledger, LedgerError};

/// How to group the cost report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    #[default]
    Model,
    Run,
    Task,
    Agent,
}

impl std::str::FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "model" => Ok(GroupBy::Model),
            "run" => Ok(GroupBy::Run),
            "task" => Ok(GroupBy::Task),
            "agent" => Ok(GroupBy::Agent),
            _ => Err(format!(
                "cannot group by {s:?}: use model, run, task or agent"
            )),
        }
    }
}

/// Options of `runproof cost`.
#[derive(Debug, Clone, Default)]
pub struct CostOptions {
    /// Ledger path; the default path when `None`.
    pub ledger: Option<PathBuf>,
    /// Only requests, compute and verdicts at or after this many Unix milliseconds.
    pub since_ms: Option<i64>,
    pub by: GroupBy,
    /// A developer's hourly rate in USD, to compare the spend against.
    pub hourly_rate_usd: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CostRow {
    /// Model name, run id, task or agent (`(none)` when unset).
    pub key: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// Sum of the priced requests (tokens only).
    pub cost_usd: f64,
    /// Compute charged to the row's runs (0 when grouped by model: compute
    /// belongs to a run, not to a model).
    pub compute_cost_usd: f64,
    /// `cost_usd + compute_cost_usd`.
    pub total_cost_usd: f64,
    /// Requests whose model had no price: their cost is unknown, not 0.
    pub unpriced_requests: u64,
    /// Requests whose usage was estimated (cut streams).
    pub estimated_requests: u64,
    /// Agent runs that spent in this row.
    pub runs: u64,
    /// Graded attempts (verdicts) that belong to this row.
    pub verdicts: u64,
    /// Of those, the verified ones.
    pub verified_fixes: u64,
    /// Verified fixes whose agent runs are in the ledger: what the row's
    /// cost is divided by (the cost of the others is unknown, not 0).
    pub costed_fixes: u64,
    /// `total_cost_usd / costed_fixes`, when there are any.
    pub cost_per_verified_fix_usd: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CostReport {
    pub by: GroupBy,
    pub since_ms: Option<i64>,
    pub rows: Vec<CostRow>,
    pub token_cost_usd: f64,
    pub compute_cost_usd: f64,
    pub total_cost_usd: f64,
    pub unpriced_requests: u64,
    /// Graded attempts recorded (each once, however often it was graded).
    pub verdicts: u64,
    pub verified_fixes: u64,
    /// Verified fixes joined to no recorded agent run: their cost is not in
    /// the ledger (record the runs with `runproof run --task --agent`), so
    /// they are left out of the cost per verified fix.
    pub unattributed_verified_fixes: u64,
    /// Total cost (failed runs included) divided by the verified fixes whose
    /// runs are in the ledger, when there are any.
    pub cost_per_verified_fix_usd: Option<f64>,
    pub hourly_rate_usd: Option<f64>,
    /// Developer minutes the total cost would buy at `hourly_rate_usd`.
    pub developer_minutes_equivalent: Option<f64>,
    /// Developer minutes one verified fix costs at `hourly_rate_usd`.
    pub developer_minutes_per_verified_fix: Option<f64>,
}

#[derive(Default)]
struct Acc {
    row: Option<CostRow>,
    runs: BTreeSet<String>,
}

impl Acc {
    fn row(&mut self, key: &str) -> &mut CostRow {
        self.row.get_or_insert_with(|| CostRow {
            key: key.to_string(),
            requests: 0,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            cost_usd: 0.0,
            compute_cost_usd: 0.0,
            total_cost_usd: 0.0,
            unpriced_requests: 0,
            estimated_requests: 0,
            runs: 0,
            verdicts: 0,
            verified_fixes: 0,
            costed_fixes: 0,
            cost_per_verified_fix_usd: None,
        })
    }
}

/// Requests of one (run, model) pair, summed.
struct ReqSum {
    run: Option<String>,
    model: String,
    n: [u64; 8],
    cost: f64,
}

const NONE: &str = "(none)";

/// Build the cost report from a ledger.
pub fn cost_report(ledger: &Ledger, opts: &CostOptions) -> Result<CostReport, LedgerError> {
    let since = opts.since_ms.unwrap_or(i64::MIN);
    let err = |source| LedgerError::Sqlite {
        path: ledger.path().to_string(),
        source,
    };
    let conn = ledger.conn();

    let mut st = conn
        .prepare(
            "SELECT run_id, model, COUNT(*), SUM(input_tokens), SUM(output_tokens),
                SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(reasoning_tokens),
                SUM(cost_usd IS NULL), SUM(estimated), TOTAL(cost_usd)
             FROM requests WHERE ts_ms >= ?1 GROUP BY run_id, model",
        )
        .map_err(err)?;
    let reqs: Vec<ReqSum> = st
        .query_map(params![since], |r| {
            let n = |i: usize| -> rusqlite::Result<u64> {
                Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0) as u64)
            };
            Ok(ReqSum {
                run: r.get(0)?,
                model: r.get(1)?,
                n: [n(2)?, n(3)?, n(4)?, n(5)?, n(6)?, n(7)?, n(8)?, n(9)?],
                cost: r.get(10)?,
            })
        })
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;

    let mut st = conn
        .prepare("SELECT run_id, TOTAL(cost_usd) FROM compute WHERE ts_ms >= ?1 GROUP BY run_id")
        .map_err(err)?;
    let compute: Vec<(Option<String>, f64)> = st
        .query_map(params![since], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;

    let mut st = conn
        .prepare("SELECT id, task, agent FROM runs")
        .map_err(err)?;
    let runs: HashMap<String, (Option<String>, Option<String>)> = st
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
    let mut by_task_agent: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    for (id, (t, a)) in &runs {
        if let (Some(t), Some(a)) = (t, a) {
            by_task_agent.entry((t, a)).or_default().push(id);
        }
    }

    let mut st = conn
        .prepare("SELECT run_id, task, agent, verified FROM verdicts WHERE ts_ms >= ?1")
        .map_err(err)?;
    type V = (Option<String>, Option<String>, Option<String>, bool);
    let verdicts: Vec<V> = st
        .query_map(params![since], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;

    // The recorded runs a verdict belongs to.
    let linked = |v: &V| -> Vec<String> {
        match (&v.0, &v.1, &v.2) {
            (Some(run), _, _) if runs.contains_key(run) => vec![run.clone()],
            (Some(_), _, _) => Vec::new(),
            (None, Some(t), Some(a)) => by_task_agent
                .get(&(t.as_str(), a.as_str()))
                .map(|ids| ids.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    };
    let run_key = |run: Option<&str>| -> String {
        let meta = run.and_then(|r| runs.get(r));
        let k = match opts.by {
            GroupBy::Run | GroupBy::Model => run.map(str::to_string),
            GroupBy::Task => meta.and_then(|m| m.0.clone()),
            GroupBy::Agent => meta.and_then(|m| m.1.clone()),
        };
        k.unwrap_or_else(|| NONE.to_string())
    };

    let mut groups: BTreeMap<String, Acc> = BTreeMap::new();
    let mut models_of_run: HashMap<Option<String>, BTreeSet<String>> = HashMap::new();
    let (mut token_cost, mut unpriced) = (0.0, 0);
    for q in &reqs {
        token_cost += q.cost;
        unpriced += q.n[6];
        models_of_run
            .entry(q.run.clone())
            .or_default()
            .insert(q.model.clone());
        let key = match opts.by {
            GroupBy::Model => q.model.clone(),
            _ => run_key(q.run.as_deref()),
        };
        let acc = groups.entry(key.clone()).or_default();
        if let Some(r) = &q.run {
            acc.runs.insert(r.clone());
        }
        let row = acc.row(&key);
        row.requests += q.n[0];
        row.input_tokens += q.n[1];
        row.output_tokens += q.n[2];
        row.cache_read_tokens += q.n[3];
        row.cache_write_tokens += q.n[4];
        row.reasoning_tokens += q.n[5];
        row.unpriced_requests += q.n[6];
        row.estimated_requests += q.n[7];
        row.cost_usd += q.cost;
    }
    let mut compute_cost = 0.0;
    for (run, cost) in &compute {
        compute_cost += cost;
        if opts.by == GroupBy::Model {
            continue;
        }
        let key = run_key(run.as_deref());
        let acc = groups.entry(key.clone()).or_default();
        if let Some(r) = run {
            acc.runs.insert(r.clone());
        }
        acc.row(&key).compute_cost_usd += cost;
    }
    let (mut n_verdicts, mut fixes, mut unattributed) = (0u64, 0u64, 0u64);
    for v in &verdicts {
        n_verdicts += 1;
        fixes += v.3 as u64;
        let runs_of = linked(v);
        if v.3 && runs_of.is_empty() {
            unattributed += 1;
        }
        let keys: BTreeSet<String> = match opts.by {
            GroupBy::Task => [v.1.clone().unwrap_or_else(|| NONE.into())].into(),
            GroupBy::Agent => [v.2.clone().unwrap_or_else(|| NONE.into())].into(),
            GroupBy::Run => runs_of.iter().cloned().collect(),
            GroupBy::Model => runs_of
                .iter()
                .filter_map(|r| models_of_run.get(&Some(r.clone())))
                .flatten()
                .cloned()
                .collect(),
        };
        for k in keys {
            let row = groups.entry(k.clone()).or_default().row(&k);
            row.verdicts += 1;
            row.verified_fixes += v.3 as u64;
            row.costed_fixes += (v.3 && !runs_of.is_empty()) as u64;
        }
    }
    let mut rows: Vec<CostRow> = groups
        .into_values()
        .filter_map(|mut acc| {
            let n = acc.runs.len() as u64;
            let mut row = acc.row.take()?;
            row.runs = n;
            row.total_cost_usd = row.cost_usd + row.compute_cost_usd;
            row.cost_per_verified_fix_usd =
                (row.costed_fixes > 0).then(|| row.total_cost_usd / row.costed_fixes as f64);
            Some(row)
        })
        .collect();
    rows.sort_by(|a, b| {
        b.total_cost_usd
            .total_cmp(&a.total_cost_usd)
            .then_with(|| a.key.cmp(&b.key))
    });
    let total = token_cost + compute_cost;
    let rate = opts.hourly_rate_usd.filter(|r| *r > 0.0 && r.is_finite());
    let costed = fixes - unattributed;
    let per_fix = (costed > 0).then(|| total / costed as f64);
    Ok(CostReport {
        by: opts.by,
        since_ms: opts.since_ms,
        rows,
        token_cost_usd: token_cost,
        compute_cost_usd: compute_cost,
        total_cost_usd: total,
        unpriced_requests: unpriced,
        verdicts: n_verdicts,
        verified_fixes: fixes,
        unattributed_verified_fixes: unattributed,
        cost_per_verified_fix_usd: per_fix,
        hourly_rate_usd: opts.hourly_rate_usd,
        developer_minutes_equivalent: rate.map(|rate| total / rate * 60.0),
        developer_minutes_per_verified_fix: rate.and_then(|rate| per_fix.map(|c| c / rate * 60.0)),
    })
}

/// Human-readable table.
pub fn render_text(r: &CostReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let by = match r.by {
        GroupBy::Model => "model",
        GroupBy::Run => "run",
        GroupBy::Task => "task",
        GroupBy::Agent => "agent",
    };
    let _ = writeln!(
        out,
        "{:<34} {:>8} {:>10} {:>10} {:>10} {:>11} {:>9} {:>10} {:>10} {:>9} {:>10}",
        by,
        "requests",
        "input",
        "output",
        "cache read",
        "cache write",
        "reasoning",
        "tokens USD",
        "compute",
        "fixes",
        "USD/fix"
    );
    for row in &r.rows {
        let key: String = row
            .key
            .chars()
            .filter(|c| !c.is_control())
            .take(34)
            .collect();
        let cost = if row.requests > 0 && row.unpriced_requests == row.requests {
            "UNKNOWN".to_string()
        } else if row.unpriced_requests > 0 {
            format!("{:.4}+?", row.cost_usd)
        } else {
            format!("{:.4}", row.cost_usd)
        };
        let per_fix = match row.cost_per_verified_fix_usd {
            Some(c) if row.unpriced_requests > 0 => format!("{c:.4}+?"),
            Some(c) => format!("{c:.4}"),
            None => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<34} {:>8} {:>10} {:>10} {:>10} {:>11} {:>9} {:>10} {:>10.4} {:>9} {:>10}{}",
            key,
            row.requests,
            row.input_tokens,
            row.output_tokens,
            row.cache_read_tokens,
            row.cache_write_tokens,
            row.reasoning_tokens,
            cost,
            row.compute_cost_usd,
            format!("{}/{}", row.verified_fixes, row.verdicts),
            per_fix,
            if row.estimated_requests > 0 {
                format!("  ({} estimated)", row.estimated_requests)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(out, "tokens  ${:.4}", r.token_cost_usd);
    let _ = writeln!(out, "compute ${:.4}", r.compute_cost_usd);
    let _ = writeln!(out, "total   ${:.4}", r.total_cost_usd);
    if r.unpriced_requests > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} request(s) used models with no price; their cost is UNKNOWN and not in the total. Add the models with --prices FILE (LiteLLM format).",
            r.unpriced_requests
        );
    }
    let _ = writeln!(
        out,
        "verified fixes {} of {} graded attempt(s){}",
        r.verified_fixes,
        r.verdicts,
        match r.cost_per_verified_fix_usd {
            Some(c) => format!(" — ${c:.4} per verified fix"),
            None => String::new(),
        }
    );
    if r.unattributed_verified_fixes > 0 {
        let _ = writeln!(
            out,
            "note: {} verified fix(es) match no recorded agent run: what they cost is not in the ledger, so they are left out of the cost per fix (record the agent's runs with `runproof run --task ID --agent NAME`)",
            r.unattributed_verified_fixes
        );
    }
    if let (Some(rate), Some(m)) = (r.hourly_rate_usd, r.developer_minutes_equivalent) {
        let _ = write!(
            out,
            "equivalent to {m:.1} developer minutes at ${rate:.2}/hour"
        );
        match r.developer_minutes_per_verified_fix {
            Some(f) => {
                let _ = writeln!(out, "; {f:.2} developer minutes per verified fix");
            }
            None => {
                let _ = writeln!(out);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::Usage;
    use crate::store::{ComputeRecord, RequestRecord, RunRecord, VerdictRecord};

    fn rec(run: &str, model: &str, ts: i64, cost: Option<f64>, input: u64) -> RequestRecord {
        RequestRecord {
            run_id: Some(run.into()),
            ts_ms: ts,
            provider: "anthropic".into(),
            endpoint: "messages".into(),
            model: model.into(),
            stream: false,
            http_status: 200,
            usage: Usage {
                input,
                output: 1,
                ..Default::default()
            },
            cost_usd: cost,
            estimated: false,
            outcome: "ok".into(),
            duration_ms: 1,
        }
    }

    fn verdict(key: &str, run: Option<&str>, task: &str, agent: &str, ok: bool) -> VerdictRecord {
        VerdictRecord {
            key: key.into(),
            run_id: run.map(str::to_string),
            task: Some(task.into()),
            agent: Some(agent.into()),
            source: "eval".into(),
            outcome: if ok { "resolved" } else { "unresolved" }.into(),
            verified: ok,
            ts_ms: 200,
        }
    }

    fn run(l: &Ledger, id: &str, task: &str, agent: &str) {
        l.start_run(&RunRecord {
            id: id.into(),
            task: Some(task.into()),
            agent: Some(agent.into()),
            started_ms: 0,
            budget_usd: None,
        })
        .unwrap();
    }

    fn report(l: &Ledger, by: GroupBy) -> CostReport {
        cost_report(
            l,
            &CostOptions {
                by,
                hourly_rate_usd: Some(60.0),
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn row<'a>(r: &'a CostReport, key: &str) -> &'a CostRow {
        r.rows
            .iter()
            .find(|x| x.key == key)
            .unwrap_or_else(|| panic!("no row {key}: {r:#?}"))
    }

    #[test]
    fn groups_sums_and_flags_unknown_prices() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("l.db")).unwrap();
        for (id, task) in [("a", "t1"), ("b", "t1"), ("c", "t2")] {
            run(&l, id, task, "agent-x");
        }
        l.record_request(&rec("a", "m1", 100, Some(1.0), 10))
            .unwrap();
        l.record_request(&rec("b", "m1", 200, Some(2.0), 20))
            .unwrap();
        l.record_request(&rec("c", "m2", 300, None, 30)).unwrap();
        l.record_request(&rec("c", "m1", 50, Some(4.0), 40))
            .unwrap();
        l.record_compute(&ComputeRecord {
            run_id: Some("a".into()),
            ts_ms: 150,
            cpu_seconds: 10.0,
            mem_gib_seconds: 1.0,
            cost_usd: 0.5,
        })
        .unwrap();
        l.record_verdict(&verdict("run:a", Some("a"), "t1", "agent-x", true))
            .unwrap();
        l.record_verdict(&verdict("run:b", Some("b"), "t1", "agent-x", false))
            .unwrap();

        let r = report(&l, GroupBy::Model);
        assert_eq!(r.rows.len(), 2);
        assert_eq!(
            (
                r.rows[0].key.as_str(),
                r.rows[0].requests,
                r.rows[0].cost_usd
            ),
            ("m1", 3, 7.0)
        );
        // Compute is a run's, not a model's.
        assert_eq!(r.rows[0].compute_cost_usd, 0.0);
        assert_eq!(
            (r.rows[1].key.as_str(), r.rows[1].unpriced_requests),
            ("m2", 1)
        );
        // Run a (verified) called m1 only.
        assert_eq!((r.rows[0].verified_fixes, r.rows[0].verdicts), (1, 2));
        assert_eq!((r.rows[1].verified_fixes, r.rows[1].verdicts), (0, 0));
        assert_eq!(r.total_cost_usd, 7.5);
        assert_eq!(r.unpriced_requests, 1);
        assert_eq!(r.cost_per_verified_fix_usd, Some(7.5));
        assert_eq!(r.developer_minutes_equivalent, Some(7.5));
        assert_eq!(r.developer_minutes_per_verified_fix, Some(7.5));
        let text = render_text(&r);
        assert!(
            text.contains("UNKNOWN") && text.contains("WARNING: 1 request"),
            "{text}"
        );
        assert!(text.contains("verified fixes 1 of 2"), "{text}");

        let r = cost_report(
            &l,
            &CostOptions {
                by: GroupBy::Task,
                since_ms: Some(100),
                ..Default::default()
            },
        )
        .unwrap();
        let keys: Vec<_> = r
            .rows
            .iter()
            .map(|x| (x.key.as_str(), x.requests, x.input_tokens))
            .collect();
        assert_eq!(keys, vec![("t1", 2, 30), ("t2", 1, 30)]);
        let t1 = row(&r, "t1");
        // Tokens 1 + 2, compute 0.5, one fix of two attempts.
        assert_eq!(t1.total_cost_usd, 3.5);
        assert_eq!((t1.runs, t1.verdicts, t1.verified_fixes), (2, 2, 1));
        assert_eq!(t1.cost_per_verified_fix_usd, Some(3.5));
        assert_eq!(row(&r, "t2").cost_per_verified_fix_usd, None);
        let r = report(&l, GroupBy::Run);
        assert_eq!(r.rows.len(), 3);
        assert_eq!(row(&r, "a").cost_per_verified_fix_usd, Some(1.5));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["by"], "run");
    }

    #[test]
    fn verdicts_without_a_run_are_joined_by_task_and_agent() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("l.db")).unwrap();
        // Two attempts of agent A on t1 (one failed), one of agent B.
        run(&l, "a1", "t1", "A");
        run(&l, "a2", "t1", "A");
        run(&l, "b1", "t1", "B");
        l.record_request(&rec("a1", "m1", 100, Some(1.0), 1))
            .unwrap();
        l.record_request(&rec("a2", "m1", 100, Some(3.0), 1))
            .unwrap();
        l.record_request(&rec("b1", "m2", 100, Some(10.0), 1))
            .unwrap();
        // eval: A's prediction for t1 resolved, B's not, and a fix by C
        // whose runs were never recorded.
        l.record_verdict(&verdict("k-a", None, "t1", "A", true))
            .unwrap();
        l.record_verdict(&verdict("k-b", None, "t1", "B", false))
            .unwrap();
        l.record_verdict(&verdict("k-c", None, "t2", "C", true))
            .unwrap();
        // A verdict naming a run the ledger does not hold has no known cost.
        l.record_verdict(&verdict("k-d", Some("no-such-run"), "t3", "D", true))
            .unwrap();
        // Recording the same attempt again does not add a verdict.
        assert!(
            !l.record_verdict(&verdict("k-a", None, "t1", "A", true))
                .unwrap()
        );
        assert_eq!(l.verdicts().unwrap().len(), 4);

        let r = report(&l, GroupBy::Agent);
        let a = row(&r, "A");
        assert_eq!((a.runs, a.verified_fixes, a.total_cost_usd), (2, 1, 4.0));
        assert_eq!(a.cost_per_verified_fix_usd, Some(4.0));
        let b = row(&r, "B");
        assert_eq!((b.verdicts, b.verified_fixes), (1, 0));
        assert_eq!(b.cost_per_verified_fix_usd, None);
        let c = row(&r, "C");
        assert_eq!((c.runs, c.verified_fixes), (0, 1));
        assert_eq!(c.cost_per_verified_fix_usd, None, "no runs: cost unknown");
        assert_eq!((r.verified_fixes, r.unattributed_verified_fixes), (3, 2));
        // Everything spent (B's failed attempt too) over the one costed fix.
        assert_eq!(r.cost_per_verified_fix_usd, Some(14.0));
        assert!(render_text(&r).contains("match no recorded agent run"));

        let r = report(&l, GroupBy::Model);
        assert_eq!(row(&r, "m1").verified_fixes, 1);
        assert_eq!(row(&r, "m2").verified_fixes, 0);
        let r = report(&l, GroupBy::Run);
        assert_eq!(row(&r, "a1").verified_fixes, 1);
        assert_eq!(row(&r, "a2").verified_fixes, 1);
        assert_eq!(row(&r, "b1").verdicts, 1);
    }

    #[test]
    fn hostile_keys_are_printed_without_control_characters() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("l.db")).unwrap();
        run(&l, "r", "t\x1b[2J\nfake row", "A");
        l.record_request(&rec("r", "m", 1, Some(1.0), 1)).unwrap();
        let text = render_text(&report(&l, GroupBy::Task));
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(
            text.lines().any(|x| x.starts_with("t[2Jfake row")),
            "{text}"
        );
    }

    #[test]
    fn runs_without_model_calls_cost_zero_tokens_not_minus_zero() {
        // bench's offline runs: compute recorded, no request. An empty f64
        // sum is -0.0 in Rust, which printed as "tokens $-0.0000".
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("l.db")).unwrap();
        run(&l, "a", "t1", "agent-x");
        l.record_compute(&ComputeRecord {
            run_id: Some("a".into()),
            ts_ms: 150,
            cpu_seconds: 1.0,
            mem_gib_seconds: 0.1,
            cost_usd: 0.002,
        })
        .unwrap();
        for by in [GroupBy::Model, GroupBy::Task, GroupBy::Agent, GroupBy::Run] {
            let r = report(&l, by);
            assert!(r.token_cost_usd.is_sign_positive(), "{by:?}");
            assert!(r.rows.iter().all(|x| x.cost_usd.is_sign_positive()));
            let text = render_text(&r);
            assert!(!text.contains("-0.0"), "{by:?}: {text}");
            assert!(text.contains("tokens  $0.0000"), "{text}");
        }
    }
}
