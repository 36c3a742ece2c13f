//! The latency checks on histograms: canary vs baseline at a quantile (`latency`) and the
//! absolute guardrail on the canary's quantile (`latency-guardrail`).
//!
//! Why tail shares and not quantiles: an interpolated quantile from Istio's coarse buckets
//! (…, 50, 100, 250, 500, 1000 ms — factors of 2–2.5) has no usable variance, and a canary whose
//! requests move inside one bucket is invisible to it. Shares of requests above a bucket bound
//! are exact counts, so the comparison is a two-proportion test again: at bound `b`, the canary's
//! share above `b` is compared with the baseline's share above `b / (1 + tolerance)` (linearly
//! interpolated inside its bucket). A canary at most `tolerance` slower than the baseline —
//! `F_canary(b) ≥ F_baseline(b / (1 + tol))` — cannot exceed that reference, so the null of the
//! test is exactly "within tolerance" at `b`. Interpolation is conservative in the tail: above
//! the mode the density falls, the true CDF lies above the chord, and the interpolated reference
//! share is too high rather than too low.
//!
//! The tested bounds are the baseline's `q`-quantile bucket bound, the one below it (coarse
//! buckets: a shift of a quantile near the bottom of its bucket shows at the lower bound) and
//! the next two above (a heavy tail shows up one or two buckets further out), each at a quarter
//! of the step's α (Bonferroni).
//! The interpolated quantiles are reported as evidence, not tested.
//!
//! Latency evidence does not carry over between steps: the canary's load, hence its latency,
//! depends on its weight. Each step's test spends `α · 1/(j(j+1))` like the step sequence of
//! the success rate.

use super::fmt::{conf, ms, pct, pp, pp_ci};
use super::hist::{shared_bounds, Cumulative};
use super::stats::{one_prop_cs, step_alpha_share, two_prop_cs, Interval};
use super::JudgeState;
use crate::judge::{CheckResult, Evidence, Verdict};
use crate::policy::LatencyCheck;

/// Name of the canary-vs-baseline latency check.
pub const LATENCY: &str = "latency";
/// Name of the absolute latency guardrail.
pub const LATENCY_GUARDRAIL: &str = "latency-guardrail";

/// How many bucket bounds the comparison tests (Bonferroni divisor).
const TESTED_BOUNDS: usize = 4;

fn quantile_label(q: f64) -> String {
    let s = format!("{:.1}", q * 100.0);
    format!("p{}", s.trim_end_matches('0').trim_end_matches('.'))
}

fn sane_quantile(q: f64) -> f64 {
    if q.is_finite() {
        q.clamp(0.5, 0.999)
    } else {
        0.99
    }
}

fn result(name: &str, dry_run: bool, verdict: Verdict, evidence: Evidence) -> CheckResult {
    CheckResult { check: name.to_string(), verdict, evidence, dry_run }
}

/// The step histograms as cumulative counts, or the reason they cannot be compared.
fn step_histograms(state: &JudgeState) -> Result<(Cumulative, Cumulative), String> {
    let c = Cumulative::new(&state.canary_latency).ok_or("canary histogram has unusable bucket bounds")?;
    let b =
        Cumulative::new(&state.baseline_latency).ok_or("baseline histogram has unusable bucket bounds")?;
    Ok((c, b))
}

/// Judges `latency` on the step's accumulated histograms (this interval included).
pub(crate) fn latency(
    cfg: &LatencyCheck,
    alpha: f64,
    state: &JudgeState,
    min_requests: u64,
    end_of_step: bool,
) -> CheckResult {
    let q = sane_quantile(cfg.quantile);
    let tol = cfg.tolerance / 100.0;
    let label = quantile_label(q);
    let mut ev = Evidence { threshold: Some(tol), ..Evidence::default() };
    let done = |v, e| result(LATENCY, cfg.dry_run, v, e);
    if !(tol.is_finite() && tol >= 0.0) {
        ev.summary = format!("invalid tolerance {}%", cfg.tolerance);
        return done(Verdict::Error, ev);
    }
    let (canary, baseline) = match step_histograms(state) {
        Ok(x) => x,
        Err(e) => {
            ev.summary = e;
            return done(Verdict::Error, ev);
        }
    };
    ev.canary_requests = canary.total as u64;
    ev.baseline_requests = baseline.total as u64;
    if canary.total <= 0.0 || baseline.total <= 0.0 {
        ev.summary = format!(
            "no latency data yet ({} canary, {} baseline requests in this step)",
            ev.canary_requests, ev.baseline_requests
        );
        return done(Verdict::Inconclusive, ev);
    }
    let shared = shared_bounds(&canary, &baseline);
    if shared.is_empty() {
        ev.summary = "canary and baseline histograms share no bucket bound".to_string();
        return done(Verdict::Error, ev);
    }
    let (canary, baseline) = (canary.restrict(&shared), baseline.restrict(&shared));
    let (qc, qb) = (canary.quantile(q), baseline.quantile(q));
    ev.canary_value = qc;
    ev.baseline_value = qb;
    let Some(first) = baseline.quantile_bucket(q) else {
        ev.summary = format!("baseline {label} lies beyond the last bucket bound; not comparable");
        return done(Verdict::Inconclusive, ev);
    };
    let shift = match (qc, qb) {
        (Some(c), Some(b)) if b > 0.0 => format!(" ({:+.0}%)", (c / b - 1.0) * 100.0),
        _ => String::new(),
    };
    let head = format!(
        "canary {label} {} vs baseline {}{shift}",
        qc.map(ms).unwrap_or_else(|| "n/a".into()),
        qb.map(ms).unwrap_or_else(|| "n/a".into()),
    );
    let (cn, bn) = (canary.total, baseline.total);
    let a_fail = alpha * step_alpha_share(state.step) / TESTED_BOUNDS as f64;
    // One test per bound: (bound index, reference point, interval).
    let test = |k: usize, a: f64| -> (usize, f64, Interval) {
        let y = shared[k] / (1.0 + tol);
        let reference = baseline.above_interpolated(y);
        (k, y, two_prop_cs(canary.above(k), cn, reference, bn, a))
    };
    // The bound below the quantile's bucket as well: with factor-2 buckets a median at 60 ms
    // sits at the bottom of (50, 100], where a +20% shift moves little mass past 100 ms but a
    // lot past 50 ms.
    let failing = (first.saturating_sub(1)..shared.len().min(first + TESTED_BOUNDS - 1))
        .map(|k| test(k, a_fail))
        .filter(|(_, _, i)| i.low > 0.0)
        .max_by(|a, b| a.2.z_against(0.0).total_cmp(&b.2.z_against(0.0)));
    let (k, y, cs) = failing.unwrap_or_else(|| test(first, alpha));
    ev.canary_bad = canary.above(k) as u64;
    ev.baseline_bad = baseline.above(k) as u64;
    ev.effect = Some(cs.estimate);
    ev.ci_low = Some(cs.low);
    ev.ci_high = Some(cs.high);
    ev.confidence = Some(1.0 - cs.alpha);
    ev.statistic = Some(cs.z_against(0.0));
    let detail = format!(
        "{} of canary requests above {} vs {} of baseline above {} ({}, {} CI {})",
        pct(canary.above(k) / cn),
        ms(shared[k]),
        pct(baseline.above_interpolated(y) / bn),
        ms(y),
        pp(cs.estimate),
        conf(1.0 - cs.alpha),
        pp_ci(cs.low, cs.high),
    );
    let tol_txt = format!("{:.0}%", tol * 100.0);
    let (verdict, summary) = if failing.is_some() {
        (Verdict::Fail, format!("{head}: {detail} exceeds tolerance {tol_txt}"))
    } else if !end_of_step {
        (Verdict::Inconclusive, format!("{head}: {detail}; no failure so far"))
    } else if cn < min_requests as f64 {
        let s = format!("{head}: only {cn} canary requests in this step (need {min_requests})");
        (Verdict::Inconclusive, s)
    } else if cs.high < 0.0 {
        (Verdict::Pass, format!("{head}: {detail} within tolerance {tol_txt}"))
    } else {
        (Verdict::Inconclusive, format!("{head}: {detail}; not yet shown within {tol_txt}"))
    };
    ev.summary = summary;
    done(verdict, ev)
}

/// Judges `latency-guardrail`: the canary's `q`-quantile against `max_ms`, on the canary's step
/// histogram. Fail when the canary's share above the first bound at or above `max_ms` is
/// confidently more than `1 − q` (then the quantile is above `max_ms` for sure); Pass when its
/// share above the last bound at or below `max_ms` is confidently less than `1 − q`.
pub(crate) fn guardrail(
    cfg: &LatencyCheck,
    max_ms: f64,
    alpha: f64,
    state: &JudgeState,
    min_requests: u64,
    end_of_step: bool,
) -> CheckResult {
    let q = sane_quantile(cfg.quantile);
    let label = quantile_label(q);
    let tail = 1.0 - q;
    let mut ev = Evidence { threshold: Some(max_ms), ..Evidence::default() };
    let done = |v, e| result(LATENCY_GUARDRAIL, cfg.dry_run, v, e);
    if !(max_ms.is_finite() && max_ms > 0.0) {
        ev.summary = format!("invalid maxMs {max_ms}");
        return done(Verdict::Error, ev);
    }
    let Some(canary) = Cumulative::new(&state.canary_latency) else {
        ev.summary = "canary histogram has unusable bucket bounds".to_string();
        return done(Verdict::Error, ev);
    };
    let n = canary.total;
    ev.canary_requests = n as u64;
    ev.canary_value = canary.quantile(q);
    if n <= 0.0 {
        ev.summary = "no canary latency data yet in this step".to_string();
        return done(Verdict::Inconclusive, ev);
    }
    let fail_at = canary.bounds.iter().position(|b| *b >= max_ms);
    let pass_at = canary.bounds.iter().rposition(|b| *b <= max_ms);
    let fail_cs = fail_at
        .map(|k| (k, one_prop_cs(canary.above(k), n, alpha * step_alpha_share(state.step))))
        .filter(|(_, i)| i.low > tail);
    let pass_cs = pass_at.map(|k| (k, one_prop_cs(canary.above(k), n, alpha)));
    let head = format!(
        "canary {label} {} (guardrail {})",
        ev.canary_value.map(ms).unwrap_or_else(|| "n/a".into()),
        ms(max_ms)
    );
    let shown = fail_cs.or(pass_cs);
    if let Some((k, cs)) = shown {
        ev.canary_bad = canary.above(k) as u64;
        ev.ci_low = Some(cs.low);
        ev.ci_high = Some(cs.high);
        ev.confidence = Some(1.0 - cs.alpha);
        ev.statistic = Some(cs.z_against(tail));
    }
    let share = |k: usize, cs: &Interval| {
        format!(
            "{} of requests above {} ({} CI {}..{}) vs {} allowed",
            pct(cs.estimate),
            ms(canary.bounds[k]),
            conf(1.0 - cs.alpha),
            pct(cs.low),
            pct(cs.high),
            pct(tail)
        )
    };
    let (verdict, summary) = match (fail_cs, pass_cs) {
        (Some((k, cs)), _) => (Verdict::Fail, format!("{head}: {}; breached", share(k, &cs))),
        _ if !end_of_step => (Verdict::Inconclusive, format!("{head}: no breach so far")),
        _ if n < min_requests as f64 => {
            (Verdict::Inconclusive, format!("{head}: too few requests (need {min_requests})"))
        }
        (None, Some((k, cs))) if cs.high < tail => {
            (Verdict::Pass, format!("{head}: {}; below guardrail", share(k, &cs)))
        }
        (None, Some((k, cs))) => {
            (Verdict::Inconclusive, format!("{head}: {}; not yet shown below", share(k, &cs)))
        }
        (None, None) => {
            (Verdict::Inconclusive, format!("{head}: no bucket bound at or below the guardrail; cannot pass"))
        }
    };
    ev.summary = summary;
    done(verdict, ev)
}
