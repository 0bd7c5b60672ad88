//! Redis as the `node` memory scope (L2): [`RedisNodeMemory`] implements [`NodeMemory`] with
//! `SET {prefix}{key} <compact JSON> PX <ttl ms>` and `GET {prefix}{key}`.
//!
//! Executions call the port from plain worker threads, so the adapter owns a small tokio
//! runtime (one worker thread) driving a redis-rs [`ConnectionManager`], which, unlike a
//! `MultiplexedConnection`, reconnects by itself with jittered exponential backoff (redis-rs's
//! sync API was not chosen: its connections never reconnect, we would write that ourselves).
//! Each call is a task on that runtime bounded by the response timeout and awaited on a std
//! channel, never `block_on` (which panics inside another runtime): while Redis is down a call
//! fails with `Unavailable` within that bound instead of waiting for the reconnection.

use std::fmt;
use std::time::Duration;

use eyeflow_actors::ports::{CallErrorKind, MemoryError, NodeMemory};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Client, Cmd, ErrorKind, FromRedisValue, RedisError};
use serde::Deserialize;
use serde_json::Value;

use crate::blocking::OwnedRuntime;
use crate::memory::FAR_FUTURE;
use crate::{Error, Result};

/// Names this backend in errors (`Error::Backend`, and the reason of a `MemoryError`).
const BACKEND: &str = "redis";

/// Longest pause between two reconnection attempts: bounds how long calls keep failing after
/// Redis is back.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// The `[node_memory.redis]` part of a node's configuration.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Server address, `redis://[user:password@]host:port/[db]` (`rediss://` is not
    /// supported: this build has no TLS).
    pub url: String,
    /// Prepended to every key, so that several nodes or tests can share one Redis.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Bound on establishing a connection, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Bound on one call (command and answer, or waiting for a reconnection), in milliseconds.
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
}

fn default_prefix() -> String {
    "eyeflow:".to_owned()
}

fn default_connect_timeout_ms() -> u64 {
    2000
}

fn default_response_timeout_ms() -> u64 {
    500
}

impl RedisConfig {
    /// The configuration for `url` with the default prefix and timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: default_prefix(),
            connect_timeout_ms: default_connect_timeout_ms(),
            response_timeout_ms: default_response_timeout_ms(),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redacted(&self.url))
            .field("prefix", &self.prefix)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .finish()
    }
}

/// `url` with its password, if any, replaced by `***`.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only fails for URLs that cannot hold credentials, which this one does.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_owned(),
        },
    }
}

/// The `node` memory scope in Redis.
pub struct RedisNodeMemory {
    manager: ConnectionManager,
    prefix: String,
    call_timeout: Duration,
    /// Declared last: shut down after the manager is dropped.
    runtime: OwnedRuntime,
}

impl fmt::Debug for RedisNodeMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisNodeMemory")
            .field("prefix", &self.prefix)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisNodeMemory {
    /// Connects to `config.url` and checks that Redis answers a PING; fails naming Redis and
    /// the URL (without its password) when it is invalid, unreachable or refuses us.
    pub fn connect(config: &RedisConfig) -> Result<Self> {
        let url = redacted(&config.url);
        let fail = |reason: String| Error::Backend {
            backend: BACKEND,
            reason: format!("{url}: {reason}"),
        };
        if config.connect_timeout_ms == 0 || config.response_timeout_ms == 0 {
            return Err(fail(
                "connect_timeout_ms and response_timeout_ms must be at least 1".to_owned(),
            ));
        }
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        let call_timeout = Duration::from_millis(config.response_timeout_ms);
        let client = Client::open(config.url.as_str())
            .map_err(|e| fail(format!("invalid URL: {}", describe(&e))))?;
        let runtime = OwnedRuntime::new("eyeflow-redis")
            .map_err(|e| fail(format!("cannot start its runtime: {e}")))?;

        // A plain connection first: it reports why Redis is unreachable, where the manager
        // would keep retrying.
        let probe_client = client.clone();
        let probe_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(call_timeout));
        let probe = runtime.run(connect_timeout + call_timeout, async move {
            let mut connection = probe_client
                .get_multiplexed_async_connection_with_config(&probe_config)
                .await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        });
        match probe {
            None => {
                return Err(fail(format!(
                    "no answer to PING within {} ms",
                    (connect_timeout + call_timeout).as_millis()
                )));
            }
            Some(Err(e)) => return Err(fail(format!("cannot connect: {}", describe(&e)))),
            Some(Ok(_)) => {}
        }

        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(call_timeout))
            .set_max_delay(MAX_RECONNECT_DELAY);
        let manager = {
            // The manager spawns its reconnection tasks on the current runtime.
            let _entered = runtime.handle.enter();
            ConnectionManager::new_lazy_with_config(client, manager_config)
                .map_err(|e| fail(describe(&e)))?
        };
        Ok(Self {
            manager,
            prefix: config.prefix.clone(),
            call_timeout,
            runtime,
        })
    }

    /// Whether Redis answers a PING within the response timeout.
    pub fn healthy(&self) -> bool {
        let mut manager = self.manager.clone();
        let outcome = self.runtime.run(self.call_timeout, async move {
            redis::cmd("PING").query_async::<String>(&mut manager).await
        });
        self.answer(("ping", ""), outcome).is_ok()
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs `command` through the manager, on the backend's own runtime, within the
    /// response timeout, for `operation` on the memory `key` (named in errors). The
    /// caller's task waits for the answer without holding its thread.
    async fn call<T: FromRedisValue + Send + 'static>(
        &self,
        (operation, key): (&'static str, &str),
        command: Cmd,
    ) -> Result<T, MemoryError> {
        let mut manager = self.manager.clone();
        let limit = self.call_timeout;
        let task = self.runtime.handle.spawn(async move {
            tokio::time::timeout(limit, command.query_async::<T>(&mut manager)).await
        });
        let outcome = task.await.ok().and_then(Result::ok);
        self.answer((operation, key), outcome)
    }

    /// A command's answer; `None` when none came within the response timeout.
    fn answer<T>(
        &self,
        (operation, key): (&'static str, &str),
        outcome: Option<redis::RedisResult<T>>,
    ) -> Result<T, MemoryError> {
        match outcome {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(memory_error(operation, key, &e)),
            None => Err(MemoryError::new(
                "node",
                operation,
                key,
                CallErrorKind::Unavailable,
                format!(
                    "{BACKEND}: no answer within {} ms",
                    self.call_timeout.as_millis()
                ),
            )),
        }
    }
}

#[async_trait::async_trait]
impl NodeMemory for RedisNodeMemory {
    async fn get(&self, key: &str) -> Result<Option<Value>, MemoryError> {
        let stored = self.key(key);
        let Some(bytes) = self
            .call::<Option<Vec<u8>>>(("get", key), redis::cmd("GET").arg(&stored).clone())
            .await?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            MemoryError::new(
                "node",
                "get",
                key,
                CallErrorKind::InvalidOutput,
                format!("{BACKEND}: the value stored under {stored} is not JSON: {e}"),
            )
        })
    }

    async fn set(&self, key: &str, value: &Value, ttl: Duration) -> Result<(), MemoryError> {
        let stored = self.key(key);
        if ttl.is_zero() {
            // Like the embedded scope: a zero TTL stores nothing and drops the old value.
            return self
                .call::<()>(("set", key), redis::cmd("DEL").arg(&stored).clone())
                .await;
        }
        let json = serde_json::to_vec(value).map_err(|e| {
            MemoryError::new(
                "node",
                "set",
                key,
                CallErrorKind::InvalidInput,
                format!("{BACKEND}: cannot encode the value: {e}"),
            )
        })?;
        // Redis refuses PX 0; a sub-millisecond TTL keeps the value for one millisecond.
        let ttl_ms = u64::try_from(ttl.min(FAR_FUTURE).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut command = redis::cmd("SET");
        command.arg(&stored).arg(json).arg("PX").arg(ttl_ms);
        self.call::<()>(("set", key), command).await
    }
}

/// A failed command of `operation` on `key`, classified for the fallback engine.
fn memory_error(operation: &'static str, key: &str, e: &RedisError) -> MemoryError {
    let kind = match e.kind() {
        ErrorKind::AuthenticationFailed => CallErrorKind::Denied,
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => CallErrorKind::InvalidOutput,
        _ => CallErrorKind::Unavailable,
    };
    MemoryError::new(
        "node",
        operation,
        key,
        kind,
        format!("{BACKEND}: {}", describe(e)),
    )
}

/// The error's text, except for reply-type errors, whose text may quote a stored value.
fn describe(e: &RedisError) -> String {
    match e.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => "unexpected reply".to_owned(),
        _ => e.to_string(),
    }
}

/// Builds the `[redis]` backend: the `node` memory scope lives in Redis.
pub fn build(config: &RedisConfig, cx: &mut super::Context<'_>) -> Result<()> {
    let redis = std::sync::Arc::new(RedisNodeMemory::connect(config)?);
    cx.backends.push(redis.clone());
    cx.node_memory = Some(redis);
    Ok(())
}

impl eyeflow_actors::ports::Backend for RedisNodeMemory {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn healthy(&self) -> bool {
        RedisNodeMemory::healthy(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redacted("redis://user:hunter2@127.0.0.1:6379/0"),
            "redis://user:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redacted("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
        assert_eq!(redacted("not a url:hunter2@host"), "***@host");
        let config = RedisConfig::new("redis://:hunter2@127.0.0.1/");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let config: RedisConfig =
            serde_json::from_str(r#"{"url": "redis://127.0.0.1:6379/"}"#).expect("parses");
        assert_eq!(config, RedisConfig::new("redis://127.0.0.1:6379/"));
        assert_eq!(config.prefix, "eyeflow:");
        assert_eq!(config.connect_timeout_ms, 2000);
        assert_eq!(config.response_timeout_ms, 500);
        let unknown = serde_json::from_str::<RedisConfig>(
            r#"{"url": "redis://127.0.0.1:6379/", "pasword": "x"}"#,
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn invalid_url_and_zero_timeouts_are_refused_naming_redis() {
        let err = RedisNodeMemory::connect(&RedisConfig::new("http://127.0.0.1/"))
            .expect_err("not a redis URL");
        assert!(
            err.to_string().starts_with("redis: http://127.0.0.1/"),
            "{err}"
        );
        let mut config = RedisConfig::new("redis://127.0.0.1:1/");
        config.response_timeout_ms = 0;
        let err = RedisNodeMemory::connect(&config).expect_err("zero timeout");
        assert!(err.to_string().contains("response_timeout_ms"), "{err}");
    }
}
