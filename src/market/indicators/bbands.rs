//! Bollinger bands (TA-Lib `BBANDS` with a simple moving average, `ta_BBANDS.c`).

use super::window::Window;

/// Bollinger bands over `N` closes at `K` standard deviations.
///
/// `middle = SMA_N(close)`, `σ` = population standard deviation of the same `N` closes
/// (divisor `N`), `upper = middle + K·σ`, `lower = middle − K·σ` (Bollinger, "Bollinger on
/// Bollinger Bands", 2001; TA-Lib `BBANDS` with `MAType = SMA` and `nbDevUp = nbDevDn = K`).
/// As in TA-Lib, a variance below 1e-14 counts as 0. First value at index `N − 1`.
#[derive(Clone, Debug)]
pub(crate) struct Bbands {
    window: Window,
    k: f64,
}

impl Bbands {
    pub(crate) fn new(period: usize, k: f64) -> Bbands {
        Bbands {
            window: Window::new(period),
            k,
        }
    }

    /// Feeds the next close; returns `[upper, middle, lower]`, NaN inside the lookback.
    pub(crate) fn update(&mut self, close: f64) -> [f64; 3] {
        if !self.window.push(close) {
            return [f64::NAN; 3];
        }
        let middle = self.window.mean();
        let variance = self.window.variance();
        let sd = if variance < 1e-14 {
            0.0
        } else {
            variance.sqrt()
        };
        let width = self.k * sd;
        [middle + width, middle, middle - width]
    }

    pub(crate) fn reset(&mut self) {
        self.window.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn population_standard_deviation() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, population σ 2 → bands 5 ± 2·2.
        let mut b = Bbands::new(8, 2.0);
        let closes = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        for &c in &closes[..7] {
            assert!(b.update(c).iter().all(|v| v.is_nan()));
        }
        let [upper, middle, lower] = b.update(closes[7]);
        assert!((upper - 9.0).abs() < 1e-12);
        assert!((middle - 5.0).abs() < 1e-12);
        assert!((lower - 1.0).abs() < 1e-12);
        b.reset();
        assert!(b.update(1.0)[1].is_nan());
    }

    #[test]
    fn flat_window_has_zero_width() {
        let mut b = Bbands::new(3, 2.5);
        b.update(7.25);
        b.update(7.25);
        assert_eq!(b.update(7.25), [7.25, 7.25, 7.25]);
    }
}
