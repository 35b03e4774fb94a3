//! The REST side: historical bars (`/v2/stocks/bars`, `/v1beta3/crypto/us/bars`) with
//! pagination, retries and typed errors.

use super::is_crypto;
use crate::config::settings::{AlpacaBroker, AlpacaFeed};
use crate::market::{Bar, Timeframe};
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// Why a market-data request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DataError {
    /// An environment variable named by the broker settings is not set.
    #[error("broker '{broker}': environment variable {var} ({what}) is not set")]
    MissingEnv {
        /// Broker name (`[brokers.<name>]`).
        broker: String,
        /// The variable.
        var: String,
        /// What it should hold (`API key id`, `API secret key`).
        what: &'static str,
    },
    /// The HTTP client could not be built.
    #[error("broker '{broker}': cannot build the HTTP client: {reason}")]
    Client {
        /// Broker name.
        broker: String,
        /// Why.
        reason: String,
    },
    /// Alpaca refused the credentials (401 or 403).
    #[error(
        "broker '{broker}': Alpaca refused the API key (HTTP {status}: {message}); check the key id \
         and secret and that they belong to this account (paper or live)"
    )]
    Unauthorized {
        /// Broker name.
        broker: String,
        /// HTTP status.
        status: u16,
        /// Alpaca's message.
        message: String,
    },
    /// Alpaca rejected the request (400, 404, 422, …) with its `{"code","message"}` body.
    #[error("broker '{broker}': Alpaca rejected {what} (HTTP {status}{}): {message}",
        code.map(|c| format!(", code {c}")).unwrap_or_default())]
    Rejected {
        /// Broker name.
        broker: String,
        /// What was asked (`GET /v2/stocks/bars`).
        what: String,
        /// HTTP status.
        status: u16,
        /// Alpaca's error code, when the body has one.
        code: Option<i64>,
        /// Alpaca's message (or the raw body).
        message: String,
    },
    /// Still rate-limited (429) after every retry.
    #[error("broker '{broker}': {what} still rate-limited (HTTP 429) after {attempts} attempts")]
    RateLimited {
        /// Broker name.
        broker: String,
        /// What was asked.
        what: String,
        /// Requests made.
        attempts: u32,
    },
    /// A server error (5xx) after every retry.
    #[error(
        "broker '{broker}': {what} failed with HTTP {status} after {attempts} attempts: {message}"
    )]
    Server {
        /// Broker name.
        broker: String,
        /// What was asked.
        what: String,
        /// Last HTTP status.
        status: u16,
        /// Last body.
        message: String,
        /// Requests made.
        attempts: u32,
    },
    /// No answer (connection refused, timeout, broken body) after every retry.
    #[error("broker '{broker}': {what} failed after {attempts} attempts: {reason}")]
    Transport {
        /// Broker name.
        broker: String,
        /// What was asked.
        what: String,
        /// Last error.
        reason: String,
        /// Requests made.
        attempts: u32,
    },
    /// The answer is not what the API reference describes.
    #[error("broker '{broker}': unexpected answer to {what}: {reason}")]
    Decode {
        /// Broker name.
        broker: String,
        /// What was asked.
        what: String,
        /// Why it could not be read.
        reason: String,
    },
}

/// Timeouts, retries and reconnection delays. The defaults suit the real service; tests
/// shorten them.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuning {
    /// Timeout of one HTTP request (connect, send, whole body).
    pub request_timeout: Duration,
    /// Retries of a request after a 429, a 5xx or a transport error (so `max_retries + 1`
    /// attempts in all).
    pub max_retries: u32,
    /// First delay before a retry (doubled after each one) when the server gives no hint.
    pub retry_backoff: Duration,
    /// Longest wait before a retry, even when `Retry-After` asks for more.
    pub max_retry_wait: Duration,
    /// `limit` of one bars page (Alpaca allows 1 to 10,000).
    pub page_limit: u32,
    /// First delay before reconnecting the websocket (doubled after each failure).
    pub reconnect_initial: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max: Duration,
    /// How often the websocket sends a ping.
    pub ping_interval: Duration,
    /// The websocket is considered dead when nothing (not even a pong) arrives for this long.
    pub idle_timeout: Duration,
    /// Longest wait for the websocket handshake and for each protocol answer (connected,
    /// authenticated).
    pub handshake_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            request_timeout: Duration::from_secs(30),
            max_retries: 5,
            retry_backoff: Duration::from_millis(500),
            max_retry_wait: Duration::from_secs(60),
            page_limit: 10_000,
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            handshake_timeout: Duration::from_secs(15),
        }
    }
}

/// A client of Alpaca's market-data API (and of the trading API's clock and calendar) for
/// one `[brokers.<name>]` account. Cheap to clone.
#[derive(Clone)]
pub struct AlpacaData {
    pub(crate) name: String,
    pub(crate) client: reqwest::Client,
    pub(crate) data_url: String,
    pub(crate) trading_url: String,
    pub(crate) stock_stream_url: String,
    pub(crate) crypto_stream_url: String,
    pub(crate) feed: AlpacaFeed,
    pub(crate) key: String,
    pub(crate) secret: String,
    pub(crate) tuning: Tuning,
}

impl fmt::Debug for AlpacaData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlpacaData")
            .field("name", &self.name)
            .field("data_url", &self.data_url)
            .field("trading_url", &self.trading_url)
            .field("stock_stream_url", &self.stock_stream_url)
            .field("crypto_stream_url", &self.crypto_stream_url)
            .field("feed", &self.feed)
            .field("key", &"<redacted>")
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The crypto stream URL on the same host as the stock stream URL:
/// `wss://stream.data.alpaca.markets/v2/iex` → `wss://stream.data.alpaca.markets/v1beta3/crypto/us`.
pub fn crypto_stream_url(stock_stream_url: &str) -> String {
    let url = stock_stream_url.trim_end_matches('/');
    let host_start = url.find("://").map(|i| i + 3).unwrap_or(0);
    let origin = match url[host_start..].find('/') {
        Some(i) => &url[..host_start + i],
        None => url,
    };
    format!("{origin}/v1beta3/crypto/us")
}

/// Alpaca's spelling of a timeframe (`1Min`, `1Day`, …).
pub fn timeframe_param(timeframe: Timeframe) -> &'static str {
    match timeframe {
        Timeframe::M1 => "1Min",
        Timeframe::M5 => "5Min",
        Timeframe::M15 => "15Min",
        Timeframe::M30 => "30Min",
        Timeframe::H1 => "1Hour",
        Timeframe::H4 => "4Hour",
        Timeframe::D1 => "1Day",
        Timeframe::W1 => "1Week",
    }
}

/// One bar as the REST API and the stream send it (`t` = period start).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct WireBar {
    pub(crate) t: DateTime<Utc>,
    pub(crate) o: f64,
    pub(crate) h: f64,
    pub(crate) l: f64,
    pub(crate) c: f64,
    #[serde(default)]
    pub(crate) v: f64,
}

impl WireBar {
    pub(crate) fn to_bar(&self) -> Bar {
        Bar {
            ts: self.t.timestamp(),
            open: self.o,
            high: self.h,
            low: self.l,
            close: self.c,
            volume: self.v,
        }
    }
}

#[derive(Deserialize)]
struct BarsPage {
    #[serde(default)]
    bars: Option<BTreeMap<String, Vec<WireBar>>>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

/// Alpaca's `{"code","message"}` (or `{"message"}`) error body; the raw text otherwise.
fn error_body(body: &str) -> (Option<i64>, String) {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody {
            code,
            message: Some(message),
        }) => (code, message),
        Ok(ErrorBody {
            code,
            message: None,
        }) => (code, body.trim().to_string()),
        Err(_) => {
            let text = body.trim();
            let text = if text.is_empty() {
                "(empty body)"
            } else {
                text
            };
            (None, text.chars().take(500).collect())
        }
    }
}

impl AlpacaData {
    /// A client for broker `name` with the given API key id and secret.
    ///
    /// Errors: [`DataError::Client`] when the HTTP client cannot be built.
    pub fn new(
        name: &str,
        settings: &AlpacaBroker,
        key: String,
        secret: String,
    ) -> Result<AlpacaData, DataError> {
        crate::install_tls_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("ztraded/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| DataError::Client {
                broker: name.to_string(),
                reason: e.to_string(),
            })?;
        let stock_stream_url = settings.data_stream_url();
        Ok(AlpacaData {
            name: name.to_string(),
            client,
            data_url: settings.data_url(),
            trading_url: settings.trading_url(),
            crypto_stream_url: crypto_stream_url(&stock_stream_url),
            stock_stream_url,
            feed: settings.feed,
            key,
            secret,
            tuning: Tuning::default(),
        })
    }

    /// A client whose key id and secret are read from the environment variables the
    /// settings name (`key_id_env`, `secret_key_env`).
    ///
    /// Errors: [`DataError::MissingEnv`] when a variable is unset or empty.
    pub fn from_env(name: &str, settings: &AlpacaBroker) -> Result<AlpacaData, DataError> {
        let read = |var: &str, what: &'static str| match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(DataError::MissingEnv {
                broker: name.to_string(),
                var: var.to_string(),
                what,
            }),
        };
        let key = read(&settings.key_id_env, "API key id")?;
        let secret = read(&settings.secret_key_env, "API secret key")?;
        AlpacaData::new(name, settings, key, secret)
    }

    /// Replaces the timeouts, retries and reconnection delays.
    pub fn with_tuning(mut self, tuning: Tuning) -> AlpacaData {
        self.tuning = tuning;
        self
    }

    /// Replaces the crypto stream URL (default: `/v1beta3/crypto/us` on the stock stream's
    /// host).
    pub fn with_crypto_stream_url(mut self, url: &str) -> AlpacaData {
        self.crypto_stream_url = url.to_string();
        self
    }

    /// The broker name this client serves.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The timeouts and delays in use.
    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// The stock and crypto websocket URLs.
    pub fn stream_urls(&self) -> (&str, &str) {
        (&self.stock_stream_url, &self.crypto_stream_url)
    }

    /// Historical bars of `symbols` from `start` to `end`, per symbol in ascending time
    /// order without duplicates, `ts` = period start. Every requested symbol is a key of the
    /// answer (an empty list when Alpaca has no bars). Stocks are split-adjusted and come
    /// from the configured feed; crypto symbols (`BTC/USD`) from the US crypto feed. Pages
    /// are followed until `next_page_token` is null.
    ///
    /// `timeframe` is normally `1m` or `1d`; the others map to Alpaca's `5Min` … `1Week`,
    /// aligned as Alpaca aligns them.
    pub async fn bars(
        &self,
        symbols: &[String],
        timeframe: Timeframe,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<BTreeMap<String, Vec<Bar>>, DataError> {
        let unique: BTreeSet<&String> = symbols.iter().collect();
        let mut merged: BTreeMap<String, BTreeMap<i64, Bar>> = unique
            .iter()
            .map(|s| ((*s).clone(), BTreeMap::new()))
            .collect();
        let (crypto, stocks): (Vec<&String>, Vec<&String>) =
            unique.into_iter().partition(|s| is_crypto(s));
        for (group, crypto) in [(stocks, false), (crypto, true)] {
            // Keep URLs reasonably short.
            for chunk in group.chunks(100) {
                self.bars_group(chunk, crypto, timeframe, start, end, &mut merged)
                    .await?;
            }
        }
        Ok(merged
            .into_iter()
            .map(|(s, bars)| (s, bars.into_values().collect()))
            .collect())
    }

    async fn bars_group(
        &self,
        symbols: &[&String],
        crypto: bool,
        timeframe: Timeframe,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        merged: &mut BTreeMap<String, BTreeMap<i64, Bar>>,
    ) -> Result<(), DataError> {
        if symbols.is_empty() {
            return Ok(());
        }
        let path = if crypto {
            "/v1beta3/crypto/us/bars"
        } else {
            "/v2/stocks/bars"
        };
        let url = format!("{}{path}", self.data_url);
        let joined = symbols
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let mut base: Vec<(&str, String)> = vec![
            ("symbols", joined),
            ("timeframe", timeframe_param(timeframe).to_string()),
            ("start", start.to_rfc3339_opts(SecondsFormat::Secs, true)),
            ("end", end.to_rfc3339_opts(SecondsFormat::Secs, true)),
            ("limit", self.tuning.page_limit.to_string()),
            ("sort", "asc".to_string()),
        ];
        if !crypto {
            base.push(("adjustment", "split".to_string()));
            base.push(("feed", self.feed.as_str().to_string()));
        }
        let mut token: Option<String> = None;
        let mut pages = 0u64;
        loop {
            let mut query = base.clone();
            if let Some(t) = &token {
                query.push(("page_token", t.clone()));
            }
            let page: BarsPage = self.get_json(&url, path, &query).await?;
            pages += 1;
            for (symbol, bars) in page.bars.unwrap_or_default() {
                let entry = merged.entry(symbol).or_default();
                for b in bars {
                    let bar = b.to_bar();
                    entry.insert(bar.ts, bar);
                }
            }
            let next = page.next_page_token.filter(|t| !t.is_empty());
            match next {
                None => break,
                Some(t) if token.as_deref() == Some(t.as_str()) => {
                    return Err(DataError::Decode {
                        broker: self.name.clone(),
                        what: format!("GET {path}"),
                        reason: format!("page {pages} repeats next_page_token '{t}'"),
                    });
                }
                Some(t) => token = Some(t),
            }
        }
        tracing::debug!(broker = %self.name, path, symbols = symbols.len(), pages, "bars fetched");
        Ok(())
    }

    /// `GET base+path?query` with the API key headers, decoding JSON. Retries 429 (waiting
    /// as `Retry-After` / `X-RateLimit-Reset` say), 5xx and transport errors with
    /// exponential backoff; 401/403 and other 4xx fail at once.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, DataError> {
        let what = format!("GET {path}");
        let tuning = &self.tuning;
        let mut backoff = tuning.retry_backoff;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let last = attempts > tuning.max_retries;
            let sent = self
                .client
                .get(url)
                .query(query)
                .header("APCA-API-KEY-ID", &self.key)
                .header("APCA-API-SECRET-KEY", &self.secret)
                .timeout(tuning.request_timeout)
                .send()
                .await;
            let wait = match sent {
                Err(e) => {
                    if last {
                        return Err(DataError::Transport {
                            broker: self.name.clone(),
                            what,
                            reason: e.to_string(),
                            attempts,
                        });
                    }
                    tracing::warn!(broker = %self.name, %what, attempts, "request failed: {e}; retrying");
                    backoff
                }
                Ok(resp) => {
                    let status = resp.status();
                    let hint = crate::broker::alpaca::client::rate_limit_wait(resp.headers());
                    let body = match resp.bytes().await {
                        Ok(b) => b,
                        Err(e) => {
                            if last {
                                return Err(DataError::Transport {
                                    broker: self.name.clone(),
                                    what,
                                    reason: format!("reading the body: {e}"),
                                    attempts,
                                });
                            }
                            tracing::warn!(broker = %self.name, %what, "reading the body failed: {e}; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(tuning.max_retry_wait);
                            continue;
                        }
                    };
                    if status.is_success() {
                        return serde_json::from_slice(&body).map_err(|e| DataError::Decode {
                            broker: self.name.clone(),
                            what,
                            reason: e.to_string(),
                        });
                    }
                    let (code, message) = error_body(&String::from_utf8_lossy(&body));
                    match status {
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                            return Err(DataError::Unauthorized {
                                broker: self.name.clone(),
                                status: status.as_u16(),
                                message,
                            });
                        }
                        StatusCode::TOO_MANY_REQUESTS => {
                            if last {
                                return Err(DataError::RateLimited {
                                    broker: self.name.clone(),
                                    what,
                                    attempts,
                                });
                            }
                            let wait = hint.unwrap_or(backoff);
                            tracing::warn!(broker = %self.name, %what, attempts, wait_ms = wait.as_millis() as u64, "rate-limited (429); waiting");
                            wait
                        }
                        s if s.is_server_error() => {
                            if last {
                                return Err(DataError::Server {
                                    broker: self.name.clone(),
                                    what,
                                    status: s.as_u16(),
                                    message,
                                    attempts,
                                });
                            }
                            tracing::warn!(broker = %self.name, %what, attempts, status = s.as_u16(), "server error: {message}; retrying");
                            backoff
                        }
                        s => {
                            return Err(DataError::Rejected {
                                broker: self.name.clone(),
                                what,
                                status: s.as_u16(),
                                code,
                                message,
                            });
                        }
                    }
                }
            };
            tokio::time::sleep(wait.min(tuning.max_retry_wait)).await;
            backoff = (backoff * 2).min(tuning.max_retry_wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::alpaca::client::rate_limit_wait;
    use reqwest::header::HeaderMap;

    #[test]
    fn crypto_stream_url_keeps_the_host() {
        assert_eq!(
            crypto_stream_url("wss://stream.data.alpaca.markets/v2/iex"),
            "wss://stream.data.alpaca.markets/v1beta3/crypto/us"
        );
        assert_eq!(
            crypto_stream_url("ws://127.0.0.1:9000"),
            "ws://127.0.0.1:9000/v1beta3/crypto/us"
        );
    }

    #[test]
    fn error_bodies_are_read() {
        assert_eq!(
            error_body(r#"{"code":42210000,"message":"invalid timeframe"}"#),
            (Some(42210000), "invalid timeframe".to_string())
        );
        assert_eq!(
            error_body(r#"{"message":"bad"}"#),
            (None, "bad".to_string())
        );
        assert_eq!(error_body("oops"), (None, "oops".to_string()));
    }

    #[test]
    fn rate_limit_headers() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(rate_limit_wait(&h), Some(Duration::from_secs(2)));
        let mut h = HeaderMap::new();
        let reset = Utc::now().timestamp() + 3;
        h.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
        let w = rate_limit_wait(&h).unwrap();
        assert!(w >= Duration::from_secs(2) && w <= Duration::from_secs(3));
        assert_eq!(rate_limit_wait(&HeaderMap::new()), None);
        // A header asking for years is cut to the bound, not a stall or a panic.
        let mut h = HeaderMap::new();
        h.insert("retry-after", "1e30".parse().unwrap());
        assert_eq!(
            rate_limit_wait(&h),
            Some(crate::broker::alpaca::client::MAX_RATE_LIMIT_WAIT)
        );
    }
}
