//! The pipeline state: what nodes produce and pass on within one execution (the seeds'
//! `PipelineState`), and the execution record that reporting stores.

use crate::broker::{OrderPurpose, PositionSide, Side};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Market direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bias {
    /// Prices expected to rise.
    Bullish,
    /// Prices expected to fall.
    Bearish,
    /// No view.
    Neutral,
}

/// Output of a `bias` node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BiasSignal {
    /// The direction.
    pub bias: Bias,
    /// Confidence, percent 0–100.
    pub confidence: f64,
    /// Why, in a sentence.
    pub reasoning: String,
    /// The facts that led to it (the conditions that held, or what an LLM listed).
    #[serde(default)]
    pub factors: Vec<String>,
}

/// What a strategy proposes (the seeds' `TradeSide`, plus closing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Open (or add to) a long position.
    Buy,
    /// Open (or add to) a short position.
    Sell,
    /// Do nothing.
    Hold,
    /// Close the open position (an exit rule fired).
    Close,
}

impl Action {
    /// The entry side, for `Buy` and `Sell`.
    pub fn entry_side(self) -> Option<Side> {
        match self {
            Action::Buy => Some(Side::Buy),
            Action::Sell => Some(Side::Sell),
            _ => None,
        }
    }
    /// The position the entry opens.
    pub fn position_side(self) -> Option<PositionSide> {
        match self {
            Action::Buy => Some(PositionSide::Long),
            Action::Sell => Some(PositionSide::Short),
            _ => None,
        }
    }
}

/// Output of a `strategy` node: a complete trade plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrategySignal {
    /// What to do.
    pub action: Action,
    /// Conviction, percent 0–100.
    pub conviction: f64,
    /// Expected entry price, USD per share.
    pub entry_price: Option<Decimal>,
    /// Stop-loss price, USD per share.
    pub stop_loss: Option<Decimal>,
    /// First target, USD per share.
    pub target_1: Option<Decimal>,
    /// Second target, USD per share.
    pub target_2: Option<Decimal>,
    /// `(target_1 − entry) / (entry − stop)`, signed for shorts.
    pub reward_risk: Option<f64>,
    /// Why.
    pub reasoning: String,
}

impl StrategySignal {
    /// A `hold` with its reason.
    pub fn hold(reasoning: impl Into<String>) -> StrategySignal {
        StrategySignal {
            action: Action::Hold,
            conviction: 0.0,
            entry_price: None,
            stop_loss: None,
            target_1: None,
            target_2: None,
            reward_risk: None,
            reasoning: reasoning.into(),
        }
    }

    /// Reward/risk of a plan: `(target_1 − entry) / (entry − stop)` for longs and
    /// `(entry − target_1) / (stop − entry)` for shorts (the seeds' R coefficient).
    pub fn compute_reward_risk(
        side: PositionSide,
        entry: Decimal,
        stop: Decimal,
        target: Decimal,
    ) -> Option<f64> {
        let (reward, risk) = match side {
            PositionSide::Long => (target - entry, entry - stop),
            PositionSide::Short => (entry - target, stop - entry),
        };
        if risk <= Decimal::ZERO {
            return None;
        }
        use rust_decimal::prelude::ToPrimitive;
        (reward / risk).to_f64()
    }
}

/// Output of a `risk_manager` node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskDecision {
    /// Whether an order may be placed.
    pub approved: bool,
    /// Whether the size was shrunk to fit a limit.
    pub adjusted: bool,
    /// Approved shares (0 when rejected).
    pub quantity: Decimal,
    /// The rule that decided: `approved`, or the limit that rejected or adjusted
    /// (`max_position_pct`, `daily_loss_usd`, `min_reward_risk`, …).
    pub rule: String,
    /// The numbers behind the decision.
    pub reasoning: String,
    /// USD lost if the stop is hit with the approved quantity.
    pub position_risk_usd: Decimal,
}

/// Output of a `trade_manager` node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeAction {
    /// What was done: `submitted`, `closed`, `recorded` (validation mode), `rejected`,
    /// `none`.
    pub outcome: String,
    /// Client order id of the order sent (or that would have been sent).
    pub client_order_id: Option<String>,
    /// Why the order exists.
    pub purpose: Option<OrderPurpose>,
    /// Shares.
    pub quantity: Decimal,
    /// Why.
    pub reasoning: String,
}

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
/// simulated broker converts bar prices ([`crate::broker::sim::bar_price`]); `None` when not
/// finite, not positive, or 1e12 and above.
pub fn price(x: f64) -> Option<Decimal> {
    if x <= 0.0 {
        return None;
    }
    crate::broker::sim::bar_price(x)
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
