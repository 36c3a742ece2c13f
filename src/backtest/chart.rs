//! The rollout chart: canary vs baseline error rate and latency (the judged quantile) per
//! interval, the canary weight as a shaded band behind both panels, and the decision marked.
//! Hand-written SVG: two panels sharing a time axis, no dependencies. Drawn for
//! `backtest --chart FILE.svg` ([`svg`]) and for the dashboard's rollout page ([`ChartInput`]).

use std::fmt::Write as _;

use jiff::Timestamp;

use super::{Backtest, Decision, SideSummary};

/// What a chart shows, whatever computed it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartInput {
    /// The heading, e.g. `backtest shop/reviews: canary … vs baseline …`.
    pub title: String,
    /// Left end of the time axis.
    pub start: Timestamp,
    /// Name of the latency panel's quantile, e.g. `p99`.
    pub quantile: String,
    /// One point per interval, in time order.
    pub points: Vec<ChartPoint>,
    /// The decision (promote or abort), if there was one.
    pub marker: Option<Marker>,
}

/// One interval of a chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChartPoint {
    /// End of the interval.
    pub time: Timestamp,
    /// Step (1-based) and canary weight (percent) during the interval.
    pub step: usize,
    pub weight: u32,
    pub canary: Option<SideSummary>,
    pub baseline: Option<SideSummary>,
}

/// The decision line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub time: Timestamp,
    /// E.g. `abort (success-rate) at 01:38:46`.
    pub label: String,
    /// Drawn in the canary's colour (an abort) rather than green.
    pub abort: bool,
}

impl ChartInput {
    /// A backtest's chart.
    pub fn of_backtest(b: &Backtest) -> ChartInput {
        let points = b
            .intervals
            .iter()
            .map(|r| ChartPoint {
                time: r.time,
                step: r.step,
                weight: r.weight,
                canary: r.canary,
                baseline: r.baseline,
            })
            .collect();
        let marker = b.decision_time.map(|t| Marker {
            time: t,
            label: match &b.failing_check {
                Some(c) => format!("{} ({c}) at {}", b.decision.as_str(), t.strftime("%H:%M:%S")),
                None => format!("{} at {}", b.decision.as_str(), t.strftime("%H:%M:%S")),
            },
            abort: b.decision == Decision::Abort,
        });
        ChartInput {
            title: format!("backtest {}: canary {} vs baseline {}", b.policy, b.canary, b.baseline),
            start: b.start,
            quantile: quantile_name(b.quantile),
            points,
            marker,
        }
    }
}

/// A quantile (0–1) as a latency panel names it: `p99`, `p95`, `p99.9`.
pub fn quantile_name(q: f64) -> String {
    let pct = (q * 1000.0).round() / 10.0;
    format!("p{pct}")
}

/// The backtest's chart as an SVG document.
pub fn svg(b: &Backtest) -> String {
    render(&ChartInput::of_backtest(b))
}

const W: f64 = 900.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 860.0;
/// (top, bottom) of each panel, pixels.
const PANELS: [(f64, f64); 2] = [(50.0, 230.0), (290.0, 470.0)];
const H: f64 = 520.0;
const CANARY: &str = "#d62728";
const BASELINE: &str = "#1f77b4";

/// The chart as an SVG document.
pub fn render(c: &ChartInput) -> String {
    let t0 = c.start.as_second() as f64;
    let t_last = c.points.last().map(|r| r.time.as_second() as f64).unwrap_or(t0);
    let t1 = c.marker.as_ref().map(|m| m.time.as_second() as f64).unwrap_or(t0).max(t_last).max(t0 + 1.0);
    let x = |t: f64| LEFT + (t - t0) / (t1 - t0) * (RIGHT - LEFT);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{LEFT}" y="20" font-size="14">{}</text>"#, esc(&c.title));
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="36"><tspan fill="{CANARY}">■ canary</tspan>  <tspan fill="{BASELINE}">■ baseline</tspan>  <tspan fill="#2ca02c">■ canary weight (shade)</tspan></text>"##
    );

    // Weight band: one rectangle per interval, opacity by the plan's weight.
    let mut prev = t0;
    for r in &c.points {
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
    let latency = |side: &SideSummary| side.latency_ms;
    panel(&mut s, &c.points, PANELS[0], "error rate (%)", &x, &error);
    panel(&mut s, &c.points, PANELS[1], &format!("{} latency (ms)", c.quantile), &x, &latency);

    // Time axis labels under the bottom panel.
    let bottom = PANELS[1].1;
    for (i, r) in c.points.iter().enumerate() {
        let every = (c.points.len() / 8).max(1);
        if i % every == 0 || i + 1 == c.points.len() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                x(r.time.as_second() as f64),
                bottom + 15.0,
                r.time.strftime(if t1 - t0 < 900.0 { "%H:%M:%S" } else { "%H:%M" })
            );
        }
    }

    if let Some(m) = &c.marker {
        let xd = x(m.time.as_second() as f64);
        let colour = if m.abort { CANARY } else { "#2ca02c" };
        let _ = writeln!(
            s,
            r#"<line class="decision" x1="{xd:.1}" y1="{}" x2="{xd:.1}" y2="{bottom}" stroke="{colour}" stroke-width="2" stroke-dasharray="6 3"/>"#,
            PANELS[0].0
        );
        let label = &m.label;
        let anchor = if xd > W / 2.0 { "end" } else { "start" };
        let dx = if xd > W / 2.0 { -4.0 } else { 4.0 };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" fill="{colour}" text-anchor="{anchor}" font-weight="bold">{}</text>"#,
            xd + dx,
            PANELS[0].0 + 12.0,
            esc(label)
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
    rows: &[ChartPoint],
    (top, bottom): (f64, f64),
    title: &str,
    x: &dyn Fn(f64) -> f64,
    value: &dyn Fn(&SideSummary) -> Option<f64>,
) {
    let values = |pick: fn(&ChartPoint) -> Option<SideSummary>| -> Vec<(f64, f64)> {
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
