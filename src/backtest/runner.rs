//! The backtest runner: one pipeline over historical bars with a simulated clock and the
//! simulated broker. The same compiled pipeline, feeds, executor, risk manager and book as
//! the daemon; only the clock and the loop differ.
//!
//! The loop, per distinct bar end time `T` (a bar becomes visible when its period closes):
//! 1. schedule triggers and window ends strictly before `T` fire;
//! 2. for each symbol with a bar ending at `T`: the broker processes the bar (orders from
//!    earlier executions fill at its open; stops and targets from its range), the fills are
//!    booked (stop to breakeven after target 1), the feed takes the bar;
//! 3. `bar_close` and `continuous` triggers run the DAG for the symbols whose bar closed;
//!    the orders they produce fill from the next bar;
//! 4. schedules due at `T` fire; equity is recorded; limits are updated.

use crate::backtest::analytics::Performance;
use crate::broker::sim::SimBroker;
use crate::broker::{
    BrokerEvent, ExitOrder, OrderPurpose, OrderType, Position, Submit, client_order_id,
};
use crate::config::load::{ConfigSet, load_dir};
use crate::config::pipeline::Pipeline;
use crate::config::settings::{BrokerSettings, SimulatedBroker};
use crate::config::{Finding, Severity};
use crate::engine::book::{Book, FollowUp};
use crate::engine::clock::LocalDays;
use crate::engine::clock::utc;
use crate::engine::exec::{AccountSource, AccountView, ExecInput, execute};
use crate::engine::feed::SymbolFeed;
use crate::engine::limits::LimitState;
use crate::engine::picker::CompiledScanner;
use crate::engine::pipeline::CompiledPipeline;
use crate::engine::schedule::Schedule;
use crate::engine::state::{ExecutionRecord, ExecutionStatus};
use crate::engine::trades::{EquityPoint, TradeRecord};
use crate::market::replay::{ReplayOptions, Series, read_file};
use crate::market::{Bar, Timeframe};
use crate::risk::evaluate::{CORRELATION_LOOKBACK, correlation};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What can stop a backtest before it runs.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The pipeline file or a resource it uses is invalid.
    #[error("the configuration is invalid:\n{}", .0.iter().map(Finding::human).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Finding>),
    /// Missing or bad data.
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
    /// First day traded (bars before it still warm the indicators up).
    pub from: Option<NaiveDate>,
    /// Last day traded.
    pub to: Option<NaiveDate>,
    /// Keep the full execution records (slower; for inspection and tests).
    pub keep_records: bool,
    /// Called with (bars done, bars total) now and then.
    pub progress: Option<fn(u64, u64)>,
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
    /// Equity after each bar time.
    pub equity: Vec<EquityPoint>,
    /// Bars processed.
    pub bars: u64,
    /// Executions by status.
    pub executions: BTreeMap<&'static str, u64>,
    /// Orders submitted.
    pub orders: u64,
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

/// The symbols a pipeline trades: its `symbols`, its scanner's tickers (or universe), or
/// its stock picker's universe.
pub fn pipeline_symbols(set: &ConfigSet, pipeline: &Pipeline) -> Vec<String> {
    if let Some(s) = &pipeline.symbols {
        return s.clone();
    }
    let scanner = pipeline.scanner.clone().or_else(|| {
        pipeline.nodes.iter().find_map(|n| match &n.agent {
            crate::config::pipeline::AgentConfig::StockPicker(c) => Some(c.scanner.clone()),
            _ => None,
        })
    });
    scanner
        .and_then(|s| set.scanners.get(&s))
        .and_then(|r| r.spec.as_ref())
        .map(|s| s.candidates().to_vec())
        .unwrap_or_default()
}

struct SymbolRun {
    symbol: String,
    series: Series,
    feed: SymbolFeed,
    /// The stock picker's scanner feed, when the pipeline has a picker.
    scan: Option<SymbolFeed>,
    next: usize,
    daily: Vec<f64>,
    last_day: Option<NaiveDate>,
}

/// Runs a backtest of `pipeline_file`.
///
/// # Errors
/// [`BacktestError`] for an invalid config, missing or bad data, or a pipeline a backtest
/// cannot run (signal triggers).
pub async fn run(
    pipeline_file: &Path,
    options: &BacktestOptions,
) -> Result<BacktestResult, BacktestError> {
    let (set, name) = load_pipeline(pipeline_file)?;
    let res = &set.pipelines[&name];
    let spec = res
        .spec
        .as_ref()
        .ok_or_else(|| BacktestError::Data(format!("{}: the pipeline does not load", res.file)))?;
    if spec.trigger.signal.is_some() {
        return Err(BacktestError::Unsupported(format!(
            "{}: signal-triggered pipelines need the signal bus, which backtests do not replay yet; use a bar_close trigger to backtest the same rules",
            res.file
        )));
    }
    let risk = spec
        .risk
        .as_ref()
        .and_then(|r| set.risk.get(r))
        .and_then(|r| r.spec.clone());
    let compiled = CompiledPipeline::compile(&name, spec, risk.as_ref())
        .map_err(|e| BacktestError::Data(e.to_string()))?;
    let broker_settings = match compiled
        .broker
        .as_ref()
        .and_then(|b| set.settings.brokers.get(b))
    {
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
    let symbols = pipeline_symbols(&set, spec);
    if symbols.is_empty() {
        return Err(BacktestError::Data(format!(
            "{}: the pipeline trades no symbols",
            res.file
        )));
    }
    // A stock picker runs its filter scanner over the universe at every trigger.
    let picker = match compiled.stock_picker() {
        Some((scanner, top_n)) => {
            let spec = set
                .scanners
                .get(scanner)
                .and_then(|r| r.spec.as_ref())
                .ok_or_else(|| {
                    BacktestError::Data(format!("stock picker: no scanner '{scanner}'"))
                })?;
            Some((
                CompiledScanner::compile(scanner, spec).map_err(BacktestError::Data)?,
                top_n,
            ))
        }
        None => None,
    };
    let mut runs = Vec::new();
    for symbol in &symbols {
        let path = options.data_dir.join(format!("{symbol}.csv"));
        let series = read_file(&path, &replay).map_err(|e| BacktestError::Data(e.to_string()))?;
        let feed = SymbolFeed::new(symbol, series.timeframe, tz, &compiled.layout)
            .map_err(|e| BacktestError::Data(e.to_string()))?;
        let scan = picker
            .as_ref()
            .map(|(scanner, _)| SymbolFeed::new(symbol, series.timeframe, tz, &scanner.layout))
            .transpose()
            .map_err(|e| BacktestError::Data(e.to_string()))?;
        runs.push(SymbolRun {
            symbol: symbol.clone(),
            series,
            feed,
            scan,
            next: 0,
            daily: Vec::new(),
            last_day: None,
        });
    }
    let mut engine = Runner::new(compiled, res.hash.clone(), broker_settings, tz, options);
    engine.picker = picker;
    engine.run(&mut runs).await;
    Ok(engine.finish(symbols))
}

struct Runner<'o> {
    p: CompiledPipeline,
    revision: String,
    broker: SimBroker,
    book: Book,
    limits: LimitState,
    tz: Tz,
    options: &'o BacktestOptions,
    initial_equity: Decimal,
    equity: Vec<EquityPoint>,
    trades: Vec<TradeRecord>,
    executions: BTreeMap<&'static str, u64>,
    orders: u64,
    risk_rejections: BTreeMap<String, u64>,
    records: Vec<ExecutionRecord>,
    schedule: Option<Schedule>,
    next_fire: Option<DateTime<Utc>>,
    day: Option<NaiveDate>,
    day_start_equity: Decimal,
    account_halt: Option<String>,
    once_done: bool,
    bars: u64,
    days: LocalDays,
    /// The stock picker's compiled scanner and top N.
    picker: Option<(CompiledScanner, u32)>,
    /// Traded range as bar-close instants: after `.0`, up to and including `.1`.
    range: (i64, i64),
}

/// The simulated account, read lazily by the risk manager.
struct SimAccount<'a> {
    broker: &'a SimBroker,
    day_start_equity: Decimal,
}

impl AccountSource for SimAccount<'_> {
    fn equity(&self) -> Decimal {
        self.broker.account().equity
    }
    fn positions(&self) -> Vec<Position> {
        self.broker.positions()
    }
    fn day_pnl(&self) -> Decimal {
        self.broker.account().equity - self.day_start_equity
    }
}

impl<'o> Runner<'o> {
    fn new(
        p: CompiledPipeline,
        revision: String,
        broker: SimulatedBroker,
        tz: Tz,
        options: &'o BacktestOptions,
    ) -> Runner<'o> {
        let initial_equity = broker.initial_balance;
        Runner {
            schedule: None,
            next_fire: None,
            p,
            revision,
            broker: SimBroker::new("sim", &broker),
            book: Book::new(),
            limits: LimitState::default(),
            tz,
            options,
            initial_equity,
            equity: Vec::new(),
            trades: Vec::new(),
            executions: BTreeMap::new(),
            orders: 0,
            risk_rejections: BTreeMap::new(),
            records: Vec::new(),
            day: None,
            day_start_equity: initial_equity,
            account_halt: None,
            once_done: false,
            bars: 0,
            days: LocalDays::new(tz),
            picker: None,
            range: (
                options.from.map_or(i64::MIN, |d| {
                    crate::market::timeframe::local_midnight(tz, d).timestamp()
                }),
                options.to.and_then(|d| d.succ_opt()).map_or(i64::MAX, |d| {
                    crate::market::timeframe::local_midnight(tz, d).timestamp()
                }),
            ),
        }
    }

    /// Whether `t` (a bar's close, or a schedule time) falls in the traded date range; a
    /// close at local midnight belongs to the day that ended.
    fn in_range(&self, t: DateTime<Utc>) -> bool {
        let t = t.timestamp();
        t > self.range.0 && t <= self.range.1
    }

    async fn run(&mut self, runs: &mut [SymbolRun]) {
        let total: u64 = runs.iter().map(|r| r.series.bars.len() as u64).sum();
        // Bar end times, merged across symbols.
        let mut days = LocalDays::new(self.tz);
        let ends: Vec<Vec<i64>> = runs
            .iter()
            .map(|r| {
                r.series
                    .bars
                    .iter()
                    .map(|b| days.period_end(r.series.timeframe, b.ts))
                    .collect()
            })
            .collect();
        // (symbol index, timeframes completed) of one step; the vectors are reused.
        let mut closed: Vec<(usize, Vec<Timeframe>)> = Vec::new();
        let mut spare: Vec<Vec<Timeframe>> = Vec::new();
        let first = ends
            .iter()
            .filter_map(|e| e.first())
            .min()
            .copied()
            .unwrap_or(0);
        if let Some(s) = &self.p.trigger.schedule {
            self.schedule = Schedule::from_trigger(s, utc(first)).ok();
            self.next_fire = self
                .schedule
                .as_ref()
                .and_then(|s| s.next_after(utc(first)));
        }
        let trigger_tf = self.p.trigger.bar_close.as_ref().map(|b| b.timeframe);
        let continuous_tf = self
            .p
            .trigger
            .continuous
            .as_ref()
            .map(|_| self.p.strategy_timeframe.unwrap_or(Timeframe::D1));
        let mut prev_t = i64::MIN;
        loop {
            let t = runs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| ends[i].get(r.next).copied())
                .min();
            let Some(t) = t else { break };
            self.fire_schedules(runs, prev_t, t, false).await;
            self.roll_day(t);
            spare.extend(closed.drain(..).map(|(_, mut v)| {
                v.clear();
                v
            }));
            for i in 0..runs.len() {
                if ends[i].get(runs[i].next) != Some(&t) {
                    continue;
                }
                let bar = runs[i].series.bars[runs[i].next];
                runs[i].next += 1;
                self.bars += 1;
                self.process_bar(&runs[i].symbol, &bar);
                let r = &mut runs[i];
                let mut done = spare.pop().unwrap_or_default();
                done.extend_from_slice(r.feed.advance_to(t));
                done.extend_from_slice(r.feed.push(&bar, t));
                if let Some(scan) = r.scan.as_mut() {
                    scan.advance_to(t);
                    scan.push(&bar, t);
                }
                let day = self.days.date(bar.ts);
                if r.series.timeframe >= Timeframe::D1 || r.last_day != Some(day) {
                    r.daily.push(bar.close);
                } else if let Some(last) = r.daily.last_mut() {
                    *last = bar.close;
                }
                r.last_day = Some(day);
                closed.push((i, done));
            }
            if self.in_range(utc(t)) {
                if !self.once_done && self.p.trigger.once.is_some() {
                    self.once_done = true;
                    let all: Vec<usize> = (0..runs.len()).collect();
                    self.run_executions(runs, &all, t, "once").await;
                }
                for (i, done) in &closed {
                    if let Some(stf) = self.p.strategy_timeframe
                        && done.contains(&stf)
                    {
                        self.book.bar_closed(&self.p.name, &runs[*i].symbol);
                    }
                    let fire = trigger_tf.is_some_and(|tf| done.contains(&tf))
                        || continuous_tf.is_some_and(|tf| done.contains(&tf));
                    if fire {
                        let label = if trigger_tf.is_some() {
                            "bar_close"
                        } else {
                            "continuous"
                        };
                        self.run_executions(runs, &[*i], t, label).await;
                    }
                }
            }
            self.fire_schedules(runs, prev_t, t, true).await;
            self.after_step(utc(t));
            prev_t = t;
            if let Some(progress) = self.options.progress
                && self.bars % 4096 < runs.len() as u64
            {
                progress(self.bars, total);
            }
        }
        if let Some(progress) = self.options.progress {
            progress(self.bars, total);
        }
    }

    /// Fires schedule triggers and window ends in `(prev, t)` (`inclusive`: in `(prev, t]`).
    async fn fire_schedules(&mut self, runs: &mut [SymbolRun], prev: i64, t: i64, inclusive: bool) {
        if prev == i64::MIN {
            return;
        }
        if let Some(window) = &self.p.window
            && self.p.flatten_at_end
        {
            let ends = window.flatten_times_between(utc(prev), utc(t));
            for end in ends {
                let due = if inclusive {
                    end.timestamp() == t
                } else {
                    end.timestamp() < t
                };
                if due {
                    self.flatten(OrderPurpose::EndOfWindow, end.timestamp());
                }
            }
        }
        while let Some(at) = self.next_fire {
            let ts = at.timestamp();
            let due = if inclusive { ts <= t } else { ts < t };
            if !due {
                break;
            }
            self.next_fire = self.schedule.as_ref().and_then(|s| s.next_after(at));
            if self.in_range(at) {
                let all: Vec<usize> = (0..runs.len()).collect();
                self.run_executions(runs, &all, ts, "schedule").await;
            }
        }
    }

    fn roll_day(&mut self, t: i64) {
        // A bar closing at local midnight belongs to the day that ended.
        let day = self.days.date(t - 1);
        if self.day.is_none_or(|d| day > d) {
            self.day = Some(day);
            self.day_start_equity = self.broker.account().equity;
            self.account_halt = None;
            let pnl = self.cumulative_pnl();
            self.limits.roll(day, pnl);
        }
    }

    fn cumulative_pnl(&self) -> Decimal {
        self.broker.account().equity - self.initial_equity
    }

    fn process_bar(&mut self, symbol: &str, bar: &Bar) {
        let events = self.broker.on_bar(symbol, bar);
        for event in events {
            match event {
                BrokerEvent::Fill(fill) => {
                    for follow in self.book.on_fill(&fill) {
                        match follow {
                            FollowUp::ReplaceStop {
                                client_order_id,
                                price,
                                quantity,
                            } => {
                                let _ = self.broker.replace_stop(&client_order_id, price, quantity);
                            }
                            FollowUp::CancelGroup(group) => self.cancel_group(&group),
                        }
                    }
                    self.trades.extend(self.book.drain_closed());
                }
                BrokerEvent::Rejected {
                    client_order_id, ..
                }
                | BrokerEvent::Cancelled {
                    client_order_id, ..
                } => {
                    self.book.drop_entry(&client_order_id);
                }
            }
        }
    }

    fn cancel_group(&mut self, group: &str) {
        let ids: Vec<String> = self
            .broker
            .open_orders()
            .into_iter()
            .filter(|o| o.oco_group.as_deref() == Some(group) || o.client_order_id == group)
            .map(|o| o.client_order_id)
            .collect();
        for id in ids {
            let _ = self.broker.cancel(&id);
        }
    }

    /// Market exits for every open trade of the pipeline.
    fn flatten(&mut self, purpose: OrderPurpose, now: i64) {
        let open: Vec<_> = self.book.open_trades().cloned().collect();
        for t in open {
            self.cancel_group(&t.group);
            let order = ExitOrder {
                client_order_id: client_order_id(
                    &t.pipeline,
                    &t.symbol,
                    &now.to_string(),
                    purpose.as_str(),
                ),
                pipeline: t.pipeline.clone(),
                symbol: t.symbol.clone(),
                position_side: t.side,
                quantity: t.quantity,
                order_type: OrderType::Market,
                purpose,
                oco_group: Some(t.group.clone()),
            };
            if self.broker.submit(Submit::Exit(order), now).is_ok() {
                self.orders += 1;
            }
        }
    }

    async fn run_executions(
        &mut self,
        runs: &mut [SymbolRun],
        which: &[usize],
        t: i64,
        trigger: &'static str,
    ) {
        let now = utc(t);
        if let Some(window) = &self.p.window
            && !window.contains(now)
        {
            *self.executions.entry("skipped").or_default() += which.len() as u64;
            return;
        }
        // The stock picker keeps the top N of its scanner; symbols with an open position
        // still run, so that their exits are managed.
        let picked: Vec<usize>;
        let which = match &self.picker {
            Some((scanner, top_n)) => {
                let chosen = scanner.pick(
                    runs.iter()
                        .filter_map(|r| r.scan.as_ref().map(|f| (r.symbol.as_str(), f))),
                    *top_n,
                );
                picked = which
                    .iter()
                    .copied()
                    .filter(|&i| {
                        chosen.contains(&runs[i].symbol)
                            || self.book.get(&self.p.name, &runs[i].symbol).is_some()
                    })
                    .collect();
                &picked[..]
            }
            None => which,
        };
        for &i in which {
            if self.limits.execution_allowed(&self.p.limits).is_err() {
                *self.executions.entry("skipped").or_default() += 1;
                continue;
            }
            self.limits.count_execution();
            if runs[i].next >= runs[i].series.bars.len() && runs[i].feed.last_close() < t {
                // The symbol's data has ended: nothing it decides could fill.
                *self.executions.entry("skipped").or_default() += 1;
                continue;
            }
            let symbol = runs[i].symbol.clone();
            let mut position = self.book.view(&self.p.name, &symbol);
            if let Some(pos) = position.as_mut() {
                pos.exit_pending = self.broker.open_orders().iter().any(|o| {
                    o.symbol == symbol
                        && o.pipeline == self.p.name
                        && matches!(
                            o.purpose,
                            OrderPurpose::ExitRule
                                | OrderPurpose::EndOfWindow
                                | OrderPurpose::Emergency
                                | OrderPurpose::RiskFlatten
                                | OrderPurpose::PipelineRemoved
                        )
                });
            }
            {
                let layout = &self.p.layout;
                let (entry, held) = position.as_ref().map_or((f64::NAN, f64::NAN), |p| {
                    (
                        crate::risk::evaluate::to_f64(p.average_price),
                        f64::from(p.bars_held),
                    )
                });
                runs[i].feed.set_position(layout, entry, held);
            }
            let halt = self
                .account_halt
                .clone()
                .or_else(|| self.limits.entry_block(&self.p.limits));
            let correlation_fn = |a: &str, b: &str| -> Option<f64> {
                let sa = runs.iter().find(|r| r.symbol == a)?;
                let sb = runs.iter().find(|r| r.symbol == b)?;
                correlation(&sa.daily, &sb.daily, CORRELATION_LOOKBACK)
            };
            let out = execute(ExecInput {
                pipeline: &self.p,
                revision: &self.revision,
                symbol: &symbol,
                feed: &runs[i].feed,
                now: t,
                trigger,
                position,
                account: AccountView {
                    source: &SimAccount {
                        broker: &self.broker,
                        day_start_equity: self.day_start_equity,
                    },
                    halted: halt.as_deref(),
                },
                correlation: &correlation_fn,
                llm: &crate::agents::NoLlm,
                record: self.options.keep_records,
            })
            .await;
            *self.executions.entry(out.status.as_str()).or_default() += 1;
            if let Some(d) = &out.decision
                && !d.approved
            {
                *self.risk_rejections.entry(d.rule.clone()).or_default() += 1;
            }
            if let Some(r) = out.record {
                self.records.push(r);
            }
            if out.status != ExecutionStatus::Completed {
                continue;
            }
            if let Some(order) = out.order {
                if let Submit::Entry(e) = &order {
                    self.book.expect_entry(
                        e.get(),
                        self.p.trade.move_stop_to_breakeven,
                        self.p.mode.as_str(),
                    );
                    self.limits.count_entry();
                }
                if let Submit::Exit(x) = &order
                    && let Some(group) = &x.oco_group
                {
                    // The exit rule closes everything: take the bracket legs down first.
                    let group = group.clone();
                    self.cancel_group(&group);
                }
                if self.broker.submit(order, t).is_ok() {
                    self.orders += 1;
                }
            }
        }
    }

    fn after_step(&mut self, t: DateTime<Utc>) {
        let account = self.broker.account();
        if self.in_range(t) {
            self.equity.push(EquityPoint {
                ts: t.timestamp(),
                equity: account.equity,
                cash: account.cash,
            });
        }
        let pnl = account.equity - self.initial_equity;
        if let Some(reason) = self
            .limits
            .update_pnl(&self.p.limits, pnl, self.initial_equity)
        {
            let _ = reason;
        }
        if self.account_halt.is_none()
            && let Some(limit) = self.p.risk.limits.daily_loss_usd
            && self.day_start_equity - account.equity >= limit
        {
            self.account_halt = Some(format!(
                "daily_loss_usd: the account lost {} USD today",
                (self.day_start_equity - account.equity).round_dp(2)
            ));
            if self.p.risk.limits.daily_loss_action == crate::config::risk::DailyLossAction::Flatten
            {
                self.flatten(OrderPurpose::RiskFlatten, t.timestamp());
            }
        }
    }

    fn finish(mut self, symbols: Vec<String>) -> BacktestResult {
        self.trades.extend(self.book.drain_closed());
        let performance =
            Performance::compute(&self.trades, &self.equity, self.initial_equity, self.tz);
        BacktestResult {
            pipeline: self.p.name.clone(),
            symbols,
            initial_equity: self.initial_equity,
            trades: self.trades,
            equity: self.equity,
            bars: self.bars,
            executions: self.executions,
            orders: self.orders,
            risk_rejections: self.risk_rejections,
            open_positions: self.broker.positions(),
            records: self.records,
            performance,
            timezone: self.tz,
        }
    }
}
