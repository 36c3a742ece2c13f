//! A simulated service mesh: requests split by the weights in the emulator's VirtualService,
//! each version with its own error rate and latency, reported as Istio would (per workload
//! counts and latency histograms). It implements [`MetricsSource`], so the daemon's real
//! reconcile code reads it exactly as it reads Prometheus.

use crate::istio::RouteView;
use crate::observation::{Histogram, SideObservation};
use crate::policy::Policy;
use crate::prometheus::{MetricsSource, QueryError, WorkloadKey};
use kube_emulator::EmulatorHandle;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Istio's default latency bucket bounds, milliseconds.
use crate::observation::ISTIO_DEFAULT_BUCKETS_MS as ISTIO_BUCKETS_MS;

/// How one version behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    /// Fraction of requests that fail with a 5xx.
    pub error_rate: f64,
    /// Median latency, milliseconds.
    pub median_ms: f64,
    /// Log-normal shape; larger is a heavier tail.
    pub sigma: f64,
}

impl Behaviour {
    pub const HEALTHY: Behaviour = Behaviour { error_rate: 0.003, median_ms: 30.0, sigma: 0.45 };
}

/// The simulated mesh.
pub struct SimulatedMesh {
    emulator: Arc<EmulatorHandle>,
    policy: Policy,
    /// Total requests per second on the route.
    pub rps: f64,
    /// Behaviour by container image: what a Deployment runs decides how it behaves.
    behaviours: Mutex<HashMap<String, Behaviour>>,
    rng: Mutex<rand::rngs::StdRng>,
}

impl SimulatedMesh {
    pub fn new(emulator: Arc<EmulatorHandle>, policy: Policy, rps: f64, seed: u64) -> Self {
        SimulatedMesh {
            emulator,
            policy,
            rps,
            behaviours: Mutex::new(HashMap::new()),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
        }
    }

    /// Declares how Deployments running `image` behave (unknown images are healthy).
    pub fn set_behaviour(&self, image: &str, b: Behaviour) {
        if let Ok(mut m) = self.behaviours.lock() {
            m.insert(image.to_string(), b);
        }
    }

    fn behaviour_of(&self, namespace: &str, workload: &str) -> Option<Behaviour> {
        let d = self.emulator.get("apps", "v1", "deployments", namespace, workload)?;
        if d.pointer("/spec/replicas").and_then(serde_json::Value::as_i64) == Some(0) {
            return None;
        }
        let image = d.pointer("/spec/template/spec/containers/0/image")?.as_str()?.to_string();
        Some(self.behaviours.lock().ok()?.get(&image).copied().unwrap_or(Behaviour::HEALTHY))
    }

    /// The canary's share of the route as the VirtualService says right now.
    fn canary_share(&self) -> f64 {
        let ns = &self.policy.namespace();
        let vs = self.emulator.get(
            "networking.istio.io",
            "v1",
            "virtualservices",
            ns,
            &self.policy.spec().target.virtual_service,
        );
        vs.and_then(|vs| RouteView::read(&vs, &self.policy).ok())
            .map(|v| f64::from(v.traffic.canary_weight) / 100.0)
            .unwrap_or(0.0)
    }

    fn simulate(&self, requests: u64, b: Behaviour) -> SideObservation {
        let Ok(mut rng) = self.rng.lock() else { return SideObservation::default() };
        let mut hist = Histogram::empty(ISTIO_BUCKETS_MS);
        let lat = LogNormal::new(b.median_ms.ln(), b.sigma)
            .unwrap_or_else(|_| LogNormal::new(3.0, 0.5).expect("valid"));
        let mut errors = 0;
        for _ in 0..requests {
            if rng.random::<f64>() < b.error_rate {
                errors += 1;
            }
            let ms = lat.sample(&mut *rng);
            match ISTIO_BUCKETS_MS.iter().position(|bound| ms <= *bound) {
                Some(i) => hist.counts[i] += 1,
                None => hist.overflow += 1,
            }
        }
        SideObservation { requests, errors, latency: Some(hist) }
    }
}

impl MetricsSource for SimulatedMesh {
    async fn observe_sides(
        &self,
        keys: &[WorkloadKey],
        _end: jiff::Timestamp,
        window: Duration,
    ) -> Result<HashMap<WorkloadKey, SideObservation>, QueryError> {
        let total = self.rps * window.as_secs_f64();
        let share = self.canary_share();
        let canary = self.policy.spec().target.canary.workload.clone().unwrap_or_default();
        let mut out = HashMap::new();
        for key in keys {
            let part = if key.workload == canary { share } else { 1.0 - share };
            let obs = match self.behaviour_of(&key.namespace, &key.workload) {
                Some(b) => self.simulate((total * part).round() as u64, b),
                None => SideObservation::default(),
            };
            out.insert(key.clone(), obs);
        }
        Ok(out)
    }

    async fn query_scalar(&self, _promql: &str, _at: jiff::Timestamp) -> Result<f64, QueryError> {
        Err(QueryError::EmptyResult)
    }
}
