//! The config watcher on a real file system with real notify (inotify on Linux), in temporary
//! directories: every kind of change an editor, git, an operator or Kubernetes makes is
//! delivered as a new revision within a bounded wait, and changes that leave the content as
//! it was (touch, identical rewrite, hidden files) make the watcher rescan but deliver
//! nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch::Receiver;
use ztraded::config::load::{ConfigSet, load_dir_with_env};
use ztraded::reconcile::watcher::{Update, UpdateReason, WatchOptions, Watcher};

/// Longest wait for an expected delivery (slow CI machines); the helpers return as soon as
/// it happens.
const WAIT: Duration = Duration::from_secs(10);

/// A valid risk policy whose description is `desc` (each description is another revision).
fn risk(desc: &str) -> String {
    format!(
        "description: {desc}\n\
         sizing:\n  risk_per_trade_pct: 1.0\n  max_position_pct: 20\n\
         limits:\n  max_pipeline_capital_pct: 50\n  max_deployed_pct: 90\n  daily_loss_usd: 3000\n  daily_loss_action: halt\n\
         trade:\n  require_stop_loss: true\n  min_reward_risk: 1.5\n  allow_short: false\n"
    )
}

fn options(debounce_ms: u64) -> WatchOptions {
    WatchOptions {
        debounce: Duration::from_millis(debounce_ms),
        resync_interval: Duration::from_secs(3600),
        poll_interval: Duration::from_millis(200),
        file_events: true,
        env: Vec::new(),
    }
}

fn load(root: &Path) -> ConfigSet {
    load_dir_with_env(root, &Vec::new())
}

/// A config directory `<tmp>/cfg` with `risk/default.yaml`.
fn config_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cfg");
    std::fs::create_dir_all(root.join("risk")).unwrap();
    std::fs::write(root.join("risk/default.yaml"), risk("v1")).unwrap();
    let set = load(&root);
    assert_eq!(set.errors(), 0, "fixture is valid: {:?}", set.findings);
    (dir, root)
}

async fn start(root: &Path, options: WatchOptions) -> (Watcher, Receiver<Update>) {
    let (w, rx) = Watcher::start_with(root.to_path_buf(), options)
        .await
        .unwrap();
    assert_eq!(rx.borrow().reason, UpdateReason::Initial);
    assert_eq!(rx.borrow().set.revision, load(root).revision);
    (w, rx)
}

/// Waits for an update that satisfies `pred`, panicking after [`WAIT`].
async fn wait_for(rx: &mut Receiver<Update>, what: &str, pred: impl Fn(&Update) -> bool) -> Update {
    let deadline = Instant::now() + WAIT;
    loop {
        {
            let u = rx.borrow_and_update();
            if pred(&u) {
                return u.clone();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("watcher stopped while waiting for {what}"),
            Err(_) => {
                let u = rx.borrow();
                panic!(
                    "no update with {what} within {WAIT:?}; last: {} ({:?}, {} errors)",
                    u.set.short_revision(),
                    u.reason,
                    u.set.errors()
                );
            }
        }
    }
}

/// Waits for the revision the directory has now (loaded here, as the daemon would).
async fn wait_current(rx: &mut Receiver<Update>, root: &Path, what: &str) -> Update {
    let expected = load(root);
    let u = wait_for(rx, what, |u| u.set.revision == expected.revision).await;
    assert_eq!(
        u.set.errors(),
        expected.errors(),
        "{what}: {:?}",
        u.set.findings
    );
    u
}

/// Polls `cond` every 10 ms for at most [`WAIT`].
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until no scan has happened for `quiet`.
async fn settle(w: &Watcher, quiet: Duration) {
    let deadline = Instant::now() + WAIT;
    let mut scans = w.scans();
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        assert!(Instant::now() < deadline, "watcher never went quiet");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = w.scans();
        if now != scans {
            scans = now;
            since = Instant::now();
        }
    }
}

/// Makes `change`, waits until it made the watcher rescan, then checks that nothing was
/// delivered, also after waiting a while longer.
async fn assert_noop(
    w: &Watcher,
    rx: &mut Receiver<Update>,
    debounce: Duration,
    what: &str,
    change: impl FnOnce(),
) {
    settle(w, debounce * 3 + Duration::from_millis(100)).await;
    rx.borrow_and_update();
    let (scans, deliveries) = (w.scans(), w.deliveries());
    change();
    eventually(&format!("{what} triggers a rescan"), || w.scans() > scans).await;
    tokio::time::sleep(debounce * 2 + Duration::from_millis(300)).await;
    assert!(
        !rx.has_changed().unwrap(),
        "{what} delivered revision {}",
        rx.borrow().set.short_revision()
    );
    assert_eq!(w.deliveries(), deliveries, "{what} delivered something");
}

fn write(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
}

#[cfg(unix)]
fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[tokio::test]
async fn initial_state_is_delivered_and_an_idle_watcher_stays_idle() {
    let (_dir, root) = config_dir();
    let (w, rx) = start(&root, options(50)).await;
    assert!(w.file_events_active());
    assert_eq!(rx.borrow().set.errors(), 0);
    assert_eq!(w.deliveries(), 1);
    // The loader's own reads must not make the watcher rescan again and again.
    let scans = w.scans();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        w.scans() <= scans + 1,
        "idle watcher rescanned {} times",
        w.scans() - scans
    );
    w.stop().await;
}

#[tokio::test]
async fn plain_edit_is_delivered_and_noop_changes_are_not() {
    let (_dir, root) = config_dir();
    let debounce = Duration::from_millis(50);
    let (w, mut rx) = start(&root, options(50)).await;
    let file = root.join("risk/default.yaml");

    write(&file, &risk("v2"));
    let u = wait_current(&mut rx, &root, "the edit").await;
    assert_eq!(u.reason, UpdateReason::Files);

    assert_noop(&w, &mut rx, debounce, "rewriting identical bytes", || {
        write(&file, &risk("v2"))
    })
    .await;
    assert_noop(&w, &mut rx, debounce, "touch", || {
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
    })
    .await;
    assert_noop(&w, &mut rx, debounce, "a hidden file", || {
        write(&root.join("risk/.notes.yaml"), "not: loaded\n")
    })
    .await;
    assert_noop(&w, &mut rx, debounce, "an editor swap file", || {
        write(&root.join("risk/.default.yaml.swp"), "swap")
    })
    .await;

    // Still following after the no-ops.
    write(&file, &risk("v3"));
    wait_current(&mut rx, &root, "the edit after the no-ops").await;
    w.stop().await;
}

#[tokio::test]
async fn atomic_saves_are_delivered() {
    let (_dir, root) = config_dir();
    let (w, mut rx) = start(&root, options(50)).await;
    let file = root.join("risk/default.yaml");
    for i in 0..3 {
        // Temporary file next to the original, renamed over it (a new inode each time).
        let tmp = root.join(format!("risk/.default.yaml.{i}.tmp"));
        write(&tmp, &risk(&format!("renamed-{i}")));
        std::fs::rename(&tmp, &file).unwrap();
        wait_current(&mut rx, &root, &format!("atomic save {i}")).await;
    }
    for i in 0..3 {
        // vim: probe file, original renamed to the backup, new file written, backup removed.
        write(&root.join("risk/4913"), "");
        std::fs::remove_file(root.join("risk/4913")).unwrap();
        let backup = root.join("risk/default.yaml~");
        std::fs::rename(&file, &backup).unwrap();
        write(&file, &risk(&format!("vim-{i}")));
        std::fs::remove_file(&backup).unwrap();
        wait_current(&mut rx, &root, &format!("vim save {i}")).await;
    }
    // Deleted, then created again a moment later.
    std::fs::remove_file(&file).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    write(&file, &risk("recreated"));
    wait_current(&mut rx, &root, "delete and recreate").await;
    w.stop().await;
}

#[tokio::test]
async fn deletes_are_delivered() {
    let (_dir, root) = config_dir();
    write(&root.join("risk/second.yaml"), &risk("second"));
    let (w, mut rx) = start(&root, options(50)).await;
    assert!(rx.borrow().set.risk.contains_key("second"));
    std::fs::remove_file(root.join("risk/second.yaml")).unwrap();
    let u = wait_current(&mut rx, &root, "the delete").await;
    assert!(!u.set.risk.contains_key("second"));
    assert!(u.set.risk.contains_key("default"));
    w.stop().await;
}

#[tokio::test]
async fn new_subdirectories_are_followed() {
    let (_dir, root) = config_dir();
    let (w, mut rx) = start(&root, options(50)).await;
    // A nested directory created at once, with a file.
    std::fs::create_dir_all(root.join("risk/team/desk")).unwrap();
    write(&root.join("risk/team/desk/desk-a.yaml"), &risk("desk a"));
    let u = wait_current(&mut rx, &root, "the file in the new directory").await;
    assert!(u.set.risk.contains_key("desk-a"));
    // The new directory is watched: an edit inside it is seen by file events.
    write(&root.join("risk/team/desk/desk-a.yaml"), &risk("desk a v2"));
    let u = wait_current(&mut rx, &root, "the edit in the new directory").await;
    assert_eq!(u.reason, UpdateReason::Files);
    // A kind directory that did not exist at start.
    std::fs::create_dir(root.join("scanners")).unwrap();
    write(
        &root.join("scanners/megacaps.yaml"),
        "description: Largest US stocks\ntickers: [AAPL, MSFT]\n",
    );
    let u = wait_current(&mut rx, &root, "the new scanners directory").await;
    assert!(
        u.set.scanners.contains_key("megacaps"),
        "{:?}",
        u.set.findings
    );
    w.stop().await;
}

#[tokio::test]
async fn kind_directory_removed_and_recreated() {
    let (_dir, root) = config_dir();
    let (w, mut rx) = start(&root, options(50)).await;
    std::fs::remove_dir_all(root.join("risk")).unwrap();
    let u = wait_current(&mut rx, &root, "risk/ removed").await;
    assert!(u.set.risk.is_empty());
    std::fs::create_dir(root.join("risk")).unwrap();
    write(&root.join("risk/default.yaml"), &risk("back"));
    let u = wait_current(&mut rx, &root, "risk/ recreated").await;
    assert!(u.set.risk.contains_key("default"));
    write(&root.join("risk/default.yaml"), &risk("back v2"));
    let u = wait_current(&mut rx, &root, "an edit in the recreated risk/").await;
    assert_eq!(u.reason, UpdateReason::Files);
    assert!(w.file_events_active());
    w.stop().await;
}

/// Kubernetes' ConfigMap volume: `..<timestamp>/` holds the files, `..data` links to it and
/// `risk` links to `..data/risk`. An update writes a new timestamped directory, renames a new
/// `..data_tmp` link over `..data` and deletes the old directory: only hidden names change.
#[cfg(unix)]
#[tokio::test]
async fn configmap_data_swap_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cfg");
    std::fs::create_dir(&root).unwrap();
    let publish = |stamp: &str, desc: &str| {
        let data = root.join(format!("..{stamp}"));
        std::fs::create_dir_all(data.join("risk")).unwrap();
        write(&data.join("risk/default.yaml"), &risk(desc));
        let old = std::fs::read_link(root.join("..data")).ok();
        symlink(format!("..{stamp}"), root.join("..data_tmp"));
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(root.join(old)).unwrap();
        }
    };
    publish("2024_01_01_00_00_00.000000001", "first");
    symlink("..data/risk", root.join("risk"));
    let debounce = Duration::from_millis(50);
    let (w, mut rx) = start(&root, options(50)).await;
    assert!(rx.borrow().set.risk.contains_key("default"));
    assert_eq!(
        rx.borrow().set.errors(),
        0,
        "{:?}",
        rx.borrow().set.findings
    );

    for (i, stamp) in [
        "2024_01_01_00_01_00.000000002",
        "2024_01_01_00_02_00.000000003",
    ]
    .into_iter()
    .enumerate()
    {
        publish(stamp, &format!("update {i}"));
        let u = wait_current(&mut rx, &root, &format!("ConfigMap update {i}")).await;
        assert_eq!(u.reason, UpdateReason::Files);
        assert!(u.set.risk["default"].path.starts_with(root.join("risk")));
    }
    // A new timestamped directory that is not (yet) linked changes nothing visible.
    assert_noop(
        &w,
        &mut rx,
        debounce,
        "an unlinked ..<timestamp> directory",
        || {
            let d = root.join("..2024_01_01_00_03_00.000000004/risk");
            std::fs::create_dir_all(&d).unwrap();
            write(&d.join("default.yaml"), &risk("not yet"));
        },
    )
    .await;
    w.stop().await;
}

/// `risk` links to a directory outside the root; the link is then pointed elsewhere. Edits
/// in the new target must still arrive as file events (the watch is set up again).
#[cfg(unix)]
#[tokio::test]
async fn link_to_outside_directory_retargeted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cfg");
    std::fs::create_dir(&root).unwrap();
    for (d, desc) in [("a", "in a"), ("b", "in b")] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
        write(&dir.path().join(d).join("default.yaml"), &risk(desc));
    }
    symlink(dir.path().join("a"), root.join("risk"));
    let (w, mut rx) = start(&root, options(50)).await;
    write(&dir.path().join("a/default.yaml"), &risk("in a v2"));
    let u = wait_current(&mut rx, &root, "an edit in the link target").await;
    assert_eq!(u.reason, UpdateReason::Files);

    symlink(dir.path().join("b"), root.join(".risk.tmp"));
    std::fs::rename(root.join(".risk.tmp"), root.join("risk")).unwrap();
    wait_current(&mut rx, &root, "the link pointed elsewhere").await;
    // Let the watcher finish its follow-up (new watch, rescan), so the next edit can only
    // arrive through file events on the new target.
    settle(&w, Duration::from_millis(300)).await;
    write(&dir.path().join("b/default.yaml"), &risk("in b v2"));
    let u = wait_current(&mut rx, &root, "an edit in the new link target").await;
    assert_eq!(u.reason, UpdateReason::Files);
    w.stop().await;
}

#[tokio::test]
async fn invalid_edit_then_fix_delivers_both() {
    let (_dir, root) = config_dir();
    let (w, mut rx) = start(&root, options(50)).await;
    let file = root.join("risk/default.yaml");
    write(&file, "description: [unclosed\n");
    let bad = wait_current(&mut rx, &root, "the invalid edit").await;
    assert!(bad.set.errors() > 0);
    assert!(!bad.set.is_valid(false));
    let before = w.deliveries();
    write(&file, &risk("fixed"));
    let good = wait_current(&mut rx, &root, "the fix").await;
    assert!(good.set.is_valid(false), "{:?}", good.set.findings);
    assert_ne!(good.set.revision, bad.set.revision);
    assert_eq!(w.deliveries(), before + 1);
    w.stop().await;
}

#[tokio::test]
async fn resync_finds_changes_without_file_events() {
    let (_dir, root) = config_dir();
    let (w, mut rx) = start(
        &root,
        WatchOptions {
            file_events: false,
            ..options(50)
        },
    )
    .await;
    assert!(!w.file_events_active());
    let scans = w.scans();
    write(&root.join("risk/default.yaml"), &risk("unseen"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !rx.has_changed().unwrap(),
        "delivered without file events or a resync"
    );
    assert_eq!(w.scans(), scans);

    w.resync();
    let u = wait_current(&mut rx, &root, "the change, after resync()").await;
    assert_eq!(u.reason, UpdateReason::Signal);

    // The same through a handle, as a SIGHUP task holds it; an unchanged resync delivers
    // nothing.
    let handle = w.resync_handle();
    let deliveries = w.deliveries();
    handle.resync();
    eventually("the second resync scans", || w.scans() >= scans + 2).await;
    assert_eq!(w.deliveries(), deliveries);
    write(&root.join("risk/default.yaml"), &risk("unseen 2"));
    handle.resync();
    let u = wait_current(&mut rx, &root, "the change, after a handle's resync()").await;
    assert_eq!(u.reason, UpdateReason::Signal);
    w.stop().await;
}

#[tokio::test]
async fn periodic_resync_finds_changes_without_file_events() {
    let (_dir, root) = config_dir();
    let (w, mut rx) = start(
        &root,
        WatchOptions {
            file_events: false,
            resync_interval: Duration::from_millis(300),
            ..options(50)
        },
    )
    .await;
    write(&root.join("risk/default.yaml"), &risk("periodic"));
    let u = wait_current(&mut rx, &root, "the periodic resync").await;
    assert_eq!(u.reason, UpdateReason::Resync);
    w.stop().await;
}

#[tokio::test]
async fn burst_of_writes_delivers_few_updates_with_the_final_revision() {
    let (_dir, root) = config_dir();
    let (w, mut rx) = start(&root, options(200)).await;
    let file = root.join("risk/default.yaml");
    let before = w.deliveries();
    let t0 = Instant::now();
    for i in 0..50 {
        write(&file, &risk(&format!("burst {i}")));
    }
    let burst = t0.elapsed();
    let u = wait_current(&mut rx, &root, "the last write of the burst").await;
    assert!(u.set.risk["default"].doc.source.contains("burst 49"));
    // Anything still pending would arrive within a few debounce periods.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let delivered = w.deliveries() - before;
    println!("50 writes in {burst:?}: {delivered} update(s) delivered");
    assert!(delivered >= 1);
    assert!(delivered <= 3, "{delivered} updates for one burst");
    assert_eq!(rx.borrow().set.revision, load(&root).revision);
    w.stop().await;
}

#[tokio::test]
async fn root_deleted_and_recreated_falls_back_to_polling_and_recovers() {
    let (dir, root) = config_dir();
    let (w, mut rx) = start(&root, options(50)).await;
    assert!(w.file_events_active());
    std::fs::remove_dir_all(&root).unwrap();
    let u = wait_for(&mut rx, "an invalid set for the missing root", |u| {
        u.set.findings.iter().any(|f| f.code == "io")
    })
    .await;
    assert!(!u.set.is_valid(false));
    eventually("file events given up", || !w.file_events_active()).await;

    // Back, in one atomic rename, with other content.
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(staging.join("risk")).unwrap();
    write(&staging.join("risk/default.yaml"), &risk("restored"));
    std::fs::rename(&staging, &root).unwrap();
    let u = wait_current(&mut rx, &root, "the restored directory").await;
    assert!(u.set.is_valid(false), "{:?}", u.set.findings);
    assert_eq!(u.reason, UpdateReason::Poll);
    eventually("file events set up again", || w.file_events_active()).await;

    write(&root.join("risk/default.yaml"), &risk("restored v2"));
    let u = wait_current(&mut rx, &root, "an edit after recovery").await;
    assert_eq!(u.reason, UpdateReason::Files);
    w.stop().await;
}

#[tokio::test]
async fn stop_ends_the_watcher() {
    let (_dir, root) = config_dir();
    let (w, mut rx) = start(&root, options(50)).await;
    tokio::time::timeout(WAIT, w.stop()).await.unwrap();
    assert!(rx.changed().await.is_err(), "the channel closes on stop");
    // Changes after stop are not delivered (the channel is closed; nothing panics).
    write(&root.join("risk/default.yaml"), &risk("after stop"));
}

#[tokio::test]
async fn dropping_the_watcher_stops_it_even_with_a_resync_handle_alive() {
    let (_dir, root) = config_dir();
    let (w, mut rx) = start(&root, options(50)).await;
    let handle = w.resync_handle();
    drop(w);
    tokio::time::timeout(WAIT, rx.changed())
        .await
        .expect("the channel closes within the wait")
        .expect_err("the channel closes instead of delivering");
    handle.resync(); // does nothing, does not panic
}

#[tokio::test]
async fn writes_in_the_state_directory_do_not_rescan() {
    let (_dir, root) = config_dir();
    let (w, mut rx) = start(&root, options(50)).await;
    settle(&w, Duration::from_millis(300)).await;
    let scans = w.scans();
    // What the embedded store does all day: create its directory, then write its files.
    let state = root.join(ztraded::config::load::STATE_DIR);
    std::fs::create_dir_all(&state).unwrap();
    for i in 0..20 {
        write(&state.join("ztraded.db-wal"), &format!("page {i}"));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        w.scans(),
        scans,
        "writes under .ztraded/ made the watcher rescan"
    );
    // The watch itself is alive: a real edit is still delivered.
    rx.borrow_and_update();
    write(&root.join("risk/default.yaml"), &risk("v2"));
    let expected = load(&root);
    wait_for(&mut rx, "the edit after the state writes", |u| {
        u.set.revision == expected.revision
    })
    .await;
    w.stop().await;
}

#[tokio::test]
async fn a_released_revision_keeps_its_summary_and_later_edits_arrive_whole() {
    let (_dir, root) = config_dir();
    let (w, mut rx) = start(&root, options(50)).await;
    let first = rx.borrow_and_update().set.revision.clone();
    assert!(rx.borrow().set.risk.contains_key("default"));
    w.release(&first);
    eventually("the delivered set is released", || {
        rx.borrow().set.risk.is_empty()
    })
    .await;
    assert_eq!(rx.borrow().set.revision, first);
    assert!(
        !rx.has_changed().unwrap(),
        "a release must not look like a new revision"
    );
    // An unchanged rescan is still recognised as the delivered state.
    let deliveries = w.deliveries();
    w.resync();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.deliveries(), deliveries);
    // Releasing an older revision leaves a newer delivery whole.
    write(&root.join("risk/default.yaml"), &risk("v2"));
    let u = wait_for(&mut rx, "the edit after a release", |u| {
        u.set.revision != first
    })
    .await;
    assert!(u.set.risk.contains_key("default"));
    w.release(&first);
    w.resync();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.borrow().set.risk.contains_key("default"));
    w.stop().await;
}
