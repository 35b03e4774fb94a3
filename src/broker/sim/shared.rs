//! [`SharedSimBroker`]: the simulated broker behind the async [`Broker`] trait.

use super::{SimBroker, SimState};
use crate::broker::{Account, Broker, BrokerError, BrokerEvent, OrderState, Position, Submit};
use crate::market::Bar;
use async_trait::async_trait;
use rust_decimal::Decimal;
use std::sync::{Arc, Mutex, MutexGuard};

/// Source of the current time, Unix seconds.
type Now = Arc<dyn Fn() -> i64 + Send + Sync>;

/// A cloneable handle to one [`SimBroker`] implementing the async [`Broker`] trait for the
/// daemon, plus the feed-side calls ([`on_bar`](Self::on_bar), [`mark`](Self::mark)) and
/// persistence ([`snapshot`](Self::snapshot)).
///
/// Locking: a `std::sync::Mutex`. Every call locks, works synchronously (microseconds, no
/// I/O) and unlocks before returning; no lock is ever held across an `.await`, which is the
/// case the standard mutex is meant for (an async mutex would only add overhead). A panic
/// while the lock is held poisons it; every later call then fails with
/// [`BrokerError::Unavailable`] instead of working on half-updated state.
///
/// Submission time comes from `now` (Unix seconds): the daemon passes its clock, wall time
/// live and simulated time in replay and backtest, so a market order submitted when bar `k`
/// closes fills at the open of bar `k + 1`.
#[derive(Clone)]
pub struct SharedSimBroker {
    inner: Arc<Mutex<SimBroker>>,
    name: Arc<str>,
    now: Now,
}

impl std::fmt::Debug for SharedSimBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSimBroker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SharedSimBroker {
    /// Shares `broker`, taking submission times from `now` (Unix seconds).
    pub fn new(broker: SimBroker, now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        SharedSimBroker {
            name: Arc::from(broker.name()),
            inner: Arc::new(Mutex::new(broker)),
            now: Arc::new(now),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, SimBroker>, BrokerError> {
        self.inner.lock().map_err(|_| {
            BrokerError::Unavailable(format!(
                "simulated broker {}: state lock poisoned by an earlier panic",
                self.name
            ))
        })
    }

    /// [`SimBroker::on_bar`] under the lock.
    ///
    /// Errors: [`BrokerError::Unavailable`] when the lock is poisoned.
    pub fn on_bar(&self, symbol: &str, bar: &Bar) -> Result<Vec<BrokerEvent>, BrokerError> {
        Ok(self.lock()?.on_bar(symbol, bar))
    }

    /// [`SimBroker::mark`] under the lock.
    ///
    /// Errors: [`BrokerError::Unavailable`] when the lock is poisoned.
    pub fn mark(&self, symbol: &str, price: Decimal) -> Result<(), BrokerError> {
        self.lock()?.mark(symbol, price);
        Ok(())
    }

    /// [`SimBroker::snapshot`] under the lock (persist it after every change).
    ///
    /// Errors: [`BrokerError::Unavailable`] when the lock is poisoned.
    pub fn snapshot(&self) -> Result<SimState, BrokerError> {
        Ok(self.lock()?.snapshot())
    }

    /// Runs `f` on the broker under the lock (several calls atomically, e.g. submit then
    /// snapshot).
    ///
    /// Errors: [`BrokerError::Unavailable`] when the lock is poisoned.
    pub fn with<R>(&self, f: impl FnOnce(&mut SimBroker) -> R) -> Result<R, BrokerError> {
        Ok(f(&mut *self.lock()?))
    }
}

#[async_trait]
impl Broker for SharedSimBroker {
    fn name(&self) -> &str {
        &self.name
    }

    async fn account(&self) -> Result<Account, BrokerError> {
        Ok(self.lock()?.account())
    }

    async fn positions(&self) -> Result<Vec<Position>, BrokerError> {
        Ok(self.lock()?.positions())
    }

    async fn submit(&self, order: Submit) -> Result<OrderState, BrokerError> {
        let now = (self.now)();
        self.lock()?.submit(order, now)
    }

    async fn cancel(&self, client_order_id: &str) -> Result<(), BrokerError> {
        self.lock()?.cancel(client_order_id)
    }

    async fn replace_stop(
        &self,
        client_order_id: &str,
        price: Decimal,
        quantity: Decimal,
    ) -> Result<(), BrokerError> {
        self.lock()?.replace_stop(client_order_id, price, quantity)
    }

    async fn order(&self, client_order_id: &str) -> Result<Option<OrderState>, BrokerError> {
        Ok(self.lock()?.order(client_order_id))
    }

    async fn open_orders(&self) -> Result<Vec<OrderState>, BrokerError> {
        Ok(self.lock()?.open_orders())
    }
}
