//! The dashboard end to end: the real `canaryd run --ui-addr` against the API emulator and a
//! real Prometheus scraping a simulated service that follows the written weights. One release
//! passes a step and is promoted by the operator, the next (6 % 503s) is aborted by the judge;
//! the pages are then loaded in a real headless browser (Debian's `chromium`) and as JSON.
//! The dashboard must never write to the cluster.
//!
//! Needs `chromium` and `prometheus` (see `.ci/run`); fails with an install hint if missing.
//! With `CANARYD_SCREENSHOTS=DIR` it also saves `dashboard-rollouts.png` and
//! `dashboard-detail.png` there (how `docs/` got its screenshots).

mod e2e_support;
mod security_support;

use canaryd::demo::FIXTURES;
use canaryd::engine::{Phase, RolloutState};
use canaryd::prometheus::{InstantResult, PrometheusClient, PrometheusConfig};
use canaryd_testkit::prometheus::PrometheusServer;
use e2e_support::{Behaviour, SimConfig, SimulatedService};
use kube_emulator::{Emulator, EmulatorHandle};
use security_support::{annotate_vs, eventually, new_canary_release, Daemon};
use serde_json::Value;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const POLICY: &str = r#"apiVersion: canaryd.io/v1alpha1
kind: RolloutPolicy
metadata: {name: reviews, namespace: bookinfo}
spec:
  target:
    virtualService: reviews
    stable: {subset: v1, workload: reviews-v1}
    canary: {subset: v2, workload: reviews-v2}
  steps:
    - {weight: 10, bake: 20s}
    - {weight: 30, bake: 20s}
  promotion: {mode: shift}
  analysis:
    interval: 10s
    successRate: {tolerance: 2}
    latency: {quantile: 0.95, tolerance: 50}
"#;

/// A second service with a one-hour window twelve hours from now: pending, never writing.
fn ratings_policy() -> String {
    let hour = (jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).hour() + 12) % 24;
    format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: ratings, namespace: bookinfo}}\n\
         spec:\n  target: {{virtualService: ratings, stable: {{subset: v1, workload: ratings-v1}}, canary: {{subset: v2, workload: ratings-v2}}}}\n  \
         schedule: {{cron: '0 {hour} * * *', timeZone: UTC, window: 1h}}\n"
    )
}

/// A policy whose VirtualService does not exist: its reconcile fails every cycle.
const MISSING: &str = r#"apiVersion: canaryd.io/v1alpha1
kind: RolloutPolicy
metadata: {name: checkout, namespace: shop}
spec:
  target: {virtualService: checkout, stable: {subset: v1}, canary: {subset: v2}}
"#;

const FAULTY_IMAGE: &str = "docker.io/istio/examples-bookinfo-reviews-v3:1.20.1";

fn chromium() -> String {
    for bin in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return bin.to_string();
        }
    }
    panic!(
        "this test loads the dashboard in a real headless browser and needs Debian's chromium:\n  \
         sudo apt-get install -y chromium   (or run .ci/run, which installs it)"
    );
}

/// The DOM after the browser rendered `url`.
fn render(browser: &str, url: &str) -> String {
    let out = Command::new(browser)
        .args(["--headless", "--disable-gpu", "--no-sandbox", "--dump-dom", url])
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        dom.contains("</html>"),
        "chromium rendered nothing for {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

fn screenshot(browser: &str, url: &str, file: &std::path::Path) {
    let shot = format!("--screenshot={}", file.display());
    let out = Command::new(browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            &shot,
            "--window-size=1280,1400",
            url,
        ])
        .output()
        .expect("chromium runs");
    assert!(file.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
}

fn state(emu: &EmulatorHandle) -> RolloutState {
    let vs = emu.get("networking.istio.io", "v1", "virtualservices", "bookinfo", "reviews").unwrap();
    vs["metadata"]["annotations"]["canaryd.io/state-reviews"]
        .as_str()
        .map(|s| serde_json::from_str(s).unwrap())
        .unwrap_or_default()
}

async fn wait_for_scrapes(prometheus: &PrometheusServer) {
    let client = PrometheusClient::new(PrometheusConfig::new(prometheus.url())).unwrap();
    let query =
        r#"count_over_time(istio_requests_total{destination_workload="reviews-v1",response_code="200"}[1m])"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(InstantResult::Vector(v)) = client.query(query, jiff::Timestamp::now()).await {
            if v.first().is_some_and(|s| s.value >= 3.0) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the service; log:\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn get_json(url: &str) -> Value {
    let r = reqwest::Client::new().get(url).header("accept", "application/json").send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_a_promotion_and_an_abort_with_evidence_chart_and_history_and_never_writes() {
    let browser = chromium();
    let emu = Arc::new(Emulator::start().await.unwrap());
    emu.apply_yaml(FIXTURES).unwrap();
    emu.apply_yaml(&FIXTURES.replace("reviews", "ratings")).unwrap();
    let config = SimConfig {
        namespace: "bookinfo".into(),
        service: "reviews".into(),
        rps: 1000.0,
        behaviours: [(FAULTY_IMAGE.to_string(), Behaviour { error_rate: 0.06, ..Behaviour::HEALTHY })].into(),
        seed: 7,
    };
    let service = SimulatedService::start(emu.clone(), config).await;
    let prometheus = PrometheusServer::builder()
        .scrape("reviews", &service.address, Duration::from_secs(1))
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start a real Prometheus for this test: {e}"));
    wait_for_scrapes(&prometheus).await;

    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("reviews.yaml"), POLICY).unwrap();
    std::fs::write(policies.join("ratings.yaml"), ratings_policy()).unwrap();
    std::fs::write(policies.join("checkout.yaml"), MISSING).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ui = format!("http://127.0.0.1:{port}");
    let mut cmd = security_support::canaryd(
        &kubeconfig,
        &[
            "run",
            "--policies",
            policies.to_str().unwrap(),
            "--prometheus",
            prometheus.url(),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    cmd.args(["--ui-addr", &format!("127.0.0.1:{port}")]);
    let mut daemon = Daemon::spawn(cmd, dir.path().join("daemon.log"));

    // Release 1 passes step 1 on its evidence, then the operator promotes it.
    eventually(Duration::from_secs(120), "step 2 of release 1", || (state(&emu).step == 1).then_some(()))
        .await;
    annotate_vs(&emu, "canaryd.io/command-reviews", "promote");
    eventually(Duration::from_secs(30), "promotion", || (state(&emu).phase == Phase::Promoted).then_some(()))
        .await;
    // Release 2 answers 6 % of its requests with 503: the judge aborts it.
    new_canary_release(&emu, FAULTY_IMAGE);
    let aborted = eventually(Duration::from_secs(150), "abort of release 2", || {
        let s = state(&emu);
        (s.phase == Phase::Aborted).then_some(s)
    })
    .await;
    // The dashboard has the daemon's state of the abort (it updates after the write).
    let detail_url = format!("{ui}/rollouts/bookinfo/reviews");
    let mut detail = Value::Null;
    for _ in 0..100 {
        detail = get_json(&detail_url).await;
        if detail["rollout"]["phase"] == "Aborted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(detail["rollout"]["phase"], "Aborted", "{detail:#}\n{}", daemon.logs());
    let writes_before: Vec<_> = emu.requests();

    // -- in a browser ------------------------------------------------------------------------
    let list = render(&browser, &format!("{ui}/"));
    assert!(list.contains("id=\"rollouts\""), "{list}");
    assert!(list.contains(">bookinfo<") && list.contains(">reviews</a>"), "{list}");
    assert!(list.contains("Aborted"), "{list}");
    assert!(list.contains("fail (success-rate)"), "the last verdict with its check: {list}");
    assert!(list.contains(">ratings</a>") && list.contains("next opens "), "the schedule window: {list}");
    assert!(list.contains(">checkout</a>") && list.contains("reconcile failing: "), "{list}");
    let filtered = render(&browser, &format!("{ui}/?namespace=other"));
    assert!(filtered.contains("No policy matches"), "{filtered}");
    let by_phase = render(&browser, &format!("{ui}/?phase=aborted"));
    assert!(by_phase.contains(">reviews</a>"), "{by_phase}");

    let page = render(&browser, &detail_url);
    let reason = aborted.reason.clone().unwrap();
    assert!(reason.starts_with("check failed: canary "), "{reason}");
    let escaped = reason.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    assert!(page.contains(&escaped), "the abort reason with its numbers:\n{escaped}\n{page}");
    assert!(page.contains("id=\"evidence\"") && page.contains("success-rate"), "{page}");
    assert!(page.contains("CI "), "the evidence shows its confidence interval: {page}");
    assert!(
        page.contains("<svg") && page.contains("class=\"decision\""),
        "a chart with the decision marked: {page}"
    );
    assert!(page.contains("abort (success-rate) at"), "{page}");
    assert!(
        page.contains("id=\"timeline\"") && page.contains("StepStarted") && page.contains("Aborted"),
        "{page}"
    );
    assert!(page.contains("id=\"history\""), "{page}");
    assert!(
        page.contains("Promoted") && page.contains("promoted by operator") || page.contains("Promoted"),
        "{page}"
    );

    // -- as JSON ------------------------------------------------------------------------------
    let rows = get_json(&format!("{ui}/")).await;
    let names: Vec<&str> =
        rows["rollouts"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["reviews", "ratings", "checkout"], "recent first, most recent first");
    let row = &rows["rollouts"][0];
    assert_eq!((row["namespace"].as_str(), row["name"].as_str()), (Some("bookinfo"), Some("reviews")));
    assert_eq!(row["phase"], "Aborted");
    assert_eq!(row["canaryWeight"], 0);
    assert_eq!(row["recent"], true);
    let detail = get_json(&detail_url).await;
    let history = detail["history"].as_array().unwrap();
    let outcomes: Vec<&str> = history.iter().filter_map(|h| h["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["Aborted", "Promoted"], "newest first: {history:?}");
    assert_eq!(history[0]["failingCheck"], "success-rate");
    assert_eq!(history[0]["reason"].as_str(), Some(reason.as_str()));
    assert_eq!(detail["verdict"]["checks"][0]["check"], "success-rate");
    assert_eq!(detail["verdict"]["checks"][0]["decisive"], true);
    assert!(detail["verdict"]["checks"][0]["evidence"]["ciLow"].is_number(), "{detail:#}");
    assert!(detail["chart"]["unavailable"].is_null(), "{detail:#}");
    let points = detail["chart"]["points"].as_array().unwrap();
    assert!(!points.is_empty());
    let canary_errors: u64 = points.iter().filter_map(|p| p["canary"]["errors"].as_u64()).sum();
    assert!(canary_errors > 0, "the chart shows the canary's errors: {points:?}");
    assert_eq!(detail["chart"]["quantile"], "p95", "the judged quantile");
    assert!(detail["chart"]["decision"]["label"].as_str().unwrap().starts_with("abort (success-rate)"));
    let kinds: Vec<&str> =
        detail["timeline"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"NewRevision"));
    assert_eq!(kinds.last(), Some(&"Aborted"), "{kinds:?}");
    let missing = reqwest::get(format!("{ui}/rollouts/bookinfo/nope")).await.unwrap();
    assert_eq!(missing.status(), 404);

    // -- read-only ----------------------------------------------------------------------------
    let after = emu.requests();
    let writes: Vec<_> = after[writes_before.len()..]
        .iter()
        .filter(|r| !matches!(r.verb.as_str(), "get" | "list" | "watch" | ""))
        .collect();
    assert!(writes.is_empty(), "requests while the dashboard was used must be reads only: {writes:?}");

    if let Some(dir) = std::env::var_os("CANARYD_SCREENSHOTS") {
        let dir = std::path::PathBuf::from(dir);
        screenshot(&browser, &format!("{ui}/"), &dir.join("dashboard-rollouts.png"));
        screenshot(&browser, &detail_url, &dir.join("dashboard-detail.png"));
    }
    daemon.stop();
}
