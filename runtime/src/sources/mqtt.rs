//! MQTT topics as an event source (rumqttc): the node subscribes (QoS 1, persistent
//! session) to the topic filters of its programs' MQTT triggers, wildcards included, and
//! acknowledges a message only after [`Node::ingest`] journaled it, so a message the node
//! did not journal is redelivered by the broker. The event's id is the payload's `event_id`
//! (or `id`) field when present — publish one to make redelivery harmless — else a fresh
//! one; it is journaled as `mqtt:<topic>:<id>@<program>`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use eyeflow_actors::ports::Backend;
use eyeflow_ir::pb::TriggerKind;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde::Deserialize;
use serde_json::Value;

use super::{Context, Source};
use crate::node::Node;
use eyeflow_actors::sync::Locked;

/// `[mqtt]` of `node.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// Broker host.
    pub host: String,
    /// Broker port (default 1883).
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// Client id (default `eyeflow-<node id>`).
    pub client_id: Option<String>,
}

fn default_mqtt_port() -> u16 {
    1883
}

/// Starts the `[mqtt]` source: subscribes for the node and registers the connection's
/// health.
pub(super) fn start(config: &MqttSection, cx: &mut Context<'_>) -> crate::Result<()> {
    let source = MqttSource::start(cx, config)?;
    cx.node
        .add_backend(Arc::new(MqttHealth(source.connected.clone())));
    cx.started.push(Box::new(source));
    Ok(())
}

/// A running MQTT subscription.
struct MqttSource {
    client: Client,
    connected: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// The event id of a message: its `event_id` or `id` field, else a random one.
fn event_id(payload: &Value) -> String {
    ["event_id", "id"]
        .iter()
        .find_map(|field| match &payload[field] {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| {
            let mut bytes = [0u8; 16];
            // A failing RNG leaves zeros plus the time: still unique enough per node.
            let _ = getrandom::fill(&mut bytes);
            format!("mqtt-{}-{}", crate::now_ms(), hex::encode(bytes))
        })
}

/// The topic filters of `node`'s active programs.
fn filters(node: &Node) -> BTreeSet<String> {
    node.active_programs()
        .iter()
        .flat_map(|p| {
            p.triggers()
                .iter()
                .filter(|t| t.kind == TriggerKind::Mqtt && !t.source.is_empty())
                .map(|t| t.source.clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

impl MqttSource {
    /// Connects to the broker of `config` for the node of `cx` (node id in the default
    /// client id) and starts delivering until the shutdown signal.
    fn start(cx: &Context<'_>, config: &MqttSection) -> crate::Result<Self> {
        let node = cx.node.clone();
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("eyeflow-{}", node.node_id()));
        let mut options = MqttOptions::new(client_id, config.host.clone(), config.port);
        options.set_keep_alive(Duration::from_secs(10));
        options.set_manual_acks(true);
        options.set_clean_session(false);
        let (client, mut connection) = Client::new(options, 256);
        let connected = Arc::new(AtomicBool::new(false));
        let stop = cx.shutdown.clone();
        let subscribed = Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
        let mut threads = Vec::new();

        // Delivery: journal, then acknowledge.
        let (up, halt, subs, sub_client, ack_client, deliver_node) = (
            connected.clone(),
            stop.clone(),
            subscribed.clone(),
            client.clone(),
            client.clone(),
            node.clone(),
        );
        let deliver = std::thread::Builder::new().name("eyeflow-mqtt".into());
        threads.push(deliver.spawn(move || {
            for notification in connection.iter() {
                if halt.raised() {
                    break;
                }
                match notification {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        up.store(true, Ordering::SeqCst);
                        tracing::info!("MQTT connected");
                        // A new session may have lost the subscriptions: make them again.
                        let mut subs = subs.locked();
                        subs.clear();
                        subscribe_new(&sub_client, &deliver_node, &mut subs);
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let payload: Value = serde_json::from_slice(&publish.payload)
                            .unwrap_or_else(|_| {
                                Value::String(
                                    String::from_utf8_lossy(&publish.payload).into_owned(),
                                )
                            });
                        let id = event_id(&payload);
                        match deliver_node.ingest(TriggerKind::Mqtt, &publish.topic, &id, &payload)
                        {
                            Ok(_) => {
                                if let Err(e) = ack_client.ack(&publish) {
                                    tracing::warn!("MQTT ack of {id} failed: {e}");
                                }
                            }
                            Err(e) => tracing::error!(
                                topic = %publish.topic,
                                "MQTT message {id} not journaled (the broker redelivers it): {e}"
                            ),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if halt.raised() {
                            break;
                        }
                        if up.swap(false, Ordering::SeqCst) {
                            tracing::warn!("MQTT connection lost: {e}; reconnecting");
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            }
        }).map_err(crate::Error::io("(start the mqtt source)"))?);

        // Subscriptions follow deployments.
        let (halt, sub_client, watch_node) = (stop, client.clone(), node);
        let follow = std::thread::Builder::new().name("eyeflow-mqtt-subscribe".into());
        threads.push(
            follow
                .spawn(move || {
                    while !halt.raised() {
                        let mut subs = subscribed.locked();
                        subscribe_new(&sub_client, &watch_node, &mut subs);
                        drop(subs);
                        std::thread::sleep(Duration::from_millis(200));
                    }
                })
                .map_err(crate::Error::io("(start the mqtt source)"))?,
        );
        Ok(Self {
            client,
            connected,
            threads,
        })
    }
}

impl Source for MqttSource {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    /// Disconnects and waits for the threads.
    fn stop(self: Box<Self>) {
        let _ = self.client.disconnect();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn subscribe_new(client: &Client, node: &Node, subscribed: &mut BTreeSet<String>) {
    for filter in filters(node) {
        if subscribed.contains(&filter) {
            continue;
        }
        match client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
            Ok(()) => {
                subscribed.insert(filter);
            }
            Err(e) => tracing::warn!("MQTT subscribe to {filter} failed: {e}"),
        }
    }
}

struct MqttHealth(Arc<AtomicBool>);

impl Backend for MqttHealth {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn healthy(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_come_from_the_payload_when_present() {
        assert_eq!(event_id(&serde_json::json!({"event_id": "e-1"})), "e-1");
        assert_eq!(event_id(&serde_json::json!({"id": 7})), "7");
        let a = event_id(&serde_json::json!({"value": 8.7}));
        let b = event_id(&serde_json::json!({"value": 8.7}));
        assert!(a.starts_with("mqtt-") && a != b);
    }
}
