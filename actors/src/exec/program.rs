//! [`Program`]: an LLM-IR program prepared once per loaded version — instruction index,
//! flow regions in deterministic order, compiled CEL (or an MCU program's validated bytecode),
//! parsed JSON, compiled JSON schemas,
//! resolved built-in functions — so that executions only evaluate.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use eyeflow_ir::pb::{
    HttpCall, IrInstruction, IrOpcode, LlmIrProgram, McuCode, MemoryScope, PriorityPolicy, Target,
    TimeWindow, TriggerKind,
};
use semver::VersionReq;
use serde_json::Value;

use super::error::Error;
use super::expr::{Expr, Vars};
use super::fallback::Policy;
use super::functions::{self, Function};
use crate::ports::CapabilityRef;
use crate::sync::RwLocked;

/// Default `max_wait_ms` of each priority level (see `docs/rules.md`, Priorities).
const LEVEL_WAITS: [(u32, u64); 5] = [
    (0, 500),
    (64, 2_000),
    (128, 10_000),
    (192, 30_000),
    (255, 120_000),
];

/// A priority policy with its defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// 0 = critical … 255 = background.
    pub level: u32,
    /// Whether the execution may be parked at instruction boundaries.
    pub preemptible: bool,
    /// How long a resource permit may be waited for.
    pub max_wait: Duration,
}

impl Priority {
    /// The policy of `p`, with levels clamped to 0..=255 and a missing wait replaced by the
    /// level's default.
    pub fn from_policy(p: &PriorityPolicy) -> Self {
        let level = u32::try_from(p.priority_level.clamp(0, 255)).unwrap_or(128);
        let default_wait = LEVEL_WAITS
            .iter()
            .find(|(l, _)| *l >= level)
            .map_or(120_000, |(_, w)| *w);
        let wait = u64::try_from(p.max_wait_ms)
            .ok()
            .filter(|w| *w > 0)
            .unwrap_or(default_wait);
        Self {
            level,
            preemptible: p.preemptible,
            max_wait: Duration::from_millis(wait),
        }
    }
}

impl Default for Priority {
    /// `normal`: level 128, preemptible, 10 s.
    fn default() -> Self {
        Self {
            level: 128,
            preemptible: true,
            max_wait: Duration::from_millis(10_000),
        }
    }
}

/// Why a trigger expression could not be evaluated on an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// An event trigger with its CEL compiled.
#[derive(Debug)]
pub struct Trigger {
    /// What kind of source starts executions.
    pub kind: TriggerKind,
    /// Source name (webhook source, topic, plugin source id).
    pub source: String,
    /// TIMER interval, ms (0 otherwise).
    pub interval_ms: u64,
    /// CRON expression (empty otherwise).
    pub cron: String,
    /// The CRON expression, parsed at prepare.
    schedule: Option<croner::Cron>,
    filter: Option<Expr>,
    key: Option<Expr>,
}

impl Trigger {
    /// The next firing strictly after `after_ms` (Unix ms, UTC) of a TIMER (multiples of
    /// its interval, aligned on the epoch, so that a restart computes the same instants) or
    /// CRON trigger; `None` for other kinds, or for a time past what the calendar holds.
    pub fn next_firing(&self, after_ms: u64) -> Option<u64> {
        match self.kind {
            TriggerKind::Timer if self.interval_ms > 0 => {
                Some((after_ms / self.interval_ms + 1).saturating_mul(self.interval_ms))
            }
            TriggerKind::Cron => {
                let after = i64::try_from(after_ms)
                    .ok()
                    .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)?;
                let next = self
                    .schedule
                    .as_ref()?
                    .find_next_occurrence(&after, false)
                    .ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
            _ => None,
        }
    }

    /// Whether `event` (the payload) passes the trigger's filter (true without a filter).
    pub fn accepts(&self, event: &Value) -> Result<bool, EvalError> {
        match &self.filter {
            None => Ok(true),
            Some(filter) => filter.eval_bool(&event_vars(event)).map_err(EvalError),
        }
    }

    /// The partition / ownership key of `event`, if the trigger has a key expression
    /// (strings as is, other values as compact JSON).
    pub fn key(&self, event: &Value) -> Result<Option<String>, EvalError> {
        match &self.key {
            None => Ok(None),
            Some(key) => key
                .eval(&event_vars(event))
                .map(|v| Some(text_of(&v)))
                .map_err(EvalError),
        }
    }
}

fn event_vars(event: &Value) -> Vars {
    let mut vars = Vars::default();
    vars.set("event", event);
    vars
}

/// A value as prompt / key text: strings as they are, anything else as compact JSON.
pub(crate) fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where a prompt slot's value comes from.
#[derive(Debug)]
pub(crate) enum SlotSource {
    /// A secret, by name: goes into the prompt only.
    Vault(String),
    /// A CEL expression (a dotted path such as `event.alarm`) over the execution's variables.
    Runtime(Expr),
}

/// An LLM_CALL's frozen context.
#[derive(Debug)]
pub(crate) struct Llm {
    pub(crate) model: String,
    pub(crate) temperature: f32,
    pub(crate) max_tokens: u32,
    pub(crate) system_prompt: String,
    pub(crate) prompt: String,
    /// (input, output) JSON texts.
    pub(crate) few_shot: Vec<(String, String)>,
    pub(crate) slots: Vec<(String, SlotSource)>,
    pub(crate) json_output: bool,
}

/// A STORE / LOAD target.
#[derive(Debug)]
pub(crate) struct Memory {
    pub(crate) scope: MemoryScope,
    pub(crate) key: String,
    pub(crate) ttl: Duration,
    pub(crate) default: Value,
}

/// A LOOP's configuration.
#[derive(Debug)]
pub(crate) struct Loop {
    pub(crate) max_iterations: u32,
    pub(crate) body: Vec<usize>,
    pub(crate) items: Option<Expr>,
    pub(crate) item_var: String,
    pub(crate) while_condition: Option<Expr>,
}

/// A postcondition, compiled.
#[derive(Debug)]
pub(crate) struct Post {
    pub(crate) condition: Expr,
    pub(crate) capability: CapabilityRef,
    pub(crate) params: Vec<(String, Expr)>,
    pub(crate) deadline: Duration,
    pub(crate) poll: Duration,
}

/// One instruction, prepared.
pub(crate) struct Prepared {
    pub(crate) id: String,
    pub(crate) opcode: IrOpcode,
    /// Name of the result in later expressions (`output_var`, else the id).
    pub(crate) output: String,
    pub(crate) sequence: i32,
    /// `depends_on`, as indexes.
    pub(crate) deps: Vec<usize>,
    /// BRANCH instructions whose `then` / `else` name this one.
    pub(crate) branch_parents: Vec<usize>,
    pub(crate) expression: Option<Expr>,
    pub(crate) condition: Option<Expr>,
    pub(crate) branch_true: Option<usize>,
    pub(crate) branch_false: Option<usize>,
    pub(crate) params: Vec<(String, Expr)>,
    pub(crate) looping: Option<Loop>,
    pub(crate) memory: Option<Memory>,
    pub(crate) capability: Option<CapabilityRef>,
    pub(crate) action: String,
    pub(crate) function: Option<Function>,
    pub(crate) http: Option<HttpCall>,
    pub(crate) target_service: String,
    pub(crate) secret: String,
    pub(crate) emit: Option<(String, Option<Expr>)>,
    pub(crate) input_schema: Option<jsonschema::Validator>,
    pub(crate) output_schema: Option<jsonschema::Validator>,
    pub(crate) llm: Option<Llm>,
    pub(crate) postcondition: Option<Post>,
    pub(crate) time_window: Option<TimeWindow>,
    pub(crate) compensation: Vec<usize>,
    pub(crate) priority: Priority,
    /// A permission the instruction needs and its signed flags lack (the validator refuses
    /// such a program at load; the executor refuses the instruction at run too).
    pub(crate) missing_permission: Option<eyeflow_ir::opcode::Permission>,
    pub(crate) policy: Policy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) resource_key: String,
    pub(crate) requires_validation: bool,
    /// Of an MCU program: its results are what a device holds (docs/firmware.md).
    pub(crate) on_device: bool,
}

impl Prepared {
    /// Why the instruction may never run, whoever asks: a permission it needs that its
    /// signed flags lack.
    pub(crate) fn refused(&self) -> Option<super::fallback::Failure> {
        self.missing_permission.map(|permission| {
            super::fallback::Failure::new(
                eyeflow_ir::pb::ErrorClass::Denied,
                format!(
                    "`{}` needs permission {}, which the program does not carry",
                    self.id,
                    permission.name()
                ),
            )
        })
    }
}

/// A program ready to execute. Cheap to share (`Arc<Program>`); executions never mutate it.
pub struct Program {
    ir: Arc<LlmIrProgram>,
    pub(crate) instructions: Vec<Prepared>,
    /// Instructions outside loop bodies and compensation lists, in (sequence, id) order.
    pub(crate) top: Vec<usize>,
    default_priority: Priority,
    triggers: Vec<Trigger>,
    /// Hex SHA-256 of the signed bytes it was loaded from, written into its audit entries.
    signed_sha256: Option<String>,
    /// Its instruction actors, once its program actor runs (none outside a node's tree).
    stations: std::sync::RwLock<Option<Arc<dyn crate::gates::Stations>>>,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("id", &self.ir.program_id)
            .field("version", &self.ir.version)
            .field("instructions", &self.instructions.len())
            .finish()
    }
}

impl Program {
    /// Prepares `ir` (already verified and validated by `eyeflow_ir::load`): compiles every
    /// CEL expression and JSON schema, parses JSON values, resolves functions and the flow.
    pub fn prepare(ir: Arc<LlmIrProgram>) -> Result<Self, Error> {
        let program_error = |message: String| Error::Program {
            program: ir.program_id.clone(),
            message,
        };
        let mut index = HashMap::new();
        for (i, ins) in ir.instructions.iter().enumerate() {
            if index.insert(ins.instruction_id.as_str(), i).is_some() {
                return Err(program_error(format!(
                    "duplicate instruction id `{}`",
                    ins.instruction_id
                )));
            }
        }
        let default_priority = ir
            .default_priority
            .as_ref()
            .map(Priority::from_policy)
            .unwrap_or_default();
        let requirements: BTreeMap<&str, &str> = ir
            .required_capabilities
            .iter()
            .map(|c| (c.capability_id.as_str(), c.version_req.as_str()))
            .collect();
        let mcu = ir.target == Target::Mcu as i32;
        let mut instructions = Vec::with_capacity(ir.instructions.len());
        for ins in &ir.instructions {
            instructions.push(prepare_instruction(
                ins,
                &index,
                default_priority,
                &requirements,
                mcu,
            )?);
        }
        for i in 0..instructions.len() {
            for target in [instructions[i].branch_true, instructions[i].branch_false]
                .into_iter()
                .flatten()
            {
                instructions[target].branch_parents.push(i);
            }
        }
        let mut nested = vec![false; instructions.len()];
        for ins in &instructions {
            for &member in ins.looping.iter().flat_map(|l| &l.body) {
                nested[member] = true;
            }
            for &step in &ins.compensation {
                nested[step] = true;
            }
        }
        let mut top: Vec<usize> = (0..instructions.len()).filter(|&i| !nested[i]).collect();
        // The validator checked the regions: each member's dependencies inside its region,
        // no cycle, an entry at the top level.
        sort_region(&instructions, &mut top);
        let mut bodies = Vec::new();
        for ins in &instructions {
            if let Some(l) = &ins.looping {
                let mut body = l.body.clone();
                sort_region(&instructions, &mut body);
                bodies.push(body);
            }
        }
        for (ins, body) in instructions
            .iter_mut()
            .filter(|i| i.looping.is_some())
            .zip(bodies)
        {
            if let Some(l) = &mut ins.looping {
                l.body = body;
            }
        }
        let mut triggers = Vec::with_capacity(ir.triggers.len());
        for (n, t) in ir.triggers.iter().enumerate() {
            let compile = |field: &str, source: &str| {
                optional_expr(source, None).map_err(|message| Error::Trigger {
                    index: n,
                    field: field.to_owned(),
                    message,
                })
            };
            let kind = TriggerKind::try_from(t.kind).unwrap_or(TriggerKind::Unspecified);
            let schedule = (kind == TriggerKind::Cron)
                .then(|| {
                    croner::Cron::new(&t.cron)
                        .with_seconds_optional()
                        .parse()
                        .map_err(|e| Error::Trigger {
                            index: n,
                            field: "cron".to_owned(),
                            message: format!("cron expression `{}` is invalid: {e}", t.cron),
                        })
                })
                .transpose()?;
            triggers.push(Trigger {
                kind,
                source: t.source.clone(),
                interval_ms: t.interval_ms,
                cron: t.cron.clone(),
                schedule,
                filter: compile("filter", &t.filter)?,
                key: compile("key_expr", &t.key_expr)?,
            });
        }
        Ok(Self {
            ir,
            instructions,
            top,
            default_priority,
            triggers,
            signed_sha256: None,
            stations: std::sync::RwLock::new(None),
        })
    }

    /// The program, recording `sha256` (hex SHA-256 of the exact signed bytes it was loaded
    /// from, computed once at deploy) in the audit entry of each of its instructions.
    pub fn with_signed_sha256(mut self, sha256: String) -> Self {
        self.signed_sha256 = Some(sha256);
        self
    }

    /// Hex SHA-256 of the signed bytes it was loaded from, when the loader gave it.
    pub fn signed_sha256(&self) -> Option<&str> {
        self.signed_sha256.as_deref()
    }

    /// Routes its executions through `stations` (its program actor's instruction actors)
    /// from now on.
    pub fn attach(&self, stations: Arc<dyn crate::gates::Stations>) {
        *self.stations.writing() = Some(stations);
    }

    /// Its instruction actors, if its program actor runs.
    pub fn stations(&self) -> Option<Arc<dyn crate::gates::Stations>> {
        self.stations.reading().clone()
    }

    /// Program id.
    pub fn id(&self) -> &str {
        &self.ir.program_id
    }

    /// Program version (semver).
    pub fn version(&self) -> &str {
        &self.ir.version
    }

    /// The program's default priority (instructions without their own policy use it).
    pub fn default_priority(&self) -> Priority {
        self.default_priority
    }

    /// The events that start executions.
    pub fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }

    /// The IR it was prepared from.
    pub fn ir(&self) -> &LlmIrProgram {
        &self.ir
    }
}

/// Whether `ins` starts its region (nothing leads to it).
pub(crate) fn is_entry(ins: &Prepared) -> bool {
    ins.deps.is_empty() && ins.branch_parents.is_empty()
}

/// Sorts a region by (sequence_number, id): the deterministic tie order.
fn sort_region(instructions: &[Prepared], region: &mut [usize]) {
    region.sort_by(|&a, &b| {
        let (a, b) = (&instructions[a], &instructions[b]);
        (a.sequence, &a.id).cmp(&(b.sequence, &b.id))
    });
}

/// The expression of CEL text `source` (none when empty): CEL, or the bytecode `code`
/// lowered from it for an MCU program.
fn optional_expr(source: &str, code: Option<&[u8]>) -> Result<Option<Expr>, String> {
    if source.trim().is_empty() {
        return Ok(None);
    }
    match code {
        None => Expr::compile(source).map(Some),
        Some(code) => Expr::bytecode(source, code).map(Some),
    }
}

fn parse_json(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

fn schema(text: &str) -> Result<Option<jsonschema::Validator>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    jsonschema::validator_for(&value)
        .map(Some)
        .map_err(|e| format!("not a valid JSON schema: {e}"))
}

fn capability(id: &str, requirement: &str) -> Result<CapabilityRef, String> {
    let requirement = if requirement.trim().is_empty() {
        "*"
    } else {
        requirement
    };
    VersionReq::parse(requirement)
        .map(|v| CapabilityRef::new(id, v))
        .map_err(|e| format!("bad version requirement `{requirement}`: {e}"))
}

fn prepare_instruction(
    ins: &IrInstruction,
    index: &HashMap<&str, usize>,
    default_priority: Priority,
    requirements: &BTreeMap<&str, &str>,
    mcu: bool,
) -> Result<Prepared, Error> {
    let id = ins.instruction_id.as_str();
    let err = |field: &str, message: String| Error::instruction(id, field, message);
    let opcode = IrOpcode::try_from(ins.opcode)
        .ok()
        .filter(|o| *o != IrOpcode::Unspecified)
        .ok_or_else(|| err("opcode", format!("unknown opcode {}", ins.opcode)))?;
    let resolve = |field: &str, target: &str| {
        index
            .get(target)
            .copied()
            .ok_or_else(|| err(field, format!("names `{target}`, which does not exist")))
    };
    let deps = ins
        .depends_on
        .iter()
        .map(|d| resolve("depends_on", d))
        .collect::<Result<Vec<_>, _>>()?;
    let compensation = ins
        .compensation_ids
        .iter()
        .map(|c| resolve("compensation_ids", c))
        .collect::<Result<Vec<_>, _>>()?;
    let target = |field: &str, t: &str| -> Result<Option<usize>, Error> {
        if t.is_empty() {
            Ok(None)
        } else {
            resolve(field, t).map(Some)
        }
    };
    let branch_true = target("branch_true_id", &ins.branch_true_id)?;
    let branch_false = target("branch_false_id", &ins.branch_false_id)?;
    let on_device = mcu;
    // An MCU program evaluates its bytecode (the CEL text stays for messages).
    let mcu = mcu.then(|| ins.mcu.clone().unwrap_or_default());
    let code = |pick: fn(&McuCode) -> &[u8]| mcu.as_ref().map(pick);
    let expr = |field: &str, source: &str| optional_expr(source, None).map_err(|m| err(field, m));
    let lowered = |field: &str, source: &str, code: Option<&[u8]>| {
        optional_expr(source, code).map_err(|m| err(field, m))
    };
    let expression = lowered("expression", &ins.expression, code(|c| &c.expression))?;
    let condition = lowered(
        "branch_condition",
        &ins.branch_condition,
        code(|c| &c.branch_condition),
    )?;
    let params = ins
        .params
        .iter()
        .map(|(name, source)| {
            let field = format!("params.{name}");
            let code = mcu.as_ref().map(|c| {
                c.params
                    .iter()
                    .find(|p| &p.name == name)
                    .map_or(&[][..], |p| p.code.as_slice())
            });
            let compiled = match code {
                None => Expr::compile(source),
                Some(code) => Expr::bytecode(source, code),
            };
            compiled
                .map(|e| (name.clone(), e))
                .map_err(|m| err(&field, m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dispatch = ins.dispatch_metadata.clone().unwrap_or_default();
    let needs = |ok: bool, field: &str, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(err(field, format!("{} needs {what}", opcode.as_str_name())))
        }
    };

    let mut looping = None;
    let mut memory = None;
    let mut capability_ref = None;
    let mut function = None;
    let mut llm = None;
    let mut emit = None;
    match opcode {
        IrOpcode::Eval => needs(expression.is_some(), "expression", "an expression")?,
        IrOpcode::Branch => {
            needs(condition.is_some(), "branch_condition", "a condition")?;
            needs(branch_true.is_some(), "branch_true_id", "a `then` target")?;
        }
        IrOpcode::Loop => {
            let l = ins
                .r#loop
                .as_ref()
                .ok_or_else(|| err("loop", "LOOP needs a loop config".to_owned()))?;
            needs(l.max_iterations > 0, "loop.max_iterations", "a bound > 0")?;
            needs(!l.body.is_empty(), "loop.body", "a body")?;
            let body = l
                .body
                .iter()
                .map(|b| resolve("loop.body", b))
                .collect::<Result<Vec<_>, _>>()?;
            let items = expr("loop.items_expr", &l.items_expr)?;
            let item_var = if l.item_var.is_empty() {
                "item".to_owned()
            } else {
                l.item_var.clone()
            };
            looping = Some(Loop {
                max_iterations: l.max_iterations,
                body,
                items,
                item_var,
                while_condition: lowered(
                    "loop.while_condition",
                    &l.while_condition,
                    code(|c| &c.while_condition),
                )?,
            });
        }
        IrOpcode::Store | IrOpcode::Load => {
            let m = ins
                .memory
                .as_ref()
                .ok_or_else(|| err("memory", "STORE/LOAD needs a memory access".to_owned()))?;
            let scope = MemoryScope::try_from(m.scope)
                .ok()
                .filter(|s| *s != MemoryScope::Unspecified)
                .ok_or_else(|| err("memory.scope", format!("unknown scope {}", m.scope)))?;
            needs(!m.key.is_empty(), "memory.key", "a key")?;
            if opcode == IrOpcode::Store {
                needs(expression.is_some(), "expression", "the value to store")?;
            }
            memory = Some(Memory {
                scope,
                key: m.key.clone(),
                ttl: Duration::from_secs(if m.ttl_seconds == 0 {
                    3_600
                } else {
                    u64::from(m.ttl_seconds)
                }),
                default: parse_json(&m.default_json).map_err(|e| err("memory.default_json", e))?,
            });
        }
        IrOpcode::LoadResource | IrOpcode::CallAction => {
            needs(
                !dispatch.capability_id.is_empty(),
                "dispatch_metadata.capability_id",
                "a capability",
            )?;
            if opcode == IrOpcode::CallAction {
                needs(
                    !dispatch.action_name.is_empty(),
                    "dispatch_metadata.action_name",
                    "an action",
                )?;
            }
            let requirement = if dispatch.capability_version.is_empty() {
                requirements
                    .get(dispatch.capability_id.as_str())
                    .copied()
                    .unwrap_or("")
            } else {
                dispatch.capability_version.as_str()
            };
            capability_ref = Some(
                capability(&dispatch.capability_id, requirement)
                    .map_err(|m| err("dispatch_metadata.capability_version", m))?,
            );
        }
        IrOpcode::CallFunction => {
            function = Some(functions::lookup(&dispatch.action_name).ok_or_else(|| {
                err(
                    "dispatch_metadata.action_name",
                    format!(
                        "unknown function `{}`; the built-ins are: {}",
                        dispatch.action_name,
                        functions::names().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?);
        }
        IrOpcode::CallApi | IrOpcode::CallService => {
            let ok = ins.http.as_ref().is_some_and(|h| !h.url.is_empty());
            needs(ok, "http.url", "an HTTP call with a URL")?;
        }
        IrOpcode::LlmCall => {
            needs(
                !dispatch.model.is_empty(),
                "dispatch_metadata.model",
                "a model",
            )?;
            needs(
                !dispatch.prompt_template.is_empty(),
                "dispatch_metadata.prompt_template",
                "a prompt",
            )?;
            let mut slots = Vec::with_capacity(dispatch.dynamic_slots.len());
            for slot in &dispatch.dynamic_slots {
                let field = format!("dispatch_metadata.dynamic_slots.{}", slot.slot_id);
                let source = match slot.source_type.as_str() {
                    "vault" => SlotSource::Vault(slot.source_key.clone()),
                    "runtime" => {
                        let code = mcu.as_ref().map(|c| {
                            c.slots
                                .iter()
                                .find(|p| p.name == slot.slot_id)
                                .map_or(&[][..], |p| p.code.as_slice())
                        });
                        SlotSource::Runtime(
                            optional_expr(&slot.source_key, code)
                                .map_err(|m| err(&field, m))?
                                .ok_or_else(|| err(&field, "an empty source".to_owned()))?,
                        )
                    }
                    other => {
                        return Err(err(
                            &field,
                            format!("unknown source type `{other}`; expected vault or runtime"),
                        ));
                    }
                };
                slots.push((slot.slot_id.clone(), source));
            }
            llm = Some(Llm {
                model: dispatch.model.clone(),
                temperature: dispatch.temperature,
                max_tokens: u32::try_from(dispatch.max_tokens).unwrap_or(0),
                system_prompt: dispatch.system_prompt.clone(),
                prompt: dispatch.prompt_template.clone(),
                few_shot: dispatch
                    .few_shot_examples
                    .iter()
                    .map(|e| (e.input_json.clone(), e.output_json.clone()))
                    .collect(),
                slots,
                json_output: dispatch.output_format == "json" || !dispatch.output_schema.is_empty(),
            });
        }
        IrOpcode::EmitEvent => {
            let e = ins
                .emit
                .as_ref()
                .filter(|e| !e.topic.is_empty())
                .ok_or_else(|| err("emit.topic", "EMIT_EVENT needs a topic".to_owned()))?;
            emit = Some((
                e.topic.clone(),
                lowered("emit.key_expr", &e.key_expr, code(|c| &c.event_key))?,
            ));
        }
        IrOpcode::Merge | IrOpcode::Return | IrOpcode::Unspecified => {}
    }

    let postcondition = match &ins.postcondition {
        None => None,
        Some(p) => Some(Post {
            condition: Expr::compile(&p.condition)
                .map_err(|m| err("postcondition.condition", m))?,
            capability: capability(&p.read_capability_id, &p.read_capability_version)
                .map_err(|m| err("postcondition.read_capability_version", m))?,
            params: p
                .read_params
                .iter()
                .map(|(name, source)| {
                    Expr::compile(source)
                        .map(|e| (name.clone(), e))
                        .map_err(|m| err(&format!("postcondition.read_params.{name}"), m))
                })
                .collect::<Result<Vec<_>, _>>()?,
            deadline: Duration::from_millis(u64::from(p.deadline_ms.max(1))),
            poll: Duration::from_millis(u64::from(if p.poll_interval_ms == 0 {
                250
            } else {
                p.poll_interval_ms
            })),
        }),
    };
    let value = ins
        .fallback
        .as_ref()
        .map(|f| parse_json(&f.value_json))
        .transpose()
        .map_err(|e| err("fallback.value_json", e))?
        .unwrap_or(Value::Null);
    Ok(Prepared {
        id: id.to_owned(),
        missing_permission: eyeflow_ir::opcode::missing(ins),
        opcode,
        output: if ins.output_var.is_empty() {
            id.to_owned()
        } else {
            ins.output_var.clone()
        },
        sequence: ins.sequence_number,
        deps,
        branch_parents: Vec::new(),
        expression,
        condition,
        branch_true,
        branch_false,
        params,
        looping,
        memory,
        capability: capability_ref,
        action: dispatch.action_name.clone(),
        function,
        http: ins.http.clone(),
        target_service: dispatch.target_service.clone(),
        secret: dispatch.vault_secret_key.clone(),
        emit,
        input_schema: schema(&dispatch.input_schema)
            .map_err(|m| err("dispatch_metadata.input_schema", m))?,
        output_schema: schema(&dispatch.output_schema)
            .map_err(|m| err("dispatch_metadata.output_schema", m))?,
        llm,
        postcondition,
        time_window: ins.time_window.clone(),
        compensation,
        priority: ins
            .priority_policy
            .as_ref()
            .map_or(default_priority, Priority::from_policy),
        policy: Policy::new(ins, value),
        timeout: ins
            .timeout
            .as_ref()
            .filter(|t| t.execution_timeout_ms > 0)
            .map(|t| Duration::from_millis(u64::from(t.execution_timeout_ms))),
        resource_key: ins.resource_key.clone(),
        requires_validation: dispatch.requires_human_validation,
        on_device,
    })
}
