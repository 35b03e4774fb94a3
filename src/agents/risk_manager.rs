//! `risk_manager`: applies the pipeline's risk policy to the strategy's plan
//! ([`crate::risk::evaluate`]); only its approval can reach a broker.

pub use crate::risk::{RiskInput, evaluate};
