//! The daemon binary in paper mode against a fake IB Gateway, end to end: IB's session
//! hours, the warm-up over historical bars, live minutes made from 5-second real-time bars,
//! a bracket entry carrying our client order id in `order_ref`, `kill -9` while the
//! gateway has not answered the submission and a restart without a second order (the
//! execution found by `order_ref` and booked), a gateway disconnect survived, and the
//! emergency close through `POST /v1/close` flattening through the gateway.

mod common;
mod fake_tws;

use common::{Daemon, TOKEN, free_port};
use fake_tws::FakeTws;
use std::path::Path;
use std::time::Duration;

const SYMBOL: &str = "AAPL";

fn minute_now() -> i64 {
    let now = chrono::Utc::now().timestamp();
    now - now % 60
}

/// Three hours of minutes up to the one before `base - 60`: `(ts, o, h, l, c, v)`.
fn history(base: i64) -> Vec<(i64, f64, f64, f64, f64, f64)> {
    let last = base - 120;
    (0..180)
        .map(|i| {
            let c = 100.0 + (i % 7) as f64 * 0.1;
            (last - (179 - i) * 60, c, c + 0.5, c - 0.5, c, 1000.0)
        })
        .collect()
}

/// The twelve 5-second bars of the minute starting at `minute`, closing at `close`.
fn push_minute(fake: &FakeTws, minute: i64, close: f64) {
    for k in 0..12 {
        let c = close - 0.05 * (11 - k) as f64;
        fake.push_bar(SYMBOL, minute + 5 * k, (c, c + 0.05, c - 0.05, c, 100.0));
    }
}

fn write_config(dir: &Path, fake: &FakeTws, port: u16) {
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
source = "ibkr"
broker = "ibkr-paper"

[reconcile]
broker_interval = "1s"

[brokers.ibkr-paper]
kind = "ibkr"
host = "127.0.0.1"
port = {gateway}
client_id = 17
paper = true
"#,
            gateway = fake.port(),
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
        dir.join("pipelines/aapl-minutes.yaml"),
        r#"description: Enters on every closed minute while flat; bracket stop and target
mode: paper
broker: ibkr-paper
symbols: [AAPL]
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
    let log = std::env::var("IBKR_DAEMON_LOG").unwrap_or_else(|_| "info".into());
    Daemon::start(dir, port, 1, &[("RUST_LOG", &log)])
}

/// Our entries at the fake (references `zt-…` without a leg suffix).
fn entries(fake: &FakeTws) -> Vec<fake_tws::FakeOrder> {
    fake.orders()
        .into_iter()
        .filter(|o| o.order_ref.starts_with("zt-") && o.order_ref.matches('-').count() == 1)
        .collect()
}

#[test]
fn paper_trading_on_ibkr_end_to_end() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeTws::start());
    let base = minute_now();
    fake.set_historical(&history(base));
    fake.set_price(SYMBOL, 101.0);
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(tmp.path(), &fake, port);

    // Start: the broker session and the data connection (client ids 17 and 18), the
    // warm-up over historical bars, the real-time bar subscription.
    let mut d = start(tmp.path(), port);
    d.wait_ready(Duration::from_secs(30));
    d.wait_for(
        "the real-time bars subscription",
        Duration::from_secs(20),
        |_| fake.bar_subscriptions() >= 1,
    );
    let ids = fake.client_ids();
    assert!(ids.contains(&17) && ids.contains(&18), "{ids:?}");
    assert!(
        fake.historical_requests()
            .iter()
            .any(|r| r.bar_size_setting.as_deref() == Some("1 min")),
        "warm-up read over reqHistoricalData"
    );

    // The gateway takes the bracket but does not answer: kill -9 while it waits.
    fake.mute_next_place();
    push_minute(&fake, base - 60, 101.0);
    d.wait_for("the entry at the gateway", Duration::from_secs(20), |_| {
        !entries(&fake).is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    d.signal("KILL", Duration::from_secs(5));
    let first = entries(&fake);
    assert_eq!(first.len(), 1, "{first:?}");
    let entry = first[0].clone();
    assert_eq!(entry.status, "Filled", "{entry:?}");
    let legs: Vec<_> = fake
        .orders()
        .into_iter()
        .filter(|o| o.parent_id == entry.order_id)
        .collect();
    assert_eq!(legs.len(), 2, "stop and target: {legs:?}");
    let stop = legs.iter().find(|o| o.order_type == "STP").unwrap();
    assert_eq!(stop.order_ref, format!("{}-sl", entry.order_ref));
    assert_eq!(stop.stop_price, Some(99.0));
    let target = legs.iter().find(|o| o.order_type == "LMT").unwrap();
    assert_eq!(target.limit_price, Some(105.0));
    let placed = fake.placed().len();

    // Restart: the pending intent is found at the gateway by order_ref, its execution is
    // booked, and the next minute sends no second entry.
    let mut d = start(tmp.path(), port);
    d.wait_ready(Duration::from_secs(30));
    d.wait_for("the position", Duration::from_secs(20), |d| {
        d.metric("ztraded_positions_open{pipeline=\"aapl-minutes\"}") == 1.0
    });
    assert!(
        d.log_text().contains("pending intent found at the broker"),
        "{}",
        common::tail(&d.log_text(), 40)
    );
    d.wait_for("the real-time bars again", Duration::from_secs(20), |_| {
        fake.bar_subscriptions() >= 1
    });
    push_minute(&fake, base, 101.5);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(entries(&fake).len(), 1, "{:#?}", fake.orders());
    assert_eq!(
        fake.placed().len(),
        placed,
        "nothing sent twice: {:#?}",
        fake.placed()
    );

    // The gateway drops every connection (its daily restart): the daemon reconnects and
    // resynchronizes; still one position, no new order.
    let before = fake.connections();
    fake.disconnect();
    d.wait_for("the reconnection", Duration::from_secs(20), |_| {
        fake.connections() >= before + 2 && fake.bar_subscriptions() >= 1
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.metric("ztraded_positions_open{pipeline=\"aapl-minutes\"}"),
        1.0
    );
    assert_eq!(entries(&fake).len(), 1);

    // Emergency close of everything: global cancel, a market order per position.
    let (status, body) = d
        .post(
            "/v1/close",
            r#"{"scope":"all","reason":"test"}"#,
            Some(TOKEN),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    d.wait_for("flat", Duration::from_secs(15), |d| {
        fake.positions().is_empty()
            && d.metric("ztraded_positions_open{pipeline=\"aapl-minutes\"}") == 0.0
    });
    assert!(
        fake.orders()
            .iter()
            .all(|o| !matches!(o.status.as_str(), "Submitted" | "PreSubmitted")),
        "{:#?}",
        fake.orders()
    );
    assert!(
        d.log_text().contains("trade closed"),
        "{}",
        common::tail(&d.log_text(), 30)
    );
    d.signal("TERM", Duration::from_secs(15));
}

/// `ztraded brokers --json DIR`: exit code and the checks.
fn brokers(dir: &Path) -> (Option<i32>, Vec<serde_json::Value>) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .args(["brokers", "--json"])
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let checks = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code(), checks)
}

#[test]
fn ztraded_brokers_checks_an_ibkr_account_and_reports_drift() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeTws::start());
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), &fake, free_port());
    let (code, checks) = brokers(tmp.path());
    assert_eq!(code, Some(0), "{checks:?}");
    let c = &checks[0];
    assert_eq!(c["name"], "ibkr-paper");
    assert_eq!(c["kind"], "ibkr");
    assert_eq!(c["account"], "paper");
    assert_eq!(c["reachable"], true);
    assert_eq!(c["authenticated"], true);
    assert!(c["status"].as_str().unwrap().contains("DU1234567"), "{c}");
    let cash: f64 = c["balances"]["cash"].as_str().unwrap().parse().unwrap();
    assert_eq!(cash, 100_000.0, "{c}");
    // A position nobody owns is drift: exit 1.
    fake.set_position("MSFT", 5.0, 300.0);
    let (code, checks) = brokers(tmp.path());
    assert_eq!(code, Some(1), "{checks:?}");
    assert_eq!(checks[0]["drift_positions"].as_array().unwrap().len(), 1);
}

#[test]
fn a_paper_broker_on_a_live_login_fails_its_pipelines() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeTws::with_account("U7654321"));
    let base = minute_now();
    fake.set_historical(&history(base));
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(tmp.path(), &fake, port);
    let mut d = start(tmp.path(), port);
    d.wait_for("the failed pipeline", Duration::from_secs(30), |d| {
        d.metric("ztraded_pipelines{state=\"failed\"}") == 1.0
    });
    let log = d.log_text();
    assert!(
        log.contains(
            "configured paper = true, but the gateway is logged in to live account U7654321"
        ),
        "{}",
        common::tail(&log, 40)
    );
    assert!(fake.placed().is_empty());
    d.signal("TERM", Duration::from_secs(15));
}
