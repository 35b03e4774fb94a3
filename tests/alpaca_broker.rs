//! The Alpaca broker against a fake Alpaca over real HTTP and websockets: every fault the
//! client must survive, the idempotency rules, brackets, replace, bulk close, pacing, and
//! the submit → fill latency.

mod fake_alpaca;

use fake_alpaca::{FakeAlpaca, KEY_ID, SECRET_KEY};
use rust_decimal::{Decimal, dec};
use std::time::{Duration, Instant};
use ztraded::broker::alpaca::{AlpacaBroker, AlpacaOptions, ClientOptions, Credentials};
use ztraded::broker::{
    Broker, BrokerError, BrokerEvent, EventStream, ExitOrder, OrderPurpose, OrderState,
    OrderStatus, OrderType, PositionSide, Submit, bracket_leg_id,
};
use ztraded::config::common::Percent;
use ztraded::config::risk::RiskPolicy;
use ztraded::config::settings::AlpacaBroker as AlpacaSettings;
use ztraded::domain::{Action, StrategySignal};
use ztraded::risk::{RiskInput, evaluate};

fn settings(fake: &FakeAlpaca) -> AlpacaSettings {
    AlpacaSettings {
        paper: true,
        key_id_env: "APCA_API_KEY_ID".into(),
        secret_key_env: "APCA_API_SECRET_KEY".into(),
        trading_url: Some(fake.trading_url()),
        stream_url: Some(fake.stream_url()),
        data_url: None,
        data_stream_url: None,
        feed: Default::default(),
    }
}

fn fast_options() -> AlpacaOptions {
    AlpacaOptions {
        client: ClientOptions {
            timeout: Duration::from_millis(400),
            rate_limit: 10_000,
            rate_period: Duration::from_secs(1),
            burst: 100,
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..ClientOptions::default()
        },
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
    }
}

fn creds() -> Credentials {
    Credentials {
        key_id: KEY_ID.into(),
        secret_key: SECRET_KEY.into(),
    }
}

fn broker_with(fake: &FakeAlpaca, known: Vec<OrderState>, options: AlpacaOptions) -> AlpacaBroker {
    AlpacaBroker::with_options("alpaca-paper", &settings(fake), creds(), known, options).unwrap()
}

fn broker(fake: &FakeAlpaca) -> AlpacaBroker {
    broker_with(fake, Vec::new(), fast_options())
}

/// A risk-approved long entry at 100 (stop and targets as given), sized by the default
/// policy on $100,000: 50 shares.
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

fn exit(cid: &str, qty: Decimal) -> Submit {
    Submit::Exit(ExitOrder {
        client_order_id: cid.into(),
        pipeline: "aapl-momentum".into(),
        symbol: "AAPL".into(),
        position_side: PositionSide::Long,
        quantity: qty,
        order_type: OrderType::Market,
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

/// Events until both legs of bracket `entry` were accepted.
async fn legs_live(rx: &mut EventStream, entry: &str) -> Vec<BrokerEvent> {
    let legs = [
        bracket_leg_id(entry, OrderPurpose::StopLoss),
        bracket_leg_id(entry, OrderPurpose::Target1),
    ];
    let mut seen: Vec<BrokerEvent> = Vec::new();
    while !legs.iter().all(|l| {
        seen.iter()
            .any(|e| e.kind() == "accepted" && e.order().client_order_id == *l)
    }) {
        seen.push(next_event(rx).await);
    }
    seen
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
async fn brackets_fill_place_their_legs_and_own_the_position() {
    let fake = FakeAlpaca::start().await;
    fake.add_position("MSFT", dec!(5), dec!(300));
    let b = broker(&fake);
    let mut rx = b.take_events().unwrap();
    fake.wait_stream_sessions(1).await;
    assert!(b.capabilities().brackets && b.capabilities().bulk_close);

    let state = b
        .submit(entry("zt-b1", Some(dec!(98)), Some(dec!(106)), None))
        .await
        .unwrap();
    assert_eq!(state.status, OrderStatus::Accepted);
    assert_eq!(state.quantity, dec!(50));
    let at_fake = fake.order("zt-b1").unwrap();
    assert_eq!(at_fake.order_class, "bracket");
    assert_eq!(at_fake.time_in_force, "gtc");
    assert_eq!(at_fake.legs.len(), 2);

    fake.fill("zt-b1", dec!(50), dec!(100.05));
    let events = legs_live(&mut rx, "zt-b1").await;
    let mut seen = kinds(&events);
    seen.sort();
    let sl = bracket_leg_id("zt-b1", OrderPurpose::StopLoss);
    let t1 = bracket_leg_id("zt-b1", OrderPurpose::Target1);
    let expected = {
        let mut v = vec![
            ("zt-b1".to_string(), "accepted"),
            ("zt-b1".to_string(), "fill"),
            (sl.clone(), "accepted"),
            (t1.clone(), "accepted"),
        ];
        v.sort();
        v
    };
    assert_eq!(seen, expected, "{events:#?}");
    let fill = events.iter().find_map(|e| e.fill()).unwrap();
    assert_eq!(
        (fill.quantity, fill.price, fill.pipeline.as_str()),
        (dec!(50), dec!(100.05), "aapl-momentum")
    );
    assert_eq!(fill.fill_id, format!("{}:50", at_fake.id));
    let leg = events
        .iter()
        .find(|e| e.order().client_order_id == sl)
        .unwrap()
        .order();
    assert_eq!(leg.purpose, OrderPurpose::StopLoss);
    assert_eq!(leg.oco_group.as_deref(), Some("zt-b1"));
    assert_eq!(leg.pipeline, "aapl-momentum");
    assert_eq!(leg.order_type, OrderType::Stop { price: dec!(98) });

    let mut positions = b.positions().await.unwrap();
    positions.sort_by(|a, b| a.symbol.cmp(&b.symbol));
    assert_eq!(positions.len(), 2);
    assert_eq!(
        (positions[0].symbol.as_str(), positions[0].pipeline.as_str()),
        ("AAPL", "aapl-momentum")
    );
    assert_eq!(positions[0].quantity, dec!(50));
    assert_eq!(
        (positions[1].symbol.as_str(), positions[1].pipeline.as_str()),
        ("MSFT", ""),
        "a position nobody owns is drift"
    );

    let open = b.open_orders().await.unwrap();
    let ids: Vec<_> = open.iter().map(|o| o.client_order_id.as_str()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&sl.as_str()) && ids.contains(&t1.as_str()));

    let account = b.account().await.unwrap();
    assert_eq!(account.cash, fake.cash());
    assert_eq!(account.commissions, Decimal::ZERO);
    let details = b.account_details().await.unwrap();
    assert_eq!(details.status, "ACTIVE");
    assert!(!details.trading_blocked && !details.pattern_day_trader);
    assert_eq!(details.account_number, "PA3FAKE00001");

    // The stop fills: the target is cancelled by Alpaca (one-cancels-other).
    fake.fill(&at_fake.legs[1], dec!(50), dec!(97.9));
    let events = until(&mut rx, |e| e.kind() == "cancelled").await;
    assert_eq!(
        kinds(&events),
        vec![(sl.clone(), "fill"), (t1.clone(), "cancelled")]
    );
    assert_eq!(events[0].fill().unwrap().purpose, OrderPurpose::StopLoss);
}

#[tokio::test]
async fn entries_without_a_target_are_oto_and_two_targets_are_refused() {
    let fake = FakeAlpaca::start().await;
    let b = broker(&fake);
    b.submit(entry("zt-oto", Some(dec!(98)), None, None))
        .await
        .unwrap();
    let o = fake.order("zt-oto").unwrap();
    assert_eq!((o.order_class.as_str(), o.legs.len()), ("oto", 1));
    match b
        .submit(entry(
            "zt-two",
            Some(dec!(98)),
            Some(dec!(104)),
            Some(dec!(108)),
        ))
        .await
    {
        Err(BrokerError::Rejected { reason, .. }) => assert!(
            reason.starts_with("alpaca takes one take-profit per entry (bracket order)"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(fake.order("zt-two").is_none());
    b.submit(entry("zt-simple", None, None, None))
        .await
        .unwrap();
    let o = fake.order("zt-simple").unwrap();
    assert_eq!(
        (o.order_class.as_str(), o.time_in_force.as_str()),
        ("simple", "day")
    );
}

#[tokio::test]
async fn rate_limited_requests_wait_for_the_reset_and_retry() {
    let fake = FakeAlpaca::start().await;
    let b = broker(&fake);
    fake.rate_limit_next(2, 1);
    let start = Instant::now();
    b.account().await.unwrap();
    assert_eq!(fake.request_count(), 3);
    assert!(start.elapsed() < Duration::from_secs(3));

    // A submit answered 429 is looked up, then sent again: one order.
    fake.rate_limit_next_retry_after(1, 1);
    let start = Instant::now();
    let state = b.submit(entry("zt-429", None, None, None)).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "waited {:?}",
        start.elapsed()
    );
    assert_eq!(state.status, OrderStatus::Accepted);
    assert_eq!(fake.submits_for("zt-429"), 1);
    let reqs = fake.requests();
    let tail: Vec<&str> = reqs[3..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        vec![
            "POST /v2/orders",
            "GET /v2/orders:by_client_order_id",
            "POST /v2/orders"
        ]
    );
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_unavailable() {
    let fake = FakeAlpaca::start().await;
    let b = broker(&fake);
    fake.fail_next(2);
    assert!(b.account().await.is_ok());
    assert_eq!(fake.request_count(), 3);
    fake.fail_next(10);
    match b.positions().await {
        Err(BrokerError::Unavailable(reason)) => assert!(reason.contains("500"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.request_count(), 6, "three tries of a read");
    fake.fail_next(0);

    // A 500 on submit: looked up (not there), sent again: one order.
    fake.fail_next(1);
    b.submit(entry("zt-500", None, None, None)).await.unwrap();
    assert_eq!(fake.submits_for("zt-500"), 1);
}

#[tokio::test]
async fn a_submit_whose_answer_is_lost_is_looked_up_never_sent_twice() {
    let fake = FakeAlpaca::start().await;
    let b = broker(&fake);
    let mut rx = b.take_events().unwrap();
    fake.wait_stream_sessions(1).await;
    fake.delay_next_submits(1, Duration::from_secs(2));
    let state = b
        .submit(entry("zt-slow", Some(dec!(98)), Some(dec!(106)), None))
        .await
        .unwrap();
    assert_eq!(state.status, OrderStatus::Accepted);
    assert_eq!(state.broker_order_id, fake.order("zt-slow").unwrap().id);
    assert_eq!(fake.submits_for("zt-slow"), 1);
    let orders = fake
        .orders()
        .into_iter()
        .filter(|o| o.client_order_id == "zt-slow")
        .count();
    assert_eq!(orders, 1);
    // Submitting it again (a restarted caller) answers the same order.
    let again = b
        .submit(entry("zt-slow", Some(dec!(98)), Some(dec!(106)), None))
        .await
        .unwrap();
    assert_eq!(again.broker_order_id, state.broker_order_id);
    assert_eq!(fake.submits_for("zt-slow"), 1);
    let events = drain(&mut rx, Duration::from_millis(300)).await;
    assert_eq!(kinds(&events), vec![("zt-slow".to_string(), "accepted")]);
}

#[tokio::test]
async fn a_duplicate_client_order_id_answers_the_existing_order() {
    let fake = FakeAlpaca::start().await;
    let first = broker(&fake);
    let a = first
        .submit(entry("zt-dup", None, None, None))
        .await
        .unwrap();
    // Another process (a restart that lost its store) sends the same id.
    let second = broker(&fake);
    let b = second
        .submit(entry("zt-dup", None, None, None))
        .await
        .unwrap();
    assert_eq!(a.broker_order_id, b.broker_order_id);
    assert_eq!(b.client_order_id, "zt-dup");
    assert_eq!(fake.submits_for("zt-dup"), 1);
    assert!(
        fake.requests()
            .contains(&"GET /v2/orders:by_client_order_id".to_string())
    );
}

#[tokio::test]
async fn refusals_are_recorded_as_rejected_with_code_and_message() {
    let fake = FakeAlpaca::start().await;
    let b = broker(&fake);
    let mut rx = b.take_events().unwrap();
    fake.reject_next_submit(403, 40310000, "insufficient buying power");
    let state = b.submit(entry("zt-403", None, None, None)).await.unwrap();
    assert_eq!(state.status, OrderStatus::Rejected);
    assert_eq!(
        state.reason.as_deref(),
        Some("alpaca 403 40310000: insufficient buying power")
    );
    match next_event(&mut rx).await {
        BrokerEvent::Rejected { order, reason } => {
            assert_eq!(order.client_order_id, "zt-403");
            assert_eq!(reason, "alpaca 403 40310000: insufficient buying power");
        }
        other => panic!("{other:?}"),
    }
    fake.reject_next_submit(422, 40010001, "qty must be <= 1000000");
    let state = b.submit(entry("zt-422", None, None, None)).await.unwrap();
    assert_eq!(
        state.reason.as_deref(),
        Some("alpaca 422 40010001: qty must be <= 1000000")
    );
    assert_eq!(next_event(&mut rx).await.kind(), "rejected");
    // The same id again: the same answer, nothing sent.
    let before = fake.request_count();
    let again = b.submit(entry("zt-403", None, None, None)).await.unwrap();
    assert_eq!(again.status, OrderStatus::Rejected);
    assert_eq!(fake.request_count(), before);
    assert_eq!(
        b.order("zt-403").await.unwrap().unwrap().status,
        OrderStatus::Rejected
    );
    assert_eq!(fake.submits_for("zt-403"), 0);
}

#[tokio::test]
async fn bad_keys_give_a_clear_authentication_error() {
    let fake = FakeAlpaca::start().await;
    let b = AlpacaBroker::with_options(
        "alpaca-paper",
        &settings(&fake),
        Credentials {
            key_id: KEY_ID.into(),
            secret_key: "wrong".into(),
        },
        Vec::new(),
        fast_options(),
    )
    .unwrap();
    match b.account().await {
        Err(BrokerError::Unauthorized(reason)) => {
            assert!(
                reason.starts_with(
                    "authentication failed: check APCA_API_KEY_ID/APCA_API_SECRET_KEY"
                ),
                "{reason}"
            );
            assert!(
                reason.contains("40110000: request is not authorized"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    let e = b.account_details().await.unwrap_err();
    assert!(e.is_auth(), "{e}");
    assert_eq!(fake.request_count(), 2, "no retries of a refused key");
}

#[tokio::test]
async fn a_stream_that_refuses_the_keys_is_retried_without_harm() {
    let fake = FakeAlpaca::start().await;
    let b = AlpacaBroker::with_options(
        "alpaca-paper",
        &settings(&fake),
        Credentials {
            key_id: KEY_ID.into(),
            secret_key: "wrong".into(),
        },
        Vec::new(),
        fast_options(),
    )
    .unwrap();
    let mut rx = b.take_events().unwrap();
    assert!(b.take_events().is_none(), "the stream is taken once");
    assert!(drain(&mut rx, Duration::from_millis(300)).await.is_empty());
    assert_eq!(fake.stream_sessions(), 0);
    assert_eq!(fake.request_count(), 0, "no catch-up without a session");
}

#[tokio::test]
async fn missing_key_variables_are_named() {
    let fake = FakeAlpaca::start().await;
    let mut s = settings(&fake);
    s.key_id_env = "ZTRADED_TEST_UNSET_KEY_VARIABLE".into();
    match AlpacaBroker::connect("alpaca-paper", &s, Vec::new()) {
        Err(BrokerError::Unsupported(m)) => assert_eq!(
            m,
            "broker alpaca-paper: environment variable ZTRADED_TEST_UNSET_KEY_VARIABLE is not set"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_stream_drop_in_the_middle_of_a_fill_loses_no_fill_and_doubles_none() {
    let fake = FakeAlpaca::start().await;
    let b = broker(&fake);
    let mut rx = b.take_events().unwrap();
    fake.wait_stream_sessions(1).await;
    let state = b.submit(entry("zt-drop", None, None, None)).await.unwrap();
    assert_eq!(next_event(&mut rx).await.kind(), "accepted");

    fake.fill("zt-drop", dec!(20), dec!(100));
    let e = next_event(&mut rx).await;
    assert_eq!(e.kind(), "partial_fill");
    assert_eq!(
        e.fill().unwrap().fill_id,
        format!("{}:20", state.broker_order_id)
    );

    // The stream breaks; the rest fills while it is down.
    fake.set_stream_down(true);
    fake.drop_stream();
    fake.fill("zt-drop", dec!(30), dec!(101));
    tokio::time::sleep(Duration::from_millis(150)).await;
    fake.set_stream_down(false);
    fake.wait_stream_sessions(2).await;

    let e = next_event(&mut rx).await;
    let fill = e.fill().expect("the missed fill, from the REST catch-up");
    assert_eq!(e.kind(), "fill");
    assert_eq!((fill.quantity, fill.price), (dec!(30), dec!(101)));
    assert_eq!(fill.fill_id, format!("{}:50", state.broker_order_id));
    assert_eq!(e.order().status, OrderStatus::Filled);
    // Another drop and catch-up: nothing is reported twice.
    fake.drop_stream();
    fake.wait_stream_sessions(3).await;
    let rest = drain(&mut rx, Duration::from_millis(300)).await;
    assert!(rest.is_empty(), "{rest:#?}");

    // A drop before a fill: the whole fill comes from the catch-up.
    b.submit(exit("zt-drop-x", dec!(50))).await.unwrap();
    assert_eq!(next_event(&mut rx).await.kind(), "accepted");
    fake.set_stream_down(true);
    fake.drop_stream();
    fake.fill("zt-drop-x", dec!(50), dec!(102));
    tokio::time::sleep(Duration::from_millis(100)).await;
    fake.set_stream_down(false);
    let e = next_event(&mut rx).await;
    assert_eq!((e.kind(), e.fill().unwrap().quantity), ("fill", dec!(50)));
    assert!(drain(&mut rx, Duration::from_millis(200)).await.is_empty());
}

#[tokio::test]
async fn replacing_a_stop_keeps_our_client_order_id() {
    let fake = FakeAlpaca::start().await;
    let b = broker(&fake);
    let mut rx = b.take_events().unwrap();
    fake.wait_stream_sessions(1).await;
    b.submit(entry("zt-r", Some(dec!(98)), Some(dec!(106)), None))
        .await
        .unwrap();
    fake.fill("zt-r", dec!(50), dec!(100));
    let sl = bracket_leg_id("zt-r", OrderPurpose::StopLoss);
    until(&mut rx, |e| e.order().client_order_id == sl).await;
    let old_id = b.order(&sl).await.unwrap().unwrap().broker_order_id;

    b.replace_stop(&sl, dec!(100), dec!(25)).await.unwrap();
    let e = next_event(&mut rx).await;
    match &e {
        BrokerEvent::Replaced { order } => {
            assert_eq!(order.client_order_id, sl);
            assert_ne!(order.broker_order_id, old_id);
            assert_eq!(order.order_type, OrderType::Stop { price: dec!(100) });
            assert_eq!(order.quantity, dec!(25));
            assert_eq!(order.purpose, OrderPurpose::StopLoss);
            assert_eq!(order.oco_group.as_deref(), Some("zt-r"));
        }
        other => panic!("{other:?}"),
    }
    // The stream's own replaced/new updates add nothing.
    assert!(drain(&mut rx, Duration::from_millis(300)).await.is_empty());
    let now = b.order(&sl).await.unwrap().unwrap();
    assert_eq!(now.broker_order_id, e.order().broker_order_id);
    assert_eq!(now.status, OrderStatus::Accepted);
    let at_fake: Vec<_> = fake.orders();
    assert_eq!(
        at_fake.iter().find(|o| o.id == old_id).unwrap().status,
        "replaced"
    );

    // A restarted broker that only knows the old Alpaca id follows the replacement.
    let mut known = e.order().clone();
    known.broker_order_id = old_id.clone();
    let restarted = broker_with(&fake, vec![known], fast_options());
    let found = restarted.order(&sl).await.unwrap().unwrap();
    assert_eq!(found.broker_order_id, e.order().broker_order_id);
    assert_eq!(found.client_order_id, sl);

    // Cancel it: Alpaca says canceled; a second cancel succeeds too.
    b.cancel(&sl).await.unwrap();
    let e = next_event(&mut rx).await;
    assert_eq!(
        (e.order().client_order_id.as_str(), e.kind()),
        (sl.as_str(), "cancelled")
    );
    b.cancel(&sl).await.unwrap();
    // Cancelling a filled order succeeds.
    b.cancel("zt-r").await.unwrap();
    assert!(matches!(
        b.cancel("zt-nope").await,
        Err(BrokerError::UnknownOrder(_))
    ));
}

#[tokio::test]
async fn close_all_answers_each_symbol_and_books_against_the_owner() {
    let fake = FakeAlpaca::start().await;
    let b = broker(&fake);
    let mut rx = b.take_events().unwrap();
    fake.wait_stream_sessions(1).await;
    b.submit(entry("zt-c", Some(dec!(98)), Some(dec!(106)), None))
        .await
        .unwrap();
    fake.fill("zt-c", dec!(50), dec!(100));
    fake.add_position("MSFT", dec!(5), dec!(300));
    fake.add_position("TSLA", dec!(-3), dec!(200));
    fake.fail_close(
        "TSLA",
        403,
        40310000,
        "insufficient qty available for order",
    );
    until(&mut rx, |e| e.kind() == "fill").await;
    drain(&mut rx, Duration::from_millis(100)).await;

    let mut parts = b.close_all().await.unwrap();
    parts.sort_by(|a, b| a.symbol.cmp(&b.symbol));
    assert_eq!(parts.len(), 3);
    let aapl = parts[0].order.clone().unwrap();
    assert_eq!((parts[0].symbol.as_str(), parts[0].status), ("AAPL", 200));
    assert_eq!(aapl.purpose, OrderPurpose::Emergency);
    assert_eq!(aapl.pipeline, "aapl-momentum");
    assert_eq!(aapl.quantity, dec!(50));
    let msft = parts[1].order.clone().unwrap();
    assert_eq!(
        (msft.pipeline.as_str(), msft.purpose),
        ("", OrderPurpose::Emergency)
    );
    assert_eq!((parts[2].symbol.as_str(), parts[2].status), ("TSLA", 403));
    assert_eq!(
        parts[2].error.as_deref(),
        Some("alpaca 403 40310000: insufficient qty available for order")
    );
    // The legs were cancelled with the orders; the closing orders are reported.
    let events = drain(&mut rx, Duration::from_millis(300)).await;
    let k = kinds(&events);
    assert!(
        k.contains(&(bracket_leg_id("zt-c", OrderPurpose::StopLoss), "cancelled")),
        "{k:?}"
    );
    assert!(
        k.contains(&(aapl.client_order_id.clone(), "accepted")),
        "{k:?}"
    );

    fake.fill(&aapl.client_order_id, dec!(50), dec!(99.5));
    let e = until(&mut rx, |e| e.kind() == "fill").await.pop().unwrap();
    let fill = e.fill().unwrap();
    assert_eq!(
        (fill.pipeline.as_str(), fill.purpose, fill.quantity),
        ("aapl-momentum", OrderPurpose::Emergency, dec!(50))
    );

    let cancelled = b.cancel_all().await.unwrap();
    assert_eq!(cancelled.len(), 1, "the MSFT close was still open");
}

#[tokio::test]
async fn a_restarted_broker_maps_orders_and_positions_back_to_pipelines() {
    let fake = FakeAlpaca::start().await;
    let first = broker(&fake);
    let mut rx = first.take_events().unwrap();
    fake.wait_stream_sessions(1).await;
    first
        .submit(entry("zt-k", Some(dec!(98)), Some(dec!(106)), None))
        .await
        .unwrap();
    fake.fill("zt-k", dec!(50), dec!(100));
    let events = legs_live(&mut rx, "zt-k").await;
    // The store's rows: the latest state of each order.
    let mut known: Vec<OrderState> = Vec::new();
    for e in events {
        known.retain(|o| o.client_order_id != e.order().client_order_id);
        known.push(e.order().clone());
    }
    let t1_id = known
        .iter()
        .find(|o| o.client_order_id == "zt-k-t1")
        .unwrap()
        .broker_order_id
        .clone();
    drop(first);
    // An order someone placed by hand.
    let stranger = broker(&fake);
    stranger.submit(exit("manual-1", dec!(1))).await.unwrap();

    let b = broker_with(&fake, known, fast_options());
    let positions = b.positions().await.unwrap();
    assert_eq!(positions[0].pipeline, "aapl-momentum");
    let open = b.open_orders().await.unwrap();
    let mine: Vec<_> = open
        .iter()
        .map(|o| (o.client_order_id.as_str(), o.pipeline.as_str()))
        .collect();
    assert_eq!(
        mine,
        vec![
            ("zt-k-t1", "aapl-momentum"),
            ("zt-k-sl", "aapl-momentum"),
            ("manual-1", "")
        ]
    );
    assert_eq!(
        open[2].purpose,
        OrderPurpose::Entry,
        "purpose from the type"
    );

    // A fill while the daemon was down comes from the first catch-up.
    fake.fill(&t1_id, dec!(50), dec!(106));
    let mut rx = b.take_events().unwrap();
    let e = next_event(&mut rx).await;
    assert_eq!(
        (e.order().client_order_id.as_str(), e.kind()),
        ("zt-k-t1", "fill")
    );
    let rest = drain(&mut rx, Duration::from_millis(300)).await;
    assert_eq!(kinds(&rest), vec![("zt-k-sl".to_string(), "cancelled")]);
}

#[tokio::test]
async fn pacing_keeps_a_burst_within_the_rate_limit() {
    let fake = FakeAlpaca::start().await;
    let mut options = fast_options();
    // 200 per minute scaled down: 100 per 2 s, bursts of 5.
    options.client.rate_limit = 100;
    options.client.rate_period = Duration::from_secs(2);
    options.client.burst = 5;
    let b = std::sync::Arc::new(broker_with(&fake, Vec::new(), options));
    let start = Instant::now();
    let calls = (0..300).map(|_| {
        let b = b.clone();
        tokio::spawn(async move { b.account().await })
    });
    for r in futures::future::join_all(calls).await {
        r.unwrap().unwrap();
    }
    let took = start.elapsed();
    let max = fake.max_requests_in(Duration::from_secs(2));
    println!("300 requests in {took:?}; at most {max} in any 2 s window (limit 100)");
    assert_eq!(fake.request_count(), 300);
    assert!(max <= 100, "{max} requests in 2 s");
    assert!(took >= Duration::from_millis(5500), "{took:?}");
}

#[tokio::test]
async fn submit_to_fill_event_latency() {
    let fake = FakeAlpaca::start().await;
    let b = broker(&fake);
    let mut rx = b.take_events().unwrap();
    fake.wait_stream_sessions(1).await;
    let mut samples = Vec::new();
    for i in 0..200 {
        let cid = format!("zt-lat-{i}");
        let start = Instant::now();
        b.submit(entry(&cid, None, None, None)).await.unwrap();
        fake.fill(&cid, dec!(50), dec!(100));
        loop {
            let e = next_event(&mut rx).await;
            if e.kind() == "fill" && e.order().client_order_id == cid {
                break;
            }
        }
        samples.push(start.elapsed());
        // Flat again for the next entry.
        let x = format!("zt-lat-x-{i}");
        b.submit(exit(&x, dec!(50))).await.unwrap();
        fake.fill(&x, dec!(50), dec!(100));
    }
    samples.sort();
    let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "submit -> fill event over {} orders: p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        p(0.50),
        p(0.99),
        samples[samples.len() - 1]
    );
    assert!(p(0.50) < Duration::from_millis(200));
}

#[tokio::test]
async fn the_catch_up_pages_through_more_than_500_orders() {
    let fake = FakeAlpaca::start().await;
    let first = broker(&fake);
    let mut known = Vec::new();
    for i in 0..520 {
        known.push(
            first
                .submit(exit(&format!("zt-p-{i}"), dec!(1)))
                .await
                .unwrap(),
        );
    }
    // They all fill while no broker listens.
    for i in 0..520 {
        fake.fill(&format!("zt-p-{i}"), dec!(1), dec!(100));
    }
    let b = broker_with(&fake, known, fast_options());
    let mut rx = b.take_events().unwrap();
    let mut fills = std::collections::HashSet::new();
    while fills.len() < 520 {
        let e = next_event(&mut rx).await;
        assert_eq!(e.kind(), "fill");
        assert!(
            fills.insert(e.fill().unwrap().fill_id.clone()),
            "twice: {e:?}"
        );
    }
    assert!(drain(&mut rx, Duration::from_millis(300)).await.is_empty());
    let pages = fake
        .requests()
        .iter()
        .filter(|r| *r == "GET /v2/orders")
        .count();
    assert_eq!(pages, 2);
}

/// 100 positions of one pipeline (filled entries the store knows), closed by the emergency
/// close through an account with Alpaca's own pacing (200 requests per minute, bursts of
/// 10): scope `all` in the bulk requests, scope `pipeline` one market order per position.
/// Prints both durations.
#[tokio::test(flavor = "multi_thread")]
async fn emergency_close_of_100_positions_with_the_rate_limit() {
    use ztraded::domain::Scope;
    use ztraded::runtime::{Account, AccountOptions};
    let mut timings = Vec::new();
    for scope in [Scope::All, Scope::Pipeline("momentum".to_string())] {
        let fake = FakeAlpaca::start().await;
        let mut known = Vec::new();
        for i in 0..100 {
            let symbol = format!("S{i:03}");
            fake.add_position(&symbol, dec!(10), dec!(50));
            known.push(OrderState {
                client_order_id: format!("zt-entry-{i:03}"),
                broker_order_id: format!("fake-entry-{i:03}"),
                pipeline: "momentum".into(),
                symbol,
                side: ztraded::broker::Side::Buy,
                quantity: dec!(10),
                filled_quantity: dec!(10),
                average_price: dec!(50),
                order_type: OrderType::Market,
                purpose: OrderPurpose::Entry,
                oco_group: None,
                status: OrderStatus::Filled,
                reason: None,
                created_at: i,
            });
        }
        let options = AlpacaOptions {
            client: ClientOptions::default(),
            ..fast_options()
        };
        let broker: std::sync::Arc<dyn Broker> =
            std::sync::Arc::new(broker_with(&fake, known, options));
        let tmp = tempfile::tempdir().unwrap();
        let store = ztraded::store::Store::connect("sqlite://close.db", 1, tmp.path())
            .await
            .unwrap();
        let account = Account::new(
            vec![broker],
            AccountOptions {
                store: Some(store),
                metrics: None,
                clock: std::sync::Arc::new(ztraded::engine::clock::WallClock),
                keep_history: false,
            },
        );
        account.recover().await.unwrap();
        assert_eq!(account.positions().len(), 100);
        let started = Instant::now();
        let answer = account.emergency_close(&scope, "measure").await;
        let took = started.elapsed();
        let positions = answer["positions"].as_array().unwrap();
        assert_eq!(positions.len(), 100, "{answer}");
        assert!(
            positions.iter().all(|p| p["status"] == "submitted"),
            "{answer}"
        );
        let closes = fake
            .orders()
            .iter()
            .filter(|o| o.side == "sell" && o.kind == "market")
            .count();
        assert_eq!(closes, 100);
        timings.push((format!("{scope:?}"), took, fake.request_count()));
    }
    for (scope, took, requests) in &timings {
        println!(
            "emergency close of 100 positions, scope {scope}: {took:?} ({requests} requests at the fake in all)"
        );
    }
}
