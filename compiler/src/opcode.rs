//! The YAML side of the opcode table: for each of the 14 IR opcodes, the YAML fields it
//! accepts and needs. Whether it can fail, what it changes outside its execution and the
//! permission it needs come from the IR's own table ([`eyeflow_ir::opcode`]), which the
//! validator and the executor read too. Adding an opcode means adding one row there and one
//! here.

use eyeflow_ir::pb::IrOpcode;
use marked_yaml::Span;

use crate::ast::{Instruction, Rule};
use crate::error::{Result, Source};

/// Fields every instruction accepts.
const UNIVERSAL: &[&str] = &[
    "id",
    "op",
    "comment",
    "priority",
    "preemptible",
    "max_wait_ms",
];
/// Fields of instructions that can fail on something outside the program.
const FAILURE: &[&str] = &["retry", "fallback", "timeout_ms", "on_timeout"];

/// What one opcode accepts.
pub(crate) struct Spec {
    /// The IR opcode.
    pub(crate) opcode: IrOpcode,
    /// Fields accepted besides [`UNIVERSAL`] (and [`FAILURE`] when `can_fail`).
    fields: &'static [&'static str],
    /// Fields that must be present, each with what it should hold.
    required: &'static [(&'static str, &'static str)],
}

const SPECS: &[Spec] = &[
    Spec {
        opcode: IrOpcode::LoadResource,
        fields: &[
            "next",
            "output",
            "params",
            "capability",
            "resource_key",
            "secret",
            "output_schema",
        ],
        required: &[("capability", "the id of a connector declared in `requires`")],
    },
    Spec {
        opcode: IrOpcode::CallFunction,
        fields: &[
            "next",
            "output",
            "params",
            "function",
            "input_schema",
            "output_schema",
        ],
        required: &[("function", "the name of a built-in function")],
    },
    Spec {
        opcode: IrOpcode::CallService,
        fields: &[
            "next",
            "output",
            "service",
            "http",
            "expression",
            "secret",
            "output_schema",
            "resource_key",
            "arbitrate",
            "compensation",
            "requires_human_validation",
        ],
        required: &[
            ("service", "the name of the service called"),
            ("http", "a request with at least `url`"),
        ],
    },
    Spec {
        opcode: IrOpcode::CallAction,
        fields: &[
            "next",
            "output",
            "params",
            "capability",
            "action",
            "resource_key",
            "arbitrate",
            "time_window",
            "postcondition",
            "compensation",
            "input_schema",
            "requires_human_validation",
        ],
        required: &[
            (
                "capability",
                "the id of a capability declared in `requires`",
            ),
            ("action", "the name of the capability's action"),
        ],
    },
    Spec {
        opcode: IrOpcode::CallApi,
        fields: &[
            "next",
            "output",
            "http",
            "expression",
            "secret",
            "output_schema",
            "resource_key",
            "arbitrate",
            "compensation",
            "requires_human_validation",
        ],
        required: &[("http", "a request with at least `url`")],
    },
    Spec {
        opcode: IrOpcode::LlmCall,
        fields: &[
            "next",
            "output",
            "model",
            "prompt",
            "temperature",
            "max_tokens",
            "system_prompt",
            "examples",
            "slots",
            "output_schema",
            "output_format",
            "requires_human_validation",
        ],
        required: &[
            ("model", "the name of the model to call"),
            ("prompt", "a prompt template"),
        ],
    },
    Spec {
        opcode: IrOpcode::Eval,
        fields: &["next", "output", "expression"],
        required: &[("expression", "a CEL expression")],
    },
    Spec {
        opcode: IrOpcode::Branch,
        fields: &["condition", "then", "else"],
        required: &[
            ("condition", "a CEL condition"),
            (
                "then",
                "the id of the instruction run when the condition holds",
            ),
        ],
    },
    Spec {
        opcode: IrOpcode::Merge,
        fields: &["next"],
        required: &[],
    },
    Spec {
        opcode: IrOpcode::Loop,
        fields: &[
            "next",
            "max_iterations",
            "body",
            "over",
            "as",
            "while",
            "timeout_ms",
            "on_timeout",
        ],
        required: &[("body", "the ids of the instructions run per iteration")],
    },
    Spec {
        opcode: IrOpcode::Return,
        fields: &["expression"],
        required: &[],
    },
    Spec {
        opcode: IrOpcode::EmitEvent,
        fields: &["next", "topic", "event_key", "expression", "params"],
        required: &[("topic", "the topic the event is emitted on")],
    },
    Spec {
        opcode: IrOpcode::Store,
        fields: &[
            "next",
            "scope",
            "key",
            "ttl_seconds",
            "expression",
            "resource_key",
            "arbitrate",
        ],
        required: &[
            ("scope", "`execution`, `node` or `cluster`"),
            ("key", "the memory key"),
            ("expression", "a CEL expression giving the value stored"),
        ],
    },
    Spec {
        opcode: IrOpcode::Load,
        fields: &["next", "output", "scope", "key", "default"],
        required: &[
            ("scope", "`execution`, `node` or `cluster`"),
            ("key", "the memory key"),
        ],
    },
];

impl Spec {
    /// Whether `retry`, `fallback`, `timeout_ms` and `on_timeout` apply (the IR table's
    /// `can_fail`).
    fn can_fail(&self) -> bool {
        eyeflow_ir::opcode::spec(self.opcode).is_some_and(|row| row.can_fail)
    }

    /// Whether the instruction changes something outside the execution (checked for
    /// parallel use of one resource key).
    pub(crate) fn side_effect(&self) -> bool {
        eyeflow_ir::opcode::spec(self.opcode).is_some_and(|row| row.effect.is_effect())
    }

    fn accepts(&self, field: &str) -> bool {
        UNIVERSAL.contains(&field)
            || self.fields.contains(&field)
            || (self.can_fail() && FAILURE.contains(&field))
    }

    fn accepted(&self) -> Vec<&'static str> {
        let failure: &[&str] = if self.can_fail() { FAILURE } else { &[] };
        UNIVERSAL
            .iter()
            .chain(self.fields)
            .chain(failure)
            .copied()
            .collect()
    }
}

/// Looks up each instruction's opcode and checks that it has the fields its opcode needs
/// and none it does not accept. Returns the specs in instruction order.
pub(crate) fn resolve(rule: &Rule, source: &Source<'_>) -> Result<Vec<&'static Spec>> {
    rule.instructions
        .iter()
        .map(|ins| {
            let spec = SPECS
                .iter()
                .find(|s| s.opcode.as_str_name() == ins.op.as_str())
                .ok_or_else(|| {
                    let names: Vec<&str> = SPECS.iter().map(|s| s.opcode.as_str_name()).collect();
                    source.rule(
                        ins.op.span(),
                        format!(
                            "unknown opcode `{}`; expected one of: {}",
                            ins.op.as_str(),
                            names.join(", ")
                        ),
                    )
                })?;
            let present = present_fields(ins);
            if let Some((field, span)) = present.iter().find(|(f, _)| !spec.accepts(f)) {
                return Err(source.rule(
                    span,
                    format!(
                        "field `{field}` does not apply to {} instruction `{}`; expected one of: {}",
                        spec.opcode.as_str_name(),
                        ins.id.as_str(),
                        spec.accepted().join(", ")
                    ),
                ));
            }
            if spec.opcode == IrOpcode::Loop && ins.max_iterations.is_none() {
                return Err(source.rule(
                    ins.span(),
                    format!(
                        "unbounded loop: LOOP `{}` has no `max_iterations`; expected max_iterations between 1 and {}",
                        ins.id.as_str(),
                        crate::check::MAX_ITERATIONS
                    ),
                ));
            }
            for (field, what) in spec.required {
                if !present.iter().any(|(f, _)| f == field) {
                    return Err(source.rule(
                        ins.span(),
                        format!(
                            "{} instruction `{}` has no `{field}`; expected {what}",
                            spec.opcode.as_str_name(),
                            ins.id.as_str()
                        ),
                    ));
                }
            }
            Ok(spec)
        })
        .collect()
}

/// The optional fields present in `ins`, with the span of each value.
fn present_fields(ins: &Instruction) -> Vec<(&'static str, Span)> {
    let mut present = Vec::new();
    let mut add = |name: &'static str, span: Option<&Span>| {
        if let Some(span) = span {
            present.push((name, *span));
        }
    };
    add("comment", ins.comment.as_ref().map(|v| v.span()));
    add("next", ins.next.as_ref().map(|v| v.span()));
    add("output", ins.output.as_ref().map(|v| v.span()));
    add("params", ins.params.values().next().map(|v| v.span()));
    add("expression", ins.expression.as_ref().map(|v| v.span()));
    add("condition", ins.condition.as_ref().map(|v| v.span()));
    add("then", ins.then.as_ref().map(|v| v.span()));
    add("else", ins.otherwise.as_ref().map(|v| v.span()));
    add(
        "max_iterations",
        ins.max_iterations.as_ref().map(|v| v.span()),
    );
    add("body", ins.body.as_ref().map(|v| v.span()));
    add("over", ins.over.as_ref().map(|v| v.span()));
    add("as", ins.item.as_ref().map(|v| v.span()));
    add("while", ins.while_condition.as_ref().map(|v| v.span()));
    add("capability", ins.capability.as_ref().map(|v| v.span()));
    add("action", ins.action.as_ref().map(|v| v.span()));
    add("function", ins.function.as_ref().map(|v| v.span()));
    add("service", ins.service.as_ref().map(|v| v.span()));
    add("http", ins.http.as_ref().map(|v| v.span()));
    add("secret", ins.secret.as_ref().map(|v| v.span()));
    add("input_schema", ins.input_schema.as_ref().map(|v| v.span()));
    add(
        "output_schema",
        ins.output_schema.as_ref().map(|v| v.span()),
    );
    add(
        "requires_human_validation",
        ins.requires_human_validation.as_ref().map(|v| v.span()),
    );
    add("resource_key", ins.resource_key.as_ref().map(|v| v.span()));
    add("arbitrate", ins.arbitrate.as_ref().map(|v| v.span()));
    add("time_window", ins.time_window.as_ref().map(|v| v.span()));
    add(
        "postcondition",
        ins.postcondition.as_ref().map(|v| v.span()),
    );
    add("compensation", ins.compensation.as_ref().map(|v| v.span()));
    add("model", ins.model.as_ref().map(|v| v.span()));
    add("temperature", ins.temperature.as_ref().map(|v| v.span()));
    add("max_tokens", ins.max_tokens.as_ref().map(|v| v.span()));
    add(
        "system_prompt",
        ins.system_prompt.as_ref().map(|v| v.span()),
    );
    add("prompt", ins.prompt.as_ref().map(|v| v.span()));
    add("examples", ins.examples.first().map(|v| v.span()));
    add("slots", ins.slots.values().next().map(|v| v.span()));
    add(
        "output_format",
        ins.output_format.as_ref().map(|v| v.span()),
    );
    add("scope", ins.scope.as_ref().map(|v| v.span()));
    add("key", ins.key.as_ref().map(|v| v.span()));
    add("ttl_seconds", ins.ttl_seconds.as_ref().map(|v| v.span()));
    add("default", ins.default.as_ref().map(|v| v.span()));
    add("topic", ins.topic.as_ref().map(|v| v.span()));
    add("event_key", ins.event_key.as_ref().map(|v| v.span()));
    add("priority", ins.priority.as_ref().map(|v| v.span()));
    add("preemptible", ins.preemptible.as_ref().map(|v| v.span()));
    add("max_wait_ms", ins.max_wait_ms.as_ref().map(|v| v.span()));
    add("retry", ins.retry.as_ref().map(|v| v.span()));
    add("fallback", ins.fallback.as_ref().map(|v| v.span()));
    add("timeout_ms", ins.timeout_ms.as_ref().map(|v| v.span()));
    add("on_timeout", ins.on_timeout.as_ref().map(|v| v.span()));
    present
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_every_opcode_once() {
        let mut names: Vec<&str> = SPECS.iter().map(|s| s.opcode.as_str_name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 14);
        assert!(!names.contains(&IrOpcode::Unspecified.as_str_name()));
    }

    #[test]
    fn required_fields_are_accepted() {
        for spec in SPECS {
            for (field, _) in spec.required {
                assert!(spec.accepts(field), "{:?} {field}", spec.opcode);
            }
        }
    }
}
