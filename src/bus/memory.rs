//! `memory://`: the bus inside one daemon, a bounded channel from the publishers (the
//! generators) to the dispatcher. A publisher waits until the dispatcher has queued its
//! signal at every subscribing pipeline, so in replay a signal generated on a bar reaches
//! its pipelines before the next bar does.

use super::BusError;
use crate::signals::{Dispatcher, Signal};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::debug;

/// How many signals may wait for the dispatcher.
const CAPACITY: usize = 4096;

struct Envelope {
    signal: Signal,
    origin: SystemTime,
    routed: oneshot::Sender<()>,
}

/// See the module documentation.
pub struct MemoryBus {
    tx: mpsc::Sender<Envelope>,
    rx: Mutex<Option<mpsc::Receiver<Envelope>>>,
    seq: std::sync::atomic::AtomicU64,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    /// A bus without a consumer yet.
    pub fn new() -> MemoryBus {
        let (tx, rx) = mpsc::channel(CAPACITY);
        MemoryBus {
            tx,
            rx: Mutex::new(Some(rx)),
            seq: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// See [`super::Bus::publish`]; the entry id is `memory-<n>`.
    ///
    /// # Errors
    /// [`BusError::Closed`] when the consumer stopped.
    pub async fn publish(&self, signal: &Signal) -> Result<String, BusError> {
        let (routed, done) = oneshot::channel();
        let consuming = self
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none();
        self.tx
            .send(Envelope {
                signal: signal.clone(),
                origin: SystemTime::now(),
                routed,
            })
            .await
            .map_err(|_| BusError::Closed)?;
        if consuming {
            let _ = done.await;
        }
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(format!("memory-{n}"))
    }

    /// Starts the consumer (once; a second call returns a finished task).
    pub fn spawn_consumer(
        &self,
        dispatcher: Arc<Dispatcher>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        tokio::spawn(async move {
            let Some(mut rx) = rx else {
                return;
            };
            loop {
                let envelope = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|s| *s) => return,
                    e = rx.recv() => match e {
                        Some(e) => e,
                        None => return,
                    },
                };
                let routed = dispatcher
                    .route(&envelope.signal, Some(envelope.origin))
                    .await;
                let _ = envelope.routed.send(());
                let id = envelope.signal.id;
                tokio::spawn(async move {
                    let report = routed.outcomes().await;
                    debug!(signal = %id, outcomes = ?report.outcomes, "signal handled");
                });
            }
        })
    }
}
