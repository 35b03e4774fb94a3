//! `ztraded estimate PIPELINE`: what a pipeline's LLM calls cost per execution, per trading
//! day and per month, against its `budget` (seed 002 §9; the rules are those of
//! [`crate::llm::estimate`]).
//!
//! PIPELINE is a pipeline file inside a config directory (`<dir>/pipelines/<name>.yaml`,
//! like `ztraded backtest`): the directory's `ztraded.toml` gives the LLM providers and
//! their prices, its scanners the symbols.
//!
//! # Output
//!
//! `--format human` (the default): a table of the LLM nodes (provider, model, tokenizer,
//! input and output tokens per call, USD per call, calls and USD per trading day), the
//! executions, the costs, the budget with the share used, and the assumptions.
//!
//! `--format json`: one object, keys in this order (USD amounts, percentages and
//! fractional counts are decimal strings, token and symbol counts are numbers):
//!
//! ```json
//! {
//!   "pipeline": "llm-swing",
//!   "file": "examples/pipelines/llm-swing.yaml",
//!   "enabled": true,
//!   "llm_nodes": [{ "node": "bias", "agent": "bias", "provider": "default",
//!                   "model": "gpt-4o", "template": "bias.v1", "tokenizer": "o200k_base",
//!                   "estimated": false, "input_tokens": 4056, "output_tokens": 104,
//!                   "usd_per_call": "0.0006708", "calls_per_trading_day": "2",
//!                   "usd_per_trading_day": "0.0013416" }, …],
//!   "executions": { "trigger": "schedule market_open +15m", "known": true, "symbols": 2,
//!                   "per_trading_day": "2", "per_weekend_day": "0", "peak_day": "2",
//!                   "one_off": "0", "trading_days_per_month": "21",
//!                   "weekend_days_per_month": "8.7", "per_month": "42" },
//!   "cost_usd": { "per_execution": "0.00123645", "per_trading_day": "0.0024729",
//!                 "per_weekend_day": "0", "peak_day": "0.0024729",
//!                 "per_month": "0.0519309" },
//!   "budget": { "daily_usd": "2", "monthly_usd": "40", "daily_pct": "0.12",
//!               "monthly_pct": "0.13", "over_daily": false, "over_monthly": false },
//!   "over_budget": false,
//!   "assumptions": ["prompts: …", "…"]
//! }
//! ```
//!
//! `budget` is `null` without a `budget` in the pipeline; `llm_nodes` is empty (and every
//! cost `"0"`) for a pipeline without LLM nodes.
//!
//! # Exit status
//!
//! 0: the estimate is within the budget (or the pipeline has none); 1: the estimate exceeds
//! the daily or the monthly budget (so a CI job fails the change that would blow it; the
//! estimate is printed all the same), or the pipeline or a file it uses is invalid; 2: usage
//! or I/O error (no such file, not a pipeline of a config directory).

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::backtest::runner::{BacktestError, load_pipeline};
use crate::llm::estimate::{self, Estimate, Input, Options};
use rust_decimal::Decimal;
use serde_json::Value;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

/// Output formats of `estimate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and sentences.
    Human,
    /// One JSON object (see the module documentation).
    Json,
}

/// Estimates `pipeline_file` and prints the estimate to `out`. `signals_per_day`: matching
/// signals per symbol per trading day for a `signal` trigger. Returns the exit code (see the
/// module documentation).
pub fn run(
    pipeline_file: &Path,
    format: Format,
    signals_per_day: Option<Decimal>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    if let Err(e) = std::fs::metadata(pipeline_file) {
        let _ = writeln!(err, "ztraded estimate: {}: {e}", pipeline_file.display());
        return EXIT_USAGE;
    }
    if signals_per_day.is_some_and(|n| n.is_sign_negative()) {
        let _ = writeln!(err, "ztraded estimate: --signals-per-day must be 0 or more");
        return EXIT_USAGE;
    }
    let (set, name) = match load_pipeline(pipeline_file) {
        Ok(loaded) => loaded,
        Err(e @ BacktestError::Invalid(_)) => {
            let _ = writeln!(err, "ztraded estimate: {e}");
            return EXIT_INVALID;
        }
        Err(e) => {
            let _ = writeln!(err, "ztraded estimate: {e}");
            return EXIT_USAGE;
        }
    };
    let Some(res) = set.pipelines.get(&name) else {
        return EXIT_USAGE;
    };
    let Some(pipeline) = res.spec.as_ref() else {
        let _ = writeln!(
            err,
            "ztraded estimate: {}: the pipeline does not load (run `ztraded validate`)",
            res.file
        );
        return EXIT_INVALID;
    };
    let symbols = crate::runtime::spec::pipeline_symbols(&set, pipeline);
    let data_timezone = set
        .settings
        .market_data
        .timezone
        .parse()
        .unwrap_or(chrono_tz::America::New_York);
    let estimate = match estimate::estimate(&Input {
        name: &name,
        pipeline,
        llm: &set.settings.llm,
        data_timezone,
        symbols: &symbols,
        options: Options {
            signals_per_day,
            upper_bound: false,
        },
    }) {
        Ok(e) => e,
        Err(e) => {
            let _ = writeln!(err, "ztraded estimate: {}: {e}", res.file);
            return EXIT_INVALID;
        }
    };
    let text = match format {
        Format::Human => human(&estimate, &res.file),
        Format::Json => json(&estimate, &res.file),
    };
    let _ = out.write_all(text.as_bytes());
    if estimate.over_budget() {
        EXIT_INVALID
    } else {
        EXIT_OK
    }
}

/// The JSON object of the module documentation, with a newline.
pub fn json(e: &Estimate, file: &str) -> String {
    let mut map = serde_json::Map::new();
    if let Ok(Value::Object(fields)) = serde_json::to_value(e) {
        for (k, v) in fields {
            map.insert(k.clone(), v);
            if k == "pipeline" {
                map.insert("file".into(), Value::String(file.to_string()));
            }
            if k == "budget" {
                map.insert("over_budget".into(), Value::Bool(e.over_budget()));
            }
        }
    }
    let mut s = serde_json::to_string_pretty(&Value::Object(map)).unwrap_or_default();
    s.push('\n');
    s
}

/// USD with at most 6 decimals.
fn usd(d: Decimal) -> String {
    let r = d.round_dp(6).normalize();
    if r.is_zero() && !d.is_zero() {
        format!("{}", d.round_dp(10).normalize())
    } else {
        r.to_string()
    }
}

/// The human report.
pub fn human(e: &Estimate, file: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}: estimated LLM cost ({file})", e.pipeline);
    let _ = writeln!(s);
    if e.llm_nodes.is_empty() {
        let _ = writeln!(
            s,
            "no LLM nodes: no bias or strategy with kind: llm, no reporting with summary: llm"
        );
    } else {
        let header = [
            "node",
            "provider",
            "model",
            "tokenizer",
            "input tokens",
            "output tokens",
            "USD/call",
            "calls/day",
            "USD/day",
        ];
        let rows: Vec<[String; 9]> = e
            .llm_nodes
            .iter()
            .map(|n| {
                [
                    n.node.clone(),
                    n.provider.clone(),
                    n.model.clone(),
                    if n.estimated {
                        format!("{} (estimate)", n.tokenizer.name())
                    } else {
                        n.tokenizer.name().to_string()
                    },
                    n.input_tokens.to_string(),
                    n.output_tokens.to_string(),
                    usd(n.usd_per_call),
                    n.calls_per_trading_day.to_string(),
                    usd(n.usd_per_trading_day),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        // Text columns left-aligned, numbers right-aligned.
        let line = |cells: &[String]| -> String {
            let mut l = String::new();
            for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
                if i > 0 {
                    l.push_str("  ");
                }
                if i < 4 {
                    let _ = write!(l, "{c:<w$}");
                } else {
                    let _ = write!(l, "{c:>w$}");
                }
            }
            l.trim_end().to_string()
        };
        let _ = writeln!(s, "{}", line(&header.map(str::to_string)));
        for r in &rows {
            let _ = writeln!(s, "{}", line(r));
        }
    }
    let x = &e.executions;
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "executions  {}, {} symbol{} a firing{}",
        x.trigger,
        x.symbols,
        if x.symbols == 1 { "" } else { "s" },
        if x.known {
            ""
        } else {
            " (assumed signals: see below)"
        }
    );
    if !x.one_off.is_zero() {
        let _ = writeln!(s, "            {} in all, once", x.one_off);
    }
    let _ = writeln!(
        s,
        "            {} per trading day, {} per weekend day, {} on the busiest day, {} per month",
        x.per_trading_day, x.per_weekend_day, x.peak_day, x.per_month
    );
    let c = &e.cost_usd;
    let _ = writeln!(s, "cost        {} USD per execution", usd(c.per_execution));
    let _ = writeln!(
        s,
        "            {} USD per trading day, {} USD on the busiest day",
        usd(c.per_trading_day),
        usd(c.peak_day)
    );
    let _ = writeln!(s, "            {} USD per month", usd(c.per_month));
    match &e.budget {
        None => {
            let _ = writeln!(s, "budget      none (set budget.daily_usd / monthly_usd)");
        }
        Some(b) => {
            let part = |label: &str, limit: Option<Decimal>, pct: Option<Decimal>, over: bool| {
                limit.map(|l| {
                    format!(
                        "{label} {} USD: {} used{}",
                        usd(l),
                        pct.map_or_else(|| "—".to_string(), |p| format!("{p} %")),
                        if over { " (OVER)" } else { "" }
                    )
                })
            };
            let parts: Vec<String> = [
                part("daily", b.daily_usd, b.daily_pct, b.over_daily),
                part("monthly", b.monthly_usd, b.monthly_pct, b.over_monthly),
            ]
            .into_iter()
            .flatten()
            .collect();
            let verdict = if b.over() {
                "over budget"
            } else {
                "within budget"
            };
            let _ = writeln!(s, "budget      {}: {verdict}", parts.join(", "));
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "assumptions");
    for a in &e.assumptions {
        let _ = writeln!(s, "  - {a}");
    }
    s
}
