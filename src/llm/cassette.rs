//! Recorded LLM answers, for backtests that are reproducible and free: a JSON-lines file
//! per pipeline (`recordings/<pipeline>.llm.jsonl` in the config directory by default), one
//! line per call: `{"key", "provider", "model", "request", "response"}`, where `key` is the
//! SHA-256 (hex) of the provider name, a newline and the request body as sent (the body is
//! built in a fixed field order, so the same prompt gives the same key on every run).
//!
//! - `record`: an answer already in the file is reused; any other request goes to the
//!   provider and its answer (whatever it is: a refusal is recorded too) is appended. Once
//!   the calls of the run cost `max_cost_usd`, further requests are refused (the node fails
//!   closed saying so).
//! - `replay`: only answers of the file are used, no request leaves the process; a missing
//!   one fails the node and is kept as the run's first miss, which the backtest reports as
//!   an error naming the node, the bar and the key.
//!
//! The daemon records the calls of its `validation` pipelines the same way, so a validation
//! run can be replayed as a backtest.

use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How a run uses recordings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LlmRun {
    /// Call the providers; record nothing.
    #[default]
    Live,
    /// Call the providers for answers not yet recorded and record them.
    Record,
    /// Use recorded answers only.
    Replay,
}

/// The key of a request: SHA-256 hex of `provider`, `\n`, the JSON body.
pub fn key(provider: &str, body: &Value) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(provider.as_bytes());
    h.update(b"\n");
    h.update(body.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// The default recording file of `pipeline` in config directory `root`.
pub fn default_path(root: &Path, pipeline: &str) -> PathBuf {
    root.join("recordings")
        .join(format!("{pipeline}.llm.jsonl"))
}

/// A request a replay had no answer for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Miss {
    /// Pipeline.
    pub pipeline: String,
    /// Node id.
    pub node: String,
    /// The bar (execution time), Unix seconds.
    pub at: i64,
    /// The request key.
    pub key: String,
}

/// One recording file in use.
pub struct Cassette {
    mode: LlmRun,
    path: PathBuf,
    answers: Mutex<HashMap<String, Value>>,
    file: Mutex<Option<std::fs::File>>,
    max_cost_usd: Option<Decimal>,
    spent: Mutex<Decimal>,
    miss: Mutex<Option<Miss>>,
}

impl std::fmt::Debug for Cassette {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cassette")
            .field("mode", &self.mode)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cassette {
    /// Opens `path` for `mode` (`Record` or `Replay`; `Live` opens nothing and answers
    /// `None`). A replay needs the file; a recording creates it (and its directory).
    ///
    /// # Errors
    /// The file cannot be read or created, or a line of it is not a recording (the message
    /// names the file and the line).
    pub fn open(
        mode: LlmRun,
        path: &Path,
        max_cost_usd: Option<Decimal>,
    ) -> Result<Option<Cassette>, String> {
        if mode == LlmRun::Live {
            return Ok(None);
        }
        let mut answers = HashMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let v: Value = serde_json::from_str(line).map_err(|e| {
                        format!("{}:{}: not a recording: {e}", path.display(), i + 1)
                    })?;
                    let (Some(k), Some(r)) = (v["key"].as_str(), v.get("response")) else {
                        return Err(format!(
                            "{}:{}: a recording needs \"key\" and \"response\"",
                            path.display(),
                            i + 1
                        ));
                    };
                    answers.insert(k.to_string(), r.clone());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && mode == LlmRun::Record => {}
            Err(e) => {
                return Err(format!(
                    "{}: cannot read the LLM recordings: {e}{}",
                    path.display(),
                    if mode == LlmRun::Replay {
                        " (record them first with --llm record)"
                    } else {
                        ""
                    }
                ));
            }
        }
        let file = if mode == LlmRun::Record {
            if let Some(dir) = path.parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
            }
            Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("{}: cannot open for writing: {e}", path.display()))?,
            )
        } else {
            None
        };
        Ok(Some(Cassette {
            mode,
            path: path.to_path_buf(),
            answers: Mutex::new(answers),
            file: Mutex::new(file),
            max_cost_usd,
            spent: Mutex::new(Decimal::ZERO),
            miss: Mutex::new(None),
        }))
    }

    /// The mode.
    pub fn mode(&self) -> LlmRun {
        self.mode
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded response of `key`.
    pub fn answer(&self, key: &str) -> Option<Value> {
        lock(&self.answers).get(key).cloned()
    }

    /// Notes a replay miss (the first one is kept).
    pub fn missed(&self, miss: Miss) {
        lock(&self.miss).get_or_insert(miss);
    }

    /// The first replay miss of the run.
    pub fn first_miss(&self) -> Option<Miss> {
        lock(&self.miss).clone()
    }

    /// Why a new call may not be made: the run's `max_cost_usd` is spent.
    pub fn over_cost(&self) -> Option<String> {
        let cap = self.max_cost_usd?;
        let spent = *lock(&self.spent);
        (spent >= cap).then(|| {
            format!(
                "the recording run's --max-cost-usd of {cap} USD is spent ({} USD): no more calls",
                spent.round_dp(4).normalize()
            )
        })
    }

    /// Records a new answer and what it cost (USD).
    ///
    /// # Errors
    /// The line cannot be written.
    pub fn record(
        &self,
        key: &str,
        provider: &str,
        model: &str,
        request: &Value,
        response: &Value,
        usd: Decimal,
    ) -> Result<(), String> {
        *lock(&self.spent) += usd;
        lock(&self.answers).insert(key.to_string(), response.clone());
        let line = json!({
            "key": key,
            "provider": provider,
            "model": model,
            "request": request,
            "response": response,
        });
        let mut file = lock(&self.file);
        let Some(f) = file.as_mut() else {
            return Ok(());
        };
        writeln!(f, "{line}")
            .and_then(|()| f.flush())
            .map_err(|e| format!("{}: cannot write a recording: {e}", self.path.display()))
    }

    /// USD spent on new calls in this run.
    pub fn spent(&self) -> Decimal {
        *lock(&self.spent)
    }
}

/// The recording files of a process: one [`Cassette`] per pipeline, opened when the
/// pipeline first calls a model.
pub struct Recordings {
    mode: LlmRun,
    /// The file of each pipeline.
    path_of: Box<dyn Fn(&str) -> PathBuf + Send + Sync>,
    max_cost_usd: Option<Decimal>,
    open: Mutex<HashMap<String, std::sync::Arc<Cassette>>>,
    /// Only the calls of `validation` pipelines record (the daemon's recordings).
    validation_only: bool,
}

impl std::fmt::Debug for Recordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recordings")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Recordings {
    /// Recordings in `mode`, with each pipeline's file given by `path_of`.
    pub fn new(
        mode: LlmRun,
        path_of: impl Fn(&str) -> PathBuf + Send + Sync + 'static,
        max_cost_usd: Option<Decimal>,
    ) -> Recordings {
        Recordings {
            mode,
            path_of: Box::new(path_of),
            max_cost_usd,
            open: Mutex::new(HashMap::new()),
            validation_only: false,
        }
    }

    /// Records only the calls of pipelines in `validation` mode (the daemon's recordings).
    pub fn validation_only(mut self) -> Recordings {
        self.validation_only = true;
        self
    }

    /// The cassette of `pipeline` (`None` when it does not record: `validation` tells
    /// whether the pipeline runs in validation mode).
    ///
    /// # Errors
    /// The file cannot be opened (see [`Cassette::open`]).
    pub fn of(
        &self,
        pipeline: &str,
        validation: bool,
    ) -> Result<Option<std::sync::Arc<Cassette>>, String> {
        if self.validation_only && !validation {
            return Ok(None);
        }
        let mut open = lock(&self.open);
        if let Some(c) = open.get(pipeline) {
            return Ok(Some(std::sync::Arc::clone(c)));
        }
        let Some(c) = Cassette::open(self.mode, &(self.path_of)(pipeline), self.max_cost_usd)?
        else {
            return Ok(None);
        };
        let c = std::sync::Arc::new(c);
        open.insert(pipeline.to_string(), std::sync::Arc::clone(&c));
        Ok(Some(c))
    }

    /// The first replay miss of any pipeline.
    pub fn first_miss(&self) -> Option<Miss> {
        lock(&self.open).values().find_map(|c| c.first_miss())
    }

    /// USD spent on new calls by every cassette.
    pub fn spent(&self) -> Decimal {
        lock(&self.open).values().map(|c| c.spent()).sum()
    }
}
