//! Flattening a scope, the emergency close, halts and resumes.

use super::{Account, lock};
use crate::broker::{OrderPurpose, OrderStatus, Submit};
use crate::config::pipeline::Mode;
use crate::domain::{Halt, HaltCause, Scope};
use crate::metrics::{HaltCounts, ScopeKind, StoreOperation};
use crate::store::{BatchEntry, Intervention, InterventionKind, OrderIntent, WriteBatch};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use tracing::{info, warn};

/// How closing one position went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseStatus {
    /// The exit filled (its price is given).
    Filled,
    /// The exit is working at the broker (a simulated broker fills it at the next bar's
    /// open; a real one within moments while the market is open).
    Submitted,
    /// The exit could not be sent (the error says why).
    Failed,
}

/// The result of closing one position, as `POST /v1/close` answers it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CloseResult {
    /// Pipeline.
    pub pipeline: String,
    /// Symbol.
    pub symbol: String,
    /// Shares closed (signed as the position was).
    pub quantity: Decimal,
    /// What happened.
    pub status: CloseStatus,
    /// Average fill price, USD per share.
    pub price: Option<Decimal>,
    /// What went wrong.
    pub error: Option<String>,
}

impl Account {
    /// Closes every position in `scope` at market: cancels the working orders in scope
    /// (entries not filled yet, bracket legs), then sends one market exit per position.
    /// The emergency close of scope `all` uses the brokers' bulk requests where they have
    /// them (Alpaca: `DELETE /v2/positions?cancel_orders=true`, which also closes positions
    /// no pipeline owns: an emergency close of everything means the whole account).
    /// Returns each position's result.
    ///
    /// Batched without giving up the intent-first rule: every exit's intent is written in
    /// one transaction before any exit reaches a broker; the brokers' answers, the fills and
    /// what they change are written by the event pass that follows. A crash between the two
    /// leaves the intents pending, and the next start matches them to the brokers' orders by
    /// client order id.
    pub async fn flatten(&self, scope: &Scope, purpose: OrderPurpose) -> Vec<CloseResult> {
        let _guard = self.order_guard().await;
        self.flatten_locked(scope, purpose).await
    }

    /// The emergency close of scope `all` at brokers with a bulk close
    /// ([`crate::broker::Capabilities::bulk_close`]): one request cancels every order and
    /// closes every position of the account. Answers the brokers it closed (the others, and
    /// one whose bulk request failed, close position by position) and each symbol's result.
    async fn bulk_close_locked(&self) -> (BTreeSet<String>, Vec<CloseResult>) {
        let mut done = BTreeSet::new();
        let mut results = Vec::new();
        for (name, slot) in &self.slots {
            if !slot.broker.capabilities().bulk_close {
                continue;
            }
            let parts = match slot.broker.close_all().await {
                Ok(parts) => parts,
                Err(e) => {
                    self.broker_failed(name, &e);
                    warn!(broker = %name, error = %e, "bulk close failed; closing position by position");
                    continue;
                }
            };
            info!(broker = %name, symbols = parts.len(), "bulk close: every order cancelled, every position closing at market");
            done.insert(name.clone());
            let positions = lock(&self.ledger).positions(name).to_vec();
            for part in parts {
                let held = positions.iter().find(|p| p.symbol == part.symbol);
                let (status, price, error) = match (&part.order, &part.error) {
                    (_, Some(e)) => (CloseStatus::Failed, None, Some(e.clone())),
                    (Some(o), None) if o.status == OrderStatus::Filled => {
                        (CloseStatus::Filled, Some(o.average_price), None)
                    }
                    _ if part.status >= 300 => (
                        CloseStatus::Failed,
                        None,
                        Some(format!("HTTP {}", part.status)),
                    ),
                    _ => (CloseStatus::Submitted, None, None),
                };
                results.push(CloseResult {
                    pipeline: held.map(|p| p.pipeline.clone()).unwrap_or_default(),
                    symbol: part.symbol.clone(),
                    quantity: held.map_or(Decimal::ZERO, |p| p.quantity),
                    status,
                    price,
                    error,
                });
            }
            self.pump_locked(name).await;
            self.refresh(name).await;
        }
        (done, results)
    }

    async fn flatten_locked(&self, scope: &Scope, purpose: OrderPurpose) -> Vec<CloseResult> {
        let now = self.now();
        let (bulk, mut results) = if *scope == Scope::All && purpose == OrderPurpose::Emergency {
            self.bulk_close_locked().await
        } else {
            (BTreeSet::new(), Vec::new())
        };
        let mut plan =
            lock(&self.ledger).flatten(scope, purpose, &format!("{now}-{}", purpose.as_str()));
        plan.cancels.retain(|(b, _)| !bulk.contains(b));
        plan.exits.retain(|(b, _)| !bulk.contains(b));
        // Several daemons: a pipeline's own flattens (end of day, its limits, its removal)
        // go out only from the daemon that holds its lease; an emergency close is the
        // operator's, from any daemon.
        if let Some(fences) = &self.fences
            && purpose != OrderPurpose::Emergency
        {
            let ledger = lock(&self.ledger);
            plan.cancels.retain(|(_, id)| {
                ledger
                    .working_order(id)
                    .is_none_or(|w| fences.epoch(&w.order.pipeline).is_some())
            });
            plan.exits
                .retain(|(_, x)| fences.epoch(&x.pipeline).is_some());
        }
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for (broker, id) in &plan.cancels {
            self.cancel_locked(broker, id).await;
            touched.insert(broker.clone());
        }
        for broker in &touched {
            self.pump_locked(broker).await;
        }
        let signed = |x: &crate::broker::ExitOrder| match x.position_side {
            crate::broker::PositionSide::Long => x.quantity,
            crate::broker::PositionSide::Short => -x.quantity,
        };
        // Every intent on disk before any exit goes out.
        let mut known = vec![false; plan.exits.len()];
        if let Some(store) = &self.store
            && !plan.exits.is_empty()
        {
            let intents: Vec<OrderIntent> = plan
                .exits
                .iter()
                .map(|(b, x)| OrderIntent::exit(b, None, x, now))
                .collect();
            match Box::pin(store.insert_intents(&intents)).await {
                Ok(fresh) => {
                    for (k, f) in known.iter_mut().zip(fresh) {
                        *k = !f;
                    }
                }
                Err(e) => {
                    self.store_failed(StoreOperation::Intent, &e);
                    for (_, x) in plan.exits {
                        if let Some(m) = &self.metrics {
                            m.order_rejected(&x.pipeline, "store");
                        }
                        results.push(CloseResult {
                            pipeline: x.pipeline.clone(),
                            symbol: x.symbol.clone(),
                            quantity: signed(&x),
                            status: CloseStatus::Failed,
                            price: None,
                            error: Some(format!("order intent not stored, order not sent: {e}")),
                        });
                    }
                    return results;
                }
            }
        }
        let mut batch = WriteBatch::new(now);
        for ((broker, x), known) in plan.exits.into_iter().zip(known) {
            let Some(slot) = self.slots.get(&broker) else {
                continue;
            };
            touched.insert(broker.clone());
            let (pipeline, symbol, quantity) = (x.pipeline.clone(), x.symbol.clone(), signed(&x));
            let id = x.client_order_id.clone();
            let mode = lock(&self.ledger)
                .trade(&pipeline, &symbol)
                .and_then(|t| super::parse_mode(&t.mode))
                .unwrap_or(Mode::Simulation);
            let existing = if known {
                slot.broker.order(&id).await.ok().flatten()
            } else {
                None
            };
            let answer = match existing {
                Some(state) => {
                    info!(client_order_id = %id, "order already at the broker; not sent again");
                    Ok(state)
                }
                None => slot.broker.submit(Submit::Exit(x)).await,
            };
            match answer {
                Ok(state) => {
                    lock(&self.ledger).track(&broker, &state);
                    batch.push(BatchEntry::IntentSubmitted {
                        client_order_id: id.clone(),
                    });
                    batch.push(BatchEntry::Order {
                        broker: broker.clone(),
                        order: state.clone(),
                    });
                    let (status, price, error) = match state.status {
                        OrderStatus::Filled => {
                            (CloseStatus::Filled, Some(state.average_price), None)
                        }
                        OrderStatus::Rejected | OrderStatus::Cancelled | OrderStatus::Expired => {
                            if let Some(m) = &self.metrics {
                                m.order_rejected(&pipeline, "broker");
                            }
                            (CloseStatus::Failed, None, state.reason.clone())
                        }
                        OrderStatus::Accepted | OrderStatus::PartiallyFilled => {
                            (CloseStatus::Submitted, None, None)
                        }
                    };
                    if status != CloseStatus::Failed
                        && let Some(m) = &self.metrics
                    {
                        m.order_submitted(&pipeline, mode, state.side);
                    }
                    results.push(CloseResult {
                        pipeline,
                        symbol,
                        quantity,
                        status,
                        price,
                        error,
                    });
                }
                Err(e) => {
                    if let Some(m) = &self.metrics {
                        m.order_rejected(&pipeline, "broker");
                    }
                    batch.push(BatchEntry::IntentFailed {
                        client_order_id: id.clone(),
                        error: e.to_string(),
                    });
                    warn!(client_order_id = %id, error = %e, "exit refused by the broker");
                    results.push(CloseResult {
                        pipeline,
                        symbol,
                        quantity,
                        status: CloseStatus::Failed,
                        price: None,
                        error: Some(e.to_string()),
                    });
                }
            }
        }
        if let Some(store) = &self.store
            && !batch.is_empty()
            && let Err(e) = Box::pin(store.write_batch(&batch)).await
        {
            self.store_failed(StoreOperation::Order, &e);
        }
        for broker in &touched {
            self.pump_locked(broker).await;
            self.refresh(broker).await;
        }
        self.update_position_metrics();
        results
    }

    /// The emergency close: cancel, flatten at market now, latch a halt on the scope,
    /// record an intervention. Answers each position's result and the halts afterwards.
    pub async fn emergency_close(&self, scope: &Scope, reason: &str) -> Value {
        let started = std::time::Instant::now();
        let now = self.now();
        let results = self.flatten(scope, OrderPurpose::Emergency).await;
        let halt_reason = format!("emergency close: {reason}");
        self.halt(Halt {
            scope: scope.clone(),
            reason: halt_reason,
            cause: HaltCause::Emergency,
            since: now,
            until: None,
        })
        .await;
        let answer = json!({
            "scope": scope,
            "halted": true,
            "positions": results,
            "halts": self.halts_json(),
        });
        self.record_intervention(
            InterventionKind::Emergency,
            scope,
            reason,
            answer.clone(),
            now,
        )
        .await;
        warn!(%scope, %reason, positions = results.len(), duration_ms = started.elapsed().as_secs_f64() * 1000.0, "emergency close");
        {
            use crate::config::settings::NotifyEvent;
            let failed = results
                .iter()
                .filter(|r| r.status == CloseStatus::Failed)
                .count();
            self.notify(&[NotifyEvent::EmergencyClose], || crate::notify::Notification {
                event: NotifyEvent::EmergencyClose,
                at: now,
                title: format!("emergency close of {scope}: {} positions", results.len()),
                text: format!(
                    "reason: {reason}; {} closing orders sent, {failed} failed; entries halted until resumed",
                    results.len() - failed
                ),
                pipeline: scope.pipeline_name().map(str::to_string),
                symbol: scope.symbol_name().map(str::to_string),
                details: answer.clone(),
            });
        }
        answer
    }

    /// Clears the halts `scope` covers (`all` clears every halt, narrower ones included);
    /// records an intervention. Answers whether any was cleared and the halts afterwards.
    pub async fn resume(&self, scope: &Scope, reason: Option<&str>) -> Value {
        let now = self.now();
        let cleared = lock(&self.ledger).resume(scope);
        if let Some(store) = &self.store {
            for h in &cleared {
                if let Err(e) = Box::pin(store.clear_halt(&h.scope)).await {
                    self.store_failed(StoreOperation::Journal, &e);
                }
            }
        }
        let answer = json!({
            "scope": scope,
            "resumed": !cleared.is_empty(),
            "cleared": cleared.iter().map(|h| json!({"scope": h.scope, "reason": h.reason})).collect::<Vec<_>>(),
            "halts": self.halts_json(),
        });
        self.record_intervention(
            InterventionKind::Manual,
            scope,
            reason.unwrap_or("resume"),
            answer.clone(),
            now,
        )
        .await;
        self.update_halt_metrics();
        info!(%scope, cleared = cleared.len(), "resume");
        answer
    }

    /// Latches `halt`; a halt that holds until resumed is stored (it survives restarts),
    /// and a new one is recorded as an intervention.
    pub async fn halt(&self, halt: Halt) {
        let fresh = lock(&self.ledger).halt(halt.clone());
        if halt.until.is_none()
            && let Some(store) = &self.store
            && let Err(e) = Box::pin(store.set_halt(&halt.scope, &halt.reason, halt.since)).await
        {
            self.store_failed(StoreOperation::Journal, &e);
        }
        if fresh && self.store.is_some() {
            if halt.cause == HaltCause::RiskDailyLoss {
                self.record_intervention(
                    InterventionKind::RiskHalt,
                    &halt.scope,
                    &halt.reason,
                    json!({}),
                    halt.since,
                )
                .await;
            }
            warn!(scope = %halt.scope, reason = %halt.reason, cause = halt.cause.as_str(), "halt");
        }
        // An emergency close is told about as such (with its result), not as a halt too.
        if fresh && halt.cause != HaltCause::Emergency {
            use crate::config::settings::NotifyEvent;
            let event = match halt.cause {
                HaltCause::RiskDailyLoss => NotifyEvent::DailyLoss,
                _ => NotifyEvent::Halt,
            };
            self.notify(&[event], || crate::notify::Notification {
                event,
                at: halt.since,
                title: format!("halt on {}: new entries stopped", halt.scope),
                text: format!(
                    "{}; exits are still managed; `ztraded resume` clears it",
                    halt.reason
                ),
                pipeline: halt.scope.pipeline_name().map(str::to_string),
                symbol: halt.scope.symbol_name().map(str::to_string),
                details: json!({"scope": halt.scope, "reason": halt.reason, "cause": halt.cause, "until": halt.until}),
            });
        }
        self.update_halt_metrics();
    }

    /// The halts that hold, as the close and resume answers list them.
    pub fn halts_json(&self) -> Value {
        Value::Array(
            lock(&self.ledger)
                .halts()
                .into_iter()
                .map(|h| json!({"scope": h.scope, "reason": h.reason, "cause": h.cause, "since": h.since}))
                .collect(),
        )
    }

    /// Records an intervention (emergency close, end of window, risk halt, removal).
    pub async fn record_intervention(
        &self,
        kind: InterventionKind,
        scope: &Scope,
        reason: &str,
        result: Value,
        at: i64,
    ) {
        let Some(store) = &self.store else {
            return;
        };
        let intervention = Intervention {
            id: 0,
            at,
            kind,
            scope: scope.clone(),
            reason: reason.to_string(),
            result,
        };
        if let Err(e) = Box::pin(store.record_intervention(&intervention)).await {
            self.store_failed(StoreOperation::Journal, &e);
        }
    }

    pub(super) fn update_halt_metrics(&self) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let halts = lock(&self.ledger).halts();
        let count = |k: ScopeKind| halts.iter().filter(|h| h.scope.kind() == k).count() as u64;
        metrics.set_halts(HaltCounts {
            all: count(ScopeKind::All),
            pipeline: count(ScopeKind::Pipeline),
            symbol: count(ScopeKind::Symbol),
        });
    }
}
