//! LLM agents through any OpenAI-compatible chat-completions provider (DESIGN.md §2.1,
//! §2.4 `[llm.<name>]`).
//!
//! [`LlmClient`] implements [`LlmAgents`]: it renders the node's prompt template
//! ([`prompt`]) with the market context, sends it to the node's provider ([`provider`]) with
//! the answer's JSON Schema ([`answer`]) as the provider's structured output mode asks, and
//! turns the answer into a decision or fails the node closed: an HTTP error, a timeout, a
//! refusal, a cut-off answer (`finish_reason: length`), content that is not JSON, violates
//! the schema or is semantically wrong all end the execution as `failed` with the reason,
//! and no order. Every call is costed (tokens × the provider's prices, also for a refused
//! answer), counted in the `ztraded_llm_*` metrics, and traced in the node's output (the
//! template and version, the rendered messages, the raw response, usage and latency).

pub mod answer;
pub mod estimate;
pub mod prompt;
pub mod provider;

use crate::agents::{AgentError, Cost, LlmAgents, LlmCall, PromptContext};
use crate::config::pipeline::{BiasLlm, StrategyLlm};
use crate::config::settings::{LlmSettings, StructuredOutput};
use crate::domain::{BiasSignal, StrategySignal};
use answer::{AnswerError, BiasAnswer, StrategyAnswer, strict_schema};
use async_trait::async_trait;
use provider::{CallResult, ChatRequest, Completion, LlmMetrics, Provider};
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub use provider::{
    LLM_COST_DOLLARS_TOTAL, LLM_REQUEST_DURATION_SECONDS, LLM_REQUESTS_TOTAL, LLM_TOKENS_TOTAL,
};

/// The LLM providers of a process, by `[llm.<name>]` name.
pub struct LlmClient {
    providers: BTreeMap<String, Provider>,
    metrics: LlmMetrics,
    bias_schema: Value,
    strategy_schema: Value,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl LlmClient {
    /// A client for every provider of `settings`, its metrics registered in `registry` (the
    /// daemon's; `None` for a backtest). A provider whose key variable is unset is kept: its
    /// calls fail closed saying so (logged once here).
    ///
    /// # Errors
    /// An HTTP client that cannot be built, or metric families already registered.
    pub fn new(
        settings: &BTreeMap<String, LlmSettings>,
        registry: Option<&prometheus::Registry>,
    ) -> Result<LlmClient, String> {
        let metrics = LlmMetrics::register(registry).map_err(|e| format!("LLM metrics: {e}"))?;
        let mut providers = BTreeMap::new();
        for (name, s) in settings {
            let p = Provider::new(name, s)?;
            if std::env::var(&s.api_key_env).map_or(true, |k| k.is_empty()) {
                tracing::warn!(provider = %name, variable = %s.api_key_env, "LLM provider has no API key in the environment: its nodes fail closed");
            }
            providers.insert(name.clone(), p);
        }
        Ok(LlmClient {
            providers,
            metrics,
            bias_schema: strict_schema::<BiasAnswer>(),
            strategy_schema: strict_schema::<StrategyAnswer>(),
        })
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.get(name)
    }

    /// Sends `messages` to `provider` and parses the answer with `parse`; costs, counts and
    /// traces the call.
    #[allow(clippy::too_many_arguments)]
    async fn call<T>(
        &self,
        pipeline: &str,
        provider: &str,
        model: Option<&str>,
        temperature: f64,
        template: prompt::Template,
        messages: (String, String),
        schema_name: &str,
        schema: &Value,
        parse: impl FnOnce(&str) -> Result<T, AnswerError>,
    ) -> LlmCall<T> {
        let Some(p) = self.providers.get(provider) else {
            return LlmCall::failed(AgentError::Unavailable(format!(
                "no [llm.{provider}] provider in ztraded.toml"
            )));
        };
        let model = model.unwrap_or(&p.settings.model).to_string();
        let response_format = match p.settings.structured_output {
            StructuredOutput::JsonSchema => Some(json!({
                "type": "json_schema",
                "json_schema": { "name": schema_name, "strict": true, "schema": schema },
            })),
            StructuredOutput::JsonObject => Some(json!({ "type": "json_object" })),
            StructuredOutput::None => None,
        };
        let (system, user) = messages;
        let mut list = Vec::new();
        if !system.is_empty() {
            list.push(json!({ "role": "system", "content": system }));
        }
        list.push(json!({ "role": "user", "content": user }));
        let request = ChatRequest {
            model: model.clone(),
            messages: list,
            temperature,
            response_format,
        };
        let mut trace = json!({
            "provider": provider,
            "model": model,
            "prompt": { "template": template.name, "version": template.version, "messages": request.messages },
        });
        let completion = match p.chat(&request, &self.metrics).await {
            Ok(c) => c,
            Err(e) => {
                trace["error"] = json!(e.to_string());
                return LlmCall {
                    result: Err(AgentError::Unavailable(e.to_string())),
                    cost: Cost::default(),
                    trace,
                };
            }
        };
        let cost = Cost {
            input_tokens: completion.usage.input_tokens,
            output_tokens: completion.usage.output_tokens,
            usd: p.cost(completion.usage),
            estimated: completion.usage.estimated,
        };
        self.metrics.cost(pipeline, cost.usd);
        trace["response"] = completion.raw.clone();
        trace["usage"] = json!({
            "input_tokens": cost.input_tokens,
            "output_tokens": cost.output_tokens,
            "estimated": cost.estimated,
            "usd": cost.usd,
        });
        trace["seconds"] = json!(completion.seconds);
        let (result, label) = judge(&completion, parse);
        self.metrics
            .call(provider, &completion.model, label, Some(completion.usage));
        LlmCall {
            result,
            cost,
            trace,
        }
    }
}

/// The decision in `completion`, or why there is none, with its metrics label.
fn judge<T>(
    completion: &Completion,
    parse: impl FnOnce(&str) -> Result<T, AnswerError>,
) -> (Result<T, AgentError>, CallResult) {
    if let Some(r) = &completion.refusal {
        return (
            Err(AgentError::InvalidOutput(format!("the model refused: {r}"))),
            CallResult::Refused,
        );
    }
    match completion.finish_reason.as_deref() {
        Some("length") => {
            return (
                Err(AgentError::InvalidOutput(
                    "the answer was cut off at max_tokens (finish_reason: length)".into(),
                )),
                CallResult::Truncated,
            );
        }
        Some("content_filter") => {
            return (
                Err(AgentError::InvalidOutput(
                    "the provider's content filter stopped the answer (finish_reason: content_filter)"
                        .into(),
                )),
                CallResult::Refused,
            );
        }
        _ => {}
    }
    match parse(&completion.content) {
        Ok(v) => (Ok(v), CallResult::Ok),
        Err(e) => (
            Err(AgentError::InvalidOutput(e.to_string())),
            CallResult::Invalid,
        ),
    }
}

#[async_trait]
impl LlmAgents for LlmClient {
    async fn bias(&self, config: &BiasLlm, context: &PromptContext) -> LlmCall<BiasSignal> {
        let mode = self
            .providers
            .get(&config.provider)
            .map_or(StructuredOutput::JsonSchema, |p| {
                p.settings.structured_output
            });
        let template = prompt::BIAS;
        let messages = template.render(&[
            ("symbol", context.symbol.clone()),
            ("time", prompt::time(context.now)),
            ("market", prompt::market(context, &config.timeframes)),
            ("instructions", config.prompt.clone().unwrap_or_default()),
            ("format", prompt::format_note(mode, &self.bias_schema)),
        ]);
        let schema = &self.bias_schema;
        self.call(
            &context.pipeline,
            &config.provider,
            config.model.as_deref(),
            config.temperature,
            template,
            messages,
            "bias_signal",
            schema,
            |content| answer::parse_checked::<BiasAnswer>(content, schema)?.into_signal(),
        )
        .await
    }

    async fn strategy(
        &self,
        config: &StrategyLlm,
        context: &PromptContext,
    ) -> LlmCall<StrategySignal> {
        let mode = self
            .providers
            .get(&config.provider)
            .map_or(StructuredOutput::JsonSchema, |p| {
                p.settings.structured_output
            });
        let template = prompt::STRATEGY;
        let messages = template.render(&[
            ("symbol", context.symbol.clone()),
            ("time", prompt::time(context.now)),
            ("timeframe", config.timeframe.to_string()),
            ("risk_reward_min", config.risk_reward_min.to_string()),
            ("position", prompt::position(context)),
            ("bias", prompt::bias(context)),
            ("market", prompt::market(context, &[config.timeframe])),
            ("instructions", config.prompt.clone().unwrap_or_default()),
            ("format", prompt::format_note(mode, &self.strategy_schema)),
        ]);
        let schema = &self.strategy_schema;
        let close = prompt::last_close(context, config.timeframe);
        let min = config.risk_reward_min;
        self.call(
            &context.pipeline,
            &config.provider,
            config.model.as_deref(),
            config.temperature,
            template,
            messages,
            "strategy_signal",
            schema,
            |content| {
                answer::parse_checked::<StrategyAnswer>(content, schema)?.into_signal(close, min)
            },
        )
        .await
    }
}
