//! `ztraded.toml` parsed into a [`Document`] with positions, like the YAML files, so that
//! settings findings are located the same way.

use super::MAX_DEPTH;
use super::yaml::{Document, NodeInfo, Pos, Style, escape_token};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A TOML syntax error, or a document nested too deep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TomlError {
    /// Finding code: `toml-syntax`, or `too-deep` for tables and arrays nested deeper than
    /// the parser (80 levels) or [`MAX_DEPTH`] allows.
    pub code: &'static str,
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
}

struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(source: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    fn pos(&self, source: &str, byte: usize) -> Pos {
        let byte = byte.min(source.len());
        let line = self.starts.partition_point(|s| *s <= byte).max(1);
        let start = self.starts[line - 1];
        let col = source.get(start..byte).map_or(0, |s| s.chars().count());
        Pos {
            line: line as u32,
            col: col as u32 + 1,
        }
    }
}

/// Parses TOML into a document with positions, or the syntax errors.
///
/// # Errors
/// Every syntax error the parser reports; `too-deep` when tables and arrays nest deeper
/// than the parser's limit or [`MAX_DEPTH`].
pub fn parse(source: &str) -> Result<Document, Vec<TomlError>> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let lines = Lines::new(source);
    let (table, errors) = DeTable::parse_recoverable(source);
    if !errors.is_empty() {
        return Err(errors
            .iter()
            .map(|e| {
                let message = e.message().trim();
                let pos = e.span().map_or(Pos::START, |s| lines.pos(source, s.start));
                // The parser's own depth limits, on keys and on values.
                if message == "recursion limit" || message.contains("max recursion depth") {
                    TomlError {
                        code: "too-deep",
                        pos,
                        message: "tables, arrays or dotted keys nest too deep here; settings are shallow, so this is refused".into(),
                    }
                } else {
                    TomlError {
                        code: "toml-syntax",
                        pos,
                        message: format!("TOML syntax error: {message}"),
                    }
                }
            })
            .collect());
    }
    if let Some(span) = too_deep(table.get_ref()) {
        return Err(vec![TomlError {
            code: "too-deep",
            pos: lines.pos(source, span.start),
            message: format!(
                "tables and arrays nest more than {MAX_DEPTH} levels here; settings are shallow, so this is refused"
            ),
        }]);
    }
    let mut nodes = HashMap::new();
    let root_span = table.span();
    let value = convert_table(table.get_ref(), "", source, &lines, &mut nodes);
    nodes.insert(
        String::new(),
        NodeInfo {
            pos: lines.pos(source, root_span.start),
            key: None,
            style: Style::Collection,
        },
    );
    Ok(Document {
        value,
        nodes,
        source: Arc::from(source),
    })
}

/// The span of the first value nested deeper than [`MAX_DEPTH`] (the root table is level
/// 1), found with an explicit stack so that the recursive conversion after it is bounded.
fn too_deep(table: &DeTable<'_>) -> Option<Range<usize>> {
    let mut stack: Vec<(&Spanned<DeValue<'_>>, usize)> = table.values().map(|v| (v, 2)).collect();
    while let Some((v, depth)) = stack.pop() {
        let children: Vec<&Spanned<DeValue<'_>>> = match v.get_ref() {
            DeValue::Array(items) => items.iter().collect(),
            DeValue::Table(t) => t.values().collect(),
            _ => continue,
        };
        if depth > MAX_DEPTH {
            return Some(v.span());
        }
        stack.extend(children.into_iter().map(|c| (c, depth + 1)));
    }
    None
}

fn convert_table(
    table: &DeTable<'_>,
    pointer: &str,
    source: &str,
    lines: &Lines,
    nodes: &mut HashMap<String, NodeInfo>,
) -> Value {
    let mut map = Map::new();
    for (key, value) in table.iter() {
        let child = format!("{pointer}/{}", escape_token(key.get_ref()));
        let key_pos = lines.pos(source, key.span().start);
        let v = convert(value, &child, Some(key_pos), source, lines, nodes);
        map.insert(key.get_ref().to_string(), v);
    }
    Value::Object(map)
}

fn convert(
    value: &Spanned<DeValue<'_>>,
    pointer: &str,
    key: Option<Pos>,
    source: &str,
    lines: &Lines,
    nodes: &mut HashMap<String, NodeInfo>,
) -> Value {
    let span: Range<usize> = value.span();
    let pos = lines.pos(source, span.start);
    let (v, style) = match value.get_ref() {
        DeValue::String(s) => (Value::String(s.to_string()), Style::Quoted),
        DeValue::Integer(i) => {
            let v = i64::from_str_radix(i.as_str(), i.radix())
                .map(Value::from)
                .or_else(|_| u64::from_str_radix(i.as_str(), i.radix()).map(Value::from))
                .unwrap_or(Value::Null);
            (v, Style::Plain)
        }
        DeValue::Float(f) => {
            let v = f
                .as_str()
                .replace('_', "")
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::Null, Value::Number);
            (v, Style::Plain)
        }
        DeValue::Boolean(b) => (Value::Bool(*b), Style::Plain),
        DeValue::Datetime(d) => (Value::String(d.to_string()), Style::Plain),
        DeValue::Array(items) => {
            let v = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    convert(item, &format!("{pointer}/{i}"), None, source, lines, nodes)
                })
                .collect();
            (Value::Array(v), Style::Collection)
        }
        DeValue::Table(t) => (
            convert_table(t, pointer, source, lines, nodes),
            Style::Collection,
        ),
    };
    nodes.insert(pointer.to_string(), NodeInfo { pos, key, style });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions() {
        let doc = parse("[http]\nlisten = \"0.0.0.0:1\"\n\n[brokers.sim]\nkind = \"simulated\"\ninitial_balance = 5_000\n").unwrap();
        assert_eq!(doc.value["brokers"]["sim"]["initial_balance"], 5000);
        assert_eq!(doc.locate("/http/listen"), Pos { line: 2, col: 10 });
        assert_eq!(doc.locate_key("/brokers/sim/kind"), Pos { line: 5, col: 1 });
    }

    #[test]
    fn syntax_errors_are_located() {
        let errors = parse("[http]\nlisten = \n").unwrap_err();
        assert_eq!(errors[0].pos.line, 2);
        let dup = parse("a = 1\na = 2\n").unwrap_err();
        assert_eq!(dup[0].pos.line, 2);
    }
}
