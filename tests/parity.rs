//! Backtest ↔ daemon parity: the same config directory and CSVs through the backtest and
//! through the real `ztraded run` binary replaying them as fast as it can give the same
//! trades — symbol, side, entry and exit time and price, quantity, stops and targets, exit
//! reason, P&L, fees — the same open positions at the end and the same final equity.
//!
//! Cases: the two shipped pipelines, an SMA 10/20 cross, a long/short pipeline with a
//! partial exit at target 1, the stop moved to breakeven and target 2, a pipeline with a
//! trading window and `flatten_at_end` on 5-minute bars, and one that reaches
//! `daily_loss_action: flatten`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use ztraded::backtest::runner::{BacktestOptions, BacktestResult, run};
use ztraded::broker::OrderPurpose;
use ztraded::engine::trades::TradeRecord;

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A config directory: `ztraded.toml` (the shipped simulated broker, replay of `data` from
/// `start`), the given pipeline, scanner and risk files.
struct Case {
    name: &'static str,
    pipeline: String,
    scanners: Vec<(&'static str, String)>,
    risk: Vec<(&'static str, String)>,
    data: Vec<PathBuf>,
    start: &'static str,
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap()
}

fn setup(case: &Case, dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for f in &case.data {
        std::fs::copy(f, data.join(f.file_name().unwrap())).unwrap();
    }
    for sub in ["pipelines", "scanners", "risk"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("ztraded.toml"),
        format!(
            "[store]\nurl = \"sqlite://.ztraded/ztraded.db\"\n\n[market_data]\nsource = \"replay\"\npath = \"data\"\nspeed = 1000000000\nstart = \"{}\"\n\n[brokers.sim]\nkind = \"simulated\"\ninitial_balance = 100000\nslippage_pct = 0.1\ncommission_per_share = 0.005\n",
            case.start
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("pipelines").join(format!("{}.yaml", case.name)),
        &case.pipeline,
    )
    .unwrap();
    for (n, text) in &case.scanners {
        std::fs::write(dir.join("scanners").join(format!("{n}.yaml")), text).unwrap();
    }
    for (n, text) in &case.risk {
        std::fs::write(dir.join("risk").join(format!("{n}.yaml")), text).unwrap();
    }
    dir.join("pipelines").join(format!("{}.yaml", case.name))
}

async fn backtest(case: &Case, dir: &Path) -> BacktestResult {
    let file = setup(case, dir);
    run(
        &file,
        &BacktestOptions {
            data_dir: dir.join("data"),
            from: Some(case.start.parse().unwrap()),
            to: None,
            keep_records: false,
            progress: None,
            llm: Default::default(),
            llm_file: None,
            max_cost_usd: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon(case: &Case, dir: &Path) -> Daemon {
    setup(case, dir);
    let log = dir.join("daemon.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .arg("run")
        .arg(dir)
        .env(
            "ZTRADED_HTTP__LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    Daemon { child, log }
}

/// Runs the daemon until its replay ends, stops it with SIGTERM, and reads what it stored.
async fn replay(case: &Case, dir: &Path) -> (Vec<TradeRecord>, usize, rust_decimal::Decimal) {
    let mut d = daemon(case, dir);
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&d.log).unwrap_or_default();
        if text.contains("the replay data is exhausted") {
            break;
        }
        if let Ok(Some(status)) = d.child.try_wait() {
            panic!("{}: the daemon exited with {status}:\n{text}", case.name);
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "{}: the replay did not end:\n{}",
            case.name,
            text.lines().rev().take(40).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    common::sigterm(&d.child);
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{}: exit {status}", case.name);
    let store = ztraded::store::Store::connect("sqlite://.ztraded/ztraded.db", 1, dir)
        .await
        .unwrap();
    let trades = store.trades(None, i64::MIN, i64::MAX).await.unwrap();
    let open = store.load_open_trades().await.unwrap().len();
    let equity = store
        .equity_curve("sim", "default", i64::MIN, i64::MAX)
        .await
        .unwrap()
        .last()
        .map(|p| p.equity)
        .unwrap_or_default();
    (trades, open, equity)
}

fn same(
    case: &str,
    bt: &BacktestResult,
    daemon: &(Vec<TradeRecord>, usize, rust_decimal::Decimal),
) {
    let (trades, open, equity) = daemon;
    let show = |t: &TradeRecord| {
        format!(
            "{} {} {}→{} {}→{} q{} {} pnl {} fees {} sl {:?}/{:?} t {:?}/{:?}",
            t.symbol,
            t.side.as_str(),
            t.entry_time,
            t.exit_time,
            t.entry_price,
            t.exit_price,
            t.quantity,
            t.exit_reason.as_str(),
            t.pnl,
            t.fees,
            t.stop_loss,
            t.final_stop,
            t.target_1,
            t.target_2
        )
    };
    let a: Vec<String> = bt.trades.iter().map(show).collect();
    let b: Vec<String> = trades.iter().map(show).collect();
    if a != b {
        let first = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        panic!(
            "{case}: {} trades in the backtest, {} in the daemon; first difference at {first}:\n backtest {:?}\n daemon   {:?}",
            a.len(),
            b.len(),
            a.get(first),
            b.get(first)
        );
    }
    assert_eq!(bt.open_positions.len(), *open, "{case}: open positions");
    let bt_equity = bt.equity.last().map(|p| p.equity).unwrap_or_default();
    assert_eq!(bt_equity, *equity, "{case}: final equity");
}

fn golden_cross() -> Case {
    Case {
        name: "golden-cross",
        pipeline: read("pipelines/golden-cross.yaml"),
        scanners: vec![("megacaps", read("scanners/megacaps.yaml"))],
        risk: vec![("default", read("risk/default.yaml"))],
        data: ["AAPL", "GOOG", "SPY"]
            .iter()
            .map(|s| root().join(format!("examples/data/{s}.csv")))
            .collect(),
        start: "2008-01-02",
    }
}

fn rsi_reversion() -> Case {
    Case {
        name: "rsi-reversion",
        pipeline: read("pipelines/rsi-reversion.yaml"),
        scanners: vec![("megacaps", read("scanners/megacaps.yaml"))],
        risk: vec![("default", read("risk/default.yaml"))],
        data: ["AAPL", "GOOG", "SPY"]
            .iter()
            .map(|s| root().join(format!("examples/data/{s}.csv")))
            .collect(),
        start: "2012-01-03",
    }
}

const LOOSE_RISK: &str = "sizing: { risk_per_trade_pct: 1, max_position_pct: 50 }\nlimits: { max_pipeline_capital_pct: 100, max_deployed_pct: 100, max_correlated_positions: 10 }\ntrade: { require_stop_loss: false, min_reward_risk: 0, min_profit_margin_pct: 0, allow_short: true }\n";

fn sma_cross() -> Case {
    Case {
        name: "sma-cross",
        pipeline: "mode: simulation\nbroker: sim\nsymbols: [YHOO]\nrisk: loose\ntrigger: { bar_close: { timeframe: 1d } }\nnodes:\n  - { id: data, agent: market_data, config: { timeframes: [1d], indicators: [sma_10, sma_20] } }\n  - id: strategy\n    agent: strategy\n    config:\n      kind: rules\n      timeframe: 1d\n      long_entry: \"crossed_above(sma_10, sma_20)\"\n      long_exit: \"crossed_below(sma_10, sma_20)\"\n  - { id: risk, agent: risk_manager }\n  - { id: trade, agent: trade_manager }\n".into(),
        scanners: vec![],
        risk: vec![("loose", LOOSE_RISK.into())],
        data: vec![root().join("examples/data/YHOO.csv")],
        start: "1999-01-04",
    }
}

fn long_short() -> Case {
    Case {
        name: "long-short",
        pipeline: "mode: simulation\nbroker: sim\nsymbols: [AAPL, SPY]\nrisk: ls\ntrigger: { bar_close: { timeframe: 1d } }\nnodes:\n  - { id: data, agent: market_data, config: { timeframes: [1d], indicators: [ema_10, ema_30, atr_14] } }\n  - id: strategy\n    agent: strategy\n    config:\n      kind: rules\n      timeframe: 1d\n      long_entry: \"crossed_above(ema_10, ema_30)\"\n      stop_loss: \"close - 1.5 * atr_14\"\n      target_1: \"close + 1.5 * atr_14\"\n      target_2: \"close + 4 * atr_14\"\n      short_entry: \"crossed_below(ema_10, ema_30)\"\n      short_stop_loss: \"close + 1.5 * atr_14\"\n      short_target_1: \"close - 1.5 * atr_14\"\n      short_target_2: \"close - 4 * atr_14\"\n  - { id: risk, agent: risk_manager }\n  - { id: trade, agent: trade_manager, config: { partial_exit_pct: 50, move_stop_to_breakeven: true } }\n".into(),
        scanners: vec![],
        risk: vec![(
            "ls",
            "sizing: { risk_per_trade_pct: 1, max_position_pct: 40 }\nlimits: { max_pipeline_capital_pct: 100, max_deployed_pct: 100, max_correlated_positions: 10 }\ntrade: { require_stop_loss: true, min_reward_risk: 0.9, min_profit_margin_pct: 0, allow_short: true }\n".into(),
        )],
        data: ["AAPL", "SPY"]
            .iter()
            .map(|s| root().join(format!("examples/data/{s}.csv")))
            .collect(),
        start: "2010-01-04",
    }
}

fn window_flatten() -> Case {
    Case {
        name: "intraday-window",
        pipeline: "mode: simulation\nbroker: sim\nsymbols: [INDEX5]\nrisk: loose\ntrigger: { bar_close: { timeframe: 5m } }\nwindow: { start: \"09:35\", end: \"15:00\", timezone: America/New_York, flatten_at_end: true }\nnodes:\n  - { id: data, agent: market_data, config: { timeframes: [5m], indicators: [ema_5, ema_20] } }\n  - id: strategy\n    agent: strategy\n    config:\n      kind: rules\n      timeframe: 5m\n      long_entry: \"crossed_above(ema_5, ema_20)\"\n      short_entry: \"crossed_below(ema_5, ema_20)\"\n  - { id: risk, agent: risk_manager }\n  - { id: trade, agent: trade_manager }\n".into(),
        scanners: vec![],
        risk: vec![("loose", LOOSE_RISK.into())],
        data: vec![root().join("examples/data/intraday/INDEX5.csv")],
        start: "2006-01-04",
    }
}

fn daily_loss_flatten() -> Case {
    Case {
        name: "daily-loss",
        pipeline: "mode: simulation\nbroker: sim\nsymbols: [INDEX5]\nrisk: tight\ntrigger: { bar_close: { timeframe: 5m } }\nnodes:\n  - { id: data, agent: market_data, config: { timeframes: [5m], indicators: [ema_3, ema_8] } }\n  - id: strategy\n    agent: strategy\n    config:\n      kind: rules\n      timeframe: 5m\n      long_entry: \"crossed_above(ema_3, ema_8)\"\n      long_exit: \"crossed_below(ema_3, ema_8)\"\n  - { id: risk, agent: risk_manager }\n  - { id: trade, agent: trade_manager }\n".into(),
        scanners: vec![],
        risk: vec![(
            "tight",
            "sizing: { risk_per_trade_pct: 1, max_position_pct: 90 }\nlimits: { max_pipeline_capital_pct: 100, max_deployed_pct: 100, max_correlated_positions: 10, daily_loss_usd: 150, daily_loss_action: flatten }\ntrade: { require_stop_loss: false, min_reward_risk: 0, min_profit_margin_pct: 0, allow_short: false }\n".into(),
        )],
        data: vec![root().join("examples/data/intraday/INDEX5.csv")],
        start: "2006-01-04",
    }
}

async fn check(case: Case, expect: impl Fn(&BacktestResult)) {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let bt = backtest(&case, a.path()).await;
    expect(&bt);
    let d = replay(&case, b.path()).await;
    same(case.name, &bt, &d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_pipelines_trade_the_same_in_backtest_and_daemon() {
    check(golden_cross(), |bt| {
        assert!(bt.trades.len() >= 3, "{}", bt.trades.len())
    })
    .await;
    check(rsi_reversion(), |bt| {
        assert!(bt.trades.len() >= 5, "{}", bt.trades.len())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sma_cross_trades_the_same_in_backtest_and_daemon() {
    check(sma_cross(), |bt| {
        assert!(bt.trades.len() >= 50, "{}", bt.trades.len())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_exits_breakeven_and_shorts_trade_the_same() {
    check(long_short(), |bt| {
        let reasons: Vec<OrderPurpose> = bt.trades.iter().map(|t| t.exit_reason).collect();
        assert!(
            bt.trades.iter().any(|t| t.side.as_str() == "short"),
            "no short"
        );
        assert!(
            reasons.contains(&OrderPurpose::Target2),
            "no target 2: {reasons:?}"
        );
        // A stop moved to breakeven after target 1.
        assert!(
            bt.trades
                .iter()
                .any(|t| t.final_stop.is_some() && t.final_stop != t.stop_loss),
            "no stop moved"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trading_window_with_flatten_at_end_trades_the_same() {
    check(window_flatten(), |bt| {
        assert!(
            bt.trades
                .iter()
                .any(|t| t.exit_reason == OrderPurpose::EndOfWindow),
            "nothing flattened at the window end"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_loss_flatten_trades_the_same() {
    check(daily_loss_flatten(), |bt| {
        assert!(
            bt.trades
                .iter()
                .any(|t| t.exit_reason == OrderPurpose::RiskFlatten),
            "the daily loss never flattened: {:?}",
            bt.trades.iter().map(|t| t.exit_reason).collect::<Vec<_>>()
        );
    })
    .await;
}
