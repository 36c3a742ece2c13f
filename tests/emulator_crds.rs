//! CRDs beyond Istio's: canaryd's own RolloutPolicy CRD (deploy/crd.yaml) posted over HTTP,
//! the repository's policies validated against it, and Gateway API's HTTPRoute from ../shared/crds.

mod emulator_support;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube_emulator::Emulator;

fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Whether every field of `want` is in `have` with the same value.
fn contains(have: &serde_json::Value, want: &serde_json::Value) -> bool {
    match (have, want) {
        (serde_json::Value::Object(h), serde_json::Value::Object(w)) => {
            w.iter().all(|(k, v)| h.get(k).is_some_and(|hv| contains(hv, v)))
        }
        (serde_json::Value::Array(h), serde_json::Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(a, b)| contains(a, b))
        }
        _ => have == want,
    }
}

#[tokio::test]
async fn the_rolloutpolicy_crd_registers_over_http_and_accepts_the_repository_policies() {
    let emu = Emulator::start().await.unwrap();
    let crd_yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crd.yaml")).unwrap();
    let crd: DynamicObject =
        serde_json::from_value(kube_emulator::parse_yaml_docs(&crd_yaml).unwrap().remove(0)).unwrap();
    let crds_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let crds: Api<DynamicObject> = Api::all_with(emu.client(), &crds_ar);
    let stored = crds.create(&PostParams::default(), &crd).await.unwrap();
    assert_eq!(stored.data["status"]["conditions"][1]["type"], "Established");

    let version = crd.data["spec"]["versions"][0]["name"].as_str().unwrap().to_string();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("canaryd.io", &version, "RolloutPolicy"),
        "rolloutpolicies",
    );
    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in kube_emulator::parse_yaml_docs(&text).unwrap() {
            if doc["kind"] != "RolloutPolicy" || doc["apiVersion"] != format!("canaryd.io/{version}") {
                continue;
            }
            let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
            emu.apply_yaml(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n")).unwrap();
            let api: Api<DynamicObject> = Api::namespaced_with(emu.client(), &ns, &ar);
            let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
            let created = api.create(&PostParams::default(), &obj).await;
            assert!(created.is_ok(), "{}: {:?}", path.display(), created.err());
            let stored = created.unwrap();
            // Defaults may be added, but nothing the policy says may be pruned.
            assert!(
                contains(&stored.data["spec"], &doc["spec"]),
                "{}: pruned: {}",
                path.display(),
                stored.data["spec"]
            );
            // Several example policies share a name; make room for the next one.
            api.delete(&stored.metadata.name.unwrap(), &Default::default()).await.unwrap();
            checked += 1;
        }
    }
    assert!(checked > 0, "the repository has policies");

    let api: Api<DynamicObject> = Api::namespaced_with(emu.client(), "default", &ar);
    let broken: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": format!("canaryd.io/{version}"), "kind": "RolloutPolicy",
        "metadata": {"name": "broken"}, "spec": {"target": "reviews"}}))
    .unwrap();
    let err = api_error(api.create(&PostParams::default(), &broken).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(err.details.unwrap().causes.iter().any(|c| c.field == "spec.target"));
}

#[tokio::test]
async fn an_httproute_is_validated_against_the_gateway_api_schema() {
    let emu = Emulator::start().await.unwrap();
    // The Gateway API CRD is not built into the emulator (canaryd does not use it yet); the
    // upstream file sits in ../shared/crds beside the checkout, as in CI.
    let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/crds/gateway-api-httproute.yaml");
    let crd = std::fs::read_to_string(crd)
        .unwrap_or_else(|e| panic!("{crd}: {e} (../shared must be beside the checkout)"));
    emu.apply_yaml(&crd).unwrap();
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: bookinfo}
spec:
  parentRefs: [{name: gateway}]
  rules:
  - backendRefs:
    - {name: reviews-v1, port: 9080, weight: 90}
    - {name: reviews-v2, port: 9080, weight: 10}
"#;
    let stored = emu.apply_yaml(route).unwrap().remove(0);
    // Defaults from the schema are filled in, as the apiserver does.
    assert_eq!(stored["spec"]["parentRefs"][0]["kind"], "Gateway");
    let err = emu.apply_yaml(&route.replace("weight: 10", "weight: 1000001")).unwrap_err();
    assert!(err.to_string().contains("spec.rules[0].backendRefs[1].weight"), "{err}");
}
