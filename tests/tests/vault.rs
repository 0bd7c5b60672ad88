//! The Vault/OpenBao secrets backend against a real `bao server -dev`: token and AppRole
//! auth, denied paths, missing secrets, the value cache, token renewal and re-login, and
//! refused starts; a real node reports Vault's readiness in `/readyz`.

use std::time::{Duration, Instant};

use eyeflow_actors::ports::{CallErrorKind, SecretError, SecretSource};
use eyeflow_runtime::backends::vault::{VaultAuth, VaultConfig, VaultSecrets};
use eyeflow_tests::eventually;
use eyeflow_tests::servers::free_port;
use eyeflow_tests::servers::openbao::OpenBao;
use serde_json::json;

const TOKEN_VAR: &str = "EYEFLOW_TEST_VAULT_TOKEN";
const SECRET_ID_VAR: &str = "EYEFLOW_TEST_VAULT_SECRET_ID";
/// Reads everything under the `eyeflow/` prefix of the `secret/` mount.
const READ_EYEFLOW: &str = r#"path "secret/data/eyeflow/*" { capabilities = ["read"] }"#;

fn config(address: &str, auth: VaultAuth, cache_ttl_ms: u64) -> VaultConfig {
    VaultConfig {
        address: address.to_owned(),
        mount: "secret".to_owned(),
        prefix: "eyeflow/".to_owned(),
        auth,
        cache_ttl_ms,
        timeout_ms: 2_000,
    }
}

fn token_auth() -> VaultAuth {
    VaultAuth::Token {
        token_secret_env: TOKEN_VAR.to_owned(),
    }
}

/// Connects with `token` in the (simulated) environment.
fn connect_token(
    address: &str,
    token: &str,
    cache_ttl_ms: u64,
) -> eyeflow_runtime::Result<VaultSecrets> {
    VaultSecrets::connect_with_env(&config(address, token_auth(), cache_ttl_ms), |var| {
        (var == TOKEN_VAR).then(|| token.to_owned())
    })
}

/// Connects with AppRole `role` of `bao`.
fn connect_approle(bao: &OpenBao, role: (String, String), cache_ttl_ms: u64) -> VaultSecrets {
    let (role_id, secret_id) = role;
    let auth = VaultAuth::AppRole {
        role_id,
        secret_id_env: SECRET_ID_VAR.to_owned(),
    };
    VaultSecrets::connect_with_env(&config(&bao.addr(), auth, cache_ttl_ms), |var| {
        (var == SECRET_ID_VAR).then(|| secret_id.clone())
    })
    .expect("AppRole login")
}

fn value(secrets: &VaultSecrets, name: &str) -> Option<String> {
    eyeflow_tests::wait(secrets.get(name))
        .unwrap_or_else(|e| panic!("reading {name}: {e}"))
        .map(|s| s.expose().to_owned())
}

/// A server with the read policy and one secret, `eyeflow/db-password`.
fn server_with_secret() -> OpenBao {
    let bao = OpenBao::start();
    bao.write_policy("eyeflow-read", READ_EYEFLOW);
    bao.put_secret("eyeflow/db-password", &json!({"value": "pw-1234-abcd"}));
    bao
}

#[test]
fn token_auth_reads_a_secret() {
    let bao = server_with_secret();
    let token = bao.create_token(&["eyeflow-read"], "1h");
    let secrets = connect_token(&bao.addr(), &token, 30_000).expect("connect");
    assert_eq!(
        value(&secrets, "db-password").as_deref(),
        Some("pw-1234-abcd")
    );
    let shown = format!(
        "{secrets:?} {:?}",
        eyeflow_tests::wait(secrets.get("db-password"))
    );
    assert!(
        !shown.contains("pw-1234-abcd") && !shown.contains(&token),
        "{shown}"
    );
}

#[test]
fn approle_auth_reads_a_secret() {
    let bao = server_with_secret();
    let role = bao.approle("eyeflow-node", &["eyeflow-read"], "1h");
    let secrets = connect_approle(&bao, role, 30_000);
    assert_eq!(
        value(&secrets, "db-password").as_deref(),
        Some("pw-1234-abcd")
    );
}

#[test]
fn denied_path_names_the_secret_and_not_its_value() {
    let bao = OpenBao::start();
    bao.write_policy(
        "only-allowed",
        r#"path "secret/data/eyeflow/allowed/*" { capabilities = ["read"] }"#,
    );
    bao.put_secret("eyeflow/allowed/a", &json!({"value": "value-a"}));
    bao.put_secret(
        "eyeflow/forbidden",
        &json!({"value": "forbidden-value-xyz"}),
    );
    let token = bao.create_token(&["only-allowed"], "1h");
    let secrets = connect_token(&bao.addr(), &token, 30_000).expect("connect");
    assert_eq!(value(&secrets, "allowed/a").as_deref(), Some("value-a"));
    let err: SecretError =
        eyeflow_tests::wait(secrets.get("forbidden")).expect_err("denied by the policy");
    assert_eq!(err.kind, CallErrorKind::Denied);
    let text = err.to_string();
    assert!(text.contains("`forbidden`"), "{text}");
    assert!(text.contains("permission denied"), "{text}");
    assert!(
        !text.contains("forbidden-value-xyz") && !text.contains(&token),
        "{text}"
    );
}

#[test]
fn missing_secret_is_none() {
    let bao = server_with_secret();
    let token = bao.create_token(&["eyeflow-read"], "1h");
    let secrets = connect_token(&bao.addr(), &token, 30_000).expect("connect");
    assert_eq!(value(&secrets, "no-such-secret"), None);
}

#[test]
fn cached_value_is_served_until_the_cache_ttl() {
    const CACHE_TTL_MS: u64 = 3_000;
    let cache_ttl = Duration::from_millis(CACHE_TTL_MS);
    let bao = server_with_secret();
    let token = bao.create_token(&["eyeflow-read"], "1h");
    let secrets = connect_token(&bao.addr(), &token, CACHE_TTL_MS).expect("connect");
    let first_read = Instant::now();
    assert_eq!(
        value(&secrets, "db-password").as_deref(),
        Some("pw-1234-abcd")
    );
    bao.put_secret("eyeflow/db-password", &json!({"value": "pw-rotated"}));
    let cached = value(&secrets, "db-password");
    if first_read.elapsed() < cache_ttl {
        assert_eq!(
            cached.as_deref(),
            Some("pw-1234-abcd"),
            "served from the cache"
        );
    }
    eventually("the new value was read", Duration::from_secs(30), || {
        let seen = value(&secrets, "db-password");
        if seen.as_deref() == Some("pw-rotated") {
            assert!(first_read.elapsed() >= cache_ttl, "re-read before the TTL");
            return Some(());
        }
        assert_eq!(seen.as_deref(), Some("pw-1234-abcd"));
        None
    });
}

/// Reads `name` every 250 ms for `duration`: every read must succeed.
fn read_throughout(secrets: &VaultSecrets, name: &str, duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        assert!(
            value(secrets, name).is_some(),
            "{name} vanished after {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn short_ttl_token_is_renewed_in_the_background() {
    let bao = server_with_secret();
    let token = bao.create_token(&["eyeflow-read"], "3s");
    // No cache: every read uses the token.
    let secrets = connect_token(&bao.addr(), &token, 0).expect("connect");
    read_throughout(&secrets, "db-password", Duration::from_secs(10));
    // The token itself is still alive.
    let looked_up = bao.root(
        reqwest::Method::POST,
        "auth/token/lookup",
        Some(&json!({ "token": token })),
    );
    assert!(looked_up["data"]["ttl"].as_u64().is_some_and(|ttl| ttl > 0));
}

#[test]
fn approle_logs_in_again_when_the_token_reaches_its_max_ttl() {
    let bao = server_with_secret();
    let (role_id, secret_id) = bao.approle("short", &["eyeflow-read"], "2s");
    bao.root(
        reqwest::Method::POST,
        "auth/approle/role/short",
        Some(&json!({ "token_ttl": "2s", "token_max_ttl": "4s" })),
    );
    let secrets = connect_approle(&bao, (role_id, secret_id), 0);
    read_throughout(&secrets, "db-password", Duration::from_secs(12));
}

#[test]
fn vault_going_away_is_unavailable() {
    let mut bao = server_with_secret();
    let token = bao.create_token(&["eyeflow-read"], "1h");
    let secrets = connect_token(&bao.addr(), &token, 0).expect("connect");
    bao.stop();
    let err = eyeflow_tests::wait(secrets.get("db-password")).expect_err("Vault is down");
    assert_eq!(err.kind, CallErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("`db-password`"), "{err}");
}

#[test]
fn start_fails_naming_vault_on_a_bad_token_or_a_dead_port() {
    let bao = server_with_secret();
    let err = connect_token(&bao.addr(), "not-a-token", 0)
        .expect_err("bad token")
        .to_string();
    assert!(
        err.starts_with("vault: ") && err.contains(&bao.addr()),
        "{err}"
    );
    assert!(err.contains("permission denied"), "{err}");

    let dead = format!("http://127.0.0.1:{}", free_port());
    let err = connect_token(&dead, "any", 0)
        .expect_err("nobody listens")
        .to_string();
    assert!(err.starts_with("vault: ") && err.contains(&dead), "{err}");
}

#[test]
fn a_node_reports_vault_in_its_readiness() {
    let mut bao = server_with_secret();
    let work = eyeflow_tests::node::Workdir::new(&format!(
        "[vault]\naddress = \"{}\"\nmount = \"secret\"\nprefix = \"eyeflow/\"\ncache_ttl_ms = 0\ntimeout_ms = 1000\n\n[vault.auth]\nmethod = \"token\"\ntoken_secret_env = \"{TOKEN_VAR}\"\n",
        bao.addr()
    ));
    let (node, url) = work.start_with_env(&[(TOKEN_VAR, bao.root_token())]);
    let client = reqwest::blocking::Client::new();
    let ready = |client: &reqwest::blocking::Client| {
        let response = client.get(format!("{url}/readyz")).send().expect("answer");
        let status = response.status().as_u16();
        (status, response.text().unwrap_or_default())
    };
    let (status, body) = ready(&client);
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["backends"]["vault"], true, "{body}");
    // Vault goes away: the node says it is not ready, naming it.
    bao.stop();
    eventually(
        "the node reports Vault down",
        Duration::from_secs(30),
        || {
            let (status, body) = ready(&client);
            (status == 503 && body.contains("vault")).then_some(())
        },
    );
    work.stop(node);
}
