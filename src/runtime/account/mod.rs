//! [`Account`]: the account side of a trading run — the brokers (reached only through
//! [`Broker`]), the [`Ledger`] that mirrors them, and, in the daemon, the store and the
//! metrics. The backtest and the daemon use this same type; a backtest simply has no store.
//!
//! Crash safety (with a store): an order's intent is written (with its deterministic client
//! order id) before the broker sees the order; the broker's answer and its snapshot are
//! written in one transaction afterwards; the events of a bar (fills, bracket legs placed,
//! cancels) are written in one transaction with the position changes, the closed trades and
//! the broker's snapshot. At start ([`Account::recover`]) the ledger is rebuilt from the
//! store, compared with each broker (the source of truth; differences are logged and the
//! broker wins), and intents left pending are matched to broker orders by client order id.
//!
//! Parts: [`events`](self::events) (broker events into the ledger and the store),
//! [`orders`](self::orders) (submit, cancel, replace), [`flatten`](self::flatten) (flatten,
//! emergency close, halts), [`recovery`](self::recovery) (start-up reconciliation).

mod events;
mod flatten;
mod orders;
mod reconcile;
mod recovery;

pub use flatten::{CloseResult, CloseStatus};
pub use orders::SubmitError;
pub use reconcile::BrokerReconcile;

use crate::agents::dag::AccountSource;
use crate::broker::{Broker, EventStream, Position};
use crate::engine::clock::Clock;
use crate::engine::core::Ledger;
use crate::engine::trades::{EquityPoint, TradeRecord};
use crate::metrics::{Metrics, StoreOperation};
use crate::store::Store;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tracing::warn;

/// The mode of a label (`simulation`, `paper`, …) as recorded with a trade.
fn parse_mode(label: &str) -> Option<crate::config::pipeline::Mode> {
    serde_json::from_value(serde_json::Value::String(label.to_string())).ok()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Slot {
    broker: Arc<dyn Broker>,
    events: std::sync::Mutex<Option<EventStream>>,
    /// The positions vector the ledger held before the last refresh, filled in place by
    /// the next one (a backtest refreshes after every bar).
    spare: std::sync::Mutex<Vec<Position>>,
}

/// How an [`Account`] records what happens.
pub struct AccountOptions {
    /// The store (the daemon); `None` in a backtest.
    pub store: Option<Store>,
    /// The metrics (the daemon).
    pub metrics: Option<Arc<Metrics>>,
    /// The clock (simulated in replay and backtest).
    pub clock: Arc<dyn Clock>,
    /// Keep every closed trade and equity point in memory (the backtest's results).
    pub keep_history: bool,
}

/// See the module documentation.
pub struct Account {
    slots: BTreeMap<String, Slot>,
    ledger: Mutex<Ledger>,
    store: Option<Store>,
    metrics: Option<Arc<Metrics>>,
    /// The notification sinks (the daemon, when `[notify.*]` is set).
    notifier: Option<Arc<crate::notify::Notifier>>,
    clock: Arc<dyn Clock>,
    /// Serializes broker traffic so that the ledger, the store and the broker see the same
    /// order of events.
    order_lock: tokio::sync::Mutex<()>,
    history: Option<Mutex<History>>,
    /// Brokers of the settings this build could not connect, or that refused our keys
    /// since, with the reason.
    unavailable: Mutex<BTreeMap<String, String>>,
    /// The drift each broker showed at its last reconciliation (positions, orders).
    drift: Mutex<BTreeMap<String, DriftSeen>>,
    /// Whether `unavailable` has an entry (read at every step).
    any_unavailable: std::sync::atomic::AtomicBool,
    /// Pipelines the positions gauge has reported.
    position_pipelines: Mutex<BTreeSet<String>>,
    /// Several daemons: the lease epochs order intents are written under; a pipeline
    /// without one submits nothing. `None` with one daemon.
    fences: Option<Arc<crate::lease::Fences>>,
    /// Local trading days of the market time zone, cached (asked at every step), and the
    /// last day the ledger was rolled to from here.
    days: Mutex<Option<(crate::engine::clock::LocalDays, Option<chrono::NaiveDate>)>>,
}

/// The drift a broker showed: positions, orders (as [`BrokerReconcile`] describes them).
type DriftSeen = (Vec<String>, Vec<String>);

/// Closed trades and equity points kept in memory (backtests).
#[derive(Default)]
struct History {
    trades: Vec<TradeRecord>,
    equity: Vec<EquityPoint>,
}

impl Account {
    /// An account over `brokers` (each one's event stream is taken now).
    pub fn new(brokers: Vec<Arc<dyn Broker>>, options: AccountOptions) -> Account {
        let mut ledger = Ledger::new();
        let mut slots = BTreeMap::new();
        for broker in brokers {
            let caps = broker.capabilities();
            ledger.add_broker(broker.name(), caps.brackets);
            ledger.set_crypto_brackets(broker.name(), caps.brackets && caps.crypto_brackets);
            let events = broker.take_events();
            slots.insert(
                broker.name().to_string(),
                Slot {
                    broker,
                    events: std::sync::Mutex::new(events),
                    spare: std::sync::Mutex::new(Vec::new()),
                },
            );
        }
        Account {
            slots,
            ledger: Mutex::new(ledger),
            store: options.store,
            metrics: options.metrics,
            notifier: None,
            clock: options.clock,
            order_lock: tokio::sync::Mutex::new(()),
            history: options.keep_history.then(|| Mutex::new(History::default())),
            unavailable: Mutex::new(BTreeMap::new()),
            any_unavailable: std::sync::atomic::AtomicBool::new(false),
            drift: Mutex::new(BTreeMap::new()),
            days: Mutex::new(None),
            position_pipelines: Mutex::new(BTreeSet::new()),
            fences: None,
        }
    }

    /// Several daemons on one account: from now on every order intent is written under
    /// the pipeline's lease epoch in `fences` and checked against the store's
    /// ([`crate::store::Store::insert_intent_fenced`]); a pipeline this daemon holds no
    /// lease for submits nothing.
    pub fn set_fences(&mut self, fences: Arc<crate::lease::Fences>) {
        self.fences = Some(fences);
    }

    /// Sends notifications to `notifier`'s sinks from now on (fills, stops and targets hit,
    /// halts, daily loss, emergency closes, broker drift).
    pub fn set_notifier(&mut self, notifier: Arc<crate::notify::Notifier>) {
        self.notifier = Some(notifier);
    }

    /// Queues a notification for the sinks that take one of `candidates` (see
    /// [`crate::notify::Notifier::send`]); `build` runs only when one does. Never waits.
    pub fn notify(
        &self,
        candidates: &[crate::config::settings::NotifyEvent],
        build: impl FnOnce() -> crate::notify::Notification,
    ) {
        if let Some(n) = &self.notifier
            && n.wants(candidates)
        {
            n.send(candidates, build());
        }
    }

    /// The ledger (lock it briefly; never across an `.await`).
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    /// The broker `name`.
    pub fn broker(&self, name: &str) -> Option<&Arc<dyn Broker>> {
        self.slots.get(name).map(|s| &s.broker)
    }

    /// Names of the brokers.
    pub fn broker_names(&self) -> Vec<String> {
        self.slots.keys().cloned().collect()
    }

    /// Records that broker `name` of the settings could not be connected, or refused our
    /// keys (HTTP 401), and why: its pipelines fail with the reason at their next step; the
    /// others run.
    pub fn set_unavailable(&self, name: &str, reason: String) {
        lock(&self.unavailable).insert(name.to_string(), reason);
        self.any_unavailable
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Why broker `name` is not usable, if it is a configured broker that is not.
    pub fn unavailable(&self, name: &str) -> Option<String> {
        if !self.any_unavailable() {
            return None;
        }
        lock(&self.unavailable).get(name).cloned()
    }

    /// Whether some configured broker is not usable (see [`Account::set_unavailable`]).
    pub fn any_unavailable(&self) -> bool {
        self.any_unavailable
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the account has a usable broker of this name.
    pub fn has_broker(&self, name: &str) -> bool {
        self.slots.contains_key(name) && self.unavailable(name).is_none()
    }

    /// The store, when there is one.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// The metrics, when there are.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Now, Unix seconds.
    pub fn now(&self) -> i64 {
        self.clock.now().timestamp()
    }

    /// Takes note of a broker error: credentials refused make the broker unusable (its
    /// pipelines fail with the reason, logged once).
    pub(crate) fn broker_failed(&self, broker: &str, error: &crate::broker::BrokerError) {
        if let crate::broker::BrokerError::Unauthorized(reason) = error
            && self.unavailable(broker).is_none()
        {
            tracing::error!(%broker, %reason, "the broker refused our credentials: its pipelines fail; the others keep running");
            self.set_unavailable(broker, reason.clone());
        }
    }

    /// The order lock (see the field): taken at once when it is free, which is the common
    /// case and costs less than queueing for it.
    async fn order_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        match self.order_lock.try_lock() {
            Ok(guard) => guard,
            Err(_) => self.order_lock.lock().await,
        }
    }

    /// Logs and counts a failed store operation.
    fn store_failed(&self, operation: StoreOperation, error: &dyn std::fmt::Display) {
        warn!(operation = operation.as_str(), %error, "store operation failed");
        if let Some(m) = &self.metrics {
            m.store_error(operation);
        }
    }

    /// Asks `broker` for its balances and positions and records them in the ledger (and
    /// the equity gauge).
    pub async fn refresh(&self, broker: &str) {
        let Some(slot) = self.slots.get(broker) else {
            return;
        };
        let mut positions = std::mem::take(&mut *lock(&slot.spare));
        let account = match slot.broker.balances_into(&mut positions).await {
            Ok(account) => account,
            Err(e) => {
                self.broker_failed(broker, &e);
                warn!(%broker, error = %e, "balances not refreshed");
                *lock(&slot.spare) = positions;
                return;
            }
        };
        if let Some(m) = &self.metrics {
            m.set_equity(account.equity);
        }
        let before = lock(&self.ledger).set_account(broker, account, positions);
        *lock(&slot.spare) = before;
    }

    /// Refreshes every broker.
    pub async fn refresh_all(&self) {
        for name in self.slots.keys() {
            self.refresh(name).await;
        }
    }

    /// Positions of every broker as last refreshed.
    pub fn positions(&self) -> Vec<Position> {
        let ledger = lock(&self.ledger);
        self.slots
            .keys()
            .flat_map(|b| ledger.positions(b).to_vec())
            .collect()
    }

    /// The account of `broker` as the risk manager reads it: equity, positions (pending
    /// entries included) and the day's P&L, as of the last refresh; read lazily, only when
    /// a plan reaches the risk manager.
    pub fn risk_view<'a>(&'a self, broker: &'a str) -> RiskView<'a> {
        RiskView {
            account: self,
            broker,
        }
    }

    /// Records an equity point of every broker at `t` (in memory for a backtest, in the
    /// store for the daemon).
    pub async fn record_equity(&self, t: i64) {
        if let Some(h) = &self.history {
            let (equity, cash) = {
                let ledger = lock(&self.ledger);
                self.slots
                    .keys()
                    .filter_map(|b| ledger.account(b))
                    .fold((Decimal::ZERO, Decimal::ZERO), |(e, c), a| {
                        (e + a.equity, c + a.cash)
                    })
            };
            lock(h).equity.push(EquityPoint {
                ts: t,
                equity,
                cash,
            });
        }
        let Some(store) = &self.store else {
            return;
        };
        let points: Vec<(String, EquityPoint)> = {
            let ledger = lock(&self.ledger);
            self.slots
                .keys()
                .filter_map(|b| {
                    ledger.account(b).map(|a| {
                        (
                            b.clone(),
                            EquityPoint {
                                ts: t,
                                equity: a.equity,
                                cash: a.cash,
                            },
                        )
                    })
                })
                .collect()
        };
        for (broker, point) in &points {
            if let Err(e) = Box::pin(store.append_equity(broker, "default", point)).await {
                self.store_failed(StoreOperation::Equity, &e);
            }
        }
    }

    /// Takes the closed trades and equity points kept so far (with `keep_history`); the
    /// history starts empty again.
    pub fn take_history(&self) -> (Vec<TradeRecord>, Vec<EquityPoint>) {
        match &self.history {
            Some(h) => {
                let mut h = lock(h);
                (std::mem::take(&mut h.trades), std::mem::take(&mut h.equity))
            }
            None => (Vec::new(), Vec::new()),
        }
    }

    /// Makes room for `points` more equity points in the history (a backtest knows how
    /// many steps it will record), so that the curve is not copied as it grows.
    pub fn reserve_history(&self, points: usize) {
        if let Some(h) = &self.history {
            lock(h).equity.reserve(points);
        }
    }

    fn keep_trades(&self, trades: &[TradeRecord]) {
        if let Some(h) = &self.history
            && !trades.is_empty()
        {
            lock(h).trades.extend(trades.iter().cloned());
        }
    }

    fn update_position_metrics(&self) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for t in lock(&self.ledger).open_trades() {
            *counts.entry(t.pipeline.clone()).or_default() += 1;
        }
        // Pipelines that had positions and have none now go back to 0.
        let mut seen = lock(&self.position_pipelines);
        for p in seen.iter() {
            counts.entry(p.clone()).or_default();
        }
        for (pipeline, n) in counts {
            metrics.set_positions_open(&pipeline, n);
            seen.insert(pipeline);
        }
    }

    /// Saves every broker's snapshot to the store (at shutdown; it is also saved with
    /// every change).
    pub async fn persist(&self) {
        let Some(store) = &self.store else {
            return;
        };
        let now = self.now();
        for (name, slot) in &self.slots {
            if let Some(state) = slot.broker.snapshot()
                && let Err(e) = Box::pin(store.save_broker_state(name, &*state, now)).await
            {
                self.store_failed(StoreOperation::State, &e);
            }
        }
    }

    /// Forgets a removed pipeline for the positions gauge.
    pub fn forget_pipeline(&self, pipeline: &str) {
        lock(&self.position_pipelines).remove(pipeline);
    }
}

/// The account as the risk manager reads it (see [`Account::risk_view`]).
pub struct RiskView<'a> {
    account: &'a Account,
    broker: &'a str,
}

impl AccountSource for RiskView<'_> {
    fn equity(&self) -> Decimal {
        self.account
            .ledger()
            .account(self.broker)
            .map_or(Decimal::ZERO, |a| a.equity)
    }
    fn positions(&self) -> Vec<Position> {
        self.account.ledger().risk_positions(self.broker)
    }
    fn day_pnl(&self) -> Decimal {
        self.account.ledger().day_pnl(self.broker)
    }
}
