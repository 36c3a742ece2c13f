//! An alert acknowledged by its channel is written to the state within a second: the
//! delivery wakes the daemon's loop instead of waiting for the policy's next visit (the
//! window in which a crash would send the alert again). The real binary on the API emulator.

mod alert_support;
mod security_support;

use canaryd::demo::FIXTURES;
use canaryd::policy::parse_policy;
use canaryd_testkit::http::HttpServer;
use kube_emulator::Emulator;
use security_support::*;
use std::time::{Duration, Instant};

const POLICY: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}\n  analysis: {interval: 1m}\n  alerts:\n    on: [abort]\n    webhooks:\n      - {name: ops, urlFrom: {env: CANARYD_TEST_HOOK}}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_alert_is_persisted_within_a_second() {
    let hook = HttpServer::start().await;
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(FIXTURES).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("reviews.yaml"), POLICY).unwrap();
    let policy = parse_policy("reviews.yaml", POLICY).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(&emu, &kubeconfig, None);
    let policies_arg = policies.display().to_string();
    let args = [
        "run",
        "--policies",
        &policies_arg,
        "--prometheus",
        "http://127.0.0.1:9",
        "--metrics-addr",
        "127.0.0.1:0",
        "--egress-allow",
        "127.0.0.0/8",
    ];
    let mut cmd = canaryd(&kubeconfig, &args);
    cmd.env("CANARYD_TEST_HOOK", hook.url("/hooks/ops"));
    let mut daemon = Daemon::spawn(cmd, dir.path().join("daemon.log"));
    let limit = Duration::from_secs(60);
    let state = || canaryd_testkit::state::recorded_state(&emu, &policy);
    eventually(limit, "the rollout to start", || {
        (state().phase == canaryd::engine::Phase::Progressing).then_some(())
    })
    .await;
    annotate_vs(&emu, &canaryd::istio::command_annotation_key(&policy), "abort: ack test");
    hook.wait_for(1, limit).await;
    let delivered = Instant::now();
    eventually(limit, "the acknowledgement in the state", || state().outbox.is_empty().then_some(())).await;
    let persisted = delivered.elapsed();
    daemon.stop();
    println!("delivery → acknowledgement written: {persisted:?}");
    assert!(persisted < Duration::from_secs(1), "acknowledged after {persisted:?}\n{}", daemon.logs());
    assert_eq!(hook.requests().len(), 1, "sent once");
}
