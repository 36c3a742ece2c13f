//! The success-rate checks: canary vs baseline (`success-rate`) and the absolute guardrail
//! (`success-rate-guardrail`).

use super::sprt::SUCCESS_GRID;
use super::stats::{cs_radius, one_prop_cs, step_alpha_share, two_prop_cs, Interval};
use super::{Counts, JudgeState};
use crate::format::{conf, pct, pp, pp_ci};
use crate::judge::{CheckResult, Evidence, Verdict};
use crate::observation::SideObservation;
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

/// Folds one interval into the success-rate evidence of `next` (the state after the interval;
/// `past` is the state before it). `tol` is the tolerance as a fraction.
///
/// The alternative "worse by the tolerance" is the relative risk `ρ_tol = (p̂ + tol) / p̂`,
/// with the baseline rate `p̂` estimated from the *earlier* intervals' baseline counts plus the
/// share of this interval's bad requests the baseline would have under H0 — both known before
/// the split of this interval's bad requests is looked at, as the supermartingale argument
/// needs (see [`super::sprt`]).
pub(crate) fn observe(
    next: &mut JudgeState,
    past: &JudgeState,
    canary: &SideObservation,
    baseline: &SideObservation,
    tol: f64,
) {
    if !(tol.is_finite() && tol > 0.0 && tol < 1.0) {
        return;
    }
    let before = past.prior_counts.plus(&past.step_counts);
    let (nc, nb) = (canary.requests as f64, baseline.requests as f64);
    let xc = canary.errors.min(canary.requests) as f64;
    let xb = baseline.errors.min(baseline.requests) as f64;
    if nc > 0.0 && nb > 0.0 {
        let pi = nc / (nc + nb);
        let e = xc + xb;
        let p_hat = (before.baseline_errors as f64 + e * (1.0 - pi) + 0.5)
            / (before.baseline_requests as f64 + nb + 1.0);
        let rho = (p_hat + tol) / p_hat;
        next.success.update(&SUCCESS_GRID, xc, xb, pi, rho, rho);
    }
    if nc > 0.0 {
        // Canary alone against "error rate ≥ tolerance" (which any canary worse than the
        // baseline by the tolerance has): one-sample SPRT, alternative p0 estimated from the
        // canary's earlier intervals, kept in [tol/20, tol/2].
        let p0 = ((before.canary_errors as f64 + 0.5) / (before.canary_requests as f64 + 1.0))
            .clamp(tol / 20.0, tol / 2.0);
        let l = xc * (p0 / tol).ln() + (nc - xc) * ((1.0 - p0) / (1.0 - tol)).ln();
        if l.is_finite() {
            next.success_canary_pass += l;
        }
    }
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
    if !(tol.is_finite() && tol > 0.0 && tol < 1.0) {
        ev.summary = format!("invalid tolerance {} pp (must be > 0 and < 100)", cfg.tolerance);
        return result(Verdict::Error, ev);
    }
    let step = &state.step_counts;
    let total = state.prior_counts.plus(step);
    let seq = &state.success;
    let fail_bar = (1.0 / alpha).ln();
    let stat = seq.fail_stat(SUCCESS_GRID.len());
    let fails = stat.is_some_and(|s| s >= fail_bar);
    // The always-valid CI for Δ is for the report; the decision is the likelihood ratio.
    fill_counts(&mut ev, &total);
    let cs = rollout_interval(state, alpha);
    let (cs, window) = match cs {
        Some(cs) => (cs, "rollout"),
        None => {
            let (cb, cn, bb, bn) = step.as_f64();
            (two_prop_cs(cb, cn, bb, bn, alpha), "step")
        }
    };
    ev.effect = Some(cs.estimate);
    ev.ci_low = Some(cs.low);
    ev.ci_high = Some(cs.high);
    ev.confidence = Some(1.0 - alpha);
    ev.statistic = Some(stat.unwrap_or(0.0));
    let head = format!(
        "canary {} errors vs baseline {} ({}, {} CI {}) over the {window}",
        pct(ev.canary_value.unwrap_or(0.0)),
        pct(ev.baseline_value.unwrap_or(0.0)),
        pp(cs.estimate),
        conf(1.0 - alpha),
        pp_ci(cs.low, cs.high),
    );
    let tol_txt = format!("{:.2} pp", tol * 100.0);
    if fails {
        ev.summary = format!(
            "{head}: worse by the tolerance {tol_txt} or more (log LR {:.1} ≥ {:.1})",
            stat.unwrap_or(0.0),
            fail_bar
        );
        return result(Verdict::Fail, ev);
    }
    if total.canary_requests == 0 {
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
    // Pass: "no worse" beats "worse by the tolerance" by 1/β (β = α) — the average of the two
    // e-values (comparison with the baseline; the canary's own error rate below the
    // tolerance), itself an e-value under H1 — and this step's own data does not lean towards
    // "worse" by more than half the fail bar.
    let pass_bar = (1.0 / alpha).ln();
    let shown = pass_evidence(seq.pass, state.success_canary_pass);
    let step_ok = seq.step_pass >= -0.5 * fail_bar;
    if shown >= pass_bar && step_ok {
        ev.summary =
            format!("{head}: no worse than the baseline by {tol_txt} (log LR {shown:.1} ≥ {pass_bar:.1})");
        result(Verdict::Pass, ev)
    } else if !step_ok {
        ev.summary =
            format!("{head}: this step's data leans towards a regression of {tol_txt}; not passing yet");
        result(Verdict::Inconclusive, ev)
    } else {
        ev.summary =
            format!("{head}: not yet shown no worse by {tol_txt} (log LR {shown:.1} < {pass_bar:.1})");
        result(Verdict::Inconclusive, ev)
    }
}

/// `ln((e^a + e^b) / 2)`: the log of the average of two e-values, computed stably.
pub(crate) fn pass_evidence(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if !m.is_finite() {
        return m;
    }
    m + ((a - m).exp() + (b - m).exp()).ln() - std::f64::consts::LN_2
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
