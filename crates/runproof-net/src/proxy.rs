//! The egress proxy: HTTP CONNECT, plain HTTP forwarding (absolute-URI
//! requests) and SOCKS5 CONNECT on one listening socket, told apart by the
//! first byte a client sends.
//!
//! Order of checks for every request: parse the target, decide on the policy
//! *before* any resolution (a denied name is never looked up), resolve on the
//! host, drop every resolved address the guard forbids (loopback, private,
//! link-local, CGNAT, unique-local, metadata...), connect to the first that
//! remains. Each request ends in exactly one audit event.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::audit::{AuditEvent, AuditSink, bounded};
use crate::counting::{Counters, Counting};
use crate::policy::{Decision, EgressPolicy, Target};
use crate::socks::{self, SocksHost};

/// How long a client may take to send its first request or SOCKS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most client connections the gateway serves at once (the proxy's limit is
/// [`EgressPolicy::max_connections`]).
pub const MAX_CONNECTIONS: usize = 1024;
/// How long name resolution may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

struct Ctx {
    policy: Arc<EgressPolicy>,
    audit: Arc<dyn AuditSink>,
}

/// Serve the proxy on an already-bound listener until the returned future is
/// dropped (dropping it also ends every open connection).
///
/// The listener may come from anywhere, e.g. a socket bound inside a
/// sandbox's network namespace and handed to the host. Must be polled on a
/// tokio runtime with I/O and time enabled.
pub async fn serve(
    listener: std::net::TcpListener,
    policy: Arc<EgressPolicy>,
    audit: Arc<dyn AuditSink>,
) -> std::io::Result<()> {
    let ctx = Arc::new(Ctx { policy, audit });
    let max = ctx.policy.max_connections;
    serve_connections(listener, max, "proxy", move |stream, peer, permit| {
        let ctx = ctx.clone();
        async move { handle_conn(ctx, stream, peer, Arc::new(permit)).await }
    })
    .await
}

/// Accept connections on `listener` and run `handle` for each on its own
/// task, at most `max` at once: at the limit, further clients wait in the
/// backlog instead of exhausting the host's file descriptors. Shared by the
/// proxy and the gateway. Returns when the future is dropped (which ends
/// every open connection) or the listener cannot be used.
pub(crate) async fn serve_connections<F, Fut>(
    listener: std::net::TcpListener,
    max: usize,
    who: &'static str,
    mut handle: F,
) -> std::io::Result<()>
where
    F: FnMut(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut conns = JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("runproof {who}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        conns.spawn(handle(stream, peer, permit));
    }
}

/// Held for as long as anything serves a client connection (including a
/// CONNECT tunnel, which outlives the HTTP connection task).
type ConnPermit = Arc<tokio::sync::OwnedSemaphorePermit>;

async fn handle_conn(ctx: Arc<Ctx>, stream: TcpStream, peer: SocketAddr, permit: ConnPermit) {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    if first[0] == socks::VERSION {
        handle_socks(ctx, stream, peer).await;
    } else {
        let svc = hyper::service::service_fn(move |req| {
            let ctx = ctx.clone();
            let permit = permit.clone();
            // Run each request as its own task so that a client hanging up
            // mid-request cannot cancel it before its audit event is written.
            async move {
                let resp = tokio::spawn(handle_http(ctx, req, peer, permit))
                    .await
                    .unwrap_or_else(|_| {
                        text_response(StatusCode::INTERNAL_SERVER_ERROR, "request handler failed")
                    });
                Ok::<_, Infallible>(resp)
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HANDSHAKE_TIMEOUT)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades()
            .await;
    }
}

/// Resolve (only after the policy allowed the name) and connect, refusing
/// every address the guard forbids.
async fn connect_checked(
    policy: &EgressPolicy,
    target: &Target,
    port: u16,
) -> Result<(TcpStream, SocketAddr), String> {
    let addrs: Vec<SocketAddr> = match target {
        Target::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Target::Name(name) => {
            match tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((name.as_str(), port)),
            )
            .await
            {
                Ok(Ok(it)) => it.collect(),
                Ok(Err(e)) => return Err(format!("cannot resolve {name}: {e}")),
                Err(_) => return Err(format!("resolving {name} timed out")),
            }
        }
    };
    let mut refusals = Vec::new();
    let mut last_err = None;
    for addr in addrs {
        if let Err(why) = policy.address_allowed(addr.ip()) {
            refusals.push(why);
            continue;
        }
        match tokio::time::timeout(policy.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, addr));
            }
            Ok(Err(e)) => last_err = Some(format!("connect to {addr} failed: {e}")),
            Err(_) => last_err = Some(format!("connect to {addr} timed out")),
        }
    }
    if let Some(e) = last_err {
        return Err(e);
    }
    if !refusals.is_empty() {
        return Err(format!("{target} refused: {}", refusals.join("; ")));
    }
    Err(format!("{target} has no address"))
}

fn text_response(status: StatusCode, msg: &str) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("runproof proxy: {msg}\n")))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn denied(
    ctx: &Ctx,
    mut ev: AuditEvent,
    start: Instant,
    status: StatusCode,
    why: String,
) -> Response<ProxyBody> {
    let resp = text_response(status, &why);
    ev.decision = "denied";
    ev.reason = Some(bounded(&why));
    ev.duration_ms = start.elapsed().as_millis() as u64;
    ctx.audit.record(&ev);
    resp
}

/// Split `host:port` (IPv6 in brackets) from a CONNECT authority.
fn split_authority(auth: &str) -> Option<(&str, u16)> {
    let (h, p) = auth.rsplit_once(':')?;
    let p: u16 = p.parse().ok()?;
    Some((h, p))
}

async fn handle_http(
    ctx: Arc<Ctx>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    permit: ConnPermit,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let is_connect = req.method() == Method::CONNECT;
    let mut ev = AuditEvent::new("proxy", if is_connect { "connect" } else { "http" });
    ev.client = Some(peer.to_string());
    ev.method = Some(bounded(req.method().as_str()));
    ev.url = Some(bounded(&req.uri().to_string()));

    // Work out the target.
    let (host, port) = if is_connect {
        let auth = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        match split_authority(&auth) {
            Some((h, p)) => (h.to_string(), p),
            None => {
                return denied(
                    &ctx,
                    ev,
                    start,
                    StatusCode::BAD_REQUEST,
                    format!("CONNECT target {:?} is not host:port", bounded(&auth)),
                );
            }
        }
    } else {
        match (req.uri().scheme_str(), req.uri().host()) {
            (Some("http"), Some(h)) => (h.to_string(), req.uri().port_u16().unwrap_or(80)),
            (Some(s), Some(_)) => {
                return denied(
                    &ctx,
                    ev,
                    start,
                    StatusCode::BAD_REQUEST,
                    format!(
                        "scheme {:?} is not proxied as plain HTTP; use CONNECT for https",
                        bounded(s)
                    ),
                );
            }
            _ => {
                return denied(
                    &ctx,
                    ev,
                    start,
                    StatusCode::BAD_REQUEST,
                    "this is a proxy: send an absolute URI (http://host/path) or CONNECT host:port"
                        .into(),
                );
            }
        }
    };
    ev.host = Some(bounded(&host));
    ev.port = Some(port);
    let Some(target) = Target::parse(&host) else {
        return denied(
            &ctx,
            ev,
            start,
            StatusCode::BAD_REQUEST,
            format!("{:?} is not a valid host name", bounded(&host)),
        );
    };
    if let Decision::Denied(why) = ctx.policy.decide(&target, port) {
        return denied(&ctx, ev, start, StatusCode::FORBIDDEN, why);
    }
    let (upstream, addr) = match connect_checked(&ctx.policy, &target, port).await {
        Ok(x) => x,
        Err(why) => {
            let status = if why.contains("refused:") {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_GATEWAY
            };
            return denied(&ctx, ev, start, status, why);
        }
    };
    ev.resolved = Some(addr.to_string());
    ev.decision = "allowed";
    let (upstream, counters) = Counting::new(upstream);

    if is_connect {
        let on_upgrade = hyper::upgrade::on(&mut req);
        let ctx2 = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut upstream = upstream;
            match on_upgrade.await {
                Ok(upgraded) => {
                    let mut client = TokioIo::new(upgraded);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                    {
                        ev.reason = Some(bounded(&format!("tunnel ended with error: {e}")));
                    }
                }
                Err(e) => ev.reason = Some(bounded(&format!("upgrade failed: {e}"))),
            }
            ev.bytes_up = counters.written();
            ev.bytes_down = counters.read();
            ev.duration_ms = start.elapsed().as_millis() as u64;
            ctx2.audit.record(&ev);
        });
        return Response::new(
            Full::new(Bytes::new())
                .map_err(|n: Infallible| match n {})
                .boxed_unsync(),
        );
    }

    // Plain HTTP: forward this one request on a fresh upstream connection.
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
            Ok(x) => x,
            Err(e) => {
                return denied(
                    &ctx,
                    ev,
                    start,
                    StatusCode::BAD_GATEWAY,
                    format!("upstream handshake failed: {e}"),
                );
            }
        };
    tokio::spawn(conn);
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *req.uri_mut() = match pq.parse() {
        Ok(u) => u,
        Err(_) => {
            return denied(
                &ctx,
                ev,
                start,
                StatusCode::BAD_REQUEST,
                "bad request target".into(),
            );
        }
    };
    strip_hop_by_hop(req.headers_mut());
    if let Ok(v) = HeaderValue::from_str(&authority) {
        req.headers_mut().insert(header::HOST, v);
    }
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            ev.bytes_up = counters.written();
            ev.bytes_down = counters.read();
            ev.decision = "allowed";
            ev.reason = Some(bounded(&format!("upstream request failed: {e}")));
            ev.duration_ms = start.elapsed().as_millis() as u64;
            ctx.audit.record(&ev);
            return text_response(
                StatusCode::BAD_GATEWAY,
                &format!("upstream request failed: {e}"),
            );
        }
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = AuditedBody {
        inner: body,
        done: Some(AuditOnDrop {
            ctx,
            ev,
            counters,
            start,
        }),
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// Remove hop-by-hop headers (RFC 9110 section 7.6.1), including every header
/// the `Connection` header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
    ] {
        h.remove(n);
    }
}

struct AuditOnDrop {
    ctx: Arc<Ctx>,
    ev: AuditEvent,
    counters: Arc<Counters>,
    start: Instant,
}

impl Drop for AuditOnDrop {
    fn drop(&mut self) {
        self.ev.bytes_up = self.counters.written();
        self.ev.bytes_down = self.counters.read();
        self.ev.duration_ms = self.start.elapsed().as_millis() as u64;
        self.ctx.audit.record(&self.ev);
    }
}

/// Response body that records the audit event when it ends or is dropped.
struct AuditedBody {
    inner: Incoming,
    done: Option<AuditOnDrop>,
}

impl Body for AuditedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = r {
            self.done.take();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

async fn handle_socks(ctx: Arc<Ctx>, mut client: TcpStream, peer: SocketAddr) {
    let start = Instant::now();
    let mut ev = AuditEvent::new("proxy", "socks5");
    ev.client = Some(peer.to_string());
    let mut buf = Vec::with_capacity(512);
    // Greeting.
    let methods = loop {
        match socks::parse_greeting(&buf) {
            Ok(Some((m, used))) => {
                buf.drain(..used);
                break m;
            }
            Ok(None) => {}
            Err(e) => {
                ev.reason = Some(e.to_string());
                ctx.audit.record(&ev);
                return;
            }
        }
        if !read_more(&mut client, &mut buf).await {
            return;
        }
    };
    if !methods.contains(&socks::METHOD_NO_AUTH) {
        let _ = client
            .write_all(&[socks::VERSION, socks::METHOD_NONE_ACCEPTABLE])
            .await;
        ev.reason = Some(
            "client offered no acceptable authentication method (only no-auth is served)".into(),
        );
        ctx.audit.record(&ev);
        return;
    }
    if client
        .write_all(&[socks::VERSION, socks::METHOD_NO_AUTH])
        .await
        .is_err()
    {
        return;
    }
    // Request.
    let request = loop {
        match socks::parse_request(&buf) {
            Ok(Some((r, used))) => {
                buf.drain(..used);
                break r;
            }
            Ok(None) => {}
            Err(e) => {
                let code = match e {
                    socks::SocksError::BadAddressType(_) => {
                        socks::reply::ADDRESS_TYPE_NOT_SUPPORTED
                    }
                    _ => socks::reply::GENERAL_FAILURE,
                };
                let _ = client.write_all(&socks::reply_bytes(code)).await;
                ev.reason = Some(e.to_string());
                ctx.audit.record(&ev);
                return;
            }
        }
        if !read_more(&mut client, &mut buf).await {
            return;
        }
    };
    let host = match &request.host {
        SocksHost::Ip(ip) => ip.to_string(),
        SocksHost::Name(n) => n.clone(),
    };
    ev.host = Some(bounded(&host));
    ev.port = Some(request.port);
    let refuse = |mut ev: AuditEvent, code: u8, why: String| {
        let ctx = ctx.clone();
        async move {
            ev.reason = Some(bounded(&why));
            ev.duration_ms = start.elapsed().as_millis() as u64;
            ctx.audit.record(&ev);
            code
        }
    };
    if request.command != socks::CMD_CONNECT {
        let code = refuse(
            ev,
            socks::reply::COMMAND_NOT_SUPPORTED,
            format!(
                "SOCKS5 command {:#04x} is not supported (only CONNECT)",
                request.command
            ),
        )
        .await;
        let _ = client.write_all(&socks::reply_bytes(code)).await;
        return;
    }
    let target = match &request.host {
        SocksHost::Ip(ip) => Some(Target::Ip(*ip)),
        SocksHost::Name(n) => Target::parse(n),
    };
    let Some(target) = target else {
        let code = refuse(
            ev,
            socks::reply::NOT_ALLOWED,
            format!("{:?} is not a valid host name", bounded(&host)),
        )
        .await;
        let _ = client.write_all(&socks::reply_bytes(code)).await;
        return;
    };
    if let Decision::Denied(why) = ctx.policy.decide(&target, request.port) {
        let code = refuse(ev, socks::reply::NOT_ALLOWED, why).await;
        let _ = client.write_all(&socks::reply_bytes(code)).await;
        return;
    }
    let (upstream, addr) = match connect_checked(&ctx.policy, &target, request.port).await {
        Ok(x) => x,
        Err(why) => {
            let code = if why.contains("refused:") {
                socks::reply::NOT_ALLOWED
            } else if why.contains("cannot resolve") || why.contains("no address") {
                socks::reply::HOST_UNREACHABLE
            } else {
                socks::reply::CONNECTION_REFUSED
            };
            let code = refuse(ev, code, why).await;
            let _ = client.write_all(&socks::reply_bytes(code)).await;
            return;
        }
    };
    ev.resolved = Some(addr.to_string());
    ev.decision = "allowed";
    let (mut upstream, counters) = Counting::new(upstream);
    let mut result = client
        .write_all(&socks::reply_bytes(socks::reply::SUCCEEDED))
        .await;
    if result.is_ok() && !buf.is_empty() {
        result = upstream.write_all(&buf).await;
    }
    if result.is_ok()
        && let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
    {
        ev.reason = Some(bounded(&format!("tunnel ended with error: {e}")));
    }
    ev.bytes_up = counters.written();
    ev.bytes_down = counters.read();
    ev.duration_ms = start.elapsed().as_millis() as u64;
    ctx.audit.record(&ev);
}

/// Read more handshake bytes with a timeout and a size cap. False on EOF,
/// error, timeout or an oversized handshake.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    if buf.len() > 1024 {
        return false;
    }
    let mut tmp = [0u8; 512];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, s.read(&mut tmp)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn authority_split() {
        assert_eq!(split_authority("a.com:443"), Some(("a.com", 443)));
        assert_eq!(split_authority("[::1]:443"), Some(("[::1]", 443)));
        assert_eq!(split_authority("a.com"), None);
        assert_eq!(split_authority("a.com:x"), None);
    }
}
