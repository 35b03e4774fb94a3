//! The `trade_updates` websocket: authenticate, listen, turn each update into events;
//! reconnect with capped backoff forever, and after each (re)connection catch up over REST
//! on what changed while the stream was down.

use super::{Inner, wire};
use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The stream task of one broker: runs until aborted.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut backoff = inner.options.reconnect_min;
    loop {
        let mut connected = false;
        let outcome = session(&inner, &mut connected).await;
        if connected {
            backoff = inner.options.reconnect_min;
        }
        match outcome {
            Ok(()) => {
                tracing::warn!(broker = %inner.name, "alpaca trade_updates stream closed; reconnecting")
            }
            Err(e) => {
                tracing::warn!(broker = %inner.name, error = %e, retry_ms = backoff.as_millis() as u64, "alpaca trade_updates stream down; reconnecting")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(inner.options.reconnect_max);
    }
}

fn text_of(msg: &Message) -> Option<&[u8]> {
    match msg {
        Message::Text(t) => Some(t.as_bytes()),
        Message::Binary(b) => Some(b),
        _ => None,
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads until a message of stream `want` (answering pings, skipping others).
async fn expect(ws: &mut Ws, want: &str, timeout: Duration) -> Result<wire::StreamMessage, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("no {want} message in {timeout:?}"))?
            .ok_or_else(|| "stream closed".to_string())?
            .map_err(|e| e.to_string())?;
        if let Message::Close(frame) = &msg {
            return Err(format!("closed by alpaca: {frame:?}"));
        }
        let Some(bytes) = text_of(&msg) else { continue };
        let parsed: wire::StreamMessage =
            serde_json::from_slice(bytes).map_err(|e| format!("bad {want} message: {e}"))?;
        if parsed.stream == want {
            return Ok(parsed);
        }
    }
}

async fn session(inner: &Arc<Inner>, connected: &mut bool) -> Result<(), String> {
    let timeout = inner.options.client.timeout;
    let (mut ws, _) = tokio::time::timeout(
        timeout,
        tokio_tungstenite::connect_async(inner.stream_url.as_str()),
    )
    .await
    .map_err(|_| format!("connecting to {} timed out", inner.stream_url))?
    .map_err(|e| format!("connecting to {}: {e}", inner.stream_url))?;
    let auth = serde_json::json!({
        "action": "auth",
        "key": inner.credentials.key_id,
        "secret": inner.credentials.secret_key,
    });
    ws.send(Message::text(auth.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    let reply = expect(&mut ws, "authorization", timeout).await?;
    let status = serde_json::from_value::<wire::Authorization>(reply.data)
        .map(|a| a.status)
        .unwrap_or_default();
    if status != "authorized" {
        tracing::error!(broker = %inner.name, status = %status, "alpaca trade_updates stream refused the keys");
        return Err(format!("stream authorization: {status}"));
    }
    let listen = serde_json::json!({"action": "listen", "data": {"streams": ["trade_updates"]}});
    ws.send(Message::text(listen.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut ws, "listening", timeout).await?;
    *connected = true;
    tracing::info!(broker = %inner.name, url = %inner.stream_url, "alpaca trade_updates stream connected");
    // Updates arriving meanwhile wait in the socket; the reported states dedup the overlap.
    match inner.catch_up().await {
        Ok(n) => tracing::debug!(broker = %inner.name, orders = n, "alpaca REST catch-up done"),
        Err(e) => return Err(format!("REST catch-up failed: {e}")),
    }
    while let Some(msg) = ws.next().await {
        let msg = msg.map_err(|e| e.to_string())?;
        if let Message::Close(frame) = &msg {
            return Err(format!("closed by alpaca: {frame:?}"));
        }
        let Some(bytes) = text_of(&msg) else { continue };
        handle(inner, bytes).await;
    }
    Ok(())
}

/// One stream message.
pub(crate) async fn handle(inner: &Arc<Inner>, bytes: &[u8]) {
    let msg: wire::StreamMessage = match serde_json::from_slice(bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(broker = %inner.name, error = %e, "unreadable alpaca stream message");
            return;
        }
    };
    if msg.stream != "trade_updates" {
        tracing::debug!(broker = %inner.name, stream = %msg.stream, "alpaca stream message ignored");
        return;
    }
    let update: wire::TradeUpdate = match serde_json::from_value(msg.data) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(broker = %inner.name, error = %e, "unreadable alpaca trade update");
            return;
        }
    };
    let ts = update
        .timestamp
        .or_else(|| update.order.changed_at())
        .unwrap_or_else(chrono::Utc::now);
    {
        let mut book = inner.book();
        book.last_event = Some(book.last_event.map_or(ts, |t| t.max(ts)));
    }
    match update.event.as_str() {
        "new" | "canceled" | "expired" | "rejected" => {
            inner.observe(&update.order, None);
        }
        "fill" | "partial_fill" => {
            let hint = match (update.qty, update.price) {
                (Some(q), Some(p)) if q > Decimal::ZERO => Some((q, p, ts)),
                _ => None,
            };
            inner.observe(&update.order, hint);
            let o = &update.order;
            let legs_pending = matches!(o.order_class.as_str(), "bracket" | "oto")
                && (o.legs.is_empty() || o.legs.iter().any(|l| l.status == wire::Status::Held));
            if legs_pending && inner.book().meta.contains_key(&o.client_order_id) {
                // The legs go live with the entry's fill: see them over REST.
                match inner.order_by_id(&o.id).await {
                    Ok(Some(w)) => {
                        inner.observe(&w, None);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(broker = %inner.name, error = %e, "bracket legs not fetched")
                    }
                }
            }
        }
        "replaced" => {
            inner.observe(&update.order, None);
            if let Some(next) = update.order.replaced_by.clone() {
                match inner.order_by_id(&next).await {
                    Ok(Some(w)) => {
                        inner.observe(&w, None);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(broker = %inner.name, error = %e, "replacement order not fetched")
                    }
                }
            }
        }
        other => {
            tracing::debug!(broker = %inner.name, event = %other, order = %update.order.id, "alpaca trade update ignored");
        }
    }
}
