//! Fires the timers and cron expressions of the deployed programs' triggers (their schedules
//! are [`Trigger::next_firing`]'s). Each firing is an event with the id
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

/// How often the timer thread looks at the clock.
const TICK: Duration = Duration::from_millis(50);

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
                    None => match trigger.next_firing(now) {
                        Some(next) => {
                            due.insert(key.clone(), next);
                            next
                        }
                        None => continue,
                    },
                };
                if now < next {
                    continue;
                }
                fire(node, program.id(), index, trigger, next, now);
                due.insert(key, trigger.next_firing(now).unwrap_or(u64::MAX));
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
