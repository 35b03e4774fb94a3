//! `ztraded backtest`: a pipeline over historical bars with the simulated clock and broker.

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::backtest::output::{write_equity_csv, write_equity_svg, write_trades_csv};
use crate::backtest::runner::{
    BacktestError, BacktestOptions, BacktestResult, run as run_backtest,
};
use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static PROGRESS: OnceLock<ProgressBar> = OnceLock::new();

fn progress(done: u64, total: u64) {
    if let Some(bar) = PROGRESS.get() {
        bar.set_length(total);
        bar.set_position(done);
    }
}

/// Runs the backtest and writes `trades.csv`, `equity.csv` and `equity.svg` into `out_dir`.
/// `data_dir` defaults to the config directory's `market_data.path`. Returns the exit code.
pub async fn run(
    pipeline_file: &Path,
    data_dir: Option<PathBuf>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    out_dir: Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let data_dir = match data_dir {
        Some(d) => d,
        None => match crate::backtest::runner::load_pipeline(pipeline_file) {
            Ok((set, _)) => set.root.join(&set.settings.market_data.path),
            Err(e) => {
                let _ = writeln!(err, "ztraded backtest: {e}");
                return EXIT_INVALID;
            }
        },
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
        data_dir,
        from,
        to,
        keep_records: false,
        progress: show_progress.then_some(progress as fn(u64, u64)),
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
    let out_dir = out_dir.unwrap_or_else(|| PathBuf::from("out").join(&result.pipeline));
    if let Err(e) = write_outputs(&result, &out_dir) {
        let _ = writeln!(err, "ztraded backtest: {e}");
        return EXIT_USAGE;
    }
    let _ = out.write_all(summary(&result, &out_dir).as_bytes());
    EXIT_OK
}

fn write_outputs(r: &BacktestResult, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write_trades_csv(&dir.join("trades.csv"), &r.trades, r.timezone).map_err(|e| e.to_string())?;
    write_equity_csv(&dir.join("equity.csv"), &r.equity).map_err(|e| e.to_string())?;
    write_equity_svg(
        &dir.join("equity.svg"),
        &r.equity,
        &format!("{} — equity", r.pipeline),
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// The printed summary (deterministic: no wall-clock values).
pub fn summary(r: &BacktestResult, out_dir: &Path) -> String {
    let mut s = String::new();
    let first = r
        .equity
        .first()
        .map(|p| {
            crate::engine::clock::utc(p.ts)
                .format("%Y-%m-%d")
                .to_string()
        })
        .unwrap_or_default();
    let last = r
        .equity
        .last()
        .map(|p| {
            crate::engine::clock::utc(p.ts)
                .format("%Y-%m-%d")
                .to_string()
        })
        .unwrap_or_default();
    s.push_str(&format!(
        "Pipeline {} on {} ({first} to {last}), {} bars\n",
        r.pipeline,
        r.symbols.join(", "),
        r.bars
    ));
    let executions: Vec<String> = r
        .executions
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    s.push_str(&format!("Executions: {}\n", executions.join(", ")));
    s.push_str(&format!("Orders: {}\n", r.orders));
    if !r.risk_rejections.is_empty() {
        let rejections: Vec<String> = r
            .risk_rejections
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        s.push_str(&format!("Risk rejections: {}\n", rejections.join(", ")));
    }
    for line in r.performance.summary_lines() {
        s.push_str(&line);
        s.push('\n');
    }
    if !r.open_positions.is_empty() {
        let open: Vec<String> = r
            .open_positions
            .iter()
            .map(|p| format!("{} {}", p.symbol, p.quantity))
            .collect();
        s.push_str(&format!(
            "Still open at the end (marked to market): {}\n",
            open.join(", ")
        ));
    }
    s.push_str(&format!(
        "Wrote {0}/trades.csv, {0}/equity.csv, {0}/equity.svg\n",
        out_dir.display()
    ));
    s
}
