//! A fake Alpaca market-data service for tests: an axum REST server (stock and crypto bars
//! with pagination, the trading API's clock and calendar, API-key check, scripted errors)
//! and a tokio-tungstenite websocket server speaking the market-data stream protocol.
//!
//! Self-contained: include it with `#[path = "fake_alpaca/data.rs"] mod fake_data;`.
#![allow(dead_code)]

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response as WsResponse};
use ztraded::market::Bar;

/// The API key id the fake accepts.
pub const KEY: &str = "PKFAKEKEYID";
/// The API secret the fake accepts.
pub const SECRET: &str = "fake-secret-key";

/// A REST request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Path (`/v2/stocks/bars`).
    pub path: String,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
}

/// A scripted answer for the next REST request.
#[derive(Clone, Debug)]
pub struct Scripted {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

/// A subscribe or unsubscribe message the websocket received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Websocket path of the connection (`/v2/iex`, `/v1beta3/crypto/us`).
    pub path: String,
    /// `subscribe` or `unsubscribe`.
    pub action: String,
    /// The `bars` list.
    pub bars: Vec<String>,
    /// The `updatedBars` list.
    pub updated_bars: Vec<String>,
}

/// An authenticated connection's subscriptions.
struct Conn {
    path: String,
    bars: BTreeSet<String>,
    updated_bars: BTreeSet<String>,
}

#[derive(Clone, Debug)]
enum Cmd {
    /// A frame for the connections subscribed to `symbol` (`updated`: to its updated bars).
    Bar {
        symbol: String,
        updated: bool,
        text: String,
    },
    /// A frame for every authenticated connection.
    Raw(String),
    /// Drop every connection without a close frame.
    Drop,
}

struct Inner {
    history: BTreeMap<String, Vec<Bar>>,
    page_size: usize,
    requests: Vec<Recorded>,
    script: VecDeque<Scripted>,
    clock: Value,
    calendar: Vec<Value>,
    ws_accepted: usize,
    ws_paths: Vec<String>,
    auth_error: Option<(i64, String)>,
    subscriptions: Vec<Subscription>,
    /// Authenticated connections by id.
    live: HashMap<u64, Conn>,
    next_id: u64,
}

type Shared = Arc<Mutex<Inner>>;

/// The running fake. Dropping it stops accepting (the tasks end with the runtime).
pub struct FakeData {
    inner: Shared,
    rest: SocketAddr,
    ws: SocketAddr,
    cmds: broadcast::Sender<Cmd>,
}

fn rfc3339(ts: i64) -> String {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A bar as Alpaca's JSON spells it (REST and stream share the fields).
pub fn bar_json(bar: &Bar) -> Value {
    json!({
        "t": rfc3339(bar.ts),
        "o": bar.open, "h": bar.high, "l": bar.low, "c": bar.close,
        "v": bar.volume, "n": 7, "vw": (bar.high + bar.low) / 2.0,
    })
}

impl FakeData {
    /// Starts both servers on loopback ports.
    pub async fn start() -> FakeData {
        let inner = Arc::new(Mutex::new(Inner {
            history: BTreeMap::new(),
            page_size: 1000,
            requests: Vec::new(),
            script: VecDeque::new(),
            clock: json!({
                "timestamp": "2024-01-02T10:00:00.123456-05:00",
                "is_open": true,
                "next_open": "2024-01-03T09:30:00-05:00",
                "next_close": "2024-01-02T16:00:00-05:00",
            }),
            calendar: Vec::new(),
            ws_accepted: 0,
            ws_paths: Vec::new(),
            auth_error: None,
            subscriptions: Vec::new(),
            live: HashMap::new(),
            next_id: 0,
        }));
        let (cmds, _) = broadcast::channel(1024);

        let app = Router::new()
            .route("/v2/stocks/bars", get(bars))
            .route("/v1beta3/crypto/us/bars", get(bars))
            .route("/v2/clock", get(clock))
            .route("/v2/calendar", get(calendar))
            .with_state(inner.clone());
        let rest_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rest = rest_listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(rest_listener, app).await;
        });

        let ws_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws = ws_listener.local_addr().unwrap();
        let (state, tx) = (inner.clone(), cmds.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = ws_listener.accept().await {
                let (state, rx) = (state.clone(), tx.subscribe());
                tokio::spawn(serve_ws(stream, state, rx));
            }
        });
        FakeData {
            inner,
            rest,
            ws,
            cmds,
        }
    }

    /// REST base URL (data and trading API): `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.rest)
    }

    /// Stock stream URL: `ws://127.0.0.1:<port>/v2/iex`. The crypto stream is
    /// `/v1beta3/crypto/us` on the same port.
    pub fn stream_url(&self) -> String {
        format!("ws://{}/v2/iex", self.ws)
    }

    /// The bars REST serves for `symbol` (any order; served sorted).
    pub fn set_history(&self, symbol: &str, mut bars: Vec<Bar>) {
        bars.sort_by_key(|b| b.ts);
        self.inner
            .lock()
            .unwrap()
            .history
            .insert(symbol.to_string(), bars);
    }

    /// Most bars per page (before Alpaca's `limit`); default 1000.
    pub fn set_page_size(&self, n: usize) {
        self.inner.lock().unwrap().page_size = n;
    }

    /// Answers the next REST request (after the key check) with `status`, `headers` and
    /// `body` instead of serving it.
    pub fn script(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        self.inner.lock().unwrap().script.push_back(Scripted {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_string(),
        });
    }

    /// The `GET /v2/clock` answer.
    pub fn set_clock(&self, clock: Value) {
        self.inner.lock().unwrap().clock = clock;
    }

    /// The `GET /v2/calendar` days (`{"date","open","close",...}`), filtered by the query's
    /// range when served.
    pub fn set_calendar(&self, days: Vec<Value>) {
        self.inner.lock().unwrap().calendar = days;
    }

    /// Every REST request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// How many REST requests hit `path`.
    pub fn request_count(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }

    /// Whether the websocket refuses the credentials (`402 auth failed`).
    pub fn set_auth_fail(&self, fail: bool) {
        self.inner.lock().unwrap().auth_error = fail.then(|| (402, "auth failed".to_string()));
    }

    /// The error the websocket answers authentication with (`406 connection limit exceeded`,
    /// `409 insufficient subscription`), or `None` to accept the right key.
    pub fn set_auth_error(&self, error: Option<(i64, &str)>) {
        self.inner.lock().unwrap().auth_error = error.map(|(c, m)| (c, m.to_string()));
    }

    /// Websocket connections accepted so far.
    pub fn stream_connections(&self) -> usize {
        self.inner.lock().unwrap().ws_accepted
    }

    /// Paths of the websocket connections accepted so far.
    pub fn stream_paths(&self) -> Vec<String> {
        self.inner.lock().unwrap().ws_paths.clone()
    }

    /// Every subscribe / unsubscribe message received.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.inner.lock().unwrap().subscriptions.clone()
    }

    /// The bars subscribed now on the authenticated connections to `path`.
    pub fn subscribed(&self, path: &str) -> BTreeSet<String> {
        self.inner
            .lock()
            .unwrap()
            .live
            .values()
            .filter(|c| c.path == path)
            .flat_map(|c| c.bars.iter().cloned())
            .collect()
    }

    /// Waits (up to 10 s) until the connections to `path` are subscribed to exactly
    /// `symbols`.
    pub async fn wait_subscribed(&self, path: &str, symbols: &[&str]) {
        let want: BTreeSet<String> = symbols.iter().map(|s| s.to_string()).collect();
        for _ in 0..1000 {
            if self.subscribed(path) == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{path}: subscribed to {:?}, expected {want:?}",
            self.subscribed(path)
        );
    }

    /// Sends a `"T":"b"` bar to the connections subscribed to `symbol`.
    pub fn push_bar(&self, symbol: &str, bar: &Bar) {
        self.push_message(symbol, "b", bar);
    }

    /// The updated bars subscribed now on the authenticated connections to `path`.
    pub fn subscribed_updates(&self, path: &str) -> BTreeSet<String> {
        self.inner
            .lock()
            .unwrap()
            .live
            .values()
            .filter(|c| c.path == path)
            .flat_map(|c| c.updated_bars.iter().cloned())
            .collect()
    }

    /// Sends a `"T":"u"` updated (corrected) bar to the connections subscribed to the
    /// updated bars of `symbol`.
    pub fn push_updated_bar(&self, symbol: &str, bar: &Bar) {
        self.push_message(symbol, "u", bar);
    }

    fn push_message(&self, symbol: &str, kind: &str, bar: &Bar) {
        let mut m = bar_json(bar);
        m["T"] = json!(kind);
        m["S"] = json!(symbol);
        let _ = self.cmds.send(Cmd::Bar {
            symbol: symbol.to_string(),
            updated: kind == "u",
            text: Value::Array(vec![m]).to_string(),
        });
    }

    /// Sends a raw text frame to every authenticated connection.
    pub fn push_raw(&self, text: &str) {
        let _ = self.cmds.send(Cmd::Raw(text.to_string()));
    }

    /// Drops every websocket connection (no close frame, like a network failure).
    pub fn drop_stream(&self) {
        let _ = self.cmds.send(Cmd::Drop);
    }
}

fn record(state: &Shared, uri: &Uri, query: &HashMap<String, String>) {
    state.lock().unwrap().requests.push(Recorded {
        path: uri.path().to_string(),
        query: query.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    });
}

/// The key check, then a scripted answer if one is queued.
fn precheck(state: &Shared, headers: &HeaderMap) -> Option<Response> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    if header("APCA-API-KEY-ID") != KEY || header("APCA-API-SECRET-KEY") != SECRET {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                [("content-type", "application/json")],
                r#"{"code":40110000,"message":"request is not authorized"}"#,
            )
                .into_response(),
        );
    }
    let scripted = state.lock().unwrap().script.pop_front()?;
    let mut res = (
        StatusCode::from_u16(scripted.status).unwrap(),
        scripted.body,
    )
        .into_response();
    for (k, v) in scripted.headers {
        res.headers_mut().insert(
            HeaderName::try_from(k).unwrap(),
            HeaderValue::try_from(v).unwrap(),
        );
    }
    Some(res)
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({"code": 42210000, "message": message})),
    )
        .into_response()
}

async fn bars(
    State(state): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    record(&state, &uri, &q);
    if let Some(res) = precheck(&state, &headers) {
        return res;
    }
    let Some(symbols) = q.get("symbols") else {
        return bad_request("symbols is required");
    };
    let parse = |k: &str| {
        q.get(k)
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.timestamp())
    };
    let (Some(start), Some(end)) = (parse("start"), parse("end")) else {
        return bad_request("start and end must be RFC 3339");
    };
    // `1Min`, `<n>Min` (the stored minutes aggregated into n-minute bars aligned on the
    // hour), `1Day` (the stored bars as they are).
    let minutes: i64 = match q.get("timeframe").map(String::as_str) {
        Some("1Day") => 1,
        Some(tf) => match tf.strip_suffix("Min").and_then(|n| n.parse::<i64>().ok()) {
            Some(n) if (1..=59).contains(&n) => n,
            _ => return bad_request("invalid timeframe"),
        },
        None => return bad_request("invalid timeframe"),
    };
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(1000);
    let offset: usize = match q.get("page_token") {
        None => 0,
        Some(t) => match t.strip_prefix("page-").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return bad_request("invalid page token"),
        },
    };
    let inner = state.lock().unwrap();
    let wanted: BTreeSet<&str> = symbols.split(',').collect();
    // Alpaca pages through the symbols in order, each symbol's bars in time order.
    let period = minutes * 60;
    let mut all: Vec<(&String, Bar)> = Vec::new();
    for (s, bars) in inner
        .history
        .iter()
        .filter(|(s, _)| wanted.contains(s.as_str()))
    {
        for b in bars.iter().filter(|b| b.ts >= start && b.ts <= end) {
            let ts = b.ts - b.ts.rem_euclid(period);
            match all.last_mut() {
                Some((last_s, last)) if *last_s == s && last.ts == ts && period > 60 => {
                    last.high = last.high.max(b.high);
                    last.low = last.low.min(b.low);
                    last.close = b.close;
                    last.volume += b.volume;
                }
                _ => all.push((s, Bar { ts, ..*b })),
            }
        }
    }
    let size = limit.min(inner.page_size).max(1);
    let page = all.iter().skip(offset).take(size);
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (s, b) in page {
        out.entry((*s).clone()).or_default().push(bar_json(b));
    }
    let next = (offset + size < all.len()).then(|| format!("page-{}", offset + size));
    axum::Json(json!({"bars": out, "next_page_token": next})).into_response()
}

async fn clock(
    State(state): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    record(&state, &uri, &q);
    if let Some(res) = precheck(&state, &headers) {
        return res;
    }
    let clock = state.lock().unwrap().clock.clone();
    axum::Json(clock).into_response()
}

async fn calendar(
    State(state): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    record(&state, &uri, &q);
    if let Some(res) = precheck(&state, &headers) {
        return res;
    }
    let start = q.get("start").cloned().unwrap_or_default();
    let end = q
        .get("end")
        .cloned()
        .unwrap_or_else(|| "9999-12-31".to_string());
    let days: Vec<Value> = state
        .lock()
        .unwrap()
        .calendar
        .iter()
        .filter(|d| {
            let date = d["date"].as_str().unwrap_or("");
            date >= start.as_str() && date <= end.as_str()
        })
        .cloned()
        .collect();
    axum::Json(Value::Array(days)).into_response()
}

async fn serve_ws(stream: TcpStream, state: Shared, mut cmds: broadcast::Receiver<Cmd>) {
    let mut path = String::new();
    // The error type is tungstenite's `Callback` signature.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, res: WsResponse| {
        path = req.uri().path().to_string();
        Ok(res)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let id = {
        let mut s = state.lock().unwrap();
        s.ws_accepted += 1;
        s.ws_paths.push(path.clone());
        s.next_id += 1;
        s.next_id
    };
    let send = |v: Value| Message::text(v.to_string());
    if ws
        .send(send(json!([{"T": "success", "msg": "connected"}])))
        .await
        .is_err()
    {
        return;
    }
    // Authentication.
    loop {
        let Some(Ok(msg)) = ws.next().await else {
            return;
        };
        let Message::Text(text) = msg else { continue };
        let Ok(m) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        if m["action"] != "auth" {
            let _ = ws
                .send(send(
                    json!([{"T": "error", "code": 401, "msg": "not authenticated"}]),
                ))
                .await;
            return;
        }
        let scripted = state.lock().unwrap().auth_error.clone();
        let error = scripted.or_else(|| {
            (m["key"] != KEY || m["secret"] != SECRET).then(|| (402, "auth failed".to_string()))
        });
        if let Some((code, msg)) = error {
            let _ = ws
                .send(send(json!([{"T": "error", "code": code, "msg": msg}])))
                .await;
            let _ = ws.close(None).await;
            return;
        }
        if ws
            .send(send(json!([{"T": "success", "msg": "authenticated"}])))
            .await
            .is_err()
        {
            return;
        }
        break;
    }
    state.lock().unwrap().live.insert(
        id,
        Conn {
            path: path.clone(),
            bars: BTreeSet::new(),
            updated_bars: BTreeSet::new(),
        },
    );
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { break };
                let Message::Text(text) = msg else { continue };
                let Ok(m) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                let action = m["action"].as_str().unwrap_or("").to_string();
                if action != "subscribe" && action != "unsubscribe" {
                    continue;
                }
                let list = |k: &str| -> Vec<String> {
                    m[k].as_array()
                        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                        .unwrap_or_default()
                };
                let (bars, updated) = (list("bars"), list("updatedBars"));
                let (now, now_updated): (Vec<String>, Vec<String>) = {
                    let mut s = state.lock().unwrap();
                    s.subscriptions.push(Subscription {
                        path: path.clone(),
                        action: action.clone(),
                        bars: bars.clone(),
                        updated_bars: updated.clone(),
                    });
                    let conn = s.live.get_mut(&id).unwrap();
                    for (set, list) in [(&mut conn.bars, bars), (&mut conn.updated_bars, updated)] {
                        for b in list {
                            if action == "subscribe" { set.insert(b); } else { set.remove(&b); }
                        }
                    }
                    (conn.bars.iter().cloned().collect(), conn.updated_bars.iter().cloned().collect())
                };
                let reply = json!([{"T": "subscription", "trades": [], "quotes": [], "bars": now,
                    "updatedBars": now_updated, "dailyBars": [], "statuses": [], "lulds": [],
                    "corrections": [], "cancelErrors": []}]);
                if ws.send(send(reply)).await.is_err() { break; }
            }
            cmd = cmds.recv() => {
                match cmd {
                    Ok(Cmd::Bar { symbol, updated, text }) => {
                        let subscribed = state.lock().unwrap().live.get(&id).is_some_and(|c| {
                            if updated { c.updated_bars.contains(&symbol) } else { c.bars.contains(&symbol) }
                        });
                        if subscribed && ws.send(Message::text(text)).await.is_err() { break; }
                    }
                    Ok(Cmd::Raw(text)) => {
                        if ws.send(Message::text(text)).await.is_err() { break; }
                    }
                    Ok(Cmd::Drop) | Err(broadcast::error::RecvError::Closed) => break,
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                }
            }
        }
    }
    state.lock().unwrap().live.remove(&id);
    // Dropping `ws` drops the TCP connection without a close frame.
}
