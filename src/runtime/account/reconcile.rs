//! Periodic reconciliation with a real broker (every `[reconcile] broker_interval`, and once
//! after the start-up recovery): the broker is the source of truth.

use super::{Account, lock};
use crate::broker::{
    ExitOrder, OrderPurpose, OrderState, OrderType, Position, Submit, client_order_id,
};
use crate::domain::Scope;
use crate::store::InterventionKind;
use serde_json::json;
use tracing::{info, warn};

/// What one broker reconciliation found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerReconcile {
    /// Positions at the broker that no pipeline owns (`symbol quantity`).
    pub drift_positions: Vec<String>,
    /// Open orders at the broker that are not ours (`symbol side quantity id`).
    pub drift_orders: Vec<String>,
    /// Client order ids of the stops placed for positions of ours found without one.
    pub stops_placed: Vec<String>,
    /// Differences between our open trades and the broker's positions (logged).
    pub differences: Vec<String>,
}

fn describe_position(p: &Position) -> String {
    format!("{} {}", p.symbol, p.quantity)
}

fn describe_order(o: &OrderState) -> String {
    format!(
        "{} {} {} {}",
        o.symbol,
        o.side.as_str(),
        o.quantity,
        if o.client_order_id.is_empty() {
            &o.broker_order_id
        } else {
            &o.client_order_id
        }
    )
}

impl Account {
    /// Reconciles the ledger with `broker` (the source of truth), after booking the events
    /// it reported:
    ///
    /// * positions and open orders at the broker that no pipeline owns are **drift**: logged
    ///   when they change, counted in `ztraded_broker_drift_positions{broker}`, stored as a
    ///   `broker_drift` intervention — never touched;
    /// * an open trade of ours that the broker holds without a working stop order gets its
    ///   stop re-placed at the trade's stop level (a reduce-only stop order with a
    ///   deterministic client order id), recorded as a `stop_replaced` intervention;
    /// * a trade we hold that the broker does not (or holds with another quantity) is
    ///   logged; the broker's events settle it.
    ///
    /// A broker that cannot be read is logged and left for the next pass; one that refuses
    /// our keys fails its pipelines (see [`Account::set_unavailable`]).
    pub async fn reconcile_broker(&self, broker: &str) -> Option<BrokerReconcile> {
        let slot = self.slots.get(broker)?;
        let guard = self.order_lock.lock().await;
        let mut booked = self.pump_locked(broker).await;
        let positions = match slot.broker.positions().await {
            Ok(p) => p,
            Err(e) => {
                self.broker_failed(broker, &e);
                warn!(%broker, error = %e, "broker reconciliation: positions not read; next pass later");
                return None;
            }
        };
        let orders = match slot.broker.open_orders().await {
            Ok(o) => o,
            Err(e) => {
                self.broker_failed(broker, &e);
                warn!(%broker, error = %e, "broker reconciliation: open orders not read; next pass later");
                return None;
            }
        };
        let now = self.now();
        let mut found = BrokerReconcile::default();
        let mut stops: Vec<(String, ExitOrder)> = Vec::new();
        {
            let mut ledger = lock(&self.ledger);
            for o in &orders {
                if !o.pipeline.is_empty() {
                    ledger.track(broker, o);
                }
            }
            found.drift_positions = positions
                .iter()
                .filter(|p| p.pipeline.is_empty())
                .map(describe_position)
                .collect();
            found.drift_orders = orders
                .iter()
                .filter(|o| o.pipeline.is_empty())
                .map(describe_order)
                .collect();
            for t in ledger.open_trades().filter(|t| t.broker == broker) {
                let held = positions
                    .iter()
                    .find(|p| p.pipeline == t.pipeline && p.symbol == t.symbol);
                let Some(held) = held else {
                    found.differences.push(format!(
                        "{} {}: we hold {}, the broker holds nothing",
                        t.pipeline, t.symbol, t.quantity
                    ));
                    continue;
                };
                if held.quantity.abs() != t.quantity {
                    found.differences.push(format!(
                        "{} {}: we hold {}, the broker {}",
                        t.pipeline, t.symbol, t.quantity, held.quantity
                    ));
                }
                let Some(stop) = t.stop_loss else {
                    continue;
                };
                let protected = orders.iter().any(|o| {
                    o.symbol == t.symbol
                        && o.purpose == OrderPurpose::StopLoss
                        && o.status.is_open()
                        && (o.pipeline == t.pipeline || o.oco_group.as_deref() == Some(&t.group))
                });
                if protected {
                    continue;
                }
                let id = client_order_id(
                    &t.pipeline,
                    &t.symbol,
                    &format!("{}@{now}", t.group),
                    "stop-replaced",
                );
                stops.push((
                    t.mode.clone(),
                    ExitOrder {
                        client_order_id: id,
                        pipeline: t.pipeline.clone(),
                        symbol: t.symbol.clone(),
                        position_side: t.side,
                        quantity: held.quantity.abs().min(t.quantity),
                        order_type: OrderType::Stop { price: stop },
                        purpose: OrderPurpose::StopLoss,
                        oco_group: Some(t.group.clone()),
                    },
                ));
            }
        }
        for (mode, order) in stops {
            let id = order.client_order_id.clone();
            let (pipeline, symbol) = (order.pipeline.clone(), order.symbol.clone());
            let price = match order.order_type {
                OrderType::Stop { price } => price,
                _ => rust_decimal::Decimal::ZERO,
            };
            warn!(%broker, %pipeline, %symbol, stop = %price, client_order_id = %id, "open position without a working stop at the broker: placing its stop");
            let mode = super::parse_mode(&mode).unwrap_or(crate::config::pipeline::Mode::Paper);
            let result = self
                .submit_unpumped(broker, mode, None, Submit::Exit(order), false)
                .await;
            let outcome = match &result {
                Ok(state) => json!({"client_order_id": id, "status": state.status.as_str()}),
                Err(e) => json!({"client_order_id": id, "error": e.to_string()}),
            };
            if result.is_ok() {
                found.stops_placed.push(id);
            }
            self.record_intervention(
                InterventionKind::StopReplaced,
                &Scope::Pipeline(pipeline),
                &format!("{symbol}: open position without a working stop at broker {broker}; stop placed at {price}"),
                outcome,
                now,
            )
            .await;
        }
        booked += self.pump_locked(broker).await;
        if booked > 0 {
            self.refresh(broker).await;
        }
        self.update_position_metrics();
        drop(guard);
        for d in &found.differences {
            warn!(%broker, difference = %d, "broker reconciliation: our trades and the broker's positions differ; the broker's events settle it");
        }
        if let Some(m) = &self.metrics {
            m.set_drift_positions(broker, found.drift_positions.len());
        }
        let signature = (found.drift_positions.clone(), found.drift_orders.clone());
        let changed = {
            let mut last = lock(&self.drift);
            let changed = last.get(broker) != Some(&signature);
            last.insert(broker.to_string(), signature);
            changed
        };
        if changed {
            if found.drift_positions.is_empty() && found.drift_orders.is_empty() {
                info!(%broker, "broker reconciliation: no drift");
            } else {
                warn!(%broker, positions = ?found.drift_positions, orders = ?found.drift_orders, "drift: positions and orders at the broker that no pipeline owns; never touched");
                use crate::config::settings::NotifyEvent;
                self.notify(&[NotifyEvent::BrokerDrift], || {
                    crate::notify::Notification {
                        event: NotifyEvent::BrokerDrift,
                        at: now,
                        title: format!(
                            "drift at {broker}: {} positions and {} orders no pipeline owns",
                            found.drift_positions.len(),
                            found.drift_orders.len()
                        ),
                        text: "ztraded never touches them; `ztraded brokers` lists them"
                            .to_string(),
                        pipeline: None,
                        symbol: None,
                        details: json!({
                            "broker": broker,
                            "positions": found.drift_positions,
                            "orders": found.drift_orders,
                        }),
                    }
                });
            }
            self.record_intervention(
                InterventionKind::BrokerDrift,
                &Scope::All,
                &format!("broker {broker}: positions and orders no pipeline owns"),
                json!({
                    "broker": broker,
                    "positions": found.drift_positions,
                    "orders": found.drift_orders,
                }),
                now,
            )
            .await;
        }
        Some(found)
    }
}
