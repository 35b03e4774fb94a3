//! Fencing epochs of the pipeline leases ([`crate::lease`]): the epoch each pipeline's
//! holder claimed, and the intent insert that checks it in the same transaction.

use super::codec::{Cols, q, to_i64};
use super::{BeginWrite, OrderIntent, Store, StoreError};

impl Store {
    /// Records that daemon `holder` holds `pipeline`'s lease with `epoch` from `at` (Unix
    /// seconds): raises the stored epoch, never lowers it. `true` when the stored epoch is
    /// now `epoch`; `false` when a later holder's epoch is stored already (our lease is
    /// stale: do not run the pipeline).
    ///
    /// # Errors
    /// The statement failed.
    pub async fn claim_epoch(
        &self,
        pipeline: &str,
        epoch: u64,
        holder: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let epoch = epoch_value(epoch)?;
        with_pool!(self, |pool| {
            let r = sqlx::query(
                "INSERT INTO pipeline_epochs (pipeline, epoch, holder, since) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (pipeline) DO UPDATE SET \
                 epoch = excluded.epoch, holder = excluded.holder, since = excluded.since \
                 WHERE pipeline_epochs.epoch <= excluded.epoch",
            )
            .bind(pipeline)
            .bind(epoch)
            .bind(holder)
            .bind(at)
            .execute(pool)
            .await
            .map_err(q("pipeline_epochs", "upsert"))?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// The epoch stored for `pipeline`, if a holder ever claimed one.
    ///
    /// # Errors
    /// The statement failed, or the stored value is not a positive integer.
    pub async fn pipeline_epoch(&self, pipeline: &str) -> Result<Option<u64>, StoreError> {
        with_pool!(self, |pool| {
            let row = sqlx::query("SELECT epoch FROM pipeline_epochs WHERE pipeline = $1")
                .bind(pipeline)
                .fetch_optional(pool)
                .await
                .map_err(q("pipeline_epochs", "select"))?;
            row.map(|r| Cols::new(&r, "pipeline_epochs").uint("epoch"))
                .transpose()
        })
    }

    /// [`Store::insert_intent`] under lease `epoch`: in one transaction, checks that the
    /// stored epoch of the intent's pipeline is `epoch` (and locks that row until the
    /// commit, so a new holder's claim waits for it), then writes the intent with its
    /// epoch. `Ok(true)` written, `Ok(false)` written before (same client order id).
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when another holder's epoch is stored (or none): nothing is
    /// written and the order must not be sent; a failed statement otherwise.
    pub async fn insert_intent_fenced(
        &self,
        intent: &OrderIntent,
        epoch: u64,
    ) -> Result<bool, StoreError> {
        let order = super::orders::order_json(intent)?;
        let value = epoch_value(epoch)?;
        with_pool!(self, |pool| {
            let mut tx = pool
                .begin_write()
                .await
                .map_err(q("order_intents", "begin"))?;
            let held = sqlx::query(
                "UPDATE pipeline_epochs SET since = since WHERE pipeline = $1 AND epoch = $2",
            )
            .bind(&intent.pipeline)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(q("pipeline_epochs", "update"))?;
            if held.rows_affected() != 1 {
                let stored = sqlx::query("SELECT epoch FROM pipeline_epochs WHERE pipeline = $1")
                    .bind(&intent.pipeline)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(q("pipeline_epochs", "select"))?
                    .and_then(|r| Cols::new(&r, "pipeline_epochs").uint("epoch").ok());
                return Err(StoreError::Fenced {
                    pipeline: intent.pipeline.clone(),
                    epoch,
                    stored,
                });
            }
            let written = insert_intent_on!(&mut *tx, intent, order)?;
            if written {
                sqlx::query("UPDATE order_intents SET epoch = $2 WHERE client_order_id = $1")
                    .bind(&intent.client_order_id)
                    .bind(value)
                    .execute(&mut *tx)
                    .await
                    .map_err(q("order_intents", "update"))?;
            }
            tx.commit().await.map_err(q("order_intents", "commit"))?;
            Ok(written)
        })
    }
}

fn epoch_value(epoch: u64) -> Result<i64, StoreError> {
    to_i64(epoch, "pipeline_epochs", "epoch")
}
