//! The pipeline state: what nodes produce and pass on within one execution (the seeds'
//! `PipelineState`), and the execution record that reporting stores.

use crate::broker::PositionSide;
pub use crate::domain::decisions::{
    Action, Bias, BiasSignal, RiskDecision, RiskRule, StrategySignal, TradeAction, TradeOutcome,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// How an execution ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    /// Every node ran.
    Completed,
    /// A gate's condition was false, or a limit or the budget stopped it before the DAG.
    Skipped,
    /// A node failed (the execution failed closed: no order).
    Failed,
    /// The daemon stopped while it ran.
    Interrupted,
}

impl ExecutionStatus {
    /// Lower-case name (a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Skipped => "skipped",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Interrupted => "interrupted",
        }
    }
}

/// One node's part of an execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id.
    pub node: String,
    /// Agent type.
    pub agent: String,
    /// The node's output (a `BiasSignal`, `StrategySignal`, …) as JSON.
    pub output: serde_json::Value,
    /// Why it decided what it did.
    pub reasoning: String,
    /// Runtime, microseconds.
    pub duration_us: u64,
    /// Cost (LLM tokens and agent runtime), USD.
    pub cost_usd: Decimal,
}

/// The record of one execution of a pipeline for one symbol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// Unique id: `<pipeline>:<symbol>:<trigger time>`, stable across restarts.
    pub id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Config revision the pipeline ran under.
    pub revision: String,
    /// Ticker symbol.
    pub symbol: String,
    /// Mode (`simulation`, …).
    pub mode: String,
    /// What started it (`bar_close:1d`, `schedule`, `signal:golden_cross`, …).
    pub trigger: String,
    /// Start, Unix seconds (simulated time in replay).
    pub started_at: i64,
    /// End, Unix seconds.
    pub finished_at: i64,
    /// How it ended.
    pub status: ExecutionStatus,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// Every node that ran, in order.
    pub nodes: Vec<NodeRecord>,
    /// Total cost, USD.
    pub cost_usd: Decimal,
}

/// A price computed in `f64` (a bar value or a rule level) as `Decimal`, rounded to 6
/// decimal places (finer than any tick size of US stocks or FX majors) the same way the
/// simulated broker converts bar prices ([`crate::broker::bar_price`]); `None` when not
/// finite, not positive, or 1e12 and above.
pub fn price(x: f64) -> Option<Decimal> {
    if x <= 0.0 {
        return None;
    }
    crate::broker::bar_price(x)
}

/// This pipeline's open position in the symbol, as strategies and the trade manager see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PositionView {
    /// Long or short.
    pub side: PositionSide,
    /// Shares, positive.
    pub quantity: Decimal,
    /// Average entry price, USD per share.
    pub average_price: Decimal,
    /// Bars of the strategy timeframe since the entry.
    pub bars_held: u32,
    /// The bracket group (the entry's client order id).
    pub group: String,
    /// Whether a closing order (exit rule, end of window, emergency) is already working.
    pub exit_pending: bool,
}

/// The execution id: `<pipeline>:<symbol>:<trigger time RFC 3339>`; stable across restarts,
/// it is also the key of the client order ids of the orders the execution sends.
pub fn execution_id(pipeline: &str, symbol: &str, now: i64) -> String {
    use chrono::{Datelike, Timelike};
    let t = super::clock::utc(now);
    let mut id = String::with_capacity(pipeline.len() + symbol.len() + 22);
    id.push_str(pipeline);
    id.push(':');
    id.push_str(symbol);
    id.push(':');
    let year = t.year();
    if (0..=9999).contains(&year) {
        // Formatted by hand: this runs once per execution, millions of times in a backtest.
        fn push(id: &mut String, n: u32, width: u32) {
            for k in (0..width).rev() {
                let digit = (n / 10u32.pow(k)) % 10;
                id.push(char::from(b'0' + digit as u8));
            }
        }
        push(&mut id, year as u32, 4);
        id.push('-');
        push(&mut id, t.month(), 2);
        id.push('-');
        push(&mut id, t.day(), 2);
        id.push('T');
        push(&mut id, t.hour(), 2);
        id.push(':');
        push(&mut id, t.minute(), 2);
        id.push(':');
        push(&mut id, t.second(), 2);
        id.push('Z');
    } else {
        id.push_str(&t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    id
}
