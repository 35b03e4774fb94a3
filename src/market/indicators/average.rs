//! Simple and exponential moving averages (TA-Lib `SMA`, `EMA`), also used inside MACD,
//! Bollinger bands and the volume average.

use super::window::Window;

/// Simple moving average over `N` values: the arithmetic mean of the last `N` inputs, first
/// defined at index `N − 1` (TA-Lib `SMA`, `ta_SMA.c`).
#[derive(Clone, Debug)]
pub(crate) struct Sma {
    window: Window,
}

impl Sma {
    pub(crate) fn new(period: usize) -> Sma {
        Sma {
            window: Window::new(period),
        }
    }

    /// Feeds the next value; returns the average, NaN inside the lookback.
    pub(crate) fn update(&mut self, x: f64) -> f64 {
        if self.window.push(x) {
            self.window.mean()
        } else {
            f64::NAN
        }
    }

    pub(crate) fn reset(&mut self) {
        self.window.reset();
    }
}

/// Exponential moving average with smoothing `k = 2 / (N + 1)`, seeded with the simple mean
/// of its first `N` inputs and then `ema = (x − ema) · k + ema`, the operation order of
/// TA-Lib's `TA_INT_EMA` (`ta_EMA.c`, default compatibility). The first value is at input
/// index `delay + N − 1`: the first `delay` inputs are ignored, which is how MACD seeds its
/// fast average on the same bar as the slow one.
#[derive(Clone, Debug)]
pub(crate) struct Ema {
    period: usize,
    k: f64,
    delay: usize,
    /// Inputs seen so far, counted up to the seeding bar only.
    seen: usize,
    seed_sum: f64,
    value: f64,
}

impl Ema {
    pub(crate) fn new(period: usize) -> Ema {
        Ema::delayed(period, 0)
    }

    /// An EMA that ignores its first `delay` inputs.
    pub(crate) fn delayed(period: usize, delay: usize) -> Ema {
        let period = period.max(1);
        Ema {
            period,
            k: 2.0 / (period as f64 + 1.0),
            delay,
            seen: 0,
            seed_sum: 0.0,
            value: f64::NAN,
        }
    }

    /// Feeds the next value; returns the average, NaN inside the lookback.
    pub(crate) fn update(&mut self, x: f64) -> f64 {
        let seed_at = self.delay + self.period - 1;
        if self.seen < seed_at {
            if self.seen >= self.delay {
                self.seed_sum += x;
            }
            self.seen += 1;
            f64::NAN
        } else if self.seen == seed_at {
            self.seen += 1;
            self.seed_sum += x;
            self.value = self.seed_sum / self.period as f64;
            self.value
        } else {
            self.value = (x - self.value) * self.k + self.value;
            self.value
        }
    }

    pub(crate) fn reset(&mut self) {
        self.seen = 0;
        self.seed_sum = 0.0;
        self.value = f64::NAN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sma_of_three() {
        let mut s = Sma::new(3);
        let out: Vec<f64> = [1.0, 2.0, 3.0, 4.0, 8.0].map(|x| s.update(x)).to_vec();
        assert!(out[0].is_nan() && out[1].is_nan());
        assert_eq!(&out[2..], &[2.0, 3.0, 5.0]);
    }

    #[test]
    fn ema_seeded_by_the_sma_then_smoothed() {
        // N = 3, k = 0.5: seed (1 + 2 + 3) / 3 = 2, then (5 − 2)·0.5 + 2 = 3.5,
        // then (1.5 − 3.5)·0.5 + 3.5 = 2.5.
        let mut e = Ema::new(3);
        let out: Vec<f64> = [1.0, 2.0, 3.0, 5.0, 1.5].map(|x| e.update(x)).to_vec();
        assert!(out[0].is_nan() && out[1].is_nan());
        assert_eq!(&out[2..], &[2.0, 3.5, 2.5]);
    }

    #[test]
    fn delayed_ema_ignores_its_first_inputs() {
        // delay 2, N = 2 (k = 2/3): seed (3 + 5) / 2 = 4 at index 3, then (7 − 4)·2/3 + 4 = 6.
        let mut e = Ema::delayed(2, 2);
        let out: Vec<f64> = [100.0, -100.0, 3.0, 5.0, 7.0].map(|x| e.update(x)).to_vec();
        assert!(out[..3].iter().all(|v| v.is_nan()));
        assert_eq!(out[3], 4.0);
        assert!((out[4] - 6.0).abs() < 1e-15);
        e.reset();
        assert!(e.update(1.0).is_nan());
    }

    #[test]
    fn period_one_is_the_input() {
        let mut s = Sma::new(1);
        let mut e = Ema::new(1);
        for x in [3.0, 1.0, 4.0] {
            assert_eq!(s.update(x), x);
            assert_eq!(e.update(x), x);
        }
    }
}
