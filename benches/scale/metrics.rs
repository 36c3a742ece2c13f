//! The driver's metrics source: Prometheus replaced by a constant healthy answer, so the
//! bench measures canaryd and the API, and counts the queries a real Prometheus would get.

use canaryd::observation::ISTIO_DEFAULT_BUCKETS_MS as ISTIO_BUCKETS_MS;
use canaryd::observation::{Histogram, SideObservation};
use canaryd::prometheus::{MetricsSource, QueryError, WorkloadKey};
use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Healthy, identical counts for every requested workload; counts what Prometheus would be asked.
pub struct SyntheticMetrics {
    observe_calls: AtomicU64,
    scalar_calls: AtomicU64,
    pub keys_asked: AtomicU64,
    healthy: SideObservation,
}

/// One side's healthy window: 3,000 requests in a 30 s window (100 rps), 0.1 % errors, medians
/// around 25-50 ms in Istio's buckets.
pub fn healthy() -> SideObservation {
    let mut latency = Histogram::empty(ISTIO_BUCKETS_MS);
    for (i, c) in [(2, 300), (3, 600), (4, 1200), (5, 700), (6, 150), (7, 40), (8, 10)] {
        latency.counts[i] = c;
    }
    SideObservation { requests: 3000, errors: 3, latency: Some(latency) }
}

impl SyntheticMetrics {
    pub fn new() -> Self {
        let healthy = healthy();
        SyntheticMetrics {
            observe_calls: AtomicU64::new(0),
            scalar_calls: AtomicU64::new(0),
            keys_asked: AtomicU64::new(0),
            healthy,
        }
    }

    /// PromQL queries so far: each grouped `observe_sides` is 2 queries (raw request counters,
    /// raw latency buckets), each custom-check scalar is 1.
    pub fn queries(&self) -> u64 {
        2 * self.observe_calls.load(Ordering::Relaxed) + self.scalar_calls.load(Ordering::Relaxed)
    }
}

impl MetricsSource for SyntheticMetrics {
    async fn observe_sides(
        &self,
        keys: &[WorkloadKey],
        _end: Timestamp,
        _window: Duration,
    ) -> Result<HashMap<WorkloadKey, SideObservation>, QueryError> {
        self.observe_calls.fetch_add(1, Ordering::Relaxed);
        self.keys_asked.fetch_add(keys.len() as u64, Ordering::Relaxed);
        Ok(keys.iter().map(|k| (k.clone(), self.healthy.clone())).collect())
    }

    async fn query_scalar(&self, _promql: &str, _at: Timestamp) -> Result<f64, QueryError> {
        self.scalar_calls.fetch_add(1, Ordering::Relaxed);
        Ok(0.0)
    }
}
