//! Notifications against local HTTP receivers: the daemon binary on the shipped config sends
//! its fills, a refused revision and an emergency close to a webhook, Slack and Telegram in
//! their formats; deliveries are retried on 5xx and dropped (and counted) on a refusal, a
//! dead receiver or a full queue, and sending never waits.

mod common;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use common::{Daemon, TOKEN, copy_root_config, free_port};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ztraded::config::settings::{NotifyEvent, NotifySettings};
use ztraded::metrics::Metrics;
use ztraded::notify::{Notification, Notifier};

/// What the receiver got: (path, body), in arrival order.
#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<Vec<(String, Value)>>>,
    /// Answer 503 to this many requests first.
    fail_first: Arc<AtomicUsize>,
    /// Answer this status to every request (0: 200).
    status: Arc<AtomicUsize>,
}

impl Received {
    fn all(&self) -> Vec<(String, Value)> {
        self.requests.lock().unwrap().clone()
    }
    fn bodies(&self, path: &str) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b)
            .collect()
    }
}

async fn receive(
    State(r): State<Received>,
    UrlPath(path): UrlPath<String>,
    body: String,
) -> (StatusCode, String) {
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    r.requests.lock().unwrap().push((format!("/{path}"), value));
    if r.fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy".into());
    }
    match r.status.load(Ordering::SeqCst) {
        0 if path.ends_with("sendMessage") => (StatusCode::OK, r#"{"ok":true,"result":{}}"#.into()),
        0 => (StatusCode::OK, "ok".into()),
        s => (StatusCode::from_u16(s as u16).unwrap(), "no".into()),
    }
}

/// A receiver on a free loopback port, served from its own thread; answers its base URL.
fn receiver(r: Received) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new().route("/{*path}", post(receive)).with_state(r);
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{addr}")
}

#[test]
fn the_daemon_notifies_fills_a_refused_revision_and_an_emergency_close() {
    let received = Received::default();
    let base = receiver(received.clone());
    let dir = tempfile::tempdir().unwrap();
    copy_root_config(dir.path());
    let mut settings = std::fs::read_to_string(dir.path().join("ztraded.toml")).unwrap();
    settings.push_str(
        r#"
[notify.ops]
kind = "webhook"
url_env = "TEST_WEBHOOK_URL"
events = ["fill", "halt", "revision_refused", "emergency_close"]

[notify.desk]
kind = "slack"
url_env = "TEST_SLACK_URL"
events = ["emergency_close"]

[notify.phone]
kind = "telegram"
bot_token_env = "TEST_TG_TOKEN"
chat_id_env = "TEST_TG_CHAT"
api_url = "BASE/tg"
events = ["stop_hit", "target_hit", "emergency_close"]

[notify.unset]
kind = "webhook"
url_env = "TEST_NOT_SET_ANYWHERE"
events = ["emergency_close"]
"#
        .replace("BASE", &base)
        .as_str(),
    );
    std::fs::write(dir.path().join("ztraded.toml"), settings).unwrap();
    let hook = format!("{base}/hook");
    let slack = format!("{base}/slack");
    let mut d = Daemon::start(
        dir.path(),
        free_port(),
        86_400 * 20,
        &[
            ("TEST_WEBHOOK_URL", hook.as_str()),
            ("TEST_SLACK_URL", slack.as_str()),
            ("TEST_TG_TOKEN", "123:abc"),
            ("TEST_TG_CHAT", "-1001"),
        ],
    );
    d.wait_ready(Duration::from_secs(60));
    assert!(
        d.log_text().contains("notification sink not started"),
        "the sink without its variable is reported"
    );
    d.wait_for("a fill notification", Duration::from_secs(120), |_| {
        !received.bodies("/hook").is_empty()
    });
    let fill = received.bodies("/hook")[0].clone();
    assert_eq!(fill["event"], "fill", "{fill}");
    assert!(fill["title"].as_str().unwrap().contains(" at "), "{fill}");
    assert!(
        fill["pipeline"].is_string() && fill["symbol"].is_string(),
        "{fill}"
    );
    assert!(fill["at"].as_str().unwrap().ends_with('Z'), "{fill}");
    for k in ["side", "quantity", "price", "purpose", "client_order_id"] {
        assert!(!fill["details"][k].is_null(), "{k} in {fill}");
    }

    // A refused revision.
    std::fs::write(
        dir.path().join("pipelines/broken.yaml"),
        "mode: simulation\nsymbols: [AAPL]\ntrigger: {bar_close: {timeframe: 1d}}\nnodes: []\n",
    )
    .unwrap();
    d.wait_for(
        "a revision_refused notification",
        Duration::from_secs(30),
        |_| {
            received
                .bodies("/hook")
                .iter()
                .any(|b| b["event"] == "revision_refused")
        },
    );
    let refused = received
        .bodies("/hook")
        .into_iter()
        .find(|b| b["event"] == "revision_refused")
        .unwrap();
    assert!(
        refused["text"].as_str().unwrap().contains("broken.yaml"),
        "the findings name the file: {refused}"
    );

    // The emergency close reaches all three sinks.
    let (status, body) = d
        .post(
            "/v1/close",
            r#"{"scope":"all","reason":"notify test"}"#,
            Some(TOKEN),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    d.wait_for("the close on every sink", Duration::from_secs(30), |_| {
        received
            .bodies("/hook")
            .iter()
            .any(|b| b["event"] == "emergency_close")
            && !received.bodies("/slack").is_empty()
            && received
                .bodies("/tg/bot123:abc/sendMessage")
                .iter()
                .any(|b| b["text"].as_str().unwrap_or("").contains("emergency close"))
    });
    let close = received
        .bodies("/hook")
        .into_iter()
        .find(|b| b["event"] == "emergency_close")
        .unwrap();
    assert!(
        close["text"].as_str().unwrap().contains("notify test"),
        "{close}"
    );
    assert_eq!(close["details"]["halted"], true, "{close}");
    let slack_body = &received.bodies("/slack")[0];
    assert!(
        slack_body["text"]
            .as_str()
            .unwrap()
            .starts_with("*emergency close"),
        "{slack_body}"
    );
    let tg = received
        .bodies("/tg/bot123:abc/sendMessage")
        .into_iter()
        .find(|b| b["text"].as_str().unwrap_or("").contains("emergency close"))
        .unwrap();
    assert_eq!(tg["chat_id"], "-1001");
    // No halt event on top of the close (the ops sink takes halts).
    assert!(
        !received.all().iter().any(|(_, b)| b["event"] == "halt"),
        "an emergency close is not also told as a halt"
    );
    d.wait_for("the counters", Duration::from_secs(10), |d| {
        d.metric("ztraded_notifications_total{result=\"delivered\",sink=\"desk\"}") >= 1.0
            && d.metric("ztraded_notifications_total{result=\"dropped\",sink=\"unset\"}") >= 1.0
    });
    let hooks = received.bodies("/hook").len() as f64;
    assert_eq!(
        d.metric("ztraded_notifications_total{result=\"delivered\",sink=\"ops\"}"),
        hooks,
        "every webhook request was counted once"
    );
}

fn sinks(toml_text: &str) -> BTreeMap<String, NotifySettings> {
    toml::from_str(toml_text).unwrap()
}

fn note(i: usize) -> Notification {
    Notification {
        event: NotifyEvent::Fill,
        at: 1_700_000_000 + i as i64,
        title: format!("fill {i}"),
        text: String::new(),
        pipeline: Some("p".into()),
        symbol: Some("AAPL".into()),
        details: json!({"i": i}),
    }
}

fn counted(m: &Metrics, sink: &str, result: &str) -> f64 {
    m.render()
        .lines()
        .filter(|l| {
            l.starts_with("ztraded_notifications_total{")
                && l.contains(&format!("sink=\"{sink}\""))
                && l.contains(&format!("result=\"{result}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_5xx_drop_on_refusal_and_never_block() {
    // 503 twice, then 200: delivered once after two retries (1 s + 2 s of backoff).
    let flaky = Received::default();
    flaky.fail_first.store(2, Ordering::SeqCst);
    let flaky_url = format!("{}/flaky", receiver(flaky.clone()));
    // 400: refused, not retried.
    let refusing = Received::default();
    refusing.status.store(400, Ordering::SeqCst);
    let refusing_url = format!("{}/no", receiver(refusing.clone()));
    let metrics = Arc::new(Metrics::new().unwrap());
    let settings = sinks(
        r#"
        [flaky]
        kind = "webhook"
        url_env = "FLAKY"
        events = ["fill"]
        max_retries = 3
        [refusing]
        kind = "webhook"
        url_env = "REFUSING"
        events = ["fill"]
        [dead]
        kind = "webhook"
        url_env = "DEAD"
        max_retries = 0
        timeout = "1s"
        queue = 10
        "#,
    );
    // Nothing listens on the dead sink's port.
    let dead_url = format!("http://127.0.0.1:{}/x", free_port());
    let env = move |v: &str| match v {
        "FLAKY" => Some(flaky_url.clone()),
        "REFUSING" => Some(refusing_url.clone()),
        "DEAD" => Some(dead_url.clone()),
        _ => None,
    };
    let n = Notifier::start(&settings, env, Some(Arc::clone(&metrics)));
    let started = Instant::now();
    n.send(&[NotifyEvent::Fill], note(0));
    // Two thousand more for the dead sink with its queue of ten: sending does not wait.
    for i in 1..=2_000 {
        n.send(&[NotifyEvent::Halt], note(i));
    }
    let sending = started.elapsed();
    println!("2,001 notifications queued in {sending:?} (one sink taking them all, two not)");
    assert!(
        sending < Duration::from_millis(500),
        "send waited {sending:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && counted(&metrics, "flaky", "delivered") < 1.0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted(&metrics, "flaky", "delivered"), 1.0);
    assert_eq!(flaky.all().len(), 3, "two 503s, then the delivery");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "backed off 1 s, then 2 s"
    );
    while Instant::now() < deadline && counted(&metrics, "refusing", "dropped") < 1.0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted(&metrics, "refusing", "dropped"), 1.0);
    assert_eq!(counted(&metrics, "refusing", "delivered"), 0.0);
    assert_eq!(refusing.all().len(), 1, "a 400 is not retried");
    n.close(Duration::from_secs(15)).await;
    // Every notification of the dead sink ended in exactly one result.
    let dead = counted(&metrics, "dead", "dropped") + counted(&metrics, "dead", "delivered");
    assert_eq!(dead, 2_001.0, "each one counted once");
    assert_eq!(counted(&metrics, "dead", "delivered"), 0.0);
    assert_eq!(counted(&metrics, "flaky", "dropped"), 0.0);
}
