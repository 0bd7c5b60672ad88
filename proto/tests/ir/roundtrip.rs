//! Property test: any generated program survives encode -> decode unchanged, and the
//! canonical payload of the decoded program equals the original's.

use std::collections::BTreeMap;

use eyeflow_ir::canonical::signing_payload;
use eyeflow_ir::pb::{
    DispatchMetadata, DynamicSlot, FewShotExample, IrInstruction, LlmIrProgram, MemoryAccess,
    PriorityPolicy, RetryConfig,
};
use eyeflow_ir::{Limits, decode, encode};
use proptest::prelude::*;

fn dispatch() -> impl Strategy<Value = Option<DispatchMetadata>> {
    proptest::option::of(
        (
            "[a-z-]{0,12}",
            "[a-z0-9.-]{0,12}",
            0.0f32..2.0,
            0i32..4096,
            ".{0,40}",
            proptest::collection::vec(("\\{.{0,10}\\}", ".{0,10}"), 0..3),
            proptest::collection::vec(
                (
                    "[a-z]{1,6}",
                    prop_oneof!["vault", "runtime"],
                    "[a-z.]{1,10}",
                ),
                0..3,
            ),
            any::<bool>(),
        )
            .prop_map(
                |(
                    capability_id,
                    model,
                    temperature,
                    max_tokens,
                    prompt_template,
                    shots,
                    slots,
                    human,
                )| {
                    DispatchMetadata {
                        capability_id,
                        model,
                        temperature,
                        max_tokens,
                        prompt_template,
                        requires_human_validation: human,
                        few_shot_examples: shots
                            .into_iter()
                            .map(|(input_json, output_json)| FewShotExample {
                                input_json,
                                output_json,
                                label: String::new(),
                            })
                            .collect(),
                        dynamic_slots: slots
                            .into_iter()
                            .map(|(slot_id, source_type, source_key)| DynamicSlot {
                                slot_id,
                                source_type,
                                source_key,
                            })
                            .collect(),
                        ..Default::default()
                    }
                },
            ),
    )
}

fn instruction() -> impl Strategy<Value = IrInstruction> {
    (
        "[a-z_]{1,12}",
        0i32..16,
        proptest::collection::vec("[a-z_]{1,8}", 0..4),
        dispatch(),
        proptest::collection::btree_map("[a-z]{1,6}", ".{0,20}", 0..4),
        proptest::option::of((0i32..256, any::<bool>(), 0i32..100_000)),
        proptest::option::of((0u32..10, 0u32..10_000, 1.0f32..4.0)),
        proptest::option::of((0i32..4, "[a-z/]{0,10}", 0u32..3600)),
        ".{0,30}",
    )
        .prop_map(
            |(id, opcode, depends_on, dispatch, params, priority, retry, memory, expression)| {
                IrInstruction {
                    instruction_id: id,
                    opcode,
                    depends_on,
                    dispatch_metadata: dispatch,
                    params: params.into_iter().collect::<BTreeMap<_, _>>(),
                    priority_policy: priority.map(|(priority_level, preemptible, max_wait_ms)| {
                        PriorityPolicy {
                            priority_level,
                            preemptible,
                            max_wait_ms,
                        }
                    }),
                    retry: retry.map(
                        |(max_retries, backoff_ms, backoff_multiplier)| RetryConfig {
                            max_retries,
                            backoff_ms,
                            backoff_multiplier,
                            ..Default::default()
                        },
                    ),
                    memory: memory.map(|(scope, key, ttl_seconds)| MemoryAccess {
                        scope,
                        key,
                        ttl_seconds,
                        default_json: String::new(),
                    }),
                    expression,
                    ..Default::default()
                }
            },
        )
}

fn program() -> impl Strategy<Value = LlmIrProgram> {
    (
        "[a-z-]{1,16}",
        "[0-9]\\.[0-9]\\.[0-9]",
        any::<i64>(),
        proptest::collection::vec(any::<u8>(), 0..65),
        proptest::collection::vec(instruction(), 0..12),
    )
        .prop_map(
            |(program_id, version, compiled_at, signature, instructions)| LlmIrProgram {
                program_id,
                version,
                compiled_at,
                signature,
                ir_version: "2.0".into(),
                instructions,
                ..Default::default()
            },
        )
}

proptest! {
    #[test]
    fn encode_decode_round_trip(program in program()) {
        let bytes = encode(&program);
        let decoded = decode(&bytes, &Limits::default()).expect("canonical bytes decode");
        prop_assert_eq!(&decoded, &program);
        prop_assert_eq!(encode(&decoded), bytes);
        prop_assert_eq!(signing_payload(&decoded), signing_payload(&program));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        eyeflow_ir::testing::fuzz_one(&data, &eyeflow_ir::Keyring::new());
    }
}
