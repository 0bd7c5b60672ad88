//! MCU-profile programs on the server: [`run_vector`] runs a conformance vector (a signed
//! program and its script) through the real executor, with the script's hardware behind
//! the plugin port, and gives its canonical trace; [`generate`] writes the vectors from
//! their sources with the server's own compiler. `eyeflow mcu run` and `eyeflow mcu
//! vectors` are these two; the firmware must print the same traces (docs/firmware.md).

mod vectors;
mod world;

use std::sync::Arc;

use eyeflow_actors::exec::{self, Program, Report};
use eyeflow_actors::ports::{Accepted, EventRecord, Journal};
use eyeflow_ir::mcu::ViolationKind;
use eyeflow_ir::pb::Target;
use eyeflow_ir::{Keyring, Limits};
use eyeflow_mcu::Value as Mcu;
use eyeflow_mcu::script::Script;
use eyeflow_mcu::trace::Refusal;
use serde_json::{Map, Value};

pub use vectors::generate;

use crate::audit::{AuditConfig, FjallAudit};
use crate::journal::FjallJournal;
use crate::store::{Durability, EmbeddedStore};
use crate::{Error, Result};

/// The key id the vectors are signed under, as a device's keyring names its key.
pub const TEST_KEY_ID: &str = "test";

/// The seed of the test signing key (never a production key).
pub const TEST_SEED: [u8; 32] = [7; 32];

/// The seed of the key the `wrong_key` vector is signed with, under [`TEST_KEY_ID`].
pub const WRONG_SEED: [u8; 32] = [9; 32];

/// A device's keyring: the public key of `seed` under [`TEST_KEY_ID`].
pub fn device_keyring(seed: [u8; 32]) -> Keyring {
    let mut keyring = Keyring::new();
    keyring.trust_as(
        TEST_KEY_ID,
        ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key(),
    );
    keyring
}

/// Runs the vector `program` (the signed file) with `input` (its script) as a device
/// trusting `keyring` would, and returns its canonical trace: the `refused` line for a
/// program or input a device refuses, else the steps and the end. An error is the
/// server's own failure (the journal, a trace it cannot write), never the vector's.
pub async fn run_vector(program: &[u8], input: &[u8], keyring: &Keyring) -> Result<String> {
    let prepared = match admit(program, input, keyring) {
        Ok(admitted) => admitted,
        Err(reason) => return Ok(exec::refused_trace(reason)),
    };
    let (program, payload, hardware) = prepared;
    let event = EventRecord {
        event_id: "vector".into(),
        source: "mcu".into(),
        program_id: program.id().to_owned(),
        program_version: program.version().to_owned(),
        payload,
        priority: 128,
        accepted_at_ms: 0,
    };
    // The node's own journal and audit chain, on a data directory of their own: the
    // trace is read back from what the journal recorded, as an operator reads an execution.
    let dir = tempfile::tempdir().map_err(|e| vector_error(program.id(), e.to_string()))?;
    let store = EmbeddedStore::open(dir.path())?;
    let audit = Arc::new(FjallAudit::open(store.clone(), AuditConfig::default())?);
    let journal = Arc::new(FjallJournal::open(store, Durability::Buffered)?.with_audit(audit));
    let execution_id = match journal.accept(&event) {
        Ok(Accepted::New { execution_id } | Accepted::Duplicate { execution_id }) => execution_id,
        Err(e) => return Err(vector_error(program.id(), e.to_string())),
    };
    let effects = world::effects(Arc::new(hardware), journal.clone());
    let report = exec::execute(&program, &execution_id, &event, &[], &effects).await;
    if !matches!(report, Report::Finished(_)) {
        return Err(vector_error(
            program.id(),
            format!("the execution did not finish: {report:?}"),
        ));
    }
    let Some((_, steps, Some(outcome))) = journal.execution(&execution_id)? else {
        return Err(vector_error(
            program.id(),
            "the journal holds no outcome for the execution",
        ));
    };
    exec::canonical_trace(program.ir(), &steps, &outcome)
        .map_err(|e| vector_error(program.id(), e.to_string()))
}

/// What a device checks before running, in its order: the script, the file, the
/// signature, the IR version, the target, the profile.
fn admit(
    bytes: &[u8],
    input: &[u8],
    keyring: &Keyring,
) -> std::result::Result<(Program, Value, world::ScriptedHardware), Refusal> {
    let script = Script::parse(input).map_err(|_| Refusal::Malformed)?;
    let program = eyeflow_ir::decode(bytes, &Limits::default()).map_err(|e| match e {
        eyeflow_ir::Error::TooLarge { .. } | eyeflow_ir::Error::TooManyInstructions { .. } => {
            Refusal::Capacity
        }
        _ => Refusal::Malformed,
    })?;
    keyring.verify(&program).map_err(|e| match e {
        eyeflow_ir::Error::UnknownKey { .. } | eyeflow_ir::Error::RevokedKey { .. } => {
            Refusal::UnknownKey
        }
        _ => Refusal::BadSignature,
    })?;
    eyeflow_ir::version::check_runtime_compatible(&program.ir_version)
        .map_err(|_| Refusal::IrVersion)?;
    if program.target != Target::Mcu as i32 {
        return Err(Refusal::NotMcu);
    }
    eyeflow_ir::validate(&program).map_err(|e| match e {
        eyeflow_ir::Error::McuProfile(v) => match v.kind {
            ViolationKind::NotMcu => Refusal::NotMcu,
            ViolationKind::Capacity => Refusal::Capacity,
            ViolationKind::Malformed => Refusal::Malformed,
        },
        _ => Refusal::Malformed,
    })?;
    let program = Program::prepare(Arc::new(program)).map_err(|_| Refusal::Malformed)?;
    let payload = event_of(&script).ok_or(Refusal::Malformed)?;
    let hardware = world::ScriptedHardware::new(&script).ok_or(Refusal::Malformed)?;
    Ok((program, payload, hardware))
}

/// The event of a script as JSON: each dotted path a nested field (`None` if a path runs
/// through another field's value, or a number is not finite).
fn event_of(script: &Script<'_>) -> Option<Value> {
    let mut event = Map::new();
    for (path, value) in script.fields() {
        let mut at = &mut event;
        let mut segments = path.split('.').peekable();
        while let Some(segment) = segments.next() {
            if segments.peek().is_none() {
                at.insert(segment.to_owned(), json_of(&value)?);
            } else {
                let next = at
                    .entry(segment.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                at = next.as_object_mut()?;
            }
        }
    }
    Some(Value::Object(event))
}

/// A device value as JSON (`None` for a number JSON cannot hold).
fn json_of(value: &Mcu<'_>) -> Option<Value> {
    Some(match value {
        Mcu::Null => Value::Null,
        Mcu::Bool(b) => Value::Bool(*b),
        Mcu::Num(n) => Value::Number(serde_json::Number::from_f64(*n)?),
        Mcu::Str(s) => Value::String((*s).to_owned()),
    })
}

fn vector_error(name: &str, reason: impl Into<String>) -> Error {
    Error::Vector {
        name: name.to_owned(),
        reason: reason.into(),
    }
}
