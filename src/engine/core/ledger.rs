//! The account side of the trading core, without I/O: every pipeline's open trades and
//! pending entries (the [`Book`]), the working orders at the brokers, the halts, the
//! realized P&L per pipeline, the trading day and the equity it started with, and the
//! last balances the brokers reported.
//!
//! Fed with broker events ([`Ledger::apply`]), it answers what must happen next (move a
//! stop to breakeven, cancel what is left of a bracket, place legs a broker does not place
//! itself) and what the store must record. The backtest and the daemon hold one each and
//! drive it the same way (see [`crate::runtime::account`]).

use super::Intent;
use crate::broker::{
    Account, BrokerEvent, EntryOrder, ExitOrder, Fill, OrderPurpose, OrderState, OrderType,
    Position, PositionSide, bracket_leg_id, client_order_id,
};
use crate::domain::{Halt, Scope};
use crate::engine::book::{Book, FollowUp, OpenTrade, PairMap};
use crate::engine::state::PositionView;
use crate::engine::trades::TradeRecord;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// The purposes of orders that close a whole position (a second one is not sent while one
/// works).
pub const CLOSING_PURPOSES: [OrderPurpose; 5] = [
    OrderPurpose::ExitRule,
    OrderPurpose::EndOfWindow,
    OrderPurpose::Emergency,
    OrderPurpose::RiskFlatten,
    OrderPurpose::PipelineRemoved,
];

/// An order that can still execute, and the broker that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkingOrder {
    /// The `[brokers.<name>]` name.
    pub broker: String,
    /// Its state as last reported.
    pub order: OrderState,
}

/// The last balances and positions a broker reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountState {
    /// Balances, USD (`None` until the first report).
    pub account: Option<Account>,
    /// Positions at market.
    pub positions: Vec<Position>,
}

/// What one broker event changed, for the store and the logs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// Orders to send because of the event (stop to breakeven, cancel the rest of a
    /// bracket, legs of a broker without native brackets), in order.
    pub follow_ups: Vec<Intent>,
    /// For a fill: the pipeline's open trade in the symbol after it (`None`: flat).
    pub position: Option<Option<OpenTrade>>,
    /// Trades the event closed.
    pub closed: Vec<TradeRecord>,
}

/// What a flatten of a scope sends: cancels first, then market exits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlattenPlan {
    /// Working orders in scope to cancel (entries not filled yet, bracket legs, earlier
    /// exits): `(broker, client order id)`.
    pub cancels: Vec<(String, String)>,
    /// One market exit per open trade in scope: `(broker, order)`.
    pub exits: Vec<(String, ExitOrder)>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Ledger {
    book: Book,
    orders: crate::FastMap<String, WorkingOrder>,
    /// Client order ids of the working orders by (pipeline, symbol).
    by_position: PairMap<Vec<String>>,
    halts: BTreeMap<String, Halt>,
    realized: crate::FastMap<String, Decimal>,
    day: Option<NaiveDate>,
    day_start_equity: BTreeMap<String, Decimal>,
    accounts: BTreeMap<String, AccountState>,
    /// Brokers that place bracket legs themselves.
    native_brackets: BTreeMap<String, bool>,
    /// Whether the broker places bracket legs of crypto pairs too.
    crypto_brackets: BTreeMap<String, bool>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Declares broker `broker` and whether it places bracket legs itself.
    pub fn add_broker(&mut self, broker: &str, native_brackets: bool) {
        self.native_brackets
            .insert(broker.to_string(), native_brackets);
        self.crypto_brackets
            .insert(broker.to_string(), native_brackets);
        self.accounts.entry(broker.to_string()).or_default();
    }

    // ----- the book -----

    /// The book (open trades and pending entries).
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// Re-adopts an open trade (at start, from the store reconciled with the broker).
    pub fn adopt(&mut self, trade: OpenTrade) {
        self.book.adopt(trade);
    }

    /// Forgets the open trade of `pipeline` in `symbol`.
    pub fn forget(&mut self, pipeline: &str, symbol: &str) -> Option<OpenTrade> {
        self.book.remove(pipeline, symbol)
    }

    /// Remembers an entry before it is submitted, so that its fills open a trade with its
    /// stop and targets, and so that it counts as a position until it is settled.
    pub fn expect_entry(&mut self, order: &EntryOrder, move_stop_to_breakeven: bool, mode: &str) {
        self.book.expect_entry(order, move_stop_to_breakeven, mode);
    }

    /// Sets the trade-manager options of `pipeline`'s pending entries (see
    /// [`Book::configure_pending`]).
    pub fn configure_pending(&mut self, pipeline: &str, move_stop_to_breakeven: bool, mode: &str) {
        self.book
            .configure_pending(pipeline, move_stop_to_breakeven, mode);
    }

    /// Forgets a pending entry (its submission failed).
    pub fn drop_entry(&mut self, client_order_id: &str) {
        self.book.drop_entry(client_order_id);
    }

    /// The open trade of `pipeline` in `symbol`.
    pub fn trade(&self, pipeline: &str, symbol: &str) -> Option<&OpenTrade> {
        self.book.get(pipeline, symbol)
    }

    /// Every open trade.
    pub fn open_trades(&self) -> impl Iterator<Item = &OpenTrade> {
        self.book.open_trades()
    }

    /// Open trades of `pipeline`.
    pub fn open_trade_count(&self, pipeline: &str) -> usize {
        self.book.open_trades_of(pipeline).count()
    }

    /// The open trades of `pipeline`, by symbol.
    pub fn open_trades_of(&self, pipeline: &str) -> impl Iterator<Item = &OpenTrade> {
        self.book.open_trades_of(pipeline)
    }

    /// The position view of `pipeline` in `symbol` for strategies and the trade manager,
    /// with whether a closing order already works.
    pub fn view(&self, pipeline: &str, symbol: &str) -> Option<PositionView> {
        let mut view = self.book.view(pipeline, symbol)?;
        view.exit_pending = self.working(pipeline, symbol).any(|w| {
            CLOSING_PURPOSES.contains(&w.order.purpose) && w.order.side == view.side.exit_side()
        });
        Some(view)
    }

    /// The entry of `pipeline` in `symbol` sent and not settled yet (it counts as a
    /// position: no second entry without pyramiding, and its notional counts against the
    /// risk limits).
    pub fn pending_entry(&self, pipeline: &str, symbol: &str) -> Option<&EntryOrder> {
        self.book.pending_entry(pipeline, symbol)
    }

    /// Counts a bar of the strategy timeframe for the open trade (`bars_held`).
    pub fn bar_closed(&mut self, pipeline: &str, symbol: &str) {
        self.book.bar_closed(pipeline, symbol);
    }

    /// Realized P&L after fees of `pipeline`'s closed trades, USD.
    pub fn realized(&self, pipeline: &str) -> Decimal {
        self.realized.get(pipeline).copied().unwrap_or_default()
    }

    /// Adds a trade closed before this ledger started (from the store) to the realized P&L.
    pub fn add_realized(&mut self, pipeline: &str, pnl: Decimal) {
        *self.realized.entry(pipeline.to_string()).or_default() += pnl;
    }

    /// Realized P&L of every pipeline, USD.
    pub fn realized_all(&self) -> impl Iterator<Item = (&str, Decimal)> {
        self.realized.iter().map(|(p, v)| (p.as_str(), *v))
    }

    // ----- working orders -----

    /// Working orders of `pipeline` in `symbol`.
    pub fn working(&self, pipeline: &str, symbol: &str) -> impl Iterator<Item = &WorkingOrder> {
        self.by_position
            .get(pipeline, symbol)
            .into_iter()
            .flatten()
            .filter_map(|id| self.orders.get(id))
    }

    /// Every working order.
    pub fn working_orders(&self) -> impl Iterator<Item = &WorkingOrder> {
        self.orders.values()
    }

    /// A working order by client order id.
    pub fn working_order(&self, client_order_id: &str) -> Option<&WorkingOrder> {
        self.orders.get(client_order_id)
    }

    /// Working orders of `pipeline` (entries, legs, exits).
    pub fn working_count(&self, pipeline: &str) -> usize {
        self.by_position.values_of(pipeline).map(Vec::len).sum()
    }

    /// Records `order` of `broker` as working (a submission the broker accepted), or
    /// forgets it when it is no longer open.
    pub fn track(&mut self, broker: &str, order: &OrderState) {
        let id = order.client_order_id.clone();
        if order.status.is_open() {
            match self.by_position.get_mut(&order.pipeline, &order.symbol) {
                Some(ids) => {
                    if !ids.contains(&id) {
                        ids.push(id.clone());
                    }
                }
                None => {
                    self.by_position
                        .insert(&order.pipeline, &order.symbol, vec![id.clone()]);
                }
            }
            self.orders.insert(
                id,
                WorkingOrder {
                    broker: broker.to_string(),
                    order: order.clone(),
                },
            );
        } else if let Some(w) = self.orders.remove(&id) {
            let (p, s) = (w.order.pipeline.as_str(), w.order.symbol.as_str());
            if let Some(ids) = self.by_position.get_mut(p, s) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    self.by_position.remove(p, s);
                }
            }
        }
    }

    /// Cancels for the working orders of bracket group `group` (the legs of entry
    /// `group`, and the entry itself while a rest of it works), except `except`.
    pub fn cancel_group(&self, group: &str, except: Option<&str>) -> Vec<Intent> {
        let mut ids: Vec<&WorkingOrder> = self
            .orders
            .values()
            .filter(|w| {
                (w.order.oco_group.as_deref() == Some(group) || w.order.client_order_id == group)
                    && Some(w.order.client_order_id.as_str()) != except
            })
            .collect();
        ids.sort_by(|a, b| a.order.client_order_id.cmp(&b.order.client_order_id));
        ids.into_iter()
            .map(|w| Intent::Cancel {
                broker: w.broker.clone(),
                client_order_id: w.order.client_order_id.clone(),
            })
            .collect()
    }

    // ----- broker events -----

    /// Books one event of broker `broker`; returns what it changed and what must follow.
    pub fn apply(&mut self, broker: &str, event: &BrokerEvent) -> Applied {
        let mut applied = Applied::default();
        let order = event.order();
        self.track(broker, order);
        match event {
            BrokerEvent::Fill { fill, order } => {
                self.apply_fill(broker, fill, order, &mut applied);
            }
            BrokerEvent::Cancelled { order, .. }
            | BrokerEvent::Rejected { order, .. }
            | BrokerEvent::Expired { order } => {
                if order.purpose == OrderPurpose::Entry {
                    self.book.drop_entry(&order.client_order_id);
                }
            }
            BrokerEvent::Accepted { .. } | BrokerEvent::Replaced { .. } => {}
        }
        applied
    }

    fn apply_fill(&mut self, broker: &str, fill: &Fill, order: &OrderState, out: &mut Applied) {
        let plan = (fill.purpose == OrderPurpose::Entry)
            .then(|| self.book.pending_plan(&fill.client_order_id).cloned())
            .flatten();
        for follow in self.book.on_fill(broker, fill) {
            match follow {
                FollowUp::ReplaceStop {
                    client_order_id,
                    price,
                    quantity,
                } => {
                    if self.orders.contains_key(&client_order_id) {
                        out.follow_ups.push(Intent::ReplaceStop {
                            broker: broker.to_string(),
                            client_order_id,
                            price,
                            quantity,
                        });
                    }
                }
                FollowUp::CancelGroup(group) => {
                    out.follow_ups
                        .extend(self.cancel_group(&group, Some(&fill.client_order_id)));
                }
            }
        }
        // A stop that fills cancels the rest of its bracket (one-cancels-other): brokers
        // with native brackets do it themselves, for the others the engine does.
        if fill.purpose == OrderPurpose::StopLoss
            && !self.native(broker, &fill.symbol)
            && let Some(group) = &order.oco_group
        {
            let already: Vec<String> = out
                .follow_ups
                .iter()
                .filter_map(|i| match i {
                    Intent::Cancel {
                        client_order_id, ..
                    } => Some(client_order_id.clone()),
                    _ => None,
                })
                .collect();
            for cancel in self.cancel_group(group, Some(&fill.client_order_id)) {
                if let Intent::Cancel {
                    client_order_id, ..
                } = &cancel
                    && !already.contains(client_order_id)
                {
                    out.follow_ups.push(cancel);
                }
            }
        }
        // Legs of an entry at a broker that does not place them itself.
        if fill.purpose == OrderPurpose::Entry
            && !self.native(broker, &fill.symbol)
            && let Some(plan) = plan
        {
            out.follow_ups
                .extend(separate_legs(broker, &plan, order, fill));
        }
        if !order.status.is_open() && fill.purpose == OrderPurpose::Entry {
            self.book.drop_entry(&fill.client_order_id);
        }
        let closed = self.book.drain_closed();
        for t in &closed {
            *self.realized.entry(t.pipeline.clone()).or_default() += t.pnl;
        }
        out.closed = closed;
        out.position = Some(self.book.get(&fill.pipeline, &fill.symbol).cloned());
    }

    /// Records that `broker` does not place bracket legs for crypto pairs (Alpaca): the
    /// engine places them as for a broker without native brackets.
    pub fn set_crypto_brackets(&mut self, broker: &str, native: bool) {
        self.crypto_brackets.insert(broker.to_string(), native);
    }

    fn native(&self, broker: &str, symbol: &str) -> bool {
        let map = if crate::market::alpaca::is_crypto(symbol) {
            &self.crypto_brackets
        } else {
            &self.native_brackets
        };
        map.get(broker).copied().unwrap_or(true)
    }

    // ----- flatten -----

    /// The orders that close every position in `scope` at market now: cancels of every
    /// working order in scope (pending entries included, so nothing opens afterwards),
    /// then one market exit per open trade. `key` makes the client order ids deterministic
    /// (the time of the flatten and its purpose).
    pub fn flatten(&self, scope: &Scope, purpose: OrderPurpose, key: &str) -> FlattenPlan {
        let mut plan = FlattenPlan::default();
        let mut cancels: Vec<&WorkingOrder> = self
            .orders
            .values()
            .filter(|w| scope.covers(&w.order.pipeline, &w.order.symbol))
            .collect();
        cancels.sort_by(|a, b| a.order.client_order_id.cmp(&b.order.client_order_id));
        plan.cancels = cancels
            .into_iter()
            .map(|w| (w.broker.clone(), w.order.client_order_id.clone()))
            .collect();
        for t in self
            .book
            .open_trades()
            .filter(|t| scope.covers(&t.pipeline, &t.symbol))
        {
            let order = ExitOrder {
                client_order_id: client_order_id(&t.pipeline, &t.symbol, key, purpose.as_str()),
                pipeline: t.pipeline.clone(),
                symbol: t.symbol.clone(),
                position_side: t.side,
                quantity: t.quantity,
                order_type: OrderType::Market,
                purpose,
                oco_group: Some(t.group.clone()),
            };
            plan.exits.push((t.broker.clone(), order));
        }
        plan
    }

    // ----- halts -----

    /// Latches `halt` (replacing one on the same scope); `true` when the scope was not
    /// halted before.
    pub fn halt(&mut self, halt: Halt) -> bool {
        self.halts.insert(halt.scope.key(), halt).is_none()
    }

    /// Clears the halts `scope` covers: `all` clears every halt, narrower ones included; a
    /// pipeline or a symbol clears its own. Returns the halts cleared.
    pub fn resume(&mut self, scope: &Scope) -> Vec<Halt> {
        let keys: Vec<String> = self
            .halts
            .iter()
            .filter(|(_, h)| *scope == Scope::All || h.scope == *scope)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.halts.remove(&k))
            .collect()
    }

    /// Why entries of `pipeline` in `symbol` are halted, if they are.
    pub fn halted(&self, pipeline: &str, symbol: &str) -> Option<String> {
        self.halts
            .values()
            .find(|h| h.scope.covers(pipeline, symbol) && self.holds(h))
            .map(|h| format!("halt on {}: {}", h.scope, h.reason))
    }

    /// Why `pipeline` is halted as a whole (a halt on all or on the pipeline), if it is.
    pub fn pipeline_halt(&self, pipeline: &str) -> Option<&Halt> {
        self.halts.values().find(|h| {
            (h.scope == Scope::All || h.scope == Scope::Pipeline(pipeline.to_string()))
                && self.holds(h)
        })
    }

    fn holds(&self, h: &Halt) -> bool {
        self.day.is_none_or(|d| h.holds_on(d))
    }

    /// Every halt that holds.
    pub fn halts(&self) -> Vec<Halt> {
        self.halts
            .values()
            .filter(|h| self.holds(h))
            .cloned()
            .collect()
    }

    // ----- the trading day and balances -----

    /// Starts trading day `day` when it is later than the current one: the equity of each
    /// broker now becomes its day-start equity, and halts that ended are dropped. Returns
    /// whether a new day started.
    pub fn roll_day(&mut self, day: NaiveDate) -> bool {
        if self.day.is_some_and(|d| day <= d) {
            return false;
        }
        self.day = Some(day);
        self.day_start_equity = self
            .accounts
            .iter()
            .filter_map(|(b, s)| s.account.map(|a| (b.clone(), a.equity)))
            .collect();
        self.halts.retain(|_, h| h.holds_on(day));
        true
    }

    /// The current trading day.
    pub fn day(&self) -> Option<NaiveDate> {
        self.day
    }

    /// Records what broker `broker` reports now. Answers the positions it held before
    /// (empty for a broker not reported yet), for the caller to reuse their allocation.
    pub fn set_account(
        &mut self,
        broker: &str,
        account: Account,
        positions: Vec<Position>,
    ) -> Vec<Position> {
        let before = match self.accounts.get_mut(broker) {
            Some(known) => {
                known.account = Some(account);
                std::mem::replace(&mut known.positions, positions)
            }
            None => {
                self.accounts.insert(
                    broker.to_string(),
                    AccountState {
                        account: Some(account),
                        positions,
                    },
                );
                Vec::new()
            }
        };
        if self.day.is_some() && !self.day_start_equity.contains_key(broker) {
            self.day_start_equity
                .insert(broker.to_string(), account.equity);
        }
        before
    }

    /// The last balances of `broker`.
    pub fn account(&self, broker: &str) -> Option<Account> {
        self.accounts.get(broker).and_then(|s| s.account)
    }

    /// The last positions of `broker`.
    pub fn positions(&self, broker: &str) -> &[Position] {
        self.accounts
            .get(broker)
            .map_or(&[][..], |s| s.positions.as_slice())
    }

    /// The positions of `broker` as the risk manager counts them: the broker's positions at
    /// market, plus every pending entry at its expected price (an entry sent and not filled
    /// yet counts against the size and capital limits).
    pub fn risk_positions(&self, broker: &str) -> Vec<Position> {
        let mut out = self.positions(broker).to_vec();
        for e in self.book.pending_entries() {
            let working = self.orders.get(&e.client_order_id);
            if working.is_some_and(|w| w.broker != broker) {
                continue;
            }
            let filled = working.map_or(Decimal::ZERO, |w| w.order.filled_quantity);
            let rest = e.quantity - filled;
            if rest <= Decimal::ZERO {
                continue;
            }
            let price = e
                .expected_price
                .or_else(|| self.trade(&e.pipeline, &e.symbol).map(|t| t.average_price))
                .unwrap_or_default();
            out.push(Position {
                pipeline: e.pipeline.clone(),
                symbol: e.symbol.clone(),
                quantity: e.side.sign() * rest,
                average_price: price,
                market_price: price,
            });
        }
        out
    }

    /// The equity of `broker` when the trading day began, USD.
    pub fn day_start_equity(&self, broker: &str) -> Option<Decimal> {
        self.day_start_equity.get(broker).copied()
    }

    /// The account's profit or loss of the day so far, USD (0 before the first report).
    pub fn day_pnl(&self, broker: &str) -> Decimal {
        match (self.account(broker), self.day_start_equity(broker)) {
            (Some(a), Some(start)) => a.equity - start,
            _ => Decimal::ZERO,
        }
    }
}

/// The stop and take-profit legs of an entry fill, as separate exit orders, for a broker
/// that does not place bracket legs itself: for the shares of this fill, with the bracket
/// ids (`<entry>-sl`, `-t1`, `-t2`; a later partial fill adds `-<fill id>`), in the entry's
/// OCO group. Target quantities scale with the fill like the simulated broker's legs.
fn separate_legs(broker: &str, plan: &EntryOrder, order: &OrderState, fill: &Fill) -> Vec<Intent> {
    let position_side = match plan.side {
        crate::broker::Side::Buy => PositionSide::Long,
        crate::broker::Side::Sell => PositionSide::Short,
    };
    let first = order.filled_quantity == fill.quantity;
    let suffix = |id: String| {
        if first {
            id
        } else {
            format!("{id}-{}", fill.fill_id)
        }
    };
    let mut legs = Vec::new();
    let leg = |id: String, order_type: OrderType, purpose: OrderPurpose, quantity: Decimal| {
        Intent::Submit {
            broker: broker.to_string(),
            order: crate::broker::Submit::Exit(ExitOrder {
                client_order_id: id,
                pipeline: plan.pipeline.clone(),
                symbol: plan.symbol.clone(),
                position_side,
                quantity,
                order_type,
                purpose,
                oco_group: Some(plan.client_order_id.clone()),
            }),
            execution_id: None,
        }
    };
    if let Some(stop) = plan.stop_loss {
        legs.push(leg(
            suffix(bracket_leg_id(
                &plan.client_order_id,
                OrderPurpose::StopLoss,
            )),
            OrderType::Stop { price: stop },
            OrderPurpose::StopLoss,
            fill.quantity,
        ));
    }
    let total = plan.quantity;
    let mut cumulative = Decimal::ZERO;
    let mut placed = Decimal::ZERO;
    for tp in &plan.take_profits {
        cumulative += tp.quantity;
        let scaled_numerator = fill.quantity * cumulative;
        let scaled = (scaled_numerator - scaled_numerator % total) / total;
        let shares = scaled - placed;
        placed = scaled;
        if shares > Decimal::ZERO {
            legs.push(leg(
                suffix(bracket_leg_id(&plan.client_order_id, tp.purpose)),
                OrderType::Limit { price: tp.price },
                tp.purpose,
                shares,
            ));
        }
    }
    legs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{OrderStatus, OrderType, Side, Submit, TakeProfit};
    use rust_decimal::dec;

    fn state(
        id: &str,
        purpose: OrderPurpose,
        side: Side,
        qty: Decimal,
        filled: Decimal,
    ) -> OrderState {
        OrderState {
            client_order_id: id.into(),
            broker_order_id: format!("b-{id}"),
            pipeline: "p".into(),
            symbol: "AAPL".into(),
            side,
            quantity: qty,
            filled_quantity: filled,
            average_price: dec!(100),
            order_type: OrderType::Market,
            purpose,
            oco_group: None,
            status: if filled == qty {
                OrderStatus::Filled
            } else if filled.is_zero() {
                OrderStatus::Accepted
            } else {
                OrderStatus::PartiallyFilled
            },
            reason: None,
            created_at: 0,
        }
    }

    fn fill(id: &str, purpose: OrderPurpose, side: Side, qty: Decimal, price: Decimal) -> Fill {
        Fill {
            client_order_id: id.into(),
            broker_order_id: format!("b-{id}"),
            fill_id: format!("f-{id}-{qty}"),
            pipeline: "p".into(),
            symbol: "AAPL".into(),
            side,
            quantity: qty,
            price,
            commission: Decimal::ZERO,
            purpose,
            ts: 10,
        }
    }

    fn plan() -> EntryOrder {
        EntryOrder {
            client_order_id: "e".into(),
            pipeline: "p".into(),
            symbol: "AAPL".into(),
            side: Side::Buy,
            quantity: dec!(100),
            order_type: OrderType::Market,
            expected_price: Some(dec!(100)),
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
        }
    }

    #[test]
    fn a_broker_without_brackets_gets_the_legs_as_separate_exits() {
        let mut l = Ledger::new();
        l.add_broker("plain", false);
        l.expect_entry(&plan(), true, "paper");
        let entry = state(
            "e",
            OrderPurpose::Entry,
            Side::Buy,
            dec!(100),
            Decimal::ZERO,
        );
        l.apply("plain", &BrokerEvent::Accepted { order: entry });
        // A partial fill of 40: legs for 40 shares (stop 40, targets 20 + 20).
        let applied = l.apply(
            "plain",
            &BrokerEvent::Fill {
                fill: fill("e", OrderPurpose::Entry, Side::Buy, dec!(40), dec!(100)),
                order: state("e", OrderPurpose::Entry, Side::Buy, dec!(100), dec!(40)),
            },
        );
        let legs: Vec<(String, OrderPurpose, Decimal, OrderType)> = applied
            .follow_ups
            .iter()
            .filter_map(|i| match i {
                Intent::Submit {
                    order: Submit::Exit(x),
                    ..
                } => Some((
                    x.client_order_id.clone(),
                    x.purpose,
                    x.quantity,
                    x.order_type,
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            legs,
            vec![
                (
                    "e-sl".into(),
                    OrderPurpose::StopLoss,
                    dec!(40),
                    OrderType::Stop { price: dec!(95) }
                ),
                (
                    "e-t1".into(),
                    OrderPurpose::Target1,
                    dec!(20),
                    OrderType::Limit { price: dec!(110) }
                ),
                (
                    "e-t2".into(),
                    OrderPurpose::Target2,
                    dec!(20),
                    OrderType::Limit { price: dec!(120) }
                ),
            ]
        );
        // The entry is still pending for its rest, and counts at its expected price.
        assert!(l.pending_entry("p", "AAPL").is_some());
        let risk = l.risk_positions("plain");
        assert_eq!(risk.len(), 1);
        assert_eq!(risk[0].quantity, dec!(60));
        // A broker with native brackets places its own legs: no follow-up.
        let mut n = Ledger::new();
        n.add_broker("sim", true);
        n.expect_entry(&plan(), true, "simulation");
        let applied = n.apply(
            "sim",
            &BrokerEvent::Fill {
                fill: fill("e", OrderPurpose::Entry, Side::Buy, dec!(100), dec!(100)),
                order: state("e", OrderPurpose::Entry, Side::Buy, dec!(100), dec!(100)),
            },
        );
        assert!(applied.follow_ups.is_empty(), "{:?}", applied.follow_ups);
        assert!(
            n.pending_entry("p", "AAPL").is_none(),
            "a filled entry is settled"
        );
    }

    #[test]
    fn a_stop_fill_cancels_the_rest_of_its_bracket_when_the_broker_does_not() {
        let mut l = Ledger::new();
        l.add_broker("plain", false);
        l.expect_entry(&plan(), true, "paper");
        l.apply(
            "plain",
            &BrokerEvent::Fill {
                fill: fill("e", OrderPurpose::Entry, Side::Buy, dec!(100), dec!(100)),
                order: state("e", OrderPurpose::Entry, Side::Buy, dec!(100), dec!(100)),
            },
        );
        for (id, purpose, qty) in [
            ("e-sl", OrderPurpose::StopLoss, dec!(100)),
            ("e-t1", OrderPurpose::Target1, dec!(50)),
            ("e-t2", OrderPurpose::Target2, dec!(50)),
        ] {
            let mut o = state(id, purpose, Side::Sell, qty, Decimal::ZERO);
            o.oco_group = Some("e".into());
            l.apply("plain", &BrokerEvent::Accepted { order: o });
        }
        assert_eq!(l.working("p", "AAPL").count(), 3);
        let mut stop = state(
            "e-sl",
            OrderPurpose::StopLoss,
            Side::Sell,
            dec!(100),
            dec!(100),
        );
        stop.oco_group = Some("e".into());
        let applied = l.apply(
            "plain",
            &BrokerEvent::Fill {
                fill: fill(
                    "e-sl",
                    OrderPurpose::StopLoss,
                    Side::Sell,
                    dec!(100),
                    dec!(95),
                ),
                order: stop,
            },
        );
        let mut cancels: Vec<String> = applied
            .follow_ups
            .iter()
            .filter_map(|i| match i {
                Intent::Cancel {
                    client_order_id, ..
                } => Some(client_order_id.clone()),
                _ => None,
            })
            .collect();
        cancels.sort();
        assert_eq!(cancels, vec!["e-t1", "e-t2"]);
        assert_eq!(applied.closed.len(), 1);
        assert_eq!(l.realized("p"), dec!(-500));
        assert_eq!(applied.position, Some(None));
    }

    #[test]
    fn halts_hold_by_scope_and_day_and_resume_all_clears_every_one() {
        let mut l = Ledger::new();
        let day = chrono::NaiveDate::from_ymd_opt(2012, 1, 3).unwrap();
        l.roll_day(day);
        let halt = |scope: Scope, until| Halt {
            scope,
            reason: "r".into(),
            cause: crate::domain::HaltCause::Manual,
            since: 0,
            until,
        };
        l.halt(halt(Scope::Symbol("AAPL".into()), None));
        l.halt(halt(Scope::Pipeline("q".into()), Some(day)));
        assert!(l.halted("p", "AAPL").is_some());
        assert!(l.halted("p", "MSFT").is_none());
        assert!(l.halted("q", "MSFT").is_some());
        // The pipeline halt ends with its day.
        l.roll_day(day.succ_opt().unwrap());
        assert!(l.halted("q", "MSFT").is_none());
        // Resuming a pipeline does not touch a symbol halt; resuming all does.
        assert!(l.resume(&Scope::Pipeline("p".into())).is_empty());
        assert!(l.halted("p", "AAPL").is_some());
        assert_eq!(l.resume(&Scope::All).len(), 1);
        assert!(l.halts().is_empty());
    }
}
