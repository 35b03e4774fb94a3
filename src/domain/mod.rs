//! The shared vocabulary: decisions passed along an execution, scopes of halts and closes.
//! A leaf of the module graph (it depends only on the order vocabulary of
//! [`crate::broker::types`] and on config name rules), so that the engine, the agents, the
//! risk manager, the store and the HTTP port can all use it without depending on each
//! other.

pub mod decisions;
pub mod halt;
pub mod scope;

pub use decisions::{
    Action, Bias, BiasSignal, RiskDecision, RiskRule, StrategySignal, TradeAction, TradeOutcome,
};
pub use halt::{Halt, HaltCause};
pub use scope::Scope;

/// Decimal → f64 for messages, ratios and expression values (NaN when out of range).
pub fn to_f64(d: rust_decimal::Decimal) -> f64 {
    use rust_decimal::prelude::ToPrimitive;
    d.to_f64().unwrap_or(f64::NAN)
}
