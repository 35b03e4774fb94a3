//! [`SharedSimBroker`]: the simulated broker behind the async [`Broker`] trait.

use super::{SimBroker, SimState};
use crate::broker::{
    Account, Broker, BrokerError, BrokerEvent, Capabilities, EventStream, Now, OrderPurpose,
    OrderState, OrderStatus, OrderType, Position, Submit,
};
use crate::market::Bar;
use async_trait::async_trait;
use rust_decimal::Decimal;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// A cloneable handle to one [`SimBroker`] implementing the async [`Broker`] trait: the
/// simulated broker of backtests and of the daemon in `simulation` mode.
///
/// Events: every change of an order goes on the stream of [`Broker::take_events`] in the
/// order it happened — `Accepted`/`Rejected` for a submission, `Cancelled` for a cancel,
/// `Replaced` for a moved stop, and what [`SimBroker::on_bar`] reports for a bar. All of
/// them are queued before the call that caused them returns, so a caller that drains the
/// stream right after a call (the backtest, the replaying daemon) sees everything that call
/// did, deterministically.
///
/// Emergency exits (purpose [`OrderPurpose::Emergency`], at market) execute at once at the
/// symbol's last mark with slippage instead of at the next bar's open: an emergency close
/// does not wait for the next bar, as a market order at a real broker fills within moments
/// while the market is open.
///
/// Locking: a `std::sync::Mutex`. Every call locks, works synchronously (microseconds, no
/// I/O) and unlocks before returning; no lock is ever held across an `.await`. A panic
/// while the lock is held poisons it; every later call then fails with
/// [`BrokerError::Unavailable`] instead of working on half-updated state.
///
/// Submission time comes from `now` (Unix seconds): the engine's clock, simulated in replay
/// and backtest, so a market order submitted when bar `k` closes fills at the open of bar
/// `k + 1`.
#[derive(Clone)]
pub struct SharedSimBroker {
    inner: Arc<Mutex<SimBroker>>,
    name: Arc<str>,
    now: Now,
    tx: mpsc::UnboundedSender<BrokerEvent>,
    rx: Arc<Mutex<Option<EventStream>>>,
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
    pub fn new(broker: SimBroker, now: Now) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        SharedSimBroker {
            name: Arc::from(broker.name()),
            inner: Arc::new(Mutex::new(broker)),
            now,
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
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

    fn emit(&self, events: Vec<BrokerEvent>) {
        for e in events {
            // The receiver is gone only when the engine stopped listening.
            let _ = self.tx.send(e);
        }
    }

    /// [`SimBroker::snapshot`] under the lock.
    ///
    /// Errors: [`BrokerError::Unavailable`] when the lock is poisoned.
    pub fn state(&self) -> Result<SimState, BrokerError> {
        Ok(self.lock()?.snapshot())
    }
}

#[async_trait]
impl Broker for SharedSimBroker {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            brackets: true,
            bulk_close: false,
            crypto_brackets: true,
            streams: false,
        }
    }

    async fn account(&self) -> Result<Account, BrokerError> {
        Ok(self.lock()?.account())
    }

    async fn positions(&self) -> Result<Vec<Position>, BrokerError> {
        Ok(self.lock()?.positions())
    }

    async fn balances(&self) -> Result<(Account, Vec<Position>), BrokerError> {
        let broker = self.lock()?;
        Ok((broker.account(), broker.positions()))
    }

    async fn balances_into(&self, positions: &mut Vec<Position>) -> Result<Account, BrokerError> {
        let broker = self.lock()?;
        broker.positions_into(positions);
        Ok(broker.account())
    }

    async fn open_orders(&self) -> Result<Vec<OrderState>, BrokerError> {
        Ok(self.lock()?.open_orders())
    }

    async fn order(&self, client_order_id: &str) -> Result<Option<OrderState>, BrokerError> {
        Ok(self.lock()?.order(client_order_id))
    }

    async fn submit(&self, order: Submit) -> Result<OrderState, BrokerError> {
        let now = (self.now)();
        let emergency = matches!(
            &order,
            Submit::Exit(x) if x.purpose == OrderPurpose::Emergency && x.order_type == OrderType::Market
        );
        let mut events = Vec::new();
        let answer = {
            let mut sim = self.lock()?;
            let id = order.client_order_id().to_string();
            let known = sim.order(&id).is_some();
            let state = sim.submit(order, now)?;
            if !known {
                events.push(match state.status {
                    OrderStatus::Rejected => BrokerEvent::Rejected {
                        reason: state.reason.clone().unwrap_or_default(),
                        order: state.clone(),
                    },
                    _ => BrokerEvent::Accepted {
                        order: state.clone(),
                    },
                });
                if emergency && state.status.is_open() {
                    events.extend(sim.fill_at_mark(&id, now));
                }
            }
            sim.order(&id).unwrap_or(state)
        };
        self.emit(events);
        Ok(answer)
    }

    async fn cancel(&self, client_order_id: &str) -> Result<(), BrokerError> {
        let event = {
            let mut sim = self.lock()?;
            let was_open = sim
                .order(client_order_id)
                .is_some_and(|o| o.status.is_open());
            sim.cancel(client_order_id)?;
            match sim.order(client_order_id) {
                Some(order) if was_open => Some(BrokerEvent::Cancelled {
                    reason: order.reason.clone().unwrap_or_default(),
                    order,
                }),
                _ => None,
            }
        };
        self.emit(event.into_iter().collect());
        Ok(())
    }

    async fn replace_stop(
        &self,
        client_order_id: &str,
        price: Decimal,
        quantity: Decimal,
    ) -> Result<(), BrokerError> {
        let event = {
            let mut sim = self.lock()?;
            sim.replace_stop(client_order_id, price, quantity)?;
            sim.order(client_order_id)
                .map(|order| BrokerEvent::Replaced { order })
        };
        self.emit(event.into_iter().collect());
        Ok(())
    }

    fn take_events(&self) -> Option<EventStream> {
        self.rx.lock().ok().and_then(|mut rx| rx.take())
    }

    async fn on_bar(&self, symbol: &str, bar: &Bar) -> Result<(), BrokerError> {
        let events = self.lock()?.on_bar(symbol, bar);
        self.emit(events);
        Ok(())
    }

    fn snapshot(&self) -> Option<Box<serde_json::value::RawValue>> {
        let state = self.lock().ok()?.snapshot();
        match serde_json::value::to_raw_value(&state) {
            Ok(raw) => Some(raw),
            Err(e) => {
                tracing::warn!(broker = %self.name, error = %e, "broker snapshot not serialized");
                None
            }
        }
    }
}
