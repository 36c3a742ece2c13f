//! `--chart FILE.svg`: canary vs baseline error rate and p99 latency per interval, the plan's
//! canary weight as a shaded band behind both panels, and the decision marked. Hand-written
//! SVG: two panels sharing a time axis, no dependencies.

use std::fmt::Write as _;

use super::{Backtest, Decision, IntervalRow, SideSummary};

const W: f64 = 900.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 860.0;
/// (top, bottom) of each panel, pixels.
const PANELS: [(f64, f64); 2] = [(50.0, 230.0), (290.0, 470.0)];
const H: f64 = 520.0;
const CANARY: &str = "#d62728";
const BASELINE: &str = "#1f77b4";

/// The chart as an SVG document.
pub fn svg(b: &Backtest) -> String {
    let t0 = b.start.as_second() as f64;
    let t1 = b.intervals.last().map(|r| r.time.as_second() as f64).unwrap_or(t0).max(t0 + 1.0);
    let x = |t: f64| LEFT + (t - t0) / (t1 - t0) * (RIGHT - LEFT);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="14">backtest {}: canary {} vs baseline {}</text>"#,
        esc(&b.policy),
        esc(&b.canary.to_string()),
        esc(&b.baseline.to_string())
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="36"><tspan fill="{CANARY}">■ canary</tspan>  <tspan fill="{BASELINE}">■ baseline</tspan>  <tspan fill="#2ca02c">■ canary weight (shade)</tspan></text>"##
    );

    // Weight band: one rectangle per interval, opacity by the plan's weight.
    let mut prev = t0;
    for r in &b.intervals {
        let t = r.time.as_second() as f64;
        for (top, bottom) in PANELS {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{}" fill="#2ca02c" fill-opacity="{:.3}"><title>step {} weight {}%</title></rect>"##,
                x(prev),
                (x(t) - x(prev)).max(0.0),
                bottom - top,
                0.04 + 0.26 * f64::from(r.weight.min(100)) / 100.0,
                r.step,
                r.weight
            );
        }
        prev = t;
    }

    let error = |side: &SideSummary| side.error_rate.map(|v| v * 100.0);
    let p99 = |side: &SideSummary| side.p99_ms;
    panel(&mut s, &b.intervals, PANELS[0], "error rate (%)", &x, &error);
    panel(&mut s, &b.intervals, PANELS[1], "p99 latency (ms)", &x, &p99);

    // Time axis labels under the bottom panel.
    let bottom = PANELS[1].1;
    for (i, r) in b.intervals.iter().enumerate() {
        let every = (b.intervals.len() / 8).max(1);
        if i % every == 0 || i + 1 == b.intervals.len() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                x(r.time.as_second() as f64),
                bottom + 15.0,
                r.time.strftime("%H:%M")
            );
        }
    }

    if let Some(t) = b.decision_time {
        let xd = x(t.as_second() as f64);
        let colour = if b.decision == Decision::Abort { CANARY } else { "#2ca02c" };
        let _ = writeln!(
            s,
            r#"<line x1="{xd:.1}" y1="{}" x2="{xd:.1}" y2="{bottom}" stroke="{colour}" stroke-width="2" stroke-dasharray="6 3"/>"#,
            PANELS[0].0
        );
        let label = match &b.failing_check {
            Some(c) => format!("{} ({c}) at {}", b.decision.as_str(), t.strftime("%H:%M:%S")),
            None => format!("{} at {}", b.decision.as_str(), t.strftime("%H:%M:%S")),
        };
        let anchor = if xd > W / 2.0 { "end" } else { "start" };
        let dx = if xd > W / 2.0 { -4.0 } else { 4.0 };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" fill="{colour}" text-anchor="{anchor}" font-weight="bold">{}</text>"#,
            xd + dx,
            PANELS[0].0 + 12.0,
            esc(&label)
        );
    } else {
        let _ = writeln!(
            s,
            r#"<text x="{RIGHT}" y="{}" text-anchor="end">inconclusive</text>"#,
            PANELS[0].0 + 12.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// One panel: frame, y scale from 0 to the largest value, a polyline per side.
fn panel(
    s: &mut String,
    rows: &[IntervalRow],
    (top, bottom): (f64, f64),
    title: &str,
    x: &dyn Fn(f64) -> f64,
    value: &dyn Fn(&SideSummary) -> Option<f64>,
) {
    let values = |pick: fn(&IntervalRow) -> Option<SideSummary>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r.time.as_second() as f64, value(&pick(r)?)?)))
            .filter(|(_, v)| v.is_finite())
            .collect()
    };
    let canary = values(|r| r.canary);
    let baseline = values(|r| r.baseline);
    let max = canary.iter().chain(&baseline).map(|p| p.1).fold(0.0_f64, f64::max);
    let max = if max > 0.0 { max * 1.1 } else { 1.0 };
    let y = |v: f64| bottom - v / max * (bottom - top);
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        RIGHT - LEFT,
        bottom - top
    );
    let _ = writeln!(s, r#"<text x="{LEFT}" y="{}" font-weight="bold">{}</text>"#, top - 4.0, esc(title));
    for frac in [0.0, 0.5, 1.0] {
        let v = max / 1.1 * frac;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 4.0,
            y(v) + 4.0,
            short(v)
        );
    }
    for (points, colour) in [(&baseline, BASELINE), (&canary, CANARY)] {
        if points.is_empty() {
            continue;
        }
        let path: Vec<String> = points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for (t, v) in points {
            let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#, x(*t), y(*v));
        }
    }
}

fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
