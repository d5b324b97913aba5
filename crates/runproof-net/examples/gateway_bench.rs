//! Load generator for bench/gateway: the same local upstream reached directly
//! and through the metered gateway (ledger writes included), at a fixed
//! concurrency, in one run. Prints latency percentiles, throughput and the
//! ratios. Only 127.0.0.1 is contacted; every loop is bounded in time.
//!
//! Besides wall-clock latency (noisy on a shared machine) it prints what does
//! not depend on the machine's load: each thread group's CPU time and context
//! switches per request, read from `/proc/self/task/*/{schedstat,status}`
//! before and after each measured phase, and the time its threads spent
//! runnable but waiting for a CPU (the scheduler's delay, which is the load).
//!
//! With `--requests N` each phase sends exactly N requests (warm-ups 1,000)
//! instead of running for a time, so instruction counts under
//! `valgrind --tool=callgrind` compare the same work; a phase still ends
//! after 600 s at most.
//!
//! Each path runs for S seconds in total, in K alternating slices (direct,
//! gateway, direct, ...; default 10) over the same keep-alive connections,
//! so both see the same machine load.
//!
//! Usage: gateway_bench [--concurrency N] [--seconds S] [--slices K] [--requests N] [--stream] [--rate R]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use runproof_ledger::{Budget, Ledger, LedgerWriter, PriceTable};
use runproof_net::gateway::{Gateway, GatewayConfig, LoopPolicy, Upstream};

const CHAT_JSON: &str = r#"{"id":"chatcmpl-b","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":120,"completion_tokens":8,"total_tokens":128,"prompt_tokens_details":{"cached_tokens":64}}}"#;

fn sse_body() -> String {
    let mut s = String::new();
    for w in ["Hello", " there", ",", " this", " is", " a", " stream"] {
        s.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}}}}],\"usage\":null}}\n\n"
        ));
    }
    s.push_str("data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":7}}\n\ndata: [DONE]\n\n");
    s
}

async fn upstream(l: std::net::TcpListener) {
    l.set_nonblocking(true).unwrap();
    let l = tokio::net::TcpListener::from_std(l).unwrap();
    let sse = Bytes::from(sse_body());
    loop {
        let (s, _) = l.accept().await.unwrap();
        let _ = s.set_nodelay(true);
        let sse = sse.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let sse = sse.clone();
                async move {
                    let body = req.into_body().collect().await?.to_bytes();
                    let stream = body.windows(13).any(|w| w == b"\"stream\":true");
                    let r = if stream {
                        Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(Full::new(sse))
                            .unwrap()
                    } else {
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(CHAT_JSON.as_bytes())))
                            .unwrap()
                    };
                    Ok::<_, hyper::Error>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

struct Run {
    lat_us: Vec<u32>,
    ok: u64,
    errors: u64,
    elapsed: Duration,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// `conc` keep-alive connections to `addr`, kept for the whole run.
async fn connect(addr: SocketAddr, conc: usize) -> Vec<Sender> {
    let mut out = Vec::with_capacity(conc);
    for _ in 0..conc {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        out.push(tx);
    }
    out
}

impl Run {
    fn empty() -> Run {
        Run {
            lat_us: Vec::new(),
            ok: 0,
            errors: 0,
            elapsed: Duration::ZERO,
        }
    }
    fn add(&mut self, o: Run) {
        self.lat_us.extend(o.lat_us);
        self.ok += o.ok;
        self.errors += o.errors;
        self.elapsed += o.elapsed;
    }
}

/// One measured slice over the given connections, for `dur` or until
/// `requests` were sent. Closed loop (`rate` None: each connection sends its
/// next request as soon as the last one is answered, so the load
/// saturates) or paced (`rate` requests/s spread evenly over the
/// connections, so latency shows the cost of processing rather than
/// queueing). Gives the connections back with the slice's figures.
async fn load(
    conns: Vec<Sender>,
    dur: Duration,
    body: &'static str,
    rate: Option<f64>,
    requests: Option<u64>,
) -> (Vec<Sender>, Run) {
    let conc = conns.len();
    let start = Instant::now();
    // Tickets shared by the connections when the request count is fixed.
    let tickets = Arc::new(AtomicI64::new(requests.map_or(i64::MAX, |n| n as i64)));
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for (i, mut tx) in conns.into_iter().enumerate() {
        let interval = rate.map(|r| Duration::from_secs_f64(conc as f64 / r));
        let mut next =
            start + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / conc as f64));
        let tickets = tickets.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(16_384);
            let (mut ok, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline && tickets.fetch_sub(1, Ordering::Relaxed) > 0 {
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let req = Request::post("/v1/chat/completions")
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer sandbox-placeholder")
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap();
                let t = Instant::now();
                if tx.ready().await.is_err() {
                    errors += 1;
                    break;
                }
                match tx.send_request(req).await {
                    Ok(r) => {
                        let good = r.status().is_success();
                        let _ = r.into_body().collect().await;
                        if good { ok += 1 } else { errors += 1 }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            (tx, lat, ok, errors)
        }));
    }
    let mut run = Run::empty();
    let mut back = Vec::with_capacity(conc);
    for t in tasks {
        let (tx, l, o, e) = t.await.unwrap();
        back.push(tx);
        run.lat_us.extend(l);
        run.ok += o;
        run.errors += e;
    }
    run.elapsed = start.elapsed();
    (back, run)
}

/// One thread's counters: CPU ns, run-queue wait ns, context switches.
#[derive(Clone, Copy, Default)]
struct ThreadStat {
    cpu_ns: u64,
    wait_ns: u64,
    switches: u64,
}

/// Every thread of this process, keyed by tid, with its name.
fn thread_stats() -> Vec<(u64, String, ThreadStat)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u64>().ok()) else {
            continue;
        };
        let p = e.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let sched = std::fs::read_to_string(p.join("schedstat")).unwrap_or_default();
        let mut f = sched
            .split_whitespace()
            .map(|x| x.parse::<u64>().unwrap_or(0));
        let (cpu_ns, wait_ns) = (f.next().unwrap_or(0), f.next().unwrap_or(0));
        let status = std::fs::read_to_string(p.join("status")).unwrap_or_default();
        let switches = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
        out.push((
            tid,
            name.trim().to_string(),
            ThreadStat {
                cpu_ns,
                wait_ns,
                switches,
            },
        ));
    }
    out
}

/// Thread groups, by name prefix, in print order.
const GROUPS: &[(&str, &str)] = &[
    ("bench-load", "load generator"),
    ("bench-upstream", "upstream"),
    ("bench-gateway", "gateway"),
    ("runproof-ledger", "ledger writer"),
];

/// Per group: counters accumulated between two snapshots.
fn group_delta(
    before: &[(u64, String, ThreadStat)],
    after: &[(u64, String, ThreadStat)],
) -> Vec<ThreadStat> {
    let mut g = vec![ThreadStat::default(); GROUPS.len() + 1];
    for (tid, name, a) in after {
        let b = before
            .iter()
            .find(|(t, _, _)| t == tid)
            .map_or(ThreadStat::default(), |x| x.2);
        let i = GROUPS
            .iter()
            .position(|(p, _)| name.starts_with(p))
            .unwrap_or(GROUPS.len());
        g[i].cpu_ns += a.cpu_ns.saturating_sub(b.cpu_ns);
        g[i].wait_ns += a.wait_ns.saturating_sub(b.wait_ns);
        g[i].switches += a.switches.saturating_sub(b.switches);
    }
    g
}

fn add_delta(into: &mut [ThreadStat], d: &[ThreadStat]) {
    for (a, b) in into.iter_mut().zip(d) {
        a.cpu_ns += b.cpu_ns;
        a.wait_ns += b.wait_ns;
        a.switches += b.switches;
    }
}

fn print_costs(name: &str, d: &[ThreadStat], requests: u64) {
    let n = requests.max(1) as f64;
    let per = |x: u64| x as f64 / n;
    let total_cpu: u64 = d.iter().map(|x| x.cpu_ns).sum();
    let mut line = format!(
        "{name:<8} CPU us/req: total {:>6.2}",
        per(total_cpu) / 1000.0
    );
    for (i, (_, label)) in GROUPS.iter().enumerate() {
        if d[i].cpu_ns > 0 {
            line.push_str(&format!(" | {label} {:.2}", per(d[i].cpu_ns) / 1000.0));
        }
    }
    println!("{line}");
    let mut line = format!(
        "{:<8} ctx switches/req: total {:>5.2}",
        "",
        per(d.iter().map(|x| x.switches).sum())
    );
    for (i, (_, label)) in GROUPS.iter().enumerate() {
        if d[i].switches > 0 {
            line.push_str(&format!(" | {label} {:.2}", per(d[i].switches)));
        }
    }
    println!("{line}");
    println!(
        "{:<8} run-queue wait (load) us/req: {:.2}",
        "",
        per(d.iter().map(|x| x.wait_ns).sum()) / 1000.0
    );
}

fn pct(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

fn main() {
    let mut conc = 64usize;
    let mut secs = 5u64;
    let mut stream = false;
    let mut rate: Option<f64> = None;
    let mut requests: Option<u64> = None;
    let mut slices = 10usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--concurrency" => {
                conc = args
                    .next()
                    .and_then(|x| x.parse().ok())
                    .expect("--concurrency N")
            }
            "--seconds" => {
                secs = args
                    .next()
                    .and_then(|x| x.parse().ok())
                    .expect("--seconds S")
            }
            "--stream" => stream = true,
            "--slices" => {
                slices = args
                    .next()
                    .and_then(|x| x.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--slices N (at least 1)")
            }
            "--requests" => {
                requests = Some(
                    args.next()
                        .and_then(|x| x.parse().ok())
                        .expect("--requests N"),
                )
            }
            "--rate" => {
                rate = Some(
                    args.next()
                        .and_then(|x| x.parse().ok())
                        .expect("--rate REQ_PER_S"),
                )
            }
            other => panic!(
                "unknown argument {other:?}; usage: gateway_bench [--concurrency N] [--seconds S] [--slices K] [--requests N] [--stream] [--rate R]"
            ),
        }
    }
    let body: &'static str = if stream {
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello in one short sentence, please."}]}"#
    } else {
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence, please."}]}"#
    };

    // Upstream and load generator each get one runtime thread, the gateway
    // its own runtime. The two cores are shared by all of them.
    let up_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-upstream")
        .enable_all()
        .build()
        .unwrap();
    // Two workers by default: what `runproof gateway` (a runtime with one
    // worker per core) and `runproof run` (the Gate's two workers) use here.
    let gw_threads: usize = std::env::var("GATEWAY_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let gw_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(gw_threads)
        .thread_name("bench-gateway")
        .enable_all()
        .build()
        .unwrap();
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-load")
        .enable_all()
        .build()
        .unwrap();

    let ul = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = ul.local_addr().unwrap();
    up_rt.spawn(upstream(ul));

    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("ledger.db");
    let writer = LedgerWriter::spawn(Ledger::open(&ledger_path).unwrap());
    let gw = Gateway::new(GatewayConfig {
        openai: Some(Upstream {
            base_url: format!("http://{up_addr}"),
            api_key: "sk-bench".into(),
        }),
        anthropic: None,
        run_id: Some("bench".into()),
        prices: Arc::new(PriceTable::bundled()),
        budget: Budget::new(Some(1e9)),
        ledger: writer.clone(),
        audit: Arc::new(runproof_net::NoAudit),
        loops: LoopPolicy {
            window: 0,
            max_usd_without_change: None,
            threshold: 0,
            stop: false,
        },
        max_body_bytes: 8 << 20,
        on_stop: None,
        extra_root_certs: Vec::new(),
    })
    .unwrap();
    let gl = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw_addr = gl.local_addr().unwrap();
    let g2 = gw.clone();
    gw_rt.spawn(async move { g2.serve(gl).await });

    // Warm both paths (connection pools, page cache), then measure in
    // alternating slices, direct then gateway, so that both paths see the
    // same machine load (other processes come and go on a shared machine).
    // A fixed request count runs as one slice each.
    let slices = if requests.is_some() { 1 } else { slices };
    let (slice, warm, warm_n) = match requests {
        Some(_) => (
            Duration::from_secs(600),
            Duration::from_secs(600),
            Some(1000),
        ),
        None => (
            Duration::from_secs_f64(secs as f64 / slices as f64),
            Duration::from_millis(500),
            None,
        ),
    };
    let (mut to_up, mut to_gw) =
        load_rt.block_on(async { (connect(up_addr, conc).await, connect(gw_addr, conc).await) });
    (to_up, _) = load_rt.block_on(load(to_up, warm, body, None, warm_n));
    (to_gw, _) = load_rt.block_on(load(to_gw, warm, body, None, warm_n));
    let (mut direct, mut via) = (Run::empty(), Run::empty());
    let mut d_direct = vec![ThreadStat::default(); GROUPS.len() + 1];
    let mut d_via = d_direct.clone();
    for _ in 0..slices {
        let t0 = thread_stats();
        let (up, r) = load_rt.block_on(load(to_up, slice, body, rate, requests));
        to_up = up;
        direct.add(r);
        let t1 = thread_stats();
        let (gw, r) = load_rt.block_on(load(to_gw, slice, body, rate, requests));
        to_gw = gw;
        via.add(r);
        let t2 = thread_stats();
        add_delta(&mut d_direct, &group_delta(&t0, &t1));
        add_delta(&mut d_via, &group_delta(&t1, &t2));
    }
    // The writer's work for the measured requests counts too, wherever its
    // batches happened to fall.
    let t0 = thread_stats();
    writer.flush().expect("ledger flush");
    add_delta(&mut d_via, &group_delta(&t0, &thread_stats()));
    let ledger = GROUPS
        .iter()
        .position(|(p, _)| *p == "runproof-ledger")
        .expect("ledger group");
    let w = std::mem::take(&mut d_direct[ledger]);
    add_delta(&mut d_via[ledger..=ledger], &[w]);
    direct.lat_us.sort_unstable();
    via.lat_us.sort_unstable();
    let recorded = Ledger::open(&ledger_path)
        .unwrap()
        .requests(Some("bench"))
        .unwrap()
        .len();

    let rps = |r: &Run| r.ok as f64 / r.elapsed.as_secs_f64();
    println!(
        "mode: {}  concurrency: {conc}  gateway workers: {gw_threads}  {} each",
        if stream {
            "streaming SSE"
        } else {
            "non-streaming JSON"
        },
        requests.map_or(
            format!("duration: {secs}s in {slices} slices"),
            |n| format!("requests: {n}")
        )
    );
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>8}",
        "path", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "req/s", "errors"
    );
    for (name, r) in [("direct", &direct), ("gateway", &via)] {
        println!(
            "{:<10} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>12.0} {:>8}",
            name,
            pct(&r.lat_us, 0.50),
            pct(&r.lat_us, 0.90),
            pct(&r.lat_us, 0.99),
            pct(&r.lat_us, 0.999),
            pct(&r.lat_us, 1.0),
            rps(r),
            r.errors
        );
    }
    println!(
        "added latency: p50 {:+.3} ms, p99 {:+.3} ms; throughput ratio gateway/direct {:.2}",
        pct(&via.lat_us, 0.50) - pct(&direct.lat_us, 0.50),
        pct(&via.lat_us, 0.99) - pct(&direct.lat_us, 0.99),
        rps(&via) / rps(&direct)
    );
    println!("ledger rows written for the gateway run (incl. warm-up): {recorded}");
    print_costs("direct", &d_direct, direct.ok + direct.errors);
    print_costs("gateway", &d_via, via.ok + via.errors);
    let cpu = |d: &[ThreadStat], r: &Run| {
        d.iter().map(|x| x.cpu_ns).sum::<u64>() as f64 / (r.ok + r.errors).max(1) as f64 / 1000.0
    };
    println!(
        "CPU per request, gateway path / direct path: {:.2} ({:+.2} us/req added)",
        cpu(&d_via, &via) / cpu(&d_direct, &direct),
        cpu(&d_via, &via) - cpu(&d_direct, &direct)
    );
}
