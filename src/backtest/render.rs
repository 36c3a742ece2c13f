//! Backtest output: the human table and the JSON document.
//!
//! JSON shape (stable): `{"policy", "canary", "baseline", "start", "end", "intervalSeconds",
//! "decision": "promote"|"abort"|"inconclusive", "decisionTime": RFC 3339|null, "step": n
//! (1-based), "failingCheck": name|null, "reason": text|null, "intervals": [{"time", "step",
//! "weight" (percent routed by the plan), "observedShare" (canary share of requests in the
//! data, fraction|null), "verdict", "checks": [{"check", "verdict", "evidence", "dryRun"}]}]}`.
//! Verdicts are lower case; evidence is the judge's `Evidence` (rates as fractions, latencies
//! in ms).

use serde_json::{json, Value};

use super::{Backtest, Decision, IntervalRow};
use crate::format::{ms, pct};
use crate::judge::{CheckResult, Evidence, LATENCY, LATENCY_GUARDRAIL, SUCCESS_RATE, SUCCESS_RATE_GUARDRAIL};

/// The backtest as one JSON document (shape in the module documentation).
pub fn json(b: &Backtest) -> Value {
    json!({
        "policy": b.policy,
        "canary": b.canary.to_string(),
        "baseline": b.baseline.to_string(),
        "start": b.start.to_string(),
        "end": b.end.to_string(),
        "intervalSeconds": b.interval_secs,
        "decision": b.decision.as_str(),
        "decisionTime": b.decision_time.map(|t| t.to_string()),
        "step": b.step,
        "failingCheck": b.failing_check,
        "reason": b.reason,
        "intervals": b.intervals.iter().map(interval_json).collect::<Vec<_>>(),
    })
}

fn interval_json(r: &IntervalRow) -> Value {
    json!({
        "time": r.time.to_string(),
        "step": r.step,
        "weight": r.weight,
        "observedShare": r.observed_share,
        "verdict": r.verdict.as_str(),
        "checks": r.checks.iter().map(|c| json!({
            "check": c.check,
            "verdict": c.verdict.as_str(),
            "evidence": c.evidence,
            "dryRun": c.dry_run,
        })).collect::<Vec<_>>(),
    })
}

/// The human report: a header line, one table row per judged interval, the decision line.
pub fn human(b: &Backtest) -> String {
    let mut out = format!(
        "backtest of {}: canary {} vs baseline {}, {} to {}, judged every {}s\n\n",
        b.policy, b.canary, b.baseline, b.start, b.end, b.interval_secs
    );
    let names: Vec<String> = b.intervals.iter().flat_map(|r| r.checks.iter().map(|c| c.check.clone())).fold(
        Vec::new(),
        |mut acc, n| {
            if !acc.contains(&n) {
                acc.push(n);
            }
            acc
        },
    );
    let mut rows = vec![["TIME", "STEP", "WEIGHT", "SEEN", "VERDICT"]
        .iter()
        .map(|s| s.to_string())
        .chain(names.iter().map(|n| n.to_uppercase()))
        .collect::<Vec<_>>()];
    for r in &b.intervals {
        let mut row = vec![
            r.time.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            format!("{}/{}", r.step, b.steps),
            format!("{}%", r.weight),
            r.observed_share.map(|s| format!("{:.1}%", s * 100.0)).unwrap_or_else(|| "-".into()),
            r.verdict.as_str().to_uppercase(),
        ];
        for n in &names {
            row.push(r.checks.iter().find(|c| &c.check == n).map(cell).unwrap_or_default());
        }
        rows.push(row);
    }
    if b.intervals.is_empty() {
        out.push_str("no interval was judged (the rollout never started in the range)\n");
    } else {
        out.push_str(&crate::format::table(&rows));
    }
    out.push('\n');
    out.push_str(&decision_line(b));
    out.push('\n');
    out
}

/// `abort at 2025-01-01T00:06:00Z, step 1/2: success-rate failed: <summary>`.
pub(crate) fn decision_line(b: &Backtest) -> String {
    let when = b.decision_time.map(|t| format!(" at {t}")).unwrap_or_default();
    let mut line = format!("{}{when}, step {}/{}", b.decision.as_str(), b.step, b.steps);
    match b.decision {
        Decision::Abort => {
            let summary = b
                .intervals
                .last()
                .and_then(|r| r.checks.iter().find(|c| Some(&c.check) == b.failing_check.as_ref()))
                .map(|c| c.evidence.summary.clone());
            match (&b.failing_check, summary) {
                (Some(check), Some(s)) => line.push_str(&format!(": {check} failed: {s}")),
                _ => line.push_str(&format!(": {}", b.reason.as_deref().unwrap_or("aborted"))),
            }
        }
        Decision::Promote => line.push_str(": every step passed"),
        Decision::Inconclusive => line.push_str(": the data ended before a decision"),
    }
    line
}

/// One check's table cell: its verdict and the key numbers of its evidence.
fn cell(c: &CheckResult) -> String {
    let e = &c.evidence;
    let numbers = match c.check.as_str() {
        SUCCESS_RATE => rates(e),
        SUCCESS_RATE_GUARDRAIL => {
            e.canary_value.map(|v| format!("{} (max {})", pct(v), opt_pct(e.threshold)))
        }
        LATENCY => match (e.canary_value, e.baseline_value) {
            (Some(cv), Some(bv)) => Some(format!("{} vs {}{}", ms(cv), ms(bv), effect_pp(e, "slow share "))),
            _ => None,
        },
        LATENCY_GUARDRAIL => {
            e.canary_value.map(|v| format!("{} (max {})", ms(v), e.threshold.map(ms).unwrap_or_default()))
        }
        _ => match (e.canary_value, e.baseline_value) {
            (Some(cv), Some(bv)) => Some(format!("{cv:.4} vs {bv:.4}")),
            (Some(cv), None) => Some(format!("{cv:.4}")),
            _ => None,
        },
    };
    let dry = if c.dry_run { " (dry run)" } else { "" };
    match numbers {
        Some(n) => format!("{} {n}{dry}", c.verdict),
        None => format!("{}{dry}", c.verdict),
    }
}

fn rates(e: &Evidence) -> Option<String> {
    let (cv, bv) = (e.canary_value?, e.baseline_value?);
    Some(format!("{} vs {}{}", pct(cv), pct(bv), effect_pp(e, "")))
}

/// ` (+9.80 pp, CI +7.1..+12.5)` when the evidence has an effect and an interval.
fn effect_pp(e: &Evidence, what: &str) -> String {
    match (e.effect, e.ci_low, e.ci_high) {
        (Some(d), Some(lo), Some(hi)) => {
            format!(" ({what}{:+.2} pp, CI {:+.1}..{:+.1})", d * 100.0, lo * 100.0, hi * 100.0)
        }
        _ => String::new(),
    }
}

fn opt_pct(x: Option<f64>) -> String {
    x.map(pct).unwrap_or_else(|| "-".into())
}
