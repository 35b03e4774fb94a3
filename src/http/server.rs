//! The axum router and its handlers (the rules are in the module doc of [`crate::http`]).

use super::auth::bearer_token;
use super::scope::{CloseRequest, ResumeRequest};
use super::{ControlError, HttpState};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, http::request::Parts};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// Longest time a `/v1/` request body may take to arrive once the headers are in; slower
/// bodies get 408 (a trickling client cannot hold a handler forever).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The router of the HTTP port, for [`super::serve`] or for embedding. The `/v1/` routes are
/// only present when `state.admin_token` is set. Peer addresses appear in the logs when the
/// service is made with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(state: HttpState) -> Router {
    let mut r = Router::new()
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/readyz", get(readyz).fallback(method_not_allowed));
    if state.admin_token.is_some() {
        r = r
            .route("/v1/close", post(close).fallback(method_not_allowed))
            .route("/v1/resume", post(resume).fallback(method_not_allowed));
    }
    r.fallback(not_found).with_state(state)
}

/// A JSON error answer: `{"error": code, "message": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `{"known": ...}` of an `unknown_scope` answer.
    known: Option<serde_json::Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            known: None,
        }
    }
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            ControlError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            ControlError::Failed(m) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
            }
            ControlError::UnknownScope {
                message,
                known_pipelines,
                known_symbols,
            } => ApiError {
                known: Some(json!({"pipelines": known_pipelines, "symbols": known_symbols})),
                ..ApiError::new(StatusCode::NOT_FOUND, "unknown_scope", message)
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "message": self.message});
        if let (Some(known), Some(fields)) = (self.known, body.as_object_mut()) {
            fields.insert("known".to_string(), known);
        }
        let body = Json(body);
        let mut res = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ztraded\""),
            );
        }
        res
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint; see the Allow header",
    )
}

async fn metrics(State(st): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        st.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
}

async fn readyz(State(st): State<HttpState>) -> Response {
    match st.readiness.get() {
        Ok(()) => (StatusCode::OK, Json(json!({"ready": true}))).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": reason})),
        )
            .into_response(),
    }
}

fn peer(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.to_string())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Steps 2 and 3 of the module doc: the bearer token, then the body within the size limit.
async fn admit(st: &HttpState, path: &str, req: Request) -> Result<(Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let Some(token) = &st.admin_token else {
        // The routes are not registered without a token; this is only a second lock.
        return Err(not_found().await);
    };
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let Some(presented) = presented else {
        tracing::warn!(peer = %peer(&parts), path, "admin request without a bearer token");
        return Err(ApiError::unauthorized(
            "an Authorization: Bearer <token> header is required",
        ));
    };
    if !token.matches(presented) {
        tracing::warn!(peer = %peer(&parts), path, "admin request with a wrong token");
        return Err(ApiError::unauthorized("wrong token"));
    }
    let limit = st.max_body_bytes;
    if content_length(&parts.headers).is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    let bytes = read_limited(body, limit).await?;
    Ok((parts, bytes))
}

/// Reads at most `limit` bytes of `body`, whatever its framing (length-delimited or chunked).
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::too_large(limit))
        }
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Step 4: the JSON body, with the path of the offending field in the message.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut *de)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    Ok(value)
}

async fn close(State(st): State<HttpState>, req: Request) -> Result<Response, ApiError> {
    let (parts, bytes) = admit(&st, "/v1/close", req).await?;
    let CloseRequest { scope, reason } = parse(&bytes)?;
    if reason.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid request body: reason: must not be blank",
        ));
    }
    tracing::warn!(peer = %peer(&parts), %scope, ?reason, "emergency close requested");
    st.metrics.emergency_close(scope.kind());
    let control = st.control.clone();
    let work = scope.clone();
    let done = detached(async move { control.close(work, reason).await }).await;
    match done {
        Ok(v) => Ok((StatusCode::OK, Json(v)).into_response()),
        Err(e) => {
            tracing::error!(%scope, error = %e, "emergency close failed");
            Err(e.into())
        }
    }
}

async fn resume(State(st): State<HttpState>, req: Request) -> Result<Response, ApiError> {
    let (parts, bytes) = admit(&st, "/v1/resume", req).await?;
    let ResumeRequest { scope, reason } = parse(&bytes)?;
    tracing::warn!(peer = %peer(&parts), %scope, ?reason, "resume requested");
    let control = st.control.clone();
    let work = scope.clone();
    match detached(async move { control.resume(work, reason).await }).await {
        Ok(v) => Ok((StatusCode::OK, Json(v)).into_response()),
        Err(e) => {
            tracing::error!(%scope, error = %e, "resume failed");
            Err(e.into())
        }
    }
}

/// Runs a control call in its own task: a client that disconnects, a connection evicted at the
/// cap or dropped at the end of the shutdown grace never cancels an emergency close or a
/// resume midway (only its answer is lost). A panic of the control becomes
/// [`ControlError::Failed`].
async fn detached(
    work: impl Future<Output = Result<serde_json::Value, ControlError>> + Send + 'static,
) -> Result<serde_json::Value, ControlError> {
    tokio::spawn(work).await.unwrap_or_else(|e| {
        Err(ControlError::Failed(format!(
            "the control task failed: {e}"
        )))
    })
}
