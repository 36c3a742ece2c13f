//! Blue-green on the strict emulator (`examples/blue-green/` manifests; pods that take time to
//! get ready): the new version is judged on mirrored traffic only, then takes 100% at once; the
//! old version stays untouched and ready for the rollback window — an abort inside it switches
//! back to pods that never stopped — and is then replaced as in a copy promotion.

use canaryd::daemon::{Driver, NoEffects};
use canaryd::demo::SimulatedMesh;
use canaryd::engine::Phase;
use canaryd::policy::{parse_policy, Policy};
use canaryd_testkit::controller;
use canaryd_testkit::state::{recorded_state, virtual_service};
use jiff::Timestamp;
use kube_emulator::{parse_yaml_docs, Emulator, EmulatorHandle};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const BLUE: &str = "docker.io/istio/examples-bookinfo-reviews-v1:1.20.2";
const GREEN: &str = "docker.io/istio/examples-bookinfo-reviews-v2:1.20.2";

/// The example's policy with a short mirror step and window, so a test runs in simulated minutes.
const POLICY: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews-blue-green, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, route: main, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}\n  steps: [{mirror: {percent: 100}, bake: 2m}]\n  promotion: {mode: blueGreen, rollbackWindow: 5m}\n  analysis: {interval: 15s, successRate: {tolerance: 5}, latency: {tolerance: 100}}\n";

async fn sandbox() -> (Arc<EmulatorHandle>, Policy) {
    let emu = Arc::new(Emulator::start().await.unwrap());
    controller::deterministic(&emu, Duration::from_secs(4));
    let manifests = std::fs::read_to_string("examples/blue-green/manifests.yaml").unwrap();
    for doc in parse_yaml_docs(&manifests).unwrap() {
        emu.apply_value(doc).unwrap();
    }
    controller::settle(&emu, Duration::from_secs(4));
    (emu, parse_policy("p.yaml", POLICY).unwrap())
}

fn weight(vs: &Value, subset: &str) -> i64 {
    vs["spec"]["http"][0]["route"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"]["subset"] == subset)
        .map_or(0, |d| d["weight"].as_i64().unwrap_or(100))
}

fn ready_images(emu: &EmulatorHandle, version: &str) -> Vec<String> {
    let labels = BTreeMap::from([("version".to_string(), version.to_string())]);
    emu.ready_endpoints("bookinfo", &labels)
        .iter()
        .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Reconciles 15 s apart until `stop`, calling `check` after each; returns the phases and
/// VirtualServices seen.
async fn run(
    emu: &Arc<EmulatorHandle>,
    policy: &Policy,
    now: &mut Timestamp,
    check: impl Fn(Phase, &Value, Timestamp),
    stop: impl Fn(Phase, Timestamp) -> bool,
) -> Vec<(Phase, Value)> {
    let driver =
        Driver::new(emu.client(), SimulatedMesh::new(emu.clone(), policy.clone(), 100.0, 9), NoEffects);
    let mut seen = Vec::new();
    for _ in 0..200 {
        driver.reconcile(policy, *now).await.unwrap_or_else(|e| panic!("{e}"));
        let phase = recorded_state(emu, policy).phase;
        let vs = virtual_service(emu, policy);
        check(phase, &vs, *now);
        seen.push((phase, vs));
        if stop(phase, *now) {
            return seen;
        }
        emu.advance_controller(Duration::from_secs(1));
        *now = Timestamp::from_second(now.as_second() + 15).unwrap();
    }
    panic!("not finished: {:?}", recorded_state(emu, policy));
}

/// To the switch: green judged on mirrored copies only, then 100% at once.
async fn switch(emu: &Arc<EmulatorHandle>, policy: &Policy, now: &mut Timestamp) {
    let seen = run(emu, policy, now, |_, _, _| {}, |p, _| p == Phase::Promoting).await;
    for (phase, vs) in &seen[..seen.len() - 1] {
        assert_eq!(weight(vs, "v2"), 0, "{phase:?}: no live traffic on green before the switch");
    }
    assert!(
        seen.iter().any(|(_, vs)| vs["spec"]["http"][0]["mirror"]["subset"] == "v2"),
        "green got mirrored traffic"
    );
    let (_, switched) = seen.last().unwrap();
    assert_eq!((weight(switched, "v1"), weight(switched, "v2")), (0, 100), "switched at once");
    assert!(switched["spec"]["http"][0].get("mirror").is_none(), "mirror removed at the switch");
}

fn blue_untouched(emu: &EmulatorHandle) {
    let blue = emu.get("apps", "v1", "deployments", "bookinfo", "reviews-v1").unwrap();
    assert_eq!(blue["spec"]["template"]["spec"]["containers"][0]["image"], BLUE);
    let ready = ready_images(emu, "v1");
    assert!(ready.len() == 3 && ready.iter().all(|i| i == BLUE), "blue kept ready: {ready:?}");
}

#[tokio::test]
async fn green_is_judged_on_mirrored_traffic_switched_at_once_and_blue_replaced_after_the_window() {
    let (emu, policy) = sandbox().await;
    let mut now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
    switch(&emu, &policy, &mut now).await;
    let window_ends = now.as_second() + 300;
    // The window: all traffic on green, blue untouched and ready.
    run(
        &emu,
        &policy,
        &mut now,
        |phase, vs, at| {
            if at.as_second() < window_ends {
                assert_eq!(phase, Phase::Promoting);
                assert_eq!(weight(vs, "v2"), 100);
                blue_untouched(&emu);
            }
        },
        |_, at| at.as_second() >= window_ends,
    )
    .await;
    // Then blue is replaced by green's template, traffic returns to it once every pod runs it.
    run(
        &emu,
        &policy,
        &mut now,
        |_, vs, _| {
            if weight(vs, "v1") > 0 {
                assert!(
                    ready_images(&emu, "v1").iter().all(|i| i == GREEN),
                    "traffic on blue pods of the old template"
                );
            }
        },
        |p, _| p == Phase::Promoted,
    )
    .await;
    let vs = virtual_service(&emu, &policy);
    assert_eq!((weight(&vs, "v1"), weight(&vs, "v2")), (100, 0));
    let blue = emu.get("apps", "v1", "deployments", "bookinfo", "reviews-v1").unwrap();
    assert_eq!(blue["spec"]["template"]["spec"]["containers"][0]["image"], GREEN);
    assert_eq!(
        blue["spec"]["template"]["metadata"]["labels"]["version"], "v1",
        "blue keeps its subset label"
    );
}

#[tokio::test]
async fn an_abort_inside_the_window_switches_back_to_blue_at_once() {
    let (emu, policy) = sandbox().await;
    let mut now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
    switch(&emu, &policy, &mut now).await;
    let mut vs = virtual_service(&emu, &policy);
    vs["metadata"]["annotations"]["canaryd.io/command-reviews-blue-green"] =
        Value::String("abort: users report errors".into());
    emu.apply_value(vs).unwrap();
    let seen = run(&emu, &policy, &mut now, |_, _, _| {}, |p, _| p == Phase::Aborted).await;
    assert_eq!(seen.len(), 1, "aborted at the next reconcile");
    let vs = virtual_service(&emu, &policy);
    assert_eq!((weight(&vs, "v1"), weight(&vs, "v2")), (100, 0));
    blue_untouched(&emu);
}
