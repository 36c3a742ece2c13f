//! `canaryd backtest` and the daemon decide alike on the same data: one real Prometheus holding
//! 30 s-scraped, backfilled Istio series (lazily created 5xx series); the daemon's `Driver`
//! reconciles the bookinfo rollout on the API emulator every 5 simulated seconds while the
//! backtest replays the same policy over the same range. Both must judge the same windows with
//! the same verdicts at the same times, and reach the same decision at the same time — with
//! `analysis.interval: auto`, so the scrape interval each detects from the data must agree too.

use canaryd::backtest::{self, Decision};
use canaryd::daemon::{Driver, NoEffects};
use canaryd::demo::FIXTURES;
use canaryd::engine::Phase;
use canaryd::judge::Verdict;
use canaryd::observation::{Histogram, WorkloadKey};
use canaryd::policy::{parse_policy, Policy};
use canaryd::prometheus::{PrometheusClient, PrometheusConfig};
use canaryd_testkit::prometheus::PrometheusServer;
use canaryd_testkit::state::recorded_state;
use canaryd_testkit::synthetic::{istio_histogram, spread_errors, StepTraffic, SyntheticIstio};
use jiff::Timestamp;
use kube_emulator::Emulator;
use std::time::Duration;

/// 2025-01-01T00:00:00Z.
const DATA_START: i64 = 1_735_689_600;
/// 40 minutes of 30 s scrapes.
const STEPS: usize = 80;
const SCRAPE: i64 = 30;
/// The rollout starts 5 minutes into the data.
const ROLLOUT_START: i64 = DATA_START + 300;
/// Route requests per scrape (100 req/s).
const ROUTE_REQUESTS: u64 = 3000;

const POLICY: &str = "\
apiVersion: canaryd.io/v1alpha1
kind: RolloutPolicy
metadata: {name: reviews, namespace: bookinfo}
spec:
  target: {virtualService: reviews, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}
  steps:
    - {weight: 10, bake: 2m}
    - {weight: 50, bake: 2m}
  analysis:
    successRate: {tolerance: 1}
";

fn policy() -> Policy {
    parse_policy("reviews.yaml", POLICY).unwrap_or_else(|d| panic!("{d}"))
}

/// The canary weight the data holds at `t`: what a rollout that passes each step at the end of
/// its bake would have set (a faulty canary is aborted long before this matters).
fn weight_at(t: i64) -> u64 {
    match t - ROLLOUT_START {
        d if d <= 0 => 0,
        d if d <= 120 => 10,
        d if d <= 240 => 50,
        _ => 100,
    }
}

fn latency(n: u64) -> Histogram {
    istio_histogram(&[(20.0, n - n / 10), (80.0, n / 10)])
}

async fn prometheus_with(canary_error_rate: f64) -> (PrometheusServer, PrometheusClient) {
    let (stable, canary) =
        (WorkloadKey::new("bookinfo", "reviews-v1"), WorkloadKey::new("bookinfo", "reviews-v2"));
    let mut data =
        SyntheticIstio::new(Timestamp::from_second(DATA_START).unwrap(), STEPS, vec![stable, canary.clone()]);
    data.step = Duration::from_secs(SCRAPE as u64);
    data.lazy_series = true;
    let text = data.to_openmetrics(|w, k, t| {
        let canary_n = ROUTE_REQUESTS * weight_at(t.as_second()) / 100;
        let (n, rate) =
            if *w == canary { (canary_n, canary_error_rate) } else { (ROUTE_REQUESTS - canary_n, 0.002) };
        let bad = spread_errors(k, n, rate);
        StepTraffic { ok: n - bad, errors: bad, latency: Some(latency(n)) }
    });
    let server = PrometheusServer::start_with_backfill(text)
        .await
        .unwrap_or_else(|e| panic!("cannot start a real Prometheus for this test: {e}"));
    let client = PrometheusClient::new(PrometheusConfig::new(server.url())).unwrap();
    (server, client)
}

/// (time, step, weight, verdict) of every judged window.
type Judged = Vec<(i64, usize, u32, Verdict)>;

/// The daemon's run: reconciles every 5 simulated seconds from the rollout's start until a final
/// phase; returns what it judged and its decision.
async fn daemon_run(client: PrometheusClient) -> (Judged, Phase, Option<i64>) {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(FIXTURES).unwrap();
    let p = policy();
    let driver = Driver::new(emu.client(), client, NoEffects);
    let mut judged: Judged = Vec::new();
    let end = DATA_START + STEPS as i64 * SCRAPE;
    let mut t = ROLLOUT_START;
    while t <= end {
        let before = recorded_state(&emu, &p);
        let report = driver.reconcile(&p, Timestamp::from_second(t).unwrap()).await.unwrap();
        let s = &report.state;
        if let Some(v) = s.last_verdict.as_ref().filter(|v| v.at == t) {
            judged.push((t, before.step + 1, before.traffic.canary_weight, v.verdict));
        }
        if matches!(s.phase, Phase::Promoted | Phase::Aborted) {
            return (judged, s.phase, s.finished);
        }
        t += 5;
    }
    let s = recorded_state(&emu, &p);
    (judged, s.phase, s.finished)
}

async fn same_decisions(canary_error_rate: f64, want: Decision) {
    let (server, client) = prometheus_with(canary_error_rate).await;
    let end = Timestamp::from_second(DATA_START + STEPS as i64 * SCRAPE).unwrap();
    let bt =
        backtest::run(&policy(), &client, Timestamp::from_second(ROLLOUT_START).unwrap(), end).await.unwrap();
    let human = backtest::human(&bt);
    let backtest_judged: Judged =
        bt.intervals.iter().map(|r| (r.time.as_second(), r.step, r.weight, r.verdict)).collect();
    let (daemon_judged, phase, finished) = daemon_run(client).await;
    eprintln!("backtest:\n{human}\ndaemon judged: {daemon_judged:?}");
    assert_eq!(bt.decision, want, "{human}\n{}", server.log());
    assert!(!backtest_judged.is_empty());
    assert_eq!(daemon_judged, backtest_judged, "the daemon and the backtest judged different windows");
    let daemon_decision = match phase {
        Phase::Promoted => Decision::Promote,
        Phase::Aborted => Decision::Abort,
        _ => Decision::Inconclusive,
    };
    assert_eq!(daemon_decision, bt.decision);
    assert_eq!(finished, bt.decision_time.map(|t| t.as_second()), "decided at different times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_at_the_same_looks() {
    same_decisions(0.002, Decision::Promote).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_canary_is_aborted_at_the_same_look() {
    same_decisions(0.10, Decision::Abort).await;
}
