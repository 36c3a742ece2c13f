//! How to reach Prometheus: URL, credentials kept as [`Secret`]s, TLS, limits.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::secret::Secret;

/// The value of an extra request header: plain text (shown in Debug) or a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Not secret, e.g. `X-Scope-OrgID: team-a`.
    Plain(String),
    /// Secret, e.g. an API key; sent marked sensitive and never printed.
    Secret(Secret),
}

/// Default per-attempt timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest accepted response body, in bytes (32 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 << 20;

/// How to reach Prometheus. Secrets are [`Secret`]s, so the `Debug` output is safe to log
/// (credentials embedded in the URL are redacted as well).
#[derive(Clone)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus.istio-system:9090` (a path prefix is kept).
    pub url: String,
    /// Sent as `Authorization: Bearer …`.
    pub bearer_token: Option<Secret>,
    /// User name and password for HTTP basic authentication.
    pub basic_auth: Option<(String, Secret)>,
    /// Extra headers sent with every request (tenant IDs, API keys).
    pub headers: Vec<(String, HeaderValue)>,
    /// Limit for one attempt, connect to last body byte. Default 10 s.
    pub timeout: Duration,
    /// Extra attempts after a transient failure (connect error, 429, 502, 503, 504). Default 2.
    pub retries: u32,
    /// Wait before the first retry; doubles with each retry (capped at 5 s). Default 200 ms.
    pub retry_backoff: Duration,
    /// PEM file of the CA(s) that sign Prometheus' certificate; replaces the system roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate. Off by default; for test clusters only.
    pub insecure_skip_verify: bool,
    /// Largest response body accepted, in bytes. Default 32 MiB.
    pub max_response_bytes: usize,
}

impl PrometheusConfig {
    /// A configuration with defaults: no authentication, verified TLS, 10 s timeout, 2 retries.
    pub fn new(url: impl Into<String>) -> Self {
        PrometheusConfig {
            url: url.into(),
            bearer_token: None,
            basic_auth: None,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            retries: 2,
            retry_backoff: Duration::from_millis(200),
            ca_file: None,
            insecure_skip_verify: false,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

impl fmt::Debug for PrometheusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusConfig")
            .field("url", &redact_url(&self.url))
            .field("bearer_token", &self.bearer_token)
            .field("basic_auth", &self.basic_auth)
            .field("headers", &self.headers)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("ca_file", &self.ca_file)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

/// The URL without user info, query or fragment: what may appear in logs and errors.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets_and_url_credentials() {
        let mut c = PrometheusConfig::new("https://admin:hunter2@prom.example:9090/prom?x=1");
        c.bearer_token = Some(Secret::new("tok-123"));
        c.basic_auth = Some(("alice".into(), Secret::new("pw-456")));
        c.headers = vec![
            ("X-Api-Key".into(), HeaderValue::Secret(Secret::new("key-789"))),
            ("X-Scope-OrgID".into(), HeaderValue::Plain("team-a".into())),
        ];
        let shown = format!("{c:?}");
        for secret in ["hunter2", "tok-123", "pw-456", "key-789"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert!(shown.contains("alice") && shown.contains("team-a") && shown.contains("prom.example"));
        assert_eq!(format!("{}", Secret::new("x")), "***");
    }
}
