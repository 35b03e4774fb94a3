//! The emergency endpoints' actions: the daemon side of `POST /v1/close` and
//! `POST /v1/resume`.

use super::registry::Registry;
use crate::domain::Scope;
use crate::http::{Control, ControlError};
use crate::runtime::Account;
use async_trait::async_trait;
use std::sync::Arc;

/// Closes and resumes through the account.
pub struct DaemonControl {
    /// Brokers, ledger, store.
    pub account: Arc<Account>,
    /// The running pipelines (the names and symbols a scope may name).
    pub registry: Arc<Registry>,
}

impl DaemonControl {
    /// Pipelines and symbols a scope may name: the running pipelines and their symbols, and
    /// whatever holds a position or a working order.
    fn known(&self) -> (Vec<String>, Vec<String>) {
        let mut pipelines = self.registry.names();
        let mut symbols = self.registry.symbols();
        {
            let ledger = self.account.ledger();
            for t in ledger.open_trades() {
                pipelines.push(t.pipeline.clone());
                symbols.push(t.symbol.clone());
            }
            for w in ledger.working_orders() {
                pipelines.push(w.order.pipeline.clone());
                symbols.push(w.order.symbol.clone());
            }
            for h in ledger.halts() {
                match h.scope {
                    Scope::Pipeline(p) => pipelines.push(p),
                    Scope::Symbol(s) => symbols.push(s),
                    Scope::All => {}
                }
            }
        }
        pipelines.sort();
        pipelines.dedup();
        symbols.sort();
        symbols.dedup();
        (pipelines, symbols)
    }

    /// `Ok` when `scope` names something the daemon knows.
    fn check(&self, scope: &Scope) -> Result<(), ControlError> {
        let (pipelines, symbols) = self.known();
        let unknown = match scope {
            Scope::All => None,
            Scope::Pipeline(p) if !pipelines.contains(p) => Some(format!("no pipeline {p}")),
            Scope::Symbol(s) if !symbols.contains(s) => {
                Some(format!("no pipeline trades symbol {s}"))
            }
            _ => None,
        };
        match unknown {
            None => Ok(()),
            Some(message) => Err(ControlError::UnknownScope {
                message,
                known_pipelines: pipelines,
                known_symbols: symbols,
            }),
        }
    }
}

#[async_trait]
impl Control for DaemonControl {
    async fn close(&self, scope: Scope, reason: String) -> Result<serde_json::Value, ControlError> {
        self.check(&scope)?;
        Ok(self.account.emergency_close(&scope, &reason).await)
    }

    async fn resume(
        &self,
        scope: Scope,
        reason: Option<String>,
    ) -> Result<serde_json::Value, ControlError> {
        self.check(&scope)?;
        Ok(self.account.resume(&scope, reason.as_deref()).await)
    }
}
