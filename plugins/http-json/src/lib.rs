//! `http-json`: read a JSON document over HTTP and extract a value by JSON pointer.
//!
//! `read(url_or_key, {"url"?, "pointer"?, "timeout_ms"?})`: the URL comes from `url`, or
//! from the key when it is itself an `http(s)://` URL. Only hosts the operator granted
//! are reachable. Missing pointer or non-JSON body: `invalid-input`; non-2xx:
//! `unavailable`.

use eyeflow_plugin_sdk::http::{self, Request};
use eyeflow_plugin_sdk::{Connector, PluginError, Value, json};

struct HttpJson;

fn str_param<'a>(params: &'a Value, name: &str) -> Result<Option<&'a str>, PluginError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(PluginError::invalid_input(format!(
            "`{name}` must be a string"
        ))),
    }
}

impl Connector for HttpJson {
    fn describe() -> Value {
        json!({
            "id": "http-json",
            "resources": "any key; the URL is params.url or the key itself",
            "params": {"url": "http(s) URL of a granted host", "pointer": "RFC 6901 JSON pointer (default: whole document)", "timeout_ms": "integer"},
        })
    }

    fn read(key: &str, params: Value) -> Result<Value, PluginError> {
        let url = match str_param(&params, "url")? {
            Some(url) => url,
            None if key.starts_with("http://") || key.starts_with("https://") => key,
            None => {
                return Err(PluginError::invalid_input(
                    "no `url` param and the key is not a URL",
                ));
            }
        };
        let pointer = str_param(&params, "pointer")?.unwrap_or("");
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            return Err(PluginError::invalid_input(format!(
                "pointer {pointer:?} must start with '/'"
            )));
        }
        let mut request = Request::get(url).header("accept", "application/json");
        if let Some(t) = params.get("timeout_ms").and_then(Value::as_u64) {
            request = request.timeout_ms(u32::try_from(t).unwrap_or(u32::MAX));
        }
        let response = http::send(request)?;
        if !response.is_success() {
            return Err(PluginError::unavailable(format!(
                "GET {url}: http status {}",
                response.status
            )));
        }
        let document = response.json()?;
        document.pointer(pointer).cloned().ok_or_else(|| {
            PluginError::invalid_input(format!(
                "pointer {pointer:?} not found in the document from {url}"
            ))
        })
    }
}

eyeflow_plugin_sdk::export_connector!(HttpJson);
