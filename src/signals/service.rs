//! The daemon's signal side: the generators of the applied revision's scanners, fed by the
//! market steps, publishing what they fire on the bus (so that with `redis://` every
//! daemon of the deployment sees each signal once, through the group).

use super::{GeneratorSet, Signal};
use crate::bus::Bus;
use crate::config::scanner::Scanner;
use crate::engine::core::{BarBatch, History};
use std::sync::Arc;
use tokio::sync::Mutex;
use tracing::{info, warn};

/// See the module documentation.
pub struct SignalService {
    bus: Arc<Bus>,
    generators: Mutex<GeneratorSet>,
    tz: chrono_tz::Tz,
}

impl SignalService {
    /// A service publishing on `bus`, without generators until [`SignalService::configure`].
    pub fn new(bus: Arc<Bus>, tz: chrono_tz::Tz) -> SignalService {
        SignalService {
            bus,
            generators: Mutex::new(GeneratorSet::default()),
            tz,
        }
    }

    /// The bus.
    pub fn bus(&self) -> &Arc<Bus> {
        &self.bus
    }

    /// Replaces the generators by those `scanners` declare, warmed up on `history` up to
    /// `now` (Unix seconds).
    pub async fn configure<'a>(
        &self,
        scanners: impl IntoIterator<Item = (&'a str, &'a Scanner)>,
        history: &dyn History,
        now: i64,
    ) {
        let mut set = GeneratorSet::new(scanners, self.tz);
        set.warm_up(history, now);
        if !set.is_empty() {
            info!(
                generators = set.len(),
                tickers = set.tickers().len(),
                "signal generators watching"
            );
        }
        *self.generators.lock().await = set;
    }

    /// Runs the generators on a step's bars and publishes what they fire, in order;
    /// answers the signals published.
    pub async fn on_batch(&self, batch: &BarBatch) -> Vec<Signal> {
        let mut fired = Vec::new();
        self.generators.lock().await.on_batch(batch, &mut fired);
        for s in &fired {
            if let Err(e) = self.bus.publish(s).await {
                warn!(signal = %s.id, error = %e, "generated signal not published");
            }
        }
        fired
    }
}
