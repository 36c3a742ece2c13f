//! Alert delivery and gate calls: the IO side of alerts and gates.
//!
//! The engine decides *that* an alert is owed (it puts a [`PendingAlert`] in the state's
//! outbox in the same write as its cause) and *that* a gate must be asked
//! ([`Action::CallGate`]). This module does the talking:
//!
//! - [`secret`]: where URLs, passwords and signing keys come from (env, file, Kubernetes
//!   Secret); values are [`Secret`]s that print `***`.
//! - [`message`]: pure rendering of an alert into a subject, plain text and HTML;
//!   [`payload`]: the versioned generic JSON, Slack and Teams bodies.
//! - [`mail`]: SMTP with lettre (STARTTLS, implicit TLS, certificates verified).
//! - [`egress`]: the one HTTP client for URLs that policies choose (gates, webhooks): blocked
//!   destination ranges checked at connect time, no redirects, answers' bodies never read.
//! - [`webhook`]: HTTP POST through [`egress`], HMAC-signed generic JSON.
//! - [`deliver`]: the [`Deliverer`]: retries with capped, jittered exponential backoff, one
//!   result per channel for the daemon to feed back as `Input::AlertDelivered`, failure
//!   counters in [`DeliveryMetrics`].
//! - [`gate`]: webhook gates (`open` on 2xx; anything else, including a timeout, is closed).
//!
//! Nothing here logs a secret or a webhook URL: logs and errors name the channel instead.
//!
//! [`PendingAlert`]: crate::engine::PendingAlert
//! [`Action::CallGate`]: crate::engine::Action::CallGate

pub mod deliver;
pub mod egress;
pub mod gate;
mod link;
pub mod mail;
pub mod message;
pub mod metrics;
pub mod payload;
pub mod secret;
pub mod webhook;

pub use deliver::{missing_channels, ChannelResult, Deliverer, DelivererConfig, DeliveryError, RetryPolicy};
pub use egress::{EgressClient, EgressPolicy, Refused};
pub use gate::{call_gate, GateAnswer, GateRequest};
pub use mail::{MailError, Mailer, SmtpConfig, SmtpTls};
pub use message::{AlertFacts, AlertMessage, RenderOptions, Report};
pub use metrics::DeliveryMetrics;
pub use payload::{slack, teams, PAYLOAD_VERSION};
pub use secret::{resolve, MapSecretStore, NoSecretStore, Secret, SecretError, SecretStore};
pub use webhook::{WebhookError, WebhookSender};
