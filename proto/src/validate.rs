//! Structural validation of a decoded program, before any of it runs: unique ids,
//! references that resolve, an acyclic graph whose repetition is bounded LOOPs (flow enters
//! and leaves a LOOP's body only through the LOOP), an entry, valid
//! priorities, positive timeouts, and the fields each opcode needs. Program ids and
//! versions follow a strict grammar ([`check_program_id`], [`check_program_version`]) because
//! runtimes use them as keys and in messages; they never become file names.

use std::collections::HashMap;

use crate::pb::{
    FallbackStrategy, IrInstruction, IrOpcode, LlmIrProgram, MemoryScope, PriorityPolicy, Target,
    TriggerKind,
};
use crate::{Error, Result};

/// The five priority levels (CRITICAL, HIGH, NORMAL, LOW, BACKGROUND).
pub const PRIORITY_LEVELS: [i32; 5] = [0, 64, 128, 192, 255];

/// Validates the program's structure; returns the first refusal found.
/// A program whose `target` is the MCU profile also passes [`crate::mcu::check`].
pub fn validate(program: &LlmIrProgram) -> Result<()> {
    validate_header(program)?;
    let index = index_ids(program)?;
    for instruction in &program.instructions {
        validate_instruction(instruction, &index, program)?;
    }
    let entry = check_regions(program, &index)?;
    // A cycle is named before the missing entry it would cause.
    check_acyclic(program, &index)?;
    if !entry {
        return Err(program_field(
            "instructions",
            "have no entry: every top-level instruction depends on another or is a BRANCH's \
             target",
        ));
    }
    match Target::try_from(program.target) {
        Ok(Target::Server) => Ok(()),
        Ok(Target::Mcu) => crate::mcu::check(program).map_err(Error::McuProfile),
        Err(_) => Err(program_field(
            "target",
            format!(
                "has unknown value {}; expected TARGET_SERVER or TARGET_MCU",
                program.target
            ),
        )),
    }
}

/// Longest program id, in bytes.
pub const MAX_PROGRAM_ID_LEN: usize = 63;

/// Longest program version, in bytes.
pub const MAX_PROGRAM_VERSION_LEN: usize = 64;

/// Checks a program id: 1 to [`MAX_PROGRAM_ID_LEN`] characters among `a-z`, `0-9`, `-`,
/// `_` and `.`, starting with a letter or a digit, without `..`. So an id is never a path
/// (no `/`, no backslash, not absolute, no parent step), never hidden, and reads the same
/// on every file system. Returns what is wrong and what is expected.
pub fn check_program_id(id: &str) -> std::result::Result<(), String> {
    const EXPECTED: &str = "expected 1 to 63 characters among a-z, 0-9, '-', '_' and '.', starting with a letter or a digit, without \"..\" (such as `valve-guard`)";
    if id.is_empty() {
        return Err(format!("is empty; {EXPECTED}"));
    }
    if id.len() > MAX_PROGRAM_ID_LEN {
        return Err(format!("is {} bytes long; {EXPECTED}", id.len()));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
    {
        return Err(format!(
            "\"{}\" has the character {bad:?}; {EXPECTED}",
            id.escape_debug()
        ));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "\"{id}\" does not start with a letter or a digit; {EXPECTED}"
        ));
    }
    if id.contains("..") {
        return Err(format!("\"{id}\" contains \"..\"; {EXPECTED}"));
    }
    Ok(())
}

/// Checks a program version: semantic versioning 2.0.0 `MAJOR.MINOR.PATCH` with an optional
/// pre-release (`1.0.0-rc.1`), no build metadata (`+...`, which semver ignores for
/// precedence, so two uploads would share one version), at most
/// [`MAX_PROGRAM_VERSION_LEN`] bytes. Returns the parsed version, or what is wrong and what
/// is expected.
pub fn check_program_version(version: &str) -> std::result::Result<semver::Version, String> {
    const EXPECTED: &str =
        "expected MAJOR.MINOR.PATCH with an optional pre-release, such as 1.0.0 or 1.1.0-rc.1";
    if version.len() > MAX_PROGRAM_VERSION_LEN {
        return Err(format!(
            "is {} bytes long, above {MAX_PROGRAM_VERSION_LEN}; {EXPECTED}",
            version.len()
        ));
    }
    let parsed = semver::Version::parse(version).map_err(|e| {
        format!(
            "\"{}\" is not semver ({e}); {EXPECTED}",
            version.escape_debug()
        )
    })?;
    if !parsed.build.is_empty() {
        return Err(format!("\"{version}\" has build metadata; {EXPECTED}"));
    }
    Ok(parsed)
}

fn program_field(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidProgramField {
        field,
        reason: reason.into(),
    }
}

fn validate_header(program: &LlmIrProgram) -> Result<()> {
    check_program_id(&program.program_id).map_err(|reason| program_field("program_id", reason))?;
    check_program_version(&program.version).map_err(|reason| program_field("version", reason))?;
    if program.instructions.is_empty() {
        return Err(program_field(
            "instructions",
            "is empty; a program needs at least one instruction",
        ));
    }
    if let Some(policy) = &program.default_priority {
        check_priority("<program>", "default_priority", policy)?;
    }
    for requirement in &program.required_capabilities {
        if requirement.capability_id.is_empty() {
            return Err(program_field(
                "required_capabilities",
                "has an entry with an empty capability_id",
            ));
        }
        semver::VersionReq::parse(&requirement.version_req).map_err(|e| {
            program_field(
                "required_capabilities",
                format!(
                    "capability \"{}\" has version requirement \"{}\" that is not semver: {e}",
                    requirement.capability_id, requirement.version_req
                ),
            )
        })?;
    }
    for trigger in &program.triggers {
        let kind = TriggerKind::try_from(trigger.kind).unwrap_or(TriggerKind::Unspecified);
        let problem = match kind {
            TriggerKind::Unspecified => Some(format!("has unknown kind {}", trigger.kind)),
            TriggerKind::Timer if trigger.interval_ms == 0 => {
                Some("TIMER needs interval_ms > 0".into())
            }
            TriggerKind::Cron if trigger.cron.trim().is_empty() => {
                Some("CRON needs a cron expression".into())
            }
            TriggerKind::Webhook | TriggerKind::Kafka | TriggerKind::Mqtt | TriggerKind::Plugin
                if trigger.source.is_empty() =>
            {
                Some(format!("{} needs a source", kind.as_str_name()))
            }
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(program_field("triggers", problem));
        }
    }
    Ok(())
}

fn index_ids(program: &LlmIrProgram) -> Result<HashMap<&str, usize>> {
    let mut index = HashMap::with_capacity(program.instructions.len());
    for (i, instruction) in program.instructions.iter().enumerate() {
        let id = instruction.instruction_id.as_str();
        if id.is_empty() {
            return Err(Error::EmptyInstructionId { index: i });
        }
        if index.insert(id, i).is_some() {
            return Err(Error::DuplicateInstructionId {
                instruction: id.to_owned(),
            });
        }
    }
    Ok(index)
}

fn check_priority(instruction: &str, field: &'static str, policy: &PriorityPolicy) -> Result<()> {
    if !PRIORITY_LEVELS.contains(&policy.priority_level) {
        return Err(Error::InvalidPriority {
            instruction: instruction.to_owned(),
            field,
            value: policy.priority_level,
        });
    }
    positive(
        instruction,
        "priority_policy.max_wait_ms",
        i64::from(policy.max_wait_ms),
    )
}

fn positive(instruction: &str, field: &'static str, value: i64) -> Result<()> {
    if value > 0 {
        Ok(())
    } else {
        Err(Error::NonPositiveTimeout {
            instruction: instruction.to_owned(),
            field,
            value,
        })
    }
}

fn invalid(instruction: &str, field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidField {
        instruction: instruction.to_owned(),
        field,
        reason: reason.into(),
    }
}

fn validate_instruction(
    ins: &IrInstruction,
    index: &HashMap<&str, usize>,
    program: &LlmIrProgram,
) -> Result<()> {
    let id = ins.instruction_id.as_str();
    let opcode = match IrOpcode::try_from(ins.opcode) {
        Ok(IrOpcode::Unspecified) | Err(_) => {
            return Err(Error::UnknownOpcode {
                instruction: id.to_owned(),
                value: ins.opcode,
            });
        }
        Ok(op) => op,
    };
    let name = opcode.as_str_name();
    let exists = |field: &'static str, target: &str| -> Result<()> {
        if index.contains_key(target) {
            Ok(())
        } else {
            Err(Error::UnknownTarget {
                instruction: id.to_owned(),
                field,
                target: target.to_owned(),
            })
        }
    };
    let missing = |field: &'static str| Error::MissingField {
        instruction: id.to_owned(),
        opcode: name,
        field,
    };

    for dep in &ins.depends_on {
        exists("depends_on", dep)?;
        if dep == id {
            return Err(Error::Cycle {
                instruction: id.to_owned(),
                path: format!("{id} -> {id}"),
            });
        }
    }
    for target in &ins.compensation_ids {
        exists("compensation_ids", target)?;
    }
    if let Some(policy) = &ins.priority_policy {
        check_priority(id, "priority_policy.priority_level", policy)?;
    }
    if let Some(timeout) = &ins.timeout {
        positive(
            id,
            "timeout.execution_timeout_ms",
            i64::from(timeout.execution_timeout_ms),
        )?;
    }
    if let Some(dispatch) = &ins.dispatch_metadata {
        if dispatch.timeout_ms < 0 {
            return Err(Error::NonPositiveTimeout {
                instruction: id.to_owned(),
                field: "dispatch_metadata.timeout_ms",
                value: i64::from(dispatch.timeout_ms),
            });
        }
        if !(dispatch.temperature.is_finite() && (0.0..=2.0).contains(&dispatch.temperature)) {
            return Err(invalid(
                id,
                "dispatch_metadata.temperature",
                format!("is {}; expected 0.0 to 2.0", dispatch.temperature),
            ));
        }
        if dispatch.max_tokens < 0 {
            return Err(invalid(id, "dispatch_metadata.max_tokens", "is negative"));
        }
        if !dispatch.capability_version.is_empty() {
            semver::VersionReq::parse(&dispatch.capability_version).map_err(|e| {
                invalid(
                    id,
                    "dispatch_metadata.capability_version",
                    format!("is not a semver requirement: {e}"),
                )
            })?;
        }
        if !dispatch.capability_id.is_empty()
            && !program
                .required_capabilities
                .iter()
                .any(|r| r.capability_id == dispatch.capability_id)
        {
            return Err(invalid(
                id,
                "dispatch_metadata.capability_id",
                format!(
                    "names \"{}\", which is not in the program's required_capabilities",
                    dispatch.capability_id
                ),
            ));
        }
        for slot in &dispatch.dynamic_slots {
            if slot.source_type != "vault" && slot.source_type != "runtime" {
                return Err(invalid(
                    id,
                    "dispatch_metadata.dynamic_slots.source_type",
                    format!(
                        "is \"{}\"; expected \"vault\" or \"runtime\"",
                        slot.source_type
                    ),
                ));
            }
        }
    }
    if let Some(retry) = &ins.retry
        && retry.max_retries > 0
        && !(retry.backoff_multiplier.is_finite() && retry.backoff_multiplier >= 1.0)
    {
        return Err(invalid(
            id,
            "retry.backoff_multiplier",
            format!(
                "is {}; expected a finite number >= 1",
                retry.backoff_multiplier
            ),
        ));
    }
    if let Some(fallback) = &ins.fallback {
        match FallbackStrategy::try_from(fallback.strategy) {
            Ok(FallbackStrategy::FallbackValue) => {
                serde_json::from_str::<serde_json::Value>(&fallback.value_json)
                    .map_err(|e| invalid(id, "fallback.value_json", format!("is not JSON: {e}")))?;
            }
            Ok(FallbackStrategy::FallbackModel) if fallback.alternative_model.is_empty() => {
                return Err(invalid(
                    id,
                    "fallback.alternative_model",
                    "is empty; FALLBACK_MODEL needs a model",
                ));
            }
            Ok(FallbackStrategy::Unspecified) | Err(_) => {
                return Err(invalid(
                    id,
                    "fallback.strategy",
                    format!("has unknown value {}", fallback.strategy),
                ));
            }
            _ => {}
        }
    }
    if let Some(window) = &ins.time_window {
        if window.start_minute >= 1440
            || window.end_minute >= 1440
            || window.start_minute == window.end_minute
        {
            return Err(invalid(
                id,
                "time_window",
                "needs start and end minutes below 1440 that differ",
            ));
        }
        if window.utc_offset_minutes.abs() > 14 * 60 {
            return Err(invalid(
                id,
                "time_window.utc_offset_minutes",
                "is beyond ±14 hours",
            ));
        }
        if window.weekdays.iter().any(|d| !(1..=7).contains(d)) {
            return Err(invalid(
                id,
                "time_window.weekdays",
                "must hold ISO weekdays 1 (Monday) to 7 (Sunday)",
            ));
        }
    }
    if let Some(post) = &ins.postcondition {
        if post.condition.trim().is_empty() {
            return Err(invalid(id, "postcondition.condition", "is empty"));
        }
        positive(id, "postcondition.deadline_ms", i64::from(post.deadline_ms))?;
    }

    if opcode == IrOpcode::Loop
        && ins
            .r#loop
            .as_ref()
            .is_none_or(|config| config.max_iterations == 0)
    {
        return Err(Error::UnboundedLoop {
            instruction: id.to_owned(),
        });
    }
    // What every opcode needs, from the opcode table.
    if let Some(row) = crate::opcode::spec(opcode)
        && let Some(field) = row.required.iter().find(|f| !f.present(ins))
    {
        return Err(missing(field.name()));
    }
    if let Some(permission) = crate::opcode::missing(ins) {
        return Err(Error::MissingPermission {
            instruction: id.to_owned(),
            opcode: name,
            permission: permission.name(),
        });
    }
    // What the table cannot say: references, counts and domains.
    match opcode {
        IrOpcode::Branch => {
            exists("branch_true_id", &ins.branch_true_id)?;
            if !ins.branch_false_id.is_empty() {
                exists("branch_false_id", &ins.branch_false_id)?;
            }
        }
        IrOpcode::Merge if ins.depends_on.len() < 2 => {
            return Err(invalid(
                id,
                "depends_on",
                "of a MERGE must name at least two instructions",
            ));
        }
        IrOpcode::Loop => {
            for member in ins.r#loop.iter().flat_map(|config| &config.body) {
                exists("loop.body", member)?;
                if member == id {
                    return Err(invalid(id, "loop.body", "cannot contain the LOOP itself"));
                }
            }
        }
        IrOpcode::Store | IrOpcode::Load => {
            if let Some(memory) = &ins.memory
                && !matches!(
                    MemoryScope::try_from(memory.scope),
                    Ok(MemoryScope::Execution | MemoryScope::Node | MemoryScope::Cluster)
                )
            {
                return Err(invalid(
                    id,
                    "memory.scope",
                    format!(
                        "has unknown value {}; expected EXECUTION, NODE or CLUSTER",
                        memory.scope
                    ),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The flow regions: the top level (every instruction in no LOOP's body and no compensation
/// list) and each LOOP's body. A region runs on its own — the top level once, a body once per
/// iteration — so each member's dependencies and the BRANCHes leading to it must lie in its
/// region (a LOOP waits for what runs before it, never for its own body: its iterations are
/// its own). The executor and the firmware read programs by these regions. Returns whether
/// the top level has an entry: an instruction that depends on nothing and that no BRANCH
/// leads to.
fn check_regions(program: &LlmIrProgram, index: &HashMap<&str, usize>) -> Result<bool> {
    let instructions = &program.instructions;
    let resolved = |ids: &'_ [String]| -> Vec<usize> {
        ids.iter()
            .filter_map(|id| index.get(id.as_str()).copied())
            .collect()
    };
    let body = |ins: &IrInstruction| -> Vec<usize> {
        ins.r#loop
            .as_ref()
            .map_or_else(Vec::new, |config| resolved(&config.body))
    };
    let mut nested = vec![false; instructions.len()];
    for ins in instructions {
        for member in body(ins).into_iter().chain(resolved(&ins.compensation_ids)) {
            nested[member] = true;
        }
    }
    let top: Vec<usize> = (0..instructions.len()).filter(|&i| !nested[i]).collect();
    let mut regions = vec![(None, top)];
    regions.extend(
        instructions
            .iter()
            .filter(|ins| ins.r#loop.is_some())
            .map(|ins| (Some(ins.instruction_id.as_str()), body(ins))),
    );
    // BRANCH → each of its arms, with the arm's field.
    let mut parents: Vec<Vec<(usize, &'static str)>> = vec![Vec::new(); instructions.len()];
    for (p, ins) in instructions.iter().enumerate() {
        for (field, target) in [
            ("branch_true_id", &ins.branch_true_id),
            ("branch_false_id", &ins.branch_false_id),
        ] {
            if let Some(&to) = index.get(target.as_str()) {
                parents[to].push((p, field));
            }
        }
    }
    for (looping, region) in &regions {
        let name = || {
            looping.map_or("the top level".to_owned(), |l| {
                format!("the body of LOOP `{l}`")
            })
        };
        for &m in region {
            let ins = &instructions[m];
            let outside = ins
                .depends_on
                .iter()
                .find(|dep| index.get(dep.as_str()).is_some_and(|d| !region.contains(d)));
            if let Some(dep) = outside {
                return Err(invalid(
                    &ins.instruction_id,
                    "depends_on",
                    format!(
                        "names `{dep}`, which is not in its flow region ({}): flow enters and \
                         leaves a LOOP's body only through the LOOP",
                        name()
                    ),
                ));
            }
            if let Some(&(p, field)) = parents[m].iter().find(|(p, _)| !region.contains(p)) {
                return Err(invalid(
                    &instructions[p].instruction_id,
                    field,
                    format!(
                        "leads to `{}`, which is in another flow region ({}): flow enters and \
                         leaves a LOOP's body only through the LOOP",
                        ins.instruction_id,
                        name()
                    ),
                ));
            }
        }
    }
    Ok(regions[0]
        .1
        .iter()
        .any(|&m| instructions[m].depends_on.is_empty() && parents[m].is_empty()))
}

/// Edges: dependency -> dependent, BRANCH -> targets, LOOP -> body members. A cycle is
/// refused with its path (repetition is a LOOP's body, which [`check_regions`] keeps apart).
fn check_acyclic(program: &LlmIrProgram, index: &HashMap<&str, usize>) -> Result<()> {
    let n = program.instructions.len();
    let mut successors: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ins) in program.instructions.iter().enumerate() {
        for dep in &ins.depends_on {
            if let Some(&from) = index.get(dep.as_str()) {
                successors[from].push(i);
            }
        }
        for target in [&ins.branch_true_id, &ins.branch_false_id] {
            if let Some(&to) = index.get(target.as_str()) {
                successors[i].push(to);
            }
        }
        for member in ins.r#loop.iter().flat_map(|config| &config.body) {
            if let Some(&to) = index.get(member.as_str()) {
                successors[i].push(to);
            }
        }
    }
    // Iterative DFS with colours; on a grey successor, report the path back to it.
    const WHITE: u8 = 0;
    const GREY: u8 = 1;
    const BLACK: u8 = 2;
    let mut colour = vec![WHITE; n];
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..n {
        if colour[start] != WHITE {
            continue;
        }
        colour[start] = GREY;
        stack.push((start, 0));
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&succ) = successors[node].get(*next) {
                *next += 1;
                match colour[succ] {
                    WHITE => {
                        colour[succ] = GREY;
                        stack.push((succ, 0));
                    }
                    GREY => {
                        let from = stack.iter().position(|&(s, _)| s == succ).unwrap_or(0);
                        let mut path: Vec<&str> = stack[from..]
                            .iter()
                            .map(|&(s, _)| program.instructions[s].instruction_id.as_str())
                            .collect();
                        path.push(program.instructions[succ].instruction_id.as_str());
                        return Err(Error::Cycle {
                            instruction: program.instructions[succ].instruction_id.clone(),
                            path: path.join(" -> "),
                        });
                    }
                    _ => {}
                }
            } else {
                colour[node] = BLACK;
                stack.pop();
            }
        }
    }
    Ok(())
}
