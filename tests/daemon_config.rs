//! `ztraded run` on what the config directory can do to it, end to end with the real
//! binary on a copy of the shipped config: files nested deep enough to overflow a stack,
//! a vanished `pipelines/` directory, a bad `ZTRADED_*` variable, refused revisions made of
//! new files, comment-only edits, and the first log lines.

mod common;

use common::{Daemon, copy_root_config, free_port, tail};
use std::path::Path;
use std::time::{Duration, Instant};

/// A pipeline file of about 10 KB whose nodes nest 5,000 sequences deep.
fn deep_yaml() -> String {
    format!("description: x\nnodes:\n{}x\n", "- ".repeat(5_000))
}

/// A copy of the shipped golden-cross pipeline whose entry rule nests 5,000 brackets.
fn deep_cel(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("pipelines/golden-cross.yaml")).unwrap();
    let rule = format!("{}close{} > 1", "(".repeat(5_000), ")".repeat(5_000));
    text.replace(
        "\"crossed_above(sma_50, sma_200) && rsi_14 < 70\"",
        &format!("\"{rule}\""),
    )
}

fn refused(d: &Daemon) -> f64 {
    d.metric("ztraded_config_reloads_total{result=\"refused\"}")
}

fn running(d: &Daemon) -> f64 {
    d.metric("ztraded_pipelines{state=\"running\"}")
}

/// Waits until the daemon has applied its first revision and both shipped pipelines run.
fn started(dir: &Path) -> Daemon {
    let mut d = Daemon::start(dir, free_port(), 86_400, &[]);
    d.wait_ready(Duration::from_secs(30));
    d.wait_for("both pipelines running", Duration::from_secs(20), |d| {
        running(d) == 2.0
    });
    d
}

/// Asserts that the process is alive and `/metrics` answers.
fn serving(d: &mut Daemon) {
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon exited:\n{}",
        tail(&d.log_text(), 40)
    );
    let (status, text) = d.get("/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(text.contains("ztraded_build_info"), "{text}");
}

#[test]
fn a_deep_file_dropped_in_is_refused_and_the_daemon_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    copy_root_config(dir.path());
    let mut d = started(dir.path());
    std::fs::write(dir.path().join("pipelines/deep.yaml"), deep_yaml()).unwrap();
    d.wait_for("the deep file refused", Duration::from_secs(20), |d| {
        refused(d) >= 1.0
    });
    let log = d.log_text();
    assert!(
        log.contains("pipelines/deep.yaml:3:") && log.contains("too-deep"),
        "the refusal is logged with its line:\n{}",
        tail(&log, 30)
    );
    serving(&mut d);
    assert_eq!(running(&d), 2.0);

    // An expression nested 5,000 brackets deep, in a pipeline that runs.
    std::fs::remove_file(dir.path().join("pipelines/deep.yaml")).unwrap();
    let before = refused(&d);
    std::fs::write(
        dir.path().join("pipelines/golden-cross.yaml"),
        deep_cel(dir.path()),
    )
    .unwrap();
    d.wait_for(
        "the deep expression refused",
        Duration::from_secs(20),
        |d| {
            refused(d) > before
                && d.log_text().contains("pipelines/golden-cross.yaml:")
                && d.log_text().matches("too-deep").count() >= 2
        },
    );
    serving(&mut d);
    assert_eq!(running(&d), 2.0);
}

#[test]
fn the_daemon_starts_with_a_deep_file_present() {
    let dir = tempfile::tempdir().unwrap();
    copy_root_config(dir.path());
    std::fs::write(dir.path().join("pipelines/deep.yaml"), deep_yaml()).unwrap();
    // And a pipeline whose entry rule nests 5,000 brackets.
    std::fs::write(
        dir.path().join("pipelines/rsi-reversion.yaml"),
        deep_cel(dir.path()),
    )
    .unwrap();
    let mut d = Daemon::start(dir.path(), free_port(), 86_400, &[]);
    d.wait_for("the refusal at start", Duration::from_secs(30), |d| {
        refused(d) >= 1.0
    });
    let log = d.log_text();
    assert!(
        log.contains("pipelines/deep.yaml:3:")
            && log.contains("pipelines/rsi-reversion.yaml:")
            && log.matches("too-deep").count() >= 2,
        "{}",
        tail(&log, 30)
    );
    // Still running a while later, serving its metrics (not ready: nothing valid to run).
    std::thread::sleep(Duration::from_secs(2));
    serving(&mut d);
    assert_eq!(d.get("/readyz").map(|(s, _)| s), Some(503));
}

#[test]
fn a_vanished_pipelines_directory_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    copy_root_config(dir.path());
    let mut d = started(dir.path());
    let executions = |d: &Daemon| {
        d.metric("ztraded_executions_total{pipeline=\"golden-cross\",result=\"completed\"}")
    };
    let before = refused(&d);
    std::fs::remove_dir_all(dir.path().join("pipelines")).unwrap();
    d.wait_for("the removal refused", Duration::from_secs(20), |d| {
        refused(d) > before
    });
    let log = d.log_text();
    assert!(
        log.contains("no-pipelines-dir") && log.contains("enabled: false"),
        "the log says why and how to do it on purpose:\n{}",
        tail(&log, 30)
    );
    assert!(!log.contains("pipeline removed"), "{}", tail(&log, 30));
    // The pipelines keep running and trading.
    let done = executions(&d);
    d.wait_for(
        "executions after the refusal",
        Duration::from_secs(30),
        |d| executions(d) > done,
    );
    assert_eq!(running(&d), 2.0);
    serving(&mut d);
}

#[test]
fn a_bad_environment_value_stops_the_start_and_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    copy_root_config(dir.path());
    let mut d = Daemon::start(
        dir.path(),
        free_port(),
        86_400,
        &[("ZTRADED_HTTP__LISTEN", "localhost:19469")],
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the daemon did not exit:\n{}",
            tail(&d.log_text(), 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = d.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains(
            "env ZTRADED_HTTP__LISTEN: error[invalid-setting]: http.listen: 'localhost:19469'"
        ),
        "{log}"
    );
    assert!(!log.contains("ztraded.toml:7:"), "{log}");
}

/// The value of `ztraded_config_revision_info`'s `revision` label.
fn applied_revision(d: &Daemon) -> String {
    let (_, text) = d.get("/metrics").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("ztraded_config_revision_info{revision=\""))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn refusals_log_their_own_revision_and_comment_edits_restart_nothing() {
    let dir = tempfile::tempdir().unwrap();
    copy_root_config(dir.path());
    let mut d = started(dir.path());
    let running_revision = applied_revision(&d);
    assert!(!running_revision.is_empty());

    // A revision made only of a new, unparsable file has a revision of its own.
    std::fs::write(dir.path().join("pipelines/broken.yaml"), "mode: [\n").unwrap();
    d.wait_for("the refusal", Duration::from_secs(20), |d| {
        refused(d) >= 1.0
    });
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("config revision refused"))
        .unwrap_or_else(|| panic!("{}", tail(&log, 30)));
    let short = &running_revision[..12.min(running_revision.len())];
    assert!(
        line.contains("revision=") && !line.contains(&format!("revision={short}")),
        "the refused revision is not the running one ({short}): {line}"
    );
    std::fs::remove_file(dir.path().join("pipelines/broken.yaml")).unwrap();

    // Comments and formatting only: a new revision, no pipeline restarted.
    let golden = dir.path().join("pipelines/golden-cross.yaml");
    let text = std::fs::read_to_string(&golden).unwrap();
    let edited = format!(
        "# reviewed on Monday\n{}",
        text.replace("on_remove: drain", "on_remove:   drain   # keep positions")
    );
    std::fs::write(&golden, edited).unwrap();
    d.wait_for("the comment edit applied", Duration::from_secs(20), |d| {
        let r = applied_revision(d);
        !r.is_empty() && r != running_revision
    });
    let log = d.log_text();
    assert_eq!(
        log.matches("pipeline started").count(),
        2,
        "only the two first starts:\n{}",
        tail(&log, 40)
    );
    assert!(!log.contains("pipeline changed"), "{}", tail(&log, 40));
    assert_eq!(running(&d), 2.0);
}

/// The log lines of the config side (watcher, loader, reconciler) at warning level or
/// above.
fn config_warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .filter(|l| l.contains("ztraded::reconcile") || l.contains("ztraded::config"))
        .collect()
}

#[test]
fn the_first_log_lines_have_no_warning_noise() {
    // A valid directory: nothing to warn about.
    let dir = tempfile::tempdir().unwrap();
    copy_root_config(dir.path());
    let d = started(dir.path());
    std::thread::sleep(Duration::from_secs(1));
    let log = d.log_text();
    assert!(
        config_warnings(&log).is_empty(),
        "{}",
        config_warnings(&log).join("\n")
    );
    drop(d);

    // An invalid one: the reconciler logs the finding and the refusal; the watcher that
    // delivered it does not warn about it a second time.
    let dir = tempfile::tempdir().unwrap();
    copy_root_config(dir.path());
    std::fs::write(dir.path().join("pipelines/broken.yaml"), "mode: [\n").unwrap();
    let mut d = Daemon::start(dir.path(), free_port(), 86_400, &[]);
    d.wait_for("the refusal at start", Duration::from_secs(30), |d| {
        refused(d) >= 1.0
    });
    let log = d.log_text();
    let watcher: Vec<&str> = config_warnings(&log)
        .into_iter()
        .filter(|l| l.contains("ztraded::reconcile::watcher"))
        .collect();
    assert!(watcher.is_empty(), "{}", watcher.join("\n"));
    assert_eq!(
        log.matches("pipelines/broken.yaml:").count(),
        1,
        "the finding is logged once:\n{}",
        tail(&log, 30)
    );
}

#[test]
fn plan_shows_the_refusal_of_a_vanished_directory() {
    let base = tempfile::tempdir().unwrap();
    copy_root_config(base.path());
    let dir = tempfile::tempdir().unwrap();
    copy_root_config(dir.path());
    std::fs::remove_dir_all(dir.path().join("pipelines")).unwrap();
    let plan = |dir: &Path, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztraded"))
            .arg("plan")
            .arg(dir)
            .arg("--base")
            .arg(base.path())
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let (code, out) = plan(dir.path(), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("- golden-cross (removed) [on_remove: drain]"),
        "{out}"
    );
    assert!(
        out.contains("! refused: pipelines/: error[no-pipelines-dir]"),
        "{out}"
    );
    assert!(
        out.contains("The daemon would refuse this revision"),
        "{out}"
    );
    let (code, out) = plan(dir.path(), &["--json"]);
    assert_eq!(code, Some(1), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["refused"][0]["code"], "no-pipelines-dir", "{out}");

    // One of two pipelines removed: 50 %, allowed; both removed from an existing
    // directory: refused, unless max_removal_pct allows it.
    std::fs::create_dir(dir.path().join("pipelines")).unwrap();
    std::fs::copy(
        base.path().join("pipelines/golden-cross.yaml"),
        dir.path().join("pipelines/golden-cross.yaml"),
    )
    .unwrap();
    let (code, out) = plan(dir.path(), &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("- rsi-reversion (removed) [on_remove: close]"),
        "{out}"
    );
    std::fs::remove_file(dir.path().join("pipelines/golden-cross.yaml")).unwrap();
    let (code, out) = plan(dir.path(), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("error[too-many-removals]"), "{out}");
    let settings = dir.path().join("ztraded.toml");
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(
        &settings,
        format!("{text}\n[reconcile]\nmax_removal_pct = 100\n"),
    )
    .unwrap();
    let (code, out) = plan(dir.path(), &[]);
    assert_eq!(code, Some(0), "{out}");
}
