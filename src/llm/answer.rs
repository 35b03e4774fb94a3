//! What a model must answer: the JSON shapes of a bias and of a trade plan, their JSON Schemas
//! (generated from these types with schemars, then made *strict* the way OpenAI's structured
//! outputs require: every property required, nullable where optional, no other properties),
//! and the checks that turn an answer into a [`BiasSignal`] or a [`StrategySignal`] or fail
//! the node closed.
//!
//! An answer fails ([`AnswerError`]) when it is not JSON, does not match the schema, or is
//! semantically wrong: a confidence outside 0–100, a non-positive or non-finite price, a stop
//! on the wrong side of the entry, a target on the wrong side of the entry, target 2 short of
//! target 1. A plan whose reward/risk is below the node's `risk_reward_min` is not wrong: it
//! becomes a `hold` that says why.

use crate::broker::PositionSide;
use crate::domain::{Action, Bias, BiasSignal, StrategySignal};
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Market direction, as the model writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BiasWord {
    /// Prices expected to rise.
    Bullish,
    /// Prices expected to fall.
    Bearish,
    /// No view.
    Neutral,
}

/// A bias node's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BiasAnswer {
    /// The expected direction of the symbol over the timeframes read.
    pub bias: BiasWord,
    /// Confidence in the bias, percent 0–100.
    #[schemars(range(min = 0, max = 100))]
    pub confidence: f64,
    /// Why, in one or two sentences.
    pub reasoning: String,
    /// The observations behind it (trend, levels, indicator readings).
    pub factors: Vec<String>,
}

/// What the plan does, as the model writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActionWord {
    /// Open a long position.
    Buy,
    /// Open a short position.
    Sell,
    /// Do nothing.
    Hold,
    /// Close the open position.
    Close,
}

/// A strategy node's answer: the trade plan (seed 003's decision with its R coefficient).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyAnswer {
    /// buy, sell, hold or close.
    pub action: ActionWord,
    /// Conviction in the plan, percent 0–100.
    #[schemars(range(min = 0, max = 100))]
    pub conviction: f64,
    /// Expected entry price in USD per share (null: the last close).
    pub entry_price: Option<f64>,
    /// Stop-loss price in USD per share: below the entry for a buy, above it for a sell.
    pub stop_loss: Option<f64>,
    /// First target in USD per share (partial exit).
    pub target_1: Option<f64>,
    /// Second target in USD per share, beyond the first.
    pub target_2: Option<f64>,
    /// Why, in one or two sentences.
    pub reasoning: String,
}

/// Why an answer was refused. The message says what was wrong, with the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The content is not a JSON object.
    #[error("the answer is not JSON: {0}")]
    NotJson(String),
    /// The JSON does not match the schema.
    #[error("the answer does not match the schema: {0}")]
    Schema(String),
    /// The model answered nothing.
    #[error("the answer is empty")]
    Empty,
    /// The JSON matches the schema but says something impossible.
    #[error("the answer is not a valid decision: {0}")]
    Semantic(String),
}

/// The strict JSON Schema of `T` for structured outputs: the schemars schema with every
/// object's properties all required, `additionalProperties: false`, and the annotations
/// providers refuse (`$schema`, `format`, `title`) removed.
pub fn strict_schema<T: JsonSchema>() -> Value {
    let mut v = serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null);
    strictify(&mut v);
    v
}

fn strictify(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("$schema");
            map.remove("format");
            map.remove("title");
            if let Some(Value::Object(props)) = map.get("properties") {
                let names: Vec<Value> = props.keys().cloned().map(Value::String).collect();
                map.insert("required".into(), Value::Array(names));
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (_, child) in map.iter_mut() {
                strictify(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strictify),
        _ => {}
    }
}

/// The JSON text of a model's content: the content itself, or what a ```` ```json ```` fence
/// holds (models without structured outputs often wrap their JSON in one).
pub fn json_text(content: &str) -> &str {
    let t = content.trim();
    if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.strip_prefix("json").unwrap_or(rest);
        if let Some(end) = rest.rfind("```") {
            return rest[..end].trim();
        }
    }
    t
}

/// Parses `content` as JSON and checks it against `schema` (every violation, joined).
///
/// # Errors
/// [`AnswerError::NotJson`], [`AnswerError::Schema`].
pub fn parse_checked<T: serde::de::DeserializeOwned>(
    content: &str,
    schema: &Value,
) -> Result<T, AnswerError> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| AnswerError::Schema(format!("schema does not compile: {e}")))?;
    parse_with(content, &validator)
}

/// [`parse_checked`] with the schema's validator compiled once (the client keeps one per
/// answer type).
///
/// # Errors
/// [`AnswerError::NotJson`], [`AnswerError::Schema`].
pub fn parse_with<T: serde::de::DeserializeOwned>(
    content: &str,
    validator: &jsonschema::Validator,
) -> Result<T, AnswerError> {
    let value: Value = serde_json::from_str(json_text(content))
        .map_err(|e| AnswerError::NotJson(format!("{e} in {}", excerpt(content))))?;
    let problems: Vec<String> = validator
        .iter_errors(&value)
        .take(5)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("{}: {e}", if at.is_empty() { "/" } else { &at })
        })
        .collect();
    if !problems.is_empty() {
        return Err(AnswerError::Schema(problems.join("; ")));
    }
    serde_json::from_value(value).map_err(|e| AnswerError::Schema(e.to_string()))
}

/// The first 120 characters of `s`, for messages.
pub fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(120).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    format!("{out:?}")
}

fn percent(name: &str, v: f64) -> Result<f64, AnswerError> {
    if v.is_finite() && (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(AnswerError::Semantic(format!(
            "{name} {v} is outside 0–100"
        )))
    }
}

fn price(name: &str, v: Option<f64>) -> Result<Option<Decimal>, AnswerError> {
    match v {
        None => Ok(None),
        Some(p) if p.is_finite() && p > 0.0 => Decimal::from_f64(p)
            .map(|d| Some(d.round_dp(6).normalize()))
            .ok_or_else(|| AnswerError::Semantic(format!("{name} {p} is not a price"))),
        Some(p) => Err(AnswerError::Semantic(format!(
            "{name} {p} is not a positive price"
        ))),
    }
}

impl BiasAnswer {
    /// The bias signal.
    ///
    /// # Errors
    /// [`AnswerError::Semantic`] for a confidence outside 0–100.
    pub fn into_signal(self) -> Result<BiasSignal, AnswerError> {
        Ok(BiasSignal {
            bias: match self.bias {
                BiasWord::Bullish => Bias::Bullish,
                BiasWord::Bearish => Bias::Bearish,
                BiasWord::Neutral => Bias::Neutral,
            },
            confidence: percent("confidence", self.confidence)?,
            reasoning: self.reasoning,
            factors: self.factors,
        })
    }
}

impl StrategyAnswer {
    /// The trade plan, with its entry defaulting to `last_close` (USD) and its reward/risk
    /// computed here ([`StrategySignal::compute_reward_risk`]), never taken from the model. A
    /// plan below `risk_reward_min` becomes a `hold` saying so.
    ///
    /// # Errors
    /// [`AnswerError::Semantic`]: conviction outside 0–100, a non-positive price, a stop or a
    /// target on the wrong side of the entry, target 2 short of target 1.
    pub fn into_signal(
        self,
        last_close: Option<Decimal>,
        risk_reward_min: f64,
    ) -> Result<StrategySignal, AnswerError> {
        let conviction = percent("conviction", self.conviction)?;
        let entry = price("entry_price", self.entry_price)?;
        let stop = price("stop_loss", self.stop_loss)?;
        let t1 = price("target_1", self.target_1)?;
        let t2 = price("target_2", self.target_2)?;
        let action = match self.action {
            ActionWord::Buy => Action::Buy,
            ActionWord::Sell => Action::Sell,
            ActionWord::Hold => Action::Hold,
            ActionWord::Close => Action::Close,
        };
        let Some(side) = action.position_side() else {
            return Ok(StrategySignal {
                action,
                conviction,
                entry_price: None,
                stop_loss: None,
                target_1: None,
                target_2: None,
                reward_risk: None,
                reasoning: self.reasoning,
            });
        };
        let Some(entry) = entry.or(last_close) else {
            return Err(AnswerError::Semantic(
                "an entry without entry_price and without a last close to default to".into(),
            ));
        };
        let long = side == PositionSide::Long;
        let beyond = |level: Decimal, from: Decimal| if long { level > from } else { level < from };
        let word = if long { "above" } else { "below" };
        let other = if long { "below" } else { "above" };
        if let Some(s) = stop
            && !beyond(entry, s)
        {
            return Err(AnswerError::Semantic(format!(
                "stop_loss {s} of a {} must be {other} the entry {entry}",
                self.action_name()
            )));
        }
        for (name, t) in [("target_1", t1), ("target_2", t2)] {
            if let Some(t) = t
                && !beyond(t, entry)
            {
                return Err(AnswerError::Semantic(format!(
                    "{name} {t} of a {} must be {word} the entry {entry}",
                    self.action_name()
                )));
            }
        }
        if let (Some(a), Some(b)) = (t1, t2)
            && beyond(a, b)
        {
            return Err(AnswerError::Semantic(format!(
                "target_2 {b} is short of target_1 {a}"
            )));
        }
        let reward_risk = match (stop, t1) {
            (Some(s), Some(t)) => StrategySignal::compute_reward_risk(side, entry, s, t),
            _ => None,
        };
        if let Some(rr) = reward_risk
            && rr < risk_reward_min
        {
            return Ok(StrategySignal::hold(format!(
                "the model's {} plan has reward/risk {rr:.2}, below the node's risk_reward_min {risk_reward_min}: {}",
                self.action_name(),
                self.reasoning
            )));
        }
        Ok(StrategySignal {
            action,
            conviction,
            entry_price: Some(entry),
            stop_loss: stop,
            target_1: t1,
            target_2: t2,
            reward_risk,
            reasoning: self.reasoning,
        })
    }

    fn action_name(&self) -> &'static str {
        match self.action {
            ActionWord::Buy => "buy",
            ActionWord::Sell => "sell",
            ActionWord::Hold => "hold",
            ActionWord::Close => "close",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::dec;

    fn plan(action: ActionWord, e: f64, s: f64, t1: f64, t2: f64) -> StrategyAnswer {
        StrategyAnswer {
            action,
            conviction: 80.0,
            entry_price: Some(e),
            stop_loss: Some(s),
            target_1: Some(t1),
            target_2: Some(t2),
            reasoning: "r".into(),
        }
    }

    #[test]
    fn strict_schemas_require_every_property_and_nothing_else() {
        let s = strict_schema::<StrategyAnswer>();
        let required: Vec<&str> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            required,
            [
                "action",
                "conviction",
                "entry_price",
                "stop_loss",
                "target_1",
                "target_2",
                "reasoning"
            ]
        );
        assert_eq!(s["additionalProperties"], false);
        assert!(!s.to_string().contains("\"format\""), "{s}");
        assert!(s.get("$schema").is_none());
        // A complete answer passes; one without a field or with an extra one does not.
        let ok = r#"{"action":"buy","conviction":70,"entry_price":null,"stop_loss":9,"target_1":12,"target_2":null,"reasoning":"x"}"#;
        assert!(parse_checked::<StrategyAnswer>(ok, &s).is_ok());
        let missing = r#"{"action":"buy","conviction":70,"reasoning":"x"}"#;
        assert!(matches!(
            parse_checked::<StrategyAnswer>(missing, &s),
            Err(AnswerError::Schema(_))
        ));
        let extra = ok.replace("\"reasoning\"", "\"why\":1,\"reasoning\"");
        assert!(matches!(
            parse_checked::<StrategyAnswer>(&extra, &s),
            Err(AnswerError::Schema(_))
        ));
        let bad_word = ok.replace("buy", "moon");
        assert!(matches!(
            parse_checked::<StrategyAnswer>(&bad_word, &s),
            Err(AnswerError::Schema(_))
        ));
    }

    #[test]
    fn fenced_json_is_read_and_prose_is_not_json() {
        let s = strict_schema::<BiasAnswer>();
        let fenced = "```json\n{\"bias\":\"bullish\",\"confidence\":75,\"reasoning\":\"up\",\"factors\":[]}\n```";
        let b: BiasAnswer = parse_checked(fenced, &s).unwrap();
        assert_eq!(b.bias, BiasWord::Bullish);
        assert!(matches!(
            parse_checked::<BiasAnswer>("I think it goes up", &s),
            Err(AnswerError::NotJson(_))
        ));
        // Confidence above 100 is a schema violation before it is a semantic one.
        let high = "{\"bias\":\"bullish\",\"confidence\":150,\"reasoning\":\"up\",\"factors\":[]}";
        assert!(matches!(
            parse_checked::<BiasAnswer>(high, &s),
            Err(AnswerError::Schema(_))
        ));
    }

    #[test]
    fn plans_on_the_wrong_side_fail_and_reward_risk_is_ours() {
        let long = plan(ActionWord::Buy, 100.0, 95.0, 110.0, 120.0)
            .into_signal(None, 1.5)
            .unwrap();
        assert_eq!(long.action, Action::Buy);
        assert_eq!(long.reward_risk, Some(2.0));
        assert_eq!(long.entry_price, Some(dec!(100)));
        for wrong in [
            plan(ActionWord::Buy, 100.0, 105.0, 110.0, 120.0),
            plan(ActionWord::Buy, 100.0, 100.0, 110.0, 120.0),
            plan(ActionWord::Buy, 100.0, 95.0, 90.0, 120.0),
            plan(ActionWord::Buy, 100.0, 95.0, 120.0, 110.0),
            plan(ActionWord::Sell, 100.0, 95.0, 90.0, 80.0),
            plan(ActionWord::Sell, 100.0, 105.0, 110.0, 80.0),
            plan(ActionWord::Buy, -1.0, 95.0, 110.0, 120.0),
        ] {
            assert!(
                matches!(
                    wrong.clone().into_signal(None, 0.0),
                    Err(AnswerError::Semantic(_))
                ),
                "{wrong:?}"
            );
        }
        let short = plan(ActionWord::Sell, 100.0, 104.0, 92.0, 90.0)
            .into_signal(None, 1.5)
            .unwrap();
        assert_eq!(short.reward_risk, Some(2.0));
        // Below the minimum reward/risk: a hold that says why.
        let thin = plan(ActionWord::Buy, 100.0, 95.0, 105.0, 108.0)
            .into_signal(None, 1.5)
            .unwrap();
        assert_eq!(thin.action, Action::Hold);
        assert!(thin.reasoning.contains("below the node's risk_reward_min"));
        // The entry defaults to the last close.
        let mut no_entry = plan(ActionWord::Buy, 0.0, 95.0, 110.0, 120.0);
        no_entry.entry_price = None;
        let s = no_entry.into_signal(Some(dec!(100)), 1.0).unwrap();
        assert_eq!(s.entry_price, Some(dec!(100)));
        let mut bad = plan(ActionWord::Hold, 1.0, 1.0, 1.0, 1.0);
        bad.conviction = 101.0;
        assert!(bad.into_signal(None, 0.0).is_err());
    }
}
