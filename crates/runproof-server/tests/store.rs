//! The job store's semantics, the same on SQLite and on a real PostgreSQL:
//! one result per job whatever the attempt, cancelled jobs drop results,
//! attempts only move forward, restarts re-queue running jobs, migrations
//! run once.

use runproof_server::job::{JobResult, JobSpec, JobState, Verdict};
use runproof_server::store::{ListFilter, NewJob, Store, Stored};
use runproof_server::testing::Postgres;
use serde_json::json;

fn spec(id: &str) -> JobSpec {
    let mut task = serde_json::Map::new();
    task.insert("instance_id".into(), json!(id));
    JobSpec {
        task,
        model_name_or_path: "agent".into(),
        model_patch: Some("diff".into()),
        reruns: 0,
    }
}

fn result(job: &str, attempt: i64, worker: &str, tag: &str) -> JobResult {
    JobResult {
        job_id: job.into(),
        attempt,
        worker: worker.into(),
        report: Some(json!({ "t": { "tag": tag } })),
        log_tail: format!("log of {tag}"),
        error: None,
    }
}

fn verdict(resolved: bool) -> Verdict {
    Verdict {
        outcome: if resolved { "resolved" } else { "unresolved" }.into(),
        resolved,
        f2p_passed: resolved as i64,
        f2p_total: 1,
        p2p_passed: 3,
        p2p_total: 3,
    }
}

fn new(id: &str, batch: Option<&str>) -> NewJob {
    NewJob {
        id: id.into(),
        batch: batch.map(str::to_string),
        spec: spec(&format!("task-{id}")),
    }
}

async fn exercise(s: &Store) {
    assert_eq!(s.schema_version().await.unwrap(), 1);
    s.insert(None, &[new("a", None), new("b", None), new("c", None)])
        .await
        .unwrap();
    // Claims go oldest first, each an attempt.
    let (id, attempt, sp) = s.claim("w1").await.unwrap().unwrap();
    assert_eq!((id.as_str(), attempt), ("a", 1));
    assert_eq!(sp, spec("task-a"));
    let (id, _, _) = s.claim("w1").await.unwrap().unwrap();
    assert_eq!(id, "b");

    // The first result is stored; every later one, from this attempt or
    // another, is dropped and counted.
    let v = verdict(true);
    assert_eq!(
        s.store_result(&result("a", 1, "w1", "first"), Some(&v))
            .await
            .unwrap(),
        Stored::New
    );
    assert_eq!(
        s.store_result(&result("a", 1, "w1", "again"), Some(&v))
            .await
            .unwrap(),
        Stored::Duplicate
    );
    assert_eq!(
        s.store_result(&result("a", 2, "w2", "late"), Some(&verdict(false)))
            .await
            .unwrap(),
        Stored::Duplicate
    );
    let a = s.get("a").await.unwrap().unwrap();
    assert_eq!(a.job.state, JobState::Done);
    assert_eq!(a.job.outcome.as_deref(), Some("resolved"));
    assert_eq!(a.job.resolved, Some(true));
    assert_eq!((a.job.f2p_passed, a.job.f2p_total), (Some(1), Some(1)));
    assert_eq!(a.job.duplicate_results, 2);
    let r = a.result.unwrap();
    assert_eq!((r.attempt, r.worker.as_str()), (1, "w1"));
    assert_eq!(r.report, Some(json!({"t": {"tag": "first"}})));
    assert_eq!(r.log_tail, "log of first");

    // A cancelled job drops its result; cancelling twice or a done job is no-op.
    assert_eq!(
        s.cancel("c").await.unwrap(),
        Some((JobState::Cancelled, true))
    );
    assert_eq!(
        s.store_result(&result("c", 1, "w1", "x"), Some(&v))
            .await
            .unwrap(),
        Stored::Discarded
    );
    assert!(s.get("c").await.unwrap().unwrap().result.is_none());
    assert_eq!(
        s.cancel("c").await.unwrap(),
        Some((JobState::Cancelled, false))
    );
    assert_eq!(s.cancel("a").await.unwrap(), Some((JobState::Done, false)));
    assert_eq!(s.cancel("nope").await.unwrap(), None);
    assert_eq!(
        s.store_result(&result("nope", 1, "w1", "x"), Some(&v))
            .await
            .unwrap(),
        Stored::Discarded
    );

    // A redelivery's start moves the attempt forward, never back.
    assert!(s.mark_running("b", 2, "w2").await.unwrap());
    assert!(!s.mark_running("b", 1, "w1").await.unwrap());
    let b = s.get("b").await.unwrap().unwrap();
    assert_eq!((b.job.attempt, b.job.worker.as_deref()), (2, Some("w2")));
    let workers: Vec<(i64, String)> = b
        .attempts
        .iter()
        .map(|x| (x.attempt, x.worker.clone()))
        .collect();
    assert_eq!(workers, vec![(1, "w1".into()), (2, "w2".into())]);

    // A restart re-queues running jobs; the next claim is a new attempt.
    assert_eq!(s.requeue_running().await.unwrap(), 1);
    let (id, attempt, _) = s.claim("w3").await.unwrap().unwrap();
    assert_eq!((id.as_str(), attempt), ("b", 3));
    assert!(s.claim("w3").await.unwrap().is_none());

    // An ungradeable job: failed, with the error.
    let mut bad = result("b", 3, "w3", "x");
    bad.report = None;
    bad.error = Some("job task: field `test_cmd`: is missing".into());
    assert_eq!(s.store_result(&bad, None).await.unwrap(), Stored::New);
    let b = s.get("b").await.unwrap().unwrap();
    assert_eq!(b.job.state, JobState::Failed);
    assert!(b.job.error.unwrap().contains("test_cmd"));
    assert_eq!(b.job.outcome, None);

    // Batches, lists, counts, queue sequence numbers.
    s.insert(
        Some("eval-1"),
        &[new("d", Some("eval-1")), new("e", Some("eval-1"))],
    )
    .await
    .unwrap();
    assert!(s.has_batch("eval-1").await.unwrap());
    assert!(!s.has_batch("eval-2").await.unwrap());
    let (jobs, total) = s
        .list(&ListFilter {
            batch: Some("eval-1".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        vec!["e", "d"]
    );
    let (jobs, total) = s
        .list(&ListFilter {
            state: Some(JobState::Queued),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((jobs.len(), total), (1, 2));
    let c = s.counts(None).await.unwrap();
    assert_eq!(c.total, 5);
    assert_eq!(c.resolved, 1);
    assert_eq!(c.by_state["queued"], 2);
    assert_eq!(c.by_state["cancelled"], 1);
    let unpublished: Vec<String> = s
        .unpublished()
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(unpublished, vec!["d", "e"]);
    s.set_queue_seq("d", 41).await.unwrap();
    assert_eq!(s.queue_seq("d").await.unwrap(), Some(41));
    assert_eq!(s.unpublished().await.unwrap().len(), 1);
    assert!(s.fail_queued_seq(41, "ran out").await.unwrap());
    assert_eq!(
        s.get("d").await.unwrap().unwrap().job.state,
        JobState::Failed
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn sqlite_store_keeps_one_result_per_job() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("sub/jobs.sqlite");
    rt().block_on(async {
        let s = Store::open(&path.display().to_string()).await.unwrap();
        exercise(&s).await;
        // Reopening migrates nothing and keeps everything.
        drop(s);
        let s = Store::open(&path.display().to_string()).await.unwrap();
        assert_eq!(s.schema_version().await.unwrap(), 1);
        assert_eq!(s.counts(None).await.unwrap().total, 5);
    });
}

#[test]
fn postgres_store_keeps_one_result_per_job() {
    let pg = Postgres::start().expect("PostgreSQL must start for this test");
    let url = pg.create_db("jobs").unwrap();
    rt().block_on(async {
        // Two processes' worth of opens at once: one migrates, both work.
        let (a, b) = tokio::join!(Store::open(&url), Store::open(&url));
        let (a, b) = (a.unwrap(), b.unwrap());
        exercise(&a).await;
        assert_eq!(b.schema_version().await.unwrap(), 1);
        assert_eq!(b.counts(None).await.unwrap().total, 5);
        // Claims from two stores never hand out the same job.
        let jobs: Vec<NewJob> = (0..20).map(|k| new(&format!("p{k}"), None)).collect();
        b.insert(None, &jobs).await.unwrap();
        let mut got = Vec::new();
        loop {
            let (x, y) = tokio::join!(a.claim("wa"), b.claim("wb"));
            let (x, y) = (x.unwrap(), y.unwrap());
            if x.is_none() && y.is_none() {
                break;
            }
            got.extend(x.map(|j| j.0));
            got.extend(y.map(|j| j.0));
        }
        let mut want: Vec<String> = (0..20).map(|k| format!("p{k}")).collect();
        want.extend(["e".to_string()]);
        got.sort();
        want.sort();
        assert_eq!(got, want);
    });
    // The password never shows in the store's name.
    let named = rt().block_on(async {
        Store::open(&format!(
            "postgres://postgres:s3cret@127.0.0.1:{}/jobs",
            pg.port
        ))
        .await
        .map(|s| s.name().to_string())
    });
    assert!(!named.unwrap().contains("s3cret"));
}

#[test]
fn a_database_from_a_newer_runproof_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("jobs.sqlite");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
    }
    let e = rt()
        .block_on(Store::open(&path.display().to_string()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("schema version 99, newer than this runproof"),
        "{e}"
    );
    let e = rt()
        .block_on(Store::open("postgres://nobody@127.0.0.1:1/x"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("cannot connect"), "{e}");
}
