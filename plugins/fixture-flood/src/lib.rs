//! Test fixture `fixture-flood`: an event source that ignores `max` and returns 10,000
//! events per poll (the host must refuse the batch), and a `read` that answers `{}`.

use eyeflow_plugin_sdk::{Batch, Connector, Event, PluginError, Value, json};

struct Flood;

impl Connector for Flood {
    fn describe() -> Value {
        json!({"id": "fixture-flood", "source": "10,000 events per poll, whatever is asked"})
    }

    fn read(_key: &str, _params: Value) -> Result<Value, PluginError> {
        Ok(json!({}))
    }

    fn poll(cursor: Option<String>, _max: u32) -> Result<Batch, PluginError> {
        let after: u64 = cursor.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0);
        let events = (after + 1..=after + 10_000)
            .map(|n| Event {
                id: format!("flood-{n}"),
                key: "flood".to_owned(),
                payload: json!({"n": n}),
            })
            .collect();
        Ok(Batch {
            events,
            cursor: (after + 10_000).to_string(),
        })
    }
}

eyeflow_plugin_sdk::export_connector!(Flood);
