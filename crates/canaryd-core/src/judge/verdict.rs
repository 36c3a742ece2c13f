//! Verdicts and their evidence: the numbers every alert, log line and status shows.

use serde::{Deserialize, Serialize};

/// The outcome of one check or of a whole interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Verdict {
    /// The canary is within tolerance, with the configured confidence.
    Pass,
    /// The canary is worse than tolerance allows, with the configured confidence.
    Fail,
    /// Not enough evidence either way (too little traffic, or too close to call yet).
    Inconclusive,
    /// The evidence could not be obtained (metrics source down, bad query, NaN).
    Error,
}

impl Verdict {
    /// Combines check verdicts into an interval verdict: any Fail fails; otherwise any Error is
    /// an Error; otherwise any Inconclusive is Inconclusive; all Pass is Pass. An empty list is
    /// Inconclusive: no evidence never promotes.
    pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        let mut out: Option<Verdict> = None;
        for v in verdicts {
            out = Some(match (out, v) {
                (_, Verdict::Fail) | (Some(Verdict::Fail), _) => Verdict::Fail,
                (_, Verdict::Error) | (Some(Verdict::Error), _) => Verdict::Error,
                (_, Verdict::Inconclusive) | (Some(Verdict::Inconclusive), _) => Verdict::Inconclusive,
                _ => Verdict::Pass,
            });
        }
        out.unwrap_or(Verdict::Inconclusive)
    }

    /// Lower-case name used in CLI output, JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Error => "error",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The numbers behind one check's verdict. Rates are fractions (0.0–1.0), latencies
/// milliseconds. Fields that do not apply to a check are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// Canary requests counted (cumulative over the evidence window).
    pub canary_requests: u64,
    /// Baseline requests counted.
    pub baseline_requests: u64,
    /// Canary failures counted (errors, or slow requests for latency checks).
    pub canary_bad: u64,
    /// Baseline failures counted.
    pub baseline_bad: u64,
    /// The canary's value of the compared quantity (error rate, slow share, quantile ms, custom).
    pub canary_value: Option<f64>,
    /// The baseline's value of the compared quantity.
    pub baseline_value: Option<f64>,
    /// Effect: canary minus baseline (or canary / baseline − 1 for relative checks).
    pub effect: Option<f64>,
    /// Confidence interval for the effect, low end.
    pub ci_low: Option<f64>,
    /// Confidence interval for the effect, high end.
    pub ci_high: Option<f64>,
    /// Confidence level of the interval (e.g. 0.99).
    pub confidence: Option<f64>,
    /// The tolerance or threshold the effect/value was compared with.
    pub threshold: Option<f64>,
    /// The test statistic (z, log-likelihood ratio, …), for the curious.
    pub statistic: Option<f64>,
    /// Short human explanation: "canary 5.10% errors vs baseline 0.10% (+5.00 pp, 99% CI
    /// +3.9..+6.1 pp) exceeds tolerance 1.00 pp".
    pub summary: String,
}

/// One check's result for an interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Check name: `success-rate`, `latency`, `latency-guardrail`, or a custom check's name.
    pub check: String,
    pub verdict: Verdict,
    pub evidence: Evidence,
    /// True when the check runs in dry-run mode: reported but never fails the interval.
    #[serde(default)]
    pub dry_run: bool,
}

/// The judge's result for one analysis interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntervalVerdict {
    /// Combined verdict over the non-dry-run checks.
    pub verdict: Verdict,
    /// Per-check results, in policy order.
    pub checks: Vec<CheckResult>,
    /// Window end the verdict covers (Unix seconds).
    pub at: i64,
}

impl IntervalVerdict {
    /// Builds the combined verdict from per-check results (dry-run checks do not count).
    pub fn from_checks(checks: Vec<CheckResult>, at: i64) -> Self {
        let verdict = Verdict::combine(checks.iter().filter(|c| !c.dry_run).map(|c| c.verdict));
        IntervalVerdict { verdict, checks, at }
    }

    /// The first failing (or erroring) non-dry-run check: what an alert leads with.
    pub fn decisive_check(&self) -> Option<&CheckResult> {
        self.checks.iter().find(|c| !c.dry_run && c.verdict == self.verdict)
    }
}
