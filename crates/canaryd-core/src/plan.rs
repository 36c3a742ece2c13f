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
    /// Canary requests per request on the route: its weight, plus the mirrored copies (Istio
    /// mirrors a percentage of all the route's requests); a header-only step is taken as an
    /// unknown small share (1%).
    pub fn canary_rate(&self) -> f64 {
        let live = f64::from(self.traffic.canary_weight.min(100)) / 100.0;
        let mirrored = self.traffic.mirror_percent.map_or(0.0, |m| f64::from(m.min(100)) / 100.0);
        if live == 0.0 && mirrored == 0.0 {
            0.01
        } else {
            live + mirrored
        }
    }

    /// The canary's share of the requests the judge compares (canary and baseline together):
    /// with mirroring the baseline still serves its whole live share, so a 100% mirror step
    /// judges as an even split, not as a canary-only step.
    pub fn canary_share(&self) -> f64 {
        let canary = self.canary_rate();
        let baseline = 1.0 - f64::from(self.traffic.canary_weight.min(100)) / 100.0;
        canary / (canary + baseline)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn step(weight: u32, mirror: Option<u32>, header: bool) -> PlanStep {
        let header_match = header.then(|| HeaderMatch {
            header: "end-user".into(),
            exact: Some("jason".into()),
            prefix: None,
            regex: None,
        });
        PlanStep {
            index: 0,
            traffic: Traffic { canary_weight: weight, header_match, mirror_percent: mirror },
            bake: Duration::from_secs(300),
            pause: false,
        }
    }

    #[test]
    fn mirrored_copies_count_for_the_canary_while_the_baseline_keeps_its_live_share() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(step(10, None, false).canary_share(), 0.1));
        // A 100% mirror: as many canary requests as baseline ones — an even split, not 100%.
        assert!(close(step(0, Some(100), false).canary_rate(), 1.0));
        assert!(close(step(0, Some(100), false).canary_share(), 0.5));
        assert!(close(step(10, Some(50), false).canary_share(), 0.6 / 1.5));
        assert!(close(step(0, None, true).canary_share(), 0.01 / 1.01));
    }
}
