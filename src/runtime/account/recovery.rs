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
    /// 2. the open trades of the store as they were, and each broker's working orders;
    /// 3. what changed while the daemon was down, booked first: orders the store had open
    ///    that the broker no longer lists are looked up (their fills and cancels arrive as
    ///    events); entries working or filled get their plan (stop, targets) back from their
    ///    stored intent; intents written but never confirmed are found at the broker by
    ///    client order id and recorded as submitted, otherwise as failed — never sent again;
    ///    then the events are booked (a fill while down opens its trade with its stop);
    /// 4. the trades compared with the brokers' positions: the broker's quantity wins where
    ///    it differs, a trade the broker does not hold is dropped, a position of a pipeline
    ///    the ledger does not know is adopted without stop or targets, a position no
    ///    pipeline owns is drift.
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
        // 2. The stored open trades as they were, and what the brokers have working.
        let stored = store.load_open_trades().await?;
        {
            let mut ledger = lock(&self.ledger);
            for mut t in stored {
                if t.broker.is_empty() {
                    // Records from before the broker was stored: the only broker that
                    // holds the pipeline's symbol decides below.
                    t.broker = self.slots.keys().next().cloned().unwrap_or_default();
                }
                ledger.adopt(t);
            }
        }
        let mut open_at_broker: std::collections::BTreeSet<String> = Default::default();
        for (name, slot) in &self.slots {
            match slot.broker.open_orders().await {
                Ok(orders) => {
                    let mut ledger = lock(&self.ledger);
                    for o in &orders {
                        ledger.track(name, o);
                        open_at_broker.insert(o.client_order_id.clone());
                    }
                }
                Err(e) => warn!(broker = %name, error = %e, "open orders not read at start"),
            }
        }
        // 3. What changed while the daemon was down, booked before anything is compared:
        //    orders the store had open that the broker no longer lists (filled or cancelled
        //    meanwhile) are looked up, so their events come; entries working or filled get
        //    their plans (stop, targets) back from their intents; intents never confirmed
        //    are settled by client order id.
        for (name, slot) in &self.slots {
            for o in store.orders_of_broker(name).await? {
                let id = &o.state.client_order_id;
                if !o.state.status.is_open() || open_at_broker.contains(id) {
                    continue;
                }
                match slot.broker.order(id).await {
                    Ok(Some(state)) => {
                        info!(client_order_id = %id, status = state.status.as_str(), "an order changed while the daemon was down");
                        if state.purpose == OrderPurpose::Entry
                            && state.filled_quantity > o.state.filled_quantity
                        {
                            open_at_broker.insert(id.clone());
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(broker = %name, client_order_id = %id, error = %e, "order not looked up at start")
                    }
                }
            }
        }
        let entries: Vec<String> = lock(&self.ledger)
            .working_orders()
            .filter(|w| w.order.purpose == OrderPurpose::Entry)
            .map(|w| w.order.client_order_id.clone())
            .chain(open_at_broker.iter().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for id in entries {
            let Some(intent) = store.intent(&id).await? else {
                if lock(&self.ledger)
                    .working_order(&id)
                    .is_some_and(|w| w.order.purpose == OrderPurpose::Entry)
                {
                    warn!(client_order_id = %id, "a working entry at the broker has no intent in the store; its fill opens a trade without stop or targets");
                }
                continue;
            };
            if let IntentOrder::Entry(plan) = intent.order {
                info!(client_order_id = %id, pipeline = %plan.pipeline, symbol = %plan.symbol, stop = ?plan.stop_loss, "pending entry re-adopted with its stop and targets");
                lock(&self.ledger).expect_entry(&plan, false, "");
            }
        }
        for intent in store.pending_intents().await? {
            self.settle_intent(&store, &intent, now, Settle::Restart)
                .await?;
        }
        // The events of those lookups (and any the brokers sent since the start): fills
        // booked onto the trades, legs placed.
        for name in self.slots.keys() {
            self.pump_locked(name).await;
        }
        // 4. Compared with the brokers, the source of truth: where the quantity differs the
        //    broker wins; a trade the broker does not hold is dropped; a position of a
        //    pipeline the ledger does not know is adopted without stop or targets; a
        //    position no pipeline owns is drift (reported by the broker reconciliation).
        self.refresh_all().await;
        let mut positions: BTreeMap<(String, String), (String, Position)> = BTreeMap::new();
        for name in self.slots.keys() {
            for p in lock(&self.ledger).positions(name) {
                positions.insert(
                    (p.pipeline.clone(), p.symbol.clone()),
                    (name.clone(), p.clone()),
                );
            }
        }
        let mut dropped = Vec::new();
        {
            let mut ledger = lock(&self.ledger);
            let trades: Vec<crate::engine::book::OpenTrade> =
                ledger.open_trades().cloned().collect();
            for t in trades {
                let key = (t.pipeline.clone(), t.symbol.clone());
                match positions.get(&key) {
                    Some((broker, p)) if p.quantity.abs() == t.quantity => {
                        info!(pipeline = %t.pipeline, symbol = %t.symbol, quantity = %t.quantity, stop = ?t.stop_loss, "open position re-adopted");
                        if &t.broker != broker {
                            let mut t = t;
                            t.broker = broker.clone();
                            ledger.adopt(t);
                        }
                    }
                    Some((broker, p)) => {
                        warn!(pipeline = %t.pipeline, symbol = %t.symbol, ours = %t.quantity, broker = %p.quantity, "the broker holds a different quantity than the store; the broker wins");
                        let mut t = t;
                        t.quantity = p.quantity.abs();
                        t.broker = broker.clone();
                        ledger.adopt(t);
                    }
                    None => {
                        warn!(pipeline = %t.pipeline, symbol = %t.symbol, quantity = %t.quantity, "the store has a position the broker does not hold; dropped");
                        ledger.forget(&t.pipeline, &t.symbol);
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
        self.update_position_metrics();
        self.update_halt_metrics();
        Ok(())
    }

    /// Several daemons: takes over `pipeline` after this daemon acquired its lease (its
    /// previous holder died, stopped or was cut off), as a restart would: the brokers learn
    /// the pipeline's orders from the store (placed by the previous holder), the ledger's
    /// trades of the pipeline are replaced by the store's (with their stops and targets),
    /// its working orders at the brokers are tracked, its working entries get their plans
    /// back from their intents, and intents of the previous holder that never reached the
    /// broker are recorded as failed — never sent again. Then the trades are compared with
    /// the brokers' positions like at start ([`Account::recover`], step 4).
    ///
    /// # Errors
    /// A store read that fails (the pipeline is not started).
    pub async fn readopt(&self, pipeline: &str) -> Result<(), StoreError> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        let now = self.now();
        let _guard = self.order_guard().await;
        let intents: Vec<crate::store::OrderIntent> = store
            .pending_intents()
            .await?
            .into_iter()
            .filter(|i| i.pipeline == pipeline)
            .collect();
        for (name, slot) in &self.slots {
            let mut orders: Vec<crate::broker::OrderState> = store
                .orders_of_broker(name)
                .await?
                .into_iter()
                .map(|o| o.state)
                .filter(|o| o.pipeline == pipeline)
                .collect();
            orders.extend(
                intents
                    .iter()
                    .filter(|i| &i.broker == name)
                    .map(crate::daemon::pending_order),
            );
            slot.broker.learn_orders(&orders);
        }
        let stored: Vec<OpenTrade> = store
            .load_open_trades()
            .await?
            .into_iter()
            .filter(|t| t.pipeline == pipeline)
            .collect();
        {
            let mut ledger = lock(&self.ledger);
            let ours: Vec<String> = ledger
                .open_trades_of(pipeline)
                .map(|t| t.symbol.clone())
                .collect();
            for symbol in ours {
                ledger.forget(pipeline, &symbol);
            }
            for t in stored {
                info!(%pipeline, symbol = %t.symbol, quantity = %t.quantity, stop = ?t.stop_loss, "open position of the previous lease holder re-adopted");
                ledger.adopt(t);
            }
        }
        for (name, slot) in &self.slots {
            match slot.broker.open_orders().await {
                Ok(orders) => {
                    for o in orders.iter().filter(|o| o.pipeline == pipeline) {
                        lock(&self.ledger).track(name, o);
                        if o.purpose == OrderPurpose::Entry
                            && let Some(intent) = store.intent(&o.client_order_id).await?
                            && let IntentOrder::Entry(plan) = intent.order
                        {
                            lock(&self.ledger).expect_entry(&plan, false, "");
                        }
                    }
                }
                Err(e) => {
                    warn!(broker = %name, %pipeline, error = %e, "open orders not read at the takeover")
                }
            }
        }
        for intent in intents {
            self.settle_intent(&store, &intent, now, Settle::Takeover)
                .await?;
        }
        for name in self.slots.keys() {
            self.pump_locked(name).await;
        }
        self.update_position_metrics();
        Ok(())
    }

    /// Settles an intent left pending (written, its submission's answer never recorded) by
    /// asking its broker for the order by client order id: found, it is recorded as
    /// submitted and tracked (an entry working or filled opens its trade with its stop and
    /// targets, its fill booked from the broker's events next); not found, it never
    /// reached the broker and is recorded as failed. Never sent again either way.
    async fn settle_intent(
        &self,
        store: &crate::store::Store,
        intent: &crate::store::OrderIntent,
        now: i64,
        why: Settle,
    ) -> Result<(), StoreError> {
        let slot = self.slots.get(&intent.broker);
        let known = match slot {
            Some(slot) => slot
                .broker
                .order(&intent.client_order_id)
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let Some(state) = known else {
            let reason = match why {
                Settle::Restart => {
                    warn!(client_order_id = %intent.client_order_id, pipeline = %intent.pipeline, "intent never reached the broker before the daemon stopped; recorded as failed, not resent");
                    "not submitted: the daemon stopped between the intent and the submission"
                }
                Settle::Takeover => {
                    warn!(client_order_id = %intent.client_order_id, pipeline = %intent.pipeline, "the previous holder's intent never reached the broker; recorded as failed, not resent");
                    "not submitted: the lease passed to another daemon between the intent and the submission"
                }
            };
            return store
                .mark_intent_failed(&intent.client_order_id, reason, now)
                .await;
        };
        match why {
            Settle::Restart => {
                info!(client_order_id = %intent.client_order_id, "pending intent found at the broker; recorded as submitted")
            }
            Settle::Takeover => {
                info!(client_order_id = %intent.client_order_id, pipeline = %intent.pipeline, "the previous holder's pending intent is at the broker; recorded as submitted")
            }
        }
        lock(&self.ledger).track(&intent.broker, &state);
        let snapshot = slot.and_then(|s| s.broker.snapshot());
        store
            .record_intent_submitted(&intent.client_order_id, &state, snapshot.as_deref(), now)
            .await?;
        if let IntentOrder::Entry(plan) = &intent.order
            && (state.status.is_open() || state.filled_quantity > Decimal::ZERO)
        {
            lock(&self.ledger).expect_entry(plan, false, "");
        }
        Ok(())
    }
}

/// Why a pending intent is settled (the log line and the failure reason say it).
#[derive(Clone, Copy)]
enum Settle {
    /// At start, after a stop of this daemon.
    Restart,
    /// At the takeover of a pipeline whose lease another daemon held.
    Takeover,
}
