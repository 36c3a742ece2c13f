//! The dashboard (`canaryd run --ui-addr`, and `canaryd demo`): read-only, server-rendered
//! HTML with inline CSS and SVG (no scripts, no external assets), or the same data as JSON
//! with `Accept: application/json`.
//!
//! It never talks to the Kubernetes API: the daemon loop puts each policy's state into a
//! [`Dashboard`] after every reconcile, and the pages read that snapshot. Only the rollout
//! page's chart asks the metrics source (Prometheus), through the same observation code as the
//! daemon and `backtest` ([`crate::backtest::observed_series`]); when that fails the page says
//! so and shows everything else.
//!
//! Routes: `/` (every rollout; `?namespace=`, `?phase=`), `/rollouts/{namespace}/{name}`
//! (timeline, last verdict's evidence, chart, history), `/healthz`.

mod render;
mod view;

pub use view::{DetailPage, RolloutRow, RolloutsPage};

use crate::engine::RolloutState;
use crate::policy::Policy;
use crate::prometheus::MetricsSource;
use jiff::Timestamp;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What the daemon knows of one policy, as of its last reconcile.
#[derive(Debug, Clone)]
pub struct Known {
    pub policy: Policy,
    pub state: RolloutState,
    /// When the daemon last reconciled it (the daemon's clock), Unix seconds.
    pub seen: i64,
    /// Why the last reconcile failed, if it did (the state is then the last one known).
    pub error: Option<String>,
}

/// The in-memory snapshot the daemon loop updates and the pages read. Cheap to clone.
/// [`Dashboard::off`] keeps nothing (no `--ui-addr`: no memory spent on it).
#[derive(Debug, Clone)]
pub struct Dashboard {
    inner: Arc<RwLock<Snapshot>>,
    on: bool,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard { inner: Arc::default(), on: true }
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    known: BTreeMap<String, Known>,
    /// The daemon's clock minus the wall clock at the last update, seconds: 0 for `canaryd
    /// run`; the demo's clock runs compressed, and its pages keep to it.
    offset: Option<i64>,
}

impl Dashboard {
    /// A dashboard that records nothing.
    pub fn off() -> Self {
        Dashboard { inner: Arc::default(), on: false }
    }

    /// Records `policy`'s state after a reconcile at `now`.
    pub fn update(&self, policy: &Policy, state: &RolloutState, now: Timestamp) {
        if !self.on {
            return;
        }
        let mut s = self.inner.write().unwrap_or_else(|e| e.into_inner());
        s.offset = Some(now.as_second() - Timestamp::now().as_second());
        let known =
            Known { policy: policy.clone(), state: state.clone(), seen: now.as_second(), error: None };
        s.known.insert(policy.key(), known);
    }

    /// Records that `policy`'s reconcile failed with `error`; its last known state stays.
    pub fn failed(&self, policy: &Policy, error: &str, now: Timestamp) {
        if !self.on {
            return;
        }
        let mut s = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let state = s.known.get(&policy.key()).map(|k| k.state.clone()).unwrap_or_default();
        let seen = s.known.get(&policy.key()).map_or(now.as_second(), |k| k.seen);
        // Kubernetes errors can be long; the first lines say what is wrong.
        let mut short: String = error.chars().take(300).collect();
        if short.len() < error.len() {
            short.push('…');
        }
        let known = Known { policy: policy.clone(), state, seen, error: Some(short) };
        s.known.insert(policy.key(), known);
    }

    /// Forgets policies that are no longer configured (`keys`: `namespace/name`).
    pub fn retain(&self, keys: &HashSet<String>) {
        let mut s = self.inner.write().unwrap_or_else(|e| e.into_inner());
        s.known.retain(|k, _| keys.contains(k));
    }

    /// Every known policy (by `namespace/name`) and the daemon's clock.
    pub fn all(&self) -> (Vec<Known>, Timestamp) {
        let s = self.inner.read().unwrap_or_else(|e| e.into_inner());
        (s.known.values().cloned().collect(), clock(s.offset))
    }

    /// One policy and the daemon's clock.
    pub fn get(&self, namespace: &str, name: &str) -> (Option<Known>, Timestamp) {
        let s = self.inner.read().unwrap_or_else(|e| e.into_inner());
        (s.known.get(&format!("{namespace}/{name}")).cloned(), clock(s.offset))
    }
}

/// The daemon's clock now (the wall clock before its first update).
fn clock(offset: Option<i64>) -> Timestamp {
    let wall = Timestamp::now();
    Timestamp::from_second(wall.as_second() + offset.unwrap_or(0)).unwrap_or(wall)
}

/// The rollouts page (`/`, no filter) as HTML, as the server renders it; for benchmarks.
pub fn rollouts_html(known: &[Known], now: Timestamp) -> String {
    render::rollouts(&view::rollouts(known, &view::Filter::default(), now))
}

/// A rollout's page as HTML with its chart from `metrics`, as the server renders it.
pub async fn detail_html<M: MetricsSource>(known: &Known, metrics: &M, now: Timestamp) -> String {
    let chart = view::chart(known, metrics, now).await;
    render::detail(&view::detail(known, chart, now))
}

/// How long the chart may take to compute before the page is served without it.
const CHART_TIMEOUT: Duration = Duration::from_secs(10);

struct Ui<M> {
    dashboard: Dashboard,
    metrics: Option<M>,
    /// What to say when there is no metrics source (the demo's mesh keeps no history).
    no_metrics: &'static str,
}

/// The dashboard's routes. `metrics`: where the chart's data comes from (`None`: no chart,
/// with `no_metrics` as the reason shown).
pub fn router<M: MetricsSource + 'static>(
    dashboard: Dashboard,
    metrics: Option<M>,
    no_metrics: &'static str,
) -> axum::Router {
    use axum::routing::get;
    let ui = Arc::new(Ui { dashboard, metrics, no_metrics });
    axum::Router::new()
        .route("/", get(rollouts::<M>))
        .route("/rollouts/{namespace}/{name}", get(detail::<M>))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(ui)
}

/// Serves the dashboard on `listener` until the process ends.
pub async fn serve<M: MetricsSource + 'static>(
    listener: tokio::net::TcpListener,
    dashboard: Dashboard,
    metrics: Option<M>,
    no_metrics: &'static str,
) -> std::io::Result<()> {
    axum::serve(listener, router(dashboard, metrics, no_metrics)).await
}

type Shared<M> = axum::extract::State<Arc<Ui<M>>>;

fn wants_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

fn respond<T: serde::Serialize>(
    headers: &axum::http::HeaderMap,
    status: axum::http::StatusCode,
    data: &T,
    html: impl FnOnce(&T) -> String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if wants_json(headers) {
        let body = serde_json::to_string_pretty(data).unwrap_or_default();
        (status, [("content-type", "application/json")], body).into_response()
    } else {
        let headers = [
            ("content-type", "text/html; charset=utf-8"),
            // No scripts, no external anything: say so to the browser too.
            ("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
        ];
        (status, headers, html(data)).into_response()
    }
}

async fn rollouts<M: MetricsSource + 'static>(
    axum::extract::State(ui): Shared<M>,
    axum::extract::Query(filter): axum::extract::Query<view::Filter>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let (known, now) = ui.dashboard.all();
    let page = view::rollouts(&known, &filter, now);
    respond(&headers, axum::http::StatusCode::OK, &page, render::rollouts)
}

async fn detail<M: MetricsSource + 'static>(
    axum::extract::State(ui): Shared<M>,
    axum::extract::Path((namespace, name)): axum::extract::Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let (known, now) = ui.dashboard.get(&namespace, &name);
    let Some(known) = known else {
        let missing =
            view::NotFound { error: format!("no policy {namespace}/{name} is known to this daemon") };
        return respond(&headers, axum::http::StatusCode::NOT_FOUND, &missing, render::not_found);
    };
    let chart = match &ui.metrics {
        None => view::ChartData::unavailable(ui.no_metrics),
        Some(m) => match tokio::time::timeout(CHART_TIMEOUT, view::chart(&known, m, now)).await {
            Ok(c) => c,
            Err(_) => view::ChartData::unavailable("Prometheus did not answer within 10 s"),
        },
    };
    let page = view::detail(&known, chart, now);
    respond(&headers, axum::http::StatusCode::OK, &page, render::detail)
}

#[cfg(test)]
mod tests;
