//! Supertrend (Olivier Seban), on TA-Lib's ATR.

use super::atr::Atr;

/// Supertrend line and direction over an `N`-bar ATR at multiplier `K`.
///
/// The formula is TradingView's built-in `ta.supertrend(factor, atrPeriod)` (Pine Script v5
/// reference manual, "ta.supertrend", and its published Pine equivalent), with Wilder's ATR
/// computed as TA-Lib's `ATR`:
///
/// ```text
/// hl2         = (high + low) / 2
/// basic_upper = hl2 + K · ATR_N          basic_lower = hl2 − K · ATR_N
/// upper = basic_upper  if basic_upper < prev_upper or prev_close > prev_upper, else prev_upper
/// lower = basic_lower  if basic_lower > prev_lower or prev_close < prev_lower, else prev_lower
/// direction: on the first bar with an ATR, −1 (down);
///            after a down bar, +1 if close > upper else −1;
///            after an up bar,  −1 if close < lower else +1
/// supertrend = lower when direction = +1, upper when direction = −1
/// ```
///
/// The final bands only tighten (the upper one falls, the lower one rises) until the close
/// crosses them; on the first bar they are the basic bands. Direction `+1` is an uptrend (the
/// line is a trailing stop below the price); TradingView reports the opposite sign (−1 for
/// up). Outputs `[line, direction]`, first defined at index `N` (TA-Lib's ATR lookback;
/// TradingView's `ta.atr` starts one bar earlier by taking `high − low` as the first true
/// range, so its first values differ until the smoothing forgets the seed).
#[derive(Clone, Debug)]
pub(crate) struct Supertrend {
    atr: Atr,
    k: f64,
    prev_close: f64,
    upper: f64,
    lower: f64,
    /// +1 up, −1 down, 0 before the first value.
    direction: f64,
}

impl Supertrend {
    pub(crate) fn new(period: usize, k: f64) -> Supertrend {
        Supertrend {
            atr: Atr::new(period),
            k,
            prev_close: f64::NAN,
            upper: f64::NAN,
            lower: f64::NAN,
            direction: 0.0,
        }
    }

    /// Feeds the next bar; returns `[line, direction]`, NaN inside the lookback.
    pub(crate) fn update(&mut self, high: f64, low: f64, close: f64) -> [f64; 2] {
        let atr = self.atr.update(high, low, close);
        let prev_close = self.prev_close;
        self.prev_close = close;
        if atr.is_nan() {
            return [f64::NAN; 2];
        }
        let hl2 = (high + low) / 2.0;
        let basic_upper = hl2 + self.k * atr;
        let basic_lower = hl2 - self.k * atr;
        if self.direction == 0.0 {
            self.upper = basic_upper;
            self.lower = basic_lower;
            self.direction = -1.0;
        } else {
            if basic_upper < self.upper || prev_close > self.upper {
                self.upper = basic_upper;
            }
            if basic_lower > self.lower || prev_close < self.lower {
                self.lower = basic_lower;
            }
            self.direction = if self.direction < 0.0 {
                if close > self.upper { 1.0 } else { -1.0 }
            } else if close < self.lower {
                -1.0
            } else {
                1.0
            };
        }
        let line = if self.direction > 0.0 {
            self.lower
        } else {
            self.upper
        };
        [line, self.direction]
    }

    pub(crate) fn reset(&mut self) {
        self.atr.reset();
        self.prev_close = f64::NAN;
        self.upper = f64::NAN;
        self.lower = f64::NAN;
        self.direction = 0.0;
    }
}
