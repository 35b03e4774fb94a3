//! The client of `/v1/close` and `/v1/resume` used by `ztraded close` and `ztraded resume`:
//! one HTTP/1.1 request on a fresh connection (hyper's connection API, no pool, no proxy).

use super::auth::is_sendable_token;
use super::scope::{CloseRequest, ResumeRequest, Scope};
use axum::body::Bytes;
use axum::http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long a client call may take in all (connect, request, the daemon's work, response).
/// An emergency close cancels orders and closes positions at market, so it is generous.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest response body the client reads, in bytes.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Errors of [`client_close`] and [`client_resume`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection failed (daemon not running, wrong address).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No complete answer within [`CLIENT_TIMEOUT`].
    #[error("{addr}: no answer within {} s", CLIENT_TIMEOUT.as_secs())]
    Timeout {
        /// The address tried.
        addr: String,
    },
    /// The token has characters that cannot be sent in an `Authorization` header.
    #[error("the admin token must be visible ASCII without spaces")]
    InvalidToken,
    /// The HTTP exchange failed (connection closed midway, malformed response).
    #[error("{addr}: HTTP error: {source}")]
    Http {
        /// The address tried.
        addr: String,
        /// The hyper error.
        source: hyper::Error,
    },
    /// The daemon answered with an error status. `code` and `message` come from its JSON error
    /// body when it has one. A 404 from a running daemon means the admin token variable is
    /// unset there (the endpoints are disabled).
    #[error("{addr}: HTTP {status} {code}: {message}")]
    Status {
        /// The address tried.
        addr: String,
        /// The HTTP status code.
        status: u16,
        /// The `error` field of the body, or empty.
        code: String,
        /// The `message` field of the body, or the raw body.
        message: String,
    },
    /// A 2xx answer whose body is not JSON, or is too large.
    #[error("{addr}: invalid response: {message}")]
    InvalidResponse {
        /// The address tried.
        addr: String,
        /// What was wrong.
        message: String,
    },
}

/// `POST /v1/close` on the daemon at `addr` (`host:port`, as in `[http] listen`) with the bearer
/// `token`. Answers the daemon's JSON (each position's result). Errors: [`ClientError`].
pub async fn client_close(
    addr: &str,
    token: &str,
    scope: &Scope,
    reason: &str,
) -> Result<serde_json::Value, ClientError> {
    let body = CloseRequest {
        scope: scope.clone(),
        reason: reason.to_string(),
    };
    post_json(addr, token, "/v1/close", &body).await
}

/// `POST /v1/resume` on the daemon at `addr` with the bearer `token`. Answers the daemon's
/// JSON. Errors: [`ClientError`].
pub async fn client_resume(
    addr: &str,
    token: &str,
    scope: &Scope,
    reason: Option<&str>,
) -> Result<serde_json::Value, ClientError> {
    let body = ResumeRequest {
        scope: scope.clone(),
        reason: reason.map(str::to_string),
    };
    post_json(addr, token, "/v1/resume", &body).await
}

async fn post_json<T: Serialize>(
    addr: &str,
    token: &str,
    path: &str,
    body: &T,
) -> Result<serde_json::Value, ClientError> {
    if !is_sendable_token(token) {
        return Err(ClientError::InvalidToken);
    }
    let auth =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ClientError::InvalidToken)?;
    let host = HeaderValue::from_str(addr).map_err(|_| ClientError::InvalidResponse {
        addr: addr.to_string(),
        message: "the address cannot be sent as a Host header".to_string(),
    })?;
    let json = serde_json::to_vec(body).map_err(|e| ClientError::InvalidResponse {
        addr: addr.to_string(),
        message: format!("cannot encode the request: {e}"),
    })?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, host)
        .header(header::AUTHORIZATION, auth)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(json)))
        .map_err(|e| ClientError::InvalidResponse {
            addr: addr.to_string(),
            message: format!("cannot build the request: {e}"),
        })?;
    match tokio::time::timeout(CLIENT_TIMEOUT, exchange(addr, request)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout {
            addr: addr.to_string(),
        }),
    }
}

async fn exchange(
    addr: &str,
    request: Request<Full<Bytes>>,
) -> Result<serde_json::Value, ClientError> {
    let http_err = |source| ClientError::Http {
        addr: addr.to_string(),
        source,
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "admin client connection ended with an error");
        }
    });
    let response = sender.send_request(request).await.map_err(http_err)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| ClientError::InvalidResponse {
            addr: addr.to_string(),
            message: format!("cannot read the response body: {e}"),
        })?
        .to_bytes();
    driver.abort();
    let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&body);
    if status.is_success() {
        return parsed.map_err(|e| ClientError::InvalidResponse {
            addr: addr.to_string(),
            message: format!("the body is not JSON: {e}"),
        });
    }
    let field = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    let (code, message) = match &parsed {
        Ok(v) => (
            field(v, "error").unwrap_or_default(),
            field(v, "message").unwrap_or_else(|| v.to_string()),
        ),
        Err(_) => (String::new(), String::from_utf8_lossy(&body).into_owned()),
    };
    Err(ClientError::Status {
        addr: addr.to_string(),
        status: status.as_u16(),
        code,
        message,
    })
}
