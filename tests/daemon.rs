//! `ztraded run` end to end, with the real binary on a copy of the shipped config: it
//! trades within a minute, refuses an invalid edit with its location while trading goes on,
//! restarts only the pipeline whose file changed, closes everything on an authenticated
//! request, and exits 0 on SIGTERM.

mod common;

use common::{Daemon, TOKEN, copy_root_config, free_port};
use std::time::Duration;

#[test]
fn the_daemon_trades_reconciles_closes_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    copy_root_config(dir.path());
    let mut d = Daemon::start(dir.path(), free_port(), 86_400 * 4, &[]);
    d.wait_ready(Duration::from_secs(30));

    // Executions and orders within a minute.
    d.wait_for("executions and orders", Duration::from_secs(60), |d| {
        d.metric("ztraded_executions_total{pipeline=\"rsi-reversion\",result=\"completed\"}") > 0.0
            && d.metric("ztraded_orders_total{") > 0.0
    });
    let (status, text) = d.get("/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("ztraded_build_info{"), "{text}");
    assert!(
        text.contains("ztraded_pipelines{state=\"running\"} 2"),
        "{text}"
    );

    // An invalid edit is refused with its location; trading goes on.
    let golden = dir.path().join("pipelines/golden-cross.yaml");
    let original = std::fs::read_to_string(&golden).unwrap();
    std::fs::write(
        &golden,
        original.replace(
            "stop_loss: \"close - 2.0 * atr_14\"",
            "stop_loss: \"close - 2.0 * atr_41\"",
        ),
    )
    .unwrap();
    d.wait_for("the refused reload", Duration::from_secs(20), |d| {
        d.metric("ztraded_config_reloads_total{result=\"refused\"}") >= 1.0
    });
    let log = d.log_text();
    assert!(
        log.contains("pipelines/golden-cross.yaml:30:"),
        "the finding carries file:line:\n{}",
        common::tail(&log, 30)
    );
    assert!(log.contains("atr_41"));
    let before =
        d.metric("ztraded_executions_total{pipeline=\"golden-cross\",result=\"completed\"}");
    d.wait_for(
        "executions after the refusal",
        Duration::from_secs(20),
        |d| {
            d.metric("ztraded_executions_total{pipeline=\"golden-cross\",result=\"completed\"}")
                > before + 3.0
        },
    );
    assert_eq!(d.metric("ztraded_pipelines{state=\"running\"}"), 2.0);

    // Fix it, then a valid edit of one pipeline restarts that pipeline only.
    std::fs::write(&golden, &original).unwrap();
    // Back to the running revision: nothing to apply.
    d.wait_for("the fix", Duration::from_secs(20), |d| {
        d.metric("ztraded_config_reloads_total{result=\"unchanged\"}") >= 1.0
    });
    let rsi = dir.path().join("pipelines/rsi-reversion.yaml");
    let text = std::fs::read_to_string(&rsi).unwrap();
    std::fs::write(
        &rsi,
        text.replace("max_trades_per_day: 3", "max_trades_per_day: 4"),
    )
    .unwrap();
    d.wait_for("the edit", Duration::from_secs(20), |d| {
        d.metric("ztraded_config_reloads_total{result=\"applied\"}") >= 2.0
    });
    d.wait_for("the restart", Duration::from_secs(20), |d| {
        d.log_text().contains("restarting between executions")
    });
    let log = d.log_text();
    let restarts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("restarting between executions"))
        .collect();
    assert!(
        restarts.iter().any(|l| l.contains("rsi-reversion")),
        "{restarts:?}"
    );
    // golden-cross was never restarted: not by the refused edit, not by its revert, not by
    // the other pipeline's edit.
    assert!(
        !restarts.iter().any(|l| l.contains("golden-cross")),
        "{restarts:?}"
    );
    assert!(
        log.contains("limits.max_trades_per_day"),
        "the change names its field"
    );

    // The emergency close: 401 without the token, 200 with it; everything flat and halted.
    let (status, _) = d
        .post("/v1/close", r#"{"scope":"all","reason":"test"}"#, None)
        .unwrap();
    assert_eq!(status, 401);
    let (status, _) = d
        .post(
            "/v1/close",
            r#"{"scope":"all","reason":"test"}"#,
            Some("wrong"),
        )
        .unwrap();
    assert_eq!(status, 401);
    let (status, body) = d
        .post(
            "/v1/close",
            r#"{"scope":"all","reason":"end of test"}"#,
            Some(TOKEN),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["halted"], true);
    for p in answer["positions"].as_array().unwrap() {
        assert_eq!(p["status"], "filled", "{p}");
    }
    assert_eq!(d.metric("ztraded_positions_open{"), 0.0);
    assert_eq!(
        d.metric("ztraded_emergency_closes_total{scope=\"all\"}"),
        1.0
    );
    assert_eq!(d.metric("ztraded_halts{scope=\"all\"}"), 1.0);
    let (status, _) = d.get("/v1/close").unwrap();
    assert_eq!(status, 405);
    let (status, _) = d.get("/nowhere").unwrap();
    assert_eq!(status, 404);

    // SIGTERM: exit 0 within 10 s.
    let (code, took) = d.signal("TERM", Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", common::tail(&d.log_text(), 20));
    assert!(took < Duration::from_secs(10));
}

#[test]
fn a_pipeline_removed_while_the_daemon_was_down_still_closes_its_positions() {
    let dir = tempfile::tempdir().unwrap();
    copy_root_config(dir.path());
    let mut d = Daemon::start(dir.path(), free_port(), 86_400 * 4, &[]);
    d.wait_ready(Duration::from_secs(30));
    d.wait_for(
        "a position of rsi-reversion",
        Duration::from_secs(60),
        |d| d.metric("ztraded_positions_open{pipeline=\"rsi-reversion\"}") >= 1.0,
    );
    let (code, _) = d.signal("TERM", Duration::from_secs(10));
    assert_eq!(code, Some(0));
    // rsi-reversion (on_remove: close) is deleted while the daemon is down.
    std::fs::remove_file(dir.path().join("pipelines/rsi-reversion.yaml")).unwrap();
    let mut d = Daemon::start(dir.path(), free_port(), 86_400 * 4, &[]);
    d.wait_ready(Duration::from_secs(30));
    d.wait_for("the orphan adopted", Duration::from_secs(20), |d| {
        d.log_text()
            .contains("removed while the daemon was down still holds positions")
    });
    d.wait_for("its positions closed", Duration::from_secs(30), |d| {
        d.log_text().contains("pipeline stopped and removed")
            && d.log_text().contains("purpose=\"pipeline_removed\"")
    });
    assert!(
        !d.get("/metrics")
            .unwrap()
            .1
            .contains("pipeline=\"rsi-reversion\""),
        "its series are gone"
    );
    let (code, _) = d.signal("TERM", Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

/// Copies `examples/` (Alpaca and IBKR paper accounts, an LLM pipeline, signal pipelines,
/// the simulated broker) into `dir`.
fn copy_examples(dir: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    std::fs::copy(root.join("ztraded.toml"), dir.join("ztraded.toml")).unwrap();
    for sub in ["pipelines", "scanners", "risk"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(sub).join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn pipelines_on_brokers_that_cannot_connect_fail_and_the_others_run() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let mut d = Daemon::start(
        dir.path(),
        free_port(),
        86_400,
        &[("APCA_API_KEY_ID", ""), ("APCA_API_SECRET_KEY", "")],
    );
    // It starts (it used to exit 2) ...
    d.wait_ready(Duration::from_secs(30));
    // ... the pipeline on the Alpaca account fails with the reason, the others run.
    d.wait_for("the failed pipeline", Duration::from_secs(20), |d| {
        d.metric("ztraded_pipelines{state=\"failed\"}") >= 1.0
            && d.metric("ztraded_pipelines{state=\"running\"}") >= 2.0
    });
    let log = d.log_text();
    assert!(
        log.contains("llm-swing")
            && log.contains("broker alpaca-paper: environment variable APCA_API_KEY_ID is not set"),
        "{}",
        common::tail(&log, 40)
    );
    // Added while running: failed with its reason too, not silently ignored.
    let text = std::fs::read_to_string(dir.path().join("pipelines/ibkr-paper-trend.yaml"))
        .unwrap()
        .replace("enabled: false", "enabled: true")
        .replace("broker: ibkr-paper", "broker: alpaca-paper");
    std::fs::write(dir.path().join("pipelines/ibkr-second.yaml"), text).unwrap();
    d.wait_for("the added pipeline failing", Duration::from_secs(20), |d| {
        d.metric("ztraded_pipelines{state=\"failed\"}") >= 2.0
    });
    let log = d.log_text();
    assert!(
        log.contains("ibkr-second") && log.contains("APCA_API_KEY_ID is not set"),
        "{}",
        common::tail(&log, 20)
    );
}

#[test]
fn the_end_of_the_replay_keeps_the_port_and_the_emergency_close() {
    let dir = tempfile::tempdir().unwrap();
    copy_root_config(dir.path());
    // Fast: 2012 to the end of the shipped data in a few seconds.
    let mut d = Daemon::start(dir.path(), free_port(), 1_000_000_000, &[]);
    d.wait_ready(Duration::from_secs(30));
    d.wait_for("the end of the replay", Duration::from_secs(120), |d| {
        d.log_text().contains("the replay data is exhausted")
    });
    let log = d.log_text();
    assert_eq!(log.matches("the replay data is exhausted").count(), 1);
    // The newest bar per symbol is on /metrics (what a staleness alert reads).
    let (status, text) = d.get("/metrics").unwrap();
    assert_eq!(status, 200);
    let last_aapl = d
        .metric("ztraded_market_data_last_bar_timestamp_seconds{symbol=\"AAPL\",timeframe=\"1d\"}");
    assert!(last_aapl > 1.5e9, "{text}");
    // The emergency close still answers, and a scope that names nothing is a 404.
    let (status, body) = d
        .post(
            "/v1/close",
            r#"{"scope": {"pipeline": "no-such-pipe"}, "reason": "typo"}"#,
            Some(TOKEN),
        )
        .unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("golden-cross"), "the known names: {body}");
    let (status, body) = d
        .post(
            "/v1/close",
            r#"{"scope": "all", "reason": "end"}"#,
            Some(TOKEN),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"halts\""), "{body}");
    let (code, _) = d.signal("TERM", Duration::from_secs(15));
    assert_eq!(code, Some(0));
}
