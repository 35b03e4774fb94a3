//! Broker events into the ledger and the store: bars at the simulated broker, the event
//! streams drained in order, what follows from them (stop to breakeven, the rest of a
//! bracket cancelled, legs of brokers without native brackets).

use super::{Account, lock};
use crate::broker::{BrokerEvent, Fill, OrderPurpose};
use crate::engine::core::{BarBatch, Intent};
use crate::metrics::StoreOperation;
use crate::store::{BatchEntry, BookChange, WriteBatch};
use tracing::{info, warn};

impl Account {
    /// Processes one batch of closed bars: the trading day rolls (the day-start equity is
    /// what the brokers reported before these bars), every broker gets the bars (the
    /// simulated broker fills orders at their open and checks stops and targets against
    /// their range), their events are booked and stored, and balances are refreshed.
    pub async fn on_bars(&self, batch: &BarBatch, tz: chrono_tz::Tz) {
        let _guard = self.order_guard().await;
        self.roll_day(batch.end, tz);
        for (name, slot) in &self.slots {
            for e in &batch.bars {
                if let Err(err) = slot.broker.on_bar(&e.symbol, &e.bar).await {
                    warn!(broker = %name, symbol = %e.symbol, error = %err, "bar not delivered to the broker");
                }
            }
            let events = self.pump_locked(name).await;
            // Balances change with fills and, while positions are open, with every close.
            let holds = {
                let ledger = lock(&self.ledger);
                !ledger.positions(name).is_empty() || ledger.account(name).is_none()
            };
            if events > 0 || holds {
                self.refresh(name).await;
            }
        }
        self.update_position_metrics();
    }

    /// Starts the trading day of instant `t` in `tz` when it is a new one (see
    /// [`crate::engine::core::Ledger::roll_day`]); a bar closing at local midnight belongs
    /// to the day that ended.
    pub fn roll_day(&self, t: i64, tz: chrono_tz::Tz) {
        let day = {
            let mut days = lock(&self.days);
            let (days, rolled) =
                days.get_or_insert_with(|| (crate::engine::clock::LocalDays::new(tz), None));
            let day = days.date(t - 1);
            // The ledger's day only moves forward: a day rolled once is a no-op the next
            // times (every bar of the day asks), so the ledger is not locked for it.
            if *rolled == Some(day) {
                return;
            }
            *rolled = Some(day);
            day
        };
        lock(&self.ledger).roll_day(day);
    }

    /// Books the events of each broker whose events arrive on their own
    /// ([`crate::broker::Capabilities::streams`]: Alpaca, IBKR) as they arrive: one task per
    /// such broker waits on its stream and books what came (with what follows from it)
    /// under the order lock, so fills are recorded within milliseconds of the broker's
    /// message. The simulated broker's events stay booked with the bars that cause them.
    pub fn watch_events(self: &std::sync::Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for (name, slot) in &self.slots {
            if !slot.broker.capabilities().streams {
                continue;
            }
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let Some(mut source) = lock(&slot.events).replace(rx) else {
                continue;
            };
            let account = std::sync::Arc::clone(self);
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(first) = source.recv().await {
                    if tx.send(first).is_err() {
                        return;
                    }
                    while let Ok(more) = source.try_recv() {
                        if tx.send(more).is_err() {
                            return;
                        }
                    }
                    account.pump(&name).await;
                }
                warn!(broker = %name, "the broker's event stream ended");
            }));
        }
        tasks
    }

    /// Books whatever `broker` reported since the last call (the daemon calls it when a
    /// real broker's stream has events).
    pub async fn pump(&self, broker: &str) {
        let _guard = self.order_guard().await;
        if self.pump_locked(broker).await > 0 {
            self.refresh(broker).await;
            self.update_position_metrics();
        }
    }

    /// Drains `broker`'s event stream until it is empty; what the events cause (cancels,
    /// replaces, legs) is sent and its own events are drained too. The caller holds the
    /// order lock.
    pub(super) async fn pump_locked(&self, broker: &str) -> usize {
        let Some(slot) = self.slots.get(broker) else {
            return 0;
        };
        let mut total = 0;
        // Follow-ups of follow-ups are bounded by the bracket (a handful of legs).
        for _ in 0..16 {
            let events: Vec<BrokerEvent> = {
                let mut rx = lock(&slot.events);
                let Some(rx) = rx.as_mut() else {
                    return total;
                };
                let mut events = Vec::new();
                while let Ok(e) = rx.try_recv() {
                    events.push(e);
                }
                events
            };
            if events.is_empty() {
                return total;
            }
            total += events.len();
            let follow = self.handle_events(broker, events).await;
            if follow.is_empty() {
                continue;
            }
            for intent in follow {
                self.follow_up_locked(intent).await;
            }
        }
        warn!(%broker, "broker events kept coming; the rest is booked at the next pass");
        total
    }

    /// Books `events` of `broker` in the ledger and stores them with the broker's snapshot
    /// in one transaction. Returns the follow-ups to send.
    async fn handle_events(&self, broker: &str, events: Vec<BrokerEvent>) -> Vec<Intent> {
        let now = self.now();
        let mut batch = self.store.as_ref().map(|_| WriteBatch::new(now));
        let mut follow = Vec::new();
        let mut fills: Vec<Fill> = Vec::new();
        for event in events {
            let applied = lock(&self.ledger).apply(broker, &event);
            match event {
                BrokerEvent::Fill { fill, order } => {
                    for t in &applied.closed {
                        if self.store.is_some() {
                            info!(pipeline = %t.pipeline, symbol = %t.symbol, pnl = %t.pnl, reason = t.exit_reason.as_str(), "trade closed");
                        }
                        if let Some(m) = &self.metrics {
                            m.set_realized_pnl(
                                &t.pipeline,
                                lock(&self.ledger).realized(&t.pipeline),
                            );
                        }
                    }
                    self.keep_trades(&applied.closed);
                    self.notify_fill(broker, &fill, &applied.closed);
                    if let Some(batch) = batch.as_mut() {
                        batch.push(BatchEntry::Fill {
                            broker: broker.to_string(),
                            fill: fill.clone(),
                            order: Some(order),
                            position: match applied.position {
                                Some(Some(t)) => BookChange::Open(Box::new(t)),
                                Some(None) => BookChange::Flat,
                                None => BookChange::Unchanged,
                            },
                            closed_trades: applied.closed,
                        });
                    }
                    fills.push(fill);
                }
                other => {
                    match &other {
                        _ if self.store.is_none() => {}
                        BrokerEvent::Cancelled { order, reason }
                        | BrokerEvent::Rejected { order, reason } => {
                            info!(client_order_id = %order.client_order_id, %reason, status = order.status.as_str(), "order closed without a fill");
                        }
                        BrokerEvent::Expired { order } => {
                            info!(client_order_id = %order.client_order_id, "order expired");
                        }
                        _ => {}
                    }
                    if let Some(batch) = batch.as_mut() {
                        let order = match other {
                            BrokerEvent::Accepted { order }
                            | BrokerEvent::Cancelled { order, .. }
                            | BrokerEvent::Rejected { order, .. }
                            | BrokerEvent::Expired { order }
                            | BrokerEvent::Replaced { order }
                            | BrokerEvent::Fill { order, .. } => order,
                        };
                        batch.push(BatchEntry::Order {
                            broker: broker.to_string(),
                            order,
                        });
                    }
                }
            }
            follow.extend(applied.follow_ups);
        }
        if let (Some(store), Some(mut batch)) = (&self.store, batch) {
            if let Some(state) = self.slots.get(broker).and_then(|s| s.broker.snapshot()) {
                batch.push(BatchEntry::BrokerState {
                    broker: broker.to_string(),
                    state,
                });
            }
            match Box::pin(store.write_batch(&batch)).await {
                Ok(_) => {
                    for fill in &fills {
                        info!(pipeline = %fill.pipeline, symbol = %fill.symbol, side = fill.side.as_str(), quantity = %fill.quantity, price = %fill.price, purpose = fill.purpose.as_str(), "fill");
                    }
                }
                Err(e) => {
                    warn!(error = %e, writes = batch.entries.len(), fills = fills.len(), "fills and orders not stored (intents left pending are settled at the next start)");
                    self.store_failed(StoreOperation::Fill, &e);
                }
            }
        }
        follow
    }

    /// Tells the sinks about `fill` (a stop fill as `stop_hit`, a target fill as
    /// `target_hit` where a sink takes them, else as `fill`), with the P&L of the trades it
    /// closed.
    fn notify_fill(
        &self,
        broker: &str,
        fill: &Fill,
        closed: &[crate::engine::trades::TradeRecord],
    ) {
        use crate::config::settings::NotifyEvent;
        let candidates: &[NotifyEvent] = match fill.purpose {
            OrderPurpose::StopLoss => &[NotifyEvent::StopHit, NotifyEvent::Fill],
            OrderPurpose::Target1 | OrderPurpose::Target2 => {
                &[NotifyEvent::TargetHit, NotifyEvent::Fill]
            }
            _ => &[NotifyEvent::Fill],
        };
        self.notify(candidates, || {
            let pnl: Option<rust_decimal::Decimal> =
                (!closed.is_empty()).then(|| closed.iter().map(|t| t.pnl).sum());
            let what = match fill.purpose {
                OrderPurpose::StopLoss => "stop hit",
                OrderPurpose::Target1 => "target 1 hit",
                OrderPurpose::Target2 => "target 2 hit",
                _ => "fill",
            };
            let mut text = format!(
                "pipeline {}, {} order {} at {}",
                fill.pipeline,
                fill.purpose.as_str(),
                fill.client_order_id,
                broker
            );
            if let Some(pnl) = pnl {
                text.push_str(&format!("; trade closed, P&L {} USD", pnl.round_dp(2)));
            }
            crate::notify::Notification {
                event: NotifyEvent::Fill,
                at: fill.ts,
                title: format!(
                    "{what}: {} {} {} at {} USD",
                    fill.side.as_str(),
                    fill.quantity.normalize(),
                    fill.symbol,
                    fill.price.normalize()
                ),
                text,
                pipeline: Some(fill.pipeline.clone()),
                symbol: Some(fill.symbol.clone()),
                details: serde_json::json!({
                    "broker": broker,
                    "client_order_id": fill.client_order_id,
                    "side": fill.side.as_str(),
                    "quantity": fill.quantity,
                    "price": fill.price,
                    "commission": fill.commission,
                    "purpose": fill.purpose.as_str(),
                    "realized_pnl": pnl,
                }),
            }
        });
    }

    /// Sends one follow-up of a broker event (the caller holds the order lock).
    async fn follow_up_locked(&self, intent: Intent) {
        match intent {
            Intent::ReplaceStop {
                broker,
                client_order_id,
                price,
                quantity,
            } => {
                self.replace_stop_locked(&broker, &client_order_id, price, quantity)
                    .await;
            }
            Intent::Cancel {
                broker,
                client_order_id,
            } => self.cancel_locked(&broker, &client_order_id).await,
            Intent::Submit {
                broker,
                order,
                execution_id,
            } => {
                let mode = lock(&self.ledger)
                    .trade(order.pipeline(), order.symbol())
                    .map(|t| t.mode.clone())
                    .unwrap_or_default();
                let mode =
                    super::parse_mode(&mode).unwrap_or(crate::config::pipeline::Mode::Simulation);
                if let Err(e) = self
                    .submit_unpumped(&broker, mode, execution_id.as_deref(), order, false)
                    .await
                {
                    warn!(%broker, error = %e, "bracket leg not placed: the position has no broker-side protection for it");
                }
            }
            other => warn!(intent = ?other, "not a follow-up of a broker event; ignored"),
        }
    }
}
