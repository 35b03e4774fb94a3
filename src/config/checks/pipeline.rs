//! Pipeline checks: the symbols source, references, trigger, window, nodes and loss limits,
//! on a [`PipelineView`] so that a pipeline that does not deserialize whole is still
//! checked wherever it can be.

use super::{Ctx, budget, nodes, refs, risk, trigger};
use crate::config::finding::{Finding, Reporter, Severity};
use crate::config::pipeline::{Node, Pipeline};
use crate::config::schema;
use crate::config::set::Resource;
use serde_json::Value;
use std::borrow::Cow;

/// A node's `needs` as written.
pub(super) enum Needs<'a> {
    /// Not written: the previous node.
    Previous,
    /// The ids listed (`None` for an item that is not a string).
    List(Vec<Option<&'a str>>),
    /// Not a list.
    Unreadable,
}

/// One node as the checks see it.
pub(super) struct NodeView<'a> {
    /// Its id, when it is a string.
    pub id: Option<&'a str>,
    /// Its `needs`.
    pub needs: Needs<'a>,
    /// Its agent type as written, when it is a string.
    pub agent: Option<&'a str>,
    /// The typed node, when it deserializes on its own.
    pub node: Option<Cow<'a, Node>>,
}

/// A pipeline as the checks see it: the typed pipeline when it deserialized, else its own
/// fields (when they load without the nodes) and each node separately.
pub(super) struct PipelineView<'a> {
    /// The pipeline's fields. When the pipeline did not deserialize whole, its `nodes` are
    /// empty here: use [`PipelineView::nodes`].
    pub head: Option<Cow<'a, Pipeline>>,
    /// The nodes, in the order written.
    pub nodes: Vec<NodeView<'a>>,
    /// Whether the pipeline is enabled (`enabled: false` makes dangling references
    /// warnings).
    pub enabled: bool,
    /// JSON pointers of the values the schema rejected.
    pub schema_errors: &'a [String],
}

impl<'a> PipelineView<'a> {
    /// The view of a loaded pipeline resource.
    pub fn of(res: &'a Resource<Pipeline>) -> PipelineView<'a> {
        if let Some(p) = &res.spec {
            return PipelineView {
                nodes: p
                    .nodes
                    .iter()
                    .map(|n| NodeView {
                        id: Some(n.id.as_str()),
                        needs: match &n.needs {
                            None => Needs::Previous,
                            Some(list) => {
                                Needs::List(list.iter().map(|s| Some(s.as_str())).collect())
                            }
                        },
                        agent: Some(n.kind().as_str()),
                        node: Some(Cow::Borrowed(n)),
                    })
                    .collect(),
                enabled: p.enabled,
                head: Some(Cow::Borrowed(p)),
                schema_errors: &res.schema_errors,
            };
        }
        let value = &res.doc.value;
        let bad = &res.schema_errors;
        let mut fields = schema::without(value, bad);
        if let Value::Object(map) = &mut fields {
            map.insert("nodes".into(), Value::Array(Vec::new()));
        }
        let head: Option<Pipeline> = serde_json::from_value(fields).ok();
        let nodes = match value.get("nodes") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| node_view(i, item, bad))
                .collect(),
            _ => Vec::new(),
        };
        PipelineView {
            enabled: head.as_ref().map_or_else(
                || {
                    value
                        .get("enabled")
                        .and_then(Value::as_bool)
                        .unwrap_or(true)
                },
                |p| p.enabled,
            ),
            head: head.map(Cow::Owned),
            nodes,
            schema_errors: bad,
        }
    }
}

/// The view of node `i` written as `item`, deserialized without the values the schema
/// rejected.
fn node_view<'a>(i: usize, item: &'a Value, bad: &[String]) -> NodeView<'a> {
    let prefix = format!("/nodes/{i}");
    let inside: Vec<String> = bad
        .iter()
        .filter_map(|p| p.strip_prefix(&prefix))
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .map(str::to_string)
        .collect();
    let node = if inside.iter().any(String::is_empty) {
        None
    } else {
        serde_json::from_value::<Node>(schema::without(item, &inside)).ok()
    };
    let needs = match item.get("needs") {
        None | Some(Value::Null) => Needs::Previous,
        Some(Value::Array(list)) => Needs::List(list.iter().map(Value::as_str).collect()),
        Some(_) => Needs::Unreadable,
    };
    NodeView {
        id: item.get("id").and_then(Value::as_str),
        needs,
        agent: item.get("agent").and_then(Value::as_str),
        node: node.map(Cow::Owned),
    }
}

/// Every check of one pipeline.
pub(super) fn check_pipeline(ctx: &Ctx<'_>, res: &Resource<Pipeline>, out: &mut Vec<Finding>) {
    if !res.doc.value.is_object() {
        return;
    }
    let view = PipelineView::of(res);
    let mut r = Reporter {
        file: &res.file,
        doc: &res.doc,
        out,
    };
    let severity = if view.enabled {
        Severity::Error
    } else {
        Severity::Warning
    };
    check_symbols_source(&view, &mut r);
    let head = view.head.as_deref();
    let policy = head
        .and_then(|p| p.risk.as_ref())
        .and_then(|name| ctx.set.risk.get(name))
        .and_then(|r| r.spec.as_ref());
    if let Some(p) = head {
        refs::check_scanner_ref(ctx, p, &mut r, severity);
        refs::check_risk_ref(ctx, p, &mut r, severity);
        if p.risk.is_none()
            && let Some(i) = view
                .nodes
                .iter()
                .position(|n| n.agent == Some("risk_manager"))
        {
            r.error("missing-risk-policy", &format!("/nodes/{i}/agent"), "a risk_manager node needs the pipeline's `risk` policy; name one with `risk: <name>`");
        }
        refs::check_broker(ctx, p, &mut r, severity);
        check_window(p, &mut r);
    }
    trigger::check_trigger(head, &mut r);
    nodes::check_nodes(ctx, &view, policy, &mut r, severity);
    if let Some(p) = head {
        risk::check_loss_limits(ctx, p, policy, &mut r);
    }
    budget::check_llm_budget(ctx, res, &mut r);
}

/// Exactly one of `scanner` and `symbols` (or a stock_picker node choosing the symbols).
/// Presence in the document, not in the typed value: a value the schema rejected was
/// there, so "neither" would be a second, misleading finding.
fn check_symbols_source(view: &PipelineView<'_>, r: &mut Reporter<'_>) {
    let present = |pointer: &str| r.doc.value.pointer(pointer).is_some();
    match (present("/scanner"), present("/symbols")) {
        (true, true) => r.error(
            "symbols-source",
            "/symbols",
            "set either `scanner` or `symbols`, not both",
        ),
        (false, false) => {
            let stock_picker = view
                .nodes
                .iter()
                .any(|n| matches!(n.agent, Some("stock_picker") | None));
            if !stock_picker {
                r.error("symbols-source", "", "the pipeline trades nothing: set `scanner` or `symbols` (or pick symbols with a stock_picker node)");
            }
        }
        _ => {}
    }
}

/// The trading window: clock times, `end` after `start`, a known time zone.
fn check_window(p: &Pipeline, r: &mut Reporter<'_>) {
    let Some(w) = &p.window else { return };
    let start = w.start.parse();
    let end = w.end.parse();
    if start.is_none() {
        r.error(
            "invalid-clock-time",
            "/window/start",
            format!(
                "'{}' is not a time of day (HH:MM or HH:MM:SS, 00:00 to 23:59:59)",
                w.start.0
            ),
        );
    }
    if end.is_none() {
        r.error(
            "invalid-clock-time",
            "/window/end",
            format!(
                "'{}' is not a time of day (HH:MM or HH:MM:SS, 00:00 to 23:59:59)",
                w.end.0
            ),
        );
    }
    if let (Some(s), Some(e)) = (start, end)
        && s >= e
    {
        r.error(
            "invalid-value",
            "/window/end",
            format!(
                "the window ends ({}) before or when it starts ({})",
                w.end.0, w.start.0
            ),
        );
    }
    if w.timezone.parse().is_none() {
        r.error(
            "unknown-timezone",
            "/window/timezone",
            format!("unknown time zone '{}'", w.timezone.0),
        );
    }
}
