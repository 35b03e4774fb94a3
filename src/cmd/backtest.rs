//! `ztraded backtest`: a pipeline over historical bars with the simulated clock and broker.
//!
//! After the run it writes `trades.csv` (entry order), `equity.csv` (one row per bar of the
//! strategy's timeframe, with the buy-and-hold benchmark) and `equity.svg`, and prints the
//! summary: the statistics, the split of the total P&L into realized and unrealized, CAGR,
//! the buy-and-hold return, a per-symbol table and the trades by exit reason.

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::backtest::analytics::{
    SummaryExtras, buy_and_hold, last_point_per_period, symbol_lines, symbol_rows, unrealized_pnl,
};
use crate::backtest::output::{EquityChart, write_equity_csv, write_equity_svg, write_trades_csv};
use crate::backtest::runner::{
    BacktestError, BacktestOptions, BacktestResult, load_pipeline, run as run_backtest,
};
use crate::market::Timeframe;
use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressStyle};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static PROGRESS: OnceLock<ProgressBar> = OnceLock::new();

/// How the backtest's LLM nodes reach their providers (`--llm`, `--llm-file`,
/// `--max-cost-usd`).
#[derive(Clone, Debug, Default)]
pub struct LlmOptions {
    /// Live calls, recording or replay.
    pub mode: crate::llm::cassette::LlmRun,
    /// The recording file (default `recordings/<pipeline>.llm.jsonl` of the config dir).
    pub file: Option<PathBuf>,
    /// Most USD the new calls of a recording run may cost.
    pub max_cost_usd: Option<rust_decimal::Decimal>,
}

fn progress(done: u64, total: u64) {
    if let Some(bar) = PROGRESS.get() {
        bar.set_length(total);
        bar.set_position(done);
    }
}

/// Runs the backtest and writes `trades.csv`, `equity.csv` and `equity.svg` into `out_dir`.
/// `data_dir` defaults to the config directory's `market_data.path`. Returns the exit code.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    pipeline_file: &Path,
    data_dir: Option<PathBuf>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    out_dir: Option<PathBuf>,
    llm: LlmOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let loaded = load_pipeline(pipeline_file);
    let data_dir = match (data_dir, &loaded) {
        (Some(d), _) => d,
        (None, Ok((set, _))) => set.root.join(&set.settings.market_data.path),
        (None, Err(e)) => {
            let _ = writeln!(err, "ztraded backtest: {e}");
            return EXIT_INVALID;
        }
    };
    let show_progress = std::io::stderr().is_terminal();
    if show_progress {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {wide_bar} {pos}/{len} bars {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let _ = PROGRESS.set(bar);
    }
    let options = BacktestOptions {
        data_dir: data_dir.clone(),
        from,
        to,
        keep_records: false,
        progress: show_progress.then_some(progress as fn(u64, u64)),
        llm: llm.mode,
        llm_file: llm.file,
        max_cost_usd: llm.max_cost_usd,
    };
    let result = run_backtest(pipeline_file, &options).await;
    if let Some(bar) = PROGRESS.get() {
        bar.finish_and_clear();
    }
    let result = match result {
        Ok(r) => r,
        Err(e @ BacktestError::Invalid(_)) => {
            let _ = writeln!(err, "ztraded backtest: {e}");
            return EXIT_INVALID;
        }
        Err(e) => {
            let _ = writeln!(err, "ztraded backtest: {e}");
            return EXIT_USAGE;
        }
    };
    let report = Report::new(&result);
    let out_dir = out_dir.unwrap_or_else(|| PathBuf::from("out").join(&result.pipeline));
    if let Err(e) = write_outputs(&result, &report, &out_dir) {
        let _ = writeln!(err, "ztraded backtest: {e}");
        return EXIT_USAGE;
    }
    let _ = out.write_all(summary(&result, &report, &out_dir, &result.failures).as_bytes());
    EXIT_OK
}

/// What the outputs and the summary show beyond the runner's result.
pub struct Report {
    /// Timeframe of the equity rows (the strategy's).
    pub timeframe: Option<Timeframe>,
    /// Indices of the equity points written to equity.csv (None: every point).
    pub rows: Option<Vec<usize>>,
    /// The buy-and-hold benchmark at each equity row, USD.
    pub benchmark: Vec<Decimal>,
}

impl Report {
    /// The equity rows of `timeframe` and the benchmark at each of them.
    pub fn new(r: &BacktestResult) -> Report {
        let timeframe = r.strategy_timeframe;
        let rows = timeframe
            .map(|tf| last_point_per_period(&r.equity, tf, r.timezone))
            .filter(|rows| rows.len() < r.equity.len());
        let at: Vec<i64> = match &rows {
            Some(rows) => rows.iter().map(|&i| r.equity[i].ts).collect(),
            None => r.equity.iter().map(|p| p.ts).collect(),
        };
        let benchmark = buy_and_hold(r.initial_equity, &r.closes, &at);
        Report {
            timeframe,
            rows,
            benchmark,
        }
    }

    fn row_count(&self, r: &BacktestResult) -> usize {
        self.rows.as_ref().map_or(r.equity.len(), Vec::len)
    }

    fn row_ts(&self, r: &BacktestResult, k: usize) -> i64 {
        self.rows
            .as_ref()
            .map_or(r.equity[k].ts, |rows| r.equity[rows[k]].ts)
    }

    /// Return of the benchmark over the backtest, percent.
    fn benchmark_pct(&self, r: &BacktestResult) -> Option<Decimal> {
        let initial = r.initial_equity;
        let last = *self.benchmark.last()?;
        (initial > Decimal::ZERO && !r.closes.values().all(Vec::is_empty))
            .then(|| (last / initial - Decimal::ONE) * Decimal::ONE_HUNDRED)
    }
}

fn write_outputs(r: &BacktestResult, report: &Report, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write_trades_csv(&dir.join("trades.csv"), &r.trades, r.timezone).map_err(|e| e.to_string())?;
    write_equity_csv(
        &dir.join("equity.csv"),
        &r.equity,
        report.rows.as_deref(),
        Some(&report.benchmark),
    )
    .map_err(|e| e.to_string())?;
    let benchmark: Vec<(i64, Decimal)> = (0..report.row_count(r))
        .map(|k| (report.row_ts(r, k), report.benchmark[k]))
        .collect();
    let label = r.symbols.join(", ");
    write_equity_svg(
        &dir.join("equity.svg"),
        &EquityChart {
            title: &format!("{} — equity", r.pipeline),
            points: &r.equity,
            benchmark: &benchmark,
            benchmark_label: &label,
            tz: r.timezone,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// The printed summary (deterministic: no wall-clock values): the run (symbols, dates, bars,
/// executions, orders, risk rejections, failed executions by reason from `failures`), the
/// statistics with the realized/unrealized split, CAGR and buy and hold, the per-symbol
/// table, the trades by exit reason, the positions still open and the files written.
pub fn summary(
    r: &BacktestResult,
    report: &Report,
    out_dir: &Path,
    failures: &BTreeMap<String, u64>,
) -> String {
    let mut s = String::new();
    // A bar closing at local midnight belongs to the day that ended.
    let day = |p: Option<&crate::engine::trades::EquityPoint>| {
        p.map(|p| {
            crate::engine::clock::utc(p.ts - 1)
                .with_timezone(&r.timezone)
                .format("%Y-%m-%d")
                .to_string()
        })
        .unwrap_or_default()
    };
    s.push_str(&format!(
        "Pipeline {} on {} ({} to {}), {} bars\n",
        r.pipeline,
        r.symbols.join(", "),
        day(r.equity.first()),
        day(r.equity.last()),
        r.bars
    ));
    let executions: Vec<String> = r
        .executions
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    s.push_str(&format!("Executions: {}\n", executions.join(", ")));
    s.push_str(&format!("Orders: {}\n", r.orders));
    if !r.llm_cost_usd.is_zero() {
        s.push_str(&format!(
            "LLM cost: {} USD\n",
            r.llm_cost_usd.round_dp(4).normalize()
        ));
    }
    let counts = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !r.risk_rejections.is_empty() {
        s.push_str(&format!(
            "Risk rejections: {}\n",
            counts(&r.risk_rejections)
        ));
    }
    if !failures.is_empty() {
        s.push_str(&format!("Failed executions: {}\n", counts(failures)));
    }
    let open: Vec<_> = r
        .open_positions
        .iter()
        .filter(|p| !p.quantity.is_zero())
        .cloned()
        .collect();
    let extras = SummaryExtras {
        unrealized_pnl: unrealized_pnl(&open),
        open_positions: open.len(),
        buy_and_hold_pct: report.benchmark_pct(r),
        benchmark: r.symbols.join(", "),
    };
    for line in r.performance.summary_lines(&extras) {
        s.push_str(&line);
        s.push('\n');
    }
    let rows = symbol_rows(
        &r.symbols,
        &r.trades,
        &open,
        &r.closes,
        extras.buy_and_hold_pct,
    );
    for line in symbol_lines(&rows)
        .into_iter()
        .chain(r.performance.exit_reason_lines())
    {
        s.push_str(&line);
        s.push('\n');
    }
    if !open.is_empty() {
        let list: Vec<String> = open
            .iter()
            .map(|p| {
                format!(
                    "{} {} at {} (average {}, unrealized {} USD)",
                    p.symbol,
                    p.quantity.normalize(),
                    p.market_price.normalize(),
                    p.average_price.round_dp(6).normalize(),
                    crate::backtest::analytics::format_usd(p.unrealized_pnl())
                )
            })
            .collect();
        s.push_str(&format!(
            "Still open at the end (marked to market): {}\n",
            list.join(", ")
        ));
    }
    let per = report
        .timeframe
        .map_or_else(|| "point".to_string(), |tf| format!("{tf} bar"));
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    s.push_str(&format!(
        "Wrote {0}/trades.csv ({1}, entry order), {0}/equity.csv ({2}, one per {per}), {0}/equity.svg\n",
        out_dir.display(),
        plural(r.trades.len(), "trade", "trades"),
        plural(report.row_count(r), "row", "rows"),
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::analytics::Performance;
    use crate::broker::{OrderPurpose, Position, PositionSide};
    use crate::engine::trades::{EquityPoint, TradeRecord};
    use rust_decimal::dec;

    fn result() -> BacktestResult {
        let day = 86_400;
        let t0 = 1_704_171_600; // 2024-01-02T05:00:00Z, midnight in New York
        let equity = vec![
            EquityPoint {
                ts: t0,
                equity: dec!(10000),
                cash: dec!(10000),
            },
            EquityPoint {
                ts: t0 + day,
                equity: dec!(10100),
                cash: dec!(10100),
            },
            EquityPoint {
                ts: t0 + 2 * day,
                equity: dec!(10160),
                cash: dec!(9100),
            },
        ];
        let trades = vec![TradeRecord {
            pipeline: "p".into(),
            symbol: "AAPL".into(),
            side: PositionSide::Long,
            entry_time: t0,
            exit_time: t0 + day,
            entry_price: dec!(100),
            exit_price: dec!(101),
            quantity: dec!(100),
            stop_loss: Some(dec!(98)),
            final_stop: Some(dec!(100)),
            target_1: None,
            target_2: None,
            exit_reason: OrderPurpose::ExitRule,
            pnl: dec!(100),
            fees: dec!(0),
            mode: "simulation".into(),
        }];
        let tz = chrono_tz::America::New_York;
        BacktestResult {
            pipeline: "p".into(),
            symbols: vec!["AAPL".into(), "MSFT".into()],
            initial_equity: dec!(10000),
            performance: Performance::compute(&trades, &equity, dec!(10000), tz),
            trades,
            equity,
            bars: 6,
            executions: BTreeMap::from([("completed", 6)]),
            orders: 3,
            llm_cost_usd: Decimal::ZERO,
            risk_rejections: BTreeMap::from([("max_position_pct".to_string(), 1)]),
            open_positions: vec![Position {
                pipeline: "p".into(),
                symbol: "MSFT".into(),
                quantity: dec!(10),
                average_price: dec!(100),
                market_price: dec!(106),
            }],
            records: Vec::new(),
            timezone: tz,
            range: (t0 - day, t0 + 2 * day),
            failures: BTreeMap::new(),
            strategy_timeframe: Some(Timeframe::D1),
            data_timeframes: BTreeMap::from([
                ("AAPL".to_string(), Timeframe::D1),
                ("MSFT".to_string(), Timeframe::D1),
            ]),
            closes: BTreeMap::new(),
        }
    }

    #[test]
    fn summary_prints_failures_open_positions_and_the_benchmark() {
        let mut r = result();
        r.closes = BTreeMap::from([
            (
                "AAPL".to_string(),
                vec![(r.equity[0].ts, dec!(100)), (r.equity[2].ts, dec!(110))],
            ),
            ("MSFT".to_string(), vec![(r.equity[1].ts, dec!(50))]),
        ]);
        let report = Report::new(&r);
        assert_eq!(report.rows, None, "one point per day: every point is a row");
        // 5,000 in AAPL from 100 to 110, 5,000 in MSFT flat.
        assert_eq!(report.benchmark, [dec!(10000), dec!(10000), dec!(10500)]);
        let failures = BTreeMap::from([
            ("broker_rejected".to_string(), 2),
            ("llm_timeout".to_string(), 1),
        ]);
        let s = summary(&r, &report, Path::new("out/p"), &failures);
        let line = |prefix: &str| {
            s.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{s}"))
                .to_string()
        };
        assert_eq!(
            line("Pipeline"),
            "Pipeline p on AAPL, MSFT (2024-01-01 to 2024-01-03), 6 bars"
        );
        assert_eq!(
            line("Risk rejections"),
            "Risk rejections: max_position_pct 1"
        );
        assert_eq!(
            line("Failed executions"),
            "Failed executions: broker_rejected 2, llm_timeout 1"
        );
        assert!(line("Total P&L").contains(" 160.00 USD"), "{s}");
        assert!(
            line("Unrealized P&L").contains(" 60.00 USD (1 open position"),
            "{s}"
        );
        assert!(
            line("Realized P&L").contains(
                " 100.00 USD (booked, with commissions; closed trades in trades.csv: 100.00 USD)"
            ),
            "{s}"
        );
        assert!(line("Buy and hold").contains(" 5.00% (AAPL, MSFT"), "{s}");
        assert!(line("  MSFT").ends_with("60.00         0.00%"), "{s}");
        assert_eq!(
            line("Still open"),
            "Still open at the end (marked to market): MSFT 10 at 106 (average 100, unrealized 60.00 USD)"
        );
        assert_eq!(
            line("Wrote"),
            "Wrote out/p/trades.csv (1 trade, entry order), out/p/equity.csv (3 rows, one per 1d bar), out/p/equity.svg"
        );
        let quiet = summary(&r, &report, Path::new("out/p"), &BTreeMap::new());
        assert!(!quiet.contains("Failed executions"));
    }

    #[test]
    fn the_strategy_timeframe_drives_the_equity_rows() {
        let set = crate::config::load::load_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
        let spec = set.pipelines["golden-cross"].spec.as_ref().unwrap();
        let compiled =
            crate::engine::pipeline::CompiledPipeline::compile("golden-cross", spec, None).unwrap();
        assert_eq!(compiled.strategy_timeframe, Some(Timeframe::D1));
    }
}
