//! Expressions over JSON values, and the variables they see: CEL (`cel-interpreter`) for
//! server programs, the MCU bytecode (`eyeflow_mcu::code`) for MCU-profile programs, so
//! that the server computes what a device computes.
//!
//! Values cross the boundary as JSON: integers that fit `i64` become CEL `int` (so that
//! `size(x) - 1` and `x[0]` work on JSON data), other numbers `double`; CEL results come
//! back as JSON (`uint` and `int` as integers, map keys as strings, bytes as lowercase hex).
//! The bytecode reads every number as `f64`, a string as a string, an object or a list at
//! the end of a path as `NotScalar`; its results are JSON scalars, a whole number (below
//! 2^53, not -0) as a JSON integer, so that a plugin whose schema asks for an integer
//! accepts the `5` a device would send, not `5.0`.

use std::sync::{Arc, LazyLock};

use cel_interpreter::objects::{Key, Map};
use cel_interpreter::{Context, Program, Value as Cel};
use eyeflow_mcu::Value as Mcu;
use serde_json::{Number, Value};

/// A compiled expression (CEL, or MCU bytecode) and its source text.
#[derive(Debug)]
pub(crate) struct Expr {
    source: String,
    code: Code,
}

/// What evaluates an [`Expr`].
#[derive(Debug)]
enum Code {
    /// A server program's CEL.
    Cel(Program),
    /// An MCU program's bytecode (validated).
    Mcu(Vec<u8>),
}

impl Expr {
    /// Compiles `source`; the message says what does not parse.
    pub(crate) fn compile(source: &str) -> Result<Self, String> {
        // A signed program can carry what the compiler would refuse: bound the text before
        // the recursive parser sees it (see `eyeflow_ir::expression`).
        eyeflow_ir::expression::check(source).map_err(|e| e.to_string())?;
        // The parser is third-party code run on program text: a panic is a parse error.
        let parsed = std::panic::catch_unwind(|| Program::compile(source))
            .map_err(|_| "the CEL parser failed on this expression".to_owned())?;
        let program = parsed.map_err(|e| format!("CEL does not parse: {e}"))?;
        Ok(Self {
            source: source.to_owned(),
            code: Code::Cel(program),
        })
    }

    /// The MCU bytecode `code` of the CEL text `source` (kept for messages); the message
    /// says why the bytecode does not validate.
    pub(crate) fn bytecode(source: &str, code: &[u8]) -> Result<Self, String> {
        eyeflow_mcu::code::validate(code)
            .map_err(|e| format!("bytecode does not validate: {e}"))?;
        Ok(Self {
            source: source.to_owned(),
            code: Code::Mcu(code.to_vec()),
        })
    }

    /// The expression's text.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression over `vars`.
    pub(crate) fn eval(&self, vars: &Vars) -> Result<Value, String> {
        let fail = |e: &dyn std::fmt::Display| format!("`{}`: {e}", self.source);
        match &self.code {
            Code::Cel(program) => {
                let value = program.execute(&vars.context).map_err(|e| fail(&e))?;
                to_json(&value).map_err(|e| fail(&e))
            }
            Code::Mcu(code) => {
                let value = eyeflow_mcu::code::eval(code, vars).map_err(|e| fail(&e))?;
                scalar_json(value).map_err(|e| fail(&e))
            }
        }
    }

    /// Evaluates the expression, which must give a bool.
    pub(crate) fn eval_bool(&self, vars: &Vars) -> Result<bool, String> {
        match self.eval(vars)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!(
                "`{}` gave {}, expected a bool",
                self.source,
                kind_of(&other)
            )),
        }
    }
}

/// The name of a JSON value's type, for messages.
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The built-in CEL functions, registered once: building them is most of the cost of a
/// fresh `Context` (≈ 10 k instructions), more than evaluating a small expression.
static FUNCTIONS: LazyLock<Context<'static>> = LazyLock::new(Context::default);

/// The variables an expression sees (name → value), kept in CEL form as a scope over the
/// built-in functions, so that evaluating copies nothing.
pub(crate) struct Vars {
    context: Context<'static>,
}

impl Default for Vars {
    fn default() -> Self {
        Self {
            context: FUNCTIONS.new_inner_scope(),
        }
    }
}

impl Clone for Vars {
    fn clone(&self) -> Self {
        Self {
            context: Context::Child {
                parent: &FUNCTIONS,
                variables: self.variables().clone(),
            },
        }
    }
}

impl std::fmt::Debug for Vars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.variables()).finish()
    }
}

impl Vars {
    fn variables(&self) -> &std::collections::HashMap<String, Cel> {
        match &self.context {
            Context::Child { variables, .. } | Context::Root { variables, .. } => variables,
        }
    }

    /// Binds `name` to `value`.
    pub(crate) fn set(&mut self, name: &str, value: &Value) {
        self.context
            .add_variable_from_value(name.to_owned(), to_cel(value));
    }

    /// Unbinds `name`.
    pub(crate) fn remove(&mut self, name: &str) {
        match &mut self.context {
            Context::Child { variables, .. } | Context::Root { variables, .. } => {
                variables.remove(name);
            }
        }
    }
}

/// The bytecode reads the variables: `a.b.c` is field `b.c` of variable `a`.
impl eyeflow_mcu::code::Env for Vars {
    fn get(&self, path: &str) -> Result<Mcu<'_>, eyeflow_mcu::Error> {
        let mut segments = path.split('.');
        let root = segments.next().unwrap_or_default();
        let mut at = self
            .variables()
            .get(root)
            .ok_or(eyeflow_mcu::Error::MissingField)?;
        for segment in segments {
            let Cel::Map(map) = at else {
                return Err(eyeflow_mcu::Error::MissingField);
            };
            at = map
                .map
                .get(&Key::String(Arc::new(segment.to_owned())))
                .ok_or(eyeflow_mcu::Error::MissingField)?;
        }
        match at {
            Cel::Null => Ok(Mcu::Null),
            Cel::Bool(b) => Ok(Mcu::Bool(*b)),
            Cel::Int(i) => Ok(Mcu::Num(*i as f64)),
            Cel::UInt(u) => Ok(Mcu::Num(*u as f64)),
            Cel::Float(f) => Ok(Mcu::Num(*f)),
            Cel::String(s) => Ok(Mcu::Str(s.as_str())),
            _ => Err(eyeflow_mcu::Error::NotScalar),
        }
    }
}

/// Whole numbers up to this magnitude are exact in `f64` and leave as JSON integers.
const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0; // 2^53

/// A bytecode result as JSON; a number JSON cannot hold is an error.
fn scalar_json(value: Mcu<'_>) -> Result<Value, String> {
    Ok(match value {
        Mcu::Null => Value::Null,
        Mcu::Bool(b) => Value::Bool(b),
        // The same f64 when read back (the trace's digest), -0 excepted: it stays a double.
        Mcu::Num(n)
            if n.fract() == 0.0
                && n.abs() < EXACT_INTEGER
                && !(n == 0.0 && n.is_sign_negative()) =>
        {
            Value::from(n as i64)
        }
        Mcu::Num(n) => Value::Number(
            Number::from_f64(n).ok_or_else(|| format!("the result {n} is not a finite number"))?,
        ),
        Mcu::Str(s) => Value::String(s.to_owned()),
    })
}

/// JSON → CEL.
pub(crate) fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Cel::Int(i)
            } else if let Some(u) = n.as_u64() {
                Cel::UInt(u)
            } else {
                Cel::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(fields) => Cel::Map(Map {
            map: Arc::new(
                fields
                    .iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

/// CEL → JSON; non-finite doubles and functions have no JSON form.
pub(crate) fn to_json(value: &Cel) -> Result<Value, String> {
    Ok(match value {
        Cel::Null => Value::Null,
        Cel::Bool(b) => Value::Bool(*b),
        Cel::Int(i) => Value::from(*i),
        Cel::UInt(u) => Value::from(*u),
        Cel::Float(f) => Value::Number(
            Number::from_f64(*f).ok_or_else(|| format!("the result {f} is not a finite number"))?,
        ),
        Cel::String(s) => Value::String(s.as_str().to_owned()),
        Cel::Bytes(b) => Value::String(hex::encode(b.as_slice())),
        Cel::List(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Cel::Map(map) => {
            let mut object = serde_json::Map::new();
            for (key, v) in map.map.iter() {
                let key = match key {
                    Key::Int(i) => i.to_string(),
                    Key::Uint(u) => u.to_string(),
                    Key::Bool(b) => b.to_string(),
                    Key::String(s) => s.as_str().to_owned(),
                };
                object.insert(key, to_json(v)?);
            }
            Value::Object(object)
        }
        Cel::Function(name, _) => return Err(format!("the result is the function `{name}`")),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn eval(source: &str, vars: &Vars) -> Result<Value, String> {
        Expr::compile(source)?.eval(vars)
    }

    #[test]
    fn json_round_trips_through_cel() {
        let mut vars = Vars::default();
        let data = json!({"a": [1, 2.5, "x", null, true], "b": {"c": -3}});
        vars.set("data", &data);
        assert_eq!(eval("data", &vars).unwrap(), data);
        assert_eq!(
            eval("data.a[size(data.a) - 1]", &vars).unwrap(),
            json!(true)
        );
        assert_eq!(eval("data.b.c * 2", &vars).unwrap(), json!(-6));
        assert_eq!(eval("has(data.z) ? 1 : 2", &vars).unwrap(), json!(2));
        assert_eq!(
            eval("{'k': data.a[1] > 2}", &vars).unwrap(),
            json!({"k": true})
        );
    }

    #[test]
    fn bytecode_numbers_leave_as_integers_when_whole() {
        let json = |n: f64| scalar_json(Mcu::Num(n)).unwrap().to_string();
        assert_eq!(json(5.0), "5");
        assert_eq!(json(-12.0), "-12");
        assert_eq!(json(2.5), "2.5");
        assert_eq!(json(-0.0), "-0.0");
        assert_eq!(json(9_007_199_254_740_992.0), "9007199254740992.0");
        assert!(scalar_json(Mcu::Num(f64::NAN)).is_err());
    }

    #[test]
    fn errors_name_the_expression() {
        let vars = Vars::default();
        let err = eval("missing.x", &vars).unwrap_err();
        assert!(err.contains("missing.x"), "{err}");
        assert!(Expr::compile("1 +").is_err());
        let err = Expr::compile("1").unwrap().eval_bool(&vars).unwrap_err();
        assert!(err.contains("expected a bool"), "{err}");
    }
}
