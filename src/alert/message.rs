//! Rendering an alert into what a person reads: a subject, plain text and HTML. Pure.
//!
//! [`Report::build`] gathers and formats every fact once (policy, release, step and weights,
//! the checks with canary vs baseline numbers, effect and confidence interval, what canaryd
//! did and when, where to look further); [`Report::message`] and the bodies in
//! [`super::payload`] only lay those facts out, so email, chat and JSON never disagree.

use super::link;
use crate::engine::{PendingAlert, RolloutState};
use crate::format::{conf, ms, pct, plain, pp};
use crate::judge::{CheckResult, Evidence, IntervalVerdict, Verdict};
use crate::plan::Traffic;
use crate::policy::{AlertEvent, Policy};

/// What the alert is about beyond the [`PendingAlert`] itself: the release, the step and the
/// routing. The daemon builds it with [`AlertFacts::from_state`] from the state that holds the
/// alert in its outbox.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertFacts {
    /// The canary revision (pod template hash or similar).
    pub revision: Option<String>,
    /// 0-based step the event happened at, when the rollout had started.
    pub step: Option<usize>,
    /// Number of steps in the plan.
    pub steps: usize,
    /// Routing of that step while it ran (for an abort: what was rolled back from).
    pub step_traffic: Option<Traffic>,
    /// Routing after the event (for an abort: stable only).
    pub traffic_now: Traffic,
    /// Stable (baseline) Deployment name, as Istio's `destination_workload` label.
    pub stable_workload: String,
    /// Canary Deployment name.
    pub canary_workload: String,
}

impl AlertFacts {
    /// Facts from the rollout state and the policy's plan; workloads are
    /// [`Policy::workloads`], the names the daemon queried.
    pub fn from_state(policy: &Policy, state: &RolloutState) -> Self {
        let plan = policy.plan();
        let started = state.started.is_some();
        let step = started.then_some(state.step);
        AlertFacts {
            revision: state.revision.clone(),
            step,
            steps: plan.len(),
            step_traffic: step.and_then(|i| plan.get(i)).map(|p| p.traffic.clone()),
            traffic_now: state.traffic.clone(),
            stable_workload: policy.workloads().stable.clone(),
            canary_workload: policy.workloads().canary.clone(),
        }
    }
}

impl AlertFacts {
    /// Facts as recorded in the alert itself when it was decided (revision, step, routing),
    /// so that a later revision cannot relabel it; the plan and workloads come from the policy.
    pub fn from_alert(policy: &Policy, alert: &crate::engine::PendingAlert) -> Self {
        let plan = policy.plan();
        let base = Self::from_state(policy, &RolloutState::default());
        AlertFacts {
            revision: alert.revision.clone(),
            step: alert.step,
            step_traffic: alert.step.and_then(|i| plan.get(i)).map(|p| p.traffic.clone()),
            traffic_now: alert.traffic.clone(),
            ..base
        }
    }
}

/// Rendering settings of the daemon (not of the policy).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RenderOptions {
    /// Base URL of the Prometheus UI for graph links, e.g. `https://prometheus.example`. Without
    /// it the message has no graph link.
    pub prometheus_url: Option<String>,
    /// The dashboard's URL (`--ui-url`): alerts then link to the rollout's page.
    pub ui_url: Option<String>,
}

/// One check, formatted for people.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckLine {
    /// Check name (`success-rate`, `latency`, a custom check's name).
    pub name: String,
    pub verdict: Verdict,
    /// Reported only; never fails the rollout.
    pub dry_run: bool,
    /// This check decided the interval's verdict (the one the alert leads with).
    pub decisive: bool,
    /// Canary value with counts, e.g. `5.10% errors (51 of 1000 requests)`.
    pub canary: Option<String>,
    /// Baseline value with counts.
    pub baseline: Option<String>,
    /// Effect with its confidence interval, e.g. `+5.00 pp (99% CI +3.9..+6.1 pp)`.
    pub effect: Option<String>,
    /// Tolerance or threshold, e.g. `1.00 pp`.
    pub threshold: Option<String>,
    /// The judge's one-line explanation.
    pub summary: String,
    /// The raw evidence (for machine-readable bodies).
    pub evidence: Evidence,
}

/// Everything an alert says, formatted once. Built by [`Report::build`].
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Outbox id of the alert (receivers deduplicate on `(policy, id)`).
    pub id: u64,
    pub event: AlertEvent,
    /// Policy name.
    pub policy: String,
    /// Policy namespace.
    pub namespace: String,
    pub revision: Option<String>,
    /// When the event happened, Unix seconds.
    pub at: i64,
    /// `at` as RFC 3339 in UTC.
    pub at_utc: String,
    /// `at` as RFC 3339 in the schedule's time zone with the zone name, when there is one.
    pub at_local: Option<String>,
    /// The engine's one-line headline.
    pub headline: String,
    /// 1-based step number, plan length and the step's routing, when the rollout had started.
    pub step: Option<(usize, usize, Traffic)>,
    /// Routing after the event.
    pub traffic_now: Traffic,
    /// What canaryd did, in one sentence.
    pub action: String,
    /// Combined verdict of the interval behind the event, if any.
    pub verdict: Option<Verdict>,
    /// Every check of that interval, the decisive one first.
    pub checks: Vec<CheckLine>,
    /// `canaryd status <namespace>/<name>`.
    pub status_command: String,
    /// Prometheus graph of the decisive check's query, canary vs baseline.
    pub graph_link: Option<String>,
    /// The rollout's dashboard page, `<ui-url>/rollouts/<namespace>/<name>`.
    pub dashboard_link: Option<String>,
}

/// A rendered email (or any text channel): subject, plain text and HTML.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertMessage {
    /// One line, no control characters.
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Kebab-case event name, as in policies and the JSON payload.
pub fn event_name(event: AlertEvent) -> &'static str {
    match event {
        AlertEvent::Start => "start",
        AlertEvent::Step => "step",
        AlertEvent::Promote => "promote",
        AlertEvent::Abort => "abort",
        AlertEvent::Inconclusive => "inconclusive",
        AlertEvent::WindowMissed => "window-missed",
        AlertEvent::Stuck => "stuck",
    }
}

fn event_title(event: AlertEvent) -> &'static str {
    match event {
        AlertEvent::Start => "started",
        AlertEvent::Step => "advanced",
        AlertEvent::Promote => "promoted",
        AlertEvent::Abort => "ABORTED",
        AlertEvent::Inconclusive => "held (inconclusive)",
        AlertEvent::WindowMissed => "missed its window",
        AlertEvent::Stuck => "STUCK in promotion",
    }
}

impl Report {
    /// Gathers and formats the facts of `alert`.
    pub fn build(alert: &PendingAlert, policy: &Policy, facts: &AlertFacts, opts: &RenderOptions) -> Report {
        let (at_utc, at_local) = times(alert.at, policy);
        let when = match &at_local {
            Some(local) => format!("{at_utc} ({local})"),
            None => at_utc.clone(),
        };
        let step = facts.step.map(|i| (i + 1, facts.steps, facts.step_traffic.clone().unwrap_or_default()));
        let now = facts.traffic_now.describe();
        let action = match alert.event {
            AlertEvent::Abort => match &step {
                Some((_, _, t)) => format!(
                    "canaryd rolled back: canary traffic went from {} to {now} (all on stable) at {when}.",
                    t.describe()
                ),
                None => format!("canaryd aborted before any traffic reached the canary ({now}) at {when}."),
            },
            AlertEvent::Promote => format!("canaryd promoted the canary (canary {now}) at {when}."),
            AlertEvent::Start => format!("canaryd started the rollout (canary {now}) at {when}."),
            AlertEvent::Step => format!("canaryd advanced the rollout (canary {now}) at {when}."),
            AlertEvent::Inconclusive => {
                format!(
                    "canaryd holds the rollout at canary {now} since {when}: the evidence is inconclusive."
                )
            }
            AlertEvent::WindowMissed => {
                format!(
                    "The schedule window closed at {when}; canaryd holds at canary {now} until the next one."
                )
            }
            AlertEvent::Stuck => format!(
                "The stable Deployment could not roll out the promoted template by {when}; the canary keeps serving (canary {now}) and nothing is routed to the stable's pods until they all run it."
            ),
        };
        let checks = alert.verdict.as_ref().map(check_lines).unwrap_or_default();
        let graph_link = opts.prometheus_url.as_deref().and_then(|base| {
            let check = checks.first()?;
            let q = link::check_query(policy, &check.name)?;
            // An hour of context before the event, and a little after it.
            Some(link::graph_link(base, &q, alert.at + 600, 3600 + 600))
        });
        Report {
            id: alert.id,
            event: alert.event,
            policy: policy.name().to_string(),
            namespace: policy.namespace().to_string(),
            revision: facts.revision.clone(),
            at: alert.at,
            at_utc,
            at_local,
            headline: alert.headline.clone(),
            step,
            traffic_now: facts.traffic_now.clone(),
            action,
            verdict: alert.verdict.as_ref().map(|v| v.verdict),
            checks,
            status_command: format!("canaryd status {}/{}", policy.namespace(), policy.name()),
            graph_link,
            dashboard_link: opts.ui_url.as_deref().map(|base| {
                let (ns, name) =
                    (link::encode_component(policy.namespace()), link::encode_component(policy.name()));
                format!("{}/rollouts/{ns}/{name}", base.trim_end_matches('/'))
            }),
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.policy)
    }

    /// One-line title: `canaryd ABORTED shop/reviews revision 7f9c`.
    pub fn title(&self) -> String {
        let rev = self.revision.as_deref().map(|r| format!(" revision {r}")).unwrap_or_default();
        format!("canaryd {} {}{rev}", event_title(self.event), self.key())
    }

    /// Email subject: title and headline, one line, at most 200 characters.
    pub fn subject(&self) -> String {
        let s = format!("[canaryd] {}: {}", self.title().trim_start_matches("canaryd "), self.headline);
        let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        truncate(&s, 200)
    }

    /// The decisive check, if the event has a verdict.
    pub fn decisive(&self) -> Option<&CheckLine> {
        self.checks.iter().find(|c| c.decisive)
    }

    /// Step as `2/3 (30%)`.
    pub(crate) fn step_text(&self) -> Option<String> {
        self.step.as_ref().map(|(n, of, t)| format!("{n}/{of} (canary {})", t.describe()))
    }

    /// Subject, plain text and HTML.
    pub fn message(&self) -> AlertMessage {
        AlertMessage { subject: self.subject(), text: self.text(), html: self.html() }
    }

    /// The plain-text body.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n\n{}\n\n", self.title(), self.headline);
        let mut field = |k: &str, v: &str| out.push_str(&format!("{k:<10} {v}\n"));
        field("Policy:", &self.key());
        field("Revision:", self.revision.as_deref().unwrap_or("unknown"));
        if let Some(s) = self.step_text() {
            field("Step:", &s);
        }
        field("Traffic:", &format!("canary {} now", self.traffic_now.describe()));
        match &self.at_local {
            Some(local) => field("At:", &format!("{} ({local})", self.at_utc)),
            None => field("At:", &self.at_utc),
        }
        if let Some(v) = self.verdict {
            field("Verdict:", v.as_str());
        }
        out.push('\n');
        out.push_str(&self.action);
        out.push_str("\n\n");
        for c in &self.checks {
            let role = if c.decisive { "Decisive check" } else { "Check" };
            let dry = if c.dry_run { ", dry run" } else { "" };
            out.push_str(&format!("{role}: {} ({}{dry})\n", c.name, c.verdict));
            for (k, v) in c.rows() {
                out.push_str(&format!("  {k:<10} {v}\n"));
            }
            if !c.summary.is_empty() {
                out.push_str(&format!("  {}\n", c.summary));
            }
            out.push('\n');
        }
        out.push_str("Look further:\n");
        out.push_str(&format!("  {}\n", self.status_command));
        if let Some(l) = &self.graph_link {
            out.push_str(&format!("  Prometheus: {l}\n"));
        }
        if let Some(l) = &self.dashboard_link {
            out.push_str(&format!("  Dashboard: {l}\n"));
        }
        out
    }

    /// The HTML body; every value that comes from a policy, a revision or the judge is escaped.
    pub fn html(&self) -> String {
        let e = escape_html;
        let mut rows =
            vec![("Policy", self.key()), ("Revision", self.revision.clone().unwrap_or("unknown".into()))];
        if let Some(s) = self.step_text() {
            rows.push(("Step", s));
        }
        rows.push(("Traffic", format!("canary {} now", self.traffic_now.describe())));
        rows.push((
            "At",
            self.at_local.as_ref().map_or(self.at_utc.clone(), |l| format!("{} ({l})", self.at_utc)),
        ));
        if let Some(v) = self.verdict {
            rows.push(("Verdict", v.as_str().to_string()));
        }
        let mut out = String::from("<!DOCTYPE html>\n<html><body style=\"font-family:sans-serif\">\n");
        out.push_str(&format!(
            "<h2>{}</h2>\n<p><strong>{}</strong></p>\n",
            e(&self.title()),
            e(&self.headline)
        ));
        out.push_str("<table>\n");
        for (k, v) in rows {
            out.push_str(&format!("<tr><th align=\"left\">{k}</th><td>{}</td></tr>\n", e(&v)));
        }
        out.push_str(&format!("</table>\n<p>{}</p>\n", e(&self.action)));
        for c in &self.checks {
            let role = if c.decisive { "Decisive check" } else { "Check" };
            let dry = if c.dry_run { ", dry run" } else { "" };
            out.push_str(&format!("<h3>{role}: {} ({}{dry})</h3>\n<table>\n", e(&c.name), c.verdict));
            for (k, v) in c.rows() {
                out.push_str(&format!("<tr><th align=\"left\">{k}</th><td>{}</td></tr>\n", e(&v)));
            }
            out.push_str("</table>\n");
            if !c.summary.is_empty() {
                out.push_str(&format!("<p>{}</p>\n", e(&c.summary)));
            }
        }
        out.push_str(&format!("<h3>Look further</h3>\n<p><code>{}</code></p>\n", e(&self.status_command)));
        if let Some(l) = &self.graph_link {
            out.push_str(&format!("<p><a href=\"{}\">Prometheus graph</a></p>\n", e(l)));
        }
        if let Some(l) = &self.dashboard_link {
            out.push_str(&format!("<p><a href=\"{}\">Rollout on the canaryd dashboard</a></p>\n", e(l)));
        }
        out.push_str("</body></html>\n");
        out
    }
}

impl CheckLine {
    /// Label/value rows for the fields that apply.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let mut rows = Vec::new();
        for (k, v) in [
            ("canary:", &self.canary),
            ("baseline:", &self.baseline),
            ("effect:", &self.effect),
            ("threshold:", &self.threshold),
        ] {
            if let Some(v) = v {
                rows.push((k, v.clone()));
            }
        }
        rows
    }
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max - 1).collect();
    t.push('…');
    t
}

fn times(at: i64, policy: &Policy) -> (String, Option<String>) {
    let Ok(ts) = jiff::Timestamp::from_second(at) else {
        return (format!("@{at}"), None);
    };
    let utc = ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let local = policy.spec().schedule.as_ref().and_then(|s| {
        let tz = jiff::tz::TimeZone::get(&s.time_zone).ok()?;
        let z = ts.to_zoned(tz);
        Some(format!("{} {}", z.strftime("%Y-%m-%dT%H:%M:%S%:z"), s.time_zone))
    });
    (utc, local)
}

pub(crate) fn check_lines(v: &IntervalVerdict) -> Vec<CheckLine> {
    let decisive = v.decisive_check().map(|c| c.check.clone());
    let mut lines: Vec<CheckLine> =
        v.checks.iter().map(|c| check_line(c, decisive.as_deref() == Some(c.check.as_str()))).collect();
    // Stable sort: the decisive check first, the others in policy order.
    lines.sort_by_key(|l| !l.decisive);
    lines
}

/// How a check's numbers read: the unit of its values, effect and threshold.
enum Unit {
    /// Error rates: values and thresholds are fractions shown as percentages, effects as pp.
    Rate,
    /// Latency: values are milliseconds, effects pp of requests above a bound, tolerance %.
    Latency,
    /// Absolute latency guardrail: values and threshold in milliseconds.
    LatencyMax,
    /// Custom checks: raw numbers, relative effects.
    Raw,
}

fn check_line(c: &CheckResult, decisive: bool) -> CheckLine {
    let ev = &c.evidence;
    let unit = match c.check.as_str() {
        "success-rate" | "success-rate-guardrail" => Unit::Rate,
        "latency" => Unit::Latency,
        "latency-guardrail" => Unit::LatencyMax,
        _ => Unit::Raw,
    };
    let value = |v: f64| match unit {
        Unit::Rate => format!("{} errors", pct(v)),
        Unit::Latency | Unit::LatencyMax => ms(v),
        Unit::Raw => plain(v),
    };
    let counts = |bad: u64, n: u64| match unit {
        _ if n == 0 => String::new(),
        Unit::Rate => format!(" ({bad} of {n} requests)"),
        Unit::Latency => format!(" ({bad} of {n} requests above the compared bound)"),
        Unit::LatencyMax => format!(" ({n} requests)"),
        Unit::Raw => String::new(),
    };
    let side = |v: Option<f64>, bad: u64, n: u64| match v {
        Some(v) => Some(format!("{}{}", value(v), counts(bad, n))),
        None if n > 0 => Some(format!("{n} requests")),
        None => None,
    };
    let effect_one = |x: f64| match unit {
        Unit::Raw => format!("{:+.1}%", x * 100.0),
        _ => pp(x),
    };
    let effect = ev.effect.map(|x| {
        let mut s = effect_one(x);
        if let (Some(lo), Some(hi)) = (ev.ci_low, ev.ci_high) {
            let label = ev.confidence.map_or("CI".to_string(), |c| format!("{} CI", conf(c)));
            s.push_str(&format!(" ({label} {} to {})", effect_one(lo), effect_one(hi)));
        }
        s
    });
    let threshold = ev.threshold.map(|t| match unit {
        Unit::Rate if c.check == "success-rate" => format!("{} (tolerance)", pp(t).trim_start_matches('+')),
        Unit::Rate => format!("{} (maximum error rate)", pct(t)),
        Unit::Latency => format!("{:.0}% slower at most (tolerance)", t * 100.0),
        Unit::LatencyMax => format!("{} (maximum)", ms(t)),
        Unit::Raw => plain(t),
    });
    CheckLine {
        name: c.check.clone(),
        verdict: c.verdict,
        dry_run: c.dry_run,
        decisive,
        canary: side(ev.canary_value, ev.canary_bad, ev.canary_requests),
        baseline: side(ev.baseline_value, ev.baseline_bad, ev.baseline_requests),
        effect,
        threshold,
        summary: ev.summary.clone(),
        evidence: ev.clone(),
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
