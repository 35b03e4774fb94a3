//! The position registry of the pipeline manager: open trades built from fills, their
//! stops and targets, the moves the trade manager makes on them (stop to breakeven after
//! target 1), and the completed trade records.

use super::state::PositionView;
use super::trades::TradeRecord;
use crate::broker::{EntryOrder, Fill, OrderPurpose, PositionSide, Side, bracket_leg_id};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// An open trade (stored by the daemon after every fill, so that a restart re-adopts it
/// with its stop and targets).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenTrade {
    /// The `[brokers.<name>]` account that holds the position.
    #[serde(default)]
    pub broker: String,
    /// Owning pipeline.
    pub pipeline: String,
    /// Symbol.
    pub symbol: String,
    /// Long or short.
    pub side: PositionSide,
    /// The first entry's client order id (the bracket group).
    pub group: String,
    /// Shares held, positive.
    pub quantity: Decimal,
    /// Largest quantity held.
    pub max_quantity: Decimal,
    /// Average entry price, USD per share.
    pub average_price: Decimal,
    /// First entry fill, Unix seconds.
    pub entry_time: i64,
    /// Current stop, USD per share.
    pub stop_loss: Option<Decimal>,
    /// Stop at entry, USD per share (`stop_loss` moves; this does not).
    #[serde(default)]
    pub initial_stop: Option<Decimal>,
    /// Target 1 at entry.
    pub target_1: Option<Decimal>,
    /// Target 2 at entry.
    pub target_2: Option<Decimal>,
    /// Commissions so far, USD.
    pub fees: Decimal,
    /// Realized profit before fees, USD.
    pub realized: Decimal,
    /// Shares closed so far and their value, for the average exit price.
    exit_quantity: Decimal,
    exit_value: Decimal,
    /// Whether target 1 filled.
    pub target_1_hit: bool,
    /// Whether to move the stop to the entry after target 1.
    pub move_stop_to_breakeven: bool,
    /// Bars of the strategy timeframe since the entry.
    pub bars_held: u32,
    /// Mode label.
    pub mode: String,
}

impl OpenTrade {
    /// A trade for a position the broker holds but the store did not know (found when the
    /// daemon reconciles its store with the broker at start): no stop or targets on record.
    pub fn adopted(
        broker: &str,
        pipeline: &str,
        symbol: &str,
        quantity: Decimal,
        average_price: Decimal,
        now: i64,
    ) -> OpenTrade {
        OpenTrade {
            broker: broker.to_string(),
            pipeline: pipeline.to_string(),
            symbol: symbol.to_string(),
            side: if quantity >= Decimal::ZERO {
                PositionSide::Long
            } else {
                PositionSide::Short
            },
            group: format!("adopted-{pipeline}-{symbol}"),
            quantity: quantity.abs(),
            max_quantity: quantity.abs(),
            average_price,
            entry_time: now,
            stop_loss: None,
            initial_stop: None,
            target_1: None,
            target_2: None,
            fees: Decimal::ZERO,
            realized: Decimal::ZERO,
            exit_quantity: Decimal::ZERO,
            exit_value: Decimal::ZERO,
            target_1_hit: false,
            move_stop_to_breakeven: false,
            bars_held: 0,
            mode: String::new(),
        }
    }
}

/// What the engine must do after a fill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowUp {
    /// Move the working stop `client_order_id` to `price` for `quantity` shares.
    ReplaceStop {
        /// The stop's client order id.
        client_order_id: String,
        /// New stop price (the average entry: breakeven).
        price: Decimal,
        /// Shares still held.
        quantity: Decimal,
    },
    /// The position is flat: cancel whatever is left of the bracket group.
    CancelGroup(String),
}

/// A map keyed by (pipeline, symbol) that is read with borrowed keys (no allocation per
/// lookup: the engine asks for every bar) and iterates in (pipeline, symbol) order.
#[derive(Clone, Debug)]
pub struct PairMap<V> {
    inner: BTreeMap<String, BTreeMap<String, V>>,
    len: usize,
}

impl<V> Default for PairMap<V> {
    fn default() -> Self {
        PairMap {
            inner: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<V> PairMap<V> {
    /// The value of (`a`, `b`).
    pub fn get(&self, a: &str, b: &str) -> Option<&V> {
        self.inner.get(a)?.get(b)
    }

    /// The value of (`a`, `b`), mutably.
    pub fn get_mut(&mut self, a: &str, b: &str) -> Option<&mut V> {
        self.inner.get_mut(a)?.get_mut(b)
    }

    /// Sets (`a`, `b`); returns the previous value.
    pub fn insert(&mut self, a: &str, b: &str, value: V) -> Option<V> {
        let old = self
            .inner
            .entry(a.to_string())
            .or_default()
            .insert(b.to_string(), value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes (`a`, `b`).
    pub fn remove(&mut self, a: &str, b: &str) -> Option<V> {
        let inner = self.inner.get_mut(a)?;
        let old = inner.remove(b);
        if inner.is_empty() {
            self.inner.remove(a);
        }
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// The values of `a`, in `b` order.
    pub fn values_of(&self, a: &str) -> impl Iterator<Item = &V> {
        self.inner.get(a).into_iter().flat_map(|m| m.values())
    }

    /// Every value, in (`a`, `b`) order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.inner.values().flat_map(|m| m.values())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Open trades by (pipeline, symbol) and the trades closed since the last drain.
#[derive(Clone, Debug, Default)]
pub struct Book {
    open: PairMap<OpenTrade>,
    pending: crate::FastMap<String, (EntryOrder, bool, String)>,
    closed: Vec<TradeRecord>,
}

impl Book {
    /// An empty book.
    pub fn new() -> Book {
        Book::default()
    }

    /// Remembers an entry order before it is submitted, so that its fill opens a trade with
    /// the right stop and targets.
    pub fn expect_entry(&mut self, order: &EntryOrder, move_stop_to_breakeven: bool, mode: &str) {
        self.pending.insert(
            order.client_order_id.clone(),
            (order.clone(), move_stop_to_breakeven, mode.to_string()),
        );
    }

    /// Sets the trade-manager options of `pipeline`'s pending entries (restored after a
    /// restart without them): whether target 1 moves the stop to breakeven, and the mode.
    pub fn configure_pending(&mut self, pipeline: &str, move_stop_to_breakeven: bool, mode: &str) {
        for (order, move_be, m) in self.pending.values_mut() {
            if order.pipeline == pipeline {
                *move_be = move_stop_to_breakeven;
                *m = mode.to_string();
            }
        }
    }

    /// Forgets an entry that was rejected or cancelled before any fill.
    pub fn drop_entry(&mut self, client_order_id: &str) {
        self.pending.remove(client_order_id);
    }

    /// The entry of `pipeline` in `symbol` that was sent and has not been settled yet (not
    /// filled completely, cancelled or rejected), with its plan.
    pub fn pending_entry(&self, pipeline: &str, symbol: &str) -> Option<&EntryOrder> {
        self.pending
            .values()
            .map(|(order, _, _)| order)
            .find(|o| o.pipeline == pipeline && o.symbol == symbol)
    }

    /// The plan of entry `client_order_id`, if it is pending.
    pub fn pending_plan(&self, client_order_id: &str) -> Option<&EntryOrder> {
        self.pending.get(client_order_id).map(|(order, _, _)| order)
    }

    /// Every pending entry (see [`Book::pending_entry`]).
    pub fn pending_entries(&self) -> impl Iterator<Item = &EntryOrder> {
        self.pending.values().map(|(order, _, _)| order)
    }

    /// Forgets the open trade of `pipeline` in `symbol` (the broker holds no such position).
    pub fn remove(&mut self, pipeline: &str, symbol: &str) -> Option<OpenTrade> {
        self.open.remove(pipeline, symbol)
    }

    /// Re-adopts an open trade (after a restart, from the store and the broker).
    pub fn adopt(&mut self, trade: OpenTrade) {
        let (p, s) = (trade.pipeline.clone(), trade.symbol.clone());
        self.open.insert(&p, &s, trade);
    }

    /// The open trade of `pipeline` in `symbol`.
    pub fn get(&self, pipeline: &str, symbol: &str) -> Option<&OpenTrade> {
        self.open.get(pipeline, symbol)
    }

    /// The position view the strategy and trade manager read.
    pub fn view(&self, pipeline: &str, symbol: &str) -> Option<PositionView> {
        self.get(pipeline, symbol).map(|t| PositionView {
            side: t.side,
            quantity: t.quantity,
            average_price: t.average_price,
            bars_held: t.bars_held,
            group: t.group.clone(),
            exit_pending: false,
        })
    }

    /// Every open trade, ordered by pipeline and symbol.
    pub fn open_trades(&self) -> impl Iterator<Item = &OpenTrade> {
        self.open.values()
    }

    /// The open trades of `pipeline`, ordered by symbol.
    pub fn open_trades_of(&self, pipeline: &str) -> impl Iterator<Item = &OpenTrade> {
        self.open.values_of(pipeline)
    }

    /// Number of open trades.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no trade is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Counts one more bar of the strategy timeframe for an open trade.
    pub fn bar_closed(&mut self, pipeline: &str, symbol: &str) {
        if let Some(t) = self.open.get_mut(pipeline, symbol) {
            t.bars_held += 1;
        }
    }

    /// Trades closed since the last call.
    pub fn drain_closed(&mut self) -> Vec<TradeRecord> {
        std::mem::take(&mut self.closed)
    }

    /// Books a fill at broker `broker`; returns what the engine must do next.
    pub fn on_fill(&mut self, broker: &str, fill: &Fill) -> Vec<FollowUp> {
        let (kp, ks) = (fill.pipeline.as_str(), fill.symbol.as_str());
        let mut follow = Vec::new();
        if fill.purpose == OrderPurpose::Entry {
            let plan = self.pending.get(&fill.client_order_id).cloned();
            match self.open.get_mut(kp, ks) {
                Some(t) => {
                    let total = t.quantity + fill.quantity;
                    t.average_price = ((t.average_price * t.quantity + fill.price * fill.quantity)
                        / total)
                        .round_dp(8);
                    t.quantity = total;
                    t.max_quantity = t.max_quantity.max(total);
                    t.fees += fill.commission;
                }
                None => {
                    let (order, move_be, mode) = match plan {
                        Some(p) => p,
                        None => (
                            EntryOrder {
                                client_order_id: fill.client_order_id.clone(),
                                pipeline: fill.pipeline.clone(),
                                symbol: fill.symbol.clone(),
                                side: fill.side,
                                quantity: fill.quantity,
                                order_type: crate::broker::OrderType::Market,
                                expected_price: None,
                                stop_loss: None,
                                take_profits: Vec::new(),
                            },
                            false,
                            String::new(),
                        ),
                    };
                    let target = |p: OrderPurpose| {
                        order
                            .take_profits
                            .iter()
                            .find(|t| t.purpose == p)
                            .map(|t| t.price)
                    };
                    self.open.insert(
                        kp,
                        ks,
                        OpenTrade {
                            broker: broker.to_string(),
                            pipeline: fill.pipeline.clone(),
                            symbol: fill.symbol.clone(),
                            side: if fill.side == Side::Buy {
                                PositionSide::Long
                            } else {
                                PositionSide::Short
                            },
                            group: fill.client_order_id.clone(),
                            quantity: fill.quantity,
                            max_quantity: fill.quantity,
                            average_price: fill.price,
                            entry_time: fill.ts,
                            stop_loss: order.stop_loss,
                            initial_stop: order.stop_loss,
                            target_1: target(OrderPurpose::Target1),
                            target_2: target(OrderPurpose::Target2),
                            fees: fill.commission,
                            realized: Decimal::ZERO,
                            exit_quantity: Decimal::ZERO,
                            exit_value: Decimal::ZERO,
                            target_1_hit: false,
                            move_stop_to_breakeven: move_be,
                            bars_held: 0,
                            mode,
                        },
                    );
                }
            }
            return follow;
        }
        let Some(t) = self.open.get_mut(kp, ks) else {
            return follow;
        };
        let qty = fill.quantity.min(t.quantity);
        let direction = match t.side {
            PositionSide::Long => Decimal::ONE,
            PositionSide::Short => Decimal::NEGATIVE_ONE,
        };
        t.realized += (fill.price - t.average_price) * qty * direction;
        t.fees += fill.commission;
        t.quantity -= qty;
        t.exit_quantity += qty;
        t.exit_value += fill.price * qty;
        if fill.purpose == OrderPurpose::Target1 {
            t.target_1_hit = true;
            if t.move_stop_to_breakeven && t.quantity > Decimal::ZERO && t.stop_loss.is_some() {
                t.stop_loss = Some(t.average_price);
                // The stop of the bracket whose target filled (with pyramiding, each entry
                // has its own bracket).
                let entry = fill.client_order_id.strip_suffix("-t1").unwrap_or(&t.group);
                follow.push(FollowUp::ReplaceStop {
                    client_order_id: bracket_leg_id(entry, OrderPurpose::StopLoss),
                    price: t.average_price,
                    quantity: t.quantity,
                });
            }
        }
        if t.quantity.is_zero() {
            let Some(t) = self.open.remove(kp, ks) else {
                return follow;
            };
            follow.push(FollowUp::CancelGroup(t.group.clone()));
            let exit_price = if t.exit_quantity.is_zero() {
                Decimal::ZERO
            } else {
                (t.exit_value / t.exit_quantity).round_dp(6)
            };
            self.closed.push(TradeRecord {
                pipeline: t.pipeline,
                symbol: t.symbol,
                side: t.side,
                entry_time: t.entry_time,
                exit_time: fill.ts,
                entry_price: t.average_price.round_dp(6),
                exit_price,
                quantity: t.max_quantity,
                stop_loss: t.initial_stop.or(t.stop_loss),
                final_stop: t.stop_loss,
                target_1: t.target_1,
                target_2: t.target_2,
                exit_reason: fill.purpose,
                pnl: (t.realized - t.fees).round_dp(2),
                fees: t.fees.round_dp(4),
                mode: t.mode,
            });
        }
        follow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{OrderType, TakeProfit};
    use rust_decimal::dec;

    fn fill(
        id: &str,
        purpose: OrderPurpose,
        side: Side,
        qty: Decimal,
        price: Decimal,
        ts: i64,
    ) -> Fill {
        Fill {
            client_order_id: id.into(),
            broker_order_id: id.into(),
            fill_id: format!("{id}-{ts}"),
            pipeline: "p".into(),
            symbol: "AAPL".into(),
            side,
            quantity: qty,
            price,
            commission: dec!(1),
            purpose,
            ts,
        }
    }

    #[test]
    fn a_long_trade_with_partial_exit_and_breakeven() {
        let mut book = Book::new();
        let entry = EntryOrder {
            client_order_id: "zt-e".into(),
            pipeline: "p".into(),
            symbol: "AAPL".into(),
            side: Side::Buy,
            quantity: dec!(100),
            order_type: OrderType::Market,
            expected_price: None,
            stop_loss: Some(dec!(95)),
            take_profits: vec![
                TakeProfit {
                    price: dec!(110),
                    quantity: dec!(50),
                    purpose: OrderPurpose::Target1,
                },
                TakeProfit {
                    price: dec!(120),
                    quantity: dec!(50),
                    purpose: OrderPurpose::Target2,
                },
            ],
        };
        book.expect_entry(&entry, true, "simulation");
        assert!(
            book.on_fill(
                "sim",
                &fill(
                    "zt-e",
                    OrderPurpose::Entry,
                    Side::Buy,
                    dec!(100),
                    dec!(100),
                    10
                )
            )
            .is_empty()
        );
        assert_eq!(book.view("p", "AAPL").unwrap().quantity, dec!(100));
        let f = book.on_fill(
            "sim",
            &fill(
                "zt-e-t1",
                OrderPurpose::Target1,
                Side::Sell,
                dec!(50),
                dec!(110),
                20,
            ),
        );
        assert_eq!(
            f,
            vec![FollowUp::ReplaceStop {
                client_order_id: "zt-e-sl".into(),
                price: dec!(100),
                quantity: dec!(50)
            }]
        );
        let f = book.on_fill(
            "sim",
            &fill(
                "zt-e-sl",
                OrderPurpose::StopLoss,
                Side::Sell,
                dec!(50),
                dec!(100),
                30,
            ),
        );
        assert_eq!(f, vec![FollowUp::CancelGroup("zt-e".into())]);
        let trades = book.drain_closed();
        assert_eq!(trades.len(), 1);
        let t = &trades[0];
        // +500 on the first half, 0 on the second, 3 USD of commissions.
        assert_eq!(t.pnl, dec!(497));
        assert_eq!(t.exit_price, dec!(105));
        assert_eq!(t.exit_reason, OrderPurpose::StopLoss);
        assert_eq!(t.quantity, dec!(100));
        assert!(book.is_empty());
    }

    #[test]
    fn a_short_trade_stopped_out() {
        let mut book = Book::new();
        book.on_fill(
            "sim",
            &fill("e", OrderPurpose::Entry, Side::Sell, dec!(10), dec!(50), 1),
        );
        book.on_fill(
            "sim",
            &fill(
                "e-sl",
                OrderPurpose::StopLoss,
                Side::Buy,
                dec!(10),
                dec!(52),
                2,
            ),
        );
        let t = &book.drain_closed()[0];
        assert_eq!(t.side, PositionSide::Short);
        assert_eq!(t.pnl, dec!(-22));
    }
}
