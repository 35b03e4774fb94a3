//! The running actors as the market loop sees them: their channels, their symbols and
//! their next timers, so that each step reaches exactly the pipelines it concerns, in name
//! order; and the signal pipelines by the signal types they subscribe to, so that the
//! dispatcher reaches exactly the subscribers of a signal's type.

use super::actor::Message;
use crate::engine::core::PipelineSpec;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::{Notify, mpsc};

/// What the signal dispatcher knows of a pipeline with a `signal` trigger.
#[derive(Debug)]
pub struct SignalRoute {
    /// The pipeline.
    pub name: Arc<str>,
    /// Its actor.
    pub tx: mpsc::Sender<Message>,
    /// Its symbols (its scanner's tickers).
    pub symbols: HashSet<String>,
    /// Its subscriptions: signal type → the lowest `min_confidence` (0–100) of that type.
    pub min_confidence: HashMap<String, f64>,
}

/// The subscribers of one signal type, in name order.
pub type Subscribers = Arc<Vec<Arc<SignalRoute>>>;

/// A route's parts: the pipeline's symbols and its subscriptions (type, `min_confidence`
/// 0–100).
pub type RouteParts = (Vec<String>, Vec<(String, f64)>);

/// Signal pipelines by name, and the subscribers of each type.
type Routes = (
    BTreeMap<String, Arc<SignalRoute>>,
    HashMap<String, Subscribers>,
);

struct Entry {
    tx: mpsc::Sender<Message>,
    symbols: Vec<String>,
    wake: Option<i64>,
}

/// See the module documentation.
#[derive(Default)]
pub struct Registry {
    actors: Mutex<BTreeMap<String, Entry>>,
    changed: Notify,
    /// Signal pipelines by name, and the subscribers of each type (rebuilt on change).
    routes: Mutex<Routes>,
    /// The signal generators the market steps feed (set once by the daemon).
    signals: OnceLock<Arc<crate::signals::service::SignalService>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.actors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers (or replaces) the actor of `name`, trading `symbols`.
    pub fn register(&self, name: &str, tx: mpsc::Sender<Message>, symbols: Vec<String>) {
        self.lock().insert(
            name.to_string(),
            Entry {
                tx,
                symbols,
                wake: None,
            },
        );
        self.changed.notify_waiters();
    }

    /// Forgets the actor of `name`.
    pub fn unregister(&self, name: &str) {
        self.lock().remove(name);
        self.set_route(name, None);
        self.changed.notify_waiters();
    }

    /// Records what the dispatcher needs of `name` running `spec` (its subscriptions and
    /// symbols), or forgets it when `spec` has no `signal` trigger or is `None`.
    pub fn set_route(&self, name: &str, spec: Option<&PipelineSpec>) {
        let route = spec.and_then(|spec| {
            let trigger = spec.compiled.trigger.signal.as_ref()?;
            let subs = trigger
                .subscriptions
                .iter()
                .map(|s| {
                    (
                        s.signal_type.clone(),
                        crate::domain::to_f64(s.min_confidence.value()),
                    )
                })
                .collect();
            Some((spec.symbols.clone(), subs))
        });
        self.set_route_parts(name, route);
    }

    /// [`Registry::set_route`] from its parts: the pipeline's symbols and its subscriptions
    /// (type, `min_confidence` 0–100); `None` forgets the route.
    pub fn set_route_parts(&self, name: &str, route: Option<RouteParts>) {
        let tx = self.lock().get(name).map(|e| e.tx.clone());
        let route = match (route, tx) {
            (Some((symbols, subs)), Some(tx)) => {
                let mut min_confidence: HashMap<String, f64> = HashMap::new();
                for (t, min) in subs {
                    min_confidence
                        .entry(t)
                        .and_modify(|m| *m = m.min(min))
                        .or_insert(min);
                }
                Some(Arc::new(SignalRoute {
                    name: Arc::from(name),
                    tx,
                    symbols: symbols.into_iter().collect(),
                    min_confidence,
                }))
            }
            _ => None,
        };
        let mut routes = self
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = match route {
            Some(r) => {
                routes.0.insert(name.to_string(), r);
                true
            }
            None => routes.0.remove(name).is_some(),
        };
        if changed {
            let mut by_type: HashMap<String, Vec<Arc<SignalRoute>>> = HashMap::new();
            for r in routes.0.values() {
                for t in r.min_confidence.keys() {
                    by_type.entry(t.clone()).or_default().push(Arc::clone(r));
                }
            }
            routes.1 = by_type.into_iter().map(|(t, v)| (t, Arc::new(v))).collect();
        }
    }

    /// The pipelines subscribing to `signal_type`, in name order (shared, no copy).
    pub fn subscribers(&self, signal_type: &str) -> Option<Subscribers> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .get(signal_type)
            .cloned()
    }

    /// Sets the signal service the market steps feed their bars to (once; later calls are
    /// ignored).
    pub fn set_signals(&self, service: Arc<crate::signals::service::SignalService>) {
        let _ = self.signals.set(service);
    }

    /// The signal service, when the daemon set one.
    pub fn signals(&self) -> Option<&Arc<crate::signals::service::SignalService>> {
        self.signals.get()
    }

    /// Updates the symbols of `name` (a changed configuration).
    pub fn set_symbols(&self, name: &str, symbols: Vec<String>) {
        if let Some(e) = self.lock().get_mut(name) {
            e.symbols = symbols;
        }
    }

    /// Sets the next timer of `name` (Unix seconds); wakes the market loop when it moved.
    pub fn set_wake(&self, name: &str, wake: Option<i64>) {
        let moved = match self.lock().get_mut(name) {
            Some(e) if e.wake != wake => {
                e.wake = wake;
                true
            }
            _ => false,
        };
        if moved {
            self.changed.notify_waiters();
        }
    }

    /// The earliest timer of any actor.
    pub fn next_wake(&self) -> Option<i64> {
        self.lock().values().filter_map(|e| e.wake).min()
    }

    /// The actors a step at `t` concerns, in name order: those trading one of `symbols`
    /// (the symbols whose bars closed at `t`) and those whose timer is due.
    pub fn due(&self, t: i64, symbols: &[&str]) -> Vec<(String, mpsc::Sender<Message>)> {
        self.lock()
            .iter()
            .filter(|(_, e)| {
                e.wake.is_some_and(|w| w <= t)
                    || e.symbols.iter().any(|s| symbols.contains(&s.as_str()))
            })
            .map(|(n, e)| (n.clone(), e.tx.clone()))
            .collect()
    }

    /// Names of the registered actors.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Every symbol of a registered actor, sorted.
    pub fn symbols(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .lock()
            .values()
            .flat_map(|e| e.symbols.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// A future that resolves when an actor is registered, unregistered or moves its
    /// timer after this call (enable it before reading the timers).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}
