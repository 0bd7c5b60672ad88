//! A device's LLM_CALL, served by the node: the prompt template and output schema come
//! from the signed program the node sent the device, the request is built and the answer
//! checked by the executor's own code (`Program::serve_llm_call`, which requires an MCU
//! program's answer to be a value a device holds), and the answer goes back as a scalar.

use std::sync::Arc;
use std::time::Duration;

use eyeflow_actors::exec::Program;
use eyeflow_actors::ports::LlmPort;
use eyeflow_mcu::trace::ErrorClass;

use super::Signed;
use super::record::{OwnedFields, Scalar};

/// An LLM_CALL's port deadline without `timeout.execution_timeout_ms`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a device's LLM_CALL has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", class.name())]
pub(super) struct LlmFailure {
    /// The error class the device's fallback sees.
    pub(super) class: ErrorClass,
    /// Why (for the node's log).
    pub(super) message: String,
}

fn failure(class: ErrorClass, message: impl Into<String>) -> LlmFailure {
    LlmFailure {
        class,
        message: message.into(),
    }
}

/// Answers the LLM_CALL `instruction` of `program` (the signed file the node sent the
/// device) with the device's frozen `context` as the slots' values.
pub(super) async fn serve(
    llm: &dyn LlmPort,
    program: Option<&Signed>,
    instruction: &str,
    context: &OwnedFields,
) -> Result<Scalar, LlmFailure> {
    let ir = program.and_then(|p| p.program.clone()).ok_or_else(|| {
        failure(
            ErrorClass::InvalidInput,
            "the node did not send the device this program: it has no prompt for it",
        )
    })?;
    let timeout = ir
        .instructions
        .iter()
        .find(|i| i.instruction_id == instruction)
        .and_then(|i| i.timeout.as_ref())
        .filter(|t| t.execution_timeout_ms > 0)
        .map_or(DEFAULT_TIMEOUT, |t| {
            Duration::from_millis(u64::from(t.execution_timeout_ms))
        });
    let prepared = Program::prepare(Arc::clone(&ir))
        .map_err(|e| failure(ErrorClass::Internal, format!("the program: {e}")))?;
    let slots: Vec<(String, serde_json::Value)> = context
        .iter()
        .map(|(name, value)| (name.clone(), value.json()))
        .collect();
    let answer = prepared
        .serve_llm_call(instruction, &slots, llm, timeout)
        .await
        .map_err(|(class, message)| {
            let class = ErrorClass::from_number(class as i32).unwrap_or(ErrorClass::Internal);
            failure(class, message)
        })?;
    // The executor checked that the answer of an MCU program is a value a device holds.
    match answer {
        serde_json::Value::Null => Ok(Scalar::Null),
        serde_json::Value::Bool(b) => Ok(Scalar::Bool(b)),
        serde_json::Value::Number(n) => n.as_f64().map(Scalar::Num).ok_or_else(|| {
            failure(
                ErrorClass::InvalidOutput,
                "the answer is not a finite number",
            )
        }),
        serde_json::Value::String(s) => Ok(Scalar::Str(s)),
        _ => Err(failure(
            ErrorClass::InvalidOutput,
            "the answer is an object or a list; a device holds scalars",
        )),
    }
}
