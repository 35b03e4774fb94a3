//! Bar timeframes (`1m` … `1w`) and their period arithmetic.
//!
//! A bar is stamped with the start of its period; it becomes visible when its period closes
//! (DESIGN.md §4). Intraday periods are aligned to the clock in the market's time zone
//! (5-minute bars start at :00, :05, …; 4-hour bars at 00:00, 04:00, … local time); daily bars
//! start at local midnight and weekly bars at Monday 00:00 local time, so a daylight-saving
//! change makes a day 23 or 25 hours long.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A bar period. Serialized as `1m`, `5m`, `15m`, `30m`, `1h`, `4h`, `1d`, `1w`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Timeframe {
    /// One minute.
    #[serde(rename = "1m")]
    M1,
    /// Five minutes.
    #[serde(rename = "5m")]
    M5,
    /// Fifteen minutes.
    #[serde(rename = "15m")]
    M15,
    /// Thirty minutes.
    #[serde(rename = "30m")]
    M30,
    /// One hour.
    #[serde(rename = "1h")]
    H1,
    /// Four hours.
    #[serde(rename = "4h")]
    H4,
    /// One calendar day (local midnight to local midnight).
    #[serde(rename = "1d")]
    D1,
    /// One week, Monday 00:00 to the next Monday 00:00 local time.
    #[serde(rename = "1w")]
    W1,
}

impl Timeframe {
    /// Every timeframe, finest first.
    pub const ALL: [Timeframe; 8] = [
        Timeframe::M1,
        Timeframe::M5,
        Timeframe::M15,
        Timeframe::M30,
        Timeframe::H1,
        Timeframe::H4,
        Timeframe::D1,
        Timeframe::W1,
    ];

    /// The configuration spelling: `1m`, `5m`, … `1w`.
    pub fn as_str(self) -> &'static str {
        match self {
            Timeframe::M1 => "1m",
            Timeframe::M5 => "5m",
            Timeframe::M15 => "15m",
            Timeframe::M30 => "30m",
            Timeframe::H1 => "1h",
            Timeframe::H4 => "4h",
            Timeframe::D1 => "1d",
            Timeframe::W1 => "1w",
        }
    }

    /// The identifier prefix that names this timeframe inside rule expressions
    /// (`m1`, `m5`, `m15`, `m30`, `h1`, `h4`, `d1`, `w1`), as in `d1.sma_200`.
    pub fn expr_prefix(self) -> &'static str {
        match self {
            Timeframe::M1 => "m1",
            Timeframe::M5 => "m5",
            Timeframe::M15 => "m15",
            Timeframe::M30 => "m30",
            Timeframe::H1 => "h1",
            Timeframe::H4 => "h4",
            Timeframe::D1 => "d1",
            Timeframe::W1 => "w1",
        }
    }

    /// The timeframe an expression prefix names (`d1` → `1d`).
    pub fn from_expr_prefix(prefix: &str) -> Option<Timeframe> {
        Timeframe::ALL
            .into_iter()
            .find(|t| t.expr_prefix() == prefix)
    }

    /// Nominal length in seconds (a day is 86,400 s even across a DST change; use
    /// [`Timeframe::period_end`] for exact boundaries).
    pub fn nominal_seconds(self) -> i64 {
        match self {
            Timeframe::M1 => 60,
            Timeframe::M5 => 300,
            Timeframe::M15 => 900,
            Timeframe::M30 => 1_800,
            Timeframe::H1 => 3_600,
            Timeframe::H4 => 14_400,
            Timeframe::D1 => 86_400,
            Timeframe::W1 => 604_800,
        }
    }

    /// Whether the period is shorter than a day.
    pub fn is_intraday(self) -> bool {
        self < Timeframe::D1
    }

    /// Whether bars of `self` can be built by aggregating bars of `finer`: every period of
    /// `self` is a whole number of periods of `finer`. (`1m` → `5m`, `1h` → `4h`, `1d` → `1w`;
    /// not `1w` → `1d`.)
    pub fn can_resample_from(self, finer: Timeframe) -> bool {
        finer <= self
    }

    /// The start (UTC) of the period of this timeframe that contains `t`, with periods
    /// aligned in time zone `tz`.
    pub fn period_start(self, t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let local = t.with_timezone(&tz).naive_local();
        let start_local: NaiveDateTime = match self {
            Timeframe::D1 => local.date().and_hms_opt(0, 0, 0).unwrap_or(local),
            Timeframe::W1 => {
                let days = local.date().weekday().num_days_from_monday() as i64;
                (local.date() - Duration::days(days))
                    .and_hms_opt(0, 0, 0)
                    .unwrap_or(local)
            }
            _ => {
                let secs = self.nominal_seconds();
                let midnight = local.date().and_hms_opt(0, 0, 0).unwrap_or(local);
                let since = (local - midnight).num_seconds();
                midnight + Duration::seconds(since - since.rem_euclid(secs))
            }
        };
        local_to_utc(tz, start_local)
    }

    /// The end (UTC, exclusive) of the period that starts at `start`: the instant the bar
    /// closes and becomes visible.
    pub fn period_end(self, start: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        // Periods are aligned on the local clock, so the end is the local start plus the
        // nominal length: across a DST change a 4-hour period lasts 3 or 5 hours, exactly
        // as the periods `period_start` assigns bars to.
        let local = start.with_timezone(&tz).naive_local();
        let length = match self {
            Timeframe::D1 => Duration::days(1),
            Timeframe::W1 => Duration::days(7),
            _ => Duration::seconds(self.nominal_seconds()),
        };
        local_to_utc(tz, local + length).max(start + Duration::seconds(1))
    }
}

/// Converts a local wall-clock time to UTC. In a DST gap the time is moved forward by the
/// gap; in a DST overlap the earlier instant is taken.
pub fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(a, _) => a.with_timezone(&Utc),
        chrono::LocalResult::None => {
            let shifted = local + Duration::hours(1);
            match tz.from_local_datetime(&shifted) {
                chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
                    t.with_timezone(&Utc)
                }
                chrono::LocalResult::None => Utc.from_utc_datetime(&local),
            }
        }
    }
}

/// Local midnight of `date` in `tz`, as UTC.
pub fn local_midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    local_to_utc(tz, date.and_hms_opt(0, 0, 0).unwrap_or_default())
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a string that is not a timeframe.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown timeframe '{0}' (expected one of 1m, 5m, 15m, 30m, 1h, 4h, 1d, 1w)")]
pub struct UnknownTimeframe(pub String);

impl FromStr for Timeframe {
    type Err = UnknownTimeframe;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timeframe::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTimeframe(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn intraday_periods_align_to_the_local_clock() {
        let tz: Tz = "America/New_York".parse().unwrap();
        // 09:37 EST = 14:37 UTC
        let t = utc("2012-01-03T14:37:10Z");
        assert_eq!(
            Timeframe::M5.period_start(t, tz),
            utc("2012-01-03T14:35:00Z")
        );
        assert_eq!(
            Timeframe::H1.period_start(t, tz),
            utc("2012-01-03T14:00:00Z")
        );
        assert_eq!(
            Timeframe::H4.period_start(t, tz),
            utc("2012-01-03T13:00:00Z")
        );
        assert_eq!(
            Timeframe::D1.period_start(t, tz),
            utc("2012-01-03T05:00:00Z")
        );
        // Tuesday → Monday 2 January
        assert_eq!(
            Timeframe::W1.period_start(t, tz),
            utc("2012-01-02T05:00:00Z")
        );
    }

    #[test]
    fn a_day_across_the_spring_dst_change_lasts_23_hours() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let start = local_midnight(tz, NaiveDate::from_ymd_opt(2012, 3, 11).unwrap());
        let end = Timeframe::D1.period_end(start, tz);
        assert_eq!((end - start).num_hours(), 23);
    }

    #[test]
    fn a_four_hour_period_across_the_autumn_dst_change_lasts_five_hours() {
        let tz: Tz = "America/New_York".parse().unwrap();
        // 2012-11-04: clocks go back from 02:00 EDT to 01:00 EST.
        let start = Timeframe::H4.period_start(utc("2012-11-04T06:30:00Z"), tz);
        assert_eq!(start, utc("2012-11-04T04:00:00Z"));
        assert_eq!(
            Timeframe::H4.period_end(start, tz),
            utc("2012-11-04T09:00:00Z")
        );
        // A bar at 03:30 EST belongs to the same 00:00-04:00 local period.
        assert_eq!(
            Timeframe::H4.period_start(utc("2012-11-04T08:30:00Z"), tz),
            start
        );
    }

    #[test]
    fn round_trips_its_spelling() {
        for t in Timeframe::ALL {
            assert_eq!(t.as_str().parse::<Timeframe>().unwrap(), t);
            assert_eq!(Timeframe::from_expr_prefix(t.expr_prefix()), Some(t));
        }
        assert!("2h".parse::<Timeframe>().is_err());
    }
}
