//! Decode + verify + validate of signed programs of about 8 KB and 50 KB (the seed's
//! "simple" and "complex multi-LLM" sizes), in total and phase by phase.

use criterion::{Criterion, criterion_group, criterion_main};
use eyeflow_ir::keys::{self, SigningKey};
use eyeflow_ir::pb::LlmIrProgram;
use eyeflow_ir::testing::chain_program;
use eyeflow_ir::{Keyring, Limits, decode, encode, load, validate};
use std::hint::black_box;

/// The smallest chain program whose signed encoding reaches `target` bytes.
fn signed_program_of(target: usize, key: &SigningKey) -> (LlmIrProgram, Vec<u8>) {
    let mut count = 1;
    loop {
        let mut program = chain_program(count);
        keys::sign(&mut program, key);
        let bytes = encode(&program);
        if bytes.len() >= target {
            return (program, bytes);
        }
        count += 1;
    }
}

fn bench_load(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[9; 32]);
    let mut keyring = Keyring::new();
    keyring.trust(key.verifying_key());
    let limits = Limits::default();
    for (label, target) in [("8KB", 8 * 1024), ("50KB", 50 * 1024)] {
        let (program, bytes) = signed_program_of(target, &key);
        let mut group = c.benchmark_group(format!("load_{label}"));
        group.bench_function("decode+verify+validate", |b| {
            b.iter(|| load(black_box(&bytes), &keyring, &limits).expect("loads"))
        });
        group.bench_function("decode", |b| {
            b.iter(|| decode(black_box(&bytes), &limits).expect("decodes"))
        });
        group.bench_function("verify", |b| {
            b.iter(|| keyring.verify(black_box(&program)).expect("verifies"))
        });
        group.bench_function("validate", |b| {
            b.iter(|| validate(black_box(&program)).expect("valid"))
        });
        group.finish();
    }
}

criterion_group!(benches, bench_load);
criterion_main!(benches);
