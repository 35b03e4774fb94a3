//! Halts: one type for every scope (the account, a pipeline, a symbol) and every cause.

use super::scope::Scope;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Why entries are halted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaltCause {
    /// `POST /v1/close` (`ztraded close`): latched until resumed.
    Emergency,
    /// Latched by an operator without a close: until resumed.
    Manual,
    /// The risk policy's `daily_loss_usd` of the account was reached: until the next
    /// trading day (or a resume).
    RiskDailyLoss,
}

impl HaltCause {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            HaltCause::Emergency => "emergency",
            HaltCause::Manual => "manual",
            HaltCause::RiskDailyLoss => "risk_daily_loss",
        }
    }
}

/// A halt: no new entries in its scope while it holds; exits are still managed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    /// Who is halted.
    pub scope: Scope,
    /// Why, in words (shown by `ztraded status`, the close answer and the logs).
    pub reason: String,
    /// What latched it.
    pub cause: HaltCause,
    /// Since when, Unix seconds.
    pub since: i64,
    /// The last trading day it holds (`None`: until resumed).
    pub until: Option<NaiveDate>,
}

impl Halt {
    /// Whether the halt still holds on trading day `day`.
    pub fn holds_on(&self, day: NaiveDate) -> bool {
        self.until.is_none_or(|last| day <= last)
    }
}
