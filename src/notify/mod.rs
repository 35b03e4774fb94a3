//! Notifications: the events a trader and an SRE want to be told about (fills, stops and
//! targets hit, halts, emergency closes, refused revisions, failed pipelines, daily loss
//! limits, broker drift), sent to the `[notify.<name>]` sinks of the settings — a JSON
//! webhook, a Slack incoming webhook, or a Telegram bot.
//!
//! Trading never waits for a notification: [`Notifier::send`] puts it on each subscribed
//! sink's bounded queue and returns; one task per sink delivers its queue in order, with
//! retries and exponential backoff (1 s, 2 s, 4 s, … at most 60 s, or the receiver's
//! `Retry-After`) on connection errors, timeouts, HTTP 429 and 5xx. A notification that
//! finds its sink's queue full, whose retries run out, or that the receiver refuses (another
//! 4xx) is dropped and logged. Every notification a sink should get ends in
//! `ztraded_notifications_total{sink,result}` with `result` `delivered` or `dropped`.
//!
//! What each sink receives, per notification:
//!
//! | kind | request |
//! | --- | --- |
//! | `webhook` | `POST <url>`, `Content-Type: application/json`, body `{"event", "at" (RFC 3339, UTC), "title", "text", "pipeline", "symbol", "details"}` (`pipeline`, `symbol` null when not about one) |
//! | `slack` | `POST <url>` with `{"text": "*<title>*\n<text>"}` (Slack's incoming-webhook format) |
//! | `telegram` | `POST <api_url>/bot<token>/sendMessage` with `{"chat_id", "text", "disable_web_page_preview": true}`; delivered when the answer is `{"ok": true, ...}` |
//!
//! A sink whose environment variables are not set is not started (a warning at start); what
//! it would have got is counted as dropped, so an alert on drops sees the mistake.

use crate::config::settings::{Delivery, NotifyEvent, NotifySettings};
use crate::metrics::Metrics;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// One thing to tell. `event` is what the sink subscribed to (see [`Notifier::send`]).
#[derive(Clone, Debug, Serialize)]
pub struct Notification {
    /// The event.
    pub event: NotifyEvent,
    /// When it happened, Unix seconds (the engine's clock: simulated in a replay).
    pub at: i64,
    /// One line, e.g. `fill: buy 10 AAPL at 187.20 USD`.
    pub title: String,
    /// More lines (the reason, the pipeline, the result).
    pub text: String,
    /// The pipeline it is about, if one.
    pub pipeline: Option<String>,
    /// The symbol it is about, if one.
    pub symbol: Option<String>,
    /// Machine-readable details (the fill, the halt, the close answer, the findings).
    pub details: Value,
}

/// Where a sink's requests go (secrets resolved from the environment).
#[derive(Clone)]
enum Target {
    Webhook { url: String },
    Slack { url: String },
    Telegram { url: String, chat_id: String },
}

struct Sink {
    name: String,
    events: Vec<NotifyEvent>,
    /// `None`: not started (its variables are not set); `Some(None)` after [`Notifier::close`].
    tx: Mutex<Option<mpsc::Sender<Arc<Notification>>>>,
}

/// The daemon's notification sinks (see the module documentation). Cheap to share; send
/// from anywhere, it never blocks.
pub struct Notifier {
    sinks: Vec<Sink>,
    metrics: Option<Arc<Metrics>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field(
                "sinks",
                &self.sinks.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Notifier {
    /// Starts one delivery task per sink of `settings` (call it inside the tokio runtime),
    /// reading URLs, tokens and chat ids through `env` (the process environment in the
    /// daemon). Counts in `metrics` (`ztraded_notifications_total`, a zero series per sink
    /// and result from the start). A sink whose variables are missing or empty is logged and not
    /// started; its notifications are counted as dropped.
    pub fn start(
        settings: &BTreeMap<String, NotifySettings>,
        env: impl Fn(&str) -> Option<String>,
        metrics: Option<Arc<Metrics>>,
    ) -> Notifier {
        crate::install_tls_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("ztraded/", env!("CARGO_PKG_VERSION")))
            .build();
        let mut sinks = Vec::new();
        let mut tasks = Vec::new();
        for (name, s) in settings {
            let delivery = s.delivery();
            if let Some(m) = &metrics {
                m.notification_sink(name);
            }
            let var = |v: &str| {
                env(v)
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
            };
            let target = match s {
                NotifySettings::Webhook(w) => var(&w.url_env)
                    .map(|url| Target::Webhook { url })
                    .ok_or_else(|| w.url_env.clone()),
                NotifySettings::Slack(w) => var(&w.url_env)
                    .map(|url| Target::Slack { url })
                    .ok_or_else(|| w.url_env.clone()),
                NotifySettings::Telegram(t) => match (var(&t.bot_token_env), var(&t.chat_id_env)) {
                    (Some(token), Some(chat_id)) => Ok(Target::Telegram {
                        url: format!("{}/bot{token}/sendMessage", t.api_url.trim_end_matches('/')),
                        chat_id,
                    }),
                    (None, _) => Err(t.bot_token_env.clone()),
                    (_, None) => Err(t.chat_id_env.clone()),
                },
            };
            let tx = match (target, &client) {
                (Ok(target), Ok(client)) => {
                    let (tx, rx) = mpsc::channel(delivery.queue.max(1));
                    let worker = Worker {
                        sink: name.clone(),
                        target,
                        client: client.clone(),
                        delivery: delivery.clone(),
                        metrics: metrics.clone(),
                    };
                    tasks.push(tokio::spawn(worker.run(rx)));
                    info!(sink = %name, kind = s.kind(), events = delivery.events.len(), "notifications on");
                    Some(tx)
                }
                (Err(variable), _) => {
                    warn!(sink = %name, kind = s.kind(), %variable, "notification sink not started: the environment variable is not set; its notifications are dropped");
                    None
                }
                (_, Err(e)) => {
                    warn!(sink = %name, error = %e, "notification sink not started: no HTTP client");
                    None
                }
            };
            sinks.push(Sink {
                name: name.clone(),
                events: delivery.events,
                tx: Mutex::new(tx),
            });
        }
        Notifier {
            sinks,
            metrics,
            tasks: Mutex::new(tasks),
        }
    }

    /// Whether any sink takes one of `events` (to skip building a notification nobody
    /// gets).
    pub fn wants(&self, events: &[NotifyEvent]) -> bool {
        self.sinks
            .iter()
            .any(|s| events.iter().any(|e| s.events.contains(e)))
    }

    /// Queues `n` for every sink that takes one of `candidates`, as the first candidate
    /// the sink takes (so a stop fill reaches a sink once: as `stop_hit` where it is
    /// subscribed, else as `fill`). Never waits: a full queue drops the notification for
    /// that sink (logged, counted).
    pub fn send(&self, candidates: &[NotifyEvent], n: Notification) {
        let mut shared: BTreeMap<NotifyEvent, Arc<Notification>> = BTreeMap::new();
        for sink in &self.sinks {
            let Some(&event) = candidates.iter().find(|e| sink.events.contains(e)) else {
                continue;
            };
            let note = shared
                .entry(event)
                .or_insert_with(|| Arc::new(Notification { event, ..n.clone() }))
                .clone();
            let tx = sink.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let sent = match tx {
                Some(tx) => match tx.try_send(note) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        warn!(sink = %sink.name, event = event.as_str(), "notification dropped: the sink's queue is full");
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                },
                None => false,
            };
            if !sent && let Some(m) = &self.metrics {
                m.notification(&sink.name, false);
            }
        }
    }

    /// Stops taking notifications and waits up to `within` for the queued ones to be
    /// delivered (the daemon's shutdown); what is left then is abandoned.
    pub async fn close(&self, within: Duration) {
        for sink in &self.sinks {
            sink.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let all = futures_util::future::join_all(tasks);
        if tokio::time::timeout(within, all).await.is_err() {
            warn!(
                seconds = within.as_secs(),
                "notifications still queued at shutdown were not delivered"
            );
        }
    }
}

/// A sink's delivery task.
struct Worker {
    sink: String,
    target: Target,
    client: reqwest::Client,
    delivery: Delivery,
    metrics: Option<Arc<Metrics>>,
}

/// Why an attempt failed, and whether to try again (after how long, when the receiver
/// said).
struct Failure {
    reason: String,
    retry: bool,
    after: Option<Duration>,
}

/// The first retry waits this long; each next one twice as long, at most [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Telegram's limit on a message's text, in characters.
const TELEGRAM_TEXT_LIMIT: usize = 4096;

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Arc<Notification>>) {
        while let Some(n) = rx.recv().await {
            let delivered = match self.deliver(&n).await {
                Ok(()) => true,
                Err(reason) => {
                    warn!(sink = %self.sink, event = n.event.as_str(), %reason, "notification dropped");
                    false
                }
            };
            if let Some(m) = &self.metrics {
                m.notification(&self.sink, delivered);
            }
        }
    }

    async fn deliver(&self, n: &Notification) -> Result<(), String> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            match self.attempt(n).await {
                Ok(()) => return Ok(()),
                Err(f) if f.retry && attempt < self.delivery.max_retries => {
                    let wait = f.after.map_or(backoff, |a| a.min(MAX_RETRY_AFTER));
                    tracing::debug!(sink = %self.sink, reason = %f.reason, wait_s = wait.as_secs_f64(), "notification retried");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
                Err(f) => {
                    return Err(if f.retry {
                        format!("{} (after {} retries)", f.reason, attempt)
                    } else {
                        f.reason
                    });
                }
            }
        }
    }

    async fn attempt(&self, n: &Notification) -> Result<(), Failure> {
        let (url, body) = request(&self.target, n);
        let answer = self
            .client
            .post(url)
            .timeout(self.delivery.timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| Failure {
                reason: format!("request failed: {e}"),
                retry: true,
                after: None,
            })?;
        let status = answer.status();
        let retry_after = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = answer.text().await.unwrap_or_default();
        if status.is_success() {
            if let Target::Telegram { .. } = self.target {
                // The Bot API answers {"ok": true, "result": ...}.
                let ok = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["ok"].as_bool());
                if ok != Some(true) {
                    return Err(Failure {
                        reason: format!("telegram answered {status} without \"ok\": true"),
                        retry: false,
                        after: None,
                    });
                }
            }
            return Ok(());
        }
        // Telegram says how long to wait in the body: {"parameters": {"retry_after": N}}.
        let body_after = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["parameters"]["retry_after"].as_u64())
            .map(Duration::from_secs);
        let snippet: String = text.chars().take(200).collect();
        Err(Failure {
            reason: format!("HTTP {status}: {snippet}"),
            retry: status.as_u16() == 429 || status.is_server_error(),
            after: retry_after.or(body_after),
        })
    }
}

/// The URL and JSON body of `n` for `target` (see the module documentation).
fn request<'t>(target: &'t Target, n: &Notification) -> (&'t str, Value) {
    match target {
        Target::Webhook { url } => (
            url,
            json!({
                "event": n.event.as_str(),
                "at": rfc3339(n.at),
                "title": n.title,
                "text": n.text,
                "pipeline": n.pipeline,
                "symbol": n.symbol,
                "details": n.details,
            }),
        ),
        Target::Slack { url } => (url, json!({ "text": format!("*{}*\n{}", n.title, n.text) })),
        Target::Telegram { url, chat_id } => {
            let mut text = format!("{}\n{}", n.title, n.text);
            if text.chars().count() > TELEGRAM_TEXT_LIMIT {
                text = text.chars().take(TELEGRAM_TEXT_LIMIT - 1).collect();
                text.push('…');
            }
            (
                url,
                json!({
                    "chat_id": chat_id,
                    "text": text,
                    "disable_web_page_preview": true,
                }),
            )
        }
    }
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note() -> Notification {
        Notification {
            event: NotifyEvent::Fill,
            at: 1_700_000_000,
            title: "fill: buy 10 AAPL at 187.20 USD".into(),
            text: "pipeline swing".into(),
            pipeline: Some("swing".into()),
            symbol: Some("AAPL".into()),
            details: json!({"quantity": "10"}),
        }
    }

    #[test]
    fn bodies_follow_each_receivers_format() {
        let hook = Target::Webhook {
            url: "http://h/x".into(),
        };
        let (url, body) = request(&hook, &note());
        assert_eq!(url, "http://h/x");
        assert_eq!(body["event"], "fill");
        assert_eq!(body["at"], "2023-11-14T22:13:20Z");
        assert_eq!(body["pipeline"], "swing");
        assert_eq!(body["details"]["quantity"], "10");
        let (_, body) = request(
            &Target::Slack {
                url: "http://h/s".into(),
            },
            &note(),
        );
        assert_eq!(
            body,
            json!({"text": "*fill: buy 10 AAPL at 187.20 USD*\npipeline swing"})
        );
        let target = Target::Telegram {
            url: "http://h/botT/sendMessage".into(),
            chat_id: "-100".into(),
        };
        let mut long = note();
        long.text = "x".repeat(5000);
        let (_, body) = request(&target, &long);
        assert_eq!(body["chat_id"], "-100");
        assert_eq!(
            body["text"].as_str().unwrap().chars().count(),
            TELEGRAM_TEXT_LIMIT
        );
    }

    #[tokio::test]
    async fn a_sink_without_its_variable_counts_drops_and_send_never_blocks() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let settings: BTreeMap<String, NotifySettings> = toml::from_str(
            r#"
            [ops]
            kind = "webhook"
            url_env = "ZTRADED_TEST_UNSET_WEBHOOK"
            events = ["fill"]
            "#,
        )
        .unwrap();
        let n = Notifier::start(&settings, |_| None, Some(Arc::clone(&metrics)));
        n.send(&[NotifyEvent::Halt], note());
        n.send(&[NotifyEvent::StopHit, NotifyEvent::Fill], note());
        let families = metrics.registry().gather();
        let f = families
            .iter()
            .find(|f| f.name() == "ztraded_notifications_total")
            .unwrap();
        let value = |result: &str| {
            f.get_metric()
                .iter()
                .find(|m| m.get_label().iter().any(|l| l.value() == result))
                .map(|m| m.get_counter().get_value())
        };
        assert_eq!(value("dropped"), Some(1.0));
        assert_eq!(value("delivered"), Some(0.0));
        assert!(n.wants(&[NotifyEvent::Fill]));
        assert!(!n.wants(&[NotifyEvent::Halt]));
    }
}
