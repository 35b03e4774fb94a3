//! [`PipelineRunner`]: drives one [`PipelineCore`] — steps, commands — and carries out its
//! intents against an [`Account`]: the DAG runs, orders go to the brokers, flattens and
//! halts are applied, executions are recorded. The backtest calls it in a loop; the
//! daemon's pipeline actor calls it from its task. Nothing else decides anything.

use super::account::Account;
use super::budget::{BudgetTracker, OverBudget};
use crate::agents::LlmAgents;
use crate::agents::dag::{AccountView, ExecInput, execute, execute_now, needs_llm};
use crate::broker::{OrderPurpose, Submit};
use crate::engine::core::{
    BarEvent, CoreCommand, ExecRequest, History, Intent, PipelineCore, PipelineSpec, SignalOutcome,
    SkipReason, Status,
};
use crate::engine::state::{ExecutionRecord, ExecutionStatus, execution_id};
use crate::metrics::ExecutionResult;
use crate::risk::evaluate::CORRELATION_LOOKBACK;
use crate::store::InterventionKind;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::{Instrument, info, info_span, warn};

/// What a runner counted (the backtest's summary; the daemon's metrics count the same).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Executions by status, in [`ExecutionResult::ALL`] order.
    counts: [u64; 4],
    /// Why executions failed: reason → count.
    pub failures: BTreeMap<String, u64>,
    /// Orders submitted (entries, exits, flatten exits).
    pub orders: u64,
    /// Risk rejections by rule.
    pub risk_rejections: BTreeMap<String, u64>,
    /// What the executions' LLM calls cost, USD.
    pub cost_usd: Decimal,
}

impl RunStats {
    /// Executions by status (`completed`, `skipped`, `failed`, `interrupted`; statuses
    /// with none are left out).
    pub fn executions(&self) -> BTreeMap<&'static str, u64> {
        ExecutionResult::ALL
            .iter()
            .zip(self.counts)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.as_str(), n))
            .collect()
    }

    fn count(&mut self, result: ExecutionResult) {
        self.counts[result as usize] += 1;
    }
}

fn result_of(status: ExecutionStatus) -> ExecutionResult {
    match status {
        ExecutionStatus::Completed => ExecutionResult::Completed,
        ExecutionStatus::Skipped => ExecutionResult::Skipped,
        ExecutionStatus::Failed => ExecutionResult::Failed,
        ExecutionStatus::Interrupted => ExecutionResult::Interrupted,
    }
}

/// See the module documentation.
pub struct PipelineRunner {
    core: PipelineCore,
    history: Arc<dyn History>,
    llm: Arc<dyn LlmAgents>,
    /// Whether to build and store full execution records.
    record: bool,
    /// Keep the records in memory (backtests with `keep_records`).
    keep_records: bool,
    records: Vec<ExecutionRecord>,
    stats: RunStats,
    intents: Vec<Intent>,
    spare: Vec<Intent>,
    /// Whether the pipeline has an LLM node (its executions wait for the model).
    llm_nodes: bool,
    /// The market-data time zone (budgets count in the window's, else in this one).
    tz: chrono_tz::Tz,
    /// The cost budget, when the pipeline has one.
    budget: Option<BudgetTracker>,
}

impl PipelineRunner {
    /// A runner for `spec` starting at `now` (see [`PipelineCore::new`]). A pipeline whose
    /// broker the account does not have (and that is not in validation mode) fails with the
    /// reason. `record`: build full execution records (with their nodes' outputs and
    /// reasoning) and store them when the account has a store; `keep_records`: also keep
    /// them in memory.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: PipelineSpec,
        tz: chrono_tz::Tz,
        history: Arc<dyn History>,
        llm: Arc<dyn LlmAgents>,
        now: i64,
        account: &Account,
        record: bool,
        keep_records: bool,
    ) -> PipelineRunner {
        let mut core = PipelineCore::new(spec, tz, history.as_ref(), now);
        let llm_nodes = needs_llm(core.compiled());
        Self::check_broker(&mut core, account);
        let c = core.compiled();
        account.ledger().configure_pending(
            &c.name,
            c.trade.move_stop_to_breakeven,
            c.mode.as_str(),
        );
        let budget = Self::budget_of(&core, tz);
        PipelineRunner {
            tz,
            budget,
            core,
            history,
            llm,
            record,
            keep_records,
            records: Vec::new(),
            stats: RunStats::default(),
            intents: Vec::new(),
            spare: Vec::new(),
            llm_nodes,
        }
    }

    fn budget_of(core: &PipelineCore, tz: chrono_tz::Tz) -> Option<BudgetTracker> {
        let c = core.compiled();
        let tz = c.window.as_ref().map_or(tz, |w| w.timezone());
        BudgetTracker::new(c.budget.as_ref(), tz)
    }

    /// Reads what the pipeline spent today and this month from the account's store (after
    /// a restart the budget goes on where it was). A store error is logged and counted; the
    /// budget then starts from zero.
    pub async fn load_budget(&mut self, now: i64, account: &Account) {
        let (Some(b), Some(store)) = (self.budget.as_mut(), account.store()) else {
            return;
        };
        let ((d0, d1), (m0, m1)) = b.bounds(now);
        let name = self.core.name();
        let day = store.cost_total_usd(Some(name), d0, d1).await;
        let month = store.cost_total_usd(Some(name), m0, m1).await;
        match (day, month) {
            (Ok(day), Ok(month)) => b.seed(now, day, month),
            (Err(e), _) | (_, Err(e)) => {
                warn!(pipeline = %name, error = %e, "budget spending not read from the store: counting from zero");
                if let Some(m) = account.metrics() {
                    m.store_error(crate::metrics::StoreOperation::Execution);
                }
            }
        }
        self.publish_budget(account);
    }

    fn publish_budget(&self, account: &Account) {
        if let (Some(b), Some(m)) = (&self.budget, account.metrics()) {
            for (period, usd) in b.remaining() {
                m.set_budget_remaining(self.core.name(), period.as_str(), usd);
            }
        }
    }

    /// The record of `request` without nodes: the skeleton stored when an execution starts
    /// (`interrupted` until it finishes), or a whole execution that ran no node.
    fn empty_record(
        &self,
        request: &ExecRequest,
        status: ExecutionStatus,
        reason: Option<String>,
    ) -> ExecutionRecord {
        let c = self.core.compiled();
        let symbol = self.core.symbol(request.symbol);
        ExecutionRecord {
            id: execution_id(&c.name, symbol, request.at),
            pipeline: c.name.clone(),
            revision: self.core.spec().revision.clone(),
            symbol: symbol.to_string(),
            mode: c.mode.as_str().to_string(),
            trigger: request.trigger.label(),
            started_at: request.at,
            finished_at: request.at,
            status,
            reason,
            nodes: Vec::new(),
            cost_usd: Decimal::ZERO,
        }
    }

    /// Stores a finished execution record (a store error is logged and counted) and keeps
    /// it with `keep_records`. Records exist only when the runner records.
    async fn finish_record(&mut self, record: ExecutionRecord, account: &Account) {
        if let Some(store) = account.store()
            && let Err(e) = store.finish_execution(&record).await
        {
            warn!(error = %e, "execution not stored");
            if let Some(m) = account.metrics() {
                m.store_error(crate::metrics::StoreOperation::Execution);
            }
        }
        if self.keep_records {
            self.records.push(record);
        }
    }

    /// The execution `request` skipped by the budget: counted, recorded as `skipped` with the
    /// reason, and, the first time of the day, an intervention.
    async fn skip_for_budget(
        &mut self,
        request: &ExecRequest,
        over: OverBudget,
        account: &Account,
    ) {
        let reason = over.to_string();
        self.stats.count(ExecutionResult::Skipped);
        if let Some(m) = account.metrics() {
            m.execution_finished(self.core.name(), ExecutionResult::Skipped, 0.0);
        }
        {
            let ledger = account.ledger();
            self.core.executed(request, None, &ledger, &mut Vec::new());
        }
        if self.record {
            let record = self.empty_record(request, ExecutionStatus::Skipped, Some(reason.clone()));
            self.finish_record(record, account).await;
        }
        if over.first_today {
            warn!(pipeline = %self.core.name(), %reason, "budget reached: executions are skipped until the period ends");
            if let Ok(scope) = crate::domain::Scope::pipeline(self.core.name()) {
                account
                    .record_intervention(
                        InterventionKind::Budget,
                        &scope,
                        &reason,
                        serde_json::json!({
                            "period": over.period.as_str(),
                            "spent_usd": over.spent,
                            "limit_usd": over.limit,
                        }),
                        request.at,
                    )
                    .await;
            }
        }
        self.publish_budget(account);
    }

    /// Adds an execution's cost to the budget and the stats, stores one cost record per
    /// node that spent something (with its model and tokens from the node's LLM trace).
    async fn spent(
        &mut self,
        request: &ExecRequest,
        usd: Decimal,
        record: Option<&ExecutionRecord>,
        account: &Account,
    ) {
        if usd.is_zero() {
            return;
        }
        self.stats.cost_usd += usd;
        if let Some(b) = self.budget.as_mut() {
            for w in b.add(request.at, usd) {
                warn!(pipeline = %self.core.name(), period = w.period.as_str(), spent_usd = %w.spent.round_dp(4), limit_usd = %w.limit, "80 % of the budget spent");
            }
        }
        self.publish_budget(account);
        let (Some(record), Some(store)) = (record, account.store()) else {
            return;
        };
        for node in record.nodes.iter().filter(|n| !n.cost_usd.is_zero()) {
            let llm = &node.output["llm"];
            let tokens = |k: &str| llm["usage"][k].as_u64().unwrap_or(0);
            let cost = crate::store::CostRecord {
                execution_id: record.id.clone(),
                pipeline: record.pipeline.clone(),
                node: node.node.clone(),
                model: llm["model"].as_str().map(str::to_string),
                input_tokens: tokens("input_tokens"),
                output_tokens: tokens("output_tokens"),
                usd: node.cost_usd,
                runtime_us: node.duration_us,
                at: request.at,
            };
            if let Err(e) = store.record_cost(&cost).await {
                warn!(error = %e, "cost record not stored");
                if let Some(m) = account.metrics() {
                    m.store_error(crate::metrics::StoreOperation::Journal);
                }
            }
        }
    }

    fn check_broker(core: &mut PipelineCore, account: &Account) {
        let c = core.compiled();
        if c.mode == crate::config::pipeline::Mode::Validation {
            return;
        }
        if let Some(b) = c.broker.clone()
            && !account.has_broker(&b)
        {
            let reason = account
                .unavailable(&b)
                .unwrap_or_else(|| format!("broker {b} is not configured"));
            core.fail(reason);
        }
    }

    /// The core.
    pub fn core(&self) -> &PipelineCore {
        &self.core
    }

    /// What it counted so far.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// The execution records kept (with `keep_records`).
    pub fn take_records(&mut self) -> Vec<ExecutionRecord> {
        std::mem::take(&mut self.records)
    }

    /// The pipeline's status.
    pub fn status(&self, account: &Account) -> Status {
        self.core.status(&account.ledger())
    }

    /// Whether the pipeline is removed, flat and without working orders.
    pub fn finished(&self, account: &Account) -> bool {
        self.core.finished(&account.ledger())
    }

    /// Restarts with a new configuration (see [`PipelineCore::update`]).
    pub fn update(&mut self, spec: PipelineSpec, now: i64, account: &Account) {
        self.core.update(spec, self.history.as_ref(), now);
        self.llm_nodes = needs_llm(self.core.compiled());
        // The spending so far stays with the pipeline; the limits are the new ones.
        let spent = self.budget.take();
        self.budget = Self::budget_of(&self.core, self.tz);
        if let (Some(old), Some(new)) = (spent, self.budget.as_mut()) {
            new.carry(&old);
        }
        Self::check_broker(&mut self.core, account);
    }

    /// A step at `t` with the bars that closed then (already processed by the account's
    /// brokers): see [`PipelineCore::step`].
    pub async fn step(&mut self, t: i64, bars: &[BarEvent], account: &Account) {
        // A broker that refused our keys since the start fails its pipelines.
        if account.any_unavailable() && self.core.failed().is_none() {
            Self::check_broker(&mut self.core, account);
        }
        {
            let mut ledger = account.ledger();
            self.core.step(t, bars, &mut ledger, &mut self.intents);
        }
        self.run(account).await;
        {
            let ledger = account.ledger();
            self.core.after_step(t, &ledger, &mut self.intents);
        }
        self.run(account).await;
    }

    /// A command at `t`. Answers what became of a signal.
    pub async fn command(
        &mut self,
        command: CoreCommand,
        t: i64,
        account: &Account,
    ) -> Option<SignalOutcome> {
        let outcome = {
            let ledger = account.ledger();
            match command {
                CoreCommand::Remove { close } => {
                    self.core.remove(close, &ledger, &mut self.intents);
                    None
                }
                CoreCommand::Signal {
                    symbol,
                    signal_type,
                    confidence,
                } => Some(self.core.signal(
                    &symbol,
                    &signal_type,
                    confidence,
                    t,
                    &ledger,
                    &mut self.intents,
                )),
            }
        };
        self.run(account).await;
        outcome
    }

    /// A market signal for `symbol` at `t` (the `signal` trigger, see
    /// [`PipelineCore::signal`]): `decided` gets its outcome as soon as it is known, before
    /// the execution it starts runs; returns when that execution and its orders are
    /// through.
    pub async fn signal(
        &mut self,
        symbol: &str,
        signal_type: &str,
        confidence: f64,
        t: i64,
        account: &Account,
        decided: impl FnOnce(SignalOutcome),
    ) {
        let outcome = {
            let ledger = account.ledger();
            self.core.signal(
                symbol,
                signal_type,
                confidence,
                t,
                &ledger,
                &mut self.intents,
            )
        };
        decided(outcome);
        self.run(account).await;
    }

    async fn run(&mut self, account: &Account) {
        while !self.intents.is_empty() {
            let mut batch = std::mem::replace(&mut self.intents, std::mem::take(&mut self.spare));
            for intent in batch.drain(..) {
                self.handle(intent, account).await;
            }
            self.spare = batch;
        }
    }

    async fn handle(&mut self, intent: Intent, account: &Account) {
        match intent {
            Intent::Execute(request) => self.execute(request, account).await,
            Intent::Skip { request, reason } => {
                self.stats.count(ExecutionResult::Skipped);
                if let Some(m) = account.metrics() {
                    m.execution_finished(self.core.name(), ExecutionResult::Skipped, 0.0);
                }
                if let SkipReason::ExecutionLimit(why) = reason
                    && self.record
                {
                    tracing::debug!(pipeline = %self.core.name(), symbol = %self.core.symbol(request.symbol), %why, "execution skipped");
                }
            }
            Intent::Submit {
                broker,
                order,
                execution_id,
            } => {
                let c = self.core.compiled();
                let (mode, be) = (c.mode, c.trade.move_stop_to_breakeven);
                // Boxed: the submit future (store writes included) is large, and every bar's
                // step would move it otherwise.
                if Box::pin(account.submit(&broker, mode, execution_id.as_deref(), order, be))
                    .await
                    .is_ok()
                {
                    self.stats.orders += 1;
                }
            }
            Intent::Cancel {
                broker,
                client_order_id,
            } => account.cancel(&broker, &client_order_id).await,
            Intent::ReplaceStop {
                broker,
                client_order_id,
                price,
                quantity,
            } => {
                account
                    .replace_stop(&broker, &client_order_id, price, quantity)
                    .await
            }
            Intent::Flatten {
                scope,
                purpose,
                reason,
            } => {
                let results = Box::pin(account.flatten(&scope, purpose)).await;
                self.stats.orders += results
                    .iter()
                    .filter(|r| r.status != super::account::CloseStatus::Failed)
                    .count() as u64;
                if !results.is_empty() && self.record {
                    info!(pipeline = %self.core.name(), positions = results.len(), purpose = purpose.as_str(), %reason, "flattening");
                }
                let kind = match purpose {
                    OrderPurpose::EndOfWindow => InterventionKind::EndOfDay,
                    OrderPurpose::RiskFlatten => InterventionKind::RiskHalt,
                    OrderPurpose::PipelineRemoved => InterventionKind::PipelineRemoved,
                    _ => InterventionKind::Manual,
                };
                account
                    .record_intervention(
                        kind,
                        &scope,
                        &reason,
                        serde_json::to_value(&results).unwrap_or_default(),
                        account.now(),
                    )
                    .await;
            }
            Intent::Halt(halt) => account.halt(halt).await,
        }
    }

    /// One execution: recorded at start, run, its orders sent, recorded at the end.
    async fn execute(&mut self, request: ExecRequest, account: &Account) {
        if let Some(b) = self.budget.as_mut()
            && let Err(over) = b.check(request.at)
        {
            self.skip_for_budget(&request, over, account).await;
            return;
        }
        let prepared = {
            let ledger = account.ledger();
            self.core.prepare(&request, &ledger)
        };
        // Names, ids and the span are only made when the execution is recorded (a backtest
        // runs this for every bar).
        let span = if self.record {
            let (name, symbol) = (self.core.name(), self.core.symbol(request.symbol));
            let id = execution_id(name, symbol, request.at);
            info_span!("execution", pipeline = %name, execution_id = %id, symbol = %symbol)
        } else {
            tracing::Span::none()
        };
        // Timed only when someone reads it (the daemon's metrics).
        let started = account.metrics().map(|_| std::time::Instant::now());
        let store = account.store().filter(|_| self.record);
        if let Some(store) = store {
            let skeleton = self.empty_record(&request, ExecutionStatus::Interrupted, None);
            if let Err(e) = store.start_execution(&skeleton).await {
                warn!(error = %e, "execution start not stored");
                if let Some(m) = account.metrics() {
                    m.store_error(crate::metrics::StoreOperation::Execution);
                }
            }
        }
        let out = {
            let Some(feed) = self.core.feed(request.symbol) else {
                return;
            };
            let c = self.core.compiled();
            let broker = c.broker.as_deref().unwrap_or_default();
            let risk_view = account.risk_view(broker);
            let history = &self.history;
            let at = request.at;
            let correlation = move |a: &str, b: &str| -> Option<f64> {
                let n = CORRELATION_LOOKBACK + 1;
                crate::risk::correlation(
                    &history.daily_closes(a, at, n),
                    &history.daily_closes(b, at, n),
                    CORRELATION_LOOKBACK,
                )
            };
            let input = ExecInput {
                pipeline: c,
                revision: &self.core.spec().revision,
                symbol: self.core.symbol(request.symbol),
                feed,
                now: request.at,
                trigger: &request.trigger,
                position: prepared.position,
                pending_entry: prepared.pending_entry,
                account: AccountView {
                    source: &risk_view,
                    halted: prepared.halt.as_deref(),
                },
                correlation: &correlation,
                llm: self.llm.as_ref(),
                record: self.record,
            };
            // A backtest's executions have no span (instrumenting moves the whole future
            // once more per bar), and without an LLM node nothing waits: the DAG runs
            // synchronously, without a future to build and move.
            if self.record {
                execute(input).instrument(span.clone()).await
            } else if self.llm_nodes {
                execute(input).await
            } else {
                execute_now(input)
            }
        };
        let status = out.status;
        let cost_usd = out.cost_usd;
        self.stats.count(result_of(status));
        let failure = (status == ExecutionStatus::Failed)
            .then(|| out.reason.clone().unwrap_or_else(|| "unknown".into()));
        if let Some(reason) = &failure {
            *self.stats.failures.entry(reason.clone()).or_default() += 1;
        }
        if let Some(d) = &out.decision
            && !d.approved
        {
            *self
                .stats
                .risk_rejections
                .entry(d.rule.as_str().to_string())
                .or_default() += 1;
            if let Some(m) = account.metrics() {
                m.risk_rejected(self.core.name(), d.rule.as_str());
            }
        }
        let mut record = out.record;
        let order = if status == ExecutionStatus::Completed {
            out.order
        } else {
            None
        };
        if order.is_some() {
            let mut sends = Vec::new();
            {
                let ledger = account.ledger();
                self.core.executed(&request, order, &ledger, &mut sends);
            }
            let c = self.core.compiled();
            let (mode, be) = (c.mode, c.trade.move_stop_to_breakeven);
            for intent in sends {
                match intent {
                    Intent::Submit {
                        broker,
                        order,
                        execution_id,
                    } => {
                        let is_entry = matches!(order, Submit::Entry(_));
                        // Boxed, as above.
                        match Box::pin(account.submit(
                            &broker,
                            mode,
                            execution_id.as_deref(),
                            order,
                            be,
                        ))
                        .instrument(span.clone())
                        .await
                        {
                            Ok(state) => {
                                self.stats.orders += 1;
                                if self.record {
                                    let _e = span.enter();
                                    info!(client_order_id = %state.client_order_id, side = state.side.as_str(), quantity = %state.quantity, purpose = state.purpose.as_str(), entry = is_entry, "order submitted");
                                }
                            }
                            Err(e) => {
                                if let Some(r) = record.as_mut() {
                                    r.reason = Some(format!("order failed: {e}"));
                                }
                            }
                        }
                    }
                    Intent::Cancel {
                        broker,
                        client_order_id,
                    } => account.cancel(&broker, &client_order_id).await,
                    other => self.intents.push(other),
                }
            }
        } else {
            let ledger = account.ledger();
            self.core.executed(&request, None, &ledger, &mut Vec::new());
        }
        // A recorded execution (the daemon's) logs its failure with the reason; a backtest
        // counts failures by reason for its summary instead of logging every one.
        if status == ExecutionStatus::Failed && self.record {
            let _e = span.enter();
            let reason = record
                .as_ref()
                .and_then(|r| r.reason.as_deref())
                .or(failure.as_deref())
                .unwrap_or("unknown");
            warn!(%reason, "execution failed");
        }
        self.spent(&request, cost_usd, record.as_ref(), account)
            .await;
        if let Some(record) = record {
            self.finish_record(record, account).await;
        }
        if let Some(m) = account.metrics() {
            m.execution_finished(
                self.core.name(),
                result_of(status),
                started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
            );
        }
    }
}
