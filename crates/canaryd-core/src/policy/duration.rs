//! Human durations in policies: `30s`, `5m`, `1h30m`, `2h`, `1d`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A non-negative duration with second resolution, written like `90s`, `5m`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    secs: u64,
}

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a duration: {reason}; write e.g. 30s, 5m, 1h30m or 1d")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

impl Duration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration { secs }
    }
    /// A duration of `mins` minutes.
    pub const fn from_mins(mins: u64) -> Self {
        Duration { secs: mins * 60 }
    }
    /// Length in seconds.
    pub const fn as_secs(self) -> u64 {
        self.secs
    }
    /// Length in seconds, as the signed type timestamps use.
    pub fn as_secs_i64(self) -> i64 {
        i64::try_from(self.secs).unwrap_or(i64::MAX)
    }
    /// Conversion to the standard library type, for timers in the IO shell.
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.secs)
    }

    /// Parses `1h30m`, `90s`, `5m`, `2d`; a bare `0` is zero. Units: s, m, h, d.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let err = |reason| DurationError { input: input.to_string(), reason };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s == "0" {
            return Ok(Duration { secs: 0 });
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for ch in s.chars() {
            if ch.is_ascii_digit() {
                digits.push(ch);
                continue;
            }
            let unit = match ch {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(err("units are s, m, h and d")),
            };
            if digits.is_empty() {
                return Err(err("a unit needs a number before it"));
            }
            let n: u64 = digits.parse().map_err(|_| err("the number is too large"))?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("the number is too large"))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(err("the last number has no unit"));
        }
        Ok(Duration { secs: total })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (d, h, m, s) = (self.secs / 86_400, self.secs / 3600 % 24, self.secs / 60 % 60, self.secs % 60);
        if self.secs == 0 {
            return f.write_str("0s");
        }
        let mut out = String::new();
        for (n, u) in [(d, 'd'), (h, 'h'), (m, 'm'), (s, 's')] {
            if n > 0 {
                out.push_str(&format!("{n}{u}"));
            }
        }
        f.write_str(&out)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Duration::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+[smhd])+$|^0$",
            "description": "A duration such as 30s, 5m, 1h30m or 1d."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        assert_eq!(Duration::parse("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(Duration::parse("90s").unwrap().as_secs(), 90);
        assert_eq!(Duration::parse("2d").unwrap().as_secs(), 172_800);
        assert_eq!(Duration::parse("0").unwrap().as_secs(), 0);
    }

    #[test]
    fn rejects_unitless_and_unknown_units() {
        assert!(Duration::parse("10").is_err());
        assert!(Duration::parse("5 minutes").is_err());
        assert!(Duration::parse("m").is_err());
        assert!(Duration::parse("").is_err());
        assert!(Duration::parse("99999999999999999999s").is_err());
    }

    #[test]
    fn displays_round_trip() {
        for s in ["1h30m", "90s", "1d2h", "0s", "5m"] {
            let d = Duration::parse(s).unwrap();
            assert_eq!(Duration::parse(&d.to_string()).unwrap(), d);
        }
        assert_eq!(Duration::parse("90s").unwrap().to_string(), "1m30s");
    }
}
