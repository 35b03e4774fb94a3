//! `ztraded backtest` on the shipped configs: it trades, writes its files, and two runs are
//! byte-identical.

use std::path::Path;
use std::process::Command;

fn backtest(pipeline: &str, out: &Path, extra: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .arg("backtest")
        .arg(pipeline)
        .arg("--out")
        .arg(out)
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn shipped_pipelines_trade_and_runs_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    for pipeline in [
        "pipelines/golden-cross.yaml",
        "pipelines/rsi-reversion.yaml",
    ] {
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let summary_a = backtest(pipeline, &a, &[]);
        let summary_b = backtest(pipeline, &b, &[]);
        for file in ["trades.csv", "equity.csv", "equity.svg"] {
            let (x, y) = (
                std::fs::read(a.join(file)).unwrap(),
                std::fs::read(b.join(file)).unwrap(),
            );
            assert!(!x.is_empty());
            assert_eq!(x, y, "{pipeline}: {file} differs between two runs");
        }
        assert_eq!(
            summary_a.replace(a.to_str().unwrap(), ""),
            summary_b.replace(b.to_str().unwrap(), "")
        );
        let trades = std::fs::read_to_string(a.join("trades.csv")).unwrap();
        let rows: Vec<&str> = trades.lines().skip(1).collect();
        assert!(rows.len() >= 5, "{pipeline}: {} trades", rows.len());
        for row in &rows {
            let f: Vec<&str> = row.split(',').collect();
            // symbol,side,entry_time,entry_price,exit_time,exit_price,quantity,exit_reason,pnl,fees
            assert!(["AAPL", "GOOG", "SPY"].contains(&f[0]), "{row}");
            assert_eq!(f[1], "long", "the policy forbids shorts: {row}");
            // A stop can be hit in the entry bar itself (both stamped with that bar).
            assert!(f[2] <= f[4], "exit not before entry: {row}");
            assert!(
                ["stop_loss", "target_1", "target_2", "exit_rule"].contains(&f[7]),
                "{row}"
            );
            let fees: f64 = f[9].parse().unwrap();
            assert!(fees > 0.0, "{row}");
        }
        assert!(
            summary_a.contains("Win rate:")
                && summary_a.contains("Sharpe ratio:")
                && summary_a.contains("Profit factor:")
        );
        let svg = std::fs::read_to_string(a.join("equity.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
        let equity = std::fs::read_to_string(a.join("equity.csv")).unwrap();
        assert_eq!(
            equity.lines().next(),
            Some("timestamp,equity,cash,drawdown_pct")
        );
    }
}

#[test]
fn a_date_range_limits_trading_but_not_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    backtest(
        "pipelines/rsi-reversion.yaml",
        &out,
        &["--from", "2012-01-03", "--to", "2012-12-31"],
    );
    let equity = std::fs::read_to_string(out.join("equity.csv")).unwrap();
    let first = equity.lines().nth(1).unwrap();
    let last = equity.lines().last().unwrap();
    assert!(first.starts_with("2012-01-0"), "{first}");
    // The close of 2012-12-31 is stamped at the end of its period.
    assert!(last.starts_with("2013-01-01"), "{last}");
    let trades = std::fs::read_to_string(out.join("trades.csv")).unwrap();
    for row in trades.lines().skip(1) {
        assert!(row.contains(",2012-"), "{row}");
    }
}

#[test]
fn invalid_pipelines_and_missing_data_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("pipelines")).unwrap();
    std::fs::write(root.join("pipelines/p.yaml"), "mode: simulation\nsymbols: [ZZZ]\ntrigger: { once: {} }\nnodes:\n  - { id: d, agent: market_data, config: { timeframes: [1d] } }\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .args(["backtest", "pipelines/p.yaml", "--data", "nowhere"])
        .current_dir(root)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ZZZ.csv"));
    std::fs::write(
        root.join("pipelines/p.yaml"),
        "mode: simulation\nsymbols: [ZZZ]\ntrigger: { once: {} }\nnodes: []\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .args(["backtest", "pipelines/p.yaml", "--data", "nowhere"])
        .current_dir(root)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pipelines/p.yaml:4:8"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
