//! A site's maintenance window: when a node may reboot into an installed release. Written as an
//! operator would say it — `"02:00-04:00"` (every day) or `"sat,sun 22:00-02:00"` — in UTC, the
//! node's only time zone, so a window keeps its hours across the daylight-saving changes of the
//! site's country. A window may run past midnight; it then belongs to the day it starts on.
//!
//! It lives in the protocol because both sides read it: the node reboots in it, and the region
//! plans its offers ahead of it and gates on the window a node reports. One parser keeps the two
//! from disagreeing on when a window is open.

use jiff::Timestamp;
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The days in the order the canonical form lists them.
const WEEK: [(Weekday, &str); 7] = [
    (Weekday::Monday, "mon"),
    (Weekday::Tuesday, "tue"),
    (Weekday::Wednesday, "wed"),
    (Weekday::Thursday, "thu"),
    (Weekday::Friday, "fri"),
    (Weekday::Saturday, "sat"),
    (Weekday::Sunday, "sun"),
];

/// Why a window's text is not a window. Each names the text, since it comes from a config file
/// or from the region, and the reader must find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// No `HH:MM-HH:MM` span.
    #[error("{text:?}: expected HH:MM-HH:MM, e.g. \"02:00-04:00\"")]
    Span {
        /// The whole window.
        text: String,
    },
    /// A bound that is not a time of day.
    #[error("{text:?}: {value:?} is not a time of day (HH:MM)")]
    Time {
        /// The whole window.
        text: String,
        /// The bound.
        value: String,
    },
    /// A day that is not one of the seven.
    #[error("{text:?}: {day:?} is not a day (mon, tue, wed, thu, fri, sat, sun)")]
    Day {
        /// The whole window.
        text: String,
        /// The day.
        day: String,
    },
    /// A window that starts when it ends: never open, or always — either way not what was meant.
    #[error("{text:?}: the window is empty (it ends when it starts)")]
    Empty {
        /// The whole window.
        text: String,
    },
}

/// A recurring window. Two spellings of the same window are equal and print the same canonical
/// form (days in week order, each once, none when all seven), which is what a node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// Days it starts on, in week order; empty means every day.
    days: Vec<Weekday>,
    start: Time,
    end: Time,
}

impl MaintenanceWindow {
    /// Parses `"[day,day…] HH:MM-HH:MM"`.
    pub fn parse(text: &str) -> Result<Self, WindowError> {
        let text = text.trim();
        let (days, span) = match text.rsplit_once(' ') {
            Some((days, span)) => (parse_days(text, days)?, span),
            None => (Vec::new(), text),
        };
        let (start, end) = span.split_once('-').ok_or_else(|| WindowError::Span {
            text: text.to_owned(),
        })?;
        let time = |value: &str| {
            Time::strptime("%H:%M", value.trim()).map_err(|_| WindowError::Time {
                text: text.to_owned(),
                value: value.to_owned(),
            })
        };
        let (start, end) = (time(start)?, time(end)?);
        if start == end {
            return Err(WindowError::Empty {
                text: text.to_owned(),
            });
        }
        Ok(Self { days, start, end })
    }

    fn starts_on(&self, day: Weekday) -> bool {
        self.days.is_empty() || self.days.contains(&day)
    }

    /// Whether `now` (UTC) lies inside the window.
    pub fn contains(&self, now: Timestamp) -> bool {
        let now = now.to_zoned(TimeZone::UTC);
        let (day, time) = (now.weekday(), now.time());
        if self.start < self.end {
            self.starts_on(day) && self.start <= time && time < self.end
        } else {
            // Past midnight: the evening part belongs to today, the morning part to yesterday.
            (self.starts_on(day) && time >= self.start)
                || (self.starts_on(day.previous()) && time < self.end)
        }
    }

    /// When the window is next open: `after` itself while it is open, else the start of its next
    /// period. A region offers a release ahead of this instant, so the node has it staged by then.
    pub fn next_open(&self, after: Timestamp) -> Timestamp {
        if self.contains(after) {
            return after;
        }
        let today = after.to_zoned(TimeZone::UTC).date();
        // Today's start may still be ahead; otherwise one of the next seven days starts the window
        // (the same weekday a week on, at the latest).
        (0..=7)
            .filter_map(|days| today.checked_add(jiff::Span::new().days(days)).ok())
            .filter(|day| self.starts_on(day.weekday()))
            .filter_map(|day| day.to_datetime(self.start).to_zoned(TimeZone::UTC).ok())
            .map(|start| start.timestamp())
            .find(|start| *start > after)
            // Only at the end of representable time is there no next start.
            .unwrap_or(Timestamp::MAX)
    }
}

fn parse_days(text: &str, days: &str) -> Result<Vec<Weekday>, WindowError> {
    let mut named = Vec::new();
    for day in days.split(',') {
        let day = day.trim();
        let (weekday, _) = WEEK
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(day))
            .ok_or_else(|| WindowError::Day {
                text: text.to_owned(),
                day: day.to_owned(),
            })?;
        named.push(*weekday);
    }
    // Canonical: week order, each day once, and all seven the same as none.
    let days: Vec<Weekday> = WEEK
        .iter()
        .map(|(weekday, _)| *weekday)
        .filter(|weekday| named.contains(weekday))
        .collect();
    Ok(if days.len() == WEEK.len() {
        Vec::new()
    } else {
        days
    })
}

impl std::fmt::Display for MaintenanceWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days: Vec<&str> = WEEK
            .iter()
            .filter(|(weekday, _)| self.days.contains(weekday))
            .map(|(_, name)| *name)
            .collect();
        if !days.is_empty() {
            write!(f, "{} ", days.join(","))?;
        }
        write!(
            f,
            "{}-{}",
            self.start.strftime("%H:%M"),
            self.end.strftime("%H:%M")
        )
    }
}

impl std::str::FromStr for MaintenanceWindow {
    type Err = WindowError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl Serialize for MaintenanceWindow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
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

    fn window(text: &str) -> MaintenanceWindow {
        MaintenanceWindow::parse(text).expect(text)
    }

    #[test]
    fn a_daily_window_opens_and_closes_on_the_minute() {
        let window = window("02:00-04:00");
        assert!(!window.contains(at("2026-12-05T01:59:59Z")));
        assert!(window.contains(at("2026-12-05T02:00:00Z")));
        assert!(window.contains(at("2026-12-06T03:59:00Z")));
        assert!(!window.contains(at("2026-12-06T04:00:00Z")));
    }

    #[test]
    fn a_weekend_window_past_midnight_belongs_to_the_day_it_starts_on() {
        let window = window("sat,sun 22:00-02:00");
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
    fn malformed_windows_say_what_is_expected_and_name_the_text() {
        for (text, expected) in [
            ("2-4", "HH:MM"),
            ("fri 02:00", "HH:MM-HH:MM"),
            ("someday 02:00-03:00", "not a day"),
            ("sat, 02:00-03:00", "not a day"),
            ("03:00-03:00", "empty"),
            ("02:00-04:00 Europe/Berlin", "not a day"),
        ] {
            let err = MaintenanceWindow::parse(text).expect_err(text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.contains(&format!("{text:?}")), "{text}: {err}");
        }
    }

    #[test]
    fn spellings_of_one_window_are_equal_and_print_one_canonical_form() {
        let canonical = window("sat,sun 22:00-02:00");
        for spelling in ["Sun, SAT 22:00-02:00", " sun,sat,sun 22:00-02:00 "] {
            assert_eq!(window(spelling), canonical, "{spelling}");
        }
        assert_eq!(canonical.to_string(), "sat,sun 22:00-02:00");
        assert_eq!(
            window("fri,mon 2:00-4:30").to_string(),
            "mon,fri 02:00-04:30"
        );
        assert_eq!(
            window("mon,tue,wed,thu,fri,sat,sun 02:00-04:00"),
            window("02:00-04:00"),
            "all seven days are every day"
        );
        assert_eq!(window("02:00-04:00").to_string(), "02:00-04:00");
        let json = serde_json::to_string(&window("sun,sat 22:00-02:00")).expect("json");
        assert_eq!(json, r#""sat,sun 22:00-02:00""#);
        let back: MaintenanceWindow = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, canonical);
    }

    /// Checks when `text` next opens from each `(after, opens, why)`.
    fn assert_opens(text: &str, cases: &[(&str, &str, &str)]) {
        let window = window(text);
        for (after, opens, why) in cases {
            assert_eq!(
                window.next_open(at(after)),
                at(opens),
                "{text} from {after}: {why}"
            );
        }
    }

    #[test]
    fn next_open_is_now_while_open_else_the_next_start() {
        assert_opens(
            "02:00-04:00",
            &[
                ("2026-12-05T03:00:00Z", "2026-12-05T03:00:00Z", "open now"),
                (
                    "2026-12-05T01:00:00Z",
                    "2026-12-05T02:00:00Z",
                    "later today",
                ),
                (
                    "2026-12-05T04:00:00Z",
                    "2026-12-06T02:00:00Z",
                    "closed on the minute it ends",
                ),
            ],
        );
    }

    #[test]
    fn next_open_skips_the_days_a_window_does_not_start_on() {
        // 2026-12-07 is a Monday.
        assert_opens(
            "sat,sun 22:00-02:00",
            &[
                (
                    "2026-12-07T12:00:00Z",
                    "2026-12-12T22:00:00Z",
                    "Monday noon: Saturday",
                ),
                (
                    "2026-12-08T01:00:00Z",
                    "2026-12-12T22:00:00Z",
                    "Monday night is not Sunday's",
                ),
                (
                    "2026-12-07T01:30:00Z",
                    "2026-12-07T01:30:00Z",
                    "Sunday's runs into Monday",
                ),
                (
                    "2026-12-06T12:00:00Z",
                    "2026-12-06T22:00:00Z",
                    "Sunday noon: that evening",
                ),
            ],
        );
        assert_opens(
            "tue 01:00-02:00",
            &[
                ("2026-12-08T01:00:00Z", "2026-12-08T01:00:00Z", "opens now"),
                (
                    "2026-12-08T02:00:00Z",
                    "2026-12-15T01:00:00Z",
                    "just closed: a week on",
                ),
            ],
        );
    }

    #[test]
    fn next_open_keeps_utc_hours_across_daylight_saving_changes() {
        // Europe went to summer time on 2026-03-29 at 01:00 UTC and back on 2026-10-25: the
        // window's hours are UTC, so neither day is longer or shorter for it.
        assert_opens(
            "02:00-04:00",
            &[
                (
                    "2026-03-29T00:30:00Z",
                    "2026-03-29T02:00:00Z",
                    "the night of the change",
                ),
                (
                    "2026-03-28T04:00:00Z",
                    "2026-03-29T02:00:00Z",
                    "22 hours, not 21",
                ),
                (
                    "2026-10-24T04:00:00Z",
                    "2026-10-25T02:00:00Z",
                    "22 hours, not 23",
                ),
                ("2026-10-25T02:30:00Z", "2026-10-25T02:30:00Z", "open"),
            ],
        );
    }

    #[test]
    fn next_open_always_lies_in_the_window_and_nothing_before_it_does() {
        let windows = ["sat,sun 22:00-02:00", "wed 23:30-00:15", "09:00-17:00"];
        let mut after = at("2026-12-01T00:00:00Z");
        while after < at("2026-12-15T00:00:00Z") {
            for text in windows {
                let window = window(text);
                let open = window.next_open(after);
                assert!(window.contains(open), "{text} from {after}: {open}");
                let mut probe = after;
                while probe < open {
                    assert!(!window.contains(probe), "{text} open at {probe} < {open}");
                    probe += jiff::SignedDuration::from_mins(15);
                }
            }
            after += jiff::SignedDuration::from_mins(37);
        }
    }
}
