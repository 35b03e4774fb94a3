//! Crash safety with the real binary: `kill -9` at random points of a simulated session,
//! restart, and find no duplicated order, every order at the broker backed by an intent,
//! open positions re-adopted with their stops, and no execution left `running`.

mod common;

use common::{Daemon, copy_root_config, free_port};
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Deterministic pseudo-random delays (no rand needed): a splitmix64 stream.
fn delays(seed: u64, n: usize) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            500 + (z ^ (z >> 31)) % 3_000
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_never_duplicates_an_order_and_readopts_positions() {
    let dir = tempfile::tempdir().unwrap();
    copy_root_config(dir.path());
    let speed = 86_400 * 12;
    let seed = std::env::var("ZTRADED_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut restarts = 0;
    for delay in delays(seed, 6) {
        let mut d = Daemon::start(dir.path(), free_port(), speed, &[]);
        d.wait_ready(Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(delay));
        let (code, _) = d.signal("KILL", Duration::from_secs(5));
        assert_eq!(code, None, "killed by the signal");
        restarts += 1;
    }
    // A last, clean session.
    let mut d = Daemon::start(dir.path(), free_port(), speed, &[]);
    d.wait_ready(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let (code, _) = d.signal("TERM", Duration::from_secs(10));
    assert_eq!(code, Some(0));
    let log = d.log_text();

    // The store, read directly.
    let url = format!(
        "sqlite://{}",
        dir.path().join(".ztraded/ztraded.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let running: i64 = sqlx::query("SELECT COUNT(*) FROM executions WHERE status = 'running'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(running, 0, "executions left running");
    let intents: Vec<(String, Option<String>, String, String)> =
        sqlx::query("SELECT client_order_id, execution_id, kind, status FROM order_intents")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
    assert!(
        intents.iter().filter(|i| i.2 == "entry").count() >= 3,
        "the session traded: {intents:?}"
    );
    // One entry intent per execution at most.
    let mut per_execution: BTreeMap<String, usize> = BTreeMap::new();
    for (_, execution, kind, _) in &intents {
        if kind == "entry"
            && let Some(e) = execution
        {
            *per_execution.entry(e.clone()).or_default() += 1;
        }
    }
    assert!(per_execution.values().all(|n| *n == 1), "{per_execution:?}");
    assert!(
        intents.iter().all(|i| i.3 != "pending"),
        "pending intents were settled at restart"
    );

    // The broker (its persisted state) is the source of truth.
    let state: String = sqlx::query("SELECT state FROM broker_states WHERE name = 'sim'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    let orders = state["orders"].as_array().unwrap();
    let intent_ids: BTreeSet<&str> = intents.iter().map(|i| i.0.as_str()).collect();
    let mut entries_per_signal: BTreeMap<(String, String, i64), usize> = BTreeMap::new();
    for o in orders {
        let s = &o["state"];
        let id = s["client_order_id"].as_str().unwrap();
        if s["purpose"] == "entry" {
            assert!(
                intent_ids.contains(id),
                "an entry at the broker without an intent: {id}"
            );
            let key = (
                s["pipeline"].as_str().unwrap().to_string(),
                s["symbol"].as_str().unwrap().to_string(),
                s["created_at"].as_i64().unwrap(),
            );
            *entries_per_signal.entry(key).or_default() += 1;
        }
    }
    assert!(
        entries_per_signal.values().all(|n| *n == 1),
        "duplicated entries: {entries_per_signal:?}"
    );
    // Submitted intents are at the broker.
    let broker_ids: BTreeSet<&str> = orders
        .iter()
        .filter_map(|o| o["state"]["client_order_id"].as_str())
        .collect();
    for (id, _, _, status) in &intents {
        if status == "submitted" {
            assert!(
                broker_ids.contains(id.as_str()),
                "submitted but unknown to the broker: {id}"
            );
        }
    }
    // Open positions: the store's book equals the broker, and each has its working stop.
    let open: Vec<(String, String, String)> =
        sqlx::query("SELECT pipeline, symbol, quantity FROM open_trades")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    let mut broker_positions = Vec::new();
    for book in state["books"].as_array().unwrap() {
        for p in book["positions"].as_array().unwrap() {
            let q: rust_decimal::Decimal = p["quantity"]
                .as_str()
                .map(|s| s.parse().unwrap())
                .unwrap_or_else(|| p["quantity"].to_string().parse().unwrap());
            if !q.is_zero() {
                broker_positions.push((
                    p["pipeline"].as_str().unwrap().to_string(),
                    book["symbol"].as_str().unwrap().to_string(),
                    q.abs(),
                ));
            }
        }
    }
    broker_positions.sort();
    let mut store_positions: Vec<(String, String, rust_decimal::Decimal)> = open
        .iter()
        .map(|(p, s, q)| (p.clone(), s.clone(), q.parse().unwrap()))
        .collect();
    store_positions.sort();
    assert_eq!(store_positions, broker_positions);
    for (pipeline, symbol, _) in &broker_positions {
        let stop = orders.iter().any(|o| {
            let s = &o["state"];
            s["pipeline"] == pipeline.as_str()
                && s["symbol"] == symbol.as_str()
                && s["purpose"] == "stop_loss"
                && (s["status"] == "accepted" || s["status"] == "partially_filled")
        });
        assert!(stop, "{pipeline} {symbol} has no working stop");
    }
    if !broker_positions.is_empty() {
        assert!(
            log.contains("open position re-adopted") || restarts == 0,
            "positions were re-adopted at restart"
        );
    }
    // Fills are recorded once each and belong to broker orders.
    let fills: Vec<String> = sqlx::query("SELECT client_order_id FROM fills")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!fills.is_empty());
    for f in &fills {
        assert!(
            broker_ids.contains(f.as_str()),
            "a fill of an unknown order {f}"
        );
    }
}
