//! The job store: SQLite (one file, the embedded default) or PostgreSQL
//! (shared by several `runproof serve` processes), with the same schema,
//! numbered migrations and statements. Every write that decides a job's fate
//! is one statement guarded by the job's state, so replaying it (a
//! redelivered result, a restarted server) changes nothing: a result is
//! stored once per job, whichever attempt delivers it first.

use crate::job::{JobResult, JobSpec, JobState, Verdict};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job database {db}: {detail}")]
    Db { db: String, detail: String },
    #[error(
        "job database {db} has schema version {found}, newer than this runproof ({known}); upgrade runproof"
    )]
    TooNew { db: String, found: i64, known: i64 },
    #[error("job database {db}: stored job {id} is unreadable: {detail}")]
    Corrupt {
        db: String,
        id: String,
        detail: String,
    },
}

/// The schema, one entry per version. `{SEQ}` is the auto-incrementing
/// primary key of the dialect.
const MIGRATIONS: &[&str] = &[
    // 1: jobs (spec, state, attempt, the verdict's figures), results (one per
    // job: the first attempt to deliver one wins), attempts (every start),
    // batches (eval submissions).
    "CREATE TABLE jobs (
        seq {SEQ},
        id TEXT NOT NULL UNIQUE,
        batch TEXT,
        state TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        model TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        started_ms BIGINT,
        finished_ms BIGINT,
        attempt BIGINT NOT NULL,
        worker TEXT,
        queue_seq BIGINT,
        outcome TEXT,
        resolved BIGINT,
        f2p_passed BIGINT,
        f2p_total BIGINT,
        p2p_passed BIGINT,
        p2p_total BIGINT,
        error TEXT,
        duplicate_results BIGINT NOT NULL
     );
     CREATE INDEX jobs_state ON jobs(state, seq);
     CREATE INDEX jobs_batch ON jobs(batch, seq);
     CREATE TABLE results (
        job_id TEXT PRIMARY KEY,
        attempt BIGINT NOT NULL,
        worker TEXT NOT NULL,
        stored_ms BIGINT NOT NULL,
        report TEXT,
        log_tail TEXT NOT NULL,
        error TEXT
     );
     CREATE TABLE attempts (
        job_id TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        worker TEXT NOT NULL,
        started_ms BIGINT NOT NULL,
        PRIMARY KEY (job_id, attempt)
     );
     CREATE TABLE batches (
        id TEXT PRIMARY KEY,
        created_ms BIGINT NOT NULL,
        jobs BIGINT NOT NULL
     );",
];

/// One bound parameter: typed, so PostgreSQL knows a NULL's type.
#[derive(Debug, Clone)]
enum P {
    I(Option<i64>),
    T(Option<String>),
}

fn t(s: impl Into<String>) -> P {
    P::T(Some(s.into()))
}
fn i(n: i64) -> P {
    P::I(Some(n))
}

/// One column value read back.
#[derive(Debug, Clone)]
enum V {
    Null,
    I(i64),
    T(String),
}

impl V {
    fn text(&self) -> Option<String> {
        match self {
            V::T(s) => Some(s.clone()),
            V::I(n) => Some(n.to_string()),
            V::Null => None,
        }
    }
    fn int(&self) -> Option<i64> {
        match self {
            V::I(n) => Some(*n),
            V::T(s) => s.parse().ok(),
            V::Null => None,
        }
    }
}

type Row = Vec<V>;

enum Backend {
    Sqlite(Arc<std::sync::Mutex<rusqlite::Connection>>),
    Pg(Arc<tokio::sync::Mutex<tokio_postgres::Client>>),
}

/// A handle on the job store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
    /// Printable name (a path, or the URL without its password).
    name: String,
}

/// A job as listed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub batch: Option<String>,
    pub state: JobState,
    pub instance_id: String,
    pub model_name_or_path: String,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// How many times a worker started it (0 while queued the first time).
    pub attempt: i64,
    pub worker: Option<String>,
    /// The grader's outcome (`resolved`, `unresolved`, ...) once done.
    pub outcome: Option<String>,
    pub resolved: Option<bool>,
    pub f2p_passed: Option<i64>,
    pub f2p_total: Option<i64>,
    pub p2p_passed: Option<i64>,
    pub p2p_total: Option<i64>,
    pub error: Option<String>,
    /// Results that arrived after the first one was stored (and were dropped).
    pub duplicate_results: i64,
}

/// One start of a job by a worker.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attempt {
    pub attempt: i64,
    pub worker: String,
    pub started_ms: i64,
}

/// The result stored for a job.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoredResult {
    pub attempt: i64,
    pub worker: String,
    pub stored_ms: i64,
    pub report: Option<Value>,
    pub log_tail: String,
    pub error: Option<String>,
}

/// Everything about one job.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobRecord,
    pub spec: JobSpec,
    pub attempts: Vec<Attempt>,
    pub result: Option<StoredResult>,
}

/// A job to insert.
pub struct NewJob {
    pub id: String,
    pub batch: Option<String>,
    pub spec: JobSpec,
}

/// What storing a result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The first result for the job: stored, the job is final.
    New,
    /// A result was already stored; this one was dropped (and counted).
    Duplicate,
    /// The job was cancelled (or is unknown); the result was dropped.
    Discarded,
}

const JOB_COLS: &str = "id, batch, state, instance_id, model, created_ms, started_ms, finished_ms, attempt, worker, outcome, resolved, f2p_passed, f2p_total, p2p_passed, p2p_total, error, duplicate_results";

/// Filters of [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<JobState>,
    pub batch: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// Counts over a set of jobs.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counts {
    pub total: i64,
    pub by_state: std::collections::BTreeMap<String, i64>,
    pub by_outcome: std::collections::BTreeMap<String, i64>,
    pub resolved: i64,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A URL with its password replaced, for messages.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((cred, host)) = rest.rsplit_once('@')
    {
        let user = cred.split(':').next().unwrap_or("");
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_string()
}

impl Store {
    /// Opens (creating and migrating) the store: `postgres://...` or
    /// `postgresql://...` is PostgreSQL, anything else a SQLite file.
    pub async fn open(db: &str) -> Result<Store, StoreError> {
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            Self::open_pg(db).await
        } else {
            Self::open_sqlite(Path::new(db)).await
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn err(&self, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Db {
            db: self.name.clone(),
            detail: detail.to_string(),
        }
    }

    async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let name = path.display().to_string();
        let e = |d: String| StoreError::Db {
            db: name.clone(),
            detail: d,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|x| e(format!("cannot create {}: {x}", dir.display())))?;
        }
        let path: PathBuf = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let mut c = rusqlite::Connection::open(&path).map_err(|x| x.to_string())?;
            c.busy_timeout(std::time::Duration::from_secs(10))
                .map_err(|x| x.to_string())?;
            c.pragma_update(None, "journal_mode", "WAL")
                .map_err(|x| x.to_string())?;
            c.pragma_update(None, "synchronous", "NORMAL")
                .map_err(|x| x.to_string())?;
            let known = MIGRATIONS.len() as i64;
            // The write lock first, then the version: another process may
            // have migrated in between.
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|x| format!("begin: {x}"))?;
            let found: i64 = tx
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(|x| x.to_string())?;
            if found > known {
                return Err(format!("!too-new:{found}"));
            }
            for m in MIGRATIONS.iter().skip(found as usize) {
                tx.execute_batch(&m.replace("{SEQ}", "INTEGER PRIMARY KEY AUTOINCREMENT"))
                    .map_err(|x| format!("migration: {x}"))?;
            }
            tx.pragma_update(None, "user_version", known)
                .map_err(|x| x.to_string())?;
            tx.commit().map_err(|x| x.to_string())?;
            Ok(c)
        })
        .await
        .map_err(|x| e(x.to_string()))?;
        let conn = match conn {
            Ok(c) => c,
            Err(d) if d.starts_with("!too-new:") => {
                return Err(StoreError::TooNew {
                    db: name,
                    found: d[9..].parse().unwrap_or(0),
                    known: MIGRATIONS.len() as i64,
                });
            }
            Err(d) => return Err(e(d)),
        };
        Ok(Store {
            backend: Arc::new(Backend::Sqlite(Arc::new(std::sync::Mutex::new(conn)))),
            name,
        })
    }

    async fn open_pg(url: &str) -> Result<Store, StoreError> {
        let name = redact(url);
        let e = |d: String| StoreError::Db {
            db: name.clone(),
            detail: d,
        };
        let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|x| {
                e(format!(
                    "cannot connect: {x}; check that PostgreSQL runs there and the URL's user, password and database are right"
                ))
            })?;
        tokio::spawn(async move {
            if let Err(x) = conn.await {
                eprintln!("runproof serve: PostgreSQL connection lost: {x}");
            }
        });
        let known = MIGRATIONS.len() as i64;
        let tx = client
            .transaction()
            .await
            .map_err(|x| e(format!("begin: {x}")))?;
        // One migrator at a time, across processes.
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(7304851201);
             CREATE TABLE IF NOT EXISTS runproof_schema (version BIGINT NOT NULL);",
        )
        .await
        .map_err(|x| e(format!("schema table: {x}")))?;
        let rows = tx
            .query("SELECT version FROM runproof_schema", &[])
            .await
            .map_err(|x| e(x.to_string()))?;
        let found: i64 = rows.first().map(|r| r.get(0)).unwrap_or(0);
        if found > known {
            return Err(StoreError::TooNew {
                db: name,
                found,
                known,
            });
        }
        for m in MIGRATIONS.iter().skip(found as usize) {
            tx.batch_execute(&m.replace("{SEQ}", "BIGSERIAL PRIMARY KEY"))
                .await
                .map_err(|x| e(format!("migration: {x}")))?;
        }
        tx.execute("DELETE FROM runproof_schema", &[])
            .await
            .map_err(|x| e(x.to_string()))?;
        tx.execute(
            "INSERT INTO runproof_schema (version) VALUES ($1)",
            &[&known],
        )
        .await
        .map_err(|x| e(x.to_string()))?;
        tx.commit().await.map_err(|x| e(format!("commit: {x}")))?;
        Ok(Store {
            backend: Arc::new(Backend::Pg(Arc::new(tokio::sync::Mutex::new(client)))),
            name,
        })
    }

    /// The schema version in the database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        match &*self.backend {
            Backend::Sqlite(_) => {
                let r = self.query("PRAGMA user_version", vec![]).await?;
                Ok(r.first().and_then(|r| r[0].int()).unwrap_or(0))
            }
            Backend::Pg(_) => {
                let r = self
                    .query("SELECT version FROM runproof_schema", vec![])
                    .await?;
                Ok(r.first().and_then(|r| r[0].int()).unwrap_or(0))
            }
        }
    }

    /// Runs statements in one transaction; returns each one's rows (the
    /// statements written with `$N` placeholders for both dialects).
    async fn tx(&self, stmts: Vec<(String, Vec<P>)>) -> Result<Vec<Vec<Row>>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(c) => {
                let c = c.clone();
                tokio::task::spawn_blocking(move || -> Result<Vec<Vec<Row>>, String> {
                    let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
                    let tx = c.transaction().map_err(|x| x.to_string())?;
                    let mut out = Vec::new();
                    for (sql, params) in &stmts {
                        out.push(sqlite_query(&tx, &sql.replace('$', "?"), params)?);
                    }
                    tx.commit().map_err(|x| x.to_string())?;
                    Ok(out)
                })
                .await
                .map_err(|x| self.err(x))?
                .map_err(|x| self.err(x))
            }
            Backend::Pg(c) => {
                let mut c = c.lock().await;
                let tx = c.transaction().await.map_err(|x| self.err(x))?;
                let mut out = Vec::new();
                for (sql, params) in &stmts {
                    out.push(pg_query(&tx, sql, params).await.map_err(|x| self.err(x))?);
                }
                tx.commit().await.map_err(|x| self.err(x))?;
                Ok(out)
            }
        }
    }

    async fn query(&self, sql: &str, params: Vec<P>) -> Result<Vec<Row>, StoreError> {
        Ok(self
            .tx(vec![(sql.to_string(), params)])
            .await?
            .pop()
            .unwrap_or_default())
    }

    /// Stores new jobs (and their batch) in one transaction, queued.
    pub async fn insert(&self, batch: Option<&str>, jobs: &[NewJob]) -> Result<(), StoreError> {
        let now = now_ms();
        let mut stmts = Vec::new();
        if let Some(b) = batch {
            stmts.push((
                "INSERT INTO batches (id, created_ms, jobs) VALUES ($1, $2, $3)".to_string(),
                vec![t(b), i(now), i(jobs.len() as i64)],
            ));
        }
        for j in jobs {
            let spec = serde_json::to_string(&j.spec).map_err(|x| self.err(x))?;
            stmts.push((
                "INSERT INTO jobs (id, batch, state, instance_id, model, spec, created_ms, attempt, duplicate_results)
                 VALUES ($1, $2, 'queued', $3, $4, $5, $6, 0, 0)"
                    .to_string(),
                vec![
                    t(&j.id),
                    P::T(j.batch.clone()),
                    t(j.spec.instance_id()),
                    t(&j.spec.model_name_or_path),
                    t(spec),
                    i(now),
                ],
            ));
        }
        self.tx(stmts).await.map(|_| ())
    }

    /// Takes the oldest queued job for `worker` (embedded pool): running,
    /// attempt + 1. Returns its id, attempt and spec.
    pub async fn claim(&self, worker: &str) -> Result<Option<(String, i64, JobSpec)>, StoreError> {
        let skip = match &*self.backend {
            Backend::Sqlite(_) => "",
            Backend::Pg(_) => " FOR UPDATE SKIP LOCKED",
        };
        let now = now_ms();
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, worker = $1, started_ms = $2
             WHERE seq = (SELECT seq FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1{skip})
             RETURNING id, attempt, spec"
        );
        let rows = self.query(&sql, vec![t(worker), i(now)]).await?;
        let Some(r) = rows.into_iter().next() else {
            return Ok(None);
        };
        let id = r[0].text().unwrap_or_default();
        let attempt = r[1].int().unwrap_or(1);
        let spec = self.spec_of(&id, &r[2])?;
        self.query(
            "INSERT INTO attempts (job_id, attempt, worker, started_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            vec![t(&id), i(attempt), t(worker), i(now)],
        )
        .await?;
        Ok(Some((id, attempt, spec)))
    }

    fn spec_of(&self, id: &str, v: &V) -> Result<JobSpec, StoreError> {
        serde_json::from_str(&v.text().unwrap_or_default()).map_err(|x| StoreError::Corrupt {
            db: self.name.clone(),
            id: id.to_string(),
            detail: x.to_string(),
        })
    }

    /// A worker reported that it started `attempt` (NATS mode). An older
    /// attempt's report, or one for a final job, changes nothing.
    pub async fn mark_running(
        &self,
        id: &str,
        attempt: i64,
        worker: &str,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let r = self
            .tx(vec![
                (
                    "INSERT INTO attempts (job_id, attempt, worker, started_ms)
                     SELECT CAST($1 AS TEXT), CAST($2 AS BIGINT), CAST($3 AS TEXT), CAST($4 AS BIGINT)
                     WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1)
                     ON CONFLICT DO NOTHING"
                        .into(),
                    vec![t(id), i(attempt), t(worker), i(now)],
                ),
                (
                    "UPDATE jobs SET state = 'running', attempt = $2, worker = $3, started_ms = $4
                     WHERE id = $1 AND state IN ('queued', 'running') AND attempt < $2
                     RETURNING id"
                        .into(),
                    vec![t(id), i(attempt), t(worker), i(now)],
                ),
            ])
            .await?;
        Ok(r.get(1).is_some_and(|x| !x.is_empty()))
    }

    /// Stores a worker's result, once per job: the first result for a job
    /// that is not cancelled is kept and makes the job final; any later one
    /// is counted in `duplicate_results` and dropped. `verdict` is what
    /// [`JobResult::verdict`] read from the report.
    pub async fn store_result(
        &self,
        r: &JobResult,
        verdict: Option<&Verdict>,
    ) -> Result<Stored, StoreError> {
        let now = now_ms();
        let report = r
            .report
            .as_ref()
            .map(|v| serde_json::to_string(v).unwrap_or_default());
        let state = if verdict.is_some() {
            JobState::Done
        } else {
            JobState::Failed
        };
        let v = verdict.cloned().unwrap_or_default();
        let has = verdict.is_some();
        let opt = |n: i64| P::I(has.then_some(n));
        let rows = self
            .tx(vec![
                (
                    // Only for a job that exists and is not cancelled.
                    "INSERT INTO results (job_id, attempt, worker, stored_ms, report, log_tail, error)
                     SELECT CAST($1 AS TEXT), CAST($2 AS BIGINT), CAST($3 AS TEXT), CAST($4 AS BIGINT),
                        CAST($5 AS TEXT), CAST($6 AS TEXT), CAST($7 AS TEXT)
                     WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND state <> 'cancelled')
                     ON CONFLICT DO NOTHING
                     RETURNING job_id"
                        .into(),
                    vec![
                        t(&r.job_id),
                        i(r.attempt),
                        t(&r.worker),
                        i(now),
                        P::T(report),
                        t(&r.log_tail),
                        P::T(r.error.clone()),
                    ],
                ),
                (
                    "UPDATE jobs SET state = $2, finished_ms = $3, outcome = $4, resolved = $5,
                        f2p_passed = $6, f2p_total = $7, p2p_passed = $8, p2p_total = $9, error = $10,
                        attempt = CASE WHEN attempt < $11 THEN $11 ELSE attempt END
                     WHERE id = $1 AND state IN ('queued', 'running')
                       AND EXISTS (SELECT 1 FROM results WHERE job_id = $1 AND attempt = $11 AND worker = $12 AND stored_ms = $3)
                     RETURNING id"
                        .into(),
                    vec![
                        t(&r.job_id),
                        t(state.name()),
                        i(now),
                        P::T(has.then(|| v.outcome.clone())),
                        opt(v.resolved as i64),
                        opt(v.f2p_passed),
                        opt(v.f2p_total),
                        opt(v.p2p_passed),
                        opt(v.p2p_total),
                        P::T(r.error.clone()),
                        i(r.attempt),
                        t(&r.worker),
                    ],
                ),
            ])
            .await?;
        if rows[0].is_empty() {
            let st = self.state_of(&r.job_id).await?;
            if matches!(st, None | Some(JobState::Cancelled)) {
                return Ok(Stored::Discarded);
            }
            self.query(
                "UPDATE jobs SET duplicate_results = duplicate_results + 1 WHERE id = $1",
                vec![t(&r.job_id)],
            )
            .await?;
            return Ok(Stored::Duplicate);
        }
        Ok(Stored::New)
    }

    async fn state_of(&self, id: &str) -> Result<Option<JobState>, StoreError> {
        let rows = self
            .query("SELECT state FROM jobs WHERE id = $1", vec![t(id)])
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r[0].text())
            .and_then(|s| JobState::parse(&s)))
    }

    /// Puts jobs a dead process was running back in the queue (embedded
    /// pool, at start-up). Their next claim is a new attempt.
    pub async fn requeue_running(&self) -> Result<u64, StoreError> {
        let r = self
            .query(
                "UPDATE jobs SET state = 'queued', worker = NULL WHERE state = 'running' RETURNING id",
                vec![],
            )
            .await?;
        Ok(r.len() as u64)
    }

    /// Cancels a queued or running job. Returns the job's state afterwards
    /// (None: no such job) and whether this call cancelled it.
    pub async fn cancel(&self, id: &str) -> Result<Option<(JobState, bool)>, StoreError> {
        let rows = self
            .query(
                "UPDATE jobs SET state = 'cancelled', finished_ms = $2
                 WHERE id = $1 AND state IN ('queued', 'running') RETURNING id",
                vec![t(id), i(now_ms())],
            )
            .await?;
        let st = self.state_of(id).await?;
        Ok(st.map(|s| (s, !rows.is_empty())))
    }

    /// Records where a job sits in the NATS stream (so a cancel can delete it).
    pub async fn set_queue_seq(&self, id: &str, seq: u64) -> Result<(), StoreError> {
        self.query(
            "UPDATE jobs SET queue_seq = $2 WHERE id = $1",
            vec![t(id), i(seq as i64)],
        )
        .await
        .map(|_| ())
    }

    /// Queued jobs not yet published to NATS (a crash between storing and
    /// publishing leaves some), oldest first.
    pub async fn unpublished(&self) -> Result<Vec<(String, JobSpec)>, StoreError> {
        let rows = self
            .query(
                "SELECT id, spec FROM jobs WHERE state = 'queued' AND queue_seq IS NULL ORDER BY seq",
                vec![],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                let id = r[0].text().unwrap_or_default();
                let spec = self.spec_of(&id, &r[1])?;
                Ok((id, spec))
            })
            .collect()
    }

    /// Marks the job at a stream sequence failed (its deliveries ran out).
    pub async fn fail_queued_seq(&self, seq: u64, error: &str) -> Result<bool, StoreError> {
        let r = self
            .query(
                "UPDATE jobs SET state = 'failed', error = $2, finished_ms = $3
                 WHERE queue_seq = $1 AND state IN ('queued', 'running') RETURNING id",
                vec![i(seq as i64), t(error), i(now_ms())],
            )
            .await?;
        Ok(!r.is_empty())
    }

    pub async fn queue_seq(&self, id: &str) -> Result<Option<u64>, StoreError> {
        let rows = self
            .query("SELECT queue_seq FROM jobs WHERE id = $1", vec![t(id)])
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r[0].int())
            .map(|n| n.max(0) as u64))
    }

    /// Jobs, newest first.
    pub async fn list(&self, f: &ListFilter) -> Result<(Vec<JobRecord>, i64), StoreError> {
        let mut wh = Vec::new();
        let mut ps = Vec::new();
        if let Some(s) = f.state {
            ps.push(t(s.name()));
            wh.push(format!("state = ${}", ps.len()));
        }
        if let Some(b) = &f.batch {
            ps.push(t(b));
            wh.push(format!("batch = ${}", ps.len()));
        }
        let wh = if wh.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", wh.join(" AND "))
        };
        let n = ps.len();
        let mut qp = ps.clone();
        qp.push(i(f.limit.clamp(1, 1000)));
        qp.push(i(f.offset.max(0)));
        let r = self
            .tx(vec![
                (
                    format!(
                        "SELECT {JOB_COLS} FROM jobs{wh} ORDER BY seq DESC LIMIT ${} OFFSET ${}",
                        n + 1,
                        n + 2
                    ),
                    qp,
                ),
                (format!("SELECT COUNT(*) FROM jobs{wh}"), ps),
            ])
            .await?;
        let total = r[1].first().and_then(|x| x[0].int()).unwrap_or(0);
        let jobs = r[0].iter().map(job_record).collect();
        Ok((jobs, total))
    }

    /// One job with its spec, attempts and result.
    pub async fn get(&self, id: &str) -> Result<Option<JobDetail>, StoreError> {
        let r = self
            .tx(vec![
                (
                    format!("SELECT {JOB_COLS}, spec FROM jobs WHERE id = $1"),
                    vec![t(id)],
                ),
                (
                    "SELECT attempt, worker, started_ms FROM attempts WHERE job_id = $1 ORDER BY attempt"
                        .into(),
                    vec![t(id)],
                ),
                (
                    "SELECT attempt, worker, stored_ms, report, log_tail, error FROM results WHERE job_id = $1"
                        .into(),
                    vec![t(id)],
                ),
            ])
            .await?;
        let Some(row) = r[0].first() else {
            return Ok(None);
        };
        let job = job_record(row);
        let spec = self.spec_of(id, &row[JOB_COLS.split(',').count()])?;
        let attempts = r[1]
            .iter()
            .map(|a| Attempt {
                attempt: a[0].int().unwrap_or(0),
                worker: a[1].text().unwrap_or_default(),
                started_ms: a[2].int().unwrap_or(0),
            })
            .collect();
        let result = r[2].first().map(|x| StoredResult {
            attempt: x[0].int().unwrap_or(0),
            worker: x[1].text().unwrap_or_default(),
            stored_ms: x[2].int().unwrap_or(0),
            report: x[3].text().and_then(|s| serde_json::from_str(&s).ok()),
            log_tail: x[4].text().unwrap_or_default(),
            error: x[5].text(),
        });
        Ok(Some(JobDetail {
            job,
            spec,
            attempts,
            result,
        }))
    }

    /// Whether a batch exists.
    pub async fn has_batch(&self, id: &str) -> Result<bool, StoreError> {
        let r = self
            .query("SELECT id FROM batches WHERE id = $1", vec![t(id)])
            .await?;
        Ok(!r.is_empty())
    }

    /// Counts by state and outcome, over one batch or every job.
    pub async fn counts(&self, batch: Option<&str>) -> Result<Counts, StoreError> {
        let (wh, ps) = match batch {
            Some(b) => (" WHERE batch = $1", vec![t(b)]),
            None => ("", vec![]),
        };
        let r = self
            .tx(vec![
                (
                    format!("SELECT state, COUNT(*) FROM jobs{wh} GROUP BY state"),
                    ps.clone(),
                ),
                (
                    format!(
                        "SELECT outcome, COUNT(*) FROM jobs{wh}{} GROUP BY outcome",
                        if wh.is_empty() {
                            " WHERE outcome IS NOT NULL"
                        } else {
                            " AND outcome IS NOT NULL"
                        }
                    ),
                    ps,
                ),
            ])
            .await?;
        let mut c = Counts::default();
        for x in &r[0] {
            let n = x[1].int().unwrap_or(0);
            c.total += n;
            c.by_state.insert(x[0].text().unwrap_or_default(), n);
        }
        for x in &r[1] {
            let k = x[0].text().unwrap_or_default();
            let n = x[1].int().unwrap_or(0);
            if k == "resolved" {
                c.resolved = n;
            }
            c.by_outcome.insert(k, n);
        }
        Ok(c)
    }
}

fn job_record(r: &Row) -> JobRecord {
    JobRecord {
        id: r[0].text().unwrap_or_default(),
        batch: r[1].text(),
        state: r[2]
            .text()
            .and_then(|s| JobState::parse(&s))
            .unwrap_or(JobState::Failed),
        instance_id: r[3].text().unwrap_or_default(),
        model_name_or_path: r[4].text().unwrap_or_default(),
        created_ms: r[5].int().unwrap_or(0),
        started_ms: r[6].int(),
        finished_ms: r[7].int(),
        attempt: r[8].int().unwrap_or(0),
        worker: r[9].text(),
        outcome: r[10].text(),
        resolved: r[11].int().map(|n| n != 0),
        f2p_passed: r[12].int(),
        f2p_total: r[13].int(),
        p2p_passed: r[14].int(),
        p2p_total: r[15].int(),
        error: r[16].text(),
        duplicate_results: r[17].int().unwrap_or(0),
    }
}

fn sqlite_query(c: &rusqlite::Connection, sql: &str, ps: &[P]) -> Result<Vec<Row>, String> {
    use rusqlite::types::{Value as SV, ValueRef};
    let mut st = c.prepare_cached(sql).map_err(|x| format!("{x}: {sql}"))?;
    let vals: Vec<SV> = ps
        .iter()
        .map(|p| match p {
            P::I(Some(n)) => SV::Integer(*n),
            P::T(Some(s)) => SV::Text(s.clone()),
            P::I(None) | P::T(None) => SV::Null,
        })
        .collect();
    let ncol = st.column_count();
    let mut rows = st
        .query(rusqlite::params_from_iter(vals.iter()))
        .map_err(|x| x.to_string())?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(|x| x.to_string())? {
        let mut row = Vec::with_capacity(ncol);
        for k in 0..ncol {
            row.push(match r.get_ref(k).map_err(|x| x.to_string())? {
                ValueRef::Null => V::Null,
                ValueRef::Integer(n) => V::I(n),
                ValueRef::Real(f) => V::I(f as i64),
                ValueRef::Text(b) | ValueRef::Blob(b) => {
                    V::T(String::from_utf8_lossy(b).into_owned())
                }
            });
        }
        out.push(row);
    }
    Ok(out)
}

async fn pg_query(
    c: &tokio_postgres::Transaction<'_>,
    sql: &str,
    ps: &[P],
) -> Result<Vec<Row>, String> {
    use tokio_postgres::types::{ToSql, Type};
    let params: Vec<&(dyn ToSql + Sync)> = ps
        .iter()
        .map(|p| match p {
            P::I(v) => v as &(dyn ToSql + Sync),
            P::T(v) => v as &(dyn ToSql + Sync),
        })
        .collect();
    let rows = c
        .query(sql, &params)
        .await
        .map_err(|x| format!("{x}: {sql}"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut row = Vec::with_capacity(r.len());
        for (k, col) in r.columns().iter().enumerate() {
            let v = match *col.type_() {
                Type::INT8 => r
                    .try_get::<_, Option<i64>>(k)
                    .map(|o| o.map_or(V::Null, V::I)),
                Type::INT4 => r
                    .try_get::<_, Option<i32>>(k)
                    .map(|o| o.map_or(V::Null, |n| V::I(n.into()))),
                _ => r
                    .try_get::<_, Option<String>>(k)
                    .map(|o| o.map_or(V::Null, V::T)),
            }
            .map_err(|x| x.to_string())?;
            row.push(v);
        }
        out.push(row);
    }
    Ok(out)
}
