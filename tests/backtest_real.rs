//! `canaryd backtest` end to end against a real Prometheus (Debian's `prometheus` package),
//! started by each test on loopback and backfilled with 30 minutes of synthetic Istio series.
//!
//! These tests never skip: without the binaries they fail and say what to install.

use std::process::Command;

use canaryd::backtest::{self, Decision};
use canaryd::judge::{Verdict, SUCCESS_RATE};
use canaryd::observation::Histogram;
use canaryd::policy::{parse_policy, Policy};
use canaryd::prometheus::{PrometheusClient, PrometheusConfig, WorkloadKey};
use canaryd_testkit::prometheus::PrometheusServer;
use canaryd_testkit::synthetic::{istio_histogram, spread_errors, StepTraffic, SyntheticIstio};
use jiff::Timestamp;

/// 2025-01-01T00:00:00Z: fixed, so the data and the expected decisions never change.
const DATA_START: i64 = 1_735_689_600;
/// 30 minutes of 10 s scrapes.
const STEPS: usize = 180;
/// The canary revision appears 5 minutes into the data (stable-only before).
const ROLLOUT_START: i64 = DATA_START + 300;
/// Requests on the route per 10 s scrape (100 req/s).
const ROUTE_REQUESTS: u64 = 1000;

const POLICY: &str = "\
apiVersion: canaryd.io/v1alpha1
kind: RolloutPolicy
metadata: {name: reviews, namespace: shop}
spec:
  target:
    virtualService: reviews
    stable: {host: reviews.shop.svc.cluster.local, subset: v1}
    canary: {host: reviews.shop.svc.cluster.local, subset: v2}
  steps:
    - {weight: 10, bake: 2m}
    - {weight: 50, bake: 2m}
  analysis:
    interval: 1m
    successRate: {tolerance: 1}
";

fn policy() -> Policy {
    parse_policy("reviews.yaml", POLICY).unwrap_or_else(|d| panic!("{d}"))
}

fn stable() -> WorkloadKey {
    WorkloadKey::new("shop", "reviews-v1")
}
fn canary() -> WorkloadKey {
    WorkloadKey::new("shop", "reviews-v2")
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap()
}

/// The canary weight the route had at `t` (what the daemon would have set): nothing before
/// the rollout, then 10% for 2 minutes, 50% for 2 minutes, then everything.
fn weight_at(t: i64) -> u64 {
    match t - ROLLOUT_START {
        d if d <= 0 => 0,
        d if d <= 120 => 10,
        d if d <= 240 => 50,
        _ => 100,
    }
}

/// Healthy latency: 90% at ~20 ms, 9% at ~80 ms, 1% at ~200 ms (Istio's default buckets).
fn latency(n: u64) -> Histogram {
    let (slow, slower) = (n * 9 / 100, n / 100);
    istio_histogram(&[(20.0, n - slow - slower), (80.0, slow), (200.0, slower)])
}

/// Starts a Prometheus holding 30 minutes of data in which the canary's error rate is
/// `canary_error_rate` and the stable's 0.2%.
async fn prometheus_with(canary_error_rate: f64) -> (PrometheusServer, PrometheusClient) {
    let data = SyntheticIstio::new(ts(DATA_START), STEPS, vec![stable(), canary()]);
    let text = data.to_openmetrics(|w, k, t| {
        let share = weight_at(t.as_second());
        let canary_n = ROUTE_REQUESTS * share / 100;
        let (n, rate) =
            if *w == canary() { (canary_n, canary_error_rate) } else { (ROUTE_REQUESTS - canary_n, 0.002) };
        let bad = spread_errors(k, n, rate);
        StepTraffic { ok: n - bad, errors: bad, latency: Some(latency(n)) }
    });
    let server = PrometheusServer::start_with_backfill(text)
        .await
        .unwrap_or_else(|e| panic!("cannot start a real Prometheus for this test: {e}"));
    let client = PrometheusClient::new(PrometheusConfig::new(server.url())).unwrap();
    (server, client)
}

fn data_end() -> Timestamp {
    ts(DATA_START + STEPS as i64 * 10)
}

#[tokio::test]
async fn aborts_a_canary_serving_ten_percent_errors_at_the_first_interval() {
    let (server, client) = prometheus_with(0.10).await;
    let result = backtest::run(&policy(), &client, ts(ROLLOUT_START), data_end()).await.unwrap();
    let human = backtest::human(&result);
    eprintln!("{human}");

    assert_eq!(result.decision, Decision::Abort, "{human}\n{}", server.log());
    assert_eq!(result.decision_time, Some(ts(ROLLOUT_START + 60)), "{human}");
    assert_eq!(result.step, 1);
    assert_eq!(result.failing_check.as_deref(), Some(SUCCESS_RATE));
    assert_eq!(result.intervals.len(), 1);
    let first = &result.intervals[0];
    assert_eq!((first.weight, first.verdict), (10, Verdict::Fail));
    let share = first.observed_share.unwrap();
    assert!((share - 0.10).abs() < 0.01, "the data shows the canary at 10%: {share}");
    let canary = first.canary.unwrap();
    assert_eq!(canary.requests, 600, "6 scrapes of 100 canary requests");
    assert_eq!(canary.errors, 60);

    // The human report: the table, the failing check with its evidence, the decision line.
    assert!(human.contains("TIME") && human.contains("SUCCESS-RATE"), "{human}");
    assert!(human.contains("fail 10.00% vs 0.19%"), "{human}");
    assert!(
        human.contains("abort at 2025-01-01T00:06:00Z, step 1/2: success-rate failed: canary 10.00%"),
        "{human}"
    );

    // JSON from the library.
    let json = backtest::json(&result);
    assert_eq!(json["decision"], "abort");
    assert_eq!(json["decisionTime"], "2025-01-01T00:06:00Z");
    assert_eq!(json["step"], 1);
    assert_eq!(json["failingCheck"], "success-rate");
    let check = &json["intervals"][0]["checks"][0];
    assert_eq!((check["check"].as_str(), check["verdict"].as_str()), (Some("success-rate"), Some("fail")));
    assert_eq!(check["evidence"]["canaryRequests"], 600);
    assert_eq!(check["evidence"]["canaryBad"], 60);

    // The chart marks the abort.
    let svg = backtest::svg(&result);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("abort (success-rate) at 00:06:00"), "{svg}");
}

#[tokio::test]
async fn promotes_a_healthy_canary_after_both_steps_bake() {
    let (server, client) = prometheus_with(0.002).await;
    let result = backtest::run(&policy(), &client, ts(ROLLOUT_START), data_end()).await.unwrap();
    let human = backtest::human(&result);
    eprintln!("{human}");

    assert_eq!(result.decision, Decision::Promote, "{human}\n{}", server.log());
    // Step 1 bakes 00:05–00:07, step 2 00:07–00:09: promoted at the end of step 2's bake.
    assert_eq!(result.decision_time, Some(ts(ROLLOUT_START + 240)), "{human}");
    assert_eq!(result.step, 2);
    assert_eq!(result.failing_check, None);
    let rows: Vec<(usize, u32, Verdict)> =
        result.intervals.iter().map(|r| (r.step, r.weight, r.verdict)).collect();
    assert_eq!(
        rows,
        [
            (1, 10, Verdict::Inconclusive),
            (1, 10, Verdict::Pass),
            (2, 50, Verdict::Inconclusive),
            (2, 50, Verdict::Pass)
        ],
        "{human}"
    );
    // The weights are what the data shows.
    let shares: Vec<f64> = result.intervals.iter().map(|r| r.observed_share.unwrap()).collect();
    assert!((shares[0] - 0.1).abs() < 0.01 && (shares[3] - 0.5).abs() < 0.01, "{shares:?}");
    assert!(human.contains("promote at 2025-01-01T00:09:00Z, step 2/2: every step passed"), "{human}");

    // The chart marks the promotion and draws both sides in both panels.
    let svg = backtest::svg(&result);
    assert!(svg.contains("promote at 00:09:00"), "{svg}");
    assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");

    // Once through the built binary, JSON format, with --fail-on-abort (which must not fire).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reviews.yaml");
    std::fs::write(&file, POLICY).unwrap();
    let chart = dir.path().join("chart.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["backtest", file.to_str().unwrap(), "--prometheus", server.url()])
        .args(["--start", "2025-01-01T00:05:00Z", "--end", "2025-01-01T00:30:00Z"])
        .args(["--format", "json", "--fail-on-abort", "--chart", chart.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["decision"], "promote");
    assert_eq!(json["decisionTime"], "2025-01-01T00:09:00Z");
    assert_eq!(json["step"], 2);
    assert_eq!(json["failingCheck"], serde_json::Value::Null);
    let intervals = json["intervals"].as_array().unwrap();
    assert_eq!(intervals.len(), 4);
    assert_eq!(intervals[3]["verdict"], "pass");
    assert_eq!(intervals[3]["weight"], 50);
    assert_eq!(intervals[3]["time"], "2025-01-01T00:09:00Z");
    assert!(intervals[3]["checks"].as_array().unwrap().iter().all(|c| c["verdict"] == "pass"));
    assert!(std::fs::read_to_string(&chart).unwrap().contains("promote at 00:09:00"));
}

#[tokio::test]
async fn with_interval_auto_it_looks_at_every_scrape() {
    let auto = parse_policy("reviews.yaml", &POLICY.replace("    interval: 1m\n", "")).unwrap();

    // The first look comes after the 15 s fallback and detects the data's 10 s scrapes; the
    // next looks follow them.
    let (_server, client) = prometheus_with(0.002).await;
    let result = backtest::run(&auto, &client, ts(ROLLOUT_START), data_end()).await.unwrap();
    let human = backtest::human(&result);
    assert_eq!(result.interval_secs, 10, "{human}");
    let times: Vec<i64> = result.intervals.iter().map(|r| r.time.as_second() - ROLLOUT_START).collect();
    assert_eq!(times[..4], [15, 25, 35, 45], "{human}");
    assert!(times.windows(2).all(|w| w[1] - w[0] == 10), "{times:?}");

    // A canary serving 10% errors is aborted at that first look, 15 s in, where a 1m interval
    // would have looked only at 60 s.
    let (server, client) = prometheus_with(0.10).await;
    let result = backtest::run(&auto, &client, ts(ROLLOUT_START), data_end()).await.unwrap();
    let human = backtest::human(&result);
    assert_eq!(result.decision, Decision::Abort, "{human}\n{}", server.log());
    assert_eq!(result.decision_time, Some(ts(ROLLOUT_START + 15)), "{human}");
    assert_eq!(result.failing_check.as_deref(), Some(SUCCESS_RATE));
}

#[tokio::test]
async fn the_binary_exits_2_when_prometheus_is_unreachable_and_1_on_abort_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reviews.yaml");
    std::fs::write(&file, POLICY).unwrap();
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["backtest", file.to_str().unwrap(), "--prometheus", &format!("http://127.0.0.1:{port}")])
        .args(["--start", "2025-01-01T00:05:00Z", "--end", "2025-01-01T00:30:00Z"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");

    let (server, _client) = prometheus_with(0.10).await;
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["backtest", file.to_str().unwrap(), "--prometheus", server.url()])
        .args(["--start", "2025-01-01T00:05:00Z", "--end", "2025-01-01T00:30:00Z", "--fail-on-abort"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("abort at 2025-01-01T00:06:00Z"), "{stdout}");
}
