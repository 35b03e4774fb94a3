//! The running actors as the market loop sees them: their channels, their symbols and
//! their next timers, so that each step reaches exactly the pipelines it concerns, in name
//! order.

use super::actor::Message;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::{Notify, mpsc};

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
        self.changed.notify_waiters();
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
