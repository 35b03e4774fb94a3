//! The HTTP port: metrics, health and the emergency close.
//!
//! One listener (`[http] listen`, `127.0.0.1:9464` by default) serves:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /metrics` | 200, `text/plain; version=0.0.4`, [`Metrics::render`] |
//! | `GET /healthz` | 200 `ok` while the process serves |
//! | `GET /readyz` | 200 `{"ready":true}`, or 503 `{"ready":false,"reason":"..."}` ([`Readiness`]) |
//! | `POST /v1/close` | [`CloseRequest`] → [`Control::close`] → 200 with the control's JSON |
//! | `POST /v1/resume` | [`ResumeRequest`] → [`Control::resume`] → 200 with the control's JSON |
//!
//! The two `/v1/` endpoints exist only when an admin token is configured (the environment
//! variable named by `admin_token_env` is set and not empty, see [`AdminToken`]); otherwise they
//! answer 404 exactly like an unknown path. A `/v1/` request is checked in this order, and the
//! control is called only when every check passes:
//!
//! 1. method: anything but `POST` → 405 with `Allow: POST`;
//! 2. `Authorization: Bearer <token>`: missing, another scheme or a wrong token → 401 with
//!    `WWW-Authenticate: Bearer realm="ztraded"` (constant-time comparison, see [`auth`]); the
//!    body of an unauthenticated request is never read;
//! 3. size: a `Content-Length` over `max_body_bytes` → 413 before reading; a body without
//!    `Content-Length` (chunked) is read through a limit and gets 413 as soon as it passes it;
//!    a body that takes more than [`BODY_READ_TIMEOUT`] to arrive → 408;
//! 4. JSON: malformed, unknown fields, an unknown or invalid scope, a blank close reason → 400;
//! 5. the control: `Ok(json)` → 200 with it, a [`ControlError`] → 404 (`unknown_scope`, with
//!    the names the daemon knows under `known`), 409, 503 or 500. The control runs in a task
//!    of its own: a client that goes away does not cancel an emergency close midway.
//!
//! The `Content-Type` of a request is not checked (`curl -d` sends a form type): the bearer
//! token, which a browser cannot add to a cross-site request without a CORS preflight that
//! this server never grants, is what protects the endpoints. Every error answer is JSON:
//! `{"error": "<code>", "message": "<sentence>"}` with the codes `not_found`,
//! `method_not_allowed`, `unauthorized`, `payload_too_large`, `request_timeout`,
//! `bad_request`, `unknown_scope`, `conflict`, `unavailable` and `internal`; an
//! `unknown_scope` answer also has `"known": {"pipelines": [...], "symbols": [...]}`.
//!
//! Connections are bounded so that `/metrics` and `/v1/close` stay reachable under abuse
//! (`[http] header_read_timeout`, `idle_timeout`, `max_connections`; see [`Limits`]): a slow
//! request head is cut off, a quiet connection is closed, past the cap a new connection takes
//! the slot of a stalled or idle one (503 `unavailable` only when every connection is being
//! answered), and shutdown never waits more than [`SHUTDOWN_GRACE`] for clients.

pub mod auth;
mod client;
mod connections;
pub mod scope;
mod server;

pub use auth::{AdminToken, TokenError};
pub use client::{
    CLIENT_TIMEOUT, ClientError, client_close, client_resume, describe_close, describe_halts,
    describe_resume,
};
pub use connections::{Limits, SHUTDOWN_GRACE};
pub use scope::{CloseRequest, ResumeRequest, Scope, ScopeError};
pub use server::{BODY_READ_TIMEOUT, router};

use crate::config::settings::HttpSettings;
use crate::metrics::Metrics;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why a [`Control`] could not do what was asked; the HTTP status follows the variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The request cannot apply to the current state (an unknown pipeline, no halt to clear):
    /// 409 Conflict.
    #[error("{0}")]
    Conflict(String),
    /// The daemon cannot act now (not started, broker or store unreachable): 503.
    #[error("{0}")]
    Unavailable(String),
    /// Something failed midway: 500. The message should say what was done before the failure.
    #[error("{0}")]
    Failed(String),
    /// The scope names no pipeline or symbol the daemon knows (a typo must not latch a halt
    /// on a name that trades nothing while the real pipeline goes on): 404 with
    /// `{"error": "unknown_scope", "message": ..., "known": {"pipelines": [...],
    /// "symbols": [...]}}`.
    #[error("{message}")]
    UnknownScope {
        /// What was not found, as a sentence (`no pipeline named "aapl-momentun"`).
        message: String,
        /// The pipelines the daemon knows, sorted.
        known_pipelines: Vec<String>,
        /// The symbols the daemon knows (traded by a pipeline or held), sorted.
        known_symbols: Vec<String>,
    },
}

/// The daemon side of the emergency endpoints. The server calls it exactly once per accepted
/// request and never for a refused one.
#[async_trait::async_trait]
pub trait Control: Send + Sync {
    /// Emergency close of `scope`: cancel open orders in scope, close positions at market,
    /// latch a halt on the scope, record a manual intervention with `reason`. Answers the JSON
    /// sent back to the client (each position's result).
    async fn close(&self, scope: Scope, reason: String) -> Result<serde_json::Value, ControlError>;

    /// Clears the halt latched on `scope`. Answers the JSON sent back to the client.
    async fn resume(
        &self,
        scope: Scope,
        reason: Option<String>,
    ) -> Result<serde_json::Value, ControlError>;
}

/// Whether the daemon is ready to serve (`GET /readyz`): not ready, with a reason, until the
/// daemon calls [`Readiness::set_ready`] (after the store connects and the first reconcile
/// succeeds). Backed by a [`watch`] channel, so the daemon may also wait for changes.
#[derive(Debug)]
pub struct Readiness {
    /// `None` when ready, else the reason why not.
    state: watch::Sender<Option<String>>,
}

impl Readiness {
    /// Not ready, because of `reason` (e.g. `"starting: store not connected"`).
    pub fn new(reason: impl Into<String>) -> Readiness {
        Readiness {
            state: watch::Sender::new(Some(reason.into())),
        }
    }

    /// Marks the daemon ready.
    pub fn set_ready(&self) {
        self.state.send_replace(None);
    }

    /// Marks the daemon not ready, with the reason `/readyz` reports.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        self.state.send_replace(Some(reason.into()));
    }

    /// `Ok(())` when ready, else the reason.
    pub fn get(&self) -> Result<(), String> {
        match self.state.borrow().as_ref() {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }

    /// A receiver that sees every change: `None` when ready, else the reason why not.
    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.state.subscribe()
    }
}

/// Everything the handlers need. Cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    /// Rendered on `GET /metrics`; `/v1/close` counts `ztraded_emergency_closes_total` here.
    pub metrics: Arc<Metrics>,
    /// Does the emergency work.
    pub control: Arc<dyn Control>,
    /// Answered on `GET /readyz`.
    pub readiness: Arc<Readiness>,
    /// `None`: the `/v1/` endpoints do not exist (404).
    pub admin_token: Option<AdminToken>,
    /// Largest accepted request body, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Connection limits: header and idle timeouts, the connection cap, the shutdown grace.
    pub limits: Limits,
}

impl HttpState {
    /// The state for `settings`: reads the admin token from the environment variable named by
    /// `settings.admin_token_env` now (once; later changes of the variable are not seen).
    /// Errors: [`HttpError::Token`] when the variable holds an unusable value,
    /// [`HttpError::InvalidSetting`] for a zero timeout or connection cap.
    pub fn from_settings(
        settings: &HttpSettings,
        metrics: Arc<Metrics>,
        control: Arc<dyn Control>,
        readiness: Arc<Readiness>,
    ) -> Result<HttpState, HttpError> {
        let limits = Limits::from_settings(settings)?;
        let admin_token = AdminToken::from_env(&settings.admin_token_env)?;
        if admin_token.is_none() {
            tracing::info!(
                var = %settings.admin_token_env,
                "admin token variable unset or empty: /v1/close and /v1/resume are disabled"
            );
        }
        Ok(HttpState {
            metrics,
            control,
            readiness,
            admin_token,
            max_body_bytes: usize::try_from(settings.max_body_bytes).unwrap_or(usize::MAX),
            limits,
        })
    }
}

/// Errors of the HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("http: cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The admin token variable is unusable.
    #[error("http: {0}")]
    Token(#[from] TokenError),
    /// A setting of `[http]` is out of range.
    #[error("ztraded.toml: [http] {key}: {message}")]
    InvalidSetting {
        /// The key in `[http]`.
        key: &'static str,
        /// What is wrong with its value.
        message: String,
    },
    /// Accepting or serving connections failed.
    #[error("http: serving failed: {0}")]
    Serve(std::io::Error),
}

/// Binds `settings.listen` (`host:port`; a host name is resolved). Errors: [`HttpError::Bind`].
pub async fn bind(settings: &HttpSettings) -> Result<TcpListener, HttpError> {
    TcpListener::bind(settings.listen.as_str())
        .await
        .map_err(|source| HttpError::Bind {
            addr: settings.listen.clone(),
            source,
        })
}

/// Serves the router on `listener` until `shutdown` completes, with the connection limits of
/// `state.limits` (header and idle timeouts, the connection cap with eviction; see
/// [`Limits`]). Once `shutdown` completes: stops accepting, drops the connections that are not
/// answering a request, lets the answers in progress finish for at most
/// `state.limits.shutdown_grace`, then drops what is left and returns. Errors: none once the
/// listener is bound (a failing accept is logged and retried); the `Result` is kept for
/// [`HttpError::Serve`].
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            %addr,
            admin = state.admin_token.is_some(),
            max_connections = state.limits.max_connections,
            "http listening"
        );
    }
    let limits = state.limits;
    connections::serve_router(listener, router(state), limits, shutdown).await
}
