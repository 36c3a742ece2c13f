//! Observations: what Prometheus (or a simulator) saw for each side over one window.
//!
//! Pure data. The judge consumes these; adapters produce them. Counts, not ratios, so that
//! windows can be summed exactly (a ratio of ratios loses the sample size).

use serde::{Deserialize, Serialize};

/// Latency bucket bounds (milliseconds) of Istio's standard `istio_request_duration_milliseconds`
/// histogram: the one list every simulator, fixture and test uses.
pub const ISTIO_DEFAULT_BUCKETS_MS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0,
    300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// A workload as Istio labels it: `destination_workload_namespace` and `destination_workload`
/// (the Deployment name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Workload (Deployment) name.
    pub workload: String,
}

impl WorkloadKey {
    /// A key from a namespace and a workload name.
    pub fn new(namespace: impl Into<String>, workload: impl Into<String>) -> Self {
        WorkloadKey { namespace: namespace.into(), workload: workload.into() }
    }

    /// The requests to `service` (in `namespace`) that no workload answered: 503s with Envoy's
    /// no-upstream flags (`UH` no healthy upstream, `UF` connection failure), which only the
    /// calling proxy reports, with `destination_workload="unknown"`. A subset without ready
    /// endpoints produces exactly these; they are counted as the canary's errors. The `/`
    /// cannot occur in a workload name, so the key never names a real workload.
    pub fn no_upstream(namespace: impl Into<String>, service: &str) -> Self {
        WorkloadKey { namespace: namespace.into(), workload: format!("{service}/no-upstream") }
    }
}

impl std::fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.workload)
    }
}

/// A latency histogram in Prometheus `le` form: `bounds_ms[i]` is the upper bound (inclusive) of
/// bucket `i` in milliseconds and `counts[i]` the number of requests in that bucket alone
/// (not cumulative). Requests above the last bound are in `overflow` (the `+Inf` bucket minus the
/// last finite one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Upper bounds in milliseconds, strictly increasing, finite.
    pub bounds_ms: Vec<f64>,
    /// Requests per bucket (same length as `bounds_ms`), not cumulative.
    pub counts: Vec<u64>,
    /// Requests slower than the last finite bound.
    pub overflow: u64,
}

impl Histogram {
    /// An empty histogram over the given bucket bounds (milliseconds).
    pub fn empty(bounds_ms: &[f64]) -> Self {
        Histogram { bounds_ms: bounds_ms.to_vec(), counts: vec![0; bounds_ms.len()], overflow: 0 }
    }

    /// Builds a histogram from Prometheus-style cumulative counts (`le` buckets, `+Inf` last).
    /// Cumulative counts that decrease (counter resets inside the window) are clamped to zero.
    pub fn from_cumulative(bounds_ms: &[f64], cumulative: &[u64], total: u64) -> Self {
        let mut counts = Vec::with_capacity(bounds_ms.len());
        let mut prev = 0u64;
        for &c in cumulative.iter().take(bounds_ms.len()) {
            counts.push(c.saturating_sub(prev));
            prev = prev.max(c);
        }
        counts.resize(bounds_ms.len(), 0);
        Histogram { bounds_ms: bounds_ms.to_vec(), counts, overflow: total.saturating_sub(prev) }
    }

    /// Total number of requests in the histogram.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.overflow
    }

    /// Adds another histogram with the same bounds; mismatched bounds are a programming error
    /// upstream, so the other histogram is re-bucketed conservatively (each count goes to the
    /// first bound at or above its own upper bound).
    pub fn add(&mut self, other: &Histogram) {
        if self.bounds_ms.is_empty() && self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        if self.bounds_ms == other.bounds_ms {
            for (a, b) in self.counts.iter_mut().zip(&other.counts) {
                *a += b;
            }
        } else {
            for (bound, count) in other.bounds_ms.iter().zip(&other.counts) {
                match self.bounds_ms.iter().position(|b| b >= bound) {
                    Some(i) => self.counts[i] += count,
                    None => self.overflow += count,
                }
            }
        }
        self.overflow += other.overflow;
    }
}

/// What one side (canary or baseline) served in a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SideObservation {
    /// Requests completed in the window.
    pub requests: u64,
    /// Requests that failed (HTTP 5xx by default) in the window.
    pub errors: u64,
    /// Latency distribution of the window's requests; `None` when the source had no histogram.
    pub latency: Option<Histogram>,
}

impl SideObservation {
    /// Adds another window's counts to this one.
    pub fn add(&mut self, other: &SideObservation) {
        self.requests += other.requests;
        self.errors += other.errors;
        match (&mut self.latency, &other.latency) {
            (Some(a), Some(b)) => a.add(b),
            (None, Some(b)) => self.latency = Some(b.clone()),
            _ => {}
        }
    }
}

/// Which Istio proxy counted a workload's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reporter {
    /// The caller's proxy (`reporter="source"`): one count per request the caller made, with
    /// the response it finally got — after Istio's retries.
    Source,
    /// The workload's own proxy (`reporter="destination"`): one count per *attempt*; a failing
    /// request retried twice counts as three failures.
    Destination,
}

/// Requests and failed requests of one workload in one window, as one reporter counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportedCounts {
    pub requests: u64,
    pub errors: u64,
}

impl ReportedCounts {
    fn succeeded(&self) -> u64 {
        self.requests.saturating_sub(self.errors)
    }
}

/// Smallest share of the destination's successful responses that the source side must also
/// have counted for its counts to be used: below it, callers without a sidecar send a real
/// part of the traffic and the source view is incomplete.
pub const SOURCE_COVERAGE: f64 = 0.9;

/// The counts the judge uses for one workload. Retried attempts are not independent
/// evidence — with Istio's default of 2 retries one failing request is three failures at the
/// destination, which inflates the error count and the evidence against a healthy canary — so
/// the caller's view is preferred. It is complete when every caller has a proxy: then each
/// successful request is exactly one successful attempt at the destination, so the source's
/// successes must match the destination's (≥ [`SOURCE_COVERAGE`] of them). Otherwise the
/// destination's counts are used (retry clusters not removed; see README, "Retries").
pub fn counted_requests(source: ReportedCounts, destination: ReportedCounts) -> (ReportedCounts, Reporter) {
    let covered = source.succeeded() as f64 >= SOURCE_COVERAGE * destination.succeeded() as f64;
    if source.requests > 0 && covered {
        (source, Reporter::Source)
    } else {
        (destination, Reporter::Destination)
    }
}

/// One custom check's value(s) for a window: a single value, or one per side for comparisons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomValue {
    /// The check's name as written in the policy.
    pub name: String,
    /// The value for the canary (or the only value of a threshold check). `None`: no data.
    pub canary: Option<f64>,
    /// The value for the baseline, for comparison checks.
    pub baseline: Option<f64>,
}

/// Everything observed in one analysis window `[start, end)` (Unix seconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Window start, Unix seconds.
    pub start: i64,
    /// Window end, Unix seconds.
    pub end: i64,
    pub canary: SideObservation,
    pub baseline: SideObservation,
    pub custom: Vec<CustomValue>,
}

#[cfg(test)]
mod reporter_tests {
    use super::*;

    fn c(requests: u64, errors: u64) -> ReportedCounts {
        ReportedCounts { requests, errors }
    }

    #[test]
    fn the_callers_view_is_used_when_it_covers_the_traffic() {
        // 1000 requests, 10 failed after 2 retries each: 30 failed attempts at the destination.
        assert_eq!(counted_requests(c(1000, 10), c(1020, 30)), (c(1000, 10), Reporter::Source));
        // Half the callers have no sidecar: the source saw half the successes.
        assert_eq!(counted_requests(c(500, 5), c(1020, 30)), (c(1020, 30), Reporter::Destination));
        // No source series at all (reporter="source" not scraped).
        assert_eq!(counted_requests(c(0, 0), c(1000, 3)), (c(1000, 3), Reporter::Destination));
        // A canary failing every request: no successes anywhere, the source view is complete.
        assert_eq!(counted_requests(c(40, 40), c(120, 120)), (c(40, 40), Reporter::Source));
    }
}
