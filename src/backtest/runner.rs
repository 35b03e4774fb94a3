//! The backtest: one pipeline over historical bars, on a simulated clock and the simulated
//! broker, driven by the same trading core as the daemon ([`crate::runtime`]): the same
//! [`PipelineRunner`] steps the same [`crate::engine::core::PipelineCore`], and the same
//! [`Account`] books the broker's events. Only the clock differs: here it jumps from one
//! event to the next as fast as the machine goes.
//!
//! The loop: the next event is the earliest of the next bar close (all symbols' bars that
//! close at that instant, together) and the pipeline's next timer (schedule, once, window
//! end). At a bar close the broker processes the bars first (orders sent earlier fill at
//! their open, stops and targets from their range), then the pipeline takes them (see
//! [`crate::engine::core::pipeline`] for what a step does). The run starts at `--from`
//! (local midnight; the feeds warm up on the bars before it) or just before the first bar,
//! and ends after the last bar or at the end of `--to`; timers after the last bar do not
//! fire. Equity is recorded after every step.

use crate::agents::NoLlm;
use crate::backtest::analytics::Performance;
use crate::broker::{Position, connect};
use crate::config::load::{ConfigSet, load_dir};
use crate::config::settings::{BrokerSettings, SimulatedBroker};
use crate::config::{Finding, Severity};
use crate::engine::clock::{Clock, ManualClock, utc};
use crate::engine::core::History;
use crate::engine::state::ExecutionRecord;
use crate::engine::trades::{EquityPoint, TradeRecord};
use crate::market::Timeframe;
use crate::market::replay::ReplayOptions;
use crate::runtime::{Account, AccountOptions, PipelineRunner, ReplayHub};
use chrono::NaiveDate;
use chrono_tz::Tz;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::runtime::spec::pipeline_symbols;

/// What can stop a backtest before it runs.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The pipeline file or a resource it uses is invalid.
    #[error("the configuration is invalid:\n{}", .0.iter().map(Finding::human).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Finding>),
    /// Missing or bad data, or a range without bars.
    #[error("{0}")]
    Data(String),
    /// The pipeline cannot run in a backtest.
    #[error("{0}")]
    Unsupported(String),
}

/// Backtest settings.
#[derive(Clone, Debug)]
pub struct BacktestOptions {
    /// Directory with one CSV per symbol.
    pub data_dir: PathBuf,
    /// First day traded (bars before it warm the indicators up).
    pub from: Option<NaiveDate>,
    /// Last day traded.
    pub to: Option<NaiveDate>,
    /// Keep the full execution records (slower; for inspection and tests).
    pub keep_records: bool,
    /// Called with (bars done, bars total) now and then.
    pub progress: Option<fn(u64, u64)>,
    /// How LLM nodes reach their providers: live calls, recording, or replay of recorded
    /// answers (see [`crate::llm::cassette`]).
    pub llm: crate::llm::cassette::LlmRun,
    /// The recording file (default `recordings/<pipeline>.llm.jsonl` of the config dir).
    pub llm_file: Option<PathBuf>,
    /// With `llm: Record`: most USD the new calls of the run may cost.
    pub max_cost_usd: Option<Decimal>,
}

/// What a backtest produced.
#[derive(Clone, Debug)]
pub struct BacktestResult {
    /// Pipeline name.
    pub pipeline: String,
    /// Symbols traded.
    pub symbols: Vec<String>,
    /// Starting equity, USD.
    pub initial_equity: Decimal,
    /// Closed trades in exit order.
    pub trades: Vec<TradeRecord>,
    /// Equity after each step.
    pub equity: Vec<EquityPoint>,
    /// Bars processed in the traded range (all symbols).
    pub bars: u64,
    /// The traded range, Unix seconds: after `.0`, up to and including `.1`.
    pub range: (i64, i64),
    /// Executions by status.
    pub executions: BTreeMap<&'static str, u64>,
    /// Why executions failed: reason → count.
    pub failures: BTreeMap<String, u64>,
    /// Orders submitted.
    pub orders: u64,
    /// What the LLM calls cost, USD (0 without LLM nodes).
    pub llm_cost_usd: Decimal,
    /// Risk rejections by rule.
    pub risk_rejections: BTreeMap<String, u64>,
    /// Positions still open at the end (marked to market).
    pub open_positions: Vec<Position>,
    /// Execution records (with `keep_records`).
    pub records: Vec<ExecutionRecord>,
    /// Performance metrics.
    pub performance: Performance,
    /// Time zone of the data and of daily boundaries.
    pub timezone: Tz,
    /// The strategy's timeframe (`None` without a strategy node).
    pub strategy_timeframe: Option<Timeframe>,
    /// The timeframe of each symbol's data.
    pub data_timeframes: BTreeMap<String, Timeframe>,
    /// `(period end, close)` of each traded symbol's bars in the range, for benchmarks.
    pub closes: BTreeMap<String, Vec<(i64, Decimal)>>,
    /// A signal-triggered pipeline's signals: (type, outcome) → count.
    pub signals: BTreeMap<(String, &'static str), u64>,
}

impl BacktestResult {
    /// The positions still held at the end (a flat entry of the broker's list left out).
    pub fn held_positions(&self) -> Vec<Position> {
        self.open_positions
            .iter()
            .filter(|p| !p.quantity.is_zero())
            .cloned()
            .collect()
    }
}

/// Loads the config directory of `pipeline_file` (its parent's parent) and returns it with
/// the pipeline's name, failing on findings in the files the pipeline depends on.
pub fn load_pipeline(pipeline_file: &Path) -> Result<(ConfigSet, String), BacktestError> {
    let name = pipeline_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .ok_or_else(|| {
            BacktestError::Data(format!("{}: not a pipeline file", pipeline_file.display()))
        })?;
    let root = pipeline_file
        .parent()
        .and_then(Path::parent)
        .map(|p| {
            if p.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                p.to_path_buf()
            }
        })
        .ok_or_else(|| {
            BacktestError::Data(format!(
                "{}: a pipeline file lives in <config>/pipelines/",
                pipeline_file.display()
            ))
        })?;
    let set = load_dir(&root);
    let Some(res) = set.pipelines.get(&name) else {
        return Err(BacktestError::Data(format!(
            "{}: no pipeline '{name}' in {}",
            pipeline_file.display(),
            root.display()
        )));
    };
    let mut relevant = vec![res.file.clone()];
    if let Some(spec) = &res.spec {
        if let Some(s) = &spec.scanner
            && let Some(r) = set.scanners.get(s)
        {
            relevant.push(r.file.clone());
        }
        if let Some(s) = &spec.risk
            && let Some(r) = set.risk.get(s)
        {
            relevant.push(r.file.clone());
        }
    }
    if let Some(s) = &set.settings_file {
        relevant.push(s.file.clone());
    }
    let errors: Vec<Finding> = set
        .findings
        .iter()
        .filter(|f| {
            f.severity == Severity::Error
                && (relevant.contains(&f.file) || f.file.starts_with("env:"))
        })
        .cloned()
        .collect();
    if !errors.is_empty() {
        return Err(BacktestError::Invalid(errors));
    }
    Ok((set, name))
}

/// Runs a backtest of `pipeline_file`.
///
/// # Errors
/// [`BacktestError`] for an invalid config, missing or bad data, a range without bars.
pub async fn run(
    pipeline_file: &Path,
    options: &BacktestOptions,
) -> Result<BacktestResult, BacktestError> {
    run_with_signals(pipeline_file, options, None).await
}

/// [`run`], with external signals (recorded, see [`crate::signals::read_signals_file`])
/// delivered to a signal-triggered pipeline besides its scanner's generators.
///
/// # Errors
/// As [`run`]; [`BacktestError::Unsupported`] when `external` is given and the pipeline
/// has no `signal` trigger.
pub async fn run_with_signals(
    pipeline_file: &Path,
    options: &BacktestOptions,
    external: Option<Vec<crate::signals::Signal>>,
) -> Result<BacktestResult, BacktestError> {
    let (set, name) = load_pipeline(pipeline_file)?;
    let res = &set.pipelines[&name];
    let pipeline = res
        .spec
        .as_ref()
        .ok_or_else(|| BacktestError::Data(format!("{}: the pipeline does not load", res.file)))?;
    if pipeline.trigger.signal.is_none() && external.is_some() {
        return Err(BacktestError::Unsupported(format!(
            "{}: --signals needs a pipeline with a signal trigger",
            res.file
        )));
    }
    let signal_trigger = pipeline.trigger.signal.is_some();
    let spec = crate::runtime::spec::build(&name, &set).map_err(BacktestError::Data)?;
    let broker_name = spec
        .compiled
        .broker
        .clone()
        .unwrap_or_else(|| "sim".to_string());
    let broker_settings = match set.settings.brokers.get(&broker_name) {
        Some(BrokerSettings::Simulated(s)) => s.clone(),
        _ => match set.settings.brokers.get("sim") {
            Some(BrokerSettings::Simulated(s)) => s.clone(),
            _ => SimulatedBroker::default(),
        },
    };
    let tz: Tz = set
        .settings
        .market_data
        .timezone
        .parse()
        .unwrap_or(chrono_tz::America::New_York);
    let replay = ReplayOptions {
        timezone: tz,
        stamp: set.settings.market_data.timestamps,
    };
    let symbols = spec.symbols.clone();
    if symbols.is_empty() {
        return Err(BacktestError::Data(format!(
            "{}: the pipeline trades no symbols",
            res.file
        )));
    }
    let hub = Arc::new(
        ReplayHub::load_symbols(&options.data_dir, &symbols, &replay)
            .map_err(|e| BacktestError::Data(e.to_string()))?,
    );
    let first = hub.first_end().unwrap_or(0);
    let start = options.from.map_or(first - 1, |d| {
        crate::market::timeframe::local_midnight(tz, d).timestamp()
    });
    let end = options.to.and_then(|d| d.succ_opt()).map_or(i64::MAX, |d| {
        crate::market::timeframe::local_midnight(tz, d).timestamp()
    });
    let total = hub.count_between(start, end);
    if total == 0 {
        let show = |d: Option<NaiveDate>| d.map_or("…".to_string(), |d| d.to_string());
        return Err(BacktestError::Data(format!(
            "no bars of {} between {} and {} in {} (the data covers {} to {})",
            symbols.join(", "),
            show(options.from),
            show(options.to),
            options.data_dir.display(),
            utc(first).with_timezone(&tz).date_naive(),
            hub.last_end().map_or("…".to_string(), |l| utc(l - 1)
                .with_timezone(&tz)
                .date_naive()
                .to_string()),
        )));
    }
    let clock = Arc::new(ManualClock::new(utc(start)));
    let broker_clock = Arc::clone(&clock);
    let broker = connect(
        &broker_name,
        &BrokerSettings::Simulated(broker_settings.clone()),
        Arc::new(move || broker_clock.now().timestamp()),
        None,
        Vec::new(),
    )
    .map_err(|e| BacktestError::Unsupported(e.to_string()))?;
    let account = Account::new(
        vec![broker],
        AccountOptions {
            store: None,
            metrics: None,
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            keep_history: true,
        },
    );
    account.refresh_all().await;
    // One point per bar batch (plus timer steps); one symbol's bars are one batch each.
    account.reserve_history(usize::try_from(total).unwrap_or(0) / symbols.len().max(1) + 16);
    let strategy_timeframe = spec.compiled.strategy_timeframe;
    // LLM nodes call their providers (a rule-only pipeline never builds a client).
    let client = if crate::agents::dag::needs_llm(&spec.compiled) {
        let mut client =
            crate::llm::LlmClient::new(&set.settings.llm, None).map_err(BacktestError::Data)?;
        if options.llm != crate::llm::cassette::LlmRun::Live {
            let file = options
                .llm_file
                .clone()
                .unwrap_or_else(|| crate::llm::cassette::default_path(&set.root, &name));
            // Opened now, so that a missing replay file is an error before the first bar.
            let recordings = crate::llm::cassette::Recordings::new(
                options.llm,
                move |_| file.clone(),
                options.max_cost_usd,
            );
            recordings.of(&name, false).map_err(BacktestError::Data)?;
            client = client.with_recordings(recordings);
        }
        Some(Arc::new(client))
    } else {
        None
    };
    let llm: Arc<dyn crate::agents::LlmAgents> = match &client {
        Some(c) => Arc::clone(c) as _,
        None => Arc::new(NoLlm),
    };
    let replay_miss = || {
        client
            .as_ref()
            .and_then(|c| c.recordings())
            .and_then(|r| r.first_miss())
    };
    let mut runner = PipelineRunner::new(
        spec,
        tz,
        Arc::clone(&hub) as Arc<dyn History>,
        llm,
        start,
        &account,
        options.keep_records,
        options.keep_records,
    );
    if let Some(reason) = runner.core().failed() {
        return Err(BacktestError::Data(format!("{}: {reason}", res.file)));
    }
    // A signal trigger: the scanner's generators on the replayed bars, and the recorded
    // external signals, delivered after each step's bars.
    let mut signals = signal_trigger.then(|| {
        crate::signals::backtest::BacktestSignals::new(
            &set,
            &name,
            hub.as_ref(),
            start,
            tz,
            external.unwrap_or_default(),
        )
    });
    let mut timeline = hub.batches_after(start);
    // One batch reused for every step (no allocation per bar).
    let mut batch = crate::engine::core::BarBatch {
        end: 0,
        bars: Vec::with_capacity(symbols.len()),
    };
    let mut bars: u64 = 0;
    let mut last = start;
    while let Some(next_bar) = timeline.peek_end().filter(|t| *t <= end) {
        let t = match runner.core().next_wake() {
            Some(w) if w > last && w < next_bar => w,
            _ => next_bar,
        };
        clock.set(utc(t));
        if t == next_bar {
            if !timeline.next_into(&mut batch) {
                break;
            }
            account.on_bars(&batch, tz).await;
            runner.step(t, &batch.bars, &account).await;
            if let Some(s) = signals.as_mut() {
                s.deliver(t, Some(&batch), &mut runner, &account).await;
            }
            if client.is_some()
                && let Some(miss) = replay_miss()
            {
                return Err(BacktestError::Data(format!(
                    "--llm replay: no recorded answer for node '{}' of pipeline {} at the bar of {} (request {}); record the run with --llm record",
                    miss.node,
                    miss.pipeline,
                    utc(miss.at).to_rfc3339(),
                    miss.key
                )));
            }
            let before = bars;
            bars += batch.bars.len() as u64;
            if let Some(progress) = options.progress
                && before / 4096 != bars / 4096
            {
                progress(bars, total);
            }
        } else {
            account.roll_day(t, tz);
            runner.step(t, &[], &account).await;
            if let Some(s) = signals.as_mut() {
                s.deliver(t, None, &mut runner, &account).await;
            }
        }
        account.record_equity(t).await;
        last = t;
    }
    if let Some(progress) = options.progress {
        progress(bars, total);
    }
    let (trades, equity) = account.take_history();
    let initial_equity = broker_settings.initial_balance;
    let performance = Performance::compute(&trades, &equity, initial_equity, tz);
    let stats = runner.stats().clone();
    let records = runner.take_records();
    let data_timeframes = symbols
        .iter()
        .filter_map(|s| hub.timeframe(s).map(|tf| (s.clone(), tf)))
        .collect();
    let closes = symbols
        .iter()
        .map(|s| {
            // The simulated broker's marks: the same conversion, unpriceable bars skipped.
            let closes = hub
                .closes_between(s, start, end.min(last))
                .into_iter()
                .filter_map(|(t, c)| crate::broker::bar_price(c).map(|p| (t, p)))
                .collect();
            (s.clone(), closes)
        })
        .collect();
    Ok(BacktestResult {
        pipeline: name,
        symbols,
        initial_equity,
        trades,
        equity,
        bars,
        range: (start, last),
        executions: stats.executions(),
        failures: stats.failures,
        orders: stats.orders,
        llm_cost_usd: stats.cost_usd,
        risk_rejections: stats.risk_rejections,
        open_positions: account.positions(),
        records,
        performance,
        timezone: tz,
        strategy_timeframe,
        data_timeframes,
        closes,
        signals: signals.map(|s| s.outcomes).unwrap_or_default(),
    })
}
