//! Completed trades, the book's open trades, and equity points.

use super::codec::{Cols, RowGet, dec_text, json_text, q};
use super::{OpenPosition, Store, StoreError};
use crate::engine::book::OpenTrade;
use crate::engine::trades::{EquityPoint, TradeRecord};

/// A `trades` row (the columns of [`TradeRecord`]; extra columns are ignored).
pub(super) fn trade_from_row<R: RowGet>(row: &R) -> Result<TradeRecord, StoreError> {
    let c = Cols::new(row, "trades");
    Ok(TradeRecord {
        pipeline: c.text("pipeline")?,
        symbol: c.text("symbol")?,
        side: c.name("side")?,
        entry_time: c.int("entry_time")?,
        exit_time: c.int("exit_time")?,
        entry_price: c.dec("entry_price")?,
        exit_price: c.dec("exit_price")?,
        quantity: c.dec("quantity")?,
        stop_loss: c.opt_dec("stop_loss")?,
        final_stop: c.opt_dec("final_stop")?,
        target_1: c.opt_dec("target_1")?,
        target_2: c.opt_dec("target_2")?,
        exit_reason: c.name("exit_reason")?,
        pnl: c.dec("pnl")?,
        fees: c.dec("fees")?,
        mode: c.text("mode")?,
    })
}

fn position_from_row<R: RowGet>(row: &R) -> Result<OpenPosition, StoreError> {
    let c = Cols::new(row, "open_trades");
    Ok(OpenPosition {
        pipeline: c.text("pipeline")?,
        symbol: c.text("symbol")?,
        side: c.name("side")?,
        quantity: c.dec("quantity")?,
        average_price: c.dec("average_price")?,
        entry_time: c.int("entry_time")?,
        updated_at: c.int("updated_at")?,
    })
}

impl Store {
    /// Records a completed trade; returns its id. (The engine records the trades its fills
    /// close with [`Store::record_fill`].)
    pub async fn insert_trade(&self, trade: &TradeRecord) -> Result<i64, StoreError> {
        with_pool!(self, |pool| insert_trade_on!(pool, trade))
    }

    /// Trades of `pipeline` (all pipelines when `None`) that closed in `[from, to)` Unix
    /// seconds (by `exit_time`), in the order they closed. `i64::MIN` / `i64::MAX` leave an
    /// end open.
    pub async fn trades(
        &self,
        pipeline: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Vec<TradeRecord>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT pipeline, symbol, side, entry_time, exit_time, entry_price, exit_price, \
                 quantity, stop_loss, target_1, target_2, exit_reason, pnl, fees, mode, final_stop \
                 FROM trades WHERE ($1 IS NULL OR pipeline = $1) \
                 AND exit_time >= $2 AND exit_time < $3 ORDER BY exit_time, id",
            )
            .bind(pipeline)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
            .map_err(q("trades", "select"))?;
            rows.iter().map(trade_from_row).collect()
        })
    }

    /// Saves the book's open trade under its pipeline and symbol (replacing the previous
    /// state). Errors: a `Query` error on `open_trades` when the quantity is not positive
    /// (a flat trade is deleted, not saved).
    pub async fn save_open_trade(&self, trade: &OpenTrade, at: i64) -> Result<(), StoreError> {
        let json = json_text(trade, "open_trades", "trade")?;
        with_pool!(self, |pool| save_open_trade_on!(pool, trade, &json, at))
    }

    /// Deletes the open trade of `pipeline` in `symbol` (the position is flat); returns
    /// whether there was one.
    pub async fn delete_open_trade(
        &self,
        pipeline: &str,
        symbol: &str,
    ) -> Result<bool, StoreError> {
        with_pool!(self, |pool| delete_open_trade_on!(pool, pipeline, symbol))
    }

    /// Every open trade, ordered by pipeline and symbol (a restart re-adopts them into the
    /// book, stops and targets included).
    pub async fn load_open_trades(&self) -> Result<Vec<OpenTrade>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query("SELECT trade FROM open_trades ORDER BY pipeline, symbol")
                .fetch_all(pool)
                .await
                .map_err(q("open_trades", "select"))?;
            rows.iter()
                .map(|r| Cols::new(r, "open_trades").json("trade"))
                .collect()
        })
    }

    /// Open positions with their pipeline (from the open trades), ordered by pipeline and
    /// symbol: what the CLI lists.
    pub async fn open_positions(&self) -> Result<Vec<OpenPosition>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT pipeline, symbol, side, quantity, average_price, entry_time, updated_at \
                 FROM open_trades ORDER BY pipeline, symbol",
            )
            .fetch_all(pool)
            .await
            .map_err(q("open_trades", "select"))?;
            rows.iter().map(position_from_row).collect()
        })
    }

    /// Appends an equity point of `account` at broker `broker`. One point per second: a
    /// second point with the same `ts` replaces the first (the last state of that second).
    pub async fn append_equity(
        &self,
        broker: &str,
        account: &str,
        point: &EquityPoint,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO equity_points (broker, account, ts, equity, cash) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (broker, account, ts) \
                 DO UPDATE SET equity = excluded.equity, cash = excluded.cash",
            )
            .bind(broker)
            .bind(account)
            .bind(point.ts)
            .bind(dec_text(point.equity))
            .bind(dec_text(point.cash))
            .execute(pool)
            .await
            .map_err(q("equity_points", "upsert"))?;
            Ok(())
        })
    }

    /// Equity points of `account` at broker `broker` in `[from, to)` Unix seconds, in time
    /// order.
    pub async fn equity_curve(
        &self,
        broker: &str,
        account: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<EquityPoint>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT ts, equity, cash FROM equity_points WHERE broker = $1 AND account = $2 \
                 AND ts >= $3 AND ts < $4 ORDER BY ts",
            )
            .bind(broker)
            .bind(account)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
            .map_err(q("equity_points", "select"))?;
            rows.iter()
                .map(|r| {
                    let c = Cols::new(r, "equity_points");
                    Ok(EquityPoint {
                        ts: c.int("ts")?,
                        equity: c.dec("equity")?,
                        cash: c.dec("cash")?,
                    })
                })
                .collect()
        })
    }
}
