//! Parity with TA-Lib: SMA(20), EMA(20), RSI(14), MACD(12,26,9), BBANDS(20,2) and ATR(14) on
//! the 2148 daily GOOG bars of `tests/data/GOOG.csv`, against the values TA-Lib itself
//! produced (`tests/data/GOOG_talib.csv`, Python package ta-lib 0.8.2). Every value must agree
//! to 1e-9 absolute, and TA-Lib's empty fields (its lookback) must be exactly our NaNs.

use std::path::PathBuf;

use ztraded::market::Bar;
use ztraded::market::indicators::{IndicatorSpec, compute};

fn data_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Lines of a small CSV file without quoting: `(line number, fields)` after the header, which
/// must equal `header`.
fn read_csv(name: &str, header: &str) -> Vec<(usize, Vec<String>)> {
    let path = data_file(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines = text.lines().enumerate();
    let first = lines.next().map(|(_, l)| l.trim_end());
    assert_eq!(
        first,
        Some(header),
        "{}:1: unexpected header",
        path.display()
    );
    lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.trim_end().split(',').map(str::to_string).collect()))
        .collect()
}

fn number(name: &str, line: usize, field: &str) -> f64 {
    field
        .parse()
        .unwrap_or_else(|_| panic!("{name}:{line}: '{field}' is not a number"))
}

/// `(date, bar)` per row of `GOOG.csv` (`,Open,High,Low,Close,Volume`); the date is kept for
/// matching rows, the timestamp is the row index in days (only VWAP looks at it).
fn goog_bars() -> Vec<(String, Bar)> {
    read_csv("GOOG.csv", ",Open,High,Low,Close,Volume")
        .into_iter()
        .enumerate()
        .map(|(i, (line, f))| {
            assert_eq!(f.len(), 6, "GOOG.csv:{line}: expected 6 fields");
            let n = |k: usize| number("GOOG.csv", line, &f[k]);
            let bar = Bar {
                ts: i as i64 * 86_400,
                open: n(1),
                high: n(2),
                low: n(3),
                close: n(4),
                volume: n(5),
            };
            (f[0].clone(), bar)
        })
        .collect()
}

const REF_HEADER: &str =
    "Date,Close,SMA20,EMA20,RSI14,MACD,MACD_signal,MACD_hist,BB_upper,BB_mid,BB_lower,ATR14";

#[test]
fn goog_matches_talib_to_1e_9() {
    let rows = goog_bars();
    let bars: Vec<Bar> = rows.iter().map(|(_, b)| *b).collect();
    let reference = read_csv("GOOG_talib.csv", REF_HEADER);
    assert_eq!(bars.len(), 2148, "GOOG.csv bar count");
    assert_eq!(reference.len(), bars.len(), "GOOG_talib.csv row count");

    // Reference column (after Date) → our output: (spec, output index).
    let columns: [(&str, IndicatorSpec, usize); 10] = [
        ("SMA20", IndicatorSpec::Sma(20), 0),
        ("EMA20", IndicatorSpec::Ema(20), 0),
        ("RSI14", IndicatorSpec::Rsi(14), 0),
        ("MACD", IndicatorSpec::Macd(12, 26, 9), 0),
        ("MACD_signal", IndicatorSpec::Macd(12, 26, 9), 1),
        ("MACD_hist", IndicatorSpec::Macd(12, 26, 9), 2),
        ("BB_upper", IndicatorSpec::Bbands(20, 2.0), 0),
        ("BB_mid", IndicatorSpec::Bbands(20, 2.0), 1),
        ("BB_lower", IndicatorSpec::Bbands(20, 2.0), 2),
        ("ATR14", IndicatorSpec::Atr(14), 0),
    ];
    let mut compared = 0usize;
    for (c, (label, spec, output)) in columns.iter().enumerate() {
        let ours = &compute(spec, &bars)[*output];
        let mut max_diff = 0.0f64;
        let mut first_value = None;
        for (i, (line, fields)) in reference.iter().enumerate() {
            assert_eq!(
                fields.len(),
                12,
                "GOOG_talib.csv:{line}: expected 12 fields"
            );
            assert_eq!(
                fields[0], rows[i].0,
                "GOOG_talib.csv:{line}: date differs from GOOG.csv"
            );
            let close = number("GOOG_talib.csv", *line, &fields[1]);
            assert!(
                (close - bars[i].close).abs() < 1e-9,
                "GOOG_talib.csv:{line}: close"
            );
            let field = &fields[c + 2];
            let got = ours[i];
            if field.is_empty() {
                assert!(
                    got.is_nan(),
                    "{label} at {} (line {line}): TA-Lib empty, ours {got}",
                    fields[0]
                );
                continue;
            }
            let want = number("GOOG_talib.csv", *line, field);
            assert!(
                !got.is_nan(),
                "{label} at {} (line {line}): ours NaN, TA-Lib {want}",
                fields[0]
            );
            let diff = (got - want).abs();
            assert!(
                diff <= 1e-9,
                "{label} at {} (line {line}): ours {got}, TA-Lib {want}, diff {diff:e}",
                fields[0]
            );
            max_diff = max_diff.max(diff);
            first_value.get_or_insert(i);
            compared += 1;
        }
        assert_eq!(
            first_value,
            Some(spec.lookback()),
            "{label}: first value index"
        );
        println!("{label:12} max |ours − TA-Lib| = {max_diff:.3e}");
    }
    // 2148 rows × 10 columns minus the lookbacks (19, 19, 14, 33×3, 19×3, 14).
    assert_eq!(compared, 2148 * 10 - (19 + 19 + 14 + 33 * 3 + 19 * 3 + 14));
}
