//! A loaded config directory: [`ConfigSet`] and its [`Resource`]s.

use super::finding::{Finding, Severity};
use super::pipeline::Pipeline;
use super::risk::RiskPolicy;
use super::scanner::Scanner;
use super::settings::Settings;
use super::yaml::Document;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The settings file name at the root of a config directory.
pub const SETTINGS_FILE: &str = "ztraded.toml";

/// One loaded resource file.
#[derive(Clone, Debug)]
pub struct Resource<T> {
    /// Resource name (the file stem).
    pub name: String,
    /// The file as displayed in findings.
    pub file: String,
    /// The file on disk.
    pub path: PathBuf,
    /// The parsed document, with positions (its tree and positions are dropped by
    /// [`ConfigSet::compact`]).
    pub doc: Document,
    /// The document as compact JSON text: what the reconciler compares field by field.
    /// Kept by [`ConfigSet::compact`].
    pub json: Arc<str>,
    /// The typed resource; `None` when the document does not deserialize.
    pub spec: Option<T>,
    /// SHA-256 of the file's bytes, hex.
    pub hash: String,
    /// SHA-256 of the parsed content (keys sorted, comments and formatting gone), hex: two
    /// files with this hash describe the same resource. See [`content_hash`].
    pub content_hash: String,
    /// JSON pointers of values the schema rejected (semantic checks skip them).
    pub schema_errors: Vec<String>,
}

/// A config directory as loaded: settings, resources, findings and revision.
#[derive(Clone, Debug, Default)]
pub struct ConfigSet {
    /// The directory (as given).
    pub root: PathBuf,
    /// Effective settings: defaults, then `ztraded.toml`, then `ZTRADED_*` variables.
    pub settings: Settings,
    /// The settings file, when there is one.
    pub settings_file: Option<Resource<()>>,
    /// Whether the settings loaded without errors (reference checks against brokers and
    /// LLM providers are skipped when they did not).
    pub settings_ok: bool,
    /// `(JSON pointer, variable)` of each setting a `ZTRADED_*` variable set.
    pub settings_env: Vec<(String, String)>,
    /// Pipelines by name.
    pub pipelines: BTreeMap<String, Resource<Pipeline>>,
    /// Scanners by name.
    pub scanners: BTreeMap<String, Resource<Scanner>>,
    /// Risk policies by name.
    pub risk: BTreeMap<String, Resource<RiskPolicy>>,
    /// Every finding, sorted by file, line and column.
    pub findings: Vec<Finding>,
    /// Files read (the settings file included).
    pub files: usize,
    /// Whether the directory has a `pipelines/` directory. A revision without one removes
    /// every pipeline; the reconciler refuses that (see [`crate::reconcile::guard`]).
    pub pipelines_dir: bool,
    /// Whether the set is a whole config directory (references between resources and
    /// unused resources are only checked then).
    pub complete: bool,
    /// SHA-256 over every file found (its kind, path and bytes, or why it could not be
    /// read), the settings file included, and whether `pipelines/` exists: the revision of
    /// the desired state. Two sets with different files never share it, valid or not.
    pub revision: String,
}

impl ConfigSet {
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count()
    }

    /// Whether the set is valid (no errors; with `strict`, no warnings either).
    pub fn is_valid(&self, strict: bool) -> bool {
        self.errors() == 0 && (!strict || self.warnings() == 0)
    }

    /// Drops what only validation needs — each document's JSON tree and its table of
    /// positions — and keeps names, files, hashes, typed specs, sources and the compact JSON
    /// text. A daemon keeps the revision it runs in this form: with thousands of pipelines
    /// the trees are most of a loaded set's memory. Findings are computed before, so they
    /// keep their `file:line:col`.
    pub fn compact(&mut self) {
        fn strip<T>(r: &mut Resource<T>) {
            r.doc.value = serde_json::Value::Null;
            r.doc.nodes = Default::default();
            r.schema_errors.shrink_to_fit();
        }
        self.pipelines.values_mut().for_each(strip);
        self.scanners.values_mut().for_each(strip);
        self.risk.values_mut().for_each(strip);
        if let Some(r) = &mut self.settings_file {
            strip(r);
        }
    }

    /// The set without its resources: root, settings, findings, file count and revision.
    /// What is left of a delivered revision once a daemon has applied it (its pipelines are
    /// compiled and its revision recorded); enough to tell a rescan's result from it.
    pub fn summary(&self) -> ConfigSet {
        ConfigSet {
            root: self.root.clone(),
            settings: self.settings.clone(),
            settings_file: None,
            settings_ok: self.settings_ok,
            settings_env: self.settings_env.clone(),
            pipelines: BTreeMap::new(),
            scanners: BTreeMap::new(),
            risk: BTreeMap::new(),
            findings: self.findings.clone(),
            files: self.files,
            pipelines_dir: self.pipelines_dir,
            complete: self.complete,
            revision: self.revision.clone(),
        }
    }

    /// The short revision id used in logs and metrics (first 12 hex digits).
    pub fn short_revision(&self) -> &str {
        &self.revision[..12.min(self.revision.len())]
    }
}

/// SHA-256 (hex) of a parsed document's content: keys sorted, numbers and strings as JSON
/// writes them. Comments, quoting, flow or block style, key order and anchors do not change
/// it; any change of a value does. Documents are at most [`super::MAX_DEPTH`] levels deep
/// (the loaders refuse deeper ones), which bounds the recursion.
pub fn content_hash(value: &Value) -> String {
    fn feed(v: &Value, h: &mut Sha256) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                h.update(b"{");
                for k in keys {
                    h.update(Value::String(k.clone()).to_string().as_bytes());
                    h.update(b":");
                    if let Some(child) = map.get(k) {
                        feed(child, h);
                    }
                    h.update(b",");
                }
                h.update(b"}");
            }
            Value::Array(items) => {
                h.update(b"[");
                for item in items {
                    feed(item, h);
                    h.update(b",");
                }
                h.update(b"]");
            }
            scalar => h.update(scalar.to_string().as_bytes()),
        }
    }
    let mut h = Sha256::new();
    feed(value, &mut h);
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_hash_ignores_key_order_and_sees_values() {
        let a = json!({"a": 1, "b": {"x": [1, 2], "y": "s"}});
        let b = json!({"b": {"y": "s", "x": [1, 2]}, "a": 1});
        assert_eq!(content_hash(&a), content_hash(&b));
        let c = json!({"a": 1, "b": {"x": [2, 1], "y": "s"}});
        assert_ne!(content_hash(&a), content_hash(&c));
        assert_ne!(
            content_hash(&json!({"a": "1"})),
            content_hash(&json!({"a": 1}))
        );
    }
}
