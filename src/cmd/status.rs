//! `ztraded status [DIR]`: what the daemon of config directory DIR runs, read from its store
//! (DIR's `ztraded.toml` and `ZTRADED_*` variables name it), never from its HTTP port, so it
//! works against a production PostgreSQL from any machine that reaches the database.
//!
//! It shows the daemon (from its heartbeat in the store), the applied config revision and a
//! refused one newer than it with its findings, each pipeline's state (running, halted and
//! why, draining, stopped, failed and why) with its revision, mode and last execution, the
//! open positions with their stop, targets and unrealized P&L, the latched halts, and each
//! budget against what was spent in its day and month.
//!
//! **Unrealized P&L** is `(last price − average price) × shares` (negative shares for
//! shorts), with the last price the store knows for the position's pipeline and symbol: the
//! newer of the close of the newest bar in the `market_data` output of the pipeline's last
//! execution in the symbol, and its last fill in the symbol
//! ([`Store::last_price`]). Every position says which one it used and when it was seen.
//!
//! **Budgets** count the cost records of the pipeline in the day and month (in the budget's
//! time zone) of the daemon's clock at its last heartbeat (simulated time in replay), or of
//! the wall clock without a heartbeat.
//!
//! Exit code: 0; 1 when the settings do not load or the store cannot be read (it does not
//! exist yet, it is unreachable, or it lacks this build's migrations).
//!
//! # JSON (`--format json`)
//!
//! One object (with `--watch`, one object per line and refresh); times are RFC 3339 UTC
//! strings, money and prices decimal strings (USD):
//!
//! ```text
//! { "generated_at", "store": {backend, url},
//!   "daemon": {state: running|stopped|not_responding|unknown, pid, version, started_at,
//!              heartbeat_at, heartbeat_age_seconds, stopped_at, clock},
//!   "revision": {applied: {revision, at, changes} | null,
//!                refused: {revision, at, errors, findings: [{file, line, column, severity,
//!                          code, path, message}]} | null},
//!   "pipelines": [{name, state, reason, revision, mode, broker, symbols, since,
//!                  last_execution: {id, symbol, trigger, status, reason, started_at,
//!                                   finished_at, cost_usd} | null,
//!                  budget: {daily_usd, monthly_usd, timezone, day, month, spent_day_usd,
//!                           spent_month_usd} | null}],
//!   "positions": [{pipeline, broker, symbol, side, quantity, average_price, entry_time,
//!                  stop_loss, initial_stop, target_1, target_2, target_1_hit, last_price,
//!                  price_source: bar_close|fill|null, price_at, unrealized_pnl_usd}],
//!   "halts": [{scope, reason, since}] }
//! ```

use super::{EXIT_INVALID, EXIT_OK};
use crate::backtest::analytics::{format_ts, format_usd};
use crate::broker::{Position, PositionSide};
use crate::config::load::{load_settings_of, process_env};
use crate::config::pipeline::Budget;
use crate::runtime::budget::BudgetTracker;
use crate::store::{
    LastPrice, PipelineStatus, ReconcileResult, Store, StoreError, StoredExecution,
};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// How a daemon whose heartbeat is older than this many seconds is shown: not responding.
const STALE_AFTER_SECONDS: i64 = 3 * crate::daemon::status::HEARTBEAT_INTERVAL.as_secs() as i64;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables for a terminal.
    Human,
    /// The documented JSON object.
    Json,
}

/// The store and the daemon.
#[derive(Clone, Debug, Serialize)]
pub struct StoreView {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The URL, password redacted.
    pub url: String,
}

/// The daemon as its heartbeat in the store shows it.
#[derive(Clone, Debug, Serialize)]
pub struct DaemonView {
    /// `running` (a heartbeat within 15 s), `stopped` (a clean stop), `not_responding` (no
    /// heartbeat for longer: it crashed, hangs or cannot write the store) or `unknown` (no
    /// heartbeat stored).
    pub state: &'static str,
    /// Process id.
    pub pid: Option<u64>,
    /// ztraded version.
    pub version: Option<String>,
    /// When it started (wall clock).
    pub started_at: Option<String>,
    /// Its last heartbeat (wall clock).
    pub heartbeat_at: Option<String>,
    /// Seconds since the last heartbeat (wall clock).
    pub heartbeat_age_seconds: Option<i64>,
    /// When it stopped cleanly (wall clock).
    pub stopped_at: Option<String>,
    /// Its clock at the last heartbeat (simulated time in replay).
    pub clock: Option<String>,
}

/// The applied revision.
#[derive(Clone, Debug, Serialize)]
pub struct AppliedView {
    /// Revision (SHA-256 hex).
    pub revision: String,
    /// When it was applied (daemon clock).
    pub at: String,
    /// The pipelines it added, changed or removed (`[{pipeline, kind, fields, because,
    /// on_remove}]`).
    pub changes: Value,
}

/// A refused revision newer than the applied one.
#[derive(Clone, Debug, Serialize)]
pub struct RefusedView {
    /// Revision (SHA-256 hex).
    pub revision: String,
    /// When it was refused (daemon clock).
    pub at: String,
    /// Number of error findings.
    pub errors: usize,
    /// Every finding (`[{file, line, column, severity, code, path, message}]`).
    pub findings: Value,
}

/// Revisions.
#[derive(Clone, Debug, Serialize)]
pub struct RevisionView {
    /// The revision running.
    pub applied: Option<AppliedView>,
    /// The last refused revision, when it is newer than the applied one.
    pub refused: Option<RefusedView>,
}

/// An execution.
#[derive(Clone, Debug, Serialize)]
pub struct ExecutionView {
    /// Execution id.
    pub id: String,
    /// Symbol.
    pub symbol: String,
    /// What started it.
    pub trigger: String,
    /// `running`, `completed`, `skipped`, `failed` or `interrupted`.
    pub status: &'static str,
    /// Why it was skipped, failed or interrupted.
    pub reason: Option<String>,
    /// Start (daemon clock).
    pub started_at: String,
    /// End (daemon clock).
    pub finished_at: Option<String>,
    /// Cost, USD.
    pub cost_usd: Decimal,
}

/// A budget against its spending.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetView {
    /// Daily limit, USD.
    pub daily_usd: Option<Decimal>,
    /// Monthly limit, USD.
    pub monthly_usd: Option<Decimal>,
    /// Time zone of its days and months.
    pub timezone: String,
    /// The day counted (`YYYY-MM-DD`).
    pub day: String,
    /// The month counted (`YYYY-MM`).
    pub month: String,
    /// Spent in the day, USD.
    pub spent_day_usd: Decimal,
    /// Spent in the month, USD.
    pub spent_month_usd: Decimal,
}

/// A pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineView {
    /// Name.
    pub name: String,
    /// `running`, `halted`, `draining`, `stopped` or `failed`.
    pub state: &'static str,
    /// Why it is halted or failed.
    pub reason: Option<String>,
    /// Config revision it runs (short hash).
    pub revision: String,
    /// Mode.
    pub mode: String,
    /// Broker.
    pub broker: Option<String>,
    /// Symbols.
    pub symbols: Vec<String>,
    /// Since when it is in its state (daemon clock).
    pub since: String,
    /// Its last execution.
    pub last_execution: Option<ExecutionView>,
    /// Its budget.
    pub budget: Option<BudgetView>,
}

/// An open position.
#[derive(Clone, Debug, Serialize)]
pub struct PositionView {
    /// Owning pipeline.
    pub pipeline: String,
    /// Broker account.
    pub broker: String,
    /// Symbol.
    pub symbol: String,
    /// `long` or `short`.
    pub side: &'static str,
    /// Shares held, positive.
    pub quantity: Decimal,
    /// Average entry price, USD per share.
    pub average_price: Decimal,
    /// First entry fill (daemon clock).
    pub entry_time: String,
    /// Current stop, USD per share.
    pub stop_loss: Option<Decimal>,
    /// Stop at entry, USD per share.
    pub initial_stop: Option<Decimal>,
    /// Target 1, USD per share.
    pub target_1: Option<Decimal>,
    /// Target 2, USD per share.
    pub target_2: Option<Decimal>,
    /// Whether target 1 filled (the partial exit).
    pub target_1_hit: bool,
    /// Last known price, USD per share.
    pub last_price: Option<Decimal>,
    /// Where the last price comes from.
    pub price_source: Option<&'static str>,
    /// When the last price was seen (daemon clock).
    pub price_at: Option<String>,
    /// `(last price − average price) × shares`, signed for shorts, USD.
    pub unrealized_pnl_usd: Option<Decimal>,
}

/// A latched halt.
#[derive(Clone, Debug, Serialize)]
pub struct HaltView {
    /// `all`, `pipeline:<name>` or `symbol:<SYMBOL>`.
    pub scope: String,
    /// Why.
    pub reason: String,
    /// Since when (daemon clock).
    pub since: String,
}

/// Everything `ztraded status` shows (the JSON object).
#[derive(Clone, Debug, Serialize)]
pub struct StatusView {
    /// When this was read (wall clock).
    pub generated_at: String,
    /// The store.
    pub store: StoreView,
    /// The daemon.
    pub daemon: DaemonView,
    /// Revisions.
    pub revision: RevisionView,
    /// Pipelines by name.
    pub pipelines: Vec<PipelineView>,
    /// Open positions by pipeline and symbol.
    pub positions: Vec<PositionView>,
    /// Halts by scope.
    pub halts: Vec<HaltView>,
}

/// Prints the status of `dir`'s daemon to `out`, once, or every `watch` until Ctrl-C.
/// Returns the exit code (see the module documentation).
pub async fn run(
    dir: &Path,
    format: Format,
    watch: Option<Duration>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let Some((store, tz)) = open(dir, "status", err).await else {
        return EXIT_INVALID;
    };
    let code = match watch {
        None => match read(&store, tz).await {
            Ok(view) => {
                print(&view, format, false, out);
                EXIT_OK
            }
            Err(e) => {
                let _ = writeln!(err, "ztraded status: {e}");
                EXIT_INVALID
            }
        },
        Some(every) => {
            let every = every.max(Duration::from_millis(200));
            // One listener for the whole watch: a Ctrl-C while the store is read is kept.
            let mut interrupt =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = writeln!(err, "ztraded status: cannot watch for Ctrl-C: {e}");
                        store.close().await;
                        return EXIT_INVALID;
                    }
                };
            loop {
                match read(&store, tz).await {
                    Ok(view) => print(&view, format, true, out),
                    // The store may be restarting: say so and keep watching.
                    Err(e) => {
                        let _ = writeln!(err, "ztraded status: {e}");
                    }
                }
                let _ = out.flush();
                tokio::select! {
                    _ = interrupt.recv() => break EXIT_OK,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        }
    };
    store.close().await;
    code
}

/// Opens `dir`'s store for reading with its settings, and the market time zone; prints why
/// not to `err`. `command` names the command in messages.
pub(crate) async fn open(
    dir: &Path,
    command: &str,
    err: &mut dyn Write,
) -> Option<(Store, chrono_tz::Tz)> {
    let (settings, ok, findings) = load_settings_of(dir, &process_env());
    if !ok {
        for f in &findings {
            let _ = writeln!(err, "{}", f.human());
        }
        let _ = writeln!(
            err,
            "ztraded {command}: the settings of {} do not load",
            dir.display()
        );
        return None;
    }
    let tz = settings
        .market_data
        .timezone
        .parse()
        .unwrap_or(chrono_tz::America::New_York);
    match Store::open_existing(&settings.store.url, 2, dir).await {
        Ok(s) => Some((s, tz)),
        Err(StoreError::Missing { path }) => {
            let _ = writeln!(
                err,
                "ztraded {command}: no store yet: {} does not exist (the daemon has not run with this store); start `ztraded run {}` first, or point [store] url (ZTRADED_STORE__URL) at the daemon's store",
                path.display(),
                dir.display()
            );
            None
        }
        Err(e) => {
            let _ = writeln!(err, "ztraded {command}: {e}");
            None
        }
    }
}

/// Reads everything `ztraded status` shows.
///
/// # Errors
/// The first store error.
pub async fn read(store: &Store, tz: chrono_tz::Tz) -> Result<StatusView, StoreError> {
    let wall = chrono::Utc::now().timestamp();
    let record = store.get_state(crate::daemon::status::DAEMON_KEY).await?;
    let clock = record
        .as_ref()
        .and_then(|v| v.get("clock").and_then(Value::as_i64))
        .unwrap_or(wall);
    let daemon = daemon_view(record, wall);
    let revision = revision_view(store).await?;
    let mut pipelines = Vec::new();
    for p in store.pipeline_statuses().await? {
        pipelines.push(pipeline_view(store, p, clock, tz).await?);
    }
    let mut positions = Vec::new();
    for t in store.load_open_trades().await? {
        let price = store.last_price(&t.pipeline, &t.symbol).await?;
        positions.push(position_view(t, price));
    }
    let halts = store
        .halts()
        .await?
        .into_iter()
        .map(|h| HaltView {
            scope: h.scope.key(),
            reason: h.reason,
            since: format_ts(h.since),
        })
        .collect();
    Ok(StatusView {
        generated_at: format_ts(wall),
        store: StoreView {
            backend: store.backend(),
            url: store.url().to_string(),
        },
        daemon,
        revision,
        pipelines,
        positions,
        halts,
    })
}

fn daemon_view(record: Option<Value>, wall: i64) -> DaemonView {
    let Some(v) = record else {
        return DaemonView {
            state: "unknown",
            pid: None,
            version: None,
            started_at: None,
            heartbeat_at: None,
            heartbeat_age_seconds: None,
            stopped_at: None,
            clock: None,
        };
    };
    let int = |k: &str| v.get(k).and_then(Value::as_i64);
    let heartbeat = int("heartbeat_at");
    let stopped = int("stopped_at");
    let age = heartbeat.map(|h| (wall - h).max(0));
    let state = match (stopped, age) {
        (Some(_), _) => "stopped",
        (None, Some(a)) if a <= STALE_AFTER_SECONDS => "running",
        (None, Some(_)) => "not_responding",
        (None, None) => "unknown",
    };
    DaemonView {
        state,
        pid: v.get("pid").and_then(Value::as_u64),
        version: v.get("version").and_then(Value::as_str).map(str::to_string),
        started_at: int("started_at").map(format_ts),
        heartbeat_at: heartbeat.map(format_ts),
        heartbeat_age_seconds: age,
        stopped_at: stopped.map(format_ts),
        clock: int("clock").map(format_ts),
    }
}

async fn revision_view(store: &Store) -> Result<RevisionView, StoreError> {
    let applied = store.last_reconcile(ReconcileResult::Applied).await?;
    let refused = store.last_reconcile(ReconcileResult::Refused).await?;
    let refused = refused.filter(|r| applied.as_ref().is_none_or(|a| r.id > a.id));
    Ok(RevisionView {
        applied: applied.map(|a| AppliedView {
            revision: a.revision,
            at: format_ts(a.at),
            changes: a
                .diff
                .get("changes")
                .cloned()
                .unwrap_or(Value::Array(vec![])),
        }),
        refused: refused.map(|r| RefusedView {
            revision: r.revision,
            at: format_ts(r.at),
            errors: r
                .findings
                .as_array()
                .map_or(0, |f| f.iter().filter(|f| f["severity"] == "error").count()),
            findings: r.findings,
        }),
    })
}

async fn pipeline_view(
    store: &Store,
    p: PipelineStatus,
    clock: i64,
    tz: chrono_tz::Tz,
) -> Result<PipelineView, StoreError> {
    let last = store
        .last_executions(&p.pipeline, 1)
        .await?
        .into_iter()
        .next();
    let budget = match &p.budget {
        None => None,
        Some(b) => {
            let zone: chrono_tz::Tz = b.timezone.parse().unwrap_or(tz);
            let limits = Budget {
                daily_usd: b.daily_usd,
                monthly_usd: b.monthly_usd,
            };
            match BudgetTracker::new(Some(&limits), zone) {
                None => None,
                Some(tracker) => {
                    let ((d0, d1), (m0, m1)) = tracker.bounds(clock);
                    let local = |t: i64| {
                        chrono::DateTime::from_timestamp(t, 0)
                            .map(|t| t.with_timezone(&zone).date_naive())
                    };
                    Some(BudgetView {
                        daily_usd: b.daily_usd,
                        monthly_usd: b.monthly_usd,
                        timezone: zone.name().to_string(),
                        day: local(d0)
                            .map_or_else(String::new, |d| d.format("%Y-%m-%d").to_string()),
                        month: local(m0)
                            .map_or_else(String::new, |d| d.format("%Y-%m").to_string()),
                        spent_day_usd: store.cost_total_usd(Some(&p.pipeline), d0, d1).await?,
                        spent_month_usd: store.cost_total_usd(Some(&p.pipeline), m0, m1).await?,
                    })
                }
            }
        }
    };
    Ok(PipelineView {
        name: p.pipeline,
        state: p.state.as_str(),
        reason: p.reason,
        revision: p.revision,
        mode: p.mode,
        broker: p.broker,
        symbols: p.symbols,
        since: format_ts(p.since),
        last_execution: last.map(execution_view),
        budget,
    })
}

fn execution_view(e: StoredExecution) -> ExecutionView {
    ExecutionView {
        id: e.id,
        symbol: e.symbol,
        trigger: e.trigger,
        status: e.state.as_str(),
        reason: e.reason,
        started_at: format_ts(e.started_at),
        finished_at: e.finished_at.map(format_ts),
        cost_usd: e.cost_usd,
    }
}

fn position_view(t: crate::engine::book::OpenTrade, price: Option<LastPrice>) -> PositionView {
    let signed = match t.side {
        PositionSide::Long => t.quantity,
        PositionSide::Short => -t.quantity,
    };
    let unrealized = price.as_ref().map(|p| {
        Position {
            pipeline: t.pipeline.clone(),
            symbol: t.symbol.clone(),
            quantity: signed,
            average_price: t.average_price,
            market_price: p.price,
        }
        .unrealized_pnl()
    });
    PositionView {
        side: t.side.as_str(),
        quantity: t.quantity,
        average_price: t.average_price,
        entry_time: format_ts(t.entry_time),
        stop_loss: t.stop_loss,
        initial_stop: t.initial_stop,
        target_1: t.target_1,
        target_2: t.target_2,
        target_1_hit: t.target_1_hit,
        last_price: price.as_ref().map(|p| p.price),
        price_source: price.as_ref().map(|p| p.source.as_str()),
        price_at: price.as_ref().map(|p| format_ts(p.at)),
        unrealized_pnl_usd: unrealized,
        pipeline: t.pipeline,
        broker: t.broker,
        symbol: t.symbol,
    }
}

fn print(view: &StatusView, format: Format, watching: bool, out: &mut dyn Write) {
    match (format, watching) {
        (Format::Json, false) => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(view).unwrap_or_default()
            );
        }
        (Format::Json, true) => {
            let _ = writeln!(out, "{}", serde_json::to_string(view).unwrap_or_default());
        }
        (Format::Human, watching) => {
            if watching {
                // Clear the screen and go home.
                let _ = write!(out, "\x1b[2J\x1b[H");
            }
            let _ = out.write_all(human(view).as_bytes());
        }
    }
}

/// Rows as aligned columns, two spaces apart, the header first.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            s.push(' ');
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}", w = width[i]));
                s.push(' ');
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    for r in rows {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn price(d: Option<Decimal>) -> String {
    d.map_or_else(
        || "-".to_string(),
        |d| d.round_dp(4).normalize().to_string(),
    )
}

/// The human tables.
pub fn human(v: &StatusView) -> String {
    let mut out = Vec::new();
    let d = &v.daemon;
    let daemon = match d.state {
        "running" => format!(
            "running (pid {}, heartbeat {} s ago)",
            d.pid.unwrap_or(0),
            d.heartbeat_age_seconds.unwrap_or(0)
        ),
        "stopped" => format!(
            "stopped at {} (pid {} exited cleanly)",
            d.stopped_at.as_deref().unwrap_or("?"),
            d.pid.unwrap_or(0)
        ),
        "not_responding" => format!(
            "NOT RESPONDING: no heartbeat since {} ({} s; pid {}): it crashed, hangs or cannot write the store",
            d.heartbeat_at.as_deref().unwrap_or("?"),
            d.heartbeat_age_seconds.unwrap_or(0),
            d.pid.unwrap_or(0)
        ),
        _ => "unknown (no heartbeat in the store)".to_string(),
    };
    out.push(format!("Daemon:    {daemon}"));
    if let Some(c) = &d.clock {
        out.push(format!(
            "Clock:     {c} (the daemon's clock at its last heartbeat)"
        ));
    }
    out.push(format!("Store:     {} {}", v.store.backend, v.store.url));
    match &v.revision.applied {
        Some(a) => {
            let changes: Vec<String> = a
                .changes
                .as_array()
                .map(|c| {
                    c.iter()
                        .map(|c| {
                            format!(
                                "{} {}",
                                c["kind"].as_str().unwrap_or("?"),
                                c["pipeline"].as_str().unwrap_or("?")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(format!(
                "Revision:  {} applied at {}{}",
                short(&a.revision),
                a.at,
                if changes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", changes.join(", "))
                }
            ));
        }
        None => out.push("Revision:  none applied yet".to_string()),
    }
    if let Some(r) = &v.revision.refused {
        out.push(format!(
            "Refused:   {} at {}: {} error{}; the applied revision stays",
            short(&r.revision),
            r.at,
            r.errors,
            if r.errors == 1 { "" } else { "s" }
        ));
        for f in r.findings.as_array().into_iter().flatten() {
            out.push(format!("  {}", finding_line(f)));
        }
    }
    out.push(String::new());
    out.push("Pipelines".to_string());
    if v.pipelines.is_empty() {
        out.push("  (none)".to_string());
    } else {
        let rows: Vec<Vec<String>> = v
            .pipelines
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.state.to_string(),
                    p.since.clone(),
                    p.revision.clone(),
                    p.mode.clone(),
                    p.broker.clone().unwrap_or_else(|| "-".into()),
                    p.last_execution.as_ref().map_or_else(
                        || "-".into(),
                        |e| {
                            format!(
                                "{} {} {}{}",
                                e.started_at,
                                e.symbol,
                                e.status,
                                e.reason
                                    .as_ref()
                                    .map(|r| format!(" ({r})"))
                                    .unwrap_or_default()
                            )
                        },
                    ),
                ]
            })
            .collect();
        let lines = table(
            &[
                "PIPELINE",
                "STATE",
                "SINCE",
                "REVISION",
                "MODE",
                "BROKER",
                "LAST EXECUTION",
            ],
            &rows,
        );
        out.push(lines[0].clone());
        for (p, line) in v.pipelines.iter().zip(&lines[1..]) {
            out.push(line.clone());
            if let Some(r) = &p.reason {
                out.push(format!("    why: {r}"));
            }
        }
    }
    out.push(String::new());
    out.push(
        "Positions (unrealized P&L at the last price in the store: the newest bar close the pipeline's market_data node saw, or its last fill if newer)"
            .to_string(),
    );
    if v.positions.is_empty() {
        out.push("  (none)".to_string());
    } else {
        let rows: Vec<Vec<String>> = v
            .positions
            .iter()
            .map(|p| {
                vec![
                    p.pipeline.clone(),
                    p.symbol.clone(),
                    p.side.to_string(),
                    p.quantity.normalize().to_string(),
                    price(Some(p.average_price)),
                    price(p.stop_loss),
                    format!(
                        "{}{}",
                        price(p.target_1),
                        if p.target_1_hit { " (hit)" } else { "" }
                    ),
                    price(p.target_2),
                    match (&p.last_price, p.price_source, &p.price_at) {
                        (Some(l), Some(s), Some(at)) => format!(
                            "{} ({} {at})",
                            price(Some(*l)),
                            if s == "fill" { "fill" } else { "close" }
                        ),
                        _ => "unknown".to_string(),
                    },
                    p.unrealized_pnl_usd
                        .map_or_else(|| "-".into(), |u| format!("{} USD", format_usd(u))),
                ]
            })
            .collect();
        out.extend(table(
            &[
                "PIPELINE",
                "SYMBOL",
                "SIDE",
                "SHARES",
                "AVG PRICE",
                "STOP",
                "TARGET 1",
                "TARGET 2",
                "LAST PRICE",
                "UNREALIZED",
            ],
            &rows,
        ));
        let total: Decimal = v
            .positions
            .iter()
            .filter_map(|p| p.unrealized_pnl_usd)
            .sum();
        out.push(format!("  total unrealized: {} USD", format_usd(total)));
    }
    out.push(String::new());
    out.push("Halts".to_string());
    if v.halts.is_empty() {
        out.push("  (none)".to_string());
    } else {
        let rows: Vec<Vec<String>> = v
            .halts
            .iter()
            .map(|h| vec![h.scope.clone(), h.since.clone(), h.reason.clone()])
            .collect();
        out.extend(table(&["SCOPE", "SINCE", "REASON"], &rows));
    }
    out.push(String::new());
    out.push("Budgets (LLM and agent cost)".to_string());
    let budgets: Vec<Vec<String>> = v
        .pipelines
        .iter()
        .filter_map(|p| {
            let b = p.budget.as_ref()?;
            let of = |spent: Decimal, limit: Option<Decimal>| match limit {
                Some(l) => format!("{} / {} USD", spent.round_dp(4).normalize(), l.normalize()),
                None => format!("{} USD (no limit)", spent.round_dp(4).normalize()),
            };
            Some(vec![
                p.name.clone(),
                format!("{} {}", b.day, b.timezone),
                of(b.spent_day_usd, b.daily_usd),
                b.month.clone(),
                of(b.spent_month_usd, b.monthly_usd),
            ])
        })
        .collect();
    if budgets.is_empty() {
        out.push("  (no pipeline has a budget)".to_string());
    } else {
        out.extend(table(
            &[
                "PIPELINE",
                "DAY",
                "SPENT / DAILY",
                "MONTH",
                "SPENT / MONTHLY",
            ],
            &budgets,
        ));
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

fn short(revision: &str) -> &str {
    &revision[..12.min(revision.len())]
}

/// `file:line:col: severity[code]: message` of a stored finding (the validator's layout).
fn finding_line(f: &Value) -> String {
    let file = f["file"].as_str().unwrap_or("?");
    let line = f["line"].as_u64().unwrap_or(0);
    let column = f["column"].as_u64().unwrap_or(0);
    let severity = f["severity"].as_str().unwrap_or("error");
    let code = f["code"].as_str().unwrap_or("?");
    let message = f["message"].as_str().unwrap_or("");
    if line == 0 {
        format!("{file}: {severity}[{code}]: {message}")
    } else {
        format!("{file}:{line}:{column}: {severity}[{code}]: {message}")
    }
}
