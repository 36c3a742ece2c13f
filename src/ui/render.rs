//! The dashboard's HTML: one inline stylesheet, inline SVG, no scripts and no external assets
//! (air-gapped clusters). Every value that came from a policy, a revision, a reason or an
//! evidence summary is escaped.

use super::view::{ChartData, DetailPage, NotFound, RolloutRow, RolloutsPage};
use crate::alert::message::escape_html as e;
use crate::engine::Phase;
use std::fmt::Write as _;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse;font-size:.92em}th,td{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}\
th{background:#f4f4f4}tr.old td{color:#777}a{color:#1f5fa8}\
.phase{font-weight:600;padding:.1em .45em;border-radius:.3em;background:#eee}\
.Progressing,.Promoting{background:#dbeafe}.Paused,.Pending{background:#fef3c7}\
.Promoted{background:#dcfce7}.Aborted{background:#fee2e2}\
.num{text-align:right;font-variant-numeric:tabular-nums}.note{color:#666}\
.decisive td{background:#fff7e6}.error{color:#b91c1c}form{margin:.5em 0 1em}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{}</title><style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n",
        e(title)
    )
}

fn phase(p: Phase) -> String {
    format!("<span class=\"phase {0}\">{0}</span>", p.as_str())
}

fn opt(v: &Option<String>) -> String {
    v.as_deref().map(e).unwrap_or_default()
}

/// `/`: every rollout.
pub fn rollouts(p: &RolloutsPage) -> String {
    let mut b = String::new();
    b.push_str("<h1>canaryd rollouts</h1>\n");
    let ns = p.filter.namespace.as_deref().unwrap_or_default();
    let _ = write!(
        b,
        "<form method=\"get\" action=\"/\">namespace <input name=\"namespace\" value=\"{}\"> phase <select name=\"phase\">",
        e(ns)
    );
    for ph in ["", "Pending", "Progressing", "Paused", "Promoting", "Promoted", "Aborted", "Idle"] {
        let selected = p.filter.phase.as_deref().unwrap_or_default().eq_ignore_ascii_case(ph);
        let _ = write!(
            b,
            "<option value=\"{ph}\"{}>{}</option>",
            if selected { " selected" } else { "" },
            if ph.is_empty() { "any" } else { ph }
        );
    }
    b.push_str("</select> <button type=\"submit\">filter</button></form>\n");
    if p.rollouts.is_empty() {
        b.push_str("<p class=\"note\">No policy matches.</p>\n");
    } else {
        b.push_str(
            "<table id=\"rollouts\"><tr><th>namespace</th><th>policy</th><th>phase</th><th>step</th>\
<th>canary</th><th>last verdict</th><th>in phase for</th><th>schedule</th><th>revision</th><th>reason</th></tr>\n",
        );
        for r in &p.rollouts {
            row(&mut b, r);
        }
        b.push_str("</table>\n");
    }
    let _ = writeln!(
        b,
        "<p class=\"note\">As of {} (the daemon's last reconcile). Active rollouts and those finished in the last 24 h first. \
Read-only; the same data as JSON with <code>Accept: application/json</code>.</p>",
        e(&p.now)
    );
    page("canaryd rollouts", &b)
}

fn row(b: &mut String, r: &RolloutRow) {
    let href = format!("/rollouts/{}/{}", encode(&r.namespace), encode(&r.name));
    let _ = writeln!(
        b,
        "<tr class=\"{}\"><td>{}</td><td><a href=\"{}\">{}</a></td><td>{}</td><td class=\"num\">{}/{}</td>\
<td class=\"num\">{}%</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
        if r.recent { "recent" } else { "old" },
        e(&r.namespace),
        e(&href),
        e(&r.name),
        phase(r.phase),
        r.step,
        r.steps,
        r.canary_weight,
        opt(&r.last_verdict),
        opt(&r.time_in_phase),
        opt(&r.window),
        opt(&r.revision),
        reason(r),
    );
}

/// The reason, and the last reconcile's error in red when there is one.
fn reason(r: &RolloutRow) -> String {
    let mut out = opt(&r.reason);
    if let Some(err) = &r.error {
        let _ = write!(out, "<div class=\"error\">reconcile failing: {}</div>", e(err));
    }
    out
}

/// Kubernetes names need no escaping in a path, but a policy file could name anything.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (c as char).to_string(),
            _ => format!("%{c:02X}"),
        })
        .collect()
}

/// `/rollouts/{namespace}/{name}`.
pub fn detail(p: &DetailPage) -> String {
    let r = &p.rollout;
    let mut b = String::new();
    let _ =
        writeln!(b, "<p><a href=\"/\">← all rollouts</a></p>\n<h1>{}/{}</h1>", e(&r.namespace), e(&r.name));
    let _ = writeln!(
        b,
        "<table id=\"summary\"><tr><th>phase</th><td>{}</td></tr><tr><th>revision</th><td><code>{}</code></td></tr>\
<tr><th>step</th><td>{}/{} at {}% canary</td></tr><tr><th>last verdict</th><td>{}</td></tr>\
<tr><th>reason</th><td class=\"reason\">{}</td></tr><tr><th>started</th><td>{}</td></tr><tr><th>finished</th><td>{}</td></tr>\
<tr><th>in phase for</th><td>{}</td></tr><tr><th>schedule</th><td>{}</td></tr></table>",
        phase(r.phase),
        opt(&r.revision),
        r.step,
        r.steps,
        r.canary_weight,
        opt(&r.last_verdict),
        reason(r),
        opt(&p.started),
        opt(&p.finished),
        opt(&r.time_in_phase),
        r.window.as_deref().map(e).unwrap_or_else(|| "none (any time)".into()),
    );

    b.push_str("<h2>Canary vs baseline</h2>\n");
    chart(&mut b, &p.chart);

    b.push_str("<h2>Last verdict: evidence</h2>\n");
    match &p.verdict {
        None => b.push_str("<p class=\"note\">No interval judged yet.</p>\n"),
        Some(v) => {
            let _ = writeln!(b, "<p><b>{}</b> at {}</p>", e(&v.verdict), e(&v.at));
            b.push_str(
                "<table id=\"evidence\"><tr><th>check</th><th>verdict</th><th>canary</th><th>baseline</th>\
<th>effect (anytime-valid CI)</th><th>allowed</th><th>summary</th></tr>\n",
            );
            for c in &v.checks {
                let _ = writeln!(
                    b,
                    "<tr{}><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    if c.decisive { " class=\"decisive\"" } else { "" },
                    e(&c.check),
                    if c.dry_run { " (dry run)" } else { "" },
                    e(&c.verdict),
                    opt(&c.canary),
                    opt(&c.baseline),
                    opt(&c.effect),
                    opt(&c.threshold),
                    e(&c.summary),
                );
            }
            b.push_str("</table>\n");
        }
    }

    b.push_str("<h2>Timeline</h2>\n");
    if p.timeline.is_empty() {
        b.push_str("<p class=\"note\">Nothing recorded for this rollout yet.</p>\n");
    } else {
        b.push_str("<table id=\"timeline\"><tr><th>time</th><th>event</th><th>step</th><th>canary</th><th>what happened</th></tr>\n");
        for ev in &p.timeline {
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}%</td><td>{}</td></tr>",
                e(&ev.at),
                e(&ev.kind),
                ev.step,
                ev.weight,
                e(&ev.message)
            );
        }
        b.push_str("</table>\n");
    }

    b.push_str("<h2>History</h2>\n");
    if p.history.is_empty() {
        b.push_str("<p class=\"note\">No finished rollout yet.</p>\n");
    } else {
        b.push_str("<table id=\"history\"><tr><th>finished</th><th>outcome</th><th>revision</th><th>step</th><th>canary</th><th>failing check</th><th>reason</th></tr>\n");
        for h in &p.history {
            let finished =
                jiff::Timestamp::from_second(h.finished).map(|t| t.to_string()).unwrap_or_default();
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td><span class=\"phase {outcome}\">{outcome}</span></td><td><code>{}</code></td><td class=\"num\">{}</td>\
<td class=\"num\">{}%</td><td>{}</td><td>{}</td></tr>",
                e(&finished),
                opt(&h.revision),
                h.step + 1,
                h.weight,
                opt(&h.failing_check),
                opt(&h.reason),
                outcome = h.outcome.as_str(),
            );
        }
        b.push_str("</table>\n");
    }
    let _ = writeln!(b, "<p class=\"note\">As of {}. Read-only.</p>", e(&p.now));
    page(&format!("canaryd {}/{}", r.namespace, r.name), &b)
}

fn chart(b: &mut String, c: &ChartData) {
    match (&c.svg, &c.unavailable) {
        (Some(svg), _) => {
            b.push_str("<div id=\"chart\">\n");
            b.push_str(svg);
            b.push_str("</div>\n");
        }
        (None, why) => {
            let _ = writeln!(
                b,
                "<p id=\"chart-unavailable\" class=\"note\">No chart: {}</p>",
                e(why.as_deref().unwrap_or("no data"))
            );
        }
    }
}

/// A 404 page.
pub fn not_found(n: &NotFound) -> String {
    page(
        "not found",
        &format!("<p><a href=\"/\">← all rollouts</a></p><h1>Not found</h1><p>{}</p>\n", e(&n.error)),
    )
}
