//! `reporting`: one execution record with every node's output and reasoning. The record is
//! assembled by the executor as nodes run; this agent marks it complete.

use crate::engine::state::{ExecutionRecord, ExecutionStatus};

/// Finishes the record.
pub fn finish(record: &mut ExecutionRecord, finished_at: i64) {
    record.finished_at = finished_at;
    if record.status == ExecutionStatus::Interrupted {
        return;
    }
    record.cost_usd = record.nodes.iter().map(|n| n.cost_usd).sum();
}
