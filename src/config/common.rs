//! Value types shared by every resource kind: names, durations, clock times, weekdays,
//! percentages and money.

use rust_decimal::Decimal;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// Pattern every resource name (file stem) and every reference to one must match.
pub const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,62}$";

/// Pattern of a ticker symbol: upper-case letters, digits, `.`, `-`, `/` (`AAPL`, `BRK.B`,
/// `EURUSD`, `BTC/USD`).
pub const SYMBOL_PATTERN: &str = "^[A-Z0-9][A-Z0-9./-]{0,19}$";

/// Pattern of a duration: one or more `<number><unit>` groups, units `ms`, `s`, `m`, `h`, `d`
/// (`500ms`, `30s`, `5m`, `1h30m`, `1d`).
pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h|d))+$";

/// Whether `s` is a valid resource name (see [`NAME_PATTERN`]).
pub fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Whether `s` is a valid ticker symbol (see [`SYMBOL_PATTERN`]).
pub fn is_valid_symbol(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 20
        && (b[0].is_ascii_uppercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, b'.' | b'/' | b'-')
        })
}

/// A length of time written `30s`, `5m`, `1h`, `1h30m`, `500ms` or `1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// From whole seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    /// The standard-library duration.
    pub fn std(self) -> std::time::Duration {
        self.0
    }
    /// Whole seconds, rounded down.
    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

/// Error for a string that is not a duration.
#[derive(Debug, Clone, thiserror::Error)]
#[error("'{0}' is not a duration (write a number and a unit: 500ms, 30s, 5m, 1h, 1d, or 1h30m)")]
pub struct BadDuration(pub String);

impl FromStr for Duration {
    type Err = BadDuration;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadDuration(s.to_string());
        if s.is_empty() || !s.as_bytes()[0].is_ascii_digit() || s.contains(' ') {
            return Err(bad());
        }
        let mut total = std::time::Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let secs = |mult: u64| n.checked_mul(mult).map(std::time::Duration::from_secs);
            let part = match unit {
                "ms" => Some(std::time::Duration::from_millis(n)),
                "s" => secs(1),
                "m" => secs(60),
                "h" => secs(3_600),
                "d" => secs(86_400),
                _ => None,
            }
            .ok_or_else(bad)?;
            total = total.checked_add(part).ok_or_else(bad)?;
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let mut rest = ms;
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        if rest > 0 {
            write!(f, "{rest}ms")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: a number and a unit (ms, s, m, h, d), e.g. 30s, 5m, 1h30m.",
            "examples": ["30s", "5m", "1h"]
        })
    }
}

/// A wall-clock time `HH:MM` or `HH:MM:SS` (24-hour). Kept as written; the semantic
/// checks parse it ([`ClockTime::parse`]) and report an invalid one at its position.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClockTime(pub String);

impl ClockTime {
    /// The time of day, or `None` when the text is not a valid 24-hour clock time.
    pub fn parse(&self) -> Option<chrono::NaiveTime> {
        let s = self.0.as_str();
        let parts: Vec<&str> = s.split(':').collect();
        let num = |p: &str, max: u32| -> Option<u32> {
            (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
                .filter(|v| *v <= max)
        };
        match parts.as_slice() {
            [h, m] => chrono::NaiveTime::from_hms_opt(num(h, 23)?, num(m, 59)?, 0),
            [h, m, sec] => chrono::NaiveTime::from_hms_opt(num(h, 23)?, num(m, 59)?, num(sec, 59)?),
            _ => None,
        }
    }
}

impl JsonSchema for ClockTime {
    fn schema_name() -> Cow<'static, str> {
        "ClockTime".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]{1,2}:[0-9]{2}(:[0-9]{2})?$",
            "description": "A 24-hour wall-clock time, HH:MM or HH:MM:SS, in the time zone given beside it.",
            "examples": ["09:35", "15:45"]
        })
    }
}

/// An IANA time-zone name (`America/New_York`, `Europe/London`, `UTC`). Kept as written;
/// the semantic checks resolve it with chrono-tz.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimeZoneName(pub String);

impl TimeZoneName {
    /// The time zone, or `None` when the name is not in the IANA database.
    pub fn parse(&self) -> Option<chrono_tz::Tz> {
        self.0.parse().ok()
    }
}

impl Default for TimeZoneName {
    fn default() -> Self {
        TimeZoneName("America/New_York".to_string())
    }
}

impl JsonSchema for TimeZoneName {
    fn schema_name() -> Cow<'static, str> {
        "TimeZoneName".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An IANA time-zone name.",
            "examples": ["America/New_York", "Europe/London", "UTC"]
        })
    }
}

/// A day of the week, written `mon` … `sun`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// Monday to Friday.
    pub fn weekdays() -> Vec<Weekday> {
        vec![
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
        ]
    }
    /// The chrono weekday.
    pub fn chrono(self) -> chrono::Weekday {
        match self {
            Weekday::Mon => chrono::Weekday::Mon,
            Weekday::Tue => chrono::Weekday::Tue,
            Weekday::Wed => chrono::Weekday::Wed,
            Weekday::Thu => chrono::Weekday::Thu,
            Weekday::Fri => chrono::Weekday::Fri,
            Weekday::Sat => chrono::Weekday::Sat,
            Weekday::Sun => chrono::Weekday::Sun,
        }
    }
}

/// A percentage from 0 to 100 inclusive (`1.5` means 1.5 %).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Percent(pub Decimal);

impl Percent {
    /// Builds a percentage from a decimal known to be within 0–100.
    pub const fn new(value: Decimal) -> Self {
        Percent(value)
    }
    /// The percentage as a fraction (`1.5` → `0.015`).
    pub fn fraction(self) -> Decimal {
        self.0 / Decimal::ONE_HUNDRED
    }
    /// The value in percent.
    pub fn value(self) -> Decimal {
        self.0
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = <Decimal as Deserialize>::deserialize(d)?;
        if v < Decimal::ZERO || v > Decimal::ONE_HUNDRED {
            return Err(serde::de::Error::custom(format!(
                "{v} is not a percentage from 0 to 100"
            )));
        }
        Ok(Percent(v))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0.normalize())
    }
}

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "number",
            "minimum": 0,
            "maximum": 100,
            "description": "A percentage from 0 to 100 (1.5 means 1.5 %)."
        })
    }
}

/// JSON Schema of a non-negative amount of US dollars (a `Decimal`, written as a number).
pub fn usd_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "number", "minimum": 0 })
}

/// JSON Schema of an optional non-negative amount of US dollars.
pub fn optional_usd_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": ["number", "null"], "minimum": 0 })
}

/// JSON Schema of a resource name or a reference to one.
pub fn name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": NAME_PATTERN })
}

/// JSON Schema of an optional resource name.
pub fn optional_name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": ["string", "null"], "pattern": NAME_PATTERN })
}

/// JSON Schema of a list of ticker symbols.
pub fn symbols_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["array", "null"],
        "items": { "type": "string", "pattern": SYMBOL_PATTERN },
        "minItems": 1,
        "uniqueItems": true
    })
}

/// JSON Schema of a rule expression (CEL).
pub fn expr_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "minLength": 1 })
}

/// JSON Schema of an optional rule expression (CEL).
pub fn optional_expr_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": ["string", "null"], "minLength": 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        let d: Duration = "1h30m".parse().unwrap();
        assert_eq!(d.as_secs(), 5_400);
        assert_eq!(d.to_string(), "1h30m");
        assert_eq!("500ms".parse::<Duration>().unwrap().0.as_millis(), 500);
        assert_eq!("2d".parse::<Duration>().unwrap().as_secs(), 172_800);
        for bad in ["", "5", "m", "5x", "5 m", "-5s", "1.5h"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn clock_times_are_checked() {
        assert!(ClockTime("09:35".into()).parse().is_some());
        assert!(ClockTime("23:59:59".into()).parse().is_some());
        assert!(ClockTime("24:00".into()).parse().is_none());
        assert!(ClockTime("9:35".into()).parse().is_none());
        assert!(ClockTime("12:60".into()).parse().is_none());
    }

    #[test]
    fn names_and_symbols() {
        assert!(is_valid_name("tech-megacaps"));
        assert!(is_valid_name("a"));
        assert!(!is_valid_name("Tech"));
        assert!(!is_valid_name("-a"));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name(&"a".repeat(64)));
        assert!(is_valid_symbol("BRK.B"));
        assert!(is_valid_symbol("BTC/USD"));
        assert!(!is_valid_symbol("aapl"));
    }
}
