//! The daemon's market loop on live data (`[market_data] source = "alpaca"` or `"ibkr"`):
//! Alpaca's minute bars or IB's (made from its 5-second real-time bars), aggregated to each symbol's data timeframe, delivered to the brokers and
//! then to the pipelines they concern — the same step as the replay's
//! ([`super::market::deliver`]), on the wall clock.
//!
//! # Symbols and warm-up
//!
//! Before the reconciler starts or changes pipelines it asks the loop to
//! [`LiveMarket::prepare`] their symbols. A new symbol is subscribed on the stream first,
//! then its history is read over REST (the multi-symbol bars endpoint, split-adjusted): bars
//! of its *data timeframe* — the finest timeframe its pipelines read — reaching back over the
//! lookback of their coarsest timeframe, the minutes of the period in progress (so that its
//! bar is complete when it closes), and about a year of daily closes for the correlation
//! rule. Minutes from the stream complete the following bars; every bar reaches the pipelines
//! once and in order. A symbol no running pipeline reads any more is unsubscribed.
//!
//! A symbol's data timeframe is set when it is first subscribed. When a pipeline added later
//! reads a finer timeframe of the same symbol, the symbol is reloaded at the finer one and
//! the running pipelines on it restart (re-warmed on the new data; positions kept).
//!
//! # Bars
//!
//! Minute bars that arrive within [`BATCH_WINDOW`] of each other are one step (the stream
//! sends a minute's bars of every symbol together). A coarse bar is complete when the minute
//! that ends its period arrives, or at its period end (or the session close) when no such
//! minute comes ([`LiveBars::flush_until`]). Each bar's instant is its period end, as in the
//! replay: a bar completed earlier (a daily bar at the session close) waits for it.

use super::registry::Registry;
use crate::engine::core::{BarBatch, BarEvent, DataNeed};
use crate::market::alpaca::{AlpacaData, LiveEvent, StreamStatus};
use crate::market::ibkr::IbkrData;
use crate::market::live::{LiveBars, SharedCalendar};
use crate::market::{Bar, Timeframe};
use crate::runtime::{Account, LiveHub};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

/// Minute bars arriving within this of the first one are delivered as one step.
pub const BATCH_WINDOW: Duration = Duration::from_millis(250);

/// How often Alpaca's calendar is read again (it covers three months from each read).
const CALENDAR_REFRESH: Duration = Duration::from_secs(86_400);

/// Seconds a minute bar may end after our clock (clock skew) and still be taken.
const MAX_SKEW: i64 = 120;

/// Regular-session seconds of a US stock trading day (09:30–16:00).
const SESSION_SECONDS: i64 = 23_400;

/// A request to prepare symbols (see the module documentation).
#[derive(Debug)]
struct Prepare {
    needs: BTreeMap<String, DataNeed>,
    done: oneshot::Sender<Vec<String>>,
}

/// The reconciler's handle on the live market loop.
#[derive(Clone, Debug)]
pub struct LiveMarket {
    tx: mpsc::Sender<Prepare>,
}

impl LiveMarket {
    /// Subscribes and warms up `needs` (symbol → what its pipelines read) before their
    /// pipelines start; returns when the history is loaded (or failed, which is logged:
    /// the pipelines then fail with "no market data"). Answers the symbols already streamed
    /// that were switched to a finer timeframe: the running pipelines on them must be
    /// restarted (their feeds read the old one).
    pub async fn prepare(&self, needs: BTreeMap<String, DataNeed>) -> Vec<String> {
        let (done, answer) = oneshot::channel();
        if self.tx.send(Prepare { needs, done }).await.is_ok() {
            return answer.await.unwrap_or_default();
        }
        Vec::new()
    }
}

/// The stock whose liquid hours are the session calendar of IBKR data (an NYSE Arca ETF
/// with the regular US session).
pub const IBKR_CALENDAR_SYMBOL: &str = "SPY";

/// Where live bars come from.
#[derive(Clone, Debug)]
pub enum LiveSource {
    /// Alpaca's market data (REST and streams).
    Alpaca(Box<AlpacaData>),
    /// Interactive Brokers through TWS / IB Gateway.
    Ibkr(IbkrData),
}

impl LiveSource {
    fn stream(&self, symbols: watch::Receiver<BTreeSet<String>>) -> mpsc::Receiver<LiveEvent> {
        match self {
            LiveSource::Alpaca(d) => d.stream(symbols),
            LiveSource::Ibkr(d) => d.stream(symbols),
        }
    }

    async fn bars(
        &self,
        symbols: &[String],
        timeframe: Timeframe,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        tz: chrono_tz::Tz,
    ) -> Result<BTreeMap<String, Vec<Bar>>, String> {
        match self {
            LiveSource::Alpaca(d) => d
                .bars(symbols, timeframe, start, end)
                .await
                .map_err(|e| e.to_string()),
            LiveSource::Ibkr(d) => d
                .bars(symbols, timeframe, start, end, tz)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// The session calendar of the source: Alpaca's calendar, or IB's liquid hours of
    /// [`IBKR_CALENDAR_SYMBOL`]; our NYSE calendar where it cannot be read.
    pub(crate) async fn calendar(&self) -> Arc<dyn crate::market::live::SessionCalendar> {
        match self {
            LiveSource::Alpaca(d) => super::alpaca_calendar(d).await,
            LiveSource::Ibkr(d) => match d.calendar(IBKR_CALENDAR_SYMBOL).await {
                Ok(c) if !c.is_empty() => {
                    info!(days = c.len(), "ibkr session hours read");
                    Arc::new(c)
                }
                Ok(_) => {
                    warn!("ibkr reported no session hours; sessions follow the NYSE calendar");
                    Arc::new(crate::market::calendar::UsEquityCalendar)
                }
                Err(e) => {
                    warn!(error = %e, "ibkr session hours not read; sessions follow the NYSE calendar");
                    Arc::new(crate::market::calendar::UsEquityCalendar)
                }
            },
        }
    }
}

/// What the live loop works with.
pub struct LiveLoop {
    /// The market data (history and live bars).
    pub data: LiveSource,
    /// The bars kept for the pipelines.
    pub hub: Arc<LiveHub>,
    /// The account (brokers, ledger, store, metrics).
    pub account: Arc<Account>,
    /// The running pipelines.
    pub registry: Arc<Registry>,
    /// Sessions of US stocks (Alpaca's calendar where it was read), refreshed daily.
    pub calendar: Arc<SharedCalendar>,
    /// The market time zone.
    pub tz: chrono_tz::Tz,
}

/// The span of calendar time (seconds) that holds `bars` bars of `timeframe` for a stock
/// (regular sessions, five days a week, with room for holidays) or a crypto pair (around the
/// clock).
fn span_seconds(timeframe: Timeframe, bars: usize, crypto: bool) -> i64 {
    let bars = bars as i64;
    let nominal = timeframe.nominal_seconds();
    if crypto {
        return bars.saturating_mul(nominal) + 86_400;
    }
    let days = if timeframe.is_intraday() {
        // Trading days that hold the bars, then calendar days (7/5) plus holidays.
        (bars.saturating_mul(nominal) + SESSION_SECONDS - 1) / SESSION_SECONDS
    } else {
        bars.saturating_mul(nominal / 86_400).max(bars)
    };
    let calendar_days = if timeframe <= Timeframe::D1 {
        days * 7 / 5 + 5
    } else {
        days + 7
    };
    calendar_days.saturating_mul(86_400)
}

impl LiveLoop {
    /// Starts the loop; answers the reconciler's handle and the task.
    pub fn spawn(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> (LiveMarket, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(self.run(rx, shutdown));
        (LiveMarket { tx }, task)
    }

    async fn run(self, mut requests: mpsc::Receiver<Prepare>, mut shutdown: watch::Receiver<bool>) {
        let (symbols_tx, symbols_rx) = watch::channel(BTreeSet::<String>::new());
        let mut events = self.data.stream(symbols_rx);
        let mut live = LiveBars::new(self.tz).with_calendar(Arc::clone(&self.calendar) as _);
        let mut refresh = tokio::time::interval_at(
            tokio::time::Instant::now() + CALENDAR_REFRESH,
            CALENDAR_REFRESH,
        );
        let mut held: BTreeMap<i64, Vec<BarEvent>> = BTreeMap::new();
        let mut requests_open = true;
        let mut events_open = true;
        loop {
            let notified = self.registry.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Utc::now();
            let wake = self.registry.next_wake();
            let deadline = [
                live.next_deadline().map(|d| d.timestamp()),
                held.keys().next().copied(),
            ]
            .into_iter()
            .flatten()
            .min();
            let next = match (wake, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = next.map_or(Duration::from_secs(3600), |t| {
                Duration::from_millis(((t - now.timestamp()).max(0) as u64).saturating_mul(1000))
            });
            tokio::select! {
                biased;
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                request = requests.recv(), if requests_open => match request {
                    Some(p) => {
                        let switched = self.prepare(p.needs, &mut live, &symbols_tx).await;
                        let _ = p.done.send(switched);
                    }
                    None => requests_open = false,
                },
                event = events.recv(), if events_open => match event {
                    Some(first) => {
                        let mut minutes = Vec::new();
                        self.take(first, &mut minutes);
                        let window = tokio::time::sleep(BATCH_WINDOW);
                        tokio::pin!(window);
                        loop {
                            tokio::select! {
                                _ = &mut window => break,
                                more = events.recv() => match more {
                                    Some(e) => self.take(e, &mut minutes),
                                    None => { events_open = false; break; }
                                },
                            }
                        }
                        let now = Utc::now();
                        tracing::debug!(minutes = minutes.len(), "live minutes received");
                        let mut done = Vec::new();
                        for (symbol, bar) in minutes {
                            for (tf, b) in live.push(&symbol, &bar) {
                                done.push((symbol.clone(), tf, b));
                            }
                        }
                        done.extend(live.flush_until(now));
                        self.deliver(done, now, &mut held).await;
                    }
                    None => {
                        error!("the market data streams stopped: no more live bars");
                        events_open = false;
                    }
                },
                _ = tokio::time::sleep(sleep) => {
                    let now = Utc::now();
                    let done = live.flush_until(now);
                    self.deliver(done, now, &mut held).await;
                    let t = now.timestamp();
                    if self.registry.next_wake().is_some_and(|w| w <= t) {
                        super::market::deliver(&self.account, &self.registry, self.tz, t, None).await;
                    }
                }
                _ = refresh.tick() => {
                    self.calendar.replace(self.data.calendar().await);
                }
                _ = &mut notified => continue,
            }
        }
    }

    fn take(&self, event: LiveEvent, minutes: &mut Vec<(String, Bar)>) {
        match event {
            // A minute that has not ended yet (beyond a little clock skew) would hold back
            // every later one of its symbol: refused.
            LiveEvent::Bar { symbol, bar } if bar.ts + 60 > Utc::now().timestamp() + MAX_SKEW => {
                warn!(%symbol, ts = bar.ts, "a live minute bar from the future; ignored");
            }
            LiveEvent::Bar { symbol, bar } => minutes.push((symbol, bar)),
            LiveEvent::Status(s) => match &s {
                StreamStatus::Connected { .. } | StreamStatus::Subscribed { .. } => {
                    info!(status = ?s, "market data stream")
                }
                StreamStatus::AuthFailed { .. } | StreamStatus::Error { .. } => {
                    error!(status = ?s, "market data stream")
                }
                _ => warn!(status = ?s, "market data stream"),
            },
        }
    }

    /// Keeps the completed bars of each symbol's data timeframe in the hub, and steps the
    /// pipelines with the bars whose period has ended by `now`, one step per instant in time
    /// order. A bar completed before its period ends (a daily bar at the session close) is
    /// held in `held` until its period end, as in the replay (the decision after the close,
    /// the fill at the next open).
    async fn deliver(
        &self,
        done: Vec<(String, Timeframe, Bar)>,
        now: DateTime<Utc>,
        held: &mut BTreeMap<i64, Vec<BarEvent>>,
    ) {
        let now = now.timestamp();
        for (symbol, tf, bar) in done {
            if self.hub.timeframe_of(&symbol) != Some(tf) {
                continue;
            }
            let end = self.hub.period_end(tf, bar.ts);
            if self.hub.push(&symbol, bar, end) {
                held.entry(end).or_default().push(BarEvent {
                    symbol: Arc::from(symbol.as_str()),
                    bar,
                    timeframe: tf,
                });
            }
        }
        let later = held.split_off(&(now + 1));
        let due = std::mem::replace(held, later);
        for (end, mut bars) in due {
            bars.sort_by(|a, b| a.symbol.cmp(&b.symbol));
            tracing::debug!(end, bars = bars.len(), "live bars delivered");
            let batch = Arc::new(BarBatch { end, bars });
            super::market::deliver(&self.account, &self.registry, self.tz, end, Some(batch)).await;
        }
    }

    /// Subscribes and loads the symbols of `needs` not loaded yet; unsubscribes the symbols
    /// no running pipeline reads any more.
    async fn prepare(
        &self,
        needs: BTreeMap<String, DataNeed>,
        live: &mut LiveBars,
        symbols: &watch::Sender<BTreeSet<String>>,
    ) -> Vec<String> {
        let now = Utc::now();
        // Symbols to load, by data timeframe.
        let mut load: BTreeMap<Timeframe, Vec<(String, DataNeed)>> = BTreeMap::new();
        let mut switched = Vec::new();
        for (symbol, need) in &needs {
            match self.hub.timeframe_of(symbol) {
                Some(tf) if tf <= need.finest => {}
                Some(tf) => {
                    info!(
                        %symbol, streamed = tf.as_str(), wanted = need.finest.as_str(),
                        "a pipeline reads a finer timeframe than the symbol is streamed in: reloading it at the finer one; the pipelines on it restart"
                    );
                    // The finer data must still serve the lookback of the coarsest timeframe
                    // the running pipelines on it read.
                    let need = DataNeed {
                        coarsest: need.coarsest.max(tf),
                        lookback: need.lookback.max(self.hub.len(symbol)),
                        ..*need
                    };
                    switched.push(symbol.clone());
                    load.entry(need.finest)
                        .or_default()
                        .push((symbol.clone(), need));
                }
                None => load
                    .entry(need.finest)
                    .or_default()
                    .push((symbol.clone(), *need)),
            }
        }
        // Unsubscribe what nothing reads any more.
        let mut keep: BTreeSet<String> = self.registry.symbols().into_iter().collect();
        keep.extend(needs.keys().cloned());
        for (symbol, _) in self.hub.symbols() {
            if !keep.contains(&symbol) {
                info!(%symbol, "no running pipeline reads it any more: unsubscribed");
                self.hub.forget(&symbol);
                live.want(&symbol, &[]);
            }
        }
        // Subscribe first, then read the history: no minute falls between the two.
        for (tf, list) in &load {
            for (symbol, _) in list {
                live.want(symbol, &[*tf]);
            }
        }
        let subscribed: BTreeSet<String> = self
            .hub
            .symbols()
            .into_iter()
            .map(|(s, _)| s)
            .chain(load.values().flatten().map(|(s, _)| s.clone()))
            .collect();
        symbols.send_replace(subscribed);
        for (tf, list) in load {
            let names: Vec<String> = list.iter().map(|(s, _)| s.clone()).collect();
            let span = list
                .iter()
                .map(|(s, n)| {
                    let crypto = crate::market::alpaca::is_crypto(s);
                    let bars = n.lookback.saturating_add(1);
                    span_seconds(n.coarsest, bars, crypto)
                })
                .max()
                .unwrap_or(86_400);
            let start = now - ChronoDuration::seconds(span);
            let started = std::time::Instant::now();
            let bars = match self.data.bars(&names, tf, start, now, self.tz).await {
                Ok(b) => b,
                Err(e) => {
                    error!(symbols = ?names, timeframe = tf.as_str(), error = %e, "warm-up bars not read: the pipelines on these symbols fail with no market data");
                    for s in &names {
                        live.want(s, &[]);
                    }
                    continue;
                }
            };
            // The minutes of the period in progress, so that its bar is whole when it closes.
            let mut minutes = BTreeMap::new();
            if tf != Timeframe::M1 {
                let from = tf.period_start(now, self.tz);
                match self
                    .data
                    .bars(&names, Timeframe::M1, from, now, self.tz)
                    .await
                {
                    Ok(m) => minutes = m,
                    Err(e) => {
                        warn!(symbols = ?names, error = %e, "minutes of the period in progress not read: its bar is skipped")
                    }
                }
                for s in &names {
                    live.covered_from(s, from);
                }
            }
            let mut daily = BTreeMap::new();
            if tf.is_intraday() {
                let from = now - ChronoDuration::days(460);
                match self
                    .data
                    .bars(&names, Timeframe::D1, from, now, self.tz)
                    .await
                {
                    Ok(d) => daily = d,
                    Err(e) => {
                        warn!(symbols = ?names, error = %e, "daily closes not read: the correlation rule sees intraday ones only")
                    }
                }
            }
            for (symbol, need) in &list {
                let history = bars.get(symbol).cloned().unwrap_or_default();
                let coarsest = need.coarsest.nominal_seconds();
                let ratio = (coarsest / tf.nominal_seconds()).max(1) as usize;
                let keep = need.lookback.saturating_mul(ratio).saturating_add(ratio);
                let count = history.len();
                self.hub.load(
                    symbol,
                    tf,
                    history,
                    daily.remove(symbol).unwrap_or_default(),
                    keep,
                    now.timestamp(),
                );
                let t = now.timestamp();
                for m in minutes.remove(symbol).unwrap_or_default() {
                    if m.ts + 60 <= t {
                        // Completes nothing: the period is still in progress.
                        let _ = live.push(symbol, &m);
                    }
                }
                info!(%symbol, timeframe = tf.as_str(), bars = count, kept = self.hub.len(symbol), ms = started.elapsed().as_millis() as u64, "live market data subscribed and warmed up");
            }
        }
        switched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_hold_the_bars_asked_for() {
        // 300 daily bars of a stock: ~420 calendar days.
        let d = span_seconds(Timeframe::D1, 300, false) / 86_400;
        assert!((420..=440).contains(&d), "{d}");
        // 300 five-minute bars: 300 × 300 s = 25 hours of sessions, four trading days.
        let m = span_seconds(Timeframe::M5, 300, false) / 86_400;
        assert!((9..=12).contains(&m), "{m}");
        // Crypto trades around the clock.
        assert_eq!(span_seconds(Timeframe::H1, 24, true), 24 * 3600 + 86_400);
        // Weekly bars: weeks of calendar time.
        let w = span_seconds(Timeframe::W1, 52, false) / 86_400;
        assert!((364..=371).contains(&w), "{w}");
    }
}
