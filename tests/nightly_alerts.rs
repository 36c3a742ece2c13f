//! An unattended abort, end to end through the real daemon: `Driver` + `DaemonEffects` against
//! the API emulator, a simulated mesh whose canary fails 30% of its requests, a real SMTP
//! server over TCP (`alert_support/smtp.rs`) that is down at first, and a real HTTP server
//! (axum) for a signed JSON webhook. The daemon is killed mid-retry (its tokio runtime is shut
//! down, taking its delivery tasks with it) and restarted while SMTP is still down: the alert
//! survives in the outbox on the VirtualService and arrives exactly once per channel.

mod alert_support;

use alert_support::fixtures::{loopback_egress, loopback_mailer, unused_addr};
use canaryd::alert::{
    Deliverer, DelivererConfig, EgressClient, MapSecretStore, RenderOptions, RetryPolicy, SecretStore,
    WebhookSender,
};
use canaryd::daemon::{DaemonEffects, Driver};
use canaryd::demo::{Behaviour, SimulatedMesh, FIXTURES};
use canaryd::engine::{PendingAlert, Phase};
use canaryd::policy::{parse_policy, AlertEvent, Policy};
use canaryd_testkit::http::HttpServer;
use canaryd_testkit::smtp::SmtpServer;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use kube_emulator::{Emulator, EmulatorHandle};
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const V2_IMAGE: &str = "docker.io/istio/examples-bookinfo-reviews-v2:1.20.1";
const SIGNING_KEY: &str = "nightly-signing-key";
const HOOK_PATH: &str = "/hooks/ops/T0KEN";

const POLICY: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}\n  steps: [{weight: 10, bake: 5m}, {weight: 30, bake: 5m}]\n  analysis: {interval: 1m, successRate: {tolerance: 2}, latency: {enabled: false}}\n  alerts:\n    email: {to: [oncall@example.com]}\n    webhooks:\n      - {name: ops-json, format: json, urlFrom: {secretKeyRef: {name: hooks, key: url}}, signingSecretFrom: {secretKeyRef: {name: hooks, key: signing}}}\n";

fn policy() -> Policy {
    parse_policy("nightly-alerts.yaml", POLICY).unwrap_or_else(|e| panic!("{e}"))
}

fn secrets(http: &HttpServer) -> Arc<dyn SecretStore> {
    Arc::new(MapSecretStore::new().with("bookinfo", "hooks", "url", http.url(HOOK_PATH)).with(
        "bookinfo",
        "hooks",
        "signing",
        SIGNING_KEY,
    ))
}

/// A daemon's effects as `canaryd run --egress-allow 127.0.0.0/8` builds them, with a short
/// retry (50 ms, doubling to 200 ms).
fn effects(smtp: SocketAddr, secrets: Arc<dyn SecretStore>, attempts: u32) -> DaemonEffects {
    let http = EgressClient::new(Duration::from_secs(5), loopback_egress()).unwrap();
    let deliverer = Deliverer::new(DelivererConfig {
        mailer: Some(loopback_mailer(smtp)),
        webhooks: WebhookSender::with_client(http.clone()),
        secrets: secrets.clone(),
        render: RenderOptions { prometheus_url: Some("https://prom.example".into()), ui_url: None },
        retry: RetryPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
            attempts,
            jitter: 0.5,
        },
    });
    DaemonEffects::new(deliverer, http, secrets)
}

fn mesh(emu: &Arc<EmulatorHandle>, p: &Policy) -> SimulatedMesh {
    let mesh = SimulatedMesh::new(emu.clone(), p.clone(), 100.0, 5);
    mesh.set_behaviour(V2_IMAGE, Behaviour { error_rate: 0.3, ..Behaviour::HEALTHY });
    mesh
}

use canaryd_testkit::state::{first_route_weights, recorded_state};

fn canary_weight(emu: &EmulatorHandle) -> u64 {
    first_route_weights(emu, &policy()).1
}

fn verify(body: &[u8], header: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_KEY.as_bytes()).unwrap();
    mac.update(body);
    let Some(sig) = header.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()) else { return false };
    mac.verify_slice(&sig).is_ok()
}

fn t0() -> Timestamp {
    "2026-11-24T01:00:00Z".parse().unwrap()
}

/// The first daemon's life: the rollout starts, fails, is aborted; the webhook is delivered
/// (and, if its acknowledgement makes it back in time, recorded on the VirtualService); email is
/// retried against the dead SMTP port, `attempts` per delivery task. Returns the abort alert as
/// first written and the simulated clock.
async fn first_life(
    emu: Arc<EmulatorHandle>,
    p: Policy,
    smtp: SocketAddr,
    secrets: Arc<dyn SecretStore>,
    hook_seen: Arc<dyn Fn() -> usize + Send + Sync>,
    attempts: u32,
) -> (PendingAlert, Timestamp) {
    let fx = effects(smtp, secrets, attempts);
    let deliverer = fx.deliverer.clone();
    let driver = Driver::new(emu.client(), mesh(&emu, &p), fx);
    let mut now = t0();
    let mut alert = None;
    for _ in 0..10 {
        driver.reconcile(&p, now).await.unwrap();
        now = Timestamp::from_second(now.as_second() + 60).unwrap();
        let s = recorded_state(&emu, &policy());
        if s.phase == Phase::Aborted {
            // The rollback is on the cluster in the same write as the alert.
            assert_eq!(canary_weight(&emu), 0);
            assert_eq!(s.outbox.len(), 1, "{:?}", s.outbox);
            alert = Some(s.outbox[0].clone());
            break;
        }
    }
    let alert = alert.expect("the failing canary was aborted");
    assert_eq!(alert.event, AlertEvent::Abort);
    // Keep reconciling (1 simulated minute per 100 ms) until the webhook arrived, email has
    // failed a few times, and the webhook's acknowledgement is persisted (or 3 s passed).
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        driver.reconcile(&p, now).await.unwrap();
        now = Timestamp::from_second(now.as_second() + 60).unwrap();
        let s = recorded_state(&emu, &policy());
        let acked = s.outbox.len() == 1 && s.outbox[0].delivered == ["ops-json"];
        let tried = hook_seen() == 1 && deliverer.metrics().channel("email").failed_attempts >= 3;
        if tried && (acked || started.elapsed() > Duration::from_secs(3)) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no delivery attempts");
    }
    assert_eq!(deliverer.metrics().channel("email").delivered, 0);
    (alert, now)
}

/// Runs the whole story; `first_attempts` is the first daemon's email attempts per delivery
/// task.
async fn abort_story(first_attempts: u32) {
    let started = Instant::now();
    let emu = Arc::new(Emulator::start().await.unwrap());
    emu.apply_yaml(FIXTURES).unwrap();
    let http = Arc::new(HttpServer::start().await);
    let smtp_addr = unused_addr(); // nothing listens here yet: SMTP is down
    let p = policy();
    let store = secrets(&http);

    // Daemon #1 runs on its own runtime; leaving that runtime is the crash: its spawned
    // delivery tasks die with it, mid-retry.
    let (emu1, p1, store1, http1) = (emu.clone(), p.clone(), store.clone(), http.clone());
    let (alert, mut now) = tokio::task::spawn_blocking(move || {
        let rt1 = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let seen = Arc::new(move || http1.requests_to(HOOK_PATH).len());
        let out = rt1.block_on(first_life(emu1, p1, smtp_addr, store1, seen, first_attempts));
        rt1.shutdown_background();
        out
    })
    .await
    .unwrap();
    assert_eq!(http.requests_to(HOOK_PATH).len(), 1, "the webhook was delivered before the crash");

    // The outbox survived on the VirtualService: email is still owed.
    let s = recorded_state(&emu, &policy());
    assert_eq!(s.outbox.len(), 1);
    assert_eq!(s.outbox[0].id, alert.id);
    assert!(!s.outbox[0].delivered.contains(&"email".to_string()));
    // Daemon #2: a fresh Driver and Deliverer, SMTP still down.
    let fx = effects(smtp_addr, store.clone(), 40);
    let deliverer = fx.deliverer.clone();
    let driver = Driver::new(emu.client(), mesh(&emu, &p), fx);
    driver.reconcile(&p, now).await.unwrap();
    now = Timestamp::from_second(now.as_second() + 60).unwrap();
    let wait = Instant::now() + Duration::from_secs(5);
    while deliverer.metrics().channel("email").failed_attempts < 2 {
        assert!(Instant::now() < wait, "daemon #2 did not try email");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SMTP comes back on the port the mailer knows; the retry gets through.
    let smtp = SmtpServer::start_on(smtp_addr).await.expect("rebind the SMTP port");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !recorded_state(&emu, &policy()).outbox.is_empty() {
        assert!(
            Instant::now() < deadline,
            "outbox never emptied: {:?}",
            recorded_state(&emu, &policy()).outbox
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        driver.reconcile(&p, now).await.unwrap();
        now = Timestamp::from_second(now.as_second() + 60).unwrap();
    }
    // A few more cycles and some real time: nothing else is sent.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        driver.reconcile(&p, now).await.unwrap();
        now = Timestamp::from_second(now.as_second() + 60).unwrap();
    }
    let m = deliverer.metrics().channel("email");
    assert_eq!(m.delivered, 1, "{m:?}");
    assert!(m.failed_attempts >= 2, "the retry was exercised: {m:?}");
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "exactly one email");
    let hooks = http.requests_to(HOOK_PATH);
    assert_eq!(hooks.len(), 1, "exactly one webhook request");
    let s = recorded_state(&emu, &policy());
    assert_eq!(s.phase, Phase::Aborted);
    assert!(s.outbox.is_empty());
    assert_eq!(canary_weight(&emu), 0);

    // The evidence numbers the judge produced, in both messages.
    let ev = &alert.verdict.as_ref().expect("abort verdict").decisive_check().expect("decisive").evidence;
    assert!(ev.canary_value.unwrap() > 0.2 && ev.baseline_value.unwrap() < 0.02, "{ev:?}");
    let mail = &mails[0];
    assert_eq!(mail.to, ["oncall@example.com"]);
    assert!(mail.header("Subject").unwrap().contains("ABORTED bookinfo/reviews"));
    assert!(mail.header("Message-ID").unwrap().contains(&format!("alert-{}-", alert.id)));
    let canary = format!(
        "{:.2}% errors ({} of {} requests)",
        ev.canary_value.unwrap() * 100.0,
        ev.canary_bad,
        ev.canary_requests
    );
    let baseline = format!(
        "{:.2}% errors ({} of {} requests)",
        ev.baseline_value.unwrap() * 100.0,
        ev.baseline_bad,
        ev.baseline_requests
    );
    for ty in ["text/plain", "text/html"] {
        let body = mail.part(ty).unwrap_or_else(|| panic!("no {ty} part"));
        assert!(body.contains(&canary), "missing {canary:?} in {ty}:\n{body}");
        assert!(body.contains(&baseline), "missing {baseline:?} in {ty}:\n{body}");
        assert!(body.contains("canaryd status bookinfo/reviews"), "{body}");
    }

    let hook = &hooks[0];
    assert!(verify(&hook.body, &hook.header("x-canaryd-signature").expect("signed")), "bad signature");
    let v = hook.json();
    assert_eq!(v["version"], "canaryd.io/alert/v1");
    assert_eq!(v["event"], "abort");
    assert_eq!(v["id"], alert.id);
    assert_eq!(v["namespace"], "bookinfo");
    assert_eq!(v["traffic"]["canaryWeight"], 0);
    let e = &v["verdict"]["checks"][0]["evidence"];
    assert_eq!(v["verdict"]["checks"][0]["check"], "success-rate");
    assert_eq!(e["canaryBad"], ev.canary_bad);
    assert_eq!(e["canaryRequests"], ev.canary_requests);
    assert_eq!(e["baselineBad"], ev.baseline_bad);
    assert_eq!(e["baselineRequests"], ev.baseline_requests);
    assert_eq!(e["canaryValue"], ev.canary_value.unwrap());
    assert_eq!(e["baselineValue"], ev.baseline_value.unwrap());
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_alert_arrives_once_by_email_and_webhook_across_an_smtp_outage_and_a_restart() {
    // Daemon #1's email tasks give up after 4 quick attempts, so the webhook's acknowledgement
    // reaches the VirtualService before the crash (and email is retried by a new task).
    abort_story(4).await;
}

/// Same story, but the crash comes while daemon #1's first delivery task is still retrying
/// email: the webhook was delivered, yet its acknowledgement never reached the outbox because
/// `DaemonEffects::deliver` feeds back results only when *every* channel of the task is done,
/// so daemon #2 sends the webhook a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_webhook_is_acknowledged_while_email_is_still_retrying() {
    abort_story(1000).await;
}
