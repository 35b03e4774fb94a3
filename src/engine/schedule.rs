//! Time logic of a pipeline: when its `schedule` trigger fires, when its trading `window` is
//! open (and when it ends, for `flatten_at_end`), and when a `time_trigger` node lets an
//! execution through (DESIGN.md §2.1).
//!
//! Everything here is a pure function of an instant (`DateTime<Utc>`): no clock, no timer.
//! The engine asks "what is the next instant after now" and sleeps on a wall clock (live) or
//! steps a simulated clock (replay, backtest), so schedules, windows and end-of-day
//! flattening behave the same in both (DESIGN.md §4).
//!
//! # Wall-clock times and daylight saving
//!
//! Times of day (`09:35`) are wall-clock times in the configured time zone, so `09:35` in
//! America/New_York is 14:35 UTC in winter and 13:35 UTC in summer. On the two days a year the
//! clocks change, a time of day may not exist or may exist twice; [`local_instant`] resolves
//! it for windows and time gates:
//! - a time in the spring-forward gap (02:30 in New York) means the moment the clocks jump,
//!   the first instant after the gap (03:00 EDT); a window `02:15`–`02:45` is then empty that
//!   day, a window `02:30`–`04:00` runs 03:00–04:00;
//! - a time in the fall-back overlap (01:30 in New York) means its first occurrence (EDT).
//!
//! Both rules keep the mapping from times of day to instants non-decreasing, so a window is
//! always one interval `[start, end)` of instants. Cron schedules follow the `cron` crate: a
//! cron time in a gap is skipped that day, and in an overlap [`Schedule::next_after`] stepping
//! from one firing to the next fires once, at the first occurrence.

use crate::config::common::{Duration as ConfigDuration, TimeZoneName, Weekday as ConfigWeekday};
use crate::config::pipeline::{ScheduleTrigger, TimeTriggerConfig, Window};
use crate::config::semantic::check_cron;
use crate::market::calendar::UsEquityCalendar;
use crate::market::live::SessionCalendar;
use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;

/// Why a schedule, window or time gate could not be built from its configuration. The
/// semantic checks of `ztraded validate` report the same problems at their file positions;
/// these errors reach the engine only for configurations that skipped validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The schedule sets none, or more than one, of `cron`, `interval`, `market_open`.
    #[error("trigger.schedule: set exactly one of cron, interval, market_open; found {found}")]
    Kind {
        /// The kinds that are set, joined with " and ", or "none".
        found: String,
    },
    /// The cron expression does not parse (the message says why).
    #[error("trigger.schedule.cron: {0}")]
    Cron(String),
    /// The interval is zero.
    #[error("trigger.schedule.interval: the interval must be longer than 0s")]
    ZeroInterval,
    /// A time-zone name is not in the IANA database.
    #[error("{field}: unknown time zone '{name}'")]
    TimeZone {
        /// Where the name is (`window.timezone`).
        field: &'static str,
        /// The name as written.
        name: String,
    },
    /// A time of day is not `HH:MM` or `HH:MM:SS`.
    #[error("{field}: '{text}' is not a time of day (HH:MM or HH:MM:SS, 00:00 to 23:59:59)")]
    ClockTime {
        /// Where the time is (`window.start`).
        field: &'static str,
        /// The text as written.
        text: String,
    },
    /// The window ends before or when it starts.
    #[error("window.end: the window ends ({end}) before or when it starts ({start})")]
    WindowOrder {
        /// `window.start` as written.
        start: String,
        /// `window.end` as written.
        end: String,
    },
    /// A list of weekdays is empty.
    #[error("{field}: name at least one day")]
    NoDays {
        /// Where the list is (`window.days`).
        field: &'static str,
    },
}

/// When a `schedule` trigger fires.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// A 6-field cron expression (seconds first) evaluated in a time zone.
    Cron(Box<cron::Schedule>, Tz),
    /// Every `every`, counted from `anchor` (the pipeline's start): the firings are
    /// `anchor + k·every` for whole `k ≥ 0`.
    Interval {
        /// The period (more than zero).
        every: std::time::Duration,
        /// The instant the count starts from.
        anchor: DateTime<Utc>,
    },
    /// Once per US trading day (NYSE calendar, or the live source's calendar, see
    /// [`Schedule::next_after_in`]), `offset` after the session opens.
    MarketOpen {
        /// Delay after the open (zero runs at the open).
        offset: std::time::Duration,
    },
}

impl Schedule {
    /// Builds the schedule of a `trigger.schedule` block; `anchor` (the pipeline's start) is
    /// where an interval counts from.
    ///
    /// # Errors
    /// [`ScheduleError::Kind`] unless exactly one kind is set, [`ScheduleError::Cron`] for a bad
    /// expression, [`ScheduleError::ZeroInterval`], [`ScheduleError::TimeZone`].
    pub fn from_trigger(
        trigger: &ScheduleTrigger,
        anchor: DateTime<Utc>,
    ) -> Result<Schedule, ScheduleError> {
        let tz = parse_tz(&trigger.timezone, "trigger.schedule.timezone")?;
        match (&trigger.cron, trigger.interval, &trigger.market_open) {
            (Some(expr), None, None) => {
                let schedule = check_cron(expr).map_err(ScheduleError::Cron)?;
                Ok(Schedule::Cron(Box::new(schedule), tz))
            }
            (None, Some(every), None) => Schedule::interval(every, anchor),
            (None, None, Some(open)) => Ok(Schedule::MarketOpen {
                offset: open.offset.std(),
            }),
            _ => {
                let kinds = trigger.kinds();
                Err(ScheduleError::Kind {
                    found: if kinds.is_empty() {
                        "none".to_string()
                    } else {
                        kinds.join(" and ")
                    },
                })
            }
        }
    }

    /// An interval schedule.
    ///
    /// # Errors
    /// [`ScheduleError::ZeroInterval`] when `every` is zero.
    pub fn interval(
        every: ConfigDuration,
        anchor: DateTime<Utc>,
    ) -> Result<Schedule, ScheduleError> {
        if every.std().is_zero() {
            return Err(ScheduleError::ZeroInterval);
        }
        Ok(Schedule::Interval {
            every: every.std(),
            anchor,
        })
    }

    /// The first firing strictly after `t`, or `None` when there is none (a cron expression
    /// restricted to past years, or past the last instant chrono can represent).
    ///
    /// - Cron: the next matching wall-clock time in the schedule's time zone (see the module
    ///   docs for daylight-saving days).
    /// - Interval: the smallest `anchor + k·every` (`k ≥ 0`) after `t`; an engine that asks at
    ///   its start (`t = anchor`) first runs one interval later.
    /// - Market open: the open of the first NYSE session with `open + offset > t`, plus
    ///   `offset`. Holidays and weekends have no session; early-close days open at 09:30 as
    ///   usual; the rare late-open days count from their real open. The offset is not capped
    ///   at the close.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after_in(t, None)
    }

    /// [`Schedule::next_after`] with the sessions of `calendar` for `market_open` (a live
    /// source's exchange calendar, e.g. Alpaca's: half days and unscheduled closures); our
    /// NYSE calendar when `None`.
    pub fn next_after_in(
        &self,
        t: DateTime<Utc>,
        calendar: Option<&dyn SessionCalendar>,
    ) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron(schedule, tz) => schedule
                .after(&t.with_timezone(tz))
                .take(4)
                .map(|x| x.with_timezone(&Utc))
                .find(|x| *x > t),
            Schedule::Interval { every, anchor } => {
                let every = i128::try_from(every.as_nanos()).ok().filter(|n| *n > 0)?;
                let elapsed = nanos_between(*anchor, t);
                let k = if elapsed < 0 { 0 } else { elapsed / every + 1 };
                add_nanos(*anchor, k.checked_mul(every)?)
            }
            Schedule::MarketOpen { offset } => {
                let offset = TimeDelta::from_std(*offset).ok()?;
                let after = t.checked_sub_signed(offset)?;
                let open = match calendar {
                    None => UsEquityCalendar.next_session_after(after)?.open,
                    Some(c) => next_open_after(c, after)?,
                };
                open.checked_add_signed(offset)
            }
        }
    }

    /// The firings strictly after `t`, in order (an endless iterator for every kind but a
    /// year-restricted cron).
    pub fn iter_after(&self, t: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_after(t), move |x| self.next_after(*x))
    }

    /// The firings in `(a, b]`, for a backtest stepping a simulated clock from `a` to `b`.
    /// Collects them all: for a short interval over a long span, walk [`Schedule::iter_after`]
    /// instead.
    pub fn times_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        self.iter_after(a).take_while(|x| *x <= b).collect()
    }
}

/// The open of the first session of `calendar` that opens strictly after `t`, looking up to
/// ten years ahead.
fn next_open_after(calendar: &dyn SessionCalendar, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut date = crate::market::calendar::exchange_date(t);
    for _ in 0..3660 {
        if let Some((open, _)) = calendar.session_bounds(date)
            && open > t
        {
            return Some(open);
        }
        date = date.succ_opt()?;
    }
    None
}

/// A set of weekdays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Days(u8);

impl Days {
    const ALL: Days = Days(0x7f);

    fn from_config(days: &[ConfigWeekday], field: &'static str) -> Result<Days, ScheduleError> {
        let bits = days
            .iter()
            .fold(0u8, |acc, d| acc | 1 << d.chrono().num_days_from_monday());
        if bits == 0 {
            return Err(ScheduleError::NoDays { field });
        }
        Ok(Days(bits))
    }

    fn contains(self, day: chrono::Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }
}

/// A pipeline's trading window: executions start only from `start` (inclusive) to `end`
/// (exclusive), wall-clock times in `timezone`, on the configured weekdays. The window knows
/// nothing about exchange holidays (it also serves markets that trade then); the engine
/// combines it with the market calendar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradingWindow {
    start: NaiveTime,
    end: NaiveTime,
    tz: Tz,
    days: Days,
    flatten_at_end: bool,
}

impl TradingWindow {
    /// Builds the window of a pipeline's `window` block.
    ///
    /// # Errors
    /// [`ScheduleError::ClockTime`] for a bad `start`/`end`, [`ScheduleError::WindowOrder`]
    /// unless `start < end`, [`ScheduleError::TimeZone`], [`ScheduleError::NoDays`].
    pub fn from_config(window: &Window) -> Result<TradingWindow, ScheduleError> {
        let start = parse_time(&window.start.0, window.start.parse(), "window.start")?;
        let end = parse_time(&window.end.0, window.end.parse(), "window.end")?;
        if start >= end {
            return Err(ScheduleError::WindowOrder {
                start: window.start.0.clone(),
                end: window.end.0.clone(),
            });
        }
        Ok(TradingWindow {
            start,
            end,
            tz: parse_tz(&window.timezone, "window.timezone")?,
            days: Days::from_config(&window.days, "window.days")?,
            flatten_at_end: window.flatten_at_end,
        })
    }

    /// Whether positions are closed when the window ends.
    pub fn flatten_at_end(&self) -> bool {
        self.flatten_at_end
    }

    /// The window's time zone.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The window on the local `date`: `[start, end)` as instants, or `None` when `date` is
    /// not a configured day or the window is empty that day (both times inside a
    /// spring-forward gap).
    pub fn bounds_on(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.days.contains(date.weekday()) {
            return None;
        }
        let start = local_instant(self.tz, date.and_time(self.start));
        let end = local_instant(self.tz, date.and_time(self.end));
        (start < end).then_some((start, end))
    }

    /// Whether an execution may start at `t`.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.end_of_window_containing(t).is_some()
    }

    /// The end of the window that `t` lies in (the instant to flatten at when
    /// `flatten_at_end`), or `None` when `t` is outside the window.
    pub fn end_of_window_containing(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (start, end) = self.bounds_on(trading_day(t, self.tz))?;
        (start <= t && t < end).then_some(end)
    }

    /// The next instant strictly after `t` at which a window opens (when `t` is inside a
    /// window, the start of a later one). `None` only past the last date chrono represents.
    pub fn next_open_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut date = trading_day(t, self.tz);
        // A configured day comes within 7 days; a day whose window a gap empties can push
        // the answer one week further.
        for _ in 0..15 {
            if let Some((start, _)) = self.bounds_on(date)
                && start > t
            {
                return Some(start);
            }
            date = date.succ_opt()?;
        }
        None
    }

    /// The first window end strictly after `t` (the next instant to flatten at when
    /// `flatten_at_end`). `None` only past the last date chrono represents.
    pub fn next_end_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut date = trading_day(t, self.tz);
        for _ in 0..15 {
            if let Some((_, end)) = self.bounds_on(date)
                && end > t
            {
                return Some(end);
            }
            date = date.succ_opt()?;
        }
        None
    }

    /// The ends of all windows in `(a, b]`, in order; empty when `b <= a`.
    pub fn ends_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        if b <= a {
            return Vec::new();
        }
        let last = trading_day(b, self.tz);
        trading_day(a, self.tz)
            .iter_days()
            .take_while(|d| *d <= last)
            .filter_map(|d| self.bounds_on(d).map(|(_, end)| end))
            .filter(|end| a < *end && *end <= b)
            .collect()
    }

    /// The instants in `(a, b]` at which the pipeline's positions are flattened: the window
    /// ends when `flatten_at_end` is set, none otherwise. A backtest stepping a simulated
    /// clock from `a` to `b` flattens at each, in order.
    pub fn flatten_times_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        if self.flatten_at_end {
            self.ends_between(a, b)
        } else {
            Vec::new()
        }
    }
}

/// The gate of a `time_trigger` node: the execution continues only from `after` (inclusive)
/// until `before` (exclusive), wall-clock times in `timezone`, on the configured days (every
/// day when none are given). Either bound may be missing. When `after` is later than
/// `before` the gate spans midnight (`after: 22:00, before: 02:00` allows 22:00–02:00) and the
/// day is the local date of the instant asked about; when they are equal it never opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeGate {
    after: Option<NaiveTime>,
    before: Option<NaiveTime>,
    tz: Tz,
    days: Days,
}

impl TimeGate {
    /// Builds the gate of a `time_trigger` node's `config`.
    ///
    /// # Errors
    /// [`ScheduleError::ClockTime`] for a bad `after`/`before`, [`ScheduleError::TimeZone`],
    /// [`ScheduleError::NoDays`] for an empty `days` list.
    pub fn from_config(config: &TimeTriggerConfig) -> Result<TimeGate, ScheduleError> {
        let after = match &config.after {
            Some(t) => Some(parse_time(&t.0, t.parse(), "config.after")?),
            None => None,
        };
        let before = match &config.before {
            Some(t) => Some(parse_time(&t.0, t.parse(), "config.before")?),
            None => None,
        };
        let days = match &config.days {
            Some(days) => Days::from_config(days, "config.days")?,
            None => Days::ALL,
        };
        Ok(TimeGate {
            after,
            before,
            tz: parse_tz(&config.timezone, "config.timezone")?,
            days,
        })
    }

    /// Whether the gate lets an execution through at `t`.
    pub fn allows(&self, t: DateTime<Utc>) -> bool {
        let date = trading_day(t, self.tz);
        if !self.days.contains(date.weekday()) {
            return false;
        }
        let at = |time: NaiveTime| local_instant(self.tz, date.and_time(time));
        let after_ok = self.after.is_none_or(|a| t >= at(a));
        let before_ok = self.before.is_none_or(|b| t < at(b));
        match (self.after, self.before) {
            (Some(a), Some(b)) if a > b => after_ok || before_ok,
            _ => after_ok && before_ok,
        }
    }
}

/// The local date of `t` in `tz`: the day that "per day" limits and budgets count in.
pub fn trading_day(t: DateTime<Utc>, tz: Tz) -> NaiveDate {
    t.with_timezone(&tz).date_naive()
}

/// The instant of the wall-clock time `local` in `tz`. A time that does not exist (inside a
/// spring-forward gap) gives the first instant after the gap; a time that exists twice
/// (fall-back overlap) gives the first occurrence. See the module docs.
pub fn local_instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    if let Some(t) = tz.from_local_datetime(&local).earliest() {
        return t.with_timezone(&Utc);
    }
    // In a gap: the offsets before and after it (a day away, past any single transition).
    let offset_at = |naive_utc: NaiveDateTime| -> i64 {
        i64::from(
            tz.offset_from_utc_datetime(&naive_utc)
                .fix()
                .local_minus_utc(),
        )
    };
    let before = offset_at(local - TimeDelta::days(1));
    let after = offset_at(local + TimeDelta::days(1));
    // As an instant, the gap's transition lies in [local - after, local - before].
    let mut lo = (local - TimeDelta::seconds(after)).and_utc();
    let mut hi = (local - TimeDelta::seconds(before)).and_utc();
    if offset_at(lo.naive_utc()) != before || offset_at(hi.naive_utc()) == before {
        return hi;
    }
    // Invariant: offset(lo) == before, offset(hi) != before. Bisect to the second.
    while hi - lo > TimeDelta::seconds(1) {
        let mid = lo + (hi - lo) / 2;
        if offset_at(mid.naive_utc()) == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

fn parse_tz(name: &TimeZoneName, field: &'static str) -> Result<Tz, ScheduleError> {
    name.parse().ok_or_else(|| ScheduleError::TimeZone {
        field,
        name: name.0.clone(),
    })
}

fn parse_time(
    text: &str,
    parsed: Option<NaiveTime>,
    field: &'static str,
) -> Result<NaiveTime, ScheduleError> {
    parsed.ok_or_else(|| ScheduleError::ClockTime {
        field,
        text: text.to_string(),
    })
}

fn nanos_between(a: DateTime<Utc>, b: DateTime<Utc>) -> i128 {
    let secs = i128::from(b.timestamp()) - i128::from(a.timestamp());
    let nanos = i128::from(b.timestamp_subsec_nanos()) - i128::from(a.timestamp_subsec_nanos());
    secs * 1_000_000_000 + nanos
}

fn add_nanos(t: DateTime<Utc>, nanos: i128) -> Option<DateTime<Utc>> {
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    t.checked_add_signed(TimeDelta::new(secs, sub)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::common::ClockTime;
    use chrono_tz::America::New_York;

    #[test]
    fn market_open_follows_the_source_calendar_when_given() {
        use crate::market::alpaca::AlpacaCalendar;
        use chrono::NaiveTime;
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        // Wed 2024-01-03 closed (unscheduled), Thu 2024-01-04 opens late at 10:30.
        let mut days = std::collections::BTreeMap::new();
        days.insert(d("2024-01-02"), (t(9, 30), t(16, 0)));
        days.insert(d("2024-01-04"), (t(10, 30), t(16, 0)));
        let alpaca = AlpacaCalendar {
            start: d("2024-01-02"),
            end: d("2024-01-05"),
            days,
        };
        let schedule = Schedule::MarketOpen {
            offset: std::time::Duration::from_secs(15 * 60),
        };
        let after_tuesday = utc(2024, 1, 2, 21, 0, 0);
        // NYSE: Wednesday 09:45 New York (14:45 UTC).
        assert_eq!(
            schedule.next_after(after_tuesday),
            Some(utc(2024, 1, 3, 14, 45, 0))
        );
        // The source's calendar: Thursday 10:45 New York (15:45 UTC).
        assert_eq!(
            schedule.next_after_in(after_tuesday, Some(&alpaca)),
            Some(utc(2024, 1, 4, 15, 45, 0))
        );
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap()
    }

    fn naive(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    #[test]
    fn local_instant_resolves_gaps_and_overlaps() {
        // Ordinary times.
        assert_eq!(
            local_instant(New_York, naive(2024, 1, 5, 9, 35)),
            utc(2024, 1, 5, 14, 35, 0)
        );
        assert_eq!(
            local_instant(New_York, naive(2024, 7, 5, 9, 35)),
            utc(2024, 7, 5, 13, 35, 0)
        );
        // 2024-03-10 02:30 does not exist in New York: the clocks jump 02:00 EST -> 03:00 EDT
        // at 07:00 UTC.
        assert_eq!(
            local_instant(New_York, naive(2024, 3, 10, 2, 30)),
            utc(2024, 3, 10, 7, 0, 0)
        );
        assert_eq!(
            local_instant(New_York, naive(2024, 3, 10, 2, 0)),
            utc(2024, 3, 10, 7, 0, 0)
        );
        assert_eq!(
            local_instant(New_York, naive(2024, 3, 10, 3, 0)),
            utc(2024, 3, 10, 7, 0, 0)
        );
        // 2024-11-03 01:30 exists twice (EDT 05:30 UTC, EST 06:30 UTC): the first.
        assert_eq!(
            local_instant(New_York, naive(2024, 11, 3, 1, 30)),
            utc(2024, 11, 3, 5, 30, 0)
        );
        // A zone with a 30-minute shift (Lord Howe, +10:30 -> +11 on 2024-10-06 at 02:00).
        let lord_howe: Tz = "Australia/Lord_Howe".parse().unwrap();
        let t = local_instant(lord_howe, naive(2024, 10, 6, 2, 15));
        assert_eq!(t, utc(2024, 10, 5, 15, 30, 0));
    }

    #[test]
    fn interval_counts_from_the_anchor() {
        let anchor = utc(2024, 1, 2, 14, 30, 0);
        let s = Schedule::interval("5m".parse().unwrap(), anchor).unwrap();
        assert_eq!(s.next_after(anchor), Some(utc(2024, 1, 2, 14, 35, 0)));
        assert_eq!(
            s.next_after(utc(2024, 1, 2, 14, 34, 59)),
            Some(utc(2024, 1, 2, 14, 35, 0))
        );
        assert_eq!(
            s.next_after(utc(2024, 1, 2, 14, 35, 0)),
            Some(utc(2024, 1, 2, 14, 40, 0))
        );
        assert_eq!(s.next_after(utc(2024, 1, 1, 0, 0, 0)), Some(anchor));
        // A month later: still on the 5-minute grid of the anchor.
        assert_eq!(
            s.next_after(utc(2024, 2, 2, 10, 1, 0)),
            Some(utc(2024, 2, 2, 10, 5, 0))
        );
        let ms = Schedule::interval("500ms".parse().unwrap(), anchor).unwrap();
        assert_eq!(
            ms.next_after(anchor + TimeDelta::milliseconds(1200)),
            Some(anchor + TimeDelta::milliseconds(1500))
        );
        assert_eq!(
            Schedule::interval("0s".parse().unwrap(), anchor).unwrap_err(),
            ScheduleError::ZeroInterval
        );
    }

    #[test]
    fn trading_window_bounds_and_days() {
        let w = TradingWindow::from_config(&Window {
            start: ClockTime("09:35".into()),
            end: ClockTime("15:45".into()),
            timezone: TimeZoneName("America/New_York".into()),
            days: vec![ConfigWeekday::Mon, ConfigWeekday::Wed],
            flatten_at_end: true,
        })
        .unwrap();
        // Monday 2024-01-08, EST.
        assert!(!w.contains(utc(2024, 1, 8, 14, 34, 59)));
        assert!(w.contains(utc(2024, 1, 8, 14, 35, 0)));
        assert!(w.contains(utc(2024, 1, 8, 20, 44, 59)));
        assert!(!w.contains(utc(2024, 1, 8, 20, 45, 0)));
        // Tuesday is not a configured day.
        assert!(!w.contains(utc(2024, 1, 9, 15, 0, 0)));
        assert_eq!(
            w.next_open_after(utc(2024, 1, 8, 15, 0, 0)),
            Some(utc(2024, 1, 10, 14, 35, 0))
        );
        assert_eq!(
            w.end_of_window_containing(utc(2024, 1, 8, 15, 0, 0)),
            Some(utc(2024, 1, 8, 20, 45, 0))
        );
        assert_eq!(w.end_of_window_containing(utc(2024, 1, 9, 15, 0, 0)), None);
    }

    #[test]
    fn bad_configs_are_errors() {
        let window = |start: &str, end: &str, tz: &str, days: Vec<ConfigWeekday>| Window {
            start: ClockTime(start.into()),
            end: ClockTime(end.into()),
            timezone: TimeZoneName(tz.into()),
            days,
            flatten_at_end: false,
        };
        let wd = ConfigWeekday::weekdays;
        assert!(matches!(
            TradingWindow::from_config(&window("15:00", "09:00", "UTC", wd())),
            Err(ScheduleError::WindowOrder { .. })
        ));
        assert!(matches!(
            TradingWindow::from_config(&window("9:00", "10:00", "UTC", wd())),
            Err(ScheduleError::ClockTime {
                field: "window.start",
                ..
            })
        ));
        let err = TradingWindow::from_config(&window("09:00", "10:00", "Mars/Olympus", wd()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "window.timezone: unknown time zone 'Mars/Olympus'"
        );
        assert!(matches!(
            TradingWindow::from_config(&window("09:00", "10:00", "UTC", vec![])),
            Err(ScheduleError::NoDays {
                field: "window.days"
            })
        ));
        let trigger = |cron: Option<&str>, interval: Option<&str>| ScheduleTrigger {
            cron: cron.map(str::to_string),
            interval: interval.map(|i| i.parse().unwrap()),
            market_open: None,
            timezone: TimeZoneName::default(),
        };
        let anchor = utc(2024, 1, 1, 0, 0, 0);
        let err = Schedule::from_trigger(&trigger(None, None), anchor).unwrap_err();
        assert_eq!(
            err.to_string(),
            "trigger.schedule: set exactly one of cron, interval, market_open; found none"
        );
        let err =
            Schedule::from_trigger(&trigger(Some("0 * * * * *"), Some("5m")), anchor).unwrap_err();
        assert!(
            err.to_string().ends_with("found cron and interval"),
            "{err}"
        );
        let err = Schedule::from_trigger(&trigger(Some("35 9 * * 1-5"), None), anchor).unwrap_err();
        assert!(
            matches!(err, ScheduleError::Cron(ref m) if m.contains("has 5 fields")),
            "{err}"
        );
    }

    #[test]
    fn trading_day_is_the_local_date() {
        // 02:00 UTC on Jan 3 is still Jan 2 in New York.
        assert_eq!(
            trading_day(utc(2024, 1, 3, 2, 0, 0), New_York),
            NaiveDate::from_ymd_opt(2024, 1, 2).unwrap()
        );
        assert_eq!(
            trading_day(utc(2024, 1, 3, 2, 0, 0), Tz::UTC),
            NaiveDate::from_ymd_opt(2024, 1, 3).unwrap()
        );
    }
}
