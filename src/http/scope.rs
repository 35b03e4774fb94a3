//! What an emergency close or a resume applies to, and the request bodies that carry it.

pub use crate::domain::scope::{Scope, ScopeError};
use serde::{Deserialize, Serialize};

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
    use crate::metrics::ScopeKind;
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
