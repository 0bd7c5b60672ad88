//! Phase 4, binding: turns priority names into `PriorityPolicy` values (rule default plus
//! per-instruction overrides) and freezes an LLM_CALL's context (model settings, prompts,
//! few-shot examples, dynamic slots) into its `DispatchMetadata`.

use eyeflow_ir::pb::{DispatchMetadata, DynamicSlot, FewShotExample, PriorityPolicy};
use marked_yaml::Spanned;

use crate::ast::{Instruction, Rule, Text};
use crate::check::json;
use crate::error::{Result, Source};

/// Priority names with their level and defaults: (name, level, preemptible, max_wait_ms).
pub(crate) const PRIORITIES: [(&str, i32, bool, i32); 5] = [
    ("critical", 0, false, 500),
    ("high", 64, false, 2_000),
    ("normal", 128, true, 10_000),
    ("low", 192, true, 30_000),
    ("background", 255, true, 120_000),
];

/// Name of the priority a rule gets when it names none.
const DEFAULT_PRIORITY: &str = "normal";

fn named(source: &Source<'_>, name: &Text) -> Result<PriorityPolicy> {
    PRIORITIES
        .iter()
        .find(|(n, ..)| *n == name.as_str())
        .map(
            |&(_, priority_level, preemptible, max_wait_ms)| PriorityPolicy {
                priority_level,
                preemptible,
                max_wait_ms,
            },
        )
        .ok_or_else(|| {
            let names: Vec<&str> = PRIORITIES.iter().map(|(n, ..)| *n).collect();
            source.rule(
                name.span(),
                format!(
                    "unknown priority `{}`; expected one of: {}",
                    name.as_str(),
                    names.join(", ")
                ),
            )
        })
}

fn apply_overrides(
    source: &Source<'_>,
    mut policy: PriorityPolicy,
    preemptible: Option<&Spanned<bool>>,
    max_wait_ms: Option<&Spanned<i64>>,
) -> Result<PriorityPolicy> {
    if let Some(preemptible) = preemptible {
        policy.preemptible = **preemptible;
    }
    if let Some(wait) = max_wait_ms {
        policy.max_wait_ms = match i32::try_from(**wait) {
            Ok(ms) if ms > 0 => ms,
            _ => {
                return Err(source.rule(
                    wait.span(),
                    format!(
                        "max_wait_ms is {}; expected a positive number of milliseconds up to {}",
                        **wait,
                        i32::MAX
                    ),
                ));
            }
        };
    }
    Ok(policy)
}

/// The rule's default priority: its `priority` name (`normal` when absent) with overrides.
pub(crate) fn default_priority(rule: &Rule, source: &Source<'_>) -> Result<PriorityPolicy> {
    let base = match &rule.priority {
        Some(name) => named(source, name)?,
        None => named(
            source,
            &Spanned::new(*rule.id.span(), DEFAULT_PRIORITY.to_owned()),
        )?,
    };
    apply_overrides(
        source,
        base,
        rule.preemptible.as_ref(),
        rule.max_wait_ms.as_ref(),
    )
}

/// An instruction's own policy when it overrides the default (`None` when it inherits it).
pub(crate) fn instruction_priority(
    ins: &Instruction,
    default: &PriorityPolicy,
    source: &Source<'_>,
) -> Result<Option<PriorityPolicy>> {
    if ins.priority.is_none() && ins.preemptible.is_none() && ins.max_wait_ms.is_none() {
        return Ok(None);
    }
    let base = match &ins.priority {
        Some(name) => named(source, name)?,
        None => *default,
    };
    apply_overrides(
        source,
        base,
        ins.preemptible.as_ref(),
        ins.max_wait_ms.as_ref(),
    )
    .map(Some)
}

/// Freezes an LLM_CALL's context into the dispatch metadata fields it owns. Examples are
/// stored as compact JSON; slots in name order.
pub(crate) fn llm_context(ins: &Instruction, source: &Source<'_>) -> Result<DispatchMetadata> {
    let id = ins.id.as_str();
    let temperature = match &ins.temperature {
        Some(t) if t.is_finite() && (0.0..=2.0).contains(&**t) => **t,
        Some(t) => {
            return Err(source.rule(
                t.span(),
                format!("temperature of `{id}` is {}; expected 0.0 to 2.0", **t),
            ));
        }
        None => 0.0,
    };
    let max_tokens = match &ins.max_tokens {
        Some(n) => match i32::try_from(**n) {
            Ok(v) if v > 0 => v,
            _ => {
                return Err(source.rule(
                    n.span(),
                    format!(
                        "max_tokens of `{id}` is {}; expected a positive number up to {}",
                        **n,
                        i32::MAX
                    ),
                ));
            }
        },
        None => 0,
    };
    let mut few_shot_examples = Vec::with_capacity(ins.examples.len());
    for (n, example) in ins.examples.iter().enumerate() {
        let what = format!("few-shot example {} of `{id}`", n + 1);
        few_shot_examples.push(FewShotExample {
            input_json: json(source, &example.input, &format!("input of {what}"))?.to_string(),
            output_json: json(source, &example.output, &format!("output of {what}"))?.to_string(),
            label: text(&example.label),
        });
    }
    let dynamic_slots = ins
        .slots
        .iter()
        .filter_map(|(name, slot)| {
            let (source_type, key) = match (&slot.vault, &slot.runtime) {
                (Some(path), _) => ("vault", path),
                (None, Some(path)) => ("runtime", path),
                (None, None) => return None,
            };
            Some(DynamicSlot {
                slot_id: name.clone(),
                source_type: source_type.to_owned(),
                source_key: key.to_string(),
            })
        })
        .collect();
    let output_format = match (&ins.output_format, &ins.output_schema) {
        (Some(format), _) => format.to_string(),
        (None, Some(_)) => "json".to_owned(),
        (None, None) => "text".to_owned(),
    };
    Ok(DispatchMetadata {
        model: text(&ins.model),
        temperature,
        max_tokens,
        system_prompt: text(&ins.system_prompt),
        prompt_template: text(&ins.prompt),
        output_format,
        few_shot_examples,
        dynamic_slots,
        ..Default::default()
    })
}

/// The string of an optional field, empty when absent.
pub(crate) fn text(value: &Option<Text>) -> String {
    value.as_ref().map(|v| v.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::PRIORITIES;

    #[test]
    fn levels_match_the_ir() {
        let levels: Vec<i32> = PRIORITIES.iter().map(|p| p.1).collect();
        assert_eq!(levels, eyeflow_ir::validate::PRIORITY_LEVELS);
    }
}
