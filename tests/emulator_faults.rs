//! Watches, fault injection, the request log and the RBAC mode.

mod emulator_support;

use std::time::{Duration, Instant};

use emulator_support::*;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, Patch, PatchParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube_emulator::{Emulator, Fault, FaultKind, Matcher, Rbac};
use serde_json::json;

fn shift(to_canary: i64) -> serde_json::Value {
    json!({"spec": {"http": [{"route": [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100 - to_canary},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": to_canary}]}]}})
}

async fn bookinfo() -> kube_emulator::EmulatorHandle {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(&format!("{BOOKINFO_NS}---{REVIEWS_VS}---{REVIEWS_V2_DEPLOYMENT}")).unwrap();
    emu
}

#[tokio::test]
async fn a_watch_sees_a_weight_change_and_resumes_after_a_dropped_watch() {
    let emu = bookinfo().await;
    let vs = virtual_services(emu.client());
    let mut events = watcher(vs.clone(), watcher::Config::default()).boxed();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.try_next()).await.unwrap().unwrap() {
            Some(watcher::Event::InitDone) => break,
            Some(_) => {}
            None => panic!("watch ended"),
        }
    }
    // Cuts the open watch (or the next one the watcher opens).
    emu.inject(Fault::new(Matcher::any().verb("watch").resource("virtualservices"), FaultKind::DropWatch));
    vs.patch("reviews", &PatchParams::default(), &Patch::Merge(&shift(30))).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(watcher::Event::Apply(o)) = events.try_next().await.unwrap() {
                return o;
            }
        }
    })
    .await
    .expect("the change arrives after the drop");
    assert_eq!(weights(&seen.data), vec![70, 30]);
    assert!(emu.pending_faults().is_empty(), "the drop was used");
    let watches: Vec<_> = emu.requests().into_iter().filter(|r| r.verb == "watch").collect();
    assert!(watches.len() >= 2, "{watches:?}");
    assert!(watches[1].query.contains("resourceVersion="), "resumed from a version: {}", watches[1].query);
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_gets_410_expired() {
    let emu = bookinfo().await;
    let vs = virtual_services(emu.client());
    let old = emu.resource_version().to_string();
    vs.patch("reviews", &PatchParams::default(), &Patch::Merge(&shift(30))).await.unwrap();
    emu.compact();
    let mut stream = vs.watch(&WatchParams::default(), &old).await.unwrap().boxed();
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn a_watch_resumed_from_a_version_replays_only_later_changes() {
    let emu = bookinfo().await;
    let vs = virtual_services(emu.client());
    let from = emu.resource_version().to_string();
    vs.patch("reviews", &PatchParams::default(), &Patch::Merge(&shift(30))).await.unwrap();
    vs.delete("reviews", &Default::default()).await.unwrap();
    let events: Vec<_> = vs
        .watch(&WatchParams::default().timeout(1), &from)
        .await
        .unwrap()
        .take(2)
        .try_collect()
        .await
        .unwrap();
    assert!(matches!(&events[0], WatchEvent::Modified(o) if weights(&o.data) == vec![70, 30]));
    assert!(matches!(&events[1], WatchEvent::Deleted(_)));
}

#[tokio::test]
async fn an_injected_500_fails_once_then_requests_succeed() {
    let emu = bookinfo().await;
    let vs = virtual_services(emu.client());
    emu.inject(Fault::new(
        Matcher::any().verb("get").resource("virtualservices").name("reviews"),
        FaultKind::Status(500),
    ));
    match vs.get("reviews").await.unwrap_err() {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (500, "InternalError")),
        other => panic!("{other:?}"),
    }
    assert_eq!(weights(&vs.get("reviews").await.unwrap().data), vec![90, 10]);
}

#[tokio::test]
async fn an_injected_503_is_retried_by_kube_rs_and_shows_in_the_request_log() {
    let emu = bookinfo().await;
    let vs = virtual_services(emu.client());
    emu.clear_requests();
    emu.inject(Fault::new(Matcher::any().verb("patch").resource("virtualservices"), FaultKind::Status(503)));
    vs.patch("reviews", &PatchParams::default(), &Patch::Merge(&shift(30))).await.unwrap();
    let log = emu.requests();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 200]);
    let r = &log[1];
    assert_eq!(r.method, "PATCH");
    assert_eq!(r.path, "/apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices/reviews");
    assert_eq!(r.content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(
        (r.verb.as_str(), r.resource.as_str(), r.name.as_str()),
        ("patch", "virtualservices", "reviews")
    );
    assert_eq!(r.user, None);
}

#[tokio::test]
async fn an_injected_delay_slows_the_matching_request_only() {
    let emu = bookinfo().await;
    let vs = virtual_services(emu.client());
    emu.inject(Fault::new(
        Matcher::any().verb("GET").resource("virtualservices"),
        FaultKind::Delay(Duration::from_millis(300)),
    ));
    let t = Instant::now();
    vs.get("reviews").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    vs.get("reviews").await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn an_injected_409_can_hit_a_subresource_several_times() {
    let emu = bookinfo().await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(emu.client(), "bookinfo");
    emu.inject(Fault::new(Matcher::any().resource("deployments/scale"), FaultKind::Status(409)).times(2));
    let scale = json!({"spec": {"replicas": 3}});
    for _ in 0..2 {
        let err = deployments
            .patch_scale("reviews-v2", &PatchParams::default(), &Patch::Merge(&scale))
            .await
            .unwrap_err();
        assert!(matches!(err, kube::Error::Api(s) if s.code == 409));
    }
    deployments.patch_scale("reviews-v2", &PatchParams::default(), &Patch::Merge(&scale)).await.unwrap();
}

const CANARYD_ROLE: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: canaryd
  namespace: bookinfo
rules:
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  resourceNames: ["reviews-v2"]
  verbs: ["get", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: canaryd, namespace: bookinfo}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: canaryd}
subjects: [{kind: ServiceAccount, name: canaryd, namespace: bookinfo}]
"#;

#[tokio::test]
async fn rbac_mode_allows_granted_requests_and_forbids_the_rest() {
    let emu = bookinfo().await;
    emu.enable_rbac(Rbac::new().bind("canaryd-token", CANARYD_ROLE).unwrap());
    let vs = virtual_services(emu.client_as("canaryd-token"));
    vs.patch("reviews", &PatchParams::default(), &Patch::Merge(&shift(30))).await.unwrap();
    match vs.delete("reviews", &Default::default()).await.unwrap_err() {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert_eq!(
                s.message,
                "virtualservices.networking.istio.io \"reviews\" is forbidden: User \"canaryd-token\" cannot delete resource \"virtualservices\" in API group \"networking.istio.io\" in the namespace \"bookinfo\""
            );
        }
        other => panic!("{other:?}"),
    }
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(emu.client_as("canaryd-token"), "bookinfo");
    deployments.get_scale("reviews-v2").await.unwrap();
    assert!(deployments.get("reviews-v2").await.is_err(), "scale does not grant the deployment itself");
    let elsewhere: Api<DynamicObject> =
        Api::namespaced_with(emu.client_as("canaryd-token"), "default", &vs_resource());
    assert!(elsewhere.list(&Default::default()).await.is_err(), "a Role is limited to its namespace");
    let stranger = virtual_services(emu.client_as("someone-else"));
    assert!(stranger.get("reviews").await.is_err());

    let denied: Vec<_> = emu.requests().into_iter().filter(|r| r.status == 403).collect();
    assert_eq!(denied.len(), 4);
    assert_eq!(denied[0].user.as_deref(), Some("canaryd-token"));
    assert_eq!(denied[3].user.as_deref(), Some("someone-else"));
}
