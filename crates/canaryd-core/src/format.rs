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
    }
}
