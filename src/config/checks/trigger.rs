//! Trigger checks: exactly one kind, cron expressions, intervals and time zones.

use crate::config::finding::Reporter;
use crate::config::pipeline::Pipeline;

/// Exactly one trigger kind (by presence in the document, so that a value the schema
/// rejected still counts as set), exactly one schedule kind, a 6-field cron, a positive
/// interval, a known time zone. `p` is `None` when the pipeline's fields do not load: only
/// the presence checks run then.
pub(super) fn check_trigger(p: Option<&Pipeline>, r: &mut Reporter<'_>) {
    let present = |pointer: &str| r.doc.value.pointer(pointer).is_some();
    let is_mapping = |pointer: &str| r.doc.value.pointer(pointer).is_some_and(|v| v.is_object());
    if !is_mapping("/trigger") {
        // `missing-field` or `wrong-type` from the schema says it.
        return;
    }
    let kinds: Vec<&str> = ["bar_close", "schedule", "signal", "continuous", "once"]
        .into_iter()
        .filter(|k| present(&format!("/trigger/{k}")))
        .collect();
    if kinds.len() != 1 {
        let msg = if kinds.is_empty() {
            "set exactly one trigger: bar_close, schedule, signal, continuous or once".to_string()
        } else {
            format!("set exactly one trigger, found {}", kinds.join(" and "))
        };
        r.error("trigger-kind", "/trigger", msg);
    }
    if is_mapping("/trigger/schedule") {
        let kinds: Vec<&str> = ["cron", "interval", "market_open"]
            .into_iter()
            .filter(|k| present(&format!("/trigger/schedule/{k}")))
            .collect();
        if kinds.len() != 1 {
            let msg = if kinds.is_empty() {
                "a schedule needs exactly one of cron, interval, market_open".to_string()
            } else {
                format!(
                    "a schedule needs exactly one of cron, interval, market_open; found {}",
                    kinds.join(" and ")
                )
            };
            r.error("schedule-kind", "/trigger/schedule", msg);
        }
    }
    let Some(s) = p.and_then(|p| p.trigger.schedule.as_ref()) else {
        return;
    };
    if let Some(cron) = &s.cron
        && let Err(message) = check_cron(cron)
    {
        r.error("invalid-cron", "/trigger/schedule/cron", message);
    }
    if let Some(i) = &s.interval
        && i.std().is_zero()
    {
        r.error(
            "out-of-range",
            "/trigger/schedule/interval",
            "the interval must be longer than 0s",
        );
    }
    if s.timezone.parse().is_none() {
        r.error(
            "unknown-timezone",
            "/trigger/schedule/timezone",
            format!("unknown time zone '{}'", s.timezone.0),
        );
    }
}

/// Checks a 6-field cron expression (seconds first) with the `cron` crate.
///
/// # Errors
/// What is wrong with it.
pub fn check_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "'{expr}' has {fields} fields; write 6: second minute hour day-of-month month day-of-week (as in \"0 35 9 * * Mon-Fri\")"
        ));
    }
    expr.parse::<cron::Schedule>()
        .map_err(|e| format!("'{expr}' is not a valid cron expression: {e}"))
}
