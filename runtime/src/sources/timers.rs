//! Fires the timers and cron expressions of the deployed programs' triggers (their schedules
//! are [`Trigger::next_firing`](eyeflow_actors::exec::Trigger::next_firing)'s). Each firing is an event whose id is its scheduled time
//! (journaled as `timer:<trigger index>:<scheduled ms>@<program>`, or `cron:…`), so a firing
//! journaled before a crash is not executed again after the restart. Firings missed while the node was down are not
//! replayed; the next one after the start is.

use std::collections::BTreeMap;
use std::time::Duration;

use eyeflow_actors::exec::Program;
use serde_json::json;

use super::{Background, Context, Shutdown};
use crate::node::Node;

/// How often the timer thread looks at the clock.
const TICK: Duration = Duration::from_millis(50);

/// Starts firing the TIMER and CRON triggers of the node's active programs (programs
/// deployed later are picked up at the next tick).
pub(super) fn start(cx: &mut Context<'_>) -> crate::Result<()> {
    let timers = Background::spawn("timers", cx, run)?;
    cx.started.push(Box::new(timers));
    Ok(())
}

fn run(node: &Node, shutdown: &Shutdown) {
    // (program id, version, trigger index) → next firing, Unix ms.
    let mut due: BTreeMap<(String, String, usize), u64> = BTreeMap::new();
    while !shutdown.raised() {
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
                fire(node, program, index, next, now);
                due.insert(key, trigger.next_firing(now).unwrap_or(u64::MAX));
            }
        }
        std::thread::sleep(TICK);
    }
}

fn fire(node: &Node, program: &Program, index: usize, scheduled: u64, now: u64) {
    let payload = json!({ "scheduled_ms": scheduled, "fired_ms": now, "trigger": index });
    if let Err(e) = node.fire(program, index, &scheduled.to_string(), payload) {
        tracing::error!(
            program = program.id(),
            "timer {index} firing at {scheduled} not accepted: {e}"
        );
    }
}
