//! The conformance vectors, generated from their sources with the server's own code:
//! each `NAME.input.json` of the source folder (its rule, how its program is made, its
//! event and hardware answers) becomes `NAME/program.ir`, `NAME/input.bin` and
//! `NAME/expected.trace` (the server's run of it). Deterministic: a fixed compilation
//! time, deterministic signatures, timings far from their deadlines.

use std::path::Path;

use eyeflow_compiler::{CompileOptions, Target};
use eyeflow_ir::keys;
use eyeflow_ir::pb::LlmIrProgram;
use eyeflow_mcu::Value as Mcu;
use eyeflow_mcu::script::{self, Answer};
use eyeflow_mcu::trace::ErrorClass;
use serde::Deserialize;
use serde_json::Value;

use super::{TEST_KEY_ID, TEST_SEED, WRONG_SEED, device_keyring, run_vector, vector_error};
use crate::{Error, Result};

/// The compilation time every vector records (2026-01-01T00:00:00Z).
const COMPILED_AT: i64 = 1_767_225_600;

/// Who every vector is compiled by; the `bit_flip` vector flips a bit of it.
const COMPILED_BY: &str = "eyeflow mcu vectors";

/// A vector's source, `NAME.input.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    /// The rule file in the source folder (default `NAME.yaml`).
    rule: Option<String>,
    /// How the program file is made from the rule (default: compiled for the MCU, signed).
    #[serde(default)]
    program: Make,
    /// The event: a JSON object of scalars (nested objects become dotted paths).
    #[serde(default)]
    event: serde_json::Map<String, Value>,
    /// The hardware's answers, in call order.
    #[serde(default)]
    hardware: Vec<HardwareAnswer>,
}

/// How a vector's program file is made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Make {
    /// Compiled for the MCU, signed with the test key.
    #[default]
    Signed,
    /// Signed, then one bit of `compiled_by` flipped in the file.
    BitFlip,
    /// Compiled for the MCU, not signed.
    Unsigned,
    /// Signed with another key under the test key's id.
    WrongKey,
    /// Signed with the test key under a key id the device does not know.
    UnknownKey,
    /// An IR version no runtime knows, signed.
    IrVersion,
    /// Compiled for a server, signed.
    ServerTarget,
    /// Every string fallback value made longer than a device holds, then signed.
    LongString,
}

/// One hardware answer of a source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HardwareAnswer {
    /// The capability called.
    capability: String,
    /// The action (`read` for a LOAD_RESOURCE, the default).
    #[serde(default = "read")]
    action: String,
    /// How long the hardware takes, in milliseconds.
    #[serde(default)]
    delay_ms: u32,
    /// The answer (a JSON scalar), unless `error` is given.
    value: Option<Value>,
    /// The failure's error class (`timeout`, `unavailable`, `invalid_input`...).
    error: Option<String>,
}

fn read() -> String {
    super::world::READ.to_owned()
}

/// Generates every vector of `src` (its `*.input.json`) into `out`, in name order;
/// returns each name with its expected trace.
pub fn generate(src: &Path, out: &Path) -> Result<Vec<(String, String)>> {
    let mut names: Vec<String> = std::fs::read_dir(src)
        .map_err(Error::io(src))?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".input.json").map(str::to_owned)
        })
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(vector_error(
            &src.display().to_string(),
            "holds no NAME.input.json; expected the vector sources (firmware/vectors/src)",
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(Error::io("(vector runtime)"))?;
    let keyring = device_keyring(TEST_SEED);
    let mut traces = Vec::with_capacity(names.len());
    for name in names {
        let (program, input) = build(src, &name)?;
        let trace = runtime.block_on(run_vector(&program, &input, &keyring))?;
        let dir = out.join(&name);
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        for (file, bytes) in [
            ("program.ir", program.as_slice()),
            ("input.bin", input.as_slice()),
            ("expected.trace", trace.as_bytes()),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, bytes).map_err(Error::io(&path))?;
        }
        traces.push((name, trace));
    }
    Ok(traces)
}

/// The program file and the script of vector `name`.
fn build(src: &Path, name: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let fail = |reason: String| vector_error(name, reason);
    let path = src.join(format!("{name}.input.json"));
    let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
    let source: Source =
        serde_json::from_str(&text).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let rule = source
        .rule
        .clone()
        .unwrap_or_else(|| format!("{name}.yaml"));
    let rule_path = src.join(&rule);
    let rule_text = std::fs::read_to_string(&rule_path).map_err(Error::io(&rule_path))?;
    let options = CompileOptions {
        source_name: rule,
        compiled_by: COMPILED_BY.into(),
        compiled_at: COMPILED_AT,
    };
    let target = match source.program {
        Make::ServerTarget => Target::Server,
        _ => Target::Mcu,
    };
    let mut program = eyeflow_compiler::compile_for(&rule_text, &options, target)
        .map_err(|e| fail(e.to_string()))?;
    let test_key = ed25519_dalek::SigningKey::from_bytes(&TEST_SEED);
    match source.program {
        Make::Signed | Make::BitFlip | Make::ServerTarget => {
            keys::sign_as(&mut program, &test_key, TEST_KEY_ID)
        }
        Make::Unsigned => {}
        Make::WrongKey => keys::sign_as(
            &mut program,
            &ed25519_dalek::SigningKey::from_bytes(&WRONG_SEED),
            TEST_KEY_ID,
        ),
        Make::UnknownKey => keys::sign_as(&mut program, &test_key, "other"),
        Make::IrVersion => {
            program.ir_version = "99.0".into();
            keys::sign_as(&mut program, &test_key, TEST_KEY_ID);
        }
        Make::LongString => {
            lengthen_fallback_strings(&mut program).map_err(fail)?;
            keys::sign_as(&mut program, &test_key, TEST_KEY_ID);
        }
    }
    let mut bytes = eyeflow_ir::encode(&program);
    if source.program == Make::BitFlip {
        let at = bytes
            .windows(COMPILED_BY.len())
            .position(|w| w == COMPILED_BY.as_bytes())
            .ok_or_else(|| fail("compiled_by is not in the file".into()))?;
        // 'e' becomes 'd': still UTF-8 and canonical, so only the signature catches it.
        bytes[at] ^= 0x01;
    }
    Ok((bytes, script_of(&source).map_err(fail)?))
}

/// Makes every string fallback value one byte longer than a device holds.
fn lengthen_fallback_strings(program: &mut LlmIrProgram) -> std::result::Result<(), String> {
    let long = Value::String("x".repeat(eyeflow_mcu::limits::MAX_STR + 1)).to_string();
    let mut changed = false;
    for fallback in program
        .instructions
        .iter_mut()
        .filter_map(|i| i.fallback.as_mut())
    {
        if fallback.value_json.starts_with('"') {
            fallback.value_json.clone_from(&long);
            changed = true;
        }
    }
    if changed {
        Ok(())
    } else {
        Err("long_string needs an instruction with a string fallback value".into())
    }
}

/// The script of a source: its event flattened to dotted paths, its answers.
fn script_of(source: &Source) -> std::result::Result<Vec<u8>, String> {
    let mut fields = Vec::new();
    flatten("", &source.event, &mut fields)?;
    let fields: Vec<(&str, Mcu<'_>)> = fields
        .iter()
        .map(|(path, value)| Ok((path.as_str(), scalar(value)?)))
        .collect::<std::result::Result<_, String>>()?;
    let answers = source
        .hardware
        .iter()
        .map(|a| {
            let result = match (&a.value, &a.error) {
                (Some(value), None) => Ok(scalar(value)?),
                (None, Some(class)) => Err(error_class(class)?),
                _ => {
                    return Err(format!(
                        "the answer for `{}` `{}` needs exactly one of `value` and `error`",
                        a.capability, a.action
                    ));
                }
            };
            Ok(Answer {
                capability: &a.capability,
                action: &a.action,
                delay_ms: a.delay_ms,
                result,
            })
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    script::encode(&fields, &answers).map_err(|e| format!("the script: {e}"))
}

/// The scalar fields of `object` under `prefix`, as (dotted path, value).
fn flatten<'a>(
    prefix: &str,
    object: &'a serde_json::Map<String, Value>,
    out: &mut Vec<(String, &'a Value)>,
) -> std::result::Result<(), String> {
    for (key, value) in object {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(inner) => flatten(&path, inner, out)?,
            _ => out.push((path, value)),
        }
    }
    Ok(())
}

/// A JSON scalar as a device value.
fn scalar(value: &Value) -> std::result::Result<Mcu<'_>, String> {
    match value {
        Value::Null => Ok(Mcu::Null),
        Value::Bool(b) => Ok(Mcu::Bool(*b)),
        Value::Number(n) => n
            .as_f64()
            .map(Mcu::Num)
            .ok_or_else(|| format!("{n} is not an f64")),
        Value::String(s) => Ok(Mcu::Str(s)),
        Value::Array(_) => Err("a list, which a device does not hold".into()),
        Value::Object(_) => Err("an object where a scalar is expected".into()),
    }
}

/// The class named `name`, among those the server's ports report.
fn error_class(name: &str) -> std::result::Result<ErrorClass, String> {
    let class =
        ErrorClass::from_name(name).ok_or_else(|| format!("`{name}` is not an error class"))?;
    if super::world::call_error_kind(class) == eyeflow_actors::ports::CallErrorKind::Internal
        && class != ErrorClass::Internal
    {
        return Err(format!(
            "no port reports `{name}`; expected timeout, unavailable, invalid_input, denied, internal..."
        ));
    }
    Ok(class)
}
