//! Pipeline actors: one task per pipeline, a thin driver of its
//! [`PipelineRunner`](crate::runtime::PipelineRunner). The market loop steps it (bars and
//! timers, see [`super::market`]); the reconciler updates and removes it; the signal
//! dispatcher sends it signals. Everything it decides, the shared trading core decides.

use super::registry::Registry;
use crate::agents::LlmAgents;
use crate::engine::core::{BarBatch, CoreCommand, History, PipelineSpec, SignalOutcome, Status};
use crate::runtime::{Account, PipelineRunner};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, info, info_span};

/// Messages to an actor.
#[derive(Debug)]
pub enum Message {
    /// A step at `t` (bars that closed then, already processed by the brokers, or a timer
    /// of this pipeline). The actor answers on `done` with its next timer once the step's
    /// executions and orders are through.
    Step {
        /// The instant, Unix seconds.
        t: i64,
        /// The bars of `t`, if any.
        batch: Option<Arc<BarBatch>>,
        /// Answered with the actor's next timer when the step is done.
        done: oneshot::Sender<Option<i64>>,
    },
    /// Restart with a new configuration, between executions; positions are kept.
    Update(Box<PipelineSpec>),
    /// Removed or disabled (see [`CoreCommand::Remove`]); the actor stops when flat.
    Remove {
        /// `on_remove: close`.
        close: bool,
    },
    /// A market signal for a symbol (the signal trigger). Boxed: every pipeline's channel
    /// preallocates a block of slots, and the other messages are small.
    Signal(Box<SignalCommand>),
}

/// A market signal delivered to a pipeline (the payload of [`Message::Signal`]).
#[derive(Debug)]
pub struct SignalCommand {
    /// Ticker.
    pub symbol: String,
    /// Signal type.
    pub signal_type: String,
    /// Confidence, 0–100.
    pub confidence: f64,
    /// Answered with the signal's outcome for this pipeline as soon as it is decided
    /// (before a dispatched execution runs).
    pub outcome: Option<oneshot::Sender<SignalOutcome>>,
    /// Held until the execution the signal started is through: while it lives, the
    /// dispatcher counts further signals of this pipeline and ticker as deduplicated.
    pub pending: Option<crate::signals::dispatcher::PendingGuard>,
}

/// What every actor shares.
pub struct Shared {
    /// Brokers, ledger, store and metrics.
    pub account: Arc<Account>,
    /// The store (also the account's).
    pub store: crate::store::Store,
    /// The metrics (also the account's).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Market data history (feeds warm up on it; correlations read it).
    pub history: Arc<dyn History>,
    /// Statuses by pipeline.
    pub statuses: Mutex<BTreeMap<String, Status>>,
    /// LLM agents.
    pub llm: Arc<dyn LlmAgents>,
    /// Market time zone (trading days, period alignment).
    pub tz: chrono_tz::Tz,
    /// The actors, their symbols and their next timers.
    pub registry: Arc<Registry>,
    /// The live market loop, which warms up symbols before their pipelines start (`None`
    /// in replay: the replay data holds every bar).
    pub live: Option<super::live::LiveMarket>,
    /// Writes the pipelines' states to the store when they change (`ztraded status`).
    pub status_writer: super::status::StatusWriter,
}

impl Shared {
    /// Records the status of `name`, which runs `spec`: logs a change, and queues the store
    /// write when the state or the revision changed.
    pub fn set_status(&self, name: &str, status: Status, spec: &PipelineSpec) {
        self.status_writer
            .publish(name, &status, spec, self.tz, self.account.now());
        self.keep_status(name, status);
    }

    /// Records `name`'s status, logging a change.
    fn keep_status(&self, name: &str, status: Status) {
        let mut map = self
            .statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(name) != Some(&status) {
            match &status {
                Status::Halted(r) | Status::Failed(r) => {
                    info!(pipeline = name, status = status.as_str(), reason = %r, "pipeline status")
                }
                _ => info!(pipeline = name, status = status.as_str(), "pipeline status"),
            }
            self.notify_status(name, &status);
        }
        map.insert(name.to_string(), status);
    }
}

impl Shared {
    /// Tells the sinks that pipeline `name` failed, or stopped entering by one of its own
    /// limits (a daily loss limit as `daily_loss`); halts of the account, a pipeline or a
    /// symbol latched in the ledger are told about by the account when they are latched.
    fn notify_status(&self, name: &str, status: &Status) {
        use crate::config::settings::NotifyEvent;
        let (event, reason) = match status {
            Status::Failed(r) => (NotifyEvent::PipelineFailed, r),
            Status::Halted(r) if r.starts_with("halt on ") => return,
            Status::Halted(r) if r.starts_with("daily_loss_usd") => (NotifyEvent::DailyLoss, r),
            Status::Halted(r) => (NotifyEvent::Halt, r),
            _ => return,
        };
        self.account
            .notify(&[event], || crate::notify::Notification {
                event,
                at: self.account.now(),
                title: format!("pipeline {name} {}", status.as_str()),
                text: reason.clone(),
                pipeline: Some(name.to_string()),
                symbol: None,
                details: serde_json::json!({"status": status.as_str(), "reason": reason}),
            });
    }
}

/// A running actor, as the reconciler holds it.
pub struct ActorHandle {
    /// Messages.
    pub tx: mpsc::Sender<Message>,
    /// The task.
    pub task: tokio::task::JoinHandle<()>,
}

/// Spawns the actor of pipeline `name`, starting at the account clock's now.
pub fn spawn(
    name: String,
    spec: PipelineSpec,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> ActorHandle {
    let (tx, rx) = mpsc::channel(16);
    let span = info_span!("pipeline", pipeline = %name);
    shared
        .registry
        .register(&name, tx.clone(), spec.symbols.clone());
    shared.registry.set_route(&name, Some(&spec));
    // The runner starts at the clock's now when it is spawned (not when its task first
    // runs): steps after it are the ones it gets.
    let now = shared.account.now();
    // Boxed: a task keeps room for what it captured for as long as it lives, and the
    // configuration moves into the runner at once.
    let spec = Box::new(spec);
    let task = tokio::spawn(
        async move {
            let spec = {
                let boxed = spec;
                *boxed
            };
            let mut runner = PipelineRunner::new(
                spec,
                shared.tz,
                Arc::clone(&shared.history),
                Arc::clone(&shared.llm),
                now,
                &shared.account,
                true,
                false,
            );
            runner.load_budget(now, &shared.account).await;
            run(name, runner, shared, rx, shutdown).await;
        }
        .instrument(span),
    );
    ActorHandle { tx, task }
}

async fn run(
    name: String,
    mut runner: PipelineRunner,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Message>,
    mut shutdown: watch::Receiver<bool>,
) {
    let account = Arc::clone(&shared.account);
    if let Some(m) = account.metrics() {
        m.pipeline_started(&name);
    }
    shared.registry.set_wake(&name, runner.core().next_wake());
    shared.set_status(&name, runner.status(&account), runner.core().spec());
    loop {
        if runner.finished(&account) {
            info!("drained: no open position or working order left");
            break;
        }
        let message = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            m = rx.recv() => match m {
                None => break,
                Some(m) => m,
            },
        };
        let updated = matches!(message, Message::Update(_));
        // The handlers' futures are boxed so that an idle actor's task stays small
        // (thousands of pipelines each keep one).
        Box::pin(handle(&mut runner, &account, message)).await;
        if updated {
            shared.registry.set_route(&name, Some(runner.core().spec()));
        }
        shared.registry.set_wake(&name, runner.core().next_wake());
        shared.set_status(&name, runner.status(&account), runner.core().spec());
    }
    shared.registry.set_wake(&name, None);
    let status = match runner.core().failed() {
        Some(reason) => Status::Failed(reason.to_string()),
        None => Status::Stopped,
    };
    shared.set_status(&name, status, runner.core().spec());
}

async fn handle(runner: &mut PipelineRunner, account: &Account, message: Message) {
    match message {
        Message::Step { t, batch, done } => {
            let bars = batch.as_ref().map_or(&[][..], |b| b.bars.as_slice());
            runner.step(t, bars, account).await;
            let _ = done.send(runner.core().next_wake());
        }
        Message::Update(spec) => {
            info!(revision = %spec.revision, "configuration changed; restarting between executions");
            runner.update(*spec, account.now(), account);
        }
        Message::Remove { close } => {
            info!(
                on_remove = if close { "close" } else { "drain" },
                open = account.ledger().open_trade_count(runner.core().name()),
                "removed: no new entries"
            );
            runner
                .command(CoreCommand::Remove { close }, account.now(), account)
                .await;
        }
        Message::Signal(signal) => {
            let SignalCommand {
                symbol,
                signal_type,
                confidence,
                outcome,
                pending,
            } = *signal;
            runner
                .signal(
                    &symbol,
                    &signal_type,
                    confidence,
                    account.now(),
                    account,
                    |got| {
                        if let Some(tx) = outcome {
                            let _ = tx.send(got);
                        }
                    },
                )
                .await;
            drop(pending);
        }
    }
}
