//! Phase 6, sign: signs the compiled program with `eyeflow_ir::keys::sign` and checks the
//! signature back with a keyring trusting only that key, as a runtime would.

use ed25519_dalek::SigningKey;
use eyeflow_ir::Keyring;
use eyeflow_ir::pb::LlmIrProgram;

use crate::error::{Error, Position};

/// Signs `program` in place and verifies the result.
pub(crate) fn sign(
    program: &mut LlmIrProgram,
    key: &SigningKey,
    at: Position,
) -> Result<(), Error> {
    eyeflow_ir::keys::sign(program, key);
    let mut keyring = Keyring::new();
    keyring.trust(key.verifying_key());
    keyring
        .verify(program)
        .map(|_| ())
        .map_err(|source| Error::Internal { at, source })
}
