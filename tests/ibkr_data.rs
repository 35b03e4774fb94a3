//! IBKR market data against the fake gateway: historical bars for the warm-up, live minutes
//! made from 5-second real-time bars, the subscriptions following the wanted symbols, and
//! a reconnect that backfills the minutes missed meanwhile.

mod fake_tws;

use fake_tws::FakeTws;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use ztraded::config::settings::IbkrBroker as IbkrSettings;
use ztraded::market::Timeframe;
use ztraded::market::alpaca::LiveEvent;
use ztraded::market::ibkr::IbkrData;

fn data(fake: &FakeTws) -> IbkrData {
    IbkrData::new(&IbkrSettings {
        host: "127.0.0.1".into(),
        port: fake.port(),
        client_id: 30,
        paper: Some(true),
        account: None,
    })
}

async fn next_minute(rx: &mut mpsc::Receiver<LiveEvent>) -> (String, ztraded::market::Bar) {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("no minute within 10 s")
            .expect("stream ended");
        if let LiveEvent::Bar { symbol, bar } = e {
            return (symbol, bar);
        }
    }
}

async fn wait_subscribed(fake: &FakeTws, n: usize) {
    for _ in 0..200 {
        if fake.bar_subscriptions() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{} real-time bar subscriptions, wanted {n}",
        fake.bar_subscriptions()
    );
}

#[tokio::test]
async fn history_live_minutes_and_a_backfilled_reconnect() {
    let fake = FakeTws::start().await;
    let now = chrono::Utc::now().timestamp();
    let base = now - now % 60 - 600;
    fake.set_historical(&[
        (base - 120, 10.0, 11.0, 9.5, 10.5, 100.0),
        (base - 60, 10.5, 12.0, 10.0, 11.0, 200.0),
    ]);
    let d = data(&fake);
    let start = chrono::DateTime::from_timestamp(base - 3600, 0).unwrap();
    let end = chrono::DateTime::from_timestamp(base, 0).unwrap();
    let bars = d
        .bars(
            &["AAPL".to_string()],
            Timeframe::M1,
            start,
            end,
            chrono_tz::UTC,
        )
        .await
        .unwrap();
    let aapl = &bars["AAPL"];
    assert_eq!(aapl.len(), 2);
    assert_eq!(
        (aapl[1].ts, aapl[1].high, aapl[1].volume),
        (base - 60, 12.0, 200.0)
    );
    assert_eq!(fake.client_ids(), vec![31], "the data uses client id + 1");
    let req = fake.historical_requests().pop().unwrap();
    assert_eq!(req.bar_size_setting.as_deref(), Some("1 min"));
    assert_eq!(req.what_to_show.as_deref(), Some("TRADES"));
    assert_eq!(req.use_rth, Some(true));

    // Live: a minute is whole when its last 5 seconds arrive.
    let (tx, rx) = watch::channel(BTreeSet::from(["AAPL".to_string()]));
    let mut minutes = d.stream(rx);
    wait_subscribed(&fake, 1).await;
    for k in 0..12 {
        let c = 20.0 + k as f64;
        fake.push_bar("AAPL", base + 5 * k, (c, c + 0.5, c - 0.5, c, 10.0));
    }
    let (symbol, m) = next_minute(&mut minutes).await;
    assert_eq!(symbol, "AAPL");
    assert_eq!(
        (m.ts, m.open, m.high, m.low, m.close, m.volume),
        (base, 20.0, 31.5, 19.5, 31.0, 120.0)
    );

    // The connection drops; the next minute happens while it is down; after the
    // reconnect it is read back over historical bars before the live ones.
    fake.set_historical(&[(base + 60, 31.0, 33.0, 30.0, 32.0, 500.0)]);
    fake.disconnect();
    wait_subscribed(&fake, 1).await;
    let (_, m) = next_minute(&mut minutes).await;
    assert_eq!((m.ts, m.close, m.volume), (base + 60, 32.0, 500.0));

    // Subscriptions follow the symbols.
    tx.send_replace(BTreeSet::from(["AAPL".to_string(), "MSFT".to_string()]));
    wait_subscribed(&fake, 2).await;
    tx.send_replace(BTreeSet::from(["MSFT".to_string()]));
    wait_subscribed(&fake, 1).await;
}
