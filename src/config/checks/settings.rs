//! Settings checks: what the settings schema cannot say, and secrets written as values.

use crate::config::common::is_valid_name;
use crate::config::finding::{Finding, Reporter, Severity, dotted};
use crate::config::settings::{BrokerSettings, MarketDataSource, Settings};
use crate::config::yaml::{Document, escape_token};
use serde_json::Value;

/// Reports settings findings: at the settings file's line for values from the file, at the
/// environment variable for values a `ZTRADED_*` variable set.
pub struct SettingsReporter<'a, 'b> {
    /// Findings in the settings file.
    pub file: Reporter<'a>,
    /// `(JSON pointer, variable)` of every setting a variable sets (see
    /// [`crate::config::settings::env_overrides`]).
    pub env: &'b [(String, String)],
}

impl SettingsReporter<'_, '_> {
    /// The variable that sets the value at `pointer` (or a value around it).
    fn variable(&self, pointer: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(p, _)| pointer == p || pointer.starts_with(&format!("{p}/")))
            .map(|(_, var)| var.as_str())
    }

    fn env_finding(&mut self, var: &str, code: &'static str, pointer: &str, message: String) {
        self.file.out.push(env_finding(var, code, pointer, message));
    }

    /// An error at the value at `pointer`.
    pub fn error(&mut self, code: &'static str, pointer: &str, message: impl Into<String>) {
        match self.variable(pointer).map(str::to_string) {
            Some(var) => self.env_finding(&var, code, pointer, message.into()),
            None => self.file.error(code, pointer, message),
        }
    }

    /// An error at the key of the value at `pointer`.
    pub fn error_at_key(&mut self, code: &'static str, pointer: &str, message: impl Into<String>) {
        match self.variable(pointer).map(str::to_string) {
            Some(var) => self.env_finding(&var, code, pointer, message.into()),
            None => self.file.error_at_key(code, pointer, message),
        }
    }
}

/// A finding about the environment variable `var`: file `env VAR`, no line or column, so
/// that it prints as `env VAR: error[code]: setting: message`.
pub fn env_finding(var: &str, code: &'static str, pointer: &str, message: String) -> Finding {
    let message = if pointer.is_empty() {
        message
    } else {
        let dotted = dotted(pointer);
        if message.starts_with(&format!("{dotted}: ")) {
            message
        } else {
            format!("{dotted}: {message}")
        }
    };
    Finding {
        file: format!("env {var}"),
        line: 0,
        column: 0,
        severity: Severity::Error,
        code,
        path: pointer.to_string(),
        message,
    }
}

/// Checks the merged settings: addresses, URLs, time zones, dates, names, the market data
/// broker and the reconcile intervals. A value set by a `ZTRADED_*` variable is reported at
/// the variable (`env ZTRADED_HTTP__LISTEN`), not at the file line it overrides.
pub fn check_settings(s: &Settings, r: &mut SettingsReporter<'_, '_>) {
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
        && super::super::settings::parse_start(start).is_none()
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
        if let BrokerSettings::Alpaca(a) = broker {
            let urls = [
                ("trading_url", &a.trading_url, ["https://", "http://"]),
                ("data_url", &a.data_url, ["https://", "http://"]),
                ("stream_url", &a.stream_url, ["wss://", "ws://"]),
                ("data_stream_url", &a.data_stream_url, ["wss://", "ws://"]),
            ];
            for (field, url, schemes) in urls {
                if let Some(url) = url
                    && !schemes.iter().any(|p| url.starts_with(p))
                {
                    r.error(
                        "invalid-setting",
                        &format!("{pointer}/{field}"),
                        format!(
                            "'{url}' is not a {} URL",
                            schemes[0].trim_end_matches("://")
                        ),
                    );
                }
            }
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
    // A lease is renewed every third of its TTL, each Redis call given a third to answer.
    if s.bus.lease_ttl.std() < std::time::Duration::from_secs(1) {
        r.error(
            "out-of-range",
            "/bus/lease_ttl",
            "the lease TTL must be at least 1s (it is renewed every third of it)",
        );
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
