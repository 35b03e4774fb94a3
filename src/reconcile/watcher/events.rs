//! File events: a recursive notify watch of the root through notify-debouncer-full, reduced
//! to "something changed" / "the root itself went away" / "the watch failed" messages.
//!
//! Event kinds are not trusted for what changed (a rescan compares content hashes); they only
//! say that a rescan is due. The one exception is an event on the root itself (deleted or
//! moved away), after which the kernel watch is gone and must be set up again.

use crate::config::load::STATE_DIR;
use notify_debouncer_full::notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify_debouncer_full::notify::{self, EventKind, RecursiveMode};
use notify_debouncer_full::{
    DebounceEventResult, DebouncedEvent, Debouncer, RecommendedCache, new_debouncer_opt,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// The platform's recommended watcher (inotify on Linux) behind the full debouncer.
pub(super) type FileEvents = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// What the debouncer thread tells the watcher task.
#[derive(Debug)]
pub(super) enum FsMsg {
    /// A debounced batch that calls for a rescan.
    Changed {
        /// Which watch sent it (messages from a replaced watch are ignored).
        generation: u64,
        /// The root itself was removed or renamed: its kernel watch is gone.
        root_gone: bool,
        /// The kernel dropped events (inotify queue overflow): directories created
        /// meanwhile may be unwatched, so the watch must be set up again.
        lost: bool,
    },
    /// The watch reported errors (event queue read failure, too many watches, ...).
    Failed {
        /// Which watch sent it.
        generation: u64,
        /// The errors, for the log.
        errors: Vec<String>,
    },
}

impl FsMsg {
    /// The watch that sent the message.
    pub fn generation(&self) -> u64 {
        match self {
            FsMsg::Changed { generation, .. } | FsMsg::Failed { generation, .. } => *generation,
        }
    }
}

/// How long notify-debouncer-full holds an event: a quarter of the quiet time, between
/// 5 ms and 100 ms. The quiet time itself is kept by the watcher task, so this only merges
/// the raw events of one save (create, modify, close, rename pairs) into one batch.
pub(super) fn debouncer_timeout(quiet: Duration) -> Duration {
    (quiet / 4).clamp(Duration::from_millis(5), Duration::from_millis(100))
}

/// Whether an event can mean that what the loader reads changed. Opening or reading a file
/// cannot (and the loader's own reads produce such events: counting them would rescan
/// forever); everything else can, including events on hidden names (a ConfigMap update only
/// touches `..data` and `..<timestamp>` entries).
pub(super) fn is_relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Whether every path of the event lies in the daemon's state directory
/// (`<root>/`[`STATE_DIR`]): the store writes there all the time, and the loader never
/// reads it.
pub(super) fn in_state_dir(event: &DebouncedEvent, root: &Path) -> bool {
    let state = root.join(STATE_DIR);
    !event.paths.is_empty() && event.paths.iter().all(|p| p.starts_with(&state))
}

/// Whether the event says that `root` itself was removed or moved away.
pub(super) fn removes_root(event: &DebouncedEvent, root: &Path) -> bool {
    let gone = matches!(
        event.kind,
        EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(
                RenameMode::From | RenameMode::Any | RenameMode::Both
            ))
    );
    gone && event.paths.first().is_some_and(|p| p == root)
}

/// Reduces one debouncer result to the message for the watcher task, or `None` when nothing
/// in it calls for a rescan.
pub(super) fn classify(result: DebounceEventResult, root: &Path, generation: u64) -> Option<FsMsg> {
    match result {
        Ok(events) => {
            let relevant: Vec<&DebouncedEvent> = events
                .iter()
                .filter(|e| e.need_rescan() || (is_relevant(&e.kind) && !in_state_dir(e, root)))
                .collect();
            if relevant.is_empty() {
                return None;
            }
            Some(FsMsg::Changed {
                generation,
                root_gone: relevant.iter().any(|e| removes_root(e, root)),
                lost: relevant.iter().any(|e| e.need_rescan()),
            })
        }
        Err(errors) => Some(FsMsg::Failed {
            generation,
            errors: errors.iter().map(ToString::to_string).collect(),
        }),
    }
}

/// Sets up a recursive watch of `root` (an absolute path), following symbolic links, and
/// sends its messages to `tx`. Blocking: notify walks the whole tree to add one kernel watch
/// per directory.
///
/// # Errors
/// notify's error when the watcher cannot be created or the root cannot be watched (missing
/// root, too many watches for `fs.inotify.max_user_watches`, ...).
pub(super) fn establish(
    root: PathBuf,
    quiet: Duration,
    generation: u64,
    tx: UnboundedSender<FsMsg>,
) -> Result<FileEvents, notify::Error> {
    let watched = root.clone();
    let handler = move |result: DebounceEventResult| {
        if let Some(msg) = classify(result, &watched, generation) {
            // The receiver is gone only when the watcher task ended.
            let _ = tx.send(msg);
        }
    };
    let mut debouncer = new_debouncer_opt::<_, notify::RecommendedWatcher, RecommendedCache>(
        debouncer_timeout(quiet),
        None,
        handler,
        RecommendedCache::new(),
        notify::Config::default().with_follow_symlinks(true),
    )?;
    debouncer.watch(&root, RecursiveMode::Recursive)?;
    Ok(debouncer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RemoveKind};
    use notify::{Error, ErrorKind, Event};
    use std::time::Instant;

    fn ev(kind: EventKind, path: &str) -> DebouncedEvent {
        DebouncedEvent::new(
            Event::new(kind).add_path(PathBuf::from(path)),
            Instant::now(),
        )
    }

    #[test]
    fn reads_do_not_trigger_a_rescan() {
        let root = Path::new("/cfg");
        let reads = vec![
            ev(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                "/cfg/risk/a.yaml",
            ),
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                "/cfg/risk/a.yaml",
            ),
            ev(EventKind::Access(AccessKind::Read), "/cfg/risk"),
        ];
        assert!(classify(Ok(reads), root, 1).is_none());
        assert!(classify(Ok(Vec::new()), root, 1).is_none());
    }

    #[test]
    fn writes_creates_renames_and_hidden_names_trigger_a_rescan() {
        let root = Path::new("/cfg");
        for e in [
            ev(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                "/cfg/risk/a.yaml",
            ),
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                "/cfg/risk/a.yaml",
            ),
            ev(EventKind::Create(CreateKind::File), "/cfg/..data_tmp"),
            ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                "/cfg/..data_tmp",
            ),
            ev(EventKind::Remove(RemoveKind::Folder), "/cfg/risk"),
            ev(EventKind::Other, "/cfg"),
        ] {
            match classify(Ok(vec![e.clone()]), root, 7) {
                Some(FsMsg::Changed {
                    generation: 7,
                    root_gone: false,
                    lost: false,
                }) => {}
                other => panic!("{e:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn removing_or_moving_the_root_is_noticed() {
        let root = Path::new("/cfg");
        for kind in [
            EventKind::Remove(RemoveKind::Folder),
            EventKind::Remove(RemoveKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
        ] {
            let batch = vec![
                ev(EventKind::Modify(ModifyKind::Any), "/cfg/x"),
                ev(kind, "/cfg"),
            ];
            assert!(matches!(
                classify(Ok(batch), root, 1),
                Some(FsMsg::Changed {
                    root_gone: true,
                    ..
                })
            ));
        }
    }

    #[test]
    fn a_queue_overflow_asks_for_a_new_watch() {
        let overflow = DebouncedEvent::new(
            Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan),
            Instant::now(),
        );
        assert!(matches!(
            classify(Ok(vec![overflow]), Path::new("/cfg"), 1),
            Some(FsMsg::Changed {
                lost: true,
                root_gone: false,
                ..
            })
        ));
    }

    #[test]
    fn errors_are_reported() {
        let msg = classify(
            Err(vec![Error::new(ErrorKind::MaxFilesWatch)]),
            Path::new("/cfg"),
            3,
        );
        match msg {
            Some(FsMsg::Failed {
                generation: 3,
                errors,
            }) => assert_eq!(errors.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debouncer_timeout_is_a_quarter_within_bounds() {
        assert_eq!(
            debouncer_timeout(Duration::from_millis(200)),
            Duration::from_millis(50)
        );
        assert_eq!(debouncer_timeout(Duration::ZERO), Duration::from_millis(5));
        assert_eq!(
            debouncer_timeout(Duration::from_secs(60)),
            Duration::from_millis(100)
        );
    }
}
