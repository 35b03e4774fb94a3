//! Scanner checks: the symbols source, filter and ranking expressions, signal parameters.

use super::expressions::{Available, check_expr};
use crate::config::finding::{Finding, Reporter};
use crate::config::scanner::{Scanner, SignalKind};
use crate::config::set::Resource;
use crate::expr::Ty;
use crate::market::{IndicatorSpec, Timeframe};
use std::collections::{BTreeMap, BTreeSet};

/// Exactly one of `tickers` and `universe`; filters and `rank_by` compile (any indicator
/// name is known: filters compute what they read); a signal's fast period is shorter than
/// its slow one.
pub(super) fn check_scanner(res: &Resource<Scanner>, out: &mut Vec<Finding>) {
    let Some(s) = &res.spec else { return };
    let mut r = Reporter {
        file: &res.file,
        doc: &res.doc,
        out,
    };
    match (&s.tickers, &s.universe) {
        (Some(_), Some(_)) => r.error(
            "symbols-source",
            "/universe",
            "set either `tickers` (a manual list) or `universe` (with filters), not both",
        ),
        (None, None) => r.error(
            "symbols-source",
            "",
            "a scanner needs `tickers` (a manual list) or `universe` (with filters)",
        ),
        _ => {}
    }
    // Indicators named in filters are computed on demand: any indicator name is known.
    let mut per_tf: BTreeMap<Timeframe, Vec<(IndicatorSpec, String)>> = BTreeMap::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    for source in s.filters.iter().chain(s.rank_by.iter()) {
        for token in source.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if let Some(spec) = IndicatorSpec::providing(token)
                && names.insert(spec.name())
            {
                per_tf
                    .entry(s.timeframe)
                    .or_default()
                    .push((spec, String::new()));
            }
        }
    }
    per_tf.entry(s.timeframe).or_default();
    let available = Available {
        own: s.timeframe,
        per_tf: &per_tf,
        extra: &[],
    };
    for (i, f) in s.filters.iter().enumerate() {
        check_expr(
            &mut r,
            &format!("/filters/{i}"),
            f,
            Ty::Bool,
            Some(&available),
        );
    }
    if let Some(rank) = &s.rank_by {
        check_expr(&mut r, "/rank_by", rank, Ty::Number, Some(&available));
    }
    for (i, g) in s.signals.iter().enumerate() {
        let pointer = format!("/signals/{i}/params");
        match &g.kind {
            SignalKind::GoldenCross(c) | SignalKind::DeathCross(c) if c.fast >= c.slow => {
                r.error(
                    "invalid-value",
                    &pointer,
                    format!(
                        "the fast period ({}) must be shorter than the slow one ({})",
                        c.fast, c.slow
                    ),
                );
            }
            SignalKind::MacdCross(c) if c.fast >= c.slow => {
                r.error(
                    "invalid-value",
                    &pointer,
                    format!(
                        "the fast period ({}) must be shorter than the slow one ({})",
                        c.fast, c.slow
                    ),
                );
            }
            _ => {}
        }
    }
}
