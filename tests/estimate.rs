//! `ztraded estimate` through the binary: the shipped LLM example (human and JSON), a budget
//! too small for it (the estimate's exit status and validate's warning), a rule-only
//! pipeline, a signal trigger with `--signals-per-day`, and usage errors.

use rust_decimal::Decimal;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::str::FromStr;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn ztraded(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn json(args: &[&str]) -> (Option<i32>, Value) {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let o = ztraded(&all);
    let v: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&o), stderr(&o)));
    (o.status.code(), v)
}

/// A decimal string of the JSON output.
fn dec(v: &Value) -> Decimal {
    Decimal::from_str(
        v.as_str()
            .unwrap_or_else(|| panic!("not a decimal string: {v}")),
    )
    .unwrap()
}

/// A copy of examples/ with llm-swing's budget replaced by `budget` (YAML lines).
fn examples_with_budget(budget: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("pipelines")).unwrap();
    std::fs::create_dir_all(d.join("risk")).unwrap();
    std::fs::copy(root().join("examples/ztraded.toml"), d.join("ztraded.toml")).unwrap();
    std::fs::copy(
        root().join("examples/risk/conservative.yaml"),
        d.join("risk/conservative.yaml"),
    )
    .unwrap();
    let text = std::fs::read_to_string(root().join("examples/pipelines/llm-swing.yaml")).unwrap();
    let replaced = text.replace("  daily_usd: 2\n  monthly_usd: 40\n", budget);
    assert_ne!(
        replaced, text,
        "llm-swing's budget is no longer daily_usd 2, monthly_usd 40"
    );
    std::fs::write(d.join("pipelines/llm-swing.yaml"), replaced).unwrap();
    dir
}

fn path(dir: &tempfile::TempDir, rel: &str) -> PathBuf {
    dir.path().join(rel)
}

#[test]
fn llm_swing_costs_what_its_nodes_and_schedule_say() {
    let (code, v) = json(&["estimate", "examples/pipelines/llm-swing.yaml"]);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["pipeline"], "llm-swing");
    assert_eq!(v["file"], "examples/pipelines/llm-swing.yaml");
    // Three LLM nodes, all counted with gpt-4o's tokenizer family (the bias names gpt-4o,
    // the others take the provider's gpt-4o-mini).
    let nodes = v["llm_nodes"].as_array().unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(ids, ["bias", "strategy", "report"]);
    assert_eq!(nodes[0]["model"], "gpt-4o");
    assert_eq!(nodes[1]["model"], "gpt-4o-mini");
    // examples/ztraded.toml: 0.00015 USD per 1k input tokens, 0.0006 per 1k output.
    let (input_price, output_price) = (
        Decimal::from_str("0.00015").unwrap(),
        Decimal::from_str("0.0006").unwrap(),
    );
    let mut per_execution = Decimal::ZERO;
    for n in nodes {
        assert_eq!(n["tokenizer"], "o200k_base", "{n}");
        assert_eq!(n["estimated"], false);
        let input = n["input_tokens"].as_u64().unwrap();
        let output = n["output_tokens"].as_u64().unwrap();
        assert!(input > 0 && output > 0, "{n}");
        let usd = dec(&n["usd_per_call"]);
        assert_eq!(
            usd,
            (Decimal::from(input) * input_price + Decimal::from(output) * output_price)
                / Decimal::ONE_THOUSAND,
            "{n}"
        );
        // Once a trading day (market_open + 15 min = 09:45, which the 09:45–15:30 time gate
        // lets through) for each of the two symbols.
        assert_eq!(dec(&n["calls_per_trading_day"]), Decimal::from(2), "{n}");
        per_execution += usd;
    }
    // Fifty daily and fifty weekly bars: the bias prompt is the longest, over a thousand
    // tokens; the strategy reads the daily bars only.
    let tokens = |i: usize| nodes[i]["input_tokens"].as_u64().unwrap();
    assert!(tokens(0) > 1_000 && tokens(0) > tokens(1) && tokens(1) > tokens(2));
    let x = &v["executions"];
    assert_eq!(x["trigger"], "schedule market_open +15m");
    assert_eq!(x["symbols"], 2);
    assert_eq!(dec(&x["per_trading_day"]), Decimal::from(2));
    assert_eq!(dec(&x["per_weekend_day"]), Decimal::ZERO);
    assert_eq!(dec(&x["trading_days_per_month"]), Decimal::from(21));
    assert_eq!(dec(&x["per_month"]), Decimal::from(42));
    let c = &v["cost_usd"];
    assert_eq!(dec(&c["per_execution"]), per_execution);
    assert_eq!(dec(&c["per_trading_day"]), per_execution * Decimal::from(2));
    assert_eq!(dec(&c["peak_day"]), dec(&c["per_trading_day"]));
    assert_eq!(
        dec(&c["per_month"]),
        dec(&c["per_trading_day"]) * Decimal::from(21)
    );
    // Far within daily_usd 2 and monthly_usd 40.
    let b = &v["budget"];
    assert_eq!(dec(&b["daily_usd"]), Decimal::from(2));
    assert_eq!(dec(&b["monthly_usd"]), Decimal::from(40));
    assert_eq!(
        dec(&b["monthly_pct"]),
        (dec(&c["per_month"]) * Decimal::ONE_HUNDRED / Decimal::from(40))
            .round_dp(2)
            .normalize()
    );
    assert_eq!(b["over_daily"], false);
    assert_eq!(b["over_monthly"], false);
    assert_eq!(v["over_budget"], false);
    let assumptions: Vec<&str> = v["assumptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        assumptions.iter().any(|a| a.contains("o200k_base")),
        "{assumptions:#?}"
    );
    assert!(
        assumptions
            .iter()
            .any(|a| a.contains("node bias calls gpt-4o but is priced")),
        "{assumptions:#?}"
    );

    // The human report says the same.
    let o = ztraded(&["estimate", "examples/pipelines/llm-swing.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.starts_with("llm-swing: estimated LLM cost (examples/pipelines/llm-swing.yaml)\n"),
        "{text}"
    );
    for node in nodes {
        let line = text
            .lines()
            .find(|l| l.starts_with(node["node"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("no row for {node}: {text}"));
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[3], "o200k_base", "{line}");
        assert_eq!(
            cells[4],
            node["input_tokens"].as_u64().unwrap().to_string(),
            "{line}"
        );
        assert_eq!(
            cells[5],
            node["output_tokens"].as_u64().unwrap().to_string(),
            "{line}"
        );
    }
    assert!(
        text.contains("2 per trading day, 0 per weekend day, 2 on the busiest day, 42 per month"),
        "{text}"
    );
    let month = dec(&c["per_month"]).round_dp(6).normalize();
    assert!(text.contains(&format!("{month} USD per month")), "{text}");
    assert!(text.contains(": within budget"), "{text}");
    assert!(text.contains("assumptions\n  - "), "{text}");
}

#[test]
fn a_budget_too_small_fails_the_estimate_and_warns_in_validate() {
    let dir = examples_with_budget("  daily_usd: 0.001\n  monthly_usd: 0.01\n");
    let file = path(&dir, "pipelines/llm-swing.yaml");
    let file = file.to_str().unwrap();
    let (code, v) = json(&["estimate", file]);
    assert_eq!(code, Some(1), "over budget exits 1: {v:#}");
    assert_eq!(v["over_budget"], true);
    assert_eq!(v["budget"]["over_daily"], true);
    assert_eq!(v["budget"]["over_monthly"], true);
    let day = dec(&v["cost_usd"]["peak_day"]);
    assert!(day > Decimal::from_str("0.001").unwrap());
    assert_eq!(
        dec(&v["budget"]["daily_pct"]),
        (day * Decimal::from(100_000)).round_dp(2).normalize()
    );
    let o = ztraded(&["estimate", file]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("(OVER)"), "{}", stdout(&o));
    assert!(stdout(&o).contains(": over budget"), "{}", stdout(&o));

    // validate: a warning at the budget key (line 10 of llm-swing.yaml), exit 0; --strict
    // makes it fail.
    let o = ztraded(&["validate", dir.path().to_str().unwrap()]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    let warning = text
        .lines()
        .find(|l| l.contains("warning[llm-budget-exceeded]"))
        .unwrap_or_else(|| panic!("no warning: {text}"));
    assert!(
        warning.starts_with(&format!(
            "{file}:10:1: warning[llm-budget-exceeded]: budget: the estimated LLM cost is "
        )),
        "{warning}"
    );
    assert!(warning.contains("over daily_usd 0.001"), "{warning}");
    assert!(warning.contains("over monthly_usd 0.01"), "{warning}");
    assert!(text.ends_with("3 files, 0 errors, 1 warning\n"), "{text}");
    let o = ztraded(&["validate", "--strict", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let o = ztraded(&["validate", "--format", "json", dir.path().to_str().unwrap()]);
    let findings: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let f = &findings[0];
    assert_eq!(f["code"], "llm-budget-exceeded");
    assert_eq!(f["severity"], "warning");
    assert_eq!(f["path"], "/budget");
    assert_eq!(f["line"], 10);
}

#[test]
fn only_the_budget_that_is_exceeded_is_reported() {
    // The month (about 0.05 USD) exceeds 0.02; the costliest day (about 0.0025 USD) is
    // within 1: a warning about the month only, and the estimate fails on it.
    let dir = examples_with_budget("  daily_usd: 1\n  monthly_usd: 0.02\n");
    let file = path(&dir, "pipelines/llm-swing.yaml");
    let (code, v) = json(&["estimate", file.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert_eq!(v["budget"]["over_daily"], false);
    assert_eq!(v["budget"]["over_monthly"], true);
    let o = ztraded(&["validate", dir.path().to_str().unwrap()]);
    let text = stdout(&o);
    assert!(text.contains("over monthly_usd 0.02"), "{text}");
    assert!(!text.contains("daily_usd"), "{text}");
    // A budget the estimate fits, but one token per byte would not: no warning (the upper
    // bound only decides whether the real tokenizer is needed).
    let month = dec(&v["cost_usd"]["per_month"]);
    let roomy = (month * Decimal::from_str("1.2").unwrap()).round_dp(4);
    let dir = examples_with_budget(&format!("  monthly_usd: {roomy}\n"));
    let o = ztraded(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(stdout(&o), "3 files, 0 errors, 0 warnings\n");
    let file = path(&dir, "pipelines/llm-swing.yaml");
    let (code, v) = json(&["estimate", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["over_budget"], false);
}

#[test]
fn a_rule_only_pipeline_costs_nothing() {
    let (code, v) = json(&["estimate", "pipelines/golden-cross.yaml"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["llm_nodes"], Value::Array(Vec::new()));
    assert_eq!(dec(&v["cost_usd"]["per_execution"]), Decimal::ZERO);
    assert_eq!(dec(&v["cost_usd"]["per_month"]), Decimal::ZERO);
    // bar_close 1d on the three megacaps tickers.
    assert_eq!(v["executions"]["symbols"], 3);
    assert_eq!(dec(&v["executions"]["per_trading_day"]), Decimal::from(3));
    assert_eq!(dec(&v["executions"]["per_month"]), Decimal::from(63));
    assert_eq!(v["budget"], Value::Null);
    let o = ztraded(&["estimate", "pipelines/golden-cross.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(text.contains("no LLM nodes"), "{text}");
    assert!(text.contains("0 USD per month"), "{text}");
}

#[test]
fn signal_triggers_use_the_signals_per_day_given() {
    let file = "examples/pipelines/golden-cross-signal.yaml";
    let (_, v) = json(&["estimate", file]);
    assert_eq!(v["executions"]["known"], false);
    // Four megacaps tickers, one signal each a trading day by default.
    assert_eq!(dec(&v["executions"]["per_trading_day"]), Decimal::from(4));
    let (code, v) = json(&["estimate", file, "--signals-per-day", "2.5"]);
    assert_eq!(code, Some(0));
    assert_eq!(dec(&v["executions"]["per_trading_day"]), Decimal::from(10));
    assert_eq!(dec(&v["executions"]["per_month"]), Decimal::from(210));
    let o = ztraded(&["estimate", file, "--signals-per-day", "-1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn usage_errors_say_where_and_exit_two() {
    let o = ztraded(&["estimate", "examples/pipelines/nope.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("ztraded estimate: examples/pipelines/nope.yaml: "),
        "{}",
        stderr(&o)
    );
    // A file that is not a pipeline of its config directory.
    let o = ztraded(&["estimate", "examples/ztraded.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no pipeline 'ztraded'"),
        "{}",
        stderr(&o)
    );
    let o = ztraded(&[
        "estimate",
        "examples/pipelines/llm-swing.yaml",
        "--format",
        "xml",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn an_invalid_pipeline_is_reported_not_estimated() {
    let dir = examples_with_budget("  daily_usd: 2\n");
    let file = path(&dir, "pipelines/llm-swing.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("provider: default, model", "provider: nowhere, model"),
    )
    .unwrap();
    let o = ztraded(&["estimate", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("unknown-llm-provider"), "{err}");
    assert!(err.contains("llm-swing.yaml:"), "{err}");
    assert!(stdout(&o).is_empty());
}
