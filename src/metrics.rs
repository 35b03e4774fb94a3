//! Prometheus metrics: every name in one place.
//!
//! [`Metrics`] owns its own [`prometheus::Registry`] (never the process-wide default one), so a
//! test or a backtest can make as many independent sets as it likes. Callers never touch label
//! vectors: each event has a method taking plain arguments ([`Metrics::execution_finished`],
//! [`Metrics::order_submitted`], ...), and [`Metrics::render`] gives the Prometheus text
//! exposition format (version 0.0.4) served on `GET /metrics`.
//!
//! Conventions (<https://prometheus.io/docs/practices/naming/>): prefix `ztraded_`, base units
//! (seconds, US dollars), counters end in `_total`, durations are `_seconds` histograms, `_info`
//! gauges carry a constant 1 and their information in labels.
//!
//! # Cardinality
//!
//! Labels take values from small fixed sets (enums here) except `pipeline` (one value per
//! configured pipeline), `reason` of order rejections (a broker reason *code*, never a free-text
//! message), `rule` of risk rejections (the rule names of the risk policies) and `revision`
//! (exactly one live value). With `P` pipelines the per-pipeline families hold about
//! `P × (4 results + 2 modes·sides + rejection codes + rules + 2)` series. The duration
//! histograms deliberately carry no `pipeline` label: with thousands of pipelines a per-pipeline
//! histogram would cost `P × (buckets + 2)` series; per-pipeline rates come from
//! `ztraded_executions_total` instead. [`Metrics::remove_pipeline`] deletes every series of a
//! removed pipeline so the pipeline label set does not only grow.

use crate::broker::types::Side;
use crate::config::pipeline::Mode;
use prometheus::core::Desc;
use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// `ztraded_build_info{version}`: constant 1, labelled with the crate version.
pub const BUILD_INFO: &str = "ztraded_build_info";
/// `ztraded_config_reloads_total{result}`: config reloads by [`ReloadResult`].
pub const CONFIG_RELOADS_TOTAL: &str = "ztraded_config_reloads_total";
/// `ztraded_config_last_reload_success_timestamp_seconds`: Unix time of the last good reload.
pub const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS: &str =
    "ztraded_config_last_reload_success_timestamp_seconds";
/// `ztraded_config_revision_info{revision}`: constant 1 for the running revision only.
pub const CONFIG_REVISION_INFO: &str = "ztraded_config_revision_info";
/// `ztraded_reconcile_duration_seconds`: histogram of reconcile passes.
pub const RECONCILE_DURATION_SECONDS: &str = "ztraded_reconcile_duration_seconds";
/// `ztraded_pipelines{state}`: number of pipelines in each [`PipelineCounts`] state.
pub const PIPELINES: &str = "ztraded_pipelines";
/// `ztraded_executions_total{pipeline,result}`: finished executions by [`ExecutionResult`].
pub const EXECUTIONS_TOTAL: &str = "ztraded_executions_total";
/// `ztraded_execution_duration_seconds`: histogram of execution wall time, all pipelines.
pub const EXECUTION_DURATION_SECONDS: &str = "ztraded_execution_duration_seconds";
/// `ztraded_orders_total{pipeline,mode,side}`: orders submitted.
pub const ORDERS_TOTAL: &str = "ztraded_orders_total";
/// `ztraded_order_rejections_total{pipeline,reason}`: orders the broker rejected.
pub const ORDER_REJECTIONS_TOTAL: &str = "ztraded_order_rejections_total";
/// `ztraded_risk_rejections_total{pipeline,rule}`: orders a risk rule refused.
pub const RISK_REJECTIONS_TOTAL: &str = "ztraded_risk_rejections_total";
/// `ztraded_positions_open{pipeline}`: open positions.
pub const POSITIONS_OPEN: &str = "ztraded_positions_open";
/// `ztraded_realized_pnl_dollars{pipeline}`: realized profit and loss in USD.
pub const REALIZED_PNL_DOLLARS: &str = "ztraded_realized_pnl_dollars";
/// `ztraded_equity_dollars`: account equity in USD.
pub const EQUITY_DOLLARS: &str = "ztraded_equity_dollars";
/// `ztraded_broker_drift_positions{broker}`: positions at the broker that no pipeline owns,
/// as of the last broker reconciliation.
pub const BROKER_DRIFT_POSITIONS: &str = "ztraded_broker_drift_positions";
/// `ztraded_notifications_total{sink,result}`: notifications by `[notify.<sink>]` and result
/// (`delivered`, `dropped`), see [`crate::notify`].
pub const NOTIFICATIONS_TOTAL: &str = "ztraded_notifications_total";
/// `ztraded_emergency_closes_total{scope}`: emergency closes by [`ScopeKind`].
pub const EMERGENCY_CLOSES_TOTAL: &str = "ztraded_emergency_closes_total";
/// `ztraded_halts{scope}`: latched halts by [`ScopeKind`].
pub const HALTS: &str = "ztraded_halts";
/// `ztraded_store_errors_total{operation}`: store writes or reads that failed, by
/// [`StoreOperation`].
pub const STORE_ERRORS_TOTAL: &str = "ztraded_store_errors_total";
/// `ztraded_budget_remaining_dollars{pipeline,period}`: USD left of a pipeline's daily or
/// monthly LLM budget.
pub const BUDGET_REMAINING_DOLLARS: &str = "ztraded_budget_remaining_dollars";
/// `ztraded_market_data_last_bar_timestamp_seconds{symbol,timeframe}`: period end of the
/// newest bar seen (what a staleness alert reads).
pub const MARKET_DATA_LAST_BAR_TIMESTAMP_SECONDS: &str =
    "ztraded_market_data_last_bar_timestamp_seconds";
/// `ztraded_signals_total{type,outcome}`: what became of each signal for each pipeline
/// subscribing to its type, by [`crate::engine::core::SignalOutcome`] (`dispatched`,
/// `deduplicated`, `below_confidence`, `not_in_scanner`, `halted`, `outside_window`).
pub const SIGNALS_TOTAL: &str = "ztraded_signals_total";
/// `ztraded_signals_received_total`: signals taken from the bus (generated or external).
pub const SIGNALS_RECEIVED_TOTAL: &str = "ztraded_signals_received_total";
/// `ztraded_signals_dead_lettered_total`: malformed bus entries moved to the dead-letter
/// stream (`ztraded:signals:dead`).
pub const SIGNALS_DEAD_LETTERED_TOTAL: &str = "ztraded_signals_dead_lettered_total";
/// `ztraded_signal_dispatch_seconds`: histogram of the time from a signal's publication to
/// the start of the execution it dispatched.
pub const SIGNAL_DISPATCH_SECONDS: &str = "ztraded_signal_dispatch_seconds";
/// `ztraded_leases_held`: pipeline leases this daemon holds (several daemons on one
/// account, [`crate::lease`]); 0 with one daemon.
pub const LEASES_HELD: &str = "ztraded_leases_held";
/// `ztraded_lease_transitions_total{reason}`: pipeline leases taken or given up, by
/// [`crate::lease::LeaseReason`]: `acquired`, `released` (shutdown, pipeline removed, epoch
/// refused by the store), `lost` (the renewal found it expired or held by another daemon), `error`
/// (the renewal failed).
pub const LEASE_TRANSITIONS_TOTAL: &str = "ztraded_lease_transitions_total";

/// The families of [`Metrics`] but [`BUDGET_REMAINING_DOLLARS`], in the order above: the ones a
/// test gives a series each before checking the exposition with `promtool check metrics`.
/// [`EXPORTED_NAMES`] lists every family `/metrics` serves.
pub const ALL_NAMES: [&str; 25] = [
    BUILD_INFO,
    CONFIG_RELOADS_TOTAL,
    CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
    CONFIG_REVISION_INFO,
    RECONCILE_DURATION_SECONDS,
    PIPELINES,
    EXECUTIONS_TOTAL,
    EXECUTION_DURATION_SECONDS,
    ORDERS_TOTAL,
    ORDER_REJECTIONS_TOTAL,
    RISK_REJECTIONS_TOTAL,
    POSITIONS_OPEN,
    REALIZED_PNL_DOLLARS,
    EQUITY_DOLLARS,
    EMERGENCY_CLOSES_TOTAL,
    BROKER_DRIFT_POSITIONS,
    HALTS,
    STORE_ERRORS_TOTAL,
    MARKET_DATA_LAST_BAR_TIMESTAMP_SECONDS,
    SIGNALS_TOTAL,
    SIGNALS_RECEIVED_TOTAL,
    SIGNALS_DEAD_LETTERED_TOTAL,
    SIGNAL_DISPATCH_SECONDS,
    LEASES_HELD,
    LEASE_TRANSITIONS_TOTAL,
];

/// Every family the daemon's `/metrics` serves: [`ALL_NAMES`], [`BUDGET_REMAINING_DOLLARS`] and
/// the LLM families of [`crate::llm::provider`]. Each is listed from the start, with its
/// `# HELP` and `# TYPE` lines, even before its first series (see [`Metrics::try_render`]), so
/// dashboards and alert rules can rely on every name existing.
pub const EXPORTED_NAMES: [&str; 31] = exported_names([
    BUDGET_REMAINING_DOLLARS,
    NOTIFICATIONS_TOTAL,
    crate::llm::provider::LLM_REQUESTS_TOTAL,
    crate::llm::provider::LLM_TOKENS_TOTAL,
    crate::llm::provider::LLM_COST_DOLLARS_TOTAL,
    crate::llm::provider::LLM_REQUEST_DURATION_SECONDS,
]);

/// [`ALL_NAMES`] followed by `more`.
const fn exported_names(more: [&'static str; 6]) -> [&'static str; 31] {
    let mut out = [""; 31];
    let mut i = 0;
    while i < ALL_NAMES.len() {
        out[i] = ALL_NAMES[i];
        i += 1;
    }
    let mut j = 0;
    while j < more.len() {
        out[i + j] = more[j];
        j += 1;
    }
    out
}

/// What the store was doing when it failed (`operation` label of
/// `ztraded_store_errors_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreOperation {
    /// Writing an order intent before a submission (the order is then not sent).
    Intent,
    /// Writing what a submission, a cancel or a replace answered.
    Order,
    /// Writing fills, the book and the broker's state after broker events.
    Fill,
    /// Writing an execution record.
    Execution,
    /// Writing an equity point.
    Equity,
    /// Writing a halt, a resume or an intervention.
    Journal,
    /// Writing a reconcile record or the daemon's state (replay cursor, applied revision).
    State,
    /// Reading at start (recovery).
    Recovery,
}

impl StoreOperation {
    /// Every operation, in label order.
    pub const ALL: [StoreOperation; 8] = [
        StoreOperation::Intent,
        StoreOperation::Order,
        StoreOperation::Fill,
        StoreOperation::Execution,
        StoreOperation::Equity,
        StoreOperation::Journal,
        StoreOperation::State,
        StoreOperation::Recovery,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOperation::Intent => "intent",
            StoreOperation::Order => "order",
            StoreOperation::Fill => "fill",
            StoreOperation::Execution => "execution",
            StoreOperation::Equity => "equity",
            StoreOperation::Journal => "journal",
            StoreOperation::State => "state",
            StoreOperation::Recovery => "recovery",
        }
    }
}

/// Buckets of `ztraded_reconcile_duration_seconds`, in seconds: 1 ms to 30 s (parsing and
/// validating a config directory, diffing, starting and stopping actors).
pub const RECONCILE_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];
/// Buckets of [`SIGNAL_DISPATCH_SECONDS`], seconds (100 µs to 60 s: a signal waits behind
/// the running execution of its pipeline).
pub const SIGNAL_DISPATCH_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
    30.0, 60.0,
];
/// Buckets of `ztraded_execution_duration_seconds`, in seconds: 5 ms (pure indicator
/// pipelines) to 120 s (pipelines waiting on LLM calls).
pub const EXECUTION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Outcome of one config reload (`result` label of `ztraded_config_reloads_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReloadResult {
    /// The new desired state was valid and reconciled.
    Applied,
    /// The new desired state was invalid; the last valid revision keeps running.
    Refused,
    /// The files produced the revision that is already running.
    Unchanged,
}

impl ReloadResult {
    /// Every value, for pre-initialising series at zero.
    pub const ALL: [ReloadResult; 3] = [
        ReloadResult::Applied,
        ReloadResult::Refused,
        ReloadResult::Unchanged,
    ];
    /// The label value: `applied`, `refused` or `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Refused => "refused",
            ReloadResult::Unchanged => "unchanged",
        }
    }
}

/// Outcome of one execution (`result` label of `ztraded_executions_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExecutionResult {
    /// The DAG ran to its end.
    Completed,
    /// A gate, window, limit or budget stopped it before any side effect.
    Skipped,
    /// A node returned an error.
    Failed,
    /// A shutdown, removal or emergency close stopped it midway.
    Interrupted,
}

impl ExecutionResult {
    /// Every value, for pre-initialising series at zero.
    pub const ALL: [ExecutionResult; 4] = [
        ExecutionResult::Completed,
        ExecutionResult::Skipped,
        ExecutionResult::Failed,
        ExecutionResult::Interrupted,
    ];
    /// The label value: `completed`, `skipped`, `failed` or `interrupted`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionResult::Completed => "completed",
            ExecutionResult::Skipped => "skipped",
            ExecutionResult::Failed => "failed",
            ExecutionResult::Interrupted => "interrupted",
        }
    }
}

/// The kind of scope of an emergency close or a halt (`scope` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    /// Every pipeline and symbol.
    All,
    /// One pipeline.
    Pipeline,
    /// One symbol, across pipelines.
    Symbol,
}

impl ScopeKind {
    /// Every value, for pre-initialising series at zero.
    pub const ALL: [ScopeKind; 3] = [ScopeKind::All, ScopeKind::Pipeline, ScopeKind::Symbol];
    /// The label value: `all`, `pipeline` or `symbol`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::All => "all",
            ScopeKind::Pipeline => "pipeline",
            ScopeKind::Symbol => "symbol",
        }
    }
}

/// How many pipelines are in each state; [`Metrics::set_pipeline_counts`] sets all five
/// `ztraded_pipelines{state}` series at once so they always add up to the total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineCounts {
    /// Taking new entries.
    pub running: u64,
    /// Latched halt: no new entries, exits still managed.
    pub halted: u64,
    /// Removed or disabled, waiting for its positions to close (`on_remove`).
    pub draining: u64,
    /// Not running (disabled, or outside its schedule with nothing open).
    pub stopped: u64,
    /// Stopped by an error it cannot recover from.
    pub failed: u64,
}

/// How many halts are latched per scope kind (`ztraded_halts{scope}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HaltCounts {
    /// 1 when the global halt is latched, else 0.
    pub all: u64,
    /// Number of pipelines with a latched halt.
    pub pipeline: u64,
    /// Number of symbols with a latched halt.
    pub symbol: u64,
}

/// Errors building a [`Metrics`] or rendering it.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric could not be created or registered (duplicate name, invalid label name).
    #[error("metrics: cannot register {name}: {source}")]
    Register {
        /// The metric family name.
        name: &'static str,
        /// The prometheus error.
        source: prometheus::Error,
    },
    /// The text encoder refused the gathered families.
    #[error("metrics: cannot encode the text format: {0}")]
    Encode(prometheus::Error),
}

/// The daemon's metrics, registered in a registry of their own.
///
/// Thread-safe: share it as `Arc<Metrics>`. Every method is cheap (atomic updates behind a
/// read lock of the label map), except [`Metrics::render`] and [`Metrics::remove_pipeline`],
/// which walk the families.
pub struct Metrics {
    registry: Registry,
    config_reloads: IntCounterVec,
    config_last_reload_success: Gauge,
    config_revision: IntGaugeVec,
    current_revision: Mutex<Option<String>>,
    reconcile_duration: Histogram,
    pipelines: IntGaugeVec,
    per_pipeline: Arc<PipelineFamilies>,
    execution_duration: Histogram,
    orders: IntCounterVec,
    order_rejections: IntCounterVec,
    risk_rejections: IntCounterVec,
    equity: Gauge,
    emergency_closes: IntCounterVec,
    notifications: IntCounterVec,
    halts: IntGaugeVec,
    store_errors: IntCounterVec,
    last_bar: prometheus::GaugeVec,
    drift: IntGaugeVec,
    budget_remaining: prometheus::GaugeVec,
    signals: IntCounterVec,
    signals_received: prometheus::IntCounter,
    signals_dead: prometheus::IntCounter,
    signal_dispatch: Histogram,
    leases_held: prometheus::IntGauge,
    lease_transitions: IntCounterVec,
    /// Every family this registry can serve, by name, for the ones without a series yet.
    declared: BTreeMap<String, Declared>,
}

/// The `# HELP` text and `# TYPE` of a family.
#[derive(Clone, Debug)]
struct Declared {
    help: String,
    kind: MetricType,
}

/// Adds the families of `collector`, all of type `kind`, to `declared`.
fn declare(declared: &mut BTreeMap<String, Declared>, collector: &dyn Collector, kind: MetricType) {
    for d in collector.desc() {
        declared.insert(
            d.fq_name.clone(),
            Declared {
                help: d.help.clone(),
                kind,
            },
        );
    }
}

/// The `# TYPE` word of `kind`.
fn type_word(kind: MetricType) -> &'static str {
    match kind {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::SUMMARY => "summary",
        MetricType::HISTOGRAM => "histogram",
        MetricType::UNTYPED => "untyped",
    }
}

/// `help` escaped as the text format wants it in a `# HELP` line (backslash and newline).
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    name: &'static str,
    made: prometheus::Result<C>,
) -> Result<C, MetricsError> {
    let c = made.map_err(|source| MetricsError::Register { name, source })?;
    registry
        .register(Box::new(c.clone()))
        .map_err(|source| MetricsError::Register { name, source })?;
    Ok(c)
}

/// Deletes every series of `vec` whose label `label` equals `value`.
fn remove_matching<T: MetricVecBuilder>(vec: &MetricVec<T>, label: &str, value: &str) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let pairs = metric.get_label();
            if !pairs
                .iter()
                .any(|p| p.name() == label && p.value() == value)
            {
                continue;
            }
            let labels: HashMap<&str, &str> = pairs.iter().map(|p| (p.name(), p.value())).collect();
            // The label set was just read from the vector itself, so it matches its label
            // names; an error only means a concurrent removal won the race.
            let _ = vec.remove(&labels);
        }
    }
}

/// The values of one pipeline's always-present series.
#[derive(Clone, Copy, Debug, Default)]
struct PipelineSeries {
    /// `ztraded_executions_total`, indexed by [`ExecutionResult`] in [`ExecutionResult::ALL`]
    /// order.
    executions: [u64; 4],
    /// `ztraded_positions_open`.
    positions_open: i64,
    /// `ztraded_realized_pnl_dollars`, USD.
    realized_pnl: f64,
}

/// `ztraded_executions_total{pipeline,result}`, `ztraded_positions_open{pipeline}` and
/// `ztraded_realized_pnl_dollars{pipeline}`: the families every pipeline has from its start.
/// Kept as plain numbers per pipeline (about 100 bytes) and turned into series at scrape
/// time: a label vector keeps a copy of its descriptor and label pairs in every series,
/// about 450 bytes each, and a daemon runs thousands of pipelines.
struct PipelineFamilies {
    executions: Desc,
    positions_open: Desc,
    realized_pnl: Desc,
    /// By pipeline name, sorted (the exposition is sorted too).
    series: Mutex<BTreeMap<String, PipelineSeries>>,
}

impl PipelineFamilies {
    fn new() -> Result<PipelineFamilies, MetricsError> {
        let desc = |name: &'static str, help: &str, labels: &[&str]| {
            Desc::new(
                name.to_string(),
                help.to_string(),
                labels.iter().map(|l| (*l).to_string()).collect(),
                HashMap::new(),
            )
            .map_err(|source| MetricsError::Register { name, source })
        };
        Ok(PipelineFamilies {
            executions: desc(
                EXECUTIONS_TOTAL,
                "Finished pipeline executions, by pipeline and result: completed, skipped, \
                 failed or interrupted.",
                &["pipeline", "result"],
            )?,
            positions_open: desc(
                POSITIONS_OPEN,
                "Number of open positions, by pipeline.",
                &["pipeline"],
            )?,
            realized_pnl: desc(
                REALIZED_PNL_DOLLARS,
                "Realized profit and loss in US dollars of the pipeline's closed trades, by \
                 pipeline; negative for a loss.",
                &["pipeline"],
            )?,
            series: Mutex::new(BTreeMap::new()),
        })
    }

    /// Applies `f` to the series of `pipeline`, created at zero when missing.
    fn with(&self, pipeline: &str, f: impl FnOnce(&mut PipelineSeries)) {
        let mut map = self
            .series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get_mut(pipeline) {
            Some(s) => f(s),
            None => f(map.entry(pipeline.to_string()).or_default()),
        }
    }

    fn remove(&self, pipeline: &str) {
        self.series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(pipeline);
    }
}

fn label_pair(name: &str, value: &str) -> LabelPair {
    let mut p = LabelPair::default();
    p.set_name(name.to_string());
    p.set_value(value.to_string());
    p
}

fn family(desc: &Desc, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

/// Registers the shared [`PipelineFamilies`] (the registry takes its collectors boxed).
struct SharedFamilies(Arc<PipelineFamilies>);

impl Collector for SharedFamilies {
    fn desc(&self) -> Vec<&Desc> {
        vec![
            &self.0.executions,
            &self.0.positions_open,
            &self.0.realized_pnl,
        ]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snapshot: Vec<(String, PipelineSeries)> = self
            .0
            .series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let mut executions = Vec::with_capacity(snapshot.len() * ExecutionResult::ALL.len());
        let mut positions = Vec::with_capacity(snapshot.len());
        let mut pnl = Vec::with_capacity(snapshot.len());
        for (name, s) in &snapshot {
            for result in ExecutionResult::ALL {
                let mut c = prometheus::proto::Counter::default();
                c.set_value(s.executions[result as usize] as f64);
                let mut m = Metric::default();
                m.set_label(vec![
                    label_pair("pipeline", name),
                    label_pair("result", result.as_str()),
                ]);
                m.set_counter(c);
                executions.push(m);
            }
            let mut g = prometheus::proto::Gauge::default();
            g.set_value(s.positions_open as f64);
            let mut m = Metric::default();
            m.set_label(vec![label_pair("pipeline", name)]);
            m.set_gauge(g);
            positions.push(m);
            let mut g = prometheus::proto::Gauge::default();
            g.set_value(s.realized_pnl);
            let mut m = Metric::default();
            m.set_label(vec![label_pair("pipeline", name)]);
            m.set_gauge(g);
            pnl.push(m);
        }
        vec![
            family(&self.0.executions, MetricType::COUNTER, executions),
            family(&self.0.positions_open, MetricType::GAUGE, positions),
            family(&self.0.realized_pnl, MetricType::GAUGE, pnl),
        ]
    }
}

/// Seconds since the Unix epoch, negative before it.
fn unix_seconds(at: SystemTime) -> f64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// USD as f64 for a gauge. Precision loss is acceptable for display; the store keeps Decimal.
fn dollars(amount: Decimal) -> f64 {
    amount.to_f64().unwrap_or(f64::NAN)
}

impl Metrics {
    /// Creates every metric family in a fresh registry. `ztraded_build_info` is set to 1, and
    /// the series of the fixed label sets (`result` of reloads, `state` of pipelines, `scope`
    /// of emergency closes and halts) start at 0 so that they exist before the first event.
    ///
    /// Errors: [`MetricsError::Register`] only if the definitions here are inconsistent
    /// (caught by the unit tests).
    pub fn new() -> Result<Metrics, MetricsError> {
        let r = Registry::new();
        let build_info = register(
            &r,
            BUILD_INFO,
            IntGaugeVec::new(
                Opts::new(
                    BUILD_INFO,
                    "Constant 1, labelled with the version of the running ztraded binary.",
                ),
                &["version"],
            ),
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let config_reloads = register(
            &r,
            CONFIG_RELOADS_TOTAL,
            IntCounterVec::new(
                Opts::new(
                    CONFIG_RELOADS_TOTAL,
                    "Config directory reloads, by result: applied (reconciled), refused (invalid, \
                     the last valid revision keeps running) or unchanged.",
                ),
                &["result"],
            ),
        )?;
        for result in ReloadResult::ALL {
            config_reloads
                .with_label_values(&[result.as_str()])
                .inc_by(0);
        }
        let config_last_reload_success = register(
            &r,
            CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
            Gauge::with_opts(Opts::new(
                CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
                "Unix time in seconds of the last config reload that was applied or unchanged; \
                 0 before the first one.",
            )),
        )?;
        let config_revision = register(
            &r,
            CONFIG_REVISION_INFO,
            IntGaugeVec::new(
                Opts::new(
                    CONFIG_REVISION_INFO,
                    "Constant 1, labelled with the revision hash of the desired state the daemon \
                     runs.",
                ),
                &["revision"],
            ),
        )?;
        let reconcile_duration = register(
            &r,
            RECONCILE_DURATION_SECONDS,
            Histogram::with_opts(
                HistogramOpts::new(
                    RECONCILE_DURATION_SECONDS,
                    "Wall time in seconds of one reconcile pass, from loading the files to the \
                     last pipeline actor started or stopped.",
                )
                .buckets(RECONCILE_BUCKETS.to_vec()),
            ),
        )?;
        let pipelines = register(
            &r,
            PIPELINES,
            IntGaugeVec::new(
                Opts::new(
                    PIPELINES,
                    "Number of pipelines in each state: running, halted, draining, stopped or \
                     failed.",
                ),
                &["state"],
            ),
        )?;
        let per_pipeline = Arc::new(PipelineFamilies::new()?);
        r.register(Box::new(SharedFamilies(Arc::clone(&per_pipeline))))
            .map_err(|source| MetricsError::Register {
                name: EXECUTIONS_TOTAL,
                source,
            })?;
        let execution_duration = register(
            &r,
            EXECUTION_DURATION_SECONDS,
            Histogram::with_opts(
                HistogramOpts::new(
                    EXECUTION_DURATION_SECONDS,
                    "Wall time in seconds of one pipeline execution, all pipelines together.",
                )
                .buckets(EXECUTION_BUCKETS.to_vec()),
            ),
        )?;
        let orders = register(
            &r,
            ORDERS_TOTAL,
            IntCounterVec::new(
                Opts::new(
                    ORDERS_TOTAL,
                    "Orders submitted to a broker (or recorded, in validation mode), by \
                     pipeline, mode and side.",
                ),
                &["pipeline", "mode", "side"],
            ),
        )?;
        let order_rejections = register(
            &r,
            ORDER_REJECTIONS_TOTAL,
            IntCounterVec::new(
                Opts::new(
                    ORDER_REJECTIONS_TOTAL,
                    "Orders the broker rejected, by pipeline and rejection reason code.",
                ),
                &["pipeline", "reason"],
            ),
        )?;
        let risk_rejections = register(
            &r,
            RISK_REJECTIONS_TOTAL,
            IntCounterVec::new(
                Opts::new(
                    RISK_REJECTIONS_TOTAL,
                    "Orders refused before submission by a risk policy rule, by pipeline and \
                     rule.",
                ),
                &["pipeline", "rule"],
            ),
        )?;
        let equity = register(
            &r,
            EQUITY_DOLLARS,
            Gauge::with_opts(Opts::new(
                EQUITY_DOLLARS,
                "Account equity in US dollars (cash plus market value of positions) as last \
                 reported by the broker.",
            )),
        )?;
        let emergency_closes = register(
            &r,
            EMERGENCY_CLOSES_TOTAL,
            IntCounterVec::new(
                Opts::new(
                    EMERGENCY_CLOSES_TOTAL,
                    "Authenticated emergency close requests handed to the daemon, by scope: all, \
                     pipeline or symbol.",
                ),
                &["scope"],
            ),
        )?;
        let notifications = register(
            &r,
            NOTIFICATIONS_TOTAL,
            IntCounterVec::new(
                Opts::new(
                    NOTIFICATIONS_TOTAL,
                    "Notifications by [notify.<sink>] and result: delivered, or dropped (queue \
                     full, retries exhausted, refused by the receiver, or the sink not started).",
                ),
                &["sink", "result"],
            ),
        )?;
        for kind in ScopeKind::ALL {
            emergency_closes
                .with_label_values(&[kind.as_str()])
                .inc_by(0);
        }
        let halts = register(
            &r,
            HALTS,
            IntGaugeVec::new(
                Opts::new(
                    HALTS,
                    "Number of latched halts of new entries, by scope: all (0 or 1), pipeline or \
                     symbol.",
                ),
                &["scope"],
            ),
        )?;
        let store_errors = register(
            &r,
            STORE_ERRORS_TOTAL,
            IntCounterVec::new(
                Opts::new(
                    STORE_ERRORS_TOTAL,
                    "Store operations that failed, by operation: intent (the order was not \
                     sent), order, fill, execution, equity, journal, state, recovery.",
                ),
                &["operation"],
            ),
        )?;
        let leases_held = register(
            &r,
            LEASES_HELD,
            prometheus::IntGauge::with_opts(Opts::new(
                LEASES_HELD,
                "Pipeline leases this daemon holds (several daemons on one account); it runs \
                 exactly these pipelines. 0 with one daemon.",
            )),
        )?;
        let lease_transitions = register(
            &r,
            LEASE_TRANSITIONS_TOTAL,
            IntCounterVec::new(
                Opts::new(
                    LEASE_TRANSITIONS_TOTAL,
                    "Pipeline leases taken or given up, by reason: acquired, released \
                     (shutdown, pipeline removed), lost (expired or held by another \
                     daemon at renewal), error (the renewal failed).",
                ),
                &["reason"],
            ),
        )?;
        for reason in crate::lease::LeaseReason::ALL {
            lease_transitions
                .with_label_values(&[reason.as_str()])
                .inc_by(0);
        }
        for op in StoreOperation::ALL {
            store_errors.with_label_values(&[op.as_str()]).inc_by(0);
        }
        let last_bar = register(
            &r,
            MARKET_DATA_LAST_BAR_TIMESTAMP_SECONDS,
            prometheus::GaugeVec::new(
                Opts::new(
                    MARKET_DATA_LAST_BAR_TIMESTAMP_SECONDS,
                    "Unix time in seconds of the period end of the newest bar seen, by symbol \
                     and timeframe (simulated time in replay).",
                ),
                &["symbol", "timeframe"],
            ),
        )?;
        let drift = register(
            &r,
            BROKER_DRIFT_POSITIONS,
            IntGaugeVec::new(
                Opts::new(
                    BROKER_DRIFT_POSITIONS,
                    "Positions at the broker that no pipeline owns (drift: reported, never \
                     touched), by broker, as of the last broker reconciliation.",
                ),
                &["broker"],
            ),
        )?;
        let budget_remaining = register(
            &r,
            BUDGET_REMAINING_DOLLARS,
            prometheus::GaugeVec::new(
                Opts::new(
                    BUDGET_REMAINING_DOLLARS,
                    "USD left of a pipeline's LLM cost budget in the current period (daily or \
                     monthly, in the pipeline's window time zone), by pipeline and period.",
                ),
                &["pipeline", "period"],
            ),
        )?;
        let mut declared = BTreeMap::new();
        declare(&mut declared, &build_info, MetricType::GAUGE);
        declare(&mut declared, &config_reloads, MetricType::COUNTER);
        declare(
            &mut declared,
            &config_last_reload_success,
            MetricType::GAUGE,
        );
        declare(&mut declared, &config_revision, MetricType::GAUGE);
        declare(&mut declared, &reconcile_duration, MetricType::HISTOGRAM);
        declare(&mut declared, &pipelines, MetricType::GAUGE);
        for (desc, kind) in [
            (&per_pipeline.executions, MetricType::COUNTER),
            (&per_pipeline.positions_open, MetricType::GAUGE),
            (&per_pipeline.realized_pnl, MetricType::GAUGE),
        ] {
            declared.insert(
                desc.fq_name.clone(),
                Declared {
                    help: desc.help.clone(),
                    kind,
                },
            );
        }
        declare(&mut declared, &execution_duration, MetricType::HISTOGRAM);
        declare(&mut declared, &orders, MetricType::COUNTER);
        declare(&mut declared, &order_rejections, MetricType::COUNTER);
        declare(&mut declared, &risk_rejections, MetricType::COUNTER);
        declare(&mut declared, &equity, MetricType::GAUGE);
        declare(&mut declared, &emergency_closes, MetricType::COUNTER);
        declare(&mut declared, &notifications, MetricType::COUNTER);
        declare(&mut declared, &halts, MetricType::GAUGE);
        declare(&mut declared, &store_errors, MetricType::COUNTER);
        declare(&mut declared, &last_bar, MetricType::GAUGE);
        declare(&mut declared, &drift, MetricType::GAUGE);
        declare(&mut declared, &budget_remaining, MetricType::GAUGE);
        let signals = register(
            &r,
            SIGNALS_TOTAL,
            IntCounterVec::new(
                Opts::new(
                    SIGNALS_TOTAL,
                    "What became of each signal for each pipeline subscribing to its type, by \
                     type and outcome: dispatched, deduplicated, below_confidence, \
                     not_in_scanner, halted, outside_window.",
                ),
                &["type", "outcome"],
            ),
        )?;
        let signals_received = register(
            &r,
            SIGNALS_RECEIVED_TOTAL,
            prometheus::IntCounter::with_opts(Opts::new(
                SIGNALS_RECEIVED_TOTAL,
                "Signals taken from the bus, generated or external.",
            )),
        )?;
        let signals_dead = register(
            &r,
            SIGNALS_DEAD_LETTERED_TOTAL,
            prometheus::IntCounter::with_opts(Opts::new(
                SIGNALS_DEAD_LETTERED_TOTAL,
                "Malformed bus entries moved to the dead-letter stream with their reason.",
            )),
        )?;
        let signal_dispatch = register(
            &r,
            SIGNAL_DISPATCH_SECONDS,
            Histogram::with_opts(
                HistogramOpts::new(
                    SIGNAL_DISPATCH_SECONDS,
                    "Time from a signal's publication to the start of the execution it \
                     dispatched, seconds.",
                )
                .buckets(SIGNAL_DISPATCH_BUCKETS.to_vec()),
            ),
        )?;
        declare(&mut declared, &signals, MetricType::COUNTER);
        declare(&mut declared, &signals_received, MetricType::COUNTER);
        declare(&mut declared, &signals_dead, MetricType::COUNTER);
        declare(&mut declared, &signal_dispatch, MetricType::HISTOGRAM);
        declare(&mut declared, &leases_held, MetricType::GAUGE);
        declare(&mut declared, &lease_transitions, MetricType::COUNTER);
        // The LLM client registers its families in this registry when the daemon starts; its
        // definitions are read here (from an unregistered copy) so that they are listed before
        // the first call, and before the client exists.
        let llm = crate::llm::provider::LlmMetrics::register(None).map_err(|source| {
            MetricsError::Register {
                name: crate::llm::provider::LLM_REQUESTS_TOTAL,
                source,
            }
        })?;
        for (name, help, kind) in llm.families() {
            declared.insert(name, Declared { help, kind });
        }
        let m = Metrics {
            signals,
            signals_received,
            signals_dead,
            signal_dispatch,
            leases_held,
            lease_transitions,
            declared,
            budget_remaining,
            drift,
            registry: r,
            store_errors,
            last_bar,
            config_reloads,
            config_last_reload_success,
            config_revision,
            current_revision: Mutex::new(None),
            reconcile_duration,
            pipelines,
            per_pipeline,
            execution_duration,
            orders,
            order_rejections,
            risk_rejections,
            equity,
            emergency_closes,
            notifications,
            halts,
        };
        m.set_pipeline_counts(PipelineCounts::default());
        m.set_halts(HaltCounts::default());
        Ok(m)
    }

    /// Counts one outcome of a signal of type `signal_type` for one subscribing pipeline
    /// (`outcome`: a [`crate::engine::core::SignalOutcome::as_str`]).
    pub fn signal_outcome(&self, signal_type: &str, outcome: &str) {
        self.signals
            .with_label_values(&[signal_type, outcome])
            .inc();
    }

    /// Counts a signal taken from the bus.
    pub fn signal_received(&self) {
        self.signals_received.inc();
    }

    /// Counts a malformed entry moved to the dead-letter stream.
    pub fn signal_dead_lettered(&self) {
        self.signals_dead.inc();
    }

    /// Records the seconds from a signal's publication to the execution it started.
    pub fn signal_dispatch_latency(&self, seconds: f64) {
        self.signal_dispatch.observe(seconds);
    }

    /// Counts one config reload with its result; an `applied` or `unchanged` reload also sets
    /// `ztraded_config_last_reload_success_timestamp_seconds` to `at` (wall time).
    pub fn config_reloaded(&self, result: ReloadResult, at: SystemTime) {
        self.config_reloads
            .with_label_values(&[result.as_str()])
            .inc();
        if result != ReloadResult::Refused {
            self.config_last_reload_success.set(unix_seconds(at));
        }
    }

    /// Sets `ztraded_config_revision_info{revision}` to 1 for `revision` and deletes the series
    /// of the previous revision, so exactly one revision is ever exposed.
    pub fn set_config_revision(&self, revision: &str) {
        let mut current = self
            .current_revision
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.config_revision.with_label_values(&[revision]).set(1);
        if let Some(old) = current.as_deref()
            && old != revision
        {
            let _ = self.config_revision.remove_label_values(&[old]);
        }
        *current = Some(revision.to_string());
    }

    /// Observes the wall time of one reconcile pass, in seconds.
    pub fn reconcile_finished(&self, seconds: f64) {
        self.reconcile_duration.observe(seconds);
    }

    /// Sets all five `ztraded_pipelines{state}` series.
    pub fn set_pipeline_counts(&self, counts: PipelineCounts) {
        let g = &self.pipelines;
        for (state, n) in [
            ("running", counts.running),
            ("halted", counts.halted),
            ("draining", counts.draining),
            ("stopped", counts.stopped),
            ("failed", counts.failed),
        ] {
            g.with_label_values(&[state]).set(saturating_i64(n));
        }
    }

    /// Creates the missing series of a started pipeline at zero (every execution result, open
    /// positions, realized P&L) so that `rate()` and alerts see them before the first event;
    /// existing series keep their values. Optional: every other method creates the series it
    /// needs.
    pub fn pipeline_started(&self, pipeline: &str) {
        // An existing entry is left alone (a changed pipeline restarts with its positions
        // still open).
        self.per_pipeline.with(pipeline, |_| {});
    }

    /// Counts one finished execution of `pipeline` and observes its wall time in seconds.
    pub fn execution_finished(&self, pipeline: &str, result: ExecutionResult, seconds: f64) {
        self.per_pipeline
            .with(pipeline, |s| s.executions[result as usize] += 1);
        self.execution_duration.observe(seconds);
    }

    /// Counts one order submitted by `pipeline`.
    pub fn order_submitted(&self, pipeline: &str, mode: Mode, side: Side) {
        self.orders
            .with_label_values(&[pipeline, mode.as_str(), side.as_str()])
            .inc();
    }

    /// Counts one order the broker rejected. `reason` must be a short code from a bounded set
    /// (`insufficient_buying_power`, `market_closed`, ...), never the broker's free-text
    /// message: every distinct value is a new series.
    pub fn order_rejected(&self, pipeline: &str, reason: &str) {
        self.order_rejections
            .with_label_values(&[pipeline, reason])
            .inc();
    }

    /// Counts one order refused by the risk policy rule `rule` (the rule's name in the policy).
    pub fn risk_rejected(&self, pipeline: &str, rule: &str) {
        self.risk_rejections
            .with_label_values(&[pipeline, rule])
            .inc();
    }

    /// Sets the number of open positions of `pipeline`.
    pub fn set_positions_open(&self, pipeline: &str, open: u64) {
        self.per_pipeline
            .with(pipeline, |s| s.positions_open = saturating_i64(open));
    }

    /// Sets the realized P&L of `pipeline`, in USD (converted to f64 here, at the boundary).
    pub fn set_realized_pnl(&self, pipeline: &str, usd: Decimal) {
        self.per_pipeline
            .with(pipeline, |s| s.realized_pnl = dollars(usd));
    }

    /// Sets the number of positions at `broker` that no pipeline owns.
    pub fn set_drift_positions(&self, broker: &str, count: usize) {
        self.drift
            .with_label_values(&[broker])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Sets the account equity, in USD.
    pub fn set_equity(&self, usd: Decimal) {
        self.equity.set(dollars(usd));
    }

    /// Sets `ztraded_leases_held`.
    pub fn set_leases_held(&self, n: usize) {
        self.leases_held.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts one lease transition.
    pub fn lease_transition(&self, reason: crate::lease::LeaseReason) {
        self.lease_transitions
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Counts one emergency close handed to the daemon (the HTTP layer calls this).
    pub fn emergency_close(&self, scope: ScopeKind) {
        self.emergency_closes
            .with_label_values(&[scope.as_str()])
            .inc();
    }

    /// Starts `ztraded_notifications_total{sink}` at zero for both results.
    pub fn notification_sink(&self, sink: &str) {
        for result in ["delivered", "dropped"] {
            self.notifications
                .with_label_values(&[sink, result])
                .inc_by(0);
        }
    }

    /// Counts one notification of `sink`: `delivered` or `dropped`.
    pub fn notification(&self, sink: &str, delivered: bool) {
        let result = if delivered { "delivered" } else { "dropped" };
        self.notifications.with_label_values(&[sink, result]).inc();
    }

    /// Sets all three `ztraded_halts{scope}` series.
    pub fn set_halts(&self, counts: HaltCounts) {
        for (kind, n) in [
            (ScopeKind::All, counts.all),
            (ScopeKind::Pipeline, counts.pipeline),
            (ScopeKind::Symbol, counts.symbol),
        ] {
            self.halts
                .with_label_values(&[kind.as_str()])
                .set(saturating_i64(n));
        }
    }

    /// Counts one failed store operation.
    pub fn store_error(&self, operation: StoreOperation) {
        self.store_errors
            .with_label_values(&[operation.as_str()])
            .inc();
    }

    /// Sets what is left (USD) of `pipeline`'s budget for `period` (`daily`, `monthly`).
    pub fn set_budget_remaining(&self, pipeline: &str, period: &str, usd: Decimal) {
        self.budget_remaining
            .with_label_values(&[pipeline, period])
            .set(usd.to_f64().unwrap_or(0.0));
    }

    /// Sets the period end (Unix seconds) of the newest bar of `symbol` in `timeframe`.
    pub fn set_last_bar(&self, symbol: &str, timeframe: &str, end: i64) {
        self.last_bar
            .with_label_values(&[symbol, timeframe])
            .set(end as f64);
    }

    /// Deletes every series labelled `pipeline="<pipeline>"` from every family. The daemon
    /// calls it when a pipeline is removed from the config (after it has drained), so the
    /// exposition does not keep series of pipelines that no longer exist.
    pub fn remove_pipeline(&self, pipeline: &str) {
        self.per_pipeline.remove(pipeline);
        remove_matching(&self.orders, "pipeline", pipeline);
        remove_matching(&self.order_rejections, "pipeline", pipeline);
        remove_matching(&self.risk_rejections, "pipeline", pipeline);
        remove_matching(&self.budget_remaining, "pipeline", pipeline);
    }

    /// The registry, for adding collectors that live elsewhere (e.g. a store pool's gauges).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every family in the Prometheus text format, version 0.0.4 (`Content-Type: text/plain;
    /// version=0.0.4`, see [`prometheus::TEXT_FORMAT`]), sorted by name. A family without a
    /// series yet (no order rejected, no LLM call made, no broker reconciled) is listed with
    /// its `# HELP` and `# TYPE` lines only, as the format allows, so that every name of
    /// [`EXPORTED_NAMES`] is there from the first scrape. Errors: [`MetricsError::Encode`]
    /// (not expected).
    pub fn try_render(&self) -> Result<String, MetricsError> {
        let gathered = self.registry.gather();
        let mut families: BTreeMap<&str, Option<&MetricFamily>> = self
            .declared
            .keys()
            .map(|name| (name.as_str(), None))
            .collect();
        for f in &gathered {
            families.insert(f.name(), Some(f));
        }
        let encoder = TextEncoder::new();
        let mut buf = Vec::new();
        for (name, family) in families {
            match family {
                Some(f) => encoder
                    .encode(std::slice::from_ref(f), &mut buf)
                    .map_err(MetricsError::Encode)?,
                None => {
                    let d = &self.declared[name];
                    buf.extend_from_slice(
                        format!(
                            "# HELP {name} {}\n# TYPE {name} {}\n",
                            escape_help(&d.help),
                            type_word(d.kind)
                        )
                        .as_bytes(),
                    );
                }
            }
        }
        String::from_utf8(buf)
            .map_err(|e| MetricsError::Encode(prometheus::Error::Msg(e.to_string())))
    }

    /// [`Metrics::try_render`], logging an encoder error and answering the empty string then
    /// (Prometheus reads that as a scrape with no series, which alerts on `absent()` catch).
    pub fn render(&self) -> String {
        match self.try_render() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot render metrics");
                String::new()
            }
        }
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::dec;

    fn populated() -> Metrics {
        let m = Metrics::new().unwrap();
        m.config_reloaded(
            ReloadResult::Applied,
            UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        );
        m.set_config_revision("abc123");
        m.reconcile_finished(0.02);
        m.set_pipeline_counts(PipelineCounts {
            running: 2,
            halted: 1,
            draining: 0,
            stopped: 3,
            failed: 0,
        });
        m.execution_finished("aapl-momentum", ExecutionResult::Completed, 0.3);
        m.order_submitted("aapl-momentum", Mode::Paper, Side::Buy);
        m.order_rejected("aapl-momentum", "insufficient_buying_power");
        m.risk_rejected("aapl-momentum", "max_position_pct");
        m.set_positions_open("aapl-momentum", 2);
        m.set_realized_pnl("aapl-momentum", dec!(-123.45));
        m.set_equity(dec!(100250.10));
        m.emergency_close(ScopeKind::Symbol);
        m.set_halts(HaltCounts {
            all: 0,
            pipeline: 1,
            symbol: 2,
        });
        m.set_last_bar("AAPL", "1d", 1_325_624_400);
        m.set_drift_positions("alpaca-paper", 1);
        m.signal_outcome("golden_cross", "dispatched");
        m.signal_received();
        m.signal_dead_lettered();
        m.signal_dispatch_latency(0.001);
        m.set_leases_held(3);
        m.lease_transition(crate::lease::LeaseReason::Acquired);
        m
    }

    #[test]
    fn every_family_is_rendered_with_help_and_type() {
        let text = populated().render();
        for name in ALL_NAMES {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}:\n{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "no TYPE for {name}:\n{text}"
            );
        }
        assert!(text.contains(&format!(
            "ztraded_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(
            text.contains("ztraded_realized_pnl_dollars{pipeline=\"aapl-momentum\"} -123.45\n")
        );
        assert!(text.contains("ztraded_equity_dollars 100250.1\n"));
        assert!(text.contains("ztraded_config_last_reload_success_timestamp_seconds 1700000000\n"));
        assert!(text.contains(
            "ztraded_orders_total{mode=\"paper\",pipeline=\"aapl-momentum\",side=\"buy\"} 1\n"
        ));
        assert!(text.contains("ztraded_halts{scope=\"symbol\"} 2\n"));
        assert!(text.contains("ztraded_pipelines{state=\"stopped\"} 3\n"));
    }

    #[test]
    fn every_family_is_listed_before_its_first_series() {
        let m = Metrics::new().unwrap();
        let text = m.render();
        for name in EXPORTED_NAMES {
            assert!(
                text.contains(&format!("\n# HELP {name} "))
                    || text.starts_with(&format!("# HELP {name} ")),
                "no HELP for {name}:\n{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "no TYPE for {name}:\n{text}"
            );
        }
        // Exactly the families above, each once, in name order.
        let types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut expected = EXPORTED_NAMES.to_vec();
        expected.sort_unstable();
        assert_eq!(types, expected);
        assert!(text.contains("# TYPE ztraded_order_rejections_total counter\n"));
        assert!(text.contains("# TYPE ztraded_risk_rejections_total counter\n"));
        assert!(text.contains("# TYPE ztraded_llm_request_duration_seconds histogram\n"));
        assert!(!text.contains("ztraded_risk_rejections_total{"), "{text}");
        // Once a series exists the family is rendered by the encoder, still once.
        m.risk_rejected("p", "max_position_pct");
        let text = m.render();
        assert_eq!(
            text.matches("# TYPE ztraded_risk_rejections_total ")
                .count(),
            1,
            "{text}"
        );
        assert!(text.contains(
            "ztraded_risk_rejections_total{pipeline=\"p\",rule=\"max_position_pct\"} 1\n"
        ));
    }

    #[test]
    fn llm_families_keep_their_help_once_the_client_registers_them() {
        let m = Metrics::new().unwrap();
        let llm = crate::llm::provider::LlmMetrics::register(Some(m.registry())).unwrap();
        llm.cost("p", rust_decimal::dec!(0.25));
        let text = m.render();
        assert_eq!(
            text.matches("# TYPE ztraded_llm_cost_dollars_total counter\n")
                .count(),
            1
        );
        assert!(text.contains("ztraded_llm_cost_dollars_total{pipeline=\"p\"} 0.25\n"));
        assert_eq!(
            text.matches("# TYPE ztraded_llm_requests_total counter\n")
                .count(),
            1
        );
    }

    #[test]
    fn help_is_escaped() {
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }

    #[test]
    fn fixed_label_sets_start_at_zero() {
        let text = Metrics::new().unwrap().render();
        for line in [
            "ztraded_config_reloads_total{result=\"applied\"} 0\n",
            "ztraded_config_reloads_total{result=\"refused\"} 0\n",
            "ztraded_config_reloads_total{result=\"unchanged\"} 0\n",
            "ztraded_pipelines{state=\"failed\"} 0\n",
            "ztraded_emergency_closes_total{scope=\"all\"} 0\n",
            "ztraded_halts{scope=\"all\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn refused_reload_keeps_the_success_timestamp() {
        let m = Metrics::new().unwrap();
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        m.config_reloaded(ReloadResult::Unchanged, t);
        m.config_reloaded(
            ReloadResult::Refused,
            t + std::time::Duration::from_secs(50),
        );
        let text = m.render();
        assert!(text.contains("ztraded_config_last_reload_success_timestamp_seconds 1000\n"));
        assert!(text.contains("ztraded_config_reloads_total{result=\"refused\"} 1\n"));
        assert!(text.contains("ztraded_config_reloads_total{result=\"unchanged\"} 1\n"));
    }

    #[test]
    fn only_the_current_revision_is_exposed() {
        let m = Metrics::new().unwrap();
        m.set_config_revision("r1");
        m.set_config_revision("r2");
        m.set_config_revision("r2");
        let text = m.render();
        assert!(!text.contains("revision=\"r1\""), "{text}");
        assert!(text.contains("ztraded_config_revision_info{revision=\"r2\"} 1\n"));
    }

    #[test]
    fn remove_pipeline_deletes_its_series_only() {
        let m = populated();
        m.execution_finished("other", ExecutionResult::Failed, 1.0);
        m.order_submitted("other", Mode::Live, Side::Sell);
        m.remove_pipeline("aapl-momentum");
        let text = m.render();
        assert!(!text.contains("aapl-momentum"), "{text}");
        assert!(
            text.contains("ztraded_executions_total{pipeline=\"other\",result=\"failed\"} 1\n")
        );
        assert!(
            text.contains(
                "ztraded_orders_total{mode=\"live\",pipeline=\"other\",side=\"sell\"} 1\n"
            )
        );
        // The histogram has no pipeline label and keeps its observations.
        assert!(
            text.contains("ztraded_execution_duration_seconds_count 2\n"),
            "{text}"
        );
    }

    #[test]
    fn pipeline_started_creates_zero_series() {
        let m = Metrics::new().unwrap();
        m.pipeline_started("p1");
        let text = m.render();
        for result in ExecutionResult::ALL {
            let line = format!(
                "ztraded_executions_total{{pipeline=\"p1\",result=\"{}\"}} 0\n",
                result.as_str()
            );
            assert!(text.contains(&line), "missing {line:?}");
        }
        assert!(text.contains("ztraded_positions_open{pipeline=\"p1\"} 0\n"));
        // Starting again (a changed pipeline restarts) keeps the counters.
        m.execution_finished("p1", ExecutionResult::Failed, 1.0);
        m.set_positions_open("p1", 3);
        m.pipeline_started("p1");
        assert!(
            m.render()
                .contains("ztraded_positions_open{pipeline=\"p1\"} 3\n")
        );
        assert!(
            m.render()
                .contains("ztraded_executions_total{pipeline=\"p1\",result=\"failed\"} 1\n")
        );
    }

    #[test]
    fn independent_registries() {
        let a = Metrics::new().unwrap();
        let b = Metrics::new().unwrap();
        a.order_rejected("p", "x");
        assert!(a.render().contains("ztraded_order_rejections_total{"));
        assert!(!b.render().contains("ztraded_order_rejections_total{"));
    }
}
