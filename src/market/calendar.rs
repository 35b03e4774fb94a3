//! US equity market calendar: NYSE trading days, holidays and session hours.
//!
//! The calendar is rule-based, so it answers for any date; the rules encode the exchange's
//! practice from 1990 to today and its published rules going forward, and they are checked
//! for every date from [`FIRST_YEAR`] to [`LAST_YEAR`]. Dates before 1990 get the same rules,
//! which is not what the exchange did then (it kept other holidays and closed on other days).
//!
//! Why not a crate: `trading-calendar` (0.2, years 2020–2030) and `nyse-holiday-cal` (0.2,
//! years 2020–2028) hold tables of the holidays the exchange has published and answer
//! "out of range" for any other year. The replay data this project ships spans 1996–2018 and
//! backtests reach further back, so those tables cannot be the source. `nyse-holiday-cal` is
//! used as an independent check in the tests instead.
//!
//! # Rules
//!
//! Sources: NYSE Rule 7.2 (holidays), the exchange's published holiday and early-close
//! calendars, and its history of closings ("NYSE Closings", the list behind the exchange's
//! historical calendars).
//!
//! Regular session: 09:30–16:00 America/New_York, Monday to Friday.
//!
//! Holidays (the exchange is closed all day):
//! - New Year's Day, January 1. On a Sunday it is observed on Monday January 2; on a Saturday
//!   it is not observed at all (Rule 7.2: the exchange does not close on the Friday before when
//!   that Friday ends a monthly or yearly accounting period), so Friday December 31 trades.
//! - Martin Luther King Jr. Day, third Monday of January, from 1998.
//! - Washington's Birthday (Presidents' Day), third Monday of February.
//! - Good Friday, two days before Easter Sunday (Gregorian computus).
//! - Memorial Day, last Monday of May.
//! - Juneteenth National Independence Day, June 19, from 2022.
//! - Independence Day, July 4.
//! - Labor Day, first Monday of September.
//! - Thanksgiving Day, fourth Thursday of November.
//! - Christmas Day, December 25.
//!
//! Juneteenth, Independence Day and Christmas falling on a Saturday are observed on the
//! Friday before, on a Sunday on the Monday after.
//!
//! Unscheduled closures: 1994-04-27 (funeral of President Nixon), 2001-09-11 to 2001-09-14
//! (September 11 attacks), 2004-06-11 (national day of mourning, President Reagan),
//! 2007-01-02 (national day of mourning, President Ford), 2012-10-29 and 2012-10-30
//! (Hurricane Sandy), 2018-12-05 (national day of mourning, President G. H. W. Bush),
//! 2025-01-09 (national day of mourning, President Carter).
//!
//! Early closes (scheduled):
//! - The day after Thanksgiving: 13:00 from 1993, 14:00 in 1992, none before.
//! - Christmas Eve on a Monday to Thursday: 13:00 from 1993, 14:00 before.
//! - July 3 on a Monday, Tuesday or Thursday: 13:00 from 1995; on a Wednesday: 13:00 from
//!   2013. From 1996 to 2012, when July 4 fell on a Thursday, the exchange closed early on
//!   Friday July 5 instead (13:00) and July 3 was a full day.
//!
//! Irregular sessions since 1990 (late opens and unscheduled early closes, mostly moments of
//! silence, storms and system problems) are listed in [`IRREGULAR_SESSIONS`]; the day after
//! Christmas closed at 13:00 in 1997 and 2003.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::America::New_York;
use chrono_tz::Tz;
use std::fmt;

/// First year the rules are checked for (tests cover every date from here to [`LAST_YEAR`]).
pub const FIRST_YEAR: i32 = 1990;
/// Last year the rules are checked for.
pub const LAST_YEAR: i32 = 2100;

/// Time zone of the exchange: America/New_York.
pub const TIME_ZONE: Tz = New_York;

/// Regular session open, 09:30 exchange time.
pub const REGULAR_OPEN: NaiveTime = hm(9, 30);
/// Regular session close, 16:00 exchange time.
pub const REGULAR_CLOSE: NaiveTime = hm(16, 0);
/// Scheduled early close, 13:00 exchange time (since 1993).
pub const EARLY_CLOSE: NaiveTime = hm(13, 0);
/// Scheduled early close before 1993, 14:00 exchange time.
const EARLY_CLOSE_PRE_1993: NaiveTime = hm(14, 0);

const fn hm(h: u32, m: u32) -> NaiveTime {
    match NaiveTime::from_hms_opt(h, m, 0) {
        Some(t) => t,
        None => panic!("invalid constant time"),
    }
}

/// A day on which the exchange is closed although it is a weekday.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Holiday {
    /// New Year's Day (January 1, or Monday January 2).
    NewYearsDay,
    /// Martin Luther King Jr. Day (third Monday of January, from 1998).
    MartinLutherKingJrDay,
    /// Washington's Birthday (third Monday of February).
    WashingtonsBirthday,
    /// Good Friday (two days before Easter Sunday).
    GoodFriday,
    /// Memorial Day (last Monday of May).
    MemorialDay,
    /// Juneteenth National Independence Day (June 19, from 2022).
    Juneteenth,
    /// Independence Day (July 4).
    IndependenceDay,
    /// Labor Day (first Monday of September).
    LaborDay,
    /// Thanksgiving Day (fourth Thursday of November).
    ThanksgivingDay,
    /// Christmas Day (December 25).
    ChristmasDay,
    /// An unscheduled closure (national day of mourning, storm, emergency); the text says why.
    Special(&'static str),
}

impl Holiday {
    /// The holiday's name as the exchange writes it, or the reason of a special closure.
    pub fn name(self) -> &'static str {
        match self {
            Holiday::NewYearsDay => "New Year's Day",
            Holiday::MartinLutherKingJrDay => "Martin Luther King Jr. Day",
            Holiday::WashingtonsBirthday => "Washington's Birthday",
            Holiday::GoodFriday => "Good Friday",
            Holiday::MemorialDay => "Memorial Day",
            Holiday::Juneteenth => "Juneteenth National Independence Day",
            Holiday::IndependenceDay => "Independence Day",
            Holiday::LaborDay => "Labor Day",
            Holiday::ThanksgivingDay => "Thanksgiving Day",
            Holiday::ChristmasDay => "Christmas Day",
            Holiday::Special(reason) => reason,
        }
    }
}

impl fmt::Display for Holiday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const fn ymd(year: i32, month: u32, day: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(year, month, day) {
        Some(d) => d,
        None => panic!("invalid constant date"),
    }
}

/// A weekday on which the exchange did not open although no holiday rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpecialClosure {
    /// The exchange-local date.
    pub date: NaiveDate,
    /// Why the exchange was closed.
    pub reason: &'static str,
}

/// The unscheduled full-day closures since 1990.
pub const SPECIAL_CLOSURES: &[SpecialClosure] = &[
    closure(1994, 4, 27, "Funeral of President Richard Nixon"),
    closure(2001, 9, 11, "September 11 attacks"),
    closure(2001, 9, 12, "September 11 attacks"),
    closure(2001, 9, 13, "September 11 attacks"),
    closure(2001, 9, 14, "September 11 attacks"),
    closure(
        2004,
        6,
        11,
        "National day of mourning for President Ronald Reagan",
    ),
    closure(
        2007,
        1,
        2,
        "National day of mourning for President Gerald Ford",
    ),
    closure(2012, 10, 29, "Hurricane Sandy"),
    closure(2012, 10, 30, "Hurricane Sandy"),
    closure(
        2018,
        12,
        5,
        "National day of mourning for President George H. W. Bush",
    ),
    closure(
        2025,
        1,
        9,
        "National day of mourning for President Jimmy Carter",
    ),
];

const fn closure(year: i32, month: u32, day: u32, reason: &'static str) -> SpecialClosure {
    SpecialClosure {
        date: ymd(year, month, day),
        reason,
    }
}

/// A session since 1990 whose hours differed from the rules without being a full closure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IrregularSession {
    /// The exchange-local date.
    pub date: NaiveDate,
    /// Open, exchange time.
    pub open: NaiveTime,
    /// Close, exchange time.
    pub close: NaiveTime,
    /// Why the hours differed.
    pub reason: &'static str,
}

/// The late opens and unscheduled early closes since 1990.
pub const IRREGULAR_SESSIONS: &[IrregularSession] = &[
    irregular(
        (1990, 12, 27),
        (9, 31),
        (16, 0),
        "Con Edison transformer explosion",
    ),
    irregular(
        (1991, 1, 17),
        (9, 31),
        (16, 0),
        "Moment of silence, Gulf War",
    ),
    irregular(
        (1991, 2, 25),
        (9, 31),
        (16, 0),
        "Moment of silence, Gulf War",
    ),
    irregular((1994, 2, 11), (9, 30), (14, 30), "Snowstorm"),
    irregular(
        (1995, 12, 18),
        (10, 30),
        (16, 0),
        "Computer system problems",
    ),
    irregular((1996, 1, 8), (11, 0), (14, 0), "Snowstorm"),
    irregular((1997, 10, 27), (9, 30), (15, 30), "Circuit breaker halt"),
    irregular((1997, 12, 26), (9, 30), (13, 0), "Day after Christmas"),
    irregular(
        (2001, 9, 17),
        (9, 33),
        (16, 0),
        "Moment of silence, September 11 attacks",
    ),
    irregular(
        (2001, 10, 8),
        (9, 31),
        (16, 0),
        "Moment of silence, Operation Enduring Freedom",
    ),
    irregular(
        (2002, 9, 11),
        (12, 0),
        (16, 0),
        "Anniversary of the September 11 attacks",
    ),
    irregular(
        (2003, 3, 20),
        (9, 32),
        (16, 0),
        "Moment of silence, Operation Iraqi Freedom",
    ),
    irregular((2003, 12, 26), (9, 30), (13, 0), "Day after Christmas"),
    irregular(
        (2004, 6, 7),
        (9, 32),
        (16, 0),
        "Moment of silence, President Reagan",
    ),
    irregular(
        (2005, 6, 1),
        (9, 30),
        (15, 56),
        "Systems communication problem",
    ),
    irregular(
        (2006, 12, 27),
        (9, 32),
        (16, 0),
        "Moment of silence, President Ford",
    ),
];

const fn irregular(
    (year, month, day): (i32, u32, u32),
    (open_h, open_m): (u32, u32),
    (close_h, close_m): (u32, u32),
    reason: &'static str,
) -> IrregularSession {
    IrregularSession {
        date: ymd(year, month, day),
        open: hm(open_h, open_m),
        close: hm(close_h, close_m),
        reason,
    }
}

/// One trading day's regular session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Session {
    /// The trading day (exchange-local date).
    pub date: NaiveDate,
    /// When trading opens (normally 09:30 America/New_York).
    pub open: DateTime<Utc>,
    /// When trading closes (normally 16:00 America/New_York; 13:00 on early-close days).
    pub close: DateTime<Utc>,
    /// The session closes before 16:00 exchange time.
    pub early_close: bool,
    /// The session opens after 09:30 exchange time (rare: see [`IRREGULAR_SESSIONS`]).
    pub late_open: bool,
}

impl Session {
    /// Whether `t` lies in the session: `open <= t < close`.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.open <= t && t < self.close
    }
}

/// The US equity (NYSE) calendar. A unit value: all rules are built in; see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UsEquityCalendar;

impl UsEquityCalendar {
    /// Why the exchange is closed on `date`, when it is a weekday on which it does not open.
    /// Weekends are not holidays (they return `None`); a holiday falling on a weekend is
    /// reported on the weekday it is observed, if any.
    pub fn holiday(&self, date: NaiveDate) -> Option<Holiday> {
        let weekday = date.weekday();
        if matches!(weekday, Weekday::Sat | Weekday::Sun) {
            return None;
        }
        if let Some(c) = SPECIAL_CLOSURES.iter().find(|c| c.date == date) {
            return Some(Holiday::Special(c.reason));
        }
        let (year, month, day) = (date.year(), date.month(), date.day());
        let nth_monday = |n: u32| weekday == Weekday::Mon && (day - 1) / 7 + 1 == n;
        let observed = |m: u32, d: u32| observed(year, m, d) == Some(date);
        match month {
            1 if day == 1 || (day == 2 && weekday == Weekday::Mon) => Some(Holiday::NewYearsDay),
            1 if year >= 1998 && nth_monday(3) => Some(Holiday::MartinLutherKingJrDay),
            2 if nth_monday(3) => Some(Holiday::WashingtonsBirthday),
            3 | 4
                if easter_sunday(year).and_then(|e| e.checked_sub_days(chrono::Days::new(2)))
                    == Some(date) =>
            {
                Some(Holiday::GoodFriday)
            }
            5 if weekday == Weekday::Mon && day + 7 > 31 => Some(Holiday::MemorialDay),
            6 if year >= 2022 && observed(6, 19) => Some(Holiday::Juneteenth),
            7 if observed(7, 4) => Some(Holiday::IndependenceDay),
            9 if nth_monday(1) => Some(Holiday::LaborDay),
            11 if weekday == Weekday::Thu && (day - 1) / 7 + 1 == 4 => {
                Some(Holiday::ThanksgivingDay)
            }
            12 if observed(12, 25) => Some(Holiday::ChristmasDay),
            _ => None,
        }
    }

    /// Whether the exchange holds a session on `date`: a weekday that is not a holiday.
    pub fn is_trading_day(&self, date: NaiveDate) -> bool {
        !matches!(date.weekday(), Weekday::Sat | Weekday::Sun) && self.holiday(date).is_none()
    }

    /// Open and close of the session on `date` in exchange time, or `None` when the exchange
    /// is closed that day.
    pub fn session_hours(&self, date: NaiveDate) -> Option<(NaiveTime, NaiveTime)> {
        if !self.is_trading_day(date) {
            return None;
        }
        if let Some(s) = IRREGULAR_SESSIONS.iter().find(|s| s.date == date) {
            return Some((s.open, s.close));
        }
        Some((
            REGULAR_OPEN,
            scheduled_early_close(date).unwrap_or(REGULAR_CLOSE),
        ))
    }

    /// The session on `date` (instants in UTC), or `None` when the exchange is closed that
    /// day.
    pub fn session(&self, date: NaiveDate) -> Option<Session> {
        let (open, close) = self.session_hours(date)?;
        Some(Session {
            date,
            open: exchange_instant(date, open),
            close: exchange_instant(date, close),
            early_close: close < REGULAR_CLOSE,
            late_open: open > REGULAR_OPEN,
        })
    }

    /// Whether the regular session is open at `t` (open inclusive, close exclusive).
    pub fn is_open(&self, t: DateTime<Utc>) -> bool {
        self.session_containing(t).is_some()
    }

    /// The session that `t` lies in (`open <= t < close`), if any.
    pub fn session_containing(&self, t: DateTime<Utc>) -> Option<Session> {
        self.session(exchange_date(t)).filter(|s| s.contains(t))
    }

    /// The first session that opens strictly after `t`. `None` only past the last date chrono
    /// can represent.
    pub fn next_session_after(&self, t: DateTime<Utc>) -> Option<Session> {
        let mut date = exchange_date(t);
        loop {
            if let Some(s) = self.session(date)
                && s.open > t
            {
                return Some(s);
            }
            date = date.succ_opt()?;
        }
    }

    /// The last session that opened at or before `t` (it may still be open). `None` only
    /// before the first date chrono can represent.
    pub fn last_session_at_or_before(&self, t: DateTime<Utc>) -> Option<Session> {
        let mut date = exchange_date(t);
        loop {
            if let Some(s) = self.session(date)
                && s.open <= t
            {
                return Some(s);
            }
            date = date.pred_opt()?;
        }
    }

    /// The first trading day strictly after `date`.
    pub fn next_trading_day(&self, date: NaiveDate) -> Option<NaiveDate> {
        let mut d = date.succ_opt()?;
        while !self.is_trading_day(d) {
            d = d.succ_opt()?;
        }
        Some(d)
    }

    /// The last trading day strictly before `date`.
    pub fn previous_trading_day(&self, date: NaiveDate) -> Option<NaiveDate> {
        let mut d = date.pred_opt()?;
        while !self.is_trading_day(d) {
            d = d.pred_opt()?;
        }
        Some(d)
    }

    /// The trading days from `first` to `last`, both inclusive, in order.
    pub fn trading_days(
        &self,
        first: NaiveDate,
        last: NaiveDate,
    ) -> impl Iterator<Item = NaiveDate> + use<> {
        let cal = *self;
        first
            .iter_days()
            .take_while(move |d| *d <= last)
            .filter(move |d| cal.is_trading_day(*d))
    }
}

/// The exchange-local (America/New_York) date of the instant `t`.
pub fn exchange_date(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&TIME_ZONE).date_naive()
}

/// The instant of exchange-local `time` on `date`. Session times (09:30–16:00) never fall in a
/// daylight-saving gap or overlap (New York changes clocks at 02:00), so the answer is unique.
fn exchange_instant(date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let local = date.and_time(time);
    match TIME_ZONE.from_local_datetime(&local).earliest() {
        Some(t) => t.with_timezone(&Utc),
        // Unreachable for session times; fall back to standard time (UTC-5).
        None => Utc.from_utc_datetime(&(local + chrono::TimeDelta::hours(5))),
    }
}

/// The early close scheduled by rule on the trading day `date`, if any.
fn scheduled_early_close(date: NaiveDate) -> Option<NaiveTime> {
    let (year, month, day, weekday) = (date.year(), date.month(), date.day(), date.weekday());
    let by_era = if year >= 1993 {
        EARLY_CLOSE
    } else {
        EARLY_CLOSE_PRE_1993
    };
    match (month, day) {
        // Day after Thanksgiving: the Friday after the fourth Thursday (days 23 to 29).
        (11, 23..=29) if weekday == Weekday::Fri && year >= 1992 => Some(by_era),
        // Christmas Eve on a weekday; Friday December 24 is the observed Christmas holiday.
        (12, 24)
            if matches!(
                weekday,
                Weekday::Mon | Weekday::Tue | Weekday::Wed | Weekday::Thu
            ) =>
        {
            Some(by_era)
        }
        (7, 3) if year >= 1995 && matches!(weekday, Weekday::Mon | Weekday::Tue | Weekday::Thu) => {
            Some(EARLY_CLOSE)
        }
        (7, 3) if year >= 2013 && weekday == Weekday::Wed => Some(EARLY_CLOSE),
        (7, 5) if (1996..=2012).contains(&year) && weekday == Weekday::Fri => Some(EARLY_CLOSE),
        _ => None,
    }
}

/// The date on which a fixed-date holiday (`month`/`day` of `year`) is observed: the Friday
/// before when it falls on a Saturday, the Monday after when on a Sunday.
fn observed(year: i32, month: u32, day: u32) -> Option<NaiveDate> {
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    match date.weekday() {
        Weekday::Sat => date.pred_opt(),
        Weekday::Sun => date.succ_opt(),
        _ => Some(date),
    }
}

/// Easter Sunday of `year` in the Gregorian calendar (the anonymous Gregorian algorithm,
/// "Meeus/Jones/Butcher"; Meeus, *Astronomical Algorithms*, ch. 8).
pub fn easter_sunday(year: i32) -> Option<NaiveDate> {
    let a = year.rem_euclid(19);
    let b = year.div_euclid(100);
    let c = year.rem_euclid(100);
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15).rem_euclid(30);
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k).rem_euclid(7);
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nyse_holiday_cal::HolidayCal;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn utc(y: i32, m: u32, day: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, day, h, min, 0).unwrap()
    }

    #[test]
    fn easter_matches_known_dates() {
        // Published Gregorian Easter dates.
        for (y, m, day) in [
            (1990, 4, 15),
            (2000, 4, 23),
            (2008, 3, 23),
            (2011, 4, 24),
            (2012, 4, 8),
            (2016, 3, 27),
            (2019, 4, 21),
            (2038, 4, 25),
            (2100, 3, 28),
        ] {
            assert_eq!(easter_sunday(y), Some(d(y, m, day)), "{y}");
        }
    }

    /// Every date the dev-dependency `nyse-holiday-cal` knows (its table covers 2020–2028;
    /// it answers `OutOfRange` after that) agrees with the rules, except the one unscheduled
    /// closure its table lacks (2025-01-09, day of mourning for President Carter).
    #[test]
    fn holidays_agree_with_nyse_holiday_cal() {
        use nyse_holiday_cal::Holiday as H;
        let cal = UsEquityCalendar;
        let mut checked = 0;
        let mut holidays = 0;
        for date in d(2020, 1, 1).iter_days().take_while(|x| x.year() <= 2030) {
            let Ok(theirs) = date.holiday() else {
                assert!(
                    date.year() > 2028,
                    "nyse-holiday-cal has no answer for {date}"
                );
                continue;
            };
            checked += 1;
            let ours = cal.holiday(date);
            if date == d(2025, 1, 9) {
                assert_eq!(theirs, None);
                assert!(matches!(ours, Some(Holiday::Special(_))));
                continue;
            }
            let ours_mapped = ours.map(|h| match h {
                Holiday::NewYearsDay => H::NewYearsDay,
                Holiday::MartinLutherKingJrDay => H::MartinLutherKingJrDay,
                Holiday::WashingtonsBirthday => H::WashingtonsBirthday,
                Holiday::GoodFriday => H::GoodFriday,
                Holiday::MemorialDay => H::MemorialDay,
                Holiday::Juneteenth => H::Juneteenth,
                Holiday::IndependenceDay => H::IndependenceDay,
                Holiday::LaborDay => H::LaborDay,
                Holiday::ThanksgivingDay => H::ThanksgivingDay,
                Holiday::ChristmasDay => H::ChristmasDay,
                Holiday::Special(reason) => panic!("unexpected special closure {reason}"),
            });
            assert_eq!(ours_mapped, theirs, "{date}");
            assert_eq!(
                cal.is_trading_day(date),
                date.is_busday().unwrap(),
                "{date}"
            );
            holidays += usize::from(theirs.is_some());
        }
        assert_eq!(checked, 9 * 365 + 3); // 2020-2028 with leap years 2020, 2024, 2028
        assert_eq!(holidays, 9 * 10 - 2 - 2); // no New Year in 2022/2028; no Juneteenth 2020/21
    }

    #[test]
    fn known_holidays_and_closures_2004_to_2018() {
        let cal = UsEquityCalendar;
        let closed = [
            (d(2004, 1, 1), "New Year's Day"),
            (
                d(2004, 6, 11),
                "National day of mourning for President Ronald Reagan",
            ),
            (d(2004, 12, 24), "Christmas Day"), // Dec 25 was a Saturday
            (d(2005, 12, 26), "Christmas Day"), // Dec 25 was a Sunday
            (d(2006, 1, 2), "New Year's Day"),
            (
                d(2007, 1, 2),
                "National day of mourning for President Gerald Ford",
            ),
            (d(2008, 3, 21), "Good Friday"),
            (d(2009, 7, 3), "Independence Day"),
            (d(2010, 7, 5), "Independence Day"),
            (d(2010, 12, 24), "Christmas Day"),
            (d(2011, 1, 17), "Martin Luther King Jr. Day"),
            (d(2012, 1, 2), "New Year's Day"),
            (d(2012, 4, 6), "Good Friday"),
            (d(2012, 10, 29), "Hurricane Sandy"),
            (d(2012, 10, 30), "Hurricane Sandy"),
            (d(2015, 4, 3), "Good Friday"),
            (d(2015, 7, 3), "Independence Day"),
            (d(2016, 12, 26), "Christmas Day"),
            (d(2017, 1, 2), "New Year's Day"),
            (
                d(2018, 12, 5),
                "National day of mourning for President George H. W. Bush",
            ),
            (d(1994, 4, 27), "Funeral of President Richard Nixon"),
            (d(2001, 9, 12), "September 11 attacks"),
            (d(2022, 6, 20), "Juneteenth National Independence Day"),
            (d(2027, 6, 18), "Juneteenth National Independence Day"),
        ];
        for (date, name) in closed {
            assert_eq!(cal.holiday(date).map(Holiday::name), Some(name), "{date}");
            assert!(!cal.is_trading_day(date), "{date}");
            assert_eq!(cal.session(date), None, "{date}");
        }
        let open = [
            d(2004, 12, 31), // Jan 1 2005 was a Saturday: no Friday holiday
            d(2010, 12, 31), // same for 2011
            d(2021, 12, 31), // same for 2022
            d(1997, 1, 20),  // MLK Day before the exchange observed it
            d(2021, 6, 18),  // Juneteenth before 2022
            d(2012, 10, 31), // reopened after Sandy
            d(2001, 9, 17),  // reopened after September 11
            d(2014, 10, 13), // Columbus Day is not an exchange holiday
            d(2014, 11, 11), // Veterans Day neither
        ];
        for date in open {
            assert!(cal.is_trading_day(date), "{date}");
        }
        assert!(!cal.is_trading_day(d(2012, 10, 27)), "Saturday");
        assert_eq!(
            cal.holiday(d(2012, 10, 27)),
            None,
            "weekends are not holidays"
        );
    }

    #[test]
    fn early_closes() {
        let cal = UsEquityCalendar;
        let one_pm = [
            d(2007, 7, 3),   // Tuesday
            d(2008, 7, 3),   // Thursday
            d(2002, 7, 5),   // Friday after a Thursday July 4 (until 2012)
            d(2013, 7, 3),   // Wednesday, from 2013
            d(2019, 7, 3),   // Wednesday
            d(2023, 7, 3),   // Monday
            d(2012, 11, 23), // day after Thanksgiving
            d(2017, 11, 24),
            d(2007, 12, 24), // Christmas Eve, Monday
            d(2013, 12, 24), // Tuesday
            d(2008, 12, 24), // Wednesday
            d(2009, 12, 24), // Thursday
            d(2003, 12, 26), // irregular: day after Christmas
        ];
        for date in one_pm {
            let s = cal.session(date).unwrap();
            assert!(s.early_close, "{date}");
            assert_eq!(
                s.close.with_timezone(&TIME_ZONE).time(),
                EARLY_CLOSE,
                "{date}"
            );
            assert_eq!(
                s.open.with_timezone(&TIME_ZONE).time(),
                REGULAR_OPEN,
                "{date}"
            );
        }
        let full_day = [
            d(2002, 7, 3),   // Wednesday before 2013
            d(2013, 7, 5),   // Friday after a Thursday July 4, from 2013
            d(2005, 7, 1),   // Friday before a Monday July 4
            d(2016, 12, 23), // Friday before a Sunday Christmas Eve
            d(1994, 7, 1),
            d(1991, 11, 29), // day after Thanksgiving before 1992
        ];
        for date in full_day {
            let s = cal.session(date).unwrap();
            assert!(!s.early_close, "{date}");
            assert_eq!(
                s.close.with_timezone(&TIME_ZONE).time(),
                REGULAR_CLOSE,
                "{date}"
            );
        }
        let s = cal.session(d(1992, 11, 27)).unwrap();
        assert_eq!(s.close.with_timezone(&TIME_ZONE).time(), hm(14, 0));
        let s = cal.session(d(2002, 9, 11)).unwrap();
        assert!(s.late_open && !s.early_close);
        assert_eq!(s.open, utc(2002, 9, 11, 16, 0)); // 12:00 EDT
    }

    #[test]
    fn session_instants_follow_daylight_saving() {
        let cal = UsEquityCalendar;
        // Winter: EST = UTC-5.
        let s = cal.session(d(2012, 1, 3)).unwrap();
        assert_eq!(
            (s.open, s.close),
            (utc(2012, 1, 3, 14, 30), utc(2012, 1, 3, 21, 0))
        );
        // Summer: EDT = UTC-4.
        let s = cal.session(d(2012, 7, 3)).unwrap();
        assert_eq!(
            (s.open, s.close),
            (utc(2012, 7, 3, 13, 30), utc(2012, 7, 3, 17, 0))
        );
        assert!(cal.is_open(utc(2012, 7, 3, 13, 30)));
        assert!(cal.is_open(utc(2012, 7, 3, 16, 59)));
        assert!(!cal.is_open(utc(2012, 7, 3, 17, 0)));
        assert!(!cal.is_open(utc(2012, 7, 3, 13, 29)));
        assert!(!cal.is_open(utc(2012, 7, 4, 15, 0)));
    }

    #[test]
    fn next_and_previous() {
        let cal = UsEquityCalendar;
        // Friday before Sandy, after the close -> Wednesday Oct 31 (EDT until Nov 4).
        let s = cal.next_session_after(utc(2012, 10, 26, 21, 0)).unwrap();
        assert_eq!(s.date, d(2012, 10, 31));
        assert_eq!(s.open, utc(2012, 10, 31, 13, 30));
        // Exactly at an open: strictly after, so the next day.
        let s = cal.next_session_after(utc(2012, 10, 31, 13, 30)).unwrap();
        assert_eq!(s.date, d(2012, 11, 1));
        // Before the open on a trading day: that day.
        let s = cal.next_session_after(utc(2012, 11, 1, 5, 0)).unwrap();
        assert_eq!(s.date, d(2012, 11, 1));
        let s = cal
            .last_session_at_or_before(utc(2012, 10, 30, 12, 0))
            .unwrap();
        assert_eq!(s.date, d(2012, 10, 26));
        assert_eq!(cal.next_trading_day(d(2012, 4, 5)), Some(d(2012, 4, 9)));
        assert_eq!(cal.previous_trading_day(d(2012, 4, 9)), Some(d(2012, 4, 5)));
        let days: Vec<_> = cal.trading_days(d(2012, 10, 25), d(2012, 11, 1)).collect();
        assert_eq!(
            days,
            [
                d(2012, 10, 25),
                d(2012, 10, 26),
                d(2012, 10, 31),
                d(2012, 11, 1)
            ]
        );
    }

    /// Structural facts that must hold for every year from 1990 to 2100.
    #[test]
    fn every_year_has_the_expected_holidays() {
        let cal = UsEquityCalendar;
        for year in FIRST_YEAR..=LAST_YEAR {
            let mut counts = std::collections::HashMap::new();
            let mut trading = 0;
            for date in d(year, 1, 1).iter_days().take_while(|x| x.year() == year) {
                if let Some(h) = cal.holiday(date) {
                    *counts.entry(h).or_insert(0) += 1;
                    // Only weekdays are holidays.
                    assert!(!matches!(date.weekday(), Weekday::Sat | Weekday::Sun));
                }
                if let Some(s) = cal.session(date) {
                    trading += 1;
                    assert!(s.open < s.close, "{date}");
                    let close = s.close.with_timezone(&TIME_ZONE).time();
                    assert!(close >= hm(13, 0) && close <= REGULAR_CLOSE, "{date}");
                }
            }
            let once_a_year = [
                Holiday::WashingtonsBirthday,
                Holiday::MemorialDay,
                Holiday::LaborDay,
                Holiday::ThanksgivingDay,
                Holiday::GoodFriday,
            ];
            for h in once_a_year {
                assert_eq!(counts.get(&h), Some(&1), "{year} {h}");
            }
            assert_eq!(counts.get(&Holiday::IndependenceDay), Some(&1), "{year}");
            assert_eq!(counts.get(&Holiday::ChristmasDay), Some(&1), "{year}");
            let jan1_saturday = d(year, 1, 1).weekday() == Weekday::Sat;
            assert_eq!(
                counts.get(&Holiday::NewYearsDay),
                (!jan1_saturday).then_some(&1),
                "{year}"
            );
            assert_eq!(
                counts.get(&Holiday::MartinLutherKingJrDay),
                (year >= 1998).then_some(&1),
                "{year}"
            );
            assert_eq!(
                counts.get(&Holiday::Juneteenth),
                (year >= 2022).then_some(&1),
                "{year}"
            );
            // 52 weeks of weekdays (260 or 261 or 262) minus 8–10 holidays, minus closures.
            assert!(
                (248..=254).contains(&trading),
                "{year}: {trading} trading days"
            );
        }
    }
}
