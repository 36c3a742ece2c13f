//! Statistical primitives of the judge: normal quantiles, Agresti–Caffo smoothing and the
//! normal-mixture confidence sequence (always-valid interval) used by the guardrails and for the
//! reported CIs (the comparative decisions are likelihood ratios, see `sprt`).
//!
//! Everything here is a pure function of counts and levels; nothing panics on odd input
//! (zero counts, NaN levels): degenerate inputs give infinitely wide intervals.

use statrs::distribution::{ContinuousCDF, Normal};

/// Prior variance τ² of the normal mixture, in (fraction)² of the effect scale. τ ≈ 0.22 (22 pp)
/// puts the boundary's sweet spot at small samples, so a gross failure (50% vs 0.1% errors) is
/// caught from ~20 canary requests; the price at large samples is only logarithmic
/// (the `ln(1 + τ²/V)` term below).
pub const MIXTURE_TAU2: f64 = 0.05;

/// The standard normal quantile Φ⁻¹(p); NaN-safe (returns +∞/−∞ outside (0, 1)).
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || p >= 1.0 {
        return f64::INFINITY;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    // Normal::new(0, 1) cannot fail; fall back to +∞ (no conclusion) rather than panic.
    Normal::new(0.0, 1.0).map(|n| n.inverse_cdf(p)).unwrap_or(f64::INFINITY)
}

/// Radius of the two-sided normal-mixture confidence sequence for an estimate with variance `v`
/// at error level `alpha` (Robbins' normal mixture; Howard et al. 2021, eq. (14)):
///
/// `r(V) = sqrt( V · (1 + V/τ²) · (2·ln(1/α) + ln(1 + τ²/V)) )`.
///
/// It is where the mixture likelihood ratio
/// `Λ = sqrt(V/(V+τ²)) · exp(τ²·(Δ̂−Δ₀)² / (2V(V+τ²)))` reaches `1/α`. Λ is a nonnegative
/// martingale under Δ = Δ₀, so by Ville's inequality the interval `Δ̂ ± r(V)` contains the true
/// effect at *every* look simultaneously with probability ≥ 1 − α (asymptotically, with
/// plug-in variance: the time-uniform CLT of Waudby-Smith et al. 2021).
pub fn cs_radius(v: f64, alpha: f64) -> f64 {
    if !(v.is_finite() && v > 0.0 && alpha > 0.0 && alpha < 1.0) {
        return f64::INFINITY;
    }
    let tau2 = MIXTURE_TAU2;
    (v * (1.0 + v / tau2) * (2.0 * (1.0 / alpha).ln() + (1.0 + tau2 / v).ln())).sqrt()
}

/// Smoothed proportion (Agresti–Caffo: one extra success and one extra failure), so that zero
/// counts still carry a sensible variance. Returns `(p̃, ñ)`.
pub fn smoothed(bad: f64, n: f64) -> (f64, f64) {
    let n = if n.is_finite() && n > 0.0 { n } else { 0.0 };
    let bad = if bad.is_finite() { bad.clamp(0.0, n) } else { 0.0 };
    ((bad + 1.0) / (n + 2.0), n + 2.0)
}

/// An interval estimate of an effect, with the variance it was built from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Point estimate (raw, unsmoothed), fraction.
    pub estimate: f64,
    /// Lower bound, fraction.
    pub low: f64,
    /// Upper bound, fraction.
    pub high: f64,
    /// Variance of the (smoothed) estimate, fraction².
    pub variance: f64,
    /// Error level the interval was built for.
    pub alpha: f64,
}

impl Interval {
    /// `(estimate − reference) / sqrt(variance)`: the z statistic against a reference value.
    pub fn z_against(&self, reference: f64) -> f64 {
        if self.variance > 0.0 && self.variance.is_finite() {
            (self.estimate - reference) / self.variance.sqrt()
        } else {
            0.0
        }
    }
}

/// Always-valid interval for `p_canary − p_reference`, where the canary has `c_bad` of `c_n`
/// bad requests and the reference `r_bad` (may be fractional: an interpolated count) of `r_n`.
/// Agresti–Caffo smoothing (one pseudo-error and one pseudo-success per side) for the variance;
/// centred on the raw difference.
pub fn two_prop_cs(c_bad: f64, c_n: f64, r_bad: f64, r_n: f64, alpha: f64) -> Interval {
    let (pc, nc) = smoothed(c_bad, c_n);
    let (pr, nr) = smoothed(r_bad, r_n);
    let v = pc * (1.0 - pc) / nc + pr * (1.0 - pr) / nr;
    let r = cs_radius(v, alpha);
    let raw = |bad: f64, n: f64| {
        if n > 0.0 {
            (bad / n).clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    // Centre on the raw (unbiased) difference: the smoothed one is pulled toward 0.5 more on
    // the side with fewer requests (usually the canary), which would bias Δ upward by up to
    // ~1/n_canary. Smoothing is used where it is needed: a nonzero variance at zero counts.
    let centre = raw(c_bad, c_n) - raw(r_bad, r_n);
    Interval {
        estimate: centre,
        low: (centre - r).max(-1.0),
        high: (centre + r).min(1.0),
        variance: v,
        alpha,
    }
}

/// Always-valid interval for a single proportion (`bad` of `n`), smoothed variance, raw centre.
pub fn one_prop_cs(bad: f64, n: f64, alpha: f64) -> Interval {
    let (p, nn) = smoothed(bad, n);
    let v = p * (1.0 - p) / nn;
    let r = cs_radius(v, alpha);
    let raw = if n > 0.0 { (bad / n).clamp(0.0, 1.0) } else { 0.0 };
    Interval { estimate: raw, low: (raw - r).max(0.0), high: (raw + r).min(1.0), variance: v, alpha }
}

/// Share of a check's α given to the confidence sequence of step `step` (1-based):
/// `1/(j·(j+1))`, which sums to 1 over all steps however many there are.
pub fn step_alpha_share(step: u32) -> f64 {
    let j = f64::from(step.max(1));
    1.0 / (j * (j + 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-12)
    }

    #[test]
    fn normal_quantiles_match_scipy() {
        // scipy.stats.norm.ppf(0.995) = 2.5758293035489004
        assert!(close(normal_quantile(0.995), 2.5758293035489004, 1e-9));
        // scipy.stats.norm.ppf(0.975) = 1.959963984540054
        assert!(close(normal_quantile(0.975), 1.959963984540054, 1e-9));
        // scipy.stats.norm.ppf(0.0005) = -3.2905267314918945
        assert!(close(normal_quantile(0.0005), -3.2905267314918945, 1e-9));
        assert_eq!(normal_quantile(f64::NAN), f64::INFINITY);
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
    }

    #[test]
    fn cs_radius_matches_reference_formula() {
        // r = lambda V, a: np.sqrt(V*(1+V/0.05)*(2*np.log(1/a)+np.log(1+0.05/V)))
        // r(0.25/22, 0.0025) = 0.43661915890468894
        assert!(close(cs_radius(0.25 / 22.0, 0.0025), 0.43661915890468894, 1e-9));
        // r(1e-4, 0.005) = 0.04104493551688113
        assert!(close(cs_radius(1e-4, 0.005), 0.04104493551688113, 1e-9));
        // r(1e-6, 0.01) = 0.004475549045531687
        assert!(close(cs_radius(1e-6, 0.01), 0.004475549045531687, 1e-9));
        assert_eq!(cs_radius(0.0, 0.01), f64::INFINITY);
        assert_eq!(cs_radius(f64::NAN, 0.01), f64::INFINITY);
        assert_eq!(cs_radius(1e-4, 0.0), f64::INFINITY);
    }

    #[test]
    fn cs_is_wider_than_fixed_horizon_interval() {
        // The price of looking every interval: at V = 1e-4, α = 0.01 the fixed-horizon
        // two-sided radius is norm.ppf(0.995)*0.01 = 0.025758293035489; the CS is wider.
        let fixed = normal_quantile(0.995) * 0.01;
        assert!(close(fixed, 0.025758293035489, 1e-9));
        assert!(cs_radius(1e-4, 0.01) > fixed);
    }

    #[test]
    fn two_proportion_interval_matches_reference() {
        // Agresti–Caffo: pc=(50+1)/(1000+2), pb=(10+1)/(10000+2)
        // V = pc*(1-pc)/1002 + pb*(1-pb)/10002 = 4.832098924129518e-05
        // z vs 0.01 = (50/1000 - 10/10000 - 0.01)/sqrt(V) = 5.610437111943225
        let i = two_prop_cs(50.0, 1000.0, 10.0, 10000.0, 0.005);
        assert!(close(i.variance, 4.832098924129518e-05, 1e-9));
        assert!(close(i.estimate, 0.049, 1e-12));
        assert!(close(i.z_against(0.01), 5.610437111943225, 1e-9));
        // centre = 0.05 - 0.001 (raw); r(V, 0.005) = 0.029126374350029124
        assert!(close(i.low, 0.049 - 0.029126374350029124, 1e-9));
    }

    #[test]
    fn degenerate_counts_give_wide_but_finite_intervals() {
        let i = two_prop_cs(0.0, 0.0, 0.0, 0.0, 0.01);
        assert!(i.low <= 0.0 && i.high >= 0.0);
        let i = two_prop_cs(f64::NAN, f64::INFINITY, -3.0, f64::NAN, f64::NAN);
        assert!(i.low.is_finite() && i.high.is_finite());
        let i = one_prop_cs(5.0, 3.0, 0.01);
        assert!(i.low >= 0.0 && i.high <= 1.0);
    }

    #[test]
    fn step_alpha_shares_sum_to_one() {
        let s: f64 = (1..100_000).map(step_alpha_share).sum();
        assert!(s < 1.0 && s > 0.9999);
        assert_eq!(step_alpha_share(0), 0.5);
    }
}
