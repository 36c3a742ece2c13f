//! The success-rate checks: canary vs baseline (`success-rate`) and the absolute guardrail
//! (`success-rate-guardrail`).

use super::fmt::{conf, pct, pp, pp_ci};
use super::stats::{cs_radius, one_prop_cs, step_alpha_share, two_prop_cs, Interval};
use super::{Counts, JudgeState};
use crate::judge::{CheckResult, Evidence, Verdict};
use crate::policy::SuccessRateCheck;

/// Name of the canary-vs-baseline success-rate check.
pub const SUCCESS_RATE: &str = "success-rate";
/// Name of the absolute error-rate guardrail.
pub const SUCCESS_RATE_GUARDRAIL: &str = "success-rate-guardrail";

/// Effect `p_canary − p_baseline` and its (smoothed) variance for one stratum (a step).
/// `None` when either side served nothing: such a stratum carries no information.
pub(crate) fn stratum_effect(c: &Counts) -> Option<(f64, f64)> {
    if c.canary_requests == 0 || c.baseline_requests == 0 {
        return None;
    }
    let (cb, cn, bb, bn) = c.as_f64();
    let i = two_prop_cs(cb, cn, bb, bn, 0.5);
    (i.variance > 0.0 && i.variance.is_finite()).then_some((i.estimate, i.variance))
}

/// The rollout-wide confidence sequence: steps are strata (the canary's share changes from step
/// to step, so pooling raw counts across steps would weigh a common-mode blip differently on
/// the two sides — Simpson's paradox). Each step contributes its smoothed difference with
/// information weight 1/V; the information-weighted sum is the Gaussian score process the
/// normal mixture is a martingale for.
fn rollout_interval(state: &JudgeState, alpha: f64) -> Option<Interval> {
    let (mut info, mut score) = (state.prior_info, state.prior_score);
    if let Some((d, v)) = stratum_effect(&state.step_counts) {
        info += 1.0 / v;
        score += d / v;
    }
    if !(info > 0.0 && info.is_finite() && score.is_finite()) {
        return None;
    }
    let est = score / info;
    let v = 1.0 / info;
    let r = cs_radius(v, alpha);
    Some(Interval { estimate: est, low: (est - r).max(-1.0), high: (est + r).min(1.0), variance: v, alpha })
}

/// Judges `success-rate` on the state that already includes this interval.
pub(crate) fn success_rate(
    cfg: &SuccessRateCheck,
    alpha: f64,
    state: &JudgeState,
    min_requests: u64,
    end_of_step: bool,
) -> CheckResult {
    let tol = cfg.tolerance / 100.0;
    let mut ev = Evidence { threshold: Some(tol), ..Evidence::default() };
    let result = |verdict, evidence| CheckResult {
        check: SUCCESS_RATE.to_string(),
        verdict,
        evidence,
        dry_run: cfg.dry_run,
    };
    if !(tol.is_finite() && tol >= 0.0) {
        ev.summary = format!("invalid tolerance {} pp", cfg.tolerance);
        return result(Verdict::Error, ev);
    }
    let step = &state.step_counts;
    let total = state.prior_counts.plus(step);
    // α split (see the module doc of `judge`): half to the rollout-wide sequence, half spent
    // over steps on the sequence that restarts at each step.
    let a_rollout = alpha / 2.0;
    let a_step = alpha / 2.0 * step_alpha_share(state.step);
    let (cb, cn, bb, bn) = step.as_f64();
    let step_cs = two_prop_cs(cb, cn, bb, bn, a_step);
    let rollout_cs = rollout_interval(state, a_rollout);

    let step_fails = step.canary_requests > 0 && step.baseline_requests > 0 && step_cs.low > tol;
    let rollout_fails = rollout_cs.is_some_and(|i| i.low > tol);
    // Report the window that decides: the step's when it fails (recent data), else the
    // rollout's (more data).
    let (counts, cs, window) = match rollout_cs {
        Some(r) if !step_fails || (rollout_fails && r.low - tol >= step_cs.low - tol) => {
            (total, r, "rollout")
        }
        _ => (*step, step_cs, "step"),
    };
    fill_counts(&mut ev, &counts);
    ev.effect = Some(cs.estimate);
    ev.ci_low = Some(cs.low);
    ev.ci_high = Some(cs.high);
    ev.confidence = Some(1.0 - cs.alpha);
    ev.statistic = Some(cs.z_against(tol));
    let head = format!(
        "canary {} errors vs baseline {} ({}, {} CI {}) over the {window}",
        pct(ev.canary_value.unwrap_or(0.0)),
        pct(ev.baseline_value.unwrap_or(0.0)),
        pp(cs.estimate),
        conf(1.0 - cs.alpha),
        pp_ci(cs.low, cs.high),
    );
    if step_fails || rollout_fails {
        ev.summary = format!("{head} exceeds tolerance {:.2} pp", tol * 100.0);
        return result(Verdict::Fail, ev);
    }
    if state.prior_counts.canary_requests == 0 && step.canary_requests == 0 {
        ev.summary = "no canary requests yet".to_string();
        return result(Verdict::Inconclusive, ev);
    }
    if !end_of_step {
        ev.summary = format!("{head}; no failure so far");
        return result(Verdict::Inconclusive, ev);
    }
    if step.canary_requests < min_requests {
        ev.summary = format!(
            "{head}; only {} canary requests in this step (need {min_requests})",
            step.canary_requests
        );
        return result(Verdict::Inconclusive, ev);
    }
    // Dilution guard: rollout-wide evidence from earlier healthy steps must not carry a step
    // whose own data points past the tolerance.
    let step_estimate = step_cs.estimate;
    let passes = rollout_cs.is_some_and(|r| r.high < tol) && step_estimate < tol;
    if passes {
        ev.summary = format!("{head} within tolerance {:.2} pp", tol * 100.0);
        result(Verdict::Pass, ev)
    } else {
        ev.summary = format!("{head}: not yet shown within tolerance {:.2} pp", tol * 100.0);
        result(Verdict::Inconclusive, ev)
    }
}

fn fill_counts(ev: &mut Evidence, c: &Counts) {
    ev.canary_requests = c.canary_requests;
    ev.baseline_requests = c.baseline_requests;
    ev.canary_bad = c.canary_errors.min(c.canary_requests);
    ev.baseline_bad = c.baseline_errors.min(c.baseline_requests);
    let rate = |bad: u64, n: u64| if n > 0 { bad as f64 / n as f64 } else { 0.0 };
    ev.canary_value = Some(rate(ev.canary_bad, ev.canary_requests));
    ev.baseline_value = Some(rate(ev.baseline_bad, ev.baseline_requests));
}

/// Judges `success-rate-guardrail`: the canary's own error rate against `maxErrorRate`
/// (percent), whatever the baseline does. Step data only; the failing test spends the check's
/// α over steps like the step sequence of `success-rate`.
pub(crate) fn guardrail(
    cfg: &SuccessRateCheck,
    max_pct: f64,
    alpha: f64,
    state: &JudgeState,
    min_requests: u64,
    end_of_step: bool,
) -> CheckResult {
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
    if !(max.is_finite() && max >= 0.0) {
        ev.summary = format!("invalid maxErrorRate {max_pct}%");
        return result(Verdict::Error, ev);
    }
    let (cb, cn, _, _) = step.as_f64();
    let fail_cs = one_prop_cs(cb, cn, alpha * step_alpha_share(state.step));
    let pass_cs = one_prop_cs(cb, cn, alpha);
    let fails = step.canary_requests > 0 && fail_cs.low > max;
    let cs = if fails { fail_cs } else { pass_cs };
    // No baseline in a guardrail: the interval is on the canary's own error rate.
    ev.effect = None;
    ev.ci_low = Some(cs.low);
    ev.ci_high = Some(cs.high);
    ev.confidence = Some(1.0 - cs.alpha);
    ev.statistic = Some(cs.z_against(max));
    let head = format!(
        "canary {} errors ({} CI {}..{}) in this step",
        pct(cs.estimate),
        conf(1.0 - cs.alpha),
        pct(cs.low),
        pct(cs.high)
    );
    let (verdict, tail) = if fails {
        (Verdict::Fail, format!("above guardrail {}", pct(max)))
    } else if step.canary_requests == 0 {
        (Verdict::Inconclusive, "no canary requests".to_string())
    } else if !end_of_step {
        (Verdict::Inconclusive, "no breach so far".to_string())
    } else if step.canary_requests < min_requests {
        (Verdict::Inconclusive, format!("too few requests (need {min_requests})"))
    } else if cs.high < max {
        (Verdict::Pass, format!("below guardrail {}", pct(max)))
    } else {
        (Verdict::Inconclusive, format!("not yet shown below guardrail {}", pct(max)))
    };
    ev.summary = format!("{head}: {tail}");
    result(verdict, ev)
}
