//! The trading core through its drivers, with a manual clock, the simulated broker behind
//! the `Broker` trait and a real SQLite store: the bugs a hostile trial of the daemon found,
//! each pinned down.

use rust_decimal::Decimal;
use rust_decimal::dec;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use ztraded::backtest::runner::{BacktestOptions, run};
use ztraded::broker::{Broker, OrderPurpose, OrderStatus, connect};
use ztraded::config::load::load_dir;
use ztraded::config::settings::{BrokerSettings, SimulatedBroker};
use ztraded::engine::clock::{Clock, ManualClock, utc};
use ztraded::engine::core::{BarBatch, CoreCommand, History, PipelineSpec};
use ztraded::market::replay::Series;
use ztraded::market::{Bar, Timeframe};
use ztraded::runtime::{Account, AccountOptions, PipelineRunner, ReplayHub};
use ztraded::store::Store;

const TZ: chrono_tz::Tz = chrono_tz::America::New_York;
/// 2012-01-03 00:00 New York.
const DAY0: i64 = 1_325_566_800;

/// Daily bars of `SYM`: a slow rise, so an "always" entry stays in profit.
fn bars(n: usize) -> BTreeMap<String, Series> {
    let bars = (0..n)
        .map(|i| {
            let c = 100.0 + i as f64 * 0.5;
            Bar {
                ts: DAY0 + i as i64 * 86_400,
                open: c - 0.2,
                high: c + 0.6,
                low: c - 0.6,
                close: c,
                volume: 1e6,
            }
        })
        .collect();
    BTreeMap::from([(
        "SYM".to_string(),
        Series {
            symbol: "SYM".into(),
            timeframe: Timeframe::D1,
            bars,
        },
    )])
}

const RISK: &str = "sizing: { risk_per_trade_pct: 1, max_position_pct: 20 }\nlimits: { max_pipeline_capital_pct: 100, max_deployed_pct: 100, max_correlated_positions: 10 }\ntrade: { require_stop_loss: true, min_reward_risk: 1, min_profit_margin_pct: 0, allow_short: false }\n";

fn pipeline(trigger: &str, pyramiding: bool) -> String {
    pipeline_with(trigger, pyramiding, 2.0)
}

/// `stop` ATRs to the stop (targets at 1.5 and 3 times that).
fn pipeline_with(trigger: &str, pyramiding: bool, stop: f64) -> String {
    let (t1, t2) = (stop * 1.5, stop * 3.0);
    format!(
        "mode: simulation\nbroker: sim\nsymbols: [SYM]\nrisk: r\ntrigger: {trigger}\nnodes:\n  - {{ id: data, agent: market_data, config: {{ timeframes: [1d], indicators: [atr_3] }} }}\n  - id: strategy\n    agent: strategy\n    config:\n      kind: rules\n      timeframe: 1d\n      long_entry: \"close > 0\"\n      stop_loss: \"close - {stop} * atr_3\"\n      target_1: \"close + {t1} * atr_3\"\n      target_2: \"close + {t2} * atr_3\"\n  - {{ id: risk, agent: risk_manager }}\n  - {{ id: trade, agent: trade_manager, config: {{ partial_exit_pct: 50, move_stop_to_breakeven: true, allow_pyramiding: {pyramiding} }} }}\n"
    )
}

fn config(dir: &Path, pipeline: &str) {
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    std::fs::create_dir_all(dir.join("risk")).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("pipelines/p.yaml"), pipeline).unwrap();
    std::fs::write(dir.join("risk/r.yaml"), RISK).unwrap();
    std::fs::write(
        dir.join("ztraded.toml"),
        "[brokers.sim]\nkind = \"simulated\"\ninitial_balance = 100000\nslippage_pct = 0\ncommission_per_share = 0\n",
    )
    .unwrap();
    let mut csv = String::from("Date,Open,High,Low,Close,Volume\n");
    for b in &bars(60)["SYM"].bars {
        let d = utc(b.ts).with_timezone(&TZ).date_naive();
        csv.push_str(&format!(
            "{d},{},{},{},{},{}\n",
            b.open, b.high, b.low, b.close, b.volume
        ));
    }
    std::fs::write(dir.join("data/SYM.csv"), csv).unwrap();
}

fn spec(dir: &Path) -> PipelineSpec {
    let set = load_dir(dir);
    assert_eq!(set.errors(), 0, "{:?}", set.findings);
    ztraded::runtime::spec::build("p", &set).unwrap()
}

/// A driver like the daemon's: an account over a simulated broker (restored from `store`
/// when it holds one), and a runner.
struct Rig {
    clock: Arc<ManualClock>,
    broker: Arc<dyn Broker>,
    account: Account,
    runner: PipelineRunner,
    hub: Arc<ReplayHub>,
}

async fn rig(dir: &Path, store: Option<Store>, start: i64) -> Rig {
    let clock = Arc::new(ManualClock::new(utc(start)));
    let c = Arc::clone(&clock);
    let saved = match &store {
        Some(s) => s.load_broker_state("sim").await.unwrap().map(|b| b.state),
        None => None,
    };
    let broker = connect(
        "sim",
        &BrokerSettings::Simulated(SimulatedBroker {
            slippage_pct: ztraded::config::common::Percent::new(Decimal::ZERO),
            commission_per_share: Decimal::ZERO,
            ..SimulatedBroker::default()
        }),
        Arc::new(move || c.now().timestamp()),
        saved,
        Vec::new(),
    )
    .unwrap();
    let account = Account::new(
        vec![Arc::clone(&broker)],
        AccountOptions {
            store,
            metrics: None,
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            keep_history: true,
        },
    );
    account.recover().await.unwrap();
    account.refresh_all().await;
    let hub = Arc::new(ReplayHub::from_series(bars(60), TZ));
    let runner = PipelineRunner::new(
        spec(dir),
        TZ,
        Arc::clone(&hub) as Arc<dyn History>,
        Arc::new(ztraded::agents::NoLlm),
        start,
        &account,
        true,
        true,
    );
    Rig {
        clock,
        broker,
        account,
        runner,
        hub,
    }
}

impl Rig {
    fn batches(&self, after: i64) -> Vec<BarBatch> {
        self.hub.batches_after(after).collect()
    }
    async fn bar(&mut self, batch: &BarBatch) {
        self.clock.set(utc(batch.end));
        self.account.on_bars(batch, TZ).await;
        self.runner
            .step(batch.end, &batch.bars, &self.account)
            .await;
    }
    async fn tick(&mut self, t: i64) {
        self.clock.set(utc(t));
        self.account.roll_day(t, TZ);
        self.runner.step(t, &[], &self.account).await;
    }
}

#[tokio::test]
async fn an_entry_pending_at_the_broker_counts_as_a_position() {
    // An hourly schedule on daily bars: between two bars the entry sent at the first
    // execution is still pending; without pyramiding no second one may go out.
    let dir = tempfile::tempdir().unwrap();
    config(
        dir.path(),
        &pipeline("{ schedule: { interval: 1h } }", false),
    );
    let start = DAY0 + 20 * 86_400;
    let mut rig = rig(dir.path(), None, start).await;
    let next = rig.batches(start)[0].end;
    let mut t = start;
    while let Some(w) = rig.runner.core().next_wake().filter(|w| *w < next) {
        t = w;
        rig.tick(t).await;
    }
    assert!(t > start + 10 * 3600, "the schedule did not fire: {t}");
    let open = rig.broker.open_orders().await.unwrap();
    let entries: Vec<_> = open
        .iter()
        .filter(|o| o.purpose == OrderPurpose::Entry)
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    // The same through `ztraded backtest`: every trade ends before the next one starts.
    let result = run(
        &dir.path().join("pipelines/p.yaml"),
        &BacktestOptions {
            data_dir: dir.path().join("data"),
            from: None,
            to: None,
            keep_records: false,
            progress: None,
            llm: Default::default(),
            llm_file: None,
            max_cost_usd: None,
        },
    )
    .await
    .unwrap();
    assert!(!result.trades.is_empty());
    for w in result.trades.windows(2) {
        assert!(
            w[1].entry_time >= w[0].exit_time,
            "overlapping trades: {w:?}"
        );
    }
}

#[tokio::test]
async fn with_pyramiding_pending_entries_count_against_the_position_cap() {
    let dir = tempfile::tempdir().unwrap();
    // A wide stop: each entry risks 1% of equity with about 8% of it, so the cap of 20%
    // lets two entries through and shrinks the third.
    config(
        dir.path(),
        &pipeline_with("{ schedule: { interval: 1h } }", true, 12.0),
    );
    let start = DAY0 + 20 * 86_400;
    let mut rig = rig(dir.path(), None, start).await;
    let next = rig.batches(start)[0].end;
    while let Some(w) = rig.runner.core().next_wake().filter(|w| *w < next) {
        rig.tick(w).await;
    }
    let equity = rig.broker.account().await.unwrap().equity;
    let open = rig.broker.open_orders().await.unwrap();
    let close =
        Decimal::try_from(rig.hub.bars_until("SYM", start).0.last().unwrap().close).unwrap();
    let notional: Decimal = open
        .iter()
        .filter(|o| o.purpose == OrderPurpose::Entry)
        .map(|o| o.quantity * close)
        .sum();
    assert!(
        open.iter()
            .filter(|o| o.purpose == OrderPurpose::Entry)
            .count()
            >= 2
    );
    // max_position_pct 20: the pending entries together stay within 20% of equity.
    assert!(
        notional <= equity * dec!(0.2),
        "{notional} > 20% of {equity}"
    );
}

async fn sqlite(dir: &Path) -> Store {
    Store::connect("sqlite://store.db", 1, dir).await.unwrap()
}

#[tokio::test]
async fn removing_a_pipeline_cancels_its_pending_entry() {
    for close in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        config(
            dir.path(),
            &pipeline("{ bar_close: { timeframe: 1d } }", false),
        );
        let start = DAY0 + 20 * 86_400;
        let store = sqlite(dir.path()).await;
        let mut rig = rig(dir.path(), Some(store), start).await;
        let batches = rig.batches(start);
        rig.bar(&batches[0]).await;
        let entry = rig
            .broker
            .open_orders()
            .await
            .unwrap()
            .into_iter()
            .find(|o| o.purpose == OrderPurpose::Entry)
            .expect("an entry is pending");
        rig.runner
            .command(CoreCommand::Remove { close }, batches[0].end, &rig.account)
            .await;
        let after = rig
            .broker
            .order(&entry.client_order_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.status, OrderStatus::Cancelled, "close={close}");
        // The next bar fills nothing; the pipeline is done.
        rig.bar(&batches[1]).await;
        assert!(
            rig.broker.positions().await.unwrap().is_empty(),
            "close={close}"
        );
        assert!(rig.runner.finished(&rig.account), "close={close}");
    }
}

#[tokio::test]
async fn removing_with_close_flattens_what_filled() {
    let dir = tempfile::tempdir().unwrap();
    config(
        dir.path(),
        &pipeline("{ bar_close: { timeframe: 1d } }", false),
    );
    let start = DAY0 + 20 * 86_400;
    let mut rig = rig(dir.path(), Some(sqlite(dir.path()).await), start).await;
    let batches = rig.batches(start);
    rig.bar(&batches[0]).await;
    rig.bar(&batches[1]).await;
    assert_eq!(rig.broker.positions().await.unwrap().len(), 1);
    rig.runner
        .command(
            CoreCommand::Remove { close: true },
            batches[1].end,
            &rig.account,
        )
        .await;
    rig.bar(&batches[2]).await;
    assert!(rig.broker.positions().await.unwrap().is_empty());
    assert!(rig.broker.open_orders().await.unwrap().is_empty());
    assert!(rig.runner.finished(&rig.account));
    let (trades, _) = rig.account.take_history();
    assert_eq!(
        trades.last().unwrap().exit_reason,
        OrderPurpose::PipelineRemoved
    );
}

#[tokio::test]
async fn a_restart_with_an_entry_pending_keeps_its_stop_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    config(
        dir.path(),
        &pipeline("{ bar_close: { timeframe: 1d } }", false),
    );
    let start = DAY0 + 20 * 86_400;
    let batches;
    let plan;
    {
        let mut rig = rig(dir.path(), Some(sqlite(dir.path()).await), start).await;
        batches = rig.batches(start);
        rig.bar(&batches[0]).await;
        plan = rig
            .account
            .ledger()
            .book()
            .pending_entries()
            .next()
            .cloned()
            .expect("an entry is pending");
        assert!(plan.stop_loss.is_some() && plan.take_profits.len() == 2);
        // The daemon dies here (no shutdown: nothing more is written).
    }
    let mut rig = rig(dir.path(), Some(sqlite(dir.path()).await), batches[0].end).await;
    rig.bar(&batches[1]).await;
    let ledger = rig.account.ledger();
    let trade = ledger
        .trade("p", "SYM")
        .expect("the entry filled after the restart");
    assert_eq!(trade.stop_loss, plan.stop_loss);
    assert_eq!(trade.initial_stop, plan.stop_loss);
    assert_eq!(
        (trade.target_1, trade.target_2),
        (
            Some(plan.take_profits[0].price),
            Some(plan.take_profits[1].price)
        )
    );
    assert!(trade.move_stop_to_breakeven);
    assert_eq!(trade.mode, "simulation");
}

#[tokio::test]
async fn working_stops_and_targets_are_in_the_orders_table_once_placed() {
    let dir = tempfile::tempdir().unwrap();
    config(
        dir.path(),
        &pipeline("{ bar_close: { timeframe: 1d } }", false),
    );
    let start = DAY0 + 20 * 86_400;
    let store = sqlite(dir.path()).await;
    let mut rig = rig(dir.path(), Some(store.clone()), start).await;
    let batches = rig.batches(start);
    rig.bar(&batches[0]).await;
    rig.bar(&batches[1]).await;
    assert_eq!(rig.broker.positions().await.unwrap().len(), 1);
    let stored = store.open_orders(Some("sim")).await.unwrap();
    let purposes: Vec<OrderPurpose> = stored.iter().map(|o| o.state.purpose).collect();
    assert!(purposes.contains(&OrderPurpose::StopLoss), "{purposes:?}");
    assert!(purposes.contains(&OrderPurpose::Target1), "{purposes:?}");
    assert!(purposes.contains(&OrderPurpose::Target2), "{purposes:?}");
    // And they agree with the broker.
    let mut at_broker: Vec<String> = rig
        .broker
        .open_orders()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.client_order_id)
        .collect();
    let mut in_store: Vec<String> = stored
        .into_iter()
        .map(|o| o.state.client_order_id)
        .collect();
    at_broker.sort();
    in_store.sort();
    assert_eq!(at_broker, in_store);
}

#[tokio::test]
async fn resume_all_clears_narrower_halts() {
    let dir = tempfile::tempdir().unwrap();
    config(
        dir.path(),
        &pipeline("{ bar_close: { timeframe: 1d } }", false),
    );
    let start = DAY0 + 20 * 86_400;
    let rig = rig(dir.path(), Some(sqlite(dir.path()).await), start).await;
    let scope = ztraded::domain::Scope::Pipeline("p".into());
    let answer = rig.account.emergency_close(&scope, "test").await;
    assert_eq!(answer["halts"].as_array().unwrap().len(), 1);
    assert!(rig.account.ledger().halted("p", "SYM").is_some());
    let answer = rig.account.resume(&ztraded::domain::Scope::All, None).await;
    assert_eq!(answer["resumed"], true);
    assert!(answer["halts"].as_array().unwrap().is_empty());
    assert!(rig.account.ledger().halted("p", "SYM").is_none());
    // Also after a restart: the stored halt went too.
    let store = sqlite(dir.path()).await;
    assert!(store.halts().await.unwrap().is_empty());
}
