//! The risk policy resource: `risk/<name>.yaml` (DESIGN.md §2.3).

use super::common::{Percent, optional_usd_schema};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::Deserialize;

/// A named set of hard limits that every order of the pipelines using it must pass.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ztraded risk policy")]
pub struct RiskPolicy {
    /// What the policy protects, for people reading the config.
    #[serde(default)]
    pub description: Option<String>,
    /// Position sizing.
    #[serde(default)]
    pub sizing: Sizing,
    /// Exposure and loss limits.
    #[serde(default)]
    pub limits: RiskLimits,
    /// Rules every trade plan must meet.
    #[serde(default)]
    pub trade: TradeRules,
}

/// Position sizing: `quantity = equity × risk_per_trade_pct / 100 / |entry − stop|`, rounded
/// down to whole shares, then shrunk to fit `max_position_pct` (the seeds' risk manager).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sizing {
    /// Percent of account equity lost if the stop is hit.
    #[serde(default = "one")]
    pub risk_per_trade_pct: Percent,
    /// Most notional value of one position, in percent of equity.
    #[serde(default = "five")]
    pub max_position_pct: Percent,
}

impl Default for Sizing {
    fn default() -> Self {
        Sizing {
            risk_per_trade_pct: one(),
            max_position_pct: five(),
        }
    }
}

fn pct(v: i64) -> Percent {
    Percent(Decimal::from(v))
}
fn one() -> Percent {
    pct(1)
}
fn five() -> Percent {
    pct(5)
}
fn ten() -> Percent {
    pct(10)
}
fn eighty() -> Percent {
    pct(80)
}

/// Exposure and loss limits.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskLimits {
    /// Most notional value of all positions of one pipeline, in percent of equity.
    #[serde(default = "ten")]
    pub max_pipeline_capital_pct: Percent,
    /// Most notional value of all positions of the account, in percent of equity.
    #[serde(default = "eighty")]
    pub max_deployed_pct: Percent,
    /// Most open positions whose daily returns correlate above `correlation_threshold`
    /// with the new symbol's (Pearson correlation over the last 60 daily returns).
    #[serde(default = "three")]
    #[schemars(range(min = 1, max = 10_000))]
    pub max_correlated_positions: u32,
    /// Correlation (0–1) above which two symbols count as correlated.
    #[serde(default = "default_correlation")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub correlation_threshold: f64,
    /// Account-wide loss of the day (realized + unrealized), in USD, at which all entries
    /// halt for the rest of the day.
    #[serde(default)]
    #[schemars(schema_with = "optional_usd_schema")]
    pub daily_loss_usd: Option<Decimal>,
    /// What reaching `daily_loss_usd` does besides halting entries.
    #[serde(default)]
    pub daily_loss_action: DailyLossAction,
}

fn three() -> u32 {
    3
}
fn default_correlation() -> f64 {
    0.7
}

impl Default for RiskLimits {
    fn default() -> Self {
        RiskLimits {
            max_pipeline_capital_pct: ten(),
            max_deployed_pct: eighty(),
            max_correlated_positions: three(),
            correlation_threshold: default_correlation(),
            daily_loss_usd: None,
            daily_loss_action: DailyLossAction::default(),
        }
    }
}

/// What happens when the account's daily loss limit is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DailyLossAction {
    /// Halt new entries; open positions keep their stops and targets.
    #[default]
    Halt,
    /// Halt new entries and close every open position at market.
    Flatten,
}

/// Rules every trade plan must meet.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TradeRules {
    /// Reject a plan without a stop-loss.
    #[serde(default = "yes")]
    pub require_stop_loss: bool,
    /// Lowest reward/risk: `(target_1 − entry) / (entry − stop)`, signed for shorts.
    #[serde(default = "default_reward_risk")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub min_reward_risk: f64,
    /// Lowest profit margin `|target_1 − entry| / entry`, in percent.
    #[serde(default)]
    pub min_profit_margin_pct: Percent,
    /// Allow short positions.
    #[serde(default)]
    pub allow_short: bool,
}

fn yes() -> bool {
    true
}
fn default_reward_risk() -> f64 {
    1.5
}

impl Default for TradeRules {
    fn default() -> Self {
        TradeRules {
            require_stop_loss: true,
            min_reward_risk: default_reward_risk(),
            min_profit_margin_pct: Percent::default(),
            allow_short: false,
        }
    }
}
