//! The IBKR broker against a fake TWS / IB Gateway over real TCP, speaking the TWS API
//! protocol `ibapi` uses (handshake, length-prefixed protobuf frames): connect and account
//! check, brackets with our `order_ref`, fills, stop moves, cancels, rejections, the
//! emergency close, and the faults of a real session (a disconnect in the middle of an
//! order, 1100 / 1102, a restart with the store's orders).

mod fake_tws;

use fake_tws::FakeTws;
use rust_decimal::{Decimal, dec};
use std::time::{Duration, Instant};
use ztraded::broker::ibkr::{IbkrBroker, IbkrOptions};
use ztraded::broker::{
    Broker, BrokerError, BrokerEvent, EventStream, ExitOrder, OrderPurpose, OrderState,
    OrderStatus, OrderType, PositionSide, Submit, bracket_leg_id,
};
use ztraded::config::common::Percent;
use ztraded::config::risk::RiskPolicy;
use ztraded::config::settings::IbkrBroker as IbkrSettings;
use ztraded::domain::{Action, StrategySignal};
use ztraded::risk::{RiskInput, evaluate};

fn settings(fake: &FakeTws) -> IbkrSettings {
    IbkrSettings {
        host: "127.0.0.1".into(),
        port: fake.port(),
        client_id: 7,
        paper: Some(true),
        account: None,
    }
}

fn fast() -> IbkrOptions {
    IbkrOptions {
        ready_wait: Duration::from_secs(5),
        answer_timeout: Duration::from_millis(800),
        request_timeout: Duration::from_secs(3),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
    }
}

/// Logs of the broker and `ibapi` with `RUST_LOG` (e.g. `RUST_LOG=debug`).
fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn broker_with(fake: &FakeTws, known: Vec<OrderState>) -> IbkrBroker {
    init_log();
    IbkrBroker::new("ibkr-paper", &settings(fake), known, fast())
}

fn broker(fake: &FakeTws) -> IbkrBroker {
    broker_with(fake, Vec::new())
}

/// A risk-approved long AAPL entry at 100 (stop and targets as given), sized by the
/// default policy on $100,000: 50 shares.
fn entry(cid: &str, stop: Option<Decimal>, t1: Option<Decimal>, t2: Option<Decimal>) -> Submit {
    let policy = RiskPolicy {
        trade: ztraded::config::risk::TradeRules {
            require_stop_loss: false,
            min_reward_risk: 0.0,
            ..Default::default()
        },
        ..Default::default()
    };
    let signal = StrategySignal {
        action: Action::Buy,
        conviction: 80.0,
        entry_price: Some(dec!(100)),
        stop_loss: stop,
        target_1: t1,
        target_2: t2,
        reward_risk: None,
        reasoning: String::new(),
    };
    let (decision, approved) = evaluate(&RiskInput {
        policy: &policy,
        pipeline: "aapl-momentum",
        symbol: "AAPL",
        signal: &signal,
        equity: dec!(100000),
        positions: &[],
        day_pnl: Decimal::ZERO,
        halted: None,
        correlation: &|_, _| None,
        client_order_id: cid.to_string(),
        partial_exit_pct: Percent(dec!(50)),
        explain: false,
    });
    Submit::Entry(approved.unwrap_or_else(|| panic!("not approved: {decision:?}")))
}

fn exit(cid: &str, qty: Decimal, order_type: OrderType) -> Submit {
    Submit::Exit(ExitOrder {
        client_order_id: cid.into(),
        pipeline: "aapl-momentum".into(),
        symbol: "AAPL".into(),
        position_side: PositionSide::Long,
        quantity: qty,
        order_type,
        purpose: OrderPurpose::ExitRule,
        oco_group: None,
    })
}

async fn next_event(rx: &mut EventStream) -> BrokerEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no event within 5 s")
        .expect("event stream closed")
}

/// Events until one matches (returned last).
async fn until(rx: &mut EventStream, f: impl Fn(&BrokerEvent) -> bool) -> Vec<BrokerEvent> {
    let mut seen = Vec::new();
    loop {
        let e = next_event(rx).await;
        let done = f(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
}

/// Whatever arrives within `d`.
async fn drain(rx: &mut EventStream, d: Duration) -> Vec<BrokerEvent> {
    let mut seen = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(d, rx.recv()).await {
        seen.push(e);
    }
    seen
}

fn kinds(events: &[BrokerEvent]) -> Vec<(String, &'static str)> {
    events
        .iter()
        .map(|e| (e.order().client_order_id.clone(), e.kind()))
        .collect()
}

#[tokio::test]
async fn connects_checks_the_paper_account_and_reads_balances() {
    let fake = FakeTws::start().await;
    fake.set_position("MSFT", 5.0, 300.0);
    fake.set_price("MSFT", 310.0);
    let b = broker(&fake);
    let started = Instant::now();
    let d = b.account_details().await.unwrap();
    println!(
        "connect + resync + account summary: {:?}",
        started.elapsed()
    );
    assert_eq!(d.account, "DU1234567");
    assert_eq!(d.server_version, fake_tws::SERVER_VERSION);
    assert_eq!(fake.client_ids(), vec![7]);
    assert_eq!(d.balances.cash, dec!(100000));
    assert_eq!(d.balances.equity, dec!(101550));
    assert_eq!(d.balances.buying_power, dec!(406200));
    // A position no pipeline opened is drift: reported with no owner.
    let p = b.positions().await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].symbol, "MSFT");
    assert_eq!(p[0].quantity, dec!(5));
    assert_eq!(p[0].average_price, dec!(300));
    assert_eq!(p[0].pipeline, "");
    assert!(b.open_orders().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_paper_broker_refuses_a_live_account() {
    let fake = FakeTws::with_account("U7654321").await;
    let b = broker(&fake);
    match b.account().await {
        Err(BrokerError::Unauthorized(m)) => {
            assert!(m.contains("U7654321") && m.contains("DU"), "{m}");
        }
        other => panic!("expected the account check to fail, got {other:?}"),
    }
    // No order can get through either.
    let r = b.submit(entry("zt-live", Some(dec!(98)), None, None)).await;
    assert!(matches!(r, Err(BrokerError::Unauthorized(_))), "{r:?}");
    assert!(fake.placed().is_empty());
}

#[tokio::test]
async fn a_bracket_carries_our_order_ref_and_its_legs_work_after_the_fill() {
    let fake = FakeTws::start().await;
    fake.set_price("AAPL", 100.05);
    let b = broker(&fake);
    let mut rx = b.take_events().unwrap();
    assert!(b.capabilities().brackets);

    let state = b
        .submit(entry(
            "zt-b1",
            Some(dec!(98)),
            Some(dec!(104)),
            Some(dec!(108)),
        ))
        .await
        .unwrap();
    assert_eq!(state.client_order_id, "zt-b1");
    assert_eq!(state.quantity, dec!(50));

    // Parent, two targets, then the stop, which transmits the group.
    let placed = fake.placed();
    assert_eq!(placed.len(), 4, "{placed:#?}");
    let refs: Vec<_> = placed
        .iter()
        .map(|o| o.order_ref.clone().unwrap())
        .collect();
    let sl = bracket_leg_id("zt-b1", OrderPurpose::StopLoss);
    let t1 = bracket_leg_id("zt-b1", OrderPurpose::Target1);
    let t2 = bracket_leg_id("zt-b1", OrderPurpose::Target2);
    assert_eq!(
        refs,
        vec!["zt-b1".to_string(), t1.clone(), t2.clone(), sl.clone()]
    );
    let transmit: Vec<_> = placed.iter().map(|o| o.transmit.unwrap_or(false)).collect();
    assert_eq!(transmit, vec![false, false, false, true]);
    let parent = fake.order_by_ref("zt-b1").unwrap().order_id;
    for child in &placed[1..] {
        assert_eq!(child.parent_id, Some(parent));
        assert_eq!(child.oca_group.as_deref(), Some("zt-b1"));
        assert_eq!(child.tif.as_deref(), Some("GTC"));
    }
    assert_eq!(placed[0].order_type.as_deref(), Some("MKT"));
    assert_eq!(placed[1].lmt_price, Some(104.0));
    assert_eq!(placed[1].total_quantity.as_deref(), Some("25"));
    assert_eq!(placed[3].aux_price, Some(98.0));
    assert_eq!(placed[3].total_quantity.as_deref(), Some("50"));
    assert_eq!(placed[0].account.as_deref(), Some("DU1234567"));

    let events = until(&mut rx, |e| e.kind() == "fill").await;
    let fill = events.last().unwrap().fill().unwrap().clone();
    assert_eq!(fill.client_order_id, "zt-b1");
    assert_eq!(fill.broker_order_id, parent.to_string());
    assert_eq!(fill.quantity, dec!(50));
    assert_eq!(fill.price, dec!(100.05));
    assert_eq!(fill.pipeline, "aapl-momentum");
    let rest = drain(&mut rx, Duration::from_millis(300)).await;
    let all: Vec<_> = kinds(&events).into_iter().chain(kinds(&rest)).collect();
    for leg in [&sl, &t1, &t2] {
        assert_eq!(
            all.iter()
                .filter(|(c, k)| c == leg && *k == "accepted")
                .count(),
            1,
            "{all:?}"
        );
    }
    assert_eq!(
        all.iter().filter(|(_, k)| *k == "fill").count(),
        1,
        "{all:?}"
    );

    let p = b.positions().await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].pipeline, "aapl-momentum");
    assert_eq!(p[0].quantity, dec!(50));
    let open: Vec<_> = b
        .open_orders()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.client_order_id)
        .collect();
    assert_eq!(open.len(), 3, "{open:?}");

    // Stop to breakeven: the same IB order placed again with the new price.
    b.replace_stop(&sl, dec!(100.05), dec!(50)).await.unwrap();
    let ev = until(&mut rx, |e| e.kind() == "replaced").await;
    let replaced = ev.last().unwrap().order();
    assert_eq!(replaced.client_order_id, sl);
    assert_eq!(
        replaced.order_type,
        OrderType::Stop {
            price: dec!(100.05)
        }
    );
    assert_eq!(fake.order_by_ref(&sl).unwrap().stop_price, Some(100.05));
    assert_eq!(fake.orders().len(), 4, "a modification is no new order");

    // The stop fills: the targets of its OCA group are cancelled.
    fake.trade("AAPL", 99.9);
    let ev = until(&mut rx, |e| e.kind() == "fill").await;
    assert_eq!(ev.last().unwrap().order().client_order_id, sl);
    let ev = drain(&mut rx, Duration::from_millis(300)).await;
    let k = kinds(&ev);
    assert!(k.contains(&(t1.clone(), "cancelled")), "{k:?}");
    assert!(k.contains(&(t2.clone(), "cancelled")), "{k:?}");
    assert!(b.positions().await.unwrap().is_empty());
    assert_eq!(
        b.order(&sl).await.unwrap().unwrap().status,
        OrderStatus::Filled
    );
    // Submitting the same id again creates nothing.
    let again = b
        .submit(entry(
            "zt-b1",
            Some(dec!(98)),
            Some(dec!(104)),
            Some(dec!(108)),
        ))
        .await
        .unwrap();
    assert_eq!(again.status, OrderStatus::Filled);
    assert_eq!(fake.placed().len(), 5);
}

#[tokio::test]
async fn cancels_and_rejections_are_reported() {
    let fake = FakeTws::start().await;
    fake.set_price("AAPL", 100.0);
    fake.set_position("AAPL", 40.0, 95.0);
    let b = broker(&fake);
    let mut rx = b.take_events().unwrap();

    let s = b
        .submit(exit(
            "zt-lmt",
            dec!(10),
            OrderType::Limit { price: dec!(120) },
        ))
        .await
        .unwrap();
    assert_eq!(s.status, OrderStatus::Accepted);
    assert_eq!(fake.order_by_ref("zt-lmt").unwrap().tif, "GTC");
    b.cancel("zt-lmt").await.unwrap();
    let ev = until(&mut rx, |e| e.kind() == "cancelled").await;
    assert_eq!(ev.last().unwrap().order().client_order_id, "zt-lmt");
    assert_eq!(fake.order_by_ref("zt-lmt").unwrap().status, "Cancelled");
    // Cancelling again is fine; an unknown id is not.
    b.cancel("zt-lmt").await.unwrap();
    assert_eq!(
        b.cancel("zt-nope").await,
        Err(BrokerError::UnknownOrder("zt-nope".into()))
    );

    fake.reject_next(
        201,
        "Order rejected - reason:The account is not allowed to short",
    );
    let s = b
        .submit(exit("zt-rej", dec!(10), OrderType::Market))
        .await
        .unwrap();
    assert_eq!(s.status, OrderStatus::Rejected);
    assert!(s.reason.as_deref().unwrap().contains("201"), "{s:?}");
    let ev = until(&mut rx, |e| e.kind() == "rejected").await;
    assert_eq!(ev.last().unwrap().order().client_order_id, "zt-rej");

    // Exits are reduce-only: cut to the 40 shares held; none for a symbol not held.
    b.submit(exit(
        "zt-big",
        dec!(500),
        OrderType::Limit { price: dec!(130) },
    ))
    .await
    .unwrap();
    assert_eq!(fake.order_by_ref("zt-big").unwrap().quantity, 40.0);
    let none = Submit::Exit(ExitOrder {
        client_order_id: "zt-none".into(),
        pipeline: "p".into(),
        symbol: "MSFT".into(),
        position_side: PositionSide::Long,
        quantity: dec!(5),
        order_type: OrderType::Market,
        purpose: OrderPurpose::ExitRule,
        oco_group: None,
    });
    let s = b.submit(none).await.unwrap();
    assert_eq!(s.status, OrderStatus::Rejected);
    assert!(fake.order_by_ref("zt-none").is_none());

    // An order IB cannot take is refused before it is sent.
    let s = b
        .submit(exit("zt-crypto", dec!(1), OrderType::Market))
        .await
        .unwrap();
    assert_eq!(s.status, OrderStatus::Accepted, "AAPL is a stock");
    let crypto = Submit::Exit(ExitOrder {
        client_order_id: "zt-btc".into(),
        pipeline: "p".into(),
        symbol: "BTC/USD".into(),
        position_side: PositionSide::Long,
        quantity: dec!(1),
        order_type: OrderType::Market,
        purpose: OrderPurpose::ExitRule,
        oco_group: None,
    });
    let s = b.submit(crypto).await.unwrap();
    assert_eq!(s.status, OrderStatus::Rejected);
    assert!(fake.order_by_ref("zt-btc").is_none());
}

#[tokio::test]
async fn a_disconnect_mid_order_is_resolved_by_order_ref_without_a_duplicate() {
    let fake = FakeTws::start().await;
    fake.set_price("AAPL", 101.0);
    // Reconnecting takes longer than the answer may: the submission's outcome is unknown.
    init_log();
    let options = IbkrOptions {
        reconnect_min: Duration::from_millis(1500),
        ..fast()
    };
    let b = IbkrBroker::new("ibkr-paper", &settings(&fake), Vec::new(), options);
    let mut rx = b.take_events().unwrap();
    b.account().await.unwrap();

    fake.drop_after_next_place();
    let r = b
        .submit(entry("zt-mid", Some(dec!(98)), Some(dec!(104)), None))
        .await;
    assert!(matches!(r, Err(BrokerError::Unavailable(_))), "{r:?}");
    // The gateway took the bracket and the entry filled while the answer was lost.
    assert_eq!(fake.order_by_ref("zt-mid").unwrap().status, "Filled");
    let placed = fake.placed().len();

    // After the reconnect the resync finds it by order_ref: its state, its fill once.
    let found = b
        .order("zt-mid")
        .await
        .unwrap()
        .expect("found after reconnect");
    assert_eq!(found.status, OrderStatus::Filled);
    assert_eq!(found.filled_quantity, dec!(50));
    assert!(fake.connections() >= 2);
    let again = b
        .submit(entry("zt-mid", Some(dec!(98)), Some(dec!(104)), None))
        .await
        .unwrap();
    assert_eq!(again.status, OrderStatus::Filled);
    assert_eq!(fake.placed().len(), placed, "nothing was sent twice");
    let ev = drain(&mut rx, Duration::from_millis(400)).await;
    let fills: Vec<_> = ev.iter().filter_map(|e| e.fill()).collect();
    assert_eq!(fills.len(), 1, "{:?}", kinds(&ev));
    assert_eq!(fills[0].client_order_id, "zt-mid");
    let legs = bracket_leg_id("zt-mid", OrderPurpose::StopLoss);
    assert!(kinds(&ev).contains(&(legs, "accepted")), "{:?}", kinds(&ev));
}

#[tokio::test]
async fn connectivity_lost_holds_submissions_until_restored() {
    let fake = FakeTws::start().await;
    fake.set_price("AAPL", 100.0);
    fake.set_position("AAPL", 40.0, 95.0);
    let b = std::sync::Arc::new(broker(&fake));
    b.account().await.unwrap();
    fake.notice(
        1100,
        "Connectivity between IB and Trader Workstation has been lost.",
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let b2 = b.clone();
    let task =
        tokio::spawn(async move { b2.submit(exit("zt-held", dec!(5), OrderType::Market)).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!task.is_finished(), "submitted while IB was unreachable");
    assert!(fake.order_by_ref("zt-held").is_none());
    fake.notice(
        1102,
        "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    );
    let s = task.await.unwrap().unwrap();
    assert_eq!(s.client_order_id, "zt-held");
    assert!(fake.order_by_ref("zt-held").is_some());
    // Data-farm notices are informational: the session stays up.
    fake.notice(2104, "Market data farm connection is OK:usfarm");
    b.account().await.unwrap();
    assert_eq!(fake.connections(), 1);
}

#[tokio::test]
async fn a_restart_knows_the_stores_orders_and_resyncs_fills_made_while_down() {
    let fake = FakeTws::start().await;
    fake.set_price("AAPL", 100.0);
    let known = {
        let b = broker(&fake);
        let mut rx = b.take_events().unwrap();
        b.submit(entry("zt-r1", Some(dec!(95)), None, None))
            .await
            .unwrap();
        let mut states = Vec::new();
        for e in drain(&mut rx, Duration::from_millis(300)).await {
            states.retain(|s: &OrderState| s.client_order_id != e.order().client_order_id);
            states.push(e.order().clone());
        }
        states
    };
    assert_eq!(known.len(), 2, "{known:?}");
    fake.disconnect();
    // While nobody is connected the stop fills.
    fake.trade("AAPL", 94.0);
    let b = broker_with(&fake, known);
    let mut rx = b.take_events().unwrap();
    let sl = bracket_leg_id("zt-r1", OrderPurpose::StopLoss);
    let ev = until(&mut rx, |e| e.kind() == "fill").await;
    let f = ev.last().unwrap().fill().unwrap();
    assert_eq!(f.client_order_id, sl);
    assert_eq!(f.purpose, OrderPurpose::StopLoss);
    assert_eq!(f.pipeline, "aapl-momentum");
    assert_eq!(f.price, dec!(94));
    // The entry's fill was booked before the restart: not reported again.
    let ev = drain(&mut rx, Duration::from_millis(300)).await;
    assert!(ev.iter().all(|e| e.fill().is_none()), "{:?}", kinds(&ev));
    let again = b
        .submit(entry("zt-r1", Some(dec!(95)), None, None))
        .await
        .unwrap();
    assert_eq!(again.status, OrderStatus::Filled);
    assert_eq!(fake.placed().len(), 2);
}

#[tokio::test]
async fn the_emergency_close_cancels_everything_and_flattens() {
    let fake = FakeTws::start().await;
    fake.set_price("AAPL", 100.0);
    let b = broker(&fake);
    let mut rx = b.take_events().unwrap();
    b.submit(entry("zt-e1", Some(dec!(95)), Some(dec!(110)), None))
        .await
        .unwrap();
    until(&mut rx, |e| e.kind() == "fill").await;
    let closes = b.close_all().await.unwrap();
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(closes[0].symbol, "AAPL");
    assert_eq!(closes[0].status, 200);
    let order = closes[0].order.as_ref().unwrap();
    assert_eq!(order.purpose, OrderPurpose::Emergency);
    assert_eq!(order.pipeline, "aapl-momentum");
    assert!(fake.positions().is_empty(), "{:?}", fake.positions());
    assert!(fake.orders().iter().all(|o| o.status != "Submitted"));
    let ev = drain(&mut rx, Duration::from_millis(400)).await;
    let k = kinds(&ev);
    assert!(
        k.contains(&(bracket_leg_id("zt-e1", OrderPurpose::StopLoss), "cancelled")),
        "{k:?}"
    );
    assert!(
        ev.iter().any(|e| e
            .fill()
            .is_some_and(|f| f.purpose == OrderPurpose::Emergency)),
        "{k:?}"
    );
}

#[tokio::test]
async fn unreachable_gateway_answers_unavailable_then_connects() {
    let fake = FakeTws::start().await;
    fake.refuse_connections(true);
    let mut options = fast();
    options.ready_wait = Duration::from_millis(500);
    let b = IbkrBroker::new("ibkr-paper", &settings(&fake), Vec::new(), options);
    let r = b.account().await;
    assert!(matches!(r, Err(BrokerError::Unavailable(_))), "{r:?}");
    fake.refuse_connections(false);
    let mut ok = false;
    for _ in 0..30 {
        if b.account().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "never connected");
}
