//! runproof-net owns the only way out of a sandbox: the egress proxy (HTTP
//! CONNECT, plain HTTP, SOCKS5) with its domain allowlist, and the metered LLM
//! gateway that injects credentials on the host side.
//!
//! It must never connect to a loopback, private, link-local or metadata address
//! on behalf of a sandbox, never resolve a name that the policy does not allow,
//! and never let a credential travel into the sandbox.
//!
//! Both servers run on listeners handed to them (`std::net::TcpListener`), so a
//! caller can bind the socket wherever it needs (inside a sandbox's network
//! namespace) and serve it from the host: see [`proxy::serve`] and
//! [`gateway::Gateway::serve`]. [`sandbox_env`] gives the environment variables
//! that point a sandboxed program at them.

pub mod audit;
pub mod cli;
mod counting;
pub mod gateway;
pub mod policy;
pub mod proxy;
pub mod socks;

pub use audit::{AuditEvent, AuditSink, JsonlAudit, MemoryAudit, NoAudit};
pub use gateway::{
    Gateway, GatewayConfig, GatewayError, LoopPolicy, StopReason, Upstream, read_key_file,
};
pub use policy::{Decision, EgressPolicy, RuleError};

/// Environment variables that point a sandboxed program at the proxy and the
/// gateway listening on 127.0.0.1 inside the sandbox.
///
/// Proxy variables are set in both cases (curl reads lower case, most others
/// upper case); `ALL_PROXY` uses `socks5h://` so names are resolved by the
/// proxy, never inside the sandbox. `NO_PROXY` keeps loopback (the gateway)
/// direct. The API-key variables hold a placeholder, not a secret: SDKs refuse
/// to start without one, and the gateway replaces whatever arrives.
pub fn sandbox_env(proxy_port: Option<u16>, gateway_port: Option<u16>) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut set = |k: &str, v: String| env.push((k.to_string(), v));
    if let Some(p) = proxy_port {
        let http = format!("http://127.0.0.1:{p}");
        let socks = format!("socks5h://127.0.0.1:{p}");
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            set(k, http.clone());
        }
        set("ALL_PROXY", socks.clone());
        set("all_proxy", socks);
        set("NO_PROXY", "localhost,127.0.0.1,::1".into());
        set("no_proxy", "localhost,127.0.0.1,::1".into());
    }
    if let Some(g) = gateway_port {
        set("OPENAI_BASE_URL", format!("http://127.0.0.1:{g}/v1"));
        set("ANTHROPIC_BASE_URL", format!("http://127.0.0.1:{g}"));
        set("OPENAI_API_KEY", "runproof-gateway-holds-the-key".into());
        set("ANTHROPIC_API_KEY", "runproof-gateway-holds-the-key".into());
    }
    env
}

/// The proxy and the gateway of one sandbox run, served on their own tokio
/// runtime (two worker threads) so a caller built on plain threads can start
/// and stop them with two calls.
///
/// Dropping the `Gate` stops both servers and closes their listeners.
pub struct Gate {
    rt: Option<tokio::runtime::Runtime>,
}

impl Gate {
    /// Serve the proxy and/or the gateway on listeners the caller bound (for
    /// a sandbox: sockets bound inside its network namespace).
    pub fn start(
        proxy: Option<(
            std::net::TcpListener,
            std::sync::Arc<EgressPolicy>,
            std::sync::Arc<dyn AuditSink>,
        )>,
        gateway: Option<(std::net::TcpListener, Gateway)>,
    ) -> std::io::Result<Gate> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("runproof-gate")
            .enable_all()
            .build()?;
        if let Some((l, policy, audit)) = proxy {
            // Convert here so a bad listener is reported to the caller.
            l.set_nonblocking(true)?;
            rt.spawn(async move {
                if let Err(e) = proxy::serve(l, policy, audit).await {
                    eprintln!("runproof proxy stopped: {e}");
                }
            });
        }
        if let Some((l, g)) = gateway {
            l.set_nonblocking(true)?;
            rt.spawn(async move {
                if let Err(e) = g.serve(l).await {
                    eprintln!("runproof gateway stopped: {e}");
                }
            });
        }
        Ok(Gate { rt: Some(rt) })
    }

    /// Stop both servers, waiting up to a second for tasks to end.
    pub fn shutdown(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_points_at_loopback_ports() {
        let env: std::collections::HashMap<_, _> =
            sandbox_env(Some(3128), Some(4000)).into_iter().collect();
        assert_eq!(env["HTTPS_PROXY"], "http://127.0.0.1:3128");
        assert_eq!(env["ALL_PROXY"], "socks5h://127.0.0.1:3128");
        assert_eq!(env["OPENAI_BASE_URL"], "http://127.0.0.1:4000/v1");
        assert_eq!(env["ANTHROPIC_BASE_URL"], "http://127.0.0.1:4000");
        assert!(env["NO_PROXY"].contains("127.0.0.1"));
        assert!(sandbox_env(None, None).is_empty());
    }
}
