//! A fake Prometheus over HTTP: answers canaryd's raw-sample queries (Istio counters as a 15 s
//! scrape would have stored them) from per-workload rates we control, and fails on command (slow, 500, empty, NaN, garbage), so the real
//! `PrometheusClient` decodes every answer and every failure.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PromMode {
    Healthy,
    /// Sleeps this long before answering (past the client's timeout).
    Slow(Duration),
    /// HTTP 500 with a Prometheus error body.
    Error500,
    /// A successful, empty answer.
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

/// Spacing of the samples the fake "scraped".
const SCRAPE_SECS: f64 = 15.0;

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
            return json(200, r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into());
        }
        PromMode::Garbage => {
            state.failed.fetch_add(1, Ordering::SeqCst);
            return json(
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":"#.into(),
            );
        }
    }
    if mode == PromMode::NaN {
        state.failed.fetch_add(1, Ordering::SeqCst);
    }
    state.served.fetch_add(1, Ordering::SeqCst);
    let q = params.get("query").cloned().unwrap_or_default();
    let t: f64 = params.get("time").and_then(|t| t.parse().ok()).unwrap_or(0.0);
    // canaryd reads raw counter samples (`metric[range]`, no function): answer with the samples
    // a 15 s scrape would have stored in the range, each counter `rate × t` since the epoch.
    let range = window_secs(&q);
    let first = ((t - range) / SCRAPE_SECS).floor() * SCRAPE_SECS + SCRAPE_SECS;
    let times: Vec<f64> =
        std::iter::successors(Some(first), |x| Some(x + SCRAPE_SECS)).take_while(|x| *x <= t).collect();
    let sides = state.sides.lock().unwrap().clone();
    let mut result = Vec::new();
    let value = |v: f64| if mode == PromMode::NaN { "NaN".to_string() } else { format!("{}", v.floor()) };
    let series = |labels: serde_json::Value, per_sec: f64| {
        let values: Vec<_> = times.iter().map(|&ts| serde_json::json!([ts, value(per_sec * ts)])).collect();
        serde_json::json!({"metric": labels, "values": values})
    };
    for ((ns, workload), side) in &sides {
        let labels = |key: &str, v: &str| {
            serde_json::json!({
                "destination_workload_namespace": ns,
                "destination_workload": workload,
                key: v,
            })
        };
        if q.contains("_bucket") {
            for (le, share) in BUCKETS {
                result.push(series(labels("le", le), side.rps * share));
            }
        } else {
            result.push(series(labels("response_code", "200"), side.rps * (1.0 - side.error_ratio)));
            result.push(series(labels("response_code", "500"), side.rps * side.error_ratio));
        }
    }
    json(
        200,
        serde_json::json!({"status": "success", "data": {"resultType": "matrix", "result": result}})
            .to_string(),
    )
}
