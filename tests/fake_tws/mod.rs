//! A fake TWS / IB Gateway for tests: a TCP listener on 127.0.0.1:0 speaking the TWS API
//! wire protocol as `ibapi` uses it.
//!
//! * **Handshake.** The client sends `API\0`, then a length-prefixed version range
//!   (`v213..226`). The fake answers with one length-prefixed text frame: the server version
//!   and the connection time, NUL-terminated. It announces [`SERVER_VERSION`] = 226, the top
//!   of the range `ibapi` 5.5 offers, as a current gateway does: from 213 on every message
//!   of both directions is protobuf (a 4-byte big-endian message id plus 200, then the
//!   protobuf body), which is the only encoding `ibapi` 5.5 still speaks.
//! * **Frames.** Each message is a 4-byte big-endian length, then the body.
//! * **Start.** `StartApi` (71) with the client id is answered with `NextValidId` (9),
//!   `ManagedAccounts` (15) and the data-farm notices 2104 / 2106 / 2158 (informational).
//! * **Requests.** Ids (8), contract data (9 → 10 + 52), place order (3 → open order 5,
//!   order status 3, execution 11), cancel (4 → status `Cancelled` + error 202), global
//!   cancel (58), open orders (5, 16 → 5 / 3 … + 53), executions (7 → 11 … + 55), positions
//!   (61 → 61 … + 62), account summary (62 → 63 … + 64), current time (49), historical
//!   data (20 → 17 + end), real-time bars (50 → 50 every push).
//! * **Orders.** Untransmitted orders wait for the order of their group with `transmit`;
//!   market orders fill at once at the symbol's price ([`FakeTws::set_price`]), limit and
//!   stop orders work until [`FakeTws::trade`] crosses them; children of a bracket start
//!   working when their parent fills; an OCA group cancels its other orders when one fills
//!   (reduce with block: a partial target shrinks the others instead). Every `PlaceOrder`
//!   received is logged ([`FakeTws::placed`]) so tests can prove nothing was sent twice.
//! * **Faults.** [`FakeTws::drop_after_next_place`] takes the next transmitted order, then
//!   closes the socket before answering (the unknown outcome); [`FakeTws::reject_next`]
//!   refuses the next order with an error (201); [`FakeTws::notice`] sends an unsolicited
//!   notice such as 1100 or 1102; [`FakeTws::disconnect`] drops the connection;
//!   [`FakeTws::refuse_connections`] makes new connections fail.
//!
//! `FAKE_TWS_TRACE=1` prints every message id received and sent.
#![allow(dead_code)]

pub mod proto;

use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The server version the fake announces (see the module doc).
pub const SERVER_VERSION: i32 = 226;

const PROTOBUF_OFFSET: i32 = 200;

// Incoming (to the client) message ids.
const IN_ORDER_STATUS: i32 = 3;
const IN_ERROR: i32 = 4;
const IN_OPEN_ORDER: i32 = 5;
const IN_NEXT_VALID_ID: i32 = 9;
const IN_CONTRACT_DATA: i32 = 10;
const IN_EXECUTION_DATA: i32 = 11;
const IN_MANAGED_ACCOUNTS: i32 = 15;
const IN_HISTORICAL_DATA: i32 = 17;
const IN_CURRENT_TIME: i32 = 49;
const IN_REAL_TIME_BARS: i32 = 50;
const IN_CONTRACT_DATA_END: i32 = 52;
const IN_OPEN_ORDER_END: i32 = 53;
const IN_EXECUTION_DATA_END: i32 = 55;
const IN_POSITION: i32 = 61;
const IN_POSITION_END: i32 = 62;
const IN_ACCOUNT_SUMMARY: i32 = 63;
const IN_ACCOUNT_SUMMARY_END: i32 = 64;
const IN_HISTORICAL_DATA_END: i32 = 108;

// Outgoing (from the client) message ids.
const OUT_PLACE_ORDER: i32 = 3;
const OUT_CANCEL_ORDER: i32 = 4;
const OUT_OPEN_ORDERS: i32 = 5;
const OUT_EXECUTIONS: i32 = 7;
const OUT_IDS: i32 = 8;
const OUT_CONTRACT_DATA: i32 = 9;
const OUT_ALL_OPEN_ORDERS: i32 = 16;
const OUT_MANAGED_ACCOUNTS: i32 = 17;
const OUT_HISTORICAL_DATA: i32 = 20;
const OUT_CURRENT_TIME: i32 = 49;
const OUT_REAL_TIME_BARS: i32 = 50;
const OUT_CANCEL_REAL_TIME_BARS: i32 = 51;
const OUT_GLOBAL_CANCEL: i32 = 58;
const OUT_POSITIONS: i32 = 61;
const OUT_ACCOUNT_SUMMARY: i32 = 62;
const OUT_START_API: i32 = 71;

/// One order at the fake.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeOrder {
    pub order_id: i32,
    pub perm_id: i64,
    pub client_id: i32,
    pub parent_id: i32,
    pub symbol: String,
    pub action: String,
    pub quantity: f64,
    pub filled: f64,
    pub avg_price: f64,
    pub order_type: String,
    pub limit_price: Option<f64>,
    pub stop_price: Option<f64>,
    pub tif: String,
    pub oca_group: String,
    pub order_ref: String,
    pub account: String,
    pub transmitted: bool,
    /// `PreSubmitted` (waiting for its parent), `Submitted`, `Filled`, `Cancelled`,
    /// `Inactive`.
    pub status: String,
}

impl FakeOrder {
    fn working(&self) -> bool {
        self.transmitted && matches!(self.status.as_str(), "PreSubmitted" | "Submitted")
    }
}

/// One execution at the fake.
#[derive(Clone, Debug)]
pub struct FakeExecution {
    pub exec_id: String,
    pub order_id: i32,
    pub perm_id: i64,
    pub client_id: i32,
    pub order_ref: String,
    pub symbol: String,
    pub side: String,
    pub shares: f64,
    pub price: f64,
    pub cum_qty: f64,
    pub time: String,
}

struct State {
    account: String,
    managed: Vec<String>,
    next_id: i32,
    next_perm: i64,
    orders: Vec<FakeOrder>,
    executions: Vec<FakeExecution>,
    /// symbol → (position, average cost)
    positions: HashMap<String, (f64, f64)>,
    prices: HashMap<String, f64>,
    cash: f64,
    placed: Vec<proto::Order>,
    drop_after_place: bool,
    mute_after_place: bool,
    reject_next: Option<(i32, String)>,
    refuse: bool,
    connections: usize,
    /// The open connections with their client ids.
    conns: Vec<(i32, mpsc::UnboundedSender<Outgoing>)>,
    /// The connection whose request is being handled: answers go to it; other messages
    /// (fills from a trade, notices) go to every connection.
    requester: Option<mpsc::UnboundedSender<Outgoing>>,
    /// Answers are dropped (the connection is about to be closed).
    muted: bool,
    client_ids: Vec<i32>,
    /// The client id of the current connection (orders placed on it carry it).
    client_id: i32,
    /// (request id, symbol) of the real-time bar subscriptions.
    bar_subs: Vec<(i32, String, mpsc::UnboundedSender<Outgoing>)>,
    historical: Vec<proto::HistoricalDataBar>,
    historical_requests: Vec<proto::HistoricalDataRequest>,
}

enum Outgoing {
    Frame(Vec<u8>),
    Close,
}

/// The fake gateway.
#[derive(Clone)]
pub struct FakeTws {
    port: u16,
    state: Arc<Mutex<State>>,
}

fn frame(msg_id: i32, body: &impl Message) -> Vec<u8> {
    let payload = body.encode_to_vec();
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&((payload.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&(msg_id + PROTOBUF_OFFSET).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

fn s(v: impl Into<String>) -> Option<String> {
    Some(v.into())
}

fn num(v: f64) -> String {
    let t = format!("{v}");
    t
}

fn exec_time() -> String {
    chrono::Utc::now().format("%Y%m%d %H:%M:%S UTC").to_string()
}

impl FakeTws {
    /// A fake logged in to paper account `DU1234567`.
    pub async fn start() -> FakeTws {
        FakeTws::with_account("DU1234567").await
    }

    /// A fake logged in to `account`.
    pub async fn with_account(account: &str) -> FakeTws {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            account: account.to_string(),
            managed: vec![account.to_string()],
            next_id: 1,
            next_perm: 900_000_001,
            orders: Vec::new(),
            executions: Vec::new(),
            positions: HashMap::new(),
            prices: HashMap::new(),
            cash: 100_000.0,
            placed: Vec::new(),
            drop_after_place: false,
            mute_after_place: false,
            reject_next: None,
            refuse: false,
            connections: 0,
            conns: Vec::new(),
            requester: None,
            muted: false,
            client_ids: Vec::new(),
            client_id: 0,
            bar_subs: Vec::new(),
            historical: Vec::new(),
            historical_requests: Vec::new(),
        }));
        let fake = FakeTws { port, state };
        let f = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let f = f.clone();
                tokio::spawn(async move {
                    let _ = f.session(sock).await;
                });
            }
        });
        fake
    }

    /// A fake on a fixed port (for a daemon restarted against the same gateway).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last price of `symbol`, at which market orders fill.
    pub fn set_price(&self, symbol: &str, price: f64) {
        self.state().prices.insert(symbol.to_string(), price);
    }

    /// A position already in the account (bought by somebody else: drift).
    pub fn set_position(&self, symbol: &str, quantity: f64, average_cost: f64) {
        self.state()
            .positions
            .insert(symbol.to_string(), (quantity, average_cost));
    }

    /// The orders at the fake, in order of arrival.
    pub fn orders(&self) -> Vec<FakeOrder> {
        self.state().orders.clone()
    }

    /// The order with reference `order_ref`.
    pub fn order_by_ref(&self, order_ref: &str) -> Option<FakeOrder> {
        self.state()
            .orders
            .iter()
            .find(|o| o.order_ref == order_ref)
            .cloned()
    }

    /// Every `PlaceOrder` message received (modifications included).
    pub fn placed(&self) -> Vec<proto::Order> {
        self.state().placed.clone()
    }

    /// The executions at the fake.
    pub fn executions(&self) -> Vec<FakeExecution> {
        self.state().executions.clone()
    }

    /// Positions: symbol → (shares, average cost).
    pub fn positions(&self) -> HashMap<String, (f64, f64)> {
        self.state().positions.clone()
    }

    /// How many API connections were made.
    pub fn connections(&self) -> usize {
        self.state().connections
    }

    /// The client ids of the `StartApi` messages, in order.
    pub fn client_ids(&self) -> Vec<i32> {
        self.state().client_ids.clone()
    }

    /// The historical-data requests received.
    pub fn historical_requests(&self) -> Vec<proto::HistoricalDataRequest> {
        self.state().historical_requests.clone()
    }

    /// The bars answered to historical-data requests: `(time, open, high, low, close,
    /// volume)`, time as `YYYYMMDD HH:MM:SS` UTC or Unix seconds.
    pub fn set_historical(&self, bars: &[(i64, f64, f64, f64, f64, f64)]) {
        self.state().historical = bars
            .iter()
            .map(|&(t, o, h, l, c, v)| proto::HistoricalDataBar {
                date: s(t.to_string()),
                open: Some(o),
                high: Some(h),
                low: Some(l),
                close: Some(c),
                volume: s(num(v)),
                wap: s(num(c)),
                bar_count: Some(1),
            })
            .collect();
    }

    /// Pushes one 5-second real-time bar of `symbol` to its subscribers.
    pub fn push_bar(&self, symbol: &str, time: i64, ohlcv: (f64, f64, f64, f64, f64)) {
        let st = self.state();
        let (o, h, l, c, v) = ohlcv;
        for (req, sym, conn) in &st.bar_subs {
            if sym == symbol {
                let _ = conn.send(Outgoing::Frame(frame(
                    IN_REAL_TIME_BARS,
                    &proto::RealTimeBarTick {
                        req_id: Some(*req),
                        time: Some(time),
                        open: Some(o),
                        high: Some(h),
                        low: Some(l),
                        close: Some(c),
                        volume: s(num(v)),
                        wap: s(num(c)),
                        count: Some(1),
                    },
                )));
            }
        }
    }

    /// The number of real-time bar subscriptions open.
    pub fn bar_subscriptions(&self) -> usize {
        self.state().bar_subs.len()
    }

    /// Takes the next transmitted order (it executes as usual), then drops the connection
    /// before any answer is sent.
    pub fn drop_after_next_place(&self) {
        self.state().drop_after_place = true;
    }

    /// Takes the next transmitted order (it executes as usual) and sends no answer to it:
    /// the client waits, as for a gateway that hangs.
    pub fn mute_next_place(&self) {
        self.state().mute_after_place = true;
    }

    /// Refuses the next new order with IB error `code` (e.g. 201) and `message`.
    pub fn reject_next(&self, code: i32, message: &str) {
        self.state().reject_next = Some((code, message.to_string()));
    }

    /// Sends an unsolicited notice (id -1) such as 1100, 1101, 1102 or 2104.
    pub fn notice(&self, code: i32, message: &str) {
        self.state().send(error_frame(-1, code, message));
    }

    /// Drops the current connection.
    pub fn disconnect(&self) {
        let mut st = self.state();
        for (_, c) in st.conns.drain(..) {
            let _ = c.send(Outgoing::Close);
        }
        st.bar_subs.clear();
    }

    /// New connections are accepted and closed at once while `refuse` holds.
    pub fn refuse_connections(&self, refuse: bool) {
        self.state().refuse = refuse;
    }

    /// A trade of `symbol` at `price`: working limit and stop orders it crosses fill.
    pub fn trade(&self, symbol: &str, price: f64) {
        let mut st = self.state();
        st.prices.insert(symbol.to_string(), price);
        let ids: Vec<i32> = st
            .orders
            .iter()
            .filter(|o| o.symbol == symbol && o.working() && o.status == "Submitted")
            .filter(|o| {
                let buy = o.action == "BUY";
                match o.order_type.as_str() {
                    "LMT" => o
                        .limit_price
                        .is_some_and(|l| if buy { price <= l } else { price >= l }),
                    "STP" => o
                        .stop_price
                        .is_some_and(|sp| if buy { price >= sp } else { price <= sp }),
                    _ => false,
                }
            })
            .map(|o| o.order_id)
            .collect();
        for id in ids {
            let fill_price = match st.order(id).map(|o| o.order_type.clone()).as_deref() {
                Some("LMT") => st.order(id).and_then(|o| o.limit_price).unwrap_or(price),
                _ => price,
            };
            st.fill(id, fill_price);
        }
    }

    async fn session(&self, mut sock: TcpStream) -> std::io::Result<()> {
        if self.state().refuse {
            return Ok(());
        }
        let mut prefix = [0u8; 4];
        sock.read_exact(&mut prefix).await?;
        if &prefix != b"API\0" {
            return Ok(());
        }
        let range = read_frame(&mut sock).await?;
        let range = String::from_utf8_lossy(&range).to_string();
        let max = range
            .trim_start_matches('v')
            .split("..")
            .nth(1)
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0);
        // The client's range must reach our version.
        if max < SERVER_VERSION {
            return Ok(());
        }
        let ack = format!(
            "{SERVER_VERSION}\0{}\0",
            chrono::Utc::now().format("%Y%m%d %H:%M:%S UTC")
        );
        let mut out = (ack.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(ack.as_bytes());
        sock.write_all(&out).await?;

        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        {
            let mut st = self.state();
            st.connections += 1;
        }
        let (mut read, mut write) = sock.into_split();
        let writer = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                match m {
                    Outgoing::Frame(f) => {
                        if write.write_all(&f).await.is_err() {
                            return;
                        }
                    }
                    Outgoing::Close => {
                        let _ = write.shutdown().await;
                        return;
                    }
                }
            }
        });
        let result = loop {
            let body = match read_frame(&mut read).await {
                Ok(b) => b,
                Err(e) => break Err(e),
            };
            if body.len() < 4 {
                continue;
            }
            let id = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            let id = if id > PROTOBUF_OFFSET {
                id - PROTOBUF_OFFSET
            } else {
                id
            };
            if writer.is_finished() {
                break Ok(());
            }
            self.handle(&tx, id, &body[4..]);
        };
        {
            let mut st = self.state();
            st.conns.retain(|(_, c)| !c.same_channel(&tx));
            st.bar_subs.retain(|(_, _, c)| !c.same_channel(&tx));
        }
        writer.abort();
        result
    }

    fn handle(&self, tx: &mpsc::UnboundedSender<Outgoing>, id: i32, body: &[u8]) {
        let mut st = self.state();
        if std::env::var("FAKE_TWS_TRACE").is_ok() {
            eprintln!("fake tws <- {id} ({} bytes)", body.len());
        }
        st.requester = Some(tx.clone());
        self.dispatch(&mut st, tx, id, body);
        st.requester = None;
    }

    fn dispatch(&self, st: &mut State, tx: &mpsc::UnboundedSender<Outgoing>, id: i32, body: &[u8]) {
        let send = |f: Vec<u8>| {
            let _ = tx.send(Outgoing::Frame(f));
        };
        match id {
            OUT_START_API => {
                let req = proto::StartApiRequest::decode(body).unwrap_or_default();
                st.client_ids.push(req.client_id.unwrap_or_default());
                st.client_id = req.client_id.unwrap_or_default();
                let id = st.client_id;
                st.conns.push((id, tx.clone()));
                send(frame(
                    IN_NEXT_VALID_ID,
                    &proto::NextValidId {
                        order_id: Some(st.next_id),
                    },
                ));
                send(frame(
                    IN_MANAGED_ACCOUNTS,
                    &proto::ManagedAccounts {
                        accounts_list: s(st.managed.join(",")),
                    },
                ));
                for (code, msg) in [
                    (2104, "Market data farm connection is OK:usfarm"),
                    (2106, "HMDS data farm connection is OK:ushmds"),
                    (2158, "Sec-def data farm connection is OK:secdefnj"),
                ] {
                    send(error_frame(-1, code, msg));
                }
            }
            OUT_IDS => send(frame(
                IN_NEXT_VALID_ID,
                &proto::NextValidId {
                    order_id: Some(st.next_id),
                },
            )),
            OUT_MANAGED_ACCOUNTS => send(frame(
                IN_MANAGED_ACCOUNTS,
                &proto::ManagedAccounts {
                    accounts_list: s(st.managed.join(",")),
                },
            )),
            OUT_CURRENT_TIME => send(frame(
                IN_CURRENT_TIME,
                &proto::CurrentTime {
                    current_time: Some(chrono::Utc::now().timestamp()),
                },
            )),
            OUT_CONTRACT_DATA => {
                let req = proto::ContractDataRequest::decode(body).unwrap_or_default();
                let req_id = req.req_id.unwrap_or_default();
                let symbol = req
                    .contract
                    .as_ref()
                    .and_then(|c| c.symbol.clone())
                    .unwrap_or_default();
                if symbol.starts_with("UNKNOWN") {
                    send(error_frame(
                        req_id,
                        200,
                        "No security definition has been found for the request",
                    ));
                    return;
                }
                send(frame(
                    IN_CONTRACT_DATA,
                    &proto::ContractData {
                        req_id: Some(req_id),
                        contract: Some(stock(&symbol, con_id(&symbol))),
                        contract_details: Some(proto::ContractDetails {
                            market_name: s("NMS"),
                            min_tick: s("0.01"),
                            order_types: s("LMT,MKT,STP"),
                            valid_exchanges: s("SMART,NASDAQ,NYSE"),
                            long_name: s(format!("{symbol} INC")),
                            time_zone_id: s("US/Eastern"),
                            trading_hours: s(session_hours()),
                            liquid_hours: s(session_hours()),
                            ..Default::default()
                        }),
                    },
                ));
                send(frame(
                    IN_CONTRACT_DATA_END,
                    &proto::ContractDataEnd {
                        req_id: Some(req_id),
                    },
                ));
            }
            OUT_PLACE_ORDER => {
                let req = proto::PlaceOrderRequest::decode(body).unwrap_or_default();
                st.place(req);
            }
            OUT_CANCEL_ORDER => {
                let req = proto::CancelOrderRequest::decode(body).unwrap_or_default();
                let oid = req.order_id.unwrap_or_default();
                match st.order(oid).map(|o| o.working()) {
                    Some(true) => st.cancel(oid, "Cancelled"),
                    Some(false) => st.send(error_frame(
                        oid,
                        10148,
                        "OrderId that needs to be cancelled cannot be cancelled",
                    )),
                    None => st.send(error_frame(
                        oid,
                        10147,
                        "OrderId that needs to be cancelled is not found",
                    )),
                }
            }
            OUT_GLOBAL_CANCEL => {
                let ids: Vec<i32> = st
                    .orders
                    .iter()
                    .filter(|o| o.working() || !o.transmitted)
                    .map(|o| o.order_id)
                    .collect();
                for oid in ids {
                    st.cancel(oid, "Cancelled");
                }
            }
            OUT_OPEN_ORDERS | OUT_ALL_OPEN_ORDERS => {
                let open: Vec<FakeOrder> =
                    st.orders.iter().filter(|o| o.working()).cloned().collect();
                for o in &open {
                    send(open_order_frame(o));
                    send(status_frame(o));
                }
                send(frame(IN_OPEN_ORDER_END, &proto::OpenOrdersEnd {}));
            }
            OUT_EXECUTIONS => {
                let req = proto::ExecutionRequest::decode(body).unwrap_or_default();
                let req_id = req.req_id.unwrap_or_default();
                for e in &st.executions {
                    send(exec_frame(req_id, e, &st.account));
                }
                send(frame(
                    IN_EXECUTION_DATA_END,
                    &proto::ExecutionDetailsEnd {
                        req_id: Some(req_id),
                    },
                ));
            }
            OUT_POSITIONS => {
                let mut syms: Vec<_> = st.positions.iter().collect();
                syms.sort_by(|a, b| a.0.cmp(b.0));
                for (sym, (qty, avg)) in syms {
                    send(frame(
                        IN_POSITION,
                        &proto::Position {
                            account: s(st.account.clone()),
                            contract: Some(stock(sym, con_id(sym))),
                            position: s(num(*qty)),
                            avg_cost: Some(*avg),
                        },
                    ));
                }
                send(frame(IN_POSITION_END, &proto::PositionEnd {}));
            }
            OUT_ACCOUNT_SUMMARY => {
                let req = proto::AccountSummaryRequest::decode(body).unwrap_or_default();
                let req_id = req.req_id.unwrap_or_default();
                let market: f64 = st
                    .positions
                    .iter()
                    .map(|(sym, (q, avg))| q * st.prices.get(sym).copied().unwrap_or(*avg))
                    .sum();
                let net = st.cash + market;
                let tags = req.tags.unwrap_or_default();
                for (tag, value) in [
                    ("NetLiquidation", net),
                    ("TotalCashValue", st.cash),
                    ("BuyingPower", net * 4.0),
                ] {
                    if !tags.split(',').any(|t| t == tag) {
                        continue;
                    }
                    send(frame(
                        IN_ACCOUNT_SUMMARY,
                        &proto::AccountSummary {
                            req_id: Some(req_id),
                            account: s(st.account.clone()),
                            tag: s(tag),
                            value: s(format!("{value:.2}")),
                            currency: s("USD"),
                        },
                    ));
                }
                send(frame(
                    IN_ACCOUNT_SUMMARY_END,
                    &proto::AccountSummaryEnd {
                        req_id: Some(req_id),
                    },
                ));
            }
            OUT_HISTORICAL_DATA => {
                let req = proto::HistoricalDataRequest::decode(body).unwrap_or_default();
                let req_id = req.req_id.unwrap_or_default();
                // Minute history only; other bar sizes answer no bars.
                let bars = if req.bar_size_setting.as_deref() == Some("1 min") {
                    st.historical.clone()
                } else {
                    Vec::new()
                };
                st.historical_requests.push(req);
                send(frame(
                    IN_HISTORICAL_DATA,
                    &proto::HistoricalData {
                        req_id: Some(req_id),
                        historical_data_bars: bars,
                    },
                ));
                send(frame(
                    IN_HISTORICAL_DATA_END,
                    &proto::HistoricalDataEnd {
                        req_id: Some(req_id),
                        start_date_str: s(stamp(st.historical.first())),
                        end_date_str: s(stamp(st.historical.last())),
                    },
                ));
            }
            OUT_REAL_TIME_BARS => {
                let req = proto::RealTimeBarsRequest::decode(body).unwrap_or_default();
                let symbol = req
                    .contract
                    .as_ref()
                    .and_then(|c| c.symbol.clone())
                    .unwrap_or_default();
                st.bar_subs
                    .push((req.req_id.unwrap_or_default(), symbol, tx.clone()));
            }
            OUT_CANCEL_REAL_TIME_BARS => {
                let req = proto::CancelRealTimeBars::decode(body).unwrap_or_default();
                let rid = req.req_id.unwrap_or_default();
                st.bar_subs.retain(|(r, _, _)| *r != rid);
            }
            _ => {}
        }
    }
}

async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 16 * 1024 * 1024 {
        return Err(std::io::Error::other("frame too long"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(body)
}

/// The liquid hours the fake reports: yesterday, today and tomorrow (New York dates)
/// open all day, so that tests run at any hour.
fn session_hours() -> String {
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::America::New_York)
        .date_naive();
    [-1i64, 0, 1]
        .iter()
        .map(|d| {
            let day = (today + chrono::Duration::days(*d)).format("%Y%m%d");
            format!("{day}:0000-{day}:2359")
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// `YYYYMMDD-HH:MM:SS` (UTC) of a bar's time (Unix seconds), now without one.
fn stamp(bar: Option<&proto::HistoricalDataBar>) -> String {
    let t = bar
        .and_then(|b| b.date.as_deref())
        .and_then(|d| d.parse::<i64>().ok())
        .and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0))
        .unwrap_or_else(chrono::Utc::now);
    t.format("%Y%m%d-%H:%M:%S").to_string()
}

fn con_id(symbol: &str) -> i32 {
    symbol
        .bytes()
        .fold(265_598i32, |a, b| a.wrapping_mul(31).wrapping_add(b as i32))
        .abs()
}

fn stock(symbol: &str, con_id: i32) -> proto::Contract {
    proto::Contract {
        con_id: Some(con_id),
        symbol: s(symbol),
        sec_type: s("STK"),
        exchange: s("SMART"),
        primary_exch: s("NASDAQ"),
        currency: s("USD"),
        local_symbol: s(symbol),
        trading_class: s("NMS"),
        ..Default::default()
    }
}

fn error_frame(id: i32, code: i32, msg: &str) -> Vec<u8> {
    frame(
        IN_ERROR,
        &proto::ErrorMessage {
            id: Some(id),
            error_time: Some(chrono::Utc::now().timestamp_millis()),
            error_code: Some(code),
            error_msg: s(msg),
            advanced_order_reject_json: s(""),
        },
    )
}

fn open_order_frame(o: &FakeOrder) -> Vec<u8> {
    frame(
        IN_OPEN_ORDER,
        &proto::OpenOrder {
            order_id: Some(o.order_id),
            contract: Some(stock(&o.symbol, con_id(&o.symbol))),
            order: Some(proto::Order {
                client_id: Some(o.client_id),
                order_id: Some(o.order_id),
                perm_id: Some(o.perm_id),
                parent_id: Some(o.parent_id),
                action: s(o.action.clone()),
                total_quantity: s(num(o.quantity)),
                order_type: s(o.order_type.clone()),
                lmt_price: o.limit_price,
                aux_price: o.stop_price,
                tif: s(o.tif.clone()),
                account: s(o.account.clone()),
                oca_group: s(o.oca_group.clone()),
                order_ref: s(o.order_ref.clone()),
                transmit: Some(true),
                ..Default::default()
            }),
            order_state: Some(proto::OrderState {
                status: s(o.status.clone()),
                ..Default::default()
            }),
        },
    )
}

fn status_frame(o: &FakeOrder) -> Vec<u8> {
    frame(
        IN_ORDER_STATUS,
        &proto::OrderStatus {
            order_id: Some(o.order_id),
            status: s(o.status.clone()),
            filled: s(num(o.filled)),
            remaining: s(num((o.quantity - o.filled).max(0.0))),
            avg_fill_price: Some(o.avg_price),
            perm_id: Some(o.perm_id),
            parent_id: Some(o.parent_id),
            last_fill_price: Some(o.avg_price),
            client_id: Some(o.client_id),
            why_held: s(""),
            mkt_cap_price: Some(0.0),
        },
    )
}

fn exec_frame(req_id: i32, e: &FakeExecution, account: &str) -> Vec<u8> {
    frame(
        IN_EXECUTION_DATA,
        &proto::ExecutionDetails {
            req_id: Some(req_id),
            contract: Some(stock(&e.symbol, con_id(&e.symbol))),
            execution: Some(proto::Execution {
                order_id: Some(e.order_id),
                exec_id: s(e.exec_id.clone()),
                time: s(e.time.clone()),
                acct_number: s(account),
                exchange: s("NASDAQ"),
                side: s(e.side.clone()),
                shares: s(num(e.shares)),
                price: Some(e.price),
                perm_id: Some(e.perm_id),
                client_id: Some(e.client_id),
                is_liquidation: Some(false),
                cum_qty: s(num(e.cum_qty)),
                avg_price: Some(e.price),
                order_ref: s(e.order_ref.clone()),
                ..Default::default()
            }),
        },
    )
}

impl State {
    fn send(&self, f: Vec<u8>) {
        if std::env::var("FAKE_TWS_TRACE").is_ok() && f.len() >= 8 {
            let id = i32::from_be_bytes([f[4], f[5], f[6], f[7]]) - PROTOBUF_OFFSET;
            eprintln!("fake tws -> {id} (connections: {})", self.conns.len());
        }
        if self.muted {
            return;
        }
        match &self.requester {
            Some(c) => {
                let _ = c.send(Outgoing::Frame(f));
            }
            None => {
                for (_, c) in &self.conns {
                    let _ = c.send(Outgoing::Frame(f.clone()));
                }
            }
        }
    }

    fn order(&self, id: i32) -> Option<&FakeOrder> {
        self.orders.iter().find(|o| o.order_id == id)
    }

    fn order_mut(&mut self, id: i32) -> Option<&mut FakeOrder> {
        self.orders.iter_mut().find(|o| o.order_id == id)
    }

    fn announce(&self, id: i32) {
        if let Some(o) = self.order(id) {
            self.send(open_order_frame(o));
            self.send(status_frame(o));
        }
    }

    fn place(&mut self, req: proto::PlaceOrderRequest) {
        let order = req.order.clone().unwrap_or_default();
        self.placed.push(order.clone());
        let oid = req.order_id.unwrap_or_default();
        let symbol = req
            .contract
            .as_ref()
            .and_then(|c| c.symbol.clone())
            .unwrap_or_default();
        let qty: f64 = order
            .total_quantity
            .as_deref()
            .and_then(|q| q.parse().ok())
            .unwrap_or(0.0);
        let drop_now =
            order.transmit.unwrap_or(false) && std::mem::take(&mut self.drop_after_place);
        let mute_now =
            order.transmit.unwrap_or(false) && std::mem::take(&mut self.mute_after_place);
        // While a fault is armed the answers go nowhere (the connection is closed below, or
        // left hanging).
        self.muted = drop_now || mute_now;
        if let Some(existing) = self.order_mut(oid) {
            // A modification of an order the gateway has.
            if existing.working() || !existing.transmitted {
                existing.quantity = qty;
                existing.limit_price = order.lmt_price.or(existing.limit_price);
                existing.stop_price = order.aux_price.or(existing.stop_price);
                self.announce(oid);
            } else {
                self.send(error_frame(oid, 103, "Duplicate order id"));
            }
        } else if oid < self.next_id {
            self.send(error_frame(oid, 103, "Duplicate order id"));
        } else if let Some((code, msg)) = self.reject_next.take() {
            self.next_id = oid + 1;
            self.send(error_frame(oid, code, &msg));
        } else {
            self.next_id = oid + 1;
            let perm = self.next_perm;
            self.next_perm += 1;
            let parent_id = order.parent_id.unwrap_or_default();
            self.orders.push(FakeOrder {
                order_id: oid,
                perm_id: perm,
                client_id: self.client_id,
                parent_id,
                symbol: symbol.clone(),
                action: order.action.clone().unwrap_or_default(),
                quantity: qty,
                filled: 0.0,
                avg_price: 0.0,
                order_type: order.order_type.clone().unwrap_or_default(),
                limit_price: order.lmt_price,
                stop_price: order.aux_price,
                tif: order.tif.clone().unwrap_or_else(|| "DAY".into()),
                oca_group: order.oca_group.clone().unwrap_or_default(),
                order_ref: order.order_ref.clone().unwrap_or_default(),
                account: order.account.clone().unwrap_or_default(),
                transmitted: false,
                status: "PreSubmitted".into(),
            });
            if order.transmit.unwrap_or(false) {
                self.transmit(oid);
            }
        }
        if mute_now {
            self.muted = false;
        }
        if drop_now {
            self.muted = false;
            if let Some(c) = self.requester.take() {
                let _ = c.send(Outgoing::Close);
                self.conns.retain(|(_, x)| !x.same_channel(&c));
                self.bar_subs.retain(|(_, _, x)| !x.same_channel(&c));
            }
        }
    }

    /// Transmits `oid` and the untransmitted orders of its group.
    fn transmit(&mut self, oid: i32) {
        let root = match self.order(oid) {
            Some(o) if o.parent_id != 0 => o.parent_id,
            _ => oid,
        };
        let group: Vec<i32> = self
            .orders
            .iter()
            .filter(|o| !o.transmitted && (o.order_id == root || o.parent_id == root))
            .map(|o| o.order_id)
            .collect();
        for id in &group {
            if let Some(o) = self.order_mut(*id) {
                o.transmitted = true;
                o.status = if o.parent_id != 0 {
                    "PreSubmitted".into()
                } else {
                    "Submitted".into()
                };
            }
        }
        for id in &group {
            self.announce(*id);
        }
        // A market parent fills at once; its children start working.
        if let Some(o) = self.order(root).cloned()
            && o.order_type == "MKT"
            && o.status == "Submitted"
        {
            let price = self.prices.get(&o.symbol).copied().unwrap_or(100.0);
            self.fill(root, price);
        }
    }

    fn fill(&mut self, oid: i32, price: f64) {
        let Some(o) = self.order(oid).cloned() else {
            return;
        };
        let shares = o.quantity - o.filled;
        if shares <= 0.0 {
            return;
        }
        let n = self.executions.len() + 1;
        let exec = FakeExecution {
            exec_id: format!("0000e0d5.{n:08x}.01.01"),
            order_id: oid,
            perm_id: o.perm_id,
            client_id: o.client_id,
            order_ref: o.order_ref.clone(),
            symbol: o.symbol.clone(),
            side: if o.action == "BUY" { "BOT" } else { "SLD" }.into(),
            shares,
            price,
            cum_qty: o.quantity,
            time: exec_time(),
        };
        let signed = if o.action == "BUY" { shares } else { -shares };
        let pos = self.positions.entry(o.symbol.clone()).or_insert((0.0, 0.0));
        let new_qty = pos.0 + signed;
        if new_qty.abs() < 1e-9 {
            self.positions.remove(&o.symbol);
        } else if pos.0 == 0.0 || pos.0.signum() == signed.signum() {
            pos.1 = (pos.0.abs() * pos.1 + shares * price) / new_qty.abs();
            pos.0 = new_qty;
        } else {
            pos.0 = new_qty;
        }
        self.cash -= signed * price;
        if let Some(m) = self.order_mut(oid) {
            m.filled = m.quantity;
            m.avg_price = price;
            m.status = "Filled".into();
        }
        self.executions.push(exec.clone());
        self.send(exec_frame(-1, &exec, &self.account.clone()));
        self.announce(oid);
        // Children of a filled parent start working.
        let children: Vec<i32> = self
            .orders
            .iter()
            .filter(|c| c.parent_id == oid && c.working())
            .map(|c| c.order_id)
            .collect();
        for c in children {
            if let Some(m) = self.order_mut(c) {
                m.status = "Submitted".into();
            }
            self.announce(c);
        }
        // One-cancels-all (reduce with block): the others shrink by what filled, and
        // go when nothing is left.
        if !o.oca_group.is_empty() {
            let others: Vec<i32> = self
                .orders
                .iter()
                .filter(|x| x.oca_group == o.oca_group && x.order_id != oid && x.working())
                .map(|x| x.order_id)
                .collect();
            for x in others {
                let left = self.order(x).map(|x| x.quantity - shares).unwrap_or(0.0);
                if left <= 1e-9 {
                    self.cancel(x, "Cancelled");
                } else if let Some(m) = self.order_mut(x) {
                    m.quantity = left;
                    self.announce(x);
                }
            }
        }
    }

    fn cancel(&mut self, oid: i32, status: &str) {
        if let Some(o) = self.order_mut(oid) {
            o.status = status.to_string();
            o.transmitted = true;
        }
        if let Some(o) = self.order(oid) {
            self.send(status_frame(o));
        }
        self.send(error_frame(oid, 202, "Order Canceled - reason:"));
    }
}
