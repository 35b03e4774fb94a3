//! Performance analytics of trades and equity curves.
//!
//! [`Performance::compute`] turns the completed trades ([`TradeRecord`]) and the equity curve
//! ([`EquityPoint`]) of a backtest or of the store into the usual statistics: P&L, win rate,
//! profit factor, expectancy, maximum drawdown, Sharpe and Sortino ratios, exposure, holding
//! time, and breakdowns by symbol, by weekday of exit and by hour of entry.
//!
//! Money stays [`Decimal`] (USD). Ratios computed from returns (Sharpe, Sortino), from counts
//! (win rate) or from time (exposure) are `f64`.
//!
//! # Formulas
//!
//! * A trade is a **win** when its `pnl` (after fees) is `> 0`, a **loss** when `< 0`; a trade
//!   with `pnl == 0` is neither but counts in the number of trades.
//! * **Win rate** = `wins / trades × 100` (percent 0-100).
//! * **Gross profit** = Σ pnl over wins; **gross loss** = Σ pnl over losses (≤ 0).
//! * **Profit factor** = `gross profit / |gross loss|` (none without losses).
//! * **Expectancy** = `total P&L / trades` (average P&L per trade, USD).
//! * **Return** = `(final equity − initial equity) / initial equity × 100`.
//! * **Maximum drawdown**: with the running peak `P_t = max_{s≤t} E_s` of the equity curve,
//!   the drawdown at `t` is `(P_t − E_t) / P_t × 100` percent; the maximum drawdown is the
//!   largest one (earliest on ties), reported with its depth in USD (`P_t − E_t`) and the
//!   timestamps of its peak and trough (Magdon-Ismail & Atiya, "Maximum drawdown",
//!   Risk Magazine, 2004).
//! * **Daily returns**: the equity curve is resampled to the last point of each UTC calendar
//!   day that has points (days without points are skipped, so a return may span a weekend or a
//!   holiday), and the simple return of day `d` is `r_d = E_d / E_{d−1} − 1`. `n` days give
//!   `n − 1` returns.
//! * **Sharpe ratio** (Sharpe, "Mutual fund performance", J. Business 39, 1966; "The Sharpe
//!   ratio", J. Portfolio Management 21(1), 1994), risk-free rate 0:
//!   `S = mean(r) / sd(r) × √252`, with the sample standard deviation
//!   `sd(r) = sqrt(Σ (r_d − mean(r))² / (n − 1))`. None with fewer than two returns or when
//!   every return is the same (zero variance).
//! * **Sortino ratio** (Sortino & Price, "Performance measurement in a downside risk
//!   framework", J. Investing 3(3), 1994), target return `T = 0`:
//!   `So = (mean(r) − T) / DD × √252`, with the downside deviation taken over **all** `n`
//!   periods, `DD = sqrt(Σ min(r_d − T, 0)² / n)`. None with fewer than two returns or when no
//!   return is below the target (`DD = 0`).
//! * Both ratios are annualised with `√252` ([`TRADING_DAYS_PER_YEAR`] trading days; Lo,
//!   "The statistics of Sharpe ratios", Financial Analysts Journal 58(4), 2002, for the
//!   square-root-of-time scaling of i.i.d. returns).
//! * **Exposure** = time during which at least one trade was open (union of the
//!   `[entry_time, exit_time]` intervals, clipped to the curve) / time spanned by the equity
//!   curve (first to last point) × 100.

use crate::engine::trades::{EquityPoint, TradeRecord};
use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use chrono_tz::Tz;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use std::collections::BTreeMap;

/// Trading days per year used to annualise daily Sharpe and Sortino ratios (`√252`).
pub const TRADING_DAYS_PER_YEAR: f64 = 252.0;

/// Seconds in a UTC calendar day (Unix time has no leap seconds).
const SECONDS_PER_DAY: i64 = 86_400;

/// Trades, wins, losses and P&L of one breakdown bucket (a symbol, a weekday, an hour).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    /// Number of trades in the bucket (always ≥ 1).
    pub trades: usize,
    /// Trades with `pnl > 0`.
    pub wins: usize,
    /// Trades with `pnl < 0`.
    pub losses: usize,
    /// `wins / trades × 100`, percent 0-100.
    pub win_rate_pct: f64,
    /// Sum of the trades' P&L after fees, USD.
    pub pnl: Decimal,
}

#[derive(Default)]
struct BucketAcc {
    trades: usize,
    wins: usize,
    losses: usize,
    pnl: Decimal,
}

impl BucketAcc {
    fn add(&mut self, pnl: Decimal) {
        self.trades += 1;
        if pnl > Decimal::ZERO {
            self.wins += 1;
        } else if pnl < Decimal::ZERO {
            self.losses += 1;
        }
        self.pnl += pnl;
    }

    fn finish(self) -> Bucket {
        Bucket {
            trades: self.trades,
            wins: self.wins,
            losses: self.losses,
            win_rate_pct: pct_of_count(self.wins, self.trades).unwrap_or(0.0),
            pnl: self.pnl,
        }
    }
}

/// The maximum drawdown of an equity curve: the largest decline from a running peak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Drawdown {
    /// `(peak − trough) / peak × 100`, percent 0-100 (0 when the curve never declines).
    pub pct: Decimal,
    /// `peak − trough`, USD (≥ 0).
    pub usd: Decimal,
    /// Unix seconds of the peak (the first point reaching the peak equity).
    pub peak_ts: i64,
    /// Equity at the peak, USD.
    pub peak_equity: Decimal,
    /// Unix seconds of the trough.
    pub trough_ts: i64,
    /// Equity at the trough, USD.
    pub trough_equity: Decimal,
}

/// Performance statistics of a set of trades and an equity curve.
///
/// Built by [`Performance::compute`]; see the [module documentation](self) for every formula.
/// Fields that are undefined for the input (e.g. averages without trades) are `None`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Performance {
    /// Time zone of the weekday and hour breakdowns.
    pub tz: Tz,
    /// Equity at the start, USD.
    pub initial_equity: Decimal,
    /// Equity of the last equity point, USD; `initial_equity + total_pnl` without points.
    pub final_equity: Decimal,
    /// Number of trades.
    pub trades: usize,
    /// Trades with `pnl > 0`.
    pub wins: usize,
    /// Trades with `pnl < 0`.
    pub losses: usize,
    /// `wins / trades × 100`, percent 0-100; None without trades.
    pub win_rate_pct: Option<f64>,
    /// Σ pnl of all trades (after fees), USD.
    pub total_pnl: Decimal,
    /// `(final_equity − initial_equity) / initial_equity × 100`, percent; None when the
    /// initial equity is not positive.
    pub return_pct: Option<Decimal>,
    /// Σ pnl of the winning trades, USD (≥ 0).
    pub gross_profit: Decimal,
    /// Σ pnl of the losing trades, USD (≤ 0).
    pub gross_loss: Decimal,
    /// `gross_profit / |gross_loss|`; None when there is no loss.
    pub profit_factor: Option<f64>,
    /// `total_pnl / trades`: average P&L per trade, USD; None without trades.
    pub expectancy: Option<Decimal>,
    /// Average P&L of the winning trades, USD; None without wins.
    pub average_win: Option<Decimal>,
    /// Average P&L of the losing trades, USD (negative); None without losses.
    pub average_loss: Option<Decimal>,
    /// Largest P&L of a winning trade, USD; None without wins.
    pub largest_win: Option<Decimal>,
    /// Most negative P&L of a losing trade, USD; None without losses.
    pub largest_loss: Option<Decimal>,
    /// Maximum drawdown of the equity curve; None without equity points.
    pub max_drawdown: Option<Drawdown>,
    /// Number of daily returns behind the Sharpe and Sortino ratios.
    pub daily_returns: usize,
    /// Annualised Sharpe ratio of daily returns (risk-free rate 0); None with fewer than two
    /// daily returns or zero variance.
    pub sharpe_ratio: Option<f64>,
    /// Annualised Sortino ratio of daily returns (target 0); None with fewer than two daily
    /// returns or no return below 0.
    pub sortino_ratio: Option<f64>,
    /// Share of the equity curve's time span with at least one open trade, percent 0-100;
    /// None when the curve spans no time.
    pub exposure_pct: Option<f64>,
    /// Mean of `exit_time − entry_time`, seconds; None without trades.
    pub average_holding_seconds: Option<f64>,
    /// Σ fees of all trades, USD.
    pub total_fees: Decimal,
    /// Trades by symbol.
    pub by_symbol: BTreeMap<String, Bucket>,
    /// Trades by weekday of the exit in `tz`, keyed by the ISO 8601 weekday number
    /// (1 = Monday … 7 = Sunday; see [`weekday_name`]).
    pub by_weekday: BTreeMap<u8, Bucket>,
    /// Trades by hour (0-23) of the entry in `tz`.
    pub by_hour: BTreeMap<u8, Bucket>,
}

impl Performance {
    /// Computes the statistics of `trades` and the equity curve `equity` of an account that
    /// started with `initial_equity` USD; weekday and hour breakdowns are taken in `tz`.
    ///
    /// `equity` should be in time order and start with the initial equity; points out of order
    /// are sorted by timestamp (stable). Trades may be in any order. Timestamps outside
    /// chrono's range leave their trade out of the weekday and hour breakdowns.
    pub fn compute(
        trades: &[TradeRecord],
        equity: &[EquityPoint],
        initial_equity: Decimal,
        tz: Tz,
    ) -> Performance {
        let sorted;
        let equity: &[EquityPoint] = if equity.is_sorted_by_key(|p| p.ts) {
            equity
        } else {
            let mut v = equity.to_vec();
            v.sort_by_key(|p| p.ts);
            sorted = v;
            &sorted
        };

        let mut wins = 0usize;
        let mut losses = 0usize;
        let mut total_pnl = Decimal::ZERO;
        let mut gross_profit = Decimal::ZERO;
        let mut gross_loss = Decimal::ZERO;
        let mut largest_win: Option<Decimal> = None;
        let mut largest_loss: Option<Decimal> = None;
        let mut total_fees = Decimal::ZERO;
        let mut holding_sum: i128 = 0;
        let mut by_symbol: BTreeMap<String, BucketAcc> = BTreeMap::new();
        let mut by_weekday: BTreeMap<u8, BucketAcc> = BTreeMap::new();
        let mut by_hour: BTreeMap<u8, BucketAcc> = BTreeMap::new();

        for t in trades {
            total_pnl += t.pnl;
            total_fees += t.fees;
            holding_sum += i128::from(t.exit_time) - i128::from(t.entry_time);
            if t.pnl > Decimal::ZERO {
                wins += 1;
                gross_profit += t.pnl;
                largest_win = Some(largest_win.map_or(t.pnl, |w| w.max(t.pnl)));
            } else if t.pnl < Decimal::ZERO {
                losses += 1;
                gross_loss += t.pnl;
                largest_loss = Some(largest_loss.map_or(t.pnl, |l| l.min(t.pnl)));
            }
            by_symbol.entry(t.symbol.clone()).or_default().add(t.pnl);
            if let Some(exit) = DateTime::<Utc>::from_timestamp(t.exit_time, 0) {
                let wd = exit.with_timezone(&tz).weekday().number_from_monday() as u8;
                by_weekday.entry(wd).or_default().add(t.pnl);
            }
            if let Some(entry) = DateTime::<Utc>::from_timestamp(t.entry_time, 0) {
                let hour = entry.with_timezone(&tz).hour() as u8;
                by_hour.entry(hour).or_default().add(t.pnl);
            }
        }

        let n = trades.len();
        let n_dec = Decimal::from(n);
        let final_equity = equity
            .last()
            .map_or(initial_equity + total_pnl, |p| p.equity);
        let return_pct = (initial_equity > Decimal::ZERO)
            .then(|| (final_equity - initial_equity) / initial_equity * Decimal::ONE_HUNDRED);
        let returns = daily_returns(equity);

        Performance {
            tz,
            initial_equity,
            final_equity,
            trades: n,
            wins,
            losses,
            win_rate_pct: pct_of_count(wins, n),
            total_pnl,
            return_pct,
            gross_profit,
            gross_loss,
            profit_factor: (losses > 0 && !gross_loss.is_zero())
                .then(|| decimal_to_f64(gross_profit) / decimal_to_f64(-gross_loss)),
            expectancy: (n > 0).then(|| total_pnl / n_dec),
            average_win: (wins > 0).then(|| gross_profit / Decimal::from(wins)),
            average_loss: (losses > 0).then(|| gross_loss / Decimal::from(losses)),
            largest_win,
            largest_loss,
            max_drawdown: max_drawdown(equity),
            daily_returns: returns.len(),
            sharpe_ratio: sharpe_ratio(&returns),
            sortino_ratio: sortino_ratio(&returns),
            exposure_pct: exposure_pct(trades, equity),
            average_holding_seconds: (n > 0).then(|| holding_sum as f64 / n as f64),
            total_fees,
            by_symbol: by_symbol
                .into_iter()
                .map(|(k, v)| (k, v.finish()))
                .collect(),
            by_weekday: by_weekday
                .into_iter()
                .map(|(k, v)| (k, v.finish()))
                .collect(),
            by_hour: by_hour.into_iter().map(|(k, v)| (k, v.finish())).collect(),
        }
    }

    /// Human summary for `ztraded backtest`: one `label: value` line per statistic, values
    /// aligned in one column, with units (`USD`, `%`), money with thousands separators and
    /// two decimals (e.g. `Total P&L:            1,234.56 USD`), ratios with two decimals,
    /// `n/a` for undefined values.
    pub fn summary_lines(&self) -> Vec<String> {
        let na = || "n/a".to_string();
        let usd = |d: Option<Decimal>| d.map_or_else(na, |d| format!("{} USD", format_usd(d)));
        let pct_f = |p: Option<f64>| p.map_or_else(na, |p| format!("{p:.2}%"));
        let ratio = |r: Option<f64>| r.map_or_else(na, |r| format!("{r:.2}"));
        let drawdown = self.max_drawdown.map_or_else(na, |d| {
            format!(
                "{}% ({} USD), peak {} at {}, trough {} at {}",
                format_pct(d.pct),
                format_usd(d.usd),
                format_usd(d.peak_equity),
                format_ts(d.peak_ts),
                format_usd(d.trough_equity),
                format_ts(d.trough_ts)
            )
        });
        let holding = self.average_holding_seconds.map_or_else(na, |s| {
            let secs = s.round().max(0.0);
            if secs >= 86_400.0 {
                format!("{:.1} days", secs / 86_400.0)
            } else if secs >= 3_600.0 {
                format!("{:.1} hours", secs / 3_600.0)
            } else {
                format!("{:.0} minutes", secs / 60.0)
            }
        });
        let rows: Vec<(&str, String)> = vec![
            ("Initial equity", usd(Some(self.initial_equity))),
            ("Final equity", usd(Some(self.final_equity))),
            (
                "Return",
                self.return_pct
                    .map_or_else(na, |p| format!("{}%", format_pct(p))),
            ),
            ("Total P&L", usd(Some(self.total_pnl))),
            ("Trades", self.trades.to_string()),
            ("Wins", self.wins.to_string()),
            ("Losses", self.losses.to_string()),
            ("Win rate", pct_f(self.win_rate_pct)),
            ("Gross profit", usd(Some(self.gross_profit))),
            ("Gross loss", usd(Some(self.gross_loss))),
            ("Profit factor", ratio(self.profit_factor)),
            (
                "Expectancy",
                self.expectancy
                    .map_or_else(na, |e| format!("{} USD per trade", format_usd(e))),
            ),
            ("Average win", usd(self.average_win)),
            ("Average loss", usd(self.average_loss)),
            ("Largest win", usd(self.largest_win)),
            ("Largest loss", usd(self.largest_loss)),
            ("Max drawdown", drawdown),
            (
                "Sharpe ratio",
                format!(
                    "{} (annualised, {} daily returns)",
                    ratio(self.sharpe_ratio),
                    self.daily_returns
                ),
            ),
            ("Sortino ratio", ratio(self.sortino_ratio)),
            ("Exposure", pct_f(self.exposure_pct)),
            ("Average holding time", holding),
            ("Total fees", usd(Some(self.total_fees))),
        ];
        aligned(&rows)
    }

    /// Breakdown tables for `ztraded report`: a header line per breakdown (by symbol, by
    /// weekday of exit, by hour of entry, the last two naming the time zone) followed by one
    /// line per bucket in key order: `  KEY  trades N  win rate P%  P&L X USD`, columns
    /// aligned. Breakdowns without trades print `  (none)`.
    pub fn breakdown_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut section = |header: String, rows: Vec<(String, &Bucket)>| {
            out.push(header);
            if rows.is_empty() {
                out.push("  (none)".to_string());
                return;
            }
            let key_w = rows
                .iter()
                .map(|(k, _)| k.chars().count())
                .max()
                .unwrap_or(0);
            let cells: Vec<[String; 3]> = rows
                .iter()
                .map(|(_, b)| {
                    [
                        b.trades.to_string(),
                        format!("{:.2}%", b.win_rate_pct),
                        format!("{} USD", format_usd(b.pnl)),
                    ]
                })
                .collect();
            let w: [usize; 3] = std::array::from_fn(|i| {
                cells
                    .iter()
                    .map(|c| c[i].chars().count())
                    .max()
                    .unwrap_or(0)
            });
            for ((key, _), c) in rows.iter().zip(&cells) {
                out.push(format!(
                    "  {key:<key_w$}  trades {:>w0$}  win rate {:>w1$}  P&L {:>w2$}",
                    c[0],
                    c[1],
                    c[2],
                    w0 = w[0],
                    w1 = w[1],
                    w2 = w[2],
                ));
            }
        };
        section(
            "By symbol".to_string(),
            self.by_symbol.iter().map(|(k, b)| (k.clone(), b)).collect(),
        );
        section(
            format!("By weekday of exit ({})", self.tz.name()),
            self.by_weekday
                .iter()
                .map(|(k, b)| (weekday_name(*k).to_string(), b))
                .collect(),
        );
        section(
            format!("By hour of entry ({})", self.tz.name()),
            self.by_hour
                .iter()
                .map(|(k, b)| (format!("{k:02}:00"), b))
                .collect(),
        );
        out
    }
}

/// English three-letter name of an ISO 8601 weekday number (1 = `Mon` … 7 = `Sun`); `?` for
/// any other number.
pub fn weekday_name(iso: u8) -> &'static str {
    match iso {
        1 => "Mon",
        2 => "Tue",
        3 => "Wed",
        4 => "Thu",
        5 => "Fri",
        6 => "Sat",
        7 => "Sun",
        _ => "?",
    }
}

/// The drawdown of every point of an equity curve from its running peak, percent 0-100:
/// `(max_{s≤t} E_s − E_t) / max_{s≤t} E_s × 100` (0 while the peak is not positive). Same
/// length and order as `points`.
pub fn drawdown_pct_series(points: &[EquityPoint]) -> Vec<Decimal> {
    let mut peak: Option<Decimal> = None;
    points
        .iter()
        .map(|p| {
            let pk = peak.map_or(p.equity, |pk| pk.max(p.equity));
            peak = Some(pk);
            drawdown_pct(pk, p.equity)
        })
        .collect()
}

fn drawdown_pct(peak: Decimal, equity: Decimal) -> Decimal {
    if peak > Decimal::ZERO {
        (peak - equity) / peak * Decimal::ONE_HUNDRED
    } else {
        Decimal::ZERO
    }
}

/// Formats USD with thousands separators and two decimals, rounded half away from zero:
/// `1234.565` → `1,234.57`, `-0.004` → `0.00`.
pub fn format_usd(d: Decimal) -> String {
    let r = d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    let r = if r.is_zero() { Decimal::ZERO } else { r };
    let s = format!("{r:.2}");
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", s.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "00"));
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{frac}")
}

/// Formats a percentage with two decimals, rounded half away from zero (`12.345` → `12.35`).
fn format_pct(d: Decimal) -> String {
    let r = d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    let r = if r.is_zero() { Decimal::ZERO } else { r };
    format!("{r:.2}")
}

/// RFC 3339 UTC time of Unix seconds (`2012-01-03T21:00:00Z`), or the raw number when out of
/// range.
fn format_ts(ts: i64) -> String {
    DateTime::<Utc>::from_timestamp(ts, 0).map_or_else(
        || ts.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

fn aligned(rows: &[(&str, String)]) -> Vec<String> {
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    rows.iter()
        .map(|(label, value)| format!("{:<width$} {value}", format!("{label}:")))
        .collect()
}

fn pct_of_count(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64 * 100.0)
}

/// Correctly rounded conversion (through the decimal string, which Rust parses exactly).
pub(crate) fn decimal_to_f64(d: Decimal) -> f64 {
    d.to_string().parse().unwrap_or(f64::NAN)
}

fn max_drawdown(points: &[EquityPoint]) -> Option<Drawdown> {
    let first = points.first()?;
    let mut peak = *first;
    let mut best = Drawdown {
        pct: Decimal::ZERO,
        usd: Decimal::ZERO,
        peak_ts: first.ts,
        peak_equity: first.equity,
        trough_ts: first.ts,
        trough_equity: first.equity,
    };
    for p in points {
        if p.equity > peak.equity {
            peak = *p;
            continue;
        }
        let usd = peak.equity - p.equity;
        let pct = drawdown_pct(peak.equity, p.equity);
        if (pct, usd) > (best.pct, best.usd) {
            best = Drawdown {
                pct,
                usd,
                peak_ts: peak.ts,
                peak_equity: peak.equity,
                trough_ts: p.ts,
                trough_equity: p.equity,
            };
        }
    }
    Some(best)
}

/// Simple returns between the last points of consecutive UTC calendar days that have points.
fn daily_returns(points: &[EquityPoint]) -> Vec<f64> {
    let mut closes: Vec<Decimal> = Vec::new();
    let mut last_day: Option<i64> = None;
    for p in points {
        let day = p.ts.div_euclid(SECONDS_PER_DAY);
        if last_day == Some(day) {
            if let Some(c) = closes.last_mut() {
                *c = p.equity;
            }
        } else {
            closes.push(p.equity);
            last_day = Some(day);
        }
    }
    closes
        .windows(2)
        .filter(|w| !w[0].is_zero())
        .map(|w| decimal_to_f64(w[1] / w[0] - Decimal::ONE))
        .collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn sharpe_ratio(returns: &[f64]) -> Option<f64> {
    if returns.len() < 2 || returns.iter().all(|r| *r == returns[0]) {
        return None;
    }
    let m = mean(returns);
    let var = returns.iter().map(|r| (r - m).powi(2)).sum::<f64>() / (returns.len() - 1) as f64;
    let sd = var.sqrt();
    (sd > 0.0 && sd.is_finite()).then(|| m / sd * TRADING_DAYS_PER_YEAR.sqrt())
}

fn sortino_ratio(returns: &[f64]) -> Option<f64> {
    if returns.len() < 2 {
        return None;
    }
    let m = mean(returns);
    let dd =
        (returns.iter().map(|r| r.min(0.0).powi(2)).sum::<f64>() / returns.len() as f64).sqrt();
    (dd > 0.0 && dd.is_finite()).then(|| m / dd * TRADING_DAYS_PER_YEAR.sqrt())
}

fn exposure_pct(trades: &[TradeRecord], points: &[EquityPoint]) -> Option<f64> {
    let start = points.first()?.ts;
    let end = points.last()?.ts;
    if end <= start {
        return None;
    }
    let mut intervals: Vec<(i64, i64)> = trades
        .iter()
        .map(|t| (t.entry_time.max(start), t.exit_time.min(end)))
        .filter(|(a, b)| b > a)
        .collect();
    intervals.sort_unstable();
    let mut covered: i64 = 0;
    let mut current: Option<(i64, i64)> = None;
    for (a, b) in intervals {
        match current {
            Some((ca, cb)) if a <= cb => current = Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                covered += cb - ca;
                current = Some((a, b));
            }
            None => current = Some((a, b)),
        }
    }
    if let Some((ca, cb)) = current {
        covered += cb - ca;
    }
    Some(covered as f64 / (end - start) as f64 * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{OrderPurpose, PositionSide};
    use rust_decimal::dec;

    fn trade(
        symbol: &str,
        entry_time: i64,
        exit_time: i64,
        pnl: Decimal,
        fees: Decimal,
    ) -> TradeRecord {
        TradeRecord {
            pipeline: "p".to_string(),
            symbol: symbol.to_string(),
            side: PositionSide::Long,
            entry_time,
            exit_time,
            entry_price: dec!(100),
            exit_price: dec!(101),
            quantity: dec!(10),
            stop_loss: None,
            final_stop: None,
            target_1: None,
            target_2: None,
            exit_reason: OrderPurpose::ExitRule,
            pnl,
            fees,
            mode: "simulation".to_string(),
        }
    }

    fn point(ts: i64, equity: Decimal) -> EquityPoint {
        EquityPoint {
            ts,
            equity,
            cash: equity,
        }
    }

    /// Five trades in the first two weeks of January 2024 (New York is UTC-5 then).
    fn sample_trades() -> Vec<TradeRecord> {
        vec![
            // Tue 2024-01-02 09:30 → 15:00 New York.
            trade(
                "AAPL",
                1_704_205_800,
                1_704_225_600,
                dec!(150.00),
                dec!(2.00),
            ),
            // Wed 2024-01-03 10:00 → Thu 2024-01-04 10:00 New York.
            trade(
                "AAPL",
                1_704_294_000,
                1_704_380_400,
                dec!(-50.00),
                dec!(2.00),
            ),
            // Thu 2024-01-04 09:30 → Fri 2024-01-05 15:30 New York.
            trade(
                "MSFT",
                1_704_378_600,
                1_704_486_600,
                dec!(250.00),
                dec!(3.00),
            ),
            // Mon 2024-01-08 10:30 → Mon 21:00 New York = Tue 2024-01-09 02:00 UTC.
            trade(
                "MSFT",
                1_704_727_800,
                1_704_765_600,
                dec!(-100.00),
                dec!(1.50),
            ),
            // Tue 2024-01-09 09:30 → 11:00 New York, breakeven.
            trade("GOOG", 1_704_810_600, 1_704_816_000, dec!(0), dec!(1.00)),
        ]
    }

    fn sample_equity() -> Vec<EquityPoint> {
        vec![
            point(1_704_204_000, dec!(10000)), // 2024-01-02T14:00Z
            point(1_704_225_600, dec!(10150)), // 2024-01-02T20:00Z
            point(1_704_312_000, dec!(10120)), // 2024-01-03T20:00Z
            point(1_704_380_400, dec!(10100)), // 2024-01-04T15:00Z
            point(1_704_402_000, dec!(10050)), // 2024-01-04T21:00Z
            point(1_704_486_600, dec!(10350)), // 2024-01-05T20:30Z
            point(1_704_747_600, dec!(10300)), // 2024-01-08T21:00Z
            point(1_704_765_600, dec!(10250)), // 2024-01-09T02:00Z
            point(1_704_816_000, dec!(10250)), // 2024-01-09T16:00Z
        ]
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12
    }

    fn ny() -> Tz {
        chrono_tz::America::New_York
    }

    #[test]
    fn trade_statistics_by_hand() {
        let p = Performance::compute(&sample_trades(), &sample_equity(), dec!(10000), ny());
        assert_eq!((p.trades, p.wins, p.losses), (5, 2, 2));
        assert_eq!(p.win_rate_pct, Some(40.0));
        assert_eq!(p.total_pnl, dec!(250));
        assert_eq!(p.final_equity, dec!(10250));
        assert_eq!(p.return_pct, Some(dec!(2.5)));
        assert_eq!(p.gross_profit, dec!(400));
        assert_eq!(p.gross_loss, dec!(-150));
        // 400 / 150 = 8 / 3.
        assert!(close(p.profit_factor.unwrap(), 8.0 / 3.0));
        assert_eq!(p.expectancy, Some(dec!(50)));
        assert_eq!(p.average_win, Some(dec!(200)));
        assert_eq!(p.average_loss, Some(dec!(-75)));
        assert_eq!(p.largest_win, Some(dec!(250)));
        assert_eq!(p.largest_loss, Some(dec!(-100)));
        assert_eq!(p.total_fees, dec!(9.50));
        // Holding times 19800 + 86400 + 108000 + 37800 + 5400 = 257400 s over 5 trades.
        assert_eq!(p.average_holding_seconds, Some(51_480.0));
        // Union of open intervals: 19800 + (1704486600 − 1704294000 = 192600) + 37800 + 5400
        // = 255600 s over the curve's 612000 s.
        assert!(close(
            p.exposure_pct.unwrap(),
            255_600.0 / 612_000.0 * 100.0
        ));
        assert!(close(p.exposure_pct.unwrap(), 41.764_705_882_352_94));
    }

    #[test]
    fn max_drawdown_peak_and_trough() {
        let p = Performance::compute(&sample_trades(), &sample_equity(), dec!(10000), ny());
        let d = p.max_drawdown.unwrap();
        // 10150 (2024-01-02T20:00Z) → 10050 (2024-01-04T21:00Z): 100 USD, 0.98522…% beats the
        // later 10350 → 10250 (100 USD, 0.96618…%).
        assert_eq!(d.peak_ts, 1_704_225_600);
        assert_eq!(d.peak_equity, dec!(10150));
        assert_eq!(d.trough_ts, 1_704_402_000);
        assert_eq!(d.trough_equity, dec!(10050));
        assert_eq!(d.usd, dec!(100));
        assert_eq!(d.pct.round_dp(12), dec!(0.985221674877));
        assert_eq!(
            drawdown_pct_series(&sample_equity())
                .iter()
                .map(|d| d.round_dp(6))
                .collect::<Vec<_>>(),
            vec![
                dec!(0),
                dec!(0),
                dec!(0.295567),
                dec!(0.492611),
                dec!(0.985222),
                dec!(0),
                dec!(0.483092),
                dec!(0.966184),
                dec!(0.966184)
            ]
        );
    }

    #[test]
    fn sharpe_and_sortino_match_pandas() {
        // Reference, computed independently with pandas 3.1.1 / numpy 2.4.6:
        //   s = pd.Series(equity, index=pd.to_datetime(times, utc=True))
        //   r = s.resample('D').last().dropna().pct_change().dropna().to_numpy()
        //   sharpe  = r.mean() / r.std(ddof=1) * np.sqrt(252)
        //   sortino = r.mean() / np.sqrt(np.mean(np.minimum(r, 0) ** 2)) * np.sqrt(252)
        // Daily closes 10150, 10120, 10050, 10350, 10300, 10250 (2024-01-02 … 01-09, no
        // weekend points) give r = [-0.002955665024630516, -0.00691699604743079,
        // 0.029850746268656803, -0.004830917874396157, -0.004854368932038833].
        let p = Performance::compute(&sample_trades(), &sample_equity(), dec!(10000), ny());
        assert_eq!(p.daily_returns, 5);
        let sharpe = p.sharpe_ratio.unwrap();
        let sortino = p.sortino_ratio.unwrap();
        assert!(close(sharpe, 2.094_867_198_368_973_5), "sharpe {sharpe}");
        assert!(close(sortino, 7.183_122_513_294_32), "sortino {sortino}");
    }

    #[test]
    fn daily_returns_use_last_point_of_each_utc_day() {
        let r = daily_returns(&sample_equity());
        let expected = [
            -0.002_955_665_024_630_516,
            -0.006_916_996_047_430_79,
            0.029_850_746_268_656_803,
            -0.004_830_917_874_396_157,
            -0.004_854_368_932_038_833,
        ];
        assert_eq!(r.len(), expected.len());
        for (a, b) in r.iter().zip(expected) {
            assert!(close(*a, b), "{a} vs {b}");
        }
    }

    #[test]
    fn breakdowns_by_symbol_weekday_and_hour() {
        let p = Performance::compute(&sample_trades(), &sample_equity(), dec!(10000), ny());
        let b = |trades, wins, losses, win_rate_pct, pnl| Bucket {
            trades,
            wins,
            losses,
            win_rate_pct,
            pnl,
        };
        assert_eq!(
            p.by_symbol
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect::<Vec<_>>(),
            vec![
                ("AAPL", b(2, 1, 1, 50.0, dec!(100))),
                ("GOOG", b(1, 0, 0, 0.0, dec!(0))),
                ("MSFT", b(2, 1, 1, 50.0, dec!(150))),
            ]
        );
        // Exit weekdays in New York: Tue, Thu, Fri, Mon (21:00 local), Tue.
        assert_eq!(
            p.by_weekday.clone().into_iter().collect::<Vec<_>>(),
            vec![
                (1, b(1, 0, 1, 0.0, dec!(-100))),
                (2, b(2, 1, 0, 50.0, dec!(150))),
                (4, b(1, 0, 1, 0.0, dec!(-50))),
                (5, b(1, 1, 0, 100.0, dec!(250))),
            ]
        );
        // Entry hours in New York: 9, 10, 9, 10, 9.
        let h = p.by_hour.clone().into_iter().collect::<Vec<_>>();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].0, 9);
        assert_eq!((h[0].1.trades, h[0].1.wins, h[0].1.losses), (3, 2, 0));
        assert!(close(h[0].1.win_rate_pct, 200.0 / 3.0));
        assert_eq!(h[0].1.pnl, dec!(400));
        assert_eq!(h[1], (10, b(2, 0, 2, 0.0, dec!(-150))));

        // In UTC the Monday 21:00 exit is a Tuesday and the entries are at 14 and 15 h.
        let u = Performance::compute(&sample_trades(), &sample_equity(), dec!(10000), Tz::UTC);
        assert_eq!(
            u.by_weekday.keys().copied().collect::<Vec<_>>(),
            vec![2, 4, 5]
        );
        let tue = &u.by_weekday[&2];
        assert_eq!(
            (tue.trades, tue.wins, tue.losses, tue.pnl),
            (3, 1, 1, dec!(50))
        );
        assert!(close(tue.win_rate_pct, 100.0 / 3.0));
        assert_eq!(u.by_hour.keys().copied().collect::<Vec<_>>(), vec![14, 15]);
        assert_eq!(u.by_hour[&14].trades, 3);
        assert_eq!(u.by_hour[&15].trades, 2);
    }

    #[test]
    fn no_trades_and_one_equity_point() {
        let p = Performance::compute(
            &[],
            &[point(1_704_204_000, dec!(5000))],
            dec!(5000),
            Tz::UTC,
        );
        assert_eq!((p.trades, p.wins, p.losses), (0, 0, 0));
        assert_eq!(p.win_rate_pct, None);
        assert_eq!(p.total_pnl, dec!(0));
        assert_eq!(p.return_pct, Some(dec!(0)));
        assert_eq!(p.profit_factor, None);
        assert_eq!(p.expectancy, None);
        assert_eq!(p.average_win, None);
        assert_eq!(p.average_loss, None);
        assert_eq!(p.largest_win, None);
        assert_eq!(p.largest_loss, None);
        assert_eq!(p.average_holding_seconds, None);
        assert_eq!(p.daily_returns, 0);
        assert_eq!(p.sharpe_ratio, None);
        assert_eq!(p.sortino_ratio, None);
        assert_eq!(p.exposure_pct, None);
        let d = p.max_drawdown.unwrap();
        assert_eq!(
            (d.pct, d.usd, d.peak_ts, d.trough_ts),
            (dec!(0), dec!(0), 1_704_204_000, 1_704_204_000)
        );
        assert!(p.by_symbol.is_empty() && p.by_weekday.is_empty() && p.by_hour.is_empty());
        assert!(p.summary_lines().iter().any(|l| l.ends_with("n/a")));
    }

    #[test]
    fn no_equity_points_uses_trades_for_final_equity() {
        let p = Performance::compute(&sample_trades(), &[], dec!(10000), Tz::UTC);
        assert_eq!(p.final_equity, dec!(10250));
        assert_eq!(p.return_pct, Some(dec!(2.5)));
        assert_eq!(p.max_drawdown, None);
        assert_eq!(p.exposure_pct, None);
    }

    #[test]
    fn zero_variance_and_all_wins() {
        // Equity grows 10 % a day, every day: identical daily returns.
        let day = 86_400;
        let equity = [
            point(0, dec!(100)),
            point(day, dec!(110)),
            point(2 * day, dec!(121)),
            point(3 * day, dec!(133.1)),
        ];
        let trades = [
            trade("AAPL", 0, day, dec!(10), dec!(1)),
            trade("AAPL", day, 2 * day, dec!(11), dec!(1)),
            trade("MSFT", 2 * day, 3 * day, dec!(12.1), dec!(1)),
        ];
        let p = Performance::compute(&trades, &equity, dec!(100), Tz::UTC);
        assert_eq!(p.daily_returns, 3);
        assert_eq!(p.sharpe_ratio, None, "zero variance");
        assert_eq!(p.sortino_ratio, None, "no downside");
        assert_eq!((p.wins, p.losses), (3, 0));
        assert_eq!(p.win_rate_pct, Some(100.0));
        assert_eq!(p.profit_factor, None);
        assert_eq!(p.average_loss, None);
        assert_eq!(p.largest_loss, None);
        assert_eq!(p.gross_loss, dec!(0));
        assert_eq!(p.return_pct, Some(dec!(33.1)));
        assert_eq!(p.max_drawdown.unwrap().pct, dec!(0));
        assert_eq!(p.exposure_pct, Some(100.0));

        // A flat curve: every return is 0.
        let flat = [
            point(0, dec!(100)),
            point(day, dec!(100)),
            point(2 * day, dec!(100)),
        ];
        let f = Performance::compute(&[], &flat, dec!(100), Tz::UTC);
        assert_eq!((f.sharpe_ratio, f.sortino_ratio), (None, None));
        assert_eq!(f.exposure_pct, Some(0.0));
    }

    #[test]
    fn unsorted_equity_is_sorted() {
        let mut shuffled = sample_equity();
        shuffled.reverse();
        let a = Performance::compute(&sample_trades(), &sample_equity(), dec!(10000), ny());
        let b = Performance::compute(&sample_trades(), &shuffled, dec!(10000), ny());
        assert_eq!(a, b);
    }

    #[test]
    fn summary_lines_are_aligned_with_units() {
        let p = Performance::compute(&sample_trades(), &sample_equity(), dec!(10000), ny());
        let lines = p.summary_lines();
        let col = lines[0].find("10,000.00").unwrap();
        for l in &lines {
            let (label, _) = l.split_once(':').unwrap();
            assert!(
                l[col..].chars().next().is_some_and(|c| !c.is_whitespace()),
                "{l}"
            );
            assert!(l[label.len() + 1..col].chars().all(|c| c == ' '), "{l}");
        }
        let find = |label: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(&format!("{label}:")))
                .map(|l| l[col..].to_string())
                .unwrap()
        };
        assert_eq!(find("Initial equity"), "10,000.00 USD");
        assert_eq!(find("Final equity"), "10,250.00 USD");
        assert_eq!(find("Return"), "2.50%");
        assert_eq!(find("Total P&L"), "250.00 USD");
        assert_eq!(find("Trades"), "5");
        assert_eq!(find("Win rate"), "40.00%");
        assert_eq!(find("Gross loss"), "-150.00 USD");
        assert_eq!(find("Profit factor"), "2.67");
        assert_eq!(find("Expectancy"), "50.00 USD per trade");
        assert_eq!(
            find("Max drawdown"),
            "0.99% (100.00 USD), peak 10,150.00 at 2024-01-02T20:00:00Z, trough 10,050.00 at 2024-01-04T21:00:00Z"
        );
        assert_eq!(find("Sharpe ratio"), "2.09 (annualised, 5 daily returns)");
        assert_eq!(find("Sortino ratio"), "7.18");
        assert_eq!(find("Exposure"), "41.76%");
        assert_eq!(find("Average holding time"), "14.3 hours");
        assert_eq!(find("Total fees"), "9.50 USD");
    }

    #[test]
    fn breakdown_lines_list_every_bucket() {
        let p = Performance::compute(&sample_trades(), &sample_equity(), dec!(10000), ny());
        let lines = p.breakdown_lines();
        assert_eq!(
            lines,
            vec![
                "By symbol",
                "  AAPL  trades 2  win rate 50.00%  P&L 100.00 USD",
                "  GOOG  trades 1  win rate  0.00%  P&L   0.00 USD",
                "  MSFT  trades 2  win rate 50.00%  P&L 150.00 USD",
                "By weekday of exit (America/New_York)",
                "  Mon  trades 1  win rate   0.00%  P&L -100.00 USD",
                "  Tue  trades 2  win rate  50.00%  P&L  150.00 USD",
                "  Thu  trades 1  win rate   0.00%  P&L  -50.00 USD",
                "  Fri  trades 1  win rate 100.00%  P&L  250.00 USD",
                "By hour of entry (America/New_York)",
                "  09:00  trades 3  win rate 66.67%  P&L  400.00 USD",
                "  10:00  trades 2  win rate  0.00%  P&L -150.00 USD",
            ]
        );
        let empty = Performance::compute(&[], &[], dec!(1), Tz::UTC).breakdown_lines();
        assert_eq!(empty.iter().filter(|l| *l == "  (none)").count(), 3);
    }

    #[test]
    fn format_usd_groups_thousands_and_rounds_half_away() {
        assert_eq!(format_usd(dec!(1234.565)), "1,234.57");
        assert_eq!(format_usd(dec!(-1234567.5)), "-1,234,567.50");
        assert_eq!(format_usd(dec!(999.994)), "999.99");
        assert_eq!(format_usd(dec!(-0.004)), "0.00");
        assert_eq!(format_usd(dec!(100000)), "100,000.00");
        assert_eq!(format_usd(dec!(12)), "12.00");
    }
}
