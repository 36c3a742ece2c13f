//! The benchmark's policy and scenario list.

use crate::world::{Common, Fault, Path, Scenario, Shape};
use canaryd::policy::{parse_policy, Policy};

/// A typical policy: 10% → 30% → 60% with 5 min bake at 99% confidence, success-rate tolerance
/// 1 pp, p99 latency tolerance 20%; everything else default (minRequests 50, inconclusive →
/// extend 3× then hold). No guardrails: the α stays on the two comparative checks. The
/// interval is the look cadence: every scrape on the raw path (what `interval: auto` will do),
/// 1 m on today's `increase()` path.
pub fn policy(interval_secs: i64) -> Policy {
    let yaml = format!(
        "apiVersion: canaryd.io/v1alpha1
kind: RolloutPolicy
metadata: {{name: bench, namespace: default}}
spec:
  target: {{virtualService: svc, stable: {{subset: v1}}, canary: {{subset: v2}}}}
  steps: [{{weight: 10, bake: 5m}}, {{weight: 30, bake: 5m}}, {{weight: 60, bake: 5m}}]
  analysis:
    interval: {interval_secs}s
    confidence: 0.99
    successRate: {{tolerance: {TOL_PP}}}
    latency: {{quantile: 0.99, tolerance: {LAT_TOL_PCT}}}
"
    );
    parse_policy("bench.yaml", &yaml).unwrap_or_else(|e| panic!("benchmark policy: {e}"))
}

/// Success-rate tolerance (pp) and latency tolerance (%) of the policy.
pub const TOL_PP: f64 = 1.0;
pub const LAT_TOL_PCT: f64 = 20.0;

/// The plan as `(weight %, bake seconds)`, for the Flagger-style rule and the oracle.
pub fn plan(p: &Policy) -> Vec<(u32, i64)> {
    p.plan().iter().map(|s| (s.traffic.canary_weight, s.bake.as_secs_i64())).collect()
}

/// Route rates in req/s (the whole route; the canary gets its weight's share).
pub const RATES: [f64; 5] = [2.0, 5.0, 20.0, 200.0, 2000.0];
/// The rates for the new cells.
pub const RATES4: [f64; 4] = [2.0, 20.0, 200.0, 2000.0];
/// Prometheus-shape cells: 2 req/s rollouts are held for hours and cost most of the runtime;
/// the measurements of these shapes are at ≥ 20 req/s.
pub const RATES3: [f64; 3] = [20.0, 200.0, 2000.0];

/// What a scenario is for, so the TARGETS block can pick its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Canary identical to the baseline on exact data: false aborts and promotion time.
    Healthy,
    /// Healthy, worse by at most the tolerance: false aborts.
    WithinTol,
    /// Healthy on Prometheus-shaped data through the raw-sample path: false aborts.
    RealData,
    /// Healthy on today's `increase()` path: reported for comparison, no target.
    Compare,
    /// 2× the tolerance: detection ≥ 99% at ≥ 20 req/s.
    TwoTol,
    /// +50 pp: detection at 2 req/s; time to abort and failed requests at ≥ 20 req/s.
    Fifty,
    /// Faulty, reported without a target.
    Info,
}

pub struct Entry {
    pub role: Role,
    pub rates: &'static [f64],
    pub scenario: Scenario,
}

fn pct(p: f64) -> String {
    format!("{}%", p * 100.0)
}

pub fn all() -> Vec<Entry> {
    let e = |role: Role, rates: &'static [f64], sc| Entry { role, rates, scenario: sc };
    let healthy = |name: &str, base: f64, fault, common| Scenario::new(name, true, base, 0, fault, common);
    let bad =
        |name: &str, base: f64, onset, fault| Scenario::new(name, false, base, onset, fault, Common::Steady);
    let mut v = vec![
        e(Role::Healthy, &RATES, healthy("healthy A/A, 0.1% errors", 0.001, Fault::None, Common::Steady)),
        e(Role::Healthy, &RATES, healthy("healthy A/A, 1% errors", 0.01, Fault::None, Common::Steady)),
        e(
            Role::Healthy,
            &RATES,
            healthy(
                "healthy, common-mode blips (both sides +20 pp errors and 3x latency for 1 min at 2m30s and 7m30s)",
                0.001,
                Fault::None,
                Common::Blips { starts: vec![150, 450], secs: 60, err_pp: 20.0, lat_factor: 3.0 },
            ),
        ),
        e(
            Role::Healthy,
            &RATES,
            healthy(
                "healthy, drift (both sides 0.1% -> 3% errors and 1x -> 2x latency over 60 min)",
                0.001,
                Fault::None,
                Common::Drift { secs: 3600, err_to: 0.03, lat_to: 2.0 },
            ),
        ),
    ];
    // Within tolerance: the contract says these are healthy (P(abort) ≤ 1 − confidence).
    for base in [0.0, 0.001, 0.01, 0.05] {
        for f in [0.5, 0.9] {
            let name = format!("within tol: errors {} -> +{f}·tol (+{} pp)", pct(base), f * TOL_PP);
            v.push(e(
                Role::WithinTol,
                &RATES4,
                healthy(&name, base, Fault::ErrorPp(f * TOL_PP), Common::Steady),
            ));
        }
    }
    v.push(e(
        Role::WithinTol,
        &RATES,
        healthy(
            "at tol: errors 0.1% -> 1.1% (+1 pp, the boundary)",
            0.001,
            Fault::ErrorPp(TOL_PP),
            Common::Steady,
        ),
    ));
    let half = 1.0 + 0.5 * LAT_TOL_PCT / 100.0;
    v.push(e(
        Role::WithinTol,
        &RATES4,
        healthy(
            &format!("within tol: latency x{half} on every quantile (+0.5·tol)"),
            0.001,
            Fault::LatencyScale(half),
            Common::Steady,
        ),
    ));
    v.push(e(
        Role::WithinTol,
        &RATES,
        healthy(
            "at tol: latency x1.2 on every quantile (the boundary)",
            0.001,
            Fault::LatencyScale(1.2),
            Common::Steady,
        ),
    ));
    // Lognormal(45 ms, σ 0.7) has p99 = 45·e^(0.7·2.326) ≈ 230 ms; median 67.5 ms with the same
    // p99 needs σ = ln(230/67.5)/2.326 ≈ 0.527.
    v.push(e(
        Role::WithinTol,
        &RATES4,
        healthy(
            "within tol: median x1.5, p99 unchanged (lognormal 67.5 ms, σ 0.527)",
            0.001,
            Fault::LatencyShape(67.5, 0.5266),
            Common::Steady,
        ),
    ));
    // Prometheus-shaped counts: lazy 5xx series and a canary restart at 7m30s (mid step 2).
    for path in [Path::Raw, Path::Increase] {
        for scrape in [15, 30, 60] {
            for base in [0.0, 0.01] {
                let shape = Shape { scrape, path, lazy: true, reset_at: Some(450), ..Shape::default() };
                let how = match path {
                    Path::Raw => format!("raw samples, look every {scrape}s"),
                    Path::Increase => {
                        format!("increase() over {}s, look every 1m", crate::prom::increase_window(scrape))
                    }
                };
                let name = format!(
                    "prom {scrape}s scrape, {how}, lazy 5xx, canary reset at 7m30s: errors {} -> +0.9 pp",
                    pct(base)
                );
                let role = if path == Path::Raw { Role::RealData } else { Role::Compare };
                let sc = healthy(&name, base, Fault::ErrorPp(0.9 * TOL_PP), Common::Steady).with_shape(shape);
                v.push(e(role, &RATES3, sc));
            }
        }
    }
    // Retry clusters: every failing request is 3 failed attempts at the destination, both sides.
    // Every caller has a sidecar (canaryd counts at the caller: retries folded), or none does
    // (only destination counts exist: the documented limit, for comparison).
    for (coverage, role, how) in [
        (1.0, Role::RealData, "callers in the mesh"),
        (0.0, Role::Compare, "no caller sidecars, destination counts only"),
    ] {
        let clusters = Shape { clusters: 3, source_coverage: coverage, ..Shape::default() };
        for (what, base, fault) in [
            ("A/A 0.1% errors", 0.001, Fault::None),
            ("A/A 1% errors", 0.01, Fault::None),
            ("errors 1% -> +0.9 pp", 0.01, Fault::ErrorPp(0.9 * TOL_PP)),
        ] {
            let name = format!("retry clusters of 3 ({how}), {what}");
            v.push(e(role, &RATES4, healthy(&name, base, fault, Common::Steady).with_shape(clusters)));
        }
    }
    // Faulty: today's list, with roles under the v3 contract.
    v.extend([
        e(
            Role::TwoTol,
            &RATES,
            bad(
                "+2 pp errors from the start (0.1% -> 2.1%; 2x the tolerance)",
                0.001,
                0,
                Fault::ErrorPp(2.0),
            ),
        ),
        e(
            Role::TwoTol,
            &RATES4,
            bad(
                "+2 pp errors from the start over 1% (1% -> 3%; 2x the tolerance)",
                0.01,
                0,
                Fault::ErrorPp(2.0),
            ),
        ),
        e(
            Role::Info,
            &RATES,
            bad("+5 pp errors from the start (0.1% -> 5.1%)", 0.001, 0, Fault::ErrorPp(5.0)),
        ),
        e(
            Role::Fifty,
            &RATES,
            bad("+50 pp errors from the start (0.1% -> 50.1%)", 0.001, 0, Fault::ErrorPp(50.0)),
        ),
        e(
            Role::Info,
            &RATES,
            bad("+5 pp errors starting mid-step 1 (at 2m30s, 10% weight)", 0.001, 150, Fault::ErrorPp(5.0)),
        ),
        e(
            Role::Info,
            &RATES,
            bad(
                "+5 pp errors starting mid-step 2 (at 7m30s, after a passed step)",
                0.001,
                450,
                Fault::ErrorPp(5.0),
            ),
        ),
        e(
            Role::TwoTol,
            &RATES4,
            bad(
                "+2 pp errors starting at 7m30s (after a passed step; 2x tol)",
                0.001,
                450,
                Fault::ErrorPp(2.0),
            ),
        ),
        e(
            Role::Fifty,
            &RATES4,
            bad("+50 pp errors starting at 7m30s (after a passed step)", 0.001, 450, Fault::ErrorPp(50.0)),
        ),
        e(
            Role::TwoTol,
            &RATES4,
            bad("latency x1.4 on every quantile (p99 2x the tolerance)", 0.001, 0, Fault::LatencyScale(1.4)),
        ),
        e(
            Role::Info,
            &RATES,
            bad(
                "latency heavy tail (2% of requests on a slow path, lognormal median 400 ms)",
                0.001,
                0,
                Fault::LatencyTail(0.02, 400.0, 0.6),
            ),
        ),
        e(
            Role::Info,
            &RATES3,
            bad(
                "+50 pp errors from the start, 15s scrape read by increase() every 1m (today's path)",
                0.001,
                0,
                Fault::ErrorPp(50.0),
            )
            .with_shape(Shape { path: Path::Increase, lazy: true, ..Shape::default() }),
        ),
    ]);
    v
}
