//! `ztraded report [DIR]`: trading performance from the store of DIR's daemon (DIR's
//! `ztraded.toml` and `ZTRADED_*` variables name it), for a pipeline, a mode and a period,
//! computed by the backtest's own [`Performance::compute`].
//!
//! # What is measured
//!
//! * **Trades**: the `trades` rows that closed in the period (`--from` is local midnight of
//!   that day in the market time zone, `--to` the end of that day), of `--pipeline` and
//!   `--mode` when given.
//! * **Equity curve**: without `--pipeline` and `--mode`, the account's equity points
//!   (`equity_points`, one per bar; several brokers are summed at each instant), so the total
//!   P&L is final minus initial equity (closed trades, open positions at market and every
//!   commission), as in a backtest. With a filter the account's curve would mix in the other
//!   pipelines, so the curve is the selection's **closed-trade curve**: the account's equity
//!   at its first point in the period (0 without points) plus the running sum of the
//!   selected trades' P&L at their exits; its total P&L is the closed-trade P&L, and open
//!   positions are listed apart. Drawdown, Sharpe, Sortino and exposure are taken on the
//!   curve used; the formulas are those of [`crate::backtest::analytics`].
//! * **Breakdowns**: by symbol, weekday of exit, hour of entry (market time zone), exit
//!   reason ([`Performance`]'s) and config revision: the revision of the pipeline's last
//!   execution in the symbol at or before the entry ([`Store::trades_with_revisions`]),
//!   grouped with [`breakdown_by`].
//! * **Costs**: the cost records of the selection in the period ([`Store::cost_summary`]);
//!   `llm` counts the records of nodes that called a model; per trade divides by the trades.
//!
//! `--out DIR` writes `equity.svg` (equity and drawdown, the backtest's chart),
//! `trades.csv` and `equity.csv` (the backtest's formats) there.
//!
//! # Formats
//!
//! * `human`: the metrics, then the breakdown tables.
//! * `json`: `{filters, store, equity_curve: {source: account|closed_trades, accounts,
//!   points, first, last}, metrics: {…}, costs: {…}, net_pnl_usd, open_positions: {count,
//!   unrealized_pnl_usd}, breakdowns: {symbol, weekday, hour, exit_reason, revision: [{bucket,
//!   trades, wins, losses, win_rate_pct, pnl_usd}]}, files}`; money as decimal strings
//!   (USD), ratios and percentages (0-100) as numbers, times RFC 3339 UTC, `null` where a
//!   value is undefined.
//! * `csv`: `dimension,bucket,trades,wins,losses,win_rate_pct,pnl_usd`, one row per bucket
//!   (dimensions `all`, `symbol`, `weekday`, `hour`, `exit_reason`, `revision`).
//!
//! Exit code: 0; 1 when the settings do not load or the store cannot be read; 2 for a usage
//! error (an invalid pipeline name, `--from` after `--to`, an output directory that cannot
//! be written).

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::backtest::analytics::{
    Bucket, Performance, aligned_lines, breakdown_by, bucket_lines, format_pct, format_ts,
    format_usd, weekday_name,
};
use crate::backtest::output::{EquityChart, write_equity_csv, write_equity_svg, write_trades_csv};
use crate::broker::{Position, PositionSide};
use crate::engine::trades::{EquityPoint, TradeRecord};
use crate::store::{CostSummary, Store, StoreError};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Metrics and tables for a terminal.
    Human,
    /// The documented JSON object.
    Json,
    /// One row per breakdown bucket.
    Csv,
}

/// What to report on.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// One pipeline (all when `None`).
    pub pipeline: Option<String>,
    /// One mode: `live`, `paper`, `simulation` or `validation` (all when `None`).
    pub mode: Option<String>,
    /// First day, in the market time zone.
    pub from: Option<NaiveDate>,
    /// Last day, in the market time zone (included).
    pub to: Option<NaiveDate>,
}

/// Which equity curve the metrics use (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CurveSource {
    /// The account's equity points.
    Account,
    /// The selected trades' P&L on the account's equity at the start.
    ClosedTrades,
}

/// Everything a report shows, before formatting.
#[derive(Clone, Debug)]
pub struct Report {
    /// The selection.
    pub selection: Selection,
    /// `[from, to)` Unix seconds (`i64::MIN` / `i64::MAX` when open).
    pub bounds: (i64, i64),
    /// Market time zone.
    pub tz: chrono_tz::Tz,
    /// The trades, in exit order.
    pub trades: Vec<TradeRecord>,
    /// Each trade's config revision (`None` when unknown), in the order of `trades`.
    pub revisions: Vec<Option<String>>,
    /// The curve the metrics use.
    pub curve: Vec<EquityPoint>,
    /// What it is.
    pub source: CurveSource,
    /// The accounts with equity points (`broker/account`).
    pub accounts: Vec<String>,
    /// The statistics.
    pub performance: Performance,
    /// Trades by config revision.
    pub by_revision: BTreeMap<String, Bucket>,
    /// Costs of the selection.
    pub costs: CostSummary,
    /// Open positions of the selection now.
    pub open_positions: usize,
    /// Their unrealized P&L at the last price in the store, USD.
    pub unrealized_pnl: Decimal,
}

/// Runs the report. Returns the exit code (see the module documentation).
pub async fn run(
    dir: &Path,
    selection: Selection,
    format: Format,
    out_dir: Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    if let Some(p) = &selection.pipeline
        && !crate::config::common::is_valid_name(p)
    {
        let _ = writeln!(
            err,
            "ztraded report: {p:?} is not a pipeline name (^[a-z0-9][a-z0-9-]{{0,62}}$)"
        );
        return EXIT_USAGE;
    }
    if let (Some(f), Some(t)) = (selection.from, selection.to)
        && f > t
    {
        let _ = writeln!(err, "ztraded report: --from {f} is after --to {t}");
        return EXIT_USAGE;
    }
    let Some((store, tz)) = super::status::open(dir, "report", err).await else {
        return EXIT_INVALID;
    };
    let report = build(&store, selection, tz).await;
    store.close().await;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "ztraded report: {e}");
            return EXIT_INVALID;
        }
    };
    let files = match &out_dir {
        None => None,
        Some(d) => match write_files(&report, d) {
            Ok(f) => Some(f),
            Err(e) => {
                let _ = writeln!(err, "ztraded report: {e}");
                return EXIT_USAGE;
            }
        },
    };
    let text = match format {
        Format::Human => human(&report, files.as_ref()),
        Format::Json => {
            serde_json::to_string_pretty(&to_json(&report, files.as_ref())).unwrap_or_default()
                + "\n"
        }
        Format::Csv => csv(&report),
    };
    let _ = out.write_all(text.as_bytes());
    EXIT_OK
}

/// `[from, to)` Unix seconds of the selection's days in `tz`.
pub fn bounds(selection: &Selection, tz: chrono_tz::Tz) -> (i64, i64) {
    let midnight = |d: NaiveDate| crate::market::timeframe::local_midnight(tz, d).timestamp();
    let from = selection.from.map_or(i64::MIN, midnight);
    let to = selection
        .to
        .map_or(i64::MAX, |d| d.succ_opt().map_or(i64::MAX, midnight));
    (from, to)
}

/// Reads the selection's trades, curve and costs and computes the statistics.
///
/// # Errors
/// The first store error.
pub async fn build(
    store: &Store,
    selection: Selection,
    tz: chrono_tz::Tz,
) -> Result<Report, StoreError> {
    let (from, to) = bounds(&selection, tz);
    let pipeline = selection.pipeline.as_deref();
    let mode = selection.mode.as_deref();
    let rows = store
        .trades_with_revisions(pipeline, mode, from, to)
        .await?;
    let (trades, revisions): (Vec<TradeRecord>, Vec<Option<String>>) =
        rows.into_iter().map(|r| (r.trade, r.revision)).unzip();
    // The account's curve: every account's points, summed at each instant.
    let mut accounts = Vec::new();
    let mut curves = Vec::new();
    for (broker, account) in store.equity_accounts().await? {
        curves.push(store.equity_curve(&broker, &account, from, to).await?);
        accounts.push(format!("{broker}/{account}"));
    }
    let account_curve = sum_curves(&curves);
    let initial = account_curve.first().map_or(Decimal::ZERO, |p| p.equity);
    let (source, curve) = if pipeline.is_none() && mode.is_none() {
        (CurveSource::Account, account_curve)
    } else {
        let start = account_curve.first().map(|p| p.ts);
        (
            CurveSource::ClosedTrades,
            closed_trade_curve(&trades, initial, start),
        )
    };
    let performance = Performance::compute(&trades, &curve, initial, tz);
    let by_revision = breakdown_by(&trades, |i, _| {
        Some(
            revisions[i]
                .clone()
                .unwrap_or_else(|| "unknown".to_string()),
        )
    });
    let costs = store.cost_summary(pipeline, mode, from, to).await?;
    let mut open_positions = 0;
    let mut unrealized_pnl = Decimal::ZERO;
    for t in store.load_open_trades().await? {
        if pipeline.is_some_and(|p| p != t.pipeline) || mode.is_some_and(|m| m != t.mode) {
            continue;
        }
        open_positions += 1;
        if let Some(price) = store.last_price(&t.pipeline, &t.symbol).await? {
            let quantity = match t.side {
                PositionSide::Long => t.quantity,
                PositionSide::Short => -t.quantity,
            };
            unrealized_pnl += Position {
                pipeline: t.pipeline.clone(),
                symbol: t.symbol.clone(),
                quantity,
                average_price: t.average_price,
                market_price: price.price,
            }
            .unrealized_pnl();
        }
    }
    Ok(Report {
        selection,
        bounds: (from, to),
        tz,
        trades,
        revisions,
        curve,
        source,
        accounts,
        performance,
        by_revision,
        costs,
        open_positions,
        unrealized_pnl,
    })
}

/// Several accounts' curves as one: at each instant any of them has a point, the sum of each
/// account's latest point at or before it (an account counts from its first point on).
pub fn sum_curves(curves: &[Vec<EquityPoint>]) -> Vec<EquityPoint> {
    match curves {
        [] => Vec::new(),
        [one] => one.clone(),
        _ => {
            let mut instants: Vec<i64> = curves.iter().flatten().map(|p| p.ts).collect();
            instants.sort_unstable();
            instants.dedup();
            let mut next = vec![0usize; curves.len()];
            let mut last: Vec<Option<&EquityPoint>> = vec![None; curves.len()];
            instants
                .into_iter()
                .map(|ts| {
                    let mut point = EquityPoint {
                        ts,
                        equity: Decimal::ZERO,
                        cash: Decimal::ZERO,
                    };
                    for (i, c) in curves.iter().enumerate() {
                        while next[i] < c.len() && c[next[i]].ts <= ts {
                            last[i] = Some(&c[next[i]]);
                            next[i] += 1;
                        }
                        if let Some(p) = last[i] {
                            point.equity += p.equity;
                            point.cash += p.cash;
                        }
                    }
                    point
                })
                .collect()
        }
    }
}

/// `initial` at the earlier of `start` and the first entry, then `initial` plus the running
/// sum of the trades' P&L at each exit (one point per second: the last of that second), in
/// time order. Empty without trades and without `start`.
pub fn closed_trade_curve(
    trades: &[TradeRecord],
    initial: Decimal,
    start: Option<i64>,
) -> Vec<EquityPoint> {
    let first_entry = trades.iter().map(|t| t.entry_time).min();
    let Some(t0) = [start, first_entry].into_iter().flatten().min() else {
        return Vec::new();
    };
    let mut exits: Vec<&TradeRecord> = trades.iter().collect();
    exits.sort_by_key(|t| t.exit_time);
    let mut curve = vec![EquityPoint {
        ts: t0,
        equity: initial,
        cash: initial,
    }];
    let mut equity = initial;
    for t in exits {
        equity += t.pnl;
        let point = EquityPoint {
            ts: t.exit_time,
            equity,
            cash: equity,
        };
        match curve.last_mut() {
            Some(last) if last.ts == point.ts => *last = point,
            _ => curve.push(point),
        }
    }
    curve
}

/// Paths written by `--out`.
#[derive(Clone, Debug, Serialize)]
pub struct Files {
    /// The equity and drawdown chart.
    pub equity_svg: PathBuf,
    /// The trades (the backtest's trades.csv).
    pub trades_csv: PathBuf,
    /// The curve (the backtest's equity.csv).
    pub equity_csv: PathBuf,
}

fn write_files(r: &Report, dir: &Path) -> Result<Files, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let files = Files {
        equity_svg: dir.join("equity.svg"),
        trades_csv: dir.join("trades.csv"),
        equity_csv: dir.join("equity.csv"),
    };
    let title = format!("ztraded report: {}", describe(&r.selection));
    write_equity_svg(
        &files.equity_svg,
        &EquityChart {
            title: &title,
            points: &r.curve,
            benchmark: &[],
            benchmark_label: "",
            tz: r.tz,
        },
    )
    .map_err(|e| e.to_string())?;
    write_trades_csv(&files.trades_csv, &r.trades, r.tz).map_err(|e| e.to_string())?;
    write_equity_csv(&files.equity_csv, &r.curve, None, None).map_err(|e| e.to_string())?;
    Ok(files)
}

/// `pipeline golden-cross, mode simulation, 2012-01-03 to 2012-12-31`.
fn describe(s: &Selection) -> String {
    let period = match (s.from, s.to) {
        (None, None) => "all time".to_string(),
        (Some(f), None) => format!("from {f}"),
        (None, Some(t)) => format!("to {t}"),
        (Some(f), Some(t)) => format!("{f} to {t}"),
    };
    format!(
        "{}, {}, {period}",
        s.pipeline
            .as_ref()
            .map_or_else(|| "all pipelines".to_string(), |p| format!("pipeline {p}")),
        s.mode
            .as_ref()
            .map_or_else(|| "all modes".to_string(), |m| format!("mode {m}")),
    )
}

/// Per-trade division of a cost, USD; `None` without trades.
fn per_trade(usd: Decimal, trades: usize) -> Option<Decimal> {
    (trades > 0).then(|| usd / Decimal::from(trades))
}

/// The breakdowns as (dimension, [(bucket label, bucket)]), in the order printed.
fn breakdowns(r: &Report) -> Vec<(&'static str, Vec<(String, &Bucket)>)> {
    let p = &r.performance;
    vec![
        (
            "symbol",
            p.by_symbol.iter().map(|(k, b)| (k.clone(), b)).collect(),
        ),
        (
            "weekday",
            p.by_weekday
                .iter()
                .map(|(k, b)| (weekday_name(*k).to_string(), b))
                .collect(),
        ),
        (
            "hour",
            p.by_hour
                .iter()
                .map(|(k, b)| (format!("{k:02}:00"), b))
                .collect(),
        ),
        (
            "exit_reason",
            p.by_exit_reason
                .iter()
                .map(|(k, b)| ((*k).to_string(), b))
                .collect(),
        ),
        (
            "revision",
            r.by_revision.iter().map(|(k, b)| (k.clone(), b)).collect(),
        ),
    ]
}

fn human(r: &Report, files: Option<&Files>) -> String {
    let p = &r.performance;
    let na = || "n/a".to_string();
    let usd = |d: Option<Decimal>| d.map_or_else(na, |d| format!("{} USD", format_usd(d)));
    let mut out = vec![format!(
        "Report: {} (market time zone {})",
        describe(&r.selection),
        r.tz.name()
    )];
    let curve = match r.source {
        CurveSource::Account => format!(
            "account equity of {} ({} points{})",
            if r.accounts.is_empty() {
                "no account".to_string()
            } else {
                r.accounts.join(" + ")
            },
            r.curve.len(),
            match (r.curve.first(), r.curve.last()) {
                (Some(a), Some(b)) => format!(", {} to {}", format_ts(a.ts), format_ts(b.ts)),
                _ => String::new(),
            }
        ),
        CurveSource::ClosedTrades => format!(
            "closed trades of the selection on the account's equity at the start ({} USD); open positions are not in it",
            format_usd(p.initial_equity)
        ),
    };
    out.push(format!("Equity curve: {curve}"));
    out.push(String::new());
    let total_meaning = match r.source {
        CurveSource::Account => {
            "final minus initial equity: closed trades, open positions, commissions"
        }
        CurveSource::ClosedTrades => "the closed trades' P&L",
    };
    let c = &r.costs;
    let mut rows: Vec<(&str, String)> = vec![
        ("Initial equity", usd(Some(p.initial_equity))),
        ("Final equity", usd(Some(p.final_equity))),
        (
            "Total P&L",
            format!("{} USD ({total_meaning})", format_usd(p.total_pnl)),
        ),
        (
            "Closed-trade P&L",
            format!(
                "{} USD (Σ pnl of the trades, after their fees)",
                format_usd(p.closed_pnl)
            ),
        ),
        (
            "Return",
            p.return_pct
                .map_or_else(na, |v| format!("{}%", format_pct(v))),
        ),
    ];
    rows.extend(p.trade_rows());
    rows.extend([
        (
            "LLM cost",
            format!(
                "{} USD ({} input + {} output tokens), per trade {}",
                format_usd(c.llm_usd),
                c.input_tokens,
                c.output_tokens,
                usd(per_trade(c.llm_usd, p.trades))
            ),
        ),
        (
            "All costs",
            format!(
                "{} USD ({} cost records of {} executions), per trade {}",
                format_usd(c.total_usd),
                c.records,
                c.executions,
                usd(per_trade(c.total_usd, p.trades))
            ),
        ),
        (
            "Net P&L",
            format!(
                "{} USD (closed-trade P&L minus all costs)",
                format_usd(p.closed_pnl - c.total_usd)
            ),
        ),
        (
            "Open positions",
            format!(
                "{} now, unrealized {} USD at the last price in the store",
                r.open_positions,
                format_usd(r.unrealized_pnl)
            ),
        ),
    ]);
    out.extend(aligned_lines(&rows));
    out.push(String::new());
    out.extend(p.breakdown_lines());
    out.extend(p.exit_reason_lines());
    out.extend(bucket_lines(
        "By config revision (the pipeline's revision at the entry)",
        r.by_revision.iter().map(|(k, b)| (k.clone(), b)).collect(),
    ));
    out.push(String::new());
    match files {
        Some(f) => out.push(format!(
            "Wrote {} (equity and drawdown), {} and {}",
            f.equity_svg.display(),
            f.trades_csv.display(),
            f.equity_csv.display()
        )),
        None => out.push("--out DIR writes the equity and drawdown chart (equity.svg), trades.csv and equity.csv".to_string()),
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

fn bucket_json(rows: &[(String, &Bucket)]) -> Value {
    Value::Array(
        rows.iter()
            .map(|(k, b)| {
                json!({
                    "bucket": k,
                    "trades": b.trades,
                    "wins": b.wins,
                    "losses": b.losses,
                    "win_rate_pct": b.win_rate_pct,
                    "pnl_usd": b.pnl,
                })
            })
            .collect(),
    )
}

fn to_json(r: &Report, files: Option<&Files>) -> Value {
    let p = &r.performance;
    let c = &r.costs;
    let bound = |t: i64| (t != i64::MIN && t != i64::MAX).then(|| format_ts(t));
    let mut breakdown = serde_json::Map::new();
    for (dimension, rows) in breakdowns(r) {
        breakdown.insert(dimension.to_string(), bucket_json(&rows));
    }
    json!({
        "filters": {
            "pipeline": r.selection.pipeline,
            "mode": r.selection.mode,
            "from": bound(r.bounds.0),
            "to": bound(r.bounds.1),
            "timezone": r.tz.name(),
        },
        "equity_curve": {
            "source": r.source,
            "accounts": r.accounts,
            "points": r.curve.len(),
            "first": r.curve.first().map(|p| format_ts(p.ts)),
            "last": r.curve.last().map(|p| format_ts(p.ts)),
        },
        "metrics": {
            "trades": p.trades,
            "wins": p.wins,
            "losses": p.losses,
            "win_rate_pct": p.win_rate_pct,
            "initial_equity_usd": p.initial_equity,
            "final_equity_usd": p.final_equity,
            "total_pnl_usd": p.total_pnl,
            "closed_pnl_usd": p.closed_pnl,
            "return_pct": p.return_pct,
            "cagr_pct": p.cagr_pct,
            "gross_profit_usd": p.gross_profit,
            "gross_loss_usd": p.gross_loss,
            "profit_factor": p.profit_factor,
            "expectancy_usd": p.expectancy,
            "average_win_usd": p.average_win,
            "average_loss_usd": p.average_loss,
            "largest_win_usd": p.largest_win,
            "largest_loss_usd": p.largest_loss,
            "max_drawdown": p.max_drawdown.map(|d| json!({
                "pct": d.pct,
                "usd": d.usd,
                "peak_at": format_ts(d.peak_ts),
                "peak_equity_usd": d.peak_equity,
                "trough_at": format_ts(d.trough_ts),
                "trough_equity_usd": d.trough_equity,
            })),
            "sharpe_ratio": p.sharpe_ratio,
            "sortino_ratio": p.sortino_ratio,
            "daily_returns": p.daily_returns,
            "exposure_pct": p.exposure_pct,
            "average_holding_seconds": p.average_holding_seconds,
            "total_fees_usd": p.total_fees,
        },
        "costs": {
            "records": c.records,
            "executions": c.executions,
            "total_usd": c.total_usd,
            "llm_usd": c.llm_usd,
            "input_tokens": c.input_tokens,
            "output_tokens": c.output_tokens,
            "per_trade_usd": per_trade(c.total_usd, p.trades),
            "llm_per_trade_usd": per_trade(c.llm_usd, p.trades),
        },
        "net_pnl_usd": p.closed_pnl - c.total_usd,
        "open_positions": {
            "count": r.open_positions,
            "unrealized_pnl_usd": r.unrealized_pnl,
        },
        "breakdowns": breakdown,
        "files": files,
    })
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_row(out: &mut String, dimension: &str, bucket: &str, b: &Bucket) {
    out.push_str(&format!(
        "{},{},{},{},{},{:.2},{}\n",
        field(dimension),
        field(bucket),
        b.trades,
        b.wins,
        b.losses,
        b.win_rate_pct,
        b.pnl.round_dp(2)
    ));
}

fn csv(r: &Report) -> String {
    let p = &r.performance;
    let mut out = String::from("dimension,bucket,trades,wins,losses,win_rate_pct,pnl_usd\n");
    let all = Bucket {
        trades: p.trades,
        wins: p.wins,
        losses: p.losses,
        win_rate_pct: p.win_rate_pct.unwrap_or(0.0),
        pnl: p.closed_pnl,
    };
    csv_row(&mut out, "all", "all", &all);
    for (dimension, rows) in breakdowns(r) {
        for (k, b) in rows {
            csv_row(&mut out, dimension, &k, b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::dec;

    fn point(ts: i64, equity: Decimal) -> EquityPoint {
        EquityPoint {
            ts,
            equity,
            cash: equity,
        }
    }

    #[test]
    fn curves_are_summed_at_every_instant() {
        let a = vec![point(10, dec!(100)), point(30, dec!(110))];
        let b = vec![point(20, dec!(50)), point(30, dec!(40))];
        let sum = sum_curves(&[a, b]);
        let got: Vec<(i64, Decimal)> = sum.iter().map(|p| (p.ts, p.equity)).collect();
        assert_eq!(got, vec![(10, dec!(100)), (20, dec!(150)), (30, dec!(150))]);
    }

    fn trade(entry: i64, exit: i64, pnl: Decimal) -> TradeRecord {
        TradeRecord {
            pipeline: "p".into(),
            symbol: "AAPL".into(),
            side: PositionSide::Long,
            entry_time: entry,
            exit_time: exit,
            entry_price: dec!(10),
            exit_price: dec!(11),
            quantity: dec!(1),
            stop_loss: None,
            final_stop: None,
            target_1: None,
            target_2: None,
            exit_reason: crate::broker::OrderPurpose::ExitRule,
            pnl,
            fees: Decimal::ZERO,
            mode: "simulation".into(),
        }
    }

    #[test]
    fn the_closed_trade_curve_adds_each_trade_at_its_exit() {
        let trades = [
            trade(50, 300, dec!(-2)),
            trade(10, 100, dec!(5)),
            trade(150, 300, dec!(1)),
        ];
        let curve = closed_trade_curve(&trades, dec!(1000), Some(20));
        let got: Vec<(i64, Decimal)> = curve.iter().map(|p| (p.ts, p.equity)).collect();
        // Starts at the first entry (before the account's first point); two exits in the
        // same second are one point.
        assert_eq!(
            got,
            vec![(10, dec!(1000)), (100, dec!(1005)), (300, dec!(1004))]
        );
        assert!(closed_trade_curve(&[], dec!(1000), None).is_empty());
        assert_eq!(closed_trade_curve(&[], dec!(1000), Some(7)).len(), 1);
    }

    #[test]
    fn bounds_are_local_days_with_the_last_included() {
        let tz = chrono_tz::America::New_York;
        let s = Selection {
            from: NaiveDate::from_ymd_opt(2012, 1, 3),
            to: NaiveDate::from_ymd_opt(2012, 1, 3),
            ..Selection::default()
        };
        let (from, to) = bounds(&s, tz);
        assert_eq!(from, 1_325_566_800); // 2012-01-03T05:00:00Z
        assert_eq!(to - from, 86_400);
        assert_eq!(bounds(&Selection::default(), tz), (i64::MIN, i64::MAX));
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(field("AAPL"), "AAPL");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
