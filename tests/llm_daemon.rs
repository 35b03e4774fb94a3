//! The daemon binary with an LLM pipeline in simulation mode on replayed bars, against the
//! fake OpenAI-compatible server: it trades from the model's decisions, costs every call,
//! and stops calling the model once the pipeline's budget is spent.

mod common;
mod fake_openai;

use common::{Daemon, free_port};
use fake_openai::{FakeOpenAi, KEY, LLM_PIPELINE, Reply, write_goog_dir};
use std::time::Duration;

/// The shared test pipeline with a monthly budget of 0.02 USD.
fn budgeted() -> String {
    LLM_PIPELINE.replace("nodes:", "budget: { monthly_usd: 0.02 }\nnodes:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_pipeline_trades_from_the_model_and_stops_at_its_budget() {
    let fake = FakeOpenAi::start().await;
    fake.script([
        Reply::content(r#"{"action":"buy","conviction":80,"entry_price":null,"stop_loss":1.0,"target_1":100000.0,"target_2":null,"reasoning":"trend up"}"#),
        Reply::content(r#"{"action":"hold","conviction":50,"entry_price":null,"stop_loss":null,"target_1":null,"target_2":null,"reasoning":"wait"}"#),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut d = run_to_the_end(root, &fake.base_url, &budgeted()).await;
    let log = d.log_text();
    let metric = |s: &str| d.metric(s);
    // Five calls a month fit in 0.02 USD at 0.0038 USD a call: August, September, October.
    let calls = fake.seen().len();
    assert_eq!(calls, 15, "{}", common::tail(&log, 40));
    assert_eq!(
        metric("ztraded_executions_total{pipeline=\"llm\",result=\"completed\"}"),
        15.0
    );
    assert_eq!(
        metric("ztraded_executions_total{pipeline=\"llm\",result=\"skipped\"}"),
        25.0
    );
    assert_eq!(
        metric(
            "ztraded_llm_requests_total{model=\"fake-model-2024\",provider=\"default\",result=\"ok\"}"
        ),
        15.0
    );
    assert_eq!(
        metric(
            "ztraded_llm_tokens_total{kind=\"input\",model=\"fake-model-2024\",provider=\"default\"}"
        ),
        18_000.0
    );
    let cost = metric("ztraded_llm_cost_dollars_total{pipeline=\"llm\"}");
    assert!((cost - 0.057).abs() < 1e-9, "{cost}");
    let left = metric("ztraded_budget_remaining_dollars{period=\"monthly\",pipeline=\"llm\"}");
    assert!((left - 0.001).abs() < 1e-9, "{left}");
    // The model's buy was traded and is still open.
    assert_eq!(metric("ztraded_positions_open{pipeline=\"llm\"}"), 1.0);
    assert!(log.contains("budget reached"), "{}", common::tail(&log, 40));
    assert!(log.contains("80 % of the budget spent"));
    d.signal("TERM", Duration::from_secs(15));
    // The store has the cost records and the budget interventions.
    let db = root.join(".ztraded/ztraded.db");
    let store = ztraded::store::Store::connect(&format!("sqlite://{}", db.display()), 1, root)
        .await
        .unwrap();
    let spent = store
        .cost_total_usd(Some("llm"), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(spent, rust_decimal::Decimal::new(57, 3));
    let interventions = store.interventions(0, i64::MAX).await.unwrap();
    let budget = interventions
        .iter()
        .filter(|i| i.kind == ztraded::store::InterventionKind::Budget)
        .count();
    assert_eq!(budget, 25, "the first skip of each day (one bar a day)");
}

/// Writes the config directory (settings pointing at the fake at `base_url`, `pipeline` as
/// pipelines/llm.yaml, forty GOOG daily bars), runs the daemon until the replay is
/// exhausted and answers it still running.
async fn run_to_the_end(root: &std::path::Path, base_url: &str, pipeline: &str) -> Daemon {
    write_goog_dir(root);
    std::fs::write(root.join("ztraded.toml"), settings(base_url)).unwrap();
    std::fs::write(root.join("pipelines/llm.yaml"), pipeline).unwrap();
    let data = root.join("data").to_string_lossy().into_owned();
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut d = Daemon::start(
            &root,
            free_port(),
            // Ten trading days a second.
            864_000,
            &[
                ("ZTRADED_MARKET_DATA__PATH", data.as_str()),
                ("ZTRADED_TEST_LLM_KEY", KEY),
            ],
        );
        d.wait_ready(Duration::from_secs(30));
        d.wait_for("the end of the replay", Duration::from_secs(60), |d| {
            d.log_text().contains("the replay data is exhausted")
        });
        d
    })
    .await
    .unwrap()
}

fn settings(base_url: &str) -> String {
    format!(
        r#"[http]
admin_token_env = "ZTRADED_ADMIN_TOKEN"

[store]
url = "sqlite://.ztraded/ztraded.db"

[market_data]
source = "replay"
path = "data"
timezone = "America/New_York"
start = "2004-08-19"

[brokers.sim]
kind = "simulated"
initial_balance = 100000

[llm.default]
base_url = "{base_url}"
api_key_env = "ZTRADED_TEST_LLM_KEY"
model = "fake-model"
input_usd_per_1k_tokens = 0.0025
output_usd_per_1k_tokens = 0.01
timeout = "5s"
max_retries = 0
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_pipeline_records_its_llm_calls_for_a_backtest_replay() {
    let fake = FakeOpenAi::start().await;
    fake.script([Reply::content(
        r#"{"action":"buy","conviction":80,"entry_price":null,"stop_loss":1.0,"target_1":100000.0,"target_2":null,"reasoning":"trend up"}"#,
    )]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pipeline = LLM_PIPELINE.replace("mode: simulation", "mode: validation");
    let mut d = run_to_the_end(root, &fake.base_url, &pipeline).await;
    d.signal("TERM", Duration::from_secs(15));
    let calls = fake.seen().len();
    assert_eq!(
        calls,
        40,
        "one call a bar: {}",
        common::tail(&d.log_text(), 30)
    );
    let file = root.join("recordings/llm.llm.jsonl");
    let recorded = std::fs::read_to_string(&file).unwrap();
    assert_eq!(recorded.lines().count(), 40);
    // The backtest of the same pipeline on the same bars replays them, with no provider.
    std::fs::write(root.join("ztraded.toml"), settings("http://127.0.0.1:9/v1")).unwrap();
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .arg("backtest")
        .arg(root.join("pipelines/llm.yaml"))
        .args(["--llm", "replay", "--out"])
        .arg(root.join("out"))
        .env("ZTRADED_TEST_LLM_KEY", KEY)
        .current_dir(root)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("Executions: 40 completed"), "{stdout}");
    assert_eq!(fake.seen().len(), 40);
}

/// How many LLM executions per second one daemon sustains: 100 LLM pipelines on 40 daily
/// bars each (4,000 executions, one provider, `max_concurrency` 8), replayed as fast as the
/// daemon goes, against a fake that answers at once. Prints the rate
/// (`cargo test --test llm_daemon executions_per_second -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_per_second_with_100_llm_pipelines() {
    let fake = FakeOpenAi::start().await;
    fake.script([Reply::content(
        r#"{"action":"hold","conviction":50,"entry_price":null,"stop_loss":null,"target_1":null,"target_2":null,"reasoning":"wait"}"#,
    )]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    write_goog_dir(&root);
    std::fs::write(root.join("ztraded.toml"), settings(&fake.base_url)).unwrap();
    for i in 0..100 {
        std::fs::write(
            root.join(format!("pipelines/llm-{i:03}.yaml")),
            LLM_PIPELINE,
        )
        .unwrap();
    }
    let data = root.join("data").to_string_lossy().into_owned();
    let (d, seconds) = tokio::task::spawn_blocking(move || {
        let mut d = Daemon::start(
            &root,
            free_port(),
            1_000_000_000,
            &[
                ("ZTRADED_MARKET_DATA__PATH", data.as_str()),
                ("ZTRADED_TEST_LLM_KEY", KEY),
            ],
        );
        d.wait_ready(Duration::from_secs(60));
        let started = std::time::Instant::now();
        d.wait_for("the end of the replay", Duration::from_secs(300), |d| {
            d.log_text().contains("the replay data is exhausted")
        });
        (d, started.elapsed().as_secs_f64())
    })
    .await
    .unwrap();
    let calls = fake.seen().len();
    let rate = calls as f64 / seconds;
    println!("100 LLM pipelines: {calls} executions in {seconds:.2} s = {rate:.0} executions/s");
    assert_eq!(calls, 4_000, "{}", common::tail(&d.log_text(), 20));
    // A floor against a collapse (the number itself is the measurement: 121/s on a quiet
    // machine in a debug build, 76/s beside a release build).
    assert!(rate > 20.0, "{rate:.0} executions/s");
}

/// The shipped LLM example (examples/pipelines/llm-swing.yaml: an LLM bias on 1d and 1w, an
/// LLM strategy, an LLM summary, a daily and a monthly budget), switched to simulation on the
/// simulated broker, against the fake: it trades from the model's plans, and once a day's
/// budget is spent its next execution is skipped with the reason `budget`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_llm_example_trades_in_simulation_and_is_skipped_at_its_budget() {
    let fake = FakeOpenAi::start().await;
    fake.answer_by(|body| {
        let system = body["messages"][0]["content"].as_str().unwrap_or_default();
        if system.contains("market-bias analyst") {
            Reply::content(r#"{"bias":"bullish","confidence":85,"reasoning":"higher highs on the weekly","factors":["trend"]}"#)
        } else if system.contains("strategy agent") {
            Reply::content(r#"{"action":"buy","conviction":80,"entry_price":null,"stop_loss":1.0,"target_1":100000.0,"target_2":null,"reasoning":"pullback to the 50-day mean in an uptrend"}"#)
        } else {
            Reply::content("Bought on a bullish weekly trend.")
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for sub in ["pipelines", "risk"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let swing = std::fs::read_to_string(examples.join("pipelines/llm-swing.yaml")).unwrap();
    assert!(swing.contains("mode: paper") && swing.contains("broker: alpaca-paper"));
    let swing = swing
        .replace("mode: paper", "mode: simulation")
        .replace("broker: alpaca-paper", "broker: sim");
    std::fs::write(root.join("pipelines/llm-swing.yaml"), swing).unwrap();
    std::fs::copy(
        examples.join("risk/conservative.yaml"),
        root.join("risk/conservative.yaml"),
    )
    .unwrap();
    // Prices that make the example's budget (2 USD a day) last one execution a day: a call
    // costs 1200 × 0.4 / 1000 + 80 × 1 / 1000 = 0.56 USD, an execution (bias, strategy,
    // summary) 1.68 USD, so the day's second execution (the other symbol) would pass 2 USD
    // and is skipped.
    let toml = settings(&fake.base_url)
        .replace(
            "input_usd_per_1k_tokens = 0.0025",
            "input_usd_per_1k_tokens = 0.4",
        )
        .replace(
            "output_usd_per_1k_tokens = 0.01",
            "output_usd_per_1k_tokens = 1",
        )
        .replace("start = \"2004-08-19\"", "start = \"2014-03-03\"")
        .replace("path = \"data\"\n", "");
    std::fs::write(root.join("ztraded.toml"), toml).unwrap();
    let data = examples.join("data").to_string_lossy().into_owned();
    let (d, _) = tokio::task::spawn_blocking(move || {
        // Two trading days a second, from March 2014.
        let mut d = Daemon::start(
            &root,
            free_port(),
            172_800,
            &[
                ("ZTRADED_MARKET_DATA__PATH", data.as_str()),
                ("ZTRADED_TEST_LLM_KEY", KEY),
            ],
        );
        d.wait_ready(Duration::from_secs(30));
        d.wait_for("a budget skip and an order", Duration::from_secs(60), |d| {
            d.metric("ztraded_executions_total{pipeline=\"llm-swing\",result=\"skipped\"}") >= 2.0
                && d.log_text().contains("order submitted")
        });
        (d, ())
    })
    .await
    .unwrap();
    let log = d.log_text();
    assert!(log.contains("budget reached"), "{}", common::tail(&log, 30));
    assert!(log.contains("budget: "), "the skip says why");
    let completed =
        d.metric("ztraded_executions_total{pipeline=\"llm-swing\",result=\"completed\"}");
    assert!(completed >= 1.0, "{}", common::tail(&log, 30));
    let remaining =
        d.metric("ztraded_budget_remaining_dollars{period=\"daily\",pipeline=\"llm-swing\"}");
    assert!(remaining < 2.0, "{remaining}");
    // The three LLM nodes were called for the executions that ran.
    let seen = fake.seen();
    assert!(seen.iter().any(|s| {
        s.body["messages"][0]["content"]
            .as_str()
            .is_some_and(|c| c.contains("execution summaries"))
    }));
}
