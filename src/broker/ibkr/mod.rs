//! Interactive Brokers (paper or live account) through TWS or IB Gateway behind the
//! [`Broker`] trait, with the `ibapi` crate (TWS API over TCP, protobuf messages).
//!
//! # Session
//!
//! One API connection per broker (`host:port`, `client_id`), owned by a session task: it
//! connects, checks the account the gateway is logged in to (`paper = true` wants an
//! account beginning with `DU`, a live one must not; a mismatch, or an `account` the login
//! does not manage, fails this broker's pipelines with [`BrokerError::Unauthorized`]), opens
//! the order stream, and **resynchronizes** before anything new is submitted: the open
//! orders of the account, today's executions, and so the fills made while it was away. Only
//! then are requests served; until then they wait (at most
//! [`IbkrOptions::ready_wait`]) and answer [`BrokerError::Unavailable`] — at once while the
//! gateway refuses connections (down, or not logged in). When the socket
//! drops (IB Gateway restarts once a day) the task reconnects with a doubling backoff
//! ([`IbkrOptions::reconnect_min`] to [`IbkrOptions::reconnect_max`]) and resynchronizes
//! again. IB's notice 1100 (the gateway lost its connection to IB) suspends submissions
//! until 1101 / 1102 (restored), after which the session resynchronizes; the data-farm
//! notices 2104–2158 are informational and only logged. Outgoing messages are paced to
//! [`MESSAGES_PER_SECOND`] by `ibapi`'s rate limiter.
//!
//! # Orders
//!
//! Stocks only (`SMART` routing, `USD`, the primary exchange from the contract details).
//! Our client order id travels in `order_ref`; the IB order id (from the next-valid-id
//! handshake) is mapped to it and reported as the order's `broker_order_id`. An entry with
//! a stop and take-profits is an IB bracket: the parent (`transmit = false`), one limit
//! child per take-profit, then the stop child, which transmits the whole group; the
//! children share an OCA group (type 3, reduce with block) so that a target fill shrinks the
//! stop and a stop fill cancels the targets. The legs carry the ids `<entry>-t1`, `-t2`,
//! `-sl` ([`crate::broker::bracket_leg_id`]). Exits are plain orders of the opposite side,
//! stop and limit exits good-till-cancelled; IB has no reduce-only flag for stocks, so an
//! exit's quantity is cut to the position held (and refused when there is none). Moving a stop places the same IB order id
//! again with the new stop price and quantity.
//!
//! # Idempotency
//!
//! An id the directory knows is never sent again: its state is answered. A submission
//! whose answer does not come in time (or whose connection drops) is
//! [`BrokerError::Unavailable`]; after the reconnect the resync finds the order by its
//! `order_ref` (open, or filled in today's executions), so [`Broker::order`] answers it and
//! nothing is placed twice.
//!
//! # Events
//!
//! Open-order, order-status and execution messages, whether streamed or found by a resync,
//! go through one [`book::Book`] that reports each change once: `Accepted` the first time,
//! a `Fill` per execution id, `Replaced` when the stop price or quantity changed, then
//! `Cancelled` or `Rejected` (an `Inactive` order, or an order-bound IB error). Orders
//! whose `order_ref` no pipeline gave are drift: answered by [`Broker::open_orders`], no
//! events.

pub mod book;

use crate::broker::{
    Account, Broker, BrokerError, BrokerEvent, BulkClose, Capabilities, EventStream, OrderPurpose,
    OrderState, OrderStatus, OrderType, Position, Side, Submit, bracket_leg_id,
};
use crate::config::settings::IbkrBroker as IbkrSettings;
use async_trait::async_trait;
use book::{Book, Meta, status_of};
use futures_util::StreamExt;
use ibapi::Client;
use ibapi::accounts::types::AccountGroup;
use ibapi::accounts::{AccountSummaryResult, PositionUpdate};
use ibapi::contracts::Contract;
use ibapi::orders::{
    Action, ExecutionFilter, Executions, OcaType, Order, OrderData, OrderUpdate, Orders,
    TimeInForce,
};
use ibapi::subscriptions::SubscriptionItem;
use rust_decimal::Decimal;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Outgoing messages per second at most (IB's limit is 50; a burst above it disconnects).
pub const MESSAGES_PER_SECOND: u32 = 45;

/// Tuning of an [`IbkrBroker`] (the defaults suit a real gateway; tests shorten them).
#[derive(Clone, Debug)]
pub struct IbkrOptions {
    /// How long a request waits for the session to be connected and resynchronized.
    pub ready_wait: Duration,
    /// How long a submission waits for the gateway's first answer (open order, status or
    /// rejection) before its outcome counts as unknown.
    pub answer_timeout: Duration,
    /// How long a snapshot request (positions, account summary, open orders, executions)
    /// may take.
    pub request_timeout: Duration,
    /// First delay before reconnecting.
    pub reconnect_min: Duration,
    /// Longest delay between reconnections.
    pub reconnect_max: Duration,
}

impl Default for IbkrOptions {
    fn default() -> Self {
        IbkrOptions {
            ready_wait: Duration::from_secs(20),
            answer_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
        }
    }
}

/// The account the gateway is logged in to, for `ztraded brokers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountDetails {
    /// Account id (`DU…` paper, `U…` live).
    pub account: String,
    /// Every account the login manages.
    pub managed: Vec<String>,
    /// The gateway's API server version.
    pub server_version: i32,
    /// Balances: net liquidation, total cash, buying power (USD).
    pub balances: Account,
}

/// Whether `account` is a paper account (IB paper account ids begin with `DU`).
pub fn is_paper_account(account: &str) -> bool {
    account.starts_with("DU")
}

/// The connection state the session task publishes.
#[derive(Clone, Default)]
struct Session {
    client: Option<Arc<Client>>,
    /// Connected, account checked, resynchronized, and IB reachable (no 1100 pending).
    ready: bool,
    /// The account that trades.
    account: String,
    managed: Vec<String>,
    /// A failure that no reconnect fixes (the wrong account).
    fatal: Option<BrokerError>,
    /// The last connection error, for the `Unavailable` answers.
    last_error: Option<String>,
    /// The last attempt to connect failed (the gateway is down or not logged in):
    /// requests answer at once instead of waiting for it.
    connect_failed: bool,
}

struct Inner {
    name: String,
    address: String,
    client_id: i32,
    paper: bool,
    account: Option<String>,
    options: IbkrOptions,
    book: Mutex<Book>,
    tx: mpsc::UnboundedSender<BrokerEvent>,
    session: watch::Sender<Session>,
    /// Wakes submissions waiting for an answer.
    answered: tokio::sync::Notify,
    /// One submission at a time: the ids of a bracket are consecutive.
    submitting: tokio::sync::Mutex<()>,
    contracts: Mutex<HashMap<String, Contract>>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn dec(v: f64) -> Decimal {
    Decimal::from_f64(v)
        .map(|d| d.round_dp(8).normalize())
        .unwrap_or_default()
}

fn f64_of(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

fn side_of(action: Action) -> Side {
    match action {
        Action::Buy => Side::Buy,
        _ => Side::Sell,
    }
}

fn type_of(order: &Order) -> OrderType {
    match order.order_type.as_str() {
        "LMT" => OrderType::Limit {
            price: dec(order.limit_price.unwrap_or_default()),
        },
        "STP" | "STP LMT" | "TRAIL" => OrderType::Stop {
            price: dec(order.aux_price.unwrap_or_default()),
        },
        _ => OrderType::Market,
    }
}

fn purpose_of_type(t: OrderType) -> OrderPurpose {
    match t {
        OrderType::Stop { .. } => OrderPurpose::StopLoss,
        OrderType::Limit { .. } => OrderPurpose::Target1,
        OrderType::Market => OrderPurpose::Entry,
    }
}

/// `DU1234` → whether it may trade for a broker configured with `paper`.
fn check_account(
    name: &str,
    paper: bool,
    wanted: Option<&str>,
    managed: &[String],
) -> Result<String, BrokerError> {
    let account = match wanted {
        Some(w) if managed.iter().any(|m| m == w) => w.to_string(),
        Some(w) => {
            return Err(BrokerError::Unauthorized(format!(
                "broker {name}: account {w} is not managed by this gateway login (it manages {})",
                managed.join(", ")
            )));
        }
        None => match managed.first() {
            Some(a) => a.clone(),
            None => {
                return Err(BrokerError::Unauthorized(format!(
                    "broker {name}: the gateway reports no account"
                )));
            }
        },
    };
    if paper != is_paper_account(&account) {
        return Err(BrokerError::Unauthorized(format!(
            "broker {name}: configured paper = {paper}, but the gateway is logged in to {} account {account} (paper account ids begin with DU)",
            if is_paper_account(&account) {
                "paper"
            } else {
                "live"
            }
        )));
    }
    Ok(account)
}

impl Inner {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, events: Vec<BrokerEvent>) {
        for e in events {
            let _ = self.tx.send(e);
        }
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> BrokerError {
        BrokerError::Unavailable(format!("broker {}: {what}", self.name))
    }

    /// The connected, resynchronized client, waiting for it up to `ready_wait`.
    async fn client(&self) -> Result<(Arc<Client>, String), BrokerError> {
        let mut rx = self.session.subscribe();
        let wait = tokio::time::timeout(self.options.ready_wait, async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if let Some(f) = &s.fatal {
                        return Err(f.clone());
                    }
                    if s.ready
                        && let Some(c) = &s.client
                    {
                        return Ok((c.clone(), s.account.clone()));
                    }
                    if s.connect_failed {
                        return Err(self.unavailable(format!(
                            "not connected to {} (client id {}): {}",
                            self.address,
                            self.client_id,
                            s.last_error.clone().unwrap_or_default()
                        )));
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(self.unavailable("session ended"));
                }
            }
        })
        .await;
        match wait {
            Ok(r) => r,
            Err(_) => {
                let last = self.session.borrow().last_error.clone();
                Err(self.unavailable(format!(
                    "not connected to {} (client id {}){}",
                    self.address,
                    self.client_id,
                    last.map(|e| format!(": {e}")).unwrap_or_default()
                )))
            }
        }
    }

    fn set_ready(&self, ready: bool) {
        self.session.send_modify(|s| s.ready = ready);
    }

    /// An open-order message: registers the order (ours by `order_ref`, else drift) and
    /// reports what changed.
    fn on_open_order(&self, data: &OrderData, events: &mut Vec<BrokerEvent>) {
        let mut book = self.book();
        let order_type = type_of(&data.order);
        let quantity = dec(data.order.total_quantity);
        book.adopt_leg(&data.order.order_ref, Some((order_type, quantity)));
        let cid = book.resolve(data.order_id, data.order.perm_id, &data.order.order_ref);
        if !book.meta.contains_key(&cid) {
            book.meta.insert(
                cid.clone(),
                Meta {
                    pipeline: String::new(),
                    purpose: purpose_of_type(order_type),
                    oco_group: None,
                    symbol: data.contract.symbol.to_string(),
                    side: side_of(data.order.action),
                    quantity,
                    order_type,
                    parent_ib: data.order.parent_id,
                    ours: false,
                },
            );
            book.ib_to_cid.insert(data.order_id, cid.clone());
            book.cid_to_ib.insert(cid.clone(), data.order_id);
        }
        let status = status_of(data.order_state.status.as_str());
        let status = status.or(Some(OrderStatus::Accepted));
        book.observe_status(
            &cid,
            status,
            Some((order_type, quantity)),
            None,
            now(),
            events,
        );
    }

    fn on_status(&self, s: &ibapi::orders::OrderStatus, events: &mut Vec<BrokerEvent>) {
        let mut book = self.book();
        let Some(cid) = book.ib_to_cid.get(&s.order_id).cloned() else {
            return;
        };
        book.observe_status(
            &cid,
            status_of(s.status.as_str()),
            None,
            None,
            now(),
            events,
        );
    }

    fn on_execution(&self, e: &ibapi::orders::ExecutionData, events: &mut Vec<BrokerEvent>) {
        let x = &e.execution;
        let mut book = self.book();
        book.adopt_leg(&x.order_reference, None);
        let cid = book.resolve(x.order_id, x.perm_id, &x.order_reference);
        let ts = parse_exec_time(&x.time).unwrap_or_else(now);
        book.observe_execution(
            &cid,
            &x.execution_id,
            dec(x.shares),
            dec(x.cumulative_quantity),
            dec(x.price),
            ts,
            now(),
            events,
        );
    }

    /// An IB notice bound to an order: a rejection (201, 110, …) or the cancel
    /// confirmation (202); warnings (2100–2169, 399) are logged.
    fn on_order_notice(&self, n: &ibapi::Notice, events: &mut Vec<BrokerEvent>) {
        let Some(ib) = n.request_id else {
            return;
        };
        if n.is_warning() || n.is_informational() || n.code == 399 {
            tracing::info!(broker = %self.name, order = ib, code = n.code, message = %n.message, "ibkr order notice");
            return;
        }
        let mut book = self.book();
        let Some(cid) = book.ib_to_cid.get(&ib).cloned() else {
            return;
        };
        let reason = format!("ibkr {}: {}", n.code, n.message);
        let status = if n.is_cancellation() {
            OrderStatus::Cancelled
        } else {
            OrderStatus::Rejected
        };
        tracing::warn!(broker = %self.name, client_order_id = %cid, %reason, "ibkr order error");
        book.observe_status(&cid, Some(status), None, Some(reason), now(), events);
    }

    fn on_update(&self, u: OrderUpdate) {
        let mut events = Vec::new();
        match &u {
            OrderUpdate::OpenOrder(d) => self.on_open_order(d, &mut events),
            OrderUpdate::OrderStatus(s) => self.on_status(s, &mut events),
            OrderUpdate::ExecutionData(e) => self.on_execution(e, &mut events),
            OrderUpdate::OrderBound(_) | OrderUpdate::CommissionReport(_) => {}
        }
        self.emit(events);
        self.answered.notify_waiters();
    }

    /// Open orders and today's executions: what changed while the stream was away.
    async fn resync(&self, client: &Client, reconnected: bool) -> Result<(), ibapi::Error> {
        let timeout = self.options.request_timeout;
        let mut open = client.all_open_orders().await?;
        let read = tokio::time::timeout(timeout, async {
            let mut events = Vec::new();
            while let Some(item) = open.next().await {
                match item {
                    Ok(SubscriptionItem::Data(Orders::OrderData(d))) => {
                        self.on_open_order(&d, &mut events)
                    }
                    Ok(SubscriptionItem::Data(Orders::OrderStatus(s))) => {
                        self.on_status(&s, &mut events)
                    }
                    Ok(SubscriptionItem::Notice(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(events)
        })
        .await;
        match read {
            Ok(Ok(events)) => self.emit(events),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ibapi::Error::Simple("open orders: no end".into())),
        }
        let mut execs = client.executions(ExecutionFilter::default()).await?;
        let read = tokio::time::timeout(timeout, async {
            let mut events = Vec::new();
            while let Some(item) = execs.next().await {
                match item {
                    Ok(SubscriptionItem::Data(Executions::ExecutionData(e))) => {
                        self.on_execution(&e, &mut events)
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(events)
        })
        .await;
        match read {
            Ok(Ok(events)) => self.emit(events),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ibapi::Error::Simple("executions: no end".into())),
        }
        if reconnected {
            // Orders sent on the lost connection whose answer never came and that the
            // gateway does not have were never placed: forget the pending mark so that
            // a lookup answers `None` and the caller may send them again.
            self.book().pending.clear();
        }
        self.answered.notify_waiters();
        Ok(())
    }

    async fn connect_once(&self) -> Result<Client, ibapi::Error> {
        Client::builder()
            .address(self.address.clone())
            .client_id(self.client_id)
            .max_reconnect_attempts(0)
            .rate_limiter(ibapi::RateLimiter::per_second(MESSAGES_PER_SECOND))
            .one_shot_timeout(self.options.request_timeout)
            .connect()
            .await
    }

    /// One connection's life: check, subscribe, resync, serve, until it drops.
    async fn serve(self: &Arc<Self>, client: Client) -> Result<(), String> {
        let client = Arc::new(client);
        let managed: Vec<String> = client.handshake_managed_accounts().to_vec();
        let account = match check_account(&self.name, self.paper, self.account.as_deref(), &managed)
        {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(broker = %self.name, error = %e, "ibkr account check failed; this broker's pipelines fail");
                self.session.send_modify(|s| {
                    s.fatal = Some(e.clone());
                    s.managed = managed.clone();
                });
                client.disconnect().await;
                return Ok(());
            }
        };
        let mut updates = client
            .order_update_stream()
            .await
            .map_err(|e| format!("order stream: {e}"))?;
        let mut notices = client
            .notice_stream()
            .map_err(|e| format!("notice stream: {e}"))?;
        self.session.send_modify(|s| {
            s.client = Some(client.clone());
            s.account = account.clone();
            s.managed = managed.clone();
            s.ready = false;
        });
        self.resync(&client, true)
            .await
            .map_err(|e| format!("resync: {e}"))?;
        tracing::info!(broker = %self.name, %account, server_version = client.server_version(), "ibkr session ready (open orders and executions resynchronized)");
        self.set_ready(true);
        let result = loop {
            tokio::select! {
                item = updates.next() => match item {
                    Some(Ok(SubscriptionItem::Data(u))) => self.on_update(u),
                    Some(Ok(SubscriptionItem::Notice(n))) => {
                        let mut events = Vec::new();
                        self.on_order_notice(&n, &mut events);
                        self.emit(events);
                        self.answered.notify_waiters();
                    }
                    Some(Err(e)) => break Err(format!("order stream: {e}")),
                    None => break Err("order stream ended".to_string()),
                },
                n = notices.next() => match n {
                    Some(n) => match n.code {
                        1100 => {
                            tracing::warn!(broker = %self.name, message = %n.message, "ibkr 1100: the gateway lost its connection to IB; submissions wait");
                            self.set_ready(false);
                        }
                        1101 | 1102 => {
                            tracing::info!(broker = %self.name, code = n.code, message = %n.message, "ibkr connectivity restored; resynchronizing");
                            if let Err(e) = self.resync(&client, true).await {
                                break Err(format!("resync: {e}"));
                            }
                            self.set_ready(true);
                        }
                        2104..=2158 => {
                            tracing::debug!(broker = %self.name, code = n.code, message = %n.message, "ibkr data farm notice");
                        }
                        _ => tracing::info!(broker = %self.name, code = n.code, message = %n.message, "ibkr notice"),
                    },
                    None => break Err("notice stream ended".to_string()),
                },
            }
        };
        self.session.send_modify(|s| {
            s.ready = false;
            s.client = None;
        });
        client.disconnect().await;
        result
    }

    /// The session task: connect, serve, reconnect with backoff; forever (until the
    /// account check fails).
    async fn run(self: Arc<Self>) {
        let mut delay = self.options.reconnect_min;
        loop {
            match self.connect_once().await {
                Ok(client) => {
                    delay = self.options.reconnect_min;
                    self.session.send_modify(|s| s.connect_failed = false);
                    match self.serve(client).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::warn!(broker = %self.name, error = %e, "ibkr connection lost; reconnecting");
                            self.session.send_modify(|s| s.last_error = Some(e));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(broker = %self.name, address = %self.address, error = %e, delay_ms = delay.as_millis() as u64, "ibkr connect failed; retrying");
                    self.session.send_modify(|s| {
                        s.last_error = Some(e.to_string());
                        s.connect_failed = true;
                    });
                    delay = (delay * 2).min(self.options.reconnect_max);
                }
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// The stock contract of `symbol`: SMART, USD, with the con id and primary exchange of
    /// the contract details (looked up once per symbol).
    async fn contract(&self, client: &Client, symbol: &str) -> Result<Contract, BrokerError> {
        if let Some(c) = self
            .contracts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(symbol)
        {
            return Ok(c.clone());
        }
        let ib_symbol = symbol.replace('.', " ");
        let wanted = Contract::stock(ib_symbol.as_str()).build();
        let details = client
            .contract_details(&wanted)
            .await
            .map_err(|e| self.unavailable(format!("contract details of {symbol}: {e}")))?;
        let Some(found) = details.into_iter().next() else {
            return Err(BrokerError::Rejected {
                client_order_id: String::new(),
                reason: format!("ibkr knows no US stock {symbol}"),
            });
        };
        let mut contract = wanted;
        contract.contract_id = found.contract.contract_id;
        contract.primary_exchange = found.contract.primary_exchange.clone();
        self.contracts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(symbol.to_string(), contract.clone());
        Ok(contract)
    }

    /// The current state of `cid` after waiting for the gateway's first answer.
    async fn await_answer(&self, cid: &str) -> Option<OrderState> {
        let deadline = tokio::time::Instant::now() + self.options.answer_timeout;
        loop {
            let notified = self.answered.notified();
            {
                let book = self.book();
                if !book.pending.contains(cid)
                    && let Some(s) = book.state.get(cid)
                {
                    return Some(s.clone());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

fn parse_exec_time(t: &str) -> Option<i64> {
    // "20240105 14:30:00 US/Eastern" or "20240105-14:30:00"
    let t = t.trim();
    let (stamp, zone) = match t.split_once(' ') {
        Some((d, rest)) => match rest.split_once(' ') {
            Some((time, zone)) => (format!("{d} {time}"), Some(zone)),
            None => (format!("{d} {rest}"), None),
        },
        None => (t.replace('-', " "), None),
    };
    let naive = chrono::NaiveDateTime::parse_from_str(&stamp, "%Y%m%d %H:%M:%S").ok()?;
    match zone.and_then(|z| z.parse::<chrono_tz::Tz>().ok()) {
        Some(tz) => naive
            .and_local_timezone(tz)
            .earliest()
            .map(|d| d.timestamp()),
        None => Some(naive.and_utc().timestamp()),
    }
}

/// An IBKR account behind the [`Broker`] trait.
pub struct IbkrBroker {
    inner: Arc<Inner>,
    rx: Mutex<Option<EventStream>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for IbkrBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IbkrBroker")
            .field("name", &self.inner.name)
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

impl Drop for IbkrBroker {
    fn drop(&mut self) {
        if let Ok(mut t) = self.task.lock()
            && let Some(t) = t.take()
        {
            t.abort();
        }
    }
}

/// Builds the IBKR broker of setting `[brokers.<name>]`, knowing the store's orders of
/// this broker (`known`). The connection is made by a background task.
///
/// # Errors
/// None today; the signature matches the other brokers'.
pub fn connect_ibkr(
    name: &str,
    settings: &IbkrSettings,
    known: Vec<OrderState>,
) -> Result<Arc<dyn Broker>, BrokerError> {
    Ok(Arc::new(IbkrBroker::new(
        name,
        settings,
        known,
        IbkrOptions::default(),
    )))
}

/// Whether the settings ask for a paper account (`paper`, else from the port: 4002 and
/// 7497 are paper).
pub fn wants_paper(settings: &IbkrSettings) -> bool {
    settings
        .paper
        .unwrap_or(matches!(settings.port, 4002 | 7497))
}

fn price(p: Decimal) -> f64 {
    f64_of(p.round_dp(if p.abs() >= Decimal::ONE { 2 } else { 4 }))
}

/// The IB order of one of ours: `order_ref` = `cid`.
fn ib_order(cid: &str, meta: &Meta, account: &str, ib: i32) -> Order {
    let mut o = Order {
        order_id: ib,
        action: match meta.side {
            Side::Buy => Action::Buy,
            Side::Sell => Action::Sell,
        },
        total_quantity: f64_of(meta.quantity),
        order_ref: cid.to_string(),
        account: account.to_string(),
        transmit: true,
        parent_id: meta.parent_ib,
        ..Order::default()
    };
    match meta.order_type {
        OrderType::Market => o.order_type = "MKT".into(),
        OrderType::Limit { price: p } => {
            o.order_type = "LMT".into();
            o.limit_price = Some(price(p));
        }
        OrderType::Stop { price: p } => {
            o.order_type = "STP".into();
            o.aux_price = Some(price(p));
        }
    }
    if meta.purpose != OrderPurpose::Entry && !matches!(meta.order_type, OrderType::Market) {
        o.tif = TimeInForce::GoodTillCanceled;
    }
    if let Some(g) = &meta.oco_group {
        o.oca_group = g.clone();
        o.oca_type = OcaType::ReduceWithBlock;
    }
    o
}

impl IbkrBroker {
    /// A broker of account `settings`, knowing the store's orders (`known`: client id ↔
    /// IB order id, pipeline, purpose, OCO group). Connects in the background once a tokio
    /// runtime runs (at once when called inside one).
    pub fn new(
        name: &str,
        settings: &IbkrSettings,
        known: Vec<OrderState>,
        options: IbkrOptions,
    ) -> IbkrBroker {
        let (tx, rx) = mpsc::unbounded_channel();
        let (session, _) = watch::channel(Session::default());
        let inner = Arc::new(Inner {
            name: name.to_string(),
            address: format!("{}:{}", settings.host, settings.port),
            client_id: settings.client_id,
            paper: wants_paper(settings),
            account: settings.account.clone(),
            options,
            book: Mutex::new(Book::from_known(known)),
            tx,
            session,
            answered: tokio::sync::Notify::new(),
            submitting: tokio::sync::Mutex::new(()),
            contracts: Mutex::new(HashMap::new()),
        });
        let broker = IbkrBroker {
            inner,
            rx: Mutex::new(Some(rx)),
            task: Mutex::new(None),
        };
        broker.start();
        broker
    }

    fn start(&self) {
        let Ok(mut task) = self.task.lock() else {
            return;
        };
        if task.is_some() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            *task = Some(handle.spawn(self.inner.clone().run()));
        }
    }

    /// Waits until the session is connected and resynchronized.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] after [`IbkrOptions::ready_wait`];
    /// [`BrokerError::Unauthorized`] when the account check failed.
    pub async fn wait_ready(&self) -> Result<(), BrokerError> {
        self.start();
        self.inner.client().await.map(|_| ())
    }

    /// The account, the login's accounts, the server version and balances.
    ///
    /// # Errors
    /// As [`Broker::account`].
    pub async fn account_details(&self) -> Result<AccountDetails, BrokerError> {
        let balances = self.account().await?;
        let (client, account) = self.inner.client().await?;
        let managed = self.inner.session.borrow().managed.clone();
        Ok(AccountDetails {
            account,
            managed,
            server_version: client.server_version(),
            balances,
        })
    }

    /// `reqGlobalCancel`: cancels every open order of the account (ours and others').
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`].
    pub async fn global_cancel(&self) -> Result<(), BrokerError> {
        let (client, _) = self.inner.client().await?;
        client
            .global_cancel()
            .await
            .map_err(|e| self.inner.unavailable(format!("global cancel: {e}")))
    }

    fn reject_recorded(&self, order: &Submit, reason: String) -> OrderState {
        let cid = order.client_order_id().to_string();
        let (qty, order_type, purpose, oco_group) = match order {
            Submit::Entry(e) => {
                let e = e.get();
                (e.quantity, e.order_type, OrderPurpose::Entry, None)
            }
            Submit::Exit(x) => (x.quantity, x.order_type, x.purpose, x.oco_group.clone()),
        };
        let state = OrderState {
            client_order_id: cid.clone(),
            broker_order_id: String::new(),
            pipeline: order.pipeline().to_string(),
            symbol: order.symbol().to_string(),
            side: order.side(),
            quantity: qty,
            filled_quantity: Decimal::ZERO,
            average_price: Decimal::ZERO,
            order_type,
            purpose,
            oco_group,
            status: OrderStatus::Rejected,
            reason: Some(reason.clone()),
            created_at: now(),
        };
        self.inner.book().rejected.insert(cid, state.clone());
        let _ = self.inner.tx.send(BrokerEvent::Rejected {
            order: state.clone(),
            reason,
        });
        state
    }

    /// The orders of one submission: `(client id, meta)`, parent first, the stop last.
    fn plan(order: &Submit) -> Result<Vec<(String, Meta)>, BrokerError> {
        let cid = order.client_order_id().to_string();
        let reject = |reason: String| BrokerError::Rejected {
            client_order_id: cid.clone(),
            reason,
        };
        if cid.is_empty() || cid.len() > 40 {
            return Err(reject(
                "ibkr takes order references of 1 to 40 characters".into(),
            ));
        }
        if order.symbol().contains('/') {
            return Err(reject(format!(
                "{} is not a US stock: this ibkr broker trades stocks only",
                order.symbol()
            )));
        }
        let (qty, order_type) = match order {
            Submit::Entry(e) => (e.get().quantity, e.get().order_type),
            Submit::Exit(x) => (x.quantity, x.order_type),
        };
        if qty <= Decimal::ZERO {
            return Err(reject(format!("quantity {qty} is not positive")));
        }
        let base = Meta {
            pipeline: order.pipeline().to_string(),
            purpose: OrderPurpose::Entry,
            oco_group: None,
            symbol: order.symbol().to_string(),
            side: order.side(),
            quantity: qty,
            order_type,
            parent_ib: 0,
            ours: true,
        };
        match order {
            Submit::Exit(x) => Ok(vec![(
                cid.clone(),
                Meta {
                    purpose: x.purpose,
                    oco_group: x.oco_group.clone(),
                    ..base
                },
            )]),
            Submit::Entry(e) => {
                let e = e.get();
                let mut out = vec![(cid.clone(), base.clone())];
                let legs = (e.stop_loss.is_some() || !e.take_profits.is_empty())
                    .then(|| Some(cid.clone()))
                    .flatten();
                for tp in &e.take_profits {
                    out.push((
                        bracket_leg_id(&cid, tp.purpose),
                        Meta {
                            purpose: tp.purpose,
                            oco_group: legs.clone(),
                            side: e.side.opposite(),
                            quantity: tp.quantity.min(qty),
                            order_type: OrderType::Limit { price: tp.price },
                            ..base.clone()
                        },
                    ));
                }
                if let Some(stop) = e.stop_loss {
                    out.push((
                        bracket_leg_id(&cid, OrderPurpose::StopLoss),
                        Meta {
                            purpose: OrderPurpose::StopLoss,
                            oco_group: legs.clone(),
                            side: e.side.opposite(),
                            quantity: qty,
                            order_type: OrderType::Stop { price: stop },
                            ..base.clone()
                        },
                    ));
                }
                Ok(out)
            }
        }
    }

    async fn lookup(&self, cid: &str) -> Result<Option<OrderState>, BrokerError> {
        if let Some(r) = self.inner.book().rejected.get(cid) {
            return Ok(Some(r.clone()));
        }
        // Served only by a resynchronized session: what it knows is what the gateway has.
        self.inner.client().await?;
        let book = self.inner.book();
        if book.pending.contains(cid) {
            return Err(self
                .inner
                .unavailable(format!("order {cid}: the gateway has not answered yet")));
        }
        Ok(book.state.get(cid).cloned())
    }
}

#[async_trait]
impl Broker for IbkrBroker {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            brackets: true,
            bulk_close: true,
            crypto_brackets: false,
            streams: true,
        }
    }

    async fn account(&self) -> Result<Account, BrokerError> {
        self.start();
        let (client, account) = self.inner.client().await?;
        let mut sub = client
            .account_summary(
                &AccountGroup("All".into()),
                &["NetLiquidation", "TotalCashValue", "BuyingPower"],
            )
            .await
            .map_err(|e| self.inner.unavailable(format!("account summary: {e}")))?;
        let mut out = Account {
            cash: Decimal::ZERO,
            equity: Decimal::ZERO,
            buying_power: Decimal::ZERO,
            commissions: Decimal::ZERO,
        };
        let read = tokio::time::timeout(self.inner.options.request_timeout, async {
            while let Some(item) = sub.next().await {
                match item {
                    Ok(SubscriptionItem::Data(AccountSummaryResult::Summary(s))) => {
                        if s.account != account {
                            continue;
                        }
                        let v = s.value.parse::<Decimal>().unwrap_or_default();
                        match s.tag.as_str() {
                            "NetLiquidation" => out.equity = v,
                            "TotalCashValue" => out.cash = v,
                            "BuyingPower" => out.buying_power = v,
                            _ => {}
                        }
                    }
                    Ok(SubscriptionItem::Data(AccountSummaryResult::End)) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await;
        sub.cancel().await;
        match read {
            Ok(Ok(())) => Ok(out),
            Ok(Err(e)) => Err(self.inner.unavailable(format!("account summary: {e}"))),
            Err(_) => Err(self.inner.unavailable("account summary: no answer")),
        }
    }

    async fn positions(&self) -> Result<Vec<Position>, BrokerError> {
        self.start();
        let (client, account) = self.inner.client().await?;
        let mut sub = client
            .positions()
            .await
            .map_err(|e| self.inner.unavailable(format!("positions: {e}")))?;
        let mut found = Vec::new();
        let read = tokio::time::timeout(self.inner.options.request_timeout, async {
            while let Some(item) = sub.next().await {
                match item {
                    Ok(SubscriptionItem::Data(PositionUpdate::Position(p))) => {
                        if p.account == account && p.position != 0.0 {
                            found.push(p);
                        }
                    }
                    Ok(SubscriptionItem::Data(PositionUpdate::PositionEnd)) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await;
        match read {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.inner.unavailable(format!("positions: {e}"))),
            Err(_) => return Err(self.inner.unavailable("positions: no answer")),
        }
        let book = self.inner.book();
        Ok(found
            .into_iter()
            .map(|p| {
                let symbol = p.contract.symbol.to_string().replace(' ', ".");
                let average = dec(p.average_cost);
                Position {
                    pipeline: book.owner_of(&symbol),
                    quantity: dec(p.position),
                    average_price: average,
                    // reqPositions carries no market price; the average cost stands in
                    // (the account's net liquidation carries the marked value).
                    market_price: average,
                    symbol,
                }
            })
            .collect())
    }

    async fn open_orders(&self) -> Result<Vec<OrderState>, BrokerError> {
        self.start();
        let (client, _) = self.inner.client().await?;
        self.inner
            .resync(&client, false)
            .await
            .map_err(|e| self.inner.unavailable(format!("open orders: {e}")))?;
        Ok(self.inner.book().open_orders())
    }

    async fn order(&self, client_order_id: &str) -> Result<Option<OrderState>, BrokerError> {
        self.start();
        self.lookup(client_order_id).await
    }

    async fn submit(&self, order: Submit) -> Result<OrderState, BrokerError> {
        self.start();
        let cid = order.client_order_id().to_string();
        if let Some(r) = self.inner.book().rejected.get(&cid).cloned() {
            return Ok(r);
        }
        let plan = match Self::plan(&order) {
            Ok(p) => p,
            Err(BrokerError::Rejected { reason, .. }) => {
                return Ok(self.reject_recorded(&order, reason));
            }
            Err(e) => return Err(e),
        };
        let (client, account) = self.inner.client().await?;
        let _one = self.inner.submitting.lock().await;
        {
            let book = self.inner.book();
            if book.pending.contains(&cid) {
                return Err(self.inner.unavailable(format!(
                    "order {cid}: sent, the gateway has not answered yet"
                )));
            }
            if let Some(s) = book.state.get(&cid) {
                return Ok(s.clone());
            }
            if book.cid_to_ib.contains_key(&cid) {
                // Sent in an earlier life, not found by the resync: the gateway never
                // took it (an open or filled order would be there).
                tracing::info!(broker = %self.name(), client_order_id = %cid, "order known by id but not at the gateway; sending it");
            }
        }
        // Exits are reduce-only: IB has no such flag for stocks, so the quantity is cut to
        // the position held (nothing is sent when there is none).
        let (order, plan) = match order {
            Submit::Exit(mut x) => {
                let held: Decimal = self
                    .positions()
                    .await?
                    .iter()
                    .filter(|p| p.symbol == x.symbol)
                    .map(|p| p.quantity)
                    .sum();
                let available = match x.position_side {
                    crate::broker::PositionSide::Long => held.max(Decimal::ZERO),
                    crate::broker::PositionSide::Short => (-held).max(Decimal::ZERO),
                };
                if available <= Decimal::ZERO {
                    let reason = format!(
                        "no {} position in {} to reduce",
                        x.position_side.as_str(),
                        x.symbol
                    );
                    return Ok(self.reject_recorded(&Submit::Exit(x), reason));
                }
                if x.quantity > available {
                    tracing::info!(broker = %self.name(), client_order_id = %cid, asked = %x.quantity, held = %available, "exit cut to the position held (reduce-only)");
                    x.quantity = available;
                }
                let order = Submit::Exit(x);
                let plan = match Self::plan(&order) {
                    Ok(p) => p,
                    Err(BrokerError::Rejected { reason, .. }) => {
                        return Ok(self.reject_recorded(&order, reason));
                    }
                    Err(e) => return Err(e),
                };
                (order, plan)
            }
            entry => (entry, plan),
        };
        let contract = match self.inner.contract(&client, order.symbol()).await {
            Ok(c) => c,
            Err(BrokerError::Rejected { reason, .. }) => {
                return Ok(self.reject_recorded(&order, reason));
            }
            Err(e) => return Err(e),
        };
        let parent_ib = client.next_order_id();
        let mut orders = Vec::new();
        {
            let mut book = self.inner.book();
            let n = plan.len();
            for (k, (leg_cid, mut meta)) in plan.into_iter().enumerate() {
                let ib = if k == 0 {
                    parent_ib
                } else {
                    client.next_order_id()
                };
                if k > 0 {
                    meta.parent_ib = parent_ib;
                }
                let mut o = ib_order(&leg_cid, &meta, &account, ib);
                o.transmit = k + 1 == n;
                book.meta.insert(leg_cid.clone(), meta);
                book.ib_to_cid.insert(ib, leg_cid.clone());
                book.cid_to_ib.insert(leg_cid.clone(), ib);
                book.state.remove(&leg_cid);
                book.pending.insert(leg_cid.clone());
                orders.push((ib, o));
            }
        }
        for (ib, o) in &orders {
            if let Err(e) = client.submit_order(*ib, &contract, o).await {
                tracing::warn!(broker = %self.name(), client_order_id = %cid, error = %e, "order submission outcome unknown");
                return Err(self
                    .inner
                    .unavailable(format!("order {cid}: sending failed, outcome unknown: {e}")));
            }
        }
        match self.inner.await_answer(&cid).await {
            Some(state) => Ok(state),
            None => Err(self.inner.unavailable(format!(
                "order {cid}: no answer from the gateway within {:?}; outcome unknown",
                self.inner.options.answer_timeout
            ))),
        }
    }

    async fn cancel(&self, client_order_id: &str) -> Result<(), BrokerError> {
        self.start();
        if self.inner.book().rejected.contains_key(client_order_id) {
            return Ok(());
        }
        let (client, _) = self.inner.client().await?;
        let (ib, open) = {
            let book = self.inner.book();
            (
                book.cid_to_ib.get(client_order_id).copied(),
                book.state.get(client_order_id).map(|s| s.status.is_open()),
            )
        };
        let Some(ib) = ib else {
            return Err(BrokerError::UnknownOrder(client_order_id.to_string()));
        };
        match open {
            Some(false) => return Ok(()),
            None if !self.inner.book().pending.contains(client_order_id) => {
                return Err(BrokerError::UnknownOrder(client_order_id.to_string()));
            }
            _ => {}
        }
        let sub = client.cancel_order(ib, "").await.map_err(|e| {
            self.inner
                .unavailable(format!("cancel {client_order_id}: {e}"))
        })?;
        drop(sub);
        // The order stream reports the outcome (Cancelled, or the fill that beat it).
        Ok(())
    }

    async fn replace_stop(
        &self,
        client_order_id: &str,
        price: Decimal,
        quantity: Decimal,
    ) -> Result<(), BrokerError> {
        self.start();
        let (client, account) = self.inner.client().await?;
        let (ib, meta) = {
            let book = self.inner.book();
            (
                book.cid_to_ib.get(client_order_id).copied(),
                book.meta.get(client_order_id).cloned(),
            )
        };
        let (Some(ib), Some(mut meta)) = (ib, meta) else {
            return Err(BrokerError::UnknownOrder(client_order_id.to_string()));
        };
        if !matches!(meta.order_type, OrderType::Stop { .. }) {
            return Err(BrokerError::Rejected {
                client_order_id: client_order_id.to_string(),
                reason: "not a stop order".into(),
            });
        }
        if quantity <= Decimal::ZERO {
            return Err(BrokerError::Rejected {
                client_order_id: client_order_id.to_string(),
                reason: format!("quantity {quantity} is not positive"),
            });
        }
        meta.order_type = OrderType::Stop { price };
        meta.quantity = quantity;
        let contract = self.inner.contract(&client, &meta.symbol).await?;
        let order = ib_order(client_order_id, &meta, &account, ib);
        client
            .submit_order(ib, &contract, &order)
            .await
            .map_err(|e| {
                self.inner
                    .unavailable(format!("modify {client_order_id}: outcome unknown: {e}"))
            })
    }

    async fn close_all(&self) -> Result<Vec<BulkClose>, BrokerError> {
        self.start();
        self.global_cancel().await?;
        let positions = self.positions().await?;
        let mut out = Vec::new();
        let stamp = now();
        for p in positions {
            let Some(side) = p.side() else { continue };
            let cid = format!("zt-close-{}-{stamp}", p.symbol.to_lowercase());
            let exit = crate::broker::ExitOrder {
                client_order_id: cid.chars().take(40).collect(),
                pipeline: p.pipeline.clone(),
                symbol: p.symbol.clone(),
                position_side: side,
                quantity: p.quantity.abs(),
                order_type: OrderType::Market,
                purpose: OrderPurpose::Emergency,
                oco_group: None,
            };
            match self.submit(Submit::Exit(exit)).await {
                Ok(order) => out.push(BulkClose {
                    symbol: p.symbol.clone(),
                    status: if order.status == OrderStatus::Rejected {
                        422
                    } else {
                        200
                    },
                    error: order
                        .reason
                        .clone()
                        .filter(|_| order.status == OrderStatus::Rejected),
                    order: Some(order),
                }),
                Err(e) => out.push(BulkClose {
                    symbol: p.symbol.clone(),
                    status: 503,
                    order: None,
                    error: Some(e.to_string()),
                }),
            }
        }
        Ok(out)
    }

    fn take_events(&self) -> Option<EventStream> {
        let rx = self.rx.lock().ok().and_then(|mut rx| rx.take())?;
        self.start();
        Some(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_accounts_begin_with_du() {
        let managed = vec!["DU123".to_string(), "U9".to_string()];
        assert_eq!(check_account("b", true, None, &managed).unwrap(), "DU123");
        assert!(matches!(
            check_account("b", true, Some("U9"), &managed),
            Err(BrokerError::Unauthorized(_))
        ));
        assert_eq!(
            check_account("b", false, Some("U9"), &managed).unwrap(),
            "U9"
        );
        assert!(check_account("b", false, Some("X1"), &managed).is_err());
        assert!(check_account("b", true, None, &[]).is_err());
    }

    #[test]
    fn execution_times_read_in_their_zone() {
        assert_eq!(
            parse_exec_time("20240105 09:30:00 US/Eastern"),
            Some(1_704_465_000)
        );
        assert_eq!(parse_exec_time("20240105-14:30:00"), Some(1_704_465_000));
        assert_eq!(parse_exec_time("garbage"), None);
    }
}
