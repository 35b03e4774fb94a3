//! The account side of the daemon: brokers, the position book of every pipeline, the store
//! writes around every order and fill, halts, and the emergency close.
//!
//! Crash safety: an order's intent is written (with its deterministic client order id)
//! before the broker sees the order; the broker answer and its snapshot are written in one
//! transaction afterwards; the fills of a bar (or of an emergency close) are written in one
//! transaction with the position changes, the closed trades, the cancelled bracket legs and
//! the broker snapshot. At start the book is rebuilt from the store,
//! compared with the broker (the source of truth; differences are logged and the broker
//! wins), and intents left pending are matched to broker orders by client order id.

use super::market::{BarBatch, ReplayHub};
use crate::broker::sim::SimBroker;
use crate::broker::{
    BrokerEvent, ExitOrder, Fill, OrderPurpose, OrderState, OrderType, Position, Submit,
    client_order_id,
};
use crate::config::pipeline::Mode;
use crate::config::settings::{BrokerSettings, Settings};
use crate::engine::book::{Book, FollowUp, OpenTrade};
use crate::engine::clock::Clock;
use crate::engine::exec::AccountSource;
use crate::engine::state::PositionView;
use crate::engine::trades::EquityPoint;
use crate::http::Scope;
use crate::metrics::Metrics;
use crate::store::{
    BatchEntry, BookChange, Intervention, InterventionKind, OrderIntent, Store, WriteBatch,
};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tracing::{info, warn};

/// Why the portfolio cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PortfolioError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A broker kind this build cannot connect to.
    #[error("broker {0}: {1}")]
    Broker(String, String),
}

/// A broker of the daemon. This build connects the simulated broker; Alpaca and
/// Interactive Brokers accounts are refused at start with a clear message.
struct BrokerSlot {
    name: String,
    sim: Mutex<SimBroker>,
}

/// Shared account state of the daemon.
pub struct Portfolio {
    store: Store,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    hub: Option<Arc<ReplayHub>>,
    brokers: BTreeMap<String, BrokerSlot>,
    book: Mutex<Book>,
    halts: Mutex<BTreeMap<String, (Scope, String)>>,
    day: Mutex<(Option<chrono::NaiveDate>, BTreeMap<String, Decimal>)>,
    tz: chrono_tz::Tz,
    /// Realized profit or loss after fees since the store began, by pipeline, USD.
    realized: Mutex<BTreeMap<String, Decimal>>,
    /// Pipelines the positions gauge has reported.
    position_pipelines: Mutex<std::collections::BTreeSet<String>>,
    /// Serializes order traffic so that store and broker see the same order of events.
    order_lock: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The result of closing one position, as `POST /v1/close` answers it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CloseResult {
    /// Pipeline.
    pub pipeline: String,
    /// Symbol.
    pub symbol: String,
    /// Shares closed (signed as the position was).
    pub quantity: Decimal,
    /// `filled`, `submitted` (waits for the next bar: no price yet) or `failed`.
    pub status: String,
    /// Average fill price, USD per share.
    pub price: Option<Decimal>,
    /// What went wrong.
    pub error: Option<String>,
}

impl Portfolio {
    /// Builds the brokers from the settings (restoring simulated brokers from the store),
    /// the book from the store, reconciles both with the brokers, and settles pending
    /// intents.
    ///
    /// # Errors
    /// A store failure, or a broker this build cannot connect to that a pipeline needs.
    pub async fn start(
        settings: &Settings,
        used_brokers: &[String],
        store: Store,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        hub: Option<Arc<ReplayHub>>,
    ) -> Result<Portfolio, PortfolioError> {
        let now = clock.now().timestamp();
        let mut brokers = BTreeMap::new();
        for (name, b) in &settings.brokers {
            match b {
                BrokerSettings::Simulated(config) => {
                    let sim = match store.load_broker_state(name).await? {
                        Some(saved) => match serde_json::from_value(saved.state) {
                            Ok(state) => {
                                info!(broker = %name, "simulated broker restored from the store");
                                SimBroker::restore(name, config, state)
                            }
                            Err(e) => {
                                warn!(broker = %name, error = %e, "stored simulated broker state does not load; starting a fresh account");
                                SimBroker::new(name, config)
                            }
                        },
                        None => SimBroker::new(name, config),
                    };
                    brokers.insert(
                        name.clone(),
                        BrokerSlot {
                            name: name.clone(),
                            sim: Mutex::new(sim),
                        },
                    );
                }
                other if used_brokers.contains(name) => {
                    return Err(PortfolioError::Broker(
                        name.clone(),
                        format!(
                            "{} accounts are not connected by this daemon build; run the pipelines that use it in simulation or validation mode",
                            other.kind()
                        ),
                    ));
                }
                _ => {}
            }
        }
        let tz = settings
            .market_data
            .timezone
            .parse()
            .unwrap_or(chrono_tz::America::New_York);
        let portfolio = Portfolio {
            store,
            metrics,
            clock,
            hub,
            brokers,
            book: Mutex::new(Book::new()),
            halts: Mutex::new(BTreeMap::new()),
            day: Mutex::new((None, BTreeMap::new())),
            tz,
            realized: Mutex::new(BTreeMap::new()),
            position_pipelines: Mutex::new(Default::default()),
            order_lock: tokio::sync::Mutex::new(()),
        };
        portfolio.recover(now).await?;
        Ok(portfolio)
    }

    async fn recover(&self, now: i64) -> Result<(), PortfolioError> {
        // Realized P&L so far, per pipeline.
        for t in self.store.trades(None, i64::MIN, i64::MAX).await? {
            *lock(&self.realized).entry(t.pipeline.clone()).or_default() += t.pnl;
        }
        for (pipeline, pnl) in lock(&self.realized).iter() {
            self.metrics.set_realized_pnl(pipeline, *pnl);
        }
        // Halts survive restarts.
        for h in self.store.halts().await? {
            lock(&self.halts).insert(h.scope.key(), (h.scope.clone(), h.reason.clone()));
        }
        // The book from the store, then the brokers' positions win.
        let stored = self.store.load_open_trades().await?;
        let mut positions: BTreeMap<(String, String), Position> = BTreeMap::new();
        for slot in self.brokers.values() {
            for p in lock(&slot.sim).positions() {
                positions.insert((p.pipeline.clone(), p.symbol.clone()), p);
            }
        }
        let mut dropped = Vec::new();
        {
            let mut book = lock(&self.book);
            for t in stored {
                let key = (t.pipeline.clone(), t.symbol.clone());
                match positions.get(&key) {
                    Some(p) if p.quantity.abs() == t.quantity => {
                        info!(pipeline = %t.pipeline, symbol = %t.symbol, quantity = %t.quantity, stop = ?t.stop_loss, "open position re-adopted");
                        book.adopt(t);
                    }
                    Some(p) => {
                        warn!(pipeline = %t.pipeline, symbol = %t.symbol, store = %t.quantity, broker = %p.quantity, "the broker holds a different quantity than the store; the broker wins");
                        let mut t = t;
                        t.quantity = p.quantity.abs();
                        book.adopt(t);
                    }
                    None => {
                        warn!(pipeline = %t.pipeline, symbol = %t.symbol, quantity = %t.quantity, "the store has a position the broker does not hold; dropped");
                        dropped.push((t.pipeline.clone(), t.symbol.clone()));
                    }
                }
            }
            for ((pipeline, symbol), p) in &positions {
                if book.get(pipeline, symbol).is_none() {
                    warn!(%pipeline, %symbol, quantity = %p.quantity, "the broker holds a position the store did not know; adopted without stop or targets");
                    book.adopt(OpenTrade::adopted(
                        pipeline,
                        symbol,
                        p.quantity,
                        p.average_price,
                        now,
                    ));
                }
            }
        }
        for (pipeline, symbol) in dropped {
            let _ = self.store.delete_open_trade(&pipeline, &symbol).await;
        }
        // Intents written but not confirmed: the broker tells whether the order went out.
        for intent in self.store.pending_intents().await? {
            let known = self
                .brokers
                .get(&intent.broker)
                .and_then(|b| lock(&b.sim).order(&intent.client_order_id));
            match known {
                Some(state) => {
                    info!(client_order_id = %intent.client_order_id, "pending intent found at the broker; recorded as submitted");
                    let snapshot = self.snapshot(&intent.broker);
                    self.store
                        .record_intent_submitted(
                            &intent.client_order_id,
                            &state,
                            snapshot.as_ref(),
                            now,
                        )
                        .await?;
                }
                None => {
                    warn!(client_order_id = %intent.client_order_id, pipeline = %intent.pipeline, "intent never reached the broker before the daemon stopped; recorded as failed, not resent");
                    self.store
                        .mark_intent_failed(&intent.client_order_id, "not submitted: the daemon stopped between the intent and the submission", now)
                        .await?;
                }
            }
        }
        self.update_position_metrics();
        Ok(())
    }

    fn snapshot(&self, broker: &str) -> Option<Value> {
        let slot = self.brokers.get(broker)?;
        serde_json::to_value(lock(&slot.sim).snapshot()).ok()
    }

    /// The broker's snapshot as JSON text, for a [`WriteBatch`].
    fn snapshot_json(&self, broker: &str) -> Option<Box<serde_json::value::RawValue>> {
        let slot = self.brokers.get(broker)?;
        let state = lock(&slot.sim).snapshot();
        match serde_json::value::to_raw_value(&state) {
            Ok(raw) => Some(raw),
            Err(e) => {
                warn!(%broker, error = %e, "broker snapshot not serialized");
                None
            }
        }
    }

    /// Whether the daemon has a broker of this name.
    pub fn has_broker(&self, name: &str) -> bool {
        self.brokers.contains_key(name)
    }

    /// The trading day of `t` in the market time zone.
    fn trading_day(&self, t: i64) -> chrono::NaiveDate {
        crate::engine::clock::utc(t - 1)
            .with_timezone(&self.tz)
            .date_naive()
    }

    /// Processes one batch of closed bars: orders fill, stops and targets trigger, fills
    /// are booked and stored, positions are marked.
    pub async fn on_batch(&self, batch: &BarBatch) {
        let _guard = self.order_lock.lock().await;
        let day = self.trading_day(batch.end);
        {
            let mut d = lock(&self.day);
            if d.0 != Some(day) {
                d.0 = Some(day);
                d.1 = self
                    .brokers
                    .iter()
                    .map(|(n, b)| (n.clone(), lock(&b.sim).account().equity))
                    .collect();
            }
        }
        for (name, slot) in &self.brokers {
            let mut events = Vec::new();
            {
                let mut sim = lock(&slot.sim);
                for e in &batch.bars {
                    events.extend(sim.on_bar(&e.symbol, &e.bar));
                }
            }
            self.handle_events(name, events, batch.end).await;
            let account = lock(&slot.sim).account();
            self.metrics.set_equity(account.equity);
            let point = EquityPoint {
                ts: batch.end,
                equity: account.equity,
                cash: account.cash,
            };
            if let Err(e) = self.store.append_equity(name, "default", &point).await {
                warn!(broker = %name, error = %e, "equity point not stored");
            }
        }
        self.update_position_metrics();
    }

    /// Books `events` of broker `broker` and stores them with the broker's snapshot in one
    /// transaction.
    async fn handle_events(&self, broker: &str, events: Vec<BrokerEvent>, now: i64) {
        if events.is_empty() {
            return;
        }
        let mut batch = WriteBatch::new(now);
        let fills = self.apply_events(broker, events, &mut batch);
        if let Some(state) = self.snapshot_json(broker) {
            batch.push(BatchEntry::BrokerState {
                broker: broker.to_string(),
                state,
            });
        }
        self.write(&batch, &fills).await;
    }

    /// Writes `batch`; logs `fills` once they are stored.
    async fn write(&self, batch: &WriteBatch, fills: &[Fill]) {
        match self.store.write_batch(batch).await {
            Ok(_) => {
                for fill in fills {
                    info!(pipeline = %fill.pipeline, symbol = %fill.symbol, side = fill.side.as_str(), quantity = %fill.quantity, price = %fill.price, purpose = fill.purpose.as_str(), "fill");
                }
            }
            Err(e) => {
                warn!(error = %e, writes = batch.entries.len(), fills = fills.len(), "fills and orders not stored (intents left pending are settled at the next start)");
            }
        }
    }

    /// Books `events` of broker `broker` in memory (book, follow-up orders, realized P&L)
    /// and appends what they change to `batch`. Returns the fills, for the log.
    fn apply_events(
        &self,
        broker: &str,
        events: Vec<BrokerEvent>,
        batch: &mut WriteBatch,
    ) -> Vec<Fill> {
        let Some(slot) = self.brokers.get(broker) else {
            return Vec::new();
        };
        let mut fills = Vec::new();
        for event in events {
            match event {
                BrokerEvent::Fill(fill) => {
                    let (follow, position, closed) = {
                        let mut book = lock(&self.book);
                        let follow = book.on_fill(&fill);
                        let position = book.get(&fill.pipeline, &fill.symbol).cloned();
                        (follow, position, book.drain_closed())
                    };
                    for f in &follow {
                        let mut sim = lock(&slot.sim);
                        match f {
                            FollowUp::ReplaceStop {
                                client_order_id,
                                price,
                                quantity,
                            } => {
                                if let Err(e) = sim.replace_stop(client_order_id, *price, *quantity)
                                {
                                    if position.is_some() {
                                        warn!(%client_order_id, error = %e, "the stop could not be moved to breakeven");
                                    }
                                } else {
                                    info!(pipeline = %fill.pipeline, symbol = %fill.symbol, %price, "stop moved to breakeven after target 1");
                                    if let Some(order) = sim.order(client_order_id) {
                                        batch.push(BatchEntry::Order {
                                            broker: broker.to_string(),
                                            order,
                                        });
                                    }
                                }
                            }
                            FollowUp::CancelGroup(group) => {
                                let ids: Vec<String> = sim
                                    .open_orders()
                                    .into_iter()
                                    .filter(|o| o.oco_group.as_deref() == Some(group.as_str()))
                                    .map(|o| o.client_order_id)
                                    .collect();
                                for id in ids {
                                    if sim.cancel(&id).is_ok()
                                        && let Some(order) = sim.order(&id)
                                    {
                                        batch.push(BatchEntry::Order {
                                            broker: broker.to_string(),
                                            order,
                                        });
                                    }
                                }
                            }
                        }
                    }
                    let order = lock(&slot.sim).order(&fill.client_order_id);
                    for trade in &closed {
                        let total = {
                            let mut realized = lock(&self.realized);
                            let entry = realized.entry(trade.pipeline.clone()).or_default();
                            *entry += trade.pnl;
                            *entry
                        };
                        self.metrics.set_realized_pnl(&trade.pipeline, total);
                        info!(pipeline = %trade.pipeline, symbol = %trade.symbol, pnl = %trade.pnl, reason = trade.exit_reason.as_str(), "trade closed");
                    }
                    batch.push(BatchEntry::Fill {
                        broker: broker.to_string(),
                        fill: fill.clone(),
                        order,
                        position: match position {
                            Some(t) => BookChange::Open(Box::new(t)),
                            None => BookChange::Flat,
                        },
                        closed_trades: closed,
                    });
                    fills.push(fill);
                }
                BrokerEvent::Rejected {
                    client_order_id,
                    reason,
                }
                | BrokerEvent::Cancelled {
                    client_order_id,
                    reason,
                } => {
                    lock(&self.book).drop_entry(&client_order_id);
                    if let Some(order) = lock(&slot.sim).order(&client_order_id) {
                        batch.push(BatchEntry::Order {
                            broker: broker.to_string(),
                            order,
                        });
                    }
                    info!(%client_order_id, %reason, "order closed without a fill");
                }
            }
        }
        fills
    }

    /// Submits an order for a pipeline: intent first, then the broker, then the answer.
    /// An order the broker already has (same client order id, after a restart) is not sent
    /// twice. A failed order is recorded with its reason.
    pub async fn submit(
        &self,
        broker: &str,
        mode: crate::config::pipeline::Mode,
        execution_id: Option<&str>,
        order: Submit,
        move_stop_to_breakeven: bool,
    ) -> Result<OrderState, String> {
        let _guard = self.order_lock.lock().await;
        self.submit_locked(broker, mode, execution_id, order, move_stop_to_breakeven)
            .await
    }

    async fn submit_locked(
        &self,
        broker: &str,
        mode: crate::config::pipeline::Mode,
        execution_id: Option<&str>,
        order: Submit,
        move_stop_to_breakeven: bool,
    ) -> Result<OrderState, String> {
        let now = self.clock.now().timestamp();
        let Some(slot) = self.brokers.get(broker) else {
            return Err(format!("no broker '{broker}'"));
        };
        let id = order.client_order_id().to_string();
        let (pipeline, side) = match &order {
            Submit::Entry(e) => (e.get().pipeline.clone(), e.get().side),
            Submit::Exit(x) => (x.pipeline.clone(), x.side()),
        };
        // Already at the broker (a re-run of the same execution after a restart)?
        if let Some(existing) = lock(&slot.sim).order(&id) {
            info!(client_order_id = %id, "order already at the broker; not sent again");
            return Ok(existing);
        }
        let intent = OrderIntent::for_submit(broker, execution_id, &order, now);
        if let Err(e) = self.store.insert_intent(&intent).await {
            // Without the intent on disk the order must not go out.
            self.metrics.order_rejected(&pipeline, "store");
            return Err(format!("order intent not stored, order not sent: {e}"));
        }
        if let Submit::Entry(e) = &order {
            lock(&self.book).expect_entry(e.get(), move_stop_to_breakeven, mode.as_str());
        }
        let answer = lock(&slot.sim).submit(order, now);
        match answer {
            Ok(state) => {
                let snapshot = self.snapshot(broker);
                if let Err(e) = self
                    .store
                    .record_intent_submitted(&id, &state, snapshot.as_ref(), now)
                    .await
                {
                    warn!(client_order_id = %id, error = %e, "submitted order not stored (the intent stays pending and is settled at the next start)");
                }
                if state.status == crate::broker::OrderStatus::Rejected {
                    let reason = state.reason.clone().unwrap_or_default();
                    self.metrics.order_rejected(&pipeline, "broker");
                    lock(&self.book).drop_entry(&id);
                    warn!(client_order_id = %id, %reason, "order rejected by the broker");
                    return Err(reason);
                }
                self.metrics.order_submitted(&pipeline, mode, side);
                Ok(state)
            }
            Err(e) => {
                lock(&self.book).drop_entry(&id);
                self.metrics.order_rejected(&pipeline, "broker");
                let _ = self
                    .store
                    .mark_intent_failed(&id, &e.to_string(), now)
                    .await;
                warn!(client_order_id = %id, error = %e, "order refused by the broker");
                Err(e.to_string())
            }
        }
    }

    /// This pipeline's position in `symbol`, with whether a closing order is working.
    pub fn position(
        &self,
        pipeline: &str,
        symbol: &str,
        broker: Option<&str>,
    ) -> Option<PositionView> {
        let mut view = lock(&self.book).view(pipeline, symbol)?;
        if let Some(slot) = broker.and_then(|b| self.brokers.get(b)) {
            view.exit_pending = lock(&slot.sim).open_orders().iter().any(|o| {
                o.pipeline == pipeline
                    && o.symbol == symbol
                    && matches!(
                        o.purpose,
                        OrderPurpose::ExitRule
                            | OrderPurpose::EndOfWindow
                            | OrderPurpose::Emergency
                            | OrderPurpose::RiskFlatten
                            | OrderPurpose::PipelineRemoved
                    )
            });
        }
        Some(view)
    }

    /// Realized profit or loss of `pipeline` after fees, USD.
    pub fn realized_pnl(&self, pipeline: &str) -> Decimal {
        lock(&self.realized)
            .get(pipeline)
            .copied()
            .unwrap_or_default()
    }

    /// Whether `pipeline` holds a position in `symbol` (1) or not (0).
    pub fn open_trades_in(&self, pipeline: &str, symbol: &str) -> usize {
        usize::from(lock(&self.book).get(pipeline, symbol).is_some())
    }

    /// Number of open trades of `pipeline`.
    pub fn open_trades(&self, pipeline: &str) -> usize {
        lock(&self.book)
            .open_trades()
            .filter(|t| t.pipeline == pipeline)
            .count()
    }

    /// Counts bars of the strategy timeframe for an open trade (`bars_held`).
    pub fn bar_closed(&self, pipeline: &str, symbol: &str) {
        lock(&self.book).bar_closed(pipeline, symbol);
    }

    /// Why entries of `pipeline` in `symbol` are halted, if they are (latched halts on all,
    /// the pipeline or the symbol).
    pub fn halted(&self, pipeline: &str, symbol: &str) -> Option<String> {
        lock(&self.halts)
            .values()
            .find(|(scope, _)| scope.covers(pipeline, symbol))
            .map(|(scope, reason)| format!("halt on {scope}: {reason}"))
    }

    /// Latched halts.
    pub fn halts(&self) -> Vec<(Scope, String)> {
        lock(&self.halts).values().cloned().collect()
    }

    /// The account of `broker` as the risk manager reads it.
    pub fn account(self: &Arc<Self>, broker: &str) -> BrokerAccount {
        BrokerAccount {
            portfolio: Arc::clone(self),
            broker: broker.to_string(),
        }
    }

    /// Pearson correlation of the daily returns of two symbols over the last
    /// [`crate::risk::evaluate::CORRELATION_LOOKBACK`] days up to `now`.
    pub fn correlation(&self, a: &str, b: &str, now: i64) -> Option<f64> {
        let hub = self.hub.as_ref()?;
        let n = crate::risk::evaluate::CORRELATION_LOOKBACK + 1;
        crate::risk::correlation(
            &hub.closes(a, now, n),
            &hub.closes(b, now, n),
            crate::risk::evaluate::CORRELATION_LOOKBACK,
        )
    }

    fn update_position_metrics(&self) {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for t in lock(&self.book).open_trades() {
            *counts.entry(t.pipeline.clone()).or_default() += 1;
        }
        // Pipelines that had positions and have none now go back to 0.
        let mut seen = lock(&self.position_pipelines);
        for p in seen.iter() {
            counts.entry(p.clone()).or_default();
        }
        for (pipeline, n) in counts {
            self.metrics.set_positions_open(&pipeline, n);
            seen.insert(pipeline);
        }
    }

    /// Forgets a removed pipeline for the positions gauge.
    pub fn forget_pipeline(&self, pipeline: &str) {
        lock(&self.position_pipelines).remove(pipeline);
    }

    /// Sets the positions gauge of a pipeline that has none open.
    pub fn clear_position_metric(&self, pipeline: &str) {
        if self.open_trades(pipeline) == 0 {
            self.metrics.set_positions_open(pipeline, 0);
        }
    }

    /// Market exits for every open position in `scope` (next bar's open; with
    /// `immediately`, filled at once at the last price, as for an emergency). Returns each
    /// position's result.
    ///
    /// Batched for speed without giving up the intent-first rule: every exit's intent is
    /// written in one transaction before any exit reaches the broker; the broker's answers,
    /// the fills, what they change and the broker snapshot are written in a second one.
    /// A crash between the two leaves the intents pending, and the next start matches them
    /// to the broker's orders by client order id.
    pub async fn flatten(
        &self,
        scope: &Scope,
        purpose: OrderPurpose,
        immediately: bool,
    ) -> Vec<CloseResult> {
        let _guard = self.order_lock.lock().await;
        let now = self.clock.now().timestamp();
        let trades: Vec<OpenTrade> = lock(&self.book)
            .open_trades()
            .filter(|t| scope.covers(&t.pipeline, &t.symbol))
            .cloned()
            .collect();
        let mut batch = WriteBatch::new(now);
        let mut touched = std::collections::BTreeSet::new();
        // Cancel working orders in scope first (entries not yet filled, bracket legs).
        for (name, slot) in &self.brokers {
            let cancelled: Vec<OrderState> = {
                let mut sim = lock(&slot.sim);
                let ids: Vec<String> = sim
                    .open_orders()
                    .into_iter()
                    .filter(|o| scope.covers(&o.pipeline, &o.symbol))
                    .map(|o| o.client_order_id)
                    .collect();
                ids.iter()
                    .filter_map(|id| sim.cancel(id).ok().and_then(|()| sim.order(id)))
                    .collect()
            };
            if !cancelled.is_empty() {
                touched.insert(name.clone());
            }
            let mut book = lock(&self.book);
            for order in cancelled {
                book.drop_entry(&order.client_order_id);
                batch.push(BatchEntry::Order {
                    broker: name.clone(),
                    order,
                });
            }
        }
        // Which broker holds each position.
        let mut holders: BTreeMap<(String, String), String> = BTreeMap::new();
        for (name, slot) in &self.brokers {
            for p in lock(&slot.sim).positions() {
                holders.insert((p.pipeline, p.symbol), name.clone());
            }
        }
        struct Exit {
            broker: String,
            order: ExitOrder,
            mode: Mode,
            signed: Decimal,
            known: bool,
        }
        let mut results = Vec::new();
        let mut exits = Vec::new();
        for t in trades {
            let signed = match t.side {
                crate::broker::PositionSide::Long => t.quantity,
                crate::broker::PositionSide::Short => -t.quantity,
            };
            let Some(broker) = holders
                .get(&(t.pipeline.clone(), t.symbol.clone()))
                .cloned()
            else {
                results.push(CloseResult {
                    pipeline: t.pipeline.clone(),
                    symbol: t.symbol.clone(),
                    quantity: signed,
                    status: "failed".into(),
                    price: None,
                    error: Some("no broker holds this position".into()),
                });
                continue;
            };
            let id = client_order_id(
                &t.pipeline,
                &t.symbol,
                &format!("{now}-{}", purpose.as_str()),
                purpose.as_str(),
            );
            let known = self
                .brokers
                .get(&broker)
                .is_some_and(|s| lock(&s.sim).order(&id).is_some());
            let mode =
                serde_json::from_value(Value::String(t.mode.clone())).unwrap_or(Mode::Simulation);
            exits.push(Exit {
                broker,
                order: ExitOrder {
                    client_order_id: id,
                    pipeline: t.pipeline,
                    symbol: t.symbol,
                    position_side: t.side,
                    quantity: t.quantity,
                    order_type: OrderType::Market,
                    purpose,
                    oco_group: Some(t.group),
                },
                mode,
                signed,
                known,
            });
        }
        // Every intent on disk before any order goes out.
        let intents: Vec<OrderIntent> = exits
            .iter()
            .filter(|x| !x.known)
            .map(|x| OrderIntent::exit(&x.broker, None, &x.order, now))
            .collect();
        if !intents.is_empty()
            && let Err(e) = self.store.insert_intents(&intents).await
        {
            for x in exits {
                self.metrics.order_rejected(&x.order.pipeline, "store");
                results.push(CloseResult {
                    pipeline: x.order.pipeline,
                    symbol: x.order.symbol,
                    quantity: x.signed,
                    status: "failed".into(),
                    price: None,
                    error: Some(format!("order intent not stored, order not sent: {e}")),
                });
            }
            self.write(&batch, &[]).await;
            self.update_position_metrics();
            return results;
        }
        let mut fills = Vec::new();
        for x in exits {
            let Some(slot) = self.brokers.get(&x.broker) else {
                continue;
            };
            let id = x.order.client_order_id.clone();
            let (pipeline, symbol, side) = (
                x.order.pipeline.clone(),
                x.order.symbol.clone(),
                x.order.side(),
            );
            touched.insert(x.broker.clone());
            let answer = if x.known {
                info!(client_order_id = %id, "order already at the broker; not sent again");
                lock(&slot.sim)
                    .order(&id)
                    .ok_or_else(|| "the broker lost the order".to_string())
            } else {
                lock(&slot.sim)
                    .submit(Submit::Exit(x.order), now)
                    .map_err(|e| e.to_string())
            };
            let state = match answer {
                Ok(state) => state,
                Err(e) => {
                    self.metrics.order_rejected(&pipeline, "broker");
                    batch.push(BatchEntry::IntentFailed {
                        client_order_id: id.clone(),
                        error: e.clone(),
                    });
                    warn!(client_order_id = %id, error = %e, "order refused by the broker");
                    results.push(CloseResult {
                        pipeline,
                        symbol,
                        quantity: x.signed,
                        status: "failed".into(),
                        price: None,
                        error: Some(e),
                    });
                    continue;
                }
            };
            if !x.known {
                batch.push(BatchEntry::IntentSubmitted {
                    client_order_id: id.clone(),
                });
            }
            if state.status == crate::broker::OrderStatus::Rejected {
                let reason = state.reason.clone().unwrap_or_default();
                self.metrics.order_rejected(&pipeline, "broker");
                warn!(client_order_id = %id, %reason, "order rejected by the broker");
                batch.push(BatchEntry::Order {
                    broker: x.broker.clone(),
                    order: state,
                });
                results.push(CloseResult {
                    pipeline,
                    symbol,
                    quantity: x.signed,
                    status: "failed".into(),
                    price: None,
                    error: Some(reason),
                });
                continue;
            }
            if !x.known {
                self.metrics.order_submitted(&pipeline, x.mode, side);
            }
            let events = if immediately {
                lock(&slot.sim).fill_at_mark(&id, now)
            } else {
                Vec::new()
            };
            let price = events.iter().find_map(|e| match e {
                BrokerEvent::Fill(f) => Some(f.price),
                _ => None,
            });
            if price.is_none() {
                batch.push(BatchEntry::Order {
                    broker: x.broker.clone(),
                    order: state,
                });
            }
            fills.extend(self.apply_events(&x.broker, events, &mut batch));
            results.push(CloseResult {
                pipeline,
                symbol,
                quantity: x.signed,
                status: if price.is_some() {
                    "filled"
                } else {
                    "submitted"
                }
                .into(),
                price,
                error: None,
            });
        }
        for name in touched {
            if let Some(state) = self.snapshot_json(&name) {
                batch.push(BatchEntry::BrokerState {
                    broker: name,
                    state,
                });
            }
        }
        self.write(&batch, &fills).await;
        self.update_position_metrics();
        results
    }

    /// The emergency close: cancel, flatten at market now, latch a halt on the scope, record
    /// an intervention. Answers each position's result.
    pub async fn emergency_close(&self, scope: &Scope, reason: &str) -> Value {
        let started = std::time::Instant::now();
        let now = self.clock.now().timestamp();
        let results = self.flatten(scope, OrderPurpose::Emergency, true).await;
        let halt_reason = format!("emergency close: {reason}");
        lock(&self.halts).insert(scope.key(), (scope.clone(), halt_reason.clone()));
        if let Err(e) = self.store.set_halt(scope, &halt_reason, now).await {
            warn!(error = %e, "halt not stored (it holds until the daemon restarts)");
        }
        let answer = json!({ "scope": scope, "halted": true, "positions": results });
        let intervention = Intervention {
            id: 0,
            at: now,
            kind: InterventionKind::Emergency,
            scope: scope.clone(),
            reason: reason.to_string(),
            result: answer.clone(),
        };
        if let Err(e) = self.store.record_intervention(&intervention).await {
            warn!(error = %e, "intervention not stored");
        }
        self.update_halt_metrics();
        warn!(%scope, %reason, positions = results.len(), duration_ms = started.elapsed().as_secs_f64() * 1000.0, "emergency close");
        answer
    }

    /// Clears the halt on `scope`; records an intervention.
    pub async fn resume(&self, scope: &Scope, reason: Option<&str>) -> Value {
        let now = self.clock.now().timestamp();
        let existed = lock(&self.halts).remove(&scope.key()).is_some();
        let _ = self.store.clear_halt(scope).await;
        let answer = json!({ "scope": scope, "resumed": existed });
        let intervention = Intervention {
            id: 0,
            at: now,
            kind: InterventionKind::Manual,
            scope: scope.clone(),
            reason: reason.unwrap_or("resume").to_string(),
            result: answer.clone(),
        };
        let _ = self.store.record_intervention(&intervention).await;
        self.update_halt_metrics();
        info!(%scope, resumed = existed, "resume");
        answer
    }

    /// Latches a halt (a risk halt) and records it.
    pub async fn halt(&self, scope: &Scope, reason: &str, kind: InterventionKind) {
        let now = self.clock.now().timestamp();
        let fresh = lock(&self.halts)
            .insert(scope.key(), (scope.clone(), reason.to_string()))
            .is_none();
        if fresh {
            let _ = self.store.set_halt(scope, reason, now).await;
            let intervention = Intervention {
                id: 0,
                at: now,
                kind,
                scope: scope.clone(),
                reason: reason.to_string(),
                result: json!({}),
            };
            let _ = self.store.record_intervention(&intervention).await;
            self.update_halt_metrics();
            warn!(%scope, %reason, "halt");
        }
    }

    fn update_halt_metrics(&self) {
        let halts = lock(&self.halts);
        let count = |k: crate::metrics::ScopeKind| {
            halts.values().filter(|(s, _)| s.kind() == k).count() as u64
        };
        self.metrics.set_halts(crate::metrics::HaltCounts {
            all: count(crate::metrics::ScopeKind::All),
            pipeline: count(crate::metrics::ScopeKind::Pipeline),
            symbol: count(crate::metrics::ScopeKind::Symbol),
        });
    }

    /// The broker's equity at the start of the current trading day.
    fn day_start_equity(&self, broker: &str) -> Option<Decimal> {
        lock(&self.day).1.get(broker).copied()
    }

    /// Persists every simulated broker's snapshot (at shutdown).
    pub async fn persist(&self) {
        let now = self.clock.now().timestamp();
        for name in self.brokers.keys() {
            if let Some(s) = self.snapshot(name) {
                let _ = self.store.save_broker_state(name, &s, now).await;
            }
        }
    }

    /// Positions of every broker, for `ztraded plan` and the close answer.
    pub fn positions(&self) -> Vec<Position> {
        self.brokers
            .values()
            .flat_map(|s| lock(&s.sim).positions())
            .collect()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Names of the brokers.
    pub fn broker_names(&self) -> Vec<String> {
        self.brokers.values().map(|b| b.name.clone()).collect()
    }
}

/// One broker account as the risk manager reads it.
pub struct BrokerAccount {
    portfolio: Arc<Portfolio>,
    broker: String,
}

impl AccountSource for BrokerAccount {
    fn equity(&self) -> Decimal {
        self.portfolio
            .brokers
            .get(&self.broker)
            .map_or(Decimal::ZERO, |s| lock(&s.sim).account().equity)
    }
    fn positions(&self) -> Vec<Position> {
        self.portfolio
            .brokers
            .get(&self.broker)
            .map_or_else(Vec::new, |s| lock(&s.sim).positions())
    }
    fn day_pnl(&self) -> Decimal {
        let start = self
            .portfolio
            .day_start_equity(&self.broker)
            .unwrap_or_else(|| self.equity());
        self.equity() - start
    }
}
