//! The dispatcher: routes each signal to every pipeline subscribing to its type and
//! records exactly one outcome per subscribing pipeline (DESIGN.md §2.2, seed 002 §17.4).
//!
//! For a signal of type `X` on ticker `T`, each pipeline whose `signal` trigger subscribes
//! to `X` (looked up by type in the [`Registry`]: a signal costs its subscribers, not every
//! pipeline) gets one of:
//!
//! * `not_in_scanner`: `T` is not among the pipeline's symbols;
//! * `below_confidence`: the confidence is below the lowest `min_confidence` of its
//!   subscriptions to `X`;
//! * `deduplicated`: an execution of the pipeline for `T` that a signal started is still
//!   pending (queued at the pipeline) or running;
//! * otherwise the signal goes to the pipeline's actor, whose trading core decides
//!   ([`crate::engine::core::PipelineCore::signal`]): `dispatched` (an execution starts),
//!   `outside_window`, `halted` (entries halted, removed or draining, or the pipeline
//!   stopped), or `deduplicated`.
//!
//! Each outcome is counted in `ztraded_signals_total{type,outcome}`; a dispatched signal's
//! time from its origin (its publication, or its Redis entry id) to the start of the
//! execution goes to `ztraded_signal_dispatch_seconds`.

use super::Signal;
use crate::daemon::actor::{Message, SignalCommand};
use crate::daemon::registry::Registry;
use crate::engine::core::SignalOutcome;
use crate::metrics::Metrics;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::oneshot;

type PendingSet = Arc<Mutex<HashSet<(Arc<str>, String)>>>;

/// Marks an execution of a pipeline for a ticker as pending or running while it lives.
#[derive(Debug)]
pub struct PendingGuard {
    set: PendingSet,
    key: Option<(Arc<str>, String)>,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.set
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&key);
        }
    }
}

/// What became of one signal: one outcome per subscribing pipeline, in name order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DispatchReport {
    /// (pipeline, outcome).
    pub outcomes: Vec<(Arc<str>, SignalOutcome)>,
    /// Seconds from the signal's origin to the last execution start, when one started.
    pub latency: Option<f64>,
}

impl DispatchReport {
    /// How many pipelines got `outcome`.
    pub fn count(&self, outcome: SignalOutcome) -> usize {
        self.outcomes.iter().filter(|(_, o)| *o == outcome).count()
    }
}

/// A signal delivered to its subscribers' actors, their outcomes still coming.
#[derive(Debug)]
pub struct Routed {
    signal_type: String,
    origin: Option<SystemTime>,
    decided: Vec<(Arc<str>, SignalOutcome)>,
    waiting: Vec<(Arc<str>, oneshot::Receiver<SignalOutcome>)>,
    metrics: Option<Arc<Metrics>>,
}

impl Routed {
    /// Waits for every subscriber's outcome (an actor answers as soon as it decided, before
    /// the execution runs), counts them, and reports them. A pipeline that stopped before
    /// answering counts as `halted`.
    pub async fn outcomes(self) -> DispatchReport {
        let mut outcomes = self.decided;
        let mut latency = None;
        for (name, rx) in self.waiting {
            let outcome = rx.await.unwrap_or(SignalOutcome::Halted);
            if outcome == SignalOutcome::Dispatched
                && let Some(origin) = self.origin
            {
                let s = SystemTime::now()
                    .duration_since(origin)
                    .map_or(0.0, |d| d.as_secs_f64());
                latency = Some(s);
                if let Some(m) = &self.metrics {
                    m.signal_dispatch_latency(s);
                }
            }
            outcomes.push((name, outcome));
        }
        outcomes.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(m) = &self.metrics {
            for (_, o) in &outcomes {
                m.signal_outcome(&self.signal_type, o.as_str());
            }
        }
        DispatchReport { outcomes, latency }
    }
}

/// See the module documentation.
pub struct Dispatcher {
    registry: Arc<Registry>,
    metrics: Option<Arc<Metrics>>,
    pending: PendingSet,
}

impl Dispatcher {
    /// A dispatcher over the pipelines of `registry`, counting in `metrics`.
    pub fn new(registry: Arc<Registry>, metrics: Option<Arc<Metrics>>) -> Dispatcher {
        Dispatcher {
            registry,
            metrics,
            pending: Arc::default(),
        }
    }

    /// Decides what it can without the pipelines (not in scanner, below confidence,
    /// deduplicated) and queues the signal at the other subscribers' actors, in name order;
    /// returns once every message is queued (so a market step sent after it reaches each
    /// actor after the signal). `origin`: when the signal entered the system (for the
    /// latency histogram).
    pub async fn route(&self, signal: &Signal, origin: Option<SystemTime>) -> Routed {
        if let Some(m) = &self.metrics {
            m.signal_received();
        }
        let mut routed = Routed {
            signal_type: signal.signal_type.clone(),
            origin,
            decided: Vec::new(),
            waiting: Vec::new(),
            metrics: self.metrics.clone(),
        };
        let Some(subscribers) = self.registry.subscribers(&signal.signal_type) else {
            return routed;
        };
        for route in subscribers.iter() {
            let name = Arc::clone(&route.name);
            if !route.symbols.contains(&signal.ticker) {
                routed.decided.push((name, SignalOutcome::NotInScanner));
                continue;
            }
            let min = route
                .min_confidence
                .get(&signal.signal_type)
                .copied()
                .unwrap_or(f64::INFINITY);
            if signal.confidence < min {
                routed.decided.push((name, SignalOutcome::BelowConfidence));
                continue;
            }
            let key = (Arc::clone(&name), signal.ticker.clone());
            if !self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key.clone())
            {
                routed.decided.push((name, SignalOutcome::Deduplicated));
                continue;
            }
            let guard = PendingGuard {
                set: Arc::clone(&self.pending),
                key: Some(key),
            };
            let (tx, rx) = oneshot::channel();
            let message = Message::Signal(Box::new(SignalCommand {
                symbol: signal.ticker.clone(),
                signal_type: signal.signal_type.clone(),
                confidence: signal.confidence,
                outcome: Some(tx),
                pending: Some(guard),
            }));
            // A stopped actor drops the message (and its answer): counted as halted.
            let _ = route.tx.send(message).await;
            routed.waiting.push((name, rx));
        }
        routed
    }

    /// [`Dispatcher::route`], then [`Routed::outcomes`].
    pub async fn dispatch(&self, signal: &Signal, origin: Option<SystemTime>) -> DispatchReport {
        self.route(signal, origin).await.outcomes().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::Direction;
    use std::time::{Duration, Instant};
    use tokio::sync::mpsc;

    fn signal(t: &str, ticker: &str, confidence: f64) -> Signal {
        Signal {
            id: format!("{t}-{ticker}"),
            signal_type: t.into(),
            ticker: ticker.into(),
            direction: Direction::Long,
            confidence,
            timestamp: 0,
            source: "test".into(),
        }
    }

    /// An actor that answers `outcome` at once and keeps the pending guard until `release`
    /// says so (`hold`), or drops it at once.
    fn actor(
        registry: &Registry,
        name: &str,
        symbols: &[&str],
        subs: &[(&str, f64)],
        outcome: SignalOutcome,
        hold: Option<mpsc::UnboundedReceiver<()>>,
    ) -> mpsc::Sender<Message> {
        let (tx, mut rx) = mpsc::channel::<Message>(16);
        registry.register(name, tx.clone(), Vec::new());
        registry.set_route_parts(
            name,
            Some((
                symbols.iter().map(|s| s.to_string()).collect(),
                subs.iter().map(|(t, m)| (t.to_string(), *m)).collect(),
            )),
        );
        tokio::spawn(async move {
            let mut hold = hold;
            while let Some(m) = rx.recv().await {
                if let Message::Signal(c) = m {
                    let c = *c;
                    if let Some(o) = c.outcome {
                        let _ = o.send(outcome);
                    }
                    if let Some(h) = hold.as_mut() {
                        let _ = h.recv().await;
                    }
                    drop(c.pending);
                }
            }
        });
        tx
    }

    #[tokio::test]
    async fn one_outcome_per_subscriber_and_dedup_while_pending() {
        let registry = Arc::new(Registry::default());
        let (release, hold) = mpsc::unbounded_channel();
        actor(
            &registry,
            "a",
            &["AAPL", "GOOG"],
            &[("golden_cross", 60.0), ("golden_cross", 80.0)],
            SignalOutcome::Dispatched,
            Some(hold),
        );
        actor(
            &registry,
            "b",
            &["SPY"],
            &[("golden_cross", 10.0)],
            SignalOutcome::Dispatched,
            None,
        );
        actor(
            &registry,
            "c",
            &["AAPL"],
            &[("rsi_oversold", 10.0)],
            SignalOutcome::Dispatched,
            None,
        );
        let metrics = Arc::new(Metrics::new().unwrap());
        let d = Dispatcher::new(Arc::clone(&registry), Some(Arc::clone(&metrics)));
        let r = d
            .dispatch(&signal("golden_cross", "AAPL", 65.0), None)
            .await;
        let names = |r: &DispatchReport| -> Vec<(String, &'static str)> {
            r.outcomes
                .iter()
                .map(|(n, o)| (n.to_string(), o.as_str()))
                .collect()
        };
        // The lowest min_confidence of a type counts; c does not subscribe to the type.
        assert_eq!(
            names(&r),
            vec![("a".into(), "dispatched"), ("b".into(), "not_in_scanner")]
        );
        // a's execution for AAPL still runs: deduplicated; GOOG is another ticker.
        let r = d
            .dispatch(&signal("golden_cross", "AAPL", 99.0), None)
            .await;
        assert_eq!(r.count(SignalOutcome::Deduplicated), 1);
        let r = d
            .dispatch(&signal("golden_cross", "AAPL", 50.0), None)
            .await;
        assert_eq!(r.count(SignalOutcome::BelowConfidence), 1);
        release.send(()).unwrap();
        // Released: the next one is dispatched again.
        let start = Instant::now();
        loop {
            let r = d
                .dispatch(&signal("golden_cross", "AAPL", 70.0), None)
                .await;
            if r.count(SignalOutcome::Dispatched) == 1 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "{r:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = release.send(());
        // No subscriber: no outcome.
        let r = d.dispatch(&signal("news", "AAPL", 70.0), None).await;
        assert!(r.outcomes.is_empty());
        // A pipeline that stopped counts as halted.
        registry.register("gone", mpsc::channel(1).0, Vec::new());
        registry.set_route_parts("gone", Some((vec!["SPY".into()], vec![("x".into(), 0.0)])));
        let r = d.dispatch(&signal("x", "SPY", 1.0), None).await;
        assert_eq!(names(&r), vec![("gone".into(), "halted")]);
        registry.unregister("gone");
        assert!(registry.subscribers("x").is_none());
        let text = metrics.render();
        // (The retries after the release may see the guard still held: deduplicated too.)
        assert!(
            text.contains("ztraded_signals_total{outcome=\"dispatched\",type=\"golden_cross\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "ztraded_signals_total{outcome=\"below_confidence\",type=\"golden_cross\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("ztraded_signals_total{outcome=\"halted\",type=\"x\"} 1"));
    }

    /// In process: 1,000 signal pipelines (10 types × 100 pipelines, each on 10 of 1,000
    /// tickers), signals on random tickers, from `route` to each subscriber's decision.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thousand_pipelines_route_in_microseconds() {
        let registry = Arc::new(Registry::default());
        let tickers: Vec<String> = (0..1000).map(|i| format!("T{i:04}")).collect();
        for p in 0..1000usize {
            let symbols: Vec<&str> = (0..10)
                .map(|k| tickers[(p * 7 + k * 101) % 1000].as_str())
                .collect();
            let t = format!("type{}", p % 10);
            actor(
                &registry,
                &format!("p{p:04}"),
                &symbols,
                &[(t.as_str(), 50.0)],
                SignalOutcome::Dispatched,
                None,
            );
        }
        let d = Dispatcher::new(Arc::clone(&registry), None);
        let mut latencies = Vec::new();
        let mut dispatched = 0usize;
        let mut outcomes = 0usize;
        let mut seed = 7u64;
        for _ in 0..5000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let ticker = &tickers[((seed >> 33) % 1000) as usize];
            let t = format!("type{}", (seed >> 20) % 10);
            let s = signal(&t, ticker, 90.0);
            let start = SystemTime::now();
            let r = d.dispatch(&s, Some(start)).await;
            outcomes += r.outcomes.len();
            dispatched += r.count(SignalOutcome::Dispatched);
            if let Some(l) = r.latency {
                latencies.push(l);
            }
        }
        latencies.sort_by(f64::total_cmp);
        let q = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize] * 1e3;
        println!(
            "in process, 1,000 signal pipelines: 5,000 signals, {outcomes} outcomes (100 subscribers each), {dispatched} dispatched; signal → decision p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            q(0.5),
            q(0.99),
            q(1.0)
        );
        assert_eq!(outcomes, 5000 * 100);
        assert!(dispatched > 0);
        assert!(q(0.99) < 5.0, "p99 {} ms", q(0.99));
    }
}
