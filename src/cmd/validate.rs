//! `ztraded validate`: schema and semantic checks of config directories and files.

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::config::finding::{self, Finding, Severity, Summary};
use crate::config::{ResourceKind, load};
use std::io::Write;
use std::path::PathBuf;

/// Output formats of `validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `file:line:col: error[code]: message`, then a summary line.
    Human,
    /// A JSON array of `{file, line, column, severity, code, path, message}`.
    Json,
    /// GitHub Actions workflow commands (`::error file=…,line=…,col=…::message`).
    Github,
}

/// Validates `paths` (directories or files) and prints the findings to `out`.
/// Returns the exit code: 0 valid, 1 invalid, 2 usage or I/O error.
pub fn run(
    paths: &[PathBuf],
    kind: Option<ResourceKind>,
    format: Format,
    strict: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let paths: Vec<PathBuf> = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths.to_vec()
    };
    let mut findings: Vec<Finding> = Vec::new();
    let mut files = 0;
    let mut single = Vec::new();
    for path in &paths {
        match std::fs::metadata(path) {
            Err(e) => {
                let _ = writeln!(err, "ztraded validate: {}: {e}", path.display());
                return EXIT_USAGE;
            }
            Ok(m) if m.is_dir() => {
                let is_config = ["ztraded.toml", "pipelines", "scanners", "risk"]
                    .iter()
                    .any(|n| path.join(n).exists());
                if !is_config {
                    let _ = writeln!(
                        err,
                        "ztraded validate: {} is not a config directory (no ztraded.toml, pipelines/, scanners/ or risk/)",
                        path.display()
                    );
                    return EXIT_USAGE;
                }
                if kind.is_some() {
                    let _ = writeln!(
                        err,
                        "ztraded validate: --kind applies to files, and {} is a directory",
                        path.display()
                    );
                    return EXIT_USAGE;
                }
                let set = load::load_dir(path);
                files += set.files;
                findings.extend(set.findings);
            }
            Ok(_) => single.push(path.clone()),
        }
    }
    if !single.is_empty() {
        match load::load_files(&single, kind) {
            Ok(set) => {
                files += set.files;
                findings.extend(set.findings);
            }
            Err(message) => {
                let _ = writeln!(err, "ztraded validate: {message}");
                return EXIT_USAGE;
            }
        }
    }
    if strict {
        for f in &mut findings {
            f.severity = Severity::Error;
        }
    }
    finding::sort(&mut findings);
    let summary = Summary::of(files, &findings);
    let written = match format {
        Format::Human => findings
            .iter()
            .try_for_each(|f| writeln!(out, "{}", f.human()))
            .and_then(|_| writeln!(out, "{}", summary.line())),
        Format::Json => serde_json::to_writer_pretty(&mut *out, &findings)
            .map_err(std::io::Error::other)
            .and_then(|_| writeln!(out)),
        Format::Github => findings
            .iter()
            .try_for_each(|f| writeln!(out, "{}", f.github()))
            .and_then(|_| writeln!(out, "{}", summary.line())),
    };
    if written.is_err() {
        return EXIT_USAGE;
    }
    if summary.errors > 0 {
        EXIT_INVALID
    } else {
        EXIT_OK
    }
}
