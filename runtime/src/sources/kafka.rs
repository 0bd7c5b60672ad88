//! Kafka topics as an event source: when `[kafka] source_topics` is set, the node consumes
//! them in its consumer group ([`KafkaSource`]) and commits a message's offset only after
//! [`Node::ingest`] journaled it (keyed `kafka:<topic>:<id>@<program>`, the id being the
//! `event-id` header or `partition/offset`). An event that can never be accepted is skipped
//! so that it does not hold its partition; an overloaded node makes consumption wait.

use eyeflow_ir::pb::TriggerKind;

use super::{Context, Source};
use crate::backends::kafka::{KafkaSource, SourceEvent};

/// Starts consuming `[kafka] source_topics`, if any.
pub(super) fn start(cx: &mut Context<'_>) -> crate::Result<()> {
    let Some(config) = cx
        .backends
        .kafka
        .as_ref()
        .filter(|kafka| !kafka.source_topics.is_empty())
    else {
        return Ok(());
    };
    let node = cx.node.clone();
    let consumer = KafkaSource::start(config, move |event: &SourceEvent| {
        match node.ingest(
            TriggerKind::Kafka,
            &event.topic,
            &event.event_id,
            &event.payload,
        ) {
            Ok(_) => Ok(()),
            // It can never be accepted: skipped, so that it does not hold the partition.
            // (Overloaded and the rest: retried, consumption waits.)
            Err(e @ crate::Error::BadEvent { .. }) => {
                tracing::error!("kafka event {} skipped: {e}", event.event_id);
                Ok(())
            }
            Err(e) => Err(e),
        }
    })?;
    cx.started.push(Box::new(Topics(consumer)));
    Ok(())
}

/// The running consumer.
struct Topics(KafkaSource);

impl Source for Topics {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn stop(self: Box<Self>) {
        self.0.stop();
    }
}
