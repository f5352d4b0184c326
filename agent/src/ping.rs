//! The ping operation: the smallest handler, answering with its payload.

use futures_util::future::BoxFuture;
use protocol::{ErrorCode, ErrorData, Operation, OperationOutput, TaskOutcome};

use crate::handler::{Handler, TaskContext, operation_name};

/// Answers [`Operation::Ping`] with its payload.
#[derive(Debug, Clone, Copy)]
pub struct PingHandler;

impl Handler for PingHandler {
    fn handles(&self, operation: &Operation) -> bool {
        matches!(operation, Operation::Ping { .. })
    }

    fn handle(
        &self,
        operation: Operation,
        _context: TaskContext,
    ) -> BoxFuture<'static, TaskOutcome> {
        Box::pin(async move {
            match operation {
                Operation::Ping { payload } => Ok(OperationOutput::Pong { payload }),
                other => Err(ErrorData::new(
                    ErrorCode::Internal,
                    format!(
                        "the ping handler got a {} operation",
                        operation_name(&other)
                    ),
                )),
            }
        })
    }
}
