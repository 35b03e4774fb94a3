//! The market state of one symbol inside one pipeline: bars of every timeframe the pipeline
//! reads (resampled from the data's own timeframe), streaming indicators, history, and the
//! slot values expressions read.

use super::layout::Layout;
use crate::expr::Values;
use crate::market::indicators::Indicator;
use crate::market::resample::Resampler;
use crate::market::{Bar, Timeframe};
use chrono::Datelike;
use chrono_tz::Tz;
use std::collections::VecDeque;

/// Why a feed cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The pipeline reads a timeframe finer than the data.
    #[error(
        "{symbol}: the pipeline reads {wanted} bars but the data is {data}; a coarser timeframe cannot be split"
    )]
    TooFine {
        /// Symbol.
        symbol: String,
        /// Timeframe the pipeline reads.
        wanted: Timeframe,
        /// Timeframe of the data.
        data: Timeframe,
    },
}

struct Frame {
    timeframe: Timeframe,
    base: usize,
    end: usize,
    resampler: Option<Resampler>,
    indicators: Vec<(Indicator, usize)>,
    needs_session: bool,
    last_day: i32,
    history: VecDeque<Bar>,
    lookback: usize,
    bars: u64,
}

/// One symbol's bars, indicators and values for one pipeline.
pub struct SymbolFeed {
    /// Ticker symbol.
    pub symbol: String,
    data_timeframe: Timeframe,
    tz: Tz,
    frames: Vec<Frame>,
    cur: Vec<f64>,
    prev: Vec<f64>,
    /// Timeframes that completed a bar in the last [`SymbolFeed::push`] or
    /// [`SymbolFeed::advance_to`].
    completed: Vec<Timeframe>,
    /// End (Unix seconds) of the last data bar pushed.
    last_close: i64,
}

impl SymbolFeed {
    /// A feed for `symbol` whose data comes in `data_timeframe` bars, with periods aligned
    /// in `tz`.
    ///
    /// # Errors
    /// [`FeedError::TooFine`] when the layout reads a timeframe finer than the data.
    pub fn new(
        symbol: &str,
        data_timeframe: Timeframe,
        tz: Tz,
        layout: &Layout,
    ) -> Result<SymbolFeed, FeedError> {
        let mut frames = Vec::with_capacity(layout.frames.len());
        for f in &layout.frames {
            if f.timeframe < data_timeframe {
                return Err(FeedError::TooFine {
                    symbol: symbol.to_string(),
                    wanted: f.timeframe,
                    data: data_timeframe,
                });
            }
            let indicators: Vec<(Indicator, usize)> = f
                .indicators
                .iter()
                .map(|(spec, slot)| (Indicator::new(spec), *slot as usize))
                .collect();
            let needs_session = f
                .indicators
                .iter()
                .any(|(s, _)| *s == crate::market::IndicatorSpec::Vwap);
            frames.push(Frame {
                timeframe: f.timeframe,
                base: f.base as usize,
                end: f.end as usize,
                // `new` only fails for a finer target, excluded above.
                resampler: (f.timeframe != data_timeframe)
                    .then(|| Resampler::new(data_timeframe, f.timeframe, tz).ok())
                    .flatten(),
                indicators,
                needs_session,
                last_day: i32::MIN,
                history: VecDeque::new(),
                lookback: f.lookback,
                bars: 0,
            });
        }
        Ok(SymbolFeed {
            symbol: symbol.to_string(),
            data_timeframe,
            tz,
            frames,
            cur: vec![f64::NAN; layout.len],
            prev: vec![f64::NAN; layout.len],
            completed: Vec::new(),
            last_close: i64::MIN,
        })
    }

    /// The timeframe of the data bars.
    pub fn data_timeframe(&self) -> Timeframe {
        self.data_timeframe
    }

    /// Completes coarser bars whose period ended at or before `t` (Unix seconds), so that a
    /// weekly bar closes when the week ends rather than when next week's first bar arrives.
    pub fn advance_to(&mut self, t: i64) -> &[Timeframe] {
        self.completed.clear();
        for i in 0..self.frames.len() {
            let due = self.frames[i]
                .resampler
                .as_ref()
                .and_then(Resampler::closes_at)
                .is_some_and(|end| end <= t);
            if due && let Some(bar) = self.frames[i].resampler.as_mut().and_then(Resampler::flush) {
                self.update_frame(i, &bar);
            }
        }
        &self.completed
    }

    /// Adds one closed data bar whose period ends at `end` (Unix seconds; see
    /// [`crate::engine::clock::LocalDays::period_end`]); returns the timeframes that
    /// completed a bar.
    pub fn push(&mut self, bar: &Bar, end: i64) -> &[Timeframe] {
        self.completed.clear();
        self.last_close = end;
        for i in 0..self.frames.len() {
            let (done, ends) = match self.frames[i].resampler.as_mut() {
                None => (Some(*bar), false),
                Some(r) => {
                    let done = r.push(bar);
                    // A coarse period that ends with this bar is complete now.
                    let ends = r.closes_at().is_some_and(|end| end <= self.last_close);
                    (done, ends)
                }
            };
            if let Some(done) = done {
                self.update_frame(i, &done);
            }
            if ends && let Some(done) = self.frames[i].resampler.as_mut().and_then(Resampler::flush)
            {
                self.update_frame(i, &done);
            }
        }
        &self.completed
    }

    fn update_frame(&mut self, i: usize, bar: &Bar) {
        let f = &mut self.frames[i];
        let (base, end) = (f.base, f.end);
        self.prev[base..end].copy_from_slice(&self.cur[base..end]);
        self.cur[base] = bar.open;
        self.cur[base + 1] = bar.high;
        self.cur[base + 2] = bar.low;
        self.cur[base + 3] = bar.close;
        self.cur[base + 4] = bar.volume;
        let new_session = if f.needs_session {
            let day = crate::engine::clock::utc(bar.ts)
                .with_timezone(&self.tz)
                .date_naive()
                .num_days_from_ce();
            let new = day != f.last_day;
            f.last_day = day;
            new
        } else {
            false
        };
        for (ind, slot) in &mut f.indicators {
            let w = ind.width();
            ind.update(bar, new_session, &mut self.cur[*slot..*slot + w]);
        }
        if f.history.len() == f.lookback {
            f.history.pop_front();
        }
        f.history.push_back(*bar);
        f.bars += 1;
        self.completed.push(f.timeframe);
    }

    /// Sets the position slots (`entry_price`, `bars_held`), NaN when flat.
    pub fn set_position(&mut self, layout: &Layout, entry_price: f64, bars_held: f64) {
        let (e, b) = (layout.entry_price as usize, layout.bars_held as usize);
        self.prev[e] = self.cur[e];
        self.prev[b] = self.cur[b];
        self.cur[e] = entry_price;
        self.cur[b] = bars_held;
    }

    /// The most recent bar of `timeframe`.
    pub fn last_bar(&self, timeframe: Timeframe) -> Option<&Bar> {
        self.frames
            .iter()
            .find(|f| f.timeframe == timeframe)?
            .history
            .back()
    }

    /// Up to `n` most recent bars of `timeframe`, oldest first.
    pub fn history(&self, timeframe: Timeframe, n: usize) -> Vec<Bar> {
        match self.frames.iter().find(|f| f.timeframe == timeframe) {
            Some(f) => f
                .history
                .iter()
                .skip(f.history.len().saturating_sub(n))
                .copied()
                .collect(),
            None => Vec::new(),
        }
    }

    /// Bars seen on `timeframe`.
    pub fn bar_count(&self, timeframe: Timeframe) -> u64 {
        self.frames
            .iter()
            .find(|f| f.timeframe == timeframe)
            .map_or(0, |f| f.bars)
    }

    /// End of the last data bar pushed (Unix seconds).
    pub fn last_close(&self) -> i64 {
        self.last_close
    }

    /// Current value of a slot.
    pub fn value(&self, slot: u32) -> f64 {
        self.cur.get(slot as usize).copied().unwrap_or(f64::NAN)
    }
}

impl Values for SymbolFeed {
    #[inline]
    fn current(&self, slot: u32) -> f64 {
        self.cur.get(slot as usize).copied().unwrap_or(f64::NAN)
    }
    #[inline]
    fn previous(&self, slot: u32) -> f64 {
        self.prev.get(slot as usize).copied().unwrap_or(f64::NAN)
    }
}
