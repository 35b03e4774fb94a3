//! Pipeline leases (several daemons on one account) against the real Redis at
//! 127.0.0.1:6379 (`ZTRADED_TEST_REDIS_URL`) and the store's epoch fence against SQLite and
//! the real PostgreSQL at 127.0.0.1:5432 (`ZTRADED_TEST_POSTGRES_URL`, a fresh database per
//! test). A server that cannot be reached fails the test when `CI=true` and skips it with a
//! loud note otherwise.

mod common;
mod fake_alpaca;
#[path = "fake_alpaca/data.rs"]
mod fake_data;

use common::{Daemon, free_port};
use fake_alpaca::{FakeAlpaca, KEY_ID, SECRET_KEY};
use fake_data::FakeData;
use rust_decimal::dec;
use sqlx::Connection;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use ztraded::broker::{EntryOrder, OrderType, Side};
use ztraded::lease::{LeaseClient, LeaseEvent, LeaseKeeper, LeaseReason};
use ztraded::market::Bar;
use ztraded::store::{OrderIntent, Store, StoreError};

const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";
const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn unique(tag: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{tag}_{}_{nanos}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A lease client on the test Redis under a prefix of its own; `None` (skipped) when Redis
/// is unreachable outside CI.
async fn redis(ttl: Duration) -> Option<LeaseClient> {
    let url = std::env::var("ZTRADED_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS.into());
    match tokio::time::timeout(Duration::from_secs(5), LeaseClient::connect(&url, ttl)).await {
        Ok(Ok(c)) => Some(c.with_prefix(&format!("ztraded:test:{}:", unique("lease")))),
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer within 5 s".into(),
            };
            assert!(
                !ci(),
                "Redis is required when CI=true but cannot be reached at {url}: {why}"
            );
            eprintln!(
                "\n** NOTE: Redis unreachable at {url} ({why}): this lease test was SKIPPED (CI=true fails).\n"
            );
            None
        }
    }
}

#[tokio::test]
async fn a_lease_is_exclusive_renewed_and_released_by_compare_and_set() {
    let Some(a) = redis(Duration::from_secs(10)).await else {
        return;
    };
    let b = a.clone();
    let first = a
        .acquire("p")
        .await
        .unwrap()
        .expect("a free lease is taken");
    assert!(first.epoch >= 1);
    assert_eq!(first.token.len(), 32);
    // Exclusive: a second daemon gets nothing while it is held.
    assert_eq!(b.acquire("p").await.unwrap(), None);
    // Renewed by its holder.
    assert!(a.renew(&first).await.unwrap());
    assert_eq!(a.holder_epoch("p").await.unwrap(), Some(first.epoch));
    // A release with another token (a stale holder) does nothing.
    let mut forged = first.clone();
    forged.token = "0".repeat(32);
    assert!(!b.release(&forged).await.unwrap());
    assert!(!b.renew(&forged).await.unwrap());
    assert_eq!(b.acquire("p").await.unwrap(), None, "still held");
    // Released by its holder: free at once, and the next holder's epoch is larger.
    assert!(a.release(&first).await.unwrap());
    assert_eq!(a.holder_epoch("p").await.unwrap(), None);
    let second = b
        .acquire("p")
        .await
        .unwrap()
        .expect("free after the release");
    assert_eq!(second.epoch, first.epoch + 1);
    assert_ne!(second.token, first.token);
    // The old holder can neither renew nor release the new holder's lease.
    assert!(!a.renew(&first).await.unwrap());
    assert!(!a.release(&first).await.unwrap());
    assert_eq!(b.holder_epoch("p").await.unwrap(), Some(second.epoch));
    // Other pipelines have their own leases and epochs.
    let other = a.acquire("q").await.unwrap().expect("another pipeline");
    assert_eq!(other.epoch, 1);
    assert!(b.release(&second).await.unwrap());
    assert!(a.release(&other).await.unwrap());
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_a_higher_epoch_and_the_stale_holder_fails() {
    let ttl = Duration::from_millis(300);
    let Some(a) = redis(ttl).await else {
        return;
    };
    let b = a.clone();
    let first = a.acquire("p").await.unwrap().unwrap();
    assert_eq!(b.acquire("p").await.unwrap(), None);
    // The holder pauses for longer than the TTL.
    tokio::time::sleep(ttl + Duration::from_millis(150)).await;
    let started = Instant::now();
    let second = b.acquire("p").await.unwrap().expect("expired: taken over");
    eprintln!("takeover after expiry: {:?}", started.elapsed());
    assert!(second.epoch > first.epoch);
    // The stale holder's renewal finds another token.
    assert!(!a.renew(&first).await.unwrap());
    assert!(!a.release(&first).await.unwrap());
    assert!(b.renew(&second).await.unwrap());
    assert!(b.release(&second).await.unwrap());
}

async fn next_event(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<LeaseEvent>,
    within: Duration,
) -> LeaseEvent {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("a lease event in time")
        .expect("the keeper is running")
}

#[tokio::test]
async fn the_keeper_takes_renews_loses_and_releases_leases() {
    let ttl = Duration::from_millis(600);
    let Some(client) = redis(ttl).await else {
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let keeper = LeaseKeeper::start(client.clone(), "test-a".into(), tx);
    keeper.set_desired(BTreeSet::from(["p1".to_string(), "p2".to_string()]));
    let mut gained = BTreeSet::new();
    for _ in 0..2 {
        match next_event(&mut rx, Duration::from_secs(3)).await {
            LeaseEvent::Gained(l) => {
                keeper.fence(&l);
                gained.insert(l.pipeline);
            }
            other => panic!("expected a gain, got {other:?}"),
        }
    }
    assert_eq!(gained, BTreeSet::from(["p1".into(), "p2".into()]));
    let fences = keeper.fences();
    assert_eq!(fences.epoch("p1"), Some(1));
    // Held across several TTLs: the keeper renews at a third of it.
    tokio::time::sleep(ttl * 3).await;
    assert!(
        rx.try_recv().is_err(),
        "no event while the leases are renewed"
    );
    assert_eq!(
        fences.epoch("p1"),
        Some(1),
        "the fence is extended by renewals"
    );
    assert_eq!(client.holder_epoch("p1").await.unwrap(), Some(1));
    // Another daemon takes p1 over (as after an expiry while this one was paused): the
    // keeper's next renewal finds another token, reports the loss and drops the fence.
    let mut conn = redis::Client::open(DEFAULT_REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(client.key("p1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let thief = client
        .acquire("p1")
        .await
        .unwrap()
        .expect("taken by another");
    assert_eq!(thief.epoch, 2);
    let started = Instant::now();
    match next_event(&mut rx, ttl * 2).await {
        LeaseEvent::Lost {
            pipeline,
            epoch,
            reason,
        } => {
            assert_eq!(
                (pipeline.as_str(), epoch, reason),
                ("p1", 1, LeaseReason::Lost)
            );
        }
        other => panic!("expected the loss of p1, got {other:?}"),
    }
    eprintln!("loss noticed after {:?}", started.elapsed());
    assert_eq!(fences.epoch("p1"), None, "no orders for a lost pipeline");
    assert_eq!(fences.epoch("p2"), Some(1));
    // Shutdown: every lease released at once.
    let started = Instant::now();
    keeper.release_all().await;
    let took = started.elapsed();
    eprintln!("release_all took {took:?}");
    assert!(took < ttl, "released at once, not after the TTL");
    match next_event(&mut rx, Duration::from_secs(1)).await {
        LeaseEvent::Lost {
            pipeline, reason, ..
        } => assert_eq!((pipeline.as_str(), reason), ("p2", LeaseReason::Released)),
        other => panic!("expected the release of p2, got {other:?}"),
    }
    assert_eq!(fences.epoch("p2"), None);
    assert_eq!(client.holder_epoch("p2").await.unwrap(), None);
    let next = client.acquire("p2").await.unwrap().expect("free at once");
    assert_eq!(next.epoch, 2);
    assert_eq!(
        client.holder_epoch("p1").await.unwrap(),
        Some(2),
        "the thief's lease is untouched"
    );
}

#[tokio::test]
async fn when_a_holder_dies_another_daemon_takes_its_pipelines_within_the_ttl() {
    let ttl = Duration::from_millis(900);
    let Some(client) = redis(ttl).await else {
        return;
    };
    let names: BTreeSet<String> = (1..=4).map(|i| format!("p{i}")).collect();
    // Daemon `a` on a runtime of its own, so that it can die as a process does: its tasks
    // stop at once, nothing is released.
    let a_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx_a, mut rx_a) = tokio::sync::mpsc::unbounded_channel();
    let a = {
        let _enter = a_runtime.enter();
        LeaseKeeper::start(client.clone(), "a".into(), tx_a)
    };
    a.set_desired(names.clone());
    let mut held_a = BTreeSet::new();
    for _ in 0..4 {
        if let LeaseEvent::Gained(l) = next_event(&mut rx_a, Duration::from_secs(3)).await {
            held_a.insert(l.pipeline);
        }
    }
    assert_eq!(held_a, names, "alone, a daemon takes every pipeline");
    let (tx_b, mut rx_b) = tokio::sync::mpsc::unbounded_channel();
    let b = LeaseKeeper::start(client.clone(), "b".into(), tx_b);
    b.set_desired(names.clone());
    tokio::time::sleep(ttl * 2).await;
    assert!(
        rx_b.try_recv().is_err(),
        "leases held and renewed are not taken"
    );
    // `a` dies (`kill -9`): `b` takes every pipeline within the TTL plus one renewal period,
    // each with a new epoch.
    let died = Instant::now();
    std::mem::forget(a);
    a_runtime.shutdown_background();
    let mut taken = BTreeSet::new();
    while taken.len() < 4 {
        match next_event(&mut rx_b, ttl * 2).await {
            LeaseEvent::Gained(l) => {
                assert_eq!(l.epoch, 2, "{}: a new holder's epoch", l.pipeline);
                taken.insert(l.pipeline);
            }
            other => panic!("expected gains, got {other:?}"),
        }
    }
    let failover = died.elapsed();
    eprintln!("failover of 4 pipelines after the holder died: {failover:?} (ttl {ttl:?})");
    assert!(failover < ttl + ttl / 3 + Duration::from_millis(300));
    b.release_all().await;
}

/// A store on SQLite, then on a fresh PostgreSQL database; `f` runs on each.
async fn on_both_stores<F, Fut>(test: &str, f: F)
where
    F: Fn(Store) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::connect("sqlite://.ztraded/ztraded.db", 2, dir.path())
        .await
        .unwrap();
    f(sqlite).await;
    let url = std::env::var("ZTRADED_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.into());
    let server = url[..url.rfind('/').unwrap_or(url.len())].to_string();
    let mut admin = match sqlx::PgConnection::connect(&url).await {
        Ok(c) => c,
        Err(e) => {
            assert!(
                !ci(),
                "PostgreSQL is required when CI=true but cannot be reached at {url}: {e}"
            );
            eprintln!(
                "\n** NOTE: PostgreSQL unreachable ({e}): the PostgreSQL half of {test} was SKIPPED (CI=true fails).\n"
            );
            return;
        }
    };
    let name = unique("zt_leases");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let pg = Store::connect(&format!("{server}/{name}"), 4, dir.path())
        .await
        .unwrap();
    f(pg.clone()).await;
    pg.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}

fn intent(id: &str, pipeline: &str) -> OrderIntent {
    let order = EntryOrder {
        client_order_id: id.into(),
        pipeline: pipeline.into(),
        symbol: "AAPL".into(),
        side: Side::Buy,
        quantity: dec!(10),
        order_type: OrderType::Market,
        expected_price: None,
        stop_loss: Some(dec!(95)),
        take_profits: vec![],
    };
    OrderIntent::entry("alpaca", Some("exec-1"), &order, 1_700_000_000)
}

#[tokio::test]
async fn the_store_refuses_an_intent_of_a_stale_epoch_in_the_same_transaction() {
    on_both_stores("stale_epoch", |store| async move {
        let backend = store.backend();
        // No holder ever claimed: refused.
        match store.insert_intent_fenced(&intent("zt-a", "p"), 1).await {
            Err(StoreError::Fenced { stored: None, .. }) => {}
            other => panic!("[{backend}] expected Fenced, got {other:?}"),
        }
        assert!(store.claim_epoch("p", 1, "daemon-a", 10).await.unwrap());
        assert!(
            store
                .insert_intent_fenced(&intent("zt-a", "p"), 1)
                .await
                .unwrap()
        );
        // The same intent again (a re-run after a restart with the same lease): not
        // written twice.
        assert!(
            !store
                .insert_intent_fenced(&intent("zt-a", "p"), 1)
                .await
                .unwrap()
        );
        // A new holder claims epoch 2: the old holder's next intent is refused, nothing is
        // written.
        assert!(store.claim_epoch("p", 2, "daemon-b", 20).await.unwrap());
        match store.insert_intent_fenced(&intent("zt-b", "p"), 1).await {
            Err(StoreError::Fenced {
                pipeline,
                epoch: 1,
                stored: Some(2),
            }) => assert_eq!(pipeline, "p"),
            other => panic!("[{backend}] expected Fenced by epoch 2, got {other:?}"),
        }
        assert!(store.intent("zt-b").await.unwrap().is_none(), "[{backend}]");
        // The old holder cannot claim its epoch back.
        assert!(!store.claim_epoch("p", 1, "daemon-a", 30).await.unwrap());
        assert_eq!(store.pipeline_epoch("p").await.unwrap(), Some(2));
        // The new holder writes.
        assert!(
            store
                .insert_intent_fenced(&intent("zt-b", "p"), 2)
                .await
                .unwrap()
        );
        assert!(store.intent("zt-b").await.unwrap().is_some());
        // Another pipeline's epoch is its own.
        match store.insert_intent_fenced(&intent("zt-c", "q"), 2).await {
            Err(StoreError::Fenced { stored: None, .. }) => {}
            other => panic!("[{backend}] expected Fenced for q, got {other:?}"),
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Three daemons on one account
// ---------------------------------------------------------------------------------------

/// The pipelines of the end-to-end test and their symbols.
const PIPELINES: [(&str, &str); 3] = [
    ("lease-btc", "BTC/USD"),
    ("lease-eth", "ETH/USD"),
    ("lease-sol", "SOL/USD"),
];

fn minute_now() -> i64 {
    let now = chrono::Utc::now().timestamp();
    now - now % 60
}

fn bar(ts: i64, close: f64) -> Bar {
    Bar {
        ts,
        open: close,
        high: close + 0.5,
        low: close - 0.5,
        close,
        volume: 10.0,
    }
}

fn history(base: i64) -> Vec<Bar> {
    let last = base - 120;
    (0..180)
        .map(|i| bar(last - (179 - i) * 60, 100.0 + (i % 7) as f64 * 0.1))
        .collect()
}

/// One daemon's config directory: the shared account (the fake Alpaca), and per pipeline
/// an entry on every closed minute while flat, with a stop and a target.
fn write_config(dir: &Path, trading: &FakeAlpaca, data: &FakeData) {
    for sub in ["pipelines", "scanners", "risk"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("ztraded.toml"),
        format!(
            r#"[market_data]
source = "alpaca"
broker = "alpaca-paper"

[reconcile]
broker_interval = "1s"

[brokers.alpaca-paper]
kind = "alpaca"
paper = true
key_id_env = "TEST_APCA_KEY"
secret_key_env = "TEST_APCA_SECRET"
trading_url = "{trading}"
stream_url = "{stream}"
data_url = "{data}"
data_stream_url = "{data_stream}"
"#,
            trading = trading.trading_url(),
            stream = trading.stream_url(),
            data = data.url(),
            data_stream = data.stream_url(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("risk/paper.yaml"),
        "description: Paper account limits\nsizing:\n  risk_per_trade_pct: 1.0\n  max_position_pct: 10\n\
         limits:\n  max_pipeline_capital_pct: 50\n  max_deployed_pct: 90\n  daily_loss_usd: 3000\n\
         \x20 daily_loss_action: halt\ntrade:\n  require_stop_loss: true\n  min_reward_risk: 1.0\n\
         \x20 min_profit_margin_pct: 0\n  allow_short: false\n",
    )
    .unwrap();
    for (name, symbol) in PIPELINES {
        std::fs::write(
            dir.join(format!("pipelines/{name}.yaml")),
            format!(
                r#"description: Enters on every closed minute while flat; stop and target
mode: paper
broker: alpaca-paper
symbols: [{symbol}]
risk: paper
trigger:
  bar_close: {{ timeframe: 1m }}
nodes:
  - id: data
    agent: market_data
    config: {{ timeframes: [1m], indicators: [sma_5], lookback: 20 }}
  - id: strategy
    agent: strategy
    config:
      kind: rules
      timeframe: 1m
      long_entry: "close > 0.0 && sma_5 > 0.0"
      stop_loss: "close - 2.0"
      target_1: "close + 4.0"
  - id: risk
    agent: risk_manager
  - id: trade
    agent: trade_manager
    config: {{ allow_pyramiding: false }}
"#
            ),
        )
        .unwrap();
    }
}

/// Our entry orders at the fake (client ids `zt-…` without a leg suffix).
fn entries(fake: &FakeAlpaca) -> Vec<fake_alpaca::FakeOrder> {
    fake.orders()
        .into_iter()
        .filter(|o| {
            o.client_order_id.starts_with("zt-") && o.client_order_id.matches('-').count() == 1
        })
        .collect()
}

/// The daemon's `ztraded_leases_held`, 0 when it does not answer.
fn held(d: &Daemon) -> f64 {
    if d.get("/metrics").is_none() {
        return 0.0;
    }
    d.metric("ztraded_leases_held")
}

/// A fresh PostgreSQL database for the daemons (dropped by the guard); `None` when
/// PostgreSQL is unreachable outside CI.
struct PgDb {
    url: String,
    name: String,
    admin_url: String,
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}

async fn pg_database() -> Option<PgDb> {
    let url = std::env::var("ZTRADED_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.into());
    let server = url[..url.rfind('/').unwrap_or(url.len())].to_string();
    let mut admin = match sqlx::PgConnection::connect(&url).await {
        Ok(c) => c,
        Err(e) => {
            assert!(
                !ci(),
                "PostgreSQL is required when CI=true but cannot be reached at {url}: {e}"
            );
            eprintln!(
                "\n** NOTE: PostgreSQL unreachable ({e}): the three-daemon test was SKIPPED (CI=true fails).\n"
            );
            return None;
        }
    };
    let name = unique("zt_three");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    Some(PgDb {
        url: format!("{server}/{name}"),
        name,
        admin_url: url,
    })
}

#[test]
fn three_daemons_on_one_account_fail_over_without_a_duplicate_order() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    if rt.block_on(redis(Duration::from_secs(1))).is_none() {
        return;
    }
    let Some(db) = rt.block_on(pg_database()) else {
        return;
    };
    // Redis database 9 for this test alone (the daemons use the default key prefix).
    let bus =
        std::env::var("ZTRADED_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS.into()) + "/9";
    rt.block_on(async {
        let mut conn = redis::Client::open(bus.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    });
    let ttl = Duration::from_secs(3);
    let trading = rt.block_on(FakeAlpaca::start());
    let data = rt.block_on(FakeData::start());
    let base = minute_now();
    for (_, symbol) in PIPELINES {
        data.set_history(symbol, history(base));
    }
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for d in &dirs {
        write_config(d.path(), &trading, &data);
    }
    let ttl_text = format!("{}s", ttl.as_secs());
    let start = |i: usize| {
        Daemon::start(
            dirs[i].path(),
            free_port(),
            1,
            &[
                ("TEST_APCA_KEY", KEY_ID),
                ("TEST_APCA_SECRET", SECRET_KEY),
                ("ZTRADED_STORE__URL", db.url.as_str()),
                ("ZTRADED_BUS__URL", bus.as_str()),
                ("ZTRADED_BUS__LEASE_TTL", ttl_text.as_str()),
            ],
        )
    };
    // The first daemon alone takes every pipeline; the two others start on standby.
    let mut a = start(0);
    a.wait_ready(Duration::from_secs(60));
    a.wait_for("a holds every lease", Duration::from_secs(15), |d| {
        held(d) == 3.0
    });
    let mut b = start(1);
    let mut c = start(2);
    b.wait_ready(Duration::from_secs(60));
    c.wait_ready(Duration::from_secs(60));
    std::thread::sleep(ttl);
    assert_eq!(
        (held(&b), held(&c)),
        (0.0, 0.0),
        "held leases are not taken"
    );
    let symbols: Vec<&str> = PIPELINES.iter().map(|(_, s)| *s).collect();
    rt.block_on(data.wait_subscribed("/v1beta3/crypto/us", &symbols));

    // A closed minute: `a` enters on each symbol; the entries fill and get their legs.
    for (_, symbol) in PIPELINES {
        data.push_bar(symbol, &bar(base - 60, 101.0));
    }
    a.wait_for("three entries at the fake", Duration::from_secs(20), |_| {
        entries(&trading).len() == 3
    });
    let first = entries(&trading);
    for e in &first {
        trading.fill(&e.client_order_id, e.qty, dec!(101));
    }
    a.wait_for("the stops at the fake", Duration::from_secs(20), |d| {
        first.iter().all(|e| {
            trading
                .order(&format!("{}-sl", e.client_order_id))
                .is_some_and(|o| o.is_open())
        }) && PIPELINES
            .iter()
            .all(|(p, _)| d.metric(&format!("ztraded_positions_open{{pipeline=\"{p}\"}}")) == 1.0)
    });
    let orders_before = trading.orders().len();

    // kill -9 of the holder: the others take its pipelines within the TTL.
    let killed = Instant::now();
    a.signal("KILL", Duration::from_secs(5));
    let mut failover = Duration::ZERO;
    while killed.elapsed() < ttl * 3 {
        if held(&b) + held(&c) == 3.0 {
            failover = killed.elapsed();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        failover > Duration::ZERO,
        "the pipelines did not move: b {} c {}\n{}\n{}",
        held(&b),
        held(&c),
        common::tail(&b.log_text(), 30),
        common::tail(&c.log_text(), 30)
    );
    eprintln!(
        "failover after kill -9: {failover:?} (lease_ttl {ttl:?}; b holds {}, c holds {})",
        held(&b),
        held(&c)
    );
    assert!(
        failover <= ttl + ttl / 3 + Duration::from_secs(1),
        "{failover:?}"
    );
    // Their positions re-adopted with their stops, on whichever daemon holds each.
    for (p, _) in PIPELINES {
        let series = format!("ztraded_positions_open{{pipeline=\"{p}\"}}");
        let found = [&b, &c].iter().any(|d| d.metric(&series) == 1.0);
        assert!(
            found,
            "{p}: position not re-adopted\n{}\n{}",
            common::tail(&b.log_text(), 30),
            common::tail(&c.log_text(), 30)
        );
    }
    let logs = b.log_text() + &c.log_text();
    assert!(
        logs.contains("open position of the previous lease holder re-adopted"),
        "{}",
        common::tail(&logs, 40)
    );
    // The next minute: in position, no new entry; no order sent twice.
    for (_, symbol) in PIPELINES {
        data.push_bar(symbol, &bar(base, 101.5));
    }
    std::thread::sleep(Duration::from_secs(3));
    let after = trading.orders();
    assert_eq!(entries(&trading).len(), 3, "{after:#?}");
    let mut ids = BTreeSet::new();
    for o in &after {
        assert!(
            ids.insert(o.client_order_id.clone()),
            "{} twice: {after:#?}",
            o.client_order_id
        );
        assert!(
            trading.submits_for(&o.client_order_id) <= 1,
            "{} submitted twice",
            o.client_order_id
        );
    }
    assert_eq!(
        after.len(),
        orders_before,
        "no order placed by the takeover: {after:#?}"
    );
    for e in &first {
        assert!(
            trading
                .order(&format!("{}-sl", e.client_order_id))
                .is_some_and(|o| o.is_open()),
            "{}: the stop still works",
            e.client_order_id
        );
    }

    // SIGTERM releases the leases at once: the survivor takes them without waiting for
    // the TTL.
    let (mut leaver, mut stayer) = if held(&b) > 0.0 { (b, c) } else { (c, b) };
    let moving = held(&leaver);
    let stopped = Instant::now();
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(leaver.child.id().to_string())
        .status();
    let mut moved = Duration::ZERO;
    while stopped.elapsed() < ttl * 3 {
        if held(&stayer) == 3.0 {
            moved = stopped.elapsed();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, exited) = leaver.signal("TERM", Duration::from_secs(15));
    assert_eq!(code, Some(0));
    assert!(
        moved > Duration::ZERO,
        "{}",
        common::tail(&stayer.log_text(), 30)
    );
    eprintln!(
        "SIGTERM: {moving} lease(s) released and taken over {moved:?} after the signal (the daemon exited after {exited:?}; lease_ttl {ttl:?})"
    );
    assert!(
        leaver.log_text().contains("leases released"),
        "{}",
        common::tail(&leaver.log_text(), 20)
    );
    assert!(moved < ttl, "taken over before the TTL: {moved:?}");
    stayer.signal("TERM", Duration::from_secs(15));
    drop(db);
}

#[test]
fn a_lease_ttl_under_a_second_is_refused_by_validation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ztraded.toml"),
        "[bus]\nurl = \"redis://127.0.0.1:6379\"\nlease_ttl = \"300ms\"\n",
    )
    .unwrap();
    let env = ztraded::config::load::process_env();
    let (_, ok, findings) = ztraded::config::load::load_settings_of(dir.path(), &env);
    assert!(!ok, "{findings:?}");
    assert!(
        findings
            .iter()
            .any(|f| f.code == "out-of-range" && f.human().contains("lease_ttl")),
        "{findings:?}"
    );
    std::fs::write(
        dir.path().join("ztraded.toml"),
        "[bus]\nurl = \"redis://127.0.0.1:6379\"\nlease_ttl = \"3s\"\n",
    )
    .unwrap();
    let (settings, ok, findings) = ztraded::config::load::load_settings_of(dir.path(), &env);
    assert!(ok, "{findings:?}");
    assert_eq!(settings.bus.lease_ttl.std(), Duration::from_secs(3));
    // The default: 10 s.
    assert_eq!(
        ztraded::config::settings::BusSettings::default()
            .lease_ttl
            .std(),
        Duration::from_secs(10)
    );
}

/// A daemon paused past its lease (it has not noticed): the new holder's epoch is in the
/// store, and the old holder's order path is refused in the transaction that would write the
/// intent — nothing is written, nothing reaches the broker.
#[tokio::test]
async fn a_stale_holder_cannot_submit_through_the_account() {
    on_both_stores("stale_account", |store| async move {
        use ztraded::broker::{ExitOrder, OrderPurpose, PositionSide, Submit};
        use ztraded::config::pipeline::Mode;
        use ztraded::runtime::account::SubmitError;
        use ztraded::runtime::{Account, AccountOptions};
        let backend = store.backend();
        let now: ztraded::broker::Now = std::sync::Arc::new(|| 1_700_000_000);
        let broker = ztraded::broker::connect(
            "sim",
            &ztraded::config::settings::BrokerSettings::Simulated(Default::default()),
            now,
            None,
            Vec::new(),
        )
        .unwrap();
        let mut account = Account::new(
            vec![std::sync::Arc::clone(&broker)],
            AccountOptions {
                store: Some(store.clone()),
                metrics: None,
                clock: std::sync::Arc::new(ztraded::engine::clock::WallClock),
                keep_history: false,
            },
        );
        let fences = std::sync::Arc::new(ztraded::lease::Fences::default());
        account.set_fences(std::sync::Arc::clone(&fences));
        let exit = |id: &str| {
            Submit::Exit(ExitOrder {
                client_order_id: id.into(),
                pipeline: "p".into(),
                symbol: "AAPL".into(),
                position_side: PositionSide::Long,
                quantity: dec!(1),
                order_type: OrderType::Market,
                purpose: OrderPurpose::ExitRule,
                oco_group: None,
            })
        };
        // Holder with epoch 1: its intent is written (the simulated broker then answers as
        // it does; what matters is that the order path went through).
        assert!(store.claim_epoch("p", 1, "a", 1).await.unwrap());
        fences.set("p", 1, Instant::now() + Duration::from_secs(60));
        let first = account
            .submit("sim", Mode::Paper, None, exit("zt-held"), false)
            .await;
        assert!(
            !matches!(first, Err(SubmitError::Fenced(_))),
            "[{backend}] {first:?}"
        );
        let intent = store.intent("zt-held").await.unwrap().expect("written");
        assert_eq!(intent.pipeline, "p");
        // Another daemon took the lease (epoch 2) while this one was paused: its fence is
        // still there locally, but the store refuses the intent.
        assert!(store.claim_epoch("p", 2, "b", 2).await.unwrap());
        let stale = account
            .submit("sim", Mode::Paper, None, exit("zt-stale"), false)
            .await;
        assert!(
            matches!(stale, Err(SubmitError::Fenced(_))),
            "[{backend}] {stale:?}"
        );
        assert!(
            store.intent("zt-stale").await.unwrap().is_none(),
            "[{backend}]"
        );
        assert!(
            broker.order("zt-stale").await.unwrap().is_none(),
            "[{backend}] not at the broker"
        );
        // Once the loss is noticed the fence is gone: refused before the store is asked.
        fences.clear("p");
        let after = account
            .submit("sim", Mode::Paper, None, exit("zt-after"), false)
            .await;
        assert!(
            matches!(after, Err(SubmitError::Fenced(_))),
            "[{backend}] {after:?}"
        );
        assert!(store.intent("zt-after").await.unwrap().is_none());
        assert!(broker.order("zt-after").await.unwrap().is_none());
    })
    .await;
}
