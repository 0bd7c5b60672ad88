//! Phase 3, checks: what the shape and the graph cannot say. Semver requirements, declared
//! capabilities, CEL expressions, loop bounds, JSON schemas and few-shot examples, prompt
//! slots, HTTP requests, and side effects on one resource key in parallel branches.

use std::collections::BTreeMap;

use eyeflow_ir::pb::IrOpcode;
use marked_yaml::Spanned;
use serde_json::Value;

use crate::ast::{Instruction, Rule, Text};
use crate::cel;
use crate::dag::{Dag, is_identifier};
use crate::error::{Result, Source};
use crate::opcode::Spec;

/// Largest `max_iterations` a LOOP may declare.
pub(crate) const MAX_ITERATIONS: i64 = 10_000;

/// HTTP methods a CALL_API / CALL_SERVICE may use.
const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// Runs every check on a rule whose opcodes and graph are resolved.
pub(crate) fn check(rule: &Rule, specs: &[&Spec], dag: &Dag, source: &Source<'_>) -> Result<()> {
    header(rule, source)?;
    for (ins, spec) in rule.instructions.iter().zip(specs) {
        instruction(rule, ins, spec.opcode, source)?;
    }
    result_names(rule, source)?;
    resources(rule, specs, dag, source)
}

fn header(rule: &Rule, source: &Source<'_>) -> Result<()> {
    eyeflow_ir::validate::check_program_id(&rule.id)
        .map_err(|reason| source.rule(rule.id.span(), format!("rule id {reason}")))?;
    eyeflow_ir::validate::check_program_version(&rule.version)
        .map_err(|reason| source.rule(rule.version.span(), format!("version {reason}")))?;
    for (capability, requirement) in &rule.requires {
        if capability.trim().is_empty() {
            return Err(source.rule(
                requirement.span(),
                "`requires` has an empty capability id; expected a capability id such as `valve-sim`",
            ));
        }
        semver::VersionReq::parse(requirement).map_err(|e| {
            source.rule(
                requirement.span(),
                format!(
                    "capability `{capability}` has version requirement `{}` that is not semver ({e}); expected a requirement such as ^1.0 or \">=1.2, <2\"",
                    requirement.as_str()
                ),
            )
        })?;
    }
    for trigger in &rule.triggers {
        for (what, expr) in [
            ("trigger filter", &trigger.filter),
            ("trigger key", &trigger.key),
        ] {
            if let Some(expr) = expr {
                cel::check(source, expr, what)?;
            }
        }
    }
    Ok(())
}

fn instruction(
    rule: &Rule,
    ins: &Spanned<Instruction>,
    opcode: IrOpcode,
    source: &Source<'_>,
) -> Result<()> {
    let id = ins.id.as_str();
    let name = opcode.as_str_name();
    let declared = |capability: &Text| -> Result<()> {
        if rule.requires.contains_key(capability.as_str()) {
            return Ok(());
        }
        let known: Vec<&str> = rule.requires.keys().map(String::as_str).collect();
        Err(source.rule(
            capability.span(),
            format!(
                "capability `{}` used by `{id}` is not declared in `requires`; expected one of [{}] or an entry `{}: ^1.0` under `requires`",
                capability.as_str(),
                known.join(", "),
                capability.as_str()
            ),
        ))
    };
    if let Some(capability) = &ins.capability {
        declared(capability)?;
    }
    if let Some(post) = &ins.postcondition {
        declared(&post.capability)?;
        cel::check(source, &post.condition, &format!("postcondition of `{id}`"))?;
        for (param, expr) in &post.params {
            cel::check(
                source,
                expr,
                &format!("postcondition parameter `{param}` of `{id}`"),
            )?;
        }
    }

    let expression_role = match opcode {
        IrOpcode::Eval => "value",
        IrOpcode::Return => "return value",
        IrOpcode::Store => "stored value",
        IrOpcode::EmitEvent => "event payload",
        _ => "request body",
    };
    let expressions = [
        (&ins.expression, format!("{name} `{id}` {expression_role}")),
        (&ins.condition, format!("BRANCH `{id}` condition")),
        (&ins.over, format!("LOOP `{id}` `over` list")),
        (
            &ins.while_condition,
            format!("LOOP `{id}` `while` condition"),
        ),
        (&ins.event_key, format!("EMIT_EVENT `{id}` event key")),
    ];
    for (expr, what) in expressions {
        if let Some(expr) = expr {
            cel::check(source, expr, &what)?;
        }
    }
    for (param, expr) in &ins.params {
        cel::check(source, expr, &format!("parameter `{param}` of `{id}`"))?;
    }

    if let Some(max) = &ins.max_iterations
        && !(1..=MAX_ITERATIONS).contains(&**max)
    {
        return Err(source.rule(
            max.span(),
            format!(
                "unbounded loop: LOOP `{id}` has max_iterations {}; expected a bound between 1 and {MAX_ITERATIONS}",
                **max
            ),
        ));
    }
    if let (Some(over), Some(_)) = (&ins.over, &ins.while_condition) {
        return Err(source.rule(
            over.span(),
            format!("LOOP `{id}` has both `over` and `while`; expected one of them (or neither, to repeat max_iterations times)"),
        ));
    }
    if let Some(item) = &ins.item {
        if ins.over.is_none() {
            return Err(source.rule(
                item.span(),
                format!("LOOP `{id}` names `as` without `over`; expected `over` with the list to iterate"),
            ));
        }
        identifier(source, item, "loop variable")?;
    }
    if let Some(output) = &ins.output {
        identifier(source, output, "output name")?;
    }
    if opcode == IrOpcode::EmitEvent
        && let (Some(expression), false) = (&ins.expression, ins.params.is_empty())
    {
        return Err(source.rule(
            expression.span(),
            format!(
                "EMIT_EVENT `{id}` has both `expression` and `params`; expected one payload: the expression's value, or the object of the named params"
            ),
        ));
    }
    // The connector is asked for the string param `key`, else `resource_key`, with the
    // params: with none of them it would be asked for the empty key and nothing else.
    if opcode == IrOpcode::LoadResource && ins.resource_key.is_none() && ins.params.is_empty() {
        return Err(source.rule(
            ins.span(),
            format!(
                "LOAD_RESOURCE `{id}` names nothing to read: it has no `resource_key` and no `params`; expected a `key` param (a CEL expression such as \"'sensor/boiler-1/pressure'\"), a `resource_key` such as `sensor/boiler-1/pressure`, or the params its connector reads by (such as `url`)"
            ),
        ));
    }
    if let Some(key) = &ins.resource_key
        && key.trim().is_empty()
    {
        return Err(source.rule(
            key.span(),
            format!("`{id}` has an empty resource_key; expected a key such as `valve/boiler-1`"),
        ));
    }
    for (field, value) in [
        ("function", &ins.function),
        ("action", &ins.action),
        ("service", &ins.service),
        ("topic", &ins.topic),
        ("key", &ins.key),
        ("model", &ins.model),
        ("prompt", &ins.prompt),
        ("secret", &ins.secret),
    ] {
        if let Some(value) = value
            && value.trim().is_empty()
        {
            return Err(source.rule(
                value.span(),
                format!("`{field}` of `{id}` is empty; expected a value"),
            ));
        }
    }
    if let Some(http) = &ins.http {
        let method = http.method.as_ref().map_or("GET", |m| m.as_str());
        if !HTTP_METHODS.contains(&method)
            && let Some(m) = &http.method
        {
            return Err(source.rule(
                m.span(),
                format!(
                    "HTTP method `{method}` of `{id}` is not supported; expected one of: {}",
                    HTTP_METHODS.join(", ")
                ),
            ));
        }
        if !(http.url.starts_with("https://") || http.url.starts_with("http://")) {
            return Err(source.rule(
                http.url.span(),
                format!(
                    "URL `{}` of `{id}` is not absolute; expected http:// or https://",
                    http.url.as_str()
                ),
            ));
        }
    }
    for (field, schema) in [
        ("input_schema", &ins.input_schema),
        ("output_schema", &ins.output_schema),
    ] {
        if let Some(schema) = schema {
            json_schema(source, schema, &format!("{field} of `{id}`"))?;
        }
    }
    llm_context(ins, source)
}

/// Few-shot examples, dynamic slots and the prompt placeholders of an LLM_CALL.
fn llm_context(ins: &Spanned<Instruction>, source: &Source<'_>) -> Result<()> {
    let id = ins.id.as_str();
    let schema = match &ins.output_schema {
        Some(text) => Some(json(source, text, &format!("output_schema of `{id}`"))?),
        None => None,
    };
    let required: Vec<&str> = schema
        .as_ref()
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (n, example) in ins.examples.iter().enumerate() {
        let what = format!("few-shot example {} of `{id}`", n + 1);
        json(source, &example.input, &format!("input of {what}"))?;
        let output = json(source, &example.output, &format!("output of {what}"))?;
        if let Some(missing) = required.iter().find(|k| output.get(**k).is_none()) {
            return Err(source.rule(
                example.output.span(),
                format!(
                    "output of {what} lacks `{missing}`, required by the output_schema; expected an output the schema accepts"
                ),
            ));
        }
    }
    if let Some(format) = &ins.output_format
        && !matches!(format.as_str(), "json" | "text")
    {
        return Err(source.rule(
            format.span(),
            format!(
                "output_format `{}` of `{id}` is unknown; expected `json` or `text`",
                format.as_str()
            ),
        ));
    }

    for (name, slot) in &ins.slots {
        if !is_identifier(name) {
            return Err(source.rule(
                slot.span(),
                format!("slot name `{name}` of `{id}` is not an identifier; expected letters, digits and `_`"),
            ));
        }
        match (&slot.vault, &slot.runtime) {
            (Some(path), None) | (None, Some(path)) if !path.trim().is_empty() => {}
            _ => {
                return Err(source.rule(
                    slot.span(),
                    format!(
                        "slot `{name}` of `{id}` needs exactly one non-empty source; expected `vault: PATH` or `runtime: DOTTED.PATH`"
                    ),
                ));
            }
        }
    }
    let mut used = Vec::new();
    for text in [&ins.prompt, &ins.system_prompt].into_iter().flatten() {
        for placeholder in placeholders(text) {
            if !ins.slots.contains_key(placeholder) {
                let declared: Vec<&str> = ins.slots.keys().map(String::as_str).collect();
                return Err(source.rule(
                    text.span(),
                    format!(
                        "prompt of `{id}` uses `{{{{{placeholder}}}}}`, which is not a declared slot; expected one of [{}] or a `slots` entry",
                        declared.join(", ")
                    ),
                ));
            }
            used.push(placeholder);
        }
    }
    if let Some((name, slot)) = ins.slots.iter().find(|(n, _)| !used.contains(&n.as_str())) {
        return Err(source.rule(
            slot.span(),
            format!("slot `{name}` of `{id}` is never used; expected `{{{{{name}}}}}` in the prompt or system_prompt"),
        ));
    }
    Ok(())
}

/// Names inside `{{...}}` in a prompt template, trimmed.
fn placeholders(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { break };
        names.push(after[..close].trim());
        rest = &after[close + 2..];
    }
    names
}

/// Output names and ids share one namespace: expressions see each result under one name.
fn result_names(rule: &Rule, source: &Source<'_>) -> Result<()> {
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    for ins in rule.instructions.iter() {
        names.insert(ins.id.as_str(), ins.id.as_str());
    }
    for ins in rule.instructions.iter() {
        if let Some(output) = &ins.output
            && output.as_str() != ins.id.as_str()
            && let Some(owner) = names.insert(output.as_str(), ins.id.as_str())
        {
            return Err(source.rule(
                output.span(),
                format!(
                    "output name `{}` of `{}` is already the result name of `{owner}`; expected a unique name",
                    output.as_str(),
                    ins.id.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// Two side-effecting instructions on one resource key must not run in parallel unless the
/// rule or one of them says `arbitrate: true`.
fn resources(rule: &Rule, specs: &[&Spec], dag: &Dag, source: &Source<'_>) -> Result<()> {
    let rule_arbitrates = rule.arbitrate.as_ref().is_some_and(|a| **a);
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, ins) in rule.instructions.iter().enumerate() {
        if let Some(key) = &ins.resource_key
            && specs[i].side_effect()
        {
            by_key.entry(key.as_str()).or_default().push(i);
        }
    }
    let arbitrated = |i: usize| rule.instructions[i].arbitrate.as_ref().is_some_and(|a| **a);
    for (key, users) in by_key {
        for (n, &a) in users.iter().enumerate() {
            for &b in &users[n + 1..] {
                if dag.parallel(a, b) && !rule_arbitrates && !arbitrated(a) && !arbitrated(b) {
                    let later = &rule.instructions[b];
                    let span = later
                        .resource_key
                        .as_ref()
                        .map_or(*later.id.span(), |k| *k.span());
                    return Err(source.rule(
                        &span,
                        format!(
                            "`{}` and `{}` both act on resource `{key}` in parallel branches; expected one to follow the other, or `arbitrate: true` to let the resource arbiter serialise them",
                            dag.id(a),
                            dag.id(b)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn identifier(source: &Source<'_>, name: &Text, what: &str) -> Result<()> {
    if is_identifier(name) {
        Ok(())
    } else {
        Err(source.rule(
            name.span(),
            format!(
                "{what} `{}` is not an identifier; expected letters, digits and `_`, not starting with a digit",
                name.as_str()
            ),
        ))
    }
}

/// Parses JSON text; `what` names it in the message.
pub(crate) fn json(source: &Source<'_>, text: &Text, what: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| {
        source.rule(
            text.span(),
            format!("{what} is not valid JSON ({e}); expected JSON text"),
        )
    })
}

/// A JSON-schema-ish document: a JSON object whose `type`, `properties` and `required`, when
/// present, have the right shapes.
fn json_schema(source: &Source<'_>, text: &Text, what: &str) -> Result<()> {
    const TYPES: &[&str] = &[
        "object", "array", "string", "number", "integer", "boolean", "null",
    ];
    let value = json(source, text, what)?;
    let problem = match &value {
        Value::Object(schema) => {
            let type_ok = match schema.get("type") {
                None => true,
                Some(Value::String(t)) => TYPES.contains(&t.as_str()),
                Some(Value::Array(ts)) => ts
                    .iter()
                    .all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t))),
                Some(_) => false,
            };
            if !type_ok {
                Some(format!(
                    "has an invalid `type`; expected one of: {}",
                    TYPES.join(", ")
                ))
            } else if schema.get("properties").is_some_and(|p| !p.is_object()) {
                Some(
                    "has `properties` that is not an object; expected a map of property schemas"
                        .to_owned(),
                )
            } else if schema
                .get("required")
                .is_some_and(|r| !r.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
            {
                Some(
                    "has `required` that is not a list of names; expected an array of strings"
                        .to_owned(),
                )
            } else {
                None
            }
        }
        _ => Some(
            "is not a JSON object; expected a JSON Schema object such as {\"type\": \"object\"}"
                .to_owned(),
        ),
    };
    match problem {
        Some(problem) => Err(source.rule(text.span(), format!("{what} {problem}"))),
        None => Ok(()),
    }
}

/// A positive integer of milliseconds or seconds that fits the IR's `u32`.
pub(crate) fn positive(source: &Source<'_>, value: &Spanned<i64>, what: &str) -> Result<u32> {
    match u32::try_from(**value) {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(source.rule(
            value.span(),
            format!(
                "{what} is {}; expected a positive number up to {}",
                **value,
                u32::MAX
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn finds_placeholders() {
        assert_eq!(
            placeholders("Site {{ site }} reading {{reading}} {{unclosed"),
            vec!["site", "reading"]
        );
        assert!(placeholders("no slots").is_empty());
    }
}
