//! Unit tests of the simulated broker with exact numbers.

use super::*;
use crate::broker::{Broker, EntryOrder, ExitOrder};
use crate::config::common::Percent;
use crate::risk::approve_for_tests;

pub(super) fn config() -> SimulatedBroker {
    SimulatedBroker {
        initial_balance: dec!(100000),
        slippage_pct: Percent(dec!(0.1)),
        commission_per_share: dec!(0.005),
        min_commission: dec!(1),
        partial_fill_pct: Percent(Decimal::ZERO),
        reject_pct: Percent(Decimal::ZERO),
        seed: 7,
    }
}

pub(super) fn bar(ts: i64, open: f64, high: f64, low: f64, close: f64) -> Bar {
    Bar {
        ts,
        open,
        high,
        low,
        close,
        volume: 1000.0,
    }
}

pub(super) fn entry_order(
    id: &str,
    pipeline: &str,
    symbol: &str,
    side: Side,
    quantity: Decimal,
    stop_loss: Option<Decimal>,
    targets: &[(Decimal, Decimal)],
) -> EntryOrder {
    EntryOrder {
        client_order_id: id.to_string(),
        pipeline: pipeline.to_string(),
        symbol: symbol.to_string(),
        side,
        quantity,
        order_type: OrderType::Market,
        expected_price: None,
        stop_loss,
        take_profits: targets
            .iter()
            .enumerate()
            .map(|(k, &(price, quantity))| TakeProfit {
                price,
                quantity,
                purpose: if k == 0 {
                    OrderPurpose::Target1
                } else {
                    OrderPurpose::Target2
                },
            })
            .collect(),
    }
}

fn entry(
    id: &str,
    side: Side,
    quantity: Decimal,
    stop_loss: Option<Decimal>,
    targets: &[(Decimal, Decimal)],
) -> Submit {
    Submit::Entry(approve_for_tests(entry_order(
        id, "p", "AAPL", side, quantity, stop_loss, targets,
    )))
}

pub(super) fn exit_order(
    id: &str,
    pipeline: &str,
    symbol: &str,
    position_side: PositionSide,
    quantity: Decimal,
    order_type: OrderType,
) -> Submit {
    Submit::Exit(ExitOrder {
        client_order_id: id.to_string(),
        pipeline: pipeline.to_string(),
        symbol: symbol.to_string(),
        position_side,
        quantity,
        order_type,
        purpose: OrderPurpose::ExitRule,
        oco_group: None,
    })
}

fn fills(events: &[BrokerEvent]) -> Vec<&Fill> {
    events
        .iter()
        .filter_map(|e| match e {
            BrokerEvent::Fill { fill, .. } => Some(fill),
            _ => None,
        })
        .collect()
}

fn cancelled(events: &[BrokerEvent]) -> Vec<(&str, &str)> {
    events
        .iter()
        .filter_map(|e| match e {
            BrokerEvent::Cancelled { order, reason } => {
                Some((order.client_order_id.as_str(), reason.as_str()))
            }
            _ => None,
        })
        .collect()
}

fn status(b: &SimBroker, id: &str) -> OrderStatus {
    b.order(id)
        .map(|o| o.status)
        .unwrap_or(OrderStatus::Rejected)
}

/// A long of 100 AAPL bought at the open of bar ts=1000 (open 100 → 100.1 with slippage),
/// with stop 95 and targets 50 @ 110 and 50 @ 120. Bar 1000 stays inside 99..101.
fn long_with_bracket() -> SimBroker {
    let mut b = SimBroker::new("sim", &config());
    b.submit(
        entry(
            "e1",
            Side::Buy,
            dec!(100),
            Some(dec!(95)),
            &[(dec!(110), dec!(50)), (dec!(120), dec!(50))],
        ),
        1000,
    )
    .unwrap();
    let ev = b.on_bar("AAPL", &bar(1000, 100.0, 101.0, 99.0, 100.0));
    assert_eq!(fills(&ev).len(), 1);
    b
}

#[test]
fn market_entry_fills_at_next_open_with_slippage_and_commission() {
    let mut b = SimBroker::new("sim", &config());
    let st = b
        .submit(entry("e1", Side::Buy, dec!(100), None, &[]), 1000)
        .unwrap();
    assert_eq!(st.status, OrderStatus::Accepted);
    assert_eq!(st.broker_order_id, "sim-1");
    assert_eq!(st.created_at, 1000);
    // A bar that started before the submission does not fill it; another symbol neither.
    assert!(
        b.on_bar("AAPL", &bar(940, 99.0, 99.5, 98.0, 99.2))
            .is_empty()
    );
    assert!(
        b.on_bar("MSFT", &bar(1000, 300.0, 301.0, 299.0, 300.0))
            .is_empty()
    );
    assert_eq!(status(&b, "e1"), OrderStatus::Accepted);

    let ev = b.on_bar("AAPL", &bar(1000, 100.0, 101.0, 99.5, 100.5));
    assert_eq!(
        fills(&ev),
        vec![&Fill {
            client_order_id: "e1".into(),
            broker_order_id: "sim-1".into(),
            fill_id: "sim-f1".into(),
            pipeline: "p".into(),
            symbol: "AAPL".into(),
            side: Side::Buy,
            quantity: dec!(100),
            price: dec!(100.1),
            // 100 × 0.005 = 0.5 < min 1
            commission: dec!(1),
            purpose: OrderPurpose::Entry,
            ts: 1000,
        }]
    );
    // The event carries the order after the fill; a bracket-less entry places no legs.
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].order().status, OrderStatus::Filled);
    let o = b.order("e1").unwrap();
    assert_eq!(o.status, OrderStatus::Filled);
    assert_eq!(o.filled_quantity, dec!(100));
    assert_eq!(o.average_price, dec!(100.1));
    assert!(b.open_orders().is_empty());
    let acct = b.account();
    assert_eq!(acct.cash, dec!(89989)); // 100000 − 10010 − 1
    assert_eq!(acct.equity, dec!(100039)); // 89989 + 100 × 100.5
    assert_eq!(acct.commissions, dec!(1));
    assert_eq!(
        b.positions(),
        vec![Position {
            pipeline: "p".into(),
            symbol: "AAPL".into(),
            quantity: dec!(100),
            average_price: dec!(100.1),
            market_price: dec!(100.5),
        }]
    );
    // No open orders: the fast path still marks at each close.
    assert!(
        b.on_bar("AAPL", &bar(1060, 101.0, 121.0, 100.0, 120.25))
            .is_empty()
    );
    assert_eq!(b.account().equity, dec!(89989) + dec!(12025));
    assert_eq!(b.positions()[0].market_price, dec!(120.25));
    b.mark("AAPL", dec!(119));
    assert_eq!(b.account().equity, dec!(89989) + dec!(11900));
}

#[test]
fn sell_market_fills_below_the_open() {
    let mut b = SimBroker::new("sim", &config());
    b.submit(entry("s1", Side::Sell, dec!(1000), None, &[]), 0)
        .unwrap();
    let ev = b.on_bar("AAPL", &bar(0, 50.0, 51.0, 49.0, 50.0));
    let f = fills(&ev);
    assert_eq!(f[0].price, dec!(49.95)); // 50 × 0.999
    assert_eq!(f[0].commission, dec!(5)); // 1000 × 0.005
}

#[test]
fn bar_prices_are_rounded_to_six_decimals() {
    assert_eq!(bar_price(100.37), Some(dec!(100.37)));
    assert_eq!(bar_price(0.1), Some(dec!(0.1)));
    assert_eq!(bar_price(12.3456789), Some(dec!(12.345679)));
    assert_eq!(bar_price(f64::NAN), None);
    assert_eq!(bar_price(f64::INFINITY), None);
    assert_eq!(bar_price(2e12), None);
}

#[test]
fn stop_fills_at_stop_price_less_slippage() {
    let mut b = long_with_bracket();
    let sl = b.order("e1-sl").unwrap();
    assert_eq!(sl.order_type, OrderType::Stop { price: dec!(95) });
    assert_eq!(sl.quantity, dec!(100));
    assert_eq!(sl.side, Side::Sell);
    assert_eq!(sl.oco_group.as_deref(), Some("e1"));
    assert_eq!(sl.purpose, OrderPurpose::StopLoss);
    let ev = b.on_bar("AAPL", &bar(1060, 97.0, 98.0, 94.0, 96.0));
    let f = fills(&ev);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].client_order_id, "e1-sl");
    assert_eq!(f[0].price, dec!(94.905)); // 95 × 0.999
    assert!(b.positions().is_empty());
}

#[test]
fn gap_through_stop_fills_at_the_open() {
    let mut b = long_with_bracket();
    let ev = b.on_bar("AAPL", &bar(1060, 90.0, 91.0, 89.0, 90.0));
    let f = fills(&ev);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].client_order_id, "e1-sl");
    assert_eq!(f[0].price, dec!(89.91)); // open 90 × 0.999, not the stop 95
    assert_eq!(f[0].ts, 1060);
    // cash: 100000 − 10010 − 1 + 8991 − 1
    assert_eq!(b.account().cash, dec!(98979));
    assert_eq!(b.account().equity, dec!(98979));

    // A short's buy stop gapping up fills at the open plus slippage.
    let mut b = SimBroker::new("sim", &config());
    b.submit(entry("s1", Side::Sell, dec!(10), Some(dec!(105)), &[]), 0)
        .unwrap();
    b.on_bar("AAPL", &bar(0, 100.0, 101.0, 99.0, 100.0));
    let ev = b.on_bar("AAPL", &bar(60, 110.0, 112.0, 109.0, 111.0));
    assert_eq!(fills(&ev)[0].price, dec!(110.11));
    assert_eq!(fills(&ev)[0].side, Side::Buy);
}

#[test]
fn target_fills_at_limit_or_better_gap_without_slippage() {
    let mut b = long_with_bracket();
    let ev = b.on_bar("AAPL", &bar(1060, 105.0, 111.0, 104.0, 110.5));
    let f = fills(&ev);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].client_order_id.as_str(), f[0].quantity, f[0].price),
        ("e1-t1", dec!(50), dec!(110))
    );
    // The second target gaps: the bar opens at 125 above the 120 limit.
    let ev = b.on_bar("AAPL", &bar(1120, 125.0, 126.0, 124.0, 125.0));
    let f = fills(&ev);
    assert_eq!(
        (f[0].client_order_id.as_str(), f[0].quantity, f[0].price),
        ("e1-t2", dec!(50), dec!(125))
    );
    // Flat: the stop is cancelled.
    assert_eq!(status(&b, "e1-sl"), OrderStatus::Cancelled);
    assert_eq!(
        cancelled(&ev),
        vec![("e1-sl", "position closed: no long position of p in AAPL")]
    );
    assert!(b.open_orders().is_empty());
    // 100000 − 10011 + (5500 − 1) + (6250 − 1)
    assert_eq!(b.account().cash, dec!(101737));
}

#[test]
fn stop_and_target_in_one_bar_executes_only_the_stop() {
    let mut b = long_with_bracket();
    let ev = b.on_bar("AAPL", &bar(1060, 100.0, 121.0, 94.0, 100.0));
    let f = fills(&ev);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].client_order_id, "e1-sl");
    assert_eq!(f[0].quantity, dec!(100));
    assert_eq!(f[0].price, dec!(94.905));
    assert_eq!(
        cancelled(&ev),
        vec![
            ("e1-t1", "oco: stop e1-sl filled"),
            ("e1-t2", "oco: stop e1-sl filled")
        ]
    );
    assert_eq!(status(&b, "e1-t1"), OrderStatus::Cancelled);
    assert_eq!(status(&b, "e1-t2"), OrderStatus::Cancelled);
    assert!(b.positions().is_empty());
    assert!(b.open_orders().is_empty());
}

#[test]
fn children_work_in_the_entry_bar() {
    let mut b = SimBroker::new("sim", &config());
    b.submit(
        entry(
            "e1",
            Side::Buy,
            dec!(100),
            Some(dec!(95)),
            &[(dec!(110), dec!(100))],
        ),
        1000,
    )
    .unwrap();
    // Entry at the open, then the low reaches the stop in the same bar (and the high the
    // target: the stop wins).
    let ev = b.on_bar("AAPL", &bar(1000, 100.0, 111.0, 94.0, 96.0));
    let ids: Vec<&str> = fills(&ev)
        .iter()
        .map(|f| f.client_order_id.as_str())
        .collect();
    assert_eq!(ids, vec!["e1", "e1-sl"]);
    assert_eq!(cancelled(&ev), vec![("e1-t1", "oco: stop e1-sl filled")]);
    assert!(b.positions().is_empty());
}

#[test]
fn target1_fill_reduces_the_stop_then_breakeven_stop_fills() {
    let mut b = long_with_bracket();
    let ev = b.on_bar("AAPL", &bar(1060, 105.0, 112.0, 104.0, 111.0));
    let f = fills(&ev);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].client_order_id, "e1-t1");
    assert!(cancelled(&ev).is_empty());
    // The target did not cancel the stop; its quantity follows the position.
    let sl = b.order("e1-sl").unwrap();
    assert_eq!(sl.status, OrderStatus::Accepted);
    assert_eq!(sl.quantity, dec!(50));
    assert_eq!(b.order("e1-t2").unwrap().quantity, dec!(50));
    assert_eq!(b.positions()[0].quantity, dec!(50));

    b.replace_stop("e1-sl", dec!(100.1), dec!(50)).unwrap();
    assert_eq!(
        b.order("e1-sl").unwrap().order_type,
        OrderType::Stop { price: dec!(100.1) }
    );
    // Above the new stop: nothing.
    assert!(
        b.on_bar("AAPL", &bar(1120, 104.0, 106.0, 101.0, 103.0))
            .is_empty()
    );
    let ev = b.on_bar("AAPL", &bar(1180, 101.0, 102.0, 99.0, 100.0));
    let f = fills(&ev);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].client_order_id.as_str(), f[0].quantity, f[0].price),
        ("e1-sl", dec!(50), dec!(99.9999)) // 100.1 × 0.999
    );
    assert_eq!(cancelled(&ev), vec![("e1-t2", "oco: stop e1-sl filled")]);
    // 100000 − 10011 + (5500 − 1) + (4999.995 − 1)
    assert_eq!(b.account().cash, dec!(100486.995));
    assert_eq!(b.account().equity, dec!(100486.995));
    assert_eq!(b.account().commissions, dec!(3));
}

#[test]
fn oco_is_per_group_and_the_conservative_rule_per_position() {
    let mut b = SimBroker::new("sim", &config());
    let e = |id: &str, p: &str, stop| {
        Submit::Entry(approve_for_tests(entry_order(
            id,
            p,
            "AAPL",
            Side::Buy,
            dec!(10),
            Some(stop),
            &[(dec!(105), dec!(10))],
        )))
    };
    b.submit(e("a", "p1", dec!(95)), 0).unwrap();
    b.submit(e("b", "p2", dec!(90)), 0).unwrap();
    b.on_bar("AAPL", &bar(0, 100.0, 101.0, 99.0, 100.0));
    // The low hits p1's stop only; the high hits both targets: p1's target is not taken (its
    // stop executed in this bar), p2's is.
    let ev = b.on_bar("AAPL", &bar(60, 100.0, 106.0, 94.0, 100.0));
    let ids: Vec<&str> = fills(&ev)
        .iter()
        .map(|f| f.client_order_id.as_str())
        .collect();
    assert_eq!(ids, vec!["a-sl", "b-t1"]);
    assert_eq!(
        cancelled(&ev),
        vec![
            ("a-t1", "oco: stop a-sl filled"),
            ("b-sl", "position closed: no long position of p2 in AAPL")
        ]
    );
    assert!(b.positions().is_empty());
}

#[test]
fn replace_stop_checks_its_order() {
    let mut b = long_with_bracket();
    assert_eq!(
        b.replace_stop("nope", dec!(90), dec!(1)),
        Err(BrokerError::UnknownOrder("nope".into()))
    );
    assert!(matches!(
        b.replace_stop("e1-t1", dec!(90), dec!(50)),
        Err(BrokerError::Rejected { .. })
    ));
    assert!(matches!(
        b.replace_stop("e1", dec!(90), dec!(50)),
        Err(BrokerError::Rejected { .. })
    ));
    assert!(matches!(
        b.replace_stop("e1-sl", dec!(-1), dec!(50)),
        Err(BrokerError::Rejected { .. })
    ));
    assert!(matches!(
        b.replace_stop("e1-sl", dec!(90), dec!(0.5)),
        Err(BrokerError::Rejected { .. })
    ));
    // A quantity above the position is cut to it.
    b.replace_stop("e1-sl", dec!(97), dec!(500)).unwrap();
    let sl = b.order("e1-sl").unwrap();
    assert_eq!(sl.order_type, OrderType::Stop { price: dec!(97) });
    assert_eq!(sl.quantity, dec!(100));
    let ev = b.on_bar("AAPL", &bar(1060, 98.0, 99.0, 96.0, 97.0));
    assert_eq!(fills(&ev)[0].price, dec!(96.903)); // 97 × 0.999
}

#[test]
fn short_round_trip_profit_and_loss() {
    let mut b = SimBroker::new("sim", &config());
    b.submit(entry("s1", Side::Sell, dec!(100), None, &[]), 0)
        .unwrap();
    let ev = b.on_bar("AAPL", &bar(0, 50.0, 51.0, 47.0, 48.0));
    assert_eq!(fills(&ev)[0].price, dec!(49.95));
    let acct = b.account();
    assert_eq!(acct.cash, dec!(104994)); // 100000 + 4995 − 1
    assert_eq!(acct.equity, dec!(100194)); // 104994 − 100 × 48
    let pos = &b.positions()[0];
    assert_eq!(pos.quantity, dec!(-100));
    assert_eq!(pos.side(), Some(PositionSide::Short));
    assert_eq!(pos.unrealized_pnl(), dec!(195)); // (48 − 49.95) × −100

    b.submit(
        exit_order(
            "x1",
            "p",
            "AAPL",
            PositionSide::Short,
            dec!(100),
            OrderType::Market,
        ),
        60,
    )
    .unwrap();
    let ev = b.on_bar("AAPL", &bar(60, 40.0, 41.0, 39.0, 40.0));
    let f = fills(&ev);
    assert_eq!((f[0].side, f[0].price), (Side::Buy, dec!(40.04)));
    // (49.95 − 40.04) × 100 − 2 commissions = 989
    assert_eq!(b.account().cash, dec!(100989));
    assert_eq!(b.account().equity, dec!(100989));
    assert!(b.positions().is_empty());
}

#[test]
fn commission_is_per_fill_with_a_minimum() {
    let mut b = SimBroker::new("sim", &config());
    for (k, q) in [dec!(10), dec!(300), dec!(1000)].into_iter().enumerate() {
        b.submit(entry(&format!("e{k}"), Side::Buy, q, None, &[]), 0)
            .unwrap();
    }
    let ev = b.on_bar("AAPL", &bar(0, 10.0, 10.0, 10.0, 10.0));
    let c: Vec<Decimal> = fills(&ev).iter().map(|f| f.commission).collect();
    assert_eq!(c, vec![dec!(1), dec!(1.5), dec!(5)]);
    assert_eq!(b.account().commissions, dec!(7.5));
}

#[test]
fn submit_is_idempotent_by_client_order_id() {
    let mut b = SimBroker::new("sim", &config());
    let first = b
        .submit(entry("e1", Side::Buy, dec!(100), Some(dec!(95)), &[]), 0)
        .unwrap();
    let again = b
        .submit(entry("e1", Side::Buy, dec!(999), None, &[]), 30)
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(b.open_orders().len(), 1);
    b.on_bar("AAPL", &bar(0, 100.0, 101.0, 99.0, 100.0));
    let after = b
        .submit(entry("e1", Side::Buy, dec!(100), Some(dec!(95)), &[]), 60)
        .unwrap();
    assert_eq!(after.status, OrderStatus::Filled);
    assert_eq!(after.filled_quantity, dec!(100));
    let ev = b.on_bar("AAPL", &bar(60, 100.0, 101.0, 99.0, 100.0));
    assert!(ev.is_empty());
    assert_eq!(b.positions()[0].quantity, dec!(100));
    // Only the entry and its stop exist.
    assert_eq!(b.snapshot().orders.len(), 2);

    // A rejected order stays rejected.
    let mut cfg = config();
    cfg.reject_pct = Percent(dec!(100));
    let mut b = SimBroker::new("sim", &cfg);
    let r = b
        .submit(entry("e1", Side::Buy, dec!(1), None, &[]), 0)
        .unwrap();
    assert_eq!(r.status, OrderStatus::Rejected);
    assert_eq!(
        r.reason.as_deref(),
        Some("simulated rejection (reject_pct 100%)")
    );
    assert_eq!(
        b.submit(entry("e1", Side::Buy, dec!(1), None, &[]), 0)
            .unwrap(),
        r
    );
    assert!(b.open_orders().is_empty());
    assert!(b.on_bar("AAPL", &bar(0, 1.0, 1.0, 1.0, 1.0)).is_empty());
}

#[test]
fn exits_are_reduce_only() {
    let mut b = long_with_bracket();
    // Larger than the position: cut to it, the rest cancelled, never short.
    b.submit(
        exit_order(
            "x1",
            "p",
            "AAPL",
            PositionSide::Long,
            dec!(150),
            OrderType::Market,
        ),
        1060,
    )
    .unwrap();
    let ev = b.on_bar("AAPL", &bar(1060, 100.0, 101.0, 99.0, 100.0));
    let f = fills(&ev);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].quantity, f[0].price), (dec!(100), dec!(99.9)));
    let c = cancelled(&ev);
    assert_eq!(c[0], ("x1", "reduce-only: the rest exceeds the position"));
    // Flat: the bracket is cancelled.
    assert_eq!(
        c[1..].iter().map(|c| c.0).collect::<Vec<_>>(),
        vec!["e1-sl", "e1-t1", "e1-t2"]
    );
    let x1 = b.order("x1").unwrap();
    assert_eq!(
        (x1.status, x1.filled_quantity),
        (OrderStatus::Cancelled, dec!(100))
    );
    assert!(b.positions().is_empty());

    // No position: nothing executes.
    b.submit(
        exit_order(
            "x2",
            "p",
            "AAPL",
            PositionSide::Long,
            dec!(5),
            OrderType::Market,
        ),
        1120,
    )
    .unwrap();
    let ev = b.on_bar("AAPL", &bar(1120, 100.0, 101.0, 99.0, 100.0));
    assert_eq!(
        cancelled(&ev),
        vec![("x2", "reduce-only: no long position of p in AAPL")]
    );
    assert_eq!(ev.len(), 1);
}

#[test]
fn exits_of_one_pipeline_never_touch_another() {
    let mut b = SimBroker::new("sim", &config());
    for p in ["p1", "p2"] {
        b.submit(
            Submit::Entry(approve_for_tests(entry_order(
                &format!("{p}-e"),
                p,
                "AAPL",
                Side::Buy,
                dec!(10),
                None,
                &[],
            ))),
            0,
        )
        .unwrap();
    }
    b.submit(
        exit_order(
            "x",
            "p2",
            "AAPL",
            PositionSide::Long,
            dec!(50),
            OrderType::Market,
        ),
        0,
    )
    .unwrap();
    b.on_bar("AAPL", &bar(0, 100.0, 100.0, 100.0, 100.0));
    let pos = b.positions();
    assert_eq!(pos.len(), 1);
    assert_eq!(
        (pos[0].pipeline.as_str(), pos[0].quantity),
        ("p1", dec!(10))
    );
    // A short exit of a long position is cancelled too.
    b.submit(
        exit_order(
            "y",
            "p1",
            "AAPL",
            PositionSide::Short,
            dec!(5),
            OrderType::Market,
        ),
        60,
    )
    .unwrap();
    let ev = b.on_bar("AAPL", &bar(60, 100.0, 100.0, 100.0, 100.0));
    assert_eq!(cancelled(&ev)[0].0, "y");
    assert_eq!(b.positions()[0].quantity, dec!(10));
}

#[test]
fn market_exit_partly_closing_cuts_the_stop() {
    let mut b = long_with_bracket();
    b.submit(
        exit_order(
            "x1",
            "p",
            "AAPL",
            PositionSide::Long,
            dec!(70),
            OrderType::Market,
        ),
        1060,
    )
    .unwrap();
    b.on_bar("AAPL", &bar(1060, 100.0, 101.0, 99.0, 100.0));
    assert_eq!(b.positions()[0].quantity, dec!(30));
    assert_eq!(b.order("e1-sl").unwrap().quantity, dec!(30));
    assert_eq!(b.order("e1-t1").unwrap().quantity, dec!(30));
    assert_eq!(b.order("e1-t2").unwrap().quantity, dec!(30));
}

#[test]
fn entry_against_an_open_position_is_cancelled() {
    let mut b = long_with_bracket();
    b.submit(entry("e2", Side::Sell, dec!(10), None, &[]), 1060)
        .unwrap();
    let ev = b.on_bar("AAPL", &bar(1060, 100.0, 101.0, 99.0, 100.0));
    assert_eq!(
        cancelled(&ev),
        vec![(
            "e2",
            "entry sell would net against the open long position of p in AAPL"
        )]
    );
    assert_eq!(b.positions()[0].quantity, dec!(100));
}

#[test]
fn limit_entry_fills_at_its_price_and_places_its_bracket() {
    let mut b = SimBroker::new("sim", &config());
    let mut e = entry_order(
        "e1",
        "p",
        "AAPL",
        Side::Buy,
        dec!(100),
        Some(dec!(90)),
        &[(dec!(99), dec!(30))],
    );
    e.order_type = OrderType::Limit { price: dec!(95) };
    b.submit(Submit::Entry(approve_for_tests(e)), 0).unwrap();
    assert!(
        b.on_bar("AAPL", &bar(0, 100.0, 101.0, 96.0, 97.0))
            .is_empty()
    );
    let ev = b.on_bar("AAPL", &bar(60, 97.0, 98.0, 94.0, 95.0));
    let f = fills(&ev);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].price, dec!(95));
    assert_eq!(b.order("e1-sl").unwrap().quantity, dec!(100));
    assert_eq!(b.order("e1-t1").unwrap().quantity, dec!(30));
    assert!(b.order("e1-t2").is_none());
    // Next bar opens above the target: 30 at the open.
    let ev = b.on_bar("AAPL", &bar(120, 100.0, 101.0, 99.5, 100.0));
    assert_eq!(fills(&ev)[0].price, dec!(100));
    assert_eq!(b.positions()[0].quantity, dec!(70));
    assert_eq!(b.order("e1-sl").unwrap().quantity, dec!(70));
}

#[test]
fn partial_entry_fill_scales_the_bracket() {
    let mut cfg = config();
    cfg.partial_fill_pct = Percent(dec!(100));
    for seed in 0..20 {
        cfg.seed = seed;
        let mut b = SimBroker::new("sim", &cfg);
        b.submit(
            entry(
                "e1",
                Side::Buy,
                dec!(100),
                Some(dec!(50)),
                &[(dec!(200), dec!(30)), (dec!(300), dec!(70))],
            ),
            0,
        )
        .unwrap();
        let ev = b.on_bar("AAPL", &bar(0, 100.0, 101.0, 99.0, 100.0));
        let q = fills(&ev)[0].quantity;
        assert!(q >= dec!(1) && q <= dec!(99), "{q}");
        assert_eq!(
            cancelled(&ev),
            vec![("e1", "simulated partial fill (partial_fill_pct 100%)")]
        );
        let e1 = b.order("e1").unwrap();
        assert_eq!((e1.status, e1.filled_quantity), (OrderStatus::Cancelled, q));
        assert_eq!(b.order("e1-sl").unwrap().quantity, q);
        let t1 = (q * dec!(30) / dec!(100)).floor();
        match b.order("e1-t1") {
            Some(o) => assert_eq!(o.quantity, t1),
            None => assert!(t1.is_zero()),
        }
        assert_eq!(b.order("e1-t2").unwrap().quantity, q - t1);
    }
}

#[test]
fn invalid_orders_are_refused_and_not_recorded() {
    let mut b = SimBroker::new("sim", &config());
    let bad = [
        entry("a", Side::Buy, dec!(0), None, &[]),
        entry("b", Side::Buy, dec!(1.5), None, &[]),
        entry("c", Side::Buy, dec!(10), Some(dec!(0)), &[]),
        entry("d", Side::Buy, dec!(10), None, &[(dec!(110), dec!(11))]),
        entry("", Side::Buy, dec!(10), None, &[]),
        exit_order(
            "f",
            "p",
            "AAPL",
            PositionSide::Long,
            dec!(1),
            OrderType::Limit { price: dec!(-3) },
        ),
    ];
    for order in bad {
        let id = order.client_order_id().to_string();
        assert!(
            matches!(b.submit(order, 0), Err(BrokerError::Rejected { .. })),
            "{id}"
        );
        assert!(b.order(&id).is_none());
    }
    // Child ids are reserved.
    b.submit(
        exit_order(
            "g-sl",
            "p",
            "AAPL",
            PositionSide::Long,
            dec!(1),
            OrderType::Market,
        ),
        0,
    )
    .unwrap();
    assert!(matches!(
        b.submit(entry("g", Side::Buy, dec!(1), Some(dec!(1)), &[]), 0),
        Err(BrokerError::Rejected { .. })
    ));
}

#[test]
fn cancel_rules() {
    let mut b = long_with_bracket();
    assert_eq!(b.cancel("zz"), Err(BrokerError::UnknownOrder("zz".into())));
    assert!(matches!(b.cancel("e1"), Err(BrokerError::Rejected { .. })));
    b.cancel("e1-t2").unwrap();
    b.cancel("e1-t2").unwrap();
    assert_eq!(status(&b, "e1-t2"), OrderStatus::Cancelled);
    assert_eq!(b.open_orders().len(), 2);
    // The cancelled target does not fill.
    let ev = b.on_bar("AAPL", &bar(1060, 121.0, 122.0, 120.0, 121.0));
    let ids: Vec<&str> = fills(&ev)
        .iter()
        .map(|f| f.client_order_id.as_str())
        .collect();
    assert_eq!(ids, vec!["e1-t1"]);
}

/// Runs `n` random-ish market round trips and returns every submit answer and event.
pub(super) fn churn(
    cfg: &SimulatedBroker,
    n: usize,
) -> (Vec<OrderState>, Vec<BrokerEvent>, SimBroker) {
    let mut b = SimBroker::new("sim", cfg);
    let mut states = Vec::new();
    let mut events = Vec::new();
    for k in 0..n {
        let ts = 60 * k as i64;
        let qty = Decimal::from(10 + (k * 37) % 90);
        let order = if k % 2 == 0 {
            entry(&format!("e{k}"), Side::Buy, qty, Some(dec!(1)), &[])
        } else {
            exit_order(
                &format!("x{k}"),
                "p",
                "AAPL",
                PositionSide::Long,
                qty,
                OrderType::Market,
            )
        };
        states.push(b.submit(order, ts).unwrap());
        let px = 100.0 + (k % 13) as f64;
        events.extend(b.on_bar("AAPL", &bar(ts, px, px + 1.0, px - 1.0, px + 0.5)));
    }
    (states, events, b)
}

#[test]
fn partial_fills_and_rejections_are_reproducible_from_the_seed() {
    let mut cfg = config();
    cfg.reject_pct = Percent(dec!(20));
    cfg.partial_fill_pct = Percent(dec!(30));
    let (s1, e1, _) = churn(&cfg, 1000);
    let (s2, e2, _) = churn(&cfg, 1000);
    assert_eq!(s1, s2);
    assert_eq!(e1, e2);
    cfg.seed = 8;
    let (s3, e3, _) = churn(&cfg, 1000);
    assert_ne!(s1, s3);
    assert_ne!(e1, e3);

    for (states, events) in [(&s1, &e1), (&s3, &e3)] {
        let rejected = states
            .iter()
            .filter(|s| s.status == OrderStatus::Rejected)
            .count();
        // 1000 draws at 20 %: mean 200, standard deviation 12.6.
        assert!((160..=240).contains(&rejected), "{rejected} rejections");
        let partial = events
            .iter()
            .filter(|e| {
                matches!(e, BrokerEvent::Cancelled { reason, .. } if reason.starts_with("simulated partial"))
            })
            .count();
        assert!(partial > 50, "{partial} partial fills");
    }
}

#[test]
fn snapshot_and_restore_mid_run_continue_identically() {
    let mut cfg = config();
    cfg.reject_pct = Percent(dec!(10));
    cfg.partial_fill_pct = Percent(dec!(40));
    let (_, _, mut a) = churn(&cfg, 301);
    let json = serde_json::to_string(&a.snapshot()).unwrap();
    let state: SimState = serde_json::from_str(&json).unwrap();
    assert_eq!(state, a.snapshot());
    let mut b = SimBroker::restore("sim", &cfg, state);
    assert_eq!(b.account(), a.account());
    assert_eq!(b.positions(), a.positions());
    assert_eq!(b.open_orders(), a.open_orders());
    for k in 301..700 {
        let ts = 60 * k as i64;
        let order = || {
            if k % 3 == 0 {
                entry(
                    &format!("r{k}"),
                    Side::Buy,
                    dec!(57),
                    Some(dec!(99.5)),
                    &[(dec!(104), dec!(20))],
                )
            } else {
                exit_order(
                    &format!("q{k}"),
                    "p",
                    "AAPL",
                    PositionSide::Long,
                    dec!(33),
                    OrderType::Market,
                )
            }
        };
        assert_eq!(a.submit(order(), ts), b.submit(order(), ts));
        let px = 100.0 + (k % 7) as f64;
        let bar = bar(ts, px, px + 3.5, px - 1.25, px + 0.5);
        assert_eq!(a.on_bar("AAPL", &bar), b.on_bar("AAPL", &bar));
    }
    assert_eq!(a.snapshot(), b.snapshot());
    assert!(a.snapshot().fills > 300);
}

#[tokio::test]
async fn shared_broker_implements_the_trait() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let clock = std::sync::Arc::new(AtomicI64::new(1000));
    let c = clock.clone();
    let shared = SharedSimBroker::new(
        SimBroker::new("paper", &config()),
        std::sync::Arc::new(move || c.load(Ordering::SeqCst)),
    );
    let broker: &dyn Broker = &shared;
    let mut events = broker.take_events().unwrap();
    assert!(broker.take_events().is_none());
    assert_eq!(broker.name(), "paper");
    let st = broker
        .submit(entry("e1", Side::Buy, dec!(100), Some(dec!(95)), &[]))
        .await
        .unwrap();
    assert_eq!(st.created_at, 1000);
    assert_eq!(
        broker
            .submit(entry("e1", Side::Buy, dec!(100), None, &[]))
            .await
            .unwrap(),
        st
    );
    // One Accepted event, not two: the second submission created nothing.
    let drain = |rx: &mut crate::broker::EventStream| {
        let mut v = Vec::new();
        while let Ok(e) = rx.try_recv() {
            v.push(e);
        }
        v
    };
    let ev = drain(&mut events);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind(), "accepted");
    // Submitted at 1000: the bar of 940 is too early.
    broker
        .on_bar("AAPL", &bar(940, 1.0, 1.0, 1.0, 1.0))
        .await
        .unwrap();
    assert!(drain(&mut events).is_empty());
    clock.store(1060, Ordering::SeqCst);
    broker
        .on_bar("AAPL", &bar(1000, 100.0, 101.0, 99.0, 100.0))
        .await
        .unwrap();
    let ev = drain(&mut events);
    assert_eq!(fills(&ev).len(), 1);
    // The stop leg is reported as accepted in the same pass as the entry's fill.
    assert_eq!(
        ev.iter()
            .map(|e| (e.kind(), e.order().client_order_id.as_str()))
            .collect::<Vec<_>>(),
        vec![("fill", "e1"), ("accepted", "e1-sl")]
    );
    assert_eq!(broker.positions().await.unwrap()[0].quantity, dec!(100));
    assert_eq!(broker.account().await.unwrap().cash, dec!(89989));
    let open = broker.open_orders().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].client_order_id, "e1-sl");
    broker
        .replace_stop("e1-sl", dec!(99), dec!(100))
        .await
        .unwrap();
    assert_eq!(
        broker.order("e1-sl").await.unwrap().unwrap().order_type,
        OrderType::Stop { price: dec!(99) }
    );
    broker.cancel("e1-sl").await.unwrap();
    assert!(broker.open_orders().await.unwrap().is_empty());
    assert_eq!(
        drain(&mut events)
            .iter()
            .map(|e| e.kind())
            .collect::<Vec<_>>(),
        vec!["replaced", "cancelled"]
    );
    let snap = shared.state().unwrap();
    let raw = broker.snapshot().unwrap();
    assert_eq!(
        serde_json::from_str::<super::SimState>(raw.get()).unwrap(),
        snap
    );
}

/// Positions written into a vector that holds other, stale or more positions are exactly
/// `positions()`: in order, with the names copied where they changed and the rest dropped.
#[test]
fn positions_into_a_reused_vector_are_the_positions() {
    let mut b = SimBroker::new("sim", &config());
    for (id, pipeline, symbol, ts) in [
        ("e1", "q", "MSFT", 1000),
        ("e2", "p", "AAPL", 1000),
        ("e3", "p", "MSFT", 1000),
    ] {
        b.submit(
            Submit::Entry(approve_for_tests(entry_order(
                id,
                pipeline,
                symbol,
                Side::Buy,
                dec!(10),
                None,
                &[],
            ))),
            ts,
        )
        .unwrap();
    }
    b.on_bar("MSFT", &bar(1000, 300.0, 301.0, 299.0, 300.5));
    b.on_bar("AAPL", &bar(1000, 100.0, 101.0, 99.5, 100.5));
    let want = b.positions();
    assert_eq!(want.len(), 3);
    let stale = Position {
        pipeline: "old".into(),
        symbol: "OLD".into(),
        quantity: dec!(1),
        average_price: dec!(1),
        market_price: dec!(1),
    };
    for mut reused in [
        Vec::new(),
        vec![stale.clone()],
        vec![stale.clone(); 5],
        want.iter().rev().cloned().collect(),
    ] {
        b.positions_into(&mut reused);
        assert_eq!(reused, want);
    }
    // Flat again: the vector empties.
    let mut reused = want.clone();
    SimBroker::new("sim", &config()).positions_into(&mut reused);
    assert!(reused.is_empty());
}
