//! The macros that give both backends one code path: `with_pool!` expands a body once per
//! concrete pool type, and the `*_on!` statement macros run one statement on any executor
//! of either backend (a pool or a transaction), so that a statement shared by a standalone
//! method and a transaction is written once.

/// Runs `$body` with `$pool` bound to the concrete pool (`&SqlitePool` or `&PgPool`): the
/// one code path of every repository method.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

/// Upserts a broker snapshot (JSON text) through any executor of either backend.
macro_rules! upsert_broker_state_on {
    ($exec:expr, $name:expr, $state:expr, $at:expr) => {
        sqlx::query(
            "INSERT INTO broker_states (name, state, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET state = excluded.state, \
             updated_at = excluded.updated_at",
        )
        .bind($name)
        .bind($state)
        .bind($at)
        .execute($exec)
        .await
        .map_err($crate::store::codec::q("broker_states", "upsert"))
        .map(|_| ())
    };
}

/// Inserts order intent `$intent` (`&OrderIntent`; `$order`: its order as JSON text)
/// through any executor of either backend: `Ok(true)` written, `Ok(false)` when one with its
/// client order id exists already.
macro_rules! insert_intent_on {
    ($exec:expr, $intent:expr, $order:expr) => {{
        let intent: &$crate::store::OrderIntent = $intent;
        sqlx::query(
            "INSERT INTO order_intents (client_order_id, broker, pipeline, symbol, \
             execution_id, purpose, side, quantity, kind, order_json, status, error, \
             created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (client_order_id) DO NOTHING",
        )
        .bind(&intent.client_order_id)
        .bind(&intent.broker)
        .bind(&intent.pipeline)
        .bind(&intent.symbol)
        .bind(&intent.execution_id)
        .bind(intent.purpose.as_str())
        .bind(intent.side.as_str())
        .bind($crate::store::codec::dec_text(intent.quantity))
        .bind(intent.order.kind().as_str())
        .bind($order)
        .bind(intent.status.as_str())
        .bind(&intent.error)
        .bind(intent.created_at)
        .bind(intent.updated_at)
        .execute($exec)
        .await
        .map_err($crate::store::codec::q("order_intents", "insert"))
        .map(|r| r.rows_affected() == 1)
    }};
}

/// Sets the status (and error) of the intent `$id`; `Err(NotFound)` when there is none.
macro_rules! set_intent_status_on {
    ($exec:expr, $id:expr, $status:expr, $error:expr, $at:expr) => {{
        let id: &str = $id;
        let status: $crate::store::IntentStatus = $status;
        sqlx::query(
            "UPDATE order_intents SET status = $2, error = $3, updated_at = $4 \
             WHERE client_order_id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind($error)
        .bind($at)
        .execute($exec)
        .await
        .map_err($crate::store::codec::q("order_intents", "update"))
        .and_then(|r| {
            if r.rows_affected() == 0 {
                Err($crate::store::StoreError::NotFound {
                    table: "order_intents",
                    key: id.to_string(),
                })
            } else {
                Ok(())
            }
        })
    }};
}

/// Upserts an order row (`$order`: `&OrderState`, `$order_type`: its JSON text) by client
/// order id.
macro_rules! upsert_order_on {
    ($exec:expr, $broker:expr, $order:expr, $order_type:expr, $at:expr) => {{
        let o: &$crate::broker::OrderState = $order;
        sqlx::query(
            "INSERT INTO orders (client_order_id, broker, broker_order_id, pipeline, symbol, \
             side, quantity, filled_quantity, average_price, order_type, purpose, oco_group, \
             status, reason, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (client_order_id) DO UPDATE SET broker = excluded.broker, \
             broker_order_id = excluded.broker_order_id, pipeline = excluded.pipeline, \
             symbol = excluded.symbol, side = excluded.side, quantity = excluded.quantity, \
             filled_quantity = excluded.filled_quantity, \
             average_price = excluded.average_price, order_type = excluded.order_type, \
             purpose = excluded.purpose, oco_group = excluded.oco_group, \
             status = excluded.status, reason = excluded.reason, \
             created_at = excluded.created_at, updated_at = excluded.updated_at",
        )
        .bind(&o.client_order_id)
        .bind($broker)
        .bind(&o.broker_order_id)
        .bind(&o.pipeline)
        .bind(&o.symbol)
        .bind(o.side.as_str())
        .bind($crate::store::codec::dec_text(o.quantity))
        .bind($crate::store::codec::dec_text(o.filled_quantity))
        .bind($crate::store::codec::dec_text(o.average_price))
        .bind($order_type)
        .bind(o.purpose.as_str())
        .bind(&o.oco_group)
        .bind(o.status.as_str())
        .bind(&o.reason)
        .bind(o.created_at)
        .bind($at)
        .execute($exec)
        .await
        .map_err($crate::store::codec::q("orders", "upsert"))
        .map(|_| ())
    }};
}

/// Inserts a fill unless its `fill_id` is stored; `Ok(true)` when it was new.
macro_rules! insert_fill_on {
    ($exec:expr, $broker:expr, $fill:expr) => {{
        let f: &$crate::broker::Fill = $fill;
        sqlx::query(
            "INSERT INTO fills (fill_id, broker, client_order_id, broker_order_id, pipeline, \
             symbol, side, quantity, price, commission, purpose, ts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (fill_id) DO NOTHING",
        )
        .bind(&f.fill_id)
        .bind($broker)
        .bind(&f.client_order_id)
        .bind(&f.broker_order_id)
        .bind(&f.pipeline)
        .bind(&f.symbol)
        .bind(f.side.as_str())
        .bind($crate::store::codec::dec_text(f.quantity))
        .bind($crate::store::codec::dec_text(f.price))
        .bind($crate::store::codec::dec_text(f.commission))
        .bind(f.purpose.as_str())
        .bind(f.ts)
        .execute($exec)
        .await
        .map_err($crate::store::codec::q("fills", "insert"))
        .map(|r| r.rows_affected() == 1)
    }};
}

/// Saves (inserts or replaces) the open trade `$trade` (`&OpenTrade`; `$json`: its JSON
/// text) under its pipeline and symbol.
macro_rules! save_open_trade_on {
    ($exec:expr, $trade:expr, $json:expr, $at:expr) => {{
        let t: &$crate::engine::book::OpenTrade = $trade;
        sqlx::query(
            "INSERT INTO open_trades (pipeline, symbol, side, quantity, average_price, \
             entry_time, trade, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (pipeline, symbol) DO UPDATE SET side = excluded.side, \
             quantity = excluded.quantity, average_price = excluded.average_price, \
             entry_time = excluded.entry_time, trade = excluded.trade, \
             updated_at = excluded.updated_at",
        )
        .bind(&t.pipeline)
        .bind(&t.symbol)
        .bind(t.side.as_str())
        .bind($crate::store::codec::dec_text(t.quantity))
        .bind($crate::store::codec::dec_text(t.average_price))
        .bind(t.entry_time)
        .bind($json)
        .bind($at)
        .execute($exec)
        .await
        .map_err($crate::store::codec::q("open_trades", "upsert"))
        .map(|_| ())
    }};
}

/// Deletes the open trade of `$pipeline` in `$symbol`; `Ok(true)` when there was one.
macro_rules! delete_open_trade_on {
    ($exec:expr, $pipeline:expr, $symbol:expr) => {
        sqlx::query("DELETE FROM open_trades WHERE pipeline = $1 AND symbol = $2")
            .bind($pipeline)
            .bind($symbol)
            .execute($exec)
            .await
            .map_err($crate::store::codec::q("open_trades", "delete"))
            .map(|r| r.rows_affected() == 1)
    };
}

/// Inserts a completed trade (`&TradeRecord`); `Ok(id)`.
macro_rules! insert_trade_on {
    ($exec:expr, $trade:expr) => {{
        let t: &$crate::engine::trades::TradeRecord = $trade;
        sqlx::query(
            "INSERT INTO trades (pipeline, symbol, side, entry_time, exit_time, entry_price, \
             exit_price, quantity, stop_loss, target_1, target_2, exit_reason, pnl, fees, mode, \
             final_stop) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             RETURNING id",
        )
        .bind(&t.pipeline)
        .bind(&t.symbol)
        .bind(t.side.as_str())
        .bind(t.entry_time)
        .bind(t.exit_time)
        .bind($crate::store::codec::dec_text(t.entry_price))
        .bind($crate::store::codec::dec_text(t.exit_price))
        .bind($crate::store::codec::dec_text(t.quantity))
        .bind($crate::store::codec::opt_dec_text(t.stop_loss))
        .bind($crate::store::codec::opt_dec_text(t.target_1))
        .bind($crate::store::codec::opt_dec_text(t.target_2))
        .bind(t.exit_reason.as_str())
        .bind($crate::store::codec::dec_text(t.pnl))
        .bind($crate::store::codec::dec_text(t.fees))
        .bind(&t.mode)
        .bind($crate::store::codec::opt_dec_text(t.final_stop))
        .fetch_one($exec)
        .await
        .map_err($crate::store::codec::q("trades", "insert"))
        .and_then(|row| $crate::store::codec::Cols::new(&row, "trades").int("id"))
    }};
}
