//! Market signals: the generators that watch the scanners' tickers ([`generators`]), the
//! dispatcher that starts the pipelines subscribing to them ([`dispatcher`]), and the
//! [`Signal`] both share with the bus ([`crate::bus`]) and external producers.
//!
//! A signal is `{id, type, ticker, direction, confidence, timestamp, source}` (DESIGN.md
//! §2.2, §6). On the Redis stream `ztraded:signals` each is one entry whose fields are
//! those names, every value a string ([`Signal::to_fields`], [`Signal::from_fields`]); in a
//! recorded file (`ztraded backtest --signals FILE.jsonl`) each line is one JSON object with
//! the same names ([`Signal::from_json_line`]).

pub mod backtest;
pub mod dispatcher;
pub mod generators;
pub mod service;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use dispatcher::{DispatchReport, Dispatcher};
pub use generators::GeneratorSet;

/// Which way a signal points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Bullish: a reason to buy.
    #[default]
    Long,
    /// Bearish: a reason to sell or short.
    Short,
}

impl Direction {
    /// `long` or `short`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Long => "long",
            Direction::Short => "short",
        }
    }

    /// Parses `long` / `short` (also the seed's `bullish` / `bearish`, any case).
    pub fn parse(s: &str) -> Option<Direction> {
        match s.trim().to_ascii_lowercase().as_str() {
            "long" | "bullish" | "buy" => Some(Direction::Long),
            "short" | "bearish" | "sell" => Some(Direction::Short),
            _ => None,
        }
    }
}

/// A market signal for one ticker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Unique id (the generators' are `scanner:type:ticker:timeframe:bar end`; an
    /// external producer's are its own, or the stream entry id when it gives none).
    pub id: String,
    /// Signal type (`golden_cross`, ... or any type an external producer publishes).
    #[serde(rename = "type")]
    pub signal_type: String,
    /// Ticker symbol, as in the scanners (`AAPL`).
    pub ticker: String,
    /// Which way it points.
    #[serde(default)]
    pub direction: Direction,
    /// Confidence, percent 0–100.
    pub confidence: f64,
    /// When the signal happened, Unix seconds (a generator's: the close of the bar).
    pub timestamp: i64,
    /// Who produced it (`scanner:<name>` for the built-in generators).
    #[serde(default = "external")]
    pub source: String,
}

fn external() -> String {
    "external".to_string()
}

/// Why a signal could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedSignal(pub String);

impl Signal {
    /// The stream entry's fields: `id type ticker direction confidence timestamp source`,
    /// all strings (timestamp in Unix seconds).
    pub fn to_fields(&self) -> [(&'static str, String); 7] {
        [
            ("id", self.id.clone()),
            ("type", self.signal_type.clone()),
            ("ticker", self.ticker.clone()),
            ("direction", self.direction.as_str().to_string()),
            ("confidence", format_confidence(self.confidence)),
            ("timestamp", self.timestamp.to_string()),
            ("source", self.source.clone()),
        ]
    }

    /// Reads a signal from an entry's fields. Required: `type` (letters, digits, `_`, `-`,
    /// `.`, `:`; at most 64), `ticker` (at most 32, no spaces), `confidence` (a number
    /// 0–100). Optional: `direction` (`long`, default, or `short`), `timestamp` (Unix
    /// seconds, milliseconds, or RFC 3339; default `now`), `id` (default `entry_id`),
    /// `source` (default `external`). Unknown fields are ignored.
    ///
    /// # Errors
    /// [`MalformedSignal`] naming the field and what is wrong with it.
    pub fn from_fields(
        fields: &BTreeMap<String, String>,
        entry_id: &str,
        now: i64,
    ) -> Result<Signal, MalformedSignal> {
        let get = |k: &str| fields.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let bad = |m: String| Err(MalformedSignal(m));
        let Some(signal_type) = get("type") else {
            return bad("missing field 'type'".into());
        };
        if signal_type.len() > 64
            || !signal_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
        {
            return bad(format!(
                "type '{signal_type}': letters, digits, '_', '-', '.', ':' only, at most 64"
            ));
        }
        let Some(ticker) = get("ticker") else {
            return bad("missing field 'ticker'".into());
        };
        if ticker.len() > 32 || ticker.chars().any(char::is_whitespace) {
            return bad(format!(
                "ticker '{ticker}': at most 32 characters, no spaces"
            ));
        }
        let Some(confidence) = get("confidence") else {
            return bad("missing field 'confidence'".into());
        };
        let confidence = match confidence.parse::<f64>() {
            Ok(c) if c.is_finite() && (0.0..=100.0).contains(&c) => c,
            _ => return bad(format!("confidence '{confidence}': a number from 0 to 100")),
        };
        let direction = match get("direction") {
            None => Direction::Long,
            Some(d) => match Direction::parse(d) {
                Some(d) => d,
                None => return bad(format!("direction '{d}': long or short")),
            },
        };
        let timestamp = match get("timestamp") {
            None => now,
            Some(t) => match parse_timestamp(t) {
                Some(t) => t,
                None => {
                    return bad(format!(
                        "timestamp '{t}': Unix seconds, Unix milliseconds or RFC 3339"
                    ));
                }
            },
        };
        Ok(Signal {
            id: get("id").unwrap_or(entry_id).to_string(),
            signal_type: signal_type.to_string(),
            ticker: ticker.to_string(),
            direction,
            confidence,
            timestamp,
            source: get("source").unwrap_or("external").to_string(),
        })
    }

    /// Reads one line of a recorded signals file: a JSON object with the stream's field
    /// names (numbers or strings; `timestamp` also RFC 3339), checked like
    /// [`Signal::from_fields`]; `id` defaults to `line:<n>`, `timestamp` is required.
    ///
    /// # Errors
    /// [`MalformedSignal`] with what is wrong.
    pub fn from_json_line(line: &str, n: usize) -> Result<Signal, MalformedSignal> {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| MalformedSignal(format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| MalformedSignal("not a JSON object".into()))?;
        let mut fields = BTreeMap::new();
        for (k, v) in obj {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Null => continue,
                other => {
                    return Err(MalformedSignal(format!(
                        "field '{k}': a string or a number, not {other}"
                    )));
                }
            };
            fields.insert(k.clone(), s);
        }
        if !fields.contains_key("timestamp") {
            return Err(MalformedSignal("missing field 'timestamp'".into()));
        }
        Signal::from_fields(&fields, &format!("line:{n}"), 0)
    }
}

/// Reads signals recorded one JSON object a line (blank lines and `#` comments skipped),
/// sorted by timestamp (stable).
///
/// # Errors
/// `path:line: reason` for the first line that does not read, or the I/O error.
pub fn read_signals_file(path: &std::path::Path) -> Result<Vec<Signal>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let s = Signal::from_json_line(line, i + 1)
            .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        out.push(s);
    }
    out.sort_by_key(|s| s.timestamp);
    Ok(out)
}

/// A timestamp as Unix seconds: an integer (seconds; above 10^11 read as milliseconds), a
/// decimal number of seconds, or RFC 3339.
fn parse_timestamp(t: &str) -> Option<i64> {
    if let Ok(n) = t.parse::<i64>() {
        return Some(if n.abs() > 100_000_000_000 {
            n / 1000
        } else {
            n
        });
    }
    if let Ok(f) = t.parse::<f64>()
        && f.is_finite()
        && f.abs() < 1e11
    {
        #[allow(clippy::cast_possible_truncation)]
        return Some(f.floor() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.timestamp())
}

/// A confidence as written on the bus: at most 4 decimals, no trailing zeros.
fn format_confidence(c: f64) -> String {
    let s = format!("{c:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fields_round_trip() {
        let s = Signal {
            id: "x".into(),
            signal_type: "golden_cross".into(),
            ticker: "AAPL".into(),
            direction: Direction::Short,
            confidence: 72.5,
            timestamp: 1_700_000_000,
            source: "scanner:megacaps".into(),
        };
        let map: BTreeMap<String, String> = s
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(map["confidence"], "72.5");
        assert_eq!(Signal::from_fields(&map, "1-0", 0).unwrap(), s);
    }

    #[test]
    fn external_defaults_and_errors() {
        let s = Signal::from_fields(
            &fields(&[("type", "news"), ("ticker", "GOOG"), ("confidence", "90")]),
            "171-0",
            42,
        )
        .unwrap();
        assert_eq!(
            (s.id.as_str(), s.direction, s.timestamp, s.source.as_str()),
            ("171-0", Direction::Long, 42, "external")
        );
        let err = |f: &[(&str, &str)]| Signal::from_fields(&fields(f), "1-0", 0).unwrap_err().0;
        assert_eq!(err(&[("ticker", "A")]), "missing field 'type'");
        assert!(err(&[("type", "t"), ("ticker", "A"), ("confidence", "101")]).contains("0 to 100"));
        assert!(err(&[("type", "t"), ("ticker", "A"), ("confidence", "x")]).contains("0 to 100"));
        assert!(
            err(&[
                ("type", "t"),
                ("ticker", "A"),
                ("confidence", "5"),
                ("direction", "up")
            ])
            .contains("long or short")
        );
        assert!(err(&[("type", "a b"), ("ticker", "A"), ("confidence", "5")]).contains("type"));
        let t = Signal::from_fields(
            &fields(&[
                ("type", "t"),
                ("ticker", "A"),
                ("confidence", "5"),
                ("timestamp", "2024-01-02T21:00:00Z"),
            ]),
            "1-0",
            0,
        )
        .unwrap();
        assert_eq!(t.timestamp, 1_704_229_200);
        assert_eq!(parse_timestamp("1704229200000"), Some(1_704_229_200));
    }

    #[test]
    fn json_lines() {
        let s = Signal::from_json_line(
            r#"{"type":"news","ticker":"AAPL","confidence":80,"timestamp":"2012-06-01T20:00:00Z","direction":"short"}"#,
            3,
        )
        .unwrap();
        assert_eq!((s.id.as_str(), s.direction), ("line:3", Direction::Short));
        assert!(
            Signal::from_json_line(r#"{"type":"news","ticker":"AAPL","confidence":80}"#, 1)
                .unwrap_err()
                .0
                .contains("timestamp")
        );
    }
}
