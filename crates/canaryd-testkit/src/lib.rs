//! Test infrastructure for canaryd's tests and benchmarks; never part of the product.
//!
//! - [`prometheus`]: start a real `prometheus` binary on loopback, backfilled with `promtool`.
//! - [`synthetic`]: OpenMetrics text of synthetic Istio series, for backfilling.
//! - [`smtp`]: a real SMTP server on loopback (AUTH, MIME decoding).
//! - [`http`]: a scripted, recording HTTP server on loopback (webhooks, gates).
//! - [`state`]: readers of what canaryd recorded on the cluster.

pub mod controller;
pub mod http;
pub mod prometheus;
pub mod smtp;
pub mod state;
pub mod synthetic;
