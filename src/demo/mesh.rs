//! A simulated service mesh: requests to the policy's VirtualService host, routed by
//! [`kube_emulator::mesh`] over the emulator's VirtualServices, DestinationRules and Pods (one
//! stand-in pod per Deployment with replicas while the emulator runs no pods), each pod with
//! the error rate and latency of its image, reported as Istio would (per workload counts and
//! latency histograms). It implements [`MetricsSource`], so the daemon's real reconcile code
//! reads it exactly as it reads Prometheus.
//!
//! Requests that find no healthy upstream (a routed subset without ready pods: Envoy's 503
//! UH) reach no workload: Istio reports them from the caller only, with
//! `destination_workload="unknown"`, so they are in no workload's observation here either —
//! as with the daemon's Prometheus queries, which select series by `destination_workload`.

use crate::observation::{Histogram, SideObservation};
use crate::policy::Policy;
use crate::prometheus::{MetricsSource, QueryError, WorkloadKey};
use kube_emulator::mesh::{self, MeshObjects, Outcome, Request};
use kube_emulator::EmulatorHandle;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// One outcome of the mesh's routing, its share of the requests, and how the pod behaves.
type Routed = (Outcome, f64, Behaviour);

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

    fn behaviour_of(&self, image: Option<&str>) -> Behaviour {
        let known = self.behaviours.lock().ok().and_then(|m| m.get(image?).copied());
        known.unwrap_or(Behaviour::HEALTHY)
    }

    /// Where requests to the policy's VirtualService host from its namespace go right now, as
    /// [`mesh::shares`] computes it: (outcome, share, behaviour of the pod's image); and the
    /// (namespace, workload) pairs that have pods at all (served or not, they export series).
    fn routing(&self) -> (Vec<Routed>, BTreeSet<(String, String)>) {
        let ns = self.policy.namespace();
        let Some(vs) = self.emulator.get(
            "networking.istio.io",
            "v1",
            "virtualservices",
            ns,
            &self.policy.spec().target.virtual_service,
        ) else {
            return Default::default();
        };
        let Some(host) = vs.pointer("/spec/hosts/0").and_then(Value::as_str) else {
            return Default::default();
        };
        let virtual_services = self.emulator.list("networking.istio.io", "virtualservices", None);
        let destination_rules = self.emulator.list("networking.istio.io", "destinationrules", None);
        let pods = mesh::pods_or_deployment_stand_ins(
            self.emulator.list("", "pods", None),
            &self.emulator.list("apps", "deployments", None),
        );
        let objects = MeshObjects {
            virtual_services: &virtual_services,
            destination_rules: &destination_rules,
            pods: &pods,
        };
        let (headers, source_labels) = (BTreeMap::new(), mesh::productpage_labels());
        let request = Request::from_sidecar(host, ns, &headers, &source_labels);
        let image_of = |pod: &str| mesh::pod_image(&pods, pod, None);
        // Mirrored copies reach the canary's own proxy, which reports them like any request
        // (the caller never sees their answers, so unanswered copies are nobody's errors).
        let mirrored = mesh::mirrors(&objects, &request)
            .into_iter()
            .filter(|(outcome, _)| matches!(outcome, Outcome::Served { .. }));
        let routing = mesh::shares(&objects, &request)
            .into_iter()
            .chain(mirrored)
            .map(|(outcome, share)| {
                let b = match &outcome {
                    Outcome::Served { pod, .. } => self.behaviour_of(image_of(pod)),
                    _ => Behaviour::HEALTHY,
                };
                (outcome, share, b)
            })
            .collect();
        let with_pods = pods
            .iter()
            .map(|p| {
                let ns = p.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
                (ns.to_string(), mesh::workload_of(p))
            })
            .collect();
        (routing, with_pods)
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
        let (routing, with_pods) = self.routing();
        let mut out = HashMap::new();
        for key in keys {
            // A workload with pods reports (empty) series even when routed nothing.
            let mut obs = if with_pods.contains(&(key.namespace.clone(), key.workload.clone())) {
                self.simulate(0, Behaviour::HEALTHY)
            } else {
                SideObservation::default()
            };
            for (outcome, share, b) in &routing {
                if let Outcome::Served { host, workload, .. } = outcome {
                    let (namespace, _) = crate::istio::service_of(host, "");
                    if *workload == key.workload && namespace == key.namespace {
                        obs.add(&self.simulate((total * share).round() as u64, *b));
                    }
                }
            }
            out.insert(key.clone(), obs);
        }
        // Requests no pod answered (a subset without ready endpoints): the caller's proxy
        // reports them against the service alone, as `prometheus::istio` reads them.
        for (outcome, share, _) in &routing {
            if let Outcome::NoHealthyUpstream { host, .. } = outcome {
                let mut labels = host.split('.');
                let (service, namespace) =
                    (labels.next().unwrap_or_default(), labels.next().unwrap_or_default());
                let n = (total * share).round() as u64;
                let side = out.entry(WorkloadKey::no_upstream(namespace, service)).or_default();
                side.requests += n;
                side.errors += n;
            }
        }
        Ok(out)
    }

    async fn query_scalar(&self, _promql: &str, _at: jiff::Timestamp) -> Result<f64, QueryError> {
        Err(QueryError::EmptyResult)
    }
}
