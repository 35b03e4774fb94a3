//! `ztraded plan`: what reconciling a config directory would do, without doing it.

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::config::load::load_dir;
use crate::reconcile::diff::{Change, ChangeKind, Snapshot, diff, settings_changed};
use crate::reconcile::guard;
use crate::store::{OpenPosition, ReconcileResult, Store};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Prints the diff between `base` (a directory, or else the revision the daemon last
/// applied, from the store) and `dir`, with the open positions each change touches, and
/// whether the daemon's removal guard would refuse it ([`guard::removals`]).
/// `json` prints `{base, revision, changes, positions, settings_changed, refused}`.
/// Returns the exit code: 0, 1 when the daemon would refuse the revision (invalid, or
/// removing too many pipelines), 2 on usage or I/O errors.
pub async fn run(
    dir: &Path,
    base: Option<&Path>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let set = load_dir(dir);
    if set.errors() > 0 {
        for f in set
            .findings
            .iter()
            .filter(|f| f.severity == crate::config::Severity::Error)
        {
            let _ = writeln!(err, "{}", f.human());
        }
        let _ = writeln!(
            err,
            "ztraded plan: {} is invalid ({} errors); the daemon would refuse it",
            dir.display(),
            set.errors()
        );
        return EXIT_INVALID;
    }
    let new = Snapshot::of(&set);
    let store = Store::connect(&set.settings.store.url, 1, dir).await;
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
            Ok(s) => match s.recent_reconciles(1000).await {
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
    let positions: BTreeMap<String, Vec<OpenPosition>> = match &store {
        Ok(s) => s
            .open_positions()
            .await
            .unwrap_or_default()
            .into_iter()
            .fold(BTreeMap::new(), |mut m, p| {
                m.entry(p.pipeline.clone()).or_insert_with(Vec::new).push(p);
                m
            }),
        Err(_) => BTreeMap::new(),
    };
    if json {
        let touched: BTreeMap<&String, &Vec<OpenPosition>> = changes
            .iter()
            .filter_map(|c| positions.get_key_value(&c.pipeline))
            .collect();
        let v = serde_json::json!({
            "base": source,
            "revision": set.revision,
            "changes": changes,
            "positions": touched,
            "settings_changed": settings_changed(&old, &new),
            "refused": refused,
        });
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        );
        return if refused.is_empty() {
            EXIT_OK
        } else {
            EXIT_INVALID
        };
    }
    let _ = writeln!(
        out,
        "Plan for {} (revision {}) against {source}:",
        dir.display(),
        set.short_revision()
    );
    if changes.is_empty() {
        let _ = writeln!(out, "  no pipeline changes");
    }
    for c in &changes {
        let _ = writeln!(out, "{}", line(c));
        for p in positions
            .get(&c.pipeline)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let effect = match c.kind {
                ChangeKind::Changed => {
                    "kept: the pipeline restarts between executions and keeps managing it"
                }
                ChangeKind::Removed | ChangeKind::Disabled => match c.on_remove {
                    Some(crate::config::pipeline::OnRemove::Close) => {
                        "closed at market (on_remove: close)"
                    }
                    _ => "drained: no new entries, exits managed until flat (on_remove: drain)",
                },
                _ => "adopted",
            };
            let _ = writeln!(
                out,
                "      open position: {} {} {} @ {} — {effect}",
                p.symbol,
                p.side.as_str(),
                p.quantity,
                p.average_price
            );
        }
    }
    if settings_changed(&old, &new) {
        let _ = writeln!(
            out,
            "  ! ztraded.toml changed: it applies when the daemon restarts"
        );
    }
    if refused.is_empty() {
        return EXIT_OK;
    }
    for f in &refused {
        let _ = writeln!(out, "  ! refused: {}", f.human());
    }
    let _ = writeln!(
        out,
        "The daemon would refuse this revision and keep running {source}."
    );
    EXIT_INVALID
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
        s.push_str(&format!(
            " [on_remove: {}]",
            match r {
                crate::config::pipeline::OnRemove::Drain => "drain",
                crate::config::pipeline::OnRemove::Close => "close",
            }
        ));
    }
    s
}
