//! What a pipeline of a loaded config runs ([`PipelineSpec`]): compiled DAG, symbols and
//! stock picker, built the same way for the backtest and the daemon.

use crate::config::load::ConfigSet;
use crate::config::pipeline::{AgentConfig, Pipeline};
use crate::engine::core::PipelineSpec;
use crate::engine::picker::CompiledScanner;
use crate::engine::pipeline::CompiledPipeline;

/// The symbols a pipeline trades: its `symbols`, its scanner's tickers (or universe), or
/// its stock picker's universe.
pub fn pipeline_symbols(set: &ConfigSet, pipeline: &Pipeline) -> Vec<String> {
    if let Some(s) = &pipeline.symbols {
        return s.clone();
    }
    let scanner = pipeline.scanner.clone().or_else(|| {
        pipeline.nodes.iter().find_map(|n| match &n.agent {
            AgentConfig::StockPicker(c) => Some(c.scanner.clone()),
            _ => None,
        })
    });
    scanner
        .and_then(|s| set.scanners.get(&s))
        .and_then(|r| r.spec.as_ref())
        .map(|s| s.candidates().to_vec())
        .unwrap_or_default()
}

/// Compiles pipeline `name` of `set` with its risk policy, its symbols and its stock
/// picker's scanner.
///
/// # Errors
/// Why it cannot run (not in the set, does not load, does not compile, a missing scanner),
/// in words.
pub fn build(name: &str, set: &ConfigSet) -> Result<PipelineSpec, String> {
    let res = set.pipelines.get(name).ok_or("not in the revision")?;
    let spec = res.spec.as_ref().ok_or("does not load")?;
    let risk = spec
        .risk
        .as_ref()
        .and_then(|r| set.risk.get(r))
        .and_then(|r| r.spec.clone());
    let compiled =
        CompiledPipeline::compile(name, spec, risk.as_ref()).map_err(|e| e.to_string())?;
    let symbols = pipeline_symbols(set, spec);
    let picker = match compiled.stock_picker() {
        Some((scanner, top_n)) => {
            let s = set
                .scanners
                .get(scanner)
                .and_then(|r| r.spec.as_ref())
                .ok_or_else(|| format!("stock picker: no scanner '{scanner}'"))?;
            Some((CompiledScanner::compile(scanner, s)?, top_n))
        }
        None => None,
    };
    Ok(PipelineSpec {
        compiled,
        revision: set.short_revision().to_string(),
        symbols,
        picker,
    })
}
