//! The pipeline resource: `pipelines/<name>.yaml` (DESIGN.md §2.1).

use super::common::{
    ClockTime, Duration, Percent, TimeZoneName, Weekday, expr_schema, name_schema,
    optional_expr_schema, optional_name_schema, optional_usd_schema, symbols_schema,
};
use crate::market::Timeframe;
use rust_decimal::Decimal;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;

/// A named trading workflow: a DAG of agent nodes plus its trigger, window, limits, budget
/// and mode. Its name is the file stem.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ztraded pipeline")]
pub struct Pipeline {
    /// What the pipeline does, for people reading the config and the logs.
    #[serde(default)]
    pub description: Option<String>,
    /// `false` keeps the file but stops the pipeline (its positions follow `on_remove`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where orders go: `live` (real money), `paper` (the broker's paper account),
    /// `simulation` (in-process fills) or `validation` (no orders; decisions recorded).
    pub mode: Mode,
    /// The `[brokers.<name>]` entry of ztraded.toml that executes orders. Required for `live`
    /// and `paper`; `simulation` defaults to the embedded simulated broker `sim`; not used in
    /// `validation`.
    #[serde(default)]
    #[schemars(schema_with = "optional_name_schema")]
    pub broker: Option<String>,
    /// The scanner (`scanners/<name>.yaml`) whose tickers this pipeline trades. Exactly one of
    /// `scanner` and `symbols`.
    #[serde(default)]
    #[schemars(schema_with = "optional_name_schema")]
    pub scanner: Option<String>,
    /// A fixed list of ticker symbols to trade. Exactly one of `scanner` and `symbols`.
    #[serde(default)]
    #[schemars(schema_with = "symbols_schema")]
    pub symbols: Option<Vec<String>>,
    /// The risk policy (`risk/<name>.yaml`) every order of this pipeline must pass. Required
    /// when the pipeline has a `risk_manager` node.
    #[serde(default)]
    #[schemars(schema_with = "optional_name_schema")]
    pub risk: Option<String>,
    /// When the pipeline runs: exactly one of `bar_close`, `schedule`, `signal`,
    /// `continuous`, `once`.
    pub trigger: Trigger,
    /// The optional trading window: outside it no execution starts.
    #[serde(default)]
    pub window: Option<Window>,
    /// Optional per-pipeline limits; reaching one halts the pipeline until the next day.
    #[serde(default)]
    pub limits: Option<PipelineLimits>,
    /// Optional LLM and agent cost budget, in USD.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// What happens to open positions when the pipeline is removed or disabled.
    #[serde(default)]
    pub on_remove: OnRemove,
    /// How many of the pipeline's symbols one trigger may execute at the same time.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_concurrency: u32,
    /// The agent DAG. A node's `needs` defaults to the node before it.
    #[schemars(length(min = 1, max = 64))]
    pub nodes: Vec<Node>,
}

fn yes() -> bool {
    true
}

fn default_concurrency() -> u32 {
    8
}

/// Where a pipeline's orders go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Real orders on a live broker account.
    Live,
    /// Real orders on the broker's paper-trading account.
    Paper,
    /// Orders filled in-process by the simulated broker.
    Simulation,
    /// No orders; every decision is recorded as what would have been done.
    Validation,
}

impl Mode {
    /// The spelling used in configs, logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Paper => "paper",
            Mode::Simulation => "simulation",
            Mode::Validation => "validation",
        }
    }
}

/// What a removed or disabled pipeline does with its open positions.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OnRemove {
    /// No new entries; keep managing exits (stops, targets, exit rules) until flat.
    #[default]
    Drain,
    /// Close every position of the pipeline at market now.
    Close,
}

/// When a pipeline runs. Exactly one field must be set.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Run each time a bar of this timeframe closes (for each symbol).
    #[serde(default)]
    pub bar_close: Option<BarCloseTrigger>,
    /// Run on a clock schedule.
    #[serde(default)]
    pub schedule: Option<ScheduleTrigger>,
    /// Run for a ticker when a matching market signal arrives.
    #[serde(default)]
    pub signal: Option<SignalTrigger>,
    /// Run again as soon as the previous execution ends, after a cooldown.
    #[serde(default)]
    pub continuous: Option<ContinuousTrigger>,
    /// Run once when the pipeline starts.
    #[serde(default)]
    pub once: Option<OnceTrigger>,
}

impl Trigger {
    /// The names of the trigger kinds that are set, in declaration order.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.bar_close.is_some() {
            kinds.push("bar_close");
        }
        if self.schedule.is_some() {
            kinds.push("schedule");
        }
        if self.signal.is_some() {
            kinds.push("signal");
        }
        if self.continuous.is_some() {
            kinds.push("continuous");
        }
        if self.once.is_some() {
            kinds.push("once");
        }
        kinds
    }
}

/// Run each time a bar of `timeframe` closes.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BarCloseTrigger {
    /// The bar period whose close starts an execution.
    pub timeframe: Timeframe,
}

/// Run on a clock schedule: exactly one of `cron`, `interval`, `market_open`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTrigger {
    /// A 6-field cron expression with seconds: `sec min hour day-of-month month day-of-week`
    /// (`0 35 9 * * Mon-Fri`), evaluated in `timezone`.
    #[serde(default)]
    pub cron: Option<String>,
    /// A fixed interval between runs (`5m`), counted from the pipeline's start.
    #[serde(default)]
    pub interval: Option<Duration>,
    /// Run once per US trading day, `offset` after the regular session opens (09:30
    /// America/New_York), skipping NYSE holidays.
    #[serde(default)]
    pub market_open: Option<MarketOpen>,
    /// Time zone of the cron expression.
    #[serde(default)]
    pub timezone: TimeZoneName,
}

impl ScheduleTrigger {
    /// The names of the schedule kinds that are set.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.cron.is_some() {
            kinds.push("cron");
        }
        if self.interval.is_some() {
            kinds.push("interval");
        }
        if self.market_open.is_some() {
            kinds.push("market_open");
        }
        kinds
    }
}

/// A run relative to the market open.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketOpen {
    /// How long after the open to run (`0s` runs at the open).
    #[serde(default)]
    pub offset: Duration,
}

/// Run for a ticker when a market signal matching a subscription arrives.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalTrigger {
    /// The signal types this pipeline reacts to.
    #[schemars(length(min = 1))]
    pub subscriptions: Vec<Subscription>,
}

/// One signal type a pipeline reacts to.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// The signal type (`golden_cross`, `rsi_oversold`, or any type published on the bus).
    #[serde(rename = "type")]
    #[schemars(regex(pattern = "^[a-z][a-z0-9_]{0,63}$"))]
    pub signal_type: String,
    /// The lowest signal confidence (0–100) that starts an execution.
    #[serde(default)]
    pub min_confidence: Percent,
}

/// Run again after each execution ends.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContinuousTrigger {
    /// Pause between the end of one execution and the start of the next.
    pub cooldown: Duration,
    /// What to do while the pipeline holds a position in the symbol.
    #[serde(default)]
    pub while_position_open: WhilePositionOpen,
}

/// Behaviour of a continuous trigger while a position is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WhilePositionOpen {
    /// Keep running (exit rules and pyramiding get their chance).
    #[default]
    Run,
    /// Do not run for a symbol while its position is open; exits are still managed.
    Skip,
}

/// Run once when the pipeline starts.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnceTrigger {
    /// Wait this long after the start before running.
    #[serde(default)]
    pub delay: Duration,
}

/// The hours in which executions may start.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// First time of day at which an execution may start.
    pub start: ClockTime,
    /// Time of day after which no execution starts (and `flatten_at_end` closes positions).
    pub end: ClockTime,
    /// Time zone of `start` and `end`.
    #[serde(default)]
    pub timezone: TimeZoneName,
    /// Days of the week on which the window opens.
    #[serde(default = "Weekday::weekdays")]
    #[schemars(length(min = 1, max = 7))]
    pub days: Vec<Weekday>,
    /// Close this pipeline's positions at market when the window ends.
    #[serde(default)]
    pub flatten_at_end: bool,
}

/// Per-pipeline limits; reaching one halts the pipeline's entries until the next day.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineLimits {
    /// Most entries (new positions) per day.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_trades_per_day: Option<u32>,
    /// Most executions per day.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_executions_per_day: Option<u32>,
    /// Realized plus unrealized loss of the day, in USD, at which the pipeline halts.
    #[serde(default)]
    #[schemars(schema_with = "optional_usd_schema")]
    pub daily_loss_usd: Option<Decimal>,
    /// Drawdown of the pipeline's equity from its peak, in percent, at which it halts.
    #[serde(default)]
    pub max_drawdown_pct: Option<Percent>,
}

/// Cost budget of LLM calls and agent runtime, in USD.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Most spend per calendar day (UTC), in USD; an execution that would exceed it is skipped.
    #[serde(default)]
    #[schemars(schema_with = "optional_usd_schema")]
    pub daily_usd: Option<Decimal>,
    /// Most spend per calendar month (UTC), in USD.
    #[serde(default)]
    #[schemars(schema_with = "optional_usd_schema")]
    pub monthly_usd: Option<Decimal>,
}

/// One node of the pipeline DAG.
#[derive(Clone, Debug)]
pub struct Node {
    /// Unique id within the pipeline (`^[a-z][a-z0-9_-]{0,62}$`).
    pub id: String,
    /// Ids of the nodes whose output this node needs; `None` = the previous node.
    pub needs: Option<Vec<String>>,
    /// The agent type and its configuration.
    pub agent: AgentConfig,
}

impl Node {
    /// The agent type.
    pub fn kind(&self) -> AgentKind {
        self.agent.kind()
    }
}

/// The agent types (the seeds' names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    /// Gate: continue only inside a time-of-day range.
    TimeTrigger,
    /// Gate: continue only when a price condition holds.
    PriceTrigger,
    /// Gate: continue only when an indicator condition holds.
    TechnicalTrigger,
    /// Runs a filter scanner and keeps the top N symbols.
    StockPicker,
    /// Bars and indicators on one or more timeframes.
    MarketData,
    /// Market direction: bullish, bearish or neutral with a confidence.
    Bias,
    /// Trade plan: action, entry, stop, targets.
    Strategy,
    /// Applies the risk policy: approve, adjust or reject.
    RiskManager,
    /// Places risk-approved orders and manages exits.
    TradeManager,
    /// Records the execution with every node's output and reasoning.
    Reporting,
}

impl AgentKind {
    /// Every agent type.
    pub const ALL: [AgentKind; 10] = [
        AgentKind::TimeTrigger,
        AgentKind::PriceTrigger,
        AgentKind::TechnicalTrigger,
        AgentKind::StockPicker,
        AgentKind::MarketData,
        AgentKind::Bias,
        AgentKind::Strategy,
        AgentKind::RiskManager,
        AgentKind::TradeManager,
        AgentKind::Reporting,
    ];

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::TimeTrigger => "time_trigger",
            AgentKind::PriceTrigger => "price_trigger",
            AgentKind::TechnicalTrigger => "technical_trigger",
            AgentKind::StockPicker => "stock_picker",
            AgentKind::MarketData => "market_data",
            AgentKind::Bias => "bias",
            AgentKind::Strategy => "strategy",
            AgentKind::RiskManager => "risk_manager",
            AgentKind::TradeManager => "trade_manager",
            AgentKind::Reporting => "reporting",
        }
    }

    /// Whether a node of this type must have a `config`.
    pub fn config_required(self) -> bool {
        matches!(
            self,
            AgentKind::PriceTrigger
                | AgentKind::TechnicalTrigger
                | AgentKind::StockPicker
                | AgentKind::MarketData
                | AgentKind::Bias
                | AgentKind::Strategy
        )
    }

    /// Whether the agent is a gate (a false condition ends the execution as `skipped`).
    pub fn is_gate(self) -> bool {
        matches!(
            self,
            AgentKind::TimeTrigger | AgentKind::PriceTrigger | AgentKind::TechnicalTrigger
        )
    }

    fn config_schema(self, generator: &mut SchemaGenerator) -> Schema {
        match self {
            AgentKind::TimeTrigger => generator.subschema_for::<TimeTriggerConfig>(),
            AgentKind::PriceTrigger => generator.subschema_for::<PriceTriggerConfig>(),
            AgentKind::TechnicalTrigger => generator.subschema_for::<TechnicalTriggerConfig>(),
            AgentKind::StockPicker => generator.subschema_for::<StockPickerConfig>(),
            AgentKind::MarketData => generator.subschema_for::<MarketDataConfig>(),
            AgentKind::Bias => generator.subschema_for::<BiasConfig>(),
            AgentKind::Strategy => generator.subschema_for::<StrategyConfig>(),
            AgentKind::RiskManager => generator.subschema_for::<RiskManagerConfig>(),
            AgentKind::TradeManager => generator.subschema_for::<TradeManagerConfig>(),
            AgentKind::Reporting => generator.subschema_for::<ReportingConfig>(),
        }
    }
}

/// A node's agent type with its parsed `config`.
#[derive(Clone, Debug)]
pub enum AgentConfig {
    /// `time_trigger`.
    TimeTrigger(TimeTriggerConfig),
    /// `price_trigger`.
    PriceTrigger(PriceTriggerConfig),
    /// `technical_trigger`.
    TechnicalTrigger(TechnicalTriggerConfig),
    /// `stock_picker`.
    StockPicker(StockPickerConfig),
    /// `market_data`.
    MarketData(MarketDataConfig),
    /// `bias`.
    Bias(BiasConfig),
    /// `strategy`.
    Strategy(StrategyConfig),
    /// `risk_manager`.
    RiskManager(RiskManagerConfig),
    /// `trade_manager`.
    TradeManager(TradeManagerConfig),
    /// `reporting`.
    Reporting(ReportingConfig),
}

impl AgentConfig {
    /// The agent type.
    pub fn kind(&self) -> AgentKind {
        match self {
            AgentConfig::TimeTrigger(_) => AgentKind::TimeTrigger,
            AgentConfig::PriceTrigger(_) => AgentKind::PriceTrigger,
            AgentConfig::TechnicalTrigger(_) => AgentKind::TechnicalTrigger,
            AgentConfig::StockPicker(_) => AgentKind::StockPicker,
            AgentConfig::MarketData(_) => AgentKind::MarketData,
            AgentConfig::Bias(_) => AgentKind::Bias,
            AgentConfig::Strategy(_) => AgentKind::Strategy,
            AgentConfig::RiskManager(_) => AgentKind::RiskManager,
            AgentConfig::TradeManager(_) => AgentKind::TradeManager,
            AgentConfig::Reporting(_) => AgentKind::Reporting,
        }
    }
}

/// Pattern of a node id.
pub const NODE_ID_PATTERN: &str = "^[a-z][a-z0-9_-]{0,62}$";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: String,
    agent: AgentKind,
    #[serde(default)]
    needs: Option<Vec<String>>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = RawNode::deserialize(d)?;
        if raw.config.is_none() && raw.agent.config_required() {
            return Err(D::Error::custom(format!(
                "a {} node needs a `config`",
                raw.agent.as_str()
            )));
        }
        let config = raw
            .config
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        fn parse<T: serde::de::DeserializeOwned, E: Error>(v: serde_json::Value) -> Result<T, E> {
            serde_json::from_value(v).map_err(E::custom)
        }
        let agent = match raw.agent {
            AgentKind::TimeTrigger => AgentConfig::TimeTrigger(parse(config)?),
            AgentKind::PriceTrigger => AgentConfig::PriceTrigger(parse(config)?),
            AgentKind::TechnicalTrigger => AgentConfig::TechnicalTrigger(parse(config)?),
            AgentKind::StockPicker => AgentConfig::StockPicker(parse(config)?),
            AgentKind::MarketData => AgentConfig::MarketData(parse(config)?),
            AgentKind::Bias => AgentConfig::Bias(parse(config)?),
            AgentKind::Strategy => AgentConfig::Strategy(parse(config)?),
            AgentKind::RiskManager => AgentConfig::RiskManager(parse(config)?),
            AgentKind::TradeManager => AgentConfig::TradeManager(parse(config)?),
            AgentKind::Reporting => AgentConfig::Reporting(parse(config)?),
        };
        Ok(Node {
            id: raw.id,
            needs: raw.needs,
            agent,
        })
    }
}

impl JsonSchema for Node {
    fn schema_name() -> Cow<'static, str> {
        "Node".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let agent = generator.subschema_for::<AgentKind>();
        let mut branches = Vec::new();
        for kind in AgentKind::ALL {
            let config = kind.config_schema(generator);
            let mut then = json_schema!({ "properties": { "config": config } });
            if kind.config_required() {
                then.insert("required".into(), serde_json::json!(["config"]));
            }
            branches.push(serde_json::json!({
                "if": { "properties": { "agent": { "const": kind.as_str() } }, "required": ["agent"] },
                "then": then
            }));
        }
        json_schema!({
            "type": "object",
            "description": "One node of the pipeline DAG: an agent type, its configuration and the nodes it needs.",
            "required": ["id", "agent"],
            "additionalProperties": false,
            "properties": {
                "id": {
                    "type": "string",
                    "pattern": NODE_ID_PATTERN,
                    "description": "Unique id of the node within the pipeline."
                },
                "agent": agent,
                "needs": {
                    "type": "array",
                    "items": { "type": "string", "pattern": NODE_ID_PATTERN },
                    "uniqueItems": true,
                    "description": "Ids of the nodes whose output this node needs. Defaults to the previous node; [] makes it a root."
                },
                "config": {
                    "type": "object",
                    "description": "The agent's configuration; its fields depend on `agent`."
                }
            },
            "allOf": branches
        })
    }
}

/// Gate on the time of day: continue only between `after` and `before` on `days`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeTriggerConfig {
    /// Earliest time of day at which the execution continues.
    #[serde(default)]
    pub after: Option<ClockTime>,
    /// Time of day from which the execution stops here.
    #[serde(default)]
    pub before: Option<ClockTime>,
    /// Time zone of `after` and `before`.
    #[serde(default)]
    pub timezone: TimeZoneName,
    /// Days on which the gate opens (default: every day).
    #[serde(default)]
    #[schemars(length(min = 1, max = 7))]
    pub days: Option<Vec<Weekday>>,
}

/// Gate on a price condition.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceTriggerConfig {
    /// Condition (CEL) over the latest bar, e.g. `close > 150`.
    #[schemars(schema_with = "expr_schema")]
    pub when: String,
    /// Timeframe of the bar the condition reads (default: the first of the upstream
    /// `market_data`).
    #[serde(default)]
    pub timeframe: Option<Timeframe>,
}

/// Gate on an indicator condition.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TechnicalTriggerConfig {
    /// Condition (CEL) over indicators, e.g. `rsi_14 < 30 && macd > macd_signal`.
    #[schemars(schema_with = "expr_schema")]
    pub when: String,
    /// Timeframe whose indicators the condition reads (default: the first of the upstream
    /// `market_data`).
    #[serde(default)]
    pub timeframe: Option<Timeframe>,
}

/// Runs a filter scanner and keeps the top N symbols for the rest of the execution.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StockPickerConfig {
    /// The scanner (`scanners/<name>.yaml`) to run.
    #[schemars(schema_with = "name_schema")]
    pub scanner: String,
    /// How many of the best-ranked symbols to keep.
    #[schemars(range(min = 1, max = 1000))]
    pub top_n: u32,
}

/// Bars and indicators for the symbol on one or more timeframes.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketDataConfig {
    /// Timeframes to load; finer source bars are resampled to coarser ones.
    #[schemars(length(min = 1, max = 8))]
    pub timeframes: Vec<Timeframe>,
    /// Indicators computed on every timeframe (`sma_50`, `rsi_14`, `macd_12_26_9`,
    /// `bbands_20_2`, `atr_14`, `supertrend_10_3`, `volume_sma_20`, `vwap`).
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub indicators: Vec<String>,
    /// Bars of history to load per timeframe.
    #[serde(default = "default_lookback")]
    #[schemars(range(min = 1, max = 100_000))]
    pub lookback: u32,
}

fn default_lookback() -> u32 {
    300
}

/// Market direction: rules or an LLM.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BiasConfig {
    /// Bias from rule expressions.
    Rules(BiasRules),
    /// Bias from an LLM.
    Llm(BiasLlm),
}

/// Rule-based bias: bullish when `bullish` holds, bearish when `bearish` holds, else neutral.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BiasRules {
    /// Condition (CEL) for a bullish bias.
    #[schemars(schema_with = "expr_schema")]
    pub bullish: String,
    /// Condition (CEL) for a bearish bias (default: never).
    #[serde(default)]
    #[schemars(schema_with = "optional_expr_schema")]
    pub bearish: Option<String>,
    /// Timeframe the conditions read (default: the first of the upstream `market_data`).
    #[serde(default)]
    pub timeframe: Option<Timeframe>,
    /// Confidence (0–100) reported with a bullish or bearish bias.
    #[serde(default = "hundred")]
    pub confidence: Percent,
}

fn hundred() -> Percent {
    Percent(Decimal::ONE_HUNDRED)
}

/// LLM-based bias.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BiasLlm {
    /// The `[llm.<name>]` provider of ztraded.toml (default `default`).
    #[serde(default = "default_provider")]
    #[schemars(schema_with = "name_schema")]
    pub provider: String,
    /// Model name (default: the provider's).
    #[serde(default)]
    pub model: Option<String>,
    /// Timeframes whose bars and indicators go into the prompt (default: all upstream).
    #[serde(default)]
    pub timeframes: Vec<Timeframe>,
    /// A bias with a lower confidence (0–100) counts as neutral.
    #[serde(default = "default_confidence_threshold")]
    pub confidence_threshold: Percent,
    /// Sampling temperature, 0–2.
    #[serde(default = "default_temperature")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: f64,
    /// Extra instructions placed in the prompt template's `{{instructions}}`.
    #[serde(default)]
    pub prompt: Option<String>,
    /// A prompt template of the config directory used instead of the built-in one (a path
    /// relative to the directory, e.g. `prompts/my-bias.md`, UTF-8, at most 64 KiB): the
    /// system message, a line `---`, the user message, with the built-in template's
    /// `{{placeholders}}`. Its text is part of the pipeline's revision: editing it reloads
    /// the pipeline.
    #[serde(default)]
    pub prompt_file: Option<String>,
    /// The text of `prompt_file`, read when the directory is loaded (not a file field).
    #[serde(skip)]
    #[schemars(skip)]
    pub prompt_text: Option<std::sync::Arc<str>>,
    /// Also send a candlestick chart (PNG, with the node's price-scale indicators) of each
    /// timeframe the node reads, as image input for vision models.
    #[serde(default)]
    pub chart: bool,
}

fn default_provider() -> String {
    "default".to_string()
}

fn default_confidence_threshold() -> Percent {
    Percent(Decimal::from(60))
}

fn default_temperature() -> f64 {
    0.2
}

/// The trade plan: rules or an LLM.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StrategyConfig {
    /// Entries, exits and levels from rule expressions.
    Rules(StrategyRules),
    /// Trade plan from an LLM.
    Llm(StrategyLlm),
}

/// Rule-based strategy. Conditions are CEL over the indicators of `timeframe`; levels are CEL
/// numbers evaluated at the signal bar.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyRules {
    /// Timeframe of the bars and indicators the rules read.
    pub timeframe: Timeframe,
    /// Condition to open a long position.
    #[serde(default)]
    #[schemars(schema_with = "optional_expr_schema")]
    pub long_entry: Option<String>,
    /// Condition to close a long position (exits also come from stop and targets).
    #[serde(default)]
    #[schemars(schema_with = "optional_expr_schema")]
    pub long_exit: Option<String>,
    /// Stop-loss price of a long entry, e.g. `close - 2.0 * atr_14`.
    #[serde(default)]
    #[schemars(schema_with = "optional_expr_schema")]
    pub stop_loss: Option<String>,
    /// First target of a long entry (partial exit).
    #[serde(default)]
    #[schemars(schema_with = "optional_expr_schema")]
    pub target_1: Option<String>,
    /// Second target of a long entry (closes the rest).
    #[serde(default)]
    #[schemars(schema_with = "optional_expr_schema")]
    pub target_2: Option<String>,
    /// Condition to open a short position.
    #[serde(default)]
    #[schemars(schema_with = "optional_expr_schema")]
    pub short_entry: Option<String>,
    /// Condition to close a short position.
    #[serde(default)]
    #[schemars(schema_with = "optional_expr_schema")]
    pub short_exit: Option<String>,
    /// Stop-loss price of a short entry (above the entry).
    #[serde(default)]
    #[schemars(schema_with = "optional_expr_schema")]
    pub short_stop_loss: Option<String>,
    /// First target of a short entry (below the entry).
    #[serde(default)]
    #[schemars(schema_with = "optional_expr_schema")]
    pub short_target_1: Option<String>,
    /// Second target of a short entry.
    #[serde(default)]
    #[schemars(schema_with = "optional_expr_schema")]
    pub short_target_2: Option<String>,
    /// Expected entry price, for sizing and reward/risk (default `close`; market orders fill
    /// at the next bar's open).
    #[serde(default)]
    #[schemars(schema_with = "optional_expr_schema")]
    pub entry_price: Option<String>,
    /// Conviction (0–100) reported with a signal.
    #[serde(default = "hundred")]
    pub conviction: Percent,
    /// Take longs only when the upstream bias is not bearish and shorts only when it is not
    /// bullish.
    #[serde(default = "yes")]
    pub follow_bias: bool,
}

/// LLM-based strategy.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyLlm {
    /// The `[llm.<name>]` provider of ztraded.toml (default `default`).
    #[serde(default = "default_provider")]
    #[schemars(schema_with = "name_schema")]
    pub provider: String,
    /// Model name (default: the provider's).
    #[serde(default)]
    pub model: Option<String>,
    /// Timeframe of the trade plan.
    pub timeframe: Timeframe,
    /// Lowest reward/risk ratio the plan may propose.
    #[serde(default = "default_reward_risk")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub risk_reward_min: f64,
    /// Sampling temperature, 0–2.
    #[serde(default = "default_temperature")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: f64,
    /// Extra instructions placed in the prompt template's `{{instructions}}`.
    #[serde(default)]
    pub prompt: Option<String>,
    /// A prompt template of the config directory used instead of the built-in one (a path
    /// relative to the directory, e.g. `prompts/my-bias.md`, UTF-8, at most 64 KiB): the
    /// system message, a line `---`, the user message, with the built-in template's
    /// `{{placeholders}}`. Its text is part of the pipeline's revision: editing it reloads
    /// the pipeline.
    #[serde(default)]
    pub prompt_file: Option<String>,
    /// The text of `prompt_file`, read when the directory is loaded (not a file field).
    #[serde(skip)]
    #[schemars(skip)]
    pub prompt_text: Option<std::sync::Arc<str>>,
    /// Also send a candlestick chart (PNG, with the node's price-scale indicators) of each
    /// timeframe the node reads, as image input for vision models.
    #[serde(default)]
    pub chart: bool,
}

fn default_reward_risk() -> f64 {
    1.5
}

/// The risk manager applies the pipeline's risk policy; it has no settings of its own.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskManagerConfig {}

/// Order placement and exit management.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TradeManagerConfig {
    /// Percent of the position closed at target 1 (the rest at target 2).
    #[serde(default = "fifty")]
    pub partial_exit_pct: Percent,
    /// Move the stop to the entry price once target 1 is hit.
    #[serde(default = "yes")]
    pub move_stop_to_breakeven: bool,
    /// Allow adding to an open position in the same symbol.
    #[serde(default)]
    pub allow_pyramiding: bool,
}

impl Default for TradeManagerConfig {
    fn default() -> Self {
        TradeManagerConfig {
            partial_exit_pct: fifty(),
            move_stop_to_breakeven: true,
            allow_pyramiding: false,
        }
    }
}

fn fifty() -> Percent {
    Percent(Decimal::from(50))
}

/// The execution record.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportingConfig {
    /// `none`: the structured record only; `llm`: plus a written summary from `provider`.
    #[serde(default)]
    pub summary: Summary,
    /// The `[llm.<name>]` provider for `summary: llm`.
    #[serde(default)]
    #[schemars(schema_with = "optional_name_schema")]
    pub provider: Option<String>,
}

/// Whether the reporting node writes a summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Summary {
    /// No written summary.
    #[default]
    None,
    /// A summary written by an LLM.
    Llm,
}
