//! Test helpers: a local upstream that speaks the OpenAI and Anthropic wire
//! formats over plain HTTP/1.1 (written by hand so tests control framing,
//! timing and breakage), a raw HTTP client, and a gateway harness.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runproof_ledger::{Budget, Ledger, LedgerWriter, PriceTable, RequestRecord};
use runproof_net::MemoryAudit;
use runproof_net::gateway::{Gateway, GatewayConfig, LoopPolicy, StopReason, Upstream};

pub const HOST_KEY: &str = "sk-host-secret-key";
pub const SANDBOX_KEY: &str = "sk-from-inside-the-sandbox";

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub request_line: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the upstream answers.
#[derive(Clone)]
pub enum Reply {
    Json(u16, String),
    /// Raw body bytes with a given content type and status 200.
    Raw(&'static str, Vec<u8>),
    /// SSE, each string written as its own chunk (chunks need not align with
    /// events), then the terminating chunk.
    Sse(Vec<String>),
    /// SSE chunks, then the socket is closed without the terminating chunk.
    SseThenCut(Vec<String>),
    /// SSE chunks, then a ping every 20 ms until the peer goes away (or 10 s).
    SseThenHang(Vec<String>),
    /// SSE chunks spaced by a delay.
    SseSlow(Vec<String>, Duration),
    /// A JSON answer after a delay; counts the peer as gone if it left.
    JsonAfter(Duration, u16, String),
}

pub struct Upstream_ {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections where a write failed because the gateway hung up.
    pub peer_gone: Arc<AtomicUsize>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
}

pub type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub fn upstream(handler: Handler) -> Upstream_ {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gone = Arc::new(AtomicUsize::new(0));
    let (s2, g2) = (seen.clone(), gone.clone());
    let conns = Arc::new(AtomicUsize::new(0));
    let c2 = conns.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            c2.fetch_add(1, Ordering::SeqCst);
            let (seen, gone, handler) = (s2.clone(), g2.clone(), handler.clone());
            std::thread::spawn(move || serve_conn(conn, seen, gone, handler));
        }
    });
    Upstream_ {
        addr,
        seen,
        peer_gone: gone,
        conns,
    }
}

fn serve_conn(
    mut s: TcpStream,
    seen: Arc<Mutex<Vec<Seen>>>,
    gone: Arc<AtomicUsize>,
    handler: Handler,
) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    loop {
        // Read one request: head, then Content-Length body.
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        while buf.len() < head_end + 4 + len {
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body_bytes = buf[head_end + 4..head_end + 4 + len].to_vec();
        buf.drain(..head_end + 4 + len);
        let req = Seen {
            request_line,
            headers,
            body: serde_json::from_slice(&body_bytes).unwrap_or(serde_json::Value::Null),
        };
        seen.lock().unwrap().push(req.clone());
        let reply = handler(&req);
        let sse_head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
        let chunk = |s: &mut TcpStream, d: &str| -> std::io::Result<()> {
            write!(s, "{:x}\r\n{d}\r\n", d.len())?;
            s.flush()
        };
        match reply {
            Reply::Json(status, body) => {
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
            Reply::JsonAfter(d, status, body) => {
                std::thread::sleep(d);
                // A closed peer shows as EOF on a non-blocking peek.
                s.set_nonblocking(true).unwrap();
                let mut b = [0u8; 1];
                if matches!(s.peek(&mut b), Ok(0)) {
                    gone.fetch_add(1, Ordering::SeqCst);
                }
                s.set_nonblocking(false).unwrap();
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
            Reply::Raw(ct, body) => {
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            }
            Reply::Sse(chunks) => {
                let _ = s.write_all(sse_head);
                for c in &chunks {
                    let _ = chunk(&mut s, c);
                    std::thread::sleep(Duration::from_millis(2));
                }
                let _ = s.write_all(b"0\r\n\r\n");
            }
            Reply::SseSlow(chunks, d) => {
                let _ = s.write_all(sse_head);
                for c in &chunks {
                    if chunk(&mut s, c).is_err() {
                        gone.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    std::thread::sleep(d);
                }
                let _ = s.write_all(b"0\r\n\r\n");
            }
            Reply::SseThenCut(chunks) => {
                let _ = s.write_all(sse_head);
                for c in &chunks {
                    let _ = chunk(&mut s, c);
                    std::thread::sleep(Duration::from_millis(2));
                }
                let _ = s.shutdown(std::net::Shutdown::Both);
                return;
            }
            Reply::SseThenHang(chunks) => {
                let _ = s.write_all(sse_head);
                for c in &chunks {
                    let _ = chunk(&mut s, c);
                }
                for _ in 0..500 {
                    std::thread::sleep(Duration::from_millis(20));
                    if chunk(&mut s, "event: ping\ndata: {\"type\": \"ping\"}\n\n").is_err() {
                        gone.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                return;
            }
        }
    }
}

/// One SSE event with a `data:` line (and an `event:` line when given).
pub fn ev(event: Option<&str>, data: &serde_json::Value) -> String {
    match event {
        Some(e) => format!("event: {e}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

/// A response from the gateway, body de-chunked.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn send_request(
    addr: SocketAddr,
    path: &str,
    extra_headers: &[(&str, &str)],
    body: &str,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    s
}

/// POST and read the whole response (Connection: close).
pub fn post(addr: SocketAddr, path: &str, extra_headers: &[(&str, &str)], body: &str) -> Got {
    let mut s = send_request(addr, path, extra_headers, body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Got {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Got {
        status,
        headers,
        body,
    }
}

/// Decode chunked transfer coding, stopping quietly at a truncation.
pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(le) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let Ok(n) = usize::from_str_radix(std::str::from_utf8(&b[..le]).unwrap_or("x").trim(), 16)
        else {
            return out;
        };
        if n == 0 || b.len() < le + 2 + n {
            if n != 0 {
                out.extend_from_slice(&b[le + 2..]);
            }
            return out;
        }
        out.extend_from_slice(&b[le + 2..le + 2 + n]);
        b = &b[(le + 4 + n).min(b.len())..];
    }
}

/// Prices with round numbers so costs can be checked exactly.
pub fn test_prices() -> PriceTable {
    PriceTable::parse(
        r#"{
        "gpt-test": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                     "cache_read_input_token_cost": 1e-7, "output_cost_per_reasoning_token": 3e-6},
        "claude-test": {"input_cost_per_token": 3e-6, "output_cost_per_token": 1.5e-5,
                        "cache_read_input_token_cost": 3e-7, "cache_creation_input_token_cost": 3.75e-6}
        }"#,
        "test",
    )
    .unwrap()
}

pub struct Harness {
    pub addr: SocketAddr,
    pub gateway: Gateway,
    pub ledger_path: std::path::PathBuf,
    pub writer: LedgerWriter,
    pub audit: Arc<MemoryAudit>,
    pub stops: Arc<Mutex<Vec<StopReason>>>,
    pub _dir: tempfile::TempDir,
    pub _rt: tokio::runtime::Runtime,
}

pub struct Opts {
    pub budget: Option<f64>,
    pub loops: LoopPolicy,
    pub writer: Option<(LedgerWriter, std::path::PathBuf, tempfile::TempDir)>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            budget: None,
            loops: LoopPolicy {
                window: 0,
                max_usd_without_change: None,
                threshold: 0,
                stop: false,
            },
            writer: None,
        }
    }
}

pub fn gateway(up: &Upstream_, opts: Opts) -> Harness {
    let (writer, ledger_path, dir) = opts.writer.unwrap_or_else(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ledger.db");
        (LedgerWriter::spawn(Ledger::open(&p).unwrap()), p, dir)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let audit = Arc::new(MemoryAudit::default());
    let stops = Arc::new(Mutex::new(Vec::new()));
    let s2 = stops.clone();
    let base = format!("http://{}", up.addr);
    let g = Gateway::new(GatewayConfig {
        openai: Some(Upstream {
            base_url: format!("{base}/v1"),
            api_key: HOST_KEY.into(),
        }),
        anthropic: Some(Upstream {
            base_url: base,
            api_key: HOST_KEY.into(),
        }),
        run_id: Some("run-1".into()),
        prices: Arc::new(test_prices()),
        budget: Budget::new(opts.budget),
        ledger: writer.clone(),
        audit: audit.clone(),
        loops: opts.loops,
        max_body_bytes: 8 << 20,
        on_stop: Some(Arc::new(move |r| s2.lock().unwrap().push(r))),
        extra_root_certs: Vec::new(),
    })
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let g2 = g.clone();
    rt.spawn(async move { g2.serve(l).await });
    Harness {
        addr,
        gateway: g,
        ledger_path,
        writer,
        audit,
        stops,
        _dir: dir,
        _rt: rt,
    }
}

impl Harness {
    /// Wait for `n` ledger records (streams are recorded as they end).
    pub fn records(&self, n: usize) -> Vec<RequestRecord> {
        for _ in 0..300 {
            self.writer.flush().unwrap();
            let r = Ledger::open(&self.ledger_path)
                .unwrap()
                .requests(None)
                .unwrap();
            if r.len() >= n {
                return r;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("expected {n} ledger records");
    }
}
