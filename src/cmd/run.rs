//! `ztraded run`, `ztraded migrate`, `ztraded close` and `ztraded resume`.

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::config::load::load_dir;
use crate::http::Scope;
use crate::store::Store;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Runs the daemon until SIGINT or SIGTERM. Returns the exit code.
pub async fn run(dir: PathBuf, err: &mut dyn Write) -> u8 {
    match crate::daemon::run(dir).await {
        Ok(()) => EXIT_OK,
        Err(e) => {
            tracing::error!(error = %e, "the daemon could not start");
            let _ = writeln!(err, "ztraded run: {e}");
            EXIT_USAGE
        }
    }
}

/// Applies the store migrations of the config directory's store.
pub async fn migrate(dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let set = load_dir(dir);
    if !set.settings_ok {
        let _ = writeln!(
            err,
            "ztraded migrate: the settings of {} are invalid; run `ztraded validate`",
            dir.display()
        );
        return EXIT_INVALID;
    }
    match Store::connect(&set.settings.store.url, 1, dir).await {
        Ok(store) => {
            let _ = writeln!(
                out,
                "{} store at {}: migrations applied",
                store.backend(),
                store.url()
            );
            store.close().await;
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(err, "ztraded migrate: {e}");
            EXIT_USAGE
        }
    }
}

/// The emergency close or resume client: reads the address and the admin token variable's
/// name from the config directory's settings (or `addr`), the token from the environment.
/// Prints the daemon's answer as a summary (positions, then the halts in force), or as JSON
/// with `json`. Exit 0 on success, 1 when the daemon refuses or fails (an unknown scope
/// included), 2 for a usage error.
#[allow(clippy::too_many_arguments)] // one per command-line option, as `main` passes them
pub async fn close_or_resume(
    dir: &Path,
    addr: Option<String>,
    scope: Scope,
    reason: Option<String>,
    resume: bool,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let set = load_dir(dir);
    let http = set.settings.http.clone();
    let addr = addr.unwrap_or(http.listen.clone());
    let token = match std::env::var(&http.admin_token_env) {
        Ok(t) if !t.is_empty() => t,
        _ => {
            let _ = writeln!(
                err,
                "ztraded: set {} to the daemon's admin token",
                http.admin_token_env
            );
            return EXIT_USAGE;
        }
    };
    let answer = if resume {
        crate::http::client_resume(&addr, &token, &scope, reason.as_deref()).await
    } else {
        let reason = reason.unwrap_or_else(|| "ztraded close".to_string());
        crate::http::client_close(&addr, &token, &scope, &reason).await
    };
    match answer {
        Ok(v) => {
            let text = match (json, resume) {
                (true, _) => serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
                (false, true) => crate::http::describe_resume(&v),
                (false, false) => crate::http::describe_close(&v),
            };
            let _ = write!(out, "{text}");
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(err, "ztraded: {e}");
            EXIT_INVALID
        }
    }
}
