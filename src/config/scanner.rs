//! The scanner resource: `scanners/<name>.yaml` (DESIGN.md §2.2).

use super::common::{Percent, optional_expr_schema, symbols_schema};
use crate::market::Timeframe;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;

/// A named ticker list, manual (`tickers`) or filter-based (`universe` + `filters`), and the
/// signal generators that watch it.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ztraded scanner")]
pub struct Scanner {
    /// What the scanner selects, for people reading the config.
    #[serde(default)]
    pub description: Option<String>,
    /// A manual ticker list. Exactly one of `tickers` and `universe`.
    #[serde(default)]
    #[schemars(schema_with = "symbols_schema")]
    pub tickers: Option<Vec<String>>,
    /// The candidate tickers of a filter-based scanner. Exactly one of `tickers` and
    /// `universe`.
    #[serde(default)]
    #[schemars(schema_with = "symbols_schema")]
    pub universe: Option<Vec<String>>,
    /// Timeframe of the bars and indicators that `filters` and `rank_by` read.
    #[serde(default = "daily")]
    pub timeframe: Timeframe,
    /// Conditions (CEL) a ticker of the universe must all meet, e.g. `close > 10`,
    /// `volume_sma_20 > 1000000`. Indicators named in them are computed on `timeframe`.
    #[serde(default)]
    #[schemars(inner(length(min = 1)))]
    pub filters: Vec<String>,
    /// Number (CEL) to rank the matching tickers by, highest first.
    #[serde(default)]
    #[schemars(schema_with = "optional_expr_schema")]
    pub rank_by: Option<String>,
    /// Keep at most this many of the best-ranked tickers.
    #[serde(default)]
    #[schemars(range(min = 1, max = 10_000))]
    pub top_n: Option<u32>,
    /// Signal generators that watch the scanner's tickers and publish market signals.
    #[serde(default)]
    pub signals: Vec<SignalGenerator>,
}

fn daily() -> Timeframe {
    Timeframe::D1
}

impl Scanner {
    /// Every ticker the scanner can select (`tickers`, or the whole `universe`).
    pub fn candidates(&self) -> &[String] {
        self.tickers
            .as_deref()
            .or(self.universe.as_deref())
            .unwrap_or(&[])
    }
}

/// One signal generator: its type, timeframe and parameters.
#[derive(Clone, Debug)]
pub struct SignalGenerator {
    /// Timeframe of the bars the generator watches.
    pub timeframe: Timeframe,
    /// Type and parameters.
    pub kind: SignalKind,
}

/// The built-in signal generators with their parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum SignalKind {
    /// The fast moving average crosses above the slow one.
    GoldenCross(CrossParams),
    /// The fast moving average crosses below the slow one.
    DeathCross(CrossParams),
    /// RSI falls below a level.
    RsiOversold(RsiOversoldParams),
    /// RSI rises above a level.
    RsiOverbought(RsiOverboughtParams),
    /// The MACD line crosses its signal line (direction from the side it crosses to).
    MacdCross(MacdCrossParams),
    /// Volume exceeds a multiple of its moving average.
    VolumeSpike(VolumeSpikeParams),
}

impl SignalKind {
    /// The signal type, as written in configs and carried by published signals.
    pub fn type_name(&self) -> &'static str {
        match self {
            SignalKind::GoldenCross(_) => "golden_cross",
            SignalKind::DeathCross(_) => "death_cross",
            SignalKind::RsiOversold(_) => "rsi_oversold",
            SignalKind::RsiOverbought(_) => "rsi_overbought",
            SignalKind::MacdCross(_) => "macd_cross",
            SignalKind::VolumeSpike(_) => "volume_spike",
        }
    }
}

/// The built-in signal types.
pub const SIGNAL_TYPES: [&str; 6] = [
    "golden_cross",
    "death_cross",
    "rsi_oversold",
    "rsi_overbought",
    "macd_cross",
    "volume_spike",
];

/// Moving-average kind for cross signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MovingAverage {
    /// Simple moving average.
    #[default]
    Sma,
    /// Exponential moving average.
    Ema,
}

/// Parameters of `golden_cross` and `death_cross`.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CrossParams {
    /// Period of the fast moving average, in bars.
    #[serde(default = "fifty")]
    #[schemars(range(min = 1, max = 10_000))]
    pub fast: u32,
    /// Period of the slow moving average, in bars.
    #[serde(default = "two_hundred")]
    #[schemars(range(min = 2, max = 10_000))]
    pub slow: u32,
    /// Moving-average kind.
    #[serde(default)]
    pub ma: MovingAverage,
}

fn fifty() -> u32 {
    50
}
fn two_hundred() -> u32 {
    200
}
fn fourteen() -> u32 {
    14
}

/// Parameters of `rsi_oversold`.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RsiOversoldParams {
    /// RSI period, in bars.
    #[serde(default = "fourteen")]
    #[schemars(range(min = 2, max = 10_000))]
    pub period: u32,
    /// The RSI level (0–100) the signal fires below.
    #[serde(default = "thirty")]
    pub below: Percent,
}

fn thirty() -> Percent {
    Percent(30.into())
}

/// Parameters of `rsi_overbought`.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RsiOverboughtParams {
    /// RSI period, in bars.
    #[serde(default = "fourteen")]
    #[schemars(range(min = 2, max = 10_000))]
    pub period: u32,
    /// The RSI level (0–100) the signal fires above.
    #[serde(default = "seventy")]
    pub above: Percent,
}

fn seventy() -> Percent {
    Percent(70.into())
}

/// Parameters of `macd_cross`.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MacdCrossParams {
    /// Fast EMA period.
    #[serde(default = "twelve")]
    #[schemars(range(min = 1, max = 10_000))]
    pub fast: u32,
    /// Slow EMA period.
    #[serde(default = "twenty_six")]
    #[schemars(range(min = 2, max = 10_000))]
    pub slow: u32,
    /// Signal EMA period.
    #[serde(default = "nine")]
    #[schemars(range(min = 1, max = 10_000))]
    pub signal: u32,
}

fn twelve() -> u32 {
    12
}
fn twenty_six() -> u32 {
    26
}
fn nine() -> u32 {
    9
}

/// Parameters of `volume_spike`.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpikeParams {
    /// Period of the volume moving average, in bars.
    #[serde(default = "twenty")]
    #[schemars(range(min = 1, max = 10_000))]
    pub period: u32,
    /// The signal fires when volume exceeds this multiple of its average.
    #[serde(default = "two")]
    #[schemars(range(min = 1.0, max = 1000.0))]
    pub multiplier: f64,
}

fn twenty() -> u32 {
    20
}
fn two() -> f64 {
    2.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenerator {
    #[serde(rename = "type")]
    signal_type: String,
    #[serde(default = "daily")]
    timeframe: Timeframe,
    #[serde(default)]
    params: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for SignalGenerator {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = RawGenerator::deserialize(d)?;
        let params = raw
            .params
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        fn parse<T: serde::de::DeserializeOwned, E: Error>(v: serde_json::Value) -> Result<T, E> {
            serde_json::from_value(v).map_err(E::custom)
        }
        let kind = match raw.signal_type.as_str() {
            "golden_cross" => SignalKind::GoldenCross(parse(params)?),
            "death_cross" => SignalKind::DeathCross(parse(params)?),
            "rsi_oversold" => SignalKind::RsiOversold(parse(params)?),
            "rsi_overbought" => SignalKind::RsiOverbought(parse(params)?),
            "macd_cross" => SignalKind::MacdCross(parse(params)?),
            "volume_spike" => SignalKind::VolumeSpike(parse(params)?),
            other => {
                return Err(D::Error::unknown_variant(other, &SIGNAL_TYPES));
            }
        };
        Ok(SignalGenerator {
            timeframe: raw.timeframe,
            kind,
        })
    }
}

impl JsonSchema for SignalGenerator {
    fn schema_name() -> Cow<'static, str> {
        "SignalGenerator".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let timeframe = generator.subschema_for::<Timeframe>();
        let params: [(&str, Schema); 6] = [
            ("golden_cross", generator.subschema_for::<CrossParams>()),
            ("death_cross", generator.subschema_for::<CrossParams>()),
            (
                "rsi_oversold",
                generator.subschema_for::<RsiOversoldParams>(),
            ),
            (
                "rsi_overbought",
                generator.subschema_for::<RsiOverboughtParams>(),
            ),
            ("macd_cross", generator.subschema_for::<MacdCrossParams>()),
            (
                "volume_spike",
                generator.subschema_for::<VolumeSpikeParams>(),
            ),
        ];
        let branches: Vec<serde_json::Value> = params
            .into_iter()
            .map(|(name, schema)| {
                serde_json::json!({
                    "if": { "properties": { "type": { "const": name } }, "required": ["type"] },
                    "then": { "properties": { "params": schema } }
                })
            })
            .collect();
        json_schema!({
            "type": "object",
            "description": "A signal generator: its type, the timeframe it watches and its parameters.",
            "required": ["type"],
            "additionalProperties": false,
            "properties": {
                "type": {
                    "type": "string",
                    "enum": SIGNAL_TYPES,
                    "description": "The generator: golden_cross, death_cross, rsi_oversold, rsi_overbought, macd_cross or volume_spike."
                },
                "timeframe": timeframe,
                "params": {
                    "type": "object",
                    "description": "The generator's parameters; their fields depend on `type`."
                }
            },
            "allOf": branches
        })
    }
}
