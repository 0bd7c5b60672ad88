//! Outgoing HTTP of CALL_API / CALL_SERVICE: [`ReqwestHttp`] implements the [`HttpPort`]
//! with reqwest's asynchronous client (rustls): a request waits as a future of the
//! execution's task, holding no thread.
//!
//! - The body is sent as JSON (`Content-Type: application/json` unless the request names
//!   its own); `Idempotency-Key` is sent when the request carries one.
//! - `timeout` bounds the whole request, body included; a zero timeout fails at once.
//! - Redirects are not followed (a 3xx is returned as a response): a service must not be
//!   able to bounce a call to another host.
//! - Response bodies over [`MAX_BODY`] bytes are refused (`InvalidOutput`). A JSON body is
//!   returned as JSON, an empty one as `null`, anything else as a JSON string (invalid
//!   UTF-8 replaced by U+FFFD).
//! - Non-2xx statuses are responses, not errors. Errors: a malformed URL, method or header
//!   → `InvalidInput`; the deadline passed → `Timeout`; connection or transport failure →
//!   `Unavailable`. The origin of an error is the URL's `host:port`.

use eyeflow_actors::ports::{CallError, CallErrorKind, HttpPort, HttpRequest, HttpResponse};
use reqwest::Client;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;

/// Largest response body accepted, in bytes (4 MiB).
pub const MAX_BODY: usize = 4 << 20;

/// The embedded HTTP adapter.
#[derive(Debug, Clone)]
pub struct ReqwestHttp {
    client: Client,
}

impl ReqwestHttp {
    /// A client that follows no redirects.
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Self { client: client()? })
    }
}

/// What a request is checked into before it leaves: its URL, its origin (`host:port`, for
/// errors) and its method.
fn checked(request: &HttpRequest) -> Result<(reqwest::Url, String, reqwest::Method), CallError> {
    let url = reqwest::Url::parse(&request.url).map_err(|e| {
        CallError::new(
            CallErrorKind::InvalidInput,
            "http",
            format!("URL `{}`: {e}", request.url),
        )
    })?;
    let origin = match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => "http".to_owned(),
    };
    let fail = |kind, message: String| CallError::new(kind, origin.as_str(), message);
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fail(
            CallErrorKind::InvalidInput,
            format!("URL scheme `{}` (expected http or https)", url.scheme()),
        ));
    }
    if request.timeout.is_zero() {
        return Err(fail(
            CallErrorKind::Timeout,
            "the deadline has passed".into(),
        ));
    }
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
        fail(
            CallErrorKind::InvalidInput,
            format!("HTTP method `{}`", request.method),
        )
    })?;
    Ok((url, origin, method))
}

#[async_trait::async_trait]
impl HttpPort for ReqwestHttp {
    fn admit(&self, request: &HttpRequest) -> Result<(), CallError> {
        checked(request).map(drop)
    }

    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, CallError> {
        let (url, origin, method) = checked(request)?;
        let mut builder = self.client.request(method, url).timeout(request.timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(key) = &request.idempotency_key {
            builder = builder.header("Idempotency-Key", key.as_str());
        }
        if let Some(body) = &request.body {
            let names_type = request
                .headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case(CONTENT_TYPE.as_str()));
            if !names_type {
                builder = builder.header(CONTENT_TYPE, "application/json");
            }
            builder = builder.body(body.to_string());
        }
        let response = builder
            .send()
            .await
            .map_err(|e| transport_error(&e, &origin, request.timeout.as_millis()))?;
        let status = response.status().as_u16();
        let body = read_body(response, &origin, request.timeout.as_millis()).await?;
        Ok(HttpResponse {
            status,
            body: body_value(&body),
        })
    }
}

/// The client the HTTP and LLM adapters and the plugins' HTTP import share the settings
/// of: no redirects (a service must not bounce a call to another host).
pub(crate) fn client() -> Result<Client, reqwest::Error> {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Maps a reqwest send error: timeout → `Timeout`, malformed request → `InvalidInput`,
/// anything else → `Unavailable`.
pub(crate) fn transport_error(error: &reqwest::Error, origin: &str, timeout_ms: u128) -> CallError {
    if error.is_timeout() {
        CallError::new(
            CallErrorKind::Timeout,
            origin,
            format!("no complete answer within {timeout_ms} ms"),
        )
    } else if error.is_builder() {
        CallError::new(
            CallErrorKind::InvalidInput,
            origin,
            format!("request: {error}"),
        )
    } else {
        CallError::new(
            CallErrorKind::Unavailable,
            origin,
            format!("request failed: {}", error_chain(error)),
        )
    }
}

/// Reads at most [`MAX_BODY`] bytes of `response`, as a future.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    origin: &str,
    timeout_ms: u128,
) -> Result<Vec<u8>, CallError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| body_error(e.is_timeout(), &e, origin, timeout_ms))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_large(origin));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A response body that could not be read: in time (`Timeout`) or at all.
fn body_error(
    timed_out: bool,
    error: &dyn std::fmt::Display,
    origin: &str,
    timeout_ms: u128,
) -> CallError {
    if timed_out {
        CallError::new(
            CallErrorKind::Timeout,
            origin,
            format!("the response body did not arrive within {timeout_ms} ms"),
        )
    } else {
        CallError::new(
            CallErrorKind::Unavailable,
            origin,
            format!("reading the response: {error}"),
        )
    }
}

fn too_large(origin: &str) -> CallError {
    CallError::new(
        CallErrorKind::InvalidOutput,
        origin,
        format!("response body over {MAX_BODY} bytes"),
    )
}

/// JSON as JSON, empty as `null`, anything else as a string.
fn body_value(body: &[u8]) -> Value {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// An error with its causes (reqwest's top-level message omits the useful part).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
