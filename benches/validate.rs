//! Validation speed: a generated config directory of 2,000 pipelines, 200 scanners and 20
//! risk policies, validated with `load_dir` (parse, schema, semantics). Prints files/second.
//!
//! Run: `cargo bench --bench validate`.

use std::fmt::Write as _;
use std::time::Instant;

fn pipeline(i: usize) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"description: Generated pipeline {i}
mode: simulation
broker: sim
scanner: scanner-{scanner}
risk: policy-{risk}
trigger:
  schedule: {{ cron: "0 {minute} 10 * * Mon-Fri", timezone: America/New_York }}
window: {{ start: "09:35", end: "15:45", timezone: America/New_York, days: [mon, tue, wed, thu, fri] }}
limits: {{ max_trades_per_day: 5, daily_loss_usd: 5000 }}
nodes:
  - id: data
    agent: market_data
    config: {{ timeframes: [1h, 1d], indicators: [sma_{fast}, sma_200, rsi_14, atr_14, macd_12_26_9, bbands_20_2] }}
  - id: gate
    agent: technical_trigger
    config: {{ timeframe: 1h, when: "rsi_14 < 70 && macd > macd_signal" }}
  - id: bias
    agent: bias
    config: {{ kind: rules, bullish: "d1.close > d1.sma_200", bearish: "d1.close < d1.sma_200" }}
  - id: strategy
    agent: strategy
    config:
      kind: rules
      timeframe: 1d
      long_entry: "crossed_above(sma_{fast}, sma_200) && rsi_14 < 70"
      long_exit: "crossed_below(sma_{fast}, sma_200) || close < bb_lower"
      stop_loss: "close - 2.0 * atr_14"
      target_1: "close + 3.0 * atr_14"
      target_2: "close + 6.0 * atr_14"
  - id: risk
    agent: risk_manager
  - id: trade
    agent: trade_manager
    config: {{ partial_exit_pct: 50, move_stop_to_breakeven: true }}
  - id: report
    agent: reporting
"#,
        scanner = i % 200,
        risk = i % 20,
        minute = i % 60,
        fast = 20 + i % 30,
    );
    s
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    for sub in ["pipelines", "scanners", "risk"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    std::fs::write(
        root.join("ztraded.toml"),
        "[brokers.sim]\nkind = \"simulated\"\ninitial_balance = 1000000\n",
    )
    .expect("write");
    for i in 0..2000 {
        std::fs::write(
            root.join(format!("pipelines/pipeline-{i}.yaml")),
            pipeline(i),
        )
        .expect("write");
    }
    for i in 0..200 {
        std::fs::write(
            root.join(format!("scanners/scanner-{i}.yaml")),
            format!("tickers: [AAPL, GOOG, SPY, T{i}]\nsignals:\n  - {{ type: golden_cross, timeframe: 1d }}\n"),
        )
        .expect("write");
    }
    for i in 0..20 {
        std::fs::write(
            root.join(format!("risk/policy-{i}.yaml")),
            "sizing: { risk_per_trade_pct: 0.5, max_position_pct: 5 }\nlimits: { daily_loss_usd: 10000 }\n",
        )
        .expect("write");
    }
    let files = 2000 + 200 + 20 + 1;
    // Warm-up (schema compilation happens once per process).
    let set = ztraded::config::load::load_dir(root);
    assert_eq!(set.errors(), 0, "{:?}", set.findings.first());
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let set = ztraded::config::load::load_dir(root);
        times.push(start.elapsed());
        assert_eq!(set.pipelines.len(), 2000);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "validate: {files} files (2000 pipelines, 200 scanners, 20 risk policies) in {:.3} s median of 5 (min {:.3} s, max {:.3} s) = {:.0} files/s on {} threads",
        median.as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64(),
        files as f64 / median.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}
