//! Structural checks the server makes of every instruction before the MCU profile's
//! (`eyeflow_ir::validate` with its opcode table `eyeflow_ir::opcode`), read from the signed
//! file in place: a known opcode, the fields that opcode requires, the permissions it needs,
//! a dispatched capability among the program's requirements, a known memory scope. Each
//! failure is `malformed`, as on the server. Not yet all of the server's (firmware/README.md,
//! "A known gap").

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

/// Checks every instruction of the signed `file`.
pub(crate) fn check(file: &[u8]) -> Result<(), Refusal> {
    for instruction in wire::repeated(file, INSTRUCTIONS) {
        one(file, instruction)?;
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
