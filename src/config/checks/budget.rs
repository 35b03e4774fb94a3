//! The LLM budget check: a warning (`llm-budget-exceeded`, at the pipeline's `budget` key)
//! when the estimated LLM cost of an enabled pipeline ([`crate::llm::estimate`], what
//! `ztraded estimate` prints) exceeds its `budget.daily_usd` (the costliest day) or
//! `budget.monthly_usd`.
//!
//! A warning, not an error: the estimate rests on assumptions (representative prompts,
//! typical answers, gates that pass, signals per day), and the engine enforces the budget at
//! run time anyway. It is cheap: only a pipeline with a budget and an LLM node is estimated,
//! first with one token per byte (an upper bound needing no tokenizer), and only when that
//! bound exceeds the budget with the model's tokenizer.

use super::Ctx;
use crate::config::finding::{Finding, Reporter, Severity};
use crate::config::pipeline::Pipeline;
use crate::config::set::Resource;
use crate::llm::estimate::{self, Estimate, Input, Options};

/// Warns when the estimate of `res` exceeds its budget.
pub(super) fn check_llm_budget(ctx: &Ctx<'_>, res: &Resource<Pipeline>, r: &mut Reporter<'_>) {
    let Some(p) = &res.spec else { return };
    let Some(budget) = &p.budget else { return };
    if !p.enabled
        || (budget.daily_usd.is_none() && budget.monthly_usd.is_none())
        || !ctx.set.settings_ok
        || !estimate::has_llm_nodes(p)
    {
        return;
    }
    let symbols = crate::runtime::spec::pipeline_symbols(ctx.set, p);
    if symbols.is_empty() {
        // A scanner that is not there (reported elsewhere) or a single file checked alone.
        return;
    }
    let data_timezone = ctx
        .set
        .settings
        .market_data
        .timezone
        .parse()
        .unwrap_or(chrono_tz::America::New_York);
    let run = |upper_bound: bool| -> Option<Estimate> {
        estimate::estimate(&Input {
            name: &res.name,
            pipeline: p,
            llm: &ctx.set.settings.llm,
            data_timezone,
            symbols: &symbols,
            options: Options {
                signals_per_day: None,
                upper_bound,
            },
        })
        // An undefined provider, a bad trigger or window: other checks report them.
        .ok()
    };
    if !run(true).is_some_and(|e| e.over_budget()) {
        return;
    }
    let Some(e) = run(false) else { return };
    let Some(b) = e.budget.as_ref().filter(|b| b.over()) else {
        return;
    };
    let mut over = Vec::new();
    if let (true, Some(limit)) = (b.over_daily, b.daily_usd) {
        over.push(format!(
            "{} USD on the costliest day, over daily_usd {limit} ({} %)",
            e.cost_usd.peak_day.round_dp(4).normalize(),
            b.daily_pct.unwrap_or_default()
        ));
    }
    if let (true, Some(limit)) = (b.over_monthly, b.monthly_usd) {
        over.push(format!(
            "{} USD a month, over monthly_usd {limit} ({} %)",
            e.cost_usd.per_month.round_dp(4).normalize(),
            b.monthly_pct.unwrap_or_default()
        ));
    }
    let pos = r.doc.locate_key("/budget");
    r.out.push(Finding {
        file: r.file.to_string(),
        line: pos.line,
        column: pos.col,
        severity: Severity::Warning,
        code: "llm-budget-exceeded",
        path: "/budget".to_string(),
        message: format!(
            "budget: the estimated LLM cost is {} ({} executions a trading day at {} USD each); see `ztraded estimate`",
            over.join(" and "),
            e.executions.per_trading_day,
            e.cost_usd.per_execution.round_dp(6).normalize()
        ),
    });
}
