//! LLM providers behind the [`LlmPort`] (LLM_CALL): [`OpenAiChat`] speaks the
//! OpenAI-compatible chat-completions API; [`NoLlm`] stands in when no endpoint is
//! configured and refuses every call with `ModelUnavailable`, so the instruction's fallback
//! runs.
//!
//! ## Wire format
//!
//! `POST {base_url}/chat/completions` with `Authorization: Bearer <key>` when a key is
//! configured, and the JSON body
//! `{"model", "messages": [{"role", "content"}...], "temperature", "max_tokens"}`, plus
//! `"response_format": {"type": "json_object"}` when the request asks for JSON output. The
//! answer is `choices[0].message.content`.
//!
//! ## Errors
//!
//! | provider says | kind |
//! |---|---|
//! | 404, or an error whose `code` is `model_not_found` | `ModelUnavailable` |
//! | 429 | `RateLimited` |
//! | 401, 403 | `Denied` |
//! | 408, or no answer within the request's timeout | `Timeout` |
//! | 5xx, connection failure | `Unavailable` |
//! | other 4xx | `InvalidInput` |
//! | 2xx without a string at `choices[0].message.content` | `InvalidOutput` |
//!
//! Error messages carry the provider's `error.message` (cut to 300 characters), never the
//! API key.

use eyeflow_actors::ports::{CallError, CallErrorKind, LlmPort, LlmRequest, Secret};
use reqwest::Client;
use serde_json::{Value, json};

use crate::http::{client, read_body, transport_error};

/// Origin named in the LLM adapters' [`CallError`]s.
const ORIGIN: &str = "llm";

/// Longest provider message quoted in an error, in characters.
const MAX_QUOTE: usize = 300;

/// An OpenAI-compatible chat-completions provider.
#[derive(Debug, Clone)]
pub struct OpenAiChat {
    client: Client,
    endpoint: String,
    api_key: Option<Secret>,
}

impl OpenAiChat {
    /// A provider at `base_url` (e.g. `https://api.openai.com/v1`), authenticated with
    /// `api_key` when given.
    pub fn new(base_url: &str, api_key: Option<Secret>) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: client()?,
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key,
        })
    }

    /// The chat-completions URL called.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

#[async_trait::async_trait]
impl LlmPort for OpenAiChat {
    async fn complete(&self, request: &LlmRequest) -> Result<String, CallError> {
        let fail = |kind, message: String| CallError::new(kind, ORIGIN, message);
        if request.timeout.is_zero() {
            return Err(fail(
                CallErrorKind::Timeout,
                "the deadline has passed".into(),
            ));
        }
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect();
        let mut body = json!({
            "model": request.model,
            "messages": messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        });
        if request.json_output {
            body["response_format"] = json!({"type": "json_object"});
        }
        let mut builder = self
            .client
            .post(&self.endpoint)
            .timeout(request.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        let timeout_ms = request.timeout.as_millis();
        let response = builder
            .send()
            .await
            .map_err(|e| transport_error(&e.without_url(), ORIGIN, timeout_ms))?;
        let status = response.status().as_u16();
        let bytes = read_body(response, ORIGIN, timeout_ms).await?;
        let answer: Option<Value> = serde_json::from_slice(&bytes).ok();
        if (200..300).contains(&status) {
            return answer
                .as_ref()
                .and_then(|a| a.pointer("/choices/0/message/content"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    fail(
                        CallErrorKind::InvalidOutput,
                        format!(
                            "model {}: the answer has no text at choices[0].message.content: {}",
                            request.model,
                            quote(&String::from_utf8_lossy(&bytes))
                        ),
                    )
                });
        }
        let error = answer.as_ref().and_then(|a| a.get("error"));
        let code = error.and_then(|e| e.get("code")).and_then(Value::as_str);
        let said = error
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map_or_else(|| quote(&String::from_utf8_lossy(&bytes)), quote);
        let kind = match status {
            _ if code == Some("model_not_found") => CallErrorKind::ModelUnavailable,
            404 => CallErrorKind::ModelUnavailable,
            429 => CallErrorKind::RateLimited,
            401 | 403 => CallErrorKind::Denied,
            408 => CallErrorKind::Timeout,
            500.. => CallErrorKind::Unavailable,
            _ => CallErrorKind::InvalidInput,
        };
        Err(fail(
            kind,
            format!("model {}: HTTP {status}: {said}", request.model),
        ))
    }
}

/// The provider when none is configured: every call fails with `ModelUnavailable`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLlm;

#[async_trait::async_trait]
impl LlmPort for NoLlm {
    async fn complete(&self, _request: &LlmRequest) -> Result<String, CallError> {
        Err(CallError::new(
            CallErrorKind::ModelUnavailable,
            ORIGIN,
            "no LLM endpoint configured",
        ))
    }
}

/// `text` cut to [`MAX_QUOTE`] characters.
fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
