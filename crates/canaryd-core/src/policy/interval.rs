//! `analysis.interval`: how often the judge looks — `auto` (at every scrape, the default) or a
//! fixed duration — and the one rule that turns it into a cadence.

use super::Duration;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Shortest `auto` cadence: a scrape interval detected below it (a misconfigured or very fast
/// scraper) would only multiply queries, each holding a fraction of a request per side.
pub const AUTO_FLOOR: std::time::Duration = std::time::Duration::from_secs(5);
/// `auto` cadence before a scrape interval is known (no samples yet, or a source that cannot
/// tell): Prometheus' most common scrape interval.
pub const AUTO_FALLBACK: std::time::Duration = std::time::Duration::from_secs(15);

/// How often the judge looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnalysisInterval {
    /// At every scrape: the scrape interval detected from the samples (median gap between
    /// samples of the selected series), at least [`AUTO_FLOOR`], [`AUTO_FALLBACK`] until known.
    /// Looking more often costs nothing in false aborts (the judge's evidence is valid at every
    /// look) and a gross fault is aborted at the first scrape that shows it.
    #[default]
    Auto,
    /// A fixed interval.
    Every(Duration),
}

impl AnalysisInterval {
    /// Seconds between looks, given the scrape interval detected so far: the one rule the
    /// engine, the daemon, `backtest`, `plan` and the demo use.
    pub fn cadence_secs(self, detected_scrape: Option<std::time::Duration>) -> i64 {
        match self {
            AnalysisInterval::Every(d) => d.as_secs_i64().max(1),
            AnalysisInterval::Auto => {
                let scrape = detected_scrape.unwrap_or(AUTO_FALLBACK).max(AUTO_FLOOR);
                // Whole seconds (the engine's clock), rounded up so that a look always finds a
                // new sample rather than occasionally none.
                i64::try_from(scrape.as_millis().div_ceil(1000)).unwrap_or(i64::MAX)
            }
        }
    }

    /// The fixed interval, if any.
    pub fn fixed(self) -> Option<Duration> {
        match self {
            AnalysisInterval::Every(d) => Some(d),
            AnalysisInterval::Auto => None,
        }
    }
}

impl fmt::Display for AnalysisInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnalysisInterval::Auto => f.write_str("auto"),
            AnalysisInterval::Every(d) => d.fmt(f),
        }
    }
}

impl Serialize for AnalysisInterval {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AnalysisInterval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        if raw.trim() == "auto" {
            return Ok(AnalysisInterval::Auto);
        }
        Duration::parse(&raw)
            .map(AnalysisInterval::Every)
            .map_err(|e| serde::de::Error::custom(format!("{e}, or auto (look at every scrape)")))
    }
}

impl schemars::JsonSchema for AnalysisInterval {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AnalysisInterval".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^auto$|^([0-9]+[smhd])+$|^0$",
            "description": "auto (look at every scrape, the default) or a duration such as 30s or 1m."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn auto_follows_the_detected_scrape_with_a_floor_and_a_fallback() {
        let auto = AnalysisInterval::Auto;
        assert_eq!(auto.cadence_secs(Some(Std::from_secs(30))), 30);
        assert_eq!(auto.cadence_secs(Some(Std::from_millis(10_200))), 11);
        assert_eq!(auto.cadence_secs(Some(Std::from_secs(1))), 5);
        assert_eq!(auto.cadence_secs(None), 15);
        let fixed = AnalysisInterval::Every(Duration::from_mins(1));
        assert_eq!(fixed.cadence_secs(Some(Std::from_secs(10))), 60);
    }

    #[test]
    fn reads_and_writes_auto_or_a_duration() {
        let read = |s: &str| serde_json::from_value::<AnalysisInterval>(serde_json::json!(s));
        assert_eq!(read("auto").unwrap(), AnalysisInterval::Auto);
        assert_eq!(read("30s").unwrap(), AnalysisInterval::Every(Duration::from_secs(30)));
        let e = read("often").unwrap_err().to_string();
        assert!(e.contains("or auto"), "{e}");
        assert_eq!(serde_json::to_value(AnalysisInterval::Auto).unwrap(), "auto");
        assert_eq!(serde_json::to_value(AnalysisInterval::Every(Duration::from_secs(90))).unwrap(), "1m30s");
    }
}
