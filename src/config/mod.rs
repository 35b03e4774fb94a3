//! The resource model: pipelines, scanners, risk policies and daemon settings; loading
//! with positions, JSON Schema, semantic checks.
//!
//! - [`load`] finds and parses the files ([`yaml`], [`toml_doc`]), checks them against the
//!   [`schema`], deserializes the typed resources ([`pipeline`], [`scanner`], [`risk`],
//!   [`settings`]) and runs the [`checks`], into a [`ConfigSet`] ([`set`]);
//! - [`finding`] is what validation reports, with the list of codes;
//! - [`semantic`] keeps the older paths of the checks.

pub mod checks;
pub mod common;
pub mod finding;
pub mod load;
pub mod pipeline;
pub mod risk;
pub mod scanner;
pub mod schema;
pub mod semantic;
pub mod set;
pub mod settings;
pub mod toml_doc;
pub mod yaml;

pub use finding::{Finding, Severity};
pub use set::{ConfigSet, Resource};

/// Most levels a config document may nest (mappings and sequences in YAML, tables and
/// arrays in TOML, brackets and operators in an expression). Loading, schema validation,
/// deserialization, the reconcile diff and expression compilation walk these trees
/// recursively, on threads with 2 MiB stacks in the daemon; a deeper document is refused
/// with a `too-deep` finding instead of overflowing a stack. Real configs nest fewer than
/// ten levels.
pub const MAX_DEPTH: usize = 256;
pub use pipeline::Pipeline;
pub use risk::RiskPolicy;
pub use scanner::Scanner;
pub use settings::Settings;

use std::fmt;
use std::str::FromStr;

/// The kinds of config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    /// `pipelines/<name>.yaml`.
    Pipeline = 0,
    /// `scanners/<name>.yaml`.
    Scanner = 1,
    /// `risk/<name>.yaml`.
    Risk = 2,
    /// `ztraded.toml`.
    Settings = 3,
}

impl ResourceKind {
    /// Every kind.
    pub const ALL: [ResourceKind; 4] = [
        ResourceKind::Pipeline,
        ResourceKind::Scanner,
        ResourceKind::Risk,
        ResourceKind::Settings,
    ];

    /// `pipeline`, `scanner`, `risk` or `settings` (the `ztraded schema` argument and the
    /// `schema/<kind>.json` file name).
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Pipeline => "pipeline",
            ResourceKind::Scanner => "scanner",
            ResourceKind::Risk => "risk",
            ResourceKind::Settings => "settings",
        }
    }

    /// The directory of the config tree that holds this kind (`None` for settings).
    pub fn dir(self) -> Option<&'static str> {
        match self {
            ResourceKind::Pipeline => Some("pipelines"),
            ResourceKind::Scanner => Some("scanners"),
            ResourceKind::Risk => Some("risk"),
            ResourceKind::Settings => None,
        }
    }

    /// The kind whose directory is named `dir`.
    pub fn from_dir(dir: &str) -> Option<ResourceKind> {
        ResourceKind::ALL.into_iter().find(|k| k.dir() == Some(dir))
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pipeline" | "pipelines" => Ok(ResourceKind::Pipeline),
            "scanner" | "scanners" => Ok(ResourceKind::Scanner),
            "risk" | "risk-policy" => Ok(ResourceKind::Risk),
            "settings" => Ok(ResourceKind::Settings),
            other => Err(format!(
                "unknown kind '{other}' (expected pipeline, scanner, risk or settings)"
            )),
        }
    }
}
