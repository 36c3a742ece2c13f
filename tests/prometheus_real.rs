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
    // Every request also reported by the calling proxy, and each failing request retried twice
    // (Istio's default), so the workload's proxy counts three failed attempts: the observation
    // must be the requests callers made, each counted once.
    data.source_reporter = true;
    data.destination_retries = 2;
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

    // `end` is on a sample: the window (end - 300 s, end] holds the last 30 steps' samples and
    // the count is their difference from sample 330, exactly.
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
async fn an_unaligned_window_counts_exactly_the_samples_inside_it() {
    let (_server, client, data) = start_backfilled().await;
    // End 5 s after sample 359: the window (end - 300 s, end] holds samples 330..=359 and the
    // last sample before it is 329, so the count is steps 330..=359 exactly. increase() would
    // scale the difference of samples 330..=359 (steps 331..=359) by 300/290 instead.
    let end = data.sample_time(STEPS - 1).checked_add(jiff::SignedDuration::from_secs(5)).unwrap();
    let key = reviews_v2();
    let got =
        &client.observe_sides(std::slice::from_ref(&key), end, Duration::from_secs(300)).await.unwrap()[&key];
    assert_eq!(*got, expected(&key, STEPS - 30, STEPS - 1));
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
    let template = r#"sum(increase(istio_requests_total{reporter="source",destination_workload_namespace="{{ namespace }}",destination_workload="{{ workload }}",response_code=~"5.."}[{{ interval }}])) / sum(increase(istio_requests_total{reporter="source",destination_workload_namespace="{{ namespace }}",destination_workload="{{ workload }}"}[{{ interval }}]))"#;
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
            r#"sum(istio_requests_total{reporter="source",destination_workload="api-v1"})"#,
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

/// 30 s scrapes, as many meshes have: the canary's 5xx series is created at its first error
/// (step 20, 7 errors at once) and its proxy restarts before step 23.
mod thirty_second_scrapes {
    use super::*;

    const STEPS: usize = 40;
    const FIRST_ERRORS: usize = 20;
    const RESTART: usize = 23;

    fn canary_traffic(k: usize) -> StepTraffic {
        let ok = 100 + 10 * (k % 3) as u64;
        let errors = match k {
            k if k < FIRST_ERRORS => 0,
            FIRST_ERRORS => 7,
            k => 1 + (k % 2) as u64,
        };
        StepTraffic::uniform(ok, errors, 20.0, BOUNDS)
    }

    fn traffic(w: &WorkloadKey, k: usize) -> StepTraffic {
        if *w == reviews_v2() {
            canary_traffic(k)
        } else {
            StepTraffic::uniform(300, (k % 2) as u64, 20.0, BOUNDS)
        }
    }

    /// What a workload served in steps `from..=to`.
    fn served(w: &WorkloadKey, from: usize, to: usize) -> SideObservation {
        let mut side = SideObservation::default();
        for k in from..=to {
            let t = traffic(w, k);
            side.add(&SideObservation { requests: t.ok + t.errors, errors: t.errors, latency: t.latency });
        }
        side
    }

    #[tokio::test]
    async fn lazy_5xx_series_and_a_restart_are_counted_exactly_where_increase_is_off() {
        let start = jiff::Timestamp::from_second(START).unwrap();
        let mut data = SyntheticIstio::new(start, STEPS, vec![reviews_v1(), reviews_v2()]);
        data.step = Duration::from_secs(30);
        data.bounds_ms = BOUNDS.to_vec();
        data.lazy_series = true;
        data.restarts = vec![(reviews_v2(), RESTART)];
        let text = data.to_openmetrics(|w, k, _| traffic(w, k));
        let server = PrometheusServer::start_with_backfill(text)
            .await
            .unwrap_or_else(|e| panic!("cannot start a real Prometheus for this test: {e}"));
        let client = PrometheusClient::new(PrometheusConfig::new(server.url())).unwrap();
        let keys = [reviews_v1(), reviews_v2()];
        let window = Duration::from_secs(60);

        // Looks every minute, 20 s after a scrape (the daemon's clock is not the scraper's):
        // window j is (t(k-2) + 20 s, t(k) + 20 s] and holds steps k-1 and k.
        let mut total = HashMap::<WorkloadKey, SideObservation>::new();
        for k in (19..=25).step_by(2) {
            let end = data.sample_time(k).checked_add(jiff::SignedDuration::from_secs(20)).unwrap();
            let got = client.observe_sides(&keys, end, window).await.unwrap();
            for key in &keys {
                assert_eq!(got[key], served(key, k - 1, k), "{key} at step {k}\n{}", server.log());
                total.entry(key.clone()).or_default().add(&got[key]);
            }
        }
        // The looks telescope: together they hold every request of steps 18..=25.
        for key in &keys {
            assert_eq!(total[key], served(key, 18, 25), "{key}");
        }

        // What increase() made of the look holding the first errors (steps 20 and 21: 7 + 2
        // errors, 120 + 100 + 9 = 229 requests): the 503 series' only samples in the range are
        // at step 20 (7) and 21 (9), so it sees 2 errors and extrapolates them over 60 s / 30 s
        // to 4 — and the 200 series' 100 to 200. 4 errors in 204 requests (1.96 %) instead of
        // 9 in 229 (3.93 %): half the canary's errors lost, on the side that matters.
        let end = data.sample_time(21).checked_add(jiff::SignedDuration::from_secs(20)).unwrap();
        let old = |codes: &str| {
            format!(
                r#"sum(increase(istio_requests_total{{reporter="destination",destination_workload="reviews-v2"{codes}}}[60s]))"#
            )
        };
        let errors = client.query_scalar(&old(r#",response_code=~"5..""#), end).await.unwrap();
        let requests = client.query_scalar(&old(""), end).await.unwrap();
        eprintln!("increase(): {errors} errors in {requests} requests; exact: 9 in 229");
        assert_eq!((errors.round(), requests.round()), (4.0, 204.0));
        let looked = client.observe_sides_with_scrape(&keys, end, window).await.unwrap();
        let exact = &looked.sides[&reviews_v2()];
        assert_eq!((exact.errors, exact.requests), (9, 229));
        // The same samples show the scrape interval, which `analysis.interval: auto` follows
        // (the canary's 503 series, recreated after the restart, has one sample: no gap).
        assert_eq!(looked.scrape_interval(&reviews_v2(), &reviews_v1()), Some(Duration::from_secs(30)));
    }
}
