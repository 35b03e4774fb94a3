//! `ztraded backtest` on the shipped configs: it trades, writes its files, and two runs are
//! byte-identical.

use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

/// Runs `ztraded backtest PIPELINE --out OUT EXTRA...` from the repository root and
/// answers (stdout, stderr), failing the test when it does not exit 0.
fn backtest_with_logs(pipeline: &str, out: &Path, extra: &[&str]) -> (String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .arg("backtest")
        .arg(pipeline)
        .arg("--out")
        .arg(out)
        .args(extra)
        // The shipped LLM example must not reach a real provider from a test.
        .env_remove("OPENAI_API_KEY")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn backtest(pipeline: &str, out: &Path, extra: &[&str]) -> String {
    backtest_with_logs(pipeline, out, extra).0
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
            Some("timestamp,equity,cash,drawdown_pct,buy_and_hold")
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

/// The value of `label:` in a summary (the rest of the line, trimmed).
fn field<'a>(summary: &'a str, label: &str) -> &'a str {
    summary
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{label}:")))
        .unwrap_or_else(|| panic!("no {label} in\n{summary}"))
        .trim()
}

/// The first number of a text (`-4,999.12 USD (…)` → -4999.12).
fn number(text: &str) -> Decimal {
    let n: String = text
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('%')
        .replace(',', "");
    Decimal::from_str(&n).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().split(',').map(String::from).collect();
    // The shipped configs have no commas in names: a plain split is exact.
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

fn column(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

/// The summary of the shipped golden-cross backtest agrees with its files: the total P&L is
/// the equity curve's change and splits into realized and unrealized, the closed-trade P&L is
/// the sum of trades.csv, the per-symbol table matches the trades, CAGR and buy and hold are
/// what the equity and the data files give, and trades.csv is in entry order with both stops.
#[test]
fn golden_cross_summary_agrees_with_the_equity_curve_and_the_trades() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g");
    let summary = backtest("pipelines/golden-cross.yaml", &out, &[]);

    // Total P&L = final − initial equity = realized + unrealized.
    let initial = number(field(&summary, "Initial equity"));
    let final_equity = number(field(&summary, "Final equity"));
    let total = number(field(&summary, "Total P&L"));
    let realized = number(field(&summary, "Realized P&L"));
    let unrealized = number(field(&summary, "Unrealized P&L"));
    assert_eq!(total, final_equity - initial, "{summary}");
    assert_eq!(realized + unrealized, total, "{summary}");
    let (eh, erows) = csv_rows(&out.join("equity.csv"));
    let last = erows.last().unwrap();
    assert_eq!(
        Decimal::from_str(&last[column(&eh, "equity")]).unwrap(),
        final_equity
    );
    // Flat at the end (the shipped run closes every trade): the realized P&L is the change
    // in cash.
    assert!(
        field(&summary, "Unrealized P&L").contains("(0 open positions"),
        "{summary}"
    );
    assert_eq!(
        Decimal::from_str(&last[column(&eh, "cash")]).unwrap() - initial,
        realized,
        "realized P&L is the change in cash when flat"
    );

    // Closed-trade P&L and the per-symbol table against trades.csv.
    let (th, trows) = csv_rows(&out.join("trades.csv"));
    let (sym, pnl) = (column(&th, "symbol"), column(&th, "pnl"));
    let closed: Decimal = trows
        .iter()
        .map(|r| Decimal::from_str(&r[pnl]).unwrap())
        .sum();
    let realized_line = field(&summary, "Realized P&L");
    let closed_text = realized_line
        .split("trades.csv: ")
        .nth(1)
        .unwrap_or_else(|| panic!("{realized_line}"));
    assert_eq!(number(closed_text), closed, "{realized_line}");
    let mut by_symbol: BTreeMap<&str, (usize, usize, Decimal)> = BTreeMap::new();
    for r in &trows {
        let p = Decimal::from_str(&r[pnl]).unwrap();
        let e = by_symbol.entry(r[sym].as_str()).or_default();
        e.0 += 1;
        e.1 += usize::from(p > Decimal::ZERO);
        e.2 += p;
    }
    let table: Vec<&str> = summary
        .lines()
        .skip_while(|l| *l != "By symbol")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert!(table[0].contains("Win rate") && table[0].contains("Buy and hold"));
    for symbol in ["AAPL", "GOOG", "SPY", "TOTAL"] {
        let row = table
            .iter()
            .find(|l| l.split_whitespace().next() == Some(symbol))
            .unwrap_or_else(|| panic!("no {symbol} row in {table:?}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        let (trades, wins, p) = if symbol == "TOTAL" {
            (trows.len(), by_symbol.values().map(|v| v.1).sum(), closed)
        } else {
            by_symbol.get(symbol).copied().unwrap_or_default()
        };
        assert_eq!(cells[1], trades.to_string(), "{row}");
        if trades > 0 {
            let rate = wins as f64 / trades as f64 * 100.0;
            assert_eq!(cells[2], format!("{rate:.2}%"), "{row}");
        }
        assert_eq!(number(cells[4]), p, "{row}");
    }
    let total_row = table.iter().find(|l| l.starts_with("  TOTAL")).unwrap();
    let open_total = number(total_row.split_whitespace().nth(5).unwrap());
    assert_eq!(open_total, unrealized, "{total_row}");

    // Buy and hold: a third of the equity in each symbol at its first close, from the data
    // files themselves.
    let mut growth = 0.0;
    for symbol in ["AAPL", "GOOG", "SPY"] {
        let text =
            std::fs::read_to_string(Path::new("examples/data").join(format!("{symbol}.csv")))
                .or_else(|_| {
                    std::fs::read_to_string(
                        Path::new(env!("CARGO_MANIFEST_DIR"))
                            .join(format!("examples/data/{symbol}.csv")),
                    )
                })
                .unwrap();
        let closes: Vec<f64> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(4).unwrap().parse().unwrap())
            .collect();
        growth += closes.last().unwrap() / closes[0] / 3.0;
    }
    let bh = number(field(&summary, "Buy and hold"));
    let expected = (growth - 1.0) * 100.0;
    assert!(
        (bh.to_string().parse::<f64>().unwrap() - expected).abs() < 0.01,
        "buy and hold {bh} vs {expected}"
    );
    let bh_last = Decimal::from_str(&last[column(&eh, "buy_and_hold")]).unwrap();
    assert!(
        ((bh_last / initial - Decimal::ONE) * Decimal::ONE_HUNDRED - bh).abs() < Decimal::new(1, 2),
        "{bh_last}"
    );

    // CAGR from the equity curve's ends.
    let first_ts = chrono::DateTime::parse_from_rfc3339(&erows[0][0]).unwrap();
    let last_ts = chrono::DateTime::parse_from_rfc3339(&last[0]).unwrap();
    let years = (last_ts - first_ts).num_seconds() as f64 / (365.25 * 86_400.0);
    let ratio: f64 = (final_equity / initial).to_string().parse().unwrap();
    let cagr = (ratio.powf(1.0 / years) - 1.0) * 100.0;
    assert_eq!(
        field(&summary, "CAGR"),
        format!("{cagr:.2}% per year over {years:.2} years")
    );

    // trades.csv: entry order, initial and final stop.
    let (entry, price) = (column(&th, "entry_time"), column(&th, "entry_price"));
    let (initial_stop, final_stop) = (column(&th, "initial_stop"), column(&th, "final_stop"));
    assert!(!th.iter().any(|h| h == "stop_loss"), "{th:?}");
    for w in trows.windows(2) {
        assert!(w[0][entry] <= w[1][entry], "not in entry order: {w:?}");
    }
    let mut moved = 0;
    for r in &trows {
        let e = Decimal::from_str(&r[price]).unwrap();
        let s0 = Decimal::from_str(&r[initial_stop]).unwrap();
        let s1 = Decimal::from_str(&r[final_stop]).unwrap();
        assert!(s0 < e, "a long's initial stop is below the entry: {r:?}");
        if s1 != s0 {
            // Moved to breakeven after target 1.
            assert_eq!(s1, e, "{r:?}");
            moved += 1;
        }
    }
    assert!(moved > 0, "no trade moved its stop to breakeven");
    // The exits by reason add up to the trades.
    let reasons: usize = summary
        .lines()
        .skip_while(|l| *l != "By exit reason")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let after = l.split("trades ").nth(1).unwrap();
            after
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(reasons, trows.len());

    // The chart: well-formed, small, with both panes, both curves and a date axis.
    let svg = std::fs::read_to_string(out.join("equity.svg")).unwrap();
    assert!(svg.len() < 200_000, "{} bytes", svg.len());
    let mut ids = Vec::new();
    for e in xml::reader::EventReader::from_str(&svg) {
        if let xml::reader::XmlEvent::StartElement { attributes, .. } = e.unwrap() {
            ids.extend(
                attributes
                    .into_iter()
                    .filter(|a| a.name.local_name == "id")
                    .map(|a| a.value),
            );
        }
    }
    for id in [
        "equity-pane",
        "drawdown-pane",
        "time-axis",
        "equity",
        "buy-and-hold",
        "drawdown",
    ] {
        assert!(ids.iter().any(|i| i == id), "no #{id} in {ids:?}");
    }
    assert!(
        svg.contains(">2010<") || svg.contains(">2012<"),
        "year labels"
    );
}

/// One-minute data with a daily strategy: equity.csv has one row per day (the last point of
/// each day), while the drawdown still sees every minute.
#[test]
fn minute_data_with_a_daily_strategy_writes_one_equity_row_per_day() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for sub in ["pipelines", "risk", "data"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::write(
        root.join("ztraded.toml"),
        "[market_data]\npath = \"data\"\ntimezone = \"America/New_York\"\n",
    )
    .unwrap();
    std::fs::write(
        root.join("risk/open.yaml"),
        "sizing: { max_position_pct: 50 }\nlimits: { max_pipeline_capital_pct: 100, max_deployed_pct: 100 }\ntrade: { require_stop_loss: false, min_reward_risk: 0, min_profit_margin_pct: 0 }\n",
    )
    .unwrap();
    std::fs::write(
        root.join("pipelines/daily.yaml"),
        "mode: simulation\nsymbols: [MIN]\nrisk: open\ntrigger: { bar_close: { timeframe: 1d } }\nnodes:\n  - { id: data, agent: market_data, config: { timeframes: [1m, 1d], indicators: [sma_2] } }\n  - { id: strategy, agent: strategy, config: { kind: rules, timeframe: 1d, long_entry: \"close > 0\" } }\n  - { id: risk, agent: risk_manager }\n  - { id: trade, agent: trade_manager }\n",
    )
    .unwrap();
    // Five sessions of 390 one-minute bars, 09:30-16:00 New York, Monday to Friday.
    let mut csv = String::from("Date,Time,Open,High,Low,Close,Volume\n");
    let mut price = 100.0f64;
    for day in 8..=12 {
        for m in 0..390 {
            let (h, min) = (9 + (30 + m) / 60, (30 + m) % 60);
            let next = price + if (m + day) % 7 < 3 { 0.05 } else { -0.04 };
            csv.push_str(&format!(
                "2024-01-{day:02},{h:02}:{min:02}:00,{price:.2},{:.2},{:.2},{next:.2},1000\n",
                price.max(next) + 0.01,
                price.min(next) - 0.01
            ));
            price = next;
        }
    }
    std::fs::write(root.join("data/MIN.csv"), csv).unwrap();
    let out = root.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .args(["backtest", "pipelines/daily.yaml", "--out"])
        .arg(&out)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = String::from_utf8(o.stdout).unwrap();
    let (header, rows) = csv_rows(&out.join("equity.csv"));
    assert_eq!(header[0], "timestamp");
    // The last minute bar of each session closes at 16:00 New York = 21:00 UTC.
    let stamps: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        stamps,
        [
            "2024-01-08T21:00:00Z",
            "2024-01-09T21:00:00Z",
            "2024-01-10T21:00:00Z",
            "2024-01-11T21:00:00Z",
            "2024-01-12T21:00:00Z"
        ],
        "{summary}"
    );
    assert!(
        summary.contains("equity.csv (5 rows, one per 1d bar)"),
        "{summary}"
    );
    // The buy-and-hold column is marked at each row.
    let bh = column(&header, "buy_and_hold");
    assert!(rows.iter().all(|r| !r[bh].is_empty()), "{rows:?}");

    // The position entered after the first session is still open: the total P&L is the
    // equity's change and splits into its unrealized P&L and the booked rest.
    let initial = number(field(&summary, "Initial equity"));
    let final_equity = number(field(&summary, "Final equity"));
    let total = number(field(&summary, "Total P&L"));
    let realized = number(field(&summary, "Realized P&L"));
    let unrealized = field(&summary, "Unrealized P&L");
    assert!(
        unrealized.contains("(1 open position at the last close)"),
        "{summary}"
    );
    let unrealized = number(unrealized);
    assert_eq!(total, final_equity - initial);
    assert_eq!(realized + unrealized, total);
    // "MIN 490 at 101.5 (average 100.25, unrealized 612.50 USD)"
    let open = field(&summary, "Still open at the end (marked to market)");
    let words: Vec<&str> = open
        .split([' ', '(', ')', ','])
        .filter(|w| !w.is_empty())
        .collect();
    assert_eq!(words[0], "MIN", "{open}");
    let (qty, mark, avg) = (number(words[1]), number(words[3]), number(words[5]));
    let cents = |d: Decimal| {
        d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
    };
    assert_eq!(unrealized, cents(qty * (mark - avg)), "{open}");
    let last = rows.last().unwrap();
    let cash = Decimal::from_str(&last[column(&header, "cash")]).unwrap();
    assert_eq!(
        cents(cash - initial + qty * avg),
        realized,
        "booked = change in cash + cost of the open position"
    );
    let table_row = summary
        .lines()
        .find(|l| l.starts_with("  MIN "))
        .unwrap_or_else(|| panic!("{summary}"));
    assert_eq!(
        number(table_row.split_whitespace().nth(5).unwrap()),
        unrealized
    );
}

/// Failed executions are counted by reason in the summary, and the backtest does not log a
/// line (with an empty reason) for each of them.
#[test]
fn failed_executions_are_summed_up_by_reason_not_logged_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = backtest_with_logs(
        "examples/pipelines/llm-swing.yaml",
        dir.path(),
        &["--from", "2015-01-01", "--to", "2015-12-31"],
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Failed executions:"))
        .unwrap_or_else(|| panic!("no failure line in\n{stdout}"));
    assert!(
        line.contains("bias: provider 'default': the environment variable OPENAI_API_KEY holding its API key is not set"),
        "{line}"
    );
    assert!(!stderr.contains("execution failed"), "{stderr}");
}

/// A bar that reaches both targets fills target 1, target 2 and cancels the stop in one
/// go: the breakeven move that target 1 asked for has nothing left to move, which is not
/// a warning (it used to log "the stop could not be moved" twice for the shipped
/// breakout example).
#[test]
fn a_stop_cancelled_in_the_bar_of_target_1_is_not_moved_or_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = backtest_with_logs(
        "examples/pipelines/breakout-long-short.yaml",
        dir.path(),
        &[],
    );
    assert!(!stderr.contains("could not be moved"), "{stderr}");
    assert!(
        stdout.contains("target_2"),
        "the run has trades closed by target 2:\n{stdout}"
    );
}
