//! Orders, fills, positions and accounts: the vocabulary shared by every broker.

use crate::risk::RiskApproved;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Buy or sell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Buy (opens a long, closes a short).
    Buy,
    /// Sell (opens a short, closes a long).
    Sell,
}

impl Side {
    /// The other side.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
    /// `+1` for buys, `-1` for sells: the sign of the position change.
    pub fn sign(self) -> Decimal {
        match self {
            Side::Buy => Decimal::ONE,
            Side::Sell => Decimal::NEGATIVE_ONE,
        }
    }
    /// `buy` or `sell`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

/// Direction of a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionSide {
    /// Positive quantity.
    Long,
    /// Negative quantity.
    Short,
}

impl PositionSide {
    /// The side of the order that opens such a position.
    pub fn entry_side(self) -> Side {
        match self {
            PositionSide::Long => Side::Buy,
            PositionSide::Short => Side::Sell,
        }
    }
    /// The side of the orders that close it.
    pub fn exit_side(self) -> Side {
        self.entry_side().opposite()
    }
    /// `long` or `short`.
    pub fn as_str(self) -> &'static str {
        match self {
            PositionSide::Long => "long",
            PositionSide::Short => "short",
        }
    }
}

/// How an order executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OrderType {
    /// At the market (the simulated broker fills at the next bar's open).
    Market,
    /// At `price` or better (take-profit legs).
    Limit {
        /// Limit price, USD per share.
        price: Decimal,
    },
    /// Becomes a market order when the price trades through `price` (stop-loss legs).
    Stop {
        /// Stop price, USD per share.
        price: Decimal,
    },
}

/// Why an order exists; recorded with orders, fills and trades.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderPurpose {
    /// Opens a position.
    Entry,
    /// The protective stop of a position.
    StopLoss,
    /// The first (partial) take-profit.
    #[serde(rename = "target_1")]
    Target1,
    /// The second take-profit (the rest).
    #[serde(rename = "target_2")]
    Target2,
    /// A strategy exit rule (`long_exit`, `short_exit`).
    ExitRule,
    /// End of the trading window (`flatten_at_end`).
    EndOfWindow,
    /// Emergency close from `POST /v1/close`.
    Emergency,
    /// A risk halt with `daily_loss_action: flatten`.
    RiskFlatten,
    /// The pipeline was removed or disabled with `on_remove: close`.
    PipelineRemoved,
}

impl OrderPurpose {
    /// The snake_case name (also the exit reason of a trade closed by this order).
    pub fn as_str(self) -> &'static str {
        match self {
            OrderPurpose::Entry => "entry",
            OrderPurpose::StopLoss => "stop_loss",
            OrderPurpose::Target1 => "target_1",
            OrderPurpose::Target2 => "target_2",
            OrderPurpose::ExitRule => "exit_rule",
            OrderPurpose::EndOfWindow => "end_of_window",
            OrderPurpose::Emergency => "emergency",
            OrderPurpose::RiskFlatten => "risk_flatten",
            OrderPurpose::PipelineRemoved => "pipeline_removed",
        }
    }
}

/// One take-profit leg of a bracket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeProfit {
    /// Limit price, USD per share.
    pub price: Decimal,
    /// Shares this leg closes.
    pub quantity: Decimal,
    /// `Target1` or `Target2`.
    pub purpose: OrderPurpose,
}

/// An order that opens or adds to a position, with its protective bracket. It reaches a
/// broker only wrapped in [`RiskApproved`], which only the risk manager can make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryOrder {
    /// Deterministic id written to the store before submission (see
    /// [`client_order_id`]); brokers deduplicate on it.
    pub client_order_id: String,
    /// The pipeline that owns the position.
    pub pipeline: String,
    /// Ticker symbol.
    pub symbol: String,
    /// `Buy` opens a long, `Sell` a short.
    pub side: Side,
    /// Shares, whole and positive.
    pub quantity: Decimal,
    /// `Market` (the only type the engine sends for entries today) or `Limit`.
    pub order_type: OrderType,
    /// The entry price the risk manager sized the order with, USD per share (a market
    /// order's expected price; pending entries count at it against the risk limits).
    #[serde(default)]
    pub expected_price: Option<Decimal>,
    /// Protective stop placed when the entry fills, USD per share.
    pub stop_loss: Option<Decimal>,
    /// Take-profit legs placed when the entry fills; their quantities add up to at most
    /// `quantity` (scaled down proportionally on a partial fill).
    pub take_profits: Vec<TakeProfit>,
}

/// An order that reduces or closes a position. It never needs risk approval because it
/// cannot add exposure: brokers execute it reduce-only (a quantity above the position is
/// cut to the position).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitOrder {
    /// Deterministic id written to the store before submission.
    pub client_order_id: String,
    /// The pipeline that owns the position.
    pub pipeline: String,
    /// Ticker symbol.
    pub symbol: String,
    /// The side of the position being reduced (the order goes the other way).
    pub position_side: PositionSide,
    /// Shares to close, positive.
    pub quantity: Decimal,
    /// `Market`, `Stop` or `Limit`.
    pub order_type: OrderType,
    /// Why.
    pub purpose: OrderPurpose,
    /// Orders of one position's bracket share a group; a stop fill cancels the group's
    /// other orders (one-cancels-other).
    pub oco_group: Option<String>,
}

impl ExitOrder {
    /// The order's side: opposite to the position.
    pub fn side(&self) -> Side {
        self.position_side.exit_side()
    }
}

/// What may be submitted to a broker: a risk-approved entry, or an exit.
#[derive(Clone, Debug, PartialEq)]
pub enum Submit {
    /// Opens or adds to a position.
    Entry(RiskApproved<EntryOrder>),
    /// Reduces or closes a position.
    Exit(ExitOrder),
}

impl Submit {
    /// The client order id.
    pub fn client_order_id(&self) -> &str {
        match self {
            Submit::Entry(e) => &e.get().client_order_id,
            Submit::Exit(x) => &x.client_order_id,
        }
    }

    /// The owning pipeline.
    pub fn pipeline(&self) -> &str {
        match self {
            Submit::Entry(e) => &e.get().pipeline,
            Submit::Exit(x) => &x.pipeline,
        }
    }

    /// The symbol.
    pub fn symbol(&self) -> &str {
        match self {
            Submit::Entry(e) => &e.get().symbol,
            Submit::Exit(x) => &x.symbol,
        }
    }

    /// Buy or sell.
    pub fn side(&self) -> Side {
        match self {
            Submit::Entry(e) => e.get().side,
            Submit::Exit(x) => x.side(),
        }
    }
}

/// Lifecycle of an order at the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Accepted, waiting to execute.
    Accepted,
    /// Some of it executed; the rest is still working.
    PartiallyFilled,
    /// Completely executed.
    Filled,
    /// Cancelled (by request, by one-cancels-other, or the unfilled rest of a partial fill).
    Cancelled,
    /// Refused by the broker.
    Rejected,
    /// Its time in force ran out before it executed completely.
    Expired,
}

impl OrderStatus {
    /// Whether the order can still execute.
    pub fn is_open(self) -> bool {
        matches!(self, OrderStatus::Accepted | OrderStatus::PartiallyFilled)
    }
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Accepted => "accepted",
            OrderStatus::PartiallyFilled => "partially_filled",
            OrderStatus::Filled => "filled",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Expired => "expired",
        }
    }
}

/// An order as the broker knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    /// Our id.
    pub client_order_id: String,
    /// The broker's id.
    pub broker_order_id: String,
    /// Owning pipeline.
    pub pipeline: String,
    /// Ticker symbol.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Shares ordered.
    pub quantity: Decimal,
    /// Shares executed so far.
    pub filled_quantity: Decimal,
    /// Average execution price, USD per share (zero before any fill).
    pub average_price: Decimal,
    /// Order type and price.
    pub order_type: OrderType,
    /// Why the order exists.
    pub purpose: OrderPurpose,
    /// Bracket group.
    pub oco_group: Option<String>,
    /// Status.
    pub status: OrderStatus,
    /// Why it was rejected or cancelled, if it was.
    pub reason: Option<String>,
    /// When it was accepted, Unix seconds.
    pub created_at: i64,
}

/// One execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    /// Our order id.
    pub client_order_id: String,
    /// The broker's order id.
    pub broker_order_id: String,
    /// Unique id of this fill at the broker.
    pub fill_id: String,
    /// Owning pipeline.
    pub pipeline: String,
    /// Ticker symbol.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Shares executed.
    pub quantity: Decimal,
    /// Execution price, USD per share, slippage included.
    pub price: Decimal,
    /// Commission of this fill, USD.
    pub commission: Decimal,
    /// Why the order existed.
    pub purpose: OrderPurpose,
    /// When it executed, Unix seconds.
    pub ts: i64,
}

/// What a broker tells the engine happened to one of its orders, in the broker's order.
///
/// Every variant carries the order's state *after* the event, so a consumer can upsert it
/// without asking the broker again. A partial fill is a [`BrokerEvent::Fill`] whose order is
/// [`OrderStatus::PartiallyFilled`]; the last fill leaves it [`OrderStatus::Filled`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BrokerEvent {
    /// The broker accepted an order: one we submitted, or a bracket leg (stop, target) it
    /// placed itself when the entry filled.
    Accepted {
        /// The order, working.
        order: OrderState,
    },
    /// Some or all of an order executed.
    Fill {
        /// The execution.
        fill: Fill,
        /// The order after it.
        order: OrderState,
    },
    /// The order was cancelled (by request, one-cancels-other, reduce-only, or the unfilled
    /// rest of a partial fill).
    Cancelled {
        /// The order, cancelled.
        order: OrderState,
        /// Why.
        reason: String,
    },
    /// The broker refused the order.
    Rejected {
        /// The order, rejected.
        order: OrderState,
        /// The broker's reason.
        reason: String,
    },
    /// The order's time in force ran out.
    Expired {
        /// The order, expired.
        order: OrderState,
    },
    /// The order was modified (a stop moved to breakeven).
    Replaced {
        /// The order after the change.
        order: OrderState,
    },
}

impl BrokerEvent {
    /// The order the event is about, after the event.
    pub fn order(&self) -> &OrderState {
        match self {
            BrokerEvent::Accepted { order }
            | BrokerEvent::Fill { order, .. }
            | BrokerEvent::Cancelled { order, .. }
            | BrokerEvent::Rejected { order, .. }
            | BrokerEvent::Expired { order }
            | BrokerEvent::Replaced { order } => order,
        }
    }

    /// The fill, for [`BrokerEvent::Fill`].
    pub fn fill(&self) -> Option<&Fill> {
        match self {
            BrokerEvent::Fill { fill, .. } => Some(fill),
            _ => None,
        }
    }

    /// `accepted`, `partial_fill`, `fill`, `cancelled`, `rejected`, `expired` or `replaced`.
    pub fn kind(&self) -> &'static str {
        match self {
            BrokerEvent::Accepted { .. } => "accepted",
            BrokerEvent::Fill { order, .. } if order.status == OrderStatus::PartiallyFilled => {
                "partial_fill"
            }
            BrokerEvent::Fill { .. } => "fill",
            BrokerEvent::Cancelled { .. } => "cancelled",
            BrokerEvent::Rejected { .. } => "rejected",
            BrokerEvent::Expired { .. } => "expired",
            BrokerEvent::Replaced { .. } => "replaced",
        }
    }
}

/// A position at the broker (net per symbol and pipeline).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Owning pipeline (brokers that only know net positions per symbol report the
    /// pipeline from the store's order records).
    pub pipeline: String,
    /// Ticker symbol.
    pub symbol: String,
    /// Shares: positive long, negative short.
    pub quantity: Decimal,
    /// Average entry price, USD per share.
    pub average_price: Decimal,
    /// Last known price, USD per share.
    pub market_price: Decimal,
}

impl Position {
    /// Long or short (`None` when flat).
    pub fn side(&self) -> Option<PositionSide> {
        if self.quantity > Decimal::ZERO {
            Some(PositionSide::Long)
        } else if self.quantity < Decimal::ZERO {
            Some(PositionSide::Short)
        } else {
            None
        }
    }
    /// Market value, USD (negative for shorts).
    pub fn market_value(&self) -> Decimal {
        self.quantity * self.market_price
    }
    /// Unrealized profit or loss, USD.
    pub fn unrealized_pnl(&self) -> Decimal {
        (self.market_price - self.average_price) * self.quantity
    }
}

/// Account balances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Cash, USD (short-sale proceeds included).
    pub cash: Decimal,
    /// Cash plus the market value of every position, USD.
    pub equity: Decimal,
    /// What the broker lets the account buy now, USD (a cash account: its cash).
    pub buying_power: Decimal,
    /// Commissions paid so far, USD.
    pub commissions: Decimal,
}

/// Deterministic client order id: the same execution and leg always give the same id, so
/// that a restart after a crash finds the order it already sent instead of sending it again.
/// Shape: `zt-<16 hex of SHA-256(pipeline, symbol, execution key, leg)>`, at most 48
/// characters (Alpaca allows 128, IBKR's order ref 40+).
pub fn client_order_id(pipeline: &str, symbol: &str, execution_key: &str, leg: &str) -> String {
    use sha2::{Digest, Sha256};
    // `pipeline \0 symbol \0 key \0 leg`, hashed; the id is `zt-` and the first 8 bytes of
    // the digest in lowercase hex (built without the formatting machinery: every order
    // makes one).
    let mut hasher = Sha256::new();
    for (k, part) in [pipeline, symbol, execution_key, leg]
        .into_iter()
        .enumerate()
    {
        if k > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(19);
    id.push_str("zt-");
    for &b in &digest[..8] {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 15)]));
    }
    id
}

/// Client order id of a bracket leg: `<entry id>-sl` (stop), `-t1`, `-t2` (targets).
pub fn bracket_leg_id(entry_client_order_id: &str, purpose: OrderPurpose) -> String {
    let leg = match purpose {
        OrderPurpose::StopLoss => "sl",
        OrderPurpose::Target1 => "t1",
        OrderPurpose::Target2 => "t2",
        other => other.as_str(),
    };
    format!("{entry_client_order_id}-{leg}")
}

/// [`crate::broker::sim::MAX_PRICE`] as `f64` (1e12).
const MAX_PRICE_F64: f64 = 1e12;

/// Converts a bar price to `Decimal` with 6 decimal places: `round(value × 10⁶) / 10⁶`
/// (half away from zero), trailing zeros dropped, so `100.37_f64` becomes `100.37`. The
/// scaled value is below 10¹⁸ and fits an `i64` exactly enough for 6 places; this costs a few
/// nanoseconds where an exact binary-to-decimal conversion costs over a hundred, and runs on
/// every bar. `None` for NaN, infinities and magnitudes of 1e12 or more. The engine marks
/// positions with it and the simulated broker fills with it, so both see the same prices.
pub fn bar_price(value: f64) -> Option<Decimal> {
    if !in_price_range(value) {
        return None;
    }
    // Trailing zeros dropped in i64 arithmetic (what `Decimal::normalize` does, without its
    // 96-bit divisions); zero has no sign.
    let mut mantissa = (value * 1e6).round() as i64;
    if mantissa == 0 {
        return Some(Decimal::ZERO);
    }
    let mut scale = 6;
    while scale > 0 && mantissa % 10 == 0 {
        mantissa /= 10;
        scale -= 1;
    }
    Some(Decimal::new(mantissa, scale))
}

/// Whether [`bar_price`] accepts `value` (finite, magnitude below 1e12), without converting.
pub(crate) fn in_price_range(value: f64) -> bool {
    value.is_finite() && value.abs() < MAX_PRICE_F64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast trailing-zero strip gives exactly what `Decimal::normalize` gives: the same
    /// value and the same scale (so the same text), for prices, volumes, zero and -0.
    #[test]
    fn bar_price_is_the_normalized_six_place_rounding() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            100.37,
            0.000_000_4,
            0.000_000_5,
            1e11,
            -1e11,
            999_999.999_999_5,
        ];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let magnitude = 10f64.powi((x % 16) as i32 - 4);
            values.push(((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * magnitude);
            values.push(((x % 1_000_000) as f64) / 100.0);
        }
        for v in values {
            let want = Decimal::new((v * 1e6).round() as i64, 6).normalize();
            let got = bar_price(v).unwrap();
            assert_eq!(got, want, "{v}");
            assert_eq!(got.to_string(), want.to_string(), "{v}");
            assert_eq!(got.scale(), want.scale(), "{v}");
        }
    }

    #[test]
    fn purposes_serialize_as_their_names() {
        for p in [
            OrderPurpose::Entry,
            OrderPurpose::StopLoss,
            OrderPurpose::Target1,
            OrderPurpose::Target2,
            OrderPurpose::ExitRule,
            OrderPurpose::EndOfWindow,
            OrderPurpose::Emergency,
            OrderPurpose::RiskFlatten,
            OrderPurpose::PipelineRemoved,
        ] {
            assert_eq!(
                serde_json::to_value(p).unwrap(),
                serde_json::json!(p.as_str())
            );
        }
    }

    #[test]
    fn client_order_ids_are_deterministic_and_distinct() {
        let a = client_order_id("p", "AAPL", "2012-01-03T21:00:00Z", "entry");
        assert_eq!(
            a,
            client_order_id("p", "AAPL", "2012-01-03T21:00:00Z", "entry")
        );
        assert_ne!(
            a,
            client_order_id("p", "AAPL", "2012-01-03T21:00:00Z", "stop")
        );
        assert_ne!(
            a,
            client_order_id("q", "AAPL", "2012-01-03T21:00:00Z", "entry")
        );
        assert_eq!(a.len(), 19);
    }

    /// The ids are the ones orders already carry (stored intents, broker orders): `zt-` and
    /// the hex of the first 8 bytes of SHA-256 over the parts joined by NUL.
    #[test]
    fn client_order_ids_keep_their_formula() {
        use sha2::{Digest, Sha256};
        for (p, s, k, l) in [
            ("p", "AAPL", "2012-01-03T21:00:00Z", "entry"),
            (
                "sma-cross",
                "SYN",
                "sma-cross:SYN:2010-01-04T01:47:00Z",
                "exit",
            ),
            ("", "", "", ""),
        ] {
            let digest = Sha256::digest(format!("{p}\0{s}\0{k}\0{l}").as_bytes());
            let want = format!("zt-{}", hex::encode(&digest[..8]));
            assert_eq!(client_order_id(p, s, k, l), want);
        }
    }
}
