//! The Prometheus adapter against a real Prometheus (Debian's `prometheus` package), started by
//! each test on loopback and backfilled with synthetic Istio series through promtool.
//!
//! These tests never skip: without the binaries they fail and say what to install.

use std::collections::HashMap;
use std::time::Duration;

use canaryd::observation::{Histogram, SideObservation};
use canaryd::prometheus::{MetricsSource, PrometheusClient, PrometheusConfig, QueryError, WorkloadKey};
use canaryd::promql::render;
use canaryd_testkit::prometheus::PrometheusServer;
use canaryd_testkit::synthetic::{StepTraffic, SyntheticIstio};

/// 2025-01-01T00:00:00Z: fixed, so the data and the expected numbers never change.
const START: i64 = 1_735_689_600;
/// One hour of 10 s steps.
const STEPS: usize = 360;
const BOUNDS: &[f64] = &[10.0, 25.0, 100.0, 250.0];

fn reviews_v1() -> WorkloadKey {
    WorkloadKey::new("shop", "reviews-v1")
}
fn reviews_v2() -> WorkloadKey {
    WorkloadKey::new("shop", "reviews-v2")
}
fn api_v1() -> WorkloadKey {
    WorkloadKey::new("pay", "api-v1")
}
/// Selected by the grouped query's regexes (namespace `pay`, workload `reviews-v1`) but never
/// asked for: its counts must not leak into anyone's observation.
fn stranger() -> WorkloadKey {
    WorkloadKey::new("pay", "reviews-v1")
}
/// Has series, all zero.
fn idle() -> WorkloadKey {
    WorkloadKey::new("shop", "idle")
}

/// Deterministic, uneven traffic: a different mix per workload and step.
fn traffic(w: &WorkloadKey, k: usize) -> StepTraffic {
    let i = match w.workload.as_str() {
        "reviews-v1" if w.namespace == "shop" => 0,
        "reviews-v2" => 1,
        "api-v1" => 2,
        "idle" => return StepTraffic { latency: Some(Histogram::empty(BOUNDS)), ..StepTraffic::default() },
        _ => 3,
    };
    let ok = 10 + ((k * 7 + i * 3) % 13) as u64 + 100 * (i == 3) as u64;
    let errors = if (k + i) % 4 == 0 { 1 + i as u64 } else { 0 };
    let total = ok + errors;
    let slow = (k % 5 == 0) as u64 * (1 + i as u64);
    let very_slow = (k % 17 == 0 && i == 1) as u64;
    let fast = total - slow - very_slow;
    let latency = Histogram {
        bounds_ms: BOUNDS.to_vec(),
        counts: vec![fast / 2, fast - fast / 2, 0, slow],
        overflow: very_slow,
    };
    StepTraffic { ok, errors, latency: Some(latency) }
}

/// What the data set says a workload served in steps `from..=to`.
fn expected(w: &WorkloadKey, from: usize, to: usize) -> SideObservation {
    let mut side = SideObservation { latency: Some(Histogram::empty(BOUNDS)), ..SideObservation::default() };
    for k in from..=to {
        let t = traffic(w, k);
        side.add(&SideObservation { requests: t.ok + t.errors, errors: t.errors, latency: t.latency });
    }
    side
}

fn data_set() -> SyntheticIstio {
    let start = jiff::Timestamp::from_second(START).unwrap();
    let mut data =
        SyntheticIstio::new(start, STEPS, vec![reviews_v1(), reviews_v2(), api_v1(), stranger(), idle()]);
    data.bounds_ms = BOUNDS.to_vec();
    // Every request also reported by the calling proxy: the queries must count it once.
    data.source_reporter = true;
    data
}

async fn start_backfilled() -> (PrometheusServer, PrometheusClient, SyntheticIstio) {
    let data = data_set();
    let text = data.to_openmetrics(|w, k, _| traffic(w, k));
    let server = PrometheusServer::start_with_backfill(text)
        .await
        .unwrap_or_else(|e| panic!("cannot start a real Prometheus for this test: {e}"));
    let client = PrometheusClient::new(PrometheusConfig::new(server.url())).unwrap();
    (server, client, data)
}

#[tokio::test]
async fn observes_exact_counts_and_buckets_for_three_workloads_in_two_namespaces() {
    let (server, client, data) = start_backfilled().await;
    let end = data.end();
    let keys = [reviews_v1(), reviews_v2(), api_v1()];
    let got = client.observe_sides(&keys, end, Duration::from_secs(300)).await.unwrap();

    // Prometheus 2.x ranges include both ends: with `end` on a sample, increase() over 300 s
    // is the difference of two samples 30 steps apart, with no extrapolation.
    assert_eq!(got.len(), 3, "{got:?}\n{}", server.log());
    for key in &keys {
        let want = expected(key, STEPS - 29, STEPS);
        assert_eq!(got[key], want, "{key}");
        assert!(
            want.errors > 0
                && want.latency.as_ref().unwrap().overflow + want.latency.as_ref().unwrap().counts[3] > 0
        );
    }
    // The stranger served 100+ requests per step; had it leaked, api-v1's or reviews-v1's
    // counts would be several times larger than expected above.
    assert!(expected(&stranger(), STEPS - 29, STEPS).requests > 3000);
}

#[tokio::test]
async fn unaligned_window_end_extrapolates_within_one_percent() {
    let (_server, client, data) = start_backfilled().await;
    // End 5 s after sample 359: the range [end - 300 s, end] holds samples 330..=359, 290 s
    // apart, and increase() scales their difference (steps 331..=359) by 300/290.
    let end = data.sample_time(STEPS - 1).checked_add(jiff::SignedDuration::from_secs(5)).unwrap();
    let key = reviews_v2();
    let got =
        &client.observe_sides(std::slice::from_ref(&key), end, Duration::from_secs(300)).await.unwrap()[&key];

    let sampled = expected(&key, STEPS - 29, STEPS - 1);
    let prometheus_math = (sampled.requests as f64 * 300.0 / 290.0).round() as u64;
    assert_eq!(got.requests, prometheus_math);
    // Against the requests really served in the window (half of each edge step, traffic being
    // spread evenly within a step), the measured error is below 1 %.
    let edges = expected(&key, STEPS - 30, STEPS - 30).requests + expected(&key, STEPS, STEPS).requests;
    let truth = sampled.requests as f64 + edges as f64 / 2.0;
    let relative = (got.requests as f64 - truth).abs() / truth;
    eprintln!(
        "increase() extrapolation: {} requests vs {truth} served ({:.3} %)",
        got.requests,
        relative * 100.0
    );
    assert!(relative < 0.01, "got {} vs {truth}: {:.3} %", got.requests, relative * 100.0);
}

#[tokio::test]
async fn workloads_without_series_get_an_empty_observation_not_an_error() {
    let (_server, client, data) = start_backfilled().await;
    let ghost = WorkloadKey::new("shop", "ghost");
    let evil = WorkloadKey::new("shop", r#"x"} or vector(1) or {a=""#);
    let keys = [reviews_v1(), ghost.clone(), evil.clone(), idle()];
    let got = client.observe_sides(&keys, data.end(), Duration::from_secs(60)).await.unwrap();

    assert_eq!(got[&ghost], SideObservation::default());
    assert_eq!(got[&evil], SideObservation::default());
    assert_eq!(got[&idle()].requests, 0);
    assert_eq!(got[&reviews_v1()], expected(&reviews_v1(), STEPS - 5, STEPS));
}

#[tokio::test]
async fn query_scalar_runs_a_rendered_custom_template() {
    let (_server, client, data) = start_backfilled().await;
    let template = r#"sum(increase(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{ workload }}",response_code=~"5.."}[{{ interval }}])) / sum(increase(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{ workload }}"}[{{ interval }}]))"#;
    let vars = |workload: &str| -> HashMap<&str, String> {
        [
            ("namespace", "shop".to_string()),
            ("workload", workload.to_string()),
            ("interval", "10m".to_string()),
        ]
        .into()
    };
    let rate =
        client.query_scalar(&render(template, &vars("reviews-v2")).unwrap(), data.end()).await.unwrap();
    let want = expected(&reviews_v2(), STEPS - 59, STEPS);
    assert!((rate - want.errors as f64 / want.requests as f64).abs() < 1e-9, "{rate}");

    // Through the trait on a spawned task, as the engine's shell calls it (the future is Send).
    let via_trait = tokio::spawn(scalar_via_trait(std::sync::Arc::new(client), data.end())).await.unwrap();
    assert_eq!(via_trait, Ok(2.5));
}

async fn scalar_via_trait<S: MetricsSource>(source: S, at: jiff::Timestamp) -> Result<f64, QueryError> {
    source.query_scalar("vector(2.5)", at).await
}

#[tokio::test]
async fn injected_workload_name_does_not_change_the_query_structure_in_real_promql() {
    let (_server, client, data) = start_backfilled().await;
    let template = r#"sum(increase(istio_requests_total{destination_workload="{{ workload }}"}[1m]))"#;
    let vars: HashMap<&str, String> = [("workload", r#"x"} or vector(1) or {a=""#.to_string())].into();
    let promql = render(template, &vars).unwrap();
    // Unescaped, this would be `… or vector(1) …` and yield 1; escaped it is one matcher on a
    // workload that does not exist.
    assert_eq!(client.query_scalar(&promql, data.end()).await, Err(QueryError::EmptyResult));
}

#[tokio::test]
async fn zero_over_zero_ratio_is_an_error_not_a_pass() {
    let (_server, client, data) = start_backfilled().await;
    let q = r#"sum(increase(istio_requests_total{reporter="destination",destination_workload="idle",response_code=~"5.."}[5m])) / sum(increase(istio_requests_total{reporter="destination",destination_workload="idle"}[5m]))"#;
    assert!(matches!(client.query_scalar(q, data.end()).await, Err(QueryError::NotANumber { .. })));
}

#[tokio::test]
async fn bad_promql_is_a_bad_query_with_prometheus_message() {
    let (_server, client, data) = start_backfilled().await;
    match client.query_scalar("sum(rate(x[5m])", data.end()).await {
        Err(QueryError::BadQuery { status: 400, error_type, message }) => {
            assert_eq!(error_type, "bad_data");
            assert!(message.contains("parse error"), "{message}");
        }
        other => panic!("expected BadQuery, got {other:?}"),
    }
}

#[tokio::test]
async fn range_query_returns_the_backfilled_counter() {
    let (_server, client, data) = start_backfilled().await;
    let series = client
        .query_range(
            r#"sum(istio_requests_total{reporter="destination",destination_workload="api-v1"})"#,
            data.sample_time(0),
            data.sample_time(6),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(series.len(), 1);
    let values: Vec<f64> = series[0].points.iter().map(|p| p.1).collect();
    let want: Vec<f64> =
        (0..=6).map(|k| if k == 0 { 0.0 } else { expected(&api_v1(), 1, k).requests as f64 }).collect();
    assert_eq!(values, want);
}
