//! The decisions agents pass along one execution (the seeds' `PipelineState` parts): bias,
//! trade plan, risk decision, trade action. Shared by the agents, the risk manager, the
//! engine and the store, so none of them depends on another for its vocabulary.

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
    pub rule: RiskRule,
    /// The numbers behind the decision.
    pub reasoning: String,
    /// USD lost if the stop is hit with the approved quantity.
    pub position_risk_usd: Decimal,
}

/// What a `trade_manager` node did, serialized as its lowercase name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TradeOutcome {
    /// An entry was sent.
    Submitted,
    /// An exit was sent.
    Closed,
    /// Validation mode: the order is recorded, not sent.
    Recorded,
    /// The plan was refused (the risk manager rejected it, or it was not complete).
    Rejected,
    /// Nothing to do.
    None,
}

/// Output of a `trade_manager` node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeAction {
    /// What was done.
    pub outcome: TradeOutcome,
    /// Client order id of the order sent (or that would have been sent).
    pub client_order_id: Option<String>,
    /// Why the order exists.
    pub purpose: Option<OrderPurpose>,
    /// Shares.
    pub quantity: Decimal,
    /// Why.
    pub reasoning: String,
}

/// The risk policy rule that decided a [`RiskDecision`] (DESIGN.md §2.3; the order in which
/// they apply is documented in [`crate::risk::evaluate`]). Serialized as its snake_case name,
/// which is also the `rule` label of `ztraded_risk_rejections_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskRule {
    /// Every rule passed at the planned size.
    Approved,
    /// A latched halt on the account, the pipeline or the symbol.
    Halt,
    /// The plan opens no position.
    NoEntry,
    /// `trade.allow_short` is false and the plan is a short.
    AllowShort,
    /// The plan has no usable entry price.
    EntryPrice,
    /// `trade.require_stop_loss` and the plan has no stop.
    RequireStopLoss,
    /// The stop is not on the loss side of the entry.
    StopLoss,
    /// Target 1 is not on the profit side of the entry.
    #[serde(rename = "target_1")]
    Target1,
    /// `trade.min_reward_risk`.
    MinRewardRisk,
    /// `trade.min_profit_margin_pct`.
    MinProfitMarginPct,
    /// `limits.daily_loss_usd` of the account.
    DailyLossUsd,
    /// `limits.max_correlated_positions`.
    MaxCorrelatedPositions,
    /// The account has no positive equity.
    Equity,
    /// `sizing.risk_per_trade_pct` buys less than one share.
    RiskPerTradePct,
    /// `sizing.max_position_pct` (shrank or rejected).
    MaxPositionPct,
    /// `limits.max_pipeline_capital_pct` (shrank or rejected).
    MaxPipelineCapitalPct,
    /// `limits.max_deployed_pct` (shrank or rejected).
    MaxDeployedPct,
}

impl RiskRule {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskRule::Approved => "approved",
            RiskRule::Halt => "halt",
            RiskRule::NoEntry => "no_entry",
            RiskRule::AllowShort => "allow_short",
            RiskRule::EntryPrice => "entry_price",
            RiskRule::RequireStopLoss => "require_stop_loss",
            RiskRule::StopLoss => "stop_loss",
            RiskRule::Target1 => "target_1",
            RiskRule::MinRewardRisk => "min_reward_risk",
            RiskRule::MinProfitMarginPct => "min_profit_margin_pct",
            RiskRule::DailyLossUsd => "daily_loss_usd",
            RiskRule::MaxCorrelatedPositions => "max_correlated_positions",
            RiskRule::Equity => "equity",
            RiskRule::RiskPerTradePct => "risk_per_trade_pct",
            RiskRule::MaxPositionPct => "max_position_pct",
            RiskRule::MaxPipelineCapitalPct => "max_pipeline_capital_pct",
            RiskRule::MaxDeployedPct => "max_deployed_pct",
        }
    }
}

impl std::fmt::Display for RiskRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for RiskRule {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
