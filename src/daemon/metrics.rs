//! The daemon's own /metrics, /healthz and /readyz (prometheus-client + axum).
//! What to alert on is listed in README.md, "Operations".

use super::CycleReport;
use crate::engine::Phase;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// Upper bounds (seconds) of `canaryd_decision_seconds`' buckets.
const DECISION_BUCKETS: [f64; 13] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

type Labels = Vec<(String, String)>;

const PHASES: [Phase; 7] = [
    Phase::Idle,
    Phase::Pending,
    Phase::Progressing,
    Phase::Paused,
    Phase::Promoting,
    Phase::Promoted,
    Phase::Aborted,
];

/// Metrics of one daemon process.
pub struct DaemonMetrics {
    registry: Registry,
    phase: Family<Labels, Gauge>,
    weight: Family<Labels, Gauge>,
    step: Family<Labels, Gauge>,
    verdicts: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    alerts_dropped: Family<Labels, Counter>,
    decision_seconds: Histogram,
    cycles: Counter,
    /// True once a cycle completed (and, with leader election, while leading or following).
    pub ready: AtomicBool,
    /// When the loop last completed a cycle (or the process started): `/healthz` fails when
    /// this is older than [`STALL_LIMIT`].
    last_cycle: std::sync::Mutex<std::time::Instant>,
}

impl Default for DaemonMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("canaryd");
        let phase = Family::<Labels, Gauge>::default();
        let weight = Family::<Labels, Gauge>::default();
        let step = Family::<Labels, Gauge>::default();
        let verdicts = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        let alerts_dropped = Family::<Labels, Counter>::default();
        // Prometheus' usual bounds, with 50 ms (the verdict-to-write target) among them.
        let decision_seconds = Histogram::new(DECISION_BUCKETS);
        let cycles = Counter::default();
        registry.register(
            "rollout_phase",
            "1 for the rollout's current phase, 0 for the others",
            phase.clone(),
        );
        registry.register("rollout_canary_weight", "Canary weight written, percent", weight.clone());
        registry.register("rollout_step", "Current step, 1-based", step.clone());
        registry.register("verdicts", "Interval verdicts by policy and verdict", verdicts.clone());
        registry.register(
            "errors",
            "Failed reconciles by kind (prometheus, kubernetes, conflict, policy)",
            errors.clone(),
        );
        registry.register(
            "decision_seconds",
            "Time from a verdict being available to the weight write being acknowledged",
            decision_seconds.clone(),
        );
        registry.register("cycles", "Completed reconcile cycles", cycles.clone());
        registry.register(
            "alerts_dropped",
            "Undelivered alerts dropped from a full outbox (no channel acknowledged them)",
            alerts_dropped.clone(),
        );
        DaemonMetrics {
            registry,
            phase,
            weight,
            step,
            verdicts,
            errors,
            alerts_dropped,
            decision_seconds,
            cycles,
            ready: AtomicBool::new(false),
            last_cycle: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }
}

impl DaemonMetrics {
    /// Records one policy's reconcile outcome.
    pub fn observe(&self, policy: &str, report: &CycleReport) {
        let p = || vec![("policy".to_string(), policy.to_string())];
        for phase in PHASES {
            let mut labels = p();
            labels.push(("phase".into(), phase.as_str().into()));
            self.phase.get_or_create(&labels).set(i64::from(report.state.phase == phase));
        }
        self.weight.get_or_create(&p()).set(i64::from(report.state.traffic.canary_weight));
        self.step.get_or_create(&p()).set(report.state.step as i64 + 1);
        let dropped = report
            .actions
            .iter()
            .filter(|a| matches!(a, crate::engine::Action::Record { reason, .. } if *reason == crate::engine::ALERT_DROPPED))
            .count();
        if dropped > 0 && report.wrote {
            self.alerts_dropped.get_or_create(&p()).inc_by(dropped as u64);
        }
        if report.wrote {
            if let Some(v) = &report.state.last_verdict {
                let mut labels = p();
                labels.push(("verdict".into(), v.verdict.as_str().into()));
                self.verdicts.get_or_create(&labels).inc();
            }
        }
        if let Some(d) = report.verdict_to_write {
            self.decision_seconds.observe(d.as_secs_f64());
        }
    }

    /// Counts a failed reconcile.
    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&vec![("kind".to_string(), kind.to_string())]).inc();
    }

    /// Counts a finished cycle and marks the process ready.
    pub fn cycle_done(&self) {
        self.cycles.inc();
        self.ready.store(true, Ordering::Relaxed);
        if let Ok(mut t) = self.last_cycle.lock() {
            *t = std::time::Instant::now();
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// How long the loop may go without completing a cycle before `/healthz` fails. A cycle is a
/// few seconds (2 s between cycles, each bounded by half a lease with leader election); two
/// minutes without one means the loop is stuck, and a restart is the useful remedy.
pub const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The liveness answer for a loop whose last cycle completed `since` ago.
pub fn liveness(since: std::time::Duration, limit: std::time::Duration) -> Result<String, String> {
    if since <= limit {
        Ok(format!("ok: last cycle {}s ago", since.as_secs()))
    } else {
        Err(format!(
            "no cycle completed for {}s (limit {}s): the loop is stuck",
            since.as_secs(),
            limit.as_secs()
        ))
    }
}

impl DaemonMetrics {
    /// Time since the loop last completed a cycle (or since start).
    pub fn since_last_cycle(&self) -> std::time::Duration {
        self.last_cycle.lock().map(|t| t.elapsed()).unwrap_or_default()
    }
}

/// Serves /metrics, /healthz and /readyz on `addr` until the process ends.
pub async fn serve(addr: std::net::SocketAddr, metrics: Arc<DaemonMetrics>) -> std::io::Result<()> {
    use axum::{http::StatusCode, routing::get, Router};
    let m = metrics.clone();
    let r = metrics.clone();
    let h = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                        m.render(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let h = h.clone();
                async move {
                    match liveness(h.since_last_cycle(), STALL_LIMIT) {
                        Ok(text) => (StatusCode::OK, text),
                        Err(text) => (StatusCode::SERVICE_UNAVAILABLE, text),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let r = r.clone();
                async move {
                    if r.ready.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "no cycle completed yet")
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RolloutState;

    #[test]
    fn exposes_phase_weight_and_decision_latency() {
        let m = DaemonMetrics::default();
        let mut state = RolloutState { phase: Phase::Progressing, ..RolloutState::default() };
        state.traffic.canary_weight = 30;
        let report = CycleReport {
            state,
            actions: vec![],
            wrote: true,
            verdict_to_write: Some(std::time::Duration::from_millis(3)),
            wake_at: None,
        };
        m.observe("bookinfo/reviews", &report);
        m.error("prometheus");
        let dropped =
            crate::engine::Action::Record { reason: crate::engine::ALERT_DROPPED, message: String::new() };
        m.observe(
            "bookinfo/reviews",
            &CycleReport { actions: vec![dropped], verdict_to_write: None, ..report.clone() },
        );
        let text = m.render();
        assert!(text.contains(r#"canaryd_alerts_dropped_total{policy="bookinfo/reviews"} 1"#), "{text}");
        assert!(text.contains(r#"canaryd_rollout_canary_weight{policy="bookinfo/reviews"} 30"#), "{text}");
        assert!(text.contains(r#"canaryd_rollout_phase{policy="bookinfo/reviews",phase="Progressing"} 1"#));
        assert!(text.contains(r#"canaryd_rollout_phase{policy="bookinfo/reviews",phase="Aborted"} 0"#));
        assert!(text.contains(r#"canaryd_errors_total{kind="prometheus"} 1"#));
        assert!(text.contains("canaryd_decision_seconds_count 1"));
    }

    #[test]
    fn healthz_fails_when_the_loop_stalls() {
        use std::time::Duration;
        assert!(liveness(Duration::from_secs(5), STALL_LIMIT).is_ok());
        let stuck = liveness(STALL_LIMIT + Duration::from_secs(1), STALL_LIMIT).unwrap_err();
        assert!(stuck.contains("no cycle completed for 121s"), "{stuck}");
        let m = DaemonMetrics::default();
        assert!(m.since_last_cycle() < Duration::from_secs(5), "a fresh process is healthy");
        *m.last_cycle.lock().unwrap() -= Duration::from_secs(300);
        assert!(liveness(m.since_last_cycle(), STALL_LIMIT).is_err());
        m.cycle_done();
        assert!(liveness(m.since_last_cycle(), STALL_LIMIT).is_ok());
    }
}
