//! `[notify.<name>]`: where the daemon sends notifications (DESIGN.md §2.4). Tokens and
//! URLs are never values: a sink names the environment variables that hold them.

use crate::config::common::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A notification sink.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NotifySettings {
    /// `POST` of one JSON object per event to a URL (see [`crate::notify`] for the body).
    Webhook(WebhookSink),
    /// A Slack incoming webhook: `POST {"text": ...}`.
    Slack(SlackSink),
    /// A Telegram bot: `POST <api_url>/bot<token>/sendMessage` with `chat_id` and `text`.
    Telegram(TelegramSink),
}

/// `kind = "webhook"`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSink {
    /// Name of the environment variable holding the URL.
    #[schemars(regex(pattern = "^[A-Z_][A-Z0-9_]*$"))]
    pub url_env: String,
    /// The events sent to this sink (default: every event).
    #[serde(default = "NotifyEvent::all")]
    pub events: Vec<NotifyEvent>,
    /// Longest wait for one delivery attempt.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Retries of a delivery that failed (connection error, timeout, HTTP 429 or 5xx), with
    /// exponential backoff from 1 s (at most 60 s) or the receiver's `Retry-After`.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 20))]
    pub max_retries: u32,
    /// Notifications waiting for delivery at most; more are dropped (and counted) so that
    /// a slow receiver never holds trading up.
    #[serde(default = "default_queue")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub queue: usize,
}

/// `kind = "slack"`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackSink {
    /// Name of the environment variable holding the incoming-webhook URL
    /// (`https://hooks.slack.com/services/...`).
    #[schemars(regex(pattern = "^[A-Z_][A-Z0-9_]*$"))]
    pub url_env: String,
    /// The events sent to this sink (default: every event).
    #[serde(default = "NotifyEvent::all")]
    pub events: Vec<NotifyEvent>,
    /// Longest wait for one delivery attempt.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Retries of a delivery that failed (connection error, timeout, HTTP 429 or 5xx), with
    /// exponential backoff from 1 s (at most 60 s) or the receiver's `Retry-After`.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 20))]
    pub max_retries: u32,
    /// Notifications waiting for delivery at most; more are dropped (and counted) so that
    /// a slow receiver never holds trading up.
    #[serde(default = "default_queue")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub queue: usize,
}

/// `kind = "telegram"`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelegramSink {
    /// Name of the environment variable holding the bot token (from @BotFather).
    #[schemars(regex(pattern = "^[A-Z_][A-Z0-9_]*$"))]
    pub bot_token_env: String,
    /// Name of the environment variable holding the chat id (a number, or `@channel`).
    #[schemars(regex(pattern = "^[A-Z_][A-Z0-9_]*$"))]
    pub chat_id_env: String,
    /// The Bot API host (default `https://api.telegram.org`; a local Bot API server or a
    /// proxy can be set).
    #[serde(default = "default_telegram_api")]
    pub api_url: String,
    /// The events sent to this sink (default: every event).
    #[serde(default = "NotifyEvent::all")]
    pub events: Vec<NotifyEvent>,
    /// Longest wait for one delivery attempt.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Retries of a delivery that failed (connection error, timeout, HTTP 429 or 5xx), with
    /// exponential backoff from 1 s (at most 60 s) or the receiver's `Retry-After`.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 20))]
    pub max_retries: u32,
    /// Notifications waiting for delivery at most; more are dropped (and counted) so that
    /// a slow receiver never holds trading up.
    #[serde(default = "default_queue")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub queue: usize,
}

impl NotifySettings {
    /// `webhook`, `slack` or `telegram`.
    pub fn kind(&self) -> &'static str {
        match self {
            NotifySettings::Webhook(_) => "webhook",
            NotifySettings::Slack(_) => "slack",
            NotifySettings::Telegram(_) => "telegram",
        }
    }

    /// The sink's events, retries and queue.
    pub fn delivery(&self) -> Delivery {
        let (events, timeout, max_retries, queue) = match self {
            NotifySettings::Webhook(s) => (&s.events, s.timeout, s.max_retries, s.queue),
            NotifySettings::Slack(s) => (&s.events, s.timeout, s.max_retries, s.queue),
            NotifySettings::Telegram(s) => (&s.events, s.timeout, s.max_retries, s.queue),
        };
        Delivery {
            events: events.clone(),
            timeout: timeout.std(),
            max_retries,
            queue,
        }
    }
}

/// What every sink has: the events it wants and how hard delivery tries (see the fields of
/// [`WebhookSink`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The events sent to the sink.
    pub events: Vec<NotifyEvent>,
    /// Longest wait for one attempt.
    pub timeout: std::time::Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Most notifications waiting.
    pub queue: usize,
}

/// What a sink can be told about.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// An order filled (entries, exits, flattens; a stop or target fill too when the sink
    /// does not take `stop_hit` / `target_hit`).
    Fill,
    /// A stop-loss order filled.
    StopHit,
    /// A take-profit order (target 1 or 2) filled.
    TargetHit,
    /// A halt was latched (a pipeline's or the account's), other than by an emergency close
    /// or a daily loss limit, which have their own events.
    Halt,
    /// An emergency close (`POST /v1/close`, `ztraded close`).
    EmergencyClose,
    /// A config revision was refused (invalid, or removing too much); the running one stays.
    RevisionRefused,
    /// A pipeline failed (its broker unavailable, a bad config at run time).
    PipelineFailed,
    /// A daily loss limit was reached (the pipeline's or the risk policy's).
    DailyLoss,
    /// A broker holds positions or orders that no pipeline owns.
    BrokerDrift,
}

impl NotifyEvent {
    /// Every event, in declaration order.
    pub const ALL: [NotifyEvent; 9] = [
        NotifyEvent::Fill,
        NotifyEvent::StopHit,
        NotifyEvent::TargetHit,
        NotifyEvent::Halt,
        NotifyEvent::EmergencyClose,
        NotifyEvent::RevisionRefused,
        NotifyEvent::PipelineFailed,
        NotifyEvent::DailyLoss,
        NotifyEvent::BrokerDrift,
    ];

    fn all() -> Vec<NotifyEvent> {
        Self::ALL.to_vec()
    }

    /// snake_case name, as in `events = [...]`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Fill => "fill",
            NotifyEvent::StopHit => "stop_hit",
            NotifyEvent::TargetHit => "target_hit",
            NotifyEvent::Halt => "halt",
            NotifyEvent::EmergencyClose => "emergency_close",
            NotifyEvent::RevisionRefused => "revision_refused",
            NotifyEvent::PipelineFailed => "pipeline_failed",
            NotifyEvent::DailyLoss => "daily_loss",
            NotifyEvent::BrokerDrift => "broker_drift",
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retries() -> u32 {
    5
}
fn default_queue() -> usize {
    1_000
}
fn default_telegram_api() -> String {
    "https://api.telegram.org".to_string()
}
