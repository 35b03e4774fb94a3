//! The risk manager: every rule of a risk policy applied to one trade plan (the seeds' risk
//! manager agent, DESIGN.md §2.3).
//!
//! Order of the rules (the first that rejects decides; sizing rules shrink in turn):
//! 1. `halt` — a latched halt on the account, the pipeline or the symbol;
//! 2. `allow_short`; 3. a usable entry price; 4. `require_stop_loss` and a stop on the loss
//!    side of the entry; 5. `min_reward_risk` `(target_1 − entry)/(entry − stop)` (signed for
//!    shorts); 6. `min_profit_margin_pct` `|target_1 − entry| / entry`; 7. `daily_loss_usd`
//!    (the account's loss of the day has reached the limit); 8. `max_correlated_positions`;
//! 9. sizing `quantity = ⌊equity × risk_per_trade_pct / 100 / |entry − stop|⌋` (the seeds'
//!    formula; without a stop, sized by `max_position_pct` alone), then shrunk to fit
//!    `max_position_pct`, `max_pipeline_capital_pct` and `max_deployed_pct` of equity, each
//!    cap on notional `quantity × entry`; a size below one share rejects with the rule that
//!    shrank it.

use super::RiskApproved;
use crate::broker::{EntryOrder, OrderPurpose, OrderType, Position, PositionSide, TakeProfit};
use crate::config::common::Percent;
use crate::config::risk::RiskPolicy;
use crate::domain::{Action, RiskDecision, RiskRule, StrategySignal};
use rust_decimal::Decimal;

/// Daily returns used for the correlation rule.
pub const CORRELATION_LOOKBACK: usize = 60;

/// Everything the risk manager needs to decide.
pub struct RiskInput<'a> {
    /// The policy.
    pub policy: &'a RiskPolicy,
    /// The pipeline asking.
    pub pipeline: &'a str,
    /// The symbol.
    pub symbol: &'a str,
    /// The plan.
    pub signal: &'a StrategySignal,
    /// Account equity, USD.
    pub equity: Decimal,
    /// Every open position of the account (all pipelines), at market.
    pub positions: &'a [Position],
    /// The account's profit or loss of the day so far (realized + unrealized), USD;
    /// negative is a loss.
    pub day_pnl: Decimal,
    /// Why entries are halted for this pipeline or symbol, if they are.
    pub halted: Option<&'a str>,
    /// Pearson correlation of the daily returns of two symbols over the last
    /// [`CORRELATION_LOOKBACK`] days (`None` when there is not enough history).
    pub correlation: &'a (dyn Fn(&str, &str) -> Option<f64> + Sync),
    /// Deterministic client order id for the entry.
    pub client_order_id: String,
    /// Percent of the position the first target closes (`trade_manager.partial_exit_pct`).
    pub partial_exit_pct: Percent,
    /// Whether to write the reasoning (backtests skip it for speed).
    pub explain: bool,
}

fn reject(rule: RiskRule, reasoning: String) -> (RiskDecision, Option<RiskApproved<EntryOrder>>) {
    (
        RiskDecision {
            approved: false,
            adjusted: false,
            quantity: Decimal::ZERO,
            rule,
            reasoning,
            position_risk_usd: Decimal::ZERO,
        },
        None,
    )
}

/// Applies the policy to the plan: a decision, and the approved entry order when approved.
pub fn evaluate(input: &RiskInput<'_>) -> (RiskDecision, Option<RiskApproved<EntryOrder>>) {
    let p = input.policy;
    let s = input.signal;
    let why = |f: &dyn Fn() -> String| if input.explain { f() } else { String::new() };
    if let Some(reason) = input.halted {
        return reject(
            RiskRule::Halt,
            why(&|| format!("entries are halted: {reason}")),
        );
    }
    let side = match s.action {
        Action::Buy => PositionSide::Long,
        Action::Sell => PositionSide::Short,
        Action::Hold | Action::Close => {
            return reject(
                RiskRule::NoEntry,
                why(&|| "the plan opens no position".into()),
            );
        }
    };
    if side == PositionSide::Short && !p.trade.allow_short {
        return reject(
            RiskRule::AllowShort,
            why(&|| "the policy does not allow short positions".into()),
        );
    }
    let Some(entry) = s.entry_price.filter(|e| *e > Decimal::ZERO) else {
        return reject(
            RiskRule::EntryPrice,
            why(&|| "the plan has no usable entry price".into()),
        );
    };
    let stop = s.stop_loss;
    match stop {
        None if p.trade.require_stop_loss => {
            return reject(
                RiskRule::RequireStopLoss,
                why(&|| "the plan has no stop-loss and the policy requires one".into()),
            );
        }
        Some(st)
            if (side == PositionSide::Long && st >= entry)
                || (side == PositionSide::Short && st <= entry) =>
        {
            return reject(
                RiskRule::StopLoss,
                why(&|| {
                    format!(
                        "the stop {st} is not on the loss side of the entry {entry} for a {}",
                        side.as_str()
                    )
                }),
            );
        }
        _ => {}
    }
    if let Some(target) = s.target_1 {
        let wrong_side = (side == PositionSide::Long && target <= entry)
            || (side == PositionSide::Short && target >= entry);
        if wrong_side {
            return reject(
                RiskRule::Target1,
                why(&|| {
                    format!("target 1 ({target}) is not on the profit side of the entry {entry}")
                }),
            );
        }
    }
    if p.trade.min_reward_risk > 0.0 {
        let rr = match (stop, s.target_1) {
            (Some(st), Some(t)) => StrategySignal::compute_reward_risk(side, entry, st, t),
            _ => None,
        };
        match rr {
            // Levels are rounded to 6 decimals, so a plan built at exactly the minimum
            // (stop 2 ATR, target 3 ATR for 1.5) may come out a hair below it.
            Some(rr) if rr + 1e-5 >= p.trade.min_reward_risk => {}
            Some(rr) => {
                return reject(
                    RiskRule::MinRewardRisk,
                    why(&|| {
                        format!(
                            "reward/risk {rr:.2} is below the minimum {}",
                            p.trade.min_reward_risk
                        )
                    }),
                );
            }
            None => {
                return reject(
                    RiskRule::MinRewardRisk,
                    why(&|| {
                        format!(
                            "reward/risk needs a stop and target 1; the policy asks for at least {}",
                            p.trade.min_reward_risk
                        )
                    }),
                );
            }
        }
    }
    if p.trade.min_profit_margin_pct.value() > Decimal::ZERO {
        let margin = s
            .target_1
            .map(|t| (t - entry).abs() / entry * Decimal::ONE_HUNDRED);
        match margin {
            Some(m) if m >= p.trade.min_profit_margin_pct.value() => {}
            _ => {
                return reject(
                    RiskRule::MinProfitMarginPct,
                    why(&|| {
                        format!(
                            "profit margin {} is below the minimum {}",
                            margin.map_or("unknown (no target 1)".to_string(), |m| format!(
                                "{}%",
                                m.round_dp(2)
                            )),
                            p.trade.min_profit_margin_pct
                        )
                    }),
                );
            }
        }
    }
    if let Some(limit) = p.limits.daily_loss_usd
        && -input.day_pnl >= limit
    {
        return reject(
            RiskRule::DailyLossUsd,
            why(&|| {
                format!(
                    "the account has lost {} USD today, at or past the daily limit of {limit} USD",
                    (-input.day_pnl).round_dp(2)
                )
            }),
        );
    }
    let mut others: Vec<&str> = input
        .positions
        .iter()
        .filter(|pos| !pos.quantity.is_zero() && pos.symbol != input.symbol)
        .map(|pos| pos.symbol.as_str())
        .collect();
    others.sort_unstable();
    others.dedup();
    let correlated: Vec<&str> = others
        .iter()
        .copied()
        .filter(|o| {
            (input.correlation)(input.symbol, o).is_some_and(|c| c > p.limits.correlation_threshold)
        })
        .collect();
    if correlated.len() >= p.limits.max_correlated_positions as usize {
        return reject(
            RiskRule::MaxCorrelatedPositions,
            why(&|| {
                format!(
                    "{} open positions correlate above {} with {} ({}); the policy allows {}",
                    correlated.len(),
                    p.limits.correlation_threshold,
                    input.symbol,
                    correlated.join(", "),
                    p.limits.max_correlated_positions
                )
            }),
        );
    }
    // Sizing.
    let equity = input.equity;
    if equity <= Decimal::ZERO {
        return reject(
            RiskRule::Equity,
            why(&|| format!("account equity is {equity} USD")),
        );
    }
    let risk_budget = equity * p.sizing.risk_per_trade_pct.fraction();
    let per_share = stop.map(|st| (entry - st).abs());
    let mut quantity = match per_share {
        Some(r) if r > Decimal::ZERO => (risk_budget / r).floor(),
        _ => (equity * p.sizing.max_position_pct.fraction() / entry).floor(),
    };
    let sized = quantity;
    let mut rule = RiskRule::Approved;
    let mut notes: Vec<String> = Vec::new();
    let notional = |pos: &Position| (pos.quantity * pos.market_price).abs();
    let caps: [(RiskRule, Decimal, Decimal); 3] = [
        (
            RiskRule::MaxPositionPct,
            equity * p.sizing.max_position_pct.fraction(),
            // What this pipeline already holds (or has pending) in the symbol: an add may
            // not grow the position past the cap.
            input
                .positions
                .iter()
                .filter(|pos| pos.pipeline == input.pipeline && pos.symbol == input.symbol)
                .map(notional)
                .sum(),
        ),
        (
            RiskRule::MaxPipelineCapitalPct,
            equity * p.limits.max_pipeline_capital_pct.fraction(),
            input
                .positions
                .iter()
                .filter(|pos| pos.pipeline == input.pipeline)
                .map(notional)
                .sum(),
        ),
        (
            RiskRule::MaxDeployedPct,
            equity * p.limits.max_deployed_pct.fraction(),
            input.positions.iter().map(notional).sum(),
        ),
    ];
    for (name, cap, used) in caps {
        let room = cap - used;
        let fit = if room <= Decimal::ZERO {
            Decimal::ZERO
        } else {
            (room / entry).floor()
        };
        if quantity > fit {
            if input.explain {
                notes.push(format!(
                    "{name}: {quantity} shares ({} USD) exceed the room of {} USD, cut to {fit}",
                    (quantity * entry).round_dp(2),
                    room.max(Decimal::ZERO).round_dp(2)
                ));
            }
            quantity = fit;
            rule = name;
        }
    }
    if quantity < Decimal::ONE {
        let rule = if rule == RiskRule::Approved {
            RiskRule::RiskPerTradePct
        } else {
            rule
        };
        return reject(
            rule,
            why(&|| {
                if notes.is_empty() {
                    format!(
                        "the risk budget of {} USD buys less than one share",
                        risk_budget.round_dp(2)
                    )
                } else {
                    notes.join("; ")
                }
            }),
        );
    }
    let position_risk = per_share.map_or(Decimal::ZERO, |r| r * quantity);
    let adjusted = quantity < sized;
    let reasoning = why(&|| {
        let mut text = format!(
            "equity {} USD × risk {} = {} USD at risk; {} per share → {} shares",
            equity.round_dp(2),
            p.sizing.risk_per_trade_pct,
            risk_budget.round_dp(2),
            per_share.map_or("no stop".to_string(), |r| format!("{} USD", r.round_dp(4))),
            sized
        );
        for n in &notes {
            text.push_str("; ");
            text.push_str(n);
        }
        text.push_str(&format!(
            "; approved {quantity} shares ({} USD notional, {} USD at risk, {}% of equity)",
            (quantity * entry).round_dp(2),
            position_risk.round_dp(2),
            (position_risk / equity * Decimal::ONE_HUNDRED).round_dp(3)
        ));
        text
    });
    let mut take_profits = Vec::new();
    match (s.target_1, s.target_2) {
        (Some(t1), Some(t2)) => {
            let q1 = (quantity * input.partial_exit_pct.fraction()).floor();
            let q2 = quantity - q1;
            if q1 > Decimal::ZERO {
                take_profits.push(TakeProfit {
                    price: t1,
                    quantity: q1,
                    purpose: OrderPurpose::Target1,
                });
            }
            if q2 > Decimal::ZERO {
                take_profits.push(TakeProfit {
                    price: t2,
                    quantity: q2,
                    purpose: OrderPurpose::Target2,
                });
            }
        }
        (Some(t1), None) => {
            let q1 = (quantity * input.partial_exit_pct.fraction())
                .floor()
                .max(Decimal::ONE)
                .min(quantity);
            take_profits.push(TakeProfit {
                price: t1,
                quantity: q1,
                purpose: OrderPurpose::Target1,
            });
        }
        (None, Some(t2)) => take_profits.push(TakeProfit {
            price: t2,
            quantity,
            purpose: OrderPurpose::Target2,
        }),
        (None, None) => {}
    }
    let order = EntryOrder {
        client_order_id: input.client_order_id.clone(),
        pipeline: input.pipeline.to_string(),
        symbol: input.symbol.to_string(),
        side: side.entry_side(),
        quantity,
        order_type: OrderType::Market,
        expected_price: Some(entry),
        stop_loss: stop,
        take_profits,
    };
    (
        RiskDecision {
            approved: true,
            adjusted,
            quantity,
            rule,
            reasoning,
            position_risk_usd: position_risk,
        },
        Some(RiskApproved::approve(
            order,
            if adjusted { "adjusted" } else { "approved" },
        )),
    )
}

/// Pearson correlation of the simple returns of two close series (the last `lookback`
/// returns both have), or `None` with fewer than 20 returns or zero variance.
pub fn correlation(a: &[f64], b: &[f64], lookback: usize) -> Option<f64> {
    let n = a.len().min(b.len()).min(lookback + 1);
    if n < 21 {
        return None;
    }
    let ra: Vec<f64> = a[a.len() - n..]
        .windows(2)
        .map(|w| w[1] / w[0] - 1.0)
        .collect();
    let rb: Vec<f64> = b[b.len() - n..]
        .windows(2)
        .map(|w| w[1] / w[0] - 1.0)
        .collect();
    let m = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / m, rb.iter().sum::<f64>() / m);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    let r = cov / (va.sqrt() * vb.sqrt());
    r.is_finite().then_some(r)
}

pub use crate::domain::to_f64;

#[cfg(test)]
mod tests;
