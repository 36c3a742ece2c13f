//! Guardrails: the canary alone against an absolute limit, whatever the baseline does (design
//! §3). `success-rate-guardrail` (`maxErrorRate`): abort when the canary's error rate is shown
//! above the limit by the one-sample betting e-process [`eprocess::one_sample_abort`] (same bet
//! grid and restarts as the success rate; exact at `p_c = limit`); pass at the end of a step
//! when the step's own mirror e-process [`eprocess::one_sample_pass`] shows it below. The
//! latency guardrail (`maxMs`, in [`super::latency`]) uses the same evidence on the share of
//! canary requests slower than a bucket bound, at level `1 − q`.

use super::cs::{self, AbortFamily};
use super::eprocess::{self, ABORT_BETS};
use super::success::{end_pp, fill_counts, SUCCESS_RATE_GUARDRAIL};
use super::JudgeState;
use super::Look;
use crate::format::{conf, pct};
use crate::judge::{CheckResult, Evidence, Verdict};
use crate::policy::SuccessRateCheck;
use serde::{Deserialize, Serialize};

/// One-sample guardrail evidence of a rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GuardrailEvidence {
    /// The limit (fraction) the levels were built for; the evidence restarts if it changes.
    pub limit: f64,
    /// Abort e-processes per level (whole rollout).
    pub abort: AbortFamily,
    /// `ln` of the pass e-process per level, current step only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pass: Vec<f64>,
}

impl GuardrailEvidence {
    /// A new step or a restart of one.
    pub fn start_step(&mut self) {
        self.pass.clear();
        self.abort.start_segment();
    }

    /// Folds one look: `x_abort` / `x_pass` bad requests of `n` (the same for error rates; the
    /// counts above two different bounds for latency), `p_hat` the canary's estimated bad rate
    /// from earlier looks (for the pass bet). `levels` must contain `limit`.
    pub fn observe(
        &mut self,
        levels: &[f64],
        limit: f64,
        segment: u32,
        (x_abort, x_pass, n): (f64, f64, f64),
        p_hat: f64,
    ) {
        if self.limit != limit {
            *self = GuardrailEvidence { limit, ..GuardrailEvidence::default() };
        }
        if n <= 0.0 {
            return;
        }
        let log_e: Vec<Vec<f64>> = levels
            .iter()
            .map(|l| ABORT_BETS.iter().map(|u| eprocess::one_sample_abort(x_abort, n, *l, *u)).collect())
            .collect();
        self.abort.update(segment, &log_e);
        let v = eprocess::one_sample_pass_bet(p_hat, limit);
        self.pass.resize(levels.len(), 0.0);
        for (p, l) in self.pass.iter_mut().zip(levels) {
            *p = eprocess::store(*p + eprocess::one_sample_pass(x_pass, n, *l, v));
        }
    }

    /// `(lower end, upper end)` of the anytime-valid interval for the canary's bad rate.
    pub fn ends(&self, levels: &[f64], alpha_abort: f64, alpha_pass: f64) -> (f64, f64) {
        let log_m = self.abort.log_means(levels.len());
        let log_p: Vec<f64> = (0..levels.len()).map(|i| self.pass.get(i).copied().unwrap_or(0.0)).collect();
        (
            cs::lower_end(levels, &log_m, (1.0 / alpha_abort).ln()),
            cs::upper_end(levels, &log_p, (1.0 / alpha_pass).ln()),
        )
    }
}

/// Levels of the error-rate guardrail: multiples of the limit in `[0, 1)`.
pub fn error_levels(limit: f64) -> Vec<f64> {
    cs::levels(limit, 0.0)
}

fn valid_limit(max: f64) -> bool {
    max.is_finite() && (0.0..1.0).contains(&max)
}

/// Folds one look into the error-rate guardrail evidence.
pub(crate) fn observe_errors(state: &mut JudgeState, past: &JudgeState, max_pct: f64, xc: f64, nc: f64) {
    let max = max_pct / 100.0;
    if !valid_limit(max) {
        return;
    }
    let before = past.prior_counts.plus(&past.step_counts);
    // One pseudo-request at half the limit: a neutral start for the pass bet.
    let p_hat = (before.canary_errors as f64 + max / 2.0) / (before.canary_requests as f64 + 1.0);
    let levels = error_levels(max);
    let segment = state.segment;
    state.error_guardrail.observe(&levels, max, segment, (xc, xc, nc), p_hat);
}

/// Judges `success-rate-guardrail`: the canary's own error rate against `maxErrorRate` (percent).
pub(crate) fn error_guardrail(cfg: &SuccessRateCheck, max_pct: f64, look: &Look) -> CheckResult {
    let Look { state, alpha_c, alpha, min_requests, end_of_step } = *look;
    let max = max_pct / 100.0;
    let step = &state.step_counts;
    let mut ev = Evidence { threshold: Some(max), ..Evidence::default() };
    fill_counts(&mut ev, step);
    ev.baseline_value = None;
    let result = |verdict, evidence| CheckResult {
        check: SUCCESS_RATE_GUARDRAIL.to_string(),
        verdict,
        evidence,
        dry_run: cfg.dry_run,
    };
    if !valid_limit(max) {
        ev.summary = format!("invalid maxErrorRate {max_pct}%");
        return result(Verdict::Error, ev);
    }
    let levels = error_levels(max);
    let (lo, hi) = state.error_guardrail.ends(&levels, alpha_c, alpha);
    let fails = lo >= max;
    // No baseline in a guardrail: the interval is on the canary's own error rate.
    let (low, high) = (end_pp(lo, 0.0, 1.0), end_pp(hi, 0.0, 1.0));
    ev.ci_low = Some(low);
    ev.ci_high = Some(high);
    ev.confidence = Some(1.0 - alpha);
    let at = levels.iter().position(|l| *l == max);
    ev.statistic = at.map(|i| state.error_guardrail.abort.log_means(levels.len())[i].max(eprocess::FLOOR));
    let head = format!(
        "canary {} errors in this step (anytime-valid {} CI {}..{})",
        pct(ev.canary_value.unwrap_or(0.0)),
        conf(1.0 - alpha),
        pct(low),
        pct(high)
    );
    let (verdict, tail) = if fails {
        (Verdict::Fail, format!("above guardrail {}", pct(max)))
    } else if step.canary_requests == 0 {
        (Verdict::Inconclusive, "no canary requests".to_string())
    } else if !end_of_step {
        (Verdict::Inconclusive, "no breach so far".to_string())
    } else if step.canary_requests < min_requests {
        (Verdict::Inconclusive, format!("too few requests (need {min_requests})"))
    } else if hi <= max {
        (Verdict::Pass, format!("below guardrail {}", pct(max)))
    } else {
        (Verdict::Inconclusive, format!("not yet shown below guardrail {}", pct(max)))
    };
    ev.summary = format!("{head}: {tail}");
    result(verdict, ev)
}
