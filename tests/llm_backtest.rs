//! `ztraded backtest` of an LLM pipeline, the binary end to end against the fake
//! OpenAI-compatible server: it trades from the model's decisions, and an answer that is not
//! a decision fails its execution closed (no order).

mod fake_openai;

use fake_openai::{FakeOpenAi, KEY, LLM_PIPELINE as PIPELINE, Reply, write_goog_dir};
use std::path::Path;

fn config_dir(dir: &Path, base_url: &str) {
    write_goog_dir(dir);
    std::fs::write(
        dir.join("ztraded.toml"),
        format!(
            r#"[market_data]
path = "data"
timezone = "America/New_York"

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
        ),
    )
    .unwrap();
    std::fs::write(dir.join("pipelines/llm.yaml"), PIPELINE).unwrap();
}

async fn backtest(dir: &Path, out: &Path) -> (bool, String, String) {
    let (code, stdout, stderr) = backtest_args(dir, out, &[]).await;
    (code == Some(0), stdout, stderr)
}

#[tokio::test]
async fn an_llm_pipeline_trades_from_the_models_plan() {
    let fake = FakeOpenAi::start().await;
    // The first answer buys (entry at the last close, a far stop and target); every later
    // one holds.
    fake.script([
        Reply::content(r#"{"action":"buy","conviction":80,"entry_price":null,"stop_loss":1.0,"target_1":100000.0,"target_2":null,"reasoning":"trend up"}"#),
        Reply::content(r#"{"action":"hold","conviction":50,"entry_price":null,"stop_loss":null,"target_1":null,"target_2":null,"reasoning":"wait"}"#),
    ]);
    let dir = tempfile::tempdir().unwrap();
    config_dir(dir.path(), &fake.base_url);
    let out = dir.path().join("out");
    let (ok, stdout, stderr) = backtest(dir.path(), &out).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("Orders: 1"), "{stdout}");
    assert!(stdout.contains("Still open at the end"), "{stdout}");
    let seen = fake.seen();
    assert!(
        seen.len() >= 20,
        "one call per executed bar: {}",
        seen.len()
    );
    // Each prompt carries the bars up to its own bar only: the last bar of the first prompt
    // is not the last bar of the file.
    let first = seen[0].body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let last = seen[seen.len() - 1].body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first, last);
    assert!(
        !first.contains("2004-10-15"),
        "the first prompt sees no future bar"
    );
}

#[tokio::test]
async fn answers_that_are_not_decisions_fail_their_executions_without_orders() {
    let fake = FakeOpenAi::start().await;
    fake.script([Reply::content("Buy GOOG now!")]);
    let dir = tempfile::tempdir().unwrap();
    config_dir(dir.path(), &fake.base_url);
    let out = dir.path().join("out");
    let (ok, stdout, stderr) = backtest(dir.path(), &out).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("Orders: 0"), "{stdout}");
    assert!(stdout.contains("failed"), "{stdout}");
    assert!(
        stdout.contains("not JSON"),
        "the failure reason is reported: {stdout}"
    );
}

#[tokio::test]
async fn the_budget_skips_executions_once_it_is_spent() {
    let fake = FakeOpenAi::start().await;
    fake.script([Reply::content(
        r#"{"action":"hold","conviction":50,"entry_price":null,"stop_loss":null,"target_1":null,"target_2":null,"reasoning":"wait"}"#,
    )]);
    let dir = tempfile::tempdir().unwrap();
    config_dir(dir.path(), &fake.base_url);
    // 0.0038 USD a call (1200 prompt and 80 completion tokens): five calls a month fit in
    // 0.02 USD, the sixth would pass it.
    let pipeline = PIPELINE.replace("nodes:", "budget: { monthly_usd: 0.02 }\nnodes:");
    std::fs::write(dir.path().join("pipelines/llm.yaml"), pipeline).unwrap();
    let out = dir.path().join("out");
    let (ok, stdout, stderr) = backtest(dir.path(), &out).await;
    assert!(ok, "{stdout}\n{stderr}");
    let calls = fake.seen().len();
    // Three months (August to October 2004): five calls each.
    assert_eq!(calls, 15, "{stdout}");
    assert!(
        stdout.contains(&format!("Executions: {calls} completed, 25 skipped")),
        "{stdout}"
    );
    assert!(stdout.contains("LLM cost: 0.057 USD"), "{stdout}");
}

#[tokio::test]
async fn a_prompt_file_replaces_the_built_in_template_and_a_bad_one_is_a_validation_error() {
    let fake = FakeOpenAi::start().await;
    fake.script([Reply::content(
        r#"{"action":"hold","conviction":50,"entry_price":null,"stop_loss":null,"target_1":null,"target_2":null,"reasoning":"wait"}"#,
    )]);
    let dir = tempfile::tempdir().unwrap();
    config_dir(dir.path(), &fake.base_url);
    std::fs::create_dir_all(dir.path().join("prompts")).unwrap();
    std::fs::write(
        dir.path().join("prompts/house.md"),
        "HOUSE-STYLE analyst for {{symbol}}.\n---\n{{market}}\nPosition: {{position}}\n{{format}}\n",
    )
    .unwrap();
    let custom = PIPELINE.replace(
        "risk_reward_min: 1.5 }",
        "risk_reward_min: 1.5, prompt_file: prompts/house.md }",
    );
    std::fs::write(dir.path().join("pipelines/llm.yaml"), &custom).unwrap();
    let (ok, stdout, stderr) = backtest(dir.path(), &dir.path().join("out")).await;
    assert!(ok, "{stdout}\n{stderr}");
    let seen = fake.seen();
    assert_eq!(
        seen[0].body["messages"][0]["content"],
        "HOUSE-STYLE analyst for GOOG."
    );
    let user = seen[0].body["messages"][1]["content"].as_str().unwrap();
    assert!(user.starts_with("Timeframe 1d: last"), "{user}");
    assert!(user.contains("Position: none"), "{user}");

    // A missing file and a path outside the directory are errors at the field's line.
    for (file, says) in [
        ("prompts/nope.md", "cannot read 'prompts/nope.md'"),
        (
            "../outside.md",
            "must be a path inside the config directory",
        ),
    ] {
        let bad = PIPELINE.replace(
            "risk_reward_min: 1.5 }",
            &format!("risk_reward_min: 1.5, prompt_file: {file} }}"),
        );
        std::fs::write(dir.path().join("pipelines/llm.yaml"), &bad).unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_ztraded"))
            .arg("validate")
            .arg(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(o.status.code(), Some(1), "{text}");
        assert!(text.contains("pipelines/llm.yaml:15:"), "{text}");
        assert!(
            text.contains("prompt_file") && text.contains(says),
            "{text}"
        );
    }
}

async fn backtest_args(dir: &Path, out: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .arg("backtest")
        .arg(dir.join("pipelines/llm.yaml"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("ZTRADED_TEST_LLM_KEY", KEY)
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn files(out: &Path) -> Vec<Vec<u8>> {
    ["trades.csv", "equity.csv", "equity.svg"]
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect()
}

#[tokio::test]
async fn a_recorded_llm_backtest_replays_byte_identically_without_the_provider() {
    let fake = FakeOpenAi::start().await;
    // Buy on the first bar, then close on the 12th, then hold: a trade to compare.
    let buy = r#"{"action":"buy","conviction":80,"entry_price":null,"stop_loss":1.0,"target_1":100000.0,"target_2":null,"reasoning":"trend up"}"#;
    let hold = r#"{"action":"hold","conviction":50,"entry_price":null,"stop_loss":null,"target_1":null,"target_2":null,"reasoning":"wait"}"#;
    let close = r#"{"action":"close","conviction":70,"entry_price":null,"stop_loss":null,"target_1":null,"target_2":null,"reasoning":"done"}"#;
    let mut script = vec![Reply::content(buy)];
    script.extend((0..10).map(|_| Reply::content(hold)));
    script.push(Reply::content(close));
    script.push(Reply::content(hold));
    fake.script(script);
    let dir = tempfile::tempdir().unwrap();
    config_dir(dir.path(), &fake.base_url);
    let recorded = dir.path().join("rec");
    let (code, stdout, stderr) = backtest_args(dir.path(), &recorded, &["--llm", "record"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let calls = fake.seen().len();
    let file = dir.path().join("recordings/llm.llm.jsonl");
    let lines = std::fs::read_to_string(&file).unwrap();
    assert_eq!(lines.lines().count(), calls, "one recording per call");
    assert!(stdout.contains("Trades:               1"), "{stdout}");

    // The provider is gone: the replays use the file only, and agree byte for byte.
    let toml = std::fs::read_to_string(dir.path().join("ztraded.toml")).unwrap();
    std::fs::write(
        dir.path().join("ztraded.toml"),
        toml.replace(&fake.base_url, "http://127.0.0.1:9/v1"),
    )
    .unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (code_a, out_a, err_a) = backtest_args(dir.path(), &a, &["--llm", "replay"]).await;
    assert_eq!(code_a, Some(0), "{out_a}\n{err_a}");
    let (code_b, out_b, _) = backtest_args(dir.path(), &b, &["--llm", "replay"]).await;
    assert_eq!(code_b, Some(0));
    assert_eq!(fake.seen().len(), calls, "no request in replay");
    assert_eq!(files(&a), files(&b));
    assert_eq!(
        files(&a),
        files(&recorded),
        "the replay is the recorded run"
    );
    let summary = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("Wrote"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(summary(&out_a), summary(&out_b));
    assert_eq!(summary(&out_a), summary(&stdout));

    // A recording without the later answers: the replay stops at the first missing one.
    let first: Vec<&str> = lines.lines().take(5).collect();
    std::fs::write(&file, first.join("\n") + "\n").unwrap();
    let (code, out, err) =
        backtest_args(dir.path(), &dir.path().join("c"), &["--llm", "replay"]).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(
        err.contains("no recorded answer for node 'strategy'"),
        "{err}"
    );
    assert!(err.contains("2004-08-27"), "the sixth bar is named: {err}");

    // A replay without any recording file says how to make one.
    let (code, _, err) = backtest_args(
        dir.path(),
        &dir.path().join("d"),
        &["--llm", "replay", "--llm-file", "nowhere.jsonl"],
    )
    .await;
    assert_ne!(code, Some(0));
    assert!(
        err.contains("nowhere.jsonl") && err.contains("--llm record"),
        "{err}"
    );
}

#[tokio::test]
async fn a_recording_run_stops_calling_at_its_max_cost() {
    let fake = FakeOpenAi::start().await;
    fake.script([Reply::content(
        r#"{"action":"hold","conviction":50,"entry_price":null,"stop_loss":null,"target_1":null,"target_2":null,"reasoning":"wait"}"#,
    )]);
    let dir = tempfile::tempdir().unwrap();
    config_dir(dir.path(), &fake.base_url);
    // 0.0038 USD a call: the third passes 0.01 USD, the fourth is refused.
    let (code, stdout, stderr) = backtest_args(
        dir.path(),
        &dir.path().join("out"),
        &["--llm", "record", "--max-cost-usd", "0.01"],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(fake.seen().len(), 3, "{stdout}");
    assert!(
        stdout.contains("Executions: 3 completed, 37 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--max-cost-usd of 0.01 USD is spent"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_reporting_summary_costs_a_call_and_never_fails_the_execution() {
    let fake = FakeOpenAi::start().await;
    let hold = r#"{"action":"hold","conviction":50,"entry_price":null,"stop_loss":null,"target_1":null,"target_2":null,"reasoning":"wait"}"#;
    // Per bar: the plan, then the summary, which half of the time the provider fails.
    let mut script = Vec::new();
    for i in 0..40 {
        script.push(Reply::content(hold));
        script.push(if i % 2 == 0 {
            Reply::content("Held GOOG: no setup.")
        } else {
            Reply::error(500, "server_error", "boom")
        });
    }
    fake.script(script);
    let dir = tempfile::tempdir().unwrap();
    config_dir(dir.path(), &fake.base_url);
    let with_summary = format!(
        "{PIPELINE}  - id: report\n    agent: reporting\n    config: {{ summary: llm, provider: default }}\n"
    );
    std::fs::write(dir.path().join("pipelines/llm.yaml"), with_summary).unwrap();
    let (ok, stdout, stderr) = backtest(dir.path(), &dir.path().join("out")).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(fake.seen().len(), 80, "a plan and a summary per bar");
    assert!(stdout.contains("Executions: 40 completed\n"), "{stdout}");
    // 40 plans and 20 summaries answered, at 0.0038 USD each.
    assert!(stdout.contains("LLM cost: 0.228 USD"), "{stdout}");
    let summaries = fake
        .seen()
        .iter()
        .filter(|s| {
            s.body["messages"][1]["content"]
                .as_str()
                .is_some_and(|c| c.contains("What the execution decided"))
        })
        .count();
    assert_eq!(summaries, 40);
}
