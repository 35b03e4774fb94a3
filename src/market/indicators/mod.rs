//! Technical indicators as streaming state machines that agree with TA-Lib.
//!
//! An [`Indicator`] is built from its [`IndicatorSpec`] and fed closed bars one at a time with
//! [`Indicator::update`], which costs O(1) amortised and allocates nothing; [`compute`] runs
//! one over a slice of bars. Values inside the lookback ([`IndicatorSpec::lookback`]) are
//! `f64::NAN`, where TA-Lib leaves its output empty.
//!
//! Conventions (TA-Lib 0.6 C sources, default compatibility, unstable period 0): EMA seeded
//! with the simple mean of its first `N` inputs, `k = 2 / (N + 1)`; RSI and ATR smoothed the
//! Wilder way, seeded with simple means (the ATR's first value at index `N` is the mean of the
//! true ranges of bars `1..=N`); MACD's fast EMA seeded on the slow EMA's first bar and its
//! signal seeded with the mean of the first `signal` MACD values; Bollinger bands around the
//! SMA at population standard deviations. `tests/talib_parity.rs` checks SMA, EMA, RSI, MACD,
//! BBANDS and ATR against TA-Lib's own output on 2148 daily GOOG bars to 1e-9 absolute.
//!
//! Numerics: windowed sums (SMA, Bollinger, volume SMA) use a ring buffer whose sums are
//! recomputed exactly every `N` bars, so rounding never accumulates over long streams and the
//! variance avoids the cancellation of `Σx²/N − mean²`; the recursive averages carry no
//! running sums. A NaN input poisons the recursive averages until [`Indicator::reset`]; bars
//! must be finite.
//!
//! Why not a crate: `kand` 0.2 (the maintained pure-Rust TA-Lib port) was checked on the GOOG
//! reference. Its SMA, EMA, RSI, ATR and BBANDS agree to 3e-10, but its MACD seeds the fast
//! EMA at bar `fast − 1` instead of bar `slow − 1` (signal line off by up to 0.59), and its
//! incremental `*_inc` functions are stateless one-step formulas that leave the windows, the
//! warm-up and the seeding to the caller (and reject period 1). Those are exactly the parts
//! this module is about, so the state machines are written here from TA-Lib's definitions.

mod atr;
mod average;
mod bbands;
mod macd;
mod rsi;
pub mod spec;
mod supertrend;
mod vwap;
mod window;

pub use spec::IndicatorSpec;

use crate::market::Bar;

/// Per-family state.
#[derive(Clone, Debug)]
enum State {
    Sma(average::Sma),
    Ema(average::Ema),
    Rsi(rsi::Rsi),
    Atr(atr::Atr),
    Macd(macd::Macd),
    Bbands(bbands::Bbands),
    Supertrend(supertrend::Supertrend),
    VolumeSma(average::Sma),
    Vwap(vwap::Vwap),
}

impl State {
    fn new(spec: &IndicatorSpec) -> State {
        match *spec {
            IndicatorSpec::Sma(n) => State::Sma(average::Sma::new(n)),
            IndicatorSpec::Ema(n) => State::Ema(average::Ema::new(n)),
            IndicatorSpec::Rsi(n) => State::Rsi(rsi::Rsi::new(n)),
            IndicatorSpec::Atr(n) => State::Atr(atr::Atr::new(n)),
            IndicatorSpec::Macd(f, s, g) => State::Macd(macd::Macd::new(f, s, g)),
            IndicatorSpec::Bbands(n, k) => State::Bbands(bbands::Bbands::new(n, k)),
            IndicatorSpec::Supertrend(n, k) => State::Supertrend(supertrend::Supertrend::new(n, k)),
            IndicatorSpec::VolumeSma(n) => State::VolumeSma(average::Sma::new(n)),
            IndicatorSpec::Vwap => State::Vwap(vwap::Vwap::new()),
        }
    }
}

/// Streaming state of one indicator: feed it each closed bar in order with
/// [`Indicator::update`]; it writes the indicator's values for that bar.
///
/// Outputs, in the order of [`IndicatorSpec::outputs`]:
///
/// | spec | outputs (units) | first defined at index |
/// | --- | --- | --- |
/// | `sma_N` | SMA of the close (price) | `N − 1` |
/// | `ema_N` | EMA of the close (price) | `N − 1` |
/// | `rsi_N` | RSI (0–100) | `N` |
/// | `atr_N` | ATR (price) | `N` |
/// | `macd_F_S_G` | macd, signal, hist (price) | `S − 1 + G − 1` |
/// | `bbands_N_K` | upper, middle, lower (price) | `N − 1` |
/// | `supertrend_N_K` | line (price), direction (+1 up, −1 down) | `N` |
/// | `volume_sma_N` | SMA of the volume (shares) | `N − 1` |
/// | `vwap` | session VWAP of the typical price (price) | 0 (NaN while the session's volume is 0) |
///
/// The formulas and their sources are documented on each family's state type in this module's
/// source files (`average.rs`, `rsi.rs`, `atr.rs`, `macd.rs`, `bbands.rs`, `supertrend.rs`,
/// `vwap.rs`).
#[derive(Clone, Debug)]
pub struct Indicator {
    spec: IndicatorSpec,
    width: usize,
    state: State,
}

impl Indicator {
    /// A fresh state for `spec` (allocates the ring buffer of windowed families once).
    pub fn new(spec: &IndicatorSpec) -> Indicator {
        Indicator {
            spec: spec.clone(),
            width: width_of(spec),
            state: State::new(spec),
        }
    }

    /// The indicator this state computes.
    pub fn spec(&self) -> &IndicatorSpec {
        &self.spec
    }

    /// Number of output values per bar (`spec().outputs().len()`: 3 for MACD and Bollinger
    /// bands, 2 for Supertrend, 1 otherwise).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Feeds the next closed bar and writes [`Indicator::width`] values into `out[..width]`,
    /// `f64::NAN` inside the lookback (TA-Lib's empty values). `new_session` is true on the
    /// first bar of a trading session (local day); only VWAP uses it. O(1) amortised, no
    /// allocation.
    ///
    /// # Panics
    /// If `out` is shorter than [`Indicator::width`].
    pub fn update(&mut self, bar: &Bar, new_session: bool, out: &mut [f64]) {
        match &mut self.state {
            State::Sma(s) => out[0] = s.update(bar.close),
            State::Ema(s) => out[0] = s.update(bar.close),
            State::Rsi(s) => out[0] = s.update(bar.close),
            State::Atr(s) => out[0] = s.update(bar.high, bar.low, bar.close),
            State::Macd(s) => out[..3].copy_from_slice(&s.update(bar.close)),
            State::Bbands(s) => out[..3].copy_from_slice(&s.update(bar.close)),
            State::Supertrend(s) => {
                out[..2].copy_from_slice(&s.update(bar.high, bar.low, bar.close));
            }
            State::VolumeSma(s) => out[0] = s.update(bar.volume),
            State::Vwap(s) => {
                out[0] = s.update(bar.high, bar.low, bar.close, bar.volume, new_session);
            }
        }
    }

    /// Clears the state: the next bar is treated as the first one, as after [`Indicator::new`].
    pub fn reset(&mut self) {
        match &mut self.state {
            State::Sma(s) | State::VolumeSma(s) => s.reset(),
            State::Ema(s) => s.reset(),
            State::Rsi(s) => s.reset(),
            State::Atr(s) => s.reset(),
            State::Macd(s) => s.reset(),
            State::Bbands(s) => s.reset(),
            State::Supertrend(s) => s.reset(),
            State::Vwap(s) => s.reset(),
        }
    }
}

fn width_of(spec: &IndicatorSpec) -> usize {
    match spec {
        IndicatorSpec::Macd(..) | IndicatorSpec::Bbands(..) => 3,
        IndicatorSpec::Supertrend(..) => 2,
        _ => 1,
    }
}

/// Runs `spec` over `bars` (in time order): one `Vec` per output (in the order of
/// [`IndicatorSpec::outputs`]), each as long as `bars`, NaN inside the lookback.
///
/// Sessions for VWAP are UTC days: a session starts on the first bar and on each bar whose
/// UTC date (`ts` in Unix seconds) differs from the previous bar's, which is the local day for
/// US and European regular trading hours. Use [`compute_with_sessions`] for other calendars.
pub fn compute(spec: &IndicatorSpec, bars: &[Bar]) -> Vec<Vec<f64>> {
    compute_with_sessions(spec, bars, |prev, bar| {
        prev.is_none_or(|p| p.ts.div_euclid(86_400) != bar.ts.div_euclid(86_400))
    })
}

/// Like [`compute`], with the session boundaries given by `new_session(previous bar, bar)`
/// (the previous bar is `None` for the first one).
pub fn compute_with_sessions(
    spec: &IndicatorSpec,
    bars: &[Bar],
    mut new_session: impl FnMut(Option<&Bar>, &Bar) -> bool,
) -> Vec<Vec<f64>> {
    let mut indicator = Indicator::new(spec);
    let width = indicator.width();
    let mut columns = vec![Vec::with_capacity(bars.len()); width];
    let mut out = [f64::NAN; 3];
    let mut prev = None;
    for bar in bars {
        let session = new_session(prev, bar);
        indicator.update(bar, session, &mut out);
        for (column, value) in columns.iter_mut().zip(out) {
            column.push(value);
        }
        prev = Some(bar);
    }
    columns
}

#[cfg(test)]
mod tests;
