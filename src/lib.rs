//! ztraded: GitOps for automated trading.
//!
//! A trader keeps pipelines, scanners and risk policies as YAML in git; `ztraded validate`
//! checks them in CI and `ztraded run` reconciles running pipelines with the files.
#![forbid(unsafe_code)]

pub mod agents;
pub mod backtest;
pub mod broker;
pub mod bus;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod engine;
pub mod expr;
pub mod http;
pub mod lease;
pub mod llm;
pub mod market;
pub mod metrics;
pub mod notify;
pub mod reconcile;
pub mod risk;
pub mod runtime;
pub mod signals;
pub mod store;

/// The hash map of the trading core's hot paths (working orders, realized P&L, the
/// simulated broker's indexes): foldhash with a fixed seed, much cheaper than the standard
/// SipHash for short string keys. Keys are our own ids and names, not attacker-chosen.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

/// Installs the process-wide TLS crypto provider (rustls with `ring`) used by every HTTPS
/// and WSS client (brokers, market data, LLM providers). Idempotent; call it before
/// building a client.
pub fn install_tls_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
