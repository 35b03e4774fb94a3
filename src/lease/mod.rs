//! Pipeline leases in Redis: with several daemons on one account (`[bus] url = "redis://…"`),
//! each pipeline is run by the one daemon that holds its lease (DESIGN.md §6).
//!
//! # Keys
//!
//! For pipeline `P` under prefix `ztraded:lease:` (see [`LeaseClient::with_prefix`]):
//!
//! - `ztraded:lease:P` — the lease: `"<epoch>:<token>"`, set with `PX ttl`. The token is
//!   128 random bits in hex, new for every acquisition; nobody else knows it.
//! - `ztraded:lease:P:epoch` — the fencing epoch: an integer `INCR`ed by every acquisition,
//!   never reset, so each new holder has a larger epoch than every holder before it.
//!
//! # Scripts
//!
//! Every operation is one Lua script (atomic in Redis), so no two daemons can interleave a
//! read and a write:
//!
//! - acquire: `SET lease value NX PX ttl` where the value carries the `INCR`ed epoch; the
//!   epoch is incremented only when the `SET NX` succeeds; answers the epoch or nil;
//! - renew: compare-and-set: `PEXPIRE lease ttl` only when the lease still holds our
//!   value; answers 1 or 0 (lost: expired, or another daemon holds it);
//! - release: compare-and-delete: `DEL lease` only when it holds our value.
//!
//! The epoch is the fence: the daemon writes it to the store when it acquires
//! ([`crate::store::Store::claim_epoch`]) and every order intent it writes is checked
//! against the stored epoch in the same transaction, so a daemon that lost its lease and has
//! not noticed yet (paused, partitioned) cannot submit: its intent is refused before the
//! order goes out.
//!
//! The connection is a [`redis::aio::ConnectionManager`], which reconnects by itself; a
//! failed call is an error for the caller (a renewal that fails is a lost lease).

pub mod keeper;

pub use keeper::{Fences, LeaseEvent, LeaseKeeper, LeaseReason};

use redis::Script;
use redis::aio::ConnectionManager;
use std::time::Duration;

/// The default prefix of lease keys.
pub const DEFAULT_PREFIX: &str = "ztraded:lease:";

const ACQUIRE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch .. ':' .. ARGV[1], 'PX', ARGV[2])
return epoch
"#;

const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// A lease failure: Redis could not be reached or answered an error.
#[derive(Debug, thiserror::Error)]
#[error("lease: {0}")]
pub struct LeaseError(#[from] redis::RedisError);

/// A lease this daemon holds on one pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The pipeline.
    pub pipeline: String,
    /// The fencing epoch: larger than every earlier holder's (starts at 1).
    pub epoch: u64,
    /// Our random token (hex).
    pub token: String,
}

impl Lease {
    /// The value of the lease key: `<epoch>:<token>`.
    fn value(&self) -> String {
        format!("{}:{}", self.epoch, self.token)
    }
}

/// Acquires, renews and releases pipeline leases on one Redis server.
#[derive(Clone)]
pub struct LeaseClient {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
    acquire: Script,
    renew: Script,
    release: Script,
}

impl LeaseClient {
    /// Connects to the Redis server at `url` (`redis://host:port[/db]`, `rediss://…`) with
    /// leases of `ttl` (at least 1 ms) under [`DEFAULT_PREFIX`]. Each call times out after
    /// a third of the TTL, so a renewal cannot outlive the lease it renews.
    ///
    /// # Errors
    /// A bad URL, or a server that cannot be reached.
    pub async fn connect(url: &str, ttl: Duration) -> Result<LeaseClient, LeaseError> {
        let client = redis::Client::open(url)?;
        let timeout = (ttl / 3).max(Duration::from_millis(100));
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(LeaseClient {
            conn,
            prefix: DEFAULT_PREFIX.to_string(),
            ttl: ttl.max(Duration::from_millis(1)),
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        })
    }

    /// The same client with lease keys under `prefix` (separate deployments, tests).
    pub fn with_prefix(mut self, prefix: &str) -> LeaseClient {
        self.prefix = prefix.to_string();
        self
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The key of `pipeline`'s lease.
    pub fn key(&self, pipeline: &str) -> String {
        format!("{}{pipeline}", self.prefix)
    }

    fn epoch_key(&self, pipeline: &str) -> String {
        format!("{}{pipeline}:epoch", self.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes `pipeline`'s lease when nobody holds it: `Some` with the new epoch and our
    /// token, `None` when another daemon holds it.
    ///
    /// # Errors
    /// Redis failed (the lease may or may not be ours; it expires unrenewed).
    pub async fn acquire(&self, pipeline: &str) -> Result<Option<Lease>, LeaseError> {
        let token = random_token();
        let mut conn = self.conn.clone();
        let epoch: Option<u64> = self
            .acquire
            .key(self.key(pipeline))
            .key(self.epoch_key(pipeline))
            .arg(&token)
            .arg(self.ttl_ms())
            .invoke_async(&mut conn)
            .await?;
        Ok(epoch.map(|epoch| Lease {
            pipeline: pipeline.to_string(),
            epoch,
            token,
        }))
    }

    /// Extends `lease` by the TTL when we still hold it: `false` when it was lost (expired,
    /// or another daemon holds it now).
    ///
    /// # Errors
    /// Redis failed (treat the lease as lost).
    pub async fn renew(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .renew
            .key(self.key(&lease.pipeline))
            .arg(lease.value())
            .arg(self.ttl_ms())
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Gives `lease` up at once when we still hold it (another daemon can take it without
    /// waiting for the TTL): `false` when it was not ours any more.
    ///
    /// # Errors
    /// Redis failed (the lease expires by itself).
    pub async fn release(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .release
            .key(self.key(&lease.pipeline))
            .arg(lease.value())
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// The epoch of `pipeline`'s current holder, `None` when nobody holds it.
    ///
    /// # Errors
    /// Redis failed.
    pub async fn holder_epoch(&self, pipeline: &str) -> Result<Option<u64>, LeaseError> {
        let mut conn = self.conn.clone();
        let value: Option<String> = redis::cmd("GET")
            .arg(self.key(pipeline))
            .query_async(&mut conn)
            .await?;
        Ok(value.and_then(|v| v.split(':').next().and_then(|e| e.parse().ok())))
    }
}

/// 128 random bits from the operating system as 32 lowercase hex digits (when the system
/// has no entropy to give, the process id, the time and a counter: still unique).
fn random_token() -> String {
    use rand::TryRng;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut rng = rand::rngs::SysRng;
    match (rng.try_next_u64(), rng.try_next_u64()) {
        (Ok(a), Ok(b)) => format!("{a:016x}{b:016x}"),
        _ => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{:08x}{nanos:016x}{n:08x}", std::process::id())
        }
    }
}
