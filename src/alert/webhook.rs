//! Webhook POSTs with reqwest: a timeout per request, TLS certificates verified, no redirects
//! (a redirect could carry a signed alert to another host), an HMAC signature header when the
//! channel has a signing secret.
//!
//! Webhook URLs are secrets (Slack and Teams URLs are bearer credentials): errors here never
//! contain the URL (`reqwest::Error::without_url`), and callers log the channel name.

use super::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

/// Name of the signature header: `sha256=<lower-case hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Canaryd-Signature";

/// Why a POST did not succeed. Never contains the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The URL is not an http(s) URL (details withheld: it is a secret).
    #[error("the webhook URL is not a valid http or https URL")]
    InvalidUrl,
    /// The peer answered with a non-2xx status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// The connection could not be made (refused, DNS, TLS handshake).
    #[error("connection failed: {0}")]
    Connect(String),
    /// Any other transport problem.
    #[error("request failed: {0}")]
    Request(String),
}

impl WebhookError {
    /// True when trying again later may succeed: transport trouble, 5xx, 408 and 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            WebhookError::InvalidUrl => false,
            WebhookError::Status(s) => *s >= 500 || *s == 408 || *s == 429,
            _ => true,
        }
    }

    /// Short kind for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            WebhookError::InvalidUrl => "invalid-url",
            WebhookError::Status(_) => "status",
            WebhookError::Timeout => "timeout",
            WebhookError::Connect(_) => "connect",
            WebhookError::Request(_) => "request",
        }
    }

    /// Classifies a reqwest error, dropping the URL it carries.
    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            return WebhookError::Timeout;
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
            WebhookError::Connect(text)
        } else {
            WebhookError::Request(text)
        }
    }
}

/// `sha256=<hex>` for `body` under `key`.
pub fn signature(key: &Secret, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts JSON bodies to webhook URLs.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
}

impl WebhookSender {
    /// A sender whose requests give up after `timeout` (connect included).
    pub fn new(timeout: Duration) -> Result<Self, WebhookError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("canaryd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Request(e.without_url().to_string()))?;
        Ok(WebhookSender { client })
    }

    /// The underlying client (shared with gate calls).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// POSTs `body` as JSON to `url`; signs it when `signing_key` is set. Ok on 2xx.
    pub async fn post(
        &self,
        url: &Secret,
        body: &[u8],
        signing_key: Option<&Secret>,
    ) -> Result<(), WebhookError> {
        let parsed = reqwest::Url::parse(url.expose()).map_err(|_| WebhookError::InvalidUrl)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(WebhookError::InvalidUrl);
        }
        let mut req = self
            .client
            .post(parsed)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(key) = signing_key {
            req = req.header(SIGNATURE_HEADER, signature(key, body));
        }
        let resp = req.send().await.map_err(WebhookError::from_reqwest)?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(WebhookError::Status(status.as_u16()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_reference_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(&Secret::new("Jefe"), b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retryable_statuses() {
        assert!(WebhookError::Status(500).is_retryable());
        assert!(WebhookError::Status(429).is_retryable());
        assert!(!WebhookError::Status(404).is_retryable());
        assert!(!WebhookError::InvalidUrl.is_retryable());
        assert!(WebhookError::Timeout.is_retryable());
    }
}
