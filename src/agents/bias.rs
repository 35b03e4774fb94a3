//! `bias` with rules: bullish when `bullish` holds, bearish when `bearish` holds (and
//! `bullish` does not), neutral otherwise.

use crate::domain::{Bias, BiasSignal};
use crate::engine::feed::SymbolFeed;
use crate::expr::Program;

/// Evaluates the rules. `explain` writes the reasoning and factors.
pub fn rules(
    bullish: &Program,
    bearish: Option<&Program>,
    confidence: f64,
    feed: &SymbolFeed,
    explain: bool,
) -> BiasSignal {
    let bull = bullish.eval_bool(feed);
    let bear = bearish.and_then(|b| b.eval_bool(feed));
    let (bias, factor) = match (bull, bear) {
        (Some(true), _) => (Bias::Bullish, Some(bullish.source())),
        (_, Some(true)) => (Bias::Bearish, bearish.map(Program::source)),
        _ => (Bias::Neutral, None),
    };
    let confidence = if bias == Bias::Neutral {
        0.0
    } else {
        confidence
    };
    let (reasoning, factors) = if explain {
        let reasoning = match (bias, bull, bear) {
            (Bias::Neutral, None, _) | (Bias::Neutral, _, None) if bull.is_none() => {
                "neutral: the bias rules read values that are not available yet".to_string()
            }
            (Bias::Neutral, ..) => {
                "neutral: neither the bullish nor the bearish rule holds".to_string()
            }
            (b, ..) => format!(
                "{}: `{}` holds",
                if b == Bias::Bullish {
                    "bullish"
                } else {
                    "bearish"
                },
                factor.unwrap_or_default()
            ),
        };
        (
            reasoning,
            factor.map(|f| vec![f.to_string()]).unwrap_or_default(),
        )
    } else {
        (String::new(), Vec::new())
    };
    BiasSignal {
        bias,
        confidence,
        reasoning,
        factors,
    }
}
