//! Istio standard metrics → [`SideObservation`]s, grouped: three queries per cycle (requests,
//! 5xx errors, latency buckets) however many rollouts are running, split by workload.
//!
//! Each query selects `reporter="destination"` (the server-side proxy sees the canary's own
//! failures, not the caller's retries) and every workload of interest with one regex matcher
//! per label, then sums by `destination_workload_namespace`, `destination_workload` (and `le`).
//! The regex pair selects the cross product of namespaces and workloads; series of pairs
//! nobody asked for are dropped when the answer is split.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::client::{finite, PrometheusClient, QueryError, Sample};
use super::WorkloadKey;
use crate::observation::{Histogram, SideObservation};
use crate::promql::escape_regex_value;

const NAMESPACE: &str = "destination_workload_namespace";
const WORKLOAD: &str = "destination_workload";

/// The label selector (without braces) for a set of workloads.
fn selector(keys: &[WorkloadKey]) -> String {
    let alternation =
        |values: BTreeSet<&str>| values.into_iter().map(escape_regex_value).collect::<Vec<_>>().join("|");
    let namespaces = alternation(keys.iter().map(|k| k.namespace.as_str()).collect());
    let workloads = alternation(keys.iter().map(|k| k.workload.as_str()).collect());
    format!(r#"reporter="destination",{NAMESPACE}=~"{namespaces}",{WORKLOAD}=~"{workloads}""#)
}

/// A PromQL range for `window`: whole seconds when exact, else milliseconds.
fn range(window: Duration) -> String {
    if window.subsec_millis() == 0 {
        format!("{}s", window.as_secs())
    } else {
        format!("{}ms", window.as_millis())
    }
}

/// PromQL for the requests each workload served in `window`.
pub(crate) fn requests_query(keys: &[WorkloadKey], window: Duration) -> String {
    format!(
        "sum by ({NAMESPACE}, {WORKLOAD}) (increase(istio_requests_total{{{}}}[{}]))",
        selector(keys),
        range(window)
    )
}

/// PromQL for the 5xx responses each workload served in `window`.
pub(crate) fn errors_query(keys: &[WorkloadKey], window: Duration) -> String {
    format!(
        r#"sum by ({NAMESPACE}, {WORKLOAD}) (increase(istio_requests_total{{{},response_code=~"5.."}}[{}]))"#,
        selector(keys),
        range(window)
    )
}

/// PromQL for each workload's cumulative latency buckets (milliseconds) in `window`.
pub(crate) fn latency_query(keys: &[WorkloadKey], window: Duration) -> String {
    format!(
        "sum by ({NAMESPACE}, {WORKLOAD}, le) (increase(istio_request_duration_milliseconds_bucket{{{}}}[{}]))",
        selector(keys),
        range(window)
    )
}

/// See [`PrometheusClient::observe_sides`].
pub(crate) async fn observe_sides(
    client: &PrometheusClient,
    keys: &[WorkloadKey],
    end: jiff::Timestamp,
    window: Duration,
) -> Result<HashMap<WorkloadKey, SideObservation>, QueryError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    if window.as_millis() == 0 {
        return Err(QueryError::Config("the observation window must be at least 1 ms".into()));
    }
    let queries = [requests_query(keys, window), errors_query(keys, window), latency_query(keys, window)];
    let (requests, errors, latency) = tokio::try_join!(
        client.query_vector(&queries[0], end),
        client.query_vector(&queries[1], end),
        client.query_vector(&queries[2], end),
    )?;
    let wanted: BTreeSet<&WorkloadKey> = keys.iter().collect();
    let mut out: HashMap<WorkloadKey, SideObservation> =
        keys.iter().map(|k| (k.clone(), SideObservation::default())).collect();
    for (key, value) in counts(&requests, &wanted)? {
        out.get_mut(&key).expect("filtered to wanted keys").requests = value;
    }
    for (key, value) in counts(&errors, &wanted)? {
        out.get_mut(&key).expect("filtered to wanted keys").errors = value;
    }
    for (key, histogram) in histograms(&latency, &wanted)? {
        out.get_mut(&key).expect("filtered to wanted keys").latency = Some(histogram);
    }
    Ok(out)
}

fn key_of(sample: &Sample) -> Option<WorkloadKey> {
    Some(WorkloadKey {
        namespace: sample.labels.get(NAMESPACE)?.clone(),
        workload: sample.labels.get(WORKLOAD)?.clone(),
    })
}

/// increase() extrapolates, so counts arrive as floats (59.98…); they are rounded to the
/// nearest whole request. NaN or infinite values fail the whole observation.
fn to_count(value: f64) -> Result<u64, QueryError> {
    Ok(finite(value)?.round().max(0.0) as u64)
}

fn counts(
    samples: &[Sample],
    wanted: &BTreeSet<&WorkloadKey>,
) -> Result<Vec<(WorkloadKey, u64)>, QueryError> {
    let mut out = Vec::new();
    for s in samples {
        if let Some(key) = key_of(s).filter(|k| wanted.contains(k)) {
            out.push((key, to_count(s.value)?));
        }
    }
    Ok(out)
}

/// Groups `le` buckets per workload into [`Histogram`]s. Bucket bounds are whatever the mesh
/// exports (Istio's defaults or a custom set); `+Inf` is the total.
fn histograms(
    samples: &[Sample],
    wanted: &BTreeSet<&WorkloadKey>,
) -> Result<Vec<(WorkloadKey, Histogram)>, QueryError> {
    struct Buckets {
        finite: Vec<(f64, u64)>,
        total: Option<u64>,
    }
    let mut per_key: BTreeMap<WorkloadKey, Buckets> = BTreeMap::new();
    for s in samples {
        let Some(key) = key_of(s).filter(|k| wanted.contains(k)) else {
            continue;
        };
        let Some(le) = s.labels.get("le") else {
            continue;
        };
        let count = to_count(s.value)?;
        let buckets = per_key.entry(key).or_insert(Buckets { finite: Vec::new(), total: None });
        match le.as_str() {
            "+Inf" | "Inf" => buckets.total = Some(count),
            other => {
                let bound: f64 = other.parse().ok().filter(|b: &f64| b.is_finite()).ok_or_else(|| {
                    QueryError::Decode(format!("bucket bound le={other:?} is not a number"))
                })?;
                buckets.finite.push((bound, count));
            }
        }
    }
    Ok(per_key
        .into_iter()
        .map(|(key, mut b)| {
            b.finite.sort_by(|x, y| x.0.total_cmp(&y.0));
            // Two spellings of one bound ("1" and "1.0") from different exporters: keep the larger.
            b.finite.dedup_by(|later, earlier| {
                let same = later.0 == earlier.0;
                if same {
                    earlier.1 = earlier.1.max(later.1);
                }
                same
            });
            let bounds: Vec<f64> = b.finite.iter().map(|x| x.0).collect();
            let cumulative: Vec<u64> = b.finite.iter().map(|x| x.1).collect();
            let total = b.total.unwrap_or_else(|| cumulative.last().copied().unwrap_or(0));
            (key, Histogram::from_cumulative(&bounds, &cumulative, total))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, w: &str) -> WorkloadKey {
        WorkloadKey { namespace: ns.into(), workload: w.into() }
    }

    #[test]
    fn one_query_covers_every_workload_with_escaped_regexes() {
        let q = requests_query(
            &[key("shop", "reviews-v1"), key("shop", "reviews.v2"), key("pay", "api")],
            Duration::from_secs(60),
        );
        assert_eq!(
            q,
            r#"sum by (destination_workload_namespace, destination_workload) (increase(istio_requests_total{reporter="destination",destination_workload_namespace=~"pay|shop",destination_workload=~"api|reviews-v1|reviews\\.v2"}[60s]))"#
        );
        assert!(latency_query(&[key("a", "b")], Duration::from_millis(1500)).ends_with("[1500ms]))"));
    }

    #[test]
    fn a_quote_in_a_workload_name_stays_inside_the_matcher() {
        let q = errors_query(&[key("ns", r#"x"} or vector(1) or {a=""#)], Duration::from_secs(60));
        assert!(q.contains(r#"destination_workload=~"x\"\\} or vector\\(1\\) or \\{a=\"""#), "{q}");
    }

    fn sample(ns: &str, w: &str, le: Option<&str>, value: f64) -> Sample {
        let mut labels: HashMap<String, String> =
            [(NAMESPACE.to_string(), ns.to_string()), (WORKLOAD.to_string(), w.to_string())].into();
        if let Some(le) = le {
            labels.insert("le".into(), le.into());
        }
        Sample { labels, value }
    }

    #[test]
    fn buckets_become_a_non_cumulative_histogram_and_strangers_are_dropped() {
        let k = key("ns", "w");
        let wanted: BTreeSet<&WorkloadKey> = [&k].into();
        let samples = vec![
            sample("ns", "w", Some("+Inf"), 10.2),
            sample("ns", "w", Some("5"), 7.0),
            sample("ns", "w", Some("1"), 2.9),
            sample("other", "w", Some("1"), 100.0),
        ];
        let h = histograms(&samples, &wanted).unwrap();
        assert_eq!(h, vec![(k, Histogram { bounds_ms: vec![1.0, 5.0], counts: vec![3, 4], overflow: 3 })]);
    }

    #[test]
    fn nan_counts_fail_the_observation() {
        let k = key("ns", "w");
        let wanted: BTreeSet<&WorkloadKey> = [&k].into();
        assert!(matches!(
            counts(&[sample("ns", "w", None, f64::NAN)], &wanted),
            Err(QueryError::NotANumber { .. })
        ));
    }
}
