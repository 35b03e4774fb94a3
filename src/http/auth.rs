//! The admin bearer token of `/v1/close` and `/v1/resume`.
//!
//! The token is read once, at startup, from the environment variable named by
//! `[http] admin_token_env`, and only its SHA-256 digest is kept. A presented token is hashed
//! and the two 32-byte digests are compared with [`subtle::ConstantTimeEq`]: the comparison
//! takes the same time whatever the position of the first differing byte, and since both sides
//! are always 32 bytes it does not reveal the length of the real token either (the time to hash
//! the presented token depends only on what the client itself sent).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A configured admin token (its SHA-256 digest; the token itself is not kept).
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// The admin token variable holds something that is not a usable token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The variable's value is not valid Unicode.
    #[error("environment variable {var}: the admin token is not valid UTF-8")]
    NotUnicode {
        /// The variable's name.
        var: String,
    },
    /// The value has characters a client cannot send in an `Authorization` header.
    #[error(
        "environment variable {var}: the admin token must be visible ASCII without spaces \
         (RFC 6750 token characters)"
    )]
    InvalidCharacters {
        /// The variable's name.
        var: String,
    },
}

/// Whether `token` can be sent as `Authorization: Bearer <token>`: visible ASCII, no space
/// (a superset of RFC 6750's b64token, so randomly generated hex or base64 tokens pass).
pub fn is_sendable_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

impl AdminToken {
    /// A token from its text; `None` when `token` is empty (endpoints disabled).
    /// Errors: [`TokenError::InvalidCharacters`] (with `var` as the variable's name).
    pub fn new(token: &str, var: &str) -> Result<Option<AdminToken>, TokenError> {
        if token.is_empty() {
            return Ok(None);
        }
        if !is_sendable_token(token) {
            return Err(TokenError::InvalidCharacters {
                var: var.to_string(),
            });
        }
        Ok(Some(AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }))
    }

    /// Reads the token from the environment variable `var`. Unset or empty: `Ok(None)`, and
    /// the admin endpoints answer 404. Errors: [`TokenError`] when the value is not valid
    /// Unicode or has characters that cannot be sent in a header.
    pub fn from_env(var: &str) -> Result<Option<AdminToken>, TokenError> {
        match std::env::var(var) {
            Ok(token) => AdminToken::new(&token, var),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(TokenError::NotUnicode {
                var: var.to_string(),
            }),
        }
    }

    /// Whether `presented` is the token, in constant time (see the module doc).
    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        d.ct_eq(&self.digest).into()
    }
}

/// The credentials of an `Authorization` header value: `Bearer <token>`, the scheme
/// case-insensitive (RFC 7235 §2.1), one or more spaces before the token. `None` when the header
/// uses another scheme or has no token.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, rest) = header_value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_matches(' ');
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_token() {
        let t = AdminToken::new("s3cr3t-token", "V").unwrap().unwrap();
        assert!(t.matches("s3cr3t-token"));
        for wrong in [
            "",
            "s3cr3t-toke",
            "s3cr3t-token ",
            "S3CR3T-TOKEN",
            "s3cr3t-tokenX",
        ] {
            assert!(!t.matches(wrong), "{wrong:?} matched");
        }
    }

    #[test]
    fn empty_means_disabled_and_spaces_are_refused() {
        assert!(AdminToken::new("", "V").unwrap().is_none());
        assert_eq!(
            AdminToken::new("a b", "V").unwrap_err(),
            TokenError::InvalidCharacters { var: "V".into() }
        );
        assert!(AdminToken::new("tok\n", "V").is_err());
    }

    #[test]
    fn from_env_unset_is_disabled() {
        assert!(
            AdminToken::from_env("ZTRADED_TEST_SURELY_UNSET_TOKEN_VAR_4711")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn debug_does_not_show_the_digest() {
        let t = AdminToken::new("abc", "V").unwrap().unwrap();
        assert_eq!(format!("{t:?}"), "AdminToken(<redacted>)");
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
