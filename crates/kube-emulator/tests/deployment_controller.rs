//! `RolloutMode::Controlled`: pods, readiness, rolling updates, status and the progress
//! deadline, stepped deterministically with `advance_controller`.

use std::collections::BTreeMap;
use std::time::Duration;

use kube_emulator::{ControllerConfig, Emulator, EmulatorHandle, RolloutMode, NEVER_READY_ANNOTATION};
use serde_json::{json, Value};

const READY_AFTER: Duration = Duration::from_secs(10);

async fn controlled() -> EmulatorHandle {
    let emu = Emulator::start().await.unwrap();
    emu.set_rollout_mode(RolloutMode::Controlled(ControllerConfig {
        ready_after: READY_AFTER,
        progress_deadline: Duration::from_secs(600),
        tick: Duration::ZERO,
    }));
    emu
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web", "version": "v1"}},
                         "spec": {"containers": [{"name": "web", "image": image}]}}
        }
    })
}

/// Creates the pods of what was just written and lets them become ready.
fn settle(emu: &EmulatorHandle) {
    emu.advance_controller(Duration::ZERO);
    emu.advance_controller(READY_AFTER);
}

fn get(emu: &EmulatorHandle) -> Value {
    emu.get("apps", "v1", "deployments", "shop", "web").unwrap()
}

fn n(status: &Value, field: &str) -> i64 {
    status[field].as_i64().unwrap_or(0)
}

fn cond<'a>(d: &'a Value, kind: &str) -> &'a Value {
    d["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == kind).unwrap()
}

fn ready_count(pods: &[Value]) -> usize {
    pods.iter()
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count()
}

#[tokio::test]
async fn new_deployment_gets_pods_that_become_ready() {
    let emu = controlled().await;
    let d = emu.apply_value(deployment(3, "web:1")).unwrap();
    // Nothing happens until the controller runs: observedGeneration lags behind.
    assert!(d["status"]["observedGeneration"].is_null(), "{}", d["status"]);
    assert!(emu.pods("shop", "").is_empty());

    emu.advance_controller(Duration::ZERO);
    let pods = emu.pods("shop", "app=web");
    assert_eq!(pods.len(), 3);
    let d = get(&emu);
    let hash = pods[0]["metadata"]["labels"]["pod-template-hash"].as_str().unwrap().to_string();
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("web-{hash}-")), "{name}");
        assert_eq!(p["metadata"]["labels"]["version"], "v1");
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], d["metadata"]["uid"]);
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Deployment");
        assert_eq!(p["spec"]["containers"][0]["image"], "web:1");
        assert_eq!(p["status"]["phase"], "Running");
    }
    assert_eq!(ready_count(&pods), 0);
    let s = &d["status"];
    assert_eq!(n(s, "observedGeneration"), 1);
    assert_eq!((n(s, "replicas"), n(s, "updatedReplicas"), n(s, "readyReplicas")), (3, 3, 0));
    assert_eq!(n(s, "unavailableReplicas"), 3);
    assert_eq!(cond(&d, "Available")["status"], "False");
    assert_eq!(cond(&d, "Progressing")["reason"], "ReplicaSetUpdated");

    emu.advance_controller(READY_AFTER - Duration::from_secs(1));
    assert_eq!(ready_count(&emu.pods("shop", "app=web")), 0);
    emu.advance_controller(Duration::from_secs(1));
    assert_eq!(ready_count(&emu.pods("shop", "app=web")), 3);
    let d = get(&emu);
    let s = &d["status"];
    assert_eq!((n(s, "readyReplicas"), n(s, "availableReplicas"), n(s, "unavailableReplicas")), (3, 3, 0));
    assert_eq!(cond(&d, "Available")["status"], "True");
    assert_eq!(cond(&d, "Progressing")["reason"], "NewReplicaSetAvailable");
    assert_eq!(
        cond(&d, "Progressing")["message"],
        format!("ReplicaSet \"web-{hash}\" has successfully progressed.")
    );

    // A settled controller writes nothing more.
    let rv = emu.resource_version();
    emu.advance_controller(Duration::from_secs(60));
    assert_eq!(emu.resource_version(), rv);
}

#[tokio::test]
async fn rolling_update_respects_surge_and_unavailability() {
    let emu = controlled().await;
    emu.apply_value(deployment(4, "web:1")).unwrap();
    settle(&emu);
    assert_eq!(ready_count(&emu.pods("shop", "")), 4);

    let d = emu.apply_value(deployment(4, "web:2")).unwrap();
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(d["status"]["observedGeneration"], 1, "the write itself does not sync");

    // Defaults for 4 replicas: maxSurge 1, maxUnavailable 1.
    let mut steps = 0;
    loop {
        emu.advance_controller(Duration::ZERO);
        let pods = emu.pods("shop", "");
        assert!(pods.len() <= 5, "surge exceeded: {}", pods.len());
        assert!(ready_count(&pods) >= 3, "too many unavailable");
        let d = get(&emu);
        assert_eq!(d["status"]["observedGeneration"], 2);
        if cond(&d, "Progressing")["reason"] == "NewReplicaSetAvailable" {
            assert!(pods.iter().all(|p| p["spec"]["containers"][0]["image"] == "web:2"));
            assert_eq!(pods.len(), 4);
            assert_eq!(n(&d["status"], "updatedReplicas"), 4);
            break;
        }
        assert_eq!(cond(&d, "Progressing")["reason"], "ReplicaSetUpdated");
        steps += 1;
        assert!(steps < 20, "rollout did not finish");
        emu.advance_controller(READY_AFTER);
    }
    assert!(steps >= 2, "a rolling update takes several batches, took {steps}");
}

#[tokio::test]
async fn never_ready_release_stalls_and_exceeds_the_progress_deadline() {
    let emu = controlled().await;
    let mut d = deployment(2, "web:1");
    d["spec"]["progressDeadlineSeconds"] = json!(30);
    emu.apply_value(d.clone()).unwrap();
    settle(&emu);

    d["spec"]["template"]["metadata"]["labels"]["version"] = json!("v2");
    d["spec"]["template"]["metadata"]["annotations"] = json!({NEVER_READY_ANNOTATION: "true"});
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:broken");
    emu.apply_value(d).unwrap();
    emu.advance_controller(Duration::ZERO);
    // 2 replicas: maxSurge 1, maxUnavailable 0, so one new pod and both old ones stay.
    let pods = emu.pods("shop", "");
    assert_eq!(pods.len(), 3);
    assert_eq!(emu.pods("shop", "version=v2").len(), 1);

    emu.advance_controller(Duration::from_secs(20));
    assert_eq!(cond(&get(&emu), "Progressing")["status"], "True");
    emu.advance_controller(Duration::from_secs(20));
    let live = get(&emu);
    let p = cond(&live, "Progressing");
    assert_eq!(
        (p["status"].as_str(), p["reason"].as_str()),
        (Some("False"), Some("ProgressDeadlineExceeded"))
    );
    assert!(p["message"].as_str().unwrap().ends_with("has timed out progressing."));
    assert_eq!(cond(&live, "Available")["status"], "True", "the old pods still serve");
    let s = &live["status"];
    assert_eq!((n(s, "replicas"), n(s, "updatedReplicas"), n(s, "readyReplicas")), (3, 1, 2));

    let subset = |v: &str| {
        BTreeMap::from([("app".to_string(), "web".to_string()), ("version".to_string(), v.to_string())])
    };
    assert_eq!(emu.ready_endpoints("shop", &subset("v1")).len(), 2);
    assert!(emu.ready_endpoints("shop", &subset("v2")).is_empty());
    assert!(emu.ready_endpoints("shop", &subset("v1")).iter().all(|p| p["status"]["podIP"].is_string()));
}

#[tokio::test]
async fn config_deadline_applies_without_spec_value() {
    let emu = Emulator::start().await.unwrap();
    emu.set_rollout_mode(RolloutMode::Controlled(ControllerConfig {
        ready_after: READY_AFTER,
        progress_deadline: Duration::from_secs(5),
        tick: Duration::ZERO,
    }));
    let mut d = deployment(1, "web:1");
    d["spec"]["template"]["metadata"]["annotations"] = json!({NEVER_READY_ANNOTATION: "true"});
    emu.apply_value(d).unwrap();
    emu.advance_controller(Duration::ZERO);
    emu.advance_controller(Duration::from_secs(6));
    assert_eq!(cond(&get(&emu), "Progressing")["reason"], "ProgressDeadlineExceeded");
    assert_eq!(cond(&get(&emu), "Available")["status"], "False");
}

#[tokio::test]
async fn scaling_and_deleting() {
    let emu = controlled().await;
    emu.apply_value(deployment(2, "web:1")).unwrap();
    settle(&emu);
    assert_eq!(emu.pods("shop", "").len(), 2);

    emu.apply_value(deployment(0, "web:1")).unwrap();
    emu.advance_controller(Duration::ZERO);
    assert!(emu.pods("shop", "").is_empty());
    let d = get(&emu);
    assert_eq!(n(&d["status"], "replicas"), 0);
    assert_eq!(cond(&d, "Progressing")["reason"], "NewReplicaSetAvailable");

    emu.apply_value(deployment(5, "web:1")).unwrap();
    emu.advance_controller(Duration::ZERO);
    assert_eq!(emu.pods("shop", "").len(), 5);
    emu.apply_value(deployment(3, "web:1")).unwrap();
    emu.advance_controller(Duration::ZERO);
    assert_eq!(emu.pods("shop", "").len(), 3);

    assert!(emu.delete("apps", "deployments", "shop", "web"));
    emu.advance_controller(Duration::ZERO);
    assert!(emu.pods("shop", "").is_empty());
}

#[tokio::test]
async fn other_modes_still_work() {
    let emu = Emulator::start().await.unwrap();
    let d = emu.apply_value(deployment(2, "web:1")).unwrap();
    assert_eq!(d["status"]["updatedReplicas"], 2, "Instant finishes on write");
    emu.set_rollout_mode(RolloutMode::Manual);
    let d = emu.apply_value(deployment(2, "web:2")).unwrap();
    assert_eq!(d["status"]["updatedReplicas"], 0);
    emu.advance_controller(Duration::from_secs(100));
    assert!(emu.pods("shop", "").is_empty(), "no controller outside Controlled");
}
