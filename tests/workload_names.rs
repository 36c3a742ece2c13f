//! One rule names the workloads: for the five-line policy (no `workload:`, no `host:`), the
//! daemon's queries, the backtest's queries and the alert's Prometheus link all use
//! `reviews-v1` / `reviews-v2`. (The alert link once filtered on the bare subsets `v1|v2`.)

mod alert_support;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alert_support::fixtures;
use canaryd::alert::{AlertFacts, RenderOptions, Report};
use canaryd::daemon::{Driver, NoEffects};
use canaryd::demo::{SimulatedMesh, FIXTURES};
use canaryd::observation::SideObservation;
use canaryd::policy::{parse_policy, EmailAlert, Policy};
use canaryd::prometheus::{MetricsSource, QueryError, WorkloadKey};
use jiff::Timestamp;
use kube_emulator::Emulator;

/// A metrics source that remembers every workload it was asked about.
struct Recording<M> {
    inner: M,
    keys: Mutex<BTreeSet<String>>,
}

impl<M: MetricsSource> MetricsSource for Recording<M> {
    async fn observe_sides(
        &self,
        keys: &[WorkloadKey],
        end: Timestamp,
        window: Duration,
    ) -> Result<HashMap<WorkloadKey, SideObservation>, QueryError> {
        self.keys.lock().unwrap().extend(keys.iter().map(|k| k.to_string()));
        self.inner.observe_sides(keys, end, window).await
    }

    async fn query_scalar(&self, promql: &str, at: Timestamp) -> Result<f64, QueryError> {
        // The backtest's reachability probe; the simulated mesh answers only Istio queries.
        if promql == "vector(1)" {
            return Ok(1.0);
        }
        self.inner.query_scalar(promql, at).await
    }
}

fn five_line_policy() -> Policy {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/bookinfo-reviews.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    assert!(!text.contains("workload:") && !text.contains("host:"), "the test needs a policy without them");
    parse_policy(path, &text).unwrap()
}

fn expected() -> BTreeSet<String> {
    ["bookinfo/reviews-v1".to_string(), "bookinfo/reviews-v2".to_string()].into()
}

#[tokio::test]
async fn daemon_backtest_and_alert_link_use_the_same_workload_names() {
    let policy = five_line_policy();
    let emu = Arc::new(Emulator::start().await.unwrap());
    emu.apply_yaml(FIXTURES).unwrap();
    let mesh = || SimulatedMesh::new(emu.clone(), policy.clone(), 100.0, 7);

    // The daemon: a new revision starts the rollout, the next reconciles analyse.
    let daemon = Recording { inner: mesh(), keys: Mutex::default() };
    let driver = Driver::new(emu.client(), daemon, NoEffects);
    let t0: Timestamp = "2026-11-23T01:00:00Z".parse().unwrap();
    for i in 0..4 {
        driver.reconcile(&policy, Timestamp::from_second(t0.as_second() + i * 60).unwrap()).await.unwrap();
    }
    let daemon_keys = driver.metrics.keys.lock().unwrap().clone();
    assert_eq!(daemon_keys, expected(), "the daemon's queries");

    // The backtest over the same policy.
    let backtest = Recording { inner: mesh(), keys: Mutex::default() };
    let end = Timestamp::from_second(t0.as_second() + 600).unwrap();
    canaryd::backtest::run(&policy, &backtest, t0, end).await.unwrap();
    assert_eq!(*backtest.keys.lock().unwrap(), expected(), "the backtest's queries");

    // The abort alert's Prometheus link.
    // (An alert needs a channel; the five-line policy has none, so add one.)
    let policy = policy
        .revise(|s| s.alerts.email = Some(EmailAlert { to: vec!["oncall@example.com".into()], on: None }))
        .unwrap();
    let (state, alert) = fixtures::engine_abort(&policy);
    let facts = AlertFacts::from_state(&policy, &state);
    assert_eq!(
        (facts.stable_workload.as_str(), facts.canary_workload.as_str()),
        ("reviews-v1", "reviews-v2")
    );
    let opts = RenderOptions { prometheus_url: Some("https://prom.example".into()), ui_url: None };
    let link = Report::build(&alert, &policy, &facts, &opts).graph_link.expect("a graph link");
    let decoded = percent_decode(&link);
    assert!(decoded.contains(r#"destination_workload=~"reviews-v1|reviews-v2""#), "{decoded}");
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
