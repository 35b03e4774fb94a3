//! `ztraded signal publish`: puts an external signal on the bus of a config directory
//! (`[bus] url` of its ztraded.toml, or `ZTRADED_BUS__URL`), the same `XADD` any producer
//! may send (fields `id type ticker direction confidence timestamp source`). The
//! deployment's consumer group is created first when it does not exist yet, so the signal
//! waits for the deployment's daemons even when none runs.

use super::{EXIT_OK, EXIT_USAGE};
use crate::bus::{Bus, BusConfig, BusError};
use crate::config::load::{load_settings_of, process_env};
use crate::signals::Signal;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// The signal's fields from the command line.
#[derive(Clone, Debug)]
pub struct PublishArgs {
    /// `--type`.
    pub signal_type: String,
    /// `--ticker`.
    pub ticker: String,
    /// `--confidence`, 0–100.
    pub confidence: f64,
    /// `--direction`: long or short.
    pub direction: String,
    /// `--source`.
    pub source: String,
    /// `--id` (default `cli-<type>-<ticker>-<unix ms>`).
    pub id: Option<String>,
    /// `--timestamp`: Unix seconds or RFC 3339 (default now).
    pub timestamp: Option<String>,
}

/// The signal `args` describe, checked like an entry read from the stream.
///
/// # Errors
/// What is wrong, naming the option.
pub fn signal_of(args: &PublishArgs, now_ms: i64) -> Result<Signal, String> {
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("cli-{}-{}-{now_ms}", args.signal_type, args.ticker));
    let mut fields = BTreeMap::from([
        ("id".to_string(), id),
        ("type".to_string(), args.signal_type.clone()),
        ("ticker".to_string(), args.ticker.clone()),
        ("direction".to_string(), args.direction.clone()),
        ("confidence".to_string(), args.confidence.to_string()),
        ("source".to_string(), args.source.clone()),
    ]);
    if let Some(t) = &args.timestamp {
        fields.insert("timestamp".to_string(), t.clone());
    }
    Signal::from_fields(&fields, "", now_ms.div_euclid(1000)).map_err(|e| format!("--{e}"))
}

/// Runs `ztraded signal publish`; returns the exit code (0 published, 2 otherwise).
pub async fn publish(
    dir: &Path,
    args: PublishArgs,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let (settings, ok, findings) = load_settings_of(dir, &process_env());
    if !ok {
        for f in &findings {
            let _ = writeln!(err, "{}", f.human());
        }
        let _ = writeln!(err, "ztraded signal publish: the settings are invalid");
        return EXIT_USAGE;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let signal = match signal_of(&args, now_ms) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "ztraded signal publish: {e}");
            return EXIT_USAGE;
        }
    };
    let config = BusConfig::from_settings(&settings.bus);
    let bus = match Bus::connect(config.clone()).await {
        Ok(Bus::Memory(_)) => {
            let _ = writeln!(err, "ztraded signal publish: {}", BusError::InProcess);
            return EXIT_USAGE;
        }
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(err, "ztraded signal publish: {e}");
            return EXIT_USAGE;
        }
    };
    match bus.publish(&signal).await {
        Ok(entry) => {
            if json {
                let v = serde_json::json!({
                    "stream": config.stream,
                    "entry": entry,
                    "signal": signal,
                });
                let _ = writeln!(out, "{v}");
            } else {
                let _ = writeln!(
                    out,
                    "published {} {} {} confidence {} on {} as {entry}",
                    signal.signal_type,
                    signal.ticker,
                    signal.direction.as_str(),
                    signal.confidence,
                    config.stream
                );
            }
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(err, "ztraded signal publish: {e}");
            EXIT_USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> PublishArgs {
        PublishArgs {
            signal_type: "news".into(),
            ticker: "AAPL".into(),
            confidence: 80.0,
            direction: "long".into(),
            source: "cli".into(),
            id: None,
            timestamp: None,
        }
    }

    #[test]
    fn the_options_make_a_checked_signal() {
        let s = signal_of(&args(), 1_700_000_000_123).unwrap();
        assert_eq!(s.id, "cli-news-AAPL-1700000000123");
        assert_eq!(s.timestamp, 1_700_000_000);
        let bad = PublishArgs {
            confidence: 120.0,
            ..args()
        };
        assert!(signal_of(&bad, 0).unwrap_err().contains("--confidence"));
    }
}
