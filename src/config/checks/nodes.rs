//! The node DAG and each node's configuration: ids, `needs`, cycles, upstream market data,
//! timeframes, indicators, expressions, providers, the risk manager before a trade manager.
//!
//! The checks run on a [`PipelineView`], so they also cover a pipeline that does not
//! deserialize as a whole: the graph comes from the written ids and `needs`, each node that
//! loads on its own is checked in full, and the expressions of a node that does not load are
//! still compiled for syntax. When the graph is incomplete (a `needs` that names nothing, a
//! cycle), every market_data node of the pipeline counts as upstream, so a name no node
//! computes is still reported and none is reported falsely. When an upstream node does not
//! load, names are not resolved (only syntax, functions and types are checked).

use super::expressions::{Available, EXIT_FIELDS, check_expr};
use super::pipeline::{Needs, NodeView, PipelineView};
use super::{Ctx, refs};
use crate::config::finding::{Reporter, Severity};
use crate::config::pipeline::{AgentConfig, BiasConfig, Pipeline, StrategyConfig, Summary};
use crate::config::risk::RiskPolicy;
use crate::config::schema::suggestion;
use crate::expr::Ty;
use crate::market::{IndicatorSpec, Timeframe};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The expression fields of each agent type, with their type and the extra names they may
/// read (checked for syntax on a node that does not load).
const EXPRESSION_FIELDS: &[(&str, &str, Ty)] = &[
    ("price_trigger", "when", Ty::Bool),
    ("technical_trigger", "when", Ty::Bool),
    ("bias", "bullish", Ty::Bool),
    ("bias", "bearish", Ty::Bool),
    ("strategy", "long_entry", Ty::Bool),
    ("strategy", "long_exit", Ty::Bool),
    ("strategy", "stop_loss", Ty::Number),
    ("strategy", "target_1", Ty::Number),
    ("strategy", "target_2", Ty::Number),
    ("strategy", "short_entry", Ty::Bool),
    ("strategy", "short_exit", Ty::Bool),
    ("strategy", "short_stop_loss", Ty::Number),
    ("strategy", "short_target_1", Ty::Number),
    ("strategy", "short_target_2", Ty::Number),
    ("strategy", "entry_price", Ty::Number),
];

/// What the nodes upstream of one node provide.
struct Upstream {
    /// Indicators per timeframe, with the id of the node computing each.
    per_tf: BTreeMap<Timeframe, Vec<(IndicatorSpec, String)>>,
    /// The first timeframe of the first upstream market_data node.
    first_tf: Option<Timeframe>,
    /// Whether a market_data node is upstream.
    has_market_data: bool,
    /// Whether an upstream node did not load, so what it provides is not known.
    unknown: bool,
}

impl Upstream {
    fn of(nodes: &[NodeView<'_>], providers: &BTreeSet<usize>) -> Upstream {
        let mut up = Upstream {
            per_tf: BTreeMap::new(),
            first_tf: None,
            has_market_data: false,
            unknown: false,
        };
        for &a in providers {
            let v = &nodes[a];
            match &v.node {
                Some(node) => {
                    if let AgentConfig::MarketData(c) = &node.agent {
                        up.has_market_data = true;
                        if up.first_tf.is_none() {
                            up.first_tf = c.timeframes.first().copied();
                        }
                        for tf in &c.timeframes {
                            let specs = up.per_tf.entry(*tf).or_default();
                            for ind in &c.indicators {
                                if let Ok(spec) = ind.parse::<IndicatorSpec>()
                                    && !specs.iter().any(|(s, _)| *s == spec)
                                {
                                    specs.push((spec, node.id.clone()));
                                }
                            }
                        }
                    }
                }
                // A node that does not load, of an agent type that may provide data.
                None if matches!(v.agent, None | Some("market_data")) => up.unknown = true,
                None => {}
            }
        }
        up
    }

    /// Whether the names an expression on `tf` reads can be resolved.
    fn resolves(&self, tf: Timeframe) -> bool {
        self.has_market_data && !self.unknown && self.per_tf.contains_key(&tf)
    }
}

/// The parents of each node (`needs`, by default the previous node), reporting `needs`
/// that name nothing or the node itself. The second value is whether the graph is
/// complete.
fn edges(
    nodes: &[NodeView<'_>],
    index: &BTreeMap<&str, usize>,
    ids_known: bool,
    r: &mut Reporter<'_>,
) -> (Vec<Vec<usize>>, bool) {
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut complete = ids_known;
    for (i, v) in nodes.iter().enumerate() {
        match &v.needs {
            Needs::Previous => {
                if i > 0 {
                    parents[i].push(i - 1);
                }
            }
            Needs::Unreadable => complete = false,
            Needs::List(needs) => {
                for (j, need) in needs.iter().enumerate() {
                    // Not a string: the schema said so.
                    let Some(need) = *need else {
                        complete = false;
                        continue;
                    };
                    match index.get(need) {
                        Some(&k) if k == i => {
                            r.error(
                                "dag-cycle",
                                &format!("/nodes/{i}/needs/{j}"),
                                format!("node '{}' needs itself", v.id.unwrap_or_default()),
                            );
                            complete = false;
                        }
                        Some(&k) => parents[i].push(k),
                        None if ids_known => {
                            let known: Vec<String> = index.keys().map(|s| s.to_string()).collect();
                            r.error(
                                "unknown-need",
                                &format!("/nodes/{i}/needs/{j}"),
                                format!("no node has id '{need}'{}", suggestion(need, &known)),
                            );
                            complete = false;
                        }
                        // It may be the id of a node whose id does not load.
                        None => complete = false,
                    }
                }
            }
        }
    }
    (parents, complete)
}

/// Every check of the nodes of one pipeline. `head` is the pipeline's own fields when they
/// load; `policy` its risk policy when it exists and loads.
pub(super) fn check_nodes(
    ctx: &Ctx<'_>,
    view: &PipelineView<'_>,
    policy: Option<&RiskPolicy>,
    r: &mut Reporter<'_>,
    severity: Severity,
) {
    let nodes = &view.nodes;
    let head = view.head.as_deref();
    let n = nodes.len();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ids_known = true;
    for (i, v) in nodes.iter().enumerate() {
        let Some(id) = v.id else {
            ids_known = false;
            continue;
        };
        if let Some(first) = index.get(id) {
            r.error(
                "duplicate-node-id",
                &format!("/nodes/{i}/id"),
                format!("node id '{id}' is already used by node {first}"),
            );
        } else {
            index.insert(id, i);
        }
    }
    let (parents, mut graph_ok) = edges(nodes, &index, ids_known, r);
    if graph_ok && let Some(cycle) = find_cycle(&parents) {
        let names: Vec<&str> = cycle
            .iter()
            .map(|i| nodes[*i].id.unwrap_or_default())
            .collect();
        let first = cycle[0];
        r.error(
            "dag-cycle",
            &format!("/nodes/{first}/needs"),
            format!(
                "the nodes form a cycle: {} → {}",
                names.join(" → "),
                names[0]
            ),
        );
        graph_ok = false;
    }
    // Upstream nodes: the ancestors; every other node when the graph is incomplete.
    let providers: Vec<BTreeSet<usize>> = (0..n)
        .map(|i| {
            if !graph_ok {
                return (0..n).filter(|k| *k != i).collect();
            }
            let mut seen = BTreeSet::new();
            let mut stack = parents[i].clone();
            while let Some(k) = stack.pop() {
                if seen.insert(k) {
                    stack.extend(parents[k].iter().copied());
                }
            }
            seen
        })
        .collect();
    for (i, v) in nodes.iter().enumerate() {
        let up = Upstream::of(nodes, &providers[i]);
        match &v.node {
            Some(_) => check_node(
                ctx,
                view,
                i,
                &up,
                &providers[i],
                graph_ok,
                policy,
                r,
                severity,
            ),
            None => check_raw_node(view, i, &up, r),
        }
    }
    // The bar_close trigger's timeframe must be provided by some market_data node.
    let all_load = nodes
        .iter()
        .all(|v| v.node.is_some() || !matches!(v.agent, None | Some("market_data")));
    if let Some(bc) = head.and_then(|p| p.trigger.bar_close.as_ref())
        && all_load
    {
        let provided = nodes.iter().filter_map(|v| v.node.as_deref()).any(
            |n| matches!(&n.agent, AgentConfig::MarketData(c) if c.timeframes.contains(&bc.timeframe)),
        );
        if !provided {
            r.error(
                "timeframe-not-provided",
                "/trigger/bar_close/timeframe",
                format!(
                    "the trigger waits for {} bars, but no market_data node provides {}",
                    bc.timeframe, bc.timeframe
                ),
            );
        }
    }
}

/// Compiles `exprs` of node `i` on `tf`: against what is upstream when that is known,
/// for syntax only otherwise.
fn run_exprs(
    r: &mut Reporter<'_>,
    base: &str,
    up: &Upstream,
    tf: Option<Timeframe>,
    exprs: &[(&str, &Option<String>, Ty, &[&str])],
) {
    for (field, source, ty, extra) in exprs {
        let Some(source) = source else { continue };
        let pointer = format!("{base}/{field}");
        match tf.filter(|tf| up.resolves(*tf)) {
            Some(tf) => {
                let available = Available {
                    own: tf,
                    per_tf: &up.per_tf,
                    extra,
                };
                check_expr(r, &pointer, source, *ty, Some(&available));
            }
            None => check_expr(r, &pointer, source, *ty, None),
        }
    }
}

/// The checks of one node that loads.
#[allow(clippy::too_many_arguments)]
fn check_node(
    ctx: &Ctx<'_>,
    view: &PipelineView<'_>,
    i: usize,
    up: &Upstream,
    providers: &BTreeSet<usize>,
    graph_ok: bool,
    policy: Option<&RiskPolicy>,
    r: &mut Reporter<'_>,
    severity: Severity,
) {
    let Some(node) = view.nodes[i].node.as_deref() else {
        return;
    };
    let head: Option<&Pipeline> = view.head.as_deref();
    let base = format!("/nodes/{i}/config");
    let needs_data = |r: &mut Reporter<'_>| {
        if !up.has_market_data && !up.unknown {
            r.error("missing-market-data", &format!("/nodes/{i}/agent"), format!("a {} node needs an upstream market_data node (list it in `needs`, or put one before it)", node.kind().as_str()));
        }
    };
    // Whether an explicitly named timeframe is provided upstream (reported when not).
    let tf_provided = |r: &mut Reporter<'_>, pointer: &str, tf: Timeframe| {
        if up.has_market_data && !up.unknown && !up.per_tf.contains_key(&tf) {
            r.error("timeframe-not-provided", pointer, format!("no upstream market_data node provides the {tf} timeframe (add it to its `timeframes`)"));
            false
        } else {
            true
        }
    };
    // The timeframe of a node whose `timeframe` defaults to the first upstream one.
    let own_tf = |r: &mut Reporter<'_>, given: Option<Timeframe>| match given {
        Some(tf) => tf_provided(r, &format!("{base}/timeframe"), tf).then_some(tf),
        None => up.first_tf,
    };
    match &node.agent {
        AgentConfig::TimeTrigger(c) => {
            for (field, t) in [("after", &c.after), ("before", &c.before)] {
                if let Some(t) = t
                    && t.parse().is_none()
                {
                    r.error(
                        "invalid-clock-time",
                        &format!("{base}/{field}"),
                        format!(
                            "'{}' is not a time of day (HH:MM or HH:MM:SS, 00:00 to 23:59:59)",
                            t.0
                        ),
                    );
                }
            }
            if c.timezone.parse().is_none() {
                r.error(
                    "unknown-timezone",
                    &format!("{base}/timezone"),
                    format!("unknown time zone '{}'", c.timezone.0),
                );
            }
            if let (Some(a), Some(b)) = (&c.after, &c.before)
                && a.parse().is_some()
                && a.parse() == b.parse()
            {
                r.error(
                    "invalid-value",
                    &format!("{base}/before"),
                    format!(
                        "`after` and `before` are both {}: the gate never opens",
                        a.0
                    ),
                );
            }
        }
        AgentConfig::PriceTrigger(c) => {
            needs_data(r);
            let tf = own_tf(r, c.timeframe);
            run_exprs(
                r,
                &base,
                up,
                tf,
                &[("when", &Some(c.when.clone()), Ty::Bool, &[])],
            );
        }
        AgentConfig::TechnicalTrigger(c) => {
            needs_data(r);
            let tf = own_tf(r, c.timeframe);
            run_exprs(
                r,
                &base,
                up,
                tf,
                &[("when", &Some(c.when.clone()), Ty::Bool, &[])],
            );
        }
        AgentConfig::StockPicker(c) => {
            refs::check_picker_scanner(ctx, &c.scanner, &format!("{base}/scanner"), r, severity);
        }
        AgentConfig::MarketData(c) => {
            for (j, ind) in c.indicators.iter().enumerate() {
                if let Err(e) = ind.parse::<IndicatorSpec>() {
                    r.error(
                        "invalid-indicator",
                        &format!("{base}/indicators/{j}"),
                        format!("{}: {}", e.name, e.reason),
                    );
                }
            }
        }
        AgentConfig::Bias(BiasConfig::Rules(c)) => {
            needs_data(r);
            let tf = own_tf(r, c.timeframe);
            run_exprs(
                r,
                &base,
                up,
                tf,
                &[
                    ("bullish", &Some(c.bullish.clone()), Ty::Bool, &[]),
                    ("bearish", &c.bearish, Ty::Bool, &[]),
                ],
            );
        }
        AgentConfig::Bias(BiasConfig::Llm(c)) => {
            needs_data(r);
            refs::check_provider(ctx, &c.provider, &format!("{base}/provider"), r, severity);
            check_prompt_file(
                ctx,
                r,
                &base,
                c.prompt_file.as_deref(),
                c.prompt_text.as_deref(),
            );
            for (j, tf) in c.timeframes.iter().enumerate() {
                tf_provided(r, &format!("{base}/timeframes/{j}"), *tf);
            }
        }
        AgentConfig::Strategy(StrategyConfig::Rules(c)) => {
            needs_data(r);
            let tf =
                tf_provided(r, &format!("{base}/timeframe"), c.timeframe).then_some(c.timeframe);
            run_exprs(
                r,
                &base,
                up,
                tf,
                &[
                    ("long_entry", &c.long_entry, Ty::Bool, &[]),
                    ("long_exit", &c.long_exit, Ty::Bool, &EXIT_FIELDS),
                    ("stop_loss", &c.stop_loss, Ty::Number, &[]),
                    ("target_1", &c.target_1, Ty::Number, &[]),
                    ("target_2", &c.target_2, Ty::Number, &[]),
                    ("short_entry", &c.short_entry, Ty::Bool, &[]),
                    ("short_exit", &c.short_exit, Ty::Bool, &EXIT_FIELDS),
                    ("short_stop_loss", &c.short_stop_loss, Ty::Number, &[]),
                    ("short_target_1", &c.short_target_1, Ty::Number, &[]),
                    ("short_target_2", &c.short_target_2, Ty::Number, &[]),
                    ("entry_price", &c.entry_price, Ty::Number, &[]),
                ],
            );
            if c.long_entry.is_none() && c.short_entry.is_none() {
                r.error(
                    "no-entry-rule",
                    &base,
                    "a rules strategy needs `long_entry`, `short_entry` or both",
                );
            }
            // Without the pipeline's fields its risk policy is not known.
            if let Some(p) = head {
                let require_stop = policy.is_none_or(|p| p.trade.require_stop_loss);
                if require_stop && c.long_entry.is_some() && c.stop_loss.is_none() {
                    r.error("missing-stop-loss", &format!("{base}/long_entry"), "long entries need a `stop_loss` level: the risk policy requires a stop (require_stop_loss)");
                }
                if require_stop && c.short_entry.is_some() && c.short_stop_loss.is_none() {
                    r.error("missing-stop-loss", &format!("{base}/short_entry"), "short entries need a `short_stop_loss` level: the risk policy requires a stop (require_stop_loss)");
                }
                if c.short_entry.is_some()
                    && let Some(policy) = policy
                    && !policy.trade.allow_short
                {
                    r.warning("suspicious-config", &format!("{base}/short_entry"), format!("every short entry will be rejected: risk policy '{}' does not allow shorts (allow_short: false)", p.risk.as_deref().unwrap_or_default()));
                }
            }
        }
        AgentConfig::Strategy(StrategyConfig::Llm(c)) => {
            needs_data(r);
            refs::check_provider(ctx, &c.provider, &format!("{base}/provider"), r, severity);
            check_prompt_file(
                ctx,
                r,
                &base,
                c.prompt_file.as_deref(),
                c.prompt_text.as_deref(),
            );
            tf_provided(r, &format!("{base}/timeframe"), c.timeframe);
        }
        AgentConfig::RiskManager(_) => {}
        AgentConfig::TradeManager(_) => {
            let nodes = &view.nodes;
            let has_risk = providers
                .iter()
                .any(|a| nodes[*a].agent == Some("risk_manager"));
            let unknown = providers.iter().any(|a| nodes[*a].agent.is_none());
            if graph_ok && !has_risk && !unknown {
                r.error("missing-risk-manager", &format!("/nodes/{i}/agent"), "a trade_manager node needs an upstream risk_manager node: only risk-approved orders reach a broker");
            }
        }
        AgentConfig::Reporting(c) => {
            if c.summary == Summary::Llm {
                match &c.provider {
                    Some(provider) => refs::check_provider(
                        ctx,
                        provider,
                        &format!("{base}/provider"),
                        r,
                        severity,
                    ),
                    None => r.error("missing-field", &base, "summary: llm needs `provider`"),
                }
            }
        }
    }
}

/// What can be checked of a node that does not load (its other problems are reported by
/// the schema): indicator names, and the syntax of its expressions, whose names are
/// resolved against what is upstream when its timeframe is written and known.
fn check_raw_node(view: &PipelineView<'_>, i: usize, up: &Upstream, r: &mut Reporter<'_>) {
    let base = format!("/nodes/{i}/config");
    let Some(agent) = view.nodes[i].agent else {
        return;
    };
    let (file, doc) = (r.file, r.doc);
    let Some(Value::Object(config)) = doc.value.pointer(&base) else {
        return;
    };
    let rejected = |pointer: &str| view.schema_errors.iter().any(|p| p == pointer);
    let mut findings = Vec::new();
    let mut sub = Reporter {
        file,
        doc,
        out: &mut findings,
    };
    if agent == "market_data"
        && let Some(Value::Array(items)) = config.get("indicators")
    {
        for (j, item) in items.iter().enumerate() {
            let pointer = format!("{base}/indicators/{j}");
            if let Some(name) = item.as_str()
                && !rejected(&pointer)
                && let Err(e) = name.parse::<IndicatorSpec>()
            {
                sub.error(
                    "invalid-indicator",
                    &pointer,
                    format!("{}: {}", e.name, e.reason),
                );
            }
        }
    }
    let tf = config
        .get("timeframe")
        .and_then(|v| serde_json::from_value::<Timeframe>(v.clone()).ok())
        .or(up.first_tf);
    for &(kind, field, ty) in EXPRESSION_FIELDS {
        if kind != agent {
            continue;
        }
        let pointer = format!("{base}/{field}");
        if let Some(Value::String(source)) = config.get(field)
            && !rejected(&pointer)
        {
            let extra: &[&str] = if field.ends_with("_exit") {
                &EXIT_FIELDS
            } else {
                &[]
            };
            let source = Some(source.clone());
            run_exprs(&mut sub, &base, up, tf, &[(field, &source, ty, extra)]);
        }
    }
    r.out.extend(findings);
}

/// A cycle in the parent graph, as node indices in order, if there is one. Walks with an
/// explicit stack (a pipeline has at most 64 nodes, but the walk does not rely on it).
/// An LLM node's `prompt_file`: inside the config directory, readable UTF-8 of at most 64
/// KiB (`text`: what the loader read), with the market data placeholder.
fn check_prompt_file(
    ctx: &Ctx<'_>,
    r: &mut Reporter<'_>,
    base: &str,
    file: Option<&str>,
    text: Option<&str>,
) {
    let Some(file) = file else { return };
    let pointer = format!("{base}/prompt_file");
    let Some(text) = text else {
        let why = crate::config::load::prompt_file_text(&ctx.set.root, file)
            .err()
            .unwrap_or_else(|| format!("cannot read '{file}'"));
        r.error("prompt-file", &pointer, why);
        return;
    };
    if !text.contains("{{market}}") {
        r.warning(
            "prompt-file",
            &pointer,
            format!("'{file}' has no {{{{market}}}} placeholder: the model will not see the bars and indicators"),
        );
    }
}

fn find_cycle(parents: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = parents.len();
    let mut mark = vec![Mark::New; n];
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        // (node, index of the next parent to visit)
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&p) = parents[node].get(*next) {
                *next += 1;
                match mark[p] {
                    Mark::Active => {
                        let from = stack.iter().position(|(x, _)| *x == p).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|(x, _)| *x).collect();
                        cycle.reverse();
                        let min = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, v)| **v)
                            .map_or(0, |(k, _)| k);
                        cycle.rotate_left(min);
                        return Some(cycle);
                    }
                    Mark::New => {
                        mark[p] = Mark::Active;
                        stack.push((p, 0));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::find_cycle;

    #[test]
    fn finds_cycles_in_order_from_the_lowest_node() {
        // 0 <- 1 <- 2 <- 0 (each node lists its parents)
        assert_eq!(
            find_cycle(&[vec![2], vec![0], vec![1]]),
            Some(vec![0, 1, 2])
        );
        assert_eq!(find_cycle(&[vec![], vec![0], vec![1]]), None);
        assert_eq!(find_cycle(&[vec![], vec![1]]), Some(vec![1]));
    }
}
