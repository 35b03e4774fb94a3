//! Records the store introduces (the engine's own types — `ExecutionRecord`, `Fill`,
//! `OrderState`, `TradeRecord`, `OpenTrade`, `EquityPoint` — are stored as they are).

use crate::broker::{
    EntryOrder, ExitOrder, Fill, OrderPurpose, OrderState, PositionSide, Side, Submit,
};
use crate::engine::book::OpenTrade;
use crate::engine::state::{ExecutionRecord, ExecutionStatus, NodeRecord};
use crate::engine::trades::TradeRecord;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// What a reconcile did with the desired state it loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconcileResult {
    /// The new revision replaced the running one.
    Applied,
    /// The revision was invalid; the last valid one keeps running.
    Refused,
    /// Nothing changed.
    Unchanged,
}

impl ReconcileResult {
    /// `applied`, `refused` or `unchanged` (the stored value).
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileResult::Applied => "applied",
            ReconcileResult::Refused => "refused",
            ReconcileResult::Unchanged => "unchanged",
        }
    }
}

/// One reconcile of the daemon (table `reconciles`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReconcileRecord {
    /// Row id, assigned by the store: ignored by [`Store::record_reconcile`](super::Store::record_reconcile),
    /// which returns the new one; set on records read back.
    pub id: i64,
    /// When it ran, Unix seconds.
    pub at: i64,
    /// Revision of the desired state it loaded (hex digest).
    pub revision: String,
    /// Revision running before it (`None` at the first reconcile).
    pub previous_revision: Option<String>,
    /// What it did.
    pub result: ReconcileResult,
    /// The typed diff (pipelines added, changed with fields, removed) as JSON.
    pub diff: serde_json::Value,
    /// Validation findings, a JSON array (empty when valid).
    pub findings: serde_json::Value,
    /// How long it took, milliseconds.
    pub duration_ms: u64,
}

/// Whether an intent opens or reduces a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentKind {
    /// An [`EntryOrder`] (it was risk-approved before it was recorded).
    Entry,
    /// An [`ExitOrder`].
    Exit,
}

impl IntentKind {
    /// `entry` or `exit` (the stored value).
    pub fn as_str(self) -> &'static str {
        match self {
            IntentKind::Entry => "entry",
            IntentKind::Exit => "exit",
        }
    }
}

/// The order an intent is about. An entry is stored without its `RiskApproved` wrapper,
/// which only the risk manager can make: a stored entry can be compared with the broker's
/// orders but never submitted again without a new approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntentOrder {
    /// Opens or adds to a position.
    Entry(EntryOrder),
    /// Reduces or closes a position.
    Exit(ExitOrder),
}

impl IntentOrder {
    /// Entry or exit.
    pub fn kind(&self) -> IntentKind {
        match self {
            IntentOrder::Entry(_) => IntentKind::Entry,
            IntentOrder::Exit(_) => IntentKind::Exit,
        }
    }
    /// The client order id.
    pub fn client_order_id(&self) -> &str {
        match self {
            IntentOrder::Entry(e) => &e.client_order_id,
            IntentOrder::Exit(x) => &x.client_order_id,
        }
    }
}

/// Where an intent is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    /// Written, not yet confirmed by the broker (after a crash: look the id up at the
    /// broker before deciding anything).
    Pending,
    /// The broker accepted it.
    Submitted,
    /// Submission failed (the broker refused it, or it could not be sent); `error` says why.
    Failed,
}

impl IntentStatus {
    /// `pending`, `submitted` or `failed` (the stored value).
    pub fn as_str(self) -> &'static str {
        match self {
            IntentStatus::Pending => "pending",
            IntentStatus::Submitted => "submitted",
            IntentStatus::Failed => "failed",
        }
    }
}

/// An order as decided, written to `order_intents` BEFORE it is submitted, so that a
/// restart after a crash finds it by client order id instead of sending it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderIntent {
    /// Deterministic client order id (primary key).
    pub client_order_id: String,
    /// The `[brokers.<name>]` name it goes to.
    pub broker: String,
    /// Owning pipeline.
    pub pipeline: String,
    /// Ticker symbol.
    pub symbol: String,
    /// The execution that decided it (`None` for emergency closes and removals).
    pub execution_id: Option<String>,
    /// Why the order exists.
    pub purpose: OrderPurpose,
    /// Buy or sell.
    pub side: Side,
    /// Shares, positive.
    pub quantity: Decimal,
    /// The order itself (stored as JSON with a kind tag).
    pub order: IntentOrder,
    /// Pending, submitted or failed.
    pub status: IntentStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was written, Unix seconds.
    pub created_at: i64,
    /// Last status change, Unix seconds.
    pub updated_at: i64,
}

impl OrderIntent {
    /// A pending intent for a (risk-approved) entry order.
    pub fn entry(broker: &str, execution_id: Option<&str>, order: &EntryOrder, at: i64) -> Self {
        OrderIntent {
            client_order_id: order.client_order_id.clone(),
            broker: broker.to_string(),
            pipeline: order.pipeline.clone(),
            symbol: order.symbol.clone(),
            execution_id: execution_id.map(str::to_string),
            purpose: OrderPurpose::Entry,
            side: order.side,
            quantity: order.quantity,
            order: IntentOrder::Entry(order.clone()),
            status: IntentStatus::Pending,
            error: None,
            created_at: at,
            updated_at: at,
        }
    }

    /// A pending intent for an exit order.
    pub fn exit(broker: &str, execution_id: Option<&str>, order: &ExitOrder, at: i64) -> Self {
        OrderIntent {
            client_order_id: order.client_order_id.clone(),
            broker: broker.to_string(),
            pipeline: order.pipeline.clone(),
            symbol: order.symbol.clone(),
            execution_id: execution_id.map(str::to_string),
            purpose: order.purpose,
            side: order.side(),
            quantity: order.quantity,
            order: IntentOrder::Exit(order.clone()),
            status: IntentStatus::Pending,
            error: None,
            created_at: at,
            updated_at: at,
        }
    }

    /// A pending intent for what is about to be submitted.
    pub fn for_submit(broker: &str, execution_id: Option<&str>, submit: &Submit, at: i64) -> Self {
        match submit {
            Submit::Entry(e) => OrderIntent::entry(broker, execution_id, e.get(), at),
            Submit::Exit(x) => OrderIntent::exit(broker, execution_id, x, at),
        }
    }
}

/// An order row: the broker's view of the order plus where and when it was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredOrder {
    /// The `[brokers.<name>]` name.
    pub broker: String,
    /// The order as the broker last reported it.
    pub state: OrderState,
    /// Last upsert, Unix seconds.
    pub updated_at: i64,
}

/// Who an intervention or a halt applies to (the scope of `POST /v1/close`).
pub use crate::domain::Scope;

/// What started an intervention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterventionKind {
    /// An operator closed or resumed through the CLI or the HTTP endpoint.
    Manual,
    /// Emergency close (`POST /v1/close`).
    Emergency,
    /// End-of-day flattening.
    EndOfDay,
    /// The cost budget stopped a pipeline.
    Budget,
    /// A risk limit latched a halt.
    RiskHalt,
    /// A pipeline was removed or disabled and its `on_remove` ran.
    PipelineRemoved,
    /// The broker reconciliation found an open position of ours without a working stop and
    /// placed one.
    StopReplaced,
    /// The broker reconciliation found positions or orders at the broker that no pipeline
    /// owns (reported, never touched).
    BrokerDrift,
}

impl InterventionKind {
    /// The stored snake_case value.
    pub fn as_str(self) -> &'static str {
        match self {
            InterventionKind::Manual => "manual",
            InterventionKind::Emergency => "emergency",
            InterventionKind::EndOfDay => "end_of_day",
            InterventionKind::Budget => "budget",
            InterventionKind::RiskHalt => "risk_halt",
            InterventionKind::PipelineRemoved => "pipeline_removed",
            InterventionKind::StopReplaced => "stop_replaced",
            InterventionKind::BrokerDrift => "broker_drift",
        }
    }
}

/// One intervention (table `interventions`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Intervention {
    /// Row id, assigned by the store: ignored by
    /// [`Store::record_intervention`](super::Store::record_intervention), which returns
    /// the new one; set on records read back.
    pub id: i64,
    /// When, Unix seconds.
    pub at: i64,
    /// What started it.
    pub kind: InterventionKind,
    /// Who it applied to.
    pub scope: Scope,
    /// Why (the operator's or the rule's words).
    pub reason: String,
    /// What happened (for example each position's close result) as JSON.
    pub result: serde_json::Value,
}

/// A latched halt (table `halts`): no new entries in its scope until it is cleared; it
/// survives restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Halt {
    /// Who is halted.
    pub scope: Scope,
    /// Why.
    pub reason: String,
    /// Since when, Unix seconds.
    pub since: i64,
}

/// The cost of one node of one execution (table `cost_records`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostRecord {
    /// The execution.
    pub execution_id: String,
    /// Its pipeline.
    pub pipeline: String,
    /// Node id.
    pub node: String,
    /// LLM model (`None` for nodes that call no model).
    pub model: Option<String>,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cost, USD (tokens at the provider's prices plus agent runtime).
    pub usd: Decimal,
    /// Agent runtime, microseconds.
    pub runtime_us: u64,
    /// When, Unix seconds.
    pub at: i64,
}

/// A broker's saved state (table `broker_states`): the simulated broker's snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerState {
    /// The `[brokers.<name>]` name.
    pub name: String,
    /// The snapshot as JSON.
    pub state: serde_json::Value,
    /// When it was saved, Unix seconds.
    pub updated_at: i64,
}

/// Where an execution is: still running (or the daemon stopped before it finished and
/// [`Store::mark_running_interrupted`](super::Store::mark_running_interrupted) has not run
/// yet), or finished with a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExecutionState {
    /// Started, not finished.
    Running,
    /// Finished (or marked interrupted).
    Finished(ExecutionStatus),
}

impl ExecutionState {
    /// `running`, `completed`, `skipped`, `failed` or `interrupted` (the stored value).
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Running => "running",
            ExecutionState::Finished(s) => s.as_str(),
        }
    }

    /// The state of a stored status value.
    pub fn parse(s: &str) -> Option<ExecutionState> {
        Some(match s {
            "running" => ExecutionState::Running,
            "completed" => ExecutionState::Finished(ExecutionStatus::Completed),
            "skipped" => ExecutionState::Finished(ExecutionStatus::Skipped),
            "failed" => ExecutionState::Finished(ExecutionStatus::Failed),
            "interrupted" => ExecutionState::Finished(ExecutionStatus::Interrupted),
            _ => return None,
        })
    }
}

/// An execution row (table `executions`), without its nodes
/// ([`Store::execution_nodes`](super::Store::execution_nodes) reads those).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredExecution {
    /// `<pipeline>:<symbol>:<trigger time>`.
    pub id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Config revision it ran under.
    pub revision: String,
    /// Ticker symbol.
    pub symbol: String,
    /// Mode.
    pub mode: String,
    /// What started it.
    pub trigger: String,
    /// Start, Unix seconds.
    pub started_at: i64,
    /// End, Unix seconds (`None` while running, and for executions marked interrupted).
    pub finished_at: Option<i64>,
    /// Running or finished.
    pub state: ExecutionState,
    /// Why it was skipped, failed or interrupted.
    pub reason: Option<String>,
    /// Total cost, USD (zero while running).
    pub cost_usd: Decimal,
}

impl StoredExecution {
    /// The engine's record with `nodes`; `None` while the execution is running. An
    /// execution marked interrupted has no end time: its `finished_at` is its `started_at`.
    pub fn into_record(self, nodes: Vec<NodeRecord>) -> Option<ExecutionRecord> {
        let ExecutionState::Finished(status) = self.state else {
            return None;
        };
        Some(ExecutionRecord {
            id: self.id,
            pipeline: self.pipeline,
            revision: self.revision,
            symbol: self.symbol,
            mode: self.mode,
            trigger: self.trigger,
            started_at: self.started_at,
            finished_at: self.finished_at.unwrap_or(self.started_at),
            status,
            reason: self.reason,
            nodes,
            cost_usd: self.cost_usd,
        })
    }
}

/// An open position of the book, as the CLI lists it (the columns of `open_trades`; the
/// full [`OpenTrade`] comes from [`Store::load_open_trades`](super::Store::load_open_trades)).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OpenPosition {
    /// Owning pipeline.
    pub pipeline: String,
    /// Ticker symbol.
    pub symbol: String,
    /// Long or short.
    pub side: PositionSide,
    /// Shares held, positive.
    pub quantity: Decimal,
    /// Average entry price, USD per share.
    pub average_price: Decimal,
    /// First entry fill, Unix seconds.
    pub entry_time: i64,
    /// Last change, Unix seconds.
    pub updated_at: i64,
}

/// What happens to the book's open trade of the fill's pipeline and symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionChange<'a> {
    /// The trade is open after the fill: save it (insert or replace).
    Open(&'a OpenTrade),
    /// The position is flat after the fill: delete the open trade of the fill's pipeline
    /// and symbol.
    Flat,
    /// The fill did not change the book (for example a fill of an order the book does not
    /// own).
    Unchanged,
}

/// Everything one fill changes, written by [`Store::record_fill`](super::Store::record_fill)
/// in one transaction: either all of it is stored or none of it.
#[derive(Clone, Copy, Debug)]
pub struct FillUpdate<'a> {
    /// The `[brokers.<name>]` name that reported the fill.
    pub broker: &'a str,
    /// The fill (deduplicated on `fill_id`).
    pub fill: &'a Fill,
    /// The order after the fill (upserted by client order id).
    pub order: Option<&'a OrderState>,
    /// The book's open trade after the fill.
    pub position: PositionChange<'a>,
    /// The trade the fill closed, if it made the position flat.
    pub closed_trade: Option<&'a TradeRecord>,
    /// The broker's snapshot after the fill (the simulated broker's state).
    pub broker_state: Option<&'a serde_json::Value>,
    /// When it was recorded, Unix seconds (`updated_at` of the rows it touches).
    pub at: i64,
}

/// The book's open trade after a fill, owned (the batch form of [`PositionChange`]).
#[derive(Clone, Debug, PartialEq)]
pub enum BookChange {
    /// The trade is open after the fill: save it (insert or replace).
    Open(Box<OpenTrade>),
    /// The position is flat after the fill: delete the open trade of the fill's pipeline
    /// and symbol.
    Flat,
    /// The fill did not change the book.
    Unchanged,
}

/// One write of a [`WriteBatch`].
// A batch lives for one commit; boxing the fill variant would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum BatchEntry {
    /// Upsert an order as broker `broker` reports it (for example a cancelled bracket leg).
    Order {
        /// The `[brokers.<name>]` name.
        broker: String,
        /// The order's state.
        order: OrderState,
    },
    /// The broker accepted (or answered) the order of a pending intent: the intent becomes
    /// `submitted`. Pair it with an [`BatchEntry::Order`] or a [`BatchEntry::Fill`] that
    /// carries the order's state.
    IntentSubmitted {
        /// The intent's client order id.
        client_order_id: String,
    },
    /// The broker refused the order of an intent: the intent becomes `failed`.
    IntentFailed {
        /// The intent's client order id.
        client_order_id: String,
        /// The broker's reason.
        error: String,
    },
    /// A fill and everything it changed (see [`FillUpdate`]): written only when the fill's
    /// `fill_id` is new; a fill already stored skips the whole entry.
    Fill {
        /// The `[brokers.<name>]` name that reported the fill.
        broker: String,
        /// The fill.
        fill: Fill,
        /// The order after the fill.
        order: Option<OrderState>,
        /// The book's open trade after the fill.
        position: BookChange,
        /// Trades the fill closed.
        closed_trades: Vec<TradeRecord>,
    },
    /// The broker's snapshot (the simulated broker's state), as JSON text (serialized once,
    /// straight from the broker's state: no intermediate `serde_json::Value`).
    BrokerState {
        /// The `[brokers.<name>]` name.
        broker: String,
        /// The snapshot, a JSON document.
        state: Box<serde_json::value::RawValue>,
    },
}

/// Writes that belong together, applied by
/// [`Store::write_batch`](super::Store::write_batch) in ONE transaction, in order: either
/// all of them are stored or none. The emergency close of hundreds of positions and a bar
/// that triggers many stops are one commit (one fsync) instead of one per fill.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// When it was recorded, Unix seconds (`updated_at` of the rows it touches).
    pub at: i64,
    /// The writes, applied in this order.
    pub entries: Vec<BatchEntry>,
}

impl WriteBatch {
    /// An empty batch stamped `at` (Unix seconds).
    pub fn new(at: i64) -> WriteBatch {
        WriteBatch {
            at,
            entries: Vec::new(),
        }
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends one write.
    pub fn push(&mut self, entry: BatchEntry) {
        self.entries.push(entry);
    }
}

/// What [`Store::write_batch`](super::Store::write_batch) wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Fills that were new and written with what they changed.
    pub fills_written: usize,
    /// Fills already stored (their entries were skipped).
    pub fills_duplicate: usize,
}
