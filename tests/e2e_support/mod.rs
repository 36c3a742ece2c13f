//! A simulated Istio-style service for the end-to-end test: an axum server on loopback whose
//! `/metrics` exposes what Istio's proxies would report for `reviews`
//! (`istio_requests_total` from both reporters, and the destination's
//! `istio_request_duration_milliseconds` histogram), fed by a background task that sends a
//! fixed rate of requests from `productpage-v1` routed the way Istio would route them **right
//! now**: by [`kube_emulator::mesh`] over the VirtualServices, DestinationRules and Pods stored
//! in the emulator (the weights canaryd writes). While the emulator runs no pods, each
//! Deployment with replicas stands in for one ready pod
//! ([`kube_emulator::mesh::pods_or_deployment_stand_ins`]). How a pod behaves is decided by the
//! image it runs, so rolling a faulty image into the canary Deployment makes the canary faulty.
//!
//! The routing is the emulator's mesh router, not canaryd's `RouteView`, so the test checks
//! what is on the cluster rather than canaryd's reading of it. Requests that find no healthy
//! upstream (a routed subset without ready pods: Envoy's 503 UH) are reported as Istio does,
//! by the caller's proxy only, with `destination_workload="unknown"`.
#![allow(dead_code)]

use kube_emulator::mesh::{self, MeshObjects, Outcome, Request};
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
    /// Destination service (FQDN) → requests that found no healthy upstream (503 UH).
    unhealthy: BTreeMap<String, u64>,
    /// Requests no route matched (404 NR).
    no_route: u64,
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

    /// Requests that found no healthy upstream (503 UH, reported by the source only).
    pub fn unhealthy(&self) -> u64 {
        self.counters.lock().unwrap().unhealthy.values().sum()
    }

    /// Every distinct split the traffic task applied, in order: (workload, share 0–1); requests
    /// that reach no workload (503 UH, 404 NR) appear as `unknown`.
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
        let mut shares: Vec<(String, f64)> = Vec::new();
        for (to, share, _) in &routing {
            let name = match to {
                Routed::Pod { workload, .. } => workload.as_str(),
                Routed::Unhealthy(_) | Routed::NoRoute => UNKNOWN,
            };
            match shares.iter_mut().find(|(w, _)| w == name) {
                Some(entry) => entry.1 += share,
                None => shares.push((name.to_string(), *share)),
            }
        }
        if c.routings.last() != Some(&shares) {
            c.routings.push(shares);
        }
        if routing.is_empty() {
            continue;
        }
        for _ in 0..n as u64 {
            let mut pick = rng.random::<f64>();
            let (to, _, b) = routing
                .iter()
                .find(|(_, share, _)| {
                    pick -= share;
                    pick < 0.0
                })
                .unwrap_or_else(|| routing.last().expect("non-empty"));
            let workload = match to {
                Routed::Pod { workload, .. } => workload,
                Routed::Unhealthy(host) => {
                    *c.unhealthy.entry(host.clone()).or_default() += 1;
                    continue;
                }
                Routed::NoRoute => {
                    c.no_route += 1;
                    continue;
                }
            };
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

/// Istio's label value for a peer it could not identify.
const UNKNOWN: &str = "unknown";
/// The caller of the simulated traffic.
const SOURCE_WORKLOAD: &str = "productpage-v1";

/// Where one share of the traffic goes.
#[derive(Debug, Clone, PartialEq)]
enum Routed {
    /// A pod of `workload` answers.
    Pod { workload: String, pod: String },
    /// 503 UH for this destination service (FQDN).
    Unhealthy(String),
    /// 404 NR.
    NoRoute,
}

/// Where Istio would send the service's requests now: (where, share, behaviour), shares
/// summing to 1, as [`mesh::shares`] computes them for requests from `productpage-v1` in the
/// service's namespace. A pod behaves as its first container's image says.
fn routing(emulator: &EmulatorHandle, config: &SimConfig) -> Vec<(Routed, f64, Behaviour)> {
    let virtual_services = emulator.list("networking.istio.io", "virtualservices", None);
    let destination_rules = emulator.list("networking.istio.io", "destinationrules", None);
    let pods = mesh::pods_or_deployment_stand_ins(
        emulator.list("", "pods", None),
        &emulator.list("apps", "deployments", None),
    );
    let objects = MeshObjects {
        virtual_services: &virtual_services,
        destination_rules: &destination_rules,
        pods: &pods,
    };
    let (headers, source_labels) = (BTreeMap::new(), mesh::productpage_labels());
    let request = Request::from_sidecar(&config.service, &config.namespace, &headers, &source_labels);
    let image_of =
        |pod: &str| mesh::pod_image(&pods, pod, Some(config.namespace.as_str())).map(str::to_string);
    mesh::shares(&objects, &request)
        .into_iter()
        .filter(|(_, share)| *share > 0.0)
        .map(|(outcome, share)| match outcome {
            Outcome::Served { workload, pod, .. } => {
                let b = image_of(&pod)
                    .and_then(|image| config.behaviours.get(&image).copied())
                    .unwrap_or(Behaviour::HEALTHY);
                (Routed::Pod { workload, pod }, share, b)
            }
            Outcome::NoHealthyUpstream { host, .. } => (Routed::Unhealthy(host), share, Behaviour::HEALTHY),
            Outcome::NoRoute => (Routed::NoRoute, share, Behaviour::HEALTHY),
        })
        .collect()
}

/// Prometheus text format, as Istio's proxies report: every request a workload served by both
/// the destination's proxy (`reporter="destination"`) and the caller's (`reporter="source"`;
/// no retries are simulated, so the counts agree), latency by the destination, and 503 UH by
/// the caller only, with the destination workload unidentified (`unknown`).
fn exposition(c: &Counters, namespace: &str) -> String {
    let mut out = String::new();
    let labels = |reporter: &str, workload: &str| {
        format!(
            r#"reporter="{reporter}",source_workload="{SOURCE_WORKLOAD}",source_workload_namespace="{namespace}",destination_workload="{workload}",destination_workload_namespace="{namespace}",destination_service="reviews.{namespace}.svc.cluster.local",destination_service_name="reviews",destination_service_namespace="{namespace}",request_protocol="http""#
        )
    };
    out.push_str("# HELP istio_requests_total Requests by destination workload and response code.\n");
    out.push_str("# TYPE istio_requests_total counter\n");
    for reporter in ["destination", "source"] {
        for ((workload, code), n) in &c.requests {
            let _ = writeln!(
                out,
                "istio_requests_total{{{},response_code=\"{code}\",response_flags=\"-\"}} {n}",
                labels(reporter, workload)
            );
        }
    }
    for (host, n) in &c.unhealthy {
        let name = host.split('.').next().unwrap_or_default();
        let _ = writeln!(
            out,
            r#"istio_requests_total{{reporter="source",source_workload="{SOURCE_WORKLOAD}",source_workload_namespace="{namespace}",destination_workload="{UNKNOWN}",destination_workload_namespace="{UNKNOWN}",destination_service="{host}",destination_service_name="{name}",destination_service_namespace="{namespace}",request_protocol="http",response_code="503",response_flags="UH"}} {n}"#
        );
    }
    out.push_str("# HELP istio_request_duration_milliseconds Request duration.\n");
    out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
    for (workload, h) in &c.histograms {
        let l = labels("destination", workload);
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

/// A subset routed traffic without pods: those requests are 503 UH, in the exposition only as
/// the caller's series with the destination workload unknown; the served ones from both sides.
#[tokio::test]
async fn no_healthy_upstream_is_reported_by_the_source_only() {
    let emu = kube_emulator::Emulator::start().await.expect("emulator");
    emu.apply_yaml(canaryd::demo::FIXTURES).expect("fixtures");
    let ns = "bookinfo";
    let mut vs = emu.get("networking.istio.io", "v1", "virtualservices", ns, "reviews").expect("vs");
    vs["spec"]["http"][0]["route"][0]["weight"] = 3.into();
    vs["spec"]["http"][0]["route"][1]["weight"] = 1.into();
    emu.apply_value(vs).expect("3:1");
    let mut d = emu.get("apps", "v1", "deployments", ns, "reviews-v2").expect("reviews-v2");
    d["spec"]["replicas"] = 0.into();
    emu.apply_value(d).expect("scaled to 0");
    let config = SimConfig {
        namespace: ns.into(),
        service: "reviews".into(),
        rps: 0.0,
        behaviours: BTreeMap::new(),
        seed: 1,
    };
    let routing = routing(&emu, &config);
    let shares: Vec<(Routed, f64)> = routing.into_iter().map(|(r, s, _)| (r, s)).collect();
    assert_eq!(shares.len(), 2, "{shares:?}");
    assert!(
        matches!(&shares[0], (Routed::Pod { workload, .. }, s) if workload == "reviews-v1" && *s == 0.75)
    );
    let fqdn = "reviews.bookinfo.svc.cluster.local";
    assert_eq!(shares[1], (Routed::Unhealthy(fqdn.into()), 0.25), "no re-balancing to v1");

    let mut c = Counters::default();
    c.ensure("reviews-v1");
    *c.requests.get_mut(&("reviews-v1".to_string(), 200)).unwrap() += 30;
    c.unhealthy.insert(fqdn.into(), 10);
    let text = exposition(&c, ns);
    let lines = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines(r#"response_flags="UH""#), 1, "{text}");
    let uh = text.lines().find(|l| l.contains(r#"response_flags="UH""#)).unwrap();
    for want in [
        r#"reporter="source""#,
        r#"destination_workload="unknown""#,
        r#"response_code="503""#,
        r#"destination_service="reviews.bookinfo.svc.cluster.local""#,
    ] {
        assert!(uh.contains(want), "{uh}");
    }
    assert!(uh.ends_with(" 10"), "{uh}");
    for reporter in ["source", "destination"] {
        let served = format!(r#"reporter="{reporter}",source_workload="productpage-v1""#);
        assert!(
            text.lines().any(|l| l.starts_with("istio_requests_total")
                && l.contains(&served)
                && l.contains(r#"destination_workload="reviews-v1""#)
                && l.contains(r#"response_code="200""#)
                && l.ends_with(" 30")),
            "{reporter}: {text}"
        );
    }
}
