//! Custom checks on the team's own PromQL values: thresholds and canary-vs-baseline
//! comparisons. These are deterministic rules on one value per window (a PromQL result has no
//! sample size), so they take no part in the α accounting: a custom check fails exactly when its
//! rule is broken. A missing or non-finite value is an `Error`, never a Pass.

use crate::judge::{CheckResult, Evidence, Verdict};
use crate::observation::CustomValue;
use crate::policy::{CustomCheck, CustomMode};

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite())
}

/// Judges one custom check against the interval's values (looked up by name).
pub(crate) fn custom(cfg: &CustomCheck, values: &[CustomValue]) -> CheckResult {
    let found = values.iter().find(|v| v.name == cfg.name);
    let canary = finite(found.and_then(|v| v.canary));
    let baseline = finite(found.and_then(|v| v.baseline));
    let mut ev = Evidence { canary_value: canary, baseline_value: baseline, ..Evidence::default() };
    let (verdict, summary) = match cfg.mode {
        CustomMode::Threshold => match canary {
            None => (Verdict::Error, format!("no value for {}", cfg.name)),
            Some(v) => threshold(cfg, v, &mut ev),
        },
        CustomMode::Compare => match (canary, baseline) {
            (Some(c), Some(b)) => compare(cfg, c, b, &mut ev),
            (None, _) => (Verdict::Error, format!("no canary value for {}", cfg.name)),
            (_, None) => (Verdict::Error, format!("no baseline value for {}", cfg.name)),
        },
    };
    ev.summary = summary;
    CheckResult { check: cfg.name.clone(), verdict, evidence: ev, dry_run: cfg.dry_run }
}

fn threshold(cfg: &CustomCheck, v: f64, ev: &mut Evidence) -> (Verdict, String) {
    let name = &cfg.name;
    if let Some(max) = cfg.max.filter(|m| !m.is_nan()) {
        ev.threshold = Some(max);
        if v > max {
            return (Verdict::Fail, format!("{name} {v:.4} above max {max:.4}"));
        }
    }
    if let Some(min) = cfg.min.filter(|m| !m.is_nan()) {
        ev.threshold = ev.threshold.or(Some(min));
        if v < min {
            ev.threshold = Some(min);
            return (Verdict::Fail, format!("{name} {v:.4} below min {min:.4}"));
        }
    }
    if cfg.min.is_none() && cfg.max.is_none() {
        return (Verdict::Error, format!("{name} {v:.4}: neither min nor max is set"));
    }
    (Verdict::Pass, format!("{name} {v:.4} within limits"))
}

fn compare(cfg: &CustomCheck, c: f64, b: f64, ev: &mut Evidence) -> (Verdict, String) {
    let name = &cfg.name;
    let tol = cfg.tolerance.filter(|t| t.is_finite()).unwrap_or(0.0) / 100.0;
    // `b.abs()` keeps "at most tol worse" meaningful for negative baselines too.
    let limit = b + b.abs() * tol;
    ev.threshold = Some(limit);
    ev.effect = Some(if b != 0.0 { c / b - 1.0 } else { c - b });
    let rel = if b != 0.0 { format!(" ({:+.1}%)", (c / b - 1.0) * 100.0) } else { String::new() };
    let head = format!("{name}: canary {c:.4} vs baseline {b:.4}{rel}");
    if c > limit {
        (Verdict::Fail, format!("{head} exceeds limit {limit:.4} (tolerance {:.0}%)", tol * 100.0))
    } else {
        (Verdict::Pass, format!("{head} within tolerance {:.0}%", tol * 100.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(mode: CustomMode) -> CustomCheck {
        CustomCheck {
            name: "queue-depth".into(),
            query: "q".into(),
            mode,
            min: None,
            max: Some(10.0),
            tolerance: Some(20.0),
            dry_run: false,
        }
    }

    fn value(c: Option<f64>, b: Option<f64>) -> Vec<CustomValue> {
        vec![CustomValue { name: "queue-depth".into(), canary: c, baseline: b }]
    }

    #[test]
    fn threshold_fails_above_max_and_passes_below() {
        let c = check(CustomMode::Threshold);
        assert_eq!(custom(&c, &value(Some(11.0), None)).verdict, Verdict::Fail);
        assert_eq!(custom(&c, &value(Some(9.0), None)).verdict, Verdict::Pass);
        let min = CustomCheck { min: Some(5.0), ..c };
        let r = custom(&min, &value(Some(1.0), None));
        assert_eq!((r.verdict, r.evidence.threshold), (Verdict::Fail, Some(5.0)));
    }

    #[test]
    fn compare_allows_tolerance_over_baseline() {
        let c = check(CustomMode::Compare);
        assert_eq!(custom(&c, &value(Some(11.9), Some(10.0))).verdict, Verdict::Pass);
        let r = custom(&c, &value(Some(12.5), Some(10.0)));
        assert_eq!(r.verdict, Verdict::Fail);
        assert!((r.evidence.effect.unwrap() - 0.25).abs() < 1e-12);
        assert!(r.evidence.summary.contains("exceeds limit 12.0000"), "{}", r.evidence.summary);
    }

    #[test]
    fn missing_or_nan_value_is_an_error() {
        let c = check(CustomMode::Threshold);
        assert_eq!(custom(&c, &[]).verdict, Verdict::Error);
        assert_eq!(custom(&c, &value(None, None)).verdict, Verdict::Error);
        assert_eq!(custom(&c, &value(Some(f64::NAN), None)).verdict, Verdict::Error);
        let cmp = check(CustomMode::Compare);
        assert_eq!(custom(&cmp, &value(Some(1.0), None)).verdict, Verdict::Error);
    }
}
