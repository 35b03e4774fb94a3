//! The built-in signal generators (DESIGN.md §2.2): each watches every ticker of the
//! scanner that declares it and is evaluated on each closed bar of its timeframe, computed
//! with the same indicator state machines the pipelines use ([`crate::market::indicators`],
//! TA-Lib-checked). A generator whose timeframe is coarser than the data's aggregates the
//! data's bars with [`Resampler`], as the pipelines' feeds do.
//!
//! | type | fires on the closed bar where | direction | confidence (clamped to 0–100) |
//! | --- | --- | --- | --- |
//! | `golden_cross` | the fast average (`fast`, default 50, `ma`: sma/ema) closes above the slow one (`slow`, 200) after closing at or below it | long | `50 + 10 × (close − slow_ma) / slow_ma × 100`: 50 at the slow average, +10 per percent the close is above it |
//! | `death_cross` | the fast average closes below the slow one after closing at or above it | short | `50 + 10 × (slow_ma − close) / slow_ma × 100` |
//! | `rsi_oversold` | RSI (`period`, 14) is below `below` (30), each bar it stays there | long | `50 + 5 × (below − rsi)`: 50 at the level, +5 per RSI point beneath |
//! | `rsi_overbought` | RSI is above `above` (70), each bar it stays there | short | `50 + 5 × (rsi − above)` |
//! | `macd_cross` | the MACD line (`fast` 12, `slow` 26, `signal` 9) crosses its signal line (the histogram changes sign) | long upwards, short downwards | `50 + 50 × abs(Δhist) / (0.5 % × close)`: 100 when the histogram moved by half a percent of the price in the bar |
//! | `volume_spike` | the volume exceeds `multiplier` (2) × the average volume of the `period` (20) bars before | long when close ≥ open, else short | `50 × ratio / multiplier` with `ratio = volume / average`: 50 at the threshold, 100 at twice it |
//!
//! A signal's id is `scanner:type:ticker:timeframe:bar end` (unique per bar), its
//! timestamp the bar's close (period end, Unix seconds), its source `scanner:<name>`.

use super::{Direction, Signal};
use crate::config::scanner::{MovingAverage, Scanner, SignalKind};
use crate::engine::core::{BarBatch, History};
use crate::market::indicators::{Indicator, IndicatorSpec};
use crate::market::resample::Resampler;
use crate::market::{Bar, Timeframe};
use chrono_tz::Tz;
use std::collections::HashMap;
use std::sync::Arc;

/// One generator's indicator state for one ticker.
#[derive(Clone, Debug)]
enum State {
    Cross {
        fast: Indicator,
        slow: Indicator,
        /// `fast − slow` of the previous bar (NaN inside the lookback).
        prev: f64,
        golden: bool,
    },
    Rsi {
        rsi: Indicator,
        level: f64,
        below: bool,
    },
    Macd {
        macd: Indicator,
        prev_hist: f64,
    },
    Volume {
        average: Indicator,
        /// The average of the bars before the current one.
        prev_average: f64,
        multiplier: f64,
    },
}

impl State {
    fn new(kind: &SignalKind) -> State {
        let ma = |m: MovingAverage, n: u32| {
            let n = n as usize;
            Indicator::new(&match m {
                MovingAverage::Sma => IndicatorSpec::Sma(n),
                MovingAverage::Ema => IndicatorSpec::Ema(n),
            })
        };
        let pct = |p: &crate::config::common::Percent| crate::domain::to_f64(p.0);
        match kind {
            SignalKind::GoldenCross(p) | SignalKind::DeathCross(p) => State::Cross {
                fast: ma(p.ma, p.fast),
                slow: ma(p.ma, p.slow),
                prev: f64::NAN,
                golden: matches!(kind, SignalKind::GoldenCross(_)),
            },
            SignalKind::RsiOversold(p) => State::Rsi {
                rsi: Indicator::new(&IndicatorSpec::Rsi(p.period as usize)),
                level: pct(&p.below),
                below: true,
            },
            SignalKind::RsiOverbought(p) => State::Rsi {
                rsi: Indicator::new(&IndicatorSpec::Rsi(p.period as usize)),
                level: pct(&p.above),
                below: false,
            },
            SignalKind::MacdCross(p) => State::Macd {
                macd: Indicator::new(&IndicatorSpec::Macd(
                    p.fast as usize,
                    p.slow as usize,
                    p.signal as usize,
                )),
                prev_hist: f64::NAN,
            },
            SignalKind::VolumeSpike(p) => State::Volume {
                average: Indicator::new(&IndicatorSpec::VolumeSma(p.period as usize)),
                prev_average: f64::NAN,
                multiplier: p.multiplier,
            },
        }
    }

    /// Bars (of the generator's timeframe) a fresh state needs before it can fire.
    fn warm_up(kind: &SignalKind) -> usize {
        let n = match kind {
            SignalKind::GoldenCross(p) | SignalKind::DeathCross(p) => p.slow.max(p.fast) as usize,
            SignalKind::RsiOversold(p) => p.period as usize,
            SignalKind::RsiOverbought(p) => p.period as usize,
            SignalKind::MacdCross(p) => (p.slow + p.signal) as usize,
            SignalKind::VolumeSpike(p) => p.period as usize,
        };
        n + 2
    }

    /// Feeds the next closed bar; answers the direction and confidence when it fires.
    fn update(&mut self, bar: &Bar) -> Option<(Direction, f64)> {
        let mut out = [f64::NAN; 3];
        match self {
            State::Cross {
                fast,
                slow,
                prev,
                golden,
            } => {
                fast.update(bar, false, &mut out);
                let f = out[0];
                slow.update(bar, false, &mut out);
                let s = out[0];
                let diff = f - s;
                let before = std::mem::replace(prev, diff);
                if !(before.is_finite() && diff.is_finite() && s > 0.0) {
                    return None;
                }
                let above_pct = (bar.close - s) / s * 100.0;
                if *golden && before <= 0.0 && diff > 0.0 {
                    Some((Direction::Long, clamp(50.0 + 10.0 * above_pct)))
                } else if !*golden && before >= 0.0 && diff < 0.0 {
                    Some((Direction::Short, clamp(50.0 - 10.0 * above_pct)))
                } else {
                    None
                }
            }
            State::Rsi { rsi, level, below } => {
                rsi.update(bar, false, &mut out);
                let r = out[0];
                if !r.is_finite() {
                    return None;
                }
                if *below && r < *level {
                    Some((Direction::Long, clamp(50.0 + 5.0 * (*level - r))))
                } else if !*below && r > *level {
                    Some((Direction::Short, clamp(50.0 + 5.0 * (r - *level))))
                } else {
                    None
                }
            }
            State::Macd { macd, prev_hist } => {
                macd.update(bar, false, &mut out);
                let hist = out[2];
                let before = std::mem::replace(prev_hist, hist);
                if !(before.is_finite() && hist.is_finite() && bar.close > 0.0) {
                    return None;
                }
                let confidence = clamp(50.0 + 50.0 * (hist - before).abs() / (0.005 * bar.close));
                if before <= 0.0 && hist > 0.0 {
                    Some((Direction::Long, confidence))
                } else if before >= 0.0 && hist < 0.0 {
                    Some((Direction::Short, confidence))
                } else {
                    None
                }
            }
            State::Volume {
                average,
                prev_average,
                multiplier,
            } => {
                average.update(bar, false, &mut out);
                let avg = std::mem::replace(prev_average, out[0]);
                if !(avg.is_finite() && avg > 0.0) {
                    return None;
                }
                let ratio = bar.volume / avg;
                if ratio > *multiplier {
                    let direction = if bar.close >= bar.open {
                        Direction::Long
                    } else {
                        Direction::Short
                    };
                    Some((direction, (50.0 * ratio / *multiplier).clamp(50.0, 100.0)))
                } else {
                    None
                }
            }
        }
    }
}

fn clamp(c: f64) -> f64 {
    if c.is_nan() { 0.0 } else { c.clamp(0.0, 100.0) }
}

/// One generator of one scanner on one ticker.
#[derive(Clone, Debug)]
struct Watcher {
    scanner: Arc<str>,
    type_name: &'static str,
    kind: SignalKind,
    timeframe: Timeframe,
    /// Aggregates the data's finer bars (made at the first finer bar).
    resampler: Option<Resampler>,
    state: State,
    /// Said once: the data is coarser than the generator's timeframe.
    unusable: bool,
}

impl Watcher {
    /// Takes one data bar closing at `end`; answers the generator's bar that closed with
    /// it, if any, and its period end.
    fn bars_of(
        &mut self,
        ticker: &str,
        bar: &Bar,
        data_tf: Timeframe,
        end: i64,
        tz: Tz,
        out: &mut Vec<(Bar, i64)>,
    ) {
        if data_tf == self.timeframe {
            out.push((*bar, end));
            return;
        }
        if self.resampler.is_none() {
            match Resampler::new(data_tf, self.timeframe, tz) {
                Ok(r) => self.resampler = Some(r),
                Err(e) => {
                    if !self.unusable {
                        self.unusable = true;
                        tracing::warn!(scanner = %self.scanner, generator = self.type_name, %ticker, data = %data_tf, timeframe = %self.timeframe, "signal generator cannot run on this data: {e}");
                    }
                    return;
                }
            }
        }
        let Some(r) = self.resampler.as_mut() else {
            return;
        };
        let closes = r.closes_at();
        if let Some(done) = r.push(bar)
            && let Some(c) = closes
        {
            out.push((done, c));
        }
        if let Some(c) = r.closes_at()
            && c <= end
            && let Some(done) = r.flush()
        {
            out.push((done, c));
        }
    }
}

/// The generators of a set of scanners, by ticker: feed it every bar batch with
/// [`GeneratorSet::on_batch`].
#[derive(Clone, Debug, Default)]
pub struct GeneratorSet {
    tz: Option<Tz>,
    by_ticker: HashMap<Arc<str>, Vec<Watcher>>,
    scratch: Vec<(Bar, i64)>,
}

impl GeneratorSet {
    /// The generators the `scanners` (name, scanner) declare, each on every ticker the
    /// scanner can select (`tickers`, or its whole `universe`), periods aligned in `tz`.
    pub fn new<'a>(scanners: impl IntoIterator<Item = (&'a str, &'a Scanner)>, tz: Tz) -> Self {
        let mut by_ticker: HashMap<Arc<str>, Vec<Watcher>> = HashMap::new();
        for (name, scanner) in scanners {
            let name: Arc<str> = Arc::from(name);
            for g in &scanner.signals {
                for ticker in scanner.candidates() {
                    by_ticker
                        .entry(Arc::from(ticker.as_str()))
                        .or_default()
                        .push(Watcher {
                            scanner: Arc::clone(&name),
                            type_name: g.kind.type_name(),
                            kind: g.kind.clone(),
                            timeframe: g.timeframe,
                            resampler: None,
                            state: State::new(&g.kind),
                            unusable: false,
                        });
                }
            }
        }
        GeneratorSet {
            tz: Some(tz),
            by_ticker,
            scratch: Vec::new(),
        }
    }

    /// Whether no scanner declares a generator.
    pub fn is_empty(&self) -> bool {
        self.by_ticker.is_empty()
    }

    /// Number of (generator, ticker) pairs watched.
    pub fn len(&self) -> usize {
        self.by_ticker.values().map(Vec::len).sum()
    }

    /// The tickers watched, sorted.
    pub fn tickers(&self) -> Vec<String> {
        let mut t: Vec<String> = self.by_ticker.keys().map(|s| s.to_string()).collect();
        t.sort();
        t
    }

    /// Warms every generator up on the bars of `history` that closed at or before `until`
    /// (enough for its longest indicator), emitting nothing: the first bar after `until`
    /// can fire.
    pub fn warm_up(&mut self, history: &dyn History, until: i64) {
        let tz = self.tz.unwrap_or(chrono_tz::UTC);
        for (ticker, watchers) in &mut self.by_ticker {
            let Some(data_tf) = history.timeframe(ticker) else {
                continue;
            };
            for w in watchers.iter_mut() {
                let per = (w.timeframe.nominal_seconds() / data_tf.nominal_seconds().max(1))
                    .clamp(1, 10_000) as usize;
                let n = (State::warm_up(&w.kind) * per).min(200_000);
                let mut bars = Vec::new();
                for (bar, end) in history.recent_bars(ticker, until, n) {
                    w.bars_of(ticker, &bar, data_tf, end, tz, &mut bars);
                    for (b, _) in bars.drain(..) {
                        let _ = w.state.update(&b);
                    }
                }
            }
        }
    }

    /// Evaluates the generators on the bars of `batch` (closed at `batch.end`) and appends
    /// the signals they fire to `out`, in ticker order of the batch.
    pub fn on_batch(&mut self, batch: &BarBatch, out: &mut Vec<Signal>) {
        let tz = self.tz.unwrap_or(chrono_tz::UTC);
        let mut bars = std::mem::take(&mut self.scratch);
        for e in &batch.bars {
            let Some(watchers) = self.by_ticker.get_mut(&*e.symbol) else {
                continue;
            };
            for w in watchers.iter_mut() {
                bars.clear();
                w.bars_of(&e.symbol, &e.bar, e.timeframe, batch.end, tz, &mut bars);
                for (b, end) in bars.drain(..) {
                    if let Some((direction, confidence)) = w.state.update(&b) {
                        out.push(Signal {
                            id: format!(
                                "{}:{}:{}:{}:{end}",
                                w.scanner, w.type_name, e.symbol, w.timeframe
                            ),
                            signal_type: w.type_name.to_string(),
                            ticker: e.symbol.to_string(),
                            direction,
                            confidence: (confidence * 100.0).round() / 100.0,
                            timestamp: end,
                            source: format!("scanner:{}", w.scanner),
                        });
                    }
                }
            }
        }
        self.scratch = bars;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(close: f64, volume: f64) -> Bar {
        Bar {
            ts: 0,
            open: close,
            high: close,
            low: close,
            close,
            volume,
        }
    }

    fn kind(yaml: &str) -> SignalKind {
        let g: crate::config::scanner::SignalGenerator = serde_json::from_str(yaml).unwrap();
        g.kind
    }

    #[test]
    fn golden_cross_fires_once_at_the_cross_with_its_confidence() {
        let mut s = State::new(&kind(
            r#"{"type":"golden_cross","params":{"fast":2,"slow":4}}"#,
        ));
        let closes = [10.0, 10.0, 10.0, 10.0, 9.0, 9.0, 12.0, 13.0, 14.0];
        let fired: Vec<(usize, Direction, f64)> = closes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| s.update(&bar(*c, 1.0)).map(|(d, x)| (i, d, x)))
            .collect();
        // sma2 at bar 6 = 10.5, sma4 = 10.0: crosses; close 12 is 20 % above → 100.
        assert_eq!(fired, vec![(6, Direction::Long, 100.0)]);
    }

    #[test]
    fn rsi_oversold_fires_each_bar_below_with_depth() {
        let mut s = State::new(&kind(
            r#"{"type":"rsi_oversold","params":{"period":2,"below":30}}"#,
        ));
        let mut out = Vec::new();
        for c in [10.0, 11.0, 12.0, 11.0, 10.0, 9.0, 12.0] {
            out.push(s.update(&bar(c, 1.0)));
        }
        // Wilder RSI(2): 50 at 11, 25 at 10 (→ 50 + 5 × 5), 12.5 at 9 (→ 112.5, clamped),
        // 78 at 12.
        assert_eq!(out[3], None);
        assert_eq!(out[4], Some((Direction::Long, 75.0)));
        assert_eq!(out[5], Some((Direction::Long, 100.0)));
        assert_eq!(out[6], None);
    }

    #[test]
    fn volume_spike_compares_with_the_bars_before() {
        let mut s = State::new(&kind(
            r#"{"type":"volume_spike","params":{"period":3,"multiplier":2}}"#,
        ));
        for _ in 0..3 {
            assert_eq!(s.update(&bar(10.0, 100.0)), None);
        }
        // 300 against an average of 100: ratio 3, threshold 2 → 75.
        assert_eq!(s.update(&bar(10.0, 300.0)), Some((Direction::Long, 75.0)));
        assert_eq!(s.update(&bar(10.0, 150.0)), None);
    }
}
