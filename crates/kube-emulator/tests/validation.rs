//! Built-in validation the apiserver applies beyond schemas: Deployment selectors and
//! replicas, label and annotation syntax and size.

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_emulator::{Emulator, EmulatorError, EmulatorHandle};
use serde_json::{json, Value};

fn deployment(selector: Value, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": selector,
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "web", "image": "web:1"}]}}
        }
    })
}

/// The 422 causes of a rejected fixture write, as (field, message).
fn causes(emu: &EmulatorHandle, obj: Value) -> Vec<(String, String)> {
    match emu.apply_value(obj) {
        Err(EmulatorError::Api(e)) => {
            assert_eq!((e.code, e.reason), (422, "Invalid"), "{}", e.message);
            e.details.unwrap()["causes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c["field"].as_str().unwrap().into(), c["message"].as_str().unwrap().into()))
                .collect()
        }
        other => panic!("expected 422, got {other:?}"),
    }
}

#[tokio::test]
async fn deployment_selector_is_required() {
    let emu = Emulator::start().await.unwrap();
    let mut d = deployment(json!(null), json!({"app": "web"}));
    d["spec"].as_object_mut().unwrap().remove("selector");
    assert_eq!(causes(&emu, d), vec![("spec.selector".into(), "Required value".into())]);
}

#[tokio::test]
async fn deployment_selector_must_select_template_labels() {
    let emu = Emulator::start().await.unwrap();
    let d = deployment(
        json!({"matchLabels": {"app": "web", "version": "v1"}}),
        json!({"app": "web", "version": "v2"}),
    );
    assert_eq!(
        causes(&emu, d),
        vec![(
            "spec.template.metadata.labels".into(),
            r#"Invalid value: map[string]string{"app":"web", "version":"v2"}: `selector` does not match template `labels`"#
                .into()
        )]
    );
    // matchExpressions count as well, with every operator.
    let exprs = |op: &str, values: Value| {
        json!({"matchLabels": {"app": "web"},
               "matchExpressions": [{"key": "version", "operator": op, "values": values}]})
    };
    let labels = json!({"app": "web", "version": "v2"});
    assert_eq!(causes(&emu, deployment(exprs("NotIn", json!(["v2"])), labels.clone())).len(), 1);
    assert_eq!(causes(&emu, deployment(exprs("In", json!(["v1"])), labels.clone())).len(), 1);
    let mut dne = exprs("DoesNotExist", json!(null));
    dne["matchExpressions"][0].as_object_mut().unwrap().remove("values");
    assert_eq!(causes(&emu, deployment(dne, labels.clone())).len(), 1);
    emu.apply_value(deployment(exprs("In", json!(["v1", "v2"])), labels)).unwrap();
}

#[tokio::test]
async fn deployment_selector_syntax_and_replicas() {
    let emu = Emulator::start().await.unwrap();
    let bad_op = json!({"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["web"]}]});
    assert_eq!(
        causes(&emu, deployment(bad_op, json!({"app": "web"}))),
        vec![(
            "spec.selector.matchExpressions[0].operator".into(),
            r#"Invalid value: "Equals": not a valid selector operator"#.into()
        )]
    );
    let empty = causes(&emu, deployment(json!({}), json!({"app": "web"})));
    assert_eq!(empty[0].0, "spec.selector");
    assert!(empty[0].1.ends_with("empty selector is invalid for deployment"), "{empty:?}");
    let mut d = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "web"}));
    d["spec"]["replicas"] = json!(-1);
    assert_eq!(
        causes(&emu, d),
        vec![("spec.replicas".into(), "Invalid value: -1: must be greater than or equal to 0".into())]
    );
}

#[tokio::test]
async fn deployment_selector_is_immutable_and_patches_are_checked() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_value(deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "web"}))).unwrap();
    let moved =
        deployment(json!({"matchLabels": {"app": "web", "track": "x"}}), json!({"app": "web", "track": "x"}));
    assert_eq!(
        causes(&emu, moved),
        vec![(
            "spec.selector".into(),
            r#"Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web", "track":"x"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"#.into()
        )]
    );
    // An empty matchExpressions list is the same selector.
    emu.apply_value(deployment(
        json!({"matchLabels": {"app": "web"}, "matchExpressions": []}),
        json!({"app": "web"}),
    ))
    .unwrap();

    // Over HTTP: a merge patch that relabels the template gets the apiserver's Status.
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(emu.client(), "default");
    let patch = json!({"spec": {"template": {"metadata": {"labels": {"app": "other"}}}}});
    let err = api.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap_err();
    let kube::Error::Api(status) = err else { panic!("{err:?}") };
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        r#"Deployment.apps "web" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{"app":"other"}: `selector` does not match template `labels`"#
    );
    // And on create.
    let bad: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value({
        let mut d = deployment(json!({"matchLabels": {"app": "x"}}), json!({"app": "y"}));
        d["metadata"]["name"] = json!("other");
        d
    })
    .unwrap();
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 422), "{err:?}");
}

fn configmap(labels: Value, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "cm", "namespace": "default", "labels": labels, "annotations": annotations}})
}

#[tokio::test]
async fn annotation_keys_and_total_size() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_value(configmap(json!({}), json!({"example.com/Some_Key.1": "x", "plain": ""}))).unwrap();
    let c = causes(&emu, configmap(json!({}), json!({"bad key": "x"})));
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0, "metadata.annotations");
    assert!(c[0].1.starts_with(r#"Invalid value: "bad key": name part must consist of"#), "{c:?}");
    let c = causes(&emu, configmap(json!({}), json!({"a/b/c": "x", "-x.io/k": "y"})));
    assert_eq!(c.len(), 2, "{c:?}");
    let c = causes(&emu, configmap(json!({}), json!({format!("{}/k", "a".repeat(254)): "x"})));
    assert!(c[0].1.ends_with("prefix part must be no more than 253 characters"), "{c:?}");
    let c = causes(&emu, configmap(json!({}), json!({"a".repeat(64): "x"})));
    assert!(c[0].1.ends_with("name part must be no more than 63 characters"), "{c:?}");

    // 262144 bytes of keys and values in total is the limit.
    let at_limit = json!({"big": "x".repeat(262_144 - 3)});
    emu.apply_value(configmap(json!({}), at_limit)).unwrap();
    let over = json!({"big": "x".repeat(262_144 - 3), "k": ""});
    assert_eq!(
        causes(&emu, configmap(json!({}), over)),
        vec![("metadata.annotations".into(), "Too long: must have at most 262144 bytes".into())]
    );
}

#[tokio::test]
async fn label_keys_and_values() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_value(configmap(json!({"app.kubernetes.io/name": "web", "empty": ""}), json!({}))).unwrap();
    let c = causes(&emu, configmap(json!({"app": "v".repeat(64)}), json!({})));
    assert_eq!(
        c,
        vec![(
            "metadata.labels".into(),
            format!("Invalid value: \"{}\": must be no more than 63 characters", "v".repeat(64))
        )]
    );
    let c = causes(&emu, configmap(json!({"app": "a b"}), json!({})));
    assert!(c[0].1.contains("a valid label must be an empty string"), "{c:?}");
    let c = causes(&emu, configmap(json!({"Bad/key": "x"}), json!({})));
    assert!(c[0].1.contains("prefix part a lowercase RFC 1123 subdomain"), "{c:?}");
}
