//! Per-pipeline limits on the clock (DESIGN.md §2.1 `limits`): trades and executions per
//! day, daily loss and drawdown. Reaching one halts the pipeline's entries until the next
//! trading day; exits are still managed.

use crate::config::pipeline::PipelineLimits;
use chrono::NaiveDate;
use rust_decimal::Decimal;

/// The limit counters of one pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitState {
    day: Option<NaiveDate>,
    /// Executions started today.
    pub executions: u32,
    /// Entries sent today.
    pub entries: u32,
    /// Cumulative P&L (realized + unrealized, after fees) at the start of the day, USD.
    day_start_pnl: Decimal,
    /// Highest pipeline equity seen, USD.
    peak: Decimal,
    /// Why entries are halted, until the next day.
    pub halted: Option<String>,
}

impl Default for LimitState {
    fn default() -> Self {
        LimitState {
            day: None,
            executions: 0,
            entries: 0,
            day_start_pnl: Decimal::ZERO,
            peak: Decimal::ZERO,
            halted: None,
        }
    }
}

impl LimitState {
    /// Starts a new trading day when `day` is later than the current one: counters reset,
    /// the halt clears. `cumulative_pnl` is the pipeline's P&L since it started.
    pub fn roll(&mut self, day: NaiveDate, cumulative_pnl: Decimal) {
        if self.starts_day(day) {
            self.day = Some(day);
            self.executions = 0;
            self.entries = 0;
            self.day_start_pnl = cumulative_pnl;
            self.halted = None;
        }
    }

    /// Whether `day` is later than the current trading day (so [`LimitState::roll`] starts
    /// it).
    pub fn starts_day(&self, day: NaiveDate) -> bool {
        self.day.is_none_or(|d| day > d)
    }

    /// Whether another execution may start today; the reason when not.
    pub fn execution_allowed(&self, limits: &PipelineLimits) -> Result<(), String> {
        match limits.max_executions_per_day {
            Some(max) if self.executions >= max => {
                Err(format!("max_executions_per_day ({max}) reached"))
            }
            _ => Ok(()),
        }
    }

    /// Why entries are not allowed now, if they are not.
    pub fn entry_block(&self, limits: &PipelineLimits) -> Option<String> {
        if let Some(h) = &self.halted {
            return Some(h.clone());
        }
        match limits.max_trades_per_day {
            Some(max) if self.entries >= max => Some(format!("max_trades_per_day ({max}) reached")),
            _ => None,
        }
    }

    /// Counts an execution.
    pub fn count_execution(&mut self) {
        self.executions += 1;
    }

    /// Counts an entry.
    pub fn count_entry(&mut self) {
        self.entries += 1;
    }

    /// Updates the loss limits with the pipeline's cumulative P&L and its base equity (the
    /// account equity when the pipeline started); returns the halt reason when a limit is
    /// newly reached.
    pub fn update_pnl(
        &mut self,
        limits: &PipelineLimits,
        cumulative_pnl: Decimal,
        base_equity: Decimal,
    ) -> Option<String> {
        let equity = base_equity + cumulative_pnl;
        if equity > self.peak {
            self.peak = equity;
        }
        if self.halted.is_some() {
            return None;
        }
        let day_pnl = cumulative_pnl - self.day_start_pnl;
        if let Some(limit) = limits.daily_loss_usd
            && -day_pnl >= limit
        {
            let reason = format!(
                "daily_loss_usd: the pipeline lost {} USD today (limit {limit} USD)",
                (-day_pnl).round_dp(2)
            );
            self.halted = Some(reason.clone());
            return Some(reason);
        }
        if let Some(max) = limits.max_drawdown_pct
            && self.peak > Decimal::ZERO
        {
            let dd = (self.peak - equity) / self.peak * Decimal::ONE_HUNDRED;
            if dd >= max.value() {
                let reason = format!(
                    "max_drawdown_pct: drawdown {}% from the peak {} USD (limit {max})",
                    dd.round_dp(2),
                    self.peak.round_dp(2)
                );
                self.halted = Some(reason.clone());
                return Some(reason);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::common::Percent;
    use rust_decimal::dec;

    #[test]
    fn counters_reset_each_day_and_limits_halt() {
        let limits = PipelineLimits {
            max_trades_per_day: Some(1),
            max_executions_per_day: Some(2),
            daily_loss_usd: Some(dec!(500)),
            max_drawdown_pct: Some(Percent::new(dec!(10))),
        };
        let d1 = NaiveDate::from_ymd_opt(2012, 1, 3).unwrap();
        let mut s = LimitState::default();
        s.roll(d1, Decimal::ZERO);
        s.count_execution();
        s.count_execution();
        assert!(s.execution_allowed(&limits).is_err());
        s.count_entry();
        assert!(
            s.entry_block(&limits)
                .unwrap()
                .contains("max_trades_per_day")
        );
        assert_eq!(s.update_pnl(&limits, dec!(-499), dec!(100000)), None);
        assert!(
            s.update_pnl(&limits, dec!(-500), dec!(100000))
                .unwrap()
                .starts_with("daily_loss_usd")
        );
        s.roll(d1.succ_opt().unwrap(), dec!(-500));
        assert_eq!(s.entry_block(&limits), None);
        assert!(s.execution_allowed(&limits).is_ok());
        // Drawdown: from a peak of 10,000 to 8,900 is 11%.
        let mut s = LimitState::default();
        s.roll(d1, Decimal::ZERO);
        assert_eq!(s.update_pnl(&limits, dec!(0), dec!(10000)), None);
        s.roll(d1.succ_opt().unwrap(), dec!(-400));
        s.update_pnl(&limits, dec!(-400), dec!(10000));
        s.roll(d1 + chrono::Duration::days(2), dec!(-800));
        assert!(
            s.update_pnl(&limits, dec!(-1100), dec!(10000))
                .unwrap()
                .starts_with("max_drawdown_pct")
        );
    }
}
