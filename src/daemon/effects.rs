//! Effects outside Kubernetes — gates and alert delivery: the `Effects` trait the driver calls
//! after its write, `NoEffects` for runs without either, and the daemon's real ones: gate calls
//! over HTTP (the `alert::egress` client, shared with webhooks) and alert delivery (email +
//! webhooks) via `alert::Deliverer`, spawned so that a slow SMTP server never holds up a cycle
//! or a rollback.

use super::Feedback;
use crate::alert::{call_gate, AlertFacts, Deliverer, EgressClient, SecretStore};
use crate::engine::{PendingAlert, RolloutState};
use crate::policy::{Gate, Policy};
use std::future::Future;
use std::sync::Arc;

/// Side effects outside Kubernetes: gates and alert delivery (webhooks, email).
pub trait Effects: Send + Sync {
    /// Asks a gate; `(open, detail)`.
    fn call_gate(
        &self,
        policy: &Policy,
        gate: &Gate,
        state: &RolloutState,
    ) -> impl Future<Output = (bool, String)> + Send;
    /// Starts delivering one outbox alert to the channels that still miss it and reports each
    /// delivered channel as `Input::AlertDelivered` through `feedback`. It must not hold up the
    /// cycle (spawn slow work): the rollback has already been written when this runs.
    fn deliver(
        &self,
        policy: &Policy,
        alert: &PendingAlert,
        state: &RolloutState,
        feedback: Feedback,
    ) -> impl Future<Output = ()> + Send;
}

/// Effects for runs without gates or alert channels.
pub struct NoEffects;

impl Effects for NoEffects {
    async fn call_gate(&self, _: &Policy, _: &Gate, _: &RolloutState) -> (bool, String) {
        (false, "no gate caller configured".into())
    }
    async fn deliver(&self, _: &Policy, _: &PendingAlert, _: &RolloutState, _: Feedback) {}
}

/// Gates and alert channels for `canaryd run`.
pub struct DaemonEffects {
    pub deliverer: Deliverer,
    /// Gate calls: destination ranges checked, no redirects, bodies never read.
    pub http: EgressClient,
    pub secrets: Arc<dyn SecretStore>,
    /// Deliveries started and not yet awaited (for `--once`, which must not exit before them).
    pub in_flight: std::sync::Mutex<Vec<tokio::task::JoinHandle<crate::alert::ChannelResult>>>,
}

impl DaemonEffects {
    /// Effects with no deliveries in flight.
    pub fn new(deliverer: Deliverer, http: EgressClient, secrets: Arc<dyn SecretStore>) -> Self {
        DaemonEffects { deliverer, http, secrets, in_flight: Default::default() }
    }

    /// Waits up to `limit` for the deliveries started so far (each already retries with
    /// backoff); what does not finish stays in the outbox for the next run.
    pub async fn drain(&self, limit: std::time::Duration) {
        let tasks: Vec<_> = self.in_flight.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        let _ = tokio::time::timeout(limit, futures::future::join_all(tasks)).await;
    }
}

impl Effects for DaemonEffects {
    async fn call_gate(&self, policy: &Policy, gate: &Gate, state: &RolloutState) -> (bool, String) {
        call_gate(&self.http, policy, gate, state, self.secrets.as_ref()).await.into()
    }

    async fn deliver(&self, policy: &Policy, alert: &PendingAlert, _: &RolloutState, feedback: Feedback) {
        let key = policy.key();
        // Each channel is acknowledged as soon as it has the alert, independently of the others.
        self.deliverer.spawn_each(
            policy.clone(),
            alert.clone(),
            AlertFacts::from_alert(policy, alert),
            move |r| {
                if let Some(input) = r.to_input() {
                    feedback.push(&key, input);
                }
            },
        );
    }
}

/// Kubernetes Secrets for `secretKeyRef` sources. The alert code asks synchronously, so this
/// blocks the (multi-threaded) runtime's worker briefly; lookups happen only when sending.
/// Secrets outside `scope` are never read, whatever the daemon's RBAC would allow.
pub struct KubeSecretStore {
    pub client: kube::Client,
    pub scope: super::NamespaceScope,
}

impl SecretStore for KubeSecretStore {
    fn get(&self, namespace: &str, name: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        use k8s_openapi::api::core::v1::Secret;
        if !self.scope.contains(namespace) {
            return Err(format!(
                "namespace {namespace} is not managed by this daemon (--namespace {})",
                self.scope
            ));
        }
        let api: kube::Api<Secret> = kube::Api::namespaced(self.client.clone(), namespace);
        let secret =
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(api.get_opt(name)))
                .map_err(|e| format!("cannot read Secret {namespace}/{name}: {e}"))?;
        Ok(secret.and_then(|s| s.data).and_then(|d| d.get(key).map(|v| v.0.clone())))
    }
}
