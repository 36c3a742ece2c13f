//! canaryd's functional core: everything that decides, nothing that talks.
//!
//! `policy` (the validated, compiled policy), `plan`, `schedule`, `observation`, `counters`
//! (exact increments from raw counter samples), `judge`,
//! `engine`, `istio` (VirtualService routing on JSON), `promql` (templates and escaping),
//! `format` (how numbers read in verdicts, alerts and backtests) and `secret` take data and
//! time as arguments and return data. This crate's Cargo.toml holds no async runtime, HTTP,
//! SMTP or Kubernetes client, so the rule cannot erode by accident.

pub mod counters;
pub mod engine;
pub mod format;
pub mod istio;
pub mod judge;
pub mod observation;
pub mod plan;
pub mod policy;
pub mod promql;
pub mod schedule;
pub mod secret;
pub mod workload;
