//! YAML loading that keeps positions.
//!
//! The file is parsed event by event with `saphyr-parser` (a maintained YAML 1.2 parser that
//! reports the line and column of every event) into a `serde_json::Value` plus a table from
//! each value's JSON pointer to where it was written. Every later layer (JSON Schema, typed
//! deserialization, semantic checks) reports findings by JSON pointer, and this table turns
//! them into `file:line:col`.
//!
//! Rules, stricter than YAML allows, so that a config means one thing:
//! - exactly one document per file, and its root is a mapping;
//! - duplicate keys are errors; keys are scalars;
//! - scalars resolve by the YAML 1.2 core schema: `yes`/`no`/`on`/`off` are strings, `09:35`
//!   is a string, `.inf` and `.nan` are rejected;
//! - anchors and aliases are expanded, at most [`MAX_NODES`] nodes per file (alias bombs are
//!   refused), nested at most [`MAX_DEPTH`] collections deep (aliases count with their
//!   anchored value: every later layer walks the tree recursively, so a deeper file is
//!   refused with `too-deep` instead of overflowing a thread's stack); merge keys (`<<: *base`, or a list of aliases) copy the keys the mapping does
//!   not set itself; a finding inside an aliased value points at the anchored original;
//! - tags other than the core ones (`!!str`, `!!int`, `!!float`, `!!bool`, `!!null`,
//!   `!!map`, `!!seq`) are errors;
//! - a UTF-8 byte-order mark is skipped; CRLF line endings are fine.

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Most value nodes a file may expand to, aliases included.
pub const MAX_NODES: usize = 100_000;

pub use super::MAX_DEPTH;

/// A 1-based line and column (columns count characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1, in characters.
    pub col: u32,
}

impl Pos {
    /// Line 1, column 1.
    pub const START: Pos = Pos { line: 1, col: 1 };
}

/// How a scalar was written, for placing a column inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A mapping or a sequence.
    Collection,
    /// A plain (unquoted) scalar.
    Plain,
    /// A single- or double-quoted scalar.
    Quoted,
    /// A literal (`|`) block scalar.
    Block,
    /// A folded (`>`) block scalar.
    Folded,
}

/// Where one value was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Start of the value.
    pub pos: Pos,
    /// Start of the key that introduced it, for mapping values.
    pub key: Option<Pos>,
    /// How it was written.
    pub style: Style,
}

/// A parsed config document: its value and where each part of it was written.
#[derive(Clone, Debug)]
pub struct Document {
    /// The content, with the JSON data model.
    pub value: Value,
    /// JSON pointer → where the value was written.
    pub nodes: HashMap<String, NodeInfo>,
    /// The source text (byte-order mark removed).
    pub source: Arc<str>,
}

impl Document {
    /// A document without positions (for values built in code).
    pub fn detached(value: Value) -> Self {
        Document {
            value,
            nodes: HashMap::new(),
            source: Arc::from(""),
        }
    }

    /// Where the value at `pointer` was written, or its nearest written ancestor.
    pub fn locate(&self, pointer: &str) -> Pos {
        let mut p = pointer;
        loop {
            if let Some(info) = self.nodes.get(p) {
                return info.pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return Pos::START,
            }
        }
    }

    /// Where the key of the value at `pointer` was written (for unknown and duplicate keys),
    /// falling back to [`Document::locate`].
    pub fn locate_key(&self, pointer: &str) -> Pos {
        match self.nodes.get(pointer) {
            Some(NodeInfo { key: Some(k), .. }) => *k,
            _ => self.locate(pointer),
        }
    }

    /// The position of the character at `offset` (in characters) inside the string scalar
    /// at `pointer`. Exact for plain and single-line quoted scalars and for block scalars;
    /// for a multi-line flow scalar, the start of the scalar.
    pub fn locate_in_scalar(&self, pointer: &str, offset: usize) -> Pos {
        let Some(info) = self.nodes.get(pointer) else {
            return self.locate(pointer);
        };
        let text = match self.value.pointer(pointer) {
            Some(Value::String(s)) => s.as_str(),
            _ => return info.pos,
        };
        let before: String = text.chars().take(offset).collect();
        let newlines = before.matches('\n').count() as u32;
        match info.style {
            Style::Plain | Style::Quoted if newlines == 0 && !text.contains('\n') => {
                let quote = u32::from(info.style == Style::Quoted);
                let source_line = self.source.lines().nth(info.pos.line as usize - 1);
                // Quoted scalars with escapes shift columns; keep the start in that case.
                let exact = match source_line {
                    Some(line) => {
                        let start = info.pos.col as usize - 1 + quote as usize;
                        let written: String = line
                            .chars()
                            .skip(start)
                            .take(text.chars().count())
                            .collect();
                        written == text
                    }
                    None => false,
                };
                if exact {
                    Pos {
                        line: info.pos.line,
                        col: info.pos.col + quote + offset as u32,
                    }
                } else {
                    info.pos
                }
            }
            Style::Block | Style::Folded => {
                // Walk the source lines of the block: each content line holds its characters
                // and one separator (a newline, or in a folded block a space); blank lines
                // of a folded block add nothing but the newline already counted.
                let indent = info.pos.col as usize - 1;
                let mut consumed = 0usize;
                for (k, line) in self
                    .source
                    .lines()
                    .skip(info.pos.line as usize - 1)
                    .enumerate()
                {
                    let content: String = line.chars().skip(indent).collect();
                    let len = content.chars().count();
                    if content.trim().is_empty() && info.style == Style::Folded && k > 0 {
                        continue;
                    }
                    if offset < consumed + len.max(1) {
                        return Pos {
                            line: info.pos.line + k as u32,
                            col: info.pos.col + (offset - consumed) as u32,
                        };
                    }
                    consumed += len + 1;
                    if consumed > text.chars().count() + 1 {
                        break;
                    }
                }
                info.pos
            }
            _ => info.pos,
        }
    }
}

/// What makes a file unloadable or wrong at the YAML level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    /// Stable finding code (`yaml-syntax`, `duplicate-key`, …).
    pub code: &'static str,
    /// JSON pointer of the value the error is about (`None` for syntax-level errors).
    pub pointer: Option<String>,
    /// Where.
    pub pos: Pos,
    /// What, for a person.
    pub message: String,
}

/// Escapes one JSON-pointer reference token (RFC 6901).
pub fn escape_token(token: &str) -> String {
    if token.contains(['~', '/']) {
        token.replace('~', "~0").replace('/', "~1")
    } else {
        token.to_string()
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line() as u32,
        col: span.start.col() as u32 + 1,
    }
}

/// Parses `source` as a single YAML document whose root is a mapping.
///
/// Returns the document when it could be built (possibly with recoverable errors such as a
/// duplicate key, whose first occurrence is kept) and every error found.
pub fn parse(source: &str) -> (Option<Document>, Vec<YamlError>) {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let mut loader = Loader {
        parser: Parser::new_from_str(source),
        nodes: Vec::new(),
        anchors: HashMap::new(),
        errors: Vec::new(),
        count: 0,
        depth: 0,
    };
    let value = loader.document();
    let Loader { nodes, errors, .. } = loader;
    match value {
        Some(value) => {
            let nodes: HashMap<String, NodeInfo> = nodes.into_iter().collect();
            (
                Some(Document {
                    value,
                    nodes,
                    source: Arc::from(source),
                }),
                errors,
            )
        }
        None => (None, errors),
    }
}

/// A mapping merged with `<<`, and its node infos by pointer suffix.
type Merged = (Map<String, Value>, Vec<(String, NodeInfo)>);

struct Anchored {
    value: Value,
    /// How many collections deep the value is (0 for a scalar).
    depth: usize,
    /// Node infos of the anchored subtree, by pointer suffix relative to the anchor.
    nodes: Vec<(String, NodeInfo)>,
}

struct Loader<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    nodes: Vec<(String, NodeInfo)>,
    anchors: HashMap<usize, Anchored>,
    errors: Vec<YamlError>,
    count: usize,
    /// Collections open around the current event.
    depth: usize,
}

/// A fatal problem: parsing stops.
struct Stop;

impl<'a> Loader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), Stop> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => {
                let pos = Pos {
                    line: e.marker().line() as u32,
                    col: e.marker().col() as u32 + 1,
                };
                self.errors.push(YamlError {
                    code: "yaml-syntax",
                    pointer: None,
                    pos,
                    message: format!("YAML syntax error: {}", e.info()),
                });
                Err(Stop)
            }
            None => {
                self.errors.push(YamlError {
                    code: "yaml-syntax",
                    pointer: None,
                    pos: Pos::START,
                    message: "YAML syntax error: unexpected end of input".into(),
                });
                Err(Stop)
            }
        }
    }

    fn error(&mut self, code: &'static str, pos: Pos, message: String) {
        self.errors.push(YamlError {
            code,
            pointer: None,
            pos,
            message,
        });
    }

    fn document(&mut self) -> Option<Value> {
        self.document_inner().ok().flatten()
    }

    fn document_inner(&mut self) -> Result<Option<Value>, Stop> {
        // StreamStart
        let (ev, _) = self.next()?;
        debug_assert!(matches!(ev, Event::StreamStart));
        let (ev, span) = self.next()?;
        match ev {
            Event::StreamEnd => {
                let _ = span;
                self.error(
                    "empty-document",
                    Pos::START,
                    "the file has no content (it is empty or holds only comments); write a mapping of settings".into(),
                );
                return Ok(None);
            }
            Event::DocumentStart(_) => {}
            _ => {
                self.error(
                    "yaml-syntax",
                    pos_of(&span),
                    "YAML syntax error: expected a document".into(),
                );
                return Err(Stop);
            }
        }
        let (ev, span) = self.next()?;
        if matches!(ev, Event::DocumentEnd) {
            self.error(
                "empty-document",
                pos_of(&span),
                "the document is empty; write a mapping of settings".into(),
            );
            return Ok(None);
        }
        let root_pos = pos_of(&span);
        let is_mapping = matches!(ev, Event::MappingStart(..));
        let value = self.node(ev, span, String::new(), None)?;
        let (ev, _) = self.next()?;
        debug_assert!(matches!(ev, Event::DocumentEnd));
        let (ev, span) = self.next()?;
        if let Event::DocumentStart(_) = ev {
            self.error(
                "multiple-documents",
                pos_of(&span),
                "a config file holds exactly one YAML document; move this one to a file of its own"
                    .into(),
            );
            return Ok(None);
        }
        if !is_mapping {
            let what = match &value {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                Value::Array(_) => "a sequence",
                Value::Object(_) => "a mapping",
            };
            self.error(
                "not-a-mapping",
                root_pos,
                format!("the document must be a mapping of settings, found {what}"),
            );
            return Ok(None);
        }
        Ok(Some(value))
    }

    fn bump(&mut self, n: usize, pos: Pos) -> Result<(), Stop> {
        self.count += n;
        if self.count > MAX_NODES {
            self.error(
                "too-many-nodes",
                pos,
                format!("the document expands to more than {MAX_NODES} values (aliases included); refusing it"),
            );
            return Err(Stop);
        }
        Ok(())
    }

    /// Enters a collection (or an alias whose value is `extra` collections deep) at `pos`;
    /// refuses the document when that nests deeper than [`MAX_DEPTH`].
    fn deeper(&mut self, extra: usize, pos: Pos) -> Result<(), Stop> {
        if self.depth + extra > MAX_DEPTH {
            self.error(
                "too-deep",
                pos,
                format!(
                    "the document nests more than {MAX_DEPTH} levels of mappings and sequences here; config files are shallow, so this is refused"
                ),
            );
            return Err(Stop);
        }
        Ok(())
    }

    fn check_tag(&mut self, tag: &Option<std::borrow::Cow<'a, Tag>>, pos: Pos) -> Option<String> {
        let tag = tag.as_ref()?;
        if tag.is_yaml_core_schema() {
            return Some(tag.suffix.clone());
        }
        self.error(
            "yaml-tag",
            pos,
            format!(
                "unsupported YAML tag '{}{}'; only the core tags (!!str, !!int, …) are allowed",
                tag.handle, tag.suffix
            ),
        );
        None
    }

    fn node(
        &mut self,
        ev: Event<'a>,
        span: Span,
        pointer: String,
        key: Option<Pos>,
    ) -> Result<Value, Stop> {
        let pos = pos_of(&span);
        self.bump(1, pos)?;
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let tag = self.check_tag(&tag, pos);
                let before = self.errors.len();
                let value = match self.scalar(&text, style, tag.as_deref(), pos) {
                    Some(v) => v,
                    None => Value::Null,
                };
                for e in &mut self.errors[before..] {
                    e.pointer = Some(pointer.clone());
                }
                let kind = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    ScalarStyle::Literal => Style::Block,
                    ScalarStyle::Folded => Style::Folded,
                };
                let start = self.nodes.len();
                self.nodes.push((
                    pointer.clone(),
                    NodeInfo {
                        pos,
                        key,
                        style: kind,
                    },
                ));
                self.remember(anchor, &value, &pointer, start);
                Ok(value)
            }
            Event::SequenceStart(anchor, tag) => {
                self.deeper(1, pos)?;
                self.check_tag(&tag, pos);
                let start = self.nodes.len();
                self.nodes.push((
                    pointer.clone(),
                    NodeInfo {
                        pos,
                        key,
                        style: Style::Collection,
                    },
                ));
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    let child = format!("{pointer}/{}", items.len());
                    self.depth += 1;
                    let item = self.node(ev, span, child, None);
                    self.depth -= 1;
                    items.push(item?);
                }
                let value = Value::Array(items);
                self.remember(anchor, &value, &pointer, start);
                Ok(value)
            }
            Event::MappingStart(anchor, tag) => {
                self.deeper(1, pos)?;
                self.check_tag(&tag, pos);
                let start = self.nodes.len();
                self.nodes.push((
                    pointer.clone(),
                    NodeInfo {
                        pos,
                        key,
                        style: Style::Collection,
                    },
                ));
                self.depth += 1;
                let value = self.mapping(&pointer, pos);
                self.depth -= 1;
                let value = value?;
                self.remember(anchor, &value, &pointer, start);
                Ok(value)
            }
            Event::Alias(id) => {
                let Some(anchored) = self.anchors.get(&id) else {
                    self.error(
                        "yaml-syntax",
                        pos,
                        "YAML syntax error: alias to an unknown anchor".into(),
                    );
                    return Err(Stop);
                };
                let extra = anchored.depth;
                self.deeper(extra, pos)?;
                let Some(anchored) = self.anchors.get(&id) else {
                    return Err(Stop);
                };
                let value = anchored.value.clone();
                let copied: Vec<(String, NodeInfo)> = anchored
                    .nodes
                    .iter()
                    .map(|(suffix, info)| {
                        let mut info = *info;
                        if suffix.is_empty() {
                            info.key = key;
                        }
                        (format!("{pointer}{suffix}"), info)
                    })
                    .collect();
                self.bump(copied.len(), pos)?;
                self.nodes.extend(copied);
                Ok(value)
            }
            _ => {
                self.error(
                    "yaml-syntax",
                    pos,
                    "YAML syntax error: unexpected event".into(),
                );
                Err(Stop)
            }
        }
    }

    fn remember(&mut self, anchor: usize, value: &Value, pointer: &str, start: usize) {
        if anchor == 0 {
            return;
        }
        let nodes = self.nodes[start..]
            .iter()
            .map(|(p, info)| (p[pointer.len()..].to_string(), *info))
            .collect();
        self.anchors.insert(
            anchor,
            Anchored {
                value: value.clone(),
                depth: value_depth(value),
                nodes,
            },
        );
    }

    fn mapping(&mut self, pointer: &str, map_pos: Pos) -> Result<Value, Stop> {
        let mut map = Map::new();
        let mut key_lines: HashMap<String, Pos> = HashMap::new();
        // (merged mapping, its node infos by suffix relative to the merged mapping)
        let mut merges: Vec<Merged> = Vec::new();
        loop {
            let (ev, span) = self.next()?;
            let key_pos = pos_of(&span);
            let key = match ev {
                Event::MappingEnd => break,
                Event::Scalar(text, _, _, _) => text.into_owned(),
                other => {
                    self.error(
                        "non-string-key",
                        key_pos,
                        "mapping keys must be plain strings, not sequences, mappings or aliases"
                            .into(),
                    );
                    // Skip the key node and its value.
                    self.skip(other)?;
                    let (ev, _) = self.next()?;
                    self.skip(ev)?;
                    continue;
                }
            };
            let (ev, span) = self.next()?;
            if key == "<<" {
                let start = self.nodes.len();
                let merge_ptr = format!("{pointer}/<<");
                let value = self.node(ev, span, merge_ptr.clone(), Some(key_pos))?;
                let infos: Vec<(String, NodeInfo)> = self.nodes.drain(start..).collect();
                let merge_pos = infos.first().map_or(key_pos, |(_, i)| i.pos);
                match value {
                    Value::Object(m) => merges.push((
                        m,
                        infos
                            .into_iter()
                            .map(|(p, i)| (p[merge_ptr.len()..].to_string(), i))
                            .collect(),
                    )),
                    Value::Array(items) if items.iter().all(Value::is_object) => {
                        for (i, item) in items.into_iter().enumerate() {
                            let prefix = format!("{merge_ptr}/{i}");
                            let sub = infos
                                .iter()
                                .filter(|(p, _)| {
                                    p == &prefix || p.starts_with(&format!("{prefix}/"))
                                })
                                .map(|(p, info)| (p[prefix.len()..].to_string(), *info))
                                .collect();
                            if let Value::Object(m) = item {
                                merges.push((m, sub));
                            }
                        }
                    }
                    _ => self.error(
                        "yaml-merge",
                        merge_pos,
                        "a merge key `<<` takes a mapping or a list of mappings (usually aliases)"
                            .into(),
                    ),
                }
                continue;
            }
            let child = format!("{pointer}/{}", escape_token(&key));
            if let Some(first) = key_lines.get(&key) {
                let first = *first;
                // Parse and drop the duplicate's value so that parsing continues.
                let start = self.nodes.len();
                self.node(ev, span, child, Some(key_pos))?;
                self.nodes.truncate(start);
                self.error(
                    "duplicate-key",
                    key_pos,
                    format!("duplicate key '{key}' (first set on line {})", first.line),
                );
                continue;
            }
            key_lines.insert(key.clone(), key_pos);
            let value = self.node(ev, span, child, Some(key_pos))?;
            map.insert(key, value);
        }
        // Merge keys: explicit keys win, then earlier merges over later ones.
        let mut merged_keys: HashSet<String> = HashSet::new();
        for (m, infos) in merges {
            for (k, v) in m {
                if map.contains_key(&k) || merged_keys.contains(&k) {
                    continue;
                }
                let token = format!("/{}", escape_token(&k));
                for (suffix, info) in &infos {
                    if suffix == &token || suffix.starts_with(&format!("{token}/")) {
                        self.nodes.push((format!("{pointer}{suffix}"), *info));
                    }
                }
                merged_keys.insert(k.clone());
                map.insert(k, v);
            }
        }
        let _ = map_pos;
        Ok(Value::Object(map))
    }

    /// Consumes the rest of a node whose start event is `ev`.
    fn skip(&mut self, ev: Event<'a>) -> Result<(), Stop> {
        let mut depth = match ev {
            Event::SequenceStart(..) | Event::MappingStart(..) => 1,
            _ => 0,
        };
        while depth > 0 {
            let (ev, _) = self.next()?;
            match ev {
                Event::SequenceStart(..) | Event::MappingStart(..) => depth += 1,
                Event::SequenceEnd | Event::MappingEnd => depth -= 1,
                _ => {}
            }
        }
        Ok(())
    }

    fn scalar(
        &mut self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&str>,
        pos: Pos,
    ) -> Option<Value> {
        if let Some(tag) = tag {
            return match tag {
                "str" => Some(Value::String(text.to_string())),
                "null" => Some(Value::Null),
                "bool" | "int" | "float" => match resolve_plain(text) {
                    Ok(v @ Value::Bool(_)) if tag == "bool" => Some(v),
                    Ok(v @ Value::Number(_)) if tag == "int" && (v.is_i64() || v.is_u64()) => {
                        Some(v)
                    }
                    Ok(v @ Value::Number(_)) if tag == "float" => Some(v),
                    _ => {
                        self.error("yaml-tag", pos, format!("'{text}' is not a valid !!{tag}"));
                        None
                    }
                },
                _ => {
                    self.error(
                        "yaml-tag",
                        pos,
                        format!("the !!{tag} tag cannot be used on a scalar"),
                    );
                    None
                }
            };
        }
        if style != ScalarStyle::Plain {
            return Some(Value::String(text.to_string()));
        }
        match resolve_plain(text) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error("invalid-number", pos, message);
                None
            }
        }
    }
}

/// How many collections deep `value` is: 0 for a scalar, 1 for `[x]`, 2 for `{a: [x]}`.
/// Walks with an explicit stack, so any depth is safe to measure.
pub fn value_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(items) => {
                deepest = deepest.max(d + 1);
                stack.extend(items.iter().map(|i| (i, d + 1)));
            }
            Value::Object(map) => {
                deepest = deepest.max(d + 1);
                stack.extend(map.values().map(|i| (i, d + 1)));
            }
            _ => deepest = deepest.max(d),
        }
    }
    deepest
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Result<Value, String> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            return Err(format!(
                "'{text}' (infinity or not-a-number) is not allowed in a config"
            ));
        }
        _ => {}
    }
    let bytes = text.as_bytes();
    let first = bytes[0];
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return Ok(Value::String(text.to_string()));
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return u64::from_str_radix(hex, 16)
                .map(Value::from)
                .map_err(|_| format!("'{text}' is too large"));
        }
        return Ok(Value::String(text.to_string()));
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return u64::from_str_radix(oct, 8)
                .map(Value::from)
                .map_err(|_| format!("'{text}' is too large"));
        }
        return Ok(Value::String(text.to_string()));
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = digits.parse::<u64>()
            && !text.starts_with('-')
        {
            return Ok(Value::from(u));
        }
        return Err(format!("the integer '{text}' is too large"));
    }
    if is_core_float(digits) {
        return match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            _ => Err(format!("the number '{text}' is out of range")),
        };
    }
    Ok(Value::String(text.to_string()))
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` of the core schema (sign stripped).
fn is_core_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (!int.is_empty() || !frac.is_empty())
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
                && !(int.is_empty() && frac.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
        }
    };
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> Document {
        let (doc, errors) = parse(src);
        assert!(errors.is_empty(), "{errors:?}");
        doc.unwrap()
    }

    fn codes(src: &str) -> Vec<(&'static str, u32, u32)> {
        parse(src)
            .1
            .iter()
            .map(|e| (e.code, e.pos.line, e.pos.col))
            .collect()
    }

    #[test]
    fn keeps_positions_of_keys_and_values() {
        let doc = ok("a: 1\nb:\n  - x\n  - {c: 'd'}\n");
        assert_eq!(doc.locate("/a"), Pos { line: 1, col: 4 });
        assert_eq!(doc.locate_key("/a"), Pos { line: 1, col: 1 });
        assert_eq!(doc.locate("/b/1/c"), Pos { line: 4, col: 9 });
        assert_eq!(doc.locate("/b/1/zzz"), Pos { line: 4, col: 5 });
        assert_eq!(doc.value["b"][1]["c"], "d");
    }

    #[test]
    fn resolves_the_core_schema() {
        let doc = ok("a: yes\nb: 09:35\nc: 1.5\nd: -3\ne: ~\nf: True\ng: '1'\nh: 1e3\ni: 0x1F\n");
        assert_eq!(doc.value["a"], "yes");
        assert_eq!(doc.value["b"], "09:35");
        assert_eq!(doc.value["c"], 1.5);
        assert_eq!(doc.value["d"], -3);
        assert_eq!(doc.value["e"], Value::Null);
        assert_eq!(doc.value["f"], true);
        assert_eq!(doc.value["g"], "1");
        assert_eq!(doc.value["h"], 1000.0);
        assert_eq!(doc.value["i"], 31);
        assert_eq!(codes("a: .nan\n"), vec![("invalid-number", 1, 4)]);
    }

    #[test]
    fn duplicate_keys_are_errors_at_the_second_key() {
        assert_eq!(codes("a: 1\nb: 2\na: 3\n"), vec![("duplicate-key", 3, 1)]);
    }

    #[test]
    fn documents_must_be_single_mappings() {
        assert_eq!(codes(""), vec![("empty-document", 1, 1)]);
        assert_eq!(codes("# only a comment\n"), vec![("empty-document", 1, 1)]);
        assert_eq!(codes("- a\n- b\n"), vec![("not-a-mapping", 1, 1)]);
        assert_eq!(
            codes("a: 1\n---\nb: 2\n"),
            vec![("multiple-documents", 2, 1)]
        );
    }

    #[test]
    fn aliases_and_merge_keys_expand() {
        let doc = ok("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n");
        assert_eq!(doc.value["use"]["x"], 1);
        assert_eq!(doc.value["use"]["y"], 3);
        // The merged value points at the anchored original.
        assert_eq!(doc.locate("/use/x"), Pos { line: 1, col: 14 });
        assert_eq!(doc.locate("/use/y"), Pos { line: 4, col: 6 });
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut src = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for name in ['b', 'c', 'd', 'e', 'f', 'g'] {
            src.push_str(&format!(
                "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = name;
        }
        let (doc, errors) = parse(&src);
        assert!(doc.is_none());
        assert_eq!(errors[0].code, "too-many-nodes");
    }

    #[test]
    fn bom_and_crlf_keep_columns() {
        let doc = ok("\u{feff}a: 1\r\nb: x\r\n");
        assert_eq!(doc.locate("/b"), Pos { line: 2, col: 4 });
    }

    #[test]
    fn places_columns_inside_scalars() {
        let doc = ok("p: close > sma_20\nq: \"close > sma_20\"\nr: |\n  close >\n    sma_20\n");
        assert_eq!(doc.locate_in_scalar("/p", 8), Pos { line: 1, col: 12 });
        assert_eq!(doc.locate_in_scalar("/q", 8), Pos { line: 2, col: 13 });
        assert_eq!(doc.locate_in_scalar("/r", 10), Pos { line: 5, col: 5 });
    }

    #[test]
    fn syntax_errors_are_located() {
        let errors = parse("a: [1, 2\nb: 3\n").1;
        assert_eq!(errors[0].code, "yaml-syntax");
        assert_eq!(errors[0].pos.line, 2);
    }

    #[test]
    fn custom_tags_are_rejected() {
        assert_eq!(codes("a: !secret x\n"), vec![("yaml-tag", 1, 4)]);
        assert_eq!(ok("a: !!str 12\n").value["a"], "12");
    }
}
