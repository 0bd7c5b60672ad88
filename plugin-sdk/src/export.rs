//! The traits a plugin implements and the glue between them and the WIT exports.
//!
//! The `export_capability!` / `export_connector!` macros implement the generated WIT
//! `Guest` traits on a hidden type by calling the functions at the bottom of this
//! module; JSON crosses the boundary as strings and is parsed and written here.

use serde_json::Value;

use crate::PluginError;
use crate::bindings::capability::eyeflow::plugin::types::PluginError as WitPluginError;
use crate::bindings::connector::exports::eyeflow::plugin::source as wit_source;

/// A capability plugin: performs actions on the world (WIT world `capability`, export
/// `eyeflow:plugin/actions`). Export an implementation with
/// [`export_capability!`](crate::export_capability).
pub trait Capability {
    /// A JSON document describing the capability: actions, side effects, schemas.
    fn describe() -> Value;

    /// Perform `action` with `input`. The same `idempotency_key` may arrive twice after a
    /// crash: act once.
    fn invoke(action: &str, input: Value, idempotency_key: &str) -> Result<Value, PluginError>;
}

/// A connector plugin: reads resources by key, optionally an event source (WIT world
/// `connector`, exports `eyeflow:plugin/reader` and `eyeflow:plugin/source`). Export an
/// implementation with [`export_connector!`](crate::export_connector).
pub trait Connector {
    /// A JSON document describing the connector: resources it serves, parameters.
    fn describe() -> Value;

    /// Read the resource `key` with `params`; returns one JSON document.
    fn read(key: &str, params: Value) -> Result<Value, PluginError>;

    /// Up to `max` events after `cursor` (`None` = from the start) and the cursor to pass
    /// next time. The default says the connector is not an event source.
    fn poll(cursor: Option<String>, max: u32) -> Result<Batch, PluginError> {
        let _ = (cursor, max);
        Err(PluginError::unavailable("not an event source"))
    }
}

/// Events returned by [`Connector::poll`] and the cursor that follows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The events, oldest first.
    pub events: Vec<Event>,
    /// The cursor to pass to the next poll.
    pub cursor: String,
}

/// One event of a source. `id` is unique per source and stable across polls.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique, stable id of the event.
    pub id: String,
    /// The resource key the event is about.
    pub key: String,
    /// The event's JSON payload.
    pub payload: Value,
}

fn parse(what: &str, text: &str) -> Result<Value, WitPluginError> {
    // An empty string means "no input": `null`, so hosts may omit params.
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text)
        .map_err(|e| WitPluginError::InvalidInput(format!("{what} is not valid JSON: {e}")))
}

fn to_json(value: &Value) -> Result<String, WitPluginError> {
    serde_json::to_string(value)
        .map_err(|e| WitPluginError::Internal(format!("cannot serialize output: {e}")))
}

#[doc(hidden)]
pub fn describe_capability<T: Capability>() -> String {
    T::describe().to_string()
}

#[doc(hidden)]
pub fn invoke_capability<T: Capability>(
    action: &str,
    input: &str,
    idempotency_key: &str,
) -> Result<String, WitPluginError> {
    let input = parse("input", input)?;
    let output = T::invoke(action, input, idempotency_key)?;
    to_json(&output)
}

#[doc(hidden)]
pub fn describe_connector<T: Connector>() -> String {
    T::describe().to_string()
}

#[doc(hidden)]
pub fn read_connector<T: Connector>(key: &str, params: &str) -> Result<String, WitPluginError> {
    let params = parse("params", params)?;
    let document = T::read(key, params)?;
    to_json(&document)
}

#[doc(hidden)]
pub fn poll_connector<T: Connector>(
    cursor: Option<String>,
    max: u32,
) -> Result<wit_source::Batch, WitPluginError> {
    let batch = T::poll(cursor, max)?;
    let events = batch
        .events
        .into_iter()
        .map(|e| {
            Ok(wit_source::Event {
                id: e.id,
                key: e.key,
                payload: to_json(&e.payload)?,
            })
        })
        .collect::<Result<Vec<_>, WitPluginError>>()?;
    Ok(wit_source::Batch {
        events,
        cursor: batch.cursor,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct Echo;

    impl Capability for Echo {
        fn describe() -> Value {
            json!({"actions": ["echo", "fail"]})
        }

        fn invoke(action: &str, input: Value, key: &str) -> Result<Value, PluginError> {
            match action {
                "fail" => Err(PluginError::denied("no")),
                _ => Ok(json!({"action": action, "input": input, "key": key})),
            }
        }
    }

    struct Reader;

    impl Connector for Reader {
        fn describe() -> Value {
            json!({})
        }

        fn read(key: &str, params: Value) -> Result<Value, PluginError> {
            Ok(json!({"key": key, "params": params}))
        }
    }

    #[test]
    fn invoke_parses_input_and_writes_output() {
        let out = invoke_capability::<Echo>("echo", r#"{"a":1}"#, "k").unwrap();
        let out: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            out,
            json!({"action": "echo", "input": {"a": 1}, "key": "k"})
        );
        assert_eq!(
            describe_capability::<Echo>(),
            r#"{"actions":["echo","fail"]}"#
        );
    }

    #[test]
    fn input_that_is_not_json_is_invalid_input() {
        match invoke_capability::<Echo>("echo", "{nope", "k") {
            Err(WitPluginError::InvalidInput(m)) => {
                assert!(m.starts_with("input is not valid JSON"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        match read_connector::<Reader>("k", "[") {
            Err(WitPluginError::InvalidInput(m)) => {
                assert!(m.starts_with("params is not valid JSON"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_input_is_null_and_errors_keep_their_case() {
        let out = read_connector::<Reader>("k", " ").unwrap();
        assert_eq!(out, r#"{"key":"k","params":null}"#);
        assert!(matches!(
            invoke_capability::<Echo>("fail", "{}", "k"),
            Err(WitPluginError::Denied(m)) if m == "no"
        ));
    }

    #[test]
    fn a_connector_is_not_a_source_by_default() {
        assert!(matches!(
            poll_connector::<Reader>(None, 10),
            Err(WitPluginError::Unavailable(m)) if m == "not an event source"
        ));
    }
}
