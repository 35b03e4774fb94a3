//! [`Store::write_batch`]: many writes in one transaction with multi-row statements, so that
//! an emergency close of hundreds of positions, or a bar that fills many stops, costs one
//! commit and a handful of statements instead of several per fill.

use super::codec::{Cols, dec_text, json_text, opt_dec_text, q};
use super::{
    BatchEntry, BatchOutcome, BeginWrite, BookChange, IntentOrder, IntentStatus, OrderIntent,
    Store, StoreError, WriteBatch,
};
use crate::broker::{Fill, OrderState};
use crate::engine::book::OpenTrade;
use crate::engine::trades::TradeRecord;
use sqlx::{Database, Pool, QueryBuilder};
use std::collections::{BTreeMap, BTreeSet};

/// Bound parameters per statement: well under SQLite's 32,766 and PostgreSQL's 65,535.
const MAX_PARAMS: usize = 8_000;

/// Rows per statement for a table of `columns` columns.
fn rows_per_statement(columns: usize) -> usize {
    (MAX_PARAMS / columns).max(1)
}

/// A query builder of the pool's backend.
fn builder<DB: Database>(_: &Pool<DB>, sql: &str) -> QueryBuilder<DB>
where
    <DB as Database>::Arguments: Default,
{
    QueryBuilder::new(sql)
}

/// The batch reduced to what the database must end up holding: per order, per open trade,
/// per intent and per broker the last write wins, as if the entries were applied one by
/// one; fills, and the trades they closed, in order.
struct Plan<'a> {
    intents: BTreeMap<&'a str, (IntentStatus, Option<&'a str>)>,
    fills: Vec<(&'a str, &'a Fill, &'a BookChange, &'a [TradeRecord])>,
    orders: BTreeMap<&'a str, (&'a str, &'a OrderState, String)>,
    states: BTreeMap<&'a str, String>,
    open_json: BTreeMap<(&'a str, &'a str), String>,
}

impl<'a> Plan<'a> {
    fn new(batch: &'a WriteBatch) -> Result<Plan<'a>, StoreError> {
        let mut plan = Plan {
            intents: BTreeMap::new(),
            fills: Vec::new(),
            orders: BTreeMap::new(),
            states: BTreeMap::new(),
            open_json: BTreeMap::new(),
        };
        for entry in &batch.entries {
            match entry {
                BatchEntry::Order { broker, order } => plan.order(broker, order)?,
                BatchEntry::IntentSubmitted { client_order_id } => {
                    plan.intents
                        .insert(client_order_id, (IntentStatus::Submitted, None));
                }
                BatchEntry::IntentFailed {
                    client_order_id,
                    error,
                } => {
                    plan.intents
                        .insert(client_order_id, (IntentStatus::Failed, Some(error)));
                }
                BatchEntry::Fill {
                    broker,
                    fill,
                    order,
                    position,
                    closed_trades,
                } => {
                    if let Some(order) = order {
                        plan.order(broker, order)?;
                    }
                    if let BookChange::Open(t) = position {
                        plan.open_json.insert(
                            (t.pipeline.as_str(), t.symbol.as_str()),
                            json_text(t, "open_trades", "trade")?,
                        );
                    }
                    plan.fills.push((broker, fill, position, closed_trades));
                }
                BatchEntry::BrokerState { broker, state } => {
                    plan.states.insert(broker, state.get().to_string());
                }
            }
        }
        Ok(plan)
    }

    fn order(&mut self, broker: &'a str, order: &'a OrderState) -> Result<(), StoreError> {
        let order_type = json_text(&order.order_type, "orders", "order_type")?;
        self.orders
            .insert(&order.client_order_id, (broker, order, order_type));
        Ok(())
    }
}

impl Store {
    /// Records several intents in ONE transaction, BEFORE their orders are submitted (one
    /// commit, and a statement per 570 intents, for an emergency close of hundreds of
    /// positions). Idempotent per client order id like [`Store::insert_intent`]: the answer
    /// says, in order, which intents were new (`false`: already stored, or repeated earlier
    /// in `intents`; look the order up instead of sending it again). On any error nothing is
    /// written.
    pub async fn insert_intents(&self, intents: &[OrderIntent]) -> Result<Vec<bool>, StoreError> {
        let orders = intents
            .iter()
            .map(|i| match &i.order {
                IntentOrder::Entry(e) => json_text(e, "order_intents", "order_json"),
                IntentOrder::Exit(x) => json_text(x, "order_intents", "order_json"),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rows: Vec<(&OrderIntent, &String)> = intents.iter().zip(&orders).collect();
        with_pool!(self, |pool| {
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let mut tx = pool
                .begin_write()
                .await
                .map_err(q("order_intents", "begin"))?;
            let mut new_ids: BTreeSet<String> = BTreeSet::new();
            for chunk in rows.chunks(rows_per_statement(14)) {
                let mut b = builder(
                    pool,
                    "INSERT INTO order_intents (client_order_id, broker, pipeline, symbol, \
                     execution_id, purpose, side, quantity, kind, order_json, status, error, \
                     created_at, updated_at) ",
                );
                b.push_values(chunk, |mut row, (i, order)| {
                    row.push_bind(i.client_order_id.as_str())
                        .push_bind(i.broker.as_str())
                        .push_bind(i.pipeline.as_str())
                        .push_bind(i.symbol.as_str())
                        .push_bind(i.execution_id.as_deref())
                        .push_bind(i.purpose.as_str())
                        .push_bind(i.side.as_str())
                        .push_bind(dec_text(i.quantity))
                        .push_bind(i.order.kind().as_str())
                        .push_bind(order.as_str())
                        .push_bind(i.status.as_str())
                        .push_bind(i.error.as_deref())
                        .push_bind(i.created_at)
                        .push_bind(i.updated_at);
                });
                b.push(" ON CONFLICT (client_order_id) DO NOTHING RETURNING client_order_id");
                let inserted = b
                    .build()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(q("order_intents", "insert"))?;
                for r in &inserted {
                    new_ids.insert(Cols::new(r, "order_intents").text("client_order_id")?);
                }
            }
            tx.commit().await.map_err(q("order_intents", "commit"))?;
            let mut seen = BTreeSet::new();
            Ok(intents
                .iter()
                .map(|i| {
                    seen.insert(i.client_order_id.as_str()) && new_ids.contains(&i.client_order_id)
                })
                .collect())
        })
    }

    /// Applies a [`WriteBatch`] in ONE transaction: either every write is stored or none
    /// (on any error). The result is that of applying the entries one by one:
    ///
    /// - orders, intents, open trades and broker snapshots: the last write of each key wins
    ///   (an order's latest state is written even when the fill that carried it was already
    ///   stored: the broker's state is the truth);
    /// - a [`BatchEntry::Fill`] whose `fill_id` is already stored (or appears earlier in the
    ///   batch) is a duplicate: its position change and closed trades are skipped, so a
    ///   replayed fill is applied once, as [`Store::record_fill`] does.
    ///
    /// Multi-row statements keep the cost to a few statements per table (an emergency close
    /// of 500 positions writes about 3,500 rows in about a dozen statements).
    ///
    /// Errors: [`StoreError::NotFound`] for an intent entry with an unknown client order id,
    /// [`StoreError::Query`] naming the table of a failed statement (a constraint
    /// violation, a lost connection), [`StoreError::Encode`] for a value that does not
    /// serialize. Nothing is written in every case.
    pub async fn write_batch(&self, batch: &WriteBatch) -> Result<BatchOutcome, StoreError> {
        let plan = Plan::new(batch)?;
        let at = batch.at;
        with_pool!(self, |pool| {
            let mut outcome = BatchOutcome::default();
            if batch.entries.is_empty() {
                return Ok(outcome);
            }
            let mut tx = pool.begin_write().await.map_err(q("batch", "begin"))?;

            // Intents: the submitted ones in multi-row updates, failures one by one (rare,
            // each with its own error).
            let submitted: Vec<&str> = plan
                .intents
                .iter()
                .filter(|(_, (status, _))| *status == IntentStatus::Submitted)
                .map(|(id, _)| *id)
                .collect();
            for chunk in submitted.chunks(rows_per_statement(1)) {
                let mut b = builder(
                    pool,
                    "UPDATE order_intents SET status = 'submitted', error = NULL, updated_at = ",
                );
                b.push_bind(at).push(" WHERE client_order_id IN (");
                let mut list = b.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                b.push(")");
                let r = b
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(q("order_intents", "update"))?;
                if r.rows_affected() != chunk.len() as u64 {
                    // Name the first id that is not stored.
                    let mut b = builder(
                        pool,
                        "SELECT client_order_id FROM order_intents WHERE client_order_id IN (",
                    );
                    let mut list = b.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    b.push(")");
                    let rows = b
                        .build()
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(q("order_intents", "select"))?;
                    let stored: BTreeSet<String> = rows
                        .iter()
                        .map(|r| Cols::new(r, "order_intents").text("client_order_id"))
                        .collect::<Result<_, _>>()?;
                    let missing = chunk
                        .iter()
                        .find(|id| !stored.contains(**id))
                        .copied()
                        .unwrap_or_default();
                    return Err(StoreError::NotFound {
                        table: "order_intents",
                        key: missing.to_string(),
                    });
                }
            }
            for (id, (status, error)) in &plan.intents {
                if *status == IntentStatus::Failed {
                    set_intent_status_on!(&mut *tx, id, *status, *error, at)?;
                }
            }

            // Fills: which are new decides which position changes and trades are written.
            let mut new_ids: BTreeSet<String> = BTreeSet::new();
            for chunk in plan.fills.chunks(rows_per_statement(12)) {
                let mut b = builder(
                    pool,
                    "INSERT INTO fills (fill_id, broker, client_order_id, broker_order_id, \
                     pipeline, symbol, side, quantity, price, commission, purpose, ts) ",
                );
                b.push_values(chunk, |mut row, (broker, f, _, _)| {
                    row.push_bind(f.fill_id.as_str())
                        .push_bind(*broker)
                        .push_bind(f.client_order_id.as_str())
                        .push_bind(f.broker_order_id.as_str())
                        .push_bind(f.pipeline.as_str())
                        .push_bind(f.symbol.as_str())
                        .push_bind(f.side.as_str())
                        .push_bind(dec_text(f.quantity))
                        .push_bind(dec_text(f.price))
                        .push_bind(dec_text(f.commission))
                        .push_bind(f.purpose.as_str())
                        .push_bind(f.ts);
                });
                b.push(" ON CONFLICT (fill_id) DO NOTHING RETURNING fill_id");
                let rows = b
                    .build()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(q("fills", "insert"))?;
                for r in &rows {
                    new_ids.insert(Cols::new(r, "fills").text("fill_id")?);
                }
            }
            let mut positions: BTreeMap<(&str, &str), Option<&OpenTrade>> = BTreeMap::new();
            let mut trades: Vec<&TradeRecord> = Vec::new();
            let mut seen: BTreeSet<&str> = BTreeSet::new();
            for (_, fill, position, closed) in &plan.fills {
                let first = seen.insert(fill.fill_id.as_str());
                if !(first && new_ids.contains(&fill.fill_id)) {
                    outcome.fills_duplicate += 1;
                    continue;
                }
                outcome.fills_written += 1;
                match position {
                    BookChange::Open(t) => {
                        positions.insert((&t.pipeline, &t.symbol), Some(t));
                    }
                    BookChange::Flat => {
                        positions.insert((&fill.pipeline, &fill.symbol), None);
                    }
                    BookChange::Unchanged => {}
                }
                trades.extend(closed.iter());
            }

            // Orders, each at its latest state.
            let orders: Vec<_> = plan.orders.values().collect();
            for chunk in orders.chunks(rows_per_statement(16)) {
                let mut b = builder(
                    pool,
                    "INSERT INTO orders (client_order_id, broker, broker_order_id, pipeline, \
                     symbol, side, quantity, filled_quantity, average_price, order_type, \
                     purpose, oco_group, status, reason, created_at, updated_at) ",
                );
                b.push_values(chunk, |mut row, (broker, o, order_type)| {
                    row.push_bind(o.client_order_id.as_str())
                        .push_bind(*broker)
                        .push_bind(o.broker_order_id.as_str())
                        .push_bind(o.pipeline.as_str())
                        .push_bind(o.symbol.as_str())
                        .push_bind(o.side.as_str())
                        .push_bind(dec_text(o.quantity))
                        .push_bind(dec_text(o.filled_quantity))
                        .push_bind(dec_text(o.average_price))
                        .push_bind(order_type.as_str())
                        .push_bind(o.purpose.as_str())
                        .push_bind(o.oco_group.as_deref())
                        .push_bind(o.status.as_str())
                        .push_bind(o.reason.as_deref())
                        .push_bind(o.created_at)
                        .push_bind(at);
                });
                b.push(
                    " ON CONFLICT (client_order_id) DO UPDATE SET broker = excluded.broker, \
                     broker_order_id = excluded.broker_order_id, pipeline = excluded.pipeline, \
                     symbol = excluded.symbol, side = excluded.side, \
                     quantity = excluded.quantity, filled_quantity = excluded.filled_quantity, \
                     average_price = excluded.average_price, order_type = excluded.order_type, \
                     purpose = excluded.purpose, oco_group = excluded.oco_group, \
                     status = excluded.status, reason = excluded.reason, \
                     created_at = excluded.created_at, updated_at = excluded.updated_at",
                );
                b.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(q("orders", "upsert"))?;
            }

            // Open trades: saved or deleted, the last change of each wins.
            let flat: Vec<(&str, &str)> = positions
                .iter()
                .filter(|(_, t)| t.is_none())
                .map(|(k, _)| *k)
                .collect();
            for chunk in flat.chunks(rows_per_statement(2)) {
                let mut b = builder(
                    pool,
                    "DELETE FROM open_trades WHERE (pipeline, symbol) IN (SELECT * FROM (",
                );
                b.push_values(chunk, |mut row, (pipeline, symbol)| {
                    row.push_bind(*pipeline).push_bind(*symbol);
                });
                b.push(") AS gone)");
                b.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(q("open_trades", "delete"))?;
            }
            let open: Vec<(&OpenTrade, &str)> = positions
                .iter()
                .filter_map(|(k, t)| Some(((*t)?, plan.open_json.get(k)?.as_str())))
                .collect();
            for chunk in open.chunks(rows_per_statement(8)) {
                let mut b = builder(
                    pool,
                    "INSERT INTO open_trades (pipeline, symbol, side, quantity, average_price, \
                     entry_time, trade, updated_at) ",
                );
                b.push_values(chunk, |mut row, (t, json)| {
                    row.push_bind(t.pipeline.as_str())
                        .push_bind(t.symbol.as_str())
                        .push_bind(t.side.as_str())
                        .push_bind(dec_text(t.quantity))
                        .push_bind(dec_text(t.average_price))
                        .push_bind(t.entry_time)
                        .push_bind(*json)
                        .push_bind(at);
                });
                b.push(
                    " ON CONFLICT (pipeline, symbol) DO UPDATE SET side = excluded.side, \
                     quantity = excluded.quantity, average_price = excluded.average_price, \
                     entry_time = excluded.entry_time, trade = excluded.trade, \
                     updated_at = excluded.updated_at",
                );
                b.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(q("open_trades", "upsert"))?;
            }

            // Trades the new fills closed.
            for chunk in trades.chunks(rows_per_statement(15)) {
                let mut b = builder(
                    pool,
                    "INSERT INTO trades (pipeline, symbol, side, entry_time, exit_time, \
                     entry_price, exit_price, quantity, stop_loss, target_1, target_2, \
                     exit_reason, pnl, fees, mode, final_stop) ",
                );
                b.push_values(chunk, |mut row, t| {
                    row.push_bind(t.pipeline.as_str())
                        .push_bind(t.symbol.as_str())
                        .push_bind(t.side.as_str())
                        .push_bind(t.entry_time)
                        .push_bind(t.exit_time)
                        .push_bind(dec_text(t.entry_price))
                        .push_bind(dec_text(t.exit_price))
                        .push_bind(dec_text(t.quantity))
                        .push_bind(opt_dec_text(t.stop_loss))
                        .push_bind(opt_dec_text(t.target_1))
                        .push_bind(opt_dec_text(t.target_2))
                        .push_bind(t.exit_reason.as_str())
                        .push_bind(dec_text(t.pnl))
                        .push_bind(dec_text(t.fees))
                        .push_bind(t.mode.as_str())
                        .push_bind(opt_dec_text(t.final_stop));
                });
                b.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(q("trades", "insert"))?;
            }

            for (broker, state) in &plan.states {
                upsert_broker_state_on!(&mut *tx, *broker, state.as_str(), at)?;
            }
            tx.commit().await.map_err(q("batch", "commit"))?;
            Ok(outcome)
        })
    }
}
