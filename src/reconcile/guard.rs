//! The removal guard: a revision that would remove many pipelines at once is refused.
//!
//! A vanished directory is not a desired state. A failed `git checkout`, a ConfigMap
//! remounted empty or a daemon pointed at the wrong directory all look like "every pipeline
//! was deleted", and applying that drains or, with `on_remove: close`, flattens every
//! position at market. So a revision is refused when, compared with the running one:
//!
//! - it has no `pipelines/` directory while it would remove running pipelines
//!   (`no-pipelines-dir`), or
//! - it removes every running pipeline, or more than `[reconcile] max_removal_pct` percent
//!   of them (50 by default) (`too-many-removals`).
//!
//! Only pipelines whose file is gone count. Disabling a pipeline (`enabled: false`) is
//! explicit and never counts, and neither does deleting the file of a disabled one; so is
//! `max_removal_pct = 100`, which turns the percentage and the "every pipeline" rules off
//! (the settings of the new revision apply, so the same commit can say it). Argo CD keeps
//! automatic pruning off by default for the same reason.

use super::diff::{Change, ChangeKind, Snapshot};
use crate::config::finding::{Finding, Severity};
use crate::config::pipeline::OnRemove;
use crate::config::settings::ReconcileSettings;
use rust_decimal::Decimal;

/// How many pipeline names a finding lists.
const LISTED: usize = 10;

/// The findings that make the reconciler refuse to go from `old` to `new` through
/// `changes` (the [`super::diff::diff`] of the two), with `settings` from the new
/// revision. Empty when the revision may be applied. Each finding is about the `pipelines/`
/// directory (file `pipelines/`, no line), says what would be removed, and how to do it on
/// purpose.
pub fn removals(
    old: &Snapshot,
    new: &Snapshot,
    changes: &[Change],
    settings: &ReconcileSettings,
) -> Vec<Finding> {
    let removed: Vec<&Change> = changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Removed)
        .collect();
    if removed.is_empty() {
        return Vec::new();
    }
    let running = old.pipelines.values().filter(|p| p.enabled).count();
    let closing = removed
        .iter()
        .filter(|c| c.on_remove == Some(OnRemove::Close))
        .count();
    let names = {
        let mut names: Vec<&str> = removed.iter().map(|c| c.pipeline.as_str()).collect();
        let more = names.len().saturating_sub(LISTED);
        names.truncate(LISTED);
        let mut s = names.join(", ");
        if more > 0 {
            s.push_str(&format!(" and {more} more"));
        }
        s
    };
    let effect = if closing > 0 {
        format!("{closing} of them with on_remove: close, flattened at market")
    } else {
        "their positions drained".to_string()
    };
    let how = "to remove pipelines on purpose, set `enabled: false` in their files first (disabling does not count), or set `max_removal_pct` under [reconcile] in ztraded.toml (100 allows any removal); `ztraded plan` shows what a revision removes";
    let n = removed.len();
    if !new.pipelines_dir {
        return vec![finding(
            "no-pipelines-dir",
            format!(
                "the pipelines/ directory is missing, which would remove {n} running pipeline{} ({names}; {effect}); a missing directory is taken for a failed checkout or a wrong path, not a desired state; restore it, or {how}",
                plural(n)
            ),
        )];
    }
    let max = settings.max_removal_pct.value();
    if max >= Decimal::ONE_HUNDRED {
        return Vec::new();
    }
    let pct = Decimal::from(n as u64) * Decimal::ONE_HUNDRED / Decimal::from(running.max(1) as u64);
    if n >= running {
        return vec![finding(
            "too-many-removals",
            format!("this revision removes every running pipeline ({n}: {names}; {effect}); {how}"),
        )];
    }
    if pct > max {
        return vec![finding(
            "too-many-removals",
            format!(
                "this revision removes {n} of {running} running pipelines ({}%, more than max_removal_pct = {}%: {names}; {effect}); {how}",
                pct.round_dp(1).normalize(),
                max.normalize()
            ),
        )];
    }
    Vec::new()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn finding(code: &'static str, message: String) -> Finding {
    Finding {
        file: "pipelines/".to_string(),
        line: 0,
        column: 0,
        severity: Severity::Error,
        code,
        path: String::new(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::common::Percent;
    use crate::reconcile::diff::{PipelineSnapshot, diff};

    fn pipeline(enabled: bool, on_remove: OnRemove) -> PipelineSnapshot {
        PipelineSnapshot {
            hash: format!("{enabled}"),
            content: format!("{enabled}"),
            enabled,
            value: "{}".into(),
            risk: None,
            scanners: vec![],
            on_remove,
        }
    }

    fn state(names: &[(&str, bool)]) -> Snapshot {
        Snapshot {
            pipelines: names
                .iter()
                .map(|(n, enabled)| (n.to_string(), pipeline(*enabled, OnRemove::Drain)))
                .collect(),
            ..Snapshot::default()
        }
    }

    fn refusals(old: &Snapshot, new: &Snapshot, max: i64) -> Vec<&'static str> {
        let settings = ReconcileSettings {
            max_removal_pct: Percent::new(Decimal::from(max)),
            ..ReconcileSettings::default()
        };
        removals(old, new, &diff(old, new), &settings)
            .iter()
            .map(|f| f.code)
            .collect()
    }

    #[test]
    fn a_missing_directory_is_refused() {
        let old = state(&[("a", true), ("b", true)]);
        let new = Snapshot {
            pipelines_dir: false,
            ..Snapshot::default()
        };
        assert_eq!(refusals(&old, &new, 50), vec!["no-pipelines-dir"]);
        // Even when every removal is allowed.
        assert_eq!(refusals(&old, &new, 100), vec!["no-pipelines-dir"]);
        // Nothing running: nothing to protect.
        assert!(refusals(&Snapshot::default(), &new, 50).is_empty());
    }

    #[test]
    fn removing_every_pipeline_or_more_than_the_share_is_refused() {
        let old = state(&[("a", true), ("b", true), ("c", true), ("d", true)]);
        assert_eq!(refusals(&old, &state(&[]), 50), vec!["too-many-removals"]);
        assert_eq!(
            refusals(&old, &state(&[("a", true)]), 50),
            vec!["too-many-removals"]
        );
        // Half is not more than 50 %.
        assert!(refusals(&old, &state(&[("a", true), ("b", true)]), 50).is_empty());
        assert_eq!(
            refusals(&old, &state(&[("a", true), ("b", true)]), 25),
            vec!["too-many-removals"]
        );
        // 100 allows everything, the directory being there.
        assert!(refusals(&old, &state(&[]), 100).is_empty());
        // The only pipeline is every pipeline.
        assert_eq!(
            refusals(&state(&[("a", true)]), &state(&[]), 50),
            vec!["too-many-removals"]
        );
    }

    #[test]
    fn disabling_is_explicit_and_does_not_count() {
        let old = state(&[("a", true), ("b", true), ("c", true)]);
        let all_disabled = state(&[("a", false), ("b", false), ("c", false)]);
        assert!(refusals(&old, &all_disabled, 50).is_empty());
        // Deleting the files of disabled pipelines removes nothing that runs.
        assert!(refusals(&all_disabled, &state(&[]), 50).is_empty());
        // Disabled pipelines are not part of the share either: 1 of 1 running.
        let one_running = state(&[("a", true), ("b", false), ("c", false)]);
        assert_eq!(
            refusals(&one_running, &state(&[("b", false), ("c", false)]), 50),
            vec!["too-many-removals"]
        );
    }

    #[test]
    fn the_finding_says_what_and_how() {
        let mut old = state(&[("a", true), ("b", true)]);
        old.pipelines
            .insert("c".into(), pipeline(true, OnRemove::Close));
        let settings = ReconcileSettings::default();
        let new = state(&[]);
        let found = removals(&old, &new, &diff(&old, &new), &settings);
        assert_eq!(found.len(), 1);
        let text = found[0].human();
        assert!(
            text.starts_with("pipelines/: error[too-many-removals]: "),
            "{text}"
        );
        for part in [
            "a, b, c",
            "1 of them with on_remove: close",
            "enabled: false",
            "max_removal_pct",
            "ztraded plan",
        ] {
            assert!(text.contains(part), "{part} not in {text}");
        }
    }
}
