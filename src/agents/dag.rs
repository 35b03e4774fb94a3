//! One execution of a pipeline's DAG for one symbol. The implicit pipeline manager is here:
//! it runs the nodes in order, times them, records their outputs and reasoning, stops at a
//! false gate (`skipped`) or a failing node (`failed`, no order), and hands back the order
//! the trade manager decided on. Submitting it (after writing the intent to the store) is
//! the caller's job, so that the same executor serves backtests and the daemon.

use crate::agents::{self, LlmAgents, PromptContext};
use crate::broker::{Position, Submit};
use crate::engine::feed::SymbolFeed;
use crate::engine::pipeline::{CompiledPipeline, Step};
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
}

pub use crate::engine::state::execution_id;

/// Runs the DAG for one symbol.
pub async fn execute(input: ExecInput<'_>) -> ExecOutput {
    let p = input.pipeline;
    let explain = input.record;
    // The id is only formatted when a record or an order needs it (backtests run this for
    // every bar).
    let mut id_cache: Option<String> = None;
    let mut id = || {
        id_cache
            .get_or_insert_with(|| execution_id(&p.name, input.symbol, input.now))
            .clone()
    };
    let mut record = explain.then(|| ExecutionRecord {
        id: id(),
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
    });
    let mut out = ExecOutput {
        status: ExecutionStatus::Completed,
        reason: None,
        order: None,
        signal: None,
        decision: None,
        trade: None,
        record: None,
    };
    let mut bias: Option<BiasSignal> = None;
    let mut approved = None;
    for node in p.nodes.iter() {
        let started = explain.then(Instant::now);
        let mut cost = Decimal::ZERO;
        // (output JSON, reasoning) for the record; Err = stop the execution.
        let result: Result<(Value, String), (ExecutionStatus, String)> = match &node.step {
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
                bias = Some(b);
                Ok((v, reasoning))
            }
            Step::BiasLlm(config) => {
                let context = prompt(&input, bias.clone());
                match input.llm.bias(config, &context).await {
                    Ok((b, c)) => {
                        cost = c.usd;
                        let mut b = b;
                        if b.confidence
                            < crate::risk::evaluate::to_f64(config.confidence_threshold.value())
                        {
                            b.reasoning = format!(
                                "{} (confidence {} below the threshold {}: neutral)",
                                b.reasoning, b.confidence, config.confidence_threshold
                            );
                            b.bias = crate::engine::state::Bias::Neutral;
                        }
                        let v = serde_json::to_value(&b).unwrap_or(Value::Null);
                        let reasoning = b.reasoning.clone();
                        bias = Some(b);
                        Ok((v, reasoning))
                    }
                    Err(e) => Err((ExecutionStatus::Failed, e.to_string())),
                }
            }
            Step::StrategyRules(rules) => {
                let s = agents::strategy::rules(
                    rules,
                    input.feed,
                    input.position.as_ref(),
                    input.pending_entry,
                    bias.as_ref(),
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
            Step::StrategyLlm(config) => {
                let context = prompt(&input, bias.clone());
                match input.llm.strategy(config, &context).await {
                    Ok((s, c)) => {
                        cost = c.usd;
                        let v = serde_json::to_value(&s).unwrap_or(Value::Null);
                        let reasoning = s.reasoning.clone();
                        out.signal = Some(s);
                        Ok((v, reasoning))
                    }
                    Err(e) => Err((ExecutionStatus::Failed, e.to_string())),
                }
            }
            Step::RiskManager => match &out.signal {
                Some(signal) if signal.action.entry_side().is_some() => {
                    let positions = input.account.source.positions();
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
                            &id(),
                            "entry",
                        ),
                        partial_exit_pct: p.partial_exit_pct,
                        explain,
                    });
                    approved = order;
                    let v = if explain {
                        serde_json::to_value(&decision).unwrap_or(Value::Null)
                    } else {
                        Value::Null
                    };
                    let reasoning = decision.reasoning.clone();
                    out.decision = Some(decision);
                    Ok((v, reasoning))
                }
                _ => Ok((
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
                    id()
                };
                let d = agents::trade_manager::run(
                    config,
                    p.mode,
                    &p.name,
                    input.symbol,
                    &key,
                    out.signal.as_ref(),
                    approved.take(),
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
        };
        let stop = match result {
            Ok((output, reasoning)) => {
                if let Some(r) = record.as_mut() {
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
                if let Some(r) = record.as_mut() {
                    r.nodes.push(NodeRecord {
                        node: node.id.clone(),
                        agent: node.agent.to_string(),
                        output: json!({ "status": status.as_str() }),
                        reasoning: reason.clone(),
                        duration_us: started.map_or(0, |s| s.elapsed().as_micros() as u64),
                        cost_usd: cost,
                    });
                }
                Some((status, reason))
            }
        };
        if let Some((status, reason)) = stop {
            out.status = status;
            out.reason = Some(format!("{}: {reason}", node.id));
            out.order = None;
            break;
        }
    }
    if let Some(mut r) = record {
        r.status = out.status;
        r.reason = out.reason.clone();
        agents::reporting::finish(&mut r, input.now);
        out.record = Some(r);
    }
    out
}

fn prompt(input: &ExecInput<'_>, bias: Option<BiasSignal>) -> PromptContext {
    let timeframes = input.pipeline.timeframes();
    PromptContext {
        symbol: input.symbol.to_string(),
        now: input.now,
        market: agents::market_data::snapshot(&input.pipeline.layout, input.feed, &timeframes, 50),
        bias,
    }
}
