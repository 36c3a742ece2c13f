//! The three deciders, each driven over the same simulated world:
//! * canaryd: the real pure engine (`engine::step`) with the real judge inside it;
//! * a Flagger-style rule: fixed thresholds on the canary alone, `failedChecks` threshold 5;
//! * an oracle: Wald's SPRT on the canary's requests one by one, knowing the true models.

use crate::world::{
    bucket, bucket_rng, Scenario, BUCKET_SECS, CATS, HORIZON_BUCKETS, HORIZON_SECS, ISTIO_MS,
};
use canaryd::engine::{self, Input, Phase, RolloutState};
use canaryd::observation::{Histogram, Observation, SideObservation};
use canaryd::policy::Policy;
use jiff::Timestamp;
use rand::Rng;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Abort,
    Promote,
    /// Still undecided at the horizon (held for inconclusive evidence).
    Undecided,
}

/// One run's result.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub decision: Decision,
    /// Seconds after the fault's onset (healthy: after the rollout's start).
    pub secs: f64,
    /// Failed canary requests served from the onset until the decision.
    pub failed: u64,
    /// Canary requests served from the onset until the decision.
    pub canary: u64,
}

/// Counts what the canary served since the onset.
struct Tally {
    onset_bucket: usize,
    onset_secs: f64,
    failed: u64,
    canary: u64,
}

impl Tally {
    fn new(sc: &Scenario) -> Self {
        let onset_bucket = sc.onset_bucket();
        Tally { onset_bucket, onset_secs: (onset_bucket as i64 * BUCKET_SECS) as f64, failed: 0, canary: 0 }
    }

    fn add(&mut self, idx: usize, side: &SideObservation) {
        if idx >= self.onset_bucket {
            self.failed += side.errors;
            self.canary += side.requests;
        }
    }

    fn done(&self, decision: Decision, at_secs: f64) -> Outcome {
        Outcome { decision, secs: at_secs - self.onset_secs, failed: self.failed, canary: self.canary }
    }
}

/// 2026-11-23 00:00 UTC: any fixed instant will do (no schedule in the benchmark policy).
const T0: i64 = 1_795_392_000;

fn empty_side() -> SideObservation {
    SideObservation { requests: 0, errors: 0, latency: Some(Histogram::empty(ISTIO_MS)) }
}

/// canaryd: `NewRevision`, then one `Observed` per analysis interval built from the interval's
/// 10 s buckets at the weight the engine last set.
pub fn canaryd(policy: &Policy, sc: &Scenario, rate: f64, seed: u64) -> Outcome {
    let interval = policy.spec().analysis.interval.cadence_secs(None);
    let per = (interval / BUCKET_SECS) as usize;
    let ts = |s: i64| Timestamp::from_second(T0 + s).expect("valid timestamp");
    let mut state =
        engine::step(policy, &RolloutState::default(), Input::NewRevision("v2".into()), ts(0)).state;
    let mut tally = Tally::new(sc);
    let mut k = 0usize;
    while (k + 1) * per <= HORIZON_BUCKETS {
        let weight = state.traffic.canary_weight;
        let (start, end) = ((k * per) as i64 * BUCKET_SECS, ((k + 1) * per) as i64 * BUCKET_SECS);
        let mut obs = Observation {
            start: T0 + start,
            end: T0 + end,
            canary: empty_side(),
            baseline: empty_side(),
            custom: vec![],
        };
        for idx in k * per..(k + 1) * per {
            let b = bucket(sc, rate, seed, idx, weight);
            tally.add(idx, &b.canary);
            obs.canary.add(&b.canary);
            obs.baseline.add(&b.baseline);
        }
        state = engine::step(policy, &state, Input::Observed(Ok(obs)), ts(end)).state;
        match state.phase {
            Phase::Aborted => return tally.done(Decision::Abort, end as f64),
            Phase::Promoted | Phase::Promoting => return tally.done(Decision::Promote, end as f64),
            _ => {}
        }
        k += 1;
    }
    tally.done(Decision::Undecided, HORIZON_SECS as f64)
}

/// Prometheus' `histogram_quantile`: linear interpolation inside the bucket holding the rank;
/// a rank in `+Inf` gives the last finite bound; an empty histogram gives NaN.
pub fn histogram_quantile(q: f64, h: &Histogram) -> f64 {
    let total = h.total() as f64;
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut cum = 0.0;
    for (i, (&bound, &c)) in h.bounds_ms.iter().zip(&h.counts).enumerate() {
        let next = cum + c as f64;
        if next >= rank {
            let lower = if i == 0 { 0.0 } else { h.bounds_ms[i - 1] };
            return if c == 0 { bound } else { lower + (bound - lower) * (rank - cum) / c as f64 };
        }
        cum = next;
    }
    *h.bounds_ms.last().unwrap_or(&f64::NAN)
}

/// Flagger's defaults as the design brief describes them: each interval checks the canary
/// alone (success ≥ 99%, p99 ≤ 500 ms); a failed check (no data included) adds to a cumulative
/// `failedChecks`; 5 roll back; a passing check advances to the next step weight (here the
/// same 10/30/60 as canaryd's plan, as `stepWeights`), and a pass at the last weight promotes.
/// Generous to Flagger: it rolls back in the interval of the 5th failure, not at the next tick.
pub fn flagger(sc: &Scenario, rate: f64, seed: u64, weights: &[u32], interval: i64) -> Outcome {
    let per = (interval / BUCKET_SECS) as usize;
    let mut tally = Tally::new(sc);
    let (mut step, mut failed_checks) = (0usize, 0u32);
    let mut k = 0usize;
    while (k + 1) * per <= HORIZON_BUCKETS {
        let end = ((k + 1) * per) as i64 * BUCKET_SECS;
        let mut canary = empty_side();
        for idx in k * per..(k + 1) * per {
            let b = bucket(sc, rate, seed, idx, weights[step]);
            tally.add(idx, &b.canary);
            canary.add(&b.canary);
        }
        let ok = canary.requests > 0 && {
            let success = 100.0 * (canary.requests - canary.errors) as f64 / canary.requests as f64;
            let p99 = canary.latency.as_ref().map_or(f64::NAN, |h| histogram_quantile(0.99, h));
            success >= 99.0 && p99 <= 500.0
        };
        if ok {
            if step + 1 == weights.len() {
                return tally.done(Decision::Promote, end as f64);
            }
            step += 1;
        } else {
            failed_checks += 1;
            if failed_checks >= 5 {
                return tally.done(Decision::Abort, end as f64);
            }
        }
        k += 1;
    }
    tally.done(Decision::Undecided, HORIZON_SECS as f64)
}

/// Wald's SPRT boundaries for α = β = 0.01: ln((1−β)/α) and ln(β/(1−α)).
const SPRT_UPPER: f64 = 4.59511985013459; // ln(99)
const SPRT_LOWER: f64 = -4.59511985013459;

/// The oracle: Wald's SPRT over the canary's requests in arrival order, knowing the true models.
/// H0: the canary serves like the baseline; H1: it serves like the (true) canary — error flag
/// and latency bucket both enter the likelihood ratio. For a healthy canary H1 is "baseline
/// error rate + tolerance" (the alternative any test has to rule out before promoting). It
/// starts at the fault's onset (it knows it) and sees the plan's weights (10% for the first
/// bake, then 30%, then the last weight), which is what canaryd routes until it decides.
/// Requests inside a bucket are put in a random order consistent with the bucket's counts.
///
/// Returns the per-request outcome and the same decision acted on only at the end of the
/// analysis interval in which it was reached (`interval` seconds): the best a controller that
/// looks once per interval could do — the canary keeps serving until that look.
pub fn oracle(
    sc: &Scenario,
    rate: f64,
    seed: u64,
    plan: &[(u32, i64)],
    tolerance_pp: f64,
    interval: i64,
) -> (Outcome, Outcome) {
    let weight_at = |t: i64| {
        let mut end = 0;
        for &(w, bake) in plan {
            end += bake;
            if t < end {
                return w;
            }
        }
        plan.last().map_or(0, |p| p.0)
    };
    let mut tally = Tally::new(sc);
    let mut llr = 0.0f64;
    for idx in tally.onset_bucket..HORIZON_BUCKETS {
        let t = idx as i64 * BUCKET_SECS;
        let b = bucket(sc, rate, seed, idx, weight_at(t));
        let (cm, bm) = sc.models(idx);
        let (p0, p1) =
            if sc.healthy { (bm.err, (bm.err + tolerance_pp / 100.0).min(1.0)) } else { (bm.err, cm.err) };
        let lr = |a: f64, b: f64| if a == b { 0.0 } else { a.max(1e-300).ln() - b.max(1e-300).ln() };
        let (on_err, on_ok) = (lr(p1, p0), lr(1.0 - p1, 1.0 - p0));
        let mut lat = [0.0; CATS];
        if !sc.healthy {
            for (j, l) in lat.iter_mut().enumerate() {
                *l = lr(cm.probs[j], bm.probs[j]);
            }
        }
        let use_lat = lat.iter().any(|l| *l != 0.0);
        let side = &b.canary;
        let n = side.requests;
        let mut errs_left = side.errors;
        let mut cats_left: [u64; CATS] = [0; CATS];
        if let Some(h) = &side.latency {
            cats_left[..ISTIO_MS.len()].copy_from_slice(&h.counts);
            cats_left[ISTIO_MS.len()] = h.overflow;
        }
        let mut rng = bucket_rng(seed, idx, 3);
        for i in 0..n {
            let left = n - i;
            // Sampling without replacement: the order is random, the bucket's totals are kept.
            let err = rng.random_range(0..left) < errs_left;
            if err {
                errs_left -= 1;
                tally.failed += 1;
            }
            tally.canary += 1;
            llr += if err { on_err } else { on_ok };
            if use_lat {
                let mut r = rng.random_range(0..left);
                for (j, c) in cats_left.iter_mut().enumerate() {
                    if r < *c {
                        *c -= 1;
                        llr += lat[j];
                        break;
                    }
                    r -= *c;
                }
            }
            let at = t as f64 + BUCKET_SECS as f64 * (i + 1) as f64 / n as f64;
            let decision = if llr >= SPRT_UPPER {
                Decision::Abort
            } else if llr <= SPRT_LOWER {
                Decision::Promote
            } else {
                continue;
            };
            let now = tally.done(decision, at);
            // Snap to the end of the interval: the rest of this bucket, then whole buckets.
            tally.failed += errs_left;
            tally.canary += n - i - 1;
            let per = (interval / BUCKET_SECS).max(1) as usize;
            let end_idx = (idx / per + 1) * per;
            for later in idx + 1..end_idx.min(HORIZON_BUCKETS) {
                let b = bucket(sc, rate, seed, later, weight_at(later as i64 * BUCKET_SECS));
                tally.failed += b.canary.errors;
                tally.canary += b.canary.requests;
            }
            return (now, tally.done(decision, (end_idx as i64 * BUCKET_SECS) as f64));
        }
    }
    let undecided = tally.done(Decision::Undecided, HORIZON_SECS as f64);
    (undecided, undecided)
}
