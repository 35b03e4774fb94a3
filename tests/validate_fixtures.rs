//! `ztraded validate` on invalid configs: every fixture under `tests/fixtures/invalid/` yields
//! the finding it is about, with its code, file, line and (where it means something) column,
//! and no error besides the expected ones. Fixtures about a warning also allow no other
//! warning. `tests/fixtures/README.md` lists every fixture with its expected finding.
//!
//! Cases that are awkward to commit (invalid UTF-8, a 10 MB file, symbolic links) are built in
//! a temporary directory from the valid config in `tests/fixtures/base/`.
//!
//! Most tests call the library (`load_dir_with_env` with no `ZTRADED_*` variables, so that the
//! environment of the test run cannot change the outcome); the tests at the end run the
//! binary for exit codes and output formats.

use std::path::{Path, PathBuf};
use std::process::Command;
use ztraded::config::ResourceKind;
use ztraded::config::finding::{Finding, Severity};
use ztraded::config::load::{self, ConfigSet};

// ------------------------------------------------------------------------------------ helpers

/// The pipeline file most fixtures consist of.
const P: &str = "pipelines/trend.yaml";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn invalid(case: &str) -> PathBuf {
    fixtures().join("invalid").join(case)
}

/// One expected finding. `column: None` where the column is the parser's choice rather than
/// something a reader would point at (TOML and YAML syntax errors).
#[derive(Clone, Copy, Debug)]
struct Want {
    file: &'static str,
    line: u32,
    column: Option<u32>,
    severity: Severity,
    code: &'static str,
}

const fn error(file: &'static str, line: u32, column: u32, code: &'static str) -> Want {
    Want {
        file,
        line,
        column: Some(column),
        severity: Severity::Error,
        code,
    }
}

const fn error_on_line(file: &'static str, line: u32, code: &'static str) -> Want {
    Want {
        file,
        line,
        column: None,
        severity: Severity::Error,
        code,
    }
}

const fn warning(file: &'static str, line: u32, column: u32, code: &'static str) -> Want {
    Want {
        file,
        line,
        column: Some(column),
        severity: Severity::Warning,
        code,
    }
}

impl Want {
    fn matches(&self, f: &Finding) -> bool {
        f.file == self.file
            && f.line == self.line
            && self.column.is_none_or(|c| c == f.column)
            && f.severity == self.severity
            && f.code == self.code
    }
}

/// Loads a config directory with no `ZTRADED_*` variables, and makes the findings' file
/// names relative to it.
fn load(dir: &Path) -> (ConfigSet, Vec<Finding>) {
    let set = load::load_dir_with_env(dir, &Vec::new());
    let prefix = format!("{}/", dir.display());
    let findings = set
        .findings
        .iter()
        .cloned()
        .map(|mut f| {
            if let Some(rest) = f.file.strip_prefix(&prefix) {
                f.file = rest.to_string();
            }
            f
        })
        .collect();
    (set, findings)
}

fn dump(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "  (no findings)".into();
    }
    findings
        .iter()
        .map(|f| format!("  {}", f.human()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that every wanted finding is there, and that nothing else is an error (nor, when
/// one of the wanted findings is a warning, a warning).
fn assert_findings(what: &str, findings: &[Finding], want: &[Want]) {
    let mut used = vec![false; findings.len()];
    for w in want {
        let hit = findings
            .iter()
            .enumerate()
            .find(|(i, f)| !used[*i] && w.matches(f));
        match hit {
            Some((i, _)) => used[i] = true,
            None => panic!(
                "{what}: expected {} {} at {}:{}{}, found:\n{}",
                w.severity.as_str(),
                w.code,
                w.file,
                w.line,
                w.column.map(|c| format!(":{c}")).unwrap_or_default(),
                dump(findings)
            ),
        }
    }
    let about_warnings = want.iter().any(|w| w.severity == Severity::Warning);
    let unexpected: Vec<Finding> = findings
        .iter()
        .zip(&used)
        .filter(|(f, used)| !**used && (f.severity == Severity::Error || about_warnings))
        .map(|(f, _)| f.clone())
        .collect();
    assert!(
        unexpected.is_empty(),
        "{what}: unexpected findings:\n{}\nall findings:\n{}",
        dump(&unexpected),
        dump(findings)
    );
}

/// Validates `tests/fixtures/invalid/<case>` and checks its findings against `want`. Returns
/// the findings, file names relative to the fixture directory.
fn check(case: &str, want: &[Want]) -> Vec<Finding> {
    let dir = invalid(case);
    assert!(dir.is_dir(), "no fixture {}", dir.display());
    let (set, findings) = load(&dir);
    assert!(!set.is_valid(true), "{case}: the fixture validates clean");
    assert_findings(case, &findings, want);
    findings
}

fn message<'a>(findings: &'a [Finding], code: &str) -> &'a str {
    findings
        .iter()
        .find(|f| f.code == code)
        .map(|f| f.message.as_str())
        .unwrap_or_else(|| panic!("no {code} finding in:\n{}", dump(findings)))
}

/// Copies a directory tree (files and directories only).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A temporary copy of the valid `tests/fixtures/base/` config directory.
fn base_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("base"), tmp.path());
    tmp
}

// ------------------------------------------------------------------------------ valid configs

#[test]
fn base_config_is_valid() {
    let (set, findings) = load(&fixtures().join("base"));
    assert!(findings.is_empty(), "{}", dump(&findings));
    assert_eq!(set.files, 4);
    assert_eq!(set.pipelines.len(), 1);
    assert!(set.pipelines["trend"].spec.is_some());
}

#[test]
fn anchors_aliases_and_merge_keys_validate() {
    let (set, findings) = load(&fixtures().join("valid/anchors-and-merge-keys"));
    assert!(findings.is_empty(), "{}", dump(&findings));
    let trend = &set.pipelines["trend"].doc.value;
    assert_eq!(
        trend["symbols"],
        serde_json::json!(["AAPL", "MSFT", "GOOG"])
    );
    // `*tf` expands to the anchored scalar; `<<: &levels {...}` merges its keys.
    assert_eq!(
        trend["nodes"][0]["config"]["timeframes"],
        serde_json::json!(["1d"])
    );
    assert_eq!(trend["nodes"][1]["config"]["timeframe"], "1d");
    assert_eq!(
        trend["nodes"][1]["config"]["stop_loss"],
        "close - 2 * atr_14"
    );
    assert!(trend["nodes"][1]["config"].get("<<").is_none());
    let short = &set.pipelines["trend-short"].doc.value;
    assert_eq!(short["nodes"][1]["config"]["kind"], "rules");
    assert_eq!(
        short["nodes"][1]["config"]["stop_loss"],
        "close - 3 * atr_14"
    );
}

#[test]
fn every_invalid_fixture_is_rejected_and_listed_in_the_readme() {
    let readme = std::fs::read_to_string(fixtures().join("README.md")).unwrap();
    let mut cases = 0;
    for entry in std::fs::read_dir(fixtures().join("invalid")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let (set, findings) = load(&entry.path());
        assert!(!findings.is_empty(), "{name}: no findings");
        assert!(!set.is_valid(true), "{name}: valid under --strict");
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is missing from tests/fixtures/README.md"
        );
        cases += 1;
    }
    assert!(cases >= 45, "only {cases} fixtures");
}

// --------------------------------------------------------------------------------- file names

#[test]
fn file_name_with_upper_case_letters() {
    let f = check(
        "invalid-name-uppercase",
        &[error("pipelines/GoldenCross.yaml", 1, 1, "invalid-name")],
    );
    assert!(message(&f, "invalid-name").contains("'GoldenCross'"));
}

#[test]
fn file_name_with_a_space() {
    check(
        "invalid-name-space",
        &[error("pipelines/golden cross.yaml", 1, 1, "invalid-name")],
    );
}

#[test]
fn same_name_as_yaml_and_yml() {
    let f = check(
        "duplicate-name",
        &[error("pipelines/trend.yml", 1, 1, "duplicate-name")],
    );
    assert!(message(&f, "duplicate-name").contains("pipelines/trend.yaml"));
}

// --------------------------------------------------------------------------------- references

#[test]
fn unknown_scanner() {
    // The scanner that exists is then unused: a warning, allowed here.
    let f = check("unknown-scanner", &[error(P, 3, 10, "unknown-scanner")]);
    assert!(message(&f, "unknown-scanner").contains("did you mean 'tech-megacaps'?"));
}

#[test]
fn unknown_risk_policy() {
    check(
        "unknown-risk-policy",
        &[error(P, 4, 7, "unknown-risk-policy")],
    );
}

#[test]
fn unknown_broker() {
    let f = check("unknown-broker", &[error(P, 3, 9, "unknown-broker")]);
    assert!(message(&f, "unknown-broker").contains("did you mean 'sim'?"));
}

#[test]
fn unknown_llm_provider() {
    check(
        "unknown-llm-provider",
        &[error(P, 12, 36, "unknown-llm-provider")],
    );
}

#[test]
fn stock_picker_with_an_unknown_scanner() {
    check(
        "stock-picker-unknown-scanner",
        &[error("pipelines/picker.yaml", 9, 16, "unknown-scanner")],
    );
}

// ------------------------------------------------------------------------- exactly-one rules

#[test]
fn both_scanner_and_symbols() {
    check("symbols-source-both", &[error(P, 4, 10, "symbols-source")]);
}

#[test]
fn neither_scanner_nor_symbols() {
    check(
        "symbols-source-neither",
        &[error(P, 1, 1, "symbols-source")],
    );
}

#[test]
fn no_trigger_kind() {
    check("trigger-kind-none", &[error(P, 4, 10, "trigger-kind")]);
}

#[test]
fn two_trigger_kinds() {
    let f = check("trigger-kind-two", &[error(P, 5, 3, "trigger-kind")]);
    assert!(message(&f, "trigger-kind").contains("bar_close and schedule"));
}

#[test]
fn schedule_with_cron_and_interval() {
    check("schedule-kind-two", &[error(P, 6, 5, "schedule-kind")]);
}

// ------------------------------------------------------------------------------------ the DAG

#[test]
fn duplicate_node_id() {
    check("duplicate-node-id", &[error(P, 10, 9, "duplicate-node-id")]);
}

#[test]

fn needs_names_a_missing_node() {
    let f = check("unknown-need", &[error(P, 12, 13, "unknown-need")]);
    assert!(message(&f, "unknown-need").contains("did you mean 'data'?"));
}

#[test]
fn needs_cycle() {
    let f = check("dag-cycle", &[error(P, 9, 12, "dag-cycle")]);
    assert!(message(&f, "dag-cycle").contains("data → strategy → data"));
}

#[test]
fn node_needs_itself() {
    check("dag-self-need", &[error(P, 12, 19, "dag-cycle")]);
}

#[test]
fn strategy_without_upstream_market_data() {
    check(
        "missing-market-data",
        &[error(P, 11, 12, "missing-market-data")],
    );
}

#[test]
fn strategy_timeframe_not_provided() {
    check(
        "timeframe-not-provided",
        &[error(P, 14, 18, "timeframe-not-provided")],
    );
}

#[test]
fn trade_manager_without_risk_manager() {
    check(
        "missing-risk-manager",
        &[error(P, 19, 12, "missing-risk-manager")],
    );
}

#[test]
fn risk_manager_without_risk_policy() {
    check(
        "missing-risk-policy",
        &[error(P, 18, 12, "missing-risk-policy")],
    );
}

#[test]

fn node_without_its_required_config() {
    check("node-missing-config", &[error(P, 7, 5, "missing-field")]);
}

// -------------------------------------------------------------------------------- expressions

#[test]
fn expression_reads_an_indicator_not_computed() {
    let f = check(
        "indicator-not-provided",
        &[error(P, 15, 34, "indicator-not-provided")],
    );
    assert!(message(&f, "indicator-not-provided").contains("'sma_20'"));
}

#[test]

fn cel_syntax_error_column_inside_the_expression() {
    // `      long_entry: "close > > sma_50"`: the second `>` is at column 28.
    check("cel-syntax", &[error(P, 15, 28, "cel-syntax")]);
}

#[test]
fn unknown_identifier() {
    let f = check(
        "unknown-identifier",
        &[error(P, 15, 28, "unknown-identifier")],
    );
    assert!(message(&f, "unknown-identifier").contains("did you mean 'sma_50'?"));
}

#[test]
fn unknown_function() {
    check("unknown-function", &[error(P, 15, 54, "unknown-function")]);
}

#[test]
fn string_literal_in_a_rule() {
    check(
        "unsupported-expression",
        &[error(P, 15, 28, "unsupported-expression")],
    );
}

#[test]
fn condition_that_is_a_number() {
    check("wrong-type-condition", &[error(P, 15, 20, "wrong-type")]);
}

#[test]
fn level_that_is_a_condition() {
    check("wrong-type-level", &[error(P, 16, 19, "wrong-type")]);
}

#[test]
fn expression_in_a_plain_scalar() {
    check(
        "expr-plain-scalar",
        &[error(P, 15, 37, "indicator-not-provided")],
    );
}

#[test]
fn expression_in_a_flow_mapping() {
    check(
        "expr-in-flow-mapping",
        &[error(P, 12, 46, "indicator-not-provided")],
    );
}

#[test]
fn expression_in_a_literal_block_scalar() {
    check(
        "expr-literal-block",
        &[error(P, 17, 14, "indicator-not-provided")],
    );
}

#[test]

fn expression_in_a_folded_block_scalar() {
    check(
        "expr-folded-block",
        &[error(P, 17, 12, "indicator-not-provided")],
    );
}

#[test]
fn scanner_filter_reads_an_unknown_name() {
    check(
        "scanner-filter-unknown-identifier",
        &[error("scanners/liquid.yaml", 6, 33, "unknown-identifier")],
    );
}

// --------------------------------------------------------------------- schedules and windows

#[test]
fn cron_with_five_fields() {
    let f = check(
        "invalid-cron-five-fields",
        &[error(P, 6, 11, "invalid-cron")],
    );
    assert!(message(&f, "invalid-cron").contains("5 fields"));
}

#[test]
fn cron_that_is_garbage() {
    check("invalid-cron-garbage", &[error(P, 6, 11, "invalid-cron")]);
}

#[test]
fn unknown_time_zone() {
    check("unknown-timezone", &[error(P, 7, 15, "unknown-timezone")]);
}

#[test]
fn window_starting_at_25_00() {
    check(
        "invalid-clock-time",
        &[error(P, 7, 10, "invalid-clock-time")],
    );
}

#[test]
fn misspelled_weekday() {
    let f = check("invalid-weekday", &[error(P, 10, 30, "invalid-value")]);
    assert!(message(&f, "invalid-value").contains("did you mean 'fri'?"));
}

#[test]

fn interval_that_is_not_a_duration() {
    check("invalid-duration", &[error(P, 6, 15, "invalid-duration")]);
}

// ------------------------------------------------------------------------------------ numbers

#[test]
fn percentage_of_150() {
    let f = check("percent-out-of-range", &[error(P, 8, 21, "out-of-range")]);
    assert!(message(&f, "out-of-range").contains("percentages are 0-100"));
}

#[test]
fn percentage_of_150_in_a_risk_policy() {
    check(
        "risk-percent-out-of-range",
        &[error("risk/default.yaml", 4, 21, "out-of-range")],
    );
}

#[test]
fn negative_money() {
    check("negative-money", &[error(P, 7, 19, "out-of-range")]);
}

#[test]

fn infinite_number() {
    check("invalid-number", &[error(P, 7, 19, "invalid-number")]);
}

// -------------------------------------------------------------------------- brokers and modes

#[test]
fn live_mode_on_the_simulated_broker() {
    check(
        "broker-mode-live-simulated",
        &[error(P, 3, 9, "broker-mode")],
    );
}

#[test]
fn live_mode_on_a_paper_account() {
    let f = check("broker-mode-live-paper", &[error(P, 3, 9, "broker-mode")]);
    assert!(message(&f, "broker-mode").contains("paper account"));
}

#[test]
fn live_mode_without_a_broker() {
    check("missing-broker", &[error(P, 2, 7, "missing-broker")]);
}

// ------------------------------------------------------------------------------- ztraded.toml

#[test]
fn api_key_written_in_the_settings() {
    // Reported once, at the key; the table then also lacks `api_key_env`.
    check(
        "literal-secret-api-key",
        &[
            error("ztraded.toml", 5, 1, "literal-secret"),
            error("ztraded.toml", 2, 1, "missing-field"),
        ],
    );
}

#[test]
fn env_setting_holding_a_value() {
    check(
        "literal-secret-env-value",
        &[error("ztraded.toml", 5, 18, "literal-secret")],
    );
}

#[test]
fn postgres_url_with_a_password() {
    check(
        "literal-secret-postgres-url",
        &[error("ztraded.toml", 2, 7, "literal-secret")],
    );
}

#[test]
fn settings_toml_syntax_error() {
    check(
        "toml-syntax",
        &[error_on_line("ztraded.toml", 2, "toml-syntax")],
    );
}

#[test]
fn unknown_key_in_the_settings() {
    check(
        "settings-unknown-field",
        &[error("ztraded.toml", 3, 1, "unknown-field")],
    );
}

#[test]
fn listen_address_without_a_port() {
    check(
        "invalid-setting",
        &[error("ztraded.toml", 2, 10, "invalid-setting")],
    );
}

// ------------------------------------------------------------------------------------- schema

#[test]
fn misspelled_key_at_the_key() {
    let f = check("unknown-field", &[error(P, 6, 1, "unknown-field")]);
    assert!(message(&f, "unknown-field").contains("did you mean 'on_remove'?"));
}

#[test]
fn misspelled_key_in_a_node_config() {
    let f = check("unknown-field-nested", &[error(P, 15, 7, "unknown-field")]);
    assert!(message(&f, "unknown-field").contains("did you mean 'stop_loss'?"));
}

#[test]
fn missing_required_field_at_the_mapping() {
    let f = check("missing-field", &[error(P, 7, 3, "missing-field")]);
    assert!(message(&f, "missing-field").contains("'end'"));
}

#[test]

fn symbols_that_are_not_a_list() {
    check("wrong-type", &[error(P, 3, 10, "wrong-type")]);
}

#[test]
fn integer_written_as_a_word() {
    check("wrong-type-scalar", &[error(P, 6, 18, "wrong-type")]);
}

#[test]
fn symbol_listed_twice() {
    check("duplicate-item", &[error(P, 3, 10, "duplicate-item")]);
}

#[test]
fn indicator_name_without_a_period() {
    check("invalid-indicator", &[error(P, 9, 71, "invalid-indicator")]);
}

#[test]
fn rules_strategy_without_an_entry() {
    check("no-entry-rule", &[error(P, 13, 7, "no-entry-rule")]);
}

#[test]
fn entry_without_a_stop_loss() {
    check(
        "missing-stop-loss",
        &[error(P, 16, 19, "missing-stop-loss")],
    );
}

// ----------------------------------------------------------------------------------- warnings

#[test]
fn unused_scanner_is_a_warning() {
    let f = check(
        "unused-scanner",
        &[warning("scanners/spare.yaml", 1, 1, "unused-scanner")],
    );
    assert!(!f.iter().any(|f| f.severity == Severity::Error));
}

#[test]
fn unused_risk_policy_is_a_warning() {
    check(
        "unused-risk-policy",
        &[warning("risk/spare.yaml", 1, 1, "unused-risk-policy")],
    );
}

#[test]
fn stop_wider_than_the_daily_loss_limit() {
    let f = check(
        "stop-wider-than-daily-loss",
        &[warning(P, 4, 7, "stop-wider-than-daily-loss")],
    );
    assert!(message(&f, "stop-wider-than-daily-loss").contains("2000 USD"));
}

#[test]
fn disabled_pipeline_with_a_dangling_reference() {
    check(
        "disabled-dangling-reference",
        &[warning(P, 4, 10, "disabled-dangling-reference")],
    );
}

#[test]
fn short_entries_under_a_policy_without_shorts() {
    check(
        "suspicious-short-not-allowed",
        &[warning(P, 18, 20, "suspicious-config")],
    );
}

// ----------------------------------------------------------------------------- every finding

#[test]
fn every_error_of_every_file_is_reported() {
    check(
        "many-errors",
        &[
            error("pipelines/other.yaml", 15, 27, "cel-syntax"),
            error(P, 4, 9, "unknown-broker"),
            error(P, 7, 11, "invalid-cron"),
            error(P, 8, 15, "unknown-timezone"),
            error(P, 11, 8, "invalid-clock-time"),
            error(P, 15, 71, "invalid-indicator"),
            error(P, 21, 28, "indicator-not-provided"),
            error(P, 22, 31, "indicator-not-provided"),
        ],
    );
}

// ------------------------------------------------------------------------------- YAML loading

#[test]
fn yaml_unclosed_flow_sequence() {
    // `symbols: [AAPL, MSFT` on line 3 runs on into `trigger:` on line 4, where the parser
    // finds a `:` it cannot place.
    check(
        "yaml-syntax-unclosed-flow",
        &[error_on_line(P, 4, "yaml-syntax")],
    );
}

#[test]
fn yaml_colon_inside_a_plain_scalar() {
    // `description: Buys dips: sells rips`: the second `: ` is at column 23.
    check(
        "yaml-syntax-colon-in-plain",
        &[error(P, 1, 23, "yaml-syntax")],
    );
}

#[test]
fn empty_file() {
    check("empty-file", &[error(P, 1, 1, "empty-document")]);
}

#[test]

fn file_with_only_comments() {
    check("comments-only", &[error(P, 1, 1, "empty-document")]);
}

#[test]
fn document_that_is_a_list() {
    check("not-a-mapping", &[error(P, 2, 1, "not-a-mapping")]);
}

#[test]
fn two_documents_in_one_file() {
    check(
        "multiple-documents",
        &[error(P, 17, 1, "multiple-documents")],
    );
}

#[test]
fn duplicate_key_at_the_second_key() {
    let f = check("duplicate-key", &[error(P, 6, 1, "duplicate-key")]);
    assert!(message(&f, "duplicate-key").contains("line 2"));
}

#[test]
fn custom_yaml_tag() {
    check("yaml-tag", &[error(P, 1, 14, "yaml-tag")]);
}

#[test]
fn key_that_is_a_list() {
    check("non-string-key", &[error(P, 6, 1, "non-string-key")]);
}

#[test]
fn merge_key_with_a_number() {
    check("yaml-merge-not-a-mapping", &[error(P, 9, 9, "yaml-merge")]);
}

#[test]
fn alias_bomb() {
    // Each level holds ten aliases of the one before; the limit of 100,000 values is crossed
    // at the eighth alias of level 4 (line 7, column 45).
    check("alias-bomb", &[error(P, 7, 45, "too-many-nodes")]);
}

#[test]
fn byte_order_mark_does_not_shift_lines_or_columns() {
    let text = std::fs::read(invalid("utf8-bom").join(P)).unwrap();
    assert!(
        text.starts_with(&[0xef, 0xbb, 0xbf]),
        "the fixture lost its byte-order mark"
    );
    check(
        "utf8-bom",
        &[
            error(P, 1, 1, "unknown-field"),
            error(P, 6, 1, "unknown-field"),
        ],
    );
}

#[test]
fn crlf_line_endings_keep_lines_and_columns() {
    let text = std::fs::read_to_string(invalid("crlf").join(P)).unwrap();
    assert_eq!(
        text.matches("\r\n").count(),
        text.matches('\n').count(),
        "the fixture lost its CRLF line endings"
    );
    check(
        "crlf",
        &[
            error(P, 6, 1, "unknown-field"),
            error(P, 16, 34, "indicator-not-provided"),
        ],
    );
}

#[test]
fn invalid_utf8_gives_the_byte_offset() {
    let tmp = base_copy();
    // "mode: simulation\n" is 17 bytes and "description: caf" 16 more: 0xE9 is at byte 33.
    std::fs::write(
        tmp.path().join("pipelines/latin1.yaml"),
        b"mode: simulation\ndescription: caf\xe9 au lait\n",
    )
    .unwrap();
    let (_, findings) = load(tmp.path());
    assert_findings(
        "invalid utf-8",
        &findings,
        &[error("pipelines/latin1.yaml", 2, 17, "invalid-utf8")],
    );
    assert!(
        message(&findings, "invalid-utf8").contains("byte offset 33"),
        "{}",
        dump(&findings)
    );
}

#[test]
fn ten_megabyte_file_is_refused() {
    let tmp = base_copy();
    let line = format!("# {}\n", "x".repeat(97));
    let mut text = String::from("description: big\n");
    while text.len() < 10 * 1024 * 1024 {
        text.push_str(&line);
    }
    std::fs::write(tmp.path().join("pipelines/huge.yaml"), &text).unwrap();
    let (_, findings) = load(tmp.path());
    assert_findings(
        "10 MB file",
        &findings,
        &[error("pipelines/huge.yaml", 1, 1, "file-too-large")],
    );
}

// ----------------------------------------------------------------------------- symbolic links

#[cfg(unix)]
mod symlinks {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn file_is_read_through_its_link() {
        let tmp = base_copy();
        let outside = tempfile::tempdir().unwrap();
        std::fs::rename(tmp.path().join(P), outside.path().join("trend.yaml")).unwrap();
        symlink(outside.path().join("trend.yaml"), tmp.path().join(P)).unwrap();
        let (set, findings) = load(tmp.path());
        assert!(findings.is_empty(), "{}", dump(&findings));
        assert!(set.pipelines["trend"].spec.is_some());
    }

    #[test]
    fn directory_is_read_through_its_link() {
        let tmp = base_copy();
        let outside = tempfile::tempdir().unwrap();
        std::fs::rename(tmp.path().join("risk"), outside.path().join("policies")).unwrap();
        symlink(outside.path().join("policies"), tmp.path().join("risk")).unwrap();
        let (set, findings) = load(tmp.path());
        assert!(findings.is_empty(), "{}", dump(&findings));
        assert!(set.risk["default"].spec.is_some());
    }

    #[test]
    fn error_in_a_linked_file_is_reported_at_the_link() {
        let tmp = base_copy();
        let outside = tempfile::tempdir().unwrap();
        copy_dir(
            &invalid("indicator-not-provided").join("pipelines"),
            outside.path(),
        );
        std::fs::remove_file(tmp.path().join(P)).unwrap();
        // The base's scanner and risk policy are now unused: warnings, allowed here.
        symlink(
            outside.path().join("trend.yaml"),
            tmp.path().join("pipelines/linked.yaml"),
        )
        .unwrap();
        let (_, findings) = load(tmp.path());
        assert_findings(
            "linked file",
            &findings,
            &[error(
                "pipelines/linked.yaml",
                15,
                34,
                "indicator-not-provided",
            )],
        );
    }

    #[test]
    fn dangling_link() {
        let tmp = base_copy();
        symlink(
            tmp.path().join("nowhere.yaml"),
            tmp.path().join("pipelines/gone.yaml"),
        )
        .unwrap();
        let (_, findings) = load(tmp.path());
        assert_findings(
            "dangling link",
            &findings,
            &[error("pipelines/gone.yaml", 1, 1, "broken-symlink")],
        );
    }

    #[test]
    fn directory_linking_to_itself() {
        let tmp = base_copy();
        symlink(".", tmp.path().join("pipelines/loop")).unwrap();
        let (set, findings) = load(tmp.path());
        assert_findings(
            "loop",
            &findings,
            &[error("pipelines/loop", 1, 1, "symlink-loop")],
        );
        assert_eq!(set.pipelines.len(), 1);
    }

    #[test]
    fn files_linking_to_each_other() {
        let tmp = base_copy();
        symlink("b.yaml", tmp.path().join("pipelines/a.yaml")).unwrap();
        symlink("a.yaml", tmp.path().join("pipelines/b.yaml")).unwrap();
        let (_, findings) = load(tmp.path());
        assert_findings(
            "file loop",
            &findings,
            &[
                error("pipelines/a.yaml", 1, 1, "symlink-loop"),
                error("pipelines/b.yaml", 1, 1, "symlink-loop"),
            ],
        );
    }

    #[test]

    fn directory_linking_to_the_config_root() {
        let tmp = base_copy();
        symlink("..", tmp.path().join("pipelines/loop")).unwrap();
        let (set, findings) = load(tmp.path());
        assert_findings(
            "loop to the root",
            &findings,
            &[error("pipelines/loop", 1, 1, "symlink-loop")],
        );
        assert_eq!(
            (set.pipelines.len(), set.scanners.len(), set.risk.len()),
            (1, 1, 1)
        );
    }
}

// ------------------------------------------------------------------------------- single files

#[test]
fn single_file_is_checked_in_its_directory() {
    let dir = invalid("unknown-scanner");
    let set = load::load_files(&[dir.join(P)], None).unwrap();
    // Only the file's own findings: the unused scanner next to it is not reported.
    assert_eq!(set.files, 1);
    let codes: Vec<&str> = set.findings.iter().map(|f| f.code).collect();
    assert_eq!(codes, ["unknown-scanner"], "{}", dump(&set.findings));
    assert_eq!((set.findings[0].line, set.findings[0].column), (3, 10));
    assert!(
        set.findings[0]
            .file
            .ends_with("unknown-scanner/pipelines/trend.yaml")
    );
}

#[test]
fn settings_file_alone() {
    let dir = invalid("literal-secret-postgres-url");
    let set = load::load_files(&[dir.join("ztraded.toml")], None).unwrap();
    let found: Vec<(&str, u32, u32)> = set
        .findings
        .iter()
        .map(|f| (f.code, f.line, f.column))
        .collect();
    assert_eq!(found, [("literal-secret", 2, 7)]);
}

#[test]
fn file_of_unknown_kind_needs_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("trend.yaml");
    std::fs::copy(invalid("unknown-field").join(P), &path).unwrap();
    assert!(load::load_files(std::slice::from_ref(&path), None).is_err());
    let set = load::load_files(&[path], Some(ResourceKind::Pipeline)).unwrap();
    let found: Vec<(&str, u32, u32)> = set
        .findings
        .iter()
        .map(|f| (f.code, f.line, f.column))
        .collect();
    assert_eq!(found, [("unknown-field", 6, 1)]);
}

#[test]

fn file_outside_a_config_directory_is_still_checked() {
    let tmp = tempfile::tempdir().unwrap();
    for (case, code, line, column) in [
        ("indicator-not-provided", "indicator-not-provided", 15, 34),
        ("dag-cycle", "dag-cycle", 9, 12),
        ("invalid-cron-garbage", "invalid-cron", 6, 11),
        ("trigger-kind-two", "trigger-kind", 5, 3),
    ] {
        let path = tmp.path().join(format!("{case}.yaml"));
        std::fs::copy(invalid(case).join(P), &path).unwrap();
        let set = load::load_files(&[path], Some(ResourceKind::Pipeline)).unwrap();
        let found: Vec<(&str, u32, u32)> = set
            .findings
            .iter()
            .map(|f| (f.code, f.line, f.column))
            .collect();
        assert_eq!(found, [(code, line, column)], "{case}");
    }
}

// ------------------------------------------------------------------------------------ binary

/// Runs `ztraded validate ARGS` in `dir`; returns exit code, stdout, stderr.
fn ztraded(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .arg("validate")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn binary_exits_0_on_a_valid_config() {
    let (code, out, _) = ztraded(&fixtures().join("base"), &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "4 files, 0 errors, 0 warnings\n");
}

#[test]
fn binary_exits_1_with_human_lines_and_a_summary() {
    let (code, out, _) = ztraded(&invalid("indicator-not-provided"), &["."]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("pipelines/trend.yaml:15:34: error[indicator-not-provided]: nodes[1].config.long_entry: "),
        "{out}"
    );
    assert_eq!(lines[1], "1 file, 1 error, 0 warnings");
}

#[test]
fn binary_counts_files_errors_and_warnings() {
    let (code, out, _) = ztraded(&invalid("unknown-scanner"), &[]);
    assert_eq!(code, 1);
    assert_eq!(
        out.lines().last(),
        Some("2 files, 1 error, 1 warning"),
        "{out}"
    );
    let (code, out, _) = ztraded(&invalid("many-errors"), &["."]);
    assert_eq!(code, 1);
    assert_eq!(
        out.lines().last(),
        Some("2 files, 8 errors, 0 warnings"),
        "{out}"
    );
}

#[test]
fn binary_exits_2_on_usage_and_io_errors() {
    let dir = invalid("unknown-field");
    let (code, _, err) = ztraded(&dir, &["no-such-dir"]);
    assert_eq!(code, 2);
    assert!(err.contains("no-such-dir"), "{err}");
    let (code, _, err) = ztraded(&dir, &["--kind", "pipeline", "."]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = ztraded(&fixtures(), &["README.md"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = ztraded(&dir, &["--format", "xml", "."]);
    assert_eq!(code, 2);
}

#[test]
fn binary_json_format() {
    let (code, out, _) = ztraded(&invalid("many-errors"), &[".", "--format", "json"]);
    assert_eq!(code, 1);
    let findings: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(findings.len(), 8, "{out}");
    for f in &findings {
        let keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        for key in [
            "file", "line", "column", "severity", "code", "path", "message",
        ] {
            assert!(keys.contains(&key), "{key} missing in {f}");
        }
    }
    let cron = findings
        .iter()
        .find(|f| f["code"] == "invalid-cron")
        .unwrap();
    assert_eq!(cron["file"], "pipelines/trend.yaml");
    assert_eq!(cron["line"], 7);
    assert_eq!(cron["column"], 11);
    assert_eq!(cron["severity"], "error");
    assert_eq!(cron["path"], "/trigger/schedule/cron");
    assert!(cron["message"].as_str().unwrap().contains("5 fields"));
}

#[test]
fn binary_json_is_an_empty_list_when_valid() {
    let (code, out, _) = ztraded(&fixtures().join("base"), &["--format", "json"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!([])
    );
}

#[test]
fn binary_github_format() {
    let (code, out, _) = ztraded(&invalid("unknown-identifier"), &["--format", "github"]);
    assert_eq!(code, 1);
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(
            "::error file=pipelines/trend.yaml,line=15,col=28,title=unknown-identifier::"
        ),
        "{out}"
    );
    let (_, out, _) = ztraded(&invalid("unused-scanner"), &["--format", "github"]);
    assert!(
        out.starts_with("::warning file=scanners/spare.yaml,line=1,col=1,"),
        "{out}"
    );
}

#[test]
fn binary_strict_turns_warnings_into_errors() {
    let dir = invalid("unused-scanner");
    let (code, out, _) = ztraded(&dir, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().last(), Some("2 files, 0 errors, 1 warning"));
    let (code, out, _) = ztraded(&dir, &["--strict"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("scanners/spare.yaml:1:1: error[unused-scanner]"),
        "{out}"
    );
}

#[test]
fn binary_validates_several_paths() {
    let (code, out, _) = ztraded(
        &fixtures(),
        &["base", "invalid/unknown-broker", "invalid/unused-scanner"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("invalid/unknown-broker/pipelines/trend.yaml:3:9: error[unknown-broker]"),
        "{out}"
    );
    assert_eq!(
        out.lines().last(),
        Some("7 files, 1 error, 1 warning"),
        "{out}"
    );
}

// ---------------------------------------------------------------------- every finding, once

#[test]
fn findings_that_used_to_hide_each_other_come_in_one_pass() {
    // An unknown field and a node without its config (so the pipeline does not deserialize
    // whole), a `needs` naming nothing, a CEL syntax error and an indicator not computed.
    let f = check(
        "every-finding-in-one-pass",
        &[
            error(P, 5, 1, "unknown-field"),
            error(P, 12, 5, "missing-field"),
            error(P, 14, 5, "unknown-field"),
            error(P, 17, 13, "unknown-need"),
            error(P, 21, 28, "cel-syntax"),
            error(P, 22, 31, "indicator-not-provided"),
        ],
    );
    assert!(message(&f, "indicator-not-provided").contains("'atr_14'"));
}

#[test]
fn a_node_that_does_not_load_still_has_its_expressions_checked() {
    let tmp = base_copy();
    let p = tmp.path().join(P);
    let text = std::fs::read_to_string(&p).unwrap();
    // `kind: rulez` makes the strategy node fail to deserialize.
    std::fs::write(
        &p,
        text.replace("kind: rules", "kind: rulez").replace(
            "crossed_above(sma_50, sma_200)",
            "crossed_above(sma_50,, sma_200)",
        ),
    )
    .unwrap();
    let (_, findings) = load(tmp.path());
    let codes: Vec<&str> = findings.iter().map(|f| f.code).collect();
    assert!(codes.contains(&"invalid-value"), "{}", dump(&findings));
    assert!(codes.contains(&"cel-syntax"), "{}", dump(&findings));
}

// ------------------------------------------------------------------------------- nesting depth

/// `description: x`, then `nodes:` followed by `dashes` nested `- ` on line 3: the root
/// mapping and `dashes` sequences, about 10 KB for 5,000.
fn deep_text(dashes: usize) -> String {
    format!("description: x\nnodes:\n{}x\n", "- ".repeat(dashes))
}

/// A base copy with `pipelines/deep.yaml` of [`deep_text`].
fn deep_copy(levels: usize) -> tempfile::TempDir {
    let tmp = base_copy();
    std::fs::write(tmp.path().join("pipelines/deep.yaml"), deep_text(levels)).unwrap();
    tmp
}

#[test]
fn deep_nesting_is_refused_with_its_line() {
    for levels in [5_000, 10_000] {
        let tmp = deep_copy(levels);
        let (code, out, err) = ztraded(tmp.path(), &[]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            out.contains("pipelines/deep.yaml:3:") && out.contains("error[too-deep]"),
            "{out}"
        );
        assert!(out.ends_with("5 files, 1 error, 0 warnings\n"), "{out}");
    }
}

#[test]
fn loading_deep_files_fits_a_two_megabyte_stack() {
    // The daemon loads on Tokio's blocking pool, whose threads have 2 MiB stacks: files at
    // the depth limit (every layer walks them), and far past it, load there. Two shapes:
    // sequences where a list of nodes is expected, and a node's config (deserialized into a
    // JSON value) nested in flow style.
    let limit = ztraded::config::MAX_DEPTH;
    let config = |brackets: usize| {
        format!(
            "description: x\nnodes:\n  - id: a\n    agent: market_data\n    config: {}1{}\n",
            "[".repeat(brackets),
            "]".repeat(brackets)
        )
    };
    let cases = [
        // The root mapping and 255 sequences: 256 levels.
        (deep_text(limit - 1), false),
        (deep_text(limit), true),
        (deep_text(5_000), true),
        // Root mapping, nodes, the node: three levels before the config's brackets.
        (config(limit - 3), false),
        (config(limit - 2), true),
    ];
    for (text, refused) in cases {
        let tmp = base_copy();
        std::fs::write(tmp.path().join("pipelines/deep.yaml"), &text).unwrap();
        let root = tmp.path().to_path_buf();
        let findings = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || load(&root).1)
            .unwrap()
            .join()
            .unwrap();
        let deep = findings.iter().any(|f| f.code == "too-deep");
        assert_eq!(deep, refused, "{:.80}…:\n{}", text, dump(&findings));
        assert!(
            findings.iter().all(|f| f.file == "pipelines/deep.yaml"),
            "{}",
            dump(&findings)
        );
    }
}

#[test]
fn aliases_count_with_the_depth_of_their_anchor() {
    // Each line nests the previous anchor one level deeper: 300 short lines, 300 levels.
    let tmp = base_copy();
    let mut text = String::from("description: x\na0: &a0 [x]\n");
    for i in 1..300 {
        text.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
    }
    std::fs::write(tmp.path().join("pipelines/alias.yaml"), text).unwrap();
    let (_, findings) = load(tmp.path());
    assert!(
        findings
            .iter()
            .any(|f| f.code == "too-deep" && f.file == "pipelines/alias.yaml"),
        "{}",
        dump(&findings)
    );
}

#[test]
fn deep_expressions_are_refused_at_their_line() {
    let tmp = base_copy();
    let p = tmp.path().join(P);
    let text = std::fs::read_to_string(&p).unwrap();
    let rule = format!("{}close{} > 1", "(".repeat(5_000), ")".repeat(5_000));
    std::fs::write(&p, text.replace("crossed_above(sma_50, sma_200)", &rule)).unwrap();
    let (code, out, _) = ztraded(tmp.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("pipelines/trend.yaml:16:"), "{out}");
    assert!(
        out.contains("error[too-deep]: nodes[1].config.long_entry"),
        "{out}"
    );
    assert!(!out.contains("cel-syntax"), "{out}");
}

#[test]
fn deep_toml_is_refused() {
    let tmp = base_copy();
    let settings = tmp.path().join("ztraded.toml");
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(
        &settings,
        format!(
            "{text}\n[reconcile]\nx = {}1{}\n",
            "[".repeat(500),
            "]".repeat(500)
        ),
    )
    .unwrap();
    let (code, out, _) = ztraded(tmp.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ztraded.toml:18:") && out.contains("error[too-deep]"),
        "{out}"
    );
}

// ------------------------------------------------------------------- settings from the env

#[test]
fn a_bad_environment_value_is_blamed_on_the_variable() {
    let tmp = base_copy();
    let out = Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .arg("validate")
        .current_dir(tmp.path())
        .env("ZTRADED_HTTP__LISTEN", "localhost:19469")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with(
            "env ZTRADED_HTTP__LISTEN: error[invalid-setting]: http.listen: 'localhost:19469' is not an address and port"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("ztraded.toml"), "{stdout}");
    // The same in a library load, and with a value that does not even merge.
    let env = vec![(
        "ZTRADED_STORE__MAX_CONNECTIONS".to_string(),
        "many".to_string(),
    )];
    let set = load::load_dir_with_env(tmp.path(), &env);
    assert_eq!(set.findings.len(), 1, "{}", dump(&set.findings));
    assert!(
        set.findings[0]
            .human()
            .starts_with("env ZTRADED_STORE__MAX_CONNECTIONS: error[invalid-setting]: "),
        "{}",
        dump(&set.findings)
    );
}

// --------------------------------------------------------------------------------- revisions

#[test]
fn the_revision_covers_files_that_do_not_load() {
    let tmp = base_copy();
    let (valid, _) = load(tmp.path());
    let mut seen = vec![valid.revision.clone()];
    for (name, bytes) in [
        ("broken.yaml", b"mode: [\n".to_vec()),
        ("latin1.yaml", b"description: caf\xe9\n".to_vec()),
        ("empty.yaml", Vec::new()),
        ("Upper.yaml", b"mode: simulation\n".to_vec()),
    ] {
        let path = tmp.path().join("pipelines").join(name);
        std::fs::write(&path, &bytes).unwrap();
        let (set, findings) = load(tmp.path());
        assert!(set.errors() > 0, "{name}: {}", dump(&findings));
        assert!(
            !seen.contains(&set.revision),
            "{name}: an invalid revision shares an earlier revision"
        );
        seen.push(set.revision.clone());
        std::fs::remove_file(&path).unwrap();
    }
    assert_eq!(load(tmp.path()).0.revision, valid.revision);
}

// ----------------------------------------------------------------------------- finding codes

/// The codes of the README's finding-code table, in order.
fn readme_codes() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("| code | meaning |")
        .expect("README.md has a finding-code table");
    readme[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let code = cells.first()?.trim_matches('`').to_string();
            Some((code, cells.get(1)?.to_string()))
        })
        .collect()
}

#[test]
fn the_readme_lists_every_finding_code() {
    use ztraded::config::finding::CODES;
    let listed = readme_codes();
    let codes: Vec<&str> = listed.iter().map(|(c, _)| c.as_str()).collect();
    let known: Vec<&str> = CODES.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        codes, known,
        "README.md's finding-code table and config::finding::CODES differ (same codes, same order)"
    );
    for ((code, meaning), (_, want)) in listed.iter().zip(CODES) {
        assert_eq!(
            meaning, want,
            "{code}: the README's meaning differs from CODES"
        );
    }
}

#[test]
fn every_code_in_the_source_is_a_known_code() {
    // Every kebab-case string literal of the validator's source is a finding code of
    // CODES, except these.
    const NOT_CODES: &[&str] = &["risk-policy", "tech-megacaps", "cel-parse"];
    use ztraded::config::finding::CODES;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![
        root.join("config"),
        root.join("expr"),
        root.join("reconcile"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.extend([root.join("cmd/validate.rs"), root.join("cmd/plan.rs")]);
    let mut unknown = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for literal in string_literals(&text) {
            let literal = literal.as_str();
            let kebab = literal.contains('-')
                && literal.starts_with(|c: char| c.is_ascii_lowercase())
                && !literal.ends_with('-')
                && literal
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if kebab && !NOT_CODES.contains(&literal) && !CODES.iter().any(|(c, _)| *c == literal) {
                unknown.push(format!("{}: {literal}", path.display()));
            }
        }
    }
    assert!(unknown.is_empty(), "codes missing from CODES: {unknown:#?}");
}

/// The contents of the string literals of Rust source `text` (comments and the char
/// literal `'"'` skipped; escapes kept as written).
fn string_literals(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '\'' if chars.get(i + 1) == Some(&'"') && chars.get(i + 2) == Some(&'\'') => i += 3,
            '"' => {
                let mut literal = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        literal.push(chars[i]);
                        i += 1;
                    }
                    if let Some(c) = chars.get(i) {
                        literal.push(*c);
                    }
                    i += 1;
                }
                out.push(literal);
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}
