//! Istio standard metrics → [`SideObservation`]s, grouped: three queries per cycle (requests by
//! response code, latency buckets, requests no workload answered) however many rollouts are
//! running, split by workload.
//!
//! Requests are read from both reporters: the caller's proxy (`reporter="source"`) counts each
//! request once with its final response, the workload's proxy (`reporter="destination"`)
//! counts every retried attempt; [`observation::counted_requests`] picks the caller's view
//! when it covers the traffic. Latency is the workload's own (`reporter="destination"`). Every
//! workload of interest is selected with one regex matcher per label. The regex pair selects the cross product of namespaces and workloads; series of
//! pairs nobody asked for are dropped when the answer is split.
//!
//! The queries are range selectors without a function: Prometheus returns each series' raw
//! samples over the window plus [`counters::MARGIN`], and canaryd computes exact per-series
//! increments ([`counters::increment`]: resets, lazily created 5xx series) before summing
//! per workload. Summing in PromQL first would mix one pod's reset into another's counts, and
//! `increase()` extrapolates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::client::{finite, PrometheusClient, QueryError, Series};
use super::{ObservedSides, WorkloadKey};
use crate::counters::{self, Point};
use crate::observation::{self, Histogram, ReportedCounts, Reporter, SideObservation};
use crate::promql::escape_regex_value;

const NAMESPACE: &str = "destination_workload_namespace";
const WORKLOAD: &str = "destination_workload";

/// The label selector (without braces) for a set of workloads, as counted by `reporter`
/// (a PromQL matcher value: `="destination"`, `=~"source|destination"`).
fn selector(keys: &[WorkloadKey], reporter: &str) -> String {
    let alternation =
        |values: BTreeSet<&str>| values.into_iter().map(escape_regex_value).collect::<Vec<_>>().join("|");
    let namespaces = alternation(keys.iter().map(|k| k.namespace.as_str()).collect());
    let workloads = alternation(keys.iter().map(|k| k.workload.as_str()).collect());
    format!(r#"reporter{reporter},{NAMESPACE}=~"{namespaces}",{WORKLOAD}=~"{workloads}""#)
}

/// A PromQL range for `window`: whole seconds when exact, else milliseconds.
fn range(window: Duration) -> String {
    if window.subsec_millis() == 0 {
        format!("{}s", window.as_secs())
    } else {
        format!("{}ms", window.as_millis())
    }
}

/// PromQL for the raw request counters (every response code) of each workload's series over
/// `window` and the margin before it.
pub(crate) fn requests_query(keys: &[WorkloadKey], window: Duration) -> String {
    format!(
        "istio_requests_total{{{}}}[{}]",
        selector(keys, r#"=~"source|destination""#),
        range(window + counters::MARGIN)
    )
}

/// PromQL for the raw cumulative latency buckets (milliseconds) of each workload's series over
/// `window` and the margin before it.
pub(crate) fn latency_query(keys: &[WorkloadKey], window: Duration) -> String {
    format!(
        "istio_request_duration_milliseconds_bucket{{{}}}[{}]",
        selector(keys, r#"="destination""#),
        range(window + counters::MARGIN)
    )
}

/// PromQL for the raw counters of requests to services in the keys' namespaces that no
/// workload answered ([`WorkloadKey::no_upstream`]): reported by the caller only, with
/// `destination_workload="unknown"` and Envoy's no-upstream response flags.
pub(crate) fn no_upstream_query(keys: &[WorkloadKey], window: Duration) -> String {
    let namespaces: BTreeSet<&str> = keys.iter().map(|k| k.namespace.as_str()).collect();
    let namespaces = namespaces.into_iter().map(escape_regex_value).collect::<Vec<_>>().join("|");
    format!(
        r#"istio_requests_total{{reporter="source",destination_workload="unknown",response_flags=~"UH|UF|NC",destination_service_namespace=~"{namespaces}"}}[{}]"#,
        range(window + counters::MARGIN)
    )
}

/// Each service's no-upstream requests over the window, keyed by [`WorkloadKey::no_upstream`].
fn no_upstream(series: &[Series], w: Window) -> Result<BTreeMap<WorkloadKey, u64>, QueryError> {
    let mut sums: BTreeMap<WorkloadKey, f64> = BTreeMap::new();
    for s in series {
        let (Some(ns), Some(service)) =
            (s.labels.get("destination_service_namespace"), s.labels.get("destination_service_name"))
        else {
            continue;
        };
        let value = counters::increment(&points(s)?, w.start_ms, w.end_ms, w.margin_ms);
        *sums.entry(WorkloadKey::no_upstream(ns.clone(), service)).or_default() += value;
    }
    sums.into_iter().map(|(k, v)| Ok((k, to_count(v)?))).filter(|r| !matches!(r, Ok((_, 0)))).collect()
}

/// See [`PrometheusClient::observe_sides_with_scrape`].
pub(crate) async fn observe_sides(
    client: &PrometheusClient,
    keys: &[WorkloadKey],
    end: jiff::Timestamp,
    window: Duration,
) -> Result<ObservedSides, QueryError> {
    if keys.is_empty() {
        return Ok(ObservedSides::default());
    }
    if window.as_millis() == 0 {
        return Err(QueryError::Config("the observation window must be at least 1 ms".into()));
    }
    let queries =
        [requests_query(keys, window), latency_query(keys, window), no_upstream_query(keys, window)];
    let (requests, latency, unanswered) = tokio::try_join!(
        client.query_matrix(&queries[0], end),
        client.query_matrix(&queries[1], end),
        client.query_matrix(&queries[2], end)
    )?;
    let wanted: BTreeSet<&WorkloadKey> = keys.iter().collect();
    let bounds = Window::ending(end, window);
    let mut out: HashMap<WorkloadKey, SideObservation> =
        keys.iter().map(|k| (k.clone(), SideObservation::default())).collect();
    let mut reporters = HashMap::new();
    for (key, (counted, reporter)) in counts(&increments(&requests, &wanted, bounds)?)? {
        let side = out.get_mut(&key).expect("filtered to wanted keys");
        side.requests = counted.requests;
        side.errors = counted.errors;
        reporters.insert(key, reporter);
    }
    for (key, histogram) in histograms(&increments(&latency, &wanted, bounds)?)? {
        out.get_mut(&key).expect("filtered to wanted keys").latency = Some(histogram);
    }
    for (key, count) in no_upstream(&unanswered, bounds)? {
        out.insert(key, SideObservation { requests: count, errors: count, latency: None });
    }
    Ok(ObservedSides { sides: out, scrape_intervals: scrape_intervals(&requests, &wanted)?, reporters })
}

/// Each wanted workload's scrape interval as its request counters' samples show it.
fn scrape_intervals(
    series: &[Series],
    wanted: &BTreeSet<&WorkloadKey>,
) -> Result<HashMap<WorkloadKey, Duration>, QueryError> {
    let mut per_key: BTreeMap<WorkloadKey, Vec<Vec<Point>>> = BTreeMap::new();
    for s in series {
        if let Some(key) = key_of(&s.labels).filter(|k| wanted.contains(k)) {
            per_key.entry(key).or_default().push(points(s)?);
        }
    }
    Ok(per_key
        .into_iter()
        .filter_map(|(key, all)| Some((key, counters::scrape_interval(all.iter().map(Vec::as_slice))?)))
        .collect())
}

/// The window `(start, end]` in Unix milliseconds, and the margin before it.
#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: i64,
    end_ms: i64,
    margin_ms: i64,
}

impl Window {
    fn ending(end: jiff::Timestamp, window: Duration) -> Self {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let end_ms = end.as_millisecond();
        Window {
            start_ms: end_ms.saturating_sub(millis(window)),
            end_ms,
            margin_ms: millis(counters::MARGIN),
        }
    }
}

/// One series' increment over the window, with the series' labels.
struct Increment<'a> {
    key: WorkloadKey,
    labels: &'a HashMap<String, String>,
    value: f64,
}

/// The exact increment of every wanted series. A NaN or infinite sample fails the whole
/// observation: a counter that is not a number cannot be counted.
fn increments<'a>(
    series: &'a [Series],
    wanted: &BTreeSet<&WorkloadKey>,
    w: Window,
) -> Result<Vec<Increment<'a>>, QueryError> {
    let mut out = Vec::new();
    for s in series {
        let Some(key) = key_of(&s.labels).filter(|k| wanted.contains(k)) else {
            continue;
        };
        let points = points(s)?;
        let value = counters::increment(&points, w.start_ms, w.end_ms, w.margin_ms);
        out.push(Increment { key, labels: &s.labels, value });
    }
    Ok(out)
}

/// A series' samples as (Unix milliseconds, finite value).
fn points(s: &Series) -> Result<Vec<Point>, QueryError> {
    s.points.iter().map(|&(t, v)| Ok(((t * 1000.0).round() as i64, finite(v)?))).collect()
}

fn key_of(labels: &HashMap<String, String>) -> Option<WorkloadKey> {
    Some(WorkloadKey { namespace: labels.get(NAMESPACE)?.clone(), workload: labels.get(WORKLOAD)?.clone() })
}

/// Sums of whole-number counters are whole numbers; rounding only absorbs float noise from
/// exporters that write `1e+06`-style values.
fn to_count(value: f64) -> Result<u64, QueryError> {
    Ok(finite(value)?.round().max(0.0) as u64)
}

/// Requests and 5xx responses per workload as the judge counts them: the sums of their series'
/// increments per reporter, then the caller's or the workload's view
/// ([`observation::counted_requests`]). A series without a `reporter` label counts as the
/// destination's.
fn counts(
    increments: &[Increment<'_>],
) -> Result<BTreeMap<WorkloadKey, (ReportedCounts, Reporter)>, QueryError> {
    // Per workload: [source, destination] × (all, errors).
    let mut sums: BTreeMap<WorkloadKey, [(f64, f64); 2]> = BTreeMap::new();
    for i in increments {
        let at = usize::from(i.labels.get("reporter").map(String::as_str) != Some("source"));
        let sum = &mut sums.entry(i.key.clone()).or_default()[at];
        sum.0 += i.value;
        if i.labels.get("response_code").is_some_and(|c| counters::is_server_error(c)) {
            sum.1 += i.value;
        }
    }
    let reported = |(all, errors): (f64, f64)| -> Result<ReportedCounts, QueryError> {
        Ok(ReportedCounts { requests: to_count(all)?, errors: to_count(errors)? })
    };
    sums.into_iter()
        .map(|(key, [source, destination])| {
            Ok((key, observation::counted_requests(reported(source)?, reported(destination)?)))
        })
        .collect()
}

/// Groups `le` buckets per workload into [`Histogram`]s. Bucket bounds are whatever the mesh
/// exports (Istio's defaults or a custom set); `+Inf` is the total.
fn histograms(increments: &[Increment<'_>]) -> Result<Vec<(WorkloadKey, Histogram)>, QueryError> {
    struct Buckets {
        finite: BTreeMap<String, f64>,
        total: Option<f64>,
    }
    let mut per_key: BTreeMap<WorkloadKey, Buckets> = BTreeMap::new();
    for i in increments {
        let Some(le) = i.labels.get("le") else {
            continue;
        };
        let buckets =
            per_key.entry(i.key.clone()).or_insert(Buckets { finite: BTreeMap::new(), total: None });
        match le.as_str() {
            "+Inf" | "Inf" => *buckets.total.get_or_insert(0.0) += i.value,
            other => *buckets.finite.entry(other.to_string()).or_default() += i.value,
        }
    }
    per_key
        .into_iter()
        .map(|(key, b)| {
            let mut finite = Vec::with_capacity(b.finite.len());
            for (le, sum) in b.finite {
                let bound: f64 =
                    le.parse().ok().filter(|b: &f64| b.is_finite()).ok_or_else(|| {
                        QueryError::Decode(format!("bucket bound le={le:?} is not a number"))
                    })?;
                finite.push((bound, to_count(sum)?));
            }
            finite.sort_by(|x, y| x.0.total_cmp(&y.0));
            // Two spellings of one bound ("1" and "1.0") from different exporters: keep the larger.
            finite.dedup_by(|later, earlier| {
                let same = later.0 == earlier.0;
                if same {
                    earlier.1 = earlier.1.max(later.1);
                }
                same
            });
            let bounds: Vec<f64> = finite.iter().map(|x| x.0).collect();
            let cumulative: Vec<u64> = finite.iter().map(|x| x.1).collect();
            let total = match b.total {
                Some(t) => to_count(t)?,
                None => cumulative.last().copied().unwrap_or(0),
            };
            Ok((key, Histogram::from_cumulative(&bounds, &cumulative, total)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, w: &str) -> WorkloadKey {
        WorkloadKey { namespace: ns.into(), workload: w.into() }
    }

    #[test]
    fn one_raw_selector_covers_every_workload_with_escaped_regexes() {
        let q = requests_query(
            &[key("shop", "reviews-v1"), key("shop", "reviews.v2"), key("pay", "api")],
            Duration::from_secs(60),
        );
        assert_eq!(
            q,
            r#"istio_requests_total{reporter=~"source|destination",destination_workload_namespace=~"pay|shop",destination_workload=~"api|reviews-v1|reviews\\.v2"}[180s]"#
        );
        let latency = latency_query(&[key("a", "b")], Duration::from_millis(1500));
        assert!(latency.starts_with(r#"istio_request_duration_milliseconds_bucket{reporter="destination","#));
        assert!(latency.ends_with("}[121500ms]"));
    }

    #[test]
    fn a_quote_in_a_workload_name_stays_inside_the_matcher() {
        let q = requests_query(&[key("ns", r#"x"} or vector(1) or {a=""#)], Duration::from_secs(60));
        assert!(q.contains(r#"destination_workload=~"x\"\\} or vector\\(1\\) or \\{a=\"""#), "{q}");
    }

    /// A series of `ns/w` with extra labels and samples at (Unix seconds, value).
    fn series(w: &str, extra: &[(&str, &str)], points: &[(f64, f64)]) -> Series {
        let mut labels: HashMap<String, String> =
            [(NAMESPACE.to_string(), "ns".to_string()), (WORKLOAD.to_string(), w.to_string())].into();
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Series { labels, points: points.to_vec() }
    }

    #[test]
    fn requests_no_workload_answered_are_summed_per_service() {
        let q = no_upstream_query(&[key("shop", "reviews-v1"), key("pay", "api")], Duration::from_secs(60));
        assert_eq!(
            q,
            r#"istio_requests_total{reporter="source",destination_workload="unknown",response_flags=~"UH|UF|NC",destination_service_namespace=~"pay|shop"}[180s]"#
        );
        let uh = |pod: &str, points: &[(f64, f64)]| Series {
            labels: [
                ("destination_service_namespace", "shop"),
                ("destination_service_name", "reviews"),
                ("destination_workload", "unknown"),
                ("response_flags", "UH"),
                ("source_workload", pod),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            points: points.to_vec(),
        };
        // Two callers; the second's series appears mid-window (Istio creates it at its first 503).
        let series = [
            uh("productpage-v1", &[(90.0, 10.0), (130.0, 16.0), (160.0, 25.0)]),
            uh("gateway", &[(130.0, 4.0), (160.0, 7.0)]),
        ];
        let got = no_upstream(&series, window()).unwrap();
        assert_eq!(got.get(&WorkloadKey::no_upstream("shop", "reviews")), Some(&(15 + 7)));
        assert_eq!(got.len(), 1);
    }

    /// The window (100 s, 160 s] with the standard margin.
    fn window() -> Window {
        Window::ending(jiff::Timestamp::from_second(160).unwrap(), Duration::from_secs(60))
    }

    #[test]
    fn requests_and_errors_sum_exact_per_series_increments() {
        let k = key("ns", "w");
        let wanted: BTreeSet<&WorkloadKey> = [&k].into();
        let answer = vec![
            // Pod a: 40 requests in the window.
            series(
                "w",
                &[("pod", "a"), ("response_code", "200")],
                &[(70.0, 10.0), (100.0, 20.0), (130.0, 40.0), (160.0, 60.0)],
            ),
            // Pod b restarted at ~140 s: 30 before, 5 after.
            series(
                "w",
                &[("pod", "b"), ("response_code", "200")],
                &[(100.0, 70.0), (130.0, 100.0), (160.0, 5.0)],
            ),
            // Pod a's first 503s at ~120 s: a new series, counted from 0.
            series("w", &[("pod", "a"), ("response_code", "503")], &[(130.0, 3.0), (160.0, 4.0)]),
            // 404 is not a server error; a stranger is not wanted.
            series("w", &[("pod", "a"), ("response_code", "404")], &[(100.0, 1.0), (160.0, 2.0)]),
            series("other", &[("response_code", "500")], &[(130.0, 9.0)]),
        ];
        let got = counts(&increments(&answer, &wanted, window()).unwrap()).unwrap();
        let want = ReportedCounts { requests: 40 + 35 + 4 + 1, errors: 4 };
        assert_eq!(got, [(k, (want, Reporter::Destination))].into());
    }

    #[test]
    fn retried_attempts_are_folded_by_counting_at_the_caller() {
        let k = key("ns", "w");
        let wanted: BTreeSet<&WorkloadKey> = [&k].into();
        let at = |reporter: &'static str, code: &'static str, values: (f64, f64)| {
            series(
                "w",
                &[("reporter", reporter), ("response_code", code)],
                &[(100.0, values.0), (160.0, values.1)],
            )
        };
        // 100 requests, 2 failed after two retries each: 6 failed attempts at the destination.
        let both = vec![
            at("destination", "200", (500.0, 598.0)),
            at("destination", "503", (10.0, 16.0)),
            at("source", "200", (400.0, 498.0)),
            at("source", "503", (5.0, 7.0)),
        ];
        let got = counts(&increments(&both, &wanted, window()).unwrap()).unwrap();
        assert_eq!(got[&k], (ReportedCounts { requests: 100, errors: 2 }, Reporter::Source));
        // Callers without sidecars: the source saw 49 of the 98 successes; the destination's
        // counts are used (retries not folded).
        let partial = vec![
            at("destination", "200", (500.0, 598.0)),
            at("destination", "503", (10.0, 16.0)),
            at("source", "200", (400.0, 449.0)),
            at("source", "503", (5.0, 6.0)),
        ];
        let got = counts(&increments(&partial, &wanted, window()).unwrap()).unwrap();
        assert_eq!(got[&k], (ReportedCounts { requests: 104, errors: 6 }, Reporter::Destination));
    }

    #[test]
    fn buckets_become_a_non_cumulative_histogram_and_strangers_are_dropped() {
        let k = key("ns", "w");
        let wanted: BTreeSet<&WorkloadKey> = [&k].into();
        let bucket = |w: &str, pod: &str, le: &str, from: f64, to: f64| {
            series(w, &[("pod", pod), ("le", le)], &[(100.0, from), (160.0, to)])
        };
        let answer = vec![
            bucket("w", "a", "+Inf", 0.0, 6.0),
            bucket("w", "a", "5", 0.0, 4.0),
            bucket("w", "a", "1", 0.0, 2.0),
            bucket("w", "b", "+Inf", 10.0, 14.0),
            bucket("w", "b", "5", 10.0, 13.0),
            bucket("w", "b", "1", 10.0, 11.0),
            bucket("other", "a", "1", 0.0, 100.0),
        ];
        let h = histograms(&increments(&answer, &wanted, window()).unwrap()).unwrap();
        assert_eq!(h, vec![(k, Histogram { bounds_ms: vec![1.0, 5.0], counts: vec![3, 4], overflow: 3 })]);
    }

    #[test]
    fn nan_samples_fail_the_observation() {
        let k = key("ns", "w");
        let wanted: BTreeSet<&WorkloadKey> = [&k].into();
        let answer = vec![series("w", &[("response_code", "200")], &[(130.0, f64::NAN)])];
        assert!(matches!(increments(&answer, &wanted, window()), Err(QueryError::NotANumber { .. })));
    }
}
