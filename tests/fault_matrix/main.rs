//! The fault matrix: rollouts run to completion under injected faults, with the final state and
//! four invariants checked in every run:
//!
//! - never promoted on missing evidence (a cycle whose metrics were unreadable or empty never
//!   advanced a step),
//! - no double advance (steps entered in order, once each; weights never go back mid-rollout),
//! - every abort's weights (canary 0) are on the VirtualService and an abort is never lost,
//! - the other writers' fields of the VirtualService are never clobbered.
//!
//! Prometheus faults and Kubernetes API faults drive the library `Driver` with a simulated clock
//! against the API emulator and a fake Prometheus over HTTP (so the real `PrometheusClient`
//! decodes every answer). SIGKILL and leader election run the real `canaryd run --crds` binary
//! in real time. Run with `--nocapture` to see the per-scenario lines; every suite ends with its
//! summary `fault matrix/<suite>: runs=N faults_injected=M invariant_violations=0 runtime=Ts`
//! (also written to `target/fault_matrix_summary_<suite>.txt`), so a filtered run such as
//! `cargo test --test fault_matrix prometheus` prints the summaries of the suites it ran.
//!
//! One module per suite (`prometheus_faults`, `kubernetes_api_faults`, `sigkill_restarts`,
//! `leader_election`, `hangs`: peers that accept and never answer — Prometheus, 100 tenants'
//! gates, a webhook — while an operator abort must land within 2 s); `simulated` and `real_daemon` are the two harnesses, `fake_prometheus`
//! and `support` (fixtures, invariants, the per-suite tally) serve all four.

mod fake_prometheus;
mod hangs;
mod kubernetes_api_faults;
mod leader_election;
mod prometheus_faults;
mod real_daemon;
mod sigkill_restarts;
mod simulated;
mod support;
