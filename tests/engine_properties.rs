//! Properties of the engine over random price paths and random strategy plans:
//! every order the risk manager approves respects the policy; no open position lacks its
//! stop; cash + positions = equity at every bar, fees included.

use proptest::prelude::*;
use rust_decimal::Decimal;
use ztraded::broker::sim::SimBroker;
use ztraded::broker::{BrokerEvent, OrderPurpose, OrderType, PositionSide, Submit};
use ztraded::config::common::Percent;
use ztraded::config::risk::RiskPolicy;
use ztraded::config::settings::SimulatedBroker;
use ztraded::engine::book::{Book, FollowUp};
use ztraded::engine::state::{Action, StrategySignal, price};
use ztraded::market::Bar;
use ztraded::risk::{RiskInput, evaluate};

#[derive(Clone, Debug)]
struct Plan {
    action: u8,
    stop_atr: f64,
    t1_atr: f64,
    t2_atr: f64,
}

fn plans() -> impl Strategy<Value = Plan> {
    (0u8..6, -1.0f64..4.0, -1.0f64..6.0, -1.0f64..9.0).prop_map(
        |(action, stop_atr, t1_atr, t2_atr)| Plan {
            action,
            stop_atr,
            t1_atr,
            t2_atr,
        },
    )
}

fn policy() -> impl Strategy<Value = RiskPolicy> {
    (
        1u32..30,
        1u32..100,
        5u32..100,
        10u32..100,
        0u32..4,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(risk_tenths, max_pos, max_pipe, max_dep, rr, require_stop, shorts)| {
                let mut p = RiskPolicy::default();
                p.sizing.risk_per_trade_pct = Percent::new(Decimal::new(risk_tenths as i64, 1));
                p.sizing.max_position_pct = Percent::new(Decimal::from(max_pos));
                p.limits.max_pipeline_capital_pct = Percent::new(Decimal::from(max_pipe));
                p.limits.max_deployed_pct = Percent::new(Decimal::from(max_dep));
                p.limits.max_correlated_positions = 10;
                p.trade.min_reward_risk = rr as f64 * 0.5;
                p.trade.require_stop_loss = require_stop;
                p.trade.allow_short = shorts;
                p
            },
        )
}

/// A random walk of daily bars: (return, range) per step.
fn path() -> impl Strategy<Value = Vec<(f64, f64, f64)>> {
    proptest::collection::vec((-0.08f64..0.08, 0.0f64..0.06, -0.03f64..0.03), 20..120)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn orders_respect_the_policy_and_the_books_balance(
        walk in path(),
        plans in proptest::collection::vec(plans(), 120),
        policy in policy(),
        seed in any::<u64>(),
    ) {
        let config = SimulatedBroker { seed, ..SimulatedBroker::default() };
        let mut broker = SimBroker::new("sim", &config);
        let mut book = Book::new();
        let symbols = ["AAA", "BBB"];
        let mut close = [50.0f64, 120.0f64];
        let pipeline = "p";
        for (step, (ret, range, gap)) in walk.iter().enumerate() {
            let ts = 1_325_566_800 + step as i64 * 86_400;
            for (k, symbol) in symbols.iter().enumerate() {
                let r = if k == 0 { *ret } else { -ret * 0.7 };
                let open = (close[k] * (1.0 + gap)).max(1.0);
                let c = (open * (1.0 + r)).max(1.0);
                let high = open.max(c) * (1.0 + range);
                let low = (open.min(c) * (1.0 - range)).max(0.5);
                close[k] = c;
                let bar = Bar { ts, open, high, low, close: c, volume: 1e6 };
                let mut moves = Vec::new();
                for event in broker.on_bar(symbol, &bar) {
                    if let BrokerEvent::Fill(fill) = event {
                        for f in book.on_fill(&fill) {
                            match f {
                                FollowUp::ReplaceStop { client_order_id, price, quantity } => {
                                    moves.push((client_order_id, price, quantity));
                                }
                                FollowUp::CancelGroup(group) => {
                                    for o in broker.open_orders() {
                                        if o.oco_group.as_deref() == Some(group.as_str()) {
                                            broker.cancel(&o.client_order_id).unwrap();
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                // Stop moves after the bar's fills: a target 2 filled in the same bar may
                // have closed the position (and cancelled the stop) already.
                for (id, price, quantity) in moves {
                    if broker.replace_stop(&id, price, quantity).is_err() {
                        prop_assert!(book.get(pipeline, symbol).is_none(), "the stop of an open position could not be moved");
                    }
                }
                // Cash + positions = equity, exactly, fees included.
                let account = broker.account();
                let positions = broker.positions();
                let value: Decimal = positions.iter().map(|p| p.quantity * p.market_price).sum();
                prop_assert_eq!(account.cash + value, account.equity);
                // Every open position that was entered with a stop has a working stop for
                // its whole size.
                for p in &positions {
                    if let Some(trade) = book.get(&p.pipeline, &p.symbol)
                        && trade.stop_loss.is_some()
                    {
                        let stop_qty: Decimal = broker
                            .open_orders()
                            .iter()
                            .filter(|o| o.symbol == p.symbol && o.purpose == OrderPurpose::StopLoss)
                            .map(|o| o.quantity - o.filled_quantity)
                            .sum();
                        // Every share is covered (several brackets may each cover their own
                        // entry; exits are reduce-only, so extra cover never adds exposure).
                        prop_assert!(stop_qty >= p.quantity.abs(), "position {:?} lacks its stop: {} covered", p, stop_qty);
                    }
                }
                // A random plan, through the risk manager.
                let plan = &plans[(step * 2 + k) % plans.len()];
                let atr = c * 0.02;
                let side = match plan.action { 0 | 1 => PositionSide::Long, 2 => PositionSide::Short, _ => continue };
                let sign = if side == PositionSide::Long { 1.0 } else { -1.0 };
                let signal = StrategySignal {
                    action: if side == PositionSide::Long { Action::Buy } else { Action::Sell },
                    conviction: 100.0,
                    entry_price: price(c),
                    stop_loss: price(c - sign * plan.stop_atr * atr),
                    target_1: price(c + sign * plan.t1_atr * atr),
                    target_2: price(c + sign * plan.t2_atr * atr),
                    reward_risk: None,
                    reasoning: String::new(),
                };
                let equity = broker.account().equity;
                let no_corr = |_: &str, _: &str| None;
                let (decision, order) = evaluate(&RiskInput {
                    policy: &policy,
                    pipeline,
                    symbol,
                    signal: &signal,
                    equity,
                    positions: &positions,
                    day_pnl: Decimal::ZERO,
                    halted: None,
                    correlation: &no_corr,
                    client_order_id: format!("e-{step}-{k}"),
                    partial_exit_pct: Percent::new(Decimal::from(50)),
                    explain: false,
                });
                let Some(order) = order else {
                    prop_assert!(!decision.approved);
                    continue;
                };
                let o = order.get();
                let entry = signal.entry_price.unwrap();
                let notional = o.quantity * entry;
                let used_pipeline: Decimal = positions.iter().filter(|p| p.pipeline == pipeline).map(|p| (p.quantity * p.market_price).abs()).sum();
                let used_all: Decimal = positions.iter().map(|p| (p.quantity * p.market_price).abs()).sum();
                prop_assert!(o.quantity >= Decimal::ONE && o.quantity.fract().is_zero());
                prop_assert!(notional <= equity * policy.sizing.max_position_pct.fraction());
                prop_assert!(used_pipeline + notional <= equity * policy.limits.max_pipeline_capital_pct.fraction());
                prop_assert!(used_all + notional <= equity * policy.limits.max_deployed_pct.fraction());
                if side == PositionSide::Short {
                    prop_assert!(policy.trade.allow_short);
                }
                match o.stop_loss {
                    Some(stop) => {
                        let loss = (entry - stop).abs() * o.quantity;
                        prop_assert!(loss <= equity * policy.sizing.risk_per_trade_pct.fraction() + Decimal::new(1, 6));
                        let loss_side = if side == PositionSide::Long { stop < entry } else { stop > entry };
                        prop_assert!(loss_side, "stop on the wrong side");
                    }
                    None => prop_assert!(!policy.trade.require_stop_loss),
                }
                if policy.trade.min_reward_risk > 0.0 {
                    let rr = StrategySignal::compute_reward_risk(side, entry, o.stop_loss.unwrap(), signal.target_1.unwrap()).unwrap();
                    prop_assert!(rr + 1e-5 >= policy.trade.min_reward_risk);
                }
                let legs: Decimal = o.take_profits.iter().map(|t| t.quantity).sum();
                prop_assert!(legs <= o.quantity);
                prop_assert_eq!(o.order_type, OrderType::Market);
                APPROVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                book.expect_entry(o, true, "simulation");
                let _ = broker.submit(Submit::Entry(order), ts + 86_400);
            }
        }
    }
}

static APPROVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[test]
fn the_property_exercises_approved_orders() {
    // Runs the property once more on a fixed input and checks that entries get through, so
    // the property above is not vacuous.
    let before = APPROVED.load(std::sync::atomic::Ordering::Relaxed);
    orders_respect_the_policy_and_the_books_balance();
    assert!(APPROVED.load(std::sync::atomic::Ordering::Relaxed) > before + 100);
}
