//! Signals in a backtest: the generators of the pipeline's scanner run on the replayed bars
//! (the same [`GeneratorSet`] the daemon runs), merged with external signals recorded in a
//! file (`--signals FILE.jsonl`), and each is delivered to the pipeline's runner at the step
//! of its timestamp, after the step's bars — the same command the daemon's dispatcher
//! sends ([`PipelineRunner::signal`]).

use super::{GeneratorSet, Signal};
use crate::config::set::ConfigSet;
use crate::engine::core::{BarBatch, History, SignalOutcome};
use crate::runtime::{Account, PipelineRunner};
use std::collections::BTreeMap;

/// The signals of one backtest and what became of them.
pub struct BacktestSignals {
    generators: GeneratorSet,
    /// External signals not delivered yet, latest first (popped from the end).
    external: Vec<Signal>,
    fired: Vec<Signal>,
    /// (type, outcome) → count.
    pub outcomes: BTreeMap<(String, &'static str), u64>,
}

impl BacktestSignals {
    /// The generators of the scanner of pipeline `name` in `set` (none when it names
    /// symbols), warmed up on `history` up to `start`, and `external` signals (any order).
    pub fn new(
        set: &ConfigSet,
        name: &str,
        history: &dyn History,
        start: i64,
        tz: chrono_tz::Tz,
        mut external: Vec<Signal>,
    ) -> BacktestSignals {
        let scanner = set
            .pipelines
            .get(name)
            .and_then(|r| r.spec.as_ref())
            .and_then(|p| p.scanner.as_ref())
            .and_then(|s| {
                set.scanners
                    .get(s)
                    .and_then(|r| r.spec.as_ref())
                    .map(|x| (s.as_str(), x))
            });
        let mut generators = GeneratorSet::new(scanner, tz);
        generators.warm_up(history, start);
        external.retain(|s| s.timestamp > start);
        external.sort_by_key(|s| std::cmp::Reverse(s.timestamp));
        BacktestSignals {
            generators,
            external,
            fired: Vec::new(),
            outcomes: BTreeMap::new(),
        }
    }

    /// Delivers the signals of the step at `t` (the generators' on `batch`, then the
    /// external signals timestamped at or before `t`) to `runner`.
    pub async fn deliver(
        &mut self,
        t: i64,
        batch: Option<&BarBatch>,
        runner: &mut PipelineRunner,
        account: &Account,
    ) {
        self.fired.clear();
        if let Some(b) = batch {
            self.generators.on_batch(b, &mut self.fired);
        }
        while self.external.last().is_some_and(|s| s.timestamp <= t) {
            if let Some(s) = self.external.pop() {
                self.fired.push(s);
            }
        }
        for s in std::mem::take(&mut self.fired) {
            let mut got = SignalOutcome::NotSubscribed;
            runner
                .signal(&s.ticker, &s.signal_type, s.confidence, t, account, |o| {
                    got = o;
                })
                .await;
            // A type the pipeline does not subscribe to is no outcome (the daemon's
            // dispatcher does not deliver it either).
            if got != SignalOutcome::NotSubscribed {
                *self
                    .outcomes
                    .entry((s.signal_type.clone(), got.as_str()))
                    .or_default() += 1;
            }
        }
    }
}
