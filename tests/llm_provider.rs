//! The LLM client against a local fake OpenAI-compatible server over real HTTP: valid
//! structured answers, 429 with `Retry-After`, 500, a timeout, invalid JSON, schema
//! violations, a refusal, `finish_reason: length`, unknown extra fields, missing `usage`,
//! semantically wrong plans. Each one: no panic, the node fails closed where it must, the
//! cost is recorded where tokens were reported, and the metrics move.

mod fake_openai;

use fake_openai::{FakeOpenAi, KEY, Reply};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use ztraded::agents::{AgentError, LlmAgents, PromptContext};
use ztraded::config::common::Duration as ConfigDuration;
use ztraded::config::pipeline::{BiasLlm, StrategyLlm};
use ztraded::config::settings::{LlmSettings, StructuredOutput};
use ztraded::domain::{Action, Bias};
use ztraded::llm::LlmClient;

const KEY_VAR: &str = "ZTRADED_TEST_FAKE_OPENAI_KEY";

fn settings(
    fake: &FakeOpenAi,
    mode: StructuredOutput,
    retries: u32,
    timeout_ms: u64,
) -> LlmSettings {
    // Every test sets the same value: concurrent writes agree.
    unsafe { std::env::set_var(KEY_VAR, KEY) };
    LlmSettings {
        base_url: fake.base_url.clone(),
        api_key_env: KEY_VAR.into(),
        model: "fake-model".into(),
        input_usd_per_1k_tokens: Decimal::new(25, 4), // 0.0025
        output_usd_per_1k_tokens: Decimal::new(1, 2), // 0.01
        timeout: ConfigDuration(Duration::from_millis(timeout_ms)),
        max_tokens: 512,
        max_retries: retries,
        max_concurrency: 4,
        structured_output: mode,
    }
}

fn client(s: LlmSettings) -> (LlmClient, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let mut map = BTreeMap::new();
    map.insert("default".to_string(), s);
    (
        LlmClient::new(&map, Some(&registry)).expect("client"),
        registry,
    )
}

fn context() -> PromptContext {
    let bars: Vec<Value> = (0..30)
        .map(|i| {
            json!([
                1_700_000_000 + i * 86_400,
                100.0 + i as f64,
                101.0 + i as f64,
                99.0 + i as f64,
                100.5 + i as f64,
                1_000_000
            ])
        })
        .collect();
    PromptContext {
        pipeline: "llm-test".into(),
        node: "strategy".into(),
        validation: false,
        symbol: "AAPL".into(),
        now: 1_700_000_000 + 30 * 86_400,
        market: json!({ "1d": { "bars": bars, "values": { "sma_20": 120.1, "rsi_14": 61.5 } } }),
        position: None,
        bias: None,
    }
}

fn bias_config() -> BiasLlm {
    serde_json::from_value(json!({ "provider": "default", "timeframes": ["1d"] })).unwrap()
}

fn strategy_config() -> StrategyLlm {
    serde_json::from_value(
        json!({ "provider": "default", "timeframe": "1d", "risk_reward_min": 1.5 }),
    )
    .unwrap()
}

/// The value of the series of `family` whose labels include all of `labels`.
fn metric(registry: &prometheus::Registry, family: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for f in registry.gather() {
        if f.name() != family {
            continue;
        }
        let histogram = f.get_field_type() == prometheus::proto::MetricType::HISTOGRAM;
        for m in f.get_metric() {
            let ok = labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            });
            if ok {
                total += if histogram {
                    m.get_histogram().get_sample_count() as f64
                } else {
                    m.get_counter().get_value()
                };
            }
        }
    }
    total
}

const GOOD_PLAN: &str = r#"{"action":"buy","conviction":72,"entry_price":130.0,"stop_loss":126.0,"target_1":138.0,"target_2":142.0,"reasoning":"breakout above the 20-day mean"}"#;

#[tokio::test]
async fn a_structured_plan_becomes_a_signal_with_its_cost_and_trace() {
    let fake = FakeOpenAi::start().await;
    fake.script([Reply::content(GOOD_PLAN)]);
    let (c, registry) = client(settings(&fake, StructuredOutput::JsonSchema, 0, 5_000));
    let call = c.strategy(&strategy_config(), &context()).await;
    let s = call.result.expect("a plan");
    assert_eq!(s.action, Action::Buy);
    assert_eq!(s.entry_price, Some(Decimal::from(130)));
    assert_eq!(s.stop_loss, Some(Decimal::from(126)));
    assert_eq!(s.reward_risk, Some(2.0));
    // 1200 × 0.0025 / 1000 + 80 × 0.01 / 1000 = 0.003 + 0.0008
    assert_eq!(call.cost.usd, Decimal::new(38, 4));
    assert_eq!(
        (call.cost.input_tokens, call.cost.output_tokens),
        (1200, 80)
    );
    assert!(!call.cost.estimated);
    // The request: the key, the model, only the documented fields, the strict schema.
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(&*format!("Bearer {KEY}"))
    );
    let body = &seen[0].body;
    assert_eq!(body["model"], "fake-model");
    assert_eq!(body["max_tokens"], 512);
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "max_tokens",
            "messages",
            "model",
            "response_format",
            "temperature"
        ]
    );
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["additionalProperties"],
        false
    );
    assert_eq!(body["messages"][0]["role"], "system");
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("Symbol: AAPL"), "{user}");
    assert!(user.contains("rsi_14=61.5"), "{user}");
    // The trace names the template and keeps the raw response.
    assert_eq!(call.trace["prompt"]["template"], "strategy");
    assert_eq!(call.trace["prompt"]["version"], "v1");
    assert_eq!(call.trace["response"]["id"], "chatcmpl-fake");
    // Metrics: one ok call, its tokens, its cost, its latency.
    assert_eq!(
        metric(
            &registry,
            "ztraded_llm_requests_total",
            &[("result", "ok"), ("model", "fake-model-2024")]
        ),
        1.0
    );
    assert_eq!(
        metric(&registry, "ztraded_llm_tokens_total", &[("kind", "input")]),
        1200.0
    );
    assert_eq!(
        metric(&registry, "ztraded_llm_tokens_total", &[("kind", "output")]),
        80.0
    );
    assert!(
        (metric(
            &registry,
            "ztraded_llm_cost_dollars_total",
            &[("pipeline", "llm-test")]
        ) - 0.0038)
            .abs()
            < 1e-9
    );
    assert_eq!(
        metric(
            &registry,
            "ztraded_llm_request_duration_seconds",
            &[("provider", "default")]
        ),
        1.0
    );
}

#[tokio::test]
async fn json_object_mode_puts_the_schema_in_the_prompt_and_fenced_answers_are_read() {
    let fake = FakeOpenAi::start().await;
    fake.script([Reply::content(
        "```json\n{\"bias\":\"bullish\",\"confidence\":55,\"reasoning\":\"higher highs\",\"factors\":[\"trend\"]}\n```",
    )]);
    let (c, _) = client(settings(&fake, StructuredOutput::JsonObject, 0, 5_000));
    let call = c.bias(&bias_config(), &context()).await;
    let b = call.result.expect("a bias");
    // The client returns the model's bias; the threshold (60 by default) is the DAG's.
    assert_eq!(b.bias, Bias::Bullish);
    assert_eq!(b.confidence, 55.0);
    let body = &fake.seen()[0].body;
    assert_eq!(body["response_format"], json!({ "type": "json_object" }));
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("\"additionalProperties\":false"), "{user}");
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_providers_retry_after() {
    let fake = FakeOpenAi::start().await;
    fake.script([
        Reply::error(429, "rate_limit_error", "Rate limit reached").header("retry-after", "1"),
        Reply::content(GOOD_PLAN),
    ]);
    let (c, registry) = client(settings(&fake, StructuredOutput::JsonSchema, 2, 5_000));
    let call = c.strategy(&strategy_config(), &context()).await;
    assert!(call.result.is_ok(), "{:?}", call.result);
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
    assert_eq!(
        metric(&registry, "ztraded_llm_requests_total", &[("result", "ok")]),
        1.0
    );
}

#[tokio::test]
async fn server_errors_and_rate_limits_fail_closed_after_the_retries() {
    let fake = FakeOpenAi::start().await;
    fake.script([Reply::error(500, "server_error", "boom")]);
    let (c, registry) = client(settings(&fake, StructuredOutput::JsonSchema, 2, 5_000));
    let call = c.strategy(&strategy_config(), &context()).await;
    let Err(AgentError::Unavailable(why)) = &call.result else {
        panic!("{:?}", call.result)
    };
    assert!(why.contains("HTTP 500"), "{why}");
    assert_eq!(fake.seen().len(), 3, "one call and two retries");
    assert_eq!(call.cost.usd, Decimal::ZERO);
    assert_eq!(
        metric(
            &registry,
            "ztraded_llm_requests_total",
            &[("result", "error")]
        ),
        1.0
    );

    let fake = FakeOpenAi::start().await;
    fake.script([Reply::error(429, "rate_limit_error", "slow down").header("retry-after", "0")]);
    let (c, registry) = client(settings(&fake, StructuredOutput::JsonSchema, 1, 5_000));
    let call = c.bias(&bias_config(), &context()).await;
    assert!(
        matches!(&call.result, Err(AgentError::Unavailable(w)) if w.contains("429")),
        "{:?}",
        call.result
    );
    assert_eq!(fake.seen().len(), 2);
    assert_eq!(
        metric(
            &registry,
            "ztraded_llm_requests_total",
            &[("result", "rate_limited")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_provider_slower_than_the_timeout_fails_closed() {
    let fake = FakeOpenAi::start().await;
    fake.script([Reply::content(GOOD_PLAN).after(Duration::from_secs(3))]);
    let (c, registry) = client(settings(&fake, StructuredOutput::JsonSchema, 0, 300));
    let started = std::time::Instant::now();
    let call = c.strategy(&strategy_config(), &context()).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(&call.result, Err(AgentError::Unavailable(w)) if w.contains("did not answer")),
        "{:?}",
        call.result
    );
    assert_eq!(
        metric(
            &registry,
            "ztraded_llm_requests_total",
            &[("result", "timeout")]
        ),
        1.0
    );
}

/// Answers that arrive (and cost their tokens) but are not a decision.
#[tokio::test]
async fn bad_answers_fail_closed_and_still_cost_their_tokens() {
    let cases: Vec<(Reply, &str, &str)> = vec![
        (Reply::content("I would buy it."), "not JSON", "invalid"),
        (
            Reply::content(r#"{"action":"buy","conviction":72}"#),
            "does not match the schema",
            "invalid",
        ),
        (
            Reply::content(
                r#"{"action":"moon","conviction":72,"entry_price":null,"stop_loss":null,"target_1":null,"target_2":null,"reasoning":"x"}"#,
            ),
            "does not match the schema",
            "invalid",
        ),
        (
            Reply::content(
                r#"{"action":"buy","conviction":72,"entry_price":130,"stop_loss":135,"target_1":140,"target_2":null,"reasoning":"x"}"#,
            ),
            "stop_loss 135 of a buy must be below the entry 130",
            "invalid",
        ),
        (
            Reply::content(
                r#"{"action":"sell","conviction":72,"entry_price":-5,"stop_loss":null,"target_1":null,"target_2":null,"reasoning":"x"}"#,
            ),
            "not a positive price",
            "invalid",
        ),
        (
            Reply::completion(
                json!({"role":"assistant","content":null,"refusal":"I can't help with trading."}),
                "stop",
                true,
            ),
            "the model refused",
            "refused",
        ),
        (
            Reply::completion(
                json!({"role":"assistant","content":"{\"action\":\"buy\",\"conv"}),
                "length",
                true,
            ),
            "cut off",
            "truncated",
        ),
        (
            Reply::completion(
                json!({"role":"assistant","content":""}),
                "content_filter",
                true,
            ),
            "content filter",
            "refused",
        ),
    ];
    for (reply, expected, label) in cases {
        let fake = FakeOpenAi::start().await;
        fake.script([reply]);
        let (c, registry) = client(settings(&fake, StructuredOutput::JsonSchema, 0, 5_000));
        let call = c.strategy(&strategy_config(), &context()).await;
        let Err(AgentError::InvalidOutput(why)) = &call.result else {
            panic!("{expected}: {:?}", call.result)
        };
        assert!(why.contains(expected), "{why} does not say {expected}");
        assert_eq!(
            call.cost.usd,
            Decimal::new(38, 4),
            "{expected}: the tokens were spent"
        );
        assert_eq!(
            metric(
                &registry,
                "ztraded_llm_requests_total",
                &[("result", label)]
            ),
            1.0,
            "{expected}"
        );
        assert!(
            call.trace["response"].is_object(),
            "{expected}: the raw response is kept"
        );
    }
}

#[tokio::test]
async fn unknown_fields_empty_finish_reasons_and_missing_usage_are_read() {
    let fake = FakeOpenAi::start().await;
    // A Groq-like body: extra top-level fields, an unknown service tier, an empty finish
    // reason, content parts, no usage.
    let body = json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "llama-3.3-70b",
        "service_tier": "on_demand", "x_groq": { "id": "req_1" }, "system_fingerprint": null,
        "choices": [{ "index": 0, "finish_reason": "", "message": { "role": "assistant",
            "content": [{ "type": "text", "text": "{\"bias\":\"bearish\",\"confidence\":80," },
                        { "type": "text", "text": "\"reasoning\":\"lower lows\",\"factors\":[]}" }],
            "reasoning": "internal" } }],
    });
    fake.script([Reply::json(200, &body)]);
    let (c, registry) = client(settings(&fake, StructuredOutput::None, 0, 5_000));
    let call = c.bias(&bias_config(), &context()).await;
    let b = call.result.expect("a bias");
    assert_eq!(b.bias, Bias::Bearish);
    assert!(call.cost.estimated, "no usage: estimated");
    assert!(call.cost.input_tokens > 100, "{:?}", call.cost);
    assert!(call.cost.usd > Decimal::ZERO);
    assert!(
        fake.seen()[0].body.get("response_format").is_none(),
        "mode none sends no response_format"
    );
    assert_eq!(
        metric(
            &registry,
            "ztraded_llm_requests_total",
            &[("result", "ok"), ("model", "llama-3.3-70b")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_missing_key_or_a_wrong_one_fails_closed_without_a_panic() {
    let fake = FakeOpenAi::start().await;
    let mut s = settings(&fake, StructuredOutput::JsonSchema, 0, 5_000);
    s.api_key_env = "ZTRADED_TEST_NO_SUCH_KEY_VAR".into();
    let (c, _) = client(s);
    let call = c.bias(&bias_config(), &context()).await;
    assert!(
        matches!(&call.result, Err(AgentError::Unavailable(w)) if w.contains("ZTRADED_TEST_NO_SUCH_KEY_VAR")),
        "{:?}",
        call.result
    );
    assert!(fake.seen().is_empty());

    unsafe { std::env::set_var("ZTRADED_TEST_WRONG_KEY_VAR", "sk-wrong") };
    let mut s = settings(&fake, StructuredOutput::JsonSchema, 3, 5_000);
    s.api_key_env = "ZTRADED_TEST_WRONG_KEY_VAR".into();
    let (c, _) = client(s);
    let call = c.bias(&bias_config(), &context()).await;
    assert!(
        matches!(&call.result, Err(AgentError::Unavailable(w)) if w.contains("401")),
        "{:?}",
        call.result
    );
    assert_eq!(fake.seen().len(), 1, "a 401 is not retried");

    // A key read from a file with its newline works; one with a line break inside fails
    // closed without a request (an HTTP header cannot carry it).
    unsafe { std::env::set_var("ZTRADED_TEST_NEWLINE_KEY_VAR", format!("{KEY}\n")) };
    fake.script([Reply::content(
        r#"{"bias":"neutral","confidence":50,"reasoning":"flat","factors":[]}"#,
    )]);
    let mut s = settings(&fake, StructuredOutput::JsonSchema, 0, 5_000);
    s.api_key_env = "ZTRADED_TEST_NEWLINE_KEY_VAR".into();
    let (c, _) = client(s);
    let call = c.bias(&bias_config(), &context()).await;
    assert!(call.result.is_ok(), "{:?}", call.result);
    unsafe { std::env::set_var("ZTRADED_TEST_BROKEN_KEY_VAR", "sk-abc\ndef") };
    let mut s = settings(&fake, StructuredOutput::JsonSchema, 0, 5_000);
    s.api_key_env = "ZTRADED_TEST_BROKEN_KEY_VAR".into();
    let (c, _) = client(s);
    let before = fake.seen().len();
    let call = c.bias(&bias_config(), &context()).await;
    assert!(
        matches!(&call.result, Err(AgentError::Unavailable(w)) if w.contains("not a valid HTTP header value")),
        "{:?}",
        call.result
    );
    assert_eq!(fake.seen().len(), before);
}

#[tokio::test]
async fn a_summary_is_plain_text_without_a_response_format() {
    let fake = FakeOpenAi::start().await;
    fake.script([Reply::content(
        "  Bought 10 AAPL at 130 USD: a breakout with reward/risk 2.  ",
    )]);
    let (c, registry) = client(settings(&fake, StructuredOutput::JsonSchema, 0, 5_000));
    let facts = json!({ "plan": { "action": "buy" } });
    let call = c.summary("default", &context(), &facts).await;
    assert_eq!(
        call.result.unwrap(),
        "Bought 10 AAPL at 130 USD: a breakout with reward/risk 2."
    );
    assert_eq!(call.cost.usd, Decimal::new(38, 4));
    let body = &fake.seen()[0].body;
    assert!(body.get("response_format").is_none(), "{body}");
    assert!(
        body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains(r#""action":"buy""#)
    );
    assert_eq!(
        metric(&registry, "ztraded_llm_requests_total", &[("result", "ok")]),
        1.0
    );
}

#[tokio::test]
async fn chart_true_sends_a_candlestick_png_per_timeframe_as_image_input() {
    use base64::Engine as _;
    let fake = FakeOpenAi::start().await;
    fake.script([Reply::content(GOOD_PLAN)]);
    let (c, _) = client(settings(&fake, StructuredOutput::JsonSchema, 0, 5_000));
    let config: StrategyLlm =
        serde_json::from_value(json!({ "provider": "default", "timeframe": "1d", "chart": true }))
            .unwrap();
    let call = c.strategy(&config, &context()).await;
    assert!(call.result.is_ok(), "{:?}", call.result);
    let body = &fake.seen()[0].body;
    let parts = body["messages"][1]["content"]
        .as_array()
        .expect("content parts");
    assert_eq!(parts.len(), 2, "the text and one chart");
    assert_eq!(parts[0]["type"], "text");
    assert!(parts[0]["text"].as_str().unwrap().contains("Symbol: AAPL"));
    assert_eq!(parts[1]["type"], "image_url");
    let url = parts[1]["image_url"]["url"].as_str().unwrap();
    let data = url.strip_prefix("data:image/png;base64,").expect(url);
    let png = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // The trace keeps the image's size and hash, not its bytes.
    let shown = call.trace["prompt"]["messages"][1]["content"][1]["image_url"]["url"]
        .as_str()
        .unwrap();
    assert!(shown.starts_with("image/png, "), "{shown}");
    assert_eq!(call.trace["prompt"]["charts"], 1);
}

/// Measures what a strategy node costs beyond the provider's own latency: against a fake
/// that answers at once (loopback HTTP), the whole call — prompt rendering, the request,
/// the retry and timeout layers, reading, schema and semantic checks, cost and metrics — and
/// against one that waits 20 ms, the call minus those 20 ms. Prints p50 and p99
/// (`cargo test --test llm_provider overhead -- --nocapture`).
#[tokio::test]
async fn overhead_per_llm_node_beyond_the_provider_latency() {
    for delay_ms in [0u64, 20] {
        let fake = FakeOpenAi::start().await;
        fake.script([Reply::content(GOOD_PLAN).after(Duration::from_millis(delay_ms))]);
        let (c, _) = client(settings(&fake, StructuredOutput::JsonSchema, 0, 5_000));
        let (config, ctx) = (strategy_config(), context());
        let mut us: Vec<u128> = Vec::new();
        for i in 0..220 {
            let started = std::time::Instant::now();
            let call = c.strategy(&config, &ctx).await;
            let took = started.elapsed().as_micros();
            assert!(call.result.is_ok());
            if i >= 20 {
                us.push(took.saturating_sub(u128::from(delay_ms) * 1000));
            }
        }
        us.sort_unstable();
        let p50 = us[us.len() / 2];
        let p99 = us[us.len() * 99 / 100];
        println!(
            "LLM node overhead beyond a {delay_ms} ms provider: p50 {:.2} ms, p99 {:.2} ms ({} calls)",
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
            us.len()
        );
        assert!(p99 < 50_000, "p99 {p99} µs");
    }
}
