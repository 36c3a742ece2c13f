//! How the Prometheus client classifies failures, retries, authenticates and bounds answers,
//! against a small fake Prometheus (axum) on loopback that misbehaves on purpose.
//!
//! None of these failures may become a number: every one is a typed `QueryError`, which the
//! judge turns into an Error verdict.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use canaryd::prometheus::{HeaderValue, PrometheusClient, PrometheusConfig, QueryError, Secret, WorkloadKey};

/// What the fake saw: every request's query parameters and headers.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    requests: Mutex<Vec<(HashMap<String, String>, HeaderMap)>>,
}

type Handler = Arc<dyn Fn(usize, &HashMap<String, String>) -> Response + Send + Sync>;

/// Starts a fake Prometheus whose `/api/v1/query` answers with `handler(call_index, params)`.
async fn fake(
    handler: impl Fn(usize, &HashMap<String, String>) -> Response + Send + Sync + 'static,
) -> (String, Arc<Seen>) {
    fake_at("/api/v1/query", Arc::new(handler)).await
}

async fn fake_at(path: &str, handler: Handler) -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route(
            path,
            get(
                |State((seen, handler)): State<(Arc<Seen>, Handler)>,
                 Query(params): Query<HashMap<String, String>>,
                 headers: HeaderMap| async move {
                    let n = seen.calls.fetch_add(1, Ordering::SeqCst);
                    seen.requests.lock().unwrap().push((params.clone(), headers));
                    handler(n, &params)
                },
            ),
        )
        .with_state((seen.clone(), handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn config(url: &str) -> PrometheusConfig {
    let mut c = PrometheusConfig::new(url);
    c.retry_backoff = Duration::from_millis(5);
    c.timeout = Duration::from_secs(5);
    c
}

fn client(url: &str) -> PrometheusClient {
    PrometheusClient::new(config(url)).unwrap()
}

fn json(status: u16, body: &str) -> Response {
    (StatusCode::from_u16(status).unwrap(), [("content-type", "application/json")], body.to_string())
        .into_response()
}

fn scalar(value: &str) -> Response {
    json(
        200,
        &format!(
            r#"{{"status":"success","data":{{"resultType":"scalar","result":[1735689600,"{value}"]}}}}"#
        ),
    )
}

/// A range-vector answer (what `observe_sides`' raw selectors get): one sample per series.
fn matrix(samples: &[(&str, &str)]) -> Response {
    let result: Vec<String> = samples
        .iter()
        .map(|(labels, v)| format!(r#"{{"metric":{{{labels}}},"values":[[1735689590,"{v}"]]}}"#))
        .collect();
    json(
        200,
        &format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
            result.join(",")
        ),
    )
}

fn vector(samples: &[(&str, &str)]) -> Response {
    let result: Vec<String> = samples
        .iter()
        .map(|(labels, v)| format!(r#"{{"metric":{{{labels}}},"value":[1735689600,"{v}"]}}"#))
        .collect();
    json(
        200,
        &format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            result.join(",")
        ),
    )
}

fn at() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_735_689_600).unwrap()
}

#[tokio::test]
async fn server_error_500_is_a_server_error_and_not_retried() {
    let (url, seen) =
        fake(|_, _| json(500, r#"{"status":"error","errorType":"internal","error":"boom"}"#)).await;
    let got = client(&url).query_scalar("up", at()).await;
    assert_eq!(got, Err(QueryError::Server { status: 500, message: "boom".into() }));
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn retries_503_then_succeeds() {
    let (url, seen) = fake(|n, _| if n == 0 { json(503, "unavailable") } else { scalar("0.25") }).await;
    assert_eq!(client(&url).query_scalar("up", at()).await, Ok(0.25));
    assert_eq!(seen.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn rate_limited_429_is_retried() {
    let (url, seen) = fake(|n, _| if n < 2 { json(429, "slow down") } else { scalar("1") }).await;
    assert_eq!(client(&url).query_scalar("up", at()).await, Ok(1.0));
    assert_eq!(seen.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn persistent_502_gives_up_after_the_configured_retries() {
    let (url, seen) = fake(|_, _| json(502, "bad gateway")).await;
    let got = client(&url).query_scalar("up", at()).await;
    assert_eq!(got, Err(QueryError::Server { status: 502, message: "bad gateway".into() }));
    assert_eq!(seen.calls.load(Ordering::SeqCst), 3, "1 attempt + 2 retries");
}

#[tokio::test]
async fn garbage_json_is_a_decode_error() {
    let (url, _) = fake(|_, _| json(200, r#"{"status":"success","data":{"resultType":"vec"#)).await;
    assert!(matches!(client(&url).query_scalar("up", at()).await, Err(QueryError::Decode(_))));
    let (url, _) = fake(|_, _| json(200, "<html>login</html>")).await;
    assert!(matches!(client(&url).query_scalar("up", at()).await, Err(QueryError::Decode(_))));
}

#[tokio::test]
async fn bad_data_400_is_a_bad_query_with_prometheus_message() {
    let (url, seen) = fake(|_, _| {
        json(400, r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unclosed left parenthesis"}"#)
    })
    .await;
    let got = client(&url).query_scalar("sum(", at()).await;
    assert_eq!(
        got,
        Err(QueryError::BadQuery {
            status: 400,
            error_type: "bad_data".into(),
            message: "1:5: parse error: unclosed left parenthesis".into()
        })
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1, "a bad query is not retried");
}

#[tokio::test]
async fn execution_error_422_is_a_bad_query() {
    let (url, _) =
        fake(|_, _| json(422, r#"{"status":"error","errorType":"execution","error":"too many samples"}"#))
            .await;
    assert!(matches!(
        client(&url).query_scalar("x", at()).await,
        Err(QueryError::BadQuery { status: 422, .. })
    ));
}

#[tokio::test]
async fn nan_value_is_an_error_not_a_pass() {
    let (url, _) = fake(|_, _| scalar("NaN")).await;
    assert!(matches!(client(&url).query_scalar("0/0", at()).await, Err(QueryError::NotANumber { .. })));
    let (url, _) = fake(|_, _| vector(&[(r#""a":"b""#, "+Inf")])).await;
    assert!(matches!(client(&url).query_scalar("1/0", at()).await, Err(QueryError::NotANumber { .. })));
}

#[tokio::test]
async fn nan_count_fails_the_whole_observation() {
    let labels = r#""destination_workload_namespace":"ns","destination_workload":"w""#;
    let (url, _) = fake(move |_, _| matrix(&[(labels, "NaN")])).await;
    let got = client(&url).observe_sides(&[WorkloadKey::new("ns", "w")], at(), Duration::from_secs(60)).await;
    assert!(matches!(got, Err(QueryError::NotANumber { .. })), "{got:?}");
}

#[tokio::test]
async fn an_instant_vector_where_raw_samples_were_asked_for_is_a_decode_error_not_zero() {
    let (url, _) = fake(|_, _| vector(&[])).await;
    let got = client(&url).observe_sides(&[WorkloadKey::new("ns", "w")], at(), Duration::from_secs(60)).await;
    assert!(matches!(got, Err(QueryError::Decode(_))), "{got:?}");
}

#[tokio::test]
async fn empty_result_is_an_error_for_a_scalar_and_too_many_series_too() {
    let (url, _) = fake(|_, _| vector(&[])).await;
    assert_eq!(client(&url).query_scalar("absent_metric", at()).await, Err(QueryError::EmptyResult));
    let (url, _) = fake(|_, _| vector(&[(r#""a":"1""#, "1"), (r#""a":"2""#, "2")])).await;
    assert_eq!(client(&url).query_scalar("x", at()).await, Err(QueryError::MultipleSeries { count: 2 }));
}

#[tokio::test]
async fn slow_response_past_the_timeout_is_a_timeout_and_not_retried() {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let app = Router::new().route(
        "/api/v1/query",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                scalar("1")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut c = config(&url);
    c.timeout = Duration::from_millis(200);
    let got = PrometheusClient::new(c).unwrap().query_scalar("up", at()).await;
    assert_eq!(got, Err(QueryError::Timeout { timeout_ms: 200 }));
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connection_refused_is_unreachable_after_retries() {
    // A port that was free a moment ago and has no listener now.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut c = config(&format!("http://user:pw-in-url@127.0.0.1:{port}"));
    c.retries = 1;
    match PrometheusClient::new(c).unwrap().query_scalar("up", at()).await {
        Err(e @ QueryError::Unreachable { .. }) => {
            assert!(e.is_transient());
            let text = e.to_string();
            assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
            assert!(!text.contains("pw-in-url") && !text.contains("query="), "{text}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn bearer_token_and_secret_headers_arrive_but_stay_out_of_debug_output() {
    let (url, seen) = fake(|_, _| scalar("1")).await;
    let mut c = config(&url);
    c.bearer_token = Some(Secret::new("tok-s3cret"));
    c.headers = vec![
        ("X-Scope-OrgID".into(), HeaderValue::Plain("team-a".into())),
        ("X-Api-Key".into(), HeaderValue::Secret(Secret::new("key-s3cret"))),
    ];
    let client = PrometheusClient::new(c.clone()).unwrap();
    client.query_scalar("up", at()).await.unwrap();

    let requests = seen.requests.lock().unwrap();
    let headers = &requests[0].1;
    assert_eq!(headers["authorization"], "Bearer tok-s3cret");
    assert_eq!(headers["x-scope-orgid"], "team-a");
    assert_eq!(headers["x-api-key"], "key-s3cret");
    for shown in [format!("{c:?}"), format!("{client:?}")] {
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("team-a"));
    }
}

#[tokio::test]
async fn basic_auth_arrives_but_stays_out_of_debug_output() {
    let (url, seen) = fake(|_, _| scalar("1")).await;
    let mut c = config(&url);
    c.basic_auth = Some(("alice".into(), Secret::new("pw-s3cret")));
    PrometheusClient::new(c.clone()).unwrap().query_scalar("up", at()).await.unwrap();

    let requests = seen.requests.lock().unwrap();
    // base64("alice:pw-s3cret")
    assert_eq!(requests[0].1["authorization"], "Basic YWxpY2U6cHctczNjcmV0");
    assert!(!format!("{c:?}").contains("pw-s3cret"));
}

#[tokio::test]
async fn oversized_answers_are_refused_with_or_without_content_length() {
    let big = format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[]}},"pad":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    let sized = big.clone();
    let (url, _) = fake(move |_, _| json(200, &sized)).await;
    let mut c = config(&url);
    c.max_response_bytes = 1 << 20;
    assert_eq!(
        PrometheusClient::new(c).unwrap().query_scalar("x", at()).await,
        Err(QueryError::TooLarge { limit: 1 << 20 })
    );

    // Streamed in chunks with no Content-Length: the limit is enforced while reading.
    let (url, _) = fake(move |_, _| {
        let chunks: Vec<Result<String, std::io::Error>> =
            big.as_bytes().chunks(64 << 10).map(|c| Ok(String::from_utf8_lossy(c).into_owned())).collect();
        Response::new(Body::from_stream(futures::stream::iter(chunks)))
    })
    .await;
    let mut c = config(&url);
    c.max_response_bytes = 1 << 20;
    assert_eq!(
        PrometheusClient::new(c).unwrap().query_scalar("x", at()).await,
        Err(QueryError::TooLarge { limit: 1 << 20 })
    );
}

#[tokio::test]
async fn observe_sides_sends_three_queries_however_many_workloads() {
    let (url, seen) = fake(|_, _| matrix(&[])).await;
    let client = client(&url);
    let few = [WorkloadKey::new("a", "w1")];
    let many: Vec<WorkloadKey> =
        (0..200).map(|i| WorkloadKey::new(format!("ns{}", i % 7), format!("svc-{i}"))).collect();

    let got = client.observe_sides(&few, at(), Duration::from_secs(60)).await.unwrap();
    assert_eq!(seen.calls.load(Ordering::SeqCst), 3);
    assert_eq!(got.len(), 1);
    let got = client.observe_sides(&many, at(), Duration::from_secs(60)).await.unwrap();
    assert_eq!(seen.calls.load(Ordering::SeqCst), 6);
    assert_eq!(got.len(), 200);
    assert!(got.values().all(|side| side.requests == 0 && side.latency.is_none()));

    // Sent at the window's end, in Unix seconds.
    let requests = seen.requests.lock().unwrap();
    assert!(requests.iter().all(|(params, _)| params["time"] == "1735689600.000"));
}

#[tokio::test]
async fn one_failed_query_fails_the_observation_of_every_workload() {
    let (url, _) = fake(|_, params| {
        if params["query"].contains("istio_request_duration_milliseconds_bucket") {
            json(500, r#"{"status":"error","errorType":"internal","error":"disk"}"#)
        } else {
            matrix(&[])
        }
    })
    .await;
    let keys = [WorkloadKey::new("a", "w1"), WorkloadKey::new("b", "w2")];
    let got = client(&url).observe_sides(&keys, at(), Duration::from_secs(60)).await;
    assert!(matches!(got, Err(QueryError::Server { status: 500, .. })), "{got:?}");
}

#[tokio::test]
async fn a_path_prefix_in_the_url_is_kept() {
    let (url, seen) = fake_at("/prometheus/api/v1/query", Arc::new(|_, _| scalar("3"))).await;
    assert_eq!(client(&format!("{url}/prometheus")).query_scalar("up", at()).await, Ok(3.0));
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unauthorized_401_is_refused_and_not_retried() {
    let (url, seen) = fake(|_, _| json(401, "Unauthorized")).await;
    assert_eq!(
        client(&url).query_scalar("up", at()).await,
        Err(QueryError::Refused { status: 401, message: "Unauthorized".into() })
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn unusable_configuration_is_a_config_error() {
    assert!(matches!(PrometheusClient::new(PrometheusConfig::new("not a url")), Err(QueryError::Config(_))));
    assert!(matches!(PrometheusClient::new(PrometheusConfig::new("ftp://x")), Err(QueryError::Config(_))));
    let mut c = PrometheusConfig::new("https://prom:9090");
    c.ca_file = Some("/nonexistent/ca.pem".into());
    assert!(matches!(PrometheusClient::new(c), Err(QueryError::Config(_))));
    assert!(!PrometheusConfig::new("https://prom:9090").insecure_skip_verify, "TLS is verified by default");
}
