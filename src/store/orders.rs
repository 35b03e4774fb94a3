//! Order intents, orders and fills, and the transactions that write a fill or a
//! submission together with what it changes.

use super::codec::{Cols, RowGet, json_text, q};
use super::{
    BeginWrite, FillUpdate, IntentKind, IntentOrder, IntentStatus, OrderIntent, PositionChange,
    Store, StoreError, StoredOrder,
};
use crate::broker::{Fill, OrderState};

const INTENT_COLUMNS: &str = "client_order_id, broker, pipeline, symbol, execution_id, purpose, \
     side, quantity, kind, order_json, status, error, created_at, updated_at";

const ORDER_COLUMNS: &str = "client_order_id, broker, broker_order_id, pipeline, symbol, side, \
     quantity, filled_quantity, average_price, order_type, purpose, oco_group, status, reason, \
     created_at, updated_at";

const FILL_COLUMNS: &str = "fill_id, client_order_id, broker_order_id, pipeline, symbol, side, \
     quantity, price, commission, purpose, ts";

fn intent_from_row<R: RowGet>(row: &R) -> Result<OrderIntent, StoreError> {
    let c = Cols::new(row, "order_intents");
    let kind: IntentKind = c.name("kind")?;
    let order = match kind {
        IntentKind::Entry => IntentOrder::Entry(c.json("order_json")?),
        IntentKind::Exit => IntentOrder::Exit(c.json("order_json")?),
    };
    Ok(OrderIntent {
        client_order_id: c.text("client_order_id")?,
        broker: c.text("broker")?,
        pipeline: c.text("pipeline")?,
        symbol: c.text("symbol")?,
        execution_id: c.opt_text("execution_id")?,
        purpose: c.name("purpose")?,
        side: c.name("side")?,
        quantity: c.dec("quantity")?,
        order,
        status: c.name("status")?,
        error: c.opt_text("error")?,
        created_at: c.int("created_at")?,
        updated_at: c.int("updated_at")?,
    })
}

fn order_from_row<R: RowGet>(row: &R) -> Result<StoredOrder, StoreError> {
    let c = Cols::new(row, "orders");
    Ok(StoredOrder {
        broker: c.text("broker")?,
        state: OrderState {
            client_order_id: c.text("client_order_id")?,
            broker_order_id: c.text("broker_order_id")?,
            pipeline: c.text("pipeline")?,
            symbol: c.text("symbol")?,
            side: c.name("side")?,
            quantity: c.dec("quantity")?,
            filled_quantity: c.dec("filled_quantity")?,
            average_price: c.dec("average_price")?,
            order_type: c.json("order_type")?,
            purpose: c.name("purpose")?,
            oco_group: c.opt_text("oco_group")?,
            status: c.name("status")?,
            reason: c.opt_text("reason")?,
            created_at: c.int("created_at")?,
        },
        updated_at: c.int("updated_at")?,
    })
}

fn fill_from_row<R: RowGet>(row: &R) -> Result<Fill, StoreError> {
    let c = Cols::new(row, "fills");
    Ok(Fill {
        client_order_id: c.text("client_order_id")?,
        broker_order_id: c.text("broker_order_id")?,
        fill_id: c.text("fill_id")?,
        pipeline: c.text("pipeline")?,
        symbol: c.text("symbol")?,
        side: c.name("side")?,
        quantity: c.dec("quantity")?,
        price: c.dec("price")?,
        commission: c.dec("commission")?,
        purpose: c.name("purpose")?,
        ts: c.int("ts")?,
    })
}

pub(super) fn order_json(intent: &OrderIntent) -> Result<String, StoreError> {
    match &intent.order {
        IntentOrder::Entry(e) => json_text(e, "order_intents", "order_json"),
        IntentOrder::Exit(x) => json_text(x, "order_intents", "order_json"),
    }
}

impl Store {
    /// Records an order intent BEFORE the order is submitted. Idempotent on the client
    /// order id: recording an id that is already stored changes nothing and returns
    /// `false` (the caller then looks the order up instead of sending it again); `true`
    /// when the row was inserted.
    pub async fn insert_intent(&self, intent: &OrderIntent) -> Result<bool, StoreError> {
        let order = order_json(intent)?;
        with_pool!(self, |pool| { insert_intent_on!(pool, intent, order) })
    }

    /// The intent with client order id `id`.
    pub async fn intent(&self, id: &str) -> Result<Option<OrderIntent>, StoreError> {
        with_pool!(self, |pool| {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {INTENT_COLUMNS} FROM order_intents WHERE client_order_id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(q("order_intents", "select"))?;
            row.as_ref().map(intent_from_row).transpose()
        })
    }

    /// Intents not confirmed by a broker (status `pending`), oldest first: after a crash,
    /// each is looked up at its broker by client order id.
    pub async fn pending_intents(&self) -> Result<Vec<OrderIntent>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {INTENT_COLUMNS} FROM order_intents WHERE status = 'pending' \
                 ORDER BY created_at, client_order_id"
            )))
            .fetch_all(pool)
            .await
            .map_err(q("order_intents", "select"))?;
            rows.iter().map(intent_from_row).collect()
        })
    }

    /// Marks intent `id` failed with `error`. Errors: [`StoreError::NotFound`] for an
    /// unknown id.
    pub async fn mark_intent_failed(
        &self,
        id: &str,
        error: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            let r = sqlx::query(
                "UPDATE order_intents SET status = $2, error = $3, updated_at = $4 \
                 WHERE client_order_id = $1",
            )
            .bind(id)
            .bind(IntentStatus::Failed.as_str())
            .bind(error)
            .bind(at)
            .execute(pool)
            .await
            .map_err(q("order_intents", "update"))?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound {
                    table: "order_intents",
                    key: id.to_string(),
                });
            }
            Ok(())
        })
    }

    /// In one transaction: marks intent `id` submitted, upserts the order the broker
    /// answered (under the intent's broker), and saves the broker's snapshot when given.
    /// Errors: [`StoreError::NotFound`] for an unknown id (nothing is written).
    pub async fn record_intent_submitted(
        &self,
        id: &str,
        order: &OrderState,
        broker_state: Option<&serde_json::value::RawValue>,
        at: i64,
    ) -> Result<(), StoreError> {
        let order_type = json_text(&order.order_type, "orders", "order_type")?;
        let snapshot = broker_state
            .map(|s| json_text(s, "broker_states", "state"))
            .transpose()?;
        with_pool!(self, |pool| {
            let mut tx = pool
                .begin_write()
                .await
                .map_err(q("order_intents", "begin"))?;
            let row = sqlx::query(
                "UPDATE order_intents SET status = $2, error = NULL, updated_at = $3 \
                 WHERE client_order_id = $1 RETURNING broker",
            )
            .bind(id)
            .bind(IntentStatus::Submitted.as_str())
            .bind(at)
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("order_intents", "update"))?;
            let Some(row) = row else {
                return Err(StoreError::NotFound {
                    table: "order_intents",
                    key: id.to_string(),
                });
            };
            let broker = Cols::new(&row, "order_intents").text("broker")?;
            upsert_order_on!(&mut *tx, &broker, order, &order_type, at)?;
            if let Some(snapshot) = &snapshot {
                upsert_broker_state_on!(&mut *tx, &broker, snapshot, at)?;
            }
            tx.commit().await.map_err(q("order_intents", "commit"))?;
            Ok(())
        })
    }

    /// Upserts an order as broker `broker` reports it (by client order id).
    pub async fn upsert_order(
        &self,
        broker: &str,
        order: &OrderState,
        at: i64,
    ) -> Result<(), StoreError> {
        let order_type = json_text(&order.order_type, "orders", "order_type")?;
        with_pool!(self, |pool| upsert_order_on!(
            pool,
            broker,
            order,
            &order_type,
            at
        ))
    }

    /// The order with client order id `id`.
    pub async fn order(&self, id: &str) -> Result<Option<StoredOrder>, StoreError> {
        with_pool!(self, |pool| {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE client_order_id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(q("orders", "select"))?;
            row.as_ref().map(order_from_row).transpose()
        })
    }

    /// Orders that can still execute (`accepted`, `partially_filled`), of broker `broker`
    /// or of all, oldest first.
    pub async fn open_orders(&self, broker: Option<&str>) -> Result<Vec<StoredOrder>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLUMNS} FROM orders \
                 WHERE status IN ('accepted', 'partially_filled') \
                 AND ($1 IS NULL OR broker = $1) ORDER BY created_at, client_order_id"
            )))
            .bind(broker)
            .fetch_all(pool)
            .await
            .map_err(q("orders", "select"))?;
            rows.iter().map(order_from_row).collect()
        })
    }

    /// Every order of broker `broker`, open or not, oldest first (who owns what at a broker
    /// that knows no pipelines).
    pub async fn orders_of_broker(&self, broker: &str) -> Result<Vec<StoredOrder>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE broker = $1 \
                 ORDER BY created_at, client_order_id"
            )))
            .bind(broker)
            .fetch_all(pool)
            .await
            .map_err(q("orders", "select"))?;
            rows.iter().map(order_from_row).collect()
        })
    }

    /// Records a fill reported by broker `broker`, once: `true` when it was new, `false`
    /// when its `fill_id` was already stored (nothing changes). The engine records fills
    /// with [`Store::record_fill`], which also writes what the fill changed.
    pub async fn insert_fill(&self, broker: &str, fill: &Fill) -> Result<bool, StoreError> {
        with_pool!(self, |pool| insert_fill_on!(pool, broker, fill))
    }

    /// The fills of order `client_order_id`, in execution order.
    pub async fn fills_of_order(&self, client_order_id: &str) -> Result<Vec<Fill>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {FILL_COLUMNS} FROM fills WHERE client_order_id = $1 ORDER BY ts, fill_id"
            )))
            .bind(client_order_id)
            .fetch_all(pool)
            .await
            .map_err(q("fills", "select"))?;
            rows.iter().map(fill_from_row).collect()
        })
    }

    /// Records one fill and everything it changed, in ONE transaction, so that a crash
    /// cannot leave the fill stored without the position change or the other way round:
    /// the fill (deduplicated on `fill_id`), the order's new state, the book's open trade
    /// (saved, or deleted when flat), the trade the fill closed, and the broker snapshot.
    ///
    /// Returns `true` when the fill was new and all of it was written; `false` when the
    /// fill was already stored, in which case nothing is written (a fill is applied once).
    /// On any error (for example a constraint violation) nothing is written.
    pub async fn record_fill(&self, update: FillUpdate<'_>) -> Result<bool, StoreError> {
        let fill = update.fill;
        let order_type = update
            .order
            .map(|o| json_text(&o.order_type, "orders", "order_type"))
            .transpose()?;
        let open_json = match update.position {
            PositionChange::Open(t) => Some(json_text(t, "open_trades", "trade")?),
            _ => None,
        };
        let snapshot = update
            .broker_state
            .map(|s| json_text(s, "broker_states", "state"))
            .transpose()?;
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await.map_err(q("fills", "begin"))?;
            if !insert_fill_on!(&mut *tx, update.broker, fill)? {
                tx.rollback().await.map_err(q("fills", "rollback"))?;
                return Ok(false);
            }
            if let (Some(order), Some(order_type)) = (update.order, &order_type) {
                upsert_order_on!(&mut *tx, update.broker, order, order_type, update.at)?;
            }
            match (update.position, &open_json) {
                (PositionChange::Open(t), Some(json)) => {
                    save_open_trade_on!(&mut *tx, t, json, update.at)?;
                }
                (PositionChange::Flat, _) => {
                    delete_open_trade_on!(&mut *tx, &fill.pipeline, &fill.symbol)?;
                }
                _ => {}
            }
            if let Some(trade) = update.closed_trade {
                insert_trade_on!(&mut *tx, trade)?;
            }
            if let Some(snapshot) = &snapshot {
                upsert_broker_state_on!(&mut *tx, update.broker, snapshot, update.at)?;
            }
            tx.commit().await.map_err(q("fills", "commit"))?;
            Ok(true)
        })
    }
}
