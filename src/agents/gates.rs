//! Gates: `time_trigger`, `price_trigger`, `technical_trigger`. A false condition ends the
//! execution as `skipped` (the seeds' TriggerNotMet).

use crate::engine::feed::SymbolFeed;
use crate::engine::schedule::TimeGate;
use crate::expr::Program;
use chrono::{DateTime, Utc};

/// Passes when `now` is inside the gate's hours and days; otherwise the reason.
pub fn time(gate: &TimeGate, now: DateTime<Utc>) -> Result<(), String> {
    if gate.allows(now) {
        Ok(())
    } else {
        Err(format!(
            "outside the time gate at {}",
            now.format("%Y-%m-%d %H:%M UTC")
        ))
    }
}

/// Passes when `condition` holds on the feed; otherwise the reason.
pub fn condition(condition: &Program, feed: &SymbolFeed) -> Result<(), String> {
    match condition.eval_bool(feed) {
        Some(true) => Ok(()),
        Some(false) => Err(format!("condition `{}` is false", condition.source())),
        None => Err(format!(
            "condition `{}` reads values that are not available yet (indicator warm-up)",
            condition.source()
        )),
    }
}
