//! The execution engine against in-memory ports: every opcode, the fallback engine, time
//! windows, postconditions, human validation, resume, secrets, panics, and the example rules.

// The fakes below are test code outside `#[test]` functions: a poisoned lock there is a bug
// in the test, so unwrapping is the right answer.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eyeflow_actors::exec::{self, Clock, Effects, Program, Report};
use eyeflow_actors::gates::{Boundary, Decided, Fallbacks, ResourceGate, ResourceHold};
use eyeflow_actors::ports::*;
use eyeflow_compiler::CompileOptions;
use serde_json::{Value, json};

// ---------------------------------------------------------------- fakes

/// Monday 2024-01-01 10:00 UTC.
const MONDAY_10H: u64 = 1_704_067_200_000 + 10 * 3_600_000;

#[derive(Default)]
struct FakeClock {
    now: AtomicU64,
    sleeps: Mutex<Vec<u64>>,
}

#[async_trait::async_trait]
impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
    async fn sleep(&self, d: Duration) {
        self.sleeps.lock().unwrap().push(d.as_millis() as u64);
        self.now.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

/// The fallback engine's actor, faked: logs each decision and waits a retry's delay on the
/// fake clock.
struct FakeFallbacks {
    clock: Arc<FakeClock>,
    log: Mutex<Vec<Decided>>,
}

#[async_trait::async_trait]
impl Fallbacks for FakeFallbacks {
    async fn decided(&self, decision: Decided) -> Result<(), CallError> {
        if let Some(delay) = decision.delay {
            self.clock.sleep(delay).await;
        }
        self.log.lock().unwrap().push(decision);
        Ok(())
    }
}

type ReadFn = dyn Fn(&CapabilityRef, &str, &Value) -> Result<Value, CallError> + Send + Sync;
type InvokeFn = dyn Fn(&CapabilityRef, &str, &Value) -> Result<Value, CallError> + Send + Sync;

/// One plugin call: (kind, capability, key or action, params, idempotency key or, for a
/// read, its call).
type PluginCall = (String, String, String, Value, String);

struct FakePlugins {
    read: Mutex<Box<ReadFn>>,
    invoke: Mutex<Box<InvokeFn>>,
    calls: Mutex<Vec<PluginCall>>,
    /// What each action declares for a resume (absent: ambiguous).
    resume: Mutex<HashMap<String, OnResume>>,
}

#[async_trait::async_trait]
impl PluginPort for FakePlugins {
    async fn read(
        &self,
        c: &CapabilityRef,
        key: &str,
        params: &Value,
        call: &str,
        _d: Duration,
    ) -> Result<Value, CallError> {
        self.calls.lock().unwrap().push((
            "read".into(),
            c.id.clone(),
            key.into(),
            params.clone(),
            call.into(),
        ));
        (self.read.lock().unwrap())(c, key, params)
    }
    async fn invoke(
        &self,
        c: &CapabilityRef,
        action: &str,
        input: &Value,
        idem: &str,
        _d: Duration,
    ) -> Result<Value, CallError> {
        self.calls.lock().unwrap().push((
            "invoke".into(),
            c.id.clone(),
            action.into(),
            input.clone(),
            idem.into(),
        ));
        (self.invoke.lock().unwrap())(c, action, input)
    }
    fn on_resume(&self, _c: &CapabilityRef, action: &str) -> OnResume {
        self.resume
            .lock()
            .unwrap()
            .get(action)
            .cloned()
            .unwrap_or_default()
    }
}

type HttpFn = dyn Fn(&HttpRequest) -> Result<HttpResponse, CallError> + Send + Sync;
struct FakeHttp {
    handler: Mutex<Box<HttpFn>>,
    requests: Mutex<Vec<HttpRequest>>,
    /// When set, a request is answered only once as many requests as the barrier counts
    /// are in flight together (else it fails `timeout` after 5 s).
    together: Mutex<Option<Arc<tokio::sync::Barrier>>>,
}
#[async_trait::async_trait]
impl HttpPort for FakeHttp {
    fn admit(&self, r: &HttpRequest) -> Result<(), CallError> {
        if r.url.contains("forbidden.example") {
            return Err(CallError::new(
                CallErrorKind::Denied,
                "forbidden.example",
                "not allowed by this node's configuration",
            ));
        }
        Ok(())
    }
    async fn send(&self, r: &HttpRequest) -> Result<HttpResponse, CallError> {
        self.admit(r)?;
        self.requests.lock().unwrap().push(r.clone());
        let together = self.together.lock().unwrap().clone();
        if let Some(barrier) = together
            && tokio::time::timeout(Duration::from_secs(5), barrier.wait())
                .await
                .is_err()
        {
            return Err(CallError::new(
                CallErrorKind::Timeout,
                "http",
                "alone: no sibling request in flight",
            ));
        }
        (self.handler.lock().unwrap())(r)
    }
}

type LlmFn = dyn Fn(&LlmRequest) -> Result<String, CallError> + Send + Sync;
struct FakeLlm {
    handler: Mutex<Box<LlmFn>>,
    requests: Mutex<Vec<LlmRequest>>,
}
#[async_trait::async_trait]
impl LlmPort for FakeLlm {
    async fn complete(&self, r: &LlmRequest) -> Result<String, CallError> {
        self.requests.lock().unwrap().push(r.clone());
        (self.handler.lock().unwrap())(r)
    }
}

#[derive(Default)]
struct FakeEvents(Mutex<Vec<(String, String, Value, String)>>);
#[async_trait::async_trait]
impl EventSink for FakeEvents {
    async fn emit(
        &self,
        topic: &str,
        key: &str,
        payload: &Value,
        idem: &str,
    ) -> Result<(), CallError> {
        self.0
            .lock()
            .unwrap()
            .push((topic.into(), key.into(), payload.clone(), idem.into()));
        Ok(())
    }
}

#[derive(Default)]
struct Mem(Mutex<HashMap<String, (Value, Option<Duration>)>>);
#[async_trait::async_trait]
impl NodeMemory for Mem {
    async fn get(&self, key: &str) -> Result<Option<Value>, MemoryError> {
        Ok(self.0.lock().unwrap().get(key).map(|v| v.0.clone()))
    }
    async fn set(&self, key: &str, value: &Value, ttl: Duration) -> Result<(), MemoryError> {
        self.0
            .lock()
            .unwrap()
            .insert(key.into(), (value.clone(), Some(ttl)));
        Ok(())
    }
}
#[async_trait::async_trait]
impl ClusterMemory for Mem {
    async fn get(&self, key: &str) -> Result<Option<Value>, MemoryError> {
        Ok(self.0.lock().unwrap().get(key).map(|v| v.0.clone()))
    }
    async fn put(&self, key: &str, value: &Value) -> Result<(), MemoryError> {
        self.0
            .lock()
            .unwrap()
            .insert(key.into(), (value.clone(), None));
        Ok(())
    }
}

#[derive(Default)]
struct FakeSecrets {
    values: HashMap<String, String>,
    /// Names the source refuses to give, with the kind of error it answers.
    refused: Mutex<HashMap<String, CallErrorKind>>,
}
#[async_trait::async_trait]
impl SecretSource for FakeSecrets {
    async fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        if let Some(kind) = self.refused.lock().unwrap().get(name) {
            return Err(SecretError::new(name, *kind, "vault: refused"));
        }
        Ok(self.values.get(name).map(Secret::new))
    }
}

/// At each plugin invocation: the invoked valve and the ids of the durable steps.
type DurableAtInvokes = Arc<Mutex<Vec<(Value, Vec<String>)>>>;

#[derive(Default)]
struct MemJournal {
    /// Every step written, in order.
    steps: Mutex<Vec<StepRecord>>,
    /// How many of `steps` are durable.
    durable: Mutex<usize>,
    finished: Mutex<Option<ExecutionOutcome>>,
    decisions: Mutex<HashMap<String, bool>>,
    broken: AtomicBool,
    /// Audit entries, written with the steps.
    audit: Mutex<Vec<AuditEntry>>,
}
impl MemJournal {
    /// The durable steps as `instruction:status` (`set:started`, `set:done`...).
    fn durable_ids(&self) -> Vec<String> {
        let n = *self.durable.lock().unwrap();
        self.steps.lock().unwrap()[..n]
            .iter()
            .map(|s| format!("{}:{}", s.instruction_id, s.outcome.audit_name()))
            .collect()
    }
}
#[async_trait::async_trait]
impl Journal for MemJournal {
    fn accept(&self, _e: &EventRecord) -> Result<Accepted, JournalError> {
        Ok(Accepted::New {
            execution_id: "x".into(),
        })
    }
    async fn steps(
        &self,
        steps: &[StepRecord],
        audit: &[AuditEntry],
        durable: bool,
    ) -> Result<(), JournalError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(JournalError::new("journal steps", "disk full"));
        }
        let mut all = self.steps.lock().unwrap();
        all.extend_from_slice(steps);
        self.audit.lock().unwrap().extend_from_slice(audit);
        if durable {
            *self.durable.lock().unwrap() = all.len();
        }
        Ok(())
    }
    async fn finish(
        &self,
        _id: &str,
        steps: &[StepRecord],
        audit: &[AuditEntry],
        outcome: &ExecutionOutcome,
    ) -> Result<(), JournalError> {
        self.steps(steps, audit, true).await?;
        *self.finished.lock().unwrap() = Some(outcome.clone());
        Ok(())
    }
    fn decide(&self, _e: &str, i: &str, approved: bool) -> Result<(), JournalError> {
        self.decisions.lock().unwrap().insert(i.into(), approved);
        Ok(())
    }
    fn decision(&self, _e: &str, i: &str) -> Result<Option<bool>, JournalError> {
        Ok(self.decisions.lock().unwrap().get(i).copied())
    }
    fn pending(&self) -> Result<Vec<PendingExecution>, JournalError> {
        Ok(Vec::new())
    }
}

#[derive(Default)]
struct FakeArbiter {
    busy: Mutex<Vec<String>>,
    acquired: Mutex<Vec<(String, u32, Duration)>>,
    held: Arc<AtomicU64>,
}
#[async_trait::async_trait]
impl ResourceGate for FakeArbiter {
    async fn acquire(
        &self,
        key: &str,
        _holder: &str,
        priority: u32,
        max_wait: Duration,
    ) -> Result<ResourceHold, CallError> {
        if self.busy.lock().unwrap().iter().any(|k| k == key) {
            return Err(CallError::new(CallErrorKind::Timeout, "arbiter", "busy"));
        }
        self.acquired
            .lock()
            .unwrap()
            .push((key.into(), priority, max_wait));
        let held = self.held.clone();
        held.fetch_add(1, Ordering::SeqCst);
        Ok(ResourceHold::new(move || {
            held.fetch_sub(1, Ordering::SeqCst);
        }))
    }
}

#[derive(Default)]
struct FakeBoundary(Mutex<Vec<(u32, bool)>>);
#[async_trait::async_trait]
impl Boundary for FakeBoundary {
    async fn checkpoint(&self, _e: &str, priority: u32, preemptible: bool) {
        self.0.lock().unwrap().push((priority, preemptible));
    }
}

struct World {
    clock: Arc<FakeClock>,
    plugins: Arc<FakePlugins>,
    http: Arc<FakeHttp>,
    llm: Arc<FakeLlm>,
    events: Arc<FakeEvents>,
    node: Arc<Mem>,
    cluster: Arc<Mem>,
    journal: Arc<MemJournal>,
    arbiter: Arc<FakeArbiter>,
    fallbacks: Arc<FakeFallbacks>,
    boundary: Arc<FakeBoundary>,
    secrets: Arc<FakeSecrets>,
}

const SECRET: &str = "s3cr3t-guidelines-value";

fn plausible_read(c: &CapabilityRef, _key: &str, params: &Value) -> Result<Value, CallError> {
    let sensor = params["key"]
        .as_str()
        .or(params["sensor"].as_str())
        .unwrap_or("");
    Ok(match c.id.as_str() {
        "sensor-sim" if sensor.contains("pressure") => json!({"value": 9.0, "unit": "bar"}),
        "sensor-sim" if sensor.contains("position") => json!({"value": 40.0}),
        "sensor-sim" if sensor.contains("supply") => json!({"value": 65.0}),
        "sensor-sim" if sensor.contains("return") || sensor.contains("chiller") => {
            json!({"value": 10.0})
        }
        "sensor-sim" if sensor.contains("flue") || sensor.contains("boiler") => {
            json!({"value": 500.0, "unit": "F"})
        }
        "http-json" if params["url"].as_str().unwrap_or("").contains("forecast") => {
            json!({"min_outdoor_c": -2.0})
        }
        "http-json" => json!({
            "readings": [{"value": 1500, "unit": "Wh", "timestamp": 10}, {"value": 2, "unit": "kWh", "timestamp": 20}],
            "last_timestamp": 20
        }),
        _ => json!({"value": 20.0}),
    })
}

impl World {
    fn new() -> Self {
        let clock = Arc::new(FakeClock::default());
        clock.now.store(MONDAY_10H, Ordering::SeqCst);
        let secrets = FakeSecrets {
            values: [
                ("kv/plant-a/triage-guidelines", SECRET),
                ("kv/plant-a/pager-token", "pager-token-value"),
                ("kv/plant-a/bms-api-token", "bms-token-value"),
                ("kv/api", "api-token-value"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            refused: Mutex::default(),
        };
        Self {
            clock: clock.clone(),
            plugins: Arc::new(FakePlugins {
                read: Mutex::new(Box::new(plausible_read)),
                invoke: Mutex::new(Box::new(|_, action, input| {
                    Ok(json!({"ok": true, "action": action, "input": input}))
                })),
                calls: Mutex::default(),
                resume: Mutex::default(),
            }),
            http: Arc::new(FakeHttp {
                handler: Mutex::new(Box::new(|_| {
                    Ok(HttpResponse {
                        status: 200,
                        body: json!({"id": "r-1"}),
                    })
                })),
                requests: Mutex::default(),
                together: Mutex::default(),
            }),
            llm: Arc::new(FakeLlm {
                handler: Mutex::new(Box::new(|_| {
                    Ok(r#"{"severity": "critical", "summary": "Chiller 2 tripped."}"#.to_owned())
                })),
                requests: Mutex::default(),
            }),
            events: Arc::default(),
            node: Arc::default(),
            cluster: Arc::default(),
            journal: Arc::default(),
            arbiter: Arc::default(),
            fallbacks: Arc::new(FakeFallbacks {
                clock: clock.clone(),
                log: Mutex::default(),
            }),
            boundary: Arc::default(),
            secrets: Arc::new(secrets),
        }
    }

    fn effects(&self) -> Effects {
        Effects {
            node_id: "node-1".into(),
            plugins: self.plugins.clone(),
            http: self.http.clone(),
            llm: self.llm.clone(),
            events: self.events.clone(),
            node_memory: self.node.clone(),
            cluster_memory: self.cluster.clone(),
            secrets: self.secrets.clone(),
            journal: self.journal.clone(),
            arbiter: self.arbiter.clone(),
            fallbacks: self.fallbacks.clone(),
            boundary: self.boundary.clone(),
            clock: self.clock.clone(),
        }
    }

    fn on_read(
        &self,
        f: impl Fn(&CapabilityRef, &str, &Value) -> Result<Value, CallError> + Send + Sync + 'static,
    ) {
        *self.plugins.read.lock().unwrap() = Box::new(f);
    }

    fn on_invoke(
        &self,
        f: impl Fn(&CapabilityRef, &str, &Value) -> Result<Value, CallError> + Send + Sync + 'static,
    ) {
        *self.plugins.invoke.lock().unwrap() = Box::new(f);
    }

    /// Answers invocations with `answer(n)` (n from 1) and records, at each one, the
    /// invoked valve and the ids of the steps durable at that moment.
    fn durable_at_invokes(
        &self,
        answer: impl Fn(usize) -> Result<Value, CallError> + Send + Sync + 'static,
    ) -> DurableAtInvokes {
        let journal = self.journal.clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let at_invoke = seen.clone();
        self.on_invoke(move |_, _, input| {
            let mut seen = at_invoke.lock().unwrap();
            seen.push((input["valve"].clone(), journal.durable_ids()));
            answer(seen.len())
        });
        seen
    }

    fn run(&self, program: &Program, payload: Value) -> Report {
        self.resume(program, payload, &[])
    }

    fn resume(&self, program: &Program, payload: Value, history: &[StepRecord]) -> Report {
        let event = EventRecord {
            event_id: "ev-1".into(),
            source: "test".into(),
            program_id: program.id().into(),
            program_version: program.version().into(),
            payload,
            priority: 128,
            accepted_at_ms: 0,
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(exec::execute(
                program,
                "exec-1",
                &event,
                history,
                &self.effects(),
            ))
    }

    fn steps(&self) -> Vec<StepRecord> {
        self.journal.steps.lock().unwrap().clone()
    }

    fn invokes(&self) -> Vec<PluginCall> {
        self.calls_of("invoke")
    }

    fn reads(&self) -> Vec<PluginCall> {
        self.calls_of("read")
    }

    fn calls_of(&self, method: &str) -> Vec<PluginCall> {
        self.plugins
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 == method)
            .cloned()
            .collect()
    }

    fn step_ids(&self) -> Vec<String> {
        self.steps().into_iter().map(|s| s.instruction_id).collect()
    }
}

fn compile(source: &str) -> Program {
    let ir = eyeflow_compiler::compile(
        source,
        &CompileOptions {
            source_name: "test.yaml".into(),
            compiled_by: "test".into(),
            compiled_at: 0,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Program::prepare(Arc::new(ir)).unwrap()
}

fn completed(report: Report) -> Value {
    match report {
        Report::Finished(ExecutionOutcome::Completed { value }) => value,
        other => panic!("expected Completed, got {other:?}"),
    }
}

fn failed(report: Report) -> (String, String) {
    match report {
        Report::Finished(ExecutionOutcome::Failed { class, message }) => (class, message),
        other => panic!("expected Failed, got {other:?}"),
    }
}

// ---------------------------------------------------------------- opcodes

#[test]
fn program_is_shareable() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Program>();
    send_sync::<Effects>();
}

const BRANCHY: &str = r#"
id: branchy
version: 1.0.0
instructions:
  - {id: double, op: EVAL, expression: event.x * 2, next: decide}
  - {id: decide, op: BRANCH, condition: double > 10, then: big, else: small}
  - {id: big, op: EVAL, expression: "'big'", next: joined}
  - {id: small, op: EVAL, expression: "'small'", next: joined}
  - {id: joined, op: MERGE, next: done}
  - {id: done, op: RETURN, expression: "{'double': double, 'joined': joined}"}
"#;

#[test]
fn eval_branch_merge_return() {
    let program = compile(BRANCHY);
    let w = World::new();
    let value = completed(w.run(&program, json!({"x": 7})));
    assert_eq!(value, json!({"double": 14, "joined": {"big": "big"}}));
    assert_eq!(w.step_ids(), ["double", "decide", "big", "joined", "done"]);
    assert_eq!(
        *w.journal.finished.lock().unwrap(),
        Some(ExecutionOutcome::Completed { value })
    );

    let w = World::new();
    let value = completed(w.run(&program, json!({"x": 1})));
    assert_eq!(value, json!({"double": 2, "joined": {"small": "small"}}));
    assert!(!w.step_ids().contains(&"big".to_owned()));
    // One audit entry per step, digests are hex SHA-256.
    let audit = w.journal.audit.lock().unwrap();
    assert_eq!(audit.len(), w.steps().len());
    assert!(
        audit
            .iter()
            .all(|e| e.output_digest.len() == 64 && e.node_id == "node-1")
    );
    assert_eq!(audit[0].opcode, "EVAL");
}

#[test]
fn branch_without_else_ends_that_path() {
    let program = compile(
        r#"
id: b
version: 1.0.0
instructions:
  - {id: check, op: BRANCH, condition: event.go, then: act}
  - {id: act, op: EVAL, expression: "1", next: after}
  - {id: after, op: RETURN, expression: "'acted'"}
"#,
    );
    let w = World::new();
    assert_eq!(
        completed(w.run(&program, json!({"go": false}))),
        Value::Null
    );
    assert_eq!(w.step_ids(), ["check"]);
    // A non-bool condition is invalid input.
    let w = World::new();
    assert_eq!(failed(w.run(&program, json!({"go": 3}))).0, "invalid_input");
}

#[test]
fn loop_with_branch_function_and_emit() {
    let program = compile(
        r#"
id: sweep
version: 1.0.0
requires: {sensor-sim: ^1.0}
instructions:
  - id: sweep
    op: LOOP
    over: event.boilers
    as: boiler
    max_iterations: 3
    body: [read, to_c, hot, raise]
    next: done
  - {id: read, op: LOAD_RESOURCE, capability: sensor-sim, params: {sensor: "boiler + '/flue'"}, next: to_c}
  - {id: to_c, op: CALL_FUNCTION, function: units.convert, params: {value: read.value, from: read.unit, to: "'C'"}, next: hot}
  - {id: hot, op: BRANCH, condition: to_c > 230.0, then: raise}
  - {id: raise, op: EMIT_EVENT, topic: alerts, event_key: boiler, expression: "{'boiler': boiler, 'c': to_c}"}
  - {id: done, op: RETURN, expression: "size(sweep)"}
"#,
    );
    let w = World::new();
    w.on_read(|_, _, params| {
        let hot = params["sensor"].as_str().unwrap().starts_with("b1");
        Ok(json!({"value": if hot { 500.0 } else { 212.0 }, "unit": "F"}))
    });
    let value = completed(w.run(&program, json!({"boilers": ["b1", "b2"]})));
    assert_eq!(value, json!(2));
    let events = w.events.0.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "alerts");
    assert_eq!(events[0].1, "b1");
    assert_eq!(events[0].3, "exec-1/sweep/0/raise/1");
    let ids = w.step_ids();
    assert!(ids.contains(&"sweep/1/to_c".to_owned()), "{ids:?}");
    assert!(!ids.contains(&"sweep/1/raise".to_owned()));
    let loop_out = w
        .steps()
        .into_iter()
        .find(|s| s.instruction_id == "sweep")
        .unwrap();
    let StepOutcome::Done { output } = loop_out.outcome else {
        panic!()
    };
    assert_eq!(output[1]["to_c"], json!(100.0));
    assert!(output[1].get("raise").is_none());

    // More items than the bound.
    let w = World::new();
    let (class, message) = failed(w.run(&program, json!({"boilers": ["a", "b", "c", "d"]})));
    assert_eq!(class, "invalid_input");
    assert!(message.contains("max_iterations"), "{message}");
}

#[test]
fn while_loop_is_bounded() {
    let program = compile(
        r#"
id: w
version: 1.0.0
instructions:
  - {id: spin, op: LOOP, while: "true", max_iterations: 4, body: [tick], next: done}
  - {id: tick, op: EVAL, expression: "1"}
  - {id: done, op: RETURN, expression: size(spin)}
"#,
    );
    let w = World::new();
    assert_eq!(completed(w.run(&program, json!({}))), json!(4));
}

/// `source` compiled for the MCU profile and prepared.
fn mcu_program(source: &str) -> Program {
    let options = CompileOptions {
        source_name: "test.yaml".into(),
        compiled_by: "test".into(),
        compiled_at: 0,
    };
    let ir = eyeflow_compiler::compile_for(source, &options, eyeflow_compiler::Target::Mcu)
        .unwrap_or_else(|e| panic!("{e}"));
    Program::prepare(Arc::new(ir)).unwrap()
}

/// An MCU program's LLM_CALL fills its prompt from bytecode slots and must get a value a
/// device holds (a long string is `invalid_output`, into the fallback); its EMIT_EVENT
/// sends its params as the payload, its key as a string, and its result is `true`.
#[test]
fn mcu_llm_calls_and_events() {
    let source = r#"
id: m
version: 1.0.0
instructions:
  - id: ask
    op: LLM_CALL
    model: tiny
    prompt: "Level {{level}}"
    slots: {level: {runtime: event.level}}
    fallback: {strategy: value, value: '"unknown"'}
    next: tell
  - {id: tell, op: EMIT_EVENT, topic: tank.alerts, event_key: event.site, params: {state: ask, level: event.level}, next: done}
  - {id: done, op: RETURN, expression: tell}
"#;
    let program = mcu_program(source);
    let w = World::new();
    *w.llm.handler.lock().unwrap() = Box::new(|_| Ok("high".to_owned()));
    let event = json!({"level": 7.5, "site": "north"});
    assert_eq!(completed(w.run(&program, event.clone())), json!(true));
    let prompt = w.llm.requests.lock().unwrap()[0].messages[0]
        .content
        .clone();
    assert_eq!(prompt, "Level 7.5");
    let emitted = w.events.0.lock().unwrap().clone();
    assert_eq!(
        (emitted[0].0.as_str(), emitted[0].1.as_str(), &emitted[0].2),
        (
            "tank.alerts",
            "north",
            &json!({"state": "high", "level": 7.5})
        )
    );
    // An answer longer than a device's string: the fallback value.
    *w.llm.handler.lock().unwrap() = Box::new(|_| Ok("x".repeat(33)));
    completed(w.run(&program, event));
    let emitted = w.events.0.lock().unwrap().clone();
    assert_eq!(emitted[1].2["state"], json!("unknown"));
    // A key that is not a string: `invalid_input` (a device formats no numbers).
    let (class, _) = failed(w.run(&program, json!({"level": 1, "site": 4})));
    assert_eq!(class, "invalid_input");
}

/// An MCU-profile program runs its bytecode, not its CEL: numbers are one `f64` type
/// (`7 / 2` is 3.5, where CEL's integer division gives 3), a field that is an object is an
/// `invalid_input` failure, L1 memory and loops work as for a server program.
#[test]
fn mcu_programs_run_their_bytecode() {
    let source = r#"
id: m
version: 1.0.0
instructions:
  - {id: half, op: EVAL, expression: "event.level / 2", next: keep}
  - {id: keep, op: STORE, scope: execution, key: k, expression: "half + 1", next: back}
  - {id: back, op: LOAD, scope: execution, key: k, next: spin}
  - {id: spin, op: LOOP, while: "back > 3.0", max_iterations: 3, body: [tick], next: done}
  - {id: tick, op: EVAL, expression: "event.name == 'pump' ? 'yes' : 'no'"}
  - {id: done, op: RETURN, expression: "back * 2"}
"#;
    let program = mcu_program(source);
    let w = World::new();
    let done = completed(w.run(&program, json!({"level": 7, "name": "pump"})));
    assert_eq!(done, json!(9));
    let outputs: Vec<(String, Value)> = w
        .steps()
        .into_iter()
        .filter_map(|s| match s.outcome {
            StepOutcome::Done { output } => Some((s.instruction_id, output)),
            _ => None,
        })
        .collect();
    assert_eq!(outputs[0], ("half".to_owned(), json!(3.5)));
    assert!(outputs.contains(&("spin/0/tick".to_owned(), json!("yes"))));
    let server = compile(&source.replace("back > 3.0", "back > 3"));
    assert_eq!(
        completed(w.run(&server, json!({"level": 7, "name": "pump"}))),
        json!(8)
    );

    let w = World::new();
    let (class, message) = failed(w.run(&program, json!({"level": {"deep": 1}})));
    assert_eq!(class, "invalid_input");
    assert!(message.contains("object or a list"), "{message}");
}

#[test]
fn store_and_load_in_every_scope() {
    let program = compile(
        r#"
id: mem
version: 1.0.0
instructions:
  - {id: miss, op: LOAD, scope: node, key: k/node, default: '{"n": 0}', next: put_node}
  - {id: put_node, op: STORE, scope: node, key: k/node, expression: "{'n': miss.n + 1}", ttl_seconds: 60, next: put_cluster}
  - {id: put_cluster, op: STORE, scope: cluster, key: k/cluster, expression: "[1, 2]", next: put_l1}
  - {id: put_l1, op: STORE, scope: execution, key: scratch, expression: "'here'", next: get_node}
  - {id: get_node, op: LOAD, scope: node, key: k/node, next: get_cluster}
  - {id: get_cluster, op: LOAD, scope: cluster, key: k/cluster, next: get_l1}
  - {id: get_l1, op: LOAD, scope: execution, key: scratch, next: absent}
  - {id: absent, op: LOAD, scope: execution, key: nothing, next: done}
  - id: done
    op: RETURN
    expression: "{'node': get_node.n, 'cluster': get_cluster, 'l1': get_l1, 'absent': absent, 'mem': memory.scratch}"
"#,
    );
    let w = World::new();
    let value = completed(w.run(&program, json!({})));
    assert_eq!(
        value,
        json!({"node": 1, "cluster": [1, 2], "l1": "here", "absent": null, "mem": "here"})
    );
    let node = w.node.0.lock().unwrap();
    assert_eq!(node["k/node"].1, Some(Duration::from_secs(60)));
    assert!(w.cluster.0.lock().unwrap().contains_key("k/cluster"));
}

#[test]
fn node_store_defaults_to_one_hour() {
    let program = compile(
        r#"
id: ttl
version: 1.0.0
instructions:
  - {id: put, op: STORE, scope: node, key: k, expression: "1"}
"#,
    );
    let w = World::new();
    completed(w.run(&program, json!({})));
    assert_eq!(
        w.node.0.lock().unwrap()["k"].1,
        Some(Duration::from_secs(3_600))
    );
}

const ACTION: &str = r#"
id: act
version: 1.0.0
priority: high
requires: {valve-sim: ^1.0, sensor-sim: ^1.0}
instructions:
  - id: read
    op: LOAD_RESOURCE
    capability: sensor-sim
    params: {sensor: "'p'", key: "'sensor/boiler-1/pressure'"}
    next: set
  - id: set
    op: CALL_ACTION
    capability: valve-sim
    action: set
    params: {valve: "'V-1'", position_percent: read.value}
    resource_key: valve/V-1
    next: done
  - {id: done, op: RETURN, expression: set.ok}
"#;

const TWO_ACTIONS: &str = r#"
id: two
version: 1.0.0
requires: {valve-sim: ^1.0, sensor-sim: ^1.0}
instructions:
  - {id: read, op: LOAD_RESOURCE, capability: sensor-sim, params: {key: "'p'"}, next: open}
  - {id: open, op: CALL_ACTION, capability: valve-sim, action: set, params: {valve: "'V-1'"}, next: check}
  - {id: check, op: EVAL, expression: open.ok, next: close}
  - {id: close, op: CALL_ACTION, capability: valve-sim, action: set, params: {valve: "'V-2'"}, next: done}
  - {id: done, op: RETURN, expression: check}
"#;

#[test]
fn the_answers_an_effect_is_decided_on_and_its_intent_are_durable_before_it_starts() {
    let program = compile(TWO_ACTIONS);
    let w = World::new();
    let seen = w.durable_at_invokes(|_| Ok(json!({"ok": true})));
    completed(w.run(&program, json!({})));
    // Before the first effect: the resource it was decided on and its intent. Before the
    // second: the first effect's result too, and the steps between them.
    let durable = |ids: &[&str]| ids.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (json!("V-1"), durable(&["read:done", "open:started"])),
            (
                json!("V-2"),
                durable(&[
                    "read:done",
                    "open:started",
                    "open:done",
                    "check:done",
                    "close:started"
                ])
            ),
        ]
    );
    // The end carries the last effect's result and RETURN's, durably, with the outcome.
    assert_eq!(
        w.journal.durable_ids(),
        [
            "read:done",
            "open:started",
            "open:done",
            "check:done",
            "close:started",
            "close:done",
            "done:done"
        ]
    );
    assert!(w.journal.finished.lock().unwrap().is_some());
    // Every step has its audit entry, written in the same journal write.
    let audit = w.journal.audit.lock().unwrap();
    let outcomes: Vec<String> = audit
        .iter()
        .map(|e| format!("{}:{}", e.instruction_id, e.outcome))
        .collect();
    assert_eq!(outcomes, w.journal.durable_ids());
}

/// One action retried up to 3 times.
const RETRIED_ACTION: &str = r#"
id: r
version: 1.0.0
requires: {valve-sim: ^1.0}
instructions:
  - id: act
    op: CALL_ACTION
    capability: valve-sim
    action: set
    params: {v: "1"}
    retry: {max_retries: 3, backoff_ms: 10}
"#;

#[test]
fn a_failed_effect_attempt_is_durable_before_its_retry() {
    let program = compile(RETRIED_ACTION);
    let w = World::new();
    let seen = w.durable_at_invokes(|n| {
        if n < 3 {
            Err(CallError::new(CallErrorKind::Unavailable, "v", "down"))
        } else {
            Ok(json!({"ok": true}))
        }
    });
    completed(w.run(&program, json!({})));
    let seen: Vec<Vec<String>> = seen.lock().unwrap().iter().map(|s| s.1.clone()).collect();
    assert_eq!(seen[0], ["act:started"]);
    assert_eq!(
        seen[1],
        ["act:started", "act:failed:unavailable", "act:started"]
    );
    assert_eq!(
        seen[2],
        [
            "act:started",
            "act:failed:unavailable",
            "act:started",
            "act:failed:unavailable",
            "act:started"
        ]
    );
}

#[test]
fn load_resource_and_call_action() {
    let program = compile(ACTION);
    let w = World::new();
    assert_eq!(completed(w.run(&program, json!({}))), json!(true));
    let calls = w.plugins.calls.lock().unwrap().clone();
    assert_eq!(calls[0].0, "read");
    assert_eq!(calls[0].1, "sensor-sim");
    assert_eq!(calls[0].2, "sensor/boiler-1/pressure");
    assert_eq!(
        calls[0].4, "exec-1/read/1",
        "a read is made for its instruction's call"
    );
    assert_eq!(calls[1].0, "invoke");
    assert_eq!(calls[1].2, "set");
    assert_eq!(calls[1].3, json!({"valve": "V-1", "position_percent": 9.0}));
    assert_eq!(calls[1].4, "exec-1/set/1");
    let acquired = w.arbiter.acquired.lock().unwrap().clone();
    assert_eq!(
        acquired,
        [("valve/V-1".to_owned(), 64, Duration::from_millis(2_000))]
    );
    assert_eq!(w.arbiter.held.load(Ordering::SeqCst), 0, "permit released");
    // Every instruction passed the scheduler's boundary at the program's priority.
    assert_eq!(*w.boundary.0.lock().unwrap(), vec![(64, false); 3]);
}

#[test]
fn an_action_the_signed_program_does_not_permit_never_runs() {
    let mut ir = eyeflow_compiler::compile(
        ACTION,
        &CompileOptions {
            source_name: "test.yaml".into(),
            compiled_by: "test".into(),
            compiled_at: 0,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for ins in &mut ir.instructions {
        ins.permissions = None;
    }
    // The validator refuses it at load, naming the permission.
    let refused = eyeflow_ir::validate::validate(&ir).expect_err("refused at load");
    assert!(refused.to_string().contains("can_actuate"), "{refused}");
    // Prepared anyway (as a bug elsewhere would), the executor refuses the instruction.
    let program = Program::prepare(Arc::new(ir)).unwrap();
    let w = World::new();
    let (class, message) = failed(w.run(&program, json!({})));
    assert_eq!(class, "denied");
    assert!(message.contains("can_actuate"), "{message}");
    let calls = w.plugins.calls.lock().unwrap().clone();
    assert!(
        calls.iter().all(|c| c.0 != "invoke"),
        "the action ran: {calls:?}"
    );
}

#[test]
fn busy_resource_is_a_resource_timeout() {
    let program = compile(ACTION);
    let w = World::new();
    w.arbiter.busy.lock().unwrap().push("valve/V-1".into());
    assert_eq!(failed(w.run(&program, json!({}))).0, "resource_timeout");
    assert!(w.invokes().is_empty());
}

const API: &str = r#"
id: api
version: 1.0.0
instructions:
  - id: post
    op: CALL_API
    http: {method: POST, url: "https://api.example/v1/x", headers: {Content-Type: application/json}}
    secret: kv/api
    expression: "{'n': event.n}"
    output_schema: '{"type": "object", "required": ["id"]}'
    next: done
  - {id: done, op: RETURN, expression: post.id}
"#;

#[test]
fn call_api_sends_body_and_credential() {
    let program = compile(API);
    let w = World::new();
    assert_eq!(completed(w.run(&program, json!({"n": 3}))), json!("r-1"));
    let request = w.http.requests.lock().unwrap()[0].clone();
    assert_eq!(request.method, "POST");
    assert_eq!(request.body, Some(json!({"n": 3})));
    assert_eq!(request.idempotency_key.as_deref(), Some("exec-1/post/1"));
    assert!(request.headers.contains(&(
        "Authorization".to_owned(),
        "Bearer api-token-value".to_owned()
    )));
    let journal = serde_json::to_string(&w.steps()).unwrap();
    assert!(!journal.contains("api-token-value"));
}

#[test]
fn an_http_call_the_egress_refuses_journals_no_intent_and_cannot_be_in_doubt() {
    let program = compile(&API.replace("api.example", "forbidden.example"));
    let w = World::new();
    let (class, _) = failed(w.run(&program, json!({"n": 3})));
    assert_eq!(class, "denied");
    assert!(w.http.requests.lock().unwrap().is_empty(), "nothing sent");
    assert_eq!(statuses(&w.steps()), ["post:failed:denied"]);
}

#[test]
fn http_statuses_map_to_classes() {
    let program = compile(API);
    for (status, class) in [
        (500, "unavailable"),
        (503, "unavailable"),
        (429, "rate_limit"),
        (404, "invalid_input"),
        (403, "denied"),
        (408, "timeout"),
    ] {
        let w = World::new();
        *w.http.handler.lock().unwrap() = Box::new(move |_| {
            Ok(HttpResponse {
                status,
                body: json!({}),
            })
        });
        assert_eq!(
            failed(w.run(&program, json!({"n": 1}))).0,
            class,
            "{status}"
        );
    }
    // A 2xx answer that misses a required property.
    let w = World::new();
    *w.http.handler.lock().unwrap() = Box::new(|_| {
        Ok(HttpResponse {
            status: 201,
            body: json!({"other": 1}),
        })
    });
    assert_eq!(failed(w.run(&program, json!({"n": 1}))).0, "invalid_output");
}

#[test]
fn secret_refused_by_its_source_fails_the_call_with_its_class() {
    let program = compile(API);
    for (kind, class) in [
        (CallErrorKind::Denied, "denied"),
        (CallErrorKind::Unavailable, "unavailable"),
    ] {
        let w = World::new();
        w.secrets
            .refused
            .lock()
            .unwrap()
            .insert("kv/api".into(), kind);
        let (got, message) = failed(w.run(&program, json!({"n": 1})));
        assert_eq!(got, class);
        assert!(message.contains("kv/api"), "{message}");
        assert!(w.http.requests.lock().unwrap().is_empty());
    }
    // A secret the source does not hold is refused before the call too.
    let w = World::new();
    let (class, message) = failed(w.run(
        &compile(&API.replace("secret: kv/api", "secret: kv/absent")),
        json!({"n": 1}),
    ));
    assert_eq!(class, "denied");
    assert!(message.contains("kv/absent"), "{message}");
}

#[test]
fn call_service_uses_the_http_port() {
    let program = compile(
        r#"
id: svc
version: 1.0.0
instructions:
  - id: page
    op: CALL_SERVICE
    service: pager
    http: {method: POST, url: "https://pager.example/alerts"}
    expression: "{'m': 'hi'}"
"#,
    );
    let w = World::new();
    completed(w.run(&program, json!({})));
    assert_eq!(
        w.http.requests.lock().unwrap()[0].url,
        "https://pager.example/alerts"
    );
}

#[test]
fn unknown_function_is_refused_at_prepare() {
    let ir = eyeflow_compiler::compile(
        r#"
id: f
version: 1.0.0
instructions:
  - {id: f, op: CALL_FUNCTION, function: now_ms}
"#,
        &CompileOptions {
            source_name: "f.yaml".into(),
            compiled_by: "t".into(),
            compiled_at: 0,
        },
    )
    .unwrap();
    let err = Program::prepare(Arc::new(ir)).unwrap_err().to_string();
    assert!(err.contains("`f`") && err.contains("now_ms"), "{err}");
}

const LLM: &str = r#"
id: llm
version: 1.0.0
instructions:
  - id: classify
    op: LLM_CALL
    model: big-model
    temperature: 0.1
    max_tokens: 100
    system_prompt: "Guidelines: {{guidelines}}"
    prompt: "Alarm: {{alarm}}"
    slots:
      guidelines: {vault: kv/plant-a/triage-guidelines}
      alarm: {runtime: event.alarm}
    examples:
      - {input: '{"alarm": "a"}', output: '{"severity": "minor", "summary": "s"}'}
    output_schema: '{"type": "object", "required": ["severity", "summary"], "properties": {"severity": {"enum": ["critical", "minor"]}}}'
    fallback: {strategy: model, model: small-model, on: [model_unavailable, invalid_output]}
    next: done
  - {id: done, op: RETURN, expression: classify.severity}
"#;

#[test]
fn llm_call_builds_the_frozen_context() {
    let program = compile(LLM);
    let w = World::new();
    assert_eq!(
        completed(w.run(&program, json!({"alarm": "CH-2 trip"}))),
        json!("critical")
    );
    let request = w.llm.requests.lock().unwrap()[0].clone();
    assert_eq!(request.model, "big-model");
    assert!(request.json_output);
    assert_eq!(request.max_tokens, 100);
    let roles: Vec<&str> = request.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(request.messages[0].content, format!("Guidelines: {SECRET}"));
    assert_eq!(request.messages[3].content, "Alarm: CH-2 trip");
}

#[test]
fn vault_secret_never_reaches_journal_or_audit() {
    let program = compile(LLM);
    let w = World::new();
    // The model fails once so that failure records exist too.
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    *w.llm.handler.lock().unwrap() = Box::new(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(CallError::new(
                CallErrorKind::ModelUnavailable,
                "llm",
                "no such model",
            ))
        } else {
            Ok(r#"{"severity": "minor", "summary": "ok"}"#.into())
        }
    });
    completed(w.run(&program, json!({"alarm": "x"})));
    let journal = serde_json::to_string(&w.steps()).unwrap();
    let audit = serde_json::to_string(&*w.journal.audit.lock().unwrap()).unwrap();
    assert!(!journal.contains(SECRET) && !audit.contains(SECRET));
    assert!(!format!("{:?}", w.steps()).contains(SECRET));
}

/// Everything the journal and the audit hold for the run of `w`, as text.
fn stored(w: &World) -> String {
    format!(
        "{}\n{}\n{:?}",
        serde_json::to_string(&w.steps()).unwrap(),
        serde_json::to_string(&*w.journal.audit.lock().unwrap()).unwrap(),
        w.journal.finished.lock().unwrap()
    )
}

#[test]
fn a_provider_error_quoting_the_prompt_stores_the_secret_name_only() {
    let program = compile(LLM);
    let w = World::new();
    // Both models fail with an error that quotes the whole request, vault slot included.
    *w.llm.handler.lock().unwrap() = Box::new(|r| {
        Err(CallError::new(
            CallErrorKind::ModelUnavailable,
            "llm",
            format!("model refused the request {:?}", r.messages),
        ))
    });
    let (class, message) = failed(w.run(&program, json!({"alarm": "x"})));
    assert_eq!(class, "model_unavailable");
    let name = "[secret:kv/plant-a/triage-guidelines]";
    assert!(
        message.contains(name) && !message.contains(SECRET),
        "{message}"
    );
    let steps = w.steps();
    assert_eq!(steps.len(), 2, "{steps:?}");
    for step in &steps {
        let StepOutcome::Failed { message, .. } = &step.outcome else {
            panic!("expected a failure, got {step:?}");
        };
        assert!(
            message.contains(name) && !message.contains(SECRET),
            "{message}"
        );
    }
    let all = stored(&w);
    assert!(!all.contains(SECRET), "{all}");
    assert_eq!(w.journal.audit.lock().unwrap().len(), steps.len());
    // The model was given the value itself.
    assert!(
        w.llm.requests.lock().unwrap()[0].messages[0]
            .content
            .contains(SECRET)
    );
}

#[test]
fn an_answer_that_echoes_the_secret_is_stored_scrubbed() {
    let program = compile(&LLM.replace("classify.severity", "classify.summary"));
    let w = World::new();
    *w.llm.handler.lock().unwrap() = Box::new(|r| {
        Ok(json!({"severity": "minor", "summary": r.messages[0].content}).to_string())
    });
    let value = completed(w.run(&program, json!({"alarm": "x"})));
    assert_eq!(
        value,
        json!("Guidelines: [secret:kv/plant-a/triage-guidelines]")
    );
    let all = stored(&w);
    assert!(!all.contains(SECRET), "{all}");
    assert!(
        all.contains("[secret:kv/plant-a/triage-guidelines]"),
        "{all}"
    );
}

#[test]
fn an_http_error_quoting_the_credential_stores_the_secret_name_only() {
    let program = compile(API);
    let w = World::new();
    *w.http.handler.lock().unwrap() = Box::new(|r| {
        Err(CallError::new(
            CallErrorKind::Unavailable,
            "api.example",
            format!("proxy refused {:?}", r.headers),
        ))
    });
    let (class, message) = failed(w.run(&program, json!({"n": 1})));
    assert_eq!(class, "unavailable");
    assert!(
        message.contains("Bearer [secret:kv/api]") && !message.contains("api-token-value"),
        "{message}"
    );
    assert!(!stored(&w).contains("api-token-value"));
}

#[test]
fn fallback_model_switches_models() {
    let program = compile(LLM);
    let w = World::new();
    *w.llm.handler.lock().unwrap() = Box::new(|r| {
        if r.model == "big-model" {
            Ok(r#"{"severity": "catastrophic", "summary": "x"}"#.into())
        } else {
            Ok(r#"{"severity": "minor", "summary": "x"}"#.into())
        }
    });
    assert_eq!(
        completed(w.run(&program, json!({"alarm": "x"}))),
        json!("minor")
    );
    let steps = w.steps();
    assert_eq!(
        steps[0].fallback.map(Fallback::as_str),
        Some("fallback_model")
    );
    assert!(
        matches!(&steps[0].outcome, StepOutcome::Failed { class, .. } if class == "invalid_output")
    );
    assert_eq!(
        steps[1].fallback.map(Fallback::as_str),
        Some("fallback_model")
    );
    let models: Vec<String> = w
        .llm
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.model.clone())
        .collect();
    assert_eq!(models, ["big-model", "small-model"]);
    // Both models fail: the execution fails.
    let w = World::new();
    *w.llm.handler.lock().unwrap() = Box::new(|_| Ok("not json".into()));
    assert_eq!(
        failed(w.run(&program, json!({"alarm": "x"}))).0,
        "invalid_output"
    );
}

// ---------------------------------------------------------------- fallback engine

fn one_read(fallback: &str, retry: &str) -> Program {
    compile(&format!(
        r#"
id: fb
version: 1.0.0
requires: {{sensor-sim: ^1.0}}
instructions:
  - id: read
    op: LOAD_RESOURCE
    capability: sensor-sim
    params: {{sensor: "'x'"}}
    {retry}
    {fallback}
    next: done
  - {{id: done, op: RETURN, expression: "{{'read': read}}"}}
"#
    ))
}

fn failing(w: &World, kind: CallErrorKind) {
    w.on_read(move |_, _, _| Err(CallError::new(kind, "sensor-sim@1.0.0", "boom")));
}

#[test]
fn fallback_value_and_skip() {
    let w = World::new();
    failing(&w, CallErrorKind::Unavailable);
    let program = one_read("fallback: {strategy: value, value: '{\"v\": 0}'}", "");
    assert_eq!(
        completed(w.run(&program, json!({}))),
        json!({"read": {"v": 0}})
    );
    let fallbacks: Vec<Option<Fallback>> = w.steps().into_iter().map(|s| s.fallback).collect();
    assert_eq!(
        fallbacks[..2],
        [Some(Fallback::FallbackValue), Some(Fallback::FallbackValue)]
    );

    let w = World::new();
    failing(&w, CallErrorKind::Unavailable);
    let program = one_read("fallback: {strategy: skip}", "");
    assert_eq!(completed(w.run(&program, json!({}))), json!({"read": null}));
    assert!(w.steps().iter().any(|s| s.outcome == StepOutcome::Skipped));
}

#[test]
fn no_fallback_fails_the_execution() {
    let w = World::new();
    failing(&w, CallErrorKind::Denied);
    let (class, message) = failed(w.run(&one_read("", ""), json!({})));
    assert_eq!(class, "denied");
    assert!(message.contains("boom"));
}

#[test]
fn fallback_on_errors_filters_classes() {
    let program = one_read("fallback: {strategy: value, value: '1', on: [timeout]}", "");
    let w = World::new();
    failing(&w, CallErrorKind::Unavailable);
    assert_eq!(failed(w.run(&program, json!({}))).0, "unavailable");
    let w = World::new();
    failing(&w, CallErrorKind::Timeout);
    assert_eq!(completed(w.run(&program, json!({}))), json!({"read": 1}));
}

#[test]
fn retry_backoff_sequence_then_strategy_retry_fails() {
    let program = one_read(
        "fallback: {strategy: retry}",
        "retry: {max_retries: 4, backoff_ms: 200, multiplier: 2.0, max_backoff_ms: 1000}",
    );
    let w = World::new();
    failing(&w, CallErrorKind::Unavailable);
    assert_eq!(failed(w.run(&program, json!({}))).0, "unavailable");
    assert_eq!(*w.clock.sleeps.lock().unwrap(), [200, 400, 800, 1000]);
    // Every decision went to the fallback engine's log: four retries, then the failure.
    let log = w.fallbacks.log.lock().unwrap();
    let decisions: Vec<_> = log.iter().map(|d| (d.decision, d.class)).collect();
    assert_eq!(
        decisions,
        [
            ("retry", "unavailable"),
            ("retry", "unavailable"),
            ("retry", "unavailable"),
            ("retry", "unavailable"),
            ("fail", "unavailable")
        ]
    );
    let attempts: Vec<u32> = w.steps().iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, [1, 2, 3, 4, 5]);
    let reads = w.plugins.calls.lock().unwrap().len();
    assert_eq!(reads, 5);
}

#[test]
fn retry_only_on_listed_classes_and_recovers() {
    let program = one_read("", "retry: {max_retries: 3, backoff_ms: 10, on: [timeout]}");
    let w = World::new();
    failing(&w, CallErrorKind::Unavailable);
    failed(w.run(&program, json!({})));
    assert!(w.clock.sleeps.lock().unwrap().is_empty());

    let w = World::new();
    let n = Arc::new(AtomicU64::new(0));
    let c = n.clone();
    w.on_read(move |_, _, _| {
        if c.fetch_add(1, Ordering::SeqCst) < 2 {
            Err(CallError::new(CallErrorKind::Timeout, "s", "slow"))
        } else {
            Ok(json!(5))
        }
    });
    assert_eq!(completed(w.run(&program, json!({}))), json!({"read": 5}));
    assert_eq!(*w.clock.sleeps.lock().unwrap(), [10, 20]);
}

#[test]
fn each_error_kind_maps_to_its_class() {
    use CallErrorKind::*;
    for (kind, class) in [
        (InvalidInput, "invalid_input"),
        (Unavailable, "unavailable"),
        (Timeout, "timeout"),
        (Denied, "denied"),
        (Internal, "internal"),
        (Trap, "internal"),
        (ResourceExhausted, "resource_exhausted"),
        (NotFound, "unavailable"),
        (RateLimited, "rate_limit"),
        (ModelUnavailable, "model_unavailable"),
        (InvalidOutput, "invalid_output"),
    ] {
        let w = World::new();
        failing(&w, kind);
        assert_eq!(
            failed(w.run(&one_read("", ""), json!({}))).0,
            class,
            "{kind:?}"
        );
    }
}

#[test]
fn timeout_uses_on_timeout_strategy() {
    let program = compile(
        r#"
id: t
version: 1.0.0
requires: {sensor-sim: ^1.0}
instructions:
  - {id: read, op: LOAD_RESOURCE, capability: sensor-sim, params: {key: "'x'"}, timeout_ms: 100, on_timeout: skip, next: done}
  - {id: done, op: RETURN, expression: read}
"#,
    );
    let w = World::new();
    failing(&w, CallErrorKind::Timeout);
    assert_eq!(completed(w.run(&program, json!({}))), Value::Null);
    let w = World::new();
    failing(&w, CallErrorKind::Unavailable);
    assert_eq!(failed(w.run(&program, json!({}))).0, "unavailable");
}

const GUARD: &str = r#"
id: guard
version: 1.0.0
priority: high
requires: {valve-sim: ^1.0, sensor-sim: ^1.0}
instructions:
  - id: first
    op: CALL_ACTION
    capability: valve-sim
    action: open
    params: {valve: "'V-0'"}
    next: throttle
  - id: throttle
    op: CALL_ACTION
    capability: valve-sim
    action: set
    params: {valve: "'V-1'", position_percent: "40"}
    resource_key: valve/V-1
    time_window: {start: "06:00", end: "22:00", utc_offset_minutes: 60, weekdays: [mon, tue]}
    postcondition:
      condition: resource.value <= 45.0
      capability: sensor-sim
      params: {sensor: "'V-1/position'"}
      deadline_ms: 1000
      poll_interval_ms: 300
    fallback: {strategy: abort}
    compensation: [restore, tell]
    next: done
  - {id: done, op: RETURN, expression: "'throttled'"}
  - {id: restore, op: CALL_ACTION, capability: valve-sim, action: restore, params: {valve: "'V-1'"}}
  - {id: tell, op: CALL_ACTION, capability: valve-sim, action: tell, params: {valve: "'V-1'"}}
"#;

#[test]
fn abort_runs_compensation_in_reverse_order() {
    let program = compile(GUARD);
    let w = World::new();
    w.on_invoke(|_, action, _| {
        if action == "set" {
            Err(CallError::new(
                CallErrorKind::Unavailable,
                "valve-sim",
                "stuck",
            ))
        } else {
            Ok(json!({"ok": true}))
        }
    });
    let (class, message) = failed(w.run(&program, json!({})));
    assert_eq!(class, "unavailable");
    assert!(message.contains("aborted"), "{message}");
    let actions: Vec<String> = w.invokes().into_iter().map(|c| c.2).collect();
    assert_eq!(actions, ["open", "set", "tell", "restore"]);
    let throttle = w
        .steps()
        .into_iter()
        .find(|s| s.instruction_id == "throttle" && matches!(s.outcome, StepOutcome::Failed { .. }))
        .unwrap();
    assert_eq!(throttle.fallback.map(Fallback::as_str), Some("abort"));
}

#[test]
fn time_window_inside_and_outside() {
    let program = compile(GUARD);
    // Monday 10:00 UTC = 11:00 local: inside.
    let w = World::new();
    assert_eq!(completed(w.run(&program, json!({}))), json!("throttled"));
    // Monday 21:30 UTC = 22:30 local: outside, so abort (no `set` call at all).
    let w = World::new();
    w.clock
        .now
        .store(MONDAY_10H + 11 * 3_600_000 + 1_800_000, Ordering::SeqCst);
    let (class, _) = failed(w.run(&program, json!({})));
    assert_eq!(class, "outside_time_window");
    let actions: Vec<String> = w.invokes().into_iter().map(|c| c.2).collect();
    assert_eq!(actions, ["open", "tell", "restore"]);
    // Wednesday is not an allowed day.
    let w = World::new();
    w.clock
        .now
        .store(MONDAY_10H + 2 * 86_400_000, Ordering::SeqCst);
    assert_eq!(failed(w.run(&program, json!({}))).0, "outside_time_window");
}

#[test]
fn postcondition_polls_until_it_holds_or_the_deadline() {
    let program = compile(GUARD);
    let w = World::new();
    let polls = Arc::new(AtomicU64::new(0));
    let p = polls.clone();
    w.on_read(move |_, _, _| {
        let n = p.fetch_add(1, Ordering::SeqCst);
        Ok(json!({"value": if n < 2 { 80.0 } else { 40.0 }}))
    });
    assert_eq!(completed(w.run(&program, json!({}))), json!("throttled"));
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    assert_eq!(*w.clock.sleeps.lock().unwrap(), [300, 300]);
    let calls: Vec<String> = w.reads().into_iter().map(|c| c.4).collect();
    let set = w.invokes().into_iter().find(|c| c.2 == "set").unwrap().4;
    assert_eq!(
        calls,
        (0..3)
            .map(|n| format!("{set}/postcondition/{n}"))
            .collect::<Vec<_>>(),
        "each poll is a read of its own, derived from the action's call"
    );

    let w = World::new();
    w.on_read(|_, _, _| Ok(json!({"value": 80.0})));
    let (class, message) = failed(w.run(&program, json!({})));
    assert_eq!(class, "postcondition_failed");
    assert!(message.contains("resource.value <= 45.0"), "{message}");
    // Polled at 0, 300, 600, 900 ms: the next poll would pass the 1000 ms deadline.
    assert_eq!(*w.clock.sleeps.lock().unwrap(), [300, 300, 300]);
}

#[test]
fn panicking_port_goes_to_the_fallback() {
    let w = World::new();
    w.on_read(|_, _, _| panic!("plugin host bug"));
    let program = one_read("fallback: {strategy: value, value: '7'}", "");
    assert_eq!(completed(w.run(&program, json!({}))), json!({"read": 7}));
    let first = &w.steps()[0];
    assert!(
        matches!(&first.outcome, StepOutcome::Failed { class, message } if class == "internal" && message.contains("plugin host bug"))
    );
    // Without a fallback the execution fails as internal, and the engine is still usable.
    let w = World::new();
    w.on_read(|_, _, _| panic!("again"));
    assert_eq!(failed(w.run(&one_read("", ""), json!({}))).0, "internal");
}

// ---------------------------------------------------------------- validation, resume

const APPROVAL: &str = r#"
id: approve
version: 1.0.0
requires: {valve-sim: ^1.0}
instructions:
  - {id: before, op: EVAL, expression: "1", next: act}
  - id: act
    op: CALL_ACTION
    capability: valve-sim
    action: close
    params: {valve: "'V-1'"}
    requires_human_validation: true
    next: done
  - {id: done, op: RETURN, expression: "'closed'"}
"#;

#[test]
fn human_validation_pauses_then_approves_or_rejects() {
    let program = compile(APPROVAL);
    let w = World::new();
    assert_eq!(
        w.run(&program, json!({})),
        Report::Paused {
            instruction_id: "act".into()
        }
    );
    assert!(w.invokes().is_empty());
    assert_eq!(w.steps()[1].outcome, StepOutcome::AwaitingApproval);
    assert!(w.journal.finished.lock().unwrap().is_none());

    // Still undecided: paused again, AwaitingApproval not journaled twice.
    let history = w.steps();
    assert!(matches!(
        w.resume(&program, json!({}), &history),
        Report::Paused { .. }
    ));
    assert_eq!(w.steps().len(), history.len());

    // Approved: runs once, from where it stopped.
    w.journal.decide("exec-1", "act", true).unwrap();
    let history = w.steps();
    assert_eq!(
        completed(w.resume(&program, json!({}), &history)),
        json!("closed")
    );
    assert_eq!(w.invokes().len(), 1);
    assert_eq!(
        w.step_ids(),
        ["before", "act", "act", "act", "done"],
        "awaiting, intent, result"
    );

    // Rejected.
    let w = World::new();
    w.run(&program, json!({}));
    w.journal.decide("exec-1", "act", false).unwrap();
    let history = w.steps();
    assert_eq!(
        w.resume(&program, json!({}), &history),
        Report::Finished(ExecutionOutcome::Rejected {
            instruction_id: "act".into()
        })
    );
    assert!(w.invokes().is_empty());
}

#[test]
fn llm_answer_waits_for_approval_after_the_call() {
    let source = LLM.replace(
        "    next: done\n  - {id: done",
        "    requires_human_validation: true\n    next: done\n  - {id: done",
    );
    let program = compile(&source);
    let w = World::new();
    assert!(matches!(
        w.run(&program, json!({"alarm": "a"})),
        Report::Paused { .. }
    ));
    assert_eq!(w.llm.requests.lock().unwrap().len(), 1);
    w.journal.decide("exec-1", "classify", true).unwrap();
    let history = w.steps();
    assert_eq!(
        completed(w.resume(&program, json!({"alarm": "a"}), &history)),
        json!("critical")
    );
    assert_eq!(w.llm.requests.lock().unwrap().len(), 1, "not asked twice");
}

const RESUMABLE: &str = r#"
id: resumable
version: 1.0.0
requires: {valve-sim: ^1.0, sensor-sim: ^1.0}
instructions:
  - {id: read, op: LOAD_RESOURCE, capability: sensor-sim, params: {sensor: "'pressure'"}, next: remember}
  - {id: remember, op: STORE, scope: execution, key: p, expression: read.value, next: act}
  - {id: act, op: CALL_ACTION, capability: valve-sim, action: set, params: {v: memory.p}, next: notify}
  - {id: notify, op: EMIT_EVENT, topic: t, expression: "{'p': memory.p}", next: done}
  - {id: done, op: RETURN, expression: "{'act': act.ok, 'p': memory.p}"}
"#;

/// The steps of `w` as `instruction:status`.
fn statuses(steps: &[StepRecord]) -> Vec<String> {
    steps
        .iter()
        .map(|s| format!("{}:{}", s.instruction_id, s.outcome.audit_name()))
        .collect()
}

#[test]
fn resume_replays_recorded_steps_without_repeating_effects() {
    let program = compile(RESUMABLE);
    let full = World::new();
    let expected = completed(full.run(&program, json!({})));
    let history = full.steps();
    assert_eq!(
        statuses(&history),
        [
            "read:done",
            "remember:done",
            "act:started",
            "act:done",
            "notify:started",
            "notify:done",
            "done:done"
        ]
    );

    // Crash after `act`'s result was journaled: resuming repeats neither the read nor the
    // action.
    let w = World::new();
    let value = completed(w.resume(&program, json!({}), &history[..4]));
    assert_eq!(value, expected);
    assert!(w.plugins.calls.lock().unwrap().is_empty());
    assert_eq!(w.events.0.lock().unwrap().len(), 1);
    let seqs: Vec<u64> = w.steps().iter().map(|s| s.seq).collect();
    assert_eq!(seqs, [4, 5, 6]);

    // Crash before `act`'s intent was journaled: it never started, so it runs normally.
    let w = World::new();
    completed(w.resume(&program, json!({}), &history[..2]));
    let invokes = w.invokes();
    assert_eq!(invokes.len(), 1);
    assert_eq!(invokes[0].4, full.invokes()[0].4);
    assert_eq!(
        invokes[0].3,
        json!({"v": 9.0}),
        "L1 restored from the journal"
    );
    assert_eq!(statuses(&w.steps())[..2], ["act:started", "act:done"]);
}

/// RESUMABLE as the node left it when it stopped during `act` (its intent durable, its
/// result not), and a world whose `set` declares `declared` for a resume.
fn stopped_during_act(declared: OnResume) -> (Program, Vec<StepRecord>, World) {
    let program = compile(RESUMABLE);
    let full = World::new();
    completed(full.run(&program, json!({})));
    let history = full.steps()[..3].to_vec();
    let w = World::new();
    w.plugins
        .resume
        .lock()
        .unwrap()
        .insert("set".into(), declared);
    (program, history, w)
}

#[test]
fn an_effect_in_doubt_is_reissued_under_its_key_when_the_capability_declares_it() {
    let (program, history, w) = stopped_during_act(OnResume::Reissue);
    completed(w.resume(&program, json!({}), &history));
    let invokes = w.invokes();
    assert_eq!(invokes.len(), 1);
    assert_eq!(invokes[0].4, "exec-1/act/1", "the same idempotency key");
    assert_eq!(invokes[0].3, json!({"v": 9.0}));
    let steps = w.steps();
    assert_eq!(statuses(&steps)[0], "act:done", "no second intent");
    assert_eq!(
        (steps[0].attempt, steps[0].fallback.map(Fallback::as_str)),
        (1, Some("reissued"))
    );
}

#[test]
fn an_effect_in_doubt_is_read_back_when_the_capability_declares_a_read() {
    let (program, history, w) = stopped_during_act(OnResume::ReadBack("read".into()));
    completed(w.resume(&program, json!({}), &history));
    let actions: Vec<String> = w.invokes().into_iter().map(|c| c.2).collect();
    assert_eq!(actions, ["read"], "read back, not driven again");
    assert_eq!(
        w.steps()[0].fallback.map(Fallback::as_str),
        Some("read_back")
    );
}

#[test]
fn an_undeclared_effect_in_doubt_waits_for_an_operator_and_is_never_rerun_silently() {
    let (program, history, w) = stopped_during_act(OnResume::Ambiguous);
    assert_eq!(
        w.resume(&program, json!({}), &history),
        Report::Paused {
            instruction_id: "act".into()
        }
    );
    assert!(w.invokes().is_empty());
    assert_eq!(statuses(&w.steps()), ["act:ambiguous"]);
    let ambiguous = &w.steps()[0];
    assert_eq!(ambiguous.decision_id().as_deref(), Some("act#1"));
    let audit = w.journal.audit.lock().unwrap().clone();
    assert_eq!(audit.last().map(|e| e.outcome.as_str()), Some("ambiguous"));

    // Undecided: paused again, the ambiguity not journaled twice.
    let mut history2 = history.clone();
    history2.extend(w.steps());
    assert!(matches!(
        w.resume(&program, json!({}), &history2),
        Report::Paused { .. }
    ));
    assert_eq!(w.steps().len(), 1);
    assert!(w.invokes().is_empty());

    // Approved: issued again under the same key.
    w.journal.decide("exec-1", "act#1", true).unwrap();
    completed(w.resume(&program, json!({}), &history2));
    let keys: Vec<String> = w.invokes().into_iter().map(|c| c.4).collect();
    assert_eq!(keys, ["exec-1/act/1"]);

    // Rejected: the execution ends there.
    let w = World::new();
    w.resume(&program, json!({}), &history);
    let mut history3 = history.clone();
    history3.extend(w.steps());
    w.journal.decide("exec-1", "act#1", false).unwrap();
    assert_eq!(
        w.resume(&program, json!({}), &history3),
        Report::Finished(ExecutionOutcome::Rejected {
            instruction_id: "act".into()
        })
    );
    assert!(w.invokes().is_empty());
}

/// The issue's case: the rule reads the valve it then acts on.
const READS_WHAT_IT_ACTS_ON: &str = r#"
id: guard
version: 1.0.0
requires: {valve-sim: ^1.0}
instructions:
  - {id: read, op: LOAD_RESOURCE, capability: valve-sim, params: {valve: "'V-101'"}, next: high}
  - {id: high, op: BRANCH, condition: "read.position > 40", then: act, else: calm}
  - {id: act, op: CALL_ACTION, capability: valve-sim, action: set, params: {valve: "'V-101'", position: "40"}, next: slow}
  - {id: slow, op: LOAD_RESOURCE, capability: valve-sim, params: {valve: "'V-101'"}, next: acted}
  - {id: acted, op: RETURN, expression: "'acted'"}
  - {id: calm, op: RETURN, expression: "'no action'"}
"#;

#[test]
fn a_resumed_execution_keeps_the_branch_it_took_before_acting() {
    let program = compile(READS_WHAT_IT_ACTS_ON);
    let full = World::new();
    full.on_read(|_, _, _| Ok(json!({"position": 80})));
    assert_eq!(completed(full.run(&program, json!({}))), json!("acted"));
    // Killed during `slow`: the read, the branch and the action's intent are durable;
    // the action's result is not. Meanwhile the valve moved to 40 (by this action).
    let durable = full.steps()[..3].to_vec();
    assert_eq!(
        statuses(&durable),
        ["read:done", "high:done", "act:started"]
    );
    let w = World::new();
    w.on_read(|_, _, _| Ok(json!({"position": 40})));
    w.plugins
        .resume
        .lock()
        .unwrap()
        .insert("set".into(), OnResume::Reissue);
    assert_eq!(
        completed(w.resume(&program, json!({}), &durable)),
        json!("acted"),
        "the arm it took"
    );
    let reads: Vec<String> = w.reads().into_iter().map(|c| c.2).collect();
    assert_eq!(reads.len(), 1, "only `slow` is read again, not `read`");
    assert_eq!(
        statuses(&w.steps()),
        ["act:done", "slow:done", "acted:done"]
    );
}

#[test]
fn resume_continues_retries_with_the_next_attempt() {
    let program = compile(RETRIED_ACTION);
    let w = World::new();
    w.on_invoke(|_, _, _| Err(CallError::new(CallErrorKind::Unavailable, "v", "down")));
    w.run(&program, json!({}));
    let history: Vec<StepRecord> = w.steps()[..4].to_vec();
    assert_eq!(
        statuses(&history),
        [
            "act:started",
            "act:failed:unavailable",
            "act:started",
            "act:failed:unavailable"
        ]
    );
    let again = World::new();
    completed(again.resume(&program, json!({}), &history));
    let keys: Vec<String> = again.invokes().into_iter().map(|c| c.4).collect();
    assert_eq!(keys, ["exec-1/act/3"]);
}

#[test]
fn journal_failure_interrupts() {
    let program = compile(BRANCHY);
    let w = World::new();
    w.journal.broken.store(true, Ordering::SeqCst);
    assert!(matches!(
        w.run(&program, json!({"x": 1})),
        Report::Interrupted { .. }
    ));
    assert!(w.journal.finished.lock().unwrap().is_none());
}

// ---------------------------------------------------------------- examples

#[test]
fn every_example_rule_compiles_and_completes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 6);
    let payloads = json!({
        "alert-notify": {"asset": "CH-2", "severity": "critical", "text": "compressor trip"},
        "llm-triage": {"alarm": "CH-2 compressor trip"},
        "valve-guard": {"value": 9.1},
    });
    for path in paths {
        let source = std::fs::read_to_string(&path).unwrap();
        let program = compile(&source);
        let w = World::new();
        // The valve sits at 80 % until an action sets it to 40 %.
        let moved = Arc::new(AtomicBool::new(false));
        let (m1, m2) = (moved.clone(), moved.clone());
        w.on_invoke(move |_, action, input| {
            if action == "set" {
                m1.store(true, Ordering::SeqCst);
            }
            Ok(json!({"ok": true, "input": input}))
        });
        w.on_read(move |c, key, params| {
            if c.id == "valve-sim" {
                let position = if m2.load(Ordering::SeqCst) { 40 } else { 80 };
                return Ok(json!({"valve": params["valve"], "position": position}));
            }
            plausible_read(c, key, params)
        });
        let payload = payloads.get(program.id()).cloned().unwrap_or(json!({}));
        let value = completed(w.run(&program, payload));
        assert!(!w.steps().is_empty(), "{}", path.display());
        match program.id() {
            "valve-guard" => assert_eq!(value["action"], json!("throttled")),
            "llm-triage" => assert_eq!(value, json!({"severity": "critical", "paged": true})),
            "parallel-checks" => assert_eq!(value, json!({"ready": true, "report_id": "r-1"})),
            "sensor-sweep" => assert_eq!(w.events.0.lock().unwrap().len(), 4),
            "data-sync" => {
                assert_eq!(value, json!({"synced": 2}));
                assert_eq!(
                    w.node.0.lock().unwrap()["sync/meters/cursor"].0,
                    json!({"since": 20})
                );
            }
            "alert-notify" => assert_eq!(value, json!({"notified": true, "asset": "CH-2"})),
            other => panic!("unexpected example {other}"),
        }
        let triggers = program.triggers();
        assert!(!triggers.is_empty());
    }
}

#[test]
fn triggers_filter_and_key_events() {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/rules/alert-notify.yaml"),
    )
    .unwrap();
    let program = compile(&source);
    let trigger = &program.triggers()[0];
    assert!(
        trigger
            .accepts(&json!({"severity": "critical", "asset": "A"}))
            .unwrap()
    );
    assert!(
        !trigger
            .accepts(&json!({"severity": "minor", "asset": "A"}))
            .unwrap()
    );
    assert_eq!(
        trigger.key(&json!({"asset": "A"})).unwrap().as_deref(),
        Some("A")
    );
}

// ---------------------------------------------------------------- parallel branches

const PARALLEL: &str = r#"
id: fan
version: 1.0.0
instructions:
  - {id: start, op: EVAL, expression: "1", next: [left, right]}
  - {id: left, op: CALL_API, http: {method: GET, url: "https://left.example/x"}, timeout_ms: 10000, next: joined}
  - {id: right, op: CALL_API, http: {method: GET, url: "https://right.example/x"}, timeout_ms: 10000, next: joined}
  - {id: joined, op: MERGE, next: done}
  - {id: done, op: RETURN, expression: "{'left': left, 'right': right}"}
"#;

#[test]
fn parallel_branches_are_in_flight_together() {
    let program = compile(PARALLEL);
    let w = World::new();
    // Each request is answered only while the other is in flight too: run one after the
    // other, the first would fail `timeout` ("alone").
    *w.http.together.lock().unwrap() = Some(Arc::new(tokio::sync::Barrier::new(2)));
    let value = completed(w.run(&program, json!({})));
    assert!(
        !value["left"].is_null() && value["left"] == value["right"],
        "{value}"
    );
    let steps = w.steps();
    let mut seqs: Vec<u64> = steps.iter().map(|s| s.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        steps.len(),
        "every step has its own sequence number"
    );
    // Both intents were journaled before either result: the two were in flight together.
    assert_eq!(
        w.step_ids(),
        ["start", "left", "right", "left", "right", "joined", "done"]
    );
}

#[test]
fn a_resumed_parallel_wave_replays_what_ended_and_reissues_what_was_in_doubt() {
    let program = compile(PARALLEL);
    let w = World::new();
    completed(w.run(&program, json!({})));
    let full = w.steps();
    // A crash after `left` ended and `right` journaled its intent, not its result.
    let last_right = full
        .iter()
        .rposition(|s| s.instruction_id == "right")
        .unwrap();
    let history: Vec<StepRecord> = full
        .iter()
        .enumerate()
        .filter(|(i, s)| *i != last_right && !["joined", "done"].contains(&&*s.instruction_id))
        .map(|(_, s)| s.clone())
        .collect();
    assert!(matches!(
        history
            .iter()
            .rfind(|s| s.instruction_id == "right")
            .map(|s| &s.outcome),
        Some(StepOutcome::Started { .. })
    ));
    let again = World::new();
    let value = completed(again.resume(&program, json!({}), &history));
    assert!(
        !value["left"].is_null() && value["left"] == value["right"],
        "{value}"
    );
    let urls: Vec<String> = again
        .http
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.url.clone())
        .collect();
    assert_eq!(
        urls,
        ["https://right.example/x"],
        "only the request in doubt goes out again"
    );
}

// ---------------------------------------------------------------- trigger schedules

/// 2026-11-30T14:35:10.500Z.
const NOW: u64 = 1_796_049_310_500;

fn scheduled(triggers: &str) -> Program {
    compile(&format!(
        "id: sched\nversion: 1.0.0\ntriggers:\n{triggers}\ninstructions:\n  - {{id: done, op: RETURN, expression: \"1\"}}\n"
    ))
}

#[test]
fn timers_align_on_the_epoch_and_cron_takes_five_or_six_fields() {
    let program = scheduled(
        "  - {kind: timer, interval_ms: 1000}\n  - {kind: timer, interval_ms: 60000}\n  - {kind: cron, cron: \"* * * * *\"}\n  - {kind: cron, cron: \"0 15 2 * * *\"}\n  - {kind: cron, cron: \"*/15 * * * * *\"}\n  - {kind: manual}",
    );
    let next: Vec<Option<u64>> = program
        .triggers()
        .iter()
        .map(|t| t.next_firing(NOW))
        .collect();
    assert_eq!(
        next,
        [
            Some(1_796_049_311_000),
            Some(1_796_049_360_000),
            // Every minute at second 0 → 14:36:00.
            Some(1_796_049_360_000),
            // 6 fields, seconds first: 02:15:00 every day → tomorrow 02:15:00 UTC.
            Some(1_796_091_300_000),
            // Every 15 s → 14:35:15.
            Some(1_796_049_315_000),
            None,
        ]
    );
    // A firing time itself is not the next one.
    assert_eq!(
        program.triggers()[0].next_firing(1_796_049_311_000),
        Some(1_796_049_312_000)
    );
}

#[test]
fn a_bad_cron_expression_is_refused_when_the_program_is_prepared() {
    let options = CompileOptions {
        source_name: "sched.yaml".into(),
        compiled_by: "test".into(),
        compiled_at: 0,
    };
    let source = "id: sched\nversion: 1.0.0\ntriggers:\n  - {kind: cron, cron: \"* * * * *\"}\ninstructions:\n  - {id: done, op: RETURN, expression: \"1\"}\n";
    let mut ir = eyeflow_compiler::compile(source, &options).expect("compiles");
    // An IR from elsewhere (the node does not trust the compiler that made it).
    ir.triggers[0].cron = "61 * * * *".into();
    let err = Program::prepare(Arc::new(ir)).unwrap_err().to_string();
    assert!(
        err.contains("trigger 0, field `cron`") && err.contains("61 * * * *"),
        "{err}"
    );
}
