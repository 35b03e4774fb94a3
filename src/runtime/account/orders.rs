//! Orders: submit (intent first, then the broker, then its answer), cancel, replace.

use super::{Account, lock};
use crate::broker::{BrokerError, OrderState, OrderStatus, Submit};
use crate::config::pipeline::Mode;
use crate::metrics::StoreOperation;
use crate::store::OrderIntent;
use rust_decimal::Decimal;
use tracing::{debug, info, warn};

/// Why a submission did not go through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The intent could not be written, so the order was not sent.
    #[error("order intent not stored, order not sent: {0}")]
    Store(String),
    /// Several daemons: this daemon does not hold the pipeline's lease (any more), or the
    /// store has a later holder's epoch; the order was not sent.
    #[error("lease not held, order not sent: {0}")]
    Fenced(String),
    /// No broker of that name.
    #[error("no broker '{0}'")]
    NoBroker(String),
    /// The broker refused the order.
    #[error("rejected by the broker: {0}")]
    Rejected(String),
    /// The broker could not be reached and does not know the order: its outcome is
    /// unknown until the broker answers; the intent stays pending and is settled by client
    /// order id (never sent twice).
    #[error("broker unavailable, outcome unknown: {0}")]
    Unknown(String),
}

impl Account {
    /// Submits `order` for a pipeline through `broker`: its intent is written to the store
    /// first (without it the order is not sent); the broker's answer is stored with its
    /// snapshot; a risk-approved entry is remembered in the ledger before it goes out, so
    /// that it counts as a position while it is pending. An order the broker already has
    /// (same client order id, after a restart) is not sent twice. A failed order is
    /// recorded with its reason.
    ///
    /// # Errors
    /// [`SubmitError`].
    pub async fn submit(
        &self,
        broker: &str,
        mode: Mode,
        execution_id: Option<&str>,
        order: Submit,
        move_stop_to_breakeven: bool,
    ) -> Result<OrderState, SubmitError> {
        let _guard = self.order_guard().await;
        let answer = self
            .submit_unpumped(broker, mode, execution_id, order, move_stop_to_breakeven)
            .await;
        self.pump_locked(broker).await;
        answer
    }

    /// [`Account::submit`] without draining the broker's events afterwards (the caller
    /// holds the order lock and drains them).
    pub(super) async fn submit_unpumped(
        &self,
        broker: &str,
        mode: Mode,
        execution_id: Option<&str>,
        order: Submit,
        move_stop_to_breakeven: bool,
    ) -> Result<OrderState, SubmitError> {
        let now = self.now();
        let Some(slot) = self.slots.get(broker) else {
            return Err(SubmitError::NoBroker(broker.to_string()));
        };
        let id = order.client_order_id().to_string();
        let pipeline = order.pipeline().to_string();
        let side = order.side();
        if let Some(store) = &self.store {
            let intent = OrderIntent::for_submit(broker, execution_id, &order, now);
            let written = match &self.fences {
                None => Box::pin(store.insert_intent(&intent)).await,
                Some(fences) => match fences.epoch(&pipeline) {
                    Some(epoch) => Box::pin(store.insert_intent_fenced(&intent, epoch)).await,
                    None => Err(crate::store::StoreError::Fenced {
                        pipeline: pipeline.clone(),
                        epoch: 0,
                        stored: None,
                    }),
                },
            };
            match written {
                Ok(true) => {}
                Ok(false) => {
                    // Written before: a re-run of the same decision after a restart.
                    if let Ok(Some(existing)) = slot.broker.order(&id).await {
                        info!(client_order_id = %id, "order already at the broker; not sent again");
                        lock(&self.ledger).track(broker, &existing);
                        return Ok(existing);
                    }
                }
                Err(e @ crate::store::StoreError::Fenced { .. }) => {
                    warn!(client_order_id = %id, %pipeline, error = %e, "order not sent: this daemon does not hold the pipeline's lease");
                    if let Some(m) = &self.metrics {
                        m.order_rejected(&pipeline, "lease");
                    }
                    return Err(SubmitError::Fenced(e.to_string()));
                }
                Err(e) => {
                    self.store_failed(StoreOperation::Intent, &e);
                    if let Some(m) = &self.metrics {
                        m.order_rejected(&pipeline, "store");
                    }
                    return Err(SubmitError::Store(e.to_string()));
                }
            }
        }
        // Several daemons: the lease may have lapsed while the intent was written (a pause
        // longer than the TTL); the order goes out only while it is still held.
        if let (Some(fences), Some(store)) = (&self.fences, &self.store)
            && fences.epoch(&pipeline).is_none()
        {
            warn!(client_order_id = %id, %pipeline, "order not sent: the pipeline's lease lapsed after its intent was written");
            if let Err(e) = Box::pin(store.mark_intent_failed(
                &id,
                "not submitted: the pipeline's lease lapsed before the submission",
                now,
            ))
            .await
            {
                self.store_failed(StoreOperation::Order, &e);
            }
            if let Some(m) = &self.metrics {
                m.order_rejected(&pipeline, "lease");
            }
            return Err(SubmitError::Fenced(format!(
                "the lease of pipeline {pipeline} lapsed"
            )));
        }
        if let Submit::Entry(e) = &order {
            lock(&self.ledger).expect_entry(e.get(), move_stop_to_breakeven, mode.as_str());
        }
        match slot.broker.submit(order).await {
            Ok(state) => {
                self.record_submitted(broker, &state, now).await;
                lock(&self.ledger).track(broker, &state);
                if state.status == OrderStatus::Rejected {
                    let reason = state.reason.clone().unwrap_or_default();
                    lock(&self.ledger).drop_entry(&id);
                    if let Some(m) = &self.metrics {
                        m.order_rejected(&pipeline, "broker");
                    }
                    warn!(client_order_id = %id, %reason, "order rejected by the broker");
                    return Err(SubmitError::Rejected(reason));
                }
                if let Some(m) = &self.metrics {
                    m.order_submitted(&pipeline, mode, side);
                }
                Ok(state)
            }
            Err(BrokerError::Unavailable(e)) => {
                // Unknown outcome: ask for the order by its id before anything else.
                match slot.broker.order(&id).await {
                    Ok(Some(state)) => {
                        info!(client_order_id = %id, "the broker has the order after an unknown outcome");
                        self.record_submitted(broker, &state, now).await;
                        lock(&self.ledger).track(broker, &state);
                        if let Some(m) = &self.metrics {
                            m.order_submitted(&pipeline, mode, side);
                        }
                        Ok(state)
                    }
                    _ => {
                        warn!(client_order_id = %id, error = %e, "broker unavailable: the order's outcome is unknown; its intent stays pending and is settled by client order id");
                        if let Some(m) = &self.metrics {
                            m.order_rejected(&pipeline, "unavailable");
                        }
                        Err(SubmitError::Unknown(e))
                    }
                }
            }
            Err(e) => {
                self.broker_failed(broker, &e);
                lock(&self.ledger).drop_entry(&id);
                if let Some(m) = &self.metrics {
                    m.order_rejected(&pipeline, "broker");
                }
                if let Some(store) = &self.store
                    && let Err(se) =
                        Box::pin(store.mark_intent_failed(&id, &e.to_string(), now)).await
                {
                    self.store_failed(StoreOperation::Order, &se);
                }
                warn!(client_order_id = %id, error = %e, "order refused by the broker");
                Err(SubmitError::Rejected(e.to_string()))
            }
        }
    }

    async fn record_submitted(&self, broker: &str, state: &OrderState, now: i64) {
        let Some(store) = &self.store else {
            return;
        };
        let snapshot = self.slots.get(broker).and_then(|s| s.broker.snapshot());
        if let Err(e) = Box::pin(store.record_intent_submitted(
            &state.client_order_id,
            state,
            snapshot.as_deref(),
            now,
        ))
        .await
        {
            self.store_failed(StoreOperation::Order, &e);
        }
    }

    /// Cancels working order `client_order_id` at `broker`.
    pub async fn cancel(&self, broker: &str, client_order_id: &str) {
        let _guard = self.order_guard().await;
        self.cancel_locked(broker, client_order_id).await;
        self.pump_locked(broker).await;
    }

    pub(super) async fn cancel_locked(&self, broker: &str, client_order_id: &str) {
        let Some(slot) = self.slots.get(broker) else {
            return;
        };
        if let Err(e) = slot.broker.cancel(client_order_id).await {
            warn!(%broker, %client_order_id, error = %e, "cancel failed");
        }
    }

    /// Moves working stop `client_order_id` at `broker` to `price` for `quantity` shares.
    pub async fn replace_stop(
        &self,
        broker: &str,
        client_order_id: &str,
        price: Decimal,
        quantity: Decimal,
    ) {
        let _guard = self.order_guard().await;
        self.replace_stop_locked(broker, client_order_id, price, quantity)
            .await;
        self.pump_locked(broker).await;
    }

    pub(super) async fn replace_stop_locked(
        &self,
        broker: &str,
        client_order_id: &str,
        price: Decimal,
        quantity: Decimal,
    ) {
        let Some(slot) = self.slots.get(broker) else {
            return;
        };
        // A bar can fill target 1 and close the rest of the position (target 2, the stop)
        // before the breakeven move is sent: a stop that no longer works is not moved.
        if lock(&self.ledger).working_order(client_order_id).is_none() {
            debug!(%client_order_id, "stop not moved to breakeven: it no longer works");
            return;
        }
        match slot
            .broker
            .replace_stop(client_order_id, price, quantity)
            .await
        {
            Ok(()) => {
                if self.store.is_some() {
                    info!(%client_order_id, %price, "stop moved to breakeven after target 1");
                }
            }
            Err(e) => warn!(%client_order_id, error = %e, "the stop could not be moved"),
        }
    }
}
