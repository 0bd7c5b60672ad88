//! The canonical trace of an execution (`eyeflow_mcu::trace`: one `step` line per
//! instruction run, then the `end` line), built from what the journal holds — its steps and
//! its outcome — so that a server execution and a device's compare line by line.
//!
//! The journal's attempts of one instruction (consecutive records of one path) make one
//! step: `attempts` is the last attempt number, the outcome is the last record's (`ok`,
//! `fallback` for a FALLBACK_VALUE, `skipped`, `failed:<class>`). A LOOP's step follows its
//! body's and shows the number of iterations. The end is `aborted` when an ABORT ran.

use std::collections::HashMap;

use eyeflow_ir::pb::{IrOpcode, LlmIrProgram};
use eyeflow_mcu::Value as Mcu;
use eyeflow_mcu::trace::{self, ErrorClass, Outcome, Status, Step};
use serde_json::Value;

use super::error::Error;
use crate::ports::{ExecutionOutcome, Fallback, StepOutcome, StepRecord};

/// The canonical trace of an execution of `program` that journaled `steps` and ended with
/// `outcome`. Refuses what an MCU execution cannot hold: a value that is not a scalar, a
/// step of an unknown instruction, an unknown error class, a rejected execution.
pub fn canonical_trace(
    program: &LlmIrProgram,
    steps: &[StepRecord],
    outcome: &ExecutionOutcome,
) -> Result<String, Error> {
    let opcodes: HashMap<&str, i32> = program
        .instructions
        .iter()
        .map(|i| (i.instruction_id.as_str(), i.opcode))
        .collect();
    let mut out = String::new();
    let mut returned = Value::Null;
    let mut aborted = false;
    let mut n = 0u32;
    let mut rest = steps;
    while let Some(first) = rest.first() {
        let len = rest
            .iter()
            .take_while(|s| s.instruction_id == first.instruction_id)
            .count();
        let (group, after) = rest.split_at(len);
        rest = after;
        aborted |= group.iter().any(|s| s.fallback == Some(Fallback::Abort));
        let path = first.instruction_id.as_str();
        let id = path.rsplit('/').next().unwrap_or(path);
        let opcode = *opcodes
            .get(id)
            .ok_or_else(|| trace_error(path, "names no instruction of the program"))?;
        let Some(last) = group.iter().rev().find(|s| {
            matches!(
                s.outcome,
                StepOutcome::Done { .. } | StepOutcome::Skipped | StepOutcome::Failed { .. }
            )
        }) else {
            // Only an intent or a pause: the instruction has not ended.
            continue;
        };
        let (outcome, value) = match &last.outcome {
            StepOutcome::Done { output } => {
                let value = if opcode == IrOpcode::Loop as i32 {
                    Mcu::Num(output.as_array().map_or(0, Vec::len) as f64)
                } else {
                    scalar(output).ok_or_else(|| {
                        trace_error(path, "gave a list or an object, which no device holds")
                    })?
                };
                if opcode == IrOpcode::Return as i32 {
                    returned = output.clone();
                }
                let outcome = if last.fallback == Some(Fallback::FallbackValue) {
                    Outcome::Fallback
                } else {
                    Outcome::Ok
                };
                (outcome, value)
            }
            StepOutcome::Skipped => (Outcome::Skipped, Mcu::Null),
            StepOutcome::Failed { class, .. } => {
                (Outcome::Failed(error_class(path, class)?), Mcu::Null)
            }
            _ => continue,
        };
        n += 1;
        let step = Step {
            n,
            instruction_id: id,
            opcode,
            attempts: group.iter().map(|s| s.attempt).max().unwrap_or(1),
            outcome,
            value,
        };
        write(trace::write_step(&mut out, &step))?;
    }
    let status = match outcome {
        ExecutionOutcome::Completed { .. } => Status::Completed,
        ExecutionOutcome::Failed { .. } if aborted => Status::Aborted,
        ExecutionOutcome::Failed { class, .. } => Status::Failed(error_class("(end)", class)?),
        ExecutionOutcome::Rejected { instruction_id } => {
            return Err(trace_error(
                instruction_id,
                "was rejected by a human, which no device asks",
            ));
        }
    };
    let returned = match status {
        Status::Completed => {
            scalar(&returned).ok_or_else(|| trace_error("(end)", "returned a list or an object"))?
        }
        _ => Mcu::Null,
    };
    write(trace::write_end(&mut out, status, &returned))?;
    Ok(out)
}

/// The single line of a refused program or input.
pub fn refused_trace(reason: trace::Refusal) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = trace::write_refused(&mut out, reason);
    out
}

/// A JSON scalar as a device value (`None` for a list or an object).
fn scalar(value: &Value) -> Option<Mcu<'_>> {
    match value {
        Value::Null => Some(Mcu::Null),
        Value::Bool(b) => Some(Mcu::Bool(*b)),
        Value::Number(n) => n.as_f64().map(Mcu::Num),
        Value::String(s) => Some(Mcu::Str(s)),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// The error class journaled as `name`.
fn error_class(path: &str, name: &str) -> Result<ErrorClass, Error> {
    ErrorClass::from_name(name)
        .ok_or_else(|| trace_error(path, &format!("failed with the unknown class `{name}`")))
}

fn trace_error(path: &str, message: &str) -> Error {
    Error::Trace {
        instruction: path.to_owned(),
        message: message.to_owned(),
    }
}

/// Writing to a `String` cannot fail; a formatter that does is reported, not ignored.
fn write(result: std::fmt::Result) -> Result<(), Error> {
    result.map_err(|_| trace_error("(trace)", "the trace could not be written"))
}

#[cfg(test)]
mod tests {
    use eyeflow_ir::pb::IrInstruction;
    use serde_json::json;

    use super::*;

    fn program() -> LlmIrProgram {
        let ins = |id: &str, op: IrOpcode| IrInstruction {
            instruction_id: id.into(),
            opcode: op as i32,
            ..Default::default()
        };
        LlmIrProgram {
            instructions: vec![
                ins("read", IrOpcode::CallAction),
                ins("spin", IrOpcode::Loop),
                ins("tick", IrOpcode::Eval),
                ins("done", IrOpcode::Return),
            ],
            ..Default::default()
        }
    }

    fn step(
        path: &str,
        attempt: u32,
        outcome: StepOutcome,
        fallback: Option<Fallback>,
    ) -> StepRecord {
        StepRecord {
            execution_id: "e".into(),
            seq: 0,
            instruction_id: path.into(),
            attempt,
            outcome,
            fallback,
            started_ms: 0,
            finished_ms: 0,
        }
    }

    fn failed(class: &str) -> StepOutcome {
        StepOutcome::Failed {
            class: class.into(),
            message: "m".into(),
        }
    }

    fn done(output: Value) -> StepOutcome {
        StepOutcome::Done { output }
    }

    #[test]
    fn attempts_fallbacks_loops_and_the_return_value() {
        let steps = [
            step("read", 1, failed("unavailable"), Some(Fallback::Retry)),
            step(
                "read",
                2,
                StepOutcome::Started {
                    idempotency_key: "k".into(),
                    input: Value::Null,
                },
                None,
            ),
            step("read", 2, failed("timeout"), Some(Fallback::FallbackValue)),
            step("read", 2, done(json!(1.5)), Some(Fallback::FallbackValue)),
            step("spin/0/tick", 1, done(json!("a")), None),
            step("spin/1/tick", 1, done(json!(true)), None),
            step("spin", 1, done(json!([{}, {}])), None),
            step("done", 1, done(json!(2)), None),
        ];
        let outcome = ExecutionOutcome::Completed { value: json!(2) };
        let trace = canonical_trace(&program(), &steps, &outcome).unwrap();
        let lines: Vec<&str> = trace.lines().collect();
        let digest = |v: Mcu<'_>| v.digest().to_string();
        assert_eq!(
            lines,
            [
                format!(
                    "step 1 read CALL_ACTION 2 fallback {}",
                    digest(Mcu::Num(1.5))
                ),
                format!("step 2 tick EVAL 1 ok {}", digest(Mcu::Str("a"))),
                format!("step 3 tick EVAL 1 ok {}", digest(Mcu::Bool(true))),
                format!("step 4 spin LOOP 1 ok {}", digest(Mcu::Num(2.0))),
                format!("step 5 done RETURN 1 ok {}", digest(Mcu::Num(2.0))),
                format!("end completed {}", digest(Mcu::Num(2.0))),
            ]
        );
    }

    #[test]
    fn skips_failures_and_aborts() {
        let null = Mcu::Null.digest().to_string();
        let steps = [
            step("tick", 1, failed("invalid_input"), Some(Fallback::Skip)),
            step("tick", 1, StepOutcome::Skipped, Some(Fallback::Skip)),
            step("read", 1, failed("unavailable"), Some(Fallback::Abort)),
            step("done", 1, done(json!(null)), None),
        ];
        let outcome = ExecutionOutcome::Failed {
            class: "unavailable".into(),
            message: "aborted".into(),
        };
        let trace = canonical_trace(&program(), &steps, &outcome).unwrap();
        assert_eq!(
            trace,
            format!(
                "step 1 tick EVAL 1 skipped {null}\nstep 2 read CALL_ACTION 1 failed:unavailable {null}\nstep 3 done RETURN 1 ok {null}\nend aborted {null}\n"
            )
        );
        let outcome = ExecutionOutcome::Failed {
            class: "timeout".into(),
            message: "m".into(),
        };
        let trace = canonical_trace(&program(), &steps[..2], &outcome).unwrap();
        assert!(
            trace.ends_with(&format!("end failed:timeout {null}\n")),
            "{trace}"
        );
        let err = canonical_trace(
            &program(),
            &[step("tick", 1, done(json!({"a": 1})), None)],
            &outcome,
        )
        .unwrap_err();
        assert!(err.to_string().contains("list or an object"), "{err}");
    }
}
