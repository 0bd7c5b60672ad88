//! The port every external service a node depends on reports through (Redis, Kafka,
//! Vault/OpenBao, an MQTT broker): whether it answers, what waits in its outbox, and how to
//! flush that outbox at shutdown. Readiness, metrics and the drain read only this trait.

use std::time::Duration;

/// An external backend the node depends on: its health feeds readiness and metrics, and
/// shutdown flushes it.
pub trait Backend: Send + Sync {
    /// Short name (`redis`, `kafka`, `vault`, `mqtt`).
    fn name(&self) -> &'static str;
    /// Whether it answers now.
    fn healthy(&self) -> bool;
    /// Whether the node is not ready while this backend is down (false for backends that
    /// buffer, like Kafka's outbox).
    fn required(&self) -> bool {
        true
    }
    /// Records waiting to be published, for backends with an outbox.
    fn backlog(&self) -> Option<u64> {
        None
    }
    /// Publishes what is waiting, until `deadline` at most (what is left stays for the next
    /// start).
    fn flush(&self, deadline: Duration) {
        let _ = deadline;
    }
}
