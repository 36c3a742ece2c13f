//! A simulated Istio-style service for the end-to-end test: an axum server on loopback whose
//! `/metrics` exposes what Istio's destination-side proxies would report for `reviews`
//! (`istio_requests_total` and the `istio_request_duration_milliseconds` histogram), fed by a
//! background task that sends a fixed rate of requests split the way Istio would route them
//! **right now**: by the weights of the VirtualService stored in the emulator (the weights
//! canaryd writes), through the DestinationRule's subset labels, to the Deployments whose pod
//! template carries those labels. How a Deployment behaves is decided by the image it runs,
//! so rolling a faulty image into the canary Deployment makes the canary faulty.
//!
//! The routing is read with its own small parser, not with canaryd's `RouteView`, so the test
//! checks what is on the cluster rather than canaryd's reading of it.
#![allow(dead_code)]

use kube_emulator::EmulatorHandle;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How the pods of one image answer (the demo's mesh uses the same model).
pub use canaryd::demo::Behaviour;
/// Istio's default latency bucket bounds, milliseconds (the `le` labels).
pub use canaryd::observation::ISTIO_DEFAULT_BUCKETS_MS as BUCKETS_MS;

/// What the simulated service was configured with.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Namespace of the service and its Deployments.
    pub namespace: String,
    /// VirtualService (and DestinationRule) name.
    pub service: String,
    /// Total requests per second on the route.
    pub rps: f64,
    /// Behaviour by container image; images not listed are [`Behaviour::HEALTHY`].
    pub behaviours: BTreeMap<String, Behaviour>,
    /// RNG seed.
    pub seed: u64,
}

#[derive(Default)]
struct Histogram {
    /// Non-cumulative counts per bound; the exposition makes them cumulative.
    counts: [u64; BUCKETS_MS.len()],
    overflow: u64,
    sum_ms: f64,
}

#[derive(Default)]
struct Counters {
    /// (workload, response code) → requests.
    requests: BTreeMap<(String, u16), u64>,
    histograms: BTreeMap<String, Histogram>,
    /// Every distinct routing the traffic task applied, in order, with its first time.
    routings: Vec<Vec<(String, f64)>>,
}

impl Counters {
    fn ensure(&mut self, workload: &str) {
        for code in [200, 503] {
            self.requests.entry((workload.to_string(), code)).or_insert(0);
        }
        self.histograms.entry(workload.to_string()).or_default();
    }
}

/// The running service. Dropping it stops the HTTP server and the traffic task.
pub struct SimulatedService {
    /// `host:port` serving `/metrics`.
    pub address: String,
    counters: Arc<Mutex<Counters>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SimulatedService {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SimulatedService {
    /// Starts the server and the traffic task (a tick every 100 ms).
    pub async fn start(emulator: Arc<EmulatorHandle>, config: SimConfig) -> SimulatedService {
        let counters = Arc::new(Mutex::new(Counters::default()));
        // Every workload's series exist from the first scrape, at 0, as Istio's request
        // counters of a serving workload do. (canaryd counts a series that appears mid-window
        // from 0; `tests/prometheus_real.rs` covers lazily created series.)
        {
            let mut c = counters.lock().unwrap();
            for d in emulator.list("apps", "deployments", Some(&config.namespace)) {
                if let Some(name) = d.pointer("/metadata/name").and_then(Value::as_str) {
                    c.ensure(name);
                }
            }
        }
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the simulated service");
        let address = listener.local_addr().unwrap().to_string();
        let exposed = counters.clone();
        let namespace = config.namespace.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let text = exposition(&exposed.lock().unwrap(), &namespace);
                async move { ([("content-type", "text/plain; version=0.0.4")], text) }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let traffic = tokio::spawn(drive(emulator, config, counters.clone()));
        SimulatedService { address, counters, tasks: vec![server, traffic] }
    }

    /// Requests served so far by a workload: (total, 503s).
    pub fn served(&self, workload: &str) -> (u64, u64) {
        let c = self.counters.lock().unwrap();
        let ok = c.requests.get(&(workload.to_string(), 200)).copied().unwrap_or(0);
        let bad = c.requests.get(&(workload.to_string(), 503)).copied().unwrap_or(0);
        (ok + bad, bad)
    }

    /// Every distinct split the traffic task applied, in order: (workload, share 0–1).
    pub fn routings(&self) -> Vec<Vec<(String, f64)>> {
        self.counters.lock().unwrap().routings.clone()
    }
}

/// Adds `rps × elapsed` requests every 100 ms, split by the routing read from the emulator at
/// that tick.
async fn drive(emulator: Arc<EmulatorHandle>, config: SimConfig, counters: Arc<Mutex<Counters>>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut budget = 0.0;
    loop {
        tick.tick().await;
        let now = Instant::now();
        budget += config.rps * now.duration_since(last).as_secs_f64();
        last = now;
        let n = budget.floor();
        budget -= n;
        let routing = routing(&emulator, &config);
        let mut c = counters.lock().unwrap();
        let shares: Vec<(String, f64)> = routing.iter().map(|(w, share, _)| (w.clone(), *share)).collect();
        if c.routings.last() != Some(&shares) {
            c.routings.push(shares);
        }
        if routing.is_empty() {
            continue;
        }
        for _ in 0..n as u64 {
            let mut pick = rng.random::<f64>();
            let (workload, _, b) = routing
                .iter()
                .find(|(_, share, _)| {
                    pick -= share;
                    pick < 0.0
                })
                .unwrap_or_else(|| routing.last().expect("non-empty"));
            let code = if rng.random::<f64>() < b.error_rate { 503 } else { 200 };
            let ms = LogNormal::new(b.median_ms.ln(), b.sigma).expect("valid log-normal").sample(&mut rng);
            c.ensure(workload);
            *c.requests.get_mut(&(workload.clone(), code)).expect("ensured") += 1;
            let h = c.histograms.get_mut(workload).expect("ensured");
            match BUCKETS_MS.iter().position(|bound| ms <= *bound) {
                Some(i) => h.counts[i] += 1,
                None => h.overflow += 1,
            }
            h.sum_ms += ms;
        }
    }
}

/// Where Istio would send the route's requests now: (workload, share, behaviour), shares
/// summing to 1. The route is the VirtualService's first HTTP route without a `match` (the
/// default route); a destination's subset selects pods by the DestinationRule's subset labels,
/// i.e. the Deployments (with replicas) whose pod template carries them.
fn routing(emulator: &EmulatorHandle, config: &SimConfig) -> Vec<(String, f64, Behaviour)> {
    let ns = &config.namespace;
    let Some(vs) = emulator.get("networking.istio.io", "v1", "virtualservices", ns, &config.service) else {
        return vec![];
    };
    let dr = emulator.get("networking.istio.io", "v1", "destinationrules", ns, &config.service);
    let deployments = emulator.list("apps", "deployments", Some(ns));
    let empty = vec![];
    let http = vs.pointer("/spec/http").and_then(Value::as_array).unwrap_or(&empty);
    let Some(route) = http.iter().find(|r| r.get("match").is_none()) else {
        return vec![];
    };
    let dests = route.get("route").and_then(Value::as_array).unwrap_or(&empty);
    let explicit = dests.iter().any(|d| d.get("weight").is_some());
    let mut out: Vec<(String, f64, Behaviour)> = Vec::new();
    for d in dests {
        let weight = match d.get("weight").and_then(Value::as_f64) {
            Some(w) => w,
            None if !explicit && dests.len() == 1 => 100.0,
            None => 0.0,
        };
        if weight <= 0.0 {
            continue;
        }
        let subset = d.pointer("/destination/subset").and_then(Value::as_str).unwrap_or_default();
        let labels = dr
            .as_ref()
            .and_then(|dr| dr.pointer("/spec/subsets"))
            .and_then(Value::as_array)
            .and_then(|s| s.iter().find(|s| s["name"] == subset))
            .and_then(|s| s.get("labels"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let pods: Vec<&Value> = deployments
            .iter()
            .filter(|dep| dep.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1) > 0)
            .filter(|dep| {
                let tl = dep.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
                tl.is_some_and(|tl| labels.iter().all(|(k, v)| tl.get(k) == Some(v)))
            })
            .collect();
        for dep in &pods {
            let name = dep.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            let image = dep
                .pointer("/spec/template/spec/containers/0/image")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let b = config.behaviours.get(image).copied().unwrap_or(Behaviour::HEALTHY);
            out.push((name, weight / pods.len() as f64, b));
        }
    }
    let total: f64 = out.iter().map(|x| x.1).sum();
    if total > 0.0 {
        for x in &mut out {
            x.1 /= total;
        }
    }
    out
}

/// Prometheus text format, as Istio's proxies report with `reporter="destination"`.
fn exposition(c: &Counters, namespace: &str) -> String {
    let mut out = String::new();
    let labels = |workload: &str| {
        format!(
            r#"reporter="destination",source_workload="productpage-v1",source_workload_namespace="{namespace}",destination_workload="{workload}",destination_workload_namespace="{namespace}",destination_service="reviews.{namespace}.svc.cluster.local",request_protocol="http""#
        )
    };
    out.push_str("# HELP istio_requests_total Requests by destination workload and response code.\n");
    out.push_str("# TYPE istio_requests_total counter\n");
    for ((workload, code), n) in &c.requests {
        let _ = writeln!(out, "istio_requests_total{{{},response_code=\"{code}\"}} {n}", labels(workload));
    }
    out.push_str("# HELP istio_request_duration_milliseconds Request duration.\n");
    out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
    for (workload, h) in &c.histograms {
        let l = labels(workload);
        let mut cumulative = 0;
        for (bound, n) in BUCKETS_MS.iter().zip(h.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "istio_request_duration_milliseconds_bucket{{{l},le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = cumulative + h.overflow;
        let _ = writeln!(out, "istio_request_duration_milliseconds_bucket{{{l},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "istio_request_duration_milliseconds_sum{{{l}}} {}", h.sum_ms);
        let _ = writeln!(out, "istio_request_duration_milliseconds_count{{{l}}} {count}");
    }
    out
}
