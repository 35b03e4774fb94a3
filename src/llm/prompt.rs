//! Prompt templates: text files in the repository (`prompts/<agent>.v<N>.md`, built into the
//! binary), with `{{name}}` placeholders. The part before a line `---` is the system
//! message, the rest the user message. The template name and version are stored with every
//! call, so a recorded decision names the prompt that produced it.

use crate::agents::PromptContext;
use crate::config::settings::StructuredOutput;
use crate::market::Timeframe;
use serde_json::Value;
use std::fmt::Write as _;

/// A prompt template.
#[derive(Clone, Copy, Debug)]
pub struct Template {
    /// `bias` or `strategy`.
    pub name: &'static str,
    /// Its version (the `vN` of the file name).
    pub version: u32,
    /// The text.
    pub text: &'static str,
}

/// Bars of each timeframe an LLM prompt lists (the executor's market snapshot).
pub const PROMPT_BARS: usize = 50;

/// The bias agent's prompt.
pub const BIAS: Template = Template {
    name: "bias",
    version: 1,
    text: include_str!("../../prompts/bias.v1.md"),
};

/// The strategy agent's prompt.
pub const STRATEGY: Template = Template {
    name: "strategy",
    version: 1,
    text: include_str!("../../prompts/strategy.v1.md"),
};

/// The reporting agent's summary prompt.
pub const SUMMARY: Template = Template {
    name: "summary",
    version: 1,
    text: include_str!("../../prompts/summary.v1.md"),
};

impl Template {
    /// `<name>.v<version>`.
    pub fn id(&self) -> String {
        format!("{}.v{}", self.name, self.version)
    }

    /// The system and user messages with `vars` substituted (see [`render`]).
    pub fn render(&self, vars: &[(&str, String)]) -> (String, String) {
        render(self.text, vars)
    }
}

/// The prompt a node uses: its `prompt_file` (name = the file, version = `sha256:` and the
/// first 12 hex digits of its text's SHA-256) or the built-in `template` (version `vN`).
pub fn chosen<'a>(
    template: &Template,
    file: Option<&'a str>,
    text: Option<&'a str>,
) -> (String, String, std::borrow::Cow<'a, str>) {
    match (file, text) {
        (Some(f), Some(t)) => {
            use sha2::Digest;
            let hash = hex::encode(sha2::Sha256::digest(t.as_bytes()));
            (f.to_string(), format!("sha256:{}", &hash[..12]), t.into())
        }
        _ => (
            template.name.to_string(),
            format!("v{}", template.version),
            template.text.into(),
        ),
    }
}

/// The system and user messages of template `text` with `vars` substituted (`{{key}}` →
/// value; unknown placeholders are left as written): the part before a line `---` is the
/// system message (none without such a line), the rest the user message.
pub fn render(text: &str, vars: &[(&str, String)]) -> (String, String) {
    let mut text = text.to_string();
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    match text.split_once("\n---\n") {
        Some((system, user)) => (system.trim().to_string(), user.trim().to_string()),
        None => (String::new(), text.trim().to_string()),
    }
}

/// The format note ending the user message: with structured outputs the provider enforces
/// the schema, otherwise the schema is written out for the model.
pub fn format_note(mode: StructuredOutput, schema: &Value) -> String {
    match mode {
        StructuredOutput::JsonSchema => {
            "Answer with the JSON object of the response format.".to_string()
        }
        StructuredOutput::JsonObject | StructuredOutput::None => format!(
            "Answer with one JSON object and nothing else, matching this JSON Schema (every \
             property present, null where it does not apply):\n{schema}"
        ),
    }
}

/// UTC time of `ts` (Unix seconds) as `YYYY-MM-DD HH:MM UTC`.
pub fn time(ts: i64) -> String {
    crate::engine::clock::utc(ts)
        .format("%Y-%m-%d %H:%M UTC")
        .to_string()
}

/// The market part of a prompt: for each timeframe of `timeframes` present in the context,
/// its recent bars as CSV lines (`time,open,high,low,close,volume`, oldest first) and the
/// indicator values at the last bar.
pub fn market(context: &PromptContext, timeframes: &[Timeframe]) -> String {
    let mut out = String::new();
    let Some(map) = context.market.as_object() else {
        return out;
    };
    let wanted: Vec<String> = timeframes.iter().map(ToString::to_string).collect();
    for (tf, data) in map {
        if !wanted.is_empty() && !wanted.contains(tf) {
            continue;
        }
        let bars = data.get("bars").and_then(Value::as_array);
        let _ = writeln!(
            out,
            "Timeframe {tf}: last {} bars (time,open,high,low,close,volume)",
            bars.map_or(0, Vec::len)
        );
        for b in bars.into_iter().flatten() {
            let Some(b) = b.as_array() else { continue };
            let ts = b.first().and_then(Value::as_i64).unwrap_or(0);
            let num = |i: usize| b.get(i).map(Value::to_string).unwrap_or_default();
            let _ = writeln!(
                out,
                "{},{},{},{},{},{}",
                crate::engine::clock::utc(ts).format("%Y-%m-%d %H:%M"),
                num(1),
                num(2),
                num(3),
                num(4),
                num(5)
            );
        }
        if let Some(values) = data.get("values").and_then(Value::as_object)
            && !values.is_empty()
        {
            let list: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "Indicators at the last bar: {}", list.join(", "));
        }
        out.push('\n');
    }
    out
}

/// The last close of `timeframe` in the context (USD), the default entry of a plan.
pub fn last_close(context: &PromptContext, timeframe: Timeframe) -> Option<rust_decimal::Decimal> {
    use rust_decimal::prelude::FromPrimitive;
    let close = context
        .market
        .get(timeframe.to_string())?
        .get("bars")?
        .as_array()?
        .last()?
        .get(4)?
        .as_f64()?;
    rust_decimal::Decimal::from_f64(close).map(|d| d.round_dp(6).normalize())
}

/// The position line of the strategy prompt.
pub fn position(context: &PromptContext) -> String {
    match &context.position {
        None => "none".to_string(),
        Some(p) => format!(
            "{} {} shares at an average {} USD, held {} bars",
            format!("{:?}", p.side).to_lowercase(),
            p.quantity,
            p.average_price,
            p.bars_held
        ),
    }
}

/// The bias line of the strategy prompt.
pub fn bias(context: &PromptContext) -> String {
    match &context.bias {
        None => "none".to_string(),
        Some(b) => format!(
            "{} (confidence {}): {}",
            format!("{:?}", b.bias).to_lowercase(),
            b.confidence,
            b.reasoning
        ),
    }
}

/// A rendered prompt: the template's name and version and the two messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// Template name (`bias`, `strategy`, `summary`, or the node's `prompt_file`).
    pub template: String,
    /// `vN`, or `sha256:…` of a prompt file.
    pub version: String,
    /// The system message (empty when the template has none).
    pub system: String,
    /// The user message.
    pub user: String,
}

fn rendered(
    template: &Template,
    file: Option<&str>,
    text: Option<&str>,
    vars: &[(&str, String)],
) -> Rendered {
    let (name, version, text) = chosen(template, file, text);
    let (system, user) = render(&text, vars);
    Rendered {
        template: name,
        version,
        system,
        user,
    }
}

/// The bias node's prompt (`schema`: the answer's JSON Schema, written out unless `mode` is
/// `json_schema`). The client sends it and `ztraded estimate` counts it: one rendering.
pub fn bias_prompt(
    config: &crate::config::pipeline::BiasLlm,
    context: &PromptContext,
    mode: StructuredOutput,
    schema: &Value,
) -> Rendered {
    rendered(
        &BIAS,
        config.prompt_file.as_deref(),
        config.prompt_text.as_deref(),
        &[
            ("symbol", context.symbol.clone()),
            ("time", time(context.now)),
            ("market", market(context, &config.timeframes)),
            ("instructions", config.prompt.clone().unwrap_or_default()),
            ("format", format_note(mode, schema)),
        ],
    )
}

/// The strategy node's prompt (see [`bias_prompt`]).
pub fn strategy_prompt(
    config: &crate::config::pipeline::StrategyLlm,
    context: &PromptContext,
    mode: StructuredOutput,
    schema: &Value,
) -> Rendered {
    rendered(
        &STRATEGY,
        config.prompt_file.as_deref(),
        config.prompt_text.as_deref(),
        &[
            ("symbol", context.symbol.clone()),
            ("time", time(context.now)),
            ("timeframe", config.timeframe.to_string()),
            ("risk_reward_min", config.risk_reward_min.to_string()),
            ("position", position(context)),
            ("bias", bias(context)),
            ("market", market(context, &[config.timeframe])),
            ("instructions", config.prompt.clone().unwrap_or_default()),
            ("format", format_note(mode, schema)),
        ],
    )
}

/// The reporting node's summary prompt (`facts`: what the execution decided, as JSON).
pub fn summary_prompt(context: &PromptContext, facts: &Value) -> Rendered {
    rendered(
        &SUMMARY,
        None,
        None,
        &[
            ("symbol", context.symbol.clone()),
            ("time", time(context.now)),
            ("position", position(context)),
            ("execution", facts.to_string()),
        ],
    )
}
