//! What an emergency close, a halt or a resume applies to.

use crate::config::common::{is_valid_name, is_valid_symbol};
use crate::metrics::ScopeKind;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The scope of an emergency close, a halt or a resume.
///
/// JSON: `"all"`, `{"pipeline": "aapl-momentum"}` or `{"symbol": "AAPL"}`. A pipeline name must
/// match `^[a-z0-9][a-z0-9-]{0,62}$` and a symbol the ticker pattern of the config
/// ([`crate::config::common::is_valid_symbol`]); anything else fails to deserialize.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "ScopeRepr", into = "ScopeRepr")]
pub enum Scope {
    /// Every pipeline and symbol.
    All,
    /// One pipeline, by name.
    Pipeline(String),
    /// One symbol, across every pipeline.
    Symbol(String),
}

/// The wire shape, before validation.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum ScopeRepr {
    All,
    Pipeline(String),
    Symbol(String),
}

/// A scope whose name or symbol does not match its pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Not a valid pipeline name.
    #[error("invalid pipeline name {0:?}: expected ^[a-z0-9][a-z0-9-]{{0,62}}$")]
    Pipeline(String),
    /// Not a valid symbol.
    #[error(
        "invalid symbol {0:?}: expected 1-20 characters A-Z, 0-9, '.', '/' or '-', \
         starting with a letter or digit"
    )]
    Symbol(String),
}

impl TryFrom<ScopeRepr> for Scope {
    type Error = ScopeError;
    fn try_from(r: ScopeRepr) -> Result<Scope, ScopeError> {
        match r {
            ScopeRepr::All => Ok(Scope::All),
            ScopeRepr::Pipeline(p) if is_valid_name(&p) => Ok(Scope::Pipeline(p)),
            ScopeRepr::Pipeline(p) => Err(ScopeError::Pipeline(p)),
            ScopeRepr::Symbol(s) if is_valid_symbol(&s) => Ok(Scope::Symbol(s)),
            ScopeRepr::Symbol(s) => Err(ScopeError::Symbol(s)),
        }
    }
}

impl From<Scope> for ScopeRepr {
    fn from(s: Scope) -> ScopeRepr {
        match s {
            Scope::All => ScopeRepr::All,
            Scope::Pipeline(p) => ScopeRepr::Pipeline(p),
            Scope::Symbol(s) => ScopeRepr::Symbol(s),
        }
    }
}

impl Scope {
    /// A pipeline scope, validated. Errors: [`ScopeError::Pipeline`].
    pub fn pipeline(name: impl Into<String>) -> Result<Scope, ScopeError> {
        Scope::try_from(ScopeRepr::Pipeline(name.into()))
    }

    /// A symbol scope, validated. Errors: [`ScopeError::Symbol`].
    pub fn symbol(symbol: impl Into<String>) -> Result<Scope, ScopeError> {
        Scope::try_from(ScopeRepr::Symbol(symbol.into()))
    }

    /// The halt key: `all`, `pipeline:<name>` or `symbol:<SYMBOL>`.
    pub fn key(&self) -> String {
        match self {
            Scope::All => "all".to_string(),
            Scope::Pipeline(p) => format!("pipeline:{p}"),
            Scope::Symbol(s) => format!("symbol:{s}"),
        }
    }

    /// The scope of a halt key ([`Scope::key`]'s inverse); `None` for anything else.
    pub fn from_key(key: &str) -> Option<Scope> {
        if key == "all" {
            return Some(Scope::All);
        }
        if let Some(p) = key.strip_prefix("pipeline:") {
            return Scope::pipeline(p).ok();
        }
        if let Some(s) = key.strip_prefix("symbol:") {
            return Scope::symbol(s).ok();
        }
        None
    }

    /// Whether the scope covers `pipeline` trading `symbol`.
    pub fn covers(&self, pipeline: &str, symbol: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Pipeline(p) => p == pipeline,
            Scope::Symbol(s) => s == symbol,
        }
    }

    /// The pipeline of a pipeline scope.
    pub fn pipeline_name(&self) -> Option<&str> {
        match self {
            Scope::Pipeline(p) => Some(p),
            _ => None,
        }
    }

    /// The symbol of a symbol scope.
    pub fn symbol_name(&self) -> Option<&str> {
        match self {
            Scope::Symbol(s) => Some(s),
            _ => None,
        }
    }

    /// The kind, for the `scope` label of metrics.
    pub fn kind(&self) -> ScopeKind {
        match self {
            Scope::All => ScopeKind::All,
            Scope::Pipeline(_) => ScopeKind::Pipeline,
            Scope::Symbol(_) => ScopeKind::Symbol,
        }
    }
}

impl fmt::Display for Scope {
    /// `all`, `pipeline aapl-momentum` or `symbol AAPL` (for logs and messages).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("all"),
            Scope::Pipeline(p) => write!(f, "pipeline {p}"),
            Scope::Symbol(s) => write!(f, "symbol {s}"),
        }
    }
}
