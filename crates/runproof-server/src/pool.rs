//! The embedded worker pool: `--workers N` tasks in the server process that
//! claim queued jobs from the store, grade them in sandboxes (the blocking
//! grader runs on tokio's blocking threads) and store the results.

use crate::job::{CancelFlag, Grader, JobResult};
use crate::queue::ResultHook;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Shared by the pool's workers and the HTTP handlers.
#[derive(Clone)]
pub struct Pool {
    pub store: Store,
    pub grader: Arc<Grader>,
    /// Woken once per submitted job.
    pub notify: Arc<Notify>,
    /// Cancel flags of the jobs running now.
    pub running: Arc<Mutex<HashMap<String, CancelFlag>>>,
    pub hook: Option<ResultHook>,
}

impl Pool {
    /// Starts `n` workers named `local-PID-K`.
    pub fn start(&self, n: usize) {
        for k in 0..n {
            let p = self.clone();
            let name = format!("local-{}-{k}", std::process::id());
            tokio::spawn(async move { p.worker(name).await });
        }
    }

    async fn worker(self, name: String) {
        loop {
            let job = match self.store.claim(&name).await {
                Ok(j) => j,
                Err(e) => {
                    eprintln!("runproof serve: {name}: {e}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            let Some((id, attempt, spec)) = job else {
                // Woken by a submit; the timeout covers jobs another
                // process put in a shared (PostgreSQL) store.
                let _ = tokio::time::timeout(Duration::from_secs(2), self.notify.notified()).await;
                continue;
            };
            let flag = CancelFlag::default();
            self.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), flag.clone());
            let (g, jid, w, f) = (self.grader.clone(), id.clone(), name.clone(), flag);
            let res =
                tokio::task::spawn_blocking(move || g.run(&jid, attempt, &w, &spec, &f)).await;
            self.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            let res = res.unwrap_or_else(|e| JobResult {
                job_id: id.clone(),
                attempt,
                worker: name.clone(),
                report: None,
                log_tail: String::new(),
                error: Some(format!("the grader crashed: {e}")),
            });
            // A store that is down: keep trying; the job stays running
            // meanwhile and a restart re-queues it.
            loop {
                match crate::queue::store_result(&self.store, &res, self.hook.as_ref()).await {
                    Ok(_) => break,
                    Err(e) => {
                        eprintln!("runproof serve: {name}: storing the result of {id}: {e}");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
        }
    }
}
