//! The harness of the Prometheus and Kubernetes API suites: the library `Driver`, one
//! reconcile per analysis interval on a simulated clock, against the API emulator and the fake
//! Prometheus (through the real client, switchable to a closed port for "down").

use crate::fake_prometheus::FakeProm;
use crate::support::load_namespace;
use canaryd::observation::SideObservation;
use canaryd::policy::{parse_policy, Policy};
use canaryd::prometheus::{MetricsSource, PrometheusClient, PrometheusConfig, QueryError, WorkloadKey};
use jiff::Timestamp;
use kube_emulator::{Emulator, EmulatorHandle};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const NS: &str = "bookinfo";
const POLICY: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, route: main, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}\n  steps: [{weight: 10, bake: 1m}, {weight: 30, bake: 1m}, {weight: 60, bake: 1m}]\n  analysis: {interval: 15s}\n";
const INTERVAL: i64 = 15;
const PROM_TIMEOUT: Duration = Duration::from_millis(300);

/// The real client against the fake, or against a closed port while "down".
pub struct Switch {
    up: PrometheusClient,
    down: PrometheusClient,
    is_down: Arc<AtomicBool>,
}

impl Switch {
    pub fn new(url: &str, is_down: Arc<AtomicBool>) -> Switch {
        let cfg = |u: &str| {
            let mut c = PrometheusConfig::new(u);
            c.timeout = PROM_TIMEOUT;
            c.retry_backoff = Duration::from_millis(5);
            PrometheusClient::new(c).unwrap()
        };
        Switch { up: cfg(url), down: cfg(&closed_port_url()), is_down }
    }
    fn client(&self) -> &PrometheusClient {
        if self.is_down.load(Ordering::SeqCst) {
            &self.down
        } else {
            &self.up
        }
    }
}

impl MetricsSource for Switch {
    async fn observe_sides(
        &self,
        keys: &[WorkloadKey],
        end: Timestamp,
        window: Duration,
    ) -> Result<HashMap<WorkloadKey, SideObservation>, QueryError> {
        self.client().observe_sides(keys, end, window).await
    }
    async fn query_scalar(&self, promql: &str, at: Timestamp) -> Result<f64, QueryError> {
        self.client().query_scalar(promql, at).await
    }
}

/// One rollout's world: a fresh emulator with the namespace loaded, the policy, the fake
/// Prometheus and the switch that takes it "down".
pub struct Sim {
    pub emu: Arc<EmulatorHandle>,
    pub policy: Policy,
    pub prom: FakeProm,
    pub is_down: Arc<AtomicBool>,
}

pub async fn sim(canary_errors: f64) -> Sim {
    let emu = Arc::new(Emulator::start().await.unwrap());
    load_namespace(&emu, NS);
    let prom = FakeProm::start().await;
    prom.set_namespace(NS, canary_errors);
    Sim {
        emu,
        policy: parse_policy("p.yaml", POLICY).unwrap(),
        prom,
        is_down: Arc::new(AtomicBool::new(false)),
    }
}

fn t0() -> Timestamp {
    "2026-11-23T01:00:00Z".parse().unwrap()
}

/// The simulated time of analysis cycle `cycle`.
pub fn at(cycle: i64) -> Timestamp {
    Timestamp::from_second(t0().as_second() + cycle * INTERVAL).unwrap()
}

/// A loopback address where nothing listens (connection refused).
fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}
