//! Strategy review in pull requests: `ztraded backtest --baseline` (both revisions of a
//! pipeline on the same bars, side by side), `ztraded plan --format markdown`, the
//! pre-commit hook definition and the example GitHub Actions workflow.

mod common;

use common::copy_root_config;
use rust_decimal::Decimal;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::str::FromStr;
use ztraded::backtest::analytics::format_usd;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn data() -> PathBuf {
    repo().join("examples/data")
}

/// `ztraded ARGS` in `cwd`.
fn ztraded(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .args(args)
        .current_dir(cwd)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ZTRADED_STORE__URL")
        .output()
        .unwrap()
}

fn stdout_ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Two copies of the shipped config: `base` as shipped, `change` with golden-cross's stop
/// moved from 2 to 1.5 ATRs, a new pipeline `golden-fresh` and rsi-reversion removed.
struct Revisions {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    base: PathBuf,
    change: PathBuf,
}

fn revisions() -> Revisions {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let (base, change) = (root.join("base"), root.join("change"));
    for d in [&base, &change] {
        std::fs::create_dir_all(d).unwrap();
        copy_root_config(d);
    }
    let file = change.join("pipelines/golden-cross.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(r#"stop_loss: "close - 2.0 * atr_14""#));
    let text = text.replace(
        r#"stop_loss: "close - 2.0 * atr_14""#,
        r#"stop_loss: "close - 1.5 * atr_14""#,
    );
    std::fs::write(&file, &text).unwrap();
    std::fs::write(change.join("pipelines/golden-fresh.yaml"), &text).unwrap();
    std::fs::remove_file(change.join("pipelines/rsi-reversion.yaml")).unwrap();
    Revisions {
        _tmp: tmp,
        root,
        base,
        change,
    }
}

fn backtest(r: &Revisions, dir: &Path, pipeline: &str, out: &str, extra: &[&str]) -> Output {
    let file = dir.join(format!("pipelines/{pipeline}.yaml"));
    let out = r.root.join(out);
    let data = data();
    let mut args = vec![
        "backtest",
        file.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ztraded(&r.root, &args)
}

fn json(o: &Output) -> Value {
    serde_json::from_str(&stdout_ok(o)).unwrap()
}

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(
        v.as_str()
            .unwrap_or_else(|| panic!("not a decimal string: {v}")),
    )
    .unwrap()
}

/// The value of a metric in a run's `--format json` output, by the metric's key.
fn side_value(run: &Value, key: &str) -> Value {
    let p = &run["performance"];
    match key {
        "max_drawdown_pct" => p["max_drawdown"]["pct"].clone(),
        "max_drawdown_usd" => p["max_drawdown"]["usd"].clone(),
        "llm_cost_usd" | "orders" | "open_positions" | "unrealized_pnl" | "buy_and_hold_pct" => {
            run[key].clone()
        }
        "risk_rejections" | "failed_executions" => {
            let field = if key == "risk_rejections" {
                "risk_rejections"
            } else {
                "failures"
            };
            let n: u64 = run[field]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum();
            Value::from(n)
        }
        _ => {
            assert!(p.get(key).is_some(), "no performance field {key}");
            p[key].clone()
        }
    }
}

/// `change − baseline` of two JSON values of one metric (decimal strings, integers or
/// floats).
fn difference(b: &Value, c: &Value) -> Value {
    match (b, c) {
        (Value::String(_), Value::String(_)) => Value::String((dec(c) - dec(b)).to_string()),
        (x, y) if x.is_i64() && y.is_i64() => {
            Value::from(y.as_i64().unwrap() - x.as_i64().unwrap())
        }
        (x, y) => Value::from(y.as_f64().unwrap() - x.as_f64().unwrap()),
    }
}

/// The cells of the Markdown table row whose first cell is `label`.
fn md_row<'a>(md: &'a str, label: &str) -> Vec<&'a str> {
    md.lines()
        .find(|l| l.starts_with(&format!("| {label} |")))
        .unwrap_or_else(|| panic!("no row {label} in\n{md}"))
        .trim_matches('|')
        .split(" | ")
        .map(str::trim)
        .collect()
}

#[test]
fn backtest_baseline_shows_both_revisions_on_the_same_bars_side_by_side() {
    let r = revisions();
    // Each side on its own.
    let change = json(&backtest(
        &r,
        &r.change,
        "golden-cross",
        "c",
        &["--format", "json"],
    ));
    let base = json(&backtest(
        &r,
        &r.base,
        "golden-cross",
        "b",
        &["--format", "json"],
    ));
    assert_ne!(
        change["performance"]["total_pnl"], base["performance"]["total_pnl"],
        "the tighter stop changes the result"
    );
    assert_eq!(change["bars"], base["bars"]);

    // Both together: the same numbers, exactly.
    let base_dir = r.base.to_str().unwrap();
    let v = json(&backtest(
        &r,
        &r.change,
        "golden-cross",
        "cmp",
        &["--baseline", base_dir, "--format", "json"],
    ));
    assert_eq!(v["status"], "compared");
    assert_eq!(v["same_bars"], true);
    for key in [
        "performance",
        "symbols",
        "bars",
        "from",
        "to",
        "orders",
        "executions",
    ] {
        assert_eq!(v["change"][key], change[key], "{key}");
        assert_eq!(v["baseline"][key], base[key], "{key}");
    }
    let metrics = v["metrics"].as_array().unwrap();
    assert!(metrics.len() >= 20);
    for m in metrics {
        let key = m["key"].as_str().unwrap();
        let (b, c) = (side_value(&base, key), side_value(&change, key));
        assert_eq!(m["baseline"], b, "{key}");
        assert_eq!(m["change"], c, "{key}");
        if b.is_null() || c.is_null() {
            assert!(m["difference"].is_null(), "{key}");
        } else if b.is_string() {
            assert_eq!(dec(&m["difference"]), dec(&difference(&b, &c)), "{key}");
        } else {
            assert_eq!(m["difference"], difference(&b, &c), "{key}");
        }
    }
    let pnl = metrics.iter().find(|m| m["key"] == "total_pnl").unwrap();
    let pnl_diff = dec(&pnl["difference"]);
    assert_eq!(
        pnl["verdict"],
        if pnl_diff > Decimal::ZERO {
            "better"
        } else {
            "worse"
        }
    );
    assert_eq!(
        metrics.iter().find(|m| m["key"] == "trades").unwrap()["verdict"],
        Value::Null
    );
    // The config diff: the reconciler's field, with both values.
    assert_eq!(v["config"]["kind"], "changed");
    assert_eq!(
        v["config"]["fields"],
        serde_json::json!([{
            "field": "nodes[2].config.stop_loss",
            "before": "close - 2.0 * atr_14",
            "after": "close - 1.5 * atr_14",
        }])
    );
    // The files: this change's as usual, the baseline's in baseline/, both as the
    // separate runs wrote them.
    for file in ["trades.csv", "equity.csv"] {
        let read = |p: &str| std::fs::read(r.root.join(p).join(file)).unwrap();
        assert_eq!(read("cmp"), read("c"), "{file}");
        assert_eq!(read("cmp/baseline"), read("b"), "{file}");
    }

    // Markdown: the same numbers in a GitHub table.
    let md = stdout_ok(&backtest(
        &r,
        &r.change,
        "golden-cross",
        "cmp-md",
        &["--baseline", base_dir, "--format", "markdown"],
    ));
    assert!(md.starts_with("### Backtest: `golden-cross`\n"), "{md}");
    assert!(
        md.contains(
            "| metric | baseline | this change | difference |\n| --- | ---: | ---: | ---: |\n"
        ),
        "{md}"
    );
    assert!(
        md.contains(
            "- `nodes[2].config.stop_loss`: `close - 2.0 * atr_14` → `close - 1.5 * atr_14`"
        ),
        "{md}"
    );
    let usd = |d: Decimal| format!("{} USD", format_usd(d));
    let row = md_row(&md, "Total P&L");
    let (b, c) = (
        dec(&base["performance"]["total_pnl"]),
        dec(&change["performance"]["total_pnl"]),
    );
    assert_eq!(row[1], usd(b), "{row:?}");
    assert_eq!(row[2], usd(c), "{row:?}");
    let sign = if c > b { "+" } else { "-" };
    let mark = if c > b { "🟢" } else { "🔴" };
    assert_eq!(
        row[3],
        format!("{sign}{} USD {mark}", format_usd((c - b).abs())),
        "{row:?}"
    );
    let row = md_row(&md, "Trades");
    let (bt, ct) = (
        base["performance"]["trades"].as_i64().unwrap(),
        change["performance"]["trades"].as_i64().unwrap(),
    );
    assert_eq!(row[1..3], [bt.to_string(), ct.to_string()]);
    let trades_diff = match ct - bt {
        0 => "0".to_string(),
        d if d > 0 => format!("+{d}"),
        d => d.to_string(),
    };
    assert_eq!(row[3], trades_diff, "no verdict on the number of trades");
    let row = md_row(&md, "Win rate");
    let rate = |run: &Value| {
        format!(
            "{:.2}%",
            run["performance"]["win_rate_pct"].as_f64().unwrap()
        )
    };
    assert_eq!(row[1..3], [rate(&base), rate(&change)]);
    assert!(
        row[3].ends_with(" pp") || row[3].contains(" pp "),
        "{row:?}"
    );
    let row = md_row(&md, "Sharpe ratio");
    let sharpe = |run: &Value| {
        format!(
            "{:.2}",
            run["performance"]["sharpe_ratio"].as_f64().unwrap()
        )
    };
    assert_eq!(row[1..3], [sharpe(&base), sharpe(&change)]);
    let row = md_row(&md, "Max drawdown");
    let dd = |run: &Value| {
        format!(
            "{}%",
            format_usd(dec(&run["performance"]["max_drawdown"]["pct"]))
        )
    };
    assert_eq!(row[1..3], [dd(&base), dd(&change)]);

    // Human: the same table for a terminal.
    let text = stdout_ok(&backtest(
        &r,
        &r.change,
        "golden-cross",
        "cmp-h",
        &["--baseline", base_dir],
    ));
    let header = text.lines().find(|l| l.starts_with("Metric")).unwrap();
    assert!(
        header.contains("Baseline")
            && header.contains("This change")
            && header.contains("Difference"),
        "{text}"
    );
    let line = text.lines().find(|l| l.starts_with("Total P&L")).unwrap();
    assert!(line.contains(&usd(b)) && line.contains(&usd(c)), "{line}");
    assert!(
        text.contains("nodes[2].config.stop_loss: close - 2.0 * atr_14 → close - 1.5 * atr_14"),
        "{text}"
    );
    assert!(text.contains("The same bars for both"), "{text}");
}

#[test]
fn a_new_pipeline_is_reported_as_new_and_a_removed_one_is_an_error() {
    let r = revisions();
    let base_dir = r.base.to_str().unwrap();
    let md = stdout_ok(&backtest(
        &r,
        &r.change,
        "golden-fresh",
        "fresh",
        &["--baseline", base_dir, "--format", "markdown"],
    ));
    assert!(md.contains("🆕 **New pipeline**"), "{md}");
    assert!(md.contains("| metric | value |"), "{md}");
    assert!(!md.contains("| baseline |"), "{md}");
    assert!(!r.root.join("fresh/baseline").exists());
    let v = json(&backtest(
        &r,
        &r.change,
        "golden-fresh",
        "fresh-json",
        &["--baseline", base_dir, "--format", "json"],
    ));
    assert_eq!(v["status"], "new");
    assert!(v["baseline"].is_null());
    assert!(v["metrics"][0]["baseline"].is_null());
    assert!(!v["metrics"][0]["change"].is_null());
    let text = stdout_ok(&backtest(
        &r,
        &r.change,
        "golden-fresh",
        "fresh-h",
        &["--baseline", base_dir],
    ));
    assert!(text.contains("a new pipeline"), "{text}");

    let o = backtest(
        &r,
        &r.change,
        "rsi-reversion",
        "gone",
        &["--baseline", base_dir],
    );
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("this change removes pipeline 'rsi-reversion'"),
        "{stderr}"
    );

    let o = backtest(
        &r,
        &r.change,
        "golden-cross",
        "nowhere",
        &["--baseline", r.root.join("nowhere").to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a directory"));
}

#[test]
fn plan_markdown_lists_changed_fields_and_the_open_positions_each_change_touches() {
    let r = revisions();
    let (change, base) = (r.change.to_str().unwrap(), r.base.to_str().unwrap());
    let plan = |format: &str| {
        let o = ztraded(
            &r.root,
            &["plan", change, "--base", base, "--format", format],
        );
        stdout_ok(&o)
    };
    let md = plan("markdown");
    assert!(md.starts_with("### ztraded plan\n"), "{md}");
    assert!(md.contains("**1 added, 1 changed, 1 removed**"), "{md}");
    let row = md_row(&md, "`golden-cross`");
    assert_eq!(row[1], "✏️ changed");
    assert_eq!(
        row[2],
        "`nodes[2].config.stop_loss`: `close - 2.0 * atr_14` → `close - 1.5 * atr_14`"
    );
    assert_eq!(row[3], "unknown");
    assert_eq!(md_row(&md, "`golden-fresh`")[1], "🆕 added");
    let removed = md_row(&md, "`rsi-reversion`");
    assert_eq!(removed[1], "🗑️ removed");
    assert_eq!(removed[2], "`on_remove: close`");
    assert!(
        md.contains("Open positions: unknown; the store sqlite://.ztraded/ztraded.db of"),
        "{md}"
    );
    assert!(md.contains("Validation: "), "{md}");
    // Planning reads the store; it never creates one.
    assert!(!r.change.join(".ztraded").exists());

    // JSON: the files to backtest and the values of the changed fields.
    let v: Value = serde_json::from_str(&plan("json")).unwrap();
    assert!(
        v["files"]["golden-cross"]
            .as_str()
            .unwrap()
            .ends_with("pipelines/golden-cross.yaml")
    );
    assert!(v["files"]["rsi-reversion"].is_null(), "removed: no file");
    assert_eq!(
        v["field_values"]["golden-cross"][0]["after"],
        "close - 1.5 * atr_14"
    );
    assert_eq!(v["store"]["positions_known"], false);
    for key in [
        "base",
        "revision",
        "changes",
        "positions",
        "settings_changed",
        "refused",
    ] {
        assert!(v.get(key).is_some(), "no {key} in {v}");
    }
    // `--json` is still `--format json`.
    let o = ztraded(&r.root, &["plan", change, "--base", base, "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&stdout_ok(&o)).unwrap(), v);

    // With the daemon's store: the positions each change touches and what happens to them.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = ztraded::store::Store::connect("sqlite://.ztraded/ztraded.db", 1, &r.change)
            .await
            .unwrap();
        for (pipeline, symbol) in [
            ("golden-cross", "AAPL"),
            ("rsi-reversion", "SPY"),
            ("other", "GOOG"),
        ] {
            let trade = ztraded::engine::book::OpenTrade::adopted(
                "sim",
                pipeline,
                symbol,
                Decimal::from(10),
                Decimal::from_str("150.25").unwrap(),
                1_000,
            );
            store.save_open_trade(&trade, 1_000).await.unwrap();
        }
        store.close().await;
    });
    let md = plan("markdown");
    assert_eq!(
        md_row(&md, "`golden-cross`")[3],
        "AAPL long 10 @ 150.25 — kept: the pipeline restarts between executions and keeps managing it"
    );
    assert_eq!(
        md_row(&md, "`rsi-reversion`")[3],
        "SPY long 10 @ 150.25 — closed at market (on_remove: close)"
    );
    assert_eq!(md_row(&md, "`golden-fresh`")[3], "none");
    assert!(
        md.contains("Open positions from the store `sqlite://.ztraded/ztraded.db`: 3 open positions, 2 in the pipelines this change touches."),
        "{md}"
    );
    let human = plan("human");
    assert!(
        human.contains("open position: AAPL long 10 @ 150.25 — kept"),
        "{human}"
    );

    // An invalid revision: the comment says so, with the errors.
    std::fs::write(
        r.change.join("pipelines/broken.yaml"),
        "mode: simulation\nbogus: 1\n",
    )
    .unwrap();
    let o = ztraded(
        &r.root,
        &["plan", change, "--base", base, "--format", "markdown"],
    );
    assert_eq!(o.status.code(), Some(1));
    let md = String::from_utf8(o.stdout).unwrap();
    assert!(md.contains("❌"), "{md}");
    assert!(
        md.contains("pipelines/broken.yaml:2:1: error[unknown-field]"),
        "{md}"
    );
}

/// A YAML file through the project's own loader (which wants a mapping at the root: a
/// top-level list is nested under a key first).
fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let text = if text.lines().any(|l| l.starts_with("- ")) {
        let indented: String = text.lines().map(|l| format!("  {l}\n")).collect();
        format!("root:\n{indented}")
    } else {
        text
    };
    let (doc, errors) = ztraded::config::yaml::parse(&text);
    assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    doc.unwrap().value
}

#[test]
fn the_pre_commit_hooks_parse_with_the_expected_keys() {
    let v = yaml(&repo().join(".pre-commit-hooks.yaml"));
    let hooks = v["root"].as_array().unwrap();
    let hook = hooks
        .iter()
        .find(|h| h["id"] == "ztraded-validate")
        .expect("a ztraded-validate hook");
    for h in hooks {
        assert!(
            h["entry"].as_str().unwrap().starts_with("ztraded validate"),
            "{h}"
        );
        assert_eq!(h["pass_filenames"], false, "{h}");
        let files = h["files"].as_str().unwrap();
        for part in ["pipelines|scanners|risk", "\\.ya?ml", "ztraded\\.toml"] {
            assert!(files.contains(part), "{files}");
        }
        assert!(["rust", "system"].contains(&h["language"].as_str().unwrap()));
        assert!(h["name"].is_string());
    }
    assert_eq!(hook["language"], "rust");
}

#[test]
fn the_example_workflow_parses_and_runs_validate_plan_and_backtest() {
    let path = repo().join("examples/github/ztraded-review.yml");
    let v = yaml(&path);
    assert!(v["on"]["pull_request"].is_object(), "{v}");
    assert_eq!(v["permissions"]["pull-requests"], "write");
    assert_eq!(v["permissions"]["contents"], "read");
    let steps = v["jobs"]["review"]["steps"].as_array().unwrap();
    let base = steps
        .iter()
        .find(|s| s["with"]["path"] == "base")
        .expect("a checkout of the base branch");
    assert!(
        base["uses"]
            .as_str()
            .unwrap()
            .starts_with("actions/checkout@")
    );
    assert_eq!(base["with"]["ref"], "${{ github.base_ref }}");
    let runs: String = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "ztraded validate \"$CONFIG\" --format github",
        "ztraded plan \"$CONFIG\" --base \"$base\" --format markdown",
        "--baseline \"$base\" --format markdown",
    ] {
        assert!(runs.contains(needle), "no {needle} in\n{runs}");
    }
    assert!(steps.iter().any(|s| {
        s["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("actions/github-script@"))
    }));
}

/// The workflow's review script itself, on two revisions: it writes one review with the
/// plan and a backtest table for each added or changed pipeline.
#[test]
fn the_workflow_script_writes_the_review() {
    if Command::new("jq").arg("--version").output().is_err() {
        eprintln!("jq is not installed: the workflow script is not run");
        return;
    }
    let v = yaml(&repo().join("examples/github/ztraded-review.yml"));
    let steps = v["jobs"]["review"]["steps"].as_array().unwrap();
    let script = steps
        .iter()
        .find(|s| s["name"] == "Plan and backtest")
        .and_then(|s| s["run"].as_str())
        .unwrap();
    let r = revisions();
    // The pull request's checkout with the base branch checked out into base/.
    std::fs::rename(&r.base, r.change.join("base")).unwrap();
    let summary = r.root.join("summary.md");
    let bin = Path::new(env!("CARGO_BIN_EXE_ztraded")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(&r.change)
        .env("PATH", path)
        .env("CONFIG", ".")
        .env("LLM", "replay")
        .env("STORE_URL", "")
        .env("GITHUB_SHA", "0123456789abcdef0123")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("ZTRADED_MARKET_DATA__PATH", data())
        .env_remove("ZTRADED_STORE__URL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let review = std::fs::read_to_string(r.change.join("review.md")).unwrap();
    assert!(
        review.starts_with("<!-- ztraded-review -->\n## ztraded review of 0123456789ab\n"),
        "{review}"
    );
    assert!(review.contains("### ztraded plan"), "{review}");
    for name in ["golden-cross", "golden-fresh"] {
        assert!(
            review.contains(&format!("### Backtest: `{name}`")),
            "{review}"
        );
    }
    assert!(!review.contains("did not run"), "{review}");
    assert!(
        review.contains("| metric | baseline | this change | difference |"),
        "{review}"
    );
    assert_eq!(std::fs::read_to_string(&summary).unwrap(), review);
    assert!(
        r.change
            .join("out/golden-cross/baseline/trades.csv")
            .exists()
    );
}
