//! Interactive Brokers market data through TWS / IB Gateway (`[market_data] source =
//! "ibkr"`): historical bars for the warm-up ([`IbkrData::bars`], `reqHistoricalData`,
//! trades, regular hours) and live minute bars ([`IbkrData::stream`]) made from IB's
//! 5-second real-time bars (`reqRealTimeBars`), aggregated per minute by the same
//! [`Resampler`] that resamples every other feed.
//!
//! The data uses its own API connection, with client id `client_id + 1` of the broker it
//! names (a gateway serves one connection per client id; the broker's own is `client_id`).
//! A connection that drops is made again with backoff; the minutes missed meanwhile are
//! read back over `reqHistoricalData` before the real-time bars resume, so a reconnect
//! leaves no gap. Historical requests are paced (IB allows about 60 in ten minutes and no
//! identical request within 15 s): one at a time, [`HISTORICAL_SPACING`] apart.

pub mod calendar;

pub use calendar::IbkrCalendar;

use crate::config::settings::IbkrBroker as IbkrSettings;
use crate::market::alpaca::{LiveEvent, StreamKind, StreamStatus};
use crate::market::resample::{Resampler, resample};
use crate::market::{Bar, Timeframe};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use ibapi::Client;
use ibapi::contracts::Contract;
use ibapi::market_data::TradingHours;
use ibapi::market_data::historical::{BarSize, BarTimestamp, WhatToShow};
use ibapi::market_data::realtime::WhatToShow as RealtimeShow;
use ibapi::subscriptions::SubscriptionItem;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, watch};

/// The least time between two historical-data requests.
pub const HISTORICAL_SPACING: Duration = Duration::from_millis(250);

/// A market-data failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IbkrDataError {
    /// The gateway could not be reached or dropped the request.
    #[error("ibkr market data ({address}): {reason}")]
    Unavailable {
        /// `host:port`.
        address: String,
        /// What failed.
        reason: String,
    },
}

/// IB market data of one gateway login.
#[derive(Clone)]
pub struct IbkrData {
    address: String,
    client_id: i32,
    client: Arc<Mutex<Option<Arc<Client>>>>,
    pacing: Arc<Mutex<tokio::time::Instant>>,
    reconnect_max: Duration,
}

impl std::fmt::Debug for IbkrData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IbkrData")
            .field("address", &self.address)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn bar_size(tf: Timeframe) -> BarSize {
    match tf {
        Timeframe::M1 => BarSize::Min,
        Timeframe::M5 => BarSize::Min5,
        Timeframe::M15 => BarSize::Min15,
        Timeframe::M30 => BarSize::Min30,
        Timeframe::H1 => BarSize::Hour,
        Timeframe::H4 => BarSize::Hour4,
        Timeframe::D1 | Timeframe::W1 => BarSize::Day,
    }
}

fn offset(t: DateTime<Utc>) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn bar_of(b: &ibapi::market_data::historical::Bar, tz: chrono_tz::Tz) -> Bar {
    let ts = match b.date {
        BarTimestamp::DateTime(t) => t.unix_timestamp(),
        BarTimestamp::Date(d) => {
            // A daily bar: the trading day's midnight in the market's zone.
            let (y, m, day) = (d.year(), d.month() as u32, d.day() as u32);
            chrono::NaiveDate::from_ymd_opt(y, m, day)
                .and_then(|n| n.and_hms_opt(0, 0, 0))
                .and_then(|n| n.and_local_timezone(tz).earliest())
                .map(|t| t.timestamp())
                .unwrap_or_default()
        }
    };
    Bar {
        ts,
        open: b.open,
        high: b.high,
        low: b.low,
        close: b.close,
        volume: b.volume,
    }
}

impl IbkrData {
    /// The market data of broker `[brokers.<name>]` (its host and port, client id + 1).
    pub fn new(settings: &IbkrSettings) -> IbkrData {
        IbkrData {
            address: format!("{}:{}", settings.host, settings.port),
            client_id: settings.client_id.saturating_add(1),
            client: Arc::new(Mutex::new(None)),
            pacing: Arc::new(Mutex::new(tokio::time::Instant::now())),
            reconnect_max: Duration::from_secs(60),
        }
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> IbkrDataError {
        IbkrDataError::Unavailable {
            address: self.address.clone(),
            reason: reason.to_string(),
        }
    }

    /// The connected client, connecting when there is none (or it dropped).
    async fn client(&self) -> Result<Arc<Client>, IbkrDataError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref()
            && c.is_connected()
        {
            return Ok(c.clone());
        }
        let c = Client::builder()
            .address(self.address.clone())
            .client_id(self.client_id)
            .max_reconnect_attempts(0)
            .rate_limiter(ibapi::RateLimiter::per_second(
                crate::broker::ibkr::MESSAGES_PER_SECOND,
            ))
            .connect()
            .await
            .map_err(|e| self.unavailable(format!("connect: {e}")))?;
        let c = Arc::new(c);
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn forget(&self) {
        if let Some(c) = self.client.lock().await.take() {
            c.disconnect().await;
        }
    }

    /// The regular sessions IB reports for `symbol` (its contract details' liquid hours,
    /// about a month ahead with the gateway's default settings).
    ///
    /// # Errors
    /// [`IbkrDataError::Unavailable`] when the gateway cannot be reached or knows no such
    /// stock.
    pub async fn calendar(&self, symbol: &str) -> Result<IbkrCalendar, IbkrDataError> {
        let client = self.client().await?;
        let contract = Contract::stock(symbol).build();
        let details = client
            .contract_details(&contract)
            .await
            .map_err(|e| self.unavailable(format!("contract details of {symbol}: {e}")))?;
        let Some(d) = details.into_iter().next() else {
            return Err(self.unavailable(format!("no contract details for {symbol}")));
        };
        Ok(IbkrCalendar::parse(&d.liquid_hours, &d.time_zone_id))
    }

    /// Bars of `timeframe` for `symbols` from `start` to `end` (split-adjusted trades,
    /// regular hours), ascending, keyed by symbol; weekly bars resampled from daily ones
    /// in `tz`. A symbol IB has no data for is left out.
    ///
    /// # Errors
    /// [`IbkrDataError::Unavailable`] when the gateway cannot be reached.
    pub async fn bars(
        &self,
        symbols: &[String],
        timeframe: Timeframe,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        tz: chrono_tz::Tz,
    ) -> Result<BTreeMap<String, Vec<Bar>>, IbkrDataError> {
        let mut out = BTreeMap::new();
        for symbol in symbols {
            let bars = self.history(symbol, timeframe, start, end, tz).await?;
            if !bars.is_empty() {
                out.insert(symbol.clone(), bars);
            }
        }
        Ok(out)
    }

    async fn history(
        &self,
        symbol: &str,
        timeframe: Timeframe,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        tz: chrono_tz::Tz,
    ) -> Result<Vec<Bar>, IbkrDataError> {
        {
            let mut next = self.pacing.lock().await;
            tokio::time::sleep_until(*next).await;
            *next = tokio::time::Instant::now() + HISTORICAL_SPACING;
        }
        let client = self.client().await?;
        let contract = Contract::stock(symbol.replace('.', " ").as_str()).build();
        let answer = client
            .historical_data(&contract, bar_size(timeframe))
            .what_to_show(WhatToShow::Trades)
            .trading_hours(TradingHours::Regular)
            .between(offset(start), offset(end))
            .fetch()
            .await;
        let data = match answer {
            Ok(d) => d,
            Err(e) if e.is_connection_lost() => {
                self.forget().await;
                return Err(self.unavailable(format!("historical bars of {symbol}: {e}")));
            }
            Err(e) => {
                tracing::warn!(%symbol, timeframe = timeframe.as_str(), error = %e, "ibkr historical bars refused");
                return Ok(Vec::new());
            }
        };
        let mut bars: Vec<Bar> = data.bars.iter().map(|b| bar_of(b, tz)).collect();
        bars.sort_by_key(|b| b.ts);
        bars.dedup_by_key(|b| b.ts);
        bars.retain(|b| b.ts >= start.timestamp() && b.ts < end.timestamp());
        if timeframe == Timeframe::W1 {
            bars = resample(&bars, Timeframe::D1, Timeframe::W1, tz)
                .map_err(|e| self.unavailable(format!("weekly bars of {symbol}: {e}")))?;
        }
        Ok(bars)
    }

    /// Live minute bars of the symbols `symbols` holds (subscriptions follow it), made from
    /// 5-second real-time bars; a minute is sent when its last 5 seconds arrive (or the next
    /// minute's first). Reconnects with backoff and backfills the missed minutes.
    pub fn stream(&self, symbols: watch::Receiver<BTreeSet<String>>) -> mpsc::Receiver<LiveEvent> {
        let (tx, rx) = mpsc::channel(1024);
        let data = self.clone();
        tokio::spawn(async move { data.run_stream(symbols, tx).await });
        rx
    }

    async fn run_stream(
        self,
        mut symbols: watch::Receiver<BTreeSet<String>>,
        tx: mpsc::Sender<LiveEvent>,
    ) {
        let mut last_minute: BTreeMap<String, i64> = BTreeMap::new();
        let mut delay = Duration::from_millis(500);
        loop {
            let client = match self.client().await {
                Ok(c) => {
                    delay = Duration::from_millis(500);
                    c
                }
                Err(e) => {
                    let _ = tx
                        .send(LiveEvent::Status(StreamStatus::Disconnected {
                            stream: StreamKind::Stocks,
                            reason: e.to_string(),
                        }))
                        .await;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.reconnect_max);
                    continue;
                }
            };
            let _ = tx
                .send(LiveEvent::Status(StreamStatus::Connected {
                    stream: StreamKind::Stocks,
                }))
                .await;
            let reason = self
                .serve_stream(&client, &mut symbols, &tx, &mut last_minute)
                .await;
            if tx.is_closed() {
                return;
            }
            tracing::warn!(address = %self.address, %reason, "ibkr market data connection lost; reconnecting");
            let _ = tx
                .send(LiveEvent::Status(StreamStatus::Disconnected {
                    stream: StreamKind::Stocks,
                    reason,
                }))
                .await;
            self.forget().await;
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection: subscribe, backfill what a previous connection missed, forward
    /// minutes until the connection (or the receiver) goes.
    async fn serve_stream(
        &self,
        client: &Arc<Client>,
        symbols: &mut watch::Receiver<BTreeSet<String>>,
        tx: &mpsc::Sender<LiveEvent>,
        last_minute: &mut BTreeMap<String, i64>,
    ) -> String {
        let (bars_tx, mut bars_rx) = mpsc::channel::<Result<(String, Bar), String>>(1024);
        let mut tasks: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
        let mut minutes: BTreeMap<String, Resampler> = BTreeMap::new();
        let result = loop {
            // Subscriptions follow the wanted symbols.
            let wanted = symbols.borrow_and_update().clone();
            tasks.retain(|s, t| {
                if wanted.contains(s) {
                    true
                } else {
                    t.abort();
                    false
                }
            });
            minutes.retain(|s, _| wanted.contains(s));
            let new: Vec<String> = wanted
                .iter()
                .filter(|s| !tasks.contains_key(*s))
                .cloned()
                .collect();
            for symbol in &new {
                // Minutes a previous connection missed, before the live ones.
                if let Some(&last) = last_minute.get(symbol) {
                    let now = Utc::now();
                    let from = DateTime::<Utc>::from_timestamp(last + 60, 0).unwrap_or(now);
                    let to =
                        DateTime::<Utc>::from_timestamp(now.timestamp() - now.timestamp() % 60, 0)
                            .unwrap_or(now);
                    if from < to {
                        match self
                            .history(symbol, Timeframe::M1, from, to, chrono_tz::UTC)
                            .await
                        {
                            Ok(bars) => {
                                tracing::info!(%symbol, minutes = bars.len(), "ibkr minutes missed while disconnected backfilled");
                                for bar in bars {
                                    last_minute.insert(symbol.clone(), bar.ts);
                                    if tx
                                        .send(LiveEvent::Bar {
                                            symbol: symbol.clone(),
                                            bar,
                                        })
                                        .await
                                        .is_err()
                                    {
                                        return "receiver gone".into();
                                    }
                                }
                            }
                            Err(e) => tracing::warn!(%symbol, error = %e, "ibkr backfill failed"),
                        }
                    }
                }
                let client = client.clone();
                let sym = symbol.clone();
                let out = bars_tx.clone();
                tasks.insert(
                    symbol.clone(),
                    tokio::spawn(async move {
                        let contract = Contract::stock(sym.replace('.', " ").as_str()).build();
                        let sub = client
                            .realtime_bars(&contract)
                            .what_to_show(RealtimeShow::Trades)
                            .trading_hours(TradingHours::Regular)
                            .subscribe()
                            .await;
                        let mut sub = match sub {
                            Ok(s) => s,
                            Err(e) => {
                                let _ = out.send(Err(format!("real-time bars of {sym}: {e}"))).await;
                                return;
                            }
                        };
                        while let Some(item) = sub.next().await {
                            match item {
                                Ok(SubscriptionItem::Data(b)) => {
                                    let bar = Bar {
                                        ts: b.date.unix_timestamp(),
                                        open: b.open,
                                        high: b.high,
                                        low: b.low,
                                        close: b.close,
                                        volume: b.volume,
                                    };
                                    if out.send(Ok((sym.clone(), bar))).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(SubscriptionItem::Notice(n)) => {
                                    tracing::info!(symbol = %sym, code = n.code, message = %n.message, "ibkr real-time bars notice");
                                }
                                Err(e) => {
                                    let _ = out.send(Err(format!("real-time bars of {sym}: {e}"))).await;
                                    return;
                                }
                            }
                        }
                        let _ = out.send(Err(format!("real-time bars of {sym} ended"))).await;
                    }),
                );
            }
            tokio::select! {
                changed = symbols.changed() => if changed.is_err() { break "symbols gone".to_string() },
                item = bars_rx.recv() => match item {
                    Some(Ok((symbol, five))) => {
                        let r = minutes.entry(symbol.clone()).or_insert_with(|| {
                            // Minutes from 5-second bars: the minute is the resampler's
                            // period (it aggregates whatever finer bars it is given).
                            Resampler::new(Timeframe::M1, Timeframe::M1, chrono_tz::UTC)
                                .unwrap_or_else(|_| unreachable!("1m from 1m is always allowed"))
                        });
                        let mut done = Vec::new();
                        if let Some(m) = r.push(&five) {
                            done.push(m);
                        }
                        // The last 5 seconds of the minute: it is complete.
                        if r.closes_at().is_some_and(|end| five.ts + 5 >= end)
                            && let Some(m) = r.flush()
                        {
                            done.push(m);
                        }
                        for bar in done {
                            if last_minute.get(&symbol).is_some_and(|&l| bar.ts <= l) {
                                continue;
                            }
                            last_minute.insert(symbol.clone(), bar.ts);
                            if tx.send(LiveEvent::Bar { symbol: symbol.clone(), bar }).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(Err(reason)) => break reason,
                    None => break "real-time bars ended".to_string(),
                },
            }
            if tx.is_closed() {
                break "receiver gone".to_string();
            }
        };
        for (_, t) in tasks {
            t.abort();
        }
        result
    }
}
