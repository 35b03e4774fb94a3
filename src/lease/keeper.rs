//! The daemon's side of the leases: one task that takes the leases of the pipelines it is
//! asked to run, renews them every third of the TTL, gives up its surplus to daemons that
//! hold fewer, and reports every change as a [`LeaseEvent`]; and the [`Fences`] that the
//! order path reads.
//!
//! # Fair share
//!
//! Each daemon keeps itself in the sorted set `<prefix>members` (score: when its
//! membership expires, Unix milliseconds, refreshed every tick, entries past their time
//! removed). A daemon takes free leases only while it holds fewer than
//! `ceil(pipelines / members)`, so that the pipelines of a daemon that died spread over the
//! others. Leases held are never given up for balance (a pipeline moves only when its holder
//! stops or loses it). This only spreads the work; who runs a pipeline is decided by the
//! lease alone.

use super::{Lease, LeaseClient, LeaseError};
use futures_util::FutureExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// Why a lease changed hands, the `reason` label of `ztraded_lease_transitions_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseReason {
    /// We took a free lease (a new epoch).
    Acquired,
    /// We gave a lease up: shutdown, the pipeline left the config, or the store refused
    /// its epoch.
    Released,
    /// The renewal found the lease gone or held by another daemon (we were paused or cut
    /// off for longer than the TTL).
    Lost,
    /// The renewal failed (Redis unreachable or too slow): the lease is treated as lost.
    Error,
}

impl LeaseReason {
    /// The label value: `acquired`, `released`, `lost`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseReason::Acquired => "acquired",
            LeaseReason::Released => "released",
            LeaseReason::Lost => "lost",
            LeaseReason::Error => "error",
        }
    }

    /// Every reason.
    pub const ALL: [LeaseReason; 4] = [
        LeaseReason::Acquired,
        LeaseReason::Released,
        LeaseReason::Lost,
        LeaseReason::Error,
    ];
}

/// A change of the leases this daemon holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    /// We hold `pipeline` from now on with this epoch: write the epoch to the store, then
    /// start the pipeline (recovering it like a restart).
    Gained(Lease),
    /// We no longer hold `pipeline`: its fence is already gone (its orders are refused);
    /// stop it without touching its positions (another daemon takes over).
    Lost {
        /// The pipeline.
        pipeline: String,
        /// The epoch we held.
        epoch: u64,
        /// Why.
        reason: LeaseReason,
    },
}

/// The epochs the order path may write intents with: pipeline → (epoch, held until). An
/// entry exists only while this daemon holds the pipeline's lease and the store has its
/// epoch; it is removed the moment the lease is lost or given up, and an entry whose time
/// passed without a renewal counts as absent.
#[derive(Default)]
pub struct Fences {
    map: Mutex<BTreeMap<String, (u64, Instant)>>,
}

impl Fences {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, (u64, Instant)>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets `pipeline` write intents with `epoch` until `until`.
    pub fn set(&self, pipeline: &str, epoch: u64, until: Instant) {
        self.lock().insert(pipeline.to_string(), (epoch, until));
    }

    /// Extends `pipeline`'s fence of `epoch` to `until` (no-op for another epoch).
    fn extend(&self, pipeline: &str, epoch: u64, until: Instant) {
        if let Some(e) = self.lock().get_mut(pipeline)
            && e.0 == epoch
        {
            e.1 = until;
        }
    }

    /// Removes `pipeline`'s fence: its intents are refused from now on.
    pub fn clear(&self, pipeline: &str) {
        self.lock().remove(pipeline);
    }

    /// The epoch `pipeline` may write intents with now, if any.
    pub fn epoch(&self, pipeline: &str) -> Option<u64> {
        let map = self.lock();
        let (epoch, until) = map.get(pipeline)?;
        (Instant::now() < *until).then_some(*epoch)
    }

    /// How many pipelines hold a fence.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no pipeline holds a fence.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// The lease task of one daemon (see the module documentation).
pub struct LeaseKeeper {
    desired: watch::Sender<BTreeSet<String>>,
    give_up: mpsc::UnboundedSender<String>,
    ttl: Duration,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    fences: Arc<Fences>,
}

struct Held {
    lease: Lease,
    renewed: Instant,
}

impl LeaseKeeper {
    /// Starts the lease task of daemon `member` (a unique name: host and process id) over
    /// `client`: it tries to hold the leases of the pipelines given to
    /// [`LeaseKeeper::set_desired`], reporting on `events`. Fences are set by the caller
    /// when it has written the epoch to the store, and cleared here when a lease is lost.
    pub fn start(
        client: LeaseClient,
        member: String,
        events: mpsc::UnboundedSender<LeaseEvent>,
    ) -> LeaseKeeper {
        let (desired, desired_rx) = watch::channel(BTreeSet::new());
        let (stop, stop_rx) = watch::channel(false);
        let (give_up, give_up_rx) = mpsc::unbounded_channel();
        let fences = Arc::new(Fences::default());
        let ttl = client.ttl();
        let task = tokio::spawn(run(
            client,
            member,
            Inputs {
                desired: desired_rx,
                stop: stop_rx,
                give_up: give_up_rx,
            },
            events,
            Arc::clone(&fences),
        ));
        LeaseKeeper {
            desired,
            give_up,
            ttl,
            stop,
            task,
            fences,
        }
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Lets the order path write intents under `lease` (call it once the store has its
    /// epoch, [`crate::store::Store::claim_epoch`]); the fence lasts one TTL from now and
    /// each renewal extends it.
    pub fn fence(&self, lease: &Lease) {
        self.fences
            .set(&lease.pipeline, lease.epoch, Instant::now() + self.ttl);
    }

    /// Releases `pipeline`'s lease (the store refused its epoch): reported as a
    /// [`LeaseEvent::Lost`] with [`LeaseReason::Released`].
    pub fn give_up(&self, pipeline: &str) {
        let _ = self.give_up.send(pipeline.to_string());
    }

    /// The fences the order path reads.
    pub fn fences(&self) -> Arc<Fences> {
        Arc::clone(&self.fences)
    }

    /// The pipelines this daemon may run (enabled in the applied revision, or draining
    /// here); a lease held for a pipeline no longer among them is released.
    pub fn set_desired(&self, pipelines: BTreeSet<String>) {
        self.desired.send_if_modified(|d| {
            if *d == pipelines {
                return false;
            }
            *d = pipelines;
            true
        });
    }

    /// Stops the task and releases every lease at once (shutdown): the other daemons can
    /// take them without waiting for the TTL. Call it after the pipelines stopped.
    pub async fn release_all(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Inputs {
    desired: watch::Receiver<BTreeSet<String>>,
    stop: watch::Receiver<bool>,
    give_up: mpsc::UnboundedReceiver<String>,
}

async fn run(
    client: LeaseClient,
    member: String,
    inputs: Inputs,
    events: mpsc::UnboundedSender<LeaseEvent>,
    fences: Arc<Fences>,
) {
    let Inputs {
        mut desired,
        mut stop,
        mut give_up,
    } = inputs;
    // Given up because the store refused the epoch: not taken again for a while.
    let mut refused: BTreeMap<String, Instant> = BTreeMap::new();
    let ttl = client.ttl();
    let period = (ttl / 3).max(Duration::from_millis(10));
    let mut held: BTreeMap<String, Held> = BTreeMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let given_up: Option<String> = tokio::select! {
            _ = stop.wait_for(|s| *s).map(|_| ()) => break,
            _ = tick.tick() => None,
            changed = desired.changed() => if changed.is_err() { break } else { None },
            Some(name) = give_up.recv() => Some(name),
        };
        if let Some(name) = given_up {
            release(&client, &mut held, &fences, &events, &name).await;
            refused.insert(name, Instant::now() + ttl * 3);
            continue;
        }
        refused.retain(|_, until| *until > Instant::now());
        let want = desired.borrow_and_update().clone();
        // Renew what we hold; a lease not renewed within its TTL is gone.
        let names: Vec<String> = held.keys().cloned().collect();
        for name in names {
            let Some(h) = held.get(&name) else { continue };
            if h.renewed.elapsed() < period / 2 && want.contains(&name) {
                continue;
            }
            let lease = h.lease.clone();
            let started = Instant::now();
            let reason = match client.renew(&lease).await {
                Ok(true) if started.duration_since(h.renewed) < ttl => {
                    fences.extend(&name, lease.epoch, started + ttl);
                    if let Some(h) = held.get_mut(&name) {
                        h.renewed = started;
                    }
                    None
                }
                Ok(true) => Some(LeaseReason::Lost),
                Ok(false) => Some(LeaseReason::Lost),
                Err(e) => {
                    warn!(pipeline = %name, error = %e, "lease renewal failed; the pipeline stops here");
                    Some(LeaseReason::Error)
                }
            };
            if let Some(reason) = reason {
                fences.clear(&name);
                held.remove(&name);
                warn!(pipeline = %name, epoch = lease.epoch, reason = reason.as_str(), "lease lost; the pipeline stops here and runs elsewhere");
                let _ = events.send(LeaseEvent::Lost {
                    pipeline: name,
                    epoch: lease.epoch,
                    reason,
                });
            }
        }
        // Pipelines no longer configured: given up.
        let gone: Vec<String> = held
            .keys()
            .filter(|n| !want.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            release(&client, &mut held, &fences, &events, &name).await;
        }
        // Our fair share.
        let members = match members(&client, &member, ttl).await {
            Ok(n) => n.max(1),
            Err(e) => {
                warn!(error = %e, "lease membership not refreshed");
                continue;
            }
        };
        let share = want.len().div_ceil(members);
        for name in &want {
            if held.len() >= share {
                break;
            }
            if held.contains_key(name) || refused.contains_key(name) {
                continue;
            }
            let started = Instant::now();
            match client.acquire(name).await {
                Ok(Some(lease)) => {
                    info!(pipeline = %name, epoch = lease.epoch, "lease acquired");
                    held.insert(
                        name.clone(),
                        Held {
                            lease: lease.clone(),
                            renewed: started,
                        },
                    );
                    let _ = events.send(LeaseEvent::Gained(lease));
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(pipeline = %name, error = %e, "lease not acquired");
                    break;
                }
            }
        }
    }
    let names: Vec<String> = held.keys().cloned().collect();
    for name in names {
        release(&client, &mut held, &fences, &events, &name).await;
    }
    let _ = leave(&client, &member).await;
}

async fn release(
    client: &LeaseClient,
    held: &mut BTreeMap<String, Held>,
    fences: &Fences,
    events: &mpsc::UnboundedSender<LeaseEvent>,
    name: &str,
) {
    let Some(h) = held.remove(name) else { return };
    // The order path stops before the lease is free for another daemon.
    fences.clear(name);
    let _ = events.send(LeaseEvent::Lost {
        pipeline: name.to_string(),
        epoch: h.lease.epoch,
        reason: LeaseReason::Released,
    });
    match client.release(&h.lease).await {
        Ok(_) => info!(pipeline = %name, epoch = h.lease.epoch, "lease released"),
        Err(e) => {
            warn!(pipeline = %name, error = %e, "lease not released; it expires after its TTL")
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Refreshes our membership and answers how many daemons are members.
async fn members(client: &LeaseClient, member: &str, ttl: Duration) -> Result<usize, LeaseError> {
    let key = format!("{}members", client.prefix);
    let now = now_ms();
    let mut conn = client.conn.clone();
    let (_, _, n): (i64, i64, usize) = redis::pipe()
        .atomic()
        .cmd("ZREMRANGEBYSCORE")
        .arg(&key)
        .arg("-inf")
        .arg(now)
        .cmd("ZADD")
        .arg(&key)
        .arg(now + ttl.as_millis() as i64)
        .arg(member)
        .cmd("ZCARD")
        .arg(&key)
        .query_async(&mut conn)
        .await?;
    Ok(n)
}

async fn leave(client: &LeaseClient, member: &str) -> Result<(), LeaseError> {
    let key = format!("{}members", client.prefix);
    let mut conn = client.conn.clone();
    let _: i64 = redis::cmd("ZREM")
        .arg(&key)
        .arg(member)
        .query_async(&mut conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_lapses_without_renewal_and_is_extended_only_for_its_epoch() {
        let f = Fences::default();
        assert_eq!(f.epoch("p"), None);
        f.set("p", 3, Instant::now() + Duration::from_millis(40));
        assert_eq!(f.epoch("p"), Some(3));
        f.extend("p", 2, Instant::now() + Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            f.epoch("p"),
            None,
            "lapsed: another epoch's renewal does not extend it"
        );
        f.set("p", 4, Instant::now() + Duration::from_millis(40));
        f.extend("p", 4, Instant::now() + Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(f.epoch("p"), Some(4));
        f.clear("p");
        assert_eq!(f.epoch("p"), None);
        assert!(f.is_empty());
    }
}
