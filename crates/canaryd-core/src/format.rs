//! How numbers read wherever a person sees them: verdict summaries, alerts, backtest tables,
//! `plan` and `status`. One module, so that a rate reads the same in an alert and in a backtest.

/// A fraction as a percentage with two decimals: `0.051` → `5.10%`.
pub fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// A fraction as signed percentage points: `0.05` → `+5.00 pp`.
pub fn pp(x: f64) -> String {
    format!("{:+.2} pp", x * 100.0)
}

/// An interval of fractions as percentage points: `+3.9..+6.1 pp`.
pub fn pp_ci(low: f64, high: f64) -> String {
    format!("{:+.1}..{:+.1} pp", low * 100.0, high * 100.0)
}

/// A confidence level without trailing zeros: `0.99` → `99%`, `0.9975` → `99.75%`.
pub fn conf(c: f64) -> String {
    let s = format!("{:.3}", c * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// Milliseconds, with precision that suits the magnitude.
pub fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0} ms")
    } else {
        format!("{x:.1} ms")
    }
}

/// A custom check's value: up to four decimals, no trailing zeros: `0.25` → `0.25`, `3.0` → `3`.
pub fn plain(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Renders rows as left-aligned columns separated by two spaces; the first row is the header.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> =
            row.iter().enumerate().map(|(i, cell)| format!("{cell:<w$}", w = widths[i])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Seconds as a short human duration: `45s`, `12m`, `2h05m`, `3d4h`.
pub fn human_secs(secs: f64) -> String {
    if !secs.is_finite() {
        return "never".to_string();
    }
    let s = secs.round().max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{}h", s / 86_400, s / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_read_well() {
        assert_eq!(pct(0.051), "5.10%");
        assert_eq!(pp(0.05), "+5.00 pp");
        assert_eq!(pp_ci(0.039, 0.061), "+3.9..+6.1 pp");
        assert_eq!(conf(0.99), "99%");
        assert_eq!(conf(0.9975), "99.75%");
        assert_eq!(conf(0.995), "99.5%");
        assert_eq!(ms(402.4), "402 ms");
        assert_eq!(ms(7.26), "7.3 ms");
        assert_eq!(plain(0.25), "0.25");
        assert_eq!(plain(3.0), "3");
        assert_eq!(human_secs(45.0), "45s");
        assert_eq!(human_secs(125.0), "2m05s");
        assert_eq!(human_secs(7500.0), "2h05m");
        assert_eq!(human_secs(f64::INFINITY), "never");
    }

    #[test]
    fn aligns_columns() {
        let t = table(&[vec!["a".into(), "bb".into()], vec!["ccc".into(), "d".into()]]);
        assert_eq!(t, "a    bb\nccc  d\n");
    }
}
