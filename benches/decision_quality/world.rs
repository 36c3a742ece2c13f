//! The simulated world: what the baseline and the canary serve, 5 s bucket by 5 s bucket.
//!
//! A scenario is a deterministic function of time (error rates and latency distributions per
//! side); the randomness is in [`bucket`], which draws one 10 s bucket from a RNG seeded by
//! (run seed, bucket index). Two controllers that route the same weight in the same bucket
//! therefore see the *same* requests (common random numbers): the comparison between canaryd,
//! the Flagger-style rule and the oracle is on identical data wherever their weights agree.

use canaryd::observation::{counted_requests, Histogram, ReportedCounts, SideObservation};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution, Poisson};
use statrs::distribution::{ContinuousCDF, LogNormal};

/// Istio's default `istio_request_duration_milliseconds` bucket bounds.
pub use canaryd::observation::ISTIO_DEFAULT_BUCKETS_MS as ISTIO_MS;
/// Number of histogram categories: the finite buckets plus `+Inf`.
pub const CATS: usize = ISTIO_MS.len() + 1;
/// Resolution of the traffic model: 5 s divides every scrape interval modelled (15/30/60 s)
/// and lets a scrape's phase fall anywhere on a 5 s grid.
pub const BUCKET_SECS: i64 = 5;
/// The whole world is precomputed up to this horizon (3 h): held low-traffic rollouts run long.
pub const HORIZON_SECS: i64 = 3 * 3600;
pub const HORIZON_BUCKETS: usize = (HORIZON_SECS / BUCKET_SECS) as usize;

/// A latency distribution: a mixture of log-normals `(weight, median ms, log-sd)`.
#[derive(Debug, Clone)]
pub struct Latency(pub Vec<(f64, f64, f64)>);

impl Latency {
    pub fn lognormal(median_ms: f64, sigma: f64) -> Self {
        Latency(vec![(1.0, median_ms, sigma)])
    }

    /// Every request `factor` times slower (a lognormal scale shift moves every quantile, the
    /// median and the p99 alike, by the same factor).
    pub fn scaled(&self, factor: f64) -> Self {
        Latency(self.0.iter().map(|&(w, m, s)| (w, m * factor, s)).collect())
    }

    /// A share of requests takes a slow path (cache miss, retry, lock): heavy tail, same median.
    pub fn with_tail(&self, share: f64, median_ms: f64, sigma: f64) -> Self {
        let mut parts: Vec<_> = self.0.iter().map(|&(w, m, s)| (w * (1.0 - share), m, s)).collect();
        parts.push((share, median_ms, sigma));
        Latency(parts)
    }

    /// Probability of each Istio bucket (last entry: `+Inf`).
    pub fn probs(&self) -> [f64; CATS] {
        let mut p = [0.0; CATS];
        for &(w, median, sigma) in &self.0 {
            let d = LogNormal::new(median.ln(), sigma).expect("valid lognormal");
            let mut prev = 0.0;
            for (i, b) in ISTIO_MS.iter().enumerate() {
                let c = d.cdf(*b);
                p[i] += w * (c - prev);
                prev = c;
            }
            p[ISTIO_MS.len()] += w * (1.0 - prev);
        }
        p
    }
}

/// What one side serves during one bucket.
#[derive(Debug, Clone)]
pub struct SideModel {
    /// Probability that a request fails (5xx).
    pub err: f64,
    /// Latency bucket probabilities.
    pub probs: [f64; CATS],
}

/// How the canary differs from the baseline once its fault is on.
#[derive(Debug, Clone)]
pub enum Fault {
    None,
    /// Error rate + this many percentage points.
    ErrorPp(f64),
    /// Every request this factor slower.
    LatencyScale(f64),
    /// A share of requests takes a slow path `(share, median ms, log-sd)`.
    LatencyTail(f64, f64, f64),
    /// A different lognormal `(median ms, log-sd)`: e.g. median ×1.5 with the p99 unchanged.
    LatencyShape(f64, f64),
}

/// How Prometheus turns what the proxies counted into what the judge is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Exact counts of each scrape window, a look at every scrape (the raw-sample data path:
    /// per-series differences with reset handling and lazy series counted from 0 are exact by
    /// construction, so the bench hands the judge the true window sums).
    Raw,
    /// Today's `sum(increase(x[W]))`, rounded, one look per minute: extrapolated per series,
    /// nothing from a series with < 2 samples in the window, a lazy series' first value lost.
    Increase,
}

/// What Prometheus and the mesh do to the counts (the defaults are the ideal world).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Scrape interval, seconds (a multiple of `BUCKET_SECS`).
    pub scrape: i64,
    pub path: Path,
    /// Attempts per failing request at the destination (Istio retries a failure `clusters − 1`
    /// times and `reporter="destination"` counts every attempt); 1: no retries.
    pub clusters: u64,
    /// Share of requests whose caller has a sidecar, so `reporter="source"` counts them once
    /// with their final outcome (1: every caller in the mesh; 0: no source series). canaryd
    /// picks the counts with `observation::counted_requests`, as the daemon does.
    pub source_coverage: f64,
    /// The 5xx series exists only from a side's first error (and again after a reset).
    pub lazy: bool,
    /// The canary's counters restart from 0 at this second (a container restart).
    pub reset_at: Option<i64>,
}

impl Default for Shape {
    fn default() -> Self {
        Shape { scrape: 15, path: Path::Raw, clusters: 1, source_coverage: 1.0, lazy: false, reset_at: None }
    }
}

/// What happens to both sides alike (the environment: dependencies, load).
#[derive(Debug, Clone)]
pub enum Common {
    Steady,
    /// Both sides' error rate jumps by `err_pp` and latency by `lat_factor` for `secs` seconds
    /// from each start (a dependency blip).
    Blips {
        starts: Vec<i64>,
        secs: i64,
        err_pp: f64,
        lat_factor: f64,
    },
    /// Both sides drift linearly from the base to `err_to` (fraction) and latency × `lat_to`
    /// over `secs`, then stay there (evening load, a slowly degrading dependency).
    Drift {
        secs: i64,
        err_to: f64,
        lat_to: f64,
    },
}

/// Baseline latency of every scenario: median 45 ms, p99 ≈ 230 ms (p99 from the Istio buckets
/// ≈ 246 ms), comfortably inside Flagger's 500 ms.
pub fn base_latency() -> Latency {
    Latency::lognormal(45.0, 0.7)
}

/// One scenario: a healthy or faulty canary in an environment.
pub struct Scenario {
    pub name: String,
    /// A healthy canary must promote; a faulty one must abort.
    pub healthy: bool,
    /// Baseline error rate (fraction).
    pub base_err: f64,
    /// When the canary's fault starts, seconds after the rollout started (0: from the start).
    pub onset: i64,
    pub fault: Fault,
    pub common: Common,
    pub shape: Shape,
    /// `(canary, baseline)` per bucket, precomputed over the horizon.
    models: Vec<(SideModel, SideModel)>,
}

impl Scenario {
    pub fn new(name: &str, healthy: bool, base_err: f64, onset: i64, fault: Fault, common: Common) -> Self {
        let shape = Shape::default();
        let mut s = Scenario {
            name: name.to_string(),
            healthy,
            base_err,
            onset,
            fault,
            common,
            shape,
            models: Vec::new(),
        };
        s.models = (0..HORIZON_BUCKETS).map(|i| s.model_at(i as i64 * BUCKET_SECS)).collect();
        s
    }

    fn model_at(&self, t: i64) -> (SideModel, SideModel) {
        let (err, lat_factor) = match &self.common {
            Common::Steady => (self.base_err, 1.0),
            Common::Blips { starts, secs, err_pp, lat_factor } => {
                if starts.iter().any(|s| t >= *s && t < s + secs) {
                    (self.base_err + err_pp / 100.0, *lat_factor)
                } else {
                    (self.base_err, 1.0)
                }
            }
            Common::Drift { secs, err_to, lat_to } => {
                let x = (t as f64 / *secs as f64).min(1.0);
                (self.base_err + x * (err_to - self.base_err), 1.0 + x * (lat_to - 1.0))
            }
        };
        let lat = base_latency().scaled(lat_factor);
        let baseline = SideModel { err, probs: lat.probs() };
        // Healthy scenarios may differ too (within tolerance): the fault is what the canary does.
        let on = t >= self.onset;
        let canary = match (&self.fault, on) {
            (Fault::ErrorPp(pp), true) => {
                SideModel { err: (err + pp / 100.0).min(1.0), probs: baseline.probs }
            }
            (Fault::LatencyScale(f), true) => SideModel { err, probs: lat.scaled(*f).probs() },
            (Fault::LatencyTail(share, m, s), true) => {
                SideModel { err, probs: lat.with_tail(*share, *m, *s).probs() }
            }
            (Fault::LatencyShape(m, s), true) => {
                SideModel { err, probs: Latency::lognormal(m * lat_factor, *s).probs() }
            }
            _ => baseline.clone(),
        };
        (canary, baseline)
    }

    pub fn with_shape(mut self, shape: Shape) -> Self {
        self.shape = shape;
        self
    }

    /// `(canary, baseline)` models of bucket `idx`.
    pub fn models(&self, idx: usize) -> &(SideModel, SideModel) {
        &self.models[idx.min(HORIZON_BUCKETS - 1)]
    }

    /// First bucket in which the fault is on (0 for healthy scenarios: everything counts).
    pub fn onset_bucket(&self) -> usize {
        if self.healthy {
            0
        } else {
            (self.onset / BUCKET_SECS) as usize
        }
    }
}

/// One 5 s bucket of both sides: what the destination proxies count (attempts) and, for the
/// canary, the requests users actually sent and saw fail (the blast radius; the oracle's data).
pub struct Bucket {
    pub canary: SideObservation,
    pub baseline: SideObservation,
    /// Canary `(requests, failed requests)` as users see them (one per request, retries folded).
    pub canary_true: (u64, u64),
}

pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The RNG of one bucket of one run: independent across runs and buckets, identical for every
/// controller that looks at the same run and bucket.
pub fn bucket_rng(seed: u64, idx: usize, salt: u64) -> SmallRng {
    SmallRng::seed_from_u64(splitmix(splitmix(seed) ^ splitmix(idx as u64 ^ (salt << 32))))
}

fn binomial(n: u64, p: f64, rng: &mut SmallRng) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    Binomial::new(n, p).map(|b| b.sample(rng)).unwrap_or(0)
}

/// A multinomial draw of `n` requests over the latency buckets (conditional binomials).
fn histogram(n: u64, probs: &[f64; CATS], rng: &mut SmallRng) -> Histogram {
    let mut h = Histogram::empty(ISTIO_MS);
    let (mut left, mut mass) = (n, 1.0);
    for (i, p) in probs.iter().enumerate() {
        if left == 0 {
            break;
        }
        let k =
            if i == CATS - 1 || mass <= 0.0 { left } else { binomial(left, (p / mass).clamp(0.0, 1.0), rng) };
        if i < ISTIO_MS.len() {
            h.counts[i] = k;
        } else {
            h.overflow = k;
        }
        left -= k;
        mass -= p;
    }
    h
}

/// One side's bucket: `(what canaryd counts, (requests, failed requests))`. With retry
/// clusters every failing request is `c` failed attempts at the destination (each attempt is a
/// request and a latency observation there); the user sees one failed request, and so does the
/// caller's proxy for the `coverage` share of requests whose caller has one. The request counts
/// are chosen from the two views as the daemon chooses them; latency is the destination's.
fn side(n: u64, m: &SideModel, c: u64, coverage: f64, rng: &mut SmallRng) -> (SideObservation, (u64, u64)) {
    let errors = binomial(n, m.err, rng);
    let attempts = n + errors * (c - 1);
    let destination = ReportedCounts { requests: attempts, errors: errors * c };
    // Full coverage draws nothing, so scenarios without retries keep their random streams.
    let (covered_ok, covered_err) = if coverage >= 1.0 {
        (n - errors, errors)
    } else {
        (binomial(n - errors, coverage, rng), binomial(errors, coverage, rng))
    };
    let source = ReportedCounts { requests: covered_ok + covered_err, errors: covered_err };
    let (counted, _) = counted_requests(source, destination);
    let obs = SideObservation {
        requests: counted.requests,
        errors: counted.errors,
        latency: Some(histogram(attempts, &m.probs, rng)),
    };
    (obs, (n, errors))
}

/// Draws bucket `idx` of run `seed` at `rate` req/s on the route with `weight`% on the canary.
/// Route traffic is Poisson; the split is binomial (Istio routes request by request).
pub fn bucket(sc: &Scenario, rate: f64, seed: u64, idx: usize, weight: u32) -> Bucket {
    let mut rng = bucket_rng(seed, idx, 0);
    let lambda = rate * BUCKET_SECS as f64;
    let total = Poisson::new(lambda).map(|p| p.sample(&mut rng) as u64).unwrap_or(0);
    let nc = binomial(total, f64::from(weight.min(100)) / 100.0, &mut rng);
    let (cm, bm) = sc.models(idx);
    // Separate streams per side, so the canary's draws do not shift the baseline's.
    let mut rc = bucket_rng(seed, idx, 1);
    let mut rb = bucket_rng(seed, idx, 2);
    let (c, coverage) = (sc.shape.clusters.max(1), sc.shape.source_coverage);
    let (canary, canary_true) = side(nc, cm, c, coverage, &mut rc);
    Bucket { canary, baseline: side(total - nc, bm, c, coverage, &mut rb).0, canary_true }
}
