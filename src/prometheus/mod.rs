//! Prometheus adapter: the HTTP query API, Istio observation queries, custom-check templates,
//! and helpers that run a real Prometheus for tests, backtests and the demo.
//!
//! - [`PrometheusConfig`] (in `config`): URL, credentials as [`Secret`]s, TLS, limits.
//! - [`PrometheusClient`] (in `client`): queries with retries, typed errors, bounded answers.
//! - [`PrometheusClient::observe_sides`] (in `istio`): per-workload requests, 5xx errors and
//!   latency histograms from Istio's standard metrics, three queries per cycle for all rollouts.
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

impl PrometheusClient {
    /// For every key: requests, 5xx errors and the latency histogram (milliseconds) over the
    /// `window` before `end`, from `increase()` evaluated at `end`.
    ///
    /// Three queries whatever the number of keys. Prometheus 2.x range selectors include both
    /// ends, so with samples aligned to `end - window` and `end` the counts are exact; otherwise
    /// `increase()` extrapolates and counts are rounded to whole requests. A key with no series
    /// gets [`SideObservation::default()`] (zero requests: the judge says Inconclusive); a key
    /// with requests but no histogram series gets `latency: None`. A failed query fails every
    /// key.
    pub async fn observe_sides(
        &self,
        keys: &[WorkloadKey],
        end: jiff::Timestamp,
        window: Duration,
    ) -> Result<HashMap<WorkloadKey, SideObservation>, QueryError> {
        istio::observe_sides(self, keys, end, window).await
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

    fn query_scalar(
        &self,
        promql: &str,
        at: jiff::Timestamp,
    ) -> impl Future<Output = Result<f64, QueryError>> + Send {
        (**self).query_scalar(promql, at)
    }
}
