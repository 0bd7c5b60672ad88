//! Structural checks the server makes of every instruction before the MCU profile's
//! (`eyeflow_ir::validate` with its opcode table `eyeflow_ir::opcode`), read from the signed
//! file in place: the header's instructions, default priority and requirements (their
//! versions as `semver` parses them), unique ids, references to known instructions, a known opcode, the fields
//! that opcode requires, the permissions it needs, a dispatched capability among the
//! program's requirements, known scopes and strategies, positive timeouts, priorities,
//! capability versions and retry multipliers in their ranges. Each failure is `malformed`, as on the server. Not yet
//! all of the server's (firmware/README.md, "A known gap").

use eyeflow_mcu::trace::Refusal;

use crate::wire::{self, has};

/// A field that must be present: `field` of the instruction, or of its sub-message `outer`.
#[derive(Clone, Copy)]
struct Required {
    outer: Option<u32>,
    field: u32,
}

impl Required {
    fn present(self, instruction: &[u8]) -> bool {
        match self.outer {
            Some(outer) => has(wire::bytes(instruction, outer), self.field),
            None => has(instruction, self.field),
        }
    }
}

// IRInstruction's fields and sub-messages read here.
const OPCODE: u32 = 2;
const DISPATCH: u32 = 4;
const PERMISSIONS: u32 = 9;
const LOOP: u32 = 16;
const MEMORY: u32 = 17;
const HTTP: u32 = 25;
const EMIT: u32 = 26;
/// DispatchMetadata's `capability_id` and `vault_secret_key`.
const CAPABILITY_ID: u32 = 5;
const VAULT_SECRET_KEY: u32 = 15;
/// LlmIRProgram's `instructions` and `required_capabilities`.
const INSTRUCTIONS: u32 = 8;
const REQUIREMENTS: u32 = 11;

const fn inside(outer: u32, field: u32) -> Required {
    Required {
        outer: Some(outer),
        field,
    }
}

const fn own(field: u32) -> Required {
    Required { outer: None, field }
}

const CAPABILITY: Required = inside(DISPATCH, CAPABILITY_ID);
const ACTION_NAME: Required = inside(DISPATCH, 2);
const HTTP_URL: Required = inside(HTTP, 2);
const MODEL: Required = inside(DISPATCH, 7);
const PROMPT_TEMPLATE: Required = inside(DISPATCH, 11);
const EXPRESSION: Required = own(22);
const BRANCH_CONDITION: Required = own(12);
const BRANCH_TRUE_ID: Required = own(13);
const EMIT_TOPIC: Required = inside(EMIT, 1);
const MEMORY_KEY: Required = inside(MEMORY, 2);
const LOOP_BODY: Required = inside(LOOP, 2);

// PermissionFlags' fields.
const ACTUATE: u32 = 1;
const CALL_EXTERNAL: u32 = 2;
const READ_SECRETS: u32 = 3;
const WRITE_CLUSTER_MEMORY: u32 = 4;

/// STORE, and the cluster memory scope, whose writes need `can_write_cluster_memory`.
const STORE: i32 = 13;
const LOAD: i32 = 14;
const CLUSTER_SCOPE: i32 = 3;

/// Per opcode (1 to 14, in enum order): the fields it requires and the permission it needs,
/// as the server's opcode table says (a test compares them).
const TABLE: [(&[Required], Option<u32>); 14] = [
    (&[CAPABILITY], None),                            // LOAD_RESOURCE
    (&[ACTION_NAME], None),                           // CALL_FUNCTION
    (&[HTTP_URL], Some(CALL_EXTERNAL)),               // CALL_SERVICE
    (&[CAPABILITY], Some(ACTUATE)),                   // CALL_ACTION
    (&[HTTP_URL], Some(CALL_EXTERNAL)),               // CALL_API
    (&[MODEL, PROMPT_TEMPLATE], Some(CALL_EXTERNAL)), // LLM_CALL
    (&[EXPRESSION], None),                            // EVAL
    (&[BRANCH_CONDITION, BRANCH_TRUE_ID], None),      // BRANCH
    (&[], None),                                      // MERGE
    (&[LOOP_BODY], None),                             // LOOP
    (&[], None),                                      // RETURN
    (&[EMIT_TOPIC], None),                            // EMIT_EVENT
    (&[MEMORY_KEY, EXPRESSION], None),                // STORE
    (&[MEMORY_KEY], None),                            // LOAD
];

// More of IRInstruction's fields.
const ID: u32 = 1;
const DEPENDS_ON: u32 = 5;
const FALLBACK: u32 = 6;
const RETRY: u32 = 7;
const TIMEOUT: u32 = 8;
const BRANCH_TRUE: u32 = 13;
const BRANCH_FALSE: u32 = 14;
const PRIORITY: u32 = 15;
const COMPENSATION: u32 = 21;
const BRANCH: i32 = 8;
const MERGE: i32 = 9;
const LOOP_OPCODE: i32 = 10;
/// The priority levels a program may name (`eyeflow_ir::validate::PRIORITY_LEVELS`).
const PRIORITY_LEVELS: [i32; 5] = [0, 64, 128, 192, 255];
/// FallbackStrategy: RETRY (1) to ABORT (5) are known; FALLBACK_VALUE needs its value,
/// FALLBACK_MODEL its model.
const FALLBACK_VALUE: i32 = 2;
const FALLBACK_MODEL: i32 = 3;

/// LlmIRProgram's `default_priority`.
const DEFAULT_PRIORITY: u32 = 13;
/// DispatchMetadata's `capability_version`.
const CAPABILITY_VERSION: u32 = 6;

/// Checks the header and every instruction of the signed `file`.
pub(crate) fn check(file: &[u8]) -> Result<(), Refusal> {
    header(file)?;
    let ids = || wire::repeated(file, INSTRUCTIONS).map(|i| wire::bytes(i, ID));
    for (n, id) in ids().enumerate() {
        if id.is_empty() || ids().take(n).any(|other| other == id) {
            return Err(Refusal::Malformed);
        }
    }
    let known = |id: &[u8]| ids().any(|other| other == id);
    for instruction in wire::repeated(file, INSTRUCTIONS) {
        references(instruction, &known)?;
        ranges(instruction)?;
        one(file, instruction)?;
    }
    Ok(())
}

/// At least one instruction; a known default priority; each required capability named,
/// with a version requirement the server's `semver` parses.
fn header(file: &[u8]) -> Result<(), Refusal> {
    let requirements_valid = wire::repeated(file, REQUIREMENTS).all(|requirement| {
        !wire::bytes(requirement, 1).is_empty()
            && crate::semver::is_requirement(wire::bytes(requirement, 2))
    });
    if !has(file, INSTRUCTIONS) || !requirements_valid {
        return Err(Refusal::Malformed);
    }
    if has(file, DEFAULT_PRIORITY) {
        priority(wire::bytes(file, DEFAULT_PRIORITY))?;
    }
    Ok(())
}

/// A priority policy: a known level, a positive `max_wait_ms`.
fn priority(policy: &[u8]) -> Result<(), Refusal> {
    if !PRIORITY_LEVELS.contains(&wire::int32(policy, 1)?) || wire::int32(policy, 3)? <= 0 {
        return Err(Refusal::Malformed);
    }
    Ok(())
}

/// `depends_on`, `compensation_ids`, a BRANCH's arms, a LOOP's body: known instructions
/// (not the instruction itself, for a dependency or a body); a MERGE joins two or more.
fn references(instruction: &[u8], known: &impl Fn(&[u8]) -> bool) -> Result<(), Refusal> {
    let id = wire::bytes(instruction, ID);
    let opcode = wire::int32(instruction, OPCODE)?;
    let depends = || wire::repeated(instruction, DEPENDS_ON);
    let body = || wire::repeated(wire::bytes(instruction, LOOP), 2);
    let arms = [
        Some(wire::bytes(instruction, BRANCH_TRUE)),
        Some(wire::bytes(instruction, BRANCH_FALSE)).filter(|arm| !arm.is_empty()),
    ];
    let unknown = depends().any(|d| !known(d) || d == id)
        || wire::repeated(instruction, COMPENSATION).any(|c| !known(c))
        || (opcode == BRANCH && arms.into_iter().flatten().any(|arm| !known(arm)))
        || (opcode == MERGE && depends().count() < 2)
        || (opcode == LOOP_OPCODE && body().any(|m| !known(m) || m == id));
    if unknown {
        return Err(Refusal::Malformed);
    }
    Ok(())
}

/// Priorities, timeouts, a retry's multiplier, a fallback's strategy, a LOOP's bound.
fn ranges(instruction: &[u8]) -> Result<(), Refusal> {
    let opcode = wire::int32(instruction, OPCODE)?;
    if has(instruction, PRIORITY) {
        priority(wire::bytes(instruction, PRIORITY))?;
    }
    if has(instruction, TIMEOUT) && wire::int32(wire::bytes(instruction, TIMEOUT), 1)? as u32 == 0 {
        return Err(Refusal::Malformed);
    }
    let dispatch = wire::bytes(instruction, DISPATCH);
    if has(instruction, DISPATCH) {
        let temperature = wire::float(dispatch, 8);
        let slots_known = wire::repeated(dispatch, 18)
            .all(|slot| matches!(wire::bytes(slot, 2), b"vault" | b"runtime"));
        let version = wire::bytes(dispatch, CAPABILITY_VERSION);
        if (!version.is_empty() && !crate::semver::is_requirement(version))
            || wire::int32(dispatch, 13)? < 0
            || !(temperature.is_finite() && (0.0..=2.0).contains(&temperature))
            || wire::int32(dispatch, 9)? < 0
            || !slots_known
        {
            return Err(Refusal::Malformed);
        }
    }
    let retry = wire::bytes(instruction, RETRY);
    let multiplier = wire::float(retry, 3);
    if has(instruction, RETRY)
        && wire::int32(retry, 1)? as u32 > 0
        && !(multiplier.is_finite() && multiplier >= 1.0)
    {
        return Err(Refusal::Malformed);
    }
    if has(instruction, FALLBACK) {
        let fallback = wire::bytes(instruction, FALLBACK);
        let strategy = wire::int32(fallback, 1)?;
        // FALLBACK_MODEL needs its model, FALLBACK_VALUE a value (the MCU profile reads it
        // as JSON later).
        let incomplete = match strategy {
            FALLBACK_MODEL => !has(fallback, 3),
            FALLBACK_VALUE => !has(fallback, 2),
            _ => false,
        };
        if !(1..=5).contains(&strategy) || incomplete {
            return Err(Refusal::Malformed);
        }
    }
    let bounded = wire::int32(wire::bytes(instruction, LOOP), 1)? as u32 > 0;
    if opcode == LOOP_OPCODE && !(has(instruction, LOOP) && bounded) {
        return Err(Refusal::Malformed);
    }
    Ok(())
}

fn one(file: &[u8], instruction: &[u8]) -> Result<(), Refusal> {
    let opcode = wire::int32(instruction, OPCODE)?;
    let (required, permission) = usize::try_from(opcode)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| TABLE.get(i))
        .ok_or(Refusal::Malformed)?;
    if !required.iter().all(|field| field.present(instruction)) {
        return Err(Refusal::Malformed);
    }
    let dispatch = wire::bytes(instruction, DISPATCH);
    let memory = wire::bytes(instruction, MEMORY);
    let scope = wire::int32(memory, 1)?;
    let needed = [
        *permission,
        has(dispatch, VAULT_SECRET_KEY).then_some(READ_SECRETS),
        (opcode == STORE && scope == CLUSTER_SCOPE).then_some(WRITE_CLUSTER_MEMORY),
    ];
    let granted = wire::bytes(instruction, PERMISSIONS);
    for flag in needed.into_iter().flatten() {
        if wire::int32(granted, flag)? == 0 {
            return Err(Refusal::Malformed);
        }
    }
    let capability = wire::bytes(dispatch, CAPABILITY_ID);
    if !capability.is_empty()
        && !wire::repeated(file, REQUIREMENTS).any(|r| wire::bytes(r, 1) == capability)
    {
        return Err(Refusal::Malformed);
    }
    if matches!(opcode, STORE | LOAD) && has(instruction, MEMORY) && !(1..=3).contains(&scope) {
        return Err(Refusal::Malformed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use eyeflow_ir::opcode::{Field, Permission, TABLE as SERVER};

    use super::*;

    fn ours(field: Field) -> (Option<u32>, u32) {
        let r = match field {
            Field::CapabilityId => CAPABILITY,
            Field::ActionName => ACTION_NAME,
            Field::HttpUrl => HTTP_URL,
            Field::Model => MODEL,
            Field::PromptTemplate => PROMPT_TEMPLATE,
            Field::Expression => EXPRESSION,
            Field::BranchCondition => BRANCH_CONDITION,
            Field::BranchTrueId => BRANCH_TRUE_ID,
            Field::EmitTopic => EMIT_TOPIC,
            Field::MemoryKey => MEMORY_KEY,
            Field::LoopBody => LOOP_BODY,
        };
        (r.outer, r.field)
    }

    #[test]
    fn the_table_is_the_servers() {
        for (row, (required, permission)) in SERVER.iter().zip(TABLE) {
            let theirs: Vec<_> = row.required.iter().map(|f| ours(*f)).collect();
            let mine: Vec<_> = required.iter().map(|r| (r.outer, r.field)).collect();
            assert_eq!(mine, theirs, "{:?}", row.opcode);
            let flag = row.permission.map(|p| match p {
                Permission::Actuate => ACTUATE,
                Permission::CallExternal => CALL_EXTERNAL,
                Permission::ReadSecrets => READ_SECRETS,
                Permission::WriteClusterMemory => WRITE_CLUSTER_MEMORY,
            });
            assert_eq!(permission, flag, "{:?}", row.opcode);
        }
        assert_eq!(SERVER.len(), TABLE.len());
        assert_eq!(STORE, eyeflow_ir::pb::IrOpcode::Store as i32);
        assert_eq!(LOAD, eyeflow_ir::pb::IrOpcode::Load as i32);
        assert_eq!(CLUSTER_SCOPE, eyeflow_ir::pb::MemoryScope::Cluster as i32);
    }
}
