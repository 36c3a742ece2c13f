//! Betting e-processes: the machinery shared by the success-rate, guardrail and latency checks
//! (design `judge-v3` §2.2, §2.3, §3, §4). All logs are natural logs; counts are requests.
//!
//! An *e-value* is a nonnegative statistic with expectation ≤ 1 under the hypothesis it tests;
//! a product of per-look e-values whose bets are fixed before the look's outcomes are seen is a
//! nonnegative supermartingale, so by Ville's inequality it ever reaches `1/α` with probability
//! ≤ α — at every look, however many, whatever the stopping rule. Each function `*_abort` /
//! `*_pass` below returns the log of one look's e-value (its validity argument is next to it);
//! [`Restarts`] mixes a grid of bets and start points into one e-process.

use serde::{Deserialize, Serialize};

/// Bets of the abort e-processes (success rate, guardrails), per unit of "bad" outcome:
/// u ≈ 1 is log-optimal against `+2·tol` at a 0 % baseline, u ≈ 0.2 at 5 %; the large bets catch
/// gross faults at the first look (+50 pp at 10 % weight: ≈ 2.3 nats per failed canary request).
pub const ABORT_BETS: [f64; 9] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// Bets of the latency abort e-process (design §4.2).
pub const LATENCY_BETS: [f64; 5] = [0.5, 1.0, 2.0, 4.0, 8.0];

/// Largest factor by which one baseline error may shrink the two-sample abort e-value
/// (`1 − a ≥ 1 − A_MAX`): a baseline error costs at most ln 10.
pub const A_MAX: f64 = 0.9;

/// Largest pass bet `v` (a canary error then costs at most ln 50).
pub const V_MAX: f64 = 0.98;

/// Floor of stored log values: a finite stand-in for −∞ that survives JSON.
pub const FLOOR: f64 = -1e9;

/// Stored log e-values are rounded *down* to this resolution (nats): the persisted state stays
/// short and rounding never overstates evidence.
const RESOLUTION: f64 = 1e-6;

/// Rounds a log e-value down to [`RESOLUTION`] and clamps it to [`FLOOR`], so stored values are
/// short in JSON and never larger than the exact ones.
pub fn store(x: f64) -> f64 {
    if x.is_nan() {
        return FLOOR;
    }
    ((x / RESOLUTION).floor() * RESOLUTION).max(FLOOR)
}

/// `ln(e^a + e^b)`, stable, with −∞ handled.
pub fn log_add(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// `ln w_{j,k}` with `w_{j,k} = 1/(j(j+1)) · 1/(k(k+1))`: the prior weight of starting the
/// e-process at look `k` (1-based) of segment `j` (1-based; every step, extension and restart of
/// a step is a segment). Σ over all j, k is 1, so the mixture over start points is one e-process
/// whatever the number of segments and looks.
pub fn log_start_weight(segment: u32, look: u32) -> f64 {
    let j = f64::from(segment.max(1));
    let k = f64::from(look.max(1));
    -(j * (j + 1.0)).ln() - (k * (k + 1.0)).ln()
}

/// Largest abort bet for the two-sample factor at `delta`, given `r = n_c / n_b` (the canary's
/// requests per baseline request this look): keeps `a = r·u/(1 + δ·u) ≤ A_MAX`, and
/// `1 + δ·u > 0` for negative δ. Depends on the request counts only (not on outcomes).
pub fn abort_bet_cap(r: f64, delta: f64) -> f64 {
    let d = r - delta * A_MAX;
    if d > 0.0 {
        A_MAX / d
    } else {
        f64::INFINITY
    }
}

/// ln of the two-sample abort e-value of one look, against H0 `p_c ≤ p_b + δ` (δ a fraction):
///
/// `ln E = x_c·ln(1+u) + x_b·ln(1−a) − n_c·ln(1+δ·u)`, `a = r·u/(1+δ·u)`, `r = n_c/n_b`,
/// with `u` already capped by [`abort_bet_cap`].
///
/// Valid for every `p_b` (design §2.2): with `K_c ~ Bin(n_c, p_c)`, `K_b ~ Bin(n_b, p_b)`,
/// `f(p) = n_c ln(1+(p+δ)u) − n_c ln(1+δu) + n_b ln(1−p·a)` is concave, `f(0) = 0` and
/// `f'(0) = 0` at this `a`, so `ln E[E] ≤ f(p_b) ≤ 0`: the unknown baseline rate cancels.
/// Exact (`E[E] = 1`) at `p_b = 0, p_c = δ`. `None` without baseline requests (then `p_b` is
/// unconstrained and nothing can be shown).
pub fn two_sample_abort(xc: f64, xb: f64, nc: f64, nb: f64, delta: f64, u: f64) -> Option<f64> {
    if nb <= 0.0 {
        return None;
    }
    let r = nc / nb;
    let u = u.min(abort_bet_cap(r, delta));
    let a = r * u / (1.0 + delta * u);
    let l = xc * u.ln_1p() + xb * (-a).ln_1p() - nc * (delta * u).ln_1p();
    l.is_finite().then_some(l)
}

/// ln of the two-sample pass e-value of one look, against H0' `p_c ≥ p_b + δ`:
///
/// `ln P = x_c·ln(1−v) + x_b·ln(1+b) − n_c·ln(1−δ·v)`, `b = r·v/(1−δ·v)`, `r = n_c/max(n_b, 1)`.
///
/// Valid for every `p_b` (design §2.3): `g(p) = n_c ln(1−(p+δ)v) − n_c ln(1−δv) + n_b ln(1+p·b)`
/// is concave with `g(0) = 0`, `g'(0) = 0`, so `E[P] ≤ 1` under H0'. Requires `δ·v < 1`.
pub fn two_sample_pass(xc: f64, xb: f64, nc: f64, nb: f64, delta: f64, v: f64) -> Option<f64> {
    if !(v > 0.0 && v < 1.0 && delta * v < 1.0) {
        return None;
    }
    let r = nc / nb.max(1.0);
    let b = r * v / (1.0 - delta * v);
    let l = xc * (-v).ln_1p() + xb * b.ln_1p() - nc * (-delta * v).ln_1p();
    l.is_finite().then_some(l)
}

/// ln of the one-sample abort e-value, against H0 `p ≤ level`:
/// `x·ln(1+u) − n·ln(1+level·u)`; `E[(1+u)^X] = (1+p·u)^n ≤ (1+level·u)^n`. Exact at `p = level`.
pub fn one_sample_abort(x: f64, n: f64, level: f64, u: f64) -> f64 {
    let l = x * u.ln_1p() - n * (level * u).ln_1p();
    if l.is_finite() {
        l
    } else {
        0.0
    }
}

/// ln of the one-sample pass e-value, against H0' `p ≥ level`:
/// `x·ln(1−v) − n·ln(1−level·v)`; `E[(1−v)^X] = (1−p·v)^n ≤ (1−level·v)^n`.
pub fn one_sample_pass(x: f64, n: f64, level: f64, v: f64) -> f64 {
    if !(v > 0.0 && v < 1.0 && level * v < 1.0) {
        return 0.0;
    }
    let l = x * (-v).ln_1p() - n * (-level * v).ln_1p();
    if l.is_finite() {
        l
    } else {
        0.0
    }
}

/// Largest plug-in pass bet (design §2.3). A canary error costs `ln(1/(1−v))`: at 0.98 a look in
/// which a shared dependency fails both sides alike costs the step ~4× what it costs at 0.7,
/// while at a healthy 0.1–1 % the expected growth at 0.7 is within ~20 % of the best bet (the
/// decision-quality benchmark's A/A and common-mode cells set it; noisy early estimates also
/// over-bet less).
pub const PLUG_IN_V_MAX: f64 = 0.7;

/// Plug-in pass bet of the two-sample pass factor (design §2.3): the `v` on the grid
/// 0.02, 0.04, …, [`PLUG_IN_V_MAX`] maximising the expected log growth per canary request
/// `p_c ln(1−v) − ln(1−δv) + (p_b/r) ln(1 + r·v/(1−δv))` at the estimated rates `p_c`, `p_b`
/// (from earlier looks only: the bet must not see this look's outcomes) and `r = n_c/n_b`.
pub fn two_sample_pass_bet(pc: f64, pb: f64, r: f64, delta: f64) -> f64 {
    let r = if r.is_finite() && r > 0.0 { r } else { 1.0 };
    let growth =
        |v: f64| pc * (-v).ln_1p() - (-delta * v).ln_1p() + (pb / r) * (r * v / (1.0 - delta * v)).ln_1p();
    let mut best = (0.02, f64::NEG_INFINITY);
    for i in 1..=49 {
        let v = f64::from(i) * 0.02;
        if delta * v >= 1.0 || v > PLUG_IN_V_MAX + 1e-9 {
            break;
        }
        let g = growth(v);
        if g > best.1 {
            best = (v, g);
        }
    }
    best.0
}

/// Kelly bet of the one-sample pass factor at the estimated rate `p` below `level`:
/// `v* = (level − p)/(level·(1 − p))`, capped at [`V_MAX`]; 0 (no bet) when `p ≥ level`.
pub fn one_sample_pass_bet(p: f64, level: f64) -> f64 {
    if !(level > 0.0 && p < level) {
        return 0.0;
    }
    ((level - p) / (level * (1.0 - p))).clamp(0.0, V_MAX)
}

/// Kelly bet of the one-sample abort factor at the estimated rate `p` above `level`:
/// `u* = (p − level)/(level·(1 − p))`, capped at the largest of [`ABORT_BETS`]; 0 when `p ≤ level`.
pub fn one_sample_abort_bet(p: f64, level: f64) -> f64 {
    if !(level > 0.0 && p > level && p < 1.0) {
        return if p >= 1.0 && p > level { ABORT_BETS[ABORT_BETS.len() - 1] } else { 0.0 };
    }
    ((p - level) / (level * (1.0 - p))).clamp(0.0, ABORT_BETS[ABORT_BETS.len() - 1])
}

/// `(bad + 0.5) / (n + 1)`: a rate estimate for bets (never exactly 0 or 1).
pub fn smoothed_rate(bad: f64, n: f64) -> f64 {
    (bad.max(0.0) + 0.5) / (n.max(0.0) + 1.0)
}

/// A mixture of bets with restarts (design §2.2): per bet `u`,
/// `S_t(u) = (S_{t−1}(u) + w_t)·E_t(u)`, and `M_t = mean_u S_t(u)`. `Z_t = M_t + Σ_{s>t} w_s` is a
/// nonnegative supermartingale with `Z_0 = 1` under H0, so `P(∃t: M_t ≥ 1/α) ≤ α` over every
/// look, step, extension and restart. O(|bets|) state: `ln S` per bet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Restarts {
    /// `ln S_t(u)` per bet; empty before the first look.
    pub log_s: Vec<f64>,
}

impl Restarts {
    /// Adds one look: `log_w` the start weight of this look, `log_e[i]` the log e-value of bet i.
    pub fn update(&mut self, log_w: f64, log_e: &[f64]) {
        self.log_s.resize(log_e.len(), f64::NEG_INFINITY);
        for (s, e) in self.log_s.iter_mut().zip(log_e) {
            let prev = if *s <= FLOOR { f64::NEG_INFINITY } else { *s };
            *s = store(log_add(prev, log_w) + e);
        }
    }

    /// `ln M_t = ln mean_u S_t(u)`; −∞ before any look.
    pub fn log_mean(&self) -> f64 {
        if self.log_s.is_empty() {
            return f64::NEG_INFINITY;
        }
        let total = self.log_s.iter().fold(f64::NEG_INFINITY, |acc, s| log_add(acc, *s));
        total - (self.log_s.len() as f64).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-12)
    }

    #[test]
    fn two_sample_abort_matches_reference() {
        // xc=10, xb=1, nc=20, nb=180, δ=0.01, u=8: r=1/9, a=r*8/1.08
        // 10*log1p(8) + log1p(-a) - 20*log1p(0.08) = 18.701163622992645
        let l = two_sample_abort(10.0, 1.0, 20.0, 180.0, 0.01, 8.0).unwrap();
        assert!(close(l, 18.701163622992645, 1e-9), "{l}");
        // u=64 is capped: r − δ·a_max = 1/9 − 0.009 → u_max = 0.9/(1/9 − 0.009) = 8.8139281828074
        let cap = abort_bet_cap(1.0 / 9.0, 0.01);
        assert!(close(cap, 8.8139281828074, 1e-9), "{cap}");
        let capped = two_sample_abort(10.0, 1.0, 20.0, 180.0, 0.01, 64.0).unwrap();
        let direct = two_sample_abort(10.0, 1.0, 20.0, 180.0, 0.01, cap).unwrap();
        assert!(close(capped, direct, 1e-12));
        assert_eq!(two_sample_abort(1.0, 0.0, 5.0, 0.0, 0.01, 1.0), None);
    }

    #[test]
    fn two_sample_abort_has_expectation_at_most_one_for_every_baseline_rate() {
        // Exact expectation by summing the binomial pmfs (scipy.stats.binom), nc=30, nb=120,
        // δ=0.02, u=4: E = Σ_kc Σ_kb pmf·exp(ln E). Worst at p_b = 0, p_c = δ (exactly 1).
        use statrs::distribution::{Binomial, Discrete};
        let (nc, nb, d) = (30u64, 120u64, 0.02);
        for pb in [0.0f64, 0.001, 0.01, 0.1, 0.5, 0.9] {
            let pc: f64 = (pb + d).min(1.0);
            let bc = Binomial::new(pc, nc).unwrap();
            let bb = Binomial::new(pb, nb).unwrap();
            let mut e = 0.0;
            for kc in 0..=nc {
                for kb in 0..=nb {
                    let l = two_sample_abort(kc as f64, kb as f64, nc as f64, nb as f64, d, 4.0).unwrap();
                    e += bc.pmf(kc) * bb.pmf(kb) * l.exp();
                }
            }
            assert!(e <= 1.0 + 1e-9, "p_b {pb}: E = {e}");
            if pb == 0.0 {
                assert!(close(e, 1.0, 1e-9), "exact at p_b = 0: {e}");
            }
        }
    }

    #[test]
    fn two_sample_pass_has_expectation_at_most_one_under_the_bad_hypothesis() {
        use statrs::distribution::{Binomial, Discrete};
        let (nc, nb, d, v) = (40u64, 60u64, 0.04, 0.6);
        for pb in [0.0f64, 0.01, 0.2, 0.9] {
            let pc: f64 = (pb + d).min(1.0);
            let bc = Binomial::new(pc, nc).unwrap();
            let bb = Binomial::new(pb, nb).unwrap();
            let mut e = 0.0;
            for kc in 0..=nc {
                for kb in 0..=nb {
                    let l = two_sample_pass(kc as f64, kb as f64, nc as f64, nb as f64, d, v).unwrap();
                    e += bc.pmf(kc) * bb.pmf(kb) * l.exp();
                }
            }
            assert!(e <= 1.0 + 1e-9, "p_b {pb}: E = {e}");
        }
        // 0 of 500 canary errors, 0 of 4500 baseline errors, δ = 0.02, v = 0.98:
        // -500*log1p(-0.0196) = 9.89731366408977
        let l = two_sample_pass(0.0, 0.0, 500.0, 4500.0, 0.02, 0.98).unwrap();
        assert!(close(l, 9.89731366408977, 1e-9), "{l}");
    }

    #[test]
    fn one_sample_factors_match_reference() {
        // 3*log1p(2) - 100*log1p(0.02) = 1.3155741363863573
        assert!(close(one_sample_abort(3.0, 100.0, 0.01, 2.0), 1.3155741363863573, 1e-9));
        // 0*log1p(-0.5) - 100*log1p(-0.005) = 0.5012541823544282
        assert!(close(one_sample_pass(0.0, 100.0, 0.01, 0.5), 0.5012541823544282, 1e-9));
        assert_eq!(one_sample_pass(1.0, 1.0, 0.5, 2.0), 0.0);
    }

    #[test]
    fn kelly_bets() {
        // v* = (0.01 - 0.005)/(0.01*0.995) = 0.50251…
        assert!(close(one_sample_pass_bet(0.005, 0.01), 0.5025125628140703, 1e-12));
        assert_eq!(one_sample_pass_bet(0.02, 0.01), 0.0);
        // u* = (0.05 - 0.01)/(0.01*0.95) = 4.2105…
        assert!(close(one_sample_abort_bet(0.05, 0.01), 4.2105263157894735, 1e-12));
        assert_eq!(one_sample_abort_bet(0.005, 0.01), 0.0);
        // The two-sample plug-in bet at a 0 % baseline bets as high as it may (errors are rare);
        // at 20 % errors on both sides (a shared dependency down) it bets small.
        assert!((two_sample_pass_bet(0.001, 0.001, 1.0 / 9.0, 0.02) - PLUG_IN_V_MAX).abs() < 1e-9);
        assert!(two_sample_pass_bet(0.2, 0.2, 1.0 / 9.0, 0.02) <= 0.12);
    }

    #[test]
    fn restarts_track_the_mixture_over_start_points() {
        // Brute force: M_t = mean_u Σ_{s≤t} w_s Π_{s..t} E(u).
        let e = [[0.5f64, 2.0], [3.0, 0.1], [1.5, 1.5]];
        let mut r = Restarts::default();
        for t in 0..3 {
            let lw = log_start_weight(1, t as u32 + 1);
            r.update(lw, &[e[t][0].ln(), e[t][1].ln()]);
            let mut m = 0.0;
            for bet in [0, 1] {
                for s in 0..=t {
                    let w = log_start_weight(1, s as u32 + 1).exp();
                    m += w * e[s..=t].iter().map(|row| row[bet]).product::<f64>();
                }
            }
            assert!(close(r.log_mean(), (m / 2.0).ln(), 1e-5), "{t}");
        }
        assert_eq!(Restarts::default().log_mean(), f64::NEG_INFINITY);
        let total: f64 = (1..400).flat_map(|j| (1..400).map(move |k| log_start_weight(j, k).exp())).sum();
        assert!(total < 1.0 && total > 0.99);
    }

    #[test]
    fn stored_values_round_down() {
        assert!(store(1.23456789) <= 1.23456789);
        assert!(close(store(1.23456789), 1.234567, 1e-12));
        assert_eq!(store(f64::NEG_INFINITY), FLOOR);
        assert_eq!(store(f64::NAN), FLOOR);
    }
}
