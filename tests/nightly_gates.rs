//! Gate webhooks holding and releasing a rollout through the real daemon: `Driver` +
//! `DaemonEffects` against the API emulator, gates served by a real axum server whose answer
//! per path can be switched, answers reaching the engine through the `Feedback` path at the
//! next reconcile. Assertions read the emulator's stored VirtualService.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use canaryd::alert::egress::parse_range;
use canaryd::alert::{
    Deliverer, DelivererConfig, EgressClient, EgressPolicy, MapSecretStore, RenderOptions, RetryPolicy,
    SecretStore, WebhookSender,
};
use canaryd::daemon::{DaemonEffects, Driver};
use canaryd::demo::{SimulatedMesh, FIXTURES};
use canaryd::engine::{Phase, RolloutState};
use canaryd::policy::{parse_policy, Policy};
use canaryd_testkit::state;
use jiff::Timestamp;
use kube_emulator::{Emulator, EmulatorHandle};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Answers `status[path]` (404 for unknown paths) and counts requests per path.
#[derive(Clone, Default)]
struct Gates {
    status: Arc<Mutex<HashMap<String, u16>>>,
    hits: Arc<Mutex<Vec<(String, u16, Value)>>>,
}

async fn answer(State(g): State<Gates>, uri: Uri, body: axum::body::Bytes) -> StatusCode {
    let path = uri.path().to_string();
    let status = g.status.lock().unwrap().get(&path).copied().unwrap_or(404);
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    g.hits.lock().unwrap().push((path, status, json));
    StatusCode::from_u16(status).unwrap()
}

impl Gates {
    async fn start() -> (Gates, String) {
        let g = Gates::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(answer).with_state(g.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (g, base)
    }

    fn set(&self, path: &str, status: u16) {
        self.status.lock().unwrap().insert(path.to_string(), status);
    }

    fn hits(&self, path: &str) -> Vec<(u16, Value)> {
        self.hits.lock().unwrap().iter().filter(|h| h.0 == path).map(|h| (h.1, h.2.clone())).collect()
    }
}

fn policy(base: &str, gates: &[(&str, &str)]) -> Policy {
    let gates: String = gates
        .iter()
        .map(|(kind, path)| {
            format!("    - {{name: {kind}-hook, kind: {kind}, url: \"{base}{path}\", timeout: 2s}}\n")
        })
        .collect();
    let doc = format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec:\n  target: {{virtualService: reviews, stable: {{subset: v1, workload: reviews-v1}}, canary: {{subset: v2, workload: reviews-v2}}}}\n  steps: [{{weight: 10, bake: 2m}}, {{weight: 30, bake: 2m}}]\n  analysis: {{interval: 1m, successRate: {{tolerance: 2}}, latency: {{tolerance: 50}}}}\n  gates:\n{gates}"
    );
    parse_policy("nightly-gates.yaml", &doc).unwrap_or_else(|e| panic!("{e}"))
}

/// The daemon's effects as `canaryd run --egress-allow 127.0.0.0/8` builds them: one egress
/// client for gates and webhooks (the gate server listens on loopback).
fn effects() -> DaemonEffects {
    let secrets: Arc<dyn SecretStore> = Arc::new(MapSecretStore::new());
    let egress = EgressPolicy::new(&[], &[parse_range("127.0.0.0/8").unwrap()]);
    let http = EgressClient::new(Duration::from_secs(2), egress).unwrap();
    let deliverer = Deliverer::new(DelivererConfig {
        mailer: None,
        webhooks: WebhookSender::with_client(http.clone()),
        secrets: secrets.clone(),
        render: RenderOptions::default(),
        retry: RetryPolicy { initial: Duration::from_millis(50), ..RetryPolicy::default() },
    });
    DaemonEffects::new(deliverer, http, secrets)
}

struct Sandbox {
    emu: Arc<EmulatorHandle>,
    policy: Policy,
    driver: Driver<SimulatedMesh, DaemonEffects>,
    now: Timestamp,
}

async fn sandbox(policy: Policy) -> Sandbox {
    let emu = Arc::new(Emulator::start().await.unwrap());
    emu.apply_yaml(FIXTURES).unwrap();
    let mesh = SimulatedMesh::new(emu.clone(), policy.clone(), 100.0, 17);
    let driver = Driver::new(emu.client(), mesh, effects());
    Sandbox { emu, policy, driver, now: "2026-11-25T01:00:00Z".parse().unwrap() }
}

impl Sandbox {
    fn vs(&self) -> Value {
        state::virtual_service(&self.emu, &self.policy)
    }

    fn weights(&self) -> (u64, u64) {
        state::first_route_weights(&self.emu, &self.policy)
    }

    fn state(&self) -> RolloutState {
        state::recorded_state(&self.emu, &self.policy)
    }

    /// One reconcile at the simulated `now`, then one interval (1 min) passes.
    async fn cycle(&mut self) -> RolloutState {
        self.driver.reconcile(&self.policy, self.now).await.unwrap_or_else(|e| panic!("{e}"));
        // Gates are asked in the background; this harness steps time, so it waits for them.
        self.driver.settle_gates().await;
        self.now = Timestamp::from_second(self.now.as_second() + 60).unwrap();
        self.state()
    }
}

#[tokio::test]
async fn confirm_rollout_and_confirm_promotion_hold_until_they_answer_2xx() {
    let (gates, base) = Gates::start().await;
    gates.set("/rollout", 503);
    gates.set("/promotion", 503);
    gates.set("/rollback", 404);
    let p = policy(
        &base,
        &[("confirm-rollout", "/rollout"), ("confirm-promotion", "/promotion"), ("rollback", "/rollback")],
    );
    let mut sb = sandbox(p).await;
    let untouched = sb.vs()["spec"].clone();

    // confirm-rollout answers 503: the new revision stays Pending, the route is untouched.
    for _ in 0..4 {
        let s = sb.cycle().await;
        assert_eq!(s.phase, Phase::Pending, "{s:?}");
        assert_eq!(s.awaiting_gate.as_deref(), Some("confirm-rollout"));
    }
    assert_eq!(sb.vs()["spec"], untouched);
    let s = sb.state();
    assert!(s.reason.as_deref().unwrap_or_default().contains("HTTP 503"), "{:?}", s.reason);
    let asked = gates.hits("/rollout");
    assert!(asked.len() >= 3, "asked every cycle: {asked:?}");
    assert!(asked.iter().all(|(st, _)| *st == 503));
    assert_eq!(asked[0].1["kind"], "confirm-rollout");
    assert_eq!(asked[0].1["policy"], "reviews");

    // It answers 200: the rollout starts (the answer comes back at the next reconcile).
    gates.set("/rollout", 200);
    let mut started = false;
    for _ in 0..3 {
        let s = sb.cycle().await;
        if s.phase == Phase::Progressing {
            started = true;
            break;
        }
    }
    assert!(started, "{:?}", sb.state());
    assert_eq!(sb.weights(), (90, 10));

    // Healthy steps pass; promotion waits for confirm-promotion (503) at the last step's weight.
    let mut held = 0;
    for _ in 0..20 {
        let s = sb.cycle().await;
        assert_ne!(s.phase, Phase::Promoted, "promoted through a closed gate");
        assert_ne!(s.phase, Phase::Aborted, "{s:?}");
        if s.awaiting_gate.as_deref() == Some("confirm-promotion") {
            held += 1;
            assert_eq!(sb.weights(), (70, 30));
            if held == 5 {
                break;
            }
        }
    }
    assert_eq!(held, 5, "{:?}", sb.state());
    assert!(gates.hits("/promotion").len() >= 4);
    assert!(!gates.hits("/rollback").is_empty(), "the rollback gate is asked every interval");
    assert_eq!(sb.state().phase, Phase::Progressing);

    // Opened: promoted, all traffic on the canary.
    gates.set("/promotion", 200);
    for _ in 0..3 {
        if sb.cycle().await.phase == Phase::Promoted {
            break;
        }
    }
    assert_eq!(sb.state().phase, Phase::Promoted, "{:?}", sb.state());
    assert_eq!(sb.weights(), (0, 100));
}

#[tokio::test]
async fn a_rollback_gate_answering_200_aborts_the_rollout() {
    let (gates, base) = Gates::start().await;
    gates.set("/rollback", 404);
    let p = policy(&base, &[("rollback", "/rollback")]);
    let mut sb = sandbox(p).await;

    let s = sb.cycle().await;
    assert_eq!(s.phase, Phase::Progressing);
    for _ in 0..2 {
        let s = sb.cycle().await;
        assert_eq!(s.phase, Phase::Progressing, "a closed rollback gate does nothing: {s:?}");
    }
    assert!(sb.weights().1 > 0, "canary traffic flows: {:?}", sb.weights());
    assert!(gates.hits("/rollback").len() >= 2);
    assert!(gates.hits("/rollback").iter().all(|(st, _)| *st == 404));

    gates.set("/rollback", 200);
    for _ in 0..3 {
        if sb.cycle().await.phase == Phase::Aborted {
            break;
        }
    }
    let s = sb.state();
    assert_eq!(s.phase, Phase::Aborted, "{s:?}");
    assert!(s.reason.as_deref().unwrap_or_default().contains("rollback gate"), "{:?}", s.reason);
    assert_eq!(sb.weights(), (100, 0));
}
