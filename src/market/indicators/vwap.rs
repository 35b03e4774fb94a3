//! Session volume-weighted average price.

/// VWAP of the current session: `Σ(TP · V) / Σ V` over the session's bars so far, with the
/// typical price `TP = (high + low + close) / 3` (TradingView `ta.vwap` on its default source
/// `hlc3` with the "Session" anchor; the benchmark of Berkowitz, Logue & Noser, "The Total
/// Cost of Transactions on the NYSE", 1988). The sums restart on the first bar of each
/// session. Defined from the first bar (lookback 0), except while the session's volume is
/// still 0 (e.g. quotes without volume): the average is then undefined and NaN.
///
/// The price·volume sum is Neumaier-compensated, so a long session of large volumes does not
/// lose precision.
#[derive(Clone, Debug, Default)]
pub(crate) struct Vwap {
    pv: f64,
    pv_comp: f64,
    volume: f64,
}

impl Vwap {
    pub(crate) fn new() -> Vwap {
        Vwap::default()
    }

    /// Feeds the next bar; `new_session` restarts the sums with this bar.
    pub(crate) fn update(
        &mut self,
        high: f64,
        low: f64,
        close: f64,
        volume: f64,
        new_session: bool,
    ) -> f64 {
        if new_session {
            self.reset();
        }
        let tp = (high + low + close) / 3.0;
        let x = tp * volume;
        let t = self.pv + x;
        if self.pv.abs() >= x.abs() {
            self.pv_comp += (self.pv - t) + x;
        } else {
            self.pv_comp += (x - t) + self.pv;
        }
        self.pv = t;
        self.volume += volume;
        if self.volume == 0.0 {
            f64::NAN
        } else {
            (self.pv + self.pv_comp) / self.volume
        }
    }

    pub(crate) fn reset(&mut self) {
        *self = Vwap::default();
    }
}
