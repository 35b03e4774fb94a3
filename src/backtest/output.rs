//! Backtest outputs: trades.csv, equity.csv and the equity-curve SVG.
//!
//! Every writer is deterministic: the same input gives a byte-identical file (no timestamps
//! of the run, no random ids, fixed number formats, `\n` line ends).
//!
//! # Number formats
//!
//! * P&L, fees, equity and cash: two decimals, rounded half away from zero (`-12.50`).
//! * Prices (entry, exit, stop, targets): rounded half away from zero to at most six
//!   decimals, trailing zeros removed down to two decimals (`101.50`, `101.123457`).
//! * Quantities: exact, trailing zeros removed (`100`, `0.5`).
//! * Drawdown: percent 0-100 from the running peak, four decimals (`2.4390`).
//! * Times: RFC 3339 in UTC with second precision (`2012-01-03T21:00:00Z`); the trades file
//!   adds the same instants in the report time zone with their offset
//!   (`2012-01-03T16:00:00-05:00`).

use crate::backtest::analytics::{decimal_to_f64, drawdown_pct_series, format_usd};
use crate::engine::trades::{EquityPoint, TradeRecord};
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use plotters::prelude::*;
use plotters::style::text_anchor;
use rust_decimal::{Decimal, RoundingStrategy};
use std::io;
use std::path::{Path, PathBuf};

/// Columns of trades.csv, in order.
pub const TRADES_CSV_HEADER: [&str; 17] = [
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
    "stop_loss",
    "target_1",
    "target_2",
    "pipeline",
    "mode",
    "entry_time_local",
    "exit_time_local",
];

/// Columns of equity.csv, in order.
pub const EQUITY_CSV_HEADER: [&str; 4] = ["timestamp", "equity", "cash", "drawdown_pct"];

/// Width and height of the equity-curve SVG, pixels.
pub const SVG_SIZE: (u32, u32) = (1000, 600);

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
    /// The chart could not be drawn.
    #[error("equity chart: {0}")]
    Chart(String),
}

/// Writes one line per trade to `path` (created or truncated) with the header
/// [`TRADES_CSV_HEADER`]: `symbol,side,entry_time,entry_price,exit_time,exit_price,quantity,
/// exit_reason,pnl,fees,stop_loss,target_1,target_2,pipeline,mode,entry_time_local,
/// exit_time_local`. `side` is `long`/`short`, `exit_reason` the order purpose (`stop_loss`,
/// `target_2`, …), missing stops/targets are empty fields, `*_local` are the times in `tz`.
/// Number and time formats are in the [module documentation](self). Trades are written in
/// the order given.
///
/// # Errors
/// An I/O error naming `path`, or `InvalidData` for a time outside chrono's range.
pub fn write_trades_csv(path: &Path, trades: &[TradeRecord], tz: Tz) -> io::Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(TRADES_CSV_HEADER)?;
    for (i, t) in trades.iter().enumerate() {
        let entry = utc(t.entry_time, || format!("trade {i}: entry_time"))?;
        let exit = utc(t.exit_time, || format!("trade {i}: exit_time"))?;
        let opt = |p: Option<Decimal>| p.map(format_price).unwrap_or_default();
        w.write_record([
            t.symbol.clone(),
            t.side.as_str().to_string(),
            rfc3339(&entry),
            format_price(t.entry_price),
            rfc3339(&exit),
            format_price(t.exit_price),
            format_quantity(t.quantity),
            t.exit_reason.as_str().to_string(),
            format_money(t.pnl),
            format_money(t.fees),
            opt(t.stop_loss),
            opt(t.target_1),
            opt(t.target_2),
            t.pipeline.clone(),
            t.mode.clone(),
            rfc3339(&entry.with_timezone(&tz)),
            rfc3339(&exit.with_timezone(&tz)),
        ])?;
    }
    write_csv(path, w)
}

/// Writes one line per equity point to `path` (created or truncated) with the header
/// `timestamp,equity,cash,drawdown_pct`: RFC 3339 UTC time, equity and cash in USD with two
/// decimals, and the drawdown from the running peak in percent with four decimals
/// ([`drawdown_pct_series`]). Points are written in the order given.
///
/// # Errors
/// An I/O error naming `path`, or `InvalidData` for a time outside chrono's range.
pub fn write_equity_csv(path: &Path, points: &[EquityPoint]) -> io::Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(EQUITY_CSV_HEADER)?;
    for (i, (p, dd)) in points.iter().zip(drawdown_pct_series(points)).enumerate() {
        let ts = utc(p.ts, || format!("equity point {i}: timestamp"))?;
        w.write_record([
            rfc3339(&ts),
            format_money(p.equity),
            format_money(p.cash),
            format_fixed(dd, 4),
        ])?;
    }
    write_csv(path, w)
}

/// Draws the equity curve as an SVG document of [`SVG_SIZE`] pixels: the title on top, the
/// equity in USD over time (upper 70 %), and the drawdown from the running peak in percent
/// as a shaded area below zero (lower 30 %). The time axis is labelled with UTC dates
/// (`YYYY-MM-DD`, with `HH:MM` when the curve spans less than three days). Text is emitted as
/// SVG `<text>` elements rendered by the viewer (font family `sans-serif`); no font is
/// embedded. Without points the document holds the title and `no equity points`.
///
/// # Errors
/// [`OutputError::Chart`] when plotters fails to draw.
pub fn render_equity_svg(points: &[EquityPoint], title: &str) -> Result<String, OutputError> {
    let mut buf = String::new();
    draw_equity(&mut buf, points, title).map_err(OutputError::Chart)?;
    Ok(buf)
}

/// Writes [`render_equity_svg`] of `points` to `path` (created or truncated).
///
/// # Errors
/// [`OutputError::Chart`] when drawing fails, [`OutputError::Io`] when writing fails.
pub fn write_equity_svg(
    path: &Path,
    points: &[EquityPoint],
    title: &str,
) -> Result<(), OutputError> {
    let svg = render_equity_svg(points, title)?;
    std::fs::write(path, svg).map_err(|source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_csv(path: &Path, w: csv::Writer<Vec<u8>>) -> io::Result<()> {
    let bytes = w
        .into_inner()
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
    std::fs::write(path, bytes)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn utc(ts: i64, what: impl FnOnce() -> String) -> io::Result<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(ts, 0).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {ts} is not a valid Unix time", what()),
        )
    })
}

fn rfc3339<T: chrono::TimeZone>(t: &DateTime<T>) -> String
where
    T::Offset: std::fmt::Display,
{
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Rounds half away from zero to `dp` decimals and prints exactly `dp` decimals (no `-0`).
fn format_fixed(d: Decimal, dp: u32) -> String {
    let mut r = d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
    if r.is_zero() {
        r = Decimal::ZERO;
    }
    r.rescale(dp);
    r.to_string()
}

/// Money: two decimals.
fn format_money(d: Decimal) -> String {
    format_fixed(d, 2)
}

/// Prices: at most six decimals, at least two.
fn format_price(d: Decimal) -> String {
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
}

/// Quantities: exact, trailing zeros removed.
fn format_quantity(d: Decimal) -> String {
    let r = d.normalize();
    if r.is_zero() {
        Decimal::ZERO.to_string()
    } else {
        r.to_string()
    }
}

/// Plotters' error types are generic over the backend; keep the message.
fn chart_err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A non-empty range around `lo..hi`: padded by 5 % of its width, or ±`fallback` when flat.
fn padded(lo: f64, hi: f64, fallback: f64) -> (f64, f64) {
    if hi > lo {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    } else {
        (lo - fallback, hi + fallback)
    }
}

fn draw_equity(buf: &mut String, points: &[EquityPoint], title: &str) -> Result<(), String> {
    let root = SVGBackend::with_string(buf, SVG_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(chart_err)?;
    let root = root
        .titled(title, ("sans-serif", 24).into_font())
        .map_err(chart_err)?;

    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        let (w, h) = root.dim_in_pixel();
        let style = ("sans-serif", 18)
            .into_font()
            .color(&BLACK)
            .pos(text_anchor::Pos::new(
                text_anchor::HPos::Center,
                text_anchor::VPos::Center,
            ));
        root.draw(&Text::new(
            "no equity points",
            (w as i32 / 2, h as i32 / 2),
            style,
        ))
        .map_err(chart_err)?;
        root.present().map_err(chart_err)?;
        return Ok(());
    };

    let equity: Vec<(i64, f64)> = points
        .iter()
        .map(|p| (p.ts, decimal_to_f64(p.equity)))
        .collect();
    let drawdown: Vec<(i64, f64)> = points
        .iter()
        .zip(drawdown_pct_series(points))
        .map(|(p, dd)| (p.ts, -decimal_to_f64(dd)))
        .collect();

    let (x0, x1) = if last.ts > first.ts {
        (first.ts, last.ts)
    } else {
        (first.ts - 43_200, first.ts + 43_200)
    };
    let lo = equity.iter().map(|(_, e)| *e).fold(f64::INFINITY, f64::min);
    let hi = equity
        .iter()
        .map(|(_, e)| *e)
        .fold(f64::NEG_INFINITY, f64::max);
    let (y0, y1) = padded(lo, hi, (hi.abs() * 0.01).max(1.0));
    let deepest = drawdown.iter().map(|(_, d)| *d).fold(0.0, f64::min);
    let dd_lo = if deepest < 0.0 { deepest * 1.1 } else { -1.0 };

    let short_span = x1 - x0 < 3 * 86_400;
    let date_label = move |ts: &i64| {
        DateTime::<Utc>::from_timestamp(*ts, 0).map_or_else(String::new, |t| {
            if short_span {
                t.format("%Y-%m-%d %H:%M").to_string()
            } else {
                t.format("%Y-%m-%d").to_string()
            }
        })
    };
    let usd_label = |v: &f64| {
        Decimal::from_f64_retain(v.round()).map_or_else(
            || format!("{v:.0}"),
            |d| format_usd(d).trim_end_matches(".00").to_string(),
        )
    };
    let pct_label = |v: &f64| format!("{:.1}%", v.abs());

    let (_, h) = root.dim_in_pixel();
    let (upper, lower) = root.split_vertically(h * 7 / 10);

    let mut chart = ChartBuilder::on(&upper)
        .margin(10)
        .margin_right(45)
        .x_label_area_size(30)
        .y_label_area_size(90)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(chart_err)?;
    chart
        .configure_mesh()
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&date_label)
        .y_label_formatter(&usd_label)
        .y_desc("Equity (USD)")
        .label_style(("sans-serif", 12))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(chart_err)?;
    chart
        .draw_series(LineSeries::new(equity, BLUE.stroke_width(2)))
        .map_err(chart_err)?;

    let mut dd_chart = ChartBuilder::on(&lower)
        .margin(10)
        .margin_right(45)
        .x_label_area_size(30)
        .y_label_area_size(90)
        .build_cartesian_2d(x0..x1, dd_lo..0.0)
        .map_err(chart_err)?;
    dd_chart
        .configure_mesh()
        .x_labels(8)
        .y_labels(4)
        .x_label_formatter(&date_label)
        .y_label_formatter(&pct_label)
        .y_desc("Drawdown (%)")
        .label_style(("sans-serif", 12))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(chart_err)?;
    dd_chart
        .draw_series(AreaSeries::new(drawdown, 0.0, RED.mix(0.3)).border_style(RED))
        .map_err(chart_err)?;

    root.present().map_err(chart_err)?;
    Ok(())
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
                final_stop: None,
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

    #[test]
    fn trades_csv_exact_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trades.csv");
        write_trades_csv(&path, &two_trades(), chrono_tz::America::New_York).unwrap();
        let text = String::from_utf8(read(&path)).unwrap();
        assert_eq!(
            text,
            "symbol,side,entry_time,entry_price,exit_time,exit_price,quantity,exit_reason,pnl,fees,\
             stop_loss,target_1,target_2,pipeline,mode,entry_time_local,exit_time_local\n\
             AAPL,long,2012-01-03T20:30:00Z,185.50,2012-01-03T21:00:00Z,186.25,100,target_2,73.01,2.00,\
             184.00,186.00,187.123457,aapl-breakout,simulation,2012-01-03T15:30:00-05:00,2012-01-03T16:00:00-05:00\n\
             MSFT,short,2012-01-04T15:00:00Z,370.10,2012-01-05T15:00:00Z,371.40,0.5,stop_loss,-0.66,0.00,\
             ,,,\"msft, \"\"short\"\"\",paper,2012-01-04T10:00:00-05:00,2012-01-05T10:00:00-05:00\n"
        );
    }

    #[test]
    fn trades_csv_without_trades_is_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trades.csv");
        write_trades_csv(&path, &[], Tz::UTC).unwrap();
        assert_eq!(
            String::from_utf8(read(&path)).unwrap(),
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
        write_equity_csv(&path, &equity()).unwrap();
        // Drawdown of 10050.5 from the 10150 peak: 99.5 / 10150 × 100 = 0.980295…%.
        assert_eq!(
            String::from_utf8(read(&path)).unwrap(),
            "timestamp,equity,cash,drawdown_pct\n\
             2012-01-03T00:00:00Z,10000.00,10000.00,0.0000\n\
             2012-01-04T00:00:00Z,10150.00,10150.00,0.0000\n\
             2012-01-05T00:00:00Z,10050.50,-10.00,0.9803\n\
             2012-01-06T00:00:00Z,10200.00,10200.00,0.0000\n"
        );
    }

    #[test]
    fn io_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("equity.csv");
        let err = write_equity_csv(&path, &equity()).unwrap_err();
        assert!(err.to_string().contains("missing/equity.csv"), "{err}");
        let err = write_equity_svg(&path, &equity(), "t").unwrap_err();
        assert!(matches!(err, OutputError::Io { .. }));
        assert!(err.to_string().contains("missing/equity.csv"), "{err}");
    }

    #[test]
    fn number_formats() {
        assert_eq!(format_money(dec!(1.005)), "1.01");
        assert_eq!(format_money(dec!(-1.005)), "-1.01");
        assert_eq!(format_money(dec!(-0.001)), "0.00");
        assert_eq!(format_money(dec!(1234567.1)), "1234567.10");
        assert_eq!(format_price(dec!(12)), "12.00");
        assert_eq!(format_price(dec!(12.3)), "12.30");
        assert_eq!(format_price(dec!(12.345)), "12.345");
        assert_eq!(format_price(dec!(0.0000005)), "0.000001");
        assert_eq!(format_price(dec!(-0.0000004)), "0.00");
        assert_eq!(format_quantity(dec!(10.500)), "10.5");
        assert_eq!(format_quantity(dec!(0.000)), "0");
        assert_eq!(format_fixed(dec!(2.43902439), 4), "2.4390");
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
        let svg = render_equity_svg(&equity(), "AAPL breakout <backtest> & co").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        let names = elements(&svg);
        assert_eq!(names[0], "svg");
        assert!(names.iter().any(|n| n == "polyline"), "equity line");
        assert!(names.iter().any(|n| n == "polygon"), "drawdown area");
        assert!(svg.contains("AAPL breakout &lt;backtest&gt; &amp; co"));
        assert!(svg.contains("Equity (USD)") && svg.contains("Drawdown (%)"));
        assert!(svg.contains("2012-01-04"), "date labels");
    }

    #[test]
    fn svg_edge_cases_render() {
        let empty = render_equity_svg(&[], "empty").unwrap();
        assert_eq!(elements(&empty)[0], "svg");
        assert!(empty.contains("no equity points"));
        let one = render_equity_svg(&equity()[..1], "one").unwrap();
        assert!(elements(&one).iter().any(|n| n == "polyline"));
        let flat = [
            equity()[0],
            EquityPoint {
                ts: 1_325_550_000,
                ..equity()[0]
            },
        ];
        let flat = render_equity_svg(&flat, "flat").unwrap();
        assert!(elements(&flat).iter().any(|n| n == "polyline"));
    }

    #[test]
    fn outputs_are_byte_identical_for_identical_input() {
        let dir = tempfile::tempdir().unwrap();
        let tz = chrono_tz::Europe::Berlin;
        let p = |name: &str| dir.path().join(name);
        write_trades_csv(&p("t1.csv"), &two_trades(), tz).unwrap();
        write_trades_csv(&p("t2.csv"), &two_trades(), tz).unwrap();
        write_equity_csv(&p("e1.csv"), &equity()).unwrap();
        write_equity_csv(&p("e2.csv"), &equity()).unwrap();
        write_equity_svg(&p("e1.svg"), &equity(), "run").unwrap();
        write_equity_svg(&p("e2.svg"), &equity(), "run").unwrap();
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
        write_equity_svg(&p("e1.svg"), &equity()[..2], "run").unwrap();
        assert_ne!(read(&p("e1.svg")), read(&p("e2.svg")));
    }
}
