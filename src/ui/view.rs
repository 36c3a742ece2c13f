//! What the dashboard's pages show, as data: the same structures are rendered to HTML
//! (`render.rs`) and serialised as the JSON answer. Pure except [`chart`], which asks the
//! metrics source.

use super::Known;
use crate::alert::message::check_lines;
use crate::backtest::{self, ChartInput, ChartPoint, Marker, SideSummary};
use crate::engine::{self, Phase, RolloutRecord, RolloutState};
use crate::format::human_secs;
use crate::prometheus::MetricsSource;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Rollouts active, or finished this recently (seconds), are listed first.
const RECENT_SECS: i64 = 24 * 3600;
/// Most points in a chart: longer rollouts are observed in longer windows.
const MAX_POINTS: i64 = 120;
/// Intervals of context the chart shows before a rollout started and after it ended.
const CONTEXT_LOOKS: i64 = 3;

/// `?namespace=` and `?phase=` of the rollouts page (empty: no filter; phase is
/// case-insensitive).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// The rollouts page.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutsPage {
    /// The daemon's clock when the page was made (RFC 3339).
    pub now: String,
    pub filter: Filter,
    /// Recent rollouts first (active, or finished in the last 24 h), most recent first.
    pub rollouts: Vec<RolloutRow>,
}

/// One policy's line on the rollouts page (also the head of its rollout page).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRow {
    pub namespace: String,
    pub name: String,
    pub phase: Phase,
    pub revision: Option<String>,
    /// 1-based step and plan length.
    pub step: usize,
    pub steps: usize,
    /// Percent of the route's traffic on the canary.
    pub canary_weight: u32,
    /// `pass`, `fail (success-rate)`, …
    pub last_verdict: Option<String>,
    pub reason: Option<String>,
    /// `open until …` / `next …`, in the schedule's time zone; `None` without a schedule.
    pub window: Option<String>,
    /// When the phase began (RFC 3339) and how long ago, in seconds and for people.
    pub phase_since: Option<String>,
    pub time_in_phase_secs: Option<i64>,
    pub time_in_phase: Option<String>,
    /// Active, or finished in the last 24 h.
    pub recent: bool,
    /// Why the daemon's last reconcile of this policy failed (the row shows the last state
    /// it knew).
    pub error: Option<String>,
}

/// A rollout's page.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailPage {
    pub now: String,
    pub rollout: RolloutRow,
    pub started: Option<String>,
    pub finished: Option<String>,
    /// The current (or last) rollout's decisions, oldest first.
    pub timeline: Vec<Event>,
    /// The last interval verdict with every check's evidence, the decisive check first.
    pub verdict: Option<VerdictView>,
    pub chart: ChartData,
    /// Finished rollouts of this policy, newest first.
    pub history: Vec<RolloutRecord>,
}

/// One timeline entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub at: String,
    pub kind: String,
    pub message: String,
    /// 1-based step and canary weight right after the event.
    pub step: usize,
    pub weight: u32,
}

/// The last verdict.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerdictView {
    pub verdict: String,
    pub at: String,
    pub checks: Vec<CheckView>,
}

/// One check of the last verdict, formatted as alerts format it, with the raw evidence.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckView {
    pub check: String,
    pub verdict: String,
    pub decisive: bool,
    pub dry_run: bool,
    pub canary: Option<String>,
    pub baseline: Option<String>,
    /// Effect with its anytime-valid confidence interval.
    pub effect: Option<String>,
    pub threshold: Option<String>,
    pub summary: String,
    pub evidence: crate::judge::Evidence,
}

/// The chart's data, or why there is none.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartData {
    /// Why there is no chart (Prometheus unreachable, no rollout yet), when there is none.
    pub unavailable: Option<String>,
    /// Latency quantile shown, e.g. `p99`.
    pub quantile: String,
    pub points: Vec<Point>,
    /// The decision (promote/abort) and when.
    pub decision: Option<Decision>,
    #[serde(skip)]
    pub svg: Option<String>,
}

/// One interval of the chart.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    pub time: String,
    pub step: usize,
    pub weight: u32,
    pub canary: Option<Side>,
    pub baseline: Option<Side>,
}

/// One side's traffic in one interval.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Side {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: Option<f64>,
    /// At the judged quantile, milliseconds.
    pub latency_ms: Option<f64>,
}

/// The decision on the chart.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub at: String,
    pub label: String,
}

/// A 404's body.
#[derive(Debug, Clone, Serialize)]
pub struct NotFound {
    pub error: String,
}

impl ChartData {
    pub fn unavailable(why: &str) -> ChartData {
        ChartData {
            unavailable: Some(why.to_string()),
            quantile: String::new(),
            points: Vec::new(),
            decision: None,
            svg: None,
        }
    }
}

fn rfc(secs: i64) -> String {
    Timestamp::from_second(secs).map(|t| t.to_string()).unwrap_or_default()
}

/// The rollouts page of `known` at `now`.
pub fn rollouts(known: &[Known], filter: &Filter, now: Timestamp) -> RolloutsPage {
    let wanted = |k: &Known| {
        filter.namespace.as_deref().is_none_or(|ns| ns.is_empty() || k.policy.namespace() == ns)
            && filter
                .phase
                .as_deref()
                .is_none_or(|p| p.is_empty() || k.state.phase.as_str().eq_ignore_ascii_case(p))
    };
    let mut rows: Vec<(i64, RolloutRow)> =
        known.iter().filter(|k| wanted(k)).map(|k| (last_activity(&k.state), row(k, now))).collect();
    // Recent first, most recent first; then by namespace and name (the snapshot's order).
    rows.sort_by_key(|(activity, r)| (!r.recent, if r.recent { -activity } else { 0 }));
    RolloutsPage {
        now: now.to_string(),
        filter: filter.clone(),
        rollouts: rows.into_iter().map(|r| r.1).collect(),
    }
}

fn last_activity(s: &RolloutState) -> i64 {
    s.phase_since.or(s.finished).or(s.started).or(s.timeline.last().map(|e| e.at)).unwrap_or(0)
}

/// One policy's row at `now`.
pub fn row(k: &Known, now: Timestamp) -> RolloutRow {
    let s = &k.state;
    let since = s.phase_since.or(match s.phase {
        Phase::Promoted | Phase::Aborted => s.finished,
        Phase::Progressing | Phase::Promoting => s.started,
        _ => None,
    });
    let in_phase = since.map(|t| (now.as_second() - t).max(0));
    let recent = s.phase.is_active()
        || s.phase == Phase::Pending
        || s.finished.is_some_and(|f| now.as_second() - f <= RECENT_SECS);
    let last_verdict = s.last_verdict.as_ref().map(|v| match v.decisive_check() {
        Some(c) if v.verdict != crate::judge::Verdict::Pass => format!("{} ({})", v.verdict, c.check),
        _ => v.verdict.to_string(),
    });
    RolloutRow {
        namespace: k.policy.namespace().to_string(),
        name: k.policy.name().to_string(),
        phase: s.phase,
        revision: s.revision.clone(),
        step: s.step + 1,
        steps: k.policy.plan().len(),
        canary_weight: s.traffic.canary_weight,
        last_verdict,
        reason: s.reason.clone(),
        window: window(k, now),
        phase_since: since.map(rfc),
        time_in_phase_secs: in_phase,
        time_in_phase: in_phase.map(|d| human_secs(d as f64)),
        recent,
        error: k.error.clone(),
    }
}

/// The schedule's current or next window, as `canaryd status` says it.
fn window(k: &Known, now: Timestamp) -> Option<String> {
    let cs = k.policy.schedule()?;
    let tz = cs.time_zone().clone();
    let show = |t: Timestamp| t.to_zoned(tz.clone()).strftime("%a %Y-%m-%d %H:%M %Z").to_string();
    Some(match cs.window_at(now) {
        Some(w) => format!("open until {}", show(w.end)),
        None => match cs.next_windows(now, 1).first() {
            Some(w) => format!("next opens {}", show(w.start)),
            None => "no window ahead".to_string(),
        },
    })
}

/// A rollout's page.
pub fn detail(k: &Known, chart: ChartData, now: Timestamp) -> DetailPage {
    let s = &k.state;
    let timeline = s
        .timeline
        .iter()
        .map(|e| Event {
            at: rfc(e.at),
            kind: e.kind.clone(),
            message: e.message.clone(),
            step: e.step + 1,
            weight: e.weight,
        })
        .collect();
    let verdict = s.last_verdict.as_ref().map(|v| VerdictView {
        verdict: v.verdict.to_string(),
        at: rfc(v.at),
        checks: check_lines(v)
            .into_iter()
            .map(|c| CheckView {
                check: c.name,
                verdict: c.verdict.to_string(),
                decisive: c.decisive,
                dry_run: c.dry_run,
                canary: c.canary,
                baseline: c.baseline,
                effect: c.effect,
                threshold: c.threshold,
                summary: c.summary,
                evidence: c.evidence,
            })
            .collect(),
    });
    DetailPage {
        now: now.to_string(),
        rollout: row(k, now),
        started: s.started.map(rfc),
        finished: s.finished.map(rfc),
        timeline,
        verdict,
        chart,
        history: s.history.iter().rev().cloned().collect(),
    }
}

/// The rollout's chart over `[started, finished]` (or until `now`), observed from `metrics`
/// exactly as the daemon observed it, in windows of the policy's cadence (longer for long
/// rollouts, at most 120 points).
pub async fn chart<M: MetricsSource>(k: &Known, metrics: &M, now: Timestamp) -> ChartData {
    let s = &k.state;
    let Some(started) = s.started else {
        return ChartData::unavailable("no rollout has started yet");
    };
    let cadence = engine::cadence_secs(&k.policy, s).max(1);
    // A little context on both sides: before the canary got traffic, and after the decision.
    let begin = started - CONTEXT_LOOKS * cadence;
    let end = s.finished.map_or(now.as_second(), |f| (f + CONTEXT_LOOKS * cadence).min(now.as_second()));
    let end = end.max(started + cadence);
    let every = cadence.max((end - begin + MAX_POINTS - 1) / MAX_POINTS);
    let (Ok(from), Ok(to)) = (Timestamp::from_second(begin), Timestamp::from_second(end)) else {
        return ChartData::unavailable("the rollout's times are out of range");
    };
    let series = match backtest::observed_series(&k.policy, metrics, from, to, every).await {
        Ok(s) => s,
        Err(e) => return ChartData::unavailable(&format!("Prometheus is unreachable: {e}")),
    };
    // Step and weight during each interval: the timeline's last entry at or before its start.
    let during = |t: i64| {
        let e = s.timeline.iter().rev().find(|e| e.at <= t - every);
        e.map(|e| (e.step + 1, e.weight)).unwrap_or((1, 0))
    };
    let points: Vec<ChartPoint> = series
        .into_iter()
        .map(|(time, canary, baseline)| {
            let (step, weight) = during(time.as_second());
            ChartPoint { time, step, weight, canary, baseline }
        })
        .collect();
    let marker = s.finished.filter(|_| matches!(s.phase, Phase::Promoted | Phase::Aborted)).and_then(|f| {
        let time = Timestamp::from_second(f).ok()?;
        let what = if s.phase == Phase::Aborted { "abort" } else { "promote" };
        let check = s.history.last().and_then(|h| h.failing_check.clone());
        let label = match check {
            Some(c) => format!("{what} ({c}) at {}", time.strftime("%H:%M:%S")),
            None => format!("{what} at {}", time.strftime("%H:%M:%S")),
        };
        Some(Marker { time, label, abort: s.phase == Phase::Aborted })
    });
    let quantile = backtest::quantile_name(k.policy.spec().analysis.latency.quantile);
    let input = ChartInput {
        title: format!("{}: canary vs baseline", k.policy.key()),
        start: from,
        quantile: quantile.clone(),
        points: points.clone(),
        marker: marker.clone(),
    };
    let side = |s: Option<SideSummary>| {
        s.map(|s| Side {
            requests: s.requests,
            errors: s.errors,
            error_rate: s.error_rate,
            latency_ms: s.latency_ms,
        })
    };
    ChartData {
        unavailable: None,
        quantile,
        points: points
            .iter()
            .map(|p| Point {
                time: p.time.to_string(),
                step: p.step,
                weight: p.weight,
                canary: side(p.canary),
                baseline: side(p.baseline),
            })
            .collect(),
        decision: marker.map(|m| Decision { at: m.time.to_string(), label: m.label }),
        svg: Some(backtest::render_chart(&input)),
    }
}
