//! Fixtures for the judge's tests: observations, latency models, traffic generators.
//! Randomness lives here only (seeded), never in library code.

use crate::observation::{Histogram, Observation, SideObservation};
use crate::policy::Analysis;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution};
use statrs::distribution::{ContinuousCDF, LogNormal};

pub use crate::observation::ISTIO_DEFAULT_BUCKETS_MS as ISTIO;

/// A latency model: a mixture of log-normals, as bucket probabilities over [`ISTIO`].
#[derive(Debug, Clone)]
pub struct Latency {
    /// Probability of each bucket; the last entry is the `+Inf` bucket.
    pub probs: Vec<f64>,
}

impl Latency {
    /// Log-normal with the given median (ms) and log-sd.
    pub fn lognormal(median_ms: f64, sigma: f64) -> Latency {
        Latency::mixture(&[(1.0, median_ms, sigma)])
    }

    /// Mixture of log-normals: `(weight, median ms, log-sd)`.
    pub fn mixture(parts: &[(f64, f64, f64)]) -> Latency {
        let mut probs = vec![0.0; ISTIO.len() + 1];
        for &(w, median, sigma) in parts {
            let d = LogNormal::new(median.ln(), sigma).unwrap();
            let mut prev = 0.0;
            for (i, b) in ISTIO.iter().enumerate() {
                let c = d.cdf(*b);
                probs[i] += w * (c - prev);
                prev = c;
            }
            probs[ISTIO.len()] += w * (1.0 - prev);
        }
        Latency { probs }
    }

    /// Draws a histogram of `n` requests (multinomial through conditional binomials).
    pub fn sample(&self, n: u64, rng: &mut StdRng) -> Histogram {
        let mut h = Histogram::empty(ISTIO);
        let mut left = n;
        let mut mass = 1.0;
        for (i, p) in self.probs.iter().enumerate() {
            if left == 0 {
                break;
            }
            let k = if mass <= 0.0 || i == self.probs.len() - 1 {
                left
            } else {
                let q = (p / mass).clamp(0.0, 1.0);
                Binomial::new(left, q).unwrap().sample(rng)
            };
            if i < ISTIO.len() {
                h.counts[i] = k;
            } else {
                h.overflow = k;
            }
            left -= k;
            mass -= p;
        }
        h
    }

    /// A histogram of `n` requests with the expected counts (rounded), no randomness.
    pub fn expected(&self, n: u64) -> Histogram {
        let mut h = Histogram::empty(ISTIO);
        for (i, p) in self.probs.iter().enumerate() {
            let k = (p * n as f64).round() as u64;
            if i < ISTIO.len() {
                h.counts[i] = k;
            } else {
                h.overflow = k;
            }
        }
        h
    }
}

/// A seeded RNG.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A side with exact counts and the expected histogram of `latency`.
pub fn side(requests: u64, errors: u64, latency: &Latency) -> SideObservation {
    SideObservation { requests, errors, latency: Some(latency.expected(requests)) }
}

/// An observation window of one minute ending at `end`.
pub fn window(end: i64, canary: SideObservation, baseline: SideObservation) -> Observation {
    Observation { start: end - 60, end, canary, baseline, custom: Vec::new() }
}

/// A random side: binomial errors, sampled histogram.
pub fn random_side(n: u64, p_err: f64, latency: &Latency, rng: &mut StdRng) -> SideObservation {
    let errors = Binomial::new(n, p_err).unwrap().sample(rng);
    SideObservation { requests: n, errors, latency: Some(latency.sample(n, rng)) }
}

/// The default analysis (success rate + latency at p99, 99% confidence).
pub fn analysis() -> Analysis {
    Analysis::default()
}

/// The default analysis with latency switched off.
pub fn success_only() -> Analysis {
    let mut a = Analysis::default();
    a.latency.enabled = false;
    a
}
