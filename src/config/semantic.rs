//! Semantic checks: what the JSON Schema cannot say. References between resources, the DAG,
//! expressions, cron, time zones, clock times, broker/mode fit, secrets in settings, and the
//! warnings for legal but suspicious configs.

use super::common::is_valid_name;
use super::finding::{Finding, Reporter, Severity};
use super::load::{ConfigSet, EnvVars, Resource};
use super::pipeline::{AgentConfig, AgentKind, BiasConfig, Mode, Pipeline, StrategyConfig};
use super::scanner::{Scanner, SignalKind};
use super::schema::suggestion;
use super::settings::{BrokerSettings, MarketDataSource, Settings};
use super::yaml::{Document, escape_token};
use crate::expr::{self, Resolution, Ty};
use crate::market::{IndicatorSpec, Timeframe};
use figment::Figment;
use figment::providers::Serialized;
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Bar fields every expression may read.
pub const BAR_FIELDS: [&str; 5] = ["open", "high", "low", "close", "volume"];

/// Names exit rules may read besides bar fields and indicators: the position's average
/// entry price and the number of bars it has been held.
pub const EXIT_FIELDS: [&str; 2] = ["entry_price", "bars_held"];

/// Where a setting came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingSource {
    /// The settings file, at this JSON pointer.
    File(String),
    /// This environment variable.
    Env(String),
}

/// Merges the embedded defaults, the settings file's value and the `ZTRADED_*` variables
/// (`ZTRADED_STORE__URL` sets `store.url`) with figment.
///
/// # Errors
/// Each problem with the source it came from.
pub fn merge_settings(
    file: &Value,
    env: &EnvVars,
) -> Result<Settings, Vec<(SettingSource, String)>> {
    let mut env_dict = figment::value::Dict::new();
    let mut env_paths: BTreeMap<String, String> = BTreeMap::new();
    for (key, raw) in env {
        let Some(rest) = key.strip_prefix("ZTRADED_") else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let value: figment::value::Value = raw.parse().unwrap_or_else(|_| raw.as_str().into());
        insert_path(&mut env_dict, &path, value);
        env_paths.insert(path.join("."), key.clone());
    }
    let figment = Figment::from(Serialized::defaults(Settings::default()))
        .merge(Serialized::defaults(file))
        .merge(Serialized::defaults(env_dict));
    figment.extract::<Settings>().map_err(|errors| {
        errors
            .into_iter()
            .map(|e| {
                let dotted = e.path.join(".");
                let source = env_paths
                    .iter()
                    .find(|(p, _)| {
                        dotted == **p
                            || dotted.starts_with(&format!("{p}."))
                            || p.starts_with(&format!("{dotted}."))
                    })
                    .map(|(_, var)| SettingSource::Env(var.clone()))
                    .unwrap_or_else(|| {
                        SettingSource::File(
                            e.path
                                .iter()
                                .map(|s| format!("/{}", escape_token(s)))
                                .collect(),
                        )
                    });
                let what = if dotted.is_empty() {
                    String::new()
                } else {
                    format!("{dotted}: ")
                };
                (source, format!("{what}{}", e.kind))
            })
            .collect()
    })
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| figment::value::Dict::new().into());
            if let figment::value::Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            } else {
                let mut inner = figment::value::Dict::new();
                insert_path(&mut inner, rest, value);
                *entry = inner.into();
            }
        }
    }
}

const SECRET_KEYS: [&str; 12] = [
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "secret_key",
    "key_id",
    "access_token",
    "admin_token",
    "private_key",
    "passphrase",
];

fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_uppercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// Reports secrets written as values in the settings file: a `*_env` setting that does not
/// hold an environment-variable name, a secret-named key with a value, or a URL with a
/// password. Returns the pointers reported.
pub fn literal_secrets(file: &str, doc: &Document, out: &mut Vec<Finding>) -> Vec<String> {
    let mut found = Vec::new();
    let mut r = Reporter { file, doc, out };
    walk_secrets(&doc.value, "", None, &mut r, &mut found);
    found
}

fn walk_secrets(
    v: &Value,
    pointer: &str,
    key: Option<&str>,
    r: &mut Reporter<'_>,
    found: &mut Vec<String>,
) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                walk_secrets(
                    child,
                    &format!("{pointer}/{}", escape_token(k)),
                    Some(k),
                    r,
                    found,
                );
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk_secrets(child, &format!("{pointer}/{i}"), None, r, found);
            }
        }
        Value::String(s) => {
            let key = key.unwrap_or_default().to_ascii_lowercase();
            if key.ends_with("_env") {
                if !is_env_name(s) {
                    r.error("literal-secret", pointer, format!(
                        "'{key}' must name an environment variable (like APCA_API_SECRET_KEY) that holds the secret, not hold a value; secrets never go in files"
                    ));
                    found.push(pointer.to_string());
                }
            } else if SECRET_KEYS
                .iter()
                .any(|s| key == *s || key.ends_with(&format!("_{s}")))
            {
                r.error_at_key("literal-secret", pointer, format!(
                    "'{key}' holds a secret; put it in an environment variable and name that variable with '{key}_env'"
                ));
                found.push(pointer.to_string());
            } else if url_has_password(s) {
                r.error("literal-secret", pointer, "this URL contains a password; set it through the environment (ZTRADED_<SECTION>__URL or PGPASSWORD) instead".to_string());
                found.push(pointer.to_string());
            }
        }
        _ => {}
    }
}

fn url_has_password(s: &str) -> bool {
    let Some((_, rest)) = s.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo
            .split_once(':')
            .is_some_and(|(_, pw)| !pw.is_empty()),
        None => false,
    }
}

/// Runs every semantic check on a loaded set.
pub fn check(set: &ConfigSet) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(file) = &set.settings_file {
        let mut r = Reporter {
            file: &file.file,
            doc: &file.doc,
            out: &mut out,
        };
        check_settings(&set.settings, &mut r);
    } else {
        let doc = Document::detached(Value::Null);
        let mut r = Reporter {
            file: super::load::SETTINGS_FILE,
            doc: &doc,
            out: &mut out,
        };
        check_settings(&set.settings, &mut r);
    }
    let ctx = Context { set };
    // Pipelines are independent of each other: check them on every core.
    let pipelines: Vec<&Resource<Pipeline>> = set.pipelines.values().collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads > 1 && pipelines.len() >= 32 {
        let chunk = pipelines.len().div_ceil(threads);
        let results: Vec<Vec<Finding>> = std::thread::scope(|s| {
            let handles: Vec<_> = pipelines
                .chunks(chunk)
                .map(|c| {
                    let ctx = &ctx;
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for p in c {
                            ctx.pipeline(p, &mut out);
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        out.extend(results.into_iter().flatten());
    } else {
        for p in pipelines {
            ctx.pipeline(p, &mut out);
        }
    }
    let mut used_scanners = BTreeSet::new();
    let mut used_risk = BTreeSet::new();
    for p in set.pipelines.values() {
        let Some(spec) = &p.spec else {
            // An unreadable pipeline may use anything: do not call things unused.
            used_scanners.extend(set.scanners.keys().cloned());
            used_risk.extend(set.risk.keys().cloned());
            continue;
        };
        used_scanners.extend(spec.scanner.iter().cloned());
        used_risk.extend(spec.risk.iter().cloned());
        for node in &spec.nodes {
            if let AgentConfig::StockPicker(c) = &node.agent {
                used_scanners.insert(c.scanner.clone());
            }
        }
    }
    for s in set.scanners.values() {
        ctx.scanner(s, &mut out);
        if set.complete && !used_scanners.contains(&s.name) {
            let mut r = Reporter {
                file: &s.file,
                doc: &s.doc,
                out: &mut out,
            };
            r.warning(
                "unused-scanner",
                "",
                format!("no pipeline uses scanner '{}'", s.name),
            );
        }
    }
    for p in set.risk.values() {
        if set.complete && !used_risk.contains(&p.name) {
            let mut r = Reporter {
                file: &p.file,
                doc: &p.doc,
                out: &mut out,
            };
            r.warning(
                "unused-risk-policy",
                "",
                format!("no pipeline uses risk policy '{}'", p.name),
            );
        }
    }
    out
}

fn check_settings(s: &Settings, r: &mut Reporter<'_>) {
    if s.http.listen.parse::<std::net::SocketAddr>().is_err() {
        r.error(
            "invalid-setting",
            "/http/listen",
            format!(
                "'{}' is not an address and port such as 127.0.0.1:9464",
                s.http.listen
            ),
        );
    }
    if s.market_data.timezone.parse().is_none() {
        r.error(
            "unknown-timezone",
            "/market_data/timezone",
            format!("unknown time zone '{}'", s.market_data.timezone.0),
        );
    }
    if let Some(start) = &s.market_data.start
        && parse_start(start).is_none()
    {
        r.error(
            "invalid-setting",
            "/market_data/start",
            format!("'{start}' is not a date (YYYY-MM-DD) or an RFC 3339 time"),
        );
    }
    for (name, broker) in &s.brokers {
        let pointer = format!("/brokers/{}", escape_token(name));
        if !is_valid_name(name) {
            r.error_at_key(
                "invalid-setting",
                &pointer,
                format!("broker name '{name}' must match ^[a-z0-9][a-z0-9-]{{0,62}}$"),
            );
        }
        if let BrokerSettings::Alpaca(a) = broker
            && let Some(url) = &a.base_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            r.error(
                "invalid-setting",
                &format!("{pointer}/base_url"),
                format!("'{url}' is not an http(s) URL"),
            );
        }
    }
    for (name, llm) in &s.llm {
        let pointer = format!("/llm/{}", escape_token(name));
        if !is_valid_name(name) {
            r.error_at_key(
                "invalid-setting",
                &pointer,
                format!("provider name '{name}' must match ^[a-z0-9][a-z0-9-]{{0,62}}$"),
            );
        }
        if !(llm.base_url.starts_with("https://") || llm.base_url.starts_with("http://")) {
            r.error(
                "invalid-setting",
                &format!("{pointer}/base_url"),
                format!("'{}' is not an http(s) URL", llm.base_url),
            );
        }
    }
    let kind = match s.market_data.source {
        MarketDataSource::Replay => None,
        MarketDataSource::Alpaca => Some("alpaca"),
        MarketDataSource::Ibkr => Some("ibkr"),
    };
    if let Some(kind) = kind {
        match s.market_data.broker.as_ref().map(|b| (b, s.brokers.get(b))) {
            None => r.error("missing-broker", "/market_data/source", format!("market data from {kind} needs `broker`, the [brokers.<name>] connection that serves it")),
            Some((b, None)) => r.error("unknown-broker", "/market_data/broker", format!("unknown broker '{b}'")),
            Some((b, Some(settings))) if settings.kind() != kind => r.error(
                "broker-mode",
                "/market_data/broker",
                format!("broker '{b}' is {}, but market data comes from {kind}", settings.kind()),
            ),
            _ => {}
        }
    }
    if s.reconcile.debounce.std().is_zero() {
        r.error(
            "out-of-range",
            "/reconcile/debounce",
            "the debounce must be longer than 0s",
        );
    }
    if s.reconcile.resync_interval.as_secs() < 1 {
        r.error(
            "out-of-range",
            "/reconcile/resync_interval",
            "the resync interval must be at least 1s",
        );
    }
}

/// Parses `market_data.start`: a date (midnight in the data time zone is applied by the
/// caller) or an RFC 3339 time.
pub fn parse_start(s: &str) -> Option<StartPoint> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(StartPoint::Date(d));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| StartPoint::Time(t.with_timezone(&chrono::Utc)))
}

/// Where a replay starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPoint {
    /// Local midnight of this date.
    Date(chrono::NaiveDate),
    /// This instant.
    Time(chrono::DateTime<chrono::Utc>),
}

struct Context<'a> {
    set: &'a ConfigSet,
}

/// What an expression may read: indicators per timeframe and extra names.
struct Available<'a> {
    own: Timeframe,
    per_tf: &'a BTreeMap<Timeframe, Vec<(IndicatorSpec, String)>>,
    extra: &'a [&'a str],
}

impl Available<'_> {
    fn resolve(&self, tf: Option<Timeframe>, name: &str) -> Resolution {
        let tf_given = tf.is_some();
        let tf = tf.unwrap_or(self.own);
        let Some(specs) = self.per_tf.get(&tf) else {
            return Resolution::Unknown(
                "timeframe-not-provided",
                format!(
                    "'{}.{name}' reads the {tf} timeframe, which no upstream market_data node provides",
                    tf.expr_prefix()
                ),
            );
        };
        if BAR_FIELDS.contains(&name) || (!tf_given && self.extra.contains(&name)) {
            return Resolution::Slot(0);
        }
        let mut short_matches = 0;
        for (spec, _) in specs {
            if spec.outputs().iter().any(|o| o == name) {
                return Resolution::Slot(0);
            }
            if spec.short_outputs().contains(&name) {
                short_matches += 1;
            }
        }
        match short_matches {
            1 => return Resolution::Slot(0),
            n if n > 1 => {
                let qualified: Vec<String> = specs
                    .iter()
                    .filter(|(s, _)| s.short_outputs().contains(&name))
                    .filter_map(|(s, _)| {
                        let i = s.short_outputs().iter().position(|o| *o == name)?;
                        s.outputs().get(i).cloned()
                    })
                    .collect();
                return Resolution::Unknown(
                    "unknown-identifier",
                    format!(
                        "'{name}' is ambiguous: several indicators of that family are computed on {tf}; write one of {}",
                        qualified.join(", ")
                    ),
                );
            }
            _ => {}
        }
        if IndicatorSpec::providing(name).is_some() {
            let nodes: BTreeSet<&str> = specs.iter().map(|(_, node)| node.as_str()).collect();
            let hint = if nodes.is_empty() {
                String::new()
            } else {
                format!(
                    " (add it to the indicators of market_data node '{}')",
                    nodes.into_iter().collect::<Vec<_>>().join("', '")
                )
            };
            return Resolution::Unknown(
                "indicator-not-provided",
                format!(
                    "unknown identifier '{name}': no upstream market_data node computes it on {tf}{hint}"
                ),
            );
        }
        let mut known: Vec<String> = BAR_FIELDS.iter().map(|s| s.to_string()).collect();
        for (spec, _) in specs {
            known.extend(spec.outputs());
            known.extend(spec.short_outputs().iter().map(|s| s.to_string()));
        }
        if !tf_given {
            known.extend(self.extra.iter().map(|s| s.to_string()));
        }
        Resolution::Unknown(
            "unknown-identifier",
            format!("unknown identifier '{name}'{}", suggestion(name, &known)),
        )
    }
}

fn check_expr(
    r: &mut Reporter<'_>,
    pointer: &str,
    source: &str,
    want: Ty,
    available: &Available<'_>,
) {
    let mut resolver = |tf: Option<Timeframe>, name: &str| available.resolve(tf, name);
    if let Err(errors) = expr::compile(source, want, &mut resolver) {
        for e in errors {
            r.error_in_scalar(e.code, pointer, e.offset, e.message);
        }
    }
}

impl Context<'_> {
    fn settings(&self) -> &Settings {
        &self.set.settings
    }

    fn pipeline(&self, res: &Resource<Pipeline>, out: &mut Vec<Finding>) {
        let Some(p) = &res.spec else { return };
        let mut r = Reporter {
            file: &res.file,
            doc: &res.doc,
            out,
        };
        let reference_severity = if p.enabled {
            Severity::Error
        } else {
            Severity::Warning
        };
        let dangling = |code: &'static str| {
            if p.enabled {
                code
            } else {
                "disabled-dangling-reference"
            }
        };

        // Symbols: exactly one of scanner / symbols.
        // Presence in the document, not in the typed value: a value the schema rejected
        // was there, so "neither" would be a second, misleading finding.
        let present = |pointer: &str| res.doc.value.pointer(pointer).is_some();
        match (present("/scanner"), present("/symbols")) {
            (true, true) => r.error(
                "symbols-source",
                "/symbols",
                "set either `scanner` or `symbols`, not both",
            ),
            (false, false) => {
                let stock_picker = p.nodes.iter().any(|n| n.kind() == AgentKind::StockPicker);
                if !stock_picker {
                    r.error("symbols-source", "", "the pipeline trades nothing: set `scanner` or `symbols` (or pick symbols with a stock_picker node)");
                }
            }
            _ => {}
        }
        let complete = self.set.complete;
        if let Some(scanner) = &p.scanner
            && complete
            && !self.set.scanners.contains_key(scanner)
        {
            let known: Vec<String> = self.set.scanners.keys().cloned().collect();
            r.report(
                reference_severity,
                dangling("unknown-scanner"),
                "/scanner",
                format!(
                    "unknown scanner '{scanner}' (no scanners/{scanner}.yaml){}",
                    suggestion(scanner, &known)
                ),
            );
        }
        let policy = p
            .risk
            .as_ref()
            .and_then(|name| self.set.risk.get(name))
            .and_then(|r| r.spec.as_ref());
        if let Some(risk) = &p.risk
            && complete
            && !self.set.risk.contains_key(risk)
        {
            let known: Vec<String> = self.set.risk.keys().cloned().collect();
            r.report(
                reference_severity,
                dangling("unknown-risk-policy"),
                "/risk",
                format!(
                    "unknown risk policy '{risk}' (no risk/{risk}.yaml){}",
                    suggestion(risk, &known)
                ),
            );
        }
        if p.risk.is_none()
            && let Some(i) = p
                .nodes
                .iter()
                .position(|n| n.kind() == AgentKind::RiskManager)
        {
            r.error("missing-risk-policy", &format!("/nodes/{i}/agent"), "a risk_manager node needs the pipeline's `risk` policy; name one with `risk: <name>`");
        }
        self.check_broker(p, &mut r, reference_severity);
        self.check_trigger(p, &mut r);
        if let Some(w) = &p.window {
            let start = w.start.parse();
            let end = w.end.parse();
            if start.is_none() {
                r.error(
                    "invalid-clock-time",
                    "/window/start",
                    format!(
                        "'{}' is not a time of day (HH:MM or HH:MM:SS, 00:00 to 23:59:59)",
                        w.start.0
                    ),
                );
            }
            if end.is_none() {
                r.error(
                    "invalid-clock-time",
                    "/window/end",
                    format!(
                        "'{}' is not a time of day (HH:MM or HH:MM:SS, 00:00 to 23:59:59)",
                        w.end.0
                    ),
                );
            }
            if let (Some(s), Some(e)) = (start, end)
                && s >= e
            {
                r.error(
                    "invalid-value",
                    "/window/end",
                    format!(
                        "the window ends ({}) before or when it starts ({})",
                        w.end.0, w.start.0
                    ),
                );
            }
            if w.timezone.parse().is_none() {
                r.error(
                    "unknown-timezone",
                    "/window/timezone",
                    format!("unknown time zone '{}'", w.timezone.0),
                );
            }
        }
        self.check_nodes(p, policy, &mut r, reference_severity);
        self.check_loss_limits(p, policy, &mut r);
    }

    fn check_broker(&self, p: &Pipeline, r: &mut Reporter<'_>, severity: Severity) {
        if !self.set.settings_ok {
            return;
        }
        let brokers = &self.settings().brokers;
        let name = match (&p.broker, p.mode) {
            (Some(b), _) => b.clone(),
            (None, Mode::Live | Mode::Paper) => {
                r.error("missing-broker", "/mode", format!("a {} pipeline needs `broker`: an alpaca or ibkr [brokers.<name>] entry of ztraded.toml", p.mode.as_str()));
                return;
            }
            (None, Mode::Simulation) => "sim".to_string(),
            (None, Mode::Validation) => return,
        };
        let pointer = if p.broker.is_some() {
            "/broker"
        } else {
            "/mode"
        };
        let Some(broker) = brokers.get(&name) else {
            let known: Vec<String> = brokers.keys().cloned().collect();
            let code = if severity == Severity::Error {
                "unknown-broker"
            } else {
                "disabled-dangling-reference"
            };
            r.report(
                severity,
                code,
                pointer,
                format!(
                    "unknown broker '{name}': ztraded.toml has no [brokers.{name}]{}",
                    suggestion(&name, &known)
                ),
            );
            return;
        };
        match (p.mode, broker.is_paper()) {
            (Mode::Live | Mode::Paper, None) => r.error(
                "broker-mode",
                pointer,
                format!("broker '{name}' is simulated; a {} pipeline needs an alpaca or ibkr broker", p.mode.as_str()),
            ),
            (Mode::Live, Some(true)) => r.error("broker-mode", pointer, format!("broker '{name}' is a paper account; a live pipeline needs a live account (paper = false)")),
            (Mode::Paper, Some(false)) => r.error("broker-mode", pointer, format!("broker '{name}' is a live account; a paper pipeline needs a paper account (paper = true)")),
            (Mode::Simulation, Some(_)) => r.error(
                "broker-mode",
                pointer,
                format!("broker '{name}' is a real {} account; simulation fills in-process and needs a simulated broker", broker.kind()),
            ),
            _ => {}
        }
    }

    fn check_trigger(&self, p: &Pipeline, r: &mut Reporter<'_>) {
        let present = |pointer: &str| r.doc.value.pointer(pointer).is_some();
        let kinds: Vec<&str> = ["bar_close", "schedule", "signal", "continuous", "once"]
            .into_iter()
            .filter(|k| present(&format!("/trigger/{k}")))
            .collect();
        if kinds.len() != 1 {
            let msg = if kinds.is_empty() {
                "set exactly one trigger: bar_close, schedule, signal, continuous or once"
                    .to_string()
            } else {
                format!("set exactly one trigger, found {}", kinds.join(" and "))
            };
            r.error("trigger-kind", "/trigger", msg);
        }
        if let Some(s) = &p.trigger.schedule {
            let kinds: Vec<&str> = ["cron", "interval", "market_open"]
                .into_iter()
                .filter(|k| present(&format!("/trigger/schedule/{k}")))
                .collect();
            if kinds.len() != 1 {
                let msg = if kinds.is_empty() {
                    "a schedule needs exactly one of cron, interval, market_open".to_string()
                } else {
                    format!(
                        "a schedule needs exactly one of cron, interval, market_open; found {}",
                        kinds.join(" and ")
                    )
                };
                r.error("schedule-kind", "/trigger/schedule", msg);
            }
            if let Some(cron) = &s.cron
                && let Err(message) = check_cron(cron)
            {
                r.error("invalid-cron", "/trigger/schedule/cron", message);
            }
            if let Some(i) = &s.interval
                && i.std().is_zero()
            {
                r.error(
                    "out-of-range",
                    "/trigger/schedule/interval",
                    "the interval must be longer than 0s",
                );
            }
            if s.timezone.parse().is_none() {
                r.error(
                    "unknown-timezone",
                    "/trigger/schedule/timezone",
                    format!("unknown time zone '{}'", s.timezone.0),
                );
            }
        }
    }

    fn check_loss_limits(
        &self,
        p: &Pipeline,
        policy: Option<&super::risk::RiskPolicy>,
        r: &mut Reporter<'_>,
    ) {
        let Some(policy) = policy else { return };
        let broker_name = p.broker.clone().unwrap_or_else(|| "sim".to_string());
        let Some(BrokerSettings::Simulated(sim)) = self.settings().brokers.get(&broker_name) else {
            return;
        };
        if p.mode == Mode::Validation && p.broker.is_none() {
            return;
        }
        let risk_usd = sim.initial_balance * policy.sizing.risk_per_trade_pct.fraction();
        let limits: [(Option<Decimal>, &str, &str); 2] = [
            (
                p.limits.as_ref().and_then(|l| l.daily_loss_usd),
                "/limits/daily_loss_usd",
                "the pipeline's",
            ),
            (policy.limits.daily_loss_usd, "/risk", "the risk policy's"),
        ];
        for (limit, pointer, whose) in limits {
            if let Some(limit) = limit
                && risk_usd > limit
            {
                r.warning(
                    "stop-wider-than-daily-loss",
                    pointer,
                    format!(
                        "one stopped-out trade can lose {} USD ({} of {} USD equity), more than {whose} daily loss limit of {} USD",
                        risk_usd.round_dp(2).normalize(),
                        policy.sizing.risk_per_trade_pct,
                        sim.initial_balance.normalize(),
                        limit.normalize()
                    ),
                );
            }
        }
    }

    fn check_nodes(
        &self,
        p: &Pipeline,
        policy: Option<&super::risk::RiskPolicy>,
        r: &mut Reporter<'_>,
        severity: Severity,
    ) {
        let n = p.nodes.len();
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, node) in p.nodes.iter().enumerate() {
            if let Some(first) = index.get(node.id.as_str()) {
                r.error(
                    "duplicate-node-id",
                    &format!("/nodes/{i}/id"),
                    format!("node id '{}' is already used by node {}", node.id, first),
                );
            } else {
                index.insert(&node.id, i);
            }
        }
        // Edges: needs (default: the previous node).
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut graph_ok = true;
        for (i, node) in p.nodes.iter().enumerate() {
            match &node.needs {
                None => {
                    if i > 0 {
                        parents[i].push(i - 1);
                    }
                }
                Some(needs) => {
                    for (j, need) in needs.iter().enumerate() {
                        match index.get(need.as_str()) {
                            Some(&k) if k == i => {
                                r.error(
                                    "dag-cycle",
                                    &format!("/nodes/{i}/needs/{j}"),
                                    format!("node '{}' needs itself", node.id),
                                );
                                graph_ok = false;
                            }
                            Some(&k) => parents[i].push(k),
                            None => {
                                let known: Vec<String> =
                                    index.keys().map(|s| s.to_string()).collect();
                                r.error(
                                    "unknown-need",
                                    &format!("/nodes/{i}/needs/{j}"),
                                    format!("no node has id '{need}'{}", suggestion(need, &known)),
                                );
                                // The graph is incomplete: upstream checks would mislead.
                                graph_ok = false;
                            }
                        }
                    }
                }
            }
        }
        if graph_ok && let Some(cycle) = find_cycle(&parents) {
            let names: Vec<&str> = cycle.iter().map(|i| p.nodes[*i].id.as_str()).collect();
            let first = cycle[0];
            r.error(
                "dag-cycle",
                &format!("/nodes/{first}/needs"),
                format!(
                    "the nodes form a cycle: {} → {}",
                    names.join(" → "),
                    names[0]
                ),
            );
            graph_ok = false;
        }
        // Ancestors of each node.
        let ancestors: Vec<BTreeSet<usize>> = if graph_ok {
            (0..n)
                .map(|i| {
                    let mut seen = BTreeSet::new();
                    let mut stack = parents[i].clone();
                    while let Some(k) = stack.pop() {
                        if seen.insert(k) {
                            stack.extend(parents[k].iter().copied());
                        }
                    }
                    seen
                })
                .collect()
        } else {
            vec![BTreeSet::new(); n]
        };
        let settings_ok = self.set.settings_ok;
        let llm = &self.settings().llm;
        let check_provider = |r: &mut Reporter<'_>, pointer: &str, provider: &str| {
            if settings_ok && !llm.contains_key(provider) {
                let known: Vec<String> = llm.keys().cloned().collect();
                let code = if severity == Severity::Error {
                    "unknown-llm-provider"
                } else {
                    "disabled-dangling-reference"
                };
                r.report(
                    severity,
                    code,
                    pointer,
                    format!(
                        "unknown LLM provider '{provider}': ztraded.toml has no [llm.{provider}]{}",
                        suggestion(provider, &known)
                    ),
                );
            }
        };
        // Indicators provided upstream, per node.
        for (i, node) in p.nodes.iter().enumerate() {
            let base = format!("/nodes/{i}/config");
            if let AgentConfig::MarketData(c) = &node.agent {
                for (j, ind) in c.indicators.iter().enumerate() {
                    if let Err(e) = ind.parse::<IndicatorSpec>() {
                        r.error(
                            "invalid-indicator",
                            &format!("{base}/indicators/{j}"),
                            format!("{}: {}", e.name, e.reason),
                        );
                    }
                }
            }
            let mut per_tf: BTreeMap<Timeframe, Vec<(IndicatorSpec, String)>> = BTreeMap::new();
            let mut first_tf = None;
            let mut has_market_data = false;
            for &a in &ancestors[i] {
                if let AgentConfig::MarketData(c) = &p.nodes[a].agent {
                    has_market_data = true;
                    for tf in &c.timeframes {
                        let specs = per_tf.entry(*tf).or_default();
                        for ind in &c.indicators {
                            if let Ok(spec) = ind.parse::<IndicatorSpec>()
                                && !specs.iter().any(|(s, _)| *s == spec)
                            {
                                specs.push((spec, p.nodes[a].id.clone()));
                            }
                        }
                    }
                }
            }
            // The first timeframe of the nearest-declared upstream market_data node.
            for &a in ancestors[i].iter() {
                if let AgentConfig::MarketData(c) = &p.nodes[a].agent {
                    first_tf = c.timeframes.first().copied();
                    break;
                }
            }
            let needs_data = |r: &mut Reporter<'_>| {
                if graph_ok && !has_market_data {
                    r.error("missing-market-data", &format!("/nodes/{i}/agent"), format!("a {} node needs an upstream market_data node (list it in `needs`, or put one before it)", node.kind().as_str()));
                }
            };
            let tf_provided = |r: &mut Reporter<'_>, pointer: &str, tf: Timeframe| {
                if graph_ok && has_market_data && !per_tf.contains_key(&tf) {
                    r.error("timeframe-not-provided", pointer, format!("no upstream market_data node provides the {tf} timeframe (add it to its `timeframes`)"));
                    false
                } else {
                    true
                }
            };
            let run_exprs =
                |r: &mut Reporter<'_>,
                 tf: Timeframe,
                 exprs: &[(&str, &Option<String>, Ty, &[&str])]| {
                    if !graph_ok || !has_market_data || !per_tf.contains_key(&tf) {
                        return;
                    }
                    for (field, source, ty, extra) in exprs {
                        if let Some(source) = source {
                            let available = Available {
                                own: tf,
                                per_tf: &per_tf,
                                extra,
                            };
                            check_expr(r, &format!("{base}/{field}"), source, *ty, &available);
                        }
                    }
                };
            match &node.agent {
                AgentConfig::TimeTrigger(c) => {
                    for (field, t) in [("after", &c.after), ("before", &c.before)] {
                        if let Some(t) = t
                            && t.parse().is_none()
                        {
                            r.error("invalid-clock-time", &format!("{base}/{field}"), format!("'{}' is not a time of day (HH:MM or HH:MM:SS, 00:00 to 23:59:59)", t.0));
                        }
                    }
                    if c.timezone.parse().is_none() {
                        r.error(
                            "unknown-timezone",
                            &format!("{base}/timezone"),
                            format!("unknown time zone '{}'", c.timezone.0),
                        );
                    }
                    if let (Some(a), Some(b)) = (&c.after, &c.before)
                        && a.parse().is_some()
                        && a.parse() == b.parse()
                    {
                        r.error(
                            "invalid-value",
                            &format!("{base}/before"),
                            format!(
                                "`after` and `before` are both {}: the gate never opens",
                                a.0
                            ),
                        );
                    }
                }
                AgentConfig::PriceTrigger(c) => {
                    needs_data(r);
                    if let Some(tf) = c.timeframe.or(first_tf) {
                        let ok = c.timeframe.is_none()
                            || tf_provided(r, &format!("{base}/timeframe"), tf);
                        if ok {
                            run_exprs(r, tf, &[("when", &Some(c.when.clone()), Ty::Bool, &[])]);
                        }
                    }
                }
                AgentConfig::TechnicalTrigger(c) => {
                    needs_data(r);
                    if let Some(tf) = c.timeframe.or(first_tf) {
                        let ok = c.timeframe.is_none()
                            || tf_provided(r, &format!("{base}/timeframe"), tf);
                        if ok {
                            run_exprs(r, tf, &[("when", &Some(c.when.clone()), Ty::Bool, &[])]);
                        }
                    }
                }
                AgentConfig::StockPicker(c) => {
                    if self.set.complete && !self.set.scanners.contains_key(&c.scanner) {
                        let known: Vec<String> = self.set.scanners.keys().cloned().collect();
                        let code = if severity == Severity::Error {
                            "unknown-scanner"
                        } else {
                            "disabled-dangling-reference"
                        };
                        r.report(
                            severity,
                            code,
                            &format!("{base}/scanner"),
                            format!(
                                "unknown scanner '{}'{}",
                                c.scanner,
                                suggestion(&c.scanner, &known)
                            ),
                        );
                    }
                }
                AgentConfig::MarketData(_) => {}
                AgentConfig::Bias(BiasConfig::Rules(c)) => {
                    needs_data(r);
                    if let Some(tf) = c.timeframe.or(first_tf) {
                        let ok = c.timeframe.is_none()
                            || tf_provided(r, &format!("{base}/timeframe"), tf);
                        if ok {
                            run_exprs(
                                r,
                                tf,
                                &[
                                    ("bullish", &Some(c.bullish.clone()), Ty::Bool, &[]),
                                    ("bearish", &c.bearish, Ty::Bool, &[]),
                                ],
                            );
                        }
                    }
                }
                AgentConfig::Bias(BiasConfig::Llm(c)) => {
                    needs_data(r);
                    check_provider(r, &format!("{base}/provider"), &c.provider);
                    for (j, tf) in c.timeframes.iter().enumerate() {
                        tf_provided(r, &format!("{base}/timeframes/{j}"), *tf);
                    }
                }
                AgentConfig::Strategy(StrategyConfig::Rules(c)) => {
                    needs_data(r);
                    if tf_provided(r, &format!("{base}/timeframe"), c.timeframe) {
                        run_exprs(
                            r,
                            c.timeframe,
                            &[
                                ("long_entry", &c.long_entry, Ty::Bool, &[]),
                                ("long_exit", &c.long_exit, Ty::Bool, &EXIT_FIELDS),
                                ("stop_loss", &c.stop_loss, Ty::Number, &[]),
                                ("target_1", &c.target_1, Ty::Number, &[]),
                                ("target_2", &c.target_2, Ty::Number, &[]),
                                ("short_entry", &c.short_entry, Ty::Bool, &[]),
                                ("short_exit", &c.short_exit, Ty::Bool, &EXIT_FIELDS),
                                ("short_stop_loss", &c.short_stop_loss, Ty::Number, &[]),
                                ("short_target_1", &c.short_target_1, Ty::Number, &[]),
                                ("short_target_2", &c.short_target_2, Ty::Number, &[]),
                                ("entry_price", &c.entry_price, Ty::Number, &[]),
                            ],
                        );
                    }
                    if c.long_entry.is_none() && c.short_entry.is_none() {
                        r.error(
                            "no-entry-rule",
                            &base,
                            "a rules strategy needs `long_entry`, `short_entry` or both",
                        );
                    }
                    let require_stop = policy.is_none_or(|p| p.trade.require_stop_loss);
                    if require_stop && c.long_entry.is_some() && c.stop_loss.is_none() {
                        r.error("missing-stop-loss", &format!("{base}/long_entry"), "long entries need a `stop_loss` level: the risk policy requires a stop (require_stop_loss)");
                    }
                    if require_stop && c.short_entry.is_some() && c.short_stop_loss.is_none() {
                        r.error("missing-stop-loss", &format!("{base}/short_entry"), "short entries need a `short_stop_loss` level: the risk policy requires a stop (require_stop_loss)");
                    }
                    if c.short_entry.is_some()
                        && let Some(policy) = policy
                        && !policy.trade.allow_short
                    {
                        r.warning("suspicious-config", &format!("{base}/short_entry"), format!("every short entry will be rejected: risk policy '{}' does not allow shorts (allow_short: false)", p.risk.as_deref().unwrap_or_default()));
                    }
                }
                AgentConfig::Strategy(StrategyConfig::Llm(c)) => {
                    needs_data(r);
                    check_provider(r, &format!("{base}/provider"), &c.provider);
                    tf_provided(r, &format!("{base}/timeframe"), c.timeframe);
                }
                AgentConfig::RiskManager(_) => {}
                AgentConfig::TradeManager(_) => {
                    let has_risk = ancestors[i]
                        .iter()
                        .any(|a| p.nodes[*a].kind() == AgentKind::RiskManager);
                    if graph_ok && !has_risk {
                        r.error("missing-risk-manager", &format!("/nodes/{i}/agent"), "a trade_manager node needs an upstream risk_manager node: only risk-approved orders reach a broker");
                    }
                }
                AgentConfig::Reporting(c) => {
                    if c.summary == super::pipeline::Summary::Llm {
                        match &c.provider {
                            Some(provider) => {
                                check_provider(r, &format!("{base}/provider"), provider)
                            }
                            None => {
                                r.error("missing-field", &base, "summary: llm needs `provider`")
                            }
                        }
                    }
                }
            }
        }
        // The bar_close trigger's timeframe must be provided by some market_data node.
        if let Some(bc) = &p.trigger.bar_close {
            let provided = p.nodes.iter().any(|n| matches!(&n.agent, AgentConfig::MarketData(c) if c.timeframes.contains(&bc.timeframe)));
            if !provided {
                r.error(
                    "timeframe-not-provided",
                    "/trigger/bar_close/timeframe",
                    format!(
                        "the trigger waits for {} bars, but no market_data node provides {}",
                        bc.timeframe, bc.timeframe
                    ),
                );
            }
        }
    }

    fn scanner(&self, res: &Resource<Scanner>, out: &mut Vec<Finding>) {
        let Some(s) = &res.spec else { return };
        let mut r = Reporter {
            file: &res.file,
            doc: &res.doc,
            out,
        };
        match (&s.tickers, &s.universe) {
            (Some(_), Some(_)) => r.error(
                "symbols-source",
                "/universe",
                "set either `tickers` (a manual list) or `universe` (with filters), not both",
            ),
            (None, None) => r.error(
                "symbols-source",
                "",
                "a scanner needs `tickers` (a manual list) or `universe` (with filters)",
            ),
            _ => {}
        }
        // Indicators named in filters are computed on demand: any indicator name is known.
        let mut per_tf: BTreeMap<Timeframe, Vec<(IndicatorSpec, String)>> = BTreeMap::new();
        let mut names: BTreeSet<String> = BTreeSet::new();
        for source in s.filters.iter().chain(s.rank_by.iter()) {
            for token in source.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if let Some(spec) = IndicatorSpec::providing(token)
                    && names.insert(spec.name())
                {
                    per_tf
                        .entry(s.timeframe)
                        .or_default()
                        .push((spec, String::new()));
                }
            }
        }
        per_tf.entry(s.timeframe).or_default();
        let available = Available {
            own: s.timeframe,
            per_tf: &per_tf,
            extra: &[],
        };
        for (i, f) in s.filters.iter().enumerate() {
            check_expr(&mut r, &format!("/filters/{i}"), f, Ty::Bool, &available);
        }
        if let Some(rank) = &s.rank_by {
            check_expr(&mut r, "/rank_by", rank, Ty::Number, &available);
        }
        for (i, g) in s.signals.iter().enumerate() {
            let pointer = format!("/signals/{i}/params");
            match &g.kind {
                SignalKind::GoldenCross(c) | SignalKind::DeathCross(c) if c.fast >= c.slow => {
                    r.error(
                        "invalid-value",
                        &pointer,
                        format!(
                            "the fast period ({}) must be shorter than the slow one ({})",
                            c.fast, c.slow
                        ),
                    );
                }
                SignalKind::MacdCross(c) if c.fast >= c.slow => {
                    r.error(
                        "invalid-value",
                        &pointer,
                        format!(
                            "the fast period ({}) must be shorter than the slow one ({})",
                            c.fast, c.slow
                        ),
                    );
                }
                _ => {}
            }
        }
    }
}

/// A cycle in the parent graph, as node indices in order, if there is one.
fn find_cycle(parents: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = parents.len();
    let mut mark = vec![Mark::New; n];
    let mut stack: Vec<usize> = Vec::new();
    fn visit(
        i: usize,
        parents: &[Vec<usize>],
        mark: &mut [Mark],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        mark[i] = Mark::Active;
        stack.push(i);
        for &p in &parents[i] {
            match mark[p] {
                Mark::Active => {
                    let start = stack.iter().position(|x| *x == p).unwrap_or(0);
                    let mut cycle: Vec<usize> = stack[start..].to_vec();
                    cycle.reverse();
                    let min = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, v)| **v)
                        .map_or(0, |(k, _)| k);
                    cycle.rotate_left(min);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(p, parents, mark, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        mark[i] = Mark::Done;
        None
    }
    for i in 0..n {
        if mark[i] == Mark::New
            && let Some(c) = visit(i, parents, &mut mark, &mut stack)
        {
            return Some(c);
        }
    }
    None
}

/// Checks a 6-field cron expression (seconds first) with the `cron` crate.
///
/// # Errors
/// What is wrong with it.
pub fn check_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "'{expr}' has {fields} fields; write 6: second minute hour day-of-month month day-of-week (as in \"0 35 9 * * Mon-Fri\")"
        ));
    }
    expr.parse::<cron::Schedule>()
        .map_err(|e| format!("'{expr}' is not a valid cron expression: {e}"))
}
