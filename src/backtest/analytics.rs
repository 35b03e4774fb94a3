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
//! * **Expectancy** = `closed-trade P&L / trades` (average P&L per closed trade, USD).
//! * **Total P&L** = `final equity − initial equity`: closed trades, positions still open
//!   (marked to market) and every commission, so it agrees with the equity curve.
//!   **Unrealized P&L** = `Σ (mark − average price) × quantity` over the open positions
//!   ([`unrealized_pnl`]); **realized P&L** = total − unrealized: what is booked (closed
//!   trades, partial exits of open trades, every commission), i.e. the change in cash plus
//!   the cost of the open positions. The **closed-trade P&L** is
//!   `Σ pnl` of the trade records (the sum of trades.csv); it differs from the realized P&L
//!   by the commissions and partial exits of the trades still open, and by the rounding of
//!   each trade's P&L to the cent (a few cents over thousands of trades).
//! * **Return** = `(final equity − initial equity) / initial equity × 100`.
//! * **CAGR** (compound annual growth rate) = `((final / initial)^(1 / years) − 1) × 100`,
//!   `years` = time from the first to the last equity point / 365.25 days; −100 % when the
//!   final equity is not positive. None when the curve spans no time or the initial equity
//!   is not positive.
//! * **Buy and hold** ([`buy_and_hold`]): the initial equity split equally among the traded
//!   symbols, each part bought (fractional shares) at the symbol's first close in the traded
//!   range, marked at each equity point with the symbol's last close at or before it.
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

use crate::broker::Position;
use crate::engine::trades::{EquityPoint, TradeRecord};
use crate::market::Timeframe;
use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use chrono_tz::Tz;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use std::collections::BTreeMap;

/// Trading days per year used to annualise daily Sharpe and Sortino ratios (`√252`).
pub const TRADING_DAYS_PER_YEAR: f64 = 252.0;

/// Seconds in a UTC calendar day (Unix time has no leap seconds).
const SECONDS_PER_DAY: i64 = 86_400;

/// Seconds in a 365.25-day year (the CAGR's year).
const SECONDS_PER_YEAR: f64 = 365.25 * 86_400.0;

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
    /// Number of closed trades.
    pub trades: usize,
    /// Trades with `pnl > 0`.
    pub wins: usize,
    /// Trades with `pnl < 0`.
    pub losses: usize,
    /// `wins / trades × 100`, percent 0-100; None without trades.
    pub win_rate_pct: Option<f64>,
    /// `final_equity − initial_equity`, USD: closed trades, open positions at market and
    /// every commission (agrees with the equity curve).
    pub total_pnl: Decimal,
    /// Σ pnl of the closed trades (after their fees), USD: the sum of trades.csv.
    pub closed_pnl: Decimal,
    /// `(final_equity − initial_equity) / initial_equity × 100`, percent; None when the
    /// initial equity is not positive.
    pub return_pct: Option<Decimal>,
    /// Compound annual growth rate, percent per year (see the module documentation); None
    /// when the curve spans no time or the initial equity is not positive.
    pub cagr_pct: Option<f64>,
    /// Years from the first to the last equity point (365.25-day years); 0 without points.
    pub years: f64,
    /// Σ pnl of the winning trades, USD (≥ 0).
    pub gross_profit: Decimal,
    /// Σ pnl of the losing trades, USD (≤ 0).
    pub gross_loss: Decimal,
    /// `gross_profit / |gross_loss|`; None when there is no loss.
    pub profit_factor: Option<f64>,
    /// `closed_pnl / trades`: average P&L per closed trade, USD; None without trades.
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
    /// Trades by exit reason (`exit_rule`, `stop_loss`, `target_2`, …).
    pub by_exit_reason: BTreeMap<&'static str, Bucket>,
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
        let mut by_exit_reason: BTreeMap<&'static str, BucketAcc> = BTreeMap::new();

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
            by_exit_reason
                .entry(t.exit_reason.as_str())
                .or_default()
                .add(t.pnl);
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
        let closed_pnl = total_pnl;
        let final_equity = equity
            .last()
            .map_or(initial_equity + closed_pnl, |p| p.equity);
        let total_pnl = final_equity - initial_equity;
        let return_pct = (initial_equity > Decimal::ZERO)
            .then(|| (final_equity - initial_equity) / initial_equity * Decimal::ONE_HUNDRED);
        let returns = daily_returns(equity);
        let years = match (equity.first(), equity.last()) {
            (Some(a), Some(b)) => (b.ts - a.ts) as f64 / SECONDS_PER_YEAR,
            _ => 0.0,
        };
        let cagr_pct = cagr_pct(initial_equity, final_equity, years);

        Performance {
            tz,
            initial_equity,
            final_equity,
            trades: n,
            wins,
            losses,
            win_rate_pct: pct_of_count(wins, n),
            total_pnl,
            closed_pnl,
            return_pct,
            cagr_pct,
            years,
            gross_profit,
            gross_loss,
            profit_factor: (losses > 0 && !gross_loss.is_zero())
                .then(|| decimal_to_f64(gross_profit) / decimal_to_f64(-gross_loss)),
            expectancy: (n > 0).then(|| closed_pnl / n_dec),
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
            by_exit_reason: by_exit_reason
                .into_iter()
                .map(|(k, v)| (k, v.finish()))
                .collect(),
        }
    }

    /// The trade statistics of a human summary, `(label, value)` from `Trades` to `Total
    /// fees` (win rate, profit factor, expectancy, average and largest win and loss, max
    /// drawdown, Sharpe, Sortino, exposure, holding time), formatted as in
    /// [`Performance::summary_lines`]; `ztraded report` prints the same rows.
    pub fn trade_rows(&self) -> Vec<(&'static str, String)> {
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
        vec![
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
        ]
    }

    /// Human summary for `ztraded backtest`: one `label: value` line per statistic, values
    /// aligned in one column, with units (`USD`, `%`), money with thousands separators and
    /// two decimals (e.g. `Total P&L:            1,234.56 USD`), ratios with two decimals,
    /// `n/a` for undefined values. `extras` adds what the trade records do not hold: the
    /// open positions' unrealized P&L (splitting the total P&L into realized and unrealized)
    /// and the buy-and-hold benchmark.
    pub fn summary_lines(&self, extras: &SummaryExtras) -> Vec<String> {
        let na = || "n/a".to_string();
        let usd = |d: Option<Decimal>| d.map_or_else(na, |d| format!("{} USD", format_usd(d)));
        let realized = self.total_pnl - extras.unrealized_pnl;
        let positions = match extras.open_positions {
            1 => "1 open position".to_string(),
            n => format!("{n} open positions"),
        };
        let mut rows: Vec<(&str, String)> = vec![
            ("Initial equity", usd(Some(self.initial_equity))),
            ("Final equity", usd(Some(self.final_equity))),
            (
                "Return",
                self.return_pct
                    .map_or_else(na, |p| format!("{}%", format_pct(p))),
            ),
            (
                "CAGR",
                self.cagr_pct.map_or_else(na, |c| {
                    let pct = Decimal::try_from(c).map_or_else(|_| format!("{c:.2}"), format_pct);
                    format!("{pct}% per year over {:.2} years", self.years)
                }),
            ),
            (
                "Buy and hold",
                extras.buy_and_hold_pct.map_or_else(na, |p| {
                    format!(
                        "{}% ({} in equal parts from their first close)",
                        format_pct(p),
                        extras.benchmark
                    )
                }),
            ),
            (
                "Total P&L",
                format!(
                    "{} USD (realized + unrealized: final minus initial equity)",
                    format_usd(self.total_pnl)
                ),
            ),
            (
                "Realized P&L",
                format!(
                    "{} USD (booked, with commissions; closed trades in trades.csv: {} USD)",
                    format_usd(realized),
                    format_usd(self.closed_pnl)
                ),
            ),
            (
                "Unrealized P&L",
                format!(
                    "{} USD ({positions} at the last close)",
                    format_usd(extras.unrealized_pnl)
                ),
            ),
        ];
        rows.extend(self.trade_rows());
        aligned(&rows)
    }

    /// Trades by exit reason, for `ztraded backtest`: `By exit reason`, then one line per
    /// reason in name order, `  REASON  trades N  win rate P%  P&L X USD`, columns aligned;
    /// `  (none)` without trades.
    pub fn exit_reason_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        bucket_section(
            &mut out,
            "By exit reason".to_string(),
            self.by_exit_reason
                .iter()
                .map(|(k, b)| ((*k).to_string(), b))
                .collect(),
        );
        out
    }

    /// Breakdown tables for `ztraded report`: a header line per breakdown (by symbol, by
    /// weekday of exit, by hour of entry, the last two naming the time zone) followed by one
    /// line per bucket in key order: `  KEY  trades N  win rate P%  P&L X USD`, columns
    /// aligned. Breakdowns without trades print `  (none)`.
    pub fn breakdown_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut section =
            |header: String, rows: Vec<(String, &Bucket)>| bucket_section(&mut out, header, rows);
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

/// A header line, then `  KEY  trades N  win rate P%  P&L X USD` per bucket, aligned;
/// `  (none)` without buckets.
fn bucket_section(out: &mut Vec<String>, header: String, rows: Vec<(String, &Bucket)>) {
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

/// Trades grouped by any key (a config revision, a pipeline, a mode, …): one [`Bucket`] per
/// key, in key order, counted like [`Performance`]'s breakdowns (a win has `pnl > 0`, a loss
/// `pnl < 0`, P&L after fees in USD). `key` gets each trade with its index in `trades` and
/// returns `None` to leave it out.
pub fn breakdown_by<K: Ord>(
    trades: &[TradeRecord],
    mut key: impl FnMut(usize, &TradeRecord) -> Option<K>,
) -> BTreeMap<K, Bucket> {
    let mut acc: BTreeMap<K, BucketAcc> = BTreeMap::new();
    for (i, t) in trades.iter().enumerate() {
        if let Some(k) = key(i, t) {
            acc.entry(k).or_default().add(t.pnl);
        }
    }
    acc.into_iter().map(|(k, v)| (k, v.finish())).collect()
}

/// A breakdown table in the layout of [`Performance::breakdown_lines`]: `header`, then
/// `  KEY  trades N  win rate P%  P&L X USD` per row, columns aligned; `  (none)` without
/// rows.
pub fn bucket_lines(header: &str, rows: Vec<(String, &Bucket)>) -> Vec<String> {
    let mut out = Vec::new();
    bucket_section(&mut out, header.to_string(), rows);
    out
}

/// `label: value` lines with the values aligned in one column (the layout of
/// [`Performance::summary_lines`]).
pub fn aligned_lines(rows: &[(&str, String)]) -> Vec<String> {
    aligned(rows)
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

/// Formats a percentage with two decimals, rounded half away from zero, with thousands
/// separators (`12.345` → `12.35`, `2940.516` → `2,940.52`).
pub fn format_pct(d: Decimal) -> String {
    format_usd(d)
}

/// RFC 3339 UTC time of Unix seconds (`2012-01-03T21:00:00Z`), or the raw number when out of
/// range.
pub fn format_ts(ts: i64) -> String {
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

/// The earliest largest drawdown. Within the stretch after one peak the deepest point (the
/// earliest of equal ones) has the largest drawdown of the stretch, so the quotient is taken
/// once per stretch, not once per point.
fn max_drawdown(points: &[EquityPoint]) -> Option<Drawdown> {
    let first = points.first()?;
    let mut best = Drawdown {
        pct: Decimal::ZERO,
        usd: Decimal::ZERO,
        peak_ts: first.ts,
        peak_equity: first.equity,
        trough_ts: first.ts,
        trough_equity: first.equity,
    };
    let consider = |peak: &EquityPoint, trough: &EquityPoint, best: &mut Drawdown| {
        let usd = peak.equity - trough.equity;
        let pct = drawdown_pct(peak.equity, trough.equity);
        if (pct, usd) > (best.pct, best.usd) {
            *best = Drawdown {
                pct,
                usd,
                peak_ts: peak.ts,
                peak_equity: peak.equity,
                trough_ts: trough.ts,
                trough_equity: trough.equity,
            };
        }
    };
    let mut peak = *first;
    let mut trough: Option<EquityPoint> = None;
    for p in points {
        if p.equity > peak.equity {
            if let Some(t) = trough.take() {
                consider(&peak, &t, &mut best);
            }
            peak = *p;
        } else if trough.is_none_or(|t| p.equity < t.equity) {
            trough = Some(*p);
        }
    }
    if let Some(t) = trough {
        consider(&peak, &t, &mut best);
    }
    Some(best)
}

fn cagr_pct(initial: Decimal, last: Decimal, years: f64) -> Option<f64> {
    if initial <= Decimal::ZERO || years.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    if last <= Decimal::ZERO {
        return Some(-100.0);
    }
    let growth = decimal_to_f64(last) / decimal_to_f64(initial);
    Some((growth.powf(1.0 / years) - 1.0) * 100.0)
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

// ---------------------------------------------------------------------------------------
// Backtest report: open positions, the buy-and-hold benchmark, the per-symbol table and the
// equity rows of the strategy's timeframe. These take what they need as arguments (the runner
// result's trades, positions and per-symbol closes).

/// What the backtest summary adds to [`Performance`]: the open positions and the benchmark.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SummaryExtras {
    /// Unrealized P&L of the positions still open, USD ([`unrealized_pnl`]).
    pub unrealized_pnl: Decimal,
    /// Number of positions still open at the end.
    pub open_positions: usize,
    /// Return of the buy-and-hold benchmark over the backtest, percent; None without one.
    pub buy_and_hold_pct: Option<Decimal>,
    /// The symbols the benchmark holds, as printed (`AAPL, GOOG, SPY`).
    pub benchmark: String,
}

/// `Σ (market price − average price) × quantity` over `positions`, USD (negative quantities
/// are shorts, so a short gains when the price falls). Commissions already paid are not in
/// it: they are in the cash, hence in the realized P&L.
pub fn unrealized_pnl(positions: &[Position]) -> Decimal {
    positions.iter().map(Position::unrealized_pnl).sum()
}

/// Equity of the buy-and-hold benchmark at each instant of `at` (Unix seconds, ascending),
/// USD.
///
/// `closes` maps each traded symbol to its bar closes in the traded range, as (Unix seconds
/// of the bar's close, i.e. the end of its period; close price USD), in time order.
/// `initial_equity` is split equally among the symbols of `closes`; each part buys
/// `part / first close` shares (fractional, rounded to 8 decimals; the remainder stays in
/// cash) at the symbol's first close and is worth `cash + shares × close` afterwards, with the
/// symbol's last close at or before the instant. Before its first close, and for a symbol
/// without closes or with a first close that is not positive, a part is cash. Without
/// symbols every value is `initial_equity`.
///
/// Runs in `O(Σ closes + at × symbols)`: each series is walked once, so `at` must be
/// ascending (a smaller instant after a larger one is marked with the closes already seen).
pub fn buy_and_hold(
    initial_equity: Decimal,
    closes: &BTreeMap<String, Vec<(i64, Decimal)>>,
    at: &[i64],
) -> Vec<Decimal> {
    struct Leg<'a> {
        series: &'a [(i64, Decimal)],
        next: usize,
        shares: Decimal,
        cash: Decimal,
        value: Decimal,
    }
    if closes.is_empty() {
        return vec![initial_equity; at.len()];
    }
    let part = initial_equity / Decimal::from(closes.len());
    let mut legs: Vec<Leg<'_>> = closes
        .values()
        .map(|series| {
            let shares = match series.first() {
                Some(&(_, c)) if c > Decimal::ZERO => (part / c).round_dp(8),
                _ => Decimal::ZERO,
            };
            let cost = series.first().map_or(Decimal::ZERO, |&(_, c)| shares * c);
            Leg {
                series,
                next: 0,
                shares,
                cash: part - cost,
                value: part,
            }
        })
        .collect();
    at.iter()
        .map(|&t| {
            let mut total = Decimal::ZERO;
            for leg in &mut legs {
                let before = leg.next;
                while leg.next < leg.series.len() && leg.series[leg.next].0 <= t {
                    leg.next += 1;
                }
                if leg.next != before && !leg.shares.is_zero() {
                    leg.value = leg.cash + leg.shares * leg.series[leg.next - 1].1;
                }
                total += leg.value;
            }
            total
        })
        .collect()
}

/// `(last close / first close − 1) × 100` of one symbol's closes, percent; None with no
/// close or a first close that is not positive.
pub fn price_return_pct(closes: &[(i64, Decimal)]) -> Option<Decimal> {
    let (&(_, first), &(_, last)) = (closes.first()?, closes.last()?);
    (first > Decimal::ZERO).then(|| (last / first - Decimal::ONE) * Decimal::ONE_HUNDRED)
}

/// Indices of the last equity point of each period of `timeframe` (periods aligned in `tz`
/// as bars are: local midnight for days, Monday 00:00 for weeks, multiples of the period
/// since local midnight intraday), in order. A point stamped `t` is a bar close and belongs
/// to the period that contains `t − 1`, so the close of a daily bar at local midnight is the
/// row of the day that ended. A timeframe finer than the points' spacing keeps every point.
pub fn last_point_per_period(points: &[EquityPoint], timeframe: Timeframe, tz: Tz) -> Vec<usize> {
    let mut keys = PeriodKeys::new(timeframe, tz);
    let mut out = Vec::new();
    let mut current: Option<i64> = None;
    for (i, p) in points.iter().enumerate() {
        let key = keys.key(p.ts.saturating_sub(1));
        if current.is_some_and(|c| c != key)
            && let Some(last) = i.checked_sub(1)
        {
            out.push(last);
        }
        current = Some(key);
    }
    if !points.is_empty() {
        out.push(points.len() - 1);
    }
    out
}

/// Start instants of the periods of a timeframe, with the local day of the last question
/// cached (one time-zone conversion per day, not per point).
struct PeriodKeys {
    timeframe: Timeframe,
    tz: Tz,
    day_start: i64,
    day_end: i64,
    week_start: i64,
    /// The day is 24 hours with one offset: intraday periods are plain arithmetic.
    uniform: bool,
}

impl PeriodKeys {
    fn new(timeframe: Timeframe, tz: Tz) -> PeriodKeys {
        PeriodKeys {
            timeframe,
            tz,
            day_start: 1,
            day_end: 0,
            week_start: 0,
            uniform: false,
        }
    }

    fn load(&mut self, t: i64) {
        use crate::market::timeframe::local_midnight;
        use chrono::{Offset, TimeZone};
        let Some(utc) = DateTime::<Utc>::from_timestamp(t, 0) else {
            self.day_start = t;
            self.day_end = t.saturating_add(1);
            self.week_start = t;
            self.uniform = false;
            return;
        };
        let date = utc.with_timezone(&self.tz).date_naive();
        let start = local_midnight(self.tz, date).timestamp();
        let end = date.succ_opt().map_or(start + SECONDS_PER_DAY, |d| {
            local_midnight(self.tz, d).timestamp()
        });
        let offset = |x: i64| {
            DateTime::<Utc>::from_timestamp(x, 0).map_or(0, |u| {
                self.tz
                    .offset_from_utc_datetime(&u.naive_utc())
                    .fix()
                    .local_minus_utc()
            })
        };
        let monday =
            date - chrono::Duration::days(i64::from(date.weekday().num_days_from_monday()));
        self.uniform = end - start == SECONDS_PER_DAY && offset(start) == offset(end - 1);
        self.day_start = start;
        // A day whose local midnight is skipped still ends where the next one starts.
        self.day_end = end.max(start + 1);
        self.week_start = local_midnight(self.tz, monday).timestamp();
    }

    /// The start of the period that contains instant `t`.
    fn key(&mut self, t: i64) -> i64 {
        if t < self.day_start || t >= self.day_end {
            self.load(t);
        }
        match self.timeframe {
            Timeframe::D1 => self.day_start,
            Timeframe::W1 => self.week_start,
            tf if self.uniform => {
                let secs = tf.nominal_seconds();
                self.day_start + (t - self.day_start) / secs * secs
            }
            tf => DateTime::<Utc>::from_timestamp(t, 0)
                .map_or(t, |u| tf.period_start(u, self.tz).timestamp()),
        }
    }
}

/// One line of the per-symbol table of a backtest.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SymbolRow {
    /// Ticker symbol, or `TOTAL` for the sum of the table.
    pub symbol: String,
    /// Closed trades.
    pub trades: usize,
    /// Closed trades with `pnl > 0`.
    pub wins: usize,
    /// Closed trades with `pnl < 0`.
    pub losses: usize,
    /// `wins / trades × 100`, percent; None without trades.
    pub win_rate_pct: Option<f64>,
    /// Mean of the trades' `pnl / (entry price × quantity) × 100`, percent; None without
    /// trades.
    pub average_return_pct: Option<Decimal>,
    /// Σ pnl of the closed trades, USD.
    pub closed_pnl: Decimal,
    /// Shares still held at the end (negative: short).
    pub open_quantity: Decimal,
    /// Unrealized P&L of the position still open, USD ([`unrealized_pnl`]).
    pub unrealized_pnl: Decimal,
    /// The symbol's price return over its closes in the traded range ([`price_return_pct`]);
    /// for `TOTAL`, the return of the equal-parts buy-and-hold benchmark. None without closes.
    pub buy_and_hold_pct: Option<Decimal>,
}

/// The per-symbol table: one row per symbol of `symbols` (in that order), then any other
/// symbol that has trades or a position (in name order), then a `TOTAL` row summing the
/// trades and P&L, whose buy-and-hold column is `benchmark_pct`.
pub fn symbol_rows(
    symbols: &[String],
    trades: &[TradeRecord],
    positions: &[Position],
    closes: &BTreeMap<String, Vec<(i64, Decimal)>>,
    benchmark_pct: Option<Decimal>,
) -> Vec<SymbolRow> {
    #[derive(Default)]
    struct Acc {
        trades: usize,
        wins: usize,
        losses: usize,
        returns: Decimal,
        pnl: Decimal,
        quantity: Decimal,
        unrealized: Decimal,
    }
    let mut acc: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut total = Acc::default();
    for t in trades {
        for a in [acc.entry(t.symbol.as_str()).or_default(), &mut total] {
            a.trades += 1;
            a.wins += usize::from(t.pnl > Decimal::ZERO);
            a.losses += usize::from(t.pnl < Decimal::ZERO);
            a.returns += t.return_pct();
            a.pnl += t.pnl;
        }
    }
    for p in positions {
        for a in [acc.entry(p.symbol.as_str()).or_default(), &mut total] {
            a.quantity += p.quantity;
            a.unrealized += p.unrealized_pnl();
        }
    }
    let row = |symbol: &str, a: &Acc, bh: Option<Decimal>| SymbolRow {
        symbol: symbol.to_string(),
        trades: a.trades,
        wins: a.wins,
        losses: a.losses,
        win_rate_pct: pct_of_count(a.wins, a.trades),
        average_return_pct: (a.trades > 0).then(|| a.returns / Decimal::from(a.trades)),
        closed_pnl: a.pnl,
        open_quantity: a.quantity,
        unrealized_pnl: a.unrealized,
        buy_and_hold_pct: bh,
    };
    let empty = Acc::default();
    let mut rows: Vec<SymbolRow> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for s in symbols {
        if seen.contains(&s.as_str()) {
            continue;
        }
        seen.push(s);
        let bh = closes.get(s).and_then(|c| price_return_pct(c));
        rows.push(row(s, acc.get(s.as_str()).unwrap_or(&empty), bh));
    }
    for (s, a) in &acc {
        if !seen.contains(s) {
            rows.push(row(s, a, closes.get(*s).and_then(|c| price_return_pct(c))));
        }
    }
    rows.push(row("TOTAL", &total, benchmark_pct));
    rows
}

/// The per-symbol table as text: `By symbol`, a header line and one line per row, columns
/// right-aligned (`Symbol`, `Trades`, `Win rate`, `Avg return`, `Closed P&L USD`,
/// `Open P&L USD`, `Buy and hold`), `n/a` for undefined values.
pub fn symbol_lines(rows: &[SymbolRow]) -> Vec<String> {
    let na = || "n/a".to_string();
    let header = [
        "Symbol",
        "Trades",
        "Win rate",
        "Avg return",
        "Closed P&L USD",
        "Open P&L USD",
        "Buy and hold",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.symbol.clone(),
                r.trades.to_string(),
                r.win_rate_pct.map_or_else(na, |p| format!("{p:.2}%")),
                r.average_return_pct
                    .map_or_else(na, |p| format!("{}%", format_pct(p))),
                format_usd(r.closed_pnl),
                format_usd(r.unrealized_pnl),
                r.buy_and_hold_pct
                    .map_or_else(na, |p| format!("{}%", format_pct(p))),
            ]
        })
        .collect();
    let w: [usize; 7] = std::array::from_fn(|i| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    });
    let line = |c: [&str; 7]| {
        let mut l = format!("  {:<w0$}", c[0], w0 = w[0]);
        for i in 1..7 {
            l.push_str(&format!("  {:>wi$}", c[i], wi = w[i]));
        }
        l
    };
    let mut out = vec!["By symbol".to_string(), line(header)];
    for c in &cells {
        out.push(line(std::array::from_fn(|i| c[i].as_str())));
    }
    out
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
        assert!(
            p.summary_lines(&SummaryExtras::default())
                .iter()
                .any(|l| l.ends_with("n/a"))
        );
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
        let lines = p.summary_lines(&SummaryExtras {
            unrealized_pnl: dec!(0),
            open_positions: 0,
            buy_and_hold_pct: Some(dec!(12.345)),
            benchmark: "AAPL, GOOG, MSFT".to_string(),
        });
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
        assert_eq!(
            find("Total P&L"),
            "250.00 USD (realized + unrealized: final minus initial equity)"
        );
        assert_eq!(
            find("Realized P&L"),
            "250.00 USD (booked, with commissions; closed trades in trades.csv: 250.00 USD)"
        );
        assert_eq!(
            find("Unrealized P&L"),
            "0.00 USD (0 open positions at the last close)"
        );
        assert_eq!(
            find("Buy and hold"),
            "12.35% (AAPL, GOOG, MSFT in equal parts from their first close)"
        );
        // 2.5 % in 612,000 s (0.0194 years) compounds to 257 % a year.
        let cagr = p.cagr_pct.unwrap();
        let years = 612_000.0 / (365.25 * 86_400.0);
        assert!(
            close(cagr, (1.025f64.powf(1.0 / years) - 1.0) * 100.0),
            "{cagr}"
        );
        assert_eq!(find("CAGR"), format!("{cagr:.2}% per year over 0.02 years"));
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

    fn position(symbol: &str, quantity: Decimal, average: Decimal, mark: Decimal) -> Position {
        Position {
            pipeline: "p".to_string(),
            symbol: symbol.to_string(),
            quantity,
            average_price: average,
            market_price: mark,
        }
    }

    #[test]
    fn total_pnl_follows_the_equity_curve_with_open_positions() {
        // The closed trades made 250 USD; a position still open is up 60 USD at the last
        // close and its entry cost 10 USD of commission: equity ends at 10,300.
        let mut equity = sample_equity();
        equity.push(point(1_704_900_000, dec!(10300)));
        let p = Performance::compute(&sample_trades(), &equity, dec!(10000), ny());
        assert_eq!(p.total_pnl, dec!(300));
        assert_eq!(p.closed_pnl, dec!(250));
        assert_eq!(p.expectancy, Some(dec!(50)), "per closed trade");
        let open = [position("AAPL", dec!(10), dec!(100), dec!(106))];
        assert_eq!(unrealized_pnl(&open), dec!(60));
        let lines = p.summary_lines(&SummaryExtras {
            unrealized_pnl: unrealized_pnl(&open),
            open_positions: 1,
            buy_and_hold_pct: None,
            benchmark: String::new(),
        });
        let value = |label: &str| {
            let l = lines
                .iter()
                .find(|l| l.starts_with(&format!("{label}:")))
                .unwrap();
            l[label.len() + 1..].trim().to_string()
        };
        assert!(value("Total P&L").starts_with("300.00 USD"), "{lines:?}");
        assert!(
            value("Realized P&L").ends_with(
                "240.00 USD (booked, with commissions; closed trades in trades.csv: 250.00 USD)"
            ),
            "{lines:?}"
        );
        assert_eq!(
            value("Unrealized P&L"),
            "60.00 USD (1 open position at the last close)"
        );
        assert_eq!(value("Buy and hold"), "n/a");
        // A short gains when the price falls.
        let short = [position("MSFT", dec!(-5), dec!(50), dec!(40))];
        assert_eq!(unrealized_pnl(&short), dec!(50));
    }

    #[test]
    fn cagr_over_whole_years() {
        let year = 365.25 * 86_400.0;
        let two = (2.0 * year) as i64;
        let p = Performance::compute(
            &[],
            &[point(0, dec!(100)), point(two, dec!(121))],
            dec!(100),
            Tz::UTC,
        );
        assert!(close(p.years, 2.0));
        assert!(
            (p.cagr_pct.unwrap() - 10.0).abs() < 1e-9,
            "{:?}",
            p.cagr_pct
        );
        let lost = Performance::compute(
            &[],
            &[point(0, dec!(100)), point(two, dec!(-5))],
            dec!(100),
            Tz::UTC,
        );
        assert_eq!(lost.cagr_pct, Some(-100.0));
        let instant = Performance::compute(&[], &[point(0, dec!(100))], dec!(100), Tz::UTC);
        assert_eq!(instant.cagr_pct, None);
    }

    /// The per-stretch maximum drawdown equals the point-by-point definition.
    #[test]
    fn max_drawdown_matches_the_point_by_point_definition() {
        fn naive(points: &[EquityPoint]) -> Option<Drawdown> {
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
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for case in 0..300 {
            let n = (case % 40) as usize + 1;
            let mut e = 1_000i64;
            let points: Vec<EquityPoint> = (0..n)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Small steps, many ties; negative equity now and then.
                    e += (x % 7) as i64 - 3 - if case % 5 == 0 { 300 } else { 0 };
                    point(i as i64, Decimal::from(e))
                })
                .collect();
            assert_eq!(max_drawdown(&points), naive(&points), "{points:?}");
        }
    }

    fn closes(series: &[(&str, &[(i64, Decimal)])]) -> BTreeMap<String, Vec<(i64, Decimal)>> {
        series
            .iter()
            .map(|(s, c)| (s.to_string(), c.to_vec()))
            .collect()
    }

    #[test]
    fn buy_and_hold_splits_equally_at_the_first_close() {
        // 10,000 USD: 5,000 in A at 100 (50 shares), 5,000 in B at 40 (125 shares); B's
        // first close comes later, and its part is cash until then.
        let c = closes(&[
            ("A", &[(100, dec!(100)), (200, dec!(110)), (300, dec!(90))]),
            ("B", &[(200, dec!(40)), (300, dec!(50))]),
        ]);
        let v = buy_and_hold(dec!(10000), &c, &[50, 100, 150, 200, 250, 300, 400]);
        assert_eq!(
            v,
            vec![
                dec!(10000),
                dec!(10000),
                dec!(10000),
                dec!(10500), // A 50 × 110 + B 5,000
                dec!(10500),
                dec!(10750), // A 50 × 90 + B 125 × 50
                dec!(10750),
            ]
        );
        // Three symbols, one without data: a third stays cash. Shares are rounded to 8
        // decimals and the remainder is kept, so the value at the first close is exact.
        let c = closes(&[
            ("A", &[(100, dec!(3)), (200, dec!(6))]),
            ("B", &[(100, dec!(7))]),
            ("C", &[]),
        ]);
        let v = buy_and_hold(dec!(100), &c, &[100, 200]);
        assert_eq!(v[0].round_dp(20), dec!(100));
        // A doubles: 100/3 more.
        assert_eq!(v[1].round_dp(6), dec!(133.333333));
        assert_eq!(
            buy_and_hold(dec!(5), &BTreeMap::new(), &[1, 2]),
            vec![dec!(5); 2]
        );
        assert_eq!(
            price_return_pct(&[(1, dec!(50)), (2, dec!(60))]),
            Some(dec!(20))
        );
        assert_eq!(price_return_pct(&[]), None);
    }

    fn minutes(start: &str, n: i64, step: i64) -> Vec<EquityPoint> {
        let t0 = DateTime::parse_from_rfc3339(start).unwrap().timestamp();
        (1..=n)
            .map(|i| point(t0 + i * step, Decimal::from(i)))
            .collect()
    }

    #[test]
    fn equity_rows_take_the_last_point_of_each_period() {
        let ny = ny();
        // One-minute bars from 2024-03-08 09:30 to 2024-03-12 16:00 New York time, every
        // minute of the day (also across the DST change on Sunday 2024-03-10).
        let points = minutes("2024-03-08T14:30:00Z", 4 * 1440 + 390, 60);
        let rows = last_point_per_period(&points, Timeframe::D1, ny);
        let local = |i: usize| {
            DateTime::<Utc>::from_timestamp(points[i].ts, 0)
                .unwrap()
                .with_timezone(&ny)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        };
        let days: Vec<String> = rows.iter().map(|&i| local(i)).collect();
        // A bar closing at local midnight ends its day.
        assert_eq!(
            days,
            [
                "2024-03-09 00:00",
                "2024-03-10 00:00",
                "2024-03-11 00:00",
                "2024-03-12 00:00",
                "2024-03-12 17:00" // the last point (21:00 UTC, EDT now) ends the last day
            ]
        );
        // Hours: in New York the 23-hour Sunday has 23 hourly rows.
        let hours = last_point_per_period(&points, Timeframe::H1, ny);
        let sunday = hours
            .iter()
            .filter(|&&i| local(i).starts_with("2024-03-10") && !local(i).ends_with("00:00"))
            .count()
            + 1; // its last row is Monday 00:00
        assert_eq!(sunday, 23);
        for w in hours.windows(2) {
            assert!(w[1] > w[0]);
        }
        // Every row is the last point before the next period: points between rows fall in
        // one period (checked against chrono's period start).
        for w in hours.windows(2) {
            let key = |i: usize| {
                Timeframe::H1
                    .period_start(crate::engine::clock::utc(points[i].ts - 1), ny)
                    .timestamp()
            };
            assert!((w[0] + 1..=w[1]).all(|i| key(i) == key(w[1])));
            assert_ne!(key(w[0]), key(w[1]));
        }
        // Weeks start on Monday; a timeframe finer than the points keeps every point.
        let weekly = last_point_per_period(&points, Timeframe::W1, ny);
        assert_eq!(weekly.len(), 2);
        assert_eq!(local(weekly[0]), "2024-03-11 00:00");
        let daily = minutes("2024-01-01T05:00:00Z", 10, 86_400);
        assert_eq!(
            last_point_per_period(&daily, Timeframe::M1, ny),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(last_point_per_period(&daily, Timeframe::D1, ny).len(), 10);
        assert!(last_point_per_period(&[], Timeframe::D1, ny).is_empty());
    }

    #[test]
    fn symbol_table_rows_and_lines() {
        let mut trades = sample_trades();
        trades[0].quantity = dec!(15); // AAPL +150 on 1,500 USD: +10 %
        let open = [position("GOOG", dec!(3), dec!(100), dec!(90))];
        let c = closes(&[
            ("AAPL", &[(1, dec!(100)), (2, dec!(150))]),
            ("GOOG", &[(1, dec!(100)), (2, dec!(90))]),
        ]);
        let symbols = vec!["GOOG".to_string(), "AAPL".to_string(), "TSLA".to_string()];
        let rows = symbol_rows(&symbols, &trades, &open, &c, Some(dec!(20)));
        let names: Vec<&str> = rows.iter().map(|r| r.symbol.as_str()).collect();
        assert_eq!(names, ["GOOG", "AAPL", "TSLA", "MSFT", "TOTAL"]);
        let aapl = &rows[1];
        assert_eq!((aapl.trades, aapl.wins, aapl.losses), (2, 1, 1));
        assert_eq!(aapl.closed_pnl, dec!(100));
        // (+10 % − 5 %) / 2.
        assert_eq!(aapl.average_return_pct, Some(dec!(2.5)));
        assert_eq!(aapl.buy_and_hold_pct, Some(dec!(50)));
        let goog = &rows[0];
        assert_eq!(
            (goog.open_quantity, goog.unrealized_pnl),
            (dec!(3), dec!(-30))
        );
        assert_eq!(rows[2].trades, 0);
        assert_eq!(rows[2].buy_and_hold_pct, None);
        let total = &rows[4];
        assert_eq!((total.trades, total.closed_pnl), (5, dec!(250)));
        assert_eq!(total.unrealized_pnl, dec!(-30));
        assert_eq!(total.buy_and_hold_pct, Some(dec!(20)));
        let lines = symbol_lines(&rows);
        assert_eq!(
            lines,
            [
                "By symbol",
                "  Symbol  Trades  Win rate  Avg return  Closed P&L USD  Open P&L USD  Buy and hold",
                "  GOOG         1     0.00%       0.00%            0.00        -30.00       -10.00%",
                "  AAPL         2    50.00%       2.50%          100.00          0.00        50.00%",
                "  TSLA         0       n/a         n/a            0.00          0.00           n/a",
                "  MSFT         2    50.00%       7.50%          150.00          0.00           n/a",
                "  TOTAL        5    40.00%       4.00%          250.00        -30.00        20.00%",
            ]
        );
    }

    #[test]
    fn exit_reason_lines_list_every_reason() {
        let mut trades = sample_trades();
        trades[1].exit_reason = OrderPurpose::StopLoss;
        trades[2].exit_reason = OrderPurpose::Target2;
        let p = Performance::compute(&trades, &sample_equity(), dec!(10000), ny());
        assert_eq!(
            p.exit_reason_lines(),
            [
                "By exit reason",
                "  exit_rule  trades 3  win rate  33.33%  P&L  50.00 USD",
                "  stop_loss  trades 1  win rate   0.00%  P&L -50.00 USD",
                "  target_2   trades 1  win rate 100.00%  P&L 250.00 USD",
            ]
        );
    }

    #[test]
    fn any_key_groups_trades_like_the_built_in_breakdowns() {
        let trades = sample_trades();
        // By symbol through the generic grouping: the same buckets as `by_symbol`.
        let perf = Performance::compute(&trades, &sample_equity(), dec!(10000), ny());
        let by_symbol = breakdown_by(&trades, |_, t| Some(t.symbol.clone()));
        assert_eq!(by_symbol, perf.by_symbol);
        // A key per trade index (a revision read alongside), leaving one trade out.
        let revisions = ["r1", "r1", "r2", "r2", "r3"];
        let by_revision = breakdown_by(&trades, |i, _| (i != 4).then_some(revisions[i]));
        assert_eq!(
            by_revision.keys().copied().collect::<Vec<_>>(),
            ["r1", "r2"]
        );
        assert_eq!(by_revision["r1"].trades, 2);
        assert_eq!(by_revision["r1"].pnl, dec!(100.00));
        assert_eq!(by_revision["r2"].wins, 1);
        assert_eq!(by_revision["r2"].losses, 1);
        assert_eq!(by_revision["r2"].win_rate_pct, 50.0);
        assert_eq!(
            bucket_lines(
                "By revision",
                by_revision
                    .iter()
                    .map(|(k, b)| (k.to_string(), b))
                    .collect()
            ),
            vec![
                "By revision",
                "  r1  trades 2  win rate 50.00%  P&L 100.00 USD",
                "  r2  trades 2  win rate 50.00%  P&L 150.00 USD",
            ]
        );
        assert_eq!(bucket_lines("Empty", Vec::new()), vec!["Empty", "  (none)"]);
    }
}
