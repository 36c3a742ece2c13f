//! What the judge is fed: the proxies' counters as Prometheus stores them, read through one of
//! the two data paths of [`Path`].
//!
//! * **Raw**: the exact counts of each scrape window. The raw-sample path (per-series
//!   differences between consecutive samples, a drop read as a restart from 0, a new series
//!   counted from 0) telescopes to exactly what the proxies counted between two looks, whatever
//!   the resets and lazy series, so the bench feeds the window sums directly.
//! * **Increase**: per series (per side: the non-5xx series, the lazy 5xx series, one series per
//!   `le`), Prometheus' `increase()` over the samples in `(T − W, T]` (left-open, Prometheus 3),
//!   extrapolated as `extrapolatedRate` does; summed per side and rounded, as a `sum(increase())`
//!   query read into integer counts would be.

use crate::world::{Path, Shape, BUCKET_SECS, CATS, ISTIO_MS};
use canaryd::observation::{Histogram, SideObservation};

/// One scrape of one side's counters.
#[derive(Clone)]
struct Sample {
    t: i64,
    ok: u64,
    /// `None`: the 5xx series does not exist (yet, or again after a restart).
    err: Option<u64>,
    /// Cumulative `le` counts (`+Inf` last).
    le: [u64; CATS],
}

/// One side's counters (cumulative, since the proxy started) and their scrapes.
#[derive(Clone)]
struct SideCounters {
    now: Sample,
    samples: Vec<Sample>,
    window: SideObservation,
}

fn empty_side() -> SideObservation {
    SideObservation { requests: 0, errors: 0, latency: Some(Histogram::empty(ISTIO_MS)) }
}

impl SideCounters {
    fn new(lazy: bool) -> Self {
        let now = Sample { t: 0, ok: 0, err: if lazy { None } else { Some(0) }, le: [0; CATS] };
        SideCounters { now, samples: Vec::new(), window: empty_side() }
    }

    fn add(&mut self, o: &SideObservation) {
        self.window.add(o);
        self.now.ok += o.requests - o.errors;
        if o.errors > 0 {
            // A lazy series is created at its first error, its first value counting it.
            self.now.err = Some(self.now.err.unwrap_or(0) + o.errors);
        }
        if let Some(h) = &o.latency {
            let mut cum = 0;
            for (i, c) in h.counts.iter().chain(std::iter::once(&h.overflow)).enumerate() {
                cum += c;
                self.now.le[i] += cum;
            }
        }
    }

    /// A container restart: every counter from 0; a lazy 5xx series disappears until the next
    /// error (Prometheus keeps the old samples, so a window can hold values from both lives).
    fn reset(&mut self, lazy: bool) {
        self.now.ok = 0;
        self.now.err = if lazy { None } else { Some(0) };
        self.now.le = [0; CATS];
    }

    fn scrape(&mut self, t: i64) {
        self.now.t = t;
        self.samples.push(self.now.clone());
    }

    /// `round(sum(increase(...[w])))` at `t` of the requests, the 5xx and each `le`.
    fn increase(&self, t: i64, w: i64) -> SideObservation {
        let from = self.samples.partition_point(|s| s.t <= t - w);
        let to = self.samples.partition_point(|s| s.t <= t);
        let win = &self.samples[from..to];
        let series = |f: &dyn Fn(&Sample) -> Option<u64>| -> f64 {
            let pts: Vec<(i64, f64)> = win.iter().filter_map(|s| f(s).map(|v| (s.t, v as f64))).collect();
            increase(&pts, t - w, t).unwrap_or(0.0)
        };
        let ok = series(&|s| Some(s.ok));
        let err = series(&|s| s.err);
        let round = |x: f64| x.round().max(0.0) as u64;
        let requests = round(ok + err);
        let cum: Vec<u64> = (0..ISTIO_MS.len()).map(|i| round(series(&|s| Some(s.le[i])))).collect();
        let total = round(series(&|s| Some(s.le[CATS - 1])));
        SideObservation {
            requests,
            errors: round(err).min(requests),
            latency: Some(Histogram::from_cumulative(ISTIO_MS, &cum, total)),
        }
    }
}

/// Prometheus' `extrapolatedRate` for `increase()` on a counter: the samples' increase with
/// resets added back, extrapolated to the window's edges (but not below zero at the start, and
/// by at most half a sample interval where the series starts or ends inside the window).
/// `None` with fewer than two samples (Prometheus returns no value).
pub fn increase(pts: &[(i64, f64)], start: i64, end: i64) -> Option<f64> {
    if pts.len() < 2 {
        return None;
    }
    let (first, last) = (pts[0], pts[pts.len() - 1]);
    let mut result = last.1 - first.1;
    for w in pts.windows(2) {
        if w[1].1 < w[0].1 {
            result += w[0].1;
        }
    }
    let sampled = (last.0 - first.0) as f64;
    let mut to_start = (first.0 - start) as f64;
    let mut to_end = (end - last.0) as f64;
    let avg = sampled / (pts.len() - 1) as f64;
    if result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    Some(result * (sampled + to_start + to_end) / sampled)
}

/// Both sides' counters for one run, turned into the judge's observations.
pub struct Feed {
    shape: Shape,
    /// Scrapes happen at `phase + k·scrape` (a run's random phase on the 5 s grid).
    phase: i64,
    canary: SideCounters,
    baseline: SideCounters,
}

/// The window an `increase()` look uses: 1 m, widened to 2 scrapes where 1 m would hold a
/// single sample (Prometheus returns nothing; every user widens the window).
pub fn increase_window(scrape: i64) -> i64 {
    60.max(2 * scrape)
}

impl Feed {
    pub fn new(shape: Shape, phase: i64) -> Self {
        Feed { shape, phase, canary: SideCounters::new(shape.lazy), baseline: SideCounters::new(shape.lazy) }
    }

    /// Is `t` (a bucket boundary) a look? Raw looks follow the scrapes; `increase()` looks
    /// follow the engine's own 1 m clock.
    pub fn is_look(&self, t: i64) -> bool {
        match self.shape.path {
            Path::Raw => (t - self.phase).rem_euclid(self.shape.scrape) == 0,
            Path::Increase => t % 60 == 0,
        }
    }

    /// The bucket ending at `t` has been served.
    pub fn push(&mut self, t: i64, canary: &SideObservation, baseline: &SideObservation) {
        self.canary.add(canary);
        self.baseline.add(baseline);
        if self.shape.reset_at.is_some_and(|r| t - BUCKET_SECS < r && r <= t) {
            self.canary.reset(self.shape.lazy);
        }
        if (t - self.phase).rem_euclid(self.shape.scrape) == 0 {
            // Only the increase path reads samples; the raw path's sums are exact already.
            if self.shape.path == Path::Increase {
                self.canary.scrape(t);
                self.baseline.scrape(t);
            }
        }
    }

    /// What a look at `t` reads: `(canary, baseline)`.
    pub fn look(&mut self, t: i64) -> (SideObservation, SideObservation) {
        let w = increase_window(self.shape.scrape);
        let out = match self.shape.path {
            Path::Raw => (self.canary.window.clone(), self.baseline.window.clone()),
            Path::Increase => (self.canary.increase(t, w), self.baseline.increase(t, w)),
        };
        self.canary.window = empty_side();
        self.baseline.window = empty_side();
        out
    }
}
