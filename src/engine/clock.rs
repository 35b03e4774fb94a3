//! Time as a [`Clock`]: wall time live, simulated time in replay and backtests, so that
//! schedules, windows and end-of-day flattening behave the same in both (DESIGN.md §4).

use chrono::{DateTime, TimeZone, Utc};
use std::sync::Mutex;
use std::time::Duration;

/// A source of the current time that tasks can also sleep on.
pub trait Clock: Send + Sync {
    /// Now, UTC.
    fn now(&self) -> DateTime<Utc>;
    /// How long to wait in real time until the clock shows `t` (zero when it already does).
    fn wall_delay_until(&self, t: DateTime<Utc>) -> Duration;
    /// Simulated seconds per wall second (1 for the wall clock).
    fn speed(&self) -> f64;
}

/// Sleeps until `clock` shows `t` (re-checks after waking, so a clock that jumps is fine).
pub async fn sleep_until(clock: &dyn Clock, t: DateTime<Utc>) {
    loop {
        let delay = clock.wall_delay_until(t);
        if delay.is_zero() {
            return;
        }
        tokio::time::sleep(delay.min(Duration::from_secs(3600))).await;
    }
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn wall_delay_until(&self, t: DateTime<Utc>) -> Duration {
        (t - Utc::now()).to_std().unwrap_or(Duration::ZERO)
    }
    fn speed(&self) -> f64 {
        1.0
    }
}

/// Simulated time that runs `speed` times faster than wall time from `start` (replay).
/// Measured on tokio's clock, so `tokio::time::pause` makes tests exact.
#[derive(Debug)]
pub struct SimClock {
    start: DateTime<Utc>,
    wall_start: tokio::time::Instant,
    speed: f64,
}

impl SimClock {
    /// A clock showing `start` now and advancing `speed` simulated seconds per wall second.
    pub fn new(start: DateTime<Utc>, speed: f64) -> SimClock {
        SimClock {
            start,
            wall_start: tokio::time::Instant::now(),
            speed: speed.max(1e-6),
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.wall_start.elapsed().as_secs_f64() * self.speed;
        self.start + chrono::Duration::microseconds((elapsed * 1e6) as i64)
    }
    fn wall_delay_until(&self, t: DateTime<Utc>) -> Duration {
        let ahead = (t - self.now()).num_microseconds().unwrap_or(i64::MAX);
        if ahead <= 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(ahead as f64 / 1e6 / self.speed)
        }
    }
    fn speed(&self) -> f64 {
        self.speed
    }
}

/// Simulated time of a replaying daemon: it runs `speed` times faster than wall time from
/// `start`, but never past the next event (bar close or timer) that the daemon has not
/// processed yet ([`ReplayClock::run_until`]). When processing takes longer than the
/// simulated time allows at this speed, the clock waits for it instead of skipping ahead, so
/// the same data gives the same trades at any speed. Measured on tokio's clock.
#[derive(Debug)]
pub struct ReplayClock {
    state: Mutex<ReplayState>,
    speed: f64,
}

#[derive(Debug)]
struct ReplayState {
    base: DateTime<Utc>,
    wall: tokio::time::Instant,
    cap: DateTime<Utc>,
    running: bool,
}

impl ReplayClock {
    /// A clock showing `start`, held there until [`ReplayClock::run_until`].
    pub fn new(start: DateTime<Utc>, speed: f64) -> ReplayClock {
        ReplayClock {
            state: Mutex::new(ReplayState {
                base: start,
                wall: tokio::time::Instant::now(),
                cap: start,
                running: false,
            }),
            speed: speed.max(1e-6),
        }
    }

    fn free(&self, s: &ReplayState) -> DateTime<Utc> {
        let elapsed = s.wall.elapsed().as_secs_f64() * self.speed;
        let micros = (elapsed * 1e6).min(9.0e15) as i64;
        s.base + chrono::Duration::microseconds(micros)
    }

    /// Lets the clock run on up to `next`, the next event. Returns `true` when the clock
    /// had fallen behind (the last events took longer than their simulated time at this
    /// speed): it then shows `next` at once.
    pub fn run_until(&self, next: DateTime<Utc>) -> bool {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !s.running {
            s.running = true;
            s.base = s.cap;
            s.wall = tokio::time::Instant::now();
        }
        let free = self.free(&s);
        let capped = free.min(s.cap);
        let behind = free >= next && next > capped;
        if behind {
            s.base = next;
            s.wall = tokio::time::Instant::now();
        }
        s.cap = s.cap.max(next);
        behind
    }
}

impl Clock for ReplayClock {
    fn now(&self) -> DateTime<Utc> {
        let s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !s.running {
            return s.cap;
        }
        self.free(&s).min(s.cap)
    }
    fn wall_delay_until(&self, t: DateTime<Utc>) -> Duration {
        let s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !s.running {
            return Duration::from_secs(3600);
        }
        let ahead = (t - self.free(&s)).num_microseconds().unwrap_or(i64::MAX);
        if ahead <= 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(ahead as f64 / 1e6 / self.speed)
        }
    }
    fn speed(&self) -> f64 {
        self.speed
    }
}

/// A clock moved by hand (backtests step it bar by bar).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock showing `t`.
    pub fn new(t: DateTime<Utc>) -> ManualClock {
        ManualClock { now: Mutex::new(t) }
    }
    /// Sets the time (never backwards).
    pub fn set(&self, t: DateTime<Utc>) {
        if let Ok(mut now) = self.now.lock()
            && t > *now
        {
            *now = t;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.now
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|e| *e.into_inner())
    }
    fn wall_delay_until(&self, _t: DateTime<Utc>) -> Duration {
        Duration::ZERO
    }
    fn speed(&self) -> f64 {
        f64::INFINITY
    }
}

/// Local calendar days of a time zone, cached: asking for the day of an instant in the same
/// local day as the previous question costs two comparisons instead of a time-zone
/// conversion, and so do period ends of intraday bars on days without a DST change. The
/// engine asks both for every bar.
#[derive(Clone, Debug)]
pub struct LocalDays {
    tz: chrono_tz::Tz,
    start: i64,
    end: i64,
    date: chrono::NaiveDate,
    uniform: bool,
}

impl LocalDays {
    /// A cache for `tz`.
    pub fn new(tz: chrono_tz::Tz) -> LocalDays {
        LocalDays {
            tz,
            start: 1,
            end: 0,
            date: chrono::NaiveDate::default(),
            uniform: false,
        }
    }

    fn load(&mut self, t: i64) {
        use chrono::Offset;
        let date = utc(t).with_timezone(&self.tz).date_naive();
        let start = crate::market::timeframe::local_midnight(self.tz, date).timestamp();
        let end = date.succ_opt().map_or(start + 86_400, |next| {
            crate::market::timeframe::local_midnight(self.tz, next).timestamp()
        });
        let offset = |x: i64| {
            use chrono::TimeZone;
            self.tz
                .offset_from_utc_datetime(&utc(x).naive_utc())
                .fix()
                .local_minus_utc()
        };
        self.uniform = offset(start) == offset(end - 1);
        self.start = start;
        self.end = end;
        self.date = date;
    }

    /// The local date of `t` (Unix seconds).
    pub fn date(&mut self, t: i64) -> chrono::NaiveDate {
        if t < self.start || t >= self.end {
            self.load(t);
        }
        self.date
    }

    /// [`crate::market::Timeframe::period_end`] of the period starting at `start`.
    pub fn period_end(&mut self, timeframe: crate::market::Timeframe, start: i64) -> i64 {
        if timeframe.is_intraday() {
            if start < self.start || start >= self.end {
                self.load(start);
            }
            let end = start + timeframe.nominal_seconds();
            if self.uniform && end <= self.end {
                return end;
            }
        }
        timeframe.period_end(utc(start), self.tz).timestamp()
    }
}

/// Unix seconds → UTC time (the epoch for out-of-range values).
pub fn utc(ts: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(ts, 0).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sim_clock_runs_at_its_speed() {
        let start = utc(1_325_548_800); // 2012-01-03
        let clock = SimClock::new(start, 86_400.0);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!((clock.now() - start).num_seconds(), 172_800);
        let target = start + chrono::Duration::days(5);
        assert_eq!(clock.wall_delay_until(target), Duration::from_secs(3));
        sleep_until(&clock, target).await;
        assert!(clock.now() >= target);
    }

    #[test]
    fn local_days_agree_with_the_slow_path() {
        use crate::market::Timeframe;
        let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
        let mut days = LocalDays::new(tz);
        // Every 7 minutes across the 2012 DST changes.
        let mut t = 1_330_560_000; // 2012-03-01
        while t < 1_352_600_000 {
            let slow_date = utc(t).with_timezone(&tz).date_naive();
            assert_eq!(days.date(t), slow_date);
            for tf in [
                Timeframe::M1,
                Timeframe::M5,
                Timeframe::H1,
                Timeframe::H4,
                Timeframe::D1,
            ] {
                let start = tf.period_start(utc(t), tz);
                assert_eq!(
                    days.period_end(tf, start.timestamp()),
                    tf.period_end(start, tz).timestamp(),
                    "{tf} at {t}"
                );
            }
            t += 7 * 60 * 13;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn replay_clock_stops_at_the_next_event_and_waits_when_behind() {
        let start = utc(1_325_548_800);
        let clock = ReplayClock::new(start, 86_400.0);
        let day = chrono::Duration::days(1);
        // Held at the start until told to run.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), start);
        assert!(!clock.run_until(start + day));
        assert_eq!(clock.wall_delay_until(start + day), Duration::from_secs(1));
        // Never past the next event, however long the wait.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(clock.now(), start + day);
        // Processing took 3 s of wall time (3 days simulated) and the next event is 2 days
        // on: the clock fell behind and shows the next event at once.
        assert!(clock.run_until(start + day * 3));
        assert_eq!(clock.now(), start + day * 3);
        // Keeping up: it runs on smoothly from there.
        assert!(!clock.run_until(start + day * 5));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(clock.now(), start + day * 3 + chrono::Duration::hours(12));
    }

    #[test]
    fn manual_clock_never_goes_back() {
        let c = ManualClock::new(utc(100));
        c.set(utc(50));
        assert_eq!(c.now(), utc(100));
        c.set(utc(200));
        assert_eq!(c.now(), utc(200));
    }
}
