//! RolloutPolicy statuses: what the daemon reports on each policy resource, written only when
//! it changed.

use super::{CycleReport, DaemonError};
use crate::policy::{Condition, Policy, RolloutPolicy, RolloutPolicyStatus};
use kube::api::{Api, Patch, PatchParams};
use std::collections::HashMap;

pub(super) fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.chars().take(1000).collect(),
        last_transition_time: jiff::Timestamp::now().to_string(),
    }
}

pub(super) async fn write_status(
    client: &kube::Client,
    policy: &Policy,
    result: &Result<CycleReport, DaemonError>,
    statuses: &mut HashMap<String, RolloutPolicyStatus>,
) {
    let status = match result {
        Ok(r) => {
            let s = &r.state;
            let verdict = s.last_verdict.as_ref().map(|v| {
                let why = v.decisive_check().map(|c| format!(": {}", c.check)).unwrap_or_default();
                format!("{}{why}", v.verdict)
            });
            RolloutPolicyStatus {
                phase: Some(s.phase.as_str().into()),
                step: Some(format!("{}/{}", s.step + 1, policy.spec().steps.len())),
                canary_weight: Some(s.traffic.canary_weight),
                last_verdict: verdict,
                revision: s.revision.clone(),
                conditions: vec![condition("Valid", "True", "Valid", "policy is valid")],
                observed_generation: None,
            }
        }
        Err(e) => RolloutPolicyStatus {
            conditions: vec![condition("Reconciled", "False", "Error", &e.to_string())],
            ..statuses.get(&policy.key()).cloned().unwrap_or_default()
        },
    };
    patch_status(client, policy.namespace(), policy.name(), status, statuses).await;
}

/// Writes a status only when it changed (conditions' times aside), to keep API traffic flat.
pub(super) async fn patch_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    status: RolloutPolicyStatus,
    cache: &mut HashMap<String, RolloutPolicyStatus>,
) {
    let key = format!("{namespace}/{name}");
    let strip = |s: &RolloutPolicyStatus| {
        let mut s = s.clone();
        s.conditions.iter_mut().for_each(|c| c.last_transition_time.clear());
        s
    };
    if cache.get(&key).map(strip) == Some(strip(&status)) {
        return;
    }
    let api: Api<RolloutPolicy> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({"status": status});
    match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            cache.insert(key, status);
        }
        Err(e) => tracing::warn!(policy = %key, error = %e, "cannot write RolloutPolicy status"),
    }
}
