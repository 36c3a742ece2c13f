//! canaryd: a progressive-delivery analyzer for Kubernetes + Istio.
//!
//! The decisions live in the pure `canaryd-core` crate (policy, plan, schedule, observation,
//! judge, engine, VirtualService routing, PromQL templates; see ARCHITECTURE.md); this crate is
//! the IO shell around it: `prometheus`, the daemon's Kubernetes adapters, alerts, the CLI,
//! `backtest` and `demo`. The core's modules are re-exported under their own names so that
//! `canaryd::policy::Policy` and `canaryd_core::policy::Policy` are the same item.

pub use canaryd_core::{
    counters, engine, format, istio, judge, observation, plan, policy, promql, schedule, secret, workload,
};

pub mod alert;
pub mod backtest;
pub mod cli;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod prometheus;
pub mod ui;
