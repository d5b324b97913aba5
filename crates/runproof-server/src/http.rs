//! The HTTP server: routing, authentication, bounded bodies, JSON errors.
//!
//! Without a token the server answers only on a loopback address, and only
//! to requests whose `Host` is a loopback name (a web page cannot rebind a
//! DNS name to 127.0.0.1 and read the API); with a token every request must
//! carry it (`Authorization: Bearer TOKEN`, or HTTP Basic with the token as
//! the password, which browsers prompt for). Writes need `Content-Type:
//! application/json`, which a cross-site form cannot send.

use crate::api::{self, ApiError, Catalog};
use crate::dashboard;
use crate::job::JobState;
use crate::job::{CancelFlag, JobSpec};
use crate::store::{ListFilter, NewJob, Store, StoreError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Default cap on a request body.
pub const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;

/// Where new jobs go and how a cancel reaches a running one.
#[derive(Clone)]
pub enum Dispatch {
    /// The embedded pool: woken on submit; running jobs' cancel flags.
    Local {
        notify: Arc<Notify>,
        running: Arc<Mutex<HashMap<String, CancelFlag>>>,
    },
    /// NATS JetStream: published to the work queue.
    Nats(Box<crate::queue::Publisher>),
}

impl Dispatch {
    async fn submitted(&self, jobs: &[(String, JobSpec)]) -> Result<(), String> {
        match self {
            Dispatch::Local { notify, .. } => {
                for _ in jobs {
                    notify.notify_one();
                }
                Ok(())
            }
            Dispatch::Nats(p) => p.publish(jobs).await,
        }
    }
    async fn cancelled(&self, id: &str) {
        match self {
            Dispatch::Local { running, .. } => {
                if let Some(f) = running.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
                    f.cancel();
                }
            }
            Dispatch::Nats(p) => p.cancel(id).await,
        }
    }
}

/// Who may call the API.
#[derive(Clone, Debug)]
pub struct Auth {
    /// Required on every request when set.
    pub token: Option<String>,
}

/// Everything a request handler needs.
pub struct App {
    pub store: Store,
    pub catalog: Catalog,
    pub dispatch: Dispatch,
    pub auth: Auth,
    /// The ledger whose costs the dashboard shows (read only if it exists).
    pub ledger: Option<PathBuf>,
    pub max_body: usize,
    /// `embedded (N local workers)` or `nats URL`.
    pub mode: String,
}

type Resp = Response<Full<Bytes>>;

fn with_headers(mut r: Resp, ctype: &'static str) -> Resp {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    r
}

fn json_resp(status: u16, v: &Value) -> Resp {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    with_headers(r, "application/json")
}

fn html_resp(status: u16, s: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(s)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    with_headers(r, "text/html; charset=utf-8")
}

fn err_resp(e: &ApiError) -> Resp {
    let mut r = json_resp(e.status, &e.body());
    if e.status == 401 {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"runproof\", charset=\"UTF-8\""),
        );
    }
    r
}

fn store_err(e: StoreError) -> ApiError {
    eprintln!("runproof serve: {e}");
    ApiError::new(
        503,
        "store_unavailable",
        format!("the job store failed: {e}"),
        "retry; if it persists, check the server's database",
    )
}

/// Decodes standard base64 (with or without padding); None on bad input.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Compares without an early exit on the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut d = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        d |= (*x ^ b.get(i).copied().unwrap_or(0)) as usize;
    }
    d == 0
}

/// Whether a `Host` header names this machine's loopback.
fn loopback_host(h: &str) -> bool {
    let host = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        h.rsplit_once(':').map_or(h, |(a, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                a
            } else {
                h
            }
        })
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl App {
    fn check_auth(&self, req: &Request<Incoming>) -> Result<(), ApiError> {
        let Some(token) = &self.auth.token else {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if !loopback_host(host) {
                return Err(ApiError::new(
                    403,
                    "host_not_allowed",
                    format!(
                        "Host `{}` is not a loopback name; this server has no token and answers only to localhost",
                        api::clip(host, 100)
                    ),
                    "connect to 127.0.0.1 or localhost, or start runproof serve with --token-file",
                ));
            }
            return Ok(());
        };
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let ok = if let Some(b) = got.strip_prefix("Bearer ") {
            same(b.trim().as_bytes(), token.as_bytes())
        } else if let Some(b) = got.strip_prefix("Basic ") {
            base64_decode(b.trim())
                .and_then(|d| {
                    let i = d.iter().position(|c| *c == b':')?;
                    Some(same(&d[i + 1..], token.as_bytes()))
                })
                .unwrap_or(false)
        } else {
            false
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::new(
                401,
                "unauthorized",
                if got.is_empty() {
                    "this server requires a token".to_string()
                } else {
                    "the token is wrong".to_string()
                },
                "send `Authorization: Bearer TOKEN` with the token from the server's --token-file",
            ))
        }
    }

    async fn body(&self, req: Request<Incoming>) -> Result<Bytes, ApiError> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                format!(
                    "Content-Type is `{}`, not application/json",
                    api::clip(ct, 100)
                ),
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let too_big = || {
            ApiError::new(
                413,
                "body_too_large",
                format!("request body is over {} bytes", self.max_body),
                "split the batch into several requests, or start the server with a larger --max-body",
            )
        };
        if let Some(n) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|h| h.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok())
            && n > self.max_body as u64
        {
            return Err(too_big());
        }
        match Limited::new(req.into_body(), self.max_body).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_big()),
            Err(e) => Err(ApiError::new(
                400,
                "bad_body",
                format!("cannot read the request body: {e}"),
                "resend the request",
            )),
        }
    }

    /// Answers one request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        match self.route(req).await {
            Ok(r) => r,
            Err(e) => err_resp(&e),
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        self.check_auth(&req)?;
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let m = req.method().clone();
        let not_allowed = |allow: &str| {
            ApiError::new(
                405,
                "method_not_allowed",
                format!("{m} is not allowed on {}", api::clip(&path, 200)),
                format!("use {allow}"),
            )
        };
        match parts.as_slice() {
            [""] => match m {
                Method::GET => self.index().await,
                _ => Err(not_allowed("GET")),
            },
            ["jobs", id] => match m {
                Method::GET => self.job_page(id).await,
                _ => Err(not_allowed("GET")),
            },
            ["api", "health"] => Ok(json_resp(
                200,
                &json!({"ok": true, "mode": self.mode, "db": self.store.name(), "tasks": self.catalog.tasks.len()}),
            )),
            ["api", "tasks"] => match m {
                Method::GET => Ok(json_resp(
                    200,
                    &json!({"tasks": self.catalog.tasks.values().map(|t| json!({
                        "instance_id": t.instance_id,
                        "repo": t.repo,
                        "FAIL_TO_PASS": t.fail_to_pass.len(),
                        "PASS_TO_PASS": t.pass_to_pass.len(),
                    })).collect::<Vec<_>>()}),
                )),
                _ => Err(not_allowed("GET")),
            },
            ["api", "jobs"] => match m {
                Method::GET => self.list(&query).await,
                Method::POST => {
                    let body = self.body(req).await?;
                    let spec = api::verify_request(&body, &self.catalog)?;
                    self.submit(None, vec![spec]).await
                }
                _ => Err(not_allowed("GET or POST")),
            },
            ["api", "jobs", id] => match m {
                Method::GET => self.get(id).await,
                _ => Err(not_allowed("GET")),
            },
            ["api", "jobs", id, "cancel"] => match m {
                Method::POST => self.cancel(id).await,
                _ => Err(not_allowed("POST")),
            },
            ["api", "evals"] => match m {
                Method::POST => {
                    let body = self.body(req).await?;
                    let specs = api::eval_request(&body, &self.catalog)?;
                    let batch = crate::new_id("eval");
                    self.submit(Some(batch), specs).await
                }
                _ => Err(not_allowed("POST")),
            },
            ["api", "evals", id] => match m {
                Method::GET => self.eval(id).await,
                _ => Err(not_allowed("GET")),
            },
            _ => Err(ApiError::new(
                404,
                "not_found",
                format!("no route {}", api::clip(&path, 200)),
                "see docs/API.md: /api/jobs, /api/jobs/ID, /api/jobs/ID/cancel, /api/evals, /api/evals/ID, /api/tasks, /api/health, /",
            )),
        }
    }

    async fn submit(&self, batch: Option<String>, specs: Vec<JobSpec>) -> Result<Resp, ApiError> {
        let jobs: Vec<NewJob> = specs
            .into_iter()
            .map(|spec| NewJob {
                id: crate::new_id("job"),
                batch: batch.clone(),
                spec,
            })
            .collect();
        self.store
            .insert(batch.as_deref(), &jobs)
            .await
            .map_err(store_err)?;
        let sent: Vec<(String, JobSpec)> = jobs.into_iter().map(|j| (j.id, j.spec)).collect();
        if let Err(e) = self.dispatch.submitted(&sent).await {
            // Stored: the publisher retries unpublished jobs.
            eprintln!("runproof serve: {e}");
        }
        let ids: Vec<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
        let (loc, body) = match &batch {
            Some(b) => (format!("/api/evals/{b}"), json!({"batch": b, "jobs": ids})),
            None => {
                let d = self.store.get(ids[0]).await.map_err(store_err)?;
                (format!("/api/jobs/{}", ids[0]), json!(d.map(|d| d.job)))
            }
        };
        let mut r = json_resp(201, &body);
        if let Ok(v) = HeaderValue::from_str(&loc) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Ok(r)
    }

    fn filter(query: &str) -> Result<ListFilter, ApiError> {
        let mut f = ListFilter {
            limit: 100,
            ..ListFilter::default()
        };
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let num = |v: &str| {
                v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    ApiError::bad(
                        k,
                        format!("`{}` is not a count", api::clip(v, 40)),
                        "give a whole number",
                    )
                })
            };
            match k {
                "state" => {
                    f.state = Some(JobState::parse(v).ok_or_else(|| {
                        ApiError::bad(
                            "state",
                            format!("unknown state `{}`", api::clip(v, 40)),
                            "use queued, running, done, failed or cancelled",
                        )
                    })?)
                }
                "batch" => f.batch = Some(v.to_string()),
                "limit" => f.limit = num(v)?.clamp(1, 1000),
                "offset" => f.offset = num(v)?,
                _ => {
                    return Err(ApiError::bad(
                        &api::clip(k, 40),
                        "unknown query parameter",
                        "use state, batch, limit or offset",
                    ));
                }
            }
        }
        Ok(f)
    }

    async fn list(&self, query: &str) -> Result<Resp, ApiError> {
        let f = Self::filter(query)?;
        let (jobs, total) = self.store.list(&f).await.map_err(store_err)?;
        Ok(json_resp(200, &json!({"jobs": jobs, "total": total})))
    }

    fn unknown_job(id: &str) -> ApiError {
        ApiError::new(
            404,
            "unknown_job",
            format!("no job `{}`", api::clip(id, 80)),
            "use a job id from POST /api/jobs or GET /api/jobs",
        )
    }

    async fn get(&self, id: &str) -> Result<Resp, ApiError> {
        match self.store.get(id).await.map_err(store_err)? {
            Some(d) => Ok(json_resp(200, &json!(d))),
            None => Err(Self::unknown_job(id)),
        }
    }

    async fn cancel(&self, id: &str) -> Result<Resp, ApiError> {
        match self.store.cancel(id).await.map_err(store_err)? {
            None => Err(Self::unknown_job(id)),
            Some((_, true)) => {
                self.dispatch.cancelled(id).await;
                self.get(id).await
            }
            Some((st, false)) => Err(ApiError::new(
                409,
                "already_final",
                format!("job {} is already {}", api::clip(id, 80), st.name()),
                "only queued or running jobs can be cancelled",
            )),
        }
    }

    async fn eval(&self, id: &str) -> Result<Resp, ApiError> {
        if !self.store.has_batch(id).await.map_err(store_err)? {
            return Err(ApiError::new(
                404,
                "unknown_batch",
                format!("no eval batch `{}`", api::clip(id, 80)),
                "use the batch id POST /api/evals returned",
            ));
        }
        let counts = self.store.counts(Some(id)).await.map_err(store_err)?;
        let (jobs, _) = self
            .store
            .list(&ListFilter {
                batch: Some(id.to_string()),
                limit: 1000,
                ..ListFilter::default()
            })
            .await
            .map_err(store_err)?;
        let finished = counts
            .by_state
            .iter()
            .filter(|(k, _)| JobState::parse(k).is_some_and(JobState::is_final))
            .map(|(_, n)| n)
            .sum::<i64>();
        Ok(json_resp(
            200,
            &json!({
                "batch": id,
                "complete": finished == counts.total,
                "counts": counts,
                "resolved_ids": jobs.iter().filter(|j| j.resolved == Some(true)).map(|j| &j.instance_id).collect::<Vec<_>>(),
                "jobs": jobs,
            }),
        ))
    }

    async fn costs(&self) -> (Option<runproof_ledger::CostReport>, Option<String>) {
        let Some(path) = self.ledger.clone() else {
            return (None, Some("no ledger configured".into()));
        };
        if !path.exists() {
            return (None, Some(format!("no ledger at {} yet", path.display())));
        }
        let r = tokio::task::spawn_blocking(move || {
            let l = runproof_ledger::Ledger::open(&path)?;
            runproof_ledger::cost_report(
                &l,
                &runproof_ledger::CostOptions {
                    by: runproof_ledger::GroupBy::Agent,
                    ..Default::default()
                },
            )
        })
        .await;
        match r {
            Ok(Ok(c)) => (Some(c), None),
            Ok(Err(e)) => (None, Some(format!("ledger unreadable: {e}"))),
            Err(e) => (None, Some(e.to_string())),
        }
    }

    async fn index(&self) -> Result<Resp, ApiError> {
        let (jobs, total) = self
            .store
            .list(&ListFilter {
                limit: 200,
                ..ListFilter::default()
            })
            .await
            .map_err(store_err)?;
        let counts = self.store.counts(None).await.map_err(store_err)?;
        let (costs, note) = self.costs().await;
        let o = dashboard::Overview {
            mode: &self.mode,
            db: self.store.name(),
            tasks: self.catalog.tasks.len(),
            counts: &counts,
            total,
            costs: costs.as_ref(),
            costs_note: note,
        };
        Ok(html_resp(200, dashboard::index(&o, &jobs)))
    }

    async fn job_page(&self, id: &str) -> Result<Resp, ApiError> {
        match self.store.get(id).await.map_err(store_err)? {
            Some(d) => Ok(html_resp(200, dashboard::job_page(&d))),
            None => Ok(html_resp(
                404,
                format!(
                    "<!DOCTYPE html><title>no such job</title><p>no job {}</p>",
                    dashboard::esc(id, 80)
                ),
            )),
        }
    }
}

/// Serves `app` on `listener` until the process ends.
pub async fn serve(app: Arc<App>, listener: tokio::net::TcpListener) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(256));
    loop {
        let (sock, _peer): (tokio::net::TcpStream, SocketAddr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("runproof serve: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(app.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30))
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(sock), svc)
                .await;
            drop(permit);
        });
    }
}
