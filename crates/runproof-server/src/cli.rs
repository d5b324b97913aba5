//! `runproof serve` and `runproof worker`: flags, start-up checks, runtime.

use crate::api::Catalog;
use crate::http::{App, Auth, DEFAULT_MAX_BODY, Dispatch};
use crate::job::Grader;
use crate::pool::Pool;
use crate::queue::{Publisher, Queue, QueueConfig, ResultHook, WorkerOptions};
use crate::store::Store;
use clap::{Args, ValueEnum};
use runproof_task::cli::NetArgs;
use runproof_task::{EnvCache, Harness, NetworkAccess, SandboxRunner};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub const SERVE_HELP: &str = "\
Without --nats, everything runs in this process: jobs are stored in the
database (--db, SQLite by default) and graded by --workers local workers,
each job in fresh sandboxes exactly as `runproof verify` grades it. A
restart picks up queued jobs and re-queues the ones that were running.

With --nats URL, jobs are published to the JetStream work queue
RUNPROOF_JOBS (consumer runproof-workers) and graded by `runproof worker`
processes on any host; their results come back on RUNPROOF_EVENTS and are
stored once per job. --db postgres://USER@HOST/DB shares the job store.

The server binds to loopback by default. On any other address it needs
--token-file: every request must then send `Authorization: Bearer TOKEN`
(or HTTP Basic with the token as password). The API is in docs/API.md.
Exit status: 2 when it cannot start (bad flags, database, NATS, port).";

/// `runproof serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Job store: a SQLite file, or postgres://USER[:PASSWORD]@HOST[:PORT]/DB.
    /// Default: $XDG_DATA_HOME/runproof/jobs.sqlite (~/.local/share/runproof/jobs.sqlite).
    #[arg(long, value_name = "FILE|URL")]
    pub db: Option<String>,
    /// Local workers grading jobs in this process (default 2; 0 with --nats).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Task files whose instances jobs may name by instance_id (repeatable).
    #[arg(long = "tasks", value_name = "FILE")]
    pub tasks: Vec<PathBuf>,
    /// Directories inline tasks' repo_path may point into, besides the
    /// --tasks files' directories (repeatable).
    #[arg(long = "repo-root", value_name = "DIR")]
    pub repo_roots: Vec<PathBuf>,
    /// Network for the graded tasks' `repo_url` clones and `setup` (the
    /// same flags as `runproof verify`); tests never get any.
    #[command(flatten)]
    pub net: NetArgs,
    /// File holding the API token (at least 16 characters; not readable by
    /// other users). Required to listen on a non-loopback address.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Environment cache (default: $XDG_CACHE_HOME/runproof or ~/.cache/runproof).
    #[arg(long, env = "RUNPROOF_CACHE")]
    pub cache: Option<PathBuf>,
    /// Scratch directory for the jobs graded here (default: a directory in $TMPDIR).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Ledger whose costs the dashboard shows and where verdicts are
    /// recorded (default: the config's ledger).
    #[arg(long, value_name = "FILE", conflicts_with = "no_ledger")]
    pub ledger: Option<PathBuf>,
    /// Record no verdicts and show no costs.
    #[arg(long)]
    pub no_ledger: bool,
    /// Publish jobs to NATS JetStream at this URL instead of grading them here.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY, value_name = "BYTES")]
    pub max_body: usize,
    /// How the start-up line is printed (json: one object with the address).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Settings of the JetStream consumer, used when it is created.
#[derive(Debug, Args, Clone)]
pub struct QueueArgs {
    /// Seconds a worker may go without acking or reporting progress on a
    /// job before it goes to another worker (workers report progress every
    /// third of it).
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub ack_wait: f64,
    /// Deliveries of one job before it is marked failed.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_deliver: i64,
}

impl QueueArgs {
    fn config(&self) -> Result<QueueConfig, String> {
        if !(self.ack_wait.is_finite() && self.ack_wait >= 1.0 && self.ack_wait <= 86400.0) {
            return Err(format!(
                "--ack-wait {}: give seconds between 1 and 86400",
                self.ack_wait
            ));
        }
        if self.max_deliver < 1 {
            return Err("--max-deliver must be at least 1".into());
        }
        Ok(QueueConfig {
            ack_wait: Duration::from_secs_f64(self.ack_wait),
            max_deliver: self.max_deliver,
        })
    }
}

pub const WORKER_HELP: &str = "\
Pulls jobs that `runproof serve --nats URL` published from the JetStream
stream RUNPROOF_JOBS (durable consumer runproof-workers), grades each in
fresh local sandboxes like `runproof verify`, and publishes the result to
RUNPROOF_EVENTS. A job is acked only once JetStream has stored its result;
while it runs the worker reports progress, so only a dead worker's job is
redelivered. The tasks' repositories (repo_path) must exist at the same
paths on this host. Runs until killed; killing it at any point loses nothing.";

/// `runproof worker`
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// NATS server URL (nats://HOST:PORT).
    #[arg(long, value_name = "URL")]
    pub nats: String,
    /// Jobs graded at once.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub jobs: usize,
    /// Worker name in job attempts (default: HOSTNAME-PID).
    #[arg(long)]
    pub name: Option<String>,
    /// Environment cache (default: $XDG_CACHE_HOME/runproof or ~/.cache/runproof).
    #[arg(long, env = "RUNPROOF_CACHE")]
    pub cache: Option<PathBuf>,
    /// Scratch directory (default: a directory in $TMPDIR).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Network for the jobs' `repo_url` clones and `setup`, as on `serve`.
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
}

/// Why `serve` or `worker` could not start (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    #[error("cannot listen on {addr}: {source}; choose another --listen address or port")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

fn default_cache() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("runproof");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache").join("runproof"),
        None => std::env::temp_dir().join("runproof-cache"),
    }
}

fn default_db() -> Result<String, ServeError> {
    let ledger = runproof_ledger::default_path()
        .map_err(|e| ServeError::Usage(format!("{e} (or pass --db FILE)")))?;
    Ok(ledger
        .with_file_name("jobs.sqlite")
        .to_string_lossy()
        .into_owned())
}

/// The grader `serve` and `worker` use: the sandbox runner and the
/// environment cache, as `runproof verify` grades. `network` serves the
/// `repo_url` clones and `setup` commands (`None`: they get none).
pub fn grader(
    cache: Option<&Path>,
    work: Option<&Path>,
    network: Option<Arc<dyn NetworkAccess>>,
) -> Grader {
    let cache = cache.map(Path::to_path_buf).unwrap_or_else(default_cache);
    let cache = std::path::absolute(&cache).unwrap_or(cache);
    let work = work
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::env::temp_dir().join("runproof-jobs"));
    let work = std::path::absolute(&work).unwrap_or(work);
    Grader {
        harness: Harness {
            runner: Arc::new(SandboxRunner {
                network,
                ..Default::default()
            }),
            workspaces: Arc::new(EnvCache::new(cache)),
            reruns: 0,
            keep_workspaces: false,
        },
        work_dir: work,
        base_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
    }
}

/// Reads and checks a token file.
pub fn read_token(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "--token-file {}: other users can read it (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        ));
    }
    if meta.len() > 4096 {
        return Err(format!(
            "--token-file {}: {} bytes is not a token; the file must hold only the token",
            path.display(),
            meta.len()
        ));
    }
    let t = std::fs::read_to_string(path)
        .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    let t = t.trim().to_string();
    if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "--token-file {}: the token must be at least 16 characters with no spaces, e.g. from `openssl rand -hex 24`",
            path.display()
        ));
    }
    Ok(t)
}

fn runtime() -> Result<tokio::runtime::Runtime, ServeError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)
}

/// A started server.
#[derive(Debug, Clone)]
pub struct Running {
    pub addr: SocketAddr,
    pub mode: String,
    pub db: String,
}

/// `runproof serve`. Runs until the process is stopped; returns only on a
/// start-up failure. `hook` is called with each newly stored verdict.
pub fn serve(
    a: &ServeArgs,
    hook: Option<ResultHook>,
    network: Option<Arc<dyn NetworkAccess>>,
) -> Result<(), ServeError> {
    runtime()?.block_on(async move {
        let r = start(a, hook, network).await?;
        match a.format {
            Format::Json => println!(
                "{}",
                serde_json::json!({"listen": r.addr.to_string(), "url": format!("http://{}/", r.addr), "mode": r.mode, "db": r.db})
            ),
            Format::Text => println!(
                "runproof serve: http://{}/ ({}; job store {})",
                r.addr, r.mode, r.db
            ),
        }
        let _ = std::io::stdout().flush();
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// Starts everything `runproof serve` runs (store, pool or NATS loops, HTTP
/// server) on the current tokio runtime and returns once it is listening.
/// `network` is what `a.net` asks for (built by the caller).
pub async fn start(
    a: &ServeArgs,
    hook: Option<ResultHook>,
    network: Option<Arc<dyn NetworkAccess>>,
) -> Result<Running, ServeError> {
    check_network(&a.net, &network)?;
    let token = match &a.token_file {
        Some(p) => Some(read_token(p).map_err(ServeError::Usage)?),
        None => None,
    };
    if token.is_none() && !a.listen.ip().is_loopback() {
        return Err(ServeError::Usage(format!(
            "refusing to listen on {} without a token: anyone who can reach it could submit jobs; pass --token-file FILE, or listen on 127.0.0.1",
            a.listen
        )));
    }
    let qcfg = a.queue.config().map_err(ServeError::Usage)?;
    if a.max_body < 1024 {
        return Err(ServeError::Usage("--max-body must be at least 1024".into()));
    }
    let mut catalog = Catalog::load(&a.tasks, &a.repo_roots).map_err(ServeError::Usage)?;
    let db = match &a.db {
        Some(d) => d.clone(),
        None => default_db()?,
    };
    let ledger = if a.no_ledger { None } else { a.ledger.clone() };
    let workers = a.workers.unwrap_or(if a.nats.is_some() { 0 } else { 2 });
    let grader = Arc::new(grader(a.cache.as_deref(), a.work_dir.as_deref(), network));
    catalog.runner = Some(grader.harness.runner.clone());
    catalog.check_fetches().map_err(ServeError::Usage)?;
    let store = Store::open(&db).await?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: a.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(a.listen);
    let (dispatch, mode) = match &a.nats {
        None => {
            let n = store.requeue_running().await?;
            if n > 0 {
                eprintln!(
                    "runproof serve: {n} job(s) that were running when the server stopped are queued again"
                );
            }
            let pool = Pool {
                store: store.clone(),
                grader: grader.clone(),
                notify: Arc::default(),
                running: Arc::default(),
                hook: hook.clone(),
            };
            pool.start(workers);
            (
                Dispatch::Local {
                    notify: pool.notify.clone(),
                    running: pool.running.clone(),
                },
                format!("embedded, {workers} local workers"),
            )
        }
        Some(url) => {
            let q = Arc::new(Queue::connect(url, "runproof serve", qcfg).await?);
            let publisher = Publisher::new(&q, store.clone());
            tokio::spawn(crate::queue::consume_events(
                q.clone(),
                store.clone(),
                hook.clone(),
            ));
            tokio::spawn(crate::queue::watch_max_deliveries(q.clone(), store.clone()));
            {
                // Jobs stored but not published (a crash in between, or
                // NATS away): now, and every 10 s.
                let p = publisher.clone();
                tokio::spawn(async move {
                    loop {
                        match p.republish().await {
                            Ok(0) => {}
                            Ok(n) => eprintln!("runproof serve: published {n} waiting job(s)"),
                            Err(e) => eprintln!("runproof serve: {e}"),
                        }
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                });
            }
            if workers > 0 {
                let o = WorkerOptions {
                    url: url.clone(),
                    name: format!("serve-{}", std::process::id()),
                    jobs: workers,
                    grader: (*grader).clone(),
                    config: qcfg,
                };
                tokio::spawn(async move {
                    if let Err(e) = crate::queue::run_worker(o).await {
                        eprintln!("runproof serve: local worker: {e}");
                    }
                });
            }
            (
                Dispatch::Nats(Box::new(publisher)),
                format!("nats {url}, {workers} local workers"),
            )
        }
    };
    let app = Arc::new(App {
        store: store.clone(),
        catalog,
        dispatch,
        auth: Auth { token },
        ledger,
        max_body: a.max_body,
        mode: mode.clone(),
    });
    tokio::spawn(crate::http::serve(app, listener));
    Ok(Running {
        addr,
        mode,
        db: store.name().to_string(),
    })
}

/// `--allow` without a network to honour it would grade with less than
/// the user asked for; refuse to start instead.
fn check_network(
    net: &NetArgs,
    network: &Option<Arc<dyn NetworkAccess>>,
) -> Result<(), ServeError> {
    if network.is_none() && !(net.allow.is_empty() && net.allow_address.is_empty()) {
        return Err(ServeError::Usage(
            "--allow was given but no egress proxy was set up for it (a caller of runproof_server::cli must build the network from --allow)".into(),
        ));
    }
    Ok(())
}

/// `runproof worker`. Runs until the process is stopped. `network` is
/// what `a.net` asks for (built by the caller).
pub fn worker(a: &WorkerArgs, network: Option<Arc<dyn NetworkAccess>>) -> Result<(), ServeError> {
    check_network(&a.net, &network)?;
    let qcfg = a.queue.config().map_err(ServeError::Usage)?;
    if a.jobs == 0 || a.jobs > 256 {
        return Err(ServeError::Usage("--jobs must be between 1 and 256".into()));
    }
    let name = a.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    let o = WorkerOptions {
        url: a.nats.clone(),
        name,
        jobs: a.jobs,
        grader: grader(a.cache.as_deref(), a.work_dir.as_deref(), network),
        config: qcfg,
    };
    runtime()?.block_on(crate::queue::run_worker(o))?;
    Ok(())
}
