//! Semantic checks: what the JSON Schema cannot say, as a set of small `check_*` functions
//! per resource. References between resources, the DAG, expressions, cron, time zones,
//! clock times, broker/mode fit, secrets in settings, and the warnings for legal but
//! suspicious configs.
//!
//! The loader runs them (`load` → `checks`); they read a loaded [`ConfigSet`] and never
//! load anything themselves. A finding does not stop the checks of the rest of a file: a
//! pipeline that does not deserialize whole is checked node by node (see
//! [`pipeline::PipelineView`]).
//!
//! - [`settings`]: the merged settings and literal secrets in `ztraded.toml`;
//! - `pipeline`: a pipeline's symbols source, window, and the order of its checks;
//! - `refs`: scanner, risk policy, broker and LLM provider references, unused resources;
//! - `trigger`: trigger and schedule kinds, cron, intervals;
//! - `nodes`: the DAG and each node's configuration;
//! - `expressions`: what an expression may read, compiled where it is written;
//! - `scanner`: a scanner's symbols source, filters and signals;
//! - `risk`: a pipeline against its risk policy;
//! - `budget`: a pipeline's estimated LLM cost against its budget (a warning).

mod budget;
mod expressions;
mod nodes;
mod pipeline;
mod refs;
mod risk;
mod scanner;
pub mod settings;
mod trigger;

pub use expressions::{BAR_FIELDS, EXIT_FIELDS};
pub use settings::{SettingsReporter, check_settings, env_finding, literal_secrets};
pub use trigger::check_cron;

use super::finding::Finding;
use super::pipeline::Pipeline;
use super::set::{ConfigSet, Resource};

/// What every check may look at: the whole loaded set.
pub(crate) struct Ctx<'a> {
    /// The set being checked.
    pub set: &'a ConfigSet,
}

/// Runs every semantic check of the resources of a loaded set (the settings are checked
/// when they are loaded, see [`check_settings`]). Pipelines are checked on up to eight
/// threads when there are many of them.
pub fn check(set: &ConfigSet) -> Vec<Finding> {
    let mut out = Vec::new();
    let ctx = Ctx { set };
    let pipelines: Vec<&Resource<Pipeline>> = set.pipelines.values().collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads > 1 && pipelines.len() >= 32 {
        let chunk = pipelines.len().div_ceil(threads);
        let results: Vec<Vec<Finding>> = std::thread::scope(|s| {
            let handles: Vec<_> = pipelines
                .chunks(chunk)
                .map(|c| {
                    let ctx = &ctx;
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for p in c {
                            pipeline::check_pipeline(ctx, p, &mut out);
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        out.extend(results.into_iter().flatten());
    } else {
        for p in pipelines {
            pipeline::check_pipeline(&ctx, p, &mut out);
        }
    }
    for s in set.scanners.values() {
        scanner::check_scanner(s, &mut out);
    }
    refs::check_unused(&ctx, &mut out);
    out
}
