//! `sensor-sim`: simulated temperature, pressure and level sensors.
//!
//! A connector and event source whose readings are a pure function of (sensor id, kind,
//! time, seed): a daily sine around a base value plus hashed noise per second, so tests
//! and replays see the same numbers. `read("sensor/<id>/<kind>", {"t"?, "seed"?})`;
//! `poll` yields an endless, numbered series of readings of a fixed set of sensors.

use eyeflow_plugin_sdk::{Batch, Connector, Event, PluginError, Value, clock, json};

/// Kinds of sensor: name, unit, base value, daily amplitude, noise amplitude.
const KINDS: [(&str, &str, f64, f64, f64); 3] = [
    ("temperature", "°C", 70.0, 5.0, 0.5),
    ("pressure", "bar", 4.0, 0.4, 0.05),
    ("level", "%", 60.0, 20.0, 1.0),
];

/// The sensors the event source reports on, in turn.
const POLLED: [(&str, &str); 3] = [
    ("boiler-1", "temperature"),
    ("boiler-1", "pressure"),
    ("tank-1", "level"),
];

/// Time of event 1 (2024-01-01T00:00:00Z); event `n` is read `n` seconds later.
const POLL_EPOCH_MS: u64 = 1_704_067_200_000;

/// Most events returned by one poll, whatever `max` says.
const MAX_BATCH: u32 = 1_000;

const DAY_MS: f64 = 86_400_000.0;

struct SensorSim;

/// splitmix64 over the inputs: a stable hash with no dependency.
fn mix(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// One reading, or `InvalidInput` for an unknown kind.
fn reading(sensor: &str, kind: &str, t_ms: u64, seed: u64) -> Result<Value, PluginError> {
    let (_, unit, base, amplitude, noise) = KINDS
        .iter()
        .find(|(name, ..)| *name == kind)
        .ok_or_else(|| {
            PluginError::invalid_input(format!(
                "unknown sensor kind {kind:?} (temperature, pressure, level)"
            ))
        })?;
    let id_hash = mix(seed, format!("{sensor}/{kind}").as_bytes());
    let phase = (id_hash % 1_000) as f64 / 1_000.0 * std::f64::consts::TAU;
    let wave = (t_ms as f64 / DAY_MS * std::f64::consts::TAU + phase).sin();
    let jitter = mix(id_hash, &(t_ms / 1_000).to_le_bytes()) % 2_001;
    let jitter = (jitter as f64 - 1_000.0) / 1_000.0;
    let value = base + amplitude * wave + noise * jitter;
    Ok(json!({
        "sensor": sensor,
        "kind": kind,
        "value": (value * 10.0).round() / 10.0,
        "unit": unit,
        "ts": t_ms,
    }))
}

fn u64_param(params: &Value, name: &str) -> Result<Option<u64>, PluginError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            PluginError::invalid_input(format!("`{name}` must be a non-negative integer"))
        }),
    }
}

impl Connector for SensorSim {
    fn describe() -> Value {
        json!({
            "id": "sensor-sim",
            "resources": "sensor/<id>/<kind>, kind = temperature (°C) | pressure (bar) | level (%)",
            "params": {"t": "time in ms since the epoch (default: now)", "seed": "integer (default 0)"},
            "source": {"sensors": POLLED.iter().map(|(s, k)| format!("sensor/{s}/{k}")).collect::<Vec<_>>(),
                       "events": "sensor-sim-<n>, one reading per second from 2024-01-01"},
        })
    }

    fn read(key: &str, params: Value) -> Result<Value, PluginError> {
        if !(params.is_null() || params.is_object()) {
            return Err(PluginError::invalid_input("params must be an object"));
        }
        let mut parts = key.split('/');
        let (Some("sensor"), Some(sensor), Some(kind), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PluginError::invalid_input(format!(
                "key {key:?} is not sensor/<id>/<kind>"
            )));
        };
        if sensor.is_empty() {
            return Err(PluginError::invalid_input("empty sensor id"));
        }
        let t = match u64_param(&params, "t")? {
            Some(t) => t,
            None => clock::now_ms(),
        };
        let seed = u64_param(&params, "seed")?.unwrap_or(0);
        reading(sensor, kind, t, seed)
    }

    fn poll(cursor: Option<String>, max: u32) -> Result<Batch, PluginError> {
        let after: u64 = match cursor.as_deref() {
            None | Some("") => 0,
            Some(c) => c
                .parse()
                .map_err(|_| PluginError::invalid_input(format!("bad cursor {c:?}")))?,
        };
        let count = u64::from(max.min(MAX_BATCH));
        let events = (after + 1..=after + count)
            .map(|n| {
                let (sensor, kind) = POLLED[((n - 1) % POLLED.len() as u64) as usize];
                Ok(Event {
                    id: format!("sensor-sim-{n}"),
                    key: format!("sensor/{sensor}/{kind}"),
                    payload: reading(sensor, kind, POLL_EPOCH_MS + n * 1_000, 0)?,
                })
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        Ok(Batch {
            events,
            cursor: (after + count).to_string(),
        })
    }
}

eyeflow_plugin_sdk::export_connector!(SensorSim);
