//! The metered LLM gateway: an OpenAI- and Anthropic-compatible HTTP endpoint
//! on the sandbox side that forwards to the real upstream configured on the
//! host, adds the host's API key, meters every call from the upstream's own
//! usage numbers, enforces the budget and writes the ledger.
//!
//! Served paths (with or without the `/v1` prefix):
//! `POST /v1/chat/completions`, `POST /v1/responses` (OpenAI upstream) and
//! `POST /v1/messages` (Anthropic upstream). Anything else is a 404 in the
//! API's own error shape.
//!
//! Request headers are forwarded from an allow list only; `Authorization`,
//! `x-api-key` and every other credential-like header from the sandbox are
//! dropped and the host key is set instead.

pub mod meter;
pub mod sse;
mod upstream;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, combinators::UnsyncBoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioIo, TokioTimer};
use runproof_ledger::{
    Budget, BudgetError, LedgerWriter, ModelPrice, PriceTable, RequestRecord, Reservation, Usage,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::audit::{AuditEvent, AuditSink, bounded};
use meter::{Api, Scalar, StreamMeter, Verdict};
use upstream::{Connector, Lease, Pool};

type GwBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Output tokens assumed when estimating a request's cost for its
/// reservation, capped by the request's own `max_tokens`. Deliberately not
/// `max_tokens` itself: that worst case blocks agents that have money left.
pub const OUTPUT_ESTIMATE_TOKENS: u64 = 1024;

/// Errors in the gateway's configuration.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "upstream URL {0:?} is not an http:// or https:// URL with a host (example: https://api.openai.com)"
    )]
    BadUpstream(String),
    #[error("cannot set up TLS for upstream connections: {0}")]
    Tls(String),
    #[error(
        "cannot read CA certificates from {path}: {msg} (expected PEM `BEGIN CERTIFICATE` blocks)"
    )]
    CaFile { path: String, msg: String },
}

/// A real API on the host side.
#[derive(Clone)]
pub struct Upstream {
    /// `https://api.openai.com`, `https://api.anthropic.com` or a compatible
    /// server; a trailing `/v1` is accepted and ignored.
    pub base_url: String,
    /// The key added on the host side. Never logged, never forwarded inward.
    pub api_key: String,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// Largest key file read (a key is a line of text).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Read an API key from a file on the host: one line, surrounding
/// whitespace trimmed. Refuses an empty key, a huge file, and control
/// characters (a key is sent as a header; a newline in it would add headers).
/// The error names the file, never the content.
pub fn read_key_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| format!("cannot read API key file {}: {e}", path.display()))?;
    let mut text = String::new();
    f.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read API key file {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(format!(
            "API key file {} is over {MAX_KEY_FILE} bytes; it should hold only the key",
            path.display()
        ));
    }
    let key = text.trim();
    if key.is_empty() {
        return Err(format!(
            "API key file {} is empty; write the key into it",
            path.display()
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(format!(
            "API key file {} holds more than one line or control characters; it should hold only the key",
            path.display()
        ));
    }
    Ok(key.to_string())
}

/// Runaway-loop detection: `threshold` near-identical requests among the
/// last `window` flag the run, and so does spending more than
/// `max_usd_without_change` since the caller last reported a change in the
/// workspace ([`Gateway::note_workspace_change`]). With `stop` the gateway
/// then refuses traffic.
#[derive(Debug, Clone, Copy)]
pub struct LoopPolicy {
    pub window: usize,
    pub threshold: usize,
    pub max_usd_without_change: Option<f64>,
    pub stop: bool,
}

impl Default for LoopPolicy {
    fn default() -> Self {
        LoopPolicy {
            window: 20,
            threshold: 6,
            max_usd_without_change: None,
            stop: false,
        }
    }
}

/// Why the gateway asks its caller to stop the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    BudgetExhausted,
    /// Near-identical requests repeated (`LoopPolicy::threshold` of `window`).
    RunawayLoop,
    /// More than `LoopPolicy::max_usd_without_change` spent since the
    /// caller last reported a change in the workspace.
    SpendWithoutChange,
}

/// Called once per reason when the run should be stopped.
pub type StopHook = Arc<dyn Fn(StopReason) + Send + Sync>;

/// Everything the gateway needs.
pub struct GatewayConfig {
    pub openai: Option<Upstream>,
    pub anthropic: Option<Upstream>,
    pub run_id: Option<String>,
    pub prices: Arc<PriceTable>,
    pub budget: Arc<Budget>,
    pub ledger: LedgerWriter,
    pub audit: Arc<dyn AuditSink>,
    pub loops: LoopPolicy,
    /// Largest request or non-streamed response body accepted.
    pub max_body_bytes: usize,
    pub on_stop: Option<StopHook>,
    /// Certificates (DER) trusted for upstream TLS in addition to the bundled
    /// Mozilla roots: a company proxy's CA, or a test server's.
    pub extra_root_certs: Vec<Vec<u8>>,
}

/// Read PEM certificates (for [`GatewayConfig::extra_root_certs`]).
pub fn load_pem_certs(path: &std::path::Path) -> Result<Vec<Vec<u8>>, GatewayError> {
    use rustls::pki_types::pem::PemObject;
    let err = |msg: String| GatewayError::CaFile {
        path: path.display().to_string(),
        msg,
    };
    let data = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&data)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate found".into()));
    }
    Ok(certs)
}

impl GatewayConfig {
    /// Defaults around a ledger writer: no upstream yet, the bundled price
    /// table, no budget limit (still accounted), no audit sink, loop
    /// detection that flags but does not stop, 32 MiB bodies.
    pub fn new(ledger: LedgerWriter) -> Self {
        GatewayConfig {
            openai: None,
            anthropic: None,
            run_id: None,
            prices: Arc::new(PriceTable::bundled()),
            budget: Budget::new(None),
            ledger,
            audit: Arc::new(crate::audit::NoAudit),
            loops: LoopPolicy::default(),
            max_body_bytes: 32 << 20,
            on_stop: None,
            extra_root_certs: Vec::new(),
        }
    }
}

struct Target {
    base: String,
    key: HeaderValue,
    /// `Host` of the upstream requests.
    host: HeaderValue,
    /// Path of the base URL, before the endpoint's own (usually empty).
    prefix: String,
    /// The origin-form URI of each endpoint, built once.
    chat: Uri,
    responses: Uri,
    messages: Uri,
    pool: Arc<Pool>,
}

impl Target {
    fn uri(&self, api: Api) -> &Uri {
        match api {
            Api::OpenAiChat => &self.chat,
            Api::OpenAiResponses => &self.responses,
            Api::AnthropicMessages => &self.messages,
        }
    }
}

struct Inner {
    openai: Option<Target>,
    anthropic: Option<Target>,
    run_id: Option<String>,
    prices: Arc<PriceTable>,
    budget: Arc<Budget>,
    ledger: LedgerWriter,
    audit: Arc<dyn AuditSink>,
    loops: LoopPolicy,
    recent: Mutex<VecDeque<u64>>,
    loop_flagged: AtomicBool,
    /// What flagged the loop, in words (for the refusals that follow).
    loop_why: std::sync::OnceLock<String>,
    /// Spend since the last reported workspace change, nano-USD.
    spent_since_change: AtomicU64,
    budget_stop_sent: AtomicBool,
    warned_unpriced: Mutex<std::collections::HashSet<String>>,
    max_body: usize,
    on_stop: Option<StopHook>,
}

/// A running gateway's shared state; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

fn target(u: &Upstream, anthropic: bool, connector: &Connector) -> Result<Target, GatewayError> {
    let trimmed = u.base_url.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
    let uri: Uri = trimmed
        .parse()
        .map_err(|_| GatewayError::BadUpstream(u.base_url.clone()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(GatewayError::BadUpstream(u.base_url.clone()));
    }
    let raw = if anthropic {
        u.api_key.clone()
    } else {
        format!("Bearer {}", u.api_key)
    };
    let mut key = HeaderValue::from_str(&raw).map_err(|_| {
        GatewayError::BadUpstream(format!(
            "{} (API key has characters not allowed in a header)",
            u.base_url
        ))
    })?;
    key.set_sensitive(true);
    let bad = || GatewayError::BadUpstream(u.base_url.clone());
    let (scheme, authority) = uri.scheme().zip(uri.authority()).ok_or_else(bad)?;
    // As HTTP clients send it: the port only when it is not the default.
    let host = uri.host().ok_or_else(bad)?;
    let default_port = if scheme.as_str() == "https" { 443 } else { 80 };
    let host = match uri.port_u16().filter(|&p| p != default_port) {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let host = HeaderValue::from_str(&host).map_err(|_| bad())?;
    let dial = Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|_| bad())?;
    let prefix = uri.path().trim_end_matches('/').to_string();
    let endpoint = |api: Api| -> Result<Uri, GatewayError> {
        format!("{prefix}{}", api.path()).parse().map_err(|_| bad())
    };
    Ok(Target {
        base: trimmed.to_string(),
        key,
        host,
        chat: endpoint(Api::OpenAiChat)?,
        responses: endpoint(Api::OpenAiResponses)?,
        messages: endpoint(Api::AnthropicMessages)?,
        prefix,
        pool: Pool::new(connector.clone(), dial),
    })
}

/// The connector for upstream connections: TCP with TCP_NODELAY, TLS
/// verified against the bundled Mozilla roots and `extra_root_certs`.
fn connector(extra_root_certs: &[Vec<u8>]) -> Result<Connector, GatewayError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(15)));
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra_root_certs {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| GatewayError::Tls(format!("extra root certificate rejected: {e}")))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| GatewayError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

impl Gateway {
    pub fn new(cfg: GatewayConfig) -> Result<Gateway, GatewayError> {
        let https = connector(&cfg.extra_root_certs)?;
        Ok(Gateway {
            inner: Arc::new(Inner {
                openai: cfg
                    .openai
                    .as_ref()
                    .map(|u| target(u, false, &https))
                    .transpose()?,
                anthropic: cfg
                    .anthropic
                    .as_ref()
                    .map(|u| target(u, true, &https))
                    .transpose()?,
                run_id: cfg.run_id,
                prices: cfg.prices,
                budget: cfg.budget,
                ledger: cfg.ledger,
                audit: cfg.audit,
                loops: cfg.loops,
                recent: Mutex::new(VecDeque::new()),
                loop_flagged: AtomicBool::new(false),
                loop_why: std::sync::OnceLock::new(),
                spent_since_change: AtomicU64::new(0),
                budget_stop_sent: AtomicBool::new(false),
                warned_unpriced: Mutex::new(Default::default()),
                max_body: cfg.max_body_bytes,
                on_stop: cfg.on_stop,
            }),
        })
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.inner.budget
    }

    /// True once the run was flagged as a runaway loop: near-identical
    /// requests passed the threshold, or it spent too much without a change.
    pub fn loop_flagged(&self) -> bool {
        self.inner.loop_flagged.load(Ordering::Relaxed)
    }

    /// Tell the gateway the run's workspace changed (the agent made
    /// progress): resets the spend-without-change counter.
    pub fn note_workspace_change(&self) {
        self.inner.spent_since_change.store(0, Ordering::Relaxed);
    }

    /// Serve on an already-bound listener until the future is dropped
    /// (dropping it also ends every open connection). Needs a tokio runtime
    /// with I/O and time enabled.
    pub async fn serve(&self, listener: std::net::TcpListener) -> std::io::Result<()> {
        let inner = self.inner.clone();
        let handle = move |stream: tokio::net::TcpStream, peer: SocketAddr, permit| {
            let inner = inner.clone();
            async move {
                let _permit = permit;
                let svc = hyper::service::service_fn(move |req| {
                    let inner = inner.clone();
                    async move { Ok::<_, Infallible>(inner.handle(req, peer).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(60))
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        };
        let max = crate::proxy::MAX_CONNECTIONS;
        crate::proxy::serve_connections(listener, max, "gateway", handle).await
    }
}

/// Error kinds, rendered in each API's own error shape.
#[derive(Clone, Copy)]
enum ErrKind {
    BadRequest,
    NotFound,
    BudgetExhausted,
    BudgetBusy,
    Loop,
    Unavailable,
    BadGateway,
}

fn api_error(anthropic: bool, kind: ErrKind, msg: &str) -> Response<GwBody> {
    let (status, oa_type, oa_code, an_type, retry) = match kind {
        ErrKind::BadRequest => (
            400,
            "invalid_request_error",
            None,
            "invalid_request_error",
            false,
        ),
        ErrKind::NotFound => (
            404,
            "invalid_request_error",
            Some("unknown_url"),
            "not_found_error",
            false,
        ),
        // OpenAI answers a spent quota with 429 insufficient_quota; Anthropic
        // a spent credit balance with 400 invalid_request_error.
        ErrKind::BudgetExhausted if anthropic => (400, "", None, "invalid_request_error", false),
        ErrKind::BudgetExhausted => (
            429,
            "insufficient_quota",
            Some("insufficient_quota"),
            "",
            false,
        ),
        ErrKind::BudgetBusy => (
            429,
            "rate_limit_exceeded",
            Some("rate_limit_exceeded"),
            "rate_limit_error",
            true,
        ),
        ErrKind::Loop => (
            429,
            "runaway_loop",
            Some("runaway_loop"),
            "rate_limit_error",
            false,
        ),
        ErrKind::Unavailable => (503, "server_error", None, "api_error", true),
        ErrKind::BadGateway => (502, "server_error", None, "api_error", true),
    };
    let msg = format!("runproof gateway: {msg}");
    let body = if anthropic {
        json!({"type": "error", "error": {"type": an_type, "message": msg}})
    } else {
        json!({"error": {"message": msg, "type": oa_type, "param": null, "code": oa_code}})
    };
    let mut r = Response::new(full(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Both official SDKs honour this header to decide about retrying.
    h.insert(
        "x-should-retry",
        HeaderValue::from_static(if retry { "true" } else { "false" }),
    );
    if matches!(kind, ErrKind::BudgetBusy) {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn full(b: Bytes) -> GwBody {
    Full::new(b)
        .map_err(|n: Infallible| match n {})
        .boxed_unsync()
}

/// Request headers passed on to the upstream; everything else is dropped.
fn forwardable(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "accept"
            | "user-agent"
            | "anthropic-version"
            | "anthropic-beta"
            | "openai-beta"
            | "openai-organization"
            | "openai-project"
            | "idempotency-key"
    ) || name.starts_with("x-stainless-")
}

fn filter_response_headers(h: &mut HeaderMap) {
    const KEEP_ALIVE: header::HeaderName = header::HeaderName::from_static("keep-alive");
    for n in [
        header::CONNECTION,
        KEEP_ALIVE,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::SET_COOKIE,
        header::PROXY_AUTHENTICATE,
    ] {
        h.remove(n);
    }
}

fn route(path: &str) -> Option<Api> {
    let p = path.strip_prefix("/v1").unwrap_or(path);
    match p {
        "/chat/completions" => Some(Api::OpenAiChat),
        "/responses" => Some(Api::OpenAiResponses),
        "/messages" => Some(Api::AnthropicMessages),
        _ => None,
    }
}

/// Fingerprint of the part of a request that repeats in a runaway loop: the
/// model and the last message, with whitespace collapsed and digits blurred
/// (timestamps, counters and ids do not make a request new).
fn loop_fingerprint(model: &str, conversation: Option<&RawValue>) -> Option<u64> {
    let conversation = conversation?;
    let last: Value = match serde_json::from_str::<Vec<&RawValue>>(conversation.get()) {
        Ok(items) => serde_json::from_str(items.last()?.get()).ok()?,
        // `input` may be a plain string.
        Err(_) => serde_json::from_str(conversation.get()).ok()?,
    };
    let last = &last;
    // The message's strings (role, content, tool output), not its JSON
    // spelling, so escapes do not hide a repeat.
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(o) => o.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut parts = Vec::new();
    strings(last, &mut parts);
    let mut norm = String::new();
    let mut prev_space = true;
    for c in parts
        .iter()
        .flat_map(|p| p.chars().chain([' ']))
        .take(1 << 16)
    {
        if c.is_whitespace() {
            if !prev_space {
                norm.push(' ');
            }
            prev_space = true;
        } else {
            norm.push(if c.is_ascii_digit() { '0' } else { c });
            prev_space = false;
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    model.hash(&mut h);
    norm.hash(&mut h);
    Some(h.finish())
}

/// The request fields the gateway reads. Duplicate keys are refused by the
/// decoder, so the gateway and the upstream cannot read different values.
/// Scalars are read without building JSON values; a field of another type
/// reads as absent.
#[derive(serde::Deserialize)]
struct RequestHead<'a> {
    #[serde(default)]
    model: Option<Scalar>,
    #[serde(default)]
    stream: Option<Scalar>,
    #[serde(default)]
    stream_options: Option<Value>,
    #[serde(default)]
    max_tokens: Option<Scalar>,
    #[serde(default)]
    max_completion_tokens: Option<Scalar>,
    #[serde(default)]
    max_output_tokens: Option<Scalar>,
    #[serde(default, borrow)]
    messages: Option<&'a RawValue>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
}

/// Decode a body. UTF-8 is checked once for the whole body rather than for
/// each string; a body that is not all UTF-8 is decoded from its bytes, as
/// before, where the decoder does not check the strings it skips unread.
fn json_of<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, serde_json::Error> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

/// The request body with `stream_options.include_usage` set to true. When the
/// client sent no `stream_options` at all, the member is appended to the
/// object so every other byte is forwarded as the client wrote it.
fn with_include_usage(body: &[u8]) -> Option<Bytes> {
    const NEEDLE: &[u8] = b"stream_options";
    if !body.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
        let end = body.iter().rposition(|b| !b.is_ascii_whitespace())?;
        if body[end] != b'}' {
            return None;
        }
        let mut out = Vec::with_capacity(body.len() + 48);
        out.extend_from_slice(&body[..end]);
        out.extend_from_slice(br#","stream_options":{"include_usage":true}}"#);
        return Some(Bytes::from(out));
    }
    let mut json: Value = serde_json::from_slice(body).ok()?;
    let obj = json.as_object_mut()?;
    let so = obj.entry("stream_options").or_insert_with(|| json!({}));
    if !so.is_object() {
        *so = json!({});
    }
    so.as_object_mut()?
        .insert("include_usage".into(), Value::Bool(true));
    Some(Bytes::from(json.to_string()))
}

/// Everything needed to charge and record one request, whenever it ends.
struct Charge {
    inner: Arc<Inner>,
    api: Api,
    model: String,
    stream: bool,
    status: u16,
    price: Option<ModelPrice>,
    reservation: Option<Reservation>,
    start: Instant,
    ts_ms: i64,
    ev: AuditEvent,
    input_estimate: u64,
    finished: bool,
}

impl Drop for Charge {
    fn drop(&mut self) {
        // The client went away while the upstream was still answering: the
        // input was sent and may be billed, so charge its estimate.
        if !self.finished {
            let u = Usage {
                input: self.input_estimate,
                ..Usage::default()
            };
            self.finish(u, true, "client_hangup", 0);
        }
    }
}

impl Charge {
    fn finish(&mut self, usage: Usage, estimated: bool, outcome: &str, bytes_down: u64) {
        if self.finished {
            return;
        }
        self.finished = true;
        let cost = self.price.map(|p| p.cost(&usage));
        if let Some(r) = self.reservation.take() {
            r.settle(cost.unwrap_or(0.0));
        }
        let inner = &self.inner;
        let duration_ms = self.start.elapsed().as_millis() as u64;
        if inner.audit.enabled() {
            self.ev.decision = "allowed";
            self.ev.bytes_down = bytes_down;
            self.ev.duration_ms = duration_ms;
            if outcome != "ok" {
                self.ev.reason = Some(outcome.to_string());
            }
            if cost.is_none() {
                let r = self
                    .ev
                    .reason
                    .take()
                    .map(|r| format!("{r}; "))
                    .unwrap_or_default();
                self.ev.reason = Some(format!(
                    "{r}model {:?} has no price: cost UNKNOWN",
                    bounded(&self.model)
                ));
            }
        }
        inner.ledger.submit(RequestRecord {
            run_id: inner.run_id.clone(),
            ts_ms: self.ts_ms,
            provider: self.api.provider().into(),
            endpoint: self.api.endpoint().into(),
            // Finished once: the record takes the name.
            model: std::mem::take(&mut self.model),
            stream: self.stream,
            http_status: self.status,
            usage,
            cost_usd: cost,
            estimated,
            outcome: outcome.into(),
            duration_ms,
        });
        if inner.audit.enabled() {
            inner.audit.record(&self.ev);
        }
        inner.note_spend(cost.unwrap_or(0.0));
        inner.check_budget_stop();
    }
}

impl Inner {
    fn check_budget_stop(&self) {
        if self.budget.is_exhausted() && !self.budget_stop_sent.swap(true, Ordering::AcqRel) {
            eprintln!(
                "runproof gateway: budget exhausted ({:?}); refusing further model calls",
                self.budget.status()
            );
            if let Some(h) = &self.on_stop {
                h(StopReason::BudgetExhausted);
            }
        }
    }

    fn flag_loop(&self, reason: StopReason, why: &str) {
        if !self.loop_flagged.swap(true, Ordering::AcqRel) {
            let _ = self.loop_why.set(why.to_string());
            eprintln!("runproof gateway: runaway loop: {why}");
            if let Some(h) = &self.on_stop {
                h(reason);
            }
        }
    }

    /// Add a settled cost to the spend since the last workspace change.
    fn note_spend(&self, usd: f64) {
        let Some(max) = self.loops.max_usd_without_change else {
            return;
        };
        let nano = (usd.max(0.0) * 1e9) as u64;
        let total = self.spent_since_change.fetch_add(nano, Ordering::Relaxed) + nano;
        if total as f64 / 1e9 > max {
            self.flag_loop(
                StopReason::SpendWithoutChange,
                &format!(
                    "${:.4} spent without any change in the workspace (limit ${max:.4})",
                    total as f64 / 1e9
                ),
            );
        }
    }

    /// Record a fingerprint; true when the loop threshold is reached.
    fn note_loop(&self, fp: u64) -> bool {
        let LoopPolicy {
            window, threshold, ..
        } = self.loops;
        if window == 0 || threshold == 0 {
            return false;
        }
        let mut q = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back(fp);
        while q.len() > window {
            q.pop_front();
        }
        let hits = q.iter().filter(|&&x| x == fp).count();
        drop(q);
        if hits >= threshold {
            self.flag_loop(
                StopReason::RunawayLoop,
                &format!("{hits} near-identical requests among the last {window}"),
            );
            return true;
        }
        false
    }

    /// Feed a request that cannot be served to the loop detector; true when
    /// it reached the loop threshold.
    async fn note_unserved(&self, body: Incoming) -> bool {
        let Ok(bytes) = Limited::new(body, self.max_body).collect().await else {
            return false;
        };
        let bytes = bytes.to_bytes();
        let Ok(head) = serde_json::from_slice::<RequestHead>(&bytes) else {
            return false;
        };
        let Some(Scalar::Str(model)) = head.model else {
            return false;
        };
        loop_fingerprint(&model, head.messages.or(head.input)).is_some_and(|fp| self.note_loop(fp))
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<GwBody> {
        let start = Instant::now();
        let ts_ms = runproof_ledger::time::unix_ms();
        let api = route(req.uri().path());
        let protocol = api.map_or("unknown", |a| a.endpoint());
        // Without a sink that keeps events, none is built (no time stamp,
        // no strings): the request path only fills in what is recorded.
        let audit_on = self.audit.enabled();
        let mut ev = if audit_on {
            let mut ev = AuditEvent::new("gateway", protocol);
            ev.client = Some(peer.to_string());
            ev.method = Some(bounded(req.method().as_str()));
            ev.url = Some(bounded(&req.uri().to_string()));
            ev
        } else {
            AuditEvent::untimed("gateway", protocol)
        };
        let anthropic_shape =
            api == Some(Api::AnthropicMessages) || req.headers().contains_key("anthropic-version");
        let deny = |mut ev: AuditEvent, kind: ErrKind, msg: String| {
            if audit_on {
                ev.reason = Some(bounded(&msg));
                ev.duration_ms = start.elapsed().as_millis() as u64;
                self.audit.record(&ev);
            }
            api_error(anthropic_shape, kind, &msg)
        };
        let Some(api) = api.filter(|_| req.method() == Method::POST) else {
            return deny(
                ev,
                ErrKind::NotFound,
                format!(
                    "{} {} is not served; the gateway serves POST /v1/chat/completions, /v1/responses and /v1/messages",
                    req.method(),
                    bounded(req.uri().path())
                ),
            );
        };
        let target = match api {
            Api::AnthropicMessages => self.anthropic.as_ref(),
            _ => self.openai.as_ref(),
        };
        let Some(target) = target else {
            // An agent that keeps sending a call nothing can serve is as
            // stuck as one repeating a served call: the loop detector sees it.
            let looping = self.loop_flagged.load(Ordering::Relaxed)
                || (self.loops.window > 0 && self.note_unserved(req.into_body()).await);
            if looping && self.loops.stop {
                return deny(
                    ev,
                    ErrKind::Loop,
                    "runaway loop: the same request keeps repeating; the run is stopped".into(),
                );
            }
            return deny(
                ev,
                ErrKind::Unavailable,
                format!(
                    "no {} upstream is configured on the host; set it in runproof.toml or with the gateway flags",
                    api.provider()
                ),
            );
        };
        if !self.ledger.healthy() {
            return deny(
                ev,
                ErrKind::Unavailable,
                format!(
                    "the cost ledger cannot be written, so no model call is made until it can: {}",
                    self.ledger.error().unwrap_or_default()
                ),
            );
        }
        if self.loops.stop && self.loop_flagged.load(Ordering::Relaxed) {
            return deny(
                ev,
                ErrKind::Loop,
                format!(
                    "this run was stopped as a runaway loop ({})",
                    self.loop_why.get().map_or("", String::as_str)
                ),
            );
        }

        // Read and parse the request.
        let (parts, body) = req.into_parts();
        let bytes = match Limited::new(body, self.max_body).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return deny(
                    ev,
                    ErrKind::BadRequest,
                    format!(
                        "request body unreadable or over {} bytes: {e}",
                        self.max_body
                    ),
                );
            }
        };
        // Only the fields the gateway needs are decoded; the conversation is
        // left as raw JSON (decoding it into values costs more than forwarding).
        let head: RequestHead = match json_of(&bytes) {
            Ok(h) => h,
            Err(e) => {
                return deny(
                    ev,
                    ErrKind::BadRequest,
                    format!("request body is not a valid JSON object: {e}"),
                );
            }
        };
        let Some(Scalar::Str(model)) = head.model else {
            return deny(
                ev,
                ErrKind::BadRequest,
                "request has no \"model\" string".into(),
            );
        };
        let stream = head
            .stream
            .as_ref()
            .and_then(Scalar::as_bool)
            .unwrap_or(false);
        let mut strip_usage_chunk = false;
        let mut out_bytes = bytes.clone();
        if stream && api == Api::OpenAiChat {
            let asked = head
                .stream_options
                .as_ref()
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !asked {
                strip_usage_chunk = true;
                out_bytes = match with_include_usage(&bytes) {
                    Some(b) => b,
                    None => {
                        return deny(
                            ev,
                            ErrKind::BadRequest,
                            "request body is not a JSON object".into(),
                        );
                    }
                };
            }
        }

        // Price, estimate, reserve.
        let price = self.prices.get(&model).copied();
        if price.is_none() {
            if self.budget.limit().is_some() {
                return deny(
                    ev,
                    ErrKind::BadRequest,
                    format!(
                        "model {:?} has no price, so the budget cannot be enforced; add it with --prices FILE (LiteLLM format)",
                        bounded(&model)
                    ),
                );
            }
            if self
                .warned_unpriced
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(model.clone())
            {
                eprintln!(
                    "runproof gateway: WARNING: model {model:?} has no price; its cost is recorded as UNKNOWN. Add it with --prices FILE."
                );
            }
        }
        let input_estimate = meter::estimate_tokens(bytes.len());
        let max_out = [
            &head.max_tokens,
            &head.max_completion_tokens,
            &head.max_output_tokens,
        ]
        .iter()
        .find_map(|v| v.as_ref().and_then(Scalar::as_u64))
        .unwrap_or(u64::MAX);
        let estimate = price.map_or(0.0, |p| {
            p.cost(&Usage {
                input: input_estimate,
                output: OUTPUT_ESTIMATE_TOKENS.min(max_out),
                ..Usage::default()
            })
        });
        let reservation = match self.budget.reserve(estimate) {
            Ok(r) => r,
            Err(e @ BudgetError::Exhausted { .. }) => {
                self.check_budget_stop();
                return deny(ev, ErrKind::BudgetExhausted, e.to_string());
            }
            Err(e @ BudgetError::TailBusy { .. }) => {
                return deny(ev, ErrKind::BudgetBusy, e.to_string());
            }
        };
        if self.loops.window > 0
            && let Some(fp) = loop_fingerprint(&model, head.messages.or(head.input))
            && self.note_loop(fp)
        {
            if self.loops.stop {
                reservation.settle(0.0);
                return deny(
                    ev,
                    ErrKind::Loop,
                    "runaway loop: the same request keeps repeating; the run is stopped".into(),
                );
            }
            ev.reason = Some("runaway loop suspected: near-identical requests repeating".into());
        }

        // Build the upstream request.
        let uri: Uri = match parts.uri.query() {
            None => target.uri(api).clone(),
            Some(q) => match format!("{}{}?{q}", target.prefix, api.path()).parse() {
                Ok(u) => u,
                Err(_) => {
                    reservation.settle(0.0);
                    return deny(
                        ev,
                        ErrKind::BadRequest,
                        "request query string is not valid".into(),
                    );
                }
            },
        };
        let mut up = Request::builder().method(Method::POST).uri(uri);
        let h = up.headers_mut().expect("fresh builder");
        for (name, value) in parts.headers.iter() {
            if forwardable(name.as_str()) {
                h.append(name.clone(), value.clone());
            }
        }
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        if api == Api::AnthropicMessages {
            h.insert("x-api-key", target.key.clone());
            if !h.contains_key("anthropic-version") {
                h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
            }
        } else {
            h.insert(header::AUTHORIZATION, target.key.clone());
        }
        if !h.contains_key(header::CONTENT_TYPE) {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        h.insert(header::HOST, target.host.clone());
        ev.bytes_up = out_bytes.len() as u64;
        let up = up.body(Full::new(out_bytes)).expect("valid request");

        let mut charge = Charge {
            inner: self.clone(),
            api,
            model,
            stream,
            status: 0,
            price,
            reservation: Some(reservation),
            start,
            ts_ms,
            ev,
            input_estimate,
            finished: false,
        };
        let (resp, lease) = match target.pool.send(up).await {
            Ok(r) => r,
            Err(e) => {
                // hyper's error hides its cause; name every layer.
                let mut msg = format!("upstream {} unreachable: {e}", target.base);
                let mut src = std::error::Error::source(&e);
                while let Some(cause) = src {
                    msg.push_str(&format!(": {cause}"));
                    src = cause.source();
                }
                charge.finish(Usage::default(), false, "upstream_unreachable", 0);
                return api_error(anthropic_shape, ErrKind::BadGateway, &msg);
            }
        };
        let (mut rparts, rbody) = resp.into_parts();
        charge.status = rparts.status.as_u16();
        filter_response_headers(&mut rparts.headers);
        let is_sse = rparts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));

        if rparts.status.is_success() && is_sse {
            let body = Metered {
                upstream: rbody,
                splitter: sse::Splitter::default(),
                meter: StreamMeter::new(api, strip_usage_chunk, input_estimate),
                charge: Some(charge),
                lease: Some(lease),
                bytes_down: 0,
                ended: false,
            };
            return Response::from_parts(rparts, body.boxed_unsync());
        }

        // Whole body: error responses and non-streamed results.
        let body = match Limited::new(rbody, self.max_body).collect().await {
            Ok(b) => {
                lease.release();
                b.to_bytes()
            }
            Err(e) => {
                let (usage, outcome) = if rparts.status.is_success() {
                    (
                        Usage {
                            input: input_estimate,
                            ..Usage::default()
                        },
                        "upstream_cut",
                    )
                } else {
                    (Usage::default(), "upstream_error")
                };
                charge.finish(usage, rparts.status.is_success(), outcome, 0);
                return api_error(
                    anthropic_shape,
                    ErrKind::BadGateway,
                    &format!("upstream response unreadable: {e}"),
                );
            }
        };
        let n = body.len() as u64;
        if !rparts.status.is_success() {
            // Upstream errors are not billed by the providers.
            charge.finish(Usage::default(), false, "upstream_error", n);
        } else {
            match json_of::<meter::UsageOnly>(&body)
                .ok()
                .and_then(|v| meter::usage_of_body(api, &v))
            {
                Some(u) => charge.finish(u, false, "ok", n),
                None => {
                    // No usable usage: charge an estimate and say so.
                    let u = Usage {
                        input: input_estimate,
                        output: meter::estimate_tokens(body.len()),
                        ..Usage::default()
                    };
                    charge.finish(u, true, "malformed", n);
                }
            }
        }
        Response::from_parts(rparts, full(body))
    }
}

/// A streamed response passed through event by event while it is metered.
struct Metered {
    upstream: Incoming,
    splitter: sse::Splitter,
    meter: StreamMeter,
    charge: Option<Charge>,
    /// The upstream connection, reused only if the stream is read to its end.
    lease: Option<Lease>,
    bytes_down: u64,
    ended: bool,
}

fn cut_event(api: Api, msg: &str) -> Vec<u8> {
    let msg = format!("runproof gateway: {msg}");
    match api {
        Api::AnthropicMessages => format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": msg}})
        ),
        Api::OpenAiResponses => format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "code": "insufficient_quota", "message": msg, "param": null})
        ),
        Api::OpenAiChat => format!(
            "data: {}\n\n",
            json!({"error": {"message": msg, "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}})
        ),
    }
    .into_bytes()
}

impl Metered {
    fn finish(&mut self, outcome: &str) {
        if let Some(mut c) = self.charge.take() {
            let (usage, estimated) = self.meter.usage_so_far();
            let outcome = if outcome == "ok" && estimated {
                if self.meter.malformed {
                    "malformed"
                } else {
                    "truncated"
                }
            } else if outcome == "ok" && self.meter.saw_error {
                "upstream_error_in_stream"
            } else {
                outcome
            };
            c.finish(usage, estimated, outcome, self.bytes_down);
        }
    }

    /// Meter every complete event in the buffer; return the bytes to forward.
    fn drain_events(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(r) = self.splitter.next_range() {
            let ev = &self.splitter.bytes()[r];
            if self.meter.observe(ev) == Verdict::Forward {
                out.extend_from_slice(ev);
            }
            if !self.within_budget() {
                let remaining = self.charge.as_ref().map(|c| c.inner.budget.status());
                out.extend_from_slice(&cut_event(
                    self.meter_api(),
                    &format!("budget exhausted mid-stream, response cut ({remaining:?})"),
                ));
                self.ended = true;
                self.bytes_down += out.len() as u64;
                self.finish("cut_budget");
                return out;
            }
        }
        if self.splitter.overflowing() {
            self.meter.malformed = true;
            out.extend_from_slice(&self.splitter.take_rest());
        }
        self.bytes_down += out.len() as u64;
        out
    }

    fn meter_api(&self) -> Api {
        self.charge.as_ref().map_or(Api::OpenAiChat, |c| c.api)
    }

    /// Grow the reservation to the running cost; false when it cannot.
    fn within_budget(&mut self) -> bool {
        let Some(c) = self.charge.as_mut() else {
            return true;
        };
        let Some(p) = c.price else { return true };
        let (u, _) = self.meter.usage_so_far();
        match c.reservation.as_mut() {
            Some(r) => r.try_grow(p.cost(&u)),
            None => true,
        }
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    this.splitter.push(&data);
                    let out = this.drain_events();
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    this.finish("upstream_cut");
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    if let Some(l) = this.lease.take() {
                        l.release();
                    }
                    let rest = this.splitter.take_rest();
                    if !rest.is_empty() {
                        // An unterminated last event: forward it as it came.
                        this.meter.observe(&rest);
                        this.bytes_down += rest.len() as u64;
                    }
                    this.finish("ok");
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                }
            }
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // Still unsettled: the client went away before the stream ended.
        self.finish("client_hangup");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_with_and_without_v1() {
        assert_eq!(route("/v1/chat/completions"), Some(Api::OpenAiChat));
        assert_eq!(route("/chat/completions"), Some(Api::OpenAiChat));
        assert_eq!(route("/v1/messages"), Some(Api::AnthropicMessages));
        assert_eq!(route("/v1/responses"), Some(Api::OpenAiResponses));
        assert_eq!(route("/v1/models"), None);
        assert_eq!(route("/v1/messages/../x"), None);
    }

    #[test]
    fn credentials_are_never_forwardable() {
        for h in [
            "authorization",
            "x-api-key",
            "api-key",
            "proxy-authorization",
            "cookie",
            "x-goog-api-key",
            "host",
        ] {
            assert!(!forwardable(h), "{h}");
        }
        assert!(forwardable("anthropic-version"));
        assert!(forwardable("x-stainless-lang"));
    }

    #[test]
    fn loop_fingerprint_blurs_numbers_and_whitespace() {
        let fp = |v: Value| {
            let raw = RawValue::from_string(v.to_string()).unwrap();
            loop_fingerprint("m", Some(&raw))
        };
        let a = fp(
            json!([{"role": "user", "content": "x"}, {"role": "user", "content": "run tests at 12:01\n  failed 3"}]),
        );
        let b = fp(json!([{"role": "user", "content": "run tests at 12:07 failed 4"}]));
        let c = fp(json!([{"role": "user", "content": "something else"}]));
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(fp(json!("plain input 1")), fp(json!("plain input 2")));
    }

    #[test]
    fn bodies_decode_the_same_whether_or_not_all_utf8() {
        let usage = |b: &[u8]| {
            json_of::<meter::UsageOnly>(b)
                .ok()
                .and_then(|v| meter::usage_of_body(Api::OpenAiChat, &v))
        };
        let clean = br#"{"x":"ok","usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        let skipped_bad =
            b"{\"x\":\"\xff\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}";
        assert_eq!(usage(clean), usage(skipped_bad));
        assert_eq!(usage(clean).unwrap().output, 2);
        // A string the decoder reads must still be UTF-8.
        assert!(json_of::<RequestHead>(b"{\"model\":\"\xff\"}").is_err());
        assert!(json_of::<RequestHead>(br#"{"model":"m"}"#).is_ok());
    }

    #[test]
    fn include_usage_is_appended_without_touching_other_bytes() {
        let b = with_include_usage(br#"{"model":"m","stream":true,"messages":[]}  "#).unwrap();
        assert_eq!(
            &b[..],
            br#"{"model":"m","stream":true,"messages":[],"stream_options":{"include_usage":true}}"#
        );
        let b = with_include_usage(br#"{"model":"m","stream_options":{"include_usage":false}}"#)
            .unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        let b = with_include_usage(br#"{"model":"m","stream_options":null}"#).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert!(with_include_usage(b"[1]").is_none());
    }

    #[test]
    fn upstream_urls_are_checked_and_keys_redacted() {
        let u = Upstream {
            base_url: "ftp://x".into(),
            api_key: "sk-secret".into(),
        };
        let c = connector(&[]).unwrap();
        assert!(target(&u, false, &c).is_err());
        assert!(!format!("{u:?}").contains("sk-secret"));
        let t = target(
            &Upstream {
                base_url: "https://api.openai.com/v1/".into(),
                api_key: "k".into(),
            },
            false,
            &c,
        )
        .unwrap();
        assert_eq!(t.base, "https://api.openai.com");
        assert_eq!(t.key.to_str().unwrap(), "Bearer k");
        assert_eq!(t.host, "api.openai.com");
        assert_eq!(t.chat, "/v1/chat/completions");
        // A base URL with a path keeps it before the endpoint's; a port
        // that is not the scheme's default is part of Host.
        let t = target(
            &Upstream {
                base_url: "http://127.0.0.1:8080/proxy/v1".into(),
                api_key: "k".into(),
            },
            true,
            &c,
        )
        .unwrap();
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.messages, "/proxy/v1/messages");
        assert_eq!(t.responses, "/proxy/v1/responses");
        assert_eq!(t.key.to_str().unwrap(), "k");
        let t = target(
            &Upstream {
                base_url: "https://api.anthropic.com:443".into(),
                api_key: "k".into(),
            },
            true,
            &c,
        )
        .unwrap();
        assert_eq!(t.host, "api.anthropic.com");
    }
}
