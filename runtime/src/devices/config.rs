//! `[[devices]]` in `node.toml`: a device's id, its link, the signed programs it runs and
//! its heartbeat, checked when the node starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eyeflow_ir::pb::LlmIrProgram;
use eyeflow_mcu::limits::MAX_PROGRAM_BYTES;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The default heartbeat of a device.
pub(super) const DEFAULT_HEARTBEAT_MS: u64 = 1000;
/// The default baud rate of a tty link.
pub(super) const DEFAULT_BAUD: u32 = 115_200;

/// One `[[devices]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    /// The device's id (as its HELLO says it): 1 to 32 of `a-z 0-9 _ -`, starting with a
    /// letter or digit.
    pub id: String,
    /// `tcp:HOST:PORT` (a serial-over-TCP bridge such as ser2net, or QEMU's UART socket),
    /// or the path of a tty (`/dev/ttyUSB0`).
    pub link: String,
    /// A tty's baud rate (default 115200); only for a tty.
    pub baud: Option<u32>,
    /// Signed program files deployed on the device's HELLO when it runs another program
    /// (in order: a device runs one program, the last loaded). Relative paths are taken
    /// from the config file's folder.
    #[serde(default)]
    pub programs: Vec<PathBuf>,
    /// How often the device sends a PING, ms (default 1000): it is `down` after 3
    /// missed.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
}

fn default_heartbeat_ms() -> u64 {
    DEFAULT_HEARTBEAT_MS
}

/// Where a device is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// A TCP serial bridge, `HOST:PORT`.
    Tcp(String),
    /// A tty and its baud rate.
    Tty {
        /// Its path.
        path: PathBuf,
        /// Its baud rate.
        baud: u32,
    },
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Link::Tcp(address) => write!(f, "tcp:{address}"),
            Link::Tty { path, baud } => write!(f, "{} at {baud} baud", path.display()),
        }
    }
}

/// A device as the node serves it.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Its id.
    pub id: String,
    /// Its link.
    pub link: Link,
    /// The programs deployed on HELLO.
    pub programs: Vec<Signed>,
    /// Its heartbeat period.
    pub heartbeat: Duration,
}

/// A signed program file for a device, with what the node reads of it.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The file's bytes, sent as they are.
    pub bytes: Arc<[u8]>,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Its program id (empty when the file does not decode: the device refuses it).
    pub id: String,
    /// Its version.
    pub version: String,
    /// The decoded program (its LLM_CALLs' prompts and schemas), when it decodes.
    pub program: Option<Arc<LlmIrProgram>>,
}

impl Signed {
    /// Reads `bytes`: at most `MAX_PROGRAM_BYTES` (one frame). It need not decode or
    /// verify: the device decides, and says why it refuses.
    pub fn new(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() > MAX_PROGRAM_BYTES {
            return Err(format!(
                "the file has {} bytes; a device takes at most {MAX_PROGRAM_BYTES}",
                bytes.len()
            ));
        }
        let program = eyeflow_ir::decode(bytes, &eyeflow_ir::Limits::default()).ok();
        let (id, version) = program
            .as_ref()
            .map(|p| (p.program_id.clone(), p.version.clone()))
            .unwrap_or_default();
        Ok(Self {
            bytes: bytes.into(),
            sha256: hex::encode(Sha256::digest(bytes)),
            id,
            version,
            program: program.map(Arc::new),
        })
    }
}

/// Whether `id` is a device id: 1 to 32 of `a-z 0-9 _ -`, starting with a letter or digit.
pub(super) fn is_device_id(id: &str) -> bool {
    id.len() <= 32
        && id.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

impl DeviceSection {
    /// The device this entry describes; relative program paths are taken from `base`.
    pub fn resolve(&self, base: Option<&Path>) -> Result<DeviceConfig> {
        let bad = |field: &str, reason: String| Error::BadConfig {
            what: format!("[[devices]] {field}"),
            reason,
        };
        if !is_device_id(&self.id) {
            return Err(bad(
                "id",
                format!(
                    "`{}` is not a device id: 1 to 32 of a-z, 0-9, `_`, `-`, starting with a letter or digit",
                    self.id
                ),
            ));
        }
        let link = match self.link.strip_prefix("tcp:") {
            Some(address) => {
                let port_ok = address
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !port_ok {
                    return Err(bad(
                        "link",
                        format!("device `{}`: `{}` is not tcp:HOST:PORT", self.id, self.link),
                    ));
                }
                if self.baud.is_some() {
                    return Err(bad(
                        "baud",
                        format!(
                            "device `{}`: a baud rate is for a tty link, not {}",
                            self.id, self.link
                        ),
                    ));
                }
                Link::Tcp(address.to_owned())
            }
            None if self.link.starts_with('/') => Link::Tty {
                path: PathBuf::from(&self.link),
                baud: self.baud.unwrap_or(DEFAULT_BAUD),
            },
            None => {
                return Err(bad(
                    "link",
                    format!(
                        "device `{}`: `{}` is neither tcp:HOST:PORT nor the absolute path of a tty",
                        self.id, self.link
                    ),
                ));
            }
        };
        if self.heartbeat_ms == 0 {
            return Err(bad(
                "heartbeat_ms",
                format!("device `{}`: the heartbeat must be at least 1 ms", self.id),
            ));
        }
        let programs = self
            .programs
            .iter()
            .map(|path| {
                let path = match base {
                    Some(base) if path.is_relative() => base.join(path),
                    _ => path.clone(),
                };
                let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
                let signed = Signed::new(&bytes)
                    .map_err(|reason| bad("programs", format!("{}: {reason}", path.display())))?;
                if signed.program.is_none() {
                    return Err(bad(
                        "programs",
                        format!("{}: not a signed program file", path.display()),
                    ));
                }
                Ok(signed)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DeviceConfig {
            id: self.id.clone(),
            link,
            programs,
            heartbeat: Duration::from_millis(self.heartbeat_ms),
        })
    }
}
