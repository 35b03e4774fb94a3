//! Pipeline actors: one task per pipeline. Triggers reach it on one path — closed bars,
//! its schedule, its continuous cooldown, `once`, and (later) market signals as
//! [`Command::Signal`] — and it runs its DAG for its symbols, at most `max_concurrency` at
//! a time, between commands of the reconciler (update, drain, close, stop).

use super::market::{BarBatch, ReplayHub};
use super::portfolio::Portfolio;
use crate::agents::LlmAgents;
use crate::broker::OrderPurpose;
use crate::config::pipeline::{Mode, WhilePositionOpen};
use crate::engine::clock::{Clock, LocalDays, sleep_until, utc};
use crate::engine::exec::{AccountView, ExecInput, execute, execution_id};
use crate::engine::feed::SymbolFeed;
use crate::engine::limits::LimitState;
use crate::engine::picker::CompiledScanner;
use crate::engine::pipeline::CompiledPipeline;
use crate::engine::schedule::Schedule;
use crate::engine::state::{ExecutionRecord, ExecutionStatus};
use crate::http::Scope;
use crate::metrics::{ExecutionResult, Metrics};
use crate::store::Store;
use chrono::{DateTime, Utc};
use litemap::LiteMap;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{Instrument, info, info_span, warn};

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
    /// Could not start (no data for a symbol, a compile error).
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

/// What the actor runs.
#[derive(Clone, Debug)]
pub struct ActorConfig {
    /// The compiled pipeline.
    pub compiled: CompiledPipeline,
    /// Config revision.
    pub revision: String,
    /// Symbols (its `symbols`, its scanner's tickers, or its picker's universe).
    pub symbols: Vec<String>,
    /// Its stock picker's scanner and top N.
    pub picker: Option<(CompiledScanner, u32)>,
}

/// Messages from the reconciler (and later the signal dispatcher).
#[derive(Debug)]
pub enum Command {
    /// Restart with a new configuration, between executions; positions are kept.
    Update(Box<ActorConfig>),
    /// Removed or disabled: stop new entries; with `close`, flatten its positions now.
    /// The actor stops when flat.
    Remove {
        /// `on_remove: close`.
        close: bool,
    },
    /// A market signal for a symbol (the signal trigger). Boxed: every pipeline's channel
    /// preallocates a block of slots, and the other commands are small.
    Signal(Box<SignalCommand>),
}

/// A market signal delivered to a pipeline (the payload of [`Command::Signal`]).
#[derive(Debug)]
pub struct SignalCommand {
    /// Ticker.
    pub symbol: String,
    /// Signal type.
    pub signal_type: String,
    /// Confidence, 0–100.
    pub confidence: f64,
}

/// What every actor shares.
pub struct Shared {
    /// Brokers, book and halts.
    pub portfolio: Arc<Portfolio>,
    /// The store.
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Replay data (history for warm-up).
    pub hub: Option<Arc<ReplayHub>>,
    /// Statuses by pipeline.
    pub statuses: Mutex<BTreeMap<String, Status>>,
    /// LLM agents.
    pub llm: Arc<dyn LlmAgents>,
    /// Market time zone (trading days, period alignment).
    pub tz: chrono_tz::Tz,
}

impl Shared {
    fn set_status(&self, name: &str, status: Status) {
        let mut map = self
            .statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = map.get(name) != Some(&status);
        if changed {
            match &status {
                Status::Halted(r) | Status::Failed(r) => {
                    info!(pipeline = name, status = status.as_str(), reason = %r, "pipeline status")
                }
                _ => info!(pipeline = name, status = status.as_str(), "pipeline status"),
            }
        }
        map.insert(name.to_string(), status);
    }
}

/// A running actor, as the reconciler holds it.
pub struct ActorHandle {
    /// Commands.
    pub tx: mpsc::Sender<Command>,
    /// The task.
    pub task: tokio::task::JoinHandle<()>,
}

/// Spawns the actor of pipeline `name`.
pub fn spawn(
    name: String,
    config: ActorConfig,
    shared: Arc<Shared>,
    bars: broadcast::Receiver<Arc<BarBatch>>,
    shutdown: watch::Receiver<bool>,
) -> ActorHandle {
    let (tx, rx) = mpsc::channel(64);
    let span = info_span!("pipeline", pipeline = %name);
    // Boxed: a task keeps room for what it captured for as long as it lives, and the
    // configuration moves into the actor at once (an idle task stays about 1 KiB smaller).
    let config = Box::new(config);
    let task = tokio::spawn(
        async move {
            // Moved out in a block of its own, so the box is freed now, not when the task ends.
            let config = {
                let boxed = config;
                *boxed
            };
            let mut actor = Actor::new(name, config, shared);
            actor.run(rx, bars, shutdown).await;
        }
        .instrument(span),
    );
    ActorHandle { tx, task }
}

struct Actor {
    name: String,
    config: ActorConfig,
    shared: Arc<Shared>,
    // Sorted vectors: most pipelines watch one or a few symbols, and a B-tree's first node
    // holds room for eleven.
    feeds: LiteMap<String, SymbolFeed>,
    scans: LiteMap<String, SymbolFeed>,
    limits: LimitState,
    schedule: Option<Schedule>,
    next_fire: Option<DateTime<Utc>>,
    next_continuous: Option<DateTime<Utc>>,
    once_pending: bool,
    draining: bool,
    failed: Option<String>,
    last_flatten_check: DateTime<Utc>,
    days: LocalDays,
    base_equity: Option<Decimal>,
}

impl Actor {
    fn new(name: String, config: ActorConfig, shared: Arc<Shared>) -> Actor {
        let now = shared.clock.now();
        let tz = shared.tz;
        let mut a = Actor {
            name,
            config,
            shared,
            feeds: LiteMap::new(),
            scans: LiteMap::new(),
            limits: LimitState::default(),
            schedule: None,
            next_fire: None,
            next_continuous: None,
            once_pending: false,
            draining: false,
            failed: None,
            last_flatten_check: now,
            days: LocalDays::new(tz),
            base_equity: None,
        };
        a.configure(now);
        a
    }

    /// (Re)builds feeds from the data up to `now`, and the triggers.
    fn configure(&mut self, now: DateTime<Utc>) {
        self.failed = None;
        self.feeds = LiteMap::with_capacity(self.config.symbols.len());
        self.scans = LiteMap::new();
        let c = &self.config.compiled;
        let Some(hub) = self.shared.hub.clone() else {
            self.failed = Some("no market data source".into());
            return;
        };
        let until = now.timestamp();
        for symbol in &self.config.symbols {
            let Some(tf) = hub.timeframe(symbol) else {
                self.failed = Some(format!("no data for {symbol} in the market data directory"));
                return;
            };
            let mut feed = match SymbolFeed::new(symbol, tf, self.shared.tz, &c.layout) {
                Ok(f) => f,
                Err(e) => {
                    self.failed = Some(e.to_string());
                    return;
                }
            };
            let (bars, ends) = hub.history(symbol, until);
            // Enough history for the indicators (the configured lookback of the coarsest
            // timeframe, counted in data bars).
            let coarsest = c
                .layout
                .frames
                .iter()
                .map(|f| f.timeframe.nominal_seconds())
                .max()
                .unwrap_or(tf.nominal_seconds());
            let ratio = (coarsest / tf.nominal_seconds()).max(1) as usize;
            let want = c.warmup_bars.saturating_mul(ratio).saturating_add(ratio);
            let from = bars.len().saturating_sub(want);
            for (bar, end) in bars[from..].iter().zip(&ends[from..]) {
                feed.advance_to(*end);
                feed.push(bar, *end);
            }
            if let Some((scanner, _)) = &self.config.picker
                && let Ok(mut scan) = SymbolFeed::new(symbol, tf, self.shared.tz, &scanner.layout)
            {
                for (bar, end) in bars[from..].iter().zip(&ends[from..]) {
                    scan.advance_to(*end);
                    scan.push(bar, *end);
                }
                self.scans.insert(symbol.clone(), scan);
            }
            self.feeds.insert(symbol.clone(), feed);
        }
        let trigger = &c.trigger;
        self.schedule = trigger
            .schedule
            .as_ref()
            .and_then(|s| Schedule::from_trigger(s, now).ok());
        self.next_fire = self.schedule.as_ref().and_then(|s| s.next_after(now));
        self.next_continuous = trigger.continuous.as_ref().map(|_| now);
        self.once_pending = trigger.once.is_some();
        if self.once_pending
            && let Some(once) = &trigger.once
        {
            self.next_continuous = None;
            self.next_fire =
                Some(now + chrono::Duration::from_std(once.delay.std()).unwrap_or_default());
        }
        self.last_flatten_check = now;
    }

    fn status(&self) -> Status {
        if let Some(reason) = &self.failed {
            return Status::Failed(reason.clone());
        }
        if self.draining {
            return Status::Draining;
        }
        if let Some(h) = self.limits.halted.clone() {
            return Status::Halted(h);
        }
        if let Some(h) = self
            .shared
            .portfolio
            .halts()
            .into_iter()
            .find(|(s, _)| matches!(s, Scope::All) || *s == Scope::Pipeline(self.name.clone()))
        {
            return Status::Halted(h.1);
        }
        Status::Running
    }

    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Command>,
        mut bars: broadcast::Receiver<Arc<BarBatch>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.shared.metrics.pipeline_started(&self.name);
        self.shared.set_status(&self.name, self.status());
        loop {
            if self.draining && self.shared.portfolio.open_trades(&self.name) == 0 {
                info!("drained: no open position left");
                self.shared.portfolio.clear_position_metric(&self.name);
                break;
            }
            let wake = [self.next_fire, self.next_continuous]
                .into_iter()
                .flatten()
                .min();
            let clock = Arc::clone(&self.shared.clock);
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                cmd = rx.recv() => match cmd {
                    None => break,
                    // The handlers' futures are boxed so that an idle actor's task stays small
                    // (thousands of pipelines each keep one).
                    Some(cmd) => Box::pin(self.command(cmd)).await,
                },
                batch = bars.recv() => match batch {
                    Ok(batch) => Box::pin(self.on_batch(&batch)).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "the pipeline fell behind the market data; rebuilding its feeds");
                        let now = self.shared.clock.now();
                        self.configure(now);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = async { if let Some(t) = wake { sleep_until(clock.as_ref(), t).await } }, if wake.is_some() => {
                    Box::pin(self.on_timer()).await;
                }
            }
            self.shared.set_status(&self.name, self.status());
        }
        let final_status = if self.failed.is_some() {
            self.status()
        } else {
            Status::Stopped
        };
        self.shared.set_status(&self.name, final_status);
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Update(config) => {
                info!(revision = %config.revision, "configuration changed; restarting between executions");
                self.config = *config;
                self.draining = false;
                let now = self.shared.clock.now();
                self.configure(now);
            }
            Command::Remove { close } => {
                self.draining = true;
                self.next_fire = None;
                self.next_continuous = None;
                if close {
                    let results = self
                        .shared
                        .portfolio
                        .flatten(
                            &Scope::Pipeline(self.name.clone()),
                            OrderPurpose::PipelineRemoved,
                            false,
                        )
                        .await;
                    info!(
                        positions = results.len(),
                        "removed with on_remove: close; positions closing at market"
                    );
                } else {
                    info!(
                        open = self.shared.portfolio.open_trades(&self.name),
                        "removed with on_remove: drain; exits are managed until flat"
                    );
                }
            }
            Command::Signal(signal) => {
                let SignalCommand {
                    symbol,
                    signal_type,
                    confidence,
                } = *signal;
                let subscribed = self
                    .config
                    .compiled
                    .trigger
                    .signal
                    .as_ref()
                    .is_some_and(|s| {
                        s.subscriptions.iter().any(|sub| {
                            sub.signal_type == signal_type
                                && confidence
                                    >= crate::risk::evaluate::to_f64(sub.min_confidence.value())
                        })
                    });
                if subscribed && self.feeds.contains_key(&symbol) {
                    let now = self.shared.clock.now().timestamp();
                    let label = format!("signal:{signal_type}");
                    self.run_executions(vec![symbol], now, &label).await;
                }
            }
        }
    }

    async fn on_batch(&mut self, batch: &BarBatch) {
        if self.failed.is_some() {
            return;
        }
        let c = &self.config.compiled;
        let trigger_tf = c.trigger.bar_close.as_ref().map(|b| b.timeframe);
        let strategy_tf = c.strategy_timeframe;
        let mut fire = Vec::new();
        for e in &batch.bars {
            let symbol: &str = &e.symbol;
            let Some(feed) = self.feeds.get_mut(symbol) else {
                continue;
            };
            let mut done = feed.advance_to(batch.end).to_vec();
            done.extend_from_slice(feed.push(&e.bar, batch.end));
            if let Some(scan) = self.scans.get_mut(symbol) {
                scan.advance_to(batch.end);
                scan.push(&e.bar, batch.end);
            }
            if strategy_tf.is_some_and(|tf| done.contains(&tf)) {
                self.shared.portfolio.bar_closed(&self.name, symbol);
            }
            if trigger_tf.is_some_and(|tf| done.contains(&tf)) {
                fire.push(symbol.to_string());
            }
        }
        self.check_flatten(utc(batch.end)).await;
        if !fire.is_empty() {
            let label = format!(
                "bar_close:{}",
                trigger_tf.map(|t| t.as_str()).unwrap_or_default()
            );
            self.run_executions(fire, batch.end, &label).await;
        }
    }

    async fn on_timer(&mut self) {
        let now = self.shared.clock.now();
        self.check_flatten(now).await;
        let symbols: Vec<String> = self.feeds.keys().cloned().collect();
        if let Some(t) = self.next_fire
            && t <= now
        {
            let label = if self.once_pending {
                "once"
            } else {
                "schedule"
            };
            if self.once_pending {
                self.once_pending = false;
                self.next_fire = None;
            } else {
                self.next_fire = self.schedule.as_ref().and_then(|s| s.next_after(t));
            }
            self.run_executions(symbols.clone(), t.timestamp(), label)
                .await;
        }
        if let Some(t) = self.next_continuous
            && t <= now
        {
            let skip_open = self
                .config
                .compiled
                .trigger
                .continuous
                .as_ref()
                .is_some_and(|c| c.while_position_open == WhilePositionOpen::Skip);
            let run: Vec<String> = symbols
                .into_iter()
                .filter(|s| !skip_open || self.shared.portfolio.open_trades_in(&self.name, s) == 0)
                .collect();
            self.run_executions(run, t.timestamp(), "continuous").await;
            let cooldown = self
                .config
                .compiled
                .trigger
                .continuous
                .as_ref()
                .map(|c| c.cooldown.std())
                .unwrap_or_default();
            let after = self.shared.clock.now().max(t);
            self.next_continuous = Some(
                after
                    + chrono::Duration::from_std(cooldown)
                        .unwrap_or_default()
                        .max(chrono::Duration::milliseconds(1)),
            );
        }
    }

    /// `flatten_at_end`: close the pipeline's positions when a window end passes.
    async fn check_flatten(&mut self, now: DateTime<Utc>) {
        let Some(window) = &self.config.compiled.window else {
            return;
        };
        if !self.config.compiled.flatten_at_end || now <= self.last_flatten_check {
            return;
        }
        let ends = window.flatten_times_between(self.last_flatten_check, now);
        self.last_flatten_check = now;
        if !ends.is_empty() && self.shared.portfolio.open_trades(&self.name) > 0 {
            let results = self
                .shared
                .portfolio
                .flatten(
                    &Scope::Pipeline(self.name.clone()),
                    OrderPurpose::EndOfWindow,
                    false,
                )
                .await;
            info!(
                positions = results.len(),
                "window ended: flattening (flatten_at_end)"
            );
            let _ = self
                .shared
                .store
                .record_intervention(&crate::store::Intervention {
                    id: 0,
                    at: now.timestamp(),
                    kind: crate::store::InterventionKind::EndOfDay,
                    scope: Scope::Pipeline(self.name.clone()),
                    reason: "flatten_at_end".into(),
                    result: serde_json::to_value(&results).unwrap_or_default(),
                })
                .await;
        }
    }

    async fn run_executions(&mut self, symbols: Vec<String>, t: i64, trigger: &str) {
        if self.failed.is_some() || symbols.is_empty() {
            return;
        }
        let now = utc(t);
        let c = &self.config.compiled;
        if let Some(window) = &c.window
            && !window.contains(now)
        {
            for _ in &symbols {
                self.shared
                    .metrics
                    .execution_finished(&self.name, ExecutionResult::Skipped, 0.0);
            }
            return;
        }
        // Per-day limits.
        let broker = c.broker.clone();
        let day = self.days.date(t - 1);
        let cumulative = self.shared.portfolio.realized_pnl(&self.name);
        self.limits.roll(day, cumulative);
        let base = *self.base_equity.get_or_insert_with(|| {
            broker.as_deref().map_or(Decimal::ZERO, |b| {
                crate::engine::exec::AccountSource::equity(&self.shared.portfolio.account(b))
            })
        });
        if let Some(reason) = self.limits.update_pnl(&c.limits, cumulative, base) {
            warn!(%reason, "pipeline limit reached: entries halted until the next day");
        }
        // The stock picker narrows the symbols; open positions still run for their exits.
        let symbols: Vec<String> = match &self.config.picker {
            Some((scanner, top_n)) => {
                let chosen = scanner.pick(self.scans.iter().map(|(s, f)| (s.as_str(), f)), *top_n);
                symbols
                    .into_iter()
                    .filter(|s| {
                        chosen.contains(s)
                            || self.shared.portfolio.open_trades_in(&self.name, s) > 0
                    })
                    .collect()
            }
            None => symbols,
        };
        let concurrency = c.max_concurrency.max(1) as usize;
        for chunk in symbols.chunks(concurrency) {
            let mut runnable = Vec::new();
            for symbol in chunk {
                if self.limits.execution_allowed(&c.limits).is_err() {
                    self.shared.metrics.execution_finished(
                        &self.name,
                        ExecutionResult::Skipped,
                        0.0,
                    );
                    continue;
                }
                self.limits.count_execution();
                let position =
                    self.shared
                        .portfolio
                        .position(&self.name, symbol, broker.as_deref());
                if let Some(feed) = self.feeds.get_mut(symbol) {
                    let (entry, held) = position.as_ref().map_or((f64::NAN, f64::NAN), |p| {
                        (
                            crate::risk::evaluate::to_f64(p.average_price),
                            f64::from(p.bars_held),
                        )
                    });
                    feed.set_position(&c.layout, entry, held);
                    runnable.push((symbol.clone(), position));
                }
            }
            let halt_limits = self.limits.entry_block(&c.limits);
            let draining = self
                .draining
                .then(|| "draining: the pipeline was removed or disabled".to_string());
            let futures = runnable.into_iter().map(|(symbol, position)| {
                let halt = draining
                    .clone()
                    .or_else(|| halt_limits.clone())
                    .or_else(|| self.shared.portfolio.halted(&self.name, &symbol));
                run_one(self, symbol, position, t, trigger, halt)
            });
            let outcomes = futures::future::join_all(futures).await;
            for entered in outcomes {
                if entered {
                    self.limits.count_entry();
                }
            }
        }
    }
}

/// One execution for one symbol: recorded at start, run, its order submitted, recorded at
/// the end. Returns whether an entry was sent.
async fn run_one(
    actor: &Actor,
    symbol: String,
    position: Option<crate::engine::state::PositionView>,
    t: i64,
    trigger: &str,
    halt: Option<String>,
) -> bool {
    let c = &actor.config.compiled;
    let shared = &actor.shared;
    let Some(feed) = actor.feeds.get(&symbol) else {
        return false;
    };
    let span = info_span!("execution", pipeline = %c.name, execution_id = %execution_id(&c.name, &symbol, t), symbol = %symbol);
    async {
        let started = std::time::Instant::now();
        let skeleton = ExecutionRecord {
            id: execution_id(&c.name, &symbol, t),
            pipeline: c.name.clone(),
            revision: actor.config.revision.clone(),
            symbol: symbol.clone(),
            mode: c.mode.as_str().to_string(),
            trigger: trigger.to_string(),
            started_at: t,
            finished_at: t,
            status: ExecutionStatus::Interrupted,
            reason: None,
            nodes: Vec::new(),
            cost_usd: Decimal::ZERO,
        };
        if let Err(e) = shared.store.start_execution(&skeleton).await {
            warn!(error = %e, "execution start not stored");
        }
        let account_broker = c.broker.clone().unwrap_or_else(|| "sim".to_string());
        let account = shared.portfolio.account(&account_broker);
        let portfolio = Arc::clone(&shared.portfolio);
        let correlation = move |a: &str, b: &str| portfolio.correlation(a, b, t);
        let out = execute(ExecInput {
            pipeline: c,
            revision: &actor.config.revision,
            symbol: &symbol,
            feed,
            now: t,
            trigger,
            position,
            account: AccountView { source: &account, halted: halt.as_deref() },
            correlation: &correlation,
            llm: shared.llm.as_ref(),
            record: true,
        })
        .await;
        let mut record = out.record.unwrap_or(skeleton);
        if let Some(d) = &out.decision
            && !d.approved
        {
            shared.metrics.risk_rejected(&c.name, &d.rule);
        }
        let mut entered = false;
        if let Some(order) = out.order {
            let is_entry = matches!(order, crate::broker::Submit::Entry(_));
            match c.broker.as_deref() {
                Some(broker) if c.mode != Mode::Validation => {
                    match shared.portfolio.submit(broker, c.mode, Some(&record.id), order, c.trade.move_stop_to_breakeven).await {
                        Ok(state) => {
                            entered = is_entry;
                            info!(client_order_id = %state.client_order_id, side = state.side.as_str(), quantity = %state.quantity, purpose = state.purpose.as_str(), "order submitted");
                        }
                        Err(reason) => {
                            record.reason = Some(format!("order failed: {reason}"));
                        }
                    }
                }
                _ => {}
            }
        }
        let result = match record.status {
            ExecutionStatus::Completed => ExecutionResult::Completed,
            ExecutionStatus::Skipped => ExecutionResult::Skipped,
            ExecutionStatus::Failed => ExecutionResult::Failed,
            ExecutionStatus::Interrupted => ExecutionResult::Interrupted,
        };
        if record.status == ExecutionStatus::Failed {
            warn!(reason = record.reason.as_deref().unwrap_or_default(), "execution failed");
        }
        if let Err(e) = shared.store.finish_execution(&record).await {
            warn!(error = %e, "execution not stored");
        }
        shared.metrics.execution_finished(&c.name, result, started.elapsed().as_secs_f64());
        entered
    }
    .instrument(span)
    .await
}
