//! Program generators and the fuzz oracle, shared by tests, benchmarks, doc examples and
//! the `cargo fuzz` target. Not used by the runtime.

use std::collections::BTreeMap;

use crate::pb::{
    CapabilityRequirement, DispatchMetadata, FallbackConfig, FallbackStrategy, IrInstruction,
    IrOpcode, LlmIrProgram, PriorityPolicy, RetryConfig, TimeoutConfig,
};
use crate::{IR_VERSION, Keyring, Limits};

fn instruction(id: &str, opcode: IrOpcode, depends_on: &[&str]) -> IrInstruction {
    IrInstruction {
        instruction_id: id.to_owned(),
        opcode: opcode as i32,
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        ..Default::default()
    }
}

/// A small valid program: read a sensor, evaluate, branch, actuate a valve, return.
/// The golden signing vectors in `tests/ir/golden.rs` are computed from it: do not change it.
pub fn sample_program() -> LlmIrProgram {
    let mut read = instruction("read_pressure", IrOpcode::LoadResource, &[]);
    read.dispatch_metadata = Some(DispatchMetadata {
        capability_id: "sensor-sim".into(),
        capability_version: "^1.0".into(),
        ..Default::default()
    });
    read.params = BTreeMap::from([("sensor".into(), "'pressure-1'".into())]);
    let mut eval = instruction("too_high", IrOpcode::Eval, &["read_pressure"]);
    eval.expression = "read_pressure.value > 8.5".into();
    let mut branch = instruction("decide", IrOpcode::Branch, &["too_high"]);
    branch.branch_condition = "too_high".into();
    branch.branch_true_id = "close_valve".into();
    branch.branch_false_id = "done".into();
    let mut close = instruction("close_valve", IrOpcode::CallAction, &[]);
    close.dispatch_metadata = Some(DispatchMetadata {
        capability_id: "valve-sim".into(),
        capability_version: "^1.0".into(),
        action_name: "close".into(),
        ..Default::default()
    });
    close.resource_key = "valve/V-101".into();
    close.priority_policy = Some(PriorityPolicy {
        priority_level: 64,
        preemptible: false,
        max_wait_ms: 2000,
    });
    close.retry = Some(RetryConfig {
        max_retries: 3,
        backoff_ms: 100,
        backoff_multiplier: 2.0,
        max_backoff_ms: 1000,
        retry_on: vec![],
    });
    close.fallback = Some(FallbackConfig {
        strategy: FallbackStrategy::Abort as i32,
        ..Default::default()
    });
    close.timeout = Some(TimeoutConfig {
        execution_timeout_ms: 5000,
        on_timeout: FallbackStrategy::Abort as i32,
    });
    close.permissions = Some(crate::opcode::needed(&close));
    let mut done = instruction("done", IrOpcode::Return, &[]);
    done.expression = "{'pressure': read_pressure.value}".into();
    LlmIrProgram {
        program_id: "valve-guard".into(),
        name: "Valve guard".into(),
        version: "1.0.0".into(),
        compiled_at: 1_767_225_600,
        compiled_by: "tests@eyeflow".into(),
        ir_version: IR_VERSION.into(),
        instructions: vec![read, eval, branch, close, done],
        required_capabilities: vec![
            CapabilityRequirement {
                capability_id: "sensor-sim".into(),
                version_req: "^1.0".into(),
            },
            CapabilityRequirement {
                capability_id: "valve-sim".into(),
                version_req: "^1.0".into(),
            },
        ],
        default_priority: Some(PriorityPolicy {
            priority_level: 128,
            preemptible: true,
            max_wait_ms: 10_000,
        }),
        ..Default::default()
    }
}

/// A valid program of `count` chained EVAL instructions with realistic comments, ending
/// in a RETURN; about 170 bytes per instruction once encoded.
pub fn chain_program(count: usize) -> LlmIrProgram {
    let mut program = sample_program();
    program.instructions.clear();
    for i in 0..count {
        let id = format!("step_{i:04}");
        let deps: Vec<String> = if i == 0 {
            vec![]
        } else {
            vec![format!("step_{:04}", i - 1)]
        };
        program.instructions.push(IrInstruction {
            instruction_id: id,
            opcode: IrOpcode::Eval as i32,
            comment: format!("check threshold {i} of the cooling loop against the plant limits"),
            depends_on: deps,
            expression: format!("event.temperature_{i} < 80.0 && event.pressure_{i} < 8.5"),
            priority_policy: Some(PriorityPolicy {
                priority_level: 128,
                preemptible: true,
                max_wait_ms: 10_000,
            }),
            ..Default::default()
        });
    }
    program.instructions.push(IrInstruction {
        instruction_id: "done".into(),
        opcode: IrOpcode::Return as i32,
        depends_on: vec![format!("step_{:04}", count.saturating_sub(1))],
        expression: "true".into(),
        ..Default::default()
    });
    if count == 0 {
        program.instructions[0].depends_on.clear();
    }
    program
}

/// The fuzz oracle: `load` of arbitrary bytes must return (never panic), and bytes that
/// decode must be exactly the canonical encoding of what they decode to.
pub fn fuzz_one(data: &[u8], keyring: &Keyring) {
    let limits = Limits::default();
    if let Ok(program) = crate::decode(data, &limits) {
        assert_eq!(
            crate::encode(&program),
            data,
            "decode accepted a non-canonical encoding"
        );
        let _ = crate::validate(&program);
        let _ = crate::json::to_pretty_json(&program);
    }
    let _ = crate::load(data, keyring, &limits);
}

/// A deterministic pseudo-random source (xorshift64*) for the fixed-budget fuzz tests that
/// mangle inputs in the test suite: a failure reproduces from its seed.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    /// A source started at `seed` (0 is replaced: xorshift never leaves it).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `bound` (`0` when `bound` is 0).
    pub fn below(&mut self, bound: usize) -> usize {
        let bound = u64::try_from(bound).unwrap_or(u64::MAX);
        if bound == 0 {
            return 0;
        }
        usize::try_from(self.next_u64() % bound).unwrap_or(0)
    }
}
