//! Outbound HTTP to URLs that policy authors choose — gates and webhooks. A RolloutPolicy
//! resource is written by a tenant, and its URLs are fetched from canaryd's network position,
//! so one [`EgressClient`] (shared by gates and webhooks) makes sure that such a URL cannot
//! read what only canaryd can reach:
//!
//! - **destination ranges** ([`EgressPolicy`]): loopback, link-local (cloud metadata at
//!   169.254.169.254), unspecified and cloud metadata addresses are refused unless the operator
//!   allows them (`--egress-allow`); the operator may block more (`--egress-deny`). Checked
//!   where the connection is made: a resolver that drops blocked addresses from every DNS answer
//!   (so a name that resolves, or re-resolves, to 169.254.169.254 is covered), and a check of
//!   IP-literal hosts before sending (reqwest does not ask a resolver for those). No proxy is
//!   used, since a proxy would resolve names where canaryd cannot check them;
//! - **no redirects**: a 3xx is the answer (a closed gate, a failed delivery), never followed;
//! - **no response bodies**: only the status is kept; the body is never read, so nothing a
//!   peer answers can reach the rollout state, events, alerts or logs;
//! - **a deadline per call** covering DNS, connect and the response head.
//!
//! Operator-configured peers (Prometheus, SMTP) do not go through here.

mod ranges;

pub use ipnet::IpNet;
pub use ranges::{parse_range, EgressPolicy, Refused, DEFAULT_BLOCKED};

use super::secret::Secret;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Why a POST got no HTTP status. Never contains the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The text is not a URL (details withheld: it may be a secret).
    InvalidUrl,
    /// A URL, but not http or https.
    NotHttp,
    /// The destination address is in a blocked range; nothing was sent.
    Refused(Refused),
    /// No answer within the deadline.
    Timeout,
    /// The connection could not be made (refused, DNS, TLS handshake); why, without the URL.
    Connect(String),
    /// Any other transport problem, without the URL.
    Request(String),
}

/// An HTTP client for gate and webhook URLs: destination ranges checked at connect time, no
/// redirects, no proxy, response bodies never read. Cheap to clone (shared inside).
#[derive(Debug, Clone)]
pub struct EgressClient {
    http: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

impl EgressClient {
    /// A client whose calls give up after `timeout` (DNS and connect included) unless a call
    /// sets its own, and that connects only where `policy` allows.
    pub fn new(timeout: Duration, policy: EgressPolicy) -> Result<Self, String> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(CheckedResolver { policy: policy.clone() })
            .user_agent(concat!("canaryd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.without_url().to_string())?;
        Ok(EgressClient { http, policy })
    }

    /// Where this client may connect.
    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// POSTs `body` as JSON (with `headers`) to `url` and returns the answer's status; the
    /// answer's body is dropped unread. `timeout` replaces the client's deadline for this call.
    pub async fn post_json(
        &self,
        url: &Secret,
        body: Vec<u8>,
        headers: HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<StatusCode, SendError> {
        let parsed = reqwest::Url::parse(url.expose()).map_err(|_| SendError::InvalidUrl)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SendError::NotHttp);
        }
        // An IP-literal host never reaches the resolver: check it here.
        // (The URL parser has already turned every numeric form, `2130706433` or `0x7f.1`,
        // into a dotted or bracketed address; anything else is a name.)
        let host = parsed.host_str().ok_or(SendError::InvalidUrl)?;
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            self.policy.check(ip).map_err(SendError::Refused)?;
        }
        let mut request = self
            .http
            .post(parsed)
            .headers(headers)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(t) = timeout {
            request = request.timeout(t);
        }
        let response = request.send().await.map_err(classify)?;
        Ok(response.status())
    }
}

/// Resolves names with the system resolver and drops the addresses `policy` refuses; when
/// every address is refused, the lookup fails with the first [`Refused`].
struct CheckedResolver {
    policy: Arc<EgressPolicy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                found.into_iter().partition(|a| policy.check(a.ip()).is_ok());
            if allowed.is_empty() {
                if let Some(first) = refused.first() {
                    let why = policy.check(first.ip()).expect_err("partitioned as refused");
                    return Err(Box::new(why) as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            if !refused.is_empty() {
                tracing::debug!(refused = refused.len(), "dropped resolved addresses in blocked ranges");
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Classifies a reqwest error, dropping the URL it carries; a refusal by the resolver is found
/// in the error's source chain.
fn classify(e: reqwest::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<Refused>() {
            return SendError::Refused(refused.clone());
        }
        source = s.source();
    }
    if e.is_timeout() {
        return SendError::Timeout;
    }
    let connect = e.is_connect();
    let e = e.without_url();
    let mut text = e.to_string();
    // The source chain says why (refused, certificate); it does not repeat the URL.
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    if connect {
        SendError::Connect(text)
    } else {
        SendError::Request(text)
    }
}
