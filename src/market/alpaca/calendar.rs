//! Alpaca's market clock (`GET /v2/clock`) and trading calendar (`GET /v2/calendar`) from
//! the trading API, and their comparison with our rule-based NYSE calendar.

use super::rest::{AlpacaData, DataError};
use crate::market::calendar::{TIME_ZONE, UsEquityCalendar, exchange_date};
use crate::market::live::SessionCalendar;
use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `GET /v2/clock`: whether the market is open now and when it next opens and closes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct AlpacaClock {
    /// Alpaca's current time.
    pub timestamp: DateTime<Utc>,
    /// Whether the regular session is open.
    pub is_open: bool,
    /// Next regular-session open.
    pub next_open: DateTime<Utc>,
    /// Next regular-session close.
    pub next_close: DateTime<Utc>,
}

#[derive(Deserialize)]
struct WireDay {
    date: NaiveDate,
    open: String,
    close: String,
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H%M"))
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S"))
        .ok()
}

/// Alpaca's trading calendar over a range of dates: the regular-session open and close
/// (exchange time, America/New_York) of every trading day; a date of the range that is not a
/// key is a day the market is closed. Half days show the early close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlpacaCalendar {
    /// First date of the range asked for.
    pub start: NaiveDate,
    /// Last date of the range asked for (inclusive).
    pub end: NaiveDate,
    /// Trading days: (open, close), exchange time.
    pub days: BTreeMap<NaiveDate, (NaiveTime, NaiveTime)>,
}

fn instant(date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let local = date.and_time(time);
    match TIME_ZONE.from_local_datetime(&local).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => crate::market::timeframe::local_to_utc(TIME_ZONE, local),
    }
}

fn hours(h: Option<(NaiveTime, NaiveTime)>) -> String {
    match h {
        Some((open, close)) => format!("{}–{}", open.format("%H:%M"), close.format("%H:%M")),
        None => "closed".to_string(),
    }
}

impl AlpacaCalendar {
    /// Whether `date` lies in the range the calendar covers.
    pub fn covers(&self, date: NaiveDate) -> bool {
        self.start <= date && date <= self.end
    }

    /// Open and close (exchange time) of `date`, `None` when closed or outside the range.
    pub fn hours(&self, date: NaiveDate) -> Option<(NaiveTime, NaiveTime)> {
        self.days.get(&date).copied()
    }

    /// The regular session of `date` as UTC instants.
    pub fn session(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let (open, close) = self.hours(date)?;
        Some((instant(date, open), instant(date, close)))
    }

    /// When the regular session of `date` closes (the early close on half days).
    pub fn session_close(&self, date: NaiveDate) -> Option<DateTime<Utc>> {
        self.session(date).map(|(_, close)| close)
    }

    /// Whether the regular session is open at `t` (open inclusive, close exclusive).
    pub fn is_open(&self, t: DateTime<Utc>) -> bool {
        self.session(exchange_date(t))
            .is_some_and(|(open, close)| open <= t && t < close)
    }

    /// Where Alpaca's calendar and ours disagree over the covered range: holidays one of them
    /// has and the other not, early closes and late opens that differ. One readable line per
    /// date, in date order (empty when they agree).
    pub fn differences(&self, ours: &UsEquityCalendar) -> Vec<String> {
        let mut out = Vec::new();
        for date in self.start.iter_days().take_while(|d| *d <= self.end) {
            let theirs = self.hours(date);
            let mine = ours.session_hours(date);
            if theirs == mine {
                continue;
            }
            let why = match (theirs, mine) {
                (None, Some(_)) => "Alpaca has the market closed".to_string(),
                (Some(_), None) => match ours.holiday(date) {
                    Some(h) => format!("Alpaca has the market open; ours: {h}"),
                    None => "Alpaca has the market open; ours: weekend".to_string(),
                },
                _ => "session hours differ".to_string(),
            };
            out.push(format!(
                "{date}: {why} (Alpaca {}, ours {})",
                hours(theirs),
                hours(mine)
            ));
        }
        out
    }
}

impl SessionCalendar for AlpacaCalendar {
    /// Alpaca's sessions inside the covered range, our NYSE calendar outside it.
    fn session_bounds(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if self.covers(date) {
            self.session(date)
        } else {
            UsEquityCalendar.session_bounds(date)
        }
    }
}

impl AlpacaData {
    /// `GET /v2/clock` on the trading API.
    pub async fn clock(&self) -> Result<AlpacaClock, DataError> {
        let url = format!("{}/v2/clock", self.trading_url);
        self.get_json(&url, "/v2/clock", &[]).await
    }

    /// `GET /v2/calendar?start=..&end=..` on the trading API: the trading days from `start`
    /// to `end` (both inclusive).
    pub async fn calendar(
        &self,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<AlpacaCalendar, DataError> {
        let path = "/v2/calendar";
        let url = format!("{}{path}", self.trading_url);
        let query = [
            ("start", start.format("%Y-%m-%d").to_string()),
            ("end", end.format("%Y-%m-%d").to_string()),
        ];
        let wire: Vec<WireDay> = self.get_json(&url, path, &query).await?;
        let mut days = BTreeMap::new();
        for d in wire {
            let (Some(open), Some(close)) = (parse_time(&d.open), parse_time(&d.close)) else {
                return Err(DataError::Decode {
                    broker: self.name.clone(),
                    what: format!("GET {path}"),
                    reason: format!(
                        "{}: open '{}' / close '{}' are not HH:MM",
                        d.date, d.open, d.close
                    ),
                });
            };
            if d.date >= start && d.date <= end {
                days.insert(d.date, (open, close));
            }
        }
        Ok(AlpacaCalendar { start, end, days })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }
    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn differences_name_holidays_and_early_closes() {
        // Thanksgiving week 2024: Thu 28 holiday, Fri 29 closes at 13:00.
        let mut days = BTreeMap::new();
        days.insert(d("2024-11-25"), (t(9, 30), t(16, 0)));
        days.insert(d("2024-11-26"), (t(9, 30), t(16, 0)));
        // 27th missing: Alpaca says closed, ours open.
        days.insert(d("2024-11-28"), (t(9, 30), t(16, 0))); // Alpaca open on Thanksgiving
        days.insert(d("2024-11-29"), (t(9, 30), t(16, 0))); // no early close
        let cal = AlpacaCalendar {
            start: d("2024-11-25"),
            end: d("2024-12-01"),
            days,
        };
        let diffs = cal.differences(&UsEquityCalendar);
        assert_eq!(diffs.len(), 3, "{diffs:?}");
        assert!(diffs[0].starts_with("2024-11-27: Alpaca has the market closed"));
        assert!(diffs[1].contains("Thanksgiving"), "{}", diffs[1]);
        assert!(
            diffs[2].contains("Alpaca 09:30–16:00, ours 09:30–13:00"),
            "{}",
            diffs[2]
        );
        assert!(cal.is_open("2024-11-29T19:00:00Z".parse().unwrap()));
        assert!(!cal.is_open("2024-11-27T19:00:00Z".parse().unwrap()));
        assert_eq!(
            cal.session_close(d("2024-11-29")),
            Some("2024-11-29T21:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn times_in_both_spellings() {
        assert_eq!(parse_time("09:30"), Some(t(9, 30)));
        assert_eq!(parse_time("0400"), Some(t(4, 0)));
        assert_eq!(parse_time("x"), None);
    }
}
