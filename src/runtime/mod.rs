//! The drivers of the trading core shared by the backtest and the daemon: the account side
//! ([`account::Account`]: brokers, ledger, store), the pipeline side
//! ([`runner::PipelineRunner`]: core, DAG, intents), and the replay data ([`hub::ReplayHub`]).
//! Same code, same order of operations, so the same config and bars give the same trades.

pub mod account;
pub mod budget;
pub mod hub;
pub mod live;
pub mod runner;
pub mod spec;

pub use account::{Account, AccountOptions};
pub use hub::ReplayHub;
pub use live::LiveHub;
pub use runner::{PipelineRunner, RunStats};
