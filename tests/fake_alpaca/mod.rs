//! A fake Alpaca trading server for tests: REST (axum on 127.0.0.1:0) and the
//! `trade_updates` websocket (tokio-tungstenite on another port), speaking Alpaca's
//! documented wire format — decimal strings, RFC 3339 times, `{"code","message"}` errors,
//! 207 bulk deletes, bracket legs, client order id uniqueness — with in-memory accounts,
//! orders and positions, scripted faults and request counting.
//!
//! ```ignore
//! let fake = FakeAlpaca::start().await;
//! // point a broker at fake.trading_url() / fake.stream_url() with KEY_ID / SECRET_KEY
//! fake.fill("zt-...", dec!(10), dec!(101.5));
//! ```
#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::Message;

/// The key id the fake accepts.
pub const KEY_ID: &str = "PKFAKEKEYID";
/// The secret key the fake accepts.
pub const SECRET_KEY: &str = "fake-secret-key";

/// One order at the fake.
#[derive(Clone, Debug)]
pub struct FakeOrder {
    pub id: String,
    pub client_order_id: String,
    pub symbol: String,
    pub qty: Decimal,
    pub filled_qty: Decimal,
    pub filled_avg_price: Option<Decimal>,
    pub side: String,
    pub kind: String,
    pub time_in_force: String,
    pub limit_price: Option<Decimal>,
    pub stop_price: Option<Decimal>,
    pub status: String,
    pub order_class: String,
    pub legs: Vec<String>,
    pub parent: Option<String>,
    pub replaces: Option<String>,
    pub replaced_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub filled_at: Option<DateTime<Utc>>,
}

impl FakeOrder {
    /// Whether it can still execute (or will, for a held leg).
    pub fn is_open(&self) -> bool {
        matches!(
            self.status.as_str(),
            "new"
                | "accepted"
                | "pending_new"
                | "partially_filled"
                | "held"
                | "pending_cancel"
                | "pending_replace"
                | "done_for_day"
        )
    }
}

/// One position at the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakePosition {
    pub symbol: String,
    pub qty: Decimal,
    pub avg_entry_price: Decimal,
    pub current_price: Decimal,
}

#[derive(Default)]
struct Faults {
    rate_limited: u32,
    reset_in: u64,
    use_retry_after: bool,
    server_errors: u32,
    slow_submits: u32,
    slow_delay: Duration,
    rejects: VecDeque<(u16, i64, String)>,
    close_fail: HashMap<String, (u16, i64, String)>,
}

struct Book {
    cash: Decimal,
    orders: Vec<FakeOrder>,
    positions: BTreeMap<String, FakePosition>,
    submits: HashMap<String, usize>,
    requests: Vec<(Instant, String)>,
    faults: Faults,
    next_id: u64,
    stream_down: bool,
    stream_sessions: usize,
}

struct Shared {
    book: Mutex<Book>,
    updates: broadcast::Sender<String>,
    generation: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake Alpaca (REST + stream). The servers stop when it is dropped.
pub struct FakeAlpaca {
    shared: Arc<Shared>,
    rest: std::net::SocketAddr,
    stream: std::net::SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeAlpaca {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn d(x: Decimal) -> Value {
    Value::String(x.normalize().to_string())
}

fn od(x: Option<Decimal>) -> Value {
    x.map_or(Value::Null, d)
}

fn error(status: u16, code: i64, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

fn ok(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

impl Book {
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!(
            "0b1e{:04x}-7a5e-4c0d-9f00-{:012x}",
            self.next_id, self.next_id
        )
    }

    fn idx(&self, id: &str) -> Option<usize> {
        self.orders.iter().position(|o| o.id == id)
    }

    fn idx_by_client(&self, cid: &str) -> Option<usize> {
        self.orders.iter().position(|o| o.client_order_id == cid)
    }

    fn json(&self, o: &FakeOrder, nested: bool) -> Value {
        let legs: Value = if nested && !o.legs.is_empty() {
            Value::Array(
                o.legs
                    .iter()
                    .filter_map(|id| self.idx(id))
                    .map(|i| self.json(&self.orders[i], false))
                    .collect(),
            )
        } else {
            Value::Null
        };
        json!({
            "id": o.id,
            "client_order_id": o.client_order_id,
            "created_at": ts(o.created_at),
            "updated_at": ts(o.updated_at),
            "submitted_at": ts(o.created_at),
            "filled_at": o.filled_at.map(ts),
            "expired_at": null,
            "canceled_at": null,
            "failed_at": null,
            "replaced_at": null,
            "replaced_by": o.replaced_by,
            "replaces": o.replaces,
            "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
            "symbol": o.symbol,
            "asset_class": if o.symbol.contains('/') { "crypto" } else { "us_equity" },
            "notional": null,
            "qty": d(o.qty),
            "filled_qty": d(o.filled_qty),
            "filled_avg_price": od(o.filled_avg_price),
            "order_class": if o.order_class == "simple" { "" } else { o.order_class.as_str() },
            "order_type": o.kind,
            "type": o.kind,
            "side": o.side,
            "position_intent": if o.side == "buy" { "buy_to_open" } else { "sell_to_close" },
            "time_in_force": o.time_in_force,
            "limit_price": od(o.limit_price),
            "stop_price": od(o.stop_price),
            "status": o.status,
            "extended_hours": false,
            "legs": legs,
            "trail_percent": null,
            "trail_price": null,
            "hwm": null,
            "subtag": null,
            "source": null,
        })
    }

    /// The order a stream update shows: a leg's parent is not nested, a parent shows legs.
    fn update(&self, event: &str, i: usize, extra: Value) -> String {
        let mut data = json!({
            "event": event,
            "timestamp": ts(Utc::now()),
            "order": self.json(&self.orders[i], true),
        });
        if let (Some(map), Value::Object(more)) = (data.as_object_mut(), extra) {
            map.extend(more);
        }
        json!({"stream": "trade_updates", "data": data}).to_string()
    }

    fn apply_position(&mut self, symbol: &str, signed: Decimal, price: Decimal) -> Decimal {
        let p = self
            .positions
            .entry(symbol.to_string())
            .or_insert_with(|| FakePosition {
                symbol: symbol.to_string(),
                qty: Decimal::ZERO,
                avg_entry_price: price,
                current_price: price,
            });
        let new_qty = p.qty + signed;
        if p.qty.is_zero() || p.qty.is_sign_positive() == signed.is_sign_positive() {
            let total = p.qty.abs() + signed.abs();
            p.avg_entry_price = (p.avg_entry_price * p.qty.abs() + price * signed.abs()) / total;
        } else if !new_qty.is_zero() && new_qty.is_sign_positive() != p.qty.is_sign_positive() {
            p.avg_entry_price = price;
        }
        p.qty = new_qty;
        p.current_price = price;
        if new_qty.is_zero() {
            self.positions.remove(symbol);
        }
        new_qty
    }

    fn cancel(&mut self, i: usize, out: &mut Vec<String>) {
        self.orders[i].status = "canceled".into();
        self.orders[i].updated_at = Utc::now();
        out.push(self.update("canceled", i, json!({})));
    }

    fn fill(&mut self, i: usize, qty: Decimal, price: Decimal, out: &mut Vec<String>) {
        let now = Utc::now();
        let o = &mut self.orders[i];
        let qty = qty.min(o.qty - o.filled_qty);
        assert!(qty > Decimal::ZERO, "nothing left to fill of {}", o.id);
        let old = o.filled_qty;
        o.filled_qty += qty;
        o.filled_avg_price =
            Some((o.filled_avg_price.unwrap_or_default() * old + price * qty) / o.filled_qty);
        let full = o.filled_qty == o.qty;
        o.status = if full { "filled" } else { "partially_filled" }.into();
        o.updated_at = now;
        if full {
            o.filled_at = Some(now);
        }
        let sign = if o.side == "buy" {
            Decimal::ONE
        } else {
            Decimal::NEGATIVE_ONE
        };
        let (symbol, legs, parent) = (o.symbol.clone(), o.legs.clone(), o.parent.clone());
        self.cash -= sign * qty * price;
        let position_qty = self.apply_position(&symbol, sign * qty, price);
        // The legs go live with the entry's first fill.
        let mut activated = Vec::new();
        for leg in &legs {
            if let Some(j) = self.idx(leg)
                && self.orders[j].status == "held"
            {
                self.orders[j].status = "new".into();
                self.orders[j].updated_at = now;
                activated.push(j);
            }
        }
        self.next_id += 1;
        let exec = format!(
            "e0e0{:04x}-0000-4000-8000-{:012x}",
            self.next_id, self.next_id
        );
        out.push(self.update(
            if full { "fill" } else { "partial_fill" },
            i,
            json!({"execution_id": exec, "price": d(price), "qty": d(qty),
                   "position_qty": d(position_qty)}),
        ));
        for j in activated {
            out.push(self.update("new", j, json!({})));
        }
        // One-cancels-other between the legs of a bracket.
        if full && let Some(p) = parent.and_then(|p| self.idx(&p)) {
            for leg in self.orders[p].legs.clone() {
                if let Some(j) = self.idx(&leg)
                    && j != i
                    && self.orders[j].is_open()
                {
                    self.cancel(j, out);
                }
            }
        }
    }
}

fn parse_dec(v: &Value) -> Option<Decimal> {
    match v {
        Value::String(s) => Decimal::from_str(s).ok(),
        Value::Number(n) => Decimal::from_str(&n.to_string()).ok(),
        _ => None,
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let mut slow = None;
    let response = {
        let mut book = shared.lock();
        book.requests
            .push((Instant::now(), format!("{method} {path}")));
        let key = headers.get("APCA-API-KEY-ID").and_then(|v| v.to_str().ok());
        let secret = headers
            .get("APCA-API-SECRET-KEY")
            .and_then(|v| v.to_str().ok());
        if key != Some(KEY_ID) || secret != Some(SECRET_KEY) {
            return error(401, 40110000, "request is not authorized");
        }
        if book.faults.rate_limited > 0 {
            book.faults.rate_limited -= 1;
            let mut r = error(429, 42910000, "rate limit exceeded");
            let reset_in = book.faults.reset_in;
            let h = r.headers_mut();
            if book.faults.use_retry_after {
                h.insert("Retry-After", HeaderValue::from(reset_in));
            } else {
                let reset = Utc::now().timestamp() as u64 + reset_in;
                h.insert("X-RateLimit-Limit", HeaderValue::from(200u32));
                h.insert("X-RateLimit-Remaining", HeaderValue::from(0u32));
                h.insert("X-RateLimit-Reset", HeaderValue::from(reset));
            }
            return r;
        }
        if book.faults.server_errors > 0 {
            book.faults.server_errors -= 1;
            return error(500, 50010000, "internal server error");
        }
        let mut out = Vec::new();
        let r = route(
            &mut book, &method, &path, &query, &body, &mut out, &mut slow,
        );
        for u in out {
            let _ = shared.updates.send(u);
        }
        r
    };
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    response
}

fn route(
    book: &mut Book,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    body: &[u8],
    out: &mut Vec<String>,
    slow: &mut Option<Duration>,
) -> Response {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["v2", "account"]) => {
            let value: Decimal = book
                .positions
                .values()
                .map(|p| p.qty * p.current_price)
                .sum();
            let equity = book.cash + value;
            ok(
                200,
                json!({
                    "id": "e6fe16f3-64a4-4921-8928-cadf02f92f98",
                    "account_number": "PA3FAKE00001",
                    "status": "ACTIVE",
                    "crypto_status": "ACTIVE",
                    "currency": "USD",
                    "cash": d(book.cash),
                    "portfolio_value": d(equity),
                    "equity": d(equity),
                    "last_equity": d(equity),
                    "buying_power": d(book.cash.max(Decimal::ZERO) * Decimal::TWO),
                    "long_market_value": d(value.max(Decimal::ZERO)),
                    "pattern_day_trader": false,
                    "trading_blocked": false,
                    "transfers_blocked": false,
                    "account_blocked": false,
                    "shorting_enabled": true,
                    "multiplier": "2",
                    "created_at": "2024-01-02T15:00:00.000000Z",
                }),
            )
        }
        ("GET", ["v2", "positions"]) => ok(
            200,
            Value::Array(
                book.positions
                    .values()
                    .map(|p| {
                        json!({
                            "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
                            "symbol": p.symbol,
                            "exchange": "NASDAQ",
                            "asset_class": "us_equity",
                            "qty": d(p.qty),
                            "qty_available": d(p.qty),
                            "side": if p.qty < Decimal::ZERO { "short" } else { "long" },
                            "avg_entry_price": d(p.avg_entry_price),
                            "current_price": d(p.current_price),
                            "market_value": d(p.qty * p.current_price),
                            "unrealized_pl": d((p.current_price - p.avg_entry_price) * p.qty),
                        })
                    })
                    .collect(),
            ),
        ),
        ("DELETE", ["v2", "positions"]) => {
            if query.get("cancel_orders").map(String::as_str) == Some("true") {
                for i in 0..book.orders.len() {
                    if book.orders[i].is_open() {
                        book.cancel(i, out);
                    }
                }
            }
            let mut parts = Vec::new();
            for p in book.positions.values().cloned().collect::<Vec<_>>() {
                if let Some((status, code, message)) = book.faults.close_fail.get(&p.symbol) {
                    parts.push(json!({"symbol": p.symbol, "status": status,
                        "body": {"code": code, "message": message}}));
                    continue;
                }
                let id = book.new_id();
                let now = Utc::now();
                book.orders.push(FakeOrder {
                    id: id.clone(),
                    client_order_id: format!("c105e{id}"),
                    symbol: p.symbol.clone(),
                    qty: p.qty.abs(),
                    filled_qty: Decimal::ZERO,
                    filled_avg_price: None,
                    side: if p.qty > Decimal::ZERO { "sell" } else { "buy" }.into(),
                    kind: "market".into(),
                    time_in_force: "day".into(),
                    limit_price: None,
                    stop_price: None,
                    status: "accepted".into(),
                    order_class: "simple".into(),
                    legs: vec![],
                    parent: None,
                    replaces: None,
                    replaced_by: None,
                    created_at: now,
                    updated_at: now,
                    filled_at: None,
                });
                let i = book.orders.len() - 1;
                out.push(book.update("new", i, json!({})));
                parts.push(json!({"symbol": p.symbol, "status": 200,
                    "body": book.json(&book.orders[i], true)}));
            }
            ok(207, Value::Array(parts))
        }
        ("GET", ["v2", "orders:by_client_order_id"]) => {
            let cid = query.get("client_order_id").cloned().unwrap_or_default();
            match book.idx_by_client(&cid) {
                Some(i) => ok(200, book.json(&book.orders[i], true)),
                None => error(404, 40410000, "order not found"),
            }
        }
        ("GET", ["v2", "orders"]) => list_orders(book, query),
        ("POST", ["v2", "orders"]) => submit(book, body, out, slow),
        ("DELETE", ["v2", "orders"]) => {
            let mut parts = Vec::new();
            for i in 0..book.orders.len() {
                if book.orders[i].is_open() {
                    book.cancel(i, out);
                    parts.push(json!({"id": book.orders[i].id, "status": 200}));
                }
            }
            ok(207, Value::Array(parts))
        }
        ("GET", ["v2", "orders", id]) => match book.idx(id) {
            Some(i) => ok(200, book.json(&book.orders[i], true)),
            None => error(404, 40410000, "order not found"),
        },
        ("DELETE", ["v2", "orders", id]) => match book.idx(id) {
            Some(i) if book.orders[i].is_open() => {
                book.cancel(i, out);
                StatusCode::NO_CONTENT.into_response()
            }
            Some(i) => error(
                422,
                42210000,
                &format!("order is already in \"{}\" state", book.orders[i].status),
            ),
            None => error(404, 40410000, "order not found"),
        },
        ("PATCH", ["v2", "orders", id]) => replace(book, id, body, out),
        _ => error(404, 40410000, "endpoint not found"),
    }
}

fn list_orders(book: &Book, query: &HashMap<String, String>) -> Response {
    let status = query.get("status").map_or("open", String::as_str);
    let nested = query.get("nested").map(String::as_str) == Some("true");
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(50)
        .min(500);
    let after = query
        .get("after")
        .and_then(|a| DateTime::parse_from_rfc3339(a).ok())
        .map(|a| a.with_timezone(&Utc));
    let asc = query.get("direction").map(String::as_str) == Some("asc");
    let open_of = |o: &FakeOrder| {
        o.is_open()
            || (nested
                && o.legs
                    .iter()
                    .any(|l| book.idx(l).is_some_and(|j| book.orders[j].is_open())))
    };
    let mut list: Vec<&FakeOrder> = book
        .orders
        .iter()
        .filter(|o| !nested || o.parent.is_none())
        .filter(|o| match status {
            "open" => open_of(o),
            "closed" => !open_of(o),
            _ => true,
        })
        .filter(|o| after.is_none_or(|a| o.created_at > a))
        .collect();
    list.sort_by_key(|o| o.created_at);
    if !asc {
        list.reverse();
    }
    list.truncate(limit);
    ok(
        200,
        Value::Array(list.into_iter().map(|o| book.json(o, nested)).collect()),
    )
}

fn submit(
    book: &mut Book,
    body: &[u8],
    out: &mut Vec<String>,
    slow: &mut Option<Duration>,
) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return error(400, 40010000, "request body format is invalid");
    };
    let s = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let cid = s("client_order_id");
    if !cid.is_empty() && book.idx_by_client(&cid).is_some() {
        return error(422, 40010001, "client_order_id must be unique");
    }
    if let Some((status, code, message)) = book.faults.rejects.pop_front() {
        return error(status, code, &message);
    }
    let qty = req.get("qty").and_then(parse_dec).unwrap_or_default();
    if qty <= Decimal::ZERO {
        return error(422, 40010001, "qty must be > 0");
    }
    let kind = s("type");
    let tif = s("time_in_force");
    let class = match s("order_class").as_str() {
        "" => "simple".to_string(),
        c => c.to_string(),
    };
    let side = s("side");
    if side != "buy" && side != "sell" {
        return error(422, 40010001, "invalid side");
    }
    let limit_price = req.get("limit_price").and_then(parse_dec);
    let stop_price = req.get("stop_price").and_then(parse_dec);
    if kind == "limit" && limit_price.is_none()
        || kind == "stop" && stop_price.is_none()
        || kind == "stop_limit" && (stop_price.is_none() || limit_price.is_none())
    {
        return error(422, 40010001, "price required for this order type");
    }
    // Crypto orders are simple market, limit or stop-limit orders, good till cancelled or
    // immediate or cancel (Alpaca's crypto trading rules).
    if s("symbol").contains('/') {
        if class != "simple" {
            return error(
                422,
                42210000,
                "crypto orders not allowed for advanced order_class: bracket",
            );
        }
        if !matches!(kind.as_str(), "market" | "limit" | "stop_limit") {
            return error(422, 42210000, "invalid order type for crypto order");
        }
        if tif != "gtc" && tif != "ioc" {
            return error(422, 42210000, "invalid crypto time_in_force");
        }
    }
    let tp = req.pointer("/take_profit/limit_price").and_then(parse_dec);
    let sl = req.pointer("/stop_loss/stop_price").and_then(parse_dec);
    match class.as_str() {
        "bracket" if tp.is_none() || sl.is_none() => {
            return error(
                422,
                40010001,
                "bracket orders must specify both take_profit and stop_loss",
            );
        }
        "oto" if tp.is_none() == sl.is_none() => {
            return error(
                422,
                40010001,
                "oto orders must specify one of take_profit or stop_loss",
            );
        }
        "bracket" | "oto" if tif != "day" && tif != "gtc" => {
            return error(
                422,
                40010001,
                "invalid time_in_force for an advanced order: day or gtc",
            );
        }
        _ => {}
    }
    let now = Utc::now();
    let id = book.new_id();
    let mut legs = Vec::new();
    let exit_side = if side == "buy" { "sell" } else { "buy" };
    for (leg_kind, limit, stop) in [("limit", tp, None), ("stop", None, sl)] {
        if limit.is_none() && stop.is_none() {
            continue;
        }
        let leg_id = book.new_id();
        legs.push(leg_id.clone());
        book.orders.push(FakeOrder {
            id: leg_id.clone(),
            client_order_id: format!("1e9{leg_id}"),
            symbol: s("symbol"),
            qty,
            filled_qty: Decimal::ZERO,
            filled_avg_price: None,
            side: exit_side.into(),
            kind: leg_kind.into(),
            time_in_force: tif.clone(),
            limit_price: limit,
            stop_price: stop,
            status: "held".into(),
            order_class: class.clone(),
            legs: vec![],
            parent: Some(id.clone()),
            replaces: None,
            replaced_by: None,
            created_at: now,
            updated_at: now,
            filled_at: None,
        });
    }
    book.orders.push(FakeOrder {
        id: id.clone(),
        client_order_id: if cid.is_empty() {
            format!("c{id}")
        } else {
            cid.clone()
        },
        symbol: s("symbol"),
        qty,
        filled_qty: Decimal::ZERO,
        filled_avg_price: None,
        side,
        kind,
        time_in_force: tif,
        limit_price,
        stop_price,
        status: "new".into(),
        order_class: class,
        legs,
        parent: None,
        replaces: None,
        replaced_by: None,
        created_at: now,
        updated_at: now,
        filled_at: None,
    });
    *book.submits.entry(cid).or_default() += 1;
    let i = book.orders.len() - 1;
    out.push(book.update("new", i, json!({})));
    if book.faults.slow_submits > 0 {
        book.faults.slow_submits -= 1;
        *slow = Some(book.faults.slow_delay);
    }
    ok(200, book.json(&book.orders[i], true))
}

fn replace(book: &mut Book, id: &str, body: &[u8], out: &mut Vec<String>) -> Response {
    let Some(i) = book.idx(id) else {
        return error(404, 40410000, "order not found");
    };
    if !book.orders[i].is_open() {
        return error(
            422,
            42210000,
            &format!("order is already in \"{}\" state", book.orders[i].status),
        );
    }
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let new_id = book.new_id();
    let now = Utc::now();
    let mut n = book.orders[i].clone();
    n.id = new_id.clone();
    n.client_order_id = req
        .get("client_order_id")
        .and_then(Value::as_str)
        .map_or_else(|| format!("4e91{new_id}"), str::to_string);
    if let Some(q) = req.get("qty").and_then(parse_dec) {
        n.qty = q;
    }
    if let Some(p) = req.get("stop_price").and_then(parse_dec) {
        n.stop_price = Some(p);
    }
    if let Some(p) = req.get("limit_price").and_then(parse_dec) {
        n.limit_price = Some(p);
    }
    n.filled_qty = Decimal::ZERO;
    n.filled_avg_price = None;
    n.status = "new".into();
    n.replaces = Some(id.to_string());
    n.replaced_by = None;
    n.created_at = now;
    n.updated_at = now;
    let old = &mut book.orders[i];
    old.status = "replaced".into();
    old.replaced_by = Some(new_id.clone());
    old.updated_at = now;
    if let Some(p) = old.parent.clone().and_then(|p| book.idx(&p)) {
        for leg in &mut book.orders[p].legs {
            if leg == id {
                *leg = new_id.clone();
            }
        }
    }
    book.orders.push(n);
    let j = book.orders.len() - 1;
    out.push(book.update("replaced", i, json!({})));
    out.push(book.update("new", j, json!({})));
    ok(200, book.json(&book.orders[j], true))
}

async fn stream_session(shared: Arc<Shared>, tcp: tokio::net::TcpStream) {
    if shared.lock().stream_down {
        return;
    }
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let mut generation = shared.generation.subscribe();
    let started = *generation.borrow_and_update();
    let read_json = |m: Message| -> Option<Value> {
        match m {
            Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
            Message::Binary(b) => serde_json::from_slice(&b).ok(),
            _ => None,
        }
    };
    // Auth.
    let Some(Ok(first)) = ws.next().await else {
        return;
    };
    let auth = read_json(first).unwrap_or(Value::Null);
    let authorized = auth.get("action").and_then(Value::as_str) == Some("auth")
        && auth.get("key").and_then(Value::as_str) == Some(KEY_ID)
        && auth.get("secret").and_then(Value::as_str) == Some(SECRET_KEY);
    let status = if authorized {
        "authorized"
    } else {
        "unauthorized"
    };
    let reply = json!({"stream": "authorization",
        "data": {"status": status, "action": "authenticate"}});
    if ws
        .send(Message::binary(reply.to_string().into_bytes()))
        .await
        .is_err()
        || !authorized
    {
        let _ = ws.close(None).await;
        return;
    }
    // Listen.
    let Some(Ok(second)) = ws.next().await else {
        return;
    };
    let listen = read_json(second).unwrap_or(Value::Null);
    if listen.get("action").and_then(Value::as_str) != Some("listen") {
        return;
    }
    let mut updates = shared.updates.subscribe();
    let reply = json!({"stream": "listening", "data": {"streams": ["trade_updates"]}});
    if ws
        .send(Message::binary(reply.to_string().into_bytes()))
        .await
        .is_err()
    {
        return;
    }
    shared.lock().stream_sessions += 1;
    loop {
        tokio::select! {
            u = updates.recv() => match u {
                Ok(u) => {
                    if *shared.generation.borrow() != started {
                        break;
                    }
                    if ws.send(Message::binary(u.into_bytes())).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(_) => break,
            },
            _ = generation.changed() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            },
        }
    }
    // Dropped without a close frame, as a broken connection would be.
}

impl FakeAlpaca {
    /// Starts the REST and stream servers on loopback with $100,000 of cash.
    pub async fn start() -> FakeAlpaca {
        let (updates, _) = broadcast::channel(4096);
        let (generation, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            book: Mutex::new(Book {
                cash: Decimal::from(100_000),
                orders: Vec::new(),
                positions: BTreeMap::new(),
                submits: HashMap::new(),
                requests: Vec::new(),
                faults: Faults::default(),
                next_id: 0,
                stream_down: false,
                stream_sessions: 0,
            }),
            updates,
            generation,
        });
        let rest = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rest_addr = rest.local_addr().unwrap();
        let stream_addr = stream.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let mut tasks = vec![tokio::spawn(async move {
            let _ = axum::serve(rest, app).await;
        })];
        let s = shared.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok((tcp, _)) = stream.accept().await {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(stream_session(s.clone(), tcp));
            }
        }));
        FakeAlpaca {
            shared,
            rest: rest_addr,
            stream: stream_addr,
            tasks,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn trading_url(&self) -> String {
        format!("http://{}", self.rest)
    }

    /// `ws://127.0.0.1:<port>/stream`.
    pub fn stream_url(&self) -> String {
        format!("ws://{}/stream", self.stream)
    }

    fn emit(&self, out: Vec<String>) {
        for u in out {
            let _ = self.shared.updates.send(u);
        }
    }

    /// Fills `qty` of the order with this client order id (or Alpaca id) at `price`:
    /// updates the order, the position and cash, activates bracket legs, cancels the other
    /// leg when a leg fills, and emits the trade updates.
    pub fn fill(&self, client_order_id: &str, qty: Decimal, price: Decimal) {
        let mut out = Vec::new();
        {
            let mut book = self.shared.lock();
            let i = book
                .idx_by_client(client_order_id)
                .or_else(|| book.idx(client_order_id))
                .unwrap_or_else(|| panic!("no order {client_order_id} at the fake"));
            // Follow replacements to the working order.
            let mut i = i;
            while let Some(next) = book.orders[i].replaced_by.clone() {
                i = book.idx(&next).unwrap();
            }
            book.fill(i, qty, price, &mut out);
            // Sent under the lock, so that updates keep the order of the changes.
            self.emit(out);
        }
    }

    /// Cancels an open order (as Alpaca would at the end of the day), emitting `canceled`.
    pub fn cancel_at_broker(&self, id_or_client_id: &str) {
        let mut book = self.shared.lock();
        let i = book
            .idx_by_client(id_or_client_id)
            .or_else(|| book.idx(id_or_client_id))
            .unwrap();
        let mut out = Vec::new();
        book.cancel(i, &mut out);
        self.emit(out);
    }

    /// Every order, oldest first.
    pub fn orders(&self) -> Vec<FakeOrder> {
        self.shared.lock().orders.clone()
    }

    /// The order with this client order id.
    pub fn order(&self, client_order_id: &str) -> Option<FakeOrder> {
        let book = self.shared.lock();
        book.idx_by_client(client_order_id)
            .map(|i| book.orders[i].clone())
    }

    /// Every position.
    pub fn positions(&self) -> Vec<FakePosition> {
        self.shared.lock().positions.values().cloned().collect()
    }

    /// Cash, USD.
    pub fn cash(&self) -> Decimal {
        self.shared.lock().cash
    }

    /// Adds a position nobody owns (bought outside ztraded).
    pub fn add_position(&self, symbol: &str, qty: Decimal, price: Decimal) {
        let mut book = self.shared.lock();
        book.cash -= qty * price;
        book.apply_position(symbol, qty, price);
    }

    /// How many POSTs created an order with this client order id.
    pub fn submits_for(&self, client_order_id: &str) -> usize {
        self.shared
            .lock()
            .submits
            .get(client_order_id)
            .copied()
            .unwrap_or(0)
    }

    /// Requests received so far (`"GET /v2/account"`, …).
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .lock()
            .requests
            .iter()
            .map(|r| r.1.clone())
            .collect()
    }

    /// How many requests arrived.
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// The most requests that arrived within any `window`.
    pub fn max_requests_in(&self, window: Duration) -> usize {
        let book = self.shared.lock();
        let times: Vec<Instant> = book.requests.iter().map(|r| r.0).collect();
        let mut best = 0;
        let mut j = 0;
        for i in 0..times.len() {
            while times[i].duration_since(times[j]) >= window {
                j += 1;
            }
            best = best.max(i + 1 - j);
        }
        best
    }

    /// The next `n` requests answer 429 with `X-RateLimit-Reset` `reset_in` seconds ahead.
    pub fn rate_limit_next(&self, n: u32, reset_in: u64) {
        let mut book = self.shared.lock();
        book.faults.rate_limited = n;
        book.faults.reset_in = reset_in;
        book.faults.use_retry_after = false;
    }

    /// The next `n` requests answer 429 with `Retry-After: secs`.
    pub fn rate_limit_next_retry_after(&self, n: u32, secs: u64) {
        let mut book = self.shared.lock();
        book.faults.rate_limited = n;
        book.faults.reset_in = secs;
        book.faults.use_retry_after = true;
    }

    /// The next `n` requests answer 500.
    pub fn fail_next(&self, n: u32) {
        self.shared.lock().faults.server_errors = n;
    }

    /// The next `n` order submissions are executed but answered only after `delay`
    /// (past the client's timeout: the answer is lost).
    pub fn delay_next_submits(&self, n: u32, delay: Duration) {
        let mut book = self.shared.lock();
        book.faults.slow_submits = n;
        book.faults.slow_delay = delay;
    }

    /// The next submission is refused with this status and error body (403 40310000
    /// "insufficient buying power", 422 …); nothing is created.
    pub fn reject_next_submit(&self, status: u16, code: i64, message: &str) {
        self.shared
            .lock()
            .faults
            .rejects
            .push_back((status, code, message.to_string()));
    }

    /// `DELETE /v2/positions` refuses to close `symbol` with this part.
    pub fn fail_close(&self, symbol: &str, status: u16, code: i64, message: &str) {
        self.shared
            .lock()
            .faults
            .close_fail
            .insert(symbol.to_string(), (status, code, message.to_string()));
    }

    /// While down, stream connections are refused.
    pub fn set_stream_down(&self, down: bool) {
        self.shared.lock().stream_down = down;
    }

    /// Drops every stream connection at once (no close frame); updates after this are not
    /// delivered on them.
    pub fn drop_stream(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Authenticated stream sessions so far.
    pub fn stream_sessions(&self) -> usize {
        self.shared.lock().stream_sessions
    }

    /// Waits until at least `n` stream sessions were established (panics after 10 s).
    pub async fn wait_stream_sessions(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.stream_sessions() < n {
            assert!(Instant::now() < deadline, "no stream session {n}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
