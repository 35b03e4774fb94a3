//! Reconciles, interventions, halts, cost records and broker snapshots.

use super::codec::{Cols, RowGet, dec_text, json_text, q, to_i64};
use super::{
    BrokerState, CostRecord, Halt, Intervention, ReconcileRecord, Scope, Store, StoreError,
};
use rust_decimal::Decimal;

fn reconcile_from_row<R: RowGet>(row: &R) -> Result<ReconcileRecord, StoreError> {
    let c = Cols::new(row, "reconciles");
    Ok(ReconcileRecord {
        id: c.int("id")?,
        at: c.int("at")?,
        revision: c.text("revision")?,
        previous_revision: c.opt_text("previous_revision")?,
        result: c.name("result")?,
        diff: c.json("diff")?,
        findings: c.json("findings")?,
        duration_ms: c.uint("duration_ms")?,
    })
}

fn intervention_from_row<R: RowGet>(row: &R) -> Result<Intervention, StoreError> {
    let c = Cols::new(row, "interventions");
    Ok(Intervention {
        id: c.int("id")?,
        at: c.int("at")?,
        kind: c.name("kind")?,
        scope: c.json("scope")?,
        reason: c.text("reason")?,
        result: c.json("result")?,
    })
}

fn halt_from_row<R: RowGet>(row: &R) -> Result<Halt, StoreError> {
    let c = Cols::new(row, "halts");
    let key = c.text("scope")?;
    let scope = Scope::from_key(&key).ok_or_else(|| StoreError::Decode {
        table: "halts",
        column: "scope",
        reason: format!("unknown scope key {key:?}"),
    })?;
    Ok(Halt {
        scope,
        reason: c.text("reason")?,
        since: c.int("since")?,
    })
}

fn cost_from_row<R: RowGet>(row: &R) -> Result<CostRecord, StoreError> {
    let c = Cols::new(row, "cost_records");
    Ok(CostRecord {
        execution_id: c.text("execution_id")?,
        pipeline: c.text("pipeline")?,
        node: c.text("node")?,
        model: c.opt_text("model")?,
        input_tokens: c.uint("input_tokens")?,
        output_tokens: c.uint("output_tokens")?,
        usd: c.dec("usd")?,
        runtime_us: c.uint("runtime_us")?,
        at: c.int("at")?,
    })
}

impl Store {
    /// Records a reconcile; returns its id (`record.id` is not read).
    pub async fn record_reconcile(&self, record: &ReconcileRecord) -> Result<i64, StoreError> {
        let diff = json_text(&record.diff, "reconciles", "diff")?;
        let findings = json_text(&record.findings, "reconciles", "findings")?;
        let duration_ms = to_i64(record.duration_ms, "reconciles", "duration_ms")?;
        with_pool!(self, |pool| {
            let row = sqlx::query(
                "INSERT INTO reconciles (at, revision, previous_revision, result, diff, \
                 findings, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(record.at)
            .bind(&record.revision)
            .bind(&record.previous_revision)
            .bind(record.result.as_str())
            .bind(diff)
            .bind(findings)
            .bind(duration_ms)
            .fetch_one(pool)
            .await
            .map_err(q("reconciles", "insert"))?;
            Cols::new(&row, "reconciles").int("id")
        })
    }

    /// The last `limit` reconciles, newest first.
    pub async fn recent_reconciles(&self, limit: u32) -> Result<Vec<ReconcileRecord>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT id, at, revision, previous_revision, result, diff, findings, duration_ms \
                 FROM reconciles ORDER BY id DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(q("reconciles", "select"))?;
            rows.iter().map(reconcile_from_row).collect()
        })
    }

    /// The revision of the last reconcile that applied a new desired state (what was
    /// running when the daemon stopped), if any.
    pub async fn last_applied_revision(&self) -> Result<Option<String>, StoreError> {
        with_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT revision FROM reconciles WHERE result = 'applied' \
                 ORDER BY id DESC LIMIT 1",
            )
            .fetch_optional(pool)
            .await
            .map_err(q("reconciles", "select"))?;
            row.as_ref()
                .map(|r| Cols::new(r, "reconciles").text("revision"))
                .transpose()
        })
    }

    /// Records an intervention; returns its id (`intervention.id` is not read).
    pub async fn record_intervention(
        &self,
        intervention: &Intervention,
    ) -> Result<i64, StoreError> {
        let scope = json_text(&intervention.scope, "interventions", "scope")?;
        let result = json_text(&intervention.result, "interventions", "result")?;
        with_pool!(self, |pool| {
            let row = sqlx::query(
                "INSERT INTO interventions (at, kind, scope, reason, result) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(intervention.at)
            .bind(intervention.kind.as_str())
            .bind(scope)
            .bind(&intervention.reason)
            .bind(result)
            .fetch_one(pool)
            .await
            .map_err(q("interventions", "insert"))?;
            Cols::new(&row, "interventions").int("id")
        })
    }

    /// Interventions in `[from, to)` Unix seconds, oldest first.
    pub async fn interventions(&self, from: i64, to: i64) -> Result<Vec<Intervention>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT id, at, kind, scope, reason, result FROM interventions \
                 WHERE at >= $1 AND at < $2 ORDER BY at, id",
            )
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
            .map_err(q("interventions", "select"))?;
            rows.iter().map(intervention_from_row).collect()
        })
    }

    /// Latches a halt on `scope`. A halt already set on the same scope is kept as it is
    /// (its first reason and time stand); returns whether this call set it.
    pub async fn set_halt(
        &self,
        scope: &Scope,
        reason: &str,
        since: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let r = sqlx::query(
                "INSERT INTO halts (scope, reason, since) VALUES ($1, $2, $3) \
                 ON CONFLICT (scope) DO NOTHING",
            )
            .bind(scope.key())
            .bind(reason)
            .bind(since)
            .execute(pool)
            .await
            .map_err(q("halts", "insert"))?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Clears the halt on exactly `scope` (a halt on `all` is not cleared by clearing a
    /// pipeline); returns whether there was one.
    pub async fn clear_halt(&self, scope: &Scope) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let r = sqlx::query("DELETE FROM halts WHERE scope = $1")
                .bind(scope.key())
                .execute(pool)
                .await
                .map_err(q("halts", "delete"))?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Every latched halt, ordered by scope key.
    pub async fn halts(&self) -> Result<Vec<Halt>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query("SELECT scope, reason, since FROM halts ORDER BY scope")
                .fetch_all(pool)
                .await
                .map_err(q("halts", "select"))?;
            rows.iter().map(halt_from_row).collect()
        })
    }

    /// Records the cost of one node of an execution.
    pub async fn record_cost(&self, cost: &CostRecord) -> Result<(), StoreError> {
        let input = to_i64(cost.input_tokens, "cost_records", "input_tokens")?;
        let output = to_i64(cost.output_tokens, "cost_records", "output_tokens")?;
        let runtime = to_i64(cost.runtime_us, "cost_records", "runtime_us")?;
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO cost_records (execution_id, pipeline, node, model, input_tokens, \
                 output_tokens, usd, runtime_us, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&cost.execution_id)
            .bind(&cost.pipeline)
            .bind(&cost.node)
            .bind(&cost.model)
            .bind(input)
            .bind(output)
            .bind(dec_text(cost.usd))
            .bind(runtime)
            .bind(cost.at)
            .execute(pool)
            .await
            .map_err(q("cost_records", "insert"))?;
            Ok(())
        })
    }

    /// Cost records of `pipeline` (all pipelines when `None`) in `[from, to)` Unix
    /// seconds, oldest first.
    pub async fn costs(
        &self,
        pipeline: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Vec<CostRecord>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT execution_id, pipeline, node, model, input_tokens, output_tokens, usd, \
                 runtime_us, at FROM cost_records WHERE ($1 IS NULL OR pipeline = $1) \
                 AND at >= $2 AND at < $3 ORDER BY at, id",
            )
            .bind(pipeline)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
            .map_err(q("cost_records", "select"))?;
            rows.iter().map(cost_from_row).collect()
        })
    }

    /// Total USD of the cost records of `pipeline` (all when `None`) in `[from, to)` Unix
    /// seconds, summed exactly as `Decimal` (the budget check after a restart).
    pub async fn cost_total_usd(
        &self,
        pipeline: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Decimal, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT usd FROM cost_records WHERE ($1 IS NULL OR pipeline = $1) \
                 AND at >= $2 AND at < $3",
            )
            .bind(pipeline)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
            .map_err(q("cost_records", "select"))?;
            let mut total = Decimal::ZERO;
            for row in &rows {
                total += Cols::new(row, "cost_records").dec("usd")?;
            }
            Ok(total)
        })
    }

    /// Saves broker `name`'s snapshot (replacing the previous one).
    pub async fn save_broker_state(
        &self,
        name: &str,
        state: &(impl serde::Serialize + ?Sized),
        at: i64,
    ) -> Result<(), StoreError> {
        let state = json_text(state, "broker_states", "state")?;
        with_pool!(self, |pool| upsert_broker_state_on!(pool, name, &state, at))
    }

    /// Broker `name`'s last snapshot.
    pub async fn load_broker_state(&self, name: &str) -> Result<Option<BrokerState>, StoreError> {
        with_pool!(self, |pool| {
            let row =
                sqlx::query("SELECT name, state, updated_at FROM broker_states WHERE name = $1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await
                    .map_err(q("broker_states", "select"))?;
            row.as_ref()
                .map(|r| {
                    let c = Cols::new(r, "broker_states");
                    Ok(BrokerState {
                        name: c.text("name")?,
                        state: c.json("state")?,
                        updated_at: c.int("updated_at")?,
                    })
                })
                .transpose()
        })
    }
}

impl Store {
    /// Saves the named value `key` (JSON), replacing the previous one.
    pub async fn set_state(
        &self,
        key: &str,
        value: &serde_json::Value,
        at: i64,
    ) -> Result<(), StoreError> {
        let value = json_text(value, "daemon_state", "value")?;
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO daemon_state (key, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(&value)
            .bind(at)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(q("daemon_state", "upsert"))
        })
    }

    /// The named value `key`, if it was saved.
    pub async fn get_state(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        with_pool!(self, |pool| {
            let row = sqlx::query("SELECT key, value, updated_at FROM daemon_state WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await
                .map_err(q("daemon_state", "select"))?;
            row.as_ref()
                .map(|r| Cols::new(r, "daemon_state").json("value"))
                .transpose()
        })
    }
}
