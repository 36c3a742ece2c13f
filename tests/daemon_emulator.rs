//! The daemon's reconcile loop against the strict API emulator: it changes only the policy
//! route's weights and its state annotation, survives 409s and 5xx, and — killed at any point
//! and restarted — never advances a step twice, never loses an abort.

use canaryd::daemon::{Driver, NoEffects};
use canaryd::demo::{Behaviour, SimulatedMesh, FIXTURES};
use canaryd::engine::{Phase, RolloutState};
use canaryd::policy::{parse_policy, Policy};
use jiff::Timestamp;
use kube_emulator::{Emulator, EmulatorHandle, Fault, FaultKind, Matcher};
use serde_json::json;
use std::sync::Arc;

const POLICY: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, route: main, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}\n  steps: [{weight: 10, bake: 1m}, {weight: 30, bake: 1m}, {weight: 60, bake: 1m}]\n  analysis: {interval: 15s, successRate: {tolerance: 2}, latency: {tolerance: 50}}\n";

const EXTRA_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
  annotations: {owner: books-team}
  labels: {app: reviews}
spec:
  hosts: [reviews, reviews.bookinfo.svc.cluster.local]
  gateways: [mesh, bookinfo-gateway]
  http:
    - name: debug
      match: [{headers: {x-debug: {exact: "1"}}}]
      route: [{destination: {host: reviews, subset: v1}}]
      timeout: 3s
    - name: main
      retries: {attempts: 3, perTryTimeout: 2s}
      route:
        - destination: {host: reviews, subset: v1, port: {number: 9080}}
          weight: 100
        - destination: {host: reviews, subset: v2, port: {number: 9080}}
          weight: 0
"#;

async fn sandbox(fault_v2: Option<Behaviour>) -> (Arc<EmulatorHandle>, Policy, SimulatedMesh) {
    let emu = Arc::new(Emulator::start().await.unwrap());
    emu.apply_yaml(FIXTURES).unwrap();
    emu.apply_yaml(EXTRA_VS).unwrap();
    let policy = parse_policy("p.yaml", POLICY).unwrap();
    let mesh = SimulatedMesh::new(emu.clone(), policy.clone(), 200.0, 11);
    if let Some(b) = fault_v2 {
        mesh.set_behaviour("docker.io/istio/examples-bookinfo-reviews-v2:1.20.1", b);
    }
    (emu, policy, mesh)
}

use canaryd_testkit::state::{recorded_state, virtual_service};

fn t0() -> Timestamp {
    "2026-11-23T01:00:00Z".parse().unwrap()
}

#[tokio::test]
async fn a_rollout_changes_only_the_policy_route_weights_and_its_state() {
    let (emu, policy, mesh) = sandbox(None).await;
    let before = virtual_service(&emu, &policy);
    let driver = Driver::new(emu.client(), mesh, NoEffects);
    let mut now = t0();
    for _ in 0..60 {
        driver.reconcile(&policy, now).await.unwrap();
        if recorded_state(&emu, &policy).phase == Phase::Promoted {
            break;
        }
        now = Timestamp::from_second(now.as_second() + 15).unwrap();
    }
    let after = virtual_service(&emu, &policy);
    assert_eq!(recorded_state(&emu, &policy).phase, Phase::Promoted);
    assert_eq!(after["spec"]["hosts"], before["spec"]["hosts"]);
    assert_eq!(after["spec"]["gateways"], before["spec"]["gateways"]);
    assert_eq!(after["spec"]["http"][0], before["spec"]["http"][0], "the user's other route is untouched");
    assert_eq!(after["spec"]["http"][1]["retries"], before["spec"]["http"][1]["retries"]);
    assert_eq!(
        after["spec"]["http"][1]["route"][1]["destination"],
        before["spec"]["http"][1]["route"][1]["destination"]
    );
    assert_eq!(after["spec"]["http"][1]["route"][1]["weight"], 100);
    assert_eq!(after["metadata"]["labels"], before["metadata"]["labels"]);
    assert_eq!(after["metadata"]["annotations"]["owner"], "books-team");
    // Every write was a JSON patch (strategic merge does not work on custom resources).
    let writes: Vec<_> = emu
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("virtualservices"))
        .collect();
    assert!(!writes.is_empty());
    assert!(writes.iter().all(|r| r.content_type.as_deref() == Some("application/json-patch+json")));
    // Every transition is a Kubernetes Event on the VirtualService.
    let reasons: Vec<String> = emu
        .list("", "events", Some("bookinfo"))
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect();
    for want in ["NewRevision", "StepStarted", "Promoted"] {
        assert!(reasons.iter().any(|r| r == want), "missing event {want}: {reasons:?}");
    }
}

#[tokio::test]
async fn refuses_to_start_when_the_destination_rule_lacks_the_canary_subset() {
    let (emu, policy, mesh) = sandbox(None).await;
    let mut dr = emu.get("networking.istio.io", "v1", "destinationrules", "bookinfo", "reviews").unwrap();
    dr["spec"]["subsets"] = json!([{"name": "v1", "labels": {"version": "v1"}}]);
    emu.apply_value(dr).unwrap();
    let before = virtual_service(&emu, &policy);
    let driver = Driver::new(emu.client(), mesh, NoEffects);
    let err = driver.reconcile(&policy, t0()).await.unwrap_err();
    assert!(err.to_string().contains("subset \"v2\""), "{err}");
    assert_eq!(virtual_service(&emu, &policy)["spec"], before["spec"], "no weight was touched");
}

#[tokio::test]
async fn recovers_from_409s_and_5xx_without_clobbering_a_concurrent_writer() {
    let (emu, policy, mesh) = sandbox(None).await;
    let driver = Driver::new(emu.client(), mesh, NoEffects);
    let patch_vs = || Matcher::any().verb("patch").resource("virtualservices");
    emu.inject(Fault::new(patch_vs(), FaultKind::Status(500)).times(2));
    emu.inject(Fault::new(patch_vs(), FaultKind::Status(409)).times(2));
    emu.inject(
        Fault::new(Matcher::any().verb("get").resource("virtualservices"), FaultKind::Status(503)).times(1),
    );
    let mut now = t0();
    let mut failures = 0;
    for i in 0..80 {
        if i == 6 {
            // Someone else edits the object mid-rollout.
            let mut other = virtual_service(&emu, &policy);
            other["metadata"]["annotations"]["gitops/synced"] = json!("yes");
            emu.apply_value(other).unwrap();
        }
        if driver.reconcile(&policy, now).await.is_err() {
            failures += 1;
        }
        if recorded_state(&emu, &policy).phase == Phase::Promoted {
            break;
        }
        now = Timestamp::from_second(now.as_second() + 15).unwrap();
    }
    assert!(failures >= 4, "the injected write faults were seen ({failures})");
    assert_eq!(recorded_state(&emu, &policy).phase, Phase::Promoted);
    assert_eq!(
        virtual_service(&emu, &policy)["metadata"]["annotations"]["gitops/synced"],
        "yes",
        "the other writer's field survives"
    );
}

#[tokio::test]
async fn a_rejected_write_is_reported_as_rejected_not_as_a_conflict() {
    let (emu, policy, mesh) = sandbox(None).await;
    let driver = Driver::new(emu.client(), mesh, NoEffects);
    let before = virtual_service(&emu, &policy);
    // A validating webhook refuses the write: a 422 with the object unchanged.
    emu.inject(Fault::new(Matcher::any().verb("patch").resource("virtualservices"), FaultKind::Status(422)));
    let err = driver.reconcile(&policy, t0()).await.unwrap_err();
    assert!(matches!(err, canaryd::daemon::DaemonError::Rejected { code: 422, .. }), "{err:?}");
    assert!(err.to_string().contains("bookinfo/reviews"), "{err}");
    assert_eq!(virtual_service(&emu, &policy)["spec"], before["spec"], "nothing was changed");
    // Fixed: the same reconcile goes through.
    driver.reconcile(&policy, t0()).await.unwrap();
    assert_eq!(recorded_state(&emu, &policy).phase, Phase::Progressing);
}

/// Runs one release with restarts: before each cycle, with the seeded probability, the
/// "daemon" is killed (a fresh Driver loses every in-memory input) and, sometimes, killed
/// between its decision and its write (a 500 on the write). Returns (final state, the step
/// sequence seen on the cluster, restarts).
async fn run_with_crashes(seed: u64, faulty: bool) -> (RolloutState, Vec<(Phase, usize, u32)>, usize) {
    let bad = Behaviour { error_rate: 0.2, ..Behaviour::HEALTHY };
    let (emu, policy, _) = sandbox(faulty.then_some(bad)).await;
    let mut rng = seed;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % 100
    };
    let new_driver = |s: u64| {
        let mesh = SimulatedMesh::new(emu.clone(), policy.clone(), 200.0, s);
        if faulty {
            mesh.set_behaviour("docker.io/istio/examples-bookinfo-reviews-v2:1.20.1", bad);
        }
        Driver::new(emu.client(), mesh, NoEffects)
    };
    let mut driver = new_driver(seed);
    let mut seen = Vec::new();
    let mut restarts = 0;
    let mut now = t0();
    for cycle in 0..120 {
        match next() {
            0..=19 => {
                driver = new_driver(seed + cycle);
                restarts += 1;
            }
            20..=29 => {
                // Killed between decision and write: the write never lands.
                emu.inject(
                    Fault::new(
                        Matcher::any().verb("patch").resource("virtualservices"),
                        FaultKind::Status(500),
                    )
                    .times(1),
                );
                driver = new_driver(seed + cycle);
                restarts += 1;
            }
            _ => {}
        }
        let _ = driver.reconcile(&policy, now).await;
        emu.clear_faults();
        let s = recorded_state(&emu, &policy);
        let w = virtual_service(&emu, &policy)["spec"]["http"][1]["route"][1]["weight"].as_u64().unwrap_or(0)
            as u32;
        if seen.last() != Some(&(s.phase, s.step, w)) {
            seen.push((s.phase, s.step, w));
        }
        if matches!(s.phase, Phase::Promoted | Phase::Aborted) {
            break;
        }
        now = Timestamp::from_second(now.as_second() + 15).unwrap();
    }
    (recorded_state(&emu, &policy), seen, restarts)
}

#[tokio::test]
async fn killed_at_random_points_never_double_advances_or_loses_an_abort() {
    let mut restarts = 0;
    for seed in 1..=12u64 {
        let faulty = seed % 3 == 0;
        let (s, seen, r) = run_with_crashes(seed * 7919, faulty).await;
        restarts += r;
        let steps: Vec<usize> =
            seen.iter().filter(|(p, ..)| *p == Phase::Progressing).map(|(_, st, _)| *st).collect();
        let mut entered = steps.clone();
        entered.dedup();
        for pair in entered.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "seed {seed}: steps advance one at a time: {seen:?}");
        }
        let weights: Vec<u32> =
            seen.iter().filter(|(p, ..)| *p == Phase::Progressing).map(|(.., w)| *w).collect();
        assert!(
            weights.windows(2).all(|w| w[0] <= w[1]),
            "seed {seed}: weights never go back mid-rollout: {seen:?}"
        );
        if faulty {
            assert_eq!(s.phase, Phase::Aborted, "seed {seed}: {seen:?}");
            assert_eq!(s.traffic.canary_weight, 0);
            assert_eq!(seen.last().unwrap().2, 0, "seed {seed}: the abort's weights are on the cluster");
        } else {
            assert_eq!(s.phase, Phase::Promoted, "seed {seed}: {seen:?}");
            assert_eq!(seen.last().unwrap().2, 100);
        }
    }
    assert!(restarts > 30, "the test really restarted the daemon ({restarts} times)");
}

/// Alert deliveries reported by the effects, held back so the test decides when they arrive.
#[derive(Default)]
struct HeldDeliveries(std::sync::Mutex<Vec<(canaryd::daemon::Feedback, String, u64)>>);

impl canaryd::daemon::Effects for HeldDeliveries {
    async fn call_gate(&self, _: &Policy, _: &canaryd::policy::Gate, _: &RolloutState) -> (bool, String) {
        (false, "no gates here".into())
    }
    async fn deliver(
        &self,
        policy: &Policy,
        alert: &canaryd::engine::PendingAlert,
        _: &RolloutState,
        feedback: canaryd::daemon::Feedback,
    ) {
        self.0.lock().unwrap().push((feedback, policy.key(), alert.id));
    }
}

/// A delivery acknowledged just before a reconcile that fails on a read (here: the next
/// release's DestinationRule subset is missing) must still reach the state once the read works:
/// losing it would send the alert again after a restart. (The queue used to be taken before
/// the subset and stable-rollout reads and was dropped when one of them failed.)
#[tokio::test]
async fn a_delivery_acknowledged_before_a_failed_read_is_not_lost() {
    let bad = Behaviour { error_rate: 0.2, ..Behaviour::HEALTHY };
    let emu = Arc::new(Emulator::start().await.unwrap());
    emu.apply_yaml(FIXTURES).unwrap();
    emu.apply_yaml(EXTRA_VS).unwrap();
    let policy =
        parse_policy("p.yaml", &format!("{POLICY}  alerts: {{email: {{to: [oncall@example.com]}}}}\n"))
            .unwrap();
    let mesh = SimulatedMesh::new(emu.clone(), policy.clone(), 200.0, 5);
    mesh.set_behaviour("docker.io/istio/examples-bookinfo-reviews-v2:1.20.1", bad);
    let driver = Driver::new(emu.client(), mesh, HeldDeliveries::default());
    let mut now = t0();
    for _ in 0..40 {
        driver.reconcile(&policy, now).await.unwrap();
        if recorded_state(&emu, &policy).phase == Phase::Aborted {
            break;
        }
        now = Timestamp::from_second(now.as_second() + 15).unwrap();
    }
    let s = recorded_state(&emu, &policy);
    assert_eq!(s.phase, Phase::Aborted);
    assert_eq!(s.outbox.len(), 1, "the abort alert waits in the outbox");
    let (feedback, key, id) = driver.effects.0.lock().unwrap().last().cloned().expect("delivery started");

    // The next release arrives while its DestinationRule lacks the canary subset.
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n";
    emu.apply_yaml(dr).unwrap();
    let mut d = emu.get("apps", "v1", "deployments", "bookinfo", "reviews-v2").unwrap();
    d["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("docker.io/istio/examples-bookinfo-reviews-v3:1.20.1");
    emu.apply_value(d).unwrap();
    // The email went out; its acknowledgement is queued, then the reconcile fails on the read.
    feedback.push(&key, canaryd::engine::Input::AlertDelivered { id, channel: "email".into() });
    now = Timestamp::from_second(now.as_second() + 15).unwrap();
    assert!(driver.reconcile(&policy, now).await.is_err(), "the missing subset stops the new rollout");

    // Once the subset exists, the acknowledgement is applied: the outbox empties.
    emu.apply_yaml(&format!("{dr}  - {{name: v2, labels: {{version: v2}}}}\n")).unwrap();
    now = Timestamp::from_second(now.as_second() + 15).unwrap();
    driver.reconcile(&policy, now).await.unwrap();
    let s = recorded_state(&emu, &policy);
    assert!(s.outbox.is_empty(), "the delivered alert was forgotten: {:?}", s.outbox);
}

#[tokio::test]
async fn destination_rules_are_found_in_istios_root_namespace_as_configured() {
    let (emu, policy, mesh) = sandbox(None).await;
    // The only DestinationRule for reviews lives in the mesh's root namespace, with its host
    // fully qualified (a short name there would mean a service of that namespace).
    let mut dr = emu.get("networking.istio.io", "v1", "destinationrules", "bookinfo", "reviews").unwrap();
    assert!(emu.delete("networking.istio.io", "destinationrules", "bookinfo", "reviews"));
    emu.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh-root}\n").unwrap();
    dr["metadata"] = json!({"name": "reviews", "namespace": "mesh-root"});
    dr["spec"]["host"] = json!("reviews.bookinfo.svc.cluster.local");
    emu.apply_value(dr).unwrap();
    let err = Driver::new(emu.client(), mesh, NoEffects).reconcile(&policy, t0()).await.unwrap_err();
    assert!(err.to_string().contains("subset \"v1\""), "istio-system has no rule: {err}");
    let mesh = SimulatedMesh::new(emu.clone(), policy.clone(), 200.0, 11);
    let driver = Driver::new(emu.client(), mesh, NoEffects).with_istio_root_namespace("mesh-root");
    let report = driver.reconcile(&policy, t0()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.state.phase, Phase::Progressing);
}
