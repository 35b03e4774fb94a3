//! `ztraded plan`: what reconciling a config directory would do, without doing it.
//!
//! Three formats: `human` (one line per change, for a terminal), `json` (for tools) and
//! `markdown` (a GitHub-flavoured table for a pull-request comment: each added, changed,
//! removed, disabled or enabled pipeline, the changed fields with their old and new
//! values, the open positions each change touches and what happens to them, the daemon's
//! refusals and the validation summary).
//!
//! Open positions come from the store that DIR's settings name (`[store] url`, SQLite
//! under `.ztraded/` by default), opened read-only: planning never creates a database or
//! runs a migration. Without a store (a fresh checkout in CI) the positions are reported
//! as unknown, not as none.

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::config::finding::{Finding, Severity, Summary};
use crate::config::load::load_dir;
use crate::config::pipeline::OnRemove;
use crate::reconcile::diff::{Change, ChangeKind, Snapshot, diff, settings_changed};
use crate::reconcile::guard;
use crate::store::{OpenPosition, ReconcileResult, Store};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Output formats of `plan`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per change, then its open positions.
    #[default]
    Human,
    /// `{base, revision, changes, field_values, files, positions, store, settings_changed,
    /// refused}`.
    Json,
    /// A GitHub-flavoured Markdown table, for a pull-request comment.
    Markdown,
}

/// One changed field of a pipeline file with its value before and after the change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// Dotted path of the field (`nodes[2].config.stop_loss`), as in [`Change::fields`].
    pub field: String,
    /// The value before: a string as written, anything else as compact JSON; `None` when
    /// the field was not set (or the path cannot be followed).
    pub before: Option<String>,
    /// The value after, in the same form; `None` when the field is no longer set.
    pub after: Option<String>,
}

/// The fields of `change` with their values in `old` and `new`: the field-level diff is
/// [`crate::reconcile::diff::diff`]'s; this only looks the values up.
pub fn field_changes(old: &Snapshot, new: &Snapshot, change: &Change) -> Vec<FieldChange> {
    let value = |s: &Snapshot| {
        s.pipelines
            .get(&change.pipeline)
            .and_then(|p| serde_json::from_str::<Value>(&p.value).ok())
    };
    let (before, after) = (value(old), value(new));
    change
        .fields
        .iter()
        .map(|field| FieldChange {
            field: field.clone(),
            before: before.as_ref().and_then(|v| lookup(v, field)).map(text),
            after: after.as_ref().and_then(|v| lookup(v, field)).map(text),
        })
        .collect()
}

/// The value at a dotted path (`nodes[2].config.stop_loss`) of a document. A key holding a
/// dot is found too: key segments are joined back while no key matches.
fn lookup<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    if dotted == "(whole file)" {
        return Some(v);
    }
    let mut tokens: Vec<Token> = Vec::new();
    for segment in dotted.split('.') {
        let (key, mut rest) = segment
            .find('[')
            .map_or((segment, ""), |i| segment.split_at(i));
        if !key.is_empty() {
            tokens.push(Token::Key(key));
        }
        while let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            tokens.push(Token::Index(after[..end].parse().ok()?));
            rest = &after[end + 1..];
        }
    }
    walk(v, &tokens)
}

/// A step of a dotted path.
enum Token<'a> {
    Key(&'a str),
    Index(usize),
}

fn walk<'a>(v: &'a Value, tokens: &[Token<'_>]) -> Option<&'a Value> {
    let Some((first, rest)) = tokens.split_first() else {
        return Some(v);
    };
    match (first, v) {
        (Token::Index(i), Value::Array(a)) => walk(a.get(*i)?, rest),
        (Token::Key(k), Value::Object(m)) => {
            if let Some(child) = m.get(*k) {
                return walk(child, rest);
            }
            // A key with dots in it: join the next key segments to this one.
            let mut key = (*k).to_string();
            for (n, t) in rest.iter().enumerate() {
                let Token::Key(next) = t else { return None };
                key.push('.');
                key.push_str(next);
                if let Some(child) = m.get(key.as_str()) {
                    return walk(child, &rest[n + 1..]);
                }
            }
            None
        }
        _ => None,
    }
}

/// A value as a reviewer reads it: strings as written, the rest as compact JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What the store says about open positions.
enum Positions {
    /// Read from the store (its URL, password redacted), by pipeline.
    Known(String, BTreeMap<String, Vec<OpenPosition>>),
    /// Not known, and why.
    Unknown(String),
}

impl Positions {
    fn of(&self, pipeline: &str) -> &[OpenPosition] {
        match self {
            Positions::Known(_, m) => m.get(pipeline).map(Vec::as_slice).unwrap_or_default(),
            Positions::Unknown(_) => &[],
        }
    }
}

/// Prints the diff between `base` (a directory, or else the revision the daemon last
/// applied, from the store) and `dir`, with the open positions each change touches, and
/// whether the daemon's removal guard would refuse it ([`guard::removals`]), in `format`.
/// Returns the exit code: 0, 1 when the daemon would refuse the revision (invalid, or
/// removing too many pipelines), 2 on usage or I/O errors.
pub async fn run(
    dir: &Path,
    base: Option<&Path>,
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let set = load_dir(dir);
    if set.errors() > 0 {
        for f in set
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
        {
            let _ = writeln!(err, "{}", f.human());
        }
        let _ = writeln!(
            err,
            "ztraded plan: {} is invalid ({} errors); the daemon would refuse it",
            dir.display(),
            set.errors()
        );
        if format == Format::Markdown {
            let _ = out.write_all(invalid_markdown(dir, &set.findings, set.files).as_bytes());
        }
        return EXIT_INVALID;
    }
    let new = Snapshot::of(&set);
    let store_url = set.settings.store.url.clone();
    let store = Store::open_read_only(&store_url, dir).await;
    let (old, source) = match base {
        Some(b) => {
            let base_set = load_dir(b);
            if base_set.errors() > 0 {
                let _ = writeln!(
                    err,
                    "ztraded plan: the base {} is invalid ({} errors)",
                    b.display(),
                    base_set.errors()
                );
                return EXIT_USAGE;
            }
            (Snapshot::of(&base_set), format!("{}", b.display()))
        }
        None => match &store {
            Ok(Some(s)) => match s.recent_reconciles(1000).await {
                Ok(records) => match records
                    .into_iter()
                    .find(|r| r.result == ReconcileResult::Applied)
                {
                    Some(r) => (
                        serde_json::from_value(r.diff.get("state").cloned().unwrap_or_default())
                            .unwrap_or_default(),
                        format!(
                            "the running revision {}",
                            &r.revision[..12.min(r.revision.len())]
                        ),
                    ),
                    None => (
                        Snapshot::default(),
                        "an empty daemon (nothing applied yet)".into(),
                    ),
                },
                Err(e) => {
                    let _ = writeln!(err, "ztraded plan: {e}");
                    return EXIT_USAGE;
                }
            },
            Ok(None) => (Snapshot::default(), "an empty daemon (no store yet)".into()),
            Err(e) => {
                let _ = writeln!(
                    err,
                    "ztraded plan: no --base and the store is unreachable: {e}"
                );
                return EXIT_USAGE;
            }
        },
    };
    let changes = diff(&old, &new);
    let refused = guard::removals(&old, &new, &changes, &set.settings.reconcile);
    let positions = match &store {
        Ok(Some(s)) => match s.open_positions().await {
            Ok(list) => Positions::Known(
                s.url().to_string(),
                list.into_iter().fold(BTreeMap::new(), |mut m, p| {
                    m.entry(p.pipeline.clone()).or_insert_with(Vec::new).push(p);
                    m
                }),
            ),
            Err(e) => Positions::Unknown(format!("the store {} did not answer: {e}", s.url())),
        },
        Ok(None) => Positions::Unknown(format!(
            "the store {store_url} of {} does not exist; set ZTRADED_STORE__URL to the daemon's store (it is only read) to list them",
            dir.display()
        )),
        Err(e) => Positions::Unknown(e.to_string()),
    };
    if let Ok(Some(s)) = &store {
        s.close().await;
    }
    let settings = settings_changed(&old, &new);
    let exit = if refused.is_empty() {
        EXIT_OK
    } else {
        EXIT_INVALID
    };
    let text = match format {
        Format::Json => json(
            &source, &set, &old, &new, &changes, &positions, settings, &refused,
        ),
        Format::Markdown => markdown(&Plan {
            dir,
            source_md: if base.is_some() {
                md_code(&source)
            } else {
                md_text(&source)
            },
            revision: set.short_revision(),
            old: &old,
            new: &new,
            changes: &changes,
            positions: &positions,
            settings_changed: settings,
            refused: &refused,
            findings: &set.findings,
            files: set.files,
        }),
        Format::Human => human(
            dir,
            set.short_revision(),
            &source,
            &changes,
            &positions,
            settings,
            &refused,
        ),
    };
    if out.write_all(text.as_bytes()).is_err() {
        return EXIT_USAGE;
    }
    exit
}

#[allow(clippy::too_many_arguments)]
fn json(
    source: &str,
    set: &crate::config::load::ConfigSet,
    old: &Snapshot,
    new: &Snapshot,
    changes: &[Change],
    positions: &Positions,
    settings: bool,
    refused: &[Finding],
) -> String {
    let touched: BTreeMap<&String, &[OpenPosition]> = changes
        .iter()
        .map(|c| (&c.pipeline, positions.of(&c.pipeline)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let field_values: BTreeMap<&String, Vec<FieldChange>> = changes
        .iter()
        .filter(|c| !c.fields.is_empty())
        .map(|c| (&c.pipeline, field_changes(old, new, c)))
        .collect();
    // The files of the pipelines this revision has, for scripts that backtest each change.
    let files: BTreeMap<&String, &PathBuf> = changes
        .iter()
        .filter_map(|c| {
            set.pipelines
                .get(&c.pipeline)
                .map(|r| (&c.pipeline, &r.path))
        })
        .collect();
    let store = match positions {
        Positions::Known(url, _) => serde_json::json!({"url": url, "positions_known": true}),
        Positions::Unknown(why) => serde_json::json!({"positions_known": false, "reason": why}),
    };
    let v = serde_json::json!({
        "base": source,
        "revision": set.revision,
        "changes": changes,
        "field_values": field_values,
        "files": files,
        "positions": touched,
        "store": store,
        "settings_changed": settings,
        "refused": refused,
    });
    format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
}

fn human(
    dir: &Path,
    revision: &str,
    source: &str,
    changes: &[Change],
    positions: &Positions,
    settings: bool,
    refused: &[Finding],
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Plan for {} (revision {revision}) against {source}:",
        dir.display()
    );
    if changes.is_empty() {
        let _ = writeln!(s, "  no pipeline changes");
    }
    for c in changes {
        let _ = writeln!(s, "{}", line(c));
        for p in positions.of(&c.pipeline) {
            let _ = writeln!(
                s,
                "      open position: {} {} {} @ {} — {}",
                p.symbol,
                p.side.as_str(),
                p.quantity,
                p.average_price,
                effect(c)
            );
        }
    }
    if let (Positions::Unknown(why), false) = (positions, changes.is_empty()) {
        let _ = writeln!(s, "  open positions unknown: {why}");
    }
    if settings {
        let _ = writeln!(
            s,
            "  ! ztraded.toml changed: it applies when the daemon restarts"
        );
    }
    if refused.is_empty() {
        return s;
    }
    for f in refused {
        let _ = writeln!(s, "  ! refused: {}", f.human());
    }
    let _ = writeln!(
        s,
        "The daemon would refuse this revision and keep running {source}."
    );
    s
}

/// What happens to an open position of a changed pipeline.
fn effect(c: &Change) -> &'static str {
    match c.kind {
        ChangeKind::Changed => {
            "kept: the pipeline restarts between executions and keeps managing it"
        }
        ChangeKind::Removed | ChangeKind::Disabled => match c.on_remove {
            Some(OnRemove::Close) => "closed at market (on_remove: close)",
            _ => "drained: no new entries, exits managed until flat (on_remove: drain)",
        },
        _ => "adopted",
    }
}

fn on_remove_name(r: OnRemove) -> &'static str {
    match r {
        OnRemove::Drain => "drain",
        OnRemove::Close => "close",
    }
}

fn line(c: &Change) -> String {
    let sign = match c.kind {
        ChangeKind::Added | ChangeKind::Enabled => "+",
        ChangeKind::Changed => "~",
        ChangeKind::Removed | ChangeKind::Disabled => "-",
    };
    let mut s = format!("  {sign} {} ({})", c.pipeline, c.kind.as_str());
    if !c.fields.is_empty() {
        s.push_str(&format!(": {}", c.fields.join(", ")));
    }
    if !c.because.is_empty() {
        s.push_str(&format!(
            "{}{}",
            if c.fields.is_empty() { ": " } else { "; " },
            c.because.join(", ")
        ));
    }
    if let Some(r) = c.on_remove {
        s.push_str(&format!(" [on_remove: {}]", on_remove_name(r)));
    }
    s
}

/// Everything the Markdown plan shows.
struct Plan<'a> {
    dir: &'a Path,
    /// What the plan compares with, as Markdown (a `--base` directory as code).
    source_md: String,
    revision: &'a str,
    old: &'a Snapshot,
    new: &'a Snapshot,
    changes: &'a [Change],
    positions: &'a Positions,
    settings_changed: bool,
    refused: &'a [Finding],
    findings: &'a [Finding],
    files: usize,
}

/// Longest value shown in a Markdown cell, in characters (longer ones end with `…`).
const CELL_CHARS: usize = 80;

/// `s` as inline code in a Markdown table cell: pipes escaped (GitHub reads `\|` inside
/// code spans in tables), line breaks as spaces, at most [`CELL_CHARS`] characters, and a
/// double-backtick fence when the text holds a backtick.
pub fn md_code(s: &str) -> String {
    let mut t: String = s
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .take(CELL_CHARS)
        .collect();
    if s.chars().count() > CELL_CHARS {
        t.push('…');
    }
    let t = t.replace('|', "\\|");
    if t.contains('`') {
        format!("`` {t} ``")
    } else {
        format!("`{t}`")
    }
}

/// `s` as plain text in a Markdown table cell (pipes escaped, line breaks as spaces).
pub fn md_text(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// `field`: `before` → `after`, as Markdown.
pub fn md_field(f: &FieldChange) -> String {
    let side = |v: &Option<String>| v.as_deref().map_or_else(|| "(unset)".to_string(), md_code);
    format!(
        "{}: {} → {}",
        md_code(&f.field),
        side(&f.before),
        side(&f.after)
    )
}

fn kind_label(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Added => "🆕 added",
        ChangeKind::Changed => "✏️ changed",
        ChangeKind::Removed => "🗑️ removed",
        ChangeKind::Disabled => "⏸️ disabled",
        ChangeKind::Enabled => "▶️ enabled",
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn markdown(p: &Plan<'_>) -> String {
    let mut s = String::from("### ztraded plan\n\n");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in p.changes {
        *counts.entry(c.kind.as_str()).or_default() += 1;
    }
    let summary = if counts.is_empty() {
        "no pipeline changes".to_string()
    } else {
        ["added", "changed", "removed", "disabled", "enabled"]
            .iter()
            .filter_map(|k| counts.get(k).map(|n| format!("{n} {k}")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        s,
        "{} (revision {}) against {}: **{summary}**.\n",
        md_code(&p.dir.display().to_string()),
        md_code(p.revision),
        p.source_md
    );
    if !p.changes.is_empty() {
        s.push_str("| pipeline | change | what changes | open positions |\n");
        s.push_str("| --- | --- | --- | --- |\n");
        for c in p.changes {
            let mut what: Vec<String> = field_changes(p.old, p.new, c)
                .iter()
                .map(md_field)
                .collect();
            what.extend(c.because.iter().map(|b| md_text(b)));
            match c.kind {
                ChangeKind::Added => what.push("new pipeline".into()),
                ChangeKind::Enabled => what.push("`enabled: true`".into()),
                ChangeKind::Disabled => what.push("`enabled: false`".into()),
                _ => {}
            }
            if let Some(r) = c.on_remove {
                what.push(format!("`on_remove: {}`", on_remove_name(r)));
            }
            let open = p.positions.of(&c.pipeline);
            let positions = match p.positions {
                Positions::Unknown(_) => "unknown".to_string(),
                Positions::Known(..) if open.is_empty() => "none".to_string(),
                Positions::Known(..) => open
                    .iter()
                    .map(|o| {
                        format!(
                            "{} {} {} @ {} — {}",
                            md_text(&o.symbol),
                            o.side.as_str(),
                            o.quantity.normalize(),
                            o.average_price.normalize(),
                            effect(c)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("<br>"),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {positions} |",
                md_code(&c.pipeline),
                kind_label(c.kind),
                what.join("<br>")
            );
        }
        s.push('\n');
    }
    match p.positions {
        Positions::Known(url, all) => {
            let total: usize = all.values().map(Vec::len).sum();
            let touched: usize = p
                .changes
                .iter()
                .map(|c| p.positions.of(&c.pipeline).len())
                .sum();
            let _ = writeln!(
                s,
                "Open positions from the store {}: {}, {touched} in the pipelines this change touches.\n",
                md_code(url),
                plural(total, "open position", "open positions")
            );
        }
        Positions::Unknown(why) => {
            let _ = writeln!(s, "Open positions: unknown; {}.\n", md_text(why));
        }
    }
    if p.settings_changed {
        s.push_str("> **Note:** `ztraded.toml` changed: it applies when the daemon restarts.\n\n");
    }
    if !p.refused.is_empty() {
        let _ = writeln!(
            s,
            "**The daemon would refuse this revision** and keep running {}:\n",
            p.source_md
        );
        for f in p.refused {
            let _ = writeln!(s, "- {}", md_text(&f.human()));
        }
        s.push('\n');
    }
    s.push_str(&findings_markdown(p.findings, p.files));
    s
}

/// The validation summary line, the errors listed, the warnings in a collapsed list.
fn findings_markdown(findings: &[Finding], files: usize) -> String {
    let summary = Summary::of(files, findings);
    let mut s = format!("Validation: {}.\n", summary.line());
    let (errors, warnings): (Vec<&Finding>, Vec<&Finding>) =
        findings.iter().partition(|f| f.severity == Severity::Error);
    if !errors.is_empty() {
        s.push('\n');
        for f in errors {
            let _ = writeln!(s, "- {}", md_text(&f.human()));
        }
    }
    if !warnings.is_empty() {
        let _ = writeln!(
            s,
            "\n<details><summary>{}</summary>\n",
            plural(warnings.len(), "warning", "warnings")
        );
        for f in warnings {
            let _ = writeln!(s, "- {}", md_text(&f.human()));
        }
        s.push_str("\n</details>\n");
    }
    s
}

fn invalid_markdown(dir: &Path, findings: &[Finding], files: usize) -> String {
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    format!(
        "### ztraded plan\n\n❌ {} is invalid ({}): the daemon would refuse it and keep running its last valid revision.\n\n{}",
        md_code(&dir.display().to_string()),
        plural(errors, "error", "errors"),
        findings_markdown(findings, files)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_paths_find_their_values() {
        let v = json!({
            "limits": {"max_trades_per_day": 3},
            "nodes": [{"id": "d"}, {"config": {"stop_loss": "close - atr_14", "a.b": {"c": 1}}}],
        });
        assert_eq!(lookup(&v, "limits.max_trades_per_day"), Some(&json!(3)));
        assert_eq!(
            lookup(&v, "nodes[1].config.stop_loss"),
            Some(&json!("close - atr_14"))
        );
        assert_eq!(lookup(&v, "nodes[1].config.a.b.c"), Some(&json!(1)));
        assert_eq!(lookup(&v, "nodes[2]"), None);
        assert_eq!(lookup(&v, "limits.daily_loss_usd"), None);
        assert_eq!(lookup(&v, "(whole file)"), Some(&v));
    }

    #[test]
    fn markdown_cells_escape_pipes_and_backticks() {
        assert_eq!(md_code("a || b"), "`a \\|\\| b`");
        assert_eq!(md_code("x`y"), "`` x`y ``");
        assert_eq!(md_text("a|b\nc"), "a\\|b c");
        let long = "x".repeat(100);
        assert_eq!(md_code(&long), format!("`{}…`", "x".repeat(CELL_CHARS)));
    }
}
