//! Alpaca (paper or live account) behind the [`Broker`] trait: a thin typed client of
//! Alpaca's Trading API over reqwest ([`client`]) and the `trade_updates` websocket
//! ([`stream`]), with the JSON types in [`wire`].
//!
//! # Ownership directory
//!
//! Alpaca knows no pipelines. The broker keeps a directory of the orders it knows — the
//! store's order rows given to [`AlpacaBroker::new`] (`known`) and every order submitted
//! since — mapping client order ids to Alpaca's order ids, pipelines, purposes and OCO
//! groups. Orders at Alpaca that are not in it are reported with pipeline `""` and a purpose
//! taken from their type (stop: `stop_loss`, limit: `target_1`, market: `entry`): that is
//! drift, which the caller reports and never touches; no events are emitted for them. A
//! position belongs to the pipeline of the latest filled entry of its symbol in the
//! directory (else of the latest filled order of any purpose), `""` when none.
//!
//! # Orders
//!
//! An entry with a stop and one take-profit is a `bracket` order; with a stop only (or a
//! take-profit only), an `oto` order; with neither, a `simple` one. Alpaca places one
//! bracket per entry, so an entry with two take-profits is refused
//! ([`BrokerError::Rejected`]). The legs Alpaca creates (with client ids of its own) are
//! registered as `<entry>-sl` / `<entry>-t1` ([`crate::broker::bracket_leg_id`]), with the
//! entry's pipeline and the entry's id as OCO group, and reported as `Accepted` when they
//! leave Alpaca's `held` state (when the entry fills). Note that Alpaca's take-profit leg
//! covers the whole entry, not the partial quantity of the first target.
//!
//! Equity orders are `day` orders except stop and limit exits and bracket / OTO entries,
//! which are `gtc` (Alpaca takes only `day` or `gtc` for brackets); crypto (a symbol with a
//! `/`) is always `gtc`. Alpaca has no reduce-only flag: exits are plain orders of the
//! opposite side for the quantity given.
//!
//! Replacing a stop (`PATCH /v2/orders/{id}`) makes Alpaca create a new order with a new id
//! (its `replaces` is the old id, and the old one goes `replaced`); the directory maps the
//! new id to the same client order id, so the order keeps its id for the caller.
//!
//! # Idempotency
//!
//! A `422 client_order_id must be unique` on submit means Alpaca already has the order: it
//! is looked up and its state answered. After a timeout, a connection error, a 5xx or a 429
//! on submit the order is always looked up by client order id first and sent again only when
//! Alpaca does not have it. A rejection (403, 422) is kept locally, so submitting the same id
//! again answers the same rejection.
//!
//! # Events
//!
//! Every event comes out of one place that compares what Alpaca says about an order (a
//! stream message, a REST answer) with the last state reported for it: `Accepted` the first
//! time, a `Fill` for every increase of `filled_qty` (its quantity the increase, its id
//! `<alpaca order id>:<cumulative filled_qty>`, so that a fill found over REST after a
//! reconnect has the same id the stream would have given), then `Cancelled`, `Expired`,
//! `Rejected`, or `Replaced` for a new Alpaca id. So nothing is reported twice, whichever
//! way it arrives first.

pub mod client;
pub mod stream;
pub mod wire;

pub use client::{AlpacaError, ClientOptions, Pacer, RATE_LIMIT_PER_MINUTE};

use crate::broker::{
    Account, Broker, BrokerError, BrokerEvent, BulkClose, Capabilities, EventStream, Fill,
    OrderPurpose, OrderState, OrderStatus, OrderType, Position, Submit, bracket_leg_id,
};
use crate::config::settings::AlpacaBroker as AlpacaSettings;
use crate::market::alpaca::is_crypto;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use client::{RestClient, Retry};
use reqwest::Method;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// The API keys of an account.
#[derive(Clone)]
pub struct Credentials {
    /// `APCA-API-KEY-ID`.
    pub key_id: String,
    /// `APCA-API-SECRET-KEY`.
    pub secret_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Tuning of an [`AlpacaBroker`] (the defaults suit the real service; tests shorten them).
#[derive(Clone, Debug)]
pub struct AlpacaOptions {
    /// REST: timeout, pacing, retries.
    pub client: ClientOptions,
    /// First delay before reconnecting the stream.
    pub reconnect_min: Duration,
    /// Longest delay between reconnections.
    pub reconnect_max: Duration,
}

impl Default for AlpacaOptions {
    fn default() -> Self {
        AlpacaOptions {
            client: ClientOptions::default(),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

/// `GET /v2/account` in full, for `ztraded brokers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountDetails {
    /// `ACTIVE`, …
    pub status: String,
    /// Account number.
    pub account_number: String,
    /// `USD`.
    pub currency: String,
    /// The account may not trade.
    pub trading_blocked: bool,
    /// The account is blocked.
    pub account_blocked: bool,
    /// Flagged as a pattern day trader.
    pub pattern_day_trader: bool,
    /// Balances.
    pub balances: Account,
}

/// What the directory knows of one of our orders.
#[derive(Clone, Debug)]
struct Meta {
    /// A crypto pair's order (stops are stop-limits).
    crypto: bool,
    pipeline: String,
    purpose: OrderPurpose,
    oco_group: Option<String>,
}

/// The last state reported on the event stream for one order.
#[derive(Clone, Debug)]
struct Reported {
    broker_id: String,
    status: OrderStatus,
    filled: Decimal,
    average: Decimal,
    created_at: i64,
}

/// The ownership directory and the reported states.
#[derive(Default, Debug)]
struct Book {
    meta: HashMap<String, Meta>,
    broker_to_client: HashMap<String, String>,
    client_to_broker: HashMap<String, String>,
    reported: HashMap<String, Reported>,
    /// symbol (without `/`) → (pipeline of the latest filled entry, of the latest filled
    /// order).
    owners: HashMap<String, (Option<String>, Option<String>)>,
    /// symbol without `/` → the symbol as orders spell it (`BTCUSD` → `BTC/USD`: Alpaca's
    /// positions drop the slash of crypto pairs).
    spelled: HashMap<String, String>,
    rejected: HashMap<String, OrderState>,
    /// Alpaca ids of orders that were replaced: a late read of one says nothing new.
    superseded: std::collections::HashSet<String>,
    last_event: Option<DateTime<Utc>>,
}

fn status_of(w: &wire::Order) -> OrderStatus {
    let filled = w.filled();
    let qty = w.qty.unwrap_or_default();
    match w.status {
        wire::Status::Filled => OrderStatus::Filled,
        wire::Status::Canceled | wire::Status::Replaced => OrderStatus::Cancelled,
        wire::Status::Expired => OrderStatus::Expired,
        wire::Status::Rejected => OrderStatus::Rejected,
        _ if qty > Decimal::ZERO && filled >= qty => OrderStatus::Filled,
        _ if filled > Decimal::ZERO => OrderStatus::PartiallyFilled,
        _ => OrderStatus::Accepted,
    }
}

fn type_of(w: &wire::Order) -> OrderType {
    match w.kind() {
        wire::Type::Limit => OrderType::Limit {
            price: w.limit_price.unwrap_or_default(),
        },
        wire::Type::Stop | wire::Type::StopLimit | wire::Type::TrailingStop => OrderType::Stop {
            price: w.stop_price.unwrap_or_default(),
        },
        wire::Type::Market | wire::Type::Other => OrderType::Market,
    }
}

fn purpose_of_type(t: wire::Type) -> OrderPurpose {
    match t {
        wire::Type::Stop | wire::Type::StopLimit | wire::Type::TrailingStop => {
            OrderPurpose::StopLoss
        }
        wire::Type::Limit => OrderPurpose::Target1,
        wire::Type::Market | wire::Type::Other => OrderPurpose::Entry,
    }
}

fn side_of(s: &str) -> crate::broker::Side {
    if s.eq_ignore_ascii_case("sell") {
        crate::broker::Side::Sell
    } else {
        crate::broker::Side::Buy
    }
}

fn is_open_wire(w: &wire::Order) -> bool {
    status_of(w).is_open()
}

impl Book {
    fn from_known(known: Vec<OrderState>) -> Book {
        let mut book = Book::default();
        let mut known = known;
        known.sort_by_key(|o| o.created_at);
        for o in known {
            book.learn(o);
        }
        book
    }

    /// Adds order `o` (as the store knows it) to the directory.
    fn learn(&mut self, o: OrderState) {
        self.meta.insert(
            o.client_order_id.clone(),
            Meta {
                crypto: is_crypto(&o.symbol),
                pipeline: o.pipeline.clone(),
                purpose: o.purpose,
                oco_group: o.oco_group.clone(),
            },
        );
        if !o.broker_order_id.is_empty() {
            self.broker_to_client
                .insert(o.broker_order_id.clone(), o.client_order_id.clone());
            self.client_to_broker
                .insert(o.client_order_id.clone(), o.broker_order_id.clone());
        } else if o.status == OrderStatus::Rejected {
            self.rejected.insert(o.client_order_id.clone(), o.clone());
        }
        if o.filled_quantity > Decimal::ZERO {
            self.note_owner(&o.symbol, &o.pipeline, o.purpose);
        }
        self.reported.insert(
            o.client_order_id.clone(),
            Reported {
                broker_id: o.broker_order_id.clone(),
                status: o.status,
                filled: o.filled_quantity,
                average: o.average_price,
                created_at: o.created_at,
            },
        );
    }

    fn note_owner(&mut self, symbol: &str, pipeline: &str, purpose: OrderPurpose) {
        if pipeline.is_empty() {
            return;
        }
        let key = symbol.replace('/', "");
        if key != symbol {
            self.spelled.insert(key.clone(), symbol.to_string());
        }
        let e = self.owners.entry(key).or_default();
        if purpose == OrderPurpose::Entry {
            e.0 = Some(pipeline.to_string());
        }
        e.1 = Some(pipeline.to_string());
    }

    fn owner_of(&self, symbol: &str) -> String {
        self.owners
            .get(&symbol.replace('/', ""))
            .and_then(|(entry, any)| entry.clone().or_else(|| any.clone()))
            .unwrap_or_default()
    }

    fn client_id_of(&self, w: &wire::Order) -> String {
        self.broker_to_client
            .get(&w.id)
            .or_else(|| {
                w.replaces
                    .as_ref()
                    .and_then(|old| self.broker_to_client.get(old))
            })
            .cloned()
            .unwrap_or_else(|| w.client_order_id.clone())
    }

    fn state_of(&self, w: &wire::Order) -> OrderState {
        let cid = self.client_id_of(w);
        let meta = self.meta.get(&cid);
        OrderState {
            broker_order_id: w.id.clone(),
            pipeline: meta.map(|m| m.pipeline.clone()).unwrap_or_default(),
            symbol: w.symbol.clone(),
            side: side_of(&w.side),
            quantity: w.qty.unwrap_or_default(),
            filled_quantity: w.filled(),
            average_price: w.filled_avg_price.unwrap_or_default(),
            order_type: type_of(w),
            purpose: meta.map_or_else(|| purpose_of_type(w.kind()), |m| m.purpose),
            oco_group: meta.and_then(|m| m.oco_group.clone()),
            status: status_of(w),
            reason: match w.status {
                wire::Status::Canceled => Some("cancelled at alpaca".to_string()),
                wire::Status::Replaced => Some("replaced at alpaca".to_string()),
                wire::Status::Expired => Some("expired at alpaca".to_string()),
                wire::Status::Rejected => Some("rejected by alpaca".to_string()),
                _ => None,
            },
            created_at: w
                .created_at
                .or(w.submitted_at)
                .map(|t| t.timestamp())
                .or_else(|| self.reported.get(&cid).map(|r| r.created_at))
                .unwrap_or_else(|| Utc::now().timestamp()),
            client_order_id: cid,
        }
    }

    /// Registers the legs of one of our entries as `<entry>-sl` / `<entry>-t1`.
    fn register_legs(&mut self, parent: &wire::Order) {
        if parent.legs.is_empty() {
            return;
        }
        let cid = self.client_id_of(parent);
        let Some(meta) = self.meta.get(&cid).cloned() else {
            return;
        };
        if meta.purpose != OrderPurpose::Entry {
            return;
        }
        for leg in &parent.legs {
            if self.broker_to_client.contains_key(&leg.id) {
                continue;
            }
            let purpose = match purpose_of_type(leg.kind()) {
                OrderPurpose::StopLoss => OrderPurpose::StopLoss,
                _ => OrderPurpose::Target1,
            };
            let leg_id = bracket_leg_id(&cid, purpose);
            self.broker_to_client.insert(leg.id.clone(), leg_id.clone());
            self.client_to_broker.insert(leg_id.clone(), leg.id.clone());
            self.meta.insert(
                leg_id,
                Meta {
                    crypto: is_crypto(&leg.symbol),
                    pipeline: meta.pipeline.clone(),
                    purpose,
                    oco_group: Some(cid.clone()),
                },
            );
        }
    }

    /// The events that what Alpaca says about `w` (and its legs) adds to what was
    /// reported. `hint`: the quantity, price and time of a stream fill.
    fn observe(
        &mut self,
        w: &wire::Order,
        hint: Option<(Decimal, Decimal, DateTime<Utc>)>,
    ) -> Vec<BrokerEvent> {
        let mut events = Vec::new();
        self.register_legs(w);
        self.observe_one(w, hint, &mut events);
        for leg in &w.legs {
            self.observe_one(leg, None, &mut events);
        }
        events
    }

    fn observe_one(
        &mut self,
        w: &wire::Order,
        hint: Option<(Decimal, Decimal, DateTime<Utc>)>,
        events: &mut Vec<BrokerEvent>,
    ) {
        let cid = self.client_id_of(w);
        if !self.meta.contains_key(&cid) {
            return;
        }
        if let Some(old) = &w.replaces {
            self.superseded.insert(old.clone());
        }
        if w.status == wire::Status::Replaced || self.superseded.contains(&w.id) {
            // Its successor carries our id from now on.
            self.superseded.insert(w.id.clone());
            self.broker_to_client.insert(w.id.clone(), cid.clone());
            if let Some(next) = &w.replaced_by {
                self.broker_to_client.insert(next.clone(), cid.clone());
                self.client_to_broker.insert(cid, next.clone());
            }
            return;
        }
        if w.status == wire::Status::Held {
            // A bracket leg waiting for its entry: not placed yet.
            return;
        }
        self.broker_to_client.insert(w.id.clone(), cid.clone());
        self.client_to_broker.insert(cid.clone(), w.id.clone());
        let state = self.state_of(w);
        let mut prev = match self.reported.get(&cid) {
            Some(p) => p.clone(),
            None => {
                if state.status == OrderStatus::Rejected {
                    events.push(BrokerEvent::Rejected {
                        reason: state.reason.clone().unwrap_or_default(),
                        order: state.clone(),
                    });
                    self.reported.insert(cid, reported_of(&state));
                    return;
                }
                let mut accepted = state.clone();
                accepted.status = OrderStatus::Accepted;
                accepted.filled_quantity = Decimal::ZERO;
                accepted.average_price = Decimal::ZERO;
                accepted.reason = None;
                events.push(BrokerEvent::Accepted {
                    order: accepted.clone(),
                });
                reported_of(&accepted)
            }
        };
        let replacement = !prev.broker_id.is_empty() && prev.broker_id != w.id;
        if !replacement
            && (state.filled_quantity < prev.filled
                || (!prev.status.is_open() && state.status.is_open()))
        {
            // An older read than what was reported (a REST answer overtaken by the
            // stream): nothing new.
            self.reported.insert(cid, prev);
            return;
        }
        if replacement {
            // A replacement: a new Alpaca order under our id.
            events.push(BrokerEvent::Replaced {
                order: state.clone(),
            });
            prev.filled = Decimal::ZERO;
            prev.average = Decimal::ZERO;
        }
        prev.broker_id = w.id.clone();
        if state.filled_quantity > prev.filled {
            let delta = state.filled_quantity - prev.filled;
            let price = match hint {
                Some((q, p, _)) if q == delta => p,
                _ => ((state.average_price * state.filled_quantity - prev.average * prev.filled)
                    / delta)
                    .round_dp(6)
                    .normalize(),
            };
            let ts = hint
                .map(|h| h.2)
                .or(w.filled_at)
                .or(w.updated_at)
                .unwrap_or_else(Utc::now);
            events.push(BrokerEvent::Fill {
                fill: Fill {
                    client_order_id: cid.clone(),
                    broker_order_id: w.id.clone(),
                    fill_id: format!("{}:{}", w.id, state.filled_quantity.normalize()),
                    pipeline: state.pipeline.clone(),
                    symbol: state.symbol.clone(),
                    side: state.side,
                    quantity: delta,
                    price,
                    commission: Decimal::ZERO,
                    purpose: state.purpose,
                    ts: ts.timestamp(),
                },
                order: state.clone(),
            });
            self.note_owner(&state.symbol, &state.pipeline, state.purpose);
            prev.filled = state.filled_quantity;
            prev.average = state.average_price;
        }
        if state.status != prev.status {
            match state.status {
                OrderStatus::Cancelled => events.push(BrokerEvent::Cancelled {
                    reason: state.reason.clone().unwrap_or_default(),
                    order: state.clone(),
                }),
                OrderStatus::Expired => events.push(BrokerEvent::Expired {
                    order: state.clone(),
                }),
                OrderStatus::Rejected => events.push(BrokerEvent::Rejected {
                    reason: state.reason.clone().unwrap_or_default(),
                    order: state.clone(),
                }),
                _ => {}
            }
            prev.status = state.status;
        }
        self.reported.insert(cid, prev);
    }

    /// The oldest time an order we reported open was created: the REST catch-up starts
    /// there, since Alpaca's `after` filters on submission time.
    fn catch_up_from(&self, started: DateTime<Utc>) -> DateTime<Utc> {
        let oldest_open = self
            .reported
            .values()
            // Orders of intents not confirmed before a crash have no Alpaca id yet: their
            // submission time counts too, so a fill while the daemon was down is found.
            .filter(|r| r.status.is_open())
            .map(|r| r.created_at)
            .min()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0));
        let mut from = self.last_event.unwrap_or(started);
        if let Some(t) = oldest_open {
            from = from.min(t);
        }
        from - chrono::Duration::seconds(2)
    }
}

fn reported_of(s: &OrderState) -> Reported {
    Reported {
        broker_id: s.broker_order_id.clone(),
        status: s.status,
        filled: s.filled_quantity,
        average: s.average_price,
        created_at: s.created_at,
    }
}

/// Everything the broker and its stream task share.
pub(crate) struct Inner {
    name: String,
    rest: RestClient,
    stream_url: String,
    credentials: Credentials,
    key_envs: (String, String),
    options: AlpacaOptions,
    book: Mutex<Book>,
    tx: mpsc::UnboundedSender<BrokerEvent>,
    started: DateTime<Utc>,
}

impl Inner {
    fn book(&self) -> MutexGuard<'_, Book> {
        // A panic while holding the lock leaves maps that are still consistent enough to
        // read; keep going rather than failing every later call.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Compares `w` with what was reported and emits the difference, under the lock so
    /// that events keep their order.
    fn observe(
        &self,
        w: &wire::Order,
        hint: Option<(Decimal, Decimal, DateTime<Utc>)>,
    ) -> OrderState {
        let mut book = self.book();
        for e in book.observe(w, hint) {
            let _ = self.tx.send(e);
        }
        book.state_of(w)
    }

    fn unavailable(&self, e: &AlpacaError) -> BrokerError {
        if e.is_auth() {
            BrokerError::Unauthorized(self.auth_message(e))
        } else {
            BrokerError::Unavailable(format!("broker {}: {e}", self.name))
        }
    }

    fn auth_message(&self, e: &AlpacaError) -> String {
        match e {
            AlpacaError::Auth {
                status,
                code,
                message,
            } => format!(
                "authentication failed: check {}/{} (broker {}: alpaca {status} {code}: {message})",
                self.key_envs.0, self.key_envs.1, self.name
            ),
            other => other.to_string(),
        }
    }

    /// `GET /v2/orders/{id}`; `None` on 404.
    async fn order_by_id(&self, id: &str) -> Result<Option<wire::Order>, AlpacaError> {
        match self
            .rest
            .get::<wire::Order>(&format!("/v2/orders/{id}"), &[("nested", "true".into())])
            .await
        {
            Ok(o) => Ok(Some(o)),
            Err(AlpacaError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Our order by client order id, following replacements to the order that works now.
    async fn fetch_order(&self, cid: &str) -> Result<Option<wire::Order>, AlpacaError> {
        let known = self.book().client_to_broker.get(cid).cloned();
        let mut found = match known {
            Some(id) => self.order_by_id(&id).await?,
            None => None,
        };
        if found.is_none() {
            found = match self
                .rest
                .get::<wire::Order>(
                    "/v2/orders:by_client_order_id",
                    &[("client_order_id", cid.to_string())],
                )
                .await
            {
                Ok(o) => Some(o),
                Err(AlpacaError::Api { status: 404, .. }) => None,
                Err(e) => return Err(e),
            };
        }
        for _ in 0..8 {
            let Some(o) = &found else { break };
            let (wire::Status::Replaced, Some(next)) = (o.status, o.replaced_by.clone()) else {
                break;
            };
            {
                let mut book = self.book();
                book.broker_to_client.insert(o.id.clone(), cid.to_string());
                book.broker_to_client.insert(next.clone(), cid.to_string());
            }
            match self.order_by_id(&next).await? {
                Some(n) => found = Some(n),
                None => break,
            }
        }
        Ok(found)
    }

    /// Fetches the orders changed since the last event seen and emits what the stream
    /// missed.
    pub(crate) async fn catch_up(&self) -> Result<usize, AlpacaError> {
        let mut after = self.book().catch_up_from(self.started);
        let mut seen = 0;
        for _ in 0..100 {
            let page: Vec<wire::Order> = self
                .rest
                .get(
                    "/v2/orders",
                    &[
                        ("status", "all".into()),
                        (
                            "after",
                            after.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                        ),
                        ("direction", "asc".into()),
                        ("nested", "true".into()),
                        ("limit", "500".into()),
                    ],
                )
                .await?;
            seen += page.len();
            for w in &page {
                self.observe(w, None);
            }
            // `after` is exclusive: step back a microsecond so that an order submitted in
            // the same microsecond as the page's last is not skipped (re-reading the last
            // one is harmless).
            let next = page
                .last()
                .and_then(|w| w.submitted_at.or(w.created_at))
                .map(|t| t - chrono::Duration::microseconds(1))
                .filter(|t| *t > after);
            match next {
                Some(t) if page.len() >= 500 => after = t,
                _ => break,
            }
        }
        Ok(seen)
    }
}

/// An Alpaca account behind the [`Broker`] trait.
pub struct AlpacaBroker {
    inner: Arc<Inner>,
    rx: Mutex<Option<EventStream>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for AlpacaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlpacaBroker")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl Drop for AlpacaBroker {
    fn drop(&mut self) {
        if let Ok(mut t) = self.task.lock()
            && let Some(t) = t.take()
        {
            t.abort();
        }
    }
}

/// Reads the keys from the environment variables the settings name.
///
/// # Errors
/// [`BrokerError::Unsupported`] naming the variable that is not set.
pub fn credentials_from_env(
    name: &str,
    settings: &AlpacaSettings,
) -> Result<Credentials, BrokerError> {
    let read = |var: &str| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                BrokerError::Unsupported(format!(
                    "broker {name}: environment variable {var} is not set"
                ))
            })
    };
    Ok(Credentials {
        key_id: read(&settings.key_id_env)?,
        secret_key: read(&settings.secret_key_env)?,
    })
}

/// Builds the Alpaca broker of setting `[brokers.<name>]` with the keys from the
/// environment, knowing the store's orders of this broker (`known`).
///
/// # Errors
/// [`BrokerError::Unsupported`] when a key variable is not set.
pub fn connect_alpaca(
    name: &str,
    settings: &AlpacaSettings,
    known: Vec<OrderState>,
) -> Result<Arc<dyn Broker>, BrokerError> {
    Ok(Arc::new(AlpacaBroker::connect(name, settings, known)?))
}

/// How far beyond its stop price the limit of a crypto stop-limit exit lies: 1 % (a sell
/// stop at 100 is a stop-limit 100 / 99). A gap through the band leaves the order working
/// unfilled; the reconciliation then shows the position with its stop still open.
pub const CRYPTO_STOP_LIMIT_BAND: Decimal = Decimal::from_parts(1, 0, 0, false, 2);

fn price_str(p: Decimal) -> String {
    let dp = if p.abs() >= Decimal::ONE { 2 } else { 4 };
    p.round_dp(dp).normalize().to_string()
}

fn qty_str(q: Decimal) -> String {
    q.normalize().to_string()
}

/// The `POST /v2/orders` body of a submission.
fn new_order(order: &Submit) -> Result<wire::NewOrder, BrokerError> {
    let cid = order.client_order_id().to_string();
    if cid.is_empty() || cid.len() > 128 {
        return Err(BrokerError::Rejected {
            client_order_id: cid,
            reason: "alpaca takes client order ids of 1 to 128 characters".into(),
        });
    }
    let (qty, order_type) = match order {
        Submit::Entry(e) => (e.get().quantity, e.get().order_type),
        Submit::Exit(x) => (x.quantity, x.order_type),
    };
    if qty <= Decimal::ZERO {
        return Err(BrokerError::Rejected {
            client_order_id: cid,
            reason: format!("quantity {qty} is not positive"),
        });
    }
    let (type_name, limit_price, stop_price) = match order_type {
        OrderType::Market => ("market", None, None),
        OrderType::Limit { price } => ("limit", Some(price_str(price)), None),
        OrderType::Stop { price } => ("stop", None, Some(price_str(price))),
    };
    let crypto = is_crypto(order.symbol());
    // Alpaca's crypto orders are market, limit or stop-limit: a protective stop becomes a
    // stop-limit whose limit lies CRYPTO_STOP_LIMIT_BAND beyond the stop.
    let (type_name, limit_price) = match (crypto, order_type) {
        (true, OrderType::Stop { price }) => {
            let band = Decimal::ONE
                + match order.side() {
                    crate::broker::Side::Sell => -CRYPTO_STOP_LIMIT_BAND,
                    crate::broker::Side::Buy => CRYPTO_STOP_LIMIT_BAND,
                };
            ("stop_limit", Some(price_str(price * band)))
        }
        _ => (type_name, limit_price),
    };
    let mut body = wire::NewOrder {
        symbol: order.symbol().to_string(),
        qty: qty_str(qty),
        side: order.side().as_str().to_string(),
        order_type: type_name.to_string(),
        time_in_force: "day".to_string(),
        limit_price,
        stop_price,
        client_order_id: cid.clone(),
        order_class: "simple".to_string(),
        take_profit: None,
        stop_loss: None,
    };
    match order {
        // Alpaca has no bracket or OTO orders for crypto: the entry goes alone and the engine
        // places the legs when it fills (`Capabilities::crypto_brackets` is false).
        Submit::Entry(_) if crypto => {}
        Submit::Entry(e) => {
            let e = e.get();
            if e.take_profits.len() > 1 {
                return Err(BrokerError::Rejected {
                    client_order_id: cid,
                    reason: "alpaca takes one take-profit per entry (bracket order): use one target or leave the second to an exit rule".into(),
                });
            }
            let tp = e.take_profits.first().map(|t| wire::TakeProfitLeg {
                limit_price: price_str(t.price),
            });
            let sl = e.stop_loss.map(|s| wire::StopLossLeg {
                stop_price: price_str(s),
            });
            body.order_class = match (&sl, &tp) {
                (Some(_), Some(_)) => "bracket",
                (None, None) => "simple",
                _ => "oto",
            }
            .to_string();
            if body.order_class != "simple" {
                body.time_in_force = "gtc".into();
            }
            body.take_profit = tp;
            body.stop_loss = sl;
        }
        Submit::Exit(x) => {
            if !matches!(x.order_type, OrderType::Market) {
                body.time_in_force = "gtc".into();
            }
        }
    }
    if crypto {
        body.time_in_force = "gtc".into();
    }
    Ok(body)
}

impl AlpacaBroker {
    /// The broker of setting `settings` with keys from the environment variables it names.
    ///
    /// # Errors
    /// [`BrokerError::Unsupported`] when a variable is not set.
    pub fn connect(
        name: &str,
        settings: &AlpacaSettings,
        known: Vec<OrderState>,
    ) -> Result<AlpacaBroker, BrokerError> {
        let credentials = credentials_from_env(name, settings)?;
        AlpacaBroker::new(
            name,
            settings,
            credentials,
            known,
            ClientOptions::default().timeout,
        )
    }

    /// A broker of account `settings` with these keys, knowing the store's orders of this
    /// broker (`known`: client id ↔ Alpaca id, pipeline, purpose, OCO group), and a
    /// per-request timeout.
    ///
    /// # Errors
    /// [`BrokerError::Unsupported`] when the HTTP client cannot be built.
    pub fn new(
        name: &str,
        settings: &AlpacaSettings,
        credentials: Credentials,
        known: Vec<OrderState>,
        timeout: Duration,
    ) -> Result<AlpacaBroker, BrokerError> {
        let mut options = AlpacaOptions::default();
        options.client.timeout = timeout;
        AlpacaBroker::with_options(name, settings, credentials, known, options)
    }

    /// [`AlpacaBroker::new`] with every knob.
    ///
    /// # Errors
    /// [`BrokerError::Unsupported`] when the HTTP client cannot be built.
    pub fn with_options(
        name: &str,
        settings: &AlpacaSettings,
        credentials: Credentials,
        known: Vec<OrderState>,
        options: AlpacaOptions,
    ) -> Result<AlpacaBroker, BrokerError> {
        let rest = RestClient::new(
            &settings.trading_url(),
            &credentials.key_id,
            &credentials.secret_key,
            options.client.clone(),
        )
        .map_err(|e| BrokerError::Unsupported(format!("broker {name}: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            name: name.to_string(),
            rest,
            stream_url: settings.stream_url(),
            credentials,
            key_envs: (settings.key_id_env.clone(), settings.secret_key_env.clone()),
            options,
            book: Mutex::new(Book::from_known(known)),
            tx,
            started: Utc::now(),
        });
        Ok(AlpacaBroker {
            inner,
            rx: Mutex::new(Some(rx)),
            task: Mutex::new(None),
        })
    }

    fn start_stream(&self) {
        let Ok(mut task) = self.task.lock() else {
            return;
        };
        if task.is_some() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                *task = Some(handle.spawn(stream::run(self.inner.clone())));
            }
            Err(_) => tracing::error!(
                broker = %self.inner.name,
                "no tokio runtime: the trade_updates stream is not started"
            ),
        }
    }

    /// `GET /v2/account` in full (status, blocks, pattern day trader, number, balances).
    ///
    /// # Errors
    /// [`AlpacaError`]; [`AlpacaError::is_auth`] tells refused keys apart.
    pub async fn account_details(&self) -> Result<AccountDetails, AlpacaError> {
        let a: wire::Account = self.inner.rest.get("/v2/account", &[]).await?;
        Ok(AccountDetails {
            balances: Account {
                cash: a.cash.unwrap_or_default(),
                equity: a.equity.unwrap_or_default(),
                buying_power: a.buying_power.unwrap_or_default(),
                commissions: Decimal::ZERO,
            },
            status: a.status,
            account_number: a.account_number,
            currency: a.currency,
            trading_blocked: a.trading_blocked,
            account_blocked: a.account_blocked,
            pattern_day_trader: a.pattern_day_trader,
        })
    }

    /// `DELETE /v2/orders`: cancels every open order of the account; one `(order id, HTTP
    /// status)` per order.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`].
    pub async fn cancel_all(&self) -> Result<Vec<(String, u16)>, BrokerError> {
        let parts: Vec<wire::BulkPart> = self
            .inner
            .rest
            .request(Method::DELETE, "/v2/orders", &[], None, Retry::Yes)
            .await
            .and_then(|a| {
                if a.body.iter().all(u8::is_ascii_whitespace) {
                    Ok(Vec::new())
                } else {
                    a.json()
                }
            })
            .map_err(|e| self.inner.unavailable(&e))?;
        Ok(parts
            .into_iter()
            .map(|p| (p.id.unwrap_or_default(), p.status))
            .collect())
    }

    /// The REST catch-up the stream does after each reconnect: fetches the orders changed
    /// since the last event seen and emits what was missed. Answers how many orders it read.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`].
    pub async fn catch_up(&self) -> Result<usize, BrokerError> {
        self.inner
            .catch_up()
            .await
            .map_err(|e| self.inner.unavailable(&e))
    }

    fn reject_recorded(&self, order: &Submit, reason: String) -> OrderState {
        let (quantity, order_type, purpose, oco_group) = match order {
            Submit::Entry(e) => (
                e.get().quantity,
                e.get().order_type,
                OrderPurpose::Entry,
                None,
            ),
            Submit::Exit(x) => (x.quantity, x.order_type, x.purpose, x.oco_group.clone()),
        };
        let state = OrderState {
            client_order_id: order.client_order_id().to_string(),
            broker_order_id: String::new(),
            pipeline: order.pipeline().to_string(),
            symbol: order.symbol().to_string(),
            side: order.side(),
            quantity,
            filled_quantity: Decimal::ZERO,
            average_price: Decimal::ZERO,
            order_type,
            purpose,
            oco_group,
            status: OrderStatus::Rejected,
            reason: Some(reason.clone()),
            created_at: Utc::now().timestamp(),
        };
        let mut book = self.inner.book();
        book.rejected
            .insert(state.client_order_id.clone(), state.clone());
        book.reported
            .insert(state.client_order_id.clone(), reported_of(&state));
        let _ = self.inner.tx.send(BrokerEvent::Rejected {
            order: state.clone(),
            reason,
        });
        state
    }

    async fn lookup(&self, cid: &str) -> Result<Option<OrderState>, BrokerError> {
        match self.inner.fetch_order(cid).await {
            Ok(Some(w)) => Ok(Some(self.inner.observe(&w, None))),
            Ok(None) => Ok(self.inner.book().rejected.get(cid).cloned()),
            Err(e) => Err(self.inner.unavailable(&e)),
        }
    }
}

#[async_trait]
impl Broker for AlpacaBroker {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn learn_orders(&self, orders: &[OrderState]) {
        let mut book = self.inner.book();
        let mut new: Vec<&OrderState> = orders
            .iter()
            .filter(|o| !book.meta.contains_key(&o.client_order_id))
            .collect();
        new.sort_by_key(|o| o.created_at);
        for o in new {
            book.learn(o.clone());
        }
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
        self.account_details()
            .await
            .map(|d| d.balances)
            .map_err(|e| self.inner.unavailable(&e))
    }

    async fn positions(&self) -> Result<Vec<Position>, BrokerError> {
        let list: Vec<wire::Position> = self
            .inner
            .rest
            .get("/v2/positions", &[])
            .await
            .map_err(|e| self.inner.unavailable(&e))?;
        let book = self.inner.book();
        Ok(list
            .into_iter()
            .map(|p| {
                let quantity = if p.side.eq_ignore_ascii_case("short") && p.qty > Decimal::ZERO {
                    -p.qty
                } else {
                    p.qty
                };
                let symbol = book.spelled.get(&p.symbol).cloned().unwrap_or(p.symbol);
                Position {
                    pipeline: book.owner_of(&symbol),
                    quantity,
                    average_price: p.avg_entry_price.unwrap_or_default(),
                    market_price: p.current_price.unwrap_or_default(),
                    symbol,
                }
            })
            .collect())
    }

    async fn open_orders(&self) -> Result<Vec<OrderState>, BrokerError> {
        let list: Vec<wire::Order> = self
            .inner
            .rest
            .get(
                "/v2/orders",
                &[
                    ("status", "open".into()),
                    ("nested", "true".into()),
                    ("limit", "500".into()),
                    ("direction", "asc".into()),
                ],
            )
            .await
            .map_err(|e| self.inner.unavailable(&e))?;
        let mut book = self.inner.book();
        let mut out = Vec::new();
        for w in &list {
            book.register_legs(w);
            for o in std::iter::once(w).chain(w.legs.iter()) {
                if is_open_wire(o) && o.status != wire::Status::Held {
                    out.push(book.state_of(o));
                }
            }
        }
        out.sort_by_key(|o| o.created_at);
        Ok(out)
    }

    async fn order(&self, client_order_id: &str) -> Result<Option<OrderState>, BrokerError> {
        self.lookup(client_order_id).await
    }

    async fn submit(&self, order: Submit) -> Result<OrderState, BrokerError> {
        let cid = order.client_order_id().to_string();
        let (seen, rejected) = {
            let book = self.inner.book();
            (
                book.client_to_broker.contains_key(&cid),
                book.rejected.get(&cid).cloned(),
            )
        };
        if let Some(r) = rejected {
            return Ok(r);
        }
        if seen && let Some(state) = self.lookup(&cid).await? {
            return Ok(state);
        }
        let body = new_order(&order)?;
        {
            let mut book = self.inner.book();
            let (purpose, oco_group) = match &order {
                Submit::Entry(_) => (OrderPurpose::Entry, None),
                Submit::Exit(x) => (x.purpose, x.oco_group.clone()),
            };
            book.meta.insert(
                cid.clone(),
                Meta {
                    crypto: is_crypto(order.symbol()),
                    pipeline: order.pipeline().to_string(),
                    purpose,
                    oco_group,
                },
            );
        }
        let body = serde_json::to_value(&body).map_err(|e| {
            BrokerError::Unavailable(format!("broker {}: encoding the order: {e}", self.name()))
        })?;
        let max_tries = self.inner.options.client.max_tries.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self
                .inner
                .rest
                .request(Method::POST, "/v2/orders", &[], Some(&body), Retry::No)
                .await
            {
                Ok(answer) => {
                    let w: wire::Order = answer.json().map_err(|e| self.inner.unavailable(&e))?;
                    return Ok(self.inner.observe(&w, None));
                }
                Err(e) => e,
            };
            match &err {
                AlpacaError::Api {
                    status: 422,
                    message,
                    ..
                } if message.contains("client_order_id must be unique") => {
                    tracing::info!(broker = %self.name(), client_order_id = %cid, "alpaca already has this order; answering its state");
                    return match self.lookup(&cid).await? {
                        Some(state) => Ok(state),
                        None => Err(BrokerError::Unavailable(format!(
                            "broker {}: alpaca says {cid} exists but does not find it",
                            self.name()
                        ))),
                    };
                }
                AlpacaError::Api {
                    status: 403 | 422, ..
                } => {
                    tracing::warn!(broker = %self.name(), client_order_id = %cid, reason = %err, "alpaca rejected the order");
                    return Ok(self.reject_recorded(&order, err.reason()));
                }
                AlpacaError::Api { .. } => {
                    return Err(BrokerError::Rejected {
                        client_order_id: cid,
                        reason: err.reason(),
                    });
                }
                AlpacaError::Auth { .. } | AlpacaError::Decode(_) => {
                    return Err(self.inner.unavailable(&err));
                }
                AlpacaError::RateLimited(_)
                | AlpacaError::Server { .. }
                | AlpacaError::Timeout(_)
                | AlpacaError::Connect(_) => {}
            }
            tracing::warn!(broker = %self.name(), client_order_id = %cid, error = %err, attempt, "order submission outcome unknown; looking it up before anything else");
            if !matches!(err, AlpacaError::RateLimited(_)) {
                tokio::time::sleep(self.inner.rest.backoff(attempt)).await;
            }
            match self.inner.fetch_order(&cid).await {
                Ok(Some(w)) => return Ok(self.inner.observe(&w, None)),
                Ok(None) if attempt < max_tries => continue,
                Ok(None) => {
                    return Err(BrokerError::Unavailable(format!(
                        "broker {}: order {cid} not submitted after {attempt} tries: {err}",
                        self.name()
                    )));
                }
                Err(e) => {
                    return Err(BrokerError::Unavailable(format!(
                        "broker {}: order {cid}: outcome unknown ({err}); the lookup failed too: {e}",
                        self.name()
                    )));
                }
            }
        }
    }

    async fn cancel(&self, client_order_id: &str) -> Result<(), BrokerError> {
        if self.inner.book().rejected.contains_key(client_order_id) {
            return Ok(());
        }
        let known = self
            .inner
            .book()
            .client_to_broker
            .get(client_order_id)
            .cloned();
        let mut id = match known {
            Some(id) => id,
            None => match self.inner.fetch_order(client_order_id).await {
                Ok(Some(w)) => {
                    if !is_open_wire(&w) {
                        self.inner.observe(&w, None);
                        return Ok(());
                    }
                    w.id
                }
                Ok(None) => return Err(BrokerError::UnknownOrder(client_order_id.to_string())),
                Err(e) => return Err(self.inner.unavailable(&e)),
            },
        };
        for _ in 0..3 {
            let err = match self
                .inner
                .rest
                .request(
                    Method::DELETE,
                    &format!("/v2/orders/{id}"),
                    &[],
                    None,
                    Retry::Yes,
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            match err.status() {
                Some(404) | Some(422) => {}
                _ => return Err(self.inner.unavailable(&err)),
            }
            // Not cancelable (or gone under that id): see what it is now.
            match self.inner.fetch_order(client_order_id).await {
                Ok(Some(w)) if !is_open_wire(&w) => {
                    self.inner.observe(&w, None);
                    return Ok(());
                }
                // Already being cancelled: the stream reports the outcome.
                Ok(Some(w)) if w.status == wire::Status::PendingCancel => return Ok(()),
                Ok(Some(w)) if w.id != id => id = w.id,
                Ok(Some(_)) => {
                    return Err(BrokerError::Rejected {
                        client_order_id: client_order_id.to_string(),
                        reason: err.reason(),
                    });
                }
                Ok(None) => return Err(BrokerError::UnknownOrder(client_order_id.to_string())),
                Err(e) => return Err(self.inner.unavailable(&e)),
            }
        }
        Err(BrokerError::Unavailable(format!(
            "broker {}: cancel of {client_order_id} did not settle",
            self.name()
        )))
    }

    async fn replace_stop(
        &self,
        client_order_id: &str,
        price: Decimal,
        quantity: Decimal,
    ) -> Result<(), BrokerError> {
        let (known, crypto) = {
            let book = self.inner.book();
            (
                book.client_to_broker.get(client_order_id).cloned(),
                book.meta.get(client_order_id).is_some_and(|m| m.crypto),
            )
        };
        let (id, crypto) = match known {
            Some(id) => (id, crypto),
            None => match self.inner.fetch_order(client_order_id).await {
                Ok(Some(w)) => (w.id, is_crypto(&w.symbol)),
                Ok(None) => return Err(BrokerError::UnknownOrder(client_order_id.to_string())),
                Err(e) => return Err(self.inner.unavailable(&e)),
            },
        };
        // A crypto stop is a stop-limit (a long's sell stop: Alpaca does not short crypto).
        let limit_price =
            crypto.then(|| price_str(price * (Decimal::ONE - CRYPTO_STOP_LIMIT_BAND)));
        let body = serde_json::to_value(wire::ReplaceOrder {
            qty: Some(qty_str(quantity)),
            stop_price: Some(price_str(price)),
            limit_price,
        })
        .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let answer = self
            .inner
            .rest
            .request(
                Method::PATCH,
                &format!("/v2/orders/{id}"),
                &[],
                Some(&body),
                Retry::No,
            )
            .await;
        match answer {
            Ok(a) => {
                let w: wire::Order = a.json().map_err(|e| self.inner.unavailable(&e))?;
                {
                    let mut book = self.inner.book();
                    book.superseded.insert(id.clone());
                    book.broker_to_client
                        .insert(id.clone(), client_order_id.to_string());
                    book.broker_to_client
                        .insert(w.id.clone(), client_order_id.to_string());
                }
                self.inner.observe(&w, None);
                Ok(())
            }
            Err(AlpacaError::Api { status: 404, .. }) => {
                Err(BrokerError::UnknownOrder(client_order_id.to_string()))
            }
            Err(e @ AlpacaError::Api { .. }) => Err(BrokerError::Rejected {
                client_order_id: client_order_id.to_string(),
                reason: e.reason(),
            }),
            Err(e) => Err(self.inner.unavailable(&e)),
        }
    }

    async fn close_all(&self) -> Result<Vec<BulkClose>, BrokerError> {
        let answer = self
            .inner
            .rest
            .request(
                Method::DELETE,
                "/v2/positions",
                &[("cancel_orders", "true".into())],
                None,
                Retry::No,
            )
            .await
            .map_err(|e| self.inner.unavailable(&e))?;
        let parts: Vec<wire::BulkPart> = if answer.body.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else {
            answer.json().map_err(|e| self.inner.unavailable(&e))?
        };
        let mut out = Vec::new();
        for part in parts {
            let symbol = part.symbol.clone().unwrap_or_default();
            let order = if (200..300).contains(&part.status) {
                serde_json::from_value::<wire::Order>(part.body.clone()).ok()
            } else {
                None
            };
            match order {
                Some(w) => {
                    {
                        // The close of a position no pipeline owns is drift: answered,
                        // not reported on the stream.
                        let mut book = self.inner.book();
                        let owner = book.owner_of(&w.symbol);
                        let cid = book.client_id_of(&w);
                        if !owner.is_empty() {
                            book.meta.insert(
                                cid,
                                Meta {
                                    crypto: is_crypto(&w.symbol),
                                    pipeline: owner,
                                    purpose: OrderPurpose::Emergency,
                                    oco_group: None,
                                },
                            );
                        }
                    }
                    let mut state = self.inner.observe(&w, None);
                    state.purpose = OrderPurpose::Emergency;
                    out.push(BulkClose {
                        symbol: if symbol.is_empty() {
                            state.symbol.clone()
                        } else {
                            symbol
                        },
                        status: part.status,
                        order: Some(state),
                        error: None,
                    });
                }
                None => {
                    let err: wire::ApiError =
                        serde_json::from_value(part.body.clone()).unwrap_or_default();
                    let error = match err.code {
                        Some(code) => format!("alpaca {} {code}: {}", part.status, err.message),
                        None if !err.message.is_empty() => {
                            format!("alpaca {}: {}", part.status, err.message)
                        }
                        None => format!("alpaca {}: {}", part.status, part.body),
                    };
                    out.push(BulkClose {
                        symbol,
                        status: part.status,
                        order: None,
                        error: Some(error),
                    });
                }
            }
        }
        Ok(out)
    }

    fn take_events(&self) -> Option<EventStream> {
        let rx = self.rx.lock().ok().and_then(|mut rx| rx.take())?;
        self.start_stream();
        Some(rx)
    }
}

#[cfg(test)]
mod tests;
