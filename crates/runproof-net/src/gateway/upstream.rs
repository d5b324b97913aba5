//! The gateway's connections to one upstream: HTTP/1.1 keep-alive
//! connections (plain or TLS, through the same verifying connector), reused
//! most recently used first.
//!
//! A connection goes back to the pool only once its response has been read
//! to the end ([`Lease::release`]), so a request never queues behind another
//! on a busy connection. A connection the upstream closed meanwhile is
//! dropped at checkout, and a request that could not be written on a reused
//! connection (it never reached the upstream) is sent on another one.
//! Nothing here is shared between requests but the idle list, behind one
//! short lock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;

pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type Sender = SendRequest<Full<Bytes>>;

/// Idle connections kept per upstream; more are closed when they finish.
/// As many as the gateway serves client connections, each of which has at
/// most one request in flight, so a steady load never reconnects.
const MAX_IDLE: usize = crate::proxy::MAX_CONNECTIONS;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request did not get a response. Display and source are the
/// underlying error's, so the gateway can name every layer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error(transparent)]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

pub(crate) struct Pool {
    connector: Connector,
    /// `scheme://authority` of the upstream: what the connector dials.
    dial: Uri,
    idle: Mutex<Vec<(Sender, Instant)>>,
}

/// A connection carrying one request. [`Lease::release`] returns it to the
/// pool; dropping it instead closes it once the connection notices.
pub(crate) struct Lease {
    sender: Sender,
    pool: Arc<Pool>,
}

impl Lease {
    /// The response was read to the end: the connection may carry another.
    pub(crate) fn release(self) {
        let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Reuse is last in, first out, so the oldest idle connection is
        // first: close it here once it has idled too long.
        if idle
            .first()
            .is_some_and(|(_, since)| since.elapsed() >= IDLE_TIMEOUT)
        {
            idle.remove(0);
        }
        if idle.len() < MAX_IDLE && !self.sender.is_closed() {
            idle.push((self.sender, Instant::now()));
        }
    }
}

impl Pool {
    pub(crate) fn new(connector: Connector, dial: Uri) -> Arc<Pool> {
        Arc::new(Pool {
            connector,
            dial,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((s, since)) = idle.pop() {
            if since.elapsed() < IDLE_TIMEOUT && !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    /// Send `req` (origin-form URI, `Host` set) on an idle connection, or on
    /// a new one when none is left.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        while let Some(mut sender) = self.checkout() {
            // Released connections are idle; this fails only if it closed.
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let pool = self.clone();
                    return Ok((resp, Lease { sender, pool }));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: the upstream never saw it.
                    Some(r) => req = r,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut sender = self.connect().await?;
        let resp = sender.send_request(req).await?;
        let pool = self.clone();
        Ok((resp, Lease { sender, pool }))
    }

    async fn connect(&self) -> Result<Sender, SendError> {
        use tower_service::Service;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(self.dial.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}
