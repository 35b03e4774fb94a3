//! `ztraded indicators`: indicator values of a data file as CSV, for debugging strategies and
//! checking parity with TA-Lib.

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::config::settings::BarStamp;
use crate::market::indicators::compute_with_sessions;
use crate::market::replay::{ReplayOptions, read_file};
use crate::market::resample::resample;
use crate::market::{IndicatorSpec, Timeframe};
use chrono_tz::Tz;
use std::io::Write;
use std::path::Path;

/// The CSV column names of `specs`' outputs: the short names (`macd`, `bb_upper`) where
/// one indicator of the family is listed, the qualified names otherwise.
pub fn column_names(specs: &[IndicatorSpec]) -> Vec<String> {
    let mut names = Vec::new();
    for spec in specs {
        let family_count = specs.iter().filter(|s| s.family() == spec.family()).count();
        if family_count == 1 && !spec.short_outputs().is_empty() {
            names.extend(spec.short_outputs().iter().map(|s| s.to_string()));
        } else {
            names.extend(spec.outputs());
        }
    }
    names
}

/// Prints `timestamp,close,<outputs…>` for every bar of `data` (resampled to `timeframe`
/// when given), values empty inside each indicator's lookback. Daily and weekly timestamps
/// are local dates in `tz`; intraday ones RFC 3339 UTC. Returns the exit code.
pub fn run(
    data: &Path,
    indicators: &str,
    timeframe: Option<Timeframe>,
    tz: Tz,
    stamp: BarStamp,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let mut specs = Vec::new();
    for name in indicators
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match name.parse::<IndicatorSpec>() {
            Ok(s) => specs.push(s),
            Err(e) => {
                let _ = writeln!(err, "ztraded indicators: {e}");
                return EXIT_USAGE;
            }
        }
    }
    if specs.is_empty() {
        let _ = writeln!(err, "ztraded indicators: --indicators lists no indicator");
        return EXIT_USAGE;
    }
    let series = match read_file(
        data,
        &ReplayOptions {
            timezone: tz,
            stamp,
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "ztraded indicators: {e}");
            return EXIT_INVALID;
        }
    };
    let (bars, tf) = match timeframe {
        Some(tf) if tf != series.timeframe => {
            match resample(&series.bars, series.timeframe, tf, tz) {
                Ok(b) => (b, tf),
                Err(e) => {
                    let _ = writeln!(err, "ztraded indicators: {}: {e}", data.display());
                    return EXIT_USAGE;
                }
            }
        }
        _ => (series.bars, series.timeframe),
    };
    let columns: Vec<Vec<f64>> = specs
        .iter()
        .flat_map(|spec| {
            compute_with_sessions(spec, &bars, |prev, bar| {
                let day = |b: &crate::market::Bar| {
                    crate::engine::clock::utc(b.ts)
                        .with_timezone(&tz)
                        .date_naive()
                };
                prev.is_none_or(|p| day(p) != day(bar))
            })
        })
        .collect();
    let mut text = String::with_capacity(bars.len() * 128);
    text.push_str("timestamp,close");
    for name in column_names(&specs) {
        text.push(',');
        text.push_str(&name);
    }
    text.push('\n');
    for (i, bar) in bars.iter().enumerate() {
        let t = crate::engine::clock::utc(bar.ts);
        if tf.is_intraday() {
            text.push_str(&t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        } else {
            text.push_str(&t.with_timezone(&tz).format("%Y-%m-%d").to_string());
        }
        text.push(',');
        text.push_str(&bar.close.to_string());
        for col in &columns {
            text.push(',');
            if let Some(v) = col.get(i).filter(|v| v.is_finite()) {
                text.push_str(&v.to_string());
            }
        }
        text.push('\n');
    }
    if out.write_all(text.as_bytes()).is_err() {
        return EXIT_USAGE;
    }
    EXIT_OK
}
