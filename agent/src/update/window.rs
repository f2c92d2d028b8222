//! The site's maintenance window: when a node may reboot into an installed release. Written as an
//! operator would say it — `"02:00-04:00"` (every day) or `"sat,sun 22:00-02:00"` — in UTC, the
//! node's only time zone. A window may run past midnight; it then belongs to the day it starts on.

use jiff::Timestamp;
use jiff::civil::{Time, Weekday};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A recurring window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// Days it starts on; empty means every day.
    days: Vec<Weekday>,
    start: Time,
    end: Time,
    text: String,
}

impl MaintenanceWindow {
    /// Parses `"[day,day…] HH:MM-HH:MM"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (days, span) = match text.rsplit_once(' ') {
            Some((days, span)) => (parse_days(days)?, span),
            None => (Vec::new(), text),
        };
        let (start, end) = span
            .split_once('-')
            .ok_or_else(|| format!("{text:?}: expected HH:MM-HH:MM, e.g. \"02:00-04:00\""))?;
        let time = |value: &str| {
            Time::strptime("%H:%M", value.trim())
                .map_err(|_| format!("{text:?}: {value:?} is not a time of day (HH:MM)"))
        };
        let (start, end) = (time(start)?, time(end)?);
        if start == end {
            return Err(format!("{text:?}: the window is empty"));
        }
        Ok(Self {
            days,
            start,
            end,
            text: text.to_owned(),
        })
    }

    /// Whether `now` (UTC) lies inside the window.
    pub fn contains(&self, now: Timestamp) -> bool {
        let now = now.to_zoned(jiff::tz::TimeZone::UTC);
        let (day, time) = (now.weekday(), now.time());
        let starts_on = |weekday: Weekday| self.days.is_empty() || self.days.contains(&weekday);
        if self.start < self.end {
            starts_on(day) && self.start <= time && time < self.end
        } else {
            // Past midnight: the evening part belongs to today, the morning part to yesterday.
            (starts_on(day) && time >= self.start) || (starts_on(day.previous()) && time < self.end)
        }
    }
}

fn parse_days(text: &str) -> Result<Vec<Weekday>, String> {
    text.split(',')
        .map(|day| match day.trim().to_ascii_lowercase().as_str() {
            "mon" => Ok(Weekday::Monday),
            "tue" => Ok(Weekday::Tuesday),
            "wed" => Ok(Weekday::Wednesday),
            "thu" => Ok(Weekday::Thursday),
            "fri" => Ok(Weekday::Friday),
            "sat" => Ok(Weekday::Saturday),
            "sun" => Ok(Weekday::Sunday),
            other => Err(format!(
                "{other:?} is not a day (mon, tue, wed, thu, fri, sat, sun)"
            )),
        })
        .collect()
}

impl std::fmt::Display for MaintenanceWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for MaintenanceWindow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for MaintenanceWindow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn a_daily_window_opens_and_closes_on_the_minute() {
        let window = MaintenanceWindow::parse("02:00-04:00").expect("window");
        assert!(!window.contains(at("2026-12-05T01:59:59Z")));
        assert!(window.contains(at("2026-12-05T02:00:00Z")));
        assert!(window.contains(at("2026-12-06T03:59:00Z")));
        assert!(!window.contains(at("2026-12-06T04:00:00Z")));
    }

    #[test]
    fn a_weekend_window_past_midnight_belongs_to_the_day_it_starts_on() {
        let window = MaintenanceWindow::parse("sat,sun 22:00-02:00").expect("window");
        // 2026-12-05 is a Saturday.
        assert!(window.contains(at("2026-12-05T23:00:00Z")));
        assert!(
            window.contains(at("2026-12-06T01:00:00Z")),
            "Saturday night"
        );
        assert!(window.contains(at("2026-12-07T01:00:00Z")), "Sunday night");
        assert!(!window.contains(at("2026-12-08T01:00:00Z")), "Monday night");
        assert!(
            !window.contains(at("2026-12-07T23:00:00Z")),
            "Monday evening"
        );
    }

    #[test]
    fn malformed_windows_say_what_is_expected() {
        for (text, expected) in [
            ("2-4", "HH:MM"),
            ("fri 02:00", "HH:MM-HH:MM"),
            ("someday 02:00-03:00", "not a day"),
            ("03:00-03:00", "empty"),
        ] {
            let err = MaintenanceWindow::parse(text).expect_err(text);
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
