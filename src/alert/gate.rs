//! Gate webhooks, as Flagger's confirm-* and rollback hooks: canaryd POSTs a small JSON
//! description of the rollout; a 2xx answer means *open* (go ahead; for a `rollback` gate:
//! abort), anything else — another status, a timeout, a connection error, an unresolvable
//! URL — means *not open*, so a broken gate holds a rollout rather than advancing it.
//!
//! The `detail` of an answer names the status code or the error kind, never the URL (gate URLs
//! may come from secrets) and never the answer's body: the detail reaches the rollout state on
//! the VirtualService, events and alerts, which the policy's author can read, so quoting the
//! body would let a gate URL read whatever canaryd can reach. Calls go through the
//! [`EgressClient`]: blocked destination ranges and redirects close the gate.

use super::egress::{EgressClient, SendError};
use super::secret::{resolve, Secret, SecretStore};
use crate::engine::{gate_name, RolloutState};
use crate::policy::{Gate, Policy};
use serde::Serialize;

/// `version` of the gate request body.
pub const GATE_REQUEST_VERSION: &str = "canaryd.io/gate/v1";

/// The JSON body POSTed to a gate.
///
/// ```json
/// {"version": "canaryd.io/gate/v1", "gate": "qa-signoff", "kind": "confirm-step",
///  "policy": "reviews", "namespace": "shop", "revision": "7f9c2d", "phase": "Progressing",
///  "step": 2, "steps": 3, "canaryWeight": 30}
/// ```
/// `step` is 1-based; `revision` is `null` when unknown.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GateRequest {
    pub version: &'static str,
    /// The gate's name in the policy.
    pub gate: String,
    /// `confirm-rollout`, `confirm-step`, `confirm-promotion` or `rollback`.
    pub kind: &'static str,
    pub policy: String,
    pub namespace: String,
    pub revision: Option<String>,
    /// Rollout phase (`Pending`, `Progressing`, …).
    pub phase: &'static str,
    /// Current step, 1-based.
    pub step: usize,
    /// Steps in the plan.
    pub steps: usize,
    /// Percent of traffic the canary has now.
    pub canary_weight: u32,
}

impl GateRequest {
    /// The request for `gate` in the rollout described by `state`.
    pub fn new(policy: &Policy, gate: &Gate, state: &RolloutState) -> Self {
        GateRequest {
            version: GATE_REQUEST_VERSION,
            gate: gate.name.clone(),
            kind: gate_name(gate.kind),
            policy: policy.name().to_string(),
            namespace: policy.namespace().to_string(),
            revision: state.revision.clone(),
            phase: state.phase.as_str(),
            step: state.step + 1,
            steps: policy.spec().steps.len(),
            canary_weight: state.traffic.canary_weight,
        }
    }
}

/// A gate's answer, ready to become `engine::Input::Gate { kind, open, detail }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateAnswer {
    /// True on a 2xx answer.
    pub open: bool,
    /// `HTTP 200`, `HTTP 503`, `HTTP 302 (redirects are not followed)`, `timed out after 10s`,
    /// `destination refused: 169.254.169.254 is in a blocked range (…)`, …
    pub detail: String,
}

impl From<GateAnswer> for (bool, String) {
    fn from(a: GateAnswer) -> Self {
        (a.open, a.detail)
    }
}

/// Asks `gate` about the rollout in `state`: resolves its URL (`url`, or `urlFrom` through
/// `store`), POSTs a [`GateRequest`] with the gate's timeout. Never fails: every problem is a
/// closed answer with a detail.
pub async fn call_gate(
    client: &EgressClient,
    policy: &Policy,
    gate: &Gate,
    state: &RolloutState,
    store: &dyn SecretStore,
) -> GateAnswer {
    let url = match (&gate.url, &gate.url_from) {
        (Some(u), _) => Secret::new(u.clone()),
        (None, Some(src)) => match resolve(src, policy.namespace(), store) {
            Ok(s) => s,
            Err(e) => return closed(format!("gate URL unavailable: {e}")),
        },
        (None, None) => return closed("gate has no url".into()),
    };
    let request = GateRequest::new(policy, gate, state);
    let answer = post(client, &url, &request, gate.timeout.to_std()).await;
    tracing::debug!(policy = %policy.key(), gate = %gate.name, open = answer.open, detail = %answer.detail, "gate answered");
    answer
}

/// POSTs `request` to `url` with `timeout` (DNS, connect and the answer's head; the body is
/// never read): the transport half of [`call_gate`].
pub async fn post(
    client: &EgressClient,
    url: &Secret,
    request: &GateRequest,
    timeout: std::time::Duration,
) -> GateAnswer {
    let body = serde_json::to_vec(request).expect("the gate request serialises");
    let sent = client.post_json(url, body, reqwest::header::HeaderMap::new(), Some(timeout)).await;
    let status = match sent {
        Ok(status) => status,
        Err(SendError::InvalidUrl) => return closed("gate URL is not a valid URL".into()),
        Err(SendError::NotHttp) => return closed("gate URL is not http or https".into()),
        Err(SendError::Refused(r)) => return closed(r.to_string()),
        Err(SendError::Timeout) => return closed(format!("timed out after {}", human(timeout))),
        Err(SendError::Connect(_)) => return closed("connection failed".into()),
        Err(SendError::Request(why)) => return closed(format!("request failed: {why}")),
    };
    let code = status.as_u16();
    if status.is_success() {
        GateAnswer { open: true, detail: format!("HTTP {code}") }
    } else if status.is_redirection() {
        closed(format!("HTTP {code} (redirects are not followed)"))
    } else {
        closed(format!("HTTP {code}"))
    }
}

fn closed(detail: String) -> GateAnswer {
    GateAnswer { open: false, detail }
}

fn human(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
