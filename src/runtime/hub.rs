//! [`ReplayHub`]: historical bars of several symbols served in time order as batches of the
//! bars that close at the same instant — the replay market data of the daemon and the data
//! of a backtest. A bar becomes visible when its period closes.

use crate::engine::clock::LocalDays;
use crate::engine::core::{BarBatch, BarEvent, History};
use crate::market::replay::{DataError, ReplayOptions, Series, read_dir, read_file};
use crate::market::{Bar, Timeframe};
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

struct Entry {
    symbol: Arc<str>,
    series: Series,
    /// Period end of each bar, Unix seconds.
    ends: Vec<i64>,
    /// (local trading day, index of its last bar): the daily closes.
    days: Vec<(chrono::NaiveDate, usize)>,
}

/// Historical bars of every symbol of a replay directory (or of a backtest's symbols).
pub struct ReplayHub {
    series: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for ReplayHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayHub")
            .field("symbols", &self.series.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ReplayHub {
    /// Reads every `*.csv` of `dir` (file stem = symbol).
    ///
    /// # Errors
    /// The first file that does not read, with file and line.
    pub fn load(dir: &Path, options: &ReplayOptions) -> Result<ReplayHub, DataError> {
        Ok(Self::from_series(read_dir(dir, options)?, options.timezone))
    }

    /// Reads `<dir>/<symbol>.csv` of each of `symbols`.
    ///
    /// # Errors
    /// The first file that does not read, with file and line.
    pub fn load_symbols(
        dir: &Path,
        symbols: &[String],
        options: &ReplayOptions,
    ) -> Result<ReplayHub, DataError> {
        let mut all = BTreeMap::new();
        for symbol in symbols {
            let series = read_file(&dir.join(format!("{symbol}.csv")), options)?;
            all.insert(symbol.clone(), series);
        }
        Ok(Self::from_series(all, options.timezone))
    }

    /// A hub over series already read.
    pub fn from_series(all: BTreeMap<String, Series>, tz: Tz) -> ReplayHub {
        let mut local = LocalDays::new(tz);
        let series = all
            .into_iter()
            .map(|(symbol, s)| {
                let ends: Vec<i64> = s
                    .bars
                    .iter()
                    .map(|b| local.period_end(s.timeframe, b.ts))
                    .collect();
                let mut days: Vec<(chrono::NaiveDate, usize)> = Vec::new();
                for (i, end) in ends.iter().enumerate() {
                    // A bar closing at local midnight belongs to the day that ended.
                    let day = local.date(end - 1);
                    match days.last_mut() {
                        Some(last) if last.0 == day => last.1 = i,
                        _ => days.push((day, i)),
                    }
                }
                (
                    symbol.clone(),
                    Entry {
                        symbol: Arc::from(symbol.as_str()),
                        series: s,
                        ends,
                        days,
                    },
                )
            })
            .collect();
        ReplayHub { series }
    }

    /// Symbols with data.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }

    /// Bars of `symbol` in all.
    pub fn len(&self, symbol: &str) -> usize {
        self.series.get(symbol).map_or(0, |e| e.series.bars.len())
    }

    /// Whether the hub holds no bar.
    pub fn is_empty(&self) -> bool {
        self.series.values().all(|e| e.series.bars.is_empty())
    }

    /// Bars of every symbol closing in `(after, until]`.
    pub fn count_between(&self, after: i64, until: i64) -> u64 {
        self.series
            .values()
            .map(|e| {
                let a = e.ends.partition_point(|x| *x <= after);
                let b = e.ends.partition_point(|x| *x <= until);
                b.saturating_sub(a) as u64
            })
            .sum()
    }

    /// The end of the first bar of any symbol.
    pub fn first_end(&self) -> Option<i64> {
        self.series
            .values()
            .filter_map(|e| e.ends.first().copied())
            .min()
    }

    /// The end of the last bar of any symbol.
    pub fn last_end(&self) -> Option<i64> {
        self.series
            .values()
            .filter_map(|e| e.ends.last().copied())
            .max()
    }

    /// `(period end, close)` of `symbol`'s bars closing in `(after, until]`.
    pub fn closes_between(&self, symbol: &str, after: i64, until: i64) -> Vec<(i64, f64)> {
        let Some(e) = self.series.get(symbol) else {
            return Vec::new();
        };
        let a = e.ends.partition_point(|x| *x <= after);
        let b = e.ends.partition_point(|x| *x <= until);
        e.ends[a..b]
            .iter()
            .zip(&e.series.bars[a..b])
            .map(|(t, bar)| (*t, bar.close))
            .collect()
    }

    /// `symbol`'s bars that closed at or before `until` (Unix seconds), with their period
    /// ends (empty for an unknown symbol).
    pub fn bars_until(&self, symbol: &str, until: i64) -> (&[Bar], &[i64]) {
        match self.series.get(symbol) {
            Some(e) => {
                let n = e.ends.partition_point(|x| *x <= until);
                (&e.series.bars[..n], &e.ends[..n])
            }
            None => (&[], &[]),
        }
    }

    /// The batches that close after `after`, in time order.
    pub fn batches_after(self: &Arc<Self>, after: i64) -> Timeline {
        let next = self
            .series
            .values()
            .map(|e| e.ends.partition_point(|x| *x <= after))
            .collect();
        let mut timeline = Timeline {
            hub: Arc::clone(self),
            next,
            next_end: None,
        };
        timeline.next_end = timeline.find_next_end();
        timeline
    }
}

impl History for ReplayHub {
    fn timeframe(&self, symbol: &str) -> Option<Timeframe> {
        self.series.get(symbol).map(|e| e.series.timeframe)
    }

    fn recent_bars(&self, symbol: &str, until: i64, n: usize) -> Vec<(Bar, i64)> {
        let (bars, ends) = self.bars_until(symbol, until);
        let from = bars.len().saturating_sub(n);
        bars[from..]
            .iter()
            .cloned()
            .zip(ends[from..].iter().copied())
            .collect()
    }

    fn daily_closes(&self, symbol: &str, until: i64, n: usize) -> Vec<f64> {
        let Some(e) = self.series.get(symbol) else {
            return Vec::new();
        };
        let visible = e.ends.partition_point(|x| *x <= until);
        if visible == 0 {
            return Vec::new();
        }
        // Days whose last visible bar is before `visible`; the current day's last visible
        // bar stands for its close so far.
        let complete = e.days.partition_point(|(_, last)| *last < visible);
        let mut closes: Vec<f64> = e.days[..complete]
            .iter()
            .map(|(_, i)| e.series.bars[*i].close)
            .collect();
        let first_of_next = if complete == 0 {
            0
        } else {
            e.days[complete - 1].1 + 1
        };
        if complete < e.days.len() && first_of_next < visible {
            closes.push(e.series.bars[visible - 1].close);
        }
        let from = closes.len().saturating_sub(n);
        closes.split_off(from)
    }
}

/// An iterator over the batches of a [`ReplayHub`], from a point in time.
pub struct Timeline {
    hub: Arc<ReplayHub>,
    next: Vec<usize>,
    /// The end of the next batch (kept up to date: the driver peeks at every step).
    next_end: Option<i64>,
}

impl Timeline {
    /// The end of the next batch, without taking it.
    pub fn peek_end(&self) -> Option<i64> {
        self.next_end
    }

    fn find_next_end(&self) -> Option<i64> {
        self.hub
            .series
            .values()
            .zip(&self.next)
            .filter_map(|(e, &i)| e.ends.get(i).copied())
            .min()
    }

    /// The next batch written into `batch` (its earlier contents replaced, its vector and
    /// symbol handles reused); `false`, with `batch` untouched, after the last one.
    pub fn next_into(&mut self, batch: &mut BarBatch) -> bool {
        let Some(end) = self.next_end else {
            return false;
        };
        batch.end = end;
        let mut n = 0;
        for (e, i) in self.hub.series.values().zip(self.next.iter_mut()) {
            if e.ends.get(*i) == Some(&end) {
                let bar = e.series.bars[*i];
                match batch.bars.get_mut(n) {
                    Some(slot) if Arc::ptr_eq(&slot.symbol, &e.symbol) => {
                        slot.bar = bar;
                        slot.timeframe = e.series.timeframe;
                    }
                    Some(slot) => {
                        *slot = BarEvent {
                            symbol: Arc::clone(&e.symbol),
                            bar,
                            timeframe: e.series.timeframe,
                        };
                    }
                    None => batch.bars.push(BarEvent {
                        symbol: Arc::clone(&e.symbol),
                        bar,
                        timeframe: e.series.timeframe,
                    }),
                }
                n += 1;
                *i += 1;
            }
        }
        batch.bars.truncate(n);
        self.next_end = self.find_next_end();
        true
    }
}

impl Iterator for Timeline {
    type Item = BarBatch;

    fn next(&mut self) -> Option<BarBatch> {
        let mut batch = BarBatch {
            end: 0,
            bars: Vec::with_capacity(self.next.len()),
        };
        self.next_into(&mut batch).then_some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_merge_symbols_in_time_order_from_a_cursor() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
        let hub = Arc::new(ReplayHub::load(&dir, &ReplayOptions::default()).unwrap());
        let all: Vec<BarBatch> = hub.batches_after(i64::MIN).collect();
        assert!(all.windows(2).all(|w| w[0].end < w[1].end));
        let bars: usize = all.iter().map(|b| b.bars.len()).sum();
        assert_eq!(bars, 2148 + 3379 + 2519 + 4965);
        let cursor = all[100].end;
        let rest: Vec<BarBatch> = hub.batches_after(cursor).collect();
        assert_eq!(rest.len(), all.len() - 101);
        assert_eq!(rest[0], all[101]);
        let (goog, ends) = hub.bars_until("GOOG", cursor);
        assert!(ends.iter().all(|e| *e <= cursor) && goog.len() == ends.len());
    }

    /// One batch refilled step after step holds what the iterator hands out.
    #[test]
    fn a_reused_batch_gets_each_batch_in_turn() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
        let hub = Arc::new(ReplayHub::load(&dir, &ReplayOptions::default()).unwrap());
        let all: Vec<BarBatch> = hub.batches_after(i64::MIN).collect();
        let mut timeline = hub.batches_after(i64::MIN);
        let mut batch = BarBatch {
            end: 0,
            bars: Vec::new(),
        };
        let mut k = 0;
        while timeline.next_into(&mut batch) {
            assert_eq!(batch, all[k]);
            k += 1;
            assert_eq!(timeline.peek_end(), all.get(k).map(|b| b.end));
        }
        assert_eq!(k, all.len());
        assert_eq!(batch, all[k - 1]);
    }

    #[test]
    fn daily_closes_of_daily_and_intraday_data() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
        let hub = ReplayHub::load(&dir, &ReplayOptions::default()).unwrap();
        let (bars, ends) = hub.bars_until("AAPL", i64::MAX);
        let at = ends[100];
        let closes = hub.daily_closes("AAPL", at, 5);
        let want: Vec<f64> = bars[96..=100].iter().map(|b| b.close).collect();
        assert_eq!(closes, want);
        let intraday = ReplayHub::load(&dir.join("intraday"), &ReplayOptions::default()).unwrap();
        let symbol = intraday.symbols().next().unwrap().to_string();
        let (bars, ends) = intraday.bars_until(&symbol, i64::MAX);
        let closes = intraday.daily_closes(&symbol, *ends.last().unwrap(), 3);
        assert_eq!(closes.len(), 3);
        assert_eq!(*closes.last().unwrap(), bars.last().unwrap().close);
        // One close per day: far fewer than bars.
        assert!(intraday.daily_closes(&symbol, i64::MAX, usize::MAX).len() * 10 < bars.len());
    }
}
