//! `redis://`: signals on a Redis stream (DESIGN.md §6), with the `redis` crate.
//!
//! * Publishing: `XADD ztraded:signals MAXLEN ~ <max_len> * id .. type .. ticker ..
//!   direction .. confidence .. timestamp .. source ..` on a [`ConnectionManager`] (it
//!   reconnects by itself).
//! * Consuming: one consumer group per deployment (`[bus] group`, created at the stream's
//!   end with `MKSTREAM` when missing), one consumer per daemon (`[bus] consumer`).
//!   `XREADGROUP ... BLOCK` runs on a connection of its own (a blocked read would hold up
//!   every other command of a shared connection), reconnected with backoff when it fails.
//!   Each entry is read ([`Signal::from_fields`]), dispatched, and acknowledged (`XACK`)
//!   after its outcomes are recorded; an entry that does not read is added to
//!   `ztraded:signals:dead` (fields `entry`, `reason`, `consumer`, `fields` as JSON) and
//!   then acknowledged. Nothing is acknowledged before it is handled, so a daemon that dies
//!   leaves its entries pending; every `claim_idle / 2` each consumer claims the entries
//!   idle longer than `claim_idle` (`XAUTOCLAIM`) and handles them. Entries trimmed away
//!   while pending are logged and acknowledged.

use super::{BusConfig, BusError};
use crate::metrics::Metrics;
use crate::signals::{Dispatcher, Signal};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Entries read at once.
const READ_COUNT: usize = 256;

/// See the module documentation.
#[derive(Clone)]
pub struct RedisBus {
    config: Arc<BusConfig>,
    client: redis::Client,
    manager: ConnectionManager,
}

impl RedisBus {
    /// Opens the connection manager and makes sure the consumer group exists.
    ///
    /// # Errors
    /// [`BusError::Redis`] when the URL is invalid or Redis cannot be reached.
    pub async fn connect(config: BusConfig) -> Result<RedisBus, BusError> {
        let err = |source| BusError::Redis {
            url: config.safe_url(),
            source,
        };
        let client = redis::Client::open(config.url.as_str()).map_err(err)?;
        let manager = ConnectionManager::new_with_config(
            client.clone(),
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(5)))
                .set_response_timeout(Some(Duration::from_secs(5)))
                .set_number_of_retries(6)
                .set_max_delay(Duration::from_secs(2)),
        )
        .await
        .map_err(err)?;
        let bus = RedisBus {
            config: Arc::new(config),
            client,
            manager,
        };
        bus.ensure_group().await?;
        Ok(bus)
    }

    /// The keys and names in use.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    fn error(&self, source: redis::RedisError) -> BusError {
        BusError::Redis {
            url: self.config.safe_url(),
            source,
        }
    }

    /// `XGROUP CREATE <stream> <group> $ MKSTREAM`, an existing group left as it is.
    ///
    /// # Errors
    /// [`BusError::Redis`].
    pub async fn ensure_group(&self) -> Result<(), BusError> {
        let mut con = self.manager.clone();
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg("$")
            .arg("MKSTREAM")
            .query_async(&mut con)
            .await;
        match created {
            Ok(()) => {
                info!(stream = %self.config.stream, group = %self.config.group, "signal consumer group created");
                Ok(())
            }
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// `XADD <stream> MAXLEN ~ <max_len> * <fields>`; answers the entry id.
    ///
    /// # Errors
    /// [`BusError::Redis`].
    pub async fn publish(&self, signal: &Signal) -> Result<String, BusError> {
        let mut con = self.manager.clone();
        redis::cmd("XADD")
            .arg(&self.config.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.config.max_len)
            .arg("*")
            .arg(&signal.to_fields()[..])
            .query_async(&mut con)
            .await
            .map_err(|e| self.error(e))
    }

    /// Starts the consumer task (see the module documentation).
    pub fn spawn_consumer(
        &self,
        dispatcher: Arc<Dispatcher>,
        metrics: Option<Arc<Metrics>>,
        shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let consumer = Consumer {
            bus: self.clone(),
            dispatcher,
            metrics,
            in_progress: Arc::default(),
        };
        tokio::spawn(consumer.run(shutdown))
    }
}

/// The milliseconds part of a stream entry id as a time.
fn entry_time(id: &str) -> Option<SystemTime> {
    let ms: u64 = id.split('-').next()?.parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(ms))
}

#[derive(Clone)]
struct Consumer {
    bus: RedisBus,
    dispatcher: Arc<Dispatcher>,
    metrics: Option<Arc<Metrics>>,
    /// Entries this daemon is handling (a claim does not handle them twice).
    in_progress: Arc<Mutex<HashSet<String>>>,
}

impl Consumer {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let c = Arc::clone(&self.bus.config);
        info!(stream = %c.stream, group = %c.group, consumer = %c.consumer, url = %c.safe_url(), "signal consumer started");
        let claim_every = (c.claim_idle / 2).max(Duration::from_millis(100));
        let mut next_claim = tokio::time::Instant::now();
        let mut reader: Option<MultiplexedConnection> = None;
        let mut backoff = Duration::from_millis(100);
        let mut failing = false;
        let block_ms = usize::try_from(c.block.as_millis()).unwrap_or(1000);
        loop {
            if *shutdown.borrow() {
                return;
            }
            if tokio::time::Instant::now() >= next_claim {
                self.claim().await;
                next_claim = tokio::time::Instant::now() + claim_every;
            }
            let con = match reader.as_mut() {
                Some(con) => con,
                None => {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(5)))
                        .set_response_timeout(Some(c.block + Duration::from_secs(10)));
                    match self
                        .bus
                        .client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                    {
                        Ok(con) => reader.insert(con),
                        Err(e) => {
                            if !failing {
                                warn!(error = %e, url = %c.safe_url(), "signal bus unreachable; retrying");
                                failing = true;
                            }
                            if wait(&mut shutdown, backoff).await {
                                return;
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    }
                }
            };
            let mut command = redis::cmd("XREADGROUP");
            command
                .arg("GROUP")
                .arg(&c.group)
                .arg(&c.consumer)
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS")
                .arg(&c.stream)
                .arg(">");
            let read = command.query_async::<Option<StreamReadReply>>(con);
            let read = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => return,
                r = read => r,
            };
            match read {
                Ok(reply) => {
                    if failing {
                        info!("signal bus reachable again");
                        failing = false;
                    }
                    backoff = Duration::from_millis(100);
                    for key in reply.map(|r| r.keys).unwrap_or_default() {
                        for entry in key.ids {
                            self.handle(entry).await;
                        }
                    }
                }
                Err(e) => {
                    if e.code() == Some("NOGROUP") {
                        warn!("the signal stream or its consumer group is gone; creating it again");
                        if let Err(e) = self.bus.ensure_group().await {
                            warn!(error = %e, "consumer group not created");
                        }
                    } else if !failing {
                        warn!(error = %e, "reading signals failed; reconnecting");
                        failing = true;
                    }
                    reader = None;
                    if wait(&mut shutdown, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// `XAUTOCLAIM` of the group's entries idle longer than `claim_idle`, handled here.
    async fn claim(&self) {
        let c = &self.bus.config;
        let mut con = self.bus.manager.clone();
        let idle_ms = u64::try_from(c.claim_idle.as_millis()).unwrap_or(u64::MAX);
        let mut start = "0-0".to_string();
        for _ in 0..1000 {
            let reply: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
                .arg(&c.stream)
                .arg(&c.group)
                .arg(&c.consumer)
                .arg(idle_ms)
                .arg(&start)
                .arg("COUNT")
                .arg(100)
                .query_async(&mut con)
                .await;
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    if e.code() == Some("NOGROUP") {
                        let _ = self.bus.ensure_group().await;
                    } else {
                        debug!(error = %e, "claiming idle signals failed");
                    }
                    return;
                }
            };
            for id in &reply.deleted_ids {
                warn!(entry = %id, "a pending signal was trimmed from the stream before it was handled; acknowledged without an outcome");
                self.ack(id).await;
            }
            let done = reply.next_stream_id == "0-0"
                || (reply.claimed.is_empty() && reply.deleted_ids.is_empty());
            for entry in reply.claimed {
                if !self.is_in_progress(&entry.id) {
                    info!(entry = %entry.id, "claimed a signal another consumer left pending");
                }
                self.handle(entry).await;
            }
            if done {
                return;
            }
            start = reply.next_stream_id;
        }
    }

    fn is_in_progress(&self, id: &str) -> bool {
        self.in_progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(id)
    }

    fn done(&self, id: &str) {
        self.in_progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    /// Reads, dispatches (or dead-letters) and acknowledges one entry.
    async fn handle(&self, entry: StreamId) {
        let id = entry.id.clone();
        if !self
            .in_progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.clone())
        {
            return;
        }
        let mut fields = BTreeMap::new();
        let mut bad = None;
        for (k, v) in &entry.map {
            match redis::from_redis_value_ref::<String>(v) {
                Ok(s) => {
                    fields.insert(k.clone(), s);
                }
                Err(_) => bad = Some(format!("field '{k}' is not a string")),
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let parsed = match bad {
            Some(reason) => Err(crate::signals::MalformedSignal(reason)),
            None => Signal::from_fields(&fields, &id, now),
        };
        let signal = match parsed {
            Ok(s) => s,
            Err(reason) => {
                self.dead_letter(&id, &reason.0, &fields).await;
                self.done(&id);
                return;
            }
        };
        let routed = self.dispatcher.route(&signal, entry_time(&id)).await;
        let this = self.clone();
        tokio::spawn(async move {
            let report = routed.outcomes().await;
            debug!(entry = %id, signal = %signal.id, outcomes = ?report.outcomes, "signal handled");
            this.ack(&id).await;
            this.done(&id);
        });
    }

    /// Adds a malformed entry to the dead-letter stream with its reason, then acknowledges
    /// it; when the dead-letter stream cannot be written the entry stays pending (claimed
    /// again later).
    async fn dead_letter(&self, id: &str, reason: &str, fields: &BTreeMap<String, String>) {
        let c = &self.bus.config;
        warn!(entry = %id, %reason, dead = %c.dead, "malformed signal moved to the dead-letter stream");
        let mut con = self.bus.manager.clone();
        let json = serde_json::to_string(fields).unwrap_or_else(|_| "{}".into());
        let added: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(&c.dead)
            .arg("MAXLEN")
            .arg("~")
            .arg(c.max_len)
            .arg("*")
            .arg("entry")
            .arg(id)
            .arg("reason")
            .arg(reason)
            .arg("consumer")
            .arg(&c.consumer)
            .arg("fields")
            .arg(json)
            .query_async(&mut con)
            .await;
        match added {
            Ok(_) => {
                if let Some(m) = &self.metrics {
                    m.signal_dead_lettered();
                }
                self.ack(id).await;
            }
            Err(e) => {
                warn!(entry = %id, error = %e, "dead-letter stream not written; the entry stays pending")
            }
        }
    }

    /// `XACK`, retried a few times; an entry left unacknowledged is claimed again later.
    async fn ack(&self, id: &str) {
        let c = &self.bus.config;
        let mut con = self.bus.manager.clone();
        for attempt in 0..3u32 {
            let acked: redis::RedisResult<i64> = redis::cmd("XACK")
                .arg(&c.stream)
                .arg(&c.group)
                .arg(id)
                .query_async(&mut con)
                .await;
            match acked {
                Ok(_) => return,
                Err(e) if attempt == 2 => {
                    warn!(entry = %id, error = %e, "signal not acknowledged; it will be claimed and handled again")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100 << attempt)).await,
            }
        }
    }
}

/// Sleeps `d`; true when `shutdown` turned true meanwhile.
async fn wait(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.wait_for(|s| *s) => true,
        _ = tokio::time::sleep(d) => false,
    }
}
