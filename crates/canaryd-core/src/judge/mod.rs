//! The judge: pure statistics over observations. No IO, no clock, no randomness.
//!
//! # Method
//! Every interval the engine hands the judge one [`Observation`] (counts and latency histograms
//! per side, same window) and the [`JudgeState`] accumulated so far; the judge returns the new
//! state and an [`IntervalVerdict`] whose checks carry their evidence.
//!
//! **The tolerance is the smallest regression that must be caught.** Each comparative check
//! tests H0 "the canary is no worse than the baseline" against H1 "worse by the tolerance"
//! sequentially, with likelihood ratios that stay valid however often they are looked at
//! ([`sprt`]): Fail when the evidence for H1 over H0 reaches `1/α`; Pass at the end of a step
//! when the evidence for H0 over H1 reaches `1/β` (β = α) and the step saw `minRequests`;
//! Inconclusive otherwise — too little traffic never passes.
//!
//! * **Success rate.** Each interval is a 2×2 table. Conditioning on its total of errors makes
//!   the unknown baseline rate drop out: under H0 each error is the canary's with probability at
//!   most its share of the requests π, so the binomial likelihood ratio of a higher share is a
//!   supermartingale whatever the baseline does (drift, common-mode blips: both sides in the
//!   same window). The alternative "worse by tol" is the relative risk `(p̂+tol)/p̂`, `p̂` the
//!   baseline rate from earlier intervals; larger multiples of it (×4 … ×256) catch gross faults
//!   at the first interval with data (6 errors of 12 canary requests against a 0.1% baseline
//!   abort at once). The likelihoods are exact binomials: no normal approximation at small
//!   counts. Every informative interval is also a start point of its own product (CUSUM-like,
//!   O(1) state), so a fault that starts mid-step is not diluted by the healthy data before it.
//!   Pass: "no worse" over "worse by exactly tol", conditional, or the canary's own error rate
//!   shown below tol (a one-sample SPRT: when errors are rare this is the faster route), and the
//!   current step's data does not lean towards H1 by more than half the bar.
//! * **Latency** ([`latency`]): the same evidence per histogram bucket bound ("bad" = slower
//!   than the bound; H1 = every request `1 + tol` times slower), at the baseline's quantile
//!   bound, the one below and the two above; Pass needs every tested bound.
//! * **Guardrails** (`maxErrorRate`, `maxMs`) test the canary alone, per step, with the
//!   normal-mixture confidence sequences of [`stats`].
//! * **Custom checks** are deterministic threshold / compare rules on PromQL values.
//! * The reported CI for Δ is an always-valid normal-mixture confidence sequence over the
//!   rollout's steps (strata; [`stats::cs_radius`]) — for the summary; the decision is the
//!   likelihood ratio, reported as the statistic (log LR).
//!
//! # α accounting (false aborts of a canary no worse than its baseline ≤ 1 − confidence)
//! α = 1 − `confidence` is split by Bonferroni over the enabled, non-dry-run statistical checks
//! (success-rate, its guardrail when `maxErrorRate` is set, latency, its guardrail when `maxMs`
//! is set): α_c = α / k. Within a check:
//! * success-rate: start point `s` (the s-th interval with at least one error, counted over the
//!   rollout) gets α_c/(s(s+1)) (Σ = 1), split equally over the 5 alternatives of the grid.
//!   Ville's inequality bounds each product, the union bound the rest: P(ever fail | H0) ≤ α_c
//!   over all looks and steps, exact (no asymptotics); the hypergeometric null is dominated by
//!   the binomial one.
//! * latency: α_c/4 per tested bound, then as the success rate (3 alternatives). Which bounds
//!   are tested follows the baseline's quantile bucket (data-dependent; the pooled histogram
//!   chooses them, which the canary's share is conditioned on).
//! * guardrails: α_c · 1/(j(j+1)) per step j.
//!
//! Passing costs no false-abort budget. Custom checks have no sample size and are outside the
//! budget: they fail exactly when their rule is broken. `sim_tests` measures the false-abort
//! rate on canaries equal to and better than their baseline, and that a canary worse by exactly
//! the tolerance is caught.

mod custom;
mod hist;
mod latency;
pub mod sprt;
pub mod stats;
mod success;
pub mod verdict;

#[cfg(test)]
mod behaviour_tests;
#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod testkit;

pub use latency::{LATENCY, LATENCY_GUARDRAIL};
pub use success::{SUCCESS_RATE, SUCCESS_RATE_GUARDRAIL};
pub use verdict::{CheckResult, Evidence, IntervalVerdict, Verdict};

use crate::observation::{Histogram, Observation, SideObservation};
use crate::policy::Analysis;
use serde::{Deserialize, Serialize};

/// Request and error counts of both sides over some span (a step, or the steps before it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Canary requests.
    pub canary_requests: u64,
    /// Canary errors (never more than `canary_requests`).
    pub canary_errors: u64,
    /// Baseline requests.
    pub baseline_requests: u64,
    /// Baseline errors (never more than `baseline_requests`).
    pub baseline_errors: u64,
}

impl Counts {
    /// Adds one window's sides (saturating; errors clamped to requests).
    pub fn add(&mut self, canary: &SideObservation, baseline: &SideObservation) {
        self.canary_requests = self.canary_requests.saturating_add(canary.requests);
        self.canary_errors = self.canary_errors.saturating_add(canary.errors.min(canary.requests));
        self.baseline_requests = self.baseline_requests.saturating_add(baseline.requests);
        self.baseline_errors = self.baseline_errors.saturating_add(baseline.errors.min(baseline.requests));
    }

    /// The sum of two spans (saturating).
    pub fn plus(&self, o: &Counts) -> Counts {
        Counts {
            canary_requests: self.canary_requests.saturating_add(o.canary_requests),
            canary_errors: self.canary_errors.saturating_add(o.canary_errors),
            baseline_requests: self.baseline_requests.saturating_add(o.baseline_requests),
            baseline_errors: self.baseline_errors.saturating_add(o.baseline_errors),
        }
    }

    /// `(canary errors, canary requests, baseline errors, baseline requests)` as floats.
    pub(crate) fn as_f64(&self) -> (f64, f64, f64, f64) {
        (
            self.canary_errors.min(self.canary_requests) as f64,
            self.canary_requests as f64,
            self.baseline_errors.min(self.baseline_requests) as f64,
            self.baseline_requests as f64,
        )
    }
}

/// Accumulated evidence of one rollout, serialisable (persisted inside the engine state):
/// counts of the current step, the information-weighted success-rate evidence of the steps
/// before it, and the current step's latency histograms. Fixed size; no per-interval data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JudgeState {
    /// 1-based index of the current step (0 before the first [`JudgeState::start_step`]).
    pub step: u32,
    /// Intervals judged in the current step.
    pub looks: u32,
    /// Counts of the current step.
    pub step_counts: Counts,
    /// Counts of the earlier steps of this rollout (reporting only).
    pub prior_counts: Counts,
    /// Σ 1/V over earlier steps: information about Δ, in 1/fraction².
    pub prior_info: f64,
    /// Σ Δ̂/V over earlier steps (Δ̂ a fraction), in 1/fraction.
    pub prior_score: f64,
    /// Canary latency histogram of the current step (milliseconds bounds).
    #[serde(skip_serializing_if = "is_empty_hist")]
    pub canary_latency: Histogram,
    /// Baseline latency histogram of the current step.
    #[serde(skip_serializing_if = "is_empty_hist")]
    pub baseline_latency: Histogram,
    /// Sequential success-rate evidence of the rollout (conditional likelihood ratios).
    pub success: sprt::Seq,
    /// Log likelihood ratio of "canary error rate below the tolerance" over "at the tolerance",
    /// canary alone, whole rollout (a second way to pass when errors are rare).
    pub success_canary_pass: f64,
    /// Sequential latency evidence per bucket bound near the tested quantile.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_bounds: Vec<latency::BoundSeq>,
}

fn is_empty_hist(h: &Histogram) -> bool {
    h.bounds_ms.is_empty() && h.counts.is_empty() && h.overflow == 0
}

impl JudgeState {
    /// Called by the engine when a new step starts: folds the finished step's success-rate
    /// evidence into the rollout-wide sums and starts empty step counts and histograms.
    pub fn start_step(&mut self) {
        if let Some((d, v)) = success::stratum_effect(&self.step_counts) {
            let (info, score) = (self.prior_info + 1.0 / v, self.prior_score + d / v);
            if info.is_finite() && score.is_finite() {
                self.prior_info = info;
                self.prior_score = score;
            }
        }
        self.prior_counts = self.prior_counts.plus(&self.step_counts);
        self.step_counts = Counts::default();
        self.canary_latency = Histogram::default();
        self.baseline_latency = Histogram::default();
        self.looks = 0;
        self.step = self.step.saturating_add(1);
        self.success.start_step();
        for b in &mut self.latency_bounds {
            b.seq.start_step();
        }
    }
}

/// α = 1 − confidence, made safe (confidence outside (0.5, 1) or NaN falls back to 0.99).
fn total_alpha(analysis: &Analysis) -> f64 {
    let c = analysis.confidence;
    if c.is_finite() && c > 0.5 && c < 1.0 {
        (1.0 - c).max(1e-12)
    } else {
        0.01
    }
}

/// α of each statistical check: the total split over the enabled, non-dry-run ones.
fn check_alpha(analysis: &Analysis) -> f64 {
    let sr = &analysis.success_rate;
    let lat = &analysis.latency;
    let counted = [
        sr.enabled && !sr.dry_run,
        sr.enabled && !sr.dry_run && sr.max_error_rate.is_some(),
        lat.enabled && !lat.dry_run,
        lat.enabled && !lat.dry_run && lat.max_ms.is_some(),
    ];
    let k = counted.iter().filter(|c| **c).count().max(1);
    total_alpha(analysis) / k as f64
}

/// Judges one analysis interval. `end_of_step` is true when the step's bake time is over (a
/// Pass is only possible then). Returns the state including this interval and the verdict.
pub fn judge(
    analysis: &Analysis,
    state: &JudgeState,
    obs: &Observation,
    end_of_step: bool,
) -> (JudgeState, IntervalVerdict) {
    let mut next = state.clone();
    if next.step == 0 {
        next.step = 1;
    }
    next.looks = next.looks.saturating_add(1);
    next.step_counts.add(&obs.canary, &obs.baseline);
    if let Some(h) = &obs.canary.latency {
        hist::accumulate(&mut next.canary_latency, h);
    }
    if let Some(h) = &obs.baseline.latency {
        hist::accumulate(&mut next.baseline_latency, h);
    }
    if analysis.success_rate.enabled {
        let tol = analysis.success_rate.tolerance / 100.0;
        success::observe(&mut next, state, &obs.canary, &obs.baseline, tol);
    }
    if analysis.latency.enabled {
        latency::observe(&mut next, &analysis.latency, obs);
    }
    let alpha = check_alpha(analysis);
    let min = analysis.min_requests;
    let mut checks = Vec::new();
    let sr = &analysis.success_rate;
    if sr.enabled {
        checks.push(success::success_rate(sr, alpha, &next, min, end_of_step));
        if let Some(max) = sr.max_error_rate {
            checks.push(success::guardrail(sr, max, alpha, &next, min, end_of_step));
        }
    }
    let lat = &analysis.latency;
    if lat.enabled {
        let missing = missing_histogram(obs);
        let error = |name: &str| CheckResult {
            check: name.to_string(),
            verdict: Verdict::Error,
            evidence: Evidence { summary: missing.clone().unwrap_or_default(), ..Evidence::default() },
            dry_run: lat.dry_run,
        };
        if missing.is_some() {
            checks.push(error(LATENCY));
        } else {
            checks.push(latency::latency(lat, alpha, &next, min, end_of_step));
        }
        if let Some(max) = lat.max_ms {
            if missing.is_some() {
                checks.push(error(LATENCY_GUARDRAIL));
            } else {
                checks.push(latency::guardrail(lat, max, alpha, &next, min, end_of_step));
            }
        }
    }
    for c in &analysis.custom {
        checks.push(custom::custom(c, &obs.custom));
    }
    (next, IntervalVerdict::from_checks(checks, obs.end))
}

/// A side that served requests but came without a histogram: the evidence is missing.
fn missing_histogram(obs: &Observation) -> Option<String> {
    let side = |s: &SideObservation| s.requests > 0 && s.latency.is_none();
    match (side(&obs.canary), side(&obs.baseline)) {
        (true, true) => Some("no latency histogram for either side".into()),
        (true, false) => Some("no latency histogram for the canary".into()),
        (false, true) => Some("no latency histogram for the baseline".into()),
        (false, false) => None,
    }
}

/// Canary requests a step needs for a conclusive Pass of `success-rate` at the policy's
/// tolerance and confidence, assuming a healthy canary (same error rate as the baseline),
/// the given baseline error rate (fraction, 0–1) and the canary's share of the traffic
/// (fraction, 0–1; the baseline gets the rest). Never less than `minRequests`;
/// `u64::MAX` when no amount of traffic suffices (no baseline or no canary traffic).
pub fn requests_for_verdict(analysis: &Analysis, baseline_error_rate: f64, canary_share: f64) -> u64 {
    let min = analysis.min_requests;
    let sr = &analysis.success_rate;
    if !sr.enabled {
        return min;
    }
    if !(canary_share.is_finite() && canary_share > 0.0 && canary_share < 1.0) {
        return u64::MAX;
    }
    let p = if baseline_error_rate.is_finite() { baseline_error_rate.clamp(0.0, 1.0) } else { 0.0 };
    let tol = sr.tolerance / 100.0;
    if !(tol.is_finite() && tol > 0.0 && tol < 1.0) {
        return u64::MAX;
    }
    // Expected pass evidence per canary request of a healthy canary, by the two routes of
    // `success::success_rate`, averaged as e-values (bar ln(1/β), β = the check's α):
    // * conditional: p/s bad requests per canary request, each worth KL(π ‖ θ(ρ_tol));
    // * canary alone: KL of Bernoulli(p) between the alternatives p0 and tol.
    let s = canary_share;
    let conditional = if p > 0.0 {
        let th = sprt::share_at(s, (p + tol) / p);
        p / s * (s * (s / th).ln() + (1.0 - s) * ((1.0 - s) / (1.0 - th)).ln())
    } else {
        0.0
    };
    let p0 = p.clamp(tol / 20.0, tol / 2.0);
    let alone = p * (p0 / tol).ln() + (1.0 - p) * ((1.0 - p0) / (1.0 - tol)).ln();
    if !(conditional.is_finite() && alone.is_finite()) || (conditional <= 0.0 && alone <= 0.0) {
        return u64::MAX;
    }
    let bar = (1.0 / check_alpha(analysis)).ln();
    let passes = |n: u64| success::pass_evidence(n as f64 * conditional, n as f64 * alone) >= bar;
    // Doubling then bisection; the expected evidence grows with n.
    let mut hi: u64 = 1;
    while !passes(hi) {
        if hi >= 1 << 50 {
            return u64::MAX;
        }
        hi *= 2;
    }
    let mut lo = hi / 2;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if passes(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let n = hi;
    n.max(min)
}
