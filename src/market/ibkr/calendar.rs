//! IB's session hours: the `liquidHours` of a contract's details (the regular session of
//! its exchange, one entry per day, `20240105:0930-20240105:1600` or `20240106:CLOSED`, in
//! the contract's `timeZoneId`), as a [`SessionCalendar`].

use crate::market::calendar::UsEquityCalendar;
use crate::market::live::SessionCalendar;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use std::collections::BTreeMap;

/// The open and close (UTC) of one session.
pub type Session = (DateTime<Utc>, DateTime<Utc>);

/// Regular sessions by exchange-local date, as IB reported them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IbkrCalendar {
    /// date → open and close (UTC), `None` for a closed day.
    days: BTreeMap<NaiveDate, Option<Session>>,
}

fn local(stamp: &str, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(stamp, "%Y%m%d:%H%M").ok()?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

impl IbkrCalendar {
    /// Reads `liquid_hours` entries (`;`-separated in TWS, one per element here) in time
    /// zone `time_zone_id` (an IANA name such as `US/Eastern`; unknown names read as New
    /// York time). Entries that do not parse are skipped; several ranges on one day
    /// (a midday break) span from the first open to the last close.
    pub fn parse(liquid_hours: &[String], time_zone_id: &str) -> IbkrCalendar {
        let tz: chrono_tz::Tz = time_zone_id.parse().unwrap_or(chrono_tz::America::New_York);
        let mut days = BTreeMap::new();
        for entry in liquid_hours.iter().flat_map(|e| e.split(';')) {
            let entry = entry.trim();
            let Some((day, rest)) = entry.split_once(':') else {
                continue;
            };
            let Ok(date) = NaiveDate::parse_from_str(day, "%Y%m%d") else {
                continue;
            };
            if rest == "CLOSED" {
                days.insert(date, None);
                continue;
            }
            let mut bounds: Option<Session> = None;
            for range in rest.split(',') {
                let Some((from, to)) = range.split_once('-') else {
                    continue;
                };
                // v970+: `20240105:0930-20240105:1600`; older: `0930-1600` on the day.
                let full = |t: &str| {
                    if t.contains(':') {
                        t.to_string()
                    } else {
                        format!("{day}:{t}")
                    }
                };
                let (Some(open), Some(close)) = (local(&full(from), tz), local(&full(to), tz))
                else {
                    continue;
                };
                bounds = Some(match bounds {
                    Some((o, c)) => (o.min(open), c.max(close)),
                    None => (open, close),
                });
            }
            if let Some(b) = bounds {
                days.insert(date, Some(b));
            }
        }
        IbkrCalendar { days }
    }

    /// Whether IB's hours cover `date`.
    pub fn covers(&self, date: NaiveDate) -> bool {
        self.days.contains_key(&date)
    }

    /// How many days IB reported.
    pub fn len(&self) -> usize {
        self.days.len()
    }

    /// Whether IB reported no day.
    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }
}

impl SessionCalendar for IbkrCalendar {
    /// IB's sessions on the days it reported, our NYSE calendar on the others.
    fn session_bounds(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        match self.days.get(&date) {
            Some(b) => *b,
            None => UsEquityCalendar.session_bounds(date),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_liquid_hours_in_their_zone() {
        let c = IbkrCalendar::parse(
            &[
                "20240105:0930-20240105:1600".to_string(),
                "20240106:CLOSED".to_string(),
                "20240108:0930-1600".to_string(),
            ],
            "US/Eastern",
        );
        let d = NaiveDate::from_ymd_opt(2024, 1, 5).unwrap();
        let (open, close) = c.session_bounds(d).unwrap();
        assert_eq!(open.to_rfc3339(), "2024-01-05T14:30:00+00:00");
        assert_eq!(close.to_rfc3339(), "2024-01-05T21:00:00+00:00");
        assert_eq!(c.session_bounds(d.succ_opt().unwrap()), None);
        let (open, _) = c
            .session_bounds(NaiveDate::from_ymd_opt(2024, 1, 8).unwrap())
            .unwrap();
        assert_eq!(open.to_rfc3339(), "2024-01-08T14:30:00+00:00");
        assert_eq!(c.len(), 3);
    }
}
