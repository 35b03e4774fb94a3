//! Market data for the daemon. The replay source serves CSV bars on the simulated clock: a
//! bar is published when the clock passes its period end, all symbols' bars of one instant
//! together as one batch.

use crate::engine::clock::LocalDays;
use crate::market::replay::{DataError, ReplayOptions, Series, read_dir};
use crate::market::{Bar, Timeframe};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// One symbol's bar that closed.
#[derive(Clone, Debug, PartialEq)]
pub struct BarEvent {
    /// Ticker symbol.
    pub symbol: Arc<str>,
    /// The bar.
    pub bar: Bar,
    /// Its timeframe (the data file's).
    pub timeframe: Timeframe,
}

/// Every bar that closed at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct BarBatch {
    /// The instant (the bars' period end), Unix seconds.
    pub end: i64,
    /// The bars, by symbol.
    pub bars: Vec<BarEvent>,
}

/// Historical bars of every symbol of the replay directory.
#[derive(Debug)]
pub struct ReplayHub {
    series: BTreeMap<String, (Arc<str>, Series, Vec<i64>)>,
}

impl ReplayHub {
    /// Reads every `*.csv` of `dir` (file stem = symbol).
    ///
    /// # Errors
    /// The first file that does not read, with file and line.
    pub fn load(dir: &Path, options: &ReplayOptions) -> Result<ReplayHub, DataError> {
        let all = read_dir(dir, options)?;
        let mut days = LocalDays::new(options.timezone);
        let series = all
            .into_iter()
            .map(|(symbol, s)| {
                let ends = s
                    .bars
                    .iter()
                    .map(|b| days.period_end(s.timeframe, b.ts))
                    .collect();
                (symbol.clone(), (Arc::from(symbol.as_str()), s, ends))
            })
            .collect();
        Ok(ReplayHub { series })
    }

    /// Symbols with data.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }

    /// The timeframe of `symbol`'s data.
    pub fn timeframe(&self, symbol: &str) -> Option<Timeframe> {
        self.series.get(symbol).map(|(_, s, _)| s.timeframe)
    }

    /// `symbol`'s bars that closed at or before `until` (Unix seconds), with their ends.
    pub fn history(&self, symbol: &str, until: i64) -> (&[Bar], &[i64]) {
        match self.series.get(symbol) {
            Some((_, s, ends)) => {
                let n = ends.partition_point(|e| *e <= until);
                (&s.bars[..n], &ends[..n])
            }
            None => (&[], &[]),
        }
    }

    /// Closes of `symbol`'s last `n` bars closed at or before `until` (daily data: daily
    /// closes, for the correlation rule).
    pub fn closes(&self, symbol: &str, until: i64, n: usize) -> Vec<f64> {
        let (bars, _) = self.history(symbol, until);
        bars[bars.len().saturating_sub(n)..]
            .iter()
            .map(|b| b.close)
            .collect()
    }

    /// The end of the first bar of any symbol.
    pub fn first_end(&self) -> Option<i64> {
        self.series
            .values()
            .filter_map(|(_, _, e)| e.first().copied())
            .min()
    }

    /// The batches that close after `after`, in time order.
    pub fn batches_after(self: &Arc<Self>, after: i64) -> Timeline {
        let next = self
            .series
            .values()
            .map(|(_, _, ends)| ends.partition_point(|e| *e <= after))
            .collect();
        Timeline {
            hub: Arc::clone(self),
            next,
        }
    }
}

/// An iterator over the batches of a [`ReplayHub`], from a point in time.
pub struct Timeline {
    hub: Arc<ReplayHub>,
    next: Vec<usize>,
}

impl Iterator for Timeline {
    type Item = BarBatch;

    fn next(&mut self) -> Option<BarBatch> {
        let end = self
            .hub
            .series
            .values()
            .zip(&self.next)
            .filter_map(|((_, _, ends), &i)| ends.get(i).copied())
            .min()?;
        let mut bars = Vec::new();
        for ((symbol, series, ends), i) in self.hub.series.values().zip(self.next.iter_mut()) {
            if ends.get(*i) == Some(&end) {
                bars.push(BarEvent {
                    symbol: Arc::clone(symbol),
                    bar: series.bars[*i],
                    timeframe: series.timeframe,
                });
                *i += 1;
            }
        }
        Some(BarBatch { end, bars })
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
        let (goog, ends) = hub.history("GOOG", cursor);
        assert!(ends.iter().all(|e| *e <= cursor) && goog.len() == ends.len());
    }
}
