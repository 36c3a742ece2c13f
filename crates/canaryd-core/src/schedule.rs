//! Schedule windows: when a policy's cron expression opens a window, and whether a time is
//! inside one. Pure: the time is an argument.
//!
//! Daylight saving time follows croner's documented rules, which we inherit and test:
//! a window that would open in the spring-forward gap (02:30 on the last Sunday of March in
//! Europe/Berlin) opens at the first valid minute after the gap (03:00); in the autumn
//! overlap a fixed-time window opens once, at the first pass of the repeated hour.

use crate::policy::{Schedule, Weekday};
use croner::Cron;
use jiff::{tz::TimeZone, Timestamp, Zoned};
use std::str::FromStr;

/// One opening of a schedule: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    /// True when `t` is inside the window.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// Parses a standard 5-field cron expression (or an alias such as `@daily`). Six- and
/// seven-field (seconds, years) forms are refused: a policy's windows are minute-grained.
pub(crate) fn parse_cron(expr: &str) -> Result<Cron, String> {
    let trimmed = expr.trim();
    let fields = trimmed.split_whitespace().count();
    if !trimmed.starts_with('@') && fields != 5 {
        return Err(format!("it has {fields} fields, not 5"));
    }
    Cron::from_str(trimmed).map_err(|e| e.to_string())
}

/// A schedule ready to be evaluated (cron and time zone parsed once).
#[derive(Debug, Clone)]
pub struct CompiledSchedule {
    cron: Cron,
    tz: TimeZone,
    window_secs: i64,
    days: Vec<Weekday>,
}

impl CompiledSchedule {
    /// Compiles a validated schedule; errors only if the policy was not validated.
    pub fn new(s: &Schedule) -> Result<Self, String> {
        Ok(CompiledSchedule {
            cron: parse_cron(&s.cron)?,
            tz: TimeZone::get(&s.time_zone).map_err(|e| e.to_string())?,
            window_secs: s.window.as_secs_i64(),
            days: s.days.clone(),
        })
    }

    /// The time zone windows are computed in.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    fn day_allowed(&self, z: &Zoned) -> bool {
        if self.days.is_empty() {
            return true;
        }
        let day = match z.weekday() {
            jiff::civil::Weekday::Monday => Weekday::Mon,
            jiff::civil::Weekday::Tuesday => Weekday::Tue,
            jiff::civil::Weekday::Wednesday => Weekday::Wed,
            jiff::civil::Weekday::Thursday => Weekday::Thu,
            jiff::civil::Weekday::Friday => Weekday::Fri,
            jiff::civil::Weekday::Saturday => Weekday::Sat,
            jiff::civil::Weekday::Sunday => Weekday::Sun,
        };
        self.days.contains(&day)
    }

    /// Window starts at or after `from`, in order (at most `limit`, within about 400 days).
    fn starts_from(&self, from: Timestamp, limit: usize) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut cursor = from.to_zoned(self.tz.clone());
        let mut inclusive = true;
        for _ in 0..(limit * 8 + 800) {
            let Ok(next) = self.cron.find_next_occurrence(&cursor, inclusive) else {
                break;
            };
            if next.timestamp().as_second() - from.as_second() > 400 * 86_400 {
                break;
            }
            if self.day_allowed(&next) {
                out.push(next.timestamp());
                if out.len() >= limit {
                    break;
                }
            }
            cursor = next;
            inclusive = false;
        }
        out
    }

    /// The window that contains `now`, if any.
    pub fn window_at(&self, now: Timestamp) -> Option<Window> {
        let earliest = Timestamp::from_second(now.as_second() - self.window_secs + 1).ok()?;
        // Windows may overlap (e.g. hourly cron, 3 h window): the latest start wins.
        self.starts_from(earliest, 64)
            .into_iter()
            .take_while(|s| *s <= now)
            .last()
            .map(|start| self.window_from(start))
    }

    /// The next `n` windows that open strictly after `now`.
    pub fn next_windows(&self, now: Timestamp, n: usize) -> Vec<Window> {
        let after = Timestamp::from_second(now.as_second() + 1).unwrap_or(now);
        self.starts_from(after, n).into_iter().map(|s| self.window_from(s)).collect()
    }

    fn window_from(&self, start: Timestamp) -> Window {
        let end = Timestamp::from_second(start.as_second().saturating_add(self.window_secs))
            .unwrap_or(Timestamp::MAX);
        Window { start, end }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Duration, OutsideWindow};

    fn berlin_2am() -> CompiledSchedule {
        CompiledSchedule::new(&Schedule {
            cron: "0 2 * * *".into(),
            time_zone: "Europe/Berlin".into(),
            window: Duration::from_mins(180),
            days: vec![],
            outside_window: OutsideWindow::Hold,
        })
        .unwrap()
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn window_opens_at_two_berlin_not_a_minute_before() {
        let s = berlin_2am();
        // 2026-11-23 02:00 CET = 01:00 UTC.
        assert_eq!(s.window_at(t("2026-11-23T00:59:00Z")), None);
        let w = s.window_at(t("2026-11-23T01:00:00Z")).unwrap();
        assert_eq!(w.start, t("2026-11-23T01:00:00Z"));
        assert_eq!(w.end, t("2026-11-23T04:00:00Z"));
        assert!(s.window_at(t("2026-11-23T03:59:59Z")).is_some());
        assert_eq!(s.window_at(t("2026-11-23T04:00:00Z")), None);
    }

    #[test]
    fn spring_forward_gap_opens_at_three_once() {
        // 2026-03-29: Berlin jumps 02:00 CET → 03:00 CEST; 03:00 CEST = 01:00 UTC.
        let s = berlin_2am();
        let next = s.next_windows(t("2026-03-28T12:00:00Z"), 2);
        assert_eq!(next[0].start, t("2026-03-29T01:00:00Z"));
        assert_eq!(next[1].start, t("2026-03-30T00:00:00Z"));
    }

    #[test]
    fn autumn_overlap_opens_once() {
        // 2026-10-25: 03:00 CEST → 02:00 CET, so 02:00 happens twice (00:00 and 01:00 UTC).
        let s = CompiledSchedule::new(&Schedule {
            cron: "30 2 * * *".into(),
            time_zone: "Europe/Berlin".into(),
            window: Duration::from_mins(30),
            days: vec![],
            outside_window: OutsideWindow::Hold,
        })
        .unwrap();
        let next = s.next_windows(t("2026-10-24T12:00:00Z"), 2);
        assert_eq!(next[0].start, t("2026-10-25T00:30:00Z"));
        assert_eq!(next[1].start, t("2026-10-26T01:30:00Z"));
    }

    #[test]
    fn days_filter_skips_weekends() {
        let mut spec = Schedule {
            cron: "0 2 * * *".into(),
            time_zone: "UTC".into(),
            window: Duration::from_mins(60),
            days: vec![Weekday::Mon],
            outside_window: OutsideWindow::Hold,
        };
        let s = CompiledSchedule::new(&spec).unwrap();
        // 2026-11-22 is a Sunday; the next allowed window is Monday 23rd, then Monday 30th.
        let next = s.next_windows(t("2026-11-22T00:00:00Z"), 2);
        assert_eq!(next[0].start, t("2026-11-23T02:00:00Z"));
        assert_eq!(next[1].start, t("2026-11-30T02:00:00Z"));
        spec.days = vec![];
        assert!(CompiledSchedule::new(&spec).unwrap().window_at(t("2026-11-22T02:30:00Z")).is_some());
    }

    #[test]
    fn refuses_six_field_cron() {
        assert!(parse_cron("0 0 2 * * *").is_err());
        assert!(parse_cron("0 2 * *").is_err());
        assert!(parse_cron("0 2 * * *").is_ok());
        assert!(parse_cron("61 2 * * *").is_err());
    }
}
