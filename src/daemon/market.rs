//! The daemon's market loop in replay mode: the replay data's bars on the simulated clock,
//! delivered to the brokers, then to the pipelines they concern, one step at a time.
//!
//! Each step is the earliest of the next bar close and the next timer of any pipeline. The
//! clock ([`ReplayClock`]) runs at the configured speed up to that instant and stops there;
//! the brokers process the bars (fills at the open of the bar after the decision, stops and
//! targets against its range), then each concerned pipeline takes the step — in name order,
//! one after the other, each finishing its executions and orders before the next starts —
//! then equity and the replay position are stored. No bar is skipped or merged, whatever
//! the speed: when the pipelines take longer than the simulated time allows, the clock
//! waits for them (said once in the log). When the data ends, the loop says so once and
//! stops; the daemon keeps serving `/metrics` and the emergency close.

use super::REPLAY_CURSOR_KEY;
use super::actor::Message;
use super::registry::Registry;
use crate::engine::clock::{Clock, ReplayClock, sleep_until, utc};
use crate::engine::core::BarBatch;
use crate::metrics::StoreOperation;
use crate::runtime::{Account, ReplayHub};
use std::sync::Arc;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

/// What the market loop works with.
pub struct MarketLoop {
    /// The replay data.
    pub hub: Arc<ReplayHub>,
    /// The account (brokers, ledger, store, metrics).
    pub account: Arc<Account>,
    /// The running pipelines.
    pub registry: Arc<Registry>,
    /// The simulated clock.
    pub clock: Arc<ReplayClock>,
    /// The market time zone.
    pub tz: chrono_tz::Tz,
    /// Where the replay starts: bars closing after it are replayed.
    pub start: i64,
}

impl MarketLoop {
    /// Runs until the data ends or `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut timeline = self.hub.batches_after(self.start);
        let mut last = self.start;
        let mut said_behind = false;
        loop {
            let notified = self.registry.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some(next_bar) = timeline.peek_end() else {
                info!(at = %utc(last), "the replay data is exhausted: no more bars; metrics and the emergency close stay available");
                return;
            };
            let t = match self.registry.next_wake() {
                Some(w) if w > last && w < next_bar => w,
                _ => next_bar,
            };
            if self.clock.run_until(utc(t)) && !said_behind {
                said_behind = true;
                info!(
                    speed = self.clock.speed(),
                    "the pipelines take longer than the replay speed allows: the simulated clock waits for them (trades do not depend on the speed)"
                );
            }
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => return,
                _ = sleep_until(self.clock.as_ref(), utc(t)) => {}
                // A pipeline started, stopped or moved its timer: look again.
                _ = &mut notified => continue,
            }
            let batch = if t == next_bar {
                timeline.next().map(Arc::new)
            } else {
                None
            };
            self.step(t, batch).await;
            last = t;
            if *shutdown.borrow() {
                return;
            }
        }
    }

    async fn step(&self, t: i64, batch: Option<Arc<BarBatch>>) {
        deliver(&self.account, &self.registry, self.tz, t, batch).await;
        if let Some(store) = self.account.store()
            && let Err(e) = store
                .set_state(REPLAY_CURSOR_KEY, &serde_json::json!(t), t)
                .await
        {
            warn!(error = %e, "replay position not stored");
            if let Some(m) = self.account.metrics() {
                m.store_error(StoreOperation::State);
            }
        }
    }
}

/// One step of the market at instant `t` (Unix seconds), replay and live alike: the brokers
/// get the bars that closed then (`batch`), each concerned pipeline takes the step in name
/// order, one after the other, each finishing its executions and orders before the next
/// starts; then equity is recorded.
pub async fn deliver(
    account: &Account,
    registry: &Registry,
    tz: chrono_tz::Tz,
    t: i64,
    batch: Option<Arc<BarBatch>>,
) {
    let symbols: Vec<&str> = match &batch {
        Some(b) => {
            account.on_bars(b, tz).await;
            if let Some(m) = account.metrics() {
                for e in &b.bars {
                    m.set_last_bar(&e.symbol, e.timeframe.as_str(), b.end);
                }
            }
            b.bars.iter().map(|e| &*e.symbol).collect()
        }
        None => {
            account.roll_day(t, tz);
            Vec::new()
        }
    };
    for (name, tx) in registry.due(t, &symbols) {
        let (done, answer) = oneshot::channel();
        let message = Message::Step {
            t,
            batch: batch.clone(),
            done,
        };
        if tx.send(message).await.is_err() {
            continue;
        }
        match answer.await {
            Ok(wake) => registry.set_wake(&name, wake),
            Err(_) => registry.set_wake(&name, None),
        }
    }
    // The scanners' signal generators see the bars after the pipelines did (a signal's
    // execution reads the bar that fired it).
    if let (Some(signals), Some(b)) = (registry.signals(), &batch) {
        signals.on_batch(b).await;
    }
    account.record_equity(t).await;
}
