//! The three deciders, each driven over the same simulated world:
//! * canaryd: the real pure engine (`engine::step`) with the real judge inside it, fed through
//!   the scenario's Prometheus data path ([`crate::prom`]);
//! * a Flagger-style rule: fixed thresholds on the canary alone, `failedChecks` threshold 5;
//! * an oracle: Wald's SPRT on the canary's requests one by one, knowing the true models.

use crate::prom::Feed;
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

    /// Counts a bucket's canary `(requests, failed requests)` as users see them.
    fn add(&mut self, idx: usize, (requests, failed): (u64, u64)) {
        if idx >= self.onset_bucket {
            self.failed += failed;
            self.canary += requests;
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

/// The run's scrape phase on the 5 s grid (seeded, the same for every decider of the run), so
/// a fault's onset falls anywhere inside a scrape interval.
pub fn phase(sc: &Scenario, seed: u64) -> i64 {
    let slots = (sc.shape.scrape / BUCKET_SECS).max(1) as u64;
    (crate::world::splitmix(seed ^ 0x5eed) % slots) as i64 * BUCKET_SECS
}

/// canaryd: `NewRevision`, then one `Observed` per look of the scenario's data path (every
/// scrape on the raw path, every minute on `increase()`), traffic at the weight the engine last
/// set. `policy` must carry the matching `analysis.interval`.
pub fn canaryd(policy: &Policy, sc: &Scenario, rate: f64, seed: u64) -> Outcome {
    let ts = |s: i64| Timestamp::from_second(T0 + s).expect("valid timestamp");
    let mut state =
        engine::step(policy, &RolloutState::default(), Input::NewRevision("v2".into()), ts(0)).state;
    let mut tally = Tally::new(sc);
    let mut feed = Feed::new(sc.shape, phase(sc, seed));
    let mut last_look = 0i64;
    for idx in 0..HORIZON_BUCKETS {
        let b = bucket(sc, rate, seed, idx, state.traffic.canary_weight);
        tally.add(idx, b.canary_true);
        let end = (idx as i64 + 1) * BUCKET_SECS;
        feed.push(end, &b.canary, &b.baseline);
        if !feed.is_look(end) {
            continue;
        }
        let (canary, baseline) = feed.look(end);
        let obs = Observation { start: T0 + last_look, end: T0 + end, canary, baseline, custom: vec![] };
        last_look = end;
        state = engine::step(policy, &state, Input::Observed(Ok(obs)), ts(end)).state;
        match state.phase {
            Phase::Aborted => return tally.done(Decision::Abort, end as f64),
            Phase::Promoted | Phase::Promoting => return tally.done(Decision::Promote, end as f64),
            _ => {}
        }
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
            tally.add(idx, b.canary_true);
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
/// Faulty canary: H0 "serves like the baseline" vs H1 "serves like the (true) canary" — error
/// flag and latency bucket both enter the likelihood ratio. Healthy canary: H0 "serves what it
/// truly serves" vs H1 "baseline error rate + 2·tolerance" (the smallest regression the
/// contract requires to be caught; errors only). It starts at the fault's onset (it knows it)
/// and sees the plan's weights (10% for the first bake, then 30%, then the last weight), which
/// is what canaryd routes until it decides. Requests inside a bucket are put in a random order
/// consistent with the bucket's counts. It sees requests as users do (retries folded).
///
/// Returns the per-request outcome and the same decision acted on only at the next scrape
/// (same scrape grid as canaryd's raw looks): the best any scrape-based judge could do — the
/// canary keeps serving until that scrape.
pub fn oracle(
    sc: &Scenario,
    rate: f64,
    seed: u64,
    plan: &[(u32, i64)],
    tolerance_pp: f64,
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
    let (scrape, phase) = (sc.shape.scrape, phase(sc, seed));
    let mut tally = Tally::new(sc);
    let mut llr = 0.0f64;
    for idx in tally.onset_bucket..HORIZON_BUCKETS {
        let t = idx as i64 * BUCKET_SECS;
        let b = bucket(sc, rate, seed, idx, weight_at(t));
        let (cm, bm) = sc.models(idx);
        let (p0, p1) = if sc.healthy {
            (cm.err, (bm.err + 2.0 * tolerance_pp / 100.0).min(1.0))
        } else {
            (bm.err, cm.err)
        };
        let lr = |a: f64, b: f64| if a == b { 0.0 } else { a.max(1e-300).ln() - b.max(1e-300).ln() };
        let (on_err, on_ok) = (lr(p1, p0), lr(1.0 - p1, 1.0 - p0));
        let mut lat = [0.0; CATS];
        if !sc.healthy {
            for (j, l) in lat.iter_mut().enumerate() {
                *l = lr(cm.probs[j], bm.probs[j]);
            }
        }
        let use_lat = lat.iter().any(|l| *l != 0.0);
        let (n, mut errs_left) = b.canary_true;
        let mut cats_left: [u64; CATS] = [0; CATS];
        if let Some(h) = &b.canary.latency {
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
            let cats: u64 = cats_left.iter().sum();
            if use_lat && cats > 0 {
                let mut r = rng.random_range(0..cats);
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
            // Act at the next scrape: the rest of this bucket, then whole buckets until it.
            tally.failed += errs_left;
            tally.canary += n - i - 1;
            let mut end = t + BUCKET_SECS;
            while (end - phase).rem_euclid(scrape) != 0 {
                let later = (end / BUCKET_SECS) as usize;
                if later >= HORIZON_BUCKETS {
                    break;
                }
                tally.add(later, bucket(sc, rate, seed, later, weight_at(end)).canary_true);
                end += BUCKET_SECS;
            }
            return (now, tally.done(decision, end as f64));
        }
    }
    let undecided = tally.done(Decision::Undecided, HORIZON_SECS as f64);
    (undecided, undecided)
}
