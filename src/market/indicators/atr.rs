//! True range and average true range (TA-Lib `TRANGE`, `ATR`, `ta_ATR.c`).

/// True range of a bar given the previous close: the greatest of `high − low`,
/// `|prev_close − high|` and `|prev_close − low|` (Wilder 1978; TA-Lib `TRANGE`).
pub(crate) fn true_range(high: f64, low: f64, prev_close: f64) -> f64 {
    let mut greatest = high - low;
    let up = (prev_close - high).abs();
    if up > greatest {
        greatest = up;
    }
    let down = (prev_close - low).abs();
    if down > greatest {
        greatest = down;
    }
    greatest
}

/// Wilder's average true range over `N` bars, in price units.
///
/// The first bar has no true range (no previous close). The first value, at index `N`, is the
/// simple mean of the true ranges of bars `1..=N`; afterwards
/// `atr = (atr · (N − 1) + TR) / N` (TA-Lib `ATR`, default compatibility).
#[derive(Clone, Debug)]
pub(crate) struct Atr {
    period: usize,
    /// Bars seen so far, counted up to the seeding bar only.
    seen: usize,
    prev_close: f64,
    value: f64,
}

impl Atr {
    pub(crate) fn new(period: usize) -> Atr {
        Atr {
            period: period.max(1),
            seen: 0,
            prev_close: f64::NAN,
            value: 0.0,
        }
    }

    /// Feeds the next bar; returns the ATR, NaN inside the lookback (`N` bars).
    pub(crate) fn update(&mut self, high: f64, low: f64, close: f64) -> f64 {
        let tr = true_range(high, low, self.prev_close);
        self.prev_close = close;
        let n = self.period as f64;
        if self.seen == 0 {
            self.seen = 1;
            return f64::NAN;
        }
        if self.seen < self.period {
            self.seen += 1;
            self.value += tr;
            return f64::NAN;
        }
        if self.seen == self.period {
            self.seen += 1;
            self.value = (self.value + tr) / n;
        } else {
            self.value = (self.value * (n - 1.0) + tr) / n;
        }
        self.value
    }

    pub(crate) fn reset(&mut self) {
        *self = Atr::new(self.period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_range_takes_gaps_into_account() {
        assert_eq!(true_range(12.0, 10.0, 11.0), 2.0);
        assert_eq!(true_range(12.0, 10.0, 15.0), 5.0); // gap down
        assert_eq!(true_range(12.0, 10.0, 7.0), 5.0); // gap up
    }

    #[test]
    fn first_value_is_the_mean_of_true_ranges_one_to_n() {
        // N = 2. TR[1] = max(2, |10−13|, |10−11|) = 3, TR[2] = max(1, 1, 0) = 1 → 2.
        // TR[3] = max(4, |12.5−16.5|, |12.5−12.5|) = 4 → (2·1 + 4)/2 = 3.
        let mut a = Atr::new(2);
        assert!(a.update(11.0, 9.0, 10.0).is_nan()); // range 2 ignored: no previous close
        assert!(a.update(13.0, 11.0, 12.0).is_nan());
        assert_eq!(a.update(13.0, 12.0, 12.5), 2.0);
        assert_eq!(a.update(16.5, 12.5, 16.0), 3.0);
        a.reset();
        assert!(a.update(1.0, 1.0, 1.0).is_nan());
    }
}
