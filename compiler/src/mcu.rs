//! `--target mcu`: lowers every CEL expression of the rule (EVAL/RETURN/STORE `expression`,
//! BRANCH condition, params, LOOP `while`, LLM_CALL runtime slots, EMIT_EVENT key) to the MCU bytecode with
//! [`eyeflow_mcu::code::Builder`], and applies the MCU profile ([`eyeflow_ir::mcu::check`])
//! to the program, each refusal at its place in the rule.

use std::collections::BTreeSet;

use cel_parser::ast::{CallExpr, Expr, operators};
use cel_parser::reference::Val;
use eyeflow_ir::mcu::{Violation, ViolationKind};
use eyeflow_ir::pb::{LlmIrProgram, McuCode, McuParam, Target};
use eyeflow_mcu::code::{Binary, Builder, Unary};
use eyeflow_mcu::limits;
use marked_yaml::Span;

use crate::ast::{Instruction, Rule, Text};
use crate::cel;
use crate::error::{Error, Result, Source};

/// The largest integer a device's `f64` holds exactly (2^53).
const EXACT_INT: u64 = 1 << 53;

/// Makes `program` an MCU program: lowers the expressions of each instruction, sets the
/// target, then checks the profile.
pub(crate) fn lower(program: &mut LlmIrProgram, rule: &Rule, source: &Source<'_>) -> Result<()> {
    program.target = Target::Mcu as i32;
    let mut variables: BTreeSet<&str> = BTreeSet::from(["event"]);
    for ins in rule.instructions.iter() {
        variables.insert(ins.output.as_ref().map_or(ins.id.as_str(), |o| o.as_str()));
    }
    for (ir, ins) in program
        .instructions
        .iter_mut()
        .zip(rule.instructions.iter())
    {
        let lowering = Lowering {
            source,
            variables: &variables,
            id: ins.id.as_str(),
        };
        let code = McuCode {
            expression: lowering.optional(&ins.expression, "expression")?,
            branch_condition: lowering.optional(&ins.condition, "condition")?,
            params: lowering.named(ins.params.iter(), "parameter")?,
            while_condition: lowering.optional(&ins.while_condition, "while condition")?,
            slots: lowering.named(
                ins.slots
                    .iter()
                    .filter_map(|(name, slot)| Some((name, slot.runtime.as_ref()?))),
                "slot",
            )?,
            event_key: lowering.optional(&ins.event_key, "event key")?,
        };
        ir.mcu = (code != McuCode::default()).then_some(code);
    }
    eyeflow_ir::mcu::check(program).map_err(|v| refusal(&v, rule, source))
}

/// The profile's refusal `v` at its place in the rule.
fn refusal(v: &Violation, rule: &Rule, source: &Source<'_>) -> Error {
    let what = match v.kind {
        ViolationKind::NotMcu => "not in the MCU profile",
        ViolationKind::Capacity => "beyond the device's capacity",
        ViolationKind::Malformed => "not lowered for the device",
    };
    let Some(id) = &v.instruction else {
        let span = match v.field.as_str() {
            "instructions" => Some(*rule.instructions.span()),
            "required_capabilities" => rule.requires.values().next().map(|r| *r.span()),
            "triggers" => rule.triggers.first().map(|t| *t.span()),
            _ => None,
        };
        let message = format!("the program's {}: {} ({what})", v.field, v.reason);
        return match span {
            Some(span) => source.rule(&span, message),
            None => Error::Rule {
                at: source.at_line(1, 1),
                message,
            },
        };
    };
    let ins = rule.instructions.iter().find(|i| i.id.as_str() == id);
    let span = ins.map_or(*rule.instructions.span(), |ins| field_span(ins, &v.field));
    source.rule(
        &span,
        format!("`{id}`, {}: {} ({what})", yaml_name(&v.field), v.reason),
    )
}

/// The YAML name of an IR field, for messages.
fn yaml_name(field: &str) -> String {
    let name = match field {
        "opcode" => "op",
        "is_parallel" => "a parallel branch",
        "instruction_id" => "id",
        "output_var" => "output",
        "resource_key" => "resource_key",
        "dispatch_metadata.requires_human_validation" => "requires_human_validation",
        "dispatch_metadata.vault_secret_key" => "secret",
        "dispatch_metadata.input_schema" => "input_schema/output_schema",
        "dispatch_metadata.capability_id" => "capability",
        "dispatch_metadata.action_name" => "action",
        "loop.items_expr" => "over",
        "loop.while_condition" => "while",
        "loop.max_iterations" => "max_iterations",
        "memory.scope" => "scope",
        "memory.key" => "key",
        "memory.default_json" => "default",
        "fallback.strategy" => "fallback strategy",
        "fallback.value_json" => "fallback value",
        "timeout.on_timeout" => "on_timeout",
        "dispatch_metadata.model" => "model",
        "emit.topic" => "topic",
        other => {
            if let Some(name) = other.strip_prefix("dispatch_metadata.dynamic_slots.") {
                return format!("slot `{name}`");
            }
            return other
                .strip_prefix("params.")
                .map_or_else(|| other.to_owned(), |name| format!("parameter `{name}`"));
        }
    };
    name.to_owned()
}

/// Where in the instruction the IR `field` was written (the instruction itself when it
/// has no field of its own).
fn field_span(ins: &marked_yaml::Spanned<Instruction>, field: &str) -> Span {
    let text = |t: &Option<Text>| t.as_ref().map(|t| *t.span());
    let found = match field {
        "opcode" => Some(*ins.op.span()),
        "instruction_id" => Some(*ins.id.span()),
        "output_var" => text(&ins.output),
        "is_parallel" => ins.next.as_ref().map(|n| *n.span()),
        "postcondition" => ins.postcondition.as_ref().map(|p| *p.span()),
        "time_window" => ins.time_window.as_ref().map(|w| *w.span()),
        "resource_key" => text(&ins.resource_key),
        "dispatch_metadata.requires_human_validation" => {
            ins.requires_human_validation.as_ref().map(|r| *r.span())
        }
        "dispatch_metadata.vault_secret_key" => text(&ins.secret),
        "dispatch_metadata.input_schema" => text(&ins.input_schema).or(text(&ins.output_schema)),
        "dispatch_metadata.capability_id" => text(&ins.capability),
        "dispatch_metadata.action_name" => text(&ins.action),
        "loop.items_expr" => text(&ins.over),
        "loop.max_iterations" => ins.max_iterations.as_ref().map(|m| *m.span()),
        "memory.scope" => text(&ins.scope),
        "memory.key" => text(&ins.key),
        "memory.default_json" => text(&ins.default),
        "fallback.strategy" => ins.fallback.as_ref().map(|f| *f.strategy.span()),
        "fallback.value_json" => ins
            .fallback
            .as_ref()
            .and_then(|f| f.value.as_ref().map(|v| *v.span())),
        "timeout.on_timeout" => text(&ins.on_timeout),
        "dispatch_metadata.model" => text(&ins.model),
        "emit.topic" => text(&ins.topic),
        "expression" => text(&ins.expression),
        other => match other.strip_prefix("dispatch_metadata.dynamic_slots.") {
            Some(name) => ins.slots.get(name).map(|s| *s.span()),
            None => other
                .strip_prefix("params.")
                .and_then(|name| ins.params.get(name).map(|p| *p.span())),
        },
    };
    found.unwrap_or(*ins.span())
}

/// The lowering of one instruction's expressions.
struct Lowering<'a> {
    source: &'a Source<'a>,
    /// What the first segment of a field path may name: `event` and every result name.
    variables: &'a BTreeSet<&'a str>,
    /// The instruction.
    id: &'a str,
}

/// Why an expression cannot be lowered: the message, and a piece of its text to point at.
struct Refused {
    message: String,
    near: Option<String>,
}

fn refused(message: impl Into<String>, near: impl Into<Option<String>>) -> Refused {
    Refused {
        message: message.into(),
        near: near.into(),
    }
}

impl Lowering<'_> {
    /// Each named expression (`what`: "parameter", "slot") lowered under its name.
    fn named<'t>(
        &self,
        named: impl Iterator<Item = (&'t String, &'t Text)>,
        what: &str,
    ) -> Result<Vec<McuParam>> {
        named
            .map(|(name, text)| {
                Ok(McuParam {
                    name: name.clone(),
                    code: self.expression(text, &format!("{what} `{name}`"))?,
                })
            })
            .collect()
    }

    fn optional(&self, text: &Option<Text>, what: &str) -> Result<Vec<u8>> {
        match text {
            Some(text) => self.expression(text, what),
            None => Ok(Vec::new()),
        }
    }

    /// The bytecode of `text` (a CEL expression that already passed [`cel::check`]).
    fn expression(&self, text: &Text, what: &str) -> Result<Vec<u8>> {
        let what = format!("{what} of `{}`", self.id);
        let parsed = cel::quietly(|| cel_parser::Parser::default().parse(text.as_str()));
        let Ok(Ok(ast)) = parsed else {
            return Err(Error::Expression {
                at: self.source.at(text.span()),
                message: format!("{what} does not parse; expected a CEL expression"),
            });
        };
        let mut builder = Builder::new();
        let lowered = self
            .walk(&ast.expr, &mut builder)
            .and_then(|()| builder.finish().map_err(|e| too_big(&e)));
        lowered.map_err(|r| Error::Expression {
            at: r
                .near
                .as_deref()
                .and_then(|near| position_in(text.as_str(), near))
                .map_or_else(
                    || self.source.at(text.span()),
                    |pos| cel::locate(self.source, text.span(), pos),
                ),
            message: format!("{what} cannot run on a device: {}", r.message),
        })
    }

    fn walk(&self, expr: &Expr, b: &mut Builder) -> Result<(), Refused> {
        match expr {
            Expr::Literal(value) => literal(value, b),
            Expr::Ident(_) | Expr::Select(_) => self.field(expr, b),
            Expr::Call(call) => self.call(call, b),
            Expr::List(_) => Err(refused(
                "lists are not in the MCU profile; expected numbers, booleans, strings and fields",
                "[".to_owned(),
            )),
            Expr::Map(_) => Err(refused(
                "maps are not in the MCU profile; expected numbers, booleans, strings and fields",
                "{".to_owned(),
            )),
            Expr::Struct(s) => Err(refused(
                format!(
                    "the message `{}` is not in the MCU profile; expected numbers, booleans, strings and fields",
                    s.type_name
                ),
                s.type_name.clone(),
            )),
            Expr::Comprehension(_) => Err(refused(
                "macros (all, exists, exists_one, map, filter) are not in the MCU profile; expected a plain expression",
                None,
            )),
            Expr::Unspecified => Err(refused("an empty expression", None)),
        }
    }

    /// A field path `a.b.c` whose first segment is `event` or a result name.
    fn field(&self, expr: &Expr, b: &mut Builder) -> Result<(), Refused> {
        let path = path(expr)?;
        let root = path.split('.').next().unwrap_or_default();
        if !self.variables.contains(root) {
            return Err(refused(
                format!(
                    "`{root}` is not a variable of the program; expected `event` or the result of an instruction (execution memory is read with LOAD)"
                ),
                root.to_owned(),
            ));
        }
        if path.len() > limits::MAX_PATH {
            return Err(refused(
                format!(
                    "the field path `{path}` is {} bytes, above the device's {}; expected a shorter path",
                    path.len(),
                    limits::MAX_PATH
                ),
                root.to_owned(),
            ));
        }
        b.get(&path).map_err(|e| {
            refused(
                format!("the field path `{path}` is refused ({e})"),
                root.to_owned(),
            )
        })
    }

    fn call(&self, call: &CallExpr, b: &mut Builder) -> Result<(), Refused> {
        let name = call.func_name.as_str();
        if call.target.is_some() {
            return Err(refused(
                format!(
                    "the method `{name}` is not in the MCU profile; expected operators only (+ - * / == != < <= > >= && || ! ?:)"
                ),
                format!(".{name}"),
            ));
        }
        let args = call.args.as_slice();
        if name == operators::CONDITIONAL && args.len() == 3 {
            for arg in args {
                self.walk(&arg.expr, b)?;
            }
            b.select();
            return Ok(());
        }
        if let [operand] = args {
            let op = match name {
                operators::NEGATE => Some(Unary::Neg),
                operators::LOGICAL_NOT => Some(Unary::Not),
                _ => None,
            };
            if let Some(op) = op {
                self.walk(&operand.expr, b)?;
                b.unary(op);
                return Ok(());
            }
        }
        if let [left, right] = args {
            let op = match name {
                operators::ADD => Some(Binary::Add),
                operators::SUBSTRACT => Some(Binary::Sub),
                operators::MULTIPLY => Some(Binary::Mul),
                operators::DIVIDE => Some(Binary::Div),
                operators::EQUALS => Some(Binary::Eq),
                operators::NOT_EQUALS => Some(Binary::Ne),
                operators::LESS => Some(Binary::Lt),
                operators::LESS_EQUALS => Some(Binary::Le),
                operators::GREATER => Some(Binary::Gt),
                operators::GREATER_EQUALS => Some(Binary::Ge),
                operators::LOGICAL_AND => Some(Binary::And),
                operators::LOGICAL_OR => Some(Binary::Or),
                _ => None,
            };
            if let Some(op) = op {
                self.walk(&left.expr, b)?;
                self.walk(&right.expr, b)?;
                b.binary(op);
                return Ok(());
            }
        }
        let (what, near) = match name {
            operators::MODULO => ("the operator `%`".to_owned(), "%".to_owned()),
            operators::IN => ("the operator `in`".to_owned(), " in ".to_owned()),
            operators::INDEX | operators::OPT_INDEX => {
                ("indexing `[…]`".to_owned(), "[".to_owned())
            }
            operators::OPT_SELECT => ("optional selection `.?`".to_owned(), ".?".to_owned()),
            _ => (format!("the function `{name}`"), format!("{name}(")),
        };
        Err(refused(
            format!(
                "{what} is not in the MCU profile; expected operators only (+ - * / == != < <= > >= && || ! ?:)"
            ),
            near,
        ))
    }
}

/// Pushes a literal: numbers become `f64` (an integer must be exact in one).
fn literal(value: &Val, b: &mut Builder) -> Result<(), Refused> {
    let integer = |magnitude: u64, shown: String| {
        if magnitude > EXACT_INT {
            Err(refused(
                format!(
                    "the integer {shown} is beyond ±2^53, which a device's numbers (f64) do not hold exactly; expected a smaller number"
                ),
                shown,
            ))
        } else {
            Ok(())
        }
    };
    match value {
        Val::Null => b.null(),
        Val::Boolean(v) => b.boolean(*v),
        Val::Int(i) => {
            integer(i.unsigned_abs(), i.to_string())?;
            b.number(*i as f64);
        }
        Val::UInt(u) => {
            integer(*u, u.to_string())?;
            b.number(*u as f64);
        }
        Val::Double(d) if d.is_finite() => b.number(*d),
        Val::Double(d) => {
            return Err(refused(
                format!("the number {d} is not finite; expected a finite number"),
                None,
            ));
        }
        Val::String(s) => b.string(s).map_err(|_| {
            refused(
                format!(
                    "the string \"{}\" is {} bytes, above the device's {}; expected a shorter string",
                    s.escape_debug(),
                    s.len(),
                    limits::MAX_STR
                ),
                s.clone(),
            )
        })?,
        Val::Bytes(_) => {
            return Err(refused(
                "bytes literals are not in the MCU profile; expected a string",
                "b".to_owned(),
            ));
        }
    }
    Ok(())
}

/// The dotted path of an identifier or a member chain on one.
fn path(expr: &Expr) -> Result<String, Refused> {
    match expr {
        Expr::Ident(name) => Ok(name.clone()),
        Expr::Select(select) if select.test => Err(refused(
            "the macro `has` is not in the MCU profile; a missing field fails the instruction with invalid_input (handle it with a fallback)",
            "has(".to_owned(),
        )),
        Expr::Select(select) => Ok(format!("{}.{}", path(&select.operand.expr)?, select.field)),
        _ => Err(refused(
            "a field of a computed value is not in the MCU profile; expected a field path such as `event.sensor.value`",
            None,
        )),
    }
}

/// A bytecode that does not fit the device.
fn too_big(e: &eyeflow_mcu::Error) -> Refused {
    refused(
        format!(
            "its bytecode is refused ({e}); expected a smaller expression (at most {} bytes of bytecode and {} stack values: split it over several instructions)",
            limits::MAX_CODE_LEN,
            limits::MAX_STACK
        ),
        None,
    )
}

/// The 1-based line and column (in characters) of the first `near` in `text`.
fn position_in(text: &str, near: &str) -> Option<(isize, isize)> {
    let offset = text.find(near)?;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((isize::try_from(line).ok()?, isize::try_from(column).ok()?))
}

#[cfg(test)]
mod tests {
    use cel_interpreter::{Context, Program, Value as Cel};
    use eyeflow_mcu::Value;
    use marked_yaml::Spanned;
    use serde_json::{Value as Json, json};

    use super::*;

    /// The event both evaluators see.
    fn event() -> Json {
        json!({
            "level": 7, "ratio": 2.5, "big": 1e300, "name": "pump", "on": true, "none": null,
            "zero": 0, "obj": {"a": 1, "deep": {"b": "x"}}, "list": [1, 2]
        })
    }

    /// An [`eyeflow_mcu::code::Env`] over JSON, as the server's executor reads it.
    struct JsonEnv(Json);

    impl eyeflow_mcu::code::Env for JsonEnv {
        fn get(&self, path: &str) -> Result<Value<'_>, eyeflow_mcu::Error> {
            let mut at = &self.0;
            for segment in path.split('.') {
                at = at.get(segment).ok_or(eyeflow_mcu::Error::MissingField)?;
            }
            match at {
                Json::Null => Ok(Value::Null),
                Json::Bool(b) => Ok(Value::Bool(*b)),
                Json::Number(n) => Ok(Value::Num(n.as_f64().unwrap_or(f64::NAN))),
                Json::String(s) => Ok(Value::Str(s)),
                _ => Err(eyeflow_mcu::Error::NotScalar),
            }
        }
    }

    fn bytecode(expression: &str) -> Result<Vec<u8>, String> {
        let source = Source {
            name: "t.yaml",
            text: "x: a\n",
        };
        let variables = BTreeSet::from(["event", "prev"]);
        let lowering = Lowering {
            source: &source,
            variables: &variables,
            id: "t",
        };
        let marker = marked_yaml::Marker::new(0, 0, 1, 4);
        let text = Spanned::new(Span::new_start(marker), expression.to_owned());
        lowering
            .expression(&text, "expression")
            .map_err(|e| e.to_string())
    }

    /// The bytecode's result as JSON-like text (`Err` for an evaluation error).
    fn on_device(expression: &str) -> Result<String, String> {
        let code = bytecode(expression)?;
        let env = JsonEnv(json!({"event": event(), "prev": 3}));
        match eyeflow_mcu::code::eval(&code, &env) {
            Ok(Value::Null) => Ok("null".into()),
            Ok(Value::Bool(b)) => Ok(b.to_string()),
            Ok(Value::Num(n)) => Ok(format!("{n:?}")),
            Ok(Value::Str(s)) => Ok(format!("{s:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// JSON as the server's CEL sees it (integers as `int`).
    fn cel(json: &Json) -> Cel {
        match json {
            Json::Null => Cel::Null,
            Json::Bool(b) => Cel::Bool(*b),
            Json::Number(n) => n
                .as_i64()
                .map_or_else(|| Cel::Float(n.as_f64().unwrap_or(f64::NAN)), Cel::Int),
            Json::String(s) => Cel::String(s.clone().into()),
            Json::Array(items) => Cel::List(items.iter().map(cel).collect::<Vec<_>>().into()),
            Json::Object(fields) => Cel::Map(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), cel(v)))
                    .collect::<std::collections::HashMap<_, _>>()
                    .into(),
            ),
        }
    }

    /// CEL's result in the same form (integers as `f64`).
    fn in_cel(expression: &str) -> Result<String, String> {
        let program = Program::compile(expression).map_err(|e| e.to_string())?;
        let mut context = Context::default();
        context.add_variable_from_value("event", cel(&event()));
        context.add_variable_from_value("prev", Cel::Int(3));
        match program.execute(&context).map_err(|e| e.to_string())? {
            Cel::Null => Ok("null".into()),
            Cel::Bool(b) => Ok(b.to_string()),
            Cel::Int(i) => Ok(format!("{:?}", i as f64)),
            Cel::UInt(u) => Ok(format!("{:?}", u as f64)),
            Cel::Float(f) => Ok(format!("{f:?}")),
            Cel::String(s) => Ok(format!("{:?}", s.as_str())),
            other => Err(format!("not a scalar: {other:?}")),
        }
    }

    #[test]
    fn bytecode_computes_what_cel_computes() {
        let same = [
            "1",
            "-3",
            "2.5",
            "true",
            "null",
            "'pump'",
            "event.level",
            "event.ratio * 2.0",
            "event.level + 1",
            "event.level - prev * 2",
            "-event.level",
            "10.0 / 4.0",
            "event.level * 3 - 1",
            "event.level > 5",
            "event.level >= 7 && event.ratio < 3.0",
            "event.level < 5 || event.on",
            "!event.on",
            "event.name == 'pump'",
            "event.name != 'valve'",
            "event.name < 'q'",
            "'abc' <= 'abd'",
            "event.none == null",
            "event.on == true",
            "event.level > 5 ? 'high' : 'low'",
            "event.on ? event.ratio : -1.0",
            "event.obj.deep.b == 'x'",
            "event.obj.a + 1",
            "(event.level + 3) * 2",
            "event.level == 7 && event.name == 'pump' && !false",
            "prev == 3",
            // CEL-like short circuit: the error on the other side does not matter.
            "false && event.missing > 1",
            "true || event.missing > 1",
            "event.on || event.missing",
            // Errors on both sides.
            "event.missing",
            "event.missing.deeper",
            "event.name + 1",
            "event.level > 'x'",
            "-event.name",
            "event.on ? event.missing : 1",
        ];
        let mut differ = Vec::new();
        for expression in same {
            let device = on_device(expression);
            let cel = in_cel(expression);
            match (&device, &cel) {
                (Ok(d), Ok(c)) if d == c => {}
                (Err(_), Err(_)) => {}
                _ => differ.push(format!("`{expression}`: device {device:?}, CEL {cel:?}")),
            }
        }
        assert!(differ.is_empty(), "{differ:#?}");
    }

    /// Where the device answers otherwise than the server's CEL (documented in
    /// docs/firmware.md): one number type, `f64`, where CEL splits int and double; and strict
    /// types where cel-interpreter reads non-booleans as truthy or divides a double by zero
    /// to infinity.
    #[test]
    fn numbers_are_f64_on_the_device() {
        for (expression, device) in [
            ("7 / 2", Ok("3.5")),
            ("event.level / 2", Ok("3.5")),
            ("event.level + 0.5", Ok("7.5")),
            ("1 == 1.0", Ok("true")),
            ("event.level == 7.0", Ok("true")),
            ("event.level / 0", Err("division by zero")),
            ("event.ratio / 0.0", Err("division by zero")),
            ("event.big * event.big", Err("not a finite number")),
            ("event.obj", Err("the field is an object or a list")),
            ("event.list", Err("the field is an object or a list")),
            ("event.name + 'x'", Err("operands of the wrong types")),
            ("!event.level", Err("operands of the wrong types")),
            ("event.level && true", Err("operands of the wrong types")),
        ] {
            match (on_device(expression), device) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "`{expression}`"),
                (Err(got), Err(want)) => assert!(got.contains(want), "`{expression}`: {got}"),
                (got, want) => panic!("`{expression}`: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn operands_come_before_their_operation() {
        let code = bytecode("event.level > 5 ? 'a' : 'b'").unwrap();
        assert_eq!(code[0], eyeflow_mcu::code::VERSION);
        assert_eq!(*code.last().unwrap(), 0x1e, "select last");
        let code = bytecode("1 - 2").unwrap();
        assert_eq!(*code.last().unwrap(), Binary::Sub as u8);
    }
}
