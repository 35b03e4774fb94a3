//! Backtest speed and memory: a rules pipeline over 500,000 generated one-minute bars, the
//! time to write its output files, the shipped daily files, and the memory one pipeline's
//! compiled DAG and feeds take. `scripts/bench-backtest` measures the whole command end to
//! end against backtesting.py.
//!
//! Run: `cargo bench --bench backtest`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;
use ztraded::backtest::runner::{BacktestOptions, run};

fn write_minutes(path: &Path, n: usize) {
    let mut s = String::with_capacity(n * 64);
    s.push_str("Date,Time,Open,High,Low,Close,Volume\n");
    let mut price = 100.0f64;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut t = chrono::NaiveDate::from_ymd_opt(2010, 1, 4)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    for _ in 0..n {
        // xorshift: a deterministic random walk.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let r = ((x % 2001) as f64 - 1000.0) / 1000.0 * 0.002;
        let open = price;
        let close = (price * (1.0 + r)).max(1.0);
        let high = open.max(close) * 1.0005;
        let low = open.min(close) * 0.9995;
        let _ = writeln!(
            s,
            "{},{},{open:.4},{high:.4},{low:.4},{close:.4},{}",
            t.format("%Y-%m-%d"),
            t.format("%H:%M:%S"),
            1000 + x % 5000
        );
        price = close;
        t += chrono::Duration::minutes(1);
    }
    std::fs::write(path, s).expect("write data");
}

const PIPELINE: &str = r#"mode: simulation
symbols: [SYN]
risk: bench
trigger: { bar_close: { timeframe: 1m } }
nodes:
  - id: data
    agent: market_data
    config: { timeframes: [1m], indicators: [sma_50, sma_200, ema_20, rsi_14, atr_14, macd_12_26_9] }
  - id: bias
    agent: bias
    config: { kind: rules, bullish: "close > sma_200", bearish: "close < sma_200" }
  - id: strategy
    agent: strategy
    config:
      kind: rules
      timeframe: 1m
      long_entry: "crossed_above(sma_50, sma_200) && rsi_14 < 70"
      long_exit: "crossed_below(ema_20, sma_50)"
      stop_loss: "close - 2 * atr_14"
      target_1: "close + 3 * atr_14"
      target_2: "close + 6 * atr_14"
  - id: risk
    agent: risk_manager
  - id: trade
    agent: trade_manager
  - id: report
    agent: reporting
"#;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4)
}

fn main() {
    // Memory first, on a fresh heap (freed memory of later runs would hide the growth).
    memory();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    for sub in ["pipelines", "risk", "data"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    std::fs::write(
        root.join("ztraded.toml"),
        "[market_data]\ntimezone = \"UTC\"\n",
    )
    .expect("write");
    std::fs::write(root.join("risk/bench.yaml"), "sizing: { risk_per_trade_pct: 1, max_position_pct: 50 }\nlimits: { max_pipeline_capital_pct: 100, max_deployed_pct: 100 }\n").expect("write");
    std::fs::write(root.join("pipelines/minutes.yaml"), PIPELINE).expect("write");
    let n = 500_000;
    write_minutes(&root.join("data/SYN.csv"), n);
    let options = BacktestOptions {
        data_dir: root.join("data"),
        from: None,
        to: None,
        keep_records: false,
        progress: None,
        llm: Default::default(),
        llm_file: None,
        max_cost_usd: None,
    };
    let mut best = f64::MAX;
    let mut trades = 0;
    let mut last = None;
    for _ in 0..3 {
        let start = Instant::now();
        let r = runtime
            .block_on(run(&root.join("pipelines/minutes.yaml"), &options))
            .expect("backtest");
        best = best.min(start.elapsed().as_secs_f64());
        trades = r.trades.len();
        assert_eq!(r.bars, n as u64);
        last = Some(r);
    }
    // Reading and parsing the CSV is part of the run above; time it alone to separate it.
    let start = Instant::now();
    let series = ztraded::market::replay::read_file(
        &root.join("data/SYN.csv"),
        &ztraded::market::replay::ReplayOptions {
            timezone: chrono_tz::UTC,
            stamp: ztraded::config::settings::BarStamp::Start,
        },
    )
    .expect("read");
    let read = start.elapsed().as_secs_f64();
    assert_eq!(series.bars.len(), n);
    println!(
        "backtest: {n} one-minute bars, 6 indicators, full DAG on every bar: {best:.3} s best of 3 = {:.0} bars/s end to end ({trades} trades); CSV reading alone {read:.3} s, engine alone {:.0} bars/s",
        n as f64 / best,
        n as f64 / (best - read).max(1e-9)
    );
    if let Some(r) = &last {
        outputs(r, root);
    }
    // The shipped daily files, every symbol.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR"));
    let daily = BacktestOptions {
        data_dir: examples.join("examples/data"),
        from: None,
        to: None,
        keep_records: false,
        progress: None,
        llm: Default::default(),
        llm_file: None,
        max_cost_usd: None,
    };
    for pipeline in [
        "pipelines/golden-cross.yaml",
        "pipelines/rsi-reversion.yaml",
    ] {
        let start = Instant::now();
        let r = runtime
            .block_on(run(&examples.join(pipeline), &daily))
            .expect("backtest");
        let secs = start.elapsed().as_secs_f64();
        println!(
            "backtest: {pipeline} over the daily files ({} bars, {}): {secs:.3} s = {:.0} bars/s, {} trades",
            r.bars,
            r.symbols.join(", "),
            r.bars as f64 / secs,
            r.trades.len()
        );
    }
}

/// The files `ztraded backtest` writes for the 500,000-bar run, timed one by one (best of
/// three): trades.csv, equity.csv with one row per bar and a benchmark column, equity.svg.
fn outputs(r: &ztraded::backtest::runner::BacktestResult, root: &Path) {
    use ztraded::backtest::output::{
        EquityChart, write_equity_csv, write_equity_svg, write_trades_csv,
    };
    let bench: Vec<rust_decimal::Decimal> = r.equity.iter().map(|p| p.equity).collect();
    let series: Vec<(i64, rust_decimal::Decimal)> =
        r.equity.iter().map(|p| (p.ts, p.equity)).collect();
    let time = |f: &dyn Fn()| {
        (0..3)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::MAX, f64::min)
    };
    let trades = time(&|| {
        write_trades_csv(&root.join("trades.csv"), &r.trades, r.timezone).expect("trades.csv")
    });
    let equity = time(&|| {
        write_equity_csv(&root.join("equity.csv"), &r.equity, None, Some(&bench))
            .expect("equity.csv")
    });
    let svg = time(&|| {
        write_equity_svg(
            &root.join("equity.svg"),
            &EquityChart {
                title: "minutes — equity",
                points: &r.equity,
                benchmark: &series,
                benchmark_label: "SYN",
                tz: r.timezone,
            },
        )
        .expect("equity.svg")
    });
    let size = |f: &str| std::fs::metadata(root.join(f)).map_or(0, |m| m.len());
    println!(
        "outputs: trades.csv {trades:.1} ms ({} trades, {} bytes), equity.csv {equity:.1} ms ({} rows, {} bytes), equity.svg {svg:.1} ms ({} bytes)",
        r.trades.len(),
        size("trades.csv"),
        r.equity.len(),
        size("equity.csv"),
        size("equity.svg")
    );
}

fn memory() {
    // Memory of one pipeline: compiled DAG plus feeds for 3 symbols, warmed up.
    let set = ztraded::config::load::load_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    let spec = set.pipelines["golden-cross"]
        .spec
        .clone()
        .expect("pipeline");
    let policy = set.risk["default"].spec.clone();
    let count = 5_000;
    let before = rss_kib();
    let mut keep = Vec::with_capacity(count);
    let bar = ztraded::market::Bar {
        ts: 0,
        open: 1.0,
        high: 1.0,
        low: 1.0,
        close: 1.0,
        volume: 1.0,
    };
    for _ in 0..count {
        let compiled = ztraded::engine::pipeline::CompiledPipeline::compile(
            "golden-cross",
            &spec,
            policy.as_ref(),
        )
        .expect("compile");
        let feeds: Vec<_> = ["AAPL", "GOOG", "SPY"]
            .iter()
            .map(|s| {
                let mut f = ztraded::engine::feed::SymbolFeed::new(
                    s,
                    ztraded::market::Timeframe::D1,
                    chrono_tz::UTC,
                    &compiled.layout,
                )
                .expect("feed");
                for i in 0..400 {
                    f.push(
                        &ztraded::market::Bar {
                            ts: i * 86_400,
                            ..bar
                        },
                        (i + 1) * 86_400,
                    );
                }
                f
            })
            .collect();
        keep.push((compiled, feeds));
    }
    let after = rss_kib();
    println!(
        "memory: {:.1} KiB per pipeline (compiled golden-cross DAG + 3 warmed-up daily feeds with sma_50, sma_200, rsi_14, atr_14; {count} pipelines, RSS +{} KiB)",
        (after.saturating_sub(before)) as f64 / count as f64,
        after.saturating_sub(before)
    );
    drop(keep);
}
