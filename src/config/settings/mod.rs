//! Daemon settings: `ztraded.toml` (DESIGN.md §2.4).
//!
//! Loaded with figment from, in order: the embedded defaults ([`Settings::default`]), the
//! file, then `ZTRADED_<SECTION>__<KEY>` environment variables (`ZTRADED_STORE__URL`); see
//! [`merge_settings`]. Secrets are never values: settings name the environment variable
//! that holds them (`key_id_env = "APCA_API_KEY_ID"`). Relative paths are relative to the
//! config directory.

mod merge;
mod notify;

pub use merge::{EnvVars, SettingSource, env_overrides, merge_settings, process_env};
pub use notify::{Delivery, NotifyEvent, NotifySettings, SlackSink, TelegramSink, WebhookSink};

use super::common::{Duration, Percent, TimeZoneName, usd_schema};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything the daemon needs besides pipelines, scanners and risk policies.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ztraded settings (ztraded.toml)")]
pub struct Settings {
    /// The one HTTP port: metrics, health and the emergency close.
    #[serde(default)]
    pub http: HttpSettings,
    /// Where executions, orders, fills and trades are recorded.
    #[serde(default)]
    pub store: StoreSettings,
    /// How signals and work are shared between daemons.
    #[serde(default)]
    pub bus: BusSettings,
    /// Where bars come from.
    #[serde(default)]
    pub market_data: MarketDataSettings,
    /// Broker connections, by name (`[brokers.sim]`). The embedded defaults define `sim`.
    #[serde(default = "default_brokers")]
    pub brokers: BTreeMap<String, BrokerSettings>,
    /// OpenAI-compatible LLM providers, by name (`[llm.default]`).
    #[serde(default)]
    pub llm: BTreeMap<String, LlmSettings>,
    /// How the daemon follows the config directory.
    #[serde(default)]
    pub reconcile: ReconcileSettings,
    /// Notification sinks, by name (`[notify.ops]`).
    #[serde(default)]
    pub notify: BTreeMap<String, NotifySettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: HttpSettings::default(),
            store: StoreSettings::default(),
            bus: BusSettings::default(),
            market_data: MarketDataSettings::default(),
            brokers: default_brokers(),
            llm: BTreeMap::new(),
            reconcile: ReconcileSettings::default(),
            notify: BTreeMap::new(),
        }
    }
}

fn default_brokers() -> BTreeMap<String, BrokerSettings> {
    BTreeMap::from([(
        "sim".to_string(),
        BrokerSettings::Simulated(SimulatedBroker::default()),
    )])
}

/// The HTTP listener.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address and port to listen on. Loopback unless you put a proxy in front of it.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Name of the environment variable holding the bearer token of `/v1/close` and
    /// `/v1/resume`. When the variable is unset those endpoints answer 404.
    #[serde(default = "default_admin_token_env")]
    #[schemars(regex(pattern = "^[A-Z_][A-Z0-9_]*$"))]
    pub admin_token_env: String,
    /// Largest accepted request body, in bytes; larger bodies get 413.
    #[serde(default = "default_max_body")]
    #[schemars(range(min = 64, max = 1_048_576))]
    pub max_body_bytes: u32,
    /// Longest time a request head (request line and headers) may take to arrive, counted
    /// from the moment the port waits for it: the connection opened, or the previous answer
    /// on a kept-alive connection was sent. A slower client is disconnected, so a kept-alive
    /// connection waits at most this long for its next request.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// A connection on which no byte has moved in either direction for this long, while no
    /// request on it is being handled, is closed (a client that stops reading its answer,
    /// a connection left open and unused).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Most connections held open at once (each is one file descriptor). Past it, a new
    /// connection takes the slot of the oldest one that is not being answered (one still
    /// waiting for its request head first), so stalled clients cannot lock out `/metrics` or
    /// `/v1/close`; only when every slot is busy answering a request does a new connection
    /// get 503.
    #[serde(default = "default_http_max_connections")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_connections: u32,
}

fn default_listen() -> String {
    "127.0.0.1:9464".to_string()
}
fn default_admin_token_env() -> String {
    "ZTRADED_ADMIN_TOKEN".to_string()
}
fn default_max_body() -> u32 {
    4_096
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_http_max_connections() -> u32 {
    512
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: default_listen(),
            admin_token_env: default_admin_token_env(),
            max_body_bytes: default_max_body(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_http_max_connections(),
        }
    }
}

/// The store.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite://PATH` (relative to the config directory) or `postgres://user@host/db`.
    /// A password belongs in `PGPASSWORD` or in `ZTRADED_STORE__URL`, not in the file.
    #[serde(default = "default_store_url")]
    #[schemars(regex(pattern = "^(sqlite|postgres|postgresql)://"))]
    pub url: String,
    /// Most connections in the pool.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_connections: u32,
}

fn default_store_url() -> String {
    "sqlite://.ztraded/ztraded.db".to_string()
}
fn default_max_connections() -> u32 {
    8
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: default_store_url(),
            max_connections: default_max_connections(),
        }
    }
}

/// The bus.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BusSettings {
    /// `memory://` (one daemon) or `redis://host:port` (several daemons).
    #[serde(default = "default_bus_url")]
    #[schemars(regex(pattern = "^(memory|redis|rediss)://"))]
    pub url: String,
    /// The deployment: the Redis consumer group of its daemons. Every daemon of one
    /// deployment (one account) uses the same group, so each signal is handled once by one
    /// of them; another deployment on the same Redis uses another group and sees every
    /// signal too.
    #[serde(default = "default_bus_group")]
    #[schemars(regex(pattern = "^[A-Za-z0-9_.:-]{1,64}$"))]
    pub group: String,
    /// This daemon's consumer name in the group. Default: `<hostname>-<pid>`.
    #[serde(default)]
    #[schemars(regex(pattern = "^[A-Za-z0-9_.:-]{1,128}$"))]
    pub consumer: Option<String>,
    /// Prefix of the Redis keys: signals on `<prefix>:signals`, malformed entries on
    /// `<prefix>:signals:dead`. Keep the default in production (external producers write
    /// to `ztraded:signals`); tests and staging use their own.
    #[serde(default = "default_bus_key_prefix")]
    #[schemars(regex(pattern = "^[A-Za-z0-9_.:-]{1,64}$"))]
    pub key_prefix: String,
    /// Approximate length the signal streams are trimmed to (`XADD ... MAXLEN ~`), entries.
    #[serde(default = "default_bus_max_len")]
    #[schemars(range(min = 100, max = 100_000_000))]
    pub max_len: u64,
    /// How long a signal may stay delivered and unacknowledged (its daemon died) before
    /// another daemon of the group claims it (`XAUTOCLAIM`).
    #[serde(default = "default_bus_claim_idle")]
    pub claim_idle: Duration,
    /// Several daemons (`redis://`): how long a daemon's lease on a pipeline lasts without
    /// renewal. A daemon renews its leases every third of it; when one dies (`kill -9`, a
    /// lost host) its pipelines move to the other daemons within this time. Ignored with
    /// `memory://` (one daemon runs every pipeline).
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: Duration,
}

fn default_bus_url() -> String {
    "memory://".to_string()
}

fn default_bus_group() -> String {
    "ztraded".to_string()
}

fn default_bus_key_prefix() -> String {
    "ztraded".to_string()
}

fn default_bus_max_len() -> u64 {
    100_000
}

fn default_bus_claim_idle() -> Duration {
    Duration::from_secs(30)
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(10)
}

impl Default for BusSettings {
    fn default() -> Self {
        BusSettings {
            url: default_bus_url(),
            group: default_bus_group(),
            consumer: None,
            key_prefix: default_bus_key_prefix(),
            max_len: default_bus_max_len(),
            claim_idle: default_bus_claim_idle(),
            lease_ttl: default_lease_ttl(),
        }
    }
}

/// Where bars come from.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketDataSettings {
    /// `replay` (CSV files on a simulated clock), `alpaca` or `ibkr`.
    #[serde(default)]
    pub source: MarketDataSource,
    /// Replay: directory with one CSV per symbol (file stem = symbol), relative to the
    /// config directory.
    #[serde(default = "default_data_path")]
    pub path: String,
    /// Replay: simulated seconds per wall-clock second (86400 = one day per second).
    #[serde(default = "default_speed")]
    #[schemars(range(min = 0.001, max = 1.0e9))]
    pub speed: f64,
    /// Replay: where the simulated clock starts, `YYYY-MM-DD` or RFC 3339 (default: the
    /// first bar).
    #[serde(default = "default_start")]
    pub start: Option<String>,
    /// Time zone of timestamps without an offset in the data files, and of daily bars.
    #[serde(default)]
    pub timezone: TimeZoneName,
    /// Replay: whether intraday timestamps in the files mark the start or the end of a bar.
    #[serde(default)]
    pub timestamps: BarStamp,
    /// `alpaca`/`ibkr`: the `[brokers.<name>]` connection that serves the data.
    #[serde(default)]
    pub broker: Option<String>,
}

fn default_data_path() -> String {
    "examples/data".to_string()
}
fn default_speed() -> f64 {
    86_400.0
}
fn default_start() -> Option<String> {
    Some("2012-01-03".to_string())
}

impl Default for MarketDataSettings {
    fn default() -> Self {
        MarketDataSettings {
            source: MarketDataSource::default(),
            path: default_data_path(),
            speed: default_speed(),
            start: default_start(),
            timezone: TimeZoneName::default(),
            timestamps: BarStamp::default(),
            broker: None,
        }
    }
}

/// Source of market data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MarketDataSource {
    /// CSV files replayed on a simulated clock.
    #[default]
    Replay,
    /// Alpaca market data.
    Alpaca,
    /// Interactive Brokers market data.
    Ibkr,
}

/// What an intraday timestamp in a data file marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BarStamp {
    /// The start of the bar's period.
    #[default]
    Start,
    /// The end of the bar's period.
    End,
}

/// A broker connection.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BrokerSettings {
    /// In-process simulated fills.
    Simulated(SimulatedBroker),
    /// Alpaca (paper or live account).
    Alpaca(AlpacaBroker),
    /// Interactive Brokers through TWS or IB Gateway.
    Ibkr(IbkrBroker),
}

impl BrokerSettings {
    /// `simulated`, `alpaca` or `ibkr`.
    pub fn kind(&self) -> &'static str {
        match self {
            BrokerSettings::Simulated(_) => "simulated",
            BrokerSettings::Alpaca(_) => "alpaca",
            BrokerSettings::Ibkr(_) => "ibkr",
        }
    }

    /// Whether the account is a paper account (`None` for the simulated broker).
    pub fn is_paper(&self) -> Option<bool> {
        match self {
            BrokerSettings::Simulated(_) => None,
            BrokerSettings::Alpaca(a) => Some(a.paper),
            BrokerSettings::Ibkr(i) => Some(i.paper.unwrap_or(matches!(i.port, 4002 | 7497))),
        }
    }
}

/// The simulated broker.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedBroker {
    /// Starting cash, in USD.
    #[serde(default = "default_balance")]
    #[schemars(schema_with = "usd_schema")]
    pub initial_balance: Decimal,
    /// Slippage applied against the order on every fill, in percent of the price.
    #[serde(default = "default_slippage")]
    pub slippage_pct: Percent,
    /// Commission per share, in USD.
    #[serde(default = "default_commission")]
    #[schemars(schema_with = "usd_schema")]
    pub commission_per_share: Decimal,
    /// Smallest commission per order, in USD.
    #[serde(default)]
    #[schemars(schema_with = "usd_schema")]
    pub min_commission: Decimal,
    /// Chance (0–100) that a market order fills only partly (the rest is cancelled).
    #[serde(default)]
    pub partial_fill_pct: Percent,
    /// Chance (0–100) that an order is rejected.
    #[serde(default)]
    pub reject_pct: Percent,
    /// Seed of the random generator behind partial fills and rejections.
    #[serde(default)]
    pub seed: u64,
}

fn default_balance() -> Decimal {
    Decimal::from(100_000)
}
fn default_slippage() -> Percent {
    Percent(Decimal::new(1, 1))
}
fn default_commission() -> Decimal {
    Decimal::new(5, 3)
}

impl Default for SimulatedBroker {
    fn default() -> Self {
        SimulatedBroker {
            initial_balance: default_balance(),
            slippage_pct: default_slippage(),
            commission_per_share: default_commission(),
            min_commission: Decimal::ZERO,
            partial_fill_pct: Percent::default(),
            reject_pct: Percent::default(),
            seed: 0,
        }
    }
}

/// An Alpaca account.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlpacaBroker {
    /// `true` for the paper-trading account, `false` for the live one.
    pub paper: bool,
    /// Name of the environment variable holding the API key id.
    #[serde(default = "default_alpaca_key")]
    #[schemars(regex(pattern = "^[A-Z_][A-Z0-9_]*$"))]
    pub key_id_env: String,
    /// Name of the environment variable holding the API secret key.
    #[serde(default = "default_alpaca_secret")]
    #[schemars(regex(pattern = "^[A-Z_][A-Z0-9_]*$"))]
    pub secret_key_env: String,
    /// Trading REST base URL (`/v2/account`, `/v2/orders`, …). Default:
    /// `https://paper-api.alpaca.markets` with `paper = true`, `https://api.alpaca.markets`
    /// otherwise. `base_url` is accepted as an older name.
    #[serde(default, alias = "base_url")]
    pub trading_url: Option<String>,
    /// `trade_updates` websocket URL. Default: the trading host's `wss://…/stream`.
    #[serde(default)]
    pub stream_url: Option<String>,
    /// Market-data REST base URL (`/v2/stocks/bars`, `/v1beta3/crypto/us/bars`). Default:
    /// `https://data.alpaca.markets`.
    #[serde(default)]
    pub data_url: Option<String>,
    /// Market-data websocket URL. Default: `wss://stream.data.alpaca.markets/v2/<feed>`
    /// (crypto: `wss://stream.data.alpaca.markets/v1beta3/crypto/us`).
    #[serde(default)]
    pub data_stream_url: Option<String>,
    /// Stock data feed: `iex` (free) or `sip` (all US exchanges, paid subscription).
    #[serde(default)]
    pub feed: AlpacaFeed,
}

/// Alpaca's stock market-data feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlpacaFeed {
    /// IEX only (the free plan).
    #[default]
    Iex,
    /// Every US exchange (the paid plan).
    Sip,
}

impl AlpacaFeed {
    /// `iex` or `sip`, as Alpaca's `feed` parameter spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AlpacaFeed::Iex => "iex",
            AlpacaFeed::Sip => "sip",
        }
    }
}

impl AlpacaBroker {
    /// The trading REST base URL, without a trailing slash.
    pub fn trading_url(&self) -> String {
        let url = self.trading_url.clone().unwrap_or_else(|| {
            if self.paper {
                "https://paper-api.alpaca.markets".to_string()
            } else {
                "https://api.alpaca.markets".to_string()
            }
        });
        url.trim_end_matches('/').to_string()
    }
    /// The `trade_updates` websocket URL (default: the trading URL with `wss`/`ws` and
    /// `/stream`).
    pub fn stream_url(&self) -> String {
        self.stream_url.clone().unwrap_or_else(|| {
            let t = self.trading_url();
            let t = if let Some(rest) = t.strip_prefix("https://") {
                format!("wss://{rest}")
            } else if let Some(rest) = t.strip_prefix("http://") {
                format!("ws://{rest}")
            } else {
                t
            };
            format!("{t}/stream")
        })
    }
    /// The market-data REST base URL, without a trailing slash.
    pub fn data_url(&self) -> String {
        self.data_url
            .clone()
            .unwrap_or_else(|| "https://data.alpaca.markets".to_string())
            .trim_end_matches('/')
            .to_string()
    }
    /// The stock market-data websocket URL.
    pub fn data_stream_url(&self) -> String {
        self.data_stream_url.clone().unwrap_or_else(|| {
            format!("wss://stream.data.alpaca.markets/v2/{}", self.feed.as_str())
        })
    }
}

fn default_alpaca_key() -> String {
    "APCA_API_KEY_ID".to_string()
}
fn default_alpaca_secret() -> String {
    "APCA_API_SECRET_KEY".to_string()
}

/// An Interactive Brokers account through TWS or IB Gateway.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IbkrBroker {
    /// Host of TWS or IB Gateway.
    #[serde(default = "default_ib_host")]
    pub host: String,
    /// API port (IB Gateway: 4002 paper, 4001 live; TWS: 7497 paper, 7496 live).
    pub port: u16,
    /// API client id; unique per connection to the same gateway.
    #[serde(default)]
    pub client_id: i32,
    /// Whether the gateway is logged in to a paper account (default: from the port, 4002
    /// and 7497 are paper).
    #[serde(default)]
    pub paper: Option<bool>,
    /// Account id, when the login has several.
    #[serde(default)]
    pub account: Option<String>,
}

fn default_ib_host() -> String {
    "127.0.0.1".to_string()
}

/// An OpenAI-compatible chat-completions provider.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    /// Base URL of the API, up to and including `/v1`.
    pub base_url: String,
    /// Name of the environment variable holding the API key.
    #[schemars(regex(pattern = "^[A-Z_][A-Z0-9_]*$"))]
    pub api_key_env: String,
    /// Default model.
    pub model: String,
    /// Price of 1,000 prompt tokens, in USD.
    #[serde(default)]
    #[schemars(schema_with = "usd_schema")]
    pub input_usd_per_1k_tokens: Decimal,
    /// Price of 1,000 completion tokens, in USD.
    #[serde(default)]
    #[schemars(schema_with = "usd_schema")]
    pub output_usd_per_1k_tokens: Decimal,
    /// Longest wait for one response.
    #[serde(default = "default_llm_timeout")]
    pub timeout: Duration,
    /// Most completion tokens per call (sent as `max_tokens`).
    #[serde(default = "default_max_tokens")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_tokens: u32,
    /// Retries of a call answered 429 or 5xx (or refused at connect), with exponential
    /// backoff from 100 ms (at most 8 s) or the provider's `Retry-After` seconds.
    #[serde(default = "default_max_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub max_retries: u32,
    /// Most calls in flight to this provider at once (the others wait their turn).
    #[serde(default = "default_max_concurrency")]
    #[schemars(range(min = 1, max = 1_000))]
    pub max_concurrency: u32,
    /// How the answer's JSON Schema reaches the model: `json_schema` (the provider's
    /// structured outputs, `response_format.type = "json_schema"`), `json_object` (JSON mode,
    /// the schema in the prompt) or `none` (the schema in the prompt only). The answer is
    /// parsed and validated against the schema whichever is chosen.
    #[serde(default)]
    pub structured_output: StructuredOutput,
}

/// See [`LlmSettings::structured_output`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StructuredOutput {
    /// `response_format: {type: "json_schema", json_schema: {strict: true, schema}}`.
    #[default]
    JsonSchema,
    /// `response_format: {type: "json_object"}`, the schema in the prompt.
    JsonObject,
    /// No `response_format`; the schema in the prompt.
    None,
}

fn default_llm_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_tokens() -> u32 {
    1_024
}
fn default_max_retries() -> u32 {
    3
}
fn default_max_concurrency() -> u32 {
    8
}

/// How the daemon follows the config directory.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    /// Quiet time after the last file event before the directory is rescanned.
    #[serde(default = "default_debounce")]
    pub debounce: Duration,
    /// Full rescan interval, whatever the file events say.
    #[serde(default = "default_resync")]
    pub resync_interval: Duration,
    /// Most pipelines one revision may remove, in percent (0–100) of the running ones. A
    /// revision that removes more, or removes every pipeline, or has no `pipelines/`
    /// directory while pipelines run, is refused: a failed checkout or a wrong directory is
    /// not a desired state. Disabling pipelines (`enabled: false`) is explicit and does not
    /// count; 100 allows removing everything.
    #[serde(default = "default_max_removal_pct")]
    pub max_removal_pct: Percent,
    /// How often each real broker's positions and orders are compared with the store (fills
    /// while the daemon was down, orders the broker cancelled, missing stops, positions no
    /// pipeline owns). Also done at start.
    #[serde(default = "default_broker_interval")]
    pub broker_interval: Duration,
}

fn default_broker_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_debounce() -> Duration {
    Duration(std::time::Duration::from_millis(200))
}
fn default_resync() -> Duration {
    Duration::from_secs(60)
}
fn default_max_removal_pct() -> Percent {
    Percent(Decimal::from(50))
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        ReconcileSettings {
            debounce: default_debounce(),
            resync_interval: default_resync(),
            max_removal_pct: default_max_removal_pct(),
            broker_interval: default_broker_interval(),
        }
    }
}

/// Parses `market_data.start`: a date (midnight in the data time zone is applied by the
/// caller) or an RFC 3339 time; `None` when it is neither.
pub fn parse_start(s: &str) -> Option<StartPoint> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(StartPoint::Date(d));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| StartPoint::Time(t.with_timezone(&chrono::Utc)))
}

/// Where a replay starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPoint {
    /// Local midnight of this date.
    Date(chrono::NaiveDate),
    /// This instant.
    Time(chrono::DateTime<chrono::Utc>),
}
