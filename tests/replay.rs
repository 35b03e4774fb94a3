//! Replay data: reading the shipped example files and the bad-input fixtures, and resampling
//! real bars.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use ztraded::config::settings::BarStamp;
use ztraded::market::replay::{
    DataError, DataWarning, ReplayOptions, Series, read_dir, read_file, read_file_with_warnings,
};
use ztraded::market::resample::{Resampler, resample};
use ztraded::market::{Bar, Timeframe};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example(rel: &str) -> PathBuf {
    root().join("examples/data").join(rel)
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/data").join(name)
}

fn ny() -> ReplayOptions {
    ReplayOptions {
        timezone: chrono_tz::America::New_York,
        stamp: BarStamp::Start,
    }
}

fn berlin_end() -> ReplayOptions {
    ReplayOptions {
        timezone: chrono_tz::Europe::Berlin,
        stamp: BarStamp::End,
    }
}

fn utc_start() -> ReplayOptions {
    ReplayOptions {
        timezone: chrono_tz::UTC,
        stamp: BarStamp::Start,
    }
}

fn ts(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s).unwrap().timestamp()
}

fn time(ts: i64, tz: Tz) -> DateTime<Tz> {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .unwrap()
        .with_timezone(&tz)
}

struct Expect {
    file: &'static str,
    opts: ReplayOptions,
    symbol: &'static str,
    timeframe: Timeframe,
    bars: usize,
    first: &'static str,
    last: &'static str,
}

fn shipped() -> Vec<Expect> {
    vec![
        Expect {
            file: "GOOG.csv",
            opts: ny(),
            symbol: "GOOG",
            timeframe: Timeframe::D1,
            bars: 2148,
            first: "2004-08-19T04:00:00Z", // midnight EDT
            last: "2013-03-01T05:00:00Z",  // midnight EST
        },
        Expect {
            file: "AAPL.csv",
            opts: ny(),
            symbol: "AAPL",
            timeframe: Timeframe::D1,
            bars: 3379,
            first: "2004-08-19T04:00:00Z",
            last: "2018-01-19T05:00:00Z",
        },
        Expect {
            file: "SPY.csv",
            opts: ny(),
            symbol: "SPY",
            timeframe: Timeframe::D1,
            bars: 2519,
            first: "2007-12-31T05:00:00Z",
            last: "2017-12-29T05:00:00Z",
        },
        Expect {
            file: "YHOO.csv",
            opts: ny(),
            symbol: "YHOO",
            timeframe: Timeframe::D1,
            bars: 4965,
            first: "1996-04-12T04:00:00Z",
            last: "2015-12-31T05:00:00Z",
        },
        Expect {
            file: "fx/EURUSD.csv",
            opts: utc_start(),
            symbol: "EURUSD",
            timeframe: Timeframe::H1,
            bars: 5000,
            first: "2017-04-19T09:00:00Z",
            last: "2018-02-07T15:00:00Z",
        },
        Expect {
            // End stamps 09:01 CET … 22:00 CET: bars start at 09:00 … 21:59.
            file: "intraday/INDEX.csv",
            opts: berlin_end(),
            symbol: "INDEX",
            timeframe: Timeframe::M1,
            bars: 30_889,
            first: "2006-01-02T09:00:00+01:00",
            last: "2006-02-27T21:59:00+01:00",
        },
        Expect {
            file: "intraday/INDEX5.csv",
            opts: berlin_end(),
            symbol: "INDEX5",
            timeframe: Timeframe::M5,
            bars: 2142,
            first: "2006-01-02T09:00:00+01:00",
            last: "2006-01-30T17:25:00+01:00",
        },
    ]
}

#[test]
fn every_shipped_file_reads_with_its_count_range_and_timeframe() {
    for e in shipped() {
        let (s, warnings) = read_file_with_warnings(&example(e.file), &e.opts)
            .unwrap_or_else(|err| panic!("{}: {err}", e.file));
        assert_eq!(s.symbol, e.symbol, "{}", e.file);
        assert_eq!(s.timeframe, e.timeframe, "{}", e.file);
        assert_eq!(s.bars.len(), e.bars, "{}", e.file);
        assert_eq!(s.bars[0].ts, ts(e.first), "{}", e.file);
        assert_eq!(s.bars[s.bars.len() - 1].ts, ts(e.last), "{}", e.file);
        assert!(s.bars.windows(2).all(|w| w[0].ts < w[1].ts), "{}", e.file);
        let expected_warnings = match e.symbol {
            "SPY" => 2,
            "INDEX" => 1,
            _ => 0,
        };
        assert_eq!(
            warnings.len(),
            expected_warnings,
            "{}: {warnings:?}",
            e.file
        );
    }
}

#[test]
fn shipped_values_are_read_from_the_right_columns() {
    // AAPL, first row: 2004-08-19,2.250714,2.275714,2.168571,2.193571,1.966391,97230000
    let s = read_file(&example("AAPL.csv"), &ny()).unwrap();
    assert_eq!(
        s.bars[0],
        Bar {
            ts: ts("2004-08-19T04:00:00Z"),
            open: 2.250714,
            high: 2.275714,
            low: 2.168571,
            close: 2.193571,
            volume: 97_230_000.0
        }
    );
    // INDEX (header one field short), last row: 2006-02-27,22:00:00,3840.00,3840.00,3838.00,3838.00,327,0
    let s = read_file(&example("intraday/INDEX.csv"), &berlin_end()).unwrap();
    let last = s.bars[s.bars.len() - 1];
    assert_eq!(
        (last.open, last.high, last.low, last.close, last.volume),
        (3840.0, 3840.0, 3838.0, 3838.0, 327.0)
    );
    // EURUSD: 2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,1413
    let s = read_file(&example("fx/EURUSD.csv"), &utc_start()).unwrap();
    assert_eq!(
        (s.bars[0].open, s.bars[0].low, s.bars[0].volume),
        (1.0716, 1.07083, 1413.0)
    );
}

#[test]
fn spy_open_below_low_is_kept_and_reported_with_its_line() {
    let (s, warnings) = read_file_with_warnings(&example("SPY.csv"), &ny()).unwrap();
    let lines: Vec<u64> = warnings
        .iter()
        .map(|w| match w {
            DataWarning::PriceOutsideRange {
                line,
                column: "open",
                ..
            } => *line,
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(lines, vec![1808, 1825]);
    // Line 1808 is bar 1806 (0-based): 2015-03-05,209.419998,210.800003,209.850006,…
    let b = s.bars[1806];
    assert_eq!(b.ts, ts("2015-03-05T05:00:00Z"));
    assert_eq!((b.open, b.low), (209.419998, 209.850006));
}

#[test]
fn the_header_one_field_short_is_reported() {
    let (_, warnings) =
        read_file_with_warnings(&example("intraday/INDEX.csv"), &berlin_end()).unwrap();
    assert!(matches!(
        warnings.as_slice(),
        [DataWarning::TimeColumnInferred { line: 1, .. }]
    ));
}

#[test]
fn read_dir_reads_the_csv_files_of_one_directory_only() {
    let all = read_dir(&example(""), &ny()).unwrap();
    let symbols: Vec<&str> = all.keys().map(String::as_str).collect();
    assert_eq!(symbols, ["AAPL", "GOOG", "SPY", "YHOO"]);
    assert!(all.values().all(|s| s.timeframe == Timeframe::D1));
    assert_eq!(all["GOOG"].bars.len(), 2148);

    let intraday = read_dir(&example("intraday"), &berlin_end()).unwrap();
    assert_eq!(intraday["INDEX"].timeframe, Timeframe::M1);
    assert_eq!(intraday["INDEX5"].timeframe, Timeframe::M5);
    assert_eq!(intraday.len(), 2);
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const GOOD: &str = "Date,Open,High,Low,Close,Volume\n2012-01-03,1,2,0.5,1.5,10\n";

#[test]
fn read_dir_rejects_bad_symbols_duplicates_and_empty_directories() {
    let dir = tempfile::tempdir().unwrap();
    let e = read_dir(dir.path(), &ny()).unwrap_err();
    assert!(matches!(e, DataError::NoFiles { .. }), "{e}");

    write(dir.path(), "notes.txt", "not data");
    write(dir.path(), "AAPL.csv", GOOD);
    assert_eq!(read_dir(dir.path(), &ny()).unwrap().len(), 1);

    write(dir.path(), "aapl.csv", GOOD);
    let e = read_dir(dir.path(), &ny()).unwrap_err();
    assert!(
        matches!(&e, DataError::InvalidSymbol { symbol, .. } if symbol == "aapl"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join("aapl.csv")).unwrap();

    write(dir.path(), "AAPL.CSV", GOOD);
    let e = read_dir(dir.path(), &ny()).unwrap_err();
    assert!(
        matches!(&e, DataError::DuplicateSymbol { symbol, .. } if symbol == "AAPL"),
        "{e}"
    );

    let e = read_dir(&dir.path().join("missing"), &ny()).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e}");
}

#[test]
fn read_dir_reports_the_first_bad_file_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "A.csv", GOOD);
    write(
        dir.path(),
        "C.csv",
        "Date,Open,High,Low,Close,Volume\n2012-01-03,1,2,3,1.5,10\n",
    );
    write(
        dir.path(),
        "B.csv",
        "Date,Open,High,Low,Close,Volume\n2012-01-03,1,2,0.5,x,10\n",
    );
    let e = read_dir(dir.path(), &ny()).unwrap_err();
    assert_eq!(e.path(), dir.path().join("B.csv"));
    assert!(matches!(e, DataError::BadNumber { line: 2, .. }), "{e}");
}

/// Reads a fixture that must fail; returns the error after checking its path and line.
fn bad(name: &str, line: Option<u64>) -> DataError {
    let path = fixture(name);
    let e = read_file(&path, &ny()).expect_err(name);
    assert_eq!(e.path(), path, "{name}: {e}");
    assert_eq!(e.line(), line, "{name}: {e}");
    let shown = e.to_string();
    assert!(shown.starts_with(&path.display().to_string()), "{shown}");
    if let Some(line) = line {
        assert!(shown.contains(&format!(":{line}: ")), "{shown}");
    }
    e
}

#[test]
fn bad_files_fail_with_the_variant_and_line() {
    use DataError as E;
    let e = bad("empty.csv", None);
    assert!(matches!(e, E::Empty { .. }), "{e}");
    let e = bad("header_only.csv", Some(1));
    assert!(matches!(e, E::NoBars { .. }), "{e}");
    let e = bad("invalid_utf8.csv", Some(3));
    assert!(matches!(e, E::InvalidUtf8 { offset: 103, .. }), "{e}");
    let e = bad("blank_line.csv", Some(3));
    assert!(matches!(e, E::BlankLine { .. }), "{e}");
    let e = bad("unknown_column.csv", Some(1));
    assert!(
        matches!(&e, E::UnknownColumn { column: 7, name, .. } if name == "Dividends"),
        "{e}"
    );
    let e = bad("duplicate_column.csv", Some(1));
    assert!(
        matches!(&e, E::DuplicateColumn { name, .. } if name == "Close"),
        "{e}"
    );
    let e = bad("missing_column.csv", Some(1));
    assert!(matches!(e, E::MissingColumn { name: "volume", .. }), "{e}");
    let e = bad("field_count.csv", Some(3));
    assert!(
        matches!(
            e,
            E::FieldCount {
                expected: 6,
                found: 7,
                ..
            }
        ),
        "{e}"
    );
    // One field more than the header, but the second field is not a time of day.
    let e = bad("header_short_no_time.csv", Some(2));
    assert!(
        matches!(
            e,
            E::FieldCount {
                expected: 7,
                found: 8,
                ..
            }
        ),
        "{e}"
    );
    let e = bad("bad_timestamp.csv", Some(4));
    assert!(
        matches!(&e, E::BadTimestamp { value, .. } if value == "2012-13-05"),
        "{e}"
    );
    let e = bad("mixed_timestamps.csv", Some(3));
    assert!(matches!(e, E::BadTimestamp { .. }), "{e}");
    // 02:30 on 11 March 2012 was skipped in New York.
    let e = bad("nonexistent_time.csv", Some(3));
    assert!(matches!(e, E::NonexistentTime { .. }), "{e}");
    let e = bad("non_numeric.csv", Some(3));
    assert!(
        matches!(&e, E::BadNumber { column: "close", value, .. } if value == "n/a"),
        "{e}"
    );
    let e = bad("nan_price.csv", Some(2));
    assert!(matches!(e, E::BadNumber { column: "open", .. }), "{e}");
    let e = bad("zero_price.csv", Some(4));
    assert!(
        matches!(e, E::NonPositivePrice { column: "low", .. }),
        "{e}"
    );
    let e = bad("negative_price.csv", Some(3));
    assert!(
        matches!(e, E::NonPositivePrice { column: "open", .. }),
        "{e}"
    );
    let e = bad("high_below_low.csv", Some(3));
    assert!(matches!(e, E::HighBelowLow { .. }), "{e}");
    let e = bad("open_outside_range.csv", Some(3));
    assert!(matches!(e, E::OutsideRange { column: "open", .. }), "{e}");
    let e = bad("negative_volume.csv", Some(4));
    assert!(matches!(e, E::NegativeVolume { .. }), "{e}");
    let e = bad("out_of_order.csv", Some(4));
    assert!(
        matches!(
            e,
            E::OutOfOrder {
                previous_line: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = bad("duplicate_timestamp.csv", Some(4));
    assert!(
        matches!(
            e,
            E::Duplicate {
                previous_line: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = bad("unknown_timeframe.csv", None);
    assert!(
        matches!(&e, E::UnknownTimeframe { detail, .. } if detail.contains("120 s")),
        "{e}"
    );
}

#[test]
fn every_fixture_is_exercised() {
    // A fixture added without a test would prove nothing.
    let tested = [
        "empty.csv",
        "header_only.csv",
        "invalid_utf8.csv",
        "blank_line.csv",
        "unknown_column.csv",
        "duplicate_column.csv",
        "missing_column.csv",
        "field_count.csv",
        "header_short_no_time.csv",
        "bad_timestamp.csv",
        "mixed_timestamps.csv",
        "nonexistent_time.csv",
        "non_numeric.csv",
        "nan_price.csv",
        "zero_price.csv",
        "negative_price.csv",
        "high_below_low.csv",
        "open_outside_range.csv",
        "negative_volume.csv",
        "out_of_order.csv",
        "duplicate_timestamp.csv",
        "unknown_timeframe.csv",
    ];
    let on_disk: BTreeSet<String> = std::fs::read_dir(fixture(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".csv"))
        .collect();
    let tested: BTreeSet<String> = tested.iter().map(|s| s.to_string()).collect();
    assert_eq!(on_disk, tested);
}

fn stream(bars: &[Bar], from: Timeframe, to: Timeframe, tz: Tz) -> Vec<Bar> {
    let mut r = Resampler::new(from, to, tz).unwrap();
    let mut out = Vec::new();
    for b in bars {
        out.extend(r.push(b));
    }
    out.extend(r.flush());
    assert_eq!(r.rejected(), 0);
    out
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

#[test]
fn one_minute_index_resampled_to_five_minutes_tracks_the_shipped_five_minute_file() {
    let tz = chrono_tz::Europe::Berlin;
    let m1 = read_file(&example("intraday/INDEX.csv"), &berlin_end()).unwrap();
    let m5 = read_file(&example("intraday/INDEX5.csv"), &berlin_end()).unwrap();
    let ours = resample(&m1.bars, Timeframe::M1, Timeframe::M5, tz).unwrap();
    // 6,365 five-minute periods hold at least one 1-minute bar over 2006-01-02 … 02-27.
    assert_eq!(ours.len(), 6365);
    assert_eq!(stream(&m1.bars, Timeframe::M1, Timeframe::M5, tz), ours);

    // Every period of the 5-minute file has a resampled bar.
    let by_ts: std::collections::HashMap<i64, Bar> = ours.iter().map(|b| (b.ts, *b)).collect();
    let pairs: Vec<(Bar, Bar)> = m5.bars.iter().map(|b| (by_ts[&b.ts], *b)).collect();
    assert_eq!(pairs.len(), 2142);

    // The files are different instruments (see examples/data/README.md): no period agrees
    // exactly, the 1-minute series closes above the 5-minute one in every period, by less
    // than 0.6 %, and their 5-minute returns move together.
    let exact = pairs
        .iter()
        .filter(|(a, b)| {
            a.open == b.open && a.high == b.high && a.low == b.low && a.close == b.close
        })
        .count();
    let diff: Vec<f64> = pairs.iter().map(|(a, b)| a.close - b.close).collect();
    let (min, max) = diff
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), d| {
            (lo.min(*d), hi.max(*d))
        });
    let mean = diff.iter().sum::<f64>() / diff.len() as f64;
    let max_rel = pairs
        .iter()
        .map(|(a, b)| (a.close - b.close).abs() / b.close)
        .fold(0.0, f64::max);
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for w in pairs.windows(2) {
        if w[1].1.ts - w[0].1.ts == 300 {
            ra.push(w[1].0.close / w[0].0.close - 1.0);
            rb.push(w[1].1.close / w[0].1.close - 1.0);
        }
    }
    let corr = pearson(&ra, &rb);
    println!(
        "INDEX 1m→5m vs INDEX5: {} common periods, {exact} identical, close difference \
         min {min:.2} mean {mean:.2} max {max:.2} (max {:.3} %), 5-minute return correlation \
         {corr:.3} over {} pairs",
        pairs.len(),
        max_rel * 100.0,
        ra.len()
    );
    assert_eq!(exact, 0);
    assert!(min > 2.0 && max < 19.0, "{min} {max}");
    assert!(max_rel < 0.006, "{max_rel}");
    assert!(corr > 0.8, "{corr}");
}

#[test]
fn daily_to_weekly_weeks_start_on_monday() {
    let tz = chrono_tz::America::New_York;
    let spy = read_file(&example("SPY.csv"), &ny()).unwrap();
    let weeks = resample(&spy.bars, Timeframe::D1, Timeframe::W1, tz).unwrap();
    assert_eq!(stream(&spy.bars, Timeframe::D1, Timeframe::W1, tz), weeks);
    // One weekly bar per ISO week with data.
    let iso: BTreeSet<(i32, u32)> = spy
        .bars
        .iter()
        .map(|b| {
            let w = time(b.ts, tz).iso_week();
            (w.year(), w.week())
        })
        .collect();
    assert_eq!(weeks.len(), iso.len());
    for w in &weeks {
        let t = time(w.ts, tz);
        assert_eq!(t.weekday(), chrono::Weekday::Mon, "{t}");
        assert_eq!((t.hour(), t.minute()), (0, 0), "{t}");
    }
    // Martin Luther King Day, Monday 21 January 2008: the week still starts on Monday and
    // opens with Tuesday's open.
    let mlk = weeks
        .iter()
        .find(|w| w.ts == ts("2008-01-21T05:00:00Z"))
        .unwrap();
    let days: Vec<&Bar> = spy
        .bars
        .iter()
        .filter(|b| b.ts >= ts("2008-01-21T05:00:00Z") && b.ts < ts("2008-01-28T05:00:00Z"))
        .collect();
    assert_eq!(days.len(), 4);
    assert_eq!(days[0].ts, ts("2008-01-22T05:00:00Z"));
    assert_eq!(mlk.open, days[0].open);
    assert_eq!(mlk.close, days[3].close);
    assert_eq!(mlk.volume, days.iter().map(|d| d.volume).sum::<f64>());

    // AAPL's first week: Thursday 19 and Friday 20 August 2004.
    let aapl = read_file(&example("AAPL.csv"), &ny()).unwrap();
    let first = resample(&aapl.bars, Timeframe::D1, Timeframe::W1, tz).unwrap()[0];
    assert_eq!(
        first,
        Bar {
            ts: ts("2004-08-16T04:00:00Z"),
            open: 2.250714,
            high: 2.275714,
            low: 2.168571,
            close: 2.200000,
            volume: 97_230_000.0 + 79_195_200.0
        }
    );
}

#[test]
fn batch_and_streaming_agree_on_real_data() {
    let berlin = chrono_tz::Europe::Berlin;
    let m1 = read_file(&example("intraday/INDEX.csv"), &berlin_end()).unwrap();
    let m5 = read_file(&example("intraday/INDEX5.csv"), &berlin_end()).unwrap();
    let fx = read_file(&example("fx/EURUSD.csv"), &utc_start()).unwrap();
    let goog = read_file(&example("GOOG.csv"), &ny()).unwrap();
    let cases: Vec<(&Series, Timeframe, Tz)> = vec![
        (&m1, Timeframe::M5, berlin),
        (&m1, Timeframe::M15, berlin),
        (&m1, Timeframe::M30, berlin),
        (&m1, Timeframe::H1, berlin),
        (&m1, Timeframe::H4, berlin),
        (&m1, Timeframe::D1, berlin),
        (&m5, Timeframe::H1, berlin),
        (&fx, Timeframe::H4, chrono_tz::UTC),
        (&fx, Timeframe::D1, chrono_tz::UTC),
        (&goog, Timeframe::W1, chrono_tz::America::New_York),
    ];
    for (series, to, tz) in cases {
        let batch = resample(&series.bars, series.timeframe, to, tz).unwrap();
        assert!(!batch.is_empty());
        assert_eq!(
            stream(&series.bars, series.timeframe, to, tz),
            batch,
            "{} {} → {to}",
            series.symbol,
            series.timeframe
        );
        let fine: f64 = series.bars.iter().map(|b| b.volume).sum();
        let coarse: f64 = batch.iter().map(|b| b.volume).sum();
        assert!((fine - coarse).abs() <= 1e-9 * fine.max(1.0));
    }
}

#[test]
fn coarse_bars_hold_their_fine_bars() {
    // INDEX 1m → 1d and 1h: 41 trading days (2 January … 27 February 2006) and 532 hours
    // with at least one bar (counted from the file by a separate script).
    let tz = chrono_tz::Europe::Berlin;
    let m1 = read_file(&example("intraday/INDEX.csv"), &berlin_end()).unwrap();
    let days = resample(&m1.bars, Timeframe::M1, Timeframe::D1, tz).unwrap();
    let hours = resample(&m1.bars, Timeframe::M1, Timeframe::H1, tz).unwrap();
    assert_eq!(days.len(), 41);
    assert_eq!(hours.len(), 532);
    // 2 January 2006: 584 one-minute bars, open 3602, close 3617, high 3624, low 3596.
    let first_day: Vec<&Bar> = m1
        .bars
        .iter()
        .filter(|b| b.ts < ts("2006-01-03T00:00:00+01:00"))
        .collect();
    assert_eq!(first_day.len(), 584);
    assert_eq!(
        days[0],
        Bar {
            ts: ts("2006-01-02T00:00:00+01:00"),
            open: 3602.0,
            high: 3624.0,
            low: 3596.0,
            close: 3617.0,
            volume: first_day.iter().map(|b| b.volume).sum(),
        }
    );
    assert!(days.iter().all(|d| time(d.ts, tz).hour() == 0));
    // EURUSD 1h → 4h: periods start at 00:00, 04:00, … UTC.
    let fx = read_file(&example("fx/EURUSD.csv"), &utc_start()).unwrap();
    let h4 = resample(&fx.bars, Timeframe::H1, Timeframe::H4, chrono_tz::UTC).unwrap();
    assert!(h4.iter().all(|b| b.ts % 14_400 == 0));
    assert_eq!(h4[0].ts, ts("2017-04-19T08:00:00Z"));
    assert_eq!(h4[0].open, fx.bars[0].open);
}

/// Read speed of the shipped files (`cargo test --release --test replay -- --ignored
/// --nocapture read_speed`); prints bars per second, asserts nothing about time.
#[test]
#[ignore]
fn read_speed() {
    let files = shipped();
    let rounds = 5;
    let start = std::time::Instant::now();
    let mut bars = 0usize;
    let mut bytes = 0u64;
    for _ in 0..rounds {
        for e in &files {
            let path = example(e.file);
            bytes += std::fs::metadata(&path).unwrap().len();
            bars += read_file(&path, &e.opts).unwrap().bars.len();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "read {} files ({bars} bars, {:.1} MB) in {secs:.3} s: {:.0} files/s, {:.0} bars/s, {:.1} MB/s",
        files.len() * rounds,
        bytes as f64 / 1e6,
        (files.len() * rounds) as f64 / secs,
        bars as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
}
