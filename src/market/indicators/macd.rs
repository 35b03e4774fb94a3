//! Moving average convergence/divergence (TA-Lib `MACD`, `ta_MACD.c`, default compatibility).

use super::average::Ema;

/// MACD line, signal line and histogram.
///
/// `macd = EMA_fast(close) − EMA_slow(close)`, `signal = EMA_signal(macd)`,
/// `hist = macd − signal`. As in TA-Lib, the fast EMA is seeded on the same bar as the slow
/// one (index `slow − 1`) with the mean of the `fast` closes ending there, the signal EMA is
/// seeded with the mean of the first `signal` MACD values, and all three outputs start at
/// index `slow − 1 + signal − 1` (33 for 12/26/9). A fast period above the slow one is
/// swapped, as TA-Lib does.
#[derive(Clone, Debug)]
pub(crate) struct Macd {
    fast: Ema,
    slow: Ema,
    signal: Ema,
}

impl Macd {
    pub(crate) fn new(fast: usize, slow: usize, signal: usize) -> Macd {
        let (fast, slow) = if slow < fast {
            (slow, fast)
        } else {
            (fast, slow)
        };
        Macd {
            fast: Ema::delayed(fast, slow - fast),
            slow: Ema::new(slow),
            signal: Ema::new(signal),
        }
    }

    /// Feeds the next close; returns `[macd, signal, hist]`, NaN inside the lookback.
    pub(crate) fn update(&mut self, close: f64) -> [f64; 3] {
        let fast = self.fast.update(close);
        let slow = self.slow.update(close);
        if slow.is_nan() {
            return [f64::NAN; 3];
        }
        let macd = fast - slow;
        let signal = self.signal.update(macd);
        if signal.is_nan() {
            return [f64::NAN; 3];
        }
        [macd, signal, macd - signal]
    }

    pub(crate) fn reset(&mut self) {
        self.fast.reset();
        self.slow.reset();
        self.signal.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_seeded_on_the_slow_seeding_bar() {
        // fast 2 (k = 2/3), slow 3 (k = 1/2), signal 2 (k = 2/3). Closes 5, 2, 3, 4, 6.
        // Index 2: slow = (5+2+3)/3 = 10/3, fast = (2+3)/2 = 2.5 (close 5 ignored),
        //          macd = −5/6 (seeding the fast EMA at index 1 would give −1/6).
        // Index 3: slow = (4 − 10/3)/2 + 10/3 = 11/3, fast = (4 − 2.5)·2/3 + 2.5 = 3.5,
        //          macd = −1/6, signal = (−5/6 − 1/6)/2 = −1/2, hist = 1/3.
        // Index 4: slow = (6 − 11/3)/2 + 11/3 = 29/6, fast = (6 − 3.5)·2/3 + 3.5 = 31/6,
        //          macd = 1/3, signal = (1/3 + 1/2)·2/3 − 1/2 = 1/18, hist = 5/18.
        let mut m = Macd::new(2, 3, 2);
        for x in [5.0, 2.0, 3.0] {
            assert!(m.update(x).iter().all(|v| v.is_nan()));
        }
        let [macd, signal, hist] = m.update(4.0);
        assert!((macd + 1.0 / 6.0).abs() < 1e-14, "{macd}");
        assert!((signal + 0.5).abs() < 1e-14, "{signal}");
        assert!((hist - 1.0 / 3.0).abs() < 1e-14, "{hist}");
        let [macd, signal, hist] = m.update(6.0);
        assert!((macd - 1.0 / 3.0).abs() < 1e-14, "{macd}");
        assert!((signal - 1.0 / 18.0).abs() < 1e-14, "{signal}");
        assert!((hist - 5.0 / 18.0).abs() < 1e-14, "{hist}");
        m.reset();
        assert!(m.update(1.0)[0].is_nan());
    }

    #[test]
    fn swapped_periods_behave_like_talib() {
        let closes: Vec<f64> = (0..60)
            .map(|i| 100.0 + (i as f64 * 0.7).sin() * 5.0)
            .collect();
        let mut a = Macd::new(12, 26, 9);
        let mut b = Macd::new(26, 12, 9);
        for &c in &closes {
            let (x, y) = (a.update(c), b.update(c));
            assert_eq!(x.map(f64::to_bits), y.map(f64::to_bits));
        }
    }
}
