//! One full scan of the config directory, the comparison of two scans, and the layout
//! fingerprint that tells when the file-event watch no longer covers what the loader reads.

use crate::config::finding::{self, Finding, Severity};
use crate::config::load::{ConfigSet, EnvVars, load_dir_with_env};
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::{Path, PathBuf};

/// Most directories visited by [`Fingerprint::of`]; a tree larger than this is fingerprinted
/// by its first directories only (the periodic resync still covers the rest).
const MAX_FINGERPRINT_DIRS: usize = 10_000;

/// Loads the directory with [`load_dir_with_env`]. A root that is missing or not a directory
/// adds an `io` error finding on the root, so the set is invalid and never mistaken for an
/// empty, valid desired state (which would remove every pipeline).
pub(super) fn scan(root: &Path, env: &EnvVars) -> ConfigSet {
    let mut set = load_dir_with_env(root, env);
    let problem = match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some("the config directory is not a directory".to_string()),
        Err(e) => Some(format!("cannot read the config directory: {e}")),
    };
    if let Some(message) = problem {
        set.findings.push(Finding {
            file: root.display().to_string(),
            line: 1,
            column: 1,
            severity: Severity::Error,
            code: "io",
            path: String::new(),
            message,
        });
        finding::sort(&mut set.findings);
    }
    // The daemon keeps the delivered set while it runs: drop the parse trees.
    set.compact();
    set
}

/// Whether two scans describe the same desired state: the same revision (content hashes of
/// every file) and the same findings. Findings are compared too because some changes do not
/// touch a file's bytes (a link that now dangles, a file that became unreadable, the root
/// that disappeared) and still turn a valid set invalid.
pub(super) fn same_state(a: &ConfigSet, b: &ConfigSet) -> bool {
    if a.revision != b.revision || a.findings.len() != b.findings.len() {
        return false;
    }
    let key = |f: &Finding| {
        (
            f.file.clone(),
            f.line,
            f.column,
            f.severity,
            f.code,
            f.path.clone(),
            f.message.clone(),
        )
    };
    let mut fa: Vec<_> = a.findings.iter().map(key).collect();
    let mut fb: Vec<_> = b.findings.iter().map(key).collect();
    fa.sort();
    fb.sort();
    fa == fb
}

/// What a recursive watch of the root depends on beyond what notify follows by itself:
/// the identity of the root (a root deleted and recreated, or a root link pointing
/// elsewhere, needs a new watch) and every directory reachable through symbolic links that
/// lies outside the root (notify watches a link's target when the watch is set up, not when
/// the link is later pointed elsewhere). Directories created inside watched directories are
/// picked up by notify and are not part of the fingerprint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Fingerprint {
    /// Canonical path of the root and its device and inode numbers; `None` when the root is
    /// missing or not a directory.
    pub root: Option<(PathBuf, u64, u64)>,
    /// Canonical paths of the directories outside the root reached through links.
    pub outside: BTreeSet<PathBuf>,
}

#[cfg(unix)]
fn dev_ino(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn dev_ino(_m: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

impl Fingerprint {
    /// Walks every directory under `root` (hidden ones too, following links).
    pub fn of(root: &Path) -> Fingerprint {
        let Ok(meta) = std::fs::metadata(root) else {
            return Fingerprint::default();
        };
        let Ok(canonical_root) = root.canonicalize() else {
            return Fingerprint::default();
        };
        if !meta.is_dir() {
            return Fingerprint::default();
        }
        let (dev, ino) = dev_ino(&meta);
        let mut outside = BTreeSet::new();
        let mut seen = HashSet::from([canonical_root.clone()]);
        let mut queue = VecDeque::from([root.to_path_buf()]);
        while let Some(dir) = queue.pop_front() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                // `metadata` follows links: a link to a directory counts as a directory.
                if !std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                    continue;
                }
                let Ok(canonical) = path.canonicalize() else {
                    continue;
                };
                if seen.len() >= MAX_FINGERPRINT_DIRS || !seen.insert(canonical.clone()) {
                    continue;
                }
                if !canonical.starts_with(&canonical_root) {
                    outside.insert(canonical);
                }
                queue.push_back(path);
            }
        }
        Fingerprint {
            root: Some((canonical_root, dev, ino)),
            outside,
        }
    }

    /// Whether the root exists and is a directory.
    #[cfg(test)]
    pub fn root_is_dir(&self) -> bool {
        self.root.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RISK: &str = "description: test\nsizing:\n  risk_per_trade_pct: 1.0\n";

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("risk")).unwrap();
        std::fs::write(dir.path().join("risk/default.yaml"), RISK).unwrap();
        dir
    }

    #[test]
    fn missing_root_is_an_error_not_an_empty_set() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("gone");
        let set = scan(&root, &Vec::new());
        assert_eq!(set.errors(), 1, "{:?}", set.findings);
        assert_eq!(set.findings[0].code, "io");
        let empty = scan(dir.path(), &Vec::new());
        assert_eq!(empty.errors(), 0, "{:?}", empty.findings);
        // Same (empty) content hash, yet not the same state.
        assert_eq!(set.revision, empty.revision);
        assert!(!same_state(&set, &empty));
    }

    #[test]
    fn same_state_compares_revision_and_findings() {
        let dir = tree();
        let a = scan(dir.path(), &Vec::new());
        let b = scan(dir.path(), &Vec::new());
        assert!(same_state(&a, &b));
        std::fs::write(dir.path().join("risk/default.yaml"), "description: [").unwrap();
        let c = scan(dir.path(), &Vec::new());
        assert!(!same_state(&a, &c));
        assert!(c.errors() > 0);
        // Reordered findings are still the same state.
        let mut d = c.clone();
        d.findings.reverse();
        assert!(same_state(&c, &d));
    }

    #[test]
    fn fingerprint_sees_root_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cfg");
        std::fs::create_dir(&root).unwrap();
        let a = Fingerprint::of(&root);
        assert!(a.root_is_dir());
        assert_eq!(a, Fingerprint::of(&root));
        // A new directory inside the root does not change it (notify follows those).
        std::fs::create_dir(root.join("risk")).unwrap();
        assert_eq!(a, Fingerprint::of(&root));
        // Keep the old directory alive so its inode cannot be reused.
        std::fs::rename(&root, dir.path().join("old")).unwrap();
        assert!(!Fingerprint::of(&root).root_is_dir());
        std::fs::create_dir(&root).unwrap();
        let b = Fingerprint::of(&root);
        assert!(b.root_is_dir());
        assert_ne!(a, b);
    }

    #[cfg(unix)]
    #[test]
    fn fingerprint_sees_links_retargeted_outside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cfg");
        std::fs::create_dir(&root).unwrap();
        for d in ["a/x", "b"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::os::unix::fs::symlink(dir.path().join("a"), root.join("risk")).unwrap();
        let a = Fingerprint::of(&root);
        let canonical = |p: &str| dir.path().join(p).canonicalize().unwrap();
        assert_eq!(
            a.outside,
            BTreeSet::from([canonical("a"), canonical("a/x")]),
            "{a:?}"
        );
        std::os::unix::fs::symlink(dir.path().join("b"), root.join(".tmp")).unwrap();
        std::fs::rename(root.join(".tmp"), root.join("risk")).unwrap();
        let b = Fingerprint::of(&root);
        assert_eq!(b.outside, BTreeSet::from([canonical("b")]));
        // A link loop ends the walk instead of running forever.
        std::os::unix::fs::symlink(&root, dir.path().join("b/loop")).unwrap();
        let c = Fingerprint::of(&root);
        assert_eq!(c.outside, BTreeSet::from([canonical("b")]));
    }
}
