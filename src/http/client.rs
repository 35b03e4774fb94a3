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
    /// The daemon knows no pipeline or symbol by the name in the scope (404 `unknown_scope`):
    /// nothing was closed, resumed or halted. The message names the closest known names.
    #[error(
        "{addr}: unknown scope: {message}{}",
        known_hint(.requested, .known_pipelines, .known_symbols)
    )]
    UnknownScope {
        /// The address tried.
        addr: String,
        /// The scope that was sent.
        requested: Scope,
        /// The daemon's sentence.
        message: String,
        /// The pipelines the daemon knows.
        known_pipelines: Vec<String>,
        /// The symbols the daemon knows.
        known_symbols: Vec<String>,
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
    post_json(addr, token, "/v1/close", &body, scope).await
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
    post_json(addr, token, "/v1/resume", &body, scope).await
}

async fn post_json<T: Serialize>(
    addr: &str,
    token: &str,
    path: &str,
    body: &T,
    scope: &Scope,
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
    match tokio::time::timeout(CLIENT_TIMEOUT, exchange(addr, request, scope)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout {
            addr: addr.to_string(),
        }),
    }
}

async fn exchange(
    addr: &str,
    request: Request<Full<Bytes>>,
    scope: &Scope,
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
    if status.as_u16() == 404
        && code == "unknown_scope"
        && let Ok(v) = &parsed
    {
        let names = |kind: &str| -> Vec<String> {
            v.get("known")
                .and_then(|k| k.get(kind))
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        return Err(ClientError::UnknownScope {
            addr: addr.to_string(),
            requested: scope.clone(),
            message,
            known_pipelines: names("pipelines"),
            known_symbols: names("symbols"),
        });
    }
    Err(ClientError::Status {
        addr: addr.to_string(),
        status: status.as_u16(),
        code,
        message,
    })
}

/// At most this many known names are listed in full; past it, the closest ones.
const MAX_LISTED_NAMES: usize = 20;

/// How many of the closest names are shown when the list is long.
const CLOSEST_NAMES: usize = 5;

/// The part of an [`ClientError::UnknownScope`] message after the daemon's sentence: the
/// closest known name and the known names (all of them up to [`MAX_LISTED_NAMES`], else the
/// closest few and a count).
fn known_hint(requested: &Scope, pipelines: &[String], symbols: &[String]) -> String {
    let mut out = String::new();
    let mut section = |kind: &str, wanted: Option<&str>, names: &[String]| {
        if names.is_empty() {
            out.push_str(&format!("; the daemon knows no {kind}"));
            return;
        }
        let mut ranked: Vec<(usize, &String)> = names
            .iter()
            .map(|n| (wanted.map_or(0, |w| strsim::damerau_levenshtein(w, n)), n))
            .collect();
        ranked.sort();
        if let (Some(w), Some((d, best))) = (wanted, ranked.first())
            && *d <= (w.chars().count() / 3).max(2)
        {
            out.push_str(&format!("; did you mean '{best}'?"));
        }
        if names.len() <= MAX_LISTED_NAMES {
            let mut sorted: Vec<&String> = names.iter().collect();
            sorted.sort();
            let list: Vec<&str> = sorted.iter().map(|n| n.as_str()).collect();
            out.push_str(&format!("; known {kind}: {}", list.join(", ")));
        } else {
            let closest: Vec<&str> = ranked
                .iter()
                .take(CLOSEST_NAMES)
                .map(|(_, n)| n.as_str())
                .collect();
            out.push_str(&format!(
                "; {} known {kind}, the closest: {}",
                names.len(),
                closest.join(", ")
            ));
        }
    };
    match requested {
        Scope::Pipeline(p) => section("pipelines", Some(p), pipelines),
        Scope::Symbol(s) => section("symbols", Some(s), symbols),
        Scope::All => {
            section("pipelines", None, pipelines);
            section("symbols", None, symbols);
        }
    }
    out
}

/// The human summary of a `/v1/close` answer, as `ztraded close` prints it: the scope, one line
/// per position (`pipeline symbol quantity status [at price] [error]`), then the halts in force
/// after the close ([`describe_halts`]). An answer that is not a JSON object is printed as
/// JSON.
pub fn describe_close(answer: &serde_json::Value) -> String {
    let Some(fields) = answer.as_object() else {
        return pretty(answer);
    };
    let scope = fields.get("scope").map_or_else(String::new, describe_scope);
    let mut out = format!("emergency close of {scope}");
    match fields
        .get("positions")
        .and_then(serde_json::Value::as_array)
    {
        Some(positions) if positions.is_empty() => out.push_str(": no open positions\n"),
        Some(positions) => {
            let n = positions.len();
            out.push_str(&format!(
                ": {n} position{}\n",
                if n == 1 { "" } else { "s" }
            ));
            let rows: Vec<[String; 4]> = positions.iter().map(position_row).collect();
            let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
            let (w0, w1, w2) = (width(0), width(1), width(2));
            for [pipeline, symbol, quantity, rest] in &rows {
                let line = format!("  {pipeline:<w0$}  {symbol:<w1$}  {quantity:>w2$}  {rest}");
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
        None => out.push('\n'),
    }
    out.push_str(&describe_halts(answer));
    out
}

/// The human summary of a `/v1/resume` answer, as `ztraded resume` prints it: whether a halt
/// was cleared, then the halts still in force ([`describe_halts`]). An answer that is not a
/// JSON object is printed as JSON.
pub fn describe_resume(answer: &serde_json::Value) -> String {
    let Some(fields) = answer.as_object() else {
        return pretty(answer);
    };
    let scope = fields.get("scope").map_or_else(String::new, describe_scope);
    let mut out = match fields.get("resumed").and_then(serde_json::Value::as_bool) {
        Some(true) => format!("resumed {scope}: halt cleared\n"),
        Some(false) => format!("resumed {scope}: no halt was latched on it\n"),
        None => format!("resumed {scope}\n"),
    };
    out.push_str(&describe_halts(answer));
    out
}

/// The `halts` field of a close or resume answer (`[{"scope": <scope>, "reason": "..."}]`, the
/// halts latched after the action): `no halts` when empty, else one line per halt
/// (`  <scope>: <reason>`); when the daemon did not send the field, a line that says so.
pub fn describe_halts(answer: &serde_json::Value) -> String {
    let Some(halts) = answer.get("halts") else {
        return "halts: not reported by the daemon (`ztraded status` lists them)\n".to_string();
    };
    let Some(halts) = halts.as_array() else {
        return format!("halts: {}\n", compact(halts));
    };
    if halts.is_empty() {
        return "no halts\n".to_string();
    }
    let mut out = format!("halts in force ({}):\n", halts.len());
    for h in halts {
        let scope = h.get("scope").map_or_else(|| compact(h), describe_scope);
        match h.get("reason").and_then(serde_json::Value::as_str) {
            Some(reason) if !reason.is_empty() => out.push_str(&format!("  {scope}: {reason}\n")),
            _ => out.push_str(&format!("  {scope}\n")),
        }
    }
    out
}

/// `all`, `pipeline NAME` or `symbol SYMBOL` for a scope's JSON; other JSON as it is.
fn describe_scope(v: &serde_json::Value) -> String {
    serde_json::from_value::<Scope>(v.clone()).map_or_else(|_| compact(v), |s| s.to_string())
}

/// `[pipeline, symbol, quantity, "status [at price] [error]"]` of one position result.
fn position_row(p: &serde_json::Value) -> [String; 4] {
    let text = |k: &str| match p.get(k) {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let mut rest = text("status");
    let price = text("price");
    if !price.is_empty() {
        rest.push_str(&format!(" at {price}"));
    }
    let error = text("error");
    if !error.is_empty() {
        rest.push_str(&format!(": {error}"));
    }
    [text("pipeline"), text("symbol"), text("quantity"), rest]
}

fn compact(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn pretty(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}
