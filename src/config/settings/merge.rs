//! Merging the settings: embedded defaults, then the settings file, then `ZTRADED_*`
//! environment variables, with figment; and where each merged value came from.

use super::Settings;
use crate::config::yaml::escape_token;
use figment::Figment;
use figment::providers::Serialized;
use serde_json::Value;
use std::collections::BTreeMap;

/// The `ZTRADED_*` environment variables applied over the settings file, as
/// `(name, value)` pairs; the process environment by default ([`process_env`]).
pub type EnvVars = Vec<(String, String)>;

/// The `ZTRADED_*` variables of the process environment.
pub fn process_env() -> EnvVars {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("ZTRADED_"))
        .collect()
}

/// Where a setting came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingSource {
    /// The settings file, at this JSON pointer.
    File(String),
    /// This environment variable.
    Env(String),
}

/// The settings the `ZTRADED_<SECTION>__<KEY>` variables of `env` set, as
/// `(JSON pointer, variable name)` pairs: `ZTRADED_HTTP__LISTEN` sets `/http/listen`.
/// Variables without `__` (such as `ZTRADED_ADMIN_TOKEN`, a secret named by a setting) set
/// nothing.
pub fn env_overrides(env: &EnvVars) -> Vec<(String, String)> {
    env.iter()
        .filter_map(|(key, _)| {
            let rest = key.strip_prefix("ZTRADED_")?;
            if !rest.contains("__") {
                return None;
            }
            let pointer: String = rest
                .split("__")
                .map(|seg| format!("/{}", escape_token(&seg.to_lowercase())))
                .collect();
            Some((pointer, key.clone()))
        })
        .collect()
}

/// Merges the embedded defaults, the settings file's value and the `ZTRADED_*` variables
/// (`ZTRADED_STORE__URL` sets `store.url`) with figment.
///
/// # Errors
/// Each problem with the source it came from: the variable when one sets the value (or a
/// value around it), else the file's JSON pointer.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_with_a_double_underscore_set_settings() {
        let env = vec![
            (
                "ZTRADED_HTTP__LISTEN".to_string(),
                "127.0.0.1:1".to_string(),
            ),
            ("ZTRADED_ADMIN_TOKEN".to_string(), "x".to_string()),
        ];
        assert_eq!(
            env_overrides(&env),
            vec![(
                "/http/listen".to_string(),
                "ZTRADED_HTTP__LISTEN".to_string()
            )]
        );
        let s = merge_settings(&Value::Object(Default::default()), &env).unwrap();
        assert_eq!(s.http.listen, "127.0.0.1:1");
    }

    #[test]
    fn a_bad_variable_is_blamed_on_the_variable() {
        let env = vec![(
            "ZTRADED_STORE__MAX_CONNECTIONS".to_string(),
            "many".to_string(),
        )];
        let problems = merge_settings(&Value::Object(Default::default()), &env).unwrap_err();
        assert_eq!(
            problems[0].0,
            SettingSource::Env("ZTRADED_STORE__MAX_CONNECTIONS".into())
        );
    }
}
