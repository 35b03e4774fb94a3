//! What `ztraded status` and `ztraded report` read: the pipelines' states (table
//! `pipeline_status`, written by the daemon when a state changes), the last reconciles by
//! result, the last price the store knows for a position, trades with the config revision
//! they were entered under, cost totals and the accounts with equity points.

use super::codec::{Cols, RowGet, json_text, q};
use super::{ReconcileRecord, ReconcileResult, Store, StoreError};
use crate::engine::trades::TradeRecord;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// A pipeline's state, as `ztraded_pipelines{state}` counts it (the stored value is the
/// snake_case name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    /// Taking triggers and new entries.
    Running,
    /// Taking triggers; new entries halted (a latched halt or a reached limit; the reason
    /// says which).
    Halted,
    /// Removed or disabled: no new entries, exits managed until flat.
    Draining,
    /// Not running (the daemon stopped, or the pipeline drained).
    Stopped,
    /// Could not start or cannot go on (the reason says why).
    Failed,
}

impl PipelineState {
    /// `running`, `halted`, `draining`, `stopped` or `failed` (the stored value).
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineState::Running => "running",
            PipelineState::Halted => "halted",
            PipelineState::Draining => "draining",
            PipelineState::Stopped => "stopped",
            PipelineState::Failed => "failed",
        }
    }
}

/// A pipeline's LLM cost budget as configured (`budget:`), with the time zone whose days and
/// months it counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetLimits {
    /// Most spend per local day, USD; `None` for no daily limit.
    pub daily_usd: Option<Decimal>,
    /// Most spend per local month, USD; `None` for no monthly limit.
    pub monthly_usd: Option<Decimal>,
    /// IANA time zone of the days and months (the pipeline window's, else the market's).
    pub timezone: String,
}

/// One row of `pipeline_status`: a pipeline's state as the daemon last set it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStatus {
    /// Pipeline name.
    pub pipeline: String,
    /// Its state.
    pub state: PipelineState,
    /// Why it is halted or failed (`None` otherwise).
    pub reason: Option<String>,
    /// Config revision it runs (short hash, as in `executions.revision`).
    pub revision: String,
    /// Mode (`live`, `paper`, `simulation`, `validation`).
    pub mode: String,
    /// The `[brokers.<name>]` it trades at (`None` in validation mode without one).
    pub broker: Option<String>,
    /// Symbols it trades.
    pub symbols: Vec<String>,
    /// Its budget; `None` without one.
    pub budget: Option<BudgetLimits>,
    /// When it entered the state, Unix seconds of the daemon's clock.
    pub since: i64,
}

/// Cost records summed for a report (table `cost_records`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CostSummary {
    /// Number of cost records.
    pub records: u64,
    /// Executions with at least one cost record.
    pub executions: u64,
    /// Σ usd of every record, USD (LLM tokens and agent runtime).
    pub total_usd: Decimal,
    /// Σ usd of the records of nodes that called a model, USD.
    pub llm_usd: Decimal,
    /// Σ prompt tokens.
    pub input_tokens: u64,
    /// Σ completion tokens.
    pub output_tokens: u64,
}

/// Where a last known price comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    /// The close of the newest bar in the `market_data` node output of the pipeline's last
    /// execution for the symbol.
    BarClose,
    /// The price of the pipeline's last fill in the symbol.
    Fill,
}

impl PriceSource {
    /// `bar_close` or `fill`.
    pub fn as_str(self) -> &'static str {
        match self {
            PriceSource::BarClose => "bar_close",
            PriceSource::Fill => "fill",
        }
    }
}

/// The last price the store knows for a pipeline's symbol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastPrice {
    /// USD per share.
    pub price: Decimal,
    /// When it was seen, Unix seconds of the daemon's clock (the execution's start at the
    /// bar close, or the fill's time).
    pub at: i64,
    /// Where it comes from.
    pub source: PriceSource,
}

/// A closed trade with the config revision its pipeline ran when it was entered.
#[derive(Clone, Debug, PartialEq)]
pub struct RevisionTrade {
    /// The trade.
    pub trade: TradeRecord,
    /// Revision (short hash) of the pipeline's last execution in the symbol started at or
    /// before the entry (the execution that decided it); `None` when there is none (a
    /// position adopted from the broker, say).
    pub revision: Option<String>,
}

const STATUS_COLUMNS: &str =
    "pipeline, state, reason, revision, mode, broker, symbols, budget, since";

fn status_from_row<R: RowGet>(row: &R) -> Result<PipelineStatus, StoreError> {
    let c = Cols::new(row, "pipeline_status");
    let budget = match c.opt_text("budget")? {
        None => None,
        Some(s) => Some(serde_json::from_str(&s).map_err(|e| StoreError::Decode {
            table: "pipeline_status",
            column: "budget",
            reason: format!("invalid JSON: {e}"),
        })?),
    };
    Ok(PipelineStatus {
        pipeline: c.text("pipeline")?,
        state: c.name("state")?,
        reason: c.opt_text("reason")?,
        revision: c.text("revision")?,
        mode: c.text("mode")?,
        broker: c.opt_text("broker")?,
        symbols: c.json("symbols")?,
        budget,
        since: c.int("since")?,
    })
}

fn revision_trade_from_row<R: RowGet>(row: &R) -> Result<RevisionTrade, StoreError> {
    Ok(RevisionTrade {
        trade: super::trades::trade_from_row(row)?,
        revision: Cols::new(row, "trades").opt_text("revision")?,
    })
}

/// The close of the newest bar of a `market_data` node output
/// (`{"1d": {"bars": [[ts, o, h, l, c, v], …]}, …}`), as a decimal; `None` when it has no
/// bar or the close is not a finite number.
pub fn newest_close(output: &serde_json::Value) -> Option<Decimal> {
    let frames = output.as_object()?;
    let newest = frames
        .values()
        .filter_map(|f| f.get("bars")?.as_array()?.last())
        .filter_map(|bar| Some((bar.get(0)?.as_i64()?, bar.get(4)?.as_f64()?)))
        .max_by_key(|(ts, _)| *ts)?;
    let close = newest.1;
    if !close.is_finite() {
        return None;
    }
    // Through the shortest decimal text of the double: 33.5 stays 33.5.
    Decimal::from_str(&close.to_string()).ok()
}

impl Store {
    /// Saves a pipeline's state (replacing its previous row).
    pub async fn set_pipeline_status(&self, status: &PipelineStatus) -> Result<(), StoreError> {
        let symbols = json_text(&status.symbols, "pipeline_status", "symbols")?;
        let budget = status
            .budget
            .as_ref()
            .map(|b| json_text(b, "pipeline_status", "budget"))
            .transpose()?;
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO pipeline_status (pipeline, state, reason, revision, mode, broker, \
                 symbols, budget, since) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (pipeline) DO UPDATE SET state = excluded.state, \
                 reason = excluded.reason, revision = excluded.revision, mode = excluded.mode, \
                 broker = excluded.broker, symbols = excluded.symbols, budget = excluded.budget, \
                 since = excluded.since",
            )
            .bind(&status.pipeline)
            .bind(status.state.as_str())
            .bind(&status.reason)
            .bind(&status.revision)
            .bind(&status.mode)
            .bind(&status.broker)
            .bind(&symbols)
            .bind(&budget)
            .bind(status.since)
            .execute(pool)
            .await
            .map_err(q("pipeline_status", "upsert"))?;
            Ok(())
        })
    }

    /// Deletes the row of `pipeline` (removed and drained); returns whether there was one.
    pub async fn delete_pipeline_status(&self, pipeline: &str) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let r = sqlx::query("DELETE FROM pipeline_status WHERE pipeline = $1")
                .bind(pipeline)
                .execute(pool)
                .await
                .map_err(q("pipeline_status", "delete"))?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Deletes every row of `pipeline_status` (the daemon at start); returns how many.
    pub async fn clear_pipeline_statuses(&self) -> Result<u64, StoreError> {
        with_pool!(self, |pool| {
            let r = sqlx::query("DELETE FROM pipeline_status")
                .execute(pool)
                .await
                .map_err(q("pipeline_status", "delete"))?;
            Ok(r.rows_affected())
        })
    }

    /// Every pipeline's state, ordered by pipeline name.
    pub async fn pipeline_statuses(&self) -> Result<Vec<PipelineStatus>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {STATUS_COLUMNS} FROM pipeline_status ORDER BY pipeline"
            )))
            .fetch_all(pool)
            .await
            .map_err(q("pipeline_status", "select"))?;
            rows.iter().map(status_from_row).collect()
        })
    }

    /// The newest reconcile with `result` (the applied revision, the last refused one).
    pub async fn last_reconcile(
        &self,
        result: ReconcileResult,
    ) -> Result<Option<ReconcileRecord>, StoreError> {
        with_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT id, at, revision, previous_revision, result, diff, findings, duration_ms \
                 FROM reconciles WHERE result = $1 ORDER BY id DESC LIMIT 1",
            )
            .bind(result.as_str())
            .fetch_optional(pool)
            .await
            .map_err(q("reconciles", "select"))?;
            row.as_ref()
                .map(|r| {
                    let c = Cols::new(r, "reconciles");
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
                })
                .transpose()
        })
    }

    /// The last price the store knows for `symbol` in `pipeline`: the newer of the close of
    /// the newest bar in the `market_data` output of the pipeline's last execution in the
    /// symbol that ran that node, and the price of its last fill in the symbol (the bar close
    /// on a tie). `None` when there is neither.
    pub async fn last_price(
        &self,
        pipeline: &str,
        symbol: &str,
    ) -> Result<Option<LastPrice>, StoreError> {
        let (bar, fill) = with_pool!(self, |pool| {
            let bar = sqlx::query(
                "SELECT e.started_at AS at, n.output AS output FROM executions e \
                 JOIN node_outputs n ON n.execution_id = e.id \
                 WHERE e.pipeline = $1 AND e.symbol = $2 AND n.agent = 'market_data' \
                 ORDER BY e.started_at DESC, n.seq DESC LIMIT 1",
            )
            .bind(pipeline)
            .bind(symbol)
            .fetch_optional(pool)
            .await
            .map_err(q("node_outputs", "select"))?;
            let bar = match bar {
                None => None,
                Some(r) => {
                    let c = Cols::new(&r, "node_outputs");
                    let output: serde_json::Value = c.json("output")?;
                    let at = c.int("at")?;
                    newest_close(&output).map(|price| LastPrice {
                        price,
                        at,
                        source: PriceSource::BarClose,
                    })
                }
            };
            let fill = sqlx::query(
                "SELECT price, ts FROM fills WHERE pipeline = $1 AND symbol = $2 \
                 ORDER BY ts DESC, fill_id DESC LIMIT 1",
            )
            .bind(pipeline)
            .bind(symbol)
            .fetch_optional(pool)
            .await
            .map_err(q("fills", "select"))?;
            let fill = fill
                .as_ref()
                .map(|r| {
                    let c = Cols::new(r, "fills");
                    Ok::<_, StoreError>(LastPrice {
                        price: c.dec("price")?,
                        at: c.int("ts")?,
                        source: PriceSource::Fill,
                    })
                })
                .transpose()?;
            Ok::<_, StoreError>((bar, fill))
        })?;
        Ok(match (bar, fill) {
            (Some(b), Some(f)) if f.at > b.at => Some(f),
            (Some(b), _) => Some(b),
            (None, f) => f,
        })
    }

    /// Trades of `pipeline` (all when `None`) in `mode` (all when `None`) that closed in
    /// `[from, to)` Unix seconds, in the order they closed, each with the config revision
    /// it was entered under (see [`RevisionTrade::revision`]).
    pub async fn trades_with_revisions(
        &self,
        pipeline: Option<&str>,
        mode: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Vec<RevisionTrade>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT t.pipeline, t.symbol, t.side, t.entry_time, t.exit_time, t.entry_price, \
                 t.exit_price, t.quantity, t.stop_loss, t.target_1, t.target_2, t.exit_reason, \
                 t.pnl, t.fees, t.mode, t.final_stop, \
                 (SELECT e.revision FROM executions e WHERE e.pipeline = t.pipeline \
                  AND e.symbol = t.symbol AND e.started_at <= t.entry_time \
                  ORDER BY e.started_at DESC LIMIT 1) AS revision \
                 FROM trades t WHERE ($1 IS NULL OR t.pipeline = $1) \
                 AND ($2 IS NULL OR t.mode = $2) \
                 AND t.exit_time >= $3 AND t.exit_time < $4 ORDER BY t.exit_time, t.id",
            )
            .bind(pipeline)
            .bind(mode)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
            .map_err(q("trades", "select"))?;
            rows.iter().map(revision_trade_from_row).collect()
        })
    }

    /// The cost records of `pipeline` (all when `None`) whose execution ran in `mode` (all
    /// when `None`) in `[from, to)` Unix seconds, summed exactly as `Decimal`.
    pub async fn cost_summary(
        &self,
        pipeline: Option<&str>,
        mode: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<CostSummary, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT c.execution_id, c.model, c.input_tokens, c.output_tokens, c.usd \
                 FROM cost_records c LEFT JOIN executions e ON e.id = c.execution_id \
                 WHERE ($1 IS NULL OR c.pipeline = $1) AND ($2 IS NULL OR e.mode = $2) \
                 AND c.at >= $3 AND c.at < $4",
            )
            .bind(pipeline)
            .bind(mode)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
            .map_err(q("cost_records", "select"))?;
            let mut sum = CostSummary::default();
            let mut executions = std::collections::BTreeSet::new();
            for row in &rows {
                let c = Cols::new(row, "cost_records");
                let usd = c.dec("usd")?;
                sum.records += 1;
                sum.total_usd += usd;
                if c.opt_text("model")?.is_some() {
                    sum.llm_usd += usd;
                }
                sum.input_tokens += c.uint("input_tokens")?;
                sum.output_tokens += c.uint("output_tokens")?;
                executions.insert(c.text("execution_id")?);
            }
            sum.executions = executions.len() as u64;
            Ok(sum)
        })
    }

    /// The `(broker, account)` pairs with equity points, ordered.
    pub async fn equity_accounts(&self) -> Result<Vec<(String, String)>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT DISTINCT broker, account FROM equity_points ORDER BY broker, account",
            )
            .fetch_all(pool)
            .await
            .map_err(q("equity_points", "select"))?;
            rows.iter()
                .map(|r| {
                    let c = Cols::new(r, "equity_points");
                    Ok((c.text("broker")?, c.text("account")?))
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{Fill, OrderPurpose, PositionSide, Side};
    use crate::engine::state::{ExecutionRecord, ExecutionStatus, NodeRecord};
    use rust_decimal::dec;
    use serde_json::json;

    async fn memory() -> Store {
        Store::connect("sqlite::memory:", 1, std::path::Path::new("."))
            .await
            .expect("in-memory store")
    }

    fn trade(pipeline: &str, symbol: &str, entry: i64, exit: i64, pnl: Decimal) -> TradeRecord {
        TradeRecord {
            pipeline: pipeline.into(),
            symbol: symbol.into(),
            side: PositionSide::Long,
            entry_time: entry,
            exit_time: exit,
            entry_price: dec!(100),
            exit_price: dec!(101),
            quantity: dec!(10),
            stop_loss: Some(dec!(95)),
            final_stop: Some(dec!(100)),
            target_1: Some(dec!(105)),
            target_2: Some(dec!(110)),
            exit_reason: OrderPurpose::StopLoss,
            pnl,
            fees: dec!(0.1),
            mode: "simulation".into(),
        }
    }

    fn execution(
        pipeline: &str,
        symbol: &str,
        at: i64,
        revision: &str,
        close: f64,
    ) -> ExecutionRecord {
        ExecutionRecord {
            id: format!("{pipeline}:{symbol}:{at}"),
            pipeline: pipeline.into(),
            revision: revision.into(),
            symbol: symbol.into(),
            mode: "simulation".into(),
            trigger: "bar_close".into(),
            started_at: at,
            finished_at: at,
            status: ExecutionStatus::Completed,
            reason: None,
            nodes: vec![NodeRecord {
                node: "data".into(),
                agent: "market_data".into(),
                output: json!({
                    "1d": {"bars": [[at - 172_800, 1.0, 2.0, 0.5, 1.5, 10.0],
                                    [at - 86_400, 1.0, 2.0, 0.5, close, 10.0]],
                           "values": {}},
                    "1w": {"bars": [[at - 604_800, 1.0, 2.0, 0.5, 9.0, 10.0]], "values": {}}
                }),
                reasoning: String::new(),
                duration_us: 1,
                cost_usd: Decimal::ZERO,
            }],
            cost_usd: Decimal::ZERO,
        }
    }

    fn status(name: &str, state: PipelineState, since: i64) -> PipelineStatus {
        PipelineStatus {
            pipeline: name.into(),
            state,
            reason: (state == PipelineState::Halted).then(|| "limit: 3 trades today".into()),
            revision: "abcdef123456".into(),
            mode: "simulation".into(),
            broker: Some("sim".into()),
            symbols: vec!["AAPL".into(), "SPY".into()],
            budget: Some(BudgetLimits {
                daily_usd: Some(dec!(5)),
                monthly_usd: None,
                timezone: "America/New_York".into(),
            }),
            since,
        }
    }

    #[tokio::test]
    async fn pipeline_statuses_are_upserted_listed_deleted_and_cleared() {
        let store = memory().await;
        store
            .set_pipeline_status(&status("b", PipelineState::Running, 10))
            .await
            .unwrap();
        store
            .set_pipeline_status(&status("a", PipelineState::Running, 11))
            .await
            .unwrap();
        let mut halted = status("b", PipelineState::Halted, 12);
        halted.budget = None;
        store.set_pipeline_status(&halted).await.unwrap();
        let all = store.pipeline_statuses().await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], status("a", PipelineState::Running, 11));
        assert_eq!(all[1], halted);
        assert!(store.delete_pipeline_status("a").await.unwrap());
        assert!(!store.delete_pipeline_status("a").await.unwrap());
        assert_eq!(store.clear_pipeline_statuses().await.unwrap(), 1);
        assert!(store.pipeline_statuses().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_last_reconcile_of_each_result() {
        let store = memory().await;
        assert_eq!(
            store
                .last_reconcile(ReconcileResult::Applied)
                .await
                .unwrap(),
            None
        );
        for (at, result) in [
            (1, ReconcileResult::Applied),
            (2, ReconcileResult::Refused),
            (3, ReconcileResult::Applied),
        ] {
            store
                .record_reconcile(&ReconcileRecord {
                    id: 0,
                    at,
                    revision: format!("rev{at}"),
                    previous_revision: None,
                    result,
                    diff: json!({"changes": []}),
                    findings: json!([{"code": "cel-syntax", "severity": "error"}]),
                    duration_ms: 1,
                })
                .await
                .unwrap();
        }
        let applied = store
            .last_reconcile(ReconcileResult::Applied)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((applied.at, applied.revision.as_str()), (3, "rev3"));
        let refused = store
            .last_reconcile(ReconcileResult::Refused)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(refused.revision, "rev2");
        assert_eq!(refused.findings[0]["code"], "cel-syntax");
    }

    #[tokio::test]
    async fn the_last_price_is_the_newer_of_the_bar_close_and_the_fill() {
        let store = memory().await;
        assert_eq!(store.last_price("p", "AAPL").await.unwrap(), None);
        store
            .finish_execution(&execution("p", "AAPL", 1_000_000, "r1", 33.5))
            .await
            .unwrap();
        store
            .finish_execution(&execution("p", "AAPL", 2_000_000, "r1", 34.25))
            .await
            .unwrap();
        // Another pipeline's and another symbol's bars are not this position's.
        store
            .finish_execution(&execution("q", "AAPL", 3_000_000, "r1", 99.0))
            .await
            .unwrap();
        store
            .finish_execution(&execution("p", "SPY", 3_000_000, "r1", 98.0))
            .await
            .unwrap();
        let p = store.last_price("p", "AAPL").await.unwrap().unwrap();
        assert_eq!(
            p,
            LastPrice {
                price: dec!(34.25),
                at: 2_000_000,
                source: PriceSource::BarClose
            }
        );
        let fill = Fill {
            client_order_id: "c1".into(),
            broker_order_id: "b1".into(),
            fill_id: "f1".into(),
            pipeline: "p".into(),
            symbol: "AAPL".into(),
            side: Side::Buy,
            quantity: dec!(5),
            price: dec!(34.4),
            commission: dec!(0.01),
            purpose: OrderPurpose::Entry,
            ts: 2_000_100,
        };
        store
            .write_batch(&crate::store::WriteBatch {
                at: 2_000_100,
                entries: vec![crate::store::BatchEntry::Fill {
                    broker: "sim".into(),
                    fill,
                    order: None,
                    position: crate::store::BookChange::Unchanged,
                    closed_trades: vec![],
                }],
            })
            .await
            .unwrap();
        let p = store.last_price("p", "AAPL").await.unwrap().unwrap();
        assert_eq!(
            (p.price, p.at, p.source),
            (dec!(34.4), 2_000_100, PriceSource::Fill)
        );
    }

    #[tokio::test]
    async fn trades_carry_the_revision_of_the_execution_before_their_entry() {
        let store = memory().await;
        store
            .finish_execution(&execution("p", "AAPL", 100, "r1", 1.0))
            .await
            .unwrap();
        store
            .finish_execution(&execution("p", "AAPL", 200, "r2", 1.0))
            .await
            .unwrap();
        store
            .finish_execution(&execution("p", "SPY", 150, "r9", 1.0))
            .await
            .unwrap();
        store
            .insert_trade(&trade("p", "AAPL", 150, 300, dec!(1.5)))
            .await
            .unwrap();
        store
            .insert_trade(&trade("p", "AAPL", 250, 400, dec!(-2)))
            .await
            .unwrap();
        store
            .insert_trade(&trade("p", "AAPL", 50, 60, dec!(3)))
            .await
            .unwrap();
        let mut other = trade("q", "AAPL", 250, 500, dec!(7));
        other.mode = "paper".into();
        store.insert_trade(&other).await.unwrap();
        let all = store
            .trades_with_revisions(None, None, i64::MIN, i64::MAX)
            .await
            .unwrap();
        let got: Vec<(i64, Option<&str>)> = all
            .iter()
            .map(|r| (r.trade.exit_time, r.revision.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (60, None),
                (300, Some("r1")),
                (400, Some("r2")),
                (500, None)
            ]
        );
        assert_eq!(all[1].trade, trade("p", "AAPL", 150, 300, dec!(1.5)));
        let p = store
            .trades_with_revisions(Some("p"), Some("simulation"), 100, 400)
            .await
            .unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].trade.exit_time, 300);
        let paper = store
            .trades_with_revisions(None, Some("paper"), i64::MIN, i64::MAX)
            .await
            .unwrap();
        assert_eq!(paper.len(), 1);
        assert_eq!(paper[0].trade.pipeline, "q");
    }

    #[tokio::test]
    async fn cost_summaries_split_llm_from_runtime_and_filter_by_mode() {
        let store = memory().await;
        let mut paper = execution("p", "AAPL", 100, "r1", 1.0);
        paper.mode = "paper".into();
        store.finish_execution(&paper).await.unwrap();
        for (node, model, usd, tokens) in [
            ("bias", Some("gpt-4o-mini"), dec!(0.0012), 1000),
            ("strategy", Some("gpt-4o-mini"), dec!(0.0008), 500),
            ("data", None, dec!(0.0001), 0),
        ] {
            store
                .record_cost(&crate::store::CostRecord {
                    execution_id: paper.id.clone(),
                    pipeline: "p".into(),
                    node: node.into(),
                    model: model.map(str::to_string),
                    input_tokens: tokens,
                    output_tokens: tokens / 10,
                    usd,
                    runtime_us: 5,
                    at: 100,
                })
                .await
                .unwrap();
        }
        let all = store
            .cost_summary(None, None, i64::MIN, i64::MAX)
            .await
            .unwrap();
        assert_eq!(
            all,
            CostSummary {
                records: 3,
                executions: 1,
                total_usd: dec!(0.0021),
                llm_usd: dec!(0.0020),
                input_tokens: 1500,
                output_tokens: 150,
            }
        );
        let sim = store
            .cost_summary(Some("p"), Some("simulation"), i64::MIN, i64::MAX)
            .await
            .unwrap();
        assert_eq!(sim, CostSummary::default());
        let later = store.cost_summary(Some("p"), None, 101, 200).await.unwrap();
        assert_eq!(later.records, 0);
    }

    #[tokio::test]
    async fn equity_accounts_are_listed_once() {
        let store = memory().await;
        for (broker, ts) in [("sim", 1), ("sim", 2), ("alpaca", 1)] {
            store
                .append_equity(
                    broker,
                    "default",
                    &crate::engine::trades::EquityPoint {
                        ts,
                        equity: dec!(100),
                        cash: dec!(100),
                    },
                )
                .await
                .unwrap();
        }
        assert_eq!(
            store.equity_accounts().await.unwrap(),
            vec![
                ("alpaca".to_string(), "default".to_string()),
                ("sim".to_string(), "default".to_string())
            ]
        );
    }

    #[test]
    fn the_newest_close_of_a_market_data_output() {
        let out = json!({
            "1d": {"bars": [[100, 1.0, 1.0, 1.0, 10.5, 1.0], [200, 1.0, 1.0, 1.0, 11.25, 1.0]]},
            "1w": {"bars": [[150, 1.0, 1.0, 1.0, 99.0, 1.0]]},
        });
        assert_eq!(newest_close(&out), Some(dec!(11.25)));
        assert_eq!(newest_close(&json!({"1d": {"bars": []}})), None);
        assert_eq!(newest_close(&json!("nope")), None);
    }
}
