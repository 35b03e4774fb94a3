//! Brokers: the trait every broker implements, the shared order vocabulary, and the
//! simulated broker.

pub mod sim;
pub mod types;

pub use types::*;

use async_trait::async_trait;

/// A broker failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker refused the order.
    #[error("order {client_order_id} rejected: {reason}")]
    Rejected {
        /// Our order id.
        client_order_id: String,
        /// The broker's reason.
        reason: String,
    },
    /// No such order.
    #[error("unknown order {0}")]
    UnknownOrder(String),
    /// The broker could not be reached or answered garbage; the call may be retried.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// A broker account. Implementations: the simulated broker ([`sim::SimBroker`]), Alpaca,
/// Interactive Brokers.
#[async_trait]
pub trait Broker: Send + Sync {
    /// The `[brokers.<name>]` name.
    fn name(&self) -> &str;
    /// Balances.
    async fn account(&self) -> Result<Account, BrokerError>;
    /// Open positions.
    async fn positions(&self) -> Result<Vec<Position>, BrokerError>;
    /// Submits an order. Submitting an id the broker already has returns that order's
    /// state instead of a second order (idempotent by client order id).
    async fn submit(&self, order: Submit) -> Result<OrderState, BrokerError>;
    /// Cancels an open order.
    async fn cancel(&self, client_order_id: &str) -> Result<(), BrokerError>;
    /// Moves a working stop order to a new price and quantity.
    async fn replace_stop(
        &self,
        client_order_id: &str,
        price: rust_decimal::Decimal,
        quantity: rust_decimal::Decimal,
    ) -> Result<(), BrokerError>;
    /// An order by client order id.
    async fn order(&self, client_order_id: &str) -> Result<Option<OrderState>, BrokerError>;
    /// Orders that can still execute.
    async fn open_orders(&self) -> Result<Vec<OrderState>, BrokerError>;
}
