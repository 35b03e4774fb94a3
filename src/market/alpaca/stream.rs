//! Live minute bars over Alpaca's market-data websocket, with reconnection and a REST
//! backfill of the minutes missed while disconnected.
//!
//! Protocol (Market Data API v2, JSON text frames, each an array of messages): the server
//! greets with `[{"T":"success","msg":"connected"}]`; the client sends
//! `{"action":"auth","key":..,"secret":..}` and gets `[{"T":"success","msg":"authenticated"}]`
//! or `[{"T":"error","code":402,"msg":"auth failed"}]` (406: connection limit exceeded, 409:
//! insufficient subscription); `{"action":"subscribe","bars":[..]}` and
//! `{"action":"unsubscribe","bars":[..]}` are confirmed by a `"T":"subscription"` message;
//! bars arrive as `"T":"b"` messages. Corrections of the last minute (`"T":"u"`) come on the
//! `updatedBars` channel, which is subscribed together with `bars`.

use super::is_crypto;
use super::rest::AlpacaData;
use crate::market::{Bar, Timeframe};
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Which of Alpaca's two market-data streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    /// US stocks (`/v2/iex` or `/v2/sip`).
    Stocks,
    /// US crypto (`/v1beta3/crypto/us`).
    Crypto,
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamKind::Stocks => "stocks",
            StreamKind::Crypto => "crypto",
        })
    }
}

/// What happened to a stream connection; the caller logs and counts these.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamStatus {
    /// Connected and authenticated.
    Connected {
        /// Which stream.
        stream: StreamKind,
    },
    /// The server confirmed the bar subscriptions (the whole current list).
    Subscribed {
        /// Which stream.
        stream: StreamKind,
        /// Symbols whose bars are subscribed.
        bars: Vec<String>,
    },
    /// The connection was lost or could not be made; a reconnection follows.
    Disconnected {
        /// Which stream.
        stream: StreamKind,
        /// Why.
        reason: String,
    },
    /// The server refused the credentials (code 402).
    AuthFailed {
        /// Which stream.
        stream: StreamKind,
        /// Alpaca's code.
        code: Option<i64>,
        /// Alpaca's message.
        message: String,
    },
    /// Another error message from the server (406 connection limit exceeded, 409
    /// insufficient subscription, 405 symbol limit exceeded, …).
    Error {
        /// Which stream.
        stream: StreamKind,
        /// Alpaca's code.
        code: Option<i64>,
        /// Alpaca's message.
        message: String,
    },
    /// After a reconnection, minutes missed meanwhile were fetched over REST and delivered.
    Backfilled {
        /// Which stream.
        stream: StreamKind,
        /// How many bars were delivered from REST.
        bars: usize,
    },
    /// The REST backfill after a reconnection failed; the missed minutes stay missing.
    BackfillFailed {
        /// Which stream.
        stream: StreamKind,
        /// Why.
        reason: String,
    },
}

/// What [`AlpacaData::stream`] delivers.
#[derive(Clone, Debug, PartialEq)]
pub enum LiveEvent {
    /// A closed 1-minute bar (`ts` = minute start). Each minute of a symbol is delivered at
    /// most once, in ascending order.
    Bar {
        /// The symbol (`AAPL`, `BTC/USD`).
        symbol: String,
        /// The bar.
        bar: Bar,
    },
    /// A connection event.
    Status(StreamStatus),
}

/// One message of a frame; unknown fields and types are ignored.
#[derive(Deserialize)]
struct WireMsg {
    #[serde(rename = "T")]
    kind: String,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    code: Option<i64>,
    #[serde(rename = "S", default)]
    symbol: Option<String>,
    #[serde(default)]
    bars: Option<Vec<String>>,
    #[serde(default)]
    t: Option<DateTime<Utc>>,
    #[serde(default)]
    o: Option<f64>,
    #[serde(default)]
    h: Option<f64>,
    #[serde(default)]
    l: Option<f64>,
    #[serde(default)]
    c: Option<f64>,
    #[serde(default)]
    v: Option<f64>,
}

impl WireMsg {
    fn bar(&self) -> Option<Bar> {
        Some(Bar {
            ts: self.t?.timestamp(),
            open: self.o?,
            high: self.h?,
            low: self.l?,
            close: self.c?,
            volume: self.v.unwrap_or(0.0),
        })
    }
}

/// The messages of one text frame (an array, or a single object).
fn parse_frame(text: &str) -> Vec<WireMsg> {
    let values: Vec<serde_json::Value> = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(a)) => a,
        Ok(v @ serde_json::Value::Object(_)) => vec![v],
        _ => {
            tracing::debug!("alpaca stream: unreadable frame: {text:.200}");
            return Vec::new();
        }
    };
    values
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

enum SessionEnd {
    /// The receiver of the events was dropped: stop for good.
    ReceiverGone,
    /// The connection ended; reconnect. `authenticated`: it got past authentication (the
    /// backoff restarts).
    Lost { reason: String, authenticated: bool },
}

/// What survives reconnections: the last minute delivered per symbol.
#[derive(Default)]
struct Delivered {
    last: HashMap<String, i64>,
}

fn of_kind(kind: StreamKind, set: &BTreeSet<String>) -> BTreeSet<String> {
    set.iter()
        .filter(|s| is_crypto(s) == (kind == StreamKind::Crypto))
        .cloned()
        .collect()
}

fn lost(reason: impl Into<String>, authenticated: bool) -> SessionEnd {
    SessionEnd::Lost {
        reason: reason.into(),
        authenticated,
    }
}

impl AlpacaData {
    /// Streams closed 1-minute bars of the symbols in the watched set (stocks and crypto on
    /// their two websockets), following changes of the set, until the returned receiver is
    /// dropped. Spawns the connection tasks (needs a Tokio runtime).
    ///
    /// Each stream connects, authenticates and subscribes to the current set, subscribes and
    /// unsubscribes as the set changes, and reconnects forever with a capped exponential
    /// backoff ([`super::Tuning`]). After a reconnection it fetches the minutes each symbol
    /// missed (from its last delivered minute to now) over REST. Every minute is delivered
    /// once and in order per symbol: duplicates and minutes older than the last delivered
    /// are dropped; a `"u"` correction of a minute not yet delivered is delivered as the
    /// bar, a correction of a delivered minute is ignored (logged at debug).
    pub fn stream(&self, symbols: watch::Receiver<BTreeSet<String>>) -> mpsc::Receiver<LiveEvent> {
        let (tx, rx) = mpsc::channel(4096);
        for kind in [StreamKind::Stocks, StreamKind::Crypto] {
            let me = self.clone();
            let tx = tx.clone();
            let symbols = symbols.clone();
            tokio::spawn(async move { me.run_stream(kind, symbols, tx).await });
        }
        rx
    }

    async fn run_stream(
        self,
        kind: StreamKind,
        mut symbols: watch::Receiver<BTreeSet<String>>,
        tx: mpsc::Sender<LiveEvent>,
    ) {
        let url = match kind {
            StreamKind::Stocks => self.stock_stream_url.clone(),
            StreamKind::Crypto => self.crypto_stream_url.clone(),
        };
        let mut delivered = Delivered::default();
        let mut watch_open = true;
        let mut delay = self.tuning.reconnect_initial;
        loop {
            // Connect only when there is something to subscribe to.
            while of_kind(kind, &symbols.borrow_and_update()).is_empty() {
                if watch_open {
                    tokio::select! {
                        r = symbols.changed() => watch_open = r.is_ok(),
                        _ = tx.closed() => return,
                    }
                } else {
                    tx.closed().await;
                    return;
                }
            }
            let end = self
                .session(
                    kind,
                    &url,
                    &mut symbols,
                    &mut watch_open,
                    &tx,
                    &mut delivered,
                )
                .await;
            match end {
                SessionEnd::ReceiverGone => return,
                SessionEnd::Lost {
                    reason,
                    authenticated,
                } => {
                    tracing::warn!(broker = %self.name, stream = %kind, "market-data stream lost: {reason}");
                    let status = StreamStatus::Disconnected {
                        stream: kind,
                        reason,
                    };
                    if tx.send(LiveEvent::Status(status)).await.is_err() {
                        return;
                    }
                    if authenticated {
                        delay = self.tuning.reconnect_initial;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = tx.closed() => return,
            }
            delay = (delay * 2).min(self.tuning.reconnect_max);
        }
    }

    /// Reads the next text frame during the handshake, within the handshake timeout.
    async fn next_messages(&self, ws: &mut Ws) -> Result<Vec<WireMsg>, String> {
        let deadline = Instant::now() + self.tuning.handshake_timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, ws.next())
                .await
                .map_err(|_| "timed out waiting for the server".to_string())?;
            match next {
                None => return Err("connection closed by the server".to_string()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(Message::Text(t))) => return Ok(parse_frame(t.as_str())),
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!(
                        "closed by the server{}",
                        frame.map(|f| format!(": {}", f.reason)).unwrap_or_default()
                    ));
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Waits for `[{"T":"success","msg":<want>}]`; an error message ends the session.
    async fn expect_success(
        &self,
        kind: StreamKind,
        ws: &mut Ws,
        want: &str,
        tx: &mpsc::Sender<LiveEvent>,
    ) -> Result<(), SessionEnd> {
        loop {
            let msgs = self
                .next_messages(ws)
                .await
                .map_err(|e| lost(format!("waiting for '{want}': {e}"), false))?;
            for m in msgs {
                match m.kind.as_str() {
                    "success" if m.msg.as_deref() == Some(want) => return Ok(()),
                    "error" => {
                        let message = m.msg.unwrap_or_default();
                        // 401 not authenticated, 402 auth failed; 406 (connection limit) and
                        // 409 (insufficient subscription) are other errors.
                        let status = if matches!(m.code, Some(401 | 402)) {
                            StreamStatus::AuthFailed {
                                stream: kind,
                                code: m.code,
                                message: message.clone(),
                            }
                        } else {
                            StreamStatus::Error {
                                stream: kind,
                                code: m.code,
                                message: message.clone(),
                            }
                        };
                        tracing::error!(broker = %self.name, stream = %kind, code = ?m.code, "market-data stream refused: {message}");
                        if tx.send(LiveEvent::Status(status)).await.is_err() {
                            return Err(SessionEnd::ReceiverGone);
                        }
                        let code = m.code.map(|c| format!(" {c}")).unwrap_or_default();
                        return Err(lost(format!("error{code}: {message}"), false));
                    }
                    _ => {}
                }
            }
        }
    }

    async fn session(
        &self,
        kind: StreamKind,
        url: &str,
        symbols: &mut watch::Receiver<BTreeSet<String>>,
        watch_open: &mut bool,
        tx: &mpsc::Sender<LiveEvent>,
        delivered: &mut Delivered,
    ) -> SessionEnd {
        crate::install_tls_provider();
        let connect = tokio::time::timeout(
            self.tuning.handshake_timeout,
            tokio_tungstenite::connect_async(url),
        )
        .await;
        let mut ws = match connect {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return lost(format!("connecting to {url}: {e}"), false),
            Err(_) => return lost(format!("connecting to {url}: timed out"), false),
        };
        if let Err(end) = self.expect_success(kind, &mut ws, "connected", tx).await {
            return end;
        }
        let auth = serde_json::json!({"action": "auth", "key": self.key, "secret": self.secret});
        if let Err(e) = ws.send(Message::text(auth.to_string())).await {
            return lost(format!("sending auth: {e}"), false);
        }
        if let Err(end) = self
            .expect_success(kind, &mut ws, "authenticated", tx)
            .await
        {
            return end;
        }
        tracing::info!(broker = %self.name, stream = %kind, "market-data stream connected");
        if tx
            .send(LiveEvent::Status(StreamStatus::Connected { stream: kind }))
            .await
            .is_err()
        {
            return SessionEnd::ReceiverGone;
        }
        let mut subscribed = of_kind(kind, &symbols.borrow_and_update());
        // Symbols dropped from the set while disconnected start afresh if added again.
        delivered.last.retain(|s, _| subscribed.contains(s));
        if !subscribed.is_empty() {
            let sub = serde_json::json!({"action": "subscribe", "bars": subscribed, "updatedBars": subscribed});
            if let Err(e) = ws.send(Message::text(sub.to_string())).await {
                return lost(format!("sending subscribe: {e}"), true);
            }
        }
        // Minutes missed while disconnected. Live bars arriving meanwhile wait in the socket
        // and are deduplicated against what the backfill delivered.
        if let Err(end) = self.backfill(kind, &subscribed, tx, delivered).await {
            return end;
        }

        let mut ping = tokio::time::interval(self.tuning.ping_interval);
        ping.tick().await;
        let mut last_seen = Instant::now();
        loop {
            let idle_deadline = last_seen + self.tuning.idle_timeout;
            tokio::select! {
                msg = ws.next() => {
                    last_seen = Instant::now();
                    match msg {
                        None => return lost("connection closed by the server", true),
                        Some(Err(e)) => return lost(e.to_string(), true),
                        Some(Ok(Message::Text(text))) => {
                            for m in parse_frame(text.as_str()) {
                                if let Err(end) = self.handle(kind, m, &subscribed, tx, delivered).await {
                                    return end;
                                }
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            return lost(
                                format!(
                                    "closed by the server{}",
                                    frame.map(|f| format!(": {} {}", u16::from(f.code), f.reason)).unwrap_or_default()
                                ),
                                true,
                            );
                        }
                        Some(Ok(_)) => {}
                    }
                }
                r = symbols.changed(), if *watch_open => {
                    if r.is_err() {
                        *watch_open = false;
                        continue;
                    }
                    let want = of_kind(kind, &symbols.borrow_and_update());
                    let add: Vec<&String> = want.difference(&subscribed).collect();
                    let remove: Vec<&String> = subscribed.difference(&want).collect();
                    if !remove.is_empty() {
                        let m = serde_json::json!({"action": "unsubscribe", "bars": remove, "updatedBars": remove});
                        if let Err(e) = ws.send(Message::text(m.to_string())).await {
                            return lost(format!("sending unsubscribe: {e}"), true);
                        }
                    }
                    if !add.is_empty() {
                        let m = serde_json::json!({"action": "subscribe", "bars": add, "updatedBars": add});
                        if let Err(e) = ws.send(Message::text(m.to_string())).await {
                            return lost(format!("sending subscribe: {e}"), true);
                        }
                    }
                    // A symbol dropped and added again later starts afresh.
                    for s in &remove {
                        delivered.last.remove(*s);
                    }
                    subscribed = want;
                }
                _ = ping.tick() => {
                    if let Err(e) = ws.send(Message::Ping(Vec::new().into())).await {
                        return lost(format!("sending ping: {e}"), true);
                    }
                }
                _ = tokio::time::sleep_until(idle_deadline) => {
                    return lost(format!("nothing received for {:?}", self.tuning.idle_timeout), true);
                }
                _ = tx.closed() => {
                    let _ = ws.close(None).await;
                    return SessionEnd::ReceiverGone;
                }
            }
        }
    }

    async fn handle(
        &self,
        kind: StreamKind,
        m: WireMsg,
        subscribed: &BTreeSet<String>,
        tx: &mpsc::Sender<LiveEvent>,
        delivered: &mut Delivered,
    ) -> Result<(), SessionEnd> {
        match m.kind.as_str() {
            "b" | "u" => {
                let (Some(symbol), Some(bar)) = (m.symbol.as_ref(), m.bar()) else {
                    tracing::debug!(stream = %kind, "alpaca stream: bar message without symbol or fields");
                    return Ok(());
                };
                if !subscribed.contains(symbol) {
                    return Ok(());
                }
                if let Some(&last) = delivered.last.get(symbol)
                    && bar.ts <= last
                {
                    tracing::debug!(stream = %kind, symbol, ts = bar.ts, last, kind = %m.kind, "alpaca stream: bar of a delivered minute ignored");
                    return Ok(());
                }
                deliver(tx, delivered, symbol, bar).await
            }
            "subscription" => {
                let status = StreamStatus::Subscribed {
                    stream: kind,
                    bars: m.bars.unwrap_or_default(),
                };
                send(tx, LiveEvent::Status(status)).await
            }
            "error" => {
                let message = m.msg.unwrap_or_default();
                tracing::warn!(broker = %self.name, stream = %kind, code = ?m.code, "market-data stream error: {message}");
                let status = StreamStatus::Error {
                    stream: kind,
                    code: m.code,
                    message,
                };
                send(tx, LiveEvent::Status(status)).await
            }
            _ => Ok(()),
        }
    }

    /// Fetches and delivers, per subscribed symbol with a delivered minute, the closed minutes
    /// after it up to now.
    async fn backfill(
        &self,
        kind: StreamKind,
        subscribed: &BTreeSet<String>,
        tx: &mpsc::Sender<LiveEvent>,
        delivered: &mut Delivered,
    ) -> Result<(), SessionEnd> {
        let known: Vec<(String, i64)> = subscribed
            .iter()
            .filter_map(|s| delivered.last.get(s).map(|t| (s.clone(), *t)))
            .collect();
        let Some(from) = known.iter().map(|(_, t)| *t).min() else {
            return Ok(());
        };
        let now = Utc::now();
        let Some(start) = DateTime::<Utc>::from_timestamp(from + 60, 0) else {
            return Ok(());
        };
        if start >= now {
            return Ok(());
        }
        let names: Vec<String> = known.iter().map(|(s, _)| s.clone()).collect();
        match self.bars(&names, Timeframe::M1, start, now).await {
            Ok(bars) => {
                let mut count = 0;
                for (symbol, bars) in bars {
                    for bar in bars {
                        let last = delivered.last.get(&symbol).copied().unwrap_or(i64::MIN);
                        // Only closed minutes; the live stream delivers the current one.
                        if bar.ts <= last || bar.ts + 60 > now.timestamp() {
                            continue;
                        }
                        deliver(tx, delivered, &symbol, bar).await?;
                        count += 1;
                    }
                }
                tracing::info!(broker = %self.name, stream = %kind, bars = count, "market-data backfill after reconnect");
                send(
                    tx,
                    LiveEvent::Status(StreamStatus::Backfilled {
                        stream: kind,
                        bars: count,
                    }),
                )
                .await
            }
            Err(e) => {
                tracing::warn!(broker = %self.name, stream = %kind, "market-data backfill failed: {e}");
                send(
                    tx,
                    LiveEvent::Status(StreamStatus::BackfillFailed {
                        stream: kind,
                        reason: e.to_string(),
                    }),
                )
                .await
            }
        }
    }
}

async fn send(tx: &mpsc::Sender<LiveEvent>, ev: LiveEvent) -> Result<(), SessionEnd> {
    tx.send(ev).await.map_err(|_| SessionEnd::ReceiverGone)
}

async fn deliver(
    tx: &mpsc::Sender<LiveEvent>,
    delivered: &mut Delivered,
    symbol: &str,
    bar: Bar,
) -> Result<(), SessionEnd> {
    delivered.last.insert(symbol.to_string(), bar.ts);
    send(
        tx,
        LiveEvent::Bar {
            symbol: symbol.to_string(),
            bar,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_hold_several_messages_and_unknown_types() {
        let msgs = parse_frame(
            r#"[{"T":"b","S":"AAPL","o":1,"h":2,"l":0.5,"c":1.5,"v":100,"t":"2024-01-02T14:30:00Z","n":3,"vw":1.2},
                {"T":"q","S":"AAPL","bp":1},
                {"T":"u","S":"MSFT","o":1,"h":1,"l":1,"c":1,"v":1,"t":"2024-01-02T14:31:00Z"}]"#,
        );
        assert_eq!(msgs.len(), 3);
        let b = msgs[0].bar().unwrap();
        assert_eq!(b.ts, 1_704_205_800);
        assert_eq!(
            (b.open, b.high, b.low, b.close, b.volume),
            (1., 2., 0.5, 1.5, 100.)
        );
        assert!(msgs[1].bar().is_none());
        assert_eq!(msgs[2].kind, "u");
        assert!(parse_frame("not json").is_empty());
    }
}
