//! Sequential likelihood-ratio evidence shared by the success-rate and latency checks.
//!
//! Both checks reduce one analysis interval to a 2×2 table: `xc` of the canary's `nc` requests
//! and `xb` of the baseline's `nb` are *bad* (errors, or slower than a bucket bound). Condition
//! on the interval's total of bad requests `E = xc + xb` and on the request counts. When the
//! canary is exactly as good as the baseline, `xc` is hypergeometric — each bad request is the
//! canary's with probability `π = nc / (nc + nb)` — whatever the common bad rate is: unknown
//! baseline rates, drift and common-mode blips drop out. When the canary's bad rate is `ρ` times
//! the baseline's (relative risk), its share of the bad requests is
//! `θ(ρ) = πρ / (πρ + 1 − π)`. The per-interval likelihood ratio of "relative risk ρ" over
//! "no worse" is the binomial ratio
//!
//! `LR(ρ) = (θ/π)^xc · ((1−θ)/(1−π))^xb`.
//!
//! It is increasing in `xc` for ρ > 1, so its expectation is ≤ 1 under any canary that is no
//! worse than the baseline (its share of the bad requests is then ≤ π), and also under the exact
//! hypergeometric null (sampling without replacement is dominated in the convex order,
//! Hoeffding 1963). The product over intervals is therefore a nonnegative supermartingale under
//! H0 for any ρ chosen *before* the canary's share is seen (it may depend on `E`, the request
//! counts and earlier intervals), and by Ville's inequality it ever reaches `1/α` with
//! probability ≤ α — at every look, however many.
//!
//! **Fail side.** ρ is a grid of multiples `g` of the relative risk `ρ_tol` that corresponds to
//! exactly the tolerance (`g = 1`: the point alternative "worse by the tolerance"; larger `g`:
//! gross faults caught at the first interval). A fault that starts late must not be diluted by
//! the healthy intervals before it, so every informative interval `s` (one with `E > 0`) is also
//! a start point of its own product, with prior weight `1/(s(s+1))` (Σ = 1). For each grid point
//! the best start is tracked in O(1): all candidates gain the same `ln LR_t`, so
//! `G_t = max(G_{t−1}, −ln(t(t+1))) + ln LR_t` equals `max_s (ln Π_{s..t} LR − ln(s(s+1)))`.
//! The check fails when `max_g G_t ≥ ln(|grid| / α)`: a union bound over start points and grid
//! points, total ≤ α.
//!
//! **Pass side.** The reverse ratio (no worse over worse by exactly the tolerance, `g = 1`) is
//! summed over the whole rollout and over the current step; it is a supermartingale under a
//! canary that *is* worse by the tolerance, so reaching `1/β` wrongly has probability ≤ β.

use serde::{Deserialize, Serialize};

/// Grid of the success-rate alternatives, as multiples of the relative risk at the tolerance.
pub const SUCCESS_GRID: [f64; 5] = [1.0, 4.0, 16.0, 64.0, 256.0];
/// Grid of the latency alternatives (per bucket bound).
pub const LATENCY_GRID: [f64; 3] = [1.0, 4.0, 16.0];

/// Floor of the fail statistics (a finite stand-in for −∞ that survives JSON).
const FLOOR: f64 = -1e9;

/// The canary's share of the bad requests when its bad rate is `rho` times the baseline's.
pub fn share_at(pi: f64, rho: f64) -> f64 {
    let t = pi * rho / (pi * rho + 1.0 - pi);
    t.max(pi).min(1.0 - 1e-12)
}

/// `ln LR(ρ)` of one interval: `xc ln(θ/π) + xb ln((1−θ)/(1−π))`; 0 for degenerate input.
pub fn cond_llr(xc: f64, xb: f64, pi: f64, rho: f64) -> f64 {
    if !(pi > 0.0 && pi < 1.0 && rho.is_finite() && rho >= 1.0 && xc >= 0.0 && xb >= 0.0) {
        return 0.0;
    }
    let th = share_at(pi, rho);
    let l = xc * (th / pi).ln() + xb * ((1.0 - th) / (1.0 - pi)).ln();
    if l.is_finite() {
        l
    } else {
        0.0
    }
}

/// `ln(t(t+1))`: the price of start point `t` (its prior weight is `1/(t(t+1))`).
pub fn start_cost(t: u32) -> f64 {
    let t = f64::from(t.max(1));
    (t * (t + 1.0)).ln()
}

/// Sequential evidence of one comparison (the success rate, or one latency bucket bound).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Seq {
    /// Informative intervals so far (at least one bad request on either side).
    pub t: u32,
    /// Per grid point: `max_s (ln Π_{s..t} LR − ln(s(s+1)))` (empty before any data).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fail: Vec<f64>,
    /// `ln` of "no worse" over "worse by exactly the tolerance", whole rollout.
    pub pass: f64,
    /// The same, current step only.
    pub step_pass: f64,
    /// The relative risk at the tolerance used by the last informative interval.
    pub rho: f64,
}

impl Seq {
    /// Adds one interval: `xc`/`xb` bad requests, canary share `pi` of the requests, relative
    /// risk `rho_tol` at the tolerance (chosen without looking at how `E` splits) for the fail
    /// side and `rho_pass` for the pass side (usually the same).
    pub fn update(&mut self, grid: &[f64], xc: f64, xb: f64, pi: f64, rho_tol: f64, rho_pass: f64) {
        let ok = xc >= 0.0 && xb >= 0.0 && xc + xb > 0.0 && pi > 0.0 && pi < 1.0;
        if !ok || !rho_tol.is_finite() || !rho_pass.is_finite() {
            return;
        }
        let rho_tol = rho_tol.max(1.0);
        self.t = self.t.saturating_add(1);
        let restart = -start_cost(self.t);
        self.fail.resize(grid.len(), FLOOR);
        for (f, g) in self.fail.iter_mut().zip(grid) {
            let l = cond_llr(xc, xb, pi, (rho_tol * g).min(1e9));
            *f = (f.max(restart) + l).max(FLOOR);
        }
        let l1 = cond_llr(xc, xb, pi, rho_pass.max(1.0));
        self.pass -= l1;
        self.step_pass -= l1;
        self.rho = rho_tol;
    }

    /// `max_g G_t − ln |grid|`: the log of the weighted likelihood ratio of the best start point
    /// and grid point, with the start point's price paid. Fail when ≥ `ln(1/α)`. `None` before
    /// any informative interval.
    pub fn fail_stat(&self, grid_len: usize) -> Option<f64> {
        let m = self.fail.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (m > FLOOR).then(|| m - (grid_len.max(1) as f64).ln())
    }

    /// Called at a step boundary.
    pub fn start_step(&mut self) {
        self.step_pass = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-12)
    }

    #[test]
    fn conditional_llr_matches_scipy() {
        // from scipy.stats import binom
        // pi=0.1; th=pi*11/(pi*11+0.9)  # = 0.55
        // binom.logpmf(6,6,th)-binom.logpmf(6,6,pi) = 10.228488553430552
        assert!(close(cond_llr(6.0, 0.0, 0.1, 11.0), 10.228488553430552, 1e-9));
        // binom.logpmf(3,40,th)-binom.logpmf(3,40,pi) = -20.532201404002702
        assert!(close(cond_llr(3.0, 37.0, 0.1, 11.0), -20.532201404002702, 1e-9));
        assert_eq!(cond_llr(1.0, 1.0, 0.0, 5.0), 0.0);
        assert_eq!(cond_llr(1.0, 1.0, 0.3, 1.0), 0.0);
        assert_eq!(cond_llr(f64::NAN, 1.0, 0.3, 2.0), 0.0);
    }

    #[test]
    fn start_points_are_tracked_in_constant_space() {
        // Brute force over start points equals the recursion.
        let grid = [1.0];
        let data = [(0.0, 5.0), (1.0, 9.0), (0.0, 3.0), (4.0, 2.0), (5.0, 1.0), (0.0, 7.0)];
        let mut s = Seq::default();
        let mut llrs = Vec::new();
        for (t, (xc, xb)) in data.iter().enumerate() {
            s.update(&grid, *xc, *xb, 0.2, 3.0, 3.0);
            llrs.push(cond_llr(*xc, *xb, 0.2, 3.0));
            let brute = (0..=t)
                .map(|st| llrs[st..=t].iter().sum::<f64>() - start_cost(st as u32 + 1))
                .fold(f64::NEG_INFINITY, f64::max);
            assert!(close(s.fail_stat(1).unwrap(), brute, 1e-12), "{t}");
        }
        assert_eq!(s.t, 6);
        assert!(close(s.pass, -llrs.iter().sum::<f64>(), 1e-12));
        // No bad request at all: no information, nothing changes.
        let before = s.clone();
        s.update(&grid, 0.0, 0.0, 0.2, 3.0, 3.0);
        assert_eq!(s, before);
        assert_eq!(Seq::default().fail_stat(5), None);
    }
}
