//! The hardware actor: evaluates a call's parameters, holds the arbiter's permit for its
//! capability, and calls the board's [`Hardware`] within the instruction's timeout
//! (`timeout` when it runs out); an LLM_CALL (its slots evaluated, bounded by the same
//! timeout) and an EMIT_EVENT (its fields and key evaluated) go through the board's link
//! to a node the same way. The board spawns it with its own [`Hardware`] (an Embassy task
//! cannot be generic): `serve(board_hardware).await` in a task of its own.

use embassy_sync::channel::Channel;
use embassy_time::{Duration, with_timeout};
use eyeflow_mcu::Value;
use eyeflow_mcu::limits::MAX_PARAMS;
use eyeflow_mcu::trace::ErrorClass;
use heapless::Vec;

use super::{Mailbox, REPLIES, arbiter};
use crate::hardware::{Call, Emitted, Hardware, LlmCall};
use crate::owned::Owned;
use crate::state::evaluate;

/// What a job does.
pub(crate) enum Kind {
    /// A CALL_ACTION or LOAD_RESOURCE.
    Call {
        capability: &'static str,
        action: &'static str,
    },
    /// An LLM_CALL: `params` are its slots.
    Llm {
        instruction: &'static str,
        model: &'static str,
    },
    /// An EMIT_EVENT: `params` are its fields.
    Emit {
        topic: &'static str,
        key: &'static [u8],
    },
}

/// One CALL_ACTION, LOAD_RESOURCE, LLM_CALL or EMIT_EVENT.
pub(crate) struct Job {
    pub(crate) kind: Kind,
    pub(crate) params: Vec<(&'static str, &'static [u8]), MAX_PARAMS>,
    pub(crate) timeout_ms: u32,
    pub(crate) priority: u8,
}

pub(crate) static JOBS: Mailbox<Job> = Channel::new();

async fn run(hardware: &mut impl Hardware, job: &Job) -> Result<Owned, ErrorClass> {
    let mut values: Vec<(&str, Owned), MAX_PARAMS> = Vec::new();
    for (name, code) in &job.params {
        // Within capacity: the job holds at most as many params.
        let _ = values.push((name, evaluate(code)?));
    }
    let params: Vec<(&str, Value<'_>), MAX_PARAMS> =
        values.iter().map(|(n, v)| (*n, v.get())).collect();
    let limit = Duration::from_millis(u64::from(job.timeout_ms));
    match job.kind {
        Kind::Call { capability, action } => {
            let call = Call {
                capability,
                action,
                params: &params,
            };
            arbiter::acquire(capability, job.priority).await;
            let result = with_timeout(limit, hardware.call(&call))
                .await
                .unwrap_or(Err(ErrorClass::Timeout));
            arbiter::release(capability).await;
            result
        }
        Kind::Llm { instruction, model } => {
            let call = LlmCall {
                instruction,
                model,
                context: &params,
            };
            with_timeout(limit, hardware.llm(&call))
                .await
                .unwrap_or(Err(ErrorClass::Timeout))
        }
        Kind::Emit { topic, key } => {
            let key = if key.is_empty() {
                Owned::Str(heapless::String::new())
            } else {
                evaluate(key)?
            };
            // A device sends its key as a string (as the server checks).
            let Value::Str(key) = key.get() else {
                return Err(ErrorClass::InvalidInput);
            };
            let event = Emitted {
                topic,
                key,
                fields: &params,
            };
            hardware.emit(&event).await?;
            Ok(Owned::Bool(true))
        }
    }
}

/// Serves the hardware jobs with the board's `hardware`, forever.
pub async fn serve(mut hardware: impl Hardware) -> ! {
    loop {
        let job = JOBS.receive().await;
        let result = run(&mut hardware, &job).await;
        REPLIES.send(result).await;
    }
}
