//! The rule as written: serde structs mirroring the YAML format of `docs/rules.md`, every
//! value wrapped in [`Spanned`] so later phases can point at its line and column.

use std::collections::BTreeMap;
use std::fmt;

use marked_yaml::{Span, Spanned};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// A spanned string.
pub(crate) type Text = Spanned<String>;

/// A whole rule file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rule {
    /// Program id (`program_id`); a stable name such as `valve-guard`.
    pub(crate) id: Text,
    /// Human-readable name.
    pub(crate) name: Option<Text>,
    /// Program version, semver `MAJOR.MINOR.PATCH`.
    pub(crate) version: Text,
    /// Free text describing what the rule does.
    pub(crate) description: Option<Text>,
    /// Tags for search and grouping.
    #[serde(default)]
    pub(crate) tags: Vec<Text>,
    /// Free key/value labels.
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, Text>,
    /// Default priority name of every instruction (`normal` when absent).
    pub(crate) priority: Option<Text>,
    /// Overrides whether the default priority is preemptible.
    pub(crate) preemptible: Option<Spanned<bool>>,
    /// Overrides the default priority's maximum queueing wait, in milliseconds.
    pub(crate) max_wait_ms: Option<Spanned<i64>>,
    /// Allows parallel side effects on one resource key everywhere in the rule.
    pub(crate) arbitrate: Option<Spanned<bool>>,
    /// Capabilities the rule uses: capability id -> semver requirement.
    #[serde(default)]
    pub(crate) requires: BTreeMap<String, Text>,
    /// Events that start an execution.
    #[serde(default)]
    pub(crate) triggers: Vec<Spanned<Trigger>>,
    /// The instructions; the first one is the entry.
    pub(crate) instructions: Spanned<Vec<Spanned<Instruction>>>,
}

/// An event that starts an execution.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Trigger {
    /// `webhook`, `kafka`, `mqtt`, `timer`, `cron`, `plugin` or `manual`.
    pub(crate) kind: Text,
    /// Webhook source, topic, or plugin source id.
    pub(crate) source: Option<Text>,
    /// CEL condition over `event`.
    pub(crate) filter: Option<Text>,
    /// `timer`: interval in milliseconds.
    pub(crate) interval_ms: Option<Spanned<i64>>,
    /// `cron`: cron expression.
    pub(crate) cron: Option<Text>,
    /// CEL expression over `event` giving the partition key.
    pub(crate) key: Option<Text>,
}

/// One instruction. Which fields apply depends on `op` (checked by the checks phase).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Instruction {
    /// Instruction id, a CEL identifier; later expressions see the result under it.
    pub(crate) id: Text,
    /// Opcode name, e.g. `CALL_ACTION`.
    pub(crate) op: Text,
    /// Free text kept in the IR.
    pub(crate) comment: Option<Text>,
    /// Instructions that run after this one (one id or a list).
    pub(crate) next: Option<Spanned<IdList>>,
    /// Name under which the result is visible (default: the id).
    pub(crate) output: Option<Text>,
    /// Named inputs: name -> CEL expression.
    #[serde(default)]
    pub(crate) params: BTreeMap<String, Text>,
    /// CEL expression: EVAL value, RETURN value, STORE value, EMIT_EVENT payload, HTTP body.
    pub(crate) expression: Option<Text>,

    /// BRANCH: CEL condition.
    pub(crate) condition: Option<Text>,
    /// BRANCH: instruction run when the condition is true.
    pub(crate) then: Option<Text>,
    /// BRANCH: instruction run when the condition is false.
    #[serde(rename = "else")]
    pub(crate) otherwise: Option<Text>,

    /// LOOP: mandatory iteration bound.
    pub(crate) max_iterations: Option<Spanned<i64>>,
    /// LOOP: instructions run once per iteration.
    pub(crate) body: Option<Spanned<IdList>>,
    /// LOOP: CEL list to iterate over.
    pub(crate) over: Option<Text>,
    /// LOOP: name each element of `over` is bound to.
    #[serde(rename = "as")]
    pub(crate) item: Option<Text>,
    /// LOOP: CEL condition checked before each iteration.
    #[serde(rename = "while")]
    pub(crate) while_condition: Option<Text>,

    /// LOAD_RESOURCE / CALL_ACTION: capability id (declared in `requires`).
    pub(crate) capability: Option<Text>,
    /// CALL_ACTION: action of the capability.
    pub(crate) action: Option<Text>,
    /// CALL_FUNCTION: built-in function name.
    pub(crate) function: Option<Text>,
    /// CALL_SERVICE: service name.
    pub(crate) service: Option<Text>,
    /// CALL_API / CALL_SERVICE: the HTTP request.
    pub(crate) http: Option<Spanned<Http>>,
    /// Vault path of the credential a call uses.
    pub(crate) secret: Option<Text>,
    /// JSON schema (as JSON text) of the input.
    pub(crate) input_schema: Option<Text>,
    /// JSON schema (as JSON text) the output must satisfy.
    pub(crate) output_schema: Option<Text>,
    /// Holds the action until a human approves it.
    pub(crate) requires_human_validation: Option<Spanned<bool>>,

    /// Arbitration key of the resource the instruction touches.
    pub(crate) resource_key: Option<Text>,
    /// Allows a parallel side effect on the same resource key (the arbiter serialises them).
    pub(crate) arbitrate: Option<Spanned<bool>>,
    /// CALL_ACTION: when the action is allowed to run.
    pub(crate) time_window: Option<Spanned<TimeWindow>>,
    /// CALL_ACTION: what must hold after the action.
    pub(crate) postcondition: Option<Spanned<Postcondition>>,
    /// Instructions run in reverse order when this one aborts.
    pub(crate) compensation: Option<Spanned<IdList>>,

    /// LLM_CALL: model name.
    pub(crate) model: Option<Text>,
    /// LLM_CALL: sampling temperature, 0.0 to 2.0.
    pub(crate) temperature: Option<Spanned<f32>>,
    /// LLM_CALL: output token budget.
    pub(crate) max_tokens: Option<Spanned<i64>>,
    /// LLM_CALL: system prompt.
    pub(crate) system_prompt: Option<Text>,
    /// LLM_CALL: prompt template with `{{slot}}` placeholders.
    pub(crate) prompt: Option<Text>,
    /// LLM_CALL: frozen few-shot examples.
    #[serde(default)]
    pub(crate) examples: Vec<Spanned<Example>>,
    /// LLM_CALL: dynamic slots filled at run time.
    #[serde(default)]
    pub(crate) slots: BTreeMap<String, Spanned<Slot>>,
    /// LLM_CALL: `json` or `text`.
    pub(crate) output_format: Option<Text>,

    /// STORE / LOAD: `execution`, `node` or `cluster`.
    pub(crate) scope: Option<Text>,
    /// STORE / LOAD: memory key.
    pub(crate) key: Option<Text>,
    /// STORE in `node` scope: time to live in seconds.
    pub(crate) ttl_seconds: Option<Spanned<i64>>,
    /// LOAD: JSON value returned when the key is absent.
    pub(crate) default: Option<Text>,

    /// EMIT_EVENT: topic.
    pub(crate) topic: Option<Text>,
    /// EMIT_EVENT: CEL expression giving the event key.
    pub(crate) event_key: Option<Text>,

    /// Priority name overriding the rule's.
    pub(crate) priority: Option<Text>,
    /// Overrides whether the instruction is preemptible.
    pub(crate) preemptible: Option<Spanned<bool>>,
    /// Overrides the maximum queueing wait, in milliseconds.
    pub(crate) max_wait_ms: Option<Spanned<i64>>,
    /// Retry policy.
    pub(crate) retry: Option<Spanned<Retry>>,
    /// What to do once retries are exhausted.
    pub(crate) fallback: Option<Spanned<Fallback>>,
    /// Execution deadline in milliseconds.
    pub(crate) timeout_ms: Option<Spanned<i64>>,
    /// Strategy applied on timeout.
    pub(crate) on_timeout: Option<Text>,
}

/// An HTTP request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Http {
    /// Method (`GET` by default).
    pub(crate) method: Option<Text>,
    /// URL.
    pub(crate) url: Text,
    /// Headers.
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, Text>,
}

/// When a physical action is allowed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimeWindow {
    /// `HH:MM`, inclusive.
    pub(crate) start: Text,
    /// `HH:MM`, exclusive.
    pub(crate) end: Text,
    /// Offset of the local zone from UTC, in minutes.
    pub(crate) utc_offset_minutes: Option<Spanned<i64>>,
    /// Days: `mon`..`sun` or ISO numbers 1..7; empty = every day.
    #[serde(default)]
    pub(crate) weekdays: Vec<Text>,
}

/// What must hold after a physical action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Postcondition {
    /// CEL condition over `resource` (the value read back).
    pub(crate) condition: Text,
    /// Connector used to read the resource back (declared in `requires`).
    pub(crate) capability: Text,
    /// Parameters of the read: name -> CEL expression.
    #[serde(default)]
    pub(crate) params: BTreeMap<String, Text>,
    /// Deadline for the condition to hold, in milliseconds.
    pub(crate) deadline_ms: Spanned<i64>,
    /// Interval between reads, in milliseconds.
    pub(crate) poll_interval_ms: Option<Spanned<i64>>,
}

/// Retry policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retry {
    /// Number of retries after the first attempt.
    pub(crate) max_retries: Spanned<i64>,
    /// First backoff, in milliseconds.
    pub(crate) backoff_ms: Option<Spanned<i64>>,
    /// Backoff growth factor (>= 1).
    pub(crate) multiplier: Option<Spanned<f32>>,
    /// Backoff ceiling, in milliseconds.
    pub(crate) max_backoff_ms: Option<Spanned<i64>>,
    /// Error classes retried (all when empty).
    #[serde(default)]
    pub(crate) on: Vec<Text>,
}

/// Fallback applied when the instruction fails after its retries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fallback {
    /// `retry`, `value`, `model`, `skip` or `abort`.
    pub(crate) strategy: Text,
    /// `value`: the value as JSON text.
    pub(crate) value: Option<Text>,
    /// `model`: the alternative model.
    pub(crate) model: Option<Text>,
    /// Error classes handled (all when empty).
    #[serde(default)]
    pub(crate) on: Vec<Text>,
}

/// A frozen few-shot example.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Example {
    /// Input, as JSON text.
    pub(crate) input: Text,
    /// Expected output, as JSON text.
    pub(crate) output: Text,
    /// Optional label.
    pub(crate) label: Option<Text>,
}

/// Where a dynamic slot's value comes from: exactly one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Slot {
    /// Vault path.
    pub(crate) vault: Option<Text>,
    /// Dot-notation path in the runtime context.
    pub(crate) runtime: Option<Text>,
}

/// One instruction id or a list of them (`next: b` or `next: [b, c]`).
#[derive(Debug)]
pub(crate) enum IdList {
    /// A single id; its span is the enclosing field's.
    One(String),
    /// A list of ids, each with its span.
    Many(Vec<Text>),
}

impl IdList {
    /// The ids with their spans; a single id takes `span` (the field's).
    pub(crate) fn ids(&self, span: &Span) -> Vec<Text> {
        match self {
            IdList::One(id) => vec![Spanned::new(*span, id.clone())],
            IdList::Many(ids) => ids.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for IdList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdListVisitor;
        impl<'de> Visitor<'de> for IdListVisitor {
            type Value = IdList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an instruction id or a list of instruction ids")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdList, E> {
                Ok(IdList::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IdList, A::Error> {
                let mut ids = Vec::new();
                while let Some(id) = seq.next_element::<Text>()? {
                    ids.push(id);
                }
                Ok(IdList::Many(ids))
            }
        }
        deserializer.deserialize_any(IdListVisitor)
    }
}
