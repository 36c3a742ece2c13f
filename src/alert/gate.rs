//! Gate webhooks, as Flagger's confirm-* and rollback hooks: canaryd POSTs a small JSON
//! description of the rollout; a 2xx answer means *open* (go ahead; for a `rollback` gate:
//! abort), anything else — another status, a timeout, a connection error, an unresolvable
//! URL — means *not open*, so a broken gate holds a rollout rather than advancing it.
//!
//! The `detail` of an answer names the status code or the error kind, never the URL (gate URLs
//! may come from secrets).

use super::secret::{resolve, Secret, SecretStore};
use crate::engine::{gate_name, RolloutState};
use crate::policy::{Gate, Policy};
use serde::Serialize;

/// `version` of the gate request body.
pub const GATE_REQUEST_VERSION: &str = "canaryd.io/gate/v1";

/// Largest part of a refusal's response body quoted in the detail, in characters.
const BODY_EXCERPT: usize = 200;

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
    /// `HTTP 200`, `HTTP 503: frozen for the holidays`, `timed out after 10s`, …
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
    client: &reqwest::Client,
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

/// POSTs `request` to `url` with `timeout`: the transport half of [`call_gate`].
pub async fn post(
    client: &reqwest::Client,
    url: &Secret,
    request: &GateRequest,
    timeout: std::time::Duration,
) -> GateAnswer {
    let Ok(parsed) = reqwest::Url::parse(url.expose()) else {
        return closed("gate URL is not a valid URL".into());
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return closed("gate URL is not http or https".into());
    }
    let sent = client.post(parsed).timeout(timeout).json(request).send().await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return closed(format!("timed out after {}", human(timeout))),
        Err(e) if e.is_connect() => return closed("connection failed".into()),
        Err(e) => return closed(format!("request failed: {}", e.without_url())),
    };
    let status = resp.status();
    if status.is_success() {
        return GateAnswer { open: true, detail: format!("HTTP {}", status.as_u16()) };
    }
    // A gate that says no may say why; quote the start of its answer (bounded, one line).
    let body = tokio::time::timeout(timeout, resp.text()).await.ok().and_then(Result::ok).unwrap_or_default();
    let excerpt: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(BODY_EXCERPT)
        .collect::<String>()
        .trim()
        .to_string();
    let detail = if excerpt.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        format!("HTTP {}: {excerpt}", status.as_u16())
    };
    GateAnswer { open: false, detail }
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
