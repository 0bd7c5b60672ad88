//! Compact journal records: the binary form of the steps one journal write carries, stored
//! as one `journal-steps` record (protobuf, as the IR; the values an instruction produced or
//! was given stay JSON inside). Records written as JSON by earlier versions still read.
//!
//! ## Format
//!
//! A record is the byte [`STEPS_V1`], the number of steps in it (a protobuf varint), then a
//! protobuf `StepBatch` (below). Its key is `execution_id/seq` of its first step; the
//! execution id is not repeated inside. A record starting with `{` is one JSON
//! `StepRecord`, as written before this format.
//!
//! ```text
//! message StepBatch { repeated Step steps = 1; }
//! message Step {
//!   uint64 seq = 1;            string instruction_id = 2;   uint32 attempt = 3;
//!   Kind kind = 4;             bytes value = 5;             // JSON: done's output, started's input
//!   string text = 6;           // failed's class, started's and ambiguous' idempotency key
//!   string message = 7;        // failed's message
//!   uint32 fallback = 8;       // 0 none, then retry, fallback_value, fallback_model, skip,
//!                              // abort, reissued, read_back (1..7)
//!   uint64 started_ms = 9;     uint64 took_ms = 10;         // finished = started + took
//! }
//! enum Kind { DONE = 0; SKIPPED = 1; FAILED = 2; AWAITING_APPROVAL = 3; STARTED = 4; AMBIGUOUS = 5; }
//! ```

use eyeflow_actors::ports::{Fallback, StepOutcome, StepRecord};
use prost::Message;

/// The first byte of a binary step record (a JSON record starts with `{`).
pub(crate) const STEPS_V1: u8 = 0xB1;

/// Why a record could not be read back.
pub(crate) type DecodeError = String;

#[derive(Clone, PartialEq, Message)]
struct StepBatch {
    #[prost(message, repeated, tag = "1")]
    steps: Vec<Step>,
}

#[derive(Clone, PartialEq, Message)]
struct Step {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(string, tag = "2")]
    instruction_id: String,
    #[prost(uint32, tag = "3")]
    attempt: u32,
    #[prost(uint32, tag = "4")]
    kind: u32,
    #[prost(bytes = "vec", tag = "5")]
    value: Vec<u8>,
    #[prost(string, tag = "6")]
    text: String,
    #[prost(string, tag = "7")]
    message: String,
    #[prost(uint32, tag = "8")]
    fallback: u32,
    #[prost(uint64, tag = "9")]
    started_ms: u64,
    #[prost(uint64, tag = "10")]
    took_ms: u64,
}

const DONE: u32 = 0;
const SKIPPED: u32 = 1;
const FAILED: u32 = 2;
const AWAITING_APPROVAL: u32 = 3;
const STARTED: u32 = 4;
const AMBIGUOUS: u32 = 5;

/// The fallbacks in their record numbers (index + 1; 0 is none).
const FALLBACKS: [Fallback; 7] = [
    Fallback::Retry,
    Fallback::FallbackValue,
    Fallback::FallbackModel,
    Fallback::Skip,
    Fallback::Abort,
    Fallback::Reissued,
    Fallback::ReadBack,
];

/// One record holding `steps` (all of one execution, in order), each JSON value made by
/// `json` (which refuses a value its reader could not read back).
pub(crate) fn encode_steps<E>(
    steps: &[StepRecord],
    mut json: impl FnMut(&serde_json::Value) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, E> {
    let mut batch = StepBatch {
        steps: Vec::with_capacity(steps.len()),
    };
    for step in steps {
        let (kind, value, text, message) = match &step.outcome {
            StepOutcome::Done { output } => (DONE, json(output)?, String::new(), String::new()),
            StepOutcome::Skipped => (SKIPPED, Vec::new(), String::new(), String::new()),
            StepOutcome::Failed { class, message } => {
                (FAILED, Vec::new(), class.clone(), message.clone())
            }
            StepOutcome::AwaitingApproval => {
                (AWAITING_APPROVAL, Vec::new(), String::new(), String::new())
            }
            StepOutcome::Started {
                idempotency_key,
                input,
            } => (
                STARTED,
                json(input)?,
                idempotency_key.clone(),
                String::new(),
            ),
            StepOutcome::Ambiguous { idempotency_key } => (
                AMBIGUOUS,
                Vec::new(),
                idempotency_key.clone(),
                String::new(),
            ),
        };
        let fallback = step.fallback.map_or(0, |f| {
            FALLBACKS
                .iter()
                .position(|known| *known == f)
                .map_or(0, |i| i as u32 + 1)
        });
        batch.steps.push(Step {
            seq: step.seq,
            instruction_id: step.instruction_id.clone(),
            attempt: step.attempt,
            kind,
            value,
            text,
            message,
            fallback,
            started_ms: step.started_ms,
            took_ms: step.finished_ms.saturating_sub(step.started_ms),
        });
    }
    let body = batch.encode_to_vec();
    let mut out = Vec::with_capacity(11 + body.len());
    out.push(STEPS_V1);
    prost::encoding::encode_varint(steps.len() as u64, &mut out);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The steps of a `journal-steps` record of `execution_id`: binary or, from earlier
/// versions, one JSON step.
pub(crate) fn decode_steps(
    execution_id: &str,
    bytes: &[u8],
) -> Result<Vec<StepRecord>, DecodeError> {
    let Some((&STEPS_V1, mut rest)) = bytes.split_first() else {
        return serde_json::from_slice::<StepRecord>(bytes)
            .map(|step| vec![step])
            .map_err(|e| e.to_string());
    };
    let count = prost::encoding::decode_varint(&mut rest).map_err(|e| e.to_string())?;
    let batch = StepBatch::decode(rest).map_err(|e| e.to_string())?;
    if batch.steps.len() as u64 != count {
        return Err(format!(
            "the record says {count} steps and holds {}",
            batch.steps.len()
        ));
    }
    batch
        .steps
        .into_iter()
        .map(|step| {
            let value = || -> Result<serde_json::Value, DecodeError> {
                serde_json::from_slice(&step.value).map_err(|e| format!("step {}: {e}", step.seq))
            };
            let outcome = match step.kind {
                DONE => StepOutcome::Done { output: value()? },
                SKIPPED => StepOutcome::Skipped,
                FAILED => StepOutcome::Failed {
                    class: step.text,
                    message: step.message,
                },
                AWAITING_APPROVAL => StepOutcome::AwaitingApproval,
                STARTED => StepOutcome::Started {
                    input: value()?,
                    idempotency_key: step.text,
                },
                AMBIGUOUS => StepOutcome::Ambiguous {
                    idempotency_key: step.text,
                },
                other => return Err(format!("step {}: unknown kind {other}", step.seq)),
            };
            let fallback = match step.fallback {
                0 => None,
                n => Some(
                    *FALLBACKS
                        .get(n as usize - 1)
                        .ok_or_else(|| format!("step {}: unknown fallback {n}", step.seq))?,
                ),
            };
            Ok(StepRecord {
                execution_id: execution_id.to_owned(),
                seq: step.seq,
                instruction_id: step.instruction_id,
                attempt: step.attempt,
                outcome,
                fallback,
                started_ms: step.started_ms,
                finished_ms: step.started_ms.saturating_add(step.took_ms),
            })
        })
        .collect()
}

/// How many steps a `journal-steps` record holds, without decoding them.
pub(crate) fn count_steps(bytes: &[u8]) -> u64 {
    match bytes.split_first() {
        Some((&STEPS_V1, mut rest)) => prost::encoding::decode_varint(&mut rest).unwrap_or(0),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(seq: u64, outcome: StepOutcome, fallback: Option<Fallback>) -> StepRecord {
        StepRecord {
            execution_id: "x0000000000000007".into(),
            seq,
            instruction_id: format!("i{seq}"),
            attempt: 2,
            outcome,
            fallback,
            started_ms: 1_764_000_000_000 + seq,
            finished_ms: 1_764_000_000_005 + seq,
        }
    }

    fn json_of(value: &serde_json::Value) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(value)
    }

    #[test]
    fn every_outcome_and_fallback_reads_back_as_written() {
        let mut steps = vec![
            step(
                0,
                StepOutcome::Done {
                    output: json!({"a": [1, 2.5, "é\"x"]}),
                },
                None,
            ),
            step(1, StepOutcome::Skipped, Some(Fallback::Skip)),
            step(
                2,
                StepOutcome::Failed {
                    class: "timeout".into(),
                    message: "took too long".into(),
                },
                None,
            ),
            step(3, StepOutcome::AwaitingApproval, None),
            step(
                4,
                StepOutcome::Started {
                    idempotency_key: "x7/act/1".into(),
                    input: json!({"valve": "v"}),
                },
                None,
            ),
            step(
                5,
                StepOutcome::Ambiguous {
                    idempotency_key: "x7/act/1".into(),
                },
                None,
            ),
        ];
        for (i, fallback) in FALLBACKS.iter().enumerate() {
            steps.push(step(
                6 + i as u64,
                StepOutcome::Done {
                    output: json!(null),
                },
                Some(*fallback),
            ));
        }
        let bytes = encode_steps(&steps, json_of).expect("encode");
        assert_eq!(bytes[0], STEPS_V1);
        assert_eq!(count_steps(&bytes), steps.len() as u64);
        assert_eq!(
            decode_steps("x0000000000000007", &bytes).expect("decode"),
            steps
        );
    }

    #[test]
    fn a_json_record_of_an_earlier_version_still_reads() {
        let old = step(
            3,
            StepOutcome::Done {
                output: json!(12.5),
            },
            Some(Fallback::Retry),
        );
        let bytes = serde_json::to_vec(&old).expect("json");
        assert_eq!(count_steps(&bytes), 1);
        assert_eq!(decode_steps("ignored", &bytes).expect("decode"), vec![old]);
    }

    #[test]
    fn a_damaged_record_is_refused_with_a_reason() {
        let steps = [step(0, StepOutcome::Done { output: json!(1) }, None)];
        let mut bytes = encode_steps(&steps, json_of).expect("encode");
        bytes.truncate(bytes.len() - 3);
        assert!(decode_steps("x", &bytes).is_err());
        let mut wrong_count = encode_steps(&steps, json_of).expect("encode");
        wrong_count[1] = 5;
        let error = decode_steps("x", &wrong_count).expect_err("count");
        assert!(error.contains("says 5 steps"), "{error}");
    }
}
