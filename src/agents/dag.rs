//! One execution of a pipeline's DAG for one symbol. The implicit pipeline manager is here:
//! it runs the nodes in order, times them, records their outputs and reasoning, stops at a
//! false gate (`skipped`) or a failing node (`failed`, no order), and hands back the order
//! the trade manager decided on. Submitting it (after writing the intent to the store) is
//! the caller's job, so that the same executor serves backtests and the daemon.

use crate::agents::{self, LlmAgents, PromptContext};
use crate::broker::{Position, Submit};
use crate::engine::feed::SymbolFeed;
use crate::engine::pipeline::{CompiledNode, CompiledPipeline, Step};
use crate::engine::state::{
    BiasSignal, ExecutionRecord, ExecutionStatus, NodeRecord, PositionView, RiskDecision,
    StrategySignal, TradeAction,
};

use crate::risk::RiskInput;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::time::Instant;

/// The account as the risk manager sees it. Read only when a plan reaches the risk
/// manager, so executions that hold cost nothing here.
pub trait AccountSource: Send + Sync {
    /// Equity, USD.
    fn equity(&self) -> Decimal;
    /// Every open position of the account, at market.
    fn positions(&self) -> Vec<Position>;
    /// The account's profit or loss of the day so far, USD.
    fn day_pnl(&self) -> Decimal;
}

/// The account and the halt that applies to this execution.
pub struct AccountView<'a> {
    /// Balances and positions.
    pub source: &'a dyn AccountSource,
    /// Why entries are halted for this pipeline or symbol, if they are.
    pub halted: Option<&'a str>,
}

/// Everything one execution reads.
pub struct ExecInput<'a> {
    /// The pipeline.
    pub pipeline: &'a CompiledPipeline,
    /// Its config revision.
    pub revision: &'a str,
    /// The symbol.
    pub symbol: &'a str,
    /// The symbol's feed (bars and indicators up to now).
    pub feed: &'a SymbolFeed,
    /// Now, Unix seconds.
    pub now: i64,
    /// What started it.
    pub trigger: &'a crate::engine::core::TriggerKind,
    /// This pipeline's position in the symbol.
    pub position: Option<PositionView>,
    /// Whether an entry of this pipeline in the symbol was sent and is not settled yet: it
    /// counts as a position (no second entry without pyramiding).
    pub pending_entry: bool,
    /// The account.
    pub account: AccountView<'a>,
    /// Correlation of daily returns between two symbols.
    pub correlation: &'a (dyn Fn(&str, &str) -> Option<f64> + Sync),
    /// LLM agents.
    pub llm: &'a dyn LlmAgents,
    /// Whether to build the full record (outputs and reasoning); backtests skip it.
    pub record: bool,
}

/// What an execution produced.
pub struct ExecOutput {
    /// How it ended.
    pub status: ExecutionStatus,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// The order to submit, if any.
    pub order: Option<Submit>,
    /// The strategy's plan, if the strategy ran.
    pub signal: Option<StrategySignal>,
    /// The risk decision, if the risk manager ran on an entry.
    pub decision: Option<RiskDecision>,
    /// The trade manager's action, if it ran.
    pub trade: Option<TradeAction>,
    /// The full record (when asked for).
    pub record: Option<ExecutionRecord>,
    /// What the execution's LLM calls cost, USD (0 without LLM nodes).
    pub cost_usd: Decimal,
}

pub use crate::engine::state::execution_id;

/// Whether `pipeline` has a node that asks an LLM: its executions wait for the model
/// (see [`execute`]); the others run to the end at once ([`execute_now`]).
pub fn needs_llm(pipeline: &CompiledPipeline) -> bool {
    pipeline.nodes.iter().any(|n| {
        matches!(
            n.step,
            Step::BiasLlm(_) | Step::StrategyLlm(_) | Step::ReportingLlm { .. }
        )
    })
}

/// Runs the DAG for one symbol.
pub async fn execute(input: ExecInput<'_>) -> ExecOutput {
    let mut out = ExecOutput::started();
    let mut run = Execution::start(&input);
    for node in input.pipeline.nodes.iter() {
        let started = run.explain.then(Instant::now);
        let (result, cost) = match &node.step {
            Step::BiasLlm(config) => {
                let context = prompt(&input, &node.id, run.bias.clone());
                let answer = input.llm.bias(config, &context).await;
                run.bias_llm(config, answer)
            }
            Step::StrategyLlm(config) => {
                let context = prompt(&input, &node.id, run.bias.clone());
                let answer = input.llm.strategy(config, &context).await;
                run.strategy_llm(&mut out, answer)
            }
            Step::ReportingLlm { provider } => {
                let context = prompt(&input, &node.id, run.bias.clone());
                let facts = serde_json::json!({
                    "bias": run.bias,
                    "plan": out.signal,
                    "risk": out.decision,
                    "trade": out.trade,
                    "status_so_far": out.status.as_str(),
                });
                let call = input.llm.summary(provider, &context, &facts).await;
                run.summary_llm(call)
            }
            step => (run.step(&mut out, step), Decimal::ZERO),
        };
        if run.took(&mut out, node, started, cost, result) {
            break;
        }
    }
    run.finish(&mut out);
    out
}

/// [`execute`] of a pipeline without LLM nodes ([`needs_llm`] is false), synchronously:
/// the same nodes in the same order with the same outcome, with nothing to wait for (a
/// backtest runs this for every bar). An LLM node, which only [`execute`] can wait for,
/// fails the execution here.
pub fn execute_now(input: ExecInput<'_>) -> ExecOutput {
    let mut out = ExecOutput::started();
    let mut run = Execution::start(&input);
    for node in input.pipeline.nodes.iter() {
        let started = run.explain.then(Instant::now);
        let result = run.step(&mut out, &node.step);
        if run.took(&mut out, node, started, Decimal::ZERO, result) {
            break;
        }
    }
    run.finish(&mut out);
    out
}

impl ExecOutput {
    /// An execution that has not decided anything yet.
    fn started() -> ExecOutput {
        ExecOutput {
            status: ExecutionStatus::Completed,
            reason: None,
            order: None,
            signal: None,
            decision: None,
            trade: None,
            record: None,
            cost_usd: Decimal::ZERO,
        }
    }
}

/// A node's result: (output JSON, reasoning) for the record; `Err` stops the execution.
type NodeResult = Result<(Value, String), (ExecutionStatus, String)>;

/// One execution in progress: what the nodes so far produced besides the output (which
/// the drivers keep: it is over a kilobyte, and this stays small enough to move freely).
/// [`execute`] and [`execute_now`] drive it node by node.
struct Execution<'i, 'a> {
    input: &'i ExecInput<'a>,
    explain: bool,
    /// The execution id, formatted when a record or an order needs it (backtests run
    /// executions for every bar).
    id: Option<String>,
    record: Option<Box<ExecutionRecord>>,
    bias: Option<BiasSignal>,
    approved: Option<Box<crate::risk::RiskApproved<crate::broker::EntryOrder>>>,
    /// The trace of an LLM call whose answer failed the node, for the node's record.
    failed_trace: Option<Value>,
}

impl<'i, 'a> Execution<'i, 'a> {
    fn start(input: &'i ExecInput<'a>) -> Self {
        let p = input.pipeline;
        let explain = input.record;
        let mut run = Execution {
            input,
            explain,
            id: None,
            record: None,
            bias: None,
            approved: None,
            failed_trace: None,
        };
        if explain {
            run.record = Some(Box::new(ExecutionRecord {
                id: run.id(),
                pipeline: p.name.clone(),
                revision: input.revision.to_string(),
                symbol: input.symbol.to_string(),
                mode: p.mode.as_str().to_string(),
                trigger: input.trigger.label(),
                started_at: input.now,
                finished_at: input.now,
                status: ExecutionStatus::Completed,
                reason: None,
                nodes: Vec::new(),
                cost_usd: Decimal::ZERO,
            }));
        }
        run
    }

    /// The execution id when the strategy's plan is an entry (the risk manager checks it
    /// and names its order after the execution); `None` otherwise.
    fn entry_signal(&mut self, out: &ExecOutput) -> Option<String> {
        out.signal
            .as_ref()
            .is_some_and(|s| s.action.entry_side().is_some())
            .then(|| self.id())
    }

    fn id(&mut self) -> String {
        let input = self.input;
        self.id
            .get_or_insert_with(|| execution_id(&input.pipeline.name, input.symbol, input.now))
            .clone()
    }

    /// A node that asks no LLM.
    fn step(&mut self, out: &mut ExecOutput, step: &Step) -> NodeResult {
        let input = self.input;
        let p = input.pipeline;
        let explain = self.explain;
        match step {
            Step::TimeGate(gate) => agents::gates::time(gate, crate::engine::clock::utc(input.now))
                .map(|()| (json!({"passed": true}), String::new()))
                .map_err(|r| (ExecutionStatus::Skipped, r)),
            Step::Condition(program) => agents::gates::condition(program, input.feed)
                .map(|()| {
                    (
                        json!({"passed": true}),
                        if explain {
                            format!("`{}` holds", program.source())
                        } else {
                            String::new()
                        },
                    )
                })
                .map_err(|r| (ExecutionStatus::Skipped, r)),
            Step::StockPicker { scanner, top_n } => Ok((
                json!({"scanner": scanner, "top_n": top_n, "symbol": input.symbol}),
                if explain {
                    format!(
                        "{} is among the top {top_n} of scanner {scanner}",
                        input.symbol
                    )
                } else {
                    String::new()
                },
            )),
            Step::MarketData { timeframes } => {
                let value = if explain {
                    agents::market_data::snapshot(
                        &p.layout,
                        input.feed,
                        timeframes,
                        agents::market_data::SNAPSHOT_BARS,
                    )
                } else {
                    Value::Null
                };
                Ok((value, String::new()))
            }
            Step::BiasRules {
                bullish,
                bearish,
                confidence,
            } => {
                let b = agents::bias::rules(
                    bullish,
                    bearish.as_ref(),
                    *confidence,
                    input.feed,
                    explain,
                );
                let v = if explain {
                    serde_json::to_value(&b).unwrap_or(Value::Null)
                } else {
                    Value::Null
                };
                let reasoning = b.reasoning.clone();
                self.bias = Some(b);
                Ok((v, reasoning))
            }
            Step::StrategyRules(rules) => {
                let s = agents::strategy::rules(
                    rules,
                    input.feed,
                    input.position.as_ref(),
                    input.pending_entry,
                    self.bias.as_ref(),
                    p.trade.allow_pyramiding,
                    explain,
                );
                let v = if explain {
                    serde_json::to_value(&s).unwrap_or(Value::Null)
                } else {
                    Value::Null
                };
                let reasoning = s.reasoning.clone();
                out.signal = Some(s);
                Ok((v, reasoning))
            }
            Step::RiskManager => match self.entry_signal(out) {
                Some(key) => {
                    let positions = input.account.source.positions();
                    let Some(signal) = out.signal.as_ref() else {
                        return Ok((Value::Null, String::new()));
                    };
                    let (decision, order) = agents::risk_manager::evaluate(&RiskInput {
                        policy: &p.risk,
                        pipeline: &p.name,
                        symbol: input.symbol,
                        signal,
                        equity: input.account.source.equity(),
                        positions: &positions,
                        day_pnl: input.account.source.day_pnl(),
                        halted: input.account.halted,
                        correlation: input.correlation,
                        client_order_id: crate::broker::client_order_id(
                            &p.name,
                            input.symbol,
                            &key,
                            "entry",
                        ),
                        partial_exit_pct: p.partial_exit_pct,
                        explain,
                    });
                    self.approved = order.map(Box::new);
                    let v = if explain {
                        serde_json::to_value(&decision).unwrap_or(Value::Null)
                    } else {
                        Value::Null
                    };
                    let reasoning = decision.reasoning.clone();
                    out.decision = Some(decision);
                    Ok((v, reasoning))
                }
                None => Ok((
                    Value::Null,
                    if explain {
                        "no entry to check".into()
                    } else {
                        String::new()
                    },
                )),
            },
            Step::TradeManager(config) => {
                let key = if matches!(
                    out.signal.as_ref().map(|s| s.action),
                    Some(crate::engine::state::Action::Hold) | None
                ) {
                    String::new()
                } else {
                    self.id()
                };
                let d = agents::trade_manager::run(
                    config,
                    p.mode,
                    &p.name,
                    input.symbol,
                    &key,
                    out.signal.as_ref(),
                    self.approved.take().map(|a| *a),
                    input.position.as_ref(),
                    input.pending_entry,
                    explain,
                );
                let v = if explain {
                    serde_json::to_value(&d.action).unwrap_or(Value::Null)
                } else {
                    Value::Null
                };
                let reasoning = d.action.reasoning.clone();
                out.order = d.order;
                out.trade = Some(d.action);
                Ok((v, reasoning))
            }
            Step::Reporting => Ok((Value::Null, String::new())),
            // `execute` awaits the model for these; `execute_now` cannot.
            Step::BiasLlm(_) | Step::StrategyLlm(_) | Step::ReportingLlm { .. } => Err((
                ExecutionStatus::Failed,
                "an LLM node needs an execution that waits for the model".into(),
            )),
        }
    }

    /// The LLM bias node, with the model's answer (and its cost, USD). The node output is
    /// the decision (or the failure) with the call's trace under `llm`.
    fn bias_llm(
        &mut self,
        config: &crate::config::pipeline::BiasLlm,
        call: agents::LlmCall<BiasSignal>,
    ) -> (NodeResult, Decimal) {
        let usd = call.cost.usd;
        match call.result {
            Ok(b) => {
                let mut b = b;
                if b.confidence < crate::risk::evaluate::to_f64(config.confidence_threshold.value())
                {
                    b.reasoning = format!(
                        "{} (confidence {} below the threshold {}: neutral)",
                        b.reasoning, b.confidence, config.confidence_threshold
                    );
                    b.bias = crate::engine::state::Bias::Neutral;
                }
                let mut v = serde_json::to_value(&b).unwrap_or(Value::Null);
                if !call.trace.is_null() {
                    v["llm"] = call.trace;
                }
                let reasoning = b.reasoning.clone();
                self.bias = Some(b);
                (Ok((v, reasoning)), usd)
            }
            Err(e) => {
                self.failed_trace = Some(call.trace).filter(|t| !t.is_null());
                (Err((ExecutionStatus::Failed, e.to_string())), usd)
            }
        }
    }

    /// The LLM strategy node, with the model's answer (and its cost, USD).
    fn strategy_llm(
        &mut self,
        out: &mut ExecOutput,
        call: agents::LlmCall<StrategySignal>,
    ) -> (NodeResult, Decimal) {
        let usd = call.cost.usd;
        match call.result {
            Ok(s) => {
                let mut v = serde_json::to_value(&s).unwrap_or(Value::Null);
                if !call.trace.is_null() {
                    v["llm"] = call.trace;
                }
                let reasoning = s.reasoning.clone();
                out.signal = Some(s);
                (Ok((v, reasoning)), usd)
            }
            Err(e) => {
                self.failed_trace = Some(call.trace).filter(|t| !t.is_null());
                (Err((ExecutionStatus::Failed, e.to_string())), usd)
            }
        }
    }

    /// The reporting node's written summary. A summary that could not be written does not
    /// fail the execution (it decides nothing): the node's output says why.
    fn summary_llm(&mut self, call: agents::LlmCall<String>) -> (NodeResult, Decimal) {
        let usd = call.cost.usd;
        let mut v = match &call.result {
            Ok(text) => json!({ "summary": text }),
            Err(e) => json!({ "summary": null, "error": e.to_string() }),
        };
        if !call.trace.is_null() {
            v["llm"] = call.trace;
        }
        let reasoning = call.result.unwrap_or_default();
        (Ok((v, reasoning)), usd)
    }

    /// Records what `node` produced (started at `started`, costing `cost` USD); answers
    /// whether the execution stops there (a false gate or a failing node).
    fn took(
        &mut self,
        out: &mut ExecOutput,
        node: &CompiledNode,
        started: Option<Instant>,
        cost: Decimal,
        result: NodeResult,
    ) -> bool {
        // The record's total is summed from its nodes when it finishes.
        out.cost_usd += cost;
        let stop = match result {
            Ok((output, reasoning)) => {
                if let Some(r) = self.record.as_mut() {
                    r.nodes.push(NodeRecord {
                        node: node.id.clone(),
                        agent: node.agent.to_string(),
                        output,
                        reasoning,
                        duration_us: started.map_or(0, |s| s.elapsed().as_micros() as u64),
                        cost_usd: cost,
                    });
                }
                None
            }
            Err((status, reason)) => {
                if let Some(r) = self.record.as_mut() {
                    r.nodes.push(NodeRecord {
                        node: node.id.clone(),
                        agent: node.agent.to_string(),
                        output: match self.failed_trace.take() {
                            Some(trace) => json!({ "status": status.as_str(), "llm": trace }),
                            None => json!({ "status": status.as_str() }),
                        },
                        reasoning: reason.clone(),
                        duration_us: started.map_or(0, |s| s.elapsed().as_micros() as u64),
                        cost_usd: cost,
                    });
                }
                Some((status, reason))
            }
        };
        match stop {
            Some((status, reason)) => {
                out.status = status;
                out.reason = Some(format!("{}: {reason}", node.id));
                out.order = None;
                true
            }
            None => false,
        }
    }

    /// Completes `out`: the record, when one is kept, gets the outcome.
    fn finish(&mut self, out: &mut ExecOutput) {
        if let Some(mut r) = self.record.take() {
            r.status = out.status;
            r.reason = out.reason.clone();
            agents::reporting::finish(&mut r, self.input.now);
            out.record = Some(*r);
        }
    }
}

fn prompt(input: &ExecInput<'_>, node: &str, bias: Option<BiasSignal>) -> PromptContext {
    let timeframes = input.pipeline.timeframes();
    PromptContext {
        pipeline: input.pipeline.name.clone(),
        node: node.to_string(),
        validation: input.pipeline.mode == crate::config::pipeline::Mode::Validation,
        position: input.position.clone(),
        symbol: input.symbol.to_string(),
        now: input.now,
        market: agents::market_data::snapshot(
            &input.pipeline.layout,
            input.feed,
            &timeframes,
            crate::llm::prompt::PROMPT_BARS,
        ),
        bias,
    }
}
