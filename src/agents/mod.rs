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
}

/// The market context an LLM agent sends: the symbol, the time and the bars and indicator
/// values of each timeframe, as JSON (built by the market_data agent).
#[derive(Clone, Debug)]
pub struct PromptContext {
    /// Ticker symbol.
    pub symbol: String,
    /// Unix seconds.
    pub now: i64,
    /// `{timeframe: {bars: [...], indicators: {...}}}`.
    pub market: serde_json::Value,
    /// The upstream bias, for the strategy.
    pub bias: Option<BiasSignal>,
}

/// LLM-backed agents: the OpenAI-compatible client implements this.
#[async_trait]
pub trait LlmAgents: Send + Sync {
    /// A bias from `config`'s provider.
    async fn bias(
        &self,
        config: &BiasLlm,
        context: &PromptContext,
    ) -> Result<(BiasSignal, Cost), AgentError>;
    /// A trade plan from `config`'s provider.
    async fn strategy(
        &self,
        config: &StrategyLlm,
        context: &PromptContext,
    ) -> Result<(StrategySignal, Cost), AgentError>;
}

/// No LLM client: LLM nodes fail closed with a clear reason.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLlm;

#[async_trait]
impl LlmAgents for NoLlm {
    async fn bias(
        &self,
        config: &BiasLlm,
        _: &PromptContext,
    ) -> Result<(BiasSignal, Cost), AgentError> {
        Err(AgentError::Unavailable(format!(
            "LLM provider '{}' has no client in this process; the node fails closed",
            config.provider
        )))
    }
    async fn strategy(
        &self,
        config: &StrategyLlm,
        _: &PromptContext,
    ) -> Result<(StrategySignal, Cost), AgentError> {
        Err(AgentError::Unavailable(format!(
            "LLM provider '{}' has no client in this process; the node fails closed",
            config.provider
        )))
    }
}
