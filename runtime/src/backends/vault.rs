//! Secrets from Vault or OpenBao (KV v2) behind the [`SecretSource`] port: [`VaultSecrets`],
//! built from a [`VaultConfig`] by [`VaultSecrets::connect`].
//!
//! - The secret named `N` is field `value` of the KV v2 secret `{prefix}{N}` under `mount`.
//! - The node authenticates with a token (read from an environment variable, never from the
//!   config file) or with AppRole. The start fails, naming Vault and its address, when
//!   Vault is unreachable or refuses the credentials.
//! - Values (and absences) are cached for `cache_ttl_ms`. A background thread renews the
//!   token at ⅔ of its TTL and logs in again with AppRole when renewal fails or the token
//!   nears its max TTL; it stops (and revokes an AppRole token) when the [`VaultSecrets`] is
//!   dropped.
//! - A path the token's policies deny is a `Denied` error naming the secret; an unreachable
//!   Vault is `Unavailable` (or `Timeout`). Values and tokens never reach logs, errors or
//!   `Debug` output (both are held as [`Secret`]).
//!
//! The client is four HTTP calls over reqwest's asynchronous client, on a runtime of the
//! adapter's own (one thread): an execution's read is a task of that runtime, which the
//! execution awaits without holding its thread; the start, the renewal thread and the drop
//! wait for theirs. Not `vaultrs` (DESIGN.md §2): it adds 14 crates to the build
//! (`rustify`, `derive_builder`, a second `syn` and `darling`, ...; about 45 s of compile
//! time on the 2-core dev machine, measured 2026-11) while renewal, caching, timeouts and
//! keeping the token out of `Debug` would still be ours to write. This client adds no
//! crate.

use std::collections::HashMap;
use std::fmt;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use eyeflow_actors::ports::{CallError, CallErrorKind, Secret, SecretError, SecretSource};
use reqwest::Client;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::runtime::Handle;

use crate::blocking::OwnedRuntime;
use crate::{Error, Result};
use eyeflow_actors::sync::{Locked, RwLocked};

const BACKEND: &str = "vault";
/// The header that carries the token on every request.
const TOKEN_HEADER: &str = "X-Vault-Token";
/// First wait after a failed renewal or login; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Where the node reads its secrets in Vault or OpenBao (`[secrets.vault]` in the node
/// configuration).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Base URL of the server, e.g. `https://vault.example:8200`. Required: there is no
    /// fallback to `VAULT_ADDR` or to plaintext localhost. Certificates are always verified.
    pub address: String,
    /// Mount path of the KV v2 secrets engine.
    #[serde(default = "default_mount")]
    pub mount: String,
    /// Prepended to a secret's name to form its path in the mount: secret `db-password` is
    /// read from `{prefix}db-password`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// How the node logs in.
    pub auth: VaultAuth,
    /// How long a value read from Vault is served from memory before it is read again, in
    /// milliseconds (0 = read every time).
    #[serde(default = "default_cache_ttl_ms")]
    pub cache_ttl_ms: u64,
    /// Bound on each request to Vault (connect included), in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// How the node authenticates to Vault (`auth.method`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum VaultAuth {
    /// A token given to the node through its environment (`method = "token"`). It is renewed
    /// while renewable, but cannot be replaced when it reaches its max TTL.
    Token {
        /// Name of the environment variable that holds the token (the token itself never
        /// goes in the configuration file).
        token_secret_env: String,
    },
    /// AppRole login at `auth/approle` (`method = "approle"`); the node logs in again when
    /// its token cannot be renewed any more.
    AppRole {
        /// The role id (not secret on its own).
        role_id: String,
        /// Name of the environment variable that holds the secret id.
        secret_id_env: String,
    },
}

fn default_mount() -> String {
    "secret".to_owned()
}

fn default_prefix() -> String {
    "eyeflow/".to_owned()
}

fn default_cache_ttl_ms() -> u64 {
    30_000
}

fn default_timeout_ms() -> u64 {
    2_000
}

/// The Vault/OpenBao adapter of the [`SecretSource`] port. Dropping it stops the token
/// renewal.
pub struct VaultSecrets {
    shared: Arc<Shared>,
    renewal: Option<Renewal>,
    /// Where the HTTP calls run; dropped last.
    _runtime: OwnedRuntime,
}

/// The background renewal thread and the channel whose closing stops it.
struct Renewal {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

/// What the readers and the renewal thread share.
struct Shared {
    client: Client,
    /// The adapter's runtime.
    runtime: Handle,
    address: Url,
    /// `vault at ADDRESS`, the origin of every [`CallError`].
    origin: String,
    mount: String,
    prefix: String,
    login: Login,
    session: RwLock<Session>,
    cache: Mutex<HashMap<String, Cached>>,
    cache_ttl: Duration,
    timeout: Duration,
}

/// The credentials the node logs in with.
enum Login {
    /// A token from the environment: it can be renewed, never replaced.
    Token,
    /// AppRole: log in again whenever the token cannot be renewed.
    AppRole { role_id: String, secret_id: Secret },
}

/// The token in use and its lease.
struct Session {
    token: Secret,
    /// The lease as of `refreshed`; `None` for a token that never expires.
    lease: Option<Duration>,
    /// The lease the token was issued with.
    issued: Duration,
    /// The last renewal granted less than `issued`: the token is reaching its max TTL.
    capped: bool,
    renewable: bool,
    refreshed: Instant,
}

struct Cached {
    value: Option<Secret>,
    fetched: Instant,
}

/// What the renewal thread does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Renew,
    Login,
}

impl VaultSecrets {
    /// Logs in (AppRole) or checks the token (`lookup-self`), then starts the background
    /// renewal. Reads the variables the config names from the process environment.
    pub fn connect(config: &VaultConfig) -> Result<Self> {
        Self::connect_with_env(config, |name| std::env::var(name).ok())
    }

    /// [`connect`](Self::connect), reading the variables the config names through `env`
    /// instead of the process environment.
    pub fn connect_with_env(
        config: &VaultConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let address = Url::parse(&config.address)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                refused(format!(
                    "address `{}` is not an http:// or https:// URL",
                    config.address
                ))
            })?;
        if config.timeout_ms == 0 {
            return Err(refused("timeout_ms must be more than 0".to_owned()));
        }
        if address.scheme() == "http" && !is_loopback(&address) {
            tracing::warn!(
                address = %config.address,
                "Vault is reached over plaintext HTTP: tokens and secrets cross the network unencrypted"
            );
        }
        let read_env = |var: &str, field: &str| {
            env(var)
                .filter(|v| !v.is_empty())
                .map(Secret::new)
                .ok_or_else(|| {
                    refused(format!(
                        "{}: environment variable {var} (auth.{field}) is not set",
                        config.address
                    ))
                })
        };
        let (login, token) = match &config.auth {
            VaultAuth::Token { token_secret_env } => (
                Login::Token,
                Some(read_env(token_secret_env, "token_secret_env")?),
            ),
            VaultAuth::AppRole {
                role_id,
                secret_id_env,
            } => (
                Login::AppRole {
                    role_id: role_id.clone(),
                    secret_id: read_env(secret_id_env, "secret_id_env")?,
                },
                None,
            ),
        };
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = Client::builder()
            // A standby's redirect would carry the token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| refused(format!("{}: HTTP client: {e}", config.address)))?;
        let runtime = OwnedRuntime::new("eyeflow-vault")
            .map_err(|e| refused(format!("cannot start its runtime: {e}")))?;
        let shared = Shared {
            client,
            runtime: runtime.handle.clone(),
            origin: format!("{BACKEND} at {}", config.address.trim_end_matches('/')),
            address,
            mount: config.mount.trim_matches('/').to_owned(),
            prefix: config.prefix.clone(),
            login,
            session: RwLock::new(Session {
                token: Secret::new(String::new()),
                lease: None,
                issued: Duration::ZERO,
                capped: false,
                renewable: false,
                refreshed: Instant::now(),
            }),
            cache: Mutex::default(),
            cache_ttl: Duration::from_millis(config.cache_ttl_ms),
            timeout,
        };
        let shared = Arc::new(shared);
        let started = shared.wait_for(move |shared| async move {
            match token {
                Some(token) => shared.look_up(token).await,
                None => shared.log_in().await,
            }
        });
        started.map_err(|e| {
            refused(format!(
                "{}: {}: {}",
                config.address,
                match shared.login {
                    Login::Token => "checking the token",
                    Login::AppRole { .. } => "AppRole login",
                },
                e.message
            ))
        })?;
        let (stop, stopped) = mpsc::channel();
        let renewer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vault-renewal".to_owned())
            .spawn(move || renewer.renew_until_stopped(&stopped))
            .map_err(|e| refused(format!("cannot start the token renewal thread: {e}")))?;
        tracing::info!(address = %config.address, "connected to Vault");
        Ok(Self {
            shared,
            renewal: Some(Renewal { stop, thread }),
            _runtime: runtime,
        })
    }
}

#[async_trait::async_trait]
impl SecretSource for VaultSecrets {
    async fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        self.fetch(name)
            .await
            .map_err(|e| SecretError::new(name, e.kind, format!("{}: {}", e.origin, e.message)))
    }
}

impl VaultSecrets {
    /// The secret `name`, from the cache while it is fresh, else from Vault.
    async fn fetch(&self, name: &str) -> Result<Option<Secret>, CallError> {
        let shared = &self.shared;
        if !shared.cache_ttl.is_zero()
            && let Some(cached) = shared.cache.locked().get(name)
            && cached.fetched.elapsed() < shared.cache_ttl
        {
            return Ok(cached.value.clone());
        }
        // On the adapter's runtime; this task waits without holding its thread.
        let (reader, wanted) = (shared.clone(), name.to_owned());
        let value = shared
            .runtime
            .spawn(async move { reader.read(&wanted).await })
            .await
            .map_err(|e| {
                shared.error(CallErrorKind::Internal, format!("the read stopped: {e}"))
            })??;
        if !shared.cache_ttl.is_zero() {
            shared.cache.locked().insert(
                name.to_owned(),
                Cached {
                    value: value.clone(),
                    fetched: Instant::now(),
                },
            );
        }
        Ok(value)
    }
}

/// Builds the `[vault]` backend: the node's secrets come from Vault/OpenBao.
pub fn build(config: &VaultConfig, cx: &mut super::Context<'_>) -> Result<()> {
    let vault = Arc::new(VaultSecrets::connect(config)?);
    cx.backends.push(vault.clone());
    cx.secrets = Some(vault);
    Ok(())
}

impl eyeflow_actors::ports::Backend for VaultSecrets {
    fn name(&self) -> &'static str {
        BACKEND
    }

    /// Whether `sys/health` answers 200 (initialized, unsealed; a standby counts) within the
    /// timeout.
    fn healthy(&self) -> bool {
        self.shared
            .wait_for(|shared| async move { shared.health().await })
            .is_ok()
    }
}

impl Drop for VaultSecrets {
    fn drop(&mut self) {
        if let Some(Renewal { stop, thread }) = self.renewal.take() {
            drop(stop);
            let _ = thread.join();
        }
        // A token the node made itself dies with it; an operator's token is left alone.
        if matches!(self.shared.login, Login::AppRole { .. })
            && let Err(e) = self.shared.wait_for(|shared| async move {
                shared
                    .call(Method::POST, &["auth", "token", "revoke-self"], None)
                    .await
            })
        {
            tracing::warn!(error = %e, "revoking the Vault token at shutdown failed");
        }
    }
}

impl fmt::Debug for VaultSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSecrets")
            .field("address", &self.shared.address.as_str())
            .field("mount", &self.shared.mount)
            .field("prefix", &self.shared.prefix)
            .field(
                "auth",
                &match self.shared.login {
                    Login::Token => "token",
                    Login::AppRole { .. } => "approle",
                },
            )
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Reads secret `name` from Vault (no cache).
    async fn read(&self, name: &str) -> Result<Option<Secret>, CallError> {
        let path = format!("{}{name}", self.prefix);
        let segments: Vec<&str> = path.split('/').collect();
        if segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
        {
            return Err(self.error(
                CallErrorKind::InvalidInput,
                format!("secret name `{name}` does not make a valid KV path (`{path}`)"),
            ));
        }
        let mut url_path: Vec<&str> = self.mount.split('/').collect();
        url_path.push("data");
        url_path.extend(segments);
        let about = |e: CallError| {
            CallError::new(
                e.kind,
                e.origin,
                format!("secret `{name}` ({}/{path}): {}", self.mount, e.message),
            )
        };
        let Some(body) = self
            .call(Method::GET, &url_path, None)
            .await
            .map_err(about)?
        else {
            return Ok(None);
        };
        match &body["data"]["data"] {
            Value::Null => Ok(None),
            data => match &data["value"] {
                Value::String(value) => Ok(Some(Secret::new(value.as_str()))),
                _ => Err(about(self.error(
                    CallErrorKind::InvalidOutput,
                    "the secret has no string field `value`".to_owned(),
                ))),
            },
        }
    }

    /// Checks the token given by the operator and records its lease.
    async fn look_up(&self, token: Secret) -> Result<(), CallError> {
        let body = self
            .call_with(&token, Method::GET, &["auth", "token", "lookup-self"], None)
            .await?
            .unwrap_or_default();
        let data = &body["data"];
        let lease = seconds(&data["ttl"]);
        self.set_session(Session {
            token,
            lease: (!lease.is_zero()).then_some(lease),
            issued: seconds(&data["creation_ttl"]).max(lease),
            capped: false,
            renewable: data["renewable"].as_bool().unwrap_or(false),
            refreshed: Instant::now(),
        });
        Ok(())
    }

    /// Logs in with AppRole and takes the new token.
    async fn log_in(&self) -> Result<(), CallError> {
        let Login::AppRole { role_id, secret_id } = &self.login else {
            return Err(self.error(
                CallErrorKind::Denied,
                "the token cannot be replaced: no AppRole is configured".to_owned(),
            ));
        };
        let body = json!({"role_id": role_id, "secret_id": secret_id.expose()});
        let auth = self
            .call_with(
                &Secret::new(String::new()),
                Method::POST,
                &["auth", "approle", "login"],
                Some(&body),
            )
            .await?
            .unwrap_or_default();
        let token = auth["auth"]["client_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.error(
                    CallErrorKind::InvalidOutput,
                    "the AppRole login answered without a token".to_owned(),
                )
            })?;
        let lease = seconds(&auth["auth"]["lease_duration"]);
        self.set_session(Session {
            token: Secret::new(token),
            lease: (!lease.is_zero()).then_some(lease),
            issued: lease,
            capped: false,
            renewable: auth["auth"]["renewable"].as_bool().unwrap_or(false),
            refreshed: Instant::now(),
        });
        Ok(())
    }

    /// Renews the token for its usual TTL (`renew-self`).
    async fn renew(&self) -> Result<(), CallError> {
        let body = self
            .call(
                Method::POST,
                &["auth", "token", "renew-self"],
                Some(&json!({})),
            )
            .await?
            .unwrap_or_default();
        let lease = seconds(&body["auth"]["lease_duration"]);
        let mut session = self.session.writing();
        session.lease = (!lease.is_zero()).then_some(lease);
        session.capped = lease < session.issued;
        session.renewable = body["auth"]["renewable"].as_bool().unwrap_or(false);
        session.refreshed = Instant::now();
        Ok(())
    }

    fn set_session(&self, session: Session) {
        *self.session.writing() = session;
    }

    /// When the renewal thread acts next, and how; `None` when there is nothing it can do
    /// (the token never expires, or can be neither renewed nor replaced).
    fn next(&self) -> Option<(Instant, Next)> {
        let session = self.session.reading();
        let lease = session.lease?;
        let next = if session.renewable && !session.capped {
            Next::Renew
        } else if matches!(self.login, Login::AppRole { .. }) {
            Next::Login
        } else {
            return None;
        };
        Some((session.refreshed + lease * 2 / 3, next))
    }

    /// The renewal thread: renews or logs in again on schedule until `stopped` closes.
    fn renew_until_stopped(self: &Arc<Self>, stopped: &mpsc::Receiver<()>) {
        let mut retry = FIRST_RETRY;
        loop {
            let Some((at, next)) = self.next() else {
                self.warn_if_expiring();
                // Nothing left to renew: wait for the stop.
                let _ = stopped.recv();
                return;
            };
            if wait(stopped, at.saturating_duration_since(Instant::now())) {
                return;
            }
            let log_in = || self.wait_for(|shared| async move { shared.log_in().await });
            let done = match next {
                Next::Renew => self
                    .wait_for(|shared| async move { shared.renew().await })
                    .or_else(|e| {
                        tracing::warn!(error = %e, "renewing the Vault token failed");
                        log_in()
                    }),
                Next::Login => log_in(),
            };
            match done {
                Ok(()) => retry = FIRST_RETRY,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?retry, "the Vault token could not be renewed or replaced");
                    if wait(stopped, retry) {
                        return;
                    }
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }

    /// Warns when the token will expire with nothing able to renew or replace it.
    fn warn_if_expiring(&self) {
        let session = self.session.reading();
        if let Some(lease) = session.lease {
            let left = lease.saturating_sub(session.refreshed.elapsed());
            tracing::warn!(
                expires_in = ?left,
                "the Vault token can no longer be renewed and no AppRole is configured: secrets become unreadable when it expires"
            );
        }
    }

    /// A request with the current token.
    async fn call(
        &self,
        method: Method,
        path: &[&str],
        body: Option<&Value>,
    ) -> Result<Option<Value>, CallError> {
        let token = self.session.reading().token.clone();
        self.call_with(&token, method, path, body).await
    }

    /// A request to `/v1/{path}` with `token` (none when empty): the JSON answer, `None` on
    /// 404.
    async fn call_with(
        &self,
        token: &Secret,
        method: Method,
        path: &[&str],
        body: Option<&Value>,
    ) -> Result<Option<Value>, CallError> {
        let url = self.url(path)?;
        let mut request = self.client.request(method, url);
        if !token.expose().is_empty() {
            let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
                self.error(
                    CallErrorKind::Denied,
                    "the token holds characters an HTTP header cannot carry".to_owned(),
                )
            })?;
            value.set_sensitive(true);
            request = request.header(TOKEN_HEADER, value);
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let timeout_ms = self.timeout.as_millis();
        let response = request
            .send()
            .await
            .map_err(|e| crate::http::transport_error(&e, &self.origin, timeout_ms))?;
        let status = response.status();
        let bytes = crate::http::read_body(response, &self.origin, timeout_ms).await?;
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(Some(answer));
        }
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let kind = match status.as_u16() {
            401 | 403 => CallErrorKind::Denied,
            400 => CallErrorKind::InvalidInput,
            429 => CallErrorKind::RateLimited,
            _ => CallErrorKind::Unavailable,
        };
        // Vault's error strings describe the refusal (`permission denied`), never a value.
        let reasons: Vec<&str> = answer["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::trim)
                    .collect()
            })
            .unwrap_or_default();
        let message = if reasons.is_empty() {
            format!("HTTP status {}", status.as_u16())
        } else {
            format!("HTTP status {}: {}", status.as_u16(), reasons.join("; "))
        };
        Err(self.error(kind, message))
    }

    fn error(&self, kind: CallErrorKind, message: String) -> CallError {
        CallError::new(kind, self.origin.as_str(), message)
    }

    /// `{address}/v1/{path}`.
    fn url(&self, path: &[&str]) -> Result<Url, CallError> {
        let mut url = self.address.clone();
        url.path_segments_mut()
            .map_err(|()| {
                self.error(
                    CallErrorKind::InvalidInput,
                    "the address cannot take a path".to_owned(),
                )
            })?
            .pop_if_empty()
            .push("v1")
            .extend(path);
        Ok(url)
    }

    /// `GET /v1/sys/health?standbyok=true`: an error unless the server answers 200.
    async fn health(&self) -> Result<(), CallError> {
        let mut url = self.url(&["sys", "health"])?;
        url.set_query(Some("standbyok=true"));
        let timeout_ms = self.timeout.as_millis();
        let status = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| crate::http::transport_error(&e, &self.origin, timeout_ms))?
            .status();
        if status.is_success() {
            return Ok(());
        }
        Err(self.error(
            CallErrorKind::Unavailable,
            format!("health: HTTP status {}", status.as_u16()),
        ))
    }

    /// Runs `call` on the adapter's runtime from a plain thread (the start, the renewal
    /// thread, the drop) and waits for its answer.
    fn wait_for<T, F>(self: &Arc<Self>, call: impl FnOnce(Arc<Self>) -> F) -> Result<T, CallError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, CallError>> + Send + 'static,
    {
        // The client bounds each request by the timeout; a login is at most two.
        let limit = self.timeout * 2;
        crate::blocking::run_on(&self.runtime, limit, call(self.clone())).unwrap_or_else(|| {
            Err(self.error(
                CallErrorKind::Timeout,
                format!("no answer within {} ms", limit.as_millis()),
            ))
        })
    }
}

/// Sleeps for `duration` unless the stop channel closes first (then `true`).
fn wait(stopped: &mpsc::Receiver<()>, duration: Duration) -> bool {
    !matches!(
        stopped.recv_timeout(duration),
        Err(RecvTimeoutError::Timeout)
    )
}

/// A JSON number of seconds (Vault's TTLs); anything else is zero.
fn seconds(value: &Value) -> Duration {
    Duration::from_secs(value.as_u64().unwrap_or(0))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn refused(reason: String) -> Error {
    Error::Backend {
        backend: BACKEND,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<VaultConfig, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn config_defaults_and_both_auth_methods() {
        let config = parse(
            r#"{"address": "http://127.0.0.1:8200",
                "auth": {"method": "token", "token_secret_env": "EYEFLOW_VAULT_TOKEN"}}"#,
        )
        .expect("valid");
        assert_eq!(config.mount, "secret");
        assert_eq!(config.prefix, "eyeflow/");
        assert_eq!(config.cache_ttl_ms, 30_000);
        assert_eq!(config.timeout_ms, 2_000);
        let config = parse(
            r#"{"address": "https://v:8200", "mount": "kv", "prefix": "", "cache_ttl_ms": 0,
                "timeout_ms": 500,
                "auth": {"method": "approle", "role_id": "r", "secret_id_env": "SID"}}"#,
        )
        .expect("valid");
        assert_eq!(
            config.auth,
            VaultAuth::AppRole {
                role_id: "r".into(),
                secret_id_env: "SID".into()
            }
        );
    }

    #[test]
    fn config_refuses_unknown_fields_and_inline_tokens() {
        for text in [
            r#"{"address": "http://a", "auth": {"method": "token", "token_secret_env": "T"}, "tls": 1}"#,
            r#"{"address": "http://a", "auth": {"method": "token", "token": "hvs.x"}}"#,
            r#"{"address": "http://a", "auth": {"method": "token", "token_secret_env": "T", "token": "x"}}"#,
            r#"{"address": "http://a", "auth": {"method": "ldap"}}"#,
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn connect_refuses_a_bad_address_or_a_missing_variable() {
        let mut config = parse(
            r#"{"address": "vault:8200",
                "auth": {"method": "token", "token_secret_env": "EYEFLOW_TEST_UNSET"}}"#,
        )
        .expect("valid");
        let err = VaultSecrets::connect_with_env(&config, |_| None)
            .expect_err("not a URL")
            .to_string();
        assert!(
            err.starts_with("vault: ") && err.contains("vault:8200"),
            "{err}"
        );
        config.address = "http://127.0.0.1:8200".into();
        let err = VaultSecrets::connect_with_env(&config, |_| None)
            .expect_err("no token")
            .to_string();
        assert!(err.contains("EYEFLOW_TEST_UNSET"), "{err}");
    }
}
