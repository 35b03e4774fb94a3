//! What an LLM pipeline costs (seed 002 §9, DESIGN.md §3 `ztraded estimate`): tokens per
//! call of each LLM node, calls and executions per trading day from the trigger, the
//! window and the market calendar, USD per execution, per trading day and per month, and
//! the share of the pipeline's `budget` that uses. A pure function of the pipeline, its
//! settings and its symbols: no I/O, no clock, the same answer every time (`ztraded
//! validate` warns from it, so it must not depend on the day it runs).
//!
//! # Tokens
//!
//! Each LLM node's real prompt template ([`super::prompt`]) is rendered with the variables
//! the client renders it with ([`super::LlmClient`]) and a representative context: the
//! pipeline's first symbol, the last [`PROMPT_BARS`] bars (at most the node's lookback) of
//! every timeframe the node reads, with plausible prices (two decimals) and volumes, and a
//! value for every indicator output the pipeline computes (full `f64` precision, as the
//! feed prints them); a flat position; for a strategy, the upstream bias. The format note
//! of the provider's `structured_output` mode ends the prompt, and in `json_schema` mode
//! the `response_format` with the strict JSON Schema counts as input too.
//!
//! Tokens are counted with the model family's real tokenizer where there is one
//! ([`Tokenizer::for_model`]: `o200k_base` or `cl100k_base`, tiktoken's byte-pair
//! encodings, embedded in the binary and built on first use) plus the chat framing OpenAI
//! documents (3 tokens per message and 3 to prime the reply); any other model is estimated
//! at one token per 4 characters of the messages' JSON ([`super::provider::estimate_tokens`],
//! the rule the client uses when a provider reports no usage) and flagged `estimated`.
//!
//! Output tokens are those of a typical answer of the node's schema (a bias with two
//! sentences of reasoning and four factors, a trade plan with every level and two
//! sentences), at most the provider's `max_tokens`. A `reporting` node with `summary: llm`
//! renders its template with what a representative execution decided (a bullish bias, a
//! buy plan, an approved order) and answers a three-sentence summary. A node with
//! `chart: true` adds [`CHART_TOKENS`] per chart.
//!
//! USD per call is what [`super::provider::Provider::cost`] charges: input × the provider's
//! `input_usd_per_1k_tokens` / 1000 + output × `output_usd_per_1k_tokens` / 1000, with the
//! provider's prices also for a node that names another model.
//!
//! # Executions
//!
//! The trigger is run over a reference week of regular NYSE sessions (Monday 2025-01-13 to
//! Sunday 2025-01-19, 09:30–16:00 America/New_York, no holiday, no daylight-saving change)
//! with the engine's own schedule, window and time-gate code, bar periods aligned in the
//! market data time zone:
//!
//! - `bar_close`: each bar of the timeframe that closes, per symbol: 390 for 1m, 78 for 5m,
//!   26 for 15m, 13 for 30m, 7 for 1h, 2 for 4h a session; a 1d bar closes at the next local
//!   midnight, a 1w bar when its week ends (counted on its last trading day);
//! - `schedule`: every firing of the cron expression, the interval (counted from the
//!   reference Monday 00:00; schedules fire around the clock, only a window restricts
//!   them) or the market open plus its offset;
//! - `continuous`: each closed bar of the strategy's timeframe (else the finest timeframe
//!   read) at least `cooldown` after the previous run; `while_position_open: skip` is
//!   assumed never to skip (the most it can cost);
//! - `signal`: unknown in advance: [`DEFAULT_SIGNALS_PER_DAY`] matching signal per symbol
//!   per trading day unless [`Options::signals_per_day`] says otherwise;
//! - `once`: one execution per symbol when the pipeline starts, counted once.
//!
//! A firing outside the `window` starts nothing; `limits.max_executions_per_day` caps the
//! executions of a day; each firing runs the pipeline for each symbol (a stock picker's
//! `top_n` of them). A `time_trigger` upstream of an LLM node is applied to that node's
//! calls; `price_trigger` and `technical_trigger` gates depend on prices and are assumed to
//! pass, as is every node before an LLM node (the most the pipeline can cost).
//!
//! A month is [`TRADING_DAYS_PER_MONTH`] trading days (252 a year) and
//! [`WEEKEND_DAYS_PER_MONTH`] weekend days; NYSE holidays and half days are not counted.
//! The daily budget is compared with the costliest day of the reference week, the monthly
//! budget with the month.

use super::answer::{BiasAnswer, StrategyAnswer, strict_schema};
use super::prompt;
use super::provider::estimate_tokens;
use crate::agents::PromptContext;
use crate::config::pipeline::{
    AgentConfig, BiasConfig, Pipeline, ReportingConfig, StrategyConfig, Summary, Trigger,
    WhilePositionOpen,
};
use crate::config::settings::{LlmSettings, StructuredOutput};
use crate::domain::{Bias, BiasSignal};
use crate::engine::layout::Layout;
use crate::engine::schedule::{Schedule, TimeGate, TradingWindow, trading_day};
use crate::market::calendar::{Session, UsEquityCalendar};
use crate::market::{IndicatorSpec, Timeframe};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::OnceLock;

pub use super::prompt::PROMPT_BARS;

/// Trading days in a month: 252 a year over 12 months (seed 002 §9 uses 21 too).
pub const TRADING_DAYS_PER_MONTH: Decimal = Decimal::from_parts(21, 0, 0, false, 0);

/// Weekend days in a month: 365.25 / 12 × 2 / 7 ≈ 8.7.
pub const WEEKEND_DAYS_PER_MONTH: Decimal = Decimal::from_parts(87, 0, 0, false, 1);

/// Matching signals per symbol per trading day assumed for a `signal` trigger.
pub const DEFAULT_SIGNALS_PER_DAY: Decimal = Decimal::ONE;

/// Most schedule firings counted in the reference week (an interval of a second fires
/// 604,800 times a week; anything denser is counted up to here).
const MAX_FIRINGS: usize = 1_000_000;

/// The reference week's Monday (see the module documentation).
fn reference_monday() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 13).unwrap_or_default()
}

// ----- tokenizers -----

/// How a model's tokens are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tokenizer {
    /// tiktoken's `o200k_base`: GPT-4o, GPT-4.1, GPT-5, o1, o3, o4, gpt-oss.
    O200kBase,
    /// tiktoken's `cl100k_base`: GPT-4 and GPT-3.5.
    Cl100kBase,
    /// No known tokenizer: one token per 4 characters, rounded up (an estimate).
    #[serde(rename = "chars/4")]
    CharsPer4,
    /// An upper bound: one token per byte (no byte-pair encoding produces more tokens than
    /// bytes). `ztraded validate` tries it first, so that a pipeline well within its budget
    /// never pays for building a tokenizer.
    Bytes,
}

impl Tokenizer {
    /// The tokenizer of `model`. A provider prefix (`openai/gpt-4o`) is ignored; the match
    /// is on the name's start, case-insensitive: `gpt-4o`, `chatgpt-4o`, `gpt-4.1`,
    /// `gpt-4.5`, `gpt-5`, `o1`, `o3`, `o4`, `gpt-oss` → `o200k_base`; other `gpt-4`,
    /// `gpt-3.5` → `cl100k_base`; anything else → 4 characters a token.
    pub fn for_model(model: &str) -> Tokenizer {
        let name = model
            .rsplit('/')
            .next()
            .unwrap_or(model)
            .to_ascii_lowercase();
        let starts = |prefixes: &[&str]| prefixes.iter().any(|p| name.starts_with(p));
        if starts(&[
            "gpt-4o",
            "chatgpt-4o",
            "gpt-4.1",
            "gpt-4.5",
            "gpt-5",
            "o1",
            "o3",
            "o4",
            "gpt-oss",
        ]) {
            Tokenizer::O200kBase
        } else if starts(&["gpt-4", "gpt-3.5", "gpt-35"]) {
            Tokenizer::Cl100kBase
        } else {
            Tokenizer::CharsPer4
        }
    }

    /// `o200k_base`, `cl100k_base`, `chars/4` or `bytes`.
    pub fn name(self) -> &'static str {
        match self {
            Tokenizer::O200kBase => "o200k_base",
            Tokenizer::Cl100kBase => "cl100k_base",
            Tokenizer::CharsPer4 => "chars/4",
            Tokenizer::Bytes => "bytes",
        }
    }

    /// Whether counts are the model's real token counts (a byte-pair encoding that
    /// could be built).
    pub fn is_exact(self) -> bool {
        self.bpe().is_some()
    }

    fn bpe(self) -> Option<&'static tiktoken_rs::CoreBPE> {
        static O200K: OnceLock<Option<tiktoken_rs::CoreBPE>> = OnceLock::new();
        static CL100K: OnceLock<Option<tiktoken_rs::CoreBPE>> = OnceLock::new();
        match self {
            Tokenizer::O200kBase => O200K
                .get_or_init(|| tiktoken_rs::o200k_base().ok())
                .as_ref(),
            Tokenizer::Cl100kBase => CL100K
                .get_or_init(|| tiktoken_rs::cl100k_base().ok())
                .as_ref(),
            Tokenizer::CharsPer4 | Tokenizer::Bytes => None,
        }
    }

    /// Tokens of `text` (special-token markers in it count as text).
    pub fn count(self, text: &str) -> u64 {
        match (self, self.bpe()) {
            (Tokenizer::Bytes, _) => text.len() as u64,
            (_, Some(bpe)) => bpe.encode_ordinary(text).len() as u64,
            (_, None) => estimate_tokens(text),
        }
    }

    /// Input tokens of the messages (`(role, content)`) of a chat request. With a real
    /// tokenizer: the contents, the roles, 3 tokens per message and 3 to prime the reply
    /// (OpenAI's documented framing); otherwise 4 characters a token of the messages' JSON.
    /// A `response_format` counts on top.
    pub fn count_request(self, messages: &[(&str, &str)]) -> u64 {
        match self {
            Tokenizer::CharsPer4 => {
                let text: String = messages
                    .iter()
                    .map(|(role, content)| json!({ "role": role, "content": content }).to_string())
                    .collect();
                estimate_tokens(&text)
            }
            _ => {
                let framing: u64 = messages
                    .iter()
                    .map(|(role, content)| 3 + self.count(role) + self.count(content))
                    .sum();
                framing + 3
            }
        }
    }
}

// ----- input and output -----

/// Choices that are not in the pipeline file.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Matching signals per symbol per trading day for a `signal` trigger (default
    /// [`DEFAULT_SIGNALS_PER_DAY`]).
    pub signals_per_day: Option<Decimal>,
    /// Count one token per byte ([`Tokenizer::Bytes`]): a cheap upper bound of the cost.
    pub upper_bound: bool,
}

/// What an estimate is made from.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The pipeline's name (file stem).
    pub name: &'a str,
    /// The pipeline.
    pub pipeline: &'a Pipeline,
    /// The `[llm.<name>]` providers of the settings.
    pub llm: &'a BTreeMap<String, LlmSettings>,
    /// The time zone bar periods are aligned in (`market_data.timezone`).
    pub data_timezone: Tz,
    /// The symbols the pipeline trades (its `symbols`, its scanner's tickers or universe).
    pub symbols: &'a [String],
    /// Choices that are not in the file.
    pub options: Options,
}

/// Why there is no estimate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EstimateError {
    /// An LLM node names a provider the settings do not define.
    #[error("node {node}: no [llm.{provider}] provider in the settings")]
    UnknownProvider {
        /// Node id.
        node: String,
        /// The provider it names.
        provider: String,
    },
    /// A reporting node with `summary: llm` names no provider.
    #[error("node {0}: summary: llm needs `provider`")]
    NoProvider(String),
    /// The trigger, window or a time gate cannot be built (validation says where).
    #[error("{0}")]
    Invalid(String),
}

/// The estimate of one pipeline. USD amounts are exact decimals (serialized as strings,
/// like every amount ztraded prints in JSON).
#[derive(Clone, Debug, Serialize)]
pub struct Estimate {
    /// Pipeline name.
    pub pipeline: String,
    /// Whether the pipeline is enabled (a disabled one runs nothing).
    pub enabled: bool,
    /// Its LLM nodes, in the order written (empty: the pipeline asks no LLM, costs 0).
    pub llm_nodes: Vec<NodeEstimate>,
    /// How often it runs.
    pub executions: Executions,
    /// What it costs, USD.
    pub cost_usd: CostUsd,
    /// Its budget and the share the estimate uses (`None` without a `budget`).
    pub budget: Option<BudgetUse>,
    /// What the estimate assumes, in words.
    pub assumptions: Vec<String>,
}

/// One LLM node.
#[derive(Clone, Debug, Serialize)]
pub struct NodeEstimate {
    /// Node id.
    pub node: String,
    /// Agent type: `bias`, `strategy` or `reporting`.
    pub agent: &'static str,
    /// The `[llm.<name>]` provider.
    pub provider: String,
    /// The model called (the node's `model`, else the provider's).
    pub model: String,
    /// The prompt template and its version (`bias.v1`, or a prompt file and its hash).
    pub template: Option<String>,
    /// How tokens were counted.
    pub tokenizer: Tokenizer,
    /// Whether the token counts are estimates (no real tokenizer for the model).
    pub estimated: bool,
    /// Prompt tokens of one call (messages, framing and `response_format`).
    pub input_tokens: u64,
    /// Completion tokens of one call: a typical answer, at most `max_tokens`.
    pub output_tokens: u64,
    /// USD of one call at the provider's prices.
    pub usd_per_call: Decimal,
    /// Calls per trading day (all symbols), on average over the reference week.
    pub calls_per_trading_day: Decimal,
    /// USD per trading day, on average: `usd_per_call × calls_per_trading_day`.
    pub usd_per_trading_day: Decimal,
}

/// How often the pipeline runs (executions started, all symbols).
#[derive(Clone, Debug, Serialize)]
pub struct Executions {
    /// The trigger, in words (`schedule market_open +15m`).
    pub trigger: String,
    /// Whether the counts follow from the configuration (`false` for a `signal` trigger:
    /// they rest on the assumed signals per day).
    pub known: bool,
    /// Symbols one firing executes (the symbols, or a stock picker's `top_n` of them).
    pub symbols: usize,
    /// Executions per trading day, on average over the reference week's five sessions.
    pub per_trading_day: Decimal,
    /// Executions per weekend day, on average (schedules that fire on weekends).
    pub per_weekend_day: Decimal,
    /// Executions on the reference week's busiest day.
    pub peak_day: Decimal,
    /// Executions that happen once (a `once` trigger), not per day.
    pub one_off: Decimal,
    /// Trading days counted in a month.
    pub trading_days_per_month: Decimal,
    /// Weekend days counted in a month.
    pub weekend_days_per_month: Decimal,
    /// Executions per month: `per_trading_day × trading_days_per_month + per_weekend_day ×
    /// weekend_days_per_month + one_off`.
    pub per_month: Decimal,
}

/// What the pipeline costs, USD.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CostUsd {
    /// One execution that calls every LLM node once.
    pub per_execution: Decimal,
    /// A trading day, on average over the reference week.
    pub per_trading_day: Decimal,
    /// A weekend day, on average.
    pub per_weekend_day: Decimal,
    /// The reference week's costliest day (what the daily budget is compared with).
    pub peak_day: Decimal,
    /// A month: `per_trading_day × 21 + per_weekend_day × 8.7` plus a `once` trigger's
    /// executions.
    pub per_month: Decimal,
}

/// The pipeline's budget against the estimate.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetUse {
    /// `budget.daily_usd`.
    pub daily_usd: Option<Decimal>,
    /// `budget.monthly_usd`.
    pub monthly_usd: Option<Decimal>,
    /// The costliest day's share of the daily budget, percent (two decimals).
    pub daily_pct: Option<Decimal>,
    /// The month's share of the monthly budget, percent (two decimals).
    pub monthly_pct: Option<Decimal>,
    /// The costliest day costs more than `daily_usd`.
    pub over_daily: bool,
    /// The month costs more than `monthly_usd`.
    pub over_monthly: bool,
}

impl BudgetUse {
    /// Whether the estimate exceeds the daily or the monthly budget.
    pub fn over(&self) -> bool {
        self.over_daily || self.over_monthly
    }
}

impl Estimate {
    /// Whether the estimate exceeds the pipeline's budget.
    pub fn over_budget(&self) -> bool {
        self.budget.as_ref().is_some_and(BudgetUse::over)
    }
}

/// Whether `pipeline` has an LLM node (an LLM bias or strategy, or a reporting node with
/// `summary: llm`).
pub fn has_llm_nodes(pipeline: &Pipeline) -> bool {
    pipeline.nodes.iter().any(|n| llm_kind(&n.agent).is_some())
}

/// The LLM agent of a node's configuration.
fn llm_kind(agent: &AgentConfig) -> Option<&'static str> {
    match agent {
        AgentConfig::Bias(BiasConfig::Llm(_)) => Some("bias"),
        AgentConfig::Strategy(StrategyConfig::Llm(_)) => Some("strategy"),
        AgentConfig::Reporting(ReportingConfig {
            summary: Summary::Llm,
            ..
        }) => Some("reporting"),
        _ => None,
    }
}

// ----- the estimate -----

/// Estimates what `input`'s pipeline costs (see the module documentation).
///
/// # Errors
/// [`EstimateError`]: an LLM node whose provider is not defined, a trigger, window or time
/// gate that does not build (all of them validation errors too).
pub fn estimate(input: &Input<'_>) -> Result<Estimate, EstimateError> {
    let p = input.pipeline;
    let mut assumptions = Vec::new();
    let layout = layout(p);
    let symbol = input
        .symbols
        .first()
        .cloned()
        .unwrap_or_else(|| "SPY".to_string());
    let context = PromptContext {
        pipeline: input.name.to_string(),
        node: String::new(),
        validation: false,
        symbol: symbol.clone(),
        now: reference_now(),
        market: market_context(&layout),
        position: None,
        bias: upstream_bias(p),
    };
    let mut nodes = Vec::new();
    let mut tokenizers: Vec<(String, Tokenizer)> = Vec::new();
    for node in &p.nodes {
        let Some(agent) = llm_kind(&node.agent) else {
            continue;
        };
        let n = node_estimate(input, &node.id, agent, &node.agent, &context)?;
        if !tokenizers.contains(&(n.model.clone(), n.tokenizer)) {
            tokenizers.push((n.model.clone(), n.tokenizer));
        }
        nodes.push(n);
    }
    let per_trigger = symbols_per_trigger(p, input.symbols.len());
    let gates = llm_gates(p)?;
    let week = simulate(input, per_trigger, &gates, &layout)?;
    // Executions and costs per day of the week.
    let calls_of = |day: &DayCount, k: usize| day.calls.get(k).copied().unwrap_or_default();
    let five = Decimal::from(5);
    let two = Decimal::from(2);
    let (weekdays, weekend) = week.days.split_at(5);
    let avg = |days: &[DayCount], f: &dyn Fn(&DayCount) -> Decimal, n: Decimal| -> Decimal {
        (days.iter().map(f).sum::<Decimal>() / n).normalize()
    };
    for (k, n) in nodes.iter_mut().enumerate() {
        n.calls_per_trading_day = avg(weekdays, &|d| calls_of(d, k), five);
        n.usd_per_trading_day = (n.usd_per_call * n.calls_per_trading_day).normalize();
    }
    let day_cost = |day: &DayCount| -> Decimal {
        nodes
            .iter()
            .enumerate()
            .map(|(k, n)| n.usd_per_call * calls_of(day, k))
            .sum()
    };
    let per_execution: Decimal = nodes.iter().map(|n| n.usd_per_call).sum();
    let one_off_cost: Decimal = nodes
        .iter()
        .enumerate()
        .map(|(k, n)| n.usd_per_call * week.one_off_calls.get(k).copied().unwrap_or_default())
        .sum();
    let per_trading_day = avg(weekdays, &day_cost, five);
    let per_weekend_day = avg(weekend, &day_cost, two);
    let peak_day = week
        .days
        .iter()
        .map(day_cost)
        .max()
        .unwrap_or_default()
        .max(one_off_cost);
    let cost = CostUsd {
        per_execution: per_execution.normalize(),
        per_trading_day,
        per_weekend_day,
        peak_day: peak_day.normalize(),
        per_month: (per_trading_day * TRADING_DAYS_PER_MONTH
            + per_weekend_day * WEEKEND_DAYS_PER_MONTH
            + one_off_cost)
            .normalize(),
    };
    let executions = {
        let per_trading_day = avg(weekdays, &|d| d.executions, five);
        let per_weekend_day = avg(weekend, &|d| d.executions, two);
        Executions {
            trigger: trigger_words(&p.trigger),
            known: p.trigger.signal.is_none(),
            symbols: per_trigger,
            per_trading_day,
            per_weekend_day,
            peak_day: week
                .days
                .iter()
                .map(|d| d.executions)
                .max()
                .unwrap_or_default()
                .max(week.one_off)
                .normalize(),
            one_off: week.one_off,
            trading_days_per_month: TRADING_DAYS_PER_MONTH,
            weekend_days_per_month: WEEKEND_DAYS_PER_MONTH,
            per_month: (per_trading_day * TRADING_DAYS_PER_MONTH
                + per_weekend_day * WEEKEND_DAYS_PER_MONTH
                + week.one_off)
                .normalize(),
        }
    };
    let budget = p.budget.as_ref().map(|b| {
        let pct = |cost: Decimal, limit: Decimal| {
            (cost * Decimal::ONE_HUNDRED)
                .checked_div(limit)
                .map(|v| v.round_dp(2).normalize())
        };
        BudgetUse {
            daily_usd: b.daily_usd,
            monthly_usd: b.monthly_usd,
            daily_pct: b.daily_usd.and_then(|l| pct(cost.peak_day, l)),
            monthly_pct: b.monthly_usd.and_then(|l| pct(cost.per_month, l)),
            over_daily: b.daily_usd.is_some_and(|l| cost.peak_day > l),
            over_monthly: b.monthly_usd.is_some_and(|l| cost.per_month > l),
        }
    });
    // What the numbers rest on.
    if nodes.is_empty() {
        assumptions.push("the pipeline has no LLM nodes: it costs nothing".to_string());
    } else {
        assumptions.push(format!(
            "prompts: each node's template rendered for {symbol} with the last {PROMPT_BARS} bars (at most the lookback) of every timeframe it reads, representative prices and every indicator the pipeline computes, a flat position; the structured-output format note, and in json_schema mode the response_format schema, count as input"
        ));
        let mut by_tokenizer: Vec<(Tokenizer, Vec<&str>)> = Vec::new();
        for (model, t) in &tokenizers {
            match by_tokenizer.iter_mut().find(|(x, _)| x == t) {
                Some((_, models)) => models.push(model),
                None => by_tokenizer.push((*t, vec![model])),
            }
        }
        for (t, models) in by_tokenizer {
            let models = models.join(", ");
            assumptions.push(match t {
                Tokenizer::O200kBase | Tokenizer::Cl100kBase if t.is_exact() => format!(
                    "tokens of {models}: counted with tiktoken's {} plus OpenAI's chat framing (3 tokens a message, 3 for the reply)",
                    t.name()
                ),
                Tokenizer::Bytes => format!("tokens of {models}: one per byte (an upper bound)"),
                _ => format!(
                    "tokens of {models}: no known tokenizer, estimated at 4 characters a token"
                ),
            });
        }
        assumptions.push(
            "output: a typical answer of the node's schema, at most the provider's max_tokens"
                .to_string(),
        );
        if nodes.iter().any(|n| n.agent == "reporting") {
            assumptions.push("summary: llm: the summary template over a representative execution that bought, answered in three sentences".to_string());
        }
        assumptions.push("prices: the provider's input_usd_per_1k_tokens and output_usd_per_1k_tokens, also for a node that names another model".to_string());
        let overridden: Vec<&NodeEstimate> = nodes
            .iter()
            .filter(|n| {
                input
                    .llm
                    .get(&n.provider)
                    .is_some_and(|s| s.model != n.model)
            })
            .collect();
        for n in overridden {
            assumptions.push(format!(
                "node {} calls {} but is priced at provider {}'s prices (set for its default model)",
                n.node, n.model, n.provider
            ));
        }
    }
    assumptions.push(format!(
        "executions: the trigger over a reference week of regular NYSE sessions (09:30-16:00 America/New_York), {} symbol{} a firing; a month is {TRADING_DAYS_PER_MONTH} trading days and {WEEKEND_DAYS_PER_MONTH} weekend days; holidays and half days are not counted",
        per_trigger,
        if per_trigger == 1 { "" } else { "s" }
    ));
    if input.symbols.is_empty() {
        assumptions.push("no symbols: the pipeline's symbols, scanner or stock picker give none, so it executes nothing".to_string());
    }
    assumptions.extend(week.notes);
    if p.nodes.iter().any(|n| {
        matches!(
            n.agent,
            AgentConfig::PriceTrigger(_) | AgentConfig::TechnicalTrigger(_)
        )
    }) {
        assumptions.push("gates: price_trigger and technical_trigger conditions are assumed to pass (the most the pipeline can cost)".to_string());
    }
    if !p.enabled {
        assumptions.push(
            "the pipeline is disabled (enabled: false): it runs nothing until it is enabled"
                .to_string(),
        );
    }
    Ok(Estimate {
        pipeline: input.name.to_string(),
        enabled: p.enabled,
        llm_nodes: nodes,
        executions,
        cost_usd: cost,
        budget,
        assumptions,
    })
}

/// Symbols one firing executes: all of them, or a stock picker's `top_n`.
fn symbols_per_trigger(p: &Pipeline, symbols: usize) -> usize {
    match p.nodes.iter().find_map(|n| match &n.agent {
        AgentConfig::StockPicker(c) => Some(c.top_n as usize),
        _ => None,
    }) {
        Some(top_n) => symbols.min(top_n),
        None => symbols,
    }
}

/// The trigger in words.
fn trigger_words(t: &Trigger) -> String {
    if let Some(b) = &t.bar_close {
        return format!("bar_close {}", b.timeframe);
    }
    if let Some(s) = &t.schedule {
        if let Some(c) = &s.cron {
            return format!("schedule cron \"{c}\" ({})", s.timezone.0);
        }
        if let Some(i) = &s.interval {
            return format!("schedule interval {i}");
        }
        if let Some(m) = &s.market_open {
            return format!("schedule market_open +{}", m.offset);
        }
    }
    if let Some(s) = &t.signal {
        let types: Vec<&str> = s
            .subscriptions
            .iter()
            .map(|s| s.signal_type.as_str())
            .collect();
        return format!("signal ({})", types.join(", "));
    }
    if let Some(c) = &t.continuous {
        return format!("continuous cooldown {}", c.cooldown);
    }
    if t.once.is_some() {
        return "once".to_string();
    }
    "none".to_string()
}

// ----- prompts and tokens -----

/// The slot layout of the pipeline's market data: the union of its `market_data` nodes'
/// timeframes, indicators and lookbacks, as [`crate::engine::pipeline::CompiledPipeline`]
/// builds it (without compiling any expression).
fn layout(p: &Pipeline) -> Layout {
    let mut wanted: BTreeMap<Timeframe, (Vec<IndicatorSpec>, usize)> = BTreeMap::new();
    for node in &p.nodes {
        if let AgentConfig::MarketData(c) = &node.agent {
            let specs: Vec<IndicatorSpec> = c
                .indicators
                .iter()
                .filter_map(|s| s.parse::<IndicatorSpec>().ok())
                .collect();
            for tf in &c.timeframes {
                let entry = wanted.entry(*tf).or_default();
                for spec in &specs {
                    if !entry.0.contains(spec) {
                        entry.0.push(spec.clone());
                    }
                }
                entry.1 = entry.1.max(c.lookback as usize);
            }
        }
    }
    Layout::new(&wanted)
}

/// Rounds to cents.
fn cents(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The representative market context: per timeframe, up to [`PROMPT_BARS`] bars
/// (`[ts, open, high, low, close, volume]`) and a value for every named slot, shaped like
/// [`crate::agents::market_data::snapshot`].
fn market_context(layout: &Layout) -> Value {
    let end = reference_now();
    let mut out = serde_json::Map::new();
    for frame in &layout.frames {
        let tf = frame.timeframe;
        let n = PROMPT_BARS.min(frame.lookback);
        // Volume of a bar: a liquid stock's 48 million shares a session, spread over the
        // session's bars (5 sessions for a week).
        let per_bar = match tf {
            Timeframe::W1 => 5.0,
            Timeframe::D1 => 1.0,
            _ => tf.nominal_seconds() as f64 / 23_400.0,
        };
        let mut bars = Vec::with_capacity(n);
        let mut last = [0.0f64; 5];
        for i in 0..n {
            let x = i as f64;
            let mid = 180.0 + 8.0 * (x / 9.0).sin() + 0.12 * x;
            let open = cents(mid + 0.6 * (x * 1.7).sin());
            let close = cents(mid + 0.6 * (x * 2.3).cos());
            let high = cents(open.max(close) + 0.4 + 0.3 * (x * 0.7).sin().abs());
            let low = cents(open.min(close) - 0.4 - 0.3 * (x * 1.1).cos().abs());
            let volume = (48_000_000.0 * per_bar * (1.0 + 0.25 * (x * 0.9).sin())).round();
            let ts = end - tf.nominal_seconds() * (n - i) as i64;
            bars.push(json!([ts, open, high, low, close, volume]));
            last = [open, high, low, close, volume];
        }
        let [open, high, low, close, volume] = last;
        let mut values = serde_json::Map::new();
        for (k, (name, _)) in layout.named_slots(tf).into_iter().enumerate() {
            // Full-precision values, as computed indicators print.
            let wiggle = 1.0 + 0.0137 * ((k + 2) as f64).sqrt();
            let v = match name.as_str() {
                "open" => open,
                "high" => high,
                "low" => low,
                "close" => close,
                "volume" => volume,
                s if s.ends_with("_direction") => 1.0,
                s if s.starts_with("rsi") => 38.0 + 9.0 * wiggle.powi(7),
                s if s.starts_with("volume") => volume * wiggle,
                s if s.starts_with("atr") => 2.4 * wiggle,
                s if s.starts_with("macd") && s.contains("hist") => 0.31 * wiggle,
                s if s.starts_with("macd") => 1.17 * wiggle,
                _ => close * (0.97 + 0.03 * wiggle),
            };
            values.insert(name, json!(v));
        }
        out.insert(tf.to_string(), json!({ "bars": bars, "values": values }));
    }
    Value::Object(out)
}

/// A Unix time inside the reference week (Friday 2025-01-17 21:00 UTC), the prompts'
/// "now" and the last bar's end.
fn reference_now() -> i64 {
    1_737_147_600
}

/// The bias a strategy prompt shows: what the pipeline's bias node gives (a typical LLM
/// answer or the rules' reasoning), `None` without a bias node.
fn upstream_bias(p: &Pipeline) -> Option<BiasSignal> {
    p.nodes.iter().find_map(|n| match &n.agent {
        AgentConfig::Bias(BiasConfig::Llm(_)) => {
            let a = typical_bias();
            Some(BiasSignal {
                bias: Bias::Bullish,
                confidence: a.confidence,
                reasoning: a.reasoning,
                factors: a.factors,
            })
        }
        AgentConfig::Bias(BiasConfig::Rules(r)) => Some(BiasSignal {
            bias: Bias::Bullish,
            confidence: crate::domain::to_f64(r.confidence.value()),
            reasoning: format!("bullish: `{}` holds", r.bullish),
            factors: vec![r.bullish.clone()],
        }),
        _ => None,
    })
}

/// A typical bias answer: two sentences of reasoning, four factors.
fn typical_bias() -> BiasAnswer {
    BiasAnswer {
        bias: super::answer::BiasWord::Bullish,
        confidence: 72.0,
        reasoning: "Price holds above the rising 50- and 200-day averages and the weekly trend \
                    makes higher highs and higher lows. RSI near 58 leaves room before \
                    overbought, and MACD is above its signal line."
            .to_string(),
        factors: vec![
            "close above sma_50 and sma_200 on 1d".to_string(),
            "weekly higher highs and higher lows".to_string(),
            "rsi_14 at 58, not overbought".to_string(),
            "macd above its signal line".to_string(),
        ],
    }
}

/// A typical trade plan: every level and two sentences of reasoning.
fn typical_plan() -> StrategyAnswer {
    StrategyAnswer {
        action: super::answer::ActionWord::Buy,
        conviction: 68.0,
        entry_price: Some(187.42),
        stop_loss: Some(181.9),
        target_1: Some(198.5),
        target_2: Some(205.0),
        reasoning: "A pullback to the rising 20-day average inside a daily uptrend, with the \
                    bias bullish. The stop sits below the last swing low, about two ATRs \
                    away, and target 1 is twice the risk."
            .to_string(),
    }
}

/// What a reporting summary is asked about (the shape the executor sends: the bias, the
/// plan, the risk decision and the trade of a representative execution that bought), and a
/// typical summary.
fn typical_report() -> (Value, String) {
    let facts = json!({
        "bias": typical_bias(),
        "plan": typical_plan(),
        "risk": {"approved": true, "adjusted": false, "quantity": "54", "rule": "approved", "reasoning": "risk 1% of equity over a 5.52 USD stop: 54 shares", "position_risk_usd": "298.08"},
        "trade": {"outcome": "submitted", "side": "buy", "quantity": "54", "client_order_id": "zt-0123456789abcdef"},
        "status_so_far": "completed",
    });
    let answer = "Bought 54 shares at about 187.42 USD on a bullish daily and weekly trend \
                  (72% confidence), with a stop at 181.90 USD below the last swing low and \
                  targets at 198.50 and 205.00 USD, a reward/risk of 2. The risk manager \
                  approved it at 1% of equity."
        .to_string();
    (facts, answer)
}

/// Input tokens of one chart (768 × 432 PNG) at OpenAI's documented image cost in high
/// detail: 85 plus 170 per 512-pixel tile, two tiles.
pub const CHART_TOKENS: u64 = 85 + 2 * 170;

/// One LLM call as the client would send it, with a typical answer.
struct Rendered<'a> {
    /// The provider's name and settings.
    provider: (String, &'a LlmSettings),
    /// The model called.
    model: String,
    /// The template id.
    template: Option<String>,
    /// Charts sent as image input (`chart: true`).
    charts: usize,
    /// The system message (`""`: none).
    system: String,
    /// The user message.
    user: String,
    /// Which `response_format` the client sends (in `json_schema` mode).
    format: Option<Answer>,
    /// A typical answer.
    answer: String,
}

/// Renders the call of node `id` (see the module documentation).
fn render<'a>(
    input: &Input<'a>,
    id: &str,
    config: &AgentConfig,
    context: &PromptContext,
) -> Result<Rendered<'a>, EstimateError> {
    let provider_of = |name: &str| {
        input
            .llm
            .get(name)
            .ok_or_else(|| EstimateError::UnknownProvider {
                node: id.to_string(),
                provider: name.to_string(),
            })
    };
    let mut charts = 0;
    // (provider, model, template, system, user, response_format, typical answer)
    let (provider, model, template, system, user, format, answer) = match config {
        AgentConfig::Bias(BiasConfig::Llm(c)) => {
            let s = provider_of(&c.provider)?;
            // The client's own rendering (prompt file included).
            let r = prompt::bias_prompt(c, context, s.structured_output, bias_schema());
            charts = if !c.chart {
                0
            } else if c.timeframes.is_empty() {
                context.market.as_object().map_or(0, |m| m.len())
            } else {
                c.timeframes.len()
            };
            (
                (c.provider.clone(), s),
                c.model.clone().unwrap_or_else(|| s.model.clone()),
                Some(format!("{}.{}", r.template, r.version)),
                r.system,
                r.user,
                (s.structured_output == StructuredOutput::JsonSchema).then_some(Answer::Bias),
                serde_json::to_string(&typical_bias()).unwrap_or_default(),
            )
        }
        AgentConfig::Strategy(StrategyConfig::Llm(c)) => {
            let s = provider_of(&c.provider)?;
            let r = prompt::strategy_prompt(c, context, s.structured_output, strategy_schema());
            charts = usize::from(c.chart);
            (
                (c.provider.clone(), s),
                c.model.clone().unwrap_or_else(|| s.model.clone()),
                Some(format!("{}.{}", r.template, r.version)),
                r.system,
                r.user,
                (s.structured_output == StructuredOutput::JsonSchema).then_some(Answer::Strategy),
                serde_json::to_string(&typical_plan()).unwrap_or_default(),
            )
        }
        AgentConfig::Reporting(c) => {
            let name = c
                .provider
                .clone()
                .ok_or_else(|| EstimateError::NoProvider(id.to_string()))?;
            let s = provider_of(&name)?;
            let (facts, answer) = typical_report();
            let r = prompt::summary_prompt(context, &facts);
            (
                (name, s),
                s.model.clone(),
                Some(format!("{}.{}", r.template, r.version)),
                r.system,
                r.user,
                None,
                answer,
            )
        }
        _ => return Err(EstimateError::Invalid(format!("node {id} asks no LLM"))),
    };
    Ok(Rendered {
        provider,
        model,
        template,
        charts,
        system,
        user,
        format,
        answer,
    })
}

fn node_estimate(
    input: &Input<'_>,
    id: &str,
    agent: &'static str,
    config: &AgentConfig,
    context: &PromptContext,
) -> Result<NodeEstimate, EstimateError> {
    let Rendered {
        provider,
        model,
        template,
        charts,
        system,
        user,
        format,
        answer,
    } = render(input, id, config, context)?;
    let (provider, settings) = provider;
    let tokenizer = if input.options.upper_bound {
        Tokenizer::Bytes
    } else {
        Tokenizer::for_model(&model)
    };
    let mut messages = Vec::new();
    if !system.is_empty() {
        messages.push(("system", system.as_str()));
    }
    messages.push(("user", user.as_str()));
    let input_tokens = tokenizer.count_request(&messages)
        + format.map_or(0, |a| a.format_tokens(tokenizer))
        + charts as u64 * CHART_TOKENS;
    let output_tokens = tokenizer.count(&answer).min(u64::from(settings.max_tokens));
    let usd_per_call = ((Decimal::from(input_tokens) * settings.input_usd_per_1k_tokens
        + Decimal::from(output_tokens) * settings.output_usd_per_1k_tokens)
        / Decimal::ONE_THOUSAND)
        .normalize();
    Ok(NodeEstimate {
        node: id.to_string(),
        agent,
        provider,
        model,
        template,
        tokenizer,
        estimated: !tokenizer.is_exact(),
        input_tokens,
        output_tokens,
        usd_per_call,
        calls_per_trading_day: Decimal::ZERO,
        usd_per_trading_day: Decimal::ZERO,
    })
}

/// The answer types, for their `response_format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// `bias_signal`: [`BiasAnswer`].
    Bias,
    /// `strategy_signal`: [`StrategyAnswer`].
    Strategy,
}

impl Answer {
    /// The `response_format` JSON the client sends in `json_schema` mode (JSON mode's
    /// `{"type": "json_object"}` is a few tokens, ignored), built once.
    fn response_format(self) -> &'static str {
        static BIAS: OnceLock<String> = OnceLock::new();
        static STRATEGY: OnceLock<String> = OnceLock::new();
        let (cell, name, schema) = match self {
            Answer::Bias => (&BIAS, "bias_signal", bias_schema()),
            Answer::Strategy => (&STRATEGY, "strategy_signal", strategy_schema()),
        };
        cell.get_or_init(|| {
            json!({
                "type": "json_schema",
                "json_schema": { "name": name, "strict": true, "schema": schema },
            })
            .to_string()
        })
    }

    /// Tokens of [`Answer::response_format`] with `t`, counted once.
    fn format_tokens(self, t: Tokenizer) -> u64 {
        static COUNTS: [[OnceLock<u64>; 4]; 2] = [const { [const { OnceLock::new() }; 4] }; 2];
        *COUNTS[self as usize][t as usize].get_or_init(|| t.count(self.response_format()))
    }
}

fn bias_schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(strict_schema::<BiasAnswer>)
}

fn strategy_schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(strict_schema::<StrategyAnswer>)
}

// ----- executions -----

/// One day of the reference week.
#[derive(Clone, Debug, Default)]
struct DayCount {
    /// Executions started (all symbols).
    executions: Decimal,
    /// Calls of each LLM node (in the order of the estimate's nodes).
    calls: Vec<Decimal>,
}

/// The reference week, Monday to Sunday, and what happens once.
#[derive(Debug, Default)]
struct Week {
    days: Vec<DayCount>,
    one_off: Decimal,
    one_off_calls: Vec<Decimal>,
    notes: Vec<String>,
}

/// The time gates upstream of each LLM node (in the order written), from the nodes'
/// `needs` (by default the node before).
fn llm_gates(p: &Pipeline) -> Result<Vec<Vec<TimeGate>>, EstimateError> {
    let index: BTreeMap<&str, usize> = p
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let parents = |i: usize| -> Vec<usize> {
        match &p.nodes[i].needs {
            None if i > 0 => vec![i - 1],
            None => Vec::new(),
            Some(needs) => needs
                .iter()
                .filter_map(|n| index.get(n.as_str()).copied())
                .collect(),
        }
    };
    let mut out = Vec::new();
    for (i, node) in p.nodes.iter().enumerate() {
        if llm_kind(&node.agent).is_none() {
            continue;
        }
        let mut seen = vec![false; p.nodes.len()];
        let mut stack = parents(i);
        let mut gates = Vec::new();
        while let Some(a) = stack.pop() {
            if std::mem::replace(&mut seen[a], true) {
                continue;
            }
            if let AgentConfig::TimeTrigger(c) = &p.nodes[a].agent {
                gates.push(
                    TimeGate::from_config(c).map_err(|e| {
                        EstimateError::Invalid(format!("node {}: {e}", p.nodes[a].id))
                    })?,
                );
            }
            stack.extend(parents(a));
        }
        out.push(gates);
    }
    Ok(out)
}

/// Local midnight starting `date` in `tz`.
fn midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    crate::market::timeframe::local_midnight(tz, date)
}

/// The instants at which bars of `tf` close during `session`, in the engine's periods
/// (aligned on the local clock of `tz`): every intraday period that holds trading, the day
/// at the next local midnight, the week (on its `last_of_week` session) at its end.
fn bar_closes(tf: Timeframe, session: &Session, tz: Tz, last_of_week: bool) -> Vec<DateTime<Utc>> {
    match tf {
        Timeframe::W1 => {
            if !last_of_week {
                return Vec::new();
            }
            let start = tf.period_start(session.open, tz);
            vec![tf.period_end(start, tz)]
        }
        Timeframe::D1 => {
            let start = tf.period_start(session.open, tz);
            vec![tf.period_end(start, tz)]
        }
        _ => {
            let mut out = Vec::new();
            let mut start = tf.period_start(session.open, tz);
            while start < session.close {
                let end = tf.period_end(start, tz);
                out.push(end);
                start = end;
            }
            out
        }
    }
}

/// Runs the trigger over the reference week (see the module documentation).
fn simulate(
    input: &Input<'_>,
    per_trigger: usize,
    gates: &[Vec<TimeGate>],
    layout: &Layout,
) -> Result<Week, EstimateError> {
    let p = input.pipeline;
    let tz = input.data_timezone;
    let monday = reference_monday();
    let dates: Vec<NaiveDate> = (0..7).map(|d| monday + TimeDelta::days(d)).collect();
    let calendar = UsEquityCalendar;
    let sessions: Vec<Option<Session>> = dates.iter().map(|d| calendar.session(*d)).collect();
    let last_session = sessions.iter().rposition(Option::is_some);
    let window = p
        .window
        .as_ref()
        .map(TradingWindow::from_config)
        .transpose()
        .map_err(|e| EstimateError::Invalid(e.to_string()))?;
    let cap = p
        .limits
        .as_ref()
        .and_then(|l| l.max_executions_per_day)
        .map(Decimal::from);
    let n = Decimal::from(per_trigger);
    let nodes = gates.len();
    let mut week = Week {
        days: vec![
            DayCount {
                executions: Decimal::ZERO,
                calls: vec![Decimal::ZERO; nodes],
            };
            7
        ],
        one_off_calls: vec![Decimal::ZERO; nodes],
        ..Week::default()
    };
    let has_gates = gates.iter().any(|g| !g.is_empty());
    // The firings, each with the day (0 = Monday) it counts on.
    let mut firings: Vec<(usize, DateTime<Utc>)> = Vec::new();
    let t = &p.trigger;
    let bar_firings = |tf: Timeframe| -> Vec<(usize, DateTime<Utc>)> {
        let mut out = Vec::new();
        for (d, s) in sessions.iter().enumerate() {
            if let Some(s) = s {
                for t in bar_closes(tf, s, tz, Some(d) == last_session) {
                    out.push((d, t));
                }
            }
        }
        out
    };
    if let Some(b) = &t.bar_close {
        firings = bar_firings(b.timeframe);
    } else if let Some(s) = &t.schedule {
        let anchor = midnight(tz, monday);
        let schedule =
            Schedule::from_trigger(s, anchor).map_err(|e| EstimateError::Invalid(e.to_string()))?;
        let end = midnight(tz, monday + TimeDelta::days(7));
        // (a, b]: the firings whose day (the local date a second before, as the engine's
        // limits count days) is in the week.
        for at in schedule.iter_after(anchor).take(MAX_FIRINGS) {
            if at > end {
                break;
            }
            let day = trading_day(at - TimeDelta::seconds(1), tz);
            if let Some(d) = dates.iter().position(|x| *x == day) {
                firings.push((d, at));
            }
        }
        if firings.len() >= MAX_FIRINGS {
            week.notes.push(format!(
                "schedule: counted only the first {MAX_FIRINGS} firings of the reference week"
            ));
        }
        if s.interval.is_some() && window.is_none() {
            week.notes.push("schedule interval: fires around the clock, every day of the week; only a window restricts it".to_string());
        }
        if s.cron.is_some() {
            week.notes
                .push("schedule cron: fires on the days it names, market open or not".to_string());
        }
    } else if let Some(c) = &t.continuous {
        let strategy_tf = p.nodes.iter().find_map(|n| match &n.agent {
            AgentConfig::Strategy(StrategyConfig::Rules(r)) => Some(r.timeframe),
            AgentConfig::Strategy(StrategyConfig::Llm(l)) => Some(l.timeframe),
            _ => None,
        });
        let tf = strategy_tf
            .or_else(|| layout.frames.first().map(|f| f.timeframe))
            .unwrap_or(Timeframe::D1);
        let cooldown = TimeDelta::from_std(c.cooldown.std()).unwrap_or(TimeDelta::MAX);
        let mut last: Option<DateTime<Utc>> = None;
        for (d, at) in bar_firings(tf) {
            if last.is_none_or(|l| l.checked_add_signed(cooldown).is_some_and(|x| at >= x)) {
                last = Some(at);
                firings.push((d, at));
            }
        }
        week.notes.push(format!(
            "continuous: runs at each closed {tf} bar at least {} after the previous run{}",
            c.cooldown,
            if c.while_position_open == WhilePositionOpen::Skip {
                "; while_position_open: skip is assumed never to skip (no position open)"
            } else {
                ""
            }
        ));
    } else if let Some(s) = &t.signal {
        let per_day = input
            .options
            .signals_per_day
            .unwrap_or(DEFAULT_SIGNALS_PER_DAY);
        let mut count = n * per_day;
        if let Some(cap) = cap {
            count = count.min(cap);
        }
        for (d, s) in sessions.iter().enumerate() {
            if s.is_some() {
                week.days[d].executions = count;
                week.days[d].calls = vec![count; nodes];
            }
        }
        let types: Vec<&str> = s
            .subscriptions
            .iter()
            .map(|s| s.signal_type.as_str())
            .collect();
        week.notes.push(format!(
            "signal: how many {} signals arrive is not known in advance: {} per symbol per trading day assumed{}, inside the window and through every gate",
            types.join(" / "),
            per_day.normalize(),
            if input.options.signals_per_day.is_some() {
                " (--signals-per-day)"
            } else {
                " (change it with --signals-per-day N)"
            }
        ));
        return Ok(week);
    } else if t.once.is_some() {
        let count = cap.map_or(n, |c| n.min(c));
        week.one_off = count;
        week.one_off_calls = vec![count; nodes];
        week.notes.push(
            "once: one execution per symbol when the pipeline starts (again at each restart)"
                .to_string(),
        );
        return Ok(week);
    }
    firings.sort_by_key(|(_, at)| *at);
    let mut outside = 0usize;
    for (d, at) in firings {
        if let Some(w) = &window
            && !w.contains(at)
        {
            outside += 1;
            continue;
        }
        let day = &mut week.days[d];
        let take = match cap {
            Some(cap) => n.min((cap - day.executions).max(Decimal::ZERO)),
            None => n,
        };
        if take.is_zero() {
            continue;
        }
        day.executions += take;
        for (k, g) in gates.iter().enumerate() {
            if g.iter().all(|g| g.allows(at)) {
                day.calls[k] += take;
            }
        }
    }
    if window.is_some() {
        week.notes.push(format!(
            "window: a firing outside it starts nothing ({outside} of the reference week's firings fell outside)"
        ));
    }
    if has_gates {
        week.notes.push(
            "time_trigger: an LLM node is called only when the time gates before it let the execution through"
                .to_string(),
        );
    }
    if let Some(cap) = cap {
        week.notes.push(format!(
            "limits.max_executions_per_day: at most {cap} executions a day"
        ));
    }
    if t.bar_close
        .as_ref()
        .is_some_and(|b| !b.timeframe.is_intraday())
        && window.is_some()
    {
        week.notes.push("bar_close on 1d or 1w: the bar closes at local midnight, which the window must contain for the execution to start".to_string());
    }
    Ok(week)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::LlmSettings;
    use chrono::Datelike;
    use rust_decimal::dec;

    fn pipeline(v: Value) -> Pipeline {
        serde_json::from_value(v).unwrap()
    }

    fn settings(model: &str) -> BTreeMap<String, LlmSettings> {
        let s: LlmSettings = serde_json::from_value(json!({
            "base_url": "https://api.openai.com/v1",
            "api_key_env": "OPENAI_API_KEY",
            "model": model,
            "input_usd_per_1k_tokens": 0.0025,
            "output_usd_per_1k_tokens": 0.01,
        }))
        .unwrap();
        BTreeMap::from([("default".to_string(), s)])
    }

    fn llm_nodes() -> Value {
        json!([
            { "id": "data", "agent": "market_data", "config": { "timeframes": ["5m", "1d"], "indicators": ["sma_50", "rsi_14", "macd_12_26_9", "atr_14"] } },
            { "id": "bias", "agent": "bias", "config": { "kind": "llm", "provider": "default", "timeframes": ["1d"] } },
            { "id": "strategy", "agent": "strategy", "config": { "kind": "llm", "provider": "default", "timeframe": "5m" } },
        ])
    }

    fn with_trigger(trigger: Value, extra: Value) -> Pipeline {
        let mut v = json!({ "mode": "validation", "symbols": ["AAPL"], "trigger": trigger, "nodes": llm_nodes() });
        if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
            m.extend(e);
        }
        pipeline(v)
    }

    fn run(p: &Pipeline, symbols: &[&str], options: Options) -> Estimate {
        let symbols: Vec<String> = symbols.iter().map(|s| s.to_string()).collect();
        let llm = settings("gpt-4o");
        estimate(&Input {
            name: "t",
            pipeline: p,
            llm: &llm,
            data_timezone: chrono_tz::America::New_York,
            symbols: &symbols,
            options,
        })
        .unwrap()
    }

    fn per_day(trigger: Value, extra: Value) -> Decimal {
        let p = with_trigger(trigger, extra);
        run(&p, &["AAPL"], Options::default())
            .executions
            .per_trading_day
    }

    #[test]
    fn bar_close_counts_the_bars_of_a_regular_session() {
        for (tf, want) in [
            ("1m", dec!(390)),
            ("5m", dec!(78)),
            ("15m", dec!(26)),
            ("30m", dec!(13)),
            ("1h", dec!(7)),
            ("4h", dec!(2)),
            ("1d", dec!(1)),
            ("1w", dec!(0.2)),
        ] {
            assert_eq!(
                per_day(json!({ "bar_close": { "timeframe": tf } }), json!({})),
                want,
                "{tf}"
            );
        }
    }

    #[test]
    fn schedules_count_their_firings_and_the_window_restricts_them() {
        // Cron on weekdays: once a trading day, nothing at weekends.
        let p = with_trigger(
            json!({ "schedule": { "cron": "0 35 9 * * Mon-Fri", "timezone": "America/New_York" } }),
            json!({}),
        );
        let e = run(&p, &["AAPL"], Options::default());
        assert_eq!(e.executions.per_trading_day, dec!(1));
        assert_eq!(e.executions.per_weekend_day, dec!(0));
        assert_eq!(e.executions.per_month, dec!(21));
        // Every 15 minutes from 09:00 to 15:45, every day: 28 a day.
        assert_eq!(
            per_day(
                json!({ "schedule": { "cron": "0 */15 9-15 * * *" } }),
                json!({})
            ),
            dec!(28)
        );
        // market_open: one a trading day.
        assert_eq!(
            per_day(
                json!({ "schedule": { "market_open": { "offset": "5m" } } }),
                json!({})
            ),
            dec!(1)
        );
        // An interval fires around the clock unless a window restricts it.
        let free = with_trigger(json!({ "schedule": { "interval": "1h" } }), json!({}));
        let e = run(&free, &["AAPL"], Options::default());
        assert_eq!(e.executions.per_trading_day, dec!(24));
        assert_eq!(e.executions.per_weekend_day, dec!(24));
        let windowed = per_day(
            json!({ "schedule": { "interval": "30m" } }),
            json!({ "window": { "start": "09:30", "end": "16:00" } }),
        );
        assert_eq!(windowed, dec!(13));
    }

    #[test]
    fn continuous_runs_once_per_cooldown_and_signals_use_the_assumption() {
        // Strategy on 5m bars, cooldown 30m: every sixth bar close.
        assert_eq!(
            per_day(json!({ "continuous": { "cooldown": "30m" } }), json!({})),
            dec!(13)
        );
        assert_eq!(
            per_day(json!({ "continuous": { "cooldown": "0s" } }), json!({})),
            dec!(78)
        );
        let p = with_trigger(
            json!({ "signal": { "subscriptions": [{ "type": "golden_cross" }] } }),
            json!({}),
        );
        let e = run(&p, &["AAPL", "MSFT"], Options::default());
        assert!(!e.executions.known);
        assert_eq!(e.executions.per_trading_day, dec!(2));
        let e = run(
            &p,
            &["AAPL", "MSFT"],
            Options {
                signals_per_day: Some(dec!(3)),
                ..Options::default()
            },
        );
        assert_eq!(e.executions.per_trading_day, dec!(6));
        assert!(
            e.assumptions
                .iter()
                .any(|a| a.contains("--signals-per-day"))
        );
        // once: one execution per symbol in all.
        let p = with_trigger(json!({ "once": {} }), json!({}));
        let e = run(&p, &["AAPL", "MSFT"], Options::default());
        assert_eq!(e.executions.per_trading_day, dec!(0));
        assert_eq!(e.executions.one_off, dec!(2));
        assert_eq!(e.cost_usd.per_month, e.cost_usd.per_execution * dec!(2));
    }

    #[test]
    fn symbols_limits_and_time_gates_scale_the_calls() {
        let p = with_trigger(json!({ "bar_close": { "timeframe": "1h" } }), json!({}));
        let e = run(&p, &["AAPL", "MSFT", "NVDA"], Options::default());
        assert_eq!(e.executions.per_trading_day, dec!(21));
        let capped = with_trigger(
            json!({ "bar_close": { "timeframe": "1h" } }),
            json!({ "limits": { "max_executions_per_day": 10 } }),
        );
        let e = run(&capped, &["AAPL", "MSFT", "NVDA"], Options::default());
        assert_eq!(e.executions.per_trading_day, dec!(10));
        assert_eq!(e.executions.peak_day, dec!(10));
        // A time gate between the bias and the strategy: the bias runs on every 1h close,
        // the strategy only from 14:00.
        let mut nodes = llm_nodes();
        if let Value::Array(list) = &mut nodes {
            list.insert(
                2,
                json!({ "id": "late", "agent": "time_trigger", "config": { "after": "14:00" } }),
            );
        }
        let gated = pipeline(json!({
            "mode": "validation", "symbols": ["AAPL"],
            "trigger": { "bar_close": { "timeframe": "1h" } },
            "nodes": nodes,
        }));
        let e = run(&gated, &["AAPL"], Options::default());
        let calls: Vec<Decimal> = e
            .llm_nodes
            .iter()
            .map(|n| n.calls_per_trading_day)
            .collect();
        // Closes at 10:00 … 16:00: 14:00, 15:00 and 16:00 pass `after: 14:00`.
        assert_eq!(calls, [dec!(7), dec!(3)]);
        // A stock picker's top_n bounds the symbols of a firing.
        let mut nodes = llm_nodes();
        if let Value::Array(list) = &mut nodes {
            list.insert(
                0,
                json!({ "id": "pick", "agent": "stock_picker", "config": { "scanner": "u", "top_n": 2 } }),
            );
        }
        let picked = pipeline(json!({
            "mode": "validation", "trigger": { "bar_close": { "timeframe": "1d" } }, "nodes": nodes,
        }));
        let e = run(&picked, &["A", "B", "C", "D"], Options::default());
        assert_eq!(e.executions.symbols, 2);
        assert_eq!(e.executions.per_trading_day, dec!(2));
    }

    #[test]
    fn costs_multiply_out_and_budgets_compare() {
        let p = with_trigger(
            json!({ "bar_close": { "timeframe": "5m" } }),
            json!({ "budget": { "daily_usd": 1, "monthly_usd": 1000 } }),
        );
        let e = run(&p, &["AAPL"], Options::default());
        let c = &e.cost_usd;
        assert!(c.per_execution > Decimal::ZERO);
        assert_eq!(c.per_trading_day, c.per_execution * dec!(78));
        assert_eq!(c.per_month, c.per_trading_day * dec!(21));
        let sum: Decimal = e.llm_nodes.iter().map(|n| n.usd_per_trading_day).sum();
        assert_eq!(sum, c.per_trading_day);
        let b = e.budget.as_ref().unwrap();
        // 78 calls of two gpt-4o prompts of a few thousand tokens cost more than 1 USD.
        assert!(b.over_daily, "{c:?}");
        assert_eq!(b.over_monthly, c.per_month > dec!(1000));
        assert_eq!(
            b.daily_pct,
            Some((c.peak_day * dec!(100)).round_dp(2).normalize())
        );
        assert!(e.over_budget());
        // The upper bound costs more than the estimate.
        let bound = run(
            &p,
            &["AAPL"],
            Options {
                upper_bound: true,
                ..Options::default()
            },
        );
        assert!(bound.cost_usd.per_execution > c.per_execution);
    }

    #[test]
    fn a_pipeline_without_llm_nodes_costs_nothing() {
        let p = pipeline(json!({
            "mode": "validation", "symbols": ["AAPL"],
            "trigger": { "bar_close": { "timeframe": "1d" } },
            "nodes": [
                { "id": "data", "agent": "market_data", "config": { "timeframes": ["1d"] } },
                { "id": "bias", "agent": "bias", "config": { "kind": "rules", "bullish": "close > 1" } },
            ],
        }));
        assert!(!has_llm_nodes(&p));
        let e = run(&p, &["AAPL"], Options::default());
        assert!(e.llm_nodes.is_empty());
        assert_eq!(e.cost_usd.per_month, Decimal::ZERO);
        assert_eq!(e.executions.per_trading_day, dec!(1));
        assert!(e.assumptions[0].contains("no LLM nodes"));
    }

    #[test]
    fn tokenizers_follow_the_model_family() {
        for (model, want) in [
            ("gpt-4o", Tokenizer::O200kBase),
            ("gpt-4o-mini-2024-07-18", Tokenizer::O200kBase),
            ("GPT-4.1-nano", Tokenizer::O200kBase),
            ("gpt-5", Tokenizer::O200kBase),
            ("o1-mini", Tokenizer::O200kBase),
            ("o3", Tokenizer::O200kBase),
            ("o4-mini", Tokenizer::O200kBase),
            ("openai/gpt-4o", Tokenizer::O200kBase),
            ("gpt-4", Tokenizer::Cl100kBase),
            ("gpt-4-turbo", Tokenizer::Cl100kBase),
            ("gpt-3.5-turbo", Tokenizer::Cl100kBase),
            ("llama-3.1-70b", Tokenizer::CharsPer4),
            ("claude-3-5-sonnet", Tokenizer::CharsPer4),
            ("mistral-large", Tokenizer::CharsPer4),
        ] {
            assert_eq!(Tokenizer::for_model(model), want, "{model}");
        }
        // Real encodings: known counts (tiktoken's own examples).
        assert_eq!(Tokenizer::O200kBase.count("hello world"), 2);
        assert_eq!(Tokenizer::Cl100kBase.count("hello world"), 2);
        assert_eq!(
            Tokenizer::Cl100kBase.count("tiktoken is great!"),
            6,
            "cl100k_base encodes this in 6 tokens"
        );
        assert!(Tokenizer::O200kBase.is_exact());
        assert!(!Tokenizer::CharsPer4.is_exact());
        for t in [
            Tokenizer::O200kBase,
            Tokenizer::Cl100kBase,
            Tokenizer::CharsPer4,
            Tokenizer::Bytes,
        ] {
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
        }
        assert_eq!(Tokenizer::CharsPer4.count("abcdefghi"), 3);
        assert_eq!(Tokenizer::Bytes.count("héllo"), 6);
        // The chat framing: 3 a message plus the role, and 3 for the reply.
        let one = Tokenizer::O200kBase.count_request(&[("user", "hello world")]);
        assert_eq!(one, 3 + 1 + 2 + 3);
    }

    #[test]
    fn prompts_are_fully_rendered_and_estimated_models_are_flagged() {
        let p = with_trigger(json!({ "bar_close": { "timeframe": "1d" } }), json!({}));
        let e = run(&p, &["AAPL"], Options::default());
        assert_eq!(e.llm_nodes.len(), 2);
        for n in &e.llm_nodes {
            assert_eq!(n.tokenizer, Tokenizer::O200kBase);
            assert!(!n.estimated);
            // 50 bars of 1d (and of 5m for the strategy) are well over a thousand tokens.
            assert!(n.input_tokens > 1_000, "{n:?}");
            assert!(n.output_tokens > 30 && n.output_tokens < 200, "{n:?}");
        }
        // The bias reads 1d only, the strategy 5m: both templates render every
        // placeholder.
        let layout = layout(&p);
        let market = market_context(&layout);
        let context = PromptContext {
            pipeline: "t".into(),
            node: String::new(),
            validation: false,
            symbol: "AAPL".into(),
            now: reference_now(),
            market,
            position: None,
            bias: upstream_bias(&p),
        };
        let text = prompt::market(&context, &[Timeframe::M5]);
        assert!(text.contains("last 50 bars"), "{text}");
        assert!(text.contains("rsi_14="), "{text}");
        // A model without a tokenizer is estimated and flagged.
        let llm = settings("llama-3.1-70b");
        let symbols = vec!["AAPL".to_string()];
        let e = estimate(&Input {
            name: "t",
            pipeline: &p,
            llm: &llm,
            data_timezone: chrono_tz::America::New_York,
            symbols: &symbols,
            options: Options::default(),
        })
        .unwrap();
        assert!(e.llm_nodes.iter().all(|n| n.estimated));
        assert!(
            e.assumptions
                .iter()
                .any(|a| a.contains("4 characters a token"))
        );
        // An undefined provider is an error that names the node.
        let empty = BTreeMap::new();
        let err = estimate(&Input {
            name: "t",
            pipeline: &p,
            llm: &empty,
            data_timezone: chrono_tz::America::New_York,
            symbols: &symbols,
            options: Options::default(),
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "node bias: no [llm.default] provider in the settings"
        );
    }

    #[test]
    fn every_placeholder_of_the_templates_is_rendered() {
        let p = with_trigger(json!({ "bar_close": { "timeframe": "1d" } }), json!({}));
        let llm = settings("gpt-4o");
        let symbols = vec!["AAPL".to_string()];
        let input = Input {
            name: "t",
            pipeline: &p,
            llm: &llm,
            data_timezone: chrono_tz::America::New_York,
            symbols: &symbols,
            options: Options::default(),
        };
        let context = PromptContext {
            pipeline: "t".into(),
            node: String::new(),
            validation: false,
            symbol: "AAPL".into(),
            now: reference_now(),
            market: market_context(&layout(&p)),
            position: None,
            bias: upstream_bias(&p),
        };
        for node in &p.nodes[1..] {
            let r = render(&input, &node.id, &node.agent, &context).unwrap();
            let text = format!("{}\n---\n{}", r.system, r.user);
            assert!(!text.contains("{{"), "{text}");
            assert!(text.contains("Symbol: AAPL"), "{text}");
            assert!(r.format.is_some());
            if std::env::var_os("ZTRADED_SHOW_PROMPTS").is_some() {
                println!("{text}\n=====");
            }
        }
    }

    #[test]
    fn the_reference_week_is_regular() {
        let cal = UsEquityCalendar;
        let monday = reference_monday();
        for d in 0..7 {
            let date = monday + TimeDelta::days(d);
            let s = cal.session(date);
            assert_eq!(
                s.is_some(),
                date.weekday().num_days_from_monday() < 5,
                "{date}"
            );
            if let Some(s) = s {
                assert!(!s.early_close && !s.late_open, "{date}");
                assert_eq!((s.close - s.open).num_minutes(), 390);
            }
        }
        // "now" lies in the week.
        let now = crate::engine::clock::utc(reference_now());
        assert_eq!(now.date_naive(), monday + TimeDelta::days(4));
    }
}
