//! Expressions: what a rule may read, and compiling it where it is written.

use crate::config::finding::Reporter;
use crate::config::schema::suggestion;
use crate::expr::{self, Resolution, Ty};
use crate::market::{IndicatorSpec, Timeframe};
use std::collections::{BTreeMap, BTreeSet};

/// Bar fields every expression may read.
pub const BAR_FIELDS: [&str; 5] = ["open", "high", "low", "close", "volume"];

/// Names exit rules may read besides bar fields and indicators: the position's average
/// entry price and the number of bars it has been held.
pub const EXIT_FIELDS: [&str; 2] = ["entry_price", "bars_held"];

/// What an expression may read: indicators per timeframe and extra names.
pub(super) struct Available<'a> {
    /// The expression's own timeframe.
    pub own: Timeframe,
    /// Indicators computed upstream, per timeframe, with the id of the node computing each.
    pub per_tf: &'a BTreeMap<Timeframe, Vec<(IndicatorSpec, String)>>,
    /// Names the context adds (`entry_price`, `bars_held` in exit rules).
    pub extra: &'a [&'a str],
}

impl Available<'_> {
    /// Resolves `name` on `tf` (`None`: the expression's own timeframe).
    pub fn resolve(&self, tf: Option<Timeframe>, name: &str) -> Resolution {
        let tf_given = tf.is_some();
        let tf = tf.unwrap_or(self.own);
        let Some(specs) = self.per_tf.get(&tf) else {
            return Resolution::Unknown(
                "timeframe-not-provided",
                format!(
                    "'{}.{name}' reads the {tf} timeframe, which no upstream market_data node provides",
                    tf.expr_prefix()
                ),
            );
        };
        if BAR_FIELDS.contains(&name) || (!tf_given && self.extra.contains(&name)) {
            return Resolution::Slot(0);
        }
        let mut short_matches = 0;
        for (spec, _) in specs {
            if spec.outputs().iter().any(|o| o == name) {
                return Resolution::Slot(0);
            }
            if spec.short_outputs().contains(&name) {
                short_matches += 1;
            }
        }
        match short_matches {
            1 => return Resolution::Slot(0),
            n if n > 1 => {
                let qualified: Vec<String> = specs
                    .iter()
                    .filter(|(s, _)| s.short_outputs().contains(&name))
                    .filter_map(|(s, _)| {
                        let i = s.short_outputs().iter().position(|o| *o == name)?;
                        s.outputs().get(i).cloned()
                    })
                    .collect();
                return Resolution::Unknown(
                    "unknown-identifier",
                    format!(
                        "'{name}' is ambiguous: several indicators of that family are computed on {tf}; write one of {}",
                        qualified.join(", ")
                    ),
                );
            }
            _ => {}
        }
        if IndicatorSpec::providing(name).is_some() {
            let nodes: BTreeSet<&str> = specs.iter().map(|(_, node)| node.as_str()).collect();
            let hint = if nodes.is_empty() {
                String::new()
            } else {
                format!(
                    " (add it to the indicators of market_data node '{}')",
                    nodes.into_iter().collect::<Vec<_>>().join("', '")
                )
            };
            return Resolution::Unknown(
                "indicator-not-provided",
                format!(
                    "unknown identifier '{name}': no upstream market_data node computes it on {tf}{hint}"
                ),
            );
        }
        let mut known: Vec<String> = BAR_FIELDS.iter().map(|s| s.to_string()).collect();
        for (spec, _) in specs {
            known.extend(spec.outputs());
            known.extend(spec.short_outputs().iter().map(|s| s.to_string()));
        }
        if !tf_given {
            known.extend(self.extra.iter().map(|s| s.to_string()));
        }
        Resolution::Unknown(
            "unknown-identifier",
            format!("unknown identifier '{name}'{}", suggestion(name, &known)),
        )
    }
}

/// Compiles the expression at `pointer` and reports its errors inside the scalar. With
/// `available`, names are resolved against what the node may read; without it (the
/// upstream nodes are not known: a broken `needs`, a node that does not load) only the
/// syntax, functions and types are checked, every name being accepted.
pub(super) fn check_expr(
    r: &mut Reporter<'_>,
    pointer: &str,
    source: &str,
    want: Ty,
    available: Option<&Available<'_>>,
) {
    let result = match available {
        Some(available) => {
            let mut resolver = |tf: Option<Timeframe>, name: &str| available.resolve(tf, name);
            expr::compile(source, want, &mut resolver)
        }
        None => {
            let mut any = |_: Option<Timeframe>, _: &str| Resolution::Slot(0);
            expr::compile(source, want, &mut any)
        }
    };
    if let Err(errors) = result {
        for e in errors {
            r.error_in_scalar(e.code, pointer, e.offset, e.message);
        }
    }
}
