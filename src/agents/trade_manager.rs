//! `trade_manager`: the pre-trade position check (no pyramiding unless allowed), the
//! bracket entry of an approved plan, and exits by rule. Stops and targets are managed by
//! the broker as the bracket's legs; the engine moves the stop to breakeven after target 1.

use crate::broker::{EntryOrder, ExitOrder, OrderPurpose, OrderType, Submit, client_order_id};
use crate::config::pipeline::{Mode, TradeManagerConfig};
use crate::domain::{Action, StrategySignal, TradeAction, TradeOutcome};
use crate::engine::state::PositionView;
use crate::risk::RiskApproved;
use rust_decimal::Decimal;

/// What the trade manager decided, and the order to send (none in validation mode).
pub struct Decision {
    /// The node's output.
    pub action: TradeAction,
    /// The order to submit.
    pub order: Option<Submit>,
}

/// Decides for one symbol. `execution_key` makes the client order ids deterministic.
#[allow(clippy::too_many_arguments)]
pub fn run(
    config: &TradeManagerConfig,
    mode: Mode,
    pipeline: &str,
    symbol: &str,
    execution_key: &str,
    signal: Option<&StrategySignal>,
    approved: Option<RiskApproved<EntryOrder>>,
    position: Option<&PositionView>,
    pending_entry: bool,
    explain: bool,
) -> Decision {
    let text = |f: &dyn Fn() -> String| if explain { f() } else { String::new() };
    let none = |reasoning: String| Decision {
        action: TradeAction {
            outcome: TradeOutcome::None,
            client_order_id: None,
            purpose: None,
            quantity: Decimal::ZERO,
            reasoning,
        },
        order: None,
    };
    let Some(signal) = signal else {
        return none(text(&|| "no trade plan".into()));
    };
    match signal.action {
        Action::Close => {
            let Some(pos) = position else {
                return none(text(&|| "exit rule holds but there is no position".into()));
            };
            if pos.exit_pending {
                return none(text(&|| {
                    "exit rule holds; the closing order is already working".into()
                }));
            }
            let id = client_order_id(pipeline, symbol, execution_key, "exit");
            let order = ExitOrder {
                client_order_id: id.clone(),
                pipeline: pipeline.to_string(),
                symbol: symbol.to_string(),
                position_side: pos.side,
                quantity: pos.quantity,
                order_type: OrderType::Market,
                purpose: OrderPurpose::ExitRule,
                oco_group: Some(pos.group.clone()),
            };
            let recorded = mode == Mode::Validation;
            Decision {
                action: TradeAction {
                    outcome: if recorded {
                        TradeOutcome::Recorded
                    } else {
                        TradeOutcome::Closed
                    },
                    client_order_id: Some(id),
                    purpose: Some(OrderPurpose::ExitRule),
                    quantity: pos.quantity,
                    reasoning: text(&|| {
                        format!(
                            "close {} {} shares at market: {}",
                            pos.side.as_str(),
                            pos.quantity,
                            signal.reasoning
                        )
                    }),
                },
                order: (!recorded).then_some(Submit::Exit(order)),
            }
        }
        Action::Buy | Action::Sell => {
            let Some(approved) = approved else {
                return none(text(&|| "the risk manager did not approve the plan".into()));
            };
            if pending_entry && !config.allow_pyramiding {
                return Decision {
                    action: TradeAction {
                        outcome: TradeOutcome::Rejected,
                        client_order_id: None,
                        purpose: Some(OrderPurpose::Entry),
                        quantity: Decimal::ZERO,
                        reasoning: text(&|| {
                            "an entry order is pending at the broker and pyramiding is off".into()
                        }),
                    },
                    order: None,
                };
            }
            if let Some(pos) = position
                && !config.allow_pyramiding
            {
                return Decision {
                    action: TradeAction {
                        outcome: TradeOutcome::Rejected,
                        client_order_id: None,
                        purpose: Some(OrderPurpose::Entry),
                        quantity: Decimal::ZERO,
                        reasoning: text(&|| {
                            format!(
                                "a {} position of {} shares is already open and pyramiding is off",
                                pos.side.as_str(),
                                pos.quantity
                            )
                        }),
                    },
                    order: None,
                };
            }
            let o = approved.get();
            let recorded = mode == Mode::Validation;
            let action = TradeAction {
                outcome: if recorded {
                    TradeOutcome::Recorded
                } else {
                    TradeOutcome::Submitted
                },
                client_order_id: Some(o.client_order_id.clone()),
                purpose: Some(OrderPurpose::Entry),
                quantity: o.quantity,
                reasoning: text(&|| {
                    format!(
                        "{} {} {} at market with stop {} and {} take-profit leg(s){}",
                        o.side.as_str(),
                        o.quantity,
                        o.symbol,
                        o.stop_loss.map_or("none".into(), |s| s.to_string()),
                        o.take_profits.len(),
                        if recorded {
                            " (validation mode: recorded, not sent)"
                        } else {
                            ""
                        }
                    )
                }),
            };
            Decision {
                action,
                order: (!recorded).then_some(Submit::Entry(approved)),
            }
        }
        Action::Hold => none(text(&|| format!("hold: {}", signal.reasoning))),
    }
}
