//! The daemon binary in paper mode against a fake Alpaca (trading REST + `trade_updates`
//! stream, market-data REST + bars stream), end to end: warm-up over REST, live minute bars,
//! a bracket entry with our client order id, the fill from the stream, `kill -9` during a
//! submit and a restart without a second order, a position no pipeline owns reported as
//! drift, the emergency close through `POST /v1/close`, and refused keys failing only the
//! pipelines of that broker.

mod common;
mod fake_alpaca;
#[path = "fake_alpaca/data.rs"]
mod fake_data;

use common::{Daemon, TOKEN, free_port};
use fake_alpaca::{FakeAlpaca, KEY_ID, SECRET_KEY};
use fake_data::FakeData;
use rust_decimal::{Decimal, dec};
use std::path::Path;
use std::time::Duration;
use ztraded::market::Bar;

const SYMBOL: &str = "BTC/USD";

fn minute_now() -> i64 {
    let now = chrono::Utc::now().timestamp();
    now - now % 60
}

fn bar(ts: i64, close: f64) -> Bar {
    Bar {
        ts,
        open: close,
        high: close + 0.5,
        low: close - 0.5,
        close,
        volume: 10.0,
    }
}

/// Three hours of minutes up to the one before `base - 60` (the test pushes that one).
fn history(base: i64) -> Vec<Bar> {
    let last = base - 120;
    (0..180)
        .map(|i| bar(last - (179 - i) * 60, 100.0 + (i % 7) as f64 * 0.1))
        .collect()
}

fn write_config(dir: &Path, trading: &FakeAlpaca, data: &FakeData, port: u16) {
    for sub in ["pipelines", "scanners", "risk"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("ztraded.toml"),
        format!(
            r#"[http]
listen = "127.0.0.1:{port}"
admin_token_env = "ZTRADED_ADMIN_TOKEN"

[store]
url = "sqlite://.ztraded/ztraded.db"

[market_data]
source = "alpaca"
broker = "alpaca-paper"

[reconcile]
broker_interval = "1s"

[brokers.alpaca-paper]
kind = "alpaca"
paper = true
key_id_env = "TEST_APCA_KEY"
secret_key_env = "TEST_APCA_SECRET"
trading_url = "{trading}"
stream_url = "{stream}"
data_url = "{data}"
data_stream_url = "{data_stream}"
"#,
            trading = trading.trading_url(),
            stream = trading.stream_url(),
            data = data.url(),
            data_stream = data.stream_url(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("risk/paper.yaml"),
        r#"description: Paper account limits
sizing:
  risk_per_trade_pct: 1.0
  max_position_pct: 20
limits:
  max_pipeline_capital_pct: 50
  max_deployed_pct: 90
  daily_loss_usd: 3000
  daily_loss_action: halt
trade:
  require_stop_loss: true
  min_reward_risk: 1.0
  min_profit_margin_pct: 0
  allow_short: false
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("pipelines/crypto-minutes.yaml"),
        r#"description: Enters on every closed minute while flat; bracket stop and target
mode: paper
broker: alpaca-paper
symbols: [BTC/USD]
risk: paper
trigger:
  bar_close: { timeframe: 1m }
nodes:
  - id: data
    agent: market_data
    config: { timeframes: [1m], indicators: [sma_5], lookback: 20 }
  - id: strategy
    agent: strategy
    config:
      kind: rules
      timeframe: 1m
      long_entry: "close > 0.0 && sma_5 > 0.0"
      stop_loss: "close - 2.0"
      target_1: "close + 4.0"
  - id: risk
    agent: risk_manager
  - id: trade
    agent: trade_manager
    config: { allow_pyramiding: false }
"#,
    )
    .unwrap();
}

fn start(dir: &Path, port: u16) -> Daemon {
    let log = std::env::var("ALPACA_DAEMON_LOG").unwrap_or_else(|_| "info".into());
    Daemon::start(
        dir,
        port,
        1,
        &[
            ("TEST_APCA_KEY", KEY_ID),
            ("TEST_APCA_SECRET", SECRET_KEY),
            ("TEST_BAD_KEY", "PKWRONGKEY"),
            ("RUST_LOG", &log),
        ],
    )
}

/// Our entry orders at the fake (client ids `zt-…` without a leg suffix).
fn entries(fake: &FakeAlpaca) -> Vec<fake_alpaca::FakeOrder> {
    fake.orders()
        .into_iter()
        .filter(|o| {
            o.client_order_id.starts_with("zt-") && o.client_order_id.matches('-').count() == 1
        })
        .collect()
}

/// The fakes (on their own runtime), their history up to the minute before `base - 60`, and
/// a config directory pointing at them.
struct Setup {
    rt: tokio::runtime::Runtime,
    trading: FakeAlpaca,
    data: FakeData,
    /// The minute the test started in (Unix seconds).
    base: i64,
    tmp: tempfile::TempDir,
    port: u16,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let trading = rt.block_on(FakeAlpaca::start());
    let data = rt.block_on(FakeData::start());
    let base = minute_now();
    data.set_history(SYMBOL, history(base));
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(tmp.path(), &trading, &data, port);
    Setup {
        rt,
        trading,
        data,
        base,
        tmp,
        port,
    }
}

#[test]
fn paper_trading_on_alpaca_end_to_end() {
    let Setup {
        rt,
        trading,
        data,
        base,
        tmp,
        port,
    } = setup();

    // Start: warm-up over REST, subscription on the crypto stream.
    let mut d = start(tmp.path(), port);
    d.wait_ready(Duration::from_secs(30));
    rt.block_on(data.wait_subscribed("/v1beta3/crypto/us", &[SYMBOL]));
    assert!(
        data.request_count("/v1beta3/crypto/us/bars") >= 1,
        "warm-up bars read over REST"
    );

    // The submit of the first entry hangs at the fake: kill -9 while it is in flight.
    trading.delay_next_submits(1, Duration::from_secs(4));
    data.push_bar(SYMBOL, &bar(base - 60, 101.0));
    d.wait_for("the entry at the fake", Duration::from_secs(20), |_| {
        !entries(&trading).is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    d.signal("KILL", Duration::from_secs(5));
    let first = entries(&trading);
    assert_eq!(first.len(), 1, "{first:?}");
    let entry = first[0].clone();
    // Alpaca has no brackets for crypto: the entry goes alone, the legs follow its fill.
    assert_eq!(entry.order_class, "simple", "{entry:?}");

    // The entry fills while the daemon is down.
    std::thread::sleep(Duration::from_secs(4));
    trading.fill(&entry.client_order_id, entry.qty, dec!(101));

    // Restart: the pending intent is found at the broker by client order id, the fill made
    // meanwhile is fetched over REST and booked (the position opens and gets its legs: the
    // engine places the stop, a stop-limit 1 % beyond it, and the target, as Alpaca has no
    // crypto brackets), and the next bar sends no second entry.
    let mut d = start(tmp.path(), port);
    d.wait_ready(Duration::from_secs(30));
    d.wait_for("the position and its legs", Duration::from_secs(15), |d| {
        d.metric("ztraded_positions_open{pipeline=\"crypto-minutes\"}") == 1.0
            && trading
                .order(&format!("{}-sl", entry.client_order_id))
                .is_some()
    });
    assert!(
        d.log_text().contains("pending intent found at the broker"),
        "{}",
        common::tail(&d.log_text(), 40)
    );
    rt.block_on(data.wait_subscribed("/v1beta3/crypto/us", &[SYMBOL]));
    data.push_bar(SYMBOL, &bar(base - 60, 101.5));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(entries(&trading).len(), 1, "{:?}", trading.orders());
    assert_eq!(trading.submits_for(&entry.client_order_id), 1);
    let stop = trading
        .order(&format!("{}-sl", entry.client_order_id))
        .expect("the stop leg at the fake");
    assert!(stop.is_open(), "{stop:?}");
    assert_eq!(stop.kind, "stop_limit", "{stop:?}");
    assert_eq!(
        (stop.stop_price, stop.limit_price),
        (Some(dec!(99)), Some(dec!(98.01)))
    );
    let target = trading
        .order(&format!("{}-t1", entry.client_order_id))
        .expect("the target leg at the fake");
    assert_eq!(
        (target.kind.as_str(), target.limit_price),
        ("limit", Some(dec!(105)))
    );

    // The stop is cancelled at the broker (by hand, say): the next broker reconciliation
    // places a new one for the position, with our client order id.
    trading.cancel_at_broker(&stop.id);
    let replaced = |o: &fake_alpaca::FakeOrder| o.client_order_id != stop.client_order_id;
    d.wait_for("the stop re-placed", Duration::from_secs(10), |_| {
        trading.orders().iter().any(|o| {
            o.client_order_id.starts_with("zt-")
                && replaced(o)
                && o.kind == "stop_limit"
                && o.symbol == SYMBOL
                && o.is_open()
                && o.stop_price == Some(dec!(99))
        })
    });
    assert!(
        d.log_text()
            .contains("open position without a working stop at the broker"),
        "{}",
        common::tail(&d.log_text(), 30)
    );

    // A position nobody owns: drift, reported and not touched.
    trading.add_position("MSFT", dec!(10), dec!(300));
    d.wait_for("the drift gauge", Duration::from_secs(10), |d| {
        d.metric("ztraded_broker_drift_positions{broker=\"alpaca-paper\"}") == 1.0
    });
    assert!(
        trading
            .positions()
            .iter()
            .any(|p| p.symbol == "MSFT" && p.qty == dec!(10))
    );
    // The fill made while the daemon was down is booked once: our trade is the broker's
    // position, reconciliation after reconciliation.
    let log = d.log_text();
    assert!(
        !log.contains("our trades and the broker's positions differ")
            && !log.contains("the broker wins"),
        "{}",
        common::tail(&log, 30)
    );

    // Emergency close of everything through the bulk endpoints.
    let (status, body) = d
        .post(
            "/v1/close",
            r#"{"scope":"all","reason":"test"}"#,
            Some(TOKEN),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    // Every order cancelled, one market close per position; the fake fills them, and the
    // daemon books the closing fill of its own position from the stream.
    assert!(
        trading
            .orders()
            .iter()
            .all(|o| !o.is_open() || o.client_order_id.starts_with("c105e")),
        "{body}\n{:#?}",
        trading.orders()
    );
    let closes: Vec<_> = trading
        .orders()
        .into_iter()
        .filter(|o| o.client_order_id.starts_with("c105e"))
        .collect();
    assert_eq!(closes.len(), 2, "{closes:?}");
    for c in &closes {
        trading.fill(&c.client_order_id, c.qty, dec!(100));
    }
    d.wait_for("flat", Duration::from_secs(10), |d| {
        trading.positions().iter().all(|p| p.qty == Decimal::ZERO)
            && d.metric("ztraded_positions_open{pipeline=\"crypto-minutes\"}") == 0.0
    });
    assert!(
        d.log_text().contains("trade closed"),
        "{}",
        common::tail(&d.log_text(), 30)
    );
    assert!(
        trading
            .requests()
            .iter()
            .any(|r| r.starts_with("DELETE /v2/positions")),
        "{:?}",
        trading.requests()
    );
    d.signal("TERM", Duration::from_secs(15));
}

#[test]
fn refused_keys_fail_only_the_pipelines_of_that_broker() {
    // The fakes stay bound (alive) to the end of the test.
    let Setup {
        rt: _rt,
        trading: _trading,
        data: _data,
        tmp,
        port,
        ..
    } = setup();
    // The market data keeps its good keys; the trading account gets wrong ones, and a
    // simulated pipeline on the same live data keeps running beside it.
    let toml = std::fs::read_to_string(tmp.path().join("ztraded.toml"))
        .unwrap()
        .replace("broker = \"alpaca-paper\"", "broker = \"alpaca-data\"");
    let data_broker = toml[toml.find("[brokers.alpaca-paper]").unwrap()..]
        .replace("[brokers.alpaca-paper]", "[brokers.alpaca-data]");
    let toml = toml.replace(
        "key_id_env = \"TEST_APCA_KEY\"",
        "key_id_env = \"TEST_BAD_KEY\"",
    );
    let toml = format!(
        "{toml}\n{data_broker}\n[brokers.sim]\nkind = \"simulated\"\ninitial_balance = 100000\n"
    );
    std::fs::write(tmp.path().join("ztraded.toml"), toml).unwrap();
    let sim = std::fs::read_to_string(tmp.path().join("pipelines/crypto-minutes.yaml"))
        .unwrap()
        .replace("mode: paper", "mode: simulation")
        .replace("broker: alpaca-paper", "broker: sim");
    std::fs::write(tmp.path().join("pipelines/crypto-sim.yaml"), sim).unwrap();
    let mut d = start(tmp.path(), port);
    d.wait_for("the failed pipeline", Duration::from_secs(30), |d| {
        d.metric("ztraded_pipelines{state=\"failed\"}") == 1.0
            && d.metric("ztraded_pipelines{state=\"running\"}") == 1.0
    });
    let log = d.log_text();
    assert!(
        log.contains("authentication failed: check TEST_BAD_KEY/TEST_APCA_SECRET"),
        "{}",
        common::tail(&log, 40)
    );
    d.signal("TERM", Duration::from_secs(15));
}

#[test]
fn a_finer_timeframe_added_later_reloads_the_symbol_and_restarts_its_pipelines() {
    let Setup {
        rt,
        trading,
        data,
        base,
        tmp,
        port,
    } = setup();
    // First a five-minute pipeline (validation: decisions only) streams the symbol as 5m.
    let minutes = tmp.path().join("pipelines/crypto-minutes.yaml");
    let one_minute = std::fs::read_to_string(&minutes).unwrap();
    std::fs::remove_file(&minutes).unwrap();
    let five = one_minute
        .replace("mode: paper", "mode: validation")
        .replace("timeframe: 1m", "timeframe: 5m")
        .replace("timeframes: [1m]", "timeframes: [5m]");
    std::fs::write(tmp.path().join("pipelines/crypto-five.yaml"), five).unwrap();
    let mut d = start(tmp.path(), port);
    d.wait_ready(Duration::from_secs(30));
    assert!(
        d.log_text().contains("timeframe=\"5m\""),
        "{}",
        common::tail(&d.log_text(), 20)
    );
    // Then a one-minute pipeline on the same symbol.
    std::fs::write(&minutes, one_minute).unwrap();
    d.wait_for("the reload and the restart", Duration::from_secs(20), |d| {
        let log = d.log_text();
        log.contains("reloading it at the finer one")
            && log.contains("restarting on the finer live data")
            && d.metric("ztraded_pipelines{state=\"running\"}") == 2.0
    });
    assert_eq!(d.metric("ztraded_pipelines{state=\"failed\"}"), 0.0);
    // Both run on the minutes: the one-minute pipeline enters on the next closed minute.
    rt.block_on(data.wait_subscribed("/v1beta3/crypto/us", &[SYMBOL]));
    data.push_bar(SYMBOL, &bar(base - 60, 101.0));
    d.wait_for("the entry at the fake", Duration::from_secs(20), |_| {
        !entries(&trading).is_empty()
    });
    d.signal("TERM", Duration::from_secs(15));
}
