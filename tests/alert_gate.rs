//! Gate webhooks against a real HTTP server on loopback (allowed with the egress policy, as
//! `--egress-allow 127.0.0.0/8` does): 2xx opens, anything else (a 503, a timeout, an
//! unreachable host) keeps the gate closed with a detail that never has the URL or the body.

mod alert_support;

use alert_support::fixtures::{self, LogCapture};
use canaryd::alert::gate::{post, GateRequest};
use canaryd::alert::{call_gate, EgressClient, MapSecretStore, Secret, SecretStore};
use canaryd::engine::{step, Input, RolloutState};
use canaryd::policy::{Gate, GateKind, Policy, SecretKeyRef, SecretSource};
use canaryd_testkit::http::HttpServer;
use std::time::Duration;

fn client() -> EgressClient {
    EgressClient::new(Duration::from_secs(10), fixtures::loopback_egress()).unwrap()
}

/// A started rollout (step 1, canary 10%) of the fixture policy with one gate.
fn rollout(gate: Gate) -> (Policy, Gate, RolloutState) {
    let p = fixtures::email_policy();
    let p = p.revise(|s| s.gates = vec![gate.clone()]).unwrap();
    let s = RolloutState::default();
    let s = step(
        &p,
        &s,
        Input::NewRevision("7f9c2d".into()),
        jiff::Timestamp::from_second(fixtures::T0).unwrap(),
    );
    (p, gate, s.state)
}

fn gate(url: Option<String>, url_from: Option<SecretSource>) -> Gate {
    Gate {
        name: "qa-signoff".into(),
        kind: GateKind::ConfirmStep,
        url,
        url_from,
        timeout: canaryd::policy::Duration::from_secs(2),
    }
}

#[tokio::test]
async fn a_200_opens_the_gate_and_the_gate_sees_the_rollout() {
    let http = HttpServer::start().await;
    let (p, g, s) = rollout(gate(Some(http.url("/gate")), None));
    let a = call_gate(&client(), &p, &g, &s, &MapSecretStore::new()).await;
    assert!(a.open, "{a:?}");
    assert_eq!(a.detail, "HTTP 200");
    let req = http.requests_to("/gate")[0].json();
    assert_eq!(req["version"], "canaryd.io/gate/v1");
    assert_eq!(req["gate"], "qa-signoff");
    assert_eq!(req["kind"], "confirm-step");
    assert_eq!(req["policy"], "reviews");
    assert_eq!(req["namespace"], "shop");
    assert_eq!(req["revision"], "7f9c2d");
    assert_eq!(req["step"], s.step + 1);
    assert_eq!(req["canaryWeight"], s.traffic.canary_weight);
}

#[tokio::test]
async fn a_503_keeps_the_gate_closed_with_the_status_only() {
    let http = HttpServer::start().await;
    http.respond_with(&[(503, "release freeze until Monday\n")]);
    let (p, g, s) = rollout(gate(Some(http.url("/gate")), None));
    let a = call_gate(&client(), &p, &g, &s, &MapSecretStore::new()).await;
    assert!(!a.open);
    assert_eq!(a.detail, "HTTP 503", "the answer's body is never quoted");
}

#[tokio::test]
async fn a_gate_that_does_not_answer_in_time_is_closed() {
    let http = HttpServer::start().await;
    let (p, g, s) = rollout(gate(Some(http.url("/slow/gate")), None));
    let req = GateRequest::new(&p, &g, &s);
    let a = post(&client(), &Secret::new(http.url("/slow/gate")), &req, Duration::from_millis(200)).await;
    assert!(!a.open);
    assert_eq!(a.detail, "timed out after 200ms");
}

#[tokio::test]
async fn a_secret_gate_url_never_shows_in_the_detail_or_logs() {
    let (logs, _guard) = LogCapture::install();
    let refused = format!("http://{}/gate/T0KEN", fixtures::unused_addr());
    let store = MapSecretStore::new().with("shop", "gates", "qa", refused);
    let src = SecretSource {
        secret_key_ref: Some(SecretKeyRef { name: "gates".into(), key: "qa".into() }),
        ..SecretSource::default()
    };
    let (p, g, s) = rollout(gate(None, Some(src)));
    let a = call_gate(&client(), &p, &g, &s, &store as &dyn SecretStore).await;
    assert!(!a.open);
    assert_eq!(a.detail, "connection failed");
    let ours: Vec<String> =
        logs.text().lines().filter(|l| l.contains("canaryd::")).map(String::from).collect();
    assert!(!ours.is_empty());
    assert!(ours.iter().all(|l| !l.contains("T0KEN") && !l.contains("127.0.0.1")), "{ours:?}");

    let missing = call_gate(&client(), &p, &g, &s, &MapSecretStore::new()).await;
    assert!(!missing.open);
    assert_eq!(missing.detail, "gate URL unavailable: secret shop/gates has no key qa");
}
