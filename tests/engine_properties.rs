//! Properties of the trading core over random price paths, random risk policies and random
//! stop and target distances, driven through the real engine: the same [`Account`] and
//! [`PipelineRunner`] the backtest and the daemon use, with the simulated broker behind the
//! `Broker` trait. After every step: cash + positions = equity, fees included; every open
//! trade entered with a stop has working stop orders for all its shares; every entry sent
//! respects the policy; a pending entry is never doubled.

use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use std::collections::BTreeMap;
use std::sync::Arc;
use ztraded::broker::{OrderPurpose, Side, connect};
use ztraded::config::load::load_dir;
use ztraded::config::settings::{BrokerSettings, SimulatedBroker};
use ztraded::engine::clock::{Clock, ManualClock, utc};
use ztraded::engine::core::History;
use ztraded::market::replay::Series;
use ztraded::market::{Bar, Timeframe};
use ztraded::runtime::{Account, AccountOptions, PipelineRunner, ReplayHub};

#[derive(Clone, Debug)]
struct Case {
    stop_atr: f64,
    t1_atr: f64,
    t2_atr: f64,
    risk_tenths: u32,
    max_pos: u32,
    max_pipe: u32,
    max_dep: u32,
    rr: u32,
    shorts: bool,
    pyramiding: bool,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        (0.5f64..4.0, 0.5f64..6.0, 0.5f64..9.0),
        (1u32..30, 1u32..100, 5u32..100, 10u32..100, 0u32..4),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (stop_atr, t1_atr, t2_atr),
                (risk_tenths, max_pos, max_pipe, max_dep, rr),
                (shorts, pyramiding),
            )| Case {
                stop_atr,
                t1_atr,
                t2_atr,
                risk_tenths,
                max_pos,
                max_pipe,
                max_dep,
                rr,
                shorts,
                pyramiding,
            },
        )
}

/// A random walk of daily bars: (return, range, gap) per step.
fn path() -> impl Strategy<Value = Vec<(f64, f64, f64)>> {
    proptest::collection::vec((-0.08f64..0.08, 0.0f64..0.06, -0.03f64..0.03), 30..120)
}

fn write_config(dir: &std::path::Path, c: &Case) {
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    std::fs::create_dir_all(dir.join("risk")).unwrap();
    let short = if c.shorts {
        format!(
            "      short_entry: \"close < prev(close)\"\n      short_stop_loss: \"close + {s} * atr_5\"\n      short_target_1: \"close - {t1} * atr_5\"\n      short_target_2: \"close - {t2} * atr_5\"\n",
            s = c.stop_atr,
            t1 = c.t1_atr,
            t2 = c.t2_atr
        )
    } else {
        String::new()
    };
    std::fs::write(
        dir.join("pipelines/p.yaml"),
        format!(
            "mode: simulation\nbroker: sim\nsymbols: [AAA, BBB]\nrisk: r\ntrigger: {{ bar_close: {{ timeframe: 1d }} }}\nnodes:\n  - {{ id: data, agent: market_data, config: {{ timeframes: [1d], indicators: [atr_5] }} }}\n  - id: strategy\n    agent: strategy\n    config:\n      kind: rules\n      timeframe: 1d\n      long_entry: \"close > prev(close)\"\n      stop_loss: \"close - {s} * atr_5\"\n      target_1: \"close + {t1} * atr_5\"\n      target_2: \"close + {t2} * atr_5\"\n{short}  - {{ id: risk, agent: risk_manager }}\n  - {{ id: trade, agent: trade_manager, config: {{ partial_exit_pct: 50, move_stop_to_breakeven: true, allow_pyramiding: {pyr} }} }}\n",
            s = c.stop_atr,
            t1 = c.t1_atr,
            t2 = c.t2_atr,
            pyr = c.pyramiding
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("risk/r.yaml"),
        format!(
            "sizing: {{ risk_per_trade_pct: {}, max_position_pct: {} }}\nlimits: {{ max_pipeline_capital_pct: {}, max_deployed_pct: {}, max_correlated_positions: 10 }}\ntrade: {{ require_stop_loss: true, min_reward_risk: {}, min_profit_margin_pct: 0, allow_short: {} }}\n",
            Decimal::new(c.risk_tenths as i64, 1),
            c.max_pos,
            c.max_pipe,
            c.max_dep,
            c.rr as f64 * 0.5,
            c.shorts
        ),
    )
    .unwrap();
}

fn series(walk: &[(f64, f64, f64)]) -> BTreeMap<String, Series> {
    let mut out = BTreeMap::new();
    for (k, symbol) in ["AAA", "BBB"].iter().enumerate() {
        let mut close = if k == 0 { 50.0 } else { 120.0 };
        let mut bars = Vec::new();
        for (step, (ret, range, gap)) in walk.iter().enumerate() {
            // Daily bars stamped at local midnight (New York).
            let ts = 1_325_566_800 + step as i64 * 86_400;
            let r = if k == 0 { *ret } else { -ret * 0.7 };
            let open = (close * (1.0 + gap)).max(1.0);
            let c = (open * (1.0 + r)).max(1.0);
            let high = open.max(c) * (1.0 + range);
            let low = (open.min(c) * (1.0 - range)).max(0.5);
            close = c;
            bars.push(Bar {
                ts,
                open,
                high,
                low,
                close: c,
                volume: 1e6,
            });
        }
        out.insert(
            symbol.to_string(),
            Series {
                symbol: symbol.to_string(),
                timeframe: Timeframe::D1,
                bars,
            },
        );
    }
    out
}

/// Runs the case; returns the number of entries sent.
fn run_case(walk: &[(f64, f64, f64)], case: &Case, seed: u64) -> Result<u64, TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), case);
    let set = load_dir(dir.path());
    prop_assert_eq!(set.errors(), 0, "{:?}", set.findings);
    let spec = ztraded::runtime::spec::build("p", &set).unwrap();
    let tz = chrono_tz::America::New_York;
    let hub = Arc::new(ReplayHub::from_series(series(walk), tz));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let start = hub.first_end().unwrap() - 1;
        let clock = Arc::new(ManualClock::new(utc(start)));
        let c2 = Arc::clone(&clock);
        let config = SimulatedBroker {
            seed,
            ..SimulatedBroker::default()
        };
        let broker = connect(
            "sim",
            &BrokerSettings::Simulated(config),
            Arc::new(move || c2.now().timestamp()),
            None,
            Vec::new(),
        )
        .unwrap();
        let account = Account::new(
            vec![Arc::clone(&broker)],
            AccountOptions {
                store: None,
                metrics: None,
                clock: Arc::clone(&clock) as Arc<dyn Clock>,
                keep_history: true,
            },
        );
        account.refresh_all().await;
        let mut runner = PipelineRunner::new(
            spec,
            tz,
            Arc::clone(&hub) as Arc<dyn History>,
            Arc::new(ztraded::agents::NoLlm),
            start,
            &account,
            false,
            false,
        );
        let pct = |n: u32| Decimal::from(n) / Decimal::ONE_HUNDRED;
        let mut seen_entries = std::collections::BTreeSet::new();
        let mut entries = 0u64;
        for batch in hub.batches_after(start) {
            clock.set(utc(batch.end));
            let equity_before = account.ledger().account("sim").unwrap().equity;
            account.on_bars(&batch, tz).await;
            // Cash + positions = equity, exactly, fees included.
            let a = broker.account().await.unwrap();
            let positions = broker.positions().await.unwrap();
            let value: Decimal = positions.iter().map(|p| p.quantity * p.market_price).sum();
            prop_assert_eq!(a.cash + value, a.equity);
            // Every open trade entered with a stop has working stops for all its shares.
            {
                let ledger = account.ledger();
                for t in ledger.open_trades() {
                    if t.initial_stop.is_none() {
                        continue;
                    }
                    let covered: Decimal = ledger
                        .working(&t.pipeline, &t.symbol)
                        .filter(|w| w.order.purpose == OrderPurpose::StopLoss)
                        .map(|w| w.order.quantity - w.order.filled_quantity)
                        .sum();
                    prop_assert!(
                        covered >= t.quantity,
                        "{:?} lacks its stop: {} covered",
                        t,
                        covered
                    );
                }
            }
            let equity = a.equity;
            runner.step(batch.end, &batch.bars, &account).await;
            // Every entry sent this step respects the policy (sized on the equity of the
            // decision, at the expected price).
            let ledger = account.ledger();
            let pending: Vec<_> = ledger.book().pending_entries().cloned().collect();
            let mut per_symbol: BTreeMap<String, usize> = BTreeMap::new();
            for e in &pending {
                *per_symbol.entry(e.symbol.clone()).or_default() += 1;
                if !seen_entries.insert(e.client_order_id.clone()) {
                    continue;
                }
                entries += 1;
                let price = e.expected_price.unwrap();
                let notional = e.quantity * price;
                let _ = equity_before;
                prop_assert!(e.quantity >= Decimal::ONE && e.quantity.fract().is_zero());
                prop_assert!(
                    notional <= equity * pct(case.max_pos) + price,
                    "{} > {}% of {}",
                    notional,
                    case.max_pos,
                    equity
                );
                prop_assert!(notional <= equity * pct(case.max_dep) + price);
                if e.side == Side::Sell {
                    prop_assert!(case.shorts);
                }
                let stop = e.stop_loss.unwrap();
                let loss = (price - stop).abs() * e.quantity;
                let budget = equity * Decimal::new(case.risk_tenths as i64, 3);
                prop_assert!(
                    loss <= budget + Decimal::from_f64(1e-6).unwrap(),
                    "risk {} > {}",
                    loss,
                    budget
                );
                let loss_side = if e.side == Side::Buy {
                    stop < price
                } else {
                    stop > price
                };
                prop_assert!(loss_side, "stop on the wrong side");
                let legs: Decimal = e.take_profits.iter().map(|t| t.quantity).sum();
                prop_assert!(legs <= e.quantity);
            }
            // Without pyramiding an entry is never sent while another one is pending.
            if !case.pyramiding {
                for (symbol, n) in per_symbol {
                    prop_assert!(n <= 1, "{} entries pending in {}", n, symbol);
                }
            }
        }
        Ok(entries)
    })
}

static ENTRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn orders_respect_the_policy_and_the_books_balance(
        walk in path(),
        case in cases(),
        seed in any::<u64>(),
    ) {
        let n = run_case(&walk, &case, seed)?;
        ENTRIES.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn the_property_exercises_approved_orders() {
    // A fixed case with room to trade: the property above must see entries, or it proves
    // nothing.
    let walk: Vec<(f64, f64, f64)> = (0..100)
        .map(|i| ([0.04, 0.035, -0.05, -0.045][i % 4], 0.02, 0.0))
        .collect();
    let case = Case {
        stop_atr: 0.7,
        t1_atr: 1.0,
        t2_atr: 1.5,
        risk_tenths: 10,
        max_pos: 30,
        max_pipe: 60,
        max_dep: 90,
        rr: 2,
        shorts: true,
        pyramiding: false,
    };
    let n = run_case(&walk, &case, 7).unwrap();
    assert!(n >= 5, "only {n} entries");
}
