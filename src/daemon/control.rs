//! The emergency endpoints' actions: the daemon side of `POST /v1/close` and
//! `POST /v1/resume`.

use super::portfolio::Portfolio;
use crate::http::{Control, ControlError, Scope};
use async_trait::async_trait;
use std::sync::Arc;

/// Closes and resumes through the portfolio.
pub struct DaemonControl {
    /// The account side of the daemon.
    pub portfolio: Arc<Portfolio>,
}

#[async_trait]
impl Control for DaemonControl {
    async fn close(&self, scope: Scope, reason: String) -> Result<serde_json::Value, ControlError> {
        Ok(self.portfolio.emergency_close(&scope, &reason).await)
    }

    async fn resume(
        &self,
        scope: Scope,
        reason: Option<String>,
    ) -> Result<serde_json::Value, ControlError> {
        Ok(self.portfolio.resume(&scope, reason.as_deref()).await)
    }
}
