//! canaryd: a progressive-delivery analyzer for Kubernetes + Istio.
//!
//! The crate is a functional core under a thin IO shell (see ARCHITECTURE.md):
//! `policy`, `plan`, `schedule`, `observation`, `judge` and `engine` take data and time and
//! return data; `prometheus`, `emulator` and the daemon's adapters talk to the outside world.

pub mod alert;
pub mod backtest;
pub mod cli;
pub mod daemon;
pub mod demo;
pub mod emulator;
pub mod engine;
pub mod istio;
pub mod judge;
pub mod observation;
pub mod plan;
pub mod policy;
pub mod prometheus;
pub mod schedule;
pub mod secret;
