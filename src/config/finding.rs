//! Findings: what validation reports, where, and how it is printed.

use serde::Serialize;
use std::fmt::Write as _;

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The config is invalid: `validate` exits 1 and the daemon refuses the revision.
    Error,
    /// Legal but suspicious; an error under `--strict`.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem in one file, at one place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The file, as given on the command line or relative to the config directory.
    pub file: String,
    /// Line, from 1; 0 when the finding is not about a place in a file (an environment
    /// variable).
    pub line: u32,
    /// Column, from 1, in characters; 0 with line 0.
    pub column: u32,
    /// Error or warning.
    pub severity: Severity,
    /// Stable code, one of [`CODES`].
    pub code: &'static str,
    /// JSON pointer of the offending value inside the document (`""` for the whole file).
    pub path: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl Finding {
    /// Sort key: file, line, column, then code.
    pub fn sort_key(&self) -> (&str, u32, u32, &str, &str) {
        (&self.file, self.line, self.column, self.code, &self.message)
    }

    /// Whether the finding is about a place in a file (it has a line); a finding about an
    /// environment variable (`env ZTRADED_HTTP__LISTEN`) or a directory as a whole as the
    /// reconciler sees it has line 0.
    pub fn is_located(&self) -> bool {
        self.line > 0
    }

    /// `file:line:col: error[code]: message`, or `where: error[code]: message` for a finding
    /// without a line (`env ZTRADED_HTTP__LISTEN: error[invalid-setting]: http.listen: …`).
    pub fn human(&self) -> String {
        if !self.is_located() {
            return format!(
                "{}: {}[{}]: {}",
                self.file,
                self.severity.as_str(),
                self.code,
                self.message
            );
        }
        format!(
            "{}:{}:{}: {}[{}]: {}",
            self.file,
            self.line,
            self.column,
            self.severity.as_str(),
            self.code,
            self.message
        )
    }

    /// A GitHub Actions workflow command that annotates the line in a pull request (for a
    /// finding without a line, a workflow-level annotation naming where it is).
    pub fn github(&self) -> String {
        if !self.is_located() {
            return format!(
                "::{} title={}::{}",
                self.severity.as_str(),
                escape_property(self.code),
                escape_data(&format!("{}: {}", self.file, self.message))
            );
        }
        format!(
            "::{} file={},line={},col={},title={}::{}",
            self.severity.as_str(),
            escape_property(&self.file),
            self.line,
            self.column,
            escape_property(self.code),
            escape_data(&self.message)
        )
    }
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Every finding code with its meaning. Codes are stable: CI scripts may match on them.
pub const CODES: &[(&str, &str)] = &[
    ("io", "the file or directory cannot be read"),
    ("file-too-large", "the file is larger than 1 MiB"),
    (
        "invalid-utf8",
        "the file is not UTF-8 (the message gives the byte offset)",
    ),
    ("broken-symlink", "a symbolic link points at nothing"),
    (
        "symlink-loop",
        "a symbolic link leads back into a directory already being read",
    ),
    (
        "invalid-name",
        "a file name breaks the naming rule ^[a-z0-9][a-z0-9-]{0,62}$",
    ),
    ("duplicate-name", "two files define the same resource name"),
    ("yaml-syntax", "the file is not valid YAML"),
    ("toml-syntax", "ztraded.toml is not valid TOML"),
    (
        "empty-document",
        "the file has no content, or only comments",
    ),
    (
        "multiple-documents",
        "the file holds more than one YAML document",
    ),
    ("not-a-mapping", "the document is not a mapping"),
    ("duplicate-key", "a key appears twice in one mapping"),
    ("non-string-key", "a mapping key is not a scalar"),
    ("yaml-tag", "an unsupported YAML tag"),
    (
        "yaml-merge",
        "a merge key `<<` whose value is not a mapping",
    ),
    (
        "too-many-nodes",
        "the document expands to more than 100,000 values (alias bomb)",
    ),
    (
        "too-deep",
        "mappings and sequences (or TOML tables and arrays, or an expression's brackets and operators) nest more than 256 levels",
    ),
    (
        "invalid-number",
        "infinity, not-a-number or an out-of-range number",
    ),
    ("unknown-field", "a key the resource does not have"),
    ("missing-field", "a required key is missing"),
    ("wrong-type", "a value of the wrong type"),
    (
        "invalid-value",
        "a value that is not one of the allowed ones or does not match its pattern",
    ),
    (
        "out-of-range",
        "a number or a length outside its bounds (percentages are 0-100)",
    ),
    (
        "duplicate-item",
        "a list that must hold distinct items repeats one",
    ),
    (
        "invalid-duration",
        "a duration that is not like 30s, 5m, 1h",
    ),
    (
        "symbols-source",
        "a pipeline needs exactly one of `scanner` and `symbols`; a scanner exactly one of `tickers` and `universe`",
    ),
    (
        "trigger-kind",
        "a trigger sets none or several of bar_close, schedule, signal, continuous, once",
    ),
    (
        "schedule-kind",
        "a schedule sets none or several of cron, interval, market_open",
    ),
    (
        "unknown-scanner",
        "a reference to a scanner that does not exist",
    ),
    (
        "unknown-risk-policy",
        "a reference to a risk policy that does not exist",
    ),
    (
        "unknown-broker",
        "a reference to a broker not defined in ztraded.toml",
    ),
    (
        "unknown-llm-provider",
        "a reference to an LLM provider not defined in ztraded.toml",
    ),
    (
        "prompt-file",
        "an LLM node's prompt_file is outside the config directory, unreadable, too large or without {{market}}",
    ),
    (
        "missing-risk-policy",
        "a pipeline with a risk_manager node names no risk policy",
    ),
    ("missing-broker", "a live or paper pipeline names no broker"),
    (
        "broker-mode",
        "the broker does not fit the mode (a simulated broker cannot be live or paper; a paper account cannot be live)",
    ),
    ("duplicate-node-id", "two nodes share an id"),
    ("unknown-need", "`needs` names a node that does not exist"),
    ("dag-cycle", "the nodes' `needs` form a cycle"),
    (
        "missing-market-data",
        "a strategy, gate or bias has no upstream market_data node",
    ),
    (
        "timeframe-not-provided",
        "no upstream market_data node provides the timeframe a node or trigger reads",
    ),
    (
        "indicator-not-provided",
        "an expression reads an indicator no upstream market_data node computes",
    ),
    (
        "invalid-indicator",
        "an indicator name that is not sma_N, ema_N, rsi_N, atr_N, macd_F_S_G, bbands_N_K, supertrend_N_K, volume_sma_N or vwap",
    ),
    (
        "missing-risk-manager",
        "a trade_manager node without an upstream risk_manager",
    ),
    (
        "no-entry-rule",
        "a rules strategy with neither long_entry nor short_entry",
    ),
    (
        "missing-stop-loss",
        "an entry rule without a stop-loss level while the risk policy requires one",
    ),
    ("cel-syntax", "an expression that does not parse"),
    (
        "unknown-identifier",
        "an expression reads a name that is not defined",
    ),
    (
        "unknown-function",
        "an expression calls a function that does not exist",
    ),
    (
        "unsupported-expression",
        "an expression uses CEL that rules cannot evaluate (strings, lists, maps, …)",
    ),
    ("invalid-cron", "a cron expression that does not parse"),
    (
        "unknown-timezone",
        "a time zone that is not in the IANA database",
    ),
    (
        "invalid-clock-time",
        "a time of day that is not HH:MM or HH:MM:SS on a 24-hour clock",
    ),
    (
        "literal-secret",
        "a secret written as a value instead of naming an environment variable",
    ),
    (
        "invalid-setting",
        "a setting with an invalid value (address, URL, date)",
    ),
    ("unused-scanner", "warning: no pipeline uses the scanner"),
    (
        "unused-risk-policy",
        "warning: no pipeline uses the risk policy",
    ),
    (
        "stop-wider-than-daily-loss",
        "warning: one stopped-out trade can lose more than the daily loss limit",
    ),
    (
        "disabled-dangling-reference",
        "warning: a disabled pipeline refers to something that does not exist",
    ),
    (
        "suspicious-config",
        "warning: legal but probably not what was meant",
    ),
    (
        "llm-budget-exceeded",
        "warning: the estimated LLM cost of a pipeline exceeds its daily or monthly budget (see ztraded estimate)",
    ),
    (
        "no-pipelines-dir",
        "daemon and plan: the revision has no pipelines/ directory while pipelines run; refused",
    ),
    (
        "too-many-removals",
        "daemon and plan: the revision removes every running pipeline, or more than reconcile.max_removal_pct of them; refused",
    ),
];

/// Whether `code` is one of [`CODES`].
pub fn is_known_code(code: &str) -> bool {
    CODES.iter().any(|(c, _)| *c == code)
}

/// Counts of a set of findings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Files read.
    pub files: usize,
    /// Errors.
    pub errors: usize,
    /// Warnings.
    pub warnings: usize,
}

impl Summary {
    /// Counts `findings`.
    pub fn of(files: usize, findings: &[Finding]) -> Summary {
        Summary {
            files,
            errors: findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count(),
            warnings: findings
                .iter()
                .filter(|f| f.severity == Severity::Warning)
                .count(),
        }
    }

    /// `N files, E errors, W warnings` (singular where it is one).
    pub fn line(&self) -> String {
        let plural = |n: usize, word: &str| {
            if n == 1 {
                format!("{n} {word}")
            } else {
                format!("{n} {word}s")
            }
        };
        let mut s = String::new();
        let _ = write!(
            s,
            "{}, {}, {}",
            plural(self.files, "file"),
            plural(self.errors, "error"),
            plural(self.warnings, "warning")
        );
        s
    }
}

/// Sorts findings by file, line and column, and drops exact duplicates. Every finding of a
/// load passes here: in debug builds (the tests), a code missing from [`CODES`] panics.
pub fn sort(findings: &mut Vec<Finding>) {
    debug_assert!(
        findings.iter().all(|f| is_known_code(f.code)),
        "finding codes missing from CODES: {:?}",
        findings
            .iter()
            .filter(|f| !is_known_code(f.code))
            .map(|f| f.code)
            .collect::<Vec<_>>()
    );
    findings.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    findings.dedup();
}

/// `/nodes/2/config/stop_loss` → `nodes[2].config.stop_loss`.
pub fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{token}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&token);
        }
    }
    out
}

/// Collects findings for one document, turning JSON pointers into positions.
pub struct Reporter<'a> {
    /// The file name findings carry.
    pub file: &'a str,
    /// The document findings point into.
    pub doc: &'a super::yaml::Document,
    /// Where findings go.
    pub out: &'a mut Vec<Finding>,
}

impl Reporter<'_> {
    fn push(
        &mut self,
        severity: Severity,
        code: &'static str,
        pointer: &str,
        pos: super::yaml::Pos,
        message: String,
    ) {
        let message = if pointer.is_empty() {
            message
        } else {
            format!("{}: {message}", dotted(pointer))
        };
        self.out.push(Finding {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.col,
            severity,
            code,
            path: pointer.to_string(),
            message,
        });
    }

    /// An error at the value at `pointer`.
    pub fn error(&mut self, code: &'static str, pointer: &str, message: impl Into<String>) {
        let pos = self.doc.locate(pointer);
        self.push(Severity::Error, code, pointer, pos, message.into());
    }

    /// An error at the key of the value at `pointer`.
    pub fn error_at_key(&mut self, code: &'static str, pointer: &str, message: impl Into<String>) {
        let pos = self.doc.locate_key(pointer);
        self.push(Severity::Error, code, pointer, pos, message.into());
    }

    /// An error at character `offset` inside the string at `pointer`.
    pub fn error_in_scalar(
        &mut self,
        code: &'static str,
        pointer: &str,
        offset: usize,
        message: impl Into<String>,
    ) {
        let pos = self.doc.locate_in_scalar(pointer, offset);
        self.push(Severity::Error, code, pointer, pos, message.into());
    }

    /// A warning at the value at `pointer`.
    pub fn warning(&mut self, code: &'static str, pointer: &str, message: impl Into<String>) {
        let pos = self.doc.locate(pointer);
        self.push(Severity::Warning, code, pointer, pos, message.into());
    }

    /// A finding of the given severity at the value at `pointer`.
    pub fn report(
        &mut self,
        severity: Severity,
        code: &'static str,
        pointer: &str,
        message: impl Into<String>,
    ) {
        let pos = self.doc.locate(pointer);
        self.push(severity, code, pointer, pos, message.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> Finding {
        Finding {
            file: "pipelines/a,b.yaml".into(),
            line: 3,
            column: 7,
            severity: Severity::Error,
            code: "unknown-identifier",
            path: "/nodes/2/config/stop_loss".into(),
            message: "unknown identifier 'atr_41'\nsecond line 100%".into(),
        }
    }

    #[test]
    fn formats() {
        assert_eq!(
            f().human(),
            "pipelines/a,b.yaml:3:7: error[unknown-identifier]: unknown identifier 'atr_41'\nsecond line 100%"
        );
        assert_eq!(
            f().github(),
            "::error file=pipelines/a%2Cb.yaml,line=3,col=7,title=unknown-identifier::unknown identifier 'atr_41'%0Asecond line 100%25"
        );
    }

    #[test]
    fn codes_are_unique_and_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for (code, _) in CODES {
            assert!(seen.insert(code), "{code} twice");
            assert!(
                code.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'-' || b.is_ascii_digit())
            );
        }
    }

    #[test]
    fn summary_line() {
        let s = Summary {
            files: 1,
            errors: 0,
            warnings: 2,
        };
        assert_eq!(s.line(), "1 file, 0 errors, 2 warnings");
    }
}
