//! Flipping any single byte of a signed program makes decode or verify fail, without panic.

use eyeflow_ir::keys::{self, SigningKey};
use eyeflow_ir::testing::sample_program;
use eyeflow_ir::{Keyring, Limits, encode, load};

#[test]
fn every_single_byte_flip_is_refused() {
    let key = SigningKey::from_bytes(&[42; 32]);
    let mut program = sample_program();
    keys::sign(&mut program, &key);
    let bytes = encode(&program);
    let mut keyring = Keyring::new();
    keyring.trust(key.verifying_key());
    let limits = Limits::default();
    load(&bytes, &keyring, &limits).expect("the untouched program loads");

    for position in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut tampered = bytes.clone();
            tampered[position] ^= mask;
            let result = load(&tampered, &keyring, &limits);
            assert!(
                result.is_err(),
                "flip {mask:#04x} at byte {position} of {} was accepted",
                bytes.len()
            );
        }
    }
}

#[test]
fn truncation_and_extension_are_refused() {
    let key = SigningKey::from_bytes(&[42; 32]);
    let mut program = sample_program();
    keys::sign(&mut program, &key);
    let bytes = encode(&program);
    let mut keyring = Keyring::new();
    keyring.trust(key.verifying_key());
    for len in 0..bytes.len() {
        assert!(
            load(&bytes[..len], &keyring, &Limits::default()).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
    let mut longer = bytes.clone();
    // An unknown field appended: decodes (prost skips it) but is not canonical.
    longer.extend_from_slice(&[0xf8, 0x07, 0x01]);
    let err = load(&longer, &keyring, &Limits::default()).expect_err("extension");
    assert!(
        matches!(err, eyeflow_ir::Error::NonCanonical { .. }),
        "{err}"
    );
}
