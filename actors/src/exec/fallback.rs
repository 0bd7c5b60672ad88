//! The fallback engine: what happens when an instruction attempt fails.
//!
//! 1. The failure gets an IR [`ErrorClass`] ([`class_of`] maps a port's [`CallErrorKind`]).
//! 2. **Retry**: while the instruction's `retry` covers the class (`retry_on`; empty = every
//!    class but `resource_exhausted`, which a retry would only repeat)
//!    and fewer than `max_retries` retries were made, wait `backoff_ms × multiplier^(n-1)`
//!    (capped at `max_backoff_ms`) through the [`Clock`](super::Clock) and try again.
//! 3. Then the **strategy**: the `fallback` config when its `on_errors` covers the class
//!    (empty = all); otherwise, for a `timeout`, the `timeout.on_timeout` strategy; otherwise
//!    none, and the execution fails with the class. Strategies:
//!    `FALLBACK_VALUE` (continue with `value_json` as the result), `FALLBACK_MODEL` (run the
//!    LLM_CALL again on `alternative_model`, with a fresh retry budget; once only), `SKIP`
//!    (continue without a result: later expressions see `null`), `ABORT` (run the
//!    `compensation_ids` in reverse order, then fail), `RETRY` (retries are exhausted: fail).

use std::time::Duration;

use eyeflow_ir::pb::{ErrorClass, FallbackStrategy, IrInstruction, RetryConfig};
use serde_json::Value;

use crate::ports::{CallError, CallErrorKind, Fallback, MemoryError, SecretError};

/// The IR error class of a port failure.
pub fn class_of(kind: CallErrorKind) -> ErrorClass {
    match kind {
        CallErrorKind::InvalidInput => ErrorClass::InvalidInput,
        CallErrorKind::Unavailable | CallErrorKind::NotFound => ErrorClass::Unavailable,
        CallErrorKind::ResourceExhausted => ErrorClass::ResourceExhausted,
        CallErrorKind::Timeout => ErrorClass::Timeout,
        CallErrorKind::Denied => ErrorClass::Denied,
        CallErrorKind::Internal | CallErrorKind::Trap => ErrorClass::Internal,
        CallErrorKind::RateLimited => ErrorClass::RateLimit,
        CallErrorKind::ModelUnavailable => ErrorClass::ModelUnavailable,
        CallErrorKind::InvalidOutput => ErrorClass::InvalidOutput,
    }
}

/// The rule-language name of a class (`timeout`, `rate_limit`, ...), as journaled.
pub fn class_name(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Unspecified => "unspecified",
        ErrorClass::Timeout => "timeout",
        ErrorClass::Unavailable => "unavailable",
        ErrorClass::RateLimit => "rate_limit",
        ErrorClass::ModelUnavailable => "model_unavailable",
        ErrorClass::InvalidInput => "invalid_input",
        ErrorClass::InvalidOutput => "invalid_output",
        ErrorClass::Denied => "denied",
        ErrorClass::ResourceTimeout => "resource_timeout",
        ErrorClass::PostconditionFailed => "postcondition_failed",
        ErrorClass::OutsideTimeWindow => "outside_time_window",
        ErrorClass::Internal => "internal",
        ErrorClass::ResourceExhausted => "resource_exhausted",
    }
}

/// The class named `name` (inverse of [`class_name`]).
pub(crate) fn class_by_name(name: &str) -> Option<ErrorClass> {
    (0..=12)
        .filter_map(|n| ErrorClass::try_from(n).ok())
        .find(|c| class_name(*c) == name)
}

/// A failed attempt: its class and a message (never a secret value).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub(crate) class: ErrorClass,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        Self::new(class_of(e.kind), e.to_string())
    }
}

impl From<MemoryError> for Failure {
    fn from(e: MemoryError) -> Self {
        Self::new(class_of(e.kind), e.to_string())
    }
}

impl From<SecretError> for Failure {
    fn from(e: SecretError) -> Self {
        Self::new(class_of(e.kind), e.to_string())
    }
}

/// The wait before retry number `retry` (from 1), as a device computes it
/// ([`eyeflow_mcu::retry::backoff_ms`]).
pub fn backoff(config: &RetryConfig, retry: u32) -> Duration {
    Duration::from_millis(eyeflow_mcu::retry::backoff_ms(
        config.backoff_ms,
        config.backoff_multiplier,
        config.max_backoff_ms,
        retry,
    ))
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Try again after `delay`.
    Retry { delay: Duration },
    /// Continue with this value as the result.
    Value(Value),
    /// Run the LLM_CALL again on this model.
    Model(String),
    /// Continue without a result.
    Skip,
    /// Compensate, then fail the execution.
    Abort,
    /// Fail the execution (no fallback applies, or retries are exhausted).
    Fail,
}

impl Decision {
    /// What is journaled in `StepRecord::fallback` (`None` for a plain failure).
    pub(crate) fn taken(&self) -> Option<Fallback> {
        match self {
            Self::Retry { .. } => Some(Fallback::Retry),
            Self::Value(_) => Some(Fallback::FallbackValue),
            Self::Model(_) => Some(Fallback::FallbackModel),
            Self::Skip => Some(Fallback::Skip),
            Self::Abort => Some(Fallback::Abort),
            Self::Fail => None,
        }
    }
}

/// An instruction's failure handling, prepared from its IR.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policy {
    retry: Option<RetryConfig>,
    fallback: Option<(FallbackStrategy, Vec<ErrorClass>)>,
    value: Value,
    model: String,
    on_timeout: Option<FallbackStrategy>,
}

impl Policy {
    /// The policy of `ins`; `value` is its parsed `fallback.value_json` (or null).
    pub(crate) fn new(ins: &IrInstruction, value: Value) -> Self {
        let classes = |list: &[i32]| {
            list.iter()
                .filter_map(|c| ErrorClass::try_from(*c).ok())
                .collect::<Vec<_>>()
        };
        Self {
            retry: ins.retry.clone(),
            fallback: ins.fallback.as_ref().map(|f| {
                (
                    FallbackStrategy::try_from(f.strategy).unwrap_or(FallbackStrategy::Unspecified),
                    classes(&f.on_errors),
                )
            }),
            value,
            model: ins
                .fallback
                .as_ref()
                .map(|f| f.alternative_model.clone())
                .unwrap_or_default(),
            on_timeout: ins.timeout.as_ref().map(|t| {
                FallbackStrategy::try_from(t.on_timeout).unwrap_or(FallbackStrategy::Abort)
            }),
        }
    }

    /// The decision after a failure of class `class`, when `retries` retries were already
    /// made (since the last model switch) and `switched` says whether the model was switched.
    pub(crate) fn decide(&self, class: ErrorClass, retries: u32, switched: bool) -> Decision {
        if let Some(retry) = &self.retry {
            let covered = if retry.retry_on.is_empty() {
                class != ErrorClass::ResourceExhausted
            } else {
                retry.retry_on.contains(&(class as i32))
            };
            if covered && retries < retry.max_retries {
                return Decision::Retry {
                    delay: backoff(retry, retries + 1),
                };
            }
        }
        let strategy = match &self.fallback {
            Some((strategy, on)) if on.is_empty() || on.contains(&class) => Some(*strategy),
            _ if class == ErrorClass::Timeout => self.on_timeout,
            _ => None,
        };
        match strategy {
            Some(FallbackStrategy::FallbackValue) => Decision::Value(self.value.clone()),
            Some(FallbackStrategy::FallbackModel) if !switched && !self.model.is_empty() => {
                Decision::Model(self.model.clone())
            }
            Some(FallbackStrategy::Skip) => Decision::Skip,
            Some(FallbackStrategy::Abort) => Decision::Abort,
            _ => Decision::Fail,
        }
    }

    /// The FALLBACK_VALUE value (null without one).
    pub(crate) fn value(&self) -> Value {
        self.value.clone()
    }

    /// The alternative model of a FALLBACK_MODEL fallback (empty without one).
    pub(crate) fn alternative_model(&self) -> &str {
        &self.model
    }

    /// The strategy for a LOOP that ran out of time (`on_timeout`; no retry).
    pub(crate) fn on_loop_timeout(&self) -> Decision {
        match self.on_timeout {
            Some(FallbackStrategy::FallbackValue) => Decision::Value(self.value.clone()),
            Some(FallbackStrategy::Skip) => Decision::Skip,
            Some(FallbackStrategy::Abort) => Decision::Abort,
            _ => Decision::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use eyeflow_ir::pb::{FallbackConfig, TimeoutConfig};
    use serde_json::json;

    use super::*;

    fn retry(max: u32, on: &[ErrorClass]) -> RetryConfig {
        RetryConfig {
            max_retries: max,
            backoff_ms: 100,
            backoff_multiplier: 2.0,
            max_backoff_ms: 500,
            retry_on: on.iter().map(|c| *c as i32).collect(),
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        let config = retry(5, &[]);
        let waits: Vec<u64> = (1..=5)
            .map(|n| backoff(&config, n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn every_kind_has_a_class() {
        use CallErrorKind::*;
        let pairs = [
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
        ];
        for (kind, name) in pairs {
            assert_eq!(class_name(class_of(kind)), name, "{kind:?}");
        }
        for n in 1..=12 {
            let class = ErrorClass::try_from(n).unwrap();
            assert_eq!(class_by_name(class_name(class)), Some(class));
        }
    }

    #[test]
    fn a_retry_without_on_leaves_resource_exhaustion_out() {
        let open = IrInstruction {
            retry: Some(retry(3, &[])),
            ..Default::default()
        };
        let policy = Policy::new(&open, Value::Null);
        assert!(matches!(
            policy.decide(ErrorClass::Unavailable, 0, false),
            Decision::Retry { .. }
        ));
        assert_eq!(
            policy.decide(ErrorClass::ResourceExhausted, 0, false),
            Decision::Fail
        );
        let named = IrInstruction {
            retry: Some(retry(3, &[ErrorClass::ResourceExhausted])),
            ..Default::default()
        };
        assert!(matches!(
            Policy::new(&named, Value::Null).decide(ErrorClass::ResourceExhausted, 0, false),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn retry_then_strategy() {
        let ins = IrInstruction {
            retry: Some(retry(2, &[ErrorClass::Timeout])),
            fallback: Some(FallbackConfig {
                strategy: FallbackStrategy::FallbackValue as i32,
                value_json: "1".into(),
                on_errors: vec![ErrorClass::Timeout as i32],
                ..Default::default()
            }),
            timeout: Some(TimeoutConfig {
                execution_timeout_ms: 10,
                on_timeout: FallbackStrategy::Skip as i32,
            }),
            ..Default::default()
        };
        let policy = Policy::new(&ins, json!(1));
        assert!(matches!(
            policy.decide(ErrorClass::Timeout, 0, false),
            Decision::Retry { .. }
        ));
        assert_eq!(
            policy.decide(ErrorClass::Timeout, 2, false),
            Decision::Value(json!(1))
        );
        // Not retried, not covered by the fallback.
        assert_eq!(
            policy.decide(ErrorClass::Unavailable, 0, false),
            Decision::Fail
        );
        // A timeout not covered by the fallback falls to on_timeout.
        let ins = IrInstruction {
            fallback: Some(FallbackConfig {
                strategy: FallbackStrategy::Abort as i32,
                on_errors: vec![ErrorClass::Denied as i32],
                ..Default::default()
            }),
            ..ins
        };
        let policy = Policy::new(&ins, Value::Null);
        assert_eq!(policy.decide(ErrorClass::Timeout, 2, false), Decision::Skip);
        assert_eq!(policy.decide(ErrorClass::Denied, 0, false), Decision::Abort);
    }

    #[test]
    fn model_switch_happens_once() {
        let ins = IrInstruction {
            fallback: Some(FallbackConfig {
                strategy: FallbackStrategy::FallbackModel as i32,
                alternative_model: "small".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let policy = Policy::new(&ins, Value::Null);
        assert_eq!(
            policy.decide(ErrorClass::ModelUnavailable, 0, false),
            Decision::Model("small".into())
        );
        assert_eq!(
            policy.decide(ErrorClass::ModelUnavailable, 0, true),
            Decision::Fail
        );
    }
}
