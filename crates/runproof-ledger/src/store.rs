//! SQLite storage: one schema with numbered migrations (tracked in
//! `PRAGMA user_version`), WAL journal, and a background writer that batches
//! inserts so the gateway never waits on disk in its request path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::prices::Usage;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot create ledger directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "ledger database {path} has schema version {found}, newer than this runproof ({known}); upgrade runproof"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("ledger writer failed, charges are held in memory and traffic is refused: {0}")]
    WriterFailed(String),
    #[error("no home directory: set HOME or pass --ledger PATH")]
    NoHome,
}

/// Migrations, applied in order; index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    // 1: runs, requests (with usage and cost), compute, verdicts.
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        task TEXT,
        started_ms INTEGER NOT NULL,
        ended_ms INTEGER,
        budget_usd REAL,
        status TEXT
     );
     CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        run_id TEXT,
        ts_ms INTEGER NOT NULL,
        provider TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        stream INTEGER NOT NULL,
        http_status INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cost_usd REAL,
        estimated INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        duration_ms INTEGER NOT NULL
     );
     CREATE INDEX requests_ts ON requests(ts_ms);
     CREATE INDEX requests_run ON requests(run_id);
     CREATE TABLE compute (
        id INTEGER PRIMARY KEY,
        run_id TEXT,
        ts_ms INTEGER NOT NULL,
        cpu_seconds REAL NOT NULL,
        mem_gib_seconds REAL NOT NULL,
        cost_usd REAL NOT NULL
     );
     CREATE TABLE verdicts (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        task TEXT,
        verified INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL
     );",
    // 2: runs carry the agent's name; verdicts get an identity (`key`, so
    // recording the same graded attempt twice keeps one row), the agent, the
    // command that graded them and the outcome, and may name no run (an eval
    // prediction is joined to its runs by task and agent).
    "ALTER TABLE runs ADD COLUMN agent TEXT;
     CREATE TABLE verdicts_v2 (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        run_id TEXT,
        task TEXT,
        agent TEXT,
        source TEXT NOT NULL,
        outcome TEXT,
        verified INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL
     );
     INSERT INTO verdicts_v2 (key, run_id, task, agent, source, outcome, verified, ts_ms)
        SELECT 'run:' || run_id || '#' || id, run_id, task, NULL, 'bench', NULL, verified, ts_ms
        FROM verdicts;
     DROP TABLE verdicts;
     ALTER TABLE verdicts_v2 RENAME TO verdicts;
     CREATE INDEX verdicts_task ON verdicts(task, agent);
     CREATE INDEX runs_task ON runs(task, agent);",
];

/// One model call, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub run_id: Option<String>,
    pub ts_ms: i64,
    /// `openai` or `anthropic`.
    pub provider: String,
    /// `chat.completions`, `responses`, `messages`.
    pub endpoint: String,
    pub model: String,
    pub stream: bool,
    pub http_status: u16,
    pub usage: Usage,
    /// `None` when the model has no price: unknown, never 0.
    pub cost_usd: Option<f64>,
    /// True when usage was estimated (stream cut before the upstream's numbers).
    pub estimated: bool,
    /// `ok`, `upstream_error`, `client_hangup`, `cut_budget`, `malformed`...
    pub outcome: String,
    pub duration_ms: u64,
}

/// A run, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    /// The task (instance id) the run worked on, when known.
    pub task: Option<String>,
    /// The agent's name (SWE-bench's `model_name_or_path`), when known.
    pub agent: Option<String>,
    pub started_ms: i64,
    pub budget_usd: Option<f64>,
}

/// How a run ended ([`Ledger::run_ends`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RunEnd {
    pub id: String,
    /// `ok`, `failed`, `stopped`, or `not_run` (the command never started).
    pub status: Option<String>,
    pub ended_ms: Option<i64>,
}

/// A verdict on one graded attempt (a patch for a task), from `bench`,
/// `verify` or `eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    /// Identity of the graded attempt. Recording a verdict with a key already
    /// in the ledger replaces that verdict instead of adding one, so a re-run
    /// of `eval` counts each fix once. `bench` uses `run:<run id>`; `verify`
    /// and `eval` use the task, the agent and the patch's SHA-256.
    pub key: String,
    /// The agent run that produced the patch, when known. Without it the
    /// verdict is joined to the runs with the same task and agent.
    pub run_id: Option<String>,
    pub task: Option<String>,
    pub agent: Option<String>,
    /// `bench`, `verify` or `eval`.
    pub source: String,
    /// The grader's outcome (`resolved`, `unresolved`, `patch_did_not_apply`...).
    pub outcome: String,
    /// True when the patch was verified (resolved).
    pub verified: bool,
    pub ts_ms: i64,
}

/// Compute usage of a run, priced by the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputeRecord {
    pub run_id: Option<String>,
    pub ts_ms: i64,
    pub cpu_seconds: f64,
    pub mem_gib_seconds: f64,
    pub cost_usd: f64,
}

/// The default ledger path: `$XDG_DATA_HOME/runproof/ledger.db` or
/// `~/.local/share/runproof/ledger.db`.
pub fn default_path() -> Result<PathBuf, LedgerError> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("runproof").join("ledger.db"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or(LedgerError::NoHome)?;
    Ok(PathBuf::from(home).join(".local/share/runproof/ledger.db"))
}

/// How long a connection waits for another one's lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Switch the database to WAL (a setting stored in the file). While another
/// connection opens the same new database, SQLite refuses the switch at once
/// with SQLITE_BUSY instead of waiting on the busy handler, so retry within
/// the busy timeout.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            res => return res,
        }
    }
}

/// A connection to the ledger database.
pub struct Ledger {
    conn: Connection,
    path: String,
}

impl Ledger {
    /// Open (creating if needed) and migrate the database at `path`.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let p = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let sql = |source| LedgerError::Sqlite {
            path: p.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        set_wal(&conn).map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        let mut l = Ledger { conn, path: p };
        l.migrate()?;
        Ok(l)
    }

    fn err(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub fn schema_version(&self) -> Result<i64, LedgerError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    fn migrate(&mut self) -> Result<(), LedgerError> {
        let known = MIGRATIONS.len() as i64;
        let too_new = |found| LedgerError::TooNew {
            path: self.path.clone(),
            found,
            known,
        };
        let found = self.schema_version()?;
        if found > known {
            return Err(too_new(found));
        }
        if found == known {
            return Ok(());
        }
        let path = self.path.clone();
        let sql = |source| LedgerError::Sqlite {
            path: path.clone(),
            source,
        };
        // Take the write lock first (BEGIN IMMEDIATE, waiting up to the busy
        // timeout), then read the version again: another process or thread
        // may have migrated the database since, and running its migrations
        // a second time fails ("table runs already exists").
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        if found > known {
            return Err(too_new(found));
        }
        for m in MIGRATIONS.iter().skip(found as usize) {
            tx.execute_batch(m).map_err(sql)?;
        }
        tx.pragma_update(None, "user_version", known).map_err(sql)?;
        tx.commit().map_err(sql)
    }

    pub fn start_run(&self, run: &RunRecord) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "INSERT INTO runs (id, task, agent, started_ms, budget_usd) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET task = excluded.task, agent = excluded.agent,
                    budget_usd = excluded.budget_usd",
                params![run.id, run.task, run.agent, run.started_ms, run.budget_usd],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn end_run(&self, id: &str, status: &str, ended_ms: i64) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "UPDATE runs SET ended_ms = ?2, status = ?3 WHERE id = ?1",
                params![id, ended_ms, status],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn record_request(&self, r: &RequestRecord) -> Result<(), LedgerError> {
        insert_request(&self.conn, r).map_err(|e| self.err(e))
    }

    pub fn record_compute(&self, c: &ComputeRecord) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "INSERT INTO compute (run_id, ts_ms, cpu_seconds, mem_gib_seconds, cost_usd)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    c.run_id,
                    c.ts_ms,
                    c.cpu_seconds,
                    c.mem_gib_seconds,
                    c.cost_usd
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Record a verdict. A verdict whose key is already recorded replaces
    /// the earlier one (its outcome; the first time it was recorded is kept),
    /// so recording the same graded attempt again does not count it twice.
    /// Returns true when the key was new.
    pub fn record_verdict(&self, v: &VerdictRecord) -> Result<bool, LedgerError> {
        let existed = self
            .conn
            .query_row(
                "SELECT 1 FROM verdicts WHERE key = ?1",
                params![v.key],
                |_| Ok(()),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .is_some();
        self.conn
            .execute(
                "INSERT INTO verdicts (key, run_id, task, agent, source, outcome, verified, ts_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(key) DO UPDATE SET
                    run_id = COALESCE(excluded.run_id, verdicts.run_id),
                    source = excluded.source, outcome = excluded.outcome,
                    verified = excluded.verified",
                params![
                    v.key, v.run_id, v.task, v.agent, v.source, v.outcome, v.verified, v.ts_ms
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(!existed)
    }

    /// Every verdict, oldest first.
    pub fn verdicts(&self) -> Result<Vec<VerdictRecord>, LedgerError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT key, run_id, task, agent, source, COALESCE(outcome, ''), verified, ts_ms
                 FROM verdicts ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(VerdictRecord {
                    key: r.get(0)?,
                    run_id: r.get(1)?,
                    task: r.get(2)?,
                    agent: r.get(3)?,
                    source: r.get(4)?,
                    outcome: r.get(5)?,
                    verified: r.get(6)?,
                    ts_ms: r.get(7)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// All requests of a run, oldest first.
    pub fn requests(&self, run_id: Option<&str>) -> Result<Vec<RequestRecord>, LedgerError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT run_id, ts_ms, provider, endpoint, model, stream, http_status,
                        input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
                        reasoning_tokens, cost_usd, estimated, outcome, duration_ms
                 FROM requests WHERE (?1 IS NULL OR run_id = ?1) ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![run_id], |r| {
                Ok(RequestRecord {
                    run_id: r.get(0)?,
                    ts_ms: r.get(1)?,
                    provider: r.get(2)?,
                    endpoint: r.get(3)?,
                    model: r.get(4)?,
                    stream: r.get(5)?,
                    http_status: r.get(6)?,
                    usage: Usage {
                        input: r.get::<_, i64>(7)? as u64,
                        output: r.get::<_, i64>(8)? as u64,
                        cache_read: r.get::<_, i64>(9)? as u64,
                        cache_write: r.get::<_, i64>(10)? as u64,
                        reasoning: r.get::<_, i64>(11)? as u64,
                    },
                    cost_usd: r.get(12)?,
                    estimated: r.get(13)?,
                    outcome: r.get(14)?,
                    duration_ms: r.get::<_, i64>(15)? as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// Every run, oldest first: its id and how it ended (status and end
    /// time; both `None` while it runs).
    pub fn run_ends(&self) -> Result<Vec<RunEnd>, LedgerError> {
        let mut st = self
            .conn
            .prepare("SELECT id, status, ended_ms FROM runs ORDER BY started_ms, id")
            .map_err(|e| self.err(e))?;
        st.query_map([], |r| {
            Ok(RunEnd {
                id: r.get(0)?,
                status: r.get(1)?,
                ended_ms: r.get(2)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Whether a run exists.
    pub fn has_run(&self, id: &str) -> Result<bool, LedgerError> {
        self.conn
            .query_row("SELECT 1 FROM runs WHERE id = ?1", params![id], |_| Ok(()))
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err(e))
    }
}

const INSERT_REQUEST: &str =
    "INSERT INTO requests (run_id, ts_ms, provider, endpoint, model, stream, http_status,
    input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
    cost_usd, estimated, outcome, duration_ms)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

fn insert_request(conn: &Connection, r: &RequestRecord) -> rusqlite::Result<()> {
    let mut st = conn.prepare_cached(INSERT_REQUEST)?;
    insert_with(&mut st, r)
}

fn insert_with(st: &mut rusqlite::Statement<'_>, r: &RequestRecord) -> rusqlite::Result<()> {
    st.execute(params![
        r.run_id,
        r.ts_ms,
        r.provider,
        r.endpoint,
        r.model,
        r.stream,
        r.http_status,
        r.usage.input as i64,
        r.usage.output as i64,
        r.usage.cache_read as i64,
        r.usage.cache_write as i64,
        r.usage.reasoning as i64,
        r.cost_usd,
        r.estimated,
        r.outcome,
        r.duration_ms as i64,
    ])?;
    Ok(())
}

enum Op {
    Request(Box<RequestRecord>),
    Flush(mpsc::Sender<Result<(), String>>),
}

struct Health {
    ok: AtomicBool,
    error: Mutex<Option<String>>,
}

/// A background thread that owns a ledger connection and writes request
/// records in batched transactions. If a write fails, the failed records are
/// kept and retried, [`LedgerWriter::healthy`] turns false and stays false
/// until a retry succeeds: callers must refuse new spending meanwhile.
#[derive(Clone)]
pub struct LedgerWriter {
    tx: mpsc::Sender<Op>,
    health: Arc<Health>,
}

impl LedgerWriter {
    pub fn spawn(ledger: Ledger) -> LedgerWriter {
        let (tx, rx) = mpsc::channel::<Op>();
        let health = Arc::new(Health {
            ok: AtomicBool::new(true),
            error: Mutex::new(None),
        });
        let h = health.clone();
        std::thread::Builder::new()
            .name("runproof-ledger".into())
            .spawn(move || writer_loop(ledger, rx, h))
            .expect("spawn ledger writer thread");
        LedgerWriter { tx, health }
    }

    /// Queue a record. Never blocks on disk.
    pub fn submit(&self, r: RequestRecord) {
        if self.tx.send(Op::Request(Box::new(r))).is_err() {
            self.fail("ledger writer thread has stopped".into());
        }
    }

    /// Wait until everything queued so far is committed.
    pub fn flush(&self) -> Result<(), LedgerError> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Op::Flush(tx))
            .map_err(|_| LedgerError::WriterFailed("ledger writer thread has stopped".into()))?;
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(LedgerError::WriterFailed(e)),
            Err(_) => Err(LedgerError::WriterFailed(
                "ledger writer thread has stopped".into(),
            )),
        }
    }

    pub fn healthy(&self) -> bool {
        self.health.ok.load(Ordering::Acquire)
    }

    /// The last write error, if the writer is unhealthy.
    pub fn error(&self) -> Option<String> {
        if self.healthy() {
            return None;
        }
        self.health
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn fail(&self, msg: String) {
        *self.health.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
        self.health.ok.store(false, Ordering::Release);
    }
}

/// Shortest time between two commits while records keep arriving. Records
/// that arrive meanwhile wait in the channel and join the next transaction,
/// so under load the writer wakes and commits a few hundred times a second
/// rather than once per request, and the threads that submit records (the
/// gateway's I/O threads) find it awake and never have to wake it up. When
/// idle it blocks, and the first record after a pause is committed at once.
/// A failed write is noticed at most this much later than before batching;
/// the records are held and retried either way.
const COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);

/// Most records in one transaction.
const MAX_BATCH: usize = 16_384;

fn writer_loop(mut ledger: Ledger, rx: mpsc::Receiver<Op>, health: Arc<Health>) {
    let mut pending: Vec<RequestRecord> = Vec::new();
    let mut flushes: Vec<mpsc::Sender<Result<(), String>>> = Vec::new();
    let mut last_commit: Option<std::time::Instant> = None;
    loop {
        // Block for the first op (or retry pending after a pause).
        let first = if pending.is_empty() {
            match rx.recv() {
                Ok(op) => Some(op),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(op) => Some(op),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Last attempt before exiting.
                    let _ = write_batch(&mut ledger, &pending);
                    return;
                }
            }
        };
        // A flush is answered now; records wait for the commit interval.
        if matches!(first, Some(Op::Request(_)))
            && let Some(wait) = last_commit.and_then(|t| COMMIT_INTERVAL.checked_sub(t.elapsed()))
        {
            std::thread::sleep(wait);
        }
        let mut next = first;
        let mut taken = 0;
        while let Some(op) = next {
            match op {
                Op::Request(r) => pending.push(*r),
                Op::Flush(tx) => flushes.push(tx),
            }
            taken += 1;
            next = if taken < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let result = if pending.is_empty() {
            Ok(())
        } else {
            let r = write_batch(&mut ledger, &pending);
            last_commit = Some(std::time::Instant::now());
            r
        };
        match &result {
            Ok(()) => {
                pending.clear();
                *health.error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                health.ok.store(true, Ordering::Release);
            }
            Err(e) => {
                let msg = format!(
                    "cannot write to ledger {}: {e}; {} charge(s) held in memory",
                    ledger.path(),
                    pending.len()
                );
                eprintln!("runproof: {msg}");
                *health.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
                health.ok.store(false, Ordering::Release);
            }
        }
        for f in flushes.drain(..) {
            let _ = f.send(result.clone().map_err(|e| e.to_string()));
        }
    }
}

fn write_batch(ledger: &mut Ledger, batch: &[RequestRecord]) -> Result<(), String> {
    let conn = &mut ledger.conn;
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    {
        // One statement for the whole batch.
        let mut st = tx
            .prepare_cached(INSERT_REQUEST)
            .map_err(|e| e.to_string())?;
        for r in batch {
            insert_with(&mut st, r).map_err(|e| e.to_string())?;
        }
    }
    tx.commit().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(model: &str, cost: Option<f64>) -> RequestRecord {
        RequestRecord {
            run_id: Some("r1".into()),
            ts_ms: 1000,
            provider: "openai".into(),
            endpoint: "chat.completions".into(),
            model: model.into(),
            stream: true,
            http_status: 200,
            usage: Usage {
                input: 10,
                output: 20,
                cache_read: 3,
                cache_write: 4,
                reasoning: 5,
            },
            cost_usd: cost,
            estimated: false,
            outcome: "ok".into(),
            duration_ms: 7,
        }
    }

    #[test]
    fn migrates_once_and_round_trips_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/ledger.db");
        let l = Ledger::open(&p).unwrap();
        assert_eq!(l.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let mode: String = l
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        l.record_request(&rec("gpt-4o", Some(0.5))).unwrap();
        l.record_request(&rec("mystery", None)).unwrap();
        drop(l);
        let l = Ledger::open(&p).unwrap(); // reopen: no re-migration
        let rs = l.requests(Some("r1")).unwrap();
        assert_eq!(rs, vec![rec("gpt-4o", Some(0.5)), rec("mystery", None)]);
    }

    #[test]
    fn a_new_database_opened_by_many_at_once_is_migrated_once() {
        // Several openers race to create and migrate the same new file,
        // as bench's parallel runs or two runproof processes do. Each round
        // starts them together on a database that does not exist yet.
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join(format!("race-{round}/ledger.db"));
            let n = 8;
            let gate = std::sync::Barrier::new(n);
            let results: Vec<Result<i64, String>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..n)
                    .map(|_| {
                        s.spawn(|| {
                            gate.wait();
                            Ledger::open(&p)
                                .and_then(|l| l.schema_version())
                                .map_err(|e| e.to_string())
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for r in results {
                assert_eq!(r, Ok(MIGRATIONS.len() as i64), "round {round}");
            }
            let l = Ledger::open(&p).unwrap();
            let mode: String = l
                .conn()
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal", "round {round}");
            l.start_run(&RunRecord {
                id: "r".into(),
                task: None,
                agent: None,
                started_ms: 1,
                budget_usd: None,
            })
            .unwrap();
        }
    }

    #[test]
    fn migrates_version_1_verdicts_keeping_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v1.db");
        {
            let c = Connection::open(&p).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute_batch(
                "INSERT INTO runs (id, task, started_ms) VALUES ('r1', 't1', 5);
                 INSERT INTO verdicts (run_id, task, verified, ts_ms) VALUES ('r1', 't1', 1, 9);
                 INSERT INTO verdicts (run_id, task, verified, ts_ms) VALUES ('r1', 't1', 0, 10);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let l = Ledger::open(&p).unwrap();
        assert_eq!(l.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let v = l.verdicts().unwrap();
        assert_eq!(v.len(), 2, "{v:?}");
        assert_ne!(v[0].key, v[1].key);
        assert_eq!(
            (v[0].run_id.as_deref(), v[0].verified, v[0].source.as_str()),
            (Some("r1"), true, "bench")
        );
    }

    #[test]
    fn a_verdict_recorded_twice_is_one_verdict_with_the_latest_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("l.db")).unwrap();
        let mut v = VerdictRecord {
            key: "eval:t1:A:abc".into(),
            run_id: None,
            task: Some("t1".into()),
            agent: Some("A".into()),
            source: "eval".into(),
            outcome: "unresolved".into(),
            verified: false,
            ts_ms: 100,
        };
        assert!(l.record_verdict(&v).unwrap());
        v.outcome = "resolved".into();
        v.verified = true;
        v.ts_ms = 200;
        assert!(!l.record_verdict(&v).unwrap());
        let all = l.verdicts().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].verified, all[0].ts_ms), (true, 100));
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.db");
        let l = Ledger::open(&p).unwrap();
        l.conn().pragma_update(None, "user_version", 99).unwrap();
        drop(l);
        let e = Ledger::open(&p).err().unwrap().to_string();
        assert!(e.contains("schema version 99"), "{e}");
    }

    #[test]
    fn writer_batches_and_reports_failure_then_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.db");
        let w = LedgerWriter::spawn(Ledger::open(&p).unwrap());
        for _ in 0..100 {
            w.submit(rec("gpt-4o", Some(0.01)));
        }
        w.flush().unwrap();
        assert!(w.healthy());
        // Make inserts fail from another connection (a real SQLite error).
        let other = Ledger::open(&p).unwrap();
        other
            .conn()
            .execute_batch("CREATE TRIGGER no_more BEFORE INSERT ON requests BEGIN SELECT RAISE(FAIL, 'disk refused'); END;")
            .unwrap();
        w.submit(rec("gpt-4o", Some(0.02)));
        assert!(w.flush().is_err());
        assert!(!w.healthy());
        assert!(w.error().unwrap().contains("disk refused"));
        // Fix it: the held charge is written on the next batch, none lost.
        other.conn().execute_batch("DROP TRIGGER no_more;").unwrap();
        w.flush().unwrap();
        assert!(w.healthy());
        assert_eq!(other.requests(None).unwrap().len(), 101);
    }
}
