//! Connector plugins as event sources: each `plugin` trigger of an active program is polled
//! (every `interval_ms`, default 1 s, at least 100 ms) through the plugin's `source`
//! interface with the cursor kept in the embedded store. Each trigger is polled on a thread
//! of its own, so a slow or hanging source delays no other. A poll asks for at most 100
//! events; a plugin that returns more is refused (the host checks it), which bounds a
//! source's rate to 100 events per interval. Events are journaled before the cursor
//! advances, each under the plugin's own event id (`plugin:<source>:<event id>@<program>`),
//! so a poll repeated after a crash executes nothing twice.

use std::collections::BTreeMap;
use std::time::Duration;

use eyeflow_actors::exec::Program;
use eyeflow_actors::ports::CapabilityRef;
use eyeflow_ir::pb::TriggerKind;
use serde_json::Value;

use super::{Background, Context, Shutdown};
use crate::node::Node;
use crate::store::{Space, Write};

/// How often the poller looks for due sources.
const TICK: Duration = Duration::from_millis(50);
/// Poll interval of a trigger without `interval_ms`.
const DEFAULT_INTERVAL_MS: u64 = 1000;
/// Shortest poll interval.
const MIN_INTERVAL_MS: u64 = 100;
/// Events taken per poll.
const BATCH: u32 = 100;
/// Deadline of one poll call.
const POLL_DEADLINE: Duration = Duration::from_secs(2);

/// Starts polling the `plugin` triggers of the node's active programs.
pub(super) fn start(cx: &mut Context<'_>) -> crate::Result<()> {
    let poller = Background::spawn("plugin-sources", cx, run)?;
    cx.started.push(Box::new(poller));
    Ok(())
}

fn run(node: &Node, shutdown: &Shutdown) {
    let mut next: BTreeMap<(String, usize), u64> = BTreeMap::new();
    let mut polling: BTreeMap<(String, usize), std::thread::JoinHandle<()>> = BTreeMap::new();
    while !shutdown.raised() {
        polling.retain(|_, poll| !poll.is_finished());
        let now = crate::now_ms();
        for program in node.active_programs() {
            for (index, trigger) in program.triggers().iter().enumerate() {
                if trigger.kind != TriggerKind::Plugin || trigger.source.is_empty() {
                    continue;
                }
                let key = (program.id().to_owned(), index);
                if polling.contains_key(&key) || next.get(&key).is_some_and(|due| now < *due) {
                    continue;
                }
                let interval = if trigger.interval_ms > 0 {
                    trigger.interval_ms.max(MIN_INTERVAL_MS)
                } else {
                    DEFAULT_INTERVAL_MS
                };
                next.insert(key.clone(), now + interval);
                let (node, program) = (node.clone(), program.clone());
                match std::thread::Builder::new()
                    .name("eyeflow-source-poll".into())
                    .spawn(move || poll(&node, &program, index))
                {
                    Ok(handle) => {
                        polling.insert(key, handle);
                    }
                    Err(e) => tracing::error!("cannot start a source poll: {e}"),
                }
            }
        }
        std::thread::sleep(TICK);
    }
    // A poll in progress finishes first.
    for (_, poll) in polling {
        let _ = poll.join();
    }
}

/// One poll of one trigger: journal every accepted event, then advance the cursor.
fn poll(node: &Node, program: &Program, index: usize) {
    let Some(trigger) = program.triggers().get(index) else {
        return;
    };
    let program_id = program.id();
    let cursor_key = format!("{program_id}/{index}");
    let cursor = match node
        .store()
        .get(Space::SourceCursors, cursor_key.as_bytes())
    {
        Ok(cursor) => cursor.map(|c| String::from_utf8_lossy(&c).into_owned()),
        Err(e) => {
            tracing::error!(program = program_id, "plugin source cursor unreadable: {e}");
            return;
        }
    };
    let source = CapabilityRef::new(&trigger.source, semver::VersionReq::STAR);
    let batch = match node
        .plugins()
        .poll(&source, cursor.as_deref(), BATCH, POLL_DEADLINE)
    {
        Ok(batch) => batch,
        Err(e) => {
            metrics::counter!("eyeflow_source_poll_failures_total", "source" => trigger.source.clone(), "kind" => e.kind.as_str())
                .increment(1);
            tracing::warn!(program = program_id, source = %trigger.source, "plugin source poll failed: {e}");
            return;
        }
    };
    for event in &batch.events {
        let payload: Value = serde_json::from_str(&event.payload)
            .unwrap_or_else(|_| Value::String(event.payload.clone()));
        match node.fire(program, index, &event.id, payload) {
            Ok(_) => {}
            // It can never be accepted (its filter fails on it, or it is too large): skipped,
            // so that it does not hold the source.
            Err(e @ crate::Error::BadEvent { .. }) => {
                tracing::error!(
                    program = program_id,
                    "plugin event {} skipped: {e}",
                    event.id
                );
            }
            Err(e) => {
                // The cursor stays: the next poll delivers this event again.
                tracing::error!(
                    program = program_id,
                    "plugin event {} not accepted: {e}",
                    event.id
                );
                return;
            }
        }
    }
    if cursor.as_deref() != Some(batch.cursor.as_str())
        && let Err(e) = node.store().commit(
            [Write::Put(
                Space::SourceCursors,
                cursor_key.into_bytes(),
                batch.cursor.into_bytes(),
            )],
            node.journal().durability(),
        )
    {
        tracing::error!(
            program = program_id,
            "plugin source cursor not saved (events repeat, deduplicated): {e}"
        );
    }
}
