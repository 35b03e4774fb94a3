//! A fake OpenAI-compatible chat-completions server for tests: `POST /v1/chat/completions`
//! over real HTTP (axum on 127.0.0.1:0), answering from a script of replies (status,
//! headers, body, delay) in order, the last one repeated, and keeping every request it got
//! (headers and JSON body). Replies follow the documented chat completion object:
//! `{id, object: "chat.completion", created, model, choices: [{index, message: {role,
//! content, refusal}, finish_reason}], usage: {prompt_tokens, completion_tokens,
//! total_tokens}}`, and errors `{"error": {message, type, param, code}}`.
#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// The API key the fake accepts (`Authorization: Bearer <KEY>`).
pub const KEY: &str = "sk-fake-test-key";

/// One scripted reply.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body, sent as written.
    pub body: String,
    /// Wait before answering.
    pub delay: Duration,
}

impl Reply {
    /// A 200 chat completion whose message content is `content`.
    pub fn content(content: &str) -> Reply {
        Reply::completion(
            json!({ "role": "assistant", "content": content, "refusal": null }),
            "stop",
            true,
        )
    }

    /// A 200 chat completion with `message`, `finish_reason` and usage (10 prompt tokens
    /// per call… exactly: 1200 prompt and 80 completion tokens) when `usage`.
    pub fn completion(message: Value, finish_reason: &str, usage: bool) -> Reply {
        let mut body = json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "fake-model-2024",
            "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason }],
        });
        if usage {
            body["usage"] =
                json!({ "prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280 });
        }
        Reply::json(200, &body)
    }

    /// `status` with a JSON body.
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// An OpenAI error object with `status`.
    pub fn error(status: u16, kind: &str, message: &str) -> Reply {
        Reply::json(
            status,
            &json!({ "error": { "message": message, "type": kind, "param": null, "code": null } }),
        )
    }

    /// This reply with a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// This reply after `delay`.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `Authorization` header.
    pub authorization: Option<String>,
    /// The JSON body (`Null` when it was not JSON).
    pub body: Value,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// Answers chosen from the request body.
type Route = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    last: Option<Reply>,
    seen: Vec<Seen>,
    route: Option<Route>,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeOpenAi {
    inner: Arc<Mutex<Inner>>,
    /// `http://127.0.0.1:<port>/v1`.
    pub base_url: String,
}

impl FakeOpenAi {
    /// Starts the fake on a free port.
    pub async fn start() -> FakeOpenAi {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/chat/completions", axum::routing::post(chat))
            .with_state(Arc::clone(&inner));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeOpenAi {
            inner,
            base_url: format!("http://{addr}/v1"),
        }
    }

    /// Queues replies (answered in order; the last one is repeated once the queue is empty).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        let mut i = self.inner.lock().unwrap();
        i.script.extend(replies);
    }

    /// Answers every request with `route(body)` instead of the script.
    pub fn answer_by(&self, route: impl Fn(&Value) -> Reply + Send + Sync + 'static) {
        self.inner.lock().unwrap().route = Some(Arc::new(route));
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }
}

async fn chat(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = {
        let mut i = inner.lock().unwrap();
        i.seen.push(Seen {
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            at: std::time::Instant::now(),
        });
        let auth_ok = headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {KEY}"));
        if !auth_ok {
            Reply::error(401, "invalid_request_error", "Incorrect API key provided")
        } else if let Some(route) = i.route.clone() {
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            route(&body)
        } else {
            match i.script.pop_front() {
                Some(r) => {
                    i.last = Some(r.clone());
                    r
                }
                None => i
                    .last
                    .clone()
                    .unwrap_or_else(|| Reply::error(500, "server_error", "no scripted reply")),
            }
        }
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        reply.body,
    )
        .into_response();
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(&v),
        ) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}

/// A pipeline whose strategy asks the fake: simulation, GOOG daily bars, every bar.
pub const LLM_PIPELINE: &str = r#"
description: LLM strategy on daily bars (test)
mode: simulation
broker: sim
symbols: [GOOG]
risk: open
trigger:
  bar_close: { timeframe: 1d }
nodes:
  - id: data
    agent: market_data
    config: { timeframes: [1d], indicators: [sma_10], lookback: 20 }
  - id: strategy
    agent: strategy
    config: { kind: llm, provider: default, timeframe: 1d, risk_reward_min: 1.5 }
  - id: risk
    agent: risk_manager
  - id: trade
    agent: trade_manager
"#;

/// The risk policy `open`: every plan may trade.
pub const OPEN_RISK: &str = r#"
description: Lets every plan trade
sizing: { max_position_pct: 50 }
limits: { max_pipeline_capital_pct: 100, max_deployed_pct: 100 }
trade: { require_stop_loss: false, min_reward_risk: 0, min_profit_margin_pct: 0 }
"#;

/// Writes `risk/open.yaml` and `data/GOOG.csv` (the first forty trading days of the test
/// data, from 2004-08-19) under `dir`, creating `pipelines/` too.
pub fn write_goog_dir(dir: &std::path::Path) {
    for sub in ["pipelines", "risk", "data"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("risk/open.yaml"), OPEN_RISK).unwrap();
    let csv = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/GOOG.csv"))
        .unwrap();
    let head: Vec<&str> = csv.lines().take(41).collect();
    std::fs::write(dir.join("data/GOOG.csv"), head.join("\n") + "\n").unwrap();
}
