//! Copy promotion and readiness on the strict emulator: a Deployment controller whose pods take
//! time to become ready, apps/v1 validation, faults. Killed (or failed) at every effect point of
//! a copy promotion, a release ends with the stable Deployment running the canary's template on
//! every pod — never "Promoted" otherwise; stable pods keep their subset label throughout; and at
//! no reconcile does the VirtualService send traffic to a subset without ready pods, or to stable
//! pods of the old template once the promotion began.

use canaryd::daemon::{Driver, NoEffects};
use canaryd::demo::{SimulatedMesh, FIXTURES};
use canaryd::engine::Phase;
use canaryd::policy::{parse_policy, Policy};
use canaryd_testkit::controller;
use canaryd_testkit::state::{recorded_state, virtual_service};
use jiff::Timestamp;
use kube_emulator::{Emulator, EmulatorHandle, Fault, FaultKind, Matcher, Mutation};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const POLICY: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}\n  steps: [{weight: 20, bake: 30s}, {weight: 50, bake: 30s}]\n  promotion: {mode: copy}\n  analysis: {interval: 15s, successRate: {tolerance: 5}, latency: {tolerance: 100}}\n";

const V1: &str = "docker.io/istio/examples-bookinfo-reviews-v1:1.20.1";
const V2: &str = "docker.io/istio/examples-bookinfo-reviews-v2:1.20.1";
const V3: &str = "docker.io/istio/examples-bookinfo-reviews-v3:1.20.1";

/// Where a promotion is interrupted.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// Nothing fails.
    Nothing,
    /// The copy's Deployment patch fails (a crash right after the Promoting write, a 5xx).
    CopyFails,
    /// An admission webhook denies the copy for a while.
    CopyDenied,
    /// The VirtualService write that routes back to stable fails (409).
    RouteBackConflicts,
    /// Scaling the canary down fails (a crash right after the Promoted write).
    ScaleDownFails,
    /// A new daemon process for every reconcile: nothing but the cluster carries over.
    RestartEveryCycle,
}

fn subset_labels(version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("version".to_string(), version.to_string())])
}

fn image(pod: &Value) -> &str {
    pod.pointer("/spec/containers/0/image").and_then(Value::as_str).unwrap_or_default()
}

/// The policy route's weight per subset.
fn weights(vs: &Value) -> BTreeMap<String, i64> {
    vs["spec"]["http"][0]["route"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["destination"]["subset"].as_str().unwrap_or_default().to_string(),
                d["weight"].as_i64().unwrap_or(100),
            )
        })
        .collect()
}

/// What must hold at every reconcile; `promoting_seen` remembers that the promotion began.
fn check(emu: &EmulatorHandle, policy: &Policy, promoting_seen: &mut bool, when: &str) {
    let vs = virtual_service(emu, policy);
    let phase = recorded_state(emu, policy).phase;
    *promoting_seen |= phase == Phase::Promoting;
    for (subset, weight) in weights(&vs) {
        if weight > 0 {
            let ready = emu.ready_endpoints("bookinfo", &subset_labels(&subset));
            assert!(!ready.is_empty(), "{when}: subset {subset} gets {weight} with no ready pod");
            if subset == "v1" && *promoting_seen {
                assert!(
                    ready.iter().all(|p| image(p) != V1),
                    "{when}: traffic back on stable while a ready stable pod still runs the old template"
                );
            }
        }
    }
    // The stable Deployment's pods keep the label its subset selects by.
    for pod in emu.pods("bookinfo", "app=reviews") {
        let owner = pod.pointer("/metadata/ownerReferences/0/name").and_then(Value::as_str);
        if owner == Some("reviews-v1") {
            assert_eq!(
                pod["metadata"]["labels"]["version"], "v1",
                "{when}: a stable pod lost its subset label"
            );
        }
    }
}

async fn sandbox() -> (Arc<EmulatorHandle>, Policy) {
    let emu = Arc::new(Emulator::start().await.unwrap());
    controller::deterministic(&emu, Duration::from_secs(4));
    emu.apply_yaml(FIXTURES).unwrap();
    controller::settle(&emu, Duration::from_secs(4));
    (emu, parse_policy("p.yaml", POLICY).unwrap())
}

fn driver(emu: &Arc<EmulatorHandle>, policy: &Policy) -> Driver<SimulatedMesh, NoEffects> {
    Driver::new(emu.client(), SimulatedMesh::new(emu.clone(), policy.clone(), 200.0, 7), NoEffects)
}

fn inject(emu: &EmulatorHandle, kill: Kill) {
    let patch = |name: &str| Matcher::any().verb("patch").resource("deployments").name(name);
    match kill {
        Kill::CopyFails => emu.inject(Fault::new(patch("reviews-v1"), FaultKind::Status(500)).times(3)),
        Kill::CopyDenied => emu.inject(Fault::new(patch("reviews-v1"), FaultKind::Status(422)).times(4)),
        Kill::ScaleDownFails => emu.inject(Fault::new(patch("reviews-v2"), FaultKind::Status(503)).times(2)),
        Kill::RouteBackConflicts | Kill::Nothing | Kill::RestartEveryCycle => {}
    }
}

/// Patches of the stable Deployment served so far (each is a copy: nothing else patches it).
fn stable_patches(emu: &EmulatorHandle) -> usize {
    emu.requests()
        .iter()
        .filter(|r| r.verb == "patch" && r.resource == "deployments" && r.name == "reviews-v1")
        .count()
}

/// Runs reconciles 15 s apart (the controller advancing 1 s of its own time in between) until
/// `done`, checking the invariants after each one.
async fn run_until(
    emu: &Arc<EmulatorHandle>,
    policy: &Policy,
    kill: Kill,
    now: &mut Timestamp,
    promoting_seen: &mut bool,
    done: impl Fn(&EmulatorHandle) -> bool,
) {
    let mut d = driver(emu, policy);
    let mut route_back_failed = false;
    for cycle in 0..200 {
        if matches!(kill, Kill::RestartEveryCycle) {
            d = driver(emu, policy);
        }
        if matches!(kill, Kill::RouteBackConflicts)
            && !route_back_failed
            && recorded_state(emu, policy).phase == Phase::Promoting
            && emu.ready_endpoints("bookinfo", &subset_labels("v1")).iter().all(|p| image(p) == V2)
        {
            route_back_failed = true;
            let vs = Matcher::any().verb("patch").resource("virtualservices");
            emu.inject(Fault::new(vs, FaultKind::Status(409)).times(1));
        }
        let _ = d.reconcile(policy, *now).await;
        check(emu, policy, promoting_seen, &format!("{kill:?}, cycle {cycle}"));
        if done(emu) {
            return;
        }
        emu.advance_controller(Duration::from_secs(1));
        *now = Timestamp::from_second(now.as_second() + 15).unwrap();
    }
    panic!("{kill:?}: not done after 200 cycles; state {:?}", recorded_state(emu, policy));
}

fn promoted_and_clean(emu: &EmulatorHandle, policy: &Policy) -> bool {
    let stable = emu.get("apps", "v1", "deployments", "bookinfo", "reviews-v1").unwrap();
    let canary = emu.get("apps", "v1", "deployments", "bookinfo", "reviews-v2").unwrap();
    recorded_state(emu, policy).phase == Phase::Promoted && canary["spec"]["replicas"] == 0 && {
        let pods = emu.pods("bookinfo", "version=v1");
        stable["spec"]["template"]["spec"]["containers"][0]["image"] == V2
            && !pods.is_empty()
            && pods.iter().all(|p| image(p) == V2)
    }
}

#[tokio::test]
async fn a_copy_promotion_interrupted_anywhere_ends_with_stable_running_the_canary_template() {
    for kill in [
        Kill::Nothing,
        Kill::CopyFails,
        Kill::CopyDenied,
        Kill::RouteBackConflicts,
        Kill::ScaleDownFails,
        Kill::RestartEveryCycle,
    ] {
        let (emu, policy) = sandbox().await;
        inject(&emu, kill);
        let (mut now, mut promoting_seen) = ("2026-11-23T01:00:00Z".parse().unwrap(), false);
        run_until(&emu, &policy, kill, &mut now, &mut promoting_seen, |e| promoted_and_clean(e, &policy))
            .await;
        assert!(promoting_seen, "{kill:?}: went through Promoting");
        // Exact copy: the stable template is the canary's, but the labels its selector needs.
        let stable = emu.get("apps", "v1", "deployments", "bookinfo", "reviews-v1").unwrap();
        let canary = emu.get("apps", "v1", "deployments", "bookinfo", "reviews-v2").unwrap();
        let mut expected = canary["spec"]["template"].clone();
        expected["metadata"]["labels"]["version"] = json!("v1");
        assert_eq!(stable["spec"]["template"], expected, "{kill:?}");
        assert_eq!(weights(&virtual_service(&emu, &policy))["v1"], 100, "{kill:?}: traffic back on stable");
        emu.clear_faults();

        // The next release: the canary is at zero replicas; it is scaled back up and gets no
        // traffic until its pods are ready (checked at every reconcile).
        let mut next = canary.clone();
        next["spec"]["template"]["spec"]["containers"][0]["image"] = json!(V3);
        next.as_object_mut().unwrap().remove("status");
        emu.apply_value(next).unwrap();
        run_until(&emu, &policy, Kill::Nothing, &mut now, &mut false, |e| {
            weights(&virtual_service(e, &policy))["v2"] > 0
        })
        .await;
        let canary = emu.get("apps", "v1", "deployments", "bookinfo", "reviews-v2").unwrap();
        assert_eq!(canary["spec"]["replicas"], 2, "{kill:?}: scaled back to the stable's replicas");
    }
}

#[tokio::test]
async fn a_copy_that_a_mutating_webhook_changes_finishes_with_one_write() {
    // A policy engine stamps every write of the stable Deployment (a name-derived annotation,
    // as Kyverno rules often add): the stored template never equals the canary's. The answer
    // to the copy says so; the promotion completes on the template as admitted instead of
    // copying at every reconcile and never finishing.
    let (emu, policy) = sandbox().await;
    let stamp = json!({"spec": {"template": {"metadata": {"annotations": {"policy.example.com/owner": "reviews-v1"}}}}});
    emu.add_mutation(Mutation::named("deployments", "reviews-v1", stamp));
    let (mut now, mut promoting_seen) = ("2026-11-23T01:00:00Z".parse().unwrap(), false);
    run_until(&emu, &policy, Kill::Nothing, &mut now, &mut promoting_seen, |e| {
        promoted_and_clean(e, &policy)
    })
    .await;
    assert!(promoting_seen);
    let copies = stable_patches(&emu);
    assert_eq!(copies, 1, "the copy is written once");
    let stable = emu.get("apps", "v1", "deployments", "bookinfo", "reviews-v1").unwrap();
    assert_eq!(
        stable["spec"]["template"]["metadata"]["annotations"]["policy.example.com/owner"],
        "reviews-v1"
    );
    assert_eq!(weights(&virtual_service(&emu, &policy))["v1"], 100, "traffic back on stable");
    let state = recorded_state(&emu, &policy);
    let said = state.timeline.iter().filter(|e| e.kind == "CopyAdmitted").count();
    assert_eq!(said, 1, "{:?}", state.timeline);
}

#[tokio::test]
async fn a_copy_whose_image_a_mutating_webhook_changes_is_not_promoted_nor_copied_again() {
    // A webhook rewrites the stable's containers (a different image than the judged canary's):
    // the promotion must not finish on it, and must not fight the webhook at every reconcile.
    let (emu, policy) = sandbox().await;
    let other = json!({"spec": {"template": {"spec": {"containers": [{"name": "reviews", "image": V3}]}}}});
    emu.add_mutation(Mutation::named("deployments", "reviews-v1", other));
    let (mut now, mut promoting_seen) = ("2026-11-23T01:00:00Z".parse().unwrap(), false);
    run_until(&emu, &policy, Kill::Nothing, &mut now, &mut promoting_seen, |e| {
        recorded_state(e, &policy).timeline.iter().any(|t| t.kind == "CopyRefused")
    })
    .await;
    let d = driver(&emu, &policy);
    for cycle in 0..20 {
        emu.advance_controller(Duration::from_secs(1));
        now = Timestamp::from_second(now.as_second() + 15).unwrap();
        let _ = d.reconcile(&policy, now).await;
        check(&emu, &policy, &mut promoting_seen, &format!("after the refusal, cycle {cycle}"));
    }
    assert_eq!(recorded_state(&emu, &policy).phase, Phase::Promoting);
    assert_eq!(weights(&virtual_service(&emu, &policy))["v2"], 100, "the judged canary keeps serving");
    let copies = stable_patches(&emu);
    assert_eq!(copies, 1, "not copied again against the webhook");
}

#[tokio::test]
async fn a_release_that_never_gets_ready_gets_no_traffic_and_is_aborted() {
    let (emu, policy) = sandbox().await;
    let mut canary = emu.get("apps", "v1", "deployments", "bookinfo", "reviews-v2").unwrap();
    canary["spec"]["template"]["spec"]["containers"][0]["image"] = json!(V3);
    canary["spec"]["template"]["metadata"]["annotations"] =
        json!({"emulator.canaryd.io/never-ready": "true"});
    canary["spec"]["progressDeadlineSeconds"] = json!(30);
    canary.as_object_mut().unwrap().remove("status");
    emu.apply_value(canary).unwrap();
    let (mut now, mut seen) = ("2026-11-23T01:00:00Z".parse().unwrap(), false);
    run_until(&emu, &policy, Kill::Nothing, &mut now, &mut seen, |e| {
        recorded_state(e, &policy).phase == Phase::Aborted
    })
    .await;
    let state = recorded_state(&emu, &policy);
    assert!(
        state.reason.as_deref().unwrap_or_default().contains("cannot become ready"),
        "{:?}",
        state.reason
    );
    assert!(state.timeline.iter().any(|t| t.kind == "WaitingForCanary"), "{:?}", state.timeline);
    assert_eq!(weights(&virtual_service(&emu, &policy))["v2"], 0);
}
