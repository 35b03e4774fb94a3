//! Filter scanners as the `stock_picker` agent runs them: the universe's symbols that meet
//! every filter, ranked by `rank_by` (highest first), the top N kept.

use super::feed::SymbolFeed;
use super::layout::Layout;
use crate::config::scanner::Scanner;
use crate::expr::{self, Program, Resolution, Ty};
use crate::market::{IndicatorSpec, Timeframe};
use std::collections::BTreeMap;

/// A scanner compiled for picking.
#[derive(Clone, Debug)]
pub struct CompiledScanner {
    /// Scanner name.
    pub name: String,
    /// Timeframe the filters read.
    pub timeframe: Timeframe,
    /// Slot layout of the scanner's feeds (the indicators its expressions name).
    pub layout: Layout,
    filters: Vec<Program>,
    rank_by: Option<Program>,
    /// The scanner's own `top_n`.
    pub top_n: Option<u32>,
    /// Every candidate symbol.
    pub universe: Vec<String>,
}

impl CompiledScanner {
    /// Compiles `scanner`: every identifier of its filters that names an indicator output
    /// makes that indicator part of its feeds.
    ///
    /// # Errors
    /// The first expression error (a validated scanner has none).
    pub fn compile(name: &str, scanner: &Scanner) -> Result<CompiledScanner, String> {
        let mut specs: Vec<IndicatorSpec> = Vec::new();
        for source in scanner.filters.iter().chain(scanner.rank_by.iter()) {
            for token in source.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if let Some(spec) = IndicatorSpec::providing(token)
                    && !specs.contains(&spec)
                {
                    specs.push(spec);
                }
            }
        }
        let wanted = BTreeMap::from([(scanner.timeframe, (specs, 2usize))]);
        let layout = Layout::new(&wanted);
        let tf = scanner.timeframe;
        let mut resolver =
            |t: Option<Timeframe>, ident: &str| match layout.slot(t.unwrap_or(tf), ident) {
                Some(s) => Resolution::Slot(s),
                None => Resolution::Unknown(
                    "unknown-identifier",
                    format!("unknown identifier '{ident}'"),
                ),
            };
        let compile = |source: &str, ty: Ty, resolver: &mut dyn expr::Resolver| {
            expr::compile(source, ty, resolver).map_err(|e| {
                format!(
                    "scanner {name}: `{source}`: {}",
                    e.first().map(|e| e.message.as_str()).unwrap_or("invalid")
                )
            })
        };
        let filters = scanner
            .filters
            .iter()
            .map(|f| compile(f, Ty::Bool, &mut resolver))
            .collect::<Result<Vec<_>, _>>()?;
        let rank_by = scanner
            .rank_by
            .as_deref()
            .map(|r| compile(r, Ty::Number, &mut resolver))
            .transpose()?;
        Ok(CompiledScanner {
            name: name.to_string(),
            timeframe: tf,
            layout,
            filters,
            rank_by,
            top_n: scanner.top_n,
            universe: scanner.candidates().to_vec(),
        })
    }

    /// The symbols that meet every filter, best-ranked first, at most `top_n` (and at most
    /// the scanner's own `top_n`). A symbol whose values are not available yet does not
    /// pass; ties keep the universe's order.
    pub fn pick<'a>(
        &self,
        feeds: impl IntoIterator<Item = (&'a str, &'a SymbolFeed)>,
        top_n: u32,
    ) -> Vec<String> {
        let mut passed: Vec<(f64, usize, &str)> = Vec::new();
        for (i, (symbol, feed)) in feeds.into_iter().enumerate() {
            if !self.filters.iter().all(|f| f.eval_bool(feed) == Some(true)) {
                continue;
            }
            let score = match &self.rank_by {
                Some(r) => match r.eval_number(feed) {
                    Some(v) => v,
                    None => continue,
                },
                None => 0.0,
            };
            passed.push((score, i, symbol));
        }
        passed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let keep = self.top_n.map_or(top_n, |n| n.min(top_n)) as usize;
        passed
            .into_iter()
            .take(keep)
            .map(|(_, _, s)| s.to_string())
            .collect()
    }
}
