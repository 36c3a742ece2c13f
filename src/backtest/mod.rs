//! `canaryd backtest`: replays a policy's analysis on historical data, interval by interval, as
//! the daemon would have decided — through the real pure engine (`engine::step`) and judge.
//!
//! No cluster is touched: the weights are whatever the data shows. The replay feeds
//! `Input::NewRevision("backtest")` at `start`, then at the daemon's cadence
//! ([`engine::cadence_secs`]: `analysis.interval`, or with `auto` the scrape interval detected
//! from the data) an `Input::Observed` built from [`MetricsSource::observe_sides_with_scrape`]
//! over the window since the last judged interval, until the engine reaches a final phase or
//! the data ends. A query that fails becomes `Input::Observed(Err(..))`, never a Pass.
//!
//! What a backtest cannot know is answered the way that lets the analysis decide: confirm gates
//! open at once, rollback gates stay closed, `pause: true` steps are resumed at once, and copy
//! promotion's stable rollout completes at once. Schedules are honoured at the replayed times.

mod chart;
mod render;

pub use chart::{quantile_name, render as render_chart, svg, ChartInput, ChartPoint, Marker};
pub use render::{human, json};

use jiff::Timestamp;

use crate::engine::{self, Action, Command, Input, Phase, RolloutState, Transition};
use crate::judge::{CheckResult, Verdict};
use crate::observation::{Histogram, Observation, SideObservation};
use crate::policy::{GateKind, Policy};
use crate::prometheus::{self, MetricsSource, QueryError, WorkloadKey};
use crate::promql::TenantLabel;

/// Revision name the backtest rolls out.
pub(crate) const REVISION: &str = "backtest";

/// Why a backtest could not run (exit code 2 in the CLI).
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// `end` is not after `start`.
    #[error("--end {end} is not after --start {start}")]
    EmptyRange { start: Timestamp, end: Timestamp },
    /// Prometheus could not be asked anything at the start of the replay.
    #[error("cannot query Prometheus at the start of the backtest: {0}")]
    Unreachable(QueryError),
}

/// How the replayed rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The engine promoted the canary.
    Promote,
    /// The engine aborted the rollout.
    Abort,
    /// The data ended before the engine decided.
    Inconclusive,
}

impl Decision {
    /// `promote`, `abort` or `inconclusive`, as in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Promote => "promote",
            Decision::Abort => "abort",
            Decision::Inconclusive => "inconclusive",
        }
    }
}

/// One side's traffic in one interval, for tables and charts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SideSummary {
    /// Requests in the interval.
    pub requests: u64,
    /// Failed requests (5xx) in the interval.
    pub errors: u64,
    /// Error rate (fraction 0–1); `None` without requests.
    pub error_rate: Option<f64>,
    /// Interpolated latency of the interval at the policy's judged quantile
    /// (`analysis.latency.quantile`, default p99), milliseconds; `None` without data.
    pub latency_ms: Option<f64>,
}

impl SideSummary {
    /// The summary of one side's observation, latency at quantile `q` (0–1).
    pub fn of(side: &SideObservation, q: f64) -> Self {
        SideSummary {
            requests: side.requests,
            errors: side.errors,
            error_rate: (side.requests > 0)
                .then(|| side.errors.min(side.requests) as f64 / side.requests as f64),
            latency_ms: side.latency.as_ref().and_then(|h| quantile_ms(h, q)),
        }
    }
}

/// One judged interval of the replay.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalRow {
    /// End of the interval (the time the engine judged it).
    pub time: Timestamp,
    /// Step being judged, 1-based.
    pub step: usize,
    /// Canary weight the plan routed during the interval, percent.
    pub weight: u32,
    /// Canary share of the requests the data shows (fraction 0–1); `None` without requests.
    pub observed_share: Option<f64>,
    /// The interval's combined verdict.
    pub verdict: Verdict,
    /// Every check's verdict with its evidence.
    pub checks: Vec<CheckResult>,
    /// The canary's traffic in the interval (`None` when Prometheus could not be read).
    pub canary: Option<SideSummary>,
    /// The baseline's traffic in the interval.
    pub baseline: Option<SideSummary>,
}

/// The result of a backtest.
#[derive(Debug, Clone, PartialEq)]
pub struct Backtest {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// The canary and baseline workloads observed.
    pub canary: WorkloadKey,
    pub baseline: WorkloadKey,
    /// Replay range and analysis interval (seconds; with `auto`, the scrape interval the data
    /// showed, else the fallback).
    pub start: Timestamp,
    pub end: Timestamp,
    pub interval_secs: i64,
    /// Number of steps in the plan.
    pub steps: usize,
    /// The judged latency quantile (`analysis.latency.quantile`, 0–1): the one the latency
    /// figures of the intervals are at.
    pub quantile: f64,
    pub decision: Decision,
    /// When the engine promoted or aborted; `None` when inconclusive.
    pub decision_time: Option<Timestamp>,
    /// Step (1-based) at the decision, or where the replay stopped.
    pub step: usize,
    /// The check that failed (or could not be read) on abort.
    pub failing_check: Option<String>,
    /// The engine's reason for its final phase, if it gave one.
    pub reason: Option<String>,
    pub intervals: Vec<IntervalRow>,
}

/// Replays `policy` from `start` to `end` against `metrics`. Errs only when the range is empty
/// or the source cannot answer a trivial query at `start`; later query errors are judged
/// (`Input::Observed(Err)`), as the daemon does.
pub async fn run<M: MetricsSource>(
    policy: &Policy,
    metrics: &M,
    start: Timestamp,
    end: Timestamp,
) -> Result<Backtest, BacktestError> {
    if end <= start {
        return Err(BacktestError::EmptyRange { start, end });
    }
    metrics.query_scalar("vector(1)", start).await.map_err(BacktestError::Unreachable)?;
    let (canary, baseline) = prometheus::workload_keys(policy);
    let plan_len = policy.plan().len();
    let q = policy.spec().analysis.latency.quantile;

    let mut state = RolloutState::default();
    feed(policy, &mut state, Input::NewRevision(REVISION.into()), start);
    let mut intervals = Vec::new();
    let mut t = start.as_second();
    while !is_final(state.phase) {
        let interval = engine::cadence_secs(policy, &state);
        t += interval;
        if t > end.as_second() {
            break;
        }
        let now = Timestamp::from_second(t).unwrap_or(end);
        match state.phase {
            Phase::Progressing | Phase::Paused => {
                let from = state.observed_until.unwrap_or(t - interval);
                let (step, weight) = (state.step + 1, state.traffic.canary_weight);
                let observed = match observe(policy, metrics, &canary, &baseline, from, now).await {
                    Ok((observation, Some(scrape))) => {
                        feed(policy, &mut state, Input::ScrapeInterval(scrape), now);
                        Ok(observation)
                    }
                    other => other.map(|(observation, _)| observation),
                };
                let sides = observed
                    .as_ref()
                    .ok()
                    .map(|o| (SideSummary::of(&o.canary, q), SideSummary::of(&o.baseline, q)));
                feed(policy, &mut state, Input::Observed(observed), now);
                // Only intervals the engine judged (it ignores evidence outside a window reset).
                if let Some(v) = state.last_verdict.as_ref().filter(|v| v.at == t) {
                    let share = sides.and_then(|(c, b)| {
                        let total = c.requests + b.requests;
                        (total > 0).then(|| c.requests as f64 / total as f64)
                    });
                    intervals.push(IntervalRow {
                        time: now,
                        step,
                        weight,
                        observed_share: share,
                        verdict: v.verdict,
                        checks: v.checks.clone(),
                        canary: sides.map(|s| s.0),
                        baseline: sides.map(|s| s.1),
                    });
                }
            }
            _ => feed(policy, &mut state, Input::Tick, now),
        }
    }

    let decision = match state.phase {
        Phase::Promoted => Decision::Promote,
        Phase::Aborted => Decision::Abort,
        _ => Decision::Inconclusive,
    };
    let failing_check = match decision {
        Decision::Abort => state
            .last_verdict
            .as_ref()
            .filter(|v| matches!(v.verdict, Verdict::Fail | Verdict::Error))
            .and_then(|v| v.decisive_check())
            .map(|c| c.check.clone()),
        _ => None,
    };
    Ok(Backtest {
        policy: policy.key(),
        canary,
        baseline,
        start,
        end,
        interval_secs: engine::cadence_secs(policy, &state),
        steps: plan_len,
        quantile: q,
        decision,
        decision_time: match decision {
            Decision::Inconclusive => None,
            _ => state.finished.and_then(|s| Timestamp::from_second(s).ok()),
        },
        step: state.step + 1,
        failing_check,
        reason: state.reason.clone(),
        intervals,
    })
}

fn is_final(phase: Phase) -> bool {
    matches!(phase, Phase::Promoted | Phase::Aborted)
}

/// Applies an input, then answers what a backtest can answer at once: gates, `pause` steps
/// and the stable rollout of copy promotion.
fn feed(policy: &Policy, state: &mut RolloutState, input: Input, now: Timestamp) {
    let mut queue = vec![input];
    let workloads = backtest_workloads();
    // Bounded: each answer moves the rollout forward; the bound guards against a loop.
    for _ in 0..32 {
        let Some(input) = queue.pop() else { return };
        let Transition { state: next, actions, .. } =
            engine::step_with(policy, state, input, now, Some(&workloads));
        *state = next;
        for action in actions {
            match action {
                Action::CallGate(GateKind::Rollback) => {}
                Action::CallGate(kind) => {
                    queue.push(Input::Gate { kind, open: true, detail: "assumed open in a backtest".into() })
                }
                _ => {}
            }
        }
        if state.phase == Phase::Promoting && queue.is_empty() {
            queue.push(Input::Tick);
        }
        if state.phase == Phase::Paused && state.step_passed && queue.is_empty() {
            queue.push(Input::Command(Command::Resume));
        }
    }
}

/// What a backtest assumes of the Deployments (there is no cluster): the canary is ready, and
/// in copy promotion the stable runs the promoted template at once.
fn backtest_workloads() -> crate::workload::WorkloadReport {
    use crate::workload::{Capacity, RolloutStatus, WorkloadReport};
    WorkloadReport {
        canary_status: Some(RolloutStatus::Complete),
        canary: Capacity { desired: 1, available: 1 },
        stable_replicas: 1,
        copy_target: Some("backtest".into()),
        stable_template: Some("backtest".into()),
        stable_status: Some(RolloutStatus::Complete),
    }
}

/// Canary and baseline per window of `every` seconds over `[start, end]`, observed exactly as
/// the daemon and a backtest observe (the same [`prometheus::observation`] of the same
/// queries), latency at the policy's judged quantile: the dashboard's chart of a rollout.
/// Errs when the source cannot be asked at all; a window that cannot be read has no sides.
pub async fn observed_series<M: MetricsSource>(
    policy: &Policy,
    metrics: &M,
    start: Timestamp,
    end: Timestamp,
    every: i64,
) -> Result<Vec<(Timestamp, Option<SideSummary>, Option<SideSummary>)>, QueryError> {
    use futures::StreamExt;
    metrics.query_scalar("vector(1)", end).await?;
    let (canary, baseline) = prometheus::workload_keys(policy);
    let q = policy.spec().analysis.latency.quantile;
    let every = every.max(1);
    let ends: Vec<i64> =
        (1..).map(|k| start.as_second() + k * every).take_while(|t| *t <= end.as_second()).collect();
    let (canary, baseline) = (&canary, &baseline);
    let points = futures::stream::iter(ends)
        .map(|t| async move {
            let now = Timestamp::from_second(t).unwrap_or(end);
            let sides = observe(policy, metrics, canary, baseline, t - every, now).await.ok();
            let summary =
                sides.map(|(o, _)| (SideSummary::of(&o.canary, q), SideSummary::of(&o.baseline, q)));
            (now, summary.map(|s| s.0), summary.map(|s| s.1))
        })
        .buffered(4)
        .collect()
        .await;
    Ok(points)
}

/// One observation over `[from, now)`, built by the daemon's own code, and the scrape
/// interval its samples show.
async fn observe<M: MetricsSource>(
    policy: &Policy,
    metrics: &M,
    canary: &WorkloadKey,
    baseline: &WorkloadKey,
    from: i64,
    now: Timestamp,
) -> Result<(Observation, Option<std::time::Duration>), String> {
    let window = std::time::Duration::from_secs(u64::try_from((now.as_second() - from).max(1)).unwrap_or(1));
    let looked = metrics
        .observe_sides_with_scrape(&[canary.clone(), baseline.clone()], now, window)
        .await
        .map_err(|e| e.to_string())?;
    // Backtests run policy files (operator's, not confined); a resource's policy would be
    // confined on the default label.
    let observation =
        prometheus::observation(metrics, policy, &looked.sides, from, now, &TenantLabel::default()).await;
    Ok((observation, looked.scrape_interval(canary, baseline)))
}

/// The interpolated `q`-quantile of a histogram in milliseconds, as Prometheus'
/// `histogram_quantile` computes it (the last finite bound when it lies in `+Inf`).
pub(crate) fn quantile_ms(h: &Histogram, q: f64) -> Option<f64> {
    let total = h.total();
    if total == 0 || h.bounds_ms.is_empty() {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (bound, count) in h.bounds_ms.iter().zip(&h.counts) {
        let upto = below + count;
        if upto as f64 >= rank && *count > 0 {
            let within = (rank - below as f64) / *count as f64;
            return Some(lower + (bound - lower) * within);
        }
        below = upto;
        lower = *bound;
    }
    h.bounds_ms.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        let h = Histogram { bounds_ms: vec![10.0, 100.0], counts: vec![50, 50], overflow: 0 };
        assert_eq!(quantile_ms(&h, 0.5), Some(10.0));
        assert!((quantile_ms(&h, 0.99).unwrap() - 98.2).abs() < 1e-9);
        let slow = Histogram { bounds_ms: vec![10.0], counts: vec![0], overflow: 5 };
        assert_eq!(quantile_ms(&slow, 0.99), Some(10.0));
        assert_eq!(quantile_ms(&Histogram::empty(&[1.0]), 0.5), None);
    }
}
