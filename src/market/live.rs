//! Live minute bars → the bars of the timeframes the running pipelines read.
//!
//! A live source (Alpaca, later IBKR) delivers closed 1-minute bars; [`LiveBars`] turns them
//! into the `1m`, `5m`, `15m`, `30m`, `1h`, `4h`, `1d` (and `1w`) bars of every timeframe
//! wanted for a symbol, with the same period alignment as the replay's resampling
//! ([`crate::market::resample`]: periods aligned on the local clock of the time zone given,
//! `ts` = period start).
//!
//! # When a coarse bar is complete
//!
//! * When the minute that ends its period is pushed (the 09:34 minute closes the 09:30 `5m`
//!   bar), or when a later minute is pushed (a minute in the next period).
//! * When the clock passes the end of its period without such a minute (no trade at 15:59):
//!   the caller calls [`LiveBars::flush_until`], at the latest at [`LiveBars::next_deadline`].
//! * Stocks: a bar whose period reaches past the regular session's close (the `1d` bar, the
//!   12:00–16:00 `4h` bar on a 13:00 early-close day) is complete after the session's last
//!   minute: the close comes from the [`SessionCalendar`] given (our NYSE calendar by
//!   default, or Alpaca's), not from waiting for the next day's first bar. Minutes outside the
//!   regular session (pre- and post-market, which Alpaca also streams) are ignored unless
//!   [`LiveBars::with_extended_hours`] is set, like the backtests' regular-session data; with
//!   extended hours, days end at local midnight.
//! * Crypto (symbols with `/`) trades around the clock: its days end at local midnight.
//! * Weekly bars complete at the end of the week (Monday 00:00 local).
//!
//! A timeframe added while minutes are already flowing (or a symbol's first minute in the
//! middle of a period) would give a first coarse bar missing the minutes before: such a bar
//! is not returned. The pipelines warm up from history instead.

use crate::market::calendar::{UsEquityCalendar, exchange_date};
use crate::market::resample::Resampler;
use crate::market::{Bar, Timeframe};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Regular-session hours of an exchange, per exchange-local date.
pub trait SessionCalendar: Send + Sync {
    /// Open and close (UTC) of the regular session on `date`, `None` when the market is
    /// closed that day.
    fn session_bounds(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)>;
}

/// A calendar that can be replaced while pipelines hold it (a broker's calendar refreshed
/// once a day): every holder sees the latest one.
pub struct SharedCalendar {
    inner: std::sync::RwLock<Arc<dyn SessionCalendar>>,
}

impl SharedCalendar {
    /// A shared calendar starting with `calendar`.
    pub fn new(calendar: Arc<dyn SessionCalendar>) -> SharedCalendar {
        SharedCalendar {
            inner: std::sync::RwLock::new(calendar),
        }
    }

    /// Replaces the calendar.
    pub fn replace(&self, calendar: Arc<dyn SessionCalendar>) {
        *self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = calendar;
    }
}

impl SessionCalendar for SharedCalendar {
    fn session_bounds(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .session_bounds(date)
    }
}

impl SessionCalendar for UsEquityCalendar {
    fn session_bounds(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.session(date).map(|s| (s.open, s.close))
    }
}

struct Frame {
    timeframe: Timeframe,
    /// `None` for `1m`: the minutes themselves.
    resampler: Option<Resampler>,
    /// When the pending bar is complete (Unix seconds): its period end, or the session close
    /// when earlier.
    cutoff: Option<i64>,
    /// Where the pending bar's data really starts: its period start, or the session open
    /// when later.
    pending_from: i64,
    /// The frame has seen every minute since this instant (Unix seconds).
    seen_from: Option<i64>,
}

struct SymbolBars {
    crypto: bool,
    last_ts: Option<i64>,
    frames: Vec<Frame>,
}

/// Aggregates live 1-minute bars into the wanted timeframes, per symbol. Source-agnostic.
pub struct LiveBars {
    tz: Tz,
    calendar: Arc<dyn SessionCalendar>,
    extended_hours: bool,
    symbols: BTreeMap<String, SymbolBars>,
}

impl std::fmt::Debug for LiveBars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveBars")
            .field("tz", &self.tz)
            .field("extended_hours", &self.extended_hours)
            .field("symbols", &self.symbols.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl LiveBars {
    /// An aggregator with periods aligned in `tz` (the exchange's zone for stocks), using
    /// our NYSE calendar for session closes.
    pub fn new(tz: Tz) -> LiveBars {
        LiveBars {
            tz,
            calendar: Arc::new(UsEquityCalendar),
            extended_hours: false,
            symbols: BTreeMap::new(),
        }
    }

    /// Uses `calendar` (e.g. Alpaca's) for stock sessions.
    pub fn with_calendar(mut self, calendar: Arc<dyn SessionCalendar>) -> LiveBars {
        self.calendar = calendar;
        self
    }

    /// Replaces the calendar (e.g. after fetching a fresh Alpaca calendar).
    pub fn set_calendar(&mut self, calendar: Arc<dyn SessionCalendar>) {
        self.calendar = calendar;
    }

    /// Whether stock minutes outside the regular session are aggregated (default: no).
    pub fn with_extended_hours(mut self, extended: bool) -> LiveBars {
        self.extended_hours = extended;
        self
    }

    /// The time zone periods are aligned in.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// Sets the timeframes wanted for `symbol` (the set the running pipelines read). An
    /// empty list forgets the symbol. Timeframes kept keep their pending bars; new ones
    /// start with the next minute.
    pub fn want(&mut self, symbol: &str, timeframes: &[Timeframe]) {
        let mut wanted: Vec<Timeframe> = timeframes.to_vec();
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            self.symbols.remove(symbol);
            return;
        }
        let tz = self.tz;
        let state = self
            .symbols
            .entry(symbol.to_string())
            .or_insert_with(|| SymbolBars {
                crypto: crate::market::alpaca::is_crypto(symbol),
                last_ts: None,
                frames: Vec::new(),
            });
        let next_minute = state.last_ts.map(|t| t + 60);
        let mut old: BTreeMap<Timeframe, Frame> =
            state.frames.drain(..).map(|f| (f.timeframe, f)).collect();
        state.frames = wanted
            .into_iter()
            .map(|timeframe| {
                old.remove(&timeframe).unwrap_or_else(|| Frame {
                    timeframe,
                    resampler: (timeframe != Timeframe::M1)
                        .then(|| Resampler::new(Timeframe::M1, timeframe, tz).ok())
                        .flatten(),
                    cutoff: None,
                    pending_from: i64::MIN,
                    seen_from: next_minute,
                })
            })
            .collect();
    }

    /// Vouches that every minute of `symbol` from `t` on will be pushed (e.g. the stream
    /// was subscribed before `t` and history up to `t` was read elsewhere), so that the first
    /// coarse bar of a timeframe that has not received a minute yet is returned when its
    /// period (or session) starts at or after `t`, even if its first minute had no trade.
    pub fn covered_from(&mut self, symbol: &str, t: DateTime<Utc>) {
        if let Some(state) = self.symbols.get_mut(symbol) {
            for frame in &mut state.frames {
                if frame.seen_from.is_none() {
                    frame.seen_from = Some(t.timestamp());
                }
            }
        }
    }

    /// The timeframes wanted for `symbol`, finest first.
    pub fn wanted(&self, symbol: &str) -> Vec<Timeframe> {
        self.symbols
            .get(symbol)
            .map(|s| s.frames.iter().map(|f| f.timeframe).collect())
            .unwrap_or_default()
    }

    /// The symbols with wanted timeframes.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.symbols.keys().map(String::as_str)
    }

    /// Adds a closed 1-minute bar of `symbol`; returns the bars of every wanted timeframe
    /// this minute completes, finest timeframe first (`1m` itself when wanted). A minute of
    /// an unwanted symbol, one not after the last minute pushed, or (stocks) one outside the
    /// regular session gives nothing.
    pub fn push(&mut self, symbol: &str, bar: &Bar) -> Vec<(Timeframe, Bar)> {
        let mut out = Vec::new();
        let Some(state) = self.symbols.get_mut(symbol) else {
            return out;
        };
        if let Some(last) = state.last_ts
            && bar.ts <= last
        {
            tracing::debug!(
                symbol,
                ts = bar.ts,
                last,
                "live bars: minute not after the last one; ignored"
            );
            return out;
        }
        let session = if state.crypto || self.extended_hours {
            None
        } else {
            let Some(t) = DateTime::<Utc>::from_timestamp(bar.ts, 0) else {
                return out;
            };
            match self.calendar.session_bounds(exchange_date(t)) {
                Some((open, close)) if open <= t && t < close => {
                    Some((open.timestamp(), close.timestamp()))
                }
                _ => {
                    tracing::debug!(
                        symbol,
                        ts = bar.ts,
                        "live bars: minute outside the regular session; ignored"
                    );
                    return out;
                }
            }
        };
        state.last_ts = Some(bar.ts);
        let minute_end = bar.ts + 60;
        for frame in &mut state.frames {
            let seen_from = *frame.seen_from.get_or_insert(bar.ts);
            let Some(r) = frame.resampler.as_mut() else {
                out.push((Timeframe::M1, *bar));
                continue;
            };
            if let Some(done) = r.push(bar)
                && seen_from <= frame.pending_from
            {
                out.push((frame.timeframe, done));
            }
            let Some(pending) = r.pending() else {
                continue;
            };
            let within_day = frame.timeframe <= Timeframe::D1;
            let (from, cutoff) = match (session, r.closes_at()) {
                (Some((open, close)), Some(end)) if within_day => {
                    (pending.ts.max(open), Some(end.min(close)))
                }
                (_, end) => (pending.ts, end),
            };
            frame.pending_from = from;
            frame.cutoff = cutoff;
            if cutoff.is_some_and(|c| c <= minute_end) {
                frame.cutoff = None;
                if let Some(done) = r.flush()
                    && seen_from <= from
                {
                    out.push((frame.timeframe, done));
                }
            }
        }
        out
    }

    /// Completes the bars whose period (or session) ended at or before `t` without a minute
    /// that closed them (e.g. no trade at 15:59). Returns `(symbol, timeframe, bar)` in
    /// symbol order, finest timeframe first.
    pub fn flush_until(&mut self, t: DateTime<Utc>) -> Vec<(String, Timeframe, Bar)> {
        let t = t.timestamp();
        let mut out = Vec::new();
        for (symbol, state) in &mut self.symbols {
            for frame in &mut state.frames {
                if frame.cutoff.is_none_or(|c| c > t) {
                    continue;
                }
                frame.cutoff = None;
                let complete = frame.seen_from.is_some_and(|s| s <= frame.pending_from);
                if let Some(done) = frame.resampler.as_mut().and_then(Resampler::flush)
                    && complete
                {
                    out.push((symbol.clone(), frame.timeframe, done));
                }
            }
        }
        out
    }

    /// The earliest instant at which [`LiveBars::flush_until`] would complete a bar, if any
    /// bar is pending.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.symbols
            .values()
            .flat_map(|s| s.frames.iter().filter_map(|f| f.cutoff))
            .min()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveTime;

    const NY: Tz = chrono_tz::America::New_York;

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }
    fn at(s: &str) -> DateTime<Utc> {
        DateTime::from_timestamp(utc(s), 0).unwrap()
    }
    fn minute(ts: i64, o: f64, h: f64, l: f64, c: f64, v: f64) -> Bar {
        Bar {
            ts,
            open: o,
            high: h,
            low: l,
            close: c,
            volume: v,
        }
    }
    /// Flat minutes `close = i`, volume 1, for `n` minutes from `start`.
    fn minutes(start: i64, n: i64) -> Vec<Bar> {
        (0..n)
            .map(|i| {
                let p = 100.0 + i as f64;
                minute(start + 60 * i, p, p + 0.5, p - 0.5, p + 0.25, 1.0)
            })
            .collect()
    }

    #[test]
    fn minutes_make_five_minute_bars_when_the_last_minute_closes_them() {
        let mut live = LiveBars::new(NY);
        live.want("AAPL", &[Timeframe::M1, Timeframe::M5]);
        // 2024-01-02 09:30 EST = 14:30 UTC.
        let t0 = utc("2024-01-02T14:30:00Z");
        let bars = [
            minute(t0, 10.0, 11.0, 9.5, 10.5, 100.0),
            minute(t0 + 60, 10.5, 12.0, 10.0, 11.5, 50.0),
            minute(t0 + 120, 11.5, 11.6, 8.0, 9.0, 25.0),
            minute(t0 + 180, 9.0, 9.5, 8.5, 9.2, 10.0),
        ];
        for b in &bars {
            assert_eq!(live.push("AAPL", b), vec![(Timeframe::M1, *b)]);
        }
        assert_eq!(live.next_deadline(), Some(at("2024-01-02T14:35:00Z")));
        let last = minute(t0 + 240, 9.2, 9.3, 9.1, 9.25, 5.0);
        assert_eq!(
            live.push("AAPL", &last),
            vec![
                (Timeframe::M1, last),
                (Timeframe::M5, minute(t0, 10.0, 12.0, 8.0, 9.25, 190.0))
            ]
        );
        assert_eq!(live.next_deadline(), None);
        // A duplicate or older minute is ignored.
        assert!(live.push("AAPL", &last).is_empty());
        assert!(live.push("AAPL", &bars[0]).is_empty());
        // Unwanted symbols give nothing.
        assert!(live.push("MSFT", &last).is_empty());
    }

    #[test]
    fn a_gap_completes_the_pending_bar_with_the_next_minute() {
        let mut live = LiveBars::new(NY);
        live.want("AAPL", &[Timeframe::M15]);
        let t0 = utc("2024-01-02T14:30:00Z");
        for b in minutes(t0, 10) {
            assert!(live.push("AAPL", &b).is_empty());
        }
        // No trades 09:40–09:49; the 09:50 minute starts the next quarter hour.
        let next = minute(t0 + 20 * 60, 1.0, 1.0, 1.0, 1.0, 1.0);
        let out = live.push("AAPL", &next);
        assert_eq!(out.len(), 1);
        let (tf, bar) = out[0];
        assert_eq!(tf, Timeframe::M15);
        assert_eq!(
            bar,
            minute(t0, 100.0, 109.5, 99.5, 109.25, 10.0),
            "open of the first minute, close of the last"
        );
    }

    #[test]
    fn the_session_close_completes_hour_four_hours_and_day() {
        let mut live = LiveBars::new(NY);
        live.want("AAPL", &[Timeframe::H1, Timeframe::H4, Timeframe::D1]);
        // The whole regular session of Tuesday 2 January 2024 but the 15:59 minute.
        let open = utc("2024-01-02T14:30:00Z");
        let all = minutes(open, 390);
        let mut out = Vec::new();
        for b in &all[..389] {
            out.extend(live.push("AAPL", b));
        }
        // Hours 09:00 (09:30–09:59) … 14:00 and the 08:00–12:00 four hours are done.
        let hours: Vec<i64> = out
            .iter()
            .filter(|(tf, _)| *tf == Timeframe::H1)
            .map(|(_, b)| b.ts)
            .collect();
        assert_eq!(
            hours,
            (0..6)
                .map(|i| utc("2024-01-02T14:00:00Z") + 3600 * i)
                .collect::<Vec<_>>()
        );
        let fours: Vec<Bar> = out
            .iter()
            .filter(|(tf, _)| *tf == Timeframe::H4)
            .map(|(_, b)| *b)
            .collect();
        assert_eq!(fours.len(), 1);
        assert_eq!(fours[0].ts, utc("2024-01-02T13:00:00Z")); // 08:00 EST
        assert_eq!(fours[0].volume, 150.0); // 09:30–11:59
        assert_eq!(live.next_deadline(), Some(at("2024-01-02T21:00:00Z")));
        assert!(live.flush_until(at("2024-01-02T20:59:59Z")).is_empty());
        let done = live.flush_until(at("2024-01-02T21:00:00Z"));
        let got: Vec<(Timeframe, i64, f64, f64, f64)> = done
            .iter()
            .map(|(s, tf, b)| {
                assert_eq!(s, "AAPL");
                (*tf, b.ts, b.open, b.close, b.volume)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Timeframe::H1,
                    utc("2024-01-02T20:00:00Z"),
                    all[330].open,
                    all[388].close,
                    59.0
                ),
                (
                    Timeframe::H4,
                    utc("2024-01-02T17:00:00Z"),
                    all[150].open,
                    all[388].close,
                    239.0
                ),
                (
                    Timeframe::D1,
                    utc("2024-01-02T05:00:00Z"), // local midnight
                    all[0].open,
                    all[388].close,
                    389.0
                ),
            ]
        );
        // After-hours minutes are ignored; the next day starts fresh.
        assert!(
            live.push(
                "AAPL",
                &minute(utc("2024-01-02T21:05:00Z"), 1., 1., 1., 1., 1.)
            )
            .is_empty()
        );
        assert_eq!(live.next_deadline(), None);
    }

    #[test]
    fn an_early_close_completes_the_day_with_its_last_minute() {
        let mut live = LiveBars::new(NY);
        live.want("AAPL", &[Timeframe::M30, Timeframe::H4, Timeframe::D1]);
        // Friday 29 November 2024 closes at 13:00 EST (18:00 UTC).
        let open = utc("2024-11-29T14:30:00Z");
        let all = minutes(open, 210);
        let mut out = Vec::new();
        for b in &all[..209] {
            out.extend(live.push("AAPL", b));
        }
        // The half hours 09:30 … 12:00 and the 08:00–12:00 four hours.
        assert_eq!(out.len(), 7);
        assert_eq!(
            out.iter().filter(|(tf, _)| *tf == Timeframe::M30).count(),
            6
        );
        let last = live.push("AAPL", &all[209]);
        let got: Vec<(Timeframe, i64, f64)> =
            last.iter().map(|(tf, b)| (*tf, b.ts, b.volume)).collect();
        assert_eq!(
            got,
            vec![
                (Timeframe::M30, utc("2024-11-29T17:30:00Z"), 30.0),
                (Timeframe::H4, utc("2024-11-29T17:00:00Z"), 60.0), // 12:00–16:00 EST
                (Timeframe::D1, utc("2024-11-29T05:00:00Z"), 210.0),
            ]
        );
        assert_eq!(live.next_deadline(), None);
    }

    #[test]
    fn crypto_days_end_at_local_midnight() {
        let mut live = LiveBars::new(NY);
        live.want("BTC/USD", &[Timeframe::D1]);
        // Saturday 6 January 2024, all day (crypto trades on weekends).
        let midnight = utc("2024-01-06T05:00:00Z");
        let all = minutes(midnight, 1440);
        let mut out = Vec::new();
        for b in &all[..1439] {
            out.extend(live.push("BTC/USD", b));
        }
        assert!(out.is_empty());
        assert_eq!(live.next_deadline(), Some(at("2024-01-07T05:00:00Z")));
        let out = live.push("BTC/USD", &all[1439]);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].1.ts, out[0].1.volume), (midnight, 1440.0));
    }

    #[test]
    fn a_first_partial_period_is_not_returned() {
        let mut live = LiveBars::new(NY);
        live.want("AAPL", &[Timeframe::M5]);
        // The first minute seen is 09:37: the 09:35 bar would miss 09:35 and 09:36.
        let out: Vec<_> = minutes(utc("2024-01-02T14:37:00Z"), 8)
            .iter()
            .flat_map(|b| live.push("AAPL", b))
            .collect();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.ts, utc("2024-01-02T14:40:00Z"));
        assert_eq!(out[0].1.volume, 5.0);
        // A timeframe added now (last minute 09:44) starts with the next full period.
        live.want("AAPL", &[Timeframe::M5, Timeframe::M15]);
        assert_eq!(live.wanted("AAPL"), vec![Timeframe::M5, Timeframe::M15]);
        let out: Vec<_> = minutes(utc("2024-01-02T14:45:00Z"), 30)
            .iter()
            .flat_map(|b| live.push("AAPL", b))
            .collect();
        let quarters: Vec<i64> = out
            .iter()
            .filter(|(tf, _)| *tf == Timeframe::M15)
            .map(|(_, b)| b.ts)
            .collect();
        assert_eq!(
            quarters,
            vec![utc("2024-01-02T14:45:00Z"), utc("2024-01-02T15:00:00Z")]
        );
        live.want("AAPL", &[]);
        assert_eq!(live.symbols().count(), 0);
    }

    #[test]
    fn coverage_vouched_for_keeps_a_first_bar_without_its_first_minute() {
        let mut live = LiveBars::new(NY);
        live.want("AAPL", &[Timeframe::D1]);
        live.covered_from("AAPL", at("2024-01-02T14:00:00Z"));
        // No trade at 09:30; the day still starts at the open.
        let all = minutes(utc("2024-01-02T14:31:00Z"), 389);
        let out: Vec<_> = all.iter().flat_map(|b| live.push("AAPL", b)).collect();
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].1.ts, out[0].1.volume),
            (utc("2024-01-02T05:00:00Z"), 389.0)
        );
    }

    #[test]
    fn holidays_and_premarket_minutes_are_ignored_unless_extended_hours() {
        let mut live = LiveBars::new(NY);
        live.want("AAPL", &[Timeframe::M1]);
        // 1 January 2024 is a holiday; 08:00 on 2 January is pre-market.
        let b = minute(utc("2024-01-01T15:00:00Z"), 1., 1., 1., 1., 1.);
        assert!(live.push("AAPL", &b).is_empty());
        let b = minute(utc("2024-01-02T13:00:00Z"), 1., 1., 1., 1., 1.);
        assert!(live.push("AAPL", &b).is_empty());
        let mut ext = LiveBars::new(NY).with_extended_hours(true);
        ext.want("AAPL", &[Timeframe::M1]);
        assert_eq!(ext.push("AAPL", &b).len(), 1);
    }

    #[test]
    fn the_calendar_given_decides_the_close() {
        // A calendar (e.g. Alpaca's) with a 12:00 close on Tuesday 2 January 2024.
        let date = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap();
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        let cal = crate::market::alpaca::AlpacaCalendar {
            start: date,
            end: date,
            days: BTreeMap::from([(date, (t(9, 30), t(12, 0)))]),
        };
        let mut live = LiveBars::new(NY).with_calendar(Arc::new(cal));
        live.want("AAPL", &[Timeframe::D1]);
        let all = minutes(utc("2024-01-02T14:30:00Z"), 150);
        let out: Vec<_> = all.iter().flat_map(|b| live.push("AAPL", b)).collect();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.volume, 150.0);
    }
}
