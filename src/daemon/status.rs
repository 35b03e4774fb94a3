//! The pipelines' states and the daemon's heartbeat in the store, for `ztraded status`.
//!
//! [`StatusWriter`] takes a pipeline's status whenever an actor or the reconciler sets one
//! and queues a write only when the state, its reason or the pipeline's revision changed: a
//! bar that changes nothing costs a lock and a comparison, no store round trip. One task
//! writes the queue in order (the newest row of each pipeline wins when several are
//! waiting); a store error is logged and counted as `ztraded_store_errors_total
//! {operation="state"}` and never reaches the trading path.
//!
//! The daemon's own record is the `daemon` key of `daemon_state` ([`DAEMON_KEY`]):
//! `{pid, version, started_at, heartbeat_at, stopped_at, clock}`, wall-clock Unix seconds
//! except `clock` (the daemon's clock: simulated time in replay), written at start, every
//! [`HEARTBEAT_INTERVAL`] and at a clean stop.

use crate::config::load::ConfigSet;
use crate::engine::core::{PipelineSpec, Status};
use crate::metrics::{Metrics, StoreOperation};
use crate::store::{BudgetLimits, PipelineState, PipelineStatus, Store};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Daemon state key of the daemon's record (see the module documentation).
pub const DAEMON_KEY: &str = "daemon";

/// How often the daemon's record is refreshed while it runs.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// How long a clean stop waits for the queued status writes.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What was last queued for a pipeline: its state, reason and revision.
type Queued = (PipelineState, Option<String>, String);

enum Write {
    Set(Box<PipelineStatus>),
    Remove(String),
    Flush(oneshot::Sender<()>),
}

/// See the module documentation.
pub struct StatusWriter {
    tx: mpsc::UnboundedSender<Write>,
    /// What was last queued per pipeline: (state, reason, revision).
    last: Mutex<HashMap<String, Queued>>,
}

/// The stored state and reason of a status.
fn state_of(status: &Status) -> (PipelineState, Option<&str>) {
    match status {
        Status::Running => (PipelineState::Running, None),
        Status::Halted(r) => (PipelineState::Halted, Some(r.as_str())),
        Status::Draining => (PipelineState::Draining, None),
        Status::Stopped => (PipelineState::Stopped, None),
        Status::Failed(r) => (PipelineState::Failed, Some(r.as_str())),
    }
}

impl StatusWriter {
    /// A writer to `store`, its task spawned on the current runtime.
    pub fn spawn(store: Store, metrics: Arc<Metrics>) -> StatusWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(store, metrics, rx));
        StatusWriter {
            tx,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether (state, reason, revision) differs from what was last queued for `name`; if
    /// so it becomes the last queued.
    fn changed(&self, name: &str, status: &Status, revision: &str) -> bool {
        let (state, reason) = state_of(status);
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((s, r, rev)) = last.get(name)
            && *s == state
            && r.as_deref() == reason
            && rev == revision
        {
            return false;
        }
        last.insert(
            name.to_string(),
            (state, reason.map(str::to_string), revision.to_string()),
        );
        true
    }

    /// The status of a running pipeline (an actor's), at `now` (Unix seconds, the daemon's
    /// clock); `tz` is the market time zone (the budget's days without a window).
    pub fn publish(
        &self,
        name: &str,
        status: &Status,
        spec: &PipelineSpec,
        tz: chrono_tz::Tz,
        now: i64,
    ) {
        if !self.changed(name, status, &spec.revision) {
            return;
        }
        let c = &spec.compiled;
        let (state, reason) = state_of(status);
        let budget = c.budget.as_ref().map(|b| BudgetLimits {
            daily_usd: b.daily_usd,
            monthly_usd: b.monthly_usd,
            timezone: c
                .window
                .as_ref()
                .map_or(tz, |w| w.timezone())
                .name()
                .to_string(),
        });
        let _ = self.tx.send(Write::Set(Box::new(PipelineStatus {
            pipeline: name.to_string(),
            state,
            reason: reason.map(str::to_string),
            revision: spec.revision.clone(),
            mode: c.mode.as_str().to_string(),
            broker: c.broker.clone(),
            symbols: spec.symbols.clone(),
            budget,
            since: now,
        })));
    }

    /// The status of a pipeline that has no actor (its configuration could not be built),
    /// described from revision `set`.
    pub fn publish_config(
        &self,
        name: &str,
        status: &Status,
        set: &ConfigSet,
        tz: chrono_tz::Tz,
        now: i64,
    ) {
        let revision = set.short_revision();
        if !self.changed(name, status, revision) {
            return;
        }
        let spec = set.pipelines.get(name).and_then(|r| r.spec.as_ref());
        let (state, reason) = state_of(status);
        let budget = spec.and_then(|p| p.budget.as_ref()).map(|b| BudgetLimits {
            daily_usd: b.daily_usd,
            monthly_usd: b.monthly_usd,
            timezone: spec
                .and_then(|p| p.window.as_ref())
                .and_then(|w| w.timezone.parse())
                .unwrap_or(tz)
                .name()
                .to_string(),
        });
        let _ = self.tx.send(Write::Set(Box::new(PipelineStatus {
            pipeline: name.to_string(),
            state,
            reason: reason.map(str::to_string),
            revision: revision.to_string(),
            mode: spec.map_or("", |p| p.mode.as_str()).to_string(),
            broker: spec.and_then(|p| p.broker.clone()),
            symbols: spec.and_then(|p| p.symbols.clone()).unwrap_or_default(),
            budget,
            since: now,
        })));
    }

    /// Deletes the row of a pipeline that was removed and has drained.
    pub fn remove(&self, name: &str) {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
        let _ = self.tx.send(Write::Remove(name.to_string()));
    }

    /// Waits (at most 5 s) until every write queued before this call is done.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Write::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, rx).await;
        }
    }
}

async fn write_loop(store: Store, metrics: Arc<Metrics>, mut rx: mpsc::UnboundedReceiver<Write>) {
    while let Some(first) = rx.recv().await {
        // Everything queued now, the newest row of each pipeline only, in one pass.
        let mut pending: BTreeMap<String, Option<Box<PipelineStatus>>> = BTreeMap::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(w) = next {
            match w {
                Write::Set(s) => {
                    pending.insert(s.pipeline.clone(), Some(s));
                }
                Write::Remove(name) => {
                    pending.insert(name, None);
                }
                Write::Flush(done) => flushes.push(done),
            }
            next = rx.try_recv().ok();
        }
        for (name, row) in pending {
            let result = match &row {
                Some(s) => store.set_pipeline_status(s).await,
                None => store.delete_pipeline_status(&name).await.map(|_| ()),
            };
            if let Err(e) = result {
                warn!(pipeline = %name, error = %e, "pipeline status not stored");
                metrics.store_error(StoreOperation::State);
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// The daemon's record (see the module documentation).
#[derive(Clone, Debug)]
pub struct Heartbeat {
    store: Store,
    metrics: Arc<Metrics>,
    started_at: i64,
}

fn wall_now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Heartbeat {
    /// The record of a daemon starting now.
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Heartbeat {
        Heartbeat {
            store,
            metrics,
            started_at: wall_now(),
        }
    }

    /// Writes the record with the daemon's clock at `clock` (Unix seconds); `stopped` at a
    /// clean stop. A store error is logged and counted.
    pub async fn write(&self, clock: i64, stopped: bool) {
        let now = wall_now();
        let value = serde_json::json!({
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "started_at": self.started_at,
            "heartbeat_at": now,
            "stopped_at": if stopped { Some(now) } else { None },
            "clock": clock,
        });
        if let Err(e) = self.store.set_state(DAEMON_KEY, &value, now).await {
            warn!(error = %e, "daemon heartbeat not stored");
            self.metrics.store_error(StoreOperation::State);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn writer() -> (Store, StatusWriter) {
        let store = Store::connect("sqlite::memory:", 1, std::path::Path::new("."))
            .await
            .expect("in-memory store");
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let writer = StatusWriter::spawn(store.clone(), metrics);
        (store, writer)
    }

    #[tokio::test]
    async fn only_changes_are_queued() {
        let (_store, w) = writer().await;
        assert!(w.changed("p", &Status::Running, "rev1"));
        assert!(!w.changed("p", &Status::Running, "rev1"));
        assert!(w.changed("p", &Status::Running, "rev2"), "a new revision");
        assert!(w.changed("p", &Status::Halted("limit".into()), "rev2"));
        assert!(!w.changed("p", &Status::Halted("limit".into()), "rev2"));
        assert!(
            w.changed("p", &Status::Halted("other".into()), "rev2"),
            "a new reason"
        );
        assert!(w.changed("q", &Status::Running, "rev2"), "per pipeline");
        w.remove("p");
        assert!(
            w.changed("p", &Status::Halted("other".into()), "rev2"),
            "after a removal"
        );
    }

    #[tokio::test]
    async fn statuses_reach_the_store_once_per_change() {
        let (store, w) = writer().await;
        let set = crate::config::load::load_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
        let tz = chrono_tz::America::New_York;
        let failed = Status::Failed("broker sim is not configured".into());
        w.publish_config("golden-cross", &failed, &set, tz, 100);
        w.flush().await;
        let rows = store.pipeline_statuses().await.unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.pipeline, "golden-cross");
        assert_eq!(row.state, PipelineState::Failed);
        assert_eq!(row.reason.as_deref(), Some("broker sim is not configured"));
        assert_eq!(row.revision, set.short_revision());
        assert_eq!(
            (row.mode.as_str(), row.broker.as_deref()),
            ("simulation", Some("sim"))
        );
        assert_eq!(row.since, 100);
        // The same status again is not written (the deleted row stays deleted).
        store.clear_pipeline_statuses().await.unwrap();
        w.publish_config("golden-cross", &failed, &set, tz, 200);
        w.flush().await;
        assert!(store.pipeline_statuses().await.unwrap().is_empty());
        // A change is; a removal deletes it.
        w.publish_config("golden-cross", &Status::Stopped, &set, tz, 300);
        w.flush().await;
        let rows = store.pipeline_statuses().await.unwrap();
        assert_eq!(
            (rows[0].state, rows[0].reason.clone(), rows[0].since),
            (PipelineState::Stopped, None, 300)
        );
        w.remove("golden-cross");
        w.flush().await;
        assert!(store.pipeline_statuses().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_heartbeat_is_a_daemon_state_record() {
        let (store, _w) = writer().await;
        let hb = Heartbeat::new(store.clone(), Arc::new(Metrics::new().unwrap()));
        hb.write(1_325_566_800, false).await;
        let v = store.get_state(DAEMON_KEY).await.unwrap().unwrap();
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(v["clock"], 1_325_566_800);
        assert!(v["stopped_at"].is_null());
        assert!(v["heartbeat_at"].as_i64().unwrap() >= v["started_at"].as_i64().unwrap());
        hb.write(1_325_653_200, true).await;
        let v = store.get_state(DAEMON_KEY).await.unwrap().unwrap();
        assert!(v["stopped_at"].is_i64());
    }
}
