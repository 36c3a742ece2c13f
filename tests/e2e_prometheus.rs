//! End to end, on the real clock: the strict API emulator with the bookinfo `reviews` objects,
//! a simulated Istio-style service whose traffic split follows the VirtualService weights
//! stored in the emulator, a real Prometheus (Debian package) scraping that service every
//! second, and the daemon's `Driver::reconcile` reading its evidence from that Prometheus.
//!
//! A healthy release goes 10 → 30 → 100 and is promoted; a faulty one (20 % 503s) is aborted
//! at its first look and its weights return to 0. Each test has its own emulator, Prometheus
//! and service, so they run concurrently (~1 min each). Prometheus must be installed: the
//! harness fails with an install hint, it never skips.

mod e2e_support;

use canaryd::daemon::{Driver, NoEffects};
use canaryd::demo::FIXTURES;
use canaryd::engine::{Phase, RolloutState};
use canaryd::judge::Verdict;
use canaryd::policy::parse_policy;
use canaryd::prometheus::{InstantResult, PrometheusClient, PrometheusConfig};
use canaryd_testkit::prometheus::PrometheusServer;
use e2e_support::{Behaviour, SimConfig, SimulatedService};
use jiff::Timestamp;
use kube_emulator::{Emulator, EmulatorHandle};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Interval 10 s (the validator's minimum), two weight steps with 20 s bakes, shift promotion:
/// the canary's weight goes 10 → 30 → 100. (A 100 % *step* could never pass: the baseline
/// would serve nothing to compare with, so the judge stays inconclusive; 100 % is promotion.)
const POLICY: &str = r#"
apiVersion: canaryd.io/v1alpha1
kind: RolloutPolicy
metadata: {name: reviews, namespace: bookinfo}
spec:
  target:
    virtualService: reviews
    stable: {subset: v1, workload: reviews-v1}
    canary: {subset: v2, workload: reviews-v2}
  steps:
    - {weight: 10, bake: 20s}
    - {weight: 30, bake: 20s}
  promotion: {mode: shift}
  analysis:
    interval: 10s
    successRate: {tolerance: 2}
    latency: {quantile: 0.95, tolerance: 50}
"#;

const NS: &str = "bookinfo";
/// The fixture's release in reviews-v2: healthy.
const HEALTHY_IMAGE: &str = "docker.io/istio/examples-bookinfo-reviews-v2:1.20.1";
/// A release that answers 20 % of its requests with 503.
const FAULTY_IMAGE: &str = "docker.io/istio/examples-bookinfo-reviews-v3:1.20.1";
/// Total requests per second on the route: ~1000 canary requests per look at 10 %.
const RPS: f64 = 1000.0;
/// How often the "daemon" reconciles.
const CYCLE: Duration = Duration::from_secs(2);
/// Give up after this long (the healthy release needs ~45 s, ~85 s with one extension).
const TIMEOUT: Duration = Duration::from_secs(180);

fn vs(emu: &EmulatorHandle) -> Value {
    emu.get("networking.istio.io", "v1", "virtualservices", NS, "reviews").expect("the VirtualService exists")
}

/// The stored weight of a subset in the route, read straight from the emulator's object.
fn weight(vs: &Value, subset: &str) -> u64 {
    vs["spec"]["http"][0]["route"]
        .as_array()
        .and_then(|r| r.iter().find(|d| d["destination"]["subset"] == subset))
        .and_then(|d| d["weight"].as_u64())
        .unwrap_or(0)
}

fn state(vs: &Value) -> Option<RolloutState> {
    vs["metadata"]["annotations"]["canaryd.io/state-reviews"]
        .as_str()
        .map(|s| serde_json::from_str(s).unwrap())
}

/// What one release did, as seen on the cluster after every reconcile.
struct Outcome {
    /// Distinct (v1, v2) weight pairs stored in the VirtualService, in order, starting with
    /// the fixture's.
    weights: Vec<(u64, u64)>,
    /// Distinct phases, in order.
    phases: Vec<Phase>,
    state: RolloutState,
    /// Wall time from the first reconcile to a final phase.
    elapsed: Duration,
    emu: Arc<EmulatorHandle>,
    service: SimulatedService,
    prometheus: PrometheusServer,
}

/// Runs one release of `image` in reviews-v2 through the whole stack until it is promoted or
/// aborted (or the timeout passes).
async fn release(image: &str, seed: u64) -> Outcome {
    release_with(image, seed, false).await
}

/// [`release`]; with `lose_canary_pods`, reviews-v2 is scaled to zero as soon as it gets its
/// first weight (its pods die mid-step: the mesh answers its share with 503 "no healthy
/// upstream", reported by the callers only).
async fn release_with(image: &str, seed: u64, lose_canary_pods: bool) -> Outcome {
    let emu = Arc::new(Emulator::start().await.expect("emulator"));
    emu.apply_yaml(FIXTURES).expect("fixtures");
    if image != HEALTHY_IMAGE {
        let mut d = emu.get("apps", "v1", "deployments", NS, "reviews-v2").expect("reviews-v2");
        d["spec"]["template"]["spec"]["containers"][0]["image"] = Value::from(image);
        emu.apply_value(d).expect("new canary image");
    }
    let policy = parse_policy("reviews.yaml", POLICY).expect("valid policy");

    let config = SimConfig {
        namespace: NS.into(),
        service: "reviews".into(),
        rps: RPS,
        behaviours: [(FAULTY_IMAGE.to_string(), Behaviour { error_rate: 0.2, ..Behaviour::HEALTHY })].into(),
        seed,
    };
    let service = SimulatedService::start(emu.clone(), config).await;
    let prometheus = PrometheusServer::builder()
        .scrape("reviews", &service.address, Duration::from_secs(1))
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start a real Prometheus for this test: {e}"));
    let client = PrometheusClient::new(PrometheusConfig::new(prometheus.url())).expect("client");
    wait_for_scrapes(&client, &prometheus).await;

    let driver = Driver::new(emu.client(), client, NoEffects);
    let before = vs(&emu);
    let mut weights = vec![(weight(&before, "v1"), weight(&before, "v2"))];
    let mut phases = Vec::new();
    let started = Instant::now();
    let mut next = started;
    loop {
        if let Err(e) = driver.reconcile(&policy, Timestamp::now()).await {
            // A failed reconcile changes nothing on the cluster; the next one retries.
            eprintln!("reconcile failed (retrying): {e}");
        }
        let now = vs(&emu);
        let w = (weight(&now, "v1"), weight(&now, "v2"));
        if weights.last() != Some(&w) {
            weights.push(w);
            if lose_canary_pods && w.1 > 0 {
                let mut d = emu.get("apps", "v1", "deployments", NS, "reviews-v2").expect("reviews-v2");
                d["spec"]["replicas"] = Value::from(0);
                emu.apply_value(d).expect("canary scaled to zero");
            }
        }
        let s = state(&now).unwrap_or_default();
        if phases.last() != Some(&s.phase) {
            eprintln!(
                "[{:>5.1}s] phase {:?} step {} weights {w:?}",
                started.elapsed().as_secs_f64(),
                s.phase,
                s.step + 1
            );
            phases.push(s.phase);
        }
        if matches!(s.phase, Phase::Promoted | Phase::Aborted) {
            return Outcome {
                weights,
                phases,
                state: s,
                elapsed: started.elapsed(),
                emu,
                service,
                prometheus,
            };
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "no final phase after {} s: weights {weights:?}, phases {phases:?}, last state {s:?}\nprometheus log:\n{}",
            TIMEOUT.as_secs(),
            prometheus.log()
        );
        // Fixed-rate cycles: a slow reconcile (loaded CI) does not stretch the schedule.
        next += CYCLE;
        tokio::time::sleep_until(next.into()).await;
    }
}

/// Waits until Prometheus holds a few scrapes of the service, so the first analysis window is
/// fully covered by data.
async fn wait_for_scrapes(client: &PrometheusClient, prometheus: &PrometheusServer) {
    let query = r#"count_over_time(istio_requests_total{job="reviews",destination_workload="reviews-v1",response_code="200"}[1m])"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(InstantResult::Vector(v)) = client.query(query, Timestamp::now()).await {
            if v.first().is_some_and(|s| s.value >= 3.0) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the service within 60 s; log:\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The service's current split, once it has caught up with the stored weights.
async fn settled_split(service: &SimulatedService) -> Vec<(String, f64)> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    service.routings().last().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_release_goes_10_30_100_and_is_promoted() {
    let out = release(HEALTHY_IMAGE, 1).await;
    eprintln!("healthy release promoted in {:.1} s; weights {:?}", out.elapsed.as_secs_f64(), out.weights);

    assert_eq!(out.state.phase, Phase::Promoted, "{:?}", out.state);
    assert_eq!(
        out.weights,
        vec![(100, 0), (90, 10), (70, 30), (0, 100)],
        "the VirtualService went 10 → 30 → 100, nothing skipped or repeated"
    );
    assert_eq!(out.phases, vec![Phase::Progressing, Phase::Promoted]);
    // The promotion was earned on evidence read from Prometheus, i.e. real canary traffic.
    let verdict = out.state.last_verdict.as_ref().expect("a verdict");
    assert_eq!(verdict.verdict, Verdict::Pass, "{verdict:?}");
    for check in &verdict.checks {
        assert!(check.evidence.canary_requests >= 50, "{}: {:?}", check.check, check.evidence);
        assert!(check.evidence.baseline_requests > 0, "{}: {:?}", check.check, check.evidence);
    }
    // The mesh followed the weights canaryd wrote: reviews-v2 got 10 %, then 30 %, then all.
    assert_eq!(settled_split(&out.service).await, vec![("reviews-v2".to_string(), 1.0)]);
    let v2_shares: Vec<f64> = out
        .service
        .routings()
        .iter()
        .map(|r| r.iter().find(|(w, _)| w == "reviews-v2").map_or(0.0, |x| x.1))
        .collect();
    for want in [0.1, 0.3, 1.0] {
        assert!(v2_shares.iter().any(|s| (s - want).abs() < 1e-9), "v2 shares seen {v2_shares:?}");
    }
    let (served, errors) = out.service.served("reviews-v2");
    assert!(served > 1000 && errors * 50 < served, "reviews-v2 served {served} ({errors} 503s)");
    // And Prometheus holds that traffic (up to the last scrape).
    let client = PrometheusClient::new(PrometheusConfig::new(out.prometheus.url())).expect("client");
    let q = r#"sum(istio_requests_total{reporter="destination",destination_workload="reviews-v2"})"#;
    let scraped = match client.query(q, Timestamp::now()).await.expect("query") {
        InstantResult::Vector(v) => v.first().map_or(0.0, |s| s.value),
        other => panic!("unexpected answer {other:?}"),
    };
    assert!(scraped > 0.0 && scraped <= served as f64, "Prometheus saw {scraped} of {served} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_release_is_aborted_and_its_weights_return_to_0() {
    let out = release(FAULTY_IMAGE, 2).await;
    eprintln!("faulty release aborted in {:.1} s; weights {:?}", out.elapsed.as_secs_f64(), out.weights);

    assert_eq!(out.state.phase, Phase::Aborted, "{:?}", out.state);
    assert_eq!(out.weights, vec![(100, 0), (90, 10), (100, 0)], "aborted at 10 %, back to stable");
    let stored = vs(&out.emu);
    assert_eq!((weight(&stored, "v1"), weight(&stored, "v2")), (100, 0), "the stored route is stable-only");
    assert_eq!(out.state.traffic.canary_weight, 0);
    // Aborted on the first step, by the success-rate evidence from Prometheus.
    assert_eq!(out.state.step, 0);
    let verdict = out.state.last_verdict.as_ref().expect("a verdict");
    assert_eq!(verdict.verdict, Verdict::Fail, "{verdict:?}");
    let decisive = verdict.decisive_check().expect("a decisive check");
    assert!(decisive.check.starts_with("success-rate"), "{decisive:?}");
    assert!(decisive.evidence.canary_bad > 0 && decisive.evidence.canary_requests > 0, "{decisive:?}");
    assert!(
        out.elapsed < Duration::from_secs(60),
        "the fault was caught at the first looks ({:?})",
        out.elapsed
    );
    // The mesh is back on stable: reviews-v2 receives nothing any more.
    assert_eq!(settled_split(&out.service).await, vec![("reviews-v1".to_string(), 1.0)]);
    let (served, errors) = out.service.served("reviews-v2");
    assert!(served > 0 && errors * 10 > served, "reviews-v2 served {served} ({errors} 503s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_pods_vanish_is_aborted_on_the_callers_503s() {
    let out = release_with(HEALTHY_IMAGE, 3, true).await;
    eprintln!("canary without pods aborted in {:.1} s; weights {:?}", out.elapsed.as_secs_f64(), out.weights);
    assert_eq!(out.state.phase, Phase::Aborted, "{:?}", out.state);
    assert_eq!(out.weights, vec![(100, 0), (90, 10), (100, 0)]);
    // The workload's own proxy saw nothing (no pods); the callers' no-upstream 503s were counted
    // as the canary's errors, so it failed on evidence rather than holding "inconclusive".
    assert!(out.service.unhealthy() > 0, "the mesh answered 503 UH");
    let verdict = out.state.last_verdict.as_ref().expect("a verdict");
    let decisive = verdict.decisive_check().expect("a decisive check");
    assert!(decisive.check.starts_with("success-rate"), "{decisive:?}");
    assert!(decisive.evidence.canary_bad > 0, "{decisive:?}");
    assert!(out.elapsed < Duration::from_secs(90), "caught within a few looks ({:?})", out.elapsed);
}
