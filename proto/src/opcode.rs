//! The opcode table: one row per IR opcode — the IR fields it needs, whether it can fail on
//! something outside the program (and so takes `retry` / `fallback` / `timeout`), what it
//! changes outside its execution, and the permission that change needs. The validator, the
//! compiler, the executor and the permission check all read it; adding an opcode means
//! adding one row here (and its execution in the executor).

use crate::pb::{IrInstruction, IrOpcode, MemoryScope, PermissionFlags};

/// What an instruction changes outside its execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing: it computes or reads.
    None,
    /// Drives a device through a capability (CALL_ACTION).
    Actuates,
    /// Sends a request outside the node (CALL_API, CALL_SERVICE).
    CallsOut,
    /// Publishes an event (EMIT_EVENT).
    Emits,
    /// Writes memory (STORE).
    WritesMemory,
}

impl Effect {
    /// Whether the instruction changes something outside its execution (journaled
    /// write-ahead, checked for parallel use of one resource key).
    pub fn is_effect(self) -> bool {
        self != Effect::None
    }
}

/// An IR field an opcode needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `dispatch_metadata.capability_id`.
    CapabilityId,
    /// `dispatch_metadata.action_name`.
    ActionName,
    /// `http.url`.
    HttpUrl,
    /// `dispatch_metadata.model`.
    Model,
    /// `dispatch_metadata.prompt_template`.
    PromptTemplate,
    /// `expression`.
    Expression,
    /// `branch_condition`.
    BranchCondition,
    /// `branch_true_id`.
    BranchTrueId,
    /// `emit.topic`.
    EmitTopic,
    /// `memory` with its `key`.
    MemoryKey,
    /// `loop.body`.
    LoopBody,
}

impl Field {
    /// The field's path in the IR, as errors name it.
    pub fn name(self) -> &'static str {
        match self {
            Field::CapabilityId => "dispatch_metadata.capability_id",
            Field::ActionName => "dispatch_metadata.action_name",
            Field::HttpUrl => "http.url",
            Field::Model => "dispatch_metadata.model",
            Field::PromptTemplate => "dispatch_metadata.prompt_template",
            Field::Expression => "expression",
            Field::BranchCondition => "branch_condition",
            Field::BranchTrueId => "branch_true_id",
            Field::EmitTopic => "emit.topic",
            Field::MemoryKey => "memory.key",
            Field::LoopBody => "loop.body",
        }
    }

    /// Whether `ins` holds it (non-empty).
    pub fn present(self, ins: &IrInstruction) -> bool {
        let dispatch = ins.dispatch_metadata.as_ref();
        let text = |get: fn(&crate::pb::DispatchMetadata) -> &str| {
            dispatch.is_some_and(|d| !get(d).is_empty())
        };
        match self {
            Field::CapabilityId => text(|d| &d.capability_id),
            Field::ActionName => text(|d| &d.action_name),
            Field::HttpUrl => ins.http.as_ref().is_some_and(|h| !h.url.is_empty()),
            Field::Model => text(|d| &d.model),
            Field::PromptTemplate => text(|d| &d.prompt_template),
            Field::Expression => !ins.expression.is_empty(),
            Field::BranchCondition => !ins.branch_condition.is_empty(),
            Field::BranchTrueId => !ins.branch_true_id.is_empty(),
            Field::EmitTopic => ins.emit.as_ref().is_some_and(|e| !e.topic.is_empty()),
            Field::MemoryKey => ins.memory.as_ref().is_some_and(|m| !m.key.is_empty()),
            Field::LoopBody => ins.r#loop.as_ref().is_some_and(|l| !l.body.is_empty()),
        }
    }
}

/// A permission of [`PermissionFlags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `can_actuate`.
    Actuate,
    /// `can_call_external`.
    CallExternal,
    /// `can_read_secrets`.
    ReadSecrets,
    /// `can_write_cluster_memory`.
    WriteClusterMemory,
}

impl Permission {
    /// The flag's name in the IR.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Actuate => "can_actuate",
            Permission::CallExternal => "can_call_external",
            Permission::ReadSecrets => "can_read_secrets",
            Permission::WriteClusterMemory => "can_write_cluster_memory",
        }
    }

    /// Whether `flags` grant it.
    pub fn granted(self, flags: &PermissionFlags) -> bool {
        match self {
            Permission::Actuate => flags.can_actuate,
            Permission::CallExternal => flags.can_call_external,
            Permission::ReadSecrets => flags.can_read_secrets,
            Permission::WriteClusterMemory => flags.can_write_cluster_memory,
        }
    }

    fn grant(self, flags: &mut PermissionFlags) {
        match self {
            Permission::Actuate => flags.can_actuate = true,
            Permission::CallExternal => flags.can_call_external = true,
            Permission::ReadSecrets => flags.can_read_secrets = true,
            Permission::WriteClusterMemory => flags.can_write_cluster_memory = true,
        }
    }
}

/// One opcode's row.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// The opcode.
    pub opcode: IrOpcode,
    /// IR fields it needs.
    pub required: &'static [Field],
    /// Whether it can fail on something outside the program (`retry`, `fallback`,
    /// `timeout` apply).
    pub can_fail: bool,
    /// What it changes outside its execution.
    pub effect: Effect,
    /// The permission its kind always needs (secrets and cluster memory depend on the
    /// instruction: see [`needed`]).
    pub permission: Option<Permission>,
    /// Whether it may run at the same time as the other instructions ready with it
    /// (parallel branches). Not for memory reads and writes (the order of siblings decides
    /// what a LOAD sees), loops (a region of their own) and RETURN (it ends the execution).
    pub concurrent: bool,
}

const fn row(
    opcode: IrOpcode,
    required: &'static [Field],
    can_fail: bool,
    effect: Effect,
    permission: Option<Permission>,
) -> Row {
    Row {
        opcode,
        required,
        can_fail,
        effect,
        permission,
        concurrent: true,
    }
}

/// [`row`] for an opcode that runs alone, never beside its ready siblings.
const fn alone(row: Row) -> Row {
    Row {
        concurrent: false,
        ..row
    }
}

use Effect as E;
use Field as F;
use Permission as P;

/// Every opcode, in enum order.
pub const TABLE: [Row; 14] = [
    row(
        IrOpcode::LoadResource,
        &[F::CapabilityId],
        true,
        E::None,
        None,
    ),
    row(
        IrOpcode::CallFunction,
        &[F::ActionName],
        true,
        E::None,
        None,
    ),
    row(
        IrOpcode::CallService,
        &[F::HttpUrl],
        true,
        E::CallsOut,
        Some(P::CallExternal),
    ),
    row(
        IrOpcode::CallAction,
        &[F::CapabilityId],
        true,
        E::Actuates,
        Some(P::Actuate),
    ),
    row(
        IrOpcode::CallApi,
        &[F::HttpUrl],
        true,
        E::CallsOut,
        Some(P::CallExternal),
    ),
    row(
        IrOpcode::LlmCall,
        &[F::Model, F::PromptTemplate],
        true,
        E::None,
        Some(P::CallExternal),
    ),
    row(IrOpcode::Eval, &[F::Expression], false, E::None, None),
    row(
        IrOpcode::Branch,
        &[F::BranchCondition, F::BranchTrueId],
        false,
        E::None,
        None,
    ),
    row(IrOpcode::Merge, &[], false, E::None, None),
    alone(row(IrOpcode::Loop, &[F::LoopBody], false, E::None, None)),
    alone(row(IrOpcode::Return, &[], false, E::None, None)),
    row(IrOpcode::EmitEvent, &[F::EmitTopic], true, E::Emits, None),
    alone(row(
        IrOpcode::Store,
        &[F::MemoryKey, F::Expression],
        true,
        E::WritesMemory,
        None,
    )),
    alone(row(IrOpcode::Load, &[F::MemoryKey], true, E::None, None)),
];

// `spec` indexes `TABLE` by discriminant - 1: keep it in enum order.
const _: () = {
    let mut i = 0;
    while i < TABLE.len() {
        assert!(TABLE[i].opcode as usize == i + 1);
        i += 1;
    }
};

/// The row of `opcode` (`None` for `IR_OPCODE_UNSPECIFIED`).
pub fn spec(opcode: IrOpcode) -> Option<&'static Row> {
    (opcode as usize).checked_sub(1).and_then(|i| TABLE.get(i))
}

/// The permissions `ins` needs: its kind's, reading a secret (a `vault_secret_key` or a
/// vault slot) needs `can_read_secrets`, storing to cluster memory `can_write_cluster_memory`.
pub fn needed(ins: &IrInstruction) -> PermissionFlags {
    let mut flags = PermissionFlags::default();
    let opcode = IrOpcode::try_from(ins.opcode).unwrap_or(IrOpcode::Unspecified);
    if let Some(permission) = spec(opcode).and_then(|row| row.permission) {
        permission.grant(&mut flags);
    }
    let dispatch = ins.dispatch_metadata.as_ref();
    if dispatch.is_some_and(|d| {
        !d.vault_secret_key.is_empty() || d.dynamic_slots.iter().any(|s| s.source_type == "vault")
    }) {
        P::ReadSecrets.grant(&mut flags);
    }
    if opcode == IrOpcode::Store
        && ins
            .memory
            .as_ref()
            .is_some_and(|m| m.scope == MemoryScope::Cluster as i32)
    {
        P::WriteClusterMemory.grant(&mut flags);
    }
    flags
}

/// The first permission `ins` needs and does not carry.
pub fn missing(ins: &IrInstruction) -> Option<Permission> {
    let needed = needed(ins);
    let carried = ins.permissions.unwrap_or_default();
    [
        P::Actuate,
        P::CallExternal,
        P::ReadSecrets,
        P::WriteClusterMemory,
    ]
    .into_iter()
    .find(|p| p.granted(&needed) && !p.granted(&carried))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_opcode_has_its_row() {
        for n in 1..=14 {
            let opcode = IrOpcode::try_from(n).expect("opcode");
            assert_eq!(spec(opcode).map(|r| r.opcode), Some(opcode));
        }
        assert!(spec(IrOpcode::Unspecified).is_none());
    }

    #[test]
    fn permissions_follow_the_instruction() {
        let mut ins = IrInstruction {
            opcode: IrOpcode::CallAction as i32,
            ..Default::default()
        };
        assert_eq!(missing(&ins), Some(P::Actuate));
        ins.permissions = Some(needed(&ins));
        assert_eq!(missing(&ins), None);
        ins.dispatch_metadata = Some(crate::pb::DispatchMetadata {
            vault_secret_key: "kv/token".into(),
            ..Default::default()
        });
        assert_eq!(missing(&ins), Some(P::ReadSecrets));
        let store = IrInstruction {
            opcode: IrOpcode::Store as i32,
            memory: Some(crate::pb::MemoryAccess {
                scope: MemoryScope::Cluster as i32,
                key: "k".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(missing(&store), Some(P::WriteClusterMemory));
        let eval = IrInstruction {
            opcode: IrOpcode::Eval as i32,
            ..Default::default()
        };
        assert_eq!(missing(&eval), None);
    }
}
