//! kube-rs `Api<DynamicObject>` against the emulator: CRUD on the bookinfo `reviews` objects,
//! optimistic concurrency, the four patch types, schema validation, subresources.

mod emulator_support;

use emulator_support::*;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube_emulator::Emulator;
use serde_json::json;

fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn creates_gets_lists_and_updates_the_reviews_virtualservice() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(BOOKINFO_NS).unwrap();
    let vs = virtual_services(emu.client());

    let created = vs.create(&PostParams::default(), &dynamic(REVIEWS_VS)).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());

    let mut got = vs.get("reviews").await.unwrap();
    assert_eq!(weights(&got.data), vec![90, 10]);
    assert_eq!(vs.list(&Default::default()).await.unwrap().items.len(), 1);

    got.data["spec"]["http"][0]["route"][0]["weight"] = json!(70);
    got.data["spec"]["http"][0]["route"][1]["weight"] = json!(30);
    let updated = vs.replace("reviews", &PostParams::default(), &got).await.unwrap();
    assert_eq!(weights(&updated.data), vec![70, 30]);
    assert_eq!(updated.metadata.generation, Some(2), "a spec change bumps generation");
    assert_ne!(updated.metadata.resource_version, got.metadata.resource_version);

    let dr: Api<DynamicObject> = Api::namespaced_with(emu.client(), "bookinfo", &dr_resource());
    dr.create(&PostParams::default(), &dynamic(REVIEWS_DR)).await.unwrap();
    let stored = emu.get("networking.istio.io", "v1", "destinationrules", "bookinfo", "reviews").unwrap();
    assert_eq!(stored["spec"]["subsets"][1]["name"], "v2");
}

#[tokio::test]
async fn the_same_object_is_served_through_every_crd_version() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(&format!("{BOOKINFO_NS}---{REVIEWS_VS}")).unwrap();
    let v1beta1 =
        emu.get("networking.istio.io", "v1beta1", "virtualservices", "bookinfo", "reviews").unwrap();
    assert_eq!(v1beta1["apiVersion"], "networking.istio.io/v1beta1");
    assert_eq!(weights(&v1beta1), vec![90, 10]);
}

#[tokio::test]
async fn creating_twice_is_409_already_exists_and_missing_namespace_is_404() {
    let emu = Emulator::start().await.unwrap();
    let vs = virtual_services(emu.client());
    let err = api_error(vs.create(&PostParams::default(), &dynamic(REVIEWS_VS)).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "namespaces \"bookinfo\" not found");

    emu.apply_yaml(BOOKINFO_NS).unwrap();
    vs.create(&PostParams::default(), &dynamic(REVIEWS_VS)).await.unwrap();
    let err = api_error(vs.create(&PostParams::default(), &dynamic(REVIEWS_VS)).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
}

#[tokio::test]
async fn update_with_a_stale_resource_version_is_409_conflict() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(&format!("{BOOKINFO_NS}---{REVIEWS_VS}")).unwrap();
    let vs = virtual_services(emu.client());
    let stale = vs.get("reviews").await.unwrap();
    let mut fresh = stale.clone();
    fresh.data["spec"]["http"][0]["route"][0]["weight"] = json!(80);
    fresh.data["spec"]["http"][0]["route"][1]["weight"] = json!(20);
    vs.replace("reviews", &PostParams::default(), &fresh).await.unwrap();

    let err = api_error(vs.replace("reviews", &PostParams::default(), &stale).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(err.message.contains("the object has been modified"), "{}", err.message);
    assert_eq!(weights(&vs.get("reviews").await.unwrap().data), vec![80, 20]);

    // A merge patch carrying the stale version is a precondition too.
    let rv = stale.metadata.resource_version.clone().unwrap();
    let p = json!({"metadata": {"resourceVersion": rv}, "spec": {"hosts": ["x"]}});
    let err = api_error(vs.patch("reviews", &PatchParams::default(), &Patch::Merge(&p)).await.unwrap_err());
    assert_eq!(err.code, 409);
}

#[tokio::test]
async fn json_patch_with_a_failing_test_is_422_and_changes_nothing() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(&format!("{BOOKINFO_NS}---{REVIEWS_VS}")).unwrap();
    let vs = virtual_services(emu.client());
    let before = emu.resource_version();
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/http/0/route/0/weight", "value": 50},
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 0},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 100},
    ]))
    .unwrap();
    let err =
        api_error(vs.patch("reviews", &PatchParams::default(), &Patch::<()>::Json(patch)).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(weights(&vs.get("reviews").await.unwrap().data), vec![90, 10]);
    assert_eq!(emu.resource_version(), before);

    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/http/0/route/0/weight", "value": 90},
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 0},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 100},
    ]))
    .unwrap();
    let after = vs.patch("reviews", &PatchParams::default(), &Patch::<()>::Json(patch)).await.unwrap();
    assert_eq!(weights(&after.data), vec![0, 100]);
}

#[tokio::test]
async fn merge_patch_sets_annotations_and_replaces_lists() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(&format!("{BOOKINFO_NS}---{REVIEWS_VS}")).unwrap();
    let vs = virtual_services(emu.client());
    let p = json!({"metadata": {"annotations": {"canaryd.io/state": "step-1"}},
                   "spec": {"http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 70},
                                                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 30}]}]}});
    let out = vs.patch("reviews", &PatchParams::default(), &Patch::Merge(&p)).await.unwrap();
    assert_eq!(weights(&out.data), vec![70, 30]);
    assert_eq!(out.metadata.annotations.unwrap()["canaryd.io/state"], "step-1");
    assert_eq!(out.metadata.generation, Some(2));
}

#[tokio::test]
async fn strategic_merge_patch_is_415_on_a_virtualservice_but_works_on_a_deployment() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(&format!("{BOOKINFO_NS}---{REVIEWS_VS}---{REVIEWS_V2_DEPLOYMENT}")).unwrap();
    let vs = virtual_services(emu.client());
    let err = api_error(
        vs.patch("reviews", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"hosts": ["r"]}})))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (415, "UnsupportedMediaType"));

    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(emu.client(), "bookinfo");
    let p =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "reviews", "image": "reviews:v3"}]}}}});
    let d = deployments.patch("reviews-v2", &PatchParams::default(), &Patch::Strategic(p)).await.unwrap();
    let containers = d.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(containers.len(), 1, "containers merge by name");
    assert_eq!(containers[0].image.as_deref(), Some("reviews:v3"));
}

#[tokio::test]
async fn a_schema_violation_is_422_naming_the_field() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(BOOKINFO_NS).unwrap();
    let vs = virtual_services(emu.client());
    let bad = dynamic(&REVIEWS_VS.replace("weight: 10", "weight: ten"));
    let err = api_error(vs.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(err.message.contains("spec.http[0].route[1].weight"), "{}", err.message);
    assert!(err.message.contains("must be of type integer"), "{}", err.message);
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].field, "spec.http[0].route[1].weight");
    assert_eq!(causes[0].reason, "FieldValueTypeInvalid");

    let missing = dynamic(&REVIEWS_VS.replace("      weight: 90\n", "      weight: 90\n    - weight: 5\n"));
    let err = api_error(vs.create(&PostParams::default(), &missing).await.unwrap_err());
    assert_eq!(err.details.unwrap().causes[0].field, "spec.http[0].route[1].destination");
}

#[tokio::test]
async fn unknown_fields_are_pruned_or_rejected_in_strict_mode() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(BOOKINFO_NS).unwrap();
    let vs = virtual_services(emu.client());
    let with_extra = dynamic(&REVIEWS_VS.replace("  hosts:\n", "  canaryStep: 3\n  hosts:\n"));
    let stored = vs.create(&PostParams::default(), &with_extra).await.unwrap();
    assert!(stored.data["spec"].get("canaryStep").is_none());
    assert_eq!(weights(&stored.data), vec![90, 10]);

    let strict =
        PatchParams { field_validation: Some(kube::api::ValidationDirective::Strict), ..Default::default() };
    let p = json!({"spec": {"canaryStep": 4}});
    let err = api_error(vs.patch("reviews", &strict, &Patch::Merge(&p)).await.unwrap_err());
    assert_eq!(err.code, 400);
    assert!(err.message.contains("unknown field \"spec.canaryStep\""), "{}", err.message);
}

#[tokio::test]
async fn server_side_apply_conflicts_with_another_manager_unless_forced() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(BOOKINFO_NS).unwrap();
    let vs = virtual_services(emu.client());
    let gitops = PatchParams::apply("gitops");
    vs.patch("reviews", &gitops, &Patch::Apply(dynamic(REVIEWS_VS))).await.unwrap();

    let canaryd = PatchParams::apply("canaryd");
    let shifted =
        dynamic(&REVIEWS_VS.replace("weight: 90", "weight: 70").replace("weight: 10", "weight: 30"));
    let err = api_error(vs.patch("reviews", &canaryd, &Patch::Apply(&shifted)).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(err.message.contains("conflict with \"gitops\""), "{}", err.message);

    let out = vs.patch("reviews", &canaryd.force(), &Patch::Apply(&shifted)).await.unwrap();
    assert_eq!(weights(&out.data), vec![70, 30]);
    let managers: Vec<_> =
        out.metadata.managed_fields.unwrap().into_iter().filter_map(|m| m.manager).collect();
    assert!(managers.contains(&"canaryd".to_string()), "{managers:?}");
}

#[tokio::test]
async fn status_is_ignored_on_the_main_resource_and_written_through_status() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(&format!("{BOOKINFO_NS}---{REVIEWS_VS}")).unwrap();
    let vs = virtual_services(emu.client());
    let p = json!({"status": {"observedGeneration": 1}});
    let out = vs.patch("reviews", &PatchParams::default(), &Patch::Merge(&p)).await.unwrap();
    assert!(out.data.get("status").is_none());
    let out = vs.patch_status("reviews", &PatchParams::default(), &Patch::Merge(&p)).await.unwrap();
    assert_eq!(out.data["status"]["observedGeneration"], 1);
    assert_eq!(out.metadata.generation, Some(1), "status writes do not bump generation");
}

#[tokio::test]
async fn deployments_report_finished_rollouts_and_scale_through_the_subresource() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube_emulator::RolloutMode;
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(&format!("{BOOKINFO_NS}---{REVIEWS_V2_DEPLOYMENT}")).unwrap();
    let deployments: Api<Deployment> = Api::namespaced(emu.client(), "bookinfo");
    let d = deployments.get("reviews-v2").await.unwrap();
    let status = d.status.unwrap();
    assert_eq!((status.observed_generation, status.updated_replicas), (Some(1), Some(2)));

    let scaled = deployments
        .patch_scale("reviews-v2", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 4}})))
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(4));
    assert_eq!(deployments.get("reviews-v2").await.unwrap().spec.unwrap().replicas, Some(4));

    emu.set_rollout_mode(RolloutMode::Manual);
    let p = json!({"spec": {"template": {"metadata": {"labels": {"app": "reviews", "version": "v2", "rev": "2"}}}}});
    let d = deployments.patch("reviews-v2", &PatchParams::default(), &Patch::Merge(&p)).await.unwrap();
    assert_eq!(d.status.unwrap().updated_replicas, Some(0), "rollout held in manual mode");
    emu.set_rollout_progress("bookinfo", "reviews-v2", 4).unwrap();
    let status = deployments.get("reviews-v2").await.unwrap().status.unwrap();
    assert_eq!((status.observed_generation, status.updated_replicas), (Some(3), Some(4)));
}

#[tokio::test]
async fn a_lease_taken_with_a_stale_version_is_409_so_only_one_leader_writes() {
    use k8s_openapi::api::coordination::v1::Lease;
    let emu = Emulator::start().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(emu.client(), "default");
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "canaryd"}, "spec": {"holderIdentity": "a"}}))
            .unwrap();
    let seen = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut by_b = seen.clone();
    by_b.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases.replace("canaryd", &PostParams::default(), &by_b).await.unwrap();
    let mut by_c = seen;
    by_c.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let err = api_error(leases.replace("canaryd", &PostParams::default(), &by_c).await.unwrap_err());
    assert_eq!(err.code, 409);
    let holder = leases.get("canaryd").await.unwrap().spec.unwrap().holder_identity;
    assert_eq!(holder.as_deref(), Some("b"));
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {app: reviews, version: v1}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, labels: {app: reviews, version: v2}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, labels: {app: ratings}}\n",
    )
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let names = |l: kube::api::ObjectList<ConfigMap>| -> Vec<String> {
        l.items.into_iter().map(|c| c.metadata.name.unwrap()).collect()
    };
    let lp = kube::api::ListParams::default().labels("app=reviews,version notin (v1)");
    assert_eq!(names(cms.list(&lp).await.unwrap()), vec!["b"]);
    let lp = kube::api::ListParams::default().labels("!version");
    assert_eq!(names(cms.list(&lp).await.unwrap()), vec!["c"]);
    let lp = kube::api::ListParams::default().fields("metadata.name=a");
    assert_eq!(names(cms.list(&lp).await.unwrap()), vec!["a"]);
}

#[tokio::test]
async fn lists_come_in_pages_of_the_asked_limit_as_one_snapshot_version() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(BOOKINFO_NS).unwrap();
    let vs = virtual_services(emu.client());
    for name in ["a", "b", "c"] {
        let mut obj = dynamic(REVIEWS_VS);
        obj.metadata.name = Some(name.to_string());
        vs.create(&PostParams::default(), &obj).await.unwrap();
    }
    let first = vs.list(&kube::api::ListParams::default().limit(2)).await.unwrap();
    let names = |l: &kube::core::ObjectList<DynamicObject>| {
        l.items.iter().map(|o| o.metadata.name.clone().unwrap_or_default()).collect::<Vec<_>>()
    };
    assert_eq!(names(&first), ["a", "b"]);
    let token = first.metadata.continue_.clone().expect("a continue token while objects remain");
    // A change between pages: the later page shows it, and the version reported is the
    // first page's, so a watch from it sees the change.
    vs.patch("c", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
        .await
        .unwrap();
    let rest = vs.list(&kube::api::ListParams::default().limit(2).continue_token(&token)).await.unwrap();
    assert_eq!(names(&rest), ["c"]);
    assert!(rest.metadata.continue_.as_deref().unwrap_or_default().is_empty(), "the last page has no token");
    assert_eq!(rest.metadata.resource_version, first.metadata.resource_version);
    let whole = vs.list(&Default::default()).await.unwrap();
    assert_eq!(names(&whole), ["a", "b", "c"]);
    assert!(whole.metadata.continue_.as_deref().unwrap_or_default().is_empty());
}
