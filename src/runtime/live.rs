//! [`LiveHub`]: the recent bars of a live source (Alpaca), kept for the pipelines the way
//! the replay data is kept for a replay: the feeds warm up on it and the correlation rule
//! reads its daily closes through the same [`History`] trait.
//!
//! Each symbol has one *data timeframe* (the finest timeframe the pipelines on it read when
//! it was first subscribed, see [`crate::daemon::live`]); its history is loaded over REST
//! ([`LiveHub::load`]) and extended with each bar the live stream completes
//! ([`LiveHub::push`]). A symbol keeps at most the number of bars it was loaded with (the
//! warm-up the pipelines need, at least [`MIN_KEEP`]), and up to [`DAILY_KEEP`] daily closes.

use crate::engine::clock::LocalDays;
use crate::engine::core::History;
use crate::market::{Bar, Timeframe};
use chrono::NaiveDate;
use chrono_tz::Tz;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, RwLock};

/// Bars kept per symbol at least.
pub const MIN_KEEP: usize = 500;
/// Daily closes kept per symbol (a year and a quarter of trading days).
pub const DAILY_KEEP: usize = 320;

#[derive(Debug)]
struct LiveSeries {
    timeframe: Timeframe,
    /// (bar, period end Unix seconds), time order.
    bars: VecDeque<(Bar, i64)>,
    keep: usize,
    /// (local trading date, close, end of the last bar of that date seen, Unix seconds),
    /// time order; the last entry is the current day so far.
    daily: VecDeque<(NaiveDate, f64, i64)>,
}

/// See the module documentation.
pub struct LiveHub {
    tz: Tz,
    calendar: RwLock<Option<std::sync::Arc<dyn crate::market::live::SessionCalendar>>>,
    series: RwLock<BTreeMap<String, LiveSeries>>,
    days: Mutex<LocalDays>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LiveHub {
    /// An empty hub whose days and periods are those of time zone `tz`.
    pub fn new(tz: Tz) -> LiveHub {
        LiveHub {
            tz,
            calendar: RwLock::new(None),
            series: RwLock::new(BTreeMap::new()),
            days: Mutex::new(LocalDays::new(tz)),
        }
    }

    /// Uses `calendar` (the broker's, e.g. Alpaca's) for the pipelines' `market_open`
    /// schedules.
    pub fn set_calendar(&self, calendar: std::sync::Arc<dyn crate::market::live::SessionCalendar>) {
        *write(&self.calendar) = Some(calendar);
    }

    /// The time zone of the hub's days.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The period end (Unix seconds) of a bar of `timeframe` starting at `start` (Unix
    /// seconds), aligned like the replay data's.
    pub fn period_end(&self, timeframe: Timeframe, start: i64) -> i64 {
        self.days
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .period_end(timeframe, start)
    }

    fn local_date(&self, end: i64) -> NaiveDate {
        // A bar closing at local midnight belongs to the day that ended.
        self.days
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .date(end - 1)
    }

    /// Replaces `symbol`'s history: data timeframe `timeframe`, `bars` (time order, `ts` =
    /// period start; each bar's end is its period end, capped at `now`, Unix seconds — a
    /// bar whose period has not ended by `now` is dropped: it is still forming), `daily`
    /// the daily bars for the daily closes (empty when the data timeframe is `1d`: the
    /// bars themselves give them). Keeps at least `keep` bars from now on.
    pub fn load(
        &self,
        symbol: &str,
        timeframe: Timeframe,
        bars: Vec<Bar>,
        daily: Vec<Bar>,
        keep: usize,
        now: i64,
    ) {
        let mut out: VecDeque<(Bar, i64)> = VecDeque::with_capacity(bars.len());
        for bar in bars {
            let end = self.period_end(timeframe, bar.ts);
            if end > now || out.back().is_some_and(|(b, _)| b.ts >= bar.ts) {
                continue;
            }
            out.push_back((bar, end));
        }
        let keep = keep.max(MIN_KEEP).max(out.len());
        let mut closes: VecDeque<(NaiveDate, f64, i64)> = VecDeque::new();
        let source: Vec<(i64, f64)> = if daily.is_empty() {
            out.iter().map(|(b, e)| (*e, b.close)).collect()
        } else {
            daily
                .iter()
                .map(|b| (self.period_end(Timeframe::D1, b.ts), b.close))
                .filter(|(e, _)| *e <= now)
                .collect()
        };
        for (end, close) in source {
            push_close(&mut closes, self.local_date(end), close, end);
        }
        write(&self.series).insert(
            symbol.to_string(),
            LiveSeries {
                timeframe,
                bars: out,
                keep,
                daily: closes,
            },
        );
    }

    /// Appends a bar of `symbol` that closed at `end` (Unix seconds). A bar not after the
    /// last one kept, or of an unknown symbol, is ignored: answers whether it was added.
    pub fn push(&self, symbol: &str, bar: Bar, end: i64) -> bool {
        let date = self.local_date(end);
        let mut series = write(&self.series);
        let Some(s) = series.get_mut(symbol) else {
            return false;
        };
        if s.bars.back().is_some_and(|(b, _)| b.ts >= bar.ts) {
            return false;
        }
        push_close(&mut s.daily, date, bar.close, end);
        s.bars.push_back((bar, end));
        while s.bars.len() > s.keep {
            s.bars.pop_front();
        }
        true
    }

    /// The data timeframe of `symbol`, `None` when it is not loaded.
    pub fn timeframe_of(&self, symbol: &str) -> Option<Timeframe> {
        read(&self.series).get(symbol).map(|s| s.timeframe)
    }

    /// The last bar kept of `symbol` (`ts` = period start).
    pub fn last_bar(&self, symbol: &str) -> Option<Bar> {
        read(&self.series)
            .get(symbol)
            .and_then(|s| s.bars.back().map(|(b, _)| *b))
    }

    /// Bars kept of `symbol`.
    pub fn len(&self, symbol: &str) -> usize {
        read(&self.series).get(symbol).map_or(0, |s| s.bars.len())
    }

    /// Whether no symbol is loaded.
    pub fn is_empty(&self) -> bool {
        read(&self.series).is_empty()
    }

    /// The loaded symbols with their data timeframes.
    pub fn symbols(&self) -> Vec<(String, Timeframe)> {
        read(&self.series)
            .iter()
            .map(|(s, e)| (s.clone(), e.timeframe))
            .collect()
    }

    /// Forgets `symbol` (no running pipeline reads it any more).
    pub fn forget(&self, symbol: &str) {
        write(&self.series).remove(symbol);
    }
}

fn push_close(closes: &mut VecDeque<(NaiveDate, f64, i64)>, date: NaiveDate, close: f64, end: i64) {
    match closes.back_mut() {
        Some(last) if last.0 == date => {
            last.1 = close;
            last.2 = end;
        }
        Some(last) if last.0 > date => {}
        _ => closes.push_back((date, close, end)),
    }
    while closes.len() > DAILY_KEEP {
        closes.pop_front();
    }
}

impl std::fmt::Debug for LiveHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHub")
            .field("tz", &self.tz)
            .field("symbols", &read(&self.series).len())
            .finish_non_exhaustive()
    }
}

impl History for LiveHub {
    fn calendar(&self) -> Option<std::sync::Arc<dyn crate::market::live::SessionCalendar>> {
        read(&self.calendar).clone()
    }

    fn timeframe(&self, symbol: &str) -> Option<Timeframe> {
        read(&self.series).get(symbol).map(|s| s.timeframe)
    }

    fn recent_bars(&self, symbol: &str, until: i64, n: usize) -> Vec<(Bar, i64)> {
        let series = read(&self.series);
        let Some(s) = series.get(symbol) else {
            return Vec::new();
        };
        let visible = s.bars.partition_point(|(_, e)| *e <= until);
        let from = visible.saturating_sub(n);
        s.bars.range(from..visible).cloned().collect()
    }

    fn daily_closes(&self, symbol: &str, until: i64, n: usize) -> Vec<f64> {
        let series = read(&self.series);
        let Some(s) = series.get(symbol) else {
            return Vec::new();
        };
        // The current day's last bar so far stands for its close, as in the replay.
        let visible = s.daily.partition_point(|(_, _, end)| *end <= until);
        let from = visible.saturating_sub(n);
        s.daily.range(from..visible).map(|(_, c, _)| *c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn bar(ts: i64, close: f64) -> Bar {
        Bar {
            ts,
            open: close,
            high: close,
            low: close,
            close,
            volume: 100.0,
        }
    }

    fn ny(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        chrono_tz::America::New_York
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .unwrap()
            .timestamp()
    }

    #[test]
    fn a_forming_bar_is_not_loaded_and_pushes_keep_order_and_size() {
        let hub = LiveHub::new(chrono_tz::America::New_York);
        let start = ny(2026, 12, 1, 9, 30);
        let bars: Vec<Bar> = (0..10).map(|i| bar(start + i * 60, i as f64)).collect();
        // At 09:39:30 the 09:39 minute is still forming.
        hub.load(
            "AAPL",
            Timeframe::M1,
            bars,
            Vec::new(),
            3,
            start + 9 * 60 + 30,
        );
        assert_eq!(hub.len("AAPL"), 9);
        let recent = hub.recent_bars("AAPL", i64::MAX, 2);
        assert_eq!(
            recent
                .iter()
                .map(|(b, e)| (b.close, *e))
                .collect::<Vec<_>>(),
            vec![(7.0, start + 8 * 60), (8.0, start + 9 * 60)]
        );
        // Not after the last: ignored; after it: kept.
        assert!(!hub.push("AAPL", bar(start + 8 * 60, 99.0), start + 9 * 60));
        assert!(hub.push("AAPL", bar(start + 9 * 60, 9.0), start + 10 * 60));
        assert!(!hub.push("MSFT", bar(start, 1.0), start + 60));
        assert_eq!(hub.last_bar("AAPL").unwrap().close, 9.0);
        // Bars visible at an instant: those that closed by then.
        assert_eq!(hub.recent_bars("AAPL", start + 60, 10).len(), 1);
        assert_eq!(hub.timeframe("AAPL"), Some(Timeframe::M1));
    }

    #[test]
    fn daily_closes_come_from_the_daily_bars_then_the_live_ones() {
        let hub = LiveHub::new(chrono_tz::America::New_York);
        let days = vec![
            bar(ny(2026, 11, 30, 0, 0), 1.0),
            bar(ny(2026, 12, 1, 0, 0), 2.0),
            bar(ny(2026, 12, 2, 0, 0), 3.0),
        ];
        let now = ny(2026, 12, 3, 10, 0);
        let minute = ny(2026, 12, 3, 9, 30);
        hub.load(
            "AAPL",
            Timeframe::M1,
            vec![bar(minute, 50.0)],
            days,
            10,
            now,
        );
        assert!(hub.push("AAPL", bar(minute + 60, 51.0), minute + 120));
        let closes = hub.daily_closes("AAPL", now, 10);
        assert_eq!(
            closes,
            vec![1.0, 2.0, 3.0, 51.0],
            "today's close so far last"
        );
        assert_eq!(
            hub.daily_closes("AAPL", ny(2026, 12, 2, 12, 0), 2),
            vec![1.0, 2.0]
        );
    }
}
