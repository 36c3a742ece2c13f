//! The real-Prometheus harness itself: start, backfill, scrape, stop, and clear failures.

use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use canaryd::prometheus::{InstantResult, PrometheusClient, PrometheusConfig};
use canaryd_testkit::prometheus::{PrometheusServer, ServerError};

async fn start(builder: canaryd_testkit::prometheus::PrometheusServerBuilder) -> PrometheusServer {
    builder.start().await.unwrap_or_else(|e| panic!("cannot start a real Prometheus for this test: {e}"))
}

#[tokio::test]
async fn a_missing_binary_fails_with_an_install_hint() {
    let err = PrometheusServer::builder()
        .binaries("/nonexistent/prometheus", "/nonexistent/promtool")
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, ServerError::NotInstalled { .. }));
    assert!(err.to_string().contains("apt-get install -y prometheus"), "{err}");
}

#[tokio::test]
async fn invalid_openmetrics_reports_promtool_output() {
    let err = PrometheusServer::start_with_backfill("this is not openmetrics\n").await.unwrap_err();
    match err {
        ServerError::Backfill { output } => assert!(!output.is_empty()),
        other => panic!("expected a backfill error, got {other}"),
    }
}

#[tokio::test]
async fn dropping_the_server_stops_prometheus_and_removes_its_data() {
    let server = start(PrometheusServer::builder()).await;
    let address = server.url().trim_start_matches("http://").to_string();
    let data = server.data_dir();
    assert!(data.is_dir());
    drop(server);
    assert!(!data.exists(), "{} is left behind", data.display());
    assert!(std::net::TcpStream::connect(&address).is_err(), "still listening on {address}");
}

#[tokio::test]
async fn scrapes_a_live_target() {
    let app = Router::new().route(
        "/metrics",
        get(|| async { "# TYPE demo_requests_total counter\ndemo_requests_total{workload=\"w\"} 42\n" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let server = start(PrometheusServer::builder().scrape("sim", &target, Duration::from_millis(200))).await;
    let client = PrometheusClient::new(PrometheusConfig::new(server.url())).unwrap();
    // Scrapes happen on Prometheus' own schedule: poll until the first one has landed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = client.query(r#"demo_requests_total{job="sim"}"#, jiff::Timestamp::now()).await.unwrap();
        if let InstantResult::Vector(v) = &got {
            if let [one] = v.as_slice() {
                assert_eq!(one.value, 42.0);
                break;
            }
        }
        assert!(Instant::now() < deadline, "no scrape within 30 s; log:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
