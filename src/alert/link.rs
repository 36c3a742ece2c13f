//! Prometheus graph links for a check: the query an engineer would type to see the canary and
//! the baseline side by side around the event.

use crate::policy::Policy;
use crate::promql::{escape_label_value, escape_regex_value};

/// Percent-encodes everything but RFC 3986 unreserved characters, for a query-string value.
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// PromQL that graphs what `check` compared, per side (stable and canary workloads), or `None`
/// for a check canaryd cannot express as one query.
pub(crate) fn check_query(policy: &Policy, check: &str) -> Option<String> {
    let ns = escape_label_value(policy.namespace());
    let w = policy.workloads();
    let workloads = format!("{}|{}", escape_regex_value(&w.stable), escape_regex_value(&w.canary));
    let sel = format!(
        r#"reporter="destination",destination_workload_namespace="{ns}",destination_workload=~"{workloads}""#
    );
    let interval = policy.spec().analysis.interval.cadence_secs(None).max(60);
    let range = format!("{interval}s");
    match check {
        "success-rate" | "success-rate-guardrail" => Some(format!(
            r#"sum by (destination_workload) (rate(istio_requests_total{{{sel},response_code=~"5.."}}[{range}])) / sum by (destination_workload) (rate(istio_requests_total{{{sel}}}[{range}]))"#
        )),
        "latency" | "latency-guardrail" => Some(format!(
            "histogram_quantile({}, sum by (destination_workload, le) (rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{range}])))",
            policy.spec().analysis.latency.quantile
        )),
        name => {
            let custom = policy.spec().analysis.custom.iter().find(|c| c.name == name)?;
            policy.template_vars(interval).render(&custom.query, crate::promql::Side::Canary).ok()
        }
    }
}

/// A Prometheus graph-page link: `base` (e.g. `https://prometheus.example`) plus the query,
/// shown over `range_secs` ending at `end` (Unix seconds).
pub(crate) fn graph_link(base: &str, query: &str, end: i64, range_secs: i64) -> String {
    let end = jiff::Timestamp::from_second(end).map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string());
    let mut url = format!(
        "{}/graph?g0.expr={}&g0.tab=0&g0.range_input={}s",
        base.trim_end_matches('/'),
        encode_component(query),
        range_secs.max(60)
    );
    if let Ok(end) = end {
        url.push_str(&format!("&g0.end_input={}", encode_component(&end)));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_characters() {
        assert_eq!(encode_component(r#"a{b="c"} / d"#), "a%7Bb%3D%22c%22%7D%20%2F%20d");
        assert_eq!(encode_component("é"), "%C3%A9");
    }

    #[test]
    fn graph_link_has_expression_range_and_end() {
        let l = graph_link("https://prom.example/", "up", 1_700_000_000, 3600);
        assert_eq!(
            l,
            "https://prom.example/graph?g0.expr=up&g0.tab=0&g0.range_input=3600s&g0.end_input=2023-11-14%2022%3A13%3A20"
        );
    }
}
