//! Watching the config directory: debounced events, content-hash rescans, periodic resync.
//!
//! A [`Watcher`] follows one config directory and publishes every new desired state on a
//! [`tokio::sync::watch`] channel of [`Update`]s. The daemon only needs the latest state, so
//! the channel keeps the latest update; two different states found by two scans are always
//! two updates, and the receiver always ends up with the newest.
//!
//! How a change is found:
//!
//! 1. **File events.** One recursive notify watch of the root directory (not of single
//!    files), following symbolic links, merged by notify-debouncer-full. Events are only a
//!    hint that something may have changed: reads are dropped (the loader's own reads would
//!    otherwise trigger rescans forever), and so are events inside the daemon's state
//!    directory `.ztraded/` (the embedded store writes there with every bar); every other
//!    event counts, hidden names included, since a Kubernetes ConfigMap update only renames
//!    `..data` and creates and deletes `..<timestamp>` directories. The directory is rescanned once it has been quiet for
//!    [`WatchOptions::debounce`] (200 ms by default, `[reconcile] debounce`), and at the
//!    latest [`MAX_DEFER_FACTOR`] times the debounce after the first event of a burst that
//!    does not stop. notify-debouncer-full itself holds events for a quarter of the
//!    debounce (5 to 100 ms) to merge the raw events of one save, so a single edit is
//!    delivered about 1.3 × debounce plus the scan time after the write (`benches/watcher.rs`
//!    measures it).
//! 2. **Rescan and compare.** A rescan is a full
//!    [`load_dir_with_env`](crate::config::load::load_dir_with_env), run on Tokio's blocking
//!    pool. Its result is delivered only if its revision (SHA-256 over every file found,
//!    its kind, path and bytes, loadable or not) or its findings differ from the last
//!    delivered one. Touching a file, an editor's save of identical bytes or a hidden file
//!    delivers nothing; a change from valid to invalid or back always delivers. A missing root is delivered as an
//!    invalid set (an `io` error on the root), never as an empty valid one.
//! 3. **Periodic resync.** A full rescan every [`WatchOptions::resync_interval`] (60 s by
//!    default, `[reconcile] resync_interval`) after the last scan, as a backstop for lost
//!    events, and on demand with [`Watcher::resync`] (the daemon calls it on SIGHUP).
//! 4. **Fallback polling.** When the watch cannot be set up or fails (too many inotify
//!    watches, root deleted or moved away, event queue errors), the failure is logged and the
//!    directory is rescanned every [`WatchOptions::poll_interval`] (2 s by default), each time
//!    after trying to set the watch up again; once it succeeds, polling stops.
//!
//! What survives: in-place edits; atomic saves (temporary file renamed over the original,
//! vim's rename-to-backup then write, delete and recreate); deleted files; directories
//! created after the watch started, with files inside; the ConfigMap `..data` link swap; a
//! kind directory (`risk/`) removed and recreated; the root deleted and recreated; a
//! symbolic link to a directory outside the root pointed elsewhere (after every scan the
//! watcher compares the root's identity and the set of directories reached through links
//! outside the root with what the watch was set up on, and sets it up again when they
//! differ). Not covered by file events: the root being itself a symbolic link that is
//! pointed elsewhere (its parent is not watched): the next periodic resync finds it.
//!
//! Every delivered revision is logged at info level (`tracing`, target
//! `ztraded::reconcile::watcher`) with its reason, whether it is valid, and its numbers of
//! files, findings, errors and warnings; warnings are kept for the watch itself failing.

mod events;
mod scan;

use crate::config::load::{ConfigSet, EnvVars, process_env};
use crate::config::settings::ReconcileSettings;
use events::{FileEvents, FsMsg};
use scan::Fingerprint;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A burst of file events that never goes quiet is rescanned at the latest this many times
/// [`WatchOptions::debounce`] after its first event (but not before one second), so a file
/// rewritten continuously does not starve the watcher.
pub const MAX_DEFER_FACTOR: u32 = 10;

/// Shortest fallback polling interval accepted, 100 ms.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How a [`Watcher`] follows the directory.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Quiet time after the last file event before the directory is rescanned.
    pub debounce: Duration,
    /// Full rescan this long after the last scan, whatever the file events say. Zero turns
    /// the periodic resync off.
    pub resync_interval: Duration,
    /// Rescan interval while file events are unavailable (at least 100 ms; default 2 s).
    pub poll_interval: Duration,
    /// Whether to watch for file events at all. `false` relies on the periodic resync and
    /// [`Watcher::resync`] only (for file systems without change notification, such as some
    /// network mounts).
    pub file_events: bool,
    /// The `ZTRADED_*` variables applied over `ztraded.toml` on every scan.
    pub env: EnvVars,
}

impl WatchOptions {
    /// Default [`WatchOptions::poll_interval`]: 2 s.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

    /// Debounce and resync interval from `[reconcile]`, the default polling interval, file
    /// events on, and the process's `ZTRADED_*` variables as read now.
    pub fn from_settings(settings: &ReconcileSettings) -> WatchOptions {
        WatchOptions {
            debounce: settings.debounce.std(),
            resync_interval: settings.resync_interval.std(),
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
            file_events: true,
            env: process_env(),
        }
    }
}

impl Default for WatchOptions {
    /// [`WatchOptions::from_settings`] of the default `[reconcile]` settings.
    fn default() -> Self {
        WatchOptions::from_settings(&ReconcileSettings::default())
    }
}

/// Why a scan was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpdateReason {
    /// The first load, by [`Watcher::start`].
    Initial,
    /// File events under the root.
    Files,
    /// The periodic resync.
    Resync,
    /// Fallback polling while file events are unavailable.
    Poll,
    /// An explicit [`Watcher::resync`] (SIGHUP).
    Signal,
}

impl UpdateReason {
    /// Lower-case name, for logs: `initial`, `files`, `resync`, `poll`, `signal`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateReason::Initial => "initial",
            UpdateReason::Files => "files",
            UpdateReason::Resync => "resync",
            UpdateReason::Poll => "poll",
            UpdateReason::Signal => "signal",
        }
    }
}

/// A new desired state.
#[derive(Clone, Debug)]
pub struct Update {
    /// The scanned directory, valid or not (check [`ConfigSet::is_valid`]).
    pub set: Arc<ConfigSet>,
    /// What made the scan that found it.
    pub reason: UpdateReason,
    /// When that scan finished.
    pub scanned_at: std::time::Instant,
}

/// Why a watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The root cannot be read.
    #[error("config directory {}: {source}", path.display())]
    Root {
        /// The root as given.
        path: PathBuf,
        /// The error from the file system.
        source: std::io::Error,
    },
    /// The root is not a directory.
    #[error("config directory {}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The first scan did not finish (the loader panicked or the runtime is shutting down).
    #[error("config directory {}: the first scan failed: {message}", path.display())]
    Scan {
        /// The root as given.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Requests to the watcher task.
#[derive(Debug)]
enum Command {
    Resync,
    /// Replace the delivered set of this revision by its summary (see [`Watcher::release`]).
    Release(String),
    Stop,
}

/// Counters shared with the watcher task.
#[derive(Debug, Default)]
struct Status {
    scans: AtomicU64,
    deliveries: AtomicU64,
    file_events: AtomicBool,
}

/// A running watcher: a Tokio task that owns the notify watch and scans the directory.
/// Dropping it stops the task too (without waiting); [`Watcher::stop`] waits for it.
#[derive(Debug)]
pub struct Watcher {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
    status: Arc<Status>,
}

/// Triggers a resync of a running [`Watcher`] from elsewhere (a signal handler task).
#[derive(Clone, Debug)]
pub struct ResyncHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl ResyncHandle {
    /// Same as [`Watcher::resync`]. Does nothing once the watcher stopped.
    pub fn resync(&self) {
        let _ = self.commands.send(Command::Resync);
    }
}

impl Watcher {
    /// Starts following `root` with the `[reconcile]` settings (see
    /// [`WatchOptions::from_settings`]). Must be called within a Tokio runtime.
    ///
    /// The file-event watch is set up first, then the directory is loaded once; that first
    /// state is the receiver's initial value, with reason [`UpdateReason::Initial`]. A watch
    /// that cannot be set up is not an error: the watcher polls instead (see the module
    /// documentation).
    ///
    /// # Errors
    /// [`WatchError`] when `root` is not a readable directory or the first scan fails.
    pub async fn start(
        root: PathBuf,
        settings: &ReconcileSettings,
    ) -> Result<(Watcher, watch::Receiver<Update>), WatchError> {
        Watcher::start_with(root, WatchOptions::from_settings(settings)).await
    }

    /// [`Watcher::start`] with explicit options.
    ///
    /// # Errors
    /// As [`Watcher::start`].
    pub async fn start_with(
        root: PathBuf,
        options: WatchOptions,
    ) -> Result<(Watcher, watch::Receiver<Update>), WatchError> {
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(WatchError::NotADirectory(root)),
            Err(source) => return Err(WatchError::Root { path: root, source }),
        }
        let absolute = std::path::absolute(&root).map_err(|source| WatchError::Root {
            path: root.clone(),
            source,
        })?;
        let (fs_tx, fs_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let status = Arc::new(Status::default());
        let mut runner = Runner {
            root,
            absolute,
            options,
            fs_tx,
            fs_rx,
            commands: cmd_rx,
            status: status.clone(),
            events: None,
            generation: 0,
            next_poll: None,
            pending: None,
            next_resync: None,
            polling_warned: false,
            delivered: ConfigSet::default(),
        };
        runner.options.poll_interval = runner.options.poll_interval.max(MIN_POLL_INTERVAL);
        runner.establish().await;
        let (set, _) = runner
            .scan_blocking()
            .await
            .map_err(|message| WatchError::Scan {
                path: runner.root.clone(),
                message,
            })?;
        runner.after_scan();
        runner.delivered = set.summary();
        let update = Update {
            set: Arc::new(set),
            reason: UpdateReason::Initial,
            scanned_at: std::time::Instant::now(),
        };
        log_delivery(&update);
        status.deliveries.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(update);
        let task = tokio::spawn(runner.run(tx));
        Ok((
            Watcher {
                commands: cmd_tx,
                task,
                status,
            },
            rx,
        ))
    }

    /// Lets go of the resources of the delivered revision `revision` once the receiver has
    /// taken what it needs: the channel then keeps only that revision's summary (revision,
    /// findings and settings, no resources; see [`ConfigSet::summary`]). A daemon with
    /// thousands of pipelines would otherwise hold every parsed pipeline twice. Does nothing
    /// when a newer revision was delivered meanwhile, or once the watcher stopped.
    pub fn release(&self, revision: &str) {
        let _ = self.commands.send(Command::Release(revision.to_string()));
    }

    /// Rescans the directory now (reason [`UpdateReason::Signal`]) and delivers the result if
    /// it differs from the last delivered state. Requests made while a scan runs are merged
    /// into one scan after it.
    pub fn resync(&self) {
        let _ = self.commands.send(Command::Resync);
    }

    /// A cloneable handle that triggers [`Watcher::resync`].
    pub fn resync_handle(&self) -> ResyncHandle {
        ResyncHandle {
            commands: self.commands.clone(),
        }
    }

    /// Number of scans made so far, the first one included.
    pub fn scans(&self) -> u64 {
        self.status.scans.load(Ordering::Relaxed)
    }

    /// Number of updates delivered so far, the initial one included.
    pub fn deliveries(&self) -> u64 {
        self.status.deliveries.load(Ordering::Relaxed)
    }

    /// Whether file events are being received (`false` while the watcher polls, or when
    /// [`WatchOptions::file_events`] is off).
    pub fn file_events_active(&self) -> bool {
        self.status.file_events.load(Ordering::Relaxed)
    }

    /// Stops the task and the notify watch, and waits for the task to end (a scan in
    /// progress finishes first). The receivers then see the channel closed.
    pub async fn stop(mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Err(e) = (&mut self.task).await
            && e.is_panic()
        {
            tracing::error!(error = %e, "config watcher task panicked");
        }
    }
}

impl Drop for Watcher {
    /// Asks the task to stop (a [`ResyncHandle`] that outlives the watcher does not keep it
    /// running).
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
    }
}

/// Logs a delivered revision at info level, valid or not: whoever receives it decides what
/// an invalid one means (the daemon logs each finding and the refusal), so a warning here
/// would only say the same thing twice.
fn log_delivery(update: &Update) {
    let set = &update.set;
    let (errors, warnings) = (set.errors(), set.warnings());
    tracing::info!(
        revision = set.short_revision(),
        reason = update.reason.as_str(),
        valid = errors == 0,
        files = set.files,
        findings = set.findings.len(),
        errors,
        warnings,
        "config revision delivered"
    );
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// An active notify watch.
struct Active {
    /// Dropped to stop the watch.
    _debouncer: FileEvents,
    /// Messages with another generation come from a replaced watch.
    generation: u64,
    /// What the watch was set up on.
    fingerprint: Fingerprint,
}

/// File events waiting for the directory to go quiet.
#[derive(Clone, Copy, Debug)]
struct Pending {
    first: Instant,
    last: Instant,
}

impl Pending {
    /// When to rescan: `debounce` after the last event, at the latest
    /// [`MAX_DEFER_FACTOR`] × `debounce` (at least 1 s) after the first.
    fn due(self, debounce: Duration) -> Instant {
        let max = (debounce * MAX_DEFER_FACTOR).max(Duration::from_secs(1));
        (self.last + debounce).min(self.first + max)
    }
}

/// The watcher task's state.
struct Runner {
    /// The root as given (findings name files relative to it).
    root: PathBuf,
    /// The root made absolute (notify's event paths are absolute).
    absolute: PathBuf,
    options: WatchOptions,
    fs_tx: mpsc::UnboundedSender<FsMsg>,
    fs_rx: mpsc::UnboundedReceiver<FsMsg>,
    commands: mpsc::UnboundedReceiver<Command>,
    status: Arc<Status>,
    events: Option<Active>,
    generation: u64,
    /// Next fallback poll, while file events are unavailable.
    next_poll: Option<Instant>,
    pending: Option<Pending>,
    next_resync: Option<Instant>,
    /// Whether the failure to set up the watch was already logged as a warning.
    polling_warned: bool,
    /// Revision and findings of the last delivered state (what a new scan is compared to).
    delivered: ConfigSet,
}

impl Runner {
    async fn run(mut self, tx: watch::Sender<Update>) {
        loop {
            let files_due = self.pending.map(|p| p.due(self.options.debounce));
            let reason = tokio::select! {
                biased;
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Resync) => {
                        if self.drain_commands(&tx) {
                            break;
                        }
                        UpdateReason::Signal
                    }
                    Some(Command::Release(revision)) => {
                        release(&tx, &revision);
                        continue;
                    }
                    Some(Command::Stop) | None => break,
                },
                Some(msg) = self.fs_rx.recv() => match self.on_fs(msg).await {
                    Some(reason) => reason,
                    None => continue,
                },
                () = sleep_until_opt(files_due) => UpdateReason::Files,
                () = sleep_until_opt(self.next_poll) => {
                    self.establish().await;
                    UpdateReason::Poll
                }
                () = sleep_until_opt(self.next_resync) => UpdateReason::Resync,
            };
            self.rescan(reason, &tx).await;
        }
        tracing::debug!(root = %self.root.display(), "config watcher stopped");
    }

    /// Consumes queued commands after a resync request; `true` when one of them is a stop.
    fn drain_commands(&mut self, tx: &watch::Sender<Update>) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Resync) => {}
                Ok(Command::Release(revision)) => release(tx, &revision),
                Ok(Command::Stop) | Err(mpsc::error::TryRecvError::Disconnected) => return true,
                Err(mpsc::error::TryRecvError::Empty) => return false,
            }
        }
    }

    /// Handles a message from the debouncer; returns the reason of a rescan due now.
    async fn on_fs(&mut self, msg: FsMsg) -> Option<UpdateReason> {
        let current = self.events.as_ref().map(|a| a.generation);
        if current != Some(msg.generation()) {
            return None;
        }
        match msg {
            FsMsg::Changed {
                root_gone: true, ..
            } => {
                tracing::warn!(
                    root = %self.root.display(),
                    poll_interval_seconds = self.options.poll_interval.as_secs_f64(),
                    "config directory removed or moved away; polling until it is back"
                );
                self.polling_warned = true;
                self.lose_events();
                Some(UpdateReason::Files)
            }
            FsMsg::Changed { lost: true, .. } => {
                tracing::warn!(
                    root = %self.root.display(),
                    "file events were lost (event queue overflow); setting the watch up again"
                );
                self.events = None;
                self.establish().await;
                Some(UpdateReason::Files)
            }
            FsMsg::Changed { .. } => {
                let now = Instant::now();
                self.pending = Some(match self.pending {
                    Some(p) => Pending { last: now, ..p },
                    None => Pending {
                        first: now,
                        last: now,
                    },
                });
                None
            }
            FsMsg::Failed { errors, .. } => {
                tracing::warn!(
                    root = %self.root.display(),
                    errors = errors.join("; "),
                    poll_interval_seconds = self.options.poll_interval.as_secs_f64(),
                    "file events failed; polling until the watch can be set up again"
                );
                self.polling_warned = true;
                self.lose_events();
                Some(UpdateReason::Poll)
            }
        }
    }

    /// Drops the watch and starts polling.
    fn lose_events(&mut self) {
        self.events = None;
        self.status.file_events.store(false, Ordering::Relaxed);
        self.next_poll = Some(Instant::now() + self.options.poll_interval);
    }

    /// Sets the watch up (again), replacing the current one; polls on failure.
    async fn establish(&mut self) {
        if !self.options.file_events {
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        let root = self.absolute.clone();
        let quiet = self.options.debounce;
        let tx = self.fs_tx.clone();
        let result = tokio::task::spawn_blocking(move || {
            // Fingerprint first: a change in between makes the next comparison differ.
            let fingerprint = Fingerprint::of(&root);
            events::establish(root, quiet, generation, tx).map(|d| (d, fingerprint))
        })
        .await;
        let error = match result {
            Ok(Ok((debouncer, fingerprint))) => {
                if self.next_poll.is_some() {
                    tracing::info!(root = %self.root.display(), "file events set up again; polling stopped");
                }
                self.events = Some(Active {
                    _debouncer: debouncer,
                    generation,
                    fingerprint,
                });
                self.status.file_events.store(true, Ordering::Relaxed);
                self.next_poll = None;
                self.polling_warned = false;
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        if self.polling_warned {
            tracing::debug!(root = %self.root.display(), error, "file events still unavailable");
        } else {
            tracing::warn!(
                root = %self.root.display(),
                error,
                poll_interval_seconds = self.options.poll_interval.as_secs_f64(),
                "cannot watch the config directory; polling until the watch can be set up"
            );
            self.polling_warned = true;
        }
        self.lose_events();
    }

    /// One full scan on the blocking pool.
    async fn scan_blocking(&self) -> Result<(ConfigSet, Fingerprint), String> {
        let root = self.root.clone();
        let env = self.options.env.clone();
        let result = tokio::task::spawn_blocking(move || {
            let fingerprint = Fingerprint::of(&root);
            (scan::scan(&root, &env), fingerprint)
        })
        .await;
        self.status.scans.fetch_add(1, Ordering::Relaxed);
        result.map_err(|e| e.to_string())
    }

    /// Book-keeping after any scan: the periodic resync counts from the last scan.
    fn after_scan(&mut self) {
        self.next_resync = (!self.options.resync_interval.is_zero())
            .then(|| Instant::now() + self.options.resync_interval);
    }

    /// Rescans, delivers a changed state, and sets the watch up again when the layout it
    /// depends on changed (then rescans once more, for changes made before the new watch).
    async fn rescan(&mut self, reason: UpdateReason, tx: &watch::Sender<Update>) {
        self.pending = None;
        for attempt in 0..2 {
            let (set, fingerprint) = match self.scan_blocking().await {
                Ok(r) => r,
                Err(message) => {
                    tracing::error!(root = %self.root.display(), reason = reason.as_str(), message, "config scan failed");
                    self.after_scan();
                    return;
                }
            };
            self.after_scan();
            if scan::same_state(&self.delivered, &set) {
                tracing::debug!(
                    revision = set.short_revision(),
                    reason = reason.as_str(),
                    "config rescanned: unchanged"
                );
            } else {
                self.delivered = set.summary();
                let update = Update {
                    set: Arc::new(set),
                    reason,
                    scanned_at: std::time::Instant::now(),
                };
                log_delivery(&update);
                self.status.deliveries.fetch_add(1, Ordering::Relaxed);
                tx.send_replace(update);
            }
            let stale = self
                .events
                .as_ref()
                .is_some_and(|a| a.fingerprint != fingerprint);
            if !stale || attempt > 0 {
                return;
            }
            tracing::info!(
                root = %self.root.display(),
                "config directory replaced or a link now leads elsewhere; setting the watch up again"
            );
            self.events = None;
            self.establish().await;
            if self.events.is_none() {
                return;
            }
        }
    }
}

/// Replaces the delivered set by its summary when it still is revision `revision`, without
/// notifying the receivers (they have seen it).
fn release(tx: &watch::Sender<Update>, revision: &str) {
    tx.send_if_modified(|u| {
        if u.set.revision == revision {
            u.set = Arc::new(u.set.summary());
        }
        false
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_scan_waits_for_quiet_but_not_forever() {
        let d = Duration::from_millis(200);
        let t0 = Instant::now();
        let p = Pending {
            first: t0,
            last: t0 + Duration::from_millis(50),
        };
        assert_eq!(p.due(d), t0 + Duration::from_millis(250));
        let p = Pending {
            first: t0,
            last: t0 + Duration::from_secs(5),
        };
        assert_eq!(p.due(d), t0 + Duration::from_secs(2));
        // A tiny debounce still waits at most one second under constant events.
        let p = Pending {
            first: t0,
            last: t0 + Duration::from_secs(5),
        };
        assert_eq!(
            p.due(Duration::from_millis(10)),
            t0 + Duration::from_secs(1)
        );
    }

    #[test]
    fn options_follow_the_settings() {
        let settings = ReconcileSettings::default();
        let o = WatchOptions::from_settings(&settings);
        assert_eq!(o.debounce, Duration::from_millis(200));
        assert_eq!(o.resync_interval, Duration::from_secs(60));
        assert_eq!(o.poll_interval, Duration::from_secs(2));
        assert!(o.file_events);
        assert_eq!(
            UpdateReason::Signal.as_str(),
            "signal",
            "log names are stable"
        );
    }

    #[tokio::test]
    async fn start_refuses_a_file_or_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            Watcher::start_with(file, WatchOptions::default()).await,
            Err(WatchError::NotADirectory(_))
        ));
        let err = Watcher::start_with(dir.path().join("nope"), WatchOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, WatchError::Root { .. }));
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
