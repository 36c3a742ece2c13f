//! Shared pieces of the fault matrix: a fake Prometheus that answers Istio-shaped vector
//! queries from rates we control (and fails on command), cluster fixtures per namespace,
//! the invariant checks, and the global run/fault/violation counters.

#![allow(dead_code)]

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use canaryd::engine::{Phase, RolloutState};
use kube_emulator::EmulatorHandle;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---- global counters ------------------------------------------------------------------

pub static RUNS: AtomicUsize = AtomicUsize::new(0);
pub static FAULTS: AtomicUsize = AtomicUsize::new(0);
pub static VIOLATIONS: AtomicUsize = AtomicUsize::new(0);
static DONE: AtomicUsize = AtomicUsize::new(0);
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records one finished scenario run: its faults, violations and a summary line.
pub fn record(line: String, faults: usize, violations: &[String]) {
    RUNS.fetch_add(1, Ordering::SeqCst);
    FAULTS.fetch_add(faults, Ordering::SeqCst);
    VIOLATIONS.fetch_add(violations.len(), Ordering::SeqCst);
    let line = format!("{line} faults={faults} violations={}", violations.len());
    println!("{line}");
    for v in violations {
        println!("  VIOLATION: {v}");
    }
    LINES.lock().unwrap().push(line);
}

/// Called at the end of each test function; the last of `total` prints the summary (also
/// written to `target/fault_matrix_summary.txt` so CI can quote it without --nocapture).
pub fn test_done(total: usize) {
    if DONE.fetch_add(1, Ordering::SeqCst) + 1 == total {
        let summary = format!(
            "fault matrix: runs={} faults_injected={} invariant_violations={}",
            RUNS.load(Ordering::SeqCst),
            FAULTS.load(Ordering::SeqCst),
            VIOLATIONS.load(Ordering::SeqCst)
        );
        let mut lines = LINES.lock().unwrap().clone();
        lines.sort();
        lines.push(summary.clone());
        let _ = std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/target/fault_matrix_summary.txt"),
            lines.join("\n") + "\n",
        );
        println!("{summary}");
        eprintln!("{summary}");
    }
}

// ---- fixtures ---------------------------------------------------------------------------

/// A VirtualService with fields that belong to other writers: a debug route, gateways,
/// retries, labels and an owner annotation. canaryd may only touch route `main`'s weights and
/// its own annotations.
pub fn virtual_service(ns: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: {ns}
  annotations: {{owner: books-team}}
  labels: {{app: reviews}}
spec:
  hosts: [reviews, reviews.{ns}.svc.cluster.local]
  gateways: [mesh, bookinfo-gateway]
  http:
    - name: debug
      match: [{{headers: {{x-debug: {{exact: "1"}}}}}}]
      route: [{{destination: {{host: reviews, subset: v1}}}}]
      timeout: 3s
    - name: main
      retries: {{attempts: 3, perTryTimeout: 2s}}
      route:
        - destination: {{host: reviews, subset: v1, port: {{number: 9080}}}}
          weight: 100
        - destination: {{host: reviews, subset: v2, port: {{number: 9080}}}}
          weight: 0
"#
    )
}

/// Loads bookinfo's fixtures into namespace `ns`, with the VirtualService above.
pub fn load_namespace(emu: &EmulatorHandle, ns: &str) {
    emu.apply_yaml(&canaryd::demo::FIXTURES.replace("bookinfo", ns)).unwrap();
    emu.apply_yaml(&virtual_service(ns)).unwrap();
}

pub fn vs(emu: &EmulatorHandle, ns: &str) -> Value {
    emu.get("networking.istio.io", "v1", "virtualservices", ns, "reviews").unwrap()
}

/// The recorded state of policy `reviews` on the VirtualService.
pub fn state_of(vs: &Value) -> RolloutState {
    vs["metadata"]["annotations"]["canaryd.io/state-reviews"]
        .as_str()
        .map(|s| serde_json::from_str(s).unwrap())
        .unwrap_or_default()
}

/// The canary weight of route `main` as written on the cluster.
pub fn canary_weight(vs: &Value) -> u32 {
    vs["spec"]["http"][1]["route"][1]["weight"].as_u64().unwrap_or(0) as u32
}

/// One observation of a rollout on the cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snap {
    pub phase: Phase,
    pub step: usize,
    pub weight: u32,
    pub state_weight: u32,
    pub errors: u32,
}

pub fn snap(emu: &EmulatorHandle, ns: &str) -> Snap {
    let v = vs(emu, ns);
    let s = state_of(&v);
    Snap {
        phase: s.phase,
        step: s.step,
        weight: canary_weight(&v),
        state_weight: s.traffic.canary_weight,
        errors: s.consecutive_errors,
    }
}

/// The other writers' fields of a VirtualService, to compare before and after.
pub fn foreign_fields(vs: &Value) -> Value {
    let mut annotations = vs["metadata"]["annotations"].clone();
    if let Some(a) = annotations.as_object_mut() {
        a.retain(|k, _| !k.starts_with("canaryd.io/"));
    }
    serde_json::json!({
        "hosts": vs["spec"]["hosts"],
        "gateways": vs["spec"]["gateways"],
        "debug": vs["spec"]["http"][0],
        "retries": vs["spec"]["http"][1]["retries"],
        "destinations": [vs["spec"]["http"][1]["route"][0]["destination"], vs["spec"]["http"][1]["route"][1]["destination"]],
        "labels": vs["metadata"]["labels"],
        "annotations": annotations,
    })
}

// ---- invariants ---------------------------------------------------------------------------

/// Checks a trajectory of snapshots; `missing[i]` says the evidence of the cycle that produced
/// `snaps[i]` was unreadable (or empty). Returns the violations.
pub fn check_trajectory(name: &str, snaps: &[Snap], missing: &[bool]) -> Vec<String> {
    let mut out = Vec::new();
    // Never promoted on missing evidence.
    for i in 1..snaps.len() {
        let (prev, cur) = (snaps[i - 1], snaps[i]);
        if !missing.get(i).copied().unwrap_or(false) {
            continue;
        }
        let advanced = (prev.phase == Phase::Progressing
            && cur.phase == Phase::Progressing
            && cur.step > prev.step)
            || (prev.phase == Phase::Progressing && matches!(cur.phase, Phase::Promoting | Phase::Promoted))
            || cur.weight > prev.weight;
        if advanced {
            out.push(format!("{name}: advanced on missing evidence: {prev:?} -> {cur:?}"));
        }
    }
    out.extend(check_steps(name, snaps));
    out
}

/// No double advance (steps entered in order, once each, weights never back mid-rollout),
/// aborts carry weight 0 on the VirtualService, an abort is never lost.
pub fn check_steps(name: &str, snaps: &[Snap]) -> Vec<String> {
    let mut out = Vec::new();
    let mut entered: Vec<usize> = Vec::new();
    let mut last_weight = 0;
    for s in snaps.iter().filter(|s| s.phase == Phase::Progressing) {
        if entered.last() != Some(&s.step) {
            if entered.contains(&s.step) {
                out.push(format!("{name}: step {} entered twice: {entered:?}", s.step));
            } else if s.step != entered.last().map_or(0, |l| l + 1) {
                out.push(format!("{name}: step {} entered out of order after {entered:?}", s.step));
            }
            entered.push(s.step);
        }
        if s.weight < last_weight {
            out.push(format!("{name}: weight went back mid-rollout {last_weight} -> {}", s.weight));
        }
        last_weight = s.weight;
    }
    let mut aborted = false;
    for s in snaps {
        if s.phase == Phase::Aborted {
            aborted = true;
            if s.weight != 0 || s.state_weight != 0 {
                out.push(format!(
                    "{name}: aborted but canary weight {} / state {}",
                    s.weight, s.state_weight
                ));
            }
        } else if aborted && s.phase != Phase::Idle {
            out.push(format!("{name}: abort lost: {s:?} after Aborted"));
        }
    }
    out
}

// ---- fake Prometheus ------------------------------------------------------------------------

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PromMode {
    Healthy,
    /// Sleeps this long before answering (past the client's timeout).
    Slow(Duration),
    /// HTTP 500 with a Prometheus error body.
    Error500,
    /// A successful, empty vector.
    Empty,
    /// Every sample value is "NaN".
    NaN,
    /// A truncated JSON body.
    Garbage,
}

/// One workload's traffic.
#[derive(Debug, Clone, Copy)]
pub struct Side {
    pub rps: f64,
    pub error_ratio: f64,
}

/// Cumulative share of requests at or below each bound (ms), Istio-style buckets.
const BUCKETS: [(&str, f64); 9] = [
    ("5", 0.05),
    ("10", 0.2),
    ("25", 0.5),
    ("50", 0.8),
    ("100", 0.95),
    ("250", 0.99),
    ("500", 0.999),
    ("1000", 1.0),
    ("+Inf", 1.0),
];

#[derive(Default)]
pub struct PromState {
    pub mode: Mutex<Option<PromMode>>,
    pub sides: Mutex<HashMap<(String, String), Side>>,
    pub served: AtomicUsize,
    pub failed: AtomicUsize,
}

#[derive(Clone)]
pub struct FakeProm {
    pub url: String,
    pub state: Arc<PromState>,
}

impl FakeProm {
    pub async fn start() -> FakeProm {
        let state = Arc::new(PromState::default());
        *state.mode.lock().unwrap() = Some(PromMode::Healthy);
        let app = Router::new().route("/api/v1/query", get(answer)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeProm { url, state }
    }

    pub fn set_mode(&self, m: PromMode) {
        *self.state.mode.lock().unwrap() = Some(m);
    }

    /// Declares a workload's traffic (healthy: 0.3% errors).
    pub fn set_side(&self, ns: &str, workload: &str, rps: f64, error_ratio: f64) {
        self.state.sides.lock().unwrap().insert((ns.into(), workload.into()), Side { rps, error_ratio });
    }

    /// A healthy baseline (reviews-v1) and a canary (reviews-v2) with `canary_errors`.
    pub fn set_namespace(&self, ns: &str, canary_errors: f64) {
        self.set_side(ns, "reviews-v1", 300.0, 0.003);
        self.set_side(ns, "reviews-v2", 100.0, canary_errors);
    }
}

/// Window seconds from the `[...]` range selector of a query.
fn window_secs(q: &str) -> f64 {
    let Some(start) = q.rfind('[') else { return 60.0 };
    let rest = &q[start + 1..];
    let end = rest.find(']').unwrap_or(rest.len());
    let r = &rest[..end];
    if let Some(ms) = r.strip_suffix("ms") {
        ms.parse::<f64>().unwrap_or(60_000.0) / 1000.0
    } else if let Some(s) = r.strip_suffix('s') {
        s.parse().unwrap_or(60.0)
    } else {
        60.0
    }
}

async fn answer(
    State(state): State<Arc<PromState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let mode = state.mode.lock().unwrap().unwrap_or(PromMode::Healthy);
    let json = |status: u16, body: String| {
        (StatusCode::from_u16(status).unwrap(), [("content-type", "application/json")], body).into_response()
    };
    match mode {
        PromMode::Healthy | PromMode::NaN => {}
        PromMode::Slow(d) => {
            state.failed.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(d).await;
        }
        PromMode::Error500 => {
            state.failed.fetch_add(1, Ordering::SeqCst);
            return json(
                500,
                r#"{"status":"error","errorType":"internal","error":"query processing would load too many samples"}"#
                    .into(),
            );
        }
        PromMode::Empty => {
            state.failed.fetch_add(1, Ordering::SeqCst);
            return json(200, r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.into());
        }
        PromMode::Garbage => {
            state.failed.fetch_add(1, Ordering::SeqCst);
            return json(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":"#.into(),
            );
        }
    }
    if mode == PromMode::NaN {
        state.failed.fetch_add(1, Ordering::SeqCst);
    }
    state.served.fetch_add(1, Ordering::SeqCst);
    let q = params.get("query").cloned().unwrap_or_default();
    let t: f64 = params.get("time").and_then(|t| t.parse().ok()).unwrap_or(0.0);
    let w = window_secs(&q);
    let sides = state.sides.lock().unwrap().clone();
    let mut result = Vec::new();
    let value = |v: f64| if mode == PromMode::NaN { "NaN".to_string() } else { format!("{v}") };
    for ((ns, workload), side) in &sides {
        let requests = side.rps * w;
        let labels = |extra: Option<&str>| {
            let mut m = serde_json::json!({
                "destination_workload_namespace": ns,
                "destination_workload": workload,
            });
            if let Some(le) = extra {
                m["le"] = le.into();
            }
            m
        };
        if q.contains("_bucket") {
            for (le, share) in BUCKETS {
                result.push(
                    serde_json::json!({"metric": labels(Some(le)), "value": [t, value(requests * share)]}),
                );
            }
        } else if q.contains("response_code") {
            result.push(
                serde_json::json!({"metric": labels(None), "value": [t, value(requests * side.error_ratio)]}),
            );
        } else {
            result.push(serde_json::json!({"metric": labels(None), "value": [t, value(requests)]}));
        }
    }
    json(
        200,
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}})
            .to_string(),
    )
}

/// A loopback address where nothing listens (connection refused).
pub fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// Seeded xorshift.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}
