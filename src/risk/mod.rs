//! Risk: policy evaluation, position sizing, and the [`RiskApproved`] type — the only way an
//! order that adds exposure can reach a broker.

/// A value that passed the risk manager. It can only be made inside this module, so no code
/// path can hand a broker an entry that the risk policy did not approve; it can be read but
/// not changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiskApproved<T> {
    inner: T,
    rule: &'static str,
}

impl<T> RiskApproved<T> {
    /// Only the risk manager approves.
    pub(in crate::risk) fn approve(inner: T, rule: &'static str) -> Self {
        RiskApproved { inner, rule }
    }
    /// The approved value.
    pub fn get(&self) -> &T {
        &self.inner
    }
    /// The rule that decided (`approved`, or the rule that shrank the size).
    pub fn rule(&self) -> &'static str {
        self.rule
    }
    /// Unwraps the approved value (at the broker boundary).
    pub fn into_inner(self) -> T {
        self.inner
    }
}

pub mod evaluate;
pub use evaluate::{RiskInput, correlation, evaluate};

/// Approves `inner` without a policy, for unit tests of brokers and the engine. Compiled only
/// for `cargo test` of this crate (`cfg(test)`), so no build that ships can bypass the risk
/// manager with it.
#[cfg(test)]
pub(crate) fn approve_for_tests<T>(inner: T) -> RiskApproved<T> {
    RiskApproved::approve(inner, "approved")
}
