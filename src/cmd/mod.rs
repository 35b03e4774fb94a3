//! Command implementations behind the `ztraded` binary. Each returns the process exit code.

pub mod backtest;
pub mod brokers;
pub mod estimate;
pub mod indicators;
pub mod plan;
pub mod report;
pub mod run;
pub mod signal;
pub mod status;
pub mod validate;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the input is invalid (validation errors, failed checks).
pub const EXIT_INVALID: u8 = 1;
/// Exit code: usage or I/O error.
pub const EXIT_USAGE: u8 = 2;
