//! `webhook-notify`: POST a notification to a webhook.
//!
//! Action `notify` with `{"url", "message", "severity"?, "source"?, "auth_secret"?}`
//! POSTs `{"message", "severity", "source"}` to `url` (a granted host). With
//! `auth_secret` the named secret is sent as `Authorization: Bearer`. The idempotency
//! key goes out as `Idempotency-Key` so the receiver can drop a replay; that is why the
//! manifest declares `"on_resume": "reissue"`: after a crash a notification whose result
//! was not journaled is sent again under the same key. Returns `{"status"}`; a non-2xx
//! answer is `unavailable`.

use eyeflow_plugin_sdk::http::{self, Request};
use eyeflow_plugin_sdk::{Capability, PluginError, Value, json, secrets};

struct WebhookNotify;

fn field<'a>(
    input: &'a Value,
    name: &str,
    default: Option<&'a str>,
) -> Result<&'a str, PluginError> {
    match (input.get(name), default) {
        (Some(Value::String(s)), _) => Ok(s),
        (None | Some(Value::Null), Some(d)) => Ok(d),
        _ => Err(PluginError::invalid_input(format!(
            "`{name}` must be a string"
        ))),
    }
}

impl Capability for WebhookNotify {
    fn describe() -> Value {
        json!({
            "id": "webhook-notify",
            "actions": {"notify": {
                "input": {"url": "string", "message": "string", "severity": "string (info)", "source": "string (eyeflow)", "auth_secret": "secret name (optional)"},
                "output": {"status": "integer"},
                "side_effects": ["HTTP POST to url"],
            }},
        })
    }

    fn invoke(action: &str, input: Value, idempotency_key: &str) -> Result<Value, PluginError> {
        if action != "notify" {
            return Err(PluginError::invalid_input(format!(
                "unknown action {action:?} (notify)"
            )));
        }
        let url = field(&input, "url", None)?;
        let body = json!({
            "message": field(&input, "message", None)?,
            "severity": field(&input, "severity", Some("info"))?,
            "source": field(&input, "source", Some("eyeflow"))?,
        });
        let mut request = Request::post(url).json(&body);
        if !idempotency_key.is_empty() {
            request = request.header("idempotency-key", idempotency_key);
        }
        if let Some(secret) = input.get("auth_secret").filter(|v| !v.is_null()) {
            let name = secret
                .as_str()
                .ok_or_else(|| PluginError::invalid_input("`auth_secret` must be a secret name"))?;
            let token = secrets::get(name)?;
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = http::send(request)?;
        if !response.is_success() {
            return Err(PluginError::unavailable(format!(
                "POST {url}: http status {}",
                response.status
            )));
        }
        Ok(json!({"status": response.status}))
    }
}

eyeflow_plugin_sdk::export_capability!(WebhookNotify);
