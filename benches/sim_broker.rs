//! Simulated broker speed: nanoseconds per `SimBroker::on_bar` call for a symbol the broker
//! has never seen, a symbol with no open order (the case of almost every bar of a backtest),
//! and a symbol with three working stops that the bar does not reach. Prints ns/bar and
//! bars/second.
//!
//! Run: `cargo bench --bench sim_broker`.

use rust_decimal::Decimal;
use std::hint::black_box;
use std::time::Instant;
use ztraded::broker::sim::SimBroker;
use ztraded::broker::{ExitOrder, OrderPurpose, OrderType, PositionSide, Submit};
use ztraded::config::settings::SimulatedBroker;
use ztraded::market::Bar;

const BARS: i64 = 5_000_000;

fn bars() -> impl Iterator<Item = Bar> {
    (0..BARS).map(|k| {
        let px = 100.0 + (k % 97) as f64 * 0.01;
        Bar {
            ts: 1_000 + 60 * k,
            open: px,
            high: px + 0.5,
            low: px - 0.5,
            close: px + 0.25,
            volume: 1e6,
        }
    })
}

fn exit(id: &str, order_type: OrderType) -> Submit {
    Submit::Exit(ExitOrder {
        client_order_id: id.to_string(),
        pipeline: "p".to_string(),
        symbol: "AAPL".to_string(),
        position_side: PositionSide::Long,
        quantity: Decimal::from(100),
        order_type,
        purpose: OrderPurpose::StopLoss,
        oco_group: None,
    })
}

fn run(label: &str, broker: &mut SimBroker, symbol: &str) {
    let start = Instant::now();
    let mut events = 0usize;
    for bar in bars() {
        events += black_box(broker.on_bar(black_box(symbol), &bar)).len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{label:<40} {:>8.1} ns/bar {:>12.0} bars/s ({events} events)",
        secs * 1e9 / BARS as f64,
        BARS as f64 / secs
    );
}

fn main() {
    let config = SimulatedBroker::default();

    let mut unknown = SimBroker::new("sim", &config);
    run("on_bar, symbol never seen", &mut unknown, "AAPL");

    // An exit with no position is cancelled on its first bar, leaving a known symbol with no
    // open order.
    let mut idle = SimBroker::new("sim", &config);
    idle.submit(exit("x", OrderType::Market), 0)
        .expect("valid order");
    run("on_bar, known symbol, no open order", &mut idle, "AAPL");
    assert!(idle.open_orders().is_empty());

    let mut working = SimBroker::new("sim", &config);
    for id in ["s1", "s2", "s3"] {
        // Far below every bar: never reached.
        let stop = OrderType::Stop {
            price: Decimal::ONE,
        };
        working.submit(exit(id, stop), 0).expect("valid order");
    }
    run("on_bar, 3 working stops not reached", &mut working, "AAPL");
    assert_eq!(working.open_orders().len(), 3);
}
