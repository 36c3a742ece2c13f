//! The HTTP client for Prometheus' query API: retries, error classification and bounded
//! response bodies.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::config::{redact_url, HeaderValue, PrometheusConfig};
/// Why a query produced no usable number. The judge turns every one of these into an Error
/// verdict; none of them can become a Pass.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The configuration cannot be used (bad URL, unreadable CA file, invalid header).
    #[error("invalid Prometheus configuration: {0}")]
    Config(String),
    /// No connection could be made, or it broke before an answer.
    #[error("Prometheus at {endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// No complete answer within the configured timeout (milliseconds).
    #[error("Prometheus did not answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// Prometheus rejected the query (HTTP 400 or 422), with its own message.
    #[error("Prometheus rejected the query (HTTP {status}, {error_type}): {message}")]
    BadQuery { status: u16, error_type: String, message: String },
    /// Prometheus failed (HTTP 5xx).
    #[error("Prometheus failed (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    /// Prometheus refused the request for another reason (401, 403, 404, 429, …).
    #[error("Prometheus refused the request (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    /// The query returned no series where one value was needed.
    #[error("the query returned no data")]
    EmptyResult,
    /// The query returned several series where one value was needed.
    #[error("the query returned {count} series where one value was expected")]
    MultipleSeries { count: usize },
    /// The value is NaN or infinite (typically a ratio over zero requests).
    #[error("the query returned {value}, not a finite number")]
    NotANumber { value: String },
    /// The answer is not the JSON Prometheus sends.
    #[error("cannot decode Prometheus' answer: {0}")]
    Decode(String),
    /// The answer is larger than the configured limit (bytes).
    #[error("Prometheus' answer exceeds {limit} bytes")]
    TooLarge { limit: usize },
}

impl QueryError {
    /// Whether a retry may succeed: connection failures, 429, 502, 503 and 504.
    pub fn is_transient(&self) -> bool {
        match self {
            QueryError::Unreachable { .. } => true,
            QueryError::Server { status, .. } => matches!(status, 502..=504),
            QueryError::Refused { status, .. } => *status == 429,
            _ => false,
        }
    }

    /// A short stable name of the error class, for metrics labels and JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            QueryError::Config(_) => "config",
            QueryError::Unreachable { .. } => "unreachable",
            QueryError::Timeout { .. } => "timeout",
            QueryError::BadQuery { .. } => "bad_query",
            QueryError::Server { .. } => "server",
            QueryError::Refused { .. } => "refused",
            QueryError::EmptyResult => "empty_result",
            QueryError::MultipleSeries { .. } => "multiple_series",
            QueryError::NotANumber { .. } => "not_a_number",
            QueryError::Decode(_) => "decode",
            QueryError::TooLarge { .. } => "too_large",
        }
    }
}

/// One series of an instant-vector result: its labels and value (possibly NaN or infinite).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels (including `__name__` when the query keeps it).
    pub labels: HashMap<String, String>,
    /// The value at the query time.
    pub value: f64,
}

/// One series of a range-query result: its labels and `(Unix seconds, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' labels.
    pub labels: HashMap<String, String>,
    /// Points in time order: Unix seconds and value.
    pub points: Vec<(f64, f64)>,
}

/// An instant query's result.
#[derive(Debug, Clone, PartialEq)]
pub enum InstantResult {
    /// An instant vector (zero or more series).
    Vector(Vec<Sample>),
    /// A scalar value.
    Scalar(f64),
}

/// Largest part of an error body quoted in a [`QueryError`], in bytes.
const MAX_MESSAGE_BYTES: usize = 1024;

/// A client for the Prometheus HTTP API. Cheap to clone (shares the connection pool).
#[derive(Clone)]
pub struct PrometheusClient {
    http: reqwest::Client,
    base: reqwest::Url,
    /// The base URL without credentials, for errors and logs.
    endpoint: String,
    config: PrometheusConfig,
}

impl fmt::Debug for PrometheusClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusClient").field("config", &self.config).finish()
    }
}

impl PrometheusClient {
    /// Builds a client; fails on a bad URL, an unreadable CA file or an invalid header.
    pub fn new(config: PrometheusConfig) -> Result<Self, QueryError> {
        let mut base = reqwest::Url::parse(&config.url)
            .map_err(|e| QueryError::Config(format!("url {}: {e}", redact_url(&config.url))))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(QueryError::Config(format!(
                "url scheme must be http or https, not {}",
                base.scheme()
            )));
        }
        // A trailing slash makes `join("api/v1/query")` keep a path prefix such as /prometheus.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &config.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| QueryError::Config(format!("invalid header name {name:?}")))?;
            let (text, sensitive) = match value {
                HeaderValue::Plain(v) => (v.as_str(), false),
                HeaderValue::Secret(s) => (s.expose(), true),
            };
            let mut v = reqwest::header::HeaderValue::from_str(text)
                .map_err(|_| QueryError::Config(format!("invalid value for header {name}")))?;
            v.set_sensitive(sensitive);
            headers.append(name, v);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .default_headers(headers)
            .user_agent(concat!("canaryd/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| QueryError::Config(format!("ca_file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| QueryError::Config(format!("ca_file {}: {e}", path.display())))?;
            builder = builder.tls_certs_only(certs);
        }
        if config.insecure_skip_verify {
            tracing::warn!(endpoint = %redact_url(&config.url), "TLS certificate verification is off for Prometheus");
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|e| QueryError::Config(e.without_url().to_string()))?;
        let endpoint = redact_url(&config.url);
        Ok(PrometheusClient { http, base, endpoint, config })
    }

    /// The configuration this client was built from.
    pub fn config(&self) -> &PrometheusConfig {
        &self.config
    }

    /// Runs an instant query at `at` (`/api/v1/query`).
    pub async fn query(&self, promql: &str, at: jiff::Timestamp) -> Result<InstantResult, QueryError> {
        let params = [("query", promql.to_string()), ("time", unix_seconds(at))];
        match self.get("api/v1/query", &params).await? {
            Data::Vector(v) => Ok(InstantResult::Vector(
                v.into_iter()
                    .map(|s| Ok(Sample { labels: s.metric, value: parse_value(&s.value.1)? }))
                    .collect::<Result<_, QueryError>>()?,
            )),
            Data::Scalar((_, v)) => Ok(InstantResult::Scalar(parse_value(&v)?)),
            other => Err(QueryError::Decode(format!("expected a vector or scalar, got a {}", other.kind()))),
        }
    }

    /// Runs an instant query that must produce an instant vector; its series with their values.
    pub async fn query_vector(&self, promql: &str, at: jiff::Timestamp) -> Result<Vec<Sample>, QueryError> {
        match self.query(promql, at).await? {
            InstantResult::Vector(v) => Ok(v),
            InstantResult::Scalar(_) => Err(QueryError::Decode("expected a vector, got a scalar".into())),
        }
    }

    /// Runs an instant query that must produce a range vector (a range selector without a
    /// function, e.g. `metric[5m]`): every series with its raw samples in the range before `at`.
    pub async fn query_matrix(&self, promql: &str, at: jiff::Timestamp) -> Result<Vec<Series>, QueryError> {
        let params = [("query", promql.to_string()), ("time", unix_seconds(at))];
        matrix(self.get("api/v1/query", &params).await?)
    }

    /// Runs a range query over `[start, end]` with resolution `step` (`/api/v1/query_range`).
    pub async fn query_range(
        &self,
        promql: &str,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
        step: Duration,
    ) -> Result<Vec<Series>, QueryError> {
        let params = [
            ("query", promql.to_string()),
            ("start", unix_seconds(start)),
            ("end", unix_seconds(end)),
            ("step", format!("{}", step.as_secs_f64())),
        ];
        matrix(self.get("api/v1/query_range", &params).await?)
    }

    /// One number for a custom check: a scalar, or an instant vector of exactly one series.
    /// No series is [`QueryError::EmptyResult`], NaN or ±Inf is [`QueryError::NotANumber`].
    pub async fn query_scalar(&self, promql: &str, at: jiff::Timestamp) -> Result<f64, QueryError> {
        let value = match self.query(promql, at).await? {
            InstantResult::Scalar(v) => v,
            InstantResult::Vector(v) => match v.as_slice() {
                [] => return Err(QueryError::EmptyResult),
                [one] => one.value,
                more => return Err(QueryError::MultipleSeries { count: more.len() }),
            },
        };
        finite(value)
    }

    /// GET with retries on transient failures, exponential backoff with jitter.
    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Data, QueryError> {
        let mut attempt = 0u32;
        loop {
            match self.attempt(path, params).await {
                Err(e) if e.is_transient() && attempt < self.config.retries => {
                    let base = self.config.retry_backoff.saturating_mul(1 << attempt.min(16));
                    let wait = base.min(Duration::from_secs(5)).mul_f64(rand::random_range(0.8..1.2));
                    tracing::debug!(endpoint = %self.endpoint, error = %e, attempt, wait_ms = wait.as_millis() as u64, "retrying Prometheus query");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn attempt(&self, path: &str, params: &[(&str, String)]) -> Result<Data, QueryError> {
        let url = self.base.join(path).map_err(|e| QueryError::Config(e.to_string()))?;
        let mut request = self.http.get(url).query(params);
        if let Some(token) = &self.config.bearer_token {
            request = request.bearer_auth(token.expose());
        }
        if let Some((user, password)) = &self.config.basic_auth {
            request = request.basic_auth(user, Some(password.expose()));
        }
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let body = self.read_body(response).await?;
        if (200..300).contains(&status) {
            return decode_success(&body);
        }
        let (error_type, message) = error_message(&body);
        Err(match status {
            400 | 422 => QueryError::BadQuery { status, error_type, message },
            500..=599 => QueryError::Server { status, message },
            _ => QueryError::Refused { status, message },
        })
    }

    /// Reads the body, refusing more than `max_response_bytes` (checked as it streams, so a
    /// huge answer cannot exhaust memory).
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, QueryError> {
        let limit = self.config.max_response_bytes;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(QueryError::TooLarge { limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport_error(e))? {
            if body.len() + chunk.len() > limit {
                return Err(QueryError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, e: reqwest::Error) -> QueryError {
        if e.is_timeout() {
            return QueryError::Timeout { timeout_ms: self.config.timeout.as_millis() as u64 };
        }
        // Without the URL: it carries the query and possibly credentials.
        let e = e.without_url();
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = format!("{reason}: {s}");
            source = s.source();
        }
        QueryError::Unreachable { endpoint: self.endpoint.clone(), reason }
    }
}

/// The series of a matrix answer (a range query's, or an instant query of a range selector).
fn matrix(data: Data) -> Result<Vec<Series>, QueryError> {
    match data {
        Data::Matrix(m) => m
            .into_iter()
            .map(|s| {
                let points = s.values.into_iter().map(|(t, v)| Ok((t, parse_value(&v)?))).collect::<Result<
                    _,
                    QueryError,
                >>(
                )?;
                Ok(Series { labels: s.metric, points })
            })
            .collect(),
        other => Err(QueryError::Decode(format!("expected a matrix, got a {}", other.kind()))),
    }
}

/// `t` as Unix seconds with millisecond precision, as Prometheus' API expects.
fn unix_seconds(t: jiff::Timestamp) -> String {
    let ms = t.as_millisecond();
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// Prometheus sends sample values as strings: numbers, `NaN`, `+Inf`, `-Inf`.
fn parse_value(s: &str) -> Result<f64, QueryError> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| QueryError::Decode(format!("sample value {s:?} is not a number"))),
    }
}

/// `value` if finite, otherwise [`QueryError::NotANumber`].
pub(crate) fn finite(value: f64) -> Result<f64, QueryError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(QueryError::NotANumber { value: value.to_string() })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<VectorSample>),
    Scalar((f64, String)),
    Matrix(Vec<MatrixSeries>),
    String(serde::de::IgnoredAny),
}

impl Data {
    fn kind(&self) -> &'static str {
        match self {
            Data::Vector(_) => "vector",
            Data::Scalar(_) => "scalar",
            Data::Matrix(_) => "matrix",
            Data::String(_) => "string",
        }
    }
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: HashMap<String, String>,
    value: (f64, String),
}

#[derive(Deserialize)]
struct MatrixSeries {
    #[serde(default)]
    metric: HashMap<String, String>,
    values: Vec<(f64, String)>,
}

fn decode_success(body: &[u8]) -> Result<Data, QueryError> {
    let response: ApiResponse =
        serde_json::from_slice(body).map_err(|e| QueryError::Decode(e.to_string()))?;
    match (response.status.as_str(), response.data) {
        ("success", Some(data)) => Ok(data),
        ("success", None) => Err(QueryError::Decode("status success without data".into())),
        // An error with a 2xx status is not something Prometheus sends; a proxy may.
        _ => Err(QueryError::Server {
            status: 200,
            message: truncate(response.error.unwrap_or_else(|| format!("status {:?}", response.status))),
        }),
    }
}

/// Prometheus' `errorType` and `error` from an error body, or the body's start as text.
fn error_message(body: &[u8]) -> (String, String) {
    match serde_json::from_slice::<ApiResponse>(body) {
        Ok(r) if r.error.is_some() || r.error_type.is_some() => {
            (r.error_type.unwrap_or_default(), truncate(r.error.unwrap_or_default()))
        }
        _ => (String::new(), truncate(String::from_utf8_lossy(body).trim().to_string())),
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod decode_props {
    //! Whatever bytes a Prometheus (or something pretending to be one) answers with, decoding
    //! returns a value or a typed error; it never panics.
    use super::*;
    use proptest::prelude::*;

    const VALID: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"destination_workload":"reviews-v2","le":"250"},"value":[1735689600.25,"42"]},{"metric":{},"value":[1735689600,"NaN"]}]}}"#;

    fn exercise(body: &[u8]) {
        if let Ok(Data::Vector(v)) = decode_success(body) {
            for s in v {
                let _ = parse_value(&s.value.1).and_then(finite);
            }
        }
        let _ = error_message(body);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            exercise(&body);
        }

        #[test]
        fn mutated_answers_never_panic(pos in 0usize..VALID.len(), junk in "[ -~]{0,6}") {
            let mut end = (pos + 4).min(VALID.len());
            while !VALID.is_char_boundary(end) { end += 1; }
            let body = format!("{}{}{}", &VALID[..pos], junk, &VALID[end..]);
            exercise(body.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_sent_as_unix_seconds_with_milliseconds() {
        let t = jiff::Timestamp::from_millisecond(1_735_689_600_250).unwrap();
        assert_eq!(unix_seconds(t), "1735689600.250");
    }

    #[test]
    fn prometheus_special_values_parse_and_are_not_finite() {
        assert!(parse_value("NaN").unwrap().is_nan());
        assert_eq!(parse_value("+Inf").unwrap(), f64::INFINITY);
        assert!(matches!(finite(f64::NAN), Err(QueryError::NotANumber { .. })));
        assert!(matches!(parse_value("abc"), Err(QueryError::Decode(_))));
    }

    #[test]
    fn only_connect_errors_429_and_gateway_errors_are_transient() {
        let server = |status| QueryError::Server { status, message: String::new() };
        assert!(server(502).is_transient() && server(503).is_transient() && server(504).is_transient());
        assert!(!server(500).is_transient());
        assert!(QueryError::Refused { status: 429, message: String::new() }.is_transient());
        assert!(!QueryError::Timeout { timeout_ms: 1 }.is_transient());
        assert!(!QueryError::BadQuery { status: 400, error_type: String::new(), message: String::new() }
            .is_transient());
    }
}
