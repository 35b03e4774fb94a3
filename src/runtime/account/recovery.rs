//! Start-up reconciliation: the ledger rebuilt from the store and compared with each
//! broker, the source of truth for positions and orders.

use super::{Account, lock};
use crate::broker::{OrderPurpose, Position};
use crate::domain::{Halt, HaltCause};
use crate::engine::book::OpenTrade;
use crate::metrics::StoreOperation;
use crate::store::{IntentOrder, StoreError};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use tracing::{info, warn};

impl Account {
    /// Rebuilds the ledger from the store and the brokers, logging every difference:
    ///
    /// 1. realized P&L of the trades closed so far, and the latched halts;
    /// 2. each broker's balances, positions and working orders;
    /// 3. the open trades of the store, re-adopted with their stops and targets where the
    ///    broker holds the same quantity; the broker's quantity wins where it differs; a
    ///    trade the broker does not hold is dropped; a position the store did not know is
    ///    adopted without stop or targets;
    /// 4. entries still working at a broker get their plan (stop, targets) back from their
    ///    stored intent, so that a fill after the restart opens the trade with them;
    /// 5. intents written but never confirmed: found at the broker (by client order id) they
    ///    are recorded as submitted, otherwise as failed — never sent again.
    ///
    /// Nothing to do without a store.
    ///
    /// # Errors
    /// A store read that fails (the daemon does not start on a store it cannot read).
    pub async fn recover(&self) -> Result<(), StoreError> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        let now = self.now();
        for t in store.trades(None, i64::MIN, i64::MAX).await? {
            lock(&self.ledger).add_realized(&t.pipeline, t.pnl);
        }
        if let Some(m) = &self.metrics {
            for (pipeline, pnl) in lock(&self.ledger).realized_all() {
                m.set_realized_pnl(pipeline, pnl);
            }
        }
        for h in store.halts().await? {
            let cause = if h.reason.starts_with("emergency close") {
                HaltCause::Emergency
            } else {
                HaltCause::Manual
            };
            lock(&self.ledger).halt(Halt {
                scope: h.scope,
                reason: h.reason,
                cause,
                since: h.since,
                until: None,
            });
        }
        self.refresh_all().await;
        let mut positions: BTreeMap<(String, String), (String, Position)> = BTreeMap::new();
        for (name, slot) in &self.slots {
            for p in lock(&self.ledger).positions(name) {
                positions.insert(
                    (p.pipeline.clone(), p.symbol.clone()),
                    (name.clone(), p.clone()),
                );
            }
            match slot.broker.open_orders().await {
                Ok(orders) => {
                    let mut ledger = lock(&self.ledger);
                    for o in &orders {
                        ledger.track(name, o);
                    }
                }
                Err(e) => warn!(broker = %name, error = %e, "open orders not read at start"),
            }
        }
        let stored = store.load_open_trades().await?;
        let mut dropped = Vec::new();
        {
            let mut ledger = lock(&self.ledger);
            for t in stored {
                let key = (t.pipeline.clone(), t.symbol.clone());
                match positions.get(&key) {
                    Some((broker, p)) if p.quantity.abs() == t.quantity => {
                        info!(pipeline = %t.pipeline, symbol = %t.symbol, quantity = %t.quantity, stop = ?t.stop_loss, "open position re-adopted");
                        let mut t = t;
                        if t.broker.is_empty() {
                            t.broker = broker.clone();
                        }
                        ledger.adopt(t);
                    }
                    Some((broker, p)) => {
                        warn!(pipeline = %t.pipeline, symbol = %t.symbol, store = %t.quantity, broker = %p.quantity, "the broker holds a different quantity than the store; the broker wins");
                        let mut t = t;
                        t.quantity = p.quantity.abs();
                        if t.broker.is_empty() {
                            t.broker = broker.clone();
                        }
                        ledger.adopt(t);
                    }
                    None => {
                        warn!(pipeline = %t.pipeline, symbol = %t.symbol, quantity = %t.quantity, "the store has a position the broker does not hold; dropped");
                        dropped.push((t.pipeline.clone(), t.symbol.clone()));
                    }
                }
            }
            for ((pipeline, symbol), (broker, p)) in &positions {
                if pipeline.is_empty() {
                    // No pipeline owns it (a position opened by hand): drift, reported by
                    // the broker reconciliation, never touched.
                    continue;
                }
                if ledger.trade(pipeline, symbol).is_none() {
                    warn!(%pipeline, %symbol, quantity = %p.quantity, "the broker holds a position the store did not know; adopted without stop or targets");
                    ledger.adopt(OpenTrade::adopted(
                        broker,
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
            if let Err(e) = store.delete_open_trade(&pipeline, &symbol).await {
                self.store_failed(StoreOperation::Recovery, &e);
            }
        }
        // Entries still working get their plans back.
        let working: Vec<String> = lock(&self.ledger)
            .working_orders()
            .filter(|w| w.order.purpose == OrderPurpose::Entry)
            .map(|w| w.order.client_order_id.clone())
            .collect();
        for id in working {
            match store.intent(&id).await? {
                Some(intent) => {
                    if let IntentOrder::Entry(plan) = intent.order {
                        info!(client_order_id = %id, pipeline = %plan.pipeline, symbol = %plan.symbol, stop = ?plan.stop_loss, "pending entry re-adopted with its stop and targets");
                        lock(&self.ledger).expect_entry(&plan, false, "");
                    }
                }
                None => {
                    warn!(client_order_id = %id, "a working entry at the broker has no intent in the store; its fill opens a trade without stop or targets")
                }
            }
        }
        // Intents written but not confirmed: the broker tells whether the order went out.
        for intent in store.pending_intents().await? {
            let known = match self.slots.get(&intent.broker) {
                Some(slot) => slot
                    .broker
                    .order(&intent.client_order_id)
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            match known {
                Some(state) => {
                    info!(client_order_id = %intent.client_order_id, "pending intent found at the broker; recorded as submitted");
                    lock(&self.ledger).track(&intent.broker, &state);
                    let snapshot = self
                        .slots
                        .get(&intent.broker)
                        .and_then(|s| s.broker.snapshot());
                    store
                        .record_intent_submitted(
                            &intent.client_order_id,
                            &state,
                            snapshot.as_deref(),
                            now,
                        )
                        .await?;
                    // Working or filled while the daemon was down (its fill is booked from
                    // the broker's events next): either way the trade opens with its stop
                    // and targets.
                    if let IntentOrder::Entry(plan) = &intent.order
                        && (state.status.is_open() || state.filled_quantity > Decimal::ZERO)
                    {
                        lock(&self.ledger).expect_entry(plan, false, "");
                    }
                }
                None => {
                    warn!(client_order_id = %intent.client_order_id, pipeline = %intent.pipeline, "intent never reached the broker before the daemon stopped; recorded as failed, not resent");
                    store
                        .mark_intent_failed(
                            &intent.client_order_id,
                            "not submitted: the daemon stopped between the intent and the submission",
                            now,
                        )
                        .await?;
                }
            }
        }
        self.update_position_metrics();
        self.update_halt_metrics();
        Ok(())
    }
}
