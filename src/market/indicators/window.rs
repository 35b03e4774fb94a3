//! A sliding window of the last `N` values with its mean and population variance in O(1)
//! amortised time per value and without cumulative rounding drift.
//!
//! The window keeps the sums of the deviations `x − c` and `(x − c)²` from a shift `c` (the
//! "shifted data" algorithm, Chan, Golub & LeVeque, "Algorithms for computing the sample
//! variance", 1983), updated by adding the new value and removing the oldest. Every `N` values
//! both sums are recomputed exactly from the ring buffer with `c` set to the current mean, so
//! rounding errors never accumulate over more than `N` updates and the variance does not
//! suffer the cancellation of the naive `Σx²/N − mean²`; the recomputation costs O(N) once
//! every N values, O(1) amortised.

/// Sliding window over the last `period` values (see the module documentation).
#[derive(Clone, Debug)]
pub(crate) struct Window {
    /// Ring buffer of the last `period` values (allocated once).
    buf: Box<[f64]>,
    /// Slot of the next value.
    next: usize,
    /// Number of values held, at most `period`.
    len: usize,
    /// The shift `c`.
    shift: f64,
    /// `Σ (x − c)` over the held values.
    sum: f64,
    /// `Σ (x − c)²` over the held values.
    sum_sq: f64,
    /// Values pushed into the full window since the last exact recomputation.
    since_exact: usize,
}

impl Window {
    /// An empty window over `period` values (`period >= 1`, clamped to 1).
    pub(crate) fn new(period: usize) -> Window {
        Window {
            buf: vec![0.0; period.max(1)].into_boxed_slice(),
            next: 0,
            len: 0,
            shift: 0.0,
            sum: 0.0,
            sum_sq: 0.0,
            since_exact: 0,
        }
    }

    /// Empties the window, keeping its allocation.
    pub(crate) fn reset(&mut self) {
        self.next = 0;
        self.len = 0;
        self.shift = 0.0;
        self.sum = 0.0;
        self.sum_sq = 0.0;
        self.since_exact = 0;
    }

    /// Appends `x`, dropping the oldest value when the window is full. Returns whether the
    /// window is full (holds `period` values) after the push.
    pub(crate) fn push(&mut self, x: f64) -> bool {
        let period = self.buf.len();
        if self.len == 0 {
            self.shift = x;
        }
        let d = x - self.shift;
        if self.len == period {
            let old = self.buf[self.next] - self.shift;
            self.sum += d - old;
            self.sum_sq += (d - old) * (d + old);
        } else {
            self.sum += d;
            self.sum_sq += d * d;
            self.len += 1;
        }
        self.buf[self.next] = x;
        self.next += 1;
        if self.next == period {
            self.next = 0;
        }
        if self.len == period {
            self.since_exact += 1;
            if self.since_exact >= period {
                self.recompute();
            }
            true
        } else {
            false
        }
    }

    /// Recomputes both sums from the buffer, shifted by the current mean.
    fn recompute(&mut self) {
        let n = self.len as f64;
        let held = &self.buf[..self.len];
        let shift = held.iter().sum::<f64>() / n;
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        for &x in held {
            let d = x - shift;
            sum += d;
            sum_sq += d * d;
        }
        self.shift = shift;
        self.sum = sum;
        self.sum_sq = sum_sq;
        self.since_exact = 0;
    }

    /// Arithmetic mean of the held values (NaN when empty).
    pub(crate) fn mean(&self) -> f64 {
        self.shift + self.sum / self.len as f64
    }

    /// Population variance of the held values (divisor `len`), never negative.
    pub(crate) fn variance(&self) -> f64 {
        let n = self.len as f64;
        let m = self.sum / n;
        (self.sum_sq / n - m * m).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_variance_of_the_last_values() {
        let mut w = Window::new(3);
        assert!(!w.push(1.0));
        assert!(!w.push(2.0));
        assert!(w.push(6.0));
        assert_eq!(w.mean(), 3.0);
        // population variance of 1, 2, 6: ((−2)² + (−1)² + 3²) / 3 = 14/3
        assert!((w.variance() - 14.0 / 3.0).abs() < 1e-15);
        assert!(w.push(4.0)); // window 2, 6, 4
        assert_eq!(w.mean(), 4.0);
        assert!((w.variance() - 8.0 / 3.0).abs() < 1e-15);
        w.reset();
        assert!(!w.push(10.0));
        assert_eq!(w.mean(), 10.0);
        assert_eq!(w.variance(), 0.0);
    }

    #[test]
    fn no_drift_over_a_long_series_far_from_the_first_value() {
        // Values start near 1 and climb to ~1e6: a fixed shift would make Σ(x−c)² cancel.
        let period = 50;
        let mut w = Window::new(period);
        let mut xs = Vec::new();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..200_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64;
            let x = 1.0 + i as f64 * 5.0 + noise * 3.0;
            xs.push(x);
            w.push(x);
        }
        let last = &xs[xs.len() - period..];
        let mean = last.iter().sum::<f64>() / period as f64;
        let var = last.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / period as f64;
        assert!((w.mean() - mean).abs() < 1e-9, "{} vs {mean}", w.mean());
        assert!(
            (w.variance() - var).abs() < 1e-9 * var,
            "{} vs {var}",
            w.variance()
        );
    }

    #[test]
    fn period_one_holds_the_last_value() {
        let mut w = Window::new(1);
        assert!(w.push(3.5));
        assert!(w.push(-2.0));
        assert_eq!(w.mean(), -2.0);
        assert_eq!(w.variance(), 0.0);
    }
}
