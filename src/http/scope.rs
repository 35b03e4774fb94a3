//! What an emergency close or a resume applies to, and the request bodies that carry it.

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

/// Body of `POST /v1/close`: `{"scope": ..., "reason": "..."}`. The reason is required and must
/// not be blank: it is recorded with the manual intervention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    /// What to close.
    pub scope: Scope,
    /// Why, in the operator's words.
    pub reason: String,
}

/// Body of `POST /v1/resume`: `{"scope": ..., "reason": "..."}` with an optional reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    /// Which halt to clear.
    pub scope: Scope,
    /// Why, in the operator's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_shapes_round_trip() {
        for (value, scope) in [
            (json!("all"), Scope::All),
            (
                json!({"pipeline": "aapl-momentum"}),
                Scope::Pipeline("aapl-momentum".into()),
            ),
            (json!({"symbol": "BRK.B"}), Scope::Symbol("BRK.B".into())),
        ] {
            let parsed: Scope = serde_json::from_value(value.clone()).unwrap();
            assert_eq!(parsed, scope);
            assert_eq!(serde_json::to_value(&scope).unwrap(), value);
        }
    }

    #[test]
    fn invalid_scopes_are_refused() {
        for bad in [
            json!("everything"),
            json!("All"),
            json!({"pipeline": "Has Caps"}),
            json!({"pipeline": ""}),
            json!({"symbol": "aapl"}),
            json!({"symbol": "AAPL", "pipeline": "p"}),
            json!({"portfolio": "x"}),
            json!({"pipeline": 3}),
            json!(null),
        ] {
            assert!(
                serde_json::from_value::<Scope>(bad.clone()).is_err(),
                "accepted {bad}"
            );
        }
        let err = serde_json::from_value::<Scope>(json!({"symbol": "aapl"})).unwrap_err();
        assert!(err.to_string().contains("invalid symbol \"aapl\""), "{err}");
    }

    #[test]
    fn requests_refuse_unknown_fields_and_need_a_close_reason() {
        assert!(serde_json::from_value::<CloseRequest>(json!({"scope": "all"})).is_err());
        assert!(
            serde_json::from_value::<CloseRequest>(json!({"scope": "all", "reason": "x", "y": 1}))
                .is_err()
        );
        let r: ResumeRequest = serde_json::from_value(json!({"scope": "all"})).unwrap();
        assert_eq!(r.reason, None);
        assert_eq!(Scope::pipeline("p-1").unwrap().kind(), ScopeKind::Pipeline);
        assert!(Scope::symbol("A B").is_err());
    }
}
