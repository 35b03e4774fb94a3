//! One OpenAI-compatible chat-completions provider (`[llm.<name>]`): the `async-openai`
//! client pointed at its `base_url`, with its key from `api_key_env`, a per-attempt
//! `timeout`, `max_retries` retries of 429 / 5xx / refused connections (exponential backoff
//! from 100 ms, at most 8 s, or the provider's `Retry-After` seconds: the crate's
//! `OpenAIRetryLayer`), at most `max_concurrency` calls in flight, and an overall deadline of
//! `timeout × (max_retries + 1)` so a long `Retry-After` cannot hold an execution forever.
//!
//! Requests carry only `model`, `messages`, `temperature`, `max_tokens` and, with structured
//! outputs, `response_format`: fields every OpenAI-compatible server accepts. Responses are
//! read leniently as JSON (the crate's "bring your own types" calls): a provider's extra
//! fields, an unknown `service_tier`, an empty or missing `finish_reason` do not fail the
//! call; a missing `usage` is estimated (and flagged) from the text lengths.

use crate::config::settings::LlmSettings;
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::ReqwestService;
use async_openai::middleware::retry::OpenAIRetryLayer;
use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// `ztraded_llm_requests_total{provider,model,result}`.
pub const LLM_REQUESTS_TOTAL: &str = "ztraded_llm_requests_total";
/// `ztraded_llm_tokens_total{provider,model,kind}`.
pub const LLM_TOKENS_TOTAL: &str = "ztraded_llm_tokens_total";
/// `ztraded_llm_cost_dollars_total{pipeline}`.
pub const LLM_COST_DOLLARS_TOTAL: &str = "ztraded_llm_cost_dollars_total";
/// `ztraded_llm_request_duration_seconds{provider}`.
pub const LLM_REQUEST_DURATION_SECONDS: &str = "ztraded_llm_request_duration_seconds";

/// The LLM metric families, registered once per process registry.
#[derive(Clone, Debug)]
pub struct LlmMetrics {
    requests: IntCounterVec,
    tokens: IntCounterVec,
    cost: prometheus::CounterVec,
    duration: HistogramVec,
}

impl LlmMetrics {
    /// Registers the families in `registry` (a fresh private registry when `None`).
    ///
    /// # Errors
    /// A family already registered under the same name.
    pub fn register(registry: Option<&Registry>) -> prometheus::Result<LlmMetrics> {
        let requests = IntCounterVec::new(
            Opts::new(
                LLM_REQUESTS_TOTAL,
                "LLM chat-completion calls by provider, model and result: ok, invalid (not \
                 JSON, schema or semantic violation), refused, truncated (finish_reason \
                 length), rate_limited (429 after the retries), error (other HTTP or \
                 connection failures), timeout.",
            ),
            &["provider", "model", "result"],
        )?;
        let tokens = IntCounterVec::new(
            Opts::new(
                LLM_TOKENS_TOTAL,
                "Tokens of LLM calls by provider, model and kind (input, output), as the \
                 provider's usage reports them or estimated when it reports none.",
            ),
            &["provider", "model", "kind"],
        )?;
        let cost = prometheus::CounterVec::new(
            Opts::new(
                LLM_COST_DOLLARS_TOTAL,
                "USD spent on LLM calls by pipeline (tokens times the provider's prices).",
            ),
            &["pipeline"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                LLM_REQUEST_DURATION_SECONDS,
                "Seconds from sending an LLM call to its answer, retries included, by \
                 provider.",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
            &["provider"],
        )?;
        if let Some(r) = registry {
            r.register(Box::new(requests.clone()))?;
            r.register(Box::new(tokens.clone()))?;
            r.register(Box::new(cost.clone()))?;
            r.register(Box::new(duration.clone()))?;
        }
        Ok(LlmMetrics {
            requests,
            tokens,
            cost,
            duration,
        })
    }

    /// Name, help text and type of each family: what `/metrics` lists with its `# HELP` and
    /// `# TYPE` lines before the first call gives it a series.
    pub fn families(&self) -> Vec<(String, String, MetricType)> {
        let collectors: [(&dyn Collector, MetricType); 4] = [
            (&self.requests, MetricType::COUNTER),
            (&self.tokens, MetricType::COUNTER),
            (&self.cost, MetricType::COUNTER),
            (&self.duration, MetricType::HISTOGRAM),
        ];
        collectors
            .into_iter()
            .flat_map(|(c, kind)| {
                c.desc()
                    .into_iter()
                    .map(move |d| (d.fq_name.clone(), d.help.clone(), kind))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Counts one call.
    pub fn call(&self, provider: &str, model: &str, result: CallResult, usage: Option<Usage>) {
        self.requests
            .with_label_values(&[provider, model, result.as_str()])
            .inc();
        if let Some(u) = usage {
            self.tokens
                .with_label_values(&[provider, model, "input"])
                .inc_by(u.input_tokens);
            self.tokens
                .with_label_values(&[provider, model, "output"])
                .inc_by(u.output_tokens);
        }
    }

    /// Adds `usd` to the pipeline's LLM spending.
    pub fn cost(&self, pipeline: &str, usd: Decimal) {
        use rust_decimal::prelude::ToPrimitive;
        self.cost
            .with_label_values(&[pipeline])
            .inc_by(usd.to_f64().unwrap_or(0.0).max(0.0));
    }

    fn duration(&self, provider: &str, seconds: f64) {
        self.duration
            .with_label_values(&[provider])
            .observe(seconds);
    }
}

/// The `result` label of [`LLM_REQUESTS_TOTAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// A valid decision.
    Ok,
    /// Not JSON, or against the schema, or semantically wrong.
    Invalid,
    /// The model refused (`refusal`, or `finish_reason: content_filter`).
    Refused,
    /// Cut off at `max_tokens` (`finish_reason: length`).
    Truncated,
    /// HTTP 429 after the retries.
    RateLimited,
    /// Any other HTTP status, a connection failure, an unreadable body.
    Error,
    /// No answer within the timeout.
    Timeout,
}

impl CallResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CallResult::Ok => "ok",
            CallResult::Invalid => "invalid",
            CallResult::Refused => "refused",
            CallResult::Truncated => "truncated",
            CallResult::RateLimited => "rate_limited",
            CallResult::Error => "error",
            CallResult::Timeout => "timeout",
        }
    }
}

/// Tokens of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// The provider reported no `usage`: estimated as one token per 4 characters of the
    /// prompt and of the answer, rounded up.
    pub estimated: bool,
}

/// A call that did not produce an answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No API key in the environment variable the settings name.
    #[error("provider '{provider}': the environment variable {var} holding its API key is not set")]
    NoKey {
        /// Provider name.
        provider: String,
        /// `api_key_env`.
        var: String,
    },
    /// The key variable holds characters an HTTP header cannot carry (a line break
    /// inside, a control character, non-ASCII).
    #[error(
        "provider '{provider}': the API key in {var} is not a valid HTTP header value (a line break or a control character inside it?)"
    )]
    BadKey {
        /// Provider name.
        provider: String,
        /// `api_key_env`.
        var: String,
    },
    /// HTTP 429 after the retries.
    #[error("provider '{provider}' is rate limiting (HTTP 429) after {retries} retries: {message}")]
    RateLimited {
        /// Provider name.
        provider: String,
        /// Retries made.
        retries: u32,
        /// The provider's message.
        message: String,
    },
    /// Another HTTP error status.
    #[error("provider '{provider}' answered HTTP {status}: {message}")]
    Status {
        /// Provider name.
        provider: String,
        /// HTTP status code.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// No answer in time.
    #[error("provider '{provider}' did not answer within {seconds} s")]
    Timeout {
        /// Provider name.
        provider: String,
        /// The limit, seconds.
        seconds: u64,
    },
    /// Connection refused or reset, TLS failure, a body that is not a chat completion.
    #[error("provider '{provider}': {message}")]
    Transport {
        /// Provider name.
        provider: String,
        /// What failed.
        message: String,
    },
}

impl CallError {
    /// The metrics label.
    pub fn result(&self) -> CallResult {
        match self {
            CallError::RateLimited { .. } => CallResult::RateLimited,
            CallError::Timeout { .. } => CallResult::Timeout,
            _ => CallResult::Error,
        }
    }
}

/// What a provider answered (the first choice).
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The assistant message's text (`""` when there is none).
    pub content: String,
    /// The message's `refusal`, when the model refused.
    pub refusal: Option<String>,
    /// `finish_reason` as sent (`None` when missing or empty).
    pub finish_reason: Option<String>,
    /// Tokens, reported or estimated.
    pub usage: Usage,
    /// The model that answered (the response's `model`, else the requested one).
    pub model: String,
    /// The whole response body, as sent.
    pub raw: Value,
    /// Seconds from send to answer, retries included.
    pub seconds: f64,
}

/// One chat-completions request.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    /// Model name.
    pub model: String,
    /// `[{role, content}]`; a user content may be an array of text and image parts.
    pub messages: Vec<Value>,
    /// Sampling temperature 0–2.
    pub temperature: f64,
    /// `response_format`, when structured output is asked for.
    pub response_format: Option<Value>,
}

impl ChatRequest {
    /// The JSON body sent.
    pub fn body(&self, max_tokens: u32) -> Value {
        let mut body = json!({
            "model": self.model,
            "messages": self.messages,
            "temperature": self.temperature,
            "max_tokens": max_tokens,
        });
        if let Some(f) = &self.response_format {
            body["response_format"] = f.clone();
        }
        body
    }
}

/// A configured provider.
pub struct Provider {
    /// The `[llm.<name>]` name.
    pub name: String,
    /// Its settings.
    pub settings: LlmSettings,
    client: Option<Client<OpenAIConfig>>,
    /// The key variable holds characters an HTTP header cannot carry.
    bad_key: bool,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("base_url", &self.settings.base_url)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// The provider `name` with `settings`; the API key is read from the environment now (a
    /// missing key fails every call with [`CallError::NoKey`], it does not stop the daemon).
    ///
    /// # Errors
    /// The HTTP client cannot be built (no TLS provider).
    pub fn new(name: &str, settings: &LlmSettings) -> Result<Provider, String> {
        // Surrounding whitespace (a newline from a secrets file) is not part of a key; a key
        // that cannot be an HTTP header value is refused here, not at the first call.
        let key = std::env::var(&settings.api_key_env)
            .ok()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty());
        let bad_key = key.as_ref().is_some_and(|k| {
            reqwest::header::HeaderValue::from_str(&format!("Bearer {k}")).is_err()
        });
        let key = key.filter(|_| !bad_key);
        let client = match key {
            Some(key) => {
                crate::install_tls_provider();
                let http = reqwest::Client::builder()
                    .user_agent(concat!("ztraded/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("llm.{name}: HTTP client: {e}"))?;
                let service = tower::ServiceBuilder::new()
                    .layer(OpenAIRetryLayer::new(settings.max_retries as usize))
                    .map_err(OpenAIError::from)
                    .timeout(settings.timeout.0)
                    .service(ReqwestService::new(http));
                let config = OpenAIConfig::new()
                    .with_api_base(settings.base_url.trim_end_matches('/'))
                    .with_api_key(key)
                    .with_org_id("")
                    .with_project_id("");
                Some(Client::with_config(config).with_http_service(service))
            }
            None => None,
        };
        Ok(Provider {
            name: name.to_string(),
            settings: settings.clone(),
            bad_key,
            client,
            permits: Arc::new(Semaphore::new(settings.max_concurrency.max(1) as usize)),
        })
    }

    /// Sends `request` and reads the first choice.
    ///
    /// # Errors
    /// [`CallError`]: no key, 429 after the retries, another HTTP status, a timeout, a
    /// transport failure or a body without a choice.
    pub async fn chat(
        &self,
        request: &ChatRequest,
        metrics: &LlmMetrics,
    ) -> Result<Completion, CallError> {
        let result = self.send(request).await;
        match &result {
            Ok(c) => metrics.duration(&self.name, c.seconds),
            Err(e) => metrics.call(&self.name, &request.model, e.result(), None),
        }
        result
    }

    async fn send(&self, request: &ChatRequest) -> Result<Completion, CallError> {
        let Some(client) = &self.client else {
            if self.bad_key {
                return Err(CallError::BadKey {
                    provider: self.name.clone(),
                    var: self.settings.api_key_env.clone(),
                });
            }
            return Err(CallError::NoKey {
                provider: self.name.clone(),
                var: self.settings.api_key_env.clone(),
            });
        };
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| CallError::Transport {
                provider: self.name.clone(),
                message: e.to_string(),
            })?;
        let body = request.body(self.settings.max_tokens);
        let deadline = self.deadline();
        let started = Instant::now();
        let chat = client.chat();
        let call = chat.create_byot::<Value, Value>(body);
        let answer = match tokio::time::timeout(deadline, call).await {
            Err(_) => Err(CallError::Timeout {
                provider: self.name.clone(),
                seconds: deadline.as_secs(),
            }),
            Ok(Err(e)) => Err(self.error(e)),
            Ok(Ok(raw)) => Ok(raw),
        }?;
        let seconds = started.elapsed().as_secs_f64();
        self.read(answer, request, seconds)
    }

    fn error(&self, e: OpenAIError) -> CallError {
        let provider = self.name.clone();
        match e {
            OpenAIError::ApiError(api) if api.status_code.as_u16() == 429 => {
                CallError::RateLimited {
                    provider,
                    retries: self.settings.max_retries,
                    message: api.api_error.message,
                }
            }
            OpenAIError::ApiError(api) => CallError::Status {
                provider,
                status: api.status_code.as_u16(),
                message: crate::llm::answer::excerpt(&api.api_error.message),
            },
            OpenAIError::Boxed(b) if b.is::<tower::timeout::error::Elapsed>() => {
                CallError::Timeout {
                    provider,
                    seconds: self.settings.timeout.0.as_secs(),
                }
            }
            OpenAIError::Reqwest(r) if r.is_timeout() => CallError::Timeout {
                provider,
                seconds: self.settings.timeout.0.as_secs(),
            },
            OpenAIError::JSONDeserialize(err, body) => CallError::Transport {
                provider,
                message: format!(
                    "the response is not JSON ({err}): {}",
                    crate::llm::answer::excerpt(&body)
                ),
            },
            other => CallError::Transport {
                provider,
                message: other.to_string(),
            },
        }
    }

    /// Reads a chat completion body leniently.
    pub(crate) fn read(
        &self,
        raw: Value,
        request: &ChatRequest,
        seconds: f64,
    ) -> Result<Completion, CallError> {
        let bad = |what: &str| CallError::Transport {
            provider: self.name.clone(),
            message: format!(
                "the response is not a chat completion ({what}): {}",
                crate::llm::answer::excerpt(&raw.to_string())
            ),
        };
        let choice = raw
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
            .ok_or_else(|| bad("no choices"))?;
        let message = choice.get("message").ok_or_else(|| bad("no message"))?;
        let content = match message.get("content") {
            Some(Value::String(s)) => s.clone(),
            // Content parts: the text parts, joined.
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        };
        let refusal = message
            .get("refusal")
            .and_then(Value::as_str)
            .filter(|r| !r.trim().is_empty())
            .map(str::to_string);
        let finish_reason = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        let reported = raw.get("usage").and_then(|u| {
            let input = u.get("prompt_tokens").and_then(Value::as_u64);
            let output = u.get("completion_tokens").and_then(Value::as_u64);
            match (input, output) {
                (None, None) => None,
                (i, o) => Some(Usage {
                    input_tokens: i.unwrap_or(0),
                    output_tokens: o.unwrap_or(0),
                    estimated: false,
                }),
            }
        });
        let usage = reported.unwrap_or_else(|| Usage {
            input_tokens: estimate_tokens(
                &request
                    .messages
                    .iter()
                    .map(Value::to_string)
                    .collect::<String>(),
            ),
            output_tokens: estimate_tokens(&content),
            estimated: true,
        });
        let model = raw
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .unwrap_or(&request.model)
            .to_string();
        Ok(Completion {
            content,
            refusal,
            finish_reason,
            usage,
            model,
            raw,
            seconds,
        })
    }

    /// USD of `usage` at this provider's prices:
    /// `input × input_usd_per_1k_tokens / 1000 + output × output_usd_per_1k_tokens / 1000`.
    pub fn cost(&self, usage: Usage) -> Decimal {
        (Decimal::from(usage.input_tokens) * self.settings.input_usd_per_1k_tokens
            + Decimal::from(usage.output_tokens) * self.settings.output_usd_per_1k_tokens)
            / Decimal::ONE_THOUSAND
    }

    /// The overall deadline of one call (see the module documentation).
    pub fn deadline(&self) -> Duration {
        self.settings
            .timeout
            .0
            .saturating_mul(self.settings.max_retries + 1)
    }
}

/// Tokens of `text` when the provider reports none: one per 4 characters, rounded up (the
/// rule of thumb OpenAI documents for English text).
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}
