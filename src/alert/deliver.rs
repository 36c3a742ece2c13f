//! Delivering outbox alerts: render, send to each channel still missing, retry with capped
//! exponential backoff and jitter, and report one result per channel.
//!
//! Delivery state lives in the engine's persisted state, not here: the daemon feeds every
//! delivered [`ChannelResult`] back as `Input::AlertDelivered { id, channel }`, the engine
//! records it in `PendingAlert::delivered` with its next write, and after a restart
//! [`missing_channels`] is what is still owed. The [`Deliverer`] only adds an in-flight set,
//! so that a reconcile loop that spawns deliveries every cycle does not send the same alert to
//! the same channel twice while the first attempt is still retrying.
//!
//! A crash between a successful send and the write that records it sends that alert once
//! more after the restart; receivers deduplicate on the alert id (the JSON `id`, the email's
//! `Message-ID`).

use super::mail::{MailError, Mailer};
use super::message::{AlertFacts, RenderOptions, Report};
use super::metrics::DeliveryMetrics;
use super::payload;
use super::secret::{resolve, SecretError, SecretStore};
use super::webhook::{WebhookError, WebhookSender};
use crate::engine::{channels_for, Input, PendingAlert};
use crate::policy::{Policy, WebhookFormat};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Channels of `alert` that have not acknowledged it yet: `channels_for` minus `delivered`.
pub fn missing_channels(policy: &Policy, alert: &PendingAlert) -> Vec<String> {
    channels_for(policy, alert.event).into_iter().filter(|c| !alert.delivered.contains(c)).collect()
}

/// Retry schedule of one delivery: attempt `n` (0-based) waits about `initial × 2ⁿ`, capped at
/// `max`, with the upper `jitter` share of each wait random (so channels that failed together
/// do not retry in lockstep).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// First wait.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Attempts in all (the first one included); at least 1.
    pub attempts: u32,
    /// Random share of each wait, 0.0–1.0.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 1 s, 2 s, 4 s … capped at 60 s, 8 attempts (about 3 minutes), half of each wait random.
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            attempts: 8,
            jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `n` (0-based), for a random draw `u` in [0, 1).
    pub fn delay(&self, n: u32, u: f64) -> Duration {
        let base = self.initial.saturating_mul(2u32.saturating_pow(n.min(30))).min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        base.mul_f64(1.0 - jitter + jitter * u.clamp(0.0, 1.0))
    }
}

/// Why one channel did not get an alert. Never contains a secret or a webhook URL.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The channel is not in the policy's alerts.
    #[error("channel {0} is not configured in the policy")]
    UnknownChannel(String),
    /// The policy wants email but the daemon has no SMTP configuration.
    #[error("no SMTP server is configured for email alerts")]
    NoMailer,
    /// A secret of the channel could not be read.
    #[error("{what}: {source}")]
    Secret {
        /// `url` or `signing secret`.
        what: &'static str,
        source: SecretError,
    },
    #[error("email: {0}")]
    Mail(#[from] MailError),
    #[error("webhook: {0}")]
    Webhook(#[from] WebhookError),
}

impl DeliveryError {
    /// True when another attempt may succeed soon.
    pub fn is_retryable(&self) -> bool {
        match self {
            DeliveryError::Mail(e) => e.is_retryable(),
            DeliveryError::Webhook(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// Short kind for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            DeliveryError::UnknownChannel(_) => "unknown-channel",
            DeliveryError::NoMailer => "no-mailer",
            DeliveryError::Secret { .. } => "secret",
            DeliveryError::Mail(e) => e.kind(),
            DeliveryError::Webhook(e) => e.kind(),
        }
    }
}

/// The outcome of delivering one alert to one channel.
#[derive(Debug)]
pub struct ChannelResult {
    /// Policy key, `namespace/name`.
    pub policy: String,
    /// Alert id.
    pub id: u64,
    /// Channel name (`email` or a webhook's name).
    pub channel: String,
    /// Attempts made.
    pub attempts: u32,
    /// Ok when the peer acknowledged the alert; else the last error.
    pub outcome: Result<(), DeliveryError>,
}

impl ChannelResult {
    /// True when delivered.
    pub fn delivered(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The engine input recording the delivery, when delivered.
    pub fn to_input(&self) -> Option<Input> {
        self.delivered().then(|| Input::AlertDelivered { id: self.id, channel: self.channel.clone() })
    }
}

/// What a [`Deliverer`] sends with.
pub struct DelivererConfig {
    /// SMTP; `None` when the daemon has no SMTP server (email channels then fail with
    /// [`DeliveryError::NoMailer`]).
    pub mailer: Option<Mailer>,
    /// HTTP client for webhooks.
    pub webhooks: WebhookSender,
    /// Kubernetes Secrets for `secretKeyRef` sources.
    pub secrets: Arc<dyn SecretStore>,
    /// Prometheus link base.
    pub render: RenderOptions,
    pub retry: RetryPolicy,
}

/// Sends outbox alerts to email and webhook channels. Cheap to clone (shared inside), so the
/// daemon can move a clone into a spawned task and never wait for it on the rollback path.
#[derive(Clone)]
pub struct Deliverer {
    inner: Arc<Inner>,
}

struct Inner {
    mailer: Option<Mailer>,
    webhooks: WebhookSender,
    secrets: Arc<dyn SecretStore>,
    render: RenderOptions,
    retry: RetryPolicy,
    metrics: Arc<DeliveryMetrics>,
    in_flight: Mutex<HashSet<(String, u64, String)>>,
    /// Deliveries this process completed, newest last (bounded). An acknowledgement reaches the
    /// state only at the policy's next write; a cycle that read the state before it arrived
    /// still lists the alert as owed and must not send it a second time.
    sent: Mutex<Sent>,
}

/// A bounded set of `(policy, alert id, channel)` that were delivered.
#[derive(Default)]
struct Sent {
    keys: HashSet<(String, u64, String)>,
    order: std::collections::VecDeque<(String, u64, String)>,
}

impl Sent {
    /// Enough for every alert owed across thousands of policies between two writes.
    const CAPACITY: usize = 4096;

    fn insert(&mut self, key: (String, u64, String)) {
        if self.keys.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.keys.remove(&old);
                }
            }
        }
    }
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("mailer", &self.inner.mailer)
            .field("render", &self.inner.render)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// Removes an in-flight entry when its delivery ends, however it ends (also when the task is
/// cancelled), so a later cycle can try again.
struct InFlight {
    inner: Arc<Inner>,
    key: (String, u64, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.inner.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

impl Deliverer {
    /// A deliverer for the daemon's channels.
    pub fn new(config: DelivererConfig) -> Self {
        let DelivererConfig { mailer, webhooks, secrets, render, retry } = config;
        Deliverer {
            inner: Arc::new(Inner {
                mailer,
                webhooks,
                secrets,
                render,
                retry,
                metrics: Arc::new(DeliveryMetrics::new()),
                in_flight: Mutex::new(HashSet::new()),
                sent: Mutex::new(Sent::default()),
            }),
        }
    }

    /// The failure counters, to export on `/metrics`.
    pub fn metrics(&self) -> Arc<DeliveryMetrics> {
        self.inner.metrics.clone()
    }

    /// Starts delivering `alert` to every channel that still misses it and is not already
    /// being delivered, on the tokio runtime; returns at once. The task's result holds one
    /// [`ChannelResult`] per channel it tried; feed the delivered ones back to the engine.
    pub fn spawn(
        &self,
        policy: Policy,
        alert: PendingAlert,
        facts: AlertFacts,
    ) -> tokio::task::JoinHandle<Vec<ChannelResult>> {
        let tasks = self.spawn_each(policy, alert, facts, |_| {});
        tokio::spawn(async move {
            let mut results = Vec::new();
            for t in tasks {
                if let Ok(r) = t.await {
                    results.push(r);
                }
            }
            results
        })
    }

    /// Like [`Deliverer::spawn`], one task per channel, calling `on_done` as soon as that
    /// channel finishes — so a delivered webhook is acknowledged (and survives a restart)
    /// while a slow email is still retrying.
    pub fn spawn_each<F>(
        &self,
        policy: Policy,
        alert: PendingAlert,
        facts: AlertFacts,
        on_done: F,
    ) -> Vec<tokio::task::JoinHandle<ChannelResult>>
    where
        F: Fn(&ChannelResult) + Send + Sync + 'static,
    {
        let key = policy.key();
        let mut guards = Vec::new();
        {
            let sent = self.inner.sent.lock().unwrap_or_else(|e| e.into_inner());
            let mut set = self.inner.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            for channel in missing_channels(&policy, &alert) {
                let k = (key.clone(), alert.id, channel);
                if !sent.keys.contains(&k) && set.insert(k.clone()) {
                    guards.push(InFlight { inner: self.inner.clone(), key: k });
                }
            }
        }
        let report = Arc::new(Report::build(&alert, &policy, &facts, &self.inner.render));
        let policy = Arc::new(policy);
        let on_done = Arc::new(on_done);
        guards
            .into_iter()
            .map(|guard| {
                let (this, report, policy, on_done) =
                    (self.clone(), report.clone(), policy.clone(), on_done.clone());
                tokio::spawn(async move {
                    let result = this.deliver_channel(&policy, &report, &guard.key.2).await;
                    if result.delivered() {
                        this.inner.sent.lock().unwrap_or_else(|e| e.into_inner()).insert(guard.key.clone());
                    }
                    on_done(&result);
                    drop(guard);
                    result
                })
            })
            .collect()
    }

    /// Delivers `alert` to `channels` concurrently, each with retries; one result per channel,
    /// in the order given.
    pub async fn deliver(
        &self,
        policy: &Policy,
        alert: &PendingAlert,
        facts: &AlertFacts,
        channels: &[String],
    ) -> Vec<ChannelResult> {
        let report = Report::build(alert, policy, facts, &self.inner.render);
        let sends = channels.iter().map(|c| self.deliver_channel(policy, &report, c));
        futures::future::join_all(sends).await
    }

    /// Delivers a rendered alert to one channel, retrying retryable failures.
    async fn deliver_channel(&self, policy: &Policy, report: &Report, channel: &str) -> ChannelResult {
        let retry = self.inner.retry;
        let metrics = &self.inner.metrics;
        let key = policy.key();
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            metrics.update(channel, |c| c.attempts += 1);
            match self.send_once(policy, report, channel).await {
                Ok(()) => {
                    metrics.update(channel, |c| c.delivered += 1);
                    tracing::info!(policy = %key, channel, alert_id = report.id, attempts, "alert delivered");
                    break Ok(());
                }
                Err(e) => {
                    metrics.update(channel, |c| c.failed_attempts += 1);
                    let last = attempts >= retry.attempts.max(1) || !e.is_retryable();
                    if last {
                        metrics.update(channel, |c| c.gave_up += 1);
                        tracing::warn!(policy = %key, channel, alert_id = report.id, attempts, kind = e.kind(), error = %e,
                            "alert delivery failed; the alert stays in the outbox");
                        break Err(e);
                    }
                    let wait = retry.delay(attempts - 1, rand::random::<f64>());
                    tracing::warn!(policy = %key, channel, alert_id = report.id, attempts, kind = e.kind(), error = %e,
                        retry_in_ms = wait.as_millis() as u64, "alert delivery failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        ChannelResult { policy: key, id: report.id, channel: channel.to_string(), attempts, outcome }
    }

    /// One attempt to send a rendered alert to one channel (no retry). Secrets are resolved on
    /// every attempt, so a rotated webhook URL or password is picked up.
    pub async fn send_once(
        &self,
        policy: &Policy,
        report: &Report,
        channel: &str,
    ) -> Result<(), DeliveryError> {
        let alerts = &policy.spec().alerts;
        if channel == "email" {
            let email = alerts.email.as_ref().ok_or_else(|| DeliveryError::UnknownChannel(channel.into()))?;
            let mailer = self.inner.mailer.as_ref().ok_or(DeliveryError::NoMailer)?;
            let message_id = format!(
                "<alert-{}-{}.{}.{}@canaryd.io>",
                report.id,
                report.at,
                policy.name(),
                policy.namespace()
            );
            mailer.send(&email.to, &report.message(), Some(message_id)).await?;
            return Ok(());
        }
        let hook = alerts
            .webhooks
            .iter()
            .find(|w| w.name == channel)
            .ok_or_else(|| DeliveryError::UnknownChannel(channel.into()))?;
        let store = self.inner.secrets.as_ref();
        let url = resolve(&hook.url_from, policy.namespace(), store)
            .map_err(|source| DeliveryError::Secret { what: "url", source })?;
        let key = match &hook.signing_secret_from {
            Some(src) => Some(
                resolve(src, policy.namespace(), store)
                    .map_err(|source| DeliveryError::Secret { what: "signing secret", source })?,
            ),
            None => None,
        };
        let body = match hook.format {
            WebhookFormat::Json => payload::generic_json(report),
            WebhookFormat::Slack => payload::slack(report),
            WebhookFormat::Teams => payload::teams(report),
        };
        let bytes = serde_json::to_vec(&body).expect("JSON values serialise");
        self.inner.webhooks.post(&url, &bytes, key.as_ref()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_with_jitter_inside_bounds() {
        let r = RetryPolicy::default();
        assert_eq!(r.delay(0, 1.0), Duration::from_secs(1));
        assert_eq!(r.delay(0, 0.0), Duration::from_millis(500));
        assert_eq!(r.delay(3, 1.0), Duration::from_secs(8));
        assert_eq!(r.delay(10, 1.0), Duration::from_secs(60));
        assert_eq!(r.delay(40, 0.0), Duration::from_secs(30));
        let none = RetryPolicy { jitter: 0.0, ..r };
        assert_eq!(none.delay(2, 0.7), Duration::from_secs(4));
    }
}
