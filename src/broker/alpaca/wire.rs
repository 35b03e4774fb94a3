//! The JSON of Alpaca's Trading API (REST and the `trade_updates` stream), as its published
//! reference spells it.
//!
//! Decimal fields arrive as JSON strings (`"qty": "10"`, `"filled_avg_price": "101.23"` or
//! `null`); [`dec`] and [`opt_dec`] accept a string or a number. Times are RFC 3339. Unknown
//! fields are ignored and unknown enum values map to a catch-all (`Other`), so a field or an
//! order status Alpaca adds does not break parsing.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use std::str::FromStr;

/// A decimal given as a JSON string or number.
#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Str(String),
    Num(serde_json::Number),
}

fn parse_decimal(s: &str) -> Result<Decimal, String> {
    Decimal::from_str(s)
        .or_else(|_| Decimal::from_scientific(s))
        .map_err(|e| format!("not a decimal: {s:?} ({e})"))
}

/// Deserializes a decimal from a JSON string or number.
pub fn dec<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    match StrOrNum::deserialize(d)? {
        StrOrNum::Str(s) => parse_decimal(s.trim()).map_err(serde::de::Error::custom),
        StrOrNum::Num(n) => parse_decimal(&n.to_string()).map_err(serde::de::Error::custom),
    }
}

/// Deserializes an optional decimal from a JSON string, number, `null` or `""`.
pub fn opt_dec<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    match Option::<StrOrNum>::deserialize(d)? {
        None => Ok(None),
        Some(StrOrNum::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(StrOrNum::Str(s)) => parse_decimal(s.trim())
            .map(Some)
            .map_err(serde::de::Error::custom),
        Some(StrOrNum::Num(n)) => parse_decimal(&n.to_string())
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `GET /v2/account`.
#[derive(Clone, Debug, Deserialize)]
pub struct Account {
    /// `ACTIVE`, `ACCOUNT_UPDATED`, `SUBMITTED`, …
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: String,
    /// Account number (`PA…` for paper).
    #[serde(default, deserialize_with = "null_as_default")]
    pub account_number: String,
    /// `USD`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub currency: String,
    /// Cash, USD.
    #[serde(default, deserialize_with = "opt_dec")]
    pub cash: Option<Decimal>,
    /// Equity, USD.
    #[serde(default, deserialize_with = "opt_dec")]
    pub equity: Option<Decimal>,
    /// Buying power, USD.
    #[serde(default, deserialize_with = "opt_dec")]
    pub buying_power: Option<Decimal>,
    /// The account may not trade.
    #[serde(default, deserialize_with = "null_as_default")]
    pub trading_blocked: bool,
    /// The account is blocked.
    #[serde(default, deserialize_with = "null_as_default")]
    pub account_blocked: bool,
    /// Flagged as a pattern day trader.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pattern_day_trader: bool,
}

/// `GET /v2/positions`, one element.
#[derive(Clone, Debug, Deserialize)]
pub struct Position {
    /// Symbol.
    pub symbol: String,
    /// Shares (negative for a short).
    #[serde(deserialize_with = "dec")]
    pub qty: Decimal,
    /// `long` or `short`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub side: String,
    /// Average entry price.
    #[serde(default, deserialize_with = "opt_dec")]
    pub avg_entry_price: Option<Decimal>,
    /// Last price.
    #[serde(default, deserialize_with = "opt_dec")]
    pub current_price: Option<Decimal>,
}

/// Order status (`#[serde(other)]`: a status Alpaca adds parses as `Other`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Received, routed to the exchange.
    New,
    /// Partly executed.
    PartiallyFilled,
    /// Completely executed.
    Filled,
    /// Done for the day; resumes on the next trading day.
    DoneForDay,
    /// Cancelled.
    Canceled,
    /// Time in force ran out.
    Expired,
    /// Replaced by another order (`replaced_by`).
    Replaced,
    /// Cancel requested.
    PendingCancel,
    /// Replace requested.
    PendingReplace,
    /// Accepted by Alpaca, not yet routed.
    Accepted,
    /// Received, not yet accepted.
    PendingNew,
    /// Accepted for bidding.
    AcceptedForBidding,
    /// Stopped (a fill is guaranteed).
    Stopped,
    /// Rejected.
    Rejected,
    /// Suspended.
    Suspended,
    /// Calculated.
    Calculated,
    /// A bracket leg waiting for its parent to fill.
    Held,
    /// Any status this client does not know.
    #[serde(other)]
    Other,
}

/// Order type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Type {
    /// Market.
    Market,
    /// Limit.
    Limit,
    /// Stop.
    Stop,
    /// Stop-limit.
    StopLimit,
    /// Trailing stop.
    TrailingStop,
    /// Any type this client does not know.
    #[serde(other)]
    Other,
}

/// An order (REST answers and the `order` of a trade update).
#[derive(Clone, Debug, Deserialize)]
pub struct Order {
    /// Alpaca's id.
    pub id: String,
    /// The client order id (ours, or one Alpaca made for bracket legs).
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_order_id: String,
    /// When Alpaca received it.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// Last change.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// When it was submitted.
    #[serde(default)]
    pub submitted_at: Option<DateTime<Utc>>,
    /// When it filled completely.
    #[serde(default)]
    pub filled_at: Option<DateTime<Utc>>,
    /// Symbol.
    #[serde(default, deserialize_with = "null_as_default")]
    pub symbol: String,
    /// Shares ordered (`null` for notional orders).
    #[serde(default, deserialize_with = "opt_dec")]
    pub qty: Option<Decimal>,
    /// Shares executed.
    #[serde(default, deserialize_with = "opt_dec")]
    pub filled_qty: Option<Decimal>,
    /// Average execution price.
    #[serde(default, deserialize_with = "opt_dec")]
    pub filled_avg_price: Option<Decimal>,
    /// `simple`, `bracket`, `oco`, `oto`, or `""`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub order_class: String,
    /// Order type (see [`Order::kind`]).
    #[serde(rename = "type", default = "other_type")]
    pub order_type: Type,
    /// The older spelling of `type`, which Alpaca still sends beside it.
    #[serde(rename = "order_type", default)]
    pub legacy_type: Option<Type>,
    /// `buy` or `sell`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub side: String,
    /// `day`, `gtc`, …
    #[serde(default, deserialize_with = "null_as_default")]
    pub time_in_force: String,
    /// Limit price.
    #[serde(default, deserialize_with = "opt_dec")]
    pub limit_price: Option<Decimal>,
    /// Stop price.
    #[serde(default, deserialize_with = "opt_dec")]
    pub stop_price: Option<Decimal>,
    /// Status.
    #[serde(default = "other_status")]
    pub status: Status,
    /// The order that replaced this one.
    #[serde(default)]
    pub replaced_by: Option<String>,
    /// The order this one replaced.
    #[serde(default)]
    pub replaces: Option<String>,
    /// Bracket / OTO legs (with `nested=true`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub legs: Vec<Order>,
}

fn other_type() -> Type {
    Type::Other
}
fn other_status() -> Status {
    Status::Other
}

impl Order {
    /// The order type, from `type` or else `order_type`.
    pub fn kind(&self) -> Type {
        match (self.order_type, self.legacy_type) {
            (Type::Other, Some(t)) => t,
            (t, _) => t,
        }
    }
    /// Shares executed (zero when absent).
    pub fn filled(&self) -> Decimal {
        self.filled_qty.unwrap_or_default()
    }
    /// The best time of its last change.
    pub fn changed_at(&self) -> Option<DateTime<Utc>> {
        self.updated_at
            .or(self.filled_at)
            .or(self.submitted_at)
            .or(self.created_at)
    }
}

/// `take_profit` of a bracket.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TakeProfitLeg {
    /// Limit price.
    pub limit_price: String,
}

/// `stop_loss` of a bracket / OTO.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StopLossLeg {
    /// Stop price.
    pub stop_price: String,
}

/// `POST /v2/orders`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NewOrder {
    /// Symbol.
    pub symbol: String,
    /// Shares, as a string.
    pub qty: String,
    /// `buy` or `sell`.
    pub side: String,
    /// `market`, `limit` or `stop`.
    #[serde(rename = "type")]
    pub order_type: String,
    /// `day` or `gtc`.
    pub time_in_force: String,
    /// Limit price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_price: Option<String>,
    /// Stop price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_price: Option<String>,
    /// Our id (≤ 128 characters).
    pub client_order_id: String,
    /// `simple`, `bracket` or `oto`.
    pub order_class: String,
    /// Take-profit leg.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub take_profit: Option<TakeProfitLeg>,
    /// Stop-loss leg.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_loss: Option<StopLossLeg>,
}

/// `PATCH /v2/orders/{id}`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReplaceOrder {
    /// New quantity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qty: Option<String>,
    /// New stop price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_price: Option<String>,
    /// New limit price (stop-limit orders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_price: Option<String>,
}

/// Alpaca's error body: `{"code": 40310000, "message": "insufficient buying power"}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiError {
    /// Alpaca's error code.
    #[serde(default)]
    pub code: Option<i64>,
    /// Its message.
    #[serde(default, deserialize_with = "null_as_default")]
    pub message: String,
}

/// One part of a 207 Multi-Status answer (`DELETE /v2/positions`, `DELETE /v2/orders`).
#[derive(Clone, Debug, Deserialize)]
pub struct BulkPart {
    /// Symbol (`DELETE /v2/positions`).
    #[serde(default)]
    pub symbol: Option<String>,
    /// Order id (`DELETE /v2/orders`).
    #[serde(default)]
    pub id: Option<String>,
    /// HTTP status of this part.
    #[serde(default)]
    pub status: u16,
    /// The order, or an error body.
    #[serde(default)]
    pub body: serde_json::Value,
}

/// A stream message: `{"stream": "...", "data": {...}}`.
#[derive(Clone, Debug, Deserialize)]
pub struct StreamMessage {
    /// `authorization`, `listening`, `trade_updates`.
    #[serde(default)]
    pub stream: String,
    /// The payload.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// The `data` of an `authorization` message.
#[derive(Clone, Debug, Deserialize)]
pub struct Authorization {
    /// `authorized` or `unauthorized`.
    #[serde(default)]
    pub status: String,
}

/// The `data` of a `trade_updates` message.
#[derive(Clone, Debug, Deserialize)]
pub struct TradeUpdate {
    /// `new`, `fill`, `partial_fill`, `canceled`, `expired`, `rejected`, `replaced`, …
    pub event: String,
    /// Execution id (fills).
    #[serde(default)]
    pub execution_id: Option<String>,
    /// The order after the event.
    pub order: Order,
    /// When it happened.
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    /// Fill price.
    #[serde(default, deserialize_with = "opt_dec")]
    pub price: Option<Decimal>,
    /// Fill quantity.
    #[serde(default, deserialize_with = "opt_dec")]
    pub qty: Option<Decimal>,
    /// Position after the fill.
    #[serde(default, deserialize_with = "opt_dec")]
    pub position_qty: Option<Decimal>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::dec as d;

    #[test]
    fn orders_parse_strings_nulls_unknown_fields_and_statuses() {
        let o: Order = serde_json::from_value(serde_json::json!({
            "id": "61e69015-8549-4bfd-b9c3-01e75843f47d",
            "client_order_id": "zt-1",
            "created_at": "2021-03-16T18:38:01.942282Z",
            "updated_at": null,
            "symbol": "AAPL",
            "asset_class": "us_equity",
            "qty": "10",
            "filled_qty": 3,
            "filled_avg_price": null,
            "order_class": "",
            "order_type": "stop",
            "type": "stop",
            "side": "sell",
            "time_in_force": "gtc",
            "limit_price": null,
            "stop_price": "98.5",
            "status": "brand_new_status",
            "legs": null,
            "extended_hours": false
        }))
        .unwrap();
        assert_eq!(o.qty, Some(d!(10)));
        assert_eq!(o.filled(), d!(3));
        assert_eq!(o.filled_avg_price, None);
        assert_eq!(o.stop_price, Some(d!(98.5)));
        assert_eq!(o.status, Status::Other);
        assert_eq!(o.kind(), Type::Stop);
        assert!(o.legs.is_empty());
    }

    #[test]
    fn new_orders_serialize_prices_as_strings_and_skip_absent_fields() {
        let o = NewOrder {
            symbol: "AAPL".into(),
            qty: "5".into(),
            side: "buy".into(),
            order_type: "market".into(),
            time_in_force: "gtc".into(),
            limit_price: None,
            stop_price: None,
            client_order_id: "zt-1".into(),
            order_class: "oto".into(),
            take_profit: None,
            stop_loss: Some(StopLossLeg {
                stop_price: "95".into(),
            }),
        };
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            serde_json::json!({"symbol": "AAPL", "qty": "5", "side": "buy", "type": "market",
                "time_in_force": "gtc", "client_order_id": "zt-1", "order_class": "oto",
                "stop_loss": {"stop_price": "95"}})
        );
    }
}
