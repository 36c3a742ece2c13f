//! Scale benchmark (issue 6, item 2): one daemon (`Driver::cycle` over every policy) running
//! 10, 100, 1,000 and 5,000 concurrent rollouts against the Kubernetes API emulator and a cheap
//! synthetic metrics source, with time as an argument (the clock advances by the 30 s analysis
//! interval per cycle, so every cycle is an analysis cycle).
//!
//! Three processes per size, so that memory and CPU are attributed honestly:
//! - the orchestrator (this binary without a role) spawns, for each size N,
//! - a **driver** process (`CANARYD_SCALE_ROLE=driver`): the daemon side only — tokio runtime,
//!   kube client, N parsed policies, the `Driver`, the synthetic metrics source — which spawns
//! - an **emulator** process (`CANARYD_SCALE_ROLE=emulator`): the API emulator holding the N
//!   rollouts' objects, talked to over loopback HTTP; it answers `stats` on stdin with its
//!   request log (then cleared), its resident memory and its CPU time.
//!
//! The driver's RSS and CPU are what a production canaryd would use (its API server and
//! Prometheus live elsewhere); the emulator's are reported next to them.
//!
//! One module per role (`orchestrator`, `driver`, `emulator`); the driver's parts are
//! `metrics` (the synthetic Prometheus) and `probe` (bare API round trips); `fixtures` are the
//! rollouts both the driver and the emulator derive from an index; `measure` reads a process's
//! memory and CPU.
//!
//! `cargo bench --bench scale`. Environment overrides: `SCALE_SIZES=10,100` (sizes; `none`
//! skips this part), `SCALE_CYCLES=12` (cycles for every size; default 12, 8 for 5,000).
//!
//! Then the watch-driven loop (`watch`, issue 12): the real `RunLoop` in real time over
//! `SCALE_WATCH_N` policies (10,000), `SCALE_WATCH_ACTIVE` of them active (N/10), 100 of those
//! with a hung gate and 10 s custom queries, for `SCALE_WATCH_SECS` (120); `SCALE_WATCH_N=0`
//! skips it.

mod driver;
mod emulator;
mod fixtures;
mod measure;
mod metrics;
mod orchestrator;
mod probe;
mod watch;

/// Which role this process plays; unset in the orchestrator, which sets it for its children.
const ROLE: &str = "CANARYD_SCALE_ROLE";
/// The analysis interval, and the simulated time each cycle advances the clock.
const INTERVAL_S: i64 = 30;

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("emulator") => emulator::run(),
        Ok("driver") => driver::run(),
        Ok("watch") => watch::run(),
        Ok("watch-emulator") => watch::emulator(),
        _ => orchestrator::run(),
    }
}

/// A numeric setting from the environment (the overrides above, and how the orchestrator and
/// the driver tell their children the size and the cycles).
fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}
