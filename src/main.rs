//! The `ztraded` command line.

use clap::{Parser, Subcommand};

/// mimalloc returns freed memory to the system: a daemon that parsed ten thousand pipeline
/// files at start does not keep the parse's peak for the rest of its life.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;
use ztraded::cmd;
use ztraded::config::ResourceKind;
use ztraded::market::Timeframe;

/// GitOps for automated trading: pipelines, scanners and risk policies in YAML, validated in
/// CI and reconciled by a daemon.
#[derive(Parser)]
#[command(name = "ztraded", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log format: `human` (default) or `json` (one JSON object per line). The level comes
    /// from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Log formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line, with the span fields (pipeline, execution_id, symbol).
    Json,
}

/// `ztraded signal ...`.
#[derive(Subcommand)]
enum SignalCommand {
    /// Put an external signal on the bus (`[bus] url` of the config directory's
    /// ztraded.toml; a redis:// bus). Prints the stream entry id.
    ///
    /// Exit status: 0 published, 2 usage error, bad settings or Redis unreachable.
    Publish {
        /// Signal type (what pipelines subscribe to, e.g. `golden_cross`, `news_sentiment`).
        #[arg(long = "type", value_name = "TYPE")]
        signal_type: String,
        /// Ticker, as in the scanners.
        #[arg(long)]
        ticker: String,
        /// Confidence, 0–100.
        #[arg(long)]
        confidence: f64,
        /// `long` or `short`.
        #[arg(long, default_value = "long")]
        direction: String,
        /// Who produced it.
        #[arg(long, default_value = "cli")]
        source: String,
        /// Signal id (default: `cli-<type>-<ticker>-<unix ms>`).
        #[arg(long)]
        id: Option<String>,
        /// When it happened: Unix seconds or RFC 3339 (default: now).
        #[arg(long)]
        timestamp: Option<String>,
        /// The config directory (its ztraded.toml and ZTRADED_* variables give the bus).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Print the published entry as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Check config directories or files: YAML, JSON Schema and semantic rules.
    ///
    /// Prints every finding, not the first. Exit status: 0 valid, 1 invalid, 2 usage or
    /// I/O error.
    Validate {
        /// Config directories (with ztraded.toml, pipelines/, scanners/, risk/) or single
        /// files. Default: the current directory.
        paths: Vec<PathBuf>,
        /// Kind of the files given, when their directory does not tell it.
        #[arg(long, value_parser = parse_kind)]
        kind: Option<ResourceKind>,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: cmd::validate::Format,
        /// Treat warnings as errors.
        #[arg(long)]
        strict: bool,
    },
    /// Run the daemon: watch the config directory, reconcile pipelines, trade.
    ///
    /// With no ztraded.toml it runs on the embedded defaults: SQLite under .ztraded/, the
    /// simulated broker `sim`, replayed bars from examples/data on a simulated clock (one day
    /// per second), metrics and the emergency close on 127.0.0.1:9464. SIGHUP rescans the
    /// directory; SIGINT and SIGTERM stop it cleanly.
    Run {
        /// The config directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Check each configured broker account: reachable, authenticated, paper or live,
    /// status, equity, cash and buying power, open positions and orders, and drift
    /// (positions and orders no pipeline owns, by the store's records). Changes nothing.
    /// Exit 0 when every account answered with no drift, 1 otherwise, 2 for bad settings.
    Brokers {
        /// The config directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what reconciling DIR would do: pipelines added, changed (which fields), removed,
    /// and the open positions each change touches. Nothing is applied.
    Plan {
        /// The config directory to plan.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Compare with this directory instead of the revision the daemon last applied
        /// (read from DIR's store).
        #[arg(long)]
        base: Option<PathBuf>,
        /// Output format: `markdown` is a table for a pull-request comment (changed fields
        /// with their old and new values, open positions, validation summary).
        #[arg(long, value_enum, default_value = "human")]
        format: cmd::plan::Format,
        /// Print JSON (the same as --format json).
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
    /// Show the daemon's pipelines and their states (running, halted and why, draining,
    /// stopped, failed and why) with their last execution, the open positions with stops,
    /// targets and unrealized P&L, the halts, the applied and any refused revision with its
    /// findings, and the budgets: read from the store DIR's settings name, not from the HTTP
    /// port. Exit 1 when the store cannot be read (it does not exist yet, say).
    Status {
        /// The config directory whose ztraded.toml names the store.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Output format (`json`: the documented object; with --watch one per line).
        #[arg(long, value_enum, default_value = "human")]
        format: cmd::status::Format,
        /// Refresh every SECONDS (default 2) until Ctrl-C; put DIR before it.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
    },
    /// Trading performance from the store for a pipeline, a mode and a period: P&L, win rate,
    /// Sharpe, Sortino, max drawdown, profit factor, expectancy, average win and loss,
    /// exposure, by symbol, weekday, hour of day, exit reason and config revision; LLM cost
    /// per trade; with --out, the equity curve and drawdown as SVG. The backtest's
    /// analytics.
    Report {
        /// The config directory whose ztraded.toml names the store.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// One pipeline (default: all).
        #[arg(long)]
        pipeline: Option<String>,
        /// One mode (default: all).
        #[arg(long, value_parser = ["live", "paper", "simulation", "validation"])]
        mode: Option<String>,
        /// First day, YYYY-MM-DD in the market time zone (trades by exit time).
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Last day, YYYY-MM-DD, included.
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
        /// Output format (`csv`: one row per breakdown bucket).
        #[arg(long, value_enum, default_value = "human")]
        format: cmd::report::Format,
        /// Write equity.svg (equity and drawdown), trades.csv and equity.csv here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Apply the store's migrations (the daemon also applies them at start).
    Migrate {
        /// The config directory whose ztraded.toml names the store.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Emergency close through the running daemon: cancel orders, close positions at market,
    /// halt new entries on the scope. Needs the admin token in the variable the settings
    /// name (ZTRADED_ADMIN_TOKEN by default). Prints each position's result and the halts in
    /// force afterwards; a scope that names no pipeline or symbol the daemon knows is an
    /// error (exit 1).
    Close {
        /// Every pipeline and symbol.
        #[arg(long, conflicts_with_all = ["pipeline", "symbol"], required_unless_present_any = ["pipeline", "symbol"])]
        all: bool,
        /// One pipeline.
        #[arg(long, conflicts_with = "symbol")]
        pipeline: Option<String>,
        /// One symbol, across pipelines.
        #[arg(long)]
        symbol: Option<String>,
        /// Why (recorded with the intervention).
        #[arg(long)]
        reason: String,
        /// The daemon's address (default: http.listen of the settings).
        #[arg(long)]
        addr: Option<String>,
        /// The config directory (for the settings).
        #[arg(long, default_value = ".")]
        config: PathBuf,
        /// Print the daemon's JSON answer instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Clear a halt latched by an emergency close or a risk limit. Prints the halts still in
    /// force afterwards.
    Resume {
        /// Every halt: the one on all and every pipeline and symbol halt.
        #[arg(long, conflicts_with_all = ["pipeline", "symbol"], required_unless_present_any = ["pipeline", "symbol"])]
        all: bool,
        /// One pipeline.
        #[arg(long, conflicts_with = "symbol")]
        pipeline: Option<String>,
        /// One symbol.
        #[arg(long)]
        symbol: Option<String>,
        /// Why (recorded with the intervention).
        #[arg(long)]
        reason: Option<String>,
        /// The daemon's address (default: http.listen of the settings).
        #[arg(long)]
        addr: Option<String>,
        /// The config directory (for the settings).
        #[arg(long, default_value = ".")]
        config: PathBuf,
        /// Print the daemon's JSON answer instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Run a pipeline over historical bars with a simulated clock and broker.
    ///
    /// Uses the pipeline's scanner, risk policy and broker settings from its config
    /// directory (a live or paper broker is replaced by the simulated one). Writes
    /// trades.csv, equity.csv and equity.svg and prints a summary; the same inputs give
    /// byte-identical files.
    Backtest {
        /// The pipeline file, inside a config directory (`<dir>/pipelines/<name>.yaml`).
        pipeline: PathBuf,
        /// Directory with one CSV per symbol (default: the config's market_data.path).
        #[arg(long)]
        data: Option<PathBuf>,
        /// First day to trade, YYYY-MM-DD (earlier bars still warm the indicators up).
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Last day to trade, YYYY-MM-DD.
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
        /// Output directory (default: out/<pipeline>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// LLM nodes: `live` calls the providers, `record` calls them for answers not yet
        /// recorded and appends those to the recording file, `replay` uses recorded answers
        /// only (no network; a missing answer is an error naming the node and the bar).
        #[arg(long, value_enum, default_value = "live")]
        llm: ztraded::llm::cassette::LlmRun,
        /// The LLM recording file (default: recordings/<pipeline>.llm.jsonl in the config
        /// directory).
        #[arg(long)]
        llm_file: Option<PathBuf>,
        /// With --llm record: most USD the run's new calls may cost; later calls fail their
        /// node closed.
        #[arg(long)]
        max_cost_usd: Option<rust_decimal::Decimal>,
        /// Also run the pipeline of the same name from this config directory (e.g. a
        /// checkout of the main branch) on the same bars, and print both runs' metrics side
        /// by side with their differences and the config fields that changed. The
        /// baseline's files go to <out>/baseline/. A pipeline the baseline does not have is
        /// reported as new.
        #[arg(long, value_name = "DIR")]
        baseline: Option<PathBuf>,
        /// Output format: `human` (the summary), `json`, or `markdown` (for a pull-request
        /// comment).
        #[arg(long, value_enum, default_value = "human")]
        format: cmd::backtest::Format,
        /// A signal-triggered pipeline: external signals recorded one JSON object a line
        /// (`{"type","ticker","confidence","timestamp",...}`), delivered at their
        /// timestamps besides the scanner's generators.
        #[arg(long, value_name = "FILE.jsonl")]
        signals: Option<PathBuf>,
    },
    /// Signals on the bus.
    Signal {
        #[command(subcommand)]
        command: SignalCommand,
    },
    /// Estimate what a pipeline's LLM calls cost: tokens per call of each LLM node (rendered
    /// prompts; tiktoken for OpenAI model families, 4 characters a token otherwise),
    /// executions per trading day from the trigger, window and NYSE calendar, USD per
    /// execution, per trading day and per month, against the pipeline's budget.
    ///
    /// Exit status: 0 within the budget (or no budget), 1 over the daily or monthly budget
    /// or an invalid configuration, 2 usage or I/O error.
    Estimate {
        /// The pipeline file, inside a config directory (`<dir>/pipelines/<name>.yaml`).
        pipeline: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: cmd::estimate::Format,
        /// For a `signal` trigger: matching signals per symbol per trading day (default 1).
        #[arg(long, value_name = "N")]
        signals_per_day: Option<rust_decimal::Decimal>,
    },
    /// Print indicator values of a data file as CSV (TA-Lib parity checks, debugging rules).
    ///
    /// Columns: timestamp, close, then every output of the indicators in the order given;
    /// values are empty inside an indicator's lookback.
    Indicators {
        /// A CSV file of bars (any format the replay source reads).
        #[arg(long)]
        data: PathBuf,
        /// Comma-separated indicators: sma_20,ema_20,rsi_14,macd_12_26_9,bbands_20_2,atr_14,
        /// supertrend_10_3,volume_sma_20,vwap.
        #[arg(long)]
        indicators: String,
        /// Resample the bars to this timeframe first (1m 5m 15m 30m 1h 4h 1d 1w).
        #[arg(long)]
        timeframe: Option<Timeframe>,
        /// Time zone of timestamps without an offset, and of day boundaries.
        #[arg(long, default_value = "America/New_York")]
        timezone: chrono_tz::Tz,
        /// Whether intraday timestamps in the file mark the start or the end of a bar.
        #[arg(long, value_enum, default_value = "start")]
        timestamps: Stamp,
    },
    /// Print the JSON Schema of a resource kind (pipeline, scanner, risk, settings).
    Schema {
        /// The kind; without it, every kind's schema file name is listed.
        #[arg(value_parser = parse_kind)]
        kind: Option<ResourceKind>,
    },
}

/// `start` or `end`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Stamp {
    /// Timestamps mark the start of a bar.
    Start,
    /// Timestamps mark the end of a bar.
    End,
}

fn parse_kind(s: &str) -> Result<ResourceKind, String> {
    s.parse()
}

fn scope(pipeline: Option<String>, symbol: Option<String>) -> Result<ztraded::http::Scope, String> {
    match (pipeline, symbol) {
        (Some(p), _) => ztraded::http::Scope::pipeline(p).map_err(|e| e.to_string()),
        (_, Some(s)) => ztraded::http::Scope::symbol(s).map_err(|e| e.to_string()),
        _ => Ok(ztraded::http::Scope::All),
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
}

/// mimalloc's `purge_delay` option (`mi_option_purge_delay` in mimalloc 3's `mimalloc.h`;
/// libmimalloc-sys exports no constant for it).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// The daemon's freed pages go back to the system at once instead of after mimalloc's
/// default delay of one second: a daemon frees its start-up peak once and then idles, and
/// kept pages count against its memory. Short commands (a backtest) keep the default: pages
/// freed and allocated again within a second are not faulted in twice (a 500,000-bar
/// backtest takes 46,000 page faults instead of 78,000). `MIMALLOC_PURGE_DELAY`
/// (milliseconds) still wins.
fn set_purge_delay(milliseconds: std::ffi::c_long) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide integer option; mimalloc reads options atomically.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, milliseconds) };
    }
}

/// A negative `purge_delay`: mimalloc never returns freed pages to the system.
const NEVER_PURGE: std::ffi::c_long = -1;

/// mimalloc's default `purge_delay`, milliseconds (`options.c`).
const DEFAULT_PURGE_DELAY: std::ffi::c_long = 1000;

fn main() -> ExitCode {
    // Before the first allocation of any size: the daemon's setting.
    set_purge_delay(0);
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        set_purge_delay(DEFAULT_PURGE_DELAY);
    }
    // Not locked: the daemon's log writer takes the stderr lock on other threads.
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    if !matches!(
        cli.command,
        Command::Validate { .. }
            | Command::Schema { .. }
            | Command::Indicators { .. }
            | Command::Estimate { .. }
    ) {
        init_logs(cli.log_format);
    }
    let code = match cli.command {
        Command::Run { dir } => match runtime(None) {
            Ok(rt) => rt.block_on(cmd::run::run(dir, &mut err)),
            Err(e) => {
                use std::io::Write;
                let _ = writeln!(err, "ztraded: cannot start the runtime: {e}");
                cmd::EXIT_USAGE
            }
        },
        Command::Signal {
            command:
                SignalCommand::Publish {
                    signal_type,
                    ticker,
                    confidence,
                    direction,
                    source,
                    id,
                    timestamp,
                    dir,
                    json,
                },
        } => match runtime(Some(1)) {
            Ok(rt) => rt.block_on(cmd::signal::publish(
                &dir,
                cmd::signal::PublishArgs {
                    signal_type,
                    ticker,
                    confidence,
                    direction,
                    source,
                    id,
                    timestamp,
                },
                json,
                &mut out,
                &mut err,
            )),
            Err(_) => cmd::EXIT_USAGE,
        },
        Command::Brokers { dir, json } => match runtime(Some(1)) {
            Ok(rt) => rt.block_on(cmd::brokers::run(&dir, json, &mut out, &mut err)),
            Err(_) => cmd::EXIT_USAGE,
        },
        Command::Plan {
            dir,
            base,
            format,
            json,
        } => match runtime(Some(1)) {
            Ok(rt) => rt.block_on(cmd::plan::run(
                &dir,
                base.as_deref(),
                if json {
                    cmd::plan::Format::Json
                } else {
                    format
                },
                &mut out,
                &mut err,
            )),
            Err(_) => cmd::EXIT_USAGE,
        },
        Command::Status { dir, format, watch } => {
            let watch = match watch {
                None => Ok(None),
                Some(w) if w.is_finite() && w > 0.0 => {
                    Ok(Some(std::time::Duration::from_secs_f64(w.min(86_400.0))))
                }
                Some(w) => Err(w),
            };
            match (watch, runtime(Some(1))) {
                (Ok(watch), Ok(rt)) => {
                    rt.block_on(cmd::status::run(&dir, format, watch, &mut out, &mut err))
                }
                (Err(w), _) => {
                    use std::io::Write;
                    let _ = writeln!(err, "ztraded status: --watch {w}: expected seconds > 0");
                    cmd::EXIT_USAGE
                }
                _ => cmd::EXIT_USAGE,
            }
        }
        Command::Report {
            dir,
            pipeline,
            mode,
            from,
            to,
            format,
            out: out_dir,
        } => match runtime(Some(1)) {
            Ok(rt) => rt.block_on(cmd::report::run(
                &dir,
                cmd::report::Selection {
                    pipeline,
                    mode,
                    from,
                    to,
                },
                format,
                out_dir,
                &mut out,
                &mut err,
            )),
            Err(_) => cmd::EXIT_USAGE,
        },
        Command::Migrate { dir } => match runtime(Some(1)) {
            Ok(rt) => rt.block_on(cmd::run::migrate(&dir, &mut out, &mut err)),
            Err(_) => cmd::EXIT_USAGE,
        },
        Command::Close {
            all: _,
            pipeline,
            symbol,
            reason,
            addr,
            config,
            json,
        } => match (scope(pipeline, symbol), runtime(Some(1))) {
            (Ok(scope), Ok(rt)) => rt.block_on(cmd::run::close_or_resume(
                &config,
                addr,
                scope,
                Some(reason),
                false,
                json,
                &mut out,
                &mut err,
            )),
            (Err(e), _) => {
                use std::io::Write;
                let _ = writeln!(err, "ztraded close: {e}");
                cmd::EXIT_USAGE
            }
            _ => cmd::EXIT_USAGE,
        },
        Command::Resume {
            all: _,
            pipeline,
            symbol,
            reason,
            addr,
            config,
            json,
        } => match (scope(pipeline, symbol), runtime(Some(1))) {
            (Ok(scope), Ok(rt)) => rt.block_on(cmd::run::close_or_resume(
                &config, addr, scope, reason, true, json, &mut out, &mut err,
            )),
            (Err(e), _) => {
                use std::io::Write;
                let _ = writeln!(err, "ztraded resume: {e}");
                cmd::EXIT_USAGE
            }
            _ => cmd::EXIT_USAGE,
        },
        Command::Validate {
            paths,
            kind,
            format,
            strict,
        } => cmd::validate::run(&paths, kind, format, strict, &mut out, &mut err),
        Command::Backtest {
            pipeline,
            data,
            from,
            to,
            out: out_dir,
            llm,
            llm_file,
            max_cost_usd,
            baseline,
            format,
            signals,
        } => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    use std::io::Write;
                    let _ = writeln!(err, "ztraded: cannot start the runtime: {e}");
                    return ExitCode::from(cmd::EXIT_USAGE);
                }
            };
            let llm = cmd::backtest::LlmOptions {
                mode: llm,
                file: llm_file,
                max_cost_usd,
            };
            let code = runtime.block_on(cmd::backtest::run(
                &pipeline,
                data,
                from,
                to,
                out_dir,
                llm,
                format,
                baseline.as_deref(),
                signals.as_deref(),
                &mut out,
                &mut err,
            ));
            // The process ends now: mimalloc would hand every freed page back to the system
            // at exit (milliseconds of system calls for a large backtest), and the system
            // takes them back anyway.
            set_purge_delay(NEVER_PURGE);
            code
        }
        Command::Estimate {
            pipeline,
            format,
            signals_per_day,
        } => cmd::estimate::run(&pipeline, format, signals_per_day, &mut out, &mut err),
        Command::Indicators {
            data,
            indicators,
            timeframe,
            timezone,
            timestamps,
        } => {
            let stamp = match timestamps {
                Stamp::Start => ztraded::config::settings::BarStamp::Start,
                Stamp::End => ztraded::config::settings::BarStamp::End,
            };
            cmd::indicators::run(
                &data,
                &indicators,
                timeframe,
                timezone,
                stamp,
                &mut out,
                &mut err,
            )
        }
        Command::Schema { kind } => {
            use std::io::Write;
            match kind {
                Some(kind) => {
                    let _ = write!(out, "{}", ztraded::config::schema::generate_text(kind));
                }
                None => {
                    for k in ResourceKind::ALL {
                        let _ = writeln!(out, "{}\tschema/{}.json", k.as_str(), k.as_str());
                    }
                }
            }
            cmd::EXIT_OK
        }
    };
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    /// The option number is mimalloc's `purge_delay`: its default is 1,000 ms (`options.c`).
    #[test]
    fn the_purge_option_number_is_purge_delay() {
        // SAFETY: reads a process-wide integer option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000);
    }
}
