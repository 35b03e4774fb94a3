//! Backtests: the engine over historical bars with a simulated clock and broker.
pub mod analytics;
pub mod compare;
pub mod output;
pub mod runner;
