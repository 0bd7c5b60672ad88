//! Fixed key + fixed program = committed bytes. If one of these changes, every signed
//! program in the field stops verifying: change the payload version instead.

use eyeflow_ir::canonical::{signing_digest, signing_payload};
use eyeflow_ir::keys::{self, SigningKey, key_id};
use eyeflow_ir::testing::sample_program;
use eyeflow_ir::{Keyring, Limits, decode, encode, load};
use sha2::{Digest, Sha256};

const SEED: [u8; 32] = [7; 32];
const KEY_ID: &str = "fe812c12f3ab4ce6";
const PAYLOAD_SHA256: &str = "64960b829787e55dc65d0edfd30250ec0e8ab7c5fc5edf3cd01574054696f9ff";
const SIGNATURE: &str = "f5c201b08d26429e3f9ac705bf4358e69c984e01414a2130a0a3b602253b79b894e736df98576387378e1f6286c3ca114f97ca21bb646b839480e2c8185cb200";
const PROGRAM_SHA256: &str = "ed4086b2a01f9eff5afb5805d84e511b456d951e2ad8dc8182686c8d6029cb2d";

fn signed() -> eyeflow_ir::pb::LlmIrProgram {
    let mut program = sample_program();
    keys::sign(&mut program, &SigningKey::from_bytes(&SEED));
    program
}

#[test]
fn fixed_key_and_program_give_committed_bytes() {
    let key = SigningKey::from_bytes(&SEED);
    let program = signed();
    let payload = signing_payload(&program);
    assert!(payload.starts_with(b"eyeflow/llm-ir/signing/v1\0"));
    assert_eq!(hex::encode(Sha256::digest(&payload)), PAYLOAD_SHA256);
    assert_eq!(
        signing_digest(&program).to_vec(),
        Sha256::digest(&payload).to_vec()
    );
    assert_eq!(key_id(&key.verifying_key()), KEY_ID);
    assert_eq!(program.signing_key_id, KEY_ID);
    assert_eq!(hex::encode(&program.signature), SIGNATURE);
    assert_eq!(
        hex::encode(Sha256::digest(encode(&program))),
        PROGRAM_SHA256
    );
}

#[test]
fn payload_is_stable_across_encodes() {
    let program = signed();
    let once = encode(&program);
    let again = encode(&decode(&once, &Limits::default()).expect("decodes"));
    assert_eq!(once, again);
    let decoded = decode(&again, &Limits::default()).expect("decodes");
    assert_eq!(signing_payload(&decoded), signing_payload(&program));
}

#[test]
fn payload_frames_program_id_and_timestamp() {
    let program = signed();
    let payload = signing_payload(&program);
    let rest = &payload[eyeflow_ir::canonical::DOMAIN.len()..];
    assert_eq!(&rest[..4], &(program.program_id.len() as u32).to_be_bytes());
    let after_id = &rest[4 + program.program_id.len()..];
    assert_eq!(&after_id[..8], &program.compiled_at.to_be_bytes());
    assert_eq!(
        &after_id[8..12],
        &(program.instructions.len() as u32).to_be_bytes()
    );
}

#[test]
fn signature_covers_header_fields() {
    let mut keyring = Keyring::new();
    keyring.trust(SigningKey::from_bytes(&SEED).verifying_key());
    type Edit = fn(&mut eyeflow_ir::pb::LlmIrProgram);
    let edits: [(&str, Edit); 5] = [
        ("version", |p| p.version = "9.9.9".into()),
        ("ir_version", |p| p.ir_version = "1.0".into()),
        ("name", |p| p.name.push('!')),
        ("required_capabilities", |p| {
            p.required_capabilities[0].version_req = "*".into()
        }),
        ("compiled_at", |p| p.compiled_at += 1),
    ];
    for (field, edit) in edits {
        let mut program = signed();
        edit(&mut program);
        let err = load(&encode(&program), &keyring, &Limits::default()).expect_err(field);
        assert!(
            matches!(err, eyeflow_ir::Error::BadSignature { .. }),
            "{field}: {err}"
        );
    }
}
