//! [`PipelineCore`]: one pipeline's trading logic as a state machine without I/O.
//!
//! It owns the pipeline's feeds (bars and indicators of its symbols), its triggers, its
//! trading window, its limits, the stock picker's narrowing, its removal (`on_remove`), and
//! turns what happens into [`Intent`]s. The account side — positions, working orders,
//! halts — is the [`Ledger`], passed in.
//!
//! # A step
//!
//! A driver delivers time in steps. A step at instant `t` (Unix seconds) happens when bars
//! close at `t` or when the core's [`PipelineCore::next_wake`] is due at `t`:
//!
//! 1. the brokers process the bars of `t` first (orders sent earlier fill at their open,
//!    stops and targets against their range), so the book is up to date;
//! 2. [`PipelineCore::step`]: the pipeline's day rolls (its limit counters reset), the
//!    bars go into the feeds, bars of the strategy timeframe count towards `bars_held`,
//!    `bar_close` and `continuous` triggers run the DAG for the symbols whose bar closed,
//!    then the timers due at `t` fire: the window end (`flatten_at_end`), `once`, the
//!    `schedule`;
//! 3. the driver runs each [`Intent::Execute`] in order ([`PipelineCore::prepare`], the DAG,
//!    [`PipelineCore::executed`]) and sends the orders they decided, which fill from the
//!    next bar on;
//! 4. [`PipelineCore::after_step`]: the pipeline's P&L (realized + unrealized at the last
//!    closes) updates its loss and drawdown limits; the risk policy's account-wide
//!    `daily_loss_usd` latches a halt (and flattens with `daily_loss_action: flatten`); a
//!    pipeline removed with `on_remove: close` flattens what filled since.
//!
//! # Triggers
//!
//! * `bar_close { timeframe }`: each bar of that timeframe that closes, per symbol.
//! * `schedule` (cron, `interval`, `market_open`): at each fire time, all symbols.
//! * `once { delay }`: once, `delay` after the core starts, all symbols.
//! * `continuous { cooldown, while_position_open }`: at each closed bar of the strategy's
//!   timeframe (the data's when there is no strategy node) of a symbol, when at least
//!   `cooldown` has passed since the symbol's last run; with `while_position_open: skip`
//!   not while the pipeline holds (or has an entry pending in) the symbol. New data is what
//!   can change a decision, so a continuous pipeline runs when data arrives, at most once
//!   per cooldown.
//! * `signal`: [`CoreCommand::Signal`] from the dispatcher.
//!
//! An execution outside the trading window is skipped; `max_executions_per_day` skips
//! executions, `max_trades_per_day`, the loss limits, a halt or a removal stop entries only
//! (exit rules keep running).

use super::{ExecRequest, History, Intent, Ledger, SkipReason, TriggerKind};
use crate::broker::{OrderPurpose, Submit};
use crate::config::pipeline::{Mode, WhilePositionOpen};
use crate::config::risk::DailyLossAction;
use crate::domain::{Halt, HaltCause, Scope};
use crate::engine::clock::{LocalDays, utc};
use crate::engine::feed::SymbolFeed;
use crate::engine::limits::LimitState;
use crate::engine::picker::CompiledScanner;
use crate::engine::pipeline::CompiledPipeline;
use crate::engine::schedule::Schedule;
use crate::engine::state::PositionView;
use crate::market::Timeframe;
use chrono::NaiveDate;
use chrono_tz::Tz;
use rust_decimal::Decimal;

/// What a pipeline runs: its compiled DAG and settings, its revision, its symbols and its
/// stock picker.
#[derive(Clone, Debug)]
pub struct PipelineSpec {
    /// The compiled pipeline.
    pub compiled: CompiledPipeline,
    /// Config revision (short hash).
    pub revision: String,
    /// Symbols (its `symbols`, its scanner's tickers, or its picker's universe).
    pub symbols: Vec<String>,
    /// Its stock picker's compiled scanner and top N.
    pub picker: Option<(CompiledScanner, u32)>,
}

/// What a pipeline needs of a live source for each of its symbols: bars of the finest
/// timeframe it reads (the data timeframe), going back far enough to warm up its
/// indicators on its coarsest timeframe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataNeed {
    /// The finest timeframe read (layout frames, trigger, stock picker).
    pub finest: Timeframe,
    /// The coarsest timeframe read.
    pub coarsest: Timeframe,
    /// Bars of the coarsest timeframe the indicators need (the configured lookback).
    pub lookback: usize,
}

impl PipelineSpec {
    /// See [`DataNeed`].
    pub fn data_need(&self) -> DataNeed {
        let c = &self.compiled;
        let mut frames: Vec<Timeframe> = c.layout.frames.iter().map(|f| f.timeframe).collect();
        if let Some(b) = &c.trigger.bar_close {
            frames.push(b.timeframe);
        }
        if let Some(tf) = c.strategy_timeframe {
            frames.push(tf);
        }
        if let Some((scanner, _)) = &self.picker {
            frames.extend(scanner.layout.frames.iter().map(|f| f.timeframe));
            frames.push(scanner.timeframe);
        }
        DataNeed {
            finest: frames.iter().copied().min().unwrap_or(Timeframe::D1),
            coarsest: frames.iter().copied().max().unwrap_or(Timeframe::D1),
            lookback: c.warmup_bars,
        }
    }
}

/// A pipeline's status, as `ztraded_pipelines{state}` counts them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Taking triggers and new entries.
    Running,
    /// Taking triggers; entries halted (latched halt or a reached limit).
    Halted(String),
    /// Removed or disabled: no new entries, exits managed until flat.
    Draining,
    /// Not running.
    Stopped,
    /// Could not start (no data for a symbol, a compile error, a broker it cannot use).
    Failed(String),
}

impl Status {
    /// `running`, `halted`, `draining`, `stopped` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Halted(_) => "halted",
            Status::Draining => "draining",
            Status::Stopped => "stopped",
            Status::Failed(_) => "failed",
        }
    }
}

/// Commands from outside the clock.
#[derive(Clone, Debug, PartialEq)]
pub enum CoreCommand {
    /// The pipeline was removed or disabled: no new entries, pending entries cancelled; with
    /// `close`, its positions are flattened now (`on_remove: close`), else exits are
    /// managed until flat (`drain`).
    Remove {
        /// `on_remove: close`.
        close: bool,
    },
    /// A market signal for a symbol (the `signal` trigger).
    Signal {
        /// Ticker.
        symbol: String,
        /// Signal type.
        signal_type: String,
        /// Confidence, 0–100.
        confidence: f64,
    },
}

/// What became of a signal delivered to a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalOutcome {
    /// An execution was started.
    Dispatched,
    /// An execution of the pipeline for the ticker is already pending or running.
    Deduplicated,
    /// Its confidence is below the subscription's `min_confidence`.
    BelowConfidence,
    /// The ticker is not among the pipeline's symbols.
    NotInScanner,
    /// No subscription of the pipeline matches its type.
    NotSubscribed,
    /// Entries of the pipeline are halted, or it is draining.
    Halted,
    /// Outside the trading window.
    OutsideWindow,
}

impl SignalOutcome {
    /// snake_case name (the `outcome` label).
    pub fn as_str(self) -> &'static str {
        match self {
            SignalOutcome::Dispatched => "dispatched",
            SignalOutcome::Deduplicated => "deduplicated",
            SignalOutcome::BelowConfidence => "below_confidence",
            SignalOutcome::NotInScanner => "not_in_scanner",
            SignalOutcome::NotSubscribed => "not_subscribed",
            SignalOutcome::Halted => "halted",
            SignalOutcome::OutsideWindow => "outside_window",
        }
    }
}

/// What an execution reads from the account, prepared by [`PipelineCore::prepare`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// This pipeline's open position in the symbol.
    pub position: Option<PositionView>,
    /// Whether an entry of this pipeline in the symbol is sent and not settled yet (it
    /// counts as a position).
    pub pending_entry: bool,
    /// Why entries are not allowed now, if they are not.
    pub halt: Option<String>,
}

/// See the module documentation.
pub struct PipelineCore {
    spec: PipelineSpec,
    tz: Tz,
    feeds: Vec<Option<SymbolFeed>>,
    scans: Vec<Option<SymbolFeed>>,
    failed: Option<String>,
    limits: LimitState,
    schedule: Option<Schedule>,
    next_fire: Option<i64>,
    once_at: Option<i64>,
    last_continuous: Vec<Option<i64>>,
    next_flatten: Option<i64>,
    removal: Option<bool>,
    base_equity: Option<Decimal>,
    in_flight: Vec<bool>,
    days: LocalDays,
    risk_halted: Option<NaiveDate>,
    trigger_tf: Option<Timeframe>,
    continuous_tf: Option<Timeframe>,
    /// Bars pushed into the feeds since the core started (warm-up excluded).
    bars: u64,
    /// The instant the feeds were warmed up to: bars closing at or before it are in them
    /// already and a step delivering them again does not push them twice.
    warmed_until: i64,
    /// Reused buffers of a step's triggered symbols (no allocation per bar).
    fire: Vec<usize>,
    cont: Vec<usize>,
    /// The source's exchange sessions for `market_open` (`None`: our NYSE calendar).
    calendar: Option<std::sync::Arc<dyn crate::market::live::SessionCalendar>>,
    /// The last position price converted for the exit rules: its exact representation
    /// (`Decimal::serialize`) and its `f64`.
    entry_f64: Option<([u8; 16], f64)>,
}

impl PipelineCore {
    /// A core for `spec` starting at `now` (Unix seconds): each symbol's feed warms up with
    /// the last bars of `history` that closed at or before `now` (the pipeline's largest
    /// `lookback`, counted in bars of its coarsest timeframe), and the triggers start from
    /// `now`. A symbol without data, or a layout the data cannot serve, makes the core
    /// [`Status::Failed`] with the reason.
    pub fn new(spec: PipelineSpec, tz: Tz, history: &dyn History, now: i64) -> PipelineCore {
        let n = spec.symbols.len();
        let (continuous, signals) = (
            spec.compiled.trigger.continuous.is_some(),
            spec.compiled.trigger.signal.is_some(),
        );
        let mut core = PipelineCore {
            spec,
            tz,
            feeds: Vec::new(),
            scans: Vec::new(),
            failed: None,
            limits: LimitState::default(),
            schedule: None,
            next_fire: None,
            once_at: None,
            // Per-symbol state only for the triggers that need it (a daemon keeps thousands
            // of cores).
            last_continuous: if continuous {
                vec![None; n]
            } else {
                Vec::new()
            },
            next_flatten: None,
            removal: None,
            base_equity: None,
            in_flight: if signals { vec![false; n] } else { Vec::new() },
            days: LocalDays::new(tz),
            risk_halted: None,
            trigger_tf: None,
            continuous_tf: None,
            bars: 0,
            warmed_until: now,
            fire: Vec::new(),
            cont: Vec::new(),
            calendar: None,
            entry_f64: None,
        };
        core.configure(history, now);
        core
    }

    /// Restarts with a new configuration (a changed file), between executions: feeds are
    /// rebuilt from `history` up to `now`, triggers start again from `now`; the day's limit
    /// counters and the positions are kept, and a removal is undone.
    pub fn update(&mut self, spec: PipelineSpec, history: &dyn History, now: i64) {
        let n = spec.symbols.len();
        self.last_continuous = if spec.compiled.trigger.continuous.is_some() {
            vec![None; n]
        } else {
            Vec::new()
        };
        self.in_flight = if spec.compiled.trigger.signal.is_some() {
            vec![false; n]
        } else {
            Vec::new()
        };
        self.spec = spec;
        self.removal = None;
        self.configure(history, now);
    }

    fn configure(&mut self, history: &dyn History, now: i64) {
        self.failed = None;
        self.warmed_until = now;
        let c = &self.spec.compiled;
        self.trigger_tf = c.trigger.bar_close.as_ref().map(|b| b.timeframe);
        self.continuous_tf = c.trigger.continuous.as_ref().map(|_| {
            c.strategy_timeframe.unwrap_or_else(|| {
                self.spec
                    .symbols
                    .first()
                    .and_then(|s| history.timeframe(s))
                    .unwrap_or(Timeframe::D1)
            })
        });
        let mut warmed: Option<i64> = None;
        let mut feeds = Vec::with_capacity(self.spec.symbols.len());
        let mut scans = Vec::with_capacity(if self.spec.picker.is_some() {
            self.spec.symbols.len()
        } else {
            0
        });
        for symbol in &self.spec.symbols {
            let Some(tf) = history.timeframe(symbol) else {
                self.failed = Some(format!("no market data for {symbol}"));
                feeds.push(None);
                if self.spec.picker.is_some() {
                    scans.push(None);
                }
                continue;
            };
            let feed = match SymbolFeed::new(symbol, tf, self.tz, &c.layout) {
                Ok(f) => f,
                Err(e) => {
                    self.failed = Some(e.to_string());
                    feeds.push(None);
                    if self.spec.picker.is_some() {
                        scans.push(None);
                    }
                    continue;
                }
            };
            // Enough history for the indicators: the configured lookback of the coarsest
            // timeframe, counted in data bars.
            let coarsest = c
                .layout
                .frames
                .iter()
                .map(|f| f.timeframe.nominal_seconds())
                .max()
                .unwrap_or(tf.nominal_seconds());
            let ratio = (coarsest / tf.nominal_seconds()).max(1) as usize;
            let want = c.warmup_bars.saturating_mul(ratio).saturating_add(ratio);
            let recent = history.recent_bars(symbol, now, want);
            if let Some((_, end)) = recent.last() {
                warmed = Some(warmed.map_or(*end, |w: i64| w.max(*end)));
            }
            let mut feed = feed;
            for (bar, end) in &recent {
                feed.advance_to(*end);
                feed.push(bar, *end);
            }
            let scan = self.spec.picker.as_ref().and_then(|(scanner, _)| {
                let mut scan = SymbolFeed::new(symbol, tf, self.tz, &scanner.layout).ok()?;
                for (bar, end) in &recent {
                    scan.advance_to(*end);
                    scan.push(bar, *end);
                }
                Some(scan)
            });
            feeds.push(Some(feed));
            if self.spec.picker.is_some() {
                scans.push(scan);
            }
        }
        self.feeds = feeds;
        self.scans = scans;
        // Bars after the last one of the warm-up are new to the feeds, even one that closed
        // before `now` (a live bar that the history did not have yet).
        self.warmed_until = warmed.unwrap_or(now);
        let trigger = &self.spec.compiled.trigger;
        self.schedule = trigger
            .schedule
            .as_ref()
            .and_then(|s| Schedule::from_trigger(s, utc(now)).ok());
        self.calendar = history.calendar();
        self.next_fire = self
            .schedule
            .as_ref()
            .and_then(|s| s.next_after_in(utc(now), self.calendar.as_deref()))
            .map(|t| t.timestamp());
        self.once_at = trigger
            .once
            .as_ref()
            .map(|once| now + i64::try_from(once.delay.std().as_secs()).unwrap_or(i64::MAX / 2));
        self.next_flatten = self.next_flatten_after(now);
    }

    fn next_flatten_after(&self, t: i64) -> Option<i64> {
        let c = &self.spec.compiled;
        let window = c.window.as_ref()?;
        if !c.flatten_at_end {
            return None;
        }
        window.next_end_after(utc(t)).map(|e| e.timestamp())
    }

    // ----- reading -----

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.spec.compiled.name
    }

    /// What it runs.
    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// The compiled pipeline.
    pub fn compiled(&self) -> &CompiledPipeline {
        &self.spec.compiled
    }

    /// Symbol `i`.
    pub fn symbol(&self, i: usize) -> &str {
        &self.spec.symbols[i]
    }

    /// The index of `symbol` among the pipeline's symbols.
    pub fn symbol_index(&self, symbol: &str) -> Option<usize> {
        self.spec.symbols.iter().position(|s| s == symbol)
    }

    /// The feed of symbol `i` (`None` when it has no data).
    pub fn feed(&self, i: usize) -> Option<&SymbolFeed> {
        self.feeds.get(i).and_then(Option::as_ref)
    }

    /// Why the pipeline could not start, if it could not.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Marks the pipeline failed (a broker it cannot use, say): it takes no trigger.
    pub fn fail(&mut self, reason: String) {
        self.failed = Some(reason);
    }

    /// Whether the pipeline was removed or disabled.
    pub fn removed(&self) -> bool {
        self.removal.is_some()
    }

    /// Data bars the core has taken since it started.
    pub fn bars(&self) -> u64 {
        self.bars
    }

    /// The next instant a timer of the core is due (schedule, once, window end), Unix
    /// seconds; the driver steps the core then even without bars.
    pub fn next_wake(&self) -> Option<i64> {
        if self.failed.is_some() {
            return None;
        }
        [self.next_fire, self.once_at, self.next_flatten]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether the pipeline is removed, flat and without working orders: its driver can
    /// stop.
    pub fn finished(&self, ledger: &Ledger) -> bool {
        self.removal.is_some()
            && ledger.open_trade_count(self.name()) == 0
            && ledger.working_count(self.name()) == 0
    }

    /// The pipeline's status.
    pub fn status(&self, ledger: &Ledger) -> Status {
        if let Some(reason) = &self.failed {
            return Status::Failed(reason.clone());
        }
        if self.removal.is_some() {
            return Status::Draining;
        }
        if let Some(h) = self.limits.entry_block(&self.spec.compiled.limits) {
            return Status::Halted(h);
        }
        if let Some(h) = ledger.pipeline_halt(self.name()) {
            return Status::Halted(format!("halt on {}: {}", h.scope, h.reason));
        }
        Status::Running
    }

    // ----- the step -----

    /// Step at `t`: the bars of `t` (already processed by the brokers) go into the feeds,
    /// bar triggers plan their executions, then the timers due at `t` fire. Intents are
    /// appended to `out`.
    pub fn step(
        &mut self,
        t: i64,
        bars: &[super::BarEvent],
        ledger: &mut Ledger,
        out: &mut Vec<Intent>,
    ) {
        if self.failed.is_some() {
            return;
        }
        let day = self.days.date(t - 1);
        if self.limits.starts_day(day) {
            let pnl = self.pnl(ledger);
            self.limits.roll(day, pnl);
        }
        let strategy_tf = self.spec.compiled.strategy_timeframe;
        let mut fire = std::mem::take(&mut self.fire);
        let mut cont = std::mem::take(&mut self.cont);
        fire.clear();
        cont.clear();
        let bars = if t <= self.warmed_until {
            &[][..]
        } else {
            bars
        };
        let (trigger_tf, continuous_tf) = (self.trigger_tf, self.continuous_tf);
        for e in bars {
            let Some(i) = self.symbol_index(&e.symbol) else {
                continue;
            };
            let Some(feed) = self.feeds[i].as_mut() else {
                continue;
            };
            // A live source that switched the symbol to a finer timeframe: this core is
            // restarted on it; until then its bars are not this feed's.
            if e.timeframe != feed.data_timeframe() {
                continue;
            }
            let (mut strat, mut trig, mut cnt) = (false, false, false);
            let mut note = |tf: &Timeframe| {
                strat |= strategy_tf == Some(*tf);
                trig |= trigger_tf == Some(*tf);
                cnt |= continuous_tf == Some(*tf);
            };
            feed.advance_to(t).iter().for_each(&mut note);
            feed.push(&e.bar, t).iter().for_each(&mut note);
            self.bars += 1;
            if let Some(scan) = self.scans.get_mut(i).and_then(Option::as_mut) {
                scan.advance_to(t);
                scan.push(&e.bar, t);
            }
            if strat {
                ledger.bar_closed(&self.spec.compiled.name, &self.spec.symbols[i]);
            }
            if trig {
                fire.push(i);
            }
            if cnt {
                cont.push(i);
            }
        }
        if let Some(tf) = self.trigger_tf
            && !fire.is_empty()
        {
            self.plan(&fire, t, TriggerKind::BarClose(tf), ledger, out);
        }
        if let Some(c) = self.spec.compiled.trigger.continuous.clone()
            && !cont.is_empty()
        {
            let cont = std::mem::take(&mut cont);
            let cooldown = i64::try_from(c.cooldown.std().as_secs()).unwrap_or(i64::MAX / 2);
            let name = self.spec.compiled.name.clone();
            let due: Vec<usize> = cont
                .into_iter()
                .filter(|&i| {
                    self.last_continuous[i].is_none_or(|last| t >= last.saturating_add(cooldown))
                })
                .filter(|&i| {
                    c.while_position_open != WhilePositionOpen::Skip
                        || (ledger.trade(&name, &self.spec.symbols[i]).is_none()
                            && ledger.pending_entry(&name, &self.spec.symbols[i]).is_none())
                })
                .collect();
            for &i in &due {
                self.last_continuous[i] = Some(t);
            }
            if !due.is_empty() {
                self.plan(&due, t, TriggerKind::Continuous, ledger, out);
            }
        }
        self.fire = fire;
        self.cont = cont;
        self.timers(t, ledger, out);
    }

    fn timers(&mut self, t: i64, ledger: &Ledger, out: &mut Vec<Intent>) {
        if let Some(end) = self.next_flatten
            && end <= t
        {
            self.next_flatten = self.next_flatten_after(t);
            let name = self.spec.compiled.name.as_str();
            if ledger.open_trade_count(name) > 0 || ledger.working_count(name) > 0 {
                out.push(Intent::Flatten {
                    scope: Scope::Pipeline(name.to_string()),
                    purpose: OrderPurpose::EndOfWindow,
                    reason: "flatten_at_end: the trading window ended".into(),
                });
            }
        }
        let all = || (0..self.spec.symbols.len()).collect::<Vec<usize>>();
        if let Some(at) = self.once_at
            && at <= t
        {
            self.once_at = None;
            let all = all();
            self.plan(&all, t, TriggerKind::Once, ledger, out);
        }
        while let Some(at) = self.next_fire
            && at <= t
        {
            let all = (0..self.spec.symbols.len()).collect::<Vec<usize>>();
            self.next_fire = self
                .schedule
                .as_ref()
                .and_then(|s| s.next_after_in(utc(at), self.calendar.as_deref()))
                .map(|n| n.timestamp());
            self.plan(&all, at, TriggerKind::Schedule, ledger, out);
        }
    }

    /// Plans executions of `symbols` at `t`: the window, the stock picker's narrowing
    /// (symbols with a position or a pending entry still run, for their exits), and
    /// `max_executions_per_day`.
    fn plan(
        &mut self,
        symbols: &[usize],
        t: i64,
        trigger: TriggerKind,
        ledger: &Ledger,
        out: &mut Vec<Intent>,
    ) {
        let c = &self.spec.compiled;
        if let Some(window) = &c.window
            && !window.contains(utc(t))
        {
            for &i in symbols {
                out.push(Intent::Skip {
                    request: ExecRequest {
                        symbol: i,
                        at: t,
                        trigger: trigger.clone(),
                    },
                    reason: SkipReason::OutsideWindow,
                });
            }
            return;
        }
        let chosen: Option<Vec<String>> = self.spec.picker.as_ref().map(|(scanner, top_n)| {
            scanner.pick(
                self.spec
                    .symbols
                    .iter()
                    .zip(&self.scans)
                    .filter_map(|(s, f)| f.as_ref().map(|f| (s.as_str(), f))),
                *top_n,
            )
        });
        for &i in symbols {
            if self.feeds[i].is_none() {
                continue;
            }
            let symbol = &self.spec.symbols[i];
            if let Some(chosen) = &chosen
                && !chosen.contains(symbol)
                && ledger.trade(&c.name, symbol).is_none()
                && ledger.pending_entry(&c.name, symbol).is_none()
            {
                continue;
            }
            let request = ExecRequest {
                symbol: i,
                at: t,
                trigger: trigger.clone(),
            };
            if let Err(reason) = self.limits.execution_allowed(&c.limits) {
                out.push(Intent::Skip {
                    request,
                    reason: SkipReason::ExecutionLimit(reason),
                });
                continue;
            }
            self.limits.count_execution();
            if let Some(flag) = self.in_flight.get_mut(i) {
                *flag = true;
            }
            out.push(Intent::Execute(request));
        }
    }

    /// What the execution `request` reads from the account (its position, a pending entry,
    /// the halt that applies), and the position's entry price and bars held set on the
    /// symbol's feed for the exit rules.
    pub fn prepare(&mut self, request: &ExecRequest, ledger: &Ledger) -> Prepared {
        let c = &self.spec.compiled;
        let symbol = &self.spec.symbols[request.symbol];
        let position = ledger.view(&c.name, symbol);
        let pending_entry = ledger.pending_entry(&c.name, symbol).is_some();
        if let Some(feed) = self.feeds[request.symbol].as_mut() {
            let (entry, held) = position.as_ref().map_or((f64::NAN, f64::NAN), |p| {
                // The conversion is exact work (hundreds of instructions); a position's
                // price stays the same from bar to bar, so the last one is remembered.
                let exact = p.average_price.serialize();
                let entry = match self.entry_f64 {
                    Some((d, f)) if d == exact => f,
                    _ => {
                        let f = crate::domain::to_f64(p.average_price);
                        self.entry_f64 = Some((exact, f));
                        f
                    }
                };
                (entry, f64::from(p.bars_held))
            });
            feed.set_position(&c.layout, entry, held);
        }
        let halt = if self.removal.is_some() {
            Some("draining: the pipeline was removed or disabled".to_string())
        } else {
            self.limits
                .entry_block(&c.limits)
                .or_else(|| ledger.halted(&c.name, symbol))
        };
        Prepared {
            position,
            pending_entry,
            halt,
        }
    }

    /// Takes the result of execution `request`: the order it decided (`None` when it
    /// decided none, failed or was skipped). Appends what to send: for an exit, cancels of
    /// the position's bracket legs first, then the exit; for an entry, the entry (counted
    /// for `max_trades_per_day`). Validation mode sends nothing (the decision is recorded).
    pub fn executed(
        &mut self,
        request: &ExecRequest,
        order: Option<Submit>,
        ledger: &Ledger,
        out: &mut Vec<Intent>,
    ) {
        if let Some(flag) = self.in_flight.get_mut(request.symbol) {
            *flag = false;
        }
        let c = &self.spec.compiled;
        let (Some(order), Some(broker)) = (order, c.broker.as_ref()) else {
            return;
        };
        if c.mode == Mode::Validation {
            return;
        }
        let execution_id = Some(crate::engine::state::execution_id(
            &c.name,
            &self.spec.symbols[request.symbol],
            request.at,
        ));
        match &order {
            Submit::Entry(_) => self.limits.count_entry(),
            Submit::Exit(x) => {
                if let Some(group) = &x.oco_group {
                    out.extend(ledger.cancel_group(group, None));
                }
            }
        }
        out.push(Intent::Submit {
            broker: broker.clone(),
            order,
            execution_id,
        });
    }

    /// After the step at `t`: loss and drawdown limits, the account's daily loss, removal
    /// with `close`.
    pub fn after_step(&mut self, t: i64, ledger: &Ledger, out: &mut Vec<Intent>) {
        if self.failed.is_some() {
            return;
        }
        let pnl = self.pnl(ledger);
        let c = &self.spec.compiled;
        let (name, broker) = (c.name.as_str(), c.broker.as_deref());
        let base = *self.base_equity.get_or_insert_with(|| {
            broker
                .and_then(|b| ledger.account(b))
                .map_or(Decimal::ZERO, |a| a.equity)
        });
        // A limit reached halts entries until the next day; the status says why.
        let _ = self.limits.update_pnl(&c.limits, pnl, base);
        if let (Some(limit), Some(b)) = (c.risk.limits.daily_loss_usd, broker)
            && let Some(day) = ledger.day()
            && self.risk_halted != Some(day)
            && c.mode != Mode::Validation
        {
            let lost = -ledger.day_pnl(b);
            if lost >= limit {
                self.risk_halted = Some(day);
                let reason = format!(
                    "daily_loss_usd: the account lost {} USD today (limit {limit} USD)",
                    lost.round_dp(2)
                );
                out.push(Intent::Halt(Halt {
                    scope: Scope::Pipeline(name.to_string()),
                    reason: reason.clone(),
                    cause: HaltCause::RiskDailyLoss,
                    since: t,
                    until: Some(day),
                }));
                if c.risk.limits.daily_loss_action == DailyLossAction::Flatten {
                    out.push(Intent::Flatten {
                        scope: Scope::Pipeline(name.to_string()),
                        purpose: OrderPurpose::RiskFlatten,
                        reason,
                    });
                }
            }
        }
        if self.removal == Some(true) && self.unprotected(ledger) {
            out.push(Intent::Flatten {
                scope: Scope::Pipeline(name.to_string()),
                purpose: OrderPurpose::PipelineRemoved,
                reason: "on_remove: close".into(),
            });
        }
    }

    /// Whether the pipeline holds a position with no closing order working (an entry that
    /// filled after a close was decided).
    fn unprotected(&self, ledger: &Ledger) -> bool {
        let name = self.name();
        ledger
            .open_trades_of(name)
            .any(|t| !ledger.view(name, &t.symbol).is_some_and(|v| v.exit_pending))
    }

    /// The pipeline's P&L since the ledger began, USD: realized after fees, plus the open
    /// trades' partial exits after fees and their unrealized P&L at the last closes.
    pub fn pnl(&self, ledger: &Ledger) -> Decimal {
        let name = self.name();
        let mut pnl = ledger.realized(name);
        for t in ledger.open_trades_of(name) {
            let mark = self
                .symbol_index(&t.symbol)
                .and_then(|i| self.feed(i))
                .and_then(|f| f.last_bar(f.data_timeframe()))
                .and_then(|b| crate::broker::bar_price(b.close))
                .unwrap_or(t.average_price);
            let direction = match t.side {
                crate::broker::PositionSide::Long => Decimal::ONE,
                crate::broker::PositionSide::Short => Decimal::NEGATIVE_ONE,
            };
            pnl += t.realized - t.fees + (mark - t.average_price) * t.quantity * direction;
        }
        pnl
    }

    // ----- commands -----

    /// Removal: see [`CoreCommand::Remove`]. Pending entries are cancelled (drain and
    /// close alike), so nothing opens after the pipeline is gone.
    pub fn remove(&mut self, close: bool, ledger: &Ledger, out: &mut Vec<Intent>) {
        self.removal = Some(close);
        let name = self.name().to_string();
        if close {
            out.push(Intent::Flatten {
                scope: Scope::Pipeline(name),
                purpose: OrderPurpose::PipelineRemoved,
                reason: "on_remove: close".into(),
            });
            return;
        }
        let mut cancels: Vec<Intent> = ledger
            .working_orders()
            .filter(|w| w.order.pipeline == name && w.order.purpose == OrderPurpose::Entry)
            .map(|w| Intent::Cancel {
                broker: w.broker.clone(),
                client_order_id: w.order.client_order_id.clone(),
            })
            .collect();
        cancels.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        out.extend(cancels);
    }

    /// A market signal for `symbol` at `t` (see [`CoreCommand::Signal`]).
    pub fn signal(
        &mut self,
        symbol: &str,
        signal_type: &str,
        confidence: f64,
        t: i64,
        ledger: &Ledger,
        out: &mut Vec<Intent>,
    ) -> SignalOutcome {
        let Some(sub) = self.spec.compiled.trigger.signal.as_ref() else {
            return SignalOutcome::NotSubscribed;
        };
        let subs: Vec<f64> = sub
            .subscriptions
            .iter()
            .filter(|s| s.signal_type == signal_type)
            .map(|s| crate::domain::to_f64(s.min_confidence.value()))
            .collect();
        if subs.is_empty() {
            return SignalOutcome::NotSubscribed;
        }
        let Some(i) = self
            .symbol_index(symbol)
            .filter(|&i| self.feeds[i].is_some())
        else {
            return SignalOutcome::NotInScanner;
        };
        if !subs.iter().any(|min| confidence >= *min) {
            return SignalOutcome::BelowConfidence;
        }
        if self.in_flight.get(i).copied().unwrap_or(false) {
            return SignalOutcome::Deduplicated;
        }
        if let Some(window) = &self.spec.compiled.window
            && !window.contains(utc(t))
        {
            return SignalOutcome::OutsideWindow;
        }
        if self.removal.is_some() {
            return SignalOutcome::Halted;
        }
        let before = out.len();
        self.plan(
            &[i],
            t,
            TriggerKind::Signal(signal_type.to_string()),
            ledger,
            out,
        );
        if out[before..]
            .iter()
            .any(|x| matches!(x, Intent::Execute(_)))
        {
            SignalOutcome::Dispatched
        } else {
            SignalOutcome::Halted
        }
    }
}
