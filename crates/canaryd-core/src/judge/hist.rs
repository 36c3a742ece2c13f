//! Histogram arithmetic for the latency checks: cumulative counts at bucket bounds, linear
//! interpolation inside a bucket (as Prometheus' `histogram_quantile` does), and a saturating
//! accumulator. Malformed histograms (unsorted or non-finite bounds, length mismatches) are
//! handled, never trusted: every function here is total.

use crate::observation::Histogram;

/// A histogram reduced to what the tests need: strictly increasing finite bounds (ms), the
/// number of requests at or below each bound, and the total.
#[derive(Debug, Clone, PartialEq)]
pub struct Cumulative {
    /// Upper bounds, milliseconds, strictly increasing, finite, > 0.
    pub bounds: Vec<f64>,
    /// Requests at or below `bounds[i]`.
    pub le: Vec<f64>,
    /// All requests, including the `+Inf` bucket.
    pub total: f64,
}

impl Cumulative {
    /// Builds the cumulative form; `None` when the bounds are unusable (not strictly increasing,
    /// not finite, or not positive).
    pub fn new(h: &Histogram) -> Option<Cumulative> {
        let n = h.bounds_ms.len().min(h.counts.len());
        let bounds = h.bounds_ms[..n].to_vec();
        if bounds.iter().any(|b| !b.is_finite() || *b <= 0.0) || bounds.windows(2).any(|w| w[0] >= w[1]) {
            return None;
        }
        let mut le = Vec::with_capacity(n);
        let mut acc = 0.0f64;
        for &c in &h.counts[..n] {
            acc += c as f64;
            le.push(acc);
        }
        // Counts beyond the shorter of the two vectors are slower than the last usable bound.
        let extra: f64 = h.counts[n..].iter().map(|&c| c as f64).sum();
        Some(Cumulative { bounds, le, total: acc + extra + h.overflow as f64 })
    }

    fn index_of(&self, b: f64) -> Option<usize> {
        self.bounds.iter().position(|x| (x - b).abs() <= 1e-9 * b.abs().max(1.0))
    }

    /// Requests slower than `bounds[i]`.
    pub fn above(&self, i: usize) -> f64 {
        (self.total - self.le.get(i).copied().unwrap_or(self.total)).max(0.0)
    }

    /// The interpolated `q`-quantile in ms (Prometheus `histogram_quantile` semantics: a rank in
    /// the `+Inf` bucket reports the last finite bound). `None` for an empty histogram.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total.is_nan() || self.total <= 0.0 || self.bounds.is_empty() || !q.is_finite() {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.total;
        let i = match self.le.iter().position(|c| *c >= rank) {
            Some(i) => i,
            None => return self.bounds.last().copied(),
        };
        let (lo, le_lo) = if i == 0 { (0.0, 0.0) } else { (self.bounds[i - 1], self.le[i - 1]) };
        let in_bucket = self.le[i] - le_lo;
        if in_bucket <= 0.0 {
            return Some(self.bounds[i]);
        }
        Some(lo + (self.bounds[i] - lo) * ((rank - le_lo) / in_bucket).clamp(0.0, 1.0))
    }
}

/// Bounds present in both histograms (relative tolerance 1e-9), in increasing order.
pub fn shared_bounds(a: &Cumulative, b: &Cumulative) -> Vec<f64> {
    a.bounds.iter().copied().filter(|x| b.index_of(*x).is_some()).collect()
}

/// Adds `h` into `into` with saturating arithmetic. Same bounds: bucket by bucket. Different
/// bounds: each of `h`'s buckets goes to the first bound of `into` at or above its own upper
/// bound (conservative: never makes a request look faster). An empty `into` takes `h` as is.
pub fn accumulate(into: &mut Histogram, h: &Histogram) {
    if into.bounds_ms.is_empty() && into.counts.is_empty() && into.overflow == 0 {
        *into = h.clone();
        into.counts.resize(into.bounds_ms.len(), 0);
        return;
    }
    into.counts.resize(into.bounds_ms.len(), 0);
    if into.bounds_ms == h.bounds_ms {
        for (a, b) in into.counts.iter_mut().zip(&h.counts) {
            *a = a.saturating_add(*b);
        }
    } else {
        for (bound, count) in h.bounds_ms.iter().zip(&h.counts) {
            match into.bounds_ms.iter().position(|b| b >= bound) {
                Some(i) => into.counts[i] = into.counts[i].saturating_add(*count),
                None => into.overflow = into.overflow.saturating_add(*count),
            }
        }
        // Counts without a bound (malformed input) are slower than anything we know.
        let extra = h.counts.iter().skip(h.bounds_ms.len()).fold(0u64, |a, c| a.saturating_add(*c));
        into.overflow = into.overflow.saturating_add(extra);
    }
    into.overflow = into.overflow.saturating_add(h.overflow);
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::observation::ISTIO_DEFAULT_BUCKETS_MS as ISTIO;

    fn hist(counts: &[(f64, u64)], overflow: u64) -> Histogram {
        let mut h = Histogram::empty(ISTIO);
        for (b, c) in counts {
            let i = ISTIO.iter().position(|x| x == b).unwrap();
            h.counts[i] = *c;
        }
        h.overflow = overflow;
        h
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        // 10 in (25,50], 80 in (50,100], 10 in (100,250]; median rank 50 lies in (50,100]:
        // 50 + 50*(50-10)/80 = 75.0 (numpy: np.interp(50, [10, 90], [50, 100]) = 75.0)
        let c = Cumulative::new(&hist(&[(50.0, 10), (100.0, 80), (250.0, 10)], 0)).unwrap();
        assert_eq!(c.quantile(0.5), Some(75.0));
        // p99: rank 99 in (100,250]: np.interp(99, [90, 100], [100, 250]) = 235.0
        assert!((c.quantile(0.99).unwrap() - 235.0).abs() < 1e-9);
        // First bucket starts at 0 ms: np.interp(5, [0, 10], [0, 0.5]) = 0.25
        let c0 = Cumulative::new(&hist(&[(0.5, 10)], 0)).unwrap();
        assert!((c0.quantile(0.5).unwrap() - 0.25).abs() < 1e-12);
    }

    #[test]
    fn overflow_only_quantile_reports_last_bound() {
        let c = Cumulative::new(&hist(&[], 5)).unwrap();
        assert_eq!(c.quantile(0.5), Some(3600000.0));
    }

    #[test]
    fn malformed_histograms_are_rejected_or_tolerated() {
        let bad = Histogram { bounds_ms: vec![5.0, 1.0], counts: vec![1, 1], overflow: 0 };
        assert!(Cumulative::new(&bad).is_none());
        let nan = Histogram { bounds_ms: vec![f64::NAN], counts: vec![1], overflow: 0 };
        assert!(Cumulative::new(&nan).is_none());
        let short = Histogram { bounds_ms: vec![1.0, 2.0], counts: vec![3], overflow: 1 };
        assert_eq!(Cumulative::new(&short).unwrap().total, 4.0);
        assert_eq!(Cumulative::new(&Histogram::default()).unwrap().quantile(0.5), None);
    }

    #[test]
    fn accumulate_saturates_and_rebuckets() {
        let mut a = hist(&[(50.0, u64::MAX)], 1);
        accumulate(&mut a, &hist(&[(50.0, 5)], u64::MAX));
        assert_eq!(a.counts[5], u64::MAX);
        assert_eq!(a.overflow, u64::MAX);
        let mut coarse = Histogram::empty(&[10.0, 100.0]);
        accumulate(&mut coarse, &hist(&[(50.0, 3), (250.0, 2)], 1));
        assert_eq!(coarse.counts, vec![0, 3]);
        assert_eq!(coarse.overflow, 3);
    }

    #[test]
    fn shared_bounds_are_the_common_ones() {
        let a = Cumulative::new(&hist(&[(50.0, 10), (100.0, 80)], 2)).unwrap();
        let b = Cumulative::new(&Histogram {
            bounds_ms: vec![50.0, 75.0, 100.0],
            counts: vec![1, 2, 3],
            overflow: 0,
        })
        .unwrap();
        let s = shared_bounds(&a, &b);
        assert_eq!(s, vec![50.0, 100.0]);
        assert_eq!(b.above(2), 0.0);
        assert_eq!(b.above(0), 5.0);
    }
}
