//! The fallback engine's decisions, as pure functions of an instruction's policy (the
//! same rules as the server's `actors/src/exec/fallback.rs`): retry while `retry` covers
//! the class and retries are left (empty `retry_on` = every class but
//! `resource_exhausted`), waiting `backoff_ms × multiplier^(n-1)` capped at
//! `max_backoff_ms` (0 = 10 × `backoff_ms`); then the `fallback` strategy when its
//! `on_errors` covers the class (empty = all), else `timeout.on_timeout` for a timeout,
//! else fail.

use eyeflow_mcu::trace::ErrorClass;

use crate::instruction::{Classes, FallbackStrategy, Instruction, Retry};
use crate::owned::{Owned, parse_json};

fn covers(set: Classes, class: ErrorClass) -> bool {
    set & (1 << class as u16) != 0
}

/// How an instruction's failures are handled.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    retry: Option<Retry>,
    fallback: Option<(FallbackStrategy, Classes)>,
    /// The FALLBACK_VALUE's JSON literal (empty: `null`), parsed when it is used.
    value: &'static str,
    on_timeout: Option<FallbackStrategy>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Try again after this many milliseconds.
    Retry(u64),
    /// Continue with this value (FALLBACK_VALUE).
    Value(Owned),
    /// Continue without a result (SKIP).
    Skip,
    /// Compensate, then stop the execution (ABORT).
    Abort,
    /// Stop the execution with the failure.
    Fail,
}

impl Policy {
    /// The policy of `ins` (its FALLBACK_VALUE was checked when the program loaded).
    pub(crate) fn new(ins: &Instruction) -> Self {
        Self {
            retry: ins.retry,
            fallback: ins.fallback.map(|f| (f.strategy, f.on_errors)),
            value: ins
                .fallback
                .filter(|f| f.strategy == FallbackStrategy::FALLBACK_VALUE)
                .map_or("", |f| f.value_json),
            on_timeout: ins.timeout.map(|t| t.on_timeout),
        }
    }

    /// The decision after a failure of `class` when `retries` retries were made.
    pub fn decide(&self, class: ErrorClass, retries: u32) -> Decision {
        if let Some(retry) = &self.retry {
            let covered = if retry.on == 0 {
                class != ErrorClass::ResourceExhausted
            } else {
                covers(retry.on, class)
            };
            if covered && retries < retry.max_retries {
                return Decision::Retry(backoff_ms(retry, retries + 1));
            }
        }
        let strategy = match self.fallback {
            Some((strategy, on)) if on == 0 || covers(on, class) => Some(strategy),
            _ if class == ErrorClass::Timeout => self.on_timeout,
            _ => None,
        };
        self.apply(strategy)
    }

    /// The decision for a LOOP that ran out of time: `on_timeout`, no retry.
    pub fn on_loop_timeout(&self) -> Decision {
        self.apply(self.on_timeout)
    }

    fn apply(&self, strategy: Option<FallbackStrategy>) -> Decision {
        match strategy {
            Some(FallbackStrategy::FALLBACK_VALUE) => {
                Decision::Value(parse_json(self.value).unwrap_or_default())
            }
            Some(FallbackStrategy::SKIP) => Decision::Skip,
            Some(FallbackStrategy::ABORT) => Decision::Abort,
            _ => Decision::Fail,
        }
    }
}

/// The wait before retry number `retry` (from 1), as the server computes it.
fn backoff_ms(config: &Retry, retry: u32) -> u64 {
    eyeflow_mcu::retry::backoff_ms(
        config.backoff_ms,
        config.multiplier,
        config.max_backoff_ms,
        retry,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instruction::{Fallback, Timeout};

    fn classes(list: &[ErrorClass]) -> Classes {
        list.iter().fold(0, |set, c| set | 1 << *c as u16)
    }

    fn retry(max: u32, on: &[ErrorClass]) -> Retry {
        Retry {
            max_retries: max,
            backoff_ms: 100,
            multiplier: 2.0,
            max_backoff_ms: 500,
            on: classes(on),
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        let config = retry(5, &[]);
        let waits: [u64; 5] = core::array::from_fn(|n| backoff_ms(&config, n as u32 + 1));
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn retries_then_the_strategy_then_on_timeout() {
        let ins = Instruction {
            retry: Some(retry(2, &[ErrorClass::Timeout])),
            fallback: Some(Fallback {
                strategy: FallbackStrategy::FALLBACK_VALUE,
                value_json: "1",
                on_errors: classes(&[ErrorClass::Timeout]),
            }),
            timeout: Some(Timeout {
                execution_timeout_ms: 10,
                on_timeout: FallbackStrategy::SKIP,
            }),
            ..Default::default()
        };
        let policy = Policy::new(&ins);
        assert_eq!(policy.decide(ErrorClass::Timeout, 0), Decision::Retry(100));
        assert_eq!(
            policy.decide(ErrorClass::Timeout, 2),
            Decision::Value(Owned::Num(1.0))
        );
        assert_eq!(policy.decide(ErrorClass::Unavailable, 0), Decision::Fail);
        assert_eq!(policy.on_loop_timeout(), Decision::Skip);
    }

    #[test]
    fn a_retry_without_on_leaves_resource_exhaustion_out() {
        let ins = Instruction {
            retry: Some(retry(3, &[])),
            ..Default::default()
        };
        let policy = Policy::new(&ins);
        assert!(matches!(
            policy.decide(ErrorClass::Unavailable, 0),
            Decision::Retry(_)
        ));
        assert_eq!(
            policy.decide(ErrorClass::ResourceExhausted, 0),
            Decision::Fail
        );
    }
}
