//! `eyeflow:plugin/http`: a request to a granted host (redirects are not followed),
//! bounded by the call's own deadline and by the body limit of [`crate::http`].

use std::time::Duration;

use eyeflow_actors::ports::CallErrorKind;

use super::super::bindings::eyeflow::plugin::http::{Header, Host, Request, Response};
use super::super::bindings::eyeflow::plugin::types::PluginError;
use super::CallState;

impl Host for CallState {
    async fn send(&mut self, request: Request) -> Result<Response, PluginError> {
        let url = url::Url::parse(&request.url)
            .map_err(|e| PluginError::InvalidInput(format!("url `{}`: {e}", request.url)))?;
        if !self.grant.allows_url(&url) {
            return Err(PluginError::Denied(format!(
                "HTTP to {} is not granted to {}; grant it with `eyeflow plugin grant {} --http HOST[:PORT]`",
                url.host_str().unwrap_or("?"),
                self.label,
                self.plugin_id
            )));
        }
        let remaining = self.remaining();
        let timeout = request
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()).min(remaining))
            .unwrap_or(remaining);
        if timeout.is_zero() {
            return Err(PluginError::Timeout(
                "the call's deadline has passed".into(),
            ));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| PluginError::InvalidInput(format!("HTTP method `{}`", request.method)))?;
        let mut builder = self.services.http.request(method, url).timeout(timeout);
        for header in request.headers {
            builder = builder.header(header.name, header.value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        // A future of the call (bounded by the call's deadline itself).
        let response = builder.send().await.map_err(|e| {
            if e.is_timeout() {
                PluginError::Timeout(format!(
                    "HTTP request timed out after {} ms",
                    timeout.as_millis()
                ))
            } else if e.is_builder() {
                PluginError::InvalidInput(format!("HTTP request: {e}"))
            } else {
                PluginError::Unavailable(format!("HTTP request failed: {e}"))
            }
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some(Header {
                    name: name.to_string(),
                    value: value.to_str().ok()?.to_owned(),
                })
            })
            .collect();
        let body = crate::http::read_body(response, "http", timeout.as_millis())
            .await
            .map_err(|e| match e.kind {
                CallErrorKind::Timeout => PluginError::Timeout(e.message),
                _ => PluginError::Unavailable(e.message),
            })?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}
