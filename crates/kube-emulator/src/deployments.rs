//! A stand-in for the Deployment controller: status after each write, the `/scale`
//! subresource, and rollout progress the test controls.

use serde_json::{json, Value};

use super::error::{ApiError, Subject};
use super::objects::{self, Target, WriteOpts, Written};
use super::Inner;

/// How the simulated controller finishes rollouts after a pod-template change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RolloutMode {
    /// Every rollout is finished as soon as it is written (all replicas updated and available).
    #[default]
    Instant,
    /// New templates start with 0 updated replicas; advance them with
    /// `EmulatorHandle::set_rollout_progress`.
    Manual,
    /// A Deployment controller runs pods and computes status from them (rolling updates,
    /// readiness after `ready_after`, the progress deadline). Writes leave status alone, so
    /// `observedGeneration` lags until the controller syncs: on every `config.tick` of the
    /// handle's ticker, or when a test calls `EmulatorHandle::advance_controller`.
    Controlled(super::controller::ControllerConfig),
}

fn replicas(d: &Value) -> i64 {
    d["spec"]["replicas"].as_i64().unwrap_or(1)
}

fn condition(kind: &str, reason: &str, message: &str) -> Value {
    let now = objects::now();
    json!({"type": kind, "status": "True", "reason": reason, "message": message,
           "lastUpdateTime": now, "lastTransitionTime": now})
}

/// Status for a deployment with `updated` of its replicas on the newest template.
pub(crate) fn status_with(d: &Value, updated: i64) -> Value {
    let want = replicas(d);
    let updated = updated.clamp(0, want);
    let name = d["metadata"]["name"].as_str().unwrap_or_default();
    let done = updated == want;
    let progressing = if done {
        condition(
            "Progressing",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{name}\" has successfully progressed."),
        )
    } else {
        condition("Progressing", "ReplicaSetUpdated", &format!("ReplicaSet \"{name}\" is progressing."))
    };
    // Old replicas keep serving while the new ones come up, so the total stays at `want`.
    json!({
        "observedGeneration": d["metadata"]["generation"],
        "replicas": want,
        "updatedReplicas": updated,
        "readyReplicas": want,
        "availableReplicas": want,
        "conditions": [condition("Available", "MinimumReplicasAvailable", "Deployment has minimum availability."), progressing],
    })
}

/// Sets the status a controller would write after this change.
pub(crate) fn simulate(new: &mut Value, old: Option<&Value>, mode: RolloutMode) {
    let template_changed = old.is_none_or(|o| o["spec"]["template"] != new["spec"]["template"]);
    if let RolloutMode::Controlled(_) = mode {
        // The controller writes status later, through /status; the write keeps the old one.
        return;
    }
    let updated = match (mode, template_changed, old) {
        (RolloutMode::Instant, _, _) => replicas(new),
        (RolloutMode::Manual, true, _) => 0,
        (RolloutMode::Manual, false, Some(o)) => o["status"]["updatedReplicas"].as_i64().unwrap_or(0),
        (RolloutMode::Manual, false, None) | (RolloutMode::Controlled(_), _, _) => 0,
    };
    new["status"] = status_with(new, updated);
}

/// The `autoscaling/v1` Scale view of a deployment.
pub(crate) fn scale_of(d: &Value) -> Value {
    let selector: Vec<String> = d["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
        .unwrap_or_default();
    let md = &d["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": md["name"], "namespace": md["namespace"], "uid": md["uid"],
                     "resourceVersion": md["resourceVersion"], "creationTimestamp": md["creationTimestamp"]},
        "spec": {"replicas": replicas(d)},
        "status": {"replicas": d["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector.join(",")},
    })
}

/// Writes a Scale back into its deployment (PUT or PATCH on `/scale`).
pub(crate) fn write_scale(
    inner: &mut Inner,
    t: &Target,
    old: &Value,
    scale: Value,
    opts: &WriteOpts,
) -> Result<Written, ApiError> {
    let sent_rv = scale["metadata"]["resourceVersion"].as_str().unwrap_or_default();
    if !sent_rv.is_empty() && Some(sent_rv) != old["metadata"]["resourceVersion"].as_str() {
        return Err(ApiError::conflict(&Subject { group: "apps", resource: "deployments", name: t.name }));
    }
    let Some(n) = scale["spec"]["replicas"].as_i64().filter(|n| *n >= 0) else {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            t.name,
            vec![super::error::Cause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: must be greater than or equal to 0".into(),
                field: "spec.replicas".into(),
            }],
        ));
    };
    let mut d = old.clone();
    d["spec"]["replicas"] = json!(n);
    let main = Target { info: t.info, namespace: t.namespace, name: t.name, subresource: "" };
    let written = objects::update(inner, &main, d, &WriteOpts { via_scale: true, ..opts.clone() })?;
    Ok(Written { object: scale_of(&written.object), ..written })
}
