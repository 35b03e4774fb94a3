//! Checks between a pipeline and its risk policy.

use super::Ctx;
use crate::config::finding::Reporter;
use crate::config::pipeline::{Mode, Pipeline};
use crate::config::risk::RiskPolicy;
use crate::config::settings::BrokerSettings;
use rust_decimal::Decimal;

/// Warns when one stopped-out trade (`risk_per_trade_pct` of the simulated broker's initial
/// balance) can lose more than the pipeline's or the policy's daily loss limit: the limit
/// would then halt the pipeline after a single loss.
pub(super) fn check_loss_limits(
    ctx: &Ctx<'_>,
    p: &Pipeline,
    policy: Option<&RiskPolicy>,
    r: &mut Reporter<'_>,
) {
    let Some(policy) = policy else { return };
    let broker_name = p.broker.clone().unwrap_or_else(|| "sim".to_string());
    let Some(BrokerSettings::Simulated(sim)) = ctx.set.settings.brokers.get(&broker_name) else {
        return;
    };
    if p.mode == Mode::Validation && p.broker.is_none() {
        return;
    }
    let risk_usd = sim.initial_balance * policy.sizing.risk_per_trade_pct.fraction();
    let limits: [(Option<Decimal>, &str, &str); 2] = [
        (
            p.limits.as_ref().and_then(|l| l.daily_loss_usd),
            "/limits/daily_loss_usd",
            "the pipeline's",
        ),
        (policy.limits.daily_loss_usd, "/risk", "the risk policy's"),
    ];
    for (limit, pointer, whose) in limits {
        if let Some(limit) = limit
            && risk_usd > limit
        {
            r.warning(
                "stop-wider-than-daily-loss",
                pointer,
                format!(
                    "one stopped-out trade can lose {} USD ({} of {} USD equity), more than {whose} daily loss limit of {} USD",
                    risk_usd.round_dp(2).normalize(),
                    policy.sizing.risk_per_trade_pct,
                    sim.initial_balance.normalize(),
                    limit.normalize()
                ),
            );
        }
    }
}
