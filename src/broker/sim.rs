//! The simulated broker: fills orders against bars with slippage, commissions, bracket
//! children, reduce-only exits, and seeded partial fills and rejections.
//!
//! # Execution model
//!
//! Everything happens in [`SimBroker::on_bar`], one closed bar of one symbol at a time. An
//! order submitted at Unix time `t` takes part in the first bar of its symbol whose `ts`
//! (period start) is `>= t`, and in every later one while it is open. Within a bar:
//!
//! 1. **Market orders** fill at the bar's open, in submission order. Slippage goes against
//!    the trader: buys at `open × (1 + slippage_pct/100)`, sells at
//!    `open × (1 − slippage_pct/100)`.
//! 2. **Limit and stop entries** fill when the bar reaches their price (same rules as exits
//!    below).
//! 3. **Stops** (exits) trigger when the bar reaches the stop price: a sell stop when
//!    `low <= stop`, a buy stop when `high >= stop`. They fill at the stop price, or at the
//!    open when the bar opens beyond it (a gap), with slippage against the trader in both
//!    cases (a triggered stop is a market order).
//! 4. **Limits** (take-profit targets) fill when the bar reaches their price: a sell limit when
//!    `high >= limit`, a buy limit when `low <= limit`. They fill at the limit price, or at the
//!    open when the bar opens beyond it in the trader's favour; no slippage. When a stop of a
//!    (pipeline, symbol) position executed in this bar, none of that position's limits execute
//!    in this bar (the conservative rule: with only OHLC we cannot know which came first, so
//!    we assume the stop did).
//! 5. The bar's close marks the symbol's positions.
//!
//! # Brackets
//!
//! When an entry fills (fully or partly) for `q` shares, the broker places its children
//! for those `q` shares, working from the same bar (the rest of the entry bar's range is
//! checked, so a stop can be hit in the bar the entry filled in):
//!
//! * `{entry}-sl`: a stop exit at `stop_loss`, purpose [`OrderPurpose::StopLoss`];
//! * `{entry}-t1`, `{entry}-t2`, …: a limit exit per take-profit leg, with the leg's purpose.
//!   Leg `k` gets `floor(q × C_k / quantity) − floor(q × C_{k−1} / quantity)` shares, `C_k`
//!   being the legs' cumulative quantity: the first leg gets `floor(q × leg / quantity)` and
//!   the last leg the rest. Legs that scale to zero shares are not placed.
//!
//! All children share the OCO group `{entry}` (the entry's client order id). A stop fill
//! cancels the rest of its group; a limit fill does not. Children are never rejected.
//!
//! # Positions and reduce-only exits
//!
//! Positions are kept per (pipeline, symbol), so several pipelines can hold the same symbol;
//! long (positive quantity) and short (negative) are supported. An exit never closes more than
//! the position of its pipeline and symbol on its side and never flips it: at execution the
//! fill is cut to the position (the rest is cancelled), and an exit with no position on its
//! side is cancelled. After every fill the open exits of that position are kept consistent:
//! each is cut to the position's size, and all of them are cancelled when the position is
//! flat. An entry against an open position of the same pipeline (a buy while short) is
//! cancelled when it would execute.
//!
//! # Money
//!
//! Cash buys and sells at the fill price; commission per fill is
//! `max(min_commission, quantity × commission_per_share)`, USD. Short sales credit the
//! proceeds to cash; there is no margin model (no borrow fees, no buying-power check).
//! Equity is `cash + Σ quantity × mark`, the mark being the last bar close of the symbol (or a
//! price given to [`SimBroker::mark`]).
//!
//! Bar prices are `f64`; they become `Decimal` through [`bar_price`] (`Decimal::try_from`,
//! which drops the binary noise so `0.1` becomes `0.1`, then rounded to 6 decimal places,
//! banker's rounding). Slipped fill prices are rounded to 6 decimal places the same way.
//!
//! # Randomness
//!
//! Rejections (`reject_pct`, drawn when an order is submitted; bracket children are never
//! rejected) and partial fills (`partial_fill_pct`, drawn when a market order executes with
//! at least 2 shares; it fills a uniform 1..=q−1 shares and the rest is cancelled) come from
//! a `ChaCha8Rng` seeded with `seed`. No draw is made when the percentage is zero. The
//! generator's position is part of [`SimState`], so a restored broker continues the same
//! stream.
//!
//! # Idempotency
//!
//! Submitting a client order id the broker already has (including a rejected one) returns
//! that order's current state and creates nothing.

use crate::broker::{
    Account, BrokerError, BrokerEvent, Fill, OrderPurpose, OrderState, OrderStatus, OrderType,
    Position, PositionSide, Side, Submit, TakeProfit,
};
use crate::config::settings::SimulatedBroker;
use crate::market::Bar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use rust_decimal::dec;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

mod shared;
pub use shared::SharedSimBroker;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// Largest order quantity accepted, in shares (keeps every product of quantity and price far
/// from `Decimal`'s 28-digit limit).
pub const MAX_QUANTITY: Decimal = dec!(1_000_000_000);

/// Largest price accepted on an order or a bar, USD per share (exclusive bound).
pub const MAX_PRICE: Decimal = dec!(1_000_000_000_000);

/// Version of the [`SimState`] layout.
const STATE_FORMAT: u32 = 1;

pub use crate::broker::types::bar_price;
use crate::broker::types::in_price_range;

/// A bar whose prices are converted to `Decimal` only when an order needs them (conversion
/// costs far more than the comparisons that usually show an order is not reached). Built only
/// for bars whose four prices pass [`in_price_range`].
#[derive(Debug)]
struct BarPrices<'a> {
    bar: &'a Bar,
    open: Option<Decimal>,
    high: Option<Decimal>,
    low: Option<Decimal>,
}

impl<'a> BarPrices<'a> {
    fn new(bar: &'a Bar) -> Option<BarPrices<'a>> {
        let ok = [bar.open, bar.high, bar.low, bar.close]
            .into_iter()
            .all(in_price_range);
        ok.then_some(BarPrices {
            bar,
            open: None,
            high: None,
            low: None,
        })
    }

    fn ts(&self) -> i64 {
        self.bar.ts
    }

    fn convert(cache: &mut Option<Decimal>, raw: f64) -> Decimal {
        // In range, so the conversion cannot fail.
        *cache.get_or_insert_with(|| bar_price(raw).unwrap_or(Decimal::ZERO))
    }

    fn open(&mut self) -> Decimal {
        Self::convert(&mut self.open, self.bar.open)
    }

    fn high(&mut self) -> Decimal {
        Self::convert(&mut self.high, self.bar.high)
    }

    fn low(&mut self) -> Decimal {
        Self::convert(&mut self.low, self.bar.low)
    }

    /// Whether the exact low may be at or below `price`: `false` only when the raw low is
    /// clearly above it (by more than any conversion or 6-decimal rounding error).
    fn low_may_reach(&self, price: Decimal) -> bool {
        price.to_f64().is_none_or(|p| self.bar.low <= p + slack(p))
    }

    /// Whether the exact high may be at or above `price` (see [`Self::low_may_reach`]).
    fn high_may_reach(&self, price: Decimal) -> bool {
        price.to_f64().is_none_or(|p| self.bar.high >= p - slack(p))
    }
}

/// Margin of the `f64` pre-check: 6-decimal rounding moves a price by at most 5e-7 and the
/// `f64`/`Decimal` conversions by a relative 1e-15 or so.
fn slack(price: f64) -> f64 {
    1e-5 + price.abs() * 1e-9
}

/// The bracket an entry carries until it fills.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Bracket {
    stop_loss: Option<Decimal>,
    take_profits: Vec<TakeProfit>,
}

/// An order with what the broker needs besides its public state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SimOrder {
    state: OrderState,
    /// The position side this order opens (entries) or reduces (exits).
    position_side: PositionSide,
    /// `Some` for entries (possibly empty), `None` for exits.
    bracket: Option<Bracket>,
}

impl SimOrder {
    fn is_entry(&self) -> bool {
        self.bracket.is_some()
    }
}

/// One (pipeline, symbol) position; never flat (flat positions are removed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PositionRecord {
    pipeline: String,
    /// Shares, positive long, negative short.
    quantity: Decimal,
    /// Average entry price, USD per share.
    average_price: Decimal,
}

/// Everything the broker keeps per symbol.
#[derive(Clone, Debug)]
struct Book {
    symbol: String,
    /// Indices into `SimBroker::orders` of the symbol's open orders, in submission order.
    /// During `on_bar` it may also hold orders closed in that bar; they are dropped at its end.
    open: Vec<usize>,
    positions: Vec<PositionRecord>,
    /// Last mark as `Decimal`.
    mark: Option<Decimal>,
    /// A newer mark not yet converted (the latest bar close; converted when read, so bars pay
    /// no conversion for it); always a price [`bar_price`] accepts.
    mark_raw: Option<f64>,
}

impl Book {
    fn new(symbol: &str) -> Book {
        Book {
            symbol: symbol.to_string(),
            open: Vec::new(),
            positions: Vec::new(),
            mark: None,
            mark_raw: None,
        }
    }

    fn mark_price(&self) -> Option<Decimal> {
        self.mark_raw.and_then(bar_price).or(self.mark)
    }

    /// Takes a bar's close (a price [`bar_price`] accepts) as the mark: converted now when
    /// positions are open (their balances are read after every bar), kept raw otherwise.
    fn set_mark(&mut self, close: f64) {
        if self.positions.is_empty() {
            self.mark_raw = Some(close);
        } else if let Some(p) = bar_price(close) {
            self.mark = Some(p);
            self.mark_raw = None;
        }
    }

    fn position(&self, pipeline: &str) -> Decimal {
        self.positions
            .iter()
            .find(|p| p.pipeline == pipeline)
            .map_or(Decimal::ZERO, |p| p.quantity)
    }
}

/// The simulated broker's saved state: cash, commissions, every order (open and closed, so
/// that idempotent submission survives a restart), positions, marks, the fill counter and
/// the random generator's position. Serializable (JSON round-trips exactly); restore it with
/// [`SimBroker::restore`]. The layout is internal and versioned by `format`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimState {
    format: u32,
    cash: Decimal,
    commissions: Decimal,
    fills: u64,
    orders: Vec<SimOrder>,
    books: Vec<BookState>,
    rng_seed: u64,
    /// Position in the generator's stream, in 32-bit words.
    rng_word_pos: u64,
}

/// One symbol in a [`SimState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct BookState {
    symbol: String,
    mark: Option<Decimal>,
    positions: Vec<PositionRecord>,
}

/// Probability as a threshold on a uniform `u64` draw: the event happens when
/// `draw < threshold`; `0` means never (and no draw is made), `2^64` always.
fn threshold(pct: crate::config::common::Percent) -> u128 {
    let fraction = pct.fraction().clamp(Decimal::ZERO, Decimal::ONE);
    let scale = Decimal::from(u64::MAX) + Decimal::ONE;
    (fraction * scale).floor().to_u128().unwrap_or(0)
}

/// Which orders a pass over a bar considers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Market,
    EntryTriggers,
    Stops,
    Limits,
}

/// The simulated broker (synchronous core). See the module documentation for the execution
/// model. Not thread-safe by itself; the daemon shares it through [`SharedSimBroker`].
#[derive(Debug)]
pub struct SimBroker {
    name: String,
    config: SimulatedBroker,
    /// `slippage_pct` as a fraction.
    slippage: Decimal,
    reject_threshold: u128,
    partial_threshold: u128,
    cash: Decimal,
    commissions: Decimal,
    /// Fills so far (numbers fill ids).
    fills: u64,
    /// Every order, indexed by submission sequence.
    orders: Vec<SimOrder>,
    /// Client order id → index into `orders`.
    ids: crate::FastMap<String, usize>,
    books: Vec<Book>,
    /// Symbol → index into `books`.
    symbols: crate::FastMap<String, usize>,
    rng: ChaCha8Rng,
    rng_seed: u64,
}

impl SimBroker {
    /// A broker named `name` (the `[brokers.<name>]` key; it prefixes broker order ids
    /// `<name>-<n>` and fill ids `<name>-f<n>`) with `initial_balance` cash, no positions and
    /// no orders.
    pub fn new(name: &str, config: &SimulatedBroker) -> SimBroker {
        SimBroker {
            name: name.to_string(),
            config: config.clone(),
            slippage: config.slippage_pct.fraction(),
            reject_threshold: threshold(config.reject_pct),
            partial_threshold: threshold(config.partial_fill_pct),
            cash: config.initial_balance,
            commissions: Decimal::ZERO,
            fills: 0,
            orders: Vec::new(),
            ids: crate::FastMap::default(),
            books: Vec::new(),
            symbols: crate::FastMap::default(),
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            rng_seed: config.seed,
        }
    }

    /// The broker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Submits an order at Unix time `now` (seconds). A market order fills on the first bar
    /// of its symbol with `ts >= now`; stops and limits work from that bar on.
    ///
    /// Returns the order's state: `Accepted`, or `Rejected` when the seeded draw rejects it
    /// (`reject_pct`; the rejected order is recorded, so resubmitting it returns the same
    /// rejection). A client order id the broker already has returns that order's current
    /// state and creates nothing.
    ///
    /// Errors: [`BrokerError::Rejected`] (nothing recorded) for an invalid order: empty id,
    /// pipeline or symbol; a quantity that is not a whole number of shares in
    /// `1..=`[`MAX_QUANTITY`]; a price outside `(0, `[`MAX_PRICE`]`)`; take-profit legs that
    /// are not whole positive shares or add up to more than the entry; an exit with purpose
    /// `entry`; or an entry whose bracket child ids (`{id}-sl`, `{id}-t<k>`) are taken.
    pub fn submit(&mut self, order: Submit, now: i64) -> Result<OrderState, BrokerError> {
        if let Some(&i) = self.ids.get(order.client_order_id()) {
            return Ok(self.orders[i].state.clone());
        }
        let order = match order {
            Submit::Entry(entry) => {
                let e = entry.into_inner();
                validate_entry(&e)?;
                for child in child_ids(&e.client_order_id, e.take_profits.len()) {
                    if self.ids.contains_key(&child) {
                        return Err(rejected(
                            &e.client_order_id,
                            format!("its bracket child id {child} is already in use"),
                        ));
                    }
                }
                let position_side = match e.side {
                    Side::Buy => PositionSide::Long,
                    Side::Sell => PositionSide::Short,
                };
                SimOrder {
                    state: self.new_state(
                        e.client_order_id,
                        e.pipeline,
                        e.symbol,
                        e.side,
                        e.quantity,
                        e.order_type,
                        OrderPurpose::Entry,
                        None,
                        now,
                    ),
                    position_side,
                    bracket: Some(Bracket {
                        stop_loss: e.stop_loss,
                        take_profits: e.take_profits,
                    }),
                }
            }
            Submit::Exit(x) => {
                validate_exit(&x)?;
                let side = x.side();
                SimOrder {
                    state: self.new_state(
                        x.client_order_id,
                        x.pipeline,
                        x.symbol,
                        side,
                        x.quantity,
                        x.order_type,
                        x.purpose,
                        x.oco_group,
                        now,
                    ),
                    position_side: x.position_side,
                    bracket: None,
                }
            }
        };
        let mut order = order;
        if self.chance(self.reject_threshold) {
            order.state.status = OrderStatus::Rejected;
            order.state.reason = Some(format!(
                "simulated rejection (reject_pct {})",
                self.config.reject_pct
            ));
        }
        let state = order.state.clone();
        self.insert(order);
        Ok(state)
    }

    /// Cancels an open order (no event: the caller knows). Cancelling an already cancelled
    /// order succeeds and changes nothing.
    ///
    /// Errors: [`BrokerError::UnknownOrder`]; [`BrokerError::Rejected`] when the order is
    /// filled or was rejected.
    pub fn cancel(&mut self, client_order_id: &str) -> Result<(), BrokerError> {
        let i = self.index(client_order_id)?;
        match self.orders[i].state.status {
            OrderStatus::Cancelled => return Ok(()),
            status @ (OrderStatus::Filled | OrderStatus::Rejected | OrderStatus::Expired) => {
                return Err(rejected(
                    client_order_id,
                    format!("the order is {} and cannot be cancelled", status.as_str()),
                ));
            }
            OrderStatus::Accepted | OrderStatus::PartiallyFilled => {}
        }
        let state = &mut self.orders[i].state;
        state.status = OrderStatus::Cancelled;
        state.reason = Some("cancelled by request".to_string());
        if let Some(&b) = self.symbols.get(&state.symbol) {
            self.books[b].open.retain(|&o| o != i);
        }
        Ok(())
    }

    /// Moves an open stop order to `price` (USD per share) for `quantity` shares (the order's
    /// new remaining quantity; cut to the position when the position on the stop's side is
    /// smaller).
    ///
    /// Errors: [`BrokerError::UnknownOrder`]; [`BrokerError::Rejected`] when the order is not
    /// an open stop, the price is outside `(0, `[`MAX_PRICE`]`)` or the quantity is not a whole
    /// number of shares in `1..=`[`MAX_QUANTITY`].
    pub fn replace_stop(
        &mut self,
        client_order_id: &str,
        price: Decimal,
        quantity: Decimal,
    ) -> Result<(), BrokerError> {
        let i = self.index(client_order_id)?;
        let order = &self.orders[i];
        if !order.state.status.is_open() {
            return Err(rejected(
                client_order_id,
                format!(
                    "the order is {} and cannot be replaced",
                    order.state.status.as_str()
                ),
            ));
        }
        if !matches!(order.state.order_type, OrderType::Stop { .. }) {
            return Err(rejected(
                client_order_id,
                "the order is not a stop order".to_string(),
            ));
        }
        check_price(client_order_id, "stop price", price)?;
        check_quantity(client_order_id, "quantity", quantity)?;
        let mut quantity = quantity;
        if !order.is_entry()
            && let Some(&b) = self.symbols.get(&order.state.symbol)
        {
            let held = held(
                self.books[b].position(&order.state.pipeline),
                order.position_side,
            );
            if held > Decimal::ZERO {
                quantity = quantity.min(held);
            }
        }
        let state = &mut self.orders[i].state;
        state.order_type = OrderType::Stop { price };
        state.quantity = state.filled_quantity + quantity;
        Ok(())
    }

    /// Processes one closed bar of `symbol`: pending market orders fill at its open, then
    /// working entries, stops and limits are checked against its range (see the module
    /// documentation); the bar's close marks the symbol's positions. Returns what happened,
    /// in order: fills, the bracket legs placed when an entry fills (`Accepted`, ids
    /// `{entry}-sl`, `{entry}-t1`, …), working exits cut to a smaller position (`Replaced`),
    /// and cancellations (unfilled rests, one-cancels-other, reduce-only). Fill timestamps
    /// are the bar's `ts`.
    ///
    /// Cost: a symbol with no open order takes one hash lookup and no allocation. A bar with a
    /// price that [`bar_price`] refuses (NaN, infinite, ≥ 1e12) is ignored for orders and
    /// marks (logged).
    pub fn on_bar(&mut self, symbol: &str, bar: &Bar) -> Vec<BrokerEvent> {
        let Some(&b) = self.symbols.get(symbol) else {
            return Vec::new();
        };
        let book = &mut self.books[b];
        if book.open.is_empty() {
            if in_price_range(bar.close) {
                book.set_mark(bar.close);
            }
            return Vec::new();
        }
        let Some(mut prices) = BarPrices::new(bar) else {
            tracing::warn!(
                broker = %self.name,
                symbol,
                ts = bar.ts,
                "bar ignored: a price is not a finite number below 1e12"
            );
            return Vec::new();
        };
        let mut events = Vec::new();
        let mut stopped: Vec<usize> = Vec::new();
        for pass in [Pass::Market, Pass::EntryTriggers, Pass::Stops, Pass::Limits] {
            self.run_pass(b, pass, &mut prices, &mut stopped, &mut events);
        }
        let orders = &self.orders;
        let book = &mut self.books[b];
        book.open.retain(|&i| orders[i].state.status.is_open());
        book.set_mark(bar.close);
        events
    }

    /// Executes the working market order `client_order_id` now, at the symbol's last mark
    /// with slippage, instead of at the next bar's open: an emergency close does not wait
    /// for the next bar (a market order at a real broker fills within moments while the
    /// market is open). Nothing happens when the order is not a working market order or the
    /// symbol has no mark yet. Fill timestamps are `ts`.
    pub fn fill_at_mark(&mut self, client_order_id: &str, ts: i64) -> Vec<BrokerEvent> {
        let mut events = Vec::new();
        let Ok(i) = self.index(client_order_id) else {
            return events;
        };
        let state = &self.orders[i].state;
        if !state.status.is_open() || state.order_type != OrderType::Market {
            return events;
        }
        let (symbol, side) = (state.symbol.clone(), state.side);
        let Some(&b) = self.symbols.get(&symbol) else {
            return events;
        };
        let Some(mark) = self.books[b].mark_price() else {
            return events;
        };
        let price = self.slipped(mark, side);
        self.execute(b, i, price, ts, &mut events);
        let orders = &self.orders;
        self.books[b]
            .open
            .retain(|&k| orders[k].state.status.is_open());
        events
    }

    /// Marks `symbol`'s positions at `price`, USD per share (for example a live quote). A
    /// symbol the broker has never seen an order for is ignored.
    pub fn mark(&mut self, symbol: &str, price: Decimal) {
        if let Some(&b) = self.symbols.get(symbol) {
            self.books[b].mark = Some(price);
            self.books[b].mark_raw = None;
        }
    }

    /// Balances: cash, equity (`cash + Σ quantity × mark`), buying power (the cash: there is
    /// no margin model) and commissions paid, USD.
    pub fn account(&self) -> Account {
        let mut equity = self.cash;
        for book in &self.books {
            if book.positions.is_empty() {
                continue;
            }
            let mark = book.mark_price();
            for p in &book.positions {
                equity += p.quantity * mark.unwrap_or(p.average_price);
            }
        }
        Account {
            cash: self.cash,
            equity,
            buying_power: self.cash.max(Decimal::ZERO),
            commissions: self.commissions,
        }
    }

    /// Open positions, sorted by pipeline then symbol; `market_price` is the mark.
    pub fn positions(&self) -> Vec<Position> {
        let mut out = Vec::new();
        self.positions_into(&mut out);
        out
    }

    /// [`SimBroker::positions`] written into `out` (its earlier contents replaced), reusing
    /// its entries: names that did not change are not copied, and nothing is allocated
    /// while the positions stay the same.
    pub fn positions_into(&self, out: &mut Vec<Position>) {
        let mut n = 0;
        for book in self.books.iter().filter(|book| !book.positions.is_empty()) {
            let mark = book.mark_price();
            for p in &book.positions {
                let market_price = mark.unwrap_or(p.average_price);
                match out.get_mut(n) {
                    Some(slot) => {
                        if slot.pipeline != p.pipeline {
                            slot.pipeline.clone_from(&p.pipeline);
                        }
                        if slot.symbol != book.symbol {
                            slot.symbol.clone_from(&book.symbol);
                        }
                        slot.quantity = p.quantity;
                        slot.average_price = p.average_price;
                        slot.market_price = market_price;
                    }
                    None => out.push(Position {
                        pipeline: p.pipeline.clone(),
                        symbol: book.symbol.clone(),
                        quantity: p.quantity,
                        average_price: p.average_price,
                        market_price,
                    }),
                }
                n += 1;
            }
        }
        out.truncate(n);
        out.sort_by(|a, b| (&a.pipeline, &a.symbol).cmp(&(&b.pipeline, &b.symbol)));
    }

    /// An order by client order id (open or not).
    pub fn order(&self, client_order_id: &str) -> Option<OrderState> {
        self.ids
            .get(client_order_id)
            .map(|&i| self.orders[i].state.clone())
    }

    /// Orders that can still execute, in submission order.
    pub fn open_orders(&self) -> Vec<OrderState> {
        let mut idx: Vec<usize> = self
            .books
            .iter()
            .flat_map(|b| b.open.iter().copied())
            .collect();
        idx.sort_unstable();
        idx.into_iter()
            .map(|i| self.orders[i].state.clone())
            .collect()
    }

    /// Everything needed to continue exactly where this broker is (see [`SimState`]).
    pub fn snapshot(&self) -> SimState {
        SimState {
            format: STATE_FORMAT,
            cash: self.cash,
            commissions: self.commissions,
            fills: self.fills,
            orders: self.orders.clone(),
            books: self
                .books
                .iter()
                .map(|b| BookState {
                    symbol: b.symbol.clone(),
                    mark: b.mark_price(),
                    positions: b.positions.clone(),
                })
                .collect(),
            rng_seed: self.rng_seed,
            rng_word_pos: u64::try_from(self.rng.get_word_pos()).unwrap_or(u64::MAX),
        }
    }

    /// A broker continuing from `state`. `config` supplies slippage, commissions and the
    /// partial-fill and rejection chances; the cash, orders, positions and the random
    /// generator (its seed included) come from `state`, so the broker produces the same events
    /// the snapshotted one would have.
    pub fn restore(name: &str, config: &SimulatedBroker, state: SimState) -> SimBroker {
        let mut broker = SimBroker::new(name, config);
        broker.cash = state.cash;
        broker.commissions = state.commissions;
        broker.fills = state.fills;
        broker.rng_seed = state.rng_seed;
        broker.rng = ChaCha8Rng::seed_from_u64(state.rng_seed);
        broker.rng.set_word_pos(u128::from(state.rng_word_pos));
        for b in state.books {
            let i = broker.book_index(&b.symbol);
            broker.books[i].mark = b.mark;
            broker.books[i].positions = b.positions;
        }
        for order in state.orders {
            broker.insert(order);
        }
        broker
    }

    // ----- internals -----

    #[allow(clippy::too_many_arguments)]
    fn new_state(
        &self,
        client_order_id: String,
        pipeline: String,
        symbol: String,
        side: Side,
        quantity: Decimal,
        order_type: OrderType,
        purpose: OrderPurpose,
        oco_group: Option<String>,
        created_at: i64,
    ) -> OrderState {
        OrderState {
            client_order_id,
            broker_order_id: format!("{}-{}", self.name, self.orders.len() + 1),
            pipeline,
            symbol,
            side,
            quantity,
            filled_quantity: Decimal::ZERO,
            average_price: Decimal::ZERO,
            order_type,
            purpose,
            oco_group,
            status: OrderStatus::Accepted,
            reason: None,
            created_at,
        }
    }

    /// Records an order (and indexes it in its symbol's book when open).
    fn insert(&mut self, order: SimOrder) {
        let i = self.orders.len();
        let open = order.state.status.is_open();
        let b = self.book_index(&order.state.symbol);
        self.ids.insert(order.state.client_order_id.clone(), i);
        self.orders.push(order);
        if open {
            self.books[b].open.push(i);
        }
    }

    fn book_index(&mut self, symbol: &str) -> usize {
        if let Some(&b) = self.symbols.get(symbol) {
            return b;
        }
        let b = self.books.len();
        self.books.push(Book::new(symbol));
        self.symbols.insert(symbol.to_string(), b);
        b
    }

    fn index(&self, client_order_id: &str) -> Result<usize, BrokerError> {
        self.ids
            .get(client_order_id)
            .copied()
            .ok_or_else(|| BrokerError::UnknownOrder(client_order_id.to_string()))
    }

    /// Draws against a threshold from [`threshold`]; no draw for a zero threshold.
    fn chance(&mut self, threshold: u128) -> bool {
        threshold != 0 && u128::from(self.rng.next_u64()) < threshold
    }

    /// A uniform draw in `0..n` (multiply-shift; `n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        let wide = (u128::from(self.rng.next_u64()) * u128::from(n)) >> 64;
        u64::try_from(wide).unwrap_or(0)
    }

    fn slipped(&self, price: Decimal, side: Side) -> Decimal {
        let factor = match side {
            Side::Buy => Decimal::ONE + self.slippage,
            Side::Sell => Decimal::ONE - self.slippage,
        };
        (price * factor).round_dp(6)
    }

    /// One pass over the open orders of book `b`. Orders added during the pass (bracket
    /// children) are visited too.
    fn run_pass(
        &mut self,
        b: usize,
        pass: Pass,
        bar: &mut BarPrices<'_>,
        stopped: &mut Vec<usize>,
        events: &mut Vec<BrokerEvent>,
    ) {
        let mut k = 0;
        while k < self.books[b].open.len() {
            let i = self.books[b].open[k];
            k += 1;
            let order = &self.orders[i];
            let state = &order.state;
            if !state.status.is_open() || state.created_at > bar.ts() {
                continue;
            }
            let eligible = match (pass, state.order_type) {
                (Pass::Market, OrderType::Market) => true,
                (Pass::EntryTriggers, OrderType::Limit { .. } | OrderType::Stop { .. }) => {
                    order.is_entry()
                }
                (Pass::Stops, OrderType::Stop { .. }) => !order.is_entry(),
                (Pass::Limits, OrderType::Limit { .. }) => {
                    !order.is_entry()
                        && !stopped
                            .iter()
                            .any(|&s| self.orders[s].state.pipeline == state.pipeline)
                }
                _ => false,
            };
            if !eligible {
                continue;
            }
            let Some(price) = self.execution_price(state.order_type, state.side, bar) else {
                continue;
            };
            let filled = self.execute(b, i, price, bar.ts(), events);
            if filled && pass == Pass::Stops {
                stopped.push(i);
            }
        }
    }

    /// The price an order executes at in this bar, slippage included, or `None` when the bar
    /// does not reach it.
    fn execution_price(
        &self,
        order_type: OrderType,
        side: Side,
        bar: &mut BarPrices<'_>,
    ) -> Option<Decimal> {
        match (order_type, side) {
            (OrderType::Market, _) => Some(self.slipped(bar.open(), side)),
            (OrderType::Limit { price }, Side::Buy) => {
                (bar.low_may_reach(price) && bar.low() <= price).then(|| bar.open().min(price))
            }
            (OrderType::Limit { price }, Side::Sell) => {
                (bar.high_may_reach(price) && bar.high() >= price).then(|| bar.open().max(price))
            }
            (OrderType::Stop { price }, Side::Buy) => (bar.high_may_reach(price)
                && bar.high() >= price)
                .then(|| self.slipped(bar.open().max(price), side)),
            (OrderType::Stop { price }, Side::Sell) => (bar.low_may_reach(price)
                && bar.low() <= price)
                .then(|| self.slipped(bar.open().min(price), side)),
        }
    }

    /// Executes order `i` at `price`, applying reduce-only, partial fills, money, position,
    /// bracket children, one-cancels-other and exit consistency. Returns whether anything
    /// filled.
    fn execute(
        &mut self,
        b: usize,
        i: usize,
        price: Decimal,
        ts: i64,
        events: &mut Vec<BrokerEvent>,
    ) -> bool {
        let order = &self.orders[i];
        let state = &order.state;
        let side = state.side;
        let is_entry = order.is_entry();
        let position = self.books[b].position(&state.pipeline);
        let remaining = state.quantity - state.filled_quantity;
        let mut quantity = remaining;
        let mut rest: Option<String> = None;
        if is_entry {
            if position * side.sign() < Decimal::ZERO {
                let reason = format!(
                    "entry {} would net against the open {} position of {} in {}",
                    side.as_str(),
                    if position > Decimal::ZERO {
                        "long"
                    } else {
                        "short"
                    },
                    state.pipeline,
                    state.symbol
                );
                self.cancel_internal(i, reason, events);
                return false;
            }
        } else {
            let available = held(position, order.position_side);
            if available <= Decimal::ZERO {
                let reason = format!(
                    "reduce-only: no {} position of {} in {}",
                    order.position_side.as_str(),
                    state.pipeline,
                    state.symbol
                );
                self.cancel_internal(i, reason, events);
                return false;
            }
            if quantity > available {
                quantity = available;
                rest = Some("reduce-only: the rest exceeds the position".to_string());
            }
        }
        if matches!(state.order_type, OrderType::Market)
            && quantity >= Decimal::TWO
            && self.chance(self.partial_threshold)
        {
            let n = (quantity - Decimal::ONE).to_u64().unwrap_or(0);
            if n > 0 {
                quantity = Decimal::from(1 + self.below(n));
                rest = Some(format!(
                    "simulated partial fill (partial_fill_pct {})",
                    self.config.partial_fill_pct
                ));
            }
        }

        // Money.
        let commission = self
            .config
            .min_commission
            .max(quantity * self.config.commission_per_share);
        let value = quantity * price;
        match side {
            Side::Buy => self.cash -= value + commission,
            Side::Sell => self.cash += value - commission,
        }
        self.commissions += commission;
        let pipeline = self.orders[i].state.pipeline.clone();
        apply_position(&mut self.books[b], &pipeline, side.sign() * quantity, price);

        // The order.
        self.fills += 1;
        let fill_id = format!("{}-f{}", self.name, self.fills);
        let state = &mut self.orders[i].state;
        let filled = state.filled_quantity + quantity;
        state.average_price = if state.filled_quantity.is_zero() {
            price
        } else {
            (state.average_price * state.filled_quantity + price * quantity) / filled
        };
        state.filled_quantity = filled;
        state.status = if filled == state.quantity {
            OrderStatus::Filled
        } else {
            OrderStatus::PartiallyFilled
        };
        events.push(BrokerEvent::Fill {
            fill: Fill {
                client_order_id: state.client_order_id.clone(),
                broker_order_id: state.broker_order_id.clone(),
                fill_id,
                pipeline: state.pipeline.clone(),
                symbol: state.symbol.clone(),
                side,
                quantity,
                price,
                commission,
                purpose: state.purpose,
                ts,
            },
            order: state.clone(),
        });
        if let Some(reason) = rest
            && state.status != OrderStatus::Filled
        {
            self.cancel_internal(i, reason, events);
        }

        if is_entry {
            self.place_children(i, quantity, ts, events);
        } else if let (OrderType::Stop { .. }, Some(group)) = (
            self.orders[i].state.order_type,
            &self.orders[i].state.oco_group,
        ) {
            let group = group.clone();
            let reason = format!("oco: stop {} filled", self.orders[i].state.client_order_id);
            let siblings: Vec<usize> = self.books[b]
                .open
                .iter()
                .copied()
                .filter(|&o| {
                    o != i
                        && self.orders[o].state.status.is_open()
                        && self.orders[o].state.oco_group.as_deref() == Some(group.as_str())
                })
                .collect();
            for o in siblings {
                self.cancel_internal(o, reason.clone(), events);
            }
        }
        self.sync_exits(b, &pipeline, events);
        true
    }

    /// Cancels order `i` during a bar, with an event.
    fn cancel_internal(&mut self, i: usize, reason: String, events: &mut Vec<BrokerEvent>) {
        let state = &mut self.orders[i].state;
        state.status = OrderStatus::Cancelled;
        state.reason = Some(reason.clone());
        events.push(BrokerEvent::Cancelled {
            order: state.clone(),
            reason,
        });
    }

    /// Keeps the open exits of (`pipeline`, book `b`) consistent with the position: cut to
    /// its size, cancelled when it is flat or on the other side.
    fn sync_exits(&mut self, b: usize, pipeline: &str, events: &mut Vec<BrokerEvent>) {
        let position = self.books[b].position(pipeline);
        for k in 0..self.books[b].open.len() {
            let i = self.books[b].open[k];
            let order = &self.orders[i];
            if order.is_entry() || !order.state.status.is_open() || order.state.pipeline != pipeline
            {
                continue;
            }
            let available = held(position, order.position_side);
            if available <= Decimal::ZERO {
                let reason = format!(
                    "position closed: no {} position of {} in {}",
                    order.position_side.as_str(),
                    pipeline,
                    order.state.symbol
                );
                self.cancel_internal(i, reason, events);
            } else {
                let state = &mut self.orders[i].state;
                if state.quantity - state.filled_quantity > available {
                    state.quantity = state.filled_quantity + available;
                    events.push(BrokerEvent::Replaced {
                        order: state.clone(),
                    });
                }
            }
        }
    }

    /// Places the bracket children of entry `i` for `quantity` filled shares.
    fn place_children(
        &mut self,
        i: usize,
        quantity: Decimal,
        ts: i64,
        events: &mut Vec<BrokerEvent>,
    ) {
        let entry = &self.orders[i];
        let Some(bracket) = entry.bracket.clone() else {
            return;
        };
        let id = entry.state.client_order_id.clone();
        let pipeline = entry.state.pipeline.clone();
        let symbol = entry.state.symbol.clone();
        let total = entry.state.quantity;
        let position_side = entry.position_side;
        let side = position_side.exit_side();
        let mut children = Vec::with_capacity(1 + bracket.take_profits.len());
        if let Some(stop) = bracket.stop_loss {
            children.push((
                format!("{id}-sl"),
                OrderType::Stop { price: stop },
                OrderPurpose::StopLoss,
                quantity,
            ));
        }
        let mut cumulative = Decimal::ZERO;
        let mut placed = Decimal::ZERO;
        for (k, leg) in bracket.take_profits.iter().enumerate() {
            cumulative += leg.quantity;
            let scaled_numerator = quantity * cumulative;
            let scaled = (scaled_numerator - scaled_numerator % total) / total;
            let shares = scaled - placed;
            placed = scaled;
            if shares > Decimal::ZERO {
                children.push((
                    format!("{id}-t{}", k + 1),
                    OrderType::Limit { price: leg.price },
                    leg.purpose,
                    shares,
                ));
            }
        }
        for (child_id, order_type, purpose, shares) in children {
            let child_id = if self.ids.contains_key(&child_id) {
                format!("{child_id}-{}", self.orders.len() + 1)
            } else {
                child_id
            };
            let state = self.new_state(
                child_id,
                pipeline.clone(),
                symbol.clone(),
                side,
                shares,
                order_type,
                purpose,
                Some(id.clone()),
                ts,
            );
            events.push(BrokerEvent::Accepted {
                order: state.clone(),
            });
            self.insert(SimOrder {
                state,
                position_side,
                bracket: None,
            });
        }
    }
}

/// Shares of `position` (signed) on `side`; zero when flat or on the other side.
fn held(position: Decimal, side: PositionSide) -> Decimal {
    match side {
        PositionSide::Long => position.max(Decimal::ZERO),
        PositionSide::Short => (-position).max(Decimal::ZERO),
    }
}

/// Adds `delta` shares (signed) at `price` to `pipeline`'s position in `book`. Adding keeps a
/// quantity-weighted average price; reducing keeps it; crossing zero starts at `price`.
fn apply_position(book: &mut Book, pipeline: &str, delta: Decimal, price: Decimal) {
    let Some(k) = book.positions.iter().position(|p| p.pipeline == pipeline) else {
        book.positions.push(PositionRecord {
            pipeline: pipeline.to_string(),
            quantity: delta,
            average_price: price,
        });
        return;
    };
    let p = &mut book.positions[k];
    let old = p.quantity;
    let new = old + delta;
    if new.is_zero() {
        book.positions.remove(k);
        return;
    }
    if old.is_sign_negative() == delta.is_sign_negative() {
        p.average_price = (p.average_price * old.abs() + price * delta.abs()) / new.abs();
    } else if old.is_sign_negative() != new.is_sign_negative() {
        p.average_price = price;
    }
    p.quantity = new;
}

fn rejected(client_order_id: &str, reason: String) -> BrokerError {
    BrokerError::Rejected {
        client_order_id: client_order_id.to_string(),
        reason,
    }
}

fn check_quantity(id: &str, what: &str, quantity: Decimal) -> Result<(), BrokerError> {
    if quantity <= Decimal::ZERO || !quantity.fract().is_zero() || quantity > MAX_QUANTITY {
        return Err(rejected(
            id,
            format!("{what} {quantity} is not a whole number of shares from 1 to {MAX_QUANTITY}"),
        ));
    }
    Ok(())
}

fn check_price(id: &str, what: &str, price: Decimal) -> Result<(), BrokerError> {
    if price <= Decimal::ZERO || price >= MAX_PRICE {
        return Err(rejected(
            id,
            format!("{what} {price} is not a price above 0 and below {MAX_PRICE} USD"),
        ));
    }
    Ok(())
}

fn check_common(
    id: &str,
    pipeline: &str,
    symbol: &str,
    quantity: Decimal,
    order_type: OrderType,
) -> Result<(), BrokerError> {
    if id.is_empty() {
        return Err(rejected(id, "empty client order id".to_string()));
    }
    if pipeline.is_empty() || symbol.is_empty() {
        return Err(rejected(id, "empty pipeline or symbol".to_string()));
    }
    check_quantity(id, "quantity", quantity)?;
    match order_type {
        OrderType::Market => Ok(()),
        OrderType::Limit { price } => check_price(id, "limit price", price),
        OrderType::Stop { price } => check_price(id, "stop price", price),
    }
}

fn validate_entry(e: &crate::broker::EntryOrder) -> Result<(), BrokerError> {
    let id = e.client_order_id.as_str();
    check_common(id, &e.pipeline, &e.symbol, e.quantity, e.order_type)?;
    if let Some(stop) = e.stop_loss {
        check_price(id, "stop_loss", stop)?;
    }
    let mut legs = Decimal::ZERO;
    for tp in &e.take_profits {
        check_price(id, "take-profit price", tp.price)?;
        check_quantity(id, "take-profit quantity", tp.quantity)?;
        legs += tp.quantity;
    }
    if legs > e.quantity {
        return Err(rejected(
            id,
            format!(
                "take-profit legs add up to {legs} shares, more than the entry's {}",
                e.quantity
            ),
        ));
    }
    Ok(())
}

fn validate_exit(x: &crate::broker::ExitOrder) -> Result<(), BrokerError> {
    let id = x.client_order_id.as_str();
    check_common(id, &x.pipeline, &x.symbol, x.quantity, x.order_type)?;
    if x.purpose == OrderPurpose::Entry {
        return Err(rejected(
            id,
            "an exit order cannot have purpose entry".to_string(),
        ));
    }
    Ok(())
}

/// The bracket child ids of entry `id` with `legs` take-profit legs.
fn child_ids(id: &str, legs: usize) -> impl Iterator<Item = String> + '_ {
    std::iter::once(format!("{id}-sl")).chain((1..=legs).map(move |k| format!("{id}-t{k}")))
}
