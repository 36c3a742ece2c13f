//! The status block of a RolloutPolicy resource: what `kubectl get rolloutpolicies` shows.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a RolloutPolicy, written by the daemon.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPolicyStatus {
    /// Rollout phase: Idle, Pending, Progressing, Paused, Promoting, Promoted, Aborted, Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Current step as `n/total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Canary weight currently written, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<u32>,
    /// Last interval verdict with its decisive numbers, e.g. `fail: success-rate +4.9 pp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<String>,
    /// Canary revision (pod template hash) the rollout is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Standard Kubernetes-style conditions (Valid, Progressing, Promoted, Aborted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The policy generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A status condition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    /// RFC 3339 time of the last change.
    pub last_transition_time: String,
}
