//! Operator metrics in the Prometheus format: a process-wide recorder, and decorators around
//! the ports (journal and its audit entries, resource gate, plugins) that count what passes through them —
//! instruction latency by opcode, fallbacks by strategy, arbiter waits and timeouts, plugin
//! traps. Gauges that are cheaper to read than to track (queue depth, outbox backlog,
//! backend health) are set by the API when `/metrics` is scraped.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use eyeflow_actors::gates::{ResourceGate, ResourceHold};
use eyeflow_actors::ports::{
    Accepted, AuditEntry, CallError, CallErrorKind, CapabilityRef, EventRecord, ExecutionOutcome,
    Journal, JournalError, OnResume, PendingExecution, PluginPort, StepRecord,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::Value;

/// The process-wide Prometheus recorder (installed on first use; several nodes in one
/// process share it).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".to_owned()),
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a host application's): then ours only
        // renders what is recorded through it, which is nothing; say so once.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}

/// Counts `n` frames dropped from device `device` (corrupt, malformed, unexpected).
pub fn device_bad_frames(device: &str, n: u64) {
    metrics::counter!("eyeflow_device_bad_frames_total", "device" => device.to_owned())
        .increment(n);
}

/// Counts one finished execution of `program` with `outcome` and its latency.
pub fn execution(program: &str, outcome: &str, took: Duration) {
    metrics::counter!("eyeflow_executions_total", "program" => program.to_owned(), "outcome" => outcome.to_owned())
        .increment(1);
    metrics::histogram!("eyeflow_execution_duration_seconds", "program" => program.to_owned())
        .record(took.as_secs_f64());
}

/// Counts what a retention pass at `now_ms` deleted (`eyeflow_retention_deleted_total` by
/// kind) and sets the age of the oldest finished execution it kept
/// (`eyeflow_retention_oldest_finished_age_seconds`, 0 when it kept none).
pub fn retention(pass: &crate::retention::Pass, now_ms: u64) {
    for (kind, count) in pass.deleted() {
        metrics::counter!("eyeflow_retention_deleted_total", "kind" => kind).increment(count);
    }
    let age_ms = pass
        .oldest_finished_ms
        .map_or(0, |finished| now_ms.saturating_sub(finished));
    metrics::gauge!("eyeflow_retention_oldest_finished_age_seconds")
        .set(Duration::from_millis(age_ms).as_secs_f64());
}

/// The journal, metered through the audit entries its step writes carry: every entry is
/// one instruction attempt, or an effect's intent (`started`), which counts only as an
/// audit entry.
pub struct MeteredJournal<J> {
    inner: Arc<J>,
}

impl<J> MeteredJournal<J> {
    /// Meters `inner`.
    pub fn new(inner: Arc<J>) -> Self {
        Self { inner }
    }
}

#[async_trait::async_trait]
impl<J: Journal> Journal for MeteredJournal<J> {
    fn accept(&self, event: &EventRecord) -> Result<Accepted, JournalError> {
        self.inner.accept(event)
    }

    async fn steps(
        &self,
        steps: &[StepRecord],
        audit: &[AuditEntry],
        durable: bool,
    ) -> Result<(), JournalError> {
        self.inner.steps(steps, audit, durable).await?;
        audit.iter().for_each(meter);
        Ok(())
    }

    async fn finish(
        &self,
        execution_id: &str,
        steps: &[StepRecord],
        audit: &[AuditEntry],
        outcome: &ExecutionOutcome,
    ) -> Result<(), JournalError> {
        self.inner
            .finish(execution_id, steps, audit, outcome)
            .await?;
        audit.iter().for_each(meter);
        Ok(())
    }

    fn decide(
        &self,
        execution_id: &str,
        instruction_id: &str,
        approved: bool,
    ) -> Result<(), JournalError> {
        self.inner.decide(execution_id, instruction_id, approved)
    }

    fn decision(
        &self,
        execution_id: &str,
        instruction_id: &str,
    ) -> Result<Option<bool>, JournalError> {
        self.inner.decision(execution_id, instruction_id)
    }

    fn pending(&self) -> Result<Vec<PendingExecution>, JournalError> {
        self.inner.pending()
    }
}

/// Counts one journaled audit entry: its instruction's duration, outcome and fallback.
fn meter(entry: &AuditEntry) {
    metrics::counter!("eyeflow_audit_entries_total").increment(1);
    if entry.outcome == "started" {
        return;
    }
    let took_ms = entry.finished_ms.saturating_sub(entry.started_ms);
    metrics::histogram!("eyeflow_instruction_duration_seconds", "opcode" => entry.opcode.clone())
        .record(Duration::from_millis(took_ms).as_secs_f64());
    metrics::counter!("eyeflow_instructions_total", "opcode" => entry.opcode.clone(), "outcome" => entry.outcome.clone())
        .increment(1);
    if let Some(strategy) = &entry.fallback {
        metrics::counter!("eyeflow_fallbacks_total", "strategy" => strategy.clone()).increment(1);
    }
}

/// The resource arbiter, metered: time spent waiting for a permit, and timeouts.
pub struct MeteredGate<G> {
    inner: G,
}

impl<G> MeteredGate<G> {
    /// Meters `inner`.
    pub fn new(inner: G) -> Self {
        Self { inner }
    }
}

#[async_trait::async_trait]
impl<G: ResourceGate> ResourceGate for MeteredGate<G> {
    async fn acquire(
        &self,
        key: &str,
        holder: &str,
        priority: u32,
        max_wait: Duration,
    ) -> Result<ResourceHold, CallError> {
        let start = Instant::now();
        let result = self.inner.acquire(key, holder, priority, max_wait).await;
        metrics::histogram!("eyeflow_arbiter_wait_seconds").record(start.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!("eyeflow_arbiter_timeouts_total", "resource" => key.to_owned())
                .increment(1);
        }
        result
    }
}

/// The plugin host, metered: traps and failures by plugin capability.
pub struct MeteredPlugins<P> {
    inner: P,
}

impl<P> MeteredPlugins<P> {
    /// Meters `inner`.
    pub fn new(inner: P) -> Self {
        Self { inner }
    }
}

fn count_failure<T>(capability: &CapabilityRef, result: &Result<T, CallError>) {
    if let Err(e) = result {
        let name = capability.id.clone();
        if e.kind == CallErrorKind::Trap {
            metrics::counter!("eyeflow_plugin_traps_total", "plugin" => name).increment(1);
        } else {
            metrics::counter!("eyeflow_plugin_failures_total", "plugin" => name, "kind" => e.kind.as_str())
                .increment(1);
        }
    }
}

#[async_trait::async_trait]
impl<P: PluginPort> PluginPort for MeteredPlugins<P> {
    async fn read(
        &self,
        connector: &CapabilityRef,
        key: &str,
        params: &Value,
        call: &str,
        deadline: Duration,
    ) -> Result<Value, CallError> {
        let result = self
            .inner
            .read(connector, key, params, call, deadline)
            .await;
        count_failure(connector, &result);
        result
    }

    async fn invoke(
        &self,
        capability: &CapabilityRef,
        action: &str,
        input: &Value,
        idempotency_key: &str,
        deadline: Duration,
    ) -> Result<Value, CallError> {
        let result = self
            .inner
            .invoke(capability, action, input, idempotency_key, deadline)
            .await;
        count_failure(capability, &result);
        result
    }

    fn on_resume(&self, capability: &CapabilityRef, action: &str) -> OnResume {
        self.inner.on_resume(capability, action)
    }
}
