//! Indicator names as written in configs (`sma_50`, `macd_12_26_9`, `bbands_20_2`, …) and the
//! identifiers each one provides to rule expressions.

use std::fmt;
use std::str::FromStr;

/// One indicator with its parameters, parsed from its configuration name.
///
/// | name | provides |
/// | --- | --- |
/// | `sma_N`, `ema_N`, `rsi_N`, `atr_N`, `volume_sma_N` | the name itself |
/// | `macd_F_S_G` (`macd` = `macd_12_26_9`) | `macd`, `macd_signal`, `macd_hist` and `macd_F_S_G`, `macd_F_S_G_signal`, `macd_F_S_G_hist` |
/// | `bbands_N_K` (`bbands` = `bbands_20_2`) | `bb_upper`, `bb_middle`, `bb_lower` and `bbands_N_K_upper`, `_middle`, `_lower` |
/// | `supertrend_N_K` (`supertrend` = `supertrend_10_3`) | `supertrend`, `supertrend_direction` and `supertrend_N_K`, `supertrend_N_K_direction` |
/// | `vwap` | `vwap` (session VWAP, reset at each local midnight) |
///
/// The short names (`macd`, `bb_upper`, …) exist only when one indicator of that family is
/// configured for the timeframe; with two, only the qualified names are defined. A multiplier
/// `K` may be an integer or a decimal; in qualified identifiers its point is written `p`
/// (`bbands_20_2.5` provides `bbands_20_2p5_upper`).
#[derive(Clone, Debug, PartialEq)]
pub enum IndicatorSpec {
    /// Simple moving average of the close over `N` bars (TA-Lib `SMA`).
    Sma(usize),
    /// Exponential moving average of the close, seeded with the SMA of the first `N` closes
    /// (TA-Lib `EMA`).
    Ema(usize),
    /// Relative strength index with Wilder smoothing, 0–100 (TA-Lib `RSI`).
    Rsi(usize),
    /// Average true range with Wilder smoothing, in price units (TA-Lib `ATR`).
    Atr(usize),
    /// MACD line, signal and histogram (TA-Lib `MACD`): fast, slow, signal periods.
    Macd(usize, usize, usize),
    /// Bollinger bands over `N` bars at `K` population standard deviations (TA-Lib `BBANDS`).
    Bbands(usize, f64),
    /// Supertrend over an `N`-bar ATR at multiplier `K` (TradingView's `ta.supertrend` on
    /// TA-Lib's ATR): the line (price) and the direction (+1 up, −1 down).
    Supertrend(usize, f64),
    /// Simple moving average of the volume over `N` bars, in shares.
    VolumeSma(usize),
    /// Volume-weighted average price of the session, on the typical price
    /// `(high + low + close) / 3`; NaN while the session has no volume yet.
    Vwap,
}

/// Why an indicator name could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown indicator '{name}': {reason}")]
pub struct BadIndicator {
    /// The name as written.
    pub name: String,
    /// What is wrong with it.
    pub reason: String,
}

fn period(name: &str, s: &str) -> Result<usize, BadIndicator> {
    match s.parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(BadIndicator {
            name: name.to_string(),
            reason: format!("'{s}' is not a period (a whole number of bars from 1 to 100000)"),
        }),
    }
}

fn multiplier(name: &str, s: &str) -> Result<f64, BadIndicator> {
    match s.parse::<f64>() {
        Ok(k) if k > 0.0 && k <= 100.0 && !s.contains(['e', 'E']) => Ok(k),
        _ => Err(BadIndicator {
            name: name.to_string(),
            reason: format!("'{s}' is not a multiplier (a number above 0, at most 100)"),
        }),
    }
}

/// `2p5` → `2.5`: a `p` between two digits is a decimal point in qualified identifiers.
fn point_from_p(s: &str) -> String {
    let b = s.as_bytes();
    s.char_indices()
        .map(|(i, c)| {
            let digit_around =
                i > 0 && b[i - 1].is_ascii_digit() && b.get(i + 1).is_some_and(u8::is_ascii_digit);
            if c == 'p' && digit_around { '.' } else { c }
        })
        .collect()
}

fn fmt_k(k: f64) -> String {
    let s = format!("{k}");
    s.replace('.', "p")
}

impl IndicatorSpec {
    /// The canonical configuration name (`macd` → `macd_12_26_9`).
    pub fn name(&self) -> String {
        match self {
            IndicatorSpec::Sma(n) => format!("sma_{n}"),
            IndicatorSpec::Ema(n) => format!("ema_{n}"),
            IndicatorSpec::Rsi(n) => format!("rsi_{n}"),
            IndicatorSpec::Atr(n) => format!("atr_{n}"),
            IndicatorSpec::Macd(f, s, g) => format!("macd_{f}_{s}_{g}"),
            IndicatorSpec::Bbands(n, k) => format!("bbands_{n}_{}", fmt_k(*k)),
            IndicatorSpec::Supertrend(n, k) => format!("supertrend_{n}_{}", fmt_k(*k)),
            IndicatorSpec::VolumeSma(n) => format!("volume_sma_{n}"),
            IndicatorSpec::Vwap => "vwap".to_string(),
        }
    }

    /// The family, for deciding whether the short names (`macd`, `bb_upper`) are unambiguous.
    pub fn family(&self) -> &'static str {
        match self {
            IndicatorSpec::Sma(_) => "sma",
            IndicatorSpec::Ema(_) => "ema",
            IndicatorSpec::Rsi(_) => "rsi",
            IndicatorSpec::Atr(_) => "atr",
            IndicatorSpec::Macd(..) => "macd",
            IndicatorSpec::Bbands(..) => "bbands",
            IndicatorSpec::Supertrend(..) => "supertrend",
            IndicatorSpec::VolumeSma(_) => "volume_sma",
            IndicatorSpec::Vwap => "vwap",
        }
    }

    /// The qualified identifiers this indicator provides, in output order.
    pub fn outputs(&self) -> Vec<String> {
        let name = self.name();
        match self {
            IndicatorSpec::Macd(..) => vec![
                name.clone(),
                format!("{name}_signal"),
                format!("{name}_hist"),
            ],
            IndicatorSpec::Bbands(..) => vec![
                format!("{name}_upper"),
                format!("{name}_middle"),
                format!("{name}_lower"),
            ],
            IndicatorSpec::Supertrend(..) => vec![name.clone(), format!("{name}_direction")],
            _ => vec![name],
        }
    }

    /// The short aliases of [`IndicatorSpec::outputs`], in the same order, for the families
    /// that have them (`macd`, `bbands`, `supertrend`); empty otherwise.
    pub fn short_outputs(&self) -> &'static [&'static str] {
        match self {
            IndicatorSpec::Macd(..) => &["macd", "macd_signal", "macd_hist"],
            IndicatorSpec::Bbands(..) => &["bb_upper", "bb_middle", "bb_lower"],
            IndicatorSpec::Supertrend(..) => &["supertrend", "supertrend_direction"],
            _ => &[],
        }
    }

    /// Bars needed before the first value (TA-Lib's lookback): the value at index `i` is
    /// defined for `i >= lookback()`.
    pub fn lookback(&self) -> usize {
        match *self {
            IndicatorSpec::Sma(n) | IndicatorSpec::VolumeSma(n) | IndicatorSpec::Bbands(n, _) => {
                n - 1
            }
            IndicatorSpec::Ema(n) => n - 1,
            IndicatorSpec::Rsi(n) | IndicatorSpec::Atr(n) | IndicatorSpec::Supertrend(n, _) => n,
            IndicatorSpec::Macd(f, s, g) => s.max(f) - 1 + g - 1,
            IndicatorSpec::Vwap => 0,
        }
    }

    /// Recognises an identifier used in an expression as the output of an indicator that
    /// could provide it (used for scanners, whose indicators are implied by their filters):
    /// `sma_20` → `Sma(20)`, `bb_upper` → `Bbands(20, 2)`, `macd_signal` → `Macd(12, 26, 9)`.
    pub fn providing(identifier: &str) -> Option<IndicatorSpec> {
        let base = match identifier {
            "macd" | "macd_signal" | "macd_hist" => return Some(IndicatorSpec::Macd(12, 26, 9)),
            "bb_upper" | "bb_middle" | "bb_lower" => return Some(IndicatorSpec::Bbands(20, 2.0)),
            "supertrend" | "supertrend_direction" => {
                return Some(IndicatorSpec::Supertrend(10, 3.0));
            }
            _ => identifier,
        };
        for suffix in [
            "_signal",
            "_hist",
            "_upper",
            "_middle",
            "_lower",
            "_direction",
        ] {
            if let Some(stem) = base.strip_suffix(suffix)
                && let Ok(spec) = point_from_p(stem).parse::<IndicatorSpec>()
                && spec.outputs().iter().any(|o| o == identifier)
            {
                return Some(spec);
            }
        }
        let spec: IndicatorSpec = point_from_p(base).parse().ok()?;
        spec.outputs()
            .iter()
            .any(|o| o == identifier)
            .then_some(spec)
    }
}

impl fmt::Display for IndicatorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for IndicatorSpec {
    type Err = BadIndicator;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| BadIndicator {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        match name {
            "vwap" => return Ok(IndicatorSpec::Vwap),
            "macd" => return Ok(IndicatorSpec::Macd(12, 26, 9)),
            "bbands" => return Ok(IndicatorSpec::Bbands(20, 2.0)),
            "supertrend" => return Ok(IndicatorSpec::Supertrend(10, 3.0)),
            _ => {}
        }
        if let Some(rest) = name.strip_prefix("volume_sma_") {
            return Ok(IndicatorSpec::VolumeSma(period(name, rest)?));
        }
        let (family, rest) = name
            .split_once('_')
            .ok_or_else(|| bad("expected a name like sma_20, macd_12_26_9 or bbands_20_2"))?;
        let parts: Vec<&str> = rest.split('_').collect();
        let one = |f: fn(usize) -> IndicatorSpec| -> Result<IndicatorSpec, BadIndicator> {
            match parts.as_slice() {
                [n] => Ok(f(period(name, n)?)),
                _ => Err(bad("expected one period, as in sma_20")),
            }
        };
        match family {
            "sma" => one(IndicatorSpec::Sma),
            "ema" => one(IndicatorSpec::Ema),
            "rsi" => one(IndicatorSpec::Rsi),
            "atr" => one(IndicatorSpec::Atr),
            "macd" => match parts.as_slice() {
                [f, s, g] => {
                    let (f, s, g) = (period(name, f)?, period(name, s)?, period(name, g)?);
                    if f >= s {
                        return Err(bad("the fast period must be shorter than the slow one"));
                    }
                    Ok(IndicatorSpec::Macd(f, s, g))
                }
                _ => Err(bad("expected macd_FAST_SLOW_SIGNAL, as in macd_12_26_9")),
            },
            "bbands" => match parts.as_slice() {
                [n, k] => Ok(IndicatorSpec::Bbands(
                    period(name, n)?,
                    multiplier(name, k)?,
                )),
                _ => Err(bad("expected bbands_PERIOD_K, as in bbands_20_2")),
            },
            "supertrend" => match parts.as_slice() {
                [n, k] => Ok(IndicatorSpec::Supertrend(
                    period(name, n)?,
                    multiplier(name, k)?,
                )),
                _ => Err(bad("expected supertrend_PERIOD_K, as in supertrend_10_3")),
            },
            _ => Err(bad(
                "known indicators are sma_N, ema_N, rsi_N, atr_N, macd_F_S_G, bbands_N_K, supertrend_N_K, volume_sma_N and vwap",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_family() {
        assert_eq!("sma_50".parse(), Ok(IndicatorSpec::Sma(50)));
        assert_eq!("volume_sma_20".parse(), Ok(IndicatorSpec::VolumeSma(20)));
        assert_eq!("macd_12_26_9".parse(), Ok(IndicatorSpec::Macd(12, 26, 9)));
        assert_eq!("bbands_20_2.5".parse(), Ok(IndicatorSpec::Bbands(20, 2.5)));
        assert_eq!("supertrend".parse(), Ok(IndicatorSpec::Supertrend(10, 3.0)));
        assert_eq!("vwap".parse(), Ok(IndicatorSpec::Vwap));
        assert!("sma_0".parse::<IndicatorSpec>().is_err());
        assert!("smaa_20".parse::<IndicatorSpec>().is_err());
        assert!("macd_26_12_9".parse::<IndicatorSpec>().is_err());
        assert!("sma_20_3".parse::<IndicatorSpec>().is_err());
    }

    #[test]
    fn names_outputs_and_lookbacks_match_talib() {
        let bb: IndicatorSpec = "bbands_20_2.5".parse().unwrap();
        assert_eq!(bb.outputs()[0], "bbands_20_2p5_upper");
        assert_eq!(IndicatorSpec::Macd(12, 26, 9).lookback(), 33);
        assert_eq!(IndicatorSpec::Rsi(14).lookback(), 14);
        assert_eq!(IndicatorSpec::Ema(20).lookback(), 19);
    }

    #[test]
    fn finds_the_indicator_behind_an_identifier() {
        assert_eq!(
            IndicatorSpec::providing("sma_20"),
            Some(IndicatorSpec::Sma(20))
        );
        assert_eq!(
            IndicatorSpec::providing("bbands_20_2p5_lower"),
            Some(IndicatorSpec::Bbands(20, 2.5))
        );
        assert_eq!(
            IndicatorSpec::providing("macd_5_35_5_hist"),
            Some(IndicatorSpec::Macd(5, 35, 5))
        );
        assert_eq!(
            IndicatorSpec::providing("supertrend_7_2p5_direction"),
            Some(IndicatorSpec::Supertrend(7, 2.5))
        );
        assert_eq!(IndicatorSpec::providing("close"), None);
        assert_eq!(IndicatorSpec::providing("sma_x"), None);
    }
}
