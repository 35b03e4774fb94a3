//! The trading core: a state machine per pipeline ([`PipelineCore`]) and one per account
//! ([`Ledger`]), without I/O. They are fed closed bars, the time, broker events and commands
//! (remove, signal, resume) and answer with [`Intent`]s — run the DAG for a symbol, submit,
//! cancel, replace, flatten, halt, record — that a driver carries out. The backtest
//! ([`crate::backtest::runner`]) and the daemon's pipeline actors ([`crate::daemon::actor`])
//! are such drivers, through the same [`crate::runtime`] code, so the same config and bars
//! give the same trades in both.

pub mod ledger;
pub mod pipeline;

pub use ledger::{Applied, FlattenPlan, Ledger, WorkingOrder};
pub use pipeline::{CoreCommand, DataNeed, PipelineCore, PipelineSpec, SignalOutcome, Status};

use crate::broker::{OrderPurpose, Submit};
use crate::domain::{Halt, Scope};
use crate::market::{Bar, Timeframe};
use rust_decimal::Decimal;
use std::sync::Arc;

/// What started an execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TriggerKind {
    /// A bar of this timeframe closed (`bar_close`).
    BarClose(Timeframe),
    /// A `schedule` trigger fired (cron, `interval` or `market_open`).
    Schedule,
    /// The `once` trigger.
    Once,
    /// A `continuous` trigger.
    Continuous,
    /// A market signal of this type (`signal` trigger).
    Signal(String),
}

impl TriggerKind {
    /// The label recorded with the execution: `bar_close:1d`, `schedule`, `once`,
    /// `continuous`, `signal:<type>`.
    pub fn label(&self) -> String {
        match self {
            TriggerKind::BarClose(tf) => format!("bar_close:{}", tf.as_str()),
            TriggerKind::Schedule => "schedule".into(),
            TriggerKind::Once => "once".into(),
            TriggerKind::Continuous => "continuous".into(),
            TriggerKind::Signal(t) => format!("signal:{t}"),
        }
    }
}

/// One execution to run: the pipeline's DAG for one of its symbols.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRequest {
    /// Index of the symbol in the pipeline's symbols.
    pub symbol: usize,
    /// The trigger time, Unix seconds (also the key of its client order ids).
    pub at: i64,
    /// What started it.
    pub trigger: TriggerKind,
}

/// Why an execution was not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Outside the pipeline's trading window.
    OutsideWindow,
    /// `limits.max_executions_per_day` reached.
    ExecutionLimit(String),
}

/// What a core asks its driver to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Intent {
    /// Run the DAG (then report with [`PipelineCore::executed`]).
    Execute(ExecRequest),
    /// An execution that did not run (counted and recorded as `skipped`).
    Skip {
        /// The execution it would have been.
        request: ExecRequest,
        /// Why not.
        reason: SkipReason,
    },
    /// Submit an order (its intent is written to the store first).
    Submit {
        /// The `[brokers.<name>]` account.
        broker: String,
        /// The order.
        order: Submit,
        /// The execution that decided it.
        execution_id: Option<String>,
    },
    /// Cancel a working order.
    Cancel {
        /// The account.
        broker: String,
        /// The order.
        client_order_id: String,
    },
    /// Move a working stop (to breakeven after target 1).
    ReplaceStop {
        /// The account.
        broker: String,
        /// The stop order.
        client_order_id: String,
        /// New stop price, USD per share.
        price: Decimal,
        /// Shares it covers.
        quantity: Decimal,
    },
    /// Close every position in `scope` at market now (cancelling its working orders first).
    Flatten {
        /// What to close.
        scope: Scope,
        /// Why (the exit reason of the trades it closes).
        purpose: OrderPurpose,
        /// In words, for the intervention record.
        reason: String,
    },
    /// Latch a halt.
    Halt(Halt),
}

/// One symbol's bar that closed.
#[derive(Clone, Debug, PartialEq)]
pub struct BarEvent {
    /// Ticker symbol.
    pub symbol: Arc<str>,
    /// The bar.
    pub bar: Bar,
    /// Its timeframe (the data's).
    pub timeframe: Timeframe,
}

/// Every bar that closed at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct BarBatch {
    /// The instant (the bars' period end), Unix seconds.
    pub end: i64,
    /// The bars, by symbol.
    pub bars: Vec<BarEvent>,
}

/// Historical bars a pipeline warms its feeds up with, and daily closes for the
/// correlation rule: the replay data, or a live source's history.
pub trait History: Send + Sync {
    /// The timeframe of `symbol`'s data, `None` when there is no data for it.
    fn timeframe(&self, symbol: &str) -> Option<Timeframe>;
    /// The last `n` of `symbol`'s bars that closed at or before `until` (Unix seconds), in
    /// time order, each with its period end (Unix seconds). Owned: a live source keeps its
    /// bars behind a lock.
    fn recent_bars(&self, symbol: &str, until: i64, n: usize) -> Vec<(Bar, i64)>;
    /// The last `n` daily closes of `symbol` at or before `until` (the close of each local
    /// trading day, for daily and intraday data alike).
    fn daily_closes(&self, symbol: &str, until: i64, n: usize) -> Vec<f64>;
    /// The exchange sessions of the source (a live broker's calendar, e.g. Alpaca's), for
    /// `market_open` schedules; `None`: our NYSE calendar (backtests and replays).
    fn calendar(&self) -> Option<Arc<dyn crate::market::live::SessionCalendar>> {
        None
    }
}
