//! The fallback engine's decisions, as pure functions of an instruction's policy (the
//! same rules as the server's `actors/src/exec/fallback.rs`): retry while `retry` covers
//! the class and retries are left (empty `retry_on` = every class but
//! `resource_exhausted`), waiting `backoff_ms × multiplier^(n-1)` capped at
//! `max_backoff_ms` (0 = 10 × `backoff_ms`); then the `fallback` strategy when its
//! `on_errors` covers the class (empty = all), else `timeout.on_timeout` for a timeout,
//! else fail.

use eyeflow_mcu::trace::ErrorClass;

use crate::owned::{Owned, parse_json};
use crate::pb::{FallbackStrategy, IRInstruction};

/// A set of error classes, one bit per `.proto` number (0 = empty).
type Classes = u16;

fn classes(list: &[crate::pb::ErrorClass]) -> Classes {
    list.iter()
        .filter(|c| (1..16).contains(&c.0))
        .fold(0, |set, c| set | (1 << c.0))
}

fn covers(set: Classes, class: ErrorClass) -> bool {
    set & (1 << class as u16) != 0
}

#[derive(Debug, Clone, Copy, Default)]
struct Retry {
    max_retries: u32,
    backoff_ms: u32,
    multiplier: f32,
    max_backoff_ms: u32,
    on: Classes,
}

/// How an instruction's failures are handled.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    retry: Option<Retry>,
    fallback: Option<(FallbackStrategy, Classes)>,
    value: Owned,
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
    pub(crate) fn new(ins: &IRInstruction) -> Self {
        Self {
            retry: ins.retry().map(|r| Retry {
                max_retries: r.max_retries,
                backoff_ms: r.backoff_ms,
                multiplier: r.backoff_multiplier,
                max_backoff_ms: r.max_backoff_ms,
                on: classes(&r.retry_on),
            }),
            fallback: ins.fallback().map(|f| (f.strategy, classes(&f.on_errors))),
            value: ins
                .fallback()
                .filter(|f| f.strategy == FallbackStrategy::FallbackValue)
                .and_then(|f| parse_json(&f.value_json).ok())
                .unwrap_or_default(),
            on_timeout: ins.timeout().map(|t| t.on_timeout),
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
            Some(FallbackStrategy::FallbackValue) => Decision::Value(self.value.clone()),
            Some(FallbackStrategy::Skip) => Decision::Skip,
            Some(FallbackStrategy::Abort) => Decision::Abort,
            _ => Decision::Fail,
        }
    }
}

/// The wait before retry number `retry` (from 1).
fn backoff_ms(config: &Retry, retry: u32) -> u64 {
    let base = f64::from(config.backoff_ms);
    let multiplier = if config.multiplier.is_finite() && config.multiplier >= 1.0 {
        f64::from(config.multiplier)
    } else {
        1.0
    };
    let cap = if config.max_backoff_ms == 0 {
        base * 10.0
    } else {
        f64::from(config.max_backoff_ms)
    };
    let mut ms = base;
    for _ in 1..retry {
        if ms >= cap {
            break;
        }
        ms *= multiplier;
    }
    let ms = ms.min(cap);
    if ms.is_finite() && ms >= 0.0 {
        ms as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{FallbackConfig, RetryConfig, TimeoutConfig};

    fn class(c: ErrorClass) -> crate::pb::ErrorClass {
        crate::pb::ErrorClass(c as i32)
    }

    fn retry(max: u32, on: &[ErrorClass]) -> RetryConfig {
        RetryConfig {
            max_retries: max,
            backoff_ms: 100,
            backoff_multiplier: 2.0,
            max_backoff_ms: 500,
            retry_on: on.iter().map(|c| class(*c)).collect(),
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        let config = Retry {
            max_retries: 5,
            backoff_ms: 100,
            multiplier: 2.0,
            max_backoff_ms: 500,
            on: 0,
        };
        let waits: [u64; 5] = core::array::from_fn(|n| backoff_ms(&config, n as u32 + 1));
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn retries_then_the_strategy_then_on_timeout() {
        let mut ins = IRInstruction::default();
        ins.set_retry(retry(2, &[ErrorClass::Timeout]));
        let mut fallback = FallbackConfig {
            strategy: FallbackStrategy::FallbackValue,
            value_json: heapless::String::try_from("1").expect("fits"),
            ..Default::default()
        };
        let _ = fallback.on_errors.push(class(ErrorClass::Timeout));
        ins.set_fallback(fallback);
        ins.set_timeout(TimeoutConfig {
            execution_timeout_ms: 10,
            on_timeout: FallbackStrategy::Skip,
        });
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
        let mut ins = IRInstruction::default();
        ins.set_retry(retry(3, &[]));
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
