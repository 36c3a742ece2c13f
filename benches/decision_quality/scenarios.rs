//! The benchmark's policy and scenario list.

use crate::world::{Common, Fault, Scenario};
use canaryd::policy::{parse_policy, Policy};

/// A typical policy: 10% → 30% → 60% with 5 min bake, judged every minute at 99% confidence,
/// success-rate tolerance 1 pp, p99 latency tolerance 20%; everything else default
/// (minRequests 50, inconclusive → extend 3× then hold). No guardrails: the α stays on the two
/// comparative checks.
pub const POLICY: &str = "apiVersion: canaryd.io/v1alpha1
kind: RolloutPolicy
metadata: {name: bench, namespace: default}
spec:
  target: {virtualService: svc, stable: {subset: v1}, canary: {subset: v2}}
  steps: [{weight: 10, bake: 5m}, {weight: 30, bake: 5m}, {weight: 60, bake: 5m}]
  analysis:
    interval: 1m
    confidence: 0.99
    successRate: {tolerance: 1}
    latency: {quantile: 0.99, tolerance: 20}
";

pub fn policy() -> Policy {
    parse_policy("bench.yaml", POLICY).unwrap_or_else(|e| panic!("benchmark policy: {e}"))
}

/// The plan as `(weight %, bake seconds)`, for the Flagger-style rule and the oracle.
pub fn plan(p: &Policy) -> Vec<(u32, i64)> {
    p.plan().iter().map(|s| (s.traffic.canary_weight, s.bake.as_secs_i64())).collect()
}

/// Route rates in req/s (the whole route; the canary gets its weight's share).
pub const RATES: [f64; 5] = [2.0, 5.0, 20.0, 200.0, 2000.0];

/// What a scenario is for, so the targets section can pick its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Healthy,
    /// An error regression of this many pp, present from the start.
    ErrorFromStart(u32),
    /// +5 pp starting mid-step (the from-start reference is `ErrorFromStart(5)`).
    ErrorMidStep,
    Latency,
    /// Within tolerance: reported, no target.
    Info,
}

pub struct Entry {
    pub role: Role,
    pub scenario: Scenario,
}

pub fn all() -> Vec<Entry> {
    let e = |role, sc| Entry { role, scenario: sc };
    let healthy = |name: &str, base: f64, common| Scenario::new(name, true, base, 0, Fault::None, common);
    let bad = |name: &str, onset, fault| Scenario::new(name, false, 0.001, onset, fault, Common::Steady);
    vec![
        e(Role::Healthy, healthy("healthy A/A, 0.1% errors", 0.001, Common::Steady)),
        e(Role::Healthy, healthy("healthy A/A, 1% errors", 0.01, Common::Steady)),
        e(
            Role::Healthy,
            healthy(
                "healthy, common-mode blips (both sides +20 pp errors and 3x latency for 1 min at 2m30s and 7m30s)",
                0.001,
                Common::Blips { starts: vec![150, 450], secs: 60, err_pp: 20.0, lat_factor: 3.0 },
            ),
        ),
        e(
            Role::Healthy,
            healthy(
                "healthy, drift (both sides 0.1% -> 3% errors and 1x -> 2x latency over 60 min)",
                0.001,
                Common::Drift { secs: 3600, err_to: 0.03, lat_to: 2.0 },
            ),
        ),
        e(Role::Info, bad("+0.5 pp errors from the start (0.1% -> 0.6%; within the 1 pp tolerance)", 0, Fault::ErrorPp(0.5))),
        e(Role::ErrorFromStart(1), bad("+1 pp errors from the start (0.1% -> 1.1%; exactly at the tolerance)", 0, Fault::ErrorPp(1.0))),
        e(Role::Info, bad("+2 pp errors from the start (0.1% -> 2.1%; reference: 2x the tolerance)", 0, Fault::ErrorPp(2.0))),
        e(Role::ErrorFromStart(5), bad("+5 pp errors from the start (0.1% -> 5.1%)", 0, Fault::ErrorPp(5.0))),
        e(Role::ErrorFromStart(50), bad("+50 pp errors from the start (0.1% -> 50.1%)", 0, Fault::ErrorPp(50.0))),
        e(Role::ErrorMidStep, bad("+5 pp errors starting mid-step 1 (at 2m30s, 10% weight)", 150, Fault::ErrorPp(5.0))),
        e(Role::ErrorMidStep, bad("+5 pp errors starting mid-step 2 (at 7m30s, 30% weight)", 450, Fault::ErrorPp(5.0))),
        e(
            Role::Latency,
            bad("latency +20% (every request 1.2x slower: median and p99 +20%, exactly at the tolerance)", 0, Fault::LatencyScale(1.2)),
        ),
        e(
            Role::Latency,
            bad(
                "latency heavy tail (2% of requests on a slow path, lognormal median 400 ms)",
                0,
                Fault::LatencyTail(0.02, 400.0, 0.6),
            ),
        ),
    ]
}
