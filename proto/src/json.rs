//! JSON view of a program for humans (`eyeflow ir decode --pretty`): enum fields are
//! printed by name, the signature and the MCU bytecode as hex. The JSON is a view, never signed or parsed back.

use serde::Serializer;

use crate::pb::{
    ErrorClass, FallbackStrategy, IrOpcode, LlmIrProgram, MemoryScope, Target, TriggerKind,
};

macro_rules! enum_name {
    ($fn_name:ident, $ty:ty) => {
        pub(crate) fn $fn_name<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
            match <$ty>::try_from(*value) {
                Ok(known) => s.serialize_str(known.as_str_name()),
                Err(_) => s.serialize_i32(*value),
            }
        }
    };
}

enum_name!(trigger_kind, TriggerKind);
enum_name!(opcode, IrOpcode);
enum_name!(fallback_strategy, FallbackStrategy);
enum_name!(memory_scope, MemoryScope);
enum_name!(error_class, ErrorClass);
enum_name!(target, Target);

pub(crate) fn error_classes<S: Serializer>(values: &[i32], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    struct Named(i32);
    impl serde::Serialize for Named {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            error_class(&self.0, s)
        }
    }
    let mut seq = s.serialize_seq(Some(values.len()))?;
    for v in values {
        seq.serialize_element(&Named(*v))?;
    }
    seq.end()
}

pub(crate) fn hex_bytes<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// Renders a program as indented JSON with opcode and strategy names.
pub fn to_pretty_json(program: &LlmIrProgram) -> String {
    // Serializing plain structs of strings and numbers into a String cannot fail.
    serde_json::to_string_pretty(program).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
