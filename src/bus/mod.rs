//! The signal bus (`[bus] url`, DESIGN.md §2.4, §6): `memory://` in process, or
//! `redis://` with Redis Streams ([`streams`]).
//!
//! Every signal, whether a built-in generator's or an external producer's, goes through
//! the bus and comes back to the [`Dispatcher`] of a consumer: with `memory://` the daemon's
//! own; with `redis://` one daemon of the deployment's consumer group, so that with several
//! daemons each signal is handled once.

pub mod memory;
pub mod streams;

use crate::config::settings::BusSettings;
use crate::signals::{Dispatcher, Signal};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why the bus failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The URL is not `memory://`, `redis://` or `rediss://`.
    #[error("[bus] url '{0}': memory://, redis://host:port or rediss://host:port")]
    Url(String),
    /// Redis answered an error or could not be reached.
    #[error("redis {url}: {source}")]
    Redis {
        /// The bus URL (without a password).
        url: String,
        /// The error.
        source: redis::RedisError,
    },
    /// The in-process bus has no consumer (the daemon stopped).
    #[error("the in-process bus is closed")]
    Closed,
    /// `memory://` cannot be reached from another process.
    #[error(
        "[bus] url is memory://: signals stay inside one daemon; set [bus] url = \"redis://...\" to publish from outside"
    )]
    InProcess,
}

/// The bus's keys and names, from `[bus]`.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// `memory://` or `redis://...`.
    pub url: String,
    /// The signal stream (`<prefix>:signals`, `ztraded:signals` by default).
    pub stream: String,
    /// The dead-letter stream (`<prefix>:signals:dead`).
    pub dead: String,
    /// The deployment's consumer group.
    pub group: String,
    /// This daemon's consumer name.
    pub consumer: String,
    /// Approximate stream length kept (`MAXLEN ~`).
    pub max_len: usize,
    /// Idle time after which another consumer's pending entries are claimed.
    pub claim_idle: Duration,
    /// How long one blocking read waits for new entries.
    pub block: Duration,
}

impl BusConfig {
    /// From the settings; the consumer defaults to `<hostname>-<pid>`.
    pub fn from_settings(s: &BusSettings) -> BusConfig {
        BusConfig {
            url: s.url.clone(),
            stream: format!("{}:signals", s.key_prefix),
            dead: format!("{}:signals:dead", s.key_prefix),
            group: s.group.clone(),
            consumer: s.consumer.clone().unwrap_or_else(default_consumer),
            max_len: usize::try_from(s.max_len).unwrap_or(usize::MAX),
            claim_idle: s.claim_idle.0.max(Duration::from_millis(100)),
            block: Duration::from_secs(1),
        }
    }

    /// The URL without its password, for messages.
    pub fn safe_url(&self) -> String {
        redact(&self.url)
    }
}

/// `<hostname>-<pid>`.
pub fn default_consumer() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ztraded".to_string());
    format!("{host}-{}", std::process::id())
}

/// `url` with the password of its user info replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..scheme + 3], &userinfo[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The bus a daemon (or `ztraded signal publish`) uses.
pub enum Bus {
    /// `memory://`.
    Memory(memory::MemoryBus),
    /// `redis://` / `rediss://`.
    Redis(streams::RedisBus),
}

impl Bus {
    /// Connects the bus of `config` (for Redis: the connection manager, the consumer
    /// group, created at the stream's end when it does not exist).
    ///
    /// # Errors
    /// [`BusError::Url`] for another scheme, [`BusError::Redis`] when Redis cannot be
    /// reached or refuses.
    pub async fn connect(config: BusConfig) -> Result<Bus, BusError> {
        if config.url.starts_with("memory://") {
            Ok(Bus::Memory(memory::MemoryBus::new()))
        } else if config.url.starts_with("redis://") || config.url.starts_with("rediss://") {
            Ok(Bus::Redis(streams::RedisBus::connect(config).await?))
        } else {
            Err(BusError::Url(config.safe_url()))
        }
    }

    /// `memory://` or `redis`.
    pub fn kind(&self) -> &'static str {
        match self {
            Bus::Memory(_) => "memory",
            Bus::Redis(_) => "redis",
        }
    }

    /// Publishes `signal`; answers its entry id. In process, returns once the dispatcher
    /// has queued it at its subscribers (when the consumer runs).
    ///
    /// # Errors
    /// [`BusError`] when Redis refuses or the in-process bus is closed.
    pub async fn publish(&self, signal: &Signal) -> Result<String, BusError> {
        match self {
            Bus::Memory(m) => m.publish(signal).await,
            Bus::Redis(r) => r.publish(signal).await,
        }
    }

    /// Starts the consumer: signals from the bus go to `dispatcher` until `shutdown`.
    pub fn spawn_consumer(
        &self,
        dispatcher: Arc<Dispatcher>,
        metrics: Option<Arc<crate::metrics::Metrics>>,
        shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        match self {
            Bus::Memory(m) => m.spawn_consumer(dispatcher, shutdown),
            Bus::Redis(r) => r.spawn_consumer(dispatcher, metrics, shutdown),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            super::redact("redis://u:secret@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(
            super::redact("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
