//! Ed25519 keys, key files, the trusted keyring, and signing / verifying programs.
//!
//! A key id is the first 8 bytes of `sha256(public key)` in lowercase hex. Key files are
//! text: optional `#` comment lines, then the 32 key bytes in hex (`NAME.key` holds the
//! secret seed and is created with mode 0600; `NAME.pub` holds the public key).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::Signer;
pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::canonical::signing_digest;
use crate::pb::LlmIrProgram;
use crate::{Error, Result};

/// The id of a public key: first 8 bytes of its SHA-256, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// A new random signing key from the operating system's generator.
pub fn generate() -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::KeyFile {
        path: "<os random>".into(),
        reason: format!("cannot get random bytes: {e}"),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Signs `program` in place: sets `signing_key_id`, then the signature over the digest.
pub fn sign(program: &mut LlmIrProgram, key: &SigningKey) {
    program.signing_key_id = key_id(&key.verifying_key());
    program.signature.clear();
    let digest = signing_digest(program);
    program.signature = key.sign(&digest).to_bytes().to_vec();
}

fn key_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::KeyFile {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .map_err(|e| key_error(path, e.to_string()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| key_error(path, e.to_string()))
}

/// Writes `BASE.key` and `BASE.pub`; refuses to overwrite an existing file.
pub fn write_keypair(base: &Path, key: &SigningKey) -> Result<(PathBuf, PathBuf)> {
    let secret_path = base.with_extension("key");
    let public_path = base.with_extension("pub");
    let verifying = key.verifying_key();
    let id = key_id(&verifying);
    let secret = format!(
        "# eyeflow ed25519 secret key {id}: keep private\n{}\n",
        hex::encode(key.to_bytes())
    );
    let public = format!(
        "# eyeflow ed25519 public key {id}\n{}\n",
        hex::encode(verifying.as_bytes())
    );
    write_file(&secret_path, &secret, true)?;
    write_file(&public_path, &public, false)?;
    Ok((secret_path, public_path))
}

fn read_key_bytes(path: &Path) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path).map_err(|e| key_error(path, e.to_string()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| key_error(path, "holds no key (expected 64 hex digits)"))?;
    let bytes = hex::decode(line).map_err(|e| key_error(path, format!("not hex: {e}")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| key_error(path, format!("key is {} bytes, expected 32", bytes.len())))
}

/// Reads a secret key written by [`write_keypair`].
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&read_key_bytes(path)?))
}

/// Reads a public key written by [`write_keypair`].
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey> {
    VerifyingKey::from_bytes(&read_key_bytes(path)?)
        .map_err(|e| key_error(path, format!("not a valid ed25519 public key: {e}")))
}

#[derive(Debug, Clone)]
struct TrustedKey {
    key: VerifyingKey,
    revoked: bool,
}

/// What a [`Keyring`] knows about one key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState<'a> {
    /// Trusted: verify with this key (strictly).
    Active(&'a VerifyingKey),
    /// Trusted once, revoked since.
    Revoked,
    /// Never trusted.
    Unknown,
}

/// The public keys a runtime trusts to sign programs, by key id; revoked keys stay listed
/// so that their programs are refused with a clear reason.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, TrustedKey>,
}

impl Keyring {
    /// An empty keyring (trusts nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `key` and returns its id. Trusting a revoked key again does not un-revoke it.
    pub fn trust(&mut self, key: VerifyingKey) -> String {
        let id = key_id(&key);
        self.keys.entry(id.clone()).or_insert(TrustedKey {
            key,
            revoked: false,
        });
        id
    }

    /// Revokes the key `id`; returns false when the keyring does not hold it.
    pub fn revoke(&mut self, id: &str) -> bool {
        match self.keys.get_mut(id) {
            Some(entry) => {
                entry.revoked = true;
                true
            }
            None => false,
        }
    }

    /// The state of key `id`, for verifying other signed artefacts (plugin packages).
    pub fn key(&self, id: &str) -> KeyState<'_> {
        match self.keys.get(id) {
            Some(entry) if entry.revoked => KeyState::Revoked,
            Some(entry) => KeyState::Active(&entry.key),
            None => KeyState::Unknown,
        }
    }

    /// Ids of the keys that are trusted and not revoked.
    pub fn active_ids(&self) -> impl Iterator<Item = &str> {
        self.keys
            .iter()
            .filter(|(_, k)| !k.revoked)
            .map(|(id, _)| id.as_str())
    }

    /// Verifies `program`'s signature (strict Ed25519) and returns the signing key id.
    pub fn verify(&self, program: &LlmIrProgram) -> Result<String> {
        let program_id = || program.program_id.clone();
        if program.signature.is_empty() {
            return Err(Error::Unsigned {
                program_id: program_id(),
            });
        }
        let signature = <[u8; 64]>::try_from(program.signature.as_slice())
            .map(|bytes| Signature::from_bytes(&bytes))
            .map_err(|_| Error::MalformedSignature {
                program_id: program_id(),
                len: program.signature.len(),
            })?;
        let key_id = &program.signing_key_id;
        let entry = self.keys.get(key_id).ok_or_else(|| Error::UnknownKey {
            program_id: program_id(),
            key_id: key_id.clone(),
        })?;
        if entry.revoked {
            return Err(Error::RevokedKey {
                program_id: program_id(),
                key_id: key_id.clone(),
            });
        }
        entry
            .key
            .verify_strict(&signing_digest(program), &signature)
            .map_err(|_| Error::BadSignature {
                program_id: program_id(),
                key_id: key_id.clone(),
            })?;
        Ok(key_id.clone())
    }
}
