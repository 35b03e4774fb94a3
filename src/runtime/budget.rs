//! The pipeline's cost budget (`budget: {daily_usd, monthly_usd}`), kept by the implicit
//! pipeline manager of every execution (DESIGN.md §2.1): before an execution the spending of
//! the current day and month is compared with the limits, after it the execution's cost is
//! added.
//!
//! Days and months are those of the pipeline's window time zone (the daemon's market-data
//! time zone without a window). An execution is skipped (reason `budget`) when the spending
//! so far plus the cost of the last execution — the expected cost of the next one — would
//! exceed a limit; a limit already reached skips every execution until the period ends. The
//! first skip of a day is an intervention, the later ones of the same day are only counted.
//! A warning is logged once per period when the spending passes 80 % of a limit.

use crate::config::pipeline::Budget;
use chrono::{Datelike, NaiveDate};
use chrono_tz::Tz;
use rust_decimal::Decimal;

/// Share of a limit at which the warning is logged: 80 %.
pub const WARN_SHARE: Decimal = Decimal::from_parts(8, 0, 0, false, 1);

/// A budget period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// The local calendar day.
    Day,
    /// The local calendar month.
    Month,
}

impl Period {
    /// `daily` or `monthly` (the `period` label of `ztraded_budget_remaining_dollars`).
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "daily",
            Period::Month => "monthly",
        }
    }
}

/// Why an execution may not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// The period whose limit is reached.
    pub period: Period,
    /// Spent in the period so far, USD.
    pub spent: Decimal,
    /// The limit, USD.
    pub limit: Decimal,
    /// Whether this is the first skip of the local day (record an intervention).
    pub first_today: bool,
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "budget: {} USD of the {} budget of {} USD spent",
            self.spent.round_dp(4).normalize(),
            self.period.as_str(),
            self.limit.normalize()
        )
    }
}

/// A warning: the spending passed [`WARN_SHARE`] of a limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetWarning {
    /// The period.
    pub period: Period,
    /// Spent, USD.
    pub spent: Decimal,
    /// The limit, USD.
    pub limit: Decimal,
}

/// Spending against the limits (see the module documentation).
#[derive(Clone, Debug)]
pub struct BudgetTracker {
    daily: Option<Decimal>,
    monthly: Option<Decimal>,
    tz: Tz,
    day: Option<NaiveDate>,
    day_spent: Decimal,
    month_spent: Decimal,
    last_cost: Decimal,
    warned: [bool; 2],
    skipped_day: Option<NaiveDate>,
}

fn month_of(d: NaiveDate) -> (i32, u32) {
    (d.year(), d.month())
}

impl BudgetTracker {
    /// The tracker of `budget` in `tz`; `None` without limits.
    pub fn new(budget: Option<&Budget>, tz: Tz) -> Option<BudgetTracker> {
        let b = budget?;
        if b.daily_usd.is_none() && b.monthly_usd.is_none() {
            return None;
        }
        Some(BudgetTracker {
            daily: b.daily_usd,
            monthly: b.monthly_usd,
            tz,
            day: None,
            day_spent: Decimal::ZERO,
            month_spent: Decimal::ZERO,
            last_cost: Decimal::ZERO,
            warned: [false; 2],
            skipped_day: None,
        })
    }

    /// The local day of `t` (Unix seconds).
    fn date(&self, t: i64) -> NaiveDate {
        crate::engine::schedule::trading_day(crate::engine::clock::utc(t), self.tz)
    }

    /// `[start, end)` of the local day and of the local month of `t`, Unix seconds.
    pub fn bounds(&self, t: i64) -> ((i64, i64), (i64, i64)) {
        let d = self.date(t);
        let midnight =
            |d: NaiveDate| crate::market::timeframe::local_midnight(self.tz, d).timestamp();
        let next_day = d.succ_opt().unwrap_or(d);
        let first = d.with_day(1).unwrap_or(d);
        let next_month = if d.month() == 12 {
            NaiveDate::from_ymd_opt(d.year() + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(d.year(), d.month() + 1, 1)
        }
        .unwrap_or(next_day);
        (
            (midnight(d), midnight(next_day)),
            (midnight(first), midnight(next_month)),
        )
    }

    /// Moves to the period of `t`, forgetting the spending of periods that ended.
    fn roll(&mut self, t: i64) {
        let d = self.date(t);
        match self.day {
            Some(prev) if prev == d => {}
            Some(prev) => {
                self.day_spent = Decimal::ZERO;
                self.warned[0] = false;
                if month_of(prev) != month_of(d) {
                    self.month_spent = Decimal::ZERO;
                    self.warned[1] = false;
                }
                self.day = Some(d);
            }
            None => self.day = Some(d),
        }
    }

    /// Sets what was spent so far in the day and the month of `t` (read from the store
    /// after a restart).
    pub fn seed(&mut self, t: i64, day_spent: Decimal, month_spent: Decimal) {
        self.roll(t);
        self.day_spent = day_spent;
        self.month_spent = month_spent.max(day_spent);
    }

    /// Takes over the spending of `old` (the same pipeline before a reload).
    pub fn carry(&mut self, old: &BudgetTracker) {
        self.day = old.day;
        self.day_spent = old.day_spent;
        self.month_spent = old.month_spent;
        self.last_cost = old.last_cost;
        self.skipped_day = old.skipped_day;
    }

    /// Whether an execution at `t` may run.
    ///
    /// # Errors
    /// [`OverBudget`] when a limit is reached or the next execution would pass it.
    pub fn check(&mut self, t: i64) -> Result<(), OverBudget> {
        self.roll(t);
        let today = self.date(t);
        for (period, limit, spent) in [
            (Period::Day, self.daily, self.day_spent),
            (Period::Month, self.monthly, self.month_spent),
        ] {
            let Some(limit) = limit else { continue };
            if spent >= limit || spent + self.last_cost > limit {
                let first_today = self.skipped_day != Some(today);
                self.skipped_day = Some(today);
                return Err(OverBudget {
                    period,
                    spent,
                    limit,
                    first_today,
                });
            }
        }
        Ok(())
    }

    /// Adds the cost (USD) of an execution at `t`; answers the warnings it raises (once per
    /// period and limit).
    pub fn add(&mut self, t: i64, usd: Decimal) -> Vec<BudgetWarning> {
        self.roll(t);
        if usd > Decimal::ZERO {
            self.last_cost = usd;
        }
        self.day_spent += usd;
        self.month_spent += usd;
        let mut out = Vec::new();
        for (i, period, limit, spent) in [
            (0, Period::Day, self.daily, self.day_spent),
            (1, Period::Month, self.monthly, self.month_spent),
        ] {
            if let Some(limit) = limit
                && !self.warned[i]
                && spent >= limit * WARN_SHARE
            {
                self.warned[i] = true;
                out.push(BudgetWarning {
                    period,
                    spent,
                    limit,
                });
            }
        }
        out
    }

    /// What is left of each limit, USD (never below 0).
    pub fn remaining(&self) -> Vec<(Period, Decimal)> {
        let mut out = Vec::new();
        if let Some(l) = self.daily {
            out.push((Period::Day, (l - self.day_spent).max(Decimal::ZERO)));
        }
        if let Some(l) = self.monthly {
            out.push((Period::Month, (l - self.month_spent).max(Decimal::ZERO)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::dec;

    fn ts(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn skips_when_the_next_execution_would_pass_the_limit_and_resets_each_day() {
        let budget = Budget {
            daily_usd: Some(dec!(1)),
            monthly_usd: Some(dec!(2.5)),
        };
        let mut b = BudgetTracker::new(Some(&budget), chrono_tz::America::New_York).unwrap();
        let t = ts("2024-03-04T15:00:00Z");
        assert!(b.check(t).is_ok());
        assert!(b.add(t, dec!(0.3)).is_empty());
        assert!(b.check(t + 60).is_ok());
        b.add(t + 60, dec!(0.3));
        // 0.6 spent, 0.3 expected: 0.9 fits.
        assert!(b.check(t + 120).is_ok());
        let w = b.add(t + 120, dec!(0.3));
        assert_eq!(w.len(), 1, "0.9 passes 80 % of the daily 1 USD");
        assert_eq!(w[0].period, Period::Day);
        // 0.9 + 0.3 > 1: skipped, first of the day, then not first.
        let e = b.check(t + 180).unwrap_err();
        assert_eq!((e.period, e.first_today), (Period::Day, true));
        assert!(e.to_string().contains("daily budget of 1 USD"), "{e}");
        assert!(!b.check(t + 240).unwrap_err().first_today);
        assert_eq!(
            b.remaining(),
            vec![(Period::Day, dec!(0.1)), (Period::Month, dec!(1.6))]
        );
        // The next local day (New York) starts afresh; the month goes on.
        let next = ts("2024-03-05T15:00:00Z");
        assert!(b.check(next).is_ok());
        b.add(next, dec!(0.9));
        b.add(next, dec!(0.4));
        let e = b.check(next + 60).unwrap_err();
        assert_eq!(e.period, Period::Day);
        let third = ts("2024-03-06T15:00:00Z");
        // 2.2 spent this month, 0.4 expected: the monthly 2.5 stops it.
        let e = b.check(third).unwrap_err();
        assert_eq!((e.period, e.first_today), (Period::Month, true));
        // A new month.
        assert!(b.check(ts("2024-04-01T15:00:00Z")).is_ok());
    }

    #[test]
    fn days_are_local_days_of_the_time_zone() {
        let budget = Budget {
            daily_usd: Some(dec!(1)),
            monthly_usd: None,
        };
        let mut b = BudgetTracker::new(Some(&budget), chrono_tz::America::New_York).unwrap();
        // 23:30 New York on March 4 is 04:30 UTC on March 5: the same local day as 15:00.
        b.add(ts("2024-03-04T15:00:00Z"), dec!(1));
        assert!(b.check(ts("2024-03-05T04:30:00Z")).is_err());
        assert!(b.check(ts("2024-03-05T05:30:00Z")).is_ok());
        let ((d0, d1), (m0, m1)) = b.bounds(ts("2024-03-05T15:00:00Z"));
        assert_eq!(d0, ts("2024-03-05T05:00:00Z"));
        assert_eq!(d1, ts("2024-03-06T05:00:00Z"));
        assert_eq!(m0, ts("2024-03-01T05:00:00Z"));
        assert_eq!(m1, ts("2024-04-01T04:00:00Z"));
        assert!(BudgetTracker::new(Some(&Budget::default()), chrono_tz::UTC).is_none());
    }
}
