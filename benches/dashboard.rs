//! `cargo bench --bench dashboard`: how long the dashboard takes to render its rollouts page
//! for 1,000 policies and one rollout page (with its chart), and how large they are. Each
//! policy's state is a real one: driven through the engine to an abort after a promotion, so
//! its timeline and history are as full as the bounds allow. Printed, not asserted.

use canaryd::engine::{step, Command, Input, RolloutState};
use canaryd::observation::{Histogram, Observation, SideObservation, WorkloadKey, ISTIO_DEFAULT_BUCKETS_MS};
use canaryd::policy::{parse_policy, Policy};
use canaryd::prometheus::{MetricsSource, QueryError};
use canaryd::ui::{detail_html, rollouts_html, Known};
use jiff::Timestamp;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const POLICIES: usize = 1000;
const RUNS: usize = 20;

/// A metrics source that answers every window at once with steady traffic.
struct Steady;

fn side(requests: u64, errors: u64) -> SideObservation {
    let mut latency = Histogram::empty(ISTIO_DEFAULT_BUCKETS_MS);
    latency.counts[6] = requests;
    SideObservation { requests, errors, latency: Some(latency) }
}

impl MetricsSource for Steady {
    async fn observe_sides(
        &self,
        keys: &[WorkloadKey],
        _end: Timestamp,
        window: Duration,
    ) -> Result<HashMap<WorkloadKey, SideObservation>, QueryError> {
        let n = window.as_secs().max(1) * 10;
        Ok(keys.iter().map(|k| (k.clone(), side(n, n / 100))).collect())
    }

    async fn query_scalar(&self, _promql: &str, _at: Timestamp) -> Result<f64, QueryError> {
        Ok(1.0)
    }
}

fn policy(i: usize) -> Policy {
    let text = format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: svc-{i}, namespace: team-{}}}\n\
         spec:\n  target: {{virtualService: svc-{i}, stable: {{subset: v1}}, canary: {{subset: v2}}}}\n  \
         steps: [{{weight: 10, bake: 2m}}, {{weight: 30, bake: 2m}}, {{weight: 60, bake: 2m}}]\n  \
         analysis: {{interval: 1m}}\n",
        i % 25
    );
    parse_policy("bench.yaml", &text).expect("valid policy")
}

/// A state with a full history (12 releases, promoted or aborted) and a four-hour rollout in
/// progress.
fn state(p: &Policy, t0: i64) -> RolloutState {
    let mut s = RolloutState::default();
    let mut t = t0;
    let at = |t: i64| Timestamp::from_second(t).unwrap();
    for release in 0..12 {
        s = step(p, &s, Input::NewRevision(format!("rev-{release:04}")), at(t)).state;
        for _ in 0..7 {
            t += 60;
            let obs = Observation {
                start: t - 60,
                end: t,
                canary: side(2000, if release % 3 == 2 { 200 } else { 2 }),
                baseline: side(8000, 8),
                custom: vec![],
            };
            s = step(p, &s, Input::Observed(Ok(obs)), at(t)).state;
        }
        if release % 3 == 1 {
            s = step(p, &s, Input::Command(Command::Abort("bad release".into())), at(t)).state;
        }
        t += 3600;
    }
    // The current rollout: four hours at a traffic too low to decide (extended, then held),
    // so the chart has its full 120 points.
    s = step(p, &s, Input::NewRevision("rev-current".into()), at(t)).state;
    for _ in 0..240 {
        t += 60;
        let obs =
            Observation { start: t - 60, end: t, canary: side(20, 0), baseline: side(80, 0), custom: vec![] };
        s = step(p, &s, Input::Observed(Ok(obs)), at(t)).state;
    }
    s
}

fn main() {
    let now = Timestamp::now();
    let t0 = now.as_second() - 60 * 3600;
    let base = policy(0);
    let template = state(&base, t0);
    let known: Vec<Known> = (0..POLICIES)
        .map(|i| Known { policy: policy(i), state: template.clone(), seen: now.as_second(), error: None })
        .collect();
    let annotation = serde_json::to_string(&template).unwrap().len();
    println!(
        "state annotation: {annotation} bytes ({} timeline entries, {} history records)",
        template.timeline.len(),
        template.history.len()
    );

    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        size = rollouts_html(&known, now).len();
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "rollouts page, {POLICIES} policies: median {:?}, max {:?}, {size} bytes",
        times[RUNS / 2],
        times[RUNS - 1]
    );

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        size = rt.block_on(detail_html(&known[0], &Steady, now)).len();
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "rollout page (chart included): median {:?}, max {:?}, {size} bytes",
        times[RUNS / 2],
        times[RUNS - 1]
    );
}
