//! Trading calendar against real data, and pipeline time logic (schedule triggers, trading
//! windows, time gates) with exact UTC instants across holidays and daylight-saving changes.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::America::New_York;
use std::collections::BTreeSet;
use std::path::PathBuf;
use ztraded::config::pipeline::{ScheduleTrigger, TimeTriggerConfig, Window};
use ztraded::engine::schedule::{Schedule, TimeGate, TradingWindow, trading_day};
use ztraded::market::calendar::UsEquityCalendar;

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn schedule(json: &str, anchor: DateTime<Utc>) -> Schedule {
    let trigger: ScheduleTrigger = serde_json::from_str(json).unwrap();
    Schedule::from_trigger(&trigger, anchor).unwrap()
}

fn window(json: &str) -> TradingWindow {
    let w: Window = serde_json::from_str(json).unwrap();
    TradingWindow::from_config(&w).unwrap()
}

fn gate(json: &str) -> TimeGate {
    let c: TimeTriggerConfig = serde_json::from_str(json).unwrap();
    TimeGate::from_config(&c).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Calendar against the shipped daily bars
// ---------------------------------------------------------------------------------------------

/// The dates (first column) of a daily CSV file under `examples/data`.
fn bar_dates(file: &str) -> Vec<NaiveDate> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let field = line.split(',').next().unwrap_or("");
            NaiveDate::parse_from_str(field, "%Y-%m-%d")
                .unwrap_or_else(|e| panic!("{}:{}: '{field}': {e}", path.display(), i + 1))
        })
        .collect()
}

/// Every bar date is a trading day, and every trading day between the first and last bar has
/// a bar: the calendar and the exchange's real sessions agree day for day.
fn assert_file_matches_calendar(file: &str, first: NaiveDate, last: NaiveDate, bars: usize) {
    let cal = UsEquityCalendar;
    let dates = bar_dates(file);
    assert_eq!(dates.len(), bars, "{file}: bar count");
    assert_eq!(
        (dates[0], dates[dates.len() - 1]),
        (first, last),
        "{file}: range"
    );
    let in_file: BTreeSet<NaiveDate> = dates.iter().copied().collect();
    assert_eq!(in_file.len(), dates.len(), "{file}: duplicate dates");
    let expected: BTreeSet<NaiveDate> = cal.trading_days(first, last).collect();
    let not_trading: Vec<_> = in_file.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&in_file).collect();
    assert!(
        not_trading.is_empty(),
        "{file}: bars on non-trading days {not_trading:?}"
    );
    assert!(
        missing.is_empty(),
        "{file}: trading days without a bar {missing:?}"
    );
}

#[test]
fn spy_daily_bars_are_exactly_the_trading_days_2007_to_2017() {
    // 2,519 sessions, including the Sandy closure (no bars on 2012-10-29/30) and the
    // 2018-12-05 closure just outside the range.
    assert_file_matches_calendar("SPY.csv", date(2007, 12, 31), date(2017, 12, 29), 2519);
}

#[test]
fn aapl_daily_bars_are_exactly_the_trading_days_2004_to_2018() {
    // Covers the 2004-06-11 (Reagan) and 2007-01-02 (Ford) closures.
    assert_file_matches_calendar("AAPL.csv", date(2004, 8, 19), date(2018, 1, 19), 3379);
}

#[test]
fn goog_daily_bars_are_exactly_the_trading_days_2004_to_2013() {
    assert_file_matches_calendar("GOOG.csv", date(2004, 8, 19), date(2013, 3, 1), 2148);
}

#[test]
fn yhoo_daily_bars_are_exactly_the_trading_days_1996_to_2015() {
    // Covers the 2001-09-11..14 closure, MLK Day's first observance in 1998, and every
    // New Year's Day on a Saturday rule case (2000, 2005, 2011: Dec 31 traded).
    assert_file_matches_calendar("YHOO.csv", date(1996, 4, 12), date(2015, 12, 31), 4965);
}

#[test]
fn closures_in_the_data_range_have_no_bars() {
    let spy: BTreeSet<_> = bar_dates("SPY.csv").into_iter().collect();
    for d in [
        date(2012, 10, 29),
        date(2012, 10, 30),
        date(2012, 4, 6),
        date(2012, 7, 4),
    ] {
        assert!(!spy.contains(&d), "{d}");
    }
    let yhoo: BTreeSet<_> = bar_dates("YHOO.csv").into_iter().collect();
    for d in [
        date(2001, 9, 11),
        date(2001, 9, 14),
        date(2004, 6, 11),
        date(2007, 1, 2),
    ] {
        assert!(!yhoo.contains(&d), "{d}");
    }
    for d in [
        date(1999, 12, 31),
        date(2004, 12, 31),
        date(2010, 12, 31),
        date(2001, 9, 17),
    ] {
        assert!(yhoo.contains(&d), "{d}");
    }
}

// ---------------------------------------------------------------------------------------------
// Schedule triggers
// ---------------------------------------------------------------------------------------------

#[test]
fn cron_follows_new_york_wall_clock_across_march_dst() {
    let s = schedule(
        r#"{"cron": "0 35 9 * * Mon-Fri", "timezone": "America/New_York"}"#,
        utc(2024, 1, 1, 0, 0),
    );
    // Thursday 2024-03-07 after the run: Friday 09:35 EST, then (clocks go forward on Sunday
    // 2024-03-10) Monday 09:35 EDT.
    let after = utc(2024, 3, 7, 15, 0);
    let runs: Vec<_> = s.iter_after(after).take(3).collect();
    assert_eq!(
        runs,
        [
            utc(2024, 3, 8, 14, 35),
            utc(2024, 3, 11, 13, 35),
            utc(2024, 3, 12, 13, 35)
        ]
    );
    // Strictly after: asking at a firing gives the next one.
    assert_eq!(
        s.next_after(utc(2024, 3, 8, 14, 35)),
        Some(utc(2024, 3, 11, 13, 35))
    );
    assert_eq!(
        s.next_after(utc(2024, 3, 8, 14, 34)),
        Some(utc(2024, 3, 8, 14, 35))
    );
}

#[test]
fn cron_follows_new_york_wall_clock_across_november_dst() {
    let s = schedule(
        r#"{"cron": "0 35 9 * * Mon-Fri", "timezone": "America/New_York"}"#,
        utc(2024, 1, 1, 0, 0),
    );
    // Clocks go back on Sunday 2024-11-03: Friday 09:35 EDT, Monday 09:35 EST.
    let runs = s.times_between(utc(2024, 10, 31, 14, 0), utc(2024, 11, 5, 0, 0));
    assert_eq!(runs, [utc(2024, 11, 1, 13, 35), utc(2024, 11, 4, 14, 35)]);
}

#[test]
fn cron_in_the_repeated_hour_fires_once_and_in_the_gap_is_skipped() {
    let nightly = schedule(
        r#"{"cron": "0 30 1 * * *", "timezone": "America/New_York"}"#,
        utc(2024, 1, 1, 0, 0),
    );
    // 01:30 happens twice on 2024-11-03 (05:30 and 06:30 UTC); stepping from firing to
    // firing runs at the first and then the next day.
    let runs: Vec<_> = nightly
        .iter_after(utc(2024, 11, 2, 12, 0))
        .take(3)
        .collect();
    assert_eq!(
        runs,
        [
            utc(2024, 11, 3, 5, 30),
            utc(2024, 11, 4, 6, 30),
            utc(2024, 11, 5, 6, 30)
        ]
    );
    let gap = schedule(
        r#"{"cron": "0 30 2 * * *", "timezone": "America/New_York"}"#,
        utc(2024, 1, 1, 0, 0),
    );
    // 02:30 does not exist on 2024-03-10: no run that day.
    let runs: Vec<_> = gap.iter_after(utc(2024, 3, 9, 12, 0)).take(2).collect();
    assert_eq!(runs, [utc(2024, 3, 11, 6, 30), utc(2024, 3, 12, 6, 30)]);
}

#[test]
fn cron_in_another_time_zone() {
    let s = schedule(
        r#"{"cron": "0 0 8 * * *", "timezone": "Europe/London"}"#,
        utc(2024, 1, 1, 0, 0),
    );
    // BST ends on 2024-10-27: 08:00 BST = 07:00 UTC, then 08:00 GMT = 08:00 UTC.
    let runs = s.times_between(utc(2024, 10, 26, 0, 0), utc(2024, 10, 28, 0, 0));
    assert_eq!(runs, [utc(2024, 10, 26, 7, 0), utc(2024, 10, 27, 8, 0)]);
}

#[test]
fn interval_runs_on_the_grid_of_the_pipeline_start() {
    let start = utc(2024, 3, 8, 14, 31) + chrono::TimeDelta::seconds(7);
    let s = schedule(r#"{"interval": "5m"}"#, start);
    let runs: Vec<_> = s.iter_after(start).take(3).collect();
    let five = chrono::TimeDelta::minutes(5);
    assert_eq!(runs, [start + five, start + five * 2, start + five * 3]);
    // An interval is elapsed time: daylight saving does not move the grid.
    let days = chrono::TimeDelta::days(3);
    assert_eq!(s.next_after(start + days), Some(start + days + five));
    // A simulated clock stepping a day at a time sees 288 runs per day.
    assert_eq!(
        s.times_between(start, start + chrono::TimeDelta::days(1))
            .len(),
        288
    );
}

#[test]
fn market_open_skips_weekends_and_holidays() {
    let s = schedule(
        r#"{"market_open": {"offset": "5m"}}"#,
        utc(2012, 1, 1, 0, 0),
    );
    // (asked at, expected run); all 2012 dates are EDT (UTC-4) except as noted.
    let cases = [
        // Tuesday 2012-07-03 is an early-close day but opens at 09:30: 09:35 EDT.
        (utc(2012, 7, 2, 20, 0), utc(2012, 7, 3, 13, 35)),
        // Independence Day (Wednesday) is skipped.
        (utc(2012, 7, 3, 13, 35), utc(2012, 7, 5, 13, 35)),
        // Good Friday 2012-04-06 and the weekend: Monday.
        (utc(2012, 4, 5, 13, 35), utc(2012, 4, 9, 13, 35)),
        // Hurricane Sandy closed Monday and Tuesday 2012-10-29/30: Wednesday.
        (utc(2012, 10, 26, 13, 40), utc(2012, 10, 31, 13, 35)),
        // Before today's run: today's.
        (utc(2012, 10, 31, 13, 34), utc(2012, 10, 31, 13, 35)),
        // A weekend across the March DST change: Friday EST, Monday EDT.
        (utc(2012, 3, 8, 20, 0), utc(2012, 3, 9, 14, 35)),
        (utc(2012, 3, 9, 14, 35), utc(2012, 3, 12, 13, 35)),
        // Across the November change (Sunday 2012-11-04): Friday EDT, Monday EST.
        (utc(2012, 11, 2, 13, 35), utc(2012, 11, 5, 14, 35)),
        // Christmas 2012 (Tuesday); Christmas Eve is an early close that still opens 09:30.
        (utc(2012, 12, 21, 15, 0), utc(2012, 12, 24, 14, 35)),
        (utc(2012, 12, 24, 14, 35), utc(2012, 12, 26, 14, 35)),
    ];
    for (at, expected) in cases {
        assert_eq!(s.next_after(at), Some(expected), "asked at {at}");
    }
}

#[test]
fn market_open_fires_once_per_trading_day_where_cron_fires_every_weekday() {
    let open = schedule(
        r#"{"market_open": {"offset": "5m"}}"#,
        utc(2012, 1, 1, 0, 0),
    );
    let cron = schedule(r#"{"cron": "0 35 9 * * Mon-Fri"}"#, utc(2012, 1, 1, 0, 0));
    let (a, b) = (utc(2012, 1, 1, 0, 0), utc(2013, 1, 1, 0, 0));
    let open_runs = open.times_between(a, b);
    let cron_runs = cron.times_between(a, b);
    let cal = UsEquityCalendar;
    // 2012 had 250 sessions (252 by the holiday rules, minus the two Sandy days).
    assert_eq!(open_runs.len(), 250);
    assert_eq!(cron_runs.len(), 261); // every weekday of 2012
    for t in &open_runs {
        let d = trading_day(*t, New_York);
        assert!(cal.is_trading_day(d), "{d}");
        assert_eq!(
            Some(*t),
            cal.session(d)
                .map(|s| s.open + chrono::TimeDelta::minutes(5))
        );
    }
    // The cron schedule knows nothing about holidays: it fires on 2012-07-04.
    assert!(cron_runs.contains(&utc(2012, 7, 4, 13, 35)));
    assert!(!open_runs.contains(&utc(2012, 7, 4, 13, 35)));
}

#[test]
fn market_open_uses_the_real_open_of_a_late_open_day() {
    // 2002-09-11: the exchange opened at 12:00 (EDT) for the anniversary of the attacks.
    let s = schedule(
        r#"{"market_open": {"offset": "0s"}}"#,
        utc(2002, 1, 1, 0, 0),
    );
    assert_eq!(
        s.next_after(utc(2002, 9, 10, 20, 0)),
        Some(utc(2002, 9, 11, 16, 0))
    );
}

// ---------------------------------------------------------------------------------------------
// Trading windows
// ---------------------------------------------------------------------------------------------

const WEEKDAY_WINDOW: &str = r#"{"start": "09:35", "end": "15:45", "timezone": "America/New_York",
    "days": ["mon", "tue", "wed", "thu", "fri"], "flatten_at_end": true}"#;

#[test]
fn window_boundaries_start_inclusive_end_exclusive() {
    let w = window(WEEKDAY_WINDOW);
    // Wednesday 2024-01-10, EST: 14:35–20:45 UTC.
    assert!(!w.contains(utc(2024, 1, 10, 14, 34)));
    assert!(w.contains(utc(2024, 1, 10, 14, 35)));
    assert!(w.contains(utc(2024, 1, 10, 20, 44) + chrono::TimeDelta::seconds(59)));
    assert!(!w.contains(utc(2024, 1, 10, 20, 45)));
    assert_eq!(
        w.end_of_window_containing(utc(2024, 1, 10, 15, 0)),
        Some(utc(2024, 1, 10, 20, 45))
    );
    assert_eq!(w.end_of_window_containing(utc(2024, 1, 10, 20, 45)), None);
    // Summer, EDT: 13:35–19:45 UTC.
    assert!(w.contains(utc(2024, 7, 10, 13, 35)));
    assert!(!w.contains(utc(2024, 7, 10, 19, 45)));
    // Saturday: not a configured day.
    assert!(!w.contains(utc(2024, 1, 13, 15, 0)));
}

#[test]
fn window_on_configured_days_only() {
    let w = window(
        r#"{"start": "10:00", "end": "11:00", "timezone": "America/New_York", "days": ["tue", "thu"]}"#,
    );
    let opens: Vec<_> = std::iter::successors(w.next_open_after(utc(2024, 1, 7, 0, 0)), |t| {
        w.next_open_after(*t)
    })
    .take(4)
    .collect();
    // Tue 9, Thu 11, Tue 16, Thu 18 January 2024 at 10:00 EST.
    assert_eq!(
        opens,
        [
            utc(2024, 1, 9, 15, 0),
            utc(2024, 1, 11, 15, 0),
            utc(2024, 1, 16, 15, 0),
            utc(2024, 1, 18, 15, 0)
        ]
    );
    for d in [8, 10, 12, 13, 14] {
        assert!(!w.contains(utc(2024, 1, d, 15, 30)), "January {d}");
    }
    assert!(w.contains(utc(2024, 1, 9, 15, 30)));
    // Inside a window, the next open is the next window's.
    assert_eq!(
        w.next_open_after(utc(2024, 1, 9, 15, 30)),
        Some(utc(2024, 1, 11, 15, 0))
    );
    // Without flatten_at_end there are window ends but no flatten times.
    assert_eq!(
        w.ends_between(utc(2024, 1, 8, 0, 0), utc(2024, 1, 12, 0, 0))
            .len(),
        2
    );
    assert!(
        w.flatten_times_between(utc(2024, 1, 8, 0, 0), utc(2024, 1, 12, 0, 0))
            .is_empty()
    );
}

#[test]
fn window_follows_wall_clock_across_dst() {
    let w = window(WEEKDAY_WINDOW);
    // Friday 2024-03-08 (EST) and Monday 2024-03-11 (EDT).
    assert_eq!(
        w.next_open_after(utc(2024, 3, 8, 12, 0)),
        Some(utc(2024, 3, 8, 14, 35))
    );
    assert_eq!(
        w.next_open_after(utc(2024, 3, 8, 14, 35)),
        Some(utc(2024, 3, 11, 13, 35))
    );
    assert!(w.contains(utc(2024, 3, 11, 13, 35)));
    assert!(!w.contains(utc(2024, 3, 11, 19, 45)));
    // Flatten times of a simulated week across the change: each end at 15:45 local, in
    // (a, b] (an end exactly at a is excluded, one exactly at b included).
    let flat = w.flatten_times_between(utc(2024, 3, 7, 20, 45), utc(2024, 3, 12, 19, 45));
    assert_eq!(
        flat,
        [
            utc(2024, 3, 8, 20, 45),
            utc(2024, 3, 11, 19, 45),
            utc(2024, 3, 12, 19, 45)
        ]
    );
    // November: Friday EDT, Monday EST.
    let flat = w.flatten_times_between(utc(2024, 11, 1, 0, 0), utc(2024, 11, 5, 0, 0));
    assert_eq!(flat, [utc(2024, 11, 1, 19, 45), utc(2024, 11, 4, 20, 45)]);
    assert!(
        w.flatten_times_between(utc(2024, 11, 5, 0, 0), utc(2024, 11, 1, 0, 0))
            .is_empty()
    );
}

#[test]
fn window_times_inside_the_dst_gap() {
    let every_day = r#""days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]"#;
    // 02:30 does not exist on Sunday 2024-03-10 in New York (02:00 EST -> 03:00 EDT at
    // 07:00 UTC): the window starts when the clocks jump.
    let w = window(&format!(
        r#"{{"start": "02:30", "end": "04:00", "timezone": "America/New_York", {every_day}}}"#
    ));
    assert_eq!(
        w.next_open_after(utc(2024, 3, 10, 0, 0)),
        Some(utc(2024, 3, 10, 7, 0))
    );
    assert!(w.contains(utc(2024, 3, 10, 7, 0)));
    assert_eq!(
        w.end_of_window_containing(utc(2024, 3, 10, 7, 30)),
        Some(utc(2024, 3, 10, 8, 0))
    );
    // The day before and after: 02:30 EST (07:30 UTC) and 02:30 EDT (06:30 UTC).
    assert_eq!(
        w.next_open_after(utc(2024, 3, 9, 0, 0)),
        Some(utc(2024, 3, 9, 7, 30))
    );
    assert_eq!(
        w.next_open_after(utc(2024, 3, 10, 7, 0)),
        Some(utc(2024, 3, 11, 6, 30))
    );
    // A window entirely inside the gap is empty that day and skipped.
    let w = window(&format!(
        r#"{{"start": "02:10", "end": "02:50", "timezone": "America/New_York", {every_day}}}"#
    ));
    assert_eq!(
        w.next_open_after(utc(2024, 3, 9, 12, 0)),
        Some(utc(2024, 3, 11, 6, 10))
    );
    assert!(!w.contains(utc(2024, 3, 10, 7, 0)));
    assert!(
        w.ends_between(utc(2024, 3, 9, 12, 0), utc(2024, 3, 10, 23, 0))
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// Time gates
// ---------------------------------------------------------------------------------------------

#[test]
fn time_gate_between_after_and_before() {
    let g = gate(r#"{"after": "09:45", "before": "15:30", "timezone": "America/New_York"}"#);
    // Winter EST.
    assert!(!g.allows(utc(2024, 1, 10, 14, 44)));
    assert!(g.allows(utc(2024, 1, 10, 14, 45)));
    assert!(g.allows(utc(2024, 1, 10, 20, 29)));
    assert!(!g.allows(utc(2024, 1, 10, 20, 30)));
    // Summer EDT.
    assert!(g.allows(utc(2024, 7, 10, 13, 45)));
    assert!(!g.allows(utc(2024, 7, 10, 19, 30)));
    // No days given: every day, weekends included.
    assert!(g.allows(utc(2024, 1, 13, 15, 0)));
}

#[test]
fn time_gate_days_open_bounds_and_overnight() {
    let weekdays = gate(r#"{"after": "09:45", "days": ["mon", "tue", "wed", "thu", "fri"]}"#);
    assert!(weekdays.allows(utc(2024, 1, 12, 23, 0))); // Friday 18:00 EST: no `before`
    assert!(!weekdays.allows(utc(2024, 1, 13, 15, 0))); // Saturday
    assert!(!weekdays.allows(utc(2024, 1, 12, 14, 0))); // Friday 09:00
    let before_only = gate(r#"{"before": "10:00", "timezone": "UTC"}"#);
    assert!(before_only.allows(utc(2024, 1, 12, 0, 0)));
    assert!(!before_only.allows(utc(2024, 1, 12, 10, 0)));
    // after > before spans midnight.
    let night = gate(r#"{"after": "22:00", "before": "02:00", "timezone": "UTC"}"#);
    assert!(night.allows(utc(2024, 1, 12, 23, 0)));
    assert!(night.allows(utc(2024, 1, 13, 1, 59)));
    assert!(!night.allows(utc(2024, 1, 13, 2, 0)));
    assert!(!night.allows(utc(2024, 1, 13, 12, 0)));
    // after == before never opens.
    let never = gate(r#"{"after": "10:00", "before": "10:00", "timezone": "UTC"}"#);
    assert!(!never.allows(utc(2024, 1, 12, 10, 0)));
    let always = gate(r#"{}"#);
    assert!(always.allows(utc(2024, 1, 13, 3, 0)));
}

#[test]
fn trading_day_counts_in_the_given_zone() {
    // 21:30 EST on 2024-01-10 is already 2024-01-11 in UTC.
    let t = utc(2024, 1, 11, 2, 30);
    assert_eq!(trading_day(t, New_York), date(2024, 1, 10));
    assert_eq!(trading_day(t, chrono_tz::UTC), date(2024, 1, 11));
}
