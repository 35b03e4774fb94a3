//! Completed trades and equity points: what backtests, reports and the store record.

use crate::broker::{OrderPurpose, PositionSide};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One round trip: from the first entry fill to the fill that made the position flat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeRecord {
    /// The pipeline that traded.
    pub pipeline: String,
    /// Ticker symbol.
    pub symbol: String,
    /// Long or short.
    pub side: PositionSide,
    /// First entry fill, Unix seconds.
    pub entry_time: i64,
    /// Fill that made the position flat, Unix seconds.
    pub exit_time: i64,
    /// Average entry price, USD per share.
    pub entry_price: Decimal,
    /// Average exit price over every exit fill, USD per share.
    pub exit_price: Decimal,
    /// Largest quantity held, shares.
    pub quantity: Decimal,
    /// Stop at entry (the initial stop), USD per share.
    pub stop_loss: Option<Decimal>,
    /// Stop when the trade closed (after a move to breakeven, say), USD per share.
    #[serde(default)]
    pub final_stop: Option<Decimal>,
    /// First target at entry, USD per share.
    pub target_1: Option<Decimal>,
    /// Second target at entry, USD per share.
    pub target_2: Option<Decimal>,
    /// Purpose of the fill that made the position flat (`stop_loss`, `target_2`,
    /// `exit_rule`, …).
    pub exit_reason: OrderPurpose,
    /// Realized profit or loss after fees, USD.
    pub pnl: Decimal,
    /// Commissions of every fill of the trade, USD.
    pub fees: Decimal,
    /// Mode the trade ran in (`simulation`, `paper`, `live`; validation trades are what
    /// would have been done).
    pub mode: String,
}

impl TradeRecord {
    /// `pnl / (entry_price × quantity)` in percent (0 when the notional is zero).
    pub fn return_pct(&self) -> Decimal {
        let notional = self.entry_price * self.quantity;
        if notional.is_zero() {
            Decimal::ZERO
        } else {
            self.pnl / notional * Decimal::ONE_HUNDRED
        }
    }
}

/// Account equity at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EquityPoint {
    /// Unix seconds.
    pub ts: i64,
    /// Cash plus positions at market, USD.
    pub equity: Decimal,
    /// Cash, USD.
    pub cash: Decimal,
}
