//! The trading core, without I/O: clock, slot layout and feeds, compiled pipelines, the
//! position book and the account ledger, limits, schedules and windows, and the pipeline
//! state machine ([`core`]) that the backtest and the daemon both drive.
pub mod book;
pub mod clock;
pub mod core;
pub mod feed;
pub mod layout;
pub mod limits;
pub mod picker;
pub mod pipeline;
pub mod schedule;
pub mod state;
pub mod trades;
