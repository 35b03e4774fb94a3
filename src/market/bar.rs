//! OHLCV bars.

/// One OHLCV bar. Prices are in the instrument's quote currency (USD for US stocks) as
/// `f64`, because indicators must match TA-Lib's double arithmetic; money derived from them
/// (order prices, fills, cash) is converted to `Decimal` at the broker boundary.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Bar {
    /// Start of the bar's period, Unix seconds (UTC). The bar becomes visible when its
    /// period closes ([`crate::market::Timeframe::period_end`]).
    pub ts: i64,
    /// First trade price of the period.
    pub open: f64,
    /// Highest trade price of the period.
    pub high: f64,
    /// Lowest trade price of the period.
    pub low: f64,
    /// Last trade price of the period.
    pub close: f64,
    /// Traded volume of the period, in shares (or contracts, or units).
    pub volume: f64,
}
