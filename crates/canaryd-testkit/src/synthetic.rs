//! OpenMetrics text of synthetic Istio series, for backfilling a real Prometheus with
//! `promtool tsdb create-blocks-from openmetrics` (see [`crate::prometheus`]).
//!
//! The series are the ones canaryd queries: `istio_requests_total` (counter, by
//! `response_code`) and `istio_request_duration_milliseconds` (histogram), both with
//! `reporter="destination"`, `destination_workload_namespace` and `destination_workload`.
//! Traffic is given per scrape step by a closure; counters start at zero at [`SyntheticIstio::start`].
//! Two real-world shapes are optional: proxies that restart (counters drop to zero) and series
//! created lazily, at their first count, as Envoy does for a `response_code` it has not seen.

use std::fmt::Write as _;
use std::time::Duration;

use canaryd_core::observation::{Histogram, WorkloadKey, ISTIO_DEFAULT_BUCKETS_MS};

/// What one workload served in one scrape step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepTraffic {
    /// Successful responses (exported as `response_code="200"`).
    pub ok: u64,
    /// Failed responses (exported as `response_code="503"`).
    pub errors: u64,
    /// Latency of the step's requests. `None` for every step of a workload: no histogram series
    /// for it. Bounds other than the generator's are re-bucketed upwards.
    pub latency: Option<Histogram>,
}

impl StepTraffic {
    /// `ok + errors` requests, all with the same latency (milliseconds), bucketed with `bounds_ms`.
    pub fn uniform(ok: u64, errors: u64, latency_ms: f64, bounds_ms: &[f64]) -> Self {
        let mut h = Histogram::empty(bounds_ms);
        match bounds_ms.iter().position(|b| latency_ms <= *b) {
            Some(i) => h.counts[i] = ok + errors,
            None => h.overflow = ok + errors,
        }
        StepTraffic { ok, errors, latency: Some(h) }
    }
}

/// A histogram in Istio's default buckets holding `count` requests at each latency
/// (milliseconds) of `at`: each in the first bucket whose bound is at least its latency.
pub fn istio_histogram(at: &[(f64, u64)]) -> Histogram {
    let mut h = Histogram::empty(ISTIO_DEFAULT_BUCKETS_MS);
    for &(ms, count) in at {
        match ISTIO_DEFAULT_BUCKETS_MS.iter().position(|b| ms <= *b) {
            Some(i) => h.counts[i] += count,
            None => h.overflow += count,
        }
    }
    h
}

/// Errors of step `k` (1-based) out of `n` requests at `rate`, spread evenly without
/// randomness: steps `1..=k` hold `floor(k · n · rate)` errors in all.
pub fn spread_errors(k: usize, n: u64, rate: f64) -> u64 {
    let upto = |k: usize| (k as f64 * n as f64 * rate).floor() as u64;
    upto(k) - upto(k.saturating_sub(1))
}

/// A synthetic data set: which workloads, from when, how many scrape steps of what length.
#[derive(Debug, Clone)]
pub struct SyntheticIstio {
    /// Time of the first sample; every counter is zero there.
    pub start: jiff::Timestamp,
    /// Scrape interval. Default 10 s.
    pub step: Duration,
    /// Number of steps after `start`; samples are at `start + k * step` for `k` in `0..=steps`.
    pub steps: usize,
    /// The workloads that get series.
    pub workloads: Vec<WorkloadKey>,
    /// Histogram bucket bounds (milliseconds). Default [`ISTIO_DEFAULT_BUCKETS_MS`].
    pub bounds_ms: Vec<f64>,
    /// Also export every series with `reporter="source"` (the client-side proxy's view, same
    /// counts), as a mesh does; queries must not count them twice.
    pub source_reporter: bool,
    /// Retries Istio made of each failing request: the destination's proxy counts every
    /// attempt (`errors × (1 + retries)` 503s), the source's one per request. Default 0.
    pub destination_retries: u64,
    /// `(workload, k)`: the workload's proxy restarts just before step `k`'s traffic, so its
    /// counters start again from zero (the step's own traffic is counted after the restart).
    pub restarts: Vec<(WorkloadKey, usize)>,
    /// Series exist only while their counter is non-zero since the last restart: a 503 series
    /// appears at the first error (its first sample already holds that step's errors), and every
    /// series of a restarted proxy goes missing until it counts again.
    pub lazy_series: bool,
}

impl SyntheticIstio {
    /// A data set with 10 s steps, Istio's default buckets and destination series only.
    pub fn new(start: jiff::Timestamp, steps: usize, workloads: Vec<WorkloadKey>) -> Self {
        SyntheticIstio {
            start,
            step: Duration::from_secs(10),
            steps,
            workloads,
            bounds_ms: ISTIO_DEFAULT_BUCKETS_MS.to_vec(),
            source_reporter: false,
            destination_retries: 0,
            restarts: Vec::new(),
            lazy_series: false,
        }
    }

    /// Whether `workload`'s proxy restarts just before step `k` (see [`SyntheticIstio::restarts`]).
    fn restarts_at(&self, workload: &WorkloadKey, k: usize) -> bool {
        self.restarts.iter().any(|(w, at)| w == workload && *at == k)
    }

    /// Time of sample `k` (`start + k * step`).
    pub fn sample_time(&self, k: usize) -> jiff::Timestamp {
        let offset = jiff::SignedDuration::try_from(self.step.saturating_mul(k as u32)).expect("step fits");
        self.start.checked_add(offset).expect("timestamp in range")
    }

    /// Time of the last sample.
    pub fn end(&self) -> jiff::Timestamp {
        self.sample_time(self.steps)
    }

    /// The OpenMetrics text. `traffic(workload, k, t)` gives what `workload` served in step `k`
    /// (`1..=steps`), the interval `(t - step, t]`; it is called once per workload and step.
    pub fn to_openmetrics(
        &self,
        mut traffic: impl FnMut(&WorkloadKey, usize, jiff::Timestamp) -> StepTraffic,
    ) -> String {
        // Families must not interleave, so every step's traffic is gathered before writing.
        let table: Vec<Vec<StepTraffic>> = self
            .workloads
            .iter()
            .map(|w| (1..=self.steps).map(|k| traffic(w, k, self.sample_time(k))).collect())
            .collect();
        let reporters: &[&str] =
            if self.source_reporter { &["destination", "source"] } else { &["destination"] };
        let times: Vec<String> = (0..=self.steps).map(|k| om_timestamp(self.sample_time(k))).collect();
        let mut out = String::new();

        out.push_str("# TYPE istio_requests counter\n");
        for reporter in reporters {
            for (w, steps) in self.workloads.iter().zip(&table) {
                let attempts = if *reporter == "destination" { 1 + self.destination_retries } else { 1 };
                for (code, pick) in
                    [("200", (|s: &StepTraffic| s.ok) as fn(&StepTraffic) -> u64), ("503", |s| s.errors)]
                {
                    let per = if code == "503" { attempts } else { 1 };
                    let labels = labels(reporter, w, &[("response_code", code)]);
                    let mut total = 0u64;
                    for (k, time) in times.iter().enumerate() {
                        if k > 0 {
                            if self.restarts_at(w, k) {
                                total = 0;
                            }
                            total += pick(&steps[k - 1]) * per;
                        }
                        if !self.lazy_series || total > 0 {
                            let _ = writeln!(out, "istio_requests_total{{{labels}}} {total} {time}");
                        }
                    }
                }
            }
        }

        out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
        let le: Vec<String> = self.bounds_ms.iter().map(|b| format!("{b}")).collect();
        for reporter in reporters {
            for (w, steps) in self.workloads.iter().zip(&table) {
                if steps.iter().all(|s| s.latency.is_none()) {
                    continue;
                }
                let labels = labels(reporter, w, &[]);
                let mut cumulative = Histogram::empty(&self.bounds_ms);
                let mut sum_ms = 0.0;
                for (k, time) in times.iter().enumerate() {
                    if k > 0 && self.restarts_at(w, k) {
                        cumulative = Histogram::empty(&self.bounds_ms);
                        sum_ms = 0.0;
                    }
                    if let Some(h) = k.checked_sub(1).and_then(|i| steps[i].latency.as_ref()) {
                        cumulative.add(h);
                        sum_ms += approximate_sum_ms(h);
                    }
                    if self.lazy_series && cumulative.total() == 0 {
                        continue;
                    }
                    let mut running = 0u64;
                    for (bound, count) in le.iter().zip(&cumulative.counts) {
                        running += count;
                        let _ = writeln!(
                            out,
                            "istio_request_duration_milliseconds_bucket{{{labels},le=\"{bound}\"}} {running} {time}"
                        );
                    }
                    let total = cumulative.total();
                    let _ = writeln!(
                        out,
                        "istio_request_duration_milliseconds_bucket{{{labels},le=\"+Inf\"}} {total} {time}"
                    );
                    let _ =
                        writeln!(out, "istio_request_duration_milliseconds_count{{{labels}}} {total} {time}");
                    let _ =
                        writeln!(out, "istio_request_duration_milliseconds_sum{{{labels}}} {sum_ms} {time}");
                }
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

fn labels(reporter: &str, w: &WorkloadKey, extra: &[(&str, &str)]) -> String {
    let mut s = format!(
        r#"reporter="{reporter}",destination_workload_namespace="{}",destination_workload="{}""#,
        om_escape(&w.namespace),
        om_escape(&w.workload)
    );
    for (k, v) in extra {
        let _ = write!(s, r#",{k}="{}""#, om_escape(v));
    }
    s
}

/// OpenMetrics label values escape backslash, double quote and newline.
fn om_escape(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

/// OpenMetrics timestamps are Unix seconds (fractions allowed).
fn om_timestamp(t: jiff::Timestamp) -> String {
    let ms = t.as_millisecond();
    if ms.rem_euclid(1000) == 0 {
        ms.div_euclid(1000).to_string()
    } else {
        format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
    }
}

/// The `_sum` series is not used by canaryd; each request is counted at its bucket's upper
/// bound (the last finite bound for overflow) so the value is plausible and monotonic.
fn approximate_sum_ms(h: &Histogram) -> f64 {
    let last = h.bounds_ms.last().copied().unwrap_or(0.0);
    h.bounds_ms.iter().zip(&h.counts).map(|(b, c)| b * *c as f64).sum::<f64>() + last * h.overflow as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_counters_from_zero_and_cumulative_buckets_then_eof() {
        let start = jiff::Timestamp::from_second(1_735_689_600).unwrap();
        let mut data = SyntheticIstio::new(start, 2, vec![WorkloadKey::new("ns", "w")]);
        data.bounds_ms = vec![10.0, 100.0];
        let text = data
            .to_openmetrics(|_, k, _| StepTraffic::uniform(10 * k as u64, k as u64, 50.0, &[10.0, 100.0]));
        let ok = r#"istio_requests_total{reporter="destination",destination_workload_namespace="ns",destination_workload="w",response_code="200"}"#;
        assert!(
            text.contains(&format!("{ok} 0 1735689600\n{ok} 10 1735689610\n{ok} 30 1735689620\n")),
            "{text}"
        );
        assert!(text.contains(r#"le="100"} 33 1735689620"#), "{text}");
        assert!(text.contains(r#"le="+Inf"} 33 1735689620"#));
        assert!(text.starts_with("# TYPE istio_requests counter\n") && text.ends_with("# EOF\n"));
    }

    #[test]
    fn lazy_series_appear_at_their_first_count_and_restarts_drop_to_zero() {
        let start = jiff::Timestamp::from_second(1_735_689_600).unwrap();
        let w = WorkloadKey::new("ns", "w");
        let mut data = SyntheticIstio::new(start, 3, vec![w.clone()]);
        data.lazy_series = true;
        data.restarts = vec![(w, 3)];
        // Errors only in step 2; the restart before step 3 drops every counter.
        let text =
            data.to_openmetrics(|_, k, _| StepTraffic { ok: 5, errors: (k == 2) as u64, latency: None });
        let series = |code: &str| {
            let prefix = format!(
                r#"istio_requests_total{{reporter="destination",destination_workload_namespace="ns",destination_workload="w",response_code="{code}"}} "#
            );
            text.lines().filter_map(|l| l.strip_prefix(&prefix)).map(str::to_string).collect::<Vec<_>>()
        };
        assert_eq!(series("200"), ["5 1735689610", "10 1735689620", "5 1735689630"], "{text}");
        assert_eq!(series("503"), ["1 1735689620"], "{text}");
    }
}
