//! Network for `verify`, `eval`, `task validate`, `serve` and `worker`: a
//! task's `repo_url` is
//! cloned, and its `setup` runs, in a sandbox whose only way out is
//! runproof's egress proxy with the allowlist from `--allow` (and the
//! private addresses named with `--allow-address`). The host never fetches
//! a task's URL itself; test commands never get network.

use crate::cmd_run::{NetSetup, attach_network};
use runproof_net::policy::Target;
use runproof_net::{Decision, EgressPolicy};
use runproof_sandbox::RunSpec;
use runproof_sandbox::policy::NetworkMode;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The network that `--allow` and `--allow-address` ask for: `None`
/// without `--allow` (grading gets no network).
pub fn network(
    net: &runproof_task::cli::NetArgs,
) -> Result<Option<Arc<dyn runproof_task::NetworkAccess>>, String> {
    if net.allow.is_empty() {
        if !net.allow_address.is_empty() {
            return Err(
                "--allow-address needs --allow HOST (the hosts the proxy may reach)".into(),
            );
        }
        return Ok(None);
    }
    let p = ProxyAccess::new(&net.allow, &net.allow_address)?;
    Ok(Some(Arc::new(p)))
}

/// The egress proxy as the verifier's [`runproof_task::NetworkAccess`].
#[derive(Debug)]
pub struct ProxyAccess {
    allow: Vec<String>,
    deny: Vec<String>,
    allow_address: Vec<IpAddr>,
    policy: EgressPolicy,
}

impl ProxyAccess {
    /// From `--allow` rules (`!` prefix denies) and `--allow-address` IPs.
    pub fn new(rules: &[String], allow_address: &[IpAddr]) -> Result<ProxyAccess, String> {
        let policy = EgressPolicy::from_rules(rules)
            .map_err(|e| format!("--allow: {e}"))?
            .allow_private_addresses_for_tests(allow_address);
        let (deny, allow): (Vec<String>, Vec<String>) =
            rules.iter().cloned().partition(|r| r.starts_with('!'));
        Ok(ProxyAccess {
            allow,
            deny: deny
                .into_iter()
                .map(|d| d.trim_start_matches('!').to_string())
                .collect(),
            allow_address: allow_address.to_vec(),
            policy,
        })
    }
}

/// Stops the proxy when the run it served is over.
struct GateGuard(Arc<Mutex<Option<runproof_net::Gate>>>);

impl Drop for GateGuard {
    fn drop(&mut self) {
        if let Some(g) = self.0.lock().ok().and_then(|mut g| g.take()) {
            g.shutdown();
        }
    }
}

impl runproof_task::NetworkAccess for ProxyAccess {
    fn check_url(&self, url: &str) -> Result<(), String> {
        let (host, port) = runproof_task::model::parse_repo_url(url)
            .map_err(|why| format!("repo_url `{url}` {why}"))?;
        let target = Target::parse(&host)
            .ok_or_else(|| format!("repo_url `{url}`: `{host}` is not a host name or address"))?;
        if let Decision::Denied(why) = self.policy.decide(&target, port) {
            return Err(format!(
                "the network policy refuses {host}:{port} ({why}); allow it with `--allow {host}` (or `--allow {host}:{port}`)"
            ));
        }
        if let Target::Ip(ip) = target {
            self.policy.address_allowed(ip).map_err(|why| {
                format!("the egress proxy never connects to {ip} ({why}); name it with `--allow-address {ip}` if it is a server of yours")
            })?;
        }
        Ok(())
    }

    fn attach(&self, spec: &mut RunSpec) -> Result<Box<dyn std::any::Any + Send>, String> {
        spec.policy.network.mode = NetworkMode::Proxy;
        spec.policy.network.allow = self.allow.clone();
        spec.policy.network.deny = self.deny.clone();
        let gate: Arc<Mutex<Option<runproof_net::Gate>>> = Arc::default();
        let setup = NetSetup {
            audit: None,
            allow_address: &self.allow_address,
            gateway: None,
        };
        attach_network(spec, &setup, gate.clone())?;
        Ok(Box::new(GateGuard(gate)))
    }
}
