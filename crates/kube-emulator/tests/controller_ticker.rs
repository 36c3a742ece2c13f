//! The controller's background ticker, seen through the HTTP API as canaryd sees it: pod
//! watches, label-selected lists, tables, and a Deployment whose status catches up.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube_emulator::{ControllerConfig, Emulator, RolloutMode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn web(image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": image}]}}
        }
    }))
    .unwrap()
}

/// Polls until the Deployment's status reflects its generation and every replica is available.
async fn wait_rolled_out(api: &Api<Deployment>) -> Deployment {
    for _ in 0..200 {
        let d = api.get("web").await.unwrap();
        let s = d.status.clone().unwrap_or_default();
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        if s.observed_generation == d.metadata.generation
            && s.updated_replicas == Some(want)
            && s.available_replicas == Some(want)
            && s.replicas == Some(want)
        {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("rollout did not finish");
}

#[tokio::test]
async fn ticker_rolls_out_and_watches_see_pods() {
    let emu = Emulator::start().await.unwrap();
    emu.set_rollout_mode(RolloutMode::Controlled(ControllerConfig {
        ready_after: Duration::from_millis(50),
        progress_deadline: Duration::from_secs(600),
        tick: Duration::from_millis(10),
    }));
    let pods: Api<Pod> = Api::namespaced(emu.client(), "default");
    let deployments: Api<Deployment> = Api::namespaced(emu.client(), "default");
    let mut watch = pods.watch(&WatchParams::default().labels("app=web"), "0").await.unwrap().boxed();

    deployments.create(&PostParams::default(), &web("web:1")).await.unwrap();
    let first = wait_rolled_out(&deployments).await;
    let mut added = 0;
    while added < 2 {
        match tokio::time::timeout(Duration::from_secs(5), watch.try_next()).await.unwrap().unwrap() {
            Some(WatchEvent::Added(p)) => {
                assert!(p.metadata.name.unwrap().starts_with("web-"));
                added += 1;
            }
            Some(_) => {}
            None => panic!("watch ended"),
        }
    }

    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}});
    let patched = deployments.patch("web", &PatchParams::default(), &Patch::Strategic(&patch)).await.unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let done = wait_rolled_out(&deployments).await;
    assert_eq!(done.status.unwrap().observed_generation, Some(2));
    assert!(first.metadata.resource_version != done.metadata.resource_version);

    let listed = pods.list(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(listed.items.len(), 2);
    for p in &listed.items {
        assert_eq!(p.spec.as_ref().unwrap().containers[0].image.as_deref(), Some("web:2"));
    }
    assert!(pods.list(&ListParams::default().labels("app=other")).await.unwrap().items.is_empty());

    // kubectl's table for pods.
    let addr = emu.url().trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: {addr}\r\n\
         Accept: application/json;as=Table;v=v1;g=meta.k8s.io\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).await.unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let body = body.get(body.find('{').unwrap()..body.rfind('}').unwrap() + 1).unwrap();
    let table: serde_json::Value = serde_json::from_str(body).unwrap();
    let names: Vec<&str> =
        table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Name", "Ready", "Status", "Restarts", "Age"]);
    let row = &table["rows"][0]["cells"];
    assert_eq!((row[1].as_str(), row[2].as_str()), (Some("1/1"), Some("Running")));

    // Switching the controller off stops the ticker: nothing moves any more.
    emu.set_rollout_mode(RolloutMode::Instant);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let rv = emu.resource_version();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(emu.resource_version(), rv);
}
