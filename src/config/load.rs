//! Reading a config directory (or single files) into a [`ConfigSet`]: discovery, parsing with
//! positions, JSON Schema, typed resources, then the semantic checks.
//!
//! Discovery rules: `ztraded.toml` at the root; `pipelines/`, `scanners/` and `risk/` hold one
//! resource per `.yaml`/`.yml` file, also in sub-directories; a resource's name is its file
//! stem. Hidden files and directories (a leading `.`, which also skips a Kubernetes ConfigMap's
//! `..data` and `..<timestamp>` directories while following the links that point into them),
//! editor swap and backup files and files with other extensions are ignored. Symbolic links
//! are followed; a dangling link or a loop is reported. Files over [`MAX_FILE_BYTES`] are
//! refused without being read whole.

use super::checks::{self, SettingsReporter};
use super::finding::{self, Finding, Reporter, Severity};
use super::pipeline::Pipeline;
use super::risk::RiskPolicy;
use super::scanner::Scanner;
use super::set::content_hash;
use super::settings::{self, SettingSource, Settings};
use super::yaml::{self, Document, Pos};
use super::{ResourceKind, schema, toml_doc};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest config file read, in bytes (1 MiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

pub use super::set::{ConfigSet, Resource, SETTINGS_FILE};
pub use super::settings::{EnvVars, process_env};

/// The daemon's state directory inside a config directory: the embedded SQLite store
/// (`sqlite://.ztraded/ztraded.db`) and the last valid revision (`last-valid/`). Never
/// read as config; the watcher ignores the events in it.
pub const STATE_DIR: &str = ".ztraded";

/// How much checking a set of parsed files gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Context {
    /// A whole config directory: every check.
    Full,
    /// Files on their own: every check but references to other files.
    Alone,
    /// No semantic checks.
    None,
}

/// A file found by discovery.
#[derive(Clone, Debug)]
struct Entry {
    kind: ResourceKind,
    /// The path relative to the config directory (`pipelines/a.yaml`): what the revision
    /// hashes, so that the same tree has the same revision wherever it is.
    rel: String,
    display: String,
    path: PathBuf,
}

fn display_join(root: &Path, rel: &str) -> String {
    let root = root.to_string_lossy();
    let root = root.trim_end_matches('/');
    if root.is_empty() || root == "." {
        rel.to_string()
    } else {
        format!("{root}/{rel}")
    }
}

fn file_finding(file: &str, code: &'static str, message: String) -> Finding {
    Finding {
        file: file.to_string(),
        line: 1,
        column: 1,
        severity: Severity::Error,
        code,
        path: String::new(),
        message,
    }
}

/// Whether discovery ignores a directory entry of this name.
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swo")
        || name.ends_with(".swx")
        || name.ends_with(".tmp")
        || name.ends_with(".bak")
        || (name.starts_with('#') && name.ends_with('#'))
}

fn is_yaml(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

fn walk(
    kind: ResourceKind,
    dir: &Path,
    rel: &str,
    root: &Path,
    seen: &mut HashSet<PathBuf>,
    out: &mut Vec<Entry>,
    findings: &mut Vec<Finding>,
) {
    let display = display_join(root, rel);
    let canonical = match dir.canonicalize() {
        Ok(c) => c,
        Err(e) => {
            findings.push(file_finding(
                &display,
                "io",
                format!("cannot read directory: {e}"),
            ));
            return;
        }
    };
    if !seen.insert(canonical) {
        findings.push(file_finding(
            &display,
            "symlink-loop",
            "this directory is a link back into a directory already being read".into(),
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            findings.push(file_finding(
                &display,
                "io",
                format!("cannot read directory: {e}"),
            ));
            return;
        }
    };
    let mut names: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(n, _)| !is_ignored_name(n))
        .collect();
    names.sort();
    for (name, path) in names {
        let child_rel = format!("{rel}/{name}");
        let child_display = display_join(root, &child_rel);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                let is_link =
                    std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
                if is_link && e.kind() == std::io::ErrorKind::NotFound {
                    if is_yaml(&name) || !name.contains('.') {
                        findings.push(file_finding(
                            &child_display,
                            "broken-symlink",
                            "symbolic link to a file that does not exist".into(),
                        ));
                    }
                } else if is_link && e.raw_os_error() == Some(40) {
                    findings.push(file_finding(
                        &child_display,
                        "symlink-loop",
                        "symbolic link loop".into(),
                    ));
                } else {
                    findings.push(file_finding(
                        &child_display,
                        "io",
                        format!("cannot read: {e}"),
                    ));
                }
                continue;
            }
        };
        if meta.is_dir() {
            walk(kind, &path, &child_rel, root, seen, out, findings);
        } else if is_yaml(&name) {
            out.push(Entry {
                kind,
                rel: child_rel,
                display: child_display,
                path,
            });
        }
    }
}

/// Reads a file of at most [`MAX_FILE_BYTES`] as UTF-8.
///
/// # Errors
/// The finding code (`io`, `file-too-large`, `invalid-utf8`), where, and what.
pub fn read_text(path: &Path) -> Result<String, (&'static str, Pos, String)> {
    read_hashed(path).0
}

/// [`read_text`], and the SHA-256 (hex) of the bytes read — of the error when nothing
/// could be read — so that a file that does not load still counts in the revision.
fn read_hashed(path: &Path) -> (Result<String, (&'static str, Pos, String)>, String) {
    let bytes = std::fs::File::open(path).and_then(|file| {
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            let message = format!("cannot read: {e}");
            let hash = sha256_hex(&format!("io\0{message}"));
            return (Err(("io", Pos::START, message)), hash);
        }
    };
    let hash = hex::encode(Sha256::digest(&bytes));
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return (
            Err((
                "file-too-large",
                Pos::START,
                format!(
                    "the file is larger than {} KiB; config files are small, so this is refused",
                    MAX_FILE_BYTES / 1024
                ),
            )),
            hash,
        );
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let bad = e.utf8_error().valid_up_to();
        let valid = String::from_utf8_lossy(&e.as_bytes()[..bad]).into_owned();
        let line = valid.matches('\n').count() as u32 + 1;
        let col = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
        (
            "invalid-utf8",
            Pos { line, col },
            format!("invalid UTF-8 at byte offset {bad}; config files must be UTF-8"),
        )
    });
    (text, hash)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

enum Spec {
    Pipeline(Box<Pipeline>),
    Scanner(Scanner),
    Risk(RiskPolicy),
}

struct Parsed {
    entry: Entry,
    doc: Option<Document>,
    /// SHA-256 of the file's bytes, or of why it cannot be read.
    hash: String,
    /// [`content_hash`] of the document (empty without one).
    content: String,
    spec: Option<Spec>,
    schema_errors: Vec<String>,
    findings: Vec<Finding>,
}

/// Deserializes the typed resource; when that fails because of values the schema rejected,
/// retries without them so that the semantic checks still run on the rest.
fn typed<T: DeserializeOwned>(doc: &Document, bad: &[String], r: &mut Reporter<'_>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(&doc.value) {
        Ok(t) => return Some(t),
        Err(e) if bad.is_empty() => {
            let path = e.path().to_string();
            let pointer = if path == "." {
                String::new()
            } else {
                path.split('.')
                    .map(|seg| format!("/{}", seg.trim_start_matches('[').trim_end_matches(']')))
                    .collect()
            };
            r.error("invalid-value", &pointer, e.into_inner().to_string());
            return None;
        }
        Err(_) => {}
    }
    let value = schema::without(&doc.value, bad);
    serde_json::from_value(value).ok()
}

fn parse_entry(entry: Entry) -> Parsed {
    let mut findings = Vec::new();
    let (read, hash) = read_hashed(&entry.path);
    let text = match read {
        Ok(t) => t,
        Err((code, pos, message)) => {
            findings.push(Finding {
                file: entry.display.clone(),
                line: pos.line,
                column: pos.col,
                severity: Severity::Error,
                code,
                path: String::new(),
                message,
            });
            return Parsed {
                entry,
                doc: None,
                hash,
                content: String::new(),
                spec: None,
                schema_errors: vec![],
                findings,
            };
        }
    };
    let (doc, errors) = yaml::parse(&text);
    let value_errors: Vec<String> = errors.iter().filter_map(|e| e.pointer.clone()).collect();
    for e in errors {
        findings.push(Finding {
            file: entry.display.clone(),
            line: e.pos.line,
            column: e.pos.col,
            severity: Severity::Error,
            code: e.code,
            path: String::new(),
            message: e.message,
        });
    }
    let Some(doc) = doc else {
        return Parsed {
            entry,
            doc: None,
            hash,
            content: String::new(),
            spec: None,
            schema_errors: vec![],
            findings,
        };
    };
    let mut schema_findings = Vec::new();
    let mut r = Reporter {
        file: &entry.display,
        doc: &doc,
        out: &mut schema_findings,
    };
    let mut bad = schema::check(entry.kind, &mut r);
    // A value the YAML layer already rejected (an infinite number, a bad tag) became null;
    // the schema's complaint about that null would say the same thing again.
    schema_findings.retain(|f| !value_errors.contains(&f.path));
    bad.retain(|p| !value_errors.contains(p));
    bad.extend(value_errors);
    findings.extend(schema_findings);
    let mut r = Reporter {
        file: &entry.display,
        doc: &doc,
        out: &mut findings,
    };
    let spec = match entry.kind {
        ResourceKind::Pipeline => {
            typed::<Pipeline>(&doc, &bad, &mut r).map(|p| Spec::Pipeline(Box::new(p)))
        }
        ResourceKind::Scanner => typed::<Scanner>(&doc, &bad, &mut r).map(Spec::Scanner),
        ResourceKind::Risk => typed::<RiskPolicy>(&doc, &bad, &mut r).map(Spec::Risk),
        ResourceKind::Settings => None,
    };
    Parsed {
        entry,
        content: content_hash(&doc.value),
        doc: Some(doc),
        hash,
        spec,
        schema_errors: bad,
        findings,
    }
}

/// Parses entries on every core.
fn parse_all(entries: Vec<Entry>) -> Vec<Parsed> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads <= 1 || entries.len() < 16 {
        return entries.into_iter().map(parse_entry).collect();
    }
    let chunk = entries.len().div_ceil(threads);
    let mut chunks: Vec<Vec<Entry>> = Vec::new();
    let mut rest = entries;
    while !rest.is_empty() {
        let tail = rest.split_off(chunk.min(rest.len()));
        chunks.push(rest);
        rest = tail;
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| s.spawn(move || c.into_iter().map(parse_entry).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// The settings as loaded for one directory.
#[derive(Default)]
struct LoadedSettings {
    /// Effective settings (the defaults when they do not merge).
    settings: Settings,
    /// The settings file, when it parses.
    file: Option<Resource<()>>,
    /// Whether the file parsed and the settings merged without errors.
    ok: bool,
    /// 1 when the file exists.
    files: usize,
    /// SHA-256 of the file's bytes (or why it cannot be read), when it exists.
    hash: Option<String>,
    /// `(JSON pointer, variable)` of the settings set by `ZTRADED_*` variables.
    env: Vec<(String, String)>,
}

/// Loads the settings: defaults, then the file (when present), then `env`; then checks
/// them. Findings about values from `env` name the variable.
fn load_settings(
    path: &Path,
    display: String,
    env: &EnvVars,
    findings: &mut Vec<Finding>,
) -> LoadedSettings {
    let path = path.to_path_buf();
    let exists = std::fs::metadata(&path).is_ok() || std::fs::symlink_metadata(&path).is_ok();
    let mut file_value = serde_json::Value::Object(Default::default());
    let mut resource = None;
    let mut ok = true;
    let mut hash = None;
    if exists {
        let (read, bytes_hash) = read_hashed(&path);
        hash = Some(bytes_hash.clone());
        match read {
            Err((code, pos, message)) => {
                findings.push(Finding {
                    file: display.clone(),
                    line: pos.line,
                    column: pos.col,
                    severity: Severity::Error,
                    code,
                    path: String::new(),
                    message,
                });
                ok = false;
            }
            Ok(text) => match toml_doc::parse(&text) {
                Err(errors) => {
                    for e in errors {
                        findings.push(Finding {
                            file: display.clone(),
                            line: e.pos.line,
                            column: e.pos.col,
                            severity: Severity::Error,
                            code: e.code,
                            path: String::new(),
                            message: e.message,
                        });
                    }
                    ok = false;
                }
                Ok(doc) => {
                    let before = findings.len();
                    let secrets = checks::literal_secrets(&display, &doc, findings);
                    let mut schema_findings = Vec::new();
                    let mut r = Reporter {
                        file: &display,
                        doc: &doc,
                        out: &mut schema_findings,
                    };
                    let bad = schema::check(ResourceKind::Settings, &mut r);
                    // A literal secret is reported once, as such.
                    schema_findings.retain(|f| !secrets.contains(&f.path));
                    findings.extend(schema_findings);
                    if findings.len() > before {
                        ok = false;
                    }
                    file_value = schema::without(&doc.value, &bad);
                    resource = Some(Resource {
                        name: "ztraded".into(),
                        file: display.clone(),
                        path: path.clone(),
                        hash: bytes_hash,
                        content_hash: content_hash(&doc.value),
                        json: Arc::from(doc.value.to_string()),
                        doc,
                        spec: Some(()),
                        schema_errors: bad,
                    });
                }
            },
        }
    }
    let overrides = settings::env_overrides(env);
    let settings = match settings::merge_settings(&file_value, env) {
        Ok(s) => s,
        Err(problems) => {
            ok = false;
            for (source, message) in problems {
                match source {
                    SettingSource::Env(var) => {
                        findings.push(checks::env_finding(&var, "invalid-setting", "", message))
                    }
                    SettingSource::File(pointer) => {
                        let pos = resource
                            .as_ref()
                            .map_or(Pos::START, |res| res.doc.locate(&pointer));
                        findings.push(Finding {
                            file: display.clone(),
                            line: pos.line,
                            column: pos.col,
                            severity: Severity::Error,
                            code: "invalid-setting",
                            path: pointer,
                            message,
                        });
                    }
                }
            }
            Settings::default()
        }
    };
    {
        let detached = Document::detached(serde_json::Value::Null);
        let doc = resource.as_ref().map_or(&detached, |r| &r.doc);
        let mut r = SettingsReporter {
            file: Reporter {
                file: &display,
                doc,
                out: findings,
            },
            env: &overrides,
        };
        checks::check_settings(&settings, &mut r);
    }
    LoadedSettings {
        settings,
        file: resource,
        ok,
        files: usize::from(exists),
        hash,
        env: overrides,
    }
}

/// Loads only the settings of config directory `root`: defaults, then `ztraded.toml` when
/// present, then the `ZTRADED_*` variables in `env`, and checks them. A daemon needs them
/// before it scans its resources, and cannot run on invalid ones. Returns the settings,
/// whether they are valid (no error at all), and the findings about them (located at
/// `ztraded.toml:line:col`, or at the variable that set a bad value: `env VAR`).
pub fn load_settings_of(root: &Path, env: &EnvVars) -> (Settings, bool, Vec<Finding>) {
    let mut findings = Vec::new();
    let loaded = load_settings(
        &root.join(SETTINGS_FILE),
        display_join(root, SETTINGS_FILE),
        env,
        &mut findings,
    );
    finding::sort(&mut findings);
    let ok = loaded.ok && !findings.iter().any(|f| f.severity == Severity::Error);
    (loaded.settings, ok, findings)
}

/// Loads and validates a config directory with the process environment.
pub fn load_dir(root: &Path) -> ConfigSet {
    load_dir_with_env(root, &process_env())
}

/// Loads and validates a config directory with the given `ZTRADED_*` variables.
pub fn load_dir_with_env(root: &Path, env: &EnvVars) -> ConfigSet {
    let mut findings = Vec::new();
    let settings = load_settings(
        &root.join(SETTINGS_FILE),
        display_join(root, SETTINGS_FILE),
        env,
        &mut findings,
    );
    let pipelines_dir = std::fs::metadata(root.join("pipelines")).is_ok_and(|m| m.is_dir());
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    // A link from a kind directory back to the root is a loop too.
    if let Ok(canonical) = root.canonicalize() {
        seen.insert(canonical);
    }
    for kind in [
        ResourceKind::Pipeline,
        ResourceKind::Scanner,
        ResourceKind::Risk,
    ] {
        let Some(dir) = kind.dir() else { continue };
        let path = root.join(dir);
        if std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        walk(
            kind,
            &path,
            dir,
            root,
            &mut seen,
            &mut entries,
            &mut findings,
        );
    }
    let parsed = parse_all(entries);
    assemble(
        root.to_path_buf(),
        settings,
        parsed,
        findings,
        Context::Full,
        pipelines_dir,
    )
}

/// Loads and validates single files. The kind comes from `kind`, or else from the parent
/// directory's name (`pipelines`, `scanners`, `risk`) or the file name `ztraded.toml`.
/// A file inside a config directory is checked in its context (references, unused
/// resources); only its own findings are kept. A file outside one is checked alone
/// (references are then not checked).
///
/// # Errors
/// A message when the kind of a file cannot be told.
pub fn load_files(paths: &[PathBuf], kind: Option<ResourceKind>) -> Result<ConfigSet, String> {
    let env = process_env();
    let mut findings = Vec::new();
    let mut contexts: BTreeMap<PathBuf, ConfigSet> = BTreeMap::new();
    for path in paths {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = path.parent().unwrap_or(Path::new(""));
        let parent_name = parent
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let k = match kind {
            Some(k) => k,
            None if file_name == SETTINGS_FILE => ResourceKind::Settings,
            None => ResourceKind::from_dir(&parent_name).ok_or_else(|| {
                format!("{}: cannot tell the kind of this file from its directory; pass --kind pipeline|scanner|risk|settings", path.display())
            })?,
        };
        let root = match k {
            ResourceKind::Settings if file_name == SETTINGS_FILE => Some(parent),
            ResourceKind::Settings => None,
            _ if ResourceKind::from_dir(&parent_name) == Some(k) => parent.parent(),
            _ => None,
        }
        .map(|r| {
            if r.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                r.to_path_buf()
            }
        });
        let display = path.to_string_lossy().trim_start_matches("./").to_string();
        let in_context = root.as_ref().and_then(|root| {
            let set = contexts
                .entry(root.clone())
                .or_insert_with(|| load_dir_with_env(root, &env));
            let known = set.pipelines.values().any(|r| r.file == display)
                || set.scanners.values().any(|r| r.file == display)
                || set.risk.values().any(|r| r.file == display)
                || set
                    .settings_file
                    .as_ref()
                    .is_some_and(|r| r.file == display)
                || set.findings.iter().any(|f| f.file == display);
            known.then(|| {
                set.findings
                    .iter()
                    .filter(|f| f.file == display)
                    .cloned()
                    .collect::<Vec<_>>()
            })
        });
        match in_context {
            Some(found) => findings.extend(found),
            None => findings.extend(parse_alone(k, path, &display).findings),
        }
    }
    finding::sort(&mut findings);
    let mut set = contexts.into_values().next().unwrap_or_else(|| {
        assemble(
            PathBuf::from("."),
            LoadedSettings {
                ok: true,
                ..LoadedSettings::default()
            },
            Vec::new(),
            Vec::new(),
            Context::None,
            false,
        )
    });
    set.files = paths.len();
    set.findings = findings;
    Ok(set)
}

/// Checks one file on its own: every check but references to other resources.
fn parse_alone(kind: ResourceKind, path: &Path, display: &str) -> Parsed {
    let entry = Entry {
        kind,
        rel: display.to_string(),
        display: display.to_string(),
        path: path.to_path_buf(),
    };
    if kind == ResourceKind::Settings {
        let mut findings = Vec::new();
        let settings = load_settings(path, display.to_string(), &Vec::new(), &mut findings);
        let set = assemble(
            PathBuf::from("."),
            settings,
            Vec::new(),
            findings,
            Context::Alone,
            false,
        );
        return Parsed {
            entry,
            doc: None,
            hash: String::new(),
            content: String::new(),
            spec: None,
            schema_errors: vec![],
            findings: set.findings,
        };
    }
    let parsed = parse_entry(entry.clone());
    let stem = file_stem(path);
    if !super::common::is_valid_name(&stem) {
        let mut parsed = parsed;
        parsed.findings.push(invalid_name(display, &stem));
        return parsed;
    }
    // References cannot be resolved (settings_ok = false skips brokers and providers).
    let set = assemble(
        PathBuf::from("."),
        LoadedSettings {
            ok: false,
            ..LoadedSettings::default()
        },
        vec![parsed],
        Vec::new(),
        Context::Alone,
        false,
    );
    Parsed {
        entry,
        doc: None,
        hash: String::new(),
        content: String::new(),
        spec: None,
        schema_errors: vec![],
        findings: set.findings,
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn invalid_name(display: &str, stem: &str) -> Finding {
    file_finding(
        display,
        "invalid-name",
        format!(
            "'{stem}' is not a valid name: the file stem is the resource name and must match ^[a-z0-9][a-z0-9-]{{0,62}}$ (lower-case letters, digits and '-')"
        ),
    )
}

/// Largest `prompt_file`, bytes.
pub const MAX_PROMPT_FILE_BYTES: u64 = 64 * 1024;

/// The file a node's `prompt_file` names under `root`, or why it may not be read: an
/// absolute path, a `..` step, a file over [`MAX_PROMPT_FILE_BYTES`], not UTF-8, missing.
pub fn prompt_file_text(root: &Path, file: &str) -> Result<String, String> {
    let rel = Path::new(file);
    if rel.is_absolute()
        || rel.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    {
        return Err(format!(
            "'{file}' must be a path inside the config directory (relative, without '..')"
        ));
    }
    let path = root.join(rel);
    let meta = std::fs::metadata(&path).map_err(|e| format!("cannot read '{file}': {e}"))?;
    if meta.len() > MAX_PROMPT_FILE_BYTES {
        return Err(format!(
            "'{file}' has {} bytes; a prompt file has at most {MAX_PROMPT_FILE_BYTES}",
            meta.len()
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read '{file}': {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("'{file}' is not UTF-8 text"))
}

/// Reads the `prompt_file` of every LLM node of `spec` into its `prompt_text` and mixes the
/// texts into the pipeline's file and content hashes, so that editing a prompt changes the
/// revision and reloads the pipeline. A file that cannot be read is left unread (the node
/// check reports it).
fn read_prompt_files(root: &Path, spec: &mut Pipeline, hash: &mut String, content: &mut String) {
    use super::pipeline::{AgentConfig, BiasConfig, StrategyConfig};
    let mut mixed = Vec::new();
    for node in &mut spec.nodes {
        let (file, text) = match &mut node.agent {
            AgentConfig::Bias(BiasConfig::Llm(c)) => (&c.prompt_file, &mut c.prompt_text),
            AgentConfig::Strategy(StrategyConfig::Llm(c)) => (&c.prompt_file, &mut c.prompt_text),
            _ => continue,
        };
        let Some(file) = file else { continue };
        if let Ok(t) = prompt_file_text(root, file) {
            mixed.push(format!("{file}\0{}", sha256_hex(&t)));
            *text = Some(std::sync::Arc::from(t));
        }
    }
    if mixed.is_empty() {
        return;
    }
    let extra = mixed.join("\n");
    *hash = sha256_hex(&format!("{hash}\0prompts\0{extra}"));
    if !content.is_empty() {
        *content = sha256_hex(&format!("{content}\0prompts\0{extra}"));
    }
}

fn assemble(
    root: PathBuf,
    loaded: LoadedSettings,
    parsed: Vec<Parsed>,
    mut findings: Vec<Finding>,
    context: Context,
    pipelines_dir: bool,
) -> ConfigSet {
    let files = loaded.files + parsed.len();
    let mut parsed = parsed;
    for p in &mut parsed {
        if let Some(Spec::Pipeline(spec)) = &mut p.spec {
            read_prompt_files(&root, spec, &mut p.hash, &mut p.content);
        }
    }
    // The revision covers every file found, whether it loads or not: an invalid revision
    // made of new files never shares the hash of the one running.
    let mut hasher = Sha256::new();
    if pipelines_dir {
        hasher.update("dir\0pipelines\n");
    }
    if let Some(hash) = &loaded.hash {
        hasher.update(format!("settings\0{hash}\n"));
    }
    let mut keys: Vec<(ResourceKind, &str, &str)> = parsed
        .iter()
        .map(|p| (p.entry.kind, p.entry.rel.as_str(), p.hash.as_str()))
        .collect();
    keys.sort();
    for (kind, rel, hash) in keys {
        hasher.update(format!("{kind}\0{rel}\0{hash}\n"));
    }
    let revision = hex::encode(hasher.finalize());
    let mut pipelines = BTreeMap::new();
    let mut scanners = BTreeMap::new();
    let mut risk = BTreeMap::new();
    let mut first_file: BTreeMap<(ResourceKind, String), String> = BTreeMap::new();
    for p in parsed {
        findings.extend(p.findings);
        let name = file_stem(&p.entry.path);
        if !super::common::is_valid_name(&name) {
            findings.push(invalid_name(&p.entry.display, &name));
            continue;
        }
        if let Some(first) = first_file.get(&(p.entry.kind, name.clone())) {
            findings.push(file_finding(
                &p.entry.display,
                "duplicate-name",
                format!("{} '{name}' is already defined by {first}", p.entry.kind),
            ));
            continue;
        }
        first_file.insert((p.entry.kind, name.clone()), p.entry.display.clone());
        let Some(doc) = p.doc else { continue };
        macro_rules! resource {
            ($spec:expr) => {
                Resource {
                    name: name.clone(),
                    file: p.entry.display.clone(),
                    path: p.entry.path.clone(),
                    json: Arc::from(doc.value.to_string()),
                    doc,
                    spec: $spec,
                    hash: p.hash.clone(),
                    content_hash: p.content.clone(),
                    schema_errors: p.schema_errors.clone(),
                }
            };
        }
        match (p.entry.kind, p.spec) {
            (ResourceKind::Pipeline, Some(Spec::Pipeline(s))) => {
                pipelines.insert(name.clone(), resource!(Some(*s)));
            }
            (ResourceKind::Pipeline, _) => {
                pipelines.insert(name.clone(), resource!(None));
            }
            (ResourceKind::Scanner, Some(Spec::Scanner(s))) => {
                scanners.insert(name.clone(), resource!(Some(s)));
            }
            (ResourceKind::Scanner, _) => {
                scanners.insert(name.clone(), resource!(None));
            }
            (ResourceKind::Risk, Some(Spec::Risk(s))) => {
                risk.insert(name.clone(), resource!(Some(s)));
            }
            (ResourceKind::Risk, _) => {
                risk.insert(name.clone(), resource!(None));
            }
            (ResourceKind::Settings, _) => {}
        }
    }
    let mut set = ConfigSet {
        root,
        settings: loaded.settings,
        settings_file: loaded.file,
        settings_ok: loaded.ok,
        settings_env: loaded.env,
        pipelines,
        scanners,
        risk,
        findings,
        files,
        pipelines_dir,
        revision,
        complete: true,
    };
    set.complete = context == Context::Full;
    if context != Context::None {
        let more = checks::check(&set);
        set.findings.extend(more);
    }
    // Every finding is located now: drop the position tables, the largest part of a loaded
    // document (a daemon keeps thousands of them).
    for r in set.pipelines.values_mut() {
        r.doc.nodes = Default::default();
    }
    for r in set.scanners.values_mut() {
        r.doc.nodes = Default::default();
    }
    for r in set.risk.values_mut() {
        r.doc.nodes = Default::default();
    }
    finding::sort(&mut set.findings);
    set
}
