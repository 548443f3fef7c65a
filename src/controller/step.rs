//! What one step returns: its condition, the value the steps after it need, the changes it made.

use std::time::Duration;

use super::{conditions::Outcome, errors::Failure, reasons::ChangeReason};

/// A change made outside the cluster, told by a `Normal` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub reason: ChangeReason,
    pub note: String,
}

/// What one step found: its condition, the value the steps after it need (when it got that far),
/// the changes it made and how long a service asked it to wait.
#[derive(Debug)]
pub struct Step<T> {
    pub outcome: Outcome,
    pub value: Option<T>,
    pub changes: Vec<Change>,
    pub retry_after: Option<Duration>,
}

impl<T> Step<T> {
    /// The step got as far as `value`; `outcome` says whether it passed.
    pub fn found(outcome: Outcome, value: T) -> Self {
        Self { outcome, value: Some(value), changes: Vec::new(), retry_after: None }
    }

    /// The step stopped short of a value.
    pub fn stopped(outcome: Outcome) -> Self {
        Self { outcome, value: None, changes: Vec::new(), retry_after: None }
    }

    pub fn changed(mut self, reason: ChangeReason, note: String) -> Self {
        self.changes.push(Change { reason, note });
        self
    }

    /// A step's result with its failure, if any, as the step's condition.
    pub fn settle(result: Result<Self, Failure>) -> Self {
        result.unwrap_or_else(|f| Self { retry_after: f.retry_after, ..Self::stopped(f.outcome) })
    }
}
