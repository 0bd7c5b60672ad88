//! Timers and cron expressions of the deployed programs' triggers. Each firing is an event with the id
//! `timer:<program>:<trigger index>:<scheduled ms>`, so a firing journaled before a crash is
//! not executed again after the restart. Firings missed while the node was down are not
//! replayed; the next one after the start is.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eyeflow_actors::exec::Trigger;
use eyeflow_ir::pb::TriggerKind;
use serde_json::json;

use super::Background;
use crate::node::Node;
use crate::{Error, Result};

/// How often the timer thread looks at the clock.
const TICK: Duration = Duration::from_millis(50);

/// The next firing of `trigger` strictly after `after_ms` (Unix ms), if it has a schedule.
pub fn next_firing(trigger: &Trigger, after_ms: u64) -> Result<Option<u64>> {
    match trigger.kind {
        TriggerKind::Timer if trigger.interval_ms > 0 => {
            Ok(Some(next_interval(trigger.interval_ms, after_ms)))
        }
        TriggerKind::Cron => next_cron(&trigger.cron, after_ms),
        _ => Ok(None),
    }
}

/// The next multiple of `interval_ms` after `after_ms`: aligned on the epoch, so that a
/// restart computes the same instants.
fn next_interval(interval_ms: u64, after_ms: u64) -> u64 {
    (after_ms / interval_ms + 1).saturating_mul(interval_ms)
}

/// The next firing of cron `expression` strictly after `after_ms` (UTC).
fn next_cron(expression: &str, after_ms: u64) -> Result<Option<u64>> {
    let cron = parse_cron(expression)?;
    let after = i64::try_from(after_ms)
        .ok()
        .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
        .ok_or_else(|| Error::Node {
            reason: format!("time {after_ms} ms is out of range"),
        })?;
    let next = cron
        .find_next_occurrence(&after, false)
        .map_err(|e| Error::Node {
            reason: format!("cron `{expression}` has no next firing: {e}"),
        })?;
    Ok(u64::try_from(next.timestamp_millis()).ok())
}

/// Parses a cron expression (5 fields, or 6 with seconds first).
pub fn parse_cron(expression: &str) -> Result<croner::Cron> {
    croner::Cron::new(expression)
        .with_seconds_optional()
        .parse()
        .map_err(|e| Error::Node {
            reason: format!("cron expression `{expression}` is invalid: {e}"),
        })
}

/// The timer thread.
pub struct Timers(Background);

impl Timers {
    /// Starts firing the TIMER and CRON triggers of `node`'s active programs (programs
    /// deployed later are picked up at the next tick).
    pub fn start(node: Node) -> Self {
        Self(Background::spawn("eyeflow-timers", node, run))
    }

    /// Stops firing.
    pub fn stop(self) {
        self.0.stop();
    }
}

fn run(node: &Node, stop: &AtomicBool) {
    // (program id, version, trigger index) → next firing, Unix ms.
    let mut due: BTreeMap<(String, String, usize), u64> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        let now = crate::now_ms();
        let programs = node.active_programs();
        due.retain(|(id, version, _), _| {
            programs
                .iter()
                .any(|p| p.id() == id && p.version() == version)
        });
        for program in &programs {
            for (index, trigger) in program.triggers().iter().enumerate() {
                let key = (program.id().to_owned(), program.version().to_owned(), index);
                let next = match due.get(&key) {
                    Some(next) => *next,
                    None => match next_firing(trigger, now) {
                        Ok(Some(next)) => {
                            due.insert(key.clone(), next);
                            next
                        }
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::error!(program = program.id(), "trigger {index}: {e}");
                            due.insert(key.clone(), u64::MAX);
                            continue;
                        }
                    },
                };
                if now < next {
                    continue;
                }
                fire(node, program.id(), index, trigger, next, now);
                match next_firing(trigger, now) {
                    Ok(Some(following)) => due.insert(key, following),
                    _ => due.insert(key, u64::MAX),
                };
            }
        }
        std::thread::sleep(TICK);
    }
}

fn fire(node: &Node, program: &str, index: usize, trigger: &Trigger, scheduled: u64, now: u64) {
    let payload = json!({ "scheduled_ms": scheduled, "fired_ms": now, "trigger": index });
    match trigger.accepts(&payload) {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::error!(program, "trigger {index}: filter: {e}");
            return;
        }
    }
    let event_id = format!("timer:{program}:{index}:{scheduled}");
    let source = match trigger.kind {
        TriggerKind::Cron => "cron",
        _ => "timer",
    };
    if let Err(e) = node.submit(program, &event_id, source, payload) {
        tracing::error!(program, "timer event {event_id} not accepted: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30T14:35:10.500Z.
    const NOW: u64 = 1_796_049_310_500;

    #[test]
    fn intervals_align_on_the_epoch() {
        assert_eq!(next_interval(1000, NOW), 1_796_049_311_000);
        assert_eq!(next_interval(1000, 1_796_049_311_000), 1_796_049_312_000);
        assert_eq!(next_interval(60_000, NOW), 1_796_049_360_000);
    }

    #[test]
    fn cron_expressions_with_five_or_six_fields() {
        // Every minute at second 0 → 14:36:00.
        assert_eq!(
            next_cron("* * * * *", NOW).unwrap(),
            Some(1_796_049_360_000)
        );
        // 6 fields, seconds first: 02:15:00 every day → tomorrow 02:15:00 UTC.
        assert_eq!(
            next_cron("0 15 2 * * *", NOW).unwrap(),
            Some(1_796_091_300_000)
        );
        // Every 15 s → 14:35:15.
        assert_eq!(
            next_cron("*/15 * * * * *", NOW).unwrap(),
            Some(1_796_049_315_000)
        );
        let err = next_cron("61 * * * *", NOW).unwrap_err().to_string();
        assert!(err.contains("61 * * * *"), "{err}");
    }
}
