//! The plugin package: one file holding the manifest, the component and an Ed25519
//! signature over both.
//!
//! Layout (all integers little-endian):
//!
//! | bytes | content |
//! |---|---|
//! | 16 | magic `EYEFLOW-PLUGIN\0` + format version `0x01` |
//! | 4 | manifest length M (≤ 256 KiB) |
//! | M | manifest, UTF-8 JSON |
//! | 4 | component length C (≤ 64 MiB) |
//! | C | the WebAssembly component |
//! | 1 | 0 = unsigned, 1 = signed |
//! | 16 + 64 | if signed: signing key id (16 lowercase hex characters) and the signature |
//!
//! The signature covers `b"eyeflow/plugin/signing/v1\0"` followed by bytes 16 to 24 + M + C
//! of the file (both lengths, the manifest and the component). Nothing may follow.

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey};
use eyeflow_ir::Keyring;
use eyeflow_ir::keys::{KeyState, key_id};
use sha2::{Digest, Sha256};

use super::manifest::{Import, MAX_MANIFEST_BYTES, Manifest};
use crate::{Error, Result};

/// Magic and format version at the start of every package.
pub const MAGIC: &[u8; 16] = b"EYEFLOW-PLUGIN\0\x01";
/// Domain separation prefix of the signed message.
pub const SIGNING_DOMAIN: &[u8] = b"eyeflow/plugin/signing/v1\0";
/// Largest accepted component.
pub const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;
/// Preamble of a WebAssembly component (magic, version 0x0d, layer 1).
const COMPONENT_HEADER: [u8; 8] = [0, b'a', b's', b'm', 0x0d, 0, 0x01, 0];
const KEY_ID_LEN: usize = 16;

/// A signature on a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSignature {
    /// Id of the signing key (as in the keyring).
    pub key_id: String,
    /// Ed25519 signature over the signed message.
    pub signature: Signature,
}

/// A parsed plugin package.
#[derive(Debug, Clone)]
pub struct Package {
    /// The parsed manifest.
    pub manifest: Manifest,
    manifest_bytes: Vec<u8>,
    component: Vec<u8>,
    signature: Option<PackageSignature>,
}

impl Package {
    /// An unsigned package from a manifest (JSON) and a component.
    pub fn new(manifest_bytes: Vec<u8>, component: Vec<u8>) -> Result<Self> {
        let manifest = Manifest::from_json(&manifest_bytes)?;
        check_component(&manifest.label(), &component)?;
        Ok(Self {
            manifest,
            manifest_bytes,
            component,
            signature: None,
        })
    }

    /// `id@version`.
    pub fn label(&self) -> String {
        self.manifest.label()
    }

    /// The component bytes.
    pub fn component(&self) -> &[u8] {
        &self.component
    }

    /// The manifest exactly as signed.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The signature, if signed.
    pub fn signature(&self) -> Option<&PackageSignature> {
        self.signature.as_ref()
    }

    /// Signs (or re-signs) with `key`.
    pub fn sign(&mut self, key: &SigningKey) {
        let signature = key.sign(&self.signed_message());
        self.signature = Some(PackageSignature {
            key_id: key_id(&key.verifying_key()),
            signature,
        });
    }

    /// SHA-256 of the signed content (lengths, manifest, component): the package identity.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.signed_body()).into()
    }

    /// SHA-256 of the component alone (keys the precompiled cache).
    pub fn component_digest(&self) -> [u8; 32] {
        Sha256::digest(&self.component).into()
    }

    fn signed_body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(8 + self.manifest_bytes.len() + self.component.len());
        push_len(&mut body, self.manifest_bytes.len());
        body.extend_from_slice(&self.manifest_bytes);
        push_len(&mut body, self.component.len());
        body.extend_from_slice(&self.component);
        body
    }

    fn signed_message(&self) -> Vec<u8> {
        let mut message = SIGNING_DOMAIN.to_vec();
        message.extend_from_slice(&self.signed_body());
        message
    }

    /// Verifies the signature against `keyring` (strict Ed25519); returns the key id.
    pub fn verify(&self, keyring: &Keyring) -> Result<String> {
        let plugin = self.label();
        let Some(sig) = &self.signature else {
            return Err(Error::UnsignedPackage { plugin });
        };
        let key_id = sig.key_id.clone();
        match keyring.key(&key_id) {
            KeyState::Unknown => Err(Error::UnknownKey { plugin, key_id }),
            KeyState::Revoked => Err(Error::RevokedKey { plugin, key_id }),
            KeyState::Active(key) => key
                .verify_strict(&self.signed_message(), &sig.signature)
                .map(|()| key_id.clone())
                .map_err(|_| Error::BadSignature { plugin, key_id }),
        }
    }

    /// The package file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&self.signed_body());
        match &self.signature {
            None => out.push(0),
            Some(sig) => {
                out.push(1);
                out.extend_from_slice(sig.key_id.as_bytes());
                out.extend_from_slice(&sig.signature.to_bytes());
            }
        }
        out
    }

    /// Parses a package; `what` names it in errors (usually the file name).
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadPackage {
            what: what.to_owned(),
            reason,
        };
        let mut r = Reader { bytes, at: 0 };
        let magic = r.take(MAGIC.len()).map_err(&bad)?;
        if magic != MAGIC {
            return Err(bad(if magic.starts_with(&MAGIC[..15]) {
                format!(
                    "format version {} is not supported; expected {}",
                    magic[15], MAGIC[15]
                )
            } else {
                "not an eyeflow plugin package (bad magic); expected a file written by `eyeflow plugin build`".to_owned()
            }));
        }
        let manifest_len = r.len(MAX_MANIFEST_BYTES, "manifest").map_err(&bad)?;
        let manifest_bytes = r.take(manifest_len).map_err(&bad)?.to_vec();
        let component_len = r.len(MAX_COMPONENT_BYTES, "component").map_err(&bad)?;
        let component = r.take(component_len).map_err(&bad)?.to_vec();
        let signature = match r.take(1).map_err(&bad)?[0] {
            0 => None,
            1 => {
                let key_id = std::str::from_utf8(r.take(KEY_ID_LEN).map_err(&bad)?)
                    .ok()
                    .filter(|id| id.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or_else(|| bad("signature key id is not hexadecimal".to_owned()))?
                    .to_owned();
                let signature = <[u8; 64]>::try_from(r.take(64).map_err(&bad)?)
                    .map_err(|_| bad("truncated signature".to_owned()))?;
                Some(PackageSignature {
                    key_id,
                    signature: Signature::from_bytes(&signature),
                })
            }
            other => return Err(bad(format!("signature flag {other}; expected 0 or 1"))),
        };
        if r.at != bytes.len() {
            return Err(bad(format!(
                "{} unexpected bytes after the signature",
                bytes.len() - r.at
            )));
        }
        let mut package = Self::new(manifest_bytes, component)?;
        package.signature = signature;
        Ok(package)
    }

    /// Reads and parses a package file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Compiles the component (with a default engine, apart from any node) and checks the
    /// interfaces it imports against the manifest (see [`Manifest::check_imports`]):
    /// the declared imports it does not use, or the error naming an undeclared one. For
    /// `eyeflow plugin build`, so that an author learns it before an operator's install.
    pub fn check_imports(&self) -> Result<Vec<Import>> {
        let engine = wasmtime::Engine::default();
        let component =
            wasmtime::component::Component::new(&engine, &self.component).map_err(|e| {
                Error::Wasm {
                    plugin: self.label(),
                    reason: format!("{e:#}"),
                }
            })?;
        let names: Vec<String> = component
            .component_type()
            .imports(&engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        self.manifest
            .check_imports(names.iter().map(String::as_str))
    }

    /// Whether `path` holds a signed package (`false` when there is no file, or not a
    /// package there).
    pub fn is_signed_file(path: &Path) -> bool {
        Self::read(path).is_ok_and(|package| package.signature.is_some())
    }

    /// Writes the package file.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_bytes()).map_err(Error::io(path))
    }
}

fn check_component(label: &str, component: &[u8]) -> Result<()> {
    if component.len() > MAX_COMPONENT_BYTES {
        return Err(Error::BadPackage {
            what: label.to_owned(),
            reason: format!(
                "component of {} bytes; expected at most {MAX_COMPONENT_BYTES}",
                component.len()
            ),
        });
    }
    if !component.starts_with(&COMPONENT_HEADER) {
        return Err(Error::BadPackage {
            what: label.to_owned(),
            reason: "the component is not a WebAssembly component (core modules are not accepted; build for wasm32-wasip2)".to_owned(),
        });
    }
    Ok(())
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    // Lengths are bounded far below u32::MAX by MAX_MANIFEST_BYTES / MAX_COMPONENT_BYTES.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {}: {} more bytes expected", self.at, n))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn len(&mut self, max: usize, what: &str) -> Result<usize, String> {
        let raw = self.take(4)?;
        let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
        if len > max {
            return Err(format!(
                "{what} length {len} exceeds the limit of {max} bytes"
            ));
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "id": "valve-sim", "version": "1.0.0", "kind": "capability", "wit": "1.2.0",
            "provides": [{"capability": "valve-sim", "version": "1.0.0"}],
            "imports": ["log", "kv"]
        }))
        .expect("json")
    }

    /// A signed package whose component is only a component preamble and some bytes (the
    /// parser does not compile it).
    fn package(component: Vec<u8>) -> Package {
        let mut package = Package::new(manifest(), component).expect("a good package");
        package.sign(&SigningKey::from_bytes(&[7; 32]));
        package
    }

    fn good() -> Vec<u8> {
        let mut component = COMPONENT_HEADER.to_vec();
        component.extend_from_slice(b"component body");
        package(component).to_bytes()
    }

    /// The bytes of an unsigned package around `component`, whatever it holds.
    fn framed(component: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        push_len(&mut out, manifest().len());
        out.extend_from_slice(&manifest());
        push_len(&mut out, component.len());
        out.extend_from_slice(component);
        out.push(0);
        out
    }

    /// `bytes` with the 4-byte length at `at` replaced by `len`.
    fn with_len(bytes: &[u8], at: usize, len: u32) -> Vec<u8> {
        let mut out = bytes.to_vec();
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        out
    }

    #[test]
    fn a_package_reads_back_byte_for_byte() {
        let bytes = good();
        let package = Package::from_bytes(&bytes, "good").expect("parses");
        assert_eq!(package.to_bytes(), bytes);
        assert_eq!(package.label(), "valve-sim@1.0.0");
    }

    /// What `cargo fuzz run package` looks for, on named malformed packages: each is refused
    /// with an error that says what is wrong, and none panics.
    #[test]
    fn malformed_packages_are_refused_with_the_reason() {
        let good = good();
        let m = manifest().len();
        let component_at = MAGIC.len() + 4 + m;
        let flag_at = good.len() - 1 - KEY_ID_LEN - 64;
        let cut = |n: usize| good[..n].to_vec();
        let replaced = |at: usize, with: &[u8]| {
            let mut out = good.clone();
            out[at..at + with.len()].copy_from_slice(with);
            out
        };
        let mut trailing = good.clone();
        trailing.push(0);
        let mut zip = b"PK\x03\x04".to_vec();
        zip.extend_from_slice(&good[4..]);
        let nested = framed(&good);
        let mut bad_json = good[..MAGIC.len()].to_vec();
        bad_json.extend_from_slice(&5u32.to_le_bytes());
        bad_json.extend_from_slice(b"{oops");
        bad_json.extend_from_slice(&good[component_at..]);
        let core_module = framed(b"\0asm\x01\0\0\0");
        let corpus: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "empty",
                Vec::new(),
                "truncated at byte 0: 16 more bytes expected",
            ),
            ("cut in the magic", cut(9), "truncated at byte 0"),
            ("a zip archive", zip, "bad magic"),
            (
                "a later format",
                replaced(15, &[2]),
                "format version 2 is not supported",
            ),
            (
                "cut before the manifest length",
                cut(18),
                "truncated at byte 16: 4 more",
            ),
            (
                "manifest length past the limit",
                with_len(&good, MAGIC.len(), u32::MAX),
                "manifest length 4294967295 exceeds the limit",
            ),
            (
                "manifest length past the end",
                with_len(&good, MAGIC.len(), (good.len() as u32) * 2),
                "more bytes expected",
            ),
            ("manifest not JSON", bad_json, "manifest"),
            (
                "component length past the limit",
                with_len(&good, component_at, MAX_COMPONENT_BYTES as u32 + 1),
                "component length 67108865 exceeds the limit",
            ),
            ("cut in the component", cut(component_at + 10), "truncated"),
            ("cut before the signature flag", cut(flag_at), "truncated"),
            ("cut in the signature", cut(good.len() - 10), "truncated"),
            (
                "an unknown signature flag",
                replaced(flag_at, &[2]),
                "signature flag 2",
            ),
            (
                "a key id that is not hex",
                replaced(flag_at + 1, b"zz"),
                "key id is not hexadecimal",
            ),
            ("bytes after the signature", trailing, "1 unexpected bytes"),
            (
                "a package inside a package",
                nested,
                "not a WebAssembly component",
            ),
            (
                "a core module",
                core_module,
                "core modules are not accepted",
            ),
        ];
        for (name, bytes, expected) in corpus {
            let error = match Package::from_bytes(&bytes, name) {
                Ok(_) => panic!("{name}: accepted"),
                Err(e) => e.to_string(),
            };
            assert!(error.contains(expected), "{name}: {error}");
        }
    }
}
