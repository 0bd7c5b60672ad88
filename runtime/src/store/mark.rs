//! The store's durable mark, and the check at open that fjall's recovery dropped nothing
//! that was durable.
//!
//! fjall's journal recovery treats any record it cannot decode as a torn tail: it cuts the
//! journal file there and drops everything after it, silently. After a crash that is right
//! for the one write in flight; for a corrupt record in the middle it loses durable data.
//! The audit chain ([`Space::Audit`]) is append-only and nearly every durable write carries
//! an entry of it, so every fsync of the store records the chain's last record as that fsync
//! made it durable — `store.mark` beside the store: the record's key and the SHA-256 of its
//! value, read before the fsync's flush (so the mark never claims more than is durable) and
//! written after it. Opening the store checks that record is still there with the same
//! bytes; if not, recovery lost durable records: the node does not start, the journal files
//! as they were before recovery are kept in `damaged-<ms>/` (the store copies them aside
//! before every open), and `eyeflow audit repair` accepts the loss explicitly (audited).
//!
//! Mark file: `eyeflow-mark-v1\n` (16 bytes) ‖ key (8 bytes: the index of the record's last
//! entry, big-endian, which its key starts with)
//! ‖ SHA-256 of the value (32 bytes) ‖ the first 8 bytes of the SHA-256 of the 56 bytes
//! before.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Space;
use crate::{Error, Result};

/// The mark's file name, in the data directory.
pub const MARK_FILE: &str = "store.mark";

const MAGIC: &[u8; 16] = b"eyeflow-mark-v1\n";
const MARK_LEN: usize = 64;

/// The last record of [`Space::Audit`] that an fsync made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The first 8 bytes of its key: the index of its last entry.
    pub index: u64,
    /// SHA-256 of its value.
    pub digest: [u8; 32],
}

impl Mark {
    /// The mark of record `(key, value)`; `None` for a key too short to hold an entry index.
    pub fn of(key: &[u8], value: &[u8]) -> Option<Self> {
        Some(Self {
            index: u64::from_be_bytes(key.get(..8)?.try_into().ok()?),
            digest: Sha256::digest(value).into(),
        })
    }

    fn to_bytes(self) -> [u8; MARK_LEN] {
        let mut bytes = [0u8; MARK_LEN];
        bytes[..16].copy_from_slice(MAGIC);
        bytes[16..24].copy_from_slice(&self.index.to_be_bytes());
        bytes[24..56].copy_from_slice(&self.digest);
        let sum = Sha256::digest(&bytes[..56]);
        bytes[56..].copy_from_slice(&sum[..8]);
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; MARK_LEN] = bytes.try_into().ok()?;
        let sum = Sha256::digest(&bytes[..56]);
        if &bytes[..16] != MAGIC || bytes[56..] != sum[..8] {
            return None;
        }
        Some(Self {
            index: u64::from_be_bytes(bytes[16..24].try_into().ok()?),
            digest: bytes[24..56].try_into().ok()?,
        })
    }
}

/// Writes the mark, each time only when it moved.
pub struct MarkWriter {
    file: File,
    last: Option<Mark>,
}

impl MarkWriter {
    /// Opens (or creates) the mark of `data_dir`, which holds `last`.
    pub fn open(data_dir: &Path, last: Option<Mark>) -> Result<Self> {
        let path = data_dir.join(MARK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        Ok(Self { file, last })
    }

    /// Records `mark` (no fsync of its own: a mark lost in a crash only makes the next
    /// check weaker, never wrong). One aligned 64-byte write: never torn across sectors.
    pub fn record(&mut self, mark: Mark) -> std::io::Result<()> {
        if self
            .last
            .is_some_and(|last| last.index > mark.index || last == mark)
        {
            return Ok(());
        }
        self.file.write_all_at(&mark.to_bytes(), 0)?;
        self.last = Some(mark);
        Ok(())
    }
}

/// The mark of `data_dir` (`None` when there is none yet).
pub fn read(data_dir: &Path) -> Result<Option<Mark>> {
    let path = data_dir.join(MARK_FILE);
    match std::fs::read(&path) {
        Ok(bytes) if bytes.is_empty() => Ok(None),
        Ok(bytes) => Mark::from_bytes(&bytes)
            .map(Some)
            .ok_or_else(|| Error::StoreDamaged {
                data_dir: data_dir.to_path_buf(),
                damage: format!(
                    "{MARK_FILE} is damaged ({} bytes, expected {MARK_LEN} with a valid checksum): \
                 which records were durable is unknown",
                    bytes.len()
                ),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// What lost durable records, in words (`None`: nothing): `stored` is the marked record as
/// the store holds it after recovery, `cut` the journals recovery shortened.
pub fn damage(mark: Mark, stored: Option<&[u8]>, cut: &[String]) -> Option<String> {
    let what = match stored {
        None => format!(
            "audit entry {} was durable but is gone with every record after it",
            mark.index
        ),
        Some(value) if <[u8; 32]>::from(Sha256::digest(value)) != mark.digest => format!(
            "audit entry {} holds other bytes than when it was durable",
            mark.index
        ),
        Some(_) => return None,
    };
    Some(if cut.is_empty() {
        what
    } else {
        format!("{what} ({})", cut.join(", "))
    })
}

/// The written length of each journal file of `store`, by id: up to its first hole (fjall
/// preallocates a journal as a sparse file and writes it from the start).
pub fn journals(store: &Path) -> Result<BTreeMap<u64, u64>> {
    let mut found = BTreeMap::new();
    let entries = match std::fs::read_dir(store) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(Error::io(store)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io(store))?;
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.strip_suffix(".jnl"))
            .and_then(|id| id.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let file = File::open(&path).map_err(Error::io(&path))?;
        found.insert(id, written(&file).map_err(Error::io(&path))?);
    }
    Ok(found)
}

fn written(file: &File) -> std::io::Result<u64> {
    match rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(0)) {
        Ok(hole) => Ok(hole),
        Err(_) => Ok(file.metadata()?.len()),
    }
}

/// How recovery shortened the journals, in words: `journal 3.jnl cut at byte 1234 of 5678`.
pub fn cuts(before: &BTreeMap<u64, u64>, after: &BTreeMap<u64, u64>) -> Vec<String> {
    before
        .iter()
        .filter_map(|(id, &was)| {
            let now = *after.get(id)?;
            (now < was).then(|| format!("recovery cut journal {id}.jnl at byte {now} of {was}"))
        })
        .collect()
}

/// Copies of the journal files taken before recovery: discarded when nothing was lost,
/// kept when something was.
pub struct Preserved {
    dir: PathBuf,
}

impl Preserved {
    /// Copies the written part of each journal file of `store` into `data_dir/recovery-copy`.
    pub fn take(data_dir: &Path, store: &Path, journals: &BTreeMap<u64, u64>) -> Result<Self> {
        let dir = data_dir.join("recovery-copy");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        for (id, &len) in journals {
            let name = format!("{id}.jnl");
            let from = store.join(&name);
            let to = dir.join(&name);
            let mut source = File::open(&from).map_err(Error::io(&from))?.take(len);
            let mut target = File::create(&to).map_err(Error::io(&to))?;
            std::io::copy(&mut source, &mut target).map_err(Error::io(&to))?;
            target.flush().map_err(Error::io(&to))?;
        }
        Ok(Self { dir })
    }

    /// Nothing was lost: the copies go.
    pub fn discard(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir).map_err(Error::io(&self.dir))
    }

    /// Something was lost: the copies stay as `damaged-<ms>/`; its path.
    pub fn keep(self, data_dir: &Path) -> Result<PathBuf> {
        let kept = data_dir.join(format!("damaged-{}", crate::now_ms()));
        std::fs::rename(&self.dir, &kept).map_err(Error::io(&kept))?;
        Ok(kept)
    }
}

/// The space the mark's record lives in, and the start of its key (the record's key is the
/// first in that space to start so).
pub fn key(mark: Mark) -> (Space, [u8; 8]) {
    (Space::Audit, mark.index.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_round_trips_and_a_flipped_bit_is_refused() {
        let mark = Mark::of(&7u64.to_be_bytes(), b"record").expect("8-byte key");
        let bytes = mark.to_bytes();
        assert_eq!(Mark::from_bytes(&bytes), Some(mark));
        for at in 0..MARK_LEN {
            let mut bad = bytes;
            bad[at] ^= 1;
            assert_eq!(Mark::from_bytes(&bad), None, "flip at {at}");
        }
        assert_eq!(Mark::from_bytes(&bytes[..MARK_LEN - 1]), None);
        assert_eq!(Mark::of(b"short", b"x"), None);
        let run = [7u64.to_be_bytes(), 5u64.to_be_bytes()].concat();
        assert_eq!(Mark::of(&run, b"record").map(|m| m.index), Some(7));
    }

    #[test]
    fn a_marked_record_gone_or_changed_is_damage() {
        let mark = Mark::of(&3u64.to_be_bytes(), b"entry three").expect("mark");
        assert_eq!(damage(mark, Some(b"entry three"), &[]), None);
        let gone = damage(
            mark,
            None,
            &["recovery cut journal 0.jnl at byte 10 of 90".into()],
        )
        .expect("gone");
        assert!(
            gone.contains("entry 3") && gone.contains("byte 10"),
            "{gone}"
        );
        assert!(damage(mark, Some(b"entry thre3"), &[]).is_some());
    }

    #[test]
    fn cuts_name_the_shortened_journals() {
        let before = BTreeMap::from([(1, 100), (2, 50)]);
        let after = BTreeMap::from([(1, 100), (2, 20)]);
        assert_eq!(
            cuts(&before, &after),
            vec!["recovery cut journal 2.jnl at byte 20 of 50".to_owned()]
        );
    }
}
