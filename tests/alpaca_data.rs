//! Alpaca market data against a local fake (real HTTP and websocket): historical bars with
//! pagination and errors, the live minute-bar stream with reconnection and backfill, clock
//! and calendar, and the live aggregator fed by the stream.

#[path = "fake_alpaca/data.rs"]
mod fake_data;

use chrono::{DateTime, NaiveDate, Utc};
use fake_data::{FakeData, KEY, SECRET, Subscription};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use ztraded::config::settings::AlpacaBroker;
use ztraded::market::alpaca::{AlpacaData, DataError, LiveEvent, StreamKind, StreamStatus, Tuning};
use ztraded::market::calendar::UsEquityCalendar;
use ztraded::market::live::LiveBars;
use ztraded::market::{Bar, Timeframe};

fn settings(fake: &FakeData) -> AlpacaBroker {
    serde_json::from_value(json!({
        "paper": true,
        "trading_url": fake.url(),
        "data_url": fake.url(),
        "data_stream_url": fake.stream_url(),
    }))
    .unwrap()
}

fn fast() -> Tuning {
    Tuning {
        request_timeout: Duration::from_secs(5),
        max_retries: 3,
        retry_backoff: Duration::from_millis(10),
        max_retry_wait: Duration::from_secs(3),
        reconnect_initial: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(200),
        handshake_timeout: Duration::from_secs(5),
        ..Tuning::default()
    }
}

fn client(fake: &FakeData) -> AlpacaData {
    AlpacaData::new("alpaca-paper", &settings(fake), KEY.into(), SECRET.into())
        .unwrap()
        .with_tuning(fast())
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// `n` one-minute bars from `start`, prices rising by one cent a minute.
fn minutes(start: &str, n: i64) -> Vec<Bar> {
    let t0 = utc(start).timestamp();
    (0..n)
        .map(|i| {
            let p = 100.0 + i as f64 / 100.0;
            Bar {
                ts: t0 + 60 * i,
                open: p,
                high: p + 0.05,
                low: p - 0.05,
                close: p + 0.01,
                volume: 100.0 + i as f64,
            }
        })
        .collect()
}

fn syms(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn pagination_merges_pages_per_symbol_in_order() {
    let fake = FakeData::start().await;
    fake.set_page_size(1000);
    let aapl = minutes("2024-01-02T14:30:00Z", 1500);
    let msft = minutes("2024-01-02T14:30:00Z", 1000);
    fake.set_history("AAPL", aapl.clone());
    fake.set_history("MSFT", msft.clone());
    let data = client(&fake);
    let got = data
        .bars(
            &syms(&["MSFT", "AAPL", "AAPL"]),
            Timeframe::M1,
            utc("2024-01-01T00:00:00Z"),
            utc("2024-01-10T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["AAPL", "MSFT"]);
    assert_eq!(got["AAPL"], aapl);
    assert_eq!(got["MSFT"], msft);
    // 2,500 bars over three pages; the second page holds both symbols.
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3);
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(r.path, "/v2/stocks/bars");
        let q = &r.query;
        assert_eq!(q["symbols"], "AAPL,MSFT");
        assert_eq!(q["timeframe"], "1Min");
        assert_eq!(q["adjustment"], "split");
        assert_eq!(q["feed"], "iex");
        assert_eq!(q["sort"], "asc");
        assert_eq!(q["limit"], "10000");
        assert_eq!(q["start"], "2024-01-01T00:00:00Z");
        assert_eq!(q["end"], "2024-01-10T00:00:00Z");
        assert_eq!(q.get("page_token").is_some(), i > 0);
    }
}

#[tokio::test]
async fn crypto_symbols_use_the_crypto_path_without_feed_or_adjustment() {
    let fake = FakeData::start().await;
    let btc = minutes("2024-01-06T00:00:00Z", 30);
    fake.set_history("BTC/USD", btc.clone());
    fake.set_history("AAPL", minutes("2024-01-05T14:30:00Z", 5));
    let data = client(&fake);
    let got = data
        .bars(
            &syms(&["BTC/USD", "AAPL", "GOOG"]),
            Timeframe::D1,
            utc("2024-01-01T00:00:00Z"),
            utc("2024-01-10T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(got["BTC/USD"], btc);
    assert_eq!(got["AAPL"].len(), 5);
    assert!(
        got["GOOG"].is_empty(),
        "a symbol without bars is an empty list"
    );
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    let crypto = reqs
        .iter()
        .find(|r| r.path == "/v1beta3/crypto/us/bars")
        .unwrap();
    assert_eq!(crypto.query["symbols"], "BTC/USD");
    assert_eq!(crypto.query["timeframe"], "1Day");
    assert!(!crypto.query.contains_key("feed"));
    assert!(!crypto.query.contains_key("adjustment"));
    let stocks = reqs.iter().find(|r| r.path == "/v2/stocks/bars").unwrap();
    assert_eq!(stocks.query["symbols"], "AAPL,GOOG");
}

#[tokio::test]
async fn rate_limits_are_honoured_and_server_errors_retried() {
    let fake = FakeData::start().await;
    fake.set_history("AAPL", minutes("2024-01-02T14:30:00Z", 3));
    let reset = (Utc::now().timestamp() + 2).to_string();
    fake.script(
        429,
        &[("Retry-After", "1")],
        r#"{"message":"too many requests"}"#,
    );
    fake.script(
        429,
        &[("X-RateLimit-Reset", reset.as_str())],
        r#"{"message":"too many requests"}"#,
    );
    fake.script(503, &[], "upstream unavailable");
    let data = client(&fake);
    let started = Instant::now();
    let got = data
        .bars(
            &syms(&["AAPL"]),
            Timeframe::M1,
            utc("2024-01-02T00:00:00Z"),
            utc("2024-01-03T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(got["AAPL"].len(), 3);
    assert_eq!(fake.request_count("/v2/stocks/bars"), 4);
    // Retry-After: 1 s, then until the reset (about 1 s later).
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "waited only {:?}",
        started.elapsed()
    );

    // Retries are bounded.
    for _ in 0..4 {
        fake.script(500, &[], r#"{"message":"internal error"}"#);
    }
    let e = data
        .bars(
            &syms(&["AAPL"]),
            Timeframe::M1,
            utc("2024-01-02T00:00:00Z"),
            utc("2024-01-03T00:00:00Z"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            DataError::Server {
                status: 500,
                attempts: 4,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("internal error"), "{e}");
}

#[tokio::test]
async fn authentication_and_request_errors_are_clear() {
    let fake = FakeData::start().await;
    let bad = AlpacaData::new(
        "alpaca-paper",
        &settings(&fake),
        "wrong".into(),
        "wrong".into(),
    )
    .unwrap()
    .with_tuning(fast());
    let e = bad
        .bars(
            &syms(&["AAPL"]),
            Timeframe::M1,
            utc("2024-01-02T00:00:00Z"),
            utc("2024-01-03T00:00:00Z"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e,
        DataError::Unauthorized {
            broker: "alpaca-paper".into(),
            status: 401,
            message: "request is not authorized".into()
        }
    );
    assert!(e.to_string().contains("refused the API key"), "{e}");
    assert_eq!(fake.request_count("/v2/stocks/bars"), 1, "no retry on 401");

    let data = client(&fake);
    let e = data
        .bars(
            &syms(&["AAPL"]),
            Timeframe::H1,
            utc("2024-01-02T00:00:00Z"),
            utc("2024-01-03T00:00:00Z"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, DataError::Rejected { status: 422, code: Some(42210000), message, .. } if message == "invalid timeframe"),
        "{e:?}"
    );
    fake.script(400, &[], r#"{"message":"bad symbol"}"#);
    let e = data.clock().await.unwrap_err();
    assert!(
        matches!(
            &e,
            DataError::Rejected {
                status: 400,
                code: None,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("bad symbol"), "{e}");

    let mut s = settings(&fake);
    s.key_id_env = "ZTRADED_TEST_SURELY_UNSET_KEY_ID".into();
    let e = AlpacaData::from_env("alpaca-paper", &s).unwrap_err();
    assert!(
        e.to_string()
            .contains("environment variable ZTRADED_TEST_SURELY_UNSET_KEY_ID"),
        "{e}"
    );
}

#[tokio::test]
async fn clock_and_calendar_come_from_the_trading_api() {
    let fake = FakeData::start().await;
    fake.set_calendar(vec![
        json!({"date":"2024-11-26","open":"09:30","close":"16:00","session_open":"0400","session_close":"2000"}),
        json!({"date":"2024-11-27","open":"09:30","close":"16:00","session_open":"0400","session_close":"2000"}),
        json!({"date":"2024-11-29","open":"09:30","close":"13:00","session_open":"0400","session_close":"1700"}),
        json!({"date":"2024-12-02","open":"09:30","close":"16:00","session_open":"0400","session_close":"2000"}),
        // 3 December missing: a closure our calendar does not know.
        json!({"date":"2024-12-04","open":"09:30","close":"16:00","session_open":"0400","session_close":"2000"}),
    ]);
    let data = client(&fake);
    let clock = data.clock().await.unwrap();
    assert!(clock.is_open);
    assert_eq!(clock.next_close, utc("2024-01-02T21:00:00Z"));
    let d = |s: &str| s.parse::<NaiveDate>().unwrap();
    let cal = data
        .calendar(d("2024-11-26"), d("2024-12-04"))
        .await
        .unwrap();
    assert_eq!(cal.days.len(), 5);
    let q = fake.requests().last().unwrap().query.clone();
    assert_eq!(
        (q["start"].as_str(), q["end"].as_str()),
        ("2024-11-26", "2024-12-04")
    );
    assert_eq!(
        cal.session_close(d("2024-11-29")),
        Some(utc("2024-11-29T18:00:00Z"))
    );
    assert!(cal.is_open(utc("2024-11-29T17:59:00Z")));
    assert!(!cal.is_open(utc("2024-11-29T18:00:00Z")));
    assert!(!cal.is_open(utc("2024-11-28T17:00:00Z")));
    let diffs = cal.differences(&UsEquityCalendar);
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert!(
        diffs[0].starts_with("2024-12-03: Alpaca has the market closed"),
        "{}",
        diffs[0]
    );
}

async fn next_event(rx: &mut mpsc::Receiver<LiveEvent>) -> LiveEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no event within 10 s")
        .expect("stream ended")
}

/// The next bar, skipping status events.
async fn next_bar(rx: &mut mpsc::Receiver<LiveEvent>) -> (String, Bar) {
    loop {
        if let LiveEvent::Bar { symbol, bar } = next_event(rx).await {
            return (symbol, bar);
        }
    }
}

/// Waits for a status matching `f`, returning the statuses seen (bars are not allowed).
async fn wait_status(
    rx: &mut mpsc::Receiver<LiveEvent>,
    f: impl Fn(&StreamStatus) -> bool,
) -> Vec<StreamStatus> {
    let mut seen = Vec::new();
    loop {
        match next_event(rx).await {
            LiveEvent::Status(s) => {
                let done = f(&s);
                seen.push(s);
                if done {
                    return seen;
                }
            }
            LiveEvent::Bar { symbol, bar } => panic!("unexpected bar {symbol} {bar:?}"),
        }
    }
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn stream_authenticates_subscribes_and_delivers_bars_in_order() {
    let fake = FakeData::start().await;
    let data = client(&fake);
    let (_tx, watch_rx) = watch::channel(set(&["AAPL", "MSFT"]));
    let mut rx = data.stream(watch_rx);
    let seen = wait_status(&mut rx, |s| matches!(s, StreamStatus::Subscribed { .. })).await;
    assert_eq!(
        seen,
        vec![
            StreamStatus::Connected {
                stream: StreamKind::Stocks
            },
            StreamStatus::Subscribed {
                stream: StreamKind::Stocks,
                bars: vec!["AAPL".into(), "MSFT".into()]
            }
        ]
    );
    assert_eq!(fake.stream_paths(), ["/v2/iex"], "no crypto connection");
    let a = minutes("2024-01-02T14:30:00Z", 3);
    let m = minutes("2024-01-02T14:30:00Z", 3);
    // Several messages per frame, with other message types in between.
    let frame = json!([
        {"T":"b","S":"AAPL","o":a[0].open,"h":a[0].high,"l":a[0].low,"c":a[0].close,"v":a[0].volume,"t":"2024-01-02T14:30:00Z","n":3,"vw":100.0},
        {"T":"t","S":"AAPL","p":100.0,"s":5,"t":"2024-01-02T14:30:05Z"},
        {"T":"b","S":"MSFT","o":m[0].open,"h":m[0].high,"l":m[0].low,"c":m[0].close,"v":m[0].volume,"t":"2024-01-02T14:30:00Z","n":3,"vw":100.0}
    ]);
    fake.push_raw(&frame.to_string());
    fake.push_bar("AAPL", &a[1]);
    // A correction of a delivered minute is ignored; one of a minute not yet delivered is
    // the bar.
    fake.push_updated_bar("AAPL", &Bar { close: 1.0, ..a[1] });
    fake.push_updated_bar("MSFT", &m[1]);
    fake.push_bar("MSFT", &m[1]);
    fake.push_bar("AAPL", &a[0]); // older than delivered
    fake.push_bar("AAPL", &a[2]);
    fake.push_bar("MSFT", &m[2]);
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(next_bar(&mut rx).await);
    }
    assert_eq!(
        got,
        vec![
            ("AAPL".to_string(), a[0]),
            ("MSFT".to_string(), m[0]),
            ("AAPL".to_string(), a[1]),
            ("MSFT".to_string(), m[1]),
            ("AAPL".to_string(), a[2]),
            ("MSFT".to_string(), m[2]),
        ]
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err(),
        "nothing else is delivered"
    );
}

#[tokio::test]
async fn stream_reports_auth_failure_and_retries() {
    let fake = FakeData::start().await;
    fake.set_auth_fail(true);
    let data = client(&fake);
    let (_tx, watch_rx) = watch::channel(set(&["AAPL"]));
    let mut rx = data.stream(watch_rx);
    let seen = wait_status(&mut rx, |s| matches!(s, StreamStatus::Disconnected { .. })).await;
    assert_eq!(
        seen[0],
        StreamStatus::AuthFailed {
            stream: StreamKind::Stocks,
            code: Some(402),
            message: "auth failed".into()
        }
    );
    fake.set_auth_error(Some((406, "connection limit exceeded")));
    let seen = wait_status(&mut rx, |s| matches!(s, StreamStatus::Error { .. })).await;
    assert_eq!(
        seen.last(),
        Some(&StreamStatus::Error {
            stream: StreamKind::Stocks,
            code: Some(406),
            message: "connection limit exceeded".into()
        })
    );
    fake.set_auth_fail(false);
    wait_status(&mut rx, |s| matches!(s, StreamStatus::Connected { .. })).await;
    fake.wait_subscribed("/v2/iex", &["AAPL"]).await;
    assert!(fake.stream_connections() >= 2);
}

#[tokio::test]
async fn subscriptions_follow_the_watched_set() {
    let fake = FakeData::start().await;
    let data = client(&fake);
    let (tx, watch_rx) = watch::channel(set(&["AAPL"]));
    let mut rx = data.stream(watch_rx);
    fake.wait_subscribed("/v2/iex", &["AAPL"]).await;
    tx.send(set(&["MSFT", "BTC/USD"])).unwrap();
    fake.wait_subscribed("/v2/iex", &["MSFT"]).await;
    fake.wait_subscribed("/v1beta3/crypto/us", &["BTC/USD"])
        .await;
    assert_eq!(fake.subscribed_updates("/v2/iex"), set(&["MSFT"]));
    assert_eq!(
        fake.subscribed_updates("/v1beta3/crypto/us"),
        set(&["BTC/USD"])
    );
    let subs = fake.subscriptions();
    let stocks: Vec<&Subscription> = subs.iter().filter(|s| s.path == "/v2/iex").collect();
    let sub = |action: &str, bars: &[&str]| Subscription {
        path: "/v2/iex".into(),
        action: action.into(),
        bars: bars.iter().map(|s| s.to_string()).collect(),
        updated_bars: bars.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(
        stocks,
        vec![
            &sub("subscribe", &["AAPL"]),
            &sub("unsubscribe", &["AAPL"]),
            &sub("subscribe", &["MSFT"])
        ]
    );
    // Bars of both streams arrive.
    let btc = minutes("2024-01-06T00:00:00Z", 1)[0];
    let msft = minutes("2024-01-02T14:30:00Z", 1)[0];
    fake.push_bar("AAPL", &msft); // no longer subscribed: the fake does not send it
    fake.push_bar("BTC/USD", &btc);
    let first = next_bar(&mut rx).await;
    assert_eq!(first, ("BTC/USD".to_string(), btc));
    fake.push_bar("MSFT", &msft);
    assert_eq!(next_bar(&mut rx).await, ("MSFT".to_string(), msft));
    // Emptying the set unsubscribes.
    tx.send(BTreeSet::new()).unwrap();
    fake.wait_subscribed("/v2/iex", &[]).await;
    fake.wait_subscribed("/v1beta3/crypto/us", &[]).await;
}

#[tokio::test]
async fn a_dropped_stream_reconnects_and_backfills_the_missed_minutes() {
    let fake = FakeData::start().await;
    let data = client(&fake);
    let (_tx, watch_rx) = watch::channel(set(&["AAPL", "MSFT"]));
    let mut rx = data.stream(watch_rx);
    fake.wait_subscribed("/v2/iex", &["AAPL", "MSFT"]).await;
    let a = minutes("2024-01-02T14:30:00Z", 8);
    let m = minutes("2024-01-02T14:30:00Z", 8);
    fake.push_bar("AAPL", &a[0]);
    fake.push_bar("AAPL", &a[1]);
    fake.push_bar("MSFT", &m[0]);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_bar(&mut rx).await);
    }
    // The connection drops; meanwhile minutes 2..5 happen (AAPL) and 1..5 (MSFT).
    fake.set_history("AAPL", a[..6].to_vec());
    fake.set_history("MSFT", m[..6].to_vec());
    fake.drop_stream();
    let seen = wait_status(&mut rx, |s| matches!(s, StreamStatus::Connected { .. })).await;
    assert!(
        matches!(
            seen[0],
            StreamStatus::Disconnected {
                stream: StreamKind::Stocks,
                ..
            }
        ),
        "{seen:?}"
    );
    for _ in 0..9 {
        got.push(next_bar(&mut rx).await);
    }
    let seen = wait_status(&mut rx, |s| matches!(s, StreamStatus::Backfilled { .. })).await;
    assert_eq!(
        seen.last(),
        Some(&StreamStatus::Backfilled {
            stream: StreamKind::Stocks,
            bars: 9
        })
    );
    // The backfill asked REST from the earliest missed minute.
    let r = fake.requests().last().unwrap().clone();
    assert_eq!(r.path, "/v2/stocks/bars");
    assert_eq!(r.query["symbols"], "AAPL,MSFT");
    assert_eq!(r.query["start"], "2024-01-02T14:31:00Z");
    fake.wait_subscribed("/v2/iex", &["AAPL", "MSFT"]).await;
    // The live stream repeats a backfilled minute, then goes on.
    fake.push_bar("AAPL", &a[5]);
    fake.push_bar("AAPL", &a[6]);
    fake.push_bar("MSFT", &m[6]);
    got.push(next_bar(&mut rx).await);
    got.push(next_bar(&mut rx).await);
    let aapl: Vec<Bar> = got
        .iter()
        .filter(|(s, _)| s == "AAPL")
        .map(|(_, b)| *b)
        .collect();
    let msft: Vec<Bar> = got
        .iter()
        .filter(|(s, _)| s == "MSFT")
        .map(|(_, b)| *b)
        .collect();
    assert_eq!(aapl, a[..7].to_vec(), "every minute once, in order");
    assert_eq!(msft, m[..7].to_vec(), "every minute once, in order");
}

#[tokio::test]
async fn streamed_minutes_feed_the_aggregator() {
    let fake = FakeData::start().await;
    let data = client(&fake);
    let (_tx, watch_rx) = watch::channel(set(&["AAPL"]));
    let mut rx = data.stream(watch_rx);
    fake.wait_subscribed("/v2/iex", &["AAPL"]).await;
    let mut live = LiveBars::new(chrono_tz::America::New_York);
    live.want("AAPL", &[Timeframe::M5, Timeframe::M15]);
    // 09:30 … 09:44 of 2 January 2024, but no trade at 09:44.
    let a = minutes("2024-01-02T14:30:00Z", 14);
    for b in &a {
        fake.push_bar("AAPL", b);
    }
    let mut out = Vec::new();
    for _ in 0..a.len() {
        let (symbol, bar) = next_bar(&mut rx).await;
        out.extend(live.push(&symbol, &bar));
    }
    out.extend(
        live.flush_until(utc("2024-01-02T14:45:00Z"))
            .into_iter()
            .map(|(_, tf, b)| (tf, b)),
    );
    let agg = |from: usize, to: usize| Bar {
        ts: a[from].ts,
        open: a[from].open,
        high: a[from..to].iter().map(|b| b.high).fold(f64::MIN, f64::max),
        low: a[from..to].iter().map(|b| b.low).fold(f64::MAX, f64::min),
        close: a[to - 1].close,
        volume: a[from..to].iter().map(|b| b.volume).sum(),
    };
    assert_eq!(
        out,
        vec![
            (Timeframe::M5, agg(0, 5)),
            (Timeframe::M5, agg(5, 10)),
            (Timeframe::M5, agg(10, 14)),
            (Timeframe::M15, agg(0, 14)),
        ]
    );
}
