//! Event routing: which deployed programs an event from a source starts, and the one
//! event-id convention every source follows. The webhook API, MQTT and Kafka hand their
//! events to the node, which routes them here against the active programs' triggers;
//! timers, cron and polled plugins belong to one program's trigger, whose filter is checked
//! here too ([`verdict`]).

use std::sync::Arc;

use eyeflow_ir::pb::TriggerKind;
use serde_json::Value;

use crate::exec::{Program, Trigger};

/// The journal key of an event for one program, the same for every source:
/// `<kind>:<source>:<id>@<program>`. `source` is where the event came from (the webhook
/// source, the MQTT topic, the Kafka topic, the plugin source, the trigger's index for a
/// timer or cron); `id` is the sender's own id when it gives one (`X-Event-Id`, MQTT's
/// `event_id` or `id` field, Kafka's `event-id` header, a plugin event's id), else one the
/// source derives from where the event sits (Kafka's `partition/offset`, a timer's
/// scheduled time), else a random one. A redelivered event has the same key, and the
/// journal refuses a key it has seen: it is not executed twice.
pub fn event_key(kind: TriggerKind, source: &str, id: &str, program: &str) -> String {
    format!("{}:{source}:{id}@{program}", kind_name(kind))
}

/// The lowercase name of a trigger kind (`webhook`, `mqtt`, `timer`, ...).
pub fn kind_name(kind: TriggerKind) -> &'static str {
    match kind {
        TriggerKind::Webhook => "webhook",
        TriggerKind::Mqtt => "mqtt",
        TriggerKind::Kafka => "kafka",
        TriggerKind::Timer => "timer",
        TriggerKind::Cron => "cron",
        TriggerKind::Plugin => "plugin",
        TriggerKind::Manual => "manual",
        TriggerKind::Unspecified => "event",
    }
}

/// What one trigger's filter says about `payload`.
pub fn verdict(trigger: &Trigger, payload: &Value) -> Verdict {
    match trigger.accepts(payload) {
        Ok(true) => Verdict::Accepted,
        Ok(false) => Verdict::Filtered,
        Err(e) => Verdict::FilterError(e.to_string()),
    }
}

/// What a program's triggers say about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A trigger of the program matches the source and its filter accepts the payload.
    Accepted,
    /// Triggers match the source, but every filter said no.
    Filtered,
    /// Triggers match the source; none accepted and one filter could not be evaluated on
    /// this payload (why).
    FilterError(String),
}

/// The active programs with a trigger of `kind` on `source`, each with its verdict on
/// `payload`, in the order of `programs`.
pub fn route(
    programs: &[Arc<Program>],
    kind: TriggerKind,
    source: &str,
    payload: &Value,
) -> Vec<(Arc<Program>, Verdict)> {
    let mut routed = Vec::new();
    for program in programs {
        let mut matched = program
            .triggers()
            .iter()
            .filter(|t| t.kind == kind && source_matches(kind, &t.source, source))
            .peekable();
        if matched.peek().is_none() {
            continue;
        }
        let mut overall = Verdict::Filtered;
        for trigger in matched {
            match verdict(trigger, payload) {
                Verdict::Accepted => {
                    overall = Verdict::Accepted;
                    break;
                }
                Verdict::Filtered => {}
                error => overall = error,
            }
        }
        routed.push((program.clone(), overall));
    }
    routed
}

/// Whether an event from `source` matches a trigger on `pattern`: MQTT topics with `+` (one
/// level) and `#` (the rest), every other kind by equality.
pub fn source_matches(kind: TriggerKind, pattern: &str, source: &str) -> bool {
    if kind != TriggerKind::Mqtt {
        return pattern == source;
    }
    let mut levels = source.split('/');
    for want in pattern.split('/') {
        match (want, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (want, Some(got)) if want == got => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_wildcards() {
        let m = |p, s| source_matches(TriggerKind::Mqtt, p, s);
        assert!(m("plant-a/boiler-1/pressure", "plant-a/boiler-1/pressure"));
        assert!(m("plant-a/+/pressure", "plant-a/boiler-2/pressure"));
        assert!(!m("plant-a/+/pressure", "plant-a/boiler-2/temp"));
        assert!(!m("plant-a/+", "plant-a/boiler-2/pressure"));
        assert!(m("plant-a/#", "plant-a/boiler-2/pressure"));
        assert!(m("#", "x"));
        assert!(!m("plant-a/boiler-1", "plant-a/boiler-1/pressure"));
        assert!(!source_matches(TriggerKind::Webhook, "a/+", "a/b"));
        assert!(source_matches(TriggerKind::Webhook, "orders", "orders"));
    }

    #[test]
    fn every_source_keys_its_events_alike() {
        assert_eq!(
            event_key(TriggerKind::Webhook, "orders", "e-1", "p"),
            "webhook:orders:e-1@p"
        );
        assert_eq!(
            event_key(TriggerKind::Kafka, "alarms", "0/42", "p"),
            "kafka:alarms:0/42@p"
        );
        assert_eq!(
            event_key(TriggerKind::Cron, "1", "1700", "p"),
            "cron:1:1700@p"
        );
        assert_ne!(
            event_key(TriggerKind::Mqtt, "a", "1", "p"),
            event_key(TriggerKind::Kafka, "a", "1", "p")
        );
    }
}
