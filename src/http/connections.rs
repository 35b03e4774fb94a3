//! The connection layer of the HTTP port: accepting, the connection cap, eviction, the header
//! and idle timeouts, and a shutdown that no client can hold up.
//!
//! The emergency endpoint must stay reachable however the port is abused, so:
//!
//! - **Header read timeout** ([`Limits::header_read_timeout`], hyper's own timer): a request
//!   head must be complete that long after the connection opened or after the previous
//!   answer on it was sent. A client trickling its headers a byte at a time is disconnected.
//! - **Idle timeout** ([`Limits::idle_timeout`]): a connection on which no byte moved in either
//!   direction for that long, while no handler is working on one of its requests, is closed
//!   (a client that stopped reading its answer). A handler that takes longer (an emergency
//!   close waiting on a broker) is never cut off by it.
//! - **Connection cap** ([`Limits::max_connections`]): past the cap a new connection takes the
//!   slot of a connection that no handler is working on: first the oldest one that has not
//!   completed a request head (stalled or trickling clients), then the one that has been
//!   quiet longest (a kept-alive scraper between two scrapes, a client not reading its
//!   answer). A fresh client therefore always gets in while stalled clients fill the slots.
//!   Only when every slot has a handler running does a new connection get
//!   `503 {"error": "unavailable", ...}` with `Retry-After: 1` and `Connection: close`.
//! - **Shutdown**: when the shutdown future completes the listener is closed, connections with
//!   no request being answered are dropped at once, the others finish their current answer
//!   (without keep-alive) for at most [`Limits::shutdown_grace`], and whatever is left is then
//!   dropped, so [`super::serve`] returns within the grace whatever the clients do.
//!
//! Evictions and refusals are logged at `warn` (at most one line per 10 s, with counts), each
//! timed-out or evicted connection at `debug`.

use super::HttpError;
use crate::config::settings::HttpSettings;
use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tokio::time::Instant;

/// How long, after the shutdown future completes, requests being answered may take to finish
/// before their connections are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Largest request head (request line and headers) a connection may buffer, in bytes; a larger
/// one gets 431. hyper's own default (about 400 KiB) would let the connections at the cap hold
/// hundreds of MiB of half-sent headers.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most `503` answers being written at once; past it a refused connection is closed without
/// an answer (each writer holds a descriptor for up to [`REFUSAL_WRITE_TIMEOUT`]).
const MAX_REFUSAL_WRITERS: usize = 64;

/// Longest time spent writing a `503` to a refused connection and waiting for the client to
/// close its side.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Shortest interval between two `warn` lines about evictions and refusals.
const PRESSURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The connection limits of the HTTP port (see the module doc for what each does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest time a request head may take to arrive (from the connection's opening or the
    /// end of the previous answer). Not zero.
    pub header_read_timeout: Duration,
    /// Longest time a connection may stay with no byte moving while no handler works on it.
    /// Not zero.
    pub idle_timeout: Duration,
    /// Most connections open at once. At least 1.
    pub max_connections: usize,
    /// Longest drain of the answers in progress once shutdown starts.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    /// The defaults of `[http]`: 5 s, 60 s, 512 connections, and [`SHUTDOWN_GRACE`].
    fn default() -> Limits {
        Limits::from_settings(&HttpSettings::default())
            .unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }
}

impl Limits {
    /// The limits of `[http]` (`header_read_timeout`, `idle_timeout`, `max_connections`), with
    /// [`SHUTDOWN_GRACE`]. Errors: [`HttpError::InvalidSetting`] for a zero duration or a zero
    /// connection cap.
    pub fn from_settings(settings: &HttpSettings) -> Result<Limits, HttpError> {
        let nonzero = |name: &'static str, d: Duration| {
            if d.is_zero() {
                Err(HttpError::InvalidSetting {
                    key: name,
                    message: "must be longer than 0s".to_string(),
                })
            } else {
                Ok(d)
            }
        };
        let header_read_timeout =
            nonzero("header_read_timeout", settings.header_read_timeout.std())?;
        let idle_timeout = nonzero("idle_timeout", settings.idle_timeout.std())?;
        if settings.max_connections == 0 {
            return Err(HttpError::InvalidSetting {
                key: "max_connections",
                message: "must be at least 1".to_string(),
            });
        }
        Ok(Limits {
            header_read_timeout,
            idle_timeout,
            max_connections: usize::try_from(settings.max_connections).unwrap_or(usize::MAX),
            shutdown_grace: SHUTDOWN_GRACE,
        })
    }
}

/// What the accept loop and a connection's task share about one connection. Times are
/// milliseconds since the server's `epoch`.
struct ConnState {
    epoch: Instant,
    accepted_ms: u64,
    /// Last time a byte was read or written, or a handler started or ended.
    last_activity_ms: AtomicU64,
    /// Request heads completed on this connection.
    requests: AtomicU64,
    /// Handlers running (0 or 1 on HTTP/1.1; a counter so a drop order never underflows).
    handling: AtomicUsize,
    /// Answers whose body is still being sent.
    responding: AtomicUsize,
}

impl ConnState {
    fn new(epoch: Instant) -> ConnState {
        let now = ms_since(epoch);
        ConnState {
            epoch,
            accepted_ms: now,
            last_activity_ms: AtomicU64::new(now),
            requests: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
            responding: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        self.last_activity_ms
            .store(ms_since(self.epoch), Ordering::Relaxed);
    }

    fn last_activity(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed))
    }

    fn is_handling(&self) -> bool {
        self.handling.load(Ordering::Acquire) > 0
    }

    fn is_busy(&self) -> bool {
        self.is_handling() || self.responding.load(Ordering::Acquire) > 0
    }

    /// Eviction order: lower goes first. Connections that never completed a request head go
    /// before the others, oldest accepted first; the others by their last activity.
    fn eviction_key(&self) -> (bool, u64) {
        if self.requests.load(Ordering::Relaxed) == 0 {
            (false, self.accepted_ms)
        } else {
            (true, self.last_activity_ms.load(Ordering::Relaxed))
        }
    }
}

fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Counts one running handler (or one answer being sent) while alive.
struct Busy {
    conn: Arc<ConnState>,
    responding: bool,
}

impl Busy {
    fn handling(conn: &Arc<ConnState>) -> Busy {
        conn.requests.fetch_add(1, Ordering::Relaxed);
        conn.handling.fetch_add(1, Ordering::AcqRel);
        conn.touch();
        Busy {
            conn: Arc::clone(conn),
            responding: false,
        }
    }

    fn responding(conn: &Arc<ConnState>) -> Busy {
        conn.responding.fetch_add(1, Ordering::AcqRel);
        Busy {
            conn: Arc::clone(conn),
            responding: true,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let counter = if self.responding {
            &self.conn.responding
        } else {
            &self.conn.handling
        };
        counter.fetch_sub(1, Ordering::AcqRel);
        self.conn.touch();
    }
}

/// An answer's body that marks its connection as responding until hyper has sent it all (and
/// drops it).
struct TrackedBody {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A TCP stream that records when bytes move.
struct TrackedIo {
    stream: TcpStream,
    conn: Arc<ConnState>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.touch();
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.conn.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.conn.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// One open connection, as the accept loop sees it.
struct Live {
    conn: Arc<ConnState>,
    abort: AbortHandle,
}

/// Counts of evictions and refusals since the last `warn` line.
struct Pressure {
    last_log: Option<Instant>,
    evicted: u64,
    refused: u64,
    max_connections: usize,
}

impl Pressure {
    fn note(&mut self, evicted: bool) {
        if evicted {
            self.evicted += 1;
        } else {
            self.refused += 1;
        }
        let due = self
            .last_log
            .is_none_or(|t| t.elapsed() >= PRESSURE_LOG_INTERVAL);
        if due {
            tracing::warn!(
                max_connections = self.max_connections,
                evicted = self.evicted,
                refused = self.refused,
                "http: connection limit reached (evicted: idle or stalled connections closed \
                 for new ones; refused: answered 503, every connection busy)"
            );
            self.last_log = Some(Instant::now());
            self.evicted = 0;
            self.refused = 0;
        }
    }
}

/// Serves `router` on `listener` with `limits` until `shutdown` completes (see the module doc).
pub(super) async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let epoch = Instant::now();
    let (stop_tx, _) = watch::channel(false);
    let refusals = Arc::new(Semaphore::new(MAX_REFUSAL_WRITERS));
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut live: HashMap<Id, Live> = HashMap::new();
    let mut pressure = Pressure {
        last_log: None,
        evicted: 0,
        refused: 0,
        max_connections: limits.max_connections,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = tasks.join_next_with_id() => reap(&mut live, done),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    while let Some(done) = tasks.try_join_next_with_id() {
                        reap(&mut live, done);
                    }
                    if live.len() >= limits.max_connections {
                        if let Some(id) = victim(&live) {
                            evict(&mut live, id);
                            pressure.note(true);
                        } else {
                            refuse(stream, &refusals, limits.max_connections);
                            pressure.note(false);
                            continue;
                        }
                    }
                    let conn = Arc::new(ConnState::new(epoch));
                    let task = serve_connection(
                        stream,
                        peer,
                        Arc::clone(&conn),
                        router.clone(),
                        limits,
                        stop_tx.subscribe(),
                    );
                    let abort = tasks.spawn(task);
                    live.insert(abort.id(), Live { conn, abort });
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or another resource error: free one
                    // descriptor for the client waiting in the backlog if a connection can
                    // go, and back off briefly either way.
                    tracing::error!(error = %e, open = live.len(), "http: accept failed");
                    if let Some(id) = victim(&live) {
                        evict(&mut live, id);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = tasks.len();
    if open > 0 {
        tracing::info!(
            open,
            grace_ms = u64::try_from(limits.shutdown_grace.as_millis()).unwrap_or(u64::MAX),
            "http: shutting down, finishing the answers in progress"
        );
    }
    let deadline = Instant::now() + limits.shutdown_grace;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(done)) => log_task_end(done),
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    dropped = tasks.len(),
                    "http: connections still answering after the shutdown grace are dropped"
                );
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
    Ok(())
}

fn reap(live: &mut HashMap<Id, Live>, done: Result<(Id, ()), JoinError>) {
    let id = match &done {
        Ok((id, ())) => *id,
        Err(e) => e.id(),
    };
    live.remove(&id);
    log_task_end(done.map(|_| ()));
}

fn log_task_end(done: Result<(), JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "http: a connection task panicked");
    }
}

/// The connection to close for a new one: no handler running on it, lowest
/// [`ConnState::eviction_key`].
fn victim(live: &HashMap<Id, Live>) -> Option<Id> {
    live.iter()
        .filter(|(_, l)| !l.conn.is_handling())
        .min_by_key(|(_, l)| l.conn.eviction_key())
        .map(|(id, _)| *id)
}

fn evict(live: &mut HashMap<Id, Live>, id: Id) {
    if let Some(l) = live.remove(&id) {
        tracing::debug!(
            requests = l.conn.requests.load(Ordering::Relaxed),
            "http: connection evicted for a new one"
        );
        l.abort.abort();
    }
}

/// Answers 503 on a connection past the cap, in the background, within
/// [`REFUSAL_WRITE_TIMEOUT`]; with too many such answers under way, just closes it.
fn refuse(stream: TcpStream, writers: &Arc<Semaphore>, max_connections: usize) {
    let Ok(permit) = Arc::clone(writers).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(
            REFUSAL_WRITE_TIMEOUT,
            write_refusal(stream, max_connections),
        )
        .await;
    });
}

async fn write_refusal(mut stream: TcpStream, max_connections: usize) -> io::Result<()> {
    let body = serde_json::json!({
        "error": "unavailable",
        "message": format!(
            "the HTTP port is at its limit of {max_connections} connections and every one is \
             busy answering a request; retry shortly"
        ),
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await?;
    // Read what the client sent until it closes: closing with unread bytes would reset the
    // connection and could destroy the answer before the client reads it.
    let mut sink = [0u8; 1024];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connection: HTTP/1.1 with the header read timeout, the idle watchdog, and the shutdown
/// signal.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    conn: Arc<ConnState>,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(TrackedIo {
        stream,
        conn: Arc::clone(&conn),
    });
    let inner = TowerToHyperService::new(router);
    let service_conn = Arc::clone(&conn);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let handling = Busy::handling(&service_conn);
        let answer = hyper::service::Service::call(&inner, req);
        let conn = Arc::clone(&service_conn);
        async move {
            let response = answer.await?;
            let responding = Busy::responding(&conn);
            drop(handling);
            Ok::<_, std::convert::Infallible>(response.map(|inner| TrackedBody {
                inner,
                _busy: responding,
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let http = builder.serve_connection(io, service);
    let mut http = std::pin::pin!(http);
    let idle = idle_expired(&conn, limits.idle_timeout);
    let mut idle = std::pin::pin!(idle);
    let mut draining = false;
    loop {
        tokio::select! {
            served = http.as_mut() => {
                if let Err(e) = served {
                    if e.is_timeout() {
                        tracing::debug!(%peer, "http: request head not received in time, connection closed");
                    } else {
                        tracing::debug!(%peer, error = %e, "http: connection ended with an error");
                    }
                }
                return;
            }
            () = &mut idle => {
                tracing::debug!(%peer, "http: idle connection closed");
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !draining => {
                if !conn.is_busy() {
                    return;
                }
                draining = true;
                http.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Completes when no byte has moved on `conn` for `idle` while no handler runs on it.
async fn idle_expired(conn: &ConnState, idle: Duration) {
    loop {
        let deadline = conn.last_activity() + idle;
        if Instant::now() < deadline {
            tokio::time::sleep_until(deadline).await;
        } else if conn.is_handling() {
            tokio::time::sleep(idle).await;
        } else {
            return;
        }
    }
}
