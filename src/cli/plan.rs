//! `canaryd plan POLICY --rps N`: the steps as a table, what each needs for a verdict at the
//! given traffic, and the next schedule windows.

use super::output::Format;
use crate::format::{human_secs, table};
use crate::plan;
use crate::policy::{self, Policy, PromotionMode};
use jiff::Timestamp;
use serde_json::json;
use std::path::Path;

/// Loads and validates one policy file, printing located errors; `Err(exit code)` on failure.
pub fn load(path: &Path) -> Result<Policy, i32> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: cannot read {name}: {e}");
        2
    })?;
    policy::parse_policy(&name, &text).map_err(|d| {
        eprintln!("{d}");
        1
    })
}

/// One row of the plan.
struct Row {
    step: usize,
    routing: String,
    bake_secs: u64,
    needed: u64,
    secs_to_verdict: f64,
    /// Canary requests (and time) expected to abort a canary twice the tolerance worse.
    to_catch: u64,
    secs_to_catch: f64,
}

/// Seconds for `requests` canary requests at `canary_rps`, rounded up to whole looks.
fn secs_for(requests: u64, canary_rps: f64, interval: f64) -> f64 {
    if canary_rps > 0.0 && requests < u64::MAX {
        (requests as f64 / canary_rps / interval).ceil().max(1.0) * interval
    } else {
        f64::INFINITY
    }
}

pub fn run(path: &Path, rps: f64, baseline_error_rate: f64, now: Option<&str>, format: Format) -> i32 {
    if !(rps.is_finite() && rps >= 0.0) {
        eprintln!("error: --rps {rps} is not a request rate\n  give requests per second of the route, e.g. --rps 20");
        return 2;
    }
    let now: Timestamp = match now.map(str::parse).transpose() {
        Ok(t) => t.unwrap_or_else(Timestamp::now),
        Err(e) => {
            eprintln!("error: --now: {e}\n  give an RFC 3339 time such as 2026-11-23T01:00:00Z");
            return 2;
        }
    };
    let policy = match load(path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let analysis = &policy.spec().analysis;
    // `auto` looks at every scrape, unknown until the daemon sees samples: plan with the fallback.
    let interval = analysis.interval.cadence_secs(None) as f64;
    let steps = policy.plan();
    let rows: Vec<Row> = steps
        .iter()
        .map(|s| {
            let share = s.canary_share();
            let needed = crate::judge::requests_for_verdict(analysis, baseline_error_rate, share)
                .max(analysis.min_requests);
            let canary_rps = rps * s.canary_rate();
            let to_catch = crate::judge::requests_to_catch(analysis, baseline_error_rate, share);
            Row {
                step: s.index + 1,
                routing: s.traffic.describe(),
                bake_secs: s.bake.as_secs(),
                needed,
                secs_to_verdict: secs_for(needed, canary_rps, interval),
                to_catch,
                secs_to_catch: secs_for(to_catch, canary_rps, interval),
            }
        })
        .collect();
    let mut warnings = Vec::new();
    let max_ext = u64::from(analysis.on_inconclusive.max_extensions);
    for r in &rows {
        if r.secs_to_verdict > r.bake_secs as f64 {
            let extended = r.bake_secs * (max_ext + 1);
            let tail = if r.secs_to_verdict <= extended as f64 {
                format!("it will be extended to reach a verdict (up to {max_ext} extensions)")
            } else {
                "it cannot reach a verdict even with every extension: raise the bake, the weight or the tolerance".to_string()
            };
            warnings.push(format!(
                "step {}: at {rps} req/s the canary needs {} for {} requests, but the step bakes {}; {tail}",
                r.step,
                human_secs(r.secs_to_verdict),
                r.needed,
                human_secs(r.bake_secs as f64)
            ));
        }
    }
    let windows = policy.schedule().map(|cs| {
        let current = cs.window_at(now);
        let next = cs.next_windows(now, 3);
        (cs, current, next)
    });
    let total = plan::total_bake(steps).as_secs();
    match format {
        Format::Json => {
            let out = json!({
                "policy": policy.key(),
                "rps": rps,
                "steps": rows.iter().map(|r| json!({
                    "step": r.step, "routing": r.routing, "bakeSeconds": r.bake_secs,
                    "requestsNeeded": r.needed,
                    "secondsToVerdict": if r.secs_to_verdict.is_finite() { json!(r.secs_to_verdict) } else { json!(null) },
                    "verdictWithinBake": r.secs_to_verdict <= r.bake_secs as f64,
                    "requestsToCatch2xTolerance": if r.to_catch < u64::MAX { json!(r.to_catch) } else { json!(null) },
                    "secondsToCatch2xTolerance": if r.secs_to_catch.is_finite() { json!(r.secs_to_catch) } else { json!(null) },
                })).collect::<Vec<_>>(),
                "totalBakeSeconds": total,
                "promotion": policy.spec().promotion.mode,
                "windows": windows.as_ref().map(|(_, cur, next)| json!({
                    "current": cur.map(|w| json!({"start": w.start.to_string(), "end": w.end.to_string()})),
                    "next": next.iter().map(|w| json!({"start": w.start.to_string(), "end": w.end.to_string()})).collect::<Vec<_>>(),
                })),
                "warnings": warnings,
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Format::Human => {
            let t = &policy.spec().target;
            println!(
                "{}: VirtualService {}, {} → {}, promotion by {}",
                policy.key(),
                t.virtual_service,
                t.stable.subset,
                t.canary.subset,
                policy.spec().promotion.mode
            );
            println!(
                "judged {} at {}% confidence: errors within {} pp allowed, p{} latency within +{}% allowed{}",
                match analysis.interval.fixed() {
                    Some(every) => format!("every {every}"),
                    None => format!("at every scrape (auto; {} assumed here)", human_secs(interval)),
                },
                analysis.confidence * 100.0,
                analysis.success_rate.tolerance,
                analysis.latency.quantile * 100.0,
                analysis.latency.tolerance,
                if analysis.custom.is_empty() {
                    String::new()
                } else {
                    format!(", {} custom checks", analysis.custom.len())
                }
            );
            println!();
            let mut t = vec![vec![
                "STEP".into(),
                "ROUTING".into(),
                "BAKE".into(),
                "REQS TO PASS".into(),
                format!("TIME AT {rps} RPS"),
                "PASS IN BAKE".into(),
                "REQS TO CATCH 2×TOL".into(),
                "TIME".into(),
            ]];
            for r in &rows {
                t.push(vec![
                    r.step.to_string(),
                    r.routing.clone(),
                    human_secs(r.bake_secs as f64),
                    r.needed.to_string(),
                    human_secs(r.secs_to_verdict),
                    if r.secs_to_verdict <= r.bake_secs as f64 { "yes".into() } else { "NO".into() },
                    if r.to_catch < u64::MAX { r.to_catch.to_string() } else { "-".into() },
                    human_secs(r.secs_to_catch),
                ]);
            }
            let window = policy.spec().promotion.rollback_window.map_or(600.0, |d| d.as_secs() as f64);
            t.push(match policy.spec().promotion.mode {
                // The bake column holds how long the old version stays ready after the switch.
                PromotionMode::BlueGreen => {
                    vec!["→".into(), "switch 100%, old kept ready".into(), human_secs(window)]
                }
                mode => vec!["→".into(), "promote".into(), mode.to_string()],
            });
            print!("{}", table(&t));
            println!("\nshortest rollout: {} of bake", human_secs(total as f64));
            if let Some((cs, current, next)) = &windows {
                let tz = cs.time_zone().clone();
                let fmt = |t: Timestamp| t.to_zoned(tz.clone()).strftime("%a %Y-%m-%d %H:%M %Z").to_string();
                println!("\nschedule windows ({}):", tz.iana_name().unwrap_or("UTC"));
                if let Some(w) = current {
                    println!("  now open   {} – {}", fmt(w.start), fmt(w.end));
                }
                for w in next {
                    println!("  next       {} – {}", fmt(w.start), fmt(w.end));
                }
            } else {
                println!("no schedule: a new revision starts rolling out at once");
            }
            for w in &warnings {
                eprintln!("warning: {w}");
            }
        }
    }
    0
}
