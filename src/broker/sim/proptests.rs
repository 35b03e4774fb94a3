//! Property tests: random price paths and random order flows keep the books exact.

use super::tests::{bar, config, entry_order, exit_order};
use super::*;
use crate::config::common::Percent;
use crate::risk::approve_for_tests;
use proptest::prelude::*;
use std::collections::HashMap;

const PIPELINES: [&str; 2] = ["p1", "p2"];
const SYMBOLS: [&str; 2] = ["AAA", "BBB"];

/// One bar's move in cents: gap from the previous close, close − open, wick up, wick down.
type Move = (i64, i64, i64, i64);

#[derive(Clone, Debug)]
enum Op {
    Entry {
        p: usize,
        s: usize,
        long: bool,
        qty: u32,
        /// 0 market, 1 limit, 2 stop.
        kind: u8,
        offset: i64,
        stop: Option<i64>,
        legs: u8,
        target: i64,
        split: u32,
    },
    Exit {
        p: usize,
        s: usize,
        long: bool,
        qty: u32,
        kind: u8,
        offset: i64,
    },
    Cancel {
        pick: usize,
    },
    MoveStop {
        pick: usize,
        offset: i64,
    },
}

#[derive(Clone, Debug)]
struct Step {
    moves: [Move; 2],
    ops: Vec<Op>,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            0..2usize,
            0..2usize,
            any::<bool>(),
            1..300u32,
            prop_oneof![3 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
            -500..500i64,
            prop::option::weighted(0.8, 1..1500i64),
            0..3u8,
            1..1500i64,
            0..=100u32,
        )
            .prop_map(|(p, s, long, qty, kind, offset, stop, legs, target, split)| Op::Entry {
                p,
                s,
                long,
                qty,
                kind,
                offset,
                stop,
                legs,
                target,
                split,
            }),
        2 => (0..2usize, 0..2usize, any::<bool>(), 1..400u32, 0..3u8, -500..500i64)
            .prop_map(|(p, s, long, qty, kind, offset)| Op::Exit {
                p,
                s,
                long,
                qty,
                kind,
                offset
            }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => (any::<usize>(), -500..500i64).prop_map(|(pick, offset)| Op::MoveStop { pick, offset }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let mv = || (-300..300i64, -400..400i64, 0..300i64, 0..300i64);
    ((mv(), mv()), prop::collection::vec(op(), 0..4))
        .prop_map(|((a, b), ops)| Step { moves: [a, b], ops })
}

fn sim_config() -> impl Strategy<Value = SimulatedBroker> {
    (
        prop_oneof![Just(dec!(0)), Just(dec!(0.1)), Just(dec!(0.37))],
        prop_oneof![Just(dec!(0)), Just(dec!(0.005))],
        prop_oneof![Just(dec!(0)), Just(dec!(1))],
        prop_oneof![Just(dec!(0)), Just(dec!(30))],
        prop_oneof![Just(dec!(0)), Just(dec!(10))],
        any::<u64>(),
    )
        .prop_map(|(slip, cps, min, partial, reject, seed)| SimulatedBroker {
            slippage_pct: Percent(slip),
            commission_per_share: cps,
            min_commission: min,
            partial_fill_pct: Percent(partial),
            reject_pct: Percent(reject),
            seed,
            ..config()
        })
}

fn cents(c: i64) -> Decimal {
    Decimal::new(c, 2)
}

/// Submits or applies `op` with reference prices `refs` (last closes in cents); returns a
/// printable outcome so two brokers can be compared. Records entries' stops in `has_stop`.
fn apply(
    b: &mut SimBroker,
    op: &Op,
    n: usize,
    ts: i64,
    refs: &[i64; 2],
    has_stop: &mut HashMap<String, bool>,
) -> String {
    match *op {
        Op::Entry {
            p,
            s,
            long,
            qty,
            kind,
            offset,
            stop,
            legs,
            target,
            split,
        } => {
            let r = refs[s];
            let dir = if long { 1 } else { -1 };
            let stop = stop.map(|d| r - dir * d).filter(|&c| c > 0).map(cents);
            let qty_d = Decimal::from(qty);
            let q1 = Decimal::from(qty * split / 100);
            let mut tps = Vec::new();
            let t1 = r + dir * target;
            let t2 = r + dir * 2 * target;
            if legs >= 1 && t1 > 0 && q1 > Decimal::ZERO {
                tps.push((cents(t1), q1));
            }
            if legs == 2 && t2 > 0 && qty_d - q1 > Decimal::ZERO {
                tps.push((cents(t2), qty_d - q1));
            }
            let id = format!("e{n}");
            let side = if long { Side::Buy } else { Side::Sell };
            let mut e = entry_order(&id, PIPELINES[p], SYMBOLS[s], side, qty_d, stop, &tps);
            let price = (r + offset).max(1);
            e.order_type = match kind {
                1 => OrderType::Limit {
                    price: cents(price),
                },
                2 => OrderType::Stop {
                    price: cents(price),
                },
                _ => OrderType::Market,
            };
            has_stop.insert(id, stop.is_some());
            format!("{:?}", b.submit(Submit::Entry(approve_for_tests(e)), ts))
        }
        Op::Exit {
            p,
            s,
            long,
            qty,
            kind,
            offset,
        } => {
            let price = cents((refs[s] + offset).max(1));
            let order_type = match kind {
                1 => OrderType::Limit { price },
                2 => OrderType::Stop { price },
                _ => OrderType::Market,
            };
            let side = if long {
                PositionSide::Long
            } else {
                PositionSide::Short
            };
            let x = exit_order(
                &format!("x{n}"),
                PIPELINES[p],
                SYMBOLS[s],
                side,
                Decimal::from(qty),
                order_type,
            );
            format!("{:?}", b.submit(x, ts))
        }
        Op::Cancel { pick } => {
            // Never a protective stop: the stop invariant below assumes they stay.
            let open: Vec<OrderState> = b
                .open_orders()
                .into_iter()
                .filter(|o| o.purpose != OrderPurpose::StopLoss)
                .collect();
            if open.is_empty() {
                return "none".into();
            }
            let id = &open[pick % open.len()].client_order_id;
            format!("{id} {:?}", b.cancel(id))
        }
        Op::MoveStop { pick, offset } => {
            let stops: Vec<OrderState> = b
                .open_orders()
                .into_iter()
                .filter(|o| o.purpose == OrderPurpose::StopLoss)
                .collect();
            if stops.is_empty() {
                return "none".into();
            }
            let o = &stops[pick % stops.len()];
            let OrderType::Stop { price } = o.order_type else {
                return "not a stop".into();
            };
            let new = (price + cents(offset)).max(dec!(0.01));
            format!(
                "{} {:?}",
                o.client_order_id,
                b.replace_stop(&o.client_order_id, new, o.quantity - o.filled_quantity)
            )
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn books_stay_exact_and_exits_never_flip(
        cfg in sim_config(),
        steps in prop::collection::vec(step(), 1..40),
        restore_at in prop::option::of(0..40usize),
    ) {
        let mut a = SimBroker::new("sim", &cfg);
        let mut b = SimBroker::new("sim", &cfg);
        let mut has_stop: HashMap<String, bool> = HashMap::new();
        let mut refs = [10_000i64, 2_500i64];
        let mut closes: [Option<Decimal>; 2] = [None, None];
        let mut cash = cfg.initial_balance;
        let mut commissions = Decimal::ZERO;
        let mut pos: HashMap<(String, String), Decimal> = HashMap::new();
        let mut protected: HashMap<(String, String), bool> = HashMap::new();
        let mut n = 0usize;

        for (k, step) in steps.iter().enumerate() {
            let ts = 1000 + 60 * k as i64;
            if restore_at == Some(k) {
                let json = serde_json::to_string(&b.snapshot()).unwrap();
                b = SimBroker::restore("sim", &cfg, serde_json::from_str(&json).unwrap());
            }
            for op in &step.ops {
                n += 1;
                let ra = apply(&mut a, op, n, ts, &refs, &mut has_stop);
                let rb = apply(&mut b, op, n, ts, &refs, &mut has_stop);
                prop_assert_eq!(ra, rb);
            }
            for s in 0..2 {
                let (gap, mv, up, down) = step.moves[s];
                let open = (refs[s] + gap).max(1);
                let close = (open + mv).max(1);
                let high = open.max(close) + up;
                let low = (open.min(close) - down).max(1);
                let f = |c: i64| c as f64 / 100.0;
                let bar = bar(ts, f(open), f(high), f(low), f(close));
                refs[s] = close;
                closes[s] = bar_price(bar.close);
                let events = a.on_bar(SYMBOLS[s], &bar);
                prop_assert_eq!(&events, &b.on_bar(SYMBOLS[s], &bar));
                for ev in &events {
                    let BrokerEvent::Fill { fill, .. } = ev else { continue };
                    prop_assert_eq!(&fill.symbol, SYMBOLS[s]);
                    prop_assert_eq!(fill.ts, ts);
                    let key = (fill.pipeline.clone(), fill.symbol.clone());
                    let before = pos.get(&key).copied().unwrap_or_default();
                    let after = before + fill.side.sign() * fill.quantity;
                    if fill.purpose == OrderPurpose::Entry {
                        // Entries only open or add.
                        prop_assert!(after.abs() > before.abs());
                        let stop = has_stop.get(&fill.client_order_id).copied().unwrap_or(false);
                        let p = protected.entry(key.clone()).or_insert(true);
                        *p = if before.is_zero() { stop } else { *p && stop };
                    } else {
                        prop_assert!(!before.is_zero(), "exit {} with no position", fill.client_order_id);
                        prop_assert!(after.abs() < before.abs());
                        prop_assert!(after.is_zero() || after.is_sign_negative() == before.is_sign_negative(),
                            "exit {} flipped {} to {}", fill.client_order_id, before, after);
                    }
                    pos.insert(key, after);
                    cash -= fill.side.sign() * fill.quantity * fill.price + fill.commission;
                    commissions += fill.commission;
                    prop_assert!(fill.commission >= cfg.min_commission);
                }
            }

            // Money: cash moves by exactly the fills and commissions.
            let acct = a.account();
            prop_assert_eq!(acct.cash, cash);
            prop_assert_eq!(acct.commissions, commissions);
            let positions = a.positions();
            let value: Decimal = positions.iter().map(Position::market_value).sum();
            prop_assert_eq!(acct.equity, acct.cash + value);
            let mut marked = cash;
            for ((_, symbol), q) in &pos {
                let s = SYMBOLS.iter().position(|x| x == symbol).unwrap();
                marked += *q * closes[s].unwrap();
            }
            prop_assert_eq!(acct.equity, marked);
            // Positions are exactly the fills.
            let mut expected: Vec<(String, String, Decimal)> = pos
                .iter()
                .filter(|(_, q)| !q.is_zero())
                .map(|((p, s), q)| (p.clone(), s.clone(), *q))
                .collect();
            expected.sort();
            let got: Vec<(String, String, Decimal)> = positions
                .iter()
                .map(|p| (p.pipeline.clone(), p.symbol.clone(), p.quantity))
                .collect();
            prop_assert_eq!(got, expected);
            // Every position whose entries all had a stop is covered by working stops.
            let open = a.open_orders();
            for ((p, s), q) in &pos {
                if q.is_zero() || !protected.get(&(p.clone(), s.clone())).copied().unwrap_or(false) {
                    continue;
                }
                let covered: Decimal = open
                    .iter()
                    .filter(|o| o.purpose == OrderPurpose::StopLoss && &o.pipeline == p && &o.symbol == s)
                    .map(|o| o.quantity - o.filled_quantity)
                    .sum();
                prop_assert!(covered >= q.abs(), "{p} {s}: position {q}, stops cover {covered}");
            }
            for o in &open {
                prop_assert!(o.filled_quantity < o.quantity);
                prop_assert!(o.status.is_open());
            }
        }
        prop_assert_eq!(a.snapshot(), b.snapshot());
    }
}
