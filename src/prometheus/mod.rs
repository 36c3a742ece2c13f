//! Prometheus adapter: the HTTP query API, Istio observation queries, custom-check templates,
//! and helpers that run a real Prometheus for tests, backtests and the demo.
//!
//! - [`PrometheusConfig`] (in `config`): URL, credentials as [`Secret`]s, TLS, limits.
//! - [`PrometheusClient`] (in `client`): queries with retries, typed errors, bounded answers.
//! - [`PrometheusClient::observe_sides`] (in `istio`): per-workload requests, 5xx errors and
//!   latency histograms from Istio's standard metrics, exact counts from raw samples, two
//!   queries per cycle for all rollouts.
//! - PromQL templates of custom checks live in the core: `canaryd_core::promql`.
//!
//! [`MetricsSource`] is the seam the engine's shell, the demo and the bench use to swap the
//! source of observations.

mod client;
mod config;
mod istio;
mod observe;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

pub use client::{InstantResult, PrometheusClient, QueryError, Sample, Series};
pub use config::{HeaderValue, PrometheusConfig, Secret, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT};
pub use observe::{observation, workload_keys};

use crate::observation::SideObservation;
pub use crate::observation::WorkloadKey;

/// What one grouped look found: each workload's observation and, where the source can tell,
/// the scrape interval its samples show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedSides {
    pub sides: HashMap<WorkloadKey, SideObservation>,
    /// Median gap between samples of each workload's series; absent when the source cannot
    /// tell (simulators) or a workload has fewer than two samples in a series.
    pub scrape_intervals: HashMap<WorkloadKey, Duration>,
    /// Whose counts each workload's requests are (the caller's proxy when it covers the
    /// traffic); absent for sources without reporters (simulators).
    pub reporters: HashMap<WorkloadKey, crate::observation::Reporter>,
}

impl ObservedSides {
    /// The scrape interval of a rollout's looks: the shorter of its two sides' (a look every
    /// such interval finds new samples on at least one side).
    pub fn scrape_interval(&self, canary: &WorkloadKey, baseline: &WorkloadKey) -> Option<Duration> {
        [canary, baseline].into_iter().filter_map(|k| self.scrape_intervals.get(k).copied()).min()
    }
}

impl PrometheusClient {
    /// [`PrometheusClient::observe_sides`] and the scrape interval of each workload, detected
    /// from the same raw samples.
    pub async fn observe_sides_with_scrape(
        &self,
        keys: &[WorkloadKey],
        end: jiff::Timestamp,
        window: Duration,
    ) -> Result<ObservedSides, QueryError> {
        istio::observe_sides(self, keys, end, window).await
    }

    /// For every key: requests, 5xx errors and the latency histogram (milliseconds) counted
    /// by the proxies in the window `(end - window, end]`.
    ///
    /// Two queries whatever the number of keys, each the raw samples of every series over the
    /// window and [`crate::counters::MARGIN`] before it; the counts are exact sums of
    /// per-series increments ([`crate::counters::increment`]): no extrapolation, resets and
    /// series created inside the window (Istio's lazy 5xx series, new pods) counted from 0.
    /// A sample exactly at `end - window` belongs to the previous window, so consecutive
    /// windows add up to exactly what was counted. A key with no series gets
    /// [`SideObservation::default()`] (zero requests: the judge says Inconclusive); a key with
    /// requests but no histogram series gets `latency: None`. A failed query, or a NaN or
    /// infinite sample, fails every key.
    pub async fn observe_sides(
        &self,
        keys: &[WorkloadKey],
        end: jiff::Timestamp,
        window: Duration,
    ) -> Result<HashMap<WorkloadKey, SideObservation>, QueryError> {
        Ok(istio::observe_sides(self, keys, end, window).await?.sides)
    }
}

/// A source of observations: Prometheus in production, a simulator in the demo and the bench.
pub trait MetricsSource: Send + Sync {
    /// Per-workload observations over the `window` before `end`; see
    /// [`PrometheusClient::observe_sides`] for the contract.
    fn observe_sides(
        &self,
        keys: &[WorkloadKey],
        end: jiff::Timestamp,
        window: Duration,
    ) -> impl Future<Output = Result<HashMap<WorkloadKey, SideObservation>, QueryError>> + Send;

    /// [`MetricsSource::observe_sides`] and, where the source can tell, each workload's scrape
    /// interval (the cadence of `analysis.interval: auto`). By default none is known.
    fn observe_sides_with_scrape(
        &self,
        keys: &[WorkloadKey],
        end: jiff::Timestamp,
        window: Duration,
    ) -> impl Future<Output = Result<ObservedSides, QueryError>> + Send {
        async move {
            let sides = self.observe_sides(keys, end, window).await?;
            Ok(ObservedSides { sides, scrape_intervals: HashMap::new(), reporters: HashMap::new() })
        }
    }

    /// One finite number from a rendered custom-check query evaluated at `at`; see
    /// [`PrometheusClient::query_scalar`].
    fn query_scalar(
        &self,
        promql: &str,
        at: jiff::Timestamp,
    ) -> impl Future<Output = Result<f64, QueryError>> + Send;
}

impl MetricsSource for PrometheusClient {
    fn observe_sides(
        &self,
        keys: &[WorkloadKey],
        end: jiff::Timestamp,
        window: Duration,
    ) -> impl Future<Output = Result<HashMap<WorkloadKey, SideObservation>, QueryError>> + Send {
        PrometheusClient::observe_sides(self, keys, end, window)
    }

    fn observe_sides_with_scrape(
        &self,
        keys: &[WorkloadKey],
        end: jiff::Timestamp,
        window: Duration,
    ) -> impl Future<Output = Result<ObservedSides, QueryError>> + Send {
        PrometheusClient::observe_sides_with_scrape(self, keys, end, window)
    }

    fn query_scalar(
        &self,
        promql: &str,
        at: jiff::Timestamp,
    ) -> impl Future<Output = Result<f64, QueryError>> + Send {
        PrometheusClient::query_scalar(self, promql, at)
    }
}

impl<T: MetricsSource + ?Sized> MetricsSource for std::sync::Arc<T> {
    fn observe_sides(
        &self,
        keys: &[WorkloadKey],
        end: jiff::Timestamp,
        window: Duration,
    ) -> impl Future<Output = Result<HashMap<WorkloadKey, SideObservation>, QueryError>> + Send {
        (**self).observe_sides(keys, end, window)
    }

    fn observe_sides_with_scrape(
        &self,
        keys: &[WorkloadKey],
        end: jiff::Timestamp,
        window: Duration,
    ) -> impl Future<Output = Result<ObservedSides, QueryError>> + Send {
        (**self).observe_sides_with_scrape(keys, end, window)
    }

    fn query_scalar(
        &self,
        promql: &str,
        at: jiff::Timestamp,
    ) -> impl Future<Output = Result<f64, QueryError>> + Send {
        (**self).query_scalar(promql, at)
    }
}
