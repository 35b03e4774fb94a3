//! Two backtests side by side: the metrics of a baseline run and of a changed run of the
//! same pipeline, with the difference of each and whether it is better or worse.
//!
//! [`RunSummary`] is what one run showed (its [`Performance`] and the run's counts);
//! [`metric_rows`] lines two of them up, one [`MetricRow`] per metric, in a fixed order
//! (P&L and risk first, then the trades, then costs and context); [`table_human`] and
//! [`table_markdown`] print them.
//!
//! Differences are `this change − baseline`, computed from the exact values (`Decimal`
//! for money and percentages of equity, `f64` for ratios and the metrics `Performance`
//! keeps as `f64`), then rounded for display: two decimals for USD, percent (the difference
//! in percentage points, `pp`) and ratios, whole numbers for counts. A difference that
//! rounds to zero at that precision shows as zero and has no verdict. The verdict is only
//! given where the direction is unambiguous (more P&L, a higher Sharpe ratio, a smaller
//! drawdown, lower fees are better); counts of trades, exposure or holding time have none.

use super::analytics::{Performance, format_usd};
use super::runner::BacktestResult;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What one backtest run showed: the `--format json` output of `ztraded backtest` and one
/// side of a comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunSummary {
    /// Pipeline name.
    pub pipeline: String,
    /// The config directory the pipeline was read from.
    pub config_dir: PathBuf,
    /// Symbols traded.
    pub symbols: Vec<String>,
    /// First day of the equity curve, `YYYY-MM-DD` in the data's time zone.
    pub from: String,
    /// Last day of the equity curve, `YYYY-MM-DD`.
    pub to: String,
    /// Bars processed in the traded range (all symbols).
    pub bars: u64,
    /// Executions by status.
    pub executions: BTreeMap<&'static str, u64>,
    /// Failed executions by reason.
    pub failures: BTreeMap<String, u64>,
    /// Orders submitted.
    pub orders: u64,
    /// Risk rejections by rule.
    pub risk_rejections: BTreeMap<String, u64>,
    /// What the LLM calls cost, USD.
    pub llm_cost_usd: Decimal,
    /// Positions still open at the end (marked to market).
    pub open_positions: usize,
    /// Unrealized P&L of those positions at the last close, USD.
    pub unrealized_pnl: Decimal,
    /// Return of the buy-and-hold benchmark over the run, percent; None without prices.
    pub buy_and_hold_pct: Option<Decimal>,
    /// The statistics (see [`Performance`] for each field and its unit).
    pub performance: Performance,
    /// Where trades.csv, equity.csv and equity.svg were written.
    pub out_dir: PathBuf,
}

impl RunSummary {
    /// The summary of `r`, whose benchmark returned `buy_and_hold_pct` percent and whose
    /// files went to `out_dir`; `config_dir` is the directory its pipeline came from.
    pub fn of(
        r: &BacktestResult,
        buy_and_hold_pct: Option<Decimal>,
        config_dir: &Path,
        out_dir: &Path,
    ) -> RunSummary {
        let open = r.held_positions();
        RunSummary {
            pipeline: r.pipeline.clone(),
            config_dir: config_dir.to_path_buf(),
            symbols: r.symbols.clone(),
            from: r
                .equity
                .first()
                .map_or_else(String::new, |p| day(p.ts, r.timezone)),
            to: r
                .equity
                .last()
                .map_or_else(String::new, |p| day(p.ts, r.timezone)),
            bars: r.bars,
            executions: r.executions.clone(),
            failures: r.failures.clone(),
            orders: r.orders,
            risk_rejections: r.risk_rejections.clone(),
            llm_cost_usd: r.llm_cost_usd,
            open_positions: open.len(),
            unrealized_pnl: super::analytics::unrealized_pnl(&open),
            buy_and_hold_pct,
            performance: r.performance.clone(),
            out_dir: out_dir.to_path_buf(),
        }
    }
}

/// The day (`YYYY-MM-DD` in `tz`) of an equity point stamped at Unix second `ts`: a bar
/// closing at local midnight belongs to the day that ended.
pub fn day(ts: i64, tz: chrono_tz::Tz) -> String {
    crate::engine::clock::utc(ts - 1)
        .with_timezone(&tz)
        .format("%Y-%m-%d")
        .to_string()
}

/// A metric's value: a count, an exact decimal (USD, percent of equity) or a float (the
/// ratios and percentages [`Performance`] computes as `f64`). JSON: a number for counts
/// and floats, a string for decimals (exact, as [`Performance`] serializes them).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Num {
    /// A count.
    Int(i64),
    /// An exact value.
    Dec(Decimal),
    /// A computed ratio.
    Float(f64),
}

/// What a metric measures, and so how it is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A number of things.
    Count,
    /// US dollars (two decimals).
    Usd,
    /// Percent 0-100 (differences in percentage points).
    Percent,
    /// A plain ratio (two decimals).
    Ratio,
    /// A duration in seconds (printed in days, hours or minutes).
    Seconds,
}

/// Which way a metric improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// More is better (P&L, Sharpe ratio, win rate).
    Higher,
    /// Less is better (drawdown, fees).
    Lower,
}

/// Whether a change improved a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// In the metric's good direction.
    Better,
    /// Against it.
    Worse,
}

/// One metric of both runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricRow {
    /// Stable key: the [`Performance`] or [`RunSummary`] field it comes from
    /// (`total_pnl`, `sharpe_ratio`, `max_drawdown_pct`, …).
    pub key: &'static str,
    /// Label for people.
    pub label: &'static str,
    /// Unit of the values and of the difference.
    pub unit: Unit,
    /// Which way is better; None when it depends (trades, exposure).
    pub better: Option<Direction>,
    /// The baseline's value; None when undefined there (or no baseline).
    pub baseline: Option<Num>,
    /// This change's value; None when undefined.
    pub change: Option<Num>,
    /// `change − baseline`, exact; None when either is undefined.
    pub difference: Option<Num>,
    /// Better or worse by the difference rounded for display; None without a direction or
    /// when it rounds to zero.
    pub verdict: Option<Verdict>,
}

type Getter = fn(&RunSummary) -> Option<Num>;

fn count(n: usize) -> Option<Num> {
    Some(Num::Int(i64::try_from(n).unwrap_or(i64::MAX)))
}

fn count64(n: u64) -> Option<Num> {
    Some(Num::Int(i64::try_from(n).unwrap_or(i64::MAX)))
}

/// The metrics, in table order: key, label, unit, direction, value.
const METRICS: &[(&str, &str, Unit, Option<Direction>, Getter)] = {
    use Direction::{Higher, Lower};
    use Unit::*;
    &[
        ("total_pnl", "Total P&L", Usd, Some(Higher), |s| {
            Some(Num::Dec(s.performance.total_pnl))
        }),
        ("return_pct", "Return", Percent, Some(Higher), |s| {
            s.performance.return_pct.map(Num::Dec)
        }),
        ("cagr_pct", "CAGR (per year)", Percent, Some(Higher), |s| {
            s.performance.cagr_pct.map(Num::Float)
        }),
        ("sharpe_ratio", "Sharpe ratio", Ratio, Some(Higher), |s| {
            s.performance.sharpe_ratio.map(Num::Float)
        }),
        ("sortino_ratio", "Sortino ratio", Ratio, Some(Higher), |s| {
            s.performance.sortino_ratio.map(Num::Float)
        }),
        (
            "max_drawdown_pct",
            "Max drawdown",
            Percent,
            Some(Lower),
            |s| s.performance.max_drawdown.map(|d| Num::Dec(d.pct)),
        ),
        (
            "max_drawdown_usd",
            "Max drawdown (USD)",
            Usd,
            Some(Lower),
            |s| s.performance.max_drawdown.map(|d| Num::Dec(d.usd)),
        ),
        ("trades", "Trades", Count, None, |s| {
            count(s.performance.trades)
        }),
        ("win_rate_pct", "Win rate", Percent, Some(Higher), |s| {
            s.performance.win_rate_pct.map(Num::Float)
        }),
        ("profit_factor", "Profit factor", Ratio, Some(Higher), |s| {
            s.performance.profit_factor.map(Num::Float)
        }),
        (
            "expectancy",
            "Expectancy (per trade)",
            Usd,
            Some(Higher),
            |s| s.performance.expectancy.map(Num::Dec),
        ),
        ("average_win", "Average win", Usd, Some(Higher), |s| {
            s.performance.average_win.map(Num::Dec)
        }),
        ("average_loss", "Average loss", Usd, Some(Higher), |s| {
            s.performance.average_loss.map(Num::Dec)
        }),
        ("largest_win", "Largest win", Usd, None, |s| {
            s.performance.largest_win.map(Num::Dec)
        }),
        ("largest_loss", "Largest loss", Usd, None, |s| {
            s.performance.largest_loss.map(Num::Dec)
        }),
        ("wins", "Wins", Count, None, |s| count(s.performance.wins)),
        ("losses", "Losses", Count, None, |s| {
            count(s.performance.losses)
        }),
        ("exposure_pct", "Exposure", Percent, None, |s| {
            s.performance.exposure_pct.map(Num::Float)
        }),
        (
            "average_holding_seconds",
            "Average holding time",
            Seconds,
            None,
            |s| s.performance.average_holding_seconds.map(Num::Float),
        ),
        ("total_fees", "Fees", Usd, Some(Lower), |s| {
            Some(Num::Dec(s.performance.total_fees))
        }),
        ("llm_cost_usd", "LLM cost", Usd, Some(Lower), |s| {
            Some(Num::Dec(s.llm_cost_usd))
        }),
        ("orders", "Orders", Count, None, |s| count64(s.orders)),
        ("risk_rejections", "Risk rejections", Count, None, |s| {
            count64(s.risk_rejections.values().sum())
        }),
        (
            "failed_executions",
            "Failed executions",
            Count,
            Some(Lower),
            |s| count64(s.failures.values().sum()),
        ),
        ("open_positions", "Open at the end", Count, None, |s| {
            count(s.open_positions)
        }),
        (
            "unrealized_pnl",
            "Unrealized P&L at the end",
            Usd,
            None,
            |s| Some(Num::Dec(s.unrealized_pnl)),
        ),
        ("final_equity", "Final equity", Usd, None, |s| {
            Some(Num::Dec(s.performance.final_equity))
        }),
        ("buy_and_hold_pct", "Buy and hold", Percent, None, |s| {
            s.buy_and_hold_pct.map(Num::Dec)
        }),
    ]
};

/// The metrics of `change` and, when there is one, of `baseline`, in table order, with
/// their differences and verdicts.
pub fn metric_rows(baseline: Option<&RunSummary>, change: &RunSummary) -> Vec<MetricRow> {
    METRICS
        .iter()
        .map(|&(key, label, unit, better, get)| {
            let b = baseline.and_then(get);
            let c = get(change);
            let difference = match (b, c) {
                (Some(Num::Int(x)), Some(Num::Int(y))) => Some(Num::Int(y.saturating_sub(x))),
                (Some(Num::Dec(x)), Some(Num::Dec(y))) => y.checked_sub(x).map(Num::Dec),
                (Some(Num::Float(x)), Some(Num::Float(y))) => Some(Num::Float(y - x)),
                _ => None,
            };
            let verdict = match (better, difference.map(|d| rounded_sign(d, unit))) {
                (Some(Direction::Higher), Some(1)) | (Some(Direction::Lower), Some(-1)) => {
                    Some(Verdict::Better)
                }
                (Some(Direction::Higher), Some(-1)) | (Some(Direction::Lower), Some(1)) => {
                    Some(Verdict::Worse)
                }
                _ => None,
            };
            MetricRow {
                key,
                label,
                unit,
                better,
                baseline: b,
                change: c,
                difference,
                verdict,
            }
        })
        .collect()
}

/// Two decimals, rounded half away from zero.
fn cents(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// The sign (-1, 0, 1) of a value as printed.
fn rounded_sign(n: Num, unit: Unit) -> i8 {
    let sign = |x: f64| {
        if x > 0.0 {
            1
        } else if x < 0.0 {
            -1
        } else {
            0
        }
    };
    match n {
        Num::Int(i) => sign(i as f64),
        Num::Dec(d) => {
            let r = if unit == Unit::Count {
                d.round()
            } else {
                cents(d)
            };
            sign(if r.is_zero() {
                0.0
            } else if r > Decimal::ZERO {
                1.0
            } else {
                -1.0
            })
        }
        Num::Float(f) => match unit {
            Unit::Seconds => sign(f.round()),
            _ => sign((f * 100.0).round() / 100.0),
        },
    }
}

/// A duration in seconds as the summary prints it: days, hours or minutes, one decimal.
fn duration(seconds: f64) -> String {
    let s = seconds.abs().round();
    if s >= 86_400.0 {
        format!("{:.1} days", s / 86_400.0)
    } else if s >= 3_600.0 {
        format!("{:.1} hours", s / 3_600.0)
    } else {
        format!("{:.0} minutes", s / 60.0)
    }
}

/// A value as the tables print it: `1,234.56 USD`, `12.34%`, `1.25`, `41`, `12.5 days`;
/// `n/a` when undefined.
pub fn format_value(n: Option<Num>, unit: Unit) -> String {
    let Some(n) = n else {
        return "n/a".to_string();
    };
    match (n, unit) {
        (Num::Int(i), _) => i.to_string(),
        (Num::Dec(d), Unit::Usd) => format!("{} USD", format_usd(d)),
        (Num::Dec(d), Unit::Percent) => format!("{}%", format_usd(d)),
        (Num::Dec(d), _) => format_usd(d),
        (Num::Float(f), Unit::Percent) => format!("{f:.2}%"),
        (Num::Float(f), Unit::Seconds) => duration(f),
        (Num::Float(f), _) => format!("{f:.2}"),
    }
}

/// A difference as the tables print it: signed (`+12.50 USD`, `-1.20 pp`, `+3`), zero
/// without a sign (`0.00 USD`), `n/a` when either side is undefined.
pub fn format_difference(n: Option<Num>, unit: Unit) -> String {
    let Some(n) = n else {
        return "n/a".to_string();
    };
    let sign = match rounded_sign(n, unit) {
        1 => "+",
        -1 => "-",
        _ => "",
    };
    let body = match (n, unit) {
        (Num::Int(i), _) => i.unsigned_abs().to_string(),
        (Num::Dec(d), Unit::Usd) => format!("{} USD", format_usd(d.abs())),
        (Num::Dec(d), Unit::Percent) => format!("{} pp", format_usd(d.abs())),
        (Num::Dec(d), _) => format_usd(d.abs()),
        (Num::Float(f), Unit::Percent) => format!("{:.2} pp", f.abs()),
        (Num::Float(f), Unit::Seconds) => duration(f),
        (Num::Float(f), _) => format!("{:.2}", f.abs()),
    };
    format!("{sign}{body}")
}

/// The table as aligned text: `Metric  Baseline  This change  Difference` (the last three
/// right-aligned, the verdict after the difference) with a baseline, `Metric  Value`
/// without one.
pub fn table_human(rows: &[MetricRow], with_baseline: bool) -> String {
    let mut cells: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    cells.push(if with_baseline {
        vec![
            "Metric".into(),
            "Baseline".into(),
            "This change".into(),
            "Difference".into(),
        ]
    } else {
        vec!["Metric".into(), "Value".into()]
    });
    for r in rows {
        let mut line = vec![r.label.to_string()];
        if with_baseline {
            line.push(format_value(r.baseline, r.unit));
        }
        line.push(format_value(r.change, r.unit));
        if with_baseline {
            line.push(format_difference(r.difference, r.unit));
        }
        cells.push(line);
    }
    let columns = cells[0].len();
    let width: Vec<usize> = (0..columns)
        .map(|i| {
            cells
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (n, line) in cells.iter().enumerate() {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i == 0 {
                text.push_str(&format!("{cell:<w$}", w = width[0]));
            } else {
                text.push_str(&format!("  {cell:>w$}", w = width[i]));
            }
        }
        if n > 0
            && with_baseline
            && let Some(v) = rows[n - 1].verdict
        {
            text.push_str(match v {
                Verdict::Better => "  better",
                Verdict::Worse => "  worse",
            });
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// The table in GitHub-flavoured Markdown: `| metric | baseline | this change | difference |`
/// (🟢 after a better difference, 🔴 after a worse one) with a baseline,
/// `| metric | value |` without one.
pub fn table_markdown(rows: &[MetricRow], with_baseline: bool) -> String {
    let mut out = String::new();
    if with_baseline {
        out.push_str("| metric | baseline | this change | difference |\n");
        out.push_str("| --- | ---: | ---: | ---: |\n");
    } else {
        out.push_str("| metric | value |\n| --- | ---: |\n");
    }
    for r in rows {
        let value = format_value(r.change, r.unit);
        if with_baseline {
            let mark = match r.verdict {
                Some(Verdict::Better) => " 🟢",
                Some(Verdict::Worse) => " 🔴",
                None => "",
            };
            out.push_str(&format!(
                "| {} | {} | {value} | {}{mark} |\n",
                r.label,
                format_value(r.baseline, r.unit),
                format_difference(r.difference, r.unit),
            ));
        } else {
            out.push_str(&format!("| {} | {value} |\n", r.label));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::dec;

    #[test]
    fn differences_are_signed_and_rounded() {
        let diff = |n: Num, unit| format_difference(Some(n), unit);
        assert_eq!(diff(Num::Dec(dec!(1234.565)), Unit::Usd), "+1,234.57 USD");
        assert_eq!(diff(Num::Dec(dec!(-2.5)), Unit::Percent), "-2.50 pp");
        assert_eq!(diff(Num::Dec(dec!(0.004)), Unit::Usd), "0.00 USD");
        assert_eq!(diff(Num::Float(-0.25), Unit::Ratio), "-0.25");
        assert_eq!(diff(Num::Float(0.001), Unit::Percent), "0.00 pp");
        assert_eq!(diff(Num::Int(3), Unit::Count), "+3");
        assert_eq!(diff(Num::Float(-7_200.0), Unit::Seconds), "-2.0 hours");
        assert_eq!(format_difference(None, Unit::Usd), "n/a");
        assert_eq!(format_value(None, Unit::Ratio), "n/a");
        assert_eq!(
            format_value(Some(Num::Float(3.0 * 86_400.0)), Unit::Seconds),
            "3.0 days"
        );
    }

    fn summary(final_equity: Decimal, fees: Decimal) -> RunSummary {
        let tz = chrono_tz::America::New_York;
        let equity = [
            crate::engine::trades::EquityPoint {
                ts: 1_704_171_600,
                equity: dec!(10000),
                cash: dec!(10000),
            },
            crate::engine::trades::EquityPoint {
                ts: 1_704_258_000,
                equity: final_equity,
                cash: final_equity,
            },
        ];
        let mut performance = Performance::compute(&[], &equity, dec!(10000), tz);
        performance.total_fees = fees;
        RunSummary {
            pipeline: "p".into(),
            config_dir: PathBuf::from("."),
            symbols: vec!["AAPL".into()],
            from: String::new(),
            to: String::new(),
            bars: 2,
            executions: BTreeMap::new(),
            failures: BTreeMap::new(),
            orders: 0,
            risk_rejections: BTreeMap::new(),
            llm_cost_usd: Decimal::ZERO,
            open_positions: 0,
            unrealized_pnl: Decimal::ZERO,
            buy_and_hold_pct: None,
            performance,
            out_dir: PathBuf::from("out"),
        }
    }

    #[test]
    fn verdicts_follow_each_metrics_direction() {
        let base = summary(dec!(10100), dec!(5));
        let change = summary(dec!(9900), dec!(4.999));
        let rows = metric_rows(Some(&base), &change);
        let row = |key: &str| rows.iter().find(|r| r.key == key).unwrap();
        let pnl = row("total_pnl");
        assert_eq!(pnl.baseline, Some(Num::Dec(dec!(100))));
        assert_eq!(pnl.change, Some(Num::Dec(dec!(-100))));
        assert_eq!(pnl.difference, Some(Num::Dec(dec!(-200))));
        assert_eq!(pnl.verdict, Some(Verdict::Worse));
        // Less drawdown is better; the baseline never declined.
        let dd = row("max_drawdown_pct");
        assert_eq!(dd.verdict, Some(Verdict::Worse), "{dd:?}");
        // Fees 0.001 USD lower: rounds to zero, no verdict.
        assert_eq!(row("total_fees").verdict, None);
        assert_eq!(row("trades").verdict, None);
        let table = table_markdown(&rows, true);
        assert!(
            table.contains("| Total P&L | 100.00 USD | -100.00 USD | -200.00 USD 🔴 |"),
            "{table}"
        );
        let single = table_human(&metric_rows(None, &change), false);
        assert!(single.starts_with("Metric"), "{single}");
        assert!(single.contains("-100.00 USD"), "{single}");
    }
}
