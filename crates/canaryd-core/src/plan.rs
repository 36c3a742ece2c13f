//! The step plan: a policy's steps resolved into what each one routes and how long it bakes.
//! Pure; used by the engine, `canaryd plan`, backtests and the demo.

use crate::policy::{Duration, HeaderMatch, RolloutPolicySpec};
use serde::{Deserialize, Serialize};

/// What the route should look like: the canary's share of the main route, and the optional
/// managed header-match route (a copy of the policy route, placed right before it) and mirror.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// Percent of the policy route's traffic sent to the canary (the stable side gets the rest).
    pub canary_weight: u32,
    /// Requests the policy route would take that also match this header go to the canary (a
    /// copy of the policy route with the header ANDed into its matches, right before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_match: Option<HeaderMatch>,
    /// Percent of the route's requests mirrored to the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<u32>,
}

impl Traffic {
    /// All traffic on stable, no managed routes: the state before a rollout and after an abort.
    pub fn stable_only() -> Self {
        Traffic::default()
    }

    /// All traffic on the canary (shift promotion).
    pub fn canary_only() -> Self {
        Traffic { canary_weight: 100, ..Traffic::default() }
    }

    /// Short human form: `10%`, `header end-user=jason`, `mirror 50%`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{}%", self.canary_weight)];
        if let Some(h) = &self.header_match {
            let cond = h
                .exact
                .as_ref()
                .map(|v| format!("={v}"))
                .or_else(|| h.prefix.as_ref().map(|v| format!("^={v}")))
                .or_else(|| h.regex.as_ref().map(|v| format!("~={v}")))
                .unwrap_or_default();
            parts.push(format!("header {}{cond}", h.header));
        }
        if let Some(m) = self.mirror_percent {
            parts.push(format!("mirror {m}%"));
        }
        parts.join(" + ")
    }
}

/// One resolved step.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanStep {
    /// 0-based position in the plan.
    pub index: usize,
    /// Routing while the step runs.
    pub traffic: Traffic,
    /// Minimum duration.
    pub bake: Duration,
    /// Wait for `canaryd resume` after the step passes.
    pub pause: bool,
}

impl PlanStep {
    /// Share of the route's requests the canary sees in this step (0.0–1.0); header-match
    /// steps are treated as an unknown small share (1%), mirror steps as their mirror share.
    pub fn canary_share(&self) -> f64 {
        if self.traffic.canary_weight > 0 {
            f64::from(self.traffic.canary_weight) / 100.0
        } else if let Some(m) = self.traffic.mirror_percent {
            f64::from(m) / 100.0
        } else {
            0.01
        }
    }
}

/// Resolves a validated spec's steps; [`Policy::plan`] holds the result.
pub(crate) fn compile(spec: &RolloutPolicySpec) -> Vec<PlanStep> {
    spec.steps
        .iter()
        .enumerate()
        .map(|(index, s)| {
            // Header-match and mirror steps keep the main route's weight where the previous
            // weight step left it, so a plan can mirror at 10% without dropping to 0.
            let carried = spec.steps[..index].iter().rev().find_map(|p| p.weight).unwrap_or(0);
            let traffic = Traffic {
                canary_weight: s.weight.unwrap_or(carried),
                header_match: s.header_match.clone(),
                mirror_percent: s.mirror.as_ref().map(|m| m.percent),
            };
            PlanStep { index, traffic, bake: s.bake.unwrap_or(spec.analysis.default_bake), pause: s.pause }
        })
        .collect()
}

/// Sum of the bake times: the shortest possible rollout.
pub fn total_bake(steps: &[PlanStep]) -> Duration {
    Duration::from_secs(steps.iter().map(|s| s.bake.as_secs()).sum())
}
