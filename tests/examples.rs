//! The shipped configs (repository root and examples/) validate clean.

use std::path::Path;
use ztraded::config::load::load_dir;

fn assert_clean(dir: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let set = load_dir(&root);
    let rendered: Vec<String> = set.findings.iter().map(|f| f.human()).collect();
    assert!(set.findings.is_empty(), "{dir}: {rendered:#?}");
    assert!(!set.pipelines.is_empty());
    assert!(set.pipelines.values().all(|p| p.spec.is_some()));
}

#[test]
fn the_root_config_is_valid() {
    assert_clean(".");
}

#[test]
fn the_examples_are_valid() {
    assert_clean("examples");
}

#[test]
fn validate_exits_zero_with_a_clean_summary() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .args(["validate", ".", "examples"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, "16 files, 0 errors, 0 warnings\n");
}
