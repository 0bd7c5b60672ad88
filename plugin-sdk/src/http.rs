//! Outgoing HTTP to the hosts the operator granted (`eyeflow:plugin/http` import).
//! Declare `"http"` in the manifest's `imports`; a host that was not granted fails with
//! `Denied`.
//!
//! [`get_json`] and [`post_json`] cover the common JSON calls; build a [`Request`] and
//! [`send`] it for anything else (headers, other methods, raw bodies):
//!
//! ```no_run
//! use eyeflow_plugin_sdk::http::{self, Request};
//!
//! # fn demo(token: &str) -> Result<(), eyeflow_plugin_sdk::PluginError> {
//! let response = http::send(
//!     Request::post("http://alarms.local:8080/raise")
//!         .header("authorization", format!("Bearer {token}"))
//!         .json(&serde_json::json!({"tag": "boiler-1"}))
//!         .timeout_ms(2_000),
//! )?;
//! assert!(response.is_success());
//! # Ok(()) }
//! ```

use serde_json::Value;

use crate::PluginError;
use crate::bindings::capability::eyeflow::plugin::http as wit;

/// An outgoing request; `url` must be absolute (`http` or `https`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// HTTP method, upper case (`GET`, `POST`, ...).
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Headers as (name, value) pairs, sent in order.
    pub headers: Vec<(String, String)>,
    /// Request body, if any.
    pub body: Option<Vec<u8>>,
    /// Per-request timeout; the host caps it by the call's own deadline.
    pub timeout_ms: Option<u32>,
}

impl Request {
    /// A request with `method` to `url`, no headers, no body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout_ms: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Set a raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Set a JSON body and `content-type: application/json`.
    pub fn json(self, value: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }

    /// Set the per-request timeout.
    pub fn timeout_ms(mut self, timeout_ms: u32) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }
}

/// A response; the host caps the body size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers as (name, value) pairs.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; a body that is not JSON is `InvalidInput`.
    pub fn json(&self) -> Result<Value, PluginError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| PluginError::invalid_input(format!("response body is not JSON: {e}")))
    }

    /// `Ok(self)` for a 2xx status, else `Unavailable` naming the status.
    pub fn error_for_status(self) -> Result<Self, PluginError> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(PluginError::unavailable(format!(
                "http status {}",
                self.status
            )))
        }
    }
}

/// Send `request` through the host.
pub fn send(request: Request) -> Result<Response, PluginError> {
    let request = wit::Request {
        method: request.method,
        url: request.url,
        headers: request
            .headers
            .into_iter()
            .map(|(name, value)| wit::Header { name, value })
            .collect(),
        body: request.body,
        timeout_ms: request.timeout_ms,
    };
    let response = wit::send(&request)?;
    Ok(Response {
        status: response.status,
        headers: response
            .headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect(),
        body: response.body,
    })
}

/// `GET url` expecting JSON: a non-2xx status is `Unavailable`, a body that is not JSON
/// is `InvalidInput`.
pub fn get_json(url: &str) -> Result<Value, PluginError> {
    send(Request::get(url).header("accept", "application/json"))?
        .error_for_status()
        .map_err(|e| PluginError::unavailable(format!("GET {url}: {}", e.message())))?
        .json()
}

/// `POST url` with `body` as JSON; a non-2xx status is `Unavailable`. Returns the 2xx
/// response (status, headers, body) as is.
pub fn post_json(url: &str, body: &Value) -> Result<Response, PluginError> {
    send(Request::post(url).json(body))?
        .error_for_status()
        .map_err(|e| PluginError::unavailable(format!("POST {url}: {}", e.message())))
}
