//! Scale-out over NATS JetStream.
//!
//! ```text
//! runproof serve ──publish──► stream RUNPROOF_JOBS (subject runproof.jobs, work queue)
//!                                │  durable pull consumer `runproof-workers`
//!                                ▼  (explicit ack, ack wait, max deliveries)
//!                        runproof worker (any host, --jobs N)
//!                                │  runproof.events.started, runproof.events.result
//!                                ▼
//!                     stream RUNPROOF_EVENTS (work queue)
//!                                │  durable pull consumer `runproof-serve`
//!                                ▼
//!                  runproof serve stores each result once, then acks it
//! ```
//!
//! A worker acks a job only after JetStream has stored its result (the
//! publish was acknowledged), and sends `AckProgress` while the job runs, so
//! a live job is never redelivered and a dead worker's job is, once the ack
//! wait passes without progress. The server stores the first result for a
//! job and drops any later one (a job id is stored once whatever the
//! attempt), and acks an event only after the database write. Every message
//! carries a `Nats-Msg-Id` (job id; `result:JOB:ATTEMPT`), so a publish that
//! is retried is kept once by the stream too. A cancel deletes a queued
//! job's message from the stream and tells the workers on `runproof.cancel`.

use crate::job::{
    CancelFlag, Grader, JobMessage, JobResult, JobSpec, MAX_JOB_BYTES, MAX_RESULT_BYTES,
};
use crate::store::Store;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, stream::Stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const JOBS_STREAM: &str = "RUNPROOF_JOBS";
pub const JOBS_SUBJECT: &str = "runproof.jobs";
pub const WORKERS_CONSUMER: &str = "runproof-workers";
pub const EVENTS_STREAM: &str = "RUNPROOF_EVENTS";
pub const EVENTS_SUBJECTS: &str = "runproof.events.>";
pub const STARTED_SUBJECT: &str = "runproof.events.started";
pub const RESULT_SUBJECT: &str = "runproof.events.result";
pub const SERVE_CONSUMER: &str = "runproof-serve";
pub const CANCEL_SUBJECT: &str = "runproof.cancel";

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "cannot connect to NATS at {url}: {detail}; check that nats-server runs there with JetStream (-js)"
    )]
    Connect { url: String, detail: String },
    #[error("NATS JetStream {what}: {detail}")]
    JetStream { what: String, detail: String },
}

fn js_err(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::JetStream {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

/// Settings of the work-queue consumer, applied when `serve` or `worker`
/// creates it (an existing consumer keeps its own).
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// How long a delivered job may go without an ack or progress before it
    /// is redelivered to another worker.
    pub ack_wait: Duration,
    /// Deliveries of one job before JetStream gives up on it (the server
    /// then marks the job failed).
    pub max_deliver: i64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            ack_wait: Duration::from_secs(60),
            max_deliver: 5,
        }
    }
}

/// A connection with the streams and consumers in place.
pub struct Queue {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub jobs: Stream,
    pub events: Stream,
}

impl Queue {
    /// Connects and creates the streams (and the workers' consumer) if missing.
    pub async fn connect(url: &str, name: &str, cfg: QueueConfig) -> Result<Queue, QueueError> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| QueueError::Connect {
                url: url.to_string(),
                detail: e.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        let stream = |name: &str, subject: &str| jetstream::stream::Config {
            name: name.to_string(),
            subjects: vec![subject.to_string()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        };
        let jobs = js
            .get_or_create_stream(stream(JOBS_STREAM, JOBS_SUBJECT))
            .await
            .map_err(|e| js_err(&format!("stream {JOBS_STREAM}"), e))?;
        let events = js
            .get_or_create_stream(stream(EVENTS_STREAM, EVENTS_SUBJECTS))
            .await
            .map_err(|e| js_err(&format!("stream {EVENTS_STREAM}"), e))?;
        let q = Queue {
            client,
            js,
            jobs,
            events,
        };
        q.workers_consumer(cfg).await?;
        Ok(q)
    }

    pub async fn workers_consumer(&self, cfg: QueueConfig) -> Result<PullConsumer, QueueError> {
        self.jobs
            .get_or_create_consumer(
                WORKERS_CONSUMER,
                jetstream::consumer::pull::Config {
                    durable_name: Some(WORKERS_CONSUMER.to_string()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: cfg.ack_wait,
                    max_deliver: cfg.max_deliver,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| js_err(&format!("consumer {WORKERS_CONSUMER}"), e))
    }

    pub async fn serve_consumer(&self) -> Result<PullConsumer, QueueError> {
        self.events
            .get_or_create_consumer(
                SERVE_CONSUMER,
                jetstream::consumer::pull::Config {
                    durable_name: Some(SERVE_CONSUMER.to_string()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| js_err(&format!("consumer {SERVE_CONSUMER}"), e))
    }
}

/// A worker's report that it started an attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Started {
    pub job_id: String,
    pub attempt: i64,
    pub worker: String,
}

/// The server's side of the queue: publishes jobs, cancels them.
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    client: async_nats::Client,
    jobs: Stream,
    store: Store,
}

impl Publisher {
    pub fn new(q: &Queue, store: Store) -> Publisher {
        Publisher {
            js: q.js.clone(),
            client: q.client.clone(),
            jobs: q.jobs.clone(),
            store,
        }
    }

    /// Publishes jobs (already stored) and records their stream sequence.
    /// A job that fails to publish stays unpublished in the store and is
    /// retried by [`Publisher::republish`].
    pub async fn publish(&self, jobs: &[(String, JobSpec)]) -> Result<(), String> {
        for chunk in jobs.chunks(256) {
            let mut acks = Vec::with_capacity(chunk.len());
            for (id, spec) in chunk {
                let msg = JobMessage {
                    job_id: id.clone(),
                    spec: spec.clone(),
                };
                let body = serde_json::to_vec(&msg).map_err(|e| e.to_string())?;
                let p = jetstream::message::PublishMessage::build()
                    .payload(body.into())
                    .message_id(id);
                let fut = self
                    .js
                    .send_publish(JOBS_SUBJECT, p)
                    .await
                    .map_err(|e| format!("cannot publish job {id}: {e}"))?;
                acks.push((id, fut));
            }
            for (id, fut) in acks {
                let ack = fut
                    .await
                    .map_err(|e| format!("JetStream did not store job {id}: {e}"))?;
                self.store
                    .set_queue_seq(id, ack.sequence)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Publishes every stored job that has no stream sequence yet.
    pub async fn republish(&self) -> Result<usize, String> {
        let jobs = self.store.unpublished().await.map_err(|e| e.to_string())?;
        self.publish(&jobs).await?;
        Ok(jobs.len())
    }

    /// Takes a cancelled job out of the queue (queued) or tells its worker
    /// (running).
    pub async fn cancel(&self, id: &str) {
        if let Ok(Some(seq)) = self.store.queue_seq(id).await {
            let _ = self.jobs.delete_message(seq).await;
        }
        let _ = self
            .client
            .publish(CANCEL_SUBJECT, id.to_string().into())
            .await;
        let _ = self.client.flush().await;
    }
}

/// Called with each newly stored result and its job (the CLI records the
/// verdict in the ledger).
pub type ResultHook = Arc<dyn Fn(&JobSpec, &crate::job::Verdict) + Send + Sync>;

/// Stores one result (checked first) and calls the hook when it was new.
pub async fn store_result(
    store: &Store,
    r: &JobResult,
    hook: Option<&ResultHook>,
) -> Result<crate::store::Stored, crate::store::StoreError> {
    let (verdict, r) = match r.verdict() {
        Ok(v) => (v, r.clone()),
        Err(e) => {
            let mut bad = r.clone();
            bad.report = None;
            bad.log_tail = String::new();
            bad.error = Some(format!("the worker's result was refused: {e}"));
            (None, bad)
        }
    };
    let s = store.store_result(&r, verdict.as_ref()).await?;
    if s == crate::store::Stored::New
        && let (Some(h), Some(v)) = (hook, &verdict)
        && let Ok(Some(d)) = store.get(&r.job_id).await
    {
        h(&d.spec, v);
    }
    Ok(s)
}

/// The next batch of up to `max` messages, waiting at most 5 s for them
/// (an empty batch then). A failed fetch is reported as `what: error` and
/// retried after a second, forever: the server is expected to come back.
async fn next_batch(
    consumer: &PullConsumer,
    max: usize,
    what: &str,
) -> async_nats::jetstream::consumer::pull::Batch {
    loop {
        let batch = consumer
            .fetch()
            .max_messages(max)
            .expires(Duration::from_secs(5))
            .messages()
            .await;
        match batch {
            Ok(b) => return b,
            Err(e) => {
                eprintln!("{what}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The server's loop over worker events: started attempts and results,
/// each written to the store before it is acked. Runs until the process
/// ends; reconnects are the client's.
pub async fn consume_events(q: Arc<Queue>, store: Store, hook: Option<ResultHook>) {
    let consumer = loop {
        match q.serve_consumer().await {
            Ok(c) => break c,
            Err(e) => {
                eprintln!("runproof serve: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    loop {
        let mut batch = next_batch(&consumer, 64, "runproof serve: fetching worker events").await;
        while let Some(m) = batch.next().await {
            let Ok(m) = m else { continue };
            let ok = handle_event(&store, &m, hook.as_ref()).await;
            let r = if ok {
                m.double_ack().await
            } else {
                // Left unacked: redelivered after the ack wait.
                Ok(())
            };
            if let Err(e) = r {
                eprintln!("runproof serve: ack of a worker event failed: {e}");
            }
        }
    }
}

/// Applies one event; false when it must be retried (the store failed).
async fn handle_event(store: &Store, m: &jetstream::Message, hook: Option<&ResultHook>) -> bool {
    if m.payload.len() > MAX_RESULT_BYTES {
        eprintln!(
            "runproof serve: dropped a {}-byte worker event on {} (over {MAX_RESULT_BYTES})",
            m.payload.len(),
            m.subject
        );
        return true;
    }
    match m.subject.as_str() {
        STARTED_SUBJECT => match serde_json::from_slice::<Started>(&m.payload) {
            Ok(s) => match store.mark_running(&s.job_id, s.attempt, &s.worker).await {
                Ok(_) => true,
                Err(e) => {
                    eprintln!("runproof serve: {e}");
                    false
                }
            },
            Err(e) => {
                eprintln!("runproof serve: dropped a malformed started event: {e}");
                true
            }
        },
        RESULT_SUBJECT => match serde_json::from_slice::<JobResult>(&m.payload) {
            Ok(r) => match store_result(store, &r, hook).await {
                Ok(s) => {
                    if s != crate::store::Stored::New {
                        eprintln!(
                            "runproof serve: result of job {} attempt {} from {}: {s:?}, not stored again",
                            r.job_id, r.attempt, r.worker
                        );
                    }
                    true
                }
                Err(e) => {
                    eprintln!("runproof serve: {e}");
                    false
                }
            },
            Err(e) => {
                eprintln!("runproof serve: dropped a malformed result: {e}");
                true
            }
        },
        other => {
            eprintln!("runproof serve: dropped an event on unknown subject {other}");
            true
        }
    }
}

/// Marks jobs failed whose deliveries ran out (JetStream's advisory names
/// the stream sequence of the message).
pub async fn watch_max_deliveries(q: Arc<Queue>, store: Store) {
    let subject =
        format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS_STREAM}.{WORKERS_CONSUMER}");
    let Ok(mut sub) = q.client.subscribe(subject).await else {
        return;
    };
    while let Some(m) = sub.next().await {
        #[derive(Deserialize)]
        struct Adv {
            stream_seq: u64,
            deliveries: i64,
        }
        if let Ok(a) = serde_json::from_slice::<Adv>(&m.payload)
            && let Err(e) = store
                .fail_queued_seq(
                    a.stream_seq,
                    &format!(
                        "delivered to workers {} times without a result (each worker died or lost its connection); resubmit it",
                        a.deliveries
                    ),
                )
                .await
        {
            eprintln!("runproof serve: {e}");
        }
    }
}

/// Options of a worker process.
pub struct WorkerOptions {
    pub url: String,
    pub name: String,
    pub jobs: usize,
    pub grader: Grader,
    pub config: QueueConfig,
}

async fn publish_event(
    js: &jetstream::Context,
    subject: &'static str,
    id: String,
    body: Vec<u8>,
) -> Result<(), String> {
    let mut last = String::new();
    for delay in [0u64, 500, 2000, 5000] {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let p = jetstream::message::PublishMessage::build()
            .payload(body.clone().into())
            .message_id(&id);
        match js.send_publish(subject, p).await {
            Ok(fut) => match fut.await {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// `runproof worker`: pulls jobs, grades them (at most `jobs` at once) and
/// publishes results. Runs until killed; a kill at any point loses nothing.
pub async fn run_worker(o: WorkerOptions) -> Result<(), QueueError> {
    let q = Queue::connect(&o.url, &o.name, o.config).await?;
    let consumer = q.workers_consumer(o.config).await?;
    let ack_wait = consumer.cached_info().config.ack_wait;
    let progress_every = (ack_wait / 3).max(Duration::from_millis(500));
    let running: Arc<Mutex<HashMap<String, CancelFlag>>> = Arc::default();
    {
        let mut sub = q
            .client
            .subscribe(CANCEL_SUBJECT)
            .await
            .map_err(|e| js_err("cancel subscription", e))?;
        let running = running.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let id = String::from_utf8_lossy(&m.payload).into_owned();
                if let Some(f) = running.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
                    f.cancel();
                }
            }
        });
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(o.jobs.max(1)));
    let grader = Arc::new(o.grader);
    let name = Arc::new(o.name);
    eprintln!(
        "runproof worker {name}: pulling jobs from {} (stream {JOBS_STREAM}, consumer {WORKERS_CONSUMER}), {} at once",
        o.url,
        o.jobs.max(1)
    );
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let mut batch = next_batch(&consumer, 1, "runproof worker: fetching jobs").await;
        let Some(Ok(m)) = batch.next().await else {
            continue;
        };
        let (js, grader, name, running) =
            (q.js.clone(), grader.clone(), name.clone(), running.clone());
        tokio::spawn(async move {
            work(js, m, grader, &name, running, progress_every).await;
            drop(permit);
        });
    }
}

async fn work(
    js: jetstream::Context,
    m: jetstream::Message,
    grader: Arc<Grader>,
    worker: &str,
    running: Arc<Mutex<HashMap<String, CancelFlag>>>,
    progress_every: Duration,
) {
    let attempt = m.info().map(|i| i.delivered).unwrap_or(1);
    let job: JobMessage = match (m.payload.len() <= MAX_JOB_BYTES)
        .then(|| serde_json::from_slice::<JobMessage>(&m.payload))
    {
        Some(Ok(j)) => j,
        other => {
            let why = match other {
                Some(Err(e)) => e.to_string(),
                _ => format!("{} bytes, over {MAX_JOB_BYTES}", m.payload.len()),
            };
            eprintln!("runproof worker: refused a job message: {why}");
            // Its job id is unknown or untrusted: nothing to report it under.
            let _ = m.ack_with(AckKind::Term).await;
            return;
        }
    };
    let id = job.job_id.clone();
    let m = Arc::new(m);
    // Progress until the result is stored and the job acked.
    let beat = {
        let m = m.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(progress_every).await;
                let _ = m.ack_with(AckKind::Progress).await;
            }
        })
    };
    let started = serde_json::to_vec(&Started {
        job_id: id.clone(),
        attempt,
        worker: worker.to_string(),
    })
    .unwrap_or_default();
    if let Err(e) = publish_event(
        &js,
        STARTED_SUBJECT,
        format!("started:{id}:{attempt}"),
        started,
    )
    .await
    {
        eprintln!("runproof worker: job {id}: cannot report the start: {e}");
    }
    eprintln!(
        "runproof worker {worker}: job {id} attempt {attempt}: grading {}",
        job.spec.instance_id()
    );
    let flag = CancelFlag::default();
    running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), flag.clone());
    let w = worker.to_string();
    let (g, jid, spec, f) = (grader.clone(), id.clone(), job.spec.clone(), flag.clone());
    let res = tokio::task::spawn_blocking(move || g.run(&jid, attempt, &w, &spec, &f)).await;
    running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    let res = match res {
        Ok(r) => r,
        Err(e) => JobResult {
            job_id: id.clone(),
            attempt,
            worker: worker.to_string(),
            report: None,
            log_tail: String::new(),
            error: Some(format!("the grader crashed: {e}")),
        },
    };
    let body = serde_json::to_vec(&res).unwrap_or_default();
    match publish_event(&js, RESULT_SUBJECT, format!("result:{id}:{attempt}"), body).await {
        Ok(()) => {
            // Stored by JetStream: now the job may go.
            if let Err(e) = m.double_ack().await {
                eprintln!(
                    "runproof worker: job {id}: ack failed ({e}); it will be redelivered and its second result dropped"
                );
            }
            eprintln!("runproof worker {worker}: job {id} attempt {attempt}: result stored");
        }
        Err(e) => {
            eprintln!(
                "runproof worker: job {id}: the result could not be stored ({e}); leaving the job unacked for redelivery"
            );
        }
    }
    beat.abort();
}
