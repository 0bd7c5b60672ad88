//! Loading a program: what a device checks before it runs anything, in the server's order
//! — size and canonical encoding (`malformed`), signature (`bad_signature`,
//! `unknown_key`), IR version, target, then the MCU profile (`not_mcu`) and the device's
//! capacities (`capacity`) as `eyeflow_ir::mcu` checks them, the program's structure
//! (`malformed`), and the capabilities it requires (`capability`). A loaded [`Program`] keeps the flow of its instructions (dependencies,
//! branch arms, loop bodies, compensation) as small indices and borrows everything else
//! from the verified file; [`Program::detail`] reads one instruction's fields when it runs.

use eyeflow_mcu::code;
use eyeflow_mcu::limits::{
    MAX_CODE_LEN, MAX_ID, MAX_INSTRUCTIONS, MAX_L1_KEYS, MAX_LOOP_ITERATIONS, MAX_PARAMS, MAX_PATH,
    MAX_PROGRAM_BYTES,
};
use eyeflow_mcu::trace::Refusal;
use heapless::Vec;

use crate::capability::{Capability, provided};
use crate::instruction::{EXECUTION_SCOPE, FallbackStrategy, IROpcode, Instruction};
use crate::owned::{JsonError, parse_json};
use crate::verify::{self, SignatureError};
use crate::wire::{self, Malformed, has};

/// IR versions a runtime of major version 2 runs (proto/src/version.rs).
const IR_VERSIONS: [&str; 4] = ["1.0", "1.5", "2.0", "2.5"];

/// Loops nested in loops, at most.
pub const MAX_LOOP_DEPTH: usize = 4;

/// Compensation instructions of one instruction, at most.
pub const MAX_COMPENSATION: usize = 8;

/// The default instruction timeout (the server's port deadline).
pub const DEFAULT_TIMEOUT_MS: u32 = 30_000;

/// A set of instructions, one bit per index.
pub type Set = u32;

/// One instruction's place in the flow.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its encoded bytes in the file.
    raw: &'static [u8],
    /// Its id.
    pub id: &'static str,
    /// The name later expressions read its result under.
    pub output: &'static str,
    /// Its opcode's `.proto` number.
    pub opcode: i32,
    /// Its `sequence_number` (the region order is by sequence, then id).
    sequence: i32,
    /// Instructions that must resolve before it.
    pub deps: Set,
    /// BRANCHes that name it as an arm.
    pub parents: Set,
    /// A BRANCH's arms.
    pub arms: (Option<u8>, Option<u8>),
    /// A LOOP's body.
    pub body: Set,
    /// Run in reverse order when this instruction aborts.
    pub compensation: Vec<u8, MAX_COMPENSATION>,
}

/// What the conductor and the actors need to run one instruction.
#[derive(Debug, Clone, Default)]
pub struct Detail {
    /// EVAL / RETURN / STORE expression.
    pub expression: &'static [u8],
    /// BRANCH condition.
    pub condition: &'static [u8],
    /// LOOP condition (empty: `max_iterations` rounds).
    pub while_condition: &'static [u8],
    /// Hardware call parameters, an LLM_CALL's slots or an EMIT_EVENT's fields, by name.
    pub params: Vec<(&'static str, &'static [u8]), MAX_PARAMS>,
    /// Hardware capability and action.
    pub capability: &'static str,
    /// The action (CALL_ACTION), resource read (LOAD_RESOURCE) or model (LLM_CALL).
    pub action: &'static str,
    /// EMIT_EVENT: the topic.
    pub topic: &'static str,
    /// EMIT_EVENT: the key's bytecode (empty: no key).
    pub event_key: &'static [u8],
    /// STORE / LOAD key.
    pub key: &'static str,
    /// LOAD: the value when the key is absent, as a JSON literal (empty: `null`).
    pub default: &'static str,
    /// Failure handling.
    pub policy: crate::policy::Policy,
    /// `timeout.execution_timeout_ms`, if set.
    pub timeout_ms: Option<u32>,
    /// LOOP rounds at most.
    pub max_iterations: u32,
    /// Priority level (0 = critical … 255 = background) for the arbiter.
    pub priority: u8,
    /// CALL_ACTION: the program grants `can_actuate`.
    pub can_actuate: bool,
}

/// A verified, checked program.
#[derive(Debug)]
pub struct Program {
    /// Instructions in file order.
    pub nodes: Vec<Node, MAX_INSTRUCTIONS>,
    /// Indices by (sequence_number, id): the deterministic order of every region.
    pub order: Vec<u8, MAX_INSTRUCTIONS>,
    /// The top-level region: instructions in no loop body and no compensation list.
    pub top: Set,
    default_priority: u8,
}

// Field numbers of IRInstruction read in place.
const ID: u32 = 1;
const DISPATCH: u32 = 4;
const DEPENDS_ON: u32 = 5;
const BRANCH_TRUE: u32 = 13;
const BRANCH_FALSE: u32 = 14;
const LOOP: u32 = 16;
const MEMORY: u32 = 17;
const COMPENSATION: u32 = 21;
const OUTPUT_VAR: u32 = 24;
const MCU: u32 = 27;
const BRANCH_CONDITION: u32 = 12;
const EXPRESSION: u32 = 22;
const PARAMS: u32 = 23;
const EMIT: u32 = 26;
// Field numbers of DispatchMetadata and McuCode read in place.
const MODEL: u32 = 7;
const SLOTS: u32 = 18;
const MCU_SLOTS: u32 = 5;
const MCU_EVENT_KEY: u32 = 6;
/// Fields the MCU profile leaves out: resource key, time window, postcondition.
const NOT_MCU_FIELDS: [u32; 3] = [18, 19, 20];
// Field numbers of LlmIRProgram.
const INSTRUCTIONS: u32 = 8;
const REQUIREMENTS: u32 = 11;
const TRIGGERS: u32 = 12;
const DEFAULT_PRIORITY: u32 = 13;
const TARGET: u32 = 16;
/// `Target.TARGET_MCU`.
const TARGET_MCU: i32 = 1;

impl From<Malformed> for Refusal {
    fn from(_: Malformed) -> Self {
        Refusal::Malformed
    }
}

/// `text` as an id: at most [`MAX_ID`] bytes.
fn id(text: &'static [u8]) -> Result<&'static str, Refusal> {
    let text = core::str::from_utf8(text).map_err(|_| Refusal::Malformed)?;
    if text.len() > MAX_ID {
        return Err(Refusal::Capacity);
    }
    Ok(text)
}

/// A name the gateway sends as a frame's field (a slot, an event field): an id made of
/// letters, digits and `_`, not first a digit (`not_mcu` otherwise).
fn field_name(text: &'static [u8]) -> Result<&'static str, Refusal> {
    let name = id(text)?;
    if name.contains('.') || !code::is_path(name) {
        return Err(Refusal::NotMcu);
    }
    Ok(name)
}

/// A FALLBACK_VALUE or LOAD default: empty, or a scalar JSON literal a device holds.
fn scalar(json: &str) -> Result<(), Refusal> {
    if json.is_empty() {
        return Ok(());
    }
    parse_json(json).map(|_| ()).map_err(|e| match e {
        JsonError::Malformed => Refusal::Malformed,
        JsonError::NotScalar => Refusal::NotMcu,
        JsonError::TooLong => Refusal::Capacity,
    })
}

/// The bytecode: present exactly where its CEL field is, params named as the CEL params
/// (sorted), and valid (over capacity only when longer than the device takes).
fn check_codes(raw: &[u8]) -> Result<(), Refusal> {
    let mcu = wire::bytes(raw, MCU);
    let cel_params = wire::repeated(raw, PARAMS).map(|entry| wire::bytes(entry, 1));
    let code_params = wire::repeated(mcu, 3).map(|param| wire::bytes(param, 1));
    if !cel_params.eq(code_params) {
        return Err(Refusal::Malformed);
    }
    let pairs = [
        (has(raw, EXPRESSION), wire::bytes(mcu, 1)),
        (has(raw, BRANCH_CONDITION), wire::bytes(mcu, 2)),
        (has(wire::bytes(raw, LOOP), 5), wire::bytes(mcu, 4)),
    ];
    let dispatch = wire::bytes(raw, DISPATCH);
    if !wire::repeated(dispatch, SLOTS)
        .map(|slot| wire::bytes(slot, 1))
        .eq(wire::repeated(mcu, MCU_SLOTS).map(|slot| wire::bytes(slot, 1)))
    {
        return Err(Refusal::Malformed);
    }
    let params = wire::repeated(raw, PARAMS)
        .zip(wire::repeated(mcu, 3))
        .map(|(entry, param)| (has(entry, 2), wire::bytes(param, 2)));
    let slots = wire::repeated(dispatch, SLOTS)
        .zip(wire::repeated(mcu, MCU_SLOTS))
        .map(|(slot, code)| (has(slot, 3), wire::bytes(code, 2)));
    let key = (
        has(wire::bytes(raw, EMIT), 2),
        wire::bytes(mcu, MCU_EVENT_KEY),
    );
    for (cel, code) in pairs
        .into_iter()
        .chain(params)
        .chain(slots)
        .chain(core::iter::once(key))
    {
        if cel == code.is_empty() {
            return Err(Refusal::Malformed);
        }
        if !code.is_empty() && code::validate(code).is_err() {
            return Err(if code.len() > MAX_CODE_LEN {
                Refusal::Capacity
            } else {
                Refusal::Malformed
            });
        }
    }
    Ok(())
}

impl Default for Program {
    fn default() -> Self {
        Self::new()
    }
}

/// The program id and version of a signed program `file` (for the gateway's HELLO and
/// LOADED), if it has them.
pub fn identity(file: &[u8]) -> Option<(&str, &str)> {
    Some((wire::string(file, 1).ok()?, wire::string(file, 3).ok()?))
}

/// The first checks of loading: the size, the canonical encoding, the signature.
#[inline(never)]
fn authentic(file: &[u8], keyring: &[(&str, [u8; 32])]) -> Result<(), Refusal> {
    if file.len() > MAX_PROGRAM_BYTES {
        return Err(Refusal::Capacity);
    }
    crate::canonical::check(file)?;
    verify::check(file, keyring).map_err(|e| match e {
        SignatureError::Malformed => Refusal::Malformed,
        SignatureError::Bad => Refusal::BadSignature,
        SignatureError::UnknownKey => Refusal::UnknownKey,
    })
}

impl Program {
    /// An empty program, to [`load`](Self::load) into (in place: a program is too large
    /// to move around a device's stack).
    pub const fn new() -> Self {
        Self {
            nodes: Vec::new(),
            order: Vec::new(),
            top: 0,
            // Set by every load before use; zero keeps an empty program all zero bytes
            // (a `static` of it then lives in `.bss`, not `.data` copied from flash).
            default_priority: 0,
        }
    }

    /// Verifies and checks `file` for a board with `capabilities`, and becomes its
    /// program (left empty on a refusal).
    pub fn load(
        &mut self,
        file: &'static [u8],
        keyring: &[(&str, [u8; 32])],
        capabilities: &[Capability],
    ) -> Result<(), Refusal> {
        *self = Self::new();
        let loaded = authentic(file, keyring).and_then(|()| self.load_checked(file, capabilities));
        if loaded.is_err() {
            *self = Self::new();
        }
        loaded
    }

    /// The checks after [`authentic`]'s. Not inlined: its frame (an instruction's
    /// scalars, the keys) is then not on the stack under the signature check's.
    #[inline(never)]
    fn load_checked(
        &mut self,
        file: &'static [u8],
        capabilities: &[Capability],
    ) -> Result<(), Refusal> {
        let ir_version = wire::string(file, 7)?;
        if !IR_VERSIONS.contains(&ir_version) {
            return Err(Refusal::IrVersion);
        }
        if wire::int32(file, TARGET)? != TARGET_MCU {
            return Err(Refusal::NotMcu);
        }
        // The server's structural checks come before its MCU profile's.
        crate::structure::check(file)?;
        if wire::repeated(file, INSTRUCTIONS).count() > MAX_INSTRUCTIONS {
            return Err(Refusal::Capacity);
        }
        for requirement in wire::repeated(file, REQUIREMENTS) {
            id(wire::bytes(requirement, 1))?;
        }
        for trigger in wire::repeated(file, TRIGGERS) {
            // A trigger's filter or key is CEL, which a device does not run.
            if !wire::bytes(trigger, 3).is_empty() || !wire::bytes(trigger, 6).is_empty() {
                return Err(Refusal::NotMcu);
            }
        }
        self.default_priority = if has(file, DEFAULT_PRIORITY) {
            clamp_priority(wire::int32(wire::bytes(file, DEFAULT_PRIORITY), 1)?)
        } else {
            128
        };
        let mut keys: Vec<&'static [u8], MAX_L1_KEYS> = Vec::new();
        let mut too_many_keys = false;
        for raw in wire::repeated(file, INSTRUCTIONS) {
            let node = self.node(raw)?;
            self.nodes.push(node).map_err(|_| Refusal::Capacity)?;
            let key = wire::bytes(wire::bytes(raw, MEMORY), 2);
            if has(raw, MEMORY) && !keys.contains(&key) {
                too_many_keys |= keys.push(key).is_err();
            }
        }
        if too_many_keys {
            return Err(Refusal::Capacity);
        }
        self.link()?;
        for requirement in wire::repeated(file, REQUIREMENTS) {
            let id = wire::string(requirement, 1)?;
            let version = wire::string(requirement, 2)?;
            if !provided(capabilities, id, version) {
                return Err(Refusal::Capability);
            }
        }
        for index in 0..self.nodes.len() {
            let hardware = matches!(
                IROpcode(self.nodes[index].opcode),
                IROpcode::CALL_ACTION | IROpcode::LOAD_RESOURCE
            );
            if hardware && !provided(capabilities, self.detail(index).capability, "") {
                return Err(Refusal::Capability);
            }
        }
        Ok(())
    }

    /// Checks one instruction against the profile, in the server's order
    /// (`eyeflow_ir::mcu`); its node, links not yet resolved.
    fn node(&self, raw: &'static [u8]) -> Result<Node, Refusal> {
        let id_text = id(wire::bytes(raw, ID))?;
        let output = id(wire::bytes(raw, OUTPUT_VAR))?;
        let ins = Instruction::read(raw)?;
        let opcode = ins.opcode;
        match opcode {
            IROpcode::EVAL
            | IROpcode::BRANCH
            | IROpcode::LOOP
            | IROpcode::RETURN
            | IROpcode::STORE
            | IROpcode::LOAD
            | IROpcode::CALL_ACTION
            | IROpcode::LOAD_RESOURCE
            | IROpcode::LLM_CALL
            | IROpcode::EMIT_EVENT => {}
            _ => return Err(Refusal::NotMcu),
        }
        if ins.is_parallel || NOT_MCU_FIELDS.iter().any(|&f| has(raw, f)) {
            return Err(Refusal::NotMcu);
        }
        let dispatch = wire::bytes(raw, DISPATCH);
        if has(raw, DISPATCH) {
            // Human validation, vault secrets, JSON schemas (an LLM_CALL's output schema
            // is the node's to check).
            let output_schema = has(dispatch, 4) && opcode != IROpcode::LLM_CALL;
            if output_schema || [3, 14, 15].into_iter().any(|f| has(dispatch, f)) {
                return Err(Refusal::NotMcu);
            }
            id(wire::bytes(dispatch, 5))?;
            id(wire::bytes(dispatch, 2))?;
        }
        if let Some(max_iterations) = ins.max_iterations {
            let raw_loop = wire::bytes(raw, LOOP);
            // No lists to iterate; a `while` condition is required.
            if has(raw_loop, 3) || !has(raw_loop, 5) {
                return Err(Refusal::NotMcu);
            }
            if max_iterations > MAX_LOOP_ITERATIONS {
                return Err(Refusal::Capacity);
            }
        }
        if let Some(memory) = ins.memory {
            if memory.scope != EXECUTION_SCOPE {
                return Err(Refusal::NotMcu);
            }
            id(wire::bytes(wire::bytes(raw, MEMORY), 2))?;
            scalar(memory.default_json)?;
        }
        let strategies = [
            ins.fallback.map(|f| f.strategy),
            ins.timeout.map(|t| t.on_timeout),
        ];
        if strategies.contains(&Some(FallbackStrategy::FALLBACK_MODEL)) {
            return Err(Refusal::NotMcu);
        }
        if let Some(fallback) = ins.fallback {
            scalar(fallback.value_json)?;
        }
        if wire::repeated(raw, PARAMS).count() > MAX_PARAMS {
            return Err(Refusal::Capacity);
        }
        for entry in wire::repeated(raw, PARAMS) {
            id(wire::bytes(entry, 1))?;
        }
        if opcode == IROpcode::LLM_CALL {
            if wire::repeated(dispatch, SLOTS).count() > MAX_PARAMS {
                return Err(Refusal::Capacity);
            }
            for slot in wire::repeated(dispatch, SLOTS) {
                // Only runtime slots: a device holds no secrets.
                if wire::bytes(slot, 2) != b"runtime" {
                    return Err(Refusal::NotMcu);
                }
                field_name(wire::bytes(slot, 1))?;
            }
            id(wire::bytes(dispatch, MODEL))?;
        }
        if opcode == IROpcode::EMIT_EVENT {
            // The payload is named fields (params), not an expression.
            if has(raw, EXPRESSION) {
                return Err(Refusal::NotMcu);
            }
            if wire::bytes(wire::bytes(raw, EMIT), 1).len() > MAX_PATH {
                return Err(Refusal::Capacity);
            }
            for entry in wire::repeated(raw, PARAMS) {
                field_name(wire::bytes(entry, 1))?;
            }
        }
        // Unbounded LOOPs, empty ids and memory instructions without their key were
        // refused by the structural checks (`crate::structure`).
        check_codes(raw)?;
        Ok(Node {
            raw,
            id: id_text,
            output: if output.is_empty() { id_text } else { output },
            opcode: opcode.0,
            sequence: ins.sequence,
            deps: 0,
            parents: 0,
            arms: (None, None),
            body: 0,
            compensation: Vec::new(),
        })
    }

    /// The index of the instruction named `name`.
    fn index(&self, name: &[u8]) -> Result<u8, Refusal> {
        self.nodes
            .iter()
            .position(|n| n.id.as_bytes() == name)
            .and_then(|i| u8::try_from(i).ok())
            .ok_or(Refusal::Malformed)
    }

    /// Resolves the references between instructions and checks the flow.
    fn link(&mut self) -> Result<(), Refusal> {
        let count = self.nodes.len();
        for i in 0..count {
            if self.nodes[..i].iter().any(|n| n.id == self.nodes[i].id) {
                return Err(Refusal::Malformed);
            }
        }
        for i in 0..count {
            let raw = self.nodes[i].raw;
            let mut deps = 0;
            for name in wire::repeated(raw, DEPENDS_ON) {
                deps |= 1 << self.index(name)?;
            }
            let arm = |number| {
                let name = wire::bytes(raw, number);
                if name.is_empty() {
                    Ok(None)
                } else {
                    self.index(name).map(Some)
                }
            };
            let arms = (arm(BRANCH_TRUE)?, arm(BRANCH_FALSE)?);
            let mut body = 0;
            for name in wire::repeated(wire::bytes(raw, LOOP), 2) {
                body |= 1 << self.index(name)?;
            }
            let mut compensation = Vec::new();
            for name in wire::repeated(raw, COMPENSATION) {
                let step = self.index(name)?;
                if self.nodes[usize::from(step)].opcode == IROpcode::LOOP.0 {
                    return Err(Refusal::NotMcu);
                }
                compensation.push(step).map_err(|_| Refusal::Capacity)?;
            }
            let node = &mut self.nodes[i];
            node.deps = deps;
            node.arms = arms;
            node.body = body;
            node.compensation = compensation;
        }
        let mut nested: Set = 0;
        for i in 0..count {
            let (t, f) = self.nodes[i].arms;
            for target in [t, f].into_iter().flatten() {
                self.nodes[usize::from(target)].parents |= 1 << i;
            }
            nested |= self.nodes[i].body;
            for &step in &self.nodes[i].compensation {
                nested |= 1 << step;
            }
        }
        let all: Set = if count == 32 {
            u32::MAX
        } else {
            (1 << count) - 1
        };
        self.top = all & !nested;
        // Insertion sort: at most 32 entries, and far less code than the slice sorts.
        let key = |i: u8| {
            let node = &self.nodes[usize::from(i)];
            (node.sequence, node.id)
        };
        let mut order: Vec<u8, MAX_INSTRUCTIONS> = Vec::new();
        for i in 0..count as u8 {
            let at = order
                .iter()
                .position(|&o| key(i) < key(o))
                .unwrap_or(order.len());
            // Within capacity: `count` is at most MAX_INSTRUCTIONS.
            let _ = order.insert(at, i);
        }
        self.order = order;
        self.check_region(self.top)?;
        if !self.members(self.top).any(|m| self.is_entry(m)) {
            return Err(Refusal::Malformed);
        }
        for i in 0..count {
            if self.nodes[i].opcode == IROpcode::LOOP.0 {
                self.check_region(self.nodes[i].body)?;
                if self.loop_depth(i, 0)? > MAX_LOOP_DEPTH {
                    return Err(Refusal::Capacity);
                }
            }
        }
        Ok(())
    }

    /// How deep loops nest under loop `i` (itself included).
    fn loop_depth(&self, i: usize, above: usize) -> Result<usize, Refusal> {
        if above > MAX_INSTRUCTIONS {
            return Err(Refusal::Malformed);
        }
        let mut deepest = above + 1;
        for m in self.members(self.nodes[i].body) {
            if self.nodes[m].opcode == IROpcode::LOOP.0 {
                deepest = deepest.max(self.loop_depth(m, above + 1)?);
            }
        }
        Ok(deepest)
    }

    /// Every dependency of a member and every BRANCH leading to it come from its region, and
    /// the region has no cycle.
    fn check_region(&self, region: Set) -> Result<(), Refusal> {
        let mut done: Set = 0;
        for m in self.members(region) {
            if (self.nodes[m].deps | self.nodes[m].parents) & !region != 0 {
                return Err(Refusal::Malformed);
            }
        }
        while done != region {
            let ready = self.members(region).find(|&m| {
                done & (1 << m) == 0 && (self.nodes[m].deps | self.nodes[m].parents) & !done == 0
            });
            done |= 1 << ready.ok_or(Refusal::Malformed)?;
        }
        Ok(())
    }

    /// The members of `set`, in region order.
    pub fn members(&self, set: Set) -> impl Iterator<Item = usize> + '_ {
        self.order
            .iter()
            .map(|&i| usize::from(i))
            .filter(move |i| set & (1 << i) != 0)
    }

    /// Whether `m` starts its region (no dependency, no BRANCH parent).
    pub fn is_entry(&self, m: usize) -> bool {
        self.nodes[m].deps == 0 && self.nodes[m].parents == 0
    }

    /// The instruction at `index`, decoded to run (checked by [`Program::load`]).
    pub fn detail(&self, index: usize) -> Detail {
        let raw = self.nodes[index].raw;
        let ins = Instruction::read(raw).unwrap_or_default();
        let mcu = wire::bytes(raw, MCU);
        let dispatch = wire::bytes(raw, DISPATCH);
        let text = |bytes: &'static [u8]| core::str::from_utf8(bytes).unwrap_or("");
        let llm = IROpcode(self.nodes[index].opcode) == IROpcode::LLM_CALL;
        let mut params = Vec::new();
        for param in wire::repeated(mcu, if llm { MCU_SLOTS } else { 3 }) {
            let _ = params.push((text(wire::bytes(param, 1)), wire::bytes(param, 2)));
        }
        Detail {
            expression: wire::bytes(mcu, 1),
            condition: wire::bytes(mcu, 2),
            while_condition: wire::bytes(mcu, 4),
            params,
            capability: text(wire::bytes(dispatch, 5)),
            action: text(wire::bytes(dispatch, if llm { MODEL } else { 2 })),
            topic: text(wire::bytes(wire::bytes(raw, EMIT), 1)),
            event_key: wire::bytes(mcu, MCU_EVENT_KEY),
            key: text(wire::bytes(wire::bytes(raw, MEMORY), 2)),
            default: ins.memory.map_or("", |m| m.default_json),
            policy: crate::policy::Policy::new(&ins),
            timeout_ms: ins
                .timeout
                .map(|t| t.execution_timeout_ms)
                .filter(|&ms| ms > 0),
            max_iterations: ins.max_iterations.unwrap_or(0),
            priority: ins.priority.map_or(self.default_priority, clamp_priority),
            can_actuate: ins.can_actuate,
        }
    }
}

fn clamp_priority(level: i32) -> u8 {
    u8::try_from(level.clamp(0, 255)).unwrap_or(u8::MAX)
}
