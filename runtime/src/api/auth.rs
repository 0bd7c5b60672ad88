//! Bearer tokens of the HTTP API. A token names its role and carries an HMAC-SHA256 under
//! the node's token key (`api-token.key` in the data directory, made on first use), so
//! `eyeflow tokens issue` works offline, even while the node runs, and the node checks a
//! token without a lookup. Rotating the key file revokes every token issued before.

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::{Error, Result};

/// What a caller may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read programs, executions, audit, plugins, metrics.
    Viewer,
    /// Also send events, compile rules, approve or reject paused instructions.
    Operator,
    /// Also deploy and undeploy programs, install and revoke plugins.
    Admin,
}

impl Role {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a lowercase name.
    pub fn parse(name: &str) -> Option<Self> {
        [Role::Viewer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

const PREFIX: &str = "efn1";

/// The node's token key.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

impl TokenKey {
    /// The key of the node whose data directory is `data_dir`, created (mode 0600) if missing.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("api-token.key");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let bytes = hex::decode(text.trim()).ok();
            return bytes
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(Self)
                .ok_or_else(|| Error::BadConfig {
                    what: path.display().to_string(),
                    reason: "not 64 hex digits".to_owned(),
                });
        }
        std::fs::create_dir_all(data_dir).map_err(Error::io(data_dir))?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| Error::Node {
            reason: format!("no randomness for the token key: {e}"),
        })?;
        write_private(&path, hex::encode(key).as_bytes())?;
        Ok(Self(key))
    }

    /// A new token for `role`.
    pub fn issue(&self, role: Role) -> Result<String> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| Error::Node {
            reason: format!("no randomness for a token: {e}"),
        })?;
        let body = format!("{PREFIX}.{}.{}", role.name(), hex::encode(nonce));
        let mac = self.mac(body.as_bytes()).ok_or_else(|| Error::Node {
            reason: "the token key was refused by HMAC".to_owned(),
        })?;
        let mac = hex::encode(mac);
        Ok(format!("{body}.{mac}"))
    }

    /// The role of a valid token; `None` for anything else. The MAC is compared in constant
    /// time.
    pub fn check(&self, token: &str) -> Option<Role> {
        let (body, mac) = token.rsplit_once('.')?;
        let mut parts = body.split('.');
        let (prefix, role) = (parts.next()?, parts.next()?);
        let (_nonce, rest) = (parts.next()?, parts.next());
        if prefix != PREFIX || rest.is_some() {
            return None;
        }
        let given = hex::decode(mac).ok()?;
        self.hmac(body.as_bytes())?.verify_slice(&given).ok()?;
        Role::parse(role)
    }

    /// HMAC-SHA256 of `message` under the key, to finalize or verify (`None` only if the
    /// key were refused, which HMAC never does).
    fn hmac(&self, message: &[u8]) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).ok()?;
        mac.update(message);
        Some(mac)
    }

    /// HMAC-SHA256 (RFC 2104) of `message` under the key.
    fn mac(&self, message: &[u8]) -> Option<[u8; 32]> {
        Some(self.hmac(message)?.finalize().into_bytes().into())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(Error::io(path))?;
    file.write_all(bytes).map_err(Error::io(path))?;
    file.sync_all().map_err(Error::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_check_and_tampered_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let key = TokenKey::load_or_create(dir.path()).unwrap();
        let token = key.issue(Role::Operator).unwrap();
        assert_eq!(key.check(&token), Some(Role::Operator));
        // Same key file → same verdict after a reload.
        let again = TokenKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.check(&token), Some(Role::Operator));
        // Promoting oneself breaks the MAC.
        let forged = token.replacen("operator", "admin", 1);
        assert_eq!(key.check(&forged), None);
        assert_eq!(key.check("efn1.admin.00.00"), None);
        assert_eq!(key.check(""), None);
        // Another node's key refuses it.
        let other = TokenKey::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(other.check(&token), None);
    }

    #[test]
    fn hmac_matches_an_independent_implementation() {
        // Python's hmac module: key = 32 × 0x0b, message "Hi There".
        let key = TokenKey([0x0b; 32]);
        assert_eq!(
            hex::encode(key.mac(b"Hi There").unwrap()),
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }
}
