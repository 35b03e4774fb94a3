//! Relative strength index (TA-Lib `RSI`, `ta_RSI.c`, default compatibility).

/// Wilder's RSI over `N` price changes, 0–100.
///
/// The first value, at index `N`, uses the simple means of the gains and of the losses of the
/// first `N` changes (`close[i] − close[i−1]`, `i = 1..=N`); afterwards both means are smoothed
/// the Wilder way, `avg = (avg · (N − 1) + change) / N`. `RSI = 100 · avg_gain / (avg_gain +
/// avg_loss)`, and 0 when both means are below 1e-14 (TA-Lib's `TA_IS_ZERO`), i.e. when the
/// price has not moved over the period.
#[derive(Clone, Debug)]
pub(crate) struct Rsi {
    period: usize,
    /// Closes seen so far, counted up to the seeding bar only.
    seen: usize,
    prev_close: f64,
    avg_gain: f64,
    avg_loss: f64,
}

impl Rsi {
    pub(crate) fn new(period: usize) -> Rsi {
        Rsi {
            period: period.max(1),
            seen: 0,
            prev_close: f64::NAN,
            avg_gain: 0.0,
            avg_loss: 0.0,
        }
    }

    /// Feeds the next close; returns the RSI, NaN inside the lookback (`N` bars).
    pub(crate) fn update(&mut self, close: f64) -> f64 {
        let change = close - self.prev_close;
        self.prev_close = close;
        let n = self.period as f64;
        if self.seen == 0 {
            self.seen = 1;
            return f64::NAN;
        }
        if self.seen < self.period {
            self.seen += 1;
            self.add(change);
            return f64::NAN;
        }
        if self.seen == self.period {
            self.seen += 1;
            self.add(change);
            self.avg_gain /= n;
            self.avg_loss /= n;
        } else {
            self.avg_gain *= n - 1.0;
            self.avg_loss *= n - 1.0;
            self.add(change);
            self.avg_gain /= n;
            self.avg_loss /= n;
        }
        let total = self.avg_gain + self.avg_loss;
        if total.abs() < 1e-14 {
            0.0
        } else {
            100.0 * (self.avg_gain / total)
        }
    }

    fn add(&mut self, change: f64) {
        if change < 0.0 {
            self.avg_loss -= change;
        } else {
            self.avg_gain += change;
        }
    }

    pub(crate) fn reset(&mut self) {
        *self = Rsi::new(self.period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_by_simple_means_then_wilder() {
        // N = 2. Changes: +2, −1 → seed gain 1, loss 0.5 → RSI 100·1/1.5.
        // Next change +3: gain (1·1 + 3)/2 = 2, loss (0.5·1 + 0)/2 = 0.25 → 100·2/2.25.
        let mut r = Rsi::new(2);
        assert!(r.update(10.0).is_nan());
        assert!(r.update(12.0).is_nan());
        assert!((r.update(11.0) - 100.0 / 1.5).abs() < 1e-12);
        assert!((r.update(14.0) - 100.0 * 2.0 / 2.25).abs() < 1e-12);
        r.reset();
        assert!(r.update(1.0).is_nan());
    }

    #[test]
    fn flat_prices_give_zero_like_talib() {
        let mut r = Rsi::new(3);
        let out: Vec<f64> = [5.0; 6].map(|x| r.update(x)).to_vec();
        assert!(out[..3].iter().all(|v| v.is_nan()));
        assert_eq!(&out[3..], &[0.0, 0.0, 0.0]);
    }
}
