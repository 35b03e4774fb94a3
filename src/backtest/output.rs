//! Backtest outputs: trades.csv, equity.csv and the equity-curve SVG.
//!
//! Every writer is deterministic: the same input gives a byte-identical file (no timestamps
//! of the run, no random ids, fixed number formats, `\n` line ends).
//!
//! The writers format numbers straight from a `Decimal`'s mantissa and scale into one
//! buffer per file (flushed to the file every 64 KiB): no `String` per field or row, so a
//! 500,000-row equity.csv takes tens of milliseconds, not a second. The SVG is written by
//! hand (no plotting library) with at most four points per pixel column and series, so it
//! stays about 100 KB whatever the number of bars.
//!
//! # Number formats
//!
//! * P&L, fees, equity, cash and the buy-and-hold benchmark: two decimals, rounded half away
//!   from zero (`-12.50`).
//! * Prices (entry, exit, stops, targets): rounded half away from zero to at most six
//!   decimals, trailing zeros removed down to two decimals (`101.50`, `101.123457`).
//! * Quantities: exact, trailing zeros removed (`100`, `0.5`).
//! * Drawdown: percent 0-100 from the running peak, four decimals, rounded half away from
//!   zero from the exact quotient (`2.4390`).
//! * Times: RFC 3339 in UTC with second precision (`2012-01-03T21:00:00Z`); the trades file
//!   adds the same instants in the report time zone with their offset
//!   (`2012-01-03T16:00:00-05:00`, `Z` when the offset is zero).
//!
//! Text fields (symbol, pipeline, mode) are quoted when they hold a comma, a double quote
//! or a line break, with inner quotes doubled (RFC 4180).

use crate::backtest::analytics::format_usd;
use crate::engine::trades::{EquityPoint, TradeRecord};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::{Decimal, RoundingStrategy};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Columns of trades.csv, in order.
pub const TRADES_CSV_HEADER: [&str; 18] = [
    "symbol",
    "side",
    "entry_time",
    "entry_price",
    "exit_time",
    "exit_price",
    "quantity",
    "exit_reason",
    "pnl",
    "fees",
    "initial_stop",
    "final_stop",
    "target_1",
    "target_2",
    "pipeline",
    "mode",
    "entry_time_local",
    "exit_time_local",
];

/// Columns of equity.csv, in order.
pub const EQUITY_CSV_HEADER: [&str; 5] = [
    "timestamp",
    "equity",
    "cash",
    "drawdown_pct",
    "buy_and_hold",
];

/// Width and height of the equity-curve SVG, pixels.
pub const SVG_SIZE: (u32, u32) = (1000, 600);

/// Horizontal extent of the chart's plot area, pixels from the left edge.
const PLOT_X: (f64, f64) = (90.0, 960.0);
/// Vertical extent of the equity pane, pixels from the top edge.
const EQUITY_Y: (f64, f64) = (80.0, 398.0);
/// Vertical extent of the drawdown pane.
const DRAWDOWN_Y: (f64, f64) = (420.0, 545.0);

/// Pixel columns of the plot area: each series keeps at most four points per column.
pub const SVG_COLUMNS: usize = (PLOT_X.1 - PLOT_X.0) as usize;

/// Most points one series of the SVG holds (first, last, lowest and highest of each pixel
/// column), whatever the number of equity points.
pub const SVG_MAX_POINTS_PER_SERIES: usize = 4 * SVG_COLUMNS;

/// Bytes buffered before a write to the file.
const FLUSH_AT: usize = 64 * 1024;

/// Errors of the SVG writer.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Writes one line per trade to `path` (created or truncated) with the header
/// [`TRADES_CSV_HEADER`]: `symbol,side,entry_time,entry_price,exit_time,exit_price,quantity,
/// exit_reason,pnl,fees,initial_stop,final_stop,target_1,target_2,pipeline,mode,
/// entry_time_local,exit_time_local`.
///
/// Trades are written in entry order (by `entry_time`; trades entered at the same instant
/// keep the order given). `side` is `long`/`short`, `exit_reason` the order purpose
/// (`stop_loss`, `target_2`, …), `initial_stop` the stop when the trade was entered and
/// `final_stop` the stop when it closed (after a move to breakeven, say); missing stops and
/// targets are empty fields; `*_local` are the times in `tz`. Number and time formats are in
/// the [module documentation](self).
///
/// # Errors
/// An I/O error naming `path`, or `InvalidData` naming the trade (its index in `trades`) for
/// a time outside chrono's range.
pub fn write_trades_csv(path: &Path, trades: &[TradeRecord], tz: Tz) -> io::Result<()> {
    let mut order: Vec<usize> = (0..trades.len()).collect();
    order.sort_by_key(|&i| trades[i].entry_time);
    let mut out = FileOut::create(path)?;
    push_header(&mut out.buf, &TRADES_CSV_HEADER);
    let mut stamp = UtcStamp::default();
    for i in order {
        let t = &trades[i];
        check_time(t.entry_time, || format!("trade {i}: entry_time"))?;
        check_time(t.exit_time, || format!("trade {i}: exit_time"))?;
        let b = &mut out.buf;
        push_text(b, &t.symbol);
        b.push(b',');
        b.extend_from_slice(t.side.as_str().as_bytes());
        b.push(b',');
        stamp.push(b, t.entry_time);
        b.push(b',');
        push_price(b, t.entry_price);
        b.push(b',');
        stamp.push(b, t.exit_time);
        b.push(b',');
        push_price(b, t.exit_price);
        b.push(b',');
        push_quantity(b, t.quantity);
        b.push(b',');
        b.extend_from_slice(t.exit_reason.as_str().as_bytes());
        b.push(b',');
        push_fixed(b, t.pnl, 2);
        b.push(b',');
        push_fixed(b, t.fees, 2);
        for level in [t.stop_loss, t.final_stop, t.target_1, t.target_2] {
            b.push(b',');
            if let Some(p) = level {
                push_price(b, p);
            }
        }
        b.push(b',');
        push_text(b, &t.pipeline);
        b.push(b',');
        push_text(b, &t.mode);
        b.push(b',');
        push_local(b, t.entry_time, tz);
        b.push(b',');
        push_local(b, t.exit_time, tz);
        b.push(b'\n');
        out.maybe_flush()?;
    }
    out.finish()
}

/// Writes equity.csv to `path` (created or truncated) with the header
/// `timestamp,equity,cash,drawdown_pct,buy_and_hold`: one line per entry of `rows` (indices
/// into `points`, ascending; `None` = every point), with the point's RFC 3339 UTC time,
/// equity and cash in USD with two decimals, the drawdown in percent with four decimals from
/// the running peak of **every** point up to it (so a daily row shows the drawdown from an
/// intraday peak too), and the buy-and-hold benchmark's equity in USD (one value per row in
/// `buy_and_hold`; the column is empty without a benchmark).
///
/// # Errors
/// An I/O error naming `path`; `InvalidInput` when `rows` is not ascending, indexes past
/// `points`, or `buy_and_hold` has another length than the rows; `InvalidData` for a time
/// outside chrono's range.
pub fn write_equity_csv(
    path: &Path,
    points: &[EquityPoint],
    rows: Option<&[usize]>,
    buy_and_hold: Option<&[Decimal]>,
) -> io::Result<()> {
    let n_rows = rows.map_or(points.len(), <[usize]>::len);
    if let Some(b) = buy_and_hold
        && b.len() != n_rows
    {
        return Err(invalid_input(
            path,
            format!("{} buy-and-hold values for {n_rows} rows", b.len()),
        ));
    }
    let mut out = FileOut::create(path)?;
    push_header(&mut out.buf, &EQUITY_CSV_HEADER);
    let mut stamp = UtcStamp::default();
    let mut peak: Option<Decimal> = None;
    let mut next = 0usize;
    for k in 0..n_rows {
        let i = rows.map_or(k, |r| r[k]);
        if i < next || i >= points.len() {
            return Err(invalid_input(
                path,
                format!("row {k}: point {i} is out of order or past the last point"),
            ));
        }
        for p in &points[next..=i] {
            peak = Some(peak.map_or(p.equity, |pk| pk.max(p.equity)));
        }
        next = i + 1;
        let p = &points[i];
        check_time(p.ts, || format!("equity point {i}: timestamp"))?;
        let b = &mut out.buf;
        stamp.push(b, p.ts);
        b.push(b',');
        push_fixed(b, p.equity, 2);
        b.push(b',');
        push_fixed(b, p.cash, 2);
        b.push(b',');
        push_drawdown(b, peak.unwrap_or(p.equity), p.equity);
        b.push(b',');
        if let Some(bh) = buy_and_hold {
            push_fixed(b, bh[k], 2);
        }
        b.push(b'\n');
        out.maybe_flush()?;
    }
    out.finish()
}

/// What the equity chart shows.
#[derive(Clone, Copy, Debug)]
pub struct EquityChart<'a> {
    /// Title on top (escaped for XML).
    pub title: &'a str,
    /// The equity curve, in time order.
    pub points: &'a [EquityPoint],
    /// The buy-and-hold benchmark as (Unix seconds, equity USD), in time order; empty for
    /// none.
    pub benchmark: &'a [(i64, Decimal)],
    /// What the benchmark holds, for the legend (`AAPL, GOOG, SPY`).
    pub benchmark_label: &'a str,
    /// Time zone of the date axis.
    pub tz: Tz,
}

/// Draws the equity chart as an SVG document of [`SVG_SIZE`] pixels, written by hand:
///
/// * the title, and a legend with the final equity and return of the strategy and of the
///   benchmark;
/// * the equity pane (`<g id="equity-pane">`): the equity curve (`<polyline id="equity">`)
///   and the buy-and-hold benchmark (`<polyline id="buy-and-hold">`, dashed) in USD, with
///   a USD axis on round values;
/// * the drawdown pane (`<g id="drawdown-pane">`): the drawdown from the running peak in
///   percent, a shaded area below zero (`<polygon id="drawdown">`);
/// * the date axis (`<g id="time-axis">`) under both panes, ticks on calendar boundaries in
///   `tz` (hours, days, Mondays, months or years, about eight of them), labelled `YYYY`,
///   `YYYY-MM`, `YYYY-MM-DD` or `YYYY-MM-DD HH:MM` by the tick spacing.
///
/// Each series keeps, per pixel column, its first, last, lowest and highest point, so the
/// drawing is exact at the pixel level and holds at most [`SVG_MAX_POINTS_PER_SERIES`]
/// points per series. Coordinates have one decimal. Text is emitted as `<text>` elements
/// rendered by the viewer (font family `sans-serif`); no font is embedded. Without points the
/// document holds the title and `no equity points`.
pub fn render_equity_svg(chart: &EquityChart<'_>) -> String {
    let mut s = Svg::default();
    draw(&mut s, chart);
    // Every byte came from a `&str` or is an ASCII digit or sign.
    String::from_utf8(s.0).unwrap_or_default()
}

/// Writes [`render_equity_svg`] of `chart` to `path` (created or truncated).
///
/// # Errors
/// [`OutputError::Io`] when writing fails.
pub fn write_equity_svg(path: &Path, chart: &EquityChart<'_>) -> Result<(), OutputError> {
    std::fs::write(path, render_equity_svg(chart)).map_err(|source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    })
}

// ---------------------------------------------------------------------------------------
// Files

/// A file written through one reusable buffer.
struct FileOut<'p> {
    path: &'p Path,
    file: File,
    buf: Vec<u8>,
}

impl<'p> FileOut<'p> {
    fn create(path: &'p Path) -> io::Result<FileOut<'p>> {
        let file = File::create(path).map_err(|e| named(path, e))?;
        Ok(FileOut {
            path,
            file,
            buf: Vec::with_capacity(FLUSH_AT + 1024),
        })
    }

    fn maybe_flush(&mut self) -> io::Result<()> {
        if self.buf.len() >= FLUSH_AT {
            self.file
                .write_all(&self.buf)
                .map_err(|e| named(self.path, e))?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.file
            .write_all(&self.buf)
            .and_then(|()| self.file.flush())
            .map_err(|e| named(self.path, e))
    }
}

fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn invalid_input(path: &Path, what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: {what}", path.display()),
    )
}

/// The Unix seconds chrono represents (what `DateTime::from_timestamp(ts, 0)` accepts).
const CHRONO_SECONDS: (i64, i64) = (
    DateTime::<Utc>::MIN_UTC.timestamp(),
    DateTime::<Utc>::MAX_UTC.timestamp(),
);

fn check_time(ts: i64, what: impl FnOnce() -> String) -> io::Result<()> {
    if (CHRONO_SECONDS.0..=CHRONO_SECONDS.1).contains(&ts) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {ts} is not a valid Unix time", what()),
        ))
    }
}

fn push_header(b: &mut Vec<u8>, names: &[&str]) {
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(n.as_bytes());
    }
    b.push(b'\n');
}

/// A CSV text field, quoted when needed.
fn push_text(b: &mut Vec<u8>, s: &str) {
    if !s.bytes().any(|c| matches!(c, b',' | b'"' | b'\n' | b'\r')) {
        b.extend_from_slice(s.as_bytes());
        return;
    }
    b.push(b'"');
    for c in s.bytes() {
        if c == b'"' {
            b.push(b'"');
        }
        b.push(c);
    }
    b.push(b'"');
}

// ---------------------------------------------------------------------------------------
// Numbers

const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

const TEN_POW_19: u64 = 10_000_000_000_000_000_000;

fn push_u64(b: &mut Vec<u8>, n: u64) {
    push_padded(b, n, 1);
}

/// Writes `n` with at least `width` digits (zero-padded) into `tmp`, right-aligned to end
/// at `end`, and answers where the digits start. `tmp[..end]` holds `b'0'`s and has room.
#[inline]
fn digits_into(tmp: &mut [u8], end: usize, mut n: u64, width: usize) -> usize {
    let mut i = end;
    while n >= 100 {
        let r = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
    }
    if n >= 10 {
        let r = n as usize * 2;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
    } else if n > 0 {
        i -= 1;
        tmp[i] = b'0' + n as u8;
    }
    i.min(end - width)
}

/// `n` with at least `width` digits (zero-padded; `width` ≤ 20).
fn push_padded(b: &mut Vec<u8>, n: u64, width: usize) {
    let mut tmp = [b'0'; 20];
    let from = digits_into(&mut tmp, 20, n, width);
    b.extend_from_slice(&tmp[from..]);
}

fn push_u128(b: &mut Vec<u8>, n: u128) {
    match u64::try_from(n) {
        Ok(small) => push_u64(b, small),
        Err(_) => {
            push_u128(b, n / u128::from(TEN_POW_19));
            push_padded(b, (n % u128::from(TEN_POW_19)) as u64, 19);
        }
    }
}

fn pow10(n: u32) -> u128 {
    10u128.pow(n)
}

/// `q / 10^scale` printed with exactly `scale` decimals (no sign).
fn push_scaled(b: &mut Vec<u8>, q: u128, scale: u32) {
    if scale == 0 {
        push_u128(b, q);
        return;
    }
    // The common case (an amount in USD with two or four decimals) in u64 arithmetic,
    // written right to left into one buffer and appended at once.
    if scale <= 19
        && let Ok(q) = u64::try_from(q)
    {
        let p = 10u64.pow(scale);
        let mut tmp = [b'0'; 41];
        let dot = digits_into(&mut tmp, 41, q % p, scale as usize) - 1;
        tmp[dot] = b'.';
        let from = digits_into(&mut tmp, dot, q / p, 1);
        b.extend_from_slice(&tmp[from..]);
        return;
    }
    let p = pow10(scale);
    let (int, frac) = match (u64::try_from(q), u64::try_from(p)) {
        (Ok(q), Ok(p)) => (u128::from(q / p), u128::from(q % p)),
        _ => (q / p, q % p),
    };
    push_u128(b, int);
    b.push(b'.');
    // frac < 10^scale ≤ 10^28: split in 19-digit halves when it does not fit a u64.
    match u64::try_from(frac) {
        Ok(f) if scale <= 19 => push_padded(b, f, scale as usize),
        _ => {
            let low = scale.min(19);
            let div = pow10(low);
            push_padded(b, (frac / div) as u64, (scale - low) as usize);
            push_padded(b, (frac % div) as u64, low as usize);
        }
    }
}

/// `|d|` rounded half away from zero to `dp` decimals, as an integer scaled by `10^dp`,
/// with the sign of `d`. `dp` ≤ 28.
fn round_scaled(d: Decimal, dp: u32) -> (bool, u128) {
    let m = d.mantissa();
    let neg = m < 0;
    let a = m.unsigned_abs();
    let s = d.scale();
    if s <= dp {
        // a < 2^96 and dp - s ≤ 28: a × 10^(dp-s) < 2^96 × 10^28 may exceed u128 only for
        // dp - s > 12, which no caller asks for with a large mantissa; saturate to be safe.
        return (neg, a.saturating_mul(pow10(dp - s)));
    }
    let shift = s - dp;
    let q = match (u64::try_from(a), shift) {
        (Ok(a), 0..=19) => {
            let p = 10u64.pow(shift);
            let (q, r) = (a / p, a % p);
            u128::from(q + u64::from(r >= p - r))
        }
        _ => {
            let p = pow10(shift);
            let (q, r) = (a / p, a % p);
            q + u128::from(r >= p - r)
        }
    };
    (neg, q)
}

/// Rounds half away from zero to `dp` decimals and prints exactly `dp` decimals (no `-0`).
fn push_fixed(b: &mut Vec<u8>, d: Decimal, dp: u32) {
    // Amounts in USD (two decimals) and percentages (four): u64 arithmetic with constant
    // divisors, the same digits as the general path below.
    if let Some((neg, q)) = round_scaled_u64(d, dp) {
        if neg && q != 0 {
            b.push(b'-');
        }
        match dp {
            2 => push_scaled_u64::<2>(b, q),
            4 => push_scaled_u64::<4>(b, q),
            _ => push_scaled(b, u128::from(q), dp),
        }
        return;
    }
    let (neg, q) = round_scaled(d, dp);
    if neg && q != 0 {
        b.push(b'-');
    }
    push_scaled(b, q, dp);
}

/// `10^n` for `n` ≤ 19.
const POW10_U64: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// [`round_scaled`] in u64 arithmetic: `None` when the mantissa or the result does not fit
/// a `u64`, or `d` has more than 19 decimals beyond `dp` (the caller takes the general path).
#[inline]
fn round_scaled_u64(d: Decimal, dp: u32) -> Option<(bool, u64)> {
    let m = d.mantissa();
    let a = u64::try_from(m.unsigned_abs()).ok()?;
    let s = d.scale();
    let q = if s <= dp {
        a.checked_mul(*POW10_U64.get((dp - s) as usize)?)?
    } else {
        let p = *POW10_U64.get((s - dp) as usize)?;
        let (q, r) = (a / p, a % p);
        q + u64::from(r >= p - r)
    };
    Some((m < 0, q))
}

/// [`push_scaled`] of a `u64` with `DP` (1 to 19) decimals: divisors known at compile time.
#[inline]
fn push_scaled_u64<const DP: usize>(b: &mut Vec<u8>, q: u64) {
    let p = POW10_U64[DP];
    let mut tmp = [b'0'; 24];
    let dot = digits_into(&mut tmp, 24, q % p, DP) - 1;
    tmp[dot] = b'.';
    let from = digits_into(&mut tmp, dot, q / p, 1);
    b.extend_from_slice(&tmp[from..]);
}

/// Prices: rounded half away from zero to at most six decimals, at least two printed.
fn push_price(b: &mut Vec<u8>, d: Decimal) {
    let mut scale = d.scale().min(6);
    let (neg, mut q) = round_scaled(d, scale);
    while scale > 2 && q.is_multiple_of(10) {
        q /= 10;
        scale -= 1;
    }
    if scale < 2 {
        q *= pow10(2 - scale);
        scale = 2;
    }
    if neg && q != 0 {
        b.push(b'-');
    }
    push_scaled(b, q, scale);
}

/// Quantities: exact, trailing zeros removed.
fn push_quantity(b: &mut Vec<u8>, d: Decimal) {
    let m = d.mantissa();
    let mut q = m.unsigned_abs();
    let mut scale = d.scale();
    while scale > 0 && q.is_multiple_of(10) {
        q /= 10;
        scale -= 1;
    }
    if q == 0 {
        b.push(b'0');
        return;
    }
    if m < 0 {
        b.push(b'-');
    }
    push_scaled(b, q, scale);
}

/// The drawdown of `equity` from `peak` in percent with four decimals:
/// `(peak − equity) / peak × 100`, rounded half away from zero from the exact quotient;
/// `0.0000` while the peak is not positive.
fn push_drawdown(b: &mut Vec<u8>, peak: Decimal, equity: Decimal) {
    if peak <= Decimal::ZERO || equity >= peak {
        b.extend_from_slice(b"0.0000");
        return;
    }
    match drawdown_e4(peak, equity) {
        Some(q) => match u64::try_from(q) {
            Ok(q) => push_scaled_u64::<4>(b, q),
            Err(_) => push_scaled(b, q, 4),
        },
        None => push_fixed(b, (peak - equity) / peak * Decimal::ONE_HUNDRED, 4),
    }
}

/// `round((peak − equity) × 10⁶ / peak)` with integers (None on overflow); `peak > equity`,
/// `peak > 0`.
fn drawdown_e4(peak: Decimal, equity: Decimal) -> Option<u128> {
    let s = peak.scale().max(equity.scale());
    let p = peak
        .mantissa()
        .checked_mul(10i128.checked_pow(s - peak.scale())?)?;
    let e = equity
        .mantissa()
        .checked_mul(10i128.checked_pow(s - equity.scale())?)?;
    let num = u128::try_from(p.checked_sub(e)?)
        .ok()?
        .checked_mul(1_000_000)?;
    let den = u128::try_from(p).ok()?;
    Some(match (u64::try_from(num), u64::try_from(den)) {
        (Ok(n), Ok(d)) => {
            let (q, r) = (n / d, n % d);
            u128::from(q + u64::from(r >= d - r))
        }
        _ => {
            let (q, r) = (num / den, num % den);
            q + u128::from(r >= den - r)
        }
    })
}

/// Money: two decimals (a `String`, for tests and short texts).
#[cfg(test)]
fn format_money(d: Decimal) -> String {
    let mut b = Vec::new();
    push_fixed(&mut b, d, 2);
    String::from_utf8(b).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Times

/// First and last instants printed without chrono: years 0000 to 9999.
const FAST_TIME: (i64, i64) = (-62_167_219_200, 253_402_300_799);

/// Year, month and day of a count of days since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn push_pair(b: &mut Vec<u8>, n: u32) {
    let r = n as usize * 2;
    b.extend_from_slice(&DIGIT_PAIRS[r..r + 2]);
}

/// `YYYY-MM-DDTHH:MM:SS` of `ts` read as Unix seconds (UTC, or a local clock when the
/// offset was added), for `ts` in [`FAST_TIME`].
fn push_datetime(b: &mut Vec<u8>, ts: i64) {
    let (days, secs) = (ts.div_euclid(86_400), ts.rem_euclid(86_400) as u32);
    push_date(b, days);
    push_clock(b, secs);
}

fn push_date(b: &mut Vec<u8>, days: i64) {
    let (y, m, d) = civil_from_days(days);
    push_pair(b, (y / 100) as u32);
    push_pair(b, (y % 100) as u32);
    b.push(b'-');
    push_pair(b, m);
    b.push(b'-');
    push_pair(b, d);
}

fn push_clock(b: &mut Vec<u8>, secs: u32) {
    b.push(b'T');
    push_pair(b, secs / 3_600);
    b.push(b':');
    push_pair(b, secs / 60 % 60);
    b.push(b':');
    push_pair(b, secs % 60);
}

/// RFC 3339 UTC times, remembering the date of the previous one (consecutive rows share it).
#[derive(Default)]
struct UtcStamp {
    day: Option<i64>,
    date: [u8; 10],
}

impl UtcStamp {
    /// Pushes `2012-01-03T21:00:00Z`; `ts` must be in chrono's range ([`check_time`]).
    fn push(&mut self, b: &mut Vec<u8>, ts: i64) {
        if !(FAST_TIME.0..=FAST_TIME.1).contains(&ts) {
            if let Some(t) = DateTime::<Utc>::from_timestamp(ts, 0) {
                b.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::Secs, true).as_bytes());
            }
            return;
        }
        let days = ts.div_euclid(86_400);
        if self.day == Some(days) {
            b.extend_from_slice(&self.date);
        } else {
            let start = b.len();
            push_date(b, days);
            // Years 0000-9999: always ten bytes.
            self.date.copy_from_slice(&b[start..start + 10]);
            self.day = Some(days);
        }
        push_clock(b, ts.rem_euclid(86_400) as u32);
        b.push(b'Z');
    }
}

/// The instant `ts` on the local clock of `tz` with its offset (`2012-01-03T16:00:00-05:00`,
/// `Z` for a zero offset), as chrono's RFC 3339 with `use_z`.
fn push_local(b: &mut Vec<u8>, ts: i64, tz: Tz) {
    let Some(t) = DateTime::<Utc>::from_timestamp(ts, 0) else {
        return;
    };
    let offset = tz
        .offset_from_utc_datetime(&t.naive_utc())
        .fix()
        .local_minus_utc();
    let local = ts + i64::from(offset);
    if offset % 60 != 0 || !(FAST_TIME.0..=FAST_TIME.1).contains(&local) {
        let s = t
            .with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        b.extend_from_slice(s.as_bytes());
        return;
    }
    push_datetime(b, local);
    if offset == 0 {
        b.push(b'Z');
    } else {
        b.push(if offset < 0 { b'-' } else { b'+' });
        let minutes = offset.unsigned_abs() / 60;
        push_pair(b, minutes / 60);
        b.push(b':');
        push_pair(b, minutes % 60);
    }
}

// ---------------------------------------------------------------------------------------
// The chart

/// The document being written: UTF-8 bytes (only `&str`s and ASCII digits go in).
#[derive(Default)]
struct Svg(Vec<u8>);

impl Svg {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    /// A coordinate or length with one decimal (`12.5`, `-3.0`).
    fn num(&mut self, v: f64) {
        let tenths = if v.is_finite() {
            (v * 10.0).round() as i64
        } else {
            0
        };
        if tenths < 0 {
            self.0.push(b'-');
        }
        let a = tenths.unsigned_abs();
        push_u64(&mut self.0, a / 10);
        self.0.push(b'.');
        self.0.push(b'0' + (a % 10) as u8);
    }

    /// Text content or an attribute value, escaped.
    fn text(&mut self, s: &str) {
        for c in s.chars() {
            match c {
                '&' => self.raw("&amp;"),
                '<' => self.raw("&lt;"),
                '>' => self.raw("&gt;"),
                '"' => self.raw("&quot;"),
                '\'' => self.raw("&apos;"),
                c => {
                    let mut utf8 = [0u8; 4];
                    self.raw(c.encode_utf8(&mut utf8));
                }
            }
        }
    }

    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, attrs: &str) {
        self.raw("<line x1=\"");
        self.num(x1);
        self.raw("\" y1=\"");
        self.num(y1);
        self.raw("\" x2=\"");
        self.num(x2);
        self.raw("\" y2=\"");
        self.num(y2);
        self.raw("\" ");
        self.raw(attrs);
        self.raw("/>\n");
    }

    /// `<text x y attrs>content</text>`.
    fn label(&mut self, x: f64, y: f64, attrs: &str, content: &str) {
        self.raw("<text x=\"");
        self.num(x);
        self.raw("\" y=\"");
        self.num(y);
        self.raw("\" ");
        self.raw(attrs);
        self.raw(">");
        self.text(content);
        self.raw("</text>\n");
    }

    fn points(&mut self, pts: &[(f64, f64)]) {
        for (i, (x, y)) in pts.iter().enumerate() {
            if i > 0 {
                self.raw(" ");
            }
            self.num(*x);
            self.raw(",");
            self.num(*y);
        }
    }
}

const EQUITY_COLOR: &str = "#1f5fbf";
const BENCHMARK_COLOR: &str = "#7a7a7a";
const DRAWDOWN_COLOR: &str = "#c62828";
const GRID: &str = "stroke=\"#e6e6e6\" stroke-width=\"1\"";

/// A `Decimal` as `f64` for drawing (mantissa over a power of ten: within an ulp or two,
/// far below a pixel).
fn to_f64(d: Decimal) -> f64 {
    // A mantissa that fits an i64 converts to the same f64 through it (both conversions
    // round the same integer to nearest), without the 128-bit routine; `10^s` for s ≤ 22
    // is exact either way.
    match (
        i64::try_from(d.mantissa()),
        F64_POW10.get(d.scale() as usize),
    ) {
        (Ok(m), Some(p)) => m as f64 / p,
        _ => d.mantissa() as f64 / 10f64.powi(d.scale() as i32),
    }
}

/// Exact powers of ten as `f64` (every one up to 1e22 is representable).
const F64_POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Indices of the points to draw: per pixel column, the first, last, lowest and highest
/// point of the column, in time order.
fn decimate(ts: &[i64], values: &[f64], x0: i64, x1: i64) -> Vec<usize> {
    let span = (x1 - x0).max(1) as f64;
    let cols = SVG_COLUMNS as f64;
    let column = |t: i64| (((t - x0) as f64 / span * cols).floor()).clamp(0.0, cols - 1.0) as usize;
    let mut keep = Vec::new();
    let mut i = 0;
    while i < ts.len() {
        let c = column(ts[i]);
        let first = i;
        let (mut lo, mut hi) = (i, i);
        let mut j = i + 1;
        while j < ts.len() && column(ts[j]) == c {
            if values[j] < values[lo] {
                lo = j;
            }
            if values[j] > values[hi] {
                hi = j;
            }
            j += 1;
        }
        let mut four = [first, lo, hi, j - 1];
        four.sort_unstable();
        for (k, idx) in four.iter().enumerate() {
            if k == 0 || four[k - 1] != *idx {
                keep.push(*idx);
            }
        }
        i = j;
    }
    keep
}

/// Tick positions and label format of the date axis over `[x0, x1]`.
fn time_ticks(x0: i64, x1: i64, tz: Tz) -> (Vec<i64>, &'static str) {
    #[derive(Clone, Copy)]
    enum Step {
        Secs(i64),
        Days(i64),
        Weeks,
        Months(u32),
        Years(i32),
    }
    const DAY: i64 = 86_400;
    let steps = [
        (Step::Secs(60), 60),
        (Step::Secs(300), 300),
        (Step::Secs(900), 900),
        (Step::Secs(1_800), 1_800),
        (Step::Secs(3_600), 3_600),
        (Step::Secs(7_200), 7_200),
        (Step::Secs(10_800), 10_800),
        (Step::Secs(21_600), 21_600),
        (Step::Secs(43_200), 43_200),
        (Step::Days(1), DAY),
        (Step::Days(2), 2 * DAY),
        (Step::Weeks, 7 * DAY),
        (Step::Months(1), 30 * DAY),
        (Step::Months(2), 61 * DAY),
        (Step::Months(3), 91 * DAY),
        (Step::Months(6), 182 * DAY),
        (Step::Years(1), 365 * DAY),
        (Step::Years(2), 730 * DAY),
        (Step::Years(5), 1_826 * DAY),
        (Step::Years(10), 3_652 * DAY),
        (Step::Years(25), 9_131 * DAY),
        (Step::Years(50), 18_262 * DAY),
        (Step::Years(100), 36_524 * DAY),
    ];
    let span = x1 - x0;
    let (step, _) = steps
        .iter()
        .copied()
        .find(|(_, secs)| span / secs <= 7)
        .unwrap_or(steps[steps.len() - 1]);
    let to_utc =
        |local: NaiveDateTime| crate::market::timeframe::local_to_utc(tz, local).timestamp();
    let Some(start) = DateTime::<Utc>::from_timestamp(x0, 0) else {
        return (Vec::new(), "%Y-%m-%d");
    };
    let first_day = start.with_timezone(&tz).date_naive();
    let mut ticks = Vec::new();
    let mut push = |t: i64| {
        if t >= x0 && t <= x1 && ticks.last().is_none_or(|&l| t > l) {
            ticks.push(t);
        }
        t <= x1 && ticks.len() < 64
    };
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default();
    match step {
        Step::Secs(s) => {
            let mut day = first_day;
            'days: for _ in 0..64 {
                let mut k = 0;
                while k * s < DAY {
                    let local = midnight(day) + chrono::Duration::seconds(k * s);
                    if !push(to_utc(local)) {
                        break 'days;
                    }
                    k += 1;
                }
                match day.succ_opt() {
                    Some(d) => day = d,
                    None => break,
                }
            }
        }
        Step::Days(_) | Step::Weeks => {
            let (n, monday) = match step {
                Step::Days(n) => (n, false),
                _ => (7, true),
            };
            let mut day = first_day;
            for _ in 0..(64 * n + 7) {
                let aligned = if monday {
                    day.weekday() == chrono::Weekday::Mon
                } else {
                    i64::from(day.num_days_from_ce()) % n == 0
                };
                if aligned && !push(to_utc(midnight(day))) {
                    break;
                }
                match day.succ_opt() {
                    Some(d) => day = d,
                    None => break,
                }
            }
        }
        Step::Months(n) => {
            let (mut y, mut m) = (first_day.year(), first_day.month());
            for _ in 0..(64 * n + 12) {
                if (m - 1) % n == 0
                    && let Some(d) = NaiveDate::from_ymd_opt(y, m, 1)
                    && !push(to_utc(midnight(d)))
                {
                    break;
                }
                (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            }
        }
        Step::Years(n) => {
            let y0 = first_day.year();
            for y in y0..y0.saturating_add(64 * n + 1) {
                if y.rem_euclid(n) == 0
                    && let Some(d) = NaiveDate::from_ymd_opt(y, 1, 1)
                    && !push(to_utc(midnight(d)))
                {
                    break;
                }
            }
        }
    }
    let format = match step {
        Step::Secs(_) => "%Y-%m-%d %H:%M",
        Step::Days(_) | Step::Weeks => "%Y-%m-%d",
        Step::Months(_) => "%Y-%m",
        Step::Years(_) => "%Y",
    };
    (ticks, format)
}

/// About `target` round values (1, 2, 2.5 or 5 × 10^k apart) covering `[lo, hi]`, and the
/// decimals their labels need.
fn value_ticks(lo: f64, hi: f64, target: f64) -> (Vec<f64>, usize) {
    let raw = (hi - lo) / target;
    if !(raw.is_finite() && raw > 0.0) {
        return (vec![lo], 0);
    }
    let mag = 10f64.powf(raw.log10().floor());
    let mut step = mag * 10.0;
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= raw {
            step = m * mag;
            break;
        }
    }
    let decimals = if step >= 1.0 {
        0
    } else {
        let d = (-step.log10()).ceil() as usize;
        if ((step * 10f64.powi(d as i32)).round() - step * 10f64.powi(d as i32)).abs() > 1e-9 {
            d + 1
        } else {
            d
        }
        .min(6)
    };
    let mut ticks = Vec::new();
    let mut v = (lo / step - 1e-9).ceil() * step;
    while v <= hi + step * 1e-9 && ticks.len() < 32 {
        ticks.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    (ticks, decimals)
}

/// A value with `decimals` decimals and thousands separators (`1,234,567`, `-0.25`).
fn grouped(v: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, v);
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) if rest.bytes().any(|c| c.is_ascii_digit() && c != b'0') => ("-", rest),
        Some(rest) => ("", rest),
        None => ("", s.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let mut out = String::with_capacity(s.len() + int.len() / 3);
    out.push_str(sign);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// `+12.34%` / `-5.00%` of `last / first − 1`.
fn change_pct(first: Decimal, last: Decimal) -> String {
    if first <= Decimal::ZERO {
        return "n/a".to_string();
    }
    let pct = ((last - first) / first * Decimal::ONE_HUNDRED)
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    let sign = if pct > Decimal::ZERO { "+" } else { "" };
    format!("{sign}{}%", format_usd(pct))
}

fn draw(s: &mut Svg, c: &EquityChart<'_>) {
    let (w, h) = (f64::from(SVG_SIZE.0), f64::from(SVG_SIZE.1));
    s.raw("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"");
    s.raw(&SVG_SIZE.0.to_string());
    s.raw("\" height=\"");
    s.raw(&SVG_SIZE.1.to_string());
    s.raw("\" viewBox=\"0 0 ");
    s.raw(&format!("{} {}", SVG_SIZE.0, SVG_SIZE.1));
    s.raw("\" font-family=\"sans-serif\" font-size=\"12\">\n");
    s.raw("<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n");
    s.label(
        w / 2.0,
        26.0,
        "id=\"title\" text-anchor=\"middle\" font-size=\"18\"",
        c.title,
    );
    let (Some(first), Some(last)) = (c.points.first(), c.points.last()) else {
        s.label(
            w / 2.0,
            h / 2.0,
            "text-anchor=\"middle\" font-size=\"16\"",
            "no equity points",
        );
        s.raw("</svg>\n");
        return;
    };

    // Time range over both series.
    let mut x0 = first.ts;
    let mut x1 = last.ts;
    if let (Some(b0), Some(b1)) = (c.benchmark.first(), c.benchmark.last()) {
        x0 = x0.min(b0.0);
        x1 = x1.max(b1.0);
    }
    if x1 <= x0 {
        x0 -= 43_200;
        x1 += 43_200;
    }
    let x_of = |t: i64| PLOT_X.0 + (t - x0) as f64 / (x1 - x0) as f64 * (PLOT_X.1 - PLOT_X.0);

    // Series in f64, decimated per pixel column.
    let ts: Vec<i64> = c.points.iter().map(|p| p.ts).collect();
    let equity: Vec<f64> = c.points.iter().map(|p| to_f64(p.equity)).collect();
    let mut peak = f64::NEG_INFINITY;
    let drawdown: Vec<f64> = equity
        .iter()
        .map(|&e| {
            peak = peak.max(e);
            if peak > 0.0 {
                -(peak - e) / peak * 100.0
            } else {
                0.0
            }
        })
        .collect();
    let eq_keep = decimate(&ts, &equity, x0, x1);
    let dd_keep = decimate(&ts, &drawdown, x0, x1);
    let b_ts: Vec<i64> = c.benchmark.iter().map(|p| p.0).collect();
    let b_val: Vec<f64> = c.benchmark.iter().map(|p| to_f64(p.1)).collect();
    let b_keep = decimate(&b_ts, &b_val, x0, x1);

    // Value ranges.
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in eq_keep
        .iter()
        .map(|&i| equity[i])
        .chain(b_keep.iter().map(|&i| b_val[i]))
    {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let (y0, y1) = if hi > lo {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    } else {
        let pad = (hi.abs() * 0.01).max(1.0);
        (lo - pad, hi + pad)
    };
    let deepest = dd_keep.iter().map(|&i| drawdown[i]).fold(0.0, f64::min);
    let dd_lo = if deepest < 0.0 { deepest * 1.1 } else { -1.0 };
    let y_eq = |v: f64| EQUITY_Y.1 - (v - y0) / (y1 - y0) * (EQUITY_Y.1 - EQUITY_Y.0);
    let y_dd = |v: f64| DRAWDOWN_Y.0 + v / dd_lo * (DRAWDOWN_Y.1 - DRAWDOWN_Y.0);

    // Legend: final values of both curves, one line each.
    s.line(
        PLOT_X.0,
        44.0,
        PLOT_X.0 + 24.0,
        44.0,
        &format!("stroke=\"{EQUITY_COLOR}\" stroke-width=\"2\""),
    );
    s.label(
        PLOT_X.0 + 30.0,
        48.0,
        "id=\"legend-equity\"",
        &format!(
            "Equity {} USD ({})",
            format_usd(last.equity),
            change_pct(first.equity, last.equity)
        ),
    );
    if let (Some(b0), Some(b1)) = (c.benchmark.first(), c.benchmark.last()) {
        s.line(
            PLOT_X.0,
            62.0,
            PLOT_X.0 + 24.0,
            62.0,
            &format!("stroke=\"{BENCHMARK_COLOR}\" stroke-width=\"1.5\" stroke-dasharray=\"5,3\""),
        );
        s.label(
            PLOT_X.0 + 30.0,
            66.0,
            "id=\"legend-benchmark\"",
            &format!(
                "Buy and hold {} {} USD ({})",
                c.benchmark_label,
                format_usd(b1.1),
                change_pct(b0.1, b1.1)
            ),
        );
    }

    // Date axis: grid through both panes, labels below.
    let (ticks, format) = time_ticks(x0, x1, c.tz);
    s.raw("<g id=\"time-axis\">\n");
    for &t in &ticks {
        let x = x_of(t);
        s.line(x, EQUITY_Y.0, x, EQUITY_Y.1, GRID);
        s.line(x, DRAWDOWN_Y.0, x, DRAWDOWN_Y.1 + 4.0, GRID);
        let text = DateTime::<Utc>::from_timestamp(t, 0)
            .map(|u| u.with_timezone(&c.tz).format(format).to_string())
            .unwrap_or_default();
        s.label(x, DRAWDOWN_Y.1 + 18.0, "text-anchor=\"middle\"", &text);
    }
    s.label(
        PLOT_X.1,
        h - 8.0,
        "text-anchor=\"end\" font-size=\"10\" fill=\"#666666\"",
        &format!("Time ({})", c.tz.name()),
    );
    s.raw("</g>\n");

    // Equity pane.
    s.raw("<g id=\"equity-pane\">\n");
    let (vticks, decimals) = value_ticks(y0, y1, 8.0);
    for v in vticks {
        let y = y_eq(v);
        s.line(PLOT_X.0, y, PLOT_X.1, y, GRID);
        s.label(
            PLOT_X.0 - 6.0,
            y + 4.0,
            "text-anchor=\"end\"",
            &grouped(v, decimals),
        );
    }
    frame(s, EQUITY_Y);
    vertical_title(s, (EQUITY_Y.0 + EQUITY_Y.1) / 2.0, "Equity (USD)");
    if !b_keep.is_empty() {
        let pts: Vec<(f64, f64)> = b_keep
            .iter()
            .map(|&i| (x_of(b_ts[i]), y_eq(b_val[i])))
            .collect();
        s.raw(&format!(
            "<polyline id=\"buy-and-hold\" fill=\"none\" stroke=\"{BENCHMARK_COLOR}\" stroke-width=\"1.5\" stroke-dasharray=\"5,3\" points=\""
        ));
        s.points(&single_to_segment(pts));
        s.raw("\"/>\n");
    }
    let pts: Vec<(f64, f64)> = eq_keep
        .iter()
        .map(|&i| (x_of(ts[i]), y_eq(equity[i])))
        .collect();
    s.raw(&format!(
        "<polyline id=\"equity\" fill=\"none\" stroke=\"{EQUITY_COLOR}\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\""
    ));
    s.points(&single_to_segment(pts));
    s.raw("\"/>\n</g>\n");

    // Drawdown pane.
    s.raw("<g id=\"drawdown-pane\">\n");
    let (dticks, ddec) = value_ticks(dd_lo, 0.0, 3.0);
    for v in dticks {
        let y = y_dd(v);
        s.line(PLOT_X.0, y, PLOT_X.1, y, GRID);
        s.label(
            PLOT_X.0 - 6.0,
            y + 4.0,
            "text-anchor=\"end\"",
            &format!("{}%", grouped(v, ddec)),
        );
    }
    frame(s, DRAWDOWN_Y);
    vertical_title(s, (DRAWDOWN_Y.0 + DRAWDOWN_Y.1) / 2.0, "Drawdown (%)");
    let mut area: Vec<(f64, f64)> = dd_keep
        .iter()
        .map(|&i| (x_of(ts[i]), y_dd(drawdown[i])))
        .collect();
    let (xa, xb) = (
        area.first().map_or(PLOT_X.0, |p| p.0),
        area.last().map_or(PLOT_X.0, |p| p.0),
    );
    area.push((xb, DRAWDOWN_Y.0));
    area.push((xa, DRAWDOWN_Y.0));
    s.raw(&format!(
        "<polygon id=\"drawdown\" fill=\"{DRAWDOWN_COLOR}\" fill-opacity=\"0.3\" stroke=\"{DRAWDOWN_COLOR}\" stroke-width=\"1\" points=\""
    ));
    s.points(&area);
    s.raw("\"/>\n</g>\n</svg>\n");
}

/// A one-point line is drawn as a short horizontal segment, so that it shows.
fn single_to_segment(mut pts: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    if pts.len() == 1 {
        let (x, y) = pts[0];
        pts = vec![(x - 2.0, y), (x + 2.0, y)];
    }
    pts
}

fn frame(s: &mut Svg, (top, bottom): (f64, f64)) {
    s.raw("<rect x=\"");
    s.num(PLOT_X.0);
    s.raw("\" y=\"");
    s.num(top);
    s.raw("\" width=\"");
    s.num(PLOT_X.1 - PLOT_X.0);
    s.raw("\" height=\"");
    s.num(bottom - top);
    s.raw("\" fill=\"none\" stroke=\"#999999\" stroke-width=\"1\"/>\n");
}

fn vertical_title(s: &mut Svg, y: f64, text: &str) {
    let x = 18.0;
    s.raw("<text x=\"");
    s.num(x);
    s.raw("\" y=\"");
    s.num(y);
    s.raw("\" text-anchor=\"middle\" transform=\"rotate(-90 ");
    s.num(x);
    s.raw(" ");
    s.num(y);
    s.raw(")\">");
    s.text(text);
    s.raw("</text>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{OrderPurpose, PositionSide};
    use rust_decimal::dec;
    use xml::reader::{EventReader, XmlEvent};

    fn two_trades() -> Vec<TradeRecord> {
        vec![
            TradeRecord {
                pipeline: "aapl-breakout".to_string(),
                symbol: "AAPL".to_string(),
                side: PositionSide::Long,
                entry_time: 1_325_622_600, // 2012-01-03T20:30:00Z
                exit_time: 1_325_624_400,  // 2012-01-03T21:00:00Z
                entry_price: dec!(185.5),
                exit_price: dec!(186.250000),
                quantity: dec!(100.00),
                stop_loss: Some(dec!(184)),
                final_stop: Some(dec!(185.5)),
                target_1: Some(dec!(186.0)),
                target_2: Some(dec!(187.123456789)),
                exit_reason: OrderPurpose::Target2,
                pnl: dec!(73.005),
                fees: dec!(2),
                mode: "simulation".to_string(),
            },
            TradeRecord {
                pipeline: "msft, \"short\"".to_string(),
                symbol: "MSFT".to_string(),
                side: PositionSide::Short,
                entry_time: 1_325_689_200, // 2012-01-04T15:00:00Z
                exit_time: 1_325_775_600,  // 2012-01-05T15:00:00Z
                entry_price: dec!(370.1),
                exit_price: dec!(371.4000004),
                quantity: dec!(0.5),
                stop_loss: None,
                final_stop: None,
                target_1: None,
                target_2: None,
                exit_reason: OrderPurpose::StopLoss,
                pnl: dec!(-0.655),
                fees: dec!(-0.004),
                mode: "paper".to_string(),
            },
        ]
    }

    fn equity() -> Vec<EquityPoint> {
        vec![
            EquityPoint {
                ts: 1_325_548_800,
                equity: dec!(10000),
                cash: dec!(10000),
            },
            EquityPoint {
                ts: 1_325_635_200,
                equity: dec!(10150),
                cash: dec!(10150.004),
            },
            EquityPoint {
                ts: 1_325_721_600,
                equity: dec!(10050.5),
                cash: dec!(-9.995),
            },
            EquityPoint {
                ts: 1_325_808_000,
                equity: dec!(10200),
                cash: dec!(10200),
            },
        ]
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn chart<'a>(points: &'a [EquityPoint], title: &'a str) -> EquityChart<'a> {
        EquityChart {
            title,
            points,
            benchmark: &[],
            benchmark_label: "",
            tz: Tz::UTC,
        }
    }

    const TRADES_HEADER_LINE: &str = "symbol,side,entry_time,entry_price,exit_time,exit_price,quantity,exit_reason,pnl,fees,\
         initial_stop,final_stop,target_1,target_2,pipeline,mode,entry_time_local,exit_time_local\n";

    #[test]
    fn trades_csv_exact_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trades.csv");
        write_trades_csv(&path, &two_trades(), chrono_tz::America::New_York).unwrap();
        let text = String::from_utf8(read(&path)).unwrap();
        assert_eq!(
            text,
            format!(
                "{TRADES_HEADER_LINE}\
             AAPL,long,2012-01-03T20:30:00Z,185.50,2012-01-03T21:00:00Z,186.25,100,target_2,73.01,2.00,\
             184.00,185.50,186.00,187.123457,aapl-breakout,simulation,2012-01-03T15:30:00-05:00,2012-01-03T16:00:00-05:00\n\
             MSFT,short,2012-01-04T15:00:00Z,370.10,2012-01-05T15:00:00Z,371.40,0.5,stop_loss,-0.66,0.00,\
             ,,,,\"msft, \"\"short\"\"\",paper,2012-01-04T10:00:00-05:00,2012-01-05T10:00:00-05:00\n"
            )
        );
    }

    #[test]
    fn trades_csv_is_in_entry_order() {
        // Given in exit order: the second trade entered first and closed last.
        let mut trades = two_trades();
        trades[1].entry_time = 1_325_600_000;
        trades[1].exit_time = 1_325_700_000;
        trades.swap(0, 1);
        trades[1].symbol = "AAPL".into();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trades.csv");
        write_trades_csv(&path, &[trades[1].clone(), trades[0].clone()], Tz::UTC).unwrap();
        let text = String::from_utf8(read(&path)).unwrap();
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert!(
            rows[0].starts_with("MSFT,short,2012-01-03T14:13:20Z"),
            "{}",
            rows[0]
        );
        assert!(
            rows[1].starts_with("AAPL,long,2012-01-03T20:30:00Z"),
            "{}",
            rows[1]
        );
        // Local times in UTC end in Z, as chrono prints them.
        assert!(
            rows[1].ends_with("2012-01-03T20:30:00Z,2012-01-03T21:00:00Z"),
            "{}",
            rows[1]
        );
    }

    #[test]
    fn trades_csv_without_trades_is_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trades.csv");
        write_trades_csv(&path, &[], Tz::UTC).unwrap();
        assert_eq!(String::from_utf8(read(&path)).unwrap(), TRADES_HEADER_LINE);
        assert_eq!(
            TRADES_HEADER_LINE,
            format!("{}\n", TRADES_CSV_HEADER.join(","))
        );
    }

    #[test]
    fn trades_csv_rejects_times_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trades.csv");
        let mut trades = two_trades();
        trades[1].exit_time = i64::MAX;
        let err = write_trades_csv(&path, &trades, Tz::UTC).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("trade 1: exit_time"), "{err}");
    }

    #[test]
    fn equity_csv_exact_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("equity.csv");
        write_equity_csv(&path, &equity(), None, None).unwrap();
        // Drawdown of 10050.5 from the 10150 peak: 99.5 / 10150 × 100 = 0.980295…%.
        assert_eq!(
            String::from_utf8(read(&path)).unwrap(),
            "timestamp,equity,cash,drawdown_pct,buy_and_hold\n\
             2012-01-03T00:00:00Z,10000.00,10000.00,0.0000,\n\
             2012-01-04T00:00:00Z,10150.00,10150.00,0.0000,\n\
             2012-01-05T00:00:00Z,10050.50,-10.00,0.9803,\n\
             2012-01-06T00:00:00Z,10200.00,10200.00,0.0000,\n"
        );
    }

    #[test]
    fn equity_csv_rows_keep_the_peak_of_every_point_and_the_benchmark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("equity.csv");
        // Rows 0 and 2 only: the 10150 peak of the skipped point still sets the drawdown.
        let bh = [dec!(10000), dec!(9999.995)];
        write_equity_csv(&path, &equity(), Some(&[0, 2]), Some(&bh)).unwrap();
        assert_eq!(
            String::from_utf8(read(&path)).unwrap(),
            "timestamp,equity,cash,drawdown_pct,buy_and_hold\n\
             2012-01-03T00:00:00Z,10000.00,10000.00,0.0000,10000.00\n\
             2012-01-05T00:00:00Z,10050.50,-10.00,0.9803,10000.00\n"
        );
        let err = write_equity_csv(&path, &equity(), Some(&[2, 1]), None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = write_equity_csv(&path, &equity(), Some(&[0, 9]), None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = write_equity_csv(&path, &equity(), None, Some(&bh)).unwrap_err();
        assert!(
            err.to_string().contains("2 buy-and-hold values for 4 rows"),
            "{err}"
        );
    }

    #[test]
    fn io_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("equity.csv");
        let err = write_equity_csv(&path, &equity(), None, None).unwrap_err();
        assert!(err.to_string().contains("missing/equity.csv"), "{err}");
        let err = write_equity_svg(&path, &chart(&equity(), "t")).unwrap_err();
        assert!(matches!(err, OutputError::Io { .. }));
        assert!(err.to_string().contains("missing/equity.csv"), "{err}");
    }

    fn fmt(f: fn(&mut Vec<u8>, Decimal), d: Decimal) -> String {
        let mut b = Vec::new();
        f(&mut b, d);
        String::from_utf8(b).unwrap()
    }

    fn fixed(d: Decimal, dp: u32) -> String {
        let mut b = Vec::new();
        push_fixed(&mut b, d, dp);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn number_formats() {
        assert_eq!(format_money(dec!(1.005)), "1.01");
        assert_eq!(format_money(dec!(-1.005)), "-1.01");
        assert_eq!(format_money(dec!(-0.001)), "0.00");
        assert_eq!(format_money(dec!(1234567.1)), "1234567.10");
        assert_eq!(fmt(push_price, dec!(12)), "12.00");
        assert_eq!(fmt(push_price, dec!(12.3)), "12.30");
        assert_eq!(fmt(push_price, dec!(12.345)), "12.345");
        assert_eq!(fmt(push_price, dec!(0.0000005)), "0.000001");
        assert_eq!(fmt(push_price, dec!(-0.0000004)), "0.00");
        assert_eq!(fmt(push_quantity, dec!(10.500)), "10.5");
        assert_eq!(fmt(push_quantity, dec!(0.000)), "0");
        assert_eq!(fmt(push_quantity, dec!(-3)), "-3");
        assert_eq!(fixed(dec!(2.43902439), 4), "2.4390");
    }

    /// The hand-written formatting agrees with `Decimal`'s own rounding and printing, on
    /// every scale and on mantissas up to the 96-bit limit.
    #[test]
    fn number_formats_agree_with_decimal() {
        let reference_fixed = |d: Decimal, dp: u32| {
            let mut r = d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
            if r.is_zero() {
                r = Decimal::ZERO;
            }
            r.rescale(dp);
            r.to_string()
        };
        let reference_price = |d: Decimal| {
            let mut r = d
                .round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero)
                .normalize();
            if r.is_zero() {
                r = Decimal::ZERO;
            }
            if r.scale() < 2 {
                r.rescale(2);
            }
            r.to_string()
        };
        for d in random_decimals(0x2545_F491_4F6C_DD1D, 20_000) {
            for dp in [0, 2, 4, 6] {
                assert_eq!(fixed(d, dp), reference_fixed(d, dp), "{d} to {dp}");
            }
            assert_eq!(fmt(push_price, d), reference_price(d), "price {d}");
            let q = d.normalize();
            let q = if q.is_zero() { Decimal::ZERO } else { q };
            assert_eq!(fmt(push_quantity, d), q.to_string(), "quantity {d}");
        }
        assert_eq!(fixed(Decimal::MAX, 2), format!("{}.00", Decimal::MAX));
        assert_eq!(fixed(Decimal::MIN, 0), Decimal::MIN.to_string());
    }

    /// Deterministic decimals (xorshift64 from `seed`) of every scale and of mantissas up to
    /// 66 bits, both signs.
    fn random_decimals(seed: u64, n: usize) -> impl Iterator<Item = Decimal> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..n).map(move |_| {
            let hi = next() % 4;
            let m = (i128::from(next()) | (i128::from(hi) << 64)) >> (next() % 90);
            let m = if next() % 2 == 0 { -m } else { m };
            Decimal::from_i128_with_scale(m, (next() % 29) as u32)
        })
    }

    /// The range test accepts exactly the times chrono can represent.
    #[test]
    fn time_checks_are_chronos_range() {
        let (lo, hi) = CHRONO_SECONDS;
        for ts in [
            lo - 1,
            lo,
            lo + 1,
            -1,
            0,
            1,
            hi - 1,
            hi,
            hi + 1,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(
                check_time(ts, String::new).is_ok(),
                DateTime::<Utc>::from_timestamp(ts, 0).is_some(),
                "{ts}"
            );
        }
    }

    /// The chart's conversion through an `i64` mantissa and a table of powers of ten gives
    /// the bits of the 128-bit conversion divided by `powi`, on every scale.
    #[test]
    fn chart_values_convert_as_the_general_formula() {
        let general = |d: Decimal| d.mantissa() as f64 / 10f64.powi(d.scale() as i32);
        for d in random_decimals(0x9E37_79B9_7F4A_7C15, 20_000) {
            assert_eq!(to_f64(d).to_bits(), general(d).to_bits(), "{d}");
        }
    }

    #[test]
    fn drawdowns_are_rounded_from_the_exact_quotient() {
        let dd = |peak: Decimal, e: Decimal| {
            let mut b = Vec::new();
            push_drawdown(&mut b, peak, e);
            String::from_utf8(b).unwrap()
        };
        assert_eq!(dd(dec!(10150), dec!(10050.5)), "0.9803");
        assert_eq!(dd(dec!(100), dec!(99.99995)), "0.0001"); // 0.00005 % rounds away
        assert_eq!(dd(dec!(100), dec!(99.999949)), "0.0001");
        assert_eq!(dd(dec!(100), dec!(99.999951)), "0.0000");
        assert_eq!(dd(dec!(100), dec!(-100)), "200.0000");
        assert_eq!(dd(dec!(0), dec!(-5)), "0.0000");
        assert_eq!(dd(dec!(100), dec!(100)), "0.0000");
        // Huge scales fall back to Decimal arithmetic and still print four decimals.
        assert_eq!(
            dd(Decimal::MAX, Decimal::from_i128_with_scale(1, 28)),
            "100.0000"
        );
    }

    #[test]
    fn times_agree_with_chrono() {
        let tzs = [
            Tz::UTC,
            chrono_tz::America::New_York,
            chrono_tz::Asia::Kolkata,
            chrono_tz::Europe::London,
        ];
        let mut stamp = UtcStamp::default();
        let mut ts: i64 = -62_167_219_200;
        while ts < 253_402_300_799 {
            let t = DateTime::<Utc>::from_timestamp(ts, 0).unwrap();
            let mut b = Vec::new();
            stamp.push(&mut b, ts);
            assert_eq!(
                String::from_utf8(b).unwrap(),
                t.to_rfc3339_opts(SecondsFormat::Secs, true)
            );
            for tz in tzs {
                let mut b = Vec::new();
                push_local(&mut b, ts, tz);
                assert_eq!(
                    String::from_utf8(b).unwrap(),
                    t.with_timezone(&tz)
                        .to_rfc3339_opts(SecondsFormat::Secs, true),
                    "{ts} in {tz}"
                );
            }
            ts += 7_777_777 + ts.rem_euclid(86_399);
        }
        // Outside years 0..=9999 chrono prints the time.
        let mut b = Vec::new();
        stamp.push(&mut b, 300_000_000_000);
        let far = DateTime::<Utc>::from_timestamp(300_000_000_000, 0).unwrap();
        assert_eq!(
            String::from_utf8(b).unwrap(),
            far.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        assert!(
            far.to_rfc3339_opts(SecondsFormat::Secs, true)
                .starts_with("+11476-")
        );
    }

    /// Element names of a well-formed XML document (panics on a parse error).
    fn elements(svg: &str) -> Vec<String> {
        EventReader::from_str(svg)
            .into_iter()
            .filter_map(|e| match e.unwrap() {
                XmlEvent::StartElement { name, .. } => Some(name.local_name),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn svg_is_well_formed_with_curve_and_drawdown() {
        let svg = render_equity_svg(&chart(&equity(), "AAPL breakout <backtest> & co"));
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        let names = elements(&svg);
        assert_eq!(names[0], "svg");
        assert!(names.iter().any(|n| n == "polyline"), "equity line");
        assert!(names.iter().any(|n| n == "polygon"), "drawdown area");
        assert!(svg.contains("AAPL breakout &lt;backtest&gt; &amp; co"));
        assert!(svg.contains("Equity (USD)") && svg.contains("Drawdown (%)"));
        assert!(svg.contains("2012-01-04"), "date labels: {svg}");
        assert!(!svg.contains("id=\"buy-and-hold\""), "no benchmark given");
        assert!(svg.contains("Equity 10,200.00 USD (+2.00%)"), "legend");
    }

    #[test]
    fn svg_edge_cases_render() {
        let empty = render_equity_svg(&chart(&[], "empty"));
        assert_eq!(elements(&empty)[0], "svg");
        assert!(empty.contains("no equity points"));
        let one = render_equity_svg(&chart(&equity()[..1], "one"));
        assert!(elements(&one).iter().any(|n| n == "polyline"));
        let flat = [
            equity()[0],
            EquityPoint {
                ts: 1_325_550_000,
                ..equity()[0]
            },
        ];
        let flat = render_equity_svg(&chart(&flat, "flat"));
        assert!(elements(&flat).iter().any(|n| n == "polyline"));
    }

    #[test]
    fn time_ticks_follow_the_calendar() {
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&Utc)
                .timestamp()
        };
        let labels = |x0: &str, x1: &str, tz: Tz| {
            let (ticks, format) = time_ticks(at(x0), at(x1), tz);
            ticks
                .iter()
                .map(|&t| {
                    DateTime::<Utc>::from_timestamp(t, 0)
                        .unwrap()
                        .with_timezone(&tz)
                        .format(format)
                        .to_string()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            labels("2012-01-03T05:00:00Z", "2020-12-31T05:00:00Z", Tz::UTC),
            ["2014", "2016", "2018", "2020"]
        );
        assert_eq!(
            labels("2012-01-03T05:00:00Z", "2012-12-31T05:00:00Z", Tz::UTC),
            ["2012-03", "2012-05", "2012-07", "2012-09", "2012-11"]
        );
        // Days in New York start at 05:00 UTC in winter.
        let ny = chrono_tz::America::New_York;
        let (ticks, _) = time_ticks(at("2012-01-03T00:00:00Z"), at("2012-01-06T00:00:00Z"), ny);
        assert_eq!(ticks[0], at("2012-01-03T05:00:00Z"));
        assert_eq!(
            labels("2012-01-03T14:30:00Z", "2012-01-03T21:00:00Z", ny),
            [
                "2012-01-03 10:00",
                "2012-01-03 11:00",
                "2012-01-03 12:00",
                "2012-01-03 13:00",
                "2012-01-03 14:00",
                "2012-01-03 15:00",
                "2012-01-03 16:00"
            ]
        );
    }

    #[test]
    fn value_ticks_are_round() {
        let (t, d) = value_ticks(95_123.0, 131_877.0, 8.0);
        assert_eq!(
            t,
            [
                100_000.0, 105_000.0, 110_000.0, 115_000.0, 120_000.0, 125_000.0, 130_000.0
            ]
        );
        assert_eq!(d, 0);
        assert_eq!(grouped(t[0], d), "100,000");
        let (t, d) = value_ticks(-11.0, 0.0, 3.0);
        assert_eq!(t, [-10.0, -5.0, 0.0]);
        assert_eq!(grouped(t[0], d), "-10");
        let (t, d) = value_ticks(-0.6, 0.0, 3.0);
        assert_eq!((t.len(), d), (4, 1));
        assert_eq!(grouped(t[0], d), "-0.6");
        let (t, d) = value_ticks(-0.7, 0.0, 3.0);
        assert_eq!((t.len(), d), (3, 2));
        assert_eq!(grouped(t[1], d), "-0.25");
        assert_eq!(grouped(-0.001, 2), "0.00");
    }

    /// 500,000 one-minute points: the SVG stays small, parses, and holds the panes, both
    /// series (each within the per-column bound) and a date axis.
    #[test]
    fn svg_of_500000_points_is_small_and_complete() {
        let n = 500_000i64;
        let t0 = 1_262_563_200; // 2010-01-04T00:00:00Z
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut e = 100_000i64 * 100;
        let points: Vec<EquityPoint> = (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                e += (x % 2001) as i64 - 1000;
                EquityPoint {
                    ts: t0 + 60 * (i + 1),
                    equity: Decimal::new(e, 2),
                    cash: Decimal::new(e, 2),
                }
            })
            .collect();
        let bench: Vec<(i64, Decimal)> = points
            .iter()
            .map(|p| (p.ts, Decimal::new(100_000 + (p.ts - t0) / 3_600, 0)))
            .collect();
        let c = EquityChart {
            title: "sma-cross — equity",
            points: &points,
            benchmark: &bench,
            benchmark_label: "SYN",
            tz: Tz::UTC,
        };
        let start = std::time::Instant::now();
        let svg = render_equity_svg(&c);
        let took = start.elapsed();
        assert!(svg.len() < 200_000, "{} bytes", svg.len());
        let mut ids = Vec::new();
        let mut texts = Vec::new();
        let mut series_points = Vec::new();
        for e in EventReader::from_str(&svg) {
            match e.unwrap() {
                XmlEvent::StartElement {
                    name, attributes, ..
                } => {
                    let attr = |k: &str| {
                        attributes
                            .iter()
                            .find(|a| a.name.local_name == k)
                            .map(|a| a.value.clone())
                    };
                    if let Some(id) = attr("id") {
                        if let Some(p) = attr("points") {
                            series_points.push((id.clone(), p.split(' ').count()));
                        }
                        ids.push((name.local_name, id));
                    }
                }
                XmlEvent::Characters(t) => texts.push(t),
                _ => {}
            }
        }
        for (el, id) in [
            ("g", "equity-pane"),
            ("g", "drawdown-pane"),
            ("g", "time-axis"),
            ("polyline", "equity"),
            ("polyline", "buy-and-hold"),
            ("polygon", "drawdown"),
        ] {
            assert!(
                ids.iter().any(|(e, i)| e == el && i == id),
                "<{el} id={id}> in {ids:?}"
            );
        }
        for (id, count) in &series_points {
            assert!(
                *count >= SVG_COLUMNS && *count <= SVG_MAX_POINTS_PER_SERIES + 2,
                "{id}: {count} points"
            );
        }
        // About a year of minutes: month labels.
        let months = texts
            .iter()
            .filter(|t| t.len() == 7 && t.starts_with("2010-"))
            .count();
        assert!(months >= 4, "{texts:?}");
        assert!(texts.iter().any(|t| t.contains("Buy and hold SYN")));
        assert!(
            took.as_secs_f64() < if cfg!(debug_assertions) { 5.0 } else { 0.1 },
            "{took:?}"
        );
    }

    #[test]
    fn outputs_are_byte_identical_for_identical_input() {
        let dir = tempfile::tempdir().unwrap();
        let tz = chrono_tz::Europe::Berlin;
        let p = |name: &str| dir.path().join(name);
        let bench = [(1_325_548_800, dec!(10000)), (1_325_808_000, dec!(10100))];
        let points = equity();
        let c = EquityChart {
            benchmark: &bench,
            benchmark_label: "AAPL",
            tz,
            ..chart(&points, "run")
        };
        write_trades_csv(&p("t1.csv"), &two_trades(), tz).unwrap();
        write_trades_csv(&p("t2.csv"), &two_trades(), tz).unwrap();
        write_equity_csv(&p("e1.csv"), &equity(), None, None).unwrap();
        write_equity_csv(&p("e2.csv"), &equity(), None, None).unwrap();
        write_equity_svg(&p("e1.svg"), &c).unwrap();
        write_equity_svg(&p("e2.svg"), &c).unwrap();
        for (a, b) in [
            ("t1.csv", "t2.csv"),
            ("e1.csv", "e2.csv"),
            ("e1.svg", "e2.svg"),
        ] {
            let (a, b) = (read(&p(a)), read(&p(b)));
            assert!(!a.is_empty());
            assert_eq!(a, b);
        }
        // Writing over an existing file replaces it.
        write_equity_svg(&p("e1.svg"), &chart(&points[..2], "run")).unwrap();
        assert_ne!(read(&p("e1.svg")), read(&p("e2.svg")));
    }
}
