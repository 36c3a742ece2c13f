//! Email over SMTP with lettre: STARTTLS or implicit TLS with verified certificates (the
//! platform's Mozilla roots, or a CA file), optional authentication, a timeout per connection
//! and command. One connection per message: alerts are rare and a pooled connection would only
//! go stale between them.

use super::message::AlertMessage;
use super::secret::Secret;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587). Default.
    #[default]
    StartTls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS. Only for a relay on the loopback interface (a local MTA or a test server);
    /// [`Mailer::new`] refuses it for any other host.
    None,
}

/// The daemon's SMTP settings (the policy only names recipients).
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Server host name (also the name its certificate must carry) or IP address.
    pub host: String,
    /// Server port: usually 587 for STARTTLS, 465 for implicit TLS, 25 for a local relay.
    pub port: u16,
    pub tls: SmtpTls,
    /// Login, when the server wants one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<Secret>,
    /// Sender address, e.g. `canaryd <canaryd@example.com>`.
    pub from: String,
    /// Limit on connecting and on each SMTP command's answer.
    pub timeout: Duration,
    /// PEM file of a CA that signs the server's certificate, on top of the built-in roots.
    pub ca_file: Option<PathBuf>,
}

impl SmtpConfig {
    /// STARTTLS on port 587 with a 30 s timeout and no login.
    pub fn new(host: impl Into<String>, from: impl Into<String>) -> Self {
        SmtpConfig {
            host: host.into(),
            port: 587,
            tls: SmtpTls::StartTls,
            username: None,
            password: None,
            from: from.into(),
            timeout: Duration::from_secs(30),
            ca_file: None,
        }
    }
}

/// Why an email was not sent. No variant carries the password.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The configuration is unusable (plaintext to a remote host, bad CA file, bad sender).
    #[error("smtp configuration: {0}")]
    Config(String),
    /// A recipient address is invalid (a policy problem; retrying will not help).
    #[error("invalid recipient {0:?}")]
    Recipient(String),
    /// The message could not be built.
    #[error("building the message: {0}")]
    Build(String),
    /// The server or the connection failed.
    #[error("smtp {kind}: {detail}")]
    Send {
        /// `timeout`, `tls`, `connection`, `rejected` (5xx), `deferred` (4xx) or `client`.
        kind: &'static str,
        detail: String,
    },
}

impl MailError {
    /// True when trying again later may succeed (connection trouble, 4xx, timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(self, MailError::Send { kind, .. } if *kind != "rejected")
    }

    /// Short kind for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            MailError::Config(_) => "config",
            MailError::Recipient(_) => "recipient",
            MailError::Build(_) => "build",
            MailError::Send { kind, .. } => kind,
        }
    }
}

/// Sends alert emails through one SMTP server.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("host", &self.host).field("from", &self.from.to_string()).finish()
    }
}

/// True for `localhost` and loopback addresses.
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Mailer {
    /// Checks the configuration and prepares the transport (no connection yet).
    pub fn new(cfg: &SmtpConfig) -> Result<Mailer, MailError> {
        let from: Mailbox =
            cfg.from.parse().map_err(|e| MailError::Config(format!("sender {:?}: {e}", cfg.from)))?;
        let tls = match cfg.tls {
            SmtpTls::None if !is_loopback(&cfg.host) => {
                return Err(MailError::Config(format!(
                    "refusing plaintext SMTP to {}: use StartTls or Implicit (plaintext is for loopback relays only)",
                    cfg.host
                )))
            }
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => Tls::Required(tls_parameters(cfg)?),
            SmtpTls::Implicit => Tls::Wrapper(tls_parameters(cfg)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.as_str())
            .port(cfg.port)
            .tls(tls)
            .timeout(Some(cfg.timeout));
        match (&cfg.username, &cfg.password) {
            (Some(user), Some(pw)) => {
                builder = builder.credentials(Credentials::new(user.clone(), pw.expose().to_string()))
            }
            (None, None) => {}
            _ => return Err(MailError::Config("username and password go together".into())),
        }
        Ok(Mailer { transport: builder.build(), from, host: cfg.host.clone() })
    }

    /// Sends `msg` (plain text + HTML alternative) to `to`. `message_id` (e.g.
    /// `<alert-7.reviews.shop@canaryd>`) lets mail systems drop a duplicate sent after a crash.
    pub async fn send(
        &self,
        to: &[String],
        msg: &AlertMessage,
        message_id: Option<String>,
    ) -> Result<(), MailError> {
        if to.is_empty() {
            return Err(MailError::Recipient(String::new()));
        }
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(msg.subject.clone())
            .message_id(message_id)
            .user_agent(concat!("canaryd/", env!("CARGO_PKG_VERSION")).to_string());
        for addr in to {
            let mb: Mailbox = addr.parse().map_err(|_| MailError::Recipient(addr.clone()))?;
            builder = builder.to(mb);
        }
        let email = builder
            .multipart(MultiPart::alternative_plain_html(msg.text.clone(), msg.html.clone()))
            .map_err(|e| MailError::Build(e.to_string()))?;
        self.transport.send(email).await.map(|_| ()).map_err(|e| {
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_tls() {
                "tls"
            } else if e.is_permanent() {
                "rejected"
            } else if e.is_transient() {
                "deferred"
            } else if e.is_client() {
                "client"
            } else {
                "connection"
            };
            MailError::Send { kind, detail: e.to_string() }
        })
    }
}

fn tls_parameters(cfg: &SmtpConfig) -> Result<TlsParameters, MailError> {
    let mut b = TlsParameters::builder(cfg.host.clone());
    if let Some(path) = &cfg.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| MailError::Config(format!("ca_file {}: {e}", path.display())))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| MailError::Config(format!("ca_file {}: {e}", path.display())))?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| MailError::Config(format!("tls: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The core validates recipients without lettre (it must stay free of IO crates); every
    /// address it accepts must be one lettre can send to, or a valid policy would fail at 02:00.
    #[test]
    fn every_address_the_policy_validator_accepts_lettre_accepts() {
        let candidates = [
            "oncall@example.com",
            "a.b+tag@sub.example.io",
            "x@localhost",
            "ops@[10.0.0.1]",
            "o'neil@example.com",
            "first_last@ex-ample.org",
            "a@b.c",
            "{weird}!#$%&*=?^`|~@example.com",
            "a..b@example.com",
            "a@-x.com",
            "a b@example.com",
            "@example.com",
            "a@",
            "a@[::1]",
            "ünï@example.com",
            "a@exämple.com",
            "x@y_z.com",
        ];
        let accepted: Vec<_> = candidates.iter().filter(|a| crate::policy::is_email_address(a)).collect();
        assert!(accepted.len() >= 8, "{accepted:?}");
        for addr in accepted {
            assert!(addr.parse::<lettre::Address>().is_ok(), "core accepts {addr:?} but lettre does not");
        }
    }

    #[test]
    fn plaintext_is_refused_for_remote_hosts_only() {
        let mut cfg = SmtpConfig::new("smtp.example.com", "canaryd@example.com");
        cfg.tls = SmtpTls::None;
        let e = Mailer::new(&cfg).unwrap_err();
        assert!(e.to_string().contains("refusing plaintext SMTP"), "{e}");
        for host in ["localhost", "127.0.0.1", "::1", "[::1]"] {
            cfg.host = host.into();
            assert!(Mailer::new(&cfg).is_ok(), "{host}");
        }
    }

    #[test]
    fn password_never_shows_in_debug() {
        let mut cfg = SmtpConfig::new("smtp.example.com", "canaryd@example.com");
        cfg.username = Some("bot".into());
        cfg.password = Some(Secret::new("pw-123"));
        assert!(!format!("{cfg:?}").contains("pw-123"));
        let m = Mailer::new(&cfg).unwrap();
        assert!(!format!("{m:?}").contains("pw-123"));
    }
}
