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
pub mod cassette;
pub mod chart;
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
    bias_validator: jsonschema::Validator,
    strategy_validator: jsonschema::Validator,
    recordings: Option<cassette::Recordings>,
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
            if std::env::var(&s.api_key_env).map_or(true, |k| k.trim().is_empty()) {
                tracing::warn!(provider = %name, variable = %s.api_key_env, "LLM provider has no API key in the environment: its nodes fail closed");
            }
            providers.insert(name.clone(), p);
        }
        let bias_schema = strict_schema::<BiasAnswer>();
        let strategy_schema = strict_schema::<StrategyAnswer>();
        let compile = |s: &Value| {
            jsonschema::validator_for(s).map_err(|e| format!("answer schema does not compile: {e}"))
        };
        Ok(LlmClient {
            providers,
            metrics,
            bias_validator: compile(&bias_schema)?,
            strategy_validator: compile(&strategy_schema)?,
            bias_schema,
            strategy_schema,
            recordings: None,
        })
    }

    /// This client recording or replaying answers (see [`cassette`]).
    pub fn with_recordings(mut self, recordings: cassette::Recordings) -> LlmClient {
        self.recordings = Some(recordings);
        self
    }

    /// The recordings in use.
    pub fn recordings(&self) -> Option<&cassette::Recordings> {
        self.recordings.as_ref()
    }

    /// How provider `name` is asked for structured output (`json_schema` for an unknown
    /// one: its calls fail anyway).
    fn structured_output(&self, name: &str) -> StructuredOutput {
        self.providers
            .get(name)
            .map_or(StructuredOutput::JsonSchema, |p| {
                p.settings.structured_output
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
        context: &PromptContext,
        provider: &str,
        model: Option<&str>,
        temperature: f64,
        messages: prompt::Rendered,
        schema_name: &str,
        schema: Option<&Value>,
        images: Vec<Vec<u8>>,
        parse: impl FnOnce(&str) -> Result<T, AnswerError>,
    ) -> LlmCall<T> {
        let Some(p) = self.providers.get(provider) else {
            return LlmCall::failed(AgentError::Unavailable(format!(
                "no [llm.{provider}] provider in ztraded.toml"
            )));
        };
        let model = model.unwrap_or(&p.settings.model).to_string();
        let response_format = match (schema, p.settings.structured_output) {
            (None, _) => None,
            (Some(schema), StructuredOutput::JsonSchema) => Some(json!({
                "type": "json_schema",
                "json_schema": { "name": schema_name, "strict": true, "schema": schema },
            })),
            (Some(_), StructuredOutput::JsonObject) => Some(json!({ "type": "json_object" })),
            (Some(_), StructuredOutput::None) => None,
        };
        let prompt::Rendered {
            template,
            version,
            system,
            user,
        } = messages;
        let mut list = Vec::new();
        if !system.is_empty() {
            list.push(json!({ "role": "system", "content": system }));
        }
        let charts = images.len();
        if images.is_empty() {
            list.push(json!({ "role": "user", "content": user }));
        } else {
            use base64::Engine as _;
            let mut parts = vec![json!({ "type": "text", "text": user })];
            for png in &images {
                let data = base64::engine::general_purpose::STANDARD.encode(png);
                parts.push(json!({
                    "type": "image_url",
                    "image_url": { "url": format!("data:image/png;base64,{data}") },
                }));
            }
            list.push(json!({ "role": "user", "content": parts }));
        }
        let request = ChatRequest {
            model: model.clone(),
            messages: list,
            temperature,
            response_format,
        };
        // The trace keeps the messages without the images' bytes (their size and hash).
        let mut shown = request.messages.clone();
        if charts > 0
            && let Some(parts) = shown
                .last_mut()
                .and_then(|m| m.get_mut("content"))
                .and_then(Value::as_array_mut)
        {
            for (part, png) in parts.iter_mut().skip(1).zip(&images) {
                use sha2::Digest;
                let hash = hex::encode(sha2::Sha256::digest(png));
                part["image_url"]["url"] = json!(format!(
                    "image/png, {} bytes, sha256 {}",
                    png.len(),
                    &hash[..16]
                ));
            }
        }
        let mut trace = json!({
            "provider": provider,
            "model": model,
            "prompt": { "template": template, "version": version, "messages": shown, "charts": charts },
        });
        let pipeline = context.pipeline.as_str();
        let cassette = match self
            .recordings
            .as_ref()
            .map(|r| r.of(pipeline, context.validation))
        {
            Some(Ok(c)) => c,
            Some(Err(e)) => return LlmCall::failed(AgentError::Unavailable(e)),
            None => None,
        };
        let answer = match &cassette {
            None => p.chat(&request, &self.metrics).await,
            Some(c) => {
                let body = request.body(p.settings.max_tokens);
                let key = cassette::key(provider, &body);
                trace["recording"] = json!({ "key": key, "file": c.path().display().to_string() });
                match c.answer(&key) {
                    Some(raw) => p.read(raw, &request, 0.0),
                    None if c.mode() == cassette::LlmRun::Replay => {
                        let why = format!(
                            "no recorded answer for node '{}' at {} (request {key}) in {}; record it with --llm record",
                            context.node,
                            prompt::time(context.now),
                            c.path().display()
                        );
                        c.missed(cassette::Miss {
                            pipeline: pipeline.to_string(),
                            node: context.node.clone(),
                            at: context.now,
                            key,
                        });
                        return LlmCall {
                            result: Err(AgentError::Unavailable(why)),
                            cost: Cost::default(),
                            trace,
                        };
                    }
                    None => {
                        if let Some(why) = c.over_cost() {
                            return LlmCall {
                                result: Err(AgentError::Budget(why)),
                                cost: Cost::default(),
                                trace,
                            };
                        }
                        let fresh = p.chat(&request, &self.metrics).await;
                        if let Ok(done) = &fresh
                            && let Err(e) = c.record(
                                &key,
                                provider,
                                &done.model,
                                &body,
                                &done.raw,
                                p.cost(done.usage),
                            )
                        {
                            tracing::warn!(error = %e, "LLM answer not recorded");
                        }
                        fresh
                    }
                }
            }
        };
        let completion = match answer {
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

/// The PNG charts of a node with `chart: true`: one per timeframe of `timeframes` (all of the
/// context's when empty) that has bars.
fn charts(
    wanted: bool,
    context: &PromptContext,
    timeframes: &[crate::market::Timeframe],
) -> Vec<Vec<u8>> {
    if !wanted {
        return Vec::new();
    }
    let Some(map) = context.market.as_object() else {
        return Vec::new();
    };
    let names: Vec<String> = if timeframes.is_empty() {
        map.keys().cloned().collect()
    } else {
        timeframes.iter().map(ToString::to_string).collect()
    };
    names
        .iter()
        .filter_map(|tf| {
            let indicators: Vec<String> = map
                .get(tf)?
                .get("values")
                .and_then(Value::as_object)
                .map(|v| v.keys().cloned().collect())
                .unwrap_or_default();
            chart::png(&chart::bars_of(&context.market, tf), &indicators)
        })
        .collect()
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
        let mode = self.structured_output(&config.provider);
        let messages = prompt::bias_prompt(config, context, mode, &self.bias_schema);
        let schema = &self.bias_schema;
        self.call(
            context,
            &config.provider,
            config.model.as_deref(),
            config.temperature,
            messages,
            "bias_signal",
            Some(schema),
            charts(config.chart, context, &config.timeframes),
            |content| {
                answer::parse_with::<BiasAnswer>(content, &self.bias_validator)?.into_signal()
            },
        )
        .await
    }

    async fn strategy(
        &self,
        config: &StrategyLlm,
        context: &PromptContext,
    ) -> LlmCall<StrategySignal> {
        let mode = self.structured_output(&config.provider);
        let messages = prompt::strategy_prompt(config, context, mode, &self.strategy_schema);
        let schema = &self.strategy_schema;
        let close = prompt::last_close(context, config.timeframe);
        let min = config.risk_reward_min;
        self.call(
            context,
            &config.provider,
            config.model.as_deref(),
            config.temperature,
            messages,
            "strategy_signal",
            Some(schema),
            charts(config.chart, context, &[config.timeframe]),
            |content| {
                answer::parse_with::<StrategyAnswer>(content, &self.strategy_validator)?
                    .into_signal(close, min)
            },
        )
        .await
    }

    async fn summary(
        &self,
        provider: &str,
        context: &PromptContext,
        facts: &Value,
    ) -> LlmCall<String> {
        let messages = prompt::summary_prompt(context, facts);
        self.call(
            context,
            provider,
            None,
            0.2,
            messages,
            "summary",
            None,
            Vec::new(),
            |content| {
                let text = content.trim();
                if text.is_empty() {
                    return Err(AnswerError::Empty);
                }
                Ok(text.chars().take(2_000).collect())
            },
        )
        .await
    }
}
