//! Summaries, the per-scenario tables and the targets section.

use crate::runners::{Decision, Outcome};
use crate::scenarios::Role;

pub const DECIDERS: [&str; 4] = ["canaryd", "flagger-style", "oracle/request", "oracle/interval"];

/// One decider's results on one scenario × rate. Quantiles treat a run that never reached the
/// decision of interest (abort for a faulty canary, promote for a healthy one) as +∞: a missed
/// fault keeps serving failures for ever, a held canary never ships.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub runs: usize,
    pub abort_rate: f64,
    pub promote_rate: f64,
    pub secs: (f64, f64),
    pub failed: (f64, f64),
    pub canary: (f64, f64),
}

/// Nearest-rank quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn med_p95(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (quantile(&v, 0.5), quantile(&v, 0.95))
}

pub fn summarize(outs: &[Outcome], healthy: bool) -> Summary {
    let goal = if healthy { Decision::Promote } else { Decision::Abort };
    let pick = |f: &dyn Fn(&Outcome) -> f64| {
        med_p95(outs.iter().map(|o| if o.decision == goal { f(o) } else { f64::INFINITY }).collect())
    };
    let rate = |d| outs.iter().filter(|o| o.decision == d).count() as f64 / outs.len().max(1) as f64;
    Summary {
        runs: outs.len(),
        abort_rate: rate(Decision::Abort),
        promote_rate: rate(Decision::Promote),
        secs: pick(&|o: &Outcome| o.secs),
        failed: pick(&|o: &Outcome| o.failed as f64),
        canary: pick(&|o: &Outcome| o.canary as f64),
    }
}

pub fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        return "∞".into();
    }
    let s = s.round() as i64;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn fmt_count(c: f64) -> String {
    if !c.is_finite() {
        "∞".into()
    } else if c >= 100_000.0 {
        format!("{:.0}k", c / 1000.0)
    } else {
        format!("{c:.0}")
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Upper end of the exact-ish (Wilson) 95% interval of a rate: how much the estimate could hide.
fn wilson_high(rate: f64, n: usize) -> f64 {
    let n = n as f64;
    let z = 1.96f64;
    let denom = 1.0 + z * z / n;
    let centre = rate + z * z / (2.0 * n);
    let rad = z * (rate * (1.0 - rate) / n + z * z / (4.0 * n * n)).sqrt();
    (centre + rad) / denom
}

pub fn print_table(healthy: bool, rows: &[Row]) {
    if healthy {
        println!(
            "  {:>6}  {:<15} {:>11} {:>9} {:>9}  {:>17}  {:>21}",
            "req/s",
            "decider",
            "false-abort",
            "(95% hi)",
            "promoted",
            "t-promote med/p95",
            "canary req to promote"
        );
    } else {
        println!(
            "  {:>6}  {:<15} {:>8} {:>8}  {:>17}  {:>19}  {:>21}",
            "req/s",
            "decider",
            "detected",
            "shipped",
            "t-abort med/p95",
            "failed served m/p95",
            "canary served m/p95"
        );
    }
    for (rate, sums) in rows {
        for (i, s) in sums.iter().enumerate() {
            let r = if i == 0 { format!("{rate}") } else { String::new() };
            let pair = |p: (f64, f64), f: fn(f64) -> String| format!("{} / {}", f(p.0), f(p.1));
            if healthy {
                println!(
                    "  {:>6}  {:<15} {:>11} {:>9} {:>9}  {:>17}  {:>21}",
                    r,
                    DECIDERS[i],
                    pct(s.abort_rate),
                    pct(wilson_high(s.abort_rate, s.runs)),
                    pct(s.promote_rate),
                    pair(s.secs, fmt_secs),
                    pair(s.canary, fmt_count),
                );
            } else {
                println!(
                    "  {:>6}  {:<15} {:>8} {:>8}  {:>17}  {:>19}  {:>21}",
                    r,
                    DECIDERS[i],
                    pct(s.abort_rate),
                    pct(s.promote_rate),
                    pair(s.secs, fmt_secs),
                    pair(s.failed, fmt_count),
                    pair(s.canary, fmt_count),
                );
            }
        }
    }
}

/// One row of a table: the route rate and each decider's summary.
pub type Row = (f64, [Summary; 4]);

/// Everything measured: per scenario, its role, name and rows.
pub struct Results {
    pub scenarios: Vec<(Role, String, Vec<Row>)>,
    pub interval_secs: f64,
}

struct Verdicts {
    pass: usize,
    miss: usize,
}

impl Verdicts {
    fn line(&mut self, ok: bool, what: String) {
        if ok {
            self.pass += 1;
        } else {
            self.miss += 1;
        }
        println!("    {} {what}", if ok { "PASS" } else { "MISS" });
    }
}

impl Results {
    fn rows(&self, role: Role) -> impl Iterator<Item = (&str, &Row)> {
        self.scenarios
            .iter()
            .filter(move |(r, _, _)| *r == role)
            .flat_map(|(_, name, rows)| rows.iter().map(move |row| (name.as_str(), row)))
    }

    fn detection(&self, v: &mut Verdicts, roles: &[Role], min_rate: f64, max_rate: f64) {
        for role in roles {
            for (name, (rate, s)) in self.rows(*role) {
                if *rate < min_rate || *rate > max_rate {
                    continue;
                }
                let d = s[0].abort_rate;
                v.line(
                    d >= 0.99,
                    format!(
                        "{name} @ {rate} req/s: detected {} (target ≥ 99%, margin {:+.1} pp)",
                        pct(d),
                        (d - 0.99) * 100.0
                    ),
                );
            }
        }
    }

    pub fn print_targets(&self) {
        let mut v = Verdicts { pass: 0, miss: 0 };
        println!("\n== targets (issue 3, item 4) — canaryd, every scenario × rate ==");
        println!("  1. false aborts ≤ 1% on each healthy scenario (blips and drift included):");
        for (name, (rate, s)) in self.rows(Role::Healthy) {
            let a = s[0].abort_rate;
            v.line(
                a <= 0.01,
                format!(
                    "{name} @ {rate} req/s: {} (95% hi {}; margin {:+.1} pp)",
                    pct(a),
                    pct(wilson_high(a, s[0].runs)),
                    (0.01 - a) * 100.0
                ),
            );
        }
        println!("  2. detection ≥ 99% for +1 pp and larger at ≥ 20 req/s:");
        self.detection(
            &mut v,
            &[Role::ErrorFromStart(1), Role::ErrorFromStart(5), Role::ErrorFromStart(50), Role::ErrorMidStep],
            20.0,
            f64::MAX,
        );
        println!("  3. detection ≥ 99% for +50 pp at 2 req/s:");
        self.detection(&mut v, &[Role::ErrorFromStart(50)], 0.0, 2.0);
        println!("  4. detection ≥ 99% for the latency regressions at ≥ 20 req/s:");
        self.detection(&mut v, &[Role::Latency], 20.0, f64::MAX);
        println!("  5. a fault starting mid-step is caught as fast as one present from the start");
        println!(
            "     (median time from onset ≤ the from-start +5 pp median + half an interval for the onset's"
        );
        println!("     position inside its interval; rates ≥ 20 req/s):");
        let reference: Vec<(f64, f64)> =
            self.rows(Role::ErrorFromStart(5)).map(|(_, (r, s))| (*r, s[0].secs.0)).collect();
        for (name, (rate, s)) in self.rows(Role::ErrorMidStep) {
            if *rate < 20.0 {
                continue;
            }
            let base = reference.iter().find(|(r, _)| r == rate).map_or(f64::NAN, |x| x.1);
            let limit = base + self.interval_secs / 2.0;
            let m = s[0].secs.0;
            v.line(
                m <= limit,
                format!(
                    "{name} @ {rate} req/s: {} vs from-start {} (limit {}, margin {})",
                    fmt_secs(m),
                    fmt_secs(base),
                    fmt_secs(limit),
                    signed_secs(limit - m)
                ),
            );
        }
        println!(
            "  6. median time to abort for +50 pp ≤ 1 analysis interval ({}):",
            fmt_secs(self.interval_secs)
        );
        for (name, (rate, s)) in self.rows(Role::ErrorFromStart(50)) {
            let m = s[0].secs.0;
            v.line(
                m <= self.interval_secs,
                format!(
                    "{name} @ {rate} req/s: median {} (margin {})",
                    fmt_secs(m),
                    signed_secs(self.interval_secs - m)
                ),
            );
        }
        println!("  7. median failed requests served before the abort (error regressions ≥ +1 pp):");
        let cases =
            [Role::ErrorFromStart(1), Role::ErrorFromStart(5), Role::ErrorFromStart(50), Role::ErrorMidStep];
        let against = [
            (2, 2.0, "7a. ≤ 2× the per-request oracle's (the literal target: the physical limit)"),
            (3, 2.0, "7b. ≤ 2× the interval oracle's (same 1m decision cadence as canaryd)"),
            (1, 0.2, "7c. ≤ 1/5 of the Flagger-style rule's"),
        ];
        for (who, limit, title) in against {
            println!("    {title}:");
            for role in cases {
                for (name, (rate, s)) in self.rows(role) {
                    let (c, o) = (s[0].failed.0, s[who].failed.0);
                    // Both never aborting is no success: require canaryd to abort at all.
                    let ok = c.is_finite() && (c <= limit * o || !o.is_finite());
                    v.line(
                        ok,
                        format!(
                            "{name} @ {rate} req/s: canaryd {} vs {} {} ({}, limit {limit}×)",
                            fmt_count(c),
                            DECIDERS[who],
                            fmt_count(o),
                            ratio(c, o)
                        ),
                    );
                }
            }
        }
        println!("\n  {} PASS, {} MISS", v.pass, v.miss);
    }
}

fn ratio(a: f64, b: f64) -> String {
    match (a.is_finite(), b.is_finite()) {
        (true, true) if b > 0.0 => format!("{:.2}×", a / b),
        (true, true) => {
            if a == 0.0 {
                "1.00×".into()
            } else {
                "∞×".into()
            }
        }
        (true, false) => "0×".into(),
        (false, true) => "∞×".into(),
        (false, false) => "n/a".into(),
    }
}

fn signed_secs(s: f64) -> String {
    if !s.is_finite() {
        return if s > 0.0 { "+∞".into() } else { "−∞".into() };
    }
    if s < 0.0 {
        format!("−{}", fmt_secs(-s))
    } else {
        format!("+{}", fmt_secs(s))
    }
}
