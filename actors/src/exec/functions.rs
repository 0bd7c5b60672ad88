//! The built-in functions of CALL_FUNCTION: pure, deterministic, no I/O, no clock.
//!
//! A CALL_FUNCTION names a function (`dispatch_metadata.action_name`) and passes named
//! parameters (`params`, CEL). Numbers are read as `f64`; results are JSON.
//!
//! | function | params | result |
//! |---|---|---|
//! | `sum`, `avg`, `min`, `max` | `values`: list of numbers | number (`avg`/`min`/`max` of `[]`: `null`) |
//! | `count` | `values`: list | its length |
//! | `abs` | `value` | number |
//! | `round` | `value`, `digits` (default 0) | number rounded half away from zero |
//! | `clamp` | `value`, `min`, `max` | number within `[min, max]` |
//! | `linear_scale` | `value`, `in_min`, `in_max`, `out_min`, `out_max` | number mapped linearly |
//! | `celsius_to_fahrenheit`, `fahrenheit_to_celsius` | `value` | number |
//! | `moving_average` | `values`, `window` (≥ 1) | list: trailing average at each position |
//! | `threshold_crossed` | `previous`, `current`, `threshold`, `direction` (`up`, `down`, `any`; default `any`) | bool |
//! | `json_merge` | `base`, `patch` | RFC 7386 merge patch of `base` by `patch` |
//! | `units.convert` | `value` (number or null), `from`, `to` | number (`null` stays `null`) |
//! | `meters.normalise` | `readings`: list of objects with `value` (and `unit`), `unit` | the readings with a numeric `value`, converted to `unit` |
//!
//! Units of `units.convert`: temperature `C`, `F`, `K`; pressure `Pa`, `kPa`, `bar`, `mbar`,
//! `psi`; energy `Wh`, `kWh`, `MWh`, `J`; power `W`, `kW`, `MW`. Converting across
//! quantities is an error. A wrong or missing parameter is an `invalid_input` error.

use serde_json::{Map, Number, Value};

/// A built-in function: named parameters in, JSON out, or a message for `invalid_input`.
pub type Function = fn(&Map<String, Value>) -> Result<Value, String>;

/// The library, by name.
const LIBRARY: [(&str, Function); 17] = [
    ("sum", sum),
    ("avg", avg),
    ("min", min),
    ("max", max),
    ("count", count),
    ("abs", abs),
    ("round", round),
    ("clamp", clamp),
    ("linear_scale", linear_scale),
    ("celsius_to_fahrenheit", celsius_to_fahrenheit),
    ("fahrenheit_to_celsius", fahrenheit_to_celsius),
    ("moving_average", moving_average),
    ("threshold_crossed", threshold_crossed),
    ("json_merge", json_merge),
    ("units.convert", units_convert),
    ("meters.normalise", meters_normalise),
    ("meters.normalize", meters_normalise),
];

/// The function called `name`, if the library has it.
pub fn lookup(name: &str) -> Option<Function> {
    LIBRARY.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// The names of every function, for messages.
pub fn names() -> impl Iterator<Item = &'static str> {
    LIBRARY.iter().map(|(n, _)| *n)
}

fn param<'a>(params: &'a Map<String, Value>, name: &str) -> Result<&'a Value, String> {
    params
        .get(name)
        .ok_or_else(|| format!("missing parameter `{name}`"))
}

fn number(params: &Map<String, Value>, name: &str) -> Result<f64, String> {
    param(params, name)?
        .as_f64()
        .ok_or_else(|| format!("parameter `{name}` must be a number"))
}

fn numbers(params: &Map<String, Value>, name: &str) -> Result<Vec<f64>, String> {
    let list = param(params, name)?
        .as_array()
        .ok_or_else(|| format!("parameter `{name}` must be a list of numbers"))?;
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_f64()
                .ok_or_else(|| format!("`{name}[{i}]` must be a number"))
        })
        .collect()
}

fn text<'a>(params: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    param(params, name)?
        .as_str()
        .ok_or_else(|| format!("parameter `{name}` must be a string"))
}

/// A finite number as JSON.
fn num(value: f64) -> Result<Value, String> {
    Number::from_f64(value)
        .map(Value::Number)
        .ok_or_else(|| format!("the result {value} is not a finite number"))
}

fn sum(params: &Map<String, Value>) -> Result<Value, String> {
    num(numbers(params, "values")?.iter().sum())
}

fn avg(params: &Map<String, Value>) -> Result<Value, String> {
    let values = numbers(params, "values")?;
    if values.is_empty() {
        return Ok(Value::Null);
    }
    num(values.iter().sum::<f64>() / values.len() as f64)
}

fn min(params: &Map<String, Value>) -> Result<Value, String> {
    let values = numbers(params, "values")?;
    values
        .into_iter()
        .reduce(f64::min)
        .map_or(Ok(Value::Null), num)
}

fn max(params: &Map<String, Value>) -> Result<Value, String> {
    let values = numbers(params, "values")?;
    values
        .into_iter()
        .reduce(f64::max)
        .map_or(Ok(Value::Null), num)
}

fn count(params: &Map<String, Value>) -> Result<Value, String> {
    let list = param(params, "values")?
        .as_array()
        .ok_or("parameter `values` must be a list")?;
    Ok(Value::from(list.len()))
}

fn abs(params: &Map<String, Value>) -> Result<Value, String> {
    num(number(params, "value")?.abs())
}

fn round(params: &Map<String, Value>) -> Result<Value, String> {
    let value = number(params, "value")?;
    let digits = match params.get("digits") {
        None | Some(Value::Null) => 0,
        Some(d) => d
            .as_i64()
            .filter(|d| (0..=15).contains(d))
            .ok_or("parameter `digits` must be an integer from 0 to 15")?,
    };
    let scale = 10f64.powi(digits as i32);
    num((value * scale).round() / scale)
}

fn clamp(params: &Map<String, Value>) -> Result<Value, String> {
    let (value, lo, hi) = (
        number(params, "value")?,
        number(params, "min")?,
        number(params, "max")?,
    );
    if lo > hi {
        return Err(format!("`min` ({lo}) is above `max` ({hi})"));
    }
    num(value.clamp(lo, hi))
}

fn linear_scale(params: &Map<String, Value>) -> Result<Value, String> {
    let value = number(params, "value")?;
    let (in_min, in_max) = (number(params, "in_min")?, number(params, "in_max")?);
    let (out_min, out_max) = (number(params, "out_min")?, number(params, "out_max")?);
    if in_min == in_max {
        return Err("`in_min` and `in_max` are equal".to_owned());
    }
    num(out_min + (value - in_min) * (out_max - out_min) / (in_max - in_min))
}

fn celsius_to_fahrenheit(params: &Map<String, Value>) -> Result<Value, String> {
    num(number(params, "value")? * 9.0 / 5.0 + 32.0)
}

fn fahrenheit_to_celsius(params: &Map<String, Value>) -> Result<Value, String> {
    num((number(params, "value")? - 32.0) * 5.0 / 9.0)
}

fn moving_average(params: &Map<String, Value>) -> Result<Value, String> {
    let values = numbers(params, "values")?;
    let window = param(params, "window")?
        .as_u64()
        .filter(|w| *w >= 1)
        .ok_or("parameter `window` must be an integer >= 1")?;
    let window = usize::try_from(window).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(values.len());
    for i in 0..values.len() {
        let start = (i + 1).saturating_sub(window);
        let slice = &values[start..=i];
        out.push(num(slice.iter().sum::<f64>() / slice.len() as f64)?);
    }
    Ok(Value::Array(out))
}

fn threshold_crossed(params: &Map<String, Value>) -> Result<Value, String> {
    let previous = number(params, "previous")?;
    let current = number(params, "current")?;
    let threshold = number(params, "threshold")?;
    let up = previous < threshold && current >= threshold;
    let down = previous >= threshold && current < threshold;
    let direction = match params.get("direction") {
        None | Some(Value::Null) => "any",
        Some(Value::String(d)) => d.as_str(),
        Some(_) => return Err("parameter `direction` must be a string".to_owned()),
    };
    match direction {
        "up" => Ok(Value::Bool(up)),
        "down" => Ok(Value::Bool(down)),
        "any" => Ok(Value::Bool(up || down)),
        other => Err(format!(
            "direction `{other}` is unknown; expected up, down or any"
        )),
    }
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
fn merge_patch(base: &Value, patch: &Value) -> Value {
    let Value::Object(patch_fields) = patch else {
        return patch.clone();
    };
    let mut out = match base {
        Value::Object(fields) => fields.clone(),
        _ => Map::new(),
    };
    for (key, value) in patch_fields {
        if value.is_null() {
            out.remove(key);
        } else {
            let merged = merge_patch(out.get(key).unwrap_or(&Value::Null), value);
            out.insert(key.clone(), merged);
        }
    }
    Value::Object(out)
}

fn json_merge(params: &Map<String, Value>) -> Result<Value, String> {
    Ok(merge_patch(param(params, "base")?, param(params, "patch")?))
}

/// Quantity and factor to the quantity's base unit (temperatures are affine: handled apart).
const LINEAR_UNITS: [(&str, &str, f64); 14] = [
    ("Pa", "pressure", 1.0),
    ("kPa", "pressure", 1e3),
    ("mbar", "pressure", 100.0),
    ("bar", "pressure", 1e5),
    ("psi", "pressure", 6_894.757_293_168),
    ("J", "energy", 1.0),
    ("Wh", "energy", 3_600.0),
    ("kWh", "energy", 3.6e6),
    ("MWh", "energy", 3.6e9),
    ("W", "power", 1.0),
    ("kW", "power", 1e3),
    ("MW", "power", 1e6),
    ("%", "ratio", 1.0),
    ("ratio", "ratio", 100.0),
];

/// A temperature in kelvin.
fn to_kelvin(value: f64, unit: &str) -> Option<f64> {
    match unit {
        "C" | "°C" => Some(value + 273.15),
        "F" | "°F" => Some((value - 32.0) * 5.0 / 9.0 + 273.15),
        "K" => Some(value),
        _ => None,
    }
}

fn from_kelvin(kelvin: f64, unit: &str) -> Option<f64> {
    match unit {
        "C" | "°C" => Some(kelvin - 273.15),
        "F" | "°F" => Some((kelvin - 273.15) * 9.0 / 5.0 + 32.0),
        "K" => Some(kelvin),
        _ => None,
    }
}

/// `value` in `from` converted to `to`.
fn convert(value: f64, from: &str, to: &str) -> Result<f64, String> {
    if from == to {
        return Ok(value);
    }
    if let Some(kelvin) = to_kelvin(value, from) {
        return from_kelvin(kelvin, to)
            .ok_or_else(|| format!("cannot convert temperature `{from}` to `{to}`"));
    }
    let find = |unit: &str| LINEAR_UNITS.iter().find(|(u, ..)| *u == unit);
    let (Some((_, q_from, f_from)), Some((_, q_to, f_to))) = (find(from), find(to)) else {
        return Err(format!("cannot convert `{from}` to `{to}`: unknown unit"));
    };
    if q_from != q_to {
        return Err(format!(
            "cannot convert `{from}` ({q_from}) to `{to}` ({q_to})"
        ));
    }
    Ok(value * f_from / f_to)
}

fn units_convert(params: &Map<String, Value>) -> Result<Value, String> {
    let (from, to) = (text(params, "from")?, text(params, "to")?);
    match param(params, "value")? {
        Value::Null => Ok(Value::Null),
        v => {
            let value = v
                .as_f64()
                .ok_or("parameter `value` must be a number or null")?;
            num(convert(value, from, to)?)
        }
    }
}

fn meters_normalise(params: &Map<String, Value>) -> Result<Value, String> {
    let unit = text(params, "unit")?;
    let readings = param(params, "readings")?
        .as_array()
        .ok_or("parameter `readings` must be a list")?;
    let mut out = Vec::with_capacity(readings.len());
    for (i, reading) in readings.iter().enumerate() {
        let Value::Object(fields) = reading else {
            return Err(format!("`readings[{i}]` must be an object"));
        };
        let Some(value) = fields.get("value").and_then(Value::as_f64) else {
            continue;
        };
        let from = match fields.get("unit") {
            Some(Value::String(u)) => u.as_str(),
            _ => unit,
        };
        let mut fields = fields.clone();
        fields.insert("value".to_owned(), num(convert(value, from, unit)?)?);
        fields.insert("unit".to_owned(), Value::String(unit.to_owned()));
        out.push(Value::Object(fields));
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn call(name: &str, params: Value) -> Result<Value, String> {
        let Value::Object(params) = params else {
            panic!("params must be an object")
        };
        lookup(name).expect("known function")(&params)
    }

    #[test]
    fn aggregates() {
        let values = json!({"values": [1, 2.5, -0.5]});
        assert_eq!(call("sum", values.clone()).unwrap(), json!(3.0));
        assert_eq!(call("avg", values.clone()).unwrap(), json!(1.0));
        assert_eq!(call("min", values.clone()).unwrap(), json!(-0.5));
        assert_eq!(call("max", values.clone()).unwrap(), json!(2.5));
        assert_eq!(call("count", values).unwrap(), json!(3));
        assert_eq!(call("avg", json!({"values": []})).unwrap(), Value::Null);
        assert!(call("sum", json!({"values": [1, "x"]})).is_err());
        assert!(call("sum", json!({})).is_err());
    }

    #[test]
    fn scalar_functions() {
        assert_eq!(call("abs", json!({"value": -2})).unwrap(), json!(2.0));
        assert_eq!(
            call("round", json!({"value": 2.345, "digits": 2})).unwrap(),
            json!(2.35)
        );
        assert_eq!(
            call("clamp", json!({"value": 12, "min": 0, "max": 10})).unwrap(),
            json!(10.0)
        );
        assert_eq!(
            call(
                "linear_scale",
                json!({"value": 12, "in_min": 4, "in_max": 20, "out_min": 0, "out_max": 100})
            )
            .unwrap(),
            json!(50.0)
        );
        assert_eq!(
            call("celsius_to_fahrenheit", json!({"value": 100})).unwrap(),
            json!(212.0)
        );
        assert_eq!(
            call("fahrenheit_to_celsius", json!({"value": 212})).unwrap(),
            json!(100.0)
        );
    }

    #[test]
    fn series_functions() {
        assert_eq!(
            call(
                "moving_average",
                json!({"values": [1, 3, 5, 7], "window": 2})
            )
            .unwrap(),
            json!([1.0, 2.0, 4.0, 6.0])
        );
        let crossed = |p: f64, c: f64, d: &str| {
            call(
                "threshold_crossed",
                json!({"previous": p, "current": c, "threshold": 10, "direction": d}),
            )
            .unwrap()
        };
        assert_eq!(crossed(9.0, 11.0, "up"), json!(true));
        assert_eq!(crossed(9.0, 11.0, "down"), json!(false));
        assert_eq!(crossed(11.0, 9.0, "any"), json!(true));
        assert_eq!(crossed(11.0, 12.0, "any"), json!(false));
        assert_eq!(
            call(
                "json_merge",
                json!({"base": {"a": 1, "b": {"c": 2, "d": 3}}, "patch": {"b": {"c": null, "e": 4}, "f": 5}})
            )
            .unwrap(),
            json!({"a": 1, "b": {"d": 3, "e": 4}, "f": 5})
        );
    }

    #[test]
    fn unit_conversions() {
        let c = call(
            "units.convert",
            json!({"value": 212, "from": "F", "to": "C"}),
        )
        .unwrap();
        assert!((c.as_f64().unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(
            call(
                "units.convert",
                json!({"value": 2, "from": "bar", "to": "kPa"})
            )
            .unwrap(),
            json!(200.0)
        );
        assert_eq!(
            call(
                "units.convert",
                json!({"value": null, "from": "F", "to": "C"})
            )
            .unwrap(),
            Value::Null
        );
        assert!(
            call(
                "units.convert",
                json!({"value": 1, "from": "bar", "to": "kWh"})
            )
            .is_err()
        );
        let readings = json!({"readings": [
            {"value": 1500, "unit": "Wh", "timestamp": 1},
            {"value": null, "timestamp": 2},
            {"value": 2, "timestamp": 3}
        ], "unit": "kWh"});
        assert_eq!(
            call("meters.normalise", readings).unwrap(),
            json!([
                {"value": 1.5, "unit": "kWh", "timestamp": 1},
                {"value": 2.0, "unit": "kWh", "timestamp": 3}
            ])
        );
    }

    #[test]
    fn unknown_names_are_absent() {
        assert!(lookup("now_ms").is_none());
        assert!(names().any(|n| n == "units.convert"));
    }
}
