//! Event routing: which deployed programs an event from a source starts. The webhook API,
//! MQTT and Kafka hand their events to the node, which routes them here against the active
//! programs' triggers (timers and polled plugins belong to one program's trigger and submit
//! to it directly).

use std::sync::Arc;

use eyeflow_ir::pb::TriggerKind;
use serde_json::Value;

use crate::exec::Program;

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
        let mut verdict = Verdict::Filtered;
        for trigger in matched {
            match trigger.accepts(payload) {
                Ok(true) => {
                    verdict = Verdict::Accepted;
                    break;
                }
                Ok(false) => {}
                Err(e) => verdict = Verdict::FilterError(e.to_string()),
            }
        }
        routed.push((program.clone(), verdict));
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
}
