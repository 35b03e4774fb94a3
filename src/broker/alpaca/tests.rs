use super::*;
use crate::broker::{EntryOrder, ExitOrder, PositionSide, Side, TakeProfit};
use crate::risk::approve_for_tests;
use rust_decimal::dec;

fn entry(stop: Option<Decimal>, targets: &[Decimal]) -> Submit {
    Submit::Entry(approve_for_tests(EntryOrder {
        client_order_id: "zt-e".into(),
        pipeline: "p".into(),
        symbol: "AAPL".into(),
        side: Side::Buy,
        quantity: dec!(10),
        order_type: OrderType::Market,
        expected_price: Some(dec!(100)),
        stop_loss: stop,
        take_profits: targets
            .iter()
            .map(|p| TakeProfit {
                price: *p,
                quantity: dec!(5),
                purpose: OrderPurpose::Target1,
            })
            .collect(),
    }))
}

#[test]
fn entries_become_bracket_oto_or_simple_orders() {
    let b = new_order(&entry(Some(dec!(95)), &[dec!(110)])).unwrap();
    assert_eq!(b.order_class, "bracket");
    assert_eq!(b.time_in_force, "gtc");
    assert_eq!(b.stop_loss.unwrap().stop_price, "95");
    assert_eq!(b.take_profit.unwrap().limit_price, "110");
    let o = new_order(&entry(Some(dec!(95.123)), &[])).unwrap();
    assert_eq!(o.order_class, "oto");
    assert_eq!(o.stop_loss.unwrap().stop_price, "95.12");
    assert!(o.take_profit.is_none());
    let s = new_order(&entry(None, &[])).unwrap();
    assert_eq!(
        (s.order_class.as_str(), s.time_in_force.as_str()),
        ("simple", "day")
    );
    match new_order(&entry(Some(dec!(95)), &[dec!(110), dec!(120)])) {
        Err(BrokerError::Rejected { reason, .. }) => {
            assert!(reason.starts_with("alpaca takes one take-profit per entry (bracket order)"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn exits_are_plain_orders_of_the_other_side() {
    let x = new_order(&Submit::Exit(ExitOrder {
        client_order_id: "zt-x".into(),
        pipeline: "p".into(),
        symbol: "AAPL".into(),
        position_side: PositionSide::Long,
        quantity: dec!(3),
        order_type: OrderType::Stop {
            price: dec!(0.51234),
        },
        purpose: OrderPurpose::StopLoss,
        oco_group: None,
    }))
    .unwrap();
    assert_eq!(x.side, "sell");
    assert_eq!(x.order_type, "stop");
    assert_eq!(x.stop_price.as_deref(), Some("0.5123"));
    assert_eq!(x.time_in_force, "gtc");
    assert_eq!(x.order_class, "simple");
}

#[test]
fn crypto_stops_are_stop_limits_a_band_beyond_the_stop() {
    let x = new_order(&Submit::Exit(ExitOrder {
        client_order_id: "zt-x-sl".into(),
        pipeline: "p".into(),
        symbol: "BTC/USD".into(),
        position_side: PositionSide::Long,
        quantity: dec!(0.5),
        order_type: OrderType::Stop { price: dec!(60000) },
        purpose: OrderPurpose::StopLoss,
        oco_group: Some("zt-x".into()),
    }))
    .unwrap();
    assert_eq!(x.side, "sell");
    assert_eq!(x.order_type, "stop_limit");
    assert_eq!(x.stop_price.as_deref(), Some("60000"));
    assert_eq!(x.limit_price.as_deref(), Some("59400"));
    assert_eq!(x.time_in_force, "gtc");
    assert_eq!(x.order_class, "simple");
}

fn wire_order(v: serde_json::Value) -> wire::Order {
    serde_json::from_value(v).unwrap()
}

#[test]
fn the_book_reports_each_change_once_whichever_way_it_arrives() {
    let mut book = Book::default();
    book.meta.insert(
        "zt-e".into(),
        Meta {
            crypto: false,
            pipeline: "p".into(),
            purpose: OrderPurpose::Entry,
            oco_group: None,
        },
    );
    let order = |filled: &str, avg: Option<&str>, status: &str| {
        wire_order(serde_json::json!({
            "id": "A1", "client_order_id": "zt-e", "symbol": "AAPL", "qty": "10",
            "filled_qty": filled, "filled_avg_price": avg, "type": "market", "side": "buy",
            "status": status, "created_at": "2024-01-02T15:00:00Z",
        }))
    };
    let e = book.observe(&order("0", None, "new"), None);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].kind(), "accepted");
    assert!(book.observe(&order("0", None, "new"), None).is_empty());
    let ts = Utc::now();
    let e = book.observe(
        &order("4", Some("100"), "partially_filled"),
        Some((dec!(4), dec!(100), ts)),
    );
    assert_eq!(e.len(), 1);
    let f = e[0].fill().unwrap();
    assert_eq!(
        (f.quantity, f.price, f.fill_id.as_str()),
        (dec!(4), dec!(100), "A1:4")
    );
    // The rest found over REST: the price of the missing part from the averages.
    let e = book.observe(&order("10", Some("101.2"), "filled"), None);
    assert_eq!(e.len(), 1);
    let f = e[0].fill().unwrap();
    assert_eq!(
        (f.quantity, f.price, f.fill_id.as_str()),
        (dec!(6), dec!(102), "A1:10")
    );
    assert_eq!(e[0].order().status, OrderStatus::Filled);
    // The stream's late copy of the same fill: nothing.
    assert!(
        book.observe(
            &order("10", Some("101.2"), "filled"),
            Some((dec!(6), dec!(102), ts))
        )
        .is_empty()
    );
    assert_eq!(book.owner_of("AAPL"), "p");
    // Orders not in the directory: no events, pipeline "".
    let foreign = wire_order(
        serde_json::json!({"id": "B", "client_order_id": "x", "symbol": "MSFT",
        "qty": "1", "type": "stop", "stop_price": "5", "side": "sell", "status": "new"}),
    );
    assert!(book.observe(&foreign, None).is_empty());
    let s = book.state_of(&foreign);
    assert_eq!(
        (s.pipeline.as_str(), s.purpose),
        ("", OrderPurpose::StopLoss)
    );
}

#[test]
fn late_reads_and_replaced_orders_add_nothing() {
    let mut book = Book::default();
    book.meta.insert(
        "zt-s".into(),
        Meta {
            crypto: false,
            pipeline: "p".into(),
            purpose: OrderPurpose::StopLoss,
            oco_group: Some("zt-e".into()),
        },
    );
    let stop = |id: &str, filled: &str, status: &str, replaces: Option<&str>| {
        wire_order(serde_json::json!({
            "id": id, "client_order_id": "zt-s", "symbol": "AAPL", "qty": "10",
            "filled_qty": filled, "filled_avg_price": if filled == "0" { None } else { Some("99") },
            "type": "stop", "stop_price": "98", "side": "sell", "status": status,
            "replaces": replaces, "created_at": "2024-01-02T15:00:00Z",
        }))
    };
    assert_eq!(book.observe(&stop("S1", "0", "new", None), None).len(), 1);
    // The stream saw a fill before a REST answer that predates it.
    assert_eq!(
        book.observe(&stop("S1", "10", "filled", None), None)[0].kind(),
        "fill"
    );
    assert!(book.observe(&stop("S1", "0", "new", None), None).is_empty());
    assert_eq!(book.reported["zt-s"].status, OrderStatus::Filled);

    // A replacement: one Replaced, then a late read of the old order says nothing.
    let mut book = Book::default();
    book.meta.insert(
        "zt-s".into(),
        Meta {
            crypto: false,
            pipeline: "p".into(),
            purpose: OrderPurpose::StopLoss,
            oco_group: None,
        },
    );
    book.observe(&stop("S1", "0", "new", None), None);
    let e = book.observe(&stop("S2", "0", "new", Some("S1")), None);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].kind(), "replaced");
    assert_eq!(e[0].order().client_order_id, "zt-s");
    assert!(
        book.observe(&stop("S1", "0", "pending_replace", None), None)
            .is_empty()
    );
    assert!(
        book.observe(&stop("S2", "0", "new", Some("S1")), None)
            .is_empty()
    );
    assert_eq!(book.client_to_broker["zt-s"], "S2");
}
