//! The `success-rate` check: canary vs baseline error rates, tolerance = the regression the
//! user *allows* (design §2).
//!
//! * **Abort** when H0 "the canary is worse by at most `tol`" (`p_c ≤ p_b + tol` at every look,
//!   `p_b` anything, drifting or blipping with the canary) is rejected by the two-sample betting
//!   e-process of [`eprocess::two_sample_abort`], mixed over [`eprocess::ABORT_BETS`] and over
//!   start points (restarts) of the whole rollout: `P(abort | H0) ≤ α_c` over every look, step,
//!   extension and restart.
//! * **Pass** at the end of a step when H0' "worse by at least `2·tol`" is rejected by the
//!   step's own pass e-process ([`eprocess::two_sample_pass`], plug-in bet) at `1/α`, the step
//!   saw `minRequests` canary requests and there is no abort. A canary bad during a step passes
//!   that step with probability ≤ α, whatever happened in earlier steps.
//! * Between `tol` and `2·tol` neither is guaranteed (design §2.4): the canary is usually held
//!   (Inconclusive) until the evidence decides.
//!
//! Counts are taken as request counts (`c = 1` of design §1.4: no retry-cluster correction; the
//! policy has no field for the route's retry attempts yet).

use super::cs::{self, AbortFamily};
use super::eprocess::{self, ABORT_BETS};
use super::{Counts, Look};
use crate::format::{conf, pct, pp};
use crate::judge::{CheckResult, Evidence, Verdict};
use crate::observation::SideObservation;
use crate::policy::SuccessRateCheck;
use serde::{Deserialize, Serialize};

/// Name of the canary-vs-baseline success-rate check.
pub const SUCCESS_RATE: &str = "success-rate";
/// Name of the absolute error-rate guardrail.
pub const SUCCESS_RATE_GUARDRAIL: &str = "success-rate-guardrail";

/// The success-rate evidence of a rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SuccessEvidence {
    /// Tolerance (fraction) the levels were built for; the evidence restarts if it changes.
    pub tol: f64,
    /// Abort e-processes per level of [`cs::levels`] (whole rollout).
    pub abort: AbortFamily,
    /// `ln` of the plug-in pass e-process per level, current step only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pass: Vec<f64>,
    /// `ln` of the fixed-bet pass e-processes ([`PASS_HEDGES`]) per level, current step only,
    /// level-major (`levels × hedges`). The pass evidence is their mixture with the plug-in
    /// one ([`pass_mixture`]): the plug-in bet, learnt from calm looks, is large, and one
    /// minute in which both sides fail alike (a shared dependency down) can wipe it out; the
    /// small fixed bets lose little there and keep the step's evidence.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hedges: Vec<f64>,
    /// Errors and requests of both sides together over the recent looks, each earlier look
    /// weighing half as much as the one after it (whole rollout). The plug-in pass bet is sized
    /// at this rate: when a shared dependency fails both sides alike, the bet shrinks after the
    /// first such look instead of losing the step's evidence at every one, and it grows back a
    /// look or two after the failure ends (a rollout-wide rate would stay inflated for minutes).
    #[serde(skip_serializing_if = "is_zero")]
    pub recent: [f64; 2],
}

fn is_zero(x: &[f64; 2]) -> bool {
    x[0] == 0.0 && x[1] == 0.0
}

/// Weight of a look in [`SuccessEvidence::recent`] one look later.
const RECENT_DECAY: f64 = 0.5;

/// Fixed bets of the hedging pass e-processes, each weighted [`HEDGE_WEIGHT`] in the mixture
/// (the plug-in one weighs the rest).
pub(crate) const PASS_HEDGES: [f64; 2] = [0.1, 0.3];
/// Mixture weight of each hedge; the plug-in process has `1 − 2·HEDGE_WEIGHT`.
pub(crate) const HEDGE_WEIGHT: f64 = 0.25;

/// `ln` of the pass mixture at level `i`: `(1 − 2w)·P_plug-in + w·P_0.1 + w·P_0.3`, an average
/// of e-processes and so an e-process itself (valid at every look, like each part).
pub(crate) fn pass_mixture(ev: &SuccessEvidence, i: usize) -> f64 {
    let plug_in = ev.pass.get(i).copied().unwrap_or(0.0);
    let mut parts = vec![((1.0 - HEDGE_WEIGHT * PASS_HEDGES.len() as f64).ln(), plug_in)];
    for k in 0..PASS_HEDGES.len() {
        let h = ev.hedges.get(i * PASS_HEDGES.len() + k).copied().unwrap_or(0.0);
        parts.push((HEDGE_WEIGHT.ln(), h));
    }
    let top = parts.iter().map(|(w, l)| w + l).fold(f64::NEG_INFINITY, f64::max);
    top + parts.iter().map(|(w, l)| (w + l - top).exp()).sum::<f64>().ln()
}

impl SuccessEvidence {
    /// A new step (or a restart of one): the pass evidence is the step's own.
    pub fn start_step(&mut self) {
        self.pass.clear();
        self.hedges.clear();
        self.abort.start_segment();
    }
}

fn valid_tol(tol: f64) -> bool {
    tol.is_finite() && tol > 0.0 && tol < 0.5
}

/// Folds one look into `ev`. `before`: the rollout's counts before this look (for the pass bet,
/// which must not see this look's outcomes). `tol` is the tolerance as a fraction.
pub(crate) fn observe(
    ev: &mut SuccessEvidence,
    before: &Counts,
    segment: u32,
    canary: &SideObservation,
    baseline: &SideObservation,
    tol: f64,
) {
    if !valid_tol(tol) {
        return;
    }
    if ev.tol != tol {
        // A policy edit mid-rollout: the old levels mean something else. Start afresh.
        *ev = SuccessEvidence { tol, ..SuccessEvidence::default() };
    }
    let levels = cs::levels(tol, -1.0);
    let (nc, nb) = (canary.requests as f64, baseline.requests as f64);
    let xc = canary.errors.min(canary.requests) as f64;
    let xb = baseline.errors.min(baseline.requests) as f64;
    if nc > 0.0 && nb > 0.0 {
        let log_e: Vec<Vec<f64>> = levels
            .iter()
            .map(|d| {
                ABORT_BETS
                    .iter()
                    .map(|u| eprocess::two_sample_abort(xc, xb, nc, nb, *d, *u).unwrap_or(0.0))
                    .collect()
            })
            .collect();
        ev.abort.update(segment, &log_e);
    }
    if nc > 0.0 {
        let v = pass_bet(ev, before, nc / nb.max(1.0), tol);
        ev.pass.resize(levels.len(), 0.0);
        for (p, d) in ev.pass.iter_mut().zip(&levels) {
            let l = eprocess::two_sample_pass(xc, xb, nc, nb, *d, v).unwrap_or(0.0);
            *p = eprocess::store(*p + l);
        }
        ev.hedges.resize(levels.len() * PASS_HEDGES.len(), 0.0);
        for (i, d) in levels.iter().enumerate() {
            for (k, hv) in PASS_HEDGES.iter().enumerate() {
                let h = &mut ev.hedges[i * PASS_HEDGES.len() + k];
                let l = eprocess::two_sample_pass(xc, xb, nc, nb, *d, *hv).unwrap_or(0.0);
                *h = eprocess::store(*h + l);
            }
        }
    }
    let [errors, requests] = ev.recent;
    // Rounded to 10⁻³ requests: the state stays short in JSON (any value sizes a valid bet).
    let short = |x: f64| (x * 1000.0).round() / 1000.0;
    ev.recent = [short(RECENT_DECAY * errors + xc + xb), short(RECENT_DECAY * requests + nc + nb)];
}

/// The plug-in pass bet of a look, from earlier looks only (the bet must not see this look's
/// outcomes): the baseline's rate is the recent rate of both sides together ([`SuccessEvidence::recent`];
/// pooling makes it ~10× less noisy at 10 % weight than the canary's own), the canary's is
/// that plus the canary's excess over the baseline so far in the rollout (a canary a little
/// worse, within its tolerance, is bet on as it is). `r` is this look's canary requests per
/// baseline request.
fn pass_bet(ev: &SuccessEvidence, before: &Counts, r: f64, tol: f64) -> f64 {
    let (bxc, bnc, bxb, bnb) = before.as_f64();
    // One pseudo-request at the tolerance: a neutral start where nothing is known yet
    // (`(x + 0.5)/(n + 1)` would start at 50 % and waste the first looks).
    let rate = |x: f64, n: f64| (x + tol) / (n + 1.0);
    let [errors, requests] = ev.recent;
    let common = if requests > 0.0 { rate(errors, requests) } else { rate(bxc + bxb, bnc + bnb) };
    let excess = (rate(bxc, bnc) - rate(bxb, bnb)).max(0.0);
    eprocess::two_sample_pass_bet((common + excess).min(1.0), common, r, 2.0 * tol)
}

/// The two ends of the anytime-valid interval for `p_c − p_b` and the log e-values at the
/// decision levels.
pub(crate) struct Ends {
    pub low: f64,
    pub high: f64,
    /// `ln M_t(tol)`: the abort e-process at the tolerance.
    pub abort_stat: f64,
    /// `ln P_step(2·tol)`: the step's pass e-process at twice the tolerance.
    pub pass_stat: f64,
}

pub(crate) fn ends(ev: &SuccessEvidence, tol: f64, alpha_abort: f64, alpha_pass: f64) -> Ends {
    let levels = cs::levels(tol, -1.0);
    let log_m = ev.abort.log_means(levels.len());
    let log_p: Vec<f64> = (0..levels.len()).map(|i| pass_mixture(ev, i)).collect();
    let at = |m: f64| levels.iter().position(|d| *d == m * tol);
    Ends {
        low: cs::lower_end(&levels, &log_m, (1.0 / alpha_abort).ln()),
        high: cs::upper_end(&levels, &log_p, (1.0 / alpha_pass).ln()),
        abort_stat: at(1.0).map_or(f64::NEG_INFINITY, |i| log_m[i]),
        pass_stat: at(2.0).map_or(0.0, |i| log_p[i]),
    }
}

/// An end of the interval in pp; an unbounded end reads as the trivial bound.
pub(crate) fn end_pp(x: f64, lo: f64, hi: f64) -> f64 {
    if x.is_finite() {
        x
    } else if x < 0.0 {
        lo
    } else {
        hi
    }
}

/// Judges `success-rate` on the state that already includes this look. `alpha_c` is the
/// check's share of α (abort side), `alpha` the whole α (per-step pass side).
pub(crate) fn success_rate(cfg: &SuccessRateCheck, look: &Look) -> CheckResult {
    let Look { state, alpha_c, alpha, min_requests, end_of_step } = *look;
    let tol = cfg.tolerance / 100.0;
    let mut ev = Evidence { threshold: Some(tol), ..Evidence::default() };
    let result = |verdict, evidence| CheckResult {
        check: SUCCESS_RATE.to_string(),
        verdict,
        evidence,
        dry_run: cfg.dry_run,
    };
    if !valid_tol(tol) {
        ev.summary = format!("invalid tolerance {} pp (must be > 0 and < 50)", cfg.tolerance);
        return result(Verdict::Error, ev);
    }
    let step = &state.step_counts;
    fill_counts(&mut ev, step);
    let e = ends(&state.success, tol, alpha_c, alpha);
    let (low, high) = (end_pp(e.low, -1.0, 1.0), end_pp(e.high, -1.0, 1.0));
    let effect = ev.canary_value.unwrap_or(0.0) - ev.baseline_value.unwrap_or(0.0);
    ev.effect = Some(effect);
    ev.ci_low = Some(low);
    ev.ci_high = Some(high);
    // The lower end holds at 1 − α_c, the upper at 1 − α: label the interval with the weaker.
    ev.confidence = Some(1.0 - alpha);
    ev.statistic = Some(e.abort_stat.max(eprocess::FLOOR));
    let head = format!(
        "canary {} errors vs baseline {} in this step ({}; anytime-valid {} CI {:+.2}..{:+.2} pp)",
        pct(ev.canary_value.unwrap_or(0.0)),
        pct(ev.baseline_value.unwrap_or(0.0)),
        pp(effect),
        conf(1.0 - alpha),
        low * 100.0,
        high * 100.0,
    );
    let tol_txt = format!("{:.2} pp", tol * 100.0);
    let two_txt = format!("{:.2} pp", 2.0 * tol * 100.0);
    let abort_bar = (1.0 / alpha_c).ln();
    if e.low >= tol {
        ev.summary = format!(
            "{head}: worse than the allowed tolerance {tol_txt} (at least {} worse; log e-value {:.1} ≥ {abort_bar:.1})",
            pp(e.low),
            e.abort_stat
        );
        return result(Verdict::Fail, ev);
    }
    if step.canary_requests == 0 {
        ev.summary = "no canary requests in this step yet".to_string();
        return result(Verdict::Inconclusive, ev);
    }
    if !end_of_step {
        ev.summary = format!("{head}; not shown worse than the allowed {tol_txt} so far");
        return result(Verdict::Inconclusive, ev);
    }
    if step.canary_requests < min_requests {
        ev.summary = format!(
            "{head}; only {} canary requests in this step (need {min_requests})",
            step.canary_requests
        );
        return result(Verdict::Inconclusive, ev);
    }
    let pass_bar = (1.0 / alpha).ln();
    if e.high <= 2.0 * tol {
        ev.summary = format!(
            "{head}: this step shows the canary less than {two_txt} (2× the allowed {tol_txt}) worse \
             (log e-value {:.1} ≥ {pass_bar:.1})",
            e.pass_stat
        );
        result(Verdict::Pass, ev)
    } else {
        ev.summary = format!(
            "{head}: this step does not yet exclude a regression of {two_txt} (2× the allowed \
             {tol_txt}; log e-value {:.1} < {pass_bar:.1})",
            e.pass_stat
        );
        result(Verdict::Inconclusive, ev)
    }
}

pub(crate) fn fill_counts(ev: &mut Evidence, c: &Counts) {
    ev.canary_requests = c.canary_requests;
    ev.baseline_requests = c.baseline_requests;
    ev.canary_bad = c.canary_errors.min(c.canary_requests);
    ev.baseline_bad = c.baseline_errors.min(c.baseline_requests);
    let rate = |bad: u64, n: u64| if n > 0 { bad as f64 / n as f64 } else { 0.0 };
    ev.canary_value = Some(rate(ev.canary_bad, ev.canary_requests));
    ev.baseline_value = Some(rate(ev.baseline_bad, ev.baseline_requests));
}

/// Expected log growth per canary request of the pass e-process for a healthy canary
/// (`p_c = p_b = p`) at share `s`, with the plug-in bet at the true rates: what `plan` uses.
pub(crate) fn healthy_pass_growth(p: f64, s: f64, tol: f64) -> f64 {
    let r = s / (1.0 - s);
    let d = 2.0 * tol;
    let v = eprocess::two_sample_pass_bet(p, p, r, d);
    p * (-v).ln_1p() - (-d * v).ln_1p() + (p / r) * (r * v / (1.0 - d * v)).ln_1p()
}

/// Expected log growth per canary request of the abort e-process for a canary `2·tol` worse than
/// a baseline at rate `p`, at share `s`, with the best single bet of the grid: what `plan` uses
/// for "requests to catch 2× the tolerance". (The mixture over bets and start points pays a
/// fixed price on top, see [`super::requests_to_catch`].)
pub(crate) fn regression_abort_growth(p: f64, s: f64, tol: f64) -> f64 {
    let r = s / (1.0 - s);
    let pc = (p + 2.0 * tol).min(1.0);
    eprocess::ABORT_BETS
        .iter()
        .map(|&u| {
            let u = u.min(eprocess::abort_bet_cap(r, tol));
            let a = r * u / (1.0 + tol * u);
            pc * u.ln_1p() + (p / r) * (-a).ln_1p() - (tol * u).ln_1p()
        })
        .fold(f64::NEG_INFINITY, f64::max)
}
