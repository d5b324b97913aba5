//! The metered gateway against local upstreams speaking the OpenAI and
//! Anthropic wire formats, usage checked to the token.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use runproof_ledger::Usage;
use runproof_net::gateway::{LoopPolicy, StopReason};
use serde_json::json;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn chat_chunk(content: &str) -> String {
    ev(
        None,
        &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
        "choices": [{"index": 0, "delta": {"content": content}, "logprobs": null, "finish_reason": null}], "usage": null}),
    )
}

fn chat_stream(with_usage: bool) -> Vec<String> {
    let mut v = vec![
        ev(
            None,
            &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}], "usage": null}),
        ),
        chat_chunk("Hello"),
        chat_chunk(" world"),
        ev(
            None,
            &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
            "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}], "usage": null}),
        ),
    ];
    if with_usage {
        v.push(ev(None, &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
            "choices": [], "usage": {"prompt_tokens": 1200, "completion_tokens": 340, "total_tokens": 1540,
            "prompt_tokens_details": {"cached_tokens": 1024}, "completion_tokens_details": {"reasoning_tokens": 300}}})));
    }
    v.push("data: [DONE]\n\n".into());
    v
}

fn anthropic_stream(final_out: u64) -> Vec<String> {
    vec![
        ev(
            Some("message_start"),
            &json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "content": [], "model": "claude-test", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 472, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 10000, "output_tokens": 2}}}),
        ),
        ev(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ev(Some("ping"), &json!({"type": "ping"})),
        ev(
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        ),
        ev(
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}),
        ),
        ev(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": 0}),
        ),
        ev(
            Some("message_delta"),
            &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": final_out / 2}}),
        ),
        ev(
            Some("message_delta"),
            &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": final_out}}),
        ),
        ev(Some("message_stop"), &json!({"type": "message_stop"})),
    ]
}

#[test]
fn openai_chat_non_streaming_counts_cached_and_reasoning_apart_and_swaps_the_key() {
    let body = json!({"id": "chatcmpl-9", "object": "chat.completion", "created": 1, "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2000, "completion_tokens": 500, "total_tokens": 2500,
                  "prompt_tokens_details": {"cached_tokens": 1500}, "completion_tokens_details": {"reasoning_tokens": 400}}})
    .to_string();
    let b2 = body.clone();
    let up = upstream(Arc::new(move |_| Reply::Json(200, b2.clone())));
    let h = gateway(&up, Opts::default());
    let auth = format!("Bearer {SANDBOX_KEY}");
    let got = post(
        h.addr,
        "/v1/chat/completions",
        &[
            ("Authorization", &auth),
            ("x-api-key", SANDBOX_KEY),
            ("Cookie", "c=1"),
            ("OpenAI-Beta", "x"),
        ],
        r#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), body, "response body passes through unchanged");
    let seen = up.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.request_line, "POST /v1/chat/completions HTTP/1.1");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {HOST_KEY}").as_str())
    );
    assert_eq!(seen.header("x-api-key"), None);
    assert_eq!(seen.header("cookie"), None);
    assert_eq!(seen.header("openai-beta"), Some("x"));
    assert!(
        !seen.headers.iter().any(|(_, v)| v.contains(SANDBOX_KEY)),
        "{:?}",
        seen.headers
    );
    let r = &h.records(1)[0];
    assert_eq!(
        r.usage,
        Usage {
            input: 500,
            cache_read: 1500,
            output: 100,
            reasoning: 400,
            cache_write: 0
        }
    );
    assert!(!r.estimated);
    assert_eq!(
        (r.outcome.as_str(), r.http_status, r.stream),
        ("ok", 200, false)
    );
    // 500*1e-6 + 1500*1e-7 + 100*2e-6 + 400*3e-6
    assert!(
        close(r.cost_usd.unwrap(), 0.0005 + 0.00015 + 0.0002 + 0.0012),
        "{r:?}"
    );
    assert_eq!(r.run_id.as_deref(), Some("run-1"));
    // The host key never appears in what the sandbox receives.
    assert!(!got.text().contains(HOST_KEY));
    assert!(!got.headers.iter().any(|(_, v)| v.contains(HOST_KEY)));
}

#[test]
fn openai_chat_stream_gets_include_usage_injected_and_the_extra_chunk_stripped() {
    let up = upstream(Arc::new(|_| {
        // Split events across chunk boundaries on purpose.
        let all = chat_stream(true).concat();
        let bytes = all.as_bytes();
        Reply::Sse(
            bytes
                .chunks(37)
                .map(|c| String::from_utf8_lossy(c).to_string())
                .collect(),
        )
    }));
    let h = gateway(&up, Opts::default());
    let got = post(
        h.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"gpt-test","stream":true,"messages":[]}"#,
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("text/event-stream"));
    let seen = up.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.body["stream_options"]["include_usage"], true);
    let expected: String = chat_stream(true)
        .into_iter()
        .filter(|e| !e.contains("\"choices\":[]"))
        .collect();
    assert_eq!(
        got.text(),
        expected,
        "every event but the injected usage chunk, byte for byte"
    );
    let r = &h.records(1)[0];
    assert_eq!(
        r.usage,
        Usage {
            input: 176,
            cache_read: 1024,
            output: 40,
            reasoning: 300,
            cache_write: 0
        }
    );
    assert!(!r.estimated);
    assert!(r.stream);
}

#[test]
fn openai_chat_stream_keeps_usage_chunk_when_the_client_asked() {
    let up = upstream(Arc::new(|_| Reply::Sse(chat_stream(true))));
    let h = gateway(&up, Opts::default());
    let got = post(
        h.addr,
        "/chat/completions",
        &[],
        r#"{"model":"gpt-test","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
    );
    assert_eq!(got.text(), chat_stream(true).concat());
    assert_eq!(h.records(1)[0].usage.cache_read, 1024);
}

#[test]
fn anthropic_stream_uses_running_totals_and_cache_tokens() {
    let up = upstream(Arc::new(|_| Reply::Sse(anthropic_stream(60))));
    let h = gateway(&up, Opts::default());
    let got = post(
        h.addr,
        "/v1/messages",
        &[
            ("x-api-key", SANDBOX_KEY),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "b1"),
        ],
        r#"{"model":"claude-test","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"Hello"}]}"#,
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), anthropic_stream(60).concat());
    let seen = up.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.header("x-api-key"), Some(HOST_KEY));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.header("anthropic-beta"), Some("b1"));
    assert!(
        seen.body.get("stream_options").is_none(),
        "nothing injected into Anthropic requests"
    );
    let r = &h.records(1)[0];
    // 60, not 30 + 60: the deltas are running totals.
    assert_eq!(
        r.usage,
        Usage {
            input: 472,
            cache_write: 2000,
            cache_read: 10000,
            output: 60,
            reasoning: 0
        }
    );
    assert!(!r.estimated);
    let cost = 472.0 * 3e-6 + 2000.0 * 3.75e-6 + 10000.0 * 3e-7 + 60.0 * 1.5e-5;
    assert!(close(r.cost_usd.unwrap(), cost), "{r:?}");
}

#[test]
fn anthropic_and_responses_non_streaming() {
    let up = upstream(Arc::new(|seen| {
        if seen.request_line.contains("/v1/messages") {
            Reply::Json(200, json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
                "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
                "usage": {"input_tokens": 10, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30, "output_tokens": 40}}).to_string())
        } else {
            Reply::Json(200, json!({"id": "resp_1", "object": "response", "status": "completed", "model": "gpt-test", "output": [],
                "usage": {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 60}, "output_tokens": 50,
                          "output_tokens_details": {"reasoning_tokens": 20}, "total_tokens": 150}}).to_string())
        }
    }));
    let h = gateway(&up, Opts::default());
    assert_eq!(
        post(
            h.addr,
            "/v1/messages",
            &[],
            r#"{"model":"claude-test","max_tokens":10,"messages":[]}"#
        )
        .status,
        200
    );
    assert_eq!(
        post(
            h.addr,
            "/v1/responses",
            &[],
            r#"{"model":"gpt-test","input":"hi"}"#
        )
        .status,
        200
    );
    let rs = h.records(2);
    assert_eq!(
        rs[0].usage,
        Usage {
            input: 10,
            cache_write: 20,
            cache_read: 30,
            output: 40,
            reasoning: 0
        }
    );
    assert_eq!(rs[0].endpoint, "messages");
    assert_eq!(
        rs[1].usage,
        Usage {
            input: 40,
            cache_read: 60,
            output: 30,
            reasoning: 20,
            cache_write: 0
        }
    );
    assert_eq!(rs[1].endpoint, "responses");
    // anthropic-version is added when the client left it out.
    assert_eq!(
        up.seen.lock().unwrap()[0].header("anthropic-version"),
        Some("2023-06-01")
    );
}

#[test]
fn responses_stream_reads_usage_from_response_completed() {
    let events = vec![
        ev(
            Some("response.created"),
            &json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "usage": null}}),
        ),
        ev(
            Some("response.output_text.delta"),
            &json!({"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "content_index": 0, "delta": "Hi"}),
        ),
        ev(
            Some("response.completed"),
            &json!({"type": "response.completed", "response": {"id": "resp_1", "status": "completed",
            "usage": {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 6}, "output_tokens": 87,
                      "output_tokens_details": {"reasoning_tokens": 80}, "total_tokens": 123}}}),
        ),
    ];
    let e2 = events.clone();
    let up = upstream(Arc::new(move |_| Reply::Sse(e2.clone())));
    let h = gateway(&up, Opts::default());
    let got = post(
        h.addr,
        "/v1/responses",
        &[],
        r#"{"model":"gpt-test","input":"hi","stream":true}"#,
    );
    assert_eq!(got.text(), events.concat());
    let r = &h.records(1)[0];
    assert_eq!(
        r.usage,
        Usage {
            input: 30,
            cache_read: 6,
            output: 7,
            reasoning: 80,
            cache_write: 0
        }
    );
}

#[test]
fn client_hangup_mid_stream_is_charged_from_tokens_seen_and_marked_estimated() {
    let mut evs = anthropic_stream(0);
    evs.truncate(5); // message_start .. two text deltas, no message_delta
    let up = upstream(Arc::new(move |_| Reply::SseThenHang(evs.clone())));
    let h = gateway(&up, Opts::default());
    let mut s = send_request(
        h.addr,
        "/v1/messages",
        &[],
        r#"{"model":"claude-test","max_tokens":100,"stream":true,"messages":[]}"#,
    );
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("Hello") {
        let n = std::io::Read::read(&mut s, &mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    drop(s); // hang up
    let r = &h.records(1)[0];
    assert_eq!(r.outcome, "client_hangup");
    assert!(r.estimated);
    // Input numbers are exact from message_start; output at least what was seen.
    assert_eq!(
        (r.usage.input, r.usage.cache_write, r.usage.cache_read),
        (472, 2000, 10000)
    );
    assert_eq!(
        r.usage.output, 2,
        "max(message_start output 2, ceil(6 bytes / 4) = 2)"
    );
    assert!(r.cost_usd.unwrap() > 0.0);
    // The gateway also let go of the upstream.
    for _ in 0..200 {
        if up.peer_gone.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("upstream connection was not closed after the client hung up");
}

#[test]
fn client_hangup_before_the_response_is_charged_for_its_input() {
    let up = upstream(Arc::new(|_| {
        Reply::JsonAfter(
            Duration::from_millis(400),
            200,
            json!({"usage": {"prompt_tokens": 9, "completion_tokens": 9}}).to_string(),
        )
    }));
    let h = gateway(
        &up,
        Opts {
            budget: Some(10.0),
            ..Default::default()
        },
    );
    let body = r#"{"model":"gpt-test","messages":[{"role":"user","content":"slow one"}]}"#;
    let s = send_request(h.addr, "/v1/chat/completions", &[], body);
    std::thread::sleep(Duration::from_millis(100));
    drop(s);
    let r = &h.records(1)[0];
    assert_eq!(r.outcome, "client_hangup");
    assert!(r.estimated);
    assert_eq!(
        r.usage,
        Usage {
            input: (body.len() as u64).div_ceil(4),
            ..Usage::default()
        }
    );
    let st = h.gateway.budget().status();
    assert_eq!(st.reserved, 0.0, "reservation released");
    assert!(close(st.spent, r.cost_usd.unwrap()));
    // The gateway dropped its upstream request too.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(up.peer_gone.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn upstream_cut_mid_stream_is_charged_and_marked_estimated() {
    let mut evs = chat_stream(false);
    evs.truncate(3);
    let up = upstream(Arc::new(move |_| Reply::SseThenCut(evs.clone())));
    let h = gateway(&up, Opts::default());
    let body =
        r#"{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"abcdefgh"}]}"#;
    let got = post(h.addr, "/v1/chat/completions", &[], body);
    assert!(got.text().contains("world"));
    let r = &h.records(1)[0];
    assert!(r.estimated);
    assert_eq!(r.outcome, "upstream_cut");
    // Input estimated from the request size; output from "Hello" + " world".
    assert_eq!(r.usage.input, (body.len() as u64).div_ceil(4));
    assert_eq!(r.usage.output, 11u64.div_ceil(4));
}

#[test]
fn malformed_upstream_responses_pass_through_and_are_charged_as_estimates() {
    let up = upstream(Arc::new(|seen| {
        if seen.body["stream"] == true {
            Reply::Sse(vec![
                "data: {not json\n\n".into(),
                "garbage without end".into(),
            ])
        } else {
            Reply::Raw("application/json", b"<html>oops</html>".to_vec())
        }
    }));
    let h = gateway(&up, Opts::default());
    let got = post(
        h.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"gpt-test","messages":[]}"#,
    );
    assert_eq!(
        (got.status, got.text().as_str()),
        (200, "<html>oops</html>")
    );
    let got = post(
        h.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"gpt-test","stream":true,"messages":[]}"#,
    );
    assert_eq!(got.text(), "data: {not json\n\ngarbage without end");
    let rs = h.records(2);
    assert!(
        rs.iter().all(|r| r.estimated && r.outcome == "malformed"),
        "{rs:?}"
    );
    assert!(rs.iter().all(|r| r.cost_usd.unwrap() > 0.0));
}

#[test]
fn upstream_errors_pass_through_uncharged() {
    let err =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            .to_string();
    let e2 = err.clone();
    let up = upstream(Arc::new(move |_| Reply::Json(529, e2.clone())));
    let h = gateway(&up, Opts::default());
    let got = post(
        h.addr,
        "/v1/messages",
        &[],
        r#"{"model":"claude-test","max_tokens":5,"stream":true,"messages":[]}"#,
    );
    assert_eq!((got.status, got.text()), (529, err));
    let r = &h.records(1)[0];
    assert_eq!(
        (r.outcome.as_str(), r.http_status, r.usage, r.cost_usd),
        ("upstream_error", 529, Usage::default(), Some(0.0))
    );
}

#[test]
fn budget_exhaustion_gives_api_shaped_refusals() {
    let up = upstream(Arc::new(|seen| {
        if seen.request_line.contains("messages") {
            Reply::Json(
                200,
                json!({"type": "message", "usage": {"input_tokens": 1000, "output_tokens": 1000}})
                    .to_string(),
            )
        } else {
            Reply::Json(200, json!({"object": "chat.completion", "usage": {"prompt_tokens": 1000, "completion_tokens": 1000}}).to_string())
        }
    }));
    // One Anthropic call costs 1000*3e-6 + 1000*1.5e-5 = 0.018.
    let h = gateway(
        &up,
        Opts {
            budget: Some(0.01),
            ..Default::default()
        },
    );
    let ok = post(
        h.addr,
        "/v1/messages",
        &[],
        r#"{"model":"claude-test","max_tokens":5,"messages":[]}"#,
    );
    assert_eq!(
        ok.status, 200,
        "admitted on its estimate; its real cost overshoots"
    );
    let refused = post(
        h.addr,
        "/v1/messages",
        &[],
        r#"{"model":"claude-test","max_tokens":5,"messages":[]}"#,
    );
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["type"], "error");
    assert_eq!(refused.json()["error"]["type"], "invalid_request_error");
    assert_eq!(refused.header("x-should-retry"), Some("false"));
    let refused = post(
        h.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"gpt-test","messages":[]}"#,
    );
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"]["code"], "insufficient_quota");
    assert_eq!(
        up.seen.lock().unwrap().len(),
        1,
        "refused requests never reach the upstream"
    );
    assert_eq!(
        h.stops.lock().unwrap().as_slice(),
        &[StopReason::BudgetExhausted]
    );
    // Overshoot bounded by that one request.
    let st = h.gateway.budget().status();
    assert!(close(st.spent, 0.018), "{st:?}");
}

#[test]
fn budget_exhaustion_mid_stream_cuts_the_stream() {
    // 200 deltas of 40 bytes (10 tokens each, 2e-5 USD at the output price).
    let mut evs = vec![];
    for _ in 0..200 {
        evs.push(chat_chunk(&"x".repeat(40)));
    }
    evs.push(ev(
        None,
        &json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 2000}}),
    ));
    evs.push("data: [DONE]\n\n".into());
    let up = upstream(Arc::new(move |_| Reply::Sse(evs.clone())));
    let h = gateway(
        &up,
        Opts {
            budget: Some(0.001),
            ..Default::default()
        },
    );
    let got = post(
        h.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"gpt-test","stream":true,"max_tokens":10,"messages":[]}"#,
    );
    let text = got.text();
    assert!(
        text.contains("insufficient_quota"),
        "the stream ends with an error event"
    );
    assert!(!text.contains("[DONE]"));
    let deltas = text.matches(&"x".repeat(40)).count();
    assert!(deltas > 5 && deltas < 200, "cut part-way: {deltas}");
    let r = &h.records(1)[0];
    assert_eq!(r.outcome, "cut_budget");
    assert!(r.estimated);
    let st = h.gateway.budget().status();
    // Overshoot: at most the one event that crossed the line (10 tokens).
    assert!(st.spent <= 0.001 + 10.0 * 2e-6 + 1e-12, "{st:?}");
    assert!(st.spent > 0.001 - 10.0 * 2e-6, "{st:?}");
    assert_eq!(st.reserved, 0.0);
}

#[test]
fn unknown_model_is_priced_unknown_and_refused_under_a_budget() {
    let up = upstream(Arc::new(|_| {
        Reply::Json(
            200,
            json!({"usage": {"prompt_tokens": 5, "completion_tokens": 5}}).to_string(),
        )
    }));
    let h = gateway(&up, Opts::default());
    assert_eq!(
        post(
            h.addr,
            "/v1/chat/completions",
            &[],
            r#"{"model":"mystery-model","messages":[]}"#
        )
        .status,
        200
    );
    let r = &h.records(1)[0];
    assert_eq!(r.cost_usd, None, "unknown, never 0");
    assert_eq!(r.usage.input, 5);
    assert!(
        h.audit.events()[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("no price")
    );
    let hb = gateway(
        &up,
        Opts {
            budget: Some(1.0),
            ..Default::default()
        },
    );
    let got = post(
        hb.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"mystery-model","messages":[]}"#,
    );
    assert_eq!(got.status, 400);
    assert!(
        got.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--prices")
    );
}

#[test]
fn ledger_failure_refuses_traffic_before_spending() {
    let up = upstream(Arc::new(|_| {
        Reply::Json(
            200,
            json!({"usage": {"prompt_tokens": 5, "completion_tokens": 5}}).to_string(),
        )
    }));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.db");
    let writer = runproof_ledger::LedgerWriter::spawn(runproof_ledger::Ledger::open(&p).unwrap());
    let h = gateway(
        &up,
        Opts {
            writer: Some((writer.clone(), p.clone(), dir)),
            ..Default::default()
        },
    );
    assert_eq!(
        post(
            h.addr,
            "/v1/chat/completions",
            &[],
            r#"{"model":"gpt-test","messages":[]}"#
        )
        .status,
        200
    );
    let other = rusqlite_like_break(&p);
    assert_eq!(
        post(
            h.addr,
            "/v1/chat/completions",
            &[],
            r#"{"model":"gpt-test","messages":[]}"#
        )
        .status,
        200
    );
    assert!(
        writer.flush().is_err(),
        "the second charge could not be written"
    );
    let refused = post(
        h.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"gpt-test","messages":[]}"#,
    );
    assert_eq!(refused.status, 503);
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ledger")
    );
    assert_eq!(
        up.seen.lock().unwrap().len(),
        2,
        "no upstream call while the ledger is down"
    );
    drop(other);
}

/// Break inserts into the ledger with a trigger from another connection: a
/// real SQLite error in the writer, no test hook in the code under test.
fn rusqlite_like_break(p: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(p).unwrap();
    c.execute_batch("CREATE TRIGGER no_more BEFORE INSERT ON requests BEGIN SELECT RAISE(FAIL, 'disk refused'); END;")
        .unwrap();
    c
}

#[test]
fn runaway_loop_is_flagged_and_stopped_by_policy() {
    let up = upstream(Arc::new(|_| {
        Reply::Json(
            200,
            json!({"usage": {"prompt_tokens": 5, "completion_tokens": 5}}).to_string(),
        )
    }));
    let h = gateway(
        &up,
        Opts {
            loops: LoopPolicy {
                window: 10,
                threshold: 3,
                stop: true,
                max_usd_without_change: None,
            },
            ..Default::default()
        },
    );
    let req = |i: u32| {
        format!(
            r#"{{"model":"gpt-test","messages":[{{"role":"user","content":"go"}},{{"role":"tool","content":"FAILED test_x at {i}"}}]}}"#
        )
    };
    assert_eq!(
        post(h.addr, "/v1/chat/completions", &[], &req(1)).status,
        200
    );
    assert_eq!(
        post(
            h.addr,
            "/v1/chat/completions",
            &[],
            r#"{"model":"gpt-test","messages":[{"role":"user","content":"other"}]}"#
        )
        .status,
        200
    );
    assert_eq!(
        post(h.addr, "/v1/chat/completions", &[], &req(2)).status,
        200
    );
    let third = post(h.addr, "/v1/chat/completions", &[], &req(3));
    assert_eq!(third.status, 429);
    assert_eq!(third.json()["error"]["code"], "runaway_loop");
    assert!(h.gateway.loop_flagged());
    assert_eq!(
        h.stops.lock().unwrap().as_slice(),
        &[StopReason::RunawayLoop]
    );
    // Stopped: even a different request is refused now.
    assert_eq!(
        post(
            h.addr,
            "/v1/chat/completions",
            &[],
            r#"{"model":"gpt-test","messages":[{"role":"user","content":"new"}]}"#
        )
        .status,
        429
    );
    assert_eq!(up.seen.lock().unwrap().len(), 3);
}

#[test]
fn spending_without_workspace_change_is_stopped_by_policy() {
    // Each call costs 1000 * 1e-6 = 0.001.
    let up = upstream(Arc::new(|_| {
        Reply::Json(
            200,
            json!({"usage": {"prompt_tokens": 1000, "completion_tokens": 0}}).to_string(),
        )
    }));
    let loops = LoopPolicy {
        window: 0,
        threshold: 0,
        stop: true,
        max_usd_without_change: Some(0.0025),
    };
    let h = gateway(
        &up,
        Opts {
            loops,
            ..Default::default()
        },
    );
    let call = |i: u32| {
        post(
            h.addr,
            "/v1/chat/completions",
            &[],
            &format!(
                r#"{{"model":"gpt-test","messages":[{{"role":"user","content":"step {i}"}}]}}"#
            ),
        )
        .status
    };
    assert_eq!(call(1), 200);
    assert_eq!(call(2), 200);
    h.gateway.note_workspace_change(); // progress: the counter starts again
    assert_eq!(call(3), 200);
    assert_eq!(call(4), 200);
    assert!(!h.gateway.loop_flagged());
    assert_eq!(call(5), 200); // 0.003 since the change: flagged after this one
    assert!(h.gateway.loop_flagged());
    let refused = post(
        h.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"gpt-test","messages":[{"role":"user","content":"step six"}]}"#,
    );
    assert_eq!(refused.status, 429);
    let msg = refused.json()["error"]["message"].to_string();
    assert!(msg.contains("spent without any change"), "{msg}");
    assert_eq!(
        h.stops.lock().unwrap().as_slice(),
        &[StopReason::SpendWithoutChange]
    );
}

#[test]
fn bad_requests_and_unknown_paths_get_api_shaped_errors() {
    let up = upstream(Arc::new(|_| Reply::Json(200, "{}".into())));
    let h = gateway(&up, Opts::default());
    let g = post(h.addr, "/v1/models", &[], "");
    assert_eq!(g.status, 404);
    assert_eq!(g.json()["error"]["type"], "invalid_request_error");
    let g = post(h.addr, "/v1/messages", &[], "not json");
    assert_eq!((g.status, g.json()["type"].as_str()), (400, Some("error")));
    let g = post(h.addr, "/v1/chat/completions", &[], r#"{"messages":[]}"#);
    assert!(
        g.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("model")
    );
    assert!(up.seen.lock().unwrap().is_empty());
    assert_eq!(
        h.audit
            .events()
            .iter()
            .filter(|e| e.decision == "denied")
            .count(),
        3
    );
}

#[test]
fn many_concurrent_requests_under_a_budget_are_all_recorded_and_never_overspend() {
    let up = upstream(Arc::new(|_| {
        Reply::Json(
            200,
            json!({"usage": {"prompt_tokens": 1000, "completion_tokens": 0}}).to_string(),
        )
    }));
    // Each call costs exactly 0.001 and is estimated at about that.
    let h = gateway(
        &up,
        Opts {
            budget: Some(0.05),
            ..Default::default()
        },
    );
    let ok = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                for _ in 0..8 {
                    let g = post(
                        h.addr,
                        "/v1/chat/completions",
                        &[],
                        r#"{"model":"gpt-test","max_tokens":1,"messages":[]}"#,
                    );
                    if g.status == 200 {
                        ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let n = ok.load(std::sync::atomic::Ordering::SeqCst);
    let rs = h.records(n);
    assert_eq!(rs.len(), n, "every admitted call is in the ledger");
    assert_eq!(up.seen.lock().unwrap().len(), n);
    let st = h.gateway.budget().status();
    let ledger_total: f64 = rs.iter().map(|r| r.cost_usd.unwrap()).sum();
    assert!(close(ledger_total, st.spent));
    // Overshoot bounded by the requests in flight (16), each 0.001 over at most.
    assert!(st.spent <= 0.05 + 16.0 * 0.001 + 1e-9, "{st:?}");
    assert!(n >= 40, "should not over-block: only {n} of 128 admitted");
}
