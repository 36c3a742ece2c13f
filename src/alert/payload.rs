//! Webhook bodies: canaryd's versioned generic JSON, Slack and Microsoft Teams. Pure.
//!
//! # Generic JSON payload, `canaryd.io/alert/v1`
//!
//! POSTed with `Content-Type: application/json`. When the channel has a signing secret, the
//! request carries `X-Canaryd-Signature: sha256=<hex HMAC-SHA256 of the raw body>`; receivers
//! should compare it in constant time against their own HMAC of the bytes received. The same
//! alert may arrive twice (a crash between sending and recording the delivery): deduplicate on
//! `(namespace, policy, id)`.
//!
//! ```json
//! {
//!   "version": "canaryd.io/alert/v1",
//!   "id": 7,
//!   "event": "abort",
//!   "policy": "reviews",
//!   "namespace": "shop",
//!   "revision": "7f9c2d",
//!   "at": "2024-03-10T01:14:00Z",
//!   "atLocal": "2024-03-10T02:14:00+01:00 Europe/Berlin",
//!   "headline": "aborted at step 2/3 (30%): success-rate failed",
//!   "step": { "number": 2, "of": 3, "traffic": { "canaryWeight": 30 } },
//!   "traffic": { "canaryWeight": 0 },
//!   "action": "canaryd rolled back: canary traffic went from 30% to 0% (all on stable) at …",
//!   "verdict": {
//!     "verdict": "fail",
//!     "checks": [
//!       {
//!         "check": "success-rate",
//!         "verdict": "fail",
//!         "decisive": true,
//!         "dryRun": false,
//!         "evidence": {
//!           "canaryRequests": 1000, "baselineRequests": 2000,
//!           "canaryBad": 51, "baselineBad": 2,
//!           "canaryValue": 0.051, "baselineValue": 0.001,
//!           "effect": 0.05, "ciLow": 0.039, "ciHigh": 0.061, "confidence": 0.99,
//!           "threshold": 0.01, "statistic": 6.2,
//!           "summary": "canary 5.10% errors vs baseline 0.10% (+5.00 pp, …) exceeds tolerance 1.00 pp"
//!         }
//!       }
//!     ]
//!   },
//!   "links": {
//!     "status": "canaryd status shop/reviews",
//!     "graph": "https://prometheus.example/graph?g0.expr=…",
//!     "dashboard": "https://canaryd.example/rollouts/shop/reviews"
//!   }
//! }
//! ```
//!
//! - `event`: `start`, `step`, `promote`, `abort`, `inconclusive` or `window-missed`.
//! - `at`: RFC 3339, UTC. `atLocal`: the schedule's time zone, or absent without a schedule.
//! - `revision`, `step`, `verdict`, `links.graph`: `null` when unknown or not applicable
//!   (`step` is null for an abort before the rollout started; `verdict` for events without one).
//! - `traffic` / `step.traffic`: `canaryWeight` (percent), and `headerMatch` / `mirrorPercent`
//!   for header-match and mirror steps. `traffic` is the routing after the event.
//! - `evidence`: rates are fractions (0.051 = 5.1%), latencies milliseconds; `effect` is canary
//!   minus baseline (fraction of requests) for built-in checks and canary / baseline − 1 for
//!   custom `compare` checks; `ciLow`/`ciHigh` bound the effect at `confidence`. Fields that do
//!   not apply are `null`.
//!
//! Fields may be added within `v1`; a field is never removed or changes meaning without a new
//! `version`.

use super::message::{event_name, Report};
use serde_json::{json, Value};

/// `version` of the generic JSON payload.
pub const PAYLOAD_VERSION: &str = "canaryd.io/alert/v1";

/// The generic JSON payload (see the module documentation for its shape).
pub(crate) fn generic_json(r: &Report) -> Value {
    let checks: Vec<Value> = r
        .checks
        .iter()
        .map(|c| {
            json!({
                "check": c.name,
                "verdict": c.verdict.as_str(),
                "decisive": c.decisive,
                "dryRun": c.dry_run,
                "evidence": c.evidence,
            })
        })
        .collect();
    let mut v = json!({
        "version": PAYLOAD_VERSION,
        "id": r.id,
        "event": event_name(r.event),
        "policy": r.policy,
        "namespace": r.namespace,
        "revision": r.revision,
        "at": r.at_utc,
        "headline": r.headline,
        "step": r.step.as_ref().map(|(n, of, t)| json!({"number": n, "of": of, "traffic": t})),
        "traffic": r.traffic_now,
        "action": r.action,
        "verdict": r.verdict.map(|v| json!({"verdict": v.as_str(), "checks": checks})),
        "links": {"status": r.status_command, "graph": r.graph_link, "dashboard": r.dashboard_link},
    });
    if let Some(local) = &r.at_local {
        v["atLocal"] = json!(local);
    }
    v
}

/// Escapes Slack mrkdwn control characters (`&`, `<`, `>`), so a policy name cannot become a
/// link or a mention.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A Slack incoming-webhook body: `text` (notification fallback) plus Block Kit blocks.
pub fn slack(r: &Report) -> Value {
    let e = slack_escape;
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Policy*\n{}", e(&r.key()))}),
        json!({"type": "mrkdwn", "text": format!("*Revision*\n{}", e(r.revision.as_deref().unwrap_or("unknown")))}),
    ];
    if let Some(s) = r.step_text() {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Step*\n{}", e(&s))}));
    }
    fields.push(json!({"type": "mrkdwn", "text": format!("*At*\n{}", e(&r.at_utc))}));
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&e(&r.title()), 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}*", e(&r.headline))}}),
        json!({"type": "section", "fields": fields}),
    ];
    for c in &r.checks {
        let mut text = format!("*{}*: {}", e(&c.name), c.verdict);
        for (k, v) in c.rows() {
            text.push_str(&format!("\n{k} {}", e(&v)));
        }
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&text, 3000)}}));
    }
    let mut look = format!("{}\n`{}`", e(&r.action), e(&r.status_command));
    if let Some(l) = &r.graph_link {
        look.push_str(&format!("\n<{}|Prometheus graph>", l.replace('|', "%7C")));
    }
    if let Some(l) = &r.dashboard_link {
        look.push_str(&format!("\n<{}|Dashboard>", l.replace('|', "%7C")));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(&look, 3000)}]}));
    json!({"text": e(&format!("{}: {}", r.title(), r.headline)), "blocks": blocks})
}

/// A Microsoft Teams body: an Adaptive Card in a `message`, as Teams Workflows webhooks take.
pub fn teams(r: &Report) -> Value {
    let mut facts = vec![
        json!({"title": "Policy", "value": r.key()}),
        json!({"title": "Revision", "value": r.revision.as_deref().unwrap_or("unknown")}),
    ];
    if let Some(s) = r.step_text() {
        facts.push(json!({"title": "Step", "value": s}));
    }
    facts.push(json!({"title": "At", "value": r.at_local.clone().unwrap_or_else(|| r.at_utc.clone())}));
    let mut body = vec![
        json!({"type": "TextBlock", "size": "Large", "weight": "Bolder", "wrap": true, "text": r.title()}),
        json!({"type": "TextBlock", "wrap": true, "text": r.headline}),
        json!({"type": "FactSet", "facts": facts}),
        json!({"type": "TextBlock", "wrap": true, "text": r.action}),
    ];
    for c in &r.checks {
        body.push(json!({"type": "TextBlock", "weight": "Bolder", "wrap": true,
            "text": format!("{}: {}", c.name, c.verdict)}));
        let facts: Vec<Value> = c.rows().into_iter().map(|(k, v)| json!({"title": k, "value": v})).collect();
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    body.push(json!({"type": "TextBlock", "wrap": true, "fontType": "Monospace", "text": r.status_command}));
    let actions: Vec<Value> = r
        .graph_link
        .iter()
        .map(|l| json!({"type": "Action.OpenUrl", "title": "Prometheus graph", "url": l}))
        .chain(
            r.dashboard_link
                .iter()
                .map(|l| json!({"type": "Action.OpenUrl", "title": "Dashboard", "url": l})),
        )
        .collect();
    json!({
        "type": "message",
        "summary": r.title(),
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions,
            }
        }]
    })
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        s.chars().take(max - 1).chain(std::iter::once('…')).collect()
    }
}
