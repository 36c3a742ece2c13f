//! The gateway example (`examples/gateway/`) driven by the daemon's reconcile on the API
//! emulator: a VirtualService with three routes (two matched, one default) whose policy route
//! splits 4:1 between the stable and a legacy version. Through a header step, the weight steps,
//! a promotion and — in a second run — an abort, everything outside the policy route stays
//! byte-identical, the legacy version keeps its fifth, and the abort restores the route exactly.

use canaryd::daemon::{Driver, NoEffects};
use canaryd::engine::Phase;
use canaryd::observation::{Histogram, SideObservation, ISTIO_DEFAULT_BUCKETS_MS};
use canaryd::policy::{parse_policy, Policy};
use canaryd::prometheus::{MetricsSource, QueryError, WorkloadKey};
use canaryd_testkit::state::{recorded_state, virtual_service};
use jiff::Timestamp;
use kube_emulator::{parse_yaml_docs, Emulator, EmulatorHandle};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Istio's view of the shop route as the VirtualService splits it: each version's share of
/// `rps` (relative weights; testers' header requests are 2% of the traffic), expected counts,
/// every request in one latency bucket.
struct ShopTraffic {
    emu: Arc<EmulatorHandle>,
    policy: Policy,
    rps: f64,
    canary_error_rate: f64,
}

impl MetricsSource for ShopTraffic {
    async fn observe_sides(
        &self,
        keys: &[WorkloadKey],
        _end: Timestamp,
        window: Duration,
    ) -> Result<HashMap<WorkloadKey, SideObservation>, QueryError> {
        let vs = virtual_service(&self.emu, &self.policy);
        let shop = route(&vs, "shop");
        let total: f64 = ["stable", "canary", "legacy"].iter().map(|s| weight(shop, s)).sum();
        let header =
            if vs["spec"]["http"].as_array().unwrap().iter().any(|r| r["name"] == "canaryd-shop-header") {
                0.02
            } else {
                0.0
            };
        let requests = self.rps * window.as_secs_f64();
        let side = |share: f64, error_rate: f64| {
            let n = (requests * share).round() as u64;
            let mut latency = Histogram::empty(ISTIO_DEFAULT_BUCKETS_MS);
            latency.counts[5] = n;
            SideObservation {
                requests: n,
                errors: (n as f64 * error_rate).round() as u64,
                latency: Some(latency),
            }
        };
        // A fault that shows only under weighted traffic: the abort happens at a weight step.
        let rate = if weight(shop, "canary") > 0.0 { self.canary_error_rate } else { 0.001 };
        let canary = side(header + (1.0 - header) * weight(shop, "canary") / total, rate);
        let stable = side((1.0 - header) * weight(shop, "stable") / total, 0.001);
        Ok(keys
            .iter()
            .map(|k| (k.clone(), if k.workload == "shop-canary" { canary.clone() } else { stable.clone() }))
            .collect())
    }

    async fn query_scalar(&self, _: &str, _: Timestamp) -> Result<f64, QueryError> {
        Err(QueryError::EmptyResult)
    }
}

async fn gateway() -> (Arc<EmulatorHandle>, Policy) {
    let emu = Arc::new(Emulator::start().await.unwrap());
    let manifests = std::fs::read_to_string("examples/gateway/manifests.yaml").unwrap();
    for doc in parse_yaml_docs(&manifests).unwrap() {
        // The Istio Gateway CRD is not among those the emulator embeds; canaryd never reads it.
        if doc["kind"] != "Gateway" {
            emu.apply_value(doc).unwrap();
        }
    }
    let path = "examples/gateway/policy.yaml";
    let policy =
        parse_policy(path, &std::fs::read_to_string(path).unwrap()).unwrap_or_else(|e| panic!("{e}"));
    (emu, policy)
}

fn route<'a>(vs: &'a Value, name: &str) -> &'a Value {
    vs["spec"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name}"))
}

fn weight(route: &Value, subset: &str) -> f64 {
    route["route"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"]["subset"] == subset)
        .and_then(|d| d["weight"].as_f64())
        .unwrap_or(0.0)
}

/// Runs reconciles a minute apart until `stop`, checking after each that the other routes are
/// as they were and the legacy version keeps 1/5 of the shop route.
async fn drive(
    emu: &Arc<EmulatorHandle>,
    policy: &Policy,
    canary_error_rate: f64,
    stop: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let mesh = ShopTraffic { emu: emu.clone(), policy: policy.clone(), rps: 200.0, canary_error_rate };
    let original = virtual_service(emu, policy);
    let driver = Driver::new(emu.client(), mesh, NoEffects);
    let mut now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
    let mut seen = Vec::new();
    for _ in 0..120 {
        driver.reconcile(policy, now).await.unwrap_or_else(|e| panic!("{e}"));
        let vs = virtual_service(emu, policy);
        for name in ["api", "default"] {
            assert_eq!(route(&vs, name), route(&original, name), "route {name} changed");
        }
        for field in ["hosts", "gateways"] {
            assert_eq!(vs["spec"][field], original["spec"][field]);
        }
        let shop = route(&vs, "shop");
        let total: f64 = ["stable", "canary", "legacy"].iter().map(|s| weight(shop, s)).sum();
        assert!((weight(shop, "legacy") / total - 0.2).abs() < 1e-9, "legacy keeps its fifth: {shop}");
        for (key, value) in original["spec"]["http"][1].as_object().unwrap() {
            if key != "route" {
                assert_eq!(&shop[key], value, "the shop route's {key} changed");
            }
        }
        // A header route, when there is one, sits right before the shop route and matches only
        // the shop's own requests.
        let http = vs["spec"]["http"].as_array().unwrap();
        if let Some(i) = http.iter().position(|r| r["name"] == "canaryd-shop-header") {
            assert_eq!(http[i + 1]["name"], "shop");
            let m = &http[i]["match"][0];
            assert_eq!(m["uri"], original["spec"]["http"][1]["match"][0]["uri"]);
            assert_eq!(m["port"], 80);
            assert_eq!(m["headers"]["x-canary-tester"]["exact"], "yes");
            assert_eq!(http[i]["retries"], original["spec"]["http"][1]["retries"]);
        }
        seen.push(vs.clone());
        if stop(&vs) {
            return seen;
        }
        now = Timestamp::from_second(now.as_second() + 60).unwrap();
    }
    panic!("did not finish: {:?}", recorded_state(emu, policy));
}

#[tokio::test]
async fn a_gateway_route_goes_through_header_weights_and_promotion_leaving_the_rest_alone() {
    let (emu, policy) = gateway().await;
    let phase = |e: &EmulatorHandle| recorded_state(e, &policy).phase;
    let seen = drive(&emu, &policy, 0.001, |_| phase(&emu) == Phase::Promoted).await;
    assert!(
        seen.iter().any(|vs| vs["spec"]["http"].as_array().unwrap().len() == 4),
        "a header step was written"
    );
    let shares: Vec<f64> = seen
        .iter()
        .map(|vs| {
            let shop = route(vs, "shop");
            weight(shop, "canary") / (weight(shop, "stable") + weight(shop, "canary")).max(1.0)
        })
        .collect();
    for step in [0.1, 0.4] {
        assert!(
            shares.iter().any(|s| (s - step).abs() < 1e-9),
            "step {step} of the stable's share: {shares:?}"
        );
    }
    // Copy promotion: traffic back on stable, the route as it was before the rollout.
    let after = virtual_service(&emu, &policy);
    assert_eq!(
        route(&after, "shop"),
        &virtual_service_at_start(&seen),
        "promotion restored the shop route's weights"
    );
}

/// The shop route as the first reconcile found it (before any canary weight).
fn virtual_service_at_start(seen: &[Value]) -> Value {
    let mut shop = route(&seen[0], "shop").clone();
    shop["route"] = serde_json::json!([
        {"destination": {"host": "shop.store.svc.cluster.local", "subset": "stable", "port": {"number": 8080}}, "weight": 4},
        {"destination": {"host": "shop.store.svc.cluster.local", "subset": "legacy", "port": {"number": 8080}}, "weight": 1}
    ]);
    shop
}

#[tokio::test]
async fn an_abort_restores_the_gateway_route_byte_for_byte() {
    let (emu, policy) = gateway().await;
    let original = virtual_service(&emu, &policy);
    drive(&emu, &policy, 0.3, |vs| {
        route(vs, "shop")["route"].as_array().unwrap().len() == 2
            && recorded_state(&emu, &policy).phase == Phase::Aborted
    })
    .await;
    let after = virtual_service(&emu, &policy);
    assert_eq!(after["spec"], original["spec"], "the whole spec is as before the rollout");
    let state = recorded_state(&emu, &policy);
    assert!(
        state.timeline.iter().any(|t| t.message.contains("10%")),
        "aborted after a weight step: {:?}",
        state.timeline
    );
}
