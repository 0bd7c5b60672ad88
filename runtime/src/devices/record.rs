//! What crosses the gateway, in the node's terms: a device's messages as owned values,
//! an event's JSON as a RUN's fields and back, and a trace's step line as an audit entry.

use eyeflow_actors::ports::AuditEntry;
use eyeflow_mcu::Value;
use eyeflow_mcu::frame::{Fields, Message};
use eyeflow_mcu::limits::{MAX_EVENT_FIELDS, MAX_STR};
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

/// A scalar field value the node owns.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string of at most `MAX_STR` bytes.
    Str(String),
}

impl Scalar {
    fn of(value: Value<'_>) -> Self {
        match value {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(b),
            Value::Num(n) => Scalar::Num(n),
            Value::Str(s) => Scalar::Str(s.to_owned()),
        }
    }

    /// As the codec's value.
    pub fn value(&self) -> Value<'_> {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Num(n) => Value::Num(*n),
            Scalar::Str(s) => Value::Str(s),
        }
    }

    /// As JSON: a whole number within ±2^53 as an integer, as the server's MCU
    /// executions give it.
    pub fn json(&self) -> Json {
        match self {
            Scalar::Null => Json::Null,
            Scalar::Bool(b) => Json::Bool(*b),
            Scalar::Num(n) if n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_992.0 => {
                Json::from(*n as i64)
            }
            Scalar::Num(n) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
            Scalar::Str(s) => Json::String(s.clone()),
        }
    }
}

/// Named fields the node owns (an event, an LLM_CALL's context).
pub type OwnedFields = Vec<(String, Scalar)>;

fn owned(fields: &Fields<'_>) -> OwnedFields {
    fields
        .iter()
        .map(|(path, value)| (path.to_owned(), Scalar::of(value)))
        .collect()
}

/// Dotted fields as a JSON object (`a.b` nests `b` in `a`).
pub(super) fn fields_json(fields: &OwnedFields) -> Json {
    let mut root = Map::new();
    for (path, value) in fields {
        let mut segments = path.split('.').peekable();
        let mut at = &mut root;
        while let Some(segment) = segments.next() {
            if segments.peek().is_none() {
                at.insert(segment.to_owned(), value.json());
                break;
            }
            let next = at
                .entry(segment.to_owned())
                .or_insert_with(|| Json::Object(Map::new()));
            if !next.is_object() {
                *next = Json::Object(Map::new());
            }
            match next {
                Json::Object(map) => at = map,
                _ => break,
            }
        }
    }
    Json::Object(root)
}

/// A RUN's fields from an event's JSON: an object whose leaves are scalars (nested
/// objects become dotted paths), at most `MAX_EVENT_FIELDS`, strings of at most `MAX_STR`
/// bytes.
pub fn event_fields(body: &Json) -> Result<OwnedFields, String> {
    fn walk(prefix: &str, value: &Json, out: &mut OwnedFields) -> Result<(), String> {
        let scalar = match value {
            Json::Object(map) => {
                for (name, value) in map {
                    let path = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    walk(&path, value, out)?;
                }
                return Ok(());
            }
            Json::Array(_) => {
                return Err(format!(
                    "field `{prefix}` is a list; a device takes scalars only"
                ));
            }
            Json::Null => Scalar::Null,
            Json::Bool(b) => Scalar::Bool(*b),
            Json::Number(n) => Scalar::Num(n.as_f64().unwrap_or(f64::NAN)),
            Json::String(s) if s.len() > MAX_STR => {
                return Err(format!(
                    "field `{prefix}` has {} bytes; a device holds strings of at most {MAX_STR}",
                    s.len()
                ));
            }
            Json::String(s) => Scalar::Str(s.clone()),
        };
        if !eyeflow_mcu::code::is_path(prefix) {
            return Err(format!(
                "`{prefix}` is not a field path a device takes (identifiers joined by dots, at most {} bytes)",
                eyeflow_mcu::limits::MAX_PATH
            ));
        }
        out.push((prefix.to_owned(), scalar));
        Ok(())
    }
    if !body.is_object() {
        return Err("the event must be a JSON object".to_owned());
    }
    let mut out = Vec::new();
    walk("", body, &mut out)?;
    if out.len() > MAX_EVENT_FIELDS {
        return Err(format!(
            "the event has {} fields; a device takes at most {MAX_EVENT_FIELDS}",
            out.len()
        ));
    }
    Ok(out)
}

/// A device's message, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// HELLO.
    Hello {
        /// The id it says it has.
        device: String,
        /// Its firmware version.
        firmware: String,
        /// Its capabilities and their versions.
        capabilities: Vec<(String, String)>,
        /// The program it runs.
        program: Option<(String, String)>,
        /// Whether it started since a PONG last answered it (else it greets again).
        started: bool,
    },
    /// LOADED.
    Loaded(String, String),
    /// REFUSED, with the reason.
    Refused(String),
    /// TRACE.
    Trace {
        /// The execution's number on the device.
        execution: u32,
        /// The line.
        line: String,
    },
    /// EVENT.
    Event {
        /// Topic.
        topic: String,
        /// Key.
        key: String,
        /// Fields.
        fields: OwnedFields,
    },
    /// LLM_REQUEST.
    LlmRequest {
        /// Its id.
        request: u32,
        /// The program (id, version).
        program: (String, String),
        /// The LLM_CALL's instruction id.
        instruction: String,
        /// The frozen context.
        context: OwnedFields,
    },
    /// PING.
    Ping,
}

impl Incoming {
    /// A device's message; a node's message (DEPLOY, RUN, ...) coming from a device is an
    /// error.
    pub fn from_message(message: Message<'_>) -> Result<Self, String> {
        Ok(match message {
            Message::Hello {
                device,
                firmware,
                capabilities,
                program,
                started,
            } => Incoming::Hello {
                device: device.to_owned(),
                firmware: firmware.to_owned(),
                capabilities: capabilities
                    .iter()
                    .map(|c| (c.id.to_owned(), c.version.to_owned()))
                    .collect(),
                program: program.map(|p| (p.id.to_owned(), p.version.to_owned())),
                started,
            },
            Message::Loaded(p) => Incoming::Loaded(p.id.to_owned(), p.version.to_owned()),
            Message::Refused { reason } => Incoming::Refused(reason.to_owned()),
            Message::Trace { execution, line } => Incoming::Trace {
                execution,
                line: line.to_owned(),
            },
            Message::Event { topic, key, fields } => Incoming::Event {
                topic: topic.to_owned(),
                key: key.to_owned(),
                fields: owned(&fields),
            },
            Message::LlmRequest {
                request,
                program,
                instruction,
                context,
            } => Incoming::LlmRequest {
                request,
                program: (program.id.to_owned(), program.version.to_owned()),
                instruction: instruction.to_owned(),
                context: owned(&context),
            },
            Message::Ping => Incoming::Ping,
            other => {
                return Err(format!(
                    "message type {:#04x} goes from a node to a device, not back",
                    other.kind()
                ));
            }
        })
    }
}

/// Where a device's execution ran, for its audit entries.
pub(super) struct Origin<'a> {
    /// The device's id.
    pub(super) device: &'a str,
    /// The execution's id in the node's records.
    pub(super) execution_id: String,
    /// The program it ran (id, version), when known.
    pub(super) program: Option<&'a (String, String)>,
    /// Hex SHA-256 of that program's signed file, when the node sent it.
    pub(super) program_sha256: Option<String>,
}

/// The audit entry of a trace `step` line, or `None` for other lines (`end`, `refused`).
/// The step's value digest is the entry's output digest; its input digest is the
/// SHA-256 of the line, which is all the device reports of the step.
pub(super) fn audit_entry(
    origin: &Origin<'_>,
    line: &str,
    now_ms: u64,
) -> Result<Option<AuditEntry>, String> {
    let mut words = line.split(' ');
    if words.next() != Some("step") {
        return Ok(None);
    }
    let malformed = || format!("malformed trace line `{line}`");
    let mut next = || words.next().ok_or_else(malformed);
    let (_n, instruction, opcode, _attempts, outcome, digest) =
        (next()?, next()?, next()?, next()?, next()?, next()?);
    let (outcome, fallback) = match outcome {
        "ok" => ("done".to_owned(), None),
        "fallback" => ("done".to_owned(), Some("fallback_value".to_owned())),
        "skipped" => ("skipped".to_owned(), Some("skip".to_owned())),
        failed if failed.starts_with("failed:") => (failed.to_owned(), None),
        _ => return Err(malformed()),
    };
    let (program_id, program_version) = origin.program.cloned().unwrap_or_default();
    Ok(Some(AuditEntry {
        node_id: format!("device/{}", origin.device),
        execution_id: origin.execution_id.clone(),
        program_id,
        program_version,
        program_sha256: origin.program_sha256.clone(),
        instruction_id: instruction.to_owned(),
        opcode: opcode.to_owned(),
        input_digest: hex::encode(Sha256::digest(line.as_bytes())),
        output_digest: digest.to_owned(),
        outcome,
        fallback,
        started_ms: now_ms,
        finished_ms: now_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_becomes_dotted_fields_and_back() {
        let body = json!({"level": 82.5, "mode": "auto", "tank": {"ok": true, "n": 3}});
        let fields = event_fields(&body).unwrap();
        assert_eq!(
            fields,
            [
                ("level".to_owned(), Scalar::Num(82.5)),
                ("mode".to_owned(), Scalar::Str("auto".to_owned())),
                ("tank.n".to_owned(), Scalar::Num(3.0)),
                ("tank.ok".to_owned(), Scalar::Bool(true)),
            ]
        );
        assert_eq!(fields_json(&fields), body);
    }

    #[test]
    fn events_a_device_cannot_hold_are_refused_with_the_reason() {
        let err = event_fields(&json!({"xs": [1]})).unwrap_err();
        assert!(err.contains("`xs` is a list"), "{err}");
        let err = event_fields(&json!({"s": "x".repeat(40)})).unwrap_err();
        assert!(err.contains("at most 32"), "{err}");
        let err = event_fields(&json!(3)).unwrap_err();
        assert!(err.contains("JSON object"), "{err}");
        let many: Map<String, Json> = (0..17).map(|i| (format!("f{i}"), json!(i))).collect();
        let err = event_fields(&Json::Object(many)).unwrap_err();
        assert!(err.contains("at most 16"), "{err}");
        let err = event_fields(&json!({"bad key": 1})).unwrap_err();
        assert!(err.contains("not a field path"), "{err}");
    }

    #[test]
    fn a_step_line_is_an_audit_entry() {
        let program = ("threshold".to_owned(), "1.0.0".to_owned());
        let origin = Origin {
            device: "pump-1",
            execution_id: "device/pump-1/5/1".to_owned(),
            program: Some(&program),
            program_sha256: Some("ab".repeat(32)),
        };
        let entry = audit_entry(
            &origin,
            "step 2 fallback_level LOAD_RESOURCE 3 fallback 1234567890abcdef",
            7,
        )
        .unwrap()
        .unwrap();
        assert_eq!(entry.node_id, "device/pump-1");
        assert_eq!(entry.instruction_id, "fallback_level");
        assert_eq!(entry.opcode, "LOAD_RESOURCE");
        assert_eq!(entry.outcome, "done");
        assert_eq!(entry.fallback.as_deref(), Some("fallback_value"));
        assert_eq!(entry.output_digest, "1234567890abcdef");
        assert_eq!(entry.program_id, "threshold");
        let failed = audit_entry(
            &origin,
            "step 3 open CALL_ACTION 1 failed:timeout 6e340b9cffb37a98",
            7,
        )
        .unwrap()
        .unwrap();
        assert_eq!(failed.outcome, "failed:timeout");
        assert_eq!(
            audit_entry(&origin, "end completed 6e340b9cffb37a98", 7),
            Ok(None)
        );
        assert!(audit_entry(&origin, "step 3 open", 7).is_err());
    }
}
