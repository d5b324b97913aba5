//! `runproof serve --nats` with a real `nats-server -js`: jobs go through
//! the JetStream work queue to a worker and come back once; a late result
//! from another attempt is dropped; a cancelled queued job leaves the queue.

mod common;

use common::{Server, examples, predictions};
use runproof_server::job::JobResult;
use runproof_server::queue::{self, QueueConfig, WorkerOptions};
use runproof_server::testing::{Nats, wait_for};
use serde_json::json;
use std::time::Duration;

#[test]
fn jobs_go_through_jetstream_to_a_worker_and_are_stored_once() {
    let ex = examples();
    let nats = Nats::start().expect("nats-server must start for this test");
    let url = nats.url();
    let tasks = ex.join("tasks.jsonl").display().to_string();
    let s = Server::start(&["--tasks", &tasks, "--nats", &url, "--ack-wait", "3"]);
    assert!(s.run.mode.starts_with("nats"), "{}", s.run.mode);
    let rt = s.rt.as_ref().unwrap();
    let _in_rt = rt.enter();
    let client = rt.block_on(async_nats::connect(&url)).unwrap();
    let js = async_nats::jetstream::new(client.clone());

    // The streams and the workers' consumer exist under their documented names.
    let info = rt
        .block_on(async {
            let mut st = js.get_stream(queue::JOBS_STREAM).await?;
            let c: async_nats::jetstream::consumer::PullConsumer =
                st.get_consumer(queue::WORKERS_CONSUMER).await?;
            let i = st.info().await?.clone();
            js.get_stream(queue::EVENTS_STREAM).await?;
            Ok::<_, async_nats::Error>((i, c.cached_info().config.ack_wait))
        })
        .unwrap();
    assert_eq!(
        info.0.config.subjects,
        vec![queue::JOBS_SUBJECT.to_string()]
    );
    assert_eq!(info.1, Duration::from_secs(3));

    // No worker yet: a job waits in the stream; a cancel takes it out.
    let r = s.post(
        "/api/jobs",
        &json!({"instance_id": "py-stats-1", "model_patch": "x"}),
    );
    assert_eq!(r.status, 201);
    let cancelled = r.json()["id"].as_str().unwrap().to_string();
    let messages = || {
        rt.block_on(async {
            let mut st = js.get_stream(queue::JOBS_STREAM).await.unwrap();
            st.info().await.unwrap().state.messages
        })
    };
    wait_for("the job in the stream", Duration::from_secs(30), || {
        (messages() == 1).then_some(())
    });
    assert_eq!(
        s.post(&format!("/api/jobs/{cancelled}/cancel"), &json!({}))
            .status,
        200
    );
    assert_eq!(messages(), 0);

    // A worker grades an eval batch.
    rt.spawn(queue::run_worker(WorkerOptions {
        url: url.clone(),
        name: "worker-a".into(),
        jobs: 2,
        grader: runproof_server::cli::grader(
            Some(&s.tmp.path().join("cache")),
            Some(&s.tmp.path().join("work-a")),
            None,
        ),
        config: QueueConfig::default(),
    }));
    let preds = predictions(&ex, "py-stats-1");
    let r = s.post("/api/evals", &json!({ "predictions": preds }));
    assert_eq!(r.status, 201, "{}", r.text());
    let ids: Vec<String> = r.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut outcomes = Vec::new();
    for id in &ids {
        let j = s.wait_job(id);
        assert_eq!(j["state"], "done", "{j}");
        assert_eq!(
            j["attempts"],
            json!([{"attempt": 1, "worker": "worker-a", "started_ms": j["attempts"][0]["started_ms"]}])
        );
        assert_eq!(j["result"]["worker"], "worker-a");
        outcomes.push(j["outcome"].as_str().unwrap().to_string());
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        vec![
            "patch_did_not_apply",
            "resolved",
            "unresolved",
            "unresolved",
            "unresolved"
        ]
    );
    let b = s
        .get(&format!(
            "/api/evals/{}",
            r.json()["batch"].as_str().unwrap()
        ))
        .json();
    assert_eq!(b["complete"], true);
    // The work queue holds nothing once every job is acked.
    wait_for("an empty work queue", Duration::from_secs(30), || {
        (messages() == 0).then_some(())
    });
    let j = s.get(&format!("/api/jobs/{cancelled}")).json();
    assert_eq!(
        (j["state"].clone(), j["attempt"].clone()),
        (json!("cancelled"), json!(0))
    );

    // A late result for a finished job (another attempt, a worker thought
    // dead) is dropped and counted, not stored; a malformed one is dropped.
    let first = s.get(&format!("/api/jobs/{}", ids[0])).json();
    let late = JobResult {
        job_id: ids[0].clone(),
        attempt: 2,
        worker: "zombie".into(),
        report: first["result"]["report"].clone().into(),
        log_tail: "late".into(),
        error: None,
    };
    rt.block_on(async {
        js.publish(queue::RESULT_SUBJECT, b"{not json".to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
        js.publish(
            queue::RESULT_SUBJECT,
            serde_json::to_vec(&late).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    });
    let j = wait_for("the duplicate counted", Duration::from_secs(30), || {
        let j = s.get(&format!("/api/jobs/{}", ids[0])).json();
        (j["duplicate_results"] == 1).then_some(j)
    });
    assert_eq!(j["result"]["worker"], "worker-a");
    assert_eq!(j["result"]["log_tail"], first["result"]["log_tail"]);
    assert_eq!(j["outcome"], first["outcome"]);
}
