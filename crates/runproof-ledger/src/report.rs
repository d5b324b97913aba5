//! `runproof cost`: what was spent, grouped by model, run or task.

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
}

impl std::str::FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "model" => Ok(GroupBy::Model),
            "run" => Ok(GroupBy::Run),
            "task" => Ok(GroupBy::Task),
            _ => Err(format!("cannot group by {s:?}: use model, run or task")),
        }
    }
}

/// Options of `runproof cost`.
#[derive(Debug, Clone, Default)]
pub struct CostOptions {
    /// Ledger path; the default path when `None`.
    pub ledger: Option<PathBuf>,
    /// Only requests at or after this many Unix milliseconds.
    pub since_ms: Option<i64>,
    pub by: GroupBy,
    /// A developer's hourly rate in USD, to compare the spend against.
    pub hourly_rate_usd: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CostRow {
    /// Model name, run id or task (`(none)` when unset).
    pub key: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// Sum of the priced requests.
    pub cost_usd: f64,
    /// Requests whose model had no price: their cost is unknown, not 0.
    pub unpriced_requests: u64,
    /// Requests whose usage was estimated (cut streams).
    pub estimated_requests: u64,
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
    pub verified_fixes: u64,
    /// Total cost divided by verified fixes, when there are any.
    pub cost_per_verified_fix_usd: Option<f64>,
    pub hourly_rate_usd: Option<f64>,
    /// Developer minutes the total cost would buy at `hourly_rate_usd`.
    pub developer_minutes_equivalent: Option<f64>,
}

/// Build the cost report from a ledger.
pub fn cost_report(ledger: &Ledger, opts: &CostOptions) -> Result<CostReport, LedgerError> {
    let since = opts.since_ms.unwrap_or(i64::MIN);
    let key = match opts.by {
        GroupBy::Model => "q.model",
        GroupBy::Run => "COALESCE(q.run_id, '(none)')",
        GroupBy::Task => "COALESCE(r.task, '(none)')",
    };
    let sql = format!(
        "SELECT {key} AS k, COUNT(*), SUM(q.input_tokens), SUM(q.output_tokens),
                SUM(q.cache_read_tokens), SUM(q.cache_write_tokens), SUM(q.reasoning_tokens),
                TOTAL(q.cost_usd), SUM(q.cost_usd IS NULL), SUM(q.estimated)
         FROM requests q LEFT JOIN runs r ON r.id = q.run_id
         WHERE q.ts_ms >= ?1 GROUP BY k ORDER BY TOTAL(q.cost_usd) DESC, k"
    );
    let err = |source| LedgerError::Sqlite {
        path: ledger.path().to_string(),
        source,
    };
    let conn = ledger.conn();
    let mut st = conn.prepare(&sql).map_err(err)?;
    let rows = st
        .query_map(params![since], |r| {
            let n = |i: usize| -> rusqlite::Result<u64> {
                Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0) as u64)
            };
            Ok(CostRow {
                key: r.get(0)?,
                requests: n(1)?,
                input_tokens: n(2)?,
                output_tokens: n(3)?,
                cache_read_tokens: n(4)?,
                cache_write_tokens: n(5)?,
                reasoning_tokens: n(6)?,
                cost_usd: r.get(7)?,
                unpriced_requests: n(8)?,
                estimated_requests: n(9)?,
            })
        })
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let compute: f64 = conn
        .query_row(
            "SELECT TOTAL(cost_usd) FROM compute WHERE ts_ms >= ?1",
            params![since],
            |r| r.get(0),
        )
        .map_err(err)?;
    let verified: i64 = conn
        .query_row(
            "SELECT COUNT(DISTINCT run_id) FROM verdicts WHERE verified = 1 AND ts_ms >= ?1",
            params![since],
            |r| r.get(0),
        )
        .map_err(err)?;
    let token_cost: f64 = rows.iter().map(|r| r.cost_usd).sum();
    let total = token_cost + compute;
    let unpriced = rows.iter().map(|r| r.unpriced_requests).sum();
    Ok(CostReport {
        by: opts.by,
        since_ms: opts.since_ms,
        rows,
        token_cost_usd: token_cost,
        compute_cost_usd: compute,
        total_cost_usd: total,
        unpriced_requests: unpriced,
        verified_fixes: verified as u64,
        cost_per_verified_fix_usd: (verified > 0).then(|| total / verified as f64),
        hourly_rate_usd: opts.hourly_rate_usd,
        developer_minutes_equivalent: opts
            .hourly_rate_usd
            .filter(|r| *r > 0.0)
            .map(|rate| total / rate * 60.0),
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
    };
    let _ = writeln!(
        out,
        "{:<34} {:>8} {:>12} {:>12} {:>12} {:>12} {:>10} {:>12}",
        by, "requests", "input", "output", "cache read", "cache write", "reasoning", "cost USD"
    );
    for row in &r.rows {
        let key: String = row
            .key
            .chars()
            .filter(|c| !c.is_control())
            .take(34)
            .collect();
        let cost = if row.unpriced_requests == row.requests {
            "UNKNOWN".to_string()
        } else if row.unpriced_requests > 0 {
            format!("{:.4}+?", row.cost_usd)
        } else {
            format!("{:.4}", row.cost_usd)
        };
        let _ = writeln!(
            out,
            "{:<34} {:>8} {:>12} {:>12} {:>12} {:>12} {:>10} {:>12}{}",
            key,
            row.requests,
            row.input_tokens,
            row.output_tokens,
            row.cache_read_tokens,
            row.cache_write_tokens,
            row.reasoning_tokens,
            cost,
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
    if let Some(c) = r.cost_per_verified_fix_usd {
        let _ = writeln!(
            out,
            "verified fixes {} — ${c:.4} per verified fix",
            r.verified_fixes
        );
    }
    if let (Some(rate), Some(m)) = (r.hourly_rate_usd, r.developer_minutes_equivalent) {
        let _ = writeln!(
            out,
            "equivalent to {m:.1} developer minutes at ${rate:.2}/hour"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::Usage;
    use crate::store::{ComputeRecord, RequestRecord, RunRecord};

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

    #[test]
    fn groups_sums_and_flags_unknown_prices() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("l.db")).unwrap();
        for (id, task) in [("a", "t1"), ("b", "t1"), ("c", "t2")] {
            l.start_run(&RunRecord {
                id: id.into(),
                task: Some(task.into()),
                started_ms: 0,
                budget_usd: None,
            })
            .unwrap();
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
        l.record_verdict("a", Some("t1"), true).unwrap();
        l.record_verdict("b", Some("t1"), false).unwrap();

        let r = cost_report(
            &l,
            &CostOptions {
                by: GroupBy::Model,
                hourly_rate_usd: Some(60.0),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.rows.len(), 2);
        assert_eq!(
            (
                r.rows[0].key.as_str(),
                r.rows[0].requests,
                r.rows[0].cost_usd
            ),
            ("m1", 3, 7.0)
        );
        assert_eq!(
            (r.rows[1].key.as_str(), r.rows[1].unpriced_requests),
            ("m2", 1)
        );
        assert_eq!(r.total_cost_usd, 7.5);
        assert_eq!(r.unpriced_requests, 1);
        assert_eq!(r.cost_per_verified_fix_usd, Some(7.5));
        assert_eq!(r.developer_minutes_equivalent, Some(7.5));
        let text = render_text(&r);
        assert!(
            text.contains("UNKNOWN") && text.contains("WARNING: 1 request"),
            "{text}"
        );

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
        let r = cost_report(
            &l,
            &CostOptions {
                by: GroupBy::Run,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.rows.len(), 3);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["by"], "run");
    }
}
