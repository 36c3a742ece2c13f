//! Webhook POSTs through the [`EgressClient`]: a deadline per request, TLS certificates
//! verified, destination ranges checked, no redirects (a redirect could carry a signed alert to
//! another host), answers' bodies never read, an HMAC signature header when the channel has a
//! signing secret.
//!
//! Webhook URLs are secrets (Slack and Teams URLs are bearer credentials): errors here never
//! contain the URL, and callers log the channel name.

use super::egress::{EgressClient, EgressPolicy, Refused, SendError};
use super::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

/// Name of the signature header: `sha256=<lower-case hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Canaryd-Signature";

/// Why a POST did not succeed. Never contains the URL or anything the peer answered but its
/// status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The URL is not an http(s) URL (details withheld: it is a secret).
    #[error("the webhook URL is not a valid http or https URL")]
    InvalidUrl,
    /// The destination address is in a blocked range; nothing was sent.
    #[error("{0}")]
    Refused(Refused),
    /// The peer answered with a redirect, which is not followed.
    #[error("HTTP status {0} (redirects are not followed)")]
    Redirect(u16),
    /// The peer answered with another non-2xx status.
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
            WebhookError::InvalidUrl | WebhookError::Refused(_) | WebhookError::Redirect(_) => false,
            WebhookError::Status(s) => *s >= 500 || *s == 408 || *s == 429,
            _ => true,
        }
    }

    /// Short kind for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            WebhookError::InvalidUrl => "invalid-url",
            WebhookError::Refused(_) => "refused",
            WebhookError::Redirect(_) => "redirect",
            WebhookError::Status(_) => "status",
            WebhookError::Timeout => "timeout",
            WebhookError::Connect(_) => "connect",
            WebhookError::Request(_) => "request",
        }
    }
}

impl From<SendError> for WebhookError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::InvalidUrl | SendError::NotHttp => WebhookError::InvalidUrl,
            SendError::Refused(r) => WebhookError::Refused(r),
            SendError::Timeout => WebhookError::Timeout,
            SendError::Connect(text) => WebhookError::Connect(text),
            SendError::Request(text) => WebhookError::Request(text),
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
    client: EgressClient,
}

impl WebhookSender {
    /// A sender whose requests give up after `timeout` (DNS and connect included) and connect
    /// only where `egress` allows.
    pub fn new(timeout: Duration, egress: EgressPolicy) -> Result<Self, WebhookError> {
        EgressClient::new(timeout, egress).map(WebhookSender::with_client).map_err(WebhookError::Request)
    }

    /// A sender on an existing client (the daemon shares one with gate calls).
    pub fn with_client(client: EgressClient) -> Self {
        WebhookSender { client }
    }

    /// The underlying client.
    pub fn client(&self) -> &EgressClient {
        &self.client
    }

    /// POSTs `body` as JSON to `url`; signs it when `signing_key` is set. Ok on 2xx.
    pub async fn post(
        &self,
        url: &Secret,
        body: &[u8],
        signing_key: Option<&Secret>,
    ) -> Result<(), WebhookError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = signing_key {
            let value = signature(key, body).parse().expect("hex is a valid header value");
            headers.insert(SIGNATURE_HEADER, value);
        }
        let status = self.client.post_json(url, body.to_vec(), headers, None).await?;
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            Err(WebhookError::Redirect(status.as_u16()))
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
        assert!(!WebhookError::Redirect(302).is_retryable());
        assert!(WebhookError::Timeout.is_retryable());
    }
}
