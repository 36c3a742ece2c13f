//! The daemon's real effects: gate calls over HTTP and alert delivery (email + webhooks) via
//! `alert::Deliverer`, spawned so that a slow SMTP server never holds up a cycle or a rollback.

use super::{Effects, Feedback};
use crate::alert::{call_gate, AlertFacts, Deliverer, SecretStore};
use crate::engine::{PendingAlert, RolloutState};
use crate::policy::{Gate, Policy};
use std::sync::Arc;

/// Gates and alert channels for `canaryd run`.
pub struct DaemonEffects {
    pub deliverer: Deliverer,
    pub http: reqwest::Client,
    pub secrets: Arc<dyn SecretStore>,
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
pub struct KubeSecretStore {
    pub client: kube::Client,
}

impl SecretStore for KubeSecretStore {
    fn get(&self, namespace: &str, name: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        use k8s_openapi::api::core::v1::Secret;
        let api: kube::Api<Secret> = kube::Api::namespaced(self.client.clone(), namespace);
        let secret =
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(api.get_opt(name)))
                .map_err(|e| format!("cannot read Secret {namespace}/{name}: {e}"))?;
        Ok(secret.and_then(|s| s.data).and_then(|d| d.get(key).map(|v| v.0.clone())))
    }
}
