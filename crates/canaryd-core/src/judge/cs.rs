//! Anytime-valid confidence sequences built from the decision's own e-processes (design §2.5),
//! so the interval printed next to a verdict can never contradict it.
//!
//! The abort family runs one restart mixture ([`Restarts`]) per level δ of a grid (H0(δ): the
//! canary is worse by at most δ); the pass family one product per level (H0'(δ): worse by at
//! least δ), current step only. The lower end is the largest δ below which *every* grid level is
//! rejected, the upper end the smallest δ above which every level is rejected. The decisions are
//! read off the same ends: abort ⇔ lower end ≥ tol (never laxer than `M_t(tol) ≥ 1/α`, even
//! where `M_t(·)` is not monotone), pass ⇒ upper end ≤ 2·tol.

use super::eprocess::{log_start_weight, Restarts};
use serde::{Deserialize, Serialize};

/// Grid of levels as multiples of the tolerance. Contains 1 and 2 exactly (the decision
/// levels); dense between them (the zone users ask about), geometric above (gross faults).
pub const MULTIPLES: [f64; 20] = [
    -1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0,
    32.0,
];

/// Levels `tol·m` (fractions), increasing, kept in `[lo, 1)`, duplicates removed.
pub fn levels(tol: f64, lo: f64) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for m in MULTIPLES {
        let d = tol * m;
        if d >= lo && d < 1.0 && out.last().is_none_or(|l| d > *l) {
            out.push(d);
        }
    }
    out
}

/// Abort e-processes, one restart mixture per level, plus the look counter of the current
/// segment (the `k` of the start weights).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AbortFamily {
    /// Informative looks in the current segment.
    pub looks: u32,
    /// Per level: `ln S_t(u)` per bet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<Restarts>,
}

impl AbortFamily {
    /// A new segment (step, extension, restart) starts: start weights restart at `k = 1`.
    pub fn start_segment(&mut self) {
        self.looks = 0;
    }

    /// Adds one informative look of segment `segment`: `log_e[level][bet]`.
    pub fn update(&mut self, segment: u32, log_e: &[Vec<f64>]) {
        self.looks = self.looks.saturating_add(1);
        let lw = log_start_weight(segment, self.looks);
        self.levels.resize(log_e.len(), Restarts::default());
        for (r, e) in self.levels.iter_mut().zip(log_e) {
            r.update(lw, e);
        }
    }

    /// `ln M_t` per level (−∞ where no look yet).
    pub fn log_means(&self, n: usize) -> Vec<f64> {
        (0..n).map(|i| self.levels.get(i).map_or(f64::NEG_INFINITY, Restarts::log_mean)).collect()
    }
}

/// Lower end of the sequence: the largest level such that it and every level below it reached
/// `bar` (log); −∞ when the smallest level did not.
pub fn lower_end(levels: &[f64], log_m: &[f64], bar: f64) -> f64 {
    let mut end = f64::NEG_INFINITY;
    for (d, m) in levels.iter().zip(log_m) {
        if *m >= bar {
            end = *d;
        } else {
            break;
        }
    }
    end
}

/// Upper end: the smallest level such that it and every level above it reached `bar`; +∞ when
/// the largest level did not.
pub fn upper_end(levels: &[f64], log_p: &[f64], bar: f64) -> f64 {
    let mut end = f64::INFINITY;
    for (d, p) in levels.iter().zip(log_p).rev() {
        if *p >= bar {
            end = *d;
        } else {
            break;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_contain_the_decision_points_and_stay_in_range() {
        let l = levels(0.01, -1.0);
        assert_eq!(l.len(), 20);
        assert!(l.contains(&0.01) && l.contains(&0.02));
        let wide = levels(0.05, -1.0);
        assert_eq!(wide.last(), Some(&0.8), "levels stay below 100 pp");
        assert_eq!(levels(0.0, 0.0), vec![0.0]);
        assert_eq!(levels(0.05, 0.0)[0], 0.0);
    }

    #[test]
    fn ends_require_every_level_beyond_them() {
        let l = [-0.01, 0.0, 0.01, 0.02, 0.04];
        assert_eq!(lower_end(&l, &[9.0, 9.0, 6.0, 2.0, 7.0], 5.0), 0.01);
        assert_eq!(lower_end(&l, &[1.0, 9.0, 9.0, 9.0, 9.0], 5.0), f64::NEG_INFINITY);
        assert_eq!(upper_end(&l, &[0.0, 0.0, 6.0, 1.0, 7.0], 5.0), 0.04);
        assert_eq!(upper_end(&l, &[0.0, 0.0, 6.0, 6.0, 7.0], 5.0), 0.01);
        assert_eq!(upper_end(&l, &[9.0; 5], 5.0), -0.01);
        assert_eq!(upper_end(&l, &[0.0; 5], 5.0), f64::INFINITY);
    }
}
