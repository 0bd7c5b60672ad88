//! One attempt of one instruction, per opcode. Every failure is a [`Failure`] with its IR
//! error class; the engine decides what happens next.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eyeflow_ir::pb::{ErrorClass, IrOpcode, MemoryScope, TimeWindow};
use serde_json::{Map, Value, json};

use super::engine::{Attempt, Resumption, Run};
use super::expr::Expr;
use super::fallback::Failure;
use super::program::{Llm, Prepared, Program, SlotSource, text_of};
use crate::gates::ResourceHold;
use crate::ports::{CallErrorKind, ChatMessage, HttpRequest, LlmPort, LlmRequest};

/// Port deadline of an instruction without `timeout.execution_timeout_ms`.
pub(super) const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

fn invalid_input(message: impl Into<String>) -> Failure {
    Failure::new(ErrorClass::InvalidInput, message)
}

/// Whether `now_ms` (Unix ms) falls inside `window` (end exclusive; a window with
/// `start > end` wraps past midnight; weekdays are those of the local date at `now_ms`).
pub fn in_window(window: &TimeWindow, now_ms: u64) -> bool {
    let local_minutes =
        i64::try_from(now_ms / 60_000).unwrap_or(i64::MAX) + i64::from(window.utc_offset_minutes);
    let minute = u32::try_from(local_minutes.rem_euclid(1_440)).unwrap_or(0);
    let day = local_minutes.div_euclid(1_440);
    // 1970-01-01 was a Thursday (ISO 4).
    let weekday = u32::try_from((day + 3).rem_euclid(7)).unwrap_or(0) + 1;
    if !window.weekdays.is_empty() && !window.weekdays.contains(&weekday) {
        return false;
    }
    let (start, end) = (window.start_minute, window.end_minute);
    if start <= end {
        start <= minute && minute < end
    } else {
        minute >= start || minute < end
    }
}

/// The text of an LLM answer as JSON: trims it and drops a Markdown code fence.
fn parse_json_answer(answer: &str) -> Result<Value, Failure> {
    let mut text = answer.trim();
    if let Some(rest) = text.strip_prefix("```") {
        let rest = rest.strip_prefix("json").unwrap_or(rest);
        text = rest.strip_suffix("```").unwrap_or(rest).trim();
    }
    serde_json::from_str(text).map_err(|e| {
        Failure::new(
            ErrorClass::InvalidOutput,
            format!("the answer is not JSON: {e}"),
        )
    })
}

fn check_schema(
    schema: Option<&jsonschema::Validator>,
    value: &Value,
    class: ErrorClass,
    what: &str,
) -> Result<(), Failure> {
    match schema.map(|s| s.validate(value)) {
        Some(Err(e)) => Err(Failure::new(
            class,
            format!(
                "{what} does not match its schema: {e} (at {})",
                e.instance_path()
            ),
        )),
        _ => Ok(()),
    }
}

/// Fills `{{slot}}` placeholders (name trimmed) from `values`; unknown names stay.
fn fill(template: &str, values: &[(String, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        let name = rest[open + 2..open + 2 + close].trim();
        out.push_str(&rest[..open]);
        match values.iter().find(|(n, _)| n == name) {
            Some((_, v)) => out.push_str(v),
            None => out.push_str(&rest[open..open + 4 + close]),
        }
        rest = &rest[open + 4 + close..];
    }
    out.push_str(rest);
    out
}

impl Llm {
    /// The chat request of this LLM_CALL with its slots filled from `values`.
    fn request(&self, model: &str, values: &[(String, String)], timeout: Duration) -> LlmRequest {
        let mut messages = Vec::with_capacity(2 + 2 * self.few_shot.len());
        if !self.system_prompt.is_empty() {
            messages.push(ChatMessage {
                role: "system".to_owned(),
                content: fill(&self.system_prompt, values),
            });
        }
        for (input, output) in &self.few_shot {
            messages.push(ChatMessage {
                role: "user".to_owned(),
                content: input.clone(),
            });
            messages.push(ChatMessage {
                role: "assistant".to_owned(),
                content: output.clone(),
            });
        }
        messages.push(ChatMessage {
            role: "user".to_owned(),
            content: fill(&self.prompt, values),
        });
        LlmRequest {
            model: model.to_owned(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            messages,
            json_output: self.json_output,
            timeout,
        }
    }
}

/// An LLM answer as the instruction's result: JSON when it asks for JSON, checked against
/// its output schema (`invalid_output` otherwise).
fn llm_output(ins: &Prepared, llm: &Llm, answer: String) -> Result<Value, Failure> {
    let out = if llm.json_output {
        parse_json_answer(&answer)?
    } else {
        Value::String(answer)
    };
    check_schema(
        ins.output_schema.as_ref(),
        &out,
        ErrorClass::InvalidOutput,
        "the answer",
    )?;
    if ins.on_device {
        held_by_device(&out)?;
    }
    Ok(out)
}

/// An MCU program's LLM answer must be a value a device holds: null, a boolean, a number,
/// a string of at most `MAX_STR` bytes (`invalid_output` otherwise).
fn held_by_device(answer: &Value) -> Result<(), Failure> {
    let max = eyeflow_mcu::limits::MAX_STR;
    let why = match answer {
        Value::Null | Value::Bool(_) | Value::Number(_) => return Ok(()),
        Value::String(s) if s.len() <= max => return Ok(()),
        Value::String(s) => format!(
            "the answer has {} bytes; a device holds strings of at most {max}",
            s.len()
        ),
        Value::Array(_) | Value::Object(_) => {
            "the answer is an object or a list; a device holds scalars".to_owned()
        }
    };
    Err(Failure::new(ErrorClass::InvalidOutput, why))
}

impl Program {
    /// Serves an LLM_CALL of this program that a device runs (through the serial
    /// gateway): `slots` are the values the device evaluated, by slot name (its frozen
    /// context). The request is built and the answer checked as an execution here does;
    /// a failure is its IR error class and why.
    pub async fn serve_llm_call(
        &self,
        instruction: &str,
        slots: &[(String, Value)],
        llm: &dyn LlmPort,
        timeout: Duration,
    ) -> Result<Value, (ErrorClass, String)> {
        let failed = |f: Failure| (f.class, f.message);
        let ins = self
            .instructions
            .iter()
            .find(|i| i.id == instruction)
            .ok_or_else(|| {
                (
                    ErrorClass::InvalidInput,
                    format!("the program has no instruction `{instruction}`"),
                )
            })?;
        let llm_call = ins.llm.as_ref().ok_or_else(|| {
            (
                ErrorClass::InvalidInput,
                format!("`{instruction}` is not an LLM_CALL"),
            )
        })?;
        // A device runs what it loaded; the node still serves only what the program grants.
        if let Some(refused) = ins.refused() {
            return Err(failed(refused));
        }
        let values: Vec<(String, String)> = slots
            .iter()
            .map(|(name, value)| (name.clone(), text_of(value)))
            .collect();
        let request = llm_call.request(&llm_call.model, &values, timeout);
        let answer = llm.complete(&request).await.map_err(|e| failed(e.into()))?;
        llm_output(ins, llm_call, answer).map_err(failed)
    }
}

/// An arbiter permit held by a run, counted in the run's `permits` until it is dropped
/// (then released): a run holding one keeps its slot through its waits on the journal, since
/// executions waiting for the same key hold theirs.
pub(super) struct Held {
    _hold: ResourceHold,
    permits: Arc<AtomicUsize>,
}

impl Held {
    fn new(hold: ResourceHold, permits: &Arc<AtomicUsize>) -> Self {
        permits.fetch_add(1, Ordering::SeqCst);
        Self {
            _hold: hold,
            permits: permits.clone(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.permits.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Run<'_> {
    fn eval(&self, expr: &Expr) -> Result<Value, Failure> {
        expr.eval(&self.vars).map_err(invalid_input)
    }

    fn eval_params(&self, params: &[(String, Expr)]) -> Result<Map<String, Value>, Failure> {
        let mut out = Map::new();
        for (name, expr) in params {
            let value = expr
                .eval(&self.vars)
                .map_err(|e| invalid_input(format!("parameter `{name}`: {e}")))?;
            out.insert(name.clone(), value);
        }
        Ok(out)
    }

    fn remaining(&self, deadline_ms: u64, id: &str) -> Result<Duration, Failure> {
        let now = self.fx.clock.now_ms();
        if now >= deadline_ms {
            return Err(Failure::new(
                ErrorClass::Timeout,
                format!("`{id}` ran out of time"),
            ));
        }
        Ok(Duration::from_millis(deadline_ms - now))
    }

    /// The arbiter's permit for the instruction's resource key, if it has one; counted in
    /// the run's permits held while it lives.
    async fn hold(&self, ins: &Prepared) -> Result<Option<Held>, Failure> {
        if ins.resource_key.is_empty() {
            return Ok(None);
        }
        self.fx
            .arbiter
            .acquire(
                &ins.resource_key,
                self.execution_id,
                ins.priority.level,
                ins.priority.max_wait,
            )
            .await
            .map(|hold| Some(Held::new(hold, &self.permits)))
            .map_err(|e| {
                if e.kind == CallErrorKind::Timeout {
                    Failure::new(
                        ErrorClass::ResourceTimeout,
                        format!(
                            "resource `{}` not granted within {} ms",
                            ins.resource_key,
                            ins.priority.max_wait.as_millis()
                        ),
                    )
                } else {
                    e.into()
                }
            })
    }

    /// One attempt of instruction `idx`; `inputs` receives what the audit digests.
    pub(super) async fn attempt(
        &mut self,
        idx: usize,
        path: &str,
        attempt: u32,
        model: Option<&str>,
        inputs: &mut Value,
    ) -> Result<Value, Failure> {
        let program = self.program;
        let ins = &program.instructions[idx];
        let at = Attempt {
            idx,
            path,
            number: attempt,
            key: format!("{}/{path}/{attempt}", self.execution_id),
        };
        let deadline_ms = self.fx.clock.now_ms().saturating_add(
            u64::try_from(ins.timeout.unwrap_or(DEFAULT_DEADLINE).as_millis()).unwrap_or(u64::MAX),
        );
        let value_of = |run: &Self| match &ins.expression {
            Some(e) => run.eval(e),
            None => Ok(Value::Null),
        };
        match ins.opcode {
            IrOpcode::Eval | IrOpcode::Return => {
                let value = value_of(self)?;
                *inputs = value.clone();
                Ok(value)
            }
            IrOpcode::Branch => {
                let cond = ins
                    .condition
                    .as_ref()
                    .ok_or_else(|| invalid_input("BRANCH without a condition"))?;
                cond.eval_bool(&self.vars)
                    .map(Value::Bool)
                    .map_err(invalid_input)
            }
            IrOpcode::Merge => {
                let mut joined = Map::new();
                for dep in &ins.deps {
                    if let Some(v) = self.outputs.get(dep) {
                        joined.insert(program.instructions[*dep].output.clone(), v.clone());
                    }
                }
                *inputs = Value::Object(joined.clone());
                Ok(Value::Object(joined))
            }
            IrOpcode::CallFunction => {
                let params = self.eval_params(&ins.params)?;
                *inputs = Value::Object(params.clone());
                check_schema(
                    ins.input_schema.as_ref(),
                    inputs,
                    ErrorClass::InvalidInput,
                    "the input",
                )?;
                let function = ins
                    .function
                    .ok_or_else(|| invalid_input("CALL_FUNCTION without a function"))?;
                let out = function(&params)
                    .map_err(|e| invalid_input(format!("function `{}`: {e}", ins.action)))?;
                check_schema(
                    ins.output_schema.as_ref(),
                    &out,
                    ErrorClass::InvalidOutput,
                    "the result",
                )?;
                Ok(out)
            }
            IrOpcode::EmitEvent => {
                // The payload: the named fields of `params` (a device's event), or the
                // expression's value.
                let payload = if ins.params.is_empty() && !ins.on_device {
                    value_of(self)?
                } else {
                    Value::Object(self.eval_params(&ins.params)?)
                };
                let (topic, key_expr) = ins
                    .emit
                    .as_ref()
                    .ok_or_else(|| invalid_input("EMIT_EVENT without a topic"))?;
                let key = match key_expr.as_ref().map(|k| self.eval(k)).transpose()? {
                    None => String::new(),
                    Some(Value::String(k)) => k,
                    // A device sends its key as a string, and formats no numbers.
                    Some(_) if ins.on_device => {
                        return Err(invalid_input("the event key is not a string"));
                    }
                    Some(k) => text_of(&k),
                };
                *inputs = json!({"topic": topic, "key": key, "payload": payload});
                self.intent(&at, inputs).await?;
                self.fx.events.emit(topic, &key, &payload, &at.key).await?;
                // A device holds no object: its EMIT_EVENT's result is `true` (sent).
                Ok(if ins.on_device {
                    Value::Bool(true)
                } else {
                    payload
                })
            }
            IrOpcode::Store => {
                let value = value_of(self)?;
                let memory = ins
                    .memory
                    .as_ref()
                    .ok_or_else(|| invalid_input("STORE without a memory access"))?;
                *inputs = json!({"key": memory.key, "value": value});
                let _hold = self.hold(ins).await?;
                match memory.scope {
                    MemoryScope::Node => {
                        self.fx
                            .node_memory
                            .set(&memory.key, &value, memory.ttl)
                            .await?
                    }
                    MemoryScope::Cluster => {
                        self.intent(&at, inputs).await?;
                        self.fx.cluster_memory.put(&memory.key, &value).await?
                    }
                    _ => self.set_l1(&memory.key, value.clone()),
                }
                Ok(value)
            }
            IrOpcode::Load => {
                let memory = ins
                    .memory
                    .as_ref()
                    .ok_or_else(|| invalid_input("LOAD without a memory access"))?;
                *inputs = json!({"key": memory.key});
                let found = match memory.scope {
                    MemoryScope::Node => self.fx.node_memory.get(&memory.key).await?,
                    MemoryScope::Cluster => self.fx.cluster_memory.get(&memory.key).await?,
                    _ => self.l1.get(&memory.key).cloned(),
                };
                Ok(found.unwrap_or_else(|| memory.default.clone()))
            }
            IrOpcode::LoadResource => {
                let params = Value::Object(self.eval_params(&ins.params)?);
                let key = match params.get("key") {
                    Some(Value::String(k)) => k.clone(),
                    _ => ins.resource_key.clone(),
                };
                *inputs = json!({"key": key, "params": params});
                let connector = ins
                    .capability
                    .as_ref()
                    .ok_or_else(|| invalid_input("LOAD_RESOURCE without a capability"))?;
                let _hold = self.hold(ins).await?;
                let remaining = self.remaining(deadline_ms, &ins.id)?;
                let out = self
                    .fx
                    .plugins
                    .read(connector, &key, &params, &at.key, remaining)
                    .await?;
                check_schema(
                    ins.output_schema.as_ref(),
                    &out,
                    ErrorClass::InvalidOutput,
                    "the resource",
                )?;
                Ok(out)
            }
            IrOpcode::CallAction => self.call_action(ins, &at, deadline_ms, inputs).await,
            IrOpcode::CallApi | IrOpcode::CallService => {
                self.call_http(ins, &at, deadline_ms, inputs).await
            }
            IrOpcode::LlmCall => self.call_llm(ins, model, deadline_ms, inputs).await,
            IrOpcode::Loop | IrOpcode::Unspecified => Err(Failure::new(
                ErrorClass::Internal,
                format!("`{}` is not a single-step instruction", ins.id),
            )),
        }
    }

    /// CALL_ACTION: permit, time window (not re-checked when a resume re-issues an intent
    /// that passed it), intent, invoke (or the declared read-back), postcondition.
    async fn call_action(
        &mut self,
        ins: &Prepared,
        at: &Attempt<'_>,
        deadline_ms: u64,
        inputs: &mut Value,
    ) -> Result<Value, Failure> {
        let params = Value::Object(self.eval_params(&ins.params)?);
        *inputs = json!({"action": ins.action, "params": params});
        check_schema(
            ins.input_schema.as_ref(),
            &params,
            ErrorClass::InvalidInput,
            "the input",
        )?;
        let capability = ins
            .capability
            .as_ref()
            .ok_or_else(|| invalid_input("CALL_ACTION without a capability"))?;
        let _hold = self.hold(ins).await?;
        if let Some(window) = ins.time_window.as_ref().filter(|_| self.resuming.is_none()) {
            let now = self.fx.clock.now_ms();
            if !in_window(window, now) {
                return Err(Failure::new(
                    ErrorClass::OutsideTimeWindow,
                    format!(
                        "`{}` may act only between minute {} and {} (UTC{:+} min, weekdays {:?})",
                        ins.id,
                        window.start_minute,
                        window.end_minute,
                        window.utc_offset_minutes,
                        window.weekdays
                    ),
                ));
            }
        }
        let remaining = self.remaining(deadline_ms, &ins.id)?;
        self.intent(at, inputs).await?;
        let action = match &self.resuming {
            Some(Resumption::ReadBack(read)) => read.clone(),
            _ => ins.action.clone(),
        };
        let out = self
            .fx
            .plugins
            .invoke(capability, &action, &params, &at.key, remaining)
            .await?;
        check_schema(
            ins.output_schema.as_ref(),
            &out,
            ErrorClass::InvalidOutput,
            "the result",
        )?;
        if let Some(post) = &ins.postcondition {
            let read_params = Value::Object(self.eval_params(&post.params)?);
            let key = match read_params.get("key") {
                Some(Value::String(k)) => k.clone(),
                _ => String::new(),
            };
            let until = self
                .fx
                .clock
                .now_ms()
                .saturating_add(u64::try_from(post.deadline.as_millis()).unwrap_or(u64::MAX));
            for n in 0u64.. {
                let now = self.fx.clock.now_ms();
                let budget = Duration::from_millis(until.saturating_sub(now).max(1));
                let call = format!("{}/postcondition/{n}", at.key);
                let last = match self
                    .fx
                    .plugins
                    .read(&post.capability, &key, &read_params, &call, budget)
                    .await
                {
                    Ok(resource) => {
                        let mut vars = self.vars.clone();
                        vars.set("resource", &resource);
                        match post.condition.eval_bool(&vars) {
                            Ok(true) => break,
                            Ok(false) => format!("`{}` is false", post.condition.source()),
                            Err(e) => e,
                        }
                    }
                    Err(e) => e.to_string(),
                };
                let now = self.fx.clock.now_ms();
                let poll = u64::try_from(post.poll.as_millis()).unwrap_or(u64::MAX);
                if now.saturating_add(poll) > until {
                    return Err(Failure::new(
                        ErrorClass::PostconditionFailed,
                        format!(
                            "postcondition of `{}` not met within {} ms: {last}",
                            ins.id,
                            post.deadline.as_millis()
                        ),
                    ));
                }
                self.fx.clock.sleep(post.poll).await;
            }
        }
        Ok(out)
    }

    async fn call_http(
        &mut self,
        ins: &Prepared,
        at: &Attempt<'_>,
        deadline_ms: u64,
        inputs: &mut Value,
    ) -> Result<Value, Failure> {
        let http = ins
            .http
            .as_ref()
            .ok_or_else(|| invalid_input("CALL_API without an HTTP call"))?;
        let body = match &ins.expression {
            Some(e) => Some(self.eval(e)?),
            None => None,
        };
        let mut headers: Vec<(String, String)> = http
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        *inputs = json!({
            "service": ins.target_service,
            "method": http.method,
            "url": http.url,
            "headers": http.headers,
            "body": body,
        });
        if !ins.secret.is_empty()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            let secret = self.fx.secrets.get(&ins.secret).await?.ok_or_else(|| {
                Failure::new(
                    ErrorClass::Denied,
                    format!("secret `{}` is not available", ins.secret),
                )
            })?;
            self.scrubber.add(&ins.secret, &secret);
            headers.push((
                "Authorization".to_owned(),
                format!("Bearer {}", secret.expose()),
            ));
        }
        let _hold = self.hold(ins).await?;
        let timeout = self.remaining(deadline_ms, &ins.id)?;
        let method = if http.method.is_empty() {
            "GET".to_owned()
        } else {
            http.method.to_ascii_uppercase()
        };
        let request = HttpRequest {
            idempotency_key: (method != "GET").then(|| at.key.clone()),
            method,
            url: http.url.clone(),
            headers,
            body,
            timeout,
        };
        // A request the egress policy refuses never leaves: no intent, nothing in doubt.
        self.fx.http.admit(&request)?;
        self.intent(at, inputs).await?;
        let response = self.fx.http.send(&request).await?;
        let class = match response.status {
            200..=299 => None,
            429 => Some(ErrorClass::RateLimit),
            408 => Some(ErrorClass::Timeout),
            401 | 403 => Some(ErrorClass::Denied),
            400..=499 => Some(ErrorClass::InvalidInput),
            _ => Some(ErrorClass::Unavailable),
        };
        if let Some(class) = class {
            return Err(Failure::new(
                class,
                format!(
                    "{} {}: HTTP status {}",
                    request.method, request.url, response.status
                ),
            ));
        }
        check_schema(
            ins.output_schema.as_ref(),
            &response.body,
            ErrorClass::InvalidOutput,
            "the response",
        )?;
        Ok(response.body)
    }

    async fn call_llm(
        &mut self,
        ins: &Prepared,
        model: Option<&str>,
        deadline_ms: u64,
        inputs: &mut Value,
    ) -> Result<Value, Failure> {
        let llm = ins
            .llm
            .as_ref()
            .ok_or_else(|| invalid_input("LLM_CALL without a context"))?;
        let model = model.unwrap_or(&llm.model);
        // Slot values: vault secrets go into the prompt only; the audit sees their names.
        let mut values = Vec::with_capacity(llm.slots.len());
        let mut audited = Map::new();
        for (name, source) in &llm.slots {
            match source {
                SlotSource::Vault(key) => {
                    let secret = self.fx.secrets.get(key).await?.ok_or_else(|| {
                        Failure::new(
                            ErrorClass::Denied,
                            format!("secret `{key}` of slot `{name}` is not available"),
                        )
                    })?;
                    self.scrubber.add(key, &secret);
                    audited.insert(name.clone(), Value::String(format!("vault:{key}")));
                    values.push((name.clone(), secret.expose().to_owned()));
                }
                SlotSource::Runtime(expr) => {
                    let value = expr
                        .eval(&self.vars)
                        .map_err(|e| invalid_input(format!("slot `{name}`: {e}")))?;
                    values.push((name.clone(), text_of(&value)));
                    audited.insert(name.clone(), value);
                }
            }
        }
        *inputs = json!({"model": model, "slots": audited});
        let request = llm.request(model, &values, self.remaining(deadline_ms, &ins.id)?);
        let answer = self.fx.llm.complete(&request).await?;
        llm_output(ins, llm, answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_devices_llm_answer_is_a_scalar_it_holds() {
        for ok in [json!(null), json!(true), json!(3.5), json!("high")] {
            held_by_device(&ok).unwrap();
        }
        let long = Value::String("x".repeat(eyeflow_mcu::limits::MAX_STR + 1));
        for bad in [long, json!({"a": 1}), json!([1])] {
            assert_eq!(
                held_by_device(&bad).unwrap_err().class,
                ErrorClass::InvalidOutput
            );
        }
    }

    fn window(start: u32, end: u32, offset: i32, weekdays: Vec<u32>) -> TimeWindow {
        TimeWindow {
            start_minute: start,
            end_minute: end,
            utc_offset_minutes: offset,
            weekdays,
        }
    }

    /// 2024-01-01 (a Monday) at `h:m` UTC, in Unix ms.
    fn monday(h: u64, m: u64) -> u64 {
        1_704_067_200_000 + (h * 60 + m) * 60_000
    }

    #[test]
    fn windows() {
        let day = window(6 * 60, 22 * 60, 0, vec![]);
        assert!(in_window(&day, monday(6, 0)));
        assert!(!in_window(&day, monday(22, 0)));
        assert!(!in_window(&day, monday(5, 59)));
        // UTC+60: 05:30 UTC is 06:30 local.
        let shifted = window(6 * 60, 22 * 60, 60, vec![]);
        assert!(in_window(&shifted, monday(5, 30)));
        // Wrapping past midnight.
        let night = window(22 * 60, 6 * 60, 0, vec![]);
        assert!(in_window(&night, monday(23, 0)));
        assert!(in_window(&night, monday(1, 0)));
        assert!(!in_window(&night, monday(12, 0)));
        // Weekdays: Monday only, Tuesday only.
        assert!(in_window(&window(0, 1_439, 0, vec![1]), monday(12, 0)));
        assert!(!in_window(&window(0, 1_439, 0, vec![2]), monday(12, 0)));
        // UTC-120 turns Monday 01:00 UTC into Sunday 23:00.
        assert!(in_window(&window(0, 1_439, -120, vec![7]), monday(1, 0)));
    }

    #[test]
    fn templates_and_answers() {
        let values = vec![("a".to_owned(), "x".to_owned())];
        assert_eq!(fill("<{{a}}|{{ a }}|{{b}}>", &values), "<x|x|{{b}}>");
        assert_eq!(fill("{{a", &values), "{{a");
        assert_eq!(
            parse_json_answer("```json\n{\"k\": 1}\n```").unwrap(),
            json!({"k": 1})
        );
        assert!(parse_json_answer("not json").is_err());
    }
}
