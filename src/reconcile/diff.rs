//! The typed diff between two desired states: which pipelines are added, changed (which
//! fields, or which risk policy or scanner they use changed), removed, disabled or enabled.
//! The daemon applies it; `ztraded plan` prints it.
//!
//! Resources are compared by their parsed content ([`crate::config::set::content_hash`]),
//! not their bytes: an edit of comments, quoting, indentation or key order changes the
//! revision but restarts nothing.

use crate::config::finding::dotted;
use crate::config::load::ConfigSet;
use crate::config::pipeline::{AgentConfig, OnRemove};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// What the reconciler needs to know of one pipeline of a revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineSnapshot {
    /// SHA-256 of the file.
    pub hash: String,
    /// SHA-256 of the parsed content: what tells a change (empty in records written before
    /// it was kept; the file hash is compared then).
    #[serde(default)]
    pub content: String,
    /// `enabled`.
    pub enabled: bool,
    /// The document as compact JSON text (for field-level diffs; text takes a fraction of
    /// the memory of a parsed value, and a daemon keeps one per pipeline).
    pub value: std::sync::Arc<str>,
    /// Risk policy used.
    pub risk: Option<String>,
    /// Scanners used (`scanner` and stock pickers').
    pub scanners: Vec<String>,
    /// What removal does.
    pub on_remove: OnRemove,
}

/// A revision of the desired state as the reconciler compares it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Revision (SHA-256 over every file).
    pub revision: String,
    /// Pipelines by name.
    pub pipelines: BTreeMap<String, PipelineSnapshot>,
    /// Scanner content hashes by name.
    pub scanners: BTreeMap<String, String>,
    /// Risk policy content hashes by name.
    pub risk: BTreeMap<String, String>,
    /// Settings file content hash.
    pub settings: Option<String>,
    /// Whether the revision has a `pipelines/` directory (see [`super::guard`]).
    #[serde(default = "yes")]
    pub pipelines_dir: bool,
}

fn yes() -> bool {
    true
}

impl Default for Snapshot {
    /// An empty desired state (a daemon that has applied nothing yet).
    fn default() -> Self {
        Snapshot {
            revision: String::new(),
            pipelines: BTreeMap::new(),
            scanners: BTreeMap::new(),
            risk: BTreeMap::new(),
            settings: None,
            pipelines_dir: true,
        }
    }
}

impl Snapshot {
    /// The snapshot of a loaded (valid) config set.
    pub fn of(set: &ConfigSet) -> Snapshot {
        let pipelines = set
            .pipelines
            .iter()
            .filter_map(|(name, r)| {
                let spec = r.spec.as_ref()?;
                let mut scanners: Vec<String> = spec.scanner.iter().cloned().collect();
                for node in &spec.nodes {
                    if let AgentConfig::StockPicker(c) = &node.agent
                        && !scanners.contains(&c.scanner)
                    {
                        scanners.push(c.scanner.clone());
                    }
                }
                Some((
                    name.clone(),
                    PipelineSnapshot {
                        hash: r.hash.clone(),
                        content: r.content_hash.clone(),
                        enabled: spec.enabled,
                        // A copy, not a share: the loaded set is dropped once applied, and
                        // texts kept from it would pin the loader's freed memory in place.
                        value: std::sync::Arc::from(&*r.json),
                        risk: spec.risk.clone(),
                        scanners,
                        on_remove: spec.on_remove,
                    },
                ))
            })
            .collect();
        Snapshot {
            revision: set.revision.clone(),
            pipelines,
            scanners: set
                .scanners
                .iter()
                .map(|(n, r)| (n.clone(), r.content_hash.clone()))
                .collect(),
            risk: set
                .risk
                .iter()
                .map(|(n, r)| (n.clone(), r.content_hash.clone()))
                .collect(),
            settings: set.settings_file.as_ref().map(|s| s.content_hash.clone()),
            pipelines_dir: set.pipelines_dir,
        }
    }
}

/// How a pipeline changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// New and enabled: start it.
    Added,
    /// Its file, risk policy or scanner changed: restart it between executions.
    Changed,
    /// Its file is gone: `on_remove`.
    Removed,
    /// `enabled: false` now: `on_remove`.
    Disabled,
    /// `enabled: true` again: start it.
    Enabled,
}

impl ChangeKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Changed => "changed",
            ChangeKind::Removed => "removed",
            ChangeKind::Disabled => "disabled",
            ChangeKind::Enabled => "enabled",
        }
    }
}

/// One pipeline's change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Pipeline name.
    pub pipeline: String,
    /// What happens to it.
    pub kind: ChangeKind,
    /// Fields of its file that differ (`limits.max_trades_per_day`, `nodes[2].config.stop_loss`).
    pub fields: Vec<String>,
    /// Other reasons (`risk policy default changed`, `scanner megacaps changed`).
    pub because: Vec<String>,
    /// For removals: what happens to its positions.
    pub on_remove: Option<OnRemove>,
}

/// The changes that take `old` to `new`, by pipeline name. A settings change is not a
/// pipeline change (it applies at restart); [`settings_changed`] tells it.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, n) in &new.pipelines {
        match old.pipelines.get(name) {
            None if n.enabled => out.push(change(
                name,
                ChangeKind::Added,
                Vec::new(),
                Vec::new(),
                None,
            )),
            None => {}
            Some(o) => {
                let mut fields = Vec::new();
                let same = if o.content.is_empty() || n.content.is_empty() {
                    o.hash == n.hash || o.value == n.value
                } else {
                    o.content == n.content
                };
                if !same {
                    // Deeper than the JSON reader goes (128 levels): no field list.
                    if let (Ok(a), Ok(b)) = (
                        serde_json::from_str::<Value>(&o.value),
                        serde_json::from_str::<Value>(&n.value),
                    ) {
                        json_diff(&a, &b, "", &mut fields);
                    }
                    if fields.is_empty() {
                        fields.push("(whole file)".to_string());
                    }
                }
                fields.retain(|f| f != "enabled");
                let mut because = Vec::new();
                if let Some(r) = &n.risk
                    && old.risk.get(r) != new.risk.get(r)
                {
                    because.push(format!("risk policy {r} changed"));
                }
                for s in &n.scanners {
                    if old.scanners.get(s) != new.scanners.get(s) {
                        because.push(format!("scanner {s} changed"));
                    }
                }
                let kind = match (o.enabled, n.enabled) {
                    (true, false) => Some(ChangeKind::Disabled),
                    (false, true) => Some(ChangeKind::Enabled),
                    (true, true) if !fields.is_empty() || !because.is_empty() => {
                        Some(ChangeKind::Changed)
                    }
                    _ => None,
                };
                if let Some(kind) = kind {
                    let on_remove = (kind == ChangeKind::Disabled).then_some(n.on_remove);
                    out.push(change(name, kind, fields, because, on_remove));
                }
            }
        }
    }
    for (name, o) in &old.pipelines {
        if !new.pipelines.contains_key(name) && o.enabled {
            out.push(change(
                name,
                ChangeKind::Removed,
                Vec::new(),
                Vec::new(),
                Some(o.on_remove),
            ));
        }
    }
    out.sort_by(|a, b| a.pipeline.cmp(&b.pipeline));
    out
}

/// Whether `ztraded.toml` changed between the snapshots.
pub fn settings_changed(old: &Snapshot, new: &Snapshot) -> bool {
    old.settings != new.settings
}

fn change(
    name: &str,
    kind: ChangeKind,
    fields: Vec<String>,
    because: Vec<String>,
    on_remove: Option<OnRemove>,
) -> Change {
    Change {
        pipeline: name.to_string(),
        kind,
        fields,
        because,
        on_remove,
    }
}

/// Dotted paths (`nodes[2].config.stop_loss`) where `a` and `b` differ.
fn json_diff(a: &Value, b: &Value, pointer: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let child = format!("{pointer}/{}", crate::config::yaml::escape_token(k));
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => json_diff(p, q, &child, out),
                    _ => out.push(dotted(&child)),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                json_diff(p, q, &format!("{pointer}/{i}"), out);
            }
        }
        _ if a == b => {}
        _ => out.push(if pointer.is_empty() {
            "(whole file)".to_string()
        } else {
            dotted(pointer)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snap(pipelines: &[(&str, Value, bool)], risk_hash: &str) -> Snapshot {
        Snapshot {
            revision: String::new(),
            pipelines: pipelines
                .iter()
                .map(|(n, v, enabled)| {
                    (
                        n.to_string(),
                        PipelineSnapshot {
                            hash: v.to_string(),
                            content: crate::config::set::content_hash(v),
                            enabled: *enabled,
                            value: v.to_string().into(),
                            risk: Some("default".into()),
                            scanners: vec![],
                            on_remove: OnRemove::Drain,
                        },
                    )
                })
                .collect(),
            scanners: BTreeMap::new(),
            risk: BTreeMap::from([("default".to_string(), risk_hash.to_string())]),
            settings: None,
            pipelines_dir: true,
        }
    }

    #[test]
    fn added_changed_removed_disabled() {
        let a = json!({"mode": "simulation", "limits": {"max_trades_per_day": 3}, "nodes": [{"id": "s", "config": {"stop_loss": "close - atr_14"}}]});
        let mut b = a.clone();
        b["limits"]["max_trades_per_day"] = json!(5);
        b["nodes"][0]["config"]["stop_loss"] = json!("close - 2 * atr_14");
        let old = snap(
            &[
                ("keep", a.clone(), true),
                ("edit", a.clone(), true),
                ("gone", a.clone(), true),
                ("off", a.clone(), true),
            ],
            "r1",
        );
        let new = snap(
            &[
                ("keep", a.clone(), true),
                ("edit", b, true),
                ("new", a.clone(), true),
                ("off", a.clone(), false),
            ],
            "r1",
        );
        let changes = diff(&old, &new);
        let kinds: Vec<(&str, ChangeKind)> = changes
            .iter()
            .map(|c| (c.pipeline.as_str(), c.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("edit", ChangeKind::Changed),
                ("gone", ChangeKind::Removed),
                ("new", ChangeKind::Added),
                ("off", ChangeKind::Disabled)
            ]
        );
        assert_eq!(
            changes[0].fields,
            vec!["limits.max_trades_per_day", "nodes[0].config.stop_loss"]
        );
        assert_eq!(changes[1].on_remove, Some(OnRemove::Drain));
    }

    #[test]
    fn same_content_in_other_bytes_is_no_change() {
        let a = json!({"mode": "simulation", "limits": {"max_trades_per_day": 3}});
        let b = json!({"limits": {"max_trades_per_day": 3}, "mode": "simulation"});
        let old = snap(&[("p", a, true)], "r1");
        let mut new = snap(&[("p", b, true)], "r1");
        // Another file (a comment added, keys reordered), the same resource.
        new.pipelines.get_mut("p").unwrap().hash = "other bytes".into();
        assert!(diff(&old, &new).is_empty(), "{:?}", diff(&old, &new));
    }

    #[test]
    fn a_changed_risk_policy_reaches_the_pipelines_that_use_it() {
        let a = json!({"mode": "simulation"});
        let old = snap(&[("p", a.clone(), true)], "r1");
        let new = snap(&[("p", a, true)], "r2");
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, ChangeKind::Changed);
        assert_eq!(changes[0].because, vec!["risk policy default changed"]);
        assert!(diff(&new, &new).is_empty());
    }
}

#[cfg(test)]
mod loaded_tests {
    use super::*;
    use crate::config::load::load_dir_with_env;

    const RISK: &str =
        "description: test\nsizing:\n  risk_per_trade_pct: 1.0\n  max_position_pct: 20\n";

    fn snapshot(root: &std::path::Path) -> Snapshot {
        let set = load_dir_with_env(root, &Vec::new());
        assert_eq!(set.errors(), 0, "{:?}", set.findings);
        Snapshot::of(&set)
    }

    #[test]
    fn comments_and_formatting_of_a_risk_policy_or_settings_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("risk")).unwrap();
        std::fs::write(dir.path().join("risk/default.yaml"), RISK).unwrap();
        std::fs::write(
            dir.path().join("ztraded.toml"),
            "[http]\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let a = snapshot(dir.path());
        std::fs::write(
            dir.path().join("risk/default.yaml"),
            format!(
                "# reviewed\n{}",
                RISK.replace("max_position_pct: 20", "max_position_pct:   20  # cap")
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("ztraded.toml"),
            "# the port\n[http]\nlisten = '127.0.0.1:1'\n",
        )
        .unwrap();
        let b = snapshot(dir.path());
        assert_ne!(a.revision, b.revision, "other bytes, another revision");
        assert_eq!(a.risk, b.risk);
        assert!(!settings_changed(&a, &b));
        std::fs::write(
            dir.path().join("risk/default.yaml"),
            RISK.replace("max_position_pct: 20", "max_position_pct: 25"),
        )
        .unwrap();
        assert_ne!(snapshot(dir.path()).risk, a.risk);
    }
}
