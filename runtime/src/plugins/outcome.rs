//! What a call's result becomes: inputs and outputs checked against the manifest's
//! schemas, the plugin's JSON parsed within the executor's size limit, its own errors
//! classified, and the secrets it read scrubbed from all of it.

use eyeflow_actors::ports::{CallError, CallErrorKind};
use serde_json::Value;

use super::bindings::eyeflow::plugin::types::PluginError;
use super::call::Finished;
use super::loaded::Loaded;

/// Refuses an input that does not match operation `operation`'s schema (or names an
/// operation the manifest does not declare, when it declares any).
pub(super) fn check_input(
    loaded: &Loaded,
    operation: &str,
    input: &Value,
) -> std::result::Result<(), CallError> {
    if loaded.schemas.is_empty() {
        return Ok(());
    }
    let Some((schema, _)) = loaded.schemas.get(operation) else {
        let known: Vec<&str> = loaded.schemas.keys().map(String::as_str).collect();
        return Err(CallError::new(
            CallErrorKind::InvalidInput,
            &*loaded.label,
            format!(
                "unknown operation `{operation}`; expected one of {}",
                known.join(", ")
            ),
        ));
    };
    schema_errors(schema, input).map_err(|why| {
        CallError::new(
            CallErrorKind::InvalidInput,
            &*loaded.label,
            format!("input of `{operation}` does not match its schema: {why}"),
        )
    })
}

/// Refuses an output that does not match operation `operation`'s schema.
pub(super) fn check_output(
    loaded: &Loaded,
    operation: &str,
    output: &Value,
) -> std::result::Result<(), CallError> {
    let Some((_, schema)) = loaded.schemas.get(operation) else {
        return Ok(());
    };
    schema_errors(schema, output).map_err(|why| {
        CallError::new(
            CallErrorKind::Internal,
            &*loaded.label,
            format!("output of `{operation}` does not match its schema: {why}"),
        )
    })
}

/// The first few ways `value` fails `schema`, joined.
fn schema_errors(schema: &jsonschema::Validator, value: &Value) -> std::result::Result<(), String> {
    let errors: Vec<String> = schema
        .iter_errors(value)
        .take(3)
        .map(|e| format!("{} at `{}`", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// A plugin's JSON result, refused whole past the executor's size limit.
fn parse_output(loaded: &Loaded, text: &str) -> std::result::Result<Value, CallError> {
    let limit = eyeflow_actors::exec::bounds::MAX_BYTES;
    if text.len() > limit {
        return Err(CallError::new(
            CallErrorKind::InvalidOutput,
            &*loaded.label,
            format!("returned {} bytes; at most {limit} are taken", text.len()),
        ));
    }
    serde_json::from_str(text).map_err(|e| {
        CallError::new(
            CallErrorKind::Internal,
            &*loaded.label,
            format!("returned invalid JSON: {e}"),
        )
    })
}

/// What a call returned, as JSON, with the secrets it read replaced by `[secret:NAME]`
/// (before any schema check, whose message may quote the output).
pub(super) fn output(
    loaded: &Loaded,
    result: std::result::Result<String, PluginError>,
    finished: &Finished,
) -> std::result::Result<Value, CallError> {
    let scrubber = &finished.scrubber;
    let text = result.map_err(|e| plugin_error(loaded, e, finished))?;
    let mut value = parse_output(loaded, &text)?;
    scrubber.scrub_value(&mut value);
    Ok(value)
}

/// The plugin's own error, classified; after a write refused for its KV quota, whatever it
/// says is `resource-exhausted`.
pub(super) fn plugin_error(loaded: &Loaded, error: PluginError, finished: &Finished) -> CallError {
    let (kind, mut message) = match error {
        PluginError::InvalidInput(m) => (CallErrorKind::InvalidInput, m),
        PluginError::Unavailable(m) => (CallErrorKind::Unavailable, m),
        PluginError::Timeout(m) => (CallErrorKind::Timeout, m),
        PluginError::Denied(m) => (CallErrorKind::Denied, m),
        PluginError::Internal(m) => (CallErrorKind::Internal, m),
    };
    let kind = if finished.over_quota {
        CallErrorKind::ResourceExhausted
    } else {
        kind
    };
    finished.scrubber.scrub_string(&mut message);
    CallError::new(kind, &*loaded.label, message)
}
