//! A cluster whose Istio serves only `networking.istio.io/v1beta1` (Istio before 1.22): the
//! daemon discovers the version and drives the rollout through it. Its own test binary: the
//! discovered version is process-wide.

use canaryd::daemon::kube_io::{discover_istio_version, istio_version};
use canaryd::daemon::{Driver, NoEffects};
use canaryd::demo::{SimulatedMesh, FIXTURES};
use canaryd::engine::Phase;
use canaryd::policy::parse_policy;
use kube_emulator::{parse_yaml_docs, Emulator, ISTIO_DESTINATIONRULE_CRD, ISTIO_VIRTUALSERVICE_CRD};
use serde_json::Value;
use std::sync::Arc;

/// The upstream CRD with `v1` no longer served and `v1beta1` the storage version.
fn only_v1beta1(crd: &str) -> Value {
    let mut crd = parse_yaml_docs(crd).unwrap().remove(0);
    for v in crd["spec"]["versions"].as_array_mut().unwrap() {
        let name = v["name"].as_str().unwrap().to_string();
        v["served"] = Value::Bool(name != "v1");
        v["storage"] = Value::Bool(name == "v1beta1");
    }
    crd
}

#[tokio::test]
async fn a_v1beta1_only_istio_is_discovered_and_driven() {
    let emu = Arc::new(Emulator::start().await.unwrap());
    emu.apply_value(only_v1beta1(ISTIO_VIRTUALSERVICE_CRD)).unwrap();
    emu.apply_value(only_v1beta1(ISTIO_DESTINATIONRULE_CRD)).unwrap();
    let fixtures = FIXTURES.replace("networking.istio.io/v1\n", "networking.istio.io/v1beta1\n");
    emu.apply_yaml(&fixtures).unwrap();
    assert_eq!(discover_istio_version(&emu.client()).await, Ok("v1beta1"));
    assert_eq!(istio_version(), "v1beta1");

    let policy = parse_policy("p.yaml", "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}\n").unwrap();
    let mesh = SimulatedMesh::new(emu.clone(), policy.clone(), 100.0, 5);
    let driver = Driver::new(emu.client(), mesh, NoEffects);
    let report = driver
        .reconcile(&policy, "2026-11-23T10:00:00Z".parse().unwrap())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.state.phase, Phase::Progressing);
    let vs = emu.get("networking.istio.io", "v1beta1", "virtualservices", "bookinfo", "reviews").unwrap();
    assert_eq!(vs["spec"]["http"][0]["route"][1]["weight"], 10, "{vs}");
    let writes: Vec<_> = emu.requests().into_iter().filter(|r| r.method == "PATCH").collect();
    assert!(
        !writes.is_empty() && writes.iter().all(|r| r.path.contains("/networking.istio.io/v1beta1/")),
        "{writes:?}"
    );
}
