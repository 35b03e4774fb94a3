//! `ztraded backtest`: a pipeline over historical bars with the simulated clock and broker.
//!
//! After the run it writes `trades.csv` (entry order), `equity.csv` (one row per bar of the
//! strategy's timeframe, with the buy-and-hold benchmark) and `equity.svg`, and prints the
//! summary: the statistics, the split of the total P&L into realized and unrealized, CAGR,
//! the buy-and-hold return, a per-symbol table and the trades by exit reason
//! (`--format json`: the run's [`RunSummary`]; `--format markdown`: a table of its metrics).
//!
//! With `--baseline DIR` it reviews a strategy change: the same-named pipeline of the
//! config directory DIR (the main branch's checkout) runs on the same bars, its files go to
//! `<out>/baseline/`, and one table shows both runs' metrics with the difference of each
//! ([`crate::backtest::compare`]), after the config fields that changed (the reconciler's
//! field diff, [`crate::reconcile::diff`], with values from [`field_changes`]).

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::backtest::analytics::{
    SummaryExtras, buy_and_hold, last_point_per_period, symbol_lines, symbol_rows, unrealized_pnl,
};
use crate::backtest::compare::{MetricRow, RunSummary, metric_rows, table_human, table_markdown};
use crate::backtest::output::{EquityChart, write_equity_csv, write_equity_svg, write_trades_csv};
use crate::backtest::runner::{
    BacktestError, BacktestOptions, BacktestResult, load_pipeline, run_with_signals,
};
use crate::cmd::plan::{FieldChange, field_changes, md_code, md_field, md_text};
use crate::config::load::{ConfigSet, load_dir};
use crate::market::Timeframe;
use crate::reconcile::diff::{ChangeKind, Snapshot, diff, settings_changed};
use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressStyle};
use rust_decimal::Decimal;
use serde::Serialize;
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

/// Output formats of `backtest`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The summary for a terminal (with `--baseline`: the comparison table).
    #[default]
    Human,
    /// One JSON object: the run's summary, every performance statistic included (with
    /// `--baseline`: both runs, the config changes and the metric rows).
    Json,
    /// GitHub-flavoured Markdown, for a pull-request comment.
    Markdown,
}

/// The name of the subdirectory of the output directory that receives the baseline's
/// trades.csv, equity.csv and equity.svg with `--baseline`.
pub const BASELINE_SUBDIR: &str = "baseline";

/// A run that did not happen: the exit code and the message.
type Failed = (u8, String);

/// Runs the backtest and writes `trades.csv`, `equity.csv` and `equity.svg` into `out_dir`.
/// `data_dir` defaults to the config directory's `market_data.path`.
///
/// With `baseline` (a config directory, e.g. a checkout of the main branch) it also runs
/// the pipeline of the same name from there, on the same bars (this config's data
/// directory and the same `from`/`to`), writes that run's files into
/// `<out_dir>/baseline/`, and prints both runs' metrics side by side with their
/// differences and the config fields that changed. A pipeline the baseline does not have
/// is reported as new (its metrics alone); a pipeline this revision removed is an error.
/// The baseline's LLM nodes use its own recording file (`recordings/<pipeline>.llm.jsonl`
/// of the baseline); `--llm-file` is this revision's, and `--max-cost-usd` bounds each run.
///
/// Returns the exit code: 0 when every run ran, 1 for an invalid configuration, 2 for
/// usage, I/O and data errors.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    pipeline_file: &Path,
    data_dir: Option<PathBuf>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    out_dir: Option<PathBuf>,
    llm: LlmOptions,
    format: Format,
    baseline: Option<&Path>,
    signals_file: Option<&Path>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let signals = match signals_file.map(crate::signals::read_signals_file) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            let _ = writeln!(err, "ztraded backtest: --signals {e}");
            return EXIT_USAGE;
        }
    };
    let signals = signals.as_ref();
    let loaded = load_pipeline(pipeline_file);
    // The baseline first: a wrong directory or a removed pipeline is said before any run.
    let base = match (baseline, &loaded) {
        (None, _) => None,
        (Some(dir), Ok((_, name))) => match locate_baseline(dir, name) {
            Ok(b) => Some(b),
            Err(message) => {
                let _ = writeln!(err, "ztraded backtest: {message}");
                return EXIT_USAGE;
            }
        },
        (Some(dir), Err(e)) => {
            let name = pipeline_file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !pipeline_file.exists()
                && let Ok((_, Some(file))) = locate_baseline(dir, &name)
            {
                let _ = writeln!(
                    err,
                    "ztraded backtest: {}: this change removes pipeline '{name}' (the baseline {} has it as {}): there is nothing to compare; `ztraded backtest {}` runs the baseline's alone",
                    pipeline_file.display(),
                    dir.display(),
                    file.display(),
                    file.display()
                );
                return EXIT_USAGE;
            }
            let _ = writeln!(err, "ztraded backtest: {e}");
            return match e {
                BacktestError::Invalid(_) => EXIT_INVALID,
                _ => EXIT_USAGE,
            };
        }
    };
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
                "{spinner} {msg}{wide_bar} {pos}/{len} bars {per_sec} eta {eta}",
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
    let out_dir = out_dir.unwrap_or_else(|| {
        let name = match &loaded {
            Ok((_, name)) => name.clone(),
            Err(_) => String::new(),
        };
        PathBuf::from("out").join(name)
    });
    let label = base.as_ref().map(|_| "this change ");
    let (result, report) = match execute(pipeline_file, &options, &out_dir, label, signals).await {
        Ok(r) => r,
        Err((code, message)) => {
            let _ = writeln!(err, "ztraded backtest: {message}");
            return code;
        }
    };
    let config_dir = match &loaded {
        Ok((set, _)) => set.root.clone(),
        Err(_) => PathBuf::from("."),
    };
    let change = RunSummary::of(
        &result,
        report.benchmark_pct(&result),
        &config_dir,
        &out_dir,
    );
    let Some((base_set, base_file)) = base else {
        let text = match format {
            Format::Human => summary(&result, &report, &out_dir, &result.failures),
            Format::Json => json_text(&serde_json::to_value(&change)),
            Format::Markdown => single_markdown(&change),
        };
        let _ = out.write_all(text.as_bytes());
        return EXIT_OK;
    };
    drop((result, report));
    let baseline_dir = base_set.root.clone();
    let baseline_run = match base_file {
        None => None,
        Some(file) => {
            let options = BacktestOptions {
                llm_file: None,
                ..options
            };
            let dir = out_dir.join(BASELINE_SUBDIR);
            match execute(&file, &options, &dir, Some("baseline "), signals).await {
                Ok((r, report)) => Some(RunSummary::of(
                    &r,
                    report.benchmark_pct(&r),
                    &baseline_dir,
                    &dir,
                )),
                Err((code, message)) => {
                    let _ = writeln!(
                        err,
                        "ztraded backtest: the baseline ({}): {message}",
                        baseline_dir.display()
                    );
                    return code;
                }
            }
        }
    };
    let config = match &loaded {
        Ok((set, name)) => ConfigChange::between(&base_set, set, name),
        Err(_) => ConfigChange::default(),
    };
    let comparison = Comparison {
        pipeline: &change.pipeline,
        baseline_dir: &baseline_dir,
        baseline: baseline_run.as_ref(),
        change: &change,
        config: &config,
        data_dir: &data_dir,
    };
    let text = match format {
        Format::Human => comparison.human(),
        Format::Json => json_text(&comparison.json()),
        Format::Markdown => comparison.markdown(),
    };
    let _ = out.write_all(text.as_bytes());
    EXIT_OK
}

/// The baseline directory's config set and the file of its pipeline `name` (None: the
/// baseline does not have it, so it is new). Errors: not a config directory.
fn locate_baseline(dir: &Path, name: &str) -> Result<(ConfigSet, Option<PathBuf>), String> {
    if !dir.is_dir() {
        return Err(format!("--baseline {}: not a directory", dir.display()));
    }
    let set = load_dir(dir);
    if !set.pipelines_dir {
        return Err(format!(
            "--baseline {}: not a config directory (it has no pipelines/)",
            dir.display()
        ));
    }
    let file = set.pipelines.get(name).map(|r| r.path.clone());
    Ok((set, file))
}

/// Runs one backtest (showing `label` in the progress bar) and writes its files to
/// `out_dir`.
async fn execute(
    pipeline_file: &Path,
    options: &BacktestOptions,
    out_dir: &Path,
    label: Option<&str>,
    signals: Option<&Vec<crate::signals::Signal>>,
) -> Result<(BacktestResult, Report), Failed> {
    if let Some(bar) = PROGRESS.get() {
        bar.reset();
        bar.set_message(label.unwrap_or_default().to_string());
    }
    let result = run_with_signals(pipeline_file, options, signals.cloned()).await;
    if let Some(bar) = PROGRESS.get() {
        bar.finish_and_clear();
    }
    let result = match result {
        Ok(r) => r,
        Err(e @ BacktestError::Invalid(_)) => return Err((EXIT_INVALID, e.to_string())),
        Err(e) => return Err((EXIT_USAGE, e.to_string())),
    };
    let report = Report::new(&result);
    write_outputs(&result, &report, out_dir).map_err(|e| (EXIT_USAGE, e))?;
    Ok((result, report))
}

fn json_text(v: &Result<serde_json::Value, serde_json::Error>) -> String {
    match v {
        Ok(v) => format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default()),
        Err(e) => format!("{{\"error\": {:?}}}\n", e.to_string()),
    }
}

/// What changed in the pipeline's config between the baseline and this revision.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConfigChange {
    /// How the pipeline changed (`changed`, `enabled`, `disabled`, `added` for a new one);
    /// None when neither it nor what it uses changed.
    pub kind: Option<ChangeKind>,
    /// Its changed fields with their values before and after.
    pub fields: Vec<FieldChange>,
    /// Other reasons (`risk policy default changed`, `scanner megacaps changed`).
    pub because: Vec<String>,
    /// Whether ztraded.toml changed (broker settings such as the initial balance,
    /// slippage and commissions apply to the backtest).
    pub settings_changed: bool,
}

impl ConfigChange {
    /// The change of pipeline `name` from `base` to `new` ([`diff`], [`field_changes`]).
    pub fn between(base: &ConfigSet, new: &ConfigSet, name: &str) -> ConfigChange {
        let (old, new) = (Snapshot::of(base), Snapshot::of(new));
        let change = diff(&old, &new).into_iter().find(|c| c.pipeline == name);
        ConfigChange {
            kind: change.as_ref().map(|c| c.kind),
            fields: change
                .as_ref()
                .map(|c| field_changes(&old, &new, c))
                .unwrap_or_default(),
            because: change.map(|c| c.because).unwrap_or_default(),
            settings_changed: settings_changed(&old, &new),
        }
    }

    fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.because.is_empty() && !self.settings_changed
    }
}

/// A baseline run (or none: a new pipeline) and this change's, ready to print.
struct Comparison<'a> {
    pipeline: &'a str,
    baseline_dir: &'a Path,
    baseline: Option<&'a RunSummary>,
    change: &'a RunSummary,
    config: &'a ConfigChange,
    data_dir: &'a Path,
}

fn range(s: &RunSummary) -> String {
    format!(
        "{} from {} to {} ({} bars)",
        s.symbols.join(", "),
        s.from,
        s.to,
        s.bars
    )
}

impl Comparison<'_> {
    fn rows(&self) -> Vec<MetricRow> {
        metric_rows(self.baseline, self.change)
    }

    /// Whether both runs saw the same bars (same symbols, range and bar count).
    fn same_bars(&self) -> bool {
        self.baseline.is_none_or(|b| {
            b.symbols == self.change.symbols
                && b.bars == self.change.bars
                && (b.from.as_str(), b.to.as_str())
                    == (self.change.from.as_str(), self.change.to.as_str())
        })
    }

    fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        Ok(serde_json::json!({
            "pipeline": self.pipeline,
            "baseline_dir": self.baseline_dir,
            "status": if self.baseline.is_some() { "compared" } else { "new" },
            "same_bars": self.same_bars(),
            "data_dir": self.data_dir,
            "config": serde_json::to_value(self.config)?,
            "metrics": serde_json::to_value(self.rows())?,
            "baseline": serde_json::to_value(self.baseline)?,
            "change": serde_json::to_value(self.change)?,
        }))
    }

    fn human(&self) -> String {
        let mut s = String::new();
        let Some(b) = self.baseline else {
            s.push_str(&format!(
                "Backtest of {}: a new pipeline (the baseline {} does not have it)\n{}, data {}\n\n",
                self.pipeline,
                self.baseline_dir.display(),
                range(self.change),
                self.data_dir.display()
            ));
            s.push_str(&table_human(&self.rows(), false));
            s.push_str(&format!("\nFiles: {}\n", self.change.out_dir.display()));
            return s;
        };
        s.push_str(&format!(
            "Backtest of {}: the baseline ({}) and this change\n",
            self.pipeline,
            self.baseline_dir.display()
        ));
        if self.same_bars() {
            s.push_str(&format!(
                "The same bars for both: {}, data {}\n",
                range(self.change),
                self.data_dir.display()
            ));
        } else {
            s.push_str(&format!(
                "Not the same bars (the symbols changed): baseline {}; this change {}; data {}\n",
                range(b),
                range(self.change),
                self.data_dir.display()
            ));
        }
        if self.config.is_empty() {
            s.push_str("Config changes: none (the pipeline, its risk policy, scanners and ztraded.toml are the same)\n");
        } else {
            s.push_str("Config changes:\n");
            for f in &self.config.fields {
                let side = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
                s.push_str(&format!(
                    "  {}: {} → {}\n",
                    f.field,
                    side(&f.before),
                    side(&f.after)
                ));
            }
            for b in &self.config.because {
                s.push_str(&format!("  {b}\n"));
            }
            if self.config.settings_changed {
                s.push_str("  ztraded.toml changed\n");
            }
        }
        s.push('\n');
        s.push_str(&table_human(&self.rows(), true));
        s.push_str(&format!(
            "\nDifference: this change minus the baseline (pp: percentage points). Files: {} (this change), {} (baseline)\n",
            self.change.out_dir.display(),
            b.out_dir.display()
        ));
        s
    }

    fn markdown(&self) -> String {
        let mut s = format!("### Backtest: {}\n\n", md_code(self.pipeline));
        let Some(b) = self.baseline else {
            s.push_str(&format!(
                "🆕 **New pipeline**: the baseline {} does not have it. {}.\n\n",
                md_code(&self.baseline_dir.display().to_string()),
                md_text(&range(self.change))
            ));
            s.push_str(&table_markdown(&self.rows(), false));
            return s;
        };
        if self.same_bars() {
            s.push_str(&format!(
                "The baseline {} and this change on the same bars: {}.\n\n",
                md_code(&self.baseline_dir.display().to_string()),
                md_text(&range(self.change))
            ));
        } else {
            s.push_str(&format!(
                "The baseline {} and this change, **not on the same bars** (the symbols changed): baseline {}; this change {}.\n\n",
                md_code(&self.baseline_dir.display().to_string()),
                md_text(&range(b)),
                md_text(&range(self.change))
            ));
        }
        if self.config.is_empty() {
            s.push_str("No config change for this pipeline: the pipeline, its risk policy, scanners and `ztraded.toml` are the same.\n\n");
        } else {
            s.push_str("**What changed:**\n\n");
            for f in &self.config.fields {
                s.push_str(&format!("- {}\n", md_field(f)));
            }
            for b in &self.config.because {
                s.push_str(&format!("- {}\n", md_text(b)));
            }
            if self.config.settings_changed {
                s.push_str("- `ztraded.toml` changed\n");
            }
            s.push('\n');
        }
        s.push_str(&table_markdown(&self.rows(), true));
        s.push_str("\nDifference: this change minus the baseline (pp: percentage points); 🟢 better, 🔴 worse where the direction is clear.\n");
        s
    }
}

fn single_markdown(change: &RunSummary) -> String {
    format!(
        "### Backtest: {}\n\n{}.\n\n{}",
        md_code(&change.pipeline),
        md_text(&range(change)),
        table_markdown(&metric_rows(None, change), false)
    )
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
    pub fn benchmark_pct(&self, r: &BacktestResult) -> Option<Decimal> {
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
    if !r.signals.is_empty() {
        let mut by_type: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for ((t, o), n) in &r.signals {
            by_type.entry(t).or_default().push(format!("{n} {o}"));
        }
        let lines: Vec<String> = by_type
            .iter()
            .map(|(t, v)| format!("{t}: {}", v.join(", ")))
            .collect();
        s.push_str(&format!("Signals: {}\n", lines.join("; ")));
    }
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
    let open = r.held_positions();
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
            signals: BTreeMap::new(),
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
