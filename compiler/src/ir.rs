//! Phase 5, IR: writes the checked and bound rule as an unsigned [`LlmIrProgram`]. Every map
//! is a `BTreeMap` and every list follows the source or a sorted order, so the same source and
//! options give the same bytes.

use std::collections::BTreeMap;

use eyeflow_ir::pb::{
    CapabilityRequirement, DispatchMetadata, ErrorClass, EventEmit, EventTrigger, FallbackConfig,
    FallbackStrategy, HttpCall, IrInstruction, IrOpcode, LlmIrProgram, LoopConfig, MemoryAccess,
    MemoryScope, PermissionFlags, Postcondition, PriorityPolicy, ProgramMetadata, RetryConfig,
    TimeWindow, TimeoutConfig, TriggerKind,
};
use marked_yaml::Spanned;
use sha2::{Digest, Sha256};

use crate::CompileOptions;
use crate::ast::{self, Instruction, Rule, Text};
use crate::bind::{self, text};
use crate::check::{json, positive};
use crate::dag::Dag;
use crate::error::{Result, Source};
use crate::opcode::Spec;

/// Fallback strategy names.
const STRATEGIES: [(&str, FallbackStrategy); 5] = [
    ("retry", FallbackStrategy::Retry),
    ("value", FallbackStrategy::FallbackValue),
    ("model", FallbackStrategy::FallbackModel),
    ("skip", FallbackStrategy::Skip),
    ("abort", FallbackStrategy::Abort),
];

/// Error class names (`retry.on`, `fallback.on`).
const ERROR_CLASSES: [(&str, ErrorClass); 12] = [
    ("timeout", ErrorClass::Timeout),
    ("unavailable", ErrorClass::Unavailable),
    ("rate_limit", ErrorClass::RateLimit),
    ("model_unavailable", ErrorClass::ModelUnavailable),
    ("invalid_input", ErrorClass::InvalidInput),
    ("invalid_output", ErrorClass::InvalidOutput),
    ("denied", ErrorClass::Denied),
    ("resource_timeout", ErrorClass::ResourceTimeout),
    ("postcondition_failed", ErrorClass::PostconditionFailed),
    ("outside_time_window", ErrorClass::OutsideTimeWindow),
    ("internal", ErrorClass::Internal),
    ("resource_exhausted", ErrorClass::ResourceExhausted),
];

/// Memory scope names.
const SCOPES: [(&str, MemoryScope); 3] = [
    ("execution", MemoryScope::Execution),
    ("node", MemoryScope::Node),
    ("cluster", MemoryScope::Cluster),
];

/// Trigger kind names.
const TRIGGER_KINDS: [(&str, TriggerKind); 7] = [
    ("webhook", TriggerKind::Webhook),
    ("kafka", TriggerKind::Kafka),
    ("mqtt", TriggerKind::Mqtt),
    ("timer", TriggerKind::Timer),
    ("cron", TriggerKind::Cron),
    ("plugin", TriggerKind::Plugin),
    ("manual", TriggerKind::Manual),
];

/// Weekday names, Monday first (ISO 1..7).
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Looks `name` up in a name table, or says which names exist.
fn lookup<T: Copy>(source: &Source<'_>, table: &[(&str, T)], name: &Text, what: &str) -> Result<T> {
    table
        .iter()
        .find(|(n, _)| *n == name.as_str())
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            source.rule(
                name.span(),
                format!(
                    "unknown {what} `{}`; expected one of: {}",
                    name.as_str(),
                    names.join(", ")
                ),
            )
        })
}

/// Builds the unsigned program.
pub(crate) fn program(
    rule: &Rule,
    specs: &[&Spec],
    dag: &Dag,
    options: &CompileOptions,
    source: &Source<'_>,
) -> Result<LlmIrProgram> {
    let default_priority = bind::default_priority(rule, source)?;
    let mut instructions = Vec::with_capacity(rule.instructions.len());
    for (i, (ins, spec)) in rule.instructions.iter().zip(specs).enumerate() {
        instructions.push(instruction(
            i,
            ins,
            spec.opcode,
            rule,
            dag,
            &default_priority,
            source,
        )?);
    }
    let mut triggers = Vec::with_capacity(rule.triggers.len());
    for trigger in &rule.triggers {
        triggers.push(event_trigger(trigger, source)?);
    }
    Ok(LlmIrProgram {
        program_id: rule.id.to_string(),
        name: rule
            .name
            .as_ref()
            .map_or_else(|| rule.id.to_string(), |n| n.to_string()),
        version: rule.version.to_string(),
        compiled_at: options.compiled_at,
        compiled_by: options.compiled_by.clone(),
        signature: Vec::new(),
        ir_version: eyeflow_ir::IR_VERSION.to_owned(),
        instructions,
        metadata: Some(ProgramMetadata {
            description: text(&rule.description),
            source_name: options.source_name.clone(),
            source_sha256: hex::encode(Sha256::digest(source.text.as_bytes())),
            tags: rule.tags.iter().map(|t| t.to_string()).collect(),
            labels: rule
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            compiler_version: env!("CARGO_PKG_VERSION").to_owned(),
        }),
        signing_key_id: String::new(),
        required_capabilities: rule
            .requires
            .iter()
            .map(|(id, req)| CapabilityRequirement {
                capability_id: id.clone(),
                version_req: req.to_string(),
            })
            .collect(),
        triggers,
        default_priority: Some(default_priority),
        // The MCU profile is chosen by the caller (`--target mcu`), which lowers the
        // expressions to bytecode after these checks.
        target: eyeflow_ir::pb::Target::Server as i32,
    })
}

fn event_trigger(trigger: &Spanned<ast::Trigger>, source: &Source<'_>) -> Result<EventTrigger> {
    let kind = lookup(source, &TRIGGER_KINDS, &trigger.kind, "trigger kind")?;
    let name = trigger.kind.as_str();
    let needs = |field: &str, what: &str| {
        source.rule(
            trigger.span(),
            format!("{name} trigger has no `{field}`; expected {what}"),
        )
    };
    match kind {
        TriggerKind::Webhook | TriggerKind::Kafka | TriggerKind::Mqtt | TriggerKind::Plugin
            if trigger.source.as_ref().is_none_or(|s| s.trim().is_empty()) =>
        {
            return Err(needs(
                "source",
                "the webhook source, topic or plugin source id",
            ));
        }
        TriggerKind::Timer if trigger.interval_ms.is_none() => {
            return Err(needs("interval_ms", "the interval in milliseconds"));
        }
        TriggerKind::Cron => match &trigger.cron {
            None => return Err(needs("cron", "a cron expression")),
            Some(cron) if !(5..=7).contains(&cron.split_whitespace().count()) => {
                return Err(source.rule(
                    cron.span(),
                    format!(
                        "cron expression `{}` has {} fields; expected 5 to 7 fields",
                        cron.as_str(),
                        cron.split_whitespace().count()
                    ),
                ));
            }
            Some(_) => {}
        },
        _ => {}
    }
    let interval_ms = match &trigger.interval_ms {
        Some(ms) => u64::from(positive(source, ms, "trigger interval_ms")?),
        None => 0,
    };
    Ok(EventTrigger {
        kind: kind as i32,
        source: text(&trigger.source),
        filter: text(&trigger.filter),
        interval_ms,
        cron: text(&trigger.cron),
        key_expr: text(&trigger.key),
    })
}

fn instruction(
    i: usize,
    ins: &Spanned<Instruction>,
    opcode: IrOpcode,
    rule: &Rule,
    dag: &Dag,
    default_priority: &PriorityPolicy,
    source: &Source<'_>,
) -> Result<IrInstruction> {
    let id = ins.id.as_str();
    let retry = ins.retry.as_ref().map(|r| retry(r, source)).transpose()?;
    let fallback = ins
        .fallback
        .as_ref()
        .map(|f| fallback(f, opcode, id, source))
        .transpose()?;
    let timeout = match &ins.timeout_ms {
        Some(ms) => Some(TimeoutConfig {
            execution_timeout_ms: positive(source, ms, &format!("timeout_ms of `{id}`"))?,
            on_timeout: match &ins.on_timeout {
                Some(name) => lookup(source, &STRATEGIES, name, "timeout strategy")? as i32,
                None => FallbackStrategy::Abort as i32,
            },
        }),
        None => match &ins.on_timeout {
            Some(name) => {
                return Err(source.rule(
                    name.span(),
                    format!("`{id}` has `on_timeout` but no `timeout_ms`; expected a timeout_ms"),
                ));
            }
            None => None,
        },
    };
    let mut dispatch = dispatch(ins, opcode, rule, source)?;
    if let Some(d) = &mut dispatch {
        d.max_retries = retry
            .as_ref()
            .map_or(0, |r| r.max_retries.min(i32::MAX as u32) as i32);
        d.timeout_ms = timeout
            .as_ref()
            .map_or(0, |t| t.execution_timeout_ms.min(i32::MAX as u32) as i32);
    }
    let memory = ins
        .scope
        .as_ref()
        .map(|scope| memory(ins, scope, source))
        .transpose()?;
    let mut built = IrInstruction {
        instruction_id: id.to_owned(),
        opcode: opcode as i32,
        comment: text(&ins.comment),
        dispatch_metadata: dispatch,
        depends_on: dag.depends_on[i]
            .iter()
            .map(|&d| dag.id(d).to_owned())
            .collect(),
        fallback,
        retry,
        timeout,
        permissions: None,
        sequence_number: dag.sequence[i],
        is_parallel: dag.has_parallel_peer(i),
        branch_condition: text(&ins.condition),
        branch_true_id: text(&ins.then),
        branch_false_id: text(&ins.otherwise),
        priority_policy: bind::instruction_priority(ins, default_priority, source)?,
        r#loop: (opcode == IrOpcode::Loop).then(|| LoopConfig {
            max_iterations: ins
                .max_iterations
                .as_ref()
                .and_then(|m| u32::try_from(**m).ok())
                .unwrap_or(0),
            body: ins
                .body
                .as_ref()
                .map(|b| b.ids(b.span()).iter().map(|m| m.to_string()).collect())
                .unwrap_or_default(),
            items_expr: text(&ins.over),
            item_var: match (&ins.item, &ins.over) {
                (Some(item), _) => item.to_string(),
                (None, Some(_)) => "item".to_owned(),
                (None, None) => String::new(),
            },
            while_condition: text(&ins.while_condition),
        }),
        memory,
        resource_key: text(&ins.resource_key),
        time_window: ins
            .time_window
            .as_ref()
            .map(|w| time_window(w, source))
            .transpose()?,
        postcondition: ins
            .postcondition
            .as_ref()
            .map(|p| postcondition(p, rule, source))
            .transpose()?,
        compensation_ids: dag.compensation[i]
            .iter()
            .map(|&c| dag.id(c).to_owned())
            .collect(),
        expression: text(&ins.expression),
        params: ins
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        output_var: text(&ins.output),
        http: ins.http.as_ref().map(|h| HttpCall {
            method: h
                .method
                .as_ref()
                .map_or_else(|| "GET".to_owned(), |m| m.to_string()),
            url: h.url.to_string(),
            headers: h
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }),
        emit: ins.topic.as_ref().map(|topic| EventEmit {
            topic: topic.to_string(),
            key_expr: text(&ins.event_key),
        }),
        mcu: None,
    };
    // The permissions it needs, as the IR's opcode table says (the validator and the
    // executor check them against the same table).
    let needed = eyeflow_ir::opcode::needed(&built);
    built.permissions = (needed != PermissionFlags::default()).then_some(needed);
    Ok(built)
}

/// The dispatch metadata of instructions that call out (`None` for pure instructions).
fn dispatch(
    ins: &Instruction,
    opcode: IrOpcode,
    rule: &Rule,
    source: &Source<'_>,
) -> Result<Option<DispatchMetadata>> {
    let mut dispatch = if opcode == IrOpcode::LlmCall {
        bind::llm_context(ins, source)?
    } else {
        DispatchMetadata::default()
    };
    if let Some(capability) = &ins.capability {
        dispatch.capability_id = capability.to_string();
        dispatch.capability_version = rule
            .requires
            .get(capability.as_str())
            .map(|r| r.to_string())
            .unwrap_or_default();
    }
    dispatch.target_service = text(&ins.service);
    dispatch.action_name = match (&ins.action, &ins.function) {
        (Some(name), _) | (None, Some(name)) => name.to_string(),
        (None, None) => String::new(),
    };
    dispatch.input_schema = compact_json(&ins.input_schema, source)?;
    dispatch.output_schema = compact_json(&ins.output_schema, source)?;
    dispatch.vault_secret_key = text(&ins.secret);
    dispatch.requires_human_validation =
        ins.requires_human_validation.as_ref().is_some_and(|v| **v);
    Ok((dispatch != DispatchMetadata::default()).then_some(dispatch))
}

fn compact_json(value: &Option<Text>, source: &Source<'_>) -> Result<String> {
    match value {
        Some(text) => Ok(json(source, text, "schema")?.to_string()),
        None => Ok(String::new()),
    }
}

fn classes(source: &Source<'_>, names: &[Text]) -> Result<Vec<i32>> {
    names
        .iter()
        .map(|n| lookup(source, &ERROR_CLASSES, n, "error class").map(|c| c as i32))
        .collect()
}

fn retry(r: &Spanned<ast::Retry>, source: &Source<'_>) -> Result<RetryConfig> {
    let max_retries = u32::try_from(*r.max_retries)
        .ok()
        .filter(|n| *n <= 100)
        .ok_or_else(|| {
            source.rule(
                r.max_retries.span(),
                format!("max_retries is {}; expected 0 to 100", *r.max_retries),
            )
        })?;
    let multiplier = match &r.multiplier {
        Some(m) if m.is_finite() && **m >= 1.0 => **m,
        Some(m) => {
            return Err(source.rule(
                m.span(),
                format!("retry multiplier is {}; expected a number >= 1", **m),
            ));
        }
        None => 2.0,
    };
    let backoff_ms = match &r.backoff_ms {
        Some(ms) => positive(source, ms, "retry backoff_ms")?,
        None => 100,
    };
    let max_backoff_ms = match &r.max_backoff_ms {
        Some(ms) => positive(source, ms, "retry max_backoff_ms")?,
        None => backoff_ms.saturating_mul(10),
    };
    Ok(RetryConfig {
        max_retries,
        backoff_ms,
        backoff_multiplier: multiplier,
        max_backoff_ms,
        retry_on: classes(source, &r.on)?,
    })
}

fn fallback(
    f: &Spanned<ast::Fallback>,
    opcode: IrOpcode,
    id: &str,
    source: &Source<'_>,
) -> Result<FallbackConfig> {
    let strategy = lookup(source, &STRATEGIES, &f.strategy, "fallback strategy")?;
    let mut config = FallbackConfig {
        strategy: strategy as i32,
        on_errors: classes(source, &f.on)?,
        ..Default::default()
    };
    match strategy {
        FallbackStrategy::FallbackValue => match &f.value {
            Some(value) => {
                config.value_json =
                    json(source, value, &format!("fallback value of `{id}`"))?.to_string();
            }
            None => {
                return Err(source.rule(
                    f.span(),
                    format!(
                        "fallback `value` of `{id}` has no `value`; expected the value as JSON"
                    ),
                ));
            }
        },
        FallbackStrategy::FallbackModel => {
            if opcode != IrOpcode::LlmCall {
                return Err(source.rule(
                    f.strategy.span(),
                    format!(
                        "fallback `model` of `{id}` applies only to LLM_CALL; expected retry, value, skip or abort for {}",
                        opcode.as_str_name()
                    ),
                ));
            }
            match &f.model {
                Some(model) if !model.trim().is_empty() => {
                    config.alternative_model = model.to_string()
                }
                _ => {
                    return Err(source.rule(
                        f.span(),
                        format!(
                            "FALLBACK_MODEL of `{id}` has no fallback model; expected `model: NAME` under `fallback`"
                        ),
                    ));
                }
            }
        }
        _ => {}
    }
    let stray = match strategy {
        FallbackStrategy::FallbackValue => f.model.as_ref().map(|m| ("model", m)),
        FallbackStrategy::FallbackModel => f.value.as_ref().map(|v| ("value", v)),
        _ => f
            .value
            .as_ref()
            .map(|v| ("value", v))
            .or(f.model.as_ref().map(|m| ("model", m))),
    };
    if let Some((field, value)) = stray {
        return Err(source.rule(
            value.span(),
            format!(
                "fallback `{field}` of `{id}` does not apply to strategy `{}`; expected it only with strategy `{field}`",
                f.strategy.as_str()
            ),
        ));
    }
    Ok(config)
}

fn memory(ins: &Instruction, scope: &Text, source: &Source<'_>) -> Result<MemoryAccess> {
    let scope_value = lookup(source, &SCOPES, scope, "memory scope")?;
    let ttl_seconds = match &ins.ttl_seconds {
        Some(ttl) if scope_value != MemoryScope::Node => {
            return Err(source.rule(
                ttl.span(),
                format!(
                    "ttl_seconds applies only to `node` scope, not `{}`; expected no ttl_seconds",
                    scope.as_str()
                ),
            ));
        }
        Some(ttl) => positive(source, ttl, "ttl_seconds")?,
        None => 0,
    };
    let default_json = match &ins.default {
        Some(value) => {
            json(source, value, &format!("default of `{}`", ins.id.as_str()))?.to_string()
        }
        None => String::new(),
    };
    Ok(MemoryAccess {
        scope: scope_value as i32,
        key: text(&ins.key),
        ttl_seconds,
        default_json,
    })
}

fn minute_of_day(source: &Source<'_>, value: &Text) -> Result<u32> {
    let parsed = value.split_once(':').and_then(|(h, m)| {
        let digits = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_digit());
        if !(digits(h, 1) || digits(h, 2)) || !digits(m, 2) {
            return None;
        }
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    });
    parsed.ok_or_else(|| {
        source.rule(
            value.span(),
            format!(
                "time `{}` is not HH:MM; expected a time such as 06:30",
                value.as_str()
            ),
        )
    })
}

fn time_window(w: &Spanned<ast::TimeWindow>, source: &Source<'_>) -> Result<TimeWindow> {
    let start_minute = minute_of_day(source, &w.start)?;
    let end_minute = minute_of_day(source, &w.end)?;
    if start_minute == end_minute {
        return Err(source.rule(
            w.end.span(),
            "time window starts and ends at the same time; expected different times",
        ));
    }
    let utc_offset_minutes = match &w.utc_offset_minutes {
        Some(offset) => i32::try_from(**offset)
            .ok()
            .filter(|o| o.abs() <= 14 * 60)
            .ok_or_else(|| {
                source.rule(
                    offset.span(),
                    format!("utc_offset_minutes is {}; expected -840 to 840", **offset),
                )
            })?,
        None => 0,
    };
    let mut weekdays = Vec::with_capacity(w.weekdays.len());
    for day in &w.weekdays {
        let lower = day.to_ascii_lowercase();
        let iso = WEEKDAYS
            .iter()
            .position(|d| *d == lower)
            .map(|p| p as u32 + 1)
            .or_else(|| lower.parse::<u32>().ok().filter(|d| (1..=7).contains(d)))
            .ok_or_else(|| {
                source.rule(
                    day.span(),
                    format!(
                        "weekday `{}` is unknown; expected mon, tue, wed, thu, fri, sat, sun or 1 to 7",
                        day.as_str()
                    ),
                )
            })?;
        weekdays.push(iso);
    }
    weekdays.sort_unstable();
    weekdays.dedup();
    Ok(TimeWindow {
        start_minute,
        end_minute,
        utc_offset_minutes,
        weekdays,
    })
}

fn postcondition(
    p: &Spanned<ast::Postcondition>,
    rule: &Rule,
    source: &Source<'_>,
) -> Result<Postcondition> {
    Ok(Postcondition {
        condition: p.condition.to_string(),
        read_capability_id: p.capability.to_string(),
        read_capability_version: rule
            .requires
            .get(p.capability.as_str())
            .map(|r| r.to_string())
            .unwrap_or_default(),
        read_params: p
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        deadline_ms: positive(source, &p.deadline_ms, "postcondition deadline_ms")?,
        poll_interval_ms: match &p.poll_interval_ms {
            Some(ms) => positive(source, ms, "postcondition poll_interval_ms")?,
            None => 0,
        },
    })
}
