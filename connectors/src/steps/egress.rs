//! The egress guard of outbound HTTP: `api_call` requests reach a loopback, private,
//! link-local (cloud metadata), unspecified, multicast… address only where an allowlist entry
//! opens it (the service's `[egress] allow` plus the workflow's `egress.allow`; see
//! [`tollgate_engine::egress`]).
//!
//! Checked where a connection is actually made, so DNS rebinding cannot slip between a check
//! and the connect: names are resolved by [`GuardedResolver`], which hands the HTTP client only
//! the addresses the policy admits; a literal IP in a URL never reaches a resolver, so
//! [`EgressGuard::client_for`] checks it before each request. Redirects are followed by the
//! caller, one hop at a time through `client_for` (each hop's scheme, host, port and addresses
//! are checked like the first request). Entries may name a port, and a resolver sees only
//! names: so each client serves one view of the allowlist for one port ([`PortAllow`]), and
//! clients are cached per view. Proxies from the environment are not used: a proxy would
//! resolve and connect on our behalf, past the check.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Url, redirect};
use tollgate_engine::egress::{EgressAllow, EgressDenied, PortAllow};

/// Distinct allowlist views kept with their own client before the cache starts over.
const MAX_CLIENTS: usize = 64;

/// Why a request may not be sent.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Denied(#[from] EgressDenied),
    #[error("only http and https URLs are allowed, not {0:?}")]
    Scheme(String),
    #[error("URL has no host: {0}")]
    NoHost(String),
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Hands out HTTP clients that can only connect where the egress policy allows.
#[derive(Debug)]
pub struct EgressGuard {
    /// The service's allowlist (config `[egress] allow`).
    service: EgressAllow,
    user_agent: String,
    connect_timeout: Duration,
    clients: Mutex<HashMap<PortAllow, reqwest::Client>>,
}

impl EgressGuard {
    pub fn new(service: EgressAllow, user_agent: impl Into<String>, connect_timeout: Duration) -> Self {
        Self { service, user_agent: user_agent.into(), connect_timeout, clients: Mutex::new(HashMap::new()) }
    }

    /// The client for a request to `url` from a workflow that opens `workflow`: checks the
    /// scheme and a literal IP host here; names are checked by the client's resolver.
    pub fn client_for(&self, url: &Url, workflow: &EgressAllow) -> Result<reqwest::Client, Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme(url.scheme().to_owned()));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let allow =
            if workflow.is_empty() { self.service.for_port(port) } else { self.service.union(workflow).for_port(port) };
        let host = url.host_str().ok_or_else(|| Refusal::NoHost(url.to_string()))?;
        // The URL parser writes IPv4 literals in dotted form (`0x7f.1` → `127.0.0.1`) and IPv6
        // ones in brackets; a name never parses as an address.
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            allow.check(None, ip)?;
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&allow) {
            return Ok(client.clone());
        }
        let client = reqwest::Client::builder()
            .user_agent(&self.user_agent)
            .connect_timeout(self.connect_timeout)
            .redirect(redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { allow: Arc::new(allow.clone()) }))
            .build()?;
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(allow, client.clone());
        Ok(client)
    }
}

/// Resolves names with the system resolver and keeps only the addresses the policy admits;
/// with none left, fails with the first refusal (which the handler reports as `egress_denied`).
struct GuardedResolver {
    allow: Arc<PortAllow>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let admitted: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| match allow.check(Some(&host), a.ip()) {
                    Ok(()) => true,
                    Err(denied) => {
                        refused.get_or_insert(denied);
                        false
                    }
                })
                .collect();
            match (admitted.is_empty(), refused) {
                (true, Some(denied)) => Err(Box::new(denied) as _),
                _ => Ok(Box::new(admitted.into_iter()) as Addrs),
            }
        })
    }
}

/// The egress refusal somewhere in an error's chain of causes, if that is why it failed.
pub fn denial_in<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e EgressDenied> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(denied) = c.downcast_ref::<EgressDenied>() {
            return Some(denied);
        }
        cause = c.source();
    }
    None
}
