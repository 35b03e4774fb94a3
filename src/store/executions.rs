//! Executions and their node outputs.

use super::codec::{Cols, RowGet, dec_text, json_text, q, to_i64};
use super::{BeginWrite, ExecutionState, Store, StoreError, StoredExecution};
use crate::engine::state::{ExecutionRecord, NodeRecord};
use std::collections::BTreeMap;

const EXECUTION_COLUMNS: &str = "id, pipeline, revision, symbol, mode, trigger, started_at, \
     finished_at, status, reason, cost_usd";

/// Reason given to executions found running at start.
const INTERRUPTED_REASON: &str = "the daemon stopped while the execution ran";

fn execution_from_row<R: RowGet>(row: &R) -> Result<StoredExecution, StoreError> {
    let c = Cols::new(row, "executions");
    let status = c.text("status")?;
    let state = ExecutionState::parse(&status).ok_or_else(|| StoreError::Decode {
        table: "executions",
        column: "status",
        reason: format!("unknown value {status:?}"),
    })?;
    Ok(StoredExecution {
        id: c.text("id")?,
        pipeline: c.text("pipeline")?,
        revision: c.text("revision")?,
        symbol: c.text("symbol")?,
        mode: c.text("mode")?,
        trigger: c.text("trigger")?,
        started_at: c.int("started_at")?,
        finished_at: c.opt_int("finished_at")?,
        state,
        reason: c.opt_text("reason")?,
        cost_usd: c.dec("cost_usd")?,
    })
}

fn node_from_row<R: RowGet>(row: &R) -> Result<NodeRecord, StoreError> {
    let c = Cols::new(row, "node_outputs");
    Ok(NodeRecord {
        node: c.text("node")?,
        agent: c.text("agent")?,
        output: c.json("output")?,
        reasoning: c.text("reasoning")?,
        duration_us: c.uint("duration_us")?,
        cost_usd: c.dec("cost_usd")?,
    })
}

impl Store {
    /// Records that an execution started: the row of `record.id` with status `running`
    /// (its `status`, `finished_at`, `reason`, `nodes` and `cost_usd` are not read). An
    /// execution id is stable across restarts, so starting an id that exists (a re-run
    /// after a crash) resets that row to `running` and deletes its old node outputs.
    pub async fn start_execution(&self, record: &ExecutionRecord) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await.map_err(q("executions", "begin"))?;
            sqlx::query(
                "INSERT INTO executions (id, pipeline, revision, symbol, mode, trigger, \
                 started_at, finished_at, status, reason, cost_usd) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, 'running', NULL, '0') \
                 ON CONFLICT (id) DO UPDATE SET pipeline = excluded.pipeline, \
                 revision = excluded.revision, symbol = excluded.symbol, mode = excluded.mode, \
                 trigger = excluded.trigger, started_at = excluded.started_at, \
                 finished_at = NULL, status = 'running', reason = NULL, cost_usd = '0'",
            )
            .bind(&record.id)
            .bind(&record.pipeline)
            .bind(&record.revision)
            .bind(&record.symbol)
            .bind(&record.mode)
            .bind(&record.trigger)
            .bind(record.started_at)
            .execute(&mut *tx)
            .await
            .map_err(q("executions", "upsert"))?;
            sqlx::query("DELETE FROM node_outputs WHERE execution_id = $1")
                .bind(&record.id)
                .execute(&mut *tx)
                .await
                .map_err(q("node_outputs", "delete"))?;
            tx.commit().await.map_err(q("executions", "commit"))?;
            Ok(())
        })
    }

    /// Records how an execution ended, with its nodes (rows of `node_outputs`, `seq` from
    /// 0 in `record.nodes` order), in one transaction. Works whether or not
    /// [`Store::start_execution`] ran (the row is upserted); node outputs of an earlier
    /// finish of the same id are replaced.
    pub async fn finish_execution(&self, record: &ExecutionRecord) -> Result<(), StoreError> {
        let mut nodes = Vec::with_capacity(record.nodes.len());
        for n in &record.nodes {
            nodes.push((
                json_text(&n.output, "node_outputs", "output")?,
                to_i64(n.duration_us, "node_outputs", "duration_us")?,
            ));
        }
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await.map_err(q("executions", "begin"))?;
            sqlx::query(
                "INSERT INTO executions (id, pipeline, revision, symbol, mode, trigger, \
                 started_at, finished_at, status, reason, cost_usd) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (id) DO UPDATE SET pipeline = excluded.pipeline, \
                 revision = excluded.revision, symbol = excluded.symbol, mode = excluded.mode, \
                 trigger = excluded.trigger, started_at = excluded.started_at, \
                 finished_at = excluded.finished_at, status = excluded.status, \
                 reason = excluded.reason, cost_usd = excluded.cost_usd",
            )
            .bind(&record.id)
            .bind(&record.pipeline)
            .bind(&record.revision)
            .bind(&record.symbol)
            .bind(&record.mode)
            .bind(&record.trigger)
            .bind(record.started_at)
            .bind(record.finished_at)
            .bind(record.status.as_str())
            .bind(&record.reason)
            .bind(dec_text(record.cost_usd))
            .execute(&mut *tx)
            .await
            .map_err(q("executions", "upsert"))?;
            sqlx::query("DELETE FROM node_outputs WHERE execution_id = $1")
                .bind(&record.id)
                .execute(&mut *tx)
                .await
                .map_err(q("node_outputs", "delete"))?;
            for (seq, (n, (output, duration_us))) in record.nodes.iter().zip(nodes).enumerate() {
                sqlx::query(
                    "INSERT INTO node_outputs (execution_id, seq, node, agent, output, \
                     reasoning, duration_us, cost_usd) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&record.id)
                .bind(seq as i64)
                .bind(&n.node)
                .bind(&n.agent)
                .bind(output)
                .bind(&n.reasoning)
                .bind(duration_us)
                .bind(dec_text(n.cost_usd))
                .execute(&mut *tx)
                .await
                .map_err(q("node_outputs", "insert"))?;
            }
            tx.commit().await.map_err(q("executions", "commit"))?;
            Ok(())
        })
    }

    /// At daemon start: every execution still `running` (the daemon stopped while it ran)
    /// becomes `interrupted`, with a reason saying so and no `finished_at`. Returns how many
    /// rows changed.
    pub async fn mark_running_interrupted(&self) -> Result<u64, StoreError> {
        with_pool!(self, |pool| {
            let r = sqlx::query(
                "UPDATE executions SET status = 'interrupted', reason = $1 \
                 WHERE status = 'running'",
            )
            .bind(INTERRUPTED_REASON)
            .execute(pool)
            .await
            .map_err(q("executions", "update"))?;
            Ok(r.rows_affected())
        })
    }

    /// The execution `id`, without its nodes.
    pub async fn execution(&self, id: &str) -> Result<Option<StoredExecution>, StoreError> {
        with_pool!(self, |pool| {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(q("executions", "select"))?;
            row.as_ref().map(execution_from_row).transpose()
        })
    }

    /// The node outputs of execution `id`, in the order the nodes ran (empty for an
    /// unknown id or a running execution).
    pub async fn execution_nodes(&self, id: &str) -> Result<Vec<NodeRecord>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT node, agent, output, reasoning, duration_us, cost_usd \
                 FROM node_outputs WHERE execution_id = $1 ORDER BY seq",
            )
            .bind(id)
            .fetch_all(pool)
            .await
            .map_err(q("node_outputs", "select"))?;
            rows.iter().map(node_from_row).collect()
        })
    }

    /// The last `limit` executions of `pipeline`, newest first (by start time, then id).
    pub async fn last_executions(
        &self,
        pipeline: &str,
        limit: u32,
    ) -> Result<Vec<StoredExecution>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {EXECUTION_COLUMNS} FROM executions WHERE pipeline = $1 \
                 ORDER BY started_at DESC, id DESC LIMIT $2"
            )))
            .bind(pipeline)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(q("executions", "select"))?;
            rows.iter().map(execution_from_row).collect()
        })
    }

    /// Executions counted by stored status (`running`, `completed`, `skipped`, `failed`,
    /// `interrupted`; statuses with no execution are absent), of one pipeline or of all.
    pub async fn execution_counts(
        &self,
        pipeline: Option<&str>,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT status, COUNT(*) AS n FROM executions \
                 WHERE ($1 IS NULL OR pipeline = $1) GROUP BY status",
            )
            .bind(pipeline)
            .fetch_all(pool)
            .await
            .map_err(q("executions", "select"))?;
            let mut counts = BTreeMap::new();
            for row in &rows {
                let c = Cols::new(row, "executions");
                counts.insert(c.text("status")?, c.uint("n")?);
            }
            Ok(counts)
        })
    }
}
