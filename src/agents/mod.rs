//! The agents of a pipeline, one file per agent type (DESIGN.md §2.1). Rule-based agents
//! are synchronous functions over the symbol's feed; LLM agents go through [`LlmAgents`],
//! an async interface the LLM provider client implements.

pub mod bias;
pub mod dag;
pub mod gates;
pub mod market_data;
pub mod reporting;
pub mod risk_manager;
pub mod strategy;
pub mod trade_manager;

use crate::config::pipeline::{BiasLlm, StrategyLlm};
use crate::domain::{BiasSignal, StrategySignal};
use async_trait::async_trait;
use rust_decimal::Decimal;

/// A node that could not do its job. The execution fails closed: no order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The agent's provider is not available.
    #[error("{0}")]
    Unavailable(String),
    /// The provider answered something that is not the expected output type.
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    /// The node's budget does not cover the call.
    #[error("budget exhausted: {0}")]
    Budget(String),
}

/// What an LLM call cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// USD.
    pub usd: Decimal,
    /// The provider reported no token usage: the tokens are estimated from the text.
    pub estimated: bool,
}

/// The market context an LLM agent sends: the pipeline, the symbol, the time, the bars and
/// indicator values of each timeframe (built by the market_data agent), the position and the
/// upstream bias.
#[derive(Clone, Debug)]
pub struct PromptContext {
    /// Pipeline name (for cost accounting).
    pub pipeline: String,
    /// The node asking.
    pub node: String,
    /// Whether the pipeline runs in `validation` mode (the daemon records its calls).
    pub validation: bool,
    /// Ticker symbol.
    pub symbol: String,
    /// Unix seconds.
    pub now: i64,
    /// `{timeframe: {bars: [[ts, o, h, l, c, v], ...], values: {...}}}`.
    pub market: serde_json::Value,
    /// This pipeline's position in the symbol, if any.
    pub position: Option<crate::engine::state::PositionView>,
    /// The upstream bias, for the strategy.
    pub bias: Option<BiasSignal>,
}

/// One LLM node's call: the decision or why there is none, what it cost (also when the
/// answer was refused: the tokens were spent), and the trace stored with the node output
/// (prompt template and version, rendered messages, raw response, usage, latency).
#[derive(Clone, Debug)]
pub struct LlmCall<T> {
    /// The decision, or why the node fails closed.
    pub result: Result<T, AgentError>,
    /// Tokens and USD.
    pub cost: Cost,
    /// `{provider, model, prompt: {template, version, messages}, response, usage, seconds}`.
    pub trace: serde_json::Value,
}

impl<T> LlmCall<T> {
    /// A call that never reached a provider.
    pub fn failed(error: AgentError) -> LlmCall<T> {
        LlmCall {
            result: Err(error),
            cost: Cost::default(),
            trace: serde_json::Value::Null,
        }
    }
}

/// LLM-backed agents: the OpenAI-compatible client ([`crate::llm::LlmClient`]) implements
/// this. Every answer is a decision or a reason to fail closed; nothing here panics on what
/// a provider sends.
#[async_trait]
pub trait LlmAgents: Send + Sync {
    /// A bias from `config`'s provider.
    async fn bias(&self, config: &BiasLlm, context: &PromptContext) -> LlmCall<BiasSignal>;
    /// A trade plan from `config`'s provider.
    async fn strategy(
        &self,
        config: &StrategyLlm,
        context: &PromptContext,
    ) -> LlmCall<StrategySignal>;
    /// A written summary (plain text) of what the execution decided (`facts`: the bias,
    /// the plan, the risk decision and the trade as JSON) from `provider`.
    async fn summary(
        &self,
        provider: &str,
        context: &PromptContext,
        facts: &serde_json::Value,
    ) -> LlmCall<String>;
}

/// No LLM client: LLM nodes fail closed with a clear reason.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLlm;

#[async_trait]
impl LlmAgents for NoLlm {
    async fn bias(&self, config: &BiasLlm, _: &PromptContext) -> LlmCall<BiasSignal> {
        LlmCall::failed(AgentError::Unavailable(format!(
            "LLM provider '{}' has no client in this process; the node fails closed",
            config.provider
        )))
    }
    async fn strategy(&self, config: &StrategyLlm, _: &PromptContext) -> LlmCall<StrategySignal> {
        LlmCall::failed(AgentError::Unavailable(format!(
            "LLM provider '{}' has no client in this process; the node fails closed",
            config.provider
        )))
    }
    async fn summary(
        &self,
        provider: &str,
        _: &PromptContext,
        _: &serde_json::Value,
    ) -> LlmCall<String> {
        LlmCall::failed(AgentError::Unavailable(format!(
            "LLM provider '{provider}' has no client in this process"
        )))
    }
}
