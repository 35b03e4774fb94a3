//! `ztraded brokers` against a local fake Alpaca (real HTTP): reachable, authenticated, paper,
//! balances, positions, and a position no pipeline owns reported as drift (exit 1); wrong
//! keys are an authentication failure, not a crash.

mod fake_alpaca;

use fake_alpaca::{FakeAlpaca, KEY_ID, SECRET_KEY};
use rust_decimal::dec;
use serde_json::Value;
use std::process::Command;

fn config(dir: &std::path::Path, fake: &FakeAlpaca) {
    std::fs::write(
        dir.join("ztraded.toml"),
        format!(
            "[store]\nurl = \"sqlite://state.db\"\n\n[brokers.alpaca-paper]\nkind = \"alpaca\"\npaper = true\n\
             key_id_env = \"TEST_ALPACA_KEY\"\nsecret_key_env = \"TEST_ALPACA_SECRET\"\n\
             trading_url = \"{}\"\nstream_url = \"{}\"\n",
            fake.trading_url(),
            fake.stream_url()
        ),
    )
    .unwrap();
}

async fn brokers(dir: &std::path::Path, key: &str) -> (Option<i32>, Vec<Value>, String) {
    let dir = dir.to_path_buf();
    let key = key.to_string();
    let o = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ztraded"))
            .args(["brokers", "--json"])
            .arg(&dir)
            .env("TEST_ALPACA_KEY", key)
            .env("TEST_ALPACA_SECRET", SECRET_KEY)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let checks: Vec<Value> = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&o.stderr)));
    (
        o.status.code(),
        checks,
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alpaca_account_is_checked_and_unowned_positions_are_drift() {
    let fake = FakeAlpaca::start().await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &fake);

    let (code, checks, stderr) = brokers(dir.path(), KEY_ID).await;
    assert_eq!(code, Some(0), "{checks:?} {stderr}");
    let c = &checks[0];
    assert_eq!(c["name"], "alpaca-paper");
    assert_eq!(c["account"], "paper");
    assert_eq!(c["reachable"], true);
    assert_eq!(c["authenticated"], true);
    assert!(c["balances"]["equity"].as_str().is_some(), "{c}");
    assert_eq!(c["drift_positions"].as_array().unwrap().len(), 0);

    // A position somebody opened by hand: reported, never touched.
    fake.add_position("TSLA", dec!(5), dec!(200));
    let (code, checks, _) = brokers(dir.path(), KEY_ID).await;
    assert_eq!(code, Some(1));
    assert_eq!(checks[0]["drift_positions"], serde_json::json!(["TSLA"]));
    assert_eq!(fake.positions().len(), 1, "the check changes nothing");
    assert!(
        fake.requests().iter().all(|r| r.starts_with("GET ")),
        "{:?}",
        fake.requests()
    );

    // Wrong keys: reachable, not authenticated, exit 1.
    let (code, checks, _) = brokers(dir.path(), "WRONG").await;
    assert_eq!(code, Some(1));
    assert_eq!(checks[0]["reachable"], true);
    assert_eq!(checks[0]["authenticated"], false);
    assert!(
        checks[0]["error"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{}",
        checks[0]
    );
}
