//! The audit chain's logic, apart from where it is stored: the canonical bytes of an entry,
//! the link hash, signed checkpoints of the chain head, and [`Verifier`], which checks
//! records fed to it in order and names the first broken one. The node's store
//! (`eyeflow-runtime`'s `audit` module) and an offline verifier share it.
//!
//! ## The chain
//!
//! Entry `n` (from 0) has `hash_n = SHA-256(hash_{n-1} ‖ canonical(entry_n))`, with
//! `hash_{-1}` = 32 zero bytes.
//!
//! ## Canonical encoding of an entry
//!
//! `canonical(entry)` is the UTF-8 JSON text produced by [`canonical_json`] from the entry's
//! serde form, byte by byte:
//!
//! - one object holding the fields of [`AuditEntry`], keys in ascending byte order:
//!   `execution_id`, `fallback`, `finished_ms`, `input_digest`, `instruction_id`,
//!   `node_id`, `opcode`, `outcome`, `output_digest`, `program_id`, `program_sha256`,
//!   `program_version`, `started_ms`;
//! - `program_sha256` (the hex SHA-256 of the signed program's bytes) only when the entry
//!   has one: entries written before it was recorded, and operator entries, have the twelve
//!   other keys and nothing else, so their bytes — and the chains holding them — are what
//!   they were;
//! - no whitespace anywhere: `{` key `:` value (`,` key `:` value)* `}`;
//! - strings (keys and values) in double quotes; `"` and `\` escaped as `\"` and `\\`;
//!   U+0008, U+0009, U+000A, U+000C, U+000D as `\b`, `\t`, `\n`, `\f`, `\r`; every other
//!   code point below U+0020 as `\u00` + two lowercase hex digits; everything else
//!   (including `/`, U+007F and non-ASCII) as its literal UTF-8 bytes;
//! - integers (`started_ms`, `finished_ms`) in decimal ASCII, no sign, no leading zeros;
//! - `fallback` absent is `null`.
//!
//! For example `{"execution_id":"x1","fallback":null,"finished_ms":2,...,"started_ms":1}`.
//!
//! ## Checkpoints
//!
//! A checkpoint signs the chain head: `index` (of the last entry it covers), `hash` (that
//! entry's hash), `time_ms`. The Ed25519 signature is over [`Checkpoint::payload`]:
//! the 28 ASCII bytes `eyeflow-audit-checkpoint/v1\n` ‖ index (8 bytes big-endian) ‖ hash
//! (32 bytes) ‖ time_ms (8 bytes big-endian).
//!
//! A plain hash chain detects edits but not a truncated tail: [`Verifier::finish`] reports a
//! chain that ends before a checkpoint it was given.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ports::AuditEntry;

mod programs;
mod records;

pub use programs::Programs;
pub use records::{
    CheckpointRecord, EntryRecord, FORMAT, FileError, FileReport, Header, Record, verify_file,
    write_record,
};

/// Domain separation prefix of a checkpoint's signed payload.
const CHECKPOINT_DOMAIN: &[u8; 28] = b"eyeflow-audit-checkpoint/v1\n";

/// Length of a checkpoint's stored form: index, hash, time, signature.
pub const CHECKPOINT_LEN: usize = 8 + 32 + 8 + 64;

/// The audit entry of an operator action (a key trusted or revoked, a plugin transferred):
/// `opcode` names the action, `subject` what it concerns (in `instruction_id`), `input` and
/// `output` are digested like an instruction's. Not an execution's step: node, execution and
/// program are empty.
pub fn operator_entry(
    opcode: &str,
    subject: &str,
    input: &Value,
    output: &Value,
    at_ms: u64,
) -> AuditEntry {
    let digest = |value: &Value| hex::encode(Sha256::digest(canonical_json(value)));
    AuditEntry {
        node_id: String::new(),
        execution_id: String::new(),
        program_id: String::new(),
        program_version: String::new(),
        program_sha256: None,
        instruction_id: subject.to_owned(),
        opcode: opcode.to_owned(),
        input_digest: digest(input),
        output_digest: digest(output),
        outcome: "done".to_owned(),
        fallback: None,
        started_ms: at_ms,
        finished_ms: at_ms,
    }
}

/// A signed statement of the chain head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Index of the last entry covered.
    pub index: u64,
    /// That entry's hash.
    pub hash: [u8; 32],
    /// When it was signed, Unix milliseconds.
    pub time_ms: u64,
    /// Ed25519 signature of [`Checkpoint::payload`].
    pub signature: [u8; 64],
}

impl Checkpoint {
    /// The signed bytes (see the module documentation).
    pub fn payload(&self) -> Vec<u8> {
        payload(self.index, &self.hash, self.time_ms)
    }

    /// Whether the signature is `key`'s (strict verification).
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        key.verify_strict(&self.payload(), &Signature::from_bytes(&self.signature))
            .is_ok()
    }

    /// The checkpoint as JSON — the form the Kafka audit topic carries and
    /// `eyeflow audit checkpoint` writes: `{node_id, index, hash, time_ms, signature}`, hash
    /// and signature in lowercase hex.
    pub fn to_json(&self, node_id: &str) -> Value {
        serde_json::json!({
            "node_id": node_id,
            "index": self.index,
            "hash": hex::encode(self.hash),
            "time_ms": self.time_ms,
            "signature": hex::encode(self.signature),
        })
    }

    /// Reads the JSON form of [`Checkpoint::to_json`]; what is wrong, in words.
    pub fn from_json(value: &Value) -> std::result::Result<Self, String> {
        let number = |field: &str| {
            value
                .get(field)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("field `{field}`: expected an unsigned integer"))
        };
        fn bytes<const N: usize>(
            value: &Value,
            field: &str,
        ) -> std::result::Result<[u8; N], String> {
            value
                .get(field)
                .and_then(Value::as_str)
                .and_then(|text| hex::decode(text).ok())
                .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
                .ok_or_else(|| format!("field `{field}`: expected {N} bytes in hex"))
        }
        Ok(Self {
            index: number("index")?,
            hash: bytes(value, "hash")?,
            time_ms: number("time_ms")?,
            signature: bytes(value, "signature")?,
        })
    }

    /// Signs the head `index`, `hash` at `time_ms` with `key`.
    pub fn sign(index: u64, hash: [u8; 32], time_ms: u64, key: &SigningKey) -> Self {
        let signature = key.sign(&payload(index, &hash, time_ms)).to_bytes();
        Self {
            index,
            hash,
            time_ms,
            signature,
        }
    }

    /// The stored form: index (8 bytes big-endian) ‖ hash ‖ time_ms (8 bytes big-endian) ‖
    /// signature, [`CHECKPOINT_LEN`] bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(CHECKPOINT_LEN);
        bytes.extend_from_slice(&self.index.to_be_bytes());
        bytes.extend_from_slice(&self.hash);
        bytes.extend_from_slice(&self.time_ms.to_be_bytes());
        bytes.extend_from_slice(&self.signature);
        bytes
    }

    /// Reads [`Checkpoint::to_bytes`]; `None` unless exactly [`CHECKPOINT_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (index, rest) = bytes.split_first_chunk::<8>()?;
        let (hash, rest) = rest.split_first_chunk::<32>()?;
        let (time_ms, rest) = rest.split_first_chunk::<8>()?;
        let signature = <[u8; 64]>::try_from(rest).ok()?;
        Some(Self {
            index: u64::from_be_bytes(*index),
            hash: *hash,
            time_ms: u64::from_be_bytes(*time_ms),
            signature,
        })
    }
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Index of the first entry checked (0 unless verification resumed part-way, see
    /// [`Verifier::resume`]).
    pub first: u64,
    /// Number of entries up to the head: the index after the last entry checked.
    pub entries: u64,
    /// Hash of the last entry (32 zero bytes for an empty chain; the hash verification
    /// started from when it resumed and checked no entry).
    pub head_hash: [u8; 32],
    /// Checkpoints found consistent with the chain.
    pub checkpoints: u64,
    /// Whether their signatures were checked (a verifying key was given).
    pub signatures_checked: bool,
    /// When verification resumed part-way: whether a checkpoint confirmed the hash it
    /// started from (otherwise that hash is taken as the records state it).
    pub anchored: bool,
    /// The program hashes checked, when signed programs were given.
    pub programs: Option<ProgramsReport>,
}

/// What checking entries against signed programs found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramsReport {
    /// Entries whose program hash is the hash of a given program of the same id and version.
    pub checked: u64,
    /// Entries with no program hash (operator entries, and entries written before the hash
    /// was recorded).
    pub unchecked: u64,
}

/// The first broken entry of a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at entry {index}: {reason}")]
pub struct AuditBroken {
    /// Index of the first entry that does not verify (for a truncated chain: the first
    /// missing one).
    pub index: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// The canonical bytes of `entry` (see the module documentation), written field by field
/// in key order (the same bytes as [`canonical_json`] of its serde form, without building
/// that form).
pub fn canonical(entry: &AuditEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(320 + entry.instruction_id.len());
    let mut first = true;
    let mut key = |name: &str, out: &mut Vec<u8>| {
        out.extend_from_slice(if first { b"{\"" } else { b",\"" });
        first = false;
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
    };
    let string = |s: &str, out: &mut Vec<u8>| canonical_json_str(s, out);
    key("execution_id", &mut out);
    string(&entry.execution_id, &mut out);
    key("fallback", &mut out);
    match &entry.fallback {
        Some(fallback) => string(fallback, &mut out),
        None => out.extend_from_slice(b"null"),
    }
    key("finished_ms", &mut out);
    out.extend_from_slice(entry.finished_ms.to_string().as_bytes());
    key("input_digest", &mut out);
    string(&entry.input_digest, &mut out);
    key("instruction_id", &mut out);
    string(&entry.instruction_id, &mut out);
    key("node_id", &mut out);
    string(&entry.node_id, &mut out);
    key("opcode", &mut out);
    string(&entry.opcode, &mut out);
    key("outcome", &mut out);
    string(&entry.outcome, &mut out);
    key("output_digest", &mut out);
    string(&entry.output_digest, &mut out);
    key("program_id", &mut out);
    string(&entry.program_id, &mut out);
    if let Some(sha256) = &entry.program_sha256 {
        key("program_sha256", &mut out);
        string(sha256, &mut out);
    }
    key("program_version", &mut out);
    string(&entry.program_version, &mut out);
    key("started_ms", &mut out);
    out.extend_from_slice(entry.started_ms.to_string().as_bytes());
    out.push(b'}');
    out
}

/// Canonical JSON of `value`: object keys in ascending byte order, no whitespace, strings
/// escaped as the module documentation says, numbers as serde_json writes them (integers
/// in decimal; floats in their shortest round-trip form).
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    crate::exec::canonical_json(value, &mut out);
    out
}

fn canonical_json_str(s: &str, out: &mut Vec<u8>) {
    // Writing a string into a `Vec` cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// `SHA-256(previous ‖ body)`: the hash of the entry whose canonical bytes are `body`,
/// after the entry whose hash is `previous`.
pub fn chain_hash(previous: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(body);
    hasher.finalize().into()
}

fn payload(index: u64, hash: &[u8; 32], time_ms: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 48);
    bytes.extend_from_slice(CHECKPOINT_DOMAIN);
    bytes.extend_from_slice(&index.to_be_bytes());
    bytes.extend_from_slice(hash);
    bytes.extend_from_slice(&time_ms.to_be_bytes());
    bytes
}

/// Checks a chain fed to it record by record, from entry 0 (or from where it resumes),
/// against checkpoints and, when given, the signed programs its entries name.
#[derive(Debug)]
pub struct Verifier {
    checkpoints: Vec<Checkpoint>,
    /// The next checkpoint to meet, in `checkpoints`.
    pending: usize,
    running: [u8; 32],
    first: u64,
    expected: u64,
    signatures_checked: bool,
    anchored: bool,
    programs: Option<Programs>,
    programs_checked: u64,
    programs_unchecked: u64,
}

impl Verifier {
    /// A verifier against `checkpoints` (in any order, duplicates allowed); with `key`, each
    /// one's signature must verify first.
    pub fn new(
        checkpoints: Vec<Checkpoint>,
        key: Option<&VerifyingKey>,
    ) -> Result<Self, AuditBroken> {
        Self::resume(checkpoints, key, 0, [0; 32])
    }

    /// A verifier of a chain's part that starts at entry `next`, taking `previous` as the
    /// hash of the entry before it (for `next` = 0, 32 zero bytes). Checkpoints before that
    /// entry cannot be checked and are left out; one of the entry before it must state
    /// `previous` (then the start is anchored, see [`VerifyReport::anchored`]).
    pub fn resume(
        mut checkpoints: Vec<Checkpoint>,
        key: Option<&VerifyingKey>,
        next: u64,
        previous: [u8; 32],
    ) -> Result<Self, AuditBroken> {
        checkpoints.sort_by_key(|c| c.index);
        checkpoints.dedup();
        if let Some(key) = key
            && let Some(bad) = checkpoints.iter().find(|c| !c.verify(key))
        {
            return Err(AuditBroken {
                index: bad.index,
                reason: format!(
                    "the checkpoint at this entry (signed at {} ms) does not verify with the given key",
                    bad.time_ms
                ),
            });
        }
        let mut anchored = false;
        if let Some(before) = next.checked_sub(1) {
            checkpoints.retain(|c| c.index >= before);
            if let Some(bad) = checkpoints
                .iter()
                .find(|c| c.index == before && c.hash != previous)
            {
                return Err(AuditBroken {
                    index: bad.index,
                    reason: "fork: the hash stated for the entry verification starts after differs from a signed checkpoint's".into(),
                });
            }
            anchored = checkpoints.first().is_some_and(|c| c.index == before);
        }
        let pending = checkpoints.iter().take_while(|c| c.index < next).count();
        Ok(Self {
            checkpoints,
            pending,
            running: previous,
            first: next,
            expected: next,
            signatures_checked: key.is_some(),
            anchored,
            programs: None,
            programs_checked: 0,
            programs_unchecked: 0,
        })
    }

    /// The verifier, also checking each entry's program hash against `programs`.
    pub fn with_programs(mut self, programs: Programs) -> Self {
        self.programs = Some(programs);
        self
    }

    /// The index of the record expected next.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Checks the record stored at `index`: the hash it links to, its own hash and its
    /// canonical entry (and the entry's program, with [`Verifier::with_programs`]).
    pub fn check(
        &mut self,
        index: u64,
        previous: &[u8; 32],
        stored: &[u8; 32],
        body: &[u8],
    ) -> Result<(), AuditBroken> {
        let expected = self.expected;
        let broken = |reason: String| {
            Err(AuditBroken {
                index: expected,
                reason,
            })
        };
        if index != expected {
            return broken(format!(
                "entry {expected} is missing (the next stored entry is {index})"
            ));
        }
        if *previous != self.running {
            return broken(
                "bad link: its previous hash is not the hash of the entry before".into(),
            );
        }
        let hash = chain_hash(&self.running, body);
        if hash != *stored {
            return broken(
                "content altered: the hash of the entry does not match the stored hash".into(),
            );
        }
        let entry = match serde_json::from_slice::<AuditEntry>(body) {
            Ok(entry) if canonical(&entry) == body => entry,
            Ok(_) => return broken("the entry is not in canonical form".into()),
            Err(e) => return broken(format!("the entry is not an audit entry: {e}")),
        };
        while let Some(checkpoint) = self
            .checkpoints
            .get(self.pending)
            .filter(|c| c.index == expected)
        {
            if checkpoint.hash != hash {
                return broken(
                    "fork: the hash differs from the one a signed checkpoint states".into(),
                );
            }
            self.pending += 1;
        }
        if let Some(programs) = &self.programs {
            match programs.check(&entry) {
                Ok(true) => self.programs_checked += 1,
                Ok(false) => self.programs_unchecked += 1,
                Err(reason) => return broken(reason),
            }
        }
        self.running = hash;
        self.expected += 1;
        Ok(())
    }

    /// The end of the records: broken when a checkpoint covers entries past it.
    pub fn finish(self) -> Result<VerifyReport, AuditBroken> {
        if let Some(checkpoint) = self.checkpoints.get(self.pending) {
            return Err(AuditBroken {
                index: self.expected,
                reason: format!(
                    "chain truncated: it ends before entry {} but a checkpoint covers entries up to {}",
                    self.expected, checkpoint.index
                ),
            });
        }
        Ok(VerifyReport {
            first: self.first,
            entries: self.expected,
            head_hash: self.running,
            checkpoints: u64::try_from(self.checkpoints.len()).unwrap_or(u64::MAX),
            signatures_checked: self.signatures_checked,
            anchored: self.anchored,
            programs: self.programs.map(|_| ProgramsReport {
                checked: self.programs_checked,
                unchecked: self.programs_unchecked,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str, fallback: Option<&str>) -> AuditEntry {
        AuditEntry {
            node_id: format!("node {text}"),
            execution_id: "x0000000000000042".into(),
            program_id: text.into(),
            program_version: "1.0.0".into(),
            program_sha256: None,
            instruction_id: format!("loop/3/{text}"),
            opcode: "CALL_ACTION".into(),
            input_digest: "ab".repeat(32),
            output_digest: "cd".repeat(32),
            outcome: "failed:timeout".into(),
            fallback: fallback.map(str::to_owned),
            started_ms: 0,
            finished_ms: u64::MAX,
        }
    }

    #[test]
    fn the_canonical_entry_is_the_canonical_json_of_its_serde_form() {
        for (text, fallback) in [
            ("plain", None),
            (
                "quote \" backslash \\ nl \n ctl \u{1f} del \u{7f} é 漢 /",
                Some("retry"),
            ),
            ("", Some("\u{8}\u{c}\r\t")),
        ] {
            let entry = entry(text, fallback);
            let value = serde_json::to_value(&entry).expect("serde form");
            assert_eq!(
                String::from_utf8(canonical(&entry)).expect("utf-8"),
                String::from_utf8(canonical_json(&value)).expect("utf-8")
            );
        }
    }

    #[test]
    fn the_program_hash_has_its_key_in_order_and_its_absence_leaves_the_old_bytes() {
        let old = entry("plain", None);
        let old_text = String::from_utf8(canonical(&old)).expect("utf-8");
        assert!(!old_text.contains("program_sha256"), "{old_text}");
        let parsed: AuditEntry = serde_json::from_str(&old_text).expect("an old entry reads");
        assert_eq!(parsed.program_sha256, None);
        assert_eq!(canonical(&parsed), old_text.as_bytes());

        let mut new = old.clone();
        new.program_sha256 = Some("ef".repeat(32));
        let text = String::from_utf8(canonical(&new)).expect("utf-8");
        let value = serde_json::to_value(&new).expect("serde form");
        assert_eq!(text.as_bytes(), canonical_json(&value));
        assert!(
            text.contains(&format!(
                r#""program_id":"plain","program_sha256":"{}","program_version":"1.0.0""#,
                "ef".repeat(32)
            )),
            "{text}"
        );
    }

    /// Records (previous hash, hash, canonical body) of a chain of `n` entries.
    fn chain(n: usize) -> Vec<([u8; 32], [u8; 32], Vec<u8>)> {
        let mut previous = [0u8; 32];
        (0..n)
            .map(|i| {
                let body = canonical(&entry(&format!("e{i}"), None));
                let hash = chain_hash(&previous, &body);
                let record = (previous, hash, body);
                previous = hash;
                record
            })
            .collect()
    }

    fn run(
        records: &[([u8; 32], [u8; 32], Vec<u8>)],
        indexes: impl Iterator<Item = u64>,
        checkpoints: Vec<Checkpoint>,
        key: Option<&VerifyingKey>,
    ) -> Result<VerifyReport, AuditBroken> {
        let mut verifier = Verifier::new(checkpoints, key)?;
        for (index, (previous, hash, body)) in indexes.zip(records) {
            verifier.check(index, previous, hash, body)?;
        }
        verifier.finish()
    }

    #[test]
    fn the_verifier_names_the_first_broken_record() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let records = chain(4);
        let at = |i: usize| Checkpoint::sign(i as u64, records[i].1, 1_000, &key);
        let report = run(
            &records,
            0..,
            vec![at(1), at(3)],
            Some(&key.verifying_key()),
        )
        .expect("an untouched chain verifies");
        assert_eq!((report.entries, report.checkpoints), (4, 2));
        assert_eq!(report.head_hash, records[3].1);

        let mut edited = records.clone();
        edited[2].2[5] ^= 1;
        let broken = run(&edited, 0.., vec![], None).unwrap_err();
        assert_eq!(broken.index, 2, "{broken}");
        assert!(broken.reason.contains("content altered"), "{broken}");

        let mut skipped = records.clone();
        skipped.remove(1);
        let broken = run(&skipped, [0, 2, 3].into_iter(), vec![], None).unwrap_err();
        assert_eq!(broken.index, 1);
        assert!(broken.reason.contains("missing"), "{broken}");

        let broken = run(&records[..2], 0.., vec![at(3)], None).unwrap_err();
        assert!(broken.reason.contains("truncated"), "{broken}");

        let mut forked = at(2);
        forked.hash = records[1].1;
        let broken = run(&records, 0.., vec![forked], None).unwrap_err();
        assert!(broken.reason.contains("fork"), "{broken}");
        let other = SigningKey::from_bytes(&[8; 32]);
        let broken = run(&records, 0.., vec![at(1)], Some(&other.verifying_key())).unwrap_err();
        assert!(broken.reason.contains("does not verify"), "{broken}");
    }
}
