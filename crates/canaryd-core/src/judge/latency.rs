//! The latency checks on histograms: canary vs baseline at a quantile (`latency`) and the
//! absolute guardrail on the canary's quantile (`latency-guardrail`).
//!
//! Why tail shares and not quantiles: an interpolated quantile from Istio's coarse buckets
//! (…, 50, 100, 250, 500, 1000 ms — factors of 2–2.5) has no usable variance, and a canary whose
//! requests move inside one bucket is invisible to it. Shares of requests above a bucket bound
//! are exact counts, so every bound is a 2×2 table again and gets the conditional likelihood-ratio
//! evidence of [`super::sprt`] ("bad" = slower than the bound):
//! * H0 "the canary is no slower": its share of the requests above bound `b` is at most π;
//! * H1 "the canary is slower by the tolerance" (every request `1 + tol` times slower): its
//!   share above `b` equals the common share above `b / (1 + tol)`. The relative risk of the
//!   alternative, `ρ_tol = above(b / (1 + tol)) / above(b)`, is read from the step's *pooled*
//!   histogram (both sides: a statistic the canary's share is conditioned on), with geometric
//!   interpolation inside the bucket for the fail side (accurate in the tail). The pass side's
//!   alternative uses linear interpolation, which overstates the slow share far above the mode:
//!   a more lenient pass (a p99 within a 20% tolerance is otherwise an hour's worth of tail
//!   requests at 20 req/s), kept honest by requiring every tested bound — a canary slower by
//!   the tolerance leans the other way at the bound below the quantile's.
//!
//! The evidence of a bound accumulates over the rollout (an interval of a healthy canary is
//! evidence at any weight) with the start-point restarts of [`super::sprt`]. The tested bounds
//! are the baseline's `q`-quantile bucket bound, the one below it (a shift of a quantile near the
//! bottom of its bucket shows there) and the next two above (a heavy tail shows one or two
//! buckets further out), each at a quarter of the check's α (Bonferroni). Evidence is kept for
//! the bounds around the quantile only (at most [`KEPT_BOUNDS`]), so the state stays small.
//!
//! Pass needs *every* tested bound: the quantile's bound and the one below must show "no slower"
//! over "slower by the tolerance" by `1/β`; a bound above the quantile's may instead be
//! negligible — the canary's share above it at most `1 − q` and its evidence not leaning
//! towards "slower" by more than half the bar.
//! The interpolated quantiles are reported as evidence, not tested.

use super::hist::{shared_bounds, Cumulative};
use super::sprt::{Seq, LATENCY_GRID};
use super::stats::{one_prop_cs, step_alpha_share, two_prop_cs, Interval};
use super::JudgeState;
use crate::format::{conf, ms, pct, pp, pp_ci};
use crate::judge::{CheckResult, Evidence, Verdict};
use crate::observation::Observation;
use crate::policy::LatencyCheck;
use serde::{Deserialize, Serialize};

/// Name of the canary-vs-baseline latency check.
pub const LATENCY: &str = "latency";
/// Name of the absolute latency guardrail.
pub const LATENCY_GUARDRAIL: &str = "latency-guardrail";

/// How many bucket bounds the comparison tests (Bonferroni divisor).
const TESTED_BOUNDS: usize = 4;
/// A bound whose relative risk at the tolerance is below this cannot tell H0 from H1.
const NON_DISCRIMINATING: f64 = 1.05;
/// How many bounds keep evidence in the state.
pub const KEPT_BOUNDS: usize = 8;

/// The sequential evidence at one bucket bound.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BoundSeq {
    /// The bound, milliseconds.
    pub bound_ms: f64,
    /// The evidence: "bad" = slower than the bound.
    #[serde(flatten)]
    pub seq: Seq,
}

fn same_bound(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(1.0)
}

/// Folds one interval's histograms into the per-bound evidence of `next` (whose step
/// histograms already include the interval).
pub(crate) fn observe(next: &mut JudgeState, cfg: &LatencyCheck, obs: &Observation) {
    let tol = cfg.tolerance / 100.0;
    if !(tol.is_finite() && tol > 0.0) {
        return;
    }
    let (Some(ch), Some(bh)) = (&obs.canary.latency, &obs.baseline.latency) else { return };
    let (Some(c), Some(b)) = (Cumulative::new(ch), Cumulative::new(bh)) else { return };
    let (Ok((sc, sb)), true) = (step_histograms(next), c.total > 0.0 && b.total > 0.0) else { return };
    let mut bounds = shared_bounds(&c, &b);
    bounds.retain(|x| {
        sc.bounds.iter().any(|y| same_bound(*x, *y)) && sb.bounds.iter().any(|y| same_bound(*x, *y))
    });
    if bounds.is_empty() {
        return;
    }
    let (c, b, sb) = (c.restrict(&bounds), b.restrict(&bounds), sb.restrict(&bounds));
    let pooled = Cumulative::pooled(&sc.restrict(&bounds), &sb);
    let pi = c.total / (c.total + b.total);
    let first = sb.quantile_bucket(sane_quantile(cfg.quantile));
    if let Some(first) = first {
        let last = (first + 3).min(bounds.len() - 1);
        for &bound in &bounds[first.saturating_sub(2)..=last] {
            if !next.latency_bounds.iter().any(|e| same_bound(e.bound_ms, bound)) {
                next.latency_bounds.push(BoundSeq { bound_ms: bound, seq: Seq::default() });
            }
        }
    }
    for e in next.latency_bounds.iter_mut() {
        let Some(k) = bounds.iter().position(|x| same_bound(*x, e.bound_ms)) else { continue };
        let y = bounds[k] / (1.0 + tol);
        let rho = (pooled.above_geometric(y) + 0.5) / (pooled.above(k) + 0.5);
        let rho_pass = (pooled.above_interpolated(y) + 0.5) / (pooled.above(k) + 0.5);
        e.seq.update(&LATENCY_GRID, c.above(k), b.above(k), pi, rho, rho_pass);
    }
    // Keep the bounds nearest to the quantile's (log distance).
    if let (Some(first), true) = (first, next.latency_bounds.len() > KEPT_BOUNDS) {
        let centre = bounds[first].ln();
        next.latency_bounds
            .sort_by(|x, y| (x.bound_ms.ln() - centre).abs().total_cmp(&(y.bound_ms.ln() - centre).abs()));
        next.latency_bounds.truncate(KEPT_BOUNDS);
    }
    next.latency_bounds.sort_by(|x, y| x.bound_ms.total_cmp(&y.bound_ms));
}

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
    if !(tol.is_finite() && tol > 0.0) {
        ev.summary = format!("invalid tolerance {}% (must be > 0)", cfg.tolerance);
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
    let fail_bar = (TESTED_BOUNDS as f64 / alpha).ln();
    let pass_bar = (1.0 / alpha).ln();
    let seq_at =
        |k: usize| state.latency_bounds.iter().find(|e| same_bound(e.bound_ms, shared[k])).map(|e| &e.seq);
    let stat_at = |k: usize| seq_at(k).and_then(|s| s.fail_stat(LATENCY_GRID.len()));
    let tested: Vec<usize> = (first.saturating_sub(1)..shared.len().min(first + TESTED_BOUNDS - 1)).collect();
    let failing = tested
        .iter()
        .copied()
        .filter_map(|k| stat_at(k).map(|s| (k, s)))
        .filter(|(_, s)| *s >= fail_bar)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    // A bound passes on evidence, or (above the quantile's bound) as negligible.
    let bound_passes = |k: usize| {
        let share_ok = canary.above(k) <= (1.0 - q) * cn;
        match seq_at(k) {
            Some(s) if s.step_pass < -0.5 * pass_bar => false,
            // Negligible: above the quantile's bound with the canary's share there at most
            // 1 − q, or a bound where "slower by the tolerance" predicts (almost) no more slow
            // requests (empty buckets below it: no evidence can ever accrue).
            Some(s) => {
                let negligible = (k > first && share_ok) || (s.t > 0 && s.rho < NON_DISCRIMINATING);
                s.pass >= pass_bar || (negligible && s.pass >= -0.5 * pass_bar)
            }
            None => k > first && share_ok,
        }
    };
    let blocking = tested.iter().copied().find(|k| !bound_passes(*k));
    let k = failing.map(|f| f.0).or(blocking).unwrap_or(first);
    let a_report = alpha / TESTED_BOUNDS as f64;
    let cs = two_prop_cs(canary.above(k), cn, baseline.above(k), bn, a_report);
    let stat = stat_at(k);
    ev.canary_bad = canary.above(k) as u64;
    ev.baseline_bad = baseline.above(k) as u64;
    ev.effect = Some(cs.estimate);
    ev.ci_low = Some(cs.low);
    ev.ci_high = Some(cs.high);
    ev.confidence = Some(1.0 - a_report);
    ev.statistic = Some(stat.unwrap_or(0.0));
    let detail = format!(
        "{} of canary requests above {} vs {} of baseline ({}, {} CI {})",
        pct(canary.above(k) / cn),
        ms(shared[k]),
        pct(baseline.above(k) / bn),
        pp(cs.estimate),
        conf(1.0 - a_report),
        pp_ci(cs.low, cs.high),
    );
    let tol_txt = format!("{:.0}%", tol * 100.0);
    let (verdict, summary) = if let Some((_, s)) = failing {
        let s = format!(
            "{head}: {detail}: slower by the tolerance {tol_txt} or more (log LR {s:.1} ≥ {fail_bar:.1})"
        );
        (Verdict::Fail, s)
    } else if !end_of_step {
        (Verdict::Inconclusive, format!("{head}: {detail}; no failure so far"))
    } else if cn < min_requests as f64 {
        let s = format!("{head}: only {cn} canary requests in this step (need {min_requests})");
        (Verdict::Inconclusive, s)
    } else if blocking.is_none() {
        (Verdict::Pass, format!("{head}: {detail}; every tested bound within tolerance {tol_txt}"))
    } else {
        let pass = seq_at(k).map_or(0.0, |s| s.pass);
        let s =
            format!("{head}: {detail}; not yet shown within {tol_txt} (log LR {pass:.1} < {pass_bar:.1})");
        (Verdict::Inconclusive, s)
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
