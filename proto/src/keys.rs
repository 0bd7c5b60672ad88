//! Ed25519 keys, key files, the trusted keyring, and signing / verifying programs.
//!
//! A key id is the first 8 bytes of `sha256(public key)` in lowercase hex. Key files are
//! text that says its kind: a first line `eyeflow-secret-key-v1` (`NAME.key`, the secret
//! seed, mode 0600) or `eyeflow-public-key-v1` (`NAME.pub`), `#` comment lines (one with
//! the key id, checked when present), then the 32 key bytes in hex. A file of the other
//! kind than a use needs is refused, so a public key never signs and a secret key is never
//! trusted. Files of earlier versions, without the first line, still load when their
//! `# eyeflow ed25519 secret|public key ID` comment names the kind and the id matches.

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
    sign_as(program, key, &key_id(&key.verifying_key()));
}

/// [`sign`] under the key id `id` instead of the key's own (a device's keyring names its
/// keys, see [`Keyring::trust_as`]).
pub fn sign_as(program: &mut LlmIrProgram, key: &SigningKey, id: &str) {
    program.signing_key_id = id.to_owned();
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

/// What a key file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// An Ed25519 secret seed (`NAME.key`): signs.
    Secret,
    /// An Ed25519 public key (`NAME.pub`): trusted, verifies.
    Public,
}

impl KeyKind {
    /// The first line of a key file of this kind.
    pub fn header(self) -> &'static str {
        match self {
            Self::Secret => "eyeflow-secret-key-v1",
            Self::Public => "eyeflow-public-key-v1",
        }
    }

    /// The comment of key files written before the header line existed.
    fn legacy_comment(self) -> &'static str {
        match self {
            Self::Secret => "eyeflow ed25519 secret key ",
            Self::Public => "eyeflow ed25519 public key ",
        }
    }
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Secret => "secret key",
            Self::Public => "public key",
        })
    }
}

/// Comment line naming the key id in files this version writes.
const ID_COMMENT: &str = "key id ";

/// Writes `BASE.key` and `BASE.pub`; refuses to overwrite an existing file.
pub fn write_keypair(base: &Path, key: &SigningKey) -> Result<(PathBuf, PathBuf)> {
    let secret_path = base.with_extension("key");
    let public_path = base.with_extension("pub");
    let verifying = key.verifying_key();
    let id = key_id(&verifying);
    let secret = format!(
        "{}\n# {ID_COMMENT}{id}: ed25519 secret seed, keep private\n{}\n",
        KeyKind::Secret.header(),
        hex::encode(key.to_bytes())
    );
    let public = format!(
        "{}\n# {ID_COMMENT}{id}: ed25519 public key\n{}\n",
        KeyKind::Public.header(),
        hex::encode(verifying.as_bytes())
    );
    write_file(&secret_path, &secret, true)?;
    write_file(&public_path, &public, false)?;
    Ok((secret_path, public_path))
}

/// A key file's contents: its kind, its bytes, and the key id it claims, if any.
#[derive(Debug)]
struct KeyText {
    kind: KeyKind,
    bytes: [u8; 32],
    claimed_id: Option<String>,
}

/// Key files are a few lines; anything much larger is some other file given by mistake.
const MAX_KEY_FILE_BYTES: u64 = 4096;

fn first_word(text: &str) -> Option<String> {
    text.split_whitespace()
        .next()
        .map(|w| w.trim_end_matches([':', ',']).to_owned())
}

fn parse_key_text(path: &Path, text: &str) -> Result<KeyText> {
    let mut header = None;
    let mut legacy = None;
    let mut claimed_id = None;
    let mut key_line = None;
    let lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    for (n, line) in lines.enumerate() {
        if n == 0 && line.starts_with("eyeflow-") {
            header = Some(match line {
                l if l == KeyKind::Secret.header() => KeyKind::Secret,
                l if l == KeyKind::Public.header() => KeyKind::Public,
                other => {
                    return Err(key_error(
                        path,
                        format!(
                            "unknown key file format `{other}` (this eyeflow reads {} and {})",
                            KeyKind::Secret.header(),
                            KeyKind::Public.header()
                        ),
                    ));
                }
            });
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim();
            for kind in [KeyKind::Secret, KeyKind::Public] {
                if let Some(rest) = comment.strip_prefix(kind.legacy_comment()) {
                    legacy = Some(kind);
                    claimed_id = first_word(rest);
                }
            }
            if let Some(rest) = comment.strip_prefix(ID_COMMENT) {
                claimed_id = first_word(rest);
            }
            continue;
        }
        if key_line.replace(line).is_some() {
            return Err(key_error(path, "holds more than one key line"));
        }
    }
    let line = key_line.ok_or_else(|| key_error(path, "holds no key (expected 64 hex digits)"))?;
    let decoded = hex::decode(line).map_err(|e| key_error(path, format!("not hex: {e}")))?;
    let bytes = <[u8; 32]>::try_from(decoded.as_slice())
        .map_err(|_| key_error(path, format!("key is {} bytes, expected 32", decoded.len())))?;
    let kind = match (header, legacy) {
        (Some(header), Some(legacy)) if header != legacy => {
            return Err(key_error(
                path,
                format!("its first line says {header} but a comment says {legacy}"),
            ));
        }
        (Some(kind), _) | (None, Some(kind)) => kind,
        (None, None) => {
            return Err(key_error(
                path,
                format!(
                    "does not say whether it holds a secret or a public key (a key file from \
                     before kinds, without its `# eyeflow ed25519 ... key` comment); add the \
                     first line `{}` if it is the secret seed (NAME.key) or `{}` if it is the \
                     public key (NAME.pub), or make a new pair with `eyeflow keys gen`",
                    KeyKind::Secret.header(),
                    KeyKind::Public.header()
                ),
            ));
        }
    };
    Ok(KeyText {
        kind,
        bytes,
        claimed_id,
    })
}

/// Reads `path` as a key file and checks it holds a key of kind `expected`.
fn read_key_file(path: &Path, expected: KeyKind) -> Result<[u8; 32]> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| key_error(path, e.to_string()))?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| key_error(path, format!("not a key file: {e}")))?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(key_error(
            path,
            format!("not a key file: larger than {MAX_KEY_FILE_BYTES} bytes"),
        ));
    }
    key_from_text(path, &text, expected)
}

/// The key bytes of a key file's `text` (`path` names it in errors), refused unless it holds
/// a key of the `expected` kind whose id matches the one it claims.
fn key_from_text(path: &Path, text: &str, expected: KeyKind) -> Result<[u8; 32]> {
    let parsed = parse_key_text(path, text)?;
    if parsed.kind != expected {
        let hint = match expected {
            KeyKind::Secret => {
                "signing takes the secret key NAME.key made by `eyeflow keys gen`; NAME.pub \
                 is the half nodes trust"
            }
            KeyKind::Public => {
                "give the public key NAME.pub; a secret key file is never read for its public \
                 half and should not leave the signer's machine"
            }
        };
        return Err(Error::WrongKeyKind {
            path: path.display().to_string(),
            found: parsed.kind,
            expected,
            hint,
        });
    }
    if let Some(claimed) = &parsed.claimed_id {
        let actual = match parsed.kind {
            KeyKind::Secret => key_id(&SigningKey::from_bytes(&parsed.bytes).verifying_key()),
            KeyKind::Public => match VerifyingKey::from_bytes(&parsed.bytes) {
                Ok(key) => key_id(&key),
                Err(_) => String::new(),
            },
        };
        if *claimed != actual {
            return Err(key_error(
                path,
                format!(
                    "says key id {claimed} but its {} has id {}: the file was edited or holds \
                     another key",
                    parsed.kind,
                    if actual.is_empty() {
                        "<invalid>"
                    } else {
                        &actual
                    }
                ),
            ));
        }
    }
    Ok(parsed.bytes)
}

/// Reads a secret key written by [`write_keypair`]; a public key file is refused.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&read_key_file(
        path,
        KeyKind::Secret,
    )?))
}

/// Reads a public key written by [`write_keypair`]; a secret key file is refused.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey> {
    VerifyingKey::from_bytes(&read_key_file(path, KeyKind::Public)?)
        .map_err(|e| key_error(path, format!("not a valid ed25519 public key: {e}")))
}

/// Parses the text of a public key file (as [`write_keypair`] writes it) received from
/// elsewhere — an upload — named `name` in errors; a secret key is refused.
pub fn parse_verifying_key(name: &str, text: &str) -> Result<VerifyingKey> {
    let path = Path::new(name);
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(key_error(
            path,
            format!("not a key file: larger than {MAX_KEY_FILE_BYTES} bytes"),
        ));
    }
    VerifyingKey::from_bytes(&key_from_text(path, text, KeyKind::Public)?)
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

    /// Trusts `key` under the id `id` (a device's keyring, where ids are names such as
    /// `test`); a key already held under `id` stays.
    pub fn trust_as(&mut self, id: &str, key: VerifyingKey) {
        self.keys.entry(id.to_owned()).or_insert(TrustedKey {
            key,
            revoked: false,
        });
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

    /// Every key id the keyring holds, in order, with whether it is revoked.
    pub fn ids(&self) -> impl Iterator<Item = (&str, bool)> {
        self.keys.iter().map(|(id, k)| (id.as_str(), k.revoked))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, seed: u8) -> (SigningKey, PathBuf, PathBuf) {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let (secret, public) = write_keypair(&dir.join(format!("k{seed}")), &key).unwrap();
        (key, secret, public)
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn written_pairs_read_back_as_their_kind() {
        let dir = tempfile::tempdir().unwrap();
        let (key, secret, public) = pair(dir.path(), 7);
        let text = std::fs::read_to_string(&secret).unwrap();
        assert!(text.starts_with("eyeflow-secret-key-v1\n"), "{text}");
        let text = std::fs::read_to_string(&public).unwrap();
        assert!(text.starts_with("eyeflow-public-key-v1\n"), "{text}");
        assert_eq!(read_signing_key(&secret).unwrap(), key);
        assert_eq!(read_verifying_key(&public).unwrap(), key.verifying_key());
    }

    #[test]
    fn the_other_kind_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let (_, secret, public) = pair(dir.path(), 8);
        let err = read_signing_key(&public).unwrap_err();
        assert!(
            matches!(
                err,
                Error::WrongKeyKind {
                    found: KeyKind::Public,
                    expected: KeyKind::Secret,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("k8.pub holds a public key, but a secret key is needed"),
            "{text}"
        );
        let err = read_verifying_key(&secret).unwrap_err().to_string();
        assert!(
            err.contains("k8.key holds a secret key, but a public key is needed"),
            "{err}"
        );
    }

    #[test]
    fn a_secret_file_never_yields_a_trusted_key() {
        // Half of all 32-byte strings decode as a curve point: before kinds, trusting a
        // secret file "sometimes" worked and trusted a key nobody holds.
        let dir = tempfile::tempdir().unwrap();
        for seed in 0..64u8 {
            let (_, secret, _) = pair(dir.path(), seed);
            assert!(read_verifying_key(&secret).is_err(), "seed {seed}");
        }
    }

    #[test]
    fn files_of_earlier_versions_load_when_their_comment_names_the_kind() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[9; 32]);
        let id = key_id(&key.verifying_key());
        let secret = write(
            dir.path(),
            "old.key",
            &format!(
                "# eyeflow ed25519 secret key {id}: keep private\n{}\n",
                hex::encode(key.to_bytes())
            ),
        );
        let public = write(
            dir.path(),
            "old.pub",
            &format!(
                "# eyeflow ed25519 public key {id}\n{}\n",
                hex::encode(key.verifying_key().as_bytes())
            ),
        );
        assert_eq!(read_signing_key(&secret).unwrap(), key);
        assert_eq!(read_verifying_key(&public).unwrap(), key.verifying_key());
        assert!(matches!(
            read_signing_key(&public),
            Err(Error::WrongKeyKind { .. })
        ));
        assert!(matches!(
            read_verifying_key(&secret),
            Err(Error::WrongKeyKind { .. })
        ));
    }

    #[test]
    fn bare_hex_is_refused_with_how_to_convert() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[10; 32]);
        let bare = write(dir.path(), "bare.key", &hex::encode(key.to_bytes()));
        for err in [
            read_signing_key(&bare).unwrap_err().to_string(),
            read_verifying_key(&bare).unwrap_err().to_string(),
        ] {
            assert!(err.contains("does not say whether"), "{err}");
            assert!(err.contains("eyeflow-secret-key-v1"), "{err}");
            assert!(err.contains("eyeflow-public-key-v1"), "{err}");
        }
        // Converted as the message says, it loads.
        let converted = write(
            dir.path(),
            "converted.key",
            &format!("eyeflow-secret-key-v1\n{}\n", hex::encode(key.to_bytes())),
        );
        assert_eq!(read_signing_key(&converted).unwrap(), key);
    }

    #[test]
    fn a_key_that_does_not_match_its_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[11; 32]);
        let id = key_id(&key.verifying_key());
        // A secret seed pasted under a public header, the id comment kept.
        let pasted = write(
            dir.path(),
            "pasted.pub",
            &format!(
                "eyeflow-public-key-v1\n# key id {id}: ed25519 public key\n{}\n",
                hex::encode(key.to_bytes())
            ),
        );
        let err = read_verifying_key(&pasted).unwrap_err().to_string();
        assert!(err.contains(&format!("says key id {id}")), "{err}");
        // An old file whose comment names another key.
        let other = SigningKey::from_bytes(&[12; 32]);
        let swapped = write(
            dir.path(),
            "swapped.key",
            &format!(
                "# eyeflow ed25519 secret key {id}: keep private\n{}\n",
                hex::encode(other.to_bytes())
            ),
        );
        assert!(read_signing_key(&swapped).is_err());
    }

    #[test]
    fn malformed_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hex64 = "ab".repeat(32);
        for (name, text, expect) in [
            ("empty", String::new(), "holds no key"),
            (
                "v2",
                format!("eyeflow-secret-key-v2\n{hex64}\n"),
                "unknown key file format",
            ),
            (
                "two",
                format!("eyeflow-secret-key-v1\n{hex64}\n{hex64}\n"),
                "more than one key line",
            ),
            (
                "short",
                "eyeflow-secret-key-v1\nabcd\n".to_owned(),
                "2 bytes",
            ),
            (
                "nothex",
                "eyeflow-secret-key-v1\nzz\n".to_owned(),
                "not hex",
            ),
            (
                "both",
                format!("eyeflow-public-key-v1\n# eyeflow ed25519 secret key x\n{hex64}\n"),
                "first line says public key",
            ),
            ("huge", "#".repeat(5000), "larger than"),
        ] {
            let path = write(dir.path(), name, &text);
            let err = read_signing_key(&path).unwrap_err().to_string();
            assert!(err.contains(expect), "{name}: {err}");
        }
    }
}
