//! The HTTP port over real TCP on 127.0.0.1: every status code of the contract, the JSON shapes,
//! that the control is called exactly once per accepted request and never for a refused one,
//! readiness, the admin client, graceful shutdown, and `promtool check metrics` on `/metrics`.

use rust_decimal::dec;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use ztraded::broker::types::Side;
use ztraded::config::pipeline::Mode;
use ztraded::config::settings::HttpSettings;
use ztraded::http::{
    AdminToken, ClientError, Control, ControlError, HttpState, Limits, Readiness, Scope,
    client_close, client_resume, serve,
};
use ztraded::metrics::{
    ALL_NAMES, ExecutionResult, HaltCounts, Metrics, PipelineCounts, ReloadResult, ScopeKind,
};

const TOKEN: &str = "0123456789abcdef-test-token";
const MAX_BODY: usize = 256;

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Close(Scope, String),
    Resume(Scope, Option<String>),
}

/// Records every call; answers `reply` (or echoes the call as JSON when it is `None`).
#[derive(Default)]
struct FakeControl {
    calls: Mutex<Vec<Call>>,
    reply: Mutex<Option<Result<Value, ControlError>>>,
}

impl FakeControl {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    fn answer(&self, call: Call, echo: Value) -> Result<Value, ControlError> {
        self.calls.lock().unwrap().push(call);
        self.reply.lock().unwrap().clone().unwrap_or(Ok(echo))
    }
}

#[async_trait::async_trait]
impl Control for FakeControl {
    async fn close(&self, scope: Scope, reason: String) -> Result<Value, ControlError> {
        let echo = json!({"closed": scope, "reason": reason, "positions": [
            {"symbol": "AAPL", "qty": "10", "status": "filled"}
        ]});
        self.answer(Call::Close(scope, reason), echo)
    }
    async fn resume(&self, scope: Scope, reason: Option<String>) -> Result<Value, ControlError> {
        let echo = json!({"resumed": scope});
        self.answer(Call::Resume(scope, reason), echo)
    }
}

struct Server {
    addr: SocketAddr,
    base: String,
    control: Arc<FakeControl>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ztraded::http::HttpError>>,
}

async fn start_with(admin_token: Option<AdminToken>) -> Server {
    let control = Arc::new(FakeControl::default());
    let readiness = Arc::new(Readiness::new("starting: store not connected"));
    let metrics = Arc::new(Metrics::new().unwrap());
    let state = HttpState {
        metrics: metrics.clone(),
        control: control.clone(),
        readiness: readiness.clone(),
        admin_token,
        max_body_bytes: MAX_BODY,
        limits: Limits::default(),
    };
    start_state(state, control, readiness, metrics).await
}

async fn start_state(
    state: HttpState,
    control: Arc<FakeControl>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async {
        let _ = rx.await;
    }));
    Server {
        addr,
        base: format!("http://{addr}"),
        control,
        readiness,
        metrics,
        stop: Some(tx),
        task,
    }
}

async fn start() -> Server {
    start_with(AdminToken::new(TOKEN, "TEST_TOKEN").unwrap()).await
}

fn client() -> reqwest::Client {
    ztraded::install_tls_provider();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn post(s: &Server, path: &str, token: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}{path}", s.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.send().await.unwrap()
}

/// Asserts `{"error": code, "message": <non-empty>}` and returns the message.
async fn error_body(res: reqwest::Response, code: &str) -> String {
    assert_eq!(
        res.headers()["content-type"],
        "application/json",
        "error bodies are JSON"
    );
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], code, "{v}");
    let message = v["message"].as_str().unwrap().to_string();
    assert!(!message.is_empty());
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    message
}

/// One raw HTTP/1.1 exchange: writes `head` then `body`, half-closes nothing, reads the answer
/// until the server closes the connection. Returns (status, head, body).
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and close) before it has read everything; a failed write is
    // then expected and the answer is still readable.
    let _ = stream.write_all(body).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(text) = complete_response(&buf) {
                        return text;
                    }
                }
                Err(e) => panic!("read failed after {} bytes: {e}", buf.len()),
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
    .await
    .expect("the server did not answer within 5 s");
    let (head, body) = read.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// The response text once its head and a Content-Length body are complete.
fn complete_response(buf: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    (body.len() >= len).then(|| text.into_owned())
}

#[tokio::test]
async fn health_and_readiness() {
    let s = start().await;
    let res = client()
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");

    let res = client()
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        v,
        json!({"ready": false, "reason": "starting: store not connected"})
    );

    s.readiness.set_ready();
    let res = client()
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"ready": true}));

    s.readiness.set_not_ready("store connection lost");
    let res = client()
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.json::<Value>().await.unwrap()["reason"],
        "store connection lost"
    );
}

#[tokio::test]
async fn metrics_endpoint_serves_the_text_format() {
    let s = start().await;
    s.metrics
        .execution_finished("p1", ExecutionResult::Completed, 0.5);
    let res = client()
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/plain; version=0.0.4");
    let text = res.text().await.unwrap();
    assert_eq!(text, s.metrics.render());
    assert!(text.contains("ztraded_executions_total{pipeline=\"p1\",result=\"completed\"} 1\n"));
}

#[tokio::test]
async fn close_calls_the_control_once_and_answers_its_json() {
    let s = start().await;
    let res = post(
        &s,
        "/v1/close",
        Some(TOKEN),
        r#"{"scope": {"pipeline": "aapl-momentum"}, "reason": "runaway strategy"}"#,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        v,
        json!({"closed": {"pipeline": "aapl-momentum"}, "reason": "runaway strategy",
               "positions": [{"symbol": "AAPL", "qty": "10", "status": "filled"}]})
    );
    assert_eq!(
        s.control.calls(),
        vec![Call::Close(
            Scope::Pipeline("aapl-momentum".into()),
            "runaway strategy".into()
        )]
    );

    let res = post(
        &s,
        "/v1/close",
        Some(TOKEN),
        r#"{"scope":"all","reason":"x"}"#,
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = post(
        &s,
        "/v1/close",
        Some(TOKEN),
        r#"{"scope":{"symbol":"BRK.B"},"reason":"halted news"}"#,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(s.control.calls().len(), 3);
    assert_eq!(s.control.calls()[1], Call::Close(Scope::All, "x".into()));
    assert_eq!(
        s.control.calls()[2],
        Call::Close(Scope::Symbol("BRK.B".into()), "halted news".into())
    );

    let text = s.metrics.render();
    for kind in ["all", "pipeline", "symbol"] {
        let line = format!("ztraded_emergency_closes_total{{scope=\"{kind}\"}} 1\n");
        assert!(text.contains(&line), "missing {line:?}");
    }
}

#[tokio::test]
async fn resume_with_and_without_reason() {
    let s = start().await;
    let res = post(&s, "/v1/resume", Some(TOKEN), r#"{"scope": "all"}"#).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"resumed": "all"})
    );
    let res = post(
        &s,
        "/v1/resume",
        Some(TOKEN),
        r#"{"scope": {"symbol": "AAPL"}, "reason": "news digested"}"#,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        s.control.calls(),
        vec![
            Call::Resume(Scope::All, None),
            Call::Resume(Scope::Symbol("AAPL".into()), Some("news digested".into())),
        ]
    );
    // A resume is not an emergency close.
    assert!(
        s.metrics
            .render()
            .contains("ztraded_emergency_closes_total{scope=\"all\"} 0\n")
    );
}

#[tokio::test]
async fn missing_wrong_or_foreign_credentials_get_401() {
    let s = start().await;
    let body = r#"{"scope":"all","reason":"x"}"#;
    for path in ["/v1/close", "/v1/resume"] {
        for auth in [
            None,
            Some("Bearer wrong-token".to_string()),
            Some(format!("Bearer {TOKEN}x")),
            Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
            Some(format!("Basic {TOKEN}")),
            Some("Bearer".to_string()),
            Some(TOKEN.to_string()),
        ] {
            let mut req = client().post(format!("{}{path}", s.base)).body(body);
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 401, "{path} {auth:?}");
            assert_eq!(
                res.headers()["www-authenticate"],
                "Bearer realm=\"ztraded\""
            );
            error_body(res, "unauthorized").await;
        }
    }
    // An unauthenticated oversized or malformed body is still 401: the body is never read.
    let res = post(&s, "/v1/close", None, &"x".repeat(MAX_BODY * 4)).await;
    assert_eq!(res.status(), 401);
    assert!(s.control.calls().is_empty());
    // The scheme is case-insensitive.
    let res = client()
        .post(format!("{}/v1/close", s.base))
        .header("authorization", format!("bearer {TOKEN}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(s.control.calls().len(), 1);
}

#[tokio::test]
async fn unknown_paths_get_404() {
    let s = start().await;
    for path in [
        "/",
        "/metric",
        "/v1",
        "/v1/closeall",
        "/v2/close",
        "/metrics/x",
    ] {
        let res = client()
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path}");
        error_body(res, "not_found").await;
    }
    let res = post(&s, "/v1/halt", Some(TOKEN), "{}").await;
    assert_eq!(res.status(), 404);
    assert!(s.control.calls().is_empty());
}

#[tokio::test]
async fn without_a_token_the_admin_endpoints_do_not_exist() {
    // The variable named by the settings is unset: disabled (read through from_settings).
    let settings = HttpSettings {
        admin_token_env: "ZTRADED_TEST_HTTP_UNSET_TOKEN_VARIABLE".into(),
        ..HttpSettings::default()
    };
    let control = Arc::new(FakeControl::default());
    let readiness = Arc::new(Readiness::new("starting"));
    let metrics = Arc::new(Metrics::new().unwrap());
    let state = HttpState::from_settings(
        &settings,
        metrics.clone(),
        control.clone(),
        readiness.clone(),
    )
    .unwrap();
    assert!(state.admin_token.is_none());
    assert_eq!(state.max_body_bytes, 4096);
    assert_eq!(state.limits, Limits::default());
    assert_eq!(state.limits.header_read_timeout, Duration::from_secs(5));
    assert_eq!(state.limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(state.limits.max_connections, 512);
    let s = start_state(state, control, readiness, metrics).await;

    let unknown = client()
        .get(format!("{}/nope", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let unknown_body = unknown.text().await.unwrap();
    for path in ["/v1/close", "/v1/resume"] {
        for token in [None, Some(TOKEN), Some("")] {
            let res = post(&s, path, token, r#"{"scope":"all","reason":"x"}"#).await;
            assert_eq!(res.status(), 404, "{path}");
            assert!(res.headers().get("www-authenticate").is_none());
            assert_eq!(
                res.text().await.unwrap(),
                unknown_body,
                "same as an unknown path"
            );
        }
        let res = client()
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            404,
            "GET {path}: not 405, the path does not exist"
        );
    }
    assert!(s.control.calls().is_empty());
    // An empty token is the same as none.
    assert!(AdminToken::new("", "V").unwrap().is_none());
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let s = start().await;
    let c = client();
    for (method, path, allow) in [
        (reqwest::Method::GET, "/v1/close", "POST"),
        (reqwest::Method::PUT, "/v1/close", "POST"),
        (reqwest::Method::DELETE, "/v1/resume", "POST"),
        (reqwest::Method::GET, "/v1/resume", "POST"),
        (reqwest::Method::POST, "/metrics", "GET,HEAD"),
        (reqwest::Method::PUT, "/healthz", "GET,HEAD"),
        (reqwest::Method::DELETE, "/readyz", "GET,HEAD"),
    ] {
        let res = c
            .request(method.clone(), format!("{}{path}", s.base))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(r#"{"scope":"all","reason":"x"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
        error_body(res, "method_not_allowed").await;
    }
    assert!(s.control.calls().is_empty());
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let s = start().await;
    // A valid body padded to exactly the limit is accepted: the limit is inclusive.
    let base = r#"{"scope":"all","reason":"x"}"#;
    let exact = format!("{base}{}", " ".repeat(MAX_BODY - base.len()));
    assert_eq!(exact.len(), MAX_BODY);
    let res = post(&s, "/v1/close", Some(TOKEN), &exact).await;
    assert_eq!(res.status(), 200);
    assert_eq!(s.control.calls().len(), 1);

    // One byte more, with Content-Length.
    let over = format!("{exact} ");
    let res = post(&s, "/v1/close", Some(TOKEN), &over).await;
    assert_eq!(res.status(), 413);
    error_body(res, "payload_too_large").await;
    let res = post(&s, "/v1/resume", Some(TOKEN), &"x".repeat(64 * 1024)).await;
    assert_eq!(res.status(), 413);

    // A Content-Length over the limit is refused before any byte of the body arrives.
    let head = format!(
        "POST /v1/close HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
    );
    let (status, _, body) = raw(s.addr, &head, b"").await;
    assert_eq!(status, 413);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "payload_too_large"
    );

    // Chunked, without Content-Length: refused once the limit is passed, although the body
    // never ends (so the limit is enforced while reading, not after).
    let head = format!(
        "POST /v1/close HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut chunks = Vec::new();
    for _ in 0..(MAX_BODY / 64 + 2) {
        chunks.extend_from_slice(format!("40\r\n{}\r\n", " ".repeat(64)).as_bytes());
    }
    let (status, head_out, body) = raw(s.addr, &head, &chunks).await;
    assert_eq!(status, 413, "{head_out}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "payload_too_large"
    );

    // A chunked body within the limit is accepted.
    let body_json = r#"{"scope":{"symbol":"AAPL"},"reason":"chunked"}"#;
    let chunked = format!("{:x}\r\n{body_json}\r\n0\r\n\r\n", body_json.len());
    let (status, _, _) = raw(
        s.addr,
        &head.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"),
        chunked.as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        s.control.calls(),
        vec![
            Call::Close(Scope::All, "x".into()),
            Call::Close(Scope::Symbol("AAPL".into()), "chunked".into())
        ]
    );
}

#[tokio::test]
async fn malformed_bodies_get_400() {
    let s = start().await;
    for (path, body, needle) in [
        ("/v1/close", "", "EOF"),
        ("/v1/close", "{", "EOF"),
        ("/v1/close", "not json", "expected"),
        (
            "/v1/close",
            r#"{"scope":"everything","reason":"x"}"#,
            "unknown variant",
        ),
        (
            "/v1/close",
            r#"{"scope":{"portfolio":"x"},"reason":"x"}"#,
            "unknown variant",
        ),
        (
            "/v1/close",
            r#"{"scope":{"pipeline":"Bad Name"},"reason":"x"}"#,
            "invalid pipeline name",
        ),
        (
            "/v1/close",
            r#"{"scope":{"symbol":"aapl"},"reason":"x"}"#,
            "invalid symbol",
        ),
        ("/v1/close", r#"{"scope":"all"}"#, "reason"),
        ("/v1/close", r#"{"scope":"all","reason":"   "}"#, "blank"),
        (
            "/v1/close",
            r#"{"scope":"all","reason":"x","force":true}"#,
            "unknown field",
        ),
        (
            "/v1/close",
            r#"{"scope":"all","reason":"x"} trailing"#,
            "trailing",
        ),
        ("/v1/close", r#"{"reason":"x"}"#, "scope"),
        ("/v1/resume", r#"{"scope":"none"}"#, "unknown variant"),
        ("/v1/resume", r#"{"scope":"all","reason":3}"#, "reason"),
        ("/v1/resume", r#"[]"#, "expected"),
    ] {
        let res = post(&s, path, Some(TOKEN), body).await;
        assert_eq!(res.status(), 400, "{path} {body}");
        let message = error_body(res, "bad_request").await;
        assert!(
            message.contains(needle),
            "{body}: {message:?} lacks {needle:?}"
        );
    }
    assert!(s.control.calls().is_empty(), "{:?}", s.control.calls());
    assert!(
        s.metrics
            .render()
            .contains("ztraded_emergency_closes_total{scope=\"all\"} 0\n"),
        "a refused request is not counted"
    );
}

#[tokio::test]
async fn control_errors_map_to_statuses() {
    let s = start().await;
    for (err, status, code) in [
        (
            ControlError::Conflict("no halt on symbol AAPL".into()),
            409,
            "conflict",
        ),
        (
            ControlError::Unavailable("broker unreachable".into()),
            503,
            "unavailable",
        ),
        (
            ControlError::Failed("2 of 3 positions closed".into()),
            500,
            "internal",
        ),
    ] {
        *s.control.reply.lock().unwrap() = Some(Err(err.clone()));
        let res = post(
            &s,
            "/v1/resume",
            Some(TOKEN),
            r#"{"scope":{"symbol":"AAPL"}}"#,
        )
        .await;
        assert_eq!(res.status(), status);
        assert_eq!(error_body(res, code).await, err.to_string());
    }
    assert_eq!(s.control.calls().len(), 3);
}

#[tokio::test]
async fn the_client_talks_to_the_server() {
    let s = start().await;
    let addr = s.addr.to_string();
    let v = client_close(&addr, TOKEN, &Scope::All, "flatten before FOMC")
        .await
        .unwrap();
    assert_eq!(v["closed"], "all");
    assert_eq!(v["reason"], "flatten before FOMC");
    let v = client_resume(&addr, TOKEN, &Scope::pipeline("p-1").unwrap(), None)
        .await
        .unwrap();
    assert_eq!(v, json!({"resumed": {"pipeline": "p-1"}}));

    match client_close(&addr, "wrong", &Scope::All, "x").await {
        Err(ClientError::Status {
            status: 401, code, ..
        }) => assert_eq!(code, "unauthorized"),
        other => panic!("expected 401, got {other:?}"),
    }
    assert!(matches!(
        client_close(&addr, "has space", &Scope::All, "x").await,
        Err(ClientError::InvalidToken)
    ));
    assert_eq!(
        s.control.calls(),
        vec![
            Call::Close(Scope::All, "flatten before FOMC".into()),
            Call::Resume(Scope::Pipeline("p-1".into()), None),
        ]
    );

    let disabled = start_with(None).await;
    match client_resume(&disabled.addr.to_string(), TOKEN, &Scope::All, Some("r")).await {
        Err(ClientError::Status { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }

    // Nothing listens on a port we just freed.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let free_addr = free.local_addr().unwrap().to_string();
    drop(free);
    assert!(matches!(
        client_close(&free_addr, TOKEN, &Scope::All, "x").await,
        Err(ClientError::Connect { .. })
    ));
}

#[tokio::test]
async fn graceful_shutdown_stops_the_listener() {
    let mut s = start().await;
    let res = client()
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(res);
    s.stop.take().unwrap().send(()).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(5), &mut s.task)
        .await
        .expect("serve did not return after shutdown");
    done.unwrap().unwrap();
    assert!(TcpStream::connect(s.addr).await.is_err());
}

fn populate_every_family(m: &Metrics) {
    m.config_reloaded(ReloadResult::Applied, SystemTime::now());
    m.config_reloaded(ReloadResult::Refused, SystemTime::now());
    m.set_config_revision("9f2c1e7");
    m.reconcile_finished(0.012);
    m.set_pipeline_counts(PipelineCounts {
        running: 3,
        halted: 1,
        draining: 1,
        stopped: 0,
        failed: 0,
    });
    for p in ["aapl-momentum", "spy-mean-reversion"] {
        m.pipeline_started(p);
        m.execution_finished(p, ExecutionResult::Completed, 0.42);
        m.execution_finished(p, ExecutionResult::Skipped, 0.003);
        m.order_submitted(p, Mode::Paper, Side::Buy);
        m.order_submitted(p, Mode::Paper, Side::Sell);
        m.order_rejected(p, "insufficient_buying_power");
        m.risk_rejected(p, "max_position_pct");
        m.set_positions_open(p, 1);
        m.set_realized_pnl(p, dec!(-12.5));
    }
    m.set_equity(dec!(100123.45));
    m.emergency_close(ScopeKind::Pipeline);
    m.set_halts(HaltCounts {
        all: 0,
        pipeline: 1,
        symbol: 0,
    });
    m.set_last_bar("AAPL", "1d", 1_325_624_400);
    m.set_drift_positions("alpaca-paper", 0);
    m.signal_received();
    m.signal_outcome("golden_cross", "dispatched");
    m.signal_dead_lettered();
    m.signal_dispatch_latency(0.0004);
}

async fn scrape(s: &Server) -> String {
    let res = client()
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let s = start().await;
    populate_every_family(&s.metrics);
    let text = scrape(&s).await;
    for name in ALL_NAMES {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} has no series:\n{text}"
        );
    }

    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match promtool {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let hint = "promtool is not installed; install it with \
                        `apt-get install -y --no-install-recommends prometheus`";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{hint}");
            }
            eprintln!("\n*** SKIPPED promtool_accepts_the_metrics: {hint} ***\n");
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{report}\n{text}"
    );
    assert!(
        report.trim().is_empty(),
        "promtool found problems:\n{report}"
    );
}

#[tokio::test]
async fn removed_pipelines_disappear_from_metrics() {
    let s = start().await;
    populate_every_family(&s.metrics);
    let before = scrape(&s).await;
    let count = |text: &str, p: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&format!("pipeline=\"{p}\"")))
            .count()
    };
    // 4 results + 2 orders + 1 order rejection + 1 risk rejection + positions + P&L.
    assert_eq!(count(&before, "aapl-momentum"), 10, "{before}");
    s.metrics.remove_pipeline("aapl-momentum");
    let after = scrape(&s).await;
    assert_eq!(count(&after, "aapl-momentum"), 0, "{after}");
    assert_eq!(count(&after, "spy-mean-reversion"), 10, "{after}");
}

fn unknown_pipeline(name: &str) -> ControlError {
    ControlError::UnknownScope {
        message: format!("no pipeline named \"{name}\""),
        known_pipelines: vec!["aapl-momentum".into(), "spy-trend".into()],
        known_symbols: vec!["AAPL".into(), "SPY".into()],
    }
}

#[tokio::test]
async fn an_unknown_scope_gets_404_with_the_names_the_daemon_knows() {
    let s = start().await;
    *s.control.reply.lock().unwrap() = Some(Err(unknown_pipeline("no-such-pipe")));
    for path in ["/v1/close", "/v1/resume"] {
        let res = post(
            &s,
            path,
            Some(TOKEN),
            r#"{"scope": {"pipeline": "no-such-pipe"}, "reason": "typo"}"#,
        )
        .await;
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(
            res.json::<Value>().await.unwrap(),
            json!({
                "error": "unknown_scope",
                "message": "no pipeline named \"no-such-pipe\"",
                "known": {"pipelines": ["aapl-momentum", "spy-trend"], "symbols": ["AAPL", "SPY"]}
            }),
            "{path}"
        );
    }
    assert_eq!(s.control.calls().len(), 2);

    // The client turns it into a typed error that suggests the closest name.
    *s.control.reply.lock().unwrap() = Some(Err(unknown_pipeline("aapl-momentun")));
    let typo = Scope::pipeline("aapl-momentun").unwrap();
    let err = client_close(&s.addr.to_string(), TOKEN, &typo, "typo")
        .await
        .unwrap_err();
    match &err {
        ClientError::UnknownScope {
            requested,
            known_pipelines,
            known_symbols,
            ..
        } => {
            assert_eq!(requested, &typo);
            assert_eq!(known_pipelines, &["aapl-momentum", "spy-trend"]);
            assert_eq!(known_symbols, &["AAPL", "SPY"]);
        }
        other => panic!("expected UnknownScope, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "{}: unknown scope: no pipeline named \"aapl-momentun\"; did you mean \
             'aapl-momentum'?; known pipelines: aapl-momentum, spy-trend",
            s.addr
        )
    );
}

/// Runs the real `ztraded` binary with `args` against the server `s` (an empty config
/// directory, the token in the default variable). Returns (exit code, stdout, stderr).
async fn ztraded(s: &Server, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .args(args)
        .arg("--addr")
        .arg(s.addr.to_string())
        .arg("--config")
        .arg(dir.path())
        .env("ZTRADED_ADMIN_TOKEN", TOKEN)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_close_and_resume_commands_print_unknown_scopes_and_halts() {
    let s = start().await;
    // A typo: readable error on stderr, nothing on stdout, exit 1.
    *s.control.reply.lock().unwrap() = Some(Err(unknown_pipeline("no-such-pipe")));
    let (code, out, err) = ztraded(
        &s,
        &["close", "--pipeline", "no-such-pipe", "--reason", "typo"],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "ztraded: {}: unknown scope: no pipeline named \"no-such-pipe\"; known pipelines: \
             aapl-momentum, spy-trend\n",
            s.addr
        )
    );
    let (code, _, err) = ztraded(&s, &["resume", "--pipeline", "no-such-pipe"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("unknown scope"), "{err}");

    // A close: the positions, then the halts latched afterwards.
    *s.control.reply.lock().unwrap() = Some(Ok(json!({
        "scope": {"pipeline": "aapl-momentum"},
        "halted": true,
        "positions": [
            {"pipeline": "aapl-momentum", "symbol": "AAPL", "quantity": "-10", "status": "filled",
             "price": "187.20", "error": null},
            {"pipeline": "aapl-momentum", "symbol": "MSFT", "quantity": "5", "status": "failed",
             "price": null, "error": "broker unreachable"}
        ],
        "halts": [
            {"scope": {"pipeline": "aapl-momentum"}, "reason": "emergency close: runaway"},
            {"scope": {"symbol": "TSLA"}, "reason": "daily loss limit"}
        ]
    })));
    let (code, out, err) = ztraded(
        &s,
        &[
            "close",
            "--pipeline",
            "aapl-momentum",
            "--reason",
            "runaway",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "emergency close of pipeline aapl-momentum: 2 positions\n\
         \x20 aapl-momentum  AAPL  -10  filled at 187.20\n\
         \x20 aapl-momentum  MSFT    5  failed: broker unreachable\n\
         halts in force (2):\n\
         \x20 pipeline aapl-momentum: emergency close: runaway\n\
         \x20 symbol TSLA: daily loss limit\n"
    );

    // A resume that leaves nothing halted says so.
    *s.control.reply.lock().unwrap() =
        Some(Ok(json!({"scope": "all", "resumed": true, "halts": []})));
    let (code, out, _) = ztraded(&s, &["resume", "--all"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "resumed all: halt cleared\nno halts\n");

    // An answer without `halts` (an older daemon) is tolerated.
    *s.control.reply.lock().unwrap() = Some(Ok(json!({"scope": "all", "resumed": false})));
    let (code, out, _) = ztraded(&s, &["resume", "--all"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "resumed all: no halt was latched on it\n\
         halts: not reported by the daemon (`ztraded status` lists them)\n"
    );
    *s.control.reply.lock().unwrap() = Some(Ok(
        json!({"scope": {"symbol": "AAPL"}, "halted": true, "positions": []}),
    ));
    let (code, out, _) = ztraded(&s, &["close", "--symbol", "AAPL", "--reason", "news"]).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("emergency close of symbol AAPL: no open positions\nhalts: not reported"),
        "{out}"
    );

    // --json prints the answer as the daemon sent it.
    let (code, out, _) = ztraded(
        &s,
        &["close", "--symbol", "AAPL", "--reason", "news", "--json"],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"scope": {"symbol": "AAPL"}, "halted": true, "positions": []})
    );
    assert_eq!(s.control.calls().len(), 7);
}
