//! Resampling finer bars into coarser timeframes (`1m` → `5m` … `1d`, `1h` → `4h`, `1d` →
//! `1w`).
//!
//! A coarse bar covers one period of the coarse timeframe, aligned with
//! [`Timeframe::period_start`] in the market's time zone (5-minute periods start at :00, :05,
//! …; days at local midnight; weeks on Monday 00:00 local). It aggregates every fine bar whose
//! start ([`Bar::ts`]) lies in that period: open of the first, highest high, lowest low, close
//! of the last, summed volume, `ts` = the period start (even when the first fine bar starts
//! later, e.g. a week whose Monday is a holiday). Periods without fine bars produce no coarse
//! bar. The coarse bar is stamped at its period start like every [`Bar`]; it becomes visible
//! at [`Timeframe::period_end`].
//!
//! [`resample`] works on a whole slice; [`Resampler`] on a stream of bars, one at a time. Both
//! give the same bars.

use crate::market::{Bar, Timeframe};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// Why bars cannot be resampled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResampleError {
    /// The target timeframe is finer than the source.
    #[error("cannot resample {from} bars into the finer timeframe {to}")]
    Finer {
        /// Source timeframe.
        from: Timeframe,
        /// Target timeframe.
        to: Timeframe,
    },
    /// A bar does not start after the bar before it.
    #[error(
        "bar {index} (ts {ts}) does not start after the bar before it (ts {previous}); bars must \
         be in ascending time order"
    )]
    OutOfOrder {
        /// 0-based position in the input (for [`Resampler`], the number of bars pushed before).
        index: usize,
        /// Its start, Unix seconds.
        ts: i64,
        /// The previous bar's start, Unix seconds.
        previous: i64,
    },
    /// [`Resampler`]: a bar in a period that was already completed by [`Resampler::flush`].
    #[error(
        "bar at ts {ts} belongs to a period that was already completed (it ended at {closed_at})"
    )]
    Late {
        /// The bar's start, Unix seconds.
        ts: i64,
        /// End of the completed period, Unix seconds.
        closed_at: i64,
    },
    /// A timestamp outside the range chrono can represent (±262,000 years).
    #[error("bar {index}: ts {ts} is out of range")]
    TimestampOutOfRange {
        /// 0-based position in the input.
        index: usize,
        /// The timestamp, Unix seconds.
        ts: i64,
    },
}

fn check_timeframes(from: Timeframe, to: Timeframe) -> Result<(), ResampleError> {
    if to.can_resample_from(from) {
        Ok(())
    } else {
        Err(ResampleError::Finer { from, to })
    }
}

/// The start and end (Unix seconds) of the `to` period containing `ts`.
fn period_of(to: Timeframe, ts: i64, tz: Tz) -> Option<(i64, i64)> {
    let t = DateTime::<Utc>::from_timestamp(ts, 0)?;
    let start = to.period_start(t, tz);
    Some((start.timestamp(), to.period_end(start, tz).timestamp()))
}

/// Aggregates `bars` (timeframe `from`, ascending `ts`) into bars of timeframe `to`, with
/// periods aligned in `tz` (see the module documentation). `from == to` copies the bars.
///
/// Errors: [`ResampleError::Finer`] when `to` is finer than `from`;
/// [`ResampleError::OutOfOrder`] when a bar does not start after its predecessor;
/// [`ResampleError::TimestampOutOfRange`].
pub fn resample(
    bars: &[Bar],
    from: Timeframe,
    to: Timeframe,
    tz: Tz,
) -> Result<Vec<Bar>, ResampleError> {
    check_timeframes(from, to)?;
    for (index, pair) in bars.windows(2).enumerate() {
        if pair[1].ts <= pair[0].ts {
            return Err(ResampleError::OutOfOrder {
                index: index + 1,
                ts: pair[1].ts,
                previous: pair[0].ts,
            });
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < bars.len() {
        let (start, end) =
            period_of(to, bars[i].ts, tz).ok_or(ResampleError::TimestampOutOfRange {
                index: i,
                ts: bars[i].ts,
            })?;
        let mut j = i + 1;
        while j < bars.len() && bars[j].ts < end {
            j += 1;
        }
        let group = &bars[i..j];
        out.push(Bar {
            ts: start,
            open: group[0].open,
            high: group
                .iter()
                .map(|b| b.high)
                .fold(f64::NEG_INFINITY, f64::max),
            low: group.iter().map(|b| b.low).fold(f64::INFINITY, f64::min),
            close: group[group.len() - 1].close,
            volume: group.iter().map(|b| b.volume).sum(),
        });
        i = j;
    }
    Ok(out)
}

/// Streaming resampler: push fine bars one at a time, in ascending time order; get each
/// coarse bar once its period is complete.
///
/// A coarse period is known to be complete in two ways:
///
/// * a pushed bar starts a later period: [`Resampler::push`] returns the completed bar;
/// * the clock passes the end of the pending period ([`Resampler::closes_at`]) — the last fine
///   bar of a period (the 15:59 bar of a `1m` → `1h` resampling, the Friday bar of a week)
///   is normally followed by nothing until the next session. A caller that must emit the
///   coarse bar as soon as its period ends calls [`Resampler::flush`] when its clock reaches
///   `closes_at()`; a fine bar for that period arriving later is then rejected as
///   [`ResampleError::Late`].
///
/// ```
/// use ztraded::market::{Bar, Timeframe, resample::Resampler};
/// let tz = chrono_tz::UTC;
/// let mut r = Resampler::new(Timeframe::M1, Timeframe::M5, tz).unwrap();
/// let bar = |ts, close| Bar { ts, open: close, high: close, low: close, close, volume: 1.0 };
/// assert_eq!(r.push(&bar(0, 10.0)), None);
/// assert_eq!(r.push(&bar(60, 11.0)), None);
/// assert_eq!(r.closes_at(), Some(300));
/// let done = r.push(&bar(300, 12.0)).unwrap(); // starts the next period
/// assert_eq!((done.ts, done.open, done.close, done.volume), (0, 10.0, 11.0, 2.0));
/// assert_eq!(r.flush().map(|b| b.ts), Some(300));
/// ```
#[derive(Clone, Debug)]
pub struct Resampler {
    from: Timeframe,
    to: Timeframe,
    tz: Tz,
    /// The coarse bar being built and the end of its period.
    pending: Option<(Bar, i64)>,
    /// Start of the last bar pushed.
    last_ts: Option<i64>,
    /// End of the last completed period.
    closed_at: Option<i64>,
    pushed: usize,
    rejected: u64,
}

impl Resampler {
    /// A resampler from `from` bars to `to` bars with periods aligned in `tz`.
    ///
    /// Errors: [`ResampleError::Finer`] when `to` is finer than `from`.
    pub fn new(from: Timeframe, to: Timeframe, tz: Tz) -> Result<Resampler, ResampleError> {
        check_timeframes(from, to)?;
        Ok(Resampler {
            from,
            to,
            tz,
            pending: None,
            last_ts: None,
            closed_at: None,
            pushed: 0,
            rejected: 0,
        })
    }

    /// The source timeframe.
    pub fn from(&self) -> Timeframe {
        self.from
    }

    /// The target timeframe.
    pub fn to(&self) -> Timeframe {
        self.to
    }

    /// Adds a fine bar. Returns the completed coarse bar when `bar` starts a new period and a
    /// previous period was pending; otherwise `None`.
    ///
    /// A bar that [`Resampler::try_push`] rejects (out of order, late, out of range) is not
    /// aggregated: it is logged at WARN level and counted in [`Resampler::rejected`].
    pub fn push(&mut self, bar: &Bar) -> Option<Bar> {
        match self.try_push(bar) {
            Ok(done) => done,
            Err(e) => {
                self.rejected += 1;
                tracing::warn!(from = %self.from, to = %self.to, "resampler: {e}");
                None
            }
        }
    }

    /// [`Resampler::push`], with an error for a bar that cannot be aggregated:
    /// [`ResampleError::OutOfOrder`] when it does not start after the previous bar,
    /// [`ResampleError::Late`] when its period was already completed by
    /// [`Resampler::flush`], [`ResampleError::TimestampOutOfRange`]. The state is unchanged
    /// on error.
    pub fn try_push(&mut self, bar: &Bar) -> Result<Option<Bar>, ResampleError> {
        if let Some(previous) = self.last_ts
            && bar.ts <= previous
        {
            return Err(ResampleError::OutOfOrder {
                index: self.pushed,
                ts: bar.ts,
                previous,
            });
        }
        if let Some(closed_at) = self.closed_at
            && bar.ts < closed_at
        {
            return Err(ResampleError::Late {
                ts: bar.ts,
                closed_at,
            });
        }
        let (start, end) =
            period_of(self.to, bar.ts, self.tz).ok_or(ResampleError::TimestampOutOfRange {
                index: self.pushed,
                ts: bar.ts,
            })?;
        self.last_ts = Some(bar.ts);
        self.pushed += 1;
        if let Some((agg, _)) = &mut self.pending
            && agg.ts == start
        {
            agg.high = agg.high.max(bar.high);
            agg.low = agg.low.min(bar.low);
            agg.close = bar.close;
            agg.volume += bar.volume;
            return Ok(None);
        }
        let done = self.flush();
        self.pending = Some((Bar { ts: start, ..*bar }, end));
        Ok(done)
    }

    /// Completes and returns the pending coarse bar (if any), e.g. when the clock reaches
    /// [`Resampler::closes_at`] or at the end of the data. Later bars of its period are
    /// rejected as [`ResampleError::Late`].
    pub fn flush(&mut self) -> Option<Bar> {
        let (bar, end) = self.pending.take()?;
        self.closed_at = Some(end);
        Some(bar)
    }

    /// The coarse bar being built, so far (not complete), without removing it.
    pub fn pending(&self) -> Option<Bar> {
        self.pending.map(|(bar, _)| bar)
    }

    /// End of the pending coarse bar's period, Unix seconds (UTC, exclusive): once the clock
    /// reaches it, no later fine bar can belong to the pending bar, which may be taken with
    /// [`Resampler::flush`]. `None` when nothing is pending.
    pub fn closes_at(&self) -> Option<i64> {
        self.pending.map(|(_, end)| end)
    }

    /// How many bars [`Resampler::push`] rejected.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bar(ts: i64, open: f64, high: f64, low: f64, close: f64, volume: f64) -> Bar {
        Bar {
            ts,
            open,
            high,
            low,
            close,
            volume,
        }
    }

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    fn stream(bars: &[Bar], from: Timeframe, to: Timeframe, tz: Tz) -> Vec<Bar> {
        let mut r = Resampler::new(from, to, tz).unwrap();
        let mut out: Vec<Bar> = bars.iter().filter_map(|b| r.push(b)).collect();
        out.extend(r.flush());
        assert_eq!(r.rejected(), 0);
        out
    }

    #[test]
    fn one_minute_bars_make_five_minute_bars() {
        let t0 = utc("2012-01-03T14:30:00Z");
        let bars = [
            bar(t0 + 120, 10.0, 11.0, 9.5, 10.5, 100.0),
            bar(t0 + 180, 10.5, 12.0, 10.0, 11.5, 50.0),
            bar(t0 + 240, 11.5, 11.6, 8.0, 9.0, 25.0),
            bar(t0 + 300, 9.0, 9.5, 8.5, 9.2, 10.0),
        ];
        let out = resample(&bars, Timeframe::M1, Timeframe::M5, chrono_tz::UTC).unwrap();
        assert_eq!(
            out,
            vec![
                bar(t0, 10.0, 12.0, 8.0, 9.0, 175.0),
                bar(t0 + 300, 9.0, 9.5, 8.5, 9.2, 10.0)
            ]
        );
        assert_eq!(
            stream(&bars, Timeframe::M1, Timeframe::M5, chrono_tz::UTC),
            out
        );
    }

    #[test]
    fn a_finer_target_is_an_error() {
        let e = resample(&[], Timeframe::H1, Timeframe::M5, chrono_tz::UTC).unwrap_err();
        assert_eq!(
            e,
            ResampleError::Finer {
                from: Timeframe::H1,
                to: Timeframe::M5
            }
        );
        assert!(Resampler::new(Timeframe::D1, Timeframe::H4, chrono_tz::UTC).is_err());
    }

    #[test]
    fn unordered_input_is_an_error() {
        let bars = [bar(60, 1., 1., 1., 1., 1.), bar(60, 1., 1., 1., 1., 1.)];
        let e = resample(&bars, Timeframe::M1, Timeframe::M5, chrono_tz::UTC).unwrap_err();
        assert!(matches!(e, ResampleError::OutOfOrder { index: 1, .. }));
        let mut r = Resampler::new(Timeframe::M1, Timeframe::M5, chrono_tz::UTC).unwrap();
        assert_eq!(r.try_push(&bars[0]), Ok(None));
        assert!(matches!(
            r.try_push(&bars[1]),
            Err(ResampleError::OutOfOrder { index: 1, .. })
        ));
        assert_eq!(r.push(&bars[1]), None);
        assert_eq!(r.rejected(), 1);
        assert_eq!(r.pending().map(|b| b.volume), Some(1.0));
    }

    #[test]
    fn closes_at_lets_the_clock_complete_a_period_and_late_bars_are_rejected() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let mut r = Resampler::new(Timeframe::M1, Timeframe::H1, tz).unwrap();
        let last = utc("2012-01-03T20:59:00Z"); // 15:59 EST
        assert_eq!(r.closes_at(), None);
        assert_eq!(r.push(&bar(last, 1., 2., 0.5, 1.5, 3.)), None);
        assert_eq!(r.closes_at(), Some(utc("2012-01-03T21:00:00Z")));
        assert_eq!(r.pending().map(|b| b.ts), Some(utc("2012-01-03T20:00:00Z")));
        let done = r.flush().unwrap();
        assert_eq!(done, bar(utc("2012-01-03T20:00:00Z"), 1., 2., 0.5, 1.5, 3.));
        assert_eq!((r.pending(), r.closes_at(), r.flush()), (None, None, None));
        // A bar of the flushed hour that shows up afterwards cannot change it.
        let late = bar(last + 30, 1., 1., 1., 1., 1.);
        assert_eq!(
            r.try_push(&late),
            Err(ResampleError::Late {
                ts: last + 30,
                closed_at: utc("2012-01-03T21:00:00Z")
            })
        );
        // The next session starts a new bar.
        let next = bar(utc("2012-01-04T14:30:00Z"), 5., 5., 5., 5., 5.);
        assert_eq!(r.try_push(&next), Ok(None));
        assert_eq!(r.pending().map(|b| b.ts), Some(utc("2012-01-04T14:00:00Z")));
    }

    #[test]
    fn days_follow_local_midnight_across_a_dst_change() {
        // Hourly bars over Saturday 10 - Monday 12 March 2012, New York (spring change on
        // Sunday 11: the day has 23 hours).
        let tz: Tz = "America/New_York".parse().unwrap();
        let start = utc("2012-03-10T05:00:00Z");
        let end = utc("2012-03-12T04:00:00Z");
        let bars: Vec<Bar> = (start..end)
            .step_by(3600)
            .map(|t| bar(t, 1., 1., 1., 1., 1.))
            .collect();
        let out = resample(&bars, Timeframe::H1, Timeframe::D1, tz).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].ts, out[0].volume), (start, 24.0));
        assert_eq!(
            (out[1].ts, out[1].volume),
            (utc("2012-03-11T05:00:00Z"), 23.0)
        );
        assert_eq!(stream(&bars, Timeframe::H1, Timeframe::D1, tz), out);
    }

    #[test]
    fn same_timeframe_copies() {
        let bars = [bar(0, 1., 2., 0.5, 1.5, 3.), bar(300, 2., 2., 2., 2., 2.)];
        assert_eq!(
            resample(&bars, Timeframe::M5, Timeframe::M5, chrono_tz::UTC).unwrap(),
            bars.to_vec()
        );
    }

    fn arb_bars() -> impl Strategy<Value = Vec<Bar>> {
        // Ascending 1-minute bars with random gaps (up to 3 days) over 2012, New York.
        proptest::collection::vec(
            (1i64..4_320, 1.0f64..100.0, 0.0f64..5.0, 0.0f64..1e6),
            0..300,
        )
        .prop_map(|steps| {
            let mut t = utc("2012-03-01T00:00:00Z");
            steps
                .into_iter()
                .map(|(gap, p, spread, v)| {
                    t += gap * 60;
                    bar(
                        t,
                        p,
                        p + spread,
                        p - spread / 2.0,
                        p + spread / 3.0,
                        v.floor(),
                    )
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn batch_and_streaming_agree(bars in arb_bars(), to_index in 0usize..8) {
            let tz: Tz = "America/New_York".parse().unwrap();
            let to = Timeframe::ALL[to_index];
            let batch = resample(&bars, Timeframe::M1, to, tz).unwrap();
            prop_assert_eq!(&stream(&bars, Timeframe::M1, to, tz), &batch);
            // Every coarse bar starts a period, later than the previous one, and volume is kept.
            for w in batch.windows(2) {
                prop_assert!(w[0].ts < w[1].ts);
            }
            for b in &batch {
                let t = DateTime::<Utc>::from_timestamp(b.ts, 0).unwrap();
                prop_assert_eq!(to.period_start(t, tz).timestamp(), b.ts);
            }
            let total: f64 = bars.iter().map(|b| b.volume).sum();
            let coarse: f64 = batch.iter().map(|b| b.volume).sum();
            prop_assert_eq!(total, coarse);
        }
    }
}
