//! The reconciler: makes the running pipelines match each valid revision of the config
//! directory, with a typed diff, and refuses invalid revisions whole.

use super::actor::{self, ActorHandle, Message, Shared};
use crate::config::load::ConfigSet;
use crate::config::pipeline::OnRemove;
use crate::engine::core::{PipelineSpec, Status};
use crate::metrics::{PipelineCounts, ReloadResult};
use crate::reconcile::diff::{Change, ChangeKind, Snapshot, diff, settings_changed};
use crate::store::{ReconcileRecord, ReconcileResult};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Daemon state key of the last applied revision's resource files.
pub const APPLIED_FILES_KEY: &str = "applied_files";

/// What a reconcile did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The revision is running.
    Applied(Vec<Change>),
    /// Nothing changed.
    Unchanged,
    /// The revision is invalid; the previous one keeps running.
    Refused(usize),
}

/// The reconciler.
pub struct Controller {
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    actors: BTreeMap<String, ActorHandle>,
    applied: Option<Snapshot>,
    /// The revision applied last (what a pipeline gained by lease starts from).
    applied_set: Option<Arc<ConfigSet>>,
    /// Several daemons: the pipelines whose lease this daemon holds (and whose epoch the
    /// store has); the others are on standby here. `None` with one daemon: every pipeline
    /// runs.
    leased: Option<std::collections::BTreeSet<String>>,
}

impl Controller {
    /// A reconciler with nothing running.
    pub fn new(shared: Arc<Shared>, shutdown: watch::Receiver<bool>) -> Controller {
        Controller {
            shared,
            shutdown,
            actors: BTreeMap::new(),
            applied: None,
            applied_set: None,
            leased: None,
        }
    }

    /// Several daemons on one account: from now on a pipeline runs here only while this
    /// daemon holds its lease ([`Controller::lease_gained`], [`Controller::lease_lost`]).
    pub fn use_leases(&mut self) {
        self.leased = Some(Default::default());
    }

    /// How many pipelines run here by lease (0 with one daemon).
    pub fn leased_count(&self) -> usize {
        self.leased.as_ref().map_or(0, |h| h.len())
    }

    /// The pipelines enabled in the applied revision, and those still running here until
    /// flat after their removal: the pipelines this daemon holds or may take leases for.
    pub fn desired(&self) -> std::collections::BTreeSet<String> {
        let mut names: std::collections::BTreeSet<String> = self
            .applied
            .as_ref()
            .map(|s| {
                s.pipelines
                    .iter()
                    .filter(|(_, p)| p.enabled)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        names.extend(
            self.actors
                .iter()
                .filter(|(_, a)| !a.task.is_finished())
                .map(|(n, _)| n.clone()),
        );
        names
    }

    /// This daemon holds `name`'s lease now (its epoch is in the store): the pipeline's
    /// positions, orders and pending intents are taken over from the store and the brokers
    /// ([`crate::runtime::Account::readopt`]), then it starts, as after a restart.
    pub async fn lease_gained(&mut self, name: &str) {
        if let Some(held) = &mut self.leased {
            held.insert(name.to_string());
        }
        if self.actors.get(name).is_some_and(|a| !a.task.is_finished()) {
            return;
        }
        let Some(set) = self.applied_set.clone() else {
            return;
        };
        let enabled = self
            .applied
            .as_ref()
            .and_then(|s| s.pipelines.get(name))
            .is_some_and(|p| p.enabled);
        if !enabled {
            return;
        }
        let config = match self.actor_config(name, &set) {
            Ok(c) => c,
            Err(reason) => {
                error!(pipeline = name, %reason, "pipeline cannot start");
                return;
            }
        };
        if let Err(e) = self.shared.account.readopt(name).await {
            error!(pipeline = name, error = %e, "the pipeline's positions could not be taken over from the store; it does not start here");
            self.shared
                .metrics
                .store_error(crate::metrics::StoreOperation::Recovery);
            return;
        }
        info!(pipeline = name, symbols = ?config.symbols, "pipeline started: its lease is held here");
        let handle = actor::spawn(
            name.to_string(),
            config,
            Arc::clone(&self.shared),
            self.shutdown.clone(),
        );
        self.actors.insert(name.to_string(), handle);
    }

    /// This daemon no longer holds `name`'s lease (its orders are refused already): the
    /// pipeline stops here at once, its positions and orders left as they are for the
    /// daemon that takes it over.
    pub fn lease_lost(&mut self, name: &str) {
        if let Some(held) = &mut self.leased {
            held.remove(name);
        }
        if let Some(a) = self.actors.remove(name) {
            a.task.abort();
            self.shared.registry.unregister(name);
            self.shared
                .statuses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(name);
            info!(
                pipeline = name,
                "pipeline stopped here: its lease is held elsewhere"
            );
        }
    }

    /// The revision running, if any.
    pub fn revision(&self) -> Option<&str> {
        self.applied.as_ref().map(|s| s.revision.as_str())
    }

    /// Records a refused revision (invalid, or refused by the removal guard): one log line
    /// with its own hash and the running one's, the reload counter, the reconcile record
    /// with `findings` in the store. The running revision stays.
    async fn refuse(
        &self,
        set: &ConfigSet,
        diff: serde_json::Value,
        findings: &[crate::config::Finding],
        now: i64,
        started: Instant,
    ) {
        let metrics = &self.shared.metrics;
        let running = self.revision().map_or("none", |r| &r[..12.min(r.len())]);
        let errors = findings
            .iter()
            .filter(|f| f.severity == crate::config::Severity::Error)
            .count();
        error!(revision = %set.short_revision(), running, errors, "config revision refused; the running revision stays");
        {
            use crate::config::settings::NotifyEvent;
            let first: Vec<String> = findings
                .iter()
                .filter(|f| f.severity == crate::config::Severity::Error)
                .take(10)
                .map(crate::config::Finding::human)
                .collect();
            let revision = set.short_revision();
            self.shared
                .account
                .notify(&[NotifyEvent::RevisionRefused], || crate::notify::Notification {
                    event: NotifyEvent::RevisionRefused,
                    at: now,
                    title: format!(
                        "config revision {revision} refused ({errors} errors); {running} keeps running"
                    ),
                    text: first.join("\n"),
                    pipeline: None,
                    symbol: None,
                    details: serde_json::json!({
                        "revision": set.revision,
                        "running": self.revision(),
                        "diff": diff,
                        "findings": findings,
                    }),
                });
        }
        metrics.config_reloaded(ReloadResult::Refused, SystemTime::now());
        self.store_reconcile(set, ReconcileResult::Refused, diff, findings, now, started)
            .await;
        metrics.reconcile_finished(started.elapsed().as_secs_f64());
    }

    /// Stores the reconcile record of `set` (against the running revision); a store error
    /// is logged and counted, and changes nothing else.
    async fn store_reconcile(
        &self,
        set: &ConfigSet,
        result: ReconcileResult,
        diff: serde_json::Value,
        findings: &[crate::config::Finding],
        now: i64,
        started: Instant,
    ) {
        let record = ReconcileRecord {
            id: 0,
            at: now,
            revision: set.revision.clone(),
            previous_revision: self.applied.as_ref().map(|s| s.revision.clone()),
            result,
            diff,
            findings: serde_json::to_value(findings).unwrap_or_default(),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        if let Err(e) = self.shared.store.record_reconcile(&record).await {
            warn!(error = %e, "reconcile not stored");
            self.shared
                .metrics
                .store_error(crate::metrics::StoreOperation::State);
        }
    }

    /// Reconciles with `set`.
    pub async fn apply(&mut self, set: Arc<ConfigSet>) -> Outcome {
        let started = Instant::now();
        let now = self.shared.account.now();
        let metrics = Arc::clone(&self.shared.metrics);
        if set.errors() > 0 {
            for f in set
                .findings
                .iter()
                .filter(|f| f.severity == crate::config::Severity::Error)
            {
                error!(file = %f.file, line = f.line, column = f.column, code = f.code, "{}", f.human());
            }
            let errors = set.errors();
            self.refuse(&set, json!({}), &set.findings, now, started)
                .await;
            return Outcome::Refused(errors);
        }
        let new = Snapshot::of(&set);
        let old = self.applied.clone().unwrap_or_default();
        if self.applied.is_some() && old.revision == new.revision {
            metrics.config_reloaded(ReloadResult::Unchanged, SystemTime::now());
            return Outcome::Unchanged;
        }
        if self.applied.is_some() && settings_changed(&old, &new) {
            warn!(
                "ztraded.toml changed: store, bus, HTTP, broker and market data settings apply at the next restart"
            );
        }
        let changes = diff(&old, &new);
        // Removing many pipelines at once (a vanished directory, a failed checkout) is
        // refused like an invalid revision: the running one stays.
        let refusals =
            crate::reconcile::guard::removals(&old, &new, &changes, &set.settings.reconcile);
        if !refusals.is_empty() {
            for f in &refusals {
                error!(code = f.code, "{}", f.human());
            }
            self.refuse(&set, json!({ "changes": changes }), &refusals, now, started)
                .await;
            return Outcome::Refused(refusals.len());
        }
        let switched = match self.shared.live.clone() {
            Some(live) => live.prepare(self.data_needs(&changes, &set)).await,
            None => Vec::new(),
        };
        for change in &changes {
            self.apply_change(change, &set).await;
        }
        if !switched.is_empty() {
            self.restart_on(&switched, &changes, &set).await;
        }
        for f in set.findings.iter() {
            warn!(file = %f.file, line = f.line, column = f.column, code = f.code, "{}", f.human());
        }
        info!(
            revision = %set.short_revision(),
            added = changes.iter().filter(|c| matches!(c.kind, ChangeKind::Added | ChangeKind::Enabled)).count(),
            changed = changes.iter().filter(|c| c.kind == ChangeKind::Changed).count(),
            removed = changes.iter().filter(|c| matches!(c.kind, ChangeKind::Removed | ChangeKind::Disabled)).count(),
            "config revision applied"
        );
        metrics.config_reloaded(ReloadResult::Applied, SystemTime::now());
        metrics.set_config_revision(&set.revision);
        self.store_reconcile(
            &set,
            ReconcileResult::Applied,
            json!({ "changes": changes, "state": new }),
            &set.findings,
            now,
            started,
        )
        .await;
        if let Err(e) = self
            .shared
            .store
            .set_state(APPLIED_FILES_KEY, &applied_files(&set), now)
            .await
        {
            warn!(error = %e, "applied revision files not stored");
            metrics.store_error(crate::metrics::StoreOperation::State);
        }
        self.applied = Some(new);
        self.applied_set = Some(Arc::clone(&set));
        self.reap();
        metrics.reconcile_finished(started.elapsed().as_secs_f64());
        Outcome::Applied(changes)
    }

    /// What the pipelines `changes` start or change read of the market, per symbol (the
    /// finest and coarsest timeframes and the longest lookback over them).
    fn data_needs(
        &self,
        changes: &[Change],
        set: &ConfigSet,
    ) -> BTreeMap<String, crate::engine::core::DataNeed> {
        let mut needs: BTreeMap<String, crate::engine::core::DataNeed> = BTreeMap::new();
        for change in changes {
            if !matches!(
                change.kind,
                ChangeKind::Added | ChangeKind::Enabled | ChangeKind::Changed
            ) {
                continue;
            }
            let Ok(spec) = self.actor_config(&change.pipeline, set) else {
                continue;
            };
            let need = spec.data_need();
            for symbol in &spec.symbols {
                needs
                    .entry(symbol.clone())
                    .and_modify(|n| {
                        n.finest = n.finest.min(need.finest);
                        n.coarsest = n.coarsest.max(need.coarsest);
                        n.lookback = n.lookback.max(need.lookback);
                    })
                    .or_insert(need);
            }
        }
        needs
    }

    /// Restarts the running pipelines that read one of `symbols` (switched to a finer live
    /// timeframe) and are not among `changes` (those started on the new data already):
    /// between executions, positions kept, feeds warmed up again.
    async fn restart_on(&mut self, symbols: &[String], changes: &[Change], set: &ConfigSet) {
        let changed: Vec<&str> = changes.iter().map(|c| c.pipeline.as_str()).collect();
        let names: Vec<String> = self.actors.keys().cloned().collect();
        for name in names {
            if changed.contains(&name.as_str()) {
                continue;
            }
            let Ok(config) = self.actor_config(&name, set) else {
                continue;
            };
            if !config.symbols.iter().any(|s| symbols.contains(s)) {
                continue;
            }
            if let Some(a) = self.actors.get(&name)
                && !a.task.is_finished()
            {
                info!(pipeline = %name, "restarting on the finer live data of its symbols");
                let _ = a.tx.send(Message::Update(Box::new(config))).await;
            }
        }
    }

    fn actor_config(&self, name: &str, set: &ConfigSet) -> Result<PipelineSpec, String> {
        crate::runtime::spec::build(name, set)
    }

    async fn apply_change(&mut self, change: &Change, set: &ConfigSet) {
        let name = change.pipeline.as_str();
        match change.kind {
            ChangeKind::Added | ChangeKind::Enabled | ChangeKind::Changed => {
                let config = match self.actor_config(name, set) {
                    Ok(c) => c,
                    Err(reason) => {
                        error!(pipeline = name, %reason, "pipeline cannot start");
                        let status = Status::Failed(reason);
                        self.shared.status_writer.publish_config(
                            name,
                            &status,
                            set,
                            self.shared.tz,
                            self.shared.account.now(),
                        );
                        self.shared
                            .statuses
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(name.to_string(), status);
                        return;
                    }
                };
                let alive = self.actors.get(name).is_some_and(|a| !a.task.is_finished());
                if alive {
                    if change.kind == ChangeKind::Changed {
                        info!(pipeline = name, fields = ?change.fields, because = ?change.because, "pipeline changed");
                    }
                    self.shared
                        .registry
                        .set_symbols(name, config.symbols.clone());
                    if let Some(a) = self.actors.get(name) {
                        let _ = a.tx.send(Message::Update(Box::new(config))).await;
                    }
                } else if self
                    .leased
                    .as_ref()
                    .is_some_and(|held| !held.contains(name))
                {
                    info!(
                        pipeline = name,
                        "pipeline on standby: another daemon holds its lease"
                    );
                } else {
                    info!(pipeline = name, symbols = ?config.symbols, "pipeline started");
                    let handle = actor::spawn(
                        name.to_string(),
                        config,
                        Arc::clone(&self.shared),
                        self.shutdown.clone(),
                    );
                    self.actors.insert(name.to_string(), handle);
                }
            }
            ChangeKind::Removed | ChangeKind::Disabled => {
                let close = change.on_remove == Some(OnRemove::Close);
                info!(
                    pipeline = name,
                    kind = change.kind.as_str(),
                    on_remove = if close { "close" } else { "drain" },
                    "pipeline removed"
                );
                if let Some(a) = self.actors.get(name) {
                    let _ = a.tx.send(Message::Remove { close }).await;
                }
            }
        }
    }

    /// Starts pipelines that are no longer in the desired state but still hold positions
    /// (removed while the daemon was down) from the revision that last ran them, and
    /// removes them at once: they drain or close by their `on_remove`, so no position is
    /// left without its pipeline managing its exits.
    pub async fn adopt_orphans(&mut self, previous: &ConfigSet, orphans: &[String]) {
        for name in orphans {
            if self.actors.contains_key(name) {
                continue;
            }
            let Some(spec) = previous.pipelines.get(name).and_then(|r| r.spec.as_ref()) else {
                warn!(pipeline = %name, "open positions of a pipeline whose config is gone: protected by their stops and targets only");
                continue;
            };
            match self.actor_config(name, previous) {
                Ok(config) => {
                    let close = spec.on_remove == OnRemove::Close;
                    warn!(pipeline = %name, on_remove = if close { "close" } else { "drain" }, "pipeline removed while the daemon was down still holds positions; running it until flat");
                    let handle = actor::spawn(
                        name.clone(),
                        config,
                        Arc::clone(&self.shared),
                        self.shutdown.clone(),
                    );
                    let _ = handle.tx.send(Message::Remove { close }).await;
                    self.actors.insert(name.clone(), handle);
                }
                Err(reason) => {
                    warn!(pipeline = %name, %reason, "open positions of a pipeline that cannot start: protected by their stops and targets only")
                }
            }
        }
    }

    /// Forgets actors that stopped (drained) and are not desired any more; publishes the
    /// pipeline counts.
    pub fn reap(&mut self) {
        let desired: Vec<String> = self
            .applied
            .as_ref()
            .map(|s| {
                s.pipelines
                    .iter()
                    .filter(|(_, p)| p.enabled)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        let finished: Vec<String> = self
            .actors
            .iter()
            .filter(|(_, a)| a.task.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for name in finished {
            self.actors.remove(&name);
            self.shared.registry.unregister(&name);
            if !desired.contains(&name) {
                self.shared.account.forget_pipeline(&name);
                self.shared.metrics.remove_pipeline(&name);
                self.shared
                    .statuses
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&name);
                self.shared.status_writer.remove(&name);
                info!(pipeline = %name, "pipeline stopped and removed");
            }
        }
        let statuses = self
            .shared
            .statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = |k: &str| statuses.values().filter(|s| s.as_str() == k).count() as u64;
        self.shared.metrics.set_pipeline_counts(PipelineCounts {
            running: count("running"),
            halted: count("halted"),
            draining: count("draining"),
            stopped: count("stopped"),
            failed: count("failed"),
        });
    }

    /// Stops every actor: they finish the execution they are in; after `grace`, the rest
    /// are aborted (their executions are marked interrupted by the caller).
    pub async fn stop_all(&mut self, grace: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for (name, a) in std::mem::take(&mut self.actors) {
            let mut task = a.task;
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(_) => {}
                Err(_) => {
                    warn!(pipeline = %name, "still running at the end of the grace period; stopped");
                    task.abort();
                }
            }
        }
    }
}

/// The resource files of a revision (`{kind: {name: text}}`), kept so that the daemon can
/// start on the last valid revision when the directory is invalid at start.
fn applied_files(set: &ConfigSet) -> serde_json::Value {
    let texts = |m: Vec<(&String, &str)>| -> serde_json::Map<String, serde_json::Value> {
        m.into_iter().map(|(n, t)| (n.clone(), json!(t))).collect()
    };
    json!({
        "revision": set.revision,
        "pipelines": texts(set.pipelines.iter().map(|(n, r)| (n, &*r.doc.source)).collect()),
        "scanners": texts(set.scanners.iter().map(|(n, r)| (n, &*r.doc.source)).collect()),
        "risk": texts(set.risk.iter().map(|(n, r)| (n, &*r.doc.source)).collect()),
    })
}

/// Writes the stored files of the last applied revision under `dir` (pipelines/, scanners/,
/// risk/), returning whether there were any.
pub fn restore_files(stored: &serde_json::Value, dir: &std::path::Path) -> std::io::Result<bool> {
    let mut any = false;
    for kind in ["pipelines", "scanners", "risk"] {
        let Some(files) = stored.get(kind).and_then(|v| v.as_object()) else {
            continue;
        };
        let sub = dir.join(kind);
        std::fs::create_dir_all(&sub)?;
        for (name, text) in files {
            if crate::config::common::is_valid_name(name)
                && let Some(text) = text.as_str()
            {
                std::fs::write(sub.join(format!("{name}.yaml")), text)?;
                any = true;
            }
        }
    }
    Ok(any)
}
